/* conn_out.c - the output queue of a connection: frames packed into
 * blocks (small frames share a 16 KiB block, large frames own theirs) or
 * queued by reference (conn_send_ref), written with writev at most
 * WRITE_BUDGET per loop turn, and the error replies.
 * Errors: 0 or -errno, as conn.h says. */
#include "conn_internal.h"

#include "config.h"
#include "errcode.h"
#include "frame.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static void answer_lost(conn_t *c, uint64_t id, int rc, Response *r);

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
            conn_freed(b->cap);
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
    conn_mark_pending(c);
    return 0;
}

/* conn_send_ref's bytes packed into the queue after all: given back now. */
static int send_packed(conn_t *c, uint64_t id, int done, Response *r, conn_release_fn *release,
                       void *arg)
{
    int rc = conn_send(c, id, done, r);
    if (rc == 0)
        release(arg);
    return rc;
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
    if (c->zlib || bulk->len < CONN_REF_MIN)
        return send_packed(c, id, done, r, release, arg);
    r->id = id;
    r->done = done ? 1 : 0;
    hl = frame_encode_head(&r->base, sub, bulk, g_config.max_frame_size, head, sizeof head,
                           &plen);
    if (hl == -EMSGSIZE) {
        answer_lost(c, id, (int)hl, r);
        return (int)hl;
    }
    if (hl < 0) {
        /* A head longer than head[] (-ENOBUFS), or sub and bulk not as
         * described (-EINVAL, a caller's mistake): r is still an answer,
         * packed whole, so the request gets it or an Error, never nothing. */
        if (hl == -EINVAL)
            log_warn("conn %s: request %llu: the bulk field is not one of the response's; "
                     "packed instead", c->peer, (unsigned long long)id);
        return send_packed(c, id, done, r, release, arg);
    }
    /* Both blocks first: a header queued without its data would corrupt
     * every frame after it. */
    if (!(rb = calloc(1, sizeof *rb)))
        goto nomem;
    /* After a borrowed block the next head cannot share a block with what
     * came before it: it gets one of its own, sized to it, not a 16 KiB
     * block per frame (a follower's queue holds many such frames). */
    if (!(hb = tail_room(c, (size_t)hl))) {
        if (!(hb = block_new((size_t)hl))) {
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
    conn_mark_pending(c);
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
int conn_out_write(conn_t *c)
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

void conn_out_free(conn_t *c)
{
    oblock_t *b = c->qhead, *next;
    for (; b; b = next) {
        next = b->next;
        block_free(b);
    }
    c->qhead = c->qtail = NULL;
    c->queued = 0;
}
