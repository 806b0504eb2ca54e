/* ctl_proc.c - sandboxctl's process commands but run, start and logs: ps,
 * kill, wait, write, forget; what the process commands share (a pid or a
 * tag into a pid, exit statuses, output as JSON lines) and their table. A
 * process is named by its pid or by its tag. */
#include "ctl_proc.h"

#include "ctl.h"
#include "ctl_svc.h"
#include "utf8.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STDIN_CHUNK (64 * 1024)

int ctl_proc_exit_status(const char *what, const ProcessExit *e, const char *timeout_arg)
{
    if (e->oom_killed)
        fprintf(stderr, "sandboxctl: %s: the kernel's OOM killer killed a process of it "
                "(its memory limit)\n", what);
    if (e->timed_out) {
        if (timeout_arg)
            fprintf(stderr, "sandboxctl: %s: timed out after %s s\n", what, timeout_arg);
        else
            fprintf(stderr, "sandboxctl: %s: the process timed out (its --timeout)\n", what);
        return 124;
    }
    return e->signal ? 128 + e->signal : e->exit_code;
}

const char *ctl_proc_stream_name(int s)
{
    return s == STREAM_OUT ? "stdout" : s == STREAM_ERR ? "stderr" : s == STREAM_PTY ? "pty"
                                                                                      : "both";
}

/* The JSON lines of a followed process (logs --json, run --json). */
void ctl_proc_json_output(int stream, uint64_t seq, uint64_t ts, const uint8_t *d, size_t n)
{
    printf("{\"event\":\"output\",\"stream\":\"%s\",\"sequence\":%llu,"
           "\"timestamp_unix_nano\":%llu,",
           ctl_proc_stream_name(stream), (unsigned long long)seq, (unsigned long long)ts);
    if (utf8_valid_nul((const char *)d, n)) {
        printf("\"data\":");
        ctl_json_string_n((const char *)d, n);
    } else {
        printf("\"data_base64\":");
        ctl_json_base64(d, n);
    }
    printf("}\n");
    fflush(stdout);
}

void ctl_proc_json_gap(int stream, uint64_t skipped, uint64_t from, uint64_t to)
{
    printf("{\"event\":\"gap\",\"stream\":\"%s\",\"skipped_bytes\":%llu,"
           "\"from_sequence\":%llu,\"to_sequence\":%llu}\n",
           ctl_proc_stream_name(stream), (unsigned long long)skipped, (unsigned long long)from,
           (unsigned long long)to);
    fflush(stdout);
}

void ctl_proc_json_exit_fields(const ProcessExit *e)
{
    if (e)
        printf("\"exit_code\":%d,\"signal\":%d,\"timed_out\":%s", e->exit_code, e->signal,
               e->timed_out ? "true" : "false");
    else
        printf("\"exit_code\":null,\"signal\":null,\"timed_out\":null");
}

void ctl_proc_json_exit(const ProcessExit *e)
{
    printf("{\"event\":\"exit\",");
    ctl_proc_json_exit_fields(e);
    printf("}\n");
    fflush(stdout);
}

/* ------------------------------------------------------------ naming */

typedef int ps_each_fn(const ProcessInfo *p, void *arg);

typedef struct ps_list {
    ps_each_fn *each;
    void *arg;
} ps_list_t;

static int ps_list_each(ctl_t *ctl, const Response *r, void *arg)
{
    ps_list_t *l = arg;
    for (size_t i = 0; i < r->processes->n_processes; i++)
        l->each(r->processes->processes[i], l->arg);
    return 0;
}

/* Every process the agent keeps (with the exited ones when all), in start
 * order. 0, or 1 after saying why. */
static int list_processes(ctl_t *ctl, int all, const char *what, ps_each_fn *each, void *arg)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    ps_list_t l = {each, arg};
    lp.include_exited = all;
    req.op_case = OP(LIST_PROCESSES);
    req.list_processes = &lp;
    return ctl_stream(ctl, &req, what, RES(PROCESSES), 30000, ps_list_each, &l) ? 1 : 0;
}

typedef struct by_tag {
    const char *tag;
    uint32_t pid;
    int running;
} by_tag_t;

/* The newest process with the tag, a running one first (as the agent's
 * FollowOutput picks it). */
static int tag_each(const ProcessInfo *p, void *arg)
{
    by_tag_t *b = arg;
    int running = p->state == SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING;
    if (strcmp(p->tag, b->tag) || (b->pid && b->running && !running))
        return 0;
    b->pid = p->pid;
    b->running = running;
    return 0;
}

/* PID or TAG (connected) into a pid. 0, or 1 after saying why. */
int ctl_proc_resolve(ctl_t *ctl, const char *what, const char *name, uint32_t *pid)
{
    if (ctl_pid_number(name, pid))
        return 0;
    by_tag_t b = {name, 0, 0};
    if (list_processes(ctl, 1, what, tag_each, &b))
        return 1;
    if (!b.pid) {
        fprintf(stderr, "sandboxctl: %s: no process has pid or tag '%s' (see sandboxctl ps -a)\n",
                what, name);
        return 1;
    }
    *pid = b.pid;
    return 0;
}

int ctl_proc_one(ctl_t *ctl, int argc, char **argv, int i, uint32_t *pid)
{
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a pid or a tag" : "one process at a time");
    if (ctl_connect(ctl) < 0 || ctl_proc_resolve(ctl, ctl->cmd->name, argv[i], pid))
        return 1;
    return 0;
}

/* ------------------------------------------------------------ ps */


static int ps_each(const ProcessInfo *p, void *arg)
{
    ctl_t *ctl = arg;
    int running = p->state == SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING;
    if (ctl->json) {
        printf("{\"pid\":%u,\"state\":\"%s\",", p->pid, running ? "running" : "exited");
        ctl_proc_json_exit_fields(running ? NULL : p->exit);
        printf(",\"tag\":");
        ctl_json_string(p->tag);
        printf(",\"argv\":[");
        ctl_json_string(p->command);
        for (size_t a = 0; a < p->n_args; a++) {
            putchar(',');
            ctl_json_string(p->args[a]);
        }
        printf("],\"user\":");
        ctl_json_string(p->user);
        printf(",\"cwd\":");
        ctl_json_string(p->cwd);
        printf(",\"pty\":%s,\"started_at_unix_nano\":%llu,\"ended_at_unix_nano\":",
               p->pty ? "true" : "false", (unsigned long long)p->started_at_unix_nano);
        if (running)
            printf("null");
        else
            printf("%llu", (unsigned long long)p->ended_at_unix_nano);
        printf(",\"stdout_bytes\":%llu,\"stderr_bytes\":%llu,\"pty_bytes\":%llu,"
               "\"restarts\":%u,\"service_state\":\"%s\"",
               (unsigned long long)p->stdout_bytes, (unsigned long long)p->stderr_bytes,
               (unsigned long long)p->pty_bytes, p->restarts,
               ctl_svc_state_name(p->service_state));
        printf(",\"cgroup\":");
        ctl_json_string(p->cgroup);
        printf(",\"pids_current\":%u,\"cpu_user_nano\":%llu,\"cpu_system_nano\":%llu,"
               "\"memory_current_bytes\":%llu,\"memory_peak_bytes\":%llu,\"oom_killed\":%s}\n",
               p->pids_current, (unsigned long long)p->cpu_user_nano,
               (unsigned long long)p->cpu_system_nano,
               (unsigned long long)p->memory_current_bytes,
               (unsigned long long)p->memory_peak_bytes, p->oom_killed ? "true" : "false");
        return 0;
    }
    char ex[16] = "-";
    if (!running && p->exit)
        snprintf(ex, sizeof ex, "%d", p->exit->exit_code);
    /* A service shows its state (ready, backoff, failed, ...) and restarts. */
    const char *state = p->service_state ? ctl_svc_state_name(p->service_state)
                        : running        ? "running"
                                         : "exited";
    char restarts[16] = "-";
    if (p->service_state)
        snprintf(restarts, sizeof restarts, "%u", p->restarts);
    printf("%-8u %-9s %-6s %-8s %-12s %s", p->pid, state, ex, restarts,
           p->tag[0] ? p->tag : "-", p->command);
    for (size_t a = 0; a < p->n_args; a++)
        printf(" %s", p->args[a]);
    printf("\n");
    return 0;
}

static int cmd_ps(ctl_t *ctl, int argc, char **argv)
{
    int all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--all"))
            all = 1;
        else
            return ctl_usage_error(ctl, "unknown argument '%s'", argv[i]);
    }
    if (ctl_connect(ctl) < 0)
        return 1;
    if (!ctl->json)
        printf("%-8s %-9s %-6s %-8s %-12s %s\n", "PID", "STATE", "EXIT", "RESTARTS", "TAG",
               "COMMAND");
    return list_processes(ctl, all, "ps", ps_each, ctl);
}

/* ------------------------------------------------------------ others */

/* A request answered by an Ack: 0, or 1 after saying why. */
static int simple_call(ctl_t *ctl, Request *req, const char *what)
{
    return ctl_call(ctl, req, what, 0, 30000, NULL) ? 1 : 0;
}

static int cmd_kill(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SendSignal s = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    int sig = SIGTERM, group = 0, i = 1, rc;
    uint32_t pid;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-s")) {
            if (i + 1 == argc)
                return ctl_usage_error(ctl, "-s needs a signal");
            if ((sig = ctl_signal_number(argv[++i])) < 0)
                return ctl_usage_error(ctl, "unknown signal '%s'", argv[i]);
        } else if (!strcmp(argv[i], "-g")) {
            group = 1;
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (ctl_signal_number(argv[i] + 1) > 0) { /* kill -9, kill -KILL */
            sig = ctl_signal_number(argv[i] + 1);
        } else {
            return ctl_usage_error(ctl, "unknown option '%s'", argv[i]);
        }
    }
    if ((rc = ctl_proc_one(ctl, argc, argv, i, &pid)))
        return rc;
    s.pid = pid;
    s.signal = sig;
    s.group = group;
    req.op_case = OP(SIGNAL);
    req.signal = &s;
    return simple_call(ctl, &req, "kill");
}

static int cmd_wait(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WaitProcess w = SANDBOX__AGENT__V1__WAIT_PROCESS__INIT;
    Response *r = NULL;
    uint32_t pid;
    int rc = ctl_proc_one(ctl, argc, argv, 1, &pid);
    if (rc)
        return rc;
    w.pid = pid;
    req.op_case = OP(WAIT);
    req.wait = &w;
    if (ctl_call(ctl, &req, "wait", RES(EXIT), -1, &r))
        return 1;
    if (ctl->json) {
        printf("{\"pid\":%u,", pid);
        ctl_proc_json_exit_fields(r->exit);
        printf("}\n");
    }
    rc = ctl_proc_exit_status("wait", r->exit, NULL);
    sa_response_free(r);
    return rc;
}

/* stdin to the process, each chunk acknowledged before the next (the
 * agent answers once the data is in the pipe), then close its stdin. */
static int cmd_write(ctl_t *ctl, int argc, char **argv)
{
    static char buf[STDIN_CHUNK];
    uint32_t pid;
    int keep_open = 0, i = 1;
    if (i < argc && !strcmp(argv[i], "-n")) {
        keep_open = 1;
        i++;
    }
    int rc = ctl_proc_one(ctl, argc, argv, i, &pid);
    if (rc)
        return rc;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "sandboxctl: write: stdin: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
        w.pid = pid;
        w.data.data = (uint8_t *)buf;
        w.data.len = (size_t)n;
        req.op_case = OP(WRITE_STDIN);
        req.write_stdin = &w;
        if (simple_call(ctl, &req, "write"))
            return 1;
    }
    if (keep_open)
        return 0;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__CloseStdin cs = SANDBOX__AGENT__V1__CLOSE_STDIN__INIT;
    cs.pid = pid;
    req.op_case = OP(CLOSE_STDIN);
    req.close_stdin = &cs;
    return simple_call(ctl, &req, "write");
}

static int cmd_forget(ctl_t *ctl, int argc, char **argv)
{
    int rc = 0;
    if (argc < 2)
        return ctl_usage_error(ctl, "needs a pid or a tag");
    if (ctl_connect(ctl) < 0)
        return 1;
    for (int i = 1; i < argc; i++) {
        uint32_t pid;
        if (ctl_proc_resolve(ctl, "forget", argv[i], &pid)) {
            rc = 1;
            continue;
        }
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__ForgetProcess f = SANDBOX__AGENT__V1__FORGET_PROCESS__INIT;
        f.pid = pid;
        req.op_case = OP(FORGET);
        req.forget = &f;
        rc |= simple_call(ctl, &req, "forget");
    }
    return rc;
}

#define RUN_OPTIONS                                                                         \
    "  -t, --tty          a pseudo-terminal sized like ours; our terminal in raw mode\n"     \
    "  -i, --stdin        give it a stdin pipe and copy our standard input to it\n"          \
    "  -e, --env K=V      set an environment variable (repeatable)\n"                        \
    "  -w, --cwd DIR      working directory (default: the user's home)\n"                    \
    "  -u, --user USER    run as USER (a name, a uid, or uid:gid)\n"                         \
    "      --tag TAG      a name to find the process by later (logs, kill, wait, write)\n"   \
    "      --timeout S    stop the process group after S seconds (SIGTERM, then SIGKILL)\n"  \
    "      --memory-max B, --pids-max N, --cpu-max MILLICORES\n"                            \
    "                     limits of its cgroup (1000 millicores = one CPU)\n"

const ctl_cmd_t ctl_cmds_proc[] = {
    {"run", ctl_run_cmd_run,
     "[-t] [-i] [-e K=V] [-w DIR] [-u USER] [--tag TAG] [--timeout S] [LIMITS] [--keep] [--] CMD "
     "[ARGS...]",
     "run a command, stream its output, exit with its status",
     RUN_OPTIONS
     "      --keep         leave the process running when sandboxctl is terminated\n"
     "\n"
     "  The exit status is the command's (128+N when signal N killed it); 124 when\n"
     "  --timeout stopped it; 126/127 when it could not be started.\n"
     "  Ctrl-C is sent to the process group as SIGINT; a second Ctrl-C within a second\n"
     "  detaches, leaving the process running (with --tty: '~.' at the start of a line).\n"
     "  SIGTERM or SIGHUP to sandboxctl stops the process group (SIGTERM, then SIGKILL\n"
     "  after 2 s) unless --keep, then exits 128+N.\n"
     "  The command runs in the user's home directory with the user's HOME, USER,\n"
     "  LOGNAME, SHELL and PATH unless --cwd or --env say otherwise.\n"},
    {"start", ctl_run_cmd_start,
     "[-t] [-i] [-e K=V] [-w DIR] [-u USER] [--tag TAG] [--timeout S] [LIMITS] [--restart MODE] "
     "[--ready SPEC] [--health SPEC] [--] CMD [ARGS...]",
     "start a command, print its pid (with --ready: once ready)", RUN_OPTIONS CTL_SVC_OPTIONS},
    {"ps", cmd_ps, "[-a]", "list processes (-a: with exited ones)",
     "  -a, --all          the exited processes the agent still keeps too\n"},
    {"logs", ctl_logs_cmd,
     "[-f] [--tail N] [--since D|TIME] [--from SEQ] [-t] [--stream S] [--allow-gaps] PID|TAG",
     "print a process's kept output (-f: follow)",
     "  -f, --follow       keep following until the process exits\n"
     "  -n, --tail N       only the last N lines of what is kept\n"
     "      --since D      only output from the last D (90s, 5m, 2h, 1d) or since a time\n"
     "                     (2006-01-02T15:04:05Z, UTC)\n"
     "      --from SEQ     start at this position: the bytes an earlier reader got, to\n"
     "                     resume without losing or repeating anything\n"
     "  -t, --timestamps   each line starts with the time the agent read it (UTC)\n"
     "      --stream S     only stdout or only stderr\n"
     "      --allow-gaps   exit 0 even when output was dropped\n"
     "\n"
     "  Output that no longer fits the process's window is dropped by the agent; each\n"
     "  gap is reported on stderr where it happened, and the exit status is then 1.\n"
     "  A service's events (ready, a run's exit, a restart) are said on stderr where\n"
     "  they happened (with --json: lines \"ready\", \"exited\", \"restarted\").\n"},
    {"kill", cmd_kill, "[-s SIG] [-g] PID|TAG", "signal a process (-g: its process group)",
     "  -s SIG, -SIG       the signal, a name (TERM, SIGKILL) or a number (default TERM)\n"
     "  -g                 the whole process group\n"},
    {"wait", cmd_wait, "PID|TAG", "wait for a process; exit with its status",
     "  The exit status is the process's (128+N for signal N; 124 when it timed out).\n"},
    {"write", cmd_write, "[-n] PID|TAG", "send stdin to a process, then close its stdin",
     "  The process must have been started with -i (or --tty).\n"
     "  -n                 leave its stdin open\n"},
    {"forget", cmd_forget, "PID|TAG...", "drop exited processes and their kept output", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
