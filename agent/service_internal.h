/* service_internal.h - what the pieces of the service module share,
 * private to them: the service record (struct svc) and its ring of runs.
 * service.c: the record, its runs and their states, restarts, probes;
 * service_ops.c: WaitReady and StopService (the waiters); service_follow.c:
 * the run boundaries a follower is told about; service_dir.c: services
 * declared in --services-dir. service.h is the public interface.
 * Errors: as service.h says. */
#ifndef SA_SERVICE_INTERNAL_H
#define SA_SERVICE_INTERNAL_H

#include "service.h"

#include "probe.h"
#include "svc_record.h"
#include "user.h"

#include <ev.h>
#include <stdint.h>
#include <sys/types.h>

#define SVC_HISTORY 64
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

static inline svc_run_t *svc_run_at(svc_t *s, uint32_t index) { return &s->runs[(index - 1) % SVC_HISTORY]; }
static inline svc_run_t *svc_run_cur(svc_t *s) { return s->n_runs ? svc_run_at(s, s->n_runs) : NULL; }

/* service.c */
/* Signal the current run's processes; SIGKILL after grace_ms. */
void svc_kill_run(svc_t *s, int sig, uint32_t grace_ms);
/* The service is over (STOPPED or FAILED): its tag is free, waiters hear. */
void svc_set_over(svc_t *s, int state);
/* "exit code N" or "killed by signal N", for messages. */
void svc_describe_exit(int status, int timed_out, char *buf, size_t n);

/* service_ops.c: the state changed; WaitReady and StopService look again. */
void svc_wake_waiters(svc_t *s);

#endif
