/* ctl_proc.c - sandboxctl's process commands: run, start, ps, logs, kill,
 * wait, write, forget. A process is named by its pid or by its tag. */
#include "ctl.h"
#include "ctl_svc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define STDIN_CHUNK (64 * 1024)
#define STDIN_INFLIGHT 4
#define MAX_ENV 256
/* After SIGTERM to the group, how long run waits before SIGKILL. */
#define TERM_GRACE_MS 2000

typedef Sandbox__Agent__V1__StartProcess StartProcess;
typedef Sandbox__Agent__V1__StartProcess__EnvEntry EnvEntry;

#define STREAM_OUT SANDBOX__AGENT__V1__STREAM__STDOUT
#define STREAM_ERR SANDBOX__AGENT__V1__STREAM__STDERR
#define STREAM_PTY SANDBOX__AGENT__V1__STREAM__PTY
#define STREAM_UNSPECIFIED SANDBOX__AGENT__V1__STREAM__STREAM_UNSPECIFIED

typedef struct run_opts {
    int tty, stdin_pipe, keep;
    const char *cwd, *user, *tag, *timeout_arg;
    double timeout_s;
    Sandbox__Agent__V1__Limits limits;
    int has_limits;
    size_t n_env;
    EnvEntry env_store[MAX_ENV];
    EnvEntry *env[MAX_ENV];
    char **cmd;
    int n_cmd;
    ctl_svc_opts_t svc; /* --restart, --ready, ... (ctl_svc.c) */
} run_opts_t;

/* The status a shell reports; a timeout says so and is 124, as timeout(1). */
static int exit_status_of(const char *what, const ProcessExit *e, const char *timeout_arg)
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

/* Parse run/start options up to "--" or the first non-option. Returns the
 * index of the command, 0 when --help was printed, or -1 after a usage
 * error. */
static int parse_run(ctl_t *ctl, int argc, char **argv, run_opts_t *o)
{
    int i = 1, svc;
    memset(o, 0, sizeof *o);
    sandbox__agent__v1__limits__init(&o->limits);
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (a[0] != '-')
            break;
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ctl_cmd_help(ctl->cmd, stdout);
            return 0;
        } else if (!strcmp(a, "--tty") || !strcmp(a, "-t")) {
            o->tty = 1;
        } else if (!strcmp(a, "--stdin") || !strcmp(a, "-i")) {
            o->stdin_pipe = 1;
        } else if (!strcmp(a, "-it") || !strcmp(a, "-ti")) {
            o->tty = o->stdin_pipe = 1;
        } else if (!strcmp(a, "--keep")) {
            o->keep = 1;
        } else if (!strcmp(a, "--env") || !strcmp(a, "-e")) {
            if (!has_value)
                goto need_value;
            char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq || eq == kv)
                return ctl_usage_error(ctl, "--env '%s': expected KEY=VALUE", kv), -1;
            if (o->n_env == MAX_ENV)
                return ctl_usage_error(ctl, "more than %d --env", MAX_ENV), -1;
            EnvEntry *e = &o->env_store[o->n_env];
            sandbox__agent__v1__start_process__env_entry__init(e);
            *eq = 0;
            e->key = kv;
            e->value = eq + 1;
            o->env[o->n_env++] = e;
        } else if (!strcmp(a, "--cwd") || !strcmp(a, "-w")) {
            if (!has_value)
                goto need_value;
            o->cwd = argv[++i];
        } else if (!strcmp(a, "--user") || !strcmp(a, "-u")) {
            if (!has_value)
                goto need_value;
            o->user = argv[++i];
        } else if (!strcmp(a, "--tag")) {
            if (!has_value)
                goto need_value;
            o->tag = argv[++i];
        } else if (!strcmp(a, "--timeout")) {
            if (!has_value)
                goto need_value;
            char *end;
            o->timeout_arg = argv[++i];
            o->timeout_s = strtod(o->timeout_arg, &end);
            if (!o->timeout_arg[0] || *end || o->timeout_s <= 0 || o->timeout_s > 4294967)
                return ctl_usage_error(ctl, "--timeout '%s': expected seconds (more than 0)",
                                       o->timeout_arg), -1;
        } else if ((svc = ctl_svc_option(&o->svc, argc, argv, &i)) != 0) {
            if (svc < 0)
                return -1;
        } else if (!strcmp(a, "--memory-max") || !strcmp(a, "--pids-max") ||
                   !strcmp(a, "--cpu-max")) {
            if (!has_value)
                goto need_value;
            char *end;
            const char *v = argv[++i];
            unsigned long long n = strtoull(v, &end, 10);
            if (!v[0] || v[0] == '-' || *end || !n || (a[2] != 'm' && n > 0xffffffffull))
                return ctl_usage_error(ctl, "%s '%s': expected a positive number", a, v), -1;
            if (a[2] == 'm')
                o->limits.memory_max_bytes = n;
            else if (a[2] == 'p')
                o->limits.pids_max = (uint32_t)n;
            else
                o->limits.cpu_max_millicores = (uint32_t)n;
            o->has_limits = 1;
        } else {
            return ctl_usage_error(ctl, "unknown option '%s'", a), -1;
        }
        continue;
    need_value:
        return ctl_usage_error(ctl, "option '%s' needs a value", a), -1;
    }
    if (i >= argc)
        return ctl_usage_error(ctl, "needs a command to run"), -1;
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
    sp->timeout_ms = (uint32_t)(o->timeout_s * 1000 + 0.5);
    if (o->timeout_s > 0 && !sp->timeout_ms)
        sp->timeout_ms = 1;
    if (o->has_limits)
        sp->limits = (Sandbox__Agent__V1__Limits *)&o->limits;
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

/* A signal and when it came (so "twice within a second" is about the
 * Ctrl-Cs, not about when the loop got to them). One write of less than
 * PIPE_BUF bytes: never split. */
typedef struct sig_note {
    int sig;
    struct timespec at;
} sig_note_t;

static void on_sig(int sig)
{
    sig_note_t n = {sig, {0, 0}};
    int e = errno;
    clock_gettime(CLOCK_MONOTONIC, &n.at); /* async-signal-safe */
    ssize_t w = write(g_sigpipe[1], &n, sizeof n);
    (void)w; /* nothing to do if this write fails */
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
    int fd = ev->stream == STREAM_ERR ? STDERR_FILENO : STDOUT_FILENO;
    sa_write_all(fd, ev->data.data, ev->data.len, 0);
}

static const char *stream_name(int s)
{
    return s == STREAM_OUT ? "stdout" : s == STREAM_ERR ? "stderr" : s == STREAM_PTY ? "pty"
                                                                                      : "both";
}

/* The JSON lines of a followed process (logs --json, run --json). */
static void json_output(int stream, uint64_t seq, uint64_t ts, const uint8_t *d, size_t n)
{
    printf("{\"event\":\"output\",\"stream\":\"%s\",\"sequence\":%llu,"
           "\"timestamp_unix_nano\":%llu,",
           stream_name(stream), (unsigned long long)seq, (unsigned long long)ts);
    if (ctl_utf8_valid((const char *)d, n)) {
        printf("\"data\":");
        ctl_json_string_n((const char *)d, n);
    } else {
        printf("\"data_base64\":");
        ctl_json_base64(d, n);
    }
    printf("}\n");
    fflush(stdout);
}

static void json_gap(int stream, uint64_t skipped, uint64_t from, uint64_t to)
{
    printf("{\"event\":\"gap\",\"stream\":\"%s\",\"skipped_bytes\":%llu,"
           "\"from_sequence\":%llu,\"to_sequence\":%llu}\n",
           stream_name(stream), (unsigned long long)skipped, (unsigned long long)from,
           (unsigned long long)to);
    fflush(stdout);
}

static void json_exit_fields(const ProcessExit *e)
{
    if (e)
        printf("\"exit_code\":%d,\"signal\":%d,\"timed_out\":%s", e->exit_code, e->signal,
               e->timed_out ? "true" : "false");
    else
        printf("\"exit_code\":null,\"signal\":null,\"timed_out\":null");
}

static void json_exit(const ProcessExit *e)
{
    printf("{\"event\":\"exit\",");
    json_exit_fields(e);
    printf("}\n");
    fflush(stdout);
}

typedef struct pump {
    ctl_t *ctl;
    uint64_t main_id;
    uint32_t pid;
    const run_opts_t *o;
    int status;      /* the exit status for the CLI, once known */
    int ended;       /* the exit (or the follow's error) arrived */
    int inflight;    /* stdin writes not yet acknowledged */
    double last_int; /* when the last Ctrl-C came (monotonic s) */
    int esc;         /* tty: 0 mid-line, 1 at a line start, 2 after '~' there */
} pump_t;

/* One response of the run's connection. */
static void pump_response(pump_t *p, Response *r)
{
    if (r->id == p->main_id) {
        if (r->result_case == RES(OUTPUT)) {
            const OutputEvent *e = r->output;
            if (p->ctl->json)
                json_output((int)e->stream, e->sequence, e->timestamp_unix_nano, e->data.data,
                            e->data.len);
            else
                emit(e);
        } else if (r->result_case == RES(GAP)) {
            /* This follower fell behind the window: said, never silent. */
            const OutputGap *g = r->gap;
            char b[32];
            ctl_human("bytes", (double)g->skipped_bytes, b, sizeof b);
            if (p->ctl->json)
                json_gap((int)g->stream, g->skipped_bytes, g->from_sequence, g->to_sequence);
            fprintf(stderr, "%ssandboxctl: run: %s of %s were dropped here (read slower than "
                            "the process wrote, beyond its output window)%s\n",
                    p->o->tty ? "\r\n" : "", b,
                    g->stream == STREAM_UNSPECIFIED ? "output" : stream_name((int)g->stream),
                    p->o->tty ? "\r" : "");
        } else if (r->result_case == RES(EXIT) && r->done) { /* a service: its last run */
            if (p->ctl->json)
                json_exit(r->exit);
            p->status = exit_status_of("run", r->exit, p->o->timeout_arg);
            p->ended = 1;
        } else if (r->result_case == RES(RESTARTED)) {
            p->pid = r->restarted->pid; /* Ctrl-C and stdin go to the new run */
        } else if (r->result_case == RES(ERROR)) {
            ctl_fail("run", r);
            p->status = 1;
            p->ended = 1;
        }
    } else if (r->result_case == RES(ERROR)) {
        /* A signal or a write after the exit is expected; others say why. */
        if (r->error->code != CODE(FAILED_PRECONDITION) && r->error->code != CODE(NOT_FOUND))
            ctl_fail("run", r);
        if (p->inflight > 0)
            p->inflight--;
    } else if (r->result_case == RES(ACK) && p->inflight > 0) {
        p->inflight--;
    }
}

/* Take what arrives within timeout_ms (0: what is buffered). Returns -1
 * when the connection failed (said so). */
static int pump_recv(pump_t *p, int timeout_ms)
{
    Response *r = NULL;
    int rc;
    while (!p->ended && (rc = sa_client_recv(p->ctl->cli, &r, timeout_ms)) == 0) {
        pump_response(p, r);
        sa_response_free(r);
        timeout_ms = 0;
    }
    if (!p->ended && rc != -ETIMEDOUT) {
        fprintf(stderr, "\r\nsandboxctl: run: connection to the agent: %s\n", strerror(-rc));
        p->status = 1;
        return -1;
    }
    return 0;
}

/* sandboxctl itself is going away: the remote group goes too (SIGTERM,
 * SIGKILL after TERM_GRACE_MS), unless --keep. */
static void pump_abandon(pump_t *p, int sig)
{
    if (p->o->keep) {
        fprintf(stderr, "\r\nsandboxctl: run: %s; process %u keeps running (--keep)\n",
                strsignal(sig), p->pid);
        p->status = 128 + sig;
        return;
    }
    send_signal(p->ctl, p->pid, SIGTERM, 1);
    double t0 = ctl_now();
    while (!p->ended && ctl_now() - t0 < TERM_GRACE_MS / 1000.0)
        if (pump_recv(p, 100) < 0)
            break;
    if (!p->ended) {
        send_signal(p->ctl, p->pid, SIGKILL, 1);
        double t1 = ctl_now();
        while (!p->ended && ctl_now() - t1 < 5)
            if (pump_recv(p, 100) < 0)
                break;
    }
    p->status = 128 + sig;
}

static void pump_detach(pump_t *p, const char *how)
{
    fprintf(stderr, "\r\nsandboxctl: run: detached (%s); process %u keeps running "
                    "(sandboxctl logs -f %u, sandboxctl kill -g %u)\r\n",
            how, p->pid, p->pid, p->pid);
    p->status = 130;
    p->ended = 1;
}

/* Forward stdin bytes on a tty, watching for the escape "~." at the start
 * of a line (as ssh's). Returns 1 when it asked to detach. */
static int tty_input(pump_t *p, const char *buf, size_t n)
{
    static char out[STDIN_CHUNK + 1];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (p->esc == 2) {
            if (ch == '.') {
                if (k)
                    send_write(p->ctl, p->pid, out, k), p->inflight++;
                pump_detach(p, "~.");
                return 1;
            }
            p->esc = 0;
            if (ch != '~') /* "~~" sends one '~' */
                out[k++] = '~';
        } else if (p->esc == 1 && ch == '~') {
            p->esc = 2;
            continue;
        }
        out[k++] = ch;
        p->esc = ch == '\r' || ch == '\n';
    }
    if (k) {
        send_write(p->ctl, p->pid, out, k);
        p->inflight++;
    }
    return 0;
}

/* Stream a followed process (the request main_id) until its exit: output to
 * stdout/stderr, the CLI's stdin to the process (tty or -i), Ctrl-C as
 * SIGINT (twice within a second: detach), window size changes; SIGTERM and
 * SIGHUP end the remote group too. Returns the exit status for the CLI. */
static int pump_process(ctl_t *ctl, uint64_t main_id, uint32_t pid, const run_opts_t *o)
{
    struct termios saved;
    int raw = 0, stdin_open = o->tty || o->stdin_pipe;
    struct sigaction sa;
    static char buf[STDIN_CHUNK];
    pump_t p = {ctl, main_id, pid, o, 1, 0, 0, -10, 1};
    static const int sigs[] = {SIGINT, SIGWINCH, SIGTERM, SIGHUP};

    if (pipe2(g_sigpipe, O_CLOEXEC) < 0)
        return 1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
    if (o->tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios t = saved;
        cfmakeraw(&t);
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
            raw = 1;
    }
    /* One place takes responses: what is buffered (0 ms) each time round,
     * and when poll said the socket is readable, a whole frame (1 s), after
     * the signals and stdin that woke the same poll are handled. */
    int recv_ms = 0;
    while (!p.ended) {
        if (pump_recv(&p, recv_ms) < 0 || p.ended)
            break;
        struct pollfd pf[3] = {
            {.fd = sa_client_fd(ctl->cli), .events = POLLIN},
            {.fd = g_sigpipe[0], .events = POLLIN},
            {.fd = stdin_open && p.inflight < STDIN_INFLIGHT ? STDIN_FILENO : -1,
             .events = POLLIN},
        };
        if (poll(pf, 3, -1) < 0 && errno != EINTR)
            break;
        recv_ms = pf[0].revents & (POLLIN | POLLHUP | POLLERR) ? 1000 : 0;
        if (pf[1].revents & POLLIN) {
            sig_note_t n;
            if (read(g_sigpipe[0], &n, sizeof n) == (ssize_t)sizeof n) {
                int sig = n.sig;
                if (sig == SIGINT) {
                    double t = (double)n.at.tv_sec + (double)n.at.tv_nsec / 1e9;
                    if (t - p.last_int < 1.0) {
                        pump_detach(&p, "Ctrl-C twice");
                        break;
                    }
                    p.last_int = t;
                    send_signal(ctl, p.pid, SIGINT, 1);
                } else if (sig == SIGWINCH && o->tty) {
                    send_resize(ctl, p.pid);
                } else if (sig == SIGTERM || sig == SIGHUP) {
                    pump_abandon(&p, sig);
                    break;
                }
            }
        }
        if (pf[2].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0) {
                if (raw) {
                    if (tty_input(&p, buf, (size_t)n))
                        break;
                } else {
                    send_write(ctl, p.pid, buf, (size_t)n);
                    p.inflight++;
                }
            } else if (n == 0 || errno != EINTR) {
                stdin_open = 0;
                send_close(ctl, p.pid);
            }
        }
    }
    if (raw)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], SIG_DFL);
    close(g_sigpipe[0]);
    close(g_sigpipe[1]);
    return p.status;
}

static int do_start(ctl_t *ctl, int argc, char **argv, int follow)
{
    run_opts_t o;
    Request req = REQUEST_INIT;
    StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    Sandbox__Agent__V1__Pty pty = SANDBOX__AGENT__V1__PTY__INIT;
    Response *r = NULL;
    int rc = parse_run(ctl, argc, argv, &o);

    if (rc <= 0)
        return rc < 0 ? 2 : 0;
    if (o.tty)
        o.stdin_pipe = 0; /* the pty is the stdin */
    fill_start(&o, &sp, &pty);
    ctl_svc_fill(&o.svc, &sp);
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
    /* With --ready, start prints the pid once the service is ready. */
    if (!follow && (rc = ctl_svc_wait_ready(ctl, &o.svc, &pid)) != 0)
        return rc;
    if (!follow) {
        if (ctl->json)
            printf("{\"pid\":%u}\n", pid);
        else
            printf("%u\n", pid);
        return 0;
    }
    return pump_process(ctl, req.id, pid, &o);
}

static int cmd_run(ctl_t *ctl, int argc, char **argv) { return do_start(ctl, argc, argv, 1); }
static int cmd_start(ctl_t *ctl, int argc, char **argv) { return do_start(ctl, argc, argv, 0); }

/* ------------------------------------------------------------ naming */

static int is_pid(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    return *s >= '0' && *s <= '9' && !*end && v > 0 && v <= 0x7fffffff;
}

typedef int ps_each_fn(const ProcessInfo *p, void *arg);

/* Every process the agent keeps (with the exited ones when all), in start
 * order. 0, or 1 after saying why. */
static int list_processes(ctl_t *ctl, int all, const char *what, ps_each_fn *each, void *arg)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    int rc;
    lp.include_exited = all;
    req.op_case = OP(LIST_PROCESSES);
    req.list_processes = &lp;
    if ((rc = sa_client_send(ctl->cli, &req)) < 0) {
        fprintf(stderr, "sandboxctl: %s: %s\n", what, strerror(-rc));
        return 1;
    }
    for (;;) {
        Response *r = NULL;
        if ((rc = sa_client_recv_id(ctl->cli, req.id, &r, 30000)) < 0) {
            fprintf(stderr, "sandboxctl: %s: %s\n", what, strerror(-rc));
            return 1;
        }
        if (r->result_case != RES(PROCESSES)) {
            rc = ctl_fail(what, r);
            sa_response_free(r);
            return rc;
        }
        for (size_t i = 0; i < r->processes->n_processes; i++)
            each(r->processes->processes[i], arg);
        int done = r->done;
        sa_response_free(r);
        if (done)
            return 0;
    }
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
static int resolve(ctl_t *ctl, const char *what, const char *name, uint32_t *pid)
{
    if (is_pid(name)) {
        *pid = (uint32_t)strtoul(name, NULL, 10);
        return 0;
    }
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

/* ------------------------------------------------------------ ps */


static int ps_each(const ProcessInfo *p, void *arg)
{
    ctl_t *ctl = arg;
    int running = p->state == SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING;
    if (ctl->json) {
        printf("{\"pid\":%u,\"state\":\"%s\",", p->pid, running ? "running" : "exited");
        json_exit_fields(running ? NULL : p->exit);
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

/* ------------------------------------------------------------ logs */



/* RFC 3339 in UTC with nanoseconds, as docker logs -t. */
static void put_time(FILE *f, uint64_t ns)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    char b[32];
    gmtime_r(&t, &tm);
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(f, "%s.%09lluZ ", b, (unsigned long long)(ns % 1000000000));
}

typedef struct ev {
    int stream;
    uint64_t seq, ts;
    size_t len;
    uint8_t *data;
} ev_t;

typedef struct gap {
    int stream;
    uint64_t skipped, from, to;
} gap_t;

typedef struct logs {
    ctl_t *ctl;
    int timestamps, allow_gaps, want_stream; /* want_stream 0: all */
    uint64_t since_ns;                        /* 0: all */
    uint64_t window;
    uint64_t next_seq; /* after the last byte seen */
    uint64_t lost;     /* bytes dropped (gaps) */
    int line_start[4]; /* per stream, for --timestamps */
    /* --tail: the kept output collected before printing */
    long tail;
    ev_t *evs;
    size_t n_evs;
    gap_t gaps[64];
    size_t n_gaps;
} logs_t;

static void logs_print(logs_t *l, int stream, uint64_t seq, uint64_t ts, const uint8_t *d,
                       size_t n)
{
    if (l->ctl->json) {
        json_output(stream, seq, ts, d, n);
        return;
    }
    FILE *f = stream == STREAM_ERR ? stderr : stdout;
    if (!l->timestamps) {
        fflush(stdout);
        sa_write_all(fileno(f), d, n, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (l->line_start[stream & 3])
            put_time(f, ts);
        fputc(d[i], f);
        l->line_start[stream & 3] = d[i] == '\n';
    }
    fflush(f);
}

static void logs_gap_print(logs_t *l, int stream, uint64_t skipped, uint64_t from, uint64_t to)
{
    char b[32], w[32];
    l->lost += skipped;
    if (l->ctl->json)
        json_gap(stream, skipped, from, to);
    fflush(stdout);
    ctl_human("bytes", (double)skipped, b, sizeof b);
    ctl_human("bytes", (double)l->window, w, sizeof w);
    fprintf(stderr, "sandboxctl: logs: %s of %s were dropped before this point (window %s)\n",
            b, stream == STREAM_UNSPECIFIED ? "output" : stream_name(stream), w);
}

/* A gap: said where it happens, or with --tail kept until it is known
 * whether it falls within the lines printed. */
static void logs_gap(logs_t *l, int stream, uint64_t skipped, uint64_t from, uint64_t to)
{
    /* With --stream, the other stream's gaps are not missing output. */
    int s = stream == STREAM_PTY ? STREAM_OUT : stream;
    if (l->want_stream && s != STREAM_UNSPECIFIED && s != l->want_stream)
        return;
    if (l->tail >= 0) {
        if (l->n_gaps < sizeof l->gaps / sizeof l->gaps[0])
            l->gaps[l->n_gaps++] = (gap_t){stream, skipped, from, to};
        return;
    }
    logs_gap_print(l, stream, skipped, from, to);
}

static void logs_event(logs_t *l, const OutputEvent *e)
{
    /* The agent reports output evicted before the follow began as an
     * OutputGap from byte 0; an agent that started at the oldest kept byte
     * without one shows it as a later first sequence. */
    if (e->sequence > l->next_seq)
        logs_gap(l, STREAM_UNSPECIFIED, e->sequence - l->next_seq, l->next_seq, e->sequence);
    l->next_seq = e->sequence + e->data.len;
    int s = e->stream == STREAM_PTY ? STREAM_OUT : (int)e->stream;
    if (l->want_stream && s != l->want_stream)
        return;
    if (l->since_ns && e->timestamp_unix_nano < l->since_ns)
        return;
    if (l->tail >= 0) {
        ev_t *v = realloc(l->evs, (l->n_evs + 1) * sizeof *v);
        uint8_t *d = malloc(e->data.len ? e->data.len : 1);
        if (!v || !d) {
            free(d);
            if (v)
                l->evs = v;
            return;
        }
        l->evs = v;
        memcpy(d, e->data.data, e->data.len);
        v[l->n_evs++] = (ev_t){(int)e->stream, e->sequence, e->timestamp_unix_nano,
                               e->data.len, d};
        return;
    }
    logs_print(l, (int)e->stream, e->sequence, e->timestamp_unix_nano, e->data.data,
               e->data.len);
}

/* --tail: print the last N lines of what was collected (a last line
 * without its newline counts as one). */
static void logs_flush_tail(logs_t *l)
{
    size_t sj = l->n_evs, sk = 0; /* where printing starts: nothing for --tail 0 */
    if (l->tail > 0) {
        long count = 0;
        int seen = 0, found = 0;
        sj = 0;
        for (size_t j = l->n_evs; j-- > 0 && !found;) {
            for (size_t k = l->evs[j].len; k-- > 0;) {
                if (l->evs[j].data[k] == '\n' && seen && ++count == l->tail) {
                    sj = j;
                    sk = k + 1;
                    found = 1;
                    break;
                }
                seen = 1;
            }
        }
    }
    /* Gaps within the lines printed are said first; older ones do not
     * matter to them. */
    uint64_t start = sj < l->n_evs ? l->evs[sj].seq + sk : UINT64_MAX;
    for (size_t g = 0; g < l->n_gaps; g++)
        if (l->gaps[g].to > start)
            logs_gap_print(l, l->gaps[g].stream, l->gaps[g].skipped, l->gaps[g].from,
                           l->gaps[g].to);
    l->n_gaps = 0;
    for (size_t j = sj; j < l->n_evs; j++) {
        ev_t *e = &l->evs[j];
        size_t from = j == sj ? sk : 0;
        if (from < e->len)
            logs_print(l, e->stream, e->seq + from, e->ts, e->data + from, e->len - from);
    }
    for (size_t j = 0; j < l->n_evs; j++)
        free(l->evs[j].data);
    free(l->evs);
    l->evs = NULL;
    l->n_evs = 0;
    l->tail = -1;
}

/* "90s", "5m", "2h", "1d", or a time "2026-01-02T15:04:05Z" / "2026-01-02 15:04:05"
 * (UTC) into Unix nanoseconds. */
static int parse_since(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end != s && (!*end || !end[1])) {
        double mul = !*end || *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600
                   : *end == 'd' ? 86400 : -1;
        if (mul < 0 || v < 0)
            return -1;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double t = (double)now.tv_sec + (double)now.tv_nsec / 1e9 - v * mul;
        *out = t > 0 ? (uint64_t)(t * 1e9) : 1;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!e)
        e = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    if (!e || (*e && strcmp(e, "Z")))
        return -1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *out = (uint64_t)t * 1000000000ull;
    return 0;
}

/* One FollowOutput from from_seq until done. Returns 0, 1 after an error
 * said, and the exit in *exit_out when it came. */
static int logs_follow(logs_t *l, uint32_t pid, uint64_t from_seq, int follow, int lines,
                       ProcessExit *exit_out, int *exited)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    int rc;
    f.pid = pid;
    f.from_sequence = from_seq;
    f.no_wait = !follow;
    f.lines = lines;
    req.op_case = OP(FOLLOW);
    req.follow = &f;
    if ((rc = sa_client_send(l->ctl->cli, &req)) < 0) {
        fprintf(stderr, "sandboxctl: logs: %s\n", strerror(-rc));
        return 1;
    }
    int status = 0;
    for (;;) {
        Response *r;
        if ((rc = sa_client_recv_id(l->ctl->cli, req.id, &r, -1)) < 0) {
            fprintf(stderr, "sandboxctl: logs: connection to the agent: %s\n", strerror(-rc));
            return 1;
        }
        if (r->result_case == RES(OUTPUT)) {
            logs_event(l, r->output);
        } else if (r->result_case == RES(GAP)) {
            const OutputGap *g = r->gap;
            if (g->to_sequence > l->next_seq)
                l->next_seq = g->to_sequence;
            logs_gap(l, (int)g->stream, g->skipped_bytes, g->from_sequence, g->to_sequence);
        } else if (r->result_case == RES(EXIT)) {
            *exit_out = *r->exit;
            *exited = 1;
        } else if (r->result_case == RES(ERROR)) {
            status = ctl_fail("logs", r);
        }
        int done = r->done;
        sa_response_free(r);
        if (done)
            return status;
    }
}

static int cmd_logs(ctl_t *ctl, int argc, char **argv)
{
    logs_t l;
    int follow = 0, i = 1, status;
    uint32_t pid;
    uint64_t from = 0;
    memset(&l, 0, sizeof l);
    l.ctl = ctl;
    l.tail = -1;
    for (int s = 0; s < 4; s++)
        l.line_start[s] = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "-f") || !strcmp(a, "--follow")) {
            follow = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--timestamps")) {
            l.timestamps = 1;
        } else if (!strcmp(a, "--allow-gaps")) {
            l.allow_gaps = 1;
        } else if (!strcmp(a, "--tail") || !strcmp(a, "-n")) {
            char *end;
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            l.tail = strtol(argv[++i], &end, 10);
            if (!argv[i][0] || *end || l.tail < 0)
                return ctl_usage_error(ctl, "--tail '%s': expected a number of lines", argv[i]);
        } else if (!strcmp(a, "--from")) {
            char *end;
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            from = strtoull(argv[++i], &end, 10);
            if (!argv[i][0] || *end || argv[i][0] == '-')
                return ctl_usage_error(ctl, "--from '%s': expected a position", argv[i]);
        } else if (!strcmp(a, "--since")) {
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            if (parse_since(argv[++i], &l.since_ns) < 0)
                return ctl_usage_error(ctl, "--since '%s': expected a duration (90s, 5m, 2h, "
                                            "1d) or a time (2006-01-02T15:04:05Z, UTC)", argv[i]);
        } else if (!strcmp(a, "--stream")) {
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            i++;
            if (!strcmp(argv[i], "stdout"))
                l.want_stream = STREAM_OUT;
            else if (!strcmp(argv[i], "stderr"))
                l.want_stream = STREAM_ERR;
            else
                return ctl_usage_error(ctl, "--stream '%s': expected stdout or stderr", argv[i]);
        } else if (!strcmp(a, "--")) {
            i++;
            break;
        } else {
            return ctl_usage_error(ctl, "unknown option '%s'", a);
        }
    }
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a pid or a tag" : "one process at a time");
    if (ctl_connect(ctl) < 0 || resolve(ctl, "logs", argv[i], &pid))
        return 1;
    /* The process's window, for the gap messages. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    Response *r = NULL;
    gp.pid = pid;
    req.op_case = OP(GET_PROCESS);
    req.get_process = &gp;
    if (sa_client_call(ctl->cli, &req, &r, 30000) < 0) {
        fprintf(stderr, "sandboxctl: logs: connection to the agent lost\n");
        return 1;
    }
    if (r->result_case != RES(PROCESS)) {
        status = ctl_fail("logs", r);
        sa_response_free(r);
        return status;
    }
    l.window = r->process->output_window;
    sa_response_free(r);

    ProcessExit ex = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
    int exited = 0, lines = ctl->json || l.timestamps || l.tail >= 0;
    if (ctl->json)
        setvbuf(stdout, NULL, _IOLBF, 0);
    if (l.tail >= 0) {
        /* What is kept, cut to its last lines; then (with -f) what comes. */
        status = logs_follow(&l, pid, 0, 0, 1, &ex, &exited);
        logs_flush_tail(&l);
        if (!status && follow && !exited)
            status = logs_follow(&l, pid, l.next_seq, 1, lines, &ex, &exited);
    } else {
        l.next_seq = from; /* what comes before it is not missing: it was read */
        status = logs_follow(&l, pid, from, follow, lines, &ex, &exited);
    }
    if (ctl->json && exited)
        json_exit(&ex);
    if (!status && l.lost && !l.allow_gaps) {
        char b[32];
        ctl_human("bytes", (double)l.lost, b, sizeof b);
        fprintf(stderr, "sandboxctl: logs: %s of output were missing (exit 1; --allow-gaps "
                        "accepts that)\n", b);
        status = 1;
    }
    return status;
}

/* ------------------------------------------------------------ others */

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
        return v >= 0 && v <= 64 ? (int)v : -1;
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
        if (!strcmp(argv[i], "-s")) {
            if (i + 1 == argc)
                return ctl_usage_error(ctl, "-s needs a signal");
            if ((sig = signal_number(argv[++i])) < 0)
                return ctl_usage_error(ctl, "unknown signal '%s'", argv[i]);
        } else if (!strcmp(argv[i], "-g")) {
            group = 1;
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (signal_number(argv[i] + 1) > 0) { /* kill -9, kill -KILL */
            sig = signal_number(argv[i] + 1);
        } else {
            return ctl_usage_error(ctl, "unknown option '%s'", argv[i]);
        }
    }
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a pid or a tag" : "one process at a time");
    if (ctl_connect(ctl) < 0 || resolve(ctl, "kill", argv[i], &pid))
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
    if (argc != 2)
        return ctl_usage_error(ctl, argc < 2 ? "needs a pid or a tag" : "one process at a time");
    if (ctl_connect(ctl) < 0 || resolve(ctl, "wait", argv[1], &pid))
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
        if (ctl->json) {
            printf("{\"pid\":%u,", pid);
            json_exit_fields(r->exit);
            printf("}\n");
        }
        rc = exit_status_of("wait", r->exit, NULL);
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
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a pid or a tag" : "one process at a time");
    if (ctl_connect(ctl) < 0 || resolve(ctl, "write", argv[i], &pid))
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

static int cmd_forget(ctl_t *ctl, int argc, char **argv)
{
    int rc = 0;
    if (argc < 2)
        return ctl_usage_error(ctl, "needs a pid or a tag");
    if (ctl_connect(ctl) < 0)
        return 1;
    for (int i = 1; i < argc; i++) {
        uint32_t pid;
        if (resolve(ctl, "forget", argv[i], &pid)) {
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
    {"run", cmd_run,
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
    {"start", cmd_start,
     "[-t] [-i] [-e K=V] [-w DIR] [-u USER] [--tag TAG] [--timeout S] [LIMITS] [--restart MODE] "
     "[--ready SPEC] [--health SPEC] [--] CMD [ARGS...]",
     "start a command, print its pid (with --ready: once ready)", RUN_OPTIONS CTL_SVC_OPTIONS},
    {"ps", cmd_ps, "[-a]", "list processes (-a: with exited ones)",
     "  -a, --all          the exited processes the agent still keeps too\n"},
    {"logs", cmd_logs,
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
     "  gap is reported on stderr where it happened, and the exit status is then 1.\n"},
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
