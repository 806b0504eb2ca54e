/* proc_io.c - a process's output and stdin, and the streams that answer
 * about one process: following its output, waiting for its exit, a write to
 * its stdin that waits for the pipe.
 *
 * Errors: helpers return 0 or a negative errno; a stream's next() answers
 * its own errors on its connection, and so does proc_stream_register(). */
#include "proc_internal.h"

#include "config.h"
#include "log.h"
#include "outlog.h"
#include "service.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define READ_SIZE (128 * 1024)
#define PIPE_BIG (1 << 20)

/* The buffer the next read of any process's output goes into: a large read
 * becomes that process's log chunk as it is (no copy), and a new buffer is
 * made for the next one. */
uint8_t *proc_rbuf;
static uint8_t g_scratch[OUTLOG_LINE_MAX];

/* ------------------------------------------------------------ streams */

void proc_wake_streams(proc_t *p, int followers_only)
{
    for (proc_stream_t *s = p->streams; s; s = s->next)
        if (!followers_only || s->kind == PROC_STREAM_FOLLOW)
            stream_wake(&s->base);
}

void proc_stream_attach(proc_t *p, proc_stream_t *s)
{
    s->p = p;
    p->refs++;
    SA_LIST_PUSH(p->streams, s, next, prev);
}

static void reading_resume(proc_t *p)
{
    if (!p->read_paused)
        return;
    p->read_paused = 0;
    if (p->fd_out >= 0)
        ev_io_start(proc_loop, &p->r_out);
    if (p->fd_err >= 0)
        ev_io_start(proc_loop, &p->r_err);
    if (p->state == PROC_DRAINING)
        ev_timer_again(proc_loop, &p->t_drain);
}

/* A waiting write is over (written, failed or cancelled): its data goes and
 * its connection's input goes on. */
static void write_release(proc_stream_t *s)
{
    free(s->block);
    s->block = s->data = NULL;
    if (s->charged) {
        conn_upload_give(s->base.conn, s->charged);
        s->charged = 0;
    }
    if (s->held) {
        s->held = 0;
        conn_hold_input(s->base.conn, 0);
    }
}

void proc_stream_destroy(stream_t *base)
{
    proc_stream_t *s = (proc_stream_t *)base;
    proc_t *p = s->p;
    if (s->job)
        proc_start_job_orphan(s->job); /* the process still starts; nobody hears of it */
    write_release(s);
    if (s->start_req)
        sandbox__agent__v1__start_process__free_unpacked(s->start_req, NULL);
    if (p) {
        if (s->kind == PROC_STREAM_FOLLOW && s->attached && outlog_detach(&p->log, &s->cur))
            reading_resume(p);
        if (s->kind == PROC_STREAM_WRITE && s->queued) {
            /* Leave the stdin queue; what was written stays written. */
            for (proc_stream_t **pp = &p->wq_head, *prev = NULL; *pp;
                 prev = *pp, pp = &(*pp)->wnext) {
                if (*pp == s) {
                    *pp = s->wnext;
                    if (p->wq_tail == s)
                        p->wq_tail = prev;
                    break;
                }
            }
            /* A CloseStdin waiting behind the cancelled write closes now,
             * or it would never happen. */
            if (!p->wq_head && p->close_stdin_pending)
                proc_stdin_close(p);
            else if (!p->wq_head)
                ev_io_stop(proc_loop, &p->w_in);
        }
        if (s->kind != PROC_STREAM_WRITE)
            SA_LIST_UNLINK(p->streams, s, next, prev);
        proc_unref(p);
    }
    free(s);
}

/* The cgroup's figures: live (read into *live) until the exit is final,
 * then the ones kept when it became final. p has a cgroup. */
const cg_stats_t *proc_cg_stats(const proc_t *p, cg_stats_t *live)
{
    if (p->state == PROC_FINAL)
        return &p->cg_final;
    cg_leaf_stats(p->cg, live);
    return live;
}

void proc_exit_status(int status, ProcessExit *e)
{
    if (WIFSIGNALED(status)) {
        e->signal = WTERMSIG(status);
        e->exit_code = 128 + e->signal;
        e->core_dumped = WCOREDUMP(status) ? 1 : 0;
    } else {
        e->exit_code = WEXITSTATUS(status);
    }
}

void proc_fill_exit(const proc_t *p, ProcessExit *e)
{
    proc_exit_status(p->status, e);
    e->ended_at_unix_nano = p->ended;
    e->timed_out = p->timed_out ? 1 : 0;
    e->total_output_bytes = p->log.next_seq;
    if (p->cg) {
        cg_stats_t live;
        const cg_stats_t *st = proc_cg_stats(p, &live);
        e->oom_killed = st->oom_killed;
        e->cpu_user_nano = st->cpu_user_nano;
        e->cpu_system_nano = st->cpu_system_nano;
        e->memory_peak_bytes = st->memory_peak;
    }
}

static stream_status_t send_exit(proc_stream_t *s)
{
    Response r = RESPONSE_INIT;
    ProcessExit e = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
    proc_fill_exit(s->p, &e);
    r.result_case = RES(EXIT);
    r.exit = &e;
    conn_send(s->base.conn, s->base.id, 1, &r);
    return STREAM_DONE;
}

stream_status_t proc_send_ack(conn_t *c, uint64_t id)
{
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;
    r.result_case = RES(ACK);
    r.ack = &ack;
    conn_send(c, id, 1, &r);
    return STREAM_DONE;
}

static void chunk_unref(void *c) { outlog_chunk_unref(c); }

static stream_status_t follow_next(stream_t *base)
{
    proc_stream_t *s = (proc_stream_t *)base;
    proc_t *p = s->p;
    outlog_item_t it;
    Response r = RESPONSE_INIT;
    int rc = 0, final = p->state == PROC_FINAL;
    size_t max = conn_max_event(base->conn);
    stream_status_t next;

    /* A service's events (ready, a run's exit, the next run) come in their
     * place in the output, and a read stops at a run's end. */
    if (p->svc && svc_follow_event(p->svc, &s->sf, s->cur.seq, base, &max, &final, &next))
        return next;
    outlog_peek(&p->log, &s->cur, max, s->lines, final, g_scratch, &it);
    if (it.kind == OUTLOG_GAP) {
        OutputGap g = SANDBOX__AGENT__V1__OUTPUT_GAP__INIT;
        g.from_sequence = it.from_seq;
        g.to_sequence = it.to_seq;
        r.result_case = RES(GAP);
        r.gap = &g;
        for (int st = 0; st < OUTLOG_STREAMS && rc == 0; st++) {
            if (!it.skipped[st])
                continue;
            g.stream = (Sandbox__Agent__V1__Stream)st;
            g.skipped_bytes = it.skipped[st];
            rc = conn_send(base->conn, base->id, 0, &r);
        }
    } else if (it.kind == OUTLOG_DATA) {
        OutputEvent ev = SANDBOX__AGENT__V1__OUTPUT_EVENT__INIT;
        ev.stream = (Sandbox__Agent__V1__Stream)it.stream;
        ev.data.data = (uint8_t *)it.data;
        ev.data.len = it.len;
        ev.sequence = it.seq;
        ev.offset = it.offset;
        ev.timestamp_unix_nano = it.ts;
        /* Straight from a chunk of the log: the queue shares its bytes
         * (every follower the same ones) instead of copying them. */
        r.result_case = RES(OUTPUT);
        r.output = &ev;
        if (it.chunk) {
            outlog_chunk_ref(it.chunk);
            rc = conn_send_ref(base->conn, base->id, 0, &r, &ev.base, &ev.data, chunk_unref,
                               (void *)it.chunk);
            if (rc < 0)
                outlog_chunk_unref(it.chunk); /* not taken */
        } else {
            rc = conn_send(base->conn, base->id, 0, &r);
        }
    } else if (p->state == PROC_FINAL) {
        return send_exit(s);
    } else if (s->no_wait) {
        return proc_send_ack(base->conn, base->id);
    } else {
        return STREAM_WAIT;
    }
    if (rc < 0)
        return STREAM_WAIT; /* the connection is closing */
    if (outlog_consume(&p->log, &s->cur, &it))
        reading_resume(p);
    return STREAM_MORE;
}

static stream_status_t wait_next(stream_t *base)
{
    proc_stream_t *s = (proc_stream_t *)base;
    return s->p->state == PROC_FINAL ? send_exit(s) : STREAM_WAIT;
}

static stream_status_t write_next(stream_t *base)
{
    proc_stream_t *s = (proc_stream_t *)base;
    if (s->result == 0)
        return STREAM_WAIT;
    if (s->result > 0)
        return proc_send_ack(base->conn, base->id);
    conn_send_errno(base->conn, base->id, s->result == -EPIPE ? -EPIPE : s->result,
                    "stdin of process %d: %s", (int)s->p->pid,
                    s->result == -EPIPE ? "closed (the process exited or closed it)"
                                        : strerror(-s->result));
    return STREAM_DONE;
}

const stream_ops_t proc_follow_ops = {
    .name = "follow",
    .next = follow_next,
    .destroy = proc_stream_destroy,
};
const stream_ops_t proc_wait_ops = {
    .name = "wait",
    .next = wait_next,
    .destroy = proc_stream_destroy,
};
const stream_ops_t proc_write_ops = {
    .name = "write_stdin",
    .next = write_next,
    .destroy = proc_stream_destroy,
};

proc_stream_t *proc_stream_new(const stream_ops_t *ops, enum proc_stream_kind kind)
{
    proc_stream_t *s = calloc(1, sizeof *s);
    if (s) {
        s->base.ops = ops;
        s->kind = kind;
    }
    return s;
}

/* Register s as the stream answering id. On failure s is destroyed and the
 * error answered; returns 0 or -errno. */
int proc_stream_register(conn_t *c, uint64_t id, proc_stream_t *s, const char *op)
{
    int rc = conn_stream_add(c, &s->base, id);
    if (rc < 0) {
        proc_stream_destroy(&s->base);
        conn_send_stream_refused(c, id, rc, op);
    }
    return rc;
}

/* ------------------------------------------------------------ stdin */

void proc_stdin_close(proc_t *p)
{
    ev_io_stop(proc_loop, &p->w_in);
    if (p->fd_in >= 0) {
        close(p->fd_in);
        p->fd_in = -1;
    }
    p->close_stdin_pending = 0;
}

int proc_stdin_fd(const proc_t *p) { return p->pty ? p->fd_out : p->fd_in; }

void proc_stdin_fail_all(proc_t *p, int err)
{
    while (p->wq_head) {
        proc_stream_t *s = p->wq_head;
        p->wq_head = s->wnext;
        s->queued = 0;
        s->result = err;
        write_release(s);
        stream_wake(&s->base);
    }
    p->wq_tail = NULL;
    ev_io_stop(proc_loop, &p->w_in);
}

/* Write queued stdin data while the pipe accepts it. */
static void stdin_pump(proc_t *p)
{
    int fd = proc_stdin_fd(p);
    while (p->wq_head) {
        proc_stream_t *s = p->wq_head;
        ssize_t n = write(fd, s->data + s->off, s->len - s->off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            proc_stdin_fail_all(p, -errno);
            if (!p->pty)
                proc_stdin_close(p);
            return;
        }
        s->off += (size_t)n;
        if (s->off == s->len) {
            p->wq_head = s->wnext;
            if (!p->wq_head)
                p->wq_tail = NULL;
            s->queued = 0;
            s->result = 1;
            write_release(s);
            stream_wake(&s->base);
        }
    }
    if (p->wq_head) {
        ev_io_start(proc_loop, &p->w_in);
        return;
    }
    ev_io_stop(proc_loop, &p->w_in);
    if (p->close_stdin_pending)
        proc_stdin_close(p);
}

void proc_on_stdin_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    stdin_pump(w->data);
}

/* ------------------------------------------------------------ output */

void proc_output_close(proc_t *p, ev_io *w, int *fd)
{
    ev_io_stop(proc_loop, w);
    /* On a PTY the master is stdin too: its write watcher goes first. */
    if (p->pty && fd == &p->fd_out)
        ev_io_stop(proc_loop, &p->w_in);
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

void proc_on_output(struct ev_loop *loop, ev_io *w, int revents)
{
    proc_t *p = w->data;
    int is_err = w == &p->r_err;
    int *fd = is_err ? &p->fd_err : &p->fd_out;
    int stream = is_err ? ST(STDERR) : p->pty ? ST(PTY) : ST(STDOUT);
    ssize_t n;
    int taken = 0;

    if (!proc_rbuf && !(proc_rbuf = outlog_buf_new(READ_SIZE)))
        return; /* out of memory: the pipe waits, the next turn tries again */
    n = util_read(*fd, proc_rbuf, READ_SIZE);
    if (n > 0) {
        const uint8_t *data;
        if (outlog_append_buf(&p->log, stream, proc_rbuf, (size_t)n,
                              (uint64_t)(ev_now(loop) * 1e9), &taken) < 0) {
            /* Followers learn of it as a gap, never as silence. */
            log_error("process %d: out of memory for output; %zd bytes dropped", (int)p->pid, n);
            outlog_drop(&p->log, stream, (size_t)n);
        } else if (p->svc && (data = outlog_newest(&p->log, (size_t)n))) {
            /* An output probe reads the bytes where the log holds them now:
             * an adopted read buffer may have moved (its slack given back). */
            svc_output(p->svc, data, (size_t)n);
        }
        if (taken)
            proc_rbuf = NULL;
        /* A process that fills the pipe gets a bigger one: fewer wakeups
         * for bulk output, no cost for short commands. */
        if (!p->big_pipes && (size_t)n >= 65536 && !p->pty) {
            p->big_pipes = 1;
            if (p->fd_out >= 0)
                fcntl(p->fd_out, F_SETPIPE_SZ, PIPE_BIG);
            if (p->fd_err >= 0)
                fcntl(p->fd_err, F_SETPIPE_SZ, PIPE_BIG);
        }
        proc_wake_streams(p, 1);
        if (outlog_paused(&p->log)) {
            p->read_paused = 1;
            ev_io_stop(loop, &p->r_out);
            ev_io_stop(loop, &p->r_err);
            ev_timer_stop(loop, &p->t_drain);
        } else if (p->state != PROC_RUNNING) {
            ev_timer_again(loop, &p->t_drain);
        }
        if (proc_kept_bytes + proc_kept_meta > g_config.max_kept_output) {
            proc_enforce_caps();
            proc_trim_running(p);
        }
        return;
    }
    if (n == -EAGAIN)
        return;
    /* EOF; EIO is a PTY whose slave side every process closed. */
    if (n < 0 && n != -EIO)
        log_warn("process %d: read %s: %s", (int)p->pid, is_err ? "stderr" : "stdout",
                 strerror((int)-n));
    proc_output_close(p, w, fd);
    if (p->pty)
        proc_stdin_fail_all(p, -EIO); /* its stdin was that pty */
    if (p->state != PROC_RUNNING && p->fd_out < 0 && p->fd_err < 0)
        proc_finalize(p);
}

/* The leader exited PROC_DRAIN_IDLE_MS ago with no output since: whatever still
 * holds the pipes (a background grandchild) no longer holds the exit. */
static int fd_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return fd >= 0 && poll(&pfd, 1, 0) == 1;
}

void proc_on_drain_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *p = w->data;
    /* A loop that comes late runs this timer before the pipes' read
     * callbacks of the same turn: output waiting in a pipe is not
     * idleness, and closing now would lose it. The readers take it; the
     * timer, repeating, looks again. */
    if (fd_readable(p->fd_out) || fd_readable(p->fd_err))
        return;
    proc_output_close(p, &p->r_out, &p->fd_out);
    proc_output_close(p, &p->r_err, &p->fd_err);
    proc_finalize(p);
}
