/* svc_record.h - what a service asks of the process record that owns it:
 * the interface between the two, declared here so that neither module
 * includes the other's header for it. proc implements these functions (its
 * prefix); service (service.c, service_ops.c, service_dir.c) calls them and
 * depends on nothing else of proc, while proc calls the svc_ hooks of
 * service.h.
 * Errors: as each function says: 0 or -errno, or -1 with err filled. */
#ifndef SA_SVC_RECORD_H
#define SA_SVC_RECORD_H

#include "conn.h"
#include "pb.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct svc;
typedef struct proc proc_t;
typedef Sandbox__Agent__V1__StartProcess StartProcess;

pid_t proc_pid(const proc_t *p);
int proc_running(const proc_t *p);
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
/* A wait status told as ProcessExit says it: exit_code (128 + the signal
 * for a signal), signal and core_dumped. The rest of e is the caller's. */
void proc_exit_status(int status, ProcessExit *e);
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
