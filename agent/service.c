/* service.c - the service record: its policy and probes checked at the
 * start, its runs and the states they move through, restarts with backoff,
 * the probes' results, shutdown. The requests about a service are in
 * service_ops.c, what its followers are told in service_follow.c, the
 * services.d files in service_dir.c.
 * Errors: svc_new answers NULL with an Error.Code and a message; the hooks
 * cannot fail (a failed respawn is retried or ends the service).
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
#include "service_internal.h"

#include "errcode.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_BACKOFF_INITIAL_MS 100
#define DEFAULT_BACKOFF_MAX_MS 30000
#define DEFAULT_RESET_AFTER_MS 10000
#define DEFAULT_FAILURE_THRESHOLD 3

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

static void set_state(svc_t *s, int state)
{
    if (s->state == state)
        return;
    s->state = state;
    svc_wake_waiters(s);
}

void svc_describe_exit(int status, int timed_out, char *buf, size_t n)
{
    if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d%s", WTERMSIG(status),
                 timed_out ? " after its timeout" : "");
    else
        snprintf(buf, n, "exit code %d", WEXITSTATUS(status));
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

/* A start's policy and probes make sense, and its tag is free. 0, or -1
 * with *code and err. */
static int check_start(const StartProcess *sp, int *code, char *err, size_t n)
{
    const Sandbox__Agent__V1__RestartPolicy *rp = sp->restart;
    *code = CODE(INVALID_ARGUMENT);
    if (rp && (rp->mode < MODE(NEVER) || rp->mode > MODE(ALWAYS))) {
        snprintf(err, n, "restart mode %d is not NEVER, ON_FAILURE or ALWAYS", (int)rp->mode);
        return -1;
    }
    if (rp && rp->mode != MODE(NEVER)) {
        if (!sp->tag || !sp->tag[0]) {
            snprintf(err, n, "a restart policy needs a tag: the service's name across runs");
            return -1;
        }
        if (rp->backoff_max_ms && rp->backoff_initial_ms > rp->backoff_max_ms) {
            snprintf(err, n, "backoff_initial_ms %u is above backoff_max_ms %u",
                     rp->backoff_initial_ms, rp->backoff_max_ms);
            return -1;
        }
        if (live_find_tag(sp->tag)) {
            *code = CODE(ALREADY_EXISTS);
            snprintf(err, n, "a service with tag '%s' is already running (StopService it first)",
                     sp->tag);
            return -1;
        }
    }
    if (sp->ready && probe_check(sp->ready, 1, err, n) < 0)
        return -1;
    if (sp->health && probe_check(sp->health, 0, err, n) < 0)
        return -1;
    return 0;
}

/* The restart policy, with the defaults for what it leaves out. */
static void set_policy(svc_t *s, const StartProcess *sp)
{
    const Sandbox__Agent__V1__RestartPolicy *rp = sp->restart;
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
}

/* An exec probe runs as the service's user, in its cwd, with its env
 * entries: it may do exactly what the service may. Fills pe. 0, or -1 with
 * *code and err. */
static int exec_probe_env(svc_t *s, const StartProcess *sp, probe_env_t *pe, int *code,
                          char *err, size_t n)
{
    int set_user = sp->user && sp->user[0];
    char uerr[256];
    int rc = user_resolve(set_user ? sp->user : NULL, &s->user, uerr, sizeof uerr);
    if (rc < 0) {
        *code = errcode_from_errno(rc);
        snprintf(err, n, "%s", uerr);
        return -1;
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
    pe->user = &s->user;
    pe->set_user = set_user;
    pe->cwd = sp->cwd;
    pe->env = s->env;
    return 0;
nomem:
    *code = CODE(RESOURCE_EXHAUSTED);
    snprintf(err, n, "out of memory");
    return -1;
}

svc_t *svc_new(struct ev_loop *loop, const StartProcess *sp, int *code, char *err, size_t n)
{
    svc_t *s = NULL;
    probe_env_t pe = {0};

    if (check_start(sp, code, err, n) < 0)
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
    set_policy(s, sp);
    if ((is_exec(sp->ready) || is_exec(sp->health)) &&
        exec_probe_env(s, sp, &pe, code, err, n) < 0)
        goto fail;
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
    util_strv_free(s->env);
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

void svc_kill_run(svc_t *s, int sig, uint32_t grace_ms)
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
    r = svc_run_at(s, s->n_runs);
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
        svc_kill_run(s, s->stop_signal ? s->stop_signal : SIGTERM, s->stop_grace_ms);
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
void svc_set_over(svc_t *s, int state)
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
    svc_run_t *r = svc_run_cur(s);
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
    svc_describe_exit(status, timed_out, ex, sizeof ex);
    failure = !WIFEXITED(status) || WEXITSTATUS(status) != 0 || timed_out || s->health_kill;
    if (g_shutting_down || s->stop_requested || killed_by_client(s, status) ||
        s->mode == MODE(NEVER) || (s->mode == MODE(ON_FAILURE) && !failure)) {
        if (s->mode != MODE(NEVER))
            log_info("service '%s': stopped (%s)", s->sp->tag, ex);
        svc_set_over(s, SSTATE(STOPPED));
        return 0;
    }
    if (util_now_mono_nano() - s->run_mono >= (uint64_t)s->reset_after * 1000000ull)
        s->consecutive = 0;
    if (s->max_restarts && s->consecutive >= s->max_restarts) {
        log_warn("service '%s': %s; gave up after %u restarts in a row", s->sp->tag, ex,
                 s->consecutive);
        snprintf(s->last_error, sizeof s->last_error, "gave up after %u restarts in a row (%s)",
                 s->consecutive, ex);
        svc_set_over(s, SSTATE(FAILED));
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
        svc_set_over(s, SSTATE(STOPPED));
        proc_end(s->p);
        return;
    }
    if (s->max_restarts && s->consecutive >= s->max_restarts) {
        svc_set_over(s, SSTATE(FAILED));
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
    svc_run_t *r = svc_run_cur(s);
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
        svc_kill_run(s, SIGTERM, proc_kill_grace_ms(s->p));
    }
}

void svc_shutdown(void)
{
    g_shutting_down = 1;
    for (svc_t *s = g_live, *next; s; s = next) {
        next = s->lnext;
        ev_timer_stop(s->loop, &s->t_restart);
        if (!proc_running(s->p) && !s->respawning && !proc_final(s->p)) {
            svc_set_over(s, SSTATE(STOPPED)); /* unlinks s; next stays live */
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
        proc_exit_status(r->status, last);
        last->ended_at_unix_nano = r->ended_at;
        last->timed_out = r->timed_out;
        last->total_output_bytes = r->end_seq;
        in->last_exit = last;
    }
}

