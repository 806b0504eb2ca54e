/* ctl_download.c - cp from the agent to here (and cat's reads): a file
 * as ReadFile's chunks, a tree as listed, a link as a link; modes and times
 * set once each entry is complete. */
#include "ctl_fs.h"

#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libdeflate.h>

/* Download the agent's src into the local fd (a file or stdout). 0, 1 when
 * the agent refused or the data was wrong (said why), -1 when the
 * connection failed. */
int ctl_download_fd(ctl_t *ctl, const char *src, int fd, const char *label, uint64_t size)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ReadFile rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    ctl_progress_t pr;
    uint32_t crc = 0;
    uint64_t got = 0;
    int werr = 0;
    ctl_set_path(&rf.path, &rf.path_raw, src);
    rf.user = (char *)ctl_fs_user;
    req.id = sa_client_next_id(ctl->cli);
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    if (sa_client_send(ctl->cli, &req) < 0) {
        fprintf(stderr, "sandboxctl: %s: connection to the agent lost\n", label);
        return -1;
    }
    ctl_progress_start(&pr, src, size);
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
            ctl_progress_draw(&pr, 0);
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
            ctl_progress_draw(&pr, 1);
        }
        sa_response_free(r);
        return rc;
    }
}

void ctl_item_free(ctl_item_t *it)
{
    free(it->name);
    free(it->target);
}

int ctl_item_of(ctl_item_t *it, const Entry *e)
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

static int download_file(ctl_t *ctl, const char *src, const char *dst, const ctl_item_t *it)
{
    if (!strcmp(dst, "-"))
        return ctl_download_fd(ctl, src, 1, "cp", it->size);
    /* Created private; its mode is set once it is complete. */
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: %s\n", dst, strerror(errno));
        return 1;
    }
    int rc = ctl_download_fd(ctl, src, fd, "cp", it->size);
    if (!rc && fchmod(fd, it->mode) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: setting mode %04o: %s\n", dst, it->mode,
                strerror(errno));
        rc = 1;
    }
    if (!rc && ctl_cp.keep_time) {
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

typedef struct kids {
    ctl_item_t *v;
    size_t n;
} kids_t;

/* Collected first, then copied: one request at a time on the connection. */
static int collect(ctl_t *ctl, const Entry *e, void *arg)
{
    kids_t *k = arg;
    ctl_item_t *v = realloc(k->v, (k->n + 1) * sizeof *v);
    if (!v)
        return 1;
    k->v = v;
    if (ctl_item_of(&v[k->n], e) < 0) {
        ctl_item_free(&v[k->n]);
        return 1;
    }
    k->n++;
    return 0;
}

static int set_local_attrs(const char *path, const ctl_item_t *it, int mode)
{
    if (mode && fchmodat(AT_FDCWD, path, it->mode, 0) < 0) {
        fprintf(stderr, "sandboxctl: cp: %s: setting mode %04o: %s\n", path, it->mode,
                strerror(errno));
        return 1;
    }
    if (ctl_cp.keep_time) {
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
int ctl_download_entry(ctl_t *ctl, const char *remote, const char *local, ctl_item_t *it)
{
    int rc = 0;
    if (it->type == T_LINK && ctl_cp.follow) {
        Response *r = ctl_fs_stat(ctl, remote, 1, "cp");
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
                        "links are)\n", remote, ctl_fs_type_words(it->type));
        return 1;
    }
    if (!ctl_cp.recursive) {
        fprintf(stderr, "sandboxctl: cp: %s is a directory (use -r)\n", remote);
        return 1;
    }
    if (ctl_cp.depth == MAX_DEPTH) {
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
    rc = ctl_fs_list(ctl, remote, 1, 1, "cp", collect, &k);
    ctl_cp_progress_off = 1;
    ctl_cp.depth++;
    for (size_t i = 0; i < k.n; i++) {
        if (rc >= 0) {
            char *r = ctl_fs_join(remote, k.v[i].name), *l = ctl_fs_join(local, k.v[i].name);
            int x = r && l ? ctl_download_entry(ctl, r, l, &k.v[i]) : 1;
            rc = x < 0 ? x : rc | x;
            free(r);
            free(l);
        }
        ctl_item_free(&k.v[i]);
    }
    ctl_cp.depth--;
    free(k.v);
    if (rc < 0)
        return rc;
    return rc | set_local_attrs(local, it, 1);
}
