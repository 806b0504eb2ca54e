/* fs.c - see fs.h.
 *
 * Every request is a stream of its connection. Blocking work (open, read,
 * write, readdir, unlink) is a job for the file workers; the stream holds at
 * most one job at a time, so its state is touched by one thread at a time:
 * the worker between fsw_submit() and done(), the loop otherwise.
 *
 * - ReadFile pulls: next() sends the chunk the last job read and submits the
 *   read of the following one, so the disk works while the socket drains and
 *   memory stays at one chunk per reader.
 * - WriteFile pushes: one chunk is written by a worker while at most one
 *   more waits in the stream; with that slot full the connection's input is
 *   held (conn_hold_input), which is the upload's backpressure. The data
 *   buffers are taken over from the unpacked requests, not copied.
 * - ListDirectory sorts names and types only, then fills Entries one batch
 *   (one frame) per job.
 * - A stream destroyed while its job runs is marked orphan; the job's done()
 *   then cleans up (closing files, removing an upload's temporary file) on a
 *   worker and frees it.
 */
#include "fs.h"

#include "config.h"
#include "errcode.h"
#include "fsworker.h"
#include "lifecycle.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <libdeflate.h>

/* Bytes read from the disk at a time (capped by the frame). The chunks are
 * written to the socket from their buffers, not copied, and the next one is
 * read while the last drains, so a smaller chunk costs little and keeps each
 * loop turn short; a reader holds at most RD_BUFS of them. */
#define FS_READ_CHUNK (1u << 20)
/* A DirEntries batch: bytes and entries. */
#define FS_LIST_BYTES (1u << 20)
#define FS_LIST_MAX 8192

static user_id_t g_self; /* the agent's own user: home for relative paths */

/* ------------------------------------------------------------ arena */

typedef struct fs_ablk {
    struct fs_ablk *next;
    size_t used, cap;
    max_align_t data[];
} fs_ablk_t;

void *fs_arena_alloc(fs_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    fs_ablk_t *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = SA_MAX(n, (size_t)64 * 1024 - sizeof *b);
        if (!(b = malloc(sizeof *b + cap)))
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void fs_arena_free(fs_arena_t *a)
{
    fs_ablk_t *b = a->head, *next;
    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
}

static char *arena_strndup(fs_arena_t *a, const char *s, size_t len)
{
    char *p = fs_arena_alloc(a, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

int fs_set_name(fs_arena_t *a, char **str, ProtobufCBinaryData *raw, const char *src,
                size_t len)
{
    if (util_utf8_valid(src, len)) {
        if (!(*str = arena_strndup(a, src, len)))
            return -ENOMEM;
        return 0;
    }
    char *clean = util_utf8_sanitize(src, len);
    if (!clean)
        return -ENOMEM;
    *str = arena_strndup(a, clean, strlen(clean));
    free(clean);
    raw->data = (uint8_t *)arena_strndup(a, src, len);
    raw->len = len;
    return *str && raw->data ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------ entries */

/* uid and gid names, shared by the workers: getpw*_r under one lock, with a
 * small cache because a listing asks for the same few ids. */
#define NAME_CACHE 32
typedef struct name_ent {
    unsigned id;
    int valid, group;
    char name[64];
} name_ent_t;
static name_ent_t g_names[NAME_CACHE];
static unsigned g_names_next;
static pthread_mutex_t g_names_mu = PTHREAD_MUTEX_INITIALIZER;

static void id_name(int group, unsigned id, char *out, size_t len)
{
    char buf[4096];
    pthread_mutex_lock(&g_names_mu);
    for (int i = 0; i < NAME_CACHE; i++) {
        if (g_names[i].valid && g_names[i].group == group && g_names[i].id == id) {
            snprintf(out, len, "%s", g_names[i].name);
            pthread_mutex_unlock(&g_names_mu);
            return;
        }
    }
    name_ent_t *e = &g_names[g_names_next++ % NAME_CACHE];
    e->valid = 1;
    e->group = group;
    e->id = id;
    e->name[0] = 0;
    if (group) {
        struct group gr, *res = NULL;
        if (getgrgid_r((gid_t)id, &gr, buf, sizeof buf, &res) == 0 && res)
            snprintf(e->name, sizeof e->name, "%s", gr.gr_name);
    } else {
        struct passwd pw, *res = NULL;
        if (getpwuid_r((uid_t)id, &pw, buf, sizeof buf, &res) == 0 && res)
            snprintf(e->name, sizeof e->name, "%s", pw.pw_name);
    }
    if (!e->name[0])
        snprintf(e->name, sizeof e->name, "%u", id);
    snprintf(out, len, "%s", e->name);
    pthread_mutex_unlock(&g_names_mu);
}

static Sandbox__Agent__V1__FileType file_type(mode_t m)
{
    if (S_ISREG(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__FILE;
    if (S_ISDIR(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY;
    if (S_ISLNK(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK;
    if (S_ISFIFO(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__FIFO;
    if (S_ISSOCK(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__SOCKET;
    if (S_ISCHR(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__CHAR_DEVICE;
    if (S_ISBLK(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__BLOCK_DEVICE;
    return SANDBOX__AGENT__V1__FILE_TYPE__OTHER;
}

static int entry_fill(fs_arena_t *a, Entry *e, const char *path, const struct stat *st,
                      const char *target, size_t tlen)
{
    char nbuf[64];
    size_t plen = strlen(path);
    const char *slash = memrchr(path, '/', plen);
    const char *name = slash && plen > 1 ? slash + 1 : path;
    int rc = 0;

    sandbox__agent__v1__entry__init(e);
    rc |= fs_set_name(a, &e->name, &e->name_raw, name, plen - (size_t)(name - path));
    rc |= fs_set_name(a, &e->path, &e->path_raw, path, plen);
    if (target)
        rc |= fs_set_name(a, &e->symlink_target, &e->symlink_target_raw, target, tlen);
    e->type = file_type(st->st_mode);
    e->size = (uint64_t)st->st_size;
    e->mode = st->st_mode & 07777;
    e->uid = st->st_uid;
    e->gid = st->st_gid;
    id_name(0, st->st_uid, nbuf, sizeof nbuf);
    if (!(e->owner = arena_strndup(a, nbuf, strlen(nbuf))))
        rc = -ENOMEM;
    id_name(1, st->st_gid, nbuf, sizeof nbuf);
    if (!(e->group = arena_strndup(a, nbuf, strlen(nbuf))))
        rc = -ENOMEM;
    e->mtime_unix_nano = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    e->nlink = st->st_nlink;
    e->inode = st->st_ino;
    if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
        e->rdev_major = major(st->st_rdev);
        e->rdev_minor = minor(st->st_rdev);
    }
    return rc ? -ENOMEM : 0;
}

int fs_entry_at(fs_arena_t *a, Entry *e, int dirfd, const char *name, const char *path,
                int follow)
{
    struct stat st;
    char target[PATH_MAX];
    ssize_t tlen = -1;
    int flags = follow ? 0 : AT_SYMLINK_NOFOLLOW;
    if (!*name)
        flags |= AT_EMPTY_PATH; /* dirfd itself (an O_PATH descriptor) */
    if (fstatat(dirfd, name, &st, flags) < 0)
        return -errno;
    if (S_ISLNK(st.st_mode))
        tlen = readlinkat(dirfd, name, target, sizeof target);
    return entry_fill(a, e, path, &st, tlen >= 0 ? target : NULL, tlen >= 0 ? (size_t)tlen : 0);
}

/* ------------------------------------------------------------ requests */

int fs_req_user(conn_t *c, uint64_t id, const char *spec, user_id_t *u, int *set)
{
    char err[256];
    if (!spec || !spec[0]) {
        *u = g_self;
        *set = 0;
        return 0;
    }
    int rc = user_resolve(spec, u, err, sizeof err);
    if (rc < 0) {
        conn_send_errno(c, id, rc, "%s", err);
        return -1;
    }
    *set = 1;
    return 0;
}

int fs_req_path(conn_t *c, uint64_t id, const char *what, const char *str,
                const ProtobufCBinaryData *raw, const user_id_t *u, char **out)
{
    const char *src = raw && raw->len ? (const char *)raw->data : str;
    size_t len = raw && raw->len ? raw->len : (str ? strlen(str) : 0);
    const char *base = u && u->home[0] ? u->home : "/";
    size_t blen = 0;

    *out = NULL;
    if (!len) {
        conn_send_error(c, id, CODE(INVALID_ARGUMENT), EINVAL, "%s: missing path", what);
        return -1;
    }
    if (memchr(src, 0, len)) {
        conn_send_error(c, id, CODE(INVALID_ARGUMENT), EINVAL,
                        "%s: path contains a NUL byte", what);
        return -1;
    }
    if (src[0] != '/')
        blen = strlen(base);
    if (blen + 1 + len >= PATH_MAX) {
        conn_send_error(c, id, CODE(INVALID_ARGUMENT), ENAMETOOLONG,
                        "%s: path of %zu bytes: %s", what, blen + 1 + len,
                        strerror(ENAMETOOLONG));
        return -1;
    }
    char *p = malloc(blen + 1 + len + 1);
    if (!p) {
        conn_send_errno(c, id, -ENOMEM, "%s: out of memory", what);
        return -1;
    }
    size_t o = 0;
    if (blen) {
        memcpy(p, base, blen);
        o = blen;
        if (p[o - 1] != '/')
            p[o++] = '/';
    }
    memcpy(p + o, src, len);
    o += len;
    /* "a/b/" names a/b: trailing slashes only get in the way of the last
     * component (the root stays "/"). */
    while (o > 1 && p[o - 1] == '/')
        o--;
    p[o] = 0;
    *out = p;
    return 0;
}

/* ------------------------------------------------------------ the op base */

typedef struct fsop fsop_t;
typedef void fsop_fn(fsop_t *o);

struct fsop {
    stream_t base;
    fsw_job_t job;
    const char *what;   /* "read_file", for messages */
    fsop_fn *on_done;   /* on the loop after a job, unless orphan */
    fsop_fn *release;   /* orphan or finished: close and free (may submit) */
    int busy, orphan;
    int as_user;
    user_id_t user;
    char *path;
    /* The failure of the last job: -errno, the Error.Code (0: from errno)
     * and a message saying what was wrong with what. */
    int err, errcode;
    char *errmsg;
    fs_arena_t arena;
    Entry entry;
};

static void op_fail(fsop_t *o, int neg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void op_fail(fsop_t *o, int neg, const char *fmt, ...)
{
    char msg[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->err = neg;
    free(o->errmsg);
    o->errmsg = strdup(msg);
}

/* "read_file '/x': No such file or directory" */
static void op_fail_path(fsop_t *o, int neg, const char *path)
{
    op_fail(o, neg, "%s '%s': %s", o->what, path, strerror(-neg));
}

static void op_send_error(fsop_t *o)
{
    conn_t *c = o->base.conn;
    int code = o->errcode ? o->errcode : errcode_from_errno(o->err);
    conn_send_error(c, o->base.id, code, o->err < 0 ? -o->err : 0, "%s",
                    o->errmsg ? o->errmsg : strerror(-o->err));
}

static void op_free(fsop_t *o)
{
    fs_arena_free(&o->arena);
    free(o->errmsg);
    free(o->path);
    free(o);
}

static void op_job_done(fsw_job_t *j)
{
    fsop_t *o = SA_CONTAINER_OF(j, fsop_t, job);
    o->busy = 0;
    if (o->job.id_err && !o->err)
        op_fail(o, o->job.id_err, "%s: cannot act as user %u: %s", o->what,
                (unsigned)o->user.uid, strerror(-o->job.id_err));
    if (o->orphan)
        o->release(o);
    else
        o->on_done(o);
}

static void op_submit(fsop_t *o, fsw_fn *run)
{
    o->busy = 1;
    o->job.run = run;
    o->job.done = op_job_done;
    o->job.user = o->as_user ? &o->user : NULL;
    fsw_submit(&o->job);
}

static void op_destroy(stream_t *s)
{
    fsop_t *o = (fsop_t *)s;
    if (o->busy)
        o->orphan = 1; /* the job's done() releases it */
    else
        o->release(o);
}

static void op_release_free(fsop_t *o) { op_free(o); }

/* Allocate an op of size bytes for req, resolving user and path. Answers
 * and returns NULL on error. */
static fsop_t *op_new(conn_t *c, const Request *req, size_t size, const char *what,
                      const char *user, const char *path, const ProtobufCBinaryData *raw)
{
    fsop_t *o = calloc(1, size);
    if (!o) {
        conn_send_errno(c, req->id, -ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    o->what = what;
    o->release = op_release_free;
    if (fs_req_user(c, req->id, user, &o->user, &o->as_user) < 0 ||
        (path && fs_req_path(c, req->id, what, path, raw, &o->user, &o->path) < 0) ||
        lc_refuse_frozen_write(c, req, o->path)) {
        op_free(o);
        return NULL;
    }
    return o;
}

/* Register o as the stream answering req; answers and frees on error. */
static int op_register(conn_t *c, const Request *req, fsop_t *o, const stream_ops_t *ops)
{
    o->base.ops = ops;
    int rc = conn_stream_add(c, &o->base, req->id);
    if (rc < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc,
                        "%s: cannot start: %s", o->what,
                        rc == -EMFILE ? "too many requests in flight" : strerror(-rc));
        o->release(o);
        return -1;
    }
    return 0;
}

/* One-shot ops: answer from done() and end the stream. */
static void op_finish(fsop_t *o, Response *r)
{
    conn_t *c = o->base.conn;
    if (o->err)
        op_send_error(o);
    else if (conn_send(c, o->base.id, 1, r) < 0)
        conn_send_error(c, o->base.id, CODE(INTERNAL), 0, "%s: response does not fit", o->what);
    conn_stream_end(c, &o->base);
}

static stream_status_t op_next_wait(stream_t *s)
{
    return STREAM_WAIT;
}

/* mkdir -p, as the current (worker) identity. Returns 0 or -errno with the
 * failing prefix left in path (restored on success). */
static int mkdir_p(char *path, mode_t mode, char **failed)
{
    size_t len = strlen(path);
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    for (size_t i = 1; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        char save = path[i];
        path[i] = 0;
        if (mkdir(path, mode) < 0 && errno != EEXIST) {
            int e = -errno;
            if (failed)
                *failed = strdup(path);
            path[i] = save;
            return e;
        }
        path[i] = save;
    }
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Split "/a/b/c" into parent "/a/b" (malloc'd) and the last name. */
static int split_path(const char *path, char **dir, const char **name)
{
    const char *slash = strrchr(path, '/');
    if (!slash || !slash[1])
        return -EINVAL;
    *name = slash + 1;
    if (slash == path)
        *dir = strdup("/");
    else
        *dir = strndup(path, (size_t)(slash - path));
    return *dir ? 0 : -ENOMEM;
}

/* ============================================================ ReadFile */

/* A chunk buffer of ReadFile. The connection writes the chunk from here
 * (conn_send_ref) and holds a reference until it has, which may be after the
 * stream is gone (a Cancel): so the buffer is counted, not owned. Counted on
 * the loop only; a worker fills a buffer only the stream holds. */
typedef struct rdbuf {
    unsigned refs;
    size_t cap;
    uint8_t data[];
} rdbuf_t;

static void rdbuf_unref(void *arg)
{
    rdbuf_t *b = arg;
    if (b && --b->refs == 0) {
        util_freed(b->cap);
        free(b);
    }
}

#define RD_BUFS 3

typedef struct rd {
    fsop_t o;
    int fd;
    uint64_t pos;       /* next byte to read (the worker's) */
    uint64_t end;       /* UINT64_MAX: to EOF */
    uint64_t sent;
    uint32_t crc;       /* of every byte read so far (the worker's until the end) */
    /* Buffers in turn: while the socket drains bufs[cur], a worker reads
     * the next chunk into bufs[fill]. With three, the one a read takes has
     * normally been written out and given back by the connection, so in
     * the steady state no buffer is allocated again (no first-touch page
     * faults per chunk). */
    rdbuf_t *bufs[RD_BUFS];
    int cur, fill;
    size_t cap;
    size_t have;        /* bytes in bufs[cur] */
    size_t have_sent;   /* of them, sent already (in pieces that fit the queue) */
    uint64_t have_off;  /* file offset of bufs[cur]'s first byte */
    int last;           /* bufs[cur] is the file's last chunk */
    /* Written by the worker, read by the loop once the job is done. */
    size_t fill_have;
    uint64_t fill_off;
    int filled, fill_eof;
    int opened;
    int nonblock;       /* read without blocking; EAGAIN ends the file */
    int noseek;         /* pread refused (ESPIPE): read() from where it is */
} rd_t;

/* "a FIFO" */
static const char *type_name(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFIFO:
        return "a FIFO";
    case S_IFCHR:
        return "a character device";
    case S_IFBLK:
        return "a block device";
    case S_IFSOCK:
        return "a socket";
    case S_IFDIR:
        return "a directory";
    case S_IFLNK:
        return "a symlink";
    default:
        return "not a regular file";
    }
}

/* On a worker: read the next chunk into bufs[fill]. */
static void rd_read(rd_t *r)
{
    uint8_t *buf = r->bufs[r->fill]->data;
    size_t want = r->cap, have = 0;
    int eof = 0;
    if (r->end != UINT64_MAX)
        want = (size_t)SA_MIN((uint64_t)want, r->end - r->pos);
    r->fill_off = r->pos;
    while (have < want) {
        ssize_t n = r->noseek ? read(r->fd, buf + have, want - have)
                              : pread(r->fd, buf + have, want - have, (off_t)r->pos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ESPIPE && !r->noseek && r->pos == 0) {
                r->noseek = 1; /* a terminal, a stream device */
                continue;
            }
            if (errno == ESPIPE) {
                r->o.errcode = CODE(INVALID_ARGUMENT);
                op_fail(&r->o, -ESPIPE, "%s '%s': cannot seek to offset %llu: %s", r->o.what,
                        r->o.path, (unsigned long long)r->pos, strerror(ESPIPE));
                return;
            }
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && r->nonblock) {
                /* A device with nothing more to give now (/dev/kmsg, a
                 * terminal): blocking would hold this worker, and every
                 * file operation behind it, until it spoke again. */
                eof = 1;
                break;
            }
            op_fail_path(&r->o, -errno, r->o.path);
            return;
        }
        if (n == 0) {
            eof = 1;
            break;
        }
        have += (size_t)n;
        r->pos += (uint64_t)n;
    }
    /* The checksum covers what is sent; computed here, not on the loop. */
    r->crc = libdeflate_crc32(r->crc, buf, have);
    if (r->end != UINT64_MAX && r->pos >= r->end)
        eof = 1;
    if (eof) {
        struct stat st;
        if (fstat(r->fd, &st) == 0 &&
            entry_fill(&r->o.arena, &r->o.entry, r->o.path, &st, NULL, 0) < 0) {
            op_fail(&r->o, -ENOMEM, "%s: out of memory", r->o.what);
            return;
        }
    }
    r->fill_have = have;
    r->fill_eof = eof;
    r->filled = 1;
}

/* The agent's own entries in procfs are open to any thread of the agent
 * whatever its credentials (the kernel lets a process read its own
 * /proc/PID/maps and follow its own /proc/PID/cwd), so a worker acting for a
 * user would show that user the agent's memory layout. For a user, a file
 * is opened by its real path (symlinks resolved as the user, then none
 * followed at the open, so what is checked is what is opened), and a procfs
 * file under the agent's pid or one of its threads is EACCES. Returns the
 * fd or -errno. */
/* n names the agent or one of its threads (as /proc/N does). */
static int own_pid(long n)
{
    char task[64];
    snprintf(task, sizeof task, "/proc/self/task/%ld", n);
    return n == (long)getpid() || access(task, F_OK) == 0;
}

static int on_procfs(int fd)
{
    struct statfs sf;
    return fstatfs(fd, &sf) == 0 && sf.f_type == PROC_SUPER_MAGIC;
}

/* dirfd/name is a procfs directory of the agent's own (a listing must not
 * descend into it for a user). */
static int own_proc_child(int dirfd, const char *name)
{
    char *end;
    long n = strtol(name, &end, 10);
    return end != name && !*end && on_procfs(dirfd) && own_pid(n);
}

static int open_as_user(const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)flags, .resolve = RESOLVE_NO_SYMLINKS};
    char *rp = realpath(path, NULL);
    int fd;
    if (!rp)
        return -errno;
    fd = (int)syscall(SYS_openat2, AT_FDCWD, rp, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = open(rp, flags | O_NOFOLLOW); /* before 5.6: only the last component */
    if (fd < 0) {
        fd = -errno;
        goto out;
    }
    if (on_procfs(fd)) {
        for (char *p = rp; (p = strchr(p, '/'));) {
            char *end;
            long n = strtol(++p, &end, 10);
            if (end == p || (*end && *end != '/'))
                continue;
            if (own_pid(n)) {
                close(fd);
                fd = -EACCES;
                break;
            }
        }
    }
out:
    free(rp);
    return fd;
}

/* The op acts for a user other than the agent's own: see open_as_user. */
static int guarded(const fsop_t *o) { return o->as_user && o->user.uid != geteuid(); }

static void rd_run(fsw_job_t *j)
{
    rd_t *r = (rd_t *)SA_CONTAINER_OF(j, fsop_t, job);
    if (!r->opened) {
        struct stat st;
        int fl = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        r->opened = 1;
        /* O_NONBLOCK: a FIFO must not hang the worker in open(). */
        int guard = guarded(&r->o);
        r->fd = guard ? open_as_user(r->o.path, fl) : open(r->o.path, fl);
        if (r->fd < 0) {
            op_fail_path(&r->o, guard ? r->fd : -errno, r->o.path);
            r->fd = -1;
            return;
        }
        if (fstat(r->fd, &st) < 0) {
            op_fail_path(&r->o, -errno, r->o.path);
            return;
        }
        if (S_ISDIR(st.st_mode)) {
            op_fail(&r->o, -EISDIR, "%s '%s': is a directory (use list_dir)", r->o.what,
                    r->o.path);
            return;
        }
        if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
            r->o.errcode = CODE(FAILED_PRECONDITION);
            op_fail(&r->o, -EINVAL, "%s '%s': %s, not a regular file", r->o.what, r->o.path,
                    type_name(st.st_mode));
            return;
        }
        /* Character devices and procfs files stay non-blocking (see
         * rd_read): /proc/kmsg, like a terminal, waits for the kernel to
         * speak, and would hold the worker until it did. */
        struct statfs sf;
        r->nonblock = S_ISCHR(st.st_mode) ||
                      (fstatfs(r->fd, &sf) == 0 && sf.f_type == PROC_SUPER_MAGIC);
        if (!r->nonblock)
            fcntl(r->fd, F_SETFL, O_RDONLY);
        posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    if (!r->bufs[r->fill]) {
        rdbuf_t *b = malloc(sizeof *b + r->cap);
        if (!b) {
            op_fail(&r->o, -ENOMEM, "%s: out of memory", r->o.what);
            return;
        }
        b->refs = 1; /* the stream's */
        b->cap = r->cap;
        r->bufs[r->fill] = b;
    }
    rd_read(r);
}

/* On the loop: read the chunk after bufs[cur] into the next buffer of the
 * ring, if the connection has given that one back; else into a new one (the
 * worker makes it), the old one freed when the connection lets it go. */
static void rd_read_ahead(rd_t *r)
{
    r->fill = (r->cur + 1) % RD_BUFS;
    rdbuf_t *b = r->bufs[r->fill];
    if (b && b->refs > 1) {
        rdbuf_unref(b);
        r->bufs[r->fill] = NULL;
    }
    op_submit(&r->o, rd_run);
}

static void rd_done(fsop_t *o) { stream_wake(&o->base); }

static stream_status_t rd_next(stream_t *s)
{
    rd_t *r = (rd_t *)s;
    conn_t *c = s->conn;
    Response resp = RESPONSE_INIT;

    if (r->have_sent < r->have) {
        /* A chunk goes out in pieces that fit the connection's queue
         * (--max-queued-bytes), written from the buffer itself, not packed
         * into the queue; meanwhile the next chunk is being read. */
        FileChunk fc = SANDBOX__AGENT__V1__FILE_CHUNK__INIT;
        rdbuf_t *b = r->bufs[r->cur];
        size_t piece = SA_MIN(r->have - r->have_sent, conn_max_event(c));
        fc.offset = r->have_off + r->have_sent;
        fc.data.data = b->data + r->have_sent;
        fc.data.len = piece;
        resp.result_case = RES(CHUNK);
        resp.chunk = &fc;
        b->refs++;
        if (conn_send_ref(c, s->id, 0, &resp, &fc.base, &fc.data, rdbuf_unref, b) < 0) {
            b->refs--;
            return STREAM_DONE; /* answered with an Error, or the connection is closing */
        }
        r->sent += piece;
        r->have_sent += piece;
        return STREAM_MORE;
    }
    if (r->o.busy)
        return STREAM_WAIT; /* the next chunk is being read; done() wakes us */
    if (r->o.err) {
        op_send_error(&r->o);
        return STREAM_DONE;
    }
    if (r->filled) {
        r->cur = r->fill;
        r->have = r->fill_have;
        r->have_off = r->fill_off;
        r->have_sent = 0;
        r->last = r->fill_eof;
        r->filled = 0;
        if (!r->last)
            rd_read_ahead(r);
        return STREAM_MORE;
    }
    if (!r->opened) {
        /* The first chunk (the job opens the file too). */
        r->fill = r->cur;
        op_submit(&r->o, rd_run);
        return STREAM_WAIT;
    }
    if (!r->last) {
        rd_read_ahead(r);
        return STREAM_WAIT;
    }
    FileEnd fe = SANDBOX__AGENT__V1__FILE_END__INIT;
    fe.size = r->sent;
    fe.crc32 = r->crc;
    fe.entry = &r->o.entry;
    resp.result_case = RES(FILE_END);
    resp.file_end = &fe;
    conn_send(c, s->id, 1, &resp);
    return STREAM_DONE;
}

static void rd_release(fsop_t *o)
{
    rd_t *r = (rd_t *)o;
    if (r->fd >= 0)
        close(r->fd); /* read-only: closing costs nothing worth a worker */
    for (int i = 0; i < RD_BUFS; i++)
        rdbuf_unref(r->bufs[i]);
    op_free(o);
}

static const stream_ops_t rd_ops = {
    .name = "read_file",
    .next = rd_next,
    .destroy = op_destroy,
};

void fs_handle_read(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__ReadFile *m = req->read_file;
    rd_t *r = (rd_t *)op_new(c, req, sizeof *r, "read_file", m->user, m->path, &m->path_raw);
    if (!r)
        return;
    r->fd = -1;
    r->o.on_done = rd_done;
    r->o.release = rd_release;
    r->pos = m->offset;
    r->end = m->length ? (m->offset + m->length < m->offset ? UINT64_MAX : m->offset + m->length)
                       : UINT64_MAX;
    r->cap = SA_MIN(conn_max_payload(c) - 64, (size_t)FS_READ_CHUNK);
    r->crc = 0;
    op_register(c, req, &r->o, &rd_ops); /* next() opens */
}

/* ============================================================ WriteFile */

typedef struct wr {
    fsop_t o;
    int fd, dirfd;
    char *dir;          /* parent directory */
    const char *name;   /* last component, inside o.path */
    char tmp[64];       /* the temporary name beside the target, "" if none */
    int wmode, atomic, make_parents, sync, has_owner, has_crc;
    uid_t ouid;
    gid_t ogid;
    mode_t mode;
    uint32_t expect;
    uint8_t *data;      /* the chunk being written, taken from the request */
    size_t len;
    uint8_t *next;      /* one more, received while data was being written */
    size_t next_len;
    int next_last, held;
    size_t charged;     /* bytes of data/next counted against the upload budget */
    int last, opened, finished, created;
    off_t orig_size;
    uint64_t written;
    uint32_t crc;
} wr_t;

static unsigned g_tmp_seq;

/* Undo an unfinished upload: the temporary goes; a file this upload created
 * goes; an append is cut back. Runs on a worker. */
static void wr_abort(wr_t *w)
{
    if (w->finished)
        return;
    if (w->tmp[0] && w->dirfd >= 0) {
        unlinkat(w->dirfd, w->tmp, 0);
        w->tmp[0] = 0;
    } else if (w->opened && w->created && w->dirfd >= 0) {
        unlinkat(w->dirfd, w->name, 0);
    } else if (w->opened && w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__APPEND && w->fd >= 0) {
        if (ftruncate(w->fd, w->orig_size) < 0) {
        }
    }
    w->finished = 1;
}

static void wr_close(wr_t *w)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->dirfd >= 0)
        close(w->dirfd);
    w->fd = w->dirfd = -1;
}

/* WriteFile writes regular files only: a FIFO would hold the worker until a
 * reader came, a device write has effects no retry can undo. */
static int wr_not_regular(wr_t *w, mode_t m)
{
    w->o.errcode = CODE(FAILED_PRECONDITION);
    op_fail(&w->o, -EINVAL, "%s '%s': %s, not a regular file", w->o.what, w->o.path,
            type_name(m));
    return -1;
}

static int wr_open(wr_t *w)
{
    struct stat st;
    int exists;
    if (w->make_parents) {
        char *failed = NULL;
        int rc = mkdir_p(w->dir, 0755, &failed);
        if (rc < 0) {
            op_fail(&w->o, rc, "%s: creating parent '%s': %s", w->o.what,
                    failed ? failed : w->dir, strerror(-rc));
            free(failed);
            return -1;
        }
    }
    w->dirfd = open(w->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        op_fail(&w->o, -errno, "%s '%s': parent '%s': %s", w->o.what, w->o.path, w->dir,
                strerror(errno));
        return -1;
    }
    exists = fstatat(w->dirfd, w->name, &st, 0) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        op_fail(&w->o, -EISDIR, "%s '%s': is a directory", w->o.what, w->o.path);
        return -1;
    }
    if (exists && !S_ISREG(st.st_mode))
        return wr_not_regular(w, st.st_mode);
    if (exists && w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW) {
        op_fail(&w->o, -EEXIST, "%s '%s': already exists (CREATE_NEW)", w->o.what, w->o.path);
        return -1;
    }
    if (w->atomic) {
        for (int tries = 0; tries < 16; tries++) {
            snprintf(w->tmp, sizeof w->tmp, ".sa-tmp.%d.%u.%08x", (int)getpid(),
                     __atomic_add_fetch(&g_tmp_seq, 1, __ATOMIC_RELAXED),
                     (unsigned)(util_now_mono_nano() * 2654435761u));
            w->fd = openat(w->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (w->fd >= 0 || errno != EEXIST)
                break;
        }
        if (w->fd < 0) {
            w->tmp[0] = 0;
            op_fail_path(&w->o, -errno, w->o.path);
            return -1;
        }
    } else {
        int fl = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY;
        if (w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__APPEND)
            fl |= O_APPEND;
        else if (w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW)
            fl |= O_EXCL;
        else
            fl |= O_TRUNC;
        /* O_NONBLOCK: a FIFO put there since the check must not hold the
         * worker in open() until a reader comes (it fails with ENXIO, or
         * opens and is refused below). */
        w->fd = openat(w->dirfd, w->name, fl | O_NONBLOCK, w->mode);
        if (w->fd < 0 && errno == ENXIO)
            return wr_not_regular(w, S_IFIFO);
        if (w->fd < 0) {
            op_fail_path(&w->o, -errno, w->o.path);
            return -1;
        }
        struct stat fst;
        if (fstat(w->fd, &fst) < 0) {
            op_fail_path(&w->o, -errno, w->o.path);
            return -1;
        }
        if (!S_ISREG(fst.st_mode))
            return wr_not_regular(w, fst.st_mode); /* not opened: nothing to undo */
        w->created = !exists;
        w->orig_size = exists ? st.st_size : 0;
        if (w->created && fchmod(w->fd, w->mode) < 0) {
        }
    }
    w->opened = 1;
    return 0;
}

static int wr_finish(wr_t *w)
{
    if (w->has_crc && w->crc != w->expect) {
        w->o.errcode = CODE(INVALID_ARGUMENT);
        op_fail(&w->o, -EBADMSG,
                "%s '%s': crc32 mismatch: expected %08x, the %llu bytes received have %08x; "
                "nothing was written",
                w->o.what, w->o.path, w->expect, (unsigned long long)w->written, w->crc);
        return -1;
    }
    if (w->has_owner && fchown(w->fd, w->ouid, w->ogid) < 0) {
        op_fail(&w->o, -errno, "%s '%s': chown to %u:%u: %s", w->o.what, w->o.path,
                (unsigned)w->ouid, (unsigned)w->ogid, strerror(errno));
        return -1;
    }
    /* After chown, which clears set-id bits. */
    if (w->atomic && fchmod(w->fd, w->mode) < 0) {
        op_fail_path(&w->o, -errno, w->o.path);
        return -1;
    }
    if (w->sync && fsync(w->fd) < 0) {
        op_fail_path(&w->o, -errno, w->o.path);
        return -1;
    }
    if (w->atomic) {
        int rc;
        if (w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW) {
            rc = renameat2(w->dirfd, w->tmp, w->dirfd, w->name, RENAME_NOREPLACE);
            if (rc < 0 && errno == EINVAL) /* no renameat2 on this file system */
                rc = linkat(w->dirfd, w->tmp, w->dirfd, w->name, 0) < 0
                         ? -1
                         : unlinkat(w->dirfd, w->tmp, 0);
        } else {
            rc = renameat(w->dirfd, w->tmp, w->dirfd, w->name);
        }
        if (rc < 0) {
            op_fail_path(&w->o, -errno, w->o.path);
            return -1;
        }
        w->tmp[0] = 0;
    }
    w->finished = 1;
    if (w->sync) {
        int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    if (fs_entry_at(&w->o.arena, &w->o.entry, w->dirfd, w->name, w->o.path, 0) < 0)
        sandbox__agent__v1__entry__init(&w->o.entry);
    return 0;
}

static void wr_run(fsw_job_t *j)
{
    wr_t *w = (wr_t *)SA_CONTAINER_OF(j, fsop_t, job);
    if (!w->opened && wr_open(w) < 0)
        goto fail;
    for (size_t off = 0; off < w->len;) {
        ssize_t n = w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__APPEND && !w->atomic
                        ? write(w->fd, w->data + off, w->len - off)
                        : pwrite(w->fd, w->data + off, w->len - off, (off_t)(w->written + off));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            op_fail(&w->o, -errno, "%s '%s': writing at byte %llu: %s", w->o.what, w->o.path,
                    (unsigned long long)(w->written + off), strerror(errno));
            goto fail;
        }
        off += (size_t)n;
    }
    w->crc = libdeflate_crc32(w->crc, w->data, w->len);
    w->written += w->len;
    free(w->data);
    w->data = NULL;
    w->len = 0;
    if (w->last && wr_finish(w) < 0)
        goto fail;
    if (w->finished)
        wr_close(w);
    return;
fail:
    wr_abort(w);
    wr_close(w);
}

/* On the loop: answer if the upload ended (error or last chunk), then let
 * the connection's input go on. */
/* Count n more bytes of this upload against the upload budget (which holds
 * the connection's input when it is over: conn_upload_take). */
static void wr_charge(wr_t *w, size_t n)
{
    w->charged += n;
    conn_upload_take(w->o.base.conn, n);
}

static void wr_done(fsop_t *o)
{
    wr_t *w = (wr_t *)o;
    conn_t *c = o->base.conn;
    int held = w->held;
    size_t now = (w->data ? w->len : 0) + (w->next ? w->next_len : 0);
    w->held = 0;
    /* The chunk the worker wrote is freed: its bytes leave the budget. */
    if (w->charged > now) {
        conn_upload_give(c, w->charged - now);
        w->charged = now;
    }
    if (!o->err && !w->finished && w->next) {
        /* The chunk that waited goes to the worker; the slot is free, so
         * the connection's input may go on. */
        w->data = w->next;
        w->len = w->next_len;
        w->last = w->next_last;
        w->next = NULL;
        op_submit(o, wr_run);
    } else if (o->err || w->finished) {
        Response r = RESPONSE_INIT;
        WriteFileResult res = SANDBOX__AGENT__V1__WRITE_FILE_RESULT__INIT;
        res.bytes_written = w->written;
        res.crc32 = w->crc;
        res.entry = &o->entry;
        r.result_case = RES(WRITTEN);
        r.written = &res;
        op_finish(o, &r); /* ends the stream: o is gone */
    }
    if (held)
        conn_hold_input(c, 0);
}

static void wr_cleanup_run(fsw_job_t *j)
{
    wr_t *w = (wr_t *)SA_CONTAINER_OF(j, fsop_t, job);
    wr_abort(w);
    wr_close(w);
}

static void wr_free(wr_t *w)
{
    /* Its stream already left the connection (wr_destroy). */
    if (w->charged)
        conn_upload_give(NULL, w->charged);
    free(w->data);
    free(w->next);
    free(w->dir);
    op_free(&w->o);
}

static void wr_cleanup_done(fsw_job_t *j) { wr_free((wr_t *)SA_CONTAINER_OF(j, fsop_t, job)); }

static void wr_release(fsop_t *o)
{
    wr_t *w = (wr_t *)o;
    if (w->fd < 0 && w->dirfd < 0) {
        wr_free(w);
        return;
    }
    /* Destroyed mid-upload: removing the temporary (and closing a file that
     * may have gigabytes to drop) is a job too. */
    o->job.run = wr_cleanup_run;
    o->job.done = wr_cleanup_done;
    o->job.user = o->as_user ? &o->user : NULL;
    fsw_submit(&o->job);
}

static void wr_take(wr_t *w, ProtobufCBinaryData *d)
{
    /* The request's buffer was malloc'd by protobuf-c's unpack (no custom
     * allocator); taking it saves copying up to a frame per chunk, and the
     * free of the request then skips the emptied field. */
    w->data = d->data;
    w->len = d->len;
    d->data = NULL;
    d->len = 0;
}

static stream_status_t wr_feed(stream_t *s, const Request *req)
{
    wr_t *w = (wr_t *)s;
    conn_t *c = s->conn;
    ProtobufCBinaryData *d = &((Request *)req)->write_data->data;
    if (w->last || w->next_last || w->next) {
        /* The stream ends with the last chunk, and input is held while a
         * chunk waits: only a client that ignored `more` gets here. */
        conn_send_error(c, s->id, CODE(INVALID_ARGUMENT), 0,
                        "write_data for id %llu: the upload already had its last chunk",
                        (unsigned long long)s->id);
        return STREAM_DONE;
    }
    if (!w->o.busy) {
        wr_take(w, d);
        w->last = !req->write_data->more;
        wr_charge(w, w->len);
        op_submit(&w->o, wr_run);
        return STREAM_WAIT;
    }
    /* One chunk is written while the next waits here, so the client and
     * the disk both keep moving; a third waits in the socket: holding the
     * input is the upload's backpressure. */
    w->next = d->data;
    w->next_len = d->len;
    w->next_last = !req->write_data->more;
    d->data = NULL;
    d->len = 0;
    w->held = 1;
    conn_hold_input(c, 1);
    wr_charge(w, w->next_len);
    return STREAM_WAIT;
}

/* The stream leaves its connection (done, cancelled, or the connection
 * closed); the data it still holds stays counted in the agent's budget
 * until it is freed (wr_free). */
static void wr_destroy(stream_t *s)
{
    wr_t *w = (wr_t *)s;
    conn_upload_leave(s->conn, w->charged);
    op_destroy(s);
}

/* The client shut down its side: an upload still waiting for chunks can
 * never finish. */
static stream_status_t wr_input_end(stream_t *s)
{
    wr_t *w = (wr_t *)s;
    if (w->last || w->next_last)
        return STREAM_WAIT; /* every chunk arrived: it finishes as usual */
    conn_send_error(s->conn, s->id, CODE(INVALID_ARGUMENT), 0,
                    "%s '%s': the client shut down its side before the last chunk (more = "
                    "true); the upload is abandoned",
                    w->o.what, w->o.path);
    return STREAM_DONE;
}

static const stream_ops_t wr_ops = {
    .name = "write_file",
    .next = op_next_wait,
    .feed = wr_feed,
    .destroy = wr_destroy,
};

void fs_handle_write(conn_t *c, const Request *req)
{
    Sandbox__Agent__V1__WriteFile *m = req->write_file;
    wr_t *w = (wr_t *)op_new(c, req, sizeof *w, "write_file", m->user, m->path, &m->path_raw);
    if (!w)
        return;
    w->fd = w->dirfd = -1;
    w->o.on_done = wr_done;
    w->o.release = wr_release;
    w->wmode = m->write_mode;
    if (m->atomic_opt_case == SANDBOX__AGENT__V1__WRITE_FILE__ATOMIC_OPT_ATOMIC)
        w->atomic = m->atomic;
    else
        w->atomic = w->wmode != SANDBOX__AGENT__V1__WRITE_MODE__APPEND;
    w->make_parents = m->make_parents;
    w->sync = m->sync;
    w->mode = m->mode ? (mode_t)(m->mode & 07777) : 0644;
    w->has_crc = m->expected_crc32_opt_case ==
                 SANDBOX__AGENT__V1__WRITE_FILE__EXPECTED_CRC32_OPT_EXPECTED_CRC32;
    w->expect = m->expected_crc32;
    w->crc = 0;
    if (w->wmode > SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "write_file '%s': unknown write_mode %d", w->o.path, w->wmode);
        wr_free(w);
        return;
    }
    if (w->atomic && w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__APPEND) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "write_file '%s': atomic APPEND is not supported", w->o.path);
        wr_free(w);
        return;
    }
    if (m->owner && m->owner[0]) {
        user_id_t ou;
        char err[256];
        int rc = user_resolve(m->owner, &ou, err, sizeof err);
        if (rc < 0) {
            conn_send_errno(c, req->id, rc, "write_file: owner: %s", err);
            wr_free(w);
            return;
        }
        w->has_owner = 1;
        w->ouid = ou.uid;
        w->ogid = ou.gid;
    }
    int rc = split_path(w->o.path, &w->dir, &w->name);
    if (rc < 0) {
        conn_send_errno(c, req->id, rc == -EINVAL ? -EISDIR : rc, "write_file '%s': %s",
                        w->o.path, rc == -EINVAL ? "is a directory" : strerror(-rc));
        wr_free(w);
        return;
    }
    wr_take(w, &m->data);
    w->last = !m->more;
    if (op_register(c, req, &w->o, &wr_ops) < 0)
        return;
    w->o.base.input_end = wr_input_end;
    wr_charge(w, w->len);
    op_submit(&w->o, wr_run);
}

/* ============================================================ ListDirectory */

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
        if (l->n == l->cap) {
            size_t cap = SA_MAX(l->cap * 2, (size_t)64);
            sort_key_t *nk = realloc(keys, cap * sizeof *keys);
            if (!nk) {
                rc = -ENOMEM;
                break;
            }
            keys = nk;
            l->cap = cap;
        }
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
            op_fail_path(&ls->o, -errno, ls->o.path);
            return;
        }
        if (!S_ISDIR(st.st_mode)) {
            op_fail(&ls->o, -ENOTDIR, "%s '%s': not a directory", ls->o.what, ls->o.path);
            return;
        }
        int rc, top = AT_FDCWD;
        if (guarded(&ls->o) &&
            (top = open_as_user(ls->o.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
            op_fail_path(&ls->o, top, ls->o.path);
            return;
        }
        rc = ls_push(ls, top, top == AT_FDCWD ? ls->o.path : ".", ls->o.path, 1, 1);
        if (top != AT_FDCWD)
            close(top);
        if (rc < 0) {
            op_fail_path(&ls->o, rc, ls->o.path);
            return;
        }
    }
    ls->ents = fs_arena_alloc(&ls->o.arena, cap * sizeof *ls->ents);
    ls->eptrs = fs_arena_alloc(&ls->o.arena, cap * sizeof *ls->eptrs);
    if (!ls->ents || !ls->eptrs) {
        op_fail(&ls->o, -ENOMEM, "%s: out of memory", ls->o.what);
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
            op_fail_path(&ls->o, rc, path);
            return;
        }
        ls->eptrs[ls->n_ents++] = e;
        bytes += protobuf_c_message_get_packed_size(&e->base) + 8;
        if (e->type == SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY && l->depth < ls->max_depth &&
            !(guarded(&ls->o) && own_proc_child(l->fd, name))) {
            /* Depth first: a directory's children follow it. One that cannot
             * be opened (permission) is listed without its children. */
            int fd = l->fd;
            unsigned depth = l->depth + 1;
            if (ls_push(ls, fd, name, path, depth, 0) == -ENOMEM) {
                op_fail(&ls->o, -ENOMEM, "%s: out of memory", ls->o.what);
                return;
            }
        }
    }
    if (!ls->nstack)
        ls->finished = 1;
}

static void ls_done(fsop_t *o) { stream_wake(&o->base); }

static stream_status_t ls_next(stream_t *s)
{
    ls_t *ls = (ls_t *)s;
    conn_t *c = s->conn;
    if (ls->o.busy)
        return STREAM_WAIT;
    if (ls->o.err) {
        op_send_error(&ls->o);
        return STREAM_DONE;
    }
    if (!ls->started) {
        op_submit(&ls->o, ls_run);
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
    op_submit(&ls->o, ls_run);
    return STREAM_WAIT;
}

static void ls_release(fsop_t *o)
{
    ls_t *ls = (ls_t *)o;
    for (int i = 0; i < ls->nstack; i++)
        level_free(&ls->stack[i]);
    free(ls->stack);
    op_free(o);
}

static const stream_ops_t ls_ops = {
    .name = "list_dir",
    .next = ls_next,
    .destroy = op_destroy,
};

void fs_handle_list(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__ListDirectory *m = req->list_dir;
    ls_t *ls = (ls_t *)op_new(c, req, sizeof *ls, "list_dir", m->user, m->path, &m->path_raw);
    if (!ls)
        return;
    ls->o.on_done = ls_done;
    ls->o.release = ls_release;
    ls->max_depth = m->depth ? m->depth : 1;
    ls->batch_bytes = SA_MIN((size_t)FS_LIST_BYTES, conn_max_event(c) / 2);
    ls->hidden = m->include_hidden_opt_case ==
                         SANDBOX__AGENT__V1__LIST_DIRECTORY__INCLUDE_HIDDEN_OPT_INCLUDE_HIDDEN
                     ? m->include_hidden
                     : 1;
    op_register(c, req, &ls->o, &ls_ops);
}

/* ============================================================ one-shot ops */

typedef struct simple {
    fsop_t o;
    int follow, parents, recursive, overwrite;
    mode_t mode;
    char *dest;
} simple_t;

static void simple_release(fsop_t *o)
{
    free(((simple_t *)o)->dest);
    op_free(o);
}

static void entry_done(fsop_t *o)
{
    Response r = RESPONSE_INIT;
    r.result_case = RES(ENTRY);
    r.entry = &o->entry;
    op_finish(o, &r);
}

static void ack_done(fsop_t *o)
{
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;
    r.result_case = RES(ACK);
    r.ack = &ack;
    op_finish(o, &r);
}

static const stream_ops_t simple_ops = {
    .name = "fs",
    .next = op_next_wait,
    .destroy = op_destroy,
};

static simple_t *simple_new(conn_t *c, const Request *req, const char *what, const char *user,
                            const char *path, const ProtobufCBinaryData *raw, fsop_fn *on_done)
{
    simple_t *s = (simple_t *)op_new(c, req, sizeof *s, what, user, path, raw);
    if (s) {
        s->o.on_done = on_done;
        s->o.release = simple_release;
    }
    return s;
}

static void simple_start(conn_t *c, const Request *req, simple_t *s, fsw_fn *run)
{
    if (op_register(c, req, &s->o, &simple_ops) == 0)
        op_submit(&s->o, run);
}

/* For a user, what is stat'ed is reached as open_as_user reaches it: the
 * path itself when following, else its parent. */
static void stat_run(fsw_job_t *j)
{
    simple_t *s = (simple_t *)SA_CONTAINER_OF(j, fsop_t, job);
    char *dir = NULL;
    const char *name = s->o.path;
    int fd = -1, rc = 0;
    if (guarded(&s->o)) {
        if (s->follow) {
            rc = fd = open_as_user(s->o.path, O_PATH | O_CLOEXEC);
            name = "";
        } else if (split_path(s->o.path, &dir, &name) == 0) {
            rc = fd = open_as_user(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
    }
    if (rc >= 0)
        rc = fs_entry_at(&s->o.arena, &s->o.entry, fd >= 0 ? fd : AT_FDCWD, name, s->o.path,
                         s->follow);
    if (rc < 0)
        op_fail_path(&s->o, rc, s->o.path);
    if (fd >= 0)
        close(fd);
    free(dir);
}

void fs_handle_stat(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Stat *m = req->stat;
    simple_t *s = simple_new(c, req, "stat", m->user, m->path, &m->path_raw, entry_done);
    if (!s)
        return;
    s->follow = m->follow_symlinks;
    simple_start(c, req, s, stat_run);
}

static void mkdir_run(fsw_job_t *j)
{
    simple_t *s = (simple_t *)SA_CONTAINER_OF(j, fsop_t, job);
    int rc = 0;
    if (s->parents) {
        char *failed = NULL;
        rc = mkdir_p(s->o.path, s->mode, &failed);
        if (rc == -ENOTDIR && !failed)
            op_fail(&s->o, -EEXIST, "%s '%s': exists and is not a directory", s->o.what,
                    s->o.path);
        else if (rc < 0)
            op_fail_path(&s->o, rc, failed ? failed : s->o.path);
        free(failed);
    } else if (mkdir(s->o.path, s->mode) < 0) {
        rc = -errno;
        op_fail_path(&s->o, rc, s->o.path);
    } else {
        /* The umask does not decide a requested mode. */
        chmod(s->o.path, s->mode);
    }
    if (rc == 0 && (rc = fs_entry_at(&s->o.arena, &s->o.entry, AT_FDCWD, s->o.path, s->o.path,
                                     0)) < 0)
        op_fail_path(&s->o, rc, s->o.path);
}

void fs_handle_mkdir(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__MakeDirectory *m = req->mkdir;
    simple_t *s = simple_new(c, req, "mkdir", m->user, m->path, &m->path_raw, entry_done);
    if (!s)
        return;
    s->parents = m->parents;
    s->mode = m->mode ? (mode_t)(m->mode & 07777) : 0755;
    simple_start(c, req, s, mkdir_run);
}

/* Top-level directories a recursive Remove refuses (docs/PROTOCOL.md lists
 * them): emptying one breaks the machine even when each file in it could be
 * removed one by one. */
static const char *const g_system_dirs[] = {
    "bin", "boot", "dev",  "etc",  "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
    "opt", "proc", "root", "run",  "sbin", "srv", "sys",   "tmp",   "usr",    "var",   NULL};

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

/* What rm_tree needs of dirfd/name, without following a symlink: its type,
 * its file system, and whether something is mounted on it (a bind mount of
 * the same file system has the same st_dev; statx says so anyway). */
static int rm_stat(int dirfd, const char *name, mode_t *mode, dev_t *dev, int *mount_root)
{
    struct statx sx;
    if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_TYPE, &sx) < 0)
        return -errno;
    *mode = sx.stx_mode;
    *dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    *mount_root = (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
                  (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
    return 0;
}

/* Remove dirfd/name and everything below it, without following symlinks
 * and without entering another file system (as rm --one-file-system): a
 * mount point met on the way stops the removal before anything under it is
 * touched. dev is the file system of the removal's target (top: take it).
 * path holds its full path (len bytes) for messages; extended in place. */
static int rm_tree(simple_t *s, int dirfd, const char *name, char *path, size_t len,
                   dev_t *dev, int top)
{
    mode_t mode;
    dev_t d;
    int mroot, rc = rm_stat(dirfd, name, &mode, &d, &mroot);
    if (rc < 0)
        return rc == -ENOENT ? 0 : (op_fail_path(&s->o, rc, path), -1);
    if (!S_ISDIR(mode)) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            return op_fail_path(&s->o, -errno, path), -1;
        return 0;
    }
    if (top)
        *dev = d;
    if (mroot || d != *dev) {
        s->o.errcode = CODE(FAILED_PRECONDITION);
        op_fail(&s->o, -EXDEV,
                "%s '%s': a mount point (another file system is mounted there); nothing "
                "under it was removed",
                s->o.what, path);
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return op_fail_path(&s->o, -errno, path), -1;
    DIR *dp = fdopendir(fd);
    if (!dp) {
        close(fd);
        return op_fail_path(&s->o, -ENOMEM, path), -1;
    }
    struct dirent *de;
    rc = 0;
    while (!rc && (de = readdir(dp))) {
        const char *n = de->d_name;
        if (n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2])))
            continue;
        size_t nl = strlen(n);
        if (len + 1 + nl >= PATH_MAX) {
            op_fail(&s->o, -ENAMETOOLONG, "%s '%s/%s': %s", s->o.what, path, n,
                    strerror(ENAMETOOLONG));
            rc = -1;
            break;
        }
        path[len] = '/';
        memcpy(path + len + 1, n, nl + 1);
        rc = rm_tree(s, fd, n, path, len + 1 + nl, dev, 0);
        path[len] = 0;
    }
    closedir(dp);
    if (rc)
        return rc;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return op_fail_path(&s->o, -errno, path), -1;
    return 0;
}

/* The target is taken relative to its parent, opened once (as the user,
 * following symlinks in the parent's path as any path lookup does): what the
 * checks saw is what is removed, whatever is renamed meanwhile. */
static void remove_run(fsw_job_t *j)
{
    simple_t *s = (simple_t *)SA_CONTAINER_OF(j, fsop_t, job);
    char *dir = NULL, *path = NULL;
    const char *name;
    struct stat st, root;
    int dfd = -1, rc = split_path(s->o.path, &dir, &name);

    if (rc < 0) {
        op_fail_path(&s->o, rc, s->o.path);
        goto out;
    }
    dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) < 0) {
        op_fail_path(&s->o, -errno, s->o.path);
        goto out;
    }
    if (s->recursive && stat("/", &root) == 0 && st.st_dev == root.st_dev &&
        st.st_ino == root.st_ino) {
        for (const char *const *sd = g_system_dirs; *sd; sd++) {
            if (strcmp(name, *sd))
                continue;
            s->o.errcode = CODE(INVALID_ARGUMENT);
            op_fail(&s->o, -EPERM,
                    "%s '%s': refusing to remove the system directory '/%s' recursively",
                    s->o.what, s->o.path, name);
            goto out;
        }
    }
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        op_fail_path(&s->o, -errno, s->o.path);
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dfd, name, 0) < 0)
            op_fail_path(&s->o, -errno, s->o.path);
        goto out;
    }
    if (!s->recursive) {
        if (unlinkat(dfd, name, AT_REMOVEDIR) < 0) {
            if (errno == ENOTEMPTY || errno == EEXIST)
                op_fail(&s->o, -ENOTEMPTY,
                        "%s '%s': directory not empty (set recursive to remove it all)",
                        s->o.what, s->o.path);
            else
                op_fail_path(&s->o, -errno, s->o.path);
        }
        goto out;
    }
    if (!(path = malloc(PATH_MAX))) {
        op_fail(&s->o, -ENOMEM, "%s: out of memory", s->o.what);
        goto out;
    }
    snprintf(path, PATH_MAX, "%s", s->o.path);
    dev_t dev = 0;
    rm_tree(s, dfd, name, path, strlen(path), &dev, 1);
out:
    free(path);
    if (dfd >= 0)
        close(dfd);
    free(dir);
}

/* A last component "." or ".." names a directory by another name (and "/.",
 * "/tmp/.." name the root): refused as rm refuses them, before any lookup. */
static int dot_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *n = slash ? slash + 1 : path;
    return n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2]));
}

void fs_handle_remove(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Remove *m = req->remove;
    simple_t *s = simple_new(c, req, "remove", m->user, m->path, &m->path_raw, ack_done);
    if (!s)
        return;
    if (!strcmp(s->o.path, "/") || dot_name(s->o.path)) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "remove '%s': refusing to remove %s", s->o.path,
                        strcmp(s->o.path, "/") ? "a path ending in '.' or '..'"
                                               : "the root directory");
        simple_release(&s->o);
        return;
    }
    s->recursive = m->recursive;
    simple_start(c, req, s, remove_run);
}

static void rename_run(fsw_job_t *j)
{
    simple_t *s = (simple_t *)SA_CONTAINER_OF(j, fsop_t, job);
    if (s->parents) {
        char *dir = NULL, *failed = NULL;
        const char *name;
        if (split_path(s->dest, &dir, &name) == 0) {
            int rc = mkdir_p(dir, 0755, &failed);
            if (rc < 0) {
                op_fail(&s->o, rc, "%s: creating parent '%s': %s", s->o.what,
                        failed ? failed : dir, strerror(-rc));
                free(dir);
                free(failed);
                return;
            }
        }
        free(dir);
    }
    int rc = renameat2(AT_FDCWD, s->o.path, AT_FDCWD, s->dest, s->overwrite ? 0 : RENAME_NOREPLACE);
    if (rc < 0 && errno == EINVAL && !s->overwrite) {
        /* A file system without RENAME_NOREPLACE: check, then rename. */
        struct stat st;
        if (lstat(s->dest, &st) == 0)
            errno = EEXIST;
        else
            rc = rename(s->o.path, s->dest);
    }
    if (rc < 0) {
        int e = errno;
        if (e == EEXIST || e == ENOENT || e == ENOTEMPTY || e == EISDIR)
            op_fail(&s->o, -e, "%s '%s' to '%s': %s%s", s->o.what, s->o.path, s->dest,
                    strerror(e), e == EEXIST ? " (set overwrite to replace it)" : "");
        else
            op_fail(&s->o, -e, "%s '%s' to '%s': %s", s->o.what, s->o.path, s->dest, strerror(e));
        return;
    }
    if ((rc = fs_entry_at(&s->o.arena, &s->o.entry, AT_FDCWD, s->dest, s->dest, 0)) < 0)
        op_fail_path(&s->o, rc, s->dest);
}

void fs_handle_rename(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Rename *m = req->rename;
    simple_t *s = simple_new(c, req, "rename", m->user, m->source, &m->source_raw, entry_done);
    if (!s)
        return;
    if (fs_req_path(c, req->id, "rename: destination", m->destination, &m->destination_raw,
                    &s->o.user, &s->dest) < 0) {
        simple_release(&s->o);
        return;
    }
    s->overwrite = m->overwrite;
    s->parents = m->make_parents;
    simple_start(c, req, s, rename_run);
}

/* ------------------------------------------------------------ symlink, set_attributes */

static void symlink_run(fsw_job_t *j)
{
    simple_t *s = (simple_t *)SA_CONTAINER_OF(j, fsop_t, job);
    int rc = symlink(s->dest, s->o.path) < 0 ? -errno : 0;
    if (rc == -EEXIST && s->overwrite) {
        /* Replace what is there unless it is a directory (as ln -sf). */
        struct stat st;
        if (lstat(s->o.path, &st) == 0 && S_ISDIR(st.st_mode)) {
            op_fail(&s->o, -EISDIR, "%s '%s': is a directory; it is not replaced by a link",
                    s->o.what, s->o.path);
            return;
        }
        rc = unlink(s->o.path) < 0 && errno != ENOENT ? -errno : 0;
        if (rc == 0)
            rc = symlink(s->dest, s->o.path) < 0 ? -errno : 0;
    }
    if (rc < 0) {
        op_fail(&s->o, rc, "%s '%s': %s%s", s->o.what, s->o.path, strerror(-rc),
                rc == -EEXIST ? " (set overwrite to replace it)" : "");
        return;
    }
    if ((rc = fs_entry_at(&s->o.arena, &s->o.entry, AT_FDCWD, s->o.path, s->o.path, 0)) < 0)
        op_fail_path(&s->o, rc, s->o.path);
}

void fs_handle_symlink(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__MakeSymlink *m = req->symlink;
    simple_t *s = simple_new(c, req, "symlink", m->user, m->path, &m->path_raw, entry_done);
    if (!s)
        return;
    /* The target is stored as given: neither made absolute nor resolved. */
    const ProtobufCBinaryData *raw = &m->target_raw;
    const char *t = raw->len ? (const char *)raw->data : m->target;
    size_t tlen = raw->len ? raw->len : (t ? strlen(t) : 0);
    if (!tlen || memchr(t, 0, tlen) || tlen >= PATH_MAX) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), tlen ? ENAMETOOLONG : EINVAL,
                        "symlink: target %s", !tlen ? "missing"
                                              : tlen >= PATH_MAX ? "too long"
                                                                 : "contains a NUL byte");
        simple_release(&s->o);
        return;
    }
    if (!(s->dest = strndup(t, tlen))) {
        conn_send_errno(c, req->id, -ENOMEM, "symlink: out of memory");
        simple_release(&s->o);
        return;
    }
    s->overwrite = m->overwrite;
    simple_start(c, req, s, symlink_run);
}

typedef struct setattr {
    simple_t s;
    int set_mode, set_mtime;
    int64_t mtime;
} setattr_t;

static void setattr_run(fsw_job_t *j)
{
    setattr_t *a = (setattr_t *)SA_CONTAINER_OF(j, fsop_t, job);
    simple_t *s = &a->s;
    struct stat st;
    int flags = s->follow ? 0 : AT_SYMLINK_NOFOLLOW;
    if (fstatat(AT_FDCWD, s->o.path, &st, flags) < 0) {
        op_fail_path(&s->o, -errno, s->o.path);
        return;
    }
    if (a->set_mode) {
        if (S_ISLNK(st.st_mode)) {
            op_fail(&s->o, -EOPNOTSUPP,
                    "%s '%s': a symbolic link has no mode of its own (set follow_symlinks to "
                    "change its target's)", s->o.what, s->o.path);
            return;
        }
        if (chmod(s->o.path, s->mode) < 0) {
            op_fail_path(&s->o, -errno, s->o.path);
            return;
        }
    }
    if (a->set_mtime) {
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                 {.tv_sec = (time_t)(a->mtime / 1000000000),
                                  .tv_nsec = (long)(a->mtime % 1000000000)}};
        if (ts[1].tv_nsec < 0) {
            ts[1].tv_sec--;
            ts[1].tv_nsec += 1000000000;
        }
        if (utimensat(AT_FDCWD, s->o.path, ts, flags) < 0) {
            op_fail_path(&s->o, -errno, s->o.path);
            return;
        }
    }
    int rc = fs_entry_at(&s->o.arena, &s->o.entry, AT_FDCWD, s->o.path, s->o.path, s->follow);
    if (rc < 0)
        op_fail_path(&s->o, rc, s->o.path);
}

void fs_handle_set_attributes(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__SetAttributes *m = req->set_attributes;
    setattr_t *a = (setattr_t *)op_new(c, req, sizeof *a, "set_attributes", m->user, m->path,
                                       &m->path_raw);
    if (!a)
        return;
    a->s.o.on_done = entry_done;
    a->s.o.release = simple_release;
    a->s.follow = m->follow_symlinks;
    a->set_mode = m->mode_opt_case == SANDBOX__AGENT__V1__SET_ATTRIBUTES__MODE_OPT_MODE;
    a->s.mode = (mode_t)(m->mode & 07777);
    a->set_mtime =
        m->mtime_opt_case == SANDBOX__AGENT__V1__SET_ATTRIBUTES__MTIME_OPT_MTIME_UNIX_NANO;
    a->mtime = m->mtime_unix_nano;
    if (a->set_mode && m->mode > 07777) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "set_attributes: mode %o has bits beyond 07777", m->mode);
        simple_release(&a->s.o);
        return;
    }
    simple_start(c, req, &a->s, setattr_run);
}

/* ============================================================ lifetime */

int fs_init(struct ev_loop *loop)
{
    char err[128];
    if (user_resolve(NULL, &g_self, err, sizeof err) < 0)
        snprintf(g_self.home, sizeof g_self.home, "/");
    return fsw_init(loop);
}

void fs_shutdown(unsigned wait_ms) { fsw_shutdown(wait_ms); }
