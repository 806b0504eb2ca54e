/* figs.c - the figures of the benchmark, each measured for sandbox-agent and
 * its references in the same run (see bench/README in the top README's
 * Performance section for what each one means). */
#include "bench.h"
#include "frame.h"
#include "spawnref.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)

agent_t g_agent;
qga_t g_qga;
int g_have_qga;
long g_qga_idle_kib = -1, g_qga_capture_kib = -1;

/* ------------------------------------------------------------ requests */

/* Send a StartProcess; returns its id, 0 on a broken link. */
static uint64_t send_start(sa_client_t *c, const char *cmd, const char *const *args, int follow,
                           int lossless, int stdin_pipe)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    size_t n = 0;
    while (args && args[n])
        n++;
    sp.command = (char *)cmd;
    sp.args = (char **)args;
    sp.n_args = n;
    sp.follow = follow;
    sp.lossless = lossless;
    if (stdin_pipe)
        sp.stdin_mode = SANDBOX__AGENT__V1__STDIN_MODE__STDIN_PIPE;
    req.op_case = OP(START);
    req.start = &sp;
    return sa_client_send(c, &req) < 0 ? 0 : req.id;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "sa-bench: %s: %s\n", what, why);
    exit(1);
}

static const char *resp_why(const Response *r)
{
    static char buf[300];
    if (r->result_case == RES(ERROR))
        snprintf(buf, sizeof buf, "%s: %s", sa_error_code_name(r->error->code),
                 r->error->message);
    else
        snprintf(buf, sizeof buf, "unexpected result %d", (int)r->result_case);
    return buf;
}

/* One exec round trip through the agent: StartProcess{follow} of /bin/true
 * until its ProcessExit. Returns ns. */
double agent_exec_once(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    Response *r = NULL;
    sp.command = (char *)"/bin/true";
    sp.follow = 1;
    req.op_case = OP(START);
    req.start = &sp;
    uint64_t t0 = now_ns();
    if (sa_client_call(c, &req, &r, 30000) < 0)
        die("exec round trip", "the connection broke");
    double dt = (double)(now_ns() - t0);
    if (r->result_case != RES(EXIT) || r->exit->exit_code != 0)
        die("exec round trip", resp_why(r));
    sa_response_free(r);
    return dt;
}

static double floor_exec_once(void)
{
    static char *const argv[] = {(char *)"/bin/true", NULL};
    pid_t pid;
    int st;
    uint64_t t0 = now_ns();
    if (bench_spawn(&pid, "/bin/true", argv, NULL) != 0)
        die("floor", "posix_spawn /bin/true failed");
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return (double)(now_ns() - t0);
}

static double qga_exec_once(void)
{
    uint64_t t0 = now_ns();
    if (qga_exec(&g_qga, "/bin/true", NULL, 0) < 0)
        return NAN;
    return (double)(now_ns() - t0);
}

/* ------------------------------------------------------------ 1: exec */

void fig_exec(void)
{
    sa_client_t *c = agent_client(&g_agent);
    int n = g_opt.exec_runs, nq = 0, qevery = 10;
    double *a = calloc((size_t)n, sizeof *a), *f = calloc((size_t)n, sizeof *f);
    double *q = calloc((size_t)n / (size_t)qevery + 1, sizeof *q);
    double *nc = calloc((size_t)n, sizeof *nc);
    /* The same agent without cgroups: what a cgroup per process costs. */
    agent_t na;
    const char *const nocg[] = {"--no-cgroups", NULL};
    if (agent_up(&na, "nocg", nocg) < 0)
        die("exec round trip", "the agent with --no-cgroups did not start");
    sa_client_t *ncc = agent_client(&na);

    printf("1. exec round trip: %d runs each (qemu-ga every %dth)\n", n, qevery);
    for (int i = 0; i < 100; i++) {
        agent_exec_once(c);
        agent_exec_once(ncc);
        floor_exec_once();
        if (g_have_qga && i % qevery == 0)
            qga_exec_once();
    }
    /* Interleaved, so all see the same machine. */
    uint64_t run0 = 0, wait0 = 0, run1 = 0, wait1 = 0, nrun0 = 0, nrun1 = 0;
    sched_ns(g_agent.pid, &run0, &wait0);
    sched_ns(na.pid, &nrun0, &wait0);
    for (int i = 0; i < n; i++) {
        a[i] = agent_exec_once(c) / 1e3;
        nc[i] = agent_exec_once(ncc) / 1e3;
        f[i] = floor_exec_once() / 1e3;
        if (g_have_qga && i % qevery == 0) {
            double v = qga_exec_once();
            if (!isnan(v))
                q[nq++] = v / 1e3;
        }
    }
    sched_ns(g_agent.pid, &run1, &wait1);
    sched_ns(na.pid, &nrun1, &wait1);
    sa_client_close(ncc);
    agent_down(&na);
    double am = quantile(a, (size_t)n, 0.5), ap = quantile(a, (size_t)n, 0.99);
    double fm = quantile(f, (size_t)n, 0.5), fp = quantile(f, (size_t)n, 0.99);
    char note[200];
    snprintf(note, sizeof note,
             "floor: posix_spawn + waitpid of /bin/true in the benchmark process; the agent's "
             "loop spent %.0f us on a CPU per run",
             (double)(run1 - run0) / 1e3 / n);
    result_add("1", "exec round trip, median", "us", am, "floor", fm, LOWER, 1.10, NAN, note);
    result_add("1", "exec round trip, p99", "us", ap, "floor", fp, LOWER, NAN, NAN, NULL);
    snprintf(note, sizeof note,
             "the same agent with --no-cgroups (no cgroup made, joined, read and removed per "
             "process); its loop spent %.0f us on a CPU per run",
             (double)(nrun1 - nrun0) / 1e3 / n);
    result_add("1", "exec round trip, median, --no-cgroups", "us", quantile(nc, (size_t)n, 0.5),
               "floor", fm, LOWER, NAN, NAN, note);
    if (nq) {
        double qm = quantile(q, (size_t)nq, 0.5), qp = quantile(q, (size_t)nq, 0.99);
        result_add("1", "exec round trip, median", "us", am, "qemu-ga", qm, LOWER, 1.0, NAN,
                   "qemu-ga: guest-exec, then guest-exec-status until exited (no sleep)");
        result_add("1", "exec round trip, p99", "us", ap, "qemu-ga", qp, LOWER, 1.0, NAN, NULL);
    }
    free(a);
    free(f);
    free(q);
    free(nc);
    sa_client_close(c);
}

/* ------------------------------------------------------------ 2: parallel */

typedef struct par {
    pthread_barrier_t *bar;
    volatile int *stop;
    int agent; /* 1: through the agent, 0: posix_spawn */
    long runs;
} par_t;

static void *par_thread(void *arg)
{
    par_t *p = arg;
    sa_client_t *c = p->agent ? agent_client(&g_agent) : NULL;
    pthread_barrier_wait(p->bar);
    while (!*p->stop) {
        if (c)
            agent_exec_once(c);
        else
            floor_exec_once();
        p->runs++;
    }
    if (c)
        sa_client_close(c);
    return NULL;
}

static double par_phase(int agent, double secs)
{
    int n = g_opt.parallel_threads;
    pthread_t *th = calloc((size_t)n, sizeof *th);
    par_t *ps = calloc((size_t)n, sizeof *ps);
    pthread_barrier_t bar;
    volatile int stop = 0;
    long total = 0;

    pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        ps[i] = (par_t){&bar, &stop, agent, 0};
        pthread_create(&th[i], NULL, par_thread, &ps[i]);
    }
    pthread_barrier_wait(&bar);
    uint64_t t0 = now_ns();
    sleep_us((unsigned)(secs * 1e6));
    stop = 1;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        total += ps[i].runs;
    }
    double dt = (double)(now_ns() - t0) / 1e9;
    pthread_barrier_destroy(&bar);
    free(th);
    free(ps);
    return (double)total / dt;
}

void fig_parallel(void)
{
    double a = 0, f = 0, half = g_opt.parallel_secs / 2, wall = 0;
    uint64_t run = 0, wait = 0;
    printf("2. parallel runs: %d threads, 2 x %.1f s each\n", g_opt.parallel_threads, half);
    for (int round = 0; round < 2; round++) {
        uint64_t r0 = 0, w0 = 0, r1 = 0, w1 = 0, t0 = now_ns();
        pinger_start(&g_agent, "parallel");
        sched_ns(g_agent.pid, &r0, &w0);
        a += par_phase(1, half) / 2;
        sched_ns(g_agent.pid, &r1, &w1);
        wall += (double)(now_ns() - t0);
        run += r1 - r0;
        wait += w1 - w0;
        pinger_stop();
        f += par_phase(0, half) / 2;
    }
    char note[160];
    snprintf(note, sizeof note,
             "the agent's loop thread: %.0f%% of the time on a CPU, %.0f%% waiting for one, the "
             "rest blocked (in the vfork of each spawn) or idle",
             100.0 * (double)run / wall, 100.0 * (double)wait / wall);
    result_add("2", "parallel /bin/true, 64 clients", "runs/s", a, "64 threads posix_spawn", f,
               HIGHER, 1.0, NAN, note);
}

/* ------------------------------------------------------------ relays */

static int listen_unix(const char *path)
{
    struct sockaddr_un sa;
    if (sun_set(&sa, path) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_unix_retry(const char *path)
{
    struct sockaddr_un sa;
    if (sun_set(&sa, path) < 0)
        return -1;
    for (int i = 0; i < 5000; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        close(fd);
        sleep_us(200);
    }
    return -1;
}

static pid_t spawn_sh(const char *cmd)
{
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t pid;
    if (bench_spawn(&pid, "/bin/sh", (char *const *)argv, NULL) != 0)
        return -1;
    return pid;
}

static int wait_ok(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Read fd to EOF, discarding; returns the bytes. */
static uint64_t drain(int fd)
{
    uint8_t *buf = malloc(1u << 20);
    uint64_t total = 0;
    if (!buf)
        return 0;
    for (;;) {
        ssize_t n = read(fd, buf, 1u << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        total += (uint64_t)n;
    }
    free(buf);
    return total;
}

/* socat relays cmd's output (cmd ends in "| socat ... UNIX-CONNECT:%s") into
 * a unix socket that this process reads and discards. Returns bytes/s. */
static double socat_into_reader(const char *cmd_fmt, uint64_t expect)
{
    char sock[256], cmd[768];
    snprintf(sock, sizeof sock, "%s/relay.sock", g_opt.dir);
    int lfd = listen_unix(sock);
    if (lfd < 0)
        die("socat relay", "cannot listen");
    snprintf(cmd, sizeof cmd, cmd_fmt, sock);
    uint64_t t0 = now_ns();
    pid_t pid = spawn_sh(cmd);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    uint64_t got = fd >= 0 ? drain(fd) : 0;
    double dt = (double)(now_ns() - t0) / 1e9;
    if (fd >= 0)
        close(fd);
    close(lfd);
    if (wait_ok(pid) < 0 || got != expect) {
        fprintf(stderr, "sa-bench: socat relay moved %llu of %llu bytes (%s)\n",
                (unsigned long long)got, (unsigned long long)expect, cmd);
        return NAN;
    }
    return (double)got / dt;
}

/* ------------------------------------------------------------ 3: stream */

static double agent_stream_once(uint64_t bytes)
{
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)bytes);
    const char *args[] = {"-c", n, "/dev/zero", NULL};
    sa_client_t *c = agent_client(&g_agent);
    lreader_t r;
    lresp_t last;
    uint64_t got = 0;
    lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
    uint64_t t0 = now_ns();
    uint64_t id = send_start(c, "head", args, 1, 1, 0);
    int rc = id ? lreader_until_done(&r, id, &got, &last) : -EPIPE;
    double dt = (double)(now_ns() - t0) / 1e9;
    lreader_free(&r);
    sa_client_close(c);
    if (rc < 0 || last.result != RES(EXIT) || got != bytes) {
        fprintf(stderr, "sa-bench: stream: got %llu of %llu bytes, rc %d, result %d %s\n",
                (unsigned long long)got, (unsigned long long)bytes, rc, last.result, last.msg);
        return NAN;
    }
    return (double)got / dt;
}

void fig_stream(void)
{
    uint64_t n = g_opt.stream_bytes;
    int reps = g_opt.repeats;
    double a[8], s[8], sb[8];
    char cmd[256], cmdb[256];

    printf("3. output streaming: %llu MiB, %d runs each\n", (unsigned long long)(n >> 20), reps);
    snprintf(cmd, sizeof cmd, "head -c %llu /dev/zero | %s -u - UNIX-CONNECT:%%s",
             (unsigned long long)n, g_opt.socat_bin ? g_opt.socat_bin : "socat");
    snprintf(cmdb, sizeof cmdb, "head -c %llu /dev/zero | %s -b 1048576 -u - UNIX-CONNECT:%%s",
             (unsigned long long)n, g_opt.socat_bin ? g_opt.socat_bin : "socat");
    for (int i = 0; i < reps; i++) {
        pinger_start(&g_agent, "stream");
        a[i] = agent_stream_once(n);
        pinger_stop();
        s[i] = g_opt.socat_bin ? socat_into_reader(cmd, n) : NAN;
        sb[i] = g_opt.socat_bin ? socat_into_reader(cmdb, n) : NAN;
    }
    double am = median3(a, (size_t)reps) / MIB;
    result_add("3", "output streaming, 1 follower", "MiB/s", am, "socat", median3(s, (size_t)reps) / MIB,
               HIGHER, 1.0, NAN, "socat: head -c N /dev/zero | socat -u - UNIX-CONNECT (8 KiB blocks)");
    result_add("3", "output streaming, 1 follower", "MiB/s", am, "socat -b 1M",
               median3(sb, (size_t)reps) / MIB, HIGHER, 1.0, NAN, NULL);
    if (g_have_qga) {
        char qn[32];
        snprintf(qn, sizeof qn, "%llu", (unsigned long long)g_opt.qga_bytes);
        const char *args[] = {"-c", qn, "/dev/zero", NULL};
        uint64_t t0 = now_ns();
        long long got = qga_exec(&g_qga, "/usr/bin/head", args, 1);
        double dt = (double)(now_ns() - t0) / 1e9;
        g_qga_capture_kib = rss_kib(g_qga.pid);
        if (got == (long long)g_opt.qga_bytes) {
            char note[160];
            snprintf(note, sizeof note,
                     "qemu-ga: guest-exec capture-output of %llu MiB (it caps captured output "
                     "at 16 MiB), base64 in guest-exec-status",
                     (unsigned long long)(g_opt.qga_bytes >> 20));
            result_add("3", "output streaming, 1 follower", "MiB/s", am, "qemu-ga capture",
                       (double)got / dt / MIB, HIGHER, 1.0, NAN, note);
        } else {
            fprintf(stderr, "sa-bench: qemu-ga capture returned %lld bytes\n", got);
        }
    }
}

/* ------------------------------------------------------------ 4: fan-out */

typedef struct fan {
    pthread_barrier_t *bar;
    uint32_t pid;
    uint64_t bytes;
    uint64_t t_end;
    int ok;
} fan_t;

static void *fan_thread(void *arg)
{
    fan_t *f = arg;
    sa_client_t *c = agent_client(&g_agent);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput fo = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    Sandbox__Agent__V1__Ping ping = SANDBOX__AGENT__V1__PING__INIT;
    lreader_t r;
    lresp_t last;

    lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
    fo.pid = f->pid;
    req.op_case = OP(FOLLOW);
    req.follow = &fo;
    sa_client_send(c, &req);
    uint64_t id = req.id;
    /* Requests of one connection run in order: the Pong says the follower
     * is attached. */
    Request pr = REQUEST_INIT;
    pr.op_case = OP(PING);
    pr.ping = &ping;
    sa_client_send(c, &pr);
    for (;;) {
        if (lreader_next(&r, &last) < 0)
            die("fan-out", "the connection broke");
        if (last.id == pr.id)
            break;
        if (last.id == id && last.done)
            die("fan-out", last.msg[0] ? last.msg : "follow ended early");
    }
    pthread_barrier_wait(f->bar);
    f->ok = lreader_until_done(&r, id, &f->bytes, &last) == 0 && last.result == RES(EXIT);
    f->t_end = now_ns();
    lreader_free(&r);
    sa_client_close(c);
    return NULL;
}

typedef struct relay_arg {
    uint64_t bytes;
    double rate;
    int idx;
} relay_arg_t;

static void *socat_fan_thread(void *arg)
{
    relay_arg_t *ra = arg;
    char sock[256], cmd[512];
    snprintf(sock, sizeof sock, "%s/fan%d.sock", g_opt.dir, ra->idx);
    int lfd = listen_unix(sock);
    if (lfd < 0)
        return NULL;
    snprintf(cmd, sizeof cmd, "head -c %llu /dev/zero | %s -b 1048576 -u - UNIX-CONNECT:%s",
             (unsigned long long)ra->bytes, g_opt.socat_bin, sock);
    uint64_t t0 = now_ns();
    pid_t pid = spawn_sh(cmd);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    uint64_t got = fd >= 0 ? drain(fd) : 0;
    double dt = (double)(now_ns() - t0) / 1e9;
    if (fd >= 0)
        close(fd);
    close(lfd);
    ra->rate = wait_ok(pid) == 0 && got == ra->bytes ? (double)got / dt : NAN;
    return NULL;
}

void fig_fanout(void)
{
    enum { NF = 10 };
    uint64_t n = g_opt.stream_bytes;
    char script[128];
    pthread_t th[NF];
    fan_t fs[NF];
    pthread_barrier_t bar;
    Response *r = NULL;

    printf("4. fan-out: %llu MiB to %d followers\n", (unsigned long long)(n >> 20), NF);
    sa_client_t *c = agent_client(&g_agent);
    /* The output starts only when stdin closes, after every follower is
     * attached, so all ten see every byte. */
    snprintf(script, sizeof script, "read x; exec head -c %llu /dev/zero", (unsigned long long)n);
    const char *args[] = {"-c", script, NULL};
    uint64_t id = send_start(c, "/bin/sh", args, 0, 1, 1);
    if (!id || sa_client_recv_id(c, id, &r, 30000) < 0)
        die("fan-out", "start failed");
    if (r->result_case != RES(STARTED))
        die("fan-out", resp_why(r));
    uint32_t pid = r->started->pid;
    sa_response_free(r);

    pthread_barrier_init(&bar, NULL, NF + 1);
    for (int i = 0; i < NF; i++) {
        fs[i] = (fan_t){&bar, pid, 0, 0, 0};
        pthread_create(&th[i], NULL, fan_thread, &fs[i]);
    }
    pthread_barrier_wait(&bar);
    pinger_start(&g_agent, "fanout");
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__CloseStdin cs = SANDBOX__AGENT__V1__CLOSE_STDIN__INIT;
    cs.pid = pid;
    req.op_case = OP(CLOSE_STDIN);
    req.close_stdin = &cs;
    uint64_t t0 = now_ns();
    if (sa_client_call(c, &req, &r, 30000) < 0)
        die("fan-out", "close stdin failed");
    sa_response_free(r);
    double per[NF], tmax = 0;
    int ok = 1;
    for (int i = 0; i < NF; i++) {
        pthread_join(th[i], NULL);
        double dt = (double)(fs[i].t_end - t0) / 1e9;
        per[i] = (double)fs[i].bytes / dt;
        tmax = dt > tmax ? dt : tmax;
        if (!fs[i].ok || fs[i].bytes != n) {
            fprintf(stderr, "sa-bench: fan-out follower %d got %llu of %llu bytes\n", i,
                    (unsigned long long)fs[i].bytes, (unsigned long long)n);
            ok = 0;
        }
    }
    pinger_stop();
    pthread_barrier_destroy(&bar);
    sa_client_close(c);
    double agg = ok ? (double)n * NF / tmax : NAN;
    double pmin = quantile(per, NF, 0.0);

    /* Reference: ten socat relays at once, each moving its own copy. */
    double sagg = NAN, smin = NAN;
    if (g_opt.socat_bin) {
        pthread_t st[NF];
        relay_arg_t ra[NF];
        double rates[NF];
        for (int i = 0; i < NF; i++) {
            ra[i] = (relay_arg_t){n, NAN, i};
            pthread_create(&st[i], NULL, socat_fan_thread, &ra[i]);
        }
        sagg = 0;
        for (int i = 0; i < NF; i++) {
            pthread_join(st[i], NULL);
            rates[i] = ra[i].rate;
            sagg += ra[i].rate;
        }
        smin = quantile(rates, NF, 0.0);
    }
    result_add("4", "fan-out, 10 followers, aggregate", "MiB/s", agg / MIB, "10 socat -b 1M relays",
               sagg / MIB, HIGHER, 1.0, NAN,
               "reference: ten independent `head | socat -b 1M` relays at once (sum of their "
               "rates); the agent reads the pipe once and serves ten cursors");
    result_add("4", "fan-out, slowest follower", "MiB/s", pmin / MIB, "slowest socat -b 1M relay",
               smin / MIB, HIGHER, NAN, NAN, NULL);
}

/* ------------------------------------------------------------ 5: files */

static int make_file(const char *path, uint64_t bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    uint8_t *buf = malloc(1u << 20);
    if (fd < 0 || !buf)
        return -1;
    /* Not zeros: nothing on the way may shortcut them. */
    for (size_t i = 0; i < (1u << 20); i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    for (uint64_t done = 0; done < bytes;) {
        size_t k = bytes - done < (1u << 20) ? (size_t)(bytes - done) : (1u << 20);
        if (write(fd, buf, k) != (ssize_t)k)
            return -1;
        done += k;
    }
    free(buf);
    return close(fd);
}

static double agent_download_once(const char *path, uint64_t bytes)
{
    sa_client_t *c = agent_client(&g_agent);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ReadFile rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    lreader_t r;
    lresp_t last;
    uint64_t got = 0;
    lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
    rf.path = (char *)path;
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    uint64_t t0 = now_ns();
    int rc = sa_client_send(c, &req) < 0 ? -EPIPE : lreader_until_done(&r, req.id, &got, &last);
    double dt = (double)(now_ns() - t0) / 1e9;
    lreader_free(&r);
    sa_client_close(c);
    if (rc < 0 || last.result != RES(FILE_END) || got != bytes) {
        fprintf(stderr, "sa-bench: download: got %llu of %llu bytes, rc %d, result %d %s\n",
                (unsigned long long)got, (unsigned long long)bytes, rc, last.result, last.msg);
        return NAN;
    }
    return (double)got / dt;
}

/* Send one upload chunk without copying it: the frame header and the
 * envelope are encoded by hand in front of the data, and writev sends both.
 * first: a WriteFile carrying path; else a FileData. */
static int send_chunk(int fd, uint64_t id, int first, const char *path, const uint8_t *data,
                      size_t len, int more, int sync)
{
    uint8_t sub[512], env[64];
    size_t sl = 0, el = 5;
    if (first) {
        size_t pl = strlen(path);
        sub[sl++] = 1 << 3 | 2; /* WriteFile.path */
        sl += frame_varint_put(sub + sl, pl);
        memcpy(sub + sl, path, pl);
        sl += pl;
        if (more) {
            sub[sl++] = 3 << 3; /* WriteFile.more */
            sub[sl++] = 1;
        }
        if (sync) {
            sub[sl++] = 9 << 3; /* WriteFile.sync */
            sub[sl++] = 1;
        }
        sub[sl++] = 2 << 3 | 2; /* WriteFile.data */
    } else {
        if (more) {
            sub[sl++] = 2 << 3; /* FileData.more */
            sub[sl++] = 1;
        }
        sub[sl++] = 1 << 3 | 2; /* FileData.data */
    }
    sl += frame_varint_put(sub + sl, len);
    size_t sublen = sl + len;
    env[el++] = 1 << 3; /* Request.id */
    el += frame_varint_put(env + el, id);
    unsigned op = first ? 31 : 32; /* write_file, write_data */
    el += frame_varint_put(env + el, op << 3 | 2);
    el += frame_varint_put(env + el, sublen);
    size_t plen = el - 5 + sublen;
    frame_header_write(env, 0, (uint32_t)plen);
    struct iovec iov[3] = {{env, el}, {sub, sl}, {(void *)data, len}};
    size_t left = el + sl + len;
    int idx = 0;
    while (left) {
        ssize_t w = writev(fd, iov + idx, 3 - idx);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        left -= (size_t)w;
        while (w > 0 && idx < 3) {
            if ((size_t)w >= iov[idx].iov_len) {
                w -= (ssize_t)iov[idx].iov_len;
                idx++;
            } else {
                iov[idx].iov_base = (uint8_t *)iov[idx].iov_base + w;
                iov[idx].iov_len -= (size_t)w;
                w = 0;
            }
        }
    }
    return 0;
}

static double agent_upload_once(const char *src, const char *dst, uint64_t bytes, int sync)
{
    sa_client_t *c = agent_client(&g_agent);
    size_t cs = sa_client_max_frame(c) - 1024; /* as sandboxctl cp does */
    uint8_t *buf = malloc(cs);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    lreader_t r;
    lresp_t last = {0};
    uint64_t sent = 0, dummy = 0;
    int rc = 0;
    lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
    uint64_t id = sa_client_next_id(c);
    uint64_t t0 = now_ns();
    for (int first = 1; rc == 0; first = 0) {
        ssize_t n = read(in, buf, bytes - sent < cs ? (size_t)(bytes - sent) : cs);
        if (n < 0) {
            rc = -errno;
            break;
        }
        sent += (uint64_t)n;
        int more = sent < bytes;
        rc = send_chunk(sa_client_fd(c), id, first, dst, buf, (size_t)n, more, sync);
        if (!more)
            break;
    }
    if (rc == 0)
        rc = lreader_until_done(&r, id, &dummy, &last);
    double dt = (double)(now_ns() - t0) / 1e9;
    close(in);
    free(buf);
    lreader_free(&r);
    sa_client_close(c);
    if (rc < 0 || last.result != RES(WRITTEN) || last.num != bytes) {
        fprintf(stderr, "sa-bench: upload: rc %d, result %d, %llu bytes written: %s\n", rc,
                last.result, (unsigned long long)last.num, last.msg);
        return NAN;
    }
    return (double)bytes / dt;
}

/* socat writes what it receives on a unix socket into dst; this process
 * sends src. */
static double socat_upload_once(const char *opts, const char *src, const char *dst,
                                uint64_t bytes)
{
    char sock[256], cmd[768];
    snprintf(sock, sizeof sock, "%s/up.sock", g_opt.dir);
    unlink(sock);
    snprintf(cmd, sizeof cmd, "exec %s %s -u UNIX-LISTEN:%s OPEN:%s,creat,trunc", g_opt.socat_bin,
             opts, sock, dst);
    uint8_t *buf = malloc(1u << 20);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    uint64_t t0 = now_ns();
    pid_t pid = spawn_sh(cmd);
    int fd = connect_unix_retry(sock);
    uint64_t sent = 0;
    for (ssize_t n; fd >= 0 && (n = read(in, buf, 1u << 20)) > 0;) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto out;
            off += w;
        }
        sent += (uint64_t)n;
    }
out:
    if (fd >= 0)
        close(fd);
    int ok = wait_ok(pid) == 0;
    double dt = (double)(now_ns() - t0) / 1e9;
    close(in);
    free(buf);
    return ok && sent == bytes ? (double)bytes / dt : NAN;
}

static const char b64c[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64c[v >> 18];
        out[o++] = b64c[v >> 12 & 63];
        out[o++] = b64c[v >> 6 & 63];
        out[o++] = b64c[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = b64c[v >> 18];
        out[o++] = b64c[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64c[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

/* qemu-ga's guest-file-read of the first `bytes` of src, in 1 MiB reads. */
static double qga_download(const char *src, uint64_t bytes)
{
    const uint64_t cs = 1u << 20;
    uint64_t got = 0;
    uint64_t t0 = now_ns();
    if (qga_cmd(&g_qga, "{\"execute\":\"guest-file-open\",\"arguments\":{\"path\":\"%s\",\"mode\":\"r\"}}",
                src) < 0)
        return NAN;
    long long h = qga_num(&g_qga, "return");
    while (got < bytes) {
        if (qga_cmd(&g_qga,
                    "{\"execute\":\"guest-file-read\",\"arguments\":{\"handle\":%lld,\"count\":%llu}}",
                    h, (unsigned long long)cs) < 0)
            break;
        long long n = qga_b64(&g_qga, "buf-b64", NULL);
        if (n <= 0)
            break;
        got += (uint64_t)n;
    }
    qga_cmd(&g_qga, "{\"execute\":\"guest-file-close\",\"arguments\":{\"handle\":%lld}}", h);
    double dt = (double)(now_ns() - t0) / 1e9;
    return got >= bytes ? (double)got / dt : NAN;
}

static double qga_upload(const char *src, const char *dst, uint64_t bytes)
{
    const size_t cs = 1u << 20;
    uint8_t *buf = malloc(cs);
    char *enc = malloc(cs / 3 * 4 + 8);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    uint64_t sent = 0;
    uint64_t t0 = now_ns();
    if (qga_cmd(&g_qga, "{\"execute\":\"guest-file-open\",\"arguments\":{\"path\":\"%s\",\"mode\":\"w\"}}",
                dst) < 0)
        goto out;
    long long h = qga_num(&g_qga, "return");
    while (sent < bytes) {
        size_t k = bytes - sent < cs ? (size_t)(bytes - sent) : cs;
        if (read(in, buf, k) != (ssize_t)k)
            break;
        b64_encode(buf, k, enc);
        if (qga_cmd(&g_qga,
                    "{\"execute\":\"guest-file-write\",\"arguments\":{\"handle\":%lld,\"buf-b64\":\"%s\"}}",
                    h, enc) < 0)
            break;
        sent += (uint64_t)qga_num(&g_qga, "count");
    }
    qga_cmd(&g_qga, "{\"execute\":\"guest-file-close\",\"arguments\":{\"handle\":%lld}}", h);
out:;
    double dt = (double)(now_ns() - t0) / 1e9;
    close(in);
    free(buf);
    free(enc);
    return sent == bytes ? (double)bytes / dt : NAN;
}

void fig_files(void)
{
    uint64_t n = g_opt.stream_bytes;
    int reps = g_opt.repeats;
    char src[200], dst[200], sdst[200];
    char cmd[512], cmdb[512];
    double dl[8], sdl[8], sdlb[8], ul[8], sul[8], sulb[8];

    snprintf(src, sizeof src, "%s/src.bin", g_opt.shm);
    snprintf(dst, sizeof dst, "%s/agent-up.bin", g_opt.shm);
    snprintf(sdst, sizeof sdst, "%s/socat-up.bin", g_opt.shm);
    printf("5. files: %llu MiB on tmpfs, %d runs each\n", (unsigned long long)(n >> 20), reps);
    if (make_file(src, n) < 0)
        die("files", "cannot create the source file on tmpfs");
    const char *socat = g_opt.socat_bin ? g_opt.socat_bin : "socat";
    snprintf(cmd, sizeof cmd, "exec %s -u OPEN:%s UNIX-CONNECT:%%s", socat, src);
    snprintf(cmdb, sizeof cmdb, "exec %s -b 1048576 -u OPEN:%s UNIX-CONNECT:%%s", socat, src);
    for (int i = 0; i < reps; i++) {
        pinger_start(&g_agent, "download");
        dl[i] = agent_download_once(src, n);
        pinger_stop();
        sdl[i] = g_opt.socat_bin ? socat_into_reader(cmd, n) : NAN;
        sdlb[i] = g_opt.socat_bin ? socat_into_reader(cmdb, n) : NAN;
        pinger_start(&g_agent, "upload");
        ul[i] = agent_upload_once(src, dst, n, 0);
        pinger_stop();
        unlink(dst);
        sul[i] = g_opt.socat_bin ? socat_upload_once("", src, sdst, n) : NAN;
        unlink(sdst);
        sulb[i] = g_opt.socat_bin ? socat_upload_once("-b 1048576", src, sdst, n) : NAN;
        unlink(sdst);
    }
    /* With sync, to the disk under the bench's directory: the agent's
     * WriteFile (sync = true) against dd conv=fsync of the same bytes. */
    uint64_t sn = n < (256u << 20) ? n : (256u << 20);
    char ddst[200], dcmd[600];
    double sul_sync[8], dd_sync[8];
    snprintf(ddst, sizeof ddst, "%s/sync-up.bin", g_opt.dir);
    snprintf(dcmd, sizeof dcmd, "exec dd if=%s of=%s bs=4M count=%llu iflag=count_bytes conv=fsync "
             "status=none", src, ddst, (unsigned long long)sn);
    for (int i = 0; i < reps; i++) {
        pinger_start(&g_agent, "upload");
        sul_sync[i] = agent_upload_once(src, ddst, sn, 1);
        pinger_stop();
        unlink(ddst);
        uint64_t t0 = now_ns();
        int ok = wait_ok(spawn_sh(dcmd)) == 0;
        dd_sync[i] = ok ? (double)sn / ((double)(now_ns() - t0) / 1e9) : NAN;
        unlink(ddst);
    }
    double dm = median3(dl, (size_t)reps) / MIB, um = median3(ul, (size_t)reps) / MIB;
    result_add("5", "file download (ReadFile)", "MiB/s", dm, "socat", median3(sdl, (size_t)reps) / MIB,
               HIGHER, 1.0, NAN, "socat: socat -u OPEN:file UNIX-CONNECT, read and discarded");
    result_add("5", "file download (ReadFile)", "MiB/s", dm, "socat -b 1M",
               median3(sdlb, (size_t)reps) / MIB, HIGHER, 1.0, NAN, NULL);
    result_add("5", "file upload (WriteFile)", "MiB/s", um, "socat", median3(sul, (size_t)reps) / MIB,
               HIGHER, 1.0, NAN,
               "socat: socat -u UNIX-LISTEN OPEN:file,creat,trunc, fed from the source file");
    result_add("5", "file upload (WriteFile)", "MiB/s", um, "socat -b 1M",
               median3(sulb, (size_t)reps) / MIB, HIGHER, 1.0, NAN, NULL);
    {
        char note[400];
        snprintf(note, sizeof note,
                 "%llu MiB to the disk under %s (sync = true: data, then the directory); "
                 "dd: dd bs=4M conv=fsync of the same bytes",
                 (unsigned long long)(sn >> 20), g_opt.dir);
        result_add("5", "file upload with sync", "MiB/s", median3(sul_sync, (size_t)reps) / MIB,
                   "dd conv=fsync", median3(dd_sync, (size_t)reps) / MIB, HIGHER, 1.0 / 1.1, NAN,
                   note);
    }
    if (g_have_qga) {
        uint64_t qn = g_opt.qga_bytes;
        char note[160];
        snprintf(note, sizeof note,
                 "qemu-ga: guest-file-open/read/close of %llu MiB in 1 MiB base64 reads",
                 (unsigned long long)(qn >> 20));
        result_add("5", "file download (ReadFile)", "MiB/s", dm, "qemu-ga",
                   qga_download(src, qn) / MIB, HIGHER, 1.0, NAN, note);
        snprintf(note, sizeof note,
                 "qemu-ga: guest-file-open/write/close of %llu MiB in 1 MiB base64 writes",
                 (unsigned long long)(qn >> 20));
        result_add("5", "file upload (WriteFile)", "MiB/s", um, "qemu-ga",
                   qga_upload(src, sdst, qn) / MIB, HIGHER, 1.0, NAN, note);
        unlink(sdst);
    }
    unlink(src);
}

/* ------------------------------------------------------------ 6: memory */

static unsigned info_running(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetInfo gi = SANDBOX__AGENT__V1__GET_INFO__INIT;
    Response *r = NULL;
    req.op_case = OP(INFO);
    req.info = &gi;
    if (sa_client_call(c, &req, &r, 30000) < 0 || r->result_case != RES(INFO))
        die("memory", "GetInfo failed");
    unsigned n = r->info->running_processes;
    sa_response_free(r);
    return n;
}

/* A field of /proc/PID/smaps_rollup in KiB, -1 when unknown. */
static long rollup_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    long v = -1;
    size_t fl = strlen(field);
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':' && sscanf(line + fl + 1, "%ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static double kib_mib(long kib) { return kib < 0 ? NAN : (double)kib / 1024.0; }

void fig_memory(void)
{
    agent_t a;
    const int nsleep = 1000, nflood = 10;
    char note[200];
    uint64_t flood_bytes = 100u << 20;
    uint32_t *pids = calloc((size_t)nsleep, sizeof *pids);

    printf("6. memory: idle, %d sleeping processes, %d x 100 MiB with no follower\n", nsleep,
           nflood);
    if (agent_up(&a, "mem", NULL) < 0)
        die("memory", "the agent did not start");
    sa_client_t *c = agent_client(&a);
    agent_ping(c);
    sleep_us(100000);
    long idle = rss_kib(a.pid);
    long idle_shared = rollup_kib(a.pid, "Shared_Clean"), idle_pss = rollup_kib(a.pid, "Pss");
    long idle_priv = rollup_kib(a.pid, "Private_Dirty");

    /* One followed 8 MiB run: what qemu-ga's "after one capture" is. */
    {
        char qn[32];
        snprintf(qn, sizeof qn, "%llu", (unsigned long long)g_opt.qga_bytes);
        const char *args[] = {"-c", qn, "/dev/zero", NULL};
        lreader_t r;
        lresp_t last;
        uint64_t got = 0;
        lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
        uint64_t id = send_start(c, "head", args, 1, 1, 0);
        if (!id || lreader_until_done(&r, id, &got, &last) < 0 || got != g_opt.qga_bytes)
            die("memory", "the followed run failed");
        lreader_free(&r);
    }
    sleep_us(100000);
    long after_one = rss_kib(a.pid);

    const char *sargs[] = {"600", NULL};
    for (int i = 0; i < nsleep; i++) {
        Response *r = NULL;
        uint64_t id = send_start(c, "sleep", sargs, 0, 0, 0);
        if (!id || sa_client_recv_id(c, id, &r, 30000) < 0)
            die("memory", "start sleep failed");
        if (r->result_case != RES(STARTED))
            die("memory: start sleep", resp_why(r));
        pids[i] = r->started->pid;
        sa_response_free(r);
    }
    sleep_us(200000);
    long with_procs = rss_kib(a.pid);
    for (int i = 0; i < nsleep; i++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__SendSignal sg = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
        Response *r = NULL;
        sg.pid = pids[i];
        sg.signal = SIGKILL;
        req.op_case = OP(SIGNAL);
        req.signal = &sg;
        if (sa_client_call(c, &req, &r, 30000) == 0)
            sa_response_free(r);
    }
    for (int i = 0; i < 500 && info_running(c); i++)
        sleep_us(10000);

    /* The flood: nobody follows; each process's window bounds what is kept. */
    long base = rss_kib(a.pid), peak = base;
    char fb[32];
    snprintf(fb, sizeof fb, "%llu", (unsigned long long)flood_bytes);
    const char *fargs[] = {"-c", fb, "/dev/zero", NULL};
    for (int i = 0; i < nflood; i++) {
        Response *r = NULL;
        uint64_t id = send_start(c, "head", fargs, 0, 0, 0);
        if (!id || sa_client_recv_id(c, id, &r, 30000) < 0)
            die("memory", "start head failed");
        sa_response_free(r);
    }
    for (int i = 0; i < 6000; i++) {
        long v = rss_kib(a.pid);
        peak = v > peak ? v : peak;
        if (i % 10 == 0 && !info_running(c))
            break;
        sleep_us(5000);
    }
    long after_flood = rss_kib(a.pid);
    sa_client_close(c);
    agent_down(&a);

    double window_mib = 4.0; /* the agent's default --output-window */
    double bound = kib_mib(base) + nflood * window_mib * 1.25 + 16;
    snprintf(note, sizeof note,
             "of which %ld KiB are clean pages of shared libraries (libc) shared with other "
             "processes; private dirty %ld KiB, PSS %ld KiB",
             idle_shared, idle_priv, idle_pss);
    result_add("6", "idle, private dirty", "KiB", (double)idle_priv, NULL, NAN, LOWER, NAN, 256.0,
               "what the idle agent costs the VM: pages it wrote, which no other process shares");
    result_add("6", "idle, PSS", "MiB", kib_mib(idle_pss), NULL, NAN, LOWER, NAN, 1.0,
               "proportional set size: private pages plus its share of the shared ones");
    result_add("6", "RSS idle", "MiB", kib_mib(idle), g_have_qga ? "qemu-ga idle" : NULL,
               kib_mib(g_qga_idle_kib), LOWER, NAN, NAN, note);
    if (g_opt.static_agent_bin) {
        agent_t st;
        const char *keep = g_opt.agent_bin;
        g_opt.agent_bin = g_opt.static_agent_bin;
        if (agent_up(&st, "static", NULL) == 0) {
            sa_client_t *sc = agent_client(&st);
            agent_ping(sc);
            sa_client_close(sc);
            sleep_us(100000);
            long v = rss_kib(st.pid);
            agent_down(&st);
            result_add("6", "RSS idle, static build", "MiB", kib_mib(v),
                       g_have_qga ? "qemu-ga idle" : NULL, kib_mib(g_qga_idle_kib), LOWER, NAN,
                       NAN, "the same agent built with -DSANDBOX_AGENT_STATIC=ON");
        }
        g_opt.agent_bin = keep;
    }
    result_add("6", "RSS after one 8 MiB followed run", "MiB", kib_mib(after_one),
               g_qga_capture_kib >= 0 ? "qemu-ga after capture" : NULL, kib_mib(g_qga_capture_kib), LOWER,
               NAN, NAN, "qemu-ga: after one guest-exec capture of the same size");
    result_add("6", "RSS with 1,000 sleeping processes", "MiB", kib_mib(with_procs), NULL, NAN,
               LOWER, NAN, 64.0, NULL);
    snprintf(note, sizeof note,
             "peak while 10 processes print 100 MiB each with no follower; bound = RSS before "
             "(%.1f MiB) + 10 x 4 MiB window x 1.25 + 16 MiB; %.1f MiB after they exited",
             kib_mib(base), kib_mib(after_flood));
    result_add("6", "RSS peak, 10 x 100 MiB no follower", "MiB", kib_mib(peak), NULL, NAN, LOWER,
               NAN, bound, note);
    free(pids);
}

/* ------------------------------------------------------------ 7: start-up */

/* Start the agent; returns ns until --ready-fd spoke (*ready) and until a
 * connect() succeeded (*conn). */
static int agent_start_once(int i, double *ready, double *conn)
{
    char sock[200], addr[210], rfd[16], logf[200];
    int pfd[2];
    pid_t pid;
    struct sockaddr_un sa;

    snprintf(sock, sizeof sock, "%s/st%d.sock", g_opt.dir, i);
    snprintf(addr, sizeof addr, "unix:%s", sock);
    snprintf(logf, sizeof logf, "%s/startup.log", g_opt.dir);
    if (sun_set(&sa, sock) < 0 || pipe2(pfd, 0) < 0)
        return -1;
    fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    snprintf(rfd, sizeof rfd, "%d", pfd[1]);
    const char *argv[] = {g_opt.agent_bin, "--listen", addr, "--ready-fd", rfd, "--log-level",
                          "warn", NULL};
    uint64_t t0 = now_ns();
    int rc = bench_spawn(&pid, g_opt.agent_bin, (char *const *)argv, logf);
    close(pfd[1]);
    if (rc) {
        close(pfd[0]);
        return -1;
    }
    *ready = *conn = NAN;
    for (int k = 0; k < 200000 && (isnan(*ready) || isnan(*conn)); k++) {
        char b[16];
        if (isnan(*ready) && read(pfd[0], b, sizeof b) > 0)
            *ready = (double)(now_ns() - t0);
        if (isnan(*conn)) {
            int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
                *conn = (double)(now_ns() - t0);
            close(fd);
        }
        if (isnan(*ready) || isnan(*conn))
            sleep_us(20);
    }
    close(pfd[0]);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    unlink(sock);
    return isnan(*ready) || isnan(*conn) ? -1 : 0;
}

static double qga_start_once(void)
{
    qga_t q;
    uint64_t t0 = now_ns();
    /* qga_up returns once connect() succeeded and guest-sync answered. */
    if (qga_up(&q) < 0)
        return NAN;
    double dt = (double)(now_ns() - t0);
    qga_down(&q);
    return dt;
}

void fig_startup(void)
{
    int n = g_opt.startup_runs, nq = g_have_qga ? (n < 20 ? n : 20) : 0, k = 0;
    double *ready = calloc((size_t)n, sizeof *ready), *conn = calloc((size_t)n, sizeof *conn);
    double *q = calloc((size_t)(nq ? nq : 1), sizeof *q), *f = calloc((size_t)n, sizeof *f);

    printf("7. start-up: %d starts (qemu-ga %d)\n", n, nq);
    for (int i = 0; i < n; i++) {
        if (agent_start_once(i, &ready[k], &conn[k]) == 0) {
            ready[k] /= 1e6;
            conn[k] /= 1e6;
            k++;
        }
        f[i] = floor_exec_once() / 1e6;
    }
    int kq = 0;
    for (int i = 0; i < nq; i++) {
        double v = qga_start_once();
        if (!isnan(v))
            q[kq++] = v / 1e6;
    }
    double rm = quantile(ready, (size_t)k, 0.5), cm = quantile(conn, (size_t)k, 0.5);
    result_add("7", "start-up to --ready-fd, median", "ms", rm, "exec /bin/true",
               quantile(f, (size_t)n, 0.5), LOWER, NAN, 5.0,
               "reference: posix_spawn + waitpid of /bin/true, the cost of any exec");
    result_add("7", "start-up to first connect(), median", "ms", cm,
               kq ? "qemu-ga" : NULL, kq ? quantile(q, (size_t)kq, 0.5) : NAN, LOWER, NAN, 5.0,
               "qemu-ga: exec until connect() and guest-sync succeed");
    free(ready);
    free(conn);
    free(q);
    free(f);
}

/* ------------------------------------------------------------ 8: pinger */

#define PHASES 8
#define PING_MAX 200000

static struct {
    char name[16];
    double *rtt; /* ms */
    size_t n;
} g_phase[PHASES];
static pthread_t g_ping_th;
static volatile int g_ping_stop;
static int g_ping_cur = -1;
static sa_client_t *g_ping_cli;
static int g_ping_rt;

static void *ping_thread(void *arg)
{
    /* Real-time when allowed: the pinger must not wait behind the 64 client
     * threads of figure 2 on a small machine, or it measures this process's
     * scheduling instead of the agent. */
    struct sched_param sp = {.sched_priority = 1};
    g_ping_rt = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    (void)arg;
    while (!g_ping_stop) {
        int64_t v = agent_ping(g_ping_cli);
        if (v >= 0 && g_phase[g_ping_cur].n < PING_MAX)
            g_phase[g_ping_cur].rtt[g_phase[g_ping_cur].n++] = (double)v / 1e6;
        sleep_us(1000);
    }
    return NULL;
}

void pinger_start(const agent_t *a, const char *phase)
{
    int i;
    for (i = 0; i < PHASES && g_phase[i].name[0] && strcmp(g_phase[i].name, phase); i++)
        ;
    if (i == PHASES)
        return;
    if (!g_phase[i].name[0]) {
        snprintf(g_phase[i].name, sizeof g_phase[i].name, "%s", phase);
        g_phase[i].rtt = calloc(PING_MAX, sizeof(double));
    }
    if (!g_ping_cli)
        g_ping_cli = agent_client(a);
    g_ping_cur = i;
    g_ping_stop = 0;
    pthread_create(&g_ping_th, NULL, ping_thread, NULL);
}

void pinger_stop(void)
{
    if (g_ping_cur < 0)
        return;
    g_ping_stop = 1;
    pthread_join(g_ping_th, NULL);
    g_ping_cur = -1;
}

static const char *phase_title(const char *name)
{
    static const char *const t[][2] = {{"parallel", "2 (parallel)"},
                                       {"stream", "3 (streaming)"},
                                       {"fanout", "4 (10 followers)"},
                                       {"download", "5 (download)"},
                                       {"upload", "5 (upload)"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(t[i][0], name))
            return t[i][1];
    return name;
}

void pinger_report(void)
{
    double idle = NAN;
    for (int i = 0; i < PHASES; i++)
        if (!strcmp(g_phase[i].name, "idle"))
            idle = quantile(g_phase[i].rtt, g_phase[i].n, 0.99);
    for (int i = 0; i < PHASES; i++) {
        char what[80];
        if (!g_phase[i].name[0] || !strcmp(g_phase[i].name, "idle") || !g_phase[i].n)
            continue;
        snprintf(what, sizeof what, "Ping p99 during %.20s (%zu pings)",
                 phase_title(g_phase[i].name), g_phase[i].n);
        result_add("8", what, "ms", quantile(g_phase[i].rtt, g_phase[i].n, 0.99),
                   isnan(idle) ? NULL : "idle p99", idle, LOWER, NAN, 2.0,
                   g_ping_rt ? "one Ping a millisecond on its own connection, from a SCHED_FIFO "
                               "client thread; the agent as it runs by default (its loop at "
                               "nice -10 only while processes start)"
                             : "one Ping a millisecond on its own connection (client thread at "
                               "normal priority: SCHED_FIFO was refused)");
    }
}

void pinger_idle(void)
{
    pinger_start(&g_agent, "idle");
    sleep_us(1000000);
    pinger_stop();
}
