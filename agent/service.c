/* service.c - see service.h.
 *
 * States and what moves them (one place, as s6 keeps it):
 *   run starts          -> STARTING (a ready probe) or READY (none)
 *   ready probe passes  -> READY
 *   health fails N times-> UNHEALTHY (killed and restarted under a policy)
 *   health passes       -> READY
 *   run ends            -> BACKING_OFF (another run is due), or
 *                          STOPPED (by policy, StopService, a signal sent
 *                          through SendSignal, shutdown), or
 *                          FAILED (max_restarts consecutive restarts spent)
 *   backoff elapses     -> the next run starts (STARTING or READY)
 *   StopService         -> the run gets the signal, SIGKILL after grace;
 *                          between runs: STOPPED at once
 * A service is "over" once STOPPED or FAILED: its tag is free for a new one
 * and its record is an exited process like any other.
 *
 * Runs are remembered in a ring of SVC_HISTORY (start, ready and end
 * positions in the one log, the exit), so a follower that lags behind a
 * crash loop still gets each run's ProcessExit and ProcessRestarted in
 * order; one more than SVC_HISTORY runs behind skips to the oldest run
 * remembered (ProcessRestarted.restarts then jumps, which says so).
 */
#include "service.h"

#include "conn.h"
#include "errcode.h"
#include "log.h"
#include "probe.h"
#include "proc.h"
#include "svcfile.h"
#include "user.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SVC_HISTORY 64
#define DEFAULT_BACKOFF_INITIAL_MS 100
#define DEFAULT_BACKOFF_MAX_MS 30000
#define DEFAULT_RESET_AFTER_MS 10000
#define DEFAULT_FAILURE_THRESHOLD 3
#define MODE(x) SANDBOX__AGENT__V1__RESTART_POLICY__MODE__##x
#define SSTATE(x) SANDBOX__AGENT__V1__SERVICE_STATE__##x

typedef struct svc_run {
    uint32_t index, restarts;
    pid_t pid;
    uint64_t start_seq, ready_seq, end_seq;
    uint64_t started_at, ready_at, ended_at;
    int status, timed_out, ready, ended;
} svc_run_t;

typedef struct svc_waiter svc_waiter_t;

struct svc {
    struct ev_loop *loop;
    proc_t *p;
    StartProcess *sp; /* each run starts from this copy */
    int mode;
    uint32_t max_restarts, backoff_initial, backoff_max, reset_after;
    int state;
    int over;           /* STOPPED or FAILED: no run will follow */
    int listed;         /* in g_live */
    uint32_t restarts;  /* restarts so far */
    uint32_t consecutive; /* restarts since a run stayed up reset_after */
    uint64_t run_mono;  /* when the current run started */
    uint64_t signals;   /* bit n: the client sent signal n to this run */
    int stop_requested; /* StopService: no restart */
    int killing;        /* a stop or health kill is under way */
    int health_kill;    /* this run was killed as unhealthy: a failure */
    int respawning;
    int waiting;        /* between runs: counted in g_waiting */
    uint32_t stop_grace_ms;
    int stop_signal;
    ev_timer t_restart, t_kill;
    uint64_t next_restart;
    probe_t *ready, *health;
    uint32_t health_fails, failure_threshold;
    user_id_t user;
    char **env;
    char last_error[256];
    svc_run_t runs[SVC_HISTORY];
    uint32_t n_runs;
    svc_waiter_t *waiters;
    svc_t *lnext, *lprev; /* g_live */
};

/* Live services (not over), for tags and shutdown. */
static svc_t *g_live;
static int g_shutting_down;
static uint64_t g_rand;
static unsigned g_waiting;

unsigned svc_count_waiting(void) { return g_waiting; }

static void set_waiting(svc_t *s, int waiting)
{
    if (s->waiting == waiting)
        return;
    s->waiting = waiting;
    if (waiting)
        g_waiting++;
    else
        g_waiting--;
}

static void live_add(svc_t *s)
{
    SA_LIST_PUSH(g_live, s, lnext, lprev);
    s->listed = 1;
}

static void live_remove(svc_t *s)
{
    if (!s->listed)
        return;
    SA_LIST_UNLINK(g_live, s, lnext, lprev);
    s->listed = 0;
}

static svc_t *live_find_tag(const char *tag)
{
    for (svc_t *s = g_live; s; s = s->lnext)
        if (s->sp->tag && !strcmp(s->sp->tag, tag))
            return s;
    return NULL;
}

static svc_run_t *run_at(svc_t *s, uint32_t index) { return &s->runs[(index - 1) % SVC_HISTORY]; }
static svc_run_t *run_cur(svc_t *s) { return s->n_runs ? run_at(s, s->n_runs) : NULL; }

/* ------------------------------------------------------------ waiters */

enum wkind { W_READY, W_STOP };

struct svc_waiter {
    stream_t base;
    enum wkind kind;
    svc_t *svc;
    proc_t *p; /* referenced: the record (and so svc) outlives the waiter */
    ev_timer deadline;
    uint32_t timeout_ms;
    int expired;
    svc_waiter_t *next, *prev;
};

static void wake_waiters(svc_t *s)
{
    for (svc_waiter_t *w = s->waiters; w; w = w->next)
        stream_wake(&w->base);
}

static void set_state(svc_t *s, int state)
{
    if (s->state == state)
        return;
    s->state = state;
    wake_waiters(s);
}

static const char *state_name(int st)
{
    switch (st) {
    case SSTATE(STARTING): return "starting";
    case SSTATE(READY): return "ready";
    case SSTATE(UNHEALTHY): return "unhealthy";
    case SSTATE(BACKING_OFF): return "backing off";
    case SSTATE(STOPPED): return "stopped";
    case SSTATE(FAILED): return "failed";
    default: return "-";
    }
}

static void describe_exit(int status, int timed_out, char *buf, size_t n)
{
    if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d%s", WTERMSIG(status),
                 timed_out ? " after its timeout" : "");
    else
        snprintf(buf, n, "exit code %d", WEXITSTATUS(status));
}

static stream_status_t waiter_next(stream_t *base)
{
    svc_waiter_t *w = (svc_waiter_t *)base;
    svc_t *s = w->svc;
    const svc_run_t *r = run_cur(s);
    char ex[96] = "";

    if (w->kind == W_STOP) {
        if (!proc_final(w->p))
            return STREAM_WAIT;
        proc_send_info(base->conn, base->id, 1, w->p);
        return STREAM_DONE;
    }
    if (!s->over && r && !r->ended && r->ready) {
        proc_send_info(base->conn, base->id, 1, w->p);
        return STREAM_DONE;
    }
    if (s->over) {
        if (r && r->ended)
            describe_exit(r->status, r->timed_out, ex, sizeof ex);
        conn_send_error(base->conn, base->id, CODE(FAILED_PRECONDITION), 0,
                        "wait_ready: process %d %s%s (%s%s%s%s)", (int)proc_pid(w->p),
                        s->state == SSTATE(FAILED) ? "gave up" : "exited",
                        r && r->ready ? "" : " before it was ready", ex,
                        s->restarts ? ", after restarts" : "", s->last_error[0] ? "; last error: " : "",
                        s->last_error);
        return STREAM_DONE;
    }
    if (w->expired) {
        conn_send_error(base->conn, base->id, CODE(DEADLINE_EXCEEDED), ETIMEDOUT,
                        "wait_ready: process %d not ready within %u ms (%s, %u restarts): %s",
                        (int)proc_pid(w->p), w->timeout_ms, state_name(s->state), s->restarts,
                        s->last_error[0] ? s->last_error : "no probe attempt finished yet");
        return STREAM_DONE;
    }
    return STREAM_WAIT;
}

static void waiter_destroy(stream_t *base)
{
    svc_waiter_t *w = (svc_waiter_t *)base;
    ev_timer_stop(w->svc->loop, &w->deadline);
    SA_LIST_UNLINK(w->svc->waiters, w, next, prev);
    proc_unref(w->p); /* may free the record and its svc: last */
    free(w);
}

static const stream_ops_t waiter_ops = {
    .name = "wait_ready",
    .next = waiter_next,
    .destroy = waiter_destroy,
};

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    svc_waiter_t *w = t->data;
    w->expired = 1;
    stream_wake(&w->base);
}

static void waiter_add(conn_t *c, uint64_t id, svc_t *s, enum wkind kind, uint32_t timeout_ms,
                       const char *op)
{
    svc_waiter_t *w = calloc(1, sizeof *w);
    int rc;
    if (!w) {
        conn_send_error(c, id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "%s: out of memory", op);
        return;
    }
    w->base.ops = &waiter_ops;
    w->kind = kind;
    w->svc = s;
    w->p = s->p;
    proc_ref(w->p);
    w->timeout_ms = timeout_ms;
    ev_init(&w->deadline, on_deadline);
    w->deadline.data = w;
    SA_LIST_PUSH(s->waiters, w, next, prev);
    if ((rc = conn_stream_add(c, &w->base, id)) < 0) {
        waiter_destroy(&w->base);
        conn_send_errno(c, id, rc, "%s: %s", op,
                        rc == -EMFILE ? "too many requests in flight on this connection"
                                      : strerror(-rc));
        return;
    }
    if (timeout_ms) {
        ev_timer_set(&w->deadline, timeout_ms / 1000.0, 0);
        ev_timer_start(s->loop, &w->deadline);
    }
}

/* ------------------------------------------------------------ create */

int svc_wanted(const StartProcess *sp)
{
    return (sp->restart && sp->restart->mode != MODE(NEVER)) || sp->ready || sp->health;
}

static void on_ready_result(void *arg, int ok, const char *err);
static void on_health_result(void *arg, int ok, const char *err);
static void on_restart(struct ev_loop *loop, ev_timer *t, int revents);
static void on_kill(struct ev_loop *loop, ev_timer *t, int revents);

static int is_exec(const Probe *pr)
{
    return pr && pr->check_case == SANDBOX__AGENT__V1__PROBE__CHECK_EXEC;
}

svc_t *svc_new(struct ev_loop *loop, const StartProcess *sp, int *code, char *err, size_t n)
{
    const Sandbox__Agent__V1__RestartPolicy *rp = sp->restart;
    svc_t *s = NULL;
    probe_env_t pe = {0};
    int set_user = sp->user && sp->user[0];

    *code = CODE(INVALID_ARGUMENT);
    if (rp && (rp->mode < MODE(NEVER) || rp->mode > MODE(ALWAYS))) {
        snprintf(err, n, "restart mode %d is not NEVER, ON_FAILURE or ALWAYS", (int)rp->mode);
        return NULL;
    }
    if (rp && rp->mode != MODE(NEVER)) {
        if (!sp->tag || !sp->tag[0]) {
            snprintf(err, n, "a restart policy needs a tag: the service's name across runs");
            return NULL;
        }
        if (rp->backoff_max_ms && rp->backoff_initial_ms > rp->backoff_max_ms) {
            snprintf(err, n, "backoff_initial_ms %u is above backoff_max_ms %u",
                     rp->backoff_initial_ms, rp->backoff_max_ms);
            return NULL;
        }
        if (live_find_tag(sp->tag)) {
            *code = CODE(ALREADY_EXISTS);
            snprintf(err, n, "a service with tag '%s' is already running (StopService it first)",
                     sp->tag);
            return NULL;
        }
    }
    if (sp->ready && probe_check(sp->ready, 1, err, n) < 0)
        return NULL;
    if (sp->health && probe_check(sp->health, 0, err, n) < 0)
        return NULL;
    if (!(s = calloc(1, sizeof *s)))
        goto nomem;
    s->loop = loop;
    ev_init(&s->t_restart, on_restart);
    ev_init(&s->t_kill, on_kill);
    s->t_restart.data = s->t_kill.data = s;
    if (!(s->sp = proc_start_copy(sp)))
        goto nomem;
    /* Each run answers its own start; the copy must not follow anything. */
    s->sp->follow = 0;
    s->mode = rp ? (int)rp->mode : MODE(NEVER);
    s->max_restarts = rp ? rp->max_restarts : 0;
    s->backoff_initial = rp && rp->backoff_initial_ms ? rp->backoff_initial_ms
                                                      : DEFAULT_BACKOFF_INITIAL_MS;
    s->backoff_max = rp && rp->backoff_max_ms ? rp->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (s->backoff_max < s->backoff_initial)
        s->backoff_max = s->backoff_initial;
    s->reset_after = rp && rp->reset_after_ms ? rp->reset_after_ms : DEFAULT_RESET_AFTER_MS;
    s->failure_threshold = sp->health && sp->health->failure_threshold
                               ? sp->health->failure_threshold
                               : DEFAULT_FAILURE_THRESHOLD;
    if (is_exec(sp->ready) || is_exec(sp->health)) {
        /* An exec probe runs as the service's user, in its cwd, with its
         * env entries: it may do exactly what the service may. */
        char uerr[256];
        int rc = user_resolve(set_user ? sp->user : NULL, &s->user, uerr, sizeof uerr);
        if (rc < 0) {
            *code = errcode_from_errno(rc);
            snprintf(err, n, "%s", uerr);
            goto fail;
        }
        if (set_user && s->user.uid == geteuid() && s->user.gid == getegid() && geteuid() != 0)
            set_user = 0;
        if (!(s->env = calloc(sp->n_env + 1, sizeof *s->env)))
            goto nomem;
        for (size_t i = 0; i < sp->n_env; i++) {
            size_t len = strlen(sp->env[i]->key) + strlen(sp->env[i]->value) + 2;
            if (!(s->env[i] = malloc(len)))
                goto nomem;
            snprintf(s->env[i], len, "%s=%s", sp->env[i]->key, sp->env[i]->value);
        }
        pe.user = &s->user;
        pe.set_user = set_user;
        pe.cwd = sp->cwd;
        pe.env = s->env;
    }
    if (sp->ready && !(s->ready = probe_new(loop, sp->ready, 1, &pe, on_ready_result, s)))
        goto nomem;
    if (sp->health && !(s->health = probe_new(loop, sp->health, 0, &pe, on_health_result, s)))
        goto nomem;
    if (s->mode != MODE(NEVER))
        live_add(s);
    return s;
nomem:
    *code = CODE(RESOURCE_EXHAUSTED);
    snprintf(err, n, "out of memory");
fail:
    svc_free(s);
    return NULL;
}

void svc_free(svc_t *s)
{
    if (!s)
        return;
    live_remove(s);
    set_waiting(s, 0);
    ev_timer_stop(s->loop, &s->t_restart);
    ev_timer_stop(s->loop, &s->t_kill);
    probe_free(s->ready);
    probe_free(s->health);
    if (s->env)
        for (size_t i = 0; s->env[i]; i++)
            free(s->env[i]);
    free(s->env);
    if (s->sp)
        sandbox__agent__v1__start_process__free_unpacked(s->sp, NULL);
    free(s);
}

void svc_bind(svc_t *s, proc_t *p) { s->p = p; }
const StartProcess *svc_request(const svc_t *s) { return s->sp; }
int svc_live(const svc_t *s) { return !s->over; }

size_t svc_memory(const svc_t *s)
{
    return sizeof *s + sandbox__agent__v1__start_process__get_packed_size(s->sp);
}

/* ------------------------------------------------------------ runs */

static void kill_run(svc_t *s, int sig, uint32_t grace_ms)
{
    if (!proc_running(s->p))
        return;
    proc_signal_all(s->p, sig);
    s->killing = 1;
    ev_timer_stop(s->loop, &s->t_kill);
    ev_timer_set(&s->t_kill, grace_ms / 1000.0, 0);
    ev_timer_start(s->loop, &s->t_kill);
}

static void on_kill(struct ev_loop *loop, ev_timer *t, int revents)
{
    svc_t *s = t->data;
    if (proc_running(s->p))
        proc_signal_all(s->p, SIGKILL);
}

void svc_run_started(svc_t *s, pid_t pid, uint64_t seq)
{
    svc_run_t *r;
    s->respawning = 0;
    set_waiting(s, 0);
    s->n_runs++;
    r = run_at(s, s->n_runs);
    memset(r, 0, sizeof *r);
    r->index = s->n_runs;
    r->restarts = s->restarts;
    r->pid = pid;
    r->start_seq = seq;
    r->started_at = util_now_unix_nano();
    s->run_mono = util_now_mono_nano();
    s->signals = 0;
    s->health_kill = 0;
    s->killing = 0;
    s->health_fails = 0;
    s->next_restart = 0;
    if (s->n_runs > 1)
        log_info("service '%s': run %u started, pid %d (%u restarts)", s->sp->tag, r->index,
                 (int)pid, s->restarts);
    if (s->stop_requested || g_shutting_down) {
        /* Stopped while this run was being started. */
        set_state(s, SSTATE(STARTING));
        kill_run(s, s->stop_signal ? s->stop_signal : SIGTERM, s->stop_grace_ms);
        return;
    }
    if (s->ready) {
        set_state(s, SSTATE(STARTING));
        probe_start(s->ready);
    } else {
        r->ready = 1;
        r->ready_seq = seq;
        r->ready_at = r->started_at;
        set_state(s, SSTATE(READY));
        if (s->health)
            probe_start(s->health);
    }
}

/* The next delay: initial * 2^consecutive, at most backoff_max, less a
 * random quarter (jitter that still grows: 2 x 3/4 > 1). */
static uint64_t backoff_ms(svc_t *s)
{
    uint64_t d = s->backoff_initial;
    for (uint32_t i = 0; i < s->consecutive && d < s->backoff_max; i++)
        d *= 2;
    if (d > s->backoff_max)
        d = s->backoff_max;
    if (!g_rand)
        g_rand = util_now_mono_nano() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    g_rand ^= g_rand << 13;
    g_rand ^= g_rand >> 7;
    g_rand ^= g_rand << 17;
    return d - (d / 4 ? g_rand % (d / 4 + 1) : 0);
}

/* The service is over: its tag is free, waiters hear of it. */
static void set_over(svc_t *s, int state)
{
    s->over = 1;
    s->respawning = 0;
    set_waiting(s, 0);
    ev_timer_stop(s->loop, &s->t_restart);
    ev_timer_stop(s->loop, &s->t_kill);
    probe_stop(s->ready);
    probe_stop(s->health);
    live_remove(s);
    s->state = -1;
    set_state(s, state);
}

static void schedule_restart(svc_t *s)
{
    uint64_t d = backoff_ms(s);
    set_waiting(s, 1);
    s->consecutive++;
    s->next_restart = util_now_unix_nano() + d * 1000000ull;
    ev_timer_set(&s->t_restart, (double)d / 1000.0, 0);
    ev_timer_start(s->loop, &s->t_restart);
    set_state(s, SSTATE(BACKING_OFF));
}

static int killed_by_client(const svc_t *s, int status)
{
    static const int ending[] = {SIGTERM, SIGINT, SIGQUIT, SIGKILL};
    if (WIFSIGNALED(status) && WTERMSIG(status) < 64 && (s->signals >> WTERMSIG(status)) & 1)
        return 1;
    for (size_t i = 0; i < SA_ARRAY_LEN(ending); i++)
        if ((s->signals >> ending[i]) & 1)
            return 1;
    return 0;
}

int svc_run_ended(svc_t *s, int status, int timed_out, uint64_t ended_at, uint64_t seq)
{
    svc_run_t *r = run_cur(s);
    char ex[96];
    int failure;

    ev_timer_stop(s->loop, &s->t_kill);
    probe_stop(s->ready);
    probe_stop(s->health);
    if (r && !r->ended) {
        r->ended = 1;
        r->end_seq = seq;
        r->status = status;
        r->timed_out = timed_out;
        r->ended_at = ended_at;
    }
    describe_exit(status, timed_out, ex, sizeof ex);
    failure = !WIFEXITED(status) || WEXITSTATUS(status) != 0 || timed_out || s->health_kill;
    if (g_shutting_down || s->stop_requested || killed_by_client(s, status) ||
        s->mode == MODE(NEVER) || (s->mode == MODE(ON_FAILURE) && !failure)) {
        if (s->mode != MODE(NEVER))
            log_info("service '%s': stopped (%s)", s->sp->tag, ex);
        set_over(s, SSTATE(STOPPED));
        return 0;
    }
    if (util_now_mono_nano() - s->run_mono >= (uint64_t)s->reset_after * 1000000ull)
        s->consecutive = 0;
    if (s->max_restarts && s->consecutive >= s->max_restarts) {
        log_warn("service '%s': %s; gave up after %u restarts in a row", s->sp->tag, ex,
                 s->consecutive);
        snprintf(s->last_error, sizeof s->last_error, "gave up after %u restarts in a row (%s)",
                 s->consecutive, ex);
        set_over(s, SSTATE(FAILED));
        return 0;
    }
    schedule_restart(s);
    log_info("service '%s': %s; restart in %llu ms", s->sp->tag, ex,
             (unsigned long long)((s->next_restart - util_now_unix_nano()) / 1000000ull));
    return 1;
}

static void on_restart(struct ev_loop *loop, ev_timer *t, int revents)
{
    svc_t *s = t->data;
    proc_t *p = s->p;
    if (s->over || s->respawning)
        return;
    s->restarts++;
    s->respawning = 1;
    /* A failure may end the record here; it lives until we are done. */
    proc_ref(p);
    proc_respawn(p);
    proc_unref(p);
}

void svc_respawn_failed(svc_t *s, int rc, const char *err)
{
    s->respawning = 0;
    snprintf(s->last_error, sizeof s->last_error, "%s", err);
    log_warn("service '%s': %s", s->sp->tag ? s->sp->tag : "", err);
    if (g_shutting_down || s->stop_requested) {
        set_over(s, SSTATE(STOPPED));
        proc_end(s->p);
        return;
    }
    if (s->max_restarts && s->consecutive >= s->max_restarts) {
        set_over(s, SSTATE(FAILED));
        proc_end(s->p);
        return;
    }
    schedule_restart(s);
}

void svc_output(svc_t *s, const uint8_t *data, size_t len)
{
    if (s->ready && s->state == SSTATE(STARTING))
        probe_output(s->ready, data, len); /* may call on_ready_result */
}

void svc_signalled(svc_t *s, int sig)
{
    if (sig > 0 && sig < 64)
        s->signals |= 1ull << sig;
}

static void on_ready_result(void *arg, int ok, const char *err)
{
    svc_t *s = arg;
    svc_run_t *r = run_cur(s);
    if (!ok) {
        snprintf(s->last_error, sizeof s->last_error, "%s", err);
        return;
    }
    if (s->state != SSTATE(STARTING) || !r || r->ended || r->ready)
        return;
    probe_stop(s->ready);
    r->ready = 1;
    r->ready_seq = proc_output_seq(s->p);
    r->ready_at = util_now_unix_nano();
    s->last_error[0] = 0;
    set_state(s, SSTATE(READY));
    proc_wake(s->p); /* followers: ProcessReady */
    if (s->health)
        probe_start(s->health);
}

static void on_health_result(void *arg, int ok, const char *err)
{
    svc_t *s = arg;
    if (ok) {
        s->health_fails = 0;
        if (s->state == SSTATE(UNHEALTHY) && !s->killing)
            set_state(s, SSTATE(READY));
        return;
    }
    snprintf(s->last_error, sizeof s->last_error, "%s", err);
    if (++s->health_fails < s->failure_threshold || s->state == SSTATE(UNHEALTHY))
        return;
    log_warn("service '%s' (pid %d): unhealthy after %u failed probes: %s",
             s->sp->tag ? s->sp->tag : "", (int)proc_pid(s->p), s->health_fails, err);
    set_state(s, SSTATE(UNHEALTHY));
    if (s->mode != MODE(NEVER) && !s->killing) {
        s->health_kill = 1;
        kill_run(s, SIGTERM, proc_kill_grace_ms(s->p));
    }
}

void svc_shutdown(void)
{
    g_shutting_down = 1;
    for (svc_t *s = g_live, *next; s; s = next) {
        next = s->lnext;
        ev_timer_stop(s->loop, &s->t_restart);
        if (!proc_running(s->p) && !s->respawning && !proc_final(s->p)) {
            set_over(s, SSTATE(STOPPED)); /* unlinks s; next stays live */
            proc_end(s->p);
        }
    }
}

void svc_fill_info(const svc_t *s, ProcessInfo *in, ProcessExit *last)
{
    const svc_run_t *r = NULL;
    in->restarts = s->restarts;
    in->service_state = (Sandbox__Agent__V1__ServiceState)(s->state > 0 ? s->state : 0);
    in->last_probe_error = (char *)s->last_error;
    if (s->state == SSTATE(BACKING_OFF) && !s->respawning)
        in->next_restart_unix_nano = s->next_restart;
    /* The previous run's exit: the newest ended run. */
    for (uint32_t i = s->n_runs; i >= 1 && i + SVC_HISTORY > s->n_runs; i--) {
        const svc_run_t *x = &s->runs[(i - 1) % SVC_HISTORY];
        if (x->ended) {
            r = x;
            break;
        }
    }
    if (r) {
        if (WIFSIGNALED(r->status)) {
            last->signal = WTERMSIG(r->status);
            last->exit_code = 128 + last->signal;
            last->core_dumped = WCOREDUMP(r->status) ? 1 : 0;
        } else {
            last->exit_code = WEXITSTATUS(r->status);
        }
        last->ended_at_unix_nano = r->ended_at;
        last->timed_out = r->timed_out;
        last->total_output_bytes = r->end_seq;
        in->last_exit = last;
    }
}

/* ------------------------------------------------------------ followers */

void svc_follow_init(const svc_t *s, svc_follow_t *f, uint64_t seq)
{
    uint32_t oldest = s->n_runs > SVC_HISTORY ? s->n_runs - SVC_HISTORY + 1 : 1;
    memset(f, 0, sizeof *f);
    f->run = s->n_runs ? s->n_runs : 1;
    /* The first run remembered that this position is within (or at the
     * end of: its exit comes first). */
    for (uint32_t i = oldest; i <= s->n_runs; i++) {
        const svc_run_t *r = &s->runs[(i - 1) % SVC_HISTORY];
        if (!r->ended || r->end_seq >= seq) {
            f->run = i;
            f->ready_sent = r->ready && r->ready_seq < seq;
            break;
        }
    }
}

static int send_event(stream_t *base, Response *r, stream_status_t *st)
{
    conn_send(base->conn, base->id, 0, r);
    *st = STREAM_MORE;
    return 1;
}

int svc_follow_event(svc_t *s, svc_follow_t *f, uint64_t seq, stream_t *base, size_t *max,
                     int *final, stream_status_t *st)
{
    Response resp = RESPONSE_INIT;
    uint32_t oldest = s->n_runs > SVC_HISTORY ? s->n_runs - SVC_HISTORY + 1 : 1;
    svc_run_t *r;

    if (!s->n_runs)
        return 0;
    if (f->run < oldest) {
        f->run = oldest; /* fell more than SVC_HISTORY runs behind */
        f->ready_sent = f->exit_sent = 0;
    }
    if (f->run > s->n_runs)
        return 0;
    r = run_at(s, f->run);
    if (s->ready && r->ready && !f->ready_sent) { /* only with a ready probe */
        if (seq >= r->ready_seq) {
            Sandbox__Agent__V1__ProcessReady pr = SANDBOX__AGENT__V1__PROCESS_READY__INIT;
            pr.at_unix_nano = r->ready_at;
            resp.result_case = RES(READY);
            resp.ready = &pr;
            f->ready_sent = 1;
            return send_event(base, &resp, st);
        }
        if (r->ready_seq - seq < *max)
            *max = (size_t)(r->ready_seq - seq);
        return 0;
    }
    if (!r->ended)
        return 0;
    if (seq < r->end_seq) {
        /* Output of this run comes first, and stops at its end. */
        if (r->end_seq - seq < *max)
            *max = (size_t)(r->end_seq - seq);
        *final = 1;
        return 0;
    }
    if (!f->exit_sent) {
        /* The newest run of a service that is over: its exit is the
         * stream's last response (done), sent by the follower itself. */
        if (f->run == s->n_runs && s->over)
            return 0;
        ProcessExit e = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
        if (WIFSIGNALED(r->status)) {
            e.signal = WTERMSIG(r->status);
            e.exit_code = 128 + e.signal;
            e.core_dumped = WCOREDUMP(r->status) ? 1 : 0;
        } else {
            e.exit_code = WEXITSTATUS(r->status);
        }
        e.ended_at_unix_nano = r->ended_at;
        e.timed_out = r->timed_out;
        e.total_output_bytes = r->end_seq;
        resp.result_case = RES(EXIT);
        resp.exit = &e;
        f->exit_sent = 1;
        return send_event(base, &resp, st);
    }
    if (f->run == s->n_runs)
        return 0; /* the next run has not started */
    const svc_run_t *nx = run_at(s, f->run + 1);
    Sandbox__Agent__V1__ProcessRestarted rs = SANDBOX__AGENT__V1__PROCESS_RESTARTED__INIT;
    rs.pid = (uint32_t)nx->pid;
    rs.restarts = nx->restarts;
    rs.at_unix_nano = nx->started_at;
    resp.result_case = RES(RESTARTED);
    resp.restarted = &rs;
    f->run++;
    f->ready_sent = f->exit_sent = 0;
    return send_event(base, &resp, st);
}

/* ------------------------------------------------------------ handlers */

void svc_handle_wait_ready(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__WaitReady *w = req->wait_ready;
    proc_t *p;
    if (!w->pid && !(w->tag && w->tag[0])) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0, "wait_ready: give a pid or a tag");
        return;
    }
    if (!(p = proc_find(w->pid, w->tag))) {
        if (w->pid)
            conn_send_error(c, req->id, CODE(NOT_FOUND), ESRCH,
                            "wait_ready: process %u: not started by this agent, or already "
                            "forgotten",
                            w->pid);
        else
            conn_send_error(c, req->id, CODE(NOT_FOUND), 0, "wait_ready: no process has tag '%s'",
                            w->tag);
        return;
    }
    svc_t *s = proc_service(p);
    if (!s) {
        /* No ready probe: a running process is as ready as it will get. */
        if (proc_running(p))
            proc_send_info(c, req->id, 1, p);
        else
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                            "wait_ready: process %d has exited", (int)proc_pid(p));
        return;
    }
    waiter_add(c, req->id, s, W_READY, w->timeout_ms, "wait_ready");
}

void svc_handle_stop(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__StopService *st = req->stop_service;
    proc_t *p;
    svc_t *s;
    if (!st->tag || !st->tag[0]) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0, "stop_service: tag is empty");
        return;
    }
    if (st->signal < 0 || st->signal > 64) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "stop_service: %d is not a valid signal number (1..64)", st->signal);
        return;
    }
    if (!(p = proc_find(0, st->tag))) {
        conn_send_error(c, req->id, CODE(NOT_FOUND), 0, "stop_service: no service has tag '%s'",
                        st->tag);
        return;
    }
    if (!(s = proc_service(p)) || (s->mode == MODE(NEVER) && !proc_running(p))) {
        if (proc_final(p) || !proc_running(p)) {
            proc_send_info(c, req->id, 1, p); /* already stopped */
            return;
        }
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "stop_service: process %d (tag '%s') is not a service; use SendSignal",
                        (int)proc_pid(p), st->tag);
        return;
    }
    if (proc_final(p)) {
        proc_send_info(c, req->id, 1, p);
        return;
    }
    s->stop_requested = 1;
    s->stop_signal = st->signal ? st->signal : SIGTERM;
    s->stop_grace_ms = st->grace_ms ? st->grace_ms : proc_kill_grace_ms(p);
    ev_timer_stop(s->loop, &s->t_restart);
    /* The answer comes once the service has ended (its ProcessInfo). */
    proc_ref(p);
    waiter_add(c, req->id, s, W_STOP, 0, "stop_service");
    if (proc_running(p)) {
        log_info("service '%s': stopping (signal %d, SIGKILL after %u ms)", st->tag,
                 s->stop_signal, s->stop_grace_ms);
        kill_run(s, s->stop_signal, s->stop_grace_ms);
    } else if (!s->respawning && !s->over) {
        log_info("service '%s': stopped while waiting to restart", st->tag);
        set_over(s, SSTATE(STOPPED));
        proc_end(p);
    }
    proc_unref(p);
}

/* ------------------------------------------------------------ services.d */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One file: read (bounded), check who may have written it, parse, start. */
static int start_file(const char *dir, const char *name)
{
    char path[4096], err[512], *buf = NULL;
    StartProcess *sp = NULL;
    struct stat st;
    ssize_t len = 0;
    int fd = -1, ok = 0;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* O_NONBLOCK: a FIFO dropped into the directory does not hang boot. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
        log_error("service file %s: %s; not started", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        log_error("service file %s: not a regular file; not started", path);
        goto out;
    }
    /* Whoever can write the file chooses what the agent runs, as whom. */
    if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
        log_error("service file %s: writable by others than the agent's user or root "
                  "(owner %u, mode %03o); not started",
                  path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    if (st.st_size > SVCFILE_MAX_SIZE) {
        log_error("service file %s: larger than %d bytes; not started", path, SVCFILE_MAX_SIZE);
        goto out;
    }
    if (!(buf = malloc(SVCFILE_MAX_SIZE + 1)))
        goto out;
    for (;;) {
        ssize_t r = read(fd, buf + len, (size_t)(SVCFILE_MAX_SIZE + 1 - len));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            log_error("service file %s: %s; not started", path, strerror(errno));
            goto out;
        }
        if (r == 0 || (len += r) > SVCFILE_MAX_SIZE)
            break;
    }
    if (svcfile_parse(buf, (size_t)len, path, &sp, err, sizeof err) < 0) {
        log_error("service file %s; not started", err);
        goto out;
    }
    if (proc_start_detached(sp, err, sizeof err) < 0) {
        log_error("service file %s: %s", path, err);
        goto out;
    }
    log_info("service '%s' started from %s", sp->tag, path);
    ok = 1;
out:
    if (sp)
        sandbox__agent__v1__start_process__free_unpacked(sp, NULL);
    free(buf);
    if (fd >= 0)
        close(fd);
    return ok;
}

int svc_start_dir(const char *dir, int missing_ok)
{
    DIR *d;
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int started = 0;

    if (!dir || !dir[0])
        return 0;
    if (!(d = opendir(dir))) {
        if (errno != ENOENT || !missing_ok)
            log_warn("--services-dir %s: %s", dir, strerror(errno));
        return 0;
    }
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        char **nn;
        if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".conf"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            if (cap > 4096 || !(nn = realloc(names, cap * sizeof *nn))) {
                log_error("--services-dir %s: too many files; the rest are not started", dir);
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n; i++) {
        started += start_file(dir, names[i]);
        free(names[i]);
    }
    free(names);
    return started;
}
