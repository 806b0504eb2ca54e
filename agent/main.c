/* main.c - sandbox-agent: flags to config, listeners, signals, the loop,
 * shutdown; the agent's own OOM score, readiness (--ready-fd and
 * $NOTIFY_SOCKET) and the rules for running as PID 1.
 * Errors: a module that cannot start is logged and the agent exits 1; a
 * wrong command line exits 2. */
#include "cgroup.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "dispatch.h"
#include "freeze.h"
#include "fs.h"
#include "lifecycle.h"
#include "listen.h"
#include "log.h"
#include "prio.h"
#include "proc.h"
#include "service.h"
#include "tunnel.h"
#include "util.h"
#include "watch.h"

#include <ev.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static ev_signal g_sigterm, g_sigint;
static ev_prepare g_prepare;
static int g_shutting_down;
static char g_notify_socket[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];

/* Signals a user process might send that would end the agent by default.
 * They are logged and otherwise ignored: a handler, not SIG_IGN, because an
 * ignored disposition would be inherited by every command the agent runs. */
static const int g_benign_signals[] = {SIGHUP, SIGUSR1, SIGUSR2};
/* As PID 1 the kernel already drops default-action signals sent from inside
 * the namespace; these get a handler anyway, so they show in the log. */
static const int g_init_signals[] = {SIGQUIT, SIGALRM, SIGVTALRM, SIGPROF, SIGPWR};
static ev_signal g_benign_w[SA_ARRAY_LEN(g_benign_signals) + SA_ARRAY_LEN(g_init_signals)];

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    conn_before_sleep(loop);
}

static void on_processes_gone(struct ev_loop *loop)
{
    ev_break(loop, EVBREAK_ALL);
}

/* sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or
 * an abstract name starting with '@'). Best effort: readiness is also
 * visible as the socket accepting. */
static void notify(const char *msg)
{
    struct sockaddr_un sa;
    size_t len = strlen(g_notify_socket);
    int fd;

    if (!len)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, g_notify_socket, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
        log_warn("NOTIFY_SOCKET: socket: %s", strerror(errno));
        return;
    }
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        log_warn("NOTIFY_SOCKET '%s': %s", g_notify_socket, strerror(errno));
    close(fd);
}

/* Take $NOTIFY_SOCKET for ourselves: the commands we run must not tell the
 * service manager they are the agent. */
static void notify_setup(void)
{
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ns && (ns[0] == '/' || ns[0] == '@') && strlen(ns) < sizeof g_notify_socket - 1)
        snprintf(g_notify_socket, sizeof g_notify_socket, "%s", ns);
    else if (ns && ns[0])
        log_warn("NOTIFY_SOCKET '%s': not a path or abstract name; ignored", ns);
    unsetenv("NOTIFY_SOCKET");
}

static int oom_write(int fd, int v)
{
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%d", v);
    if (lseek(fd, 0, SEEK_SET) < 0)
        return -errno;
    return write(fd, buf, (size_t)n) == n ? 0 : -errno;
}

/* Make the kernel's OOM killer pick user processes before the agent, which
 * must keep answering when the workload eats the memory. Lowering needs
 * CAP_SYS_RESOURCE; without it, the lowest value the kernel allows (the
 * minimum a privileged ancestor set) is found by bisection. Children set
 * their own back to 0 before exec. */
static void oom_adjust(int want)
{
    char buf[16] = "";
    int fd = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
    int cur, rc;

    if (fd < 0) {
        log_warn("oom_score_adj: /proc/self/oom_score_adj: %s; left as is", strerror(errno));
        return;
    }
    if (read(fd, buf, sizeof buf - 1) <= 0) {
        log_warn("oom_score_adj: read: %s; left as is", strerror(errno));
        close(fd);
        return;
    }
    cur = atoi(buf);
    if ((rc = oom_write(fd, want)) == 0) {
        log_info("oom_score_adj set to %d (was %d)", want, cur);
    } else if ((rc == -EACCES || rc == -EPERM) && want < cur) {
        int lo = want, hi = cur; /* lo refused, hi allowed */
        while (hi - lo > 1) {
            int mid = lo + (hi - lo) / 2;
            if (oom_write(fd, mid) == 0)
                hi = mid;
            else
                lo = mid;
        }
        oom_write(fd, hi);
        log_info("oom_score_adj %d needs CAP_SYS_RESOURCE; set to %d, the lowest allowed "
                 "(was %d)", want, hi, cur);
    } else {
        log_warn("oom_score_adj %d: %s; left at %d", want, strerror(-rc), cur);
    }
    close(fd);
}

static void on_benign_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("signal %d (%s) ignored: only SIGTERM and SIGINT stop the agent", w->signum,
             strsignal(w->signum));
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (g_shutting_down) {
        log_warn("signal %d (%s) during shutdown: exiting now", w->signum,
                 strsignal(w->signum));
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    g_shutting_down = 1;
    notify("STOPPING=1");
    log_info("signal %d (%s): shutting down (stop accepting, cancel requests, stop processes)",
             w->signum, strsignal(w->signum));
    /* Stop accepting, then end every connection: each request in flight is
     * answered UNAVAILABLE. File workers still busy (one the kernel keeps
     * waiting) are given up on after the loop, never waited for here. */
    listen_close_all(loop);
    conn_shutdown_all();
    tunnel_close_all();
    /* A freeze must not outlive the agent: thaw now (file workers writing
     * to a frozen file system get through once it is thawed). */
    lc_shutdown();
    proc_shutdown(loop, g_config.kill_grace_ms, on_processes_gone);
}

/* The process itself, before any module: readiness fd, log, $NOTIFY_SOCKET,
 * OOM score, priority, SIGPIPE. 0, or the exit code. */
static int setup_process(void)
{
    /* A wrong --ready-fd is a mistake in the caller's command line: say so
     * now rather than leave the caller waiting for a readiness never sent.
     * Close-on-exec, so no child inherits it. */
    if (g_config.ready_fd >= 0 && fcntl(g_config.ready_fd, F_SETFD, FD_CLOEXEC) < 0) {
        fprintf(stderr, "sandbox-agent: --ready-fd %d: %s\n", g_config.ready_fd,
                strerror(errno));
        return 2;
    }
    log_setup((enum log_level)g_config.log_level, g_config.log_json);
    control_set_start_time();
    notify_setup();
    if (getpid() == 1)
        log_info("running as PID 1: reaping orphans; SIGTERM/SIGINT shut down; other signals "
                 "are ignored; nothing is mounted");
    oom_adjust(g_config.oom_score_adj);
    /* Only when asked: a higher priority all the time makes the agent
     * preempt a process at every write to its pipe and read its output in
     * smaller pieces (measured: streaming 1.8x -> 1.0x of socat at -10).
     * Without --nice the loop is raised only while processes start (prio.h).
     * Children are put back to 0 before exec whatever the agent runs at. */
    if (g_config.nice_set) {
        if (setpriority(PRIO_PROCESS, 0, g_config.nice) == 0)
            log_info("nice set to %d", g_config.nice);
        else
            log_info("nice %d: %s; left at %d", g_config.nice, strerror(errno),
                     getpriority(PRIO_PROCESS, 0));
    }
    /* A peer that vanishes mid-write must not kill the agent; children get
     * SIGPIPE back to default before exec. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Every module on the loop, then the listeners. 0 or -1 (logged). */
static int start_modules(struct ev_loop *loop)
{
    char err[512];
    int rc;
    cg_init(loop);
    freeze_init(loop);
    prio_init(loop, !g_config.nice_set);
    if ((rc = proc_init(loop)) < 0) {
        log_error("process table: %s", strerror(-rc));
        return -1;
    }
    if ((rc = fs_init(loop)) < 0) {
        log_error("file operations: %s", strerror(-rc));
        return -1;
    }
    watch_init(loop);
    conn_set_request_handler(dispatch_request);
    tunnel_init(loop);
    if ((rc = lc_init(loop)) < 0) {
        log_error("lifecycle: %s", strerror(-rc));
        return -1;
    }
    for (int i = 0; i < g_config.n_listen; i++) {
        if (listen_add(loop, g_config.listen[i], err, sizeof err) < 0) {
            log_error("cannot listen: %s", err);
            listen_close_all(loop);
            return -1;
        }
    }
    return 0;
}

/* SIGTERM and SIGINT stop the agent; the benign ones are logged. */
static void start_signals(struct ev_loop *loop)
{
    size_t n = 0;
    ev_signal_init(&g_sigterm, on_signal, SIGTERM);
    ev_signal_init(&g_sigint, on_signal, SIGINT);
    ev_signal_start(loop, &g_sigterm);
    ev_signal_start(loop, &g_sigint);
    /* ev_signal_init is a macro that names its watcher more than once. */
    for (size_t i = 0; i < SA_ARRAY_LEN(g_benign_signals); i++, n++)
        ev_signal_init(&g_benign_w[n], on_benign_signal, g_benign_signals[i]);
    if (getpid() == 1)
        for (size_t i = 0; i < SA_ARRAY_LEN(g_init_signals); i++, n++)
            ev_signal_init(&g_benign_w[n], on_benign_signal, g_init_signals[i]);
    for (size_t i = 0; i < n; i++)
        ev_signal_start(loop, &g_benign_w[i]);
}

/* Tell the log, --ready-fd and the service manager that we answer. */
static void announce_ready(void)
{
    char where[1024], msg[64];
    listen_describe(where, sizeof where);
    log_info("sandbox-agent %s ready on %s (pid %d, %s)", SANDBOX_AGENT_VERSION, where,
             (int)getpid(), g_config.token[0] ? "token required" : "no token");
    if (g_config.ready_fd >= 0) {
        if (write(g_config.ready_fd, "READY=1\n", 8) < 0)
            log_warn("--ready-fd %d: %s", g_config.ready_fd, strerror(errno));
        close(g_config.ready_fd);
    }
    snprintf(msg, sizeof msg, "READY=1\nMAINPID=%d", (int)getpid());
    notify(msg);
}

int main(int argc, char **argv)
{
    struct ev_loop *loop;
    int rc = config_parse(&g_config, argc, argv);

    if (rc > 0)
        return 0;
    if (rc < 0)
        return 2;
    if ((rc = setup_process()) != 0)
        return rc;
    /* The default loop: the only one that may watch children. */
    loop = ev_default_loop(EVFLAG_AUTO | EVFLAG_NOENV);
    if (!loop) {
        fprintf(stderr, "sandbox-agent: cannot initialise the event loop\n");
        return 1;
    }
    if (start_modules(loop) < 0)
        return 1;
    start_signals(loop);
    ev_prepare_init(&g_prepare, on_prepare);
    ev_prepare_start(loop, &g_prepare);
    announce_ready();
    /* Services declared at boot start once the agent answers: a slow or
     * broken one delays nobody's connection. */
    svc_start_dir(g_config.services_dir, !g_config.services_dir_set);
    /* What start-up used and freed, on the heap and deep in the stack, is
     * not kept dirty while the agent idles. */
    util_trim();
    util_stack_release();
    util_heap_keep();

    ev_run(loop, 0);

    listen_close_all(loop);
    conn_close_all();
    tunnel_close_all();
    conn_before_sleep(loop);
    /* The workers had the processes' grace already; a second is plenty for
     * what is left, and one stuck in the kernel does not hold the exit. */
    fs_shutdown(1000);
    cg_cleanup();
    log_info("sandbox-agent stopped");
    return 0;
}
