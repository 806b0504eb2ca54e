/* config.c - see config.h. */
#include "config.h"

#include "defaults.h"
#include "frame.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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
    cfg->socket_mode = 0600;
    cfg->ready_fd = -1;
    cfg->oom_score_adj = -1000;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sandbox-agent [options]\n"
            "\n"
            "In-guest execution agent: runs processes and moves files for a control plane.\n"
            "\n"
            "  --listen ADDR          unix:PATH, tcp:HOST:PORT or vsock[:PORT] (repeatable;\n"
            "                         default unix:" SA_ROOT_SOCKET " for root, vsock\n"
            "                         port 1024)\n"
            "  --token-file PATH      require this token in Hello (also $SANDBOX_AGENT_TOKEN,\n"
            "                         or sandbox_agent.token= on the kernel command line)\n"
            "  --insecure             allow TCP/vsock listeners without a token\n"
            "  --socket-mode MODE     unix socket permissions, octal (default 0600)\n"
            "  --socket-group GROUP   unix socket group\n"
            "  --max-frame-size N     largest frame payload in bytes (default 4194304)\n"
            "  --max-connections N    (default 1024)\n"
            "  --max-inflight N       streams in flight per connection (default 1024)\n"
            "  --max-queued-bytes N   output queued per connection before streams pause\n"
            "                         (default 1048576, at least one frame)\n"
            "  --max-processes N      running processes (default 4096)\n"
            "  --output-window N      default bytes of output kept per process (default 4 MiB)\n"
            "  --max-kept-output N    bytes of output kept for all processes (default 256 MiB)\n"
            "  --exited-ttl SECONDS   forget exited processes after this (default 3600)\n"
            "  --kill-grace-ms N      SIGTERM to SIGKILL delay (default 5000)\n"
            "  --write-timeout S      close connections whose output has not moved (default 120)\n"
            "  --ready-fd N           write \"READY=1\\n\" to fd N once listening, then close it\n"
            "                         ($NOTIFY_SOCKET, sd_notify style, is honoured too)\n"
            "  --oom-score-adj N      the agent's own OOM score adjustment, -1000..1000\n"
            "  --nice N               the agent's own nice value, -20..19 (default: as\n"
            "                         started; processes it starts get 0)\n"
            "                         (default -1000, or the lowest the kernel allows)\n"
            "  --log-level LEVEL      debug, info, warn, error (default info)\n"
            "  --log-format FORMAT    text or json (default text)\n"
            "  --help, --version\n");
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

int config_parse(config_t *cfg, int argc, char **argv)
{
    enum {
        O_LISTEN = 256, O_TOKEN_FILE, O_INSECURE, O_SOCKET_MODE, O_SOCKET_GROUP, O_MAX_FRAME,
        O_MAX_CONN, O_MAX_INFLIGHT, O_MAX_PROC, O_WINDOW, O_MAX_KEPT, O_TTL, O_GRACE,
        O_WTIMEOUT, O_READY_FD, O_LOG_LEVEL, O_LOG_FORMAT, O_HELP, O_VERSION, O_OOM, O_NICE,
        O_MAX_QUEUED,
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"token-file", required_argument, NULL, O_TOKEN_FILE},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"socket-mode", required_argument, NULL, O_SOCKET_MODE},
        {"socket-group", required_argument, NULL, O_SOCKET_GROUP},
        {"max-frame-size", required_argument, NULL, O_MAX_FRAME},
        {"max-connections", required_argument, NULL, O_MAX_CONN},
        {"max-inflight", required_argument, NULL, O_MAX_INFLIGHT},
        {"max-queued-bytes", required_argument, NULL, O_MAX_QUEUED},
        {"oom-score-adj", required_argument, NULL, O_OOM},
        {"nice", required_argument, NULL, O_NICE},
        {"max-processes", required_argument, NULL, O_MAX_PROC},
        {"output-window", required_argument, NULL, O_WINDOW},
        {"max-kept-output", required_argument, NULL, O_MAX_KEPT},
        {"exited-ttl", required_argument, NULL, O_TTL},
        {"kill-grace-ms", required_argument, NULL, O_GRACE},
        {"write-timeout", required_argument, NULL, O_WTIMEOUT},
        {"ready-fd", required_argument, NULL, O_READY_FD},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"log-format", required_argument, NULL, O_LOG_FORMAT},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    int c, have_token_file = 0;
    uint64_t v;
    long long sv;

    config_defaults(cfg);
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        /* getopt has moved past the option (and its value, if separate). */
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case O_LISTEN:
            if (cfg->n_listen == CONFIG_MAX_LISTEN) {
                fprintf(stderr, "sandbox-agent: at most %d --listen addresses\n",
                        CONFIG_MAX_LISTEN);
                return -1;
            }
            /* Bare "vsock" means the documented default port. */
            if (!strcmp(optarg, "vsock") || !strcmp(optarg, "vsock:")) {
                static char vdef[CONFIG_MAX_LISTEN][24];
                snprintf(vdef[cfg->n_listen], sizeof vdef[0], "vsock:%u",
                         CONFIG_DEFAULT_VSOCK_PORT);
                cfg->listen[cfg->n_listen] = vdef[cfg->n_listen];
                cfg->n_listen++;
                break;
            }
            if (strncmp(optarg, "unix:", 5) && strncmp(optarg, "tcp:", 4) &&
                strncmp(optarg, "vsock:", 6)) {
                fprintf(stderr,
                        "sandbox-agent: --listen '%s': expected unix:PATH, tcp:HOST:PORT or "
                        "vsock:PORT\n",
                        optarg);
                return -1;
            }
            cfg->listen[cfg->n_listen++] = optarg;
            break;
        case O_TOKEN_FILE:
            if (read_token_file(cfg, optarg) < 0)
                return -1;
            have_token_file = 1;
            break;
        case O_INSECURE: cfg->insecure = 1; break;
        case O_SOCKET_MODE:
            if (parse_mode("--socket-mode", optarg, &cfg->socket_mode) < 0)
                return -1;
            break;
        case O_SOCKET_GROUP:
            if (!optarg[0]) {
                fprintf(stderr, "sandbox-agent: --socket-group: empty group name\n");
                return -1;
            }
            cfg->socket_group = optarg;
            break;
        case O_MAX_FRAME:
            if (parse_u64("--max-frame-size", optarg, 64 * 1024, 1u << 30, &v) < 0)
                return -1;
            cfg->max_frame_size = (uint32_t)v;
            break;
        case O_MAX_CONN:
            if (parse_u64("--max-connections", optarg, 1, 1u << 20, &v) < 0)
                return -1;
            cfg->max_connections = (uint32_t)v;
            break;
        case O_MAX_INFLIGHT:
            if (parse_u64("--max-inflight", optarg, 1, 1u << 20, &v) < 0)
                return -1;
            cfg->max_inflight = (uint32_t)v;
            break;
        case O_MAX_QUEUED:
            if (parse_u64("--max-queued-bytes", optarg, 64 * 1024, 1ull << 32, &v) < 0)
                return -1;
            cfg->conn_queue_high = (size_t)v;
            break;
        case O_NICE:
            if (parse_i64("--nice", optarg, -20, 19, &sv) < 0)
                return -1;
            cfg->nice = (int)sv;
            cfg->nice_set = 1;
            break;
        case O_OOM:
            if (parse_i64("--oom-score-adj", optarg, -1000, 1000, &sv) < 0)
                return -1;
            cfg->oom_score_adj = (int)sv;
            cfg->oom_score_adj_set = 1;
            break;
        case O_MAX_PROC:
            if (parse_u64("--max-processes", optarg, 1, 1u << 22, &v) < 0)
                return -1;
            cfg->max_processes = (uint32_t)v;
            break;
        case O_WINDOW:
            if (parse_u64("--output-window", optarg, 4096, 1ull << 40, &v) < 0)
                return -1;
            cfg->default_output_window = v;
            break;
        case O_MAX_KEPT:
            if (parse_u64("--max-kept-output", optarg, 4096, 1ull << 42, &v) < 0)
                return -1;
            cfg->max_kept_output = v;
            break;
        case O_TTL:
            if (parse_u64("--exited-ttl", optarg, 0, 1u << 30, &v) < 0)
                return -1;
            cfg->exited_ttl_s = (uint32_t)v;
            break;
        case O_GRACE:
            if (parse_u64("--kill-grace-ms", optarg, 0, 1u << 30, &v) < 0)
                return -1;
            cfg->kill_grace_ms = (uint32_t)v;
            break;
        case O_WTIMEOUT:
            if (parse_u64("--write-timeout", optarg, 0, 1u << 30, &v) < 0)
                return -1;
            cfg->write_timeout_s = (uint32_t)v;
            break;
        case O_READY_FD:
            if (parse_u64("--ready-fd", optarg, 0, 1u << 20, &v) < 0)
                return -1;
            cfg->ready_fd = (int)v;
            break;
        case O_LOG_LEVEL:
            if ((cfg->log_level = log_level_parse(optarg)) < 0) {
                fprintf(stderr,
                        "sandbox-agent: --log-level '%s': expected debug, info, warn or error\n",
                        optarg);
                return -1;
            }
            break;
        case O_LOG_FORMAT:
            if (!strcmp(optarg, "json"))
                cfg->log_json = 1;
            else if (!strcmp(optarg, "text"))
                cfg->log_json = 0;
            else {
                fprintf(stderr, "sandbox-agent: --log-format '%s': expected text or json\n",
                        optarg);
                return -1;
            }
            break;
        case O_HELP: usage(stdout); return 1;
        case O_VERSION: printf("sandbox-agent %s\n", SANDBOX_AGENT_VERSION); return 1;
        case ':':
            fprintf(stderr, "sandbox-agent: option '%s' needs a value\n", name);
            usage(stderr);
            return -1;
        default:
            fprintf(stderr, "sandbox-agent: unknown option '%s'\n", name);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sandbox-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
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
    if (cfg->conn_queue_high < (size_t)cfg->max_frame_size + 64)
        cfg->conn_queue_high = (size_t)cfg->max_frame_size + 64;
    return 0;
}
