/* watch.c - see watch.h.
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

#include "config.h"
#include "fs.h"
#include "fs_internal.h"
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
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK                                                                           \
    (IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |           \
     IN_DELETE_SELF | IN_EXCL_UNLINK | IN_MASK_ADD)

typedef struct watch watch_t;
typedef struct kwd kwd_t;

typedef struct wev {
    int kind;
    char *path, *old; /* malloc'd; old only for RENAME */
    int has_entry;    /* entry filled (in the watch's arena) by a worker */
    Entry entry;
} wev_t;

/* A directory that appeared in a recursive watch, to be added by a worker:
 * name inside the directory parent, which must still be the inode
 * (pdev, pino) that was watched. */
typedef struct grow {
    struct grow *next;
    char *parent, *name, *path;
    dev_t pdev;
    ino_t pino;
} grow_t;

/* wds dropped by the kernel remembered while jobs run (see IN_IGNORED). */
#define WATCH_IGNORED_MAX 4096

/* One stream's interest in one kernel wd. */
typedef struct sub {
    watch_t *w;
    kwd_t *k;
    char *path;               /* this directory (or file) as the stream names it */
    struct sub *knext, *kprev; /* the subscribers of k */
    struct sub *wnext, *wprev; /* the subscriptions of w */
} sub_t;

/* One kernel watch descriptor of the shared instance. */
struct kwd {
    int wd;
    dev_t dev;      /* the inode watched */
    ino_t ino;
    size_t refs;    /* subscriptions; 0 only while a walk is in flight */
    sub_t *subs;
    kwd_t *hnext;   /* hash chain */
};

/* What a worker's job added: taken by the loop in job_done. */
typedef struct added {
    int wd;
    char *path;
    dev_t dev;
    ino_t ino;
} added_t;

/* A watch stream is a file operation (fsop_t: its stream, its one job at a
 * time, its user, path and error): the job runs as the user, and a stream
 * destroyed while it runs is freed by the job's end. */
struct watch {
    fsop_t o;
    int started, ready;
    int walking; /* a job's results wait for watch_settle */
    int ifd;     /* the shared instance, for the worker */
    int recursive;
    int root_wd;
    sub_t *subs;
    size_t nsubs;   /* directories (and files) this stream watches */
    added_t *added; /* the walk's results, until job_done */
    size_t nadded, capadded;
    grow_t *grow, *grow_tail; /* new directories waiting for a job */
    grow_t *jgrow;            /* those the job in flight adds */
    size_t ngrow;             /* in both lists */
    size_t budget;            /* directories the job may still add */
    int capped, jcapped;      /* stopped adding (the bound was reached) */
    size_t nstat;             /* events at the queue's head the job stats */
    size_t nready;            /* events at the head ready to send */
    watch_t *gnext, *gprev; /* every watch stream */
    wev_t q[WATCH_QUEUE];
    size_t qhead, qcount;
    int overflow;
    uint32_t moved_cookie; /* a MOVED_FROM waiting for its MOVED_TO */
    char *moved_path;
};

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
    kwd_t *k = s->k;
    if (s->kprev)
        s->kprev->knext = s->knext;
    else
        k->subs = s->knext;
    if (s->knext)
        s->knext->kprev = s->kprev;
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        w->subs = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    w->nsubs--;
    free(s->path);
    free(s);
}

/* Drop one subscription and the kernel watch with its last one. */
static void sub_free(sub_t *s)
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
static int sub_add(watch_t *w, int wd, char *path, dev_t dev, ino_t ino)
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
    s->knext = k->subs;
    if (k->subs)
        k->subs->kprev = s;
    k->subs = s;
    s->wnext = w->subs;
    if (w->subs)
        w->subs->wprev = s;
    w->subs = s;
    w->nsubs++;
    if (!k->refs++)
        g_inotify.zombies--;
    return 0;
}

/* -------------------------------------------------------- adding watches */

static void set_err(watch_t *w, int rc, const char *path)
{
    if (w->o.err)
        return;
    fs_op_fail(&w->o, rc, "watch '%s': %s%s", path, strerror(-rc),
               rc == -ENOSPC ? " (the kernel's inotify watch limit, fs.inotify.max_user_watches,"
                               " is reached)"
                             : "");
}

/* On a worker: watch the file or directory open at fd (path names it for
 * the stream), through the descriptor, and record the wd for the loop.
 * Returns the wd, -EDQUOT when the stream's bound is reached, or -errno. */
static int add_fd(watch_t *w, int fd, const char *path, const struct stat *st)
{
    char proc[48];
    if (!w->budget) {
        w->jcapped = 1;
        return -EDQUOT;
    }
    if (w->nadded == w->capadded) {
        size_t cap = w->capadded ? w->capadded * 2 : 16;
        added_t *na = realloc(w->added, cap * sizeof *na);
        if (!na)
            return -ENOMEM;
        w->added = na;
        w->capadded = cap;
    }
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    /* The magic link is the open inode itself, whatever its path is now. */
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int wd = inotify_add_watch(w->ifd, proc, WATCH_MASK);
    if (wd < 0) {
        int e = -errno;
        free(p);
        return e;
    }
    w->budget--;
    w->added[w->nadded++] = (added_t){wd, p, st->st_dev, st->st_ino};
    return wd;
}

typedef struct todo {
    char *path;
    dev_t dev;
    ino_t ino;
} todo_t;

/* On a worker: watch the subdirectories of the directory open at fd (taken
 * and closed), path naming it. Each is opened relative to its parent with
 * O_NOFOLLOW and watched through that descriptor. Errors below the top are
 * skipped (a subdirectory the user may not read is not watched) except the
 * kernel's watch limit, which fails the stream, and the stream's own bound,
 * which stops the walk (the loop reports OVERFLOW). The walk keeps a list of
 * directories still to read instead of recursing, with one directory open at
 * a time: a tree as deep as PATH_MAX allows (2,000 levels) would otherwise
 * take a descriptor and a PATH_MAX buffer per level. A directory from the
 * list is opened again by its path and read only if it is still the inode
 * that was watched. */
static void walk(watch_t *w, int fd, const char *path)
{
    todo_t *todo = NULL;
    size_t n = 0, cap = 0;
    char *dir = strdup(path);
    char sub[PATH_MAX];

    if (!dir && fd >= 0)
        close(fd);
    while (dir) {
        DIR *d = fd >= 0 && !w->o.err && !w->jcapped ? fdopendir(fd) : NULL;
        struct dirent *de;
        if (!d && fd >= 0)
            close(fd);
        while (d && (de = readdir(d))) {
            const char *name = de->d_name;
            struct stat st;
            if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
                continue;
            if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                continue;
            int len = snprintf(sub, sizeof sub, "%s/%s", strcmp(dir, "/") ? dir : "", name);
            if (len < 0 || (size_t)len >= sizeof sub)
                continue;
            int cfd = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0)
                continue; /* gone, a symlink, not a directory, or not for this user */
            int rc = fstat(cfd, &st) < 0 ? -errno : add_fd(w, cfd, sub, &st);
            close(cfd);
            if (rc == -ENOSPC)
                set_err(w, rc, sub);
            if (rc == -ENOSPC || rc == -EDQUOT)
                break;
            if (rc < 0)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                todo_t *nt = realloc(todo, ncap * sizeof *nt);
                if (!nt)
                    continue;
                todo = nt;
                cap = ncap;
            }
            if ((todo[n].path = strdup(sub))) {
                todo[n].dev = st.st_dev;
                todo[n++].ino = st.st_ino;
            }
        }
        if (d)
            closedir(d);
        free(dir);
        dir = NULL;
        fd = -1;
        while (n && !dir) {
            todo_t t = todo[--n];
            struct stat st;
            dir = t.path;
            fd = w->o.err || w->jcapped
                     ? -1
                     : open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_dev != t.dev || st.st_ino != t.ino)) {
                close(fd); /* replaced since it was watched: not this tree any more */
                fd = -1;
            }
        }
    }
    while (n)
        free(todo[--n].path);
    free(todo);
}

/* On a worker: the watch's first watches. The path itself is followed
 * when it is a symlink (the user named it, as `ls` follows it); below it
 * nothing is. */
static void setup_walk(watch_t *w)
{
    struct stat st;
    int fd = open(w->o.path, O_PATH | O_CLOEXEC); /* never waits, even on a FIFO */
    if (fd < 0 || fstat(fd, &st) < 0) {
        set_err(w, -errno, w->o.path);
        goto out;
    }
    int rc = add_fd(w, fd, w->o.path, &st);
    if (rc < 0) {
        set_err(w, rc == -EDQUOT ? -ENOSPC : rc, w->o.path);
        goto out;
    }
    w->root_wd = rc;
    if (w->recursive && S_ISDIR(st.st_mode)) {
        int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
            walk(w, dfd, w->o.path);
    }
out:
    if (fd >= 0)
        close(fd);
}

/* On a worker: watch a directory that appeared inside the tree, and what
 * it holds by now. */
static void grow_one(watch_t *w, const grow_t *g)
{
    struct stat st;
    int pfd = open(g->parent, O_PATH | O_DIRECTORY | O_CLOEXEC), fd = -1;
    if (pfd < 0 || fstat(pfd, &st) < 0 || st.st_dev != g->pdev || st.st_ino != g->pino)
        goto out; /* the parent moved or was replaced: its events name it anew */
    fd = openat(pfd, g->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0)
        goto out; /* gone again, or swapped for a symlink: not followed */
    int rc = add_fd(w, fd, g->path, &st);
    if (rc == -ENOSPC)
        set_err(w, rc, g->path);
    if (rc >= 0) {
        walk(w, fd, g->path);
        fd = -1;
    }
out:
    if (fd >= 0)
        close(fd);
    if (pfd >= 0)
        close(pfd);
}

static void grow_free(grow_t *g)
{
    while (g) {
        grow_t *next = g->next;
        free(g->parent);
        free(g->name);
        free(g->path);
        free(g);
        g = next;
    }
}

/* The job of a watch stream, on a worker as the user: the first walk, or
 * the directories that appeared since, then the Entries of the next events
 * to send. */
static void job_run(fsw_job_t *j)
{
    watch_t *w = (watch_t *)SA_CONTAINER_OF(j, fsop_t, job);
    if (!w->ready)
        setup_walk(w);
    for (grow_t *g = w->jgrow; g && !w->o.err && !w->jcapped; g = g->next)
        grow_one(w, g);
    for (size_t i = 0; i < w->nstat; i++) {
        wev_t *e = &w->q[(w->qhead + i) % WATCH_QUEUE];
        /* The entry as it is now, where it still exists. */
        if (e->path && e->kind != SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE)
            e->has_entry = fs_entry_at(&w->o.arena, &e->entry, AT_FDCWD, e->path, e->path, 0) == 0;
    }
}

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
    g_inotify.walks++;
    fs_op_submit(&w->o, job_run);
}

/* --------------------------------------------------------------- events */

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
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
        return;
    }
    grow_t *g = calloc(1, sizeof *g);
    if (!g || !(g->parent = strdup(s->path)) || !(g->name = strdup(name)) ||
        !(g->path = strdup(path))) {
        grow_free(g);
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
static void stream_event(sub_t *s, const struct inotify_event *ev)
{
    watch_t *w = s->w;
    if ((ev->mask & IN_DELETE_SELF) && ev->wd != w->root_wd)
        return; /* its parent reports it */
    char *path = join(s->path, ev->len ? ev->name : NULL);
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
        if ((ev->mask & IN_ISDIR) && w->recursive)
            grow_push(w, s, ev->name, path);
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE, path, NULL);
        return;
    }
    flush_moved(w);
    if (ev->mask & IN_CREATE) {
        if ((ev->mask & IN_ISDIR) && w->recursive)
            grow_push(w, s, ev->name, path);
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

static void handle_event(const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        /* The kernel dropped events of every wd: every stream may miss some. */
        for (watch_t *w = g_inotify.streams; w; w = w->gnext)
            if (w->ready && !w->o.err)
                enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
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
            if (g_inotify.nignored == g_inotify.capignored) {
                size_t cap = g_inotify.capignored ? g_inotify.capignored * 2 : 16;
                int *ni = realloc(g_inotify.ignored, cap * sizeof *ni);
                if (ni) {
                    g_inotify.ignored = ni;
                    g_inotify.capignored = cap;
                }
            }
            if (g_inotify.nignored < g_inotify.capignored)
                g_inotify.ignored[g_inotify.nignored++] = ev->wd;
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
            stream_event(s, ev);
    }
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int rounds = 0; rounds < 16 && g_inotify.fd >= 0; rounds++) {
        ssize_t n = read(g_inotify.fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            handle_event(ev);
            p += sizeof *ev + ev->len;
        }
    }
    /* A MOVED_FROM whose partner is not in the same read moved out. */
    for (watch_t *w = g_inotify.streams; w; w = w->gnext)
        flush_moved(w);
}

/* ------------------------------------------------------ the stream's life */

/* Open the shared instance for a new stream (the first opens it). */
static int inotify_hold(watch_t *w)
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
    w->gnext = g_inotify.streams;
    if (g_inotify.streams)
        g_inotify.streams->gprev = w;
    g_inotify.streams = w;
    return 0;
}

/* The last stream closes the instance: watcher stopped, then the fd (which
 * drops every kernel watch), then the table. */
static void inotify_release(watch_t *w)
{
    if (w->ifd < 0)
        return;
    if (w->gprev)
        w->gprev->gnext = w->gnext;
    else
        g_inotify.streams = w->gnext;
    if (w->gnext)
        w->gnext->gprev = w->gprev;
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

static void watch_free(watch_t *w)
{
    while (w->subs)
        sub_free(w->subs);
    for (size_t i = 0; i < w->nadded; i++)
        free(w->added[i].path);
    free(w->added);
    grow_free(w->grow);
    grow_free(w->jgrow);
    inotify_release(w);
    for (size_t i = 0; i < w->qcount; i++) {
        wev_t *e = &w->q[(w->qhead + i) % WATCH_QUEUE];
        free(e->path);
        free(e->old);
    }
    free(w->moved_path);
    fs_op_free(&w->o);
}

static int was_ignored(int wd)
{
    for (size_t i = 0; i < g_inotify.nignored; i++)
        if (g_inotify.ignored[i] == wd)
            return 1;
    return 0;
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
        if (was_ignored(ad->wd))
            free(ad->path);
        else if (sub_add(w, ad->wd, ad->path, ad->dev, ad->ino) < 0 && !w->o.err)
            set_err(w, -ENOMEM, w->o.path);
    }
    free(w->added);
    w->added = NULL;
    w->nadded = w->capadded = 0;
    for (grow_t *g = w->jgrow; g; g = g->next)
        w->ngrow--;
    grow_free(w->jgrow);
    w->jgrow = NULL;
    if (w->jcapped && !w->capped) {
        w->capped = 1;
        enqueue(w, SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW, NULL, NULL);
    }
    if (w->o.err || w->o.orphan)
        while (w->subs)
            sub_free(w->subs);
    if (!--g_inotify.walks)
        g_inotify.nignored = 0;
    kwd_collect();
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

void watch_init(struct ev_loop *loop) { g_loop = loop; }

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
    int rc = inotify_hold(w);
    if (rc < 0) {
        conn_send_errno(c, req->id, rc, "watch '%s': inotify: %s%s", w->o.path, strerror(-rc),
                        rc == -EMFILE ? " (the inotify instance limit is reached)" : "");
        watch_free(w);
        return;
    }
    fs_op_register(c, req, &w->o, &watch_ops); /* next() starts the walk */
}
