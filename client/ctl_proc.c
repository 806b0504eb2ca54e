/* ctl_proc.c - sandboxctl's process commands: run, start, ps, logs, kill,
 * wait, write. */
#include "ctl.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#define STDIN_CHUNK (64 * 1024)
#define STDIN_INFLIGHT 4
#define MAX_ENV 256

typedef Sandbox__Agent__V1__StartProcess StartProcess;
typedef Sandbox__Agent__V1__StartProcess__EnvEntry EnvEntry;

typedef struct run_opts {
    int tty, stdin_pipe, follow;
    const char *cwd, *user, *tag;
    double timeout_s;
    size_t n_env;
    EnvEntry env_store[MAX_ENV];
    EnvEntry *env[MAX_ENV];
    char **cmd;
    int n_cmd;
} run_opts_t;

static int exit_status_of(const ProcessExit *e)
{
    return e->signal ? 128 + e->signal : e->exit_code;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Parse run/start options up to "--" or the first non-option. Returns the
 * index of the command, or -1 after printing usage. */
static int parse_run(int argc, char **argv, run_opts_t *o, const char *usage)
{
    int i = 1;
    memset(o, 0, sizeof *o);
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (a[0] != '-')
            break;
        if (!strcmp(a, "--tty") || !strcmp(a, "-t")) {
            o->tty = 1;
        } else if (!strcmp(a, "--stdin") || !strcmp(a, "-i")) {
            o->stdin_pipe = 1;
        } else if (i + 1 < argc && (!strcmp(a, "--env") || !strcmp(a, "-e"))) {
            char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq || eq == kv || o->n_env == MAX_ENV) {
                fprintf(stderr, "sandboxctl: --env '%s': expected KEY=VALUE\n", kv);
                return -1;
            }
            EnvEntry *e = &o->env_store[o->n_env];
            sandbox__agent__v1__start_process__env_entry__init(e);
            *eq = 0;
            e->key = kv;
            e->value = eq + 1;
            o->env[o->n_env++] = e;
        } else if (i + 1 < argc && !strcmp(a, "--cwd")) {
            o->cwd = argv[++i];
        } else if (i + 1 < argc && (!strcmp(a, "--user") || !strcmp(a, "-u"))) {
            o->user = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--tag")) {
            o->tag = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--timeout")) {
            char *end;
            o->timeout_s = strtod(argv[++i], &end);
            if (*end || o->timeout_s < 0 || o->timeout_s > 4294967) {
                fprintf(stderr, "sandboxctl: --timeout '%s': expected seconds\n", argv[i]);
                return -1;
            }
        } else {
            fprintf(stderr, "sandboxctl: unknown option '%s'\nusage: sandboxctl %s %s\n", a,
                    argv[0], usage);
            return -1;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: sandboxctl %s %s\n", argv[0], usage);
        return -1;
    }
    o->cmd = argv + i;
    o->n_cmd = argc - i;
    return i;
}

static void fill_start(const run_opts_t *o, StartProcess *sp, Sandbox__Agent__V1__Pty *pty)
{
    sp->command = o->cmd[0];
    sp->n_args = (size_t)o->n_cmd - 1;
    sp->args = o->cmd + 1;
    sp->n_env = o->n_env;
    sp->env = (EnvEntry **)o->env;
    if (o->cwd)
        sp->cwd = (char *)o->cwd;
    if (o->user)
        sp->user = (char *)o->user;
    if (o->tag)
        sp->tag = (char *)o->tag;
    sp->timeout_ms = (uint32_t)(o->timeout_s * 1000);
    sp->stdin_mode = o->stdin_pipe ? SANDBOX__AGENT__V1__STDIN_MODE__STDIN_PIPE
                                   : SANDBOX__AGENT__V1__STDIN_MODE__STDIN_NULL;
    if (o->tty) {
        struct winsize ws;
        const char *term = getenv("TERM");
        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
            pty->rows = ws.ws_row;
            pty->cols = ws.ws_col;
        }
        if (term && *term)
            pty->term = (char *)term;
        sp->pty = pty;
    }
}

/* ------------------------------------------------------------ run */

static int g_sigpipe[2] = {-1, -1};

static void on_sig(int sig)
{
    unsigned char b = (unsigned char)sig;
    int e = errno;
    ssize_t w = write(g_sigpipe[1], &b, 1);
    (void)w;
    errno = e;
}

static int send_simple(ctl_t *ctl, Request *req)
{
    req->id = 0;
    return sa_client_send(ctl->cli, req);
}

static void send_signal(ctl_t *ctl, uint32_t pid, int sig, int group)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SendSignal s = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    s.pid = pid;
    s.signal = sig;
    s.group = group;
    req.op_case = OP(SIGNAL);
    req.signal = &s;
    send_simple(ctl, &req);
}

static void send_resize(ctl_t *ctl, uint32_t pid)
{
    struct winsize ws;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ResizePty rz = SANDBOX__AGENT__V1__RESIZE_PTY__INIT;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 || !ws.ws_row || !ws.ws_col)
        return;
    rz.pid = pid;
    rz.rows = ws.ws_row;
    rz.cols = ws.ws_col;
    req.op_case = OP(RESIZE);
    req.resize = &rz;
    send_simple(ctl, &req);
}

static int send_write(ctl_t *ctl, uint32_t pid, const void *data, size_t len)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
    w.pid = pid;
    w.data.data = (uint8_t *)data;
    w.data.len = len;
    req.op_case = OP(WRITE_STDIN);
    req.write_stdin = &w;
    return send_simple(ctl, &req);
}

static int send_close(ctl_t *ctl, uint32_t pid)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__CloseStdin cs = SANDBOX__AGENT__V1__CLOSE_STDIN__INIT;
    cs.pid = pid;
    req.op_case = OP(CLOSE_STDIN);
    req.close_stdin = &cs;
    return send_simple(ctl, &req);
}

/* Write an output event where it belongs. */
static void emit(const OutputEvent *ev)
{
    int fd = ev->stream == SANDBOX__AGENT__V1__STREAM__STDERR ? STDERR_FILENO : STDOUT_FILENO;
    write_all(fd, ev->data.data, ev->data.len);
}

/* Stream a followed process (the request main_id) until its exit: output to
 * stdout/stderr, the CLI's stdin to the process (tty or -i), Ctrl-C as
 * SIGINT, window size changes. Returns the exit status for the CLI. */
static int pump_process(ctl_t *ctl, uint64_t main_id, uint32_t pid, int tty, int forward_stdin)
{
    struct termios saved;
    int raw = 0, stdin_open = forward_stdin, inflight = 0, status = 1;
    struct sigaction sa;
    static char buf[STDIN_CHUNK];

    if (pipe(g_sigpipe) < 0)
        return 1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    if (tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios t = saved;
        cfmakeraw(&t);
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
            raw = 1;
    }
    for (;;) {
        Response *r = NULL;
        int rc;
        /* Frames already buffered by the library first. */
        while ((rc = sa_client_recv(ctl->cli, &r, 0)) == 0) {
            if (r->id == main_id) {
                if (r->result_case == RES(OUTPUT)) {
                    emit(r->output);
                } else if (r->result_case == RES(EXIT)) {
                    status = exit_status_of(r->exit);
                    sa_response_free(r);
                    goto out;
                } else if (r->result_case == RES(ERROR)) {
                    ctl_fail("follow", r);
                    sa_response_free(r);
                    goto out;
                }
            } else if (r->result_case == RES(ERROR)) {
                if (r->error->code != CODE(FAILED_PRECONDITION))
                    ctl_fail("request", r);
            } else if (r->result_case == RES(ACK) && inflight > 0) {
                inflight--;
            }
            sa_response_free(r);
        }
        if (rc != -ETIMEDOUT) {
            fprintf(stderr, "\r\nsandboxctl: connection to the agent: %s\n", strerror(-rc));
            goto out;
        }
        struct pollfd pf[3] = {
            {.fd = sa_client_fd(ctl->cli), .events = POLLIN},
            {.fd = g_sigpipe[0], .events = POLLIN},
            {.fd = stdin_open && inflight < STDIN_INFLIGHT ? STDIN_FILENO : -1, .events = POLLIN},
        };
        if (poll(pf, 3, -1) < 0 && errno != EINTR)
            goto out;
        if (pf[1].revents & POLLIN) {
            unsigned char sig;
            if (read(g_sigpipe[0], &sig, 1) == 1) {
                if (sig == SIGINT)
                    send_signal(ctl, pid, SIGINT, 1);
                else if (sig == SIGWINCH && tty)
                    send_resize(ctl, pid);
            }
        }
        if (pf[2].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0) {
                send_write(ctl, pid, buf, (size_t)n);
                inflight++;
            } else if (n == 0 || errno != EINTR) {
                stdin_open = 0;
                send_close(ctl, pid);
            }
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if ((rc = sa_client_recv(ctl->cli, &r, 1000)) == 0) {
                /* Put it through the same path next round. */
                if (r->id == main_id && r->result_case == RES(OUTPUT)) {
                    emit(r->output);
                } else if (r->id == main_id && r->result_case == RES(EXIT)) {
                    status = exit_status_of(r->exit);
                    sa_response_free(r);
                    goto out;
                } else if (r->id == main_id && r->result_case == RES(ERROR)) {
                    ctl_fail("follow", r);
                    sa_response_free(r);
                    goto out;
                } else if (r->result_case == RES(ACK) && inflight > 0) {
                    inflight--;
                } else if (r->result_case == RES(ERROR) &&
                           r->error->code != CODE(FAILED_PRECONDITION)) {
                    ctl_fail("request", r);
                }
                sa_response_free(r);
            } else if (rc != -ETIMEDOUT) {
                fprintf(stderr, "\r\nsandboxctl: connection to the agent: %s\n", strerror(-rc));
                goto out;
            }
        }
    }
out:
    if (raw)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    signal(SIGINT, SIG_DFL);
    signal(SIGWINCH, SIG_DFL);
    close(g_sigpipe[0]);
    close(g_sigpipe[1]);
    return status;
}

static int do_start(ctl_t *ctl, int argc, char **argv, int follow)
{
    run_opts_t o;
    Request req = REQUEST_INIT;
    StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    Sandbox__Agent__V1__Pty pty = SANDBOX__AGENT__V1__PTY__INIT;
    Response *r = NULL;
    int rc;
    const char *usage = "[--tty] [-i] [--env K=V] [--cwd D] [--user U] [--timeout S] [--tag T] "
                        "-- CMD [ARGS...]";

    if (parse_run(argc, argv, &o, usage) < 0)
        return 2;
    if (o.tty)
        o.stdin_pipe = 0; /* the pty is the stdin */
    fill_start(&o, &sp, &pty);
    sp.follow = follow;
    if (ctl_connect(ctl) < 0)
        return 1;
    req.op_case = OP(START);
    req.start = &sp;
    if ((rc = sa_client_send(ctl->cli, &req)) < 0 ||
        (rc = sa_client_recv_id(ctl->cli, req.id, &r, 30000)) < 0) {
        fprintf(stderr, "sandboxctl: %s: %s\n", argv[0], strerror(-rc));
        return 1;
    }
    if (r->result_case != RES(STARTED)) {
        /* As a shell says it: 126 found but not runnable, 127 not found. */
        int denied = r->result_case == RES(ERROR) && r->error->code == CODE(PERMISSION_DENIED);
        ctl_fail(argv[0], r);
        sa_response_free(r);
        return denied ? 126 : 127;
    }
    uint32_t pid = r->started->pid;
    sa_response_free(r);
    if (!follow) {
        if (ctl->json)
            printf("{\"pid\":%u}\n", pid);
        else
            printf("%u\n", pid);
        return 0;
    }
    return pump_process(ctl, req.id, pid, o.tty, o.tty || o.stdin_pipe);
}

static int cmd_run(ctl_t *ctl, int argc, char **argv) { return do_start(ctl, argc, argv, 1); }
static int cmd_start(ctl_t *ctl, int argc, char **argv) { return do_start(ctl, argc, argv, 0); }

/* ------------------------------------------------------------ others */

static int parse_pid(const char *s, uint32_t *pid)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v == 0 || v > 0x7fffffff) {
        fprintf(stderr, "sandboxctl: '%s' is not a pid\n", s);
        return -1;
    }
    *pid = (uint32_t)v;
    return 0;
}

static int cmd_ps(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    Response *r = NULL;
    int rc, first = 1;
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "-a"))) {
        fprintf(stderr, "usage: sandboxctl ps [-a]\n");
        return 2;
    }
    lp.include_exited = argc == 2;
    if (ctl_connect(ctl) < 0)
        return 1;
    req.op_case = OP(LIST_PROCESSES);
    req.list_processes = &lp;
    if ((rc = sa_client_send(ctl->cli, &req)) < 0) {
        fprintf(stderr, "sandboxctl: ps: %s\n", strerror(-rc));
        return 1;
    }
    if (ctl->json)
        printf("[");
    else
        printf("%-8s %-8s %-6s %-12s %s\n", "PID", "STATE", "EXIT", "TAG", "COMMAND");
    do {
        if ((rc = sa_client_recv_id(ctl->cli, req.id, &r, 30000)) < 0) {
            fprintf(stderr, "sandboxctl: ps: %s\n", strerror(-rc));
            return 1;
        }
        if (r->result_case != RES(PROCESSES)) {
            rc = ctl_fail("ps", r);
            sa_response_free(r);
            return rc;
        }
        for (size_t i = 0; i < r->processes->n_processes; i++) {
            const ProcessInfo *p = r->processes->processes[i];
            int running = p->state == SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING;
            if (ctl->json) {
                printf("%s{\"pid\":%u,\"state\":\"%s\",\"exit_code\":%d,\"signal\":%d,\"tag\":",
                       first ? "" : ",", p->pid, running ? "running" : "exited",
                       p->exit ? p->exit->exit_code : 0, p->exit ? p->exit->signal : 0);
                ctl_json_string(p->tag);
                printf(",\"command\":");
                ctl_json_string(p->command);
                printf(",\"stdout_bytes\":%llu,\"stderr_bytes\":%llu}",
                       (unsigned long long)p->stdout_bytes, (unsigned long long)p->stderr_bytes);
            } else {
                char ex[16] = "-";
                if (!running && p->exit)
                    snprintf(ex, sizeof ex, "%d", p->exit->exit_code);
                printf("%-8u %-8s %-6s %-12s %s", p->pid, running ? "running" : "exited", ex,
                       p->tag[0] ? p->tag : "-", p->command);
                for (size_t a = 0; a < p->n_args; a++)
                    printf(" %s", p->args[a]);
                printf("\n");
            }
            first = 0;
        }
        int done = r->done;
        sa_response_free(r);
        if (done)
            break;
    } while (1);
    if (ctl->json)
        printf("]\n");
    return 0;
}

static int cmd_logs(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    int follow = 0, i = 1, rc, status = 0;
    uint32_t pid;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-f"))
            follow = 1;
        else
            break;
    }
    if (i + 1 != argc || parse_pid(argv[i], &pid) < 0) {
        fprintf(stderr, "usage: sandboxctl logs [-f] PID\n");
        return 2;
    }
    if (ctl_connect(ctl) < 0)
        return 1;
    f.pid = pid;
    f.no_wait = !follow;
    req.op_case = OP(FOLLOW);
    req.follow = &f;
    if ((rc = sa_client_send(ctl->cli, &req)) < 0) {
        fprintf(stderr, "sandboxctl: logs: %s\n", strerror(-rc));
        return 1;
    }
    for (;;) {
        Response *r;
        if ((rc = sa_client_recv_id(ctl->cli, req.id, &r, -1)) < 0) {
            fprintf(stderr, "sandboxctl: logs: %s\n", strerror(-rc));
            return 1;
        }
        if (r->result_case == RES(OUTPUT)) {
            emit(r->output);
        } else if (r->result_case == RES(GAP)) {
            fprintf(stderr, "sandboxctl: logs: %llu bytes of output no longer kept\n",
                    (unsigned long long)r->gap->skipped_bytes);
        } else if (r->result_case == RES(ERROR)) {
            status = ctl_fail("logs", r);
        }
        int done = r->done;
        sa_response_free(r);
        if (done)
            return status;
    }
}

static int signal_number(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
                 {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"ALRM", SIGALRM}, {"PIPE", SIGPIPE}};
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end)
        return (int)v;
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name))
            return names[i].sig;
    return -1;
}

static int simple_call(ctl_t *ctl, Request *req, const char *what)
{
    Response *r = NULL;
    int rc = sa_client_call(ctl->cli, req, &r, 30000);
    if (rc < 0) {
        fprintf(stderr, "sandboxctl: %s: %s\n", what, strerror(-rc));
        return 1;
    }
    rc = r->result_case == RES(ERROR) ? ctl_fail(what, r) : 0;
    sa_response_free(r);
    return rc;
}

static int cmd_kill(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SendSignal s = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    int sig = SIGTERM, group = 0, i = 1;
    uint32_t pid;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            if ((sig = signal_number(argv[++i])) < 0) {
                fprintf(stderr, "sandboxctl: kill: unknown signal '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "-g")) {
            group = 1;
        } else {
            break;
        }
    }
    if (i + 1 != argc || parse_pid(argv[i], &pid) < 0) {
        fprintf(stderr, "usage: sandboxctl kill [-s SIG] [-g] PID\n");
        return 2;
    }
    if (ctl_connect(ctl) < 0)
        return 1;
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
    int rc;
    if (argc != 2 || parse_pid(argv[1], &pid) < 0) {
        fprintf(stderr, "usage: sandboxctl wait PID\n");
        return 2;
    }
    if (ctl_connect(ctl) < 0)
        return 1;
    w.pid = pid;
    req.op_case = OP(WAIT);
    req.wait = &w;
    if ((rc = sa_client_call(ctl->cli, &req, &r, -1)) < 0) {
        fprintf(stderr, "sandboxctl: wait: %s\n", strerror(-rc));
        return 1;
    }
    if (r->result_case != RES(EXIT)) {
        rc = ctl_fail("wait", r);
    } else {
        rc = exit_status_of(r->exit);
        if (ctl->json)
            printf("{\"exit_code\":%d,\"signal\":%d,\"timed_out\":%s}\n", r->exit->exit_code,
                   r->exit->signal, r->exit->timed_out ? "true" : "false");
    }
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
    if (i + 1 != argc || parse_pid(argv[i], &pid) < 0) {
        fprintf(stderr, "usage: sandboxctl write [-n] PID   (stdin to the process; -n: keep "
                        "its stdin open)\n");
        return 2;
    }
    if (ctl_connect(ctl) < 0)
        return 1;
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

const ctl_cmd_t ctl_cmds_proc[] = {
    {"run", cmd_run, "[--tty] [-i] [--env K=V] [--cwd D] [--user U] [--timeout S] -- CMD...",
     "run a command, stream its output, exit with its status"},
    {"start", cmd_start, "[same options as run] -- CMD...", "start a command, print its pid"},
    {"ps", cmd_ps, "[-a]", "list processes (-a: with exited ones)"},
    {"logs", cmd_logs, "[-f] PID", "print a process's kept output (-f: follow)"},
    {"kill", cmd_kill, "[-s SIG] [-g] PID", "signal a process (-g: its process group)"},
    {"wait", cmd_wait, "PID", "wait for a process; exit with its status"},
    {"write", cmd_write, "[-n] PID", "send stdin to a process, then close its stdin"},
    {NULL, NULL, NULL, NULL},
};
