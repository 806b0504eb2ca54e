/* main.c - sa-bench: runs the figures of issue 6 against sandbox-agent and
 * its references (the floor, socat, qemu-guest-agent) in one run, prints a
 * side-by-side table and writes a JSON file. bench/run.sh is the documented
 * way to run it. */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef AGENT_BIN
#define AGENT_BIN "sandbox-agent"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sa-bench [options]\n"
            "  --agent PATH      the sandbox-agent binary (default the one built with this)\n"
            "  --static-agent PATH  also measure the idle RSS of this (static) build\n"
            "  --qga PATH        qemu-ga (default: found in /usr/sbin, /usr/bin; 'none' to skip)\n"
            "  --socat PATH      socat (default: found in PATH; 'none' to skip)\n"
            "  --json PATH       write the results there (default bench/results/latest.json)\n"
            "  --only LIST       figures to run, e.g. 1,3,5 (default all)\n"
            "  --size-mib N      bytes of figures 3, 4, 5 and 10 (default 1024)\n"
            "  --quick           small sizes and counts, for trying the harness\n");
}

static const char *find_exe(const char *name, const char *const *dirs)
{
    static char buf[4][256];
    static int k;
    const char *path = getenv("PATH");
    char tmp[1024];
    for (; dirs && *dirs; dirs++) {
        snprintf(buf[k & 3], sizeof buf[0], "%s/%s", *dirs, name);
        if (access(buf[k & 3], X_OK) == 0)
            return buf[k++ & 3];
    }
    snprintf(tmp, sizeof tmp, "%s", path ? path : "/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(tmp, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(buf[k & 3], sizeof buf[0], "%s/%s", d, name);
        if (access(buf[k & 3], X_OK) == 0)
            return buf[k++ & 3];
    }
    return NULL;
}

static int wanted(int fig)
{
    char n[8];
    if (!g_opt.only)
        return 1;
    snprintf(n, sizeof n, "%d", fig);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", g_opt.only);
    for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (!strcmp(t, n))
            return 1;
    return 0;
}

static void machine_facts(void)
{
    char line[512], model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    struct utsname u;
    time_t t = time(NULL);
    char when[64];
    while (f && fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && c) {
            snprintf(model, sizeof model, "%s", c + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    }
    if (f)
        fclose(f);
    uname(&u);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    result_fact("date", "%s", when);
    result_fact("cpu", "%s", model);
    result_fact("cpus", "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    result_fact("kernel", "%s %s", u.sysname, u.release);
    result_fact("agent", "%s", g_opt.agent_bin);
    if (getenv("SA_BENCH_COMMIT"))
        result_fact("commit", "%s", getenv("SA_BENCH_COMMIT"));
    result_fact("stream_bytes", "%llu", (unsigned long long)g_opt.stream_bytes);
    result_fact("qga_bytes", "%llu", (unsigned long long)g_opt.qga_bytes);
    result_fact("exec_runs", "%d", g_opt.exec_runs);
    result_fact("qemu_ga", "%s", g_opt.qga_bin ? g_opt.qga_bin : "not run");
    result_fact("socat", "%s", g_opt.socat_bin ? g_opt.socat_bin : "not run");
    printf("machine: %s, %ld CPUs, %s %s\n", model, sysconf(_SC_NPROCESSORS_ONLN), u.sysname,
           u.release);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"agent", required_argument, NULL, 'a'}, {"qga", required_argument, NULL, 'q'},
        {"socat", required_argument, NULL, 's'}, {"json", required_argument, NULL, 'j'},
        {"only", required_argument, NULL, 'o'},  {"size-mib", required_argument, NULL, 'm'},
        {"quick", no_argument, NULL, 'Q'},       {"help", no_argument, NULL, 'h'},
        {"static-agent", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0}};
    static const char *const sbin[] = {"/usr/sbin", "/usr/bin", "/usr/local/sbin", NULL};
    const char *qga = NULL, *socat = NULL;
    int quick = 0, c;
    long size_mib = 1024;

    g_opt.agent_bin = AGENT_BIN;
    g_opt.json_out = "bench/results/latest.json";
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'a': g_opt.agent_bin = optarg; break;
        case 'S': g_opt.static_agent_bin = optarg; break;
        case 'q': qga = optarg; break;
        case 's': socat = optarg; break;
        case 'j': g_opt.json_out = optarg; break;
        case 'o': g_opt.only = optarg; break;
        case 'm': size_mib = strtol(optarg, NULL, 10); break;
        case 'Q': quick = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (size_mib < 16 || size_mib > 65536) {
        fprintf(stderr, "sa-bench: --size-mib: 16..65536\n");
        return 2;
    }
    g_opt.qga_bin = qga ? (strcmp(qga, "none") ? qga : NULL) : find_exe("qemu-ga", sbin);
    g_opt.socat_bin = socat ? (strcmp(socat, "none") ? socat : NULL) : find_exe("socat", NULL);
    g_opt.stream_bytes = (uint64_t)(quick ? 64 : size_mib) << 20;
    g_opt.qga_bytes = 8u << 20;
    g_opt.exec_runs = quick ? 300 : 2000;
    g_opt.parallel_threads = 64;
    g_opt.parallel_secs = quick ? 2 : 6;
    g_opt.startup_runs = quick ? 10 : 50;
    g_opt.repeats = quick ? 1 : 3;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    snprintf(g_opt.dir, sizeof g_opt.dir, "/tmp/sa-bench-XXXXXX");
    snprintf(g_opt.shm, sizeof g_opt.shm, "/dev/shm/sa-bench-XXXXXX");
    if (!mkdtemp(g_opt.dir) || !mkdtemp(g_opt.shm)) {
        fprintf(stderr, "sa-bench: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    machine_facts();
    if (!g_opt.socat_bin)
        fprintf(stderr, "sa-bench: socat not found: its references are skipped\n");
    if (g_opt.qga_bin && qga_up(&g_qga) == 0) {
        g_have_qga = 1;
        usleep(100000);
        g_qga_idle_kib = rss_kib(g_qga.pid);
    } else {
        fprintf(stderr, "sa-bench: qemu-ga not available: its references are skipped\n");
    }
    uint64_t t0 = now_ns();
    if (wanted(7))
        fig_startup();
    if (agent_up(&g_agent, "agent", NULL) < 0)
        return 1;
    if (wanted(2) || wanted(3) || wanted(4) || wanted(5))
        pinger_idle();
    if (wanted(1))
        fig_exec();
    if (wanted(2))
        fig_parallel();
    if (wanted(3))
        fig_stream();
    if (wanted(4))
        fig_fanout();
    if (wanted(5))
        fig_files();
    if (wanted(6))
        fig_memory();
    if (wanted(2) || wanted(3) || wanted(4) || wanted(5))
        pinger_report();
    if (wanted(10))
        fig_tunnel();
    agent_down(&g_agent);
    if (wanted(9))
        fig_scale();
    if (g_have_qga)
        qga_down(&g_qga);
    result_fact("seconds", "%.1f", (double)(now_ns() - t0) / 1e9);

    results_print_table();
    int rc = results_write_json(g_opt.json_out) < 0 ? 1 : 0;
    if (!rc)
        printf("\nresults: %s (%.0f s)\n", g_opt.json_out, (double)(now_ns() - t0) / 1e9);
    char cmd[400];
    /* SA_BENCH_KEEP=1 keeps the agents' logs (a sanitizer build's reports). */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", getenv("SA_BENCH_KEEP") ? "" : g_opt.dir,
             g_opt.shm);
    if (system(cmd) != 0)
        fprintf(stderr, "sa-bench: could not remove %s\n", g_opt.dir);
    else if (getenv("SA_BENCH_KEEP"))
        printf("logs kept in %s\n", g_opt.dir);
    return rc;
}
