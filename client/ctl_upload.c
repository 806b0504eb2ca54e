/* ctl_upload.c - cp from here to the agent: a file in chunks (WriteFile,
 * then WriteData), a tree, a link as a link; modes and times set once each
 * entry is complete. */
#include "ctl_fs.h"

#include "ctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libdeflate.h>

static int remote_symlink(ctl_t *ctl, const char *path, const char *target)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeSymlink ms = SANDBOX__AGENT__V1__MAKE_SYMLINK__INIT;
    ctl_set_path(&ms.path, &ms.path_raw, path);
    ctl_set_path(&ms.target, &ms.target_raw, target);
    ms.overwrite = 1;
    ms.user = (char *)ctl_fs_user;
    req.op_case = OP(SYMLINK);
    req.symlink = &ms;
    return ctl_call(ctl, &req, "cp", RES(ENTRY), -1, NULL);
}

/* mode < 0 and mtime < 0: leave as it is. */
static int remote_setattr(ctl_t *ctl, const char *path, int mode, int64_t mtime)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SetAttributes sa = SANDBOX__AGENT__V1__SET_ATTRIBUTES__INIT;
    ctl_set_path(&sa.path, &sa.path_raw, path);
    if (mode >= 0) {
        sa.mode_opt_case = SANDBOX__AGENT__V1__SET_ATTRIBUTES__MODE_OPT_MODE;
        sa.mode = (uint32_t)mode;
    }
    if (mtime >= 0) {
        sa.mtime_opt_case = SANDBOX__AGENT__V1__SET_ATTRIBUTES__MTIME_OPT_MTIME_UNIX_NANO;
        sa.mtime_unix_nano = mtime;
    }
    sa.user = (char *)ctl_fs_user;
    req.op_case = OP(SET_ATTRIBUTES);
    req.set_attributes = &sa;
    return ctl_call(ctl, &req, "cp", RES(ENTRY), -1, NULL);
}

static int64_t nano_of(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Tell the agent an upload in flight is abandoned, and take its answer. */
static void cancel_upload(ctl_t *ctl, uint64_t id)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel c = SANDBOX__AGENT__V1__CANCEL__INIT;
    Response *r = NULL;
    c.target_id = id;
    req.op_case = OP(CANCEL);
    req.cancel = &c;
    if (sa_client_call(ctl->cli, &req, &r, 30000) == 0)
        sa_response_free(r);
    r = NULL;
    if (sa_client_recv_id(ctl->cli, id, &r, 30000) == 0)
        sa_response_free(r);
}

/* Fill buf from fd up to cap bytes (less only at the end): the count, or
 * -errno. */
static ssize_t read_full(int fd, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    while (n < cap) {
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        n += (size_t)k;
    }
    return (ssize_t)n;
}

/* One chunk of the upload id: the WriteFile that opens dst first, then
 * WriteData. 0 or -errno from the connection. */
static int send_chunk(ctl_t *ctl, uint64_t id, int first, const char *dst, uint32_t mode,
                      uint8_t *data, size_t n, int more)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WriteFile w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    Sandbox__Agent__V1__FileData d = SANDBOX__AGENT__V1__FILE_DATA__INIT;
    req.id = id;
    if (first) {
        ctl_set_path(&w.path, &w.path_raw, dst);
        w.user = (char *)ctl_fs_user;
        w.mode = mode & 0777 ? mode & 0777 : 0644; /* 0 is the default: set after */
        w.data.data = data;
        w.data.len = n;
        w.more = more;
        req.op_case = OP(WRITE_FILE);
        req.write_file = &w;
    } else {
        d.data.data = data;
        d.data.len = n;
        d.more = more;
        req.op_case = OP(WRITE_DATA);
        req.write_data = &d;
    }
    return sa_client_send(ctl->cli, &req);
}

/* One file's upload as it goes. */
typedef struct upload {
    uint64_t id;
    uint64_t sent;
    uint32_t crc;
    ctl_progress_t pr;
} upload_t;

/* Send fd's bytes to dst until its end, or until the agent answers early
 * (an error mid-upload: stop sending). 0 with the answer in *r (or NULL:
 * none yet), 1 when reading failed (said; the upload is cancelled), -1
 * when the connection failed (said). */
static int send_all(ctl_t *ctl, upload_t *u, int fd, const char *src, const char *dst,
                    uint32_t mode, uint8_t *buf, size_t cs, Response **r)
{
    for (int first = 1;; first = 0) {
        ssize_t n = read_full(fd, buf, cs);
        if (n < 0) {
            fprintf(stderr, "sandboxctl: cp: reading %s: %s\n", src, strerror((int)-n));
            if (!first)
                cancel_upload(ctl, u->id); /* nothing is left in place */
            return 1;
        }
        int more = (size_t)n == cs, e = send_chunk(ctl, u->id, first, dst, mode, buf,
                                                   (size_t)n, more);
        if (e < 0) {
            fprintf(stderr, "sandboxctl: cp: connection to the agent: %s\n", strerror(-e));
            return -1;
        }
        u->crc = libdeflate_crc32(u->crc, buf, (size_t)n);
        u->sent += (size_t)n;
        u->pr.done = u->sent;
        if (u->pr.total < u->sent)
            u->pr.total = u->sent;
        ctl_progress_draw(&u->pr, 0);
        if (!more || sa_client_recv_id(ctl->cli, u->id, r, 0) == 0)
            return 0;
    }
}

/* The agent's answer to an upload: what it wrote is what was sent. 0, or
 * 1 after saying why. */
static int check_written(const upload_t *u, const char *dst, const Response *r)
{
    if (r->result_case != RES(WRITTEN)) {
        if (u->pr.on)
            fputc('\n', stderr);
        return ctl_fail("cp", r);
    }
    if (r->written->bytes_written != u->sent || r->written->crc32 != u->crc) {
        fprintf(stderr, "sandboxctl: cp: %s: the agent wrote %llu bytes with crc32 %08x; sent "
                        "%llu with %08x\n",
                dst, (unsigned long long)r->written->bytes_written, r->written->crc32,
                (unsigned long long)u->sent, u->crc);
        return 1;
    }
    return 0;
}

/* Upload the local file src (fd 0 for "-") to the agent's dst with mode.
 * 0, 1 when this file failed (said why), -1 when the connection did. */
static int upload_file(ctl_t *ctl, const char *src, const char *dst, uint32_t mode)
{
    int fd = strcmp(src, "-") ? open(src, O_RDONLY | O_CLOEXEC) : 0;
    struct stat st;
    size_t cs = sa_client_max_frame(ctl->cli) - 1024;
    uint8_t *buf = NULL;
    upload_t u = {.id = sa_client_next_id(ctl->cli)};
    Response *r = NULL;
    int rc = 1;

    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", src, strerror(errno));
        goto out;
    }
    if (!(buf = malloc(cs))) {
        fprintf(stderr, "sandboxctl: cp: out of memory\n");
        goto out;
    }
    ctl_progress_start(&u.pr, src, S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0);
    if ((rc = send_all(ctl, &u, fd, src, dst, mode, buf, cs, &r)) != 0)
        goto out;
    if (!r && sa_client_recv_id(ctl->cli, u.id, &r, -1) < 0) {
        fprintf(stderr, "sandboxctl: cp: connection to the agent lost\n");
        rc = -1;
        goto out;
    }
    if ((rc = check_written(&u, dst, r)) != 0)
        goto out;
    ctl_progress_draw(&u.pr, 1);
    /* Modes the write does not set (none, set-id, sticky) and the time. */
    int m = (mode & 07777) != (mode & 0777) || !(mode & 0777) ? (int)(mode & 07777) : -1;
    int64_t t = ctl_cp.keep_time && strcmp(src, "-") ? nano_of(&st.st_mtim) : -1;
    if (m >= 0 || t >= 0)
        rc = remote_setattr(ctl, dst, m, t);
out:
    sa_response_free(r);
    free(buf);
    if (fd > 0)
        close(fd);
    return rc;
}

static int upload_link(ctl_t *ctl, const char *local, const char *remote, int64_t mtime)
{
    char target[PATH_MAX];
    ssize_t n = readlink(local, target, sizeof target - 1);
    int rc;
    if (n < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", local, strerror(errno));
        return 1;
    }
    target[n] = 0;
    if ((rc = remote_symlink(ctl, remote, target)) || mtime < 0)
        return rc;
    return remote_setattr(ctl, remote, -1, mtime);
}

/* May the directory st be copied into (not a -L loop, not too deep)? 0,
 * or 1 after saying why not. */
static int dir_allowed(const char *local, const struct stat *st)
{
    for (int i = 0; i < ctl_cp.depth; i++) {
        if (ctl_cp.anc_dev[i] == st->st_dev && ctl_cp.anc_ino[i] == st->st_ino) {
            fprintf(stderr, "sandboxctl: cp: %s: a link back to a directory being copied; "
                            "not followed\n", local);
            return 1;
        }
    }
    if (ctl_cp.depth == MAX_DEPTH) {
        fprintf(stderr, "sandboxctl: cp: %s: more than %d levels deep; not copied\n", local,
                MAX_DEPTH);
        return 1;
    }
    return 0;
}

/* A directory and what is in it; its own mode and time once complete. */
static int upload_dir(ctl_t *ctl, const char *local, const char *remote, const struct stat *st,
                      int64_t mtime)
{
    int rc;
    if (dir_allowed(local, st))
        return 1;
    /* Writable by us while it fills; its own mode once it is complete. */
    if ((rc = ctl_fs_mkdir(ctl, remote, 1, (st->st_mode & 0777) | 0700, "cp")))
        return rc;
    DIR *d = opendir(local);
    if (!d) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", local, strerror(errno));
        return 1;
    }
    ctl_cp_progress_off = 1;
    ctl_cp.anc_dev[ctl_cp.depth] = st->st_dev;
    ctl_cp.anc_ino[ctl_cp.depth++] = st->st_ino;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *s = ctl_fs_join(local, de->d_name), *r = ctl_fs_join(remote, de->d_name);
        int k = s && r ? ctl_upload_entry(ctl, s, r, 0) : -1;
        free(s);
        free(r);
        if (k < 0) {
            rc = -1;
            break;
        }
        rc |= k;
    }
    ctl_cp.depth--;
    closedir(d);
    if (rc < 0)
        return rc;
    int k = remote_setattr(ctl, remote, (int)(st->st_mode & 07777), mtime);
    return k < 0 ? k : rc | k;
}

int ctl_upload_entry(ctl_t *ctl, const char *local, const char *remote, int top)
{
    struct stat st;
    int follow = ctl_cp.follow || (top && !ctl_cp.recursive);
    if (!strcmp(local, "-"))
        return upload_file(ctl, local, remote, 0644);
    if ((follow ? stat(local, &st) : lstat(local, &st)) < 0) {
        int e = errno;
        struct stat lst;
        fprintf(stderr, "sandboxctl: cp: %s: %s%s\n", local, strerror(e),
                e == ENOENT && lstat(local, &lst) == 0 ? " (a dangling symbolic link)" : "");
        return 1;
    }
    int t = ctl_fs_local_type(st.st_mode);
    int64_t mtime = ctl_cp.keep_time ? nano_of(&st.st_mtim) : -1;
    if (t == T_FILE)
        return upload_file(ctl, local, remote, st.st_mode & 07777);
    if (t == T_LINK)
        return upload_link(ctl, local, remote, mtime);
    if (t != T_DIR) {
        fprintf(stderr, "sandboxctl: cp: %s: %s; not copied (only files, directories and "
                        "links are)\n", local, ctl_fs_type_words(t));
        return 1;
    }
    if (!ctl_cp.recursive) {
        fprintf(stderr, "sandboxctl: cp: %s is a directory (use -r)\n", local);
        return 1;
    }
    return upload_dir(ctl, local, remote, &st, mtime);
}
