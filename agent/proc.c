/* proc.c - the process table: records, their lifecycle and the exited
 * list, reaping, signals to a process and its group, timeouts, and
 * shutdown. The rest of the module: proc_index.c (the table's indexes),
 * proc_start.c (starting), proc_check.c (what a start is refused for),
 * proc_env.c (what a child starts with), proc_io.c (output, stdin,
 * streams), proc_ops.c (requests).
 *
 * Lifecycle of a process record (enum proc_state; every transition is in
 * proc_state_set's table):
 *   spawned -> running (pipes read into its outlog)
 *   leader reaped -> draining: read until EOF, or until PROC_DRAIN_IDLE_MS pass
 *                    with no data (a grandchild keeps the pipe open)
 *   pipes closed  -> final: ProcessExit goes to followers and waiters; the
 *                    record joins the exited list (oldest first) and is kept
 *                    until forgotten, exited_ttl_s passes, or the total cap
 *                    on kept output needs its room.
 *   (a service)   -> between: the run ended and the next is due; its next
 *                    run makes it running again, StopService makes it final.
 * A record is freed when it has left the table and no stream holds it.
 *
 * Reaping: one ev_child watcher on pid 0 sees every child libev reaps with
 * waitpid(-1), so orphans re-parented to the agent (a child subreaper, or
 * PID 1) are reaped too.
 *
 * Errors: 0 or a negative errno; nothing here answers a request.
 */
#include "proc_internal.h"

#include "cgroup.h"
#include "config.h"
#include "log.h"
#include "outlog.h"
#include "pgkill.h"
#include "service.h"
#include "spawn.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define STASH_SIZE 64

struct ev_loop *proc_loop;
static ev_child g_child;
static ev_timer g_ttl;
ev_timer proc_shutdown_timer;
proc_t *proc_all_head;
static proc_t *g_all_tail;
static proc_t *g_exited_head, *g_exited_tail;
unsigned proc_n_running;
static unsigned g_kept;
static proc_t *g_watched; /* reaped leaders whose group is still alive */
unsigned proc_n_spawning; /* starts handed to the spawner, not yet done */
uint64_t proc_kept_bytes, proc_kept_meta;
int proc_devnull = -1;
int proc_reset_oom, proc_reset_nice;
void (*proc_shutdown_done)(struct ev_loop *);
static unsigned g_shutdown_polls; /* checks after the SIGKILL */

/* Exits reaped while starts are with the spawner, of pids not (yet) in the
 * table: a short command can exit, and be reaped, before start_done() makes
 * its record. Every such child must find its exit here, so the stash grows
 * with the starts in flight (a fixed ring of 64 lost exits when a thousand
 * starts came together: those processes stayed "running" for ever) up to
 * --max-processes + STASH_SIZE entries; orphans reaped meanwhile take room
 * too, and past that bound the oldest entry goes. Emptied (and freed) once
 * no start is in flight: then nothing can claim an entry. */
typedef struct stash_entry {
    pid_t pid;
    int status;
    uint64_t mono;
} stash_entry_t;
static stash_entry_t *g_stash;
static size_t g_stash_len, g_stash_cap;

static void stash_put(pid_t pid, int status)
{
    size_t limit = (size_t)g_config.max_processes + STASH_SIZE, i = g_stash_len;
    if (g_stash_len == g_stash_cap) {
        size_t cap = g_stash_cap ? SA_MIN(g_stash_cap * 2, limit) : STASH_SIZE;
        stash_entry_t *n = cap > g_stash_cap ? realloc(g_stash, cap * sizeof *n) : NULL;
        if (n) {
            g_stash = n;
            g_stash_cap = cap;
        } else {
            /* At the bound (or out of memory): the oldest entry goes. */
            if (!g_stash_cap)
                return;
            i = 0;
            for (size_t k = 1; k < g_stash_len; k++)
                if (g_stash[k].mono < g_stash[i].mono)
                    i = k;
            log_warn("exit of pid %d dropped from the stash (%zu entries)", (int)g_stash[i].pid,
                     g_stash_len);
        }
    }
    g_stash[i].pid = pid;
    g_stash[i].status = status;
    g_stash[i].mono = util_now_mono_nano();
    if (i == g_stash_len)
        g_stash_len++;
}

/* The exit of pid reaped since t0, taken out of the stash. */
int proc_stash_take(pid_t pid, uint64_t t0, int *status)
{
    for (size_t i = 0; i < g_stash_len; i++) {
        if (g_stash[i].pid == pid && g_stash[i].mono >= t0) {
            *status = g_stash[i].status;
            g_stash[i] = g_stash[--g_stash_len];
            return 1;
        }
    }
    return 0;
}

void proc_stash_clear(void)
{
    free(g_stash);
    g_stash = NULL;
    g_stash_len = g_stash_cap = 0;
}

/* Starts with the spawner count too: accepted, they run (and count
 * against --max-processes already), though not listed until they do. */
unsigned proc_count_running(void) { return proc_n_running + proc_n_spawning; }
unsigned proc_count_kept(void) { return g_kept; }
uint64_t proc_kept_output_bytes(void) { return proc_kept_bytes; }

/* ------------------------------------------------------------ table */

void proc_table_add(proc_t *p)
{
    proc_index_add(p);
    SA_LIST_APPEND(proc_all_head, g_all_tail, p, next, prev);
    p->in_table = 1;
    p->refs++;
}

/* The exit became final (or the agent stops): the record joins the end of
 * the exited list, the oldest first in line for the TTL and the cap. */
static void exited_add(proc_t *p)
{
    SA_LIST_APPEND(g_exited_head, g_exited_tail, p, enext, eprev);
    g_kept++;
}

static void proc_free(proc_t *p)
{
    /* The service's timers and probes stop first: they point at p. */
    if (p->svc)
        svc_free(p->svc);
    /* Watchers stop before the fds close, fds close before memory goes. */
    ev_io_stop(proc_loop, &p->r_out);
    ev_io_stop(proc_loop, &p->r_err);
    ev_io_stop(proc_loop, &p->w_in);
    ev_timer_stop(proc_loop, &p->t_timeout);
    ev_timer_stop(proc_loop, &p->t_kill);
    ev_timer_stop(proc_loop, &p->t_drain);
    if (p->group_alive) {
        p->group_alive = 0;
        SA_LIST_UNLINK(g_watched, p, gnext, gprev);
    }
    if (p->pidfd >= 0)
        close(p->pidfd);
    if (p->fd_out >= 0)
        close(p->fd_out);
    if (p->fd_err >= 0)
        close(p->fd_err);
    if (p->fd_in >= 0)
        close(p->fd_in);
    util_freed(p->log.cost);
    outlog_free(&p->log);
    cg_leaf_unref(p->cg);
    for (size_t i = 0; i < p->n_args; i++)
        free(p->args[i]);
    free(p->args);
    free(p->tag);
    free(p->command);
    free(p->cwd);
    free(p->user);
    free(p);
}

void proc_unref(proc_t *p)
{
    if (--p->refs == 0)
        proc_free(p);
}

/* Take an exited process out of the table (forget, TTL, cap). */
void proc_table_remove(proc_t *p)
{
    if (!p->in_table)
        return;
    proc_index_remove(p);
    SA_LIST_UNLINK_TAIL(proc_all_head, g_all_tail, p, next, prev);
    if (p->state == PROC_FINAL) {
        SA_LIST_UNLINK_TAIL(g_exited_head, g_exited_tail, p, enext, eprev);
        g_kept--;
    }
    proc_kept_meta -= p->meta;
    p->in_table = 0;
    proc_unref(p);
}

/* A service's next run joins its record under the new pid. */
void proc_table_rekey(proc_t *p, pid_t pid) { proc_index_rekey(p, pid); }

/* ------------------------------------------------------------ signals */

/* Signal the leader alone. Through its pidfd this is exact: once the
 * leader is reaped the kernel answers ESRCH, whoever has its pid now. */
int proc_signal_leader(proc_t *p, int sig)
{
    if (p->state != PROC_RUNNING)
        return -ESRCH;
    if (p->pidfd >= 0)
        return syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) < 0 ? -errno : 0;
    return kill(p->pid, sig) < 0 ? -errno : 0;
}

/* Signal the process group, never another: a group's id is its leader's
 * pid, which is not reused while the leader is unreaped (asked exactly
 * through the pidfd) or while any member is alive. After the leader is
 * reaped the group is signalled only while it is known alive (checked when
 * the leader is reaped and after every reap since: group_check). */
int proc_signal_group(proc_t *p, int sig)
{
    if (p->state == PROC_RUNNING && proc_signal_leader(p, 0) == 0)
        return kill(-p->pid, sig) < 0 ? -errno : 0;
    if (!p->group_alive)
        return -ESRCH;
    return kill(-p->pid, sig) < 0 ? -errno : 0;
}


/* The leader was reaped, or another process was: does p's group still
 * have members? The pid cannot be reused before the last member is reaped,
 * and this runs right after each reap, so the answer is about p's group.
 * When it is gone, no timer of p has anything left to do. */
static void group_check(proc_t *p)
{
    int alive = kill(-p->pid, 0) == 0 || errno == EPERM;
    if (alive && !p->group_alive)
        SA_LIST_PUSH(g_watched, p, gnext, gprev);
    else if (!alive && p->group_alive)
        SA_LIST_UNLINK(g_watched, p, gnext, gprev);
    p->group_alive = alive;
    /* What left the group still gets the SIGKILL: its cgroup's members, or
     * without cgroups what pgkill remembered of it. */
    if (!alive && !(p->cg && cg_leaf_populated(p->cg) == 1) && !pgk_marked(p->pid))
        ev_timer_stop(proc_loop, &p->t_kill);
}

/* Only the records whose group outlived its leader: not the whole table,
 * which this would walk at every reap of a group's member. */
static void groups_check_all(void)
{
    for (proc_t *p = g_watched, *next; p; p = next) {
        next = p->gnext; /* group_check may unlink p */
        if (p->state != PROC_RUNNING)
            group_check(p);
    }
}

/* ------------------------------------------------------------ lifecycle */

static void on_ttl(struct ev_loop *loop, ev_timer *w, int revents)
{
    uint64_t now = util_now_mono_nano();
    uint64_t ttl = (uint64_t)g_config.exited_ttl_s * 1000000000ull;
    while (g_exited_head && g_exited_head->ended_mono + ttl <= now)
        proc_table_remove(g_exited_head);
    if (g_exited_head) {
        double left = (double)(g_exited_head->ended_mono + ttl - now) / 1e9;
        ev_timer_set(w, left + 0.001, 0);
        ev_timer_start(loop, w);
    }
}

/* Over the total cap: exited processes go, oldest first. */
void proc_enforce_caps(void)
{
    while (g_exited_head && proc_kept_bytes + proc_kept_meta > g_config.max_kept_output)
        proc_table_remove(g_exited_head);
}

/* Still over the total cap with no exited process left to drop: running
 * processes alone hold too much. The process whose output just arrived
 * trims its own window by the excess, down to TRIM_FLOOR: its followers see
 * an OutputGap as usual (a lossless one pauses instead), and the agent's
 * memory stays within the cap plus TRIM_FLOOR per running process. */
#define TRIM_FLOOR (64 * 1024)
void proc_trim_running(proc_t *p)
{
    uint64_t total = proc_kept_bytes + proc_kept_meta;
    if (total <= g_config.max_kept_output)
        return;
    uint64_t excess = total - g_config.max_kept_output;
    uint64_t target = p->log.cost > excess + TRIM_FLOOR ? p->log.cost - excess : TRIM_FLOOR;
    outlog_trim(&p->log, target);
    if (outlog_paused(&p->log) && !p->read_paused) {
        p->read_paused = 1;
        ev_io_stop(proc_loop, &p->r_out);
        ev_io_stop(proc_loop, &p->r_err);
        ev_timer_stop(proc_loop, &p->t_drain);
    }
}

/* Every transition of a record's lifecycle, and who makes it:
 *   NEW      -> RUNNING   run_begin (proc_start.c): the first run started
 *   RUNNING  -> DRAINING  proc_leader_exited: the leader was reaped
 *   DRAINING -> BETWEEN   run_end, from proc_finalize: a service's run
 *                         ended and the service wants another
 *   DRAINING -> FINAL     proc_finalize: the pipes closed or drained idle;
 *                         or drop_all: the agent stops
 *   BETWEEN  -> RUNNING   run_begin: the service's next run started
 *   BETWEEN  -> FINAL     proc_finalize from proc_end: the service is over;
 *                         or drop_all
 * FINAL is the end. Entering and leaving RUNNING keeps the count of
 * running processes. */
static const unsigned char proc_transitions[PROC_NSTATES] = {
    [PROC_NEW] = 1u << PROC_RUNNING,
    [PROC_RUNNING] = 1u << PROC_DRAINING,
    [PROC_DRAINING] = 1u << PROC_BETWEEN | 1u << PROC_FINAL,
    [PROC_BETWEEN] = 1u << PROC_RUNNING | 1u << PROC_FINAL,
    [PROC_FINAL] = 0,
};

static const char *const proc_state_names[PROC_NSTATES] = {
    [PROC_NEW] = "new",
    [PROC_RUNNING] = "running",
    [PROC_DRAINING] = "draining",
    [PROC_BETWEEN] = "between runs",
    [PROC_FINAL] = "final",
};

void proc_state_set(proc_t *p, enum proc_state to)
{
    /* A transition the table lacks is a bug here, never a client's doing:
     * said loudly, and in a debug build stopped at. */
    if (!(proc_transitions[p->state] & (1u << to))) {
        log_error("process %d: %s -> %s is not a transition of its lifecycle", (int)p->pid,
                  proc_state_names[p->state], proc_state_names[to]);
        assert(!"lifecycle transition");
    }
    if (p->state == PROC_RUNNING)
        proc_n_running--;
    if (to == PROC_RUNNING)
        proc_n_running++;
    p->state = to;
}

/* A service's run is over and another will follow: the run's pipes, stdin
 * and timers go, whatever it left in its group is killed (a leftover
 * worker must not hold the next run's port), and followers are told. The
 * record, its log and its followers stay. */
static void run_end(proc_t *p)
{
    proc_state_set(p, PROC_BETWEEN);
    ev_timer_stop(proc_loop, &p->t_drain);
    ev_timer_stop(proc_loop, &p->t_timeout);
    ev_timer_stop(proc_loop, &p->t_kill);
    proc_stdin_fail_all(p, -EPIPE);
    proc_output_close(p, &p->r_out, &p->fd_out);
    proc_output_close(p, &p->r_err, &p->fd_err);
    proc_stdin_close(p);
    proc_signal_all(p, SIGKILL);
    proc_wake_streams(p, 0);
}

void proc_finalize(proc_t *p)
{
    if (p->state == PROC_FINAL)
        return;
    /* A service's run ended: the service decides whether another follows. */
    if (p->svc && p->state != PROC_BETWEEN &&
        svc_run_ended(p->svc, p->status, p->timed_out, p->ended, p->log.next_seq)) {
        run_end(p);
        return;
    }
    /* The figures every ProcessExit of it reports from now on; a service's
     * cgroup goes once it is over. */
    if (p->cg)
        cg_leaf_stats(p->cg, &p->cg_final);
    cg_leaf_release(p->cg);
    proc_state_set(p, PROC_FINAL);
    ev_timer_stop(proc_loop, &p->t_drain);
    ev_timer_stop(proc_loop, &p->t_timeout);
    proc_stdin_fail_all(p, -EPIPE);
    if (p->pty) {
        proc_output_close(p, &p->r_out, &p->fd_out);
    }
    proc_stdin_close(p);
    proc_wake_streams(p, 0);
    if (!p->in_table)
        return;
    exited_add(p);
    if (!ev_is_active(&g_ttl)) {
        ev_timer_set(&g_ttl, (double)g_config.exited_ttl_s + 0.001, 0);
        ev_timer_start(proc_loop, &g_ttl);
    }
    proc_enforce_caps(); /* may free p */
}

static void drop_all(void)
{
    ev_timer_stop(proc_loop, &g_ttl);
    outlog_buf_free(proc_rbuf);
    proc_rbuf = NULL;
    while (proc_all_head) {
        proc_t *p = proc_all_head;
        if (p->state != PROC_FINAL) {
            /* Shutdown: no one reads any more. */
            proc_state_set(p, PROC_FINAL);
            proc_stdin_fail_all(p, -EPIPE);
            exited_add(p);
        }
        proc_table_remove(p);
    }
}

/* A group that was running at shutdown still has members (a grandchild
 * that ignores SIGTERM outlives its shell). Its pgid cannot be reused while
 * any member lives, so kill(-pgid, 0) asks about that group only. */
static int stopped_groups_alive(void)
{
    groups_check_all();
    for (proc_t *p = proc_all_head; p; p = p->next)
        if (p->stop_group && proc_signal_group(p, 0) == 0)
            return 1;
    /* With cgroups: anything left anywhere in the workload; without, the
     * groups still being killed. */
    return cg_workload_populated() == 1 || pgk_active() > 0;
}

/* Shutdown is over when every leader is reaped and every group it led is
 * gone, or SHUTDOWN_MAX_POLLS checks after the SIGKILL (a member stuck in
 * the kernel cannot hold the agent forever). */
#define SHUTDOWN_POLL_S 0.05
#define SHUTDOWN_MAX_POLLS 40
void proc_shutdown_check(void)
{
    if (proc_shutdown_done && proc_n_running == 0 && proc_n_spawning == 0 &&
        (g_shutdown_polls >= SHUTDOWN_MAX_POLLS || !stopped_groups_alive())) {
        void (*done)(struct ev_loop *) = proc_shutdown_done;
        proc_shutdown_done = NULL;
        ev_timer_stop(proc_loop, &proc_shutdown_timer);
        ev_child_stop(proc_loop, &g_child);
        drop_all();
        done(proc_loop);
    }
}

void proc_leader_exited(proc_t *p, int status)
{
    proc_state_set(p, PROC_DRAINING);
    proc_index_cooled(p);
    p->status = status;
    p->ended = util_now_unix_nano();
    p->ended_mono = util_now_mono_nano();
    ev_timer_stop(proc_loop, &p->t_timeout);
    /* Reaped: its pid may be anyone's from now on. */
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
    }
    /* No more processes start in its cgroup (a service's next run does):
     * it goes once empty. Released first, so the check below that finds it
     * empty also marks it so (its exit figures need no count of members). */
    if (!p->svc)
        cg_leaf_release(p->cg);
    /* t_kill keeps running after a timeout while the group has members (the
     * stragglers get SIGKILL too), and stops when the group is gone. */
    group_check(p);
    if (WIFSIGNALED(status))
        log_debug("process %d killed by signal %d", (int)p->pid, WTERMSIG(status));
    else
        log_debug("process %d exited %d", (int)p->pid, WEXITSTATUS(status));
    if (p->fd_out < 0 && p->fd_err < 0) {
        proc_finalize(p);
    } else if (!p->read_paused) {
        ev_timer_set(&p->t_drain, PROC_DRAIN_IDLE_MS / 1000.0, PROC_DRAIN_IDLE_MS / 1000.0);
        ev_timer_again(proc_loop, &p->t_drain);
    }
    proc_shutdown_check();
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    proc_t *p = proc_find_pid((uint32_t)w->rpid);
    cg_on_reap();
    if (p && p->state == PROC_RUNNING) {
        proc_leader_exited(p, w->rstatus);
    } else {
        /* A member of some group: was it the last of its group? */
        groups_check_all();
        /* An orphan the agent inherited, or a child whose record is not in
         * the table yet (only while starts are with the spawner). */
        if (proc_n_spawning)
            stash_put(w->rpid, w->rstatus);
        log_debug("reaped pid %d (not started by a request), status 0x%x", (int)w->rpid,
                  w->rstatus);
        /* Shutdown may have waited for this one (a background child). */
        if (proc_shutdown_done)
            proc_shutdown_check();
    }
}

/* A signal to everything p started: its cgroup when it has one (setsid,
 * double forks and forks in flight included; SIGKILL is cgroup.kill), else
 * its process group, where a SIGKILL is repeated until the group is empty
 * and reaches the descendants that left it (pgkill). */
int proc_signal_all(proc_t *p, int sig)
{
    if (p->cg && cg_leaf_signal(p->cg, sig) == 0)
        return 0;
    /* Only a group known to be p's (proc_signal_group's rule), or the processes
     * pgk_mark() remembered of it. */
    if (sig == SIGKILL && !p->cg && (proc_signal_group(p, 0) == 0 || pgk_marked(p->pid))) {
        pgk_kill(p->pid);
        return 0;
    }
    return proc_signal_group(p, sig);
}


void proc_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *p = w->data;
    if (p->state != PROC_RUNNING)
        return;
    log_info("process %d: timeout; SIGTERM to its %s, SIGKILL in %u ms", (int)p->pid,
             p->cg ? "cgroup" : "group", p->kill_grace_ms);
    p->timed_out = 1;
    if (!p->cg)
        pgk_mark(p->pid); /* who belongs to it, before the SIGTERM ends the shell */
    proc_signal_all(p, SIGTERM);
    ev_timer_set(&p->t_kill, p->kill_grace_ms / 1000.0, 0);
    ev_timer_start(loop, &p->t_kill);
}

void proc_on_kill(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *p = w->data;
    proc_signal_all(p, SIGKILL); /* the group outlives its leader, not its last member */
}

static void on_shutdown_kill(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (g_shutdown_polls++ == 0) {
        for (proc_t *p = proc_all_head; p; p = p->next)
            if (p->state == PROC_RUNNING || p->stop_group)
                proc_signal_all(p, SIGKILL);
        cg_workload_kill();
    }
    /* Check again until the groups are reaped (orphans come to the agent). */
    ev_timer_set(w, SHUTDOWN_POLL_S, 0);
    ev_timer_start(loop, w);
    proc_shutdown_check();
}

int proc_init(struct ev_loop *loop)
{
    int fd, rc;
    char buf[32] = "";

    proc_loop = loop;
    /* Keep 0..2 taken, so no pipe of ours lands there (the child's dup2
     * would then keep close-on-exec). */
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
        ;
    if (fd >= 0)
        close(fd);
    proc_devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (proc_devnull < 0)
        return -errno;
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        log_warn("cannot become a child subreaper (%s): orphans will not be reaped here",
                 strerror(errno));
    /* Children start at oom_score_adj 0 whatever the agent set itself to. */
    if ((fd = open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC)) >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        proc_reset_oom = n > 0 && atoi(buf) != 0;
    }
    /* Likewise nice 0, whatever the agent runs at. */
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, 0);
    proc_reset_nice = errno == 0 && prio != 0;
    if ((rc = proc_index_init()) < 0)
        return rc;
    pgk_init(loop);
    if ((rc = spawn_async_init(loop)) < 0)
        return rc;
    ev_child_init(&g_child, on_child, 0, 0);
    ev_child_start(loop, &g_child);
    ev_init(&g_ttl, on_ttl);
    ev_init(&proc_shutdown_timer, on_shutdown_kill);
    return 0;
}

void proc_shutdown(struct ev_loop *loop, uint32_t grace_ms, void (*done)(struct ev_loop *))
{
    proc_shutdown_done = done;
    svc_shutdown(); /* no more restarts; services between runs end */
    /* A frozen workload could not act on SIGTERM. */
    cg_freeze_all(0);
    for (proc_t *p = proc_all_head; p; p = p->next) {
        if (p->state == PROC_RUNNING) {
            if (!p->cg)
                pgk_mark(p->pid);
            proc_signal_all(p, SIGTERM);
            p->stop_group = 1;
        }
    }
    /* Background children of processes that exited go too. */
    cg_workload_signal(SIGTERM);
    if (proc_n_running || cg_workload_populated() == 1) {
        ev_timer_set(&proc_shutdown_timer, grace_ms / 1000.0, 0);
        ev_timer_start(loop, &proc_shutdown_timer);
    }
    proc_shutdown_check();
}

/* ------------------------------------------------------------ for service.c */

pid_t proc_pid(const proc_t *p) { return p->pid; }
int proc_running(const proc_t *p) { return p->state == PROC_RUNNING; }
int proc_final(const proc_t *p) { return p->state == PROC_FINAL; }
uint64_t proc_output_seq(const proc_t *p) { return p->log.next_seq; }
uint32_t proc_kill_grace_ms(const proc_t *p) { return p->kill_grace_ms; }
svc_t *proc_service(const proc_t *p) { return p->svc; }
void proc_ref(proc_t *p) { p->refs++; }
void proc_wake(proc_t *p) { proc_wake_streams(p, 0); }

proc_t *proc_find(uint32_t pid, const char *tag)
{
    proc_t *p;
    char *t;
    if (pid)
        return proc_find_pid(pid);
    if (!tag || !tag[0] || !(t = proc_strdup_utf8(tag))) /* as the tags were kept */
        return NULL;
    p = proc_index_tag(t);
    free(t);
    return p;
}

void proc_end(proc_t *p)
{
    if (p->state == PROC_BETWEEN)
        proc_finalize(p);
}
