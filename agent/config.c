/* config.c - the agent's settings: the option table (name, kind, field,
 * range, help) drives parsing, checking and --help; then the token and the
 * default socket. See config.h.
 * Errors: parsing says what is wrong on stderr and returns -1 (the agent
 * exits 2); nothing is logged, the log is not set up yet. */
#include "config.h"

#include "defaults.h"
#include "frame.h"
#include "log.h"
#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

config_t g_config;

void config_defaults(config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->log_level = LOG_INFO;
    cfg->max_frame_size = FRAME_DEFAULT_MAX;
    cfg->max_connections = 1024;
    cfg->max_inflight = 1024;
    cfg->conn_queue_high = 1u << 20;
    cfg->max_processes = 4096;
    cfg->default_output_window = 4u << 20;
    cfg->max_kept_output = 256u << 20;
    cfg->exited_ttl_s = 3600;
    cfg->kill_grace_ms = 5000;
    cfg->write_timeout_s = 120;
    cfg->hello_timeout_s = 10;
    cfg->max_watch_dirs = 16384;
    cfg->socket_mode = 0600;
    cfg->ready_fd = -1;
    cfg->oom_score_adj = -1000;
    cfg->services_dir = SA_SERVICES_DIR;
    cfg->max_tunnels = 1024;
    cfg->max_tunnels_per_conn = 256;
    cfg->tunnel_window = 256u << 10;
    cfg->max_tunnel_window = 16u << 20;
    cfg->thaw_after_ms = 10000;
    cfg->hooks_dir = CONFIG_DEFAULT_HOOKS_DIR;
    cfg->hook_timeout_ms = 30000;
    cfg->clock_jump_ms = 5000;
    cfg->clock_check_ms = 1000;
    cfg->kmsg_path = "/dev/kmsg";
    cfg->rtc_path = "/dev/rtc0";
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "sandbox-agent: %s: '%s' is not a number in [%llu, %llu]\n", opt, s,
                (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_i64(const char *opt, const char *s, long long min, long long max,
                     long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "sandbox-agent: %s: '%s' is not a number in [%lld, %lld]\n", opt, s,
                min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Permissions are octal whether or not they start with 0, as chmod reads
 * them; "999" or "0x1ff" are mistakes, not mode 0. */
static int parse_mode(const char *opt, const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (errno || end == s || *end || s[0] == '-' || s[0] == '+' || v > 07777) {
        fprintf(stderr, "sandbox-agent: %s: '%s' is not an octal mode in [0, 7777]\n", opt, s);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Store a token from any source. Trailing white space (the newline editors
 * add) is dropped; a token that would not fit is refused rather than cut,
 * since a cut token would refuse every client that sends the whole one. */
static int set_token(config_t *cfg, const char *src, size_t len, const char *where)
{
    while (len && (src[len - 1] == '\n' || src[len - 1] == '\r' || src[len - 1] == ' ' ||
                   src[len - 1] == '\t'))
        len--;
    if (memchr(src, 0, len)) {
        fprintf(stderr, "sandbox-agent: %s: the token contains a NUL byte\n", where);
        return -1;
    }
    if (len >= sizeof cfg->token) {
        fprintf(stderr, "sandbox-agent: %s: the token is longer than %zu bytes\n", where,
                sizeof cfg->token - 1);
        return -1;
    }
    if (!len) {
        fprintf(stderr, "sandbox-agent: %s: the token is empty\n", where);
        return -1;
    }
    memcpy(cfg->token, src, len);
    cfg->token[len] = 0;
    return 0;
}

static int read_token_file(config_t *cfg, const char *path)
{
    char buf[sizeof cfg->token + 64], where[300];
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

    snprintf(where, sizeof where, "--token-file '%s'", path);
    if (fd < 0) {
        fprintf(stderr, "sandbox-agent: %s: %s\n", where, strerror(errno));
        return -1;
    }
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            fprintf(stderr, "sandbox-agent: %s: %s\n", where, strerror(e));
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    rc = set_token(cfg, buf, n, where);
    /* The copy on the stack is not left behind. */
    memset(buf, 0, sizeof buf);
    return rc;
}

/* Remove $SANDBOX_AGENT_TOKEN from the environment. unsetenv() only drops
 * the pointer: the bytes stay in the block the kernel copied at exec, which
 * /proc/PID/environ shows, so they are overwritten first. */
static void scrub_env_token(void)
{
    static const char key[] = "SANDBOX_AGENT_TOKEN=";
    char *found[8];
    size_t n = 0;
    for (char **e = environ; e && *e && n < sizeof found / sizeof found[0]; e++)
        if (!strncmp(*e, key, sizeof key - 1))
            found[n++] = *e;
    /* unsetenv first: it finds the entries by name, which the wipe erases. */
    unsetenv("SANDBOX_AGENT_TOKEN");
    for (size_t i = 0; i < n; i++)
        memset(found[i], 0, strlen(found[i]));
}

/* sandbox_agent.token=... on the kernel command line, for images whose boot
 * configuration is the only channel the control plane has. */
static int token_from_cmdline(config_t *cfg)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " \t\n", &save); tok;
         tok = strtok_r(NULL, " \t\n", &save)) {
        if (!strncmp(tok, "sandbox_agent.token=", 20)) {
            rc = set_token(cfg, tok + 20, strlen(tok + 20),
                           "sandbox_agent.token= (kernel command line)");
            break;
        }
    }
    memset(buf, 0, sizeof buf);
    return rc;
}

/* ------------------------------------------------------------ the options */

/* Options whose value needs more than a range check. Each returns 0, or -1
 * after printing why. */
static int have_token_file;

static int opt_listen(config_t *cfg, const char *arg)
{
    if (cfg->n_listen == CONFIG_MAX_LISTEN) {
        fprintf(stderr, "sandbox-agent: at most %d --listen addresses\n", CONFIG_MAX_LISTEN);
        return -1;
    }
    /* Bare "vsock" means the documented default port. */
    if (!strcmp(arg, "vsock") || !strcmp(arg, "vsock:")) {
        static char vdef[CONFIG_MAX_LISTEN][24];
        snprintf(vdef[cfg->n_listen], sizeof vdef[0], "vsock:%u", CONFIG_DEFAULT_VSOCK_PORT);
        cfg->listen[cfg->n_listen] = vdef[cfg->n_listen];
        cfg->n_listen++;
        return 0;
    }
    if (strncmp(arg, "unix:", 5) && strncmp(arg, "tcp:", 4) && strncmp(arg, "vsock:", 6)) {
        fprintf(stderr,
                "sandbox-agent: --listen '%s': expected unix:PATH, tcp:HOST:PORT or vsock:PORT\n",
                arg);
        return -1;
    }
    cfg->listen[cfg->n_listen++] = arg;
    return 0;
}

static int opt_token_file(config_t *cfg, const char *arg)
{
    if (read_token_file(cfg, arg) < 0)
        return -1;
    have_token_file = 1;
    return 0;
}

static int opt_socket_mode(config_t *cfg, const char *arg)
{
    return parse_mode("--socket-mode", arg, &cfg->socket_mode);
}

static int opt_socket_group(config_t *cfg, const char *arg)
{
    if (!arg[0]) {
        fprintf(stderr, "sandbox-agent: --socket-group: empty group name\n");
        return -1;
    }
    cfg->socket_group = arg;
    return 0;
}

/* A signed value in [min, max] into *field, and *set says it was given. */
static int opt_int(const char *flag, const char *arg, long long min, long long max, int *field,
                   int *set)
{
    long long v;
    if (parse_i64(flag, arg, min, max, &v) < 0)
        return -1;
    *field = (int)v;
    *set = 1;
    return 0;
}

static int opt_nice(config_t *cfg, const char *arg)
{
    return opt_int("--nice", arg, -20, 19, &cfg->nice, &cfg->nice_set);
}

static int opt_oom(config_t *cfg, const char *arg)
{
    return opt_int("--oom-score-adj", arg, -1000, 1000, &cfg->oom_score_adj,
                   &cfg->oom_score_adj_set);
}

static int opt_services_dir(config_t *cfg, const char *arg)
{
    cfg->services_dir = arg;
    cfg->services_dir_set = 1;
    return 0;
}

static int opt_log_level(config_t *cfg, const char *arg)
{
    if ((cfg->log_level = log_level_parse(arg)) < 0) {
        fprintf(stderr, "sandbox-agent: --log-level '%s': expected debug, info, warn or error\n",
                arg);
        return -1;
    }
    return 0;
}

static int opt_log_format(config_t *cfg, const char *arg)
{
    if (strcmp(arg, "json") && strcmp(arg, "text")) {
        fprintf(stderr, "sandbox-agent: --log-format '%s': expected text or json\n", arg);
        return -1;
    }
    cfg->log_json = !strcmp(arg, "json");
    return 0;
}

static int opt_tunnel_allow(config_t *cfg, const char *arg)
{
    target_rule_t rule;
    char err[300];
    if (cfg->n_tunnel_allow == CONFIG_MAX_TUNNEL_ALLOW) {
        fprintf(stderr, "sandbox-agent: at most %d --tunnel-allow rules\n",
                CONFIG_MAX_TUNNEL_ALLOW);
        return -1;
    }
    if (target_rule_parse(arg, &rule, err, sizeof err) < 0) {
        fprintf(stderr, "sandbox-agent: --tunnel-allow: %s\n", err);
        return -1;
    }
    cfg->tunnel_allow[cfg->n_tunnel_allow++] = arg;
    return 0;
}

/* 0 when arg is an absolute path, else -1, said on stderr; also names what
 * else the flag takes (" or 'off'"). */
static int need_abs_path(const char *flag, const char *arg, const char *also)
{
    if (arg[0] == '/')
        return 0;
    fprintf(stderr, "sandbox-agent: %s '%s': expected an absolute path%s\n", flag, arg, also);
    return -1;
}

static int opt_hooks_dir(config_t *cfg, const char *arg)
{
    if (need_abs_path("--hooks-dir", arg, "") < 0)
        return -1;
    cfg->hooks_dir = arg;
    return 0;
}

static int opt_clock_test_file(config_t *cfg, const char *arg)
{
    cfg->clock_test_file = arg;
    return 0;
}

/* PATH or "off" (NULL). */
static int opt_path_or_off(const char *opt, const char *arg, const char **out)
{
    if (!strcmp(arg, "off")) {
        *out = NULL;
        return 0;
    }
    if (need_abs_path(opt, arg, " or 'off'") < 0)
        return -1;
    *out = arg;
    return 0;
}

static int opt_kmsg(config_t *cfg, const char *arg)
{
    return opt_path_or_off("--kmsg", arg, &cfg->kmsg_path);
}

static int opt_rtc(config_t *cfg, const char *arg)
{
    return opt_path_or_off("--rtc", arg, &cfg->rtc_path);
}

static int opt_cgroup_root(config_t *cfg, const char *arg)
{
    if (need_abs_path("--cgroup-root", arg, "") < 0)
        return -1;
    cfg->cgroup_root = arg;
    return 0;
}

typedef enum opt_kind {
    OPT_NUM,     /* an unsigned field of 4 or 8 bytes, range-checked */
    OPT_BYTES,   /* the same, its default shown in KiB/MiB */
    OPT_FLAG,    /* an int field set to 1 */
    OPT_FN,      /* fn parses and stores */
    OPT_HELP,
    OPT_VERSION,
} opt_kind_t;

typedef struct opt {
    const char *name; /* without the dashes */
    const char *arg;  /* the value's name in --help; NULL: takes none */
    opt_kind_t kind;
    size_t off, size; /* OPT_NUM, OPT_BYTES, OPT_FLAG: the field in config_t */
    uint64_t min, max;
    int (*fn)(config_t *cfg, const char *arg);
    /* --help text. For numbers, "(default ...)" is added from
     * config_defaults(), so the two cannot drift. NULL: for tests, not
     * shown. */
    const char *help;
} opt_t;

#define FIELD(f) offsetof(config_t, f), sizeof(((config_t *)0)->f)
#define NUM(name, arg, f, min, max, help) {name, arg, OPT_NUM, FIELD(f), min, max, NULL, help}
#define BYTES(name, f, min, max, help) {name, "N", OPT_BYTES, FIELD(f), min, max, NULL, help}
#define FLAG(name, f, help) {name, NULL, OPT_FLAG, FIELD(f), 0, 0, NULL, help}
#define FN(name, arg, fn, help) {name, arg, OPT_FN, 0, 0, 0, 0, fn, help}

/* Every option: parsing, validation and --help come from this table. */
static const opt_t g_opts[] = {
    FN("listen", "ADDR", opt_listen,
       "unix:PATH, tcp:HOST:PORT or vsock[:PORT] (repeatable; default unix:" SA_ROOT_SOCKET
       " for root, $XDG_RUNTIME_DIR/sandbox-agent.sock for other users)"),
    FN("token-file", "PATH", opt_token_file,
       "require this token in Hello (also $SANDBOX_AGENT_TOKEN, or sandbox_agent.token= on "
       "the kernel command line)"),
    FLAG("insecure", insecure, "allow TCP/vsock listeners without a token"),
    FN("socket-mode", "MODE", opt_socket_mode, "unix socket permissions, octal (default 0600)"),
    FN("socket-group", "GROUP", opt_socket_group, "unix socket group"),
    BYTES("max-frame-size", max_frame_size, 64 * 1024, 1u << 30, "largest frame payload"),
    NUM("max-connections", "N", max_connections, 1, 1u << 20, "connections at once"),
    NUM("max-inflight", "N", max_inflight, 1, 1u << 20, "streams in flight per connection"),
    BYTES("max-queued-bytes", conn_queue_high, 64 * 1024, 1ull << 32,
          "output queued per connection before streams pause; longer messages are cut to "
          "fit"),
    NUM("max-processes", "N", max_processes, 1, 1u << 22, "running processes"),
    BYTES("output-window", default_output_window, 4096, 1ull << 40,
          "bytes of output kept per process"),
    BYTES("max-kept-output", max_kept_output, 4096, 1ull << 42,
          "bytes of output kept for all processes"),
    NUM("exited-ttl", "SECONDS", exited_ttl_s, 0, 1u << 30,
        "forget exited processes after this"),
    NUM("kill-grace-ms", "N", kill_grace_ms, 0, 1u << 30, "SIGTERM to SIGKILL delay"),
    NUM("write-timeout", "SECONDS", write_timeout_s, 0, 1u << 30,
        "close connections whose output has not moved"),
    NUM("hello-timeout", "SECONDS", hello_timeout_s, 0, 86400,
        "with a token, close connections that have not sent a valid Hello by then (0: no "
        "deadline)"),
    NUM("max-watch-dirs", "N", max_watch_dirs, 1, 1u << 24,
        "directories one recursive WatchPath may watch; past it the watch reports OVERFLOW "
        "and stops adding"),
    {"ready-fd", "N", OPT_NUM, FIELD(ready_fd), 0, 1u << 20, NULL,
     "write \"READY=1\\n\" to fd N once listening, then close it ($NOTIFY_SOCKET, sd_notify "
     "style, is honoured too)"},
    FN("oom-score-adj", "N", opt_oom,
       "the agent's own OOM score adjustment, -1000..1000 (default -1000, or the lowest the "
       "kernel allows)"),
    FN("nice", "N", opt_nice,
       "the agent's own nice value, -20..19 (default: as started, and -10 for the loop while "
       "processes start; processes it starts get 0)"),
    FN("services-dir", "DIR", opt_services_dir,
       "start the services declared in DIR/*.conf at boot (default " SA_SERVICES_DIR
       "; \"\" for none)"),
    FN("tunnel-allow", "RULE", opt_tunnel_allow,
       "allow tunnels only to matching targets (repeatable): tcp:HOST:PORTS (HOST '*', a "
       "name, an address or [IPv6], optionally /PREFIX; PORTS N, N-M or '*') or unix:GLOB, "
       "e.g. tcp:127.0.0.1:1-65535 or unix:/run/app/*.sock (default: any target)"),
    FLAG("no-tunnels", no_tunnels, "refuse OpenTunnel and Connect"),
    NUM("max-tunnels", "N", max_tunnels, 1, 1u << 20,
        "tunnels open at once, all connections together"),
    NUM("max-tunnels-per-conn", "N", max_tunnels_per_conn, 1, 1u << 20,
        "multiplexed tunnels per connection"),
    BYTES("tunnel-window", tunnel_window, 4096, 1u << 30,
          "bytes a client may send into a tunnel ahead of the agent's credit"),
    BYTES("max-tunnel-window", max_tunnel_window, 4096, 1u << 30,
          "the largest window a client may ask for"),
    NUM("thaw-after-ms", "N", thaw_after_ms, 1, CONFIG_MAX_THAW_AFTER_MS,
        "a Quiesce thaws by itself after this unless it says otherwise (at most 600000)"),
    FN("hooks-dir", "DIR", opt_hooks_dir,
       "holds pre-checkpoint.d and post-restore.d (default " CONFIG_DEFAULT_HOOKS_DIR ")"),
    NUM("hook-timeout-ms", "N", hook_timeout_ms, 1, 3600000, "one hook's time limit"),
    NUM("clock-jump-ms", "N", clock_jump_ms, 0, 1u << 30,
        "a jump of the wall clock against the monotonic clock larger than this is taken as "
        "a restore; 0: off"),
    /* Tests: how often the clocks are compared, and a file holding
     * "REALTIME MONOTONIC BOOTTIME" in nanoseconds, then optionally the RTC
     * in seconds, read instead of them. */
    NUM("clock-check-ms", "N", clock_check_ms, 10, 3600000, NULL),
    FN("clock-test-file", "PATH", opt_clock_test_file, NULL),
    FN("kmsg", "PATH|off", opt_kmsg,
       "the kernel log read for the line a VM fork logs, taken as a restore (default "
       "/dev/kmsg; tests give a FIFO of records in its format)"),
    FN("rtc", "PATH|off", opt_rtc,
       "the RTC compared with the wall clock every --clock-check-ms: moving ahead of it by "
       "more than --clock-jump-ms is taken as a pause and resume (default /dev/rtc0)"),
    FN("cgroup-root", "PATH", opt_cgroup_root,
       "the cgroup v2 subtree whose leaves hold the processes (default: the agent's own cgroup "
       "when systemd delegates it, else one made under the unified hierarchy when root)"),
    FLAG("no-cgroups", no_cgroups, "contain processes by process group only"),
    NUM("default-pids-max", "N", default_pids_max, 0, 1u << 22,
        "pids.max of every process that sets none itself; 0: none"),
    BYTES("default-memory-max", default_memory_max, 0, 1ull << 50,
          "memory.max of every process that sets none itself; 0: none"),
    BYTES("default-memory-swap-max", default_memory_swap_max, 0, 1ull << 50,
          "memory.swap.max of every process that sets none itself; 0: none"),
    NUM("default-cpu-max-millicores", "N", default_cpu_max_millicores, 0, 1u << 20,
        "cpu.max of every process that sets none itself (1000 = one CPU); 0: none"),
    FN("log-level", "LEVEL", opt_log_level, "debug, info, warn, error (default info)"),
    FN("log-format", "FORMAT", opt_log_format, "text or json (default text)"),
    {"help", NULL, OPT_HELP, 0, 0, 0, 0, NULL, "this text"},
    {"version", NULL, OPT_VERSION, 0, 0, 0, 0, NULL, "the agent's version"},
};
#define N_OPTS (sizeof g_opts / sizeof g_opts[0])

static uint64_t field_get(const config_t *cfg, const opt_t *o)
{
    const char *p = (const char *)cfg + o->off;
    if (o->size == sizeof(uint64_t)) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void field_set(config_t *cfg, const opt_t *o, uint64_t v)
{
    char *p = (char *)cfg + o->off;
    if (o->size == sizeof(uint64_t)) {
        memcpy(p, &v, sizeof v);
    } else {
        uint32_t w = (uint32_t)v;
        memcpy(p, &w, sizeof w);
    }
}

/* One option's help: the name column, then the text wrapped at 80. */
static void usage_opt(FILE *f, const opt_t *o, const config_t *def)
{
    enum { COL = 25, WIDTH = 80 };
    char left[64], text[512];
    snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    if (o->kind == OPT_BYTES || o->kind == OPT_NUM) {
        uint64_t v = field_get(def, o);
        if (o->kind == OPT_BYTES && v >= (1u << 20) && v % (1u << 20) == 0)
            snprintf(text, sizeof text, "%s (default %llu MiB)", o->help,
                     (unsigned long long)(v >> 20));
        else if ((int64_t)v < 0 || (o->size == 4 && (int32_t)v < 0))
            snprintf(text, sizeof text, "%s", o->help); /* "none" */
        else
            snprintf(text, sizeof text, "%s (default %llu)", o->help, (unsigned long long)v);
    } else {
        snprintf(text, sizeof text, "%s", o->help);
    }
    /* A name too long for its column puts the text on the next line. */
    int col = fprintf(f, "  %s", left);
    if (col >= COL - 1) {
        fputc('\n', f);
        col = 0;
    }
    for (const char *p = text; *p;) {
        size_t room = WIDTH - COL, n = strlen(p);
        if (n > room) {
            n = room;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = room;
        }
        fprintf(f, "%*s%.*s\n", COL - col, "", (int)n, p);
        col = 0;
        for (p += n; *p == ' '; p++)
            ;
    }
}

static void usage(FILE *f)
{
    config_t def;
    config_defaults(&def);
    fprintf(f, "usage: sandbox-agent [options]\n\n"
               "In-guest execution agent: runs processes and moves files for a control plane.\n\n");
    for (size_t i = 0; i < N_OPTS; i++)
        if (g_opts[i].help)
            usage_opt(f, &g_opts[i], &def);
}

/* One option from the table, with its value in optarg. 0, -1 (said on
 * stderr), or 1 when it answered (--help, --version) and the agent exits. */
static int apply_opt(config_t *cfg, const opt_t *o)
{
    char flag[64];
    uint64_t v;
    snprintf(flag, sizeof flag, "--%s", o->name);
    switch (o->kind) {
    case OPT_NUM:
    case OPT_BYTES:
        if (parse_u64(flag, optarg, o->min, o->max, &v) < 0)
            return -1;
        field_set(cfg, o, v);
        return 0;
    case OPT_FLAG: {
        int one = 1;
        memcpy((char *)cfg + o->off, &one, sizeof one);
        return 0;
    }
    case OPT_FN: return o->fn(cfg, optarg) < 0 ? -1 : 0;
    case OPT_HELP: usage(stdout); return 1;
    case OPT_VERSION: printf("sandbox-agent %s\n", SANDBOX_AGENT_VERSION); return 1;
    }
    return 0;
}

/* What the options leave to the environment: the token (from
 * $SANDBOX_AGENT_TOKEN or the kernel command line, then scrubbed from both
 * reaches of the children) and the default socket. 0 or -1. */
static int config_finish(config_t *cfg)
{
    if (!have_token_file) {
        const char *t = getenv("SANDBOX_AGENT_TOKEN");
        if (t && *t) {
            if (set_token(cfg, t, strlen(t), "$SANDBOX_AGENT_TOKEN") < 0) {
                scrub_env_token();
                return -1;
            }
        } else if (token_from_cmdline(cfg) < 0) {
            scrub_env_token();
            return -1;
        }
    }
    /* Children must never see the token, nor anyone reading /proc. */
    scrub_env_token();
    if (cfg->n_listen == 0) {
        static char def[300];
        char path[256];
        sa_default_socket(path, sizeof path, geteuid());
        snprintf(def, sizeof def, "unix:%s", path);
        cfg->listen[cfg->n_listen++] = def;
    }
    /* --max-queued-bytes is kept as given: streams cut their messages to
     * fit it (conn_max_event), so it need not hold a whole frame. */
    return 0;
}

int config_parse(config_t *cfg, int argc, char **argv)
{
    static struct option lopts[N_OPTS + 1];
    int c, rc;

    for (size_t i = 0; i < N_OPTS; i++) {
        lopts[i].name = g_opts[i].name;
        lopts[i].has_arg = g_opts[i].arg ? required_argument : no_argument;
        lopts[i].flag = NULL;
        lopts[i].val = 256 + (int)i;
    }
    config_defaults(cfg);
    have_token_file = 0;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":", lopts, NULL)) != -1) {
        /* getopt has moved past the option (and its value, if separate). */
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        if (c == ':') {
            fprintf(stderr, "sandbox-agent: option '%s' needs a value\n", name);
            usage(stderr);
            return -1;
        }
        if (c < 256 || c >= 256 + (int)N_OPTS) {
            fprintf(stderr, "sandbox-agent: unknown option '%s'\n", name);
            usage(stderr);
            return -1;
        }
        if ((rc = apply_opt(cfg, &g_opts[c - 256])) != 0)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "sandbox-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return config_finish(cfg);
}
