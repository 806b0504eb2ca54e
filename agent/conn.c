/* conn.c - see conn.h.
 *
 * Output: frames are packed into a chain of blocks (small frames share a
 * 16 KiB block, large frames own theirs) and written with writev. Streams are
 * pulled only while the queue is below the high-water mark; input is not
 * parsed while it is above, so a client that stops reading stops costing
 * memory. Each connection writes at most WRITE_BUDGET per loop turn so one
 * fast reader cannot starve the others.
 */
#include "conn.h"

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

#define BLOCK_SIZE (16 * 1024)
#define IN_INITIAL (16 * 1024)
#define WRITE_BUDGET (2u << 20)
#define PUMP_MAX_CALLS 4096
#define IOV_BATCH 64
/* Seconds of request handling per loop turn after which each connection
 * handles one request per turn, so that one connection's pipelined burst
 * does not hold up the others' requests. */
#define TURN_BUDGET 0.002
#define ZLIB_MISSES 2
#define ZLIB_SKIP 64
/* Before Hello succeeds, the largest frame accepted: a Hello fits in well
 * under this, and an unauthenticated peer costs no more. */
#define PREAUTH_FRAME_MAX (64u * 1024)
/* After the peer shut down its side, how often to ask whether it closed
 * the socket altogether (then nothing it asked for can reach it). */
#define EOF_CHECK_S 1.0
#define TRIM_MIN (4u << 20)
#define TRIM_QUIET_S 0.1

typedef struct oblock {
    struct oblock *next;
    uint8_t *data;
    size_t len; /* bytes filled */
    size_t off; /* bytes already written */
    size_t cap; /* 0: data is borrowed (conn_send_ref), release() gives it back */
    conn_release_fn *release;
    void *arg;
} oblock_t;

struct conn {
    struct ev_loop *loop;
    ev_io rio, wio;
    ev_timer wtimer;
    ev_timer htimer; /* the Hello deadline; after a half-close, the peer check */
    int fd;
    char kind[8];
    char peer[96];
    pid_t peer_pid;
    uid_t peer_uid;

    uint8_t *in;
    size_t in_off, in_len, in_cap; /* unparsed bytes: in[in_off .. in_len) */

    oblock_t *qhead, *qtail;
    size_t queued;
    uint64_t last_progress; /* monotonic ns of the last write that moved data */

    stream_t *streams; /* all in flight */
    unsigned n_streams;
    stream_t *rhead, *rtail; /* ready to be pulled */

    unsigned holds; /* conn_hold_input() nesting */
    size_t upload;  /* upload bytes held for this connection (conn_upload_*) */
    uint64_t dead_id; /* a unary answer that could not be sent: ignore its id */
    unsigned n_dead;  /* streams marked _dead */
    /* Compression that does not pay (random file data, already compressed
     * output) is skipped for a while instead of costing the loop on every
     * frame: after ZLIB_MISSES misses, the next ZLIB_SKIP large frames go
     * plain, then compression is tried again. */
    unsigned zlib_misses, zlib_skip;
    unsigned authed : 1, zlib : 1, closing : 1, close_after_flush : 1, paused : 1,
        pending : 1, in_service : 1, deferred : 1;
    conn_handover_fn *handover_fn; /* conn_handover(): called once flushed */
    void *handover_arg;
    unsigned unauth_counted : 1, eof : 1, eof_told : 1, budget_held : 1, has_dead_id : 1;
    conn_t *next_all, *prev_all;
    conn_t *next_pending;
    conn_t *next_free;
};

static conn_t *g_all, *g_pending, *g_free;
static conn_request_fn *g_on_request;
static unsigned g_count, g_unauth;
static size_t g_upload;  /* upload bytes held for every connection */

static void on_read(struct ev_loop *loop, ev_io *w, int revents);
static void on_write(struct ev_loop *loop, ev_io *w, int revents);
static void on_wtimer(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_service(conn_t *c);
static void on_htimer(struct ev_loop *loop, ev_timer *w, int revents);
static void hold_release(conn_t *c);
static void answer_lost(conn_t *c, uint64_t id, int rc, Response *r);

void conn_set_request_handler(conn_request_fn *fn) { g_on_request = fn; }
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
    (void)c;
    /* Leave room for the Response envelope and the result's own fields. */
    return g_config.max_frame_size - 256;
}

size_t conn_max_event(const conn_t *c)
{
    return SA_MIN(conn_max_payload(c), g_config.conn_queue_high / 2);
}

static size_t queue_low(void) { return g_config.conn_queue_high / 4; }

/* The largest frame this connection may send now. */
static uint32_t in_max(const conn_t *c)
{
    return c->authed ? g_config.max_frame_size : SA_MIN(PREAUTH_FRAME_MAX, g_config.max_frame_size);
}

/* Memory given back to the allocator; large releases end with malloc_trim
 * (conn_before_sleep), so a burst that is over leaves no footprint. */
static void freed(size_t n) { util_freed(n); }

static void mark_pending(conn_t *c)
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
    ev_io_init(&c->rio, on_read, fd, EV_READ);
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
    c->next_all = g_all;
    if (g_all)
        g_all->prev_all = c;
    g_all = c;
    g_count++;
    return c;
}

/* ------------------------------------------------------------ output queue */

static oblock_t *block_new(size_t cap)
{
    oblock_t *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    b->data = malloc(cap);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->len = b->off = 0;
    b->cap = cap;
    b->release = NULL;
    b->arg = NULL;
    return b;
}

/* Free a block that left the queue: an owned buffer, or a borrowed one
 * given back to its owner. */
static void block_free(oblock_t *b)
{
    if (b->release) {
        b->release(b->arg);
    } else {
        if (b->cap > BLOCK_SIZE)
            freed(b->cap);
        free(b->data);
    }
    free(b);
}

/* The tail block when it is a small-frame block with room for need bytes. */
static oblock_t *tail_room(conn_t *c, size_t need)
{
    oblock_t *b = c->qtail;
    if (b && !b->release && b->cap == BLOCK_SIZE && b->cap - b->len >= need)
        return b;
    return NULL;
}

static void queue_append(conn_t *c, oblock_t *b)
{
    if (c->qtail)
        c->qtail->next = b;
    else
        c->qhead = b;
    c->qtail = b;
    c->queued += b->len - b->off;
}

/* An id whose answer could not be sent: its later sends are ignored. */
static int id_dead(conn_t *c, uint64_t id)
{
    if (c->has_dead_id && c->dead_id == id)
        return 1;
    if (c->n_dead) {
        stream_t *s = conn_stream_find(c, id);
        return s && s->_dead;
    }
    return 0;
}

int conn_send_try(conn_t *c, uint64_t id, int done, Response *r)
{
    size_t plen;
    int rc;

    if (c->closing || id_dead(c, id))
        return -EPIPE;
    r->id = id;
    r->done = done ? 1 : 0;
    plen = protobuf_c_message_get_packed_size(&r->base);
    if (plen > g_config.max_frame_size)
        return -EMSGSIZE;
    /* Small and not worth compressing: pack straight into the tail block. */
    if (!(c->zlib && plen >= FRAME_ZLIB_MIN) && plen + FRAME_HEADER_SIZE <= BLOCK_SIZE) {
        oblock_t *b = tail_room(c, plen + FRAME_HEADER_SIZE);
        if (!b) {
            if (!(b = block_new(BLOCK_SIZE)))
                return -ENOMEM;
            queue_append(c, b);
        }
        frame_header_write(b->data + b->len, 0, (uint32_t)plen);
        protobuf_c_message_pack(&r->base, b->data + b->len + FRAME_HEADER_SIZE);
        b->len += plen + FRAME_HEADER_SIZE;
        c->queued += plen + FRAME_HEADER_SIZE;
    } else {
        uint8_t *buf;
        size_t len;
        oblock_t *b;
        int try_zlib = c->zlib && plen >= FRAME_ZLIB_MIN && c->zlib_skip == 0;
        if (c->zlib_skip)
            c->zlib_skip--;
        if ((rc = frame_encode(&r->base, try_zlib, g_config.max_frame_size, &buf, &len)) < 0)
            return rc;
        if (try_zlib) {
            if (buf[0] & FRAME_FLAG_ZLIB)
                c->zlib_misses = 0;
            else if (++c->zlib_misses >= ZLIB_MISSES) {
                c->zlib_misses = 0;
                c->zlib_skip = ZLIB_SKIP;
            }
        }
        if (!(b = calloc(1, sizeof *b))) {
            free(buf);
            return -ENOMEM;
        }
        b->data = buf;
        b->len = b->cap = len;
        queue_append(c, b);
    }
    mark_pending(c);
    return 0;
}

int conn_send_ref(conn_t *c, uint64_t id, int done, Response *r, ProtobufCMessage *sub,
                  ProtobufCBinaryData *bulk, conn_release_fn *release, void *arg)
{
    uint8_t head[256];
    size_t plen;
    oblock_t *hb, *rb;
    ssize_t hl;

    if (c->closing || id_dead(c, id))
        return -EPIPE;
    /* A compressing connection compresses what it sends; a small payload is
     * cheaper to copy than to track. Either way: packed, and given back now. */
    if (c->zlib || bulk->len < CONN_REF_MIN) {
        int rc = conn_send(c, id, done, r);
        if (rc == 0)
            release(arg);
        return rc;
    }
    r->id = id;
    r->done = done ? 1 : 0;
    hl = frame_encode_head(&r->base, sub, bulk, g_config.max_frame_size, head, sizeof head,
                           &plen);
    if (hl < 0) {
        if (hl == -EMSGSIZE)
            answer_lost(c, id, (int)hl, r);
        return (int)hl;
    }
    /* Both blocks first: a header queued without its data would corrupt
     * every frame after it. */
    if (!(rb = calloc(1, sizeof *rb)))
        goto nomem;
    if (!(hb = tail_room(c, (size_t)hl))) {
        if (!(hb = block_new(BLOCK_SIZE))) {
            free(rb);
            goto nomem;
        }
        queue_append(c, hb);
    }
    memcpy(hb->data + hb->len, head, (size_t)hl);
    hb->len += (size_t)hl;
    c->queued += (size_t)hl;
    rb->data = bulk->data;
    rb->len = bulk->len;
    rb->release = release;
    rb->arg = arg;
    queue_append(c, rb);
    mark_pending(c);
    return 0;
nomem:
    answer_lost(c, id, -ENOMEM, r);
    return -ENOMEM;
}

/* r could not be queued (rc): the request gets an Error with done in its
 * place, and nothing more. */
static void answer_lost(conn_t *c, uint64_t id, int rc, Response *r)
{
    Response e = RESPONSE_INIT;
    Sandbox__Agent__V1__Error err = SANDBOX__AGENT__V1__ERROR__INIT;
    char msg[200];
    stream_t *s = conn_stream_find(c, id);

    if (rc == -EMSGSIZE)
        snprintf(msg, sizeof msg,
                 "the answer (%zu bytes) does not fit in a frame (--max-frame-size %u)",
                 protobuf_c_message_get_packed_size(&r->base), g_config.max_frame_size);
    else
        snprintf(msg, sizeof msg, "the agent is out of memory for the answer");
    log_warn("conn %s: request %llu: %s", c->peer, (unsigned long long)id, msg);
    err.code = CODE(RESOURCE_EXHAUSTED);
    err.message = msg;
    err.os_errno = -rc;
    e.result_case = RES(ERROR);
    e.error = &err;
    if (conn_send_try(c, id, 1, &e) < 0) {
        /* Not even the Error: the close is what the client learns. */
        log_error("conn %s: cannot queue an error for request %llu; closing", c->peer,
                  (unsigned long long)id);
        conn_close(c);
        return;
    }
    if (s) {
        if (!s->_dead) {
            s->_dead = 1;
            c->n_dead++;
        }
        stream_wake(s);
    } else {
        c->dead_id = id;
        c->has_dead_id = 1;
    }
}

int conn_send(conn_t *c, uint64_t id, int done, Response *r)
{
    int rc = conn_send_try(c, id, done, r);
    if (rc == -EMSGSIZE || rc == -ENOMEM)
        answer_lost(c, id, rc, r);
    return rc;
}

static int send_error_v(conn_t *c, uint64_t id, int code, int os_errno, const char *fmt,
                        va_list ap)
{
    char msg[1024];
    Response r = RESPONSE_INIT;
    Sandbox__Agent__V1__Error e = SANDBOX__AGENT__V1__ERROR__INIT;
    char *clean;
    int rc;

    vsnprintf(msg, sizeof msg, fmt, ap);
    /* Messages quote user paths; keep the string field valid UTF-8. */
    clean = util_utf8_sanitize(msg, strlen(msg));
    e.code = code;
    e.message = clean ? clean : (char *)"(out of memory)";
    e.os_errno = os_errno;
    r.result_case = RES(ERROR);
    r.error = &e;
    rc = conn_send(c, id, 1, &r);
    free(clean);
    return rc;
}

int conn_send_error(conn_t *c, uint64_t id, int code, int os_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_error_v(c, id, code, os_errno, fmt, ap);
    va_end(ap);
    return rc;
}

int conn_send_errno(conn_t *c, uint64_t id, int neg_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_error_v(c, id, errcode_from_errno(neg_errno), -neg_errno, fmt, ap);
    va_end(ap);
    return rc;
}

/* Write queued blocks until the socket is full or the turn's budget is used.
 * Returns 0, or -errno on a dead socket. */
static int queue_write(conn_t *c)
{
    size_t budget = WRITE_BUDGET;
    while (c->qhead && budget) {
        struct iovec iov[IOV_BATCH];
        int n = 0;
        size_t want = 0;
        for (oblock_t *b = c->qhead; b && n < IOV_BATCH && want < budget; b = b->next) {
            if (b->len == b->off)
                continue;
            iov[n].iov_base = b->data + b->off;
            iov[n].iov_len = b->len - b->off;
            want += iov[n].iov_len;
            n++;
        }
        if (!n)
            break;
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        c->last_progress = util_now_mono_nano();
        c->queued -= (size_t)w;
        budget = (size_t)w >= budget ? 0 : budget - (size_t)w;
        size_t left = (size_t)w;
        while (left && c->qhead) {
            oblock_t *b = c->qhead;
            size_t avail = b->len - b->off;
            if (left < avail) {
                b->off += left;
                left = 0;
                break;
            }
            left -= avail;
            b->off = b->len;
            /* Keep a partly filled tail block for the next small frames. */
            if (b == c->qtail && b->cap == BLOCK_SIZE) {
                b->off = b->len = 0;
                break;
            }
            c->qhead = b->next;
            if (!c->qhead)
                c->qtail = NULL;
            block_free(b);
        }
        if ((size_t)w < want)
            return 0; /* socket full */
    }
    return 0;
}

static void queue_free(conn_t *c)
{
    oblock_t *b = c->qhead, *next;
    for (; b; b = next) {
        next = b->next;
        block_free(b);
    }
    c->qhead = c->qtail = NULL;
    c->queued = 0;
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
    mark_pending(c);
}

int conn_id_in_flight(conn_t *c, uint64_t id) { return conn_stream_find(c, id) != NULL; }

stream_t *conn_stream_find(conn_t *c, uint64_t id)
{
    for (stream_t *s = c->streams; s; s = s->_next)
        if (s->id == id)
            return s;
    return NULL;
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
    s->_prev = NULL;
    s->_next = c->streams;
    if (c->streams)
        c->streams->_prev = s;
    c->streams = s;
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
    if (s->_prev)
        s->_prev->_next = s->_next;
    else
        c->streams = s->_next;
    if (s->_next)
        s->_next->_prev = s->_prev;
    s->_next = s->_prev = NULL;
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

/* ------------------------------------------------------------ input */

static void protocol_error(conn_t *c, int rc, const char *what)
{
    log_warn("conn %s (%s): protocol error: %s; closing", c->peer, c->kind, what);
    conn_send_error(c, 0, CODE(PROTOCOL_ERROR), rc < 0 ? -rc : 0, "%s", what);
    conn_close_after_flush(c);
}

/* End the streams whose answer could not be sent (answer_lost). Never
 * called from a stream's own callbacks. */
static void reap_dead(conn_t *c)
{
    stream_t *s, *next;
    for (s = c->streams; s && c->n_dead; s = next) {
        next = s->_next;
        if (s->_dead)
            conn_stream_end(c, s);
    }
}

/* A complete frame waits in the input buffer. */
static int frame_ready(const conn_t *c)
{
    uint8_t flags;
    uint32_t plen;
    size_t avail = c->in ? c->in_len - c->in_off : 0;
    int rc = avail ? frame_header_parse(c->in + c->in_off, avail, in_max(c), &flags, &plen) : 0;
    return rc < 0 || (rc == 1 && avail >= FRAME_HEADER_SIZE + (size_t)plen);
}

/* Every request of a half-closed connection has been dispatched: streams
 * that needed more input end; the rest finish, then the connection closes
 * (conn_service). */
static void input_ended(conn_t *c)
{
    stream_t *s, *next;
    c->eof_told = 1;
    if (c->in_len > c->in_off)
        log_info("conn %s (%s): shut down mid-frame (%zu bytes unparsed)", c->peer, c->kind,
                 c->in_len - c->in_off);
    for (s = c->streams; s && !c->closing; s = next) {
        next = s->_next;
        if (s->input_end && s->input_end(s) == STREAM_DONE)
            conn_stream_end(c, s);
    }
    mark_pending(c);
}

/* The peer closed the socket altogether (not only its sending side). */
static int peer_gone(const conn_t *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR));
}

/* Parse and dispatch every complete frame in the input buffer, unless the
 * output queue is over the high-water mark (then input waits). */
static void process_input(conn_t *c)
{
    int handled = 0;
    c->deferred = 0;
    while (!c->closing && !c->close_after_flush) {
        uint8_t flags;
        uint32_t plen;
        size_t avail = c->in_len - c->in_off;
        if (c->holds || !c->in)
            break;
        /* This turn has been busy: the rest waits for the next turn (the
         * write watcher brings it back), after other connections' events. */
        if (handled && avail && ev_time() - ev_now(c->loop) > TURN_BUDGET) {
            c->deferred = 1;
            break;
        }
        if (c->queued >= g_config.conn_queue_high) {
            if (!c->paused) {
                c->paused = 1;
                ev_io_stop(c->loop, &c->rio);
            }
            break;
        }
        uint32_t max = in_max(c);
        int rc = frame_header_parse(c->in + c->in_off, avail, max, &flags, &plen);
        if (rc == 0)
            break;
        if (rc == -EPROTO) {
            char msg[96];
            snprintf(msg, sizeof msg, "frame flags 0x%02x: unknown bits set (only 0x01 is defined)",
                     c->in[c->in_off]);
            protocol_error(c, rc, msg);
            return;
        }
        if (rc == -EMSGSIZE) {
            char msg[128];
            const uint8_t *h = c->in + c->in_off;
            snprintf(msg, sizeof msg, "frame length %u exceeds %s %u",
                     (unsigned)h[1] << 24 | (unsigned)h[2] << 16 | (unsigned)h[3] << 8 | h[4],
                     c->authed ? "the maximum frame size"
                               : "the largest frame accepted before authentication,",
                     max);
            protocol_error(c, rc, msg);
            return;
        }
        if (avail < FRAME_HEADER_SIZE + (size_t)plen)
            break;
        ProtobufCMessage *msg = NULL;
        char err[160];
        rc = frame_decode(&sandbox__agent__v1__request__descriptor, flags,
                          c->in + c->in_off + FRAME_HEADER_SIZE, plen, max, &msg, err,
                          sizeof err);
        c->in_off += FRAME_HEADER_SIZE + plen;
        if (rc < 0) {
            protocol_error(c, rc, err);
            return;
        }
        /* A stream whose answer was lost ends before the next request: its
         * id is free again, and a Cancel or a chunk for it finds nothing. */
        if (c->n_dead)
            reap_dead(c);
        c->has_dead_id = 0;
        g_on_request(c, (const Request *)msg);
        protobuf_c_message_free_unpacked(msg, NULL);
        handled = 1;
    }
    /* Compact; give back a buffer that grew for one large frame. */
    if (c->in && c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
        if (c->in_cap > 4 * IN_INITIAL) {
            freed(c->in_cap);
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    }
    if (c->eof && !c->eof_told && !c->closing && !c->holds && !c->deferred && !c->paused &&
        !frame_ready(c))
        input_ended(c);
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = w->data;
    uint8_t flags;
    uint32_t plen;
    size_t need = IN_INITIAL;

    /* Size the buffer for the frame being received, never beyond one
     * maximum frame: the header was length-checked first. */
    if (c->in && frame_header_parse(c->in + c->in_off, c->in_len - c->in_off, in_max(c), &flags,
                                    &plen) == 1)
        need = SA_MAX(need, FRAME_HEADER_SIZE + (size_t)plen);
    if (c->in_off && c->in_cap - c->in_len < need) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_cap - c->in_len < SA_MIN(need, 4096) || c->in_cap < need) {
        size_t ncap = SA_MAX(c->in_cap, need);
        uint8_t *nb = realloc(c->in, ncap);
        if (!nb) {
            log_error("conn %s: out of memory for input; closing", c->peer);
            conn_close(c);
            return;
        }
        c->in = nb;
        c->in_cap = ncap;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        log_info("conn %s (%s): read: %s; closing", c->peer, c->kind, strerror(errno));
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* End of input. A peer that closed the socket is gone: nothing can
         * reach it. One that only shut down its sending side (half-close)
         * still reads: what it asked for is finished first. */
        if (peer_gone(c)) {
            if (c->in_len > c->in_off)
                log_info("conn %s (%s): closed mid-frame (%zu bytes unparsed)", c->peer,
                         c->kind, c->in_len - c->in_off);
            else
                log_debug("conn %s (%s): closed by peer", c->peer, c->kind);
            conn_close(c);
            return;
        }
        log_debug("conn %s (%s): peer shut down its side; finishing what is in flight",
                  c->peer, c->kind);
        c->eof = 1;
        ev_io_stop(c->loop, &c->rio);
        ev_timer_set(&c->htimer, EOF_CHECK_S, EOF_CHECK_S);
        ev_timer_again(c->loop, &c->htimer);
        process_input(c);
        conn_service(c);
        return;
    }
    c->in_len += (size_t)n;
    process_input(c);
    conn_service(c);
    (void)loop;
    (void)revents;
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
    mark_pending(c);
}

/* Pull streams, write, resume input when drained, and arm the write watcher
 * for whatever is left. */
static void conn_service(conn_t *c)
{
    if (c->closing || c->in_service)
        return;
    c->in_service = 1;
    if (c->deferred && !c->paused)
        process_input(c);
    for (int round = 0; round < 2 && !c->closing; round++) {
        pump(c);
        if (c->closing)
            break;
        int rc = queue_write(c);
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
            process_input(c);
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
    (void)loop;
    (void)revents;
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
    (void)revents;
}

/* Before authentication: the Hello deadline. After a half-close: is the
 * peer still there to read what is in flight? */
static void on_htimer(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_t *c = w->data;
    (void)loop;
    (void)revents;
    if (c->eof) {
        if (peer_gone(c)) {
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

#define UPLOAD_CONN_BUDGET() (2 * (size_t)g_config.max_frame_size)
#define UPLOAD_ALL_BUDGET() (8 * (size_t)g_config.max_frame_size)

static int upload_over(const conn_t *c)
{
    return c->upload >= UPLOAD_CONN_BUDGET() || g_upload >= UPLOAD_ALL_BUDGET();
}



void conn_upload_take(conn_t *c, size_t n)
{
    c->upload += n;
    g_upload += n;
    if (!c->budget_held && !c->closing && upload_over(c)) {
        c->budget_held = 1;
        conn_hold_input(c, 1);
    }
}

void conn_upload_leave(conn_t *c, size_t n) { c->upload -= SA_MIN(c->upload, n); }

void conn_upload_give(conn_t *c, size_t n)
{
    if (c)
        conn_upload_leave(c, n);
    g_upload -= SA_MIN(g_upload, n);
    /* Connections waiting for the budget go on, in the order they came. */
    for (conn_t *h = g_all; h; h = h->next_all) {
        if (h->budget_held && !upload_over(h)) {
            h->budget_held = 0;
            hold_release(h);
        }
    }
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

/* The last hold is released. Frames already buffered are parsed before the
 * loop sleeps (conn_service), not at the next read, and not here: the
 * caller may be in the middle of a producer's callback (a process's stdin,
 * a worker's done) that a new request could change under it. */
static void hold_release(conn_t *c)
{
    if (!c->holds || --c->holds || c->closing)
        return;
    if (!c->paused && !c->close_after_flush && !c->eof)
        ev_io_start(c->loop, &c->rio);
    c->deferred = 1;
    mark_pending(c);
}

void conn_hold_input(conn_t *c, int hold)
{
    if (hold) {
        if (c->holds++ == 0 && !c->paused && !c->closing)
            ev_io_stop(c->loop, &c->rio);
        return;
    }
    hold_release(c);
}

/* ------------------------------------------------------------ close */

void conn_close_after_flush(conn_t *c)
{
    if (c->closing)
        return;
    c->close_after_flush = 1;
    ev_io_stop(c->loop, &c->rio);
    mark_pending(c);
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
    queue_free(c);
    freed(c->in_cap);
    free(c->in);
    c->in = NULL;
    c->budget_held = 0;
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else
        g_all = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
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
    /* g_all is newest first. */
    for (conn_t *c = g_all; c; c = c->next_all)
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
    for (conn_t *c = g_all, *next; c; c = next) {
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
    while (g_all)
        conn_close(g_all);
}

void conn_shutdown_all(void)
{
    /* Every request in flight gets its one final answer, and what the
     * socket takes at once is written: the agent does not wait for a slow
     * client on its way out. */
    for (conn_t *c = g_all; c; c = c->next_all) {
        for (stream_t *s = c->streams; s && !c->closing; s = s->_next)
            conn_send_error(c, s->id, CODE(UNAVAILABLE), ESHUTDOWN,
                            "%s: the agent is shutting down", s->ops->name);
        if (!c->closing && queue_write(c) < 0) {
            /* the peer is gone: closing below is all there is to do */
        }
    }
    conn_close_all();
}
