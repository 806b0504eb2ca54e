/* fs_write.c - WriteFile: an upload in chunks, written by the file workers
 * with one chunk waiting and the connection's input held beyond that
 * (see fs.c); atomic through a temporary beside the target.
 * Errors: a handler answers every error itself (one Error, the request's
 * only answer); a job records its failure in the op (fs_op_fail) and the
 * loop answers it (fs_op_send_error); helpers return a negative errno. */
#include "fs.h"
#include "fs_internal.h"

#include "errcode.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libdeflate.h>

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
    conn_bulk_t cur;    /* the chunk being written, kept from its request */
    conn_bulk_t next;   /* one more, received while cur was being written */
    int has_next, next_last, held;
    size_t charged;     /* bytes of cur/next counted against the upload budget */
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
    fs_op_fail(&w->o, -EINVAL, "%s '%s': %s, not a regular file", w->o.what, w->o.path,
               fs_type_name(m));
    return -1;
}

static int wr_open(wr_t *w)
{
    struct stat st;
    int exists;
    if (w->make_parents) {
        char *failed = NULL;
        int rc = fs_mkdir_p(w->dir, 0755, &failed);
        if (rc < 0) {
            fs_op_fail(&w->o, rc, "%s: creating parent '%s': %s", w->o.what,
                       failed ? failed : w->dir, strerror(-rc));
            free(failed);
            return -1;
        }
    }
    w->dirfd = open(w->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        fs_op_fail(&w->o, -errno, "%s '%s': parent '%s': %s", w->o.what, w->o.path, w->dir,
                   strerror(errno));
        return -1;
    }
    exists = fstatat(w->dirfd, w->name, &st, 0) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        fs_op_fail(&w->o, -EISDIR, "%s '%s': is a directory", w->o.what, w->o.path);
        return -1;
    }
    if (exists && !S_ISREG(st.st_mode))
        return wr_not_regular(w, st.st_mode);
    if (exists && w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW) {
        fs_op_fail(&w->o, -EEXIST, "%s '%s': already exists (CREATE_NEW)", w->o.what, w->o.path);
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
            fs_op_fail_path(&w->o, -errno, w->o.path);
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
            fs_op_fail_path(&w->o, -errno, w->o.path);
            return -1;
        }
        struct stat fst;
        if (fstat(w->fd, &fst) < 0) {
            fs_op_fail_path(&w->o, -errno, w->o.path);
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
        fs_op_fail(&w->o, -EBADMSG,
                   "%s '%s': crc32 mismatch: expected %08x, the %llu bytes received have %08x; "
                   "nothing was written",
                   w->o.what, w->o.path, w->expect, (unsigned long long)w->written, w->crc);
        return -1;
    }
    if (w->has_owner && fchown(w->fd, w->ouid, w->ogid) < 0) {
        fs_op_fail(&w->o, -errno, "%s '%s': chown to %u:%u: %s", w->o.what, w->o.path,
                   (unsigned)w->ouid, (unsigned)w->ogid, strerror(errno));
        return -1;
    }
    /* After chown, which clears set-id bits. */
    if (w->atomic && fchmod(w->fd, w->mode) < 0) {
        fs_op_fail_path(&w->o, -errno, w->o.path);
        return -1;
    }
    if (w->sync && fsync(w->fd) < 0) {
        fs_op_fail_path(&w->o, -errno, w->o.path);
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
            fs_op_fail_path(&w->o, -errno, w->o.path);
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
    const uint8_t *data = w->cur.data;
    size_t len = w->cur.len;
    for (size_t off = 0; off < len;) {
        ssize_t n = w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__APPEND && !w->atomic
                        ? write(w->fd, data + off, len - off)
                        : pwrite(w->fd, data + off, len - off, (off_t)(w->written + off));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fs_op_fail(&w->o, -errno, "%s '%s': writing at byte %llu: %s", w->o.what, w->o.path,
                       (unsigned long long)(w->written + off), strerror(errno));
            goto fail;
        }
        off += (size_t)n;
    }
    /* With sync, the disk starts on this chunk now, while the next ones
     * arrive, instead of taking the whole file at the final fsync. */
    if (w->sync && len && !(w->wmode == SANDBOX__AGENT__V1__WRITE_MODE__APPEND && !w->atomic))
        sync_file_range(w->fd, (off_t)w->written, (off_t)len, SYNC_FILE_RANGE_WRITE);
    w->crc = libdeflate_crc32(w->crc, data, len);
    w->written += len;
    free(w->cur.block);
    w->cur = (conn_bulk_t){0};
    if (w->last && wr_finish(w) < 0)
        goto fail;
    if (w->finished)
        wr_close(w);
    return;
fail:
    wr_abort(w);
    wr_close(w);
}

/* Count n more bytes of this upload against the upload budget (which holds
 * the connection's input when it is over: conn_upload_take). */
static void wr_charge(wr_t *w, size_t n)
{
    w->charged += n;
    conn_upload_take(w->o.base.conn, n);
}

/* On the loop: answer if the upload ended (error or last chunk), then let
 * the connection's input go on. */
static void wr_done(fsop_t *o)
{
    wr_t *w = (wr_t *)o;
    conn_t *c = o->base.conn;
    int held = w->held;
    size_t now = w->cur.len + w->next.len;
    w->held = 0;
    /* The chunk the worker wrote is freed: its bytes leave the budget. */
    if (w->charged > now) {
        conn_upload_give(c, w->charged - now);
        w->charged = now;
    }
    if (!o->err && !w->finished && w->has_next) {
        /* The chunk that waited goes to the worker; the slot is free, so
         * the connection's input may go on. */
        w->cur = w->next;
        w->last = w->next_last;
        w->next = (conn_bulk_t){0};
        w->has_next = 0;
        fs_op_submit(o, wr_run);
    } else if (o->err || w->finished) {
        Response r = RESPONSE_INIT;
        WriteFileResult res = SANDBOX__AGENT__V1__WRITE_FILE_RESULT__INIT;
        res.bytes_written = w->written;
        res.crc32 = w->crc;
        res.entry = &o->entry;
        r.result_case = RES(WRITTEN);
        r.written = &res;
        fs_op_finish(o, &r); /* ends the stream: o is gone */
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
    free(w->cur.block);
    free(w->next.block);
    free(w->dir);
    fs_op_free(&w->o);
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

/* Keep a chunk's bytes past its request (into cur or next): they are
 * written from where they arrived when they can be (conn_keep_bulk), not
 * copied. Answers the request when out of memory. */
static int wr_take(wr_t *w, conn_t *c, uint64_t id, ProtobufCBinaryData *d, conn_bulk_t *into)
{
    int rc = conn_keep_bulk(c, d, into);
    if (rc < 0) {
        conn_send_error(c, id, CODE(RESOURCE_EXHAUSTED), -rc,
                        "%s '%s': out of memory for a chunk of %zu bytes", w->o.what, w->o.path,
                        d->len);
        return rc;
    }
    return 0;
}

static stream_status_t wr_feed(stream_t *s, const Request *req)
{
    wr_t *w = (wr_t *)s;
    conn_t *c = s->conn;
    ProtobufCBinaryData *d = &((Request *)req)->write_data->data;
    if (w->last || w->next_last || w->has_next) {
        /* The stream ends with the last chunk, and input is held while a
         * chunk waits: only a client that ignored `more` gets here. */
        conn_send_error(c, s->id, CODE(INVALID_ARGUMENT), 0,
                        "write_data for id %llu: the upload already had its last chunk",
                        (unsigned long long)s->id);
        return STREAM_DONE;
    }
    if (!w->o.busy) {
        if (wr_take(w, c, s->id, d, &w->cur) < 0)
            return STREAM_DONE;
        wr_charge(w, w->cur.len);
        w->last = !req->write_data->more;
        fs_op_submit(&w->o, wr_run);
        return STREAM_WAIT;
    }
    /* One chunk is written while the next waits here, so the client and
     * the disk both keep moving; a third waits in the socket: holding the
     * input is the upload's backpressure. */
    if (wr_take(w, c, s->id, d, &w->next) < 0)
        return STREAM_DONE;
    wr_charge(w, w->next.len);
    w->has_next = 1;
    w->next_last = !req->write_data->more;
    w->held = 1;
    conn_hold_input(c, 1);
    return STREAM_WAIT;
}

/* The stream leaves its connection (done, cancelled, or the connection
 * closed); the data it still holds stays counted in the agent's budget
 * until it is freed (wr_free). */
static void wr_destroy(stream_t *s)
{
    wr_t *w = (wr_t *)s;
    conn_upload_leave(s->conn, w->charged);
    fs_op_destroy(s);
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
    .next = fs_op_next_wait,
    .feed = wr_feed,
    .destroy = wr_destroy,
};

void fs_handle_write(conn_t *c, const Request *req)
{
    Sandbox__Agent__V1__WriteFile *m = req->write_file;
    wr_t *w = (wr_t *)fs_op_new(c, req, sizeof *w, "write_file", m->user, m->path, &m->path_raw);
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
    int rc = fs_split_path(w->o.path, &w->dir, &w->name);
    if (rc < 0) {
        conn_send_errno(c, req->id, rc == -EINVAL ? -EISDIR : rc, "write_file '%s': %s",
                        w->o.path, rc == -EINVAL ? "is a directory" : strerror(-rc));
        wr_free(w);
        return;
    }
    if (wr_take(w, c, req->id, &m->data, &w->cur) < 0) {
        wr_free(w);
        return;
    }
    w->last = !m->more;
    if (fs_op_register(c, req, &w->o, &wr_ops) < 0)
        return;
    w->o.base.input_end = wr_input_end;
    wr_charge(w, w->cur.len);
    fs_op_submit(&w->o, wr_run);
}
