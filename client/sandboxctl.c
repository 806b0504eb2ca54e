/* sandboxctl.c - the command line people use inside the VM: global flags,
 * the subcommand table, and the connection-level commands (ping, info). */
#include "ctl.h"
#include "ctl_svc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char g_token[256];

int ctl_connect_z(ctl_t *ctl, int zlib)
{
    char err[512];
    ctl->cli = sa_client_connect(ctl->addr, err, sizeof err);
    if (!ctl->cli) {
        fprintf(stderr, "sandboxctl: %s\n", err);
        return -1;
    }
    if (sa_client_hello(ctl->cli, ctl->token, "sandboxctl", zlib, err, sizeof err) < 0) {
        fprintf(stderr, "sandboxctl: %s\n", err);
        sa_client_close(ctl->cli);
        ctl->cli = NULL;
        return -1;
    }
    return 0;
}

int ctl_connect(ctl_t *ctl)
{
    /* Compression pays over a network, not over a local socket, where it
     * would only cost both sides CPU. */
    const char *a = ctl->addr ? ctl->addr : getenv("SANDBOX_AGENT_ADDR");
    return ctl_connect_z(ctl, a && (!strncmp(a, "tcp:", 4) || !strncmp(a, "vsock:", 6)));
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static int cmd_ping(ctl_t *ctl, int argc, char **argv)
{
    int count = 1;
    if (argc > 2)
        return ctl_usage_error(ctl, "too many arguments");
    if (argc == 2) {
        char *end;
        long v = strtol(argv[1], &end, 10);
        if (!argv[1][0] || *end || v <= 0 || v > 1000000)
            return ctl_usage_error(ctl, "'%s' is not a count (1 to 1000000)", argv[1]);
        count = (int)v;
    }
    if (ctl_connect(ctl) < 0)
        return 1;
    for (int i = 0; i < count; i++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
        Response *r = NULL;
        struct timespec t0;
        req.op_case = OP(PING);
        req.ping = &p;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (ctl_call(ctl, &req, "ping", RES(PONG), 10000, &r))
            return 1;
        double ms = ms_since(&t0);
        if (ctl->json)
            printf("{\"seq\":%d,\"rtt_ms\":%.3f,\"agent_time_unix_nano\":%llu}\n", i + 1, ms,
                   (unsigned long long)r->pong->agent_time_unix_nano);
        else
            printf("pong from agent: seq=%d time=%.3f ms\n", i + 1, ms);
        sa_response_free(r);
    }
    return 0;
}

static int cmd_info(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetInfo gi = SANDBOX__AGENT__V1__GET_INFO__INIT;
    Response *r = NULL;
    int rc = ctl_begin_bare(ctl, argc);
    if (rc)
        return rc;
    req.op_case = OP(INFO);
    req.info = &gi;
    if (ctl_call(ctl, &req, "info", RES(INFO), 10000, &r))
        return 1;
    const Info *in = r->info;
    if (ctl->json) {
        printf("{\"agent_version\":");
        ctl_json_string(in->agent_version);
        printf(",\"protocol_version\":%u,\"hostname\":", in->protocol_version);
        ctl_json_string(in->hostname);
        printf(",\"kernel_release\":");
        ctl_json_string(in->kernel_release);
        printf(",\"arch\":");
        ctl_json_string(in->arch);
        printf(",\"agent_pid\":%u,\"agent_uptime_nano\":%llu,\"boot_time_unix_nano\":%llu,"
               "\"cpu_count\":%u,\"memory_total_bytes\":%llu,\"memory_available_bytes\":%llu,"
               "\"load_1\":%.2f,\"load_5\":%.2f,\"load_15\":%.2f,\"open_connections\":%u,"
               "\"running_processes\":%u,\"kept_processes\":%u,\"kept_output_bytes\":%llu,"
               "\"agent_rss_bytes\":%llu,\"open_tunnels\":%u,",
               in->agent_pid, (unsigned long long)in->agent_uptime_nano,
               (unsigned long long)in->boot_time_unix_nano, in->cpu_count,
               (unsigned long long)in->memory_total_bytes,
               (unsigned long long)in->memory_available_bytes, in->load_1, in->load_5,
               in->load_15, in->open_connections, in->running_processes, in->kept_processes,
               (unsigned long long)in->kept_output_bytes, (unsigned long long)in->agent_rss_bytes,
               in->open_tunnels);
        printf("\"generation\":%llu,\"restores\":%llu,\"last_restore_unix_nano\":%llu,"
               "\"frozen\":[",
               (unsigned long long)in->generation, (unsigned long long)in->restores,
               (unsigned long long)in->last_restore_unix_nano);
        for (size_t i = 0; i < in->n_frozen; i++) {
            if (i)
                putchar(',');
            ctl_json_string(in->frozen[i]);
        }
        printf("]}\n");
    } else {
        char mt[32], ma[32], rss[32], kept[32];
        ctl_human("B", (double)in->memory_total_bytes, mt, sizeof mt);
        ctl_human("B", (double)in->memory_available_bytes, ma, sizeof ma);
        ctl_human("B", (double)in->agent_rss_bytes, rss, sizeof rss);
        ctl_human("B", (double)in->kept_output_bytes, kept, sizeof kept);
        printf("agent:       sandbox-agent %s (protocol %u), pid %u, up %.1f s, rss %s\n",
               in->agent_version, in->protocol_version, in->agent_pid,
               (double)in->agent_uptime_nano / 1e9, rss);
        printf("host:        %s, Linux %s %s, %u CPUs\n", in->hostname, in->kernel_release,
               in->arch, in->cpu_count);
        printf("memory:      %s total, %s available\n", mt, ma);
        printf("load:        %.2f %.2f %.2f\n", in->load_1, in->load_5, in->load_15);
        printf("connections: %u open, %u tunnels\n", in->open_connections, in->open_tunnels);
        printf("processes:   %u running, %u kept, %s of output kept\n", in->running_processes,
               in->kept_processes, kept);
        printf("lifecycle:   generation %llu, %llu restores noticed, %s",
               (unsigned long long)in->generation, (unsigned long long)in->restores,
               in->n_frozen ? "frozen:" : "nothing frozen");
        for (size_t i = 0; i < in->n_frozen; i++)
            printf(" %s", in->frozen[i]);
        putchar('\n');
    }
    sa_response_free(r);
    return 0;
}

static int cmd_help(ctl_t *ctl, int argc, char **argv);

const ctl_cmd_t ctl_cmds_base[] = {
    {"ping", cmd_ping, "[COUNT]", "check the agent answers, with the round-trip time",
     "  COUNT  pings to send, one after the other (default 1)\n"},
    {"info", cmd_info, "", "show the agent and the machine it runs on", NULL},
    {"help", cmd_help, "[COMMAND]", "show the commands, or one command's usage and options",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Every module's table; a new module adds its table here. */
static const ctl_cmd_t *const g_tables[] = {ctl_cmds_base, ctl_cmds_proc, ctl_cmds_fs,
                                             ctl_cmds_tunnel, ctl_cmds_svc, ctl_cmds_life};

static const ctl_cmd_t *find_cmd(const char *name)
{
    for (size_t t = 0; t < sizeof g_tables / sizeof g_tables[0]; t++)
        for (const ctl_cmd_t *c = g_tables[t]; c->name; c++)
            if (!strcmp(c->name, name))
                return c;
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sandboxctl [--connect ADDR] [--token-file PATH] [--json] COMMAND [ARGS]\n"
               "\n"
               "  --connect ADDR     unix:PATH, PATH, tcp:HOST:PORT or vsock:CID:PORT\n"
               "                     (default $SANDBOX_AGENT_ADDR, else the agent's default socket)\n"
               "  --token-file PATH  the agent's token (also $SANDBOX_AGENT_TOKEN)\n"
               "  --json             machine-readable output: one JSON object per line\n"
               "\ncommands:\n");
    for (size_t t = 0; t < sizeof g_tables / sizeof g_tables[0]; t++)
        for (const ctl_cmd_t *c = g_tables[t]; c->name; c++)
            fprintf(f, "  %-8s %s\n", c->name, c->help);
    fprintf(f, "\n'sandboxctl COMMAND --help' or 'sandboxctl help COMMAND' shows a command's "
               "usage and options.\n");
}

static int cmd_help(ctl_t *ctl, int argc, char **argv)
{
    if (argc == 1) {
        usage(stdout);
        return 0;
    }
    if (argc > 2)
        return ctl_usage_error(ctl, "one command at a time");
    const ctl_cmd_t *c = find_cmd(argv[1]);
    if (!c)
        return ctl_usage_error(ctl, "unknown command '%s'", argv[1]);
    ctl_cmd_help(c, stdout);
    return 0;
}

/* --help among a command's options (before "--"), or -h as its first
 * argument, asks for that command's help. A command that runs a command
 * line finds --help among its own options itself (the command line's
 * --help is the command's). */
static int wants_help(const ctl_cmd_t *c, int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "-h"))
        return 1;
    if (strstr(c->usage, "CMD"))
        return 0;
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--help"))
            return 1;
    return 0;
}

static int read_token(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "sandboxctl: --token-file '%s': %s\n", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, g_token, sizeof g_token - 1);
    close(fd);
    if (n < 0) {
        fprintf(stderr, "sandboxctl: --token-file '%s': %s\n", path, strerror(errno));
        return -1;
    }
    g_token[n] = 0;
    g_token[strcspn(g_token, "\r\n")] = 0;
    return 0;
}

int main(int argc, char **argv)
{
    ctl_t ctl = {0};
    int i = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--connect") || !strcmp(a, "-c")) {
            if (++i == argc)
                goto need_value;
            ctl.addr = argv[i];
        } else if (!strncmp(a, "--connect=", 10)) {
            ctl.addr = a + 10;
        } else if (!strcmp(a, "--token-file") || !strncmp(a, "--token-file=", 13)) {
            const char *path = a[12] == '=' ? a + 13 : NULL;
            if (!path && ++i == argc)
                goto need_value;
            if (read_token(path ? path : argv[i]) < 0)
                return 2;
            ctl.token = g_token;
        } else if (!strcmp(a, "--json")) {
            ctl.json = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("sandboxctl %s\n", SANDBOX_AGENT_VERSION);
            return 0;
        } else {
            fprintf(stderr, "sandboxctl: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (i == argc) {
        usage(stderr);
        return 2;
    }
    const ctl_cmd_t *c = find_cmd(argv[i]);
    if (!c) {
        fprintf(stderr, "sandboxctl: unknown command '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (wants_help(c, argc - i, argv + i)) {
        ctl_cmd_help(c, stdout);
        return 0;
    }
    ctl.cmd = c;
    int rc = c->fn(&ctl, argc - i, argv + i);
    if (ctl.cli)
        sa_client_close(ctl.cli);
    fflush(stdout);
    if (ferror(stdout) && !rc) {
        fprintf(stderr, "sandboxctl: %s: writing the output failed\n", c->name);
        rc = 1;
    }
    return rc;
need_value:
    fprintf(stderr, "sandboxctl: option '%s' needs a value\n", argv[i - 1]);
    return 2;
}
