/* proc.h - the process table: spawn, reap (child subreaper, or PID 1),
 * signals, timeouts, stdin, PTY; each process owns its output log. */
#ifndef SA_PROC_H
#define SA_PROC_H

#include "dispatch.h"

#include <ev.h>
#include <stdint.h>

/* Install the SIGCHLD handling and become a child subreaper. 0 or -errno. */
int proc_init(struct ev_loop *loop);
/* Shutdown: SIGTERM every process group we started, SIGKILL after
 * grace_ms; calls done() once none is left (or at once when none runs). */
void proc_shutdown(struct ev_loop *loop, uint32_t grace_ms, void (*done)(struct ev_loop *));

unsigned proc_count_running(void);
unsigned proc_count_kept(void);
uint64_t proc_kept_output_bytes(void);

dispatch_handler_fn proc_handle_start;
dispatch_handler_fn proc_handle_follow;
dispatch_handler_fn proc_handle_signal;
dispatch_handler_fn proc_handle_write_stdin;
dispatch_handler_fn proc_handle_close_stdin;
dispatch_handler_fn proc_handle_resize;
dispatch_handler_fn proc_handle_wait;
dispatch_handler_fn proc_handle_list;
dispatch_handler_fn proc_handle_get;
dispatch_handler_fn proc_handle_forget;

#endif
