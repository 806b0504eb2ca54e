/* watch.c - see watch.h.
 *
 * The first watches (the whole tree for a recursive watch) are added by a
 * file worker with the requesting user's identity, so a user can only watch
 * what it may read. Directories that appear later inside a recursive watch
 * are added on the loop, with the agent's identity: the user could already
 * read their parent. A rename inside the tree arrives as MOVED_FROM and
 * MOVED_TO with one cookie and becomes one RENAME event; a half without its
 * partner is a file moved out (DELETE) or in (CREATE).
 */
#include "watch.h"

#include "fsworker.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define WATCH_MASK                                                                           \
    (IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |           \
     IN_DELETE_SELF | IN_EXCL_UNLINK)

typedef struct wev {
    int kind;
    char *path, *old; /* malloc'd; old only for RENAME */
} wev_t;

typedef struct wdir {
    int wd;
    char *path;
} wdir_t;

typedef struct watch {
    stream_t base;
    fsw_job_t job;
    int busy, orphan, started, ready;
    int ifd;
    ev_io io;
    int as_user;
    user_id_t user;
    char *path;
    int recursive;
    int root_wd;
    wdir_t *dirs;
    size_t ndirs, capdirs;
    wev_t q[WATCH_QUEUE];
    size_t qhead, qcount;
    int overflow;
    uint32_t moved_cookie; /* a MOVED_FROM waiting for its MOVED_TO */
    char *moved_path;
    int err;
    char errmsg[PATH_MAX + 128];
} watch_t;

static wdir_t *dir_find(watch_t *w, int wd)
{
    for (size_t i = 0; i < w->ndirs; i++)
        if (w->dirs[i].wd == wd)
            return &w->dirs[i];
    return NULL;
}

static int dir_add(watch_t *w, const char *path)
{
    int wd = inotify_add_watch(w->ifd, path, WATCH_MASK);
    if (wd < 0)
        return -errno;
    wdir_t *d = dir_find(w, wd);
    if (d) { /* the same inode again (moved): keep the newest path */
        char *p = strdup(path);
        if (!p)
            return -ENOMEM;
        free(d->path);
        d->path = p;
        return wd;
    }
    if (w->ndirs == w->capdirs) {
        size_t cap = w->capdirs ? w->capdirs * 2 : 16;
        wdir_t *nd = realloc(w->dirs, cap * sizeof *nd);
        if (!nd)
            return -ENOMEM;
        w->dirs = nd;
        w->capdirs = cap;
    }
    if (!(w->dirs[w->ndirs].path = strdup(path)))
        return -ENOMEM;
    w->dirs[w->ndirs++].wd = wd;
    return wd;
}

/* Watch path's subdirectories. Errors below the root are skipped: a
 * subdirectory the user may not read is not watched. The walk keeps a list
 * of directories still to read instead of recursing, and has one directory
 * open at a time: a tree as deep as PATH_MAX allows (2,000 levels) would
 * otherwise take a PATH_MAX buffer and a descriptor per level, overflowing
 * a thread's stack. */
static void add_tree(watch_t *w, const char *path)
{
    char **todo = NULL;
    size_t n = 0, cap = 0;
    char *dir = strdup(path);
    char sub[PATH_MAX];

    while (dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            const char *name = de->d_name;
            if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
                continue;
            if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                continue;
            int len = snprintf(sub, sizeof sub, "%s/%s", strcmp(dir, "/") ? dir : "", name);
            if (len < 0 || (size_t)len >= sizeof sub)
                continue;
            if (de->d_type == DT_UNKNOWN) {
                struct stat st;
                if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode))
                    continue;
            }
            if (dir_add(w, sub) < 0)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                char **nt = realloc(todo, ncap * sizeof *nt);
                if (!nt)
                    continue;
                todo = nt;
                cap = ncap;
            }
            if ((todo[n] = strdup(sub)))
                n++;
        }
        if (d)
            closedir(d);
        free(dir);
        dir = n ? todo[--n] : NULL;
    }
    free(todo);
}

static void setup_run(fsw_job_t *j)
{
    watch_t *w = SA_CONTAINER_OF(j, watch_t, job);
    struct stat st;
    if (stat(w->path, &st) < 0) {
        w->err = -errno;
        snprintf(w->errmsg, sizeof w->errmsg, "watch '%s': %s", w->path, strerror(errno));
        return;
    }
    int rc = dir_add(w, w->path);
    if (rc < 0) {
        w->err = rc;
        snprintf(w->errmsg, sizeof w->errmsg, "watch '%s': %s%s", w->path, strerror(-rc),
                 rc == -ENOSPC ? " (the inotify watch limit is reached)" : "");
        return;
    }
    w->root_wd = rc;
    if (w->recursive && S_ISDIR(st.st_mode))
        add_tree(w, w->path);
}

static void watch_free(watch_t *w)
{
    if (ev_is_active(&w->io))
        ev_io_stop(EV_DEFAULT, &w->io);
    if (w->ifd >= 0)
        close(w->ifd);
    for (size_t i = 0; i < w->ndirs; i++)
        free(w->dirs[i].path);
    free(w->dirs);
    for (size_t i = 0; i < w->qcount; i++) {
        wev_t *e = &w->q[(w->qhead + i) % WATCH_QUEUE];
        free(e->path);
        free(e->old);
    }
    free(w->moved_path);
    free(w->path);
    free(w);
}

/* Queue an event, taking path and old; drops them and marks the overflow
 * when the client has not kept up. */
static void enqueue(watch_t *w, int kind, char *path, char *old)
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
    stream_wake(&w->base);
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

static void flush_moved(watch_t *w)
{
    if (w->moved_path) {
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE, w->moved_path, NULL);
        w->moved_path = NULL;
    }
}

/* A directory renamed inside the tree: its watches keep their wds, and
 * the paths under it move with it. */
static void rename_dirs(watch_t *w, const char *old, const char *now)
{
    size_t ol = strlen(old);
    for (size_t i = 0; i < w->ndirs; i++) {
        char *p = w->dirs[i].path;
        if (strncmp(p, old, ol) || (p[ol] && p[ol] != '/'))
            continue;
        char *np = NULL;
        if (asprintf(&np, "%s%s", now, p + ol) >= 0) {
            free(p);
            w->dirs[i].path = np;
        }
    }
}

static void handle_event(watch_t *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
        return;
    }
    wdir_t *d = dir_find(w, ev->wd);
    if (!d)
        return;
    if (ev->mask & IN_IGNORED) {
        free(d->path);
        *d = w->dirs[--w->ndirs];
        return;
    }
    if ((ev->mask & IN_DELETE_SELF) && ev->wd != w->root_wd)
        return; /* its parent reports it */
    char *path = join(d->path, ev->len ? ev->name : NULL);
    if (!path)
        return;
    if (ev->mask & IN_MOVED_FROM) {
        flush_moved(w);
        w->moved_cookie = ev->cookie;
        w->moved_path = path;
        return;
    }
    if (ev->mask & IN_MOVED_TO) {
        if (w->moved_path && w->moved_cookie == ev->cookie) {
            if (ev->mask & IN_ISDIR)
                rename_dirs(w, w->moved_path, path);
            enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__RENAME, path, w->moved_path);
            w->moved_path = NULL;
            return;
        }
        flush_moved(w);
        if ((ev->mask & IN_ISDIR) && w->recursive && dir_add(w, path) >= 0)
            add_tree(w, path);
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE, path, NULL);
        return;
    }
    flush_moved(w);
    if (ev->mask & IN_CREATE) {
        /* Watch a new directory before reporting it; whatever appeared in it
         * before the watch took is found by add_tree's walk. */
        if ((ev->mask & IN_ISDIR) && w->recursive && dir_add(w, path) >= 0)
            add_tree(w, path);
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE, path, NULL);
    } else if (ev->mask & (IN_DELETE | IN_DELETE_SELF)) {
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE, path, NULL);
    } else if (ev->mask & IN_MODIFY) {
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__MODIFY, path, NULL);
    } else if (ev->mask & IN_ATTRIB) {
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__ATTRIB, path, NULL);
    } else {
        free(path);
    }
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    watch_t *w = io->data;
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    (void)loop;
    (void)revents;
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(w->ifd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            handle_event(w, ev);
            p += sizeof *ev + ev->len;
        }
    }
    /* A MOVED_FROM whose partner is not in the same read moved out. */
    flush_moved(w);
}

static void setup_done(fsw_job_t *j)
{
    watch_t *w = SA_CONTAINER_OF(j, watch_t, job);
    w->busy = 0;
    if (j->id_err && !w->err) {
        w->err = j->id_err;
        snprintf(w->errmsg, sizeof w->errmsg, "watch: cannot act as user %u: %s",
                 (unsigned)w->user.uid, strerror(-j->id_err));
    }
    if (w->orphan) {
        watch_free(w);
        return;
    }
    w->ready = 1;
    if (!w->err) {
        ev_io_init(&w->io, on_inotify, w->ifd, EV_READ);
        w->io.data = w;
        ev_io_start(EV_DEFAULT, &w->io);
    }
    stream_wake(&w->base);
}

static stream_status_t watch_next(stream_t *s)
{
    watch_t *w = (watch_t *)s;
    conn_t *c = s->conn;
    if (!w->started) {
        w->started = 1;
        w->busy = 1;
        w->job.run = setup_run;
        w->job.done = setup_done;
        w->job.user = w->as_user ? &w->user : NULL;
        fsw_submit(&w->job);
        return STREAM_WAIT;
    }
    if (w->busy || !w->ready)
        return STREAM_WAIT;
    if (w->err) {
        conn_send_errno(c, s->id, w->err, "%s", w->errmsg);
        return STREAM_DONE;
    }
    Response r = RESPONSE_INIT;
    FsEvent fe = SANDBOX__AGENT__V1__FS_EVENT__INIT;
    Entry entry;
    fs_arena_t arena = {NULL};
    wev_t ev = {0};
    if (w->qcount) {
        ev = w->q[w->qhead];
        w->qhead = (w->qhead + 1) % WATCH_QUEUE;
        w->qcount--;
    } else if (w->overflow) {
        w->overflow = 0;
        ev.kind = SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW;
    } else {
        return STREAM_WAIT;
    }
    fe.kind = ev.kind;
    if (ev.path) {
        fs_set_name(&arena, &fe.path, &fe.path_raw, ev.path, strlen(ev.path));
        /* The entry as it is now, where it still exists. */
        if (ev.kind != SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE &&
            fs_entry_at(&arena, &entry, AT_FDCWD, ev.path, ev.path, 0) == 0)
            fe.entry = &entry;
    }
    if (ev.old)
        fs_set_name(&arena, &fe.old_path, &fe.old_path_raw, ev.old, strlen(ev.old));
    r.result_case = RES(FS_EVENT);
    r.fs_event = &fe;
    conn_send(c, s->id, 0, &r);
    fs_arena_free(&arena);
    free(ev.path);
    free(ev.old);
    return STREAM_MORE;
}

static void watch_destroy(stream_t *s)
{
    watch_t *w = (watch_t *)s;
    if (w->busy) {
        w->orphan = 1; /* setup_done frees it */
        return;
    }
    watch_free(w);
}

static const stream_ops_t watch_ops = {"watch", watch_next, NULL, watch_destroy};

void fs_handle_watch(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__WatchPath *m = req->watch;
    watch_t *w = calloc(1, sizeof *w);
    if (!w) {
        conn_send_errno(c, req->id, -ENOMEM, "watch: out of memory");
        return;
    }
    w->ifd = -1;
    if (fs_req_user(c, req->id, m->user, &w->user, &w->as_user) < 0 ||
        fs_req_path(c, req->id, "watch", m->path, &m->path_raw, &w->user, &w->path) < 0) {
        watch_free(w);
        return;
    }
    w->recursive = m->recursive;
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd < 0) {
        int e = errno;
        conn_send_errno(c, req->id, -e, "watch '%s': inotify: %s%s", w->path, strerror(e),
                        e == EMFILE ? " (the inotify instance limit is reached)" : "");
        watch_free(w);
        return;
    }
    w->base.ops = &watch_ops;
    int rc = conn_stream_add(c, &w->base, req->id);
    if (rc < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc, "watch: cannot start: %s",
                        strerror(-rc));
        watch_free(w);
    }
}
