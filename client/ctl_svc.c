/* ctl_svc.c - sandboxctl's service commands (stop, wait-ready) and the
 * service options of start and run (--restart, --ready, --health, ...). */
#include "ctl_svc.h"

#include "ctl.h"
#include "svcfile.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODE(x) SANDBOX__AGENT__V1__RESTART_POLICY__MODE__##x
#define DEFAULT_READY_TIMEOUT_S 60

/* The probes of this invocation, freed at exit (one start per run). */
static Sandbox__Agent__V1__Probe *g_probes[2];

static void free_probes(void)
{
    for (int i = 0; i < 2; i++) {
        if (g_probes[i])
            sandbox__agent__v1__probe__free_unpacked(g_probes[i], NULL);
        g_probes[i] = NULL;
    }
}

static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || s[0] == '-' || v > UINT32_MAX) {
        fprintf(stderr, "sandboxctl: %s '%s': expected a number\n", opt, s);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_seconds_ms(const char *opt, const char *s, uint32_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || v < 0 || v > 4294967) {
        fprintf(stderr, "sandboxctl: %s '%s': expected seconds\n", opt, s);
        return -1;
    }
    *out = (uint32_t)(v * 1000);
    return 0;
}

int ctl_svc_option(ctl_svc_opts_t *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    char err[300];

    if (strcmp(a, "--restart") && strcmp(a, "--max-restarts") && strcmp(a, "--backoff") &&
        strcmp(a, "--ready") && strcmp(a, "--health") && strcmp(a, "--ready-timeout"))
        return 0;
    if (!v) {
        fprintf(stderr, "sandboxctl: %s needs a value\n", a);
        return -1;
    }
    (*i)++;
    if (!o->have_policy) {
        sandbox__agent__v1__restart_policy__init(&o->policy);
        o->have_policy = 1;
    }
    if (!strcmp(a, "--restart")) {
        if (!strcmp(v, "never"))
            o->policy.mode = MODE(NEVER);
        else if (!strcmp(v, "on-failure"))
            o->policy.mode = MODE(ON_FAILURE);
        else if (!strcmp(v, "always"))
            o->policy.mode = MODE(ALWAYS);
        else {
            fprintf(stderr, "sandboxctl: --restart '%s': expected never, on-failure or always\n",
                    v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(a, "--max-restarts"))
        return parse_u32(a, v, &o->policy.max_restarts) < 0 ? -1 : 1;
    if (!strcmp(a, "--backoff"))
        return parse_seconds_ms(a, v, &o->policy.backoff_initial_ms) < 0 ? -1 : 1;
    if (!strcmp(a, "--ready-timeout"))
        return parse_seconds_ms(a, v, &o->ready_timeout_ms) < 0 ? -1 : 1;
    int k = !strcmp(a, "--ready") ? 0 : 1;
    if (g_probes[k]) {
        fprintf(stderr, "sandboxctl: %s given twice\n", a);
        return -1;
    }
    if (!g_probes[0] && !g_probes[1])
        atexit(free_probes);
    if (!(g_probes[k] = svcfile_parse_probe(v, err, sizeof err))) {
        fprintf(stderr, "sandboxctl: %s: %s\n", a, err);
        return -1;
    }
    if (k == 0)
        o->ready = g_probes[k];
    else
        o->health = g_probes[k];
    return 1;
}

void ctl_svc_fill(const ctl_svc_opts_t *o, Sandbox__Agent__V1__StartProcess *sp)
{
    if (o->have_policy && o->policy.mode != MODE(NEVER))
        sp->restart = (Sandbox__Agent__V1__RestartPolicy *)&o->policy;
    sp->ready = o->ready;
    sp->health = o->health;
}

/* WaitReady for pid or tag; 0 when ready, else the CLI's exit status after
 * printing why (the probe's last error). */
static int wait_ready(ctl_t *ctl, uint32_t pid, const char *tag, uint32_t timeout_ms,
                      int print, uint32_t *ready_pid)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WaitReady w = SANDBOX__AGENT__V1__WAIT_READY__INIT;
    Response *r = NULL;
    w.pid = pid;
    if (tag)
        w.tag = (char *)tag;
    w.timeout_ms = timeout_ms;
    req.op_case = OP(WAIT_READY);
    req.wait_ready = &w;
    if (ctl_call(ctl, &req, "wait-ready", RES(PROCESS), -1, &r))
        return 1;
    if (ready_pid)
        *ready_pid = r->process->pid;
    if (print) {
        if (ctl->json)
            printf("{\"pid\":%u,\"state\":\"%s\",\"restarts\":%u}\n", r->process->pid,
                   ctl_svc_state_name(r->process->service_state), r->process->restarts);
        else
            printf("%u\n", r->process->pid);
    }
    sa_response_free(r);
    return 0;
}

int ctl_svc_wait_ready(ctl_t *ctl, const ctl_svc_opts_t *o, uint32_t *pid)
{
    if (!o->ready)
        return 0;
    return wait_ready(ctl, *pid, NULL,
                      o->ready_timeout_ms ? o->ready_timeout_ms : DEFAULT_READY_TIMEOUT_S * 1000,
                      0, pid);
}

const char *ctl_svc_state_name(int state)
{
    switch (state) {
    case SANDBOX__AGENT__V1__SERVICE_STATE__STARTING: return "starting";
    case SANDBOX__AGENT__V1__SERVICE_STATE__READY: return "ready";
    case SANDBOX__AGENT__V1__SERVICE_STATE__UNHEALTHY: return "unhealthy";
    case SANDBOX__AGENT__V1__SERVICE_STATE__BACKING_OFF: return "backoff";
    case SANDBOX__AGENT__V1__SERVICE_STATE__STOPPED: return "stopped";
    case SANDBOX__AGENT__V1__SERVICE_STATE__FAILED: return "failed";
    default: return "";
    }
}

/* A pid, or else a tag. */
static void pid_or_tag(const char *s, uint32_t *pid, const char **tag)
{
    if (ctl_pid_number(s, pid)) {
        *tag = NULL;
    } else {
        *pid = 0;
        *tag = s;
    }
}

static int cmd_wait_ready(ctl_t *ctl, int argc, char **argv)
{
    uint32_t timeout_ms = 0, pid;
    const char *tag;
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 2 < argc) {
            if (parse_seconds_ms("--timeout", argv[++i], &timeout_ms) < 0)
                return 2;
        } else {
            break;
        }
    }
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a pid or a tag" : "one process at a time");
    pid_or_tag(argv[i], &pid, &tag);
    if (ctl_connect(ctl) < 0)
        return 1;
    return wait_ready(ctl, pid, tag, timeout_ms, 1, NULL);
}

static int cmd_stop(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StopService st = SANDBOX__AGENT__V1__STOP_SERVICE__INIT;
    Response *r = NULL;
    uint32_t grace_ms = 0;
    int sig = 0, i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-s") && i + 2 < argc) {
            if ((sig = ctl_signal_number(argv[++i])) <= 0)
                return ctl_usage_error(ctl, "unknown signal '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--grace") && i + 2 < argc) {
            if (parse_seconds_ms("--grace", argv[++i], &grace_ms) < 0)
                return 2;
        } else {
            break;
        }
    }
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a tag" : "one service at a time");
    if (ctl_connect(ctl) < 0)
        return 1;
    st.tag = argv[i];
    st.signal = sig;
    st.grace_ms = grace_ms;
    req.op_case = OP(STOP_SERVICE);
    req.stop_service = &st;
    if (ctl_call(ctl, &req, "stop", RES(PROCESS), -1, &r))
        return 1;
    if (ctl->json) {
        const ProcessExit *e = r->process->exit;
        printf("{\"pid\":%u,\"state\":\"%s\",\"exit_code\":%d,\"signal\":%d}\n",
               r->process->pid, ctl_svc_state_name(r->process->service_state),
               e ? e->exit_code : 0, e ? e->signal : 0);
    }
    sa_response_free(r);
    return 0;
}

const ctl_cmd_t ctl_cmds_svc[] = {
    {"stop", cmd_stop, "[-s SIG] [--grace S] TAG",
     "stop a service for good (SIGTERM, SIGKILL after the grace)",
     "  -s SIG             the signal (default TERM)\n"
     "      --grace S      then SIGKILL after S seconds (default: the start's kill grace)\n"},
    {"wait-ready", cmd_wait_ready, "[--timeout S] PID|TAG",
     "wait until a process's ready probe passes; print its pid",
     "      --timeout S    give up after S seconds (default: no limit); the error has\n"
     "                     the probe's last failure\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
