/* relay.c - see relay.h.
 *
 * Each direction has its own pipe and two watchers: the source readable
 * while the pipe is empty, the destination writable while it holds bytes.
 * Only one of the two is active at a time, so a direction whose pipe is
 * full (its slots taken by small packets) waits for the destination instead
 * of spinning on a readable source. A socket splice(2) cannot move (it
 * answers EINVAL) is copied through a buffer instead.
 * Errors: as relay.h.
 */
#include "relay.h"

#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes a pipe may hold once its direction has moved RELAY_GROW_AFTER:
 * 1 MiB moves bulk faster than the default 64 KiB (bench/), and a short
 * exchange never pays for the resize. Pipes are made at a direction's
 * first byte. */
#define RELAY_PIPE_SIZE (1u << 20)
#define RELAY_GROW_AFTER (1u << 20)
#define RELAY_COPY_SIZE (256u * 1024)
/* Rounds of one direction per wake-up, so one relay cannot hold the loop. */
#define RELAY_ROUNDS 16

typedef struct rdir {
    struct relay *r;
    int src, dst;
    int pipe[2];          /* -1 when copying */
    uint8_t *buf;         /* copy mode: pending bytes at buf[boff..boff+pending) */
    size_t boff;
    size_t cap, pending;  /* bytes the pipe or buffer may hold, and holds */
    uint8_t *pre;         /* written before anything else */
    size_t pre_len, pre_off;
    uint64_t moved;
    ev_io rw, ww;
    unsigned eof : 1, done : 1, grown : 1;
} rdir_t;

struct relay {
    struct ev_loop *loop;
    rdir_t d[2]; /* 0: client to target, 1: target to client */
    int cfd, tfd;
    char desc[160];
    struct relay *next, *prev;
};

static relay_t *g_relays;
static unsigned g_count;

static void on_io(struct ev_loop *loop, ev_io *w, int revents);

unsigned relay_count(void) { return g_count; }

relay_t *relay_new(struct ev_loop *loop, int target_fd, const char *desc)
{
    relay_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->loop = loop;
    r->cfd = -1;
    r->tfd = target_fd;
    snprintf(r->desc, sizeof r->desc, "%s", desc);
    for (int i = 0; i < 2; i++) {
        r->d[i].r = r;
        r->d[i].pipe[0] = r->d[i].pipe[1] = -1;
        r->d[i].cap = 65536; /* a new pipe's size */
        ev_init(&r->d[i].rw, on_io);
        ev_init(&r->d[i].ww, on_io);
        r->d[i].rw.data = r->d[i].ww.data = &r->d[i];
    }
    SA_LIST_PUSH(g_relays, r, next, prev);
    g_count++;
    return r;
}

static void relay_free(relay_t *r)
{
    /* Watchers stop before the descriptors close, which close before the
     * memory goes. */
    for (int i = 0; i < 2; i++) {
        rdir_t *d = &r->d[i];
        ev_io_stop(r->loop, &d->rw);
        ev_io_stop(r->loop, &d->ww);
        for (int k = 0; k < 2; k++)
            if (d->pipe[k] >= 0)
                close(d->pipe[k]);
        free(d->buf);
        free(d->pre);
    }
    if (r->cfd >= 0)
        close(r->cfd);
    if (r->tfd >= 0)
        close(r->tfd);
    SA_LIST_UNLINK(g_relays, r, next, prev);
    g_count--;
    free(r);
}

static int dir_setup(rdir_t *d)
{
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    int sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
    d->cap = sz > 0 ? (size_t)sz : 65536;
    return 0;
}

/* A larger pipe is a wish, not a need: unprivileged users past their
 * pipe-user-pages limit keep the default. */
static void dir_grow(rdir_t *d)
{
    d->grown = 1;
    if (d->pipe[1] >= 0 && fcntl(d->pipe[1], F_SETPIPE_SZ, (int)RELAY_PIPE_SIZE) > 0) {
        int sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
        if (sz > 0)
            d->cap = (size_t)sz;
    }
}

/* splice(2) cannot move this descriptor: copy through a buffer. */
static int dir_to_copy(rdir_t *d)
{
    if (d->pending)
        return -EINVAL; /* bytes in the pipe: never switch mid-way */
    if (!(d->buf = malloc(RELAY_COPY_SIZE)))
        return -ENOMEM;
    close(d->pipe[0]);
    close(d->pipe[1]);
    d->pipe[0] = d->pipe[1] = -1;
    d->cap = RELAY_COPY_SIZE;
    d->boff = 0;
    return 0;
}

/* Source into the pipe or buffer: >0 bytes, 0 end of file, -EAGAIN, -errno. */
static ssize_t dir_fill(rdir_t *d)
{
    ssize_t n;
    int rc;
    if (d->pipe[0] < 0 && !d->buf && (rc = dir_setup(d)) < 0)
        return rc;
    for (;;) {
        if (d->pipe[0] < 0) {
            if (d->pending == 0)
                d->boff = 0;
            if (d->boff + d->pending == d->cap)
                return -EAGAIN; /* the buffer's end is reached: drain first */
            return util_read(d->src, d->buf + d->boff + d->pending,
                             d->cap - d->boff - d->pending);
        }
        n = splice(d->src, NULL, d->pipe[1], NULL, d->cap - d->pending,
                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        /* A source splice refuses: copy through a buffer from now on. */
        if (errno == EINVAL && dir_to_copy(d) == 0)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static ssize_t dir_drain(rdir_t *d)
{
    ssize_t n;
    for (;;) {
        if (d->pipe[0] >= 0)
            n = splice(d->pipe[0], NULL, d->dst, NULL, d->pending,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        else
            n = send(d->dst, d->buf + d->boff, d->pending, MSG_NOSIGNAL);
        if (n >= 0) {
            if (d->pipe[0] < 0)
                d->boff += (size_t)n;
            return n;
        }
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

/* Move what can be moved now. Returns 0, or -errno when the relay must end. */
static int dir_pump(rdir_t *d)
{
    for (int round = 0; round < RELAY_ROUNDS && !d->done; round++) {
        int progress = 0;
        if (d->pre_off < d->pre_len) {
            ssize_t w = send(d->dst, d->pre + d->pre_off, d->pre_len - d->pre_off,
                             MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return -errno;
            if (w <= 0)
                break;
            d->pre_off += (size_t)w;
            d->moved += (size_t)w;
            if (d->pre_off == d->pre_len) {
                free(d->pre);
                d->pre = NULL;
                d->pre_len = d->pre_off = 0;
            }
            continue;
        }
        if (!d->eof && d->pending < d->cap) {
            ssize_t n = dir_fill(d);
            if (n > 0) {
                d->pending += (size_t)n;
                progress = 1;
            } else if (n == 0) {
                d->eof = 1;
            } else if (n != -EAGAIN) {
                return (int)n;
            }
        }
        if (d->pending) {
            ssize_t m = dir_drain(d);
            if (m > 0) {
                d->pending -= (size_t)m;
                d->moved += (size_t)m;
                progress = 1;
            } else if (m != -EAGAIN) {
                return (int)m;
            }
        }
        if (!progress)
            break;
        if (!d->grown && d->moved >= RELAY_GROW_AFTER)
            dir_grow(d);
    }
    if (d->eof && !d->pending && d->pre_off == d->pre_len && !d->done) {
        /* Pass the end of file on; the other direction carries on. */
        shutdown(d->dst, SHUT_WR);
        d->done = 1;
    }
    return 0;
}

static void dir_arm(rdir_t *d)
{
    struct ev_loop *loop = d->r->loop;
    int want_w = !d->done && (d->pending || d->pre_off < d->pre_len);
    int want_r = !d->done && !want_w && !d->eof;
    if (want_w && !ev_is_active(&d->ww))
        ev_io_start(loop, &d->ww);
    else if (!want_w && ev_is_active(&d->ww))
        ev_io_stop(loop, &d->ww);
    if (want_r && !ev_is_active(&d->rw))
        ev_io_start(loop, &d->rw);
    else if (!want_r && ev_is_active(&d->rw))
        ev_io_stop(loop, &d->rw);
}

/* Pump one direction; returns -1 when the relay ended (and is freed). */
static int dir_step(rdir_t *d)
{
    relay_t *r = d->r;
    int rc = dir_pump(d);
    if (rc < 0) {
        log_debug("relay %s: %s %s: %s; closing both", r->desc,
                  d == &r->d[0] ? "client to target" : "target to client",
                  rc == -EPIPE || rc == -ECONNRESET ? "peer gone" : "failed", strerror(-rc));
        relay_free(r);
        return -1;
    }
    if (r->d[0].done && r->d[1].done) {
        log_debug("relay %s: ended (%llu bytes to the target, %llu back)", r->desc,
                  (unsigned long long)r->d[0].moved, (unsigned long long)r->d[1].moved);
        relay_free(r);
        return -1;
    }
    dir_arm(d);
    return 0;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    dir_step(w->data);
}

void relay_start(void *arg, int client_fd, uint8_t *pre, size_t pre_len)
{
    relay_t *r = arg;
    if (client_fd < 0) {
        free(pre);
        relay_free(r);
        return;
    }
    r->cfd = client_fd;
    r->d[0].src = r->d[1].dst = client_fd;
    r->d[0].dst = r->d[1].src = r->tfd;
    r->d[0].pre = pre;
    r->d[0].pre_len = pre_len;
    for (int i = 0; i < 2; i++) {
        ev_io_set(&r->d[i].rw, r->d[i].src, EV_READ);
        ev_io_set(&r->d[i].ww, r->d[i].dst, EV_WRITE);
    }
    /* Move what is already there (the bytes the client sent with its
     * Connect, a server's greeting) now rather than a loop turn later; the
     * watchers take it from there. */
    if (dir_step(&r->d[0]) == 0)
        dir_step(&r->d[1]);
}

void relay_close_all(void)
{
    while (g_relays)
        relay_free(g_relays);
}
