/* proc.h - the processes the agent starts: spawn, reap (child subreaper,
 * or PID 1), signals, timeouts, stdin, PTY; each process owns its output
 * log. The module's files and what they share: proc_internal.h. */
#ifndef SA_PROC_H
#define SA_PROC_H

#include "handler.h"
#include "pb.h"
#include "svc_record.h"

#include <ev.h>
#include <stdint.h>
#include <sys/types.h>

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

/* What a service asks of its record is in svc_record.h (included above). */
/* Signal p's process group, never another that reused its id (see
 * docs/PROTOCOL.md, SendSignal). 0 or -errno; -ESRCH when it is gone. */
int proc_signal_group(proc_t *p, int sig);

#endif
