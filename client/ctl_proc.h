/* ctl_proc.h - what sandboxctl's process commands (ctl_proc.c, ctl_run.c,
 * ctl_logs.c) share: naming a process, its exit status, its output as JSON
 * lines, and the commands the table in ctl_proc.c lists. */
#ifndef SA_CTL_PROC_H
#define SA_CTL_PROC_H

#include "ctl.h"

#define STREAM_OUT SANDBOX__AGENT__V1__STREAM__STDOUT
#define STREAM_ERR SANDBOX__AGENT__V1__STREAM__STDERR
#define STREAM_PTY SANDBOX__AGENT__V1__STREAM__PTY
#define STREAM_UNSPECIFIED SANDBOX__AGENT__V1__STREAM__STREAM_UNSPECIFIED

/* PID or TAG (connected) into a pid: the newest process with the tag, a
 * running one first. 0, or 1 after saying why. */
int ctl_proc_resolve(ctl_t *ctl, const char *what, const char *name, uint32_t *pid);
/* The one operand argv[i] of a command on one process (i == argc - 1, else
 * a usage error), connected, into a pid. 0, or the exit status after
 * saying why. */
int ctl_proc_one(ctl_t *ctl, int argc, char **argv, int i, uint32_t *pid);
/* The status a shell reports; a timeout says so and is 124, as timeout(1). */
int ctl_proc_exit_status(const char *what, const ProcessExit *e, const char *timeout_arg);
/* "stdout", "stderr", "pty", else "both". */
const char *ctl_proc_stream_name(int s);
/* The JSON lines of a followed process (logs --json, run --json). */
void ctl_proc_json_output(int stream, uint64_t seq, uint64_t ts, const uint8_t *d, size_t n);
void ctl_proc_json_gap(int stream, uint64_t skipped, uint64_t from, uint64_t to);
void ctl_proc_json_exit(const ProcessExit *e);
/* "exit_code":..,"signal":..,"timed_out":.. (nulls for e NULL). */
void ctl_proc_json_exit_fields(const ProcessExit *e);

ctl_cmd_fn ctl_run_cmd_run, ctl_run_cmd_start; /* ctl_run.c */
ctl_cmd_fn ctl_logs_cmd;                       /* ctl_logs.c */

#endif
