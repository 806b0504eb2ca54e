/* proc_ops.c - the requests about a started process: follow, wait,
 * signal, stdin, resize, get, list, forget.
 *
 * Errors: a handler answers every error itself (handler.h); so does
 * lookup(), which returns NULL when it did. */
#include "proc_internal.h"

#include "cgroup.h"
#include "outlog.h"
#include "service.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The process named by pid, answering the error itself when there is none. */
static proc_t *lookup(conn_t *c, uint64_t id, uint32_t pid, const char *op)
{
    proc_t *p;
    if (pid == 0) {
        conn_send_error(c, id, CODE(INVALID_ARGUMENT), 0, "%s: pid 0 is not a process", op);
        return NULL;
    }
    if (!(p = proc_find_pid(pid)))
        conn_send_error(c, id, CODE(NOT_FOUND), ESRCH,
                        "%s: process %u: not started by this agent, or already forgotten", op,
                        pid);
    return p;
}

/* lookup(), or with pid 0 and a tag the newest process with that tag (a
 * running one first). */
static proc_t *lookup_pid_or_tag(conn_t *c, uint64_t id, uint32_t pid, const char *tag,
                                 const char *op)
{
    proc_t *p;
    if (pid || !tag || !tag[0])
        return lookup(c, id, pid, op);
    if (!(p = proc_find(0, tag)))
        conn_send_error(c, id, CODE(NOT_FOUND), 0, "%s: no process has tag '%s'", op, tag);
    return p;
}

void proc_handle_follow(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__FollowOutput *f = req->follow;
    proc_t *p;
    proc_stream_t *s;

    if (!(p = lookup_pid_or_tag(c, req->id, f->pid, f->tag, "follow")))
        return;
    if (!(s = proc_stream_new(&proc_follow_ops, PROC_STREAM_FOLLOW))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "follow: out of memory");
        return;
    }
    if (outlog_attach(&p->log, &s->cur, f->from_sequence) < 0) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0,
                        "follow: from_sequence %llu is beyond the output of process %d so far "
                        "(%llu bytes)",
                        (unsigned long long)f->from_sequence, (int)p->pid,
                        (unsigned long long)p->log.next_seq);
        free(s);
        return;
    }
    s->attached = 1;
    s->lines = f->lines;
    s->no_wait = f->no_wait;
    if (p->svc)
        svc_follow_init(p->svc, &s->sf, s->cur.seq);
    proc_stream_attach(p, s);
    proc_stream_register(c, req->id, s, "follow");
}

void proc_handle_wait(conn_t *c, const Request *req)
{
    proc_t *p = lookup(c, req->id, req->wait->pid, "wait");
    proc_stream_t *s;
    if (!p)
        return;
    if (!(s = proc_stream_new(&proc_wait_ops, PROC_STREAM_WAIT))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "wait: out of memory");
        return;
    }
    proc_stream_attach(p, s);
    proc_stream_register(c, req->id, s, "wait");
}

void proc_handle_signal(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__SendSignal *sg = req->signal;
    proc_t *p;
    if (sg->signal < 0 || sg->signal >= 65) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "signal: %d is not a valid signal number (0..64)", sg->signal);
        return;
    }
    if (!(p = lookup(c, req->id, sg->pid, "signal")))
        return;
    if (p->state != PROC_RUNNING) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), ESRCH,
                        "signal: process %d has already exited", (int)p->pid);
        return;
    }
    if (p->svc)
        svc_signalled(p->svc, sg->signal); /* a kill asked for is not restarted */
    if (sg->tree) {
        /* Every process in its cgroup, whatever group or session it is in. */
        int rc;
        if (!p->cg) {
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), EOPNOTSUPP,
                            "signal: tree needs cgroups, and process %d has none (%s)",
                            (int)p->pid,
                            cg_available() ? "started without" : cg_unavailable_reason());
            return;
        }
        if ((rc = cg_leaf_signal(p->cg, sg->signal)) < 0 && rc != -ESRCH) {
            conn_send_errno(c, req->id, rc, "signal %d to the cgroup of process %d: %s",
                            sg->signal, (int)p->pid, strerror(-rc));
            return;
        }
        proc_send_ack(c, req->id);
        return;
    }
    if (sg->group && sg->signal == SIGKILL) {
        /* cgroup.kill, or without cgroups the group until it is empty, and
         * what left it: either way the whole tree. */
        proc_signal_all(p, SIGKILL);
        proc_send_ack(c, req->id);
        return;
    }
    int rc = sg->group ? proc_signal_group(p, sg->signal) : proc_signal_leader(p, sg->signal);
    if (rc == -ESRCH) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), ESRCH,
                        "signal: process %d has already exited", (int)p->pid);
        return;
    }
    if (rc < 0) {
        conn_send_errno(c, req->id, rc, "signal %d to %s %d: %s", sg->signal,
                        sg->group ? "process group" : "process", (int)p->pid, strerror(-rc));
        return;
    }
    proc_send_ack(c, req->id);
}

/* Keep the bytes of d from *done on, which the pipe has not taken: where
 * they arrived (conn_keep_bulk) when they are most of d, else a copy of
 * just them (*done becomes 0). */
static int keep_rest(conn_t *c, ProtobufCBinaryData *d, size_t *done, conn_bulk_t *kept)
{
    size_t rest = d->len - *done;
    if (rest * 2 >= d->len)
        return conn_keep_bulk(c, d, kept);
    if (!(kept->block = kept->data = malloc(rest)))
        return -ENOMEM;
    memcpy(kept->data, d->data + *done, rest);
    kept->len = rest;
    *done = 0;
    return 0;
}

void proc_handle_write_stdin(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__WriteStdin *w = req->write_stdin;
    proc_t *p = lookup(c, req->id, w->pid, "write_stdin");
    proc_stream_t *s;
    size_t done = 0;
    int rc, fd;

    if (!p)
        return;
    if (!p->stdin_pipe) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "write_stdin: process %d was started without a stdin pipe "
                        "(stdin_mode STDIN_PIPE or a pty)",
                        (int)p->pid);
        return;
    }
    fd = proc_stdin_fd(p);
    if (fd < 0 || p->state == PROC_FINAL || p->close_stdin_pending) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), EPIPE,
                        "write_stdin: stdin of process %d is closed", (int)p->pid);
        return;
    }
    /* The common case: the pipe has room and nothing is queued ahead. */
    while (!p->wq_head && done < w->data.len) {
        ssize_t n = write(fd, w->data.data + done, w->data.len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            rc = -errno;
            conn_send_errno(c, req->id, rc, "write_stdin: stdin of process %d: %s", (int)p->pid,
                            strerror(-rc));
            return;
        }
        done += (size_t)n;
    }
    if (done == w->data.len) {
        proc_send_ack(c, req->id);
        return;
    }
    /* The rest waits for the pipe, counted like an upload's chunk: past
     * the connection's or the agent's budget, the connection is not read
     * until some is written. One write per process waits with its
     * connection going on (a Ping or a Cancel is served); one queued behind
     * it holds its connection's input until it is written, so the requests
     * behind it wait in the socket. */
    conn_bulk_t kept = {0};
    if (keep_rest(c, &((Request *)req)->write_stdin->data, &done, &kept) < 0 ||
        !(s = proc_stream_new(&proc_write_ops, PROC_STREAM_WRITE))) {
        free(kept.block);
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM,
                        "write_stdin: out of memory");
        return;
    }
    s->p = p;
    p->refs++;
    if (proc_stream_register(c, req->id, s, "write_stdin") < 0) {
        free(kept.block);
        return;
    }
    s->block = kept.block;
    s->data = kept.data;
    s->len = kept.len;
    s->off = done;
    s->charged = s->len - done;
    conn_upload_take(c, s->charged);
    if (p->wq_head) {
        s->held = 1;
        conn_hold_input(c, 1);
    }
    s->queued = 1;
    if (p->wq_tail)
        p->wq_tail->wnext = s;
    else
        p->wq_head = s;
    p->wq_tail = s;
    ev_io_start(proc_loop, &p->w_in);
}

void proc_handle_close_stdin(conn_t *c, const Request *req)
{
    proc_t *p = lookup(c, req->id, req->close_stdin->pid, "close_stdin");
    if (!p)
        return;
    if (!p->stdin_pipe) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "close_stdin: process %d has no stdin pipe", (int)p->pid);
        return;
    }
    if (p->pty) {
        /* The terminal's EOF character: read() in the child returns 0 at
         * the start of a line (canonical mode). */
        if (p->fd_out >= 0 && write(p->fd_out, &p->veof, 1) < 0 && errno != EAGAIN) {
            conn_send_errno(c, req->id, -errno, "close_stdin: pty of process %d: %s",
                            (int)p->pid, strerror(errno));
            return;
        }
    } else if (p->fd_in < 0 || p->close_stdin_pending) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), EPIPE,
                        "close_stdin: stdin of process %d is already closed", (int)p->pid);
        return;
    } else if (p->wq_head) {
        p->close_stdin_pending = 1; /* after the queued writes */
    } else {
        proc_stdin_close(p);
    }
    proc_send_ack(c, req->id);
}

void proc_handle_resize(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__ResizePty *rz = req->resize;
    proc_t *p = lookup(c, req->id, rz->pid, "resize");
    struct winsize ws = {0};
    if (!p)
        return;
    if (!p->pty) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), ENOTTY,
                        "resize: process %d does not run on a pty", (int)p->pid);
        return;
    }
    if (!rz->rows || !rz->cols || rz->rows > 65535 || rz->cols > 65535) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "resize: %ux%u is not a valid size (1..65535 each)", rz->rows, rz->cols);
        return;
    }
    if (p->fd_out < 0) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "resize: the pty of process %d is closed", (int)p->pid);
        return;
    }
    ws.ws_row = (unsigned short)rz->rows;
    ws.ws_col = (unsigned short)rz->cols;
    if (ioctl(p->fd_out, TIOCSWINSZ, &ws) < 0) {
        conn_send_errno(c, req->id, -errno, "resize: pty of process %d: %s", (int)p->pid,
                        strerror(errno));
        return;
    }
    proc_send_ack(c, req->id);
}

static void fill_info(const proc_t *p, ProcessInfo *in, ProcessExit *ex, int with_args)
{
    in->pid = (uint32_t)p->pid;
    in->tag = p->tag ? p->tag : (char *)"";
    in->command = p->command ? p->command : (char *)"";
    in->n_args = with_args ? p->n_args : 0;
    in->args = p->args;
    in->cwd = p->cwd ? p->cwd : (char *)"";
    in->user = p->user ? p->user : (char *)"";
    in->state = p->state == PROC_RUNNING ? SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING
                                         : SANDBOX__AGENT__V1__PROCESS_STATE__EXITED;
    if (p->state != PROC_RUNNING) {
        proc_fill_exit(p, ex);
        in->exit = ex;
        in->ended_at_unix_nano = p->ended;
    }
    in->started_at_unix_nano = p->started;
    in->stdout_bytes = p->log.total[ST(STDOUT)];
    in->stderr_bytes = p->log.total[ST(STDERR)];
    in->pty_bytes = p->log.total[ST(PTY)];
    in->pty = p->pty;
    in->stdin_mode = p->stdin_pipe ? SANDBOX__AGENT__V1__STDIN_MODE__STDIN_PIPE
                                   : SANDBOX__AGENT__V1__STDIN_MODE__STDIN_NULL;
    in->oldest_sequence = p->log.oldest_seq;
    in->next_sequence = p->log.next_seq;
    in->lossless = p->lossless;
    in->output_window = p->log.window;
    if (p->cg) {
        cg_stats_t live;
        const cg_stats_t *st = proc_cg_stats(p, &live);
        in->cgroup = (char *)cg_leaf_path(p->cg);
        in->cpu_user_nano = st->cpu_user_nano;
        in->cpu_system_nano = st->cpu_system_nano;
        in->memory_current_bytes = st->memory_current;
        in->memory_peak_bytes = st->memory_peak;
        /* The other figures are final once it exited; this one is the
         * cgroup's members now. At the exit a killed member may still be
         * on its way out (its pipes closed, its task not yet gone), and a
         * background child may outlive the leader: a count taken then
         * would stay wrong for good. */
        in->pids_current = p->state == PROC_FINAL ? cg_leaf_pids(p->cg) : st->pids_current;
        in->oom_killed = st->oom_killed;
    }
}

/* fill_info, and the service's fields; last is storage for last_exit. */
static void fill_info_svc(const proc_t *p, ProcessInfo *in, ProcessExit *ex, ProcessExit *last,
                          int with_args)
{
    fill_info(p, in, ex, with_args);
    if (p->svc)
        svc_fill_info(p->svc, in, last);
}

int proc_send_info(conn_t *c, uint64_t id, int done, const proc_t *p)
{
    Response r = RESPONSE_INIT;
    ProcessInfo in = SANDBOX__AGENT__V1__PROCESS_INFO__INIT;
    ProcessExit ex = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
    ProcessExit last = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
    int rc;
    fill_info_svc(p, &in, &ex, &last, 1);
    r.result_case = RES(PROCESS);
    r.process = &in;
    if ((rc = conn_send_try(c, id, done, &r)) == -EMSGSIZE) {
        in.n_args = 0; /* args that fill a frame are left out */
        rc = conn_send(c, id, done, &r);
    }
    return rc;
}

void proc_handle_get(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__GetProcess *g = req->get_process;
    proc_t *p = lookup_pid_or_tag(c, req->id, g->pid, g->tag, "get_process");
    if (p)
        proc_send_info(c, req->id, 1, p);
}

/* Listed without include_exited: running, or a service between runs. */
static int listed(const proc_t *p)
{
    return p->state == PROC_RUNNING || (p->svc && svc_live(p->svc));
}

/* One ProcessList per frame: when the table does not fit in one, several
 * responses with done = false come first. */
void proc_handle_list(conn_t *c, const Request *req)
{
    int all = req->list_processes->include_exited;
    size_t n = 0, cap = 0, bytes = 0, limit = conn_max_event(c);
    ProcessInfo *infos = NULL, **ptrs = NULL;
    ProcessExit *exits = NULL, *lasts = NULL;
    Response r = RESPONSE_INIT;
    ProcessList pl = SANDBOX__AGENT__V1__PROCESS_LIST__INIT;

    for (proc_t *p = proc_all_head; p; p = p->next)
        if (all || listed(p))
            cap++;
    if (cap && (!(infos = calloc(cap, sizeof *infos)) || !(ptrs = calloc(cap, sizeof *ptrs)) ||
                !(exits = calloc(cap, sizeof *exits)) || !(lasts = calloc(cap, sizeof *lasts)))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "list: out of memory");
        goto out;
    }
    r.result_case = RES(PROCESSES);
    r.processes = &pl;
    for (proc_t *p = proc_all_head; p; p = p->next) {
        if (!all && !listed(p))
            continue;
        ProcessInfo *in = &infos[n];
        ProcessExit *ex = &exits[n];
        sandbox__agent__v1__process_info__init(in);
        sandbox__agent__v1__process_exit__init(ex);
        sandbox__agent__v1__process_exit__init(&lasts[n]);
        fill_info_svc(p, in, ex, &lasts[n], 1);
        size_t sz = sandbox__agent__v1__process_info__get_packed_size(in) + 8;
        if (sz > limit / 2) {
            in->n_args = 0;
            sz = sandbox__agent__v1__process_info__get_packed_size(in) + 8;
        }
        if (bytes + sz > limit && pl.n_processes) {
            if (conn_send(c, req->id, 0, &r) < 0)
                goto out; /* answered with an Error (done), or the connection closes */
            pl.n_processes = 0;
            bytes = 0;
        }
        ptrs[n] = in;
        if (!pl.n_processes)
            pl.processes = &ptrs[n];
        pl.n_processes++;
        bytes += sz;
        n++;
    }
    conn_send(c, req->id, 1, &r);
out:
    free(infos);
    free(ptrs);
    free(exits);
    free(lasts);
}

void proc_handle_forget(conn_t *c, const Request *req)
{
    proc_t *p = lookup(c, req->id, req->forget->pid, "forget");
    if (!p)
        return;
    if (p->state != PROC_FINAL) {
        const char *is = p->state == PROC_RUNNING ? "running"
                         : p->state == PROC_BETWEEN
                             ? "a service waiting to restart (StopService it first)"
                             : "still delivering its output";
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "forget: process %d is %s; only exited processes can be forgotten",
                        (int)p->pid, is);
        return;
    }
    proc_table_remove(p);
    proc_send_ack(c, req->id);
}
