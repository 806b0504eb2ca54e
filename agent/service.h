/* service.h - what makes a process a service: its restart policy (when to
 * start it again, exponential backoff with jitter, reset after a stable
 * run, giving up), its identity by tag across runs, its state (STARTING,
 * READY, UNHEALTHY, BACKING_OFF, STOPPED, FAILED), its ready and health
 * probes, and the run boundaries its followers are told about. The process
 * record (proc.c) owns one svc_t and calls the hooks below; this module
 * calls back into proc.c only through the functions proc.h lists for it.
 * Files: service.c (the record, runs, restarts), service_ops.c (WaitReady,
 * StopService), service_follow.c (events for followers), service_dir.c
 * (--services-dir), service_internal.h (what they share).
 * Errors: svc_new answers NULL with an Error.Code and a message; requests
 * are answered on their connection; the hooks cannot fail. */
#ifndef SA_SERVICE_H
#define SA_SERVICE_H

#include "handler.h"
#include "pb.h"
#include "stream.h"

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proc;
typedef struct svc svc_t;
typedef Sandbox__Agent__V1__StartProcess StartProcess;

/* A start asks for a service or probes. */
int svc_wanted(const StartProcess *sp);
/* Check a start's policy and probes and reserve its tag. NULL with *code
 * (an Error.Code) and err filled when it is refused. sp is copied. */
svc_t *svc_new(struct ev_loop *loop, const StartProcess *sp, int *code, char *err, size_t n);
/* Release everything (timers, probes, waiters' links, the tag). */
void svc_free(svc_t *s);
/* The record now exists; the service belongs to it. */
void svc_bind(svc_t *s, struct proc *p);
/* The request to start each run from. */
const StartProcess *svc_request(const svc_t *s);

/* Hooks from the process table. */
/* A run started: pid, at output position seq. */
void svc_run_started(svc_t *s, pid_t pid, uint64_t seq);
/* The run ended (reaped, output drained). Returns 1 when another run will
 * follow (the record stays open), 0 when the service is over. */
int svc_run_ended(svc_t *s, int status, int timed_out, uint64_t ended_at, uint64_t seq);
/* Starting the next run failed (err says why): try again later or give up. */
void svc_respawn_failed(svc_t *s, int rc, const char *err);
/* Bytes the current run wrote (for an output probe). */
void svc_output(svc_t *s, const uint8_t *data, size_t len);
/* A client sent sig to the current run through SendSignal. */
void svc_signalled(svc_t *s, int sig);
/* Bytes the service holds beside its record (for the cap on kept output). */
size_t svc_memory(const svc_t *s);
/* A record that is not over yet (running, or between runs). */
int svc_live(const svc_t *s);
/* ProcessInfo's service fields; last is storage for last_exit. */
void svc_fill_info(const svc_t *s, ProcessInfo *in, ProcessExit *last);
/* Services between runs (their records and logs count against
 * --max-processes, as running processes do). */
unsigned svc_count_waiting(void);
/* The agent is stopping: no more restarts; services between runs end. */
void svc_shutdown(void);

/* Followers: where a follower is among the runs. */
typedef struct svc_follow {
    uint32_t run;     /* the run whose events come next (1 = first) */
    int ready_sent;   /* ProcessReady of that run delivered */
    int exit_sent;    /* its ProcessExit (not done) delivered */
} svc_follow_t;
void svc_follow_init(const svc_t *s, svc_follow_t *f, uint64_t seq);
/* Before a follower at output position seq reads on: 1 when an event
 * (ProcessReady, ProcessExit of a run, ProcessRestarted) was sent now, with
 * *st what to return; 0 when output comes next, with *max lowered so the
 * read stops at the next run boundary and *final set when that boundary is
 * the end of a run. */
int svc_follow_event(svc_t *s, svc_follow_t *f, uint64_t seq, stream_t *base, size_t *max,
                     int *final, stream_status_t *st);

/* Start every service declared in dir (files ending in .conf, in name
 * order; see svcfile.h). A file that cannot be read, is writable by others
 * or does not parse is logged with its name and line, and the others still
 * start. missing_ok: no warning when dir does not exist (the default one).
 * Returns how many were started. */
int svc_start_dir(const char *dir, int missing_ok);

handler_fn svc_handle_wait_ready;
handler_fn svc_handle_stop;

#endif
