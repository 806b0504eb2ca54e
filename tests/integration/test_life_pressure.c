/* The agent under pressure, against the real binary: a client that stops
 * reading is closed after the write timeout while others are served; shutdown
 * kills whole process groups; the process, frame and queue limits are hit and
 * recovered from; Ping keeps answering under CPU and memory hogs; fork failure
 * (RLIMIT_NPROC) is a clear RESOURCE_EXHAUSTED.
 *
 * Covered elsewhere, not repeated here: --max-connections, --max-inflight and
 * EMFILE (test_life.c), --max-kept-output dropping the oldest exited process
 * and shutdown of the processes themselves (test_proc.c). */
#include "proc_helpers.h"

#include <poll.h>
#include <sys/socket.h>

#include <grp.h>
#include <sys/resource.h>
#include <sys/socket.h>

static agent_t A;

/* Gone or a zombie (a zombie's parent may have exited just now; whoever
 * inherits it reaps it). */
static int dead(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!slurp(path, buf, sizeof buf))
        return 1;
    const char *rp = strrchr(buf, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static int dead_within(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (dead(pid))
            return 1;
        usleep(10000);
    }
    return 0;
}

/* The first n lines of a followed process's output, as numbers. */
static void read_numbers(sa_client_t *c, uint64_t id, int *out, int n)
{
    collected_t k = {0};
    for (;;) {
        int lines = 0;
        for (size_t i = 0; i < k.len; i++)
            lines += k.data[i] == '\n';
        if (lines >= n)
            break;
        ASSERT(!collect_one(&k, recv_id(c, id)));
    }
    const char *p = k.data;
    for (int i = 0; i < n; i++) {
        out[i] = atoi(p);
        p = strchr(p, '\n') + 1;
    }
    collected_free(&k);
}

/* ------------------------------------------------------------ write timeout */

/* One client follows a process that writes without end and never reads; a
 * second reads its own follow slowly but steadily; a third pings throughout.
 * The first is closed once its queue has not moved for --write-timeout
 * seconds; the slow reader, whose queue moves, stays; pings are answered all
 * along; the process carries on. */
TEST(write_timeout_closes_a_client_that_stops_reading)
{
    agent_start(&A, "--write-timeout", "2", "--max-queued-bytes", "65536", NULL);
    sa_client_t *pinger = agent_connect(&A);
    sa_client_t *stuck = agent_connect(&A);
    sa_client_t *slow = agent_connect(&A);
    /* About 10 MB/s, whatever the machine: enough to fill any socket buffer. */
    uint32_t pid = start_sh(pinger, "while :; do head -c 131072 /dev/zero; sleep 0.01; done",
                            NULL, NULL);
    follow_send(stuck, pid, 0, 0, 0);
    follow_send(slow, pid, 0, 0, 0);

    int closed_at = -1, pings = 0, slow_frames = 0;
    for (int i = 0; i < 70; i++) { /* 100 ms each */
        double t0 = now_ms();
        ping_ok(pinger);
        pings++;
        /* The slow reader takes 64 KiB off its socket every turn: slow, but
         * its queue moves. (Reading whole responses would not do: one read
         * of the client library may buffer many frames, and the socket
         * would then sit untouched for seconds.) */
        {
            static char sink[65536];
            struct pollfd pfd = {.fd = sa_client_fd(slow), .events = POLLIN};
            ASSERT_EQ(poll(&pfd, 1, 5000), 1);
            ssize_t got = recv(sa_client_fd(slow), sink, sizeof sink, 0);
            ASSERT_GT(got, 0);
        }
        slow_frames++;
        if (closed_at < 0 && log_count(A.log, "no output consumed for 2s"))
            closed_at = i;
        /* Run on for 4 s after the close: two more timeout periods in which
         * the slow reader must not be closed. */
        if (closed_at >= 0 && i - closed_at >= 40)
            break;
        double left = 100 - (now_ms() - t0);
        if (left > 0)
            usleep((useconds_t)(left * 1000));
    }
    printf("  stuck client closed after %.1f s; %d pings answered, slow reader took %d reads of 64 KiB\n",
           closed_at * 0.1, pings, slow_frames);
    ASSERT_GE(closed_at, 0);
    /* Only the stuck one: the slow reader's queue moved. */
    ASSERT_EQ(log_count(A.log, "no output consumed"), 1);

    /* The stuck client gets what was in flight, then the end. */
    size_t drained = 0;
    for (;;) {
        Response *r = NULL;
        int rc = sa_client_recv(stuck, &r, 5000);
        if (rc == -EPIPE || rc == -ECONNRESET)
            break;
        if (rc < 0)
            FAIL("stuck client: expected EOF after the close, got %s", strerror(-rc));
        drained++;
        sa_response_free(r);
    }
    printf("  stuck client drained %zu responses before EOF\n", drained);
    sa_client_close(stuck);

    /* The slow reader is still served, and the process still runs. */
    Response *r = NULL;
    ASSERT_EQ(sa_client_recv(slow, &r, 5000), 0);
    sa_response_free(r);
    sa_client_close(slow);
    ASSERT_EQ(kill((pid_t)pid, 0), 0);
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.pid = pid;
    r = simple(pinger, OP(GET_PROCESS), &gp);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING);
    sa_response_free(r);
    r = send_signal(pinger, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    sa_client_close(pinger);
    agent_stop(&A);
}

/* ------------------------------------------------------------ shutdown */

/* Start a shell whose background grandchildren print their pids (n lines)
 * and check they are in the shell's process group. */
static uint32_t start_family(sa_client_t *c, const char *script, int *gc, int n)
{
    start_opts_t o = {.follow = 1};
    uint64_t id;
    uint32_t sh = start_sh(c, script, &o, &id);
    read_numbers(c, id, gc, n);
    for (int i = 0; i < n; i++) {
        ASSERT_GT(gc[i], 0);
        ASSERT_EQ(getpgid(gc[i]), (pid_t)sh);
    }
    return sh;
}

/* Background grandchildren in the shell's group are gone after the agent's
 * shutdown, which exits 0. */
TEST(shutdown_kills_background_grandchildren)
{
    agent_start(&A, "--kill-grace-ms", "300", NULL);
    sa_client_t *c = agent_connect(&A);
    int gc[2];
    uint32_t sh = start_family(c, "sleep 300 & echo $!; (sleep 300; echo never) & echo $!; wait",
                               gc, 2);
    sa_client_close(c);
    agent_stop(&A); /* exit 0 */
    ASSERT(dead_within((pid_t)sh, 2000));
    for (int i = 0; i < 2; i++)
        if (!dead_within(gc[i], 2000))
            FAIL("grandchild %d (pid %d) survived the shutdown", i, gc[i]);
}

/* The shell dies of the SIGTERM, its grandchild ignores it: the SIGKILL after
 * --kill-grace-ms must still reach the group. */
TEST(shutdown_sigkills_a_grandchild_that_ignores_sigterm)
{
    agent_start(&A, "--kill-grace-ms", "300", NULL);
    sa_client_t *c = agent_connect(&A);
    int gc;
    /* The grandchild prints its pid once SIGTERM is ignored. */
    uint32_t sh = start_family(
        c, "sh -c 'trap \"\" TERM; echo $$; while :; do sleep 0.05; done' & wait", &gc, 1);
    sa_client_close(c);
    agent_stop(&A);
    ASSERT(dead_within((pid_t)sh, 2000));
    int survived = !dead_within(gc, 2000);
    if (survived)
        kill(gc, SIGKILL); /* leave nothing behind */
    if (survived)
        FAIL("grandchild %d ignoring SIGTERM survived the shutdown", gc);
}

/* ------------------------------------------------------------ limits */

TEST(max_processes_hit_and_recovered)
{
    agent_start(&A, "--max-processes", "3", NULL);
    sa_client_t *c = agent_connect(&A);
    const char *sl[] = {"sleep", "300"};
    uint32_t p[3];
    for (int i = 0; i < 3; i++)
        p[i] = start_argv(c, sl, 2, NULL, NULL);
    Response *r = recv_id(c, start_send(c, sl, 2, NULL));
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    if (!strstr(r->error->message, "--max-processes") || !strstr(r->error->message, "3"))
        FAIL("unclear message: %s", r->error->message);
    sa_response_free(r);
    ping_ok(c);
    /* One exits: a new one starts. */
    r = send_signal(c, p[1], SIGKILL, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = wait_exit(c, p[1]);
    sa_response_free(r);
    uint32_t p4 = start_argv(c, sl, 2, NULL, NULL);
    /* And the limit holds again. */
    r = recv_id(c, start_send(c, sl, 2, NULL));
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
    ASSERT(dead_within((pid_t)p[0], 2000) && dead_within((pid_t)p4, 2000));
}

/* A frame above --max-frame-size is a protocol error that closes that
 * connection only; with the flag raised the same request works. */
TEST(max_frame_size_hit_then_raised)
{
    size_t big = 100000;
    char *payload = malloc(big);
    ASSERT(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)('a' + i % 26);

    agent_start(&A, "--max-frame-size", "65536", NULL);
    sa_client_t *c = agent_connect(&A);
    ASSERT_EQ(sa_client_max_frame(c), 65536);
    Sandbox__Agent__V1__Ping p;
    Request req = ping_req(&p, payload, 60000); /* fits */
    Response *r = call(c, &req);
    ASSERT_RESULT(r, PONG);
    ASSERT_EQ(r->pong->payload.len, 60000);
    sa_response_free(r);
    req = ping_req(&p, payload, big);
    ASSERT_EQ(sa_client_send(c, &req), 0);
    ASSERT_EQ(sa_client_recv(c, &r, 5000), 0);
    ASSERT_ERROR(r, PROTOCOL_ERROR);
    if (!strstr(r->error->message, "exceeds the maximum frame size 65536"))
        FAIL("unclear message: %s", r->error->message);
    sa_response_free(r);
    int rc = sa_client_recv(c, &r, 5000);
    ASSERT(rc == -EPIPE || rc == -ECONNRESET);
    sa_client_close(c);
    c = agent_connect(&A); /* the agent carries on */
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&A);

    agent_start(&A, "--max-frame-size", "262144", NULL);
    c = agent_connect(&A);
    ASSERT_EQ(sa_client_max_frame(c), 262144);
    req = ping_req(&p, payload, big);
    r = call(c, &req);
    ASSERT_RESULT(r, PONG);
    ASSERT_EQ(r->pong->payload.len, big);
    ASSERT_MEM_EQ(r->pong->payload.data, payload, big);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
    free(payload);
}

/* With a 64 KiB --max-queued-bytes, a lossless follower that does not read
 * for a second stalls the queue (and the process: lossless); when it reads
 * again it gets every byte, and a request sent meanwhile is answered. */
TEST(max_queued_bytes_pauses_and_resumes)
{
    agent_start(&A, "--max-queued-bytes", "65536", "--output-window", "262144", NULL);
    sa_client_t *c = agent_connect(&A);
    sa_client_t *other = agent_connect(&A);
    start_opts_t o = {.follow = 1, .lossless = 1};
    uint64_t id;
    uint32_t pid = start_sh(c, "head -c 6000000 /dev/zero", &o, &id);
    usleep(1000 * 1000);
    ping_ok(other); /* the agent serves others meanwhile */
    Response *r = NULL;
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.pid = pid;
    r = simple(other, OP(GET_PROCESS), &gp);
    ASSERT_RESULT(r, PROCESS);
    /* Lossless and unread: the process waits on its pipe. */
    ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING);
    ASSERT_LT(r->process->next_sequence, 6000000);
    sa_response_free(r);
    Sandbox__Agent__V1__Ping p;
    Request req = ping_req(&p, "x", 1);
    ASSERT_EQ(sa_client_send(c, &req), 0);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT_EQ(k.len, 6000000);
    ASSERT_EQ(k.gaps, 0);
    ASSERT(k.exited);
    ASSERT_EQ(k.exit_code, 0);
    collected_free(&k);
    r = recv_id(c, req.id);
    ASSERT_RESULT(r, PONG);
    sa_response_free(r);
    sa_client_close(other);
    sa_client_close(c);
    agent_stop(&A);
}

/* ------------------------------------------------------------ hogs */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long long mem_available(void)
{
    char buf[4096];
    long long kb = -1;
    slurp("/proc/meminfo", buf, sizeof buf);
    const char *p = strstr(buf, "MemAvailable:");
    if (p)
        sscanf(p, "MemAvailable: %lld", &kb);
    return kb * 1024;
}

TEST(ping_answers_under_cpu_and_memory_hogs)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    sa_client_t *pc = agent_connect(&A);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > 64)
        ncpu = 64;
    uint32_t hogs[66];
    int nh = 0;
    for (long i = 0; i < ncpu; i++)
        hogs[nh++] = start_sh(c, "while :; do :; done", NULL, NULL);
    /* 1 GiB touched page by page, less on a small machine. */
    long long mem = 1ll << 30, avail = mem_available();
    if (avail > 0 && avail / 4 < mem)
        mem = avail / 4;
    char script[400];
    snprintf(script, sizeof script,
             "exec python3 -c 'import sys, time\n"
             "b = bytearray(%lld)\n"
             "for i in range(0, len(b), 4096): b[i] = 1\n"
             "print(\"touched\", flush=True)\n"
             "time.sleep(300)'",
             mem);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    uint32_t mhog = start_sh(c, script, &o, &id);
    hogs[nh++] = mhog;
    collected_t k = {0};
    while (!k.data || !memmem(k.data, k.len, "touched", 7))
        if (collect_one(&k, recv_id(c, id)))
            FAIL("memory hog exited: %.*s", (int)k.len, k.data ? k.data : "");
    collected_free(&k);
    long long rss = proc_rss((pid_t)mhog);
    ASSERT_GE(rss, mem / 2);

    enum { N = 200 };
    static double ms[N];
    for (int i = 0; i < N; i++) {
        double t0 = now_ms();
        ping_ok(pc);
        ms[i] = now_ms() - t0;
    }
    ASSERT(agent_alive(&A));
    qsort(ms, N, sizeof ms[0], cmp_double);
    printf("  %ld CPU hogs + %lld MiB memory hog (rss %lld MiB): %d pings, "
           "p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
           ncpu, mem >> 20, rss >> 20, N, ms[N / 2], ms[N * 99 / 100], ms[N - 1]);

    /* Stopped through the agent, group and all. */
    for (int i = 0; i < nh; i++) {
        Response *r = send_signal(c, hogs[i], SIGKILL, 1);
        ASSERT_RESULT(r, ACK);
        sa_response_free(r);
    }
    for (int i = 0; i < nh; i++) {
        Response *r = wait_exit(c, hogs[i]);
        ASSERT_RESULT(r, EXIT);
        ASSERT_EQ(r->exit->signal, SIGKILL);
        sa_response_free(r);
        ASSERT(dead_within((pid_t)hogs[i], 2000));
    }
    ping_ok(pc);
    sa_client_close(pc);
    sa_client_close(c);
    agent_stop(&A);
}

/* ------------------------------------------------------------ fork failure */

/* The agent runs as an otherwise unused uid with RLIMIT_NPROC at what that uid
 * runs (the agent's own threads count too, so a first start measures them)
 * plus three. The fourth start cannot fork. */
#define NPROC_UID 61337

/* Tasks (threads included: RLIMIT_NPROC counts them) of uid. */
static int uid_tasks(uid_t uid)
{
    char cmd[128], out[64];
    snprintf(cmd, sizeof cmd, "ps -eLo uid= | awk '$1 == %u' | wc -l", (unsigned)uid);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    if (!fgets(out, sizeof out, f))
        out[0] = 0;
    pclose(f);
    return atoi(out);
}

/* Start the agent as uid, with RLIMIT_NPROC at nproc unless 0. */
static void agent_start_as(agent_t *a, uid_t uid, rlim_t nproc)
{
    int pfd[2];
    char readyfd[16];
    snprintf(a->dir, sizeof a->dir, "/tmp/sa-test-XXXXXX");
    if (!mkdtemp(a->dir))
        FAIL("mkdtemp: %s", strerror(errno));
    if (getuid() == 0 && chown(a->dir, uid, uid) < 0)
        FAIL("chown %s: %s", a->dir, strerror(errno));
    snprintf(a->sock, sizeof a->sock, "%s/agent.sock", a->dir);
    snprintf(a->addr, sizeof a->addr, "unix:%s", a->sock);
    snprintf(a->log, sizeof a->log, "%s/agent.log", a->dir);
    ASSERT_EQ(pipe(pfd), 0);
    snprintf(readyfd, sizeof readyfd, "%d", pfd[1]);
    a->pid = fork();
    if (a->pid == 0) {
        int lfd = open(a->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lfd >= 0)
            dup2(lfd, 2);
        close(pfd[0]);
        if (getuid() == 0 &&
            (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)) {
            fprintf(stderr, "cannot become uid %u: %s\n", (unsigned)uid, strerror(errno));
            _exit(126);
        }
        struct rlimit rl = {nproc, nproc};
        if (nproc && setrlimit(RLIMIT_NPROC, &rl) < 0) {
            fprintf(stderr, "setrlimit: %s\n", strerror(errno));
            _exit(126);
        }
        execl(AGENT_BIN, AGENT_BIN, "--listen", a->addr, "--ready-fd", readyfd, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char buf[16];
    ssize_t r = read(pfd[0], buf, sizeof buf);
    close(pfd[0]);
    if (r <= 0) {
        char log[2048];
        slurp(a->log, log, sizeof log);
        FAIL("agent as uid %u did not become ready: %s", (unsigned)uid, log);
    }
}

TEST(fork_failure_is_resource_exhausted)
{
    uid_t uid = NPROC_UID;
    if (getuid() != 0) {
        /* RLIMIT_NPROC counts every task of the uid: as ourselves, the test
         * runner's own processes come and go and the count races. */
        printf("  SKIP: needs root to run the agent as an unused uid\n");
        return;
    }
    if (uid_tasks(uid) != 0) {
        printf("  SKIP: uid %u already runs processes\n", NPROC_UID);
        return;
    }
    /* Setting the limit on the running agent (prlimit) would need
     * CAP_SYS_RESOURCE, which containers often lack: start twice. */
    agent_start_as(&A, uid, 0);
    int tasks = uid_tasks(uid);
    agent_stop(&A);
    agent_start_as(&A, uid, (rlim_t)tasks + 3);
    sa_client_t *c = agent_connect(&A);
    const char *sl[] = {"sleep", "300"};
    uint32_t p[3];
    for (int i = 0; i < 3; i++)
        p[i] = start_argv(c, sl, 2, NULL, NULL);
    Response *r = recv_id(c, start_send(c, sl, 2, NULL));
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    printf("  the fourth start: %s\n", r->error->message);
    if (!strstr(r->error->message, "refuses more processes"))
        FAIL("unclear message: %s", r->error->message);
    ASSERT_EQ(r->error->os_errno, EAGAIN);
    sa_response_free(r);
    ping_ok(c); /* still serving */
    /* One goes, one more starts. */
    r = send_signal(c, p[0], SIGKILL, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = wait_exit(c, p[0]);
    sa_response_free(r);
    p[0] = start_argv(c, sl, 2, NULL, NULL);
    /* Room for a clean exit (LeakSanitizer needs a thread at exit). */
    for (int i = 0; i < 3; i++) {
        r = send_signal(c, p[i], SIGKILL, 0);
        ASSERT_RESULT(r, ACK);
        sa_response_free(r);
        r = wait_exit(c, p[i]);
        sa_response_free(r);
    }
    sa_client_close(c);
    agent_stop(&A);
}

TEST_MAIN(TEST_ENTRY(write_timeout_closes_a_client_that_stops_reading),
          TEST_ENTRY(shutdown_kills_background_grandchildren),
          TEST_ENTRY(shutdown_sigkills_a_grandchild_that_ignores_sigterm),
          TEST_ENTRY(max_processes_hit_and_recovered), TEST_ENTRY(max_frame_size_hit_then_raised),
          TEST_ENTRY(max_queued_bytes_pauses_and_resumes),
          TEST_ENTRY(ping_answers_under_cpu_and_memory_hogs),
          TEST_ENTRY(fork_failure_is_resource_exhausted))
