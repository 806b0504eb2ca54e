/* ctl_fs.c - sandboxctl's file commands: cp (":" marks the agent's side, as
 * with scp), cat, ls, stat, mkdir, rm, mv, watch. Every transfer is
 * checked against the agent's crc32. Names travel as bytes: a path from
 * the command line that is not UTF-8 goes in the request's *_raw field, and
 * a listed name is used as its *_raw bytes. */
#include "ctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>

#define T_FILE SANDBOX__AGENT__V1__FILE_TYPE__FILE
#define T_DIR SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY
#define T_LINK SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK
#define T_FIFO SANDBOX__AGENT__V1__FILE_TYPE__FIFO
#define T_SOCK SANDBOX__AGENT__V1__FILE_TYPE__SOCKET
#define T_CHR SANDBOX__AGENT__V1__FILE_TYPE__CHAR_DEVICE
#define T_BLK SANDBOX__AGENT__V1__FILE_TYPE__BLOCK_DEVICE

/* A tree deeper than this is reported, not followed (a -L loop). */
#define MAX_DEPTH 256

static const char *g_user = ""; /* -u: act as this user on the agent */

/* File commands connect with ctl_connect_z(ctl, o['z']): file data is mostly
 * incompressible, and compressing it costs the agent more than the bytes it
 * saves on a local transport (-z turns it on). */

static const char *rpath(const char *s) { return s[0] == ':' ? s + 1 : s; }

static const char *type_name(int t)
{
    switch (t) {
    case T_FILE: return "file";
    case T_DIR: return "directory";
    case T_LINK: return "symlink";
    case T_FIFO: return "fifo";
    case T_SOCK: return "socket";
    case T_CHR: return "char_device";
    case T_BLK: return "block_device";
    default: return "other";
    }
}

/* The same, for a sentence. */
static const char *type_words(int t)
{
    switch (t) {
    case T_FIFO: return "a fifo";
    case T_SOCK: return "a socket";
    case T_CHR: return "a character device";
    case T_BLK: return "a block device";
    case T_LINK: return "a symbolic link";
    case T_DIR: return "a directory";
    case T_FILE: return "a regular file";
    default: return "a special file";
    }
}

static int local_type(mode_t m)
{
    return S_ISREG(m) ? T_FILE : S_ISDIR(m) ? T_DIR : S_ISLNK(m) ? T_LINK : S_ISFIFO(m) ? T_FIFO
         : S_ISSOCK(m) ? T_SOCK : S_ISCHR(m) ? T_CHR : S_ISBLK(m) ? T_BLK : 0;
}

/* One request, its final response; NULL (said why) when the connection
 * failed. */
static Response *fs_call(ctl_t *ctl, Request *req, const char *what)
{
    Response *r = NULL;
    int rc = sa_client_call(ctl->cli, req, &r, -1);
    if (rc < 0) {
        fprintf(stderr, "sandboxctl: %s: connection to the agent: %s\n", what, strerror(-rc));
        return NULL;
    }
    return r;
}

static Response *remote_stat(ctl_t *ctl, const char *path, int follow, const char *what)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    ctl_set_path(&st.path, &st.path_raw, path);
    st.follow_symlinks = follow;
    st.user = (char *)g_user;
    req.op_case = OP(STAT);
    req.stat = &st;
    return fs_call(ctl, &req, what);
}

/* A one-shot request answered by want: 0, 1 when the agent refused (said
 * why), -1 when the connection failed. */
static int fs_expect(ctl_t *ctl, Request *req, int want, const char *what)
{
    Response *r = fs_call(ctl, req, what);
    if (!r)
        return -1;
    int rc = (int)r->result_case == want ? 0 : ctl_fail(what, r);
    sa_response_free(r);
    return rc;
}

static int remote_mkdir(ctl_t *ctl, const char *path, int parents, uint32_t mode, const char *what)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
    ctl_set_path(&md.path, &md.path_raw, path);
    md.parents = parents;
    md.mode = mode;
    md.user = (char *)g_user;
    req.op_case = OP(MKDIR);
    req.mkdir = &md;
    return fs_expect(ctl, &req, RES(ENTRY), what);
}

static int remote_symlink(ctl_t *ctl, const char *path, const char *target)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeSymlink ms = SANDBOX__AGENT__V1__MAKE_SYMLINK__INIT;
    ctl_set_path(&ms.path, &ms.path_raw, path);
    ctl_set_path(&ms.target, &ms.target_raw, target);
    ms.overwrite = 1;
    ms.user = (char *)g_user;
    req.op_case = OP(SYMLINK);
    req.symlink = &ms;
    return fs_expect(ctl, &req, RES(ENTRY), "cp");
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
    sa.user = (char *)g_user;
    req.op_case = OP(SET_ATTRIBUTES);
    req.set_attributes = &sa;
    return fs_expect(ctl, &req, RES(ENTRY), "cp");
}

/* ------------------------------------------------------------ progress */

typedef struct progress {
    int on;
    const char *name;
    uint64_t total, done;
    double t0, last;
} progress_t;

/* A tree's files get no bar each: a bar per file of a thousand is noise. */
static int g_progress_off;

static void progress_start(progress_t *p, const char *name, uint64_t total)
{
    p->on = isatty(2) && !g_progress_off;
    p->name = name;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = ctl_now();
}

static void progress_draw(progress_t *p, int final)
{
    double t = ctl_now();
    if (!p->on || (!final && t - p->last < 0.1))
        return;
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? (double)p->done / el : 0;
    char d[32], tot[32], r[32], eta[32] = "";
    ctl_human("B", (double)p->done, d, sizeof d);
    ctl_human("B", (double)p->total, tot, sizeof tot);
    ctl_human("B", rate, r, sizeof r);
    if (!final && rate > 0 && p->total > p->done) {
        unsigned s = (unsigned)((double)(p->total - p->done) / rate);
        snprintf(eta, sizeof eta, " ETA %u:%02u", s / 60, s % 60);
    }
    int pct = p->total ? (int)(p->done * 100 / p->total) : 100;
    int bar = pct / 5;
    fprintf(stderr, "\r%-24.24s [%.*s%*s] %3d%% %s/%s %s/s%s\033[K", p->name, bar,
            "####################", 20 - bar, "", pct, d, tot, r, eta);
    if (final)
        fputc('\n', stderr);
}

/* ------------------------------------------------------------ transfers */

typedef struct cp_opts {
    int recursive; /* -r, -R, -a */
    int follow;    /* -L: copy what links point to */
    int keep_time; /* -p, -a: modification times too (modes always) */
    int depth;
    dev_t anc_dev[MAX_DEPTH]; /* the directories being uploaded, for -L loops */
    ino_t anc_ino[MAX_DEPTH];
} cp_opts_t;

static cp_opts_t g_cp;

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

/* Upload the local file src (fd 0 for "-") to the agent's dst with mode.
 * 0, 1 when this file failed (said why), -1 when the connection did. */
static int upload_file(ctl_t *ctl, const char *src, const char *dst, uint32_t mode)
{
    int fd = strcmp(src, "-") ? open(src, O_RDONLY | O_CLOEXEC) : 0;
    struct stat st;
    size_t cs = sa_client_max_frame(ctl->cli) - 1024;
    uint8_t *buf = NULL;
    uint32_t crc = 0;
    uint64_t id = sa_client_next_id(ctl->cli), sent = 0;
    progress_t pr;
    Response *r = NULL;
    int rc = 1, first = 1;

    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", src, strerror(errno));
        goto out;
    }
    if (!(buf = malloc(cs))) {
        fprintf(stderr, "sandboxctl: cp: out of memory\n");
        goto out;
    }
    progress_start(&pr, src, S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0);
    for (;;) {
        size_t n = 0;
        while (n < cs) {
            ssize_t k = read(fd, buf + n, cs - n);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                fprintf(stderr, "sandboxctl: cp: reading %s: %s\n", src, strerror(errno));
                if (!first)
                    cancel_upload(ctl, id); /* nothing is left in place */
                goto out;
            }
            if (k == 0)
                break;
            n += (size_t)k;
        }
        int more = n == cs, e;
        Request req = REQUEST_INIT;
        req.id = id;
        if (first) {
            Sandbox__Agent__V1__WriteFile w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
            ctl_set_path(&w.path, &w.path_raw, dst);
            w.user = (char *)g_user;
            w.mode = mode & 0777 ? mode & 0777 : 0644; /* 0 is the default: set after */
            w.data.data = buf;
            w.data.len = n;
            w.more = more;
            req.op_case = OP(WRITE_FILE);
            req.write_file = &w;
            e = sa_client_send(ctl->cli, &req);
            first = 0;
        } else {
            Sandbox__Agent__V1__FileData d = SANDBOX__AGENT__V1__FILE_DATA__INIT;
            d.data.data = buf;
            d.data.len = n;
            d.more = more;
            req.op_case = OP(WRITE_DATA);
            req.write_data = &d;
            e = sa_client_send(ctl->cli, &req);
        }
        if (e < 0) {
            fprintf(stderr, "sandboxctl: cp: connection to the agent: %s\n", strerror(-e));
            rc = -1;
            goto out;
        }
        crc = libdeflate_crc32(crc, buf, (size_t)n);
        sent += n;
        pr.done = sent;
        if (pr.total < sent)
            pr.total = sent;
        progress_draw(&pr, 0);
        /* An error mid-upload is answered at once: stop sending. */
        if (more && sa_client_recv_id(ctl->cli, id, &r, 0) == 0)
            break;
        if (!more)
            break;
    }
    if (!r && sa_client_recv_id(ctl->cli, id, &r, -1) < 0) {
        fprintf(stderr, "sandboxctl: cp: connection to the agent lost\n");
        rc = -1;
        goto out;
    }
    if (r->result_case != RES(WRITTEN)) {
        if (pr.on)
            fputc('\n', stderr);
        ctl_fail("cp", r);
        goto out;
    }
    progress_draw(&pr, 1);
    if (r->written->bytes_written != sent || r->written->crc32 != crc) {
        fprintf(stderr, "sandboxctl: cp: %s: the agent wrote %llu bytes with crc32 %08x; sent "
                        "%llu with %08x\n",
                dst, (unsigned long long)r->written->bytes_written, r->written->crc32,
                (unsigned long long)sent, crc);
        goto out;
    }
    rc = 0;
    /* Modes the write does not set (none, set-id, sticky) and the time. */
    int m = (mode & 07777) != (mode & 0777) || !(mode & 0777) ? (int)(mode & 07777) : -1;
    int64_t t = g_cp.keep_time && strcmp(src, "-") ? nano_of(&st.st_mtim) : -1;
    if (m >= 0 || t >= 0)
        rc = remote_setattr(ctl, dst, m, t);
out:
    sa_response_free(r);
    free(buf);
    if (fd > 0)
        close(fd);
    return rc;
}

/* Download the agent's src into the local fd (a file or stdout). 0, 1 when
 * the agent refused or the data was wrong (said why), -1 when the
 * connection failed. */
static int download_fd(ctl_t *ctl, const char *src, int fd, const char *label, uint64_t size)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ReadFile rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    progress_t pr;
    uint32_t crc = 0;
    uint64_t got = 0;
    int werr = 0;
    ctl_set_path(&rf.path, &rf.path_raw, src);
    rf.user = (char *)g_user;
    req.id = sa_client_next_id(ctl->cli);
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    if (sa_client_send(ctl->cli, &req) < 0) {
        fprintf(stderr, "sandboxctl: %s: connection to the agent lost\n", label);
        return -1;
    }
    progress_start(&pr, src, size);
    if (fd == 1)
        pr.on = 0;
    for (;;) {
        Response *r = NULL;
        if (sa_client_recv_id(ctl->cli, req.id, &r, -1) < 0) {
            fprintf(stderr, "sandboxctl: %s: connection to the agent lost\n", label);
            return -1;
        }
        if (r->result_case == RES(CHUNK)) {
            const uint8_t *p = r->chunk->data.data;
            size_t n = r->chunk->data.len;
            crc = libdeflate_crc32(crc, p, (size_t)n);
            got += n;
            /* After a local write error the rest is read and dropped: the
             * connection stays usable for the next file. */
            while (n && !werr) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0) {
                    fprintf(stderr, "sandboxctl: %s: writing: %s\n", label, strerror(errno));
                    werr = 1;
                    break;
                }
                p += w;
                n -= (size_t)w;
            }
            sa_response_free(r);
            pr.done = got;
            progress_draw(&pr, 0);
            continue;
        }
        int rc = werr;
        if (r->result_case != RES(FILE_END)) {
            if (pr.on)
                fputc('\n', stderr);
            rc = ctl_fail(label, r);
        } else if (r->file_end->crc32 != crc || r->file_end->size != got) {
            fprintf(stderr, "sandboxctl: %s: %s: checksum mismatch (agent %08x, received %08x)\n",
                    label, src, r->file_end->crc32, crc);
            rc = 1;
        } else if (!werr) {
            pr.total = got;
            progress_draw(&pr, 1);
        }
        sa_response_free(r);
        return rc;
    }
}

/* What the copy needs of one entry on either side. */
typedef struct item {
    char *name;   /* bytes */
    char *target; /* a link's, bytes */
    int type;
    uint32_t mode;
    int64_t mtime;
    uint64_t size;
} item_t;

static void item_free(item_t *it)
{
    free(it->name);
    free(it->target);
}

static int item_of(item_t *it, const Entry *e)
{
    memset(it, 0, sizeof *it);
    it->name = ctl_name_bytes(e->name, &e->name_raw);
    it->target = ctl_name_bytes(e->symlink_target, &e->symlink_target_raw);
    it->type = e->type;
    it->mode = e->mode & 07777;
    it->mtime = e->mtime_unix_nano;
    it->size = e->size;
    return it->name && it->target ? 0 : -1;
}

static int download_file(ctl_t *ctl, const char *src, const char *dst, const item_t *it)
{
    if (!strcmp(dst, "-"))
        return download_fd(ctl, src, 1, "cp", it->size);
    /* Created private; its mode is set once it is complete. */
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", dst, strerror(errno));
        return 1;
    }
    int rc = download_fd(ctl, src, fd, "cp", it->size);
    if (!rc && fchmod(fd, it->mode) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: setting mode %04o: %s\n", dst, it->mode,
                strerror(errno));
        rc = 1;
    }
    if (!rc && g_cp.keep_time) {
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                 {.tv_sec = it->mtime / 1000000000,
                                  .tv_nsec = it->mtime % 1000000000}};
        if (futimens(fd, ts) < 0) {
            fprintf(stderr, "sandboxctl: cp: %s: setting its time: %s\n", dst, strerror(errno));
            rc = 1;
        }
    }
    if (close(fd) < 0 && !rc) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", dst, strerror(errno));
        rc = 1;
    }
    if (rc)
        unlink(dst);
    return rc;
}

static char *join(const char *a, const char *b)
{
    char *p = NULL;
    size_t la = strlen(a);
    if (asprintf(&p, "%s%s%s", a, la && a[la - 1] == '/' ? "" : "/", b) < 0)
        return NULL;
    return p;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    while (s && !s[1] && s > p) { /* "dir/" */
        const char *t = s - 1;
        while (t > p && *t != '/')
            t--;
        return *t == '/' ? t + 1 : t;
    }
    return s ? s + 1 : p;
}

/* Upload local to the agent's remote: a file, a tree (-r), a link as a
 * link (unless -L, or a file named on the command line without -r).
 * 0, 1 when something in it failed (said why; the rest was copied), -1
 * when the connection failed. */
static int upload_entry(ctl_t *ctl, const char *local, const char *remote, int top)
{
    struct stat st;
    int follow = g_cp.follow || (top && !g_cp.recursive);
    if (!strcmp(local, "-"))
        return upload_file(ctl, local, remote, 0644);
    if ((follow ? stat(local, &st) : lstat(local, &st)) < 0) {
        int e = errno;
        struct stat lst;
        fprintf(stderr, "sandboxctl: cp: %s: %s%s\n", local, strerror(e),
                e == ENOENT && lstat(local, &lst) == 0 ? " (a dangling symbolic link)" : "");
        return 1;
    }
    int t = local_type(st.st_mode), rc = 0;
    int64_t mtime = g_cp.keep_time ? nano_of(&st.st_mtim) : -1;
    if (t == T_FILE)
        return upload_file(ctl, local, remote, st.st_mode & 07777);
    if (t == T_LINK) {
        char target[PATH_MAX];
        ssize_t n = readlink(local, target, sizeof target - 1);
        if (n < 0) {
            fprintf(stderr, "sandboxctl: cp: %s: %s\n", local, strerror(errno));
            return 1;
        }
        target[n] = 0;
        if ((rc = remote_symlink(ctl, remote, target)) || mtime < 0)
            return rc;
        return remote_setattr(ctl, remote, -1, mtime);
    }
    if (t != T_DIR) {
        fprintf(stderr, "sandboxctl: cp: %s: %s; not copied (only files, directories and "
                        "links are)\n", local, type_words(t));
        return 1;
    }
    if (!g_cp.recursive) {
        fprintf(stderr, "sandboxctl: cp: %s is a directory (use -r)\n", local);
        return 1;
    }
    for (int i = 0; i < g_cp.depth; i++) {
        if (g_cp.anc_dev[i] == st.st_dev && g_cp.anc_ino[i] == st.st_ino) {
            fprintf(stderr, "sandboxctl: cp: %s: a link back to a directory being copied; "
                            "not followed\n", local);
            return 1;
        }
    }
    if (g_cp.depth == MAX_DEPTH) {
        fprintf(stderr, "sandboxctl: cp: %s: more than %d levels deep; not copied\n", local,
                MAX_DEPTH);
        return 1;
    }
    /* Writable by us while it fills; its own mode once it is complete. */
    if ((rc = remote_mkdir(ctl, remote, 1, (st.st_mode & 0777) | 0700, "cp")))
        return rc;
    DIR *d = opendir(local);
    if (!d) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", local, strerror(errno));
        return 1;
    }
    g_progress_off = 1;
    g_cp.anc_dev[g_cp.depth] = st.st_dev;
    g_cp.anc_ino[g_cp.depth++] = st.st_ino;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *s = join(local, de->d_name), *r = join(remote, de->d_name);
        int k = s && r ? upload_entry(ctl, s, r, 0) : -1;
        free(s);
        free(r);
        if (k < 0) {
            rc = -1;
            break;
        }
        rc |= k;
    }
    g_cp.depth--;
    closedir(d);
    if (rc < 0)
        return rc;
    int k = remote_setattr(ctl, remote, (int)(st.st_mode & 07777), mtime);
    return k < 0 ? k : rc | k;
}

/* List path to depth, calling each() for every entry. 0, 1 when the agent
 * refused (said why) or each() failed, -1 when the connection failed. */
static int remote_list(ctl_t *ctl, const char *path, unsigned depth, int hidden, const char *what,
                       int (*each)(ctl_t *, const Entry *, void *), void *arg)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ctl_set_path(&ld.path, &ld.path_raw, path);
    ld.depth = depth;
    ld.user = (char *)g_user;
    ld.include_hidden_opt_case = SANDBOX__AGENT__V1__LIST_DIRECTORY__INCLUDE_HIDDEN_OPT_INCLUDE_HIDDEN;
    ld.include_hidden = hidden;
    req.id = sa_client_next_id(ctl->cli);
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    if (sa_client_send(ctl->cli, &req) < 0) {
        fprintf(stderr, "sandboxctl: %s: connection to the agent lost\n", what);
        return -1;
    }
    int rc = 0;
    for (;;) {
        Response *r = NULL;
        if (sa_client_recv_id(ctl->cli, req.id, &r, -1) < 0) {
            fprintf(stderr, "sandboxctl: %s: connection to the agent lost\n", what);
            return -1;
        }
        if (r->result_case != RES(ENTRIES)) {
            rc = ctl_fail(what, r);
            int done = r->done;
            sa_response_free(r);
            if (done)
                return rc;
            continue;
        }
        for (size_t i = 0; i < r->entries->n_entries && !rc; i++)
            rc = each(ctl, r->entries->entries[i], arg);
        int done = r->done;
        sa_response_free(r);
        if (done)
            return rc;
    }
}

typedef struct kids {
    item_t *v;
    size_t n;
} kids_t;

/* Collected first, then copied: one request at a time on the connection. */
static int collect(ctl_t *ctl, const Entry *e, void *arg)
{
    kids_t *k = arg;
    item_t *v = realloc(k->v, (k->n + 1) * sizeof *v);
    if (!v)
        return 1;
    k->v = v;
    if (item_of(&v[k->n], e) < 0) {
        item_free(&v[k->n]);
        return 1;
    }
    k->n++;
    return 0;
}

static int set_local_attrs(const char *path, const item_t *it, int mode)
{
    if (mode && fchmodat(AT_FDCWD, path, it->mode, 0) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: setting mode %04o: %s\n", path, it->mode,
                strerror(errno));
        return 1;
    }
    if (g_cp.keep_time) {
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                 {.tv_sec = it->mtime / 1000000000,
                                  .tv_nsec = it->mtime % 1000000000}};
        if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0) {
            fprintf(stderr, "sandboxctl: cp: %s: setting its time: %s\n", path, strerror(errno));
            return 1;
        }
    }
    return 0;
}

/* Download the agent's remote (described by it, as listed) to local. The
 * same results as upload_entry. */
static int download_entry(ctl_t *ctl, const char *remote, const char *local, item_t *it)
{
    int rc = 0;
    if (it->type == T_LINK && g_cp.follow) {
        Response *r = remote_stat(ctl, remote, 1, "cp");
        if (!r)
            return -1;
        if (r->result_case != RES(ENTRY)) {
            ctl_fail("cp", r);
            sa_response_free(r);
            return 1;
        }
        it->type = r->entry->type;
        it->mode = r->entry->mode & 07777;
        it->mtime = r->entry->mtime_unix_nano;
        it->size = r->entry->size;
        sa_response_free(r);
    }
    if (it->type == T_FILE)
        return download_file(ctl, remote, local, it);
    if (it->type == T_LINK) {
        if (symlink(it->target, local) < 0 && errno == EEXIST) {
            struct stat st;
            if (lstat(local, &st) == 0 && !S_ISDIR(st.st_mode) && unlink(local) == 0 &&
                symlink(it->target, local) == 0)
                errno = 0;
            else
                errno = EEXIST;
        } else {
            errno = 0;
        }
        if (errno) {
            fprintf(stderr, "sandboxctl: cp: %s: %s\n", local, strerror(errno));
            return 1;
        }
        return set_local_attrs(local, it, 0);
    }
    if (it->type != T_DIR) {
        fprintf(stderr, "sandboxctl: cp: %s: %s; not copied (only files, directories and "
                        "links are)\n", remote, type_words(it->type));
        return 1;
    }
    if (!g_cp.recursive) {
        fprintf(stderr, "sandboxctl: cp: %s is a directory (use -r)\n", remote);
        return 1;
    }
    if (g_cp.depth == MAX_DEPTH) {
        fprintf(stderr, "sandboxctl: cp: %s: more than %d levels deep; not copied\n", remote,
                MAX_DEPTH);
        return 1;
    }
    struct stat st;
    if (mkdir(local, 0700) < 0 && !(errno == EEXIST && stat(local, &st) == 0 &&
                                    S_ISDIR(st.st_mode))) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", local, strerror(errno ? errno : EEXIST));
        return 1;
    }
    kids_t k = {NULL, 0};
    rc = remote_list(ctl, remote, 1, 1, "cp", collect, &k);
    g_progress_off = 1;
    g_cp.depth++;
    for (size_t i = 0; i < k.n; i++) {
        if (rc >= 0) {
            char *r = join(remote, k.v[i].name), *l = join(local, k.v[i].name);
            int x = r && l ? download_entry(ctl, r, l, &k.v[i]) : 1;
            rc = x < 0 ? x : rc | x;
            free(r);
            free(l);
        }
        item_free(&k.v[i]);
    }
    g_cp.depth--;
    free(k.v);
    if (rc < 0)
        return rc;
    return rc | set_local_attrs(local, it, 1);
}

/* One source to the destination dst (an existing directory when dst_dir:
 * the source goes inside it). The same results as upload_entry. */
static int cp_one(ctl_t *ctl, const char *src, const char *dst, int dst_dir)
{
    int rc;
    char *target = NULL;
    if (src[0] != ':') { /* upload */
        const char *rdst = rpath(dst);
        if (dst_dir && strcmp(src, "-") && !(target = join(rdst, base_name(src))))
            return -1;
        rc = upload_entry(ctl, src, target ? target : rdst, 1);
        free(target);
        return rc;
    }
    /* download */
    const char *rsrc = rpath(src);
    Response *r = remote_stat(ctl, rsrc, g_cp.follow || !g_cp.recursive, "cp");
    if (!r)
        return -1;
    if (r->result_case != RES(ENTRY)) {
        rc = ctl_fail("cp", r);
        sa_response_free(r);
        return rc;
    }
    item_t it;
    if (item_of(&it, r->entry) < 0) {
        sa_response_free(r);
        item_free(&it);
        fprintf(stderr, "sandboxctl: cp: out of memory\n");
        return -1;
    }
    sa_response_free(r);
    if (dst_dir && !(target = join(dst, base_name(rsrc)))) {
        item_free(&it);
        return -1;
    }
    rc = download_entry(ctl, rsrc, target ? target : dst, &it);
    item_free(&it);
    free(target);
    return rc;
}

static int cmd_cp(ctl_t *ctl, int argc, char **argv)
{
    int c;
    int z = 0;
    memset(&g_cp, 0, sizeof g_cp);
    optind = 1;
    opterr = 0;
    while ((c = getopt(argc, argv, "+rRLpaPzu:")) != -1) {
        switch (c) {
        case 'r':
        case 'R': g_cp.recursive = 1; break;
        case 'L': g_cp.follow = 1; break;
        case 'P': g_cp.follow = 0; break;
        case 'p': g_cp.keep_time = 1; break;
        case 'a': g_cp.recursive = g_cp.keep_time = 1; g_cp.follow = 0; break;
        case 'z': z = 1; break;
        case 'u': g_user = optarg; break;
        default:
            return optopt == 'u' ? ctl_usage_error(ctl, "-u needs a user")
                                 : ctl_usage_error(ctl, "unknown option '-%c'", optopt);
        }
    }
    int n = argc - optind;
    if (n < 2)
        return ctl_usage_error(ctl, "needs a source and a destination (got %d argument%s)", n,
                               n == 1 ? "" : "s");
    char **srcs = argv + optind;
    const char *dst = argv[argc - 1];
    int up = dst[0] == ':';
    for (int i = 0; i < n - 1; i++)
        if ((srcs[i][0] == ':') == up)
            return ctl_usage_error(ctl, "'%s': the sources are on one side and the destination "
                                        "on the other; the agent's side starts with ':'",
                                   srcs[i]);
    if (ctl_connect_z(ctl, z) < 0)
        return 1;
    /* An existing directory receives the sources inside it; several sources
     * need one. */
    int dst_dir = 0;
    if (up) {
        Response *r = remote_stat(ctl, rpath(dst), 1, "cp");
        if (!r)
            return 1;
        dst_dir = r->result_case == RES(ENTRY) && r->entry->type == T_DIR;
        sa_response_free(r);
    } else {
        struct stat st;
        dst_dir = strcmp(dst, "-") && stat(dst, &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (n > 2 && !dst_dir) {
        fprintf(stderr, "sandboxctl: cp: %s is not a directory (needed for %d sources)\n", dst,
                n - 1);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n - 1; i++) {
        int k = cp_one(ctl, srcs[i], dst, dst_dir);
        if (k < 0)
            return 1;
        rc |= k;
    }
    return rc ? 1 : 0;
}

/* Parse the options every file command shares (-u USER) plus its own into
 * seen[]. Returns the index of the first operand, or -1 after a usage
 * error (its exit status in *rc). */
static int opts(ctl_t *ctl, int argc, char **argv, const char *own, char *seen, int *rc)
{
    char spec[32];
    int c;
    snprintf(spec, sizeof spec, "+u:%s", own);
    optind = 1;
    opterr = 0;
    memset(seen, 0, 128);
    while ((c = getopt(argc, argv, spec)) != -1) {
        if (c == '?') {
            *rc = optopt == 'u' ? ctl_usage_error(ctl, "-u needs a user")
                                : ctl_usage_error(ctl, "unknown option '-%c'", optopt);
            return -1;
        }
        if (c == 'u')
            g_user = optarg;
        else
            seen[c & 127] = 1;
    }
    return optind;
}

/* The start every file command shares: its options, between min and max
 * operands (max < 0: no bound; else the usage error says `need`), then the
 * connection (compressed unless the command has a -z to ask for it).
 * Returns the first operand's index, or -1 with *rc the exit status. */
static int fs_begin(ctl_t *ctl, int argc, char **argv, const char *own, char *seen, int min,
                    int max, const char *need, int *rc)
{
    int i = opts(ctl, argc, argv, own, seen, rc);
    if (i < 0)
        return -1;
    if (argc - i < min || (max >= 0 && argc - i > max)) {
        *rc = ctl_usage_error(ctl, "%s", need);
        return -1;
    }
    if (ctl_connect_z(ctl, strchr(own, 'z') ? seen['z'] : 1) < 0) {
        *rc = 1;
        return -1;
    }
    return i;
}

static int cmd_cat(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "z", o, 1, -1, "needs a path", &rc);
    if (i < 0)
        return rc;
    /* As cat: a file that cannot be read is reported, the others printed. */
    for (; i < argc; i++) {
        int k = download_fd(ctl, rpath(argv[i]), 1, "cat", 0);
        if (k < 0)
            return 1;
        rc |= k;
    }
    return rc;
}

static void mode_string(const Entry *e, char *out)
{
    const char *rwx = "rwxrwxrwx";
    switch (e->type) {
    case T_FILE: out[0] = '-'; break;
    case T_DIR: out[0] = 'd'; break;
    case T_LINK: out[0] = 'l'; break;
    case T_FIFO: out[0] = 'p'; break;
    case T_SOCK: out[0] = 's'; break;
    case T_CHR: out[0] = 'c'; break;
    case T_BLK: out[0] = 'b'; break;
    default: out[0] = '?';
    }
    for (int i = 0; i < 9; i++)
        out[i + 1] = (e->mode & (1u << (8 - i))) ? rwx[i] : '-';
    if (e->mode & 04000)
        out[3] = out[3] == 'x' ? 's' : 'S';
    if (e->mode & 02000)
        out[6] = out[6] == 'x' ? 's' : 'S';
    if (e->mode & 01000)
        out[9] = out[9] == 'x' ? 't' : 'T';
    out[10] = 0;
}

static void print_json_entry(const Entry *e)
{
    putchar('{');
    ctl_json_name("name", e->name, &e->name_raw);
    putchar(',');
    ctl_json_name("path", e->path, &e->path_raw);
    printf(",\"type\":\"%s\",\"size\":%llu,\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u,\"owner\":",
           type_name(e->type), (unsigned long long)e->size, e->mode, e->uid, e->gid);
    ctl_json_string(e->owner);
    printf(",\"group\":");
    ctl_json_string(e->group);
    printf(",\"mtime_unix_nano\":%lld,\"nlink\":%llu,\"inode\":%llu",
           (long long)e->mtime_unix_nano, (unsigned long long)e->nlink,
           (unsigned long long)e->inode);
    if (e->type == T_LINK) {
        putchar(',');
        ctl_json_name("symlink_target", e->symlink_target, &e->symlink_target_raw);
    }
    if (e->type == T_CHR || e->type == T_BLK)
        printf(",\"rdev_major\":%u,\"rdev_minor\":%u", e->rdev_major, e->rdev_minor);
    printf("}\n");
}

static void fput_bytes(const char *s, const ProtobufCBinaryData *raw)
{
    if (raw && raw->len)
        fwrite(raw->data, 1, raw->len, stdout);
    else
        fputs(s ? s : "", stdout);
}

/* One entry; name: what to call it (bytes), NULL for its own name. */
static void print_entry(ctl_t *ctl, const Entry *e, int lng, const char *name)
{
    if (ctl->json) {
        print_json_entry(e);
        return;
    }
    if (lng) {
        char m[12], when[32], size[48];
        time_t t = (time_t)(e->mtime_unix_nano / 1000000000);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
        mode_string(e, m);
        if (e->type == T_CHR || e->type == T_BLK)
            snprintf(size, sizeof size, "%u, %u", e->rdev_major, e->rdev_minor);
        else
            snprintf(size, sizeof size, "%llu", (unsigned long long)e->size);
        printf("%s %3llu %-8s %-8s %10s %s ", m, (unsigned long long)e->nlink, e->owner,
               e->group, size, when);
    }
    if (name)
        fputs(name, stdout);
    else
        fput_bytes(e->name, &e->name_raw);
    if (lng && e->type == T_LINK) {
        fputs(" -> ", stdout);
        fput_bytes(e->symlink_target, &e->symlink_target_raw);
    } else if (!lng && e->type == T_DIR) {
        putchar('/');
    }
    putchar('\n');
}

typedef struct ls_ctx {
    int lng, rec;
    size_t strip; /* the listed directory's path, left out of -R names */
} ls_ctx_t;

static int ls_each(ctl_t *ctl, const Entry *e, void *arg)
{
    ls_ctx_t *x = arg;
    if (!x->rec) {
        print_entry(ctl, e, x->lng, NULL);
        return 0;
    }
    char *p = ctl_name_bytes(e->path, &e->path_raw);
    if (!p)
        return 1;
    const char *name = strlen(p) >= x->strip ? p + x->strip : p;
    while (*name == '/')
        name++;
    print_entry(ctl, e, x->lng, name);
    free(p);
    return 0;
}

static int cmd_ls(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "lRadLz", o, 0, -1, "", &rc);
    if (i < 0)
        return rc;
    /* As ls: a link named on the command line is followed unless -l or -d
     * shows the link itself (-L follows it anyway). */
    int follow = o['L'] || (!o['l'] && !o['d']);
    int n = argc - i;
    for (int k = 0; k < (n ? n : 1); k++) {
        const char *path = n ? rpath(argv[i + k]) : "."; /* "." is the user's home */
        Response *r = remote_stat(ctl, path, follow, "ls");
        if (!r)
            return 1;
        if (r->result_case != RES(ENTRY)) {
            rc |= ctl_fail("ls", r);
            sa_response_free(r);
            continue;
        }
        if (r->entry->type != T_DIR || o['d']) {
            print_entry(ctl, r->entry, o['l'], path);
            sa_response_free(r);
            continue;
        }
        char *base = ctl_name_bytes(r->entry->path, &r->entry->path_raw);
        sa_response_free(r);
        if (!base)
            return 1;
        if (n > 1 && !ctl->json)
            printf("%s%s:\n", k ? "\n" : "", path);
        ls_ctx_t x = {o['l'], o['R'], strlen(base)};
        free(base);
        int e = remote_list(ctl, path, o['R'] ? 0xffffffffu : 1, o['a'], "ls", ls_each, &x);
        if (e < 0)
            return 1;
        rc |= e;
    }
    return rc;
}

static int cmd_stat(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "L", o, 1, -1, "needs a path", &rc);
    if (i < 0)
        return rc;
    for (; i < argc; i++) {
        Response *r = remote_stat(ctl, rpath(argv[i]), o['L'], "stat");
        if (!r)
            return 1;
        if (r->result_case != RES(ENTRY)) {
            rc |= ctl_fail("stat", r);
            sa_response_free(r);
            continue;
        }
        const Entry *e = r->entry;
        if (ctl->json) {
            print_json_entry(e);
        } else {
            char m[12], when[40];
            time_t t = (time_t)(e->mtime_unix_nano / 1000000000);
            struct tm tm;
            mode_string(e, m);
            localtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            fputs("  Path: ", stdout);
            fput_bytes(e->path, &e->path_raw);
            if (e->type == T_LINK) {
                fputs(" -> ", stdout);
                fput_bytes(e->symlink_target, &e->symlink_target_raw);
            }
            printf("\n  Type: %s", type_words(e->type) + 2);
            if (e->type == T_CHR || e->type == T_BLK)
                printf(" %u, %u", e->rdev_major, e->rdev_minor);
            printf("\n  Size: %llu\n  Mode: %04o (%s)\n Owner: %s (%u)\n Group: %s (%u)\n"
                   " Links: %llu\n Inode: %llu\n Mtime: %s.%09lld\n",
                   (unsigned long long)e->size, e->mode, m, e->owner, e->uid, e->group, e->gid,
                   (unsigned long long)e->nlink, (unsigned long long)e->inode, when,
                   (long long)(e->mtime_unix_nano % 1000000000));
        }
        sa_response_free(r);
    }
    return rc;
}

static int cmd_mkdir(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "p", o, 1, -1, "needs a path", &rc);
    if (i < 0)
        return rc;
    for (; i < argc; i++) {
        int k = remote_mkdir(ctl, rpath(argv[i]), o['p'], 0, "mkdir");
        if (k < 0)
            return 1;
        rc |= k;
    }
    return rc;
}

static int cmd_rm(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = opts(ctl, argc, argv, "rRf", o, &rc);
    if (i < 0)
        return rc;
    if (i >= argc)
        return o['f'] ? 0 : ctl_usage_error(ctl, "needs a path");
    if (ctl_connect_z(ctl, 1) < 0)
        return 1;
    for (; i < argc; i++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Remove rm = SANDBOX__AGENT__V1__REMOVE__INIT;
        ctl_set_path(&rm.path, &rm.path_raw, rpath(argv[i]));
        rm.recursive = o['r'] || o['R'];
        rm.user = (char *)g_user;
        req.op_case = OP(REMOVE);
        req.remove = &rm;
        Response *r = fs_call(ctl, &req, "rm");
        if (!r)
            return 1;
        if (r->result_case != RES(ACK) &&
            !(o['f'] && r->result_case == RES(ERROR) && r->error->code == CODE(NOT_FOUND)))
            rc |= ctl_fail("rm", r);
        sa_response_free(r);
    }
    return rc;
}

static int cmd_mv(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "np", o, 2, 2, "needs a source and a destination", &rc);
    if (i < 0)
        return rc;
    const char *src = rpath(argv[i]), *dst = rpath(argv[i + 1]);
    char *target = NULL;
    Response *r = remote_stat(ctl, dst, 1, "mv");
    if (!r)
        return 1;
    if (r->result_case == RES(ENTRY) && r->entry->type == T_DIR)
        target = join(dst, base_name(src));
    sa_response_free(r);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Rename rn = SANDBOX__AGENT__V1__RENAME__INIT;
    ctl_set_path(&rn.source, &rn.source_raw, src);
    ctl_set_path(&rn.destination, &rn.destination_raw, target ? target : dst);
    rn.overwrite = !o['n'];
    rn.make_parents = o['p'];
    rn.user = (char *)g_user;
    req.op_case = OP(RENAME);
    req.rename = &rn;
    r = fs_call(ctl, &req, "mv");
    free(target);
    if (!r)
        return 1;
    rc = r->result_case == RES(ENTRY) ? 0 : ctl_fail("mv", r);
    sa_response_free(r);
    return rc;
}

static int cmd_watch(ctl_t *ctl, int argc, char **argv)
{
    static const char *kinds[] = {"?", "CREATE", "MODIFY", "DELETE", "RENAME", "ATTRIB",
                                  "OVERFLOW"};
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "r", o, 1, 1, "needs one path", &rc);
    if (i < 0)
        return rc;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchPath wp = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    ctl_set_path(&wp.path, &wp.path_raw, rpath(argv[i]));
    wp.recursive = o['r'];
    wp.user = (char *)g_user;
    req.id = sa_client_next_id(ctl->cli);
    req.op_case = OP(WATCH);
    req.watch = &wp;
    if (sa_client_send(ctl->cli, &req) < 0)
        return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        Response *r = NULL;
        if (sa_client_recv_id(ctl->cli, req.id, &r, -1) < 0) {
            fprintf(stderr, "sandboxctl: watch: connection to the agent lost\n");
            return 1;
        }
        if (r->result_case != RES(FS_EVENT)) {
            rc = ctl_fail("watch", r);
            sa_response_free(r);
            return rc;
        }
        const FsEvent *e = r->fs_event;
        const char *k = e->kind < sizeof kinds / sizeof kinds[0] ? kinds[e->kind] : "?";
        int has_old = (e->old_path && e->old_path[0]) || e->old_path_raw.len;
        if (ctl->json) {
            printf("{\"kind\":\"%s\",", k);
            ctl_json_name("path", e->path, &e->path_raw);
            if (has_old) {
                putchar(',');
                ctl_json_name("old_path", e->old_path, &e->old_path_raw);
            }
            if (e->entry)
                printf(",\"type\":\"%s\"", type_name(e->entry->type));
            printf("}\n");
        } else {
            printf("%-8s ", k);
            if (has_old) {
                fput_bytes(e->old_path, &e->old_path_raw);
                fputs(" -> ", stdout);
            }
            fput_bytes(e->path, &e->path_raw);
            putchar('\n');
        }
        sa_response_free(r);
    }
}

const ctl_cmd_t ctl_cmds_fs[] = {
    {"cp", cmd_cp, "[-r] [-a] [-p] [-L] [-z] [-u USER] SRC... DST",
     "copy a file or (-r) a tree to or from the agent; ':' marks the agent's side",
     "  The agent's side starts with ':' (as with scp): the sources, or the destination.\n"
     "  An existing directory as DST receives the sources inside it (several sources\n"
     "  need one). '-' as SRC uploads stdin, as DST prints a downloaded file.\n"
     "\n"
     "  -r, -R    copy directories and what is in them\n"
     "  -a        archive: -r -p, links kept as links\n"
     "  -p        keep modification times too (modes are always kept)\n"
     "  -L        copy what symbolic links point to instead of the links\n"
     "  -P        copy links as links (the default with -r; a file named without -r\n"
     "            is followed, as cp does)\n"
     "  -z        compress the data on the wire (worth it only on a slow link)\n"
     "  -u USER   act as USER on the agent\n"
     "\n"
     "  A name that is not UTF-8 is copied as its exact bytes. An entry that cannot be\n"
     "  copied (unreadable, a dangling link with -L, a device, fifo or socket) is\n"
     "  reported and the copy carries on; the exit status is then 1.\n"},
    {"cat", cmd_cat, "[-z] [-u USER] PATH...", "print files of the agent",
     "  A file that cannot be read is reported and the others are printed (exit 1).\n"},
    {"ls", cmd_ls, "[-l] [-a] [-R] [-d] [-L] [-u USER] [PATH...]", "list a directory of the agent",
     "  Without PATH: the user's home directory.\n"
     "\n"
     "  -l        long: type and mode, links, owner, group, size (major, minor for\n"
     "            devices), time, name; a link as 'l ... NAME -> TARGET'\n"
     "  -a        entries whose names start with '.' too\n"
     "  -R        recursively\n"
     "  -d        a directory itself, not what it holds\n"
     "  -L        follow symbolic links (with -l a link named on the command line is\n"
     "            shown as a link unless -L)\n"
     "  -u USER   as USER (permissions are checked as theirs)\n"},
    {"stat", cmd_stat, "[-L] [-u USER] PATH...", "show a path's type, size, mode, owner",
     "  -L        follow a symbolic link\n"
     "  -u USER   as USER\n"},
    {"mkdir", cmd_mkdir, "[-p] [-u USER] PATH...", "make directories",
     "  -p        make the parents too; an existing directory is not an error\n"
     "  -u USER   as USER (the directories belong to them)\n"},
    {"rm", cmd_rm, "[-r] [-f] [-u USER] PATH...", "remove files or (-r) trees",
     "  -r, -R    remove directories and what is in them (links are not followed)\n"
     "  -f        a path that does not exist is not an error\n"
     "  -u USER   as USER\n"},
    {"mv", cmd_mv, "[-n] [-p] [-u USER] SRC DST", "rename or move",
     "  Into DST when it is a directory.\n"
     "  -n        do not replace an existing DST\n"
     "  -p        make DST's parent directories\n"
     "  -u USER   as USER\n"},
    {"watch", cmd_watch, "[-r] [-u USER] PATH", "print changes under a path until interrupted",
     "  One line per change: CREATE, MODIFY, DELETE, RENAME (OLD -> NEW), ATTRIB, or\n"
     "  OVERFLOW (the kernel dropped events: look again).\n"
     "  -r        subdirectories too\n"
     "  -u USER   as USER\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
