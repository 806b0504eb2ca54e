/* watch.c - see watch.h: the WatchPath streams, their queues of events and
 * their jobs; watch_inotify.c holds the shared instance, watch_walk.c adds
 * the watches on a worker.
 *
 * Errors: watch_handle answers every error itself (one Error, the request's
 * only answer); a failure met later is recorded in the stream (watch_fail,
 * or the job's user switch) and answered once by watch_next.
 *
 * One inotify instance serves every WatchPath stream of the agent: the
 * kernel gives root only fs.inotify.max_user_instances (128 by default)
 * instances, and an instance per stream let one client starve every other
 * inotify user on the machine. The instance is opened with the first watch
 * stream and closed with the last, and has one ev_io on the loop.
 *
 * Kernel watch descriptors (kwd_t) are shared: inotify_add_watch returns the
 * same wd for the same inode, so a wd is reference-counted by the
 * subscriptions (sub_t) that streams hold on it, and removed from the kernel
 * when the last one goes. Every watch is added with IN_MASK_ADD so one
 * stream never narrows the mask another relies on. An event on a wd is
 * fanned out to every stream subscribed to it, each with its own path for
 * that directory (two streams may reach one directory by different paths).
 *
 * Every watch is added by a file worker with the requesting user's
 * identity (no capability either), never on the loop: the first ones (the
 * whole tree for a recursive watch), and the directories that appear later
 * inside a recursive watch. A directory is opened relative to its parent's
 * descriptor with O_NOFOLLOW | O_DIRECTORY and watched through that
 * descriptor (/proc/self/fd/N), never by a path resolved again, so a
 * directory swapped for a symlink is not followed; a parent reached again by
 * path must still be the inode that was watched. Each stream watches at most
 * --max-watch-dirs directories: past that it gets one OVERFLOW event and
 * adds no more. The Entry of each event is stat'ed by a worker too, as the
 * user, in batches just before the events are sent.
 *
 * The worker only calls inotify_add_watch and records what it got, and the
 * loop takes the references when the job is done. While any such job is in
 * flight, a wd whose last reference goes is kept (refs 0) rather than
 * removed, since the job may have just been handed the same wd; and a wd the
 * kernel drops (IN_IGNORED) is remembered so the job's record of it is not
 * taken. Events on a directory before its watch is taken by the loop are
 * not reported (what the directory held by then is watched by the walk).
 *
 * A rename inside the tree arrives as MOVED_FROM and MOVED_TO with one
 * cookie and becomes one RENAME event; a half without its partner is a file
 * moved out (DELETE) or in (CREATE).
 *
 * The kernel's limit on watches (fs.inotify.max_user_watches) is the limit:
 * ENOSPC from inotify_add_watch ends the stream with RESOURCE_EXHAUSTED,
 * and its subscriptions are released.
 */
#include "watch.h"
#include "watch_internal.h"

#include "config.h"
#include "fs.h"
#include "fsworker.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>

/* Start the stream's one job, with what waits to be grown and nstat events
 * to stat. */
static void job_submit(watch_t *w, size_t nstat)
{
    size_t max = g_config.max_watch_dirs;
    w->jgrow = w->grow;
    w->grow = w->grow_tail = NULL;
    w->nstat = nstat;
    w->budget = w->capped ? 0 : max > w->nsubs ? max - w->nsubs : 0;
    w->jcapped = 0;
    w->walking = 1;
    watch_walks_begin();
    fs_op_submit(&w->o, watch_job_run);
}

/* --------------------------------------------------------------- events */

/* Queue an event, taking path and old; drops them and marks the overflow
 * when the client has not kept up. */
void watch_enqueue(watch_t *w, int kind, char *path, char *old)
{
    if (w->qcount == WATCH_QUEUE) {
        w->overflow = 1;
        free(path);
        free(old);
        return;
    }
    wev_t *e = &w->q[(w->qhead + w->qcount++) % WATCH_QUEUE];
    e->kind = kind;
    e->path = path;
    e->old = old;
    stream_wake(&w->o.base);
}

static char *join(const char *dir, const char *name)
{
    char *p = NULL;
    if (!name || !*name)
        return strdup(dir);
    if (asprintf(&p, "%s/%s", strcmp(dir, "/") ? dir : "", name) < 0)
        return NULL;
    return p;
}

void watch_flush_moved(watch_t *w)
{
    if (w->moved_path) {
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE, w->moved_path, NULL);
        w->moved_path = NULL;
    }
}

/* A directory renamed inside the tree: its watches keep their wds, and
 * the paths under it move with it. */
static void rename_dirs(watch_t *w, const char *old, const char *now)
{
    size_t ol = strlen(old);
    for (sub_t *s = w->subs; s; s = s->wnext) {
        char *p = s->path;
        if (strncmp(p, old, ol) || (p[ol] && p[ol] != '/'))
            continue;
        char *np = NULL;
        if (asprintf(&np, "%s%s", now, p + ol) >= 0) {
            free(p);
            s->path = np;
        }
    }
}

/* A new directory inside a recursive watch (name in the directory s
 * watches): a worker adds it, as the user, off the loop. Past the stream's
 * bound it gets one OVERFLOW and adds nothing more. */
static void grow_push(watch_t *w, sub_t *s, const char *name, const char *path)
{
    if (w->capped || w->o.err)
        return;
    if (w->nsubs + w->ngrow >= g_config.max_watch_dirs) {
        w->capped = 1;
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
        return;
    }
    grow_t *g = calloc(1, sizeof *g);
    if (!g || !(g->parent = strdup(s->path)) || !(g->name = strdup(name)) ||
        !(g->path = strdup(path))) {
        watch_grow_free(g);
        return;
    }
    g->pdev = s->k->dev;
    g->pino = s->k->ino;
    if (w->grow_tail)
        w->grow_tail->next = g;
    else
        w->grow = g;
    w->grow_tail = g;
    w->ngrow++;
    if (!w->o.busy)
        job_submit(w, 0);
}

/* One event as the stream that holds s sees it. */
void watch_event(sub_t *s, const struct inotify_event *ev)
{
    watch_t *w = s->w;
    if ((ev->mask & IN_DELETE_SELF) && ev->wd != w->root_wd)
        return; /* its parent reports it */
    char *path = join(s->path, ev->len ? ev->name : NULL);
    if (!path)
        return;
    if (ev->mask & IN_MOVED_FROM) {
        watch_flush_moved(w);
        w->moved_cookie = ev->cookie;
        w->moved_path = path;
        return;
    }
    if (ev->mask & IN_MOVED_TO) {
        if (w->moved_path && w->moved_cookie == ev->cookie) {
            if (ev->mask & IN_ISDIR)
                rename_dirs(w, w->moved_path, path);
            watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__RENAME, path, w->moved_path);
            w->moved_path = NULL;
            return;
        }
        watch_flush_moved(w);
        if ((ev->mask & IN_ISDIR) && w->recursive)
            grow_push(w, s, ev->name, path);
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE, path, NULL);
        return;
    }
    watch_flush_moved(w);
    if (ev->mask & IN_CREATE) {
        if ((ev->mask & IN_ISDIR) && w->recursive)
            grow_push(w, s, ev->name, path);
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE, path, NULL);
    } else if (ev->mask & (IN_DELETE | IN_DELETE_SELF)) {
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE, path, NULL);
    } else if (ev->mask & IN_MODIFY) {
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__MODIFY, path, NULL);
    } else if (ev->mask & IN_ATTRIB) {
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__ATTRIB, path, NULL);
    } else {
        free(path);
    }
}

/* ------------------------------------------------------ the stream's life */

static void watch_free(watch_t *w)
{
    while (w->subs)
        watch_sub_free(w->subs);
    for (size_t i = 0; i < w->nadded; i++)
        free(w->added[i].path);
    free(w->added);
    watch_grow_free(w->grow);
    watch_grow_free(w->jgrow);
    watch_unhold(w);
    for (size_t i = 0; i < w->qcount; i++) {
        wev_t *e = &w->q[(w->qhead + i) % WATCH_QUEUE];
        free(e->path);
        free(e->old);
    }
    free(w->moved_path);
    fs_op_free(&w->o);
}

/* On the loop, after a job: take references on what it added (all of it,
 * even on an error, so the wds it alone holds are removed by the same path),
 * then give them back if the stream failed or is gone. A job that reached
 * the stream's bound leaves one OVERFLOW, and the stream adds nothing
 * more. */
static void watch_settle(watch_t *w)
{
    w->walking = 0;
    for (size_t i = 0; i < w->nadded; i++) {
        added_t *ad = &w->added[i];
        if (watch_was_ignored(ad->wd))
            free(ad->path);
        else if (watch_sub_add(w, ad->wd, ad->path, ad->dev, ad->ino) < 0 && !w->o.err)
            watch_fail(w, -ENOMEM, w->o.path);
    }
    free(w->added);
    w->added = NULL;
    w->nadded = w->capadded = 0;
    for (grow_t *g = w->jgrow; g; g = g->next)
        w->ngrow--;
    watch_grow_free(w->jgrow);
    w->jgrow = NULL;
    if (w->jcapped && !w->capped) {
        w->capped = 1;
        watch_enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
    }
    if (w->o.err || w->o.orphan)
        while (w->subs)
            watch_sub_free(w->subs);
    watch_walks_end();
}

/* The job's end for a live stream (fs_op_job_done). */
static void watch_job_done(fsop_t *o)
{
    watch_t *w = (watch_t *)o;
    watch_settle(w);
    w->ready = 1;
    w->nready = o->err ? 0 : w->nready + w->nstat; /* a growth job stats nothing */
    w->nstat = 0;
    if (w->grow && !o->err)
        job_submit(w, 0); /* directories that appeared meanwhile */
    stream_wake(&o->base);
}

/* The stream is gone: after its job's end (orphan) or with none running. */
static void watch_release(fsop_t *o)
{
    watch_t *w = (watch_t *)o;
    if (w->walking)
        watch_settle(w);
    watch_free(w);
}

/* Events whose Entries a worker fills in one job. */
#define WATCH_STAT_BATCH 32

static stream_status_t watch_next(stream_t *s)
{
    watch_t *w = (watch_t *)s;
    conn_t *c = s->conn;
    if (!w->started) {
        w->started = 1;
        job_submit(w, 0);
        return STREAM_WAIT;
    }
    if (w->o.busy || !w->ready)
        return STREAM_WAIT;
    if (w->o.err) {
        fs_op_send_error(&w->o);
        return STREAM_DONE;
    }
    if (!w->nready && w->qcount) {
        /* The next events' Entries are stat'ed as the user by a worker,
         * just before they are sent; a batch of DELETEs needs none. */
        size_t k = SA_MIN(w->qcount, (size_t)WATCH_STAT_BATCH);
        int need = 0;
        for (size_t i = 0; i < k; i++) {
            wev_t *e = &w->q[(w->qhead + i) % WATCH_QUEUE];
            e->has_entry = 0;
            need |= e->path && e->kind != SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE;
        }
        if (need) {
            job_submit(w, k);
            return STREAM_WAIT;
        }
        w->nready = k;
    }
    Response r = RESPONSE_INIT;
    FsEvent fe = SANDBOX__AGENT__V1__FS_EVENT__INIT;
    fs_arena_t arena = {NULL};
    wev_t ev = {0};
    if (w->nready) {
        ev = w->q[w->qhead];
        w->qhead = (w->qhead + 1) % WATCH_QUEUE;
        w->qcount--;
        w->nready--;
    } else if (w->overflow) {
        w->overflow = 0;
        ev.kind = SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW;
    } else {
        return STREAM_WAIT;
    }
    fe.kind = ev.kind;
    if (ev.path)
        fs_set_name(&arena, &fe.path, &fe.path_raw, ev.path, strlen(ev.path));
    if (ev.has_entry)
        fe.entry = &ev.entry;
    if (ev.old)
        fs_set_name(&arena, &fe.old_path, &fe.old_path_raw, ev.old, strlen(ev.old));
    r.result_case = RES(FS_EVENT);
    r.fs_event = &fe;
    conn_send(c, s->id, 0, &r);
    fs_arena_free(&arena);
    free(ev.path);
    free(ev.old);
    if (!w->nready)
        fs_arena_free(&w->o.arena); /* the batch's entries are all sent */
    return STREAM_MORE;
}

static const stream_ops_t watch_ops = {
    .name = "watch",
    .next = watch_next,
    .destroy = fs_op_destroy,
};

void watch_handle(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__WatchPath *m = req->watch;
    watch_t *w = (watch_t *)fs_op_new(c, req, sizeof *w, "watch", m->user, m->path,
                                      &m->path_raw);
    if (!w)
        return;
    w->ifd = -1;
    w->o.on_done = watch_job_done;
    w->o.release = watch_release;
    w->recursive = m->recursive;
    int rc = watch_hold(w);
    if (rc < 0) {
        conn_send_errno(c, req->id, rc, "watch '%s': inotify: %s%s", w->o.path, strerror(-rc),
                        rc == -EMFILE ? " (the inotify instance limit is reached)" : "");
        watch_free(w);
        return;
    }
    fs_op_register(c, req, &w->o, &watch_ops); /* next() starts the walk */
}
