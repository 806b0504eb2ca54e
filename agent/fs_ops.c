/* fs_ops.c - the one-shot file operations: Stat, MakeDirectory, Remove,
 * Rename, MakeSymlink and SetAttributes, each one job and one answer.
 * Errors: a handler answers every error itself (one Error, the request's
 * only answer); a job records its failure in the op (fs_op_fail) and the
 * loop answers it (fs_op_send_error); helpers return a negative errno. */
#include "fs.h"
#include "fs_internal.h"

#include "errcode.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

typedef struct simple {
    fsop_t o;
    int follow, parents, recursive, overwrite;
    mode_t mode;
    char *dest;
} simple_t;

static void simple_release(fsop_t *o)
{
    free(((simple_t *)o)->dest);
    fs_op_free(o);
}

static void entry_done(fsop_t *o)
{
    Response r = RESPONSE_INIT;
    r.result_case = RES(ENTRY);
    r.entry = &o->entry;
    fs_op_finish(o, &r);
}

static void ack_done(fsop_t *o)
{
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;
    r.result_case = RES(ACK);
    r.ack = &ack;
    fs_op_finish(o, &r);
}

static const stream_ops_t simple_ops = {
    .name = "fs",
    .next = fs_op_next_wait,
    .destroy = fs_op_destroy,
};

static simple_t *simple_new(conn_t *c, const Request *req, const char *what, const char *user,
                            const char *path, const ProtobufCBinaryData *raw, fsop_fn *on_done)
{
    simple_t *s = (simple_t *)fs_op_new(c, req, sizeof *s, what, user, path, raw);
    if (s) {
        s->o.on_done = on_done;
        s->o.release = simple_release;
    }
    return s;
}

/* On a worker, the answer of an op that changed path: its Entry now. */
static void simple_entry(simple_t *s, const char *path, int follow)
{
    int rc = fs_entry_at(&s->o.arena, &s->o.entry, AT_FDCWD, path, path, follow);
    if (rc < 0)
        fs_op_fail_path(&s->o, rc, path);
}

static void simple_start(conn_t *c, const Request *req, simple_t *s, fsw_fn *run)
{
    if (fs_op_register(c, req, &s->o, &simple_ops) == 0)
        fs_op_submit(&s->o, run);
}

/* For a user, what is stat'ed is reached as fs_open_as_user reaches it: the
 * path itself when following, else its parent. */
static void stat_run(fsw_job_t *j)
{
    simple_t *s = (simple_t *)SA_CONTAINER_OF(j, fsop_t, job);
    char *dir = NULL;
    const char *name = s->o.path;
    int fd = -1, rc = 0;
    if (fs_op_guarded(&s->o)) {
        if (s->follow) {
            rc = fd = fs_open_as_user(s->o.path, O_PATH | O_CLOEXEC);
            name = "";
        } else if (fs_split_path(s->o.path, &dir, &name) == 0) {
            rc = fd = fs_open_as_user(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
    }
    if (rc >= 0)
        rc = fs_entry_at(&s->o.arena, &s->o.entry, fd >= 0 ? fd : AT_FDCWD, name, s->o.path,
                         s->follow);
    if (rc < 0)
        fs_op_fail_path(&s->o, rc, s->o.path);
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
        rc = fs_mkdir_p(s->o.path, s->mode, &failed);
        if (rc == -ENOTDIR && !failed)
            fs_op_fail(&s->o, -EEXIST, "%s '%s': exists and is not a directory", s->o.what,
                       s->o.path);
        else if (rc < 0)
            fs_op_fail_path(&s->o, rc, failed ? failed : s->o.path);
        free(failed);
    } else if (mkdir(s->o.path, s->mode) < 0) {
        rc = -errno;
        fs_op_fail_path(&s->o, rc, s->o.path);
    } else {
        /* The umask does not decide a requested mode. */
        chmod(s->o.path, s->mode);
    }
    if (rc == 0)
        simple_entry(s, s->o.path, 0);
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
        return rc == -ENOENT ? 0 : (fs_op_fail_path(&s->o, rc, path), -1);
    if (!S_ISDIR(mode)) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            return fs_op_fail_path(&s->o, -errno, path), -1;
        return 0;
    }
    if (top)
        *dev = d;
    if (mroot || d != *dev) {
        s->o.errcode = CODE(FAILED_PRECONDITION);
        fs_op_fail(&s->o, -EXDEV,
                   "%s '%s': a mount point (another file system is mounted there); nothing "
                   "under it was removed",
                   s->o.what, path);
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return fs_op_fail_path(&s->o, -errno, path), -1;
    DIR *dp = fdopendir(fd);
    if (!dp) {
        close(fd);
        return fs_op_fail_path(&s->o, -ENOMEM, path), -1;
    }
    struct dirent *de;
    rc = 0;
    while (!rc && (de = readdir(dp))) {
        const char *n = de->d_name;
        if (n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2])))
            continue;
        size_t nl = strlen(n);
        if (len + 1 + nl >= PATH_MAX) {
            fs_op_fail(&s->o, -ENAMETOOLONG, "%s '%s/%s': %s", s->o.what, path, n,
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
        return fs_op_fail_path(&s->o, -errno, path), -1;
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
    int dfd = -1, rc = fs_split_path(s->o.path, &dir, &name);

    if (rc < 0) {
        fs_op_fail_path(&s->o, rc, s->o.path);
        goto out;
    }
    dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) < 0) {
        fs_op_fail_path(&s->o, -errno, s->o.path);
        goto out;
    }
    if (s->recursive && stat("/", &root) == 0 && st.st_dev == root.st_dev &&
        st.st_ino == root.st_ino) {
        for (const char *const *sd = g_system_dirs; *sd; sd++) {
            if (strcmp(name, *sd))
                continue;
            s->o.errcode = CODE(INVALID_ARGUMENT);
            fs_op_fail(&s->o, -EPERM,
                       "%s '%s': refusing to remove the system directory '/%s' recursively",
                       s->o.what, s->o.path, name);
            goto out;
        }
    }
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        fs_op_fail_path(&s->o, -errno, s->o.path);
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dfd, name, 0) < 0)
            fs_op_fail_path(&s->o, -errno, s->o.path);
        goto out;
    }
    if (!s->recursive) {
        if (unlinkat(dfd, name, AT_REMOVEDIR) < 0) {
            if (errno == ENOTEMPTY || errno == EEXIST)
                fs_op_fail(&s->o, -ENOTEMPTY,
                           "%s '%s': directory not empty (set recursive to remove it all)",
                           s->o.what, s->o.path);
            else
                fs_op_fail_path(&s->o, -errno, s->o.path);
        }
        goto out;
    }
    if (!(path = malloc(PATH_MAX))) {
        fs_op_fail(&s->o, -ENOMEM, "%s: out of memory", s->o.what);
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
        if (fs_split_path(s->dest, &dir, &name) == 0) {
            int rc = fs_mkdir_p(dir, 0755, &failed);
            if (rc < 0) {
                fs_op_fail(&s->o, rc, "%s: creating parent '%s': %s", s->o.what,
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
            fs_op_fail(&s->o, -e, "%s '%s' to '%s': %s%s", s->o.what, s->o.path, s->dest,
                       strerror(e), e == EEXIST ? " (set overwrite to replace it)" : "");
        else
            fs_op_fail(&s->o, -e, "%s '%s' to '%s': %s", s->o.what, s->o.path, s->dest,
                       strerror(e));
        return;
    }
    simple_entry(s, s->dest, 0);
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
            fs_op_fail(&s->o, -EISDIR, "%s '%s': is a directory; it is not replaced by a link",
                       s->o.what, s->o.path);
            return;
        }
        rc = unlink(s->o.path) < 0 && errno != ENOENT ? -errno : 0;
        if (rc == 0)
            rc = symlink(s->dest, s->o.path) < 0 ? -errno : 0;
    }
    if (rc < 0) {
        fs_op_fail(&s->o, rc, "%s '%s': %s%s", s->o.what, s->o.path, strerror(-rc),
                   rc == -EEXIST ? " (set overwrite to replace it)" : "");
        return;
    }
    simple_entry(s, s->o.path, 0);
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
        fs_op_fail_path(&s->o, -errno, s->o.path);
        return;
    }
    if (a->set_mode) {
        if (S_ISLNK(st.st_mode)) {
            fs_op_fail(&s->o, -EOPNOTSUPP,
                       "%s '%s': a symbolic link has no mode of its own (set follow_symlinks to "
                       "change its target's)", s->o.what, s->o.path);
            return;
        }
        if (chmod(s->o.path, s->mode) < 0) {
            fs_op_fail_path(&s->o, -errno, s->o.path);
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
            fs_op_fail_path(&s->o, -errno, s->o.path);
            return;
        }
    }
    simple_entry(s, s->o.path, s->follow);
}

void fs_handle_set_attributes(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__SetAttributes *m = req->set_attributes;
    setattr_t *a = (setattr_t *)fs_op_new(c, req, sizeof *a, "set_attributes", m->user, m->path,
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
