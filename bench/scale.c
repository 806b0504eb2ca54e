/* scale.c - figure 9: what a request costs as the agent's work grows.
 *
 * The exec round trip and the Ping p99 are measured on an agent that keeps
 * 1, 1,000 and 10,000 processes in its table, then on one that has 1, 100
 * and 1,000 connections each following a process of its own. Nothing on the
 * request path may grow with either (no linear scans), so each figure is
 * reported as a ratio to the smallest case: flat means about 1.0x.
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

#define SCALE_EXECS 200
#define SCALE_PINGS 1000
#define SCALE_BATCH 256

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

static double exec_median_us(sa_client_t *c)
{
    double v[SCALE_EXECS];
    for (int i = 0; i < SCALE_EXECS; i++)
        v[i] = agent_exec_once(c) / 1e3;
    return quantile(v, SCALE_EXECS, 0.5);
}

static double ping_p99_ms(sa_client_t *c)
{
    double v[SCALE_PINGS];
    size_t n = 0;
    for (int i = 0; i < SCALE_PINGS; i++) {
        int64_t t = agent_ping(c);
        if (t >= 0)
            v[n++] = (double)t / 1e6;
        sleep_us(200);
    }
    return n ? quantile(v, n, 0.99) : NAN;
}

/* Measure both figures on the agent as it is now: the first case is the
 * reference (*exec1, *ping1), the others are reported against it. */
static void measure(sa_client_t *c, sa_client_t *p, int first, int count, const char *what,
                    const char *ref, const char *note, double *exec1, double *ping1)
{
    double e = exec_median_us(c), pp = ping_p99_ms(p);
    char row[64];
    if (first) {
        *exec1 = e;
        *ping1 = pp;
        return;
    }
    snprintf(row, sizeof row, "exec round trip, %d %s", count, what);
    result_add("9", row, "us", e, ref, *exec1, LOWER, 1.25, NAN, note);
    snprintf(row, sizeof row, "Ping p99, %d %s", count, what);
    result_add("9", row, "ms", pp, ref, *ping1, LOWER, 1.25, NAN, note);
}

static void scale_processes(void)
{
    static const int counts[] = {1, 1000, 10000};
    static const char *const extra[] = {"--max-processes", "12000", NULL};
    agent_t a;
    double exec1 = NAN, ping1 = NAN;
    int kept = 0;

    if (agent_up(&a, "scale-procs", extra) < 0)
        scale_die("agent", "did not start");
    sa_client_t *c = agent_client(&a);
    sa_client_t *p = agent_client(&a);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        /* The measurement itself adds SCALE_EXECS kept runs; count them. */
        if (counts[i] > kept)
            start_many(c, "/bin/true", NULL, counts[i] - kept, NULL);
        kept = counts[i] > kept ? counts[i] : kept;
        sleep_us(300000); /* let the batch exit and be reaped */
        char note[160];
        snprintf(note, sizeof note,
                 "%d exited /bin/true runs kept in the table; reference: the same agent "
                 "keeping %d", counts[i], counts[0]);
        measure(c, p, i == 0, counts[i], "kept processes", "1 kept process", note, &exec1,
                &ping1);
        kept += SCALE_EXECS;
    }
    sa_client_close(p);
    sa_client_close(c);
    agent_down(&a);
}

static void scale_connections(void)
{
    static const int counts[] = {1, 100, 1000};
    static const char *const extra[] = {"--max-connections", "2048", "--max-processes", "2048",
                                        NULL};
    enum { MAXC = 1000 };
    sa_client_t **fol = calloc(MAXC, sizeof *fol);
    uint32_t *pids = calloc(MAXC, sizeof *pids);
    agent_t a;
    double exec1 = NAN, ping1 = NAN;
    int have = 0;

    if (!fol || !pids)
        scale_die("connections", "out of memory");
    if (agent_up(&a, "scale-conns", extra) < 0)
        scale_die("agent", "did not start");
    sa_client_t *c = agent_client(&a);
    sa_client_t *p = agent_client(&a);
    start_many(c, "/bin/sleep", "3600", MAXC, pids);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        for (; have < counts[i]; have++) {
            Request req = REQUEST_INIT;
            Sandbox__Agent__V1__FollowOutput fo = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
            fol[have] = agent_client(&a);
            fo.pid = pids[have];
            req.op_case = OP(FOLLOW);
            req.follow = &fo;
            if (sa_client_send(fol[have], &req) < 0)
                scale_die("follow", "the connection broke");
        }
        sleep_us(200000);
        char note[160];
        snprintf(note, sizeof note,
                 "%d connections, each following a sleeping process of its own; reference: "
                 "the same agent with %d", counts[i], counts[0]);
        measure(c, p, i == 0, counts[i], "following connections", "1 connection", note, &exec1,
                &ping1);
    }
    for (int i = 0; i < have; i++)
        sa_client_close(fol[i]);
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
