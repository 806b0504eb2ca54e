/* tunnel.c - figure 10: tunnels. Throughput of a stream from a TCP server
 * to the client through the agent (multiplexed: OpenTunnel with the
 * client's credit; dedicated: Connect, spliced), against socat relaying the
 * same server TCP to TCP (default 8 KiB blocks and -b 1M) and a direct
 * loopback read; and the round trip of opening a tunnel until the server's
 * first byte is back, against a direct loopback connect. */
#include "bench.h"
#include "spawnref.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * 1024.0 * 1024.0)

/* CPU seconds the relay (the agent's loop, or socat) spent on the last
 * transfer: wall-clock rates on a loaded machine measure the scheduler as
 * much as the relay; the CPU a relay needs per byte does not. */
static double g_cpu;

static uint64_t agent_cpu_ns(void)
{
    uint64_t run = 0, wait = 0;
    return sched_ns(g_agent.pid, &run, &wait) == 0 ? run : 0;
}

static int listen_tcp(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0) {
        fprintf(stderr, "sa-bench: tunnel: listen: %s\n", strerror(errno));
        exit(1);
    }
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int connect_tcp(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static uint64_t drain_fd(int fd)
{
    static uint8_t buf[1u << 20];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return total;
        total += (uint64_t)n;
    }
}

/* ------------------------------------------------------------ servers */

/* Every accepted connection gets n bytes (n = 1: the first byte of a
 * protocol that speaks first), then the close. Runs until the listener is
 * shut down. */
typedef struct server {
    int lfd, port;
    uint64_t n;
    pthread_t th;
} server_t;

static void *server_main(void *arg)
{
    server_t *s = arg;
    static uint8_t zeros[1u << 20];
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        for (uint64_t off = 0; off < s->n;) {
            size_t k = s->n - off < sizeof zeros ? (size_t)(s->n - off) : sizeof zeros;
            ssize_t w = write(fd, zeros, k);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (uint64_t)w;
        }
        close(fd);
    }
}

static void server_up(server_t *s, uint64_t n)
{
    s->n = n;
    s->lfd = listen_tcp(&s->port);
    pthread_create(&s->th, NULL, server_main, s);
}

static void server_down(server_t *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    close(s->lfd);
}

/* ------------------------------------------------------------ throughput */

static double dedicated_once(int port, uint64_t n)
{
    char target[64], err[300];
    uint8_t *rest;
    size_t rest_len;
    snprintf(target, sizeof target, "tcp:127.0.0.1:%d", port);
    sa_client_t *c = agent_client(&g_agent);
    uint64_t c0 = agent_cpu_ns();
    uint64_t t0 = now_ns();
    if (sa_client_dedicate(c, target, &rest, &rest_len, err, sizeof err) < 0) {
        fprintf(stderr, "sa-bench: tunnel: connect: %s\n", err);
        sa_client_close(c);
        return NAN;
    }
    free(rest);
    uint64_t got = rest_len + drain_fd(sa_client_fd(c));
    double dt = (double)(now_ns() - t0) / 1e9;
    g_cpu = (double)(agent_cpu_ns() - c0) / 1e9;
    sa_client_close(c);
    if (got != n) {
        fprintf(stderr, "sa-bench: tunnel: dedicated moved %llu of %llu bytes\n",
                (unsigned long long)got, (unsigned long long)n);
        return NAN;
    }
    return (double)got / dt;
}

static int send_window(sa_client_t *c, uint64_t id, uint32_t credit)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__TunnelWindow tw = SANDBOX__AGENT__V1__TUNNEL_WINDOW__INIT;
    tw.tunnel_id = id;
    tw.credit = credit;
    req.id = id;
    req.op_case = OP(TUNNEL_WINDOW);
    req.tunnel_window = &tw;
    return sa_client_send(c, &req);
}

static int send_eof(sa_client_t *c, uint64_t id)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__TunnelSend ts = SANDBOX__AGENT__V1__TUNNEL_SEND__INIT;
    ts.tunnel_id = id;
    ts.eof = 1;
    req.id = id;
    req.op_case = OP(TUNNEL_SEND);
    req.tunnel_send = &ts;
    return sa_client_send(c, &req);
}

static uint64_t open_send(sa_client_t *c, int port, uint32_t window)
{
    char target[64];
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__OpenTunnel ot = SANDBOX__AGENT__V1__OPEN_TUNNEL__INIT;
    snprintf(target, sizeof target, "tcp:127.0.0.1:%d", port);
    ot.target = target;
    ot.window = window;
    req.op_case = OP(OPEN_TUNNEL);
    req.open_tunnel = &ot;
    return sa_client_send(c, &req) < 0 ? 0 : req.id;
}

/* Read the tunnel's responses until its data has ended (first_byte: until
 * its first data); credit back what is read once a quarter of the window
 * is. Returns the bytes, or -1. */
static int64_t mux_read(sa_client_t *c, lreader_t *r, uint64_t id, uint32_t window,
                        int first_byte)
{
    uint64_t got = 0, owed = 0;
    lresp_t x;
    for (;;) {
        if (lreader_next(r, &x) < 0)
            return -1;
        if (x.id != id)
            continue;
        if (x.result == RES(ERROR)) {
            fprintf(stderr, "sa-bench: tunnel: %s\n", x.msg);
            return -1;
        }
        if (x.result != RES(TUNNEL_DATA))
            continue;
        got += x.data_len;
        owed += x.data_len;
        if (first_byte && got)
            return (int64_t)got;
        if (owed >= window / 4) {
            if (send_window(c, id, (uint32_t)owed) < 0)
                return -1;
            owed = 0;
        }
        if (x.eof)
            return (int64_t)got;
    }
}

/* After the data: end our side and wait for TunnelClosed. */
static int mux_close(sa_client_t *c, lreader_t *r, uint64_t id)
{
    lresp_t x;
    if (send_eof(c, id) < 0)
        return -1;
    do {
        if (lreader_next(r, &x) < 0)
            return -1;
    } while (x.id != id || !x.done);
    return 0;
}

static double mux_once(int port, uint64_t n, uint32_t window)
{
    sa_client_t *c = agent_client(&g_agent);
    lreader_t r;
    lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
    uint64_t c0 = agent_cpu_ns();
    uint64_t t0 = now_ns();
    uint64_t id = open_send(c, port, window);
    int64_t got = id ? mux_read(c, &r, id, window, 0) : -1;
    double dt = (double)(now_ns() - t0) / 1e9;
    g_cpu = (double)(agent_cpu_ns() - c0) / 1e9;
    if (got >= 0)
        mux_close(c, &r, id);
    lreader_free(&r);
    sa_client_close(c);
    if (got != (int64_t)n) {
        fprintf(stderr, "sa-bench: tunnel: multiplexed moved %lld of %llu bytes\n",
                (long long)got, (unsigned long long)n);
        return NAN;
    }
    return (double)got / dt;
}

/* socat copies the server's stream to a listener of ours. */
static double socat_once(int port, uint64_t n, int big)
{
    int rport, lfd = listen_tcp(&rport);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "exec %s%s -u TCP:127.0.0.1:%d TCP:127.0.0.1:%d", g_opt.socat_bin,
             big ? " -b 1048576" : "", port, rport);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t pid;
    uint64_t t0 = now_ns();
    if (bench_spawn(&pid, "/bin/sh", (char *const *)argv, NULL) != 0) {
        close(lfd);
        return NAN;
    }
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    uint64_t got = fd >= 0 ? drain_fd(fd) : 0;
    double dt = (double)(now_ns() - t0) / 1e9;
    if (fd >= 0)
        close(fd);
    close(lfd);
    struct rusage ru;
    int st;
    memset(&ru, 0, sizeof ru);
    wait4(pid, &st, 0, &ru);
    g_cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    if (got != n) {
        fprintf(stderr, "sa-bench: tunnel: socat moved %llu of %llu bytes\n",
                (unsigned long long)got, (unsigned long long)n);
        return NAN;
    }
    return (double)got / dt;
}

static double direct_once(int port, uint64_t n)
{
    uint64_t t0 = now_ns();
    int fd = connect_tcp(port);
    uint64_t got = fd >= 0 ? drain_fd(fd) : 0;
    double dt = (double)(now_ns() - t0) / 1e9;
    if (fd >= 0)
        close(fd);
    return got == n ? (double)got / dt : NAN;
}

/* ------------------------------------------------------------ first byte */

static double first_direct(int port)
{
    uint8_t b;
    uint64_t t0 = now_ns();
    int fd = connect_tcp(port);
    ssize_t n = fd >= 0 ? read(fd, &b, 1) : -1;
    double dt = (double)(now_ns() - t0);
    if (fd >= 0)
        close(fd);
    return n == 1 ? dt : NAN;
}

static double first_mux(sa_client_t *c, lreader_t *r, int port)
{
    uint64_t t0 = now_ns();
    uint64_t id = open_send(c, port, 0);
    int64_t got = id ? mux_read(c, r, id, 256u << 10, 1) : -1;
    double dt = (double)(now_ns() - t0);
    if (got < 1 || mux_close(c, r, id) < 0)
        return NAN;
    return dt;
}

/* A new connection to the agent, Connect (no Hello: the agent has no
 * token), the first byte. */
static double first_dedicated(int port)
{
    char target[64], err[300];
    uint8_t *rest = NULL, b;
    size_t rest_len = 0;
    snprintf(target, sizeof target, "tcp:127.0.0.1:%d", port);
    uint64_t t0 = now_ns();
    sa_client_t *c = sa_client_connect(g_agent.addr, err, sizeof err);
    if (!c)
        return NAN;
    int rc = sa_client_dedicate(c, target, &rest, &rest_len, err, sizeof err);
    ssize_t n = rc < 0 ? -1 : rest_len ? 1 : read(sa_client_fd(c), &b, 1);
    double dt = (double)(now_ns() - t0);
    free(rest);
    sa_client_close(c);
    return n == 1 ? dt : NAN;
}

static double median_of(double *v, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i]))
            v[k++] = v[i];
    return k ? quantile(v, (size_t)k, 0.5) : NAN;
}

void fig_tunnel(void)
{
    uint64_t n = g_opt.stream_bytes;
    int reps = g_opt.repeats, runs = g_opt.exec_runs < 1000 ? 200 : 1000;
    double ded[8], mux[8], muxs[8], soc[8], socb[8], dir[8];
    double cded[8], cmux[8], csoc[8], csocb[8];
    server_t bulk, banner;

    printf("10. tunnels: %llu MiB each way, %d runs; open to first byte, %d runs\n",
           (unsigned long long)(n >> 20), reps, runs);
    server_up(&bulk, n);
    for (int i = 0; i < reps; i++) {
        ded[i] = dedicated_once(bulk.port, n);
        cded[i] = g_cpu;
        mux[i] = mux_once(bulk.port, n, 4u << 20);
        cmux[i] = g_cpu;
        muxs[i] = mux_once(bulk.port, n, 0);
        g_cpu = NAN;
        soc[i] = g_opt.socat_bin ? socat_once(bulk.port, n, 0) : NAN;
        csoc[i] = g_cpu;
        g_cpu = NAN;
        socb[i] = g_opt.socat_bin ? socat_once(bulk.port, n, 1) : NAN;
        csocb[i] = g_cpu;
        dir[i] = direct_once(bulk.port, n);
    }
    server_down(&bulk);
    double d = median3(ded, (size_t)reps) / MIB, m = median3(mux, (size_t)reps) / MIB;
    double ms = median3(muxs, (size_t)reps) / MIB, s = median3(soc, (size_t)reps) / MIB;
    double sb = median3(socb, (size_t)reps) / MIB, dr = median3(dir, (size_t)reps) / MIB;
    const char *how = "server -> agent (tcp) -> client (unix socket); socat -u TCP:server "
                      "TCP:reader";
    result_add("10", "tunnel, dedicated (Connect)", "MiB/s", d, "socat -b 1M", sb, HIGHER, 1.0,
               NAN, how);
    result_add("10", "tunnel, dedicated (Connect)", "MiB/s", d, "socat", s, HIGHER, NAN, NAN,
               NULL);
    result_add("10", "tunnel, multiplexed, window 4 MiB", "MiB/s", m, "socat", s, HIGHER, 1.0,
               NAN, "OpenTunnel.window 4 MiB, credit returned every MiB");
    result_add("10", "tunnel, multiplexed, window 4 MiB", "MiB/s", m, "socat -b 1M", sb, HIGHER,
               NAN, NAN, NULL);
    result_add("10", "tunnel, multiplexed, default window", "MiB/s", ms, "socat", s, HIGHER, NAN,
               NAN, "OpenTunnel.window 0: 256 KiB");
    result_add("10", "tunnel, dedicated (Connect)", "MiB/s", d, "direct loopback read", dr,
               HIGHER, NAN, NAN, NULL);
    double gib = (double)n / GIB;
    result_add("10", "relay CPU per GiB, dedicated", "s", median3(cded, (size_t)reps) / gib,
               "socat -b 1M", median3(csocb, (size_t)reps) / gib, LOWER, NAN, NAN,
               "CPU time of the agent's loop thread (schedstat) or of socat (wait4) per GiB "
               "relayed: what the relay costs, whatever the machine's load");
    result_add("10", "relay CPU per GiB, multiplexed 4 MiB", "s", median3(cmux, (size_t)reps) / gib,
               "socat", median3(csoc, (size_t)reps) / gib, LOWER, NAN, NAN, NULL);

    double fd_[1000], fm[1000], fded[1000];
    server_up(&banner, 1);
    sa_client_t *c = agent_client(&g_agent);
    lreader_t r;
    lreader_init(&r, sa_client_fd(c), sa_client_max_frame(c));
    for (int i = 0; i < runs; i++) {
        fd_[i] = first_direct(banner.port);
        fm[i] = first_mux(c, &r, banner.port);
        fded[i] = first_dedicated(banner.port);
    }
    lreader_free(&r);
    sa_client_close(c);
    server_down(&banner);
    double md = median_of(fd_, runs) / 1e3, mm = median_of(fm, runs) / 1e3,
           mded = median_of(fded, runs) / 1e3;
    result_add("10", "open to first byte, multiplexed, median", "us", mm, "direct connect", md,
               LOWER, 1.5, NAN,
               "OpenTunnel on an open connection until the server's first byte; direct: "
               "connect() to the server and read its first byte");
    result_add("10", "open to first byte, dedicated, median", "us", mded, "direct connect", md,
               LOWER, 1.5, NAN,
               "a new unix connection to the agent, Connect (no Hello: no token), first byte");
}
