/* ctl_svc.h - the service options start and run share with ctl_svc.c:
 * --restart MODE, --max-restarts N, --backoff S, --ready SPEC,
 * --health SPEC, --ready-timeout S (probe specs as in services.d files). */
#ifndef SA_CTL_SVC_H
#define SA_CTL_SVC_H

#include "ctl.h"

typedef struct ctl_svc_opts {
    Sandbox__Agent__V1__RestartPolicy policy;
    int have_policy;
    Sandbox__Agent__V1__Probe *ready, *health;
    uint32_t ready_timeout_ms; /* start waits this long for ready; 0 = 60 s */
} ctl_svc_opts_t;

/* argv[*i] is one of the options above: 1 (consumed, with its value), 0
 * (not one of them), -1 (bad value, printed). */
int ctl_svc_option(ctl_svc_opts_t *o, int argc, char **argv, int *i);
/* Put the options into a StartProcess (they stay owned here). */
void ctl_svc_fill(const ctl_svc_opts_t *o, Sandbox__Agent__V1__StartProcess *sp);
/* With a ready probe: wait until it passes; *pid becomes the ready run's
 * (a service may have restarted meanwhile). 0, or the exit status after
 * printing the probe's last error. */
int ctl_svc_wait_ready(ctl_t *ctl, const ctl_svc_opts_t *o, uint32_t *pid);
/* "ready", "backoff", ... ("" when not a service). */
const char *ctl_svc_state_name(int state);

/* The options, for start's --help. */
#define CTL_SVC_OPTIONS                                                                     \
    "      --restart MODE never, on-failure or always: keep it running (needs --tag)\n"     \
    "      --max-restarts N  give up after N restarts in a row (default: never)\n"          \
    "      --backoff S    the first wait before a restart (default 0.1; doubles)\n"         \
    "      --ready SPEC   print the pid once ready: tcp:PORT, http:PORT/PATH,\n"            \
    "                     exec:CMD ARGS, output:TEXT or line:PREFIX\n"                      \
    "      --ready-timeout S  how long to wait for ready (default 60)\n"                    \
    "      --health SPEC  a check repeated while it runs (same specs)\n"

extern const ctl_cmd_t ctl_cmds_svc[];

#endif
