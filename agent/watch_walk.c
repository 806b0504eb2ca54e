/* watch_walk.c - the watches of a WatchPath stream, added on a file worker
 * as the user: the first walk of the tree, the directories that appear in
 * it later, and the Entries of events about to be sent (see watch.c).
 * Errors: helpers return a negative errno; what fails the stream is
 * recorded in it (watch_fail) and answered by the loop. */
#include "watch_internal.h"

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

/* -------------------------------------------------------- adding watches */

void watch_fail(watch_t *w, int rc, const char *path)
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
    added_t *na = util_grow(w->added, &w->capadded, w->nadded, sizeof *na, 16);
    if (!na)
        return -ENOMEM;
    w->added = na;
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
                watch_fail(w, rc, sub);
            if (rc == -ENOSPC || rc == -EDQUOT)
                break;
            if (rc < 0)
                continue;
            todo_t *nt = util_grow(todo, &cap, n, sizeof *nt, 16);
            if (!nt)
                continue;
            todo = nt;
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
        watch_fail(w, -errno, w->o.path);
        goto out;
    }
    int rc = add_fd(w, fd, w->o.path, &st);
    if (rc < 0) {
        watch_fail(w, rc == -EDQUOT ? -ENOSPC : rc, w->o.path);
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
        watch_fail(w, rc, g->path);
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

void watch_grow_free(grow_t *g)
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
void watch_job_run(fsw_job_t *j)
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
