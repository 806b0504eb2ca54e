/* Services against the real agent: restart policies (ON_FAILURE with a
 * growing backoff and giving up, ALWAYS), kills that are not restarted
 * (SendSignal, StopService), a restart storm's cost, one log per tag across
 * runs; ready and health probes (TCP, HTTP against python3 -m http.server,
 * an HTTP probe that times out, exec, output) and WaitReady; services.d. */
#include "ctl_helpers.h"
#include "proc_helpers.h"
#define TMPDIR_PREFIX "/tmp/sa-svc-"
#include "tmpdir.h"
#include "tunnel_helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static agent_t A;

typedef Sandbox__Agent__V1__RestartPolicy RestartPolicy;
typedef Sandbox__Agent__V1__Probe Probe;
#define MODE(x) SANDBOX__AGENT__V1__RESTART_POLICY__MODE__##x
#define SSTATE(x) SANDBOX__AGENT__V1__SERVICE_STATE__##x

typedef struct svc_opts {
    const char *tag;
    int mode;
    uint32_t max_restarts, backoff_initial_ms, backoff_max_ms, reset_after_ms;
    Probe *ready, *health;
    int follow;
} svc_opts_t;

static uint64_t svc_send(sa_client_t *c, const char *script, const svc_opts_t *o)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    RestartPolicy rp = SANDBOX__AGENT__V1__RESTART_POLICY__INIT;
    const char *args[] = {"-c", script};
    sp.command = "/bin/sh";
    sp.args = (char **)args;
    sp.n_args = 2;
    sp.tag = (char *)(o->tag ? o->tag : "");
    if (o->mode) {
        rp.mode = o->mode;
        rp.max_restarts = o->max_restarts;
        rp.backoff_initial_ms = o->backoff_initial_ms;
        rp.backoff_max_ms = o->backoff_max_ms;
        rp.reset_after_ms = o->reset_after_ms;
        sp.restart = &rp;
    }
    sp.ready = o->ready;
    sp.health = o->health;
    sp.follow = o->follow;
    req.op_case = OP(START);
    req.start = &sp;
    if (sa_client_send(c, &req) < 0)
        FAIL("send start");
    return req.id;
}

static uint32_t svc_start(sa_client_t *c, const char *script, const svc_opts_t *o, uint64_t *id)
{
    uint64_t rid = svc_send(c, script, o);
    Response *r = recv_id(c, rid);
    ASSERT_RESULT(r, STARTED);
    uint32_t pid = r->started->pid;
    sa_response_free(r);
    if (id)
        *id = rid;
    return pid;
}

static Response *get_tag(sa_client_t *c, const char *tag)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    g.tag = (char *)tag;
    req.op_case = OP(GET_PROCESS);
    req.get_process = &g;
    return call(c, &req);
}

static int state_of(sa_client_t *c, const char *tag)
{
    Response *r = get_tag(c, tag);
    ASSERT_RESULT(r, PROCESS);
    int st = r->process->service_state;
    sa_response_free(r);
    return st;
}

/* Until tag's probe has failed with text in its error (bounded: 30 s), so
 * that a check of the error does not depend on how soon the probe ran. */
static void probe_error_wait(sa_client_t *c, const char *tag, const char *text)
{
    for (int i = 0; i < 3000; i++) {
        Response *r = get_tag(c, tag);
        ASSERT_RESULT(r, PROCESS);
        int found = strstr(r->process->last_probe_error, text) != NULL;
        sa_response_free(r);
        if (found)
            return;
        usleep(10000);
    }
    FAIL("probe of %s: no error with \"%s\" in 30 s", tag, text);
}

static Response *stop_service(sa_client_t *c, const char *tag, int sig, uint32_t grace)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StopService s = SANDBOX__AGENT__V1__STOP_SERVICE__INIT;
    s.tag = (char *)tag;
    s.signal = sig;
    s.grace_ms = grace;
    req.op_case = OP(STOP_SERVICE);
    req.stop_service = &s;
    return call(c, &req);
}

static uint64_t wait_ready_send(sa_client_t *c, uint32_t pid, const char *tag, uint32_t timeout)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WaitReady w = SANDBOX__AGENT__V1__WAIT_READY__INIT;
    w.pid = pid;
    w.tag = (char *)(tag ? tag : "");
    w.timeout_ms = timeout;
    req.op_case = OP(WAIT_READY);
    req.wait_ready = &w;
    if (sa_client_send(c, &req) < 0)
        FAIL("send wait_ready");
    return req.id;
}

static uint64_t follow_tag(sa_client_t *c, const char *tag)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    f.tag = (char *)tag;
    req.op_case = OP(FOLLOW);
    req.follow = &f;
    if (sa_client_send(c, &req) < 0)
        FAIL("send follow");
    return req.id;
}

/* What a follower of a service saw: each run's output, its exit, the
 * restarts, in order. */
typedef struct runs_seen {
    int n_exits, n_restarts, n_ready, done;
    char out[64][64];      /* output of each run (first 63 bytes) */
    int exit_code[64];
    uint64_t exit_at[64], restart_at[64];
    uint32_t restart_pid[64], restart_count[64];
    char order[512];       /* 'o' output, 'r' ready, 'x' exit, 'R' restarted */
    size_t n_order;
    uint64_t next_seq;
} runs_seen_t;

static void seen_add(runs_seen_t *k, char ev)
{
    if (k->n_order + 1 < sizeof k->order && (ev != 'o' || !k->n_order || k->order[k->n_order - 1] != 'o'))
        k->order[k->n_order++] = ev;
}

static void collect_runs(sa_client_t *c, uint64_t id, runs_seen_t *k)
{
    memset(k, 0, sizeof *k);
    while (!k->done) {
        Response *r = recv_id(c, id);
        int run = k->n_exits < 64 ? k->n_exits : 63;
        switch (r->result_case) {
        case RES(STARTED):
            break;
        case RES(OUTPUT): {
            ASSERT_EQ(r->output->sequence, k->next_seq);
            k->next_seq += r->output->data.len;
            size_t have = strlen(k->out[run]);
            size_t take = r->output->data.len;
            if (take > 63 - have)
                take = 63 - have;
            memcpy(k->out[run] + have, r->output->data.data, take);
            seen_add(k, 'o');
            break;
        }
        case RES(READY):
            ASSERT(!r->done);
            k->n_ready++;
            seen_add(k, 'r');
            break;
        case RES(EXIT):
            k->exit_code[run] = r->exit->exit_code;
            k->exit_at[run] = r->exit->ended_at_unix_nano;
            k->n_exits++;
            seen_add(k, 'x');
            break;
        case RES(RESTARTED):
            ASSERT(!r->done);
            ASSERT_GT(k->n_exits, 0);
            run = k->n_exits - 1 < 64 ? k->n_exits - 1 : 63; /* the run it follows */
            k->restart_pid[run] = r->restarted->pid;
            k->restart_count[run] = r->restarted->restarts;
            k->restart_at[run] = r->restarted->at_unix_nano;
            k->n_restarts++;
            seen_add(k, 'R');
            break;
        default:
            ASSERT_RESULT(r, OUTPUT);
        }
        k->done = r->done;
        sa_response_free(r);
    }
    k->order[k->n_order] = 0;
}

/* ------------------------------------------------------------ restart policy */

TEST(on_failure_backs_off_more_each_time_then_gives_up)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.tag = "crash", .mode = MODE(ON_FAILURE), .max_restarts = 3,
                    .backoff_initial_ms = 100, .backoff_max_ms = 10000, .follow = 1};
    uint64_t id;
    svc_start(c, "echo run $$; exit 3", &o, &id);
    runs_seen_t k;
    collect_runs(c, id, &k);
    /* Four runs: each one's output, then its exit; a restart between. */
    ASSERT_STR_EQ(k.order, "oxRoxRoxRox");
    ASSERT_EQ(k.n_exits, 4);
    ASSERT_EQ(k.n_restarts, 3);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(k.exit_code[i], 3);
        ASSERT(!strncmp(k.out[i], "run ", 4));
        if (i < 3) {
            ASSERT_EQ(k.restart_count[i], i + 1);
            /* The run's output names the pid ProcessRestarted announced. */
            ASSERT_EQ(atoi(k.out[i + 1] + 4), (int)k.restart_pid[i]);
        }
    }
    /* Backoff: at least 3/4 of 100, 200, 400 ms, so each wait is longer
     * than the one before but one (jitter takes at most a quarter). */
    uint64_t gap[3];
    for (int i = 0; i < 3; i++) {
        gap[i] = (k.restart_at[i] - k.exit_at[i]) / 1000000;
        ASSERT_GE(gap[i], (uint64_t)(75 << i));
    }
    ASSERT_GT(gap[2], gap[0]);
    Response *r = get_tag(c, "crash");
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->service_state, SSTATE(FAILED));
    ASSERT_EQ(r->process->restarts, 3);
    ASSERT(r->process->last_exit);
    ASSERT_EQ(r->process->last_exit->exit_code, 3);
    ASSERT(strstr(r->process->last_probe_error, "gave up after 3 restarts"));
    sa_response_free(r);
    /* A follower that comes afterwards replays every run the same way. */
    collect_runs(c, follow_tag(c, "crash"), &k);
    ASSERT_STR_EQ(k.order, "oxRoxRoxRox");
    sa_client_close(c);
    agent_stop(&A);
}

TEST(always_restarts_after_exit_0_and_on_failure_does_not)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.tag = "ok", .mode = MODE(ALWAYS), .max_restarts = 2,
                    .backoff_initial_ms = 20, .follow = 1};
    uint64_t id;
    svc_start(c, "echo fine", &o, &id);
    runs_seen_t k;
    collect_runs(c, id, &k);
    ASSERT_STR_EQ(k.order, "oxRoxRox");
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(k.exit_code[i], 0);
    ASSERT_EQ(state_of(c, "ok"), SSTATE(FAILED));

    svc_opts_t o2 = {.tag = "once", .mode = MODE(ON_FAILURE), .backoff_initial_ms = 20,
                     .follow = 1};
    svc_start(c, "echo fine", &o2, &id);
    collect_runs(c, id, &k);
    ASSERT_STR_EQ(k.order, "ox");
    ASSERT_EQ(state_of(c, "once"), SSTATE(STOPPED));
    sa_client_close(c);
    agent_stop(&A);
}

TEST(a_signal_sent_by_the_client_is_not_restarted)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.tag = "sig", .mode = MODE(ALWAYS), .backoff_initial_ms = 20};
    uint32_t pid = svc_start(c, "exec sleep 300", &o, NULL);
    Response *r = send_signal(c, pid, SIGKILL, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->signal, SIGKILL);
    sa_response_free(r);
    r = get_tag(c, "sig");
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->service_state, SSTATE(STOPPED));
    ASSERT_EQ(r->process->restarts, 0);
    ASSERT_EQ(r->process->pid, pid);
    sa_response_free(r);
    /* A kill from outside the agent is a failure: restarted. */
    o.tag = "outside";
    pid = svc_start(c, "exec sleep 300", &o, NULL);
    ASSERT_EQ(kill((pid_t)pid, SIGKILL), 0);
    for (int i = 0; i < 500; i++) {
        r = get_tag(c, "outside");
        ASSERT_RESULT(r, PROCESS);
        int again = r->process->restarts == 1 && r->process->service_state == SSTATE(READY);
        uint32_t npid = r->process->pid;
        sa_response_free(r);
        if (again) {
            ASSERT_NE(npid, pid);
            break;
        }
        ASSERT_LT(i, 499);
        usleep(10000);
    }
    sa_client_close(c);
    agent_stop(&A);
}

TEST(stop_service_stops_for_good_and_frees_the_tag)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.tag = "web", .mode = MODE(ALWAYS), .backoff_initial_ms = 20};
    uint32_t pid = svc_start(c, "trap '' TERM; echo up; while :; do sleep 0.05; done", &o, NULL);
    for (int i = 0;; i++) { /* the trap is set once it says so */
        Response *g = get_tag(c, "web");
        int up = g->process->stdout_bytes > 0;
        sa_response_free(g);
        if (up)
            break;
        ASSERT_LT(i, 1000);
        usleep(5000);
    }
    /* The tag names one running service. */
    uint64_t id = svc_send(c, "sleep 1", &o);
    Response *r = recv_id(c, id);
    ASSERT_ERROR(r, ALREADY_EXISTS);
    sa_response_free(r);
    /* It ignores SIGTERM: SIGKILL after the grace. */
    r = stop_service(c, "web", 0, 200);
    ASSERT_RESULT(r, PROCESS);
    ASSERT(r->done);
    ASSERT_EQ(r->process->service_state, SSTATE(STOPPED));
    ASSERT_EQ(r->process->exit->signal, SIGKILL);
    ASSERT_EQ(r->process->pid, pid);
    ASSERT_EQ(r->process->restarts, 0);
    sa_response_free(r);
    usleep(200000);
    ASSERT_EQ(state_of(c, "web"), SSTATE(STOPPED));
    /* Stopped: the tag can start a new service. */
    uint32_t pid2 = svc_start(c, "exec sleep 300", &o, NULL);
    ASSERT_NE(pid2, pid);
    r = stop_service(c, "web", SIGINT, 0);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->exit->signal, SIGINT);
    sa_response_free(r);
    r = stop_service(c, "nosuch", 0, 0);
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(stop_while_backing_off_ends_the_follower)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.tag = "slow", .mode = MODE(ON_FAILURE), .backoff_initial_ms = 5000,
                    .follow = 1};
    uint64_t id;
    svc_start(c, "echo once; exit 1", &o, &id);
    sa_client_t *c2 = agent_connect(&A);
    for (int i = 0; state_of(c2, "slow") != SSTATE(BACKING_OFF); i++) {
        ASSERT_LT(i, 500);
        usleep(10000);
    }
    Response *r = get_tag(c2, "slow");
    ASSERT_GT(r->process->next_restart_unix_nano, r->process->last_exit->ended_at_unix_nano);
    sa_response_free(r);
    /* Listed while between runs. */
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    r = simple(c2, OP(LIST_PROCESSES), &lp);
    ASSERT_RESULT(r, PROCESSES);
    ASSERT_EQ(r->processes->n_processes, 1);
    ASSERT_EQ(r->processes->processes[0]->service_state, SSTATE(BACKING_OFF));
    sa_response_free(r);
    r = stop_service(c2, "slow", 0, 0);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->service_state, SSTATE(STOPPED));
    ASSERT_EQ(r->process->exit->exit_code, 1);
    sa_response_free(r);
    runs_seen_t k;
    collect_runs(c, id, &k);
    /* Its exit, then the same exit again as the stream's end. */
    ASSERT_STR_EQ(k.order, "oxx");
    sa_client_close(c2);
    sa_client_close(c);
    agent_stop(&A);
}

static long long agent_cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    ASSERT(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    ASSERT(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2);
    return (long long)(ut + st) * 1000 / sysconf(_SC_CLK_TCK);
}

TEST(a_restart_storm_costs_bounded_cpu_and_memory)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    /* Warm up, then measure 1,000 restarts of a process that exits at once. */
    svc_opts_t o = {.tag = "storm", .mode = MODE(ALWAYS), .max_restarts = 1000,
                    .backoff_initial_ms = 1, .backoff_max_ms = 1};
    long long rss0 = proc_rss(A.pid), cpu0 = agent_cpu_ms(A.pid);
    uint32_t pid = svc_start(c, "exit 0", &o, NULL);
    (void)pid;
    uint64_t fid = follow_tag(c, "storm");
    runs_seen_t k;
    collect_runs(c, fid, &k);
    ASSERT_EQ(k.n_exits, 1001);
    ASSERT_EQ(k.n_restarts, 1000);
    long long rss1 = proc_rss(A.pid), cpu1 = agent_cpu_ms(A.pid);
    printf("  1,000 restarts: agent CPU %lld ms, RSS %lld -> %lld KiB\n", cpu1 - cpu0,
           rss0 / 1024, rss1 / 1024);
    Response *r = get_tag(c, "storm");
    ASSERT_EQ(r->process->service_state, SSTATE(FAILED));
    ASSERT_EQ(r->process->restarts, 1000);
    sa_response_free(r);
    /* Bounds far above what it takes (a few ms of CPU per restart here),
     * far below a leak or a busy loop. */
    ASSERT_LT(cpu1 - cpu0, 20000);
    ASSERT_LT(rss1 - rss0, 8ll << 20);
    ASSERT_EQ(zombies_settle(A.pid), 0);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(bad_service_requests)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.mode = MODE(ALWAYS)};
    Response *r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "tag"));
    sa_response_free(r);
    o.tag = "x";
    o.mode = 7;
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    o.mode = MODE(ALWAYS);
    o.backoff_initial_ms = 500;
    o.backoff_max_ms = 100;
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = stop_service(c, "", 0, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(services_waiting_to_restart_count_against_max_processes)
{
    agent_start(&A, "--max-processes", "2", NULL);
    sa_client_t *c = agent_connect(&A);
    svc_opts_t o = {.mode = MODE(ALWAYS), .backoff_initial_ms = 60000};
    const char *tags[] = {"w1", "w2"};
    for (int i = 0; i < 2; i++) {
        o.tag = tags[i];
        svc_start(c, "exit 0", &o, NULL);
        for (int k = 0; state_of(c, tags[i]) != SSTATE(BACKING_OFF); k++) {
            ASSERT_LT(k, 1000);
            usleep(10000);
        }
    }
    /* Nothing runs, but two records wait to restart: the limit holds. */
    o.tag = "w3";
    Response *r = recv_id(c, svc_send(c, "exit 0", &o));
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    ASSERT(strstr(r->error->message, "waiting to restart"));
    sa_response_free(r);
    r = stop_service(c, "w1", 0, 0);
    ASSERT_RESULT(r, PROCESS);
    sa_response_free(r);
    o.mode = 0;
    o.tag = NULL;
    svc_start(c, "exit 0", &o, NULL);
    sa_client_close(c);
    agent_stop(&A);
}

/* ------------------------------------------------------------ probes */

static int tcp_connects(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static Probe *tcp_probe(Probe *pr, Sandbox__Agent__V1__TcpProbe *t, int port, uint32_t interval)
{
    sandbox__agent__v1__probe__init(pr);
    sandbox__agent__v1__tcp_probe__init(t);
    t->port = (uint32_t)port;
    pr->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_TCP;
    pr->tcp = t;
    pr->interval_ms = interval;
    return pr;
}

static Probe *http_probe(Probe *pr, Sandbox__Agent__V1__HttpProbe *h, int port, const char *path,
                         uint32_t interval, uint32_t timeout)
{
    sandbox__agent__v1__probe__init(pr);
    sandbox__agent__v1__http_probe__init(h);
    h->port = (uint32_t)port;
    h->path = (char *)path;
    pr->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_HTTP;
    pr->http = h;
    pr->interval_ms = interval;
    pr->timeout_ms = timeout;
    return pr;
}

static Probe *exec_probe(Probe *pr, Sandbox__Agent__V1__ExecProbe *e, const char *script,
                         uint32_t interval)
{
    static const char *args[2];
    sandbox__agent__v1__probe__init(pr);
    sandbox__agent__v1__exec_probe__init(e);
    args[0] = "-c";
    args[1] = script;
    e->command = "/bin/sh";
    e->args = (char **)args;
    e->n_args = 2;
    pr->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_EXEC;
    pr->exec = e;
    pr->interval_ms = interval;
    return pr;
}

static Probe *output_probe(Probe *pr, Sandbox__Agent__V1__OutputProbe *o, const char *contains,
                           const char *prefix)
{
    sandbox__agent__v1__probe__init(pr);
    sandbox__agent__v1__output_probe__init(o);
    o->contains = (char *)(contains ? contains : "");
    o->line_prefix = (char *)(prefix ? prefix : "");
    pr->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_OUTPUT;
    pr->output = o;
    return pr;
}

TEST(wait_ready_returns_after_the_port_opens_within_an_interval)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    int port = free_port();
    char script[600];
    /* The server prints the time just before it listens, after a delay. */
    snprintf(script, sizeof script,
             "exec python3 -c 'import socket,time,sys\n"
             "time.sleep(0.8)\n"
             "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "s.bind((\"127.0.0.1\", %d)); t=time.time(); s.listen(16)\n"
             "print(\"%%.6f\" %% t, flush=True)\n"
             "while True:\n  c,_=s.accept(); c.close()\n'",
             port);
    Probe pr;
    Sandbox__Agent__V1__TcpProbe tp;
    const uint32_t interval = 500;
    svc_opts_t o = {.tag = "late", .ready = tcp_probe(&pr, &tp, port, interval), .follow = 1};
    uint64_t sid;
    uint32_t pid = svc_start(c, script, &o, &sid);
    sa_client_t *c2 = agent_connect(&A);
    double t0 = now_s();
    Response *r = recv_id(c2, wait_ready_send(c2, 0, "late", 20000));
    double t_answer = now_s();
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->pid, pid);
    ASSERT_EQ(r->process->service_state, SSTATE(READY));
    sa_response_free(r);
    /* The start's follow stream: the time line, then ProcessReady. */
    char line[64] = "";
    uint64_t ready_at = 0;
    while (!ready_at) {
        r = recv_id(c, sid);
        if (r->result_case == RES(OUTPUT))
            snprintf(line + strlen(line), sizeof line - strlen(line), "%.*s",
                     (int)r->output->data.len, (char *)r->output->data.data);
        else if (r->result_case == RES(READY))
            ready_at = r->ready->at_unix_nano;
        else
            ASSERT_RESULT(r, OUTPUT);
        sa_response_free(r);
    }
    double t_listen = atof(line);
    ASSERT_GT(t_listen, 0);
    double lat = t_answer - t_listen;
    printf("  waited %.0f ms; port open to answer %.0f ms (interval %u ms)\n",
           (t_answer - t0) * 1000, lat * 1000, interval);
    ASSERT_GT((long long)(t_answer * 1e6), (long long)(t_listen * 1e6)); /* not before */
    ASSERT_GE((long long)(ready_at / 1000), (long long)(t_listen * 1e6));
    /* Within an interval, plus a margin for a loaded machine (the agent's
     * timer, its connect and the test's own wake-up can each be late by a
     * second there): an upper bound, not a measure of speed. */
    ASSERT_LT(lat * 1000, interval + 3000);
    r = stop_service(c2, "late", 0, 0);
    sa_response_free(r);
    sa_client_close(c2);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(http_probe_against_python_http_server)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    tmpdir_make();
    int port = free_port();
    char script[300];
    snprintf(script, sizeof script, "cd %s && exec python3 -m http.server %d --bind 127.0.0.1",
             g_dir, port);
    Probe pr, pr2;
    Sandbox__Agent__V1__HttpProbe hp, hp2;
    svc_opts_t o = {.tag = "http", .mode = MODE(ON_FAILURE),
                    .ready = http_probe(&pr, &hp, port, "/", 100, 1000)};
    svc_start(c, script, &o, NULL);
    Response *r = recv_id(c, wait_ready_send(c, 0, "http", 20000));
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->service_state, SSTATE(READY));
    sa_response_free(r);
    /* A path that answers 404 is not ready: the error says so. */
    o.tag = "http404";
    o.mode = 0;
    hp2.status_min = 200; /* set below */
    o.ready = http_probe(&pr2, &hp2, port, "/no-such-file", 100, 1000);
    hp2.status_min = 200;
    hp2.status_max = 299;
    uint32_t pid = svc_start(c, "exec sleep 300", &o, NULL);
    probe_error_wait(c, "http404", "status 404");
    r = recv_id(c, wait_ready_send(c, pid, NULL, 2000));
    ASSERT_ERROR(r, DEADLINE_EXCEEDED);
    ASSERT(strstr(r->error->message, "status 404"));
    sa_response_free(r);
    r = get_tag(c, "http404");
    ASSERT_EQ(r->process->service_state, SSTATE(STARTING));
    ASSERT(strstr(r->process->last_probe_error, "status 404"));
    sa_response_free(r);
    sa_response_free(stop_service(c, "http", 0, 0));
    tmpdir_remove();
    sa_client_close(c);
    agent_stop(&A);
}

TEST(http_probe_that_times_out)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    int port = free_port();
    char script[400];
    /* Listens, never accepts: connects succeed, no reply ever comes. */
    snprintf(script, sizeof script,
             "exec python3 -c 'import socket,time\n"
             "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "s.bind((\"127.0.0.1\", %d)); s.listen(64); time.sleep(300)\n'",
             port);
    Probe pr;
    Sandbox__Agent__V1__HttpProbe hp;
    svc_opts_t o = {.tag = "mute", .ready = http_probe(&pr, &hp, port, "/", 300, 200)};
    uint32_t pid = svc_start(c, script, &o, NULL);
    for (int i = 0; !tcp_connects(port); i++) { /* python takes its time to start */
        ASSERT_LT(i, 2000);
        usleep(10000);
    }
    probe_error_wait(c, "mute", "no answer within 200 ms");
    Response *r = recv_id(c, wait_ready_send(c, pid, NULL, 1500));
    ASSERT_ERROR(r, DEADLINE_EXCEEDED);
    ASSERT(strstr(r->error->message, "no answer within 200 ms"));
    sa_response_free(r);
    /* The agent kept answering meanwhile. */
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(exec_probe_and_exit_before_ready)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    tmpdir_make();
    char script[300], check[300];
    snprintf(script, sizeof script, "sleep 0.3; touch %s/up; exec sleep 300", g_dir);
    snprintf(check, sizeof check, "test -e %s/up", g_dir);
    Probe pr;
    Sandbox__Agent__V1__ExecProbe ep;
    svc_opts_t o = {.tag = "exec", .ready = exec_probe(&pr, &ep, check, 50)};
    uint32_t pid = svc_start(c, script, &o, NULL);
    Response *r = recv_id(c, wait_ready_send(c, pid, NULL, 20000));
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->service_state, SSTATE(READY));
    sa_response_free(r);
    struct stat st;
    ASSERT_EQ(stat(P("up"), &st), 0);
    /* A process that exits before its probe passes: FAILED_PRECONDITION. */
    o.tag = "dies";
    /* It exits once the probe has started twice: the first attempt's
     * failure is then on record (one attempt at a time), however late. */
    snprintf(check, sizeof check, "echo >> %s/probes; exit 1", g_dir);
    snprintf(script, sizeof script,
             "i=0; while [ \"$(cat %s/probes 2>/dev/null | wc -l)\" -lt 2 ] && "
             "[ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; exit 4",
             g_dir);
    o.ready = exec_probe(&pr, &ep, check, 50);
    pid = svc_start(c, script, &o, NULL);
    r = recv_id(c, wait_ready_send(c, pid, NULL, 20000));
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT(strstr(r->error->message, "exit code 4"));
    ASSERT(strstr(r->error->message, "exit 1")); /* the probe's last error */
    sa_response_free(r);
    ASSERT_EQ(zombies_settle(A.pid), 0); /* probe children are reaped */
    tmpdir_remove();
    sa_client_close(c);
    agent_stop(&A);
}

TEST(output_probe_line_prefix_and_text_across_writes)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    Probe pr;
    Sandbox__Agent__V1__OutputProbe op;
    svc_opts_t o = {.tag = "out", .ready = output_probe(&pr, &op, NULL, "Listening on"),
                    .follow = 1};
    uint64_t sid;
    /* "Listening on" inside a line does not count; at a line start it does. */
    svc_start(c, "echo 'not Listening on'; sleep 0.2; echo 'Listening on 8080'; exec sleep 300",
              &o, &sid);
    Response *r = recv_id(c, wait_ready_send(c, 0, "out", 20000));
    ASSERT_RESULT(r, PROCESS);
    sa_response_free(r);
    /* The follower sees ProcessReady right after the line that made it. */
    char seen[256] = "";
    for (;;) {
        r = recv_id(c, sid);
        if (r->result_case == RES(READY)) {
            sa_response_free(r);
            break;
        }
        ASSERT_RESULT(r, OUTPUT);
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%.*s",
                 (int)r->output->data.len, (char *)r->output->data.data);
        sa_response_free(r);
    }
    ASSERT_STR_EQ(seen, "not Listening on\nListening on 8080\n");
    /* A text split across two writes. */
    o.tag = "split";
    o.follow = 0;
    o.ready = output_probe(&pr, &op, "cde", NULL);
    svc_start(c, "printf ab; printf c; sleep 0.2; printf 'def\\n'; exec sleep 300", &o, NULL);
    r = recv_id(c, wait_ready_send(c, 0, "split", 20000));
    ASSERT_RESULT(r, PROCESS);
    sa_response_free(r);
    /* After one large write (read at once, kept in the log without a
     * copy): the probe reads the bytes where the log keeps them. */
    o.tag = "big";
    o.ready = output_probe(&pr, &op, NULL, "Listening on");
    svc_start(c,
              "python3 -c 'import sys; sys.stdout.write(\"x\" * 20000 + \"\\nListening on\\n\")'"
              "; exec sleep 300",
              &o, NULL);
    r = recv_id(c, wait_ready_send(c, 0, "big", 20000));
    ASSERT_RESULT(r, PROCESS);
    sa_response_free(r);
    /* And one that never comes. */
    o.tag = "never";
    o.ready = output_probe(&pr, &op, "never printed", NULL);
    svc_start(c, "echo something else; exec sleep 300", &o, NULL);
    r = recv_id(c, wait_ready_send(c, 0, "never", 300));
    ASSERT_ERROR(r, DEADLINE_EXCEEDED);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(an_unhealthy_service_is_restarted)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    tmpdir_make();
    char script[300], check[300];
    snprintf(script, sizeof script, "touch %s/ok; exec sleep 300", g_dir);
    snprintf(check, sizeof check, "test -e %s/ok", g_dir);
    Probe pr;
    Sandbox__Agent__V1__ExecProbe ep;
    exec_probe(&pr, &ep, check, 50);
    pr.failure_threshold = 2;
    svc_opts_t o = {.tag = "health", .mode = MODE(ON_FAILURE), .backoff_initial_ms = 20,
                    .health = &pr};
    /* The file is there before the first probe, however late the shell
     * that makes it runs: six probes pass and nothing is restarted. */
    int fd = open(P("ok"), O_CREAT | O_WRONLY, 0644);
    ASSERT(fd >= 0);
    close(fd);
    uint32_t pid = svc_start(c, script, &o, NULL);
    usleep(300000);
    Response *h = get_tag(c, "health");
    ASSERT_EQ(h->process->service_state, SSTATE(READY));
    ASSERT_EQ(h->process->restarts, 0);
    ASSERT_EQ(h->process->pid, pid);
    sa_response_free(h);
    ASSERT_EQ(unlink(P("ok")), 0);
    /* Two failed probes: UNHEALTHY, killed, and (a failure) restarted; the
     * new run makes the file again and is healthy. */
    for (int i = 0;; i++) {
        Response *r = get_tag(c, "health");
        /* A new run whose shell is slow to make the file may fail twice
         * too: at least one restart. */
        int back = r->process->restarts >= 1 && r->process->service_state == SSTATE(READY) &&
                   r->process->pid != pid;
        if (back) {
            ASSERT(r->process->last_exit);
            ASSERT_EQ(r->process->last_exit->signal, SIGTERM);
        }
        sa_response_free(r);
        if (back)
            break;
        ASSERT_LT(i, 3000); /* 30 s */
        usleep(10000);
    }
    tmpdir_remove();
    sa_client_close(c);
    agent_stop(&A);
}

TEST(bad_probes)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    Probe pr;
    Sandbox__Agent__V1__TcpProbe tp;
    Sandbox__Agent__V1__HttpProbe hp;
    Sandbox__Agent__V1__OutputProbe op;
    svc_opts_t o = {.tag = "bad", .ready = tcp_probe(&pr, &tp, 0, 100)};
    Response *r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "port"));
    sa_response_free(r);
    tp.port = 80;
    tp.host = "example.com";
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "no name lookups"));
    sa_response_free(r);
    o.ready = http_probe(&pr, &hp, 80, "/x\r\nEvil: 1", 100, 100);
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    o.ready = NULL;
    o.health = output_probe(&pr, &op, "x", NULL);
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "only be a ready probe"));
    sa_response_free(r);
    o.health = NULL;
    o.ready = output_probe(&pr, &op, "x", "y");
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    sandbox__agent__v1__probe__init(&pr);
    o.ready = &pr;
    r = recv_id(c, svc_send(c, "true", &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    /* WaitReady of a plain running process answers at once. */
    o.ready = NULL;
    o.tag = NULL;
    uint32_t pid = svc_start(c, "exec sleep 300", &o, NULL);
    r = recv_id(c, wait_ready_send(c, pid, NULL, 0));
    ASSERT_RESULT(r, PROCESS);
    sa_response_free(r);
    r = recv_id(c, wait_ready_send(c, 0, NULL, 0));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = recv_id(c, wait_ready_send(c, 0, "nosuch", 0));
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

/* ------------------------------------------------------------ services.d */

static char *read_log(agent_t *a)
{
    static char buf[65536];
    FILE *f = fopen(a->log, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return buf;
}

TEST(services_dir_starts_good_files_and_names_the_bad_line)
{
    tmpdir_make();
    char dir[128];
    snprintf(dir, sizeof dir, "%s/services.d", g_dir);
    ASSERT_EQ(mkdir(dir, 0755), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/10-web.conf", dir);
    put_text(path,
               "# said hello, then serves\n"
               "exec = /bin/sh -c 'echo hello from web; exec sleep 300'\n"
               "restart = on-failure\n"
               "backoff_initial_ms = 20\n"
               "ready = line:hello from\n",
               0644);
    snprintf(path, sizeof path, "%s/20-typo.conf", dir);
    put_text(path, "exec = sleep 300\n\ncomand = x\n", 0644);
    snprintf(path, sizeof path, "%s/30-args.conf", dir);
    put_text(path,
               "command = /bin/sh\narg = -c\narg = exec sleep 300\ntag = second\n"
               "env = GREETING=hi there\nrestart = always\n",
               0644);
    snprintf(path, sizeof path, "%s/40-open.conf", dir);
    put_text(path, "exec = sleep 300\n", 0666);
    snprintf(path, sizeof path, "%s/50-noexec.conf", dir);
    put_text(path, "tag = x\nready = tcp:80\n", 0644);
    snprintf(path, sizeof path, "%s/README", dir);
    put_text(path, "exec = not a service file\n", 0644);

    agent_start(&A, "--services-dir", dir, NULL);
    sa_client_t *c = agent_connect(&A);
    Response *r = recv_id(c, wait_ready_send(c, 0, "10-web", 20000));
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->service_state, SSTATE(READY));
    uint32_t pid = r->process->pid;
    sa_response_free(r);
    ASSERT_EQ(state_of(c, "second"), SSTATE(READY));
    /* Exactly those two run. */
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    r = simple(c, OP(LIST_PROCESSES), &lp);
    ASSERT_EQ(r->processes->n_processes, 2);
    sa_response_free(r);
    const char *log = read_log(&A);
    ASSERT(strstr(log, "20-typo.conf:3: unknown key 'comand'"));
    ASSERT(strstr(log, "40-open.conf: writable by others"));
    ASSERT(strstr(log, "50-noexec.conf: no exec"));
    /* Supervised like any service: a crash brings it back. */
    ASSERT_EQ(kill((pid_t)pid, SIGKILL), 0);
    for (int i = 0;; i++) {
        r = get_tag(c, "10-web");
        int back = r->process->restarts == 1 && r->process->service_state == SSTATE(READY);
        sa_response_free(r);
        if (back)
            break;
        ASSERT_LT(i, 1000);
        usleep(10000);
    }
    sa_client_close(c);
    agent_stop(&A);
    tmpdir_remove();
}

/* ------------------------------------------------------------ sandboxctl */

TEST(sandboxctl_start_ready_ps_wait_ready_stop)
{
    agent_start(&A, NULL);
    tmpdir_make();
    int port = free_port();
    char args[512], out[4096];
    snprintf(args, sizeof args,
             "start --restart on-failure --ready tcp:%d --tag web -- python3 -m http.server %d "
             "--bind 127.0.0.1 --directory %s",
             port, port, g_dir);
    ASSERT_EQ(run_ctl(&A, args, out, sizeof out), 0);
    int pid = atoi(out);
    ASSERT_GT(pid, 0);
    /* Printed once ready: the server answers now, with no sleep or retry. */
    ASSERT(tcp_connects(port));
    ASSERT_EQ(run_ctl(&A, "ps", out, sizeof out), 0);
    ASSERT(strstr(out, "RESTARTS"));
    ASSERT(strstr(out, "ready"));
    ASSERT(strstr(out, "web"));
    ASSERT_EQ(run_ctl(&A, "wait-ready web", out, sizeof out), 0);
    ASSERT_EQ(atoi(out), pid);
    ASSERT_EQ(run_ctl(&A, "--json ps", out, sizeof out), 0);
    ASSERT(strstr(out, "\"restarts\":0,\"service_state\":\"ready\""));
    ASSERT_EQ(run_ctl(&A, "stop web", out, sizeof out), 0);
    ASSERT_EQ(run_ctl(&A, "ps -a", out, sizeof out), 0);
    ASSERT(strstr(out, "stopped"));
    ASSERT_EQ(run_ctl(&A, "stop nosuch", out, sizeof out), 1);
    ASSERT(strstr(out, "NOT_FOUND"));
    /* Never ready: start fails with the probe's last error. */
    snprintf(args, sizeof args,
             "start --ready tcp:%d --ready-timeout 0.5 --tag never -- sleep 300", free_port());
    ASSERT_EQ(run_ctl(&A, args, out, sizeof out), 1);
    ASSERT(strstr(out, "DEADLINE_EXCEEDED"));
    ASSERT(strstr(out, "Connection refused"));
    ASSERT_EQ(run_ctl(&A, "start --ready nope:1 -- true", out, sizeof out), 2);
    ASSERT(strstr(out, "expected tcp:, http:, exec:, output: or line:"));
    tmpdir_remove();
    agent_stop(&A);
}

/* Where in its output a service became ready, where a run exited and where
 * it restarted: notes on stderr, JSON lines with --json, also with --tail. */
TEST(sandboxctl_logs_says_a_services_events)
{
    agent_start(&A, NULL);
    ctl_out_t o;
    CTL(&o, A.addr, "start", "--restart", "on-failure", "--max-restarts", "1", "--backoff", "0.1",
        "--ready", "line:up", "--tag", "ev", "--", "sh", "-c", "echo up; echo bye; exit 3");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);

    /* -f follows it across its restart to its end (it gives up). */
    CTL(&o, A.addr, "logs", "-f", "ev");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.out, "up\nbye\nup\nbye\n");
    const char *ready1 = strstr(o.err, "sandboxctl: logs: the service is ready here\n");
    const char *exited = strstr(o.err, "sandboxctl: logs: a run of the service exited here with "
                                       "code 3\n");
    const char *restarted = strstr(o.err, "sandboxctl: logs: the service restarted here as pid ");
    ASSERT(ready1 && exited && restarted);
    ASSERT(ready1 < exited && exited < restarted);
    ASSERT(strstr(restarted, "(restart 1)\n"));
    ASSERT(strstr(restarted, "the service is ready here\n")); /* the second run's */
    ctl_out_free(&o);

    /* --json: each a JSON line in its place, stderr quiet. */
    CTL(&o, A.addr, "--json", "logs", "ev");
    ASSERT_EQ(o.status, 0);
    ASSERT_EQ(o.err_len, 0);
    ASSERT_GE(json_lines_ok(o.out, o.out_len, -1), 7);
    ready1 = strstr(o.out, "{\"event\":\"ready\",\"timestamp_unix_nano\":");
    exited = strstr(o.out, "{\"event\":\"exited\",\"exit_code\":3,\"signal\":0,");
    restarted = strstr(o.out, "{\"event\":\"restarted\",\"pid\":");
    ASSERT(ready1 && exited && restarted);
    ASSERT(ready1 < exited && exited < restarted);
    ASSERT(strstr(restarted, "\"restarts\":1,"));
    ASSERT(strstr(restarted, "{\"event\":\"ready\""));
    ASSERT(strstr(restarted, "{\"event\":\"exit\",\"exit_code\":3"));
    ctl_out_free(&o);

    /* --tail: the events among the lines printed, and none before them. */
    CTL(&o, A.addr, "logs", "--tail", "3", "ev");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.out, "bye\nup\nbye\n");
    exited = strstr(o.err, "a run of the service exited here with code 3\n");
    ASSERT(exited && strstr(exited, "the service restarted here as pid "));
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "--tail", "1", "ev");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.out, "bye\n");
    ASSERT(!strstr(o.err, "exited here") && !strstr(o.err, "restarted here"));
    ctl_out_free(&o);
    agent_stop(&A);
}

/* logs --tail -f on a service waiting to restart: the follow that goes on
 * from the last line starts where the run exited, which the agent tells
 * again; it is said once. */
TEST(sandboxctl_logs_tail_follow_says_each_event_once)
{
    agent_start(&A, NULL);
    tmpdir_make();
    char script[512];
    snprintf(script, sizeof script,
             "if [ -e %s ]; then echo three; exit 0; fi; touch %s; echo one; echo two; exit 4",
             P("ran"), P("ran"));
    ctl_out_t o;
    CTL(&o, A.addr, "start", "--restart", "on-failure", "--max-restarts", "2", "--backoff", "2",
        "--tag", "tf", "--", "sh", "-c", script);
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    sa_client_t *c = agent_connect(&A);
    for (int i = 0; i < 1000 && state_of(c, "tf") != SSTATE(BACKING_OFF); i++)
        usleep(10000);
    ASSERT_EQ(state_of(c, "tf"), SSTATE(BACKING_OFF));
    CTL(&o, A.addr, "logs", "--tail", "1", "-f", "tf");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.out, "two\nthree\n");
    static const char once[] = "a run of the service exited here with code 4\n";
    const char *exited = strstr(o.err, once);
    ASSERT(exited);
    ASSERT(!strstr(exited + sizeof once - 1, once));
    ASSERT(strstr(exited, "the service restarted here as pid "));
    ctl_out_free(&o);
    sa_client_close(c);
    tmpdir_remove();
    agent_stop(&A);
}

TEST_MAIN(TEST_ENTRY(on_failure_backs_off_more_each_time_then_gives_up),
          TEST_ENTRY(always_restarts_after_exit_0_and_on_failure_does_not),
          TEST_ENTRY(a_signal_sent_by_the_client_is_not_restarted),
          TEST_ENTRY(stop_service_stops_for_good_and_frees_the_tag),
          TEST_ENTRY(stop_while_backing_off_ends_the_follower),
          TEST_ENTRY_T(a_restart_storm_costs_bounded_cpu_and_memory, 120),
          TEST_ENTRY(bad_service_requests),
          TEST_ENTRY(services_waiting_to_restart_count_against_max_processes),
          TEST_ENTRY(wait_ready_returns_after_the_port_opens_within_an_interval),
          TEST_ENTRY(http_probe_against_python_http_server),
          TEST_ENTRY(http_probe_that_times_out),
          TEST_ENTRY(exec_probe_and_exit_before_ready),
          TEST_ENTRY(output_probe_line_prefix_and_text_across_writes),
          TEST_ENTRY(an_unhealthy_service_is_restarted),
          TEST_ENTRY(bad_probes),
          TEST_ENTRY(services_dir_starts_good_files_and_names_the_bad_line),
          TEST_ENTRY(sandboxctl_start_ready_ps_wait_ready_stop),
          TEST_ENTRY(sandboxctl_logs_says_a_services_events),
          TEST_ENTRY(sandboxctl_logs_tail_follow_says_each_event_once))
