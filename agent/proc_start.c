/* proc_start.c - starting a process: its cgroup and user, the start job
 * handed to the spawner (or run at once), the record it makes (or a
 * service's next run), and StartProcess's answer. The checks a start must
 * pass are in proc_check.c.
 *
 * Errors: the steps of a start return 0, or -1 with a proc_start_err_t filled
 * (proc_check.c), which the caller answers; a failure of the spawn itself
 * reaches start_done(), which tells whoever waits (the request's stream, a
 * service, or the log). The handler answers everything itself. */
#include "proc_internal.h"

#include "cgroup.h"
#include "config.h"
#include "log.h"
#include "outlog.h"
#include "prio.h"
#include "service.h"
#include "spawn.h"
#include "user.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define META_OVERHEAD 512
#define MIN_WINDOW 4096

/* Strings kept for ProcessInfo go back out in proto3 string fields, which
 * must be UTF-8: protobuf-c does not check what a client sent, so a tag,
 * command or argument that is not UTF-8 is kept with U+FFFD in its place
 * (a strict client could not parse the answer otherwise). */
char *proc_strdup_utf8(const char *s) { return util_utf8_sanitize(s ? s : "", s ? strlen(s) : 0); }

static void send_started(conn_t *c, uint64_t id, int done, const proc_t *p)
{
    Response r = RESPONSE_INIT;
    ProcessStarted ps = SANDBOX__AGENT__V1__PROCESS_STARTED__INIT;
    ps.pid = (uint32_t)p->pid;
    ps.started_at_unix_nano = p->started;
    r.result_case = RES(STARTED);
    r.started = &ps;
    conn_send(c, id, done, &r);
}

/* A start in flight: everything the spawner and the record need, owned
 * here, since the request is freed when its handler returns. */
struct proc_start_job {
    spawn_job_t sj;
    proc_stream_t *s;     /* the request's stream; NULL once it went away */
    proc_t *rec;      /* a service's next run: the record it joins */
    svc_t *svc;       /* a new service's state, the record's once made */
    StartProcess *sp; /* a copy of the request */
    proc_start_ctx_t x;
    user_id_t u;
    int set_user;
    int master, out_r, err_r, in_w; /* the agent's ends */
    uint8_t veof;
    uint64_t t0;
    cg_leaf_t *cg; /* the process's cgroup, until the record takes it */
};

void proc_start_job_orphan(proc_start_job_t *j)
{
    j->s = NULL;
}

static void start_job_free(proc_start_job_t *j)
{
    /* A start that failed: its empty cgroup goes at once (a service's
     * stays: the record holds it too). */
    if (j->cg && !j->rec)
        cg_leaf_release(j->cg);
    cg_leaf_unref(j->cg);
    proc_ctx_free(&j->x);
    if (j->svc)
        svc_free(j->svc);
    if (j->sp)
        sandbox__agent__v1__start_process__free_unpacked(j->sp, NULL);
    if (j->rec)
        proc_unref(j->rec);
    free(j);
}

StartProcess *proc_start_copy(const StartProcess *sp)
{
    size_t n = sandbox__agent__v1__start_process__get_packed_size(sp);
    uint8_t *buf = malloc(n ? n : 1);
    StartProcess *copy;
    if (!buf)
        return NULL;
    sandbox__agent__v1__start_process__pack(sp, buf);
    copy = sandbox__agent__v1__start_process__unpack(NULL, n, buf);
    free(buf);
    return copy;
}

/* The start stream: waits for the spawner, then answers ProcessStarted (or
 * the start's error) and, with follow, becomes the follow stream. */
static stream_status_t start_next(stream_t *base)
{
    proc_stream_t *s = (proc_stream_t *)base;
    if (s->job)
        return STREAM_WAIT;
    if (s->start_rc < 0) {
        proc_start_reply_error(base->conn, base->id, s->start_rc, s->start_stage, s->start_req);
        return STREAM_DONE;
    }
    send_started(base->conn, base->id, !s->start_follow, s->p);
    if (!s->start_follow)
        return STREAM_DONE;
    s->kind = PROC_STREAM_FOLLOW;
    s->lines = s->start_lines;
    outlog_attach(&s->p->log, &s->cur, 0);
    s->attached = 1;
    if (s->p->svc)
        svc_follow_init(s->p->svc, &s->sf, s->cur.seq);
    base->ops = &proc_follow_ops;
    return STREAM_MORE;
}

static const stream_ops_t start_ops = {
    .name = "start",
    .next = start_next,
    .destroy = proc_stream_destroy,
};

/* A new record: what stays the same across a service's runs (identity,
 * log). NULL on ENOMEM. */
static proc_t *record_new(proc_start_job_t *j)
{
    const StartProcess *sp = j->sp;
    proc_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pidfd = -1;
    p->pty = sp->pty != NULL;
    p->lossless = sp->lossless;
    p->kill_grace_ms = sp->kill_grace_ms ? sp->kill_grace_ms : g_config.kill_grace_ms;
    p->fd_out = p->fd_err = p->fd_in = -1;
    uint64_t window = sp->output_window ? sp->output_window : g_config.default_output_window;
    window = SA_MAX(window, MIN_WINDOW);
    window = SA_MIN(window, g_config.max_kept_output);
    outlog_init(&p->log, window, sp->lossless, &proc_kept_bytes);
    p->command = proc_strdup_utf8(sp->command);
    p->tag = sp->tag && sp->tag[0] ? proc_strdup_utf8(sp->tag) : NULL;
    p->cwd = proc_strdup_utf8(sp->cwd);
    p->user = proc_strdup_utf8(j->set_user || (sp->user && sp->user[0]) ? sp->user : j->u.name);
    p->args = calloc(sp->n_args ? sp->n_args : 1, sizeof *p->args);
    p->meta = META_OVERHEAD + strlen(sp->command) + strlen(p->cwd ? p->cwd : "");
    if (p->args) {
        for (size_t i = 0; i < sp->n_args; i++) {
            if (!(p->args[i] = proc_strdup_utf8(sp->args[i])))
                break;
            p->n_args++;
            p->meta += strlen(sp->args[i]) + sizeof(char *);
        }
    }
    ev_init(&p->r_out, proc_on_output);
    ev_init(&p->r_err, proc_on_output);
    ev_init(&p->w_in, proc_on_stdin_writable);
    ev_init(&p->t_timeout, proc_on_timeout);
    ev_init(&p->t_kill, proc_on_kill);
    ev_init(&p->t_drain, proc_on_drain_idle);
    p->r_out.data = p->r_err.data = p->w_in.data = p;
    p->t_timeout.data = p->t_kill.data = p->t_drain.data = p;
    p->cg = j->cg;
    j->cg = NULL;
    if ((p->svc = j->svc)) {
        j->svc = NULL;
        svc_bind(p->svc, p);
        p->meta += svc_memory(p->svc); /* its runs' history counts as kept memory */
    }
    return p;
}

/* One run of a record: the pid, its pipes or PTY, watchers and timeout. */
static void run_begin(proc_t *p, proc_start_job_t *j, pid_t pid)
{
    const StartProcess *sp = j->sp;
    proc_state_set(p, PROC_RUNNING);
    p->status = 0;
    p->timed_out = 0;
    p->big_pipes = 0;
    p->close_stdin_pending = 0;
    p->started = util_now_unix_nano();
    p->stdin_pipe = p->pty || j->in_w >= 0;
    p->veof = j->veof;
    p->fd_out = p->pty ? j->master : j->out_r;
    p->fd_err = p->pty ? -1 : j->err_r;
    p->fd_in = p->pty ? -1 : j->in_w;
    /* The parent's ends are now the record's; the child's ends close. */
    for (int i = 0; i < j->x.n_fds; i++)
        if (j->x.fds[i] == p->fd_out || j->x.fds[i] == p->fd_err || j->x.fds[i] == p->fd_in)
            j->x.fds[i] = -1;
    ev_io_set(&p->r_out, p->fd_out, EV_READ);
    ev_io_set(&p->r_err, p->fd_err, EV_READ);
    ev_io_set(&p->w_in, p->pty ? p->fd_out : p->fd_in, EV_WRITE);
    ev_timer_set(&p->t_drain, PROC_DRAIN_IDLE_MS / 1000.0, PROC_DRAIN_IDLE_MS / 1000.0);
    /* A lossless log that a slow follower still holds keeps the new run's
     * pipes paused too. */
    p->read_paused = outlog_paused(&p->log);
    if (!p->read_paused) {
        ev_io_start(proc_loop, &p->r_out);
        if (p->fd_err >= 0)
            ev_io_start(proc_loop, &p->r_err);
    }
    if (sp->timeout_ms) {
        ev_timer_set(&p->t_timeout, sp->timeout_ms / 1000.0, 0);
        ev_timer_start(proc_loop, &p->t_timeout);
    }
    if (p->in_table) {
        proc_table_rekey(p, pid);
    } else {
        p->pid = pid;
        proc_table_add(p);
        proc_kept_meta += p->meta;
    }
    if (p->svc)
        svc_run_started(p->svc, pid, p->log.next_seq);
}

/* The spawner is done (loop thread). On success the record is made (or a
 * service's record takes the new run) whether or not anybody still waits
 * for the answer: the process runs. */
static void start_done(spawn_job_t *sj)
{
    proc_start_job_t *j = (proc_start_job_t *)sj;
    const StartProcess *sp = j->sp;
    proc_stream_t *s = j->s;
    pid_t pid = sj->pid;
    proc_t *p = j->rec;

    proc_n_spawning--;
    if (s) {
        s->job = NULL;
        s->start_rc = sj->rc;
        s->start_stage = sj->stage;
    }
    if (sj->rc < 0) {
        if (p && p->svc) {
            char err[512];
            snprintf(err, sizeof err, "restart: command '%s': %s: %s", sp->command,
                     spawn_stage_name(sj->stage), strerror(-sj->rc));
            svc_respawn_failed(p->svc, sj->rc, err);
        } else if (!s) {
            log_error("start '%s': %s: %s", sp->command, spawn_stage_name(sj->stage),
                      strerror(-sj->rc));
        }
        goto out;
    }
    if (p && p->state == PROC_FINAL) {
        kill(-pid, SIGKILL); /* the service ended meanwhile */
        goto out;
    }
    if (!p && !(p = record_new(j))) {
        kill(-pid, SIGKILL);
        if (s)
            s->start_rc = -ENOMEM;
        goto out;
    }
    run_begin(p, j, pid);
    /* The loop may have reaped it already (a short command): the exit
     * waits in the stash. Otherwise it is unreaped (only this thread
     * reaps), so its pidfd names exactly it. */
    int stashed;
    if (!proc_stash_take(pid, j->t0, &stashed)) {
        p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (p->pidfd < 0 && errno != ENOSYS)
            log_debug("process %d: pidfd_open: %s", (int)pid, strerror(errno));
    } else {
        proc_leader_exited(p, stashed);
    }
    log_debug("started process %d: %s (%zu args)", (int)pid, sp->command, sp->n_args);
    if (proc_shutdown_done) {
        /* Started while the agent was stopping: it goes with the rest. */
        proc_signal_group(p, SIGTERM);
        p->stop_group = 1;
        if (!ev_is_active(&proc_shutdown_timer)) {
            ev_timer_set(&proc_shutdown_timer, g_config.kill_grace_ms / 1000.0, 0);
            ev_timer_start(proc_loop, &proc_shutdown_timer);
        }
    }
    if (s)
        proc_stream_attach(p, s);
    if (j->rec)
        proc_wake_streams(p, 0); /* followers: ProcessRestarted */
out:
    if (!proc_n_spawning) {
        proc_stash_clear(); /* no start left to claim an exit */
        prio_started();
    }
    if (s) {
        /* The request is the stream's now, for an error message. */
        s->start_req = j->sp;
        j->sp = NULL;
        stream_wake(&s->base);
    }
    start_job_free(j);
    if (proc_shutdown_done)
        proc_shutdown_check();
}

/* The process's cgroup with its limits (the request's, else the agent's
 * defaults); a service's runs share the first run's. A limit no enabled
 * controller can hold is refused, never ignored. 0, or -1 with e filled. */
static int start_cgroup(const StartProcess *sp, proc_t *rec, proc_start_job_t *j,
                        proc_start_err_t *e)
{
    const Sandbox__Agent__V1__Limits *ql = sp->limits;
    cg_limits_t lim = {0};
    char err[512], prefix[48];
    int rc;

    if (ql) {
        lim.memory_max = ql->memory_max_bytes;
        lim.memory_swap_max = ql->memory_swap_max_bytes;
        lim.memory_high = ql->memory_high_bytes;
        lim.pids_max = ql->pids_max;
        lim.cpu_max_millicores = ql->cpu_max_millicores;
        lim.cpu_weight = ql->cpu_weight;
        lim.io_weight = ql->io_weight;
    }
    if ((rc = cg_limits_check(&lim, err, sizeof err)) < 0)
        return proc_start_refuse(
            e, rc == -EINVAL ? CODE(INVALID_ARGUMENT) : CODE(FAILED_PRECONDITION), -rc,
            "start: %s", err);
    if (!cg_available())
        return 0;
    if (cg_freeze_requested())
        return proc_start_refuse(e, CODE(FAILED_PRECONDITION), 0,
                                 "start: the workload is frozen (FreezeProcesses); thaw it first");
    if (rec) {
        if (rec->cg) {
            j->cg = rec->cg;
            cg_leaf_ref(j->cg);
        }
        return 0;
    }
    cg_limits_defaults(&lim);
    /* A service's leaf is named after its tag (letters, digits, "._-"). */
    snprintf(prefix, sizeof prefix, "p");
    if (svc_wanted(sp) && sp->tag && sp->tag[0]) {
        size_t n = 0;
        n += (size_t)snprintf(prefix, sizeof prefix, "svc-");
        for (const char *t = sp->tag; *t && n + 1 < sizeof prefix; t++)
            prefix[n++] = (char)((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
                                         (*t >= '0' && *t <= '9') || *t == '.' || *t == '_' ||
                                         *t == '-'
                                     ? *t
                                     : '_');
        prefix[n] = 0;
    }
    if ((rc = cg_leaf_new(prefix, &lim, &j->cg, err, sizeof err)) < 0)
        return proc_start_refuse_errno(e, rc, err);
    return 0;
}

/* The user the process runs as: the request's, or the agent's own; j->u
 * and j->set_user. 0, or -1 with e filled. */
static int start_user(const StartProcess *sp, proc_start_job_t *j, proc_start_err_t *e)
{
    char err[256];
    int rc, set_user = sp->user && sp->user[0];

    if (set_user) {
        if ((rc = user_resolve(sp->user, &j->u, err, sizeof err)) < 0)
            return proc_start_refuse_errno(e, rc, err);
    } else {
        j->u = *user_self(); /* resolved once: a lookup reads passwd */
    }
    if (set_user && j->u.uid == geteuid() && j->u.gid == getegid() && geteuid() != 0)
        set_user = 0; /* already that user; no privilege needed */
    j->set_user = set_user;
    return 0;
}

/* The child's stdin, stdout and stderr: a PTY, or pipes (stdin a pipe with
 * STDIN_PIPE, else /dev/null). Every end is in j->x.fds until the record
 * takes the agent's ends; the agent's ends are noted in j. 0, or -1 with e
 * filled. */
static int start_stdio(proc_start_job_t *j, proc_start_err_t *e)
{
    const StartProcess *sp = j->sp;
    spawn_req_t *sr = &j->sj.req;
    char err[256];
    int rc, master = -1, slave = -1, out[2] = {-1, -1}, errp[2] = {-1, -1}, in[2] = {-1, -1};

    if (sp->pty) {
        if ((rc = proc_pty_open(sp, &master, &slave, &j->veof)) < 0) {
            snprintf(err, sizeof err, "start: cannot open a pseudo-terminal: %s", strerror(-rc));
            return proc_start_refuse_errno(e, rc, err);
        }
        j->x.fds[j->x.n_fds++] = master;
        j->x.fds[j->x.n_fds++] = slave;
        sr->fd_in = sr->fd_out = sr->fd_err = slave;
        sr->pty = 1;
        j->master = master;
        return 0;
    }
    if ((rc = proc_pipe_make(out, 0)) < 0)
        goto pipe_fail;
    j->x.fds[j->x.n_fds++] = out[0];
    j->x.fds[j->x.n_fds++] = out[1];
    if ((rc = proc_pipe_make(errp, 0)) < 0)
        goto pipe_fail;
    j->x.fds[j->x.n_fds++] = errp[0];
    j->x.fds[j->x.n_fds++] = errp[1];
    if (sp->stdin_mode == SANDBOX__AGENT__V1__STDIN_MODE__STDIN_PIPE) {
        if ((rc = proc_pipe_make(in, 1)) < 0)
            goto pipe_fail;
        j->x.fds[j->x.n_fds++] = in[0];
        j->x.fds[j->x.n_fds++] = in[1];
    }
    sr->fd_in = in[0] >= 0 ? in[0] : proc_devnull;
    sr->fd_out = out[1];
    sr->fd_err = errp[1];
    j->out_r = out[0];
    j->err_r = errp[0];
    j->in_w = in[1];
    return 0;
pipe_fail:
    snprintf(err, sizeof err, "start: pipe: %s", strerror(-rc));
    return proc_start_refuse_errno(e, rc, err);
}

/* The rest of the spawner's request: what to run, as whom, where. */
static void start_spawn_req(proc_start_job_t *j, const char *path)
{
    const StartProcess *sp = j->sp;
    spawn_req_t *sr = &j->sj.req;
    sr->command = sp->command;
    sr->argv = j->x.argv;
    sr->envp = j->x.envp;
    sr->path = path ? path : PROC_DEFAULT_PATH;
    sr->cwd = sp->cwd;
    sr->home = j->u.home; /* the default working directory */
    sr->set_user = j->set_user;
    sr->uid = j->u.uid;
    sr->gid = j->u.gid;
    sr->n_groups = j->u.n_groups;
    sr->groups = j->u.groups;
    sr->reset_oom = proc_reset_oom;
    sr->reset_nice = proc_reset_nice;
    sr->into_cgroup = j->cg != NULL;
    sr->cgroup_fd = cg_leaf_fd(j->cg);
    sr->cgroup_by_procs = j->cg && !cg_leaf_clone_ok(j->cg);
    j->sj.done = start_done;
}

/* Everything a start needs from the request alone: checks, the user, the
 * environment, pipes or PTY, the spawn request. 0 with *jp, or -1 with e
 * filled. rec: a service's record that the run joins (referenced). */
static int start_prepare(const StartProcess *sp, proc_t *rec, proc_start_job_t **jp,
                         proc_start_err_t *e)
{
    proc_start_job_t *j = NULL;
    char err[256];
    int rc;

    if (proc_start_check(sp, rec, e) < 0)
        return -1;
    if (!(j = calloc(1, sizeof *j)))
        goto nomem;
    for (int i = 0; i < 8; i++)
        j->x.fds[i] = -1;
    j->master = j->out_r = j->err_r = j->in_w = -1;
    j->veof = 4;
    if (rec) {
        j->rec = rec;
        rec->refs++;
    } else if (svc_wanted(sp)) {
        int code = 0;
        if (!(j->svc = svc_new(proc_loop, sp, &code, err, sizeof err))) {
            proc_start_refuse(e, code, 0, "start: %s", err);
            goto fail;
        }
    }
    if (start_cgroup(sp, rec, j, e) < 0 || start_user(sp, j, e) < 0)
        goto fail;
    if (!(j->sp = proc_start_copy(sp)))
        goto nomem;
    sp = j->sp; /* from here on, the copy: it outlives the request */
    if (!(j->x.argv = calloc(sp->n_args + 2, sizeof *j->x.argv)))
        goto nomem;
    j->x.argv[0] = sp->command;
    for (size_t i = 0; i < sp->n_args; i++)
        j->x.argv[i + 1] = sp->args[i];
    if ((rc = proc_env_build(&j->x, sp, &j->u, j->set_user)) < 0)
        goto nomem;
    if (start_stdio(j, e) < 0)
        goto fail;
    start_spawn_req(j, proc_env_get(j->x.envp, (size_t)rc, "PATH"));
    *jp = j;
    return 0;
nomem:
    proc_start_refuse(e, CODE(RESOURCE_EXHAUSTED), ENOMEM, "start: out of memory");
fail:
    if (j)
        start_job_free(j);
    return -1;
}

/* Hand a prepared start to the spawner, or run it here. A lone start runs
 * right here: the handoff to the spawner costs a tenth of a short command's
 * round trip. When starts come together (another in flight, or already one
 * in this loop turn), they go to the spawner, so the loop keeps answering
 * everyone while children exec. here: run it here in any case. */
static void start_launch(proc_start_job_t *j, int here)
{
    static unsigned last_turn;
    unsigned turn = ev_iteration(proc_loop);
    j->t0 = util_now_mono_nano();
    proc_n_spawning++;
    prio_starting();
    if (here || (proc_n_spawning == 1 && last_turn != turn + 1)) {
        last_turn = turn + 1;
        j->sj.rc = spawn_run(&j->sj.req, &j->sj.pid, &j->sj.stage);
        start_done(&j->sj);
        return;
    }
    last_turn = turn + 1;
    spawn_submit(&j->sj);
}

void proc_handle_start(conn_t *c, const Request *req)
{
    proc_start_job_t *j = NULL;
    proc_start_err_t e;
    proc_stream_t *s = NULL;

    if (start_prepare(req->start, NULL, &j, &e) < 0) {
        conn_send_error(c, req->id, e.code, e.os_errno, "%s", e.msg);
        return;
    }
    if (!(s = proc_stream_new(&start_ops, PROC_STREAM_START))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "start: out of memory");
        start_job_free(j);
        return;
    }
    s->start_follow = j->sp->follow;
    s->start_lines = j->sp->follow_lines;
    if (proc_stream_register(c, req->id, s, "start") < 0) {
        start_job_free(j); /* s is gone; it had not taken j yet */
        return;
    }
    j->s = s;
    s->job = j;
    start_launch(j, 0);
}

int proc_start_detached(const StartProcess *sp, char *err, size_t n)
{
    proc_start_job_t *j;
    proc_start_err_t e;
    if (start_prepare(sp, NULL, &j, &e) < 0) {
        snprintf(err, n, "%s", e.msg);
        return -1;
    }
    /* Here, not on the spawner: once this returns the service is in the
     * table, so a client that connects next finds it. */
    start_launch(j, 1);
    return 0;
}

void proc_respawn(proc_t *p)
{
    proc_start_job_t *j;
    proc_start_err_t e;
    if (!p->svc || p->state == PROC_FINAL || p->state == PROC_RUNNING)
        return;
    if (start_prepare(svc_request(p->svc), p, &j, &e) < 0) {
        svc_respawn_failed(p->svc, e.os_errno ? -e.os_errno : -EAGAIN, e.msg);
        return;
    }
    start_launch(j, 0);
}
