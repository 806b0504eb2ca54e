/* proc_internal.h - what the pieces of the process module share, private to
 * them: the record (proc_t), the streams about one process (proc_stream_t), the
 * table's globals and the functions one piece defines for the others.
 * proc.c: table, lifecycle, reaping, signals, shutdown; proc_index.c: the
 * table's indexes (by pid, by tag); proc_start.c: starting; proc_check.c:
 * what a start is refused for; proc_env.c: environment, PTY, pipes;
 * proc_io.c: output, stdin, streams; proc_ops.c: the request handlers.
 * proc.h is the public interface. */
#ifndef SA_PROC_INTERNAL_H
#define SA_PROC_INTERNAL_H

#include "proc.h"

#include "cgroup.h"
#include "conn.h"
#include "outlog.h"
#include "pb.h"
#include "service.h"
#include "spawn.h"
#include "stream.h"
#include "user.h"

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROC_DRAIN_IDLE_MS 100
#define PROC_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define ST(x) SANDBOX__AGENT__V1__STREAM__##x

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

enum proc_stream_kind {
    PROC_STREAM_FOLLOW,
    PROC_STREAM_WAIT,
    PROC_STREAM_WRITE,
    PROC_STREAM_START,
};

typedef struct proc_start_job proc_start_job_t;

/* A stream that answers a request about one process. */
typedef struct proc_stream {
    stream_t base;
    proc_t *p;
    enum proc_stream_kind kind;
    struct proc_stream *next, *prev; /* the process's followers and waiters */
    /* follow */
    outlog_cursor_t cur;
    int attached, lines, no_wait;
    svc_follow_t sf; /* a service's runs: which events this follower has had */
    /* write: what the pipe has not taken yet, data[off..len), kept from the
     * request (conn_keep_bulk) in block, and counted in the connection's
     * budget for data waiting to be written (conn_upload_*) */
    void *block;
    uint8_t *data;
    size_t len, off, charged;
    int result; /* 0 pending, 1 written, -errno failed */
    int held;   /* queued behind another write: the connection's input waits */
    /* start: the spawn in flight (NULL once it is done) and its outcome */
    proc_start_job_t *job;
    int start_rc;
    enum spawn_stage start_stage;
    int start_follow, start_lines;
    StartProcess *start_req; /* kept for the error message */
    int queued;
    struct proc_stream *wnext;
} proc_stream_t;

typedef struct proc_tag proc_tag_t;

/* The lifecycle of a record: one field, changed in one place,
 * proc_state_set() (proc.c), whose table lists every transition. What else
 * a record carries is not its lifecycle: in_table (the table holds it),
 * read_paused (a lossless log waits for a follower), timed_out (how the run
 * ended), group_alive and stop_group (its process group after the leader). */
enum proc_state {
    PROC_NEW,      /* made, its first run not begun yet (inside start_done) */
    PROC_RUNNING,  /* the leader runs; its pipes are read into the log */
    PROC_DRAINING, /* the leader was reaped; the pipes are read until EOF, or
                    * until PROC_DRAIN_IDLE_MS pass with no data */
    PROC_BETWEEN,  /* a service's run ended, and its next run is due */
    PROC_FINAL,    /* over: ProcessExit answered; kept until forgotten, the
                    * TTL, or the cap on kept output */
    PROC_NSTATES
};

struct proc {
    pid_t pid;
    unsigned refs;
    int in_table;
    /* The indexes (proc_index.c): the pid hash's chain; the tag's group,
     * its records in start order, and its running ones and services. */
    proc_t *hnext;
    proc_tag_t *tg;
    proc_t *tnext, *tprev, *hotnext, *hotprev;
    int hot;
    uint64_t seq;
    proc_t *gnext, *gprev; /* group_alive: the groups checked after a reap */
    proc_t *next, *prev;   /* all in the table, start order */
    proc_t *enext, *eprev; /* exited, exit order */
    char *tag, *command, *cwd, *user;
    char **args;
    size_t n_args;
    size_t meta;
    int pty, stdin_pipe, lossless;
    enum proc_state state; /* changed only by proc_state_set() */
    int status, timed_out, read_paused, big_pipes;
    uint64_t started, ended, ended_mono;
    int fd_out, fd_err, fd_in; /* pty: fd_out is the master, fd_in -1 */
    int pidfd;       /* the leader, until it is reaped: signals reach exactly it */
    int group_alive; /* after the leader is reaped: its group still has members */
    ev_io r_out, r_err, w_in;
    ev_timer t_timeout, t_kill, t_drain;
    uint32_t kill_grace_ms;
    uint8_t veof;
    outlog_t log;
    proc_stream_t *streams;
    proc_stream_t *wq_head, *wq_tail;
    int close_stdin_pending;
    int stop_group; /* running at shutdown: its group must be gone before exit */
    svc_t *svc;     /* a service, or a process with probes (service.c) */
    cg_leaf_t *cg;  /* its cgroup (NULL without cgroups); a service's runs share it */
    cg_stats_t cg_final; /* the cgroup's figures when the exit became final */
};

/* proc.c */
extern struct ev_loop *proc_loop;
extern ev_timer proc_shutdown_timer;
extern proc_t *proc_all_head;
extern unsigned proc_n_running;
extern unsigned proc_n_spawning; /* starts handed to the spawner, not yet done */
extern uint64_t proc_kept_bytes, proc_kept_meta;
extern int proc_devnull;
extern int proc_reset_oom, proc_reset_nice;
extern void (*proc_shutdown_done)(struct ev_loop *);

/* proc_index.c */
int proc_index_init(void);
void proc_index_add(proc_t *p);
void proc_index_remove(proc_t *p);
void proc_index_rekey(proc_t *p, pid_t pid);
void proc_index_cooled(proc_t *p);
proc_t *proc_index_tag(const char *tag);
proc_t *proc_find_pid(uint32_t pid);

int proc_stash_take(pid_t pid, uint64_t t0, int *status);
void proc_stash_clear(void);
void proc_table_add(proc_t *p);
void proc_table_rekey(proc_t *p, pid_t pid);
void proc_table_remove(proc_t *p);
int proc_signal_leader(proc_t *p, int sig);
void proc_enforce_caps(void);
void proc_trim_running(proc_t *p);
void proc_state_set(proc_t *p, enum proc_state to);
void proc_finalize(proc_t *p);
void proc_shutdown_check(void);
void proc_leader_exited(proc_t *p, int status);
void proc_on_timeout(struct ev_loop *loop, ev_timer *w, int revents);
void proc_on_kill(struct ev_loop *loop, ev_timer *w, int revents);

/* proc_io.c */
extern uint8_t *proc_rbuf;
extern const stream_ops_t proc_follow_ops, proc_wait_ops, proc_write_ops;

void proc_wake_streams(proc_t *p, int followers_only);
void proc_stream_attach(proc_t *p, proc_stream_t *s);
void proc_stream_destroy(stream_t *base);
proc_stream_t *proc_stream_new(const stream_ops_t *ops, enum proc_stream_kind kind);
int proc_stream_register(conn_t *c, uint64_t id, proc_stream_t *s, const char *op);
const cg_stats_t *proc_cg_stats(const proc_t *p, cg_stats_t *live);
void proc_fill_exit(const proc_t *p, ProcessExit *e);
stream_status_t proc_send_ack(conn_t *c, uint64_t id);
void proc_stdin_close(proc_t *p);
int proc_stdin_fd(const proc_t *p);
void proc_stdin_fail_all(proc_t *p, int err);
void proc_on_stdin_writable(struct ev_loop *loop, ev_io *w, int revents);
void proc_output_close(proc_t *p, ev_io *w, int *fd);
void proc_on_output(struct ev_loop *loop, ev_io *w, int revents);
void proc_on_drain_idle(struct ev_loop *loop, ev_timer *w, int revents);

/* proc_env.c */
typedef struct proc_start_ctx {
    char **argv;
    char **envp;
    char **owned; /* strings we allocated for envp */
    size_t n_owned;
    int fds[8];
    int n_fds;
} proc_start_ctx_t;

void proc_ctx_free(proc_start_ctx_t *x);
const char *proc_env_get(char **envp, size_t n, const char *key);
int proc_env_build(proc_start_ctx_t *x, const StartProcess *sp, const user_id_t *u, int set_user);
int proc_pty_open(const StartProcess *sp, int *master, int *slave, uint8_t *veof);
int proc_pipe_make(int fds[2], int parent_end);

/* proc_check.c */
/* Why a start was refused before anything ran. */
typedef struct proc_start_err {
    int code, os_errno;
    char msg[512];
} proc_start_err_t;

/* Fill e; returns -1. */
int proc_start_refuse(proc_start_err_t *e, int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int proc_start_refuse_errno(proc_start_err_t *e, int rc, const char *msg);
/* What a start request alone can be refused for, before anything is made.
 * rec: a service's record whose next run this is. 0, or -1 with e filled. */
int proc_start_check(const StartProcess *sp, const proc_t *rec, proc_start_err_t *e);
/* Answer a start whose spawn failed at stage st with rc (-errno). */
int proc_start_reply_error(conn_t *c, uint64_t id, int rc, enum spawn_stage st,
                           const StartProcess *sp);

/* proc_start.c */
char *proc_strdup_utf8(const char *s);
void proc_start_job_orphan(proc_start_job_t *j);

#endif
