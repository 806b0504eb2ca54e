/* proc.c - see proc.h.
 *
 * Lifecycle of a process record:
 *   spawned -> running (pipes read into its outlog)
 *   leader reaped -> draining: read until EOF, or until DRAIN_IDLE_MS pass
 *                    with no data (a grandchild keeps the pipe open)
 *   pipes closed  -> final: ProcessExit goes to followers and waiters; the
 *                    record joins the exited list (oldest first) and is kept
 *                    until forgotten, exited_ttl_s passes, or the total cap
 *                    on kept output needs its room.
 * A record is freed when it has left the table and no stream holds it.
 *
 * Reaping: one ev_child watcher on pid 0 sees every child libev reaps with
 * waitpid(-1), so orphans re-parented to the agent (a child subreaper, or
 * PID 1) are reaped too.
 */
#include "proc.h"

#include "cgroup.h"
#include "config.h"
#include "errcode.h"
#include "log.h"
#include "outlog.h"
#include "pgkill.h"
#include "service.h"
#include "spawn.h"
#include "user.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define HASH_SIZE 1024
#define READ_SIZE (128 * 1024)
#define PIPE_BIG (1 << 20)
#define DRAIN_IDLE_MS 100
#define STASH_SIZE 64
#define META_OVERHEAD 512
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define USER_PATH "/usr/local/bin:/usr/bin:/bin" /* a user other than root's */
#define MIN_WINDOW 4096
/* What a ProcessInfo echoes must fit an answer: the tag is a label (the
 * documented limit), command and cwd are paths, user a name; each argument
 * and environment entry is at most what exec takes (MAX_ARG_STRLEN). */
#define TAG_MAX 256
#define USER_SPEC_MAX 256
#define ARG_STR_MAX (128 * 1024)

#define ST(x) SANDBOX__AGENT__V1__STREAM__##x

typedef Sandbox__Agent__V1__StartProcess StartProcess;

enum pkind { PS_FOLLOW, PS_WAIT, PS_WRITE, PS_START };

typedef struct start_job start_job_t;

typedef struct proc proc_t;

/* A stream that answers a request about one process. */
typedef struct pstream {
    stream_t base;
    proc_t *p;
    enum pkind kind;
    struct pstream *next, *prev; /* the process's followers and waiters */
    /* follow */
    outlog_cursor_t cur;
    int attached, lines, no_wait;
    svc_follow_t sf; /* a service's runs: which events this follower has had */
    /* write: the data, taken from the request (not copied), counted in the
     * connection's budget for data waiting to be written (conn_upload_*) */
    uint8_t *data;
    size_t len, off, charged;
    int result; /* 0 pending, 1 written, -errno failed */
    int held;   /* queued behind another write: the connection's input waits */
    /* start: the spawn in flight (NULL once it is done) and its outcome */
    start_job_t *job;
    int start_rc;
    enum spawn_stage start_stage;
    int start_follow, start_lines;
    StartProcess *start_req; /* kept for the error message */
    int queued;
    struct pstream *wnext;
} pstream_t;

struct proc {
    pid_t pid;
    unsigned refs;
    int in_table;
    proc_t *hnext;
    proc_t *next, *prev;   /* all in the table, start order */
    proc_t *enext, *eprev; /* exited, exit order */
    char *tag, *command, *cwd, *user;
    char **args;
    size_t n_args;
    size_t meta;
    int pty, stdin_pipe, lossless;
    int running, final, status, timed_out, read_paused, big_pipes;
    uint64_t started, ended, ended_mono;
    int fd_out, fd_err, fd_in; /* pty: fd_out is the master, fd_in -1 */
    int pidfd;       /* the leader, until it is reaped: signals reach exactly it */
    int group_alive; /* after the leader is reaped: its group still has members */
    ev_io r_out, r_err, w_in;
    ev_timer t_timeout, t_kill, t_drain;
    uint32_t kill_grace_ms;
    uint8_t veof;
    outlog_t log;
    pstream_t *streams;
    pstream_t *wq_head, *wq_tail;
    int close_stdin_pending;
    int stop_group; /* running at shutdown: its group must be gone before exit */
    svc_t *svc;     /* a service, or a process with probes (service.c) */
    int between;    /* a service's run ended and the next one is due */
    cg_leaf_t *cg;  /* its cgroup (NULL without cgroups); a service's runs share it */
    cg_stats_t cg_final; /* the cgroup's figures when the exit became final */
};

static struct ev_loop *g_loop;
static ev_child g_child;
static ev_timer g_ttl, g_shutdown_kill;
static proc_t *g_hash[HASH_SIZE];
static proc_t *g_all_head, *g_all_tail;
static proc_t *g_exited_head, *g_exited_tail;
static unsigned g_running, g_kept;
static unsigned g_groups_watched; /* reaped leaders whose group is still alive */
static unsigned g_spawning; /* starts handed to the spawner, not yet done */
static uint64_t g_kept_bytes, g_kept_meta;
static int g_devnull = -1;
static int g_reset_oom, g_reset_nice;
static void (*g_shutdown_done)(struct ev_loop *);
static unsigned g_shutdown_polls; /* checks after the SIGKILL */
/* The buffer the next read of any process's output goes into: a large read
 * becomes that process's log chunk as it is (no copy), and a new buffer is
 * made for the next one. */
static uint8_t *g_rbuf;
static uint8_t g_scratch[OUTLOG_LINE_MAX];

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
static int stash_take(pid_t pid, uint64_t t0, int *status)
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

static void stash_clear(void)
{
    free(g_stash);
    g_stash = NULL;
    g_stash_len = g_stash_cap = 0;
}

static void finalize(proc_t *p);
static void enforce_caps(void);
static void trim_running(proc_t *p);
static void stdin_close(proc_t *p);

unsigned proc_count_running(void) { return g_running; }
unsigned proc_count_kept(void) { return g_kept; }
uint64_t proc_kept_output_bytes(void) { return g_kept_bytes; }

/* ------------------------------------------------------------ table */

static proc_t *find_pid(uint32_t pid)
{
    for (proc_t *p = g_hash[pid % HASH_SIZE]; p; p = p->hnext)
        if ((uint32_t)p->pid == pid)
            return p;
    return NULL;
}

/* The newest process with this tag, a running one first. */
static proc_t *find_tag(const char *tag)
{
    proc_t *best = NULL;
    for (proc_t *p = g_all_tail; p; p = p->prev) {
        if (!p->tag || strcmp(p->tag, tag))
            continue;
        if (p->running || (p->svc && svc_live(p->svc)))
            return p;
        if (!best)
            best = p;
    }
    return best;
}

static void table_add(proc_t *p)
{
    unsigned h = (unsigned)p->pid % HASH_SIZE;
    p->hnext = g_hash[h];
    g_hash[h] = p;
    p->prev = g_all_tail;
    p->next = NULL;
    if (g_all_tail)
        g_all_tail->next = p;
    else
        g_all_head = p;
    g_all_tail = p;
    p->in_table = 1;
    p->refs++;
}

static void proc_free(proc_t *p)
{
    /* The service's timers and probes stop first: they point at p. */
    if (p->svc)
        svc_free(p->svc);
    /* Watchers stop before the fds close, fds close before memory goes. */
    ev_io_stop(g_loop, &p->r_out);
    ev_io_stop(g_loop, &p->r_err);
    ev_io_stop(g_loop, &p->w_in);
    ev_timer_stop(g_loop, &p->t_timeout);
    ev_timer_stop(g_loop, &p->t_kill);
    ev_timer_stop(g_loop, &p->t_drain);
    if (p->group_alive) {
        p->group_alive = 0;
        g_groups_watched--;
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

static void unref(proc_t *p)
{
    if (--p->refs == 0)
        proc_free(p);
}

/* Take an exited process out of the table (forget, TTL, cap). */
static void table_remove(proc_t *p)
{
    if (!p->in_table)
        return;
    for (proc_t **pp = &g_hash[(unsigned)p->pid % HASH_SIZE]; *pp; pp = &(*pp)->hnext) {
        if (*pp == p) {
            *pp = p->hnext;
            break;
        }
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        g_all_head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        g_all_tail = p->prev;
    if (p->final) {
        if (p->eprev)
            p->eprev->enext = p->enext;
        else
            g_exited_head = p->enext;
        if (p->enext)
            p->enext->eprev = p->eprev;
        else
            g_exited_tail = p->eprev;
        g_kept--;
    }
    g_kept_meta -= p->meta;
    p->in_table = 0;
    unref(p);
}

/* ------------------------------------------------------------ signals */

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* Signal the leader alone. Through its pidfd this is exact: once the
 * leader is reaped the kernel answers ESRCH, whoever has its pid now. */
static int leader_signal(proc_t *p, int sig)
{
    if (!p->running)
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
static int group_signal(proc_t *p, int sig)
{
    if (p->running && leader_signal(p, 0) == 0)
        return kill(-p->pid, sig) < 0 ? -errno : 0;
    if (!p->group_alive)
        return -ESRCH;
    return kill(-p->pid, sig) < 0 ? -errno : 0;
}

int proc_signal_group(proc_t *p, int sig) { return group_signal(p, sig); }

/* The leader was reaped, or another process was: does p's group still
 * have members? The pid cannot be reused before the last member is reaped,
 * and this runs right after each reap, so the answer is about p's group.
 * When it is gone, no timer of p has anything left to do. */
static void group_check(proc_t *p)
{
    int alive = kill(-p->pid, 0) == 0 || errno == EPERM;
    if (alive && !p->group_alive)
        g_groups_watched++;
    else if (!alive && p->group_alive)
        g_groups_watched--;
    p->group_alive = alive;
    /* What left the group still gets the SIGKILL: its cgroup's members, or
     * without cgroups what pgkill remembered of it. */
    if (!alive && !(p->cg && cg_leaf_populated(p->cg) == 1) && !pgk_marked(p->pid))
        ev_timer_stop(g_loop, &p->t_kill);
}

static void groups_check_all(void)
{
    for (proc_t *p = g_all_head; p && g_groups_watched; p = p->next)
        if (!p->running && p->group_alive)
            group_check(p);
}

/* ------------------------------------------------------------ streams */

static void wake_streams(proc_t *p, int followers_only)
{
    for (pstream_t *s = p->streams; s; s = s->next)
        if (!followers_only || s->kind == PS_FOLLOW)
            stream_wake(&s->base);
}

static void attach_stream(proc_t *p, pstream_t *s)
{
    s->p = p;
    p->refs++;
    s->prev = NULL;
    s->next = p->streams;
    if (p->streams)
        p->streams->prev = s;
    p->streams = s;
}

static void reading_resume(proc_t *p)
{
    if (!p->read_paused)
        return;
    p->read_paused = 0;
    if (p->fd_out >= 0)
        ev_io_start(g_loop, &p->r_out);
    if (p->fd_err >= 0)
        ev_io_start(g_loop, &p->r_err);
    if (!p->running && !p->final)
        ev_timer_again(g_loop, &p->t_drain);
}

static void start_job_orphan(start_job_t *j);

/* A waiting write is over (written, failed or cancelled): its data goes and
 * its connection's input goes on. */
static void write_release(pstream_t *s)
{
    free(s->data);
    s->data = NULL;
    if (s->charged) {
        conn_upload_give(s->base.conn, s->charged);
        s->charged = 0;
    }
    if (s->held) {
        s->held = 0;
        conn_hold_input(s->base.conn, 0);
    }
}

static void pstream_destroy(stream_t *base)
{
    pstream_t *s = (pstream_t *)base;
    proc_t *p = s->p;
    if (s->job)
        start_job_orphan(s->job); /* the process still starts; nobody hears of it */
    write_release(s);
    if (s->start_req)
        sandbox__agent__v1__start_process__free_unpacked(s->start_req, NULL);
    if (p) {
        if (s->kind == PS_FOLLOW && s->attached && outlog_detach(&p->log, &s->cur))
            reading_resume(p);
        if (s->kind == PS_WRITE && s->queued) {
            /* Leave the stdin queue; what was written stays written. */
            for (pstream_t **pp = &p->wq_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->wnext) {
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
                stdin_close(p);
            else if (!p->wq_head)
                ev_io_stop(g_loop, &p->w_in);
        }
        if (s->kind != PS_WRITE) {
            if (s->prev)
                s->prev->next = s->next;
            else
                p->streams = s->next;
            if (s->next)
                s->next->prev = s->prev;
        }
        unref(p);
    }
    free(s);
}

static void fill_exit(const proc_t *p, ProcessExit *e)
{
    if (WIFSIGNALED(p->status)) {
        e->signal = WTERMSIG(p->status);
        e->exit_code = 128 + e->signal;
        e->core_dumped = WCOREDUMP(p->status) ? 1 : 0;
    } else {
        e->exit_code = WEXITSTATUS(p->status);
    }
    e->ended_at_unix_nano = p->ended;
    e->timed_out = p->timed_out ? 1 : 0;
    e->total_output_bytes = p->log.next_seq;
    if (p->cg) {
        cg_stats_t live;
        const cg_stats_t *st = &p->cg_final;
        if (!p->final) {
            cg_leaf_stats(p->cg, &live);
            st = &live;
        }
        e->oom_killed = st->oom_killed;
        e->cpu_user_nano = st->cpu_user_nano;
        e->cpu_system_nano = st->cpu_system_nano;
        e->memory_peak_bytes = st->memory_peak;
    }
}

static stream_status_t send_exit(pstream_t *s)
{
    Response r = RESPONSE_INIT;
    ProcessExit e = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
    fill_exit(s->p, &e);
    r.result_case = RES(EXIT);
    r.exit = &e;
    conn_send(s->base.conn, s->base.id, 1, &r);
    return STREAM_DONE;
}

static stream_status_t send_ack(conn_t *c, uint64_t id)
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
    pstream_t *s = (pstream_t *)base;
    proc_t *p = s->p;
    outlog_item_t it;
    Response r = RESPONSE_INIT;
    int rc = 0, final = p->final;
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
    } else if (p->final) {
        return send_exit(s);
    } else if (s->no_wait) {
        return send_ack(base->conn, base->id);
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
    pstream_t *s = (pstream_t *)base;
    return s->p->final ? send_exit(s) : STREAM_WAIT;
}

static stream_status_t write_next(stream_t *base)
{
    pstream_t *s = (pstream_t *)base;
    if (s->result == 0)
        return STREAM_WAIT;
    if (s->result > 0)
        return send_ack(base->conn, base->id);
    conn_send_errno(base->conn, base->id, s->result == -EPIPE ? -EPIPE : s->result,
                    "stdin of process %d: %s", (int)s->p->pid,
                    s->result == -EPIPE ? "closed (the process exited or closed it)"
                                        : strerror(-s->result));
    return STREAM_DONE;
}

static const stream_ops_t follow_ops = {
    .name = "follow",
    .next = follow_next,
    .destroy = pstream_destroy,
};
static const stream_ops_t wait_ops = {
    .name = "wait",
    .next = wait_next,
    .destroy = pstream_destroy,
};
static const stream_ops_t write_ops = {
    .name = "write_stdin",
    .next = write_next,
    .destroy = pstream_destroy,
};

static pstream_t *pstream_new(const stream_ops_t *ops, enum pkind kind)
{
    pstream_t *s = calloc(1, sizeof *s);
    if (s) {
        s->base.ops = ops;
        s->kind = kind;
    }
    return s;
}

/* Register s as the stream answering id. On failure s is destroyed and the
 * error answered; returns 0 or -errno. */
static int stream_register(conn_t *c, uint64_t id, pstream_t *s, const char *op)
{
    int rc = conn_stream_add(c, &s->base, id);
    if (rc < 0) {
        pstream_destroy(&s->base);
        conn_send_errno(c, id, rc, "%s: %s", op,
                        rc == -EMFILE ? "too many requests in flight on this connection"
                                      : strerror(-rc));
    }
    return rc;
}

/* ------------------------------------------------------------ stdin */

static void stdin_close(proc_t *p)
{
    ev_io_stop(g_loop, &p->w_in);
    if (p->fd_in >= 0) {
        close(p->fd_in);
        p->fd_in = -1;
    }
    p->close_stdin_pending = 0;
}

static int stdin_fd(const proc_t *p) { return p->pty ? p->fd_out : p->fd_in; }

static void stdin_fail_all(proc_t *p, int err)
{
    while (p->wq_head) {
        pstream_t *s = p->wq_head;
        p->wq_head = s->wnext;
        s->queued = 0;
        s->result = err;
        write_release(s);
        stream_wake(&s->base);
    }
    p->wq_tail = NULL;
    ev_io_stop(g_loop, &p->w_in);
}

/* Write queued stdin data while the pipe accepts it. */
static void stdin_pump(proc_t *p)
{
    int fd = stdin_fd(p);
    while (p->wq_head) {
        pstream_t *s = p->wq_head;
        ssize_t n = write(fd, s->data + s->off, s->len - s->off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            stdin_fail_all(p, -errno);
            if (!p->pty)
                stdin_close(p);
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
        ev_io_start(g_loop, &p->w_in);
        return;
    }
    ev_io_stop(g_loop, &p->w_in);
    if (p->close_stdin_pending)
        stdin_close(p);
}

static void on_stdin_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    stdin_pump(w->data);
}

/* ------------------------------------------------------------ output */

static void close_output(proc_t *p, ev_io *w, int *fd)
{
    ev_io_stop(g_loop, w);
    /* On a PTY the master is stdin too: its write watcher goes first. */
    if (p->pty && fd == &p->fd_out)
        ev_io_stop(g_loop, &p->w_in);
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void on_output(struct ev_loop *loop, ev_io *w, int revents)
{
    proc_t *p = w->data;
    int is_err = w == &p->r_err;
    int *fd = is_err ? &p->fd_err : &p->fd_out;
    int stream = is_err ? ST(STDERR) : p->pty ? ST(PTY) : ST(STDOUT);
    ssize_t n;
    int taken = 0;

    if (!g_rbuf && !(g_rbuf = outlog_buf_new(READ_SIZE)))
        return; /* out of memory: the pipe waits, the next turn tries again */
    n = read(*fd, g_rbuf, READ_SIZE);
    if (n > 0) {
        uint8_t *data = g_rbuf;
        if (outlog_append_buf(&p->log, stream, g_rbuf, (size_t)n,
                              (uint64_t)(ev_now(loop) * 1e9), &taken) < 0) {
            /* Followers learn of it as a gap, never as silence. */
            log_error("process %d: out of memory for output; %zd bytes dropped", (int)p->pid, n);
            outlog_drop(&p->log, stream, (size_t)n);
        } else if (p->svc) {
            svc_output(p->svc, data, (size_t)n); /* an output probe; the log holds data now */
        }
        if (taken)
            g_rbuf = NULL;
        /* A process that fills the pipe gets a bigger one: fewer wakeups
         * for bulk output, no cost for short commands. */
        if (!p->big_pipes && (size_t)n >= 65536 && !p->pty) {
            p->big_pipes = 1;
            if (p->fd_out >= 0)
                fcntl(p->fd_out, F_SETPIPE_SZ, PIPE_BIG);
            if (p->fd_err >= 0)
                fcntl(p->fd_err, F_SETPIPE_SZ, PIPE_BIG);
        }
        wake_streams(p, 1);
        if (outlog_paused(&p->log)) {
            p->read_paused = 1;
            ev_io_stop(loop, &p->r_out);
            ev_io_stop(loop, &p->r_err);
            ev_timer_stop(loop, &p->t_drain);
        } else if (!p->running) {
            ev_timer_again(loop, &p->t_drain);
        }
        if (g_kept_bytes + g_kept_meta > g_config.max_kept_output) {
            enforce_caps();
            trim_running(p);
        }
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* EOF; EIO is a PTY whose slave side every process closed. */
    if (n < 0 && errno != EIO)
        log_warn("process %d: read %s: %s", (int)p->pid, is_err ? "stderr" : "stdout",
                 strerror(errno));
    close_output(p, w, fd);
    if (p->pty)
        stdin_fail_all(p, -EIO); /* its stdin was that pty */
    if (!p->running && p->fd_out < 0 && p->fd_err < 0)
        finalize(p);
}

/* The leader exited DRAIN_IDLE_MS ago with no output since: whatever still
 * holds the pipes (a background grandchild) no longer holds the exit. */
static int fd_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return fd >= 0 && poll(&pfd, 1, 0) == 1;
}

static void on_drain_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *p = w->data;
    /* A loop that comes late runs this timer before the pipes' read
     * callbacks of the same turn: output waiting in a pipe is not
     * idleness, and closing now would lose it. The readers take it; the
     * timer, repeating, looks again. */
    if (fd_readable(p->fd_out) || fd_readable(p->fd_err))
        return;
    close_output(p, &p->r_out, &p->fd_out);
    close_output(p, &p->r_err, &p->fd_err);
    finalize(p);
}

/* ------------------------------------------------------------ lifecycle */

static void on_ttl(struct ev_loop *loop, ev_timer *w, int revents)
{
    uint64_t now = util_now_mono_nano();
    uint64_t ttl = (uint64_t)g_config.exited_ttl_s * 1000000000ull;
    while (g_exited_head && g_exited_head->ended_mono + ttl <= now)
        table_remove(g_exited_head);
    if (g_exited_head) {
        double left = (double)(g_exited_head->ended_mono + ttl - now) / 1e9;
        ev_timer_set(w, left + 0.001, 0);
        ev_timer_start(loop, w);
    }
}

/* Over the total cap: exited processes go, oldest first. */
static void enforce_caps(void)
{
    while (g_exited_head && g_kept_bytes + g_kept_meta > g_config.max_kept_output)
        table_remove(g_exited_head);
}

/* Still over the total cap with no exited process left to drop: running
 * processes alone hold too much. The process whose output just arrived
 * trims its own window by the excess, down to TRIM_FLOOR: its followers see
 * an OutputGap as usual (a lossless one pauses instead), and the agent's
 * memory stays within the cap plus TRIM_FLOOR per running process. */
#define TRIM_FLOOR (64 * 1024)
static void trim_running(proc_t *p)
{
    uint64_t total = g_kept_bytes + g_kept_meta;
    if (total <= g_config.max_kept_output)
        return;
    uint64_t excess = total - g_config.max_kept_output;
    uint64_t target = p->log.cost > excess + TRIM_FLOOR ? p->log.cost - excess : TRIM_FLOOR;
    outlog_trim(&p->log, target);
    if (outlog_paused(&p->log) && !p->read_paused) {
        p->read_paused = 1;
        ev_io_stop(g_loop, &p->r_out);
        ev_io_stop(g_loop, &p->r_err);
        ev_timer_stop(g_loop, &p->t_drain);
    }
}

/* A service's run is over and another will follow: the run's pipes, stdin
 * and timers go, whatever it left in its group is killed (a leftover
 * worker must not hold the next run's port), and followers are told. The
 * record, its log and its followers stay. */
static int signal_all(proc_t *p, int sig);

static void run_end(proc_t *p)
{
    p->between = 1;
    ev_timer_stop(g_loop, &p->t_drain);
    ev_timer_stop(g_loop, &p->t_timeout);
    ev_timer_stop(g_loop, &p->t_kill);
    stdin_fail_all(p, -EPIPE);
    close_output(p, &p->r_out, &p->fd_out);
    close_output(p, &p->r_err, &p->fd_err);
    stdin_close(p);
    signal_all(p, SIGKILL);
    wake_streams(p, 0);
}

static void finalize(proc_t *p)
{
    if (p->final)
        return;
    /* A service's run ended: the service decides whether another follows. */
    if (p->svc && !p->between &&
        svc_run_ended(p->svc, p->status, p->timed_out, p->ended, p->log.next_seq)) {
        run_end(p);
        return;
    }
    p->between = 0;
    /* The figures every ProcessExit of it reports from now on; a service's
     * cgroup goes once it is over. */
    if (p->cg)
        cg_leaf_stats(p->cg, &p->cg_final);
    cg_leaf_release(p->cg);
    p->final = 1;
    ev_timer_stop(g_loop, &p->t_drain);
    ev_timer_stop(g_loop, &p->t_timeout);
    stdin_fail_all(p, -EPIPE);
    if (p->pty) {
        close_output(p, &p->r_out, &p->fd_out);
    }
    stdin_close(p);
    wake_streams(p, 0);
    if (!p->in_table)
        return;
    p->eprev = g_exited_tail;
    p->enext = NULL;
    if (g_exited_tail)
        g_exited_tail->enext = p;
    else
        g_exited_head = p;
    g_exited_tail = p;
    g_kept++;
    if (!ev_is_active(&g_ttl)) {
        ev_timer_set(&g_ttl, (double)g_config.exited_ttl_s + 0.001, 0);
        ev_timer_start(g_loop, &g_ttl);
    }
    enforce_caps(); /* may free p */
}

static void drop_all(void)
{
    ev_timer_stop(g_loop, &g_ttl);
    outlog_buf_free(g_rbuf);
    g_rbuf = NULL;
    while (g_all_head) {
        proc_t *p = g_all_head;
        if (!p->final) {
            /* Shutdown: no one reads any more. */
            p->final = 1;
            stdin_fail_all(p, -EPIPE);
            p->eprev = g_exited_tail;
            p->enext = NULL;
            if (g_exited_tail)
                g_exited_tail->enext = p;
            else
                g_exited_head = p;
            g_exited_tail = p;
            g_kept++;
        }
        table_remove(p);
    }
}

/* A group that was running at shutdown still has members (a grandchild
 * that ignores SIGTERM outlives its shell). Its pgid cannot be reused while
 * any member lives, so kill(-pgid, 0) asks about that group only. */
static int stopped_groups_alive(void)
{
    groups_check_all();
    for (proc_t *p = g_all_head; p; p = p->next)
        if (p->stop_group && group_signal(p, 0) == 0)
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
static void shutdown_check(void)
{
    if (g_shutdown_done && g_running == 0 && g_spawning == 0 &&
        (g_shutdown_polls >= SHUTDOWN_MAX_POLLS || !stopped_groups_alive())) {
        void (*done)(struct ev_loop *) = g_shutdown_done;
        g_shutdown_done = NULL;
        ev_timer_stop(g_loop, &g_shutdown_kill);
        ev_child_stop(g_loop, &g_child);
        drop_all();
        done(g_loop);
    }
}

static void leader_exited(proc_t *p, int status)
{
    p->running = 0;
    p->status = status;
    p->ended = util_now_unix_nano();
    p->ended_mono = util_now_mono_nano();
    g_running--;
    ev_timer_stop(g_loop, &p->t_timeout);
    /* Reaped: its pid may be anyone's from now on. */
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
    }
    /* t_kill keeps running after a timeout while the group has members (the
     * stragglers get SIGKILL too), and stops when the group is gone. */
    group_check(p);
    /* No more processes start in its cgroup (a service's next run does):
     * it goes once empty. */
    if (!p->svc)
        cg_leaf_release(p->cg);
    if (WIFSIGNALED(status))
        log_debug("process %d killed by signal %d", (int)p->pid, WTERMSIG(status));
    else
        log_debug("process %d exited %d", (int)p->pid, WEXITSTATUS(status));
    if (p->fd_out < 0 && p->fd_err < 0) {
        finalize(p);
    } else if (!p->read_paused) {
        ev_timer_set(&p->t_drain, DRAIN_IDLE_MS / 1000.0, DRAIN_IDLE_MS / 1000.0);
        ev_timer_again(g_loop, &p->t_drain);
    }
    shutdown_check();
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    proc_t *p = find_pid((uint32_t)w->rpid);
    cg_on_reap();
    if (p && p->running) {
        leader_exited(p, w->rstatus);
    } else {
        /* A member of some group: was it the last of its group? */
        groups_check_all();
        /* An orphan the agent inherited, or a child whose record is not in
         * the table yet (only while starts are with the spawner). */
        if (g_spawning)
            stash_put(w->rpid, w->rstatus);
        log_debug("reaped pid %d (not started by a request), status 0x%x", (int)w->rpid,
                  w->rstatus);
        /* Shutdown may have waited for this one (a background child). */
        if (g_shutdown_done)
            shutdown_check();
    }
}

/* A signal to everything p started: its cgroup when it has one (setsid,
 * double forks and forks in flight included; SIGKILL is cgroup.kill), else
 * its process group, where a SIGKILL is repeated until the group is empty
 * and reaches the descendants that left it (pgkill). */
static int signal_all(proc_t *p, int sig)
{
    if (p->cg && cg_leaf_signal(p->cg, sig) == 0)
        return 0;
    /* Only a group known to be p's (group_signal's rule), or the processes
     * pgk_mark() remembered of it. */
    if (sig == SIGKILL && !p->cg && (group_signal(p, 0) == 0 || pgk_marked(p->pid))) {
        pgk_kill(p->pid);
        return 0;
    }
    return group_signal(p, sig);
}

int proc_signal_all(proc_t *p, int sig) { return signal_all(p, sig); }

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *p = w->data;
    if (!p->running)
        return;
    log_info("process %d: timeout; SIGTERM to its %s, SIGKILL in %u ms", (int)p->pid,
             p->cg ? "cgroup" : "group", p->kill_grace_ms);
    p->timed_out = 1;
    if (!p->cg)
        pgk_mark(p->pid); /* who belongs to it, before the SIGTERM ends the shell */
    signal_all(p, SIGTERM);
    ev_timer_set(&p->t_kill, p->kill_grace_ms / 1000.0, 0);
    ev_timer_start(loop, &p->t_kill);
}

static void on_kill(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *p = w->data;
    signal_all(p, SIGKILL); /* the group outlives its leader, not its last member */
}

static void on_shutdown_kill(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (g_shutdown_polls++ == 0) {
        for (proc_t *p = g_all_head; p; p = p->next)
            if (p->running || p->stop_group)
                signal_all(p, SIGKILL);
        cg_workload_kill();
    }
    /* Check again until the groups are reaped (orphans come to the agent). */
    ev_timer_set(w, SHUTDOWN_POLL_S, 0);
    ev_timer_start(loop, w);
    shutdown_check();
}

int proc_init(struct ev_loop *loop)
{
    int fd, rc;
    char buf[32] = "";

    g_loop = loop;
    /* Keep 0..2 taken, so no pipe of ours lands there (the child's dup2
     * would then keep close-on-exec). */
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
        ;
    if (fd >= 0)
        close(fd);
    g_devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (g_devnull < 0)
        return -errno;
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        log_warn("cannot become a child subreaper (%s): orphans will not be reaped here",
                 strerror(errno));
    /* Children start at oom_score_adj 0 whatever the agent set itself to. */
    if ((fd = open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC)) >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        g_reset_oom = n > 0 && atoi(buf) != 0;
    }
    /* Likewise nice 0, whatever the agent runs at. */
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, 0);
    g_reset_nice = errno == 0 && prio != 0;
    pgk_init(loop);
    if ((rc = spawn_async_init(loop)) < 0)
        return rc;
    ev_child_init(&g_child, on_child, 0, 0);
    ev_child_start(loop, &g_child);
    ev_init(&g_ttl, on_ttl);
    ev_init(&g_shutdown_kill, on_shutdown_kill);
    return 0;
}

void proc_shutdown(struct ev_loop *loop, uint32_t grace_ms, void (*done)(struct ev_loop *))
{
    g_shutdown_done = done;
    svc_shutdown(); /* no more restarts; services between runs end */
    /* A frozen workload could not act on SIGTERM. */
    cg_freeze_all(0);
    for (proc_t *p = g_all_head; p; p = p->next) {
        if (p->running) {
            if (!p->cg)
                pgk_mark(p->pid);
            signal_all(p, SIGTERM);
            p->stop_group = 1;
        }
    }
    /* Background children of processes that exited go too. */
    cg_workload_signal(SIGTERM);
    if (g_running || cg_workload_populated() == 1) {
        ev_timer_set(&g_shutdown_kill, grace_ms / 1000.0, 0);
        ev_timer_start(loop, &g_shutdown_kill);
    }
    shutdown_check();
}

/* ------------------------------------------------------------ start */

typedef struct start_ctx {
    char **argv;
    char **envp;
    char **owned; /* strings we allocated for envp */
    size_t n_owned;
    int fds[8];
    int n_fds;
} start_ctx_t;

static void ctx_free(start_ctx_t *x)
{
    for (size_t i = 0; i < x->n_owned; i++)
        free(x->owned[i]);
    free(x->owned);
    free(x->envp);
    free(x->argv);
    for (int i = 0; i < x->n_fds; i++)
        if (x->fds[i] >= 0)
            close(x->fds[i]);
}

static int env_key_eq(const char *entry, const char *key, size_t klen)
{
    return !strncmp(entry, key, klen) && entry[klen] == '=';
}

static int env_set(start_ctx_t *x, size_t *n, const char *key, const char *value)
{
    size_t klen = strlen(key), vlen = strlen(value);
    char *s = malloc(klen + vlen + 2);
    if (!s)
        return -ENOMEM;
    memcpy(s, key, klen);
    s[klen] = '=';
    memcpy(s + klen + 1, value, vlen + 1);
    x->owned[x->n_owned++] = s;
    for (size_t i = 0; i < *n; i++) {
        if (env_key_eq(x->envp[i], key, klen)) {
            x->envp[i] = s;
            return 0;
        }
    }
    x->envp[(*n)++] = s;
    return 0;
}

static const char *env_get(char **envp, size_t n, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (env_key_eq(envp[i], key, klen))
            return envp[i] + klen + 1;
    return NULL;
}

static int has_req_env(const StartProcess *sp, const char *key)
{
    for (size_t i = 0; i < sp->n_env; i++)
        if (!strcmp(sp->env[i]->key, key))
            return 1;
    return 0;
}

extern char **environ;

/* Left out of what a child inherits: they describe the agent's own shell. */
static int env_shell_var(const char *e)
{
    return !strncmp(e, "PWD=", 4) || !strncmp(e, "OLDPWD=", 7) || !strncmp(e, "_=", 2);
}

/* What another user's login keeps of the agent's environment. */
static int env_locale_var(const char *e)
{
    return !strncmp(e, "LANG=", 5) || !strncmp(e, "LANGUAGE=", 9) || !strncmp(e, "LC_", 3) ||
           !strncmp(e, "TZ=", 3);
}

/* envp, as ssh gives a login: the agent's environment (for another user
 * only its locale and TZ; never its PWD, OLDPWD, _), then the user's HOME,
 * USER, LOGNAME, SHELL and, unless the agent's own user inherits one, a
 * PATH; then on a PTY TERM; then the request's env, later ones winning.
 * clear_env: the request's env (and TERM) only. */
static int build_env(start_ctx_t *x, const StartProcess *sp, const user_id_t *u, int set_user)
{
    size_t base = 0, n = 0;
    if (!sp->clear_env)
        while (environ[base])
            base++;
    size_t cap = base + sp->n_env + 8;
    x->envp = calloc(cap, sizeof *x->envp);
    x->owned = calloc(sp->n_env + 8, sizeof *x->owned);
    if (!x->envp || !x->owned)
        return -ENOMEM;
    for (size_t i = 0; i < base; i++)
        if (!env_shell_var(environ[i]) && (!set_user || env_locale_var(environ[i])))
            x->envp[n++] = environ[i];
    if (!sp->clear_env) {
        char uid[16];
        const char *name = u->name[0] ? u->name : uid;
        snprintf(uid, sizeof uid, "%u", (unsigned)u->uid);
        if (env_set(x, &n, "HOME", u->home) < 0 || env_set(x, &n, "USER", name) < 0 ||
            env_set(x, &n, "LOGNAME", name) < 0 ||
            env_set(x, &n, "SHELL", u->shell[0] ? u->shell : "/bin/sh") < 0)
            return -ENOMEM;
        if (!env_get(x->envp, n, "PATH") &&
            env_set(x, &n, "PATH", u->uid == 0 ? DEFAULT_PATH : USER_PATH) < 0)
            return -ENOMEM;
    }
    if (sp->pty && !has_req_env(sp, "TERM") &&
        env_set(x, &n, "TERM", sp->pty->term && sp->pty->term[0] ? sp->pty->term
                                                                 : "xterm-256color") < 0)
        return -ENOMEM;
    for (size_t i = 0; i < sp->n_env; i++)
        if (env_set(x, &n, sp->env[i]->key, sp->env[i]->value) < 0)
            return -ENOMEM;
    x->envp[n] = NULL;
    return (int)n;
}

/* Strings kept for ProcessInfo go back out in proto3 string fields, which
 * must be UTF-8: protobuf-c does not check what a client sent, so a tag,
 * command or argument that is not UTF-8 is kept with U+FFFD in its place
 * (a strict client could not parse the answer otherwise). */
static char *xstrdup(const char *s) { return util_utf8_sanitize(s ? s : "", s ? strlen(s) : 0); }

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

static int open_pty(const StartProcess *sp, int *master, int *slave, uint8_t *veof)
{
    char name[128];
    struct winsize ws = {0};
    struct termios t;
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), s = -1, e;
    if (m < 0)
        return -errno;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name) != 0)
        goto fail;
    if ((s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
        goto fail;
    ws.ws_row = (unsigned short)(sp->pty->rows ? sp->pty->rows : 24);
    ws.ws_col = (unsigned short)(sp->pty->cols ? sp->pty->cols : 80);
    if (ioctl(m, TIOCSWINSZ, &ws) < 0)
        goto fail;
    *veof = tcgetattr(s, &t) == 0 && t.c_cc[VEOF] ? t.c_cc[VEOF] : 4;
    if (util_set_nonblock_cloexec(m) < 0)
        goto fail;
    *master = m;
    *slave = s;
    return 0;
fail:
    e = errno ? errno : EIO;
    close(m);
    if (s >= 0)
        close(s);
    return -e;
}

static int make_pipe(int fds[2], int parent_end)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    /* A fresh pipe end has no status flags but its access mode, which
     * F_SETFL ignores: no F_GETFL needed. Only the agent's end is
     * non-blocking; the child's stays blocking. */
    fcntl(fds[parent_end], F_SETFL, O_NONBLOCK);
    return 0;
}

static int reply_start_error(conn_t *c, uint64_t id, int rc, enum spawn_stage st,
                             const StartProcess *sp)
{
    int e = -rc;
    switch (st) {
    case SPAWN_EXEC:
        if (e == E2BIG)
            return conn_send_errno(c, id, rc,
                                   "command '%s': arguments and environment too large for exec "
                                   "(%zu args, %zu env entries): %s",
                                   sp->command, sp->n_args, sp->n_env, strerror(e));
        return conn_send_errno(c, id, rc, "command '%s': %s", sp->command, strerror(e));
    case SPAWN_CWD:
        return conn_send_errno(c, id, rc, "cwd '%s': %s", sp->cwd, strerror(e));
    case SPAWN_CGROUP:
        return conn_send_errno(c, id, rc, "command '%s': cannot start it in its cgroup: %s",
                               sp->command, strerror(e));
    case SPAWN_GROUPS:
    case SPAWN_GID:
    case SPAWN_UID:
        return conn_send_errno(c, id, rc, "user '%s': %s: %s", sp->user, spawn_stage_name(st),
                               strerror(e));
    case SPAWN_FORK:
        if (e == EAGAIN || e == ENOMEM)
            return conn_send_error(c, id, CODE(RESOURCE_EXHAUSTED), e,
                                   "cannot start '%s': the system refuses more processes "
                                   "(%s; see ulimit -u, pids.max)",
                                   sp->command, strerror(e));
        return conn_send_errno(c, id, rc, "cannot start '%s': %s", sp->command, strerror(e));
    default:
        return conn_send_errno(c, id, rc, "command '%s': %s: %s", sp->command,
                               spawn_stage_name(st), strerror(e));
    }
}

static int valid_env_key(const char *k)
{
    return k && k[0] && !strchr(k, '=');
}

/* A start in flight: everything the spawner and the record need, owned
 * here, since the request is freed when its handler returns. */
struct start_job {
    spawn_job_t sj;
    pstream_t *s;     /* the request's stream; NULL once it went away */
    proc_t *rec;      /* a service's next run: the record it joins */
    svc_t *svc;       /* a new service's state, the record's once made */
    StartProcess *sp; /* a copy of the request */
    start_ctx_t x;
    user_id_t u;
    int set_user;
    int master, out_r, err_r, in_w; /* the agent's ends */
    uint8_t veof;
    uint64_t t0;
    cg_leaf_t *cg; /* the process's cgroup, until the record takes it */
};

static void start_job_orphan(start_job_t *j)
{
    j->s = NULL;
}

static void start_job_free(start_job_t *j)
{
    /* A start that failed: its empty cgroup goes at once (a service's
     * stays: the record holds it too). */
    if (j->cg && !j->rec)
        cg_leaf_release(j->cg);
    cg_leaf_unref(j->cg);
    ctx_free(&j->x);
    if (j->svc)
        svc_free(j->svc);
    if (j->sp)
        sandbox__agent__v1__start_process__free_unpacked(j->sp, NULL);
    if (j->rec)
        unref(j->rec);
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
    pstream_t *s = (pstream_t *)base;
    if (s->job)
        return STREAM_WAIT;
    if (s->start_rc < 0) {
        reply_start_error(base->conn, base->id, s->start_rc, s->start_stage, s->start_req);
        return STREAM_DONE;
    }
    send_started(base->conn, base->id, !s->start_follow, s->p);
    if (!s->start_follow)
        return STREAM_DONE;
    s->kind = PS_FOLLOW;
    s->lines = s->start_lines;
    outlog_attach(&s->p->log, &s->cur, 0);
    s->attached = 1;
    if (s->p->svc)
        svc_follow_init(s->p->svc, &s->sf, s->cur.seq);
    base->ops = &follow_ops;
    return STREAM_MORE;
}

static const stream_ops_t start_ops = {
    .name = "start",
    .next = start_next,
    .destroy = pstream_destroy,
};

/* A new record: what stays the same across a service's runs (identity,
 * log). NULL on ENOMEM. */
static proc_t *record_new(start_job_t *j)
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
    outlog_init(&p->log, window, sp->lossless, &g_kept_bytes);
    p->command = xstrdup(sp->command);
    p->tag = sp->tag && sp->tag[0] ? xstrdup(sp->tag) : NULL;
    p->cwd = xstrdup(sp->cwd);
    p->user = xstrdup(j->set_user || (sp->user && sp->user[0]) ? sp->user : j->u.name);
    p->args = calloc(sp->n_args ? sp->n_args : 1, sizeof *p->args);
    p->meta = META_OVERHEAD + strlen(sp->command) + strlen(p->cwd ? p->cwd : "");
    if (p->args) {
        for (size_t i = 0; i < sp->n_args; i++) {
            if (!(p->args[i] = xstrdup(sp->args[i])))
                break;
            p->n_args++;
            p->meta += strlen(sp->args[i]) + sizeof(char *);
        }
    }
    ev_init(&p->r_out, on_output);
    ev_init(&p->r_err, on_output);
    ev_init(&p->w_in, on_stdin_writable);
    ev_init(&p->t_timeout, on_timeout);
    ev_init(&p->t_kill, on_kill);
    ev_init(&p->t_drain, on_drain_idle);
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

/* A service's next run joins its record under the new pid. */
static void table_rekey(proc_t *p, pid_t pid)
{
    for (proc_t **pp = &g_hash[(unsigned)p->pid % HASH_SIZE]; *pp; pp = &(*pp)->hnext) {
        if (*pp == p) {
            *pp = p->hnext;
            break;
        }
    }
    p->pid = pid;
    p->hnext = g_hash[(unsigned)pid % HASH_SIZE];
    g_hash[(unsigned)pid % HASH_SIZE] = p;
}

/* One run of a record: the pid, its pipes or PTY, watchers and timeout. */
static void run_begin(proc_t *p, start_job_t *j, pid_t pid)
{
    const StartProcess *sp = j->sp;
    p->running = 1;
    p->between = 0;
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
    ev_timer_set(&p->t_drain, DRAIN_IDLE_MS / 1000.0, DRAIN_IDLE_MS / 1000.0);
    /* A lossless log that a slow follower still holds keeps the new run's
     * pipes paused too. */
    p->read_paused = outlog_paused(&p->log);
    if (!p->read_paused) {
        ev_io_start(g_loop, &p->r_out);
        if (p->fd_err >= 0)
            ev_io_start(g_loop, &p->r_err);
    }
    if (sp->timeout_ms) {
        ev_timer_set(&p->t_timeout, sp->timeout_ms / 1000.0, 0);
        ev_timer_start(g_loop, &p->t_timeout);
    }
    if (p->in_table) {
        table_rekey(p, pid);
    } else {
        p->pid = pid;
        table_add(p);
        g_kept_meta += p->meta;
    }
    g_running++;
    if (p->svc)
        svc_run_started(p->svc, pid, p->log.next_seq);
}

/* The spawner is done (loop thread). On success the record is made (or a
 * service's record takes the new run) whether or not anybody still waits
 * for the answer: the process runs. */
static void start_done(spawn_job_t *sj)
{
    start_job_t *j = (start_job_t *)sj;
    const StartProcess *sp = j->sp;
    pstream_t *s = j->s;
    pid_t pid = sj->pid;
    proc_t *p = j->rec;

    g_spawning--;
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
    if (p && p->final) {
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
    if (!stash_take(pid, j->t0, &stashed)) {
        p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (p->pidfd < 0 && errno != ENOSYS)
            log_debug("process %d: pidfd_open: %s", (int)pid, strerror(errno));
    } else {
        leader_exited(p, stashed);
    }
    log_debug("started process %d: %s (%zu args)", (int)pid, sp->command, sp->n_args);
    if (g_shutdown_done) {
        /* Started while the agent was stopping: it goes with the rest. */
        group_signal(p, SIGTERM);
        p->stop_group = 1;
        if (!ev_is_active(&g_shutdown_kill)) {
            ev_timer_set(&g_shutdown_kill, g_config.kill_grace_ms / 1000.0, 0);
            ev_timer_start(g_loop, &g_shutdown_kill);
        }
    }
    if (s)
        attach_stream(p, s);
    if (j->rec)
        wake_streams(p, 0); /* followers: ProcessRestarted */
out:
    if (!g_spawning)
        stash_clear(); /* no start left to claim an exit */
    if (s) {
        /* The request is the stream's now, for an error message. */
        s->start_req = j->sp;
        j->sp = NULL;
        stream_wake(&s->base);
    }
    start_job_free(j);
    if (g_shutdown_done)
        shutdown_check();
}

/* Why a start was refused before anything ran. */
typedef struct start_err {
    int code, os_errno;
    char msg[512];
} start_err_t;

static int start_refuse(start_err_t *e, int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int start_refuse(start_err_t *e, int code, int os_errno, const char *fmt, ...)
{
    va_list ap;
    e->code = code;
    e->os_errno = os_errno;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int start_refuse_errno(start_err_t *e, int rc, const char *msg)
{
    return start_refuse(e, errcode_from_errno(rc), -rc, "%s", msg);
}

/* Everything a ProcessInfo echoes must fit in an answer, so that GetProcess
 * and ListProcesses can always answer: the strings are bounded here. */
static int start_check_sizes(const StartProcess *sp, start_err_t *e)
{
    char what[64] = "";
    size_t n = 0, max = 0;
    int err = 0;

    if ((n = sp->tag ? strlen(sp->tag) : 0) > TAG_MAX) {
        snprintf(what, sizeof what, "tag");
        max = TAG_MAX;
    } else if ((n = strlen(sp->command)) >= PATH_MAX) {
        snprintf(what, sizeof what, "command");
        max = PATH_MAX - 1;
        err = ENAMETOOLONG;
    } else if ((n = sp->cwd ? strlen(sp->cwd) : 0) >= PATH_MAX) {
        snprintf(what, sizeof what, "cwd");
        max = PATH_MAX - 1;
        err = ENAMETOOLONG;
    } else if ((n = sp->user ? strlen(sp->user) : 0) > USER_SPEC_MAX) {
        snprintf(what, sizeof what, "user");
        max = USER_SPEC_MAX;
    }
    for (size_t i = 0; !what[0] && i < sp->n_args; i++) {
        if ((n = strlen(sp->args[i])) >= ARG_STR_MAX) {
            snprintf(what, sizeof what, "argument %zu", i + 1);
            max = ARG_STR_MAX - 1;
            err = E2BIG;
        }
    }
    for (size_t i = 0; !what[0] && i < sp->n_env; i++) {
        const Sandbox__Agent__V1__StartProcess__EnvEntry *en = sp->env[i];
        if ((n = strlen(en->key ? en->key : "") + 1 + strlen(en->value ? en->value : "")) >=
            ARG_STR_MAX) {
            snprintf(what, sizeof what, "env entry %zu", i + 1);
            max = ARG_STR_MAX - 1;
            err = E2BIG;
        }
    }
    if (!what[0])
        return 0;
    return start_refuse(e, CODE(INVALID_ARGUMENT), err, "start: %s of %zu bytes is longer than %zu",
                        what, n, max);
}

/* The process's cgroup with its limits (the request's, else the agent's
 * defaults); a service's runs share the first run's. A limit no enabled
 * controller can hold is refused, never ignored. 0, or -1 with e filled. */
static int start_cgroup(const StartProcess *sp, proc_t *rec, start_job_t *j, start_err_t *e)
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
        return start_refuse(e, rc == -EINVAL ? CODE(INVALID_ARGUMENT) : CODE(FAILED_PRECONDITION),
                            -rc, "start: %s", err);
    if (!cg_available())
        return 0;
    if (cg_freeze_requested())
        return start_refuse(e, CODE(FAILED_PRECONDITION), 0,
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
        return start_refuse_errno(e, rc, err);
    return 0;
}

/* Everything a start needs from the request alone: checks, the user, the
 * environment, pipes or PTY, the spawn request. 0 with *jp, or -1 with e
 * filled. rec: a service's record that the run joins (referenced). */
static int start_prepare(const StartProcess *sp, proc_t *rec, start_job_t **jp, start_err_t *e)
{
    start_job_t *j = NULL;
    char err[256];
    spawn_req_t *sr;
    int rc, set_user = sp->user && sp->user[0];
    int master = -1, slave = -1, out[2] = {-1, -1}, errp[2] = {-1, -1}, in[2] = {-1, -1};

    if (!sp->command || !sp->command[0])
        return start_refuse(e, CODE(INVALID_ARGUMENT), 0, "start: command is empty");
    if (start_check_sizes(sp, e) < 0)
        return -1;
    for (size_t i = 0; i < sp->n_env; i++) {
        if (!valid_env_key(sp->env[i]->key))
            return start_refuse(e, CODE(INVALID_ARGUMENT), 0,
                                "start: env key '%s' is not a valid name (empty or contains '=')",
                                sp->env[i]->key ? sp->env[i]->key : "");
    }
    if (sp->pty && (sp->pty->rows > 65535 || sp->pty->cols > 65535))
        return start_refuse(e, CODE(INVALID_ARGUMENT), 0,
                            "start: pty size %ux%u is out of range (1..65535)", sp->pty->rows,
                            sp->pty->cols);
    if (g_shutdown_done)
        return start_refuse(e, CODE(UNAVAILABLE), 0, "start: the agent is shutting down");
    /* Services waiting to restart count: each holds its record and log. A
     * service's own next run is not counted twice. */
    unsigned busy = g_running + g_spawning + svc_count_waiting() - (rec ? 1 : 0);
    if (busy >= g_config.max_processes)
        return start_refuse(e, CODE(RESOURCE_EXHAUSTED), 0,
                            "start: %u processes are running or waiting to restart, the limit "
                            "(--max-processes) is %u",
                            busy, g_config.max_processes);
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
        if (!(j->svc = svc_new(g_loop, sp, &code, err, sizeof err))) {
            start_refuse(e, code, 0, "start: %s", err);
            goto fail;
        }
    }
    if (start_cgroup(sp, rec, j, e) < 0)
        goto fail;
    if (set_user) {
        if ((rc = user_resolve(sp->user, &j->u, err, sizeof err)) < 0) {
            start_refuse_errno(e, rc, err);
            goto fail;
        }
    } else {
        /* The agent's own identity does not change: resolved once, not per
         * start (a lookup reads nsswitch.conf and passwd). */
        static user_id_t self;
        static int have_self;
        if (!have_self && user_resolve(NULL, &self, err, sizeof err) == 0)
            have_self = 1;
        j->u = self;
    }
    if (set_user && j->u.uid == geteuid() && j->u.gid == getegid() && geteuid() != 0)
        set_user = 0; /* already that user; no privilege needed */
    j->set_user = set_user;
    if (!(j->sp = proc_start_copy(sp)))
        goto nomem;
    sp = j->sp; /* from here on, the copy: it outlives the request */
    if (!(j->x.argv = calloc(sp->n_args + 2, sizeof *j->x.argv)))
        goto nomem;
    j->x.argv[0] = sp->command;
    for (size_t i = 0; i < sp->n_args; i++)
        j->x.argv[i + 1] = sp->args[i];
    if ((rc = build_env(&j->x, sp, &j->u, set_user)) < 0)
        goto nomem;
    const char *path = env_get(j->x.envp, (size_t)rc, "PATH");

    sr = &j->sj.req;
    if (sp->pty) {
        if ((rc = open_pty(sp, &master, &slave, &j->veof)) < 0) {
            snprintf(err, sizeof err, "start: cannot open a pseudo-terminal: %s", strerror(-rc));
            start_refuse_errno(e, rc, err);
            goto fail;
        }
        j->x.fds[j->x.n_fds++] = master;
        j->x.fds[j->x.n_fds++] = slave;
        sr->fd_in = sr->fd_out = sr->fd_err = slave;
        sr->pty = 1;
    } else {
        if ((rc = make_pipe(out, 0)) < 0)
            goto pipe_fail;
        j->x.fds[j->x.n_fds++] = out[0];
        j->x.fds[j->x.n_fds++] = out[1];
        if ((rc = make_pipe(errp, 0)) < 0)
            goto pipe_fail;
        j->x.fds[j->x.n_fds++] = errp[0];
        j->x.fds[j->x.n_fds++] = errp[1];
        if (sp->stdin_mode == SANDBOX__AGENT__V1__STDIN_MODE__STDIN_PIPE) {
            if ((rc = make_pipe(in, 1)) < 0)
                goto pipe_fail;
            j->x.fds[j->x.n_fds++] = in[0];
            j->x.fds[j->x.n_fds++] = in[1];
        }
        sr->fd_in = in[0] >= 0 ? in[0] : g_devnull;
        sr->fd_out = out[1];
        sr->fd_err = errp[1];
    }
    j->master = master;
    j->out_r = out[0];
    j->err_r = errp[0];
    j->in_w = in[1];
    sr->command = sp->command;
    sr->argv = j->x.argv;
    sr->envp = j->x.envp;
    sr->path = path ? path : DEFAULT_PATH;
    sr->cwd = sp->cwd;
    sr->home = j->u.home; /* the default working directory */
    sr->set_user = set_user;
    sr->uid = j->u.uid;
    sr->gid = j->u.gid;
    sr->n_groups = j->u.n_groups;
    sr->groups = j->u.groups;
    sr->reset_oom = g_reset_oom;
    sr->reset_nice = g_reset_nice;
    sr->into_cgroup = j->cg != NULL;
    sr->cgroup_fd = cg_leaf_fd(j->cg);
    sr->cgroup_by_procs = j->cg && !cg_leaf_clone_ok(j->cg);
    j->sj.done = start_done;
    *jp = j;
    return 0;
pipe_fail:
    snprintf(err, sizeof err, "start: pipe: %s", strerror(-rc));
    start_refuse_errno(e, rc, err);
    goto fail;
nomem:
    start_refuse(e, CODE(RESOURCE_EXHAUSTED), ENOMEM, "start: out of memory");
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
static void start_launch(start_job_t *j, int here)
{
    static unsigned last_turn;
    unsigned turn = ev_iteration(g_loop);
    j->t0 = util_now_mono_nano();
    g_spawning++;
    if (here || (g_spawning == 1 && last_turn != turn + 1)) {
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
    start_job_t *j = NULL;
    start_err_t e;
    pstream_t *s = NULL;
    int rc;

    if (start_prepare(req->start, NULL, &j, &e) < 0) {
        conn_send_error(c, req->id, e.code, e.os_errno, "%s", e.msg);
        return;
    }
    if (!(s = pstream_new(&start_ops, PS_START))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "start: out of memory");
        start_job_free(j);
        return;
    }
    s->start_follow = j->sp->follow;
    s->start_lines = j->sp->follow_lines;
    if ((rc = conn_stream_add(c, &s->base, req->id)) < 0) {
        conn_send_errno(c, req->id, rc, "start: %s",
                        rc == -EMFILE ? "too many requests in flight on this connection"
                                      : strerror(-rc));
        pstream_destroy(&s->base);
        start_job_free(j);
        return;
    }
    j->s = s;
    s->job = j;
    start_launch(j, 0);
}

int proc_start_detached(const StartProcess *sp, char *err, size_t n)
{
    start_job_t *j;
    start_err_t e;
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
    start_job_t *j;
    start_err_t e;
    if (!p->svc || p->final || p->running)
        return;
    if (start_prepare(svc_request(p->svc), p, &j, &e) < 0) {
        svc_respawn_failed(p->svc, e.os_errno ? -e.os_errno : -EAGAIN, e.msg);
        return;
    }
    start_launch(j, 0);
}
/* ------------------------------------------------------------ other ops */

/* The process named by pid, answering the error itself when there is none. */
static proc_t *lookup(conn_t *c, uint64_t id, uint32_t pid, const char *op)
{
    proc_t *p;
    if (pid == 0) {
        conn_send_error(c, id, CODE(INVALID_ARGUMENT), 0, "%s: pid 0 is not a process", op);
        return NULL;
    }
    if (!(p = find_pid(pid)))
        conn_send_error(c, id, CODE(NOT_FOUND), ESRCH,
                        "%s: process %u: not started by this agent, or already forgotten", op,
                        pid);
    return p;
}

void proc_handle_follow(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__FollowOutput *f = req->follow;
    proc_t *p;
    pstream_t *s;

    if (f->pid == 0 && f->tag && f->tag[0]) {
        if (!(p = proc_find(0, f->tag))) {
            conn_send_error(c, req->id, CODE(NOT_FOUND), 0, "follow: no process has tag '%s'",
                            f->tag);
            return;
        }
    } else if (!(p = lookup(c, req->id, f->pid, "follow"))) {
        return;
    }
    if (!(s = pstream_new(&follow_ops, PS_FOLLOW))) {
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
    attach_stream(p, s);
    stream_register(c, req->id, s, "follow");
}

void proc_handle_wait(conn_t *c, const Request *req)
{
    proc_t *p = lookup(c, req->id, req->wait->pid, "wait");
    pstream_t *s;
    if (!p)
        return;
    if (!(s = pstream_new(&wait_ops, PS_WAIT))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "wait: out of memory");
        return;
    }
    attach_stream(p, s);
    stream_register(c, req->id, s, "wait");
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
    if (!p->running) {
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
        send_ack(c, req->id);
        return;
    }
    if (sg->group && sg->signal == SIGKILL) {
        /* cgroup.kill, or without cgroups the group until it is empty, and
         * what left it: either way the whole tree. */
        signal_all(p, SIGKILL);
        send_ack(c, req->id);
        return;
    }
    int rc = sg->group ? group_signal(p, sg->signal) : leader_signal(p, sg->signal);
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
    send_ack(c, req->id);
}

void proc_handle_write_stdin(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__WriteStdin *w = req->write_stdin;
    proc_t *p = lookup(c, req->id, w->pid, "write_stdin");
    pstream_t *s;
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
    fd = stdin_fd(p);
    if (fd < 0 || p->final || p->close_stdin_pending) {
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
        send_ack(c, req->id);
        return;
    }
    if (!(s = pstream_new(&write_ops, PS_WRITE))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM,
                        "write_stdin: out of memory");
        return;
    }
    s->p = p;
    p->refs++;
    if (stream_register(c, req->id, s, "write_stdin") < 0)
        return;
    /* The rest waits for the pipe. The request's buffer is taken, not
     * copied (protobuf-c allocated it on its own), and counted like an
     * upload's chunk: past the connection's or the agent's budget, the
     * connection is not read until some is written. One write per process
     * waits with its connection going on (a Ping or a Cancel is served);
     * one queued behind it holds its connection's input until it is
     * written, so the requests behind it wait in the socket. */
    ProtobufCBinaryData *d = &((Request *)req)->write_stdin->data;
    s->data = d->data;
    s->len = d->len;
    s->off = done;
    d->data = NULL;
    d->len = 0;
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
    ev_io_start(g_loop, &p->w_in);
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
        stdin_close(p);
    }
    send_ack(c, req->id);
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
    send_ack(c, req->id);
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
    in->state = p->running ? SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING
                           : SANDBOX__AGENT__V1__PROCESS_STATE__EXITED;
    if (!p->running) {
        fill_exit(p, ex);
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
        const cg_stats_t *st = &p->cg_final;
        if (!p->final) {
            cg_leaf_stats(p->cg, &live);
            st = &live;
        }
        in->cgroup = (char *)cg_leaf_path(p->cg);
        in->cpu_user_nano = st->cpu_user_nano;
        in->cpu_system_nano = st->cpu_system_nano;
        in->memory_current_bytes = st->memory_current;
        in->memory_peak_bytes = st->memory_peak;
        in->pids_current = st->pids_current;
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
    proc_t *p;
    if (g->pid == 0 && g->tag && g->tag[0]) {
        if (!(p = proc_find(0, g->tag))) {
            conn_send_error(c, req->id, CODE(NOT_FOUND), 0, "get_process: no process has tag '%s'",
                            g->tag);
            return;
        }
    } else if (!(p = lookup(c, req->id, g->pid, "get_process"))) {
        return;
    }
    proc_send_info(c, req->id, 1, p);
}

/* Listed without include_exited: running, or a service between runs. */
static int listed(const proc_t *p)
{
    return p->running || (p->svc && svc_live(p->svc));
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

    for (proc_t *p = g_all_head; p; p = p->next)
        if (all || listed(p))
            cap++;
    if (cap && (!(infos = calloc(cap, sizeof *infos)) || !(ptrs = calloc(cap, sizeof *ptrs)) ||
                !(exits = calloc(cap, sizeof *exits)) || !(lasts = calloc(cap, sizeof *lasts)))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "list: out of memory");
        goto out;
    }
    r.result_case = RES(PROCESSES);
    r.processes = &pl;
    for (proc_t *p = g_all_head; p; p = p->next) {
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
    if (!p->final) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "forget: process %d is %s; only exited processes can be forgotten",
                        (int)p->pid,
                        p->running  ? "running"
                        : p->between ? "a service waiting to restart (StopService it first)"
                                     : "still delivering its output");
        return;
    }
    table_remove(p);
    send_ack(c, req->id);
}

/* ------------------------------------------------------------ for service.c */

pid_t proc_pid(const proc_t *p) { return p->pid; }
int proc_running(const proc_t *p) { return p->running; }
int proc_final(const proc_t *p) { return p->final; }
uint64_t proc_output_seq(const proc_t *p) { return p->log.next_seq; }
uint32_t proc_kill_grace_ms(const proc_t *p) { return p->kill_grace_ms; }
svc_t *proc_service(const proc_t *p) { return p->svc; }
void proc_ref(proc_t *p) { p->refs++; }
void proc_unref(proc_t *p) { unref(p); }
void proc_wake(proc_t *p) { wake_streams(p, 0); }

proc_t *proc_find(uint32_t pid, const char *tag)
{
    proc_t *p;
    char *t;
    if (pid)
        return find_pid(pid);
    if (!tag || !tag[0] || !(t = xstrdup(tag))) /* as the tags were kept */
        return NULL;
    p = find_tag(t);
    free(t);
    return p;
}

void proc_end(proc_t *p)
{
    if (p->between && !p->final)
        finalize(p);
}
