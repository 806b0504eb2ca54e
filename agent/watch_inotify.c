/* watch_inotify.c - the agent's one inotify instance, its kernel watch
 * descriptors shared by reference count between the streams that subscribe
 * to them, and the reading of its events, fanned out to those streams (see
 * watch.c for the whole design). Loop thread only.
 * Errors: a negative errno (ENOMEM, or the kernel's); nothing here answers. */
#include "watch_internal.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

/* wds dropped by the kernel remembered while jobs run (see IN_IGNORED). */
#define WATCH_IGNORED_MAX 4096

/* The loop of the agent (watch_init). */
static struct ev_loop *g_loop;

/* The agent's one inotify instance and its wds. Loop thread only. */
static struct {
    int fd;              /* -1 while no watch stream exists */
    ev_io io;
    watch_t *streams;    /* holders of fd */
    kwd_t **buckets;
    size_t nbuckets, nkwd;
    size_t zombies;      /* kwds at refs 0, kept while walks run */
    size_t walks;        /* setup jobs in flight */
    int *ignored;        /* wds dropped by the kernel while walks ran */
    size_t nignored, capignored;
} g_inotify = {.fd = -1};

/* ------------------------------------------------------------ the wd table */

static size_t kwd_bucket(int wd)
{
    return ((size_t)(unsigned)wd * 2654435761u) & (g_inotify.nbuckets - 1);
}

static kwd_t *kwd_find(int wd)
{
    if (!g_inotify.nbuckets)
        return NULL;
    for (kwd_t *k = g_inotify.buckets[kwd_bucket(wd)]; k; k = k->hnext)
        if (k->wd == wd)
            return k;
    return NULL;
}

static int kwd_grow(void)
{
    size_t nb = g_inotify.nbuckets ? g_inotify.nbuckets * 2 : 64;
    kwd_t **b = calloc(nb, sizeof *b);
    if (!b)
        return -ENOMEM;
    kwd_t **old = g_inotify.buckets;
    size_t on = g_inotify.nbuckets;
    g_inotify.buckets = b;
    g_inotify.nbuckets = nb;
    for (size_t i = 0; i < on; i++) {
        for (kwd_t *k = old[i], *next; k; k = next) {
            next = k->hnext;
            size_t h = kwd_bucket(k->wd);
            k->hnext = b[h];
            b[h] = k;
        }
    }
    free(old);
    return 0;
}

static kwd_t *kwd_get(int wd)
{
    kwd_t *k = kwd_find(wd);
    if (k)
        return k;
    if (g_inotify.nkwd >= g_inotify.nbuckets && kwd_grow() < 0)
        return NULL;
    if (!(k = calloc(1, sizeof *k)))
        return NULL;
    k->wd = wd;
    size_t h = kwd_bucket(wd);
    k->hnext = g_inotify.buckets[h];
    g_inotify.buckets[h] = k;
    g_inotify.nkwd++;
    g_inotify.zombies++; /* until its first reference */
    return k;
}

/* Forget k; the kernel watch is removed too unless the kernel already did. */
static void kwd_drop(kwd_t *k, int in_kernel)
{
    kwd_t **pp = &g_inotify.buckets[kwd_bucket(k->wd)];
    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    g_inotify.nkwd--;
    if (!k->refs)
        g_inotify.zombies--;
    if (in_kernel && g_inotify.fd >= 0)
        inotify_rm_watch(g_inotify.fd, k->wd);
    free(k);
}

/* Remove the unreferenced wds once no walk can be handed them. */
static void kwd_collect(void)
{
    if (g_inotify.walks || !g_inotify.zombies)
        return;
    for (size_t i = 0; i < g_inotify.nbuckets; i++) {
        for (kwd_t *k = g_inotify.buckets[i], *next; k; k = next) {
            next = k->hnext;
            if (!k->refs)
                kwd_drop(k, 1);
        }
    }
}

static void sub_unlink(sub_t *s)
{
    watch_t *w = s->w;
    SA_LIST_UNLINK(s->k->subs, s, knext, kprev);
    SA_LIST_UNLINK(w->subs, s, wnext, wprev);
    w->nsubs--;
    free(s->path);
    free(s);
}

/* Drop one subscription and the kernel watch with its last one. */
void watch_sub_free(sub_t *s)
{
    kwd_t *k = s->k;
    sub_unlink(s);
    if (--k->refs)
        return;
    g_inotify.zombies++;
    if (!g_inotify.walks)
        kwd_drop(k, 1);
}

/* Subscribe w to wd under path (taken, even on error). The same wd twice
 * for one stream (a directory moved, or reached twice) keeps the newest
 * path. */
int watch_sub_add(watch_t *w, int wd, char *path, dev_t dev, ino_t ino)
{
    kwd_t *k = kwd_get(wd);
    if (!k) {
        free(path);
        return -ENOMEM;
    }
    k->dev = dev;
    k->ino = ino;
    for (sub_t *s = k->subs; s; s = s->knext) {
        if (s->w == w) {
            free(s->path);
            s->path = path;
            return 0;
        }
    }
    sub_t *s = calloc(1, sizeof *s);
    if (!s) {
        if (!k->refs && !g_inotify.walks)
            kwd_drop(k, 1);
        free(path);
        return -ENOMEM;
    }
    s->w = w;
    s->k = k;
    s->path = path;
    SA_LIST_PUSH(k->subs, s, knext, kprev);
    SA_LIST_PUSH(w->subs, s, wnext, wprev);
    w->nsubs++;
    if (!k->refs++)
        g_inotify.zombies--;
    return 0;
}

/* --------------------------------------------------------------- events */

static void handle_event(const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        /* The kernel dropped events of every wd: every stream may miss some. */
        for (watch_t *w = g_inotify.streams; w; w = w->gnext)
            if (w->ready && !w->o.err)
                watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
        return;
    }
    if (ev->mask & IN_IGNORED) {
        /* The kernel dropped the watch (its inode went, or its file system):
         * so do its subscribers. A walk in flight may hold it too. */
        if (g_inotify.walks) {
            /* Bounded: a job stuck in the kernel (an unanswering file
             * system) keeps walks above 0 for good. The oldest are
             * forgotten; a job that took one of them holds a wd that
             * reports nothing, no more. */
            if (g_inotify.nignored == WATCH_IGNORED_MAX)
                g_inotify.nignored = 0;
            int *ni = util_grow(g_inotify.ignored, &g_inotify.capignored, g_inotify.nignored,
                                sizeof *ni, 16);
            if (ni) {
                g_inotify.ignored = ni;
                ni[g_inotify.nignored++] = ev->wd;
            }
        }
        kwd_t *k = kwd_find(ev->wd);
        if (!k)
            return;
        if (k->refs)
            g_inotify.zombies++; /* refs becomes 0; kwd_drop counts it out */
        while (k->subs)
            sub_unlink(k->subs);
        k->refs = 0;
        kwd_drop(k, 0);
        return;
    }
    kwd_t *k = kwd_find(ev->wd);
    if (!k)
        return;
    /* Handling may subscribe a stream to a new directory (at the head of
     * that wd's list, never removing one here): take next first anyway. */
    for (sub_t *s = k->subs, *next; s; s = next) {
        next = s->knext;
        if (s->w->ready && !s->w->o.err)
            watch_event(s, ev);
    }
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int rounds = 0; rounds < 16 && g_inotify.fd >= 0; rounds++) {
        ssize_t n = util_read(g_inotify.fd, buf, sizeof buf);
        if (n <= 0)
            break; /* -EAGAIN: read out; an error comes back on the next turn */
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            handle_event(ev);
            p += sizeof *ev + ev->len;
        }
    }
    /* A MOVED_FROM whose partner is not in the same read moved out. */
    for (watch_t *w = g_inotify.streams; w; w = w->gnext)
        watch_flush_moved(w);
}

/* ------------------------------------------------------ holding the instance */

/* Open the shared instance for a new stream (the first opens it). */
int watch_hold(watch_t *w)
{
    if (g_inotify.fd < 0) {
        int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0)
            return -errno;
        g_inotify.fd = fd;
        ev_io_init(&g_inotify.io, on_inotify, fd, EV_READ);
        ev_io_start(g_loop, &g_inotify.io);
    }
    w->ifd = g_inotify.fd;
    SA_LIST_PUSH(g_inotify.streams, w, gnext, gprev);
    return 0;
}

/* The last stream closes the instance: watcher stopped, then the fd (which
 * drops every kernel watch), then the table. */
void watch_unhold(watch_t *w)
{
    if (w->ifd < 0)
        return;
    SA_LIST_UNLINK(g_inotify.streams, w, gnext, gprev);
    w->ifd = -1;
    if (g_inotify.streams)
        return;
    ev_io_stop(g_loop, &g_inotify.io);
    close(g_inotify.fd);
    g_inotify.fd = -1;
    for (size_t i = 0; i < g_inotify.nbuckets; i++) {
        for (kwd_t *k = g_inotify.buckets[i], *next; k; k = next) {
            next = k->hnext;
            free(k);
        }
    }
    free(g_inotify.buckets);
    g_inotify.buckets = NULL;
    g_inotify.nbuckets = g_inotify.nkwd = g_inotify.zombies = 0;
    free(g_inotify.ignored);
    g_inotify.ignored = NULL;
    g_inotify.nignored = g_inotify.capignored = 0;
}

int watch_was_ignored(int wd)
{
    for (size_t i = 0; i < g_inotify.nignored; i++)
        if (g_inotify.ignored[i] == wd)
            return 1;
    return 0;
}

/* ------------------------------------------------------------ jobs */

void watch_walks_begin(void) { g_inotify.walks++; }

void watch_walks_end(void)
{
    if (!--g_inotify.walks)
        g_inotify.nignored = 0;
    kwd_collect();
}

void watch_init(struct ev_loop *loop) { g_loop = loop; }
