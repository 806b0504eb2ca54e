/* fs_read.c - ReadFile: a file pulled in chunks, read ahead on the file
 * workers while the connection drains the last one (see fs.c).
 * Errors: a handler answers every error itself (one Error, the request's
 * only answer); a job records its failure in the op (fs_op_fail) and the
 * loop answers it (fs_op_send_error); helpers return a negative errno. */
#include "fs.h"
#include "fs_internal.h"

#include "errcode.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <libdeflate.h>

/* Bytes read from the disk at a time (capped by the frame). The chunks are
 * written to the socket from their buffers, not copied, and the next one is
 * read while the last drains, so a smaller chunk costs little and keeps each
 * loop turn short; a reader holds at most RD_BUFS of them. */
#define FS_READ_CHUNK (1u << 20)

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
        ssize_t n = r->noseek ? util_read(r->fd, buf + have, want - have)
                              : util_pread(r->fd, buf + have, want - have, (off_t)r->pos);
        if (n == -ESPIPE && !r->noseek && r->pos == 0) {
            r->noseek = 1; /* a terminal, a stream device */
            continue;
        }
        if (n == -ESPIPE) {
            r->o.errcode = CODE(INVALID_ARGUMENT);
            fs_op_fail(&r->o, -ESPIPE, "%s '%s': cannot seek to offset %llu: %s", r->o.what,
                       r->o.path, (unsigned long long)r->pos, strerror(ESPIPE));
            return;
        }
        if (n == -EAGAIN && r->nonblock) {
            /* A device with nothing more to give now (/dev/kmsg, a
             * terminal): blocking would hold this worker, and every file
             * operation behind it, until it spoke again. */
            eof = 1;
            break;
        }
        if (n < 0) {
            fs_op_fail_path(&r->o, (int)n, r->o.path);
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
            fs_entry_fill(&r->o.arena, &r->o.entry, r->o.path, &st, NULL, 0) < 0) {
            fs_op_fail(&r->o, -ENOMEM, "%s: out of memory", r->o.what);
            return;
        }
    }
    r->fill_have = have;
    r->fill_eof = eof;
    r->filled = 1;
}

static void rd_run(fsw_job_t *j)
{
    rd_t *r = (rd_t *)SA_CONTAINER_OF(j, fsop_t, job);
    if (!r->opened) {
        struct stat st;
        int fl = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        r->opened = 1;
        /* O_NONBLOCK: a FIFO must not hang the worker in open(). */
        int guard = fs_op_guarded(&r->o);
        r->fd = guard ? fs_open_as_user(r->o.path, fl) : open(r->o.path, fl);
        if (r->fd < 0) {
            fs_op_fail_path(&r->o, guard ? r->fd : -errno, r->o.path);
            r->fd = -1;
            return;
        }
        if (fstat(r->fd, &st) < 0) {
            fs_op_fail_path(&r->o, -errno, r->o.path);
            return;
        }
        if (S_ISDIR(st.st_mode)) {
            fs_op_fail(&r->o, -EISDIR, "%s '%s': is a directory (use list_dir)", r->o.what,
                       r->o.path);
            return;
        }
        if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
            r->o.errcode = CODE(FAILED_PRECONDITION);
            fs_op_fail(&r->o, -EINVAL, "%s '%s': %s, not a regular file", r->o.what, r->o.path,
                       fs_type_name(st.st_mode));
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
            fs_op_fail(&r->o, -ENOMEM, "%s: out of memory", r->o.what);
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
    fs_op_submit(&r->o, rd_run);
}

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
        fs_op_send_error(&r->o);
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
        fs_op_submit(&r->o, rd_run);
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
    fs_op_free(o);
}

static const stream_ops_t rd_ops = {
    .name = "read_file",
    .next = rd_next,
    .destroy = fs_op_destroy,
};

void fs_handle_read(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__ReadFile *m = req->read_file;
    rd_t *r = (rd_t *)fs_op_new(c, req, sizeof *r, "read_file", m->user, m->path, &m->path_raw);
    if (!r)
        return;
    r->fd = -1;
    r->o.on_done = fs_op_wake;
    r->o.release = rd_release;
    r->pos = m->offset;
    r->end = m->length ? (m->offset + m->length < m->offset ? UINT64_MAX : m->offset + m->length)
                       : UINT64_MAX;
    r->cap = SA_MIN(conn_max_payload(c) - 64, (size_t)FS_READ_CHUNK);
    r->crc = 0;
    fs_op_register(c, req, &r->o, &rd_ops); /* next() opens */
}
