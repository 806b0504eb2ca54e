/* ctl_run.c - sandboxctl's run and start: a command line's options into a
 * StartProcess, and for run the pump between the terminal and the followed
 * process (output, stdin, Ctrl-C, window size, detaching). */
#include "ctl_proc.h"

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


/* A flag of run and start: 1 when a is one (set in o), else 0. */
static int run_flag(const char *a, run_opts_t *o)
{
    if (!strcmp(a, "--tty") || !strcmp(a, "-t"))
        o->tty = 1;
    else if (!strcmp(a, "--stdin") || !strcmp(a, "-i"))
        o->stdin_pipe = 1;
    else if (!strcmp(a, "-it") || !strcmp(a, "-ti"))
        o->tty = o->stdin_pipe = 1;
    else if (!strcmp(a, "--keep"))
        o->keep = 1;
    else
        return 0;
    return 1;
}

/* The options of run and start that take a value (but ctl_svc's). */
static const char *const g_valued[] = {"--env", "-e", "--cwd", "-w", "--user", "-u", "--tag",
                                       "--timeout", "--memory-max", "--pids-max", "--cpu-max"};

static int run_env(ctl_t *ctl, char *kv, run_opts_t *o)
{
    char *eq = strchr(kv, '=');
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
    return 0;
}

/* --memory-max B, --pids-max N, --cpu-max MILLICORES. */
static int run_limit(ctl_t *ctl, const char *a, const char *v, run_opts_t *o)
{
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    int mem = !strcmp(a, "--memory-max");
    if (!v[0] || v[0] == '-' || *end || !n || (!mem && n > 0xffffffffull))
        return ctl_usage_error(ctl, "%s '%s': expected a positive number", a, v), -1;
    if (mem)
        o->limits.memory_max_bytes = n;
    else if (!strcmp(a, "--pids-max"))
        o->limits.pids_max = (uint32_t)n;
    else
        o->limits.cpu_max_millicores = (uint32_t)n;
    o->has_limits = 1;
    return 0;
}

/* One of g_valued with its value v: 0, or -1 after a usage error. */
static int run_value(ctl_t *ctl, const char *a, char *v, run_opts_t *o)
{
    if (!strcmp(a, "--env") || !strcmp(a, "-e"))
        return run_env(ctl, v, o);
    if (!strcmp(a, "--cwd") || !strcmp(a, "-w")) {
        o->cwd = v;
    } else if (!strcmp(a, "--user") || !strcmp(a, "-u")) {
        o->user = v;
    } else if (!strcmp(a, "--tag")) {
        o->tag = v;
    } else if (!strcmp(a, "--timeout")) {
        char *end;
        o->timeout_arg = v;
        o->timeout_s = strtod(v, &end);
        if (!v[0] || *end || o->timeout_s <= 0 || o->timeout_s > 4294967)
            return ctl_usage_error(ctl, "--timeout '%s': expected seconds (more than 0)", v), -1;
    } else {
        return run_limit(ctl, a, v, o);
    }
    return 0;
}

static int is_valued(const char *a)
{
    for (size_t k = 0; k < sizeof g_valued / sizeof g_valued[0]; k++)
        if (!strcmp(a, g_valued[k]))
            return 1;
    return 0;
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
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ctl_cmd_help(ctl->cmd, stdout);
            return 0;
        }
        if (run_flag(a, o))
            continue;
        if ((svc = ctl_svc_option(&o->svc, argc, argv, &i)) != 0) {
            if (svc < 0)
                return -1;
            continue;
        }
        if (!is_valued(a))
            return ctl_usage_error(ctl, "unknown option '%s'", a), -1;
        if (i + 1 == argc)
            return ctl_usage_error(ctl, "option '%s' needs a value", a), -1;
        if (run_value(ctl, a, argv[++i], o) < 0)
            return -1;
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
                ctl_proc_json_output((int)e->stream, e->sequence, e->timestamp_unix_nano,
                                     e->data.data, e->data.len);
            else
                emit(e);
        } else if (r->result_case == RES(GAP)) {
            /* This follower fell behind the window: said, never silent. */
            const OutputGap *g = r->gap;
            char b[32];
            ctl_human("bytes", (double)g->skipped_bytes, b, sizeof b);
            if (p->ctl->json)
                ctl_proc_json_gap((int)g->stream, g->skipped_bytes, g->from_sequence,
                                  g->to_sequence);
            fprintf(stderr, "%ssandboxctl: run: %s of %s were dropped here (read slower than "
                            "the process wrote, beyond its output window)%s\n",
                    p->o->tty ? "\r\n" : "", b,
                    g->stream == STREAM_UNSPECIFIED ? "output"
                                                    : ctl_proc_stream_name((int)g->stream),
                    p->o->tty ? "\r" : "");
        } else if (r->result_case == RES(EXIT) && r->done) { /* a service: its last run */
            if (p->ctl->json)
                ctl_proc_json_exit(r->exit);
            p->status = ctl_proc_exit_status("run", r->exit, p->o->timeout_arg);
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

/* A signal to sandboxctl, taken from the pipe on_sig wrote it to: Ctrl-C
 * goes to the group (twice within a second: detach), a window size
 * change to the pty; SIGTERM and SIGHUP end the remote group too.
 * Returns 1 when the pump ends. */
static int pump_signal(pump_t *p)
{
    sig_note_t n;
    if (read(g_sigpipe[0], &n, sizeof n) != (ssize_t)sizeof n)
        return 0;
    if (n.sig == SIGINT) {
        double t = (double)n.at.tv_sec + (double)n.at.tv_nsec / 1e9;
        if (t - p->last_int < 1.0) {
            pump_detach(p, "Ctrl-C twice");
            return 1;
        }
        p->last_int = t;
        send_signal(p->ctl, p->pid, SIGINT, 1);
    } else if (n.sig == SIGWINCH && p->o->tty) {
        send_resize(p->ctl, p->pid);
    } else if (n.sig == SIGTERM || n.sig == SIGHUP) {
        pump_abandon(p, n.sig);
        return 1;
    }
    return 0;
}

/* Our stdin to the process's (raw: a terminal in raw mode, with the
 * escape); at its end, close the process's. Returns 1 when the pump ends
 * (detached), and clears *open at the end of stdin. */
static int pump_stdin(pump_t *p, int raw, int *open)
{
    static char buf[STDIN_CHUNK];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n > 0) {
        if (raw)
            return tty_input(p, buf, (size_t)n);
        send_write(p->ctl, p->pid, buf, (size_t)n);
        p->inflight++;
    } else if (n == 0 || errno != EINTR) {
        *open = 0;
        send_close(p->ctl, p->pid);
    }
    return 0;
}

static const int g_pump_sigs[] = {SIGINT, SIGWINCH, SIGTERM, SIGHUP};

/* Catch the signals into g_sigpipe and, for a tty, put our terminal in raw
 * mode (*raw set, saved kept to restore). -1 when the pipe cannot be had. */
static int pump_setup(const run_opts_t *o, struct termios *saved, int *raw)
{
    struct sigaction sa;
    if (pipe2(g_sigpipe, O_CLOEXEC) < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    for (size_t i = 0; i < sizeof g_pump_sigs / sizeof g_pump_sigs[0]; i++)
        sigaction(g_pump_sigs[i], &sa, NULL);
    *raw = 0;
    if (o->tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, saved) == 0) {
        struct termios t = *saved;
        cfmakeraw(&t);
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
            *raw = 1;
    }
    return 0;
}

static void pump_teardown(const struct termios *saved, int raw)
{
    if (raw)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, saved);
    for (size_t i = 0; i < sizeof g_pump_sigs / sizeof g_pump_sigs[0]; i++)
        signal(g_pump_sigs[i], SIG_DFL);
    close(g_sigpipe[0]);
    close(g_sigpipe[1]);
}

/* Stream a followed process (the request main_id) until its exit: output to
 * stdout/stderr, the CLI's stdin to the process (tty or -i), Ctrl-C as
 * SIGINT (twice within a second: detach), window size changes; SIGTERM and
 * SIGHUP end the remote group too. Returns the exit status for the CLI. */
static int pump_process(ctl_t *ctl, uint64_t main_id, uint32_t pid, const run_opts_t *o)
{
    struct termios saved;
    int raw, stdin_open = o->tty || o->stdin_pipe;
    pump_t p = {ctl, main_id, pid, o, 1, 0, 0, -10, 1};

    if (pump_setup(o, &saved, &raw) < 0)
        return 1;
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
        if ((pf[1].revents & POLLIN) && pump_signal(&p))
            break;
        if ((pf[2].revents & (POLLIN | POLLHUP)) && pump_stdin(&p, raw, &stdin_open))
            break;
    }
    pump_teardown(&saved, raw);
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

int ctl_run_cmd_run(ctl_t *ctl, int argc, char **argv) { return do_start(ctl, argc, argv, 1); }
int ctl_run_cmd_start(ctl_t *ctl, int argc, char **argv) { return do_start(ctl, argc, argv, 0); }
