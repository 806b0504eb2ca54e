/* ctl_fs.c - sandboxctl's file commands: cp (":" marks the agent's side, as
 * with scp), cat, ls, stat, mkdir, rm, mv, watch. Every transfer is
 * checked against the agent's crc32. */
#include "ctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>

typedef Sandbox__Agent__V1__FileType FileType;
#define T_DIR SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY
#define T_LINK SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK
#define T_FILE SANDBOX__AGENT__V1__FILE_TYPE__FILE

static const char *g_user = ""; /* -u: act as this user on the agent */

/* Like ctl_connect, with the choice of compression: file data is mostly
 * incompressible, and compressing it costs the agent more than the bytes
 * it saves on a local transport (-z turns it on). */
static int fs_connect(ctl_t *ctl, int zlib)
{
    char err[512];
    ctl->cli = sa_client_connect(ctl->addr, err, sizeof err);
    if (!ctl->cli) {
        fprintf(stderr, "sandboxctl: %s\n", err);
        return -1;
    }
    if (sa_client_hello(ctl->cli, ctl->token, "sandboxctl", zlib, err, sizeof err) < 0) {
        fprintf(stderr, "sandboxctl: %s\n", err);
        sa_client_close(ctl->cli);
        ctl->cli = NULL;
        return -1;
    }
    return 0;
}

static const char *rpath(const char *s) { return s[0] == ':' ? s + 1 : s; }

static Response *fs_call(ctl_t *ctl, Request *req, const char *what)
{
    Response *r = NULL;
    int rc = sa_client_call(ctl->cli, req, &r, -1);
    if (rc < 0) {
        fprintf(stderr, "sandboxctl: %s: %s\n", what, strerror(-rc));
        return NULL;
    }
    return r;
}

static Response *remote_stat(ctl_t *ctl, const char *path, int follow)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    st.path = (char *)path;
    st.follow_symlinks = follow;
    st.user = (char *)g_user;
    req.op_case = OP(STAT);
    req.stat = &st;
    return fs_call(ctl, &req, "stat");
}

/* ------------------------------------------------------------ progress */

typedef struct progress {
    int on;
    const char *name;
    uint64_t total, done;
    double t0, last;
} progress_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void human(double b, char *out, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void progress_start(progress_t *p, const char *name, uint64_t total)
{
    p->on = isatty(2);
    p->name = name;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = now_s();
}

static void progress_draw(progress_t *p, int final)
{
    double t = now_s();
    if (!p->on || (!final && t - p->last < 0.1))
        return;
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? (double)p->done / el : 0;
    char d[32], tot[32], r[32], eta[32] = "";
    human((double)p->done, d, sizeof d);
    human((double)p->total, tot, sizeof tot);
    human(rate, r, sizeof r);
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

/* Upload the local file src to the agent's dst. */
static int upload_file(ctl_t *ctl, const char *src, const char *dst)
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
                goto out; /* the connection closes: the agent drops the upload */
            }
            if (k == 0)
                break;
            n += (size_t)k;
        }
        int more = n == cs;
        Request req = REQUEST_INIT;
        req.id = id;
        if (first) {
            Sandbox__Agent__V1__WriteFile *w = malloc(sizeof *w);
            sandbox__agent__v1__write_file__init(w);
            w->path = (char *)dst;
            w->user = (char *)g_user;
            w->mode = S_ISREG(st.st_mode) ? (st.st_mode & 0777) : 0644;
            w->data.data = buf;
            w->data.len = n;
            w->more = more;
            req.op_case = OP(WRITE_FILE);
            req.write_file = w;
            int e = sa_client_send(ctl->cli, &req);
            free(w);
            if (e < 0) {
                fprintf(stderr, "sandboxctl: cp: %s\n", strerror(-e));
                goto out;
            }
            first = 0;
        } else {
            Sandbox__Agent__V1__FileData d = SANDBOX__AGENT__V1__FILE_DATA__INIT;
            d.data.data = buf;
            d.data.len = n;
            d.more = more;
            req.op_case = OP(WRITE_DATA);
            req.write_data = &d;
            int e = sa_client_send(ctl->cli, &req);
            if (e < 0) {
                fprintf(stderr, "sandboxctl: cp: %s\n", strerror(-e));
                goto out;
            }
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
        fprintf(stderr, "sandboxctl: cp: connection lost\n");
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
out:
    sa_response_free(r);
    free(buf);
    if (fd > 0)
        close(fd);
    return rc;
}

/* Download the agent's src into the local fd (a file or stdout). */
static int download_fd(ctl_t *ctl, const char *src, int fd, const char *label, uint64_t size)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ReadFile rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    progress_t pr;
    uint32_t crc = 0;
    uint64_t got = 0;
    rf.path = (char *)src;
    rf.user = (char *)g_user;
    req.id = sa_client_next_id(ctl->cli);
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    if (sa_client_send(ctl->cli, &req) < 0) {
        fprintf(stderr, "sandboxctl: %s: send failed\n", label);
        return 1;
    }
    progress_start(&pr, src, size);
    if (fd == 1)
        pr.on = 0;
    for (;;) {
        Response *r = NULL;
        if (sa_client_recv_id(ctl->cli, req.id, &r, -1) < 0) {
            fprintf(stderr, "sandboxctl: %s: connection lost\n", label);
            return 1;
        }
        if (r->result_case == RES(CHUNK)) {
            const uint8_t *p = r->chunk->data.data;
            size_t n = r->chunk->data.len;
            crc = libdeflate_crc32(crc, p, (size_t)n);
            got += n;
            while (n) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0) {
                    fprintf(stderr, "sandboxctl: %s: writing: %s\n", label, strerror(errno));
                    sa_response_free(r);
                    return 1;
                }
                p += w;
                n -= (size_t)w;
            }
            sa_response_free(r);
            pr.done = got;
            progress_draw(&pr, 0);
            continue;
        }
        int rc = 0;
        if (r->result_case != RES(FILE_END)) {
            if (pr.on)
                fputc('\n', stderr);
            rc = ctl_fail(label, r);
        } else if (r->file_end->crc32 != crc || r->file_end->size != got) {
            fprintf(stderr, "sandboxctl: %s: %s: checksum mismatch (agent %08x, received %08x)\n",
                    label, src, r->file_end->crc32, crc);
            rc = 1;
        } else {
            pr.total = got;
            progress_draw(&pr, 1);
        }
        sa_response_free(r);
        return rc;
    }
}

static int download_file(ctl_t *ctl, const char *src, const char *dst, uint64_t size,
                         uint32_t mode)
{
    if (!strcmp(dst, "-"))
        return download_fd(ctl, src, 1, "cp", size);
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode ? mode : 0644);
    if (fd < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", dst, strerror(errno));
        return 1;
    }
    int rc = download_fd(ctl, src, fd, "cp", size);
    if (close(fd) < 0 && !rc) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", dst, strerror(errno));
        rc = 1;
    }
    if (rc)
        unlink(dst);
    return rc;
}

static int remote_mkdir(ctl_t *ctl, const char *path, int parents, uint32_t mode)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
    md.path = (char *)path;
    md.parents = parents;
    md.mode = mode;
    md.user = (char *)g_user;
    req.op_case = OP(MKDIR);
    req.mkdir = &md;
    Response *r = fs_call(ctl, &req, "mkdir");
    if (!r)
        return 1;
    int rc = r->result_case == RES(ENTRY) ? 0 : ctl_fail("mkdir", r);
    sa_response_free(r);
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

static int upload_tree(ctl_t *ctl, const char *src, const char *dst)
{
    struct stat st;
    if (stat(src, &st) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", src, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return upload_file(ctl, src, dst);
    if (remote_mkdir(ctl, dst, 1, st.st_mode & 0777))
        return 1;
    DIR *d = opendir(src);
    if (!d) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", src, strerror(errno));
        return 1;
    }
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *s = join(src, de->d_name), *t = join(dst, de->d_name);
        rc = s && t ? upload_tree(ctl, s, t) : 1;
        free(s);
        free(t);
    }
    closedir(d);
    return rc;
}

/* List path to depth, calling each() for every entry. */
static int remote_list(ctl_t *ctl, const char *path, unsigned depth, int hidden,
                       int (*each)(ctl_t *, const Entry *, void *), void *arg)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = (char *)path;
    ld.depth = depth;
    ld.user = (char *)g_user;
    ld.include_hidden_opt_case = SANDBOX__AGENT__V1__LIST_DIRECTORY__INCLUDE_HIDDEN_OPT_INCLUDE_HIDDEN;
    ld.include_hidden = hidden;
    req.id = sa_client_next_id(ctl->cli);
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    if (sa_client_send(ctl->cli, &req) < 0)
        return 1;
    for (;;) {
        Response *r = NULL;
        if (sa_client_recv_id(ctl->cli, req.id, &r, -1) < 0) {
            fprintf(stderr, "sandboxctl: ls: connection lost\n");
            return 1;
        }
        if (r->result_case != RES(ENTRIES)) {
            int rc = ctl_fail("ls", r);
            sa_response_free(r);
            return rc;
        }
        int rc = 0;
        for (size_t i = 0; i < r->entries->n_entries && !rc; i++)
            rc = each(ctl, r->entries->entries[i], arg);
        int done = r->done;
        sa_response_free(r);
        if (rc || done)
            return rc;
    }
}

typedef struct dl_ctx {
    const char *src, *dst;
    char **dirs;   /* collected first: one request at a time on the connection */
    char **files;
    uint64_t *sizes;
    size_t nd, nf;
} dl_ctx_t;

static int collect(ctl_t *ctl, const Entry *e, void *arg)
{
    dl_ctx_t *x = arg;
    const char *rel = e->path + strlen(x->src);
    (void)ctl;
    while (*rel == '/')
        rel++;
    char *local = join(x->dst, rel);
    if (!local)
        return 1;
    if (e->type == T_DIR) {
        x->dirs = realloc(x->dirs, (x->nd + 1) * sizeof *x->dirs);
        x->dirs[x->nd++] = local;
    } else if (e->type == T_FILE) {
        x->files = realloc(x->files, (x->nf + 1) * 2 * sizeof *x->files);
        x->sizes = realloc(x->sizes, (x->nf + 1) * sizeof *x->sizes);
        x->files[2 * x->nf] = local;
        x->files[2 * x->nf + 1] = strdup(e->path);
        x->sizes[x->nf++] = e->size;
    } else {
        fprintf(stderr, "sandboxctl: cp: skipping %s (not a file or directory)\n", e->path);
        free(local);
    }
    return 0;
}

static int download_tree(ctl_t *ctl, const char *src, const char *dst)
{
    dl_ctx_t x = {src, dst, NULL, NULL, NULL, 0, 0};
    int rc = 0;
    if (mkdir(dst, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", dst, strerror(errno));
        return 1;
    }
    rc = remote_list(ctl, src, 4096, 1, collect, &x);
    for (size_t i = 0; i < x.nd; i++) {
        if (!rc && mkdir(x.dirs[i], 0755) < 0 && errno != EEXIST) {
            fprintf(stderr, "sandboxctl: cp: %s: %s\n", x.dirs[i], strerror(errno));
            rc = 1;
        }
        free(x.dirs[i]);
    }
    for (size_t i = 0; i < x.nf; i++) {
        if (!rc)
            rc = download_file(ctl, x.files[2 * i + 1], x.files[2 * i], x.sizes[i], 0);
        free(x.files[2 * i]);
        free(x.files[2 * i + 1]);
    }
    free(x.dirs);
    free(x.files);
    free(x.sizes);
    return rc;
}

/* Parse the options every file command shares (-u USER) plus its own. */
static int opts(int argc, char **argv, const char *own, char *seen)
{
    char spec[32];
    int c;
    snprintf(spec, sizeof spec, "+u:%s", own);
    optind = 1;
    opterr = 1;
    memset(seen, 0, 128);
    while ((c = getopt(argc, argv, spec)) != -1) {
        if (c == '?')
            return -1;
        if (c == 'u')
            g_user = optarg;
        else
            seen[c & 127] = 1;
    }
    return optind;
}

static int cmd_cp(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "rz", o);
    if (i < 0 || argc - i != 2 || (argv[i][0] == ':') == (argv[i + 1][0] == ':')) {
        fprintf(stderr, "usage: sandboxctl cp [-r] [-z] [-u USER] LOCAL :REMOTE | :REMOTE LOCAL\n"
                        "  (exactly one side starts with ':', the agent's side)\n");
        return 2;
    }
    const char *src = argv[i], *dst = argv[i + 1];
    if (fs_connect(ctl, o['z']) < 0)
        return 1;
    int rc;
    if (src[0] != ':') { /* upload */
        struct stat st;
        char *target = NULL;
        const char *rdst = rpath(dst);
        if (strcmp(src, "-") && stat(src, &st) < 0) {
            fprintf(stderr, "sandboxctl: cp: %s: %s\n", src, strerror(errno));
            return 1;
        }
        if (strcmp(src, "-") && S_ISDIR(st.st_mode) && !o['r']) {
            fprintf(stderr, "sandboxctl: cp: %s is a directory (use -r)\n", src);
            return 1;
        }
        Response *r = remote_stat(ctl, rdst, 1);
        if (r && r->result_case == RES(ENTRY) && r->entry->type == T_DIR && strcmp(src, "-"))
            target = join(rdst, base_name(src));
        sa_response_free(r);
        rc = o['r'] ? upload_tree(ctl, src, target ? target : rdst)
                    : upload_file(ctl, src, target ? target : rdst);
        free(target);
        return rc;
    }
    /* download */
    const char *rsrc = rpath(src);
    Response *r = remote_stat(ctl, rsrc, 1);
    if (!r)
        return 1;
    if (r->result_case != RES(ENTRY)) {
        rc = ctl_fail("cp", r);
        sa_response_free(r);
        return rc;
    }
    int isdir = r->entry->type == T_DIR;
    uint64_t size = r->entry->size;
    uint32_t mode = r->entry->mode & 0777;
    sa_response_free(r);
    struct stat st;
    char *target = NULL;
    if (strcmp(dst, "-") && stat(dst, &st) == 0 && S_ISDIR(st.st_mode))
        target = join(dst, base_name(rsrc));
    if (isdir && !o['r']) {
        fprintf(stderr, "sandboxctl: cp: %s is a directory (use -r)\n", src);
        free(target);
        return 1;
    }
    rc = isdir ? download_tree(ctl, rsrc, target ? target : dst)
               : download_file(ctl, rsrc, target ? target : dst, size, mode);
    free(target);
    return rc;
}

static int cmd_cat(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "z", o);
    if (i < 0 || i >= argc) {
        fprintf(stderr, "usage: sandboxctl cat [-u USER] PATH...\n");
        return 2;
    }
    if (fs_connect(ctl, o['z']) < 0)
        return 1;
    for (; i < argc; i++)
        if (download_fd(ctl, rpath(argv[i]), 1, "cat", 0))
            return 1;
    return 0;
}

static void mode_string(const Entry *e, char *out)
{
    const char *rwx = "rwxrwxrwx";
    out[0] = e->type == T_DIR ? 'd' : e->type == T_LINK ? 'l' : e->type == T_FILE ? '-' : '?';
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

static void print_entry(ctl_t *ctl, const Entry *e, int lng, const char *name)
{
    if (ctl->json) {
        printf("{\"name\":");
        ctl_json_string(e->name);
        printf(",\"path\":");
        ctl_json_string(e->path);
        printf(",\"type\":\"%s\",\"size\":%llu,\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u,"
               "\"owner\":",
               e->type == T_DIR ? "directory" : e->type == T_LINK ? "symlink"
                                              : e->type == T_FILE ? "file" : "other",
               (unsigned long long)e->size, e->mode, e->uid, e->gid);
        ctl_json_string(e->owner);
        printf(",\"group\":");
        ctl_json_string(e->group);
        printf(",\"mtime_unix_nano\":%lld", (long long)e->mtime_unix_nano);
        if (e->symlink_target && e->symlink_target[0]) {
            printf(",\"symlink_target\":");
            ctl_json_string(e->symlink_target);
        }
        printf("}\n");
        return;
    }
    if (!lng) {
        printf("%s%s\n", name, e->type == T_DIR ? "/" : "");
        return;
    }
    char m[12], when[32];
    time_t t = (time_t)(e->mtime_unix_nano / 1000000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    mode_string(e, m);
    printf("%s %3llu %-8s %-8s %10llu %s %s", m, (unsigned long long)e->nlink, e->owner,
           e->group, (unsigned long long)e->size, when, name);
    if (e->type == T_LINK)
        printf(" -> %s", e->symlink_target);
    putchar('\n');
}

typedef struct ls_ctx {
    int lng, rec;
    size_t strip;
} ls_ctx_t;

static int ls_each(ctl_t *ctl, const Entry *e, void *arg)
{
    ls_ctx_t *x = arg;
    const char *name = x->rec ? e->path + x->strip : e->name;
    while (x->rec && *name == '/')
        name++;
    print_entry(ctl, e, x->lng, name);
    return 0;
}

static int cmd_ls(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "lRa", o);
    if (i < 0 || argc - i > 1) {
        fprintf(stderr, "usage: sandboxctl ls [-l] [-R] [-u USER] [PATH]\n");
        return 2;
    }
    const char *path = i < argc ? rpath(argv[i]) : ".";
    if (fs_connect(ctl, 1) < 0)
        return 1;
    Response *r = remote_stat(ctl, path, 1);
    if (!r)
        return 1;
    if (r->result_case != RES(ENTRY)) {
        int rc = ctl_fail("ls", r);
        sa_response_free(r);
        return rc;
    }
    if (r->entry->type != T_DIR) {
        print_entry(ctl, r->entry, o['l'], path);
        sa_response_free(r);
        return 0;
    }
    ls_ctx_t x = {o['l'], o['R'], strlen(r->entry->path)};
    sa_response_free(r);
    return remote_list(ctl, path, o['R'] ? 0xffffffffu : 1, 1, ls_each, &x);
}

static int cmd_stat(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "L", o);
    if (i < 0 || i >= argc) {
        fprintf(stderr, "usage: sandboxctl stat [-L] [-u USER] PATH...\n");
        return 2;
    }
    if (fs_connect(ctl, 1) < 0)
        return 1;
    for (; i < argc; i++) {
        Response *r = remote_stat(ctl, rpath(argv[i]), o['L']);
        if (!r)
            return 1;
        if (r->result_case != RES(ENTRY)) {
            int rc = ctl_fail("stat", r);
            sa_response_free(r);
            return rc;
        }
        const Entry *e = r->entry;
        if (ctl->json) {
            print_entry(ctl, e, 1, e->path);
        } else {
            char m[12], when[40];
            time_t t = (time_t)(e->mtime_unix_nano / 1000000000);
            struct tm tm;
            mode_string(e, m);
            localtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            printf("  Path: %s%s%s\n  Type: %s\n  Size: %llu\n  Mode: %04o (%s)\n"
                   " Owner: %s (%u)\n Group: %s (%u)\n Links: %llu\n Inode: %llu\n"
                   " Mtime: %s.%09lld\n",
                   e->path, e->type == T_LINK ? " -> " : "",
                   e->type == T_LINK ? e->symlink_target : "",
                   e->type == T_DIR ? "directory" : e->type == T_LINK ? "symlink"
                                                  : e->type == T_FILE ? "file" : "other",
                   (unsigned long long)e->size, e->mode, m, e->owner, e->uid, e->group, e->gid,
                   (unsigned long long)e->nlink, (unsigned long long)e->inode,
                   when, (long long)(e->mtime_unix_nano % 1000000000));
        }
        sa_response_free(r);
    }
    return 0;
}

static int cmd_mkdir(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "p", o);
    if (i < 0 || i >= argc) {
        fprintf(stderr, "usage: sandboxctl mkdir [-p] [-u USER] PATH...\n");
        return 2;
    }
    if (fs_connect(ctl, 1) < 0)
        return 1;
    for (; i < argc; i++)
        if (remote_mkdir(ctl, rpath(argv[i]), o['p'], 0))
            return 1;
    return 0;
}

static int cmd_rm(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "rf", o);
    if (i < 0 || i >= argc) {
        fprintf(stderr, "usage: sandboxctl rm [-r] [-f] [-u USER] PATH...\n");
        return 2;
    }
    if (fs_connect(ctl, 1) < 0)
        return 1;
    for (; i < argc; i++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Remove rm = SANDBOX__AGENT__V1__REMOVE__INIT;
        rm.path = (char *)rpath(argv[i]);
        rm.recursive = o['r'];
        rm.user = (char *)g_user;
        req.op_case = OP(REMOVE);
        req.remove = &rm;
        Response *r = fs_call(ctl, &req, "rm");
        if (!r)
            return 1;
        int rc = 0;
        if (r->result_case != RES(ACK) &&
            !(o['f'] && r->result_case == RES(ERROR) && r->error->code == CODE(NOT_FOUND)))
            rc = ctl_fail("rm", r);
        sa_response_free(r);
        if (rc)
            return rc;
    }
    return 0;
}

static int cmd_mv(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int i = opts(argc, argv, "np", o);
    if (i < 0 || argc - i != 2) {
        fprintf(stderr, "usage: sandboxctl mv [-n] [-p] [-u USER] SOURCE DESTINATION\n"
                        "  -n: do not replace an existing destination; -p: make its parents\n");
        return 2;
    }
    if (fs_connect(ctl, 1) < 0)
        return 1;
    const char *src = rpath(argv[i]), *dst = rpath(argv[i + 1]);
    char *target = NULL;
    Response *r = remote_stat(ctl, dst, 1);
    if (r && r->result_case == RES(ENTRY) && r->entry->type == T_DIR)
        target = join(dst, base_name(src));
    sa_response_free(r);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Rename rn = SANDBOX__AGENT__V1__RENAME__INIT;
    rn.source = (char *)src;
    rn.destination = target ? target : (char *)dst;
    rn.overwrite = !o['n'];
    rn.make_parents = o['p'];
    rn.user = (char *)g_user;
    req.op_case = OP(RENAME);
    req.rename = &rn;
    r = fs_call(ctl, &req, "mv");
    free(target);
    if (!r)
        return 1;
    int rc = r->result_case == RES(ENTRY) ? 0 : ctl_fail("mv", r);
    sa_response_free(r);
    return rc;
}

static int cmd_watch(ctl_t *ctl, int argc, char **argv)
{
    static const char *kinds[] = {"?", "CREATE", "MODIFY", "DELETE", "RENAME", "ATTRIB",
                                  "OVERFLOW"};
    char o[128];
    int i = opts(argc, argv, "r", o);
    if (i < 0 || argc - i != 1) {
        fprintf(stderr, "usage: sandboxctl watch [-r] [-u USER] PATH\n");
        return 2;
    }
    if (fs_connect(ctl, 1) < 0)
        return 1;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchPath wp = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    wp.path = (char *)rpath(argv[i]);
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
            fprintf(stderr, "sandboxctl: watch: connection lost\n");
            return 1;
        }
        if (r->result_case != RES(FS_EVENT)) {
            int rc = ctl_fail("watch", r);
            sa_response_free(r);
            return rc;
        }
        const FsEvent *e = r->fs_event;
        const char *k = e->kind < sizeof kinds / sizeof kinds[0] ? kinds[e->kind] : "?";
        if (ctl->json) {
            printf("{\"kind\":\"%s\",\"path\":", k);
            ctl_json_string(e->path);
            if (e->old_path && e->old_path[0]) {
                printf(",\"old_path\":");
                ctl_json_string(e->old_path);
            }
            printf("}\n");
        } else if (e->old_path && e->old_path[0]) {
            printf("%-8s %s -> %s\n", k, e->old_path, e->path);
        } else {
            printf("%-8s %s\n", k, e->path);
        }
        sa_response_free(r);
    }
}

const ctl_cmd_t ctl_cmds_fs[] = {
    {"cp", cmd_cp, "[-r] [-z] [-u USER] SRC DST",
     "copy a file or (-r) a tree to or from the agent; ':' marks the agent's side"},
    {"cat", cmd_cat, "[-u USER] PATH...", "print files of the agent"},
    {"ls", cmd_ls, "[-l] [-R] [-u USER] [PATH]", "list a directory of the agent"},
    {"stat", cmd_stat, "[-L] [-u USER] PATH...", "show a path's type, size, mode, owner"},
    {"mkdir", cmd_mkdir, "[-p] [-u USER] PATH...", "make directories"},
    {"rm", cmd_rm, "[-r] [-f] [-u USER] PATH...", "remove files or (-r) trees"},
    {"mv", cmd_mv, "[-n] [-p] [-u USER] SRC DST", "rename or move"},
    {"watch", cmd_watch, "[-r] [-u USER] PATH", "print changes under a path until interrupted"},
    {NULL, NULL, NULL, NULL},
};
