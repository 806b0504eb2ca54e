/* config.h - every setting of the agent in one struct, filled from flags,
 * the environment and the kernel command line. Parsing only: no side
 * effects beyond reading the token file.
 * Errors: config_parse says what is wrong on stderr and returns -1. */
#ifndef SA_CONFIG_H
#define SA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_DEFAULT_VSOCK_PORT 1024u
#define CONFIG_MAX_TUNNEL_ALLOW 32
#define CONFIG_DEFAULT_HOOKS_DIR "/etc/sandbox-agent/hooks"
#define CONFIG_MAX_THAW_AFTER_MS 600000u

typedef struct config {
    const char *listen[CONFIG_MAX_LISTEN]; /* "unix:PATH", "tcp:HOST:PORT", "vsock:PORT" */
    int n_listen;
    int log_level;
    int log_json;
    uint32_t max_frame_size;        /* bytes of one frame's payload */
    uint32_t max_connections;
    uint32_t max_inflight;          /* streams in flight per connection */
    size_t conn_queue_high;         /* output queue: stop pulling streams above this */
    uint32_t max_processes;         /* running at once */
    uint64_t default_output_window; /* per process, bytes kept for replay */
    uint64_t max_kept_output;       /* all processes together */
    uint32_t exited_ttl_s;          /* exited processes are forgotten after this */
    uint32_t kill_grace_ms;         /* SIGTERM to SIGKILL, timeouts and shutdown */
    uint32_t write_timeout_s;       /* close a connection whose queue has not moved */
    uint32_t hello_timeout_s;       /* close a connection not authenticated by then (0: never) */
    uint32_t max_watch_dirs;        /* directories one recursive watch may add */
    char token[256];                /* empty: no authentication */
    int insecure;                   /* allow TCP without a token */
    uint32_t socket_mode;
    const char *socket_group;
    int ready_fd;                   /* -1: none */
    int oom_score_adj;              /* wanted for the agent itself, -1000..1000 */
    int oom_score_adj_set;          /* given on the command line */
    int nice;                       /* the agent's own nice value; children get 0 */
    int nice_set;                   /* given on the command line */
    const char *services_dir;       /* services started at boot; "" none */
    int services_dir_set;           /* given on the command line */
    const char *tunnel_allow[CONFIG_MAX_TUNNEL_ALLOW]; /* --tunnel-allow rules; none: any */
    int n_tunnel_allow;
    int no_tunnels;                 /* --no-tunnels */
    uint32_t max_tunnels;           /* open at once, all connections together */
    uint32_t max_tunnels_per_conn;  /* multiplexed tunnels on one connection */
    uint32_t tunnel_window;         /* the agent's receive window per tunnel */
    uint32_t max_tunnel_window;     /* the largest OpenTunnel.window granted */
    /* lifecycle (lifecycle.c) */
    uint32_t thaw_after_ms;         /* Quiesce's automatic thaw by default */
    const char *hooks_dir;          /* holds pre-checkpoint.d and post-restore.d */
    uint32_t hook_timeout_ms;       /* one hook's time limit */
    uint32_t clock_jump_ms;         /* wall clock jump taken as a restore; 0: off */
    uint32_t clock_check_ms;        /* how often the clocks are compared */
    const char *clock_test_file;    /* tests: read the clocks (and the RTC) from here */
    const char *kmsg_path;          /* the kernel log read for a VM fork; NULL: off */
    const char *rtc_path;           /* the RTC compared with the wall clock; NULL: off */
    const char *cgroup_root;        /* --cgroup-root: the subtree to manage */
    int no_cgroups;                 /* --no-cgroups: process groups only */
    uint32_t default_pids_max;      /* limits every process gets unless it asks */
    uint64_t default_memory_max;
    uint64_t default_memory_swap_max;
    uint32_t default_cpu_max_millicores;
} config_t;

extern config_t g_config;

/* Fill cfg from argv, environment and /proc/cmdline. Returns 0 to run,
 * 1 when --help/--version was printed (exit 0), -1 after printing an error
 * (exit 2). $SANDBOX_AGENT_TOKEN is removed from the environment and its
 * bytes wiped from the initial environment block (/proc/self/environ), so
 * neither children nor readers of /proc see it. */
int config_parse(config_t *cfg, int argc, char **argv);
void config_defaults(config_t *cfg);

#endif
