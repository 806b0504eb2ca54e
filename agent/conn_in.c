/* conn_in.c - the input side of a connection: the input buffer, frame
 * parsing and dispatch to the request handler, input holds and the
 * upload budget. Input is not parsed while the output queue is above its
 * high-water mark, so a client that stops reading stops costing memory. */
#include "conn_internal.h"

#include "config.h"
#include "errcode.h"
#include "frame.h"
#include "log.h"
#include "pbscan.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static conn_request_fn *g_on_request;
static size_t g_upload; /* upload bytes held for every connection */

static void hold_release(conn_t *c);

void conn_set_request_handler(conn_request_fn *fn) { g_on_request = fn; }

/* The largest frame this connection may send now. */
static uint32_t in_max(const conn_t *c)
{
    return c->authed ? g_config.max_frame_size : SA_MIN(PREAUTH_FRAME_MAX, g_config.max_frame_size);
}

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
    conn_mark_pending(c);
}

/* The peer closed the socket altogether (not only its sending side). */
int conn_in_peer_gone(const conn_t *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR));
}

/* A frame header frame_header_parse refused (rc): the connection ends
 * with a protocol error that says why. */
static void header_refused(conn_t *c, int rc, uint32_t max)
{
    char msg[128];
    if (rc == -EPROTO)
        snprintf(msg, sizeof msg, "frame flags 0x%02x: unknown bits set (only 0x01 is defined)",
                 c->in[c->in_off]);
    else
        snprintf(msg, sizeof msg, "frame length %u exceeds %s %u",
                 (unsigned)frame_header_length(c->in + c->in_off),
                 c->authed ? "the maximum frame size"
                           : "the largest frame accepted before authentication,",
                 max);
    protocol_error(c, rc, msg);
}

/* Decode the complete frame at the head of the input buffer, consume it,
 * and hand the request to the handler. Returns -1 when the frame could not
 * be decoded (the connection is closing), else 0. */
static int dispatch_frame(conn_t *c, uint8_t flags, uint32_t plen, uint32_t max)
{
    const uint8_t *payload = c->in + c->in_off + FRAME_HEADER_SIZE;
    ProtobufCBinaryData *bulk = NULL;
    ProtobufCMessage *msg = NULL;
    char err[160];
    int rc;
    /* Bulk data is used where it lies; anything else, and anything
     * pbscan declines, is protobuf-c's to decode (and to refuse). */
    if (!(flags & FRAME_FLAG_ZLIB) && plen >= IN_SCAN_MIN)
        msg = (ProtobufCMessage *)pbscan_request(payload, plen, IN_SCAN_MIN / 2, &bulk);
    rc = msg ? 0
             : frame_decode(&sandbox__agent__v1__request__descriptor, flags, payload, plen, max,
                            &msg, err, sizeof err);
    c->in_off += FRAME_HEADER_SIZE + plen;
    if (rc < 0) {
        protocol_error(c, rc, err);
        return -1;
    }
    /* A stream whose answer was lost ends before the next request: its
     * id is free again, and a Cancel or a chunk for it finds nothing. */
    if (c->n_dead)
        reap_dead(c);
    c->has_dead_id = 0;
    c->in_bulk = bulk;
    g_on_request(c, (const Request *)msg);
    c->in_bulk = NULL;
    if (bulk)
        pbscan_free((Request *)msg, bulk);
    else
        protobuf_c_message_free_unpacked(msg, NULL);
    if (c->closing && c->in) { /* closed by the handler: conn_close left it */
        conn_freed(c->in_cap);
        free(c->in);
        c->in = NULL;
    }
    return 0;
}

/* Input stops here for now: held, deferred to the next turn once this one
 * has been busy (the write watcher brings it back, after other
 * connections' events), or paused while the output queue is over its
 * high-water mark. handled: a frame was dispatched in this turn. */
static int input_waits(conn_t *c, int handled)
{
    if (c->holds || !c->in)
        return 1;
    if (handled && c->in_len > c->in_off && ev_time() - ev_now(c->loop) > TURN_BUDGET) {
        c->deferred = 1;
        return 1;
    }
    if (c->queued >= g_config.conn_queue_high) {
        if (!c->paused) {
            c->paused = 1;
            ev_io_stop(c->loop, &c->rio);
        }
        return 1;
    }
    return 0;
}

/* Everything in the input buffer is parsed: rewind it, and give back a
 * buffer that grew for one large frame. */
static void compact_input(conn_t *c)
{
    if (!c->in || c->in_off != c->in_len)
        return;
    c->in_off = c->in_len = 0;
    if (c->in_cap > 4 * IN_INITIAL) {
        conn_freed(c->in_cap);
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Parse and dispatch every complete frame in the input buffer, unless the
 * output queue is over the high-water mark (then input waits). */
void conn_in_process(conn_t *c)
{
    int handled = 0;
    if (c->in_bulk)
        return; /* called from inside a handler: the buffer is in use */
    c->deferred = 0;
    while (!c->closing && !c->close_after_flush && !input_waits(c, handled)) {
        uint8_t flags;
        uint32_t plen;
        uint32_t max = in_max(c);
        int rc = frame_header_parse(c->in + c->in_off, c->in_len - c->in_off, max, &flags, &plen);
        if (rc == 0)
            break;
        if (rc < 0) {
            header_refused(c, rc, max);
            return;
        }
        if (c->in_len - c->in_off < FRAME_HEADER_SIZE + (size_t)plen)
            break;
        if (dispatch_frame(c, flags, plen, max) < 0)
            return;
        handled = 1;
    }
    compact_input(c);
    if (c->eof && !c->eof_told && !c->closing && !c->holds && !c->deferred && !c->paused &&
        !frame_ready(c))
        input_ended(c);
}

void conn_in_on_read(struct ev_loop *loop, ev_io *w, int revents)
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
    ssize_t n = util_read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0) {
        if (n == -EAGAIN)
            return;
        log_info("conn %s (%s): read: %s; closing", c->peer, c->kind, strerror((int)-n));
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* End of input. A peer that closed the socket is gone: nothing can
         * reach it. One that only shut down its sending side (half-close)
         * still reads: what it asked for is finished first. */
        if (conn_in_peer_gone(c)) {
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
        conn_in_process(c);
        conn_service(c);
        return;
    }
    c->in_len += (size_t)n;
    conn_in_process(c);
    conn_service(c);
}

int conn_keep_bulk(conn_t *c, ProtobufCBinaryData *d, conn_bulk_t *out)
{
    out->block = out->data = d->data;
    out->len = d->len;
    if (!d->len) {
        out->block = out->data = NULL;
    } else if (d != c->in_bulk) {
        /* protobuf-c's copy, made for this request alone, is the block. */
    } else if (d->len >= c->in_cap / 2) {
        /* The frame fills most of the input buffer: the buffer is the
         * block, and what was read after the frame moves to a new one. */
        size_t rest = c->in_len - c->in_off, cap = SA_MAX(rest, (size_t)IN_INITIAL);
        uint8_t *nb = NULL;
        if (rest) {
            if (!(nb = malloc(cap))) {
                *out = (conn_bulk_t){0};
                return -ENOMEM;
            }
            memcpy(nb, c->in + c->in_off, rest);
        }
        out->block = c->in;
        c->in = nb;
        c->in_cap = nb ? cap : 0;
        c->in_off = 0;
        c->in_len = rest;
        c->in_bulk = NULL; /* the request's field lies in the block now */
    } else {
        /* A small frame in a large buffer: the buffer stays, the bytes are
         * copied, so what is held is what the upload budget counts. */
        if (!(out->block = out->data = malloc(d->len))) {
            out->len = 0;
            return -ENOMEM;
        }
        memcpy(out->data, d->data, d->len);
    }
    d->data = NULL;
    d->len = 0;
    return 0;
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
    for (conn_t *h = conn_all; h; h = h->next_all) {
        if (h->budget_held && !upload_over(h)) {
            h->budget_held = 0;
            hold_release(h);
        }
    }
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
    conn_mark_pending(c);
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
