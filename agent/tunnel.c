/* tunnel.c - see tunnel.h.
 *
 * A multiplexed tunnel is a stream of its connection, answering the
 * OpenTunnel's id; the tunnel id is that request id. Target to client: the
 * stream's next() reads at most the client's credit from the target, and
 * only when the connection's queue has room, so a slow client leaves the
 * bytes in the kernel and the target blocks. Client to target: TunnelSend
 * data is written at once; what the target does not take waits in a buffer
 * of at most --tunnel-window bytes, which is also the credit the client
 * may have outstanding; written bytes are credited back in TunnelData. So
 * each tunnel costs at most its window in memory, and a stalled tunnel
 * stalls nothing else.
 *
 * A dedicated tunnel (Connect) is a stream only while its target is being
 * dialled, with the connection's input held; then the Ack is queued and the
 * connection's socket, with the bytes read after the Connect frame, is
 * handed to a relay (relay.h).
 */
#include "tunnel.h"

#include "config.h"
#include "conn.h"
#include "dial.h"
#include "errcode.h"
#include "fs.h"
#include "log.h"
#include "relay.h"
#include "target.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TUNNEL_DEFAULT_WINDOW (256u << 10)
/* Bytes read from a target per TunnelData. */
#define TUNNEL_CHUNK (256u << 10)

typedef struct tunnel {
    stream_t base; /* first: answers the OpenTunnel or Connect */
    struct tunnel *next, *prev;
    int dedicated;
    char text[160]; /* the target as asked, for messages */
    target_t target;
    user_id_t user;
    int as_user;
    dial_t *dial; /* while dialling */
    int fd;
    ev_io rio, wio;

    int open;           /* connected */
    int fail_err;       /* the dial failed: an Error ends the request */
    char msg[320];      /* its reason */
    int closing;        /* TunnelClosed is next */
    int close_errno;
    char reason[200];
    unsigned opened_sent : 1, rd_eof : 1, wr_eof : 1, wr_shut : 1;

    uint32_t window, agent_window;
    uint64_t credit;      /* bytes the agent may still send */
    uint64_t outstanding; /* client bytes received, not yet credited back */
    uint64_t owed;        /* of which written to the target */
    uint8_t *ibuf;        /* waiting for the target: ibuf[ioff..ilen) */
    size_t ioff, ilen;
    uint64_t bytes_in, bytes_out;
    char local[128], remote[128];
} tunnel_t;

static struct ev_loop *g_loop;
static tunnel_t *g_tunnels;
static unsigned g_count;
static target_rule_t g_rules[CONFIG_MAX_TUNNEL_ALLOW];
static int g_nrules;

static stream_status_t t_next(stream_t *s);
static void t_destroy(stream_t *s);
static const stream_ops_t g_ops = {
    .name = "tunnel",
    .next = t_next,
    .destroy = t_destroy,
};

unsigned tunnel_count(void) { return g_count + relay_count(); }

void tunnel_init(struct ev_loop *loop)
{
    char err[300];
    g_loop = loop;
    g_nrules = 0;
    /* config_parse() checked every rule already. */
    for (int i = 0; i < g_config.n_tunnel_allow; i++)
        if (target_rule_parse(g_config.tunnel_allow[i], &g_rules[g_nrules], err, sizeof err) ==
            0)
            g_nrules++;
    dial_init(loop);
}

/* Connection failures are the target's state, not the request's fault. */
static int code_of(int neg_errno)
{
    switch (-neg_errno) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case EADDRNOTAVAIL:
    case EAGAIN: return CODE(UNAVAILABLE);
    default: return errcode_from_errno(neg_errno);
    }
}

/* ------------------------------------------------------------ admission */

static void rules_list(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < g_nrules && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", g_rules[i].text);
}

/* Everything checked before a tunnel exists: switched on, a valid and
 * allowed target, the user, the global limit. Answers and returns -1 on
 * refusal. */
static int admit(conn_t *c, const Request *req, const char *op, const char *text,
                 const char *user, tunnel_t *t, int *check_addr)
{
    char err[300];
    int rule;

    if (g_config.no_tunnels) {
        conn_send_error(c, req->id, CODE(PERMISSION_DENIED), EPERM,
                        "%s: tunnels are disabled on this agent (--no-tunnels)", op);
        return -1;
    }
    if (target_parse(text, &t->target, err, sizeof err) < 0) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL, "%s: %s", op, err);
        return -1;
    }
    snprintf(t->text, sizeof t->text, "%s", text);
    int verdict = target_allows(g_rules, g_nrules, &t->target, &rule);
    if (verdict == TARGET_DENY) {
        char rules[1024];
        rules_list(rules, sizeof rules);
        conn_send_error(c, req->id, CODE(PERMISSION_DENIED), EACCES,
                        "%s: target '%s' is not allowed: no --tunnel-allow rule matches it "
                        "(rules: %s)",
                        op, text, rules);
        return -1;
    }
    *check_addr = verdict == TARGET_CHECK_ADDR;
    if (tunnel_count() >= g_config.max_tunnels) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), EMFILE,
                        "%s: %u tunnels are open, the agent's limit (--max-tunnels)", op,
                        tunnel_count());
        return -1;
    }
    if (fs_req_user(c, req->id, user, &t->user, &t->as_user) < 0)
        return -1;
    return 0;
}

static tunnel_t *tunnel_alloc(void)
{
    tunnel_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->fd = -1;
    t->base.ops = &g_ops;
    ev_init(&t->rio, NULL);
    ev_init(&t->wio, NULL);
    return t;
}

static void tunnel_link(tunnel_t *t)
{
    t->next = g_tunnels;
    if (g_tunnels)
        g_tunnels->prev = t;
    g_tunnels = t;
    g_count++;
}

static void t_destroy(stream_t *s)
{
    tunnel_t *t = (tunnel_t *)s;
    /* The dial, the watchers, then the descriptor, then memory. */
    dial_cancel(t->dial);
    ev_io_stop(g_loop, &t->rio);
    ev_io_stop(g_loop, &t->wio);
    if (t->fd >= 0)
        close(t->fd);
    free(t->ibuf);
    if (t->prev)
        t->prev->next = t->next;
    else
        g_tunnels = t->next;
    if (t->next)
        t->next->prev = t->prev;
    g_count--;
    free(t);
}

/* ------------------------------------------------------------ closing */

/* The tunnel ends with TunnelClosed at the stream's next turn. */
static void close_with(tunnel_t *t, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void close_with(tunnel_t *t, int os_errno, const char *fmt, ...)
{
    va_list ap;
    if (t->closing)
        return;
    t->closing = 1;
    t->close_errno = os_errno;
    va_start(ap, fmt);
    vsnprintf(t->reason, sizeof t->reason, fmt, ap);
    va_end(ap);
    ev_io_stop(g_loop, &t->rio);
    ev_io_stop(g_loop, &t->wio);
    stream_wake(&t->base);
}

static void send_closed(tunnel_t *t)
{
    Response r = RESPONSE_INIT;
    Sandbox__Agent__V1__TunnelClosed tc = SANDBOX__AGENT__V1__TUNNEL_CLOSED__INIT;
    char *clean = util_utf8_sanitize(t->reason, strlen(t->reason));
    tc.reason = clean ? clean : (char *)"closed";
    tc.os_errno = t->close_errno;
    tc.bytes_in = t->bytes_in;
    tc.bytes_out = t->bytes_out;
    r.result_case = RES(TUNNEL_CLOSED);
    r.tunnel_closed = &tc;
    conn_send(t->base.conn, t->base.id, 1, &r);
    free(clean);
    log_debug("tunnel %llu to %s: %s (%llu bytes in, %llu out)",
              (unsigned long long)t->base.id, t->text, t->reason,
              (unsigned long long)t->bytes_in, (unsigned long long)t->bytes_out);
}

/* End the tunnel at once with an Error (a client's mistake). */
static void end_with_error(tunnel_t *t, int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void end_with_error(tunnel_t *t, int code, int os_errno, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    conn_t *c = t->base.conn;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    conn_send_error(c, t->base.id, code, os_errno, "%s", msg);
    conn_stream_end(c, &t->base);
}

int tunnel_cancel(stream_t *s)
{
    if (s->ops != &g_ops)
        return 0;
    tunnel_t *t = (tunnel_t *)s;
    t->closing = 1;
    t->close_errno = ECANCELED;
    snprintf(t->reason, sizeof t->reason, "cancelled by the client");
    send_closed(t);
    return 1;
}

/* ------------------------------------------------------------ client to target */

static void written(tunnel_t *t, size_t n)
{
    t->bytes_out += n;
    t->owed += n;
    stream_wake(&t->base);
}

static void maybe_finished(tunnel_t *t)
{
    if (t->rd_eof && t->wr_shut && !t->closing)
        close_with(t, 0, "closed");
}

/* Write to the target what it takes now. Returns the bytes written (fewer
 * than len when it would block), or -1 when the write failed: the tunnel
 * is closing. */
static ssize_t send_now(tunnel_t *t, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(t->fd, data + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            written(t, (size_t)w);
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else if (!(w < 0 && errno == EINTR)) {
            close_with(t, errno, "write to the target: %s", strerror(errno));
            return -1;
        }
    }
    return (ssize_t)off;
}

/* Write what waits for the target; pass the client's end of file on once
 * everything is written. */
static void flush_input(tunnel_t *t)
{
    if (!t->open || t->closing)
        return;
    if (t->ioff < t->ilen) {
        ssize_t w = send_now(t, t->ibuf + t->ioff, t->ilen - t->ioff);
        if (w < 0)
            return;
        t->ioff += (size_t)w;
        if (t->ioff < t->ilen) {
            ev_io_start(g_loop, &t->wio);
            return;
        }
    }
    ev_io_stop(g_loop, &t->wio);
    /* Drained: give the buffer back, idle tunnels cost no window. */
    free(t->ibuf);
    t->ibuf = NULL;
    t->ioff = t->ilen = 0;
    if (t->wr_eof && !t->wr_shut) {
        shutdown(t->fd, SHUT_WR);
        t->wr_shut = 1;
        maybe_finished(t);
    }
}

/* Take len bytes from a TunnelSend: written now when nothing waits,
 * buffered otherwise. The window check bounds the buffer. */
static int take_input(tunnel_t *t, const uint8_t *data, size_t len)
{
    if (t->open && t->ioff == t->ilen) {
        ssize_t w = send_now(t, data, len);
        if (w < 0)
            return 0;
        data += w;
        len -= (size_t)w;
    }
    if (!len)
        return 0;
    if (!t->ibuf) {
        if (!(t->ibuf = malloc(t->agent_window)))
            return -ENOMEM;
        t->ioff = t->ilen = 0;
    }
    if (t->ilen + len > t->agent_window) {
        memmove(t->ibuf, t->ibuf + t->ioff, t->ilen - t->ioff);
        t->ilen -= t->ioff;
        t->ioff = 0;
    }
    memcpy(t->ibuf + t->ilen, data, len);
    t->ilen += len;
    if (t->open)
        ev_io_start(g_loop, &t->wio);
    return 0;
}

static void on_target_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    flush_input(w->data);
}

void tunnel_handle_feed(conn_t *c, const Request *req)
{
    int is_send = req->op_case == OP(TUNNEL_SEND);
    const char *op = is_send ? "tunnel_send" : "tunnel_window";
    uint64_t tid = is_send ? req->tunnel_send->tunnel_id : req->tunnel_window->tunnel_id;
    stream_t *s = conn_stream_find(c, tid);
    tunnel_t *t = s && s->ops == &g_ops ? (tunnel_t *)s : NULL;

    if (!t || t->dedicated) {
        /* Answered on the message's own id, unless that id belongs to
         * something else in flight: then on the connection's (0). */
        uint64_t id = conn_id_in_flight(c, req->id) ? 0 : req->id;
        conn_send_error(c, id, CODE(NOT_FOUND), 0,
                        "%s: no tunnel %llu is open on this connection", op,
                        (unsigned long long)tid);
        return;
    }
    if (!is_send) {
        uint64_t credit = t->credit + req->tunnel_window->credit;
        /* More than the largest window is never needed in flight. */
        t->credit = SA_MIN(credit, (uint64_t)g_config.max_tunnel_window);
        if (t->credit && t->open && !ev_is_active(&t->rio))
            stream_wake(&t->base);
        return;
    }
    const Sandbox__Agent__V1__TunnelSend *ts = req->tunnel_send;
    if (t->wr_eof) {
        end_with_error(t, CODE(FAILED_PRECONDITION), 0,
                       "tunnel %llu: tunnel_send after the client's eof",
                       (unsigned long long)tid);
        return;
    }
    if (ts->data.len > t->agent_window - t->outstanding) {
        end_with_error(t, CODE(RESOURCE_EXHAUSTED), 0,
                       "tunnel %llu: %zu bytes sent with %llu outstanding exceed the agent's "
                       "window of %u bytes; the tunnel is closed",
                       (unsigned long long)tid, ts->data.len,
                       (unsigned long long)t->outstanding, t->agent_window);
        return;
    }
    if (t->closing)
        return; /* its TunnelClosed is on the way; bytes_out says what was written */
    t->outstanding += ts->data.len;
    if (ts->data.len && take_input(t, ts->data.data, ts->data.len) < 0) {
        end_with_error(t, CODE(RESOURCE_EXHAUSTED), ENOMEM,
                       "tunnel %llu: out of memory for the client's data",
                       (unsigned long long)tid);
        return;
    }
    if (ts->eof)
        t->wr_eof = 1;
    if (t->ioff == t->ilen)
        flush_input(t); /* nothing waits: pass the eof on now */
}

/* ------------------------------------------------------------ target to client */

static void on_target_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    tunnel_t *t = w->data;
    ev_io_stop(loop, w);
    stream_wake(&t->base);
}

static void send_opened(tunnel_t *t)
{
    Response r = RESPONSE_INIT;
    Sandbox__Agent__V1__TunnelOpened to = SANDBOX__AGENT__V1__TUNNEL_OPENED__INIT;
    to.tunnel_id = t->base.id;
    to.local_address = t->local;
    to.remote_address = t->remote;
    to.agent_window = t->agent_window;
    to.window = t->window;
    r.result_case = RES(TUNNEL_OPENED);
    r.tunnel_opened = &to;
    conn_send(t->base.conn, t->base.id, 0, &r);
}

/* Credit goes back once a quarter of the window is written, or when
 * everything received is written (a client waiting to send a piece larger
 * than what is left of its window is never stuck). Credits of one loop
 * turn go out together; after the client's eof none is due. Returns 1 when
 * td carries credit. */
static int credit_due(tunnel_t *t, Sandbox__Agent__V1__TunnelData *td)
{
    if (!t->owed || t->wr_eof || (t->owed < t->agent_window / 4 && t->ioff != t->ilen))
        return 0;
    td->credit = (uint32_t)t->owed;
    t->outstanding -= t->owed;
    t->owed = 0;
    return 1;
}

/* Read at most the client's credit from the target into *buf, the block
 * the data leaves in: it is queued by reference, not packed again
 * (conn_send_ref). Returns 1 when td carries data or the target's eof, 0
 * when there is nothing (waiting for the target, or closing), -1 when the
 * block could not be had (closing). */
static int read_target(tunnel_t *t, Sandbox__Agent__V1__TunnelData *td, uint8_t **buf)
{
    if (t->rd_eof || !t->credit || ev_is_active(&t->rio))
        return 0;
    size_t want = SA_MIN((size_t)t->credit, (size_t)TUNNEL_CHUNK);
    want = SA_MIN(want, conn_max_payload(t->base.conn) - 64);
    if (!(*buf = malloc(want))) {
        close_with(t, ENOMEM, "out of memory for the target's data");
        return -1;
    }
    ssize_t n = read(t->fd, *buf, want);
    if (n > 0) {
        if ((size_t)n < want / 2) { /* what is queued is what is counted */
            uint8_t *nb = realloc(*buf, (size_t)n);
            *buf = nb ? nb : *buf;
        }
        td->data.data = *buf;
        td->data.len = (size_t)n;
        t->credit -= (uint64_t)n;
        t->bytes_in += (uint64_t)n;
        /* A short read drained the socket: wait for more instead of
         * reading again before this data is sent. */
        if ((size_t)n < want)
            ev_io_start(g_loop, &t->rio);
        return 1;
    }
    if (n == 0) {
        t->rd_eof = 1;
        td->eof = 1;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        ev_io_start(g_loop, &t->rio);
    else
        close_with(t, errno, "read from the target: %s", strerror(errno));
    return 0;
}

/* Queue td: its data (buf) by reference, which the connection frees once
 * written. Returns 0, or -1 when it could not be queued (closing). */
static int send_data(tunnel_t *t, Sandbox__Agent__V1__TunnelData *td, uint8_t *buf)
{
    conn_t *c = t->base.conn;
    Response r = RESPONSE_INIT;
    int rc;
    r.result_case = RES(TUNNEL_DATA);
    r.tunnel_data = td;
    rc = td->data.len ? conn_send_ref(c, t->base.id, 0, &r, &td->base, &td->data, free, buf)
                      : conn_send(c, t->base.id, 0, &r);
    if (!td->data.len || rc < 0)
        free(buf);
    if (rc < 0) {
        close_with(t, -rc, "queue data for the client: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

static stream_status_t t_next(stream_t *s)
{
    tunnel_t *t = (tunnel_t *)s;
    Sandbox__Agent__V1__TunnelData td = SANDBOX__AGENT__V1__TUNNEL_DATA__INIT;
    uint8_t *buf = NULL;
    int have, got;

    if (t->fail_err) {
        conn_send_error(s->conn, s->id, code_of(t->fail_err), -t->fail_err,
                        "open_tunnel '%s': %s", t->text, t->msg);
        return STREAM_DONE;
    }
    if (!t->open || t->dedicated)
        return STREAM_WAIT;
    if (!t->opened_sent) {
        send_opened(t);
        t->opened_sent = 1;
        return STREAM_MORE;
    }
    if (t->closing) {
        send_closed(t);
        return STREAM_DONE;
    }
    have = credit_due(t, &td);
    if ((got = read_target(t, &td, &buf)) < 0)
        return STREAM_MORE; /* closing: TunnelClosed is next */
    have |= got;
    if (have && send_data(t, &td, buf) < 0)
        return STREAM_MORE;
    if (!have)
        free(buf);
    maybe_finished(t);
    return have || t->closing ? STREAM_MORE : STREAM_WAIT;
}

/* ------------------------------------------------------------ dialling */

static void name_socket(tunnel_t *t)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(t->fd, (struct sockaddr *)&ss, &len) == 0)
        target_format_addr((struct sockaddr *)&ss, len, t->local, sizeof t->local);
    len = sizeof ss;
    if (getpeername(t->fd, (struct sockaddr *)&ss, &len) == 0)
        target_format_addr((struct sockaddr *)&ss, len, t->remote, sizeof t->remote);
    if (t->target.kind == TARGET_UNIX)
        snprintf(t->remote, sizeof t->remote, "%s", t->target.path);
}

static void connect_done(tunnel_t *t, int fd, int err, const char *msg)
{
    conn_t *c = t->base.conn;
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;
    relay_t *rl = NULL;

    if (fd >= 0 && !(rl = relay_new(g_loop, fd, t->text))) {
        close(fd);
        err = -ENOMEM;
        msg = "out of memory";
    }
    if (!rl) {
        conn_send_error(c, t->base.id, code_of(err), -err, "connect '%s': %s", t->text, msg);
        conn_stream_end(c, &t->base);
        /* Still a framed connection: what the client sent next is parsed. */
        conn_hold_input(c, 0);
        return;
    }
    log_debug("conn %s: connect %s: dedicated from now on", conn_peer(c), t->text);
    r.result_case = RES(ACK);
    r.ack = &ack;
    conn_send(c, t->base.id, 1, &r);
    conn_stream_end(c, &t->base);
    /* The input stays held: after the Ack the socket is the relay's. */
    conn_handover(c, relay_start, rl);
}

static void on_dialled(void *arg, int fd, int err, const char *msg)
{
    tunnel_t *t = arg;
    t->dial = NULL;
    if (t->dedicated) {
        connect_done(t, fd, err, msg);
        return;
    }
    if (fd < 0) {
        t->fail_err = err;
        snprintf(t->msg, sizeof t->msg, "%s", msg);
        stream_wake(&t->base);
        return;
    }
    t->fd = fd;
    t->open = 1;
    name_socket(t);
    ev_io_init(&t->rio, on_target_readable, fd, EV_READ);
    ev_io_init(&t->wio, on_target_writable, fd, EV_WRITE);
    t->rio.data = t->wio.data = t;
    log_debug("tunnel %llu: %s open (%s -> %s)", (unsigned long long)t->base.id, t->text,
              t->local, t->remote);
    /* Bytes the client sent before the tunnel was open go out now. The
     * target has had no time to answer yet: its first bytes are waited
     * for, not read for at once. */
    flush_input(t);
    if (!t->closing)
        ev_io_start(g_loop, &t->rio);
    stream_wake(&t->base);
}

static tunnel_t *start(conn_t *c, const Request *req, const char *op, const char *text,
                       const char *user, int dedicated)
{
    tunnel_t *t = tunnel_alloc();
    int check_addr = 0, rc;
    if (!t) {
        conn_send_errno(c, req->id, -ENOMEM, "%s: out of memory", op);
        return NULL;
    }
    if (admit(c, req, op, text, user, t, &check_addr) < 0) {
        free(t);
        return NULL;
    }
    t->dedicated = dedicated;
    tunnel_link(t);
    if ((rc = conn_stream_add(c, &t->base, req->id)) < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc, "%s: cannot start: %s", op,
                        rc == -EMFILE ? "too many requests in flight" : strerror(-rc));
        t_destroy(&t->base);
        return NULL;
    }
    t->dial = dial_start(&t->target, t->as_user ? &t->user : NULL, g_rules, g_nrules,
                         check_addr, on_dialled, t);
    if (!t->dial) {
        conn_send_errno(c, req->id, -ENOMEM, "%s: out of memory", op);
        conn_stream_end(c, &t->base);
        return NULL;
    }
    return t;
}

void tunnel_handle_open(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__OpenTunnel *ot = req->open_tunnel;
    unsigned mine = 0;
    for (tunnel_t *t = g_tunnels; t; t = t->next)
        mine += t->base.conn == c && !t->dedicated;
    if (mine >= g_config.max_tunnels_per_conn) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), EMFILE,
                        "open_tunnel: %u tunnels are open on this connection, the limit "
                        "(--max-tunnels-per-conn)",
                        mine);
        return;
    }
    tunnel_t *t = start(c, req, "open_tunnel", ot->target, ot->user, 0);
    if (!t)
        return;
    t->window = ot->window ? ot->window : TUNNEL_DEFAULT_WINDOW;
    t->window = SA_MIN(t->window, g_config.max_tunnel_window);
    t->credit = t->window;
    t->agent_window = g_config.tunnel_window;
}

void tunnel_handle_connect(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Connect *cn = req->connect;
    if (conn_in_flight(c)) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), EBUSY,
                        "connect: %u other requests are in flight on this connection; "
                        "Connect needs a connection of its own",
                        conn_in_flight(c));
        return;
    }
    /* Nothing after the Connect frame is parsed: it is the target's if the
     * connect succeeds. (The dial reports later, never from start().) */
    if (start(c, req, "connect", cn->target, cn->user, 1))
        conn_hold_input(c, 1);
}

void tunnel_close_all(void) { relay_close_all(); }
