/* fs_list.c - ListDirectory: names and types read and sorted per directory,
 * depth first, then Entries filled one batch (one frame) per job.
 * Errors: a handler answers every error itself (one Error, the request's
 * only answer); a job records its failure in the op (fs_op_fail) and the
 * loop answers it (fs_op_send_error); helpers return a negative errno. */
#include "fs.h"
#include "fs_internal.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A DirEntries batch: bytes and entries. */
#define FS_LIST_BYTES (1u << 20)
#define FS_LIST_MAX 8192

typedef struct level {
    int fd;             /* the directory, open while its names are listed */
    char *dir;          /* its path */
    char *names;        /* NUL-separated */
    size_t nlen, ncap;
    uint32_t *offs;     /* sorted: directories first, then by name */
    uint8_t *isdir;     /* by offset index before sorting: kept beside offs */
    size_t n, cap, idx;
    unsigned depth;     /* of its children: 1 = direct children of the root */
} level_t;

typedef struct ls {
    fsop_t o;
    unsigned max_depth;
    int hidden;
    level_t *stack;
    int nstack, capstack;
    int started, finished;
    Entry *ents;
    Entry **eptrs;
    size_t n_ents;
    size_t batch_bytes; /* a batch fits the connection's queue (conn_max_event) */
} ls_t;

typedef struct sort_key {
    uint32_t off;
    uint8_t isdir;
} sort_key_t;

static int key_cmp(const void *a, const void *b, void *ctx)
{
    const sort_key_t *x = a, *y = b;
    const char *names = ctx;
    if (x->isdir != y->isdir)
        return x->isdir ? -1 : 1;
    return strcmp(names + x->off, names + y->off);
}

static void level_free(level_t *l)
{
    if (l->fd >= 0)
        close(l->fd);
    free(l->dir);
    free(l->names);
    free(l->offs);
    free(l->isdir);
    memset(l, 0, sizeof *l);
    l->fd = -1;
}

/* Read a directory's names and types, sorted. Returns 0 or -errno. Only the
 * listing's own path may be reached through a symlink (follow), as `ls /bin`
 * does; below it nothing is followed. */
static int level_scan(ls_t *ls, level_t *l, int parentfd, const char *name, const char *dir,
                      unsigned depth, int follow)
{
    DIR *d;
    struct dirent *de;
    sort_key_t *keys = NULL;
    int rc = 0;

    memset(l, 0, sizeof *l);
    l->depth = depth;
    l->fd = openat(parentfd, name,
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (l->fd < 0)
        return -errno;
    if (!(l->dir = strdup(dir)))
        return -ENOMEM;
    int dfd = fcntl(l->fd, F_DUPFD_CLOEXEC, 0); /* dup() would drop close-on-exec */
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        rc = -errno;
        if (dfd >= 0)
            close(dfd);
        return rc;
    }
    while ((errno = 0, de = readdir(d))) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        if ((n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2]))) || (!ls->hidden && n[0] == '.'))
            continue;
        if (l->nlen + len + 1 > l->ncap) {
            size_t ncap = SA_MAX(l->ncap * 2, (size_t)4096);
            char *nn = realloc(l->names, ncap);
            if (!nn || ncap > UINT32_MAX) {
                rc = -ENOMEM;
                break;
            }
            l->names = nn;
            l->ncap = ncap;
        }
        sort_key_t *nk = util_grow(keys, &l->cap, l->n, sizeof *keys, 64);
        if (!nk) {
            rc = -ENOMEM;
            break;
        }
        keys = nk;
        int isdir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            isdir = fstatat(l->fd, n, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        keys[l->n].off = (uint32_t)l->nlen;
        keys[l->n].isdir = (uint8_t)isdir;
        memcpy(l->names + l->nlen, n, len + 1);
        l->nlen += len + 1;
        l->n++;
    }
    if (!rc && errno)
        rc = -errno;
    closedir(d);
    if (!rc && l->n) {
        qsort_r(keys, l->n, sizeof *keys, key_cmp, l->names);
        l->offs = malloc(l->n * sizeof *l->offs);
        l->isdir = malloc(l->n);
        if (!l->offs || !l->isdir) {
            rc = -ENOMEM;
        } else {
            for (size_t i = 0; i < l->n; i++) {
                l->offs[i] = keys[i].off;
                l->isdir[i] = keys[i].isdir;
            }
        }
    }
    free(keys);
    return rc;
}

static int ls_push(ls_t *ls, int parentfd, const char *name, const char *dir, unsigned depth,
                   int follow)
{
    if (ls->nstack == ls->capstack) {
        int cap = ls->capstack ? ls->capstack * 2 : 8;
        level_t *ns = realloc(ls->stack, (size_t)cap * sizeof *ns);
        if (!ns)
            return -ENOMEM;
        ls->stack = ns;
        ls->capstack = cap;
    }
    level_t *l = &ls->stack[ls->nstack];
    int rc = level_scan(ls, l, parentfd, name, dir, depth, follow);
    if (rc < 0) {
        level_free(l);
        return rc;
    }
    ls->nstack++;
    return 0;
}

static void ls_run(fsw_job_t *j)
{
    ls_t *ls = (ls_t *)SA_CONTAINER_OF(j, fsop_t, job);
    size_t bytes = 0, cap = FS_LIST_MAX;
    char path[PATH_MAX];

    if (!ls->started) {
        struct stat st;
        ls->started = 1;
        if (stat(ls->o.path, &st) < 0) {
            fs_op_fail_path(&ls->o, -errno, ls->o.path);
            return;
        }
        if (!S_ISDIR(st.st_mode)) {
            fs_op_fail(&ls->o, -ENOTDIR, "%s '%s': not a directory", ls->o.what, ls->o.path);
            return;
        }
        int rc, top = AT_FDCWD;
        if (fs_op_guarded(&ls->o) &&
            (top = fs_open_as_user(ls->o.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
            fs_op_fail_path(&ls->o, top, ls->o.path);
            return;
        }
        rc = ls_push(ls, top, top == AT_FDCWD ? ls->o.path : ".", ls->o.path, 1, 1);
        if (top != AT_FDCWD)
            close(top);
        if (rc < 0) {
            fs_op_fail_path(&ls->o, rc, ls->o.path);
            return;
        }
    }
    ls->ents = fs_arena_alloc(&ls->o.arena, cap * sizeof *ls->ents);
    ls->eptrs = fs_arena_alloc(&ls->o.arena, cap * sizeof *ls->eptrs);
    if (!ls->ents || !ls->eptrs) {
        fs_op_fail(&ls->o, -ENOMEM, "%s: out of memory", ls->o.what);
        return;
    }
    ls->n_ents = 0;
    while (ls->nstack && ls->n_ents < cap && bytes < ls->batch_bytes) {
        level_t *l = &ls->stack[ls->nstack - 1];
        if (l->idx == l->n) {
            level_free(l);
            ls->nstack--;
            continue;
        }
        size_t i = l->idx++;
        const char *name = l->names + l->offs[i];
        int n = snprintf(path, sizeof path, "%s%s%s", l->dir,
                         l->dir[strlen(l->dir) - 1] == '/' ? "" : "/", name);
        if (n < 0 || (size_t)n >= sizeof path)
            continue;
        Entry *e = &ls->ents[ls->n_ents];
        int rc = fs_entry_at(&ls->o.arena, e, l->fd, name, path, 0);
        if (rc == -ENOENT || rc == -ESRCH)
            continue; /* removed since the scan (ESRCH: a /proc entry whose process exited) */
        if (rc < 0) {
            fs_op_fail_path(&ls->o, rc, path);
            return;
        }
        ls->eptrs[ls->n_ents++] = e;
        bytes += protobuf_c_message_get_packed_size(&e->base) + 8;
        if (e->type == SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY && l->depth < ls->max_depth &&
            !(fs_op_guarded(&ls->o) && fs_own_proc_child(l->fd, name))) {
            /* Depth first: a directory's children follow it. One that cannot
             * be opened (permission) is listed without its children. */
            int fd = l->fd;
            unsigned depth = l->depth + 1;
            if (ls_push(ls, fd, name, path, depth, 0) == -ENOMEM) {
                fs_op_fail(&ls->o, -ENOMEM, "%s: out of memory", ls->o.what);
                return;
            }
        }
    }
    if (!ls->nstack)
        ls->finished = 1;
}

static stream_status_t ls_next(stream_t *s)
{
    ls_t *ls = (ls_t *)s;
    conn_t *c = s->conn;
    if (ls->o.busy)
        return STREAM_WAIT;
    if (ls->o.err) {
        fs_op_send_error(&ls->o);
        return STREAM_DONE;
    }
    if (!ls->started) {
        fs_op_submit(&ls->o, ls_run);
        return STREAM_WAIT;
    }
    Response r = RESPONSE_INIT;
    DirEntries de = SANDBOX__AGENT__V1__DIR_ENTRIES__INIT;
    de.n_entries = ls->n_ents;
    de.entries = ls->eptrs;
    r.result_case = RES(ENTRIES);
    r.entries = &de;
    int rc = conn_send(c, s->id, ls->finished, &r);
    ls->n_ents = 0;
    ls->ents = NULL;
    ls->eptrs = NULL;
    fs_arena_free(&ls->o.arena);
    if (rc < 0) {
        conn_send_errno(c, s->id, rc, "%s '%s': sending entries: %s", ls->o.what, ls->o.path,
                        strerror(-rc));
        return STREAM_DONE;
    }
    if (ls->finished)
        return STREAM_DONE;
    fs_op_submit(&ls->o, ls_run);
    return STREAM_WAIT;
}

static void ls_release(fsop_t *o)
{
    ls_t *ls = (ls_t *)o;
    for (int i = 0; i < ls->nstack; i++)
        level_free(&ls->stack[i]);
    free(ls->stack);
    fs_op_free(o);
}

static const stream_ops_t ls_ops = {
    .name = "list_dir",
    .next = ls_next,
    .destroy = fs_op_destroy,
};

void fs_handle_list(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__ListDirectory *m = req->list_dir;
    ls_t *ls = (ls_t *)fs_op_new(c, req, sizeof *ls, "list_dir", m->user, m->path, &m->path_raw);
    if (!ls)
        return;
    ls->o.on_done = fs_op_wake;
    ls->o.release = ls_release;
    ls->max_depth = m->depth ? m->depth : 1;
    ls->batch_bytes = SA_MIN((size_t)FS_LIST_BYTES, conn_max_event(c) / 2);
    ls->hidden = m->include_hidden_opt_case ==
                         SANDBOX__AGENT__V1__LIST_DIRECTORY__INCLUDE_HIDDEN_OPT_INCLUDE_HIDDEN
                     ? m->include_hidden
                     : 1;
    fs_op_register(c, req, &ls->o, &ls_ops);
}
