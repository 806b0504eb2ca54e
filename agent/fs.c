/* fs.c - see fs.h: the base the file operations share (fs_internal.h): a
 * request's user and path, the operation stream with its one job at a time,
 * the guards of acting as a user, and fs_init. The operations are in
 * fs_read.c, fs_write.c, fs_list.c and fs_ops.c, their Entries in fs_entry.c.
 *
 * Errors: what takes a request (fs_req_user, fs_req_path, fs_op_new,
 * fs_op_register) answers the error itself and returns -1 or NULL; a job
 * records its failure in the op (fs_op_fail), answered once from the loop
 * (fs_op_send_error, fs_op_finish); the path helpers return a negative errno.
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
#include "fs_internal.h"

#include "errcode.h"
#include "fsworker.h"
#include "lifecycle.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------ requests */

int fs_req_user(conn_t *c, uint64_t id, const char *spec, user_id_t *u, int *set)
{
    char err[256];
    if (!spec || !spec[0]) {
        *u = *user_self(); /* its home is the base of relative paths */
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

void fs_op_fail(fsop_t *o, int neg, const char *fmt, ...)
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
void fs_op_fail_path(fsop_t *o, int neg, const char *path)
{
    fs_op_fail(o, neg, "%s '%s': %s", o->what, path, strerror(-neg));
}

void fs_op_send_error(fsop_t *o)
{
    conn_t *c = o->base.conn;
    int code = o->errcode ? o->errcode : errcode_from_errno(o->err);
    conn_send_error(c, o->base.id, code, o->err < 0 ? -o->err : 0, "%s",
                    o->errmsg ? o->errmsg : strerror(-o->err));
}

void fs_op_free(fsop_t *o)
{
    fs_arena_free(&o->arena);
    free(o->errmsg);
    free(o->path);
    free(o);
}

static void fs_op_job_done(fsw_job_t *j)
{
    fsop_t *o = SA_CONTAINER_OF(j, fsop_t, job);
    o->busy = 0;
    if (o->job.id_err && !o->err)
        fs_op_fail(o, o->job.id_err, "%s: cannot act as user %u: %s", o->what,
                   (unsigned)o->user.uid, strerror(-o->job.id_err));
    if (o->orphan)
        o->release(o);
    else
        o->on_done(o);
}

void fs_op_submit(fsop_t *o, fsw_fn *run)
{
    o->busy = 1;
    o->job.run = run;
    o->job.done = fs_op_job_done;
    o->job.user = o->as_user ? &o->user : NULL;
    fsw_submit(&o->job);
}

void fs_op_destroy(stream_t *s)
{
    fsop_t *o = (fsop_t *)s;
    if (o->busy)
        o->orphan = 1; /* the job's done() releases it */
    else
        o->release(o);
}

static void fs_op_release_free(fsop_t *o) { fs_op_free(o); }

/* Allocate an op of size bytes for req, resolving user and path. Answers
 * and returns NULL on error. */
fsop_t *fs_op_new(conn_t *c, const Request *req, size_t size, const char *what,
                      const char *user, const char *path, const ProtobufCBinaryData *raw)
{
    fsop_t *o = calloc(1, size);
    if (!o) {
        conn_send_errno(c, req->id, -ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    o->what = what;
    o->release = fs_op_release_free;
    if (fs_req_user(c, req->id, user, &o->user, &o->as_user) < 0 ||
        (path && fs_req_path(c, req->id, what, path, raw, &o->user, &o->path) < 0) ||
        lc_refuse_frozen_write(c, req, o->path)) {
        fs_op_free(o);
        return NULL;
    }
    return o;
}

/* Register o as the stream answering req; answers and frees on error. */
int fs_op_register(conn_t *c, const Request *req, fsop_t *o, const stream_ops_t *ops)
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
void fs_op_finish(fsop_t *o, Response *r)
{
    conn_t *c = o->base.conn;
    if (o->err)
        fs_op_send_error(o);
    else if (conn_send(c, o->base.id, 1, r) < 0)
        conn_send_error(c, o->base.id, CODE(INTERNAL), 0, "%s: response does not fit", o->what);
    conn_stream_end(c, &o->base);
}

stream_status_t fs_op_next_wait(stream_t *s)
{
    return STREAM_WAIT;
}

void fs_op_wake(fsop_t *o) { stream_wake(&o->base); }

/* mkdir -p, as the current (worker) identity. Returns 0 or -errno with the
 * failing prefix left in path (restored on success). */
int fs_mkdir_p(char *path, mode_t mode, char **failed)
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
int fs_split_path(const char *path, char **dir, const char **name)
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

/* "a FIFO" */
const char *fs_type_name(mode_t m)
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
int fs_own_proc_child(int dirfd, const char *name)
{
    char *end;
    long n = strtol(name, &end, 10);
    return end != name && !*end && on_procfs(dirfd) && own_pid(n);
}

int fs_open_as_user(const char *path, int flags)
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

/* The op acts for a user other than the agent's own: see fs_open_as_user. */
int fs_op_guarded(const fsop_t *o) { return o->as_user && o->user.uid != geteuid(); }

/* ============================================================ lifetime */

int fs_init(struct ev_loop *loop)
{
    user_self(); /* looked up now, not on the loop by the first request */
    return fsw_init(loop);
}

void fs_shutdown(unsigned wait_ms) { fsw_shutdown(wait_ms); }
