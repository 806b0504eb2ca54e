/* proc.h - the process table: spawn, reap (child subreaper, or PID 1),
 * signals, timeouts, stdin, PTY; each process owns its output log. */
#ifndef SA_PROC_H
#define SA_PROC_H

#include "handler.h"
#include "pb.h"

#include <ev.h>
#include <stdint.h>
#include <sys/types.h>

typedef Sandbox__Agent__V1__StartProcess StartProcess;

/* Install the SIGCHLD handling and become a child subreaper. 0 or -errno. */
int proc_init(struct ev_loop *loop);
/* Shutdown: SIGTERM every process group we started, SIGKILL after
 * grace_ms; calls done() once none is left (or at once when none runs). */
void proc_shutdown(struct ev_loop *loop, uint32_t grace_ms, void (*done)(struct ev_loop *));

unsigned proc_count_running(void);
unsigned proc_count_kept(void);
uint64_t proc_kept_output_bytes(void);

handler_fn proc_handle_start;
handler_fn proc_handle_follow;
handler_fn proc_handle_signal;
handler_fn proc_handle_write_stdin;
handler_fn proc_handle_close_stdin;
handler_fn proc_handle_resize;
handler_fn proc_handle_wait;
handler_fn proc_handle_list;
handler_fn proc_handle_get;
handler_fn proc_handle_forget;

/* For service.c: the record of a service or a process with probes. */
typedef struct proc proc_t;
pid_t proc_pid(const proc_t *p);
int proc_running(const proc_t *p);
/* Signal p's process group, never another that reused its id (see
 * docs/PROTOCOL.md, SendSignal). 0 or -errno; -ESRCH when it is gone. */
int proc_signal_group(proc_t *p, int sig);
int proc_final(const proc_t *p);
/* Combined output so far: a position in the record's one log. */
uint64_t proc_output_seq(const proc_t *p);
uint32_t proc_kill_grace_ms(const proc_t *p);
struct svc *proc_service(const proc_t *p);
void proc_ref(proc_t *p);
void proc_unref(proc_t *p);
/* The record named by pid, or with pid 0 by tag (a live service first). */
proc_t *proc_find(uint32_t pid, const char *tag);
/* Answer with the record's ProcessInfo. */
int proc_send_info(conn_t *c, uint64_t id, int done, const proc_t *p);
/* Start the service's next run (its ProcessRestarted follows); a failure
 * comes back through svc_respawn_failed(). */
void proc_respawn(proc_t *p);
/* A signal to every process of p's run: its cgroup (SIGKILL: cgroup.kill),
 * or without cgroups its group (SIGKILL: until empty). 0 or -errno. */
int proc_signal_all(proc_t *p, int sig);
/* A service between runs ends for good (stopped, or it gave up). */
void proc_end(proc_t *p);
/* Wake the record's followers and waiters: a service event. */
void proc_wake(proc_t *p);
/* Start a process that no request waits for (services.d). 0, or -1 with
 * err filled. */
int proc_start_detached(const StartProcess *sp, char *err, size_t n);

/* A copy of a StartProcess that outlives its request (pack, then unpack;
 * free with sandbox__agent__v1__start_process__free_unpacked). NULL on ENOMEM. */
StartProcess *proc_start_copy(const StartProcess *sp);

#endif
