/* conn.c - see conn.h. The connection object: accept, authentication state
 * and the Hello deadline, the streams registry and the round-robin pump, the
 * service loop, hand-over, close. The output queue is conn_out.c, the input
 * side conn_in.c; conn_internal.h is what they share.
 *
 * Streams are pulled only while the output queue is below the high-water
 * mark; input is not parsed while it is above, so a client that stops
 * reading stops costing memory.
 * Errors: 0 or -errno, as conn.h says.
 */
#include "conn_internal.h"

#include "config.h"
#include "errcode.h"
#include "frame.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

conn_t *conn_all;
static conn_t *g_pending, *g_free;
static unsigned g_count, g_unauth;

static void on_write(struct ev_loop *loop, ev_io *w, int revents);
static void on_wtimer(struct ev_loop *loop, ev_timer *w, int revents);
static void on_htimer(struct ev_loop *loop, ev_timer *w, int revents);

unsigned conn_count(void) { return g_count; }
unsigned conn_count_unauthenticated(void) { return g_unauth; }
/* Half of the slots at most: the other half is kept for clients that
 * authenticate, whatever unauthenticated peers do. */
unsigned conn_max_unauthenticated(void)
{
    return g_config.max_connections > 1 ? g_config.max_connections / 2 : 1;
}
const char *conn_peer(const conn_t *c) { return c->peer; }
pid_t conn_peer_pid(const conn_t *c) { return c->peer_pid; }
uid_t conn_peer_uid(const conn_t *c) { return c->peer_uid; }
int conn_authenticated(const conn_t *c) { return c->authed; }
void conn_set_authenticated(conn_t *c)
{
    c->authed = 1;
    if (c->unauth_counted) {
        c->unauth_counted = 0;
        g_unauth--;
    }
    ev_timer_stop(c->loop, &c->htimer);
}
void conn_set_zlib(conn_t *c, int accept_zlib) { c->zlib = accept_zlib ? 1 : 0; }
size_t conn_queued(const conn_t *c) { return c->queued; }
unsigned conn_in_flight(const conn_t *c) { return c->n_streams; }

size_t conn_max_payload(const conn_t *c)
{
    /* Leave room for the Response envelope and the result's own fields. */
    return g_config.max_frame_size - 256;
}

size_t conn_max_event(const conn_t *c)
{
    return SA_MIN(conn_max_payload(c), g_config.conn_queue_high / 2);
}

static size_t queue_low(void) { return g_config.conn_queue_high / 4; }

void conn_mark_pending(conn_t *c)
{
    if (c->pending || c->closing)
        return;
    c->pending = 1;
    c->next_pending = g_pending;
    g_pending = c;
}

conn_t *conn_new(struct ev_loop *loop, int fd, const char *kind, const char *peer)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->loop = loop;
    c->fd = fd;
    c->peer_pid = -1;
    c->peer_uid = (uid_t)-1;
    snprintf(c->kind, sizeof c->kind, "%s", kind);
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if (!strcmp(kind, "unix")) {
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c->peer_pid = cred.pid;
            c->peer_uid = cred.uid;
            snprintf(c->peer, sizeof c->peer, "pid=%d uid=%u gid=%u", (int)cred.pid,
                     (unsigned)cred.uid, (unsigned)cred.gid);
        }
    }
    c->authed = g_config.token[0] ? 0 : 1;
    ev_io_init(&c->rio, conn_in_on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    ev_init(&c->wtimer, on_wtimer);
    c->wtimer.data = c;
    ev_init(&c->htimer, on_htimer);
    c->htimer.data = c;
    ev_io_start(loop, &c->rio);
    /* A client usually writes its first request right after connect():
     * read it in this loop turn rather than after another wait. */
    ev_feed_event(loop, &c->rio, EV_READ);
    if (!c->authed) {
        c->unauth_counted = 1;
        g_unauth++;
        if (g_config.hello_timeout_s) {
            ev_timer_set(&c->htimer, g_config.hello_timeout_s, 0);
            ev_timer_start(loop, &c->htimer);
        }
    }
    SA_LIST_PUSH(conn_all, c, next_all, prev_all);
    g_count++;
    return c;
}

/* ------------------------------------------------------------ streams */

static void ready_remove(conn_t *c, stream_t *s)
{
    if (!s->_ready)
        return;
    stream_t **pp = &c->rhead, *prev = NULL;
    while (*pp && *pp != s) {
        prev = *pp;
        pp = &(*pp)->_rnext;
    }
    if (*pp) {
        *pp = s->_rnext;
        if (c->rtail == s)
            c->rtail = prev;
    }
    s->_rnext = NULL;
    s->_ready = 0;
}

static void ready_push(conn_t *c, stream_t *s)
{
    s->_ready = 1;
    s->_rnext = NULL;
    if (c->rtail)
        c->rtail->_rnext = s;
    else
        c->rhead = s;
    c->rtail = s;
}

void stream_wake(stream_t *s)
{
    conn_t *c = s->conn;
    if (!c || c->closing || s->_ready)
        return;
    ready_push(c, s);
    conn_mark_pending(c);
}

int conn_id_in_flight(conn_t *c, uint64_t id) { return conn_stream_find(c, id) != NULL; }

stream_t *conn_stream_find(conn_t *c, uint64_t id)
{
    for (stream_t *s = c->streams; s; s = s->_next)
        if (s->id == id)
            return s;
    return NULL;
}

int conn_send_stream_refused(conn_t *c, uint64_t id, int rc, const char *op)
{
    return conn_send_errno(c, id, rc, "%s: %s", op,
                           rc == -EMFILE ? "too many requests in flight on this connection"
                                         : strerror(-rc));
}

int conn_stream_add(conn_t *c, stream_t *s, uint64_t id)
{
    if (c->closing)
        return -EPIPE;
    if (conn_stream_find(c, id))
        return -EEXIST;
    if (c->n_streams >= g_config.max_inflight)
        return -EMFILE;
    s->conn = c;
    s->id = id;
    SA_LIST_PUSH(c->streams, s, _next, _prev);
    c->n_streams++;
    s->_ready = 0;
    stream_wake(s);
    return 0;
}

static void stream_unlink(conn_t *c, stream_t *s)
{
    ready_remove(c, s);
    if (s->_dead) {
        s->_dead = 0;
        c->n_dead--;
    }
    SA_LIST_UNLINK(c->streams, s, _next, _prev);
    c->n_streams--;
}

void conn_stream_end(conn_t *c, stream_t *s)
{
    stream_unlink(c, s);
    s->ops->destroy(s);
}

/* Pull ready streams round-robin until the queue reaches the high-water
 * mark or nobody has anything. */
static void pump(conn_t *c)
{
    int calls = 0;
    /* A stream is asked only while its largest message still fits under
     * the limit, so the queue stays within --max-queued-bytes. */
    size_t room_for = conn_max_event(c) + 256;
    while (c->rhead && !c->closing && c->queued + room_for <= g_config.conn_queue_high &&
           calls++ < PUMP_MAX_CALLS) {
        stream_t *s = c->rhead;
        c->rhead = s->_rnext;
        if (!c->rhead)
            c->rtail = NULL;
        s->_rnext = NULL;
        s->_ready = 0;
        /* Its answer could not be sent: it ends, with the Error said. */
        if (s->_dead) {
            conn_stream_end(c, s);
            continue;
        }
        stream_status_t st = s->ops->next(s);
        if (c->closing)
            return;
        if (st == STREAM_DONE || s->_dead)
            conn_stream_end(c, s);
        else if (st == STREAM_MORE && !s->_ready)
            ready_push(c, s);
    }
}

/* ------------------------------------------------------------ service */

/* The socket and its unparsed input go to the handover's receiver; the
 * connection closes around them. */
static void handover(conn_t *c)
{
    conn_handover_fn *fn = c->handover_fn;
    void *arg = c->handover_arg;
    int fd = c->fd;
    uint8_t *in = NULL;
    size_t len = c->in ? c->in_len - c->in_off : 0;

    if (len) {
        memmove(c->in, c->in + c->in_off, len);
        in = c->in;
        c->in = NULL;
    }
    c->handover_fn = NULL;
    c->fd = -1; /* conn_close() must not close it */
    conn_close(c);
    fn(arg, fd, in, len);
}

void conn_handover(conn_t *c, conn_handover_fn *fn, void *arg)
{
    c->handover_fn = fn;
    c->handover_arg = arg;
    conn_mark_pending(c);
}

/* Pull streams, write, resume input when drained, and arm the write watcher
 * for whatever is left. */
void conn_service(conn_t *c)
{
    if (c->closing || c->in_service)
        return;
    c->in_service = 1;
    if (c->deferred && !c->paused)
        conn_in_process(c);
    for (int round = 0; round < 2 && !c->closing; round++) {
        pump(c);
        if (c->closing)
            break;
        int rc = conn_out_write(c);
        if (rc < 0) {
            log_info("conn %s (%s): write: %s; closing", c->peer, c->kind, strerror(-rc));
            c->in_service = 0;
            conn_close(c);
            return;
        }
        if (c->paused && c->queued < queue_low()) {
            c->paused = 0;
            if (!c->holds && !c->close_after_flush && !c->eof)
                ev_io_start(c->loop, &c->rio);
            conn_in_process(c);
            continue;
        }
        break;
    }
    c->in_service = 0;
    if (c->closing)
        return;
    if (c->close_after_flush && c->queued == 0) {
        conn_close(c);
        return;
    }
    if (c->handover_fn && c->queued == 0) {
        handover(c);
        return;
    }
    /* Half-closed, and every answer it asked for is written. */
    if (c->eof && c->eof_told && !c->streams && c->queued == 0 && !c->holds) {
        log_debug("conn %s (%s): answers finished after the peer's shutdown; closing",
                  c->peer, c->kind);
        conn_close(c);
        return;
    }
    if (c->queued || c->rhead || c->deferred) {
        if (!ev_is_active(&c->wio)) {
            ev_io_start(c->loop, &c->wio);
            c->last_progress = util_now_mono_nano();
            if (g_config.write_timeout_s && !ev_is_active(&c->wtimer)) {
                ev_timer_set(&c->wtimer, g_config.write_timeout_s, 0);
                ev_timer_start(c->loop, &c->wtimer);
            }
        }
    } else if (ev_is_active(&c->wio)) {
        ev_io_stop(c->loop, &c->wio);
        ev_timer_stop(c->loop, &c->wtimer);
    }
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_service(w->data);
}

/* A peer that stopped reading for write_timeout_s (a VM restored from a
 * snapshot leaves such half-open connections) is closed; its streams are
 * released and the processes they followed carry on. The clock is the
 * monotonic one: a wall-clock jump after a restore neither closes a live
 * peer nor spares a dead one. The timer is re-armed for what is left since
 * the last progress, so the close comes write_timeout_s after it. */
static void on_wtimer(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_t *c = w->data;
    uint64_t limit = (uint64_t)g_config.write_timeout_s * 1000000000ull;
    uint64_t idle = util_now_mono_nano() - c->last_progress;

    if (c->queued && idle >= limit) {
        log_warn("conn %s (%s): no output consumed for %us (%zu bytes queued); closing",
                 c->peer, c->kind, g_config.write_timeout_s, c->queued);
        conn_close(c);
        return;
    }
    ev_timer_set(w, c->queued ? (double)(limit - idle) / 1e9 + 0.001 : g_config.write_timeout_s,
                 0);
    ev_timer_start(loop, w);
}

/* Before authentication: the Hello deadline. After a half-close: is the
 * peer still there to read what is in flight? */
static void on_htimer(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_t *c = w->data;
    if (c->eof) {
        if (conn_in_peer_gone(c)) {
            log_debug("conn %s (%s): closed by peer after its shutdown", c->peer, c->kind);
            conn_close(c);
        }
        return;
    }
    if (c->authed || c->close_after_flush)
        return;
    log_warn("conn %s (%s): no valid Hello within %us (--hello-timeout); closing", c->peer,
             c->kind, g_config.hello_timeout_s);
    conn_send_error(c, 0, CODE(UNAUTHENTICATED), ETIMEDOUT,
                    "no valid Hello within %u s of connecting (--hello-timeout)",
                    g_config.hello_timeout_s);
    conn_close_after_flush(c);
}

/* Large frees go back to the heap, where glibc keeps them. Once a few
 * megabytes were released, the pages go back to the system when the frees
 * stop for TRIM_QUIET_S: not during a bulk transfer, whose next chunk would
 * fault the same pages in again (and malloc_trim itself walks the heap). */
static ev_timer g_trim;
static size_t g_trim_seen;

static void on_trim(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_timer_stop(loop, w);
    g_trim_seen = 0;
    util_trim();
}

static void trim_schedule(struct ev_loop *loop)
{
    size_t pending = util_freed_pending();
    if (pending < TRIM_MIN || pending == g_trim_seen)
        return;
    g_trim_seen = pending;
    if (!g_trim.repeat)
        ev_init(&g_trim, on_trim);
    g_trim.repeat = TRIM_QUIET_S;
    ev_timer_again(loop, &g_trim);
}

void conn_before_sleep(struct ev_loop *loop)
{
    /* Service connections whose streams woke or that queued output. New
     * wake-ups during service re-add to a fresh list, handled next turn. */
    conn_t *list = g_pending;
    g_pending = NULL;
    while (list) {
        conn_t *c = list;
        list = c->next_pending;
        c->pending = 0;
        conn_service(c);
    }
    while (g_free) {
        conn_t *c = g_free;
        g_free = c->next_free;
        free(c);
    }
    trim_schedule(loop);
}

/* ------------------------------------------------------------ close */

void conn_close_after_flush(conn_t *c)
{
    if (c->closing)
        return;
    c->close_after_flush = 1;
    ev_io_stop(c->loop, &c->rio);
    conn_mark_pending(c);
}

void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    /* Watchers stop before the fd closes, the fd closes before memory is
     * freed, and the struct itself is freed after this loop turn. */
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->wtimer);
    ev_timer_stop(c->loop, &c->htimer);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->unauth_counted) {
        c->unauth_counted = 0;
        g_unauth--;
    }
    while (c->streams)
        conn_stream_end(c, c->streams);
    if (c->handover_fn) {
        /* Closed before the handover: its receiver lets go. */
        conn_handover_fn *fn = c->handover_fn;
        c->handover_fn = NULL;
        fn(c->handover_arg, -1, NULL, 0);
    }
    conn_out_free(c);
    /* A handler that closes its connection may still be reading the bulk
     * bytes of its request in `in`: conn_in_process frees it after. */
    if (!c->in_bulk) {
        conn_freed(c->in_cap);
        free(c->in);
        c->in = NULL;
    }
    c->budget_held = 0;
    SA_LIST_UNLINK(conn_all, c, next_all, prev_all);
    g_count--;
    /* Unlink from the pending list, if there. */
    for (conn_t **pp = &g_pending; *pp; pp = &(*pp)->next_pending) {
        if (*pp == c) {
            *pp = c->next_pending;
            break;
        }
    }
    c->pending = 0;
    c->next_free = g_free;
    g_free = c;
}

void conn_evict_unauthenticated(void)
{
    conn_t *oldest = NULL;
    /* conn_all is newest first. */
    for (conn_t *c = conn_all; c; c = c->next_all)
        if (c->unauth_counted && !c->close_after_flush)
            oldest = c;
    if (!oldest)
        return;
    log_warn("conn %s (%s): %u connections wait to authenticate (at most %u); closing the "
             "one that waited longest",
             oldest->peer, oldest->kind, g_unauth, conn_max_unauthenticated());
    conn_send_error(oldest, 0, CODE(RESOURCE_EXHAUSTED), 0,
                    "too many connections waiting to authenticate; this one waited longest");
    conn_close_after_flush(oldest);
    /* Its slot is free now, whether or not the error is written yet. */
    oldest->unauth_counted = 0;
    g_unauth--;
}

unsigned conn_close_broken(void)
{
    unsigned n = 0;
    for (conn_t *c = conn_all, *next; c; c = next) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int err = 0;
        socklen_t len = sizeof err;
        next = c->next_all;
        if (c->closing)
            continue;
        if ((poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))) ||
            (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)) {
            log_info("conn %s (%s): the peer is gone (%s); closing", c->peer, c->kind,
                     err ? strerror(err) : "hang-up");
            conn_close(c);
            n++;
        }
    }
    return n;
}

void conn_close_all(void)
{
    while (conn_all)
        conn_close(conn_all);
}

void conn_shutdown_all(void)
{
    /* Every request in flight gets its one final answer, and what the
     * socket takes at once is written: the agent does not wait for a slow
     * client on its way out. */
    for (conn_t *c = conn_all; c; c = c->next_all) {
        for (stream_t *s = c->streams; s && !c->closing; s = s->_next)
            conn_send_error(c, s->id, CODE(UNAVAILABLE), ESHUTDOWN,
                            "%s: the agent is shutting down", s->ops->name);
        if (!c->closing && conn_out_write(c) < 0) {
            /* the peer is gone: closing below is all there is to do */
        }
    }
    conn_close_all();
}
