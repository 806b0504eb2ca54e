/* tunnel_io.c - the bytes of an open multiplexed tunnel, both ways (see
 * tunnel.c for the flow control): TunnelSend written to the target or
 * buffered within the agent's window, TunnelWindow credit, TunnelData read
 * from the target within the client's credit, and the tunnel's closing. */
#include "tunnel.h"
#include "tunnel_internal.h"

#include "config.h"
#include "conn.h"
#include "errcode.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
    ev_io_stop(tunnel_loop, &t->rio);
    ev_io_stop(tunnel_loop, &t->wio);
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
    if (s->ops != &tunnel_ops)
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
            ev_io_start(tunnel_loop, &t->wio);
            return;
        }
    }
    ev_io_stop(tunnel_loop, &t->wio);
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
        ev_io_start(tunnel_loop, &t->wio);
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
    tunnel_t *t = s && s->ops == &tunnel_ops ? (tunnel_t *)s : NULL;

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
    ssize_t n = util_read(t->fd, *buf, want);
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
            ev_io_start(tunnel_loop, &t->rio);
        return 1;
    }
    if (n == 0) {
        t->rd_eof = 1;
        td->eof = 1;
        return 1;
    }
    if (n == -EAGAIN)
        ev_io_start(tunnel_loop, &t->rio);
    else
        close_with(t, (int)-n, "read from the target: %s", strerror((int)-n));
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

stream_status_t tunnel_io_next(stream_t *s)
{
    tunnel_t *t = (tunnel_t *)s;
    Sandbox__Agent__V1__TunnelData td = SANDBOX__AGENT__V1__TUNNEL_DATA__INIT;
    uint8_t *buf = NULL;
    int have, got;

    if (t->fail_err) {
        conn_send_error(s->conn, s->id, tunnel_code_of(t->fail_err), -t->fail_err,
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

/* Bytes the client sent before the tunnel was open go out now. The target
 * has had no time to answer yet: its first bytes are waited for, not read
 * for at once. */
void tunnel_io_open(tunnel_t *t)
{
    ev_io_init(&t->rio, on_target_readable, t->fd, EV_READ);
    ev_io_init(&t->wio, on_target_writable, t->fd, EV_WRITE);
    t->rio.data = t->wio.data = t;
    flush_input(t);
    if (!t->closing)
        ev_io_start(tunnel_loop, &t->rio);
    stream_wake(&t->base);
}
