/* scale.c - figure 9: what a request costs as the agent's work grows.
 *
 * The exec round trip and the Ping p99 are measured on an agent that keeps
 * 1, 1,000 and 10,000 processes in its table, then on one that has 1, 100
 * and 1,000 connections each following a process of its own. Nothing on the
 * request path may grow with either (no linear scans), so each figure is
 * reported as a ratio to the smallest case: flat means about 1.0x.
 *
 * On a shared machine a minute's load moves a latency by more than any
 * scan would, so the cases are measured in interleaved rounds, each round
 * visiting every case, and their samples pooled: a burst of load lands on
 * every case alike. The processes' three cases are three agents alive at
 * once; the connections' cases are one agent whose followers are closed and
 * opened again between rounds. The loop's CPU time per exec round trip
 * (schedstat of its thread) is reported too: it does not move with the
 * machine's load, so it shows a scan even where latencies are noisy.
 *
 * The kept processes are /bin/true runs that exited and are kept until
 * --exited-ttl (the table, their records and their empty logs are what
 * grows); the followed ones are sleeping processes, one per connection,
 * each with an idle FollowOutput in flight.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define SCALE_ROUNDS 5
#define ROUND_EXECS 40
#define ROUND_PINGS 200
#define SCALE_BATCH 256
#define NCASES 3

static void scale_die(const char *what, const char *why)
{
    fprintf(stderr, "sa-bench: 9: %s: %s\n", what, why);
    exit(1);
}

/* Start n processes of argv[0] without following them, pipelined in batches
 * of SCALE_BATCH on c; their pids go to pids[] when not NULL. */
static void start_many(sa_client_t *c, const char *cmd, const char *arg, int n, uint32_t *pids)
{
    const char *args[2] = {arg, NULL};
    int done = 0;
    while (done < n) {
        int batch = n - done < SCALE_BATCH ? n - done : SCALE_BATCH;
        uint64_t first = 0;
        for (int i = 0; i < batch; i++) {
            Request req = REQUEST_INIT;
            Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
            sp.command = (char *)cmd;
            sp.args = arg ? (char **)args : NULL;
            sp.n_args = arg ? 1 : 0;
            req.op_case = OP(START);
            req.start = &sp;
            if (sa_client_send(c, &req) < 0)
                scale_die("start", "the connection broke");
            if (i == 0)
                first = req.id;
        }
        for (int got = 0; got < batch;) {
            Response *r = NULL;
            if (sa_client_recv(c, &r, 30000) < 0)
                scale_die("start", "no answer");
            if (r->result_case == RES(ERROR))
                scale_die("start", r->error->message);
            if (r->done) {
                if (pids && r->result_case == RES(STARTED) && r->id >= first)
                    pids[done + (int)(r->id - first)] = r->started->pid;
                got++;
            }
            sa_response_free(r);
        }
        done += batch;
    }
}

/* Every sample of one case, over all rounds. */
typedef struct scase {
    int count;
    double exec[SCALE_ROUNDS * ROUND_EXECS];
    double ping[SCALE_ROUNDS * ROUND_PINGS];
    size_t ne, np;
    uint64_t cpu_ns; /* the loop's CPU time over its exec round trips */
} scase_t;

/* One round of one case: exec round trips on c, then Pings on p. */
static void measure_round(sa_client_t *c, sa_client_t *p, pid_t agent, scase_t *k)
{
    uint64_t r0 = 0, w0 = 0, r1 = 0, w1 = 0;
    sched_ns(agent, &r0, &w0);
    for (int i = 0; i < ROUND_EXECS; i++)
        k->exec[k->ne++] = agent_exec_once(c) / 1e3;
    sched_ns(agent, &r1, &w1);
    k->cpu_ns += r1 - r0;
    for (int i = 0; i < ROUND_PINGS; i++) {
        int64_t t = agent_ping(p);
        if (t >= 0)
            k->ping[k->np++] = (double)t / 1e6;
        sleep_us(200);
    }
}

/* The rows of every case against the first. */
static void report(scase_t *k, const char *what, const char *ref, const char *how)
{
    double e1 = quantile(k[0].exec, k[0].ne, 0.5);
    double p1 = k[0].np ? quantile(k[0].ping, k[0].np, 0.99) : NAN;
    double c1 = (double)k[0].cpu_ns / 1e3 / (double)k[0].ne;
    for (int i = 1; i < NCASES; i++) {
        char row[64], note[256];
        double e = quantile(k[i].exec, k[i].ne, 0.5);
        double pp = k[i].np ? quantile(k[i].ping, k[i].np, 0.99) : NAN;
        double cpu = (double)k[i].cpu_ns / 1e3 / (double)k[i].ne;
        snprintf(note, sizeof note,
                 "%d %s; reference: %s; %d interleaved rounds of %d execs and %d Pings each (%s)",
                 k[i].count, what, ref, SCALE_ROUNDS, ROUND_EXECS, ROUND_PINGS, how);
        snprintf(row, sizeof row, "exec round trip, %d %s", k[i].count, what);
        result_add("9", row, "us", e, ref, e1, LOWER, 1.25, NAN, note);
        snprintf(row, sizeof row, "loop CPU per exec, %d %s", k[i].count, what);
        result_add("9", row, "us", cpu, ref, c1, LOWER, 1.25, NAN, NULL);
        snprintf(row, sizeof row, "Ping p99, %d %s", k[i].count, what);
        result_add("9", row, "ms", pp, ref, p1, LOWER, 1.25, NAN, NULL);
    }
}

static void scale_processes(void)
{
    static const char *const extra[] = {"--max-processes", "12000", NULL};
    static const char *const names[NCASES] = {"scale-procs-1", "scale-procs-1k",
                                               "scale-procs-10k"};
    static scase_t k[NCASES];
    agent_t a[NCASES];
    sa_client_t *c[NCASES], *p[NCASES];

    k[0].count = 1;
    k[1].count = 1000;
    k[2].count = 10000;
    for (int i = 0; i < NCASES; i++) {
        if (agent_up(&a[i], names[i], extra) < 0)
            scale_die("agent", "did not start");
        c[i] = agent_client(&a[i]);
        p[i] = agent_client(&a[i]);
        start_many(c[i], "/bin/true", NULL, k[i].count, NULL);
    }
    sleep_us(300000); /* let the batches exit and be reaped */
    /* Each round adds ROUND_EXECS kept runs to every agent alike. */
    for (int r = 0; r < SCALE_ROUNDS; r++)
        for (int j = 0; j < NCASES; j++) {
            int i = (j + r) % NCASES; /* each case first in some round */
            measure_round(c[i], p[i], a[i].pid, &k[i]);
        }
    report(k, "kept processes", "1 kept process",
           "exited /bin/true runs kept in the table; three agents, alive at once");
    for (int i = 0; i < NCASES; i++) {
        sa_client_close(p[i]);
        sa_client_close(c[i]);
        agent_down(&a[i]);
    }
}

/* Open followers until n are, or close them down to n. */
static void followers_set(const agent_t *a, sa_client_t **fol, const uint32_t *pids, int *have,
                          int n)
{
    for (; *have > n; (*have)--) {
        sa_client_close(fol[*have - 1]);
        fol[*have - 1] = NULL;
    }
    for (; *have < n; (*have)++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__FollowOutput fo = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
        fol[*have] = agent_client(a);
        fo.pid = pids[*have];
        req.op_case = OP(FOLLOW);
        req.follow = &fo;
        if (sa_client_send(fol[*have], &req) < 0)
            scale_die("follow", "the connection broke");
    }
    sleep_us(200000); /* closed ones freed, new ones attached */
}

static void scale_connections(void)
{
    static const char *const extra[] = {"--max-connections", "2048", "--max-processes", "2048",
                                        NULL};
    enum { MAXC = 1000 };
    static scase_t k[NCASES];
    sa_client_t **fol = calloc(MAXC, sizeof *fol);
    uint32_t *pids = calloc(MAXC, sizeof *pids);
    agent_t a;
    int have = 0;

    if (!fol || !pids)
        scale_die("connections", "out of memory");
    k[0].count = 1;
    k[1].count = 100;
    k[2].count = MAXC;
    if (agent_up(&a, "scale-conns", extra) < 0)
        scale_die("agent", "did not start");
    sa_client_t *c = agent_client(&a);
    sa_client_t *p = agent_client(&a);
    start_many(c, "/bin/sleep", "3600", MAXC, pids);
    for (int r = 0; r < SCALE_ROUNDS; r++)
        for (int j = 0; j < NCASES; j++) {
            /* Up, then down, then up: every case next to every other. */
            int i = r % 2 ? NCASES - 1 - j : j;
            followers_set(&a, fol, pids, &have, k[i].count);
            measure_round(c, p, a.pid, &k[i]);
        }
    report(k, "following connections", "1 connection",
           "each following a sleeping process of its own; one agent with 1,000 sleeping "
           "processes, its followers opened and closed between rounds");
    followers_set(&a, fol, pids, &have, 0);
    sa_client_close(p);
    sa_client_close(c);
    agent_down(&a);
    free(fol);
    free(pids);
}

void fig_scale(void)
{
    /* 1,000 followers need about 2,000 descriptors here and in the agent. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "sa-bench: 9: RLIMIT_NOFILE: %s\n", strerror(errno));
    }
    scale_processes();
    scale_connections();
}
