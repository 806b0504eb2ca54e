/* main.c - sandbox-agent: flags to config, listeners, signals, the loop,
 * shutdown. */
#include "config.h"
#include "conn.h"
#include "control.h"
#include "fs.h"
#include "listen.h"
#include "log.h"
#include "proc.h"

#include <ev.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ev_signal g_sigterm, g_sigint;
static ev_prepare g_prepare;
static int g_shutting_down;

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    conn_before_sleep(loop);
    (void)w;
    (void)revents;
}

static void on_processes_gone(struct ev_loop *loop)
{
    ev_break(loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (g_shutting_down) {
        log_warn("signal %d during shutdown: exiting now", w->signum);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    g_shutting_down = 1;
    log_info("signal %d: shutting down (stop accepting, cancel requests, stop processes)",
             w->signum);
    /* Stop accepting, then end every connection: a stream in flight gets no
     * more responses, which its client sees as the connection closing. */
    listen_close_all(loop);
    conn_close_all();
    fs_shutdown();
    proc_shutdown(loop, g_config.kill_grace_ms, on_processes_gone);
    (void)revents;
}

int main(int argc, char **argv)
{
    struct ev_loop *loop;
    char err[512];
    int rc = config_parse(&g_config, argc, argv);

    if (rc > 0)
        return 0;
    if (rc < 0)
        return 2;
    log_setup((enum log_level)g_config.log_level, g_config.log_json);
    control_set_start_time();

    /* A peer that vanishes mid-write must not kill the agent; children get
     * SIGPIPE back to default before exec. */
    signal(SIGPIPE, SIG_IGN);
    /* The default loop: the only one that may watch children. */
    loop = ev_default_loop(EVFLAG_AUTO | EVFLAG_NOENV);
    if (!loop) {
        fprintf(stderr, "sandbox-agent: cannot initialise the event loop\n");
        return 1;
    }
    if ((rc = proc_init(loop)) < 0) {
        log_error("process table: %s", strerror(-rc));
        return 1;
    }
    if ((rc = fs_init(loop)) < 0) {
        log_error("file operations: %s", strerror(-rc));
        return 1;
    }
    for (int i = 0; i < g_config.n_listen; i++) {
        if (listen_add(loop, g_config.listen[i], err, sizeof err) < 0) {
            log_error("cannot listen: %s", err);
            listen_close_all(loop);
            return 1;
        }
    }
    ev_signal_init(&g_sigterm, on_signal, SIGTERM);
    ev_signal_init(&g_sigint, on_signal, SIGINT);
    ev_signal_start(loop, &g_sigterm);
    ev_signal_start(loop, &g_sigint);
    ev_prepare_init(&g_prepare, on_prepare);
    ev_prepare_start(loop, &g_prepare);

    {
        char where[1024] = "";
        size_t o = 0;
        for (int i = 0; i < g_config.n_listen && o < sizeof where; i++)
            o += (size_t)snprintf(where + o, sizeof where - o, "%s%s", i ? ", " : "",
                                  g_config.listen[i]);
        log_info("sandbox-agent %s listening on %s (pid %d%s)", SANDBOX_AGENT_VERSION, where,
                 (int)getpid(), g_config.token[0] ? ", token required" : "");
    }
    if (g_config.ready_fd >= 0) {
        if (write(g_config.ready_fd, "READY=1\n", 8) < 0)
            log_warn("--ready-fd %d: %s", g_config.ready_fd, strerror(errno));
        close(g_config.ready_fd);
    }

    ev_run(loop, 0);

    listen_close_all(loop);
    conn_close_all();
    conn_before_sleep(loop);
    log_info("sandbox-agent stopped");
    return 0;
}
