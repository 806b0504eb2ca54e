/* Integration tests of tunnels: multiplexed (OpenTunnel) and dedicated
 * (Connect), against targets the test runs itself and a real HTTP server
 * started through the agent. */
#define TMPDIR_PREFIX "/tmp/sa-tunnel-"
#include "frame.h"
#include "harness.h"
#include "proc_helpers.h"
#include "tmpdir.h"
#include "tunnel_helpers.h"

#define SA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Bytes moved each way by the bulk tests: 256 MiB, not 1 GiB, which took
 * 8-10 s a direction here (four times that under AddressSanitizer); the
 * bounds checked (credit, peak RSS) do not depend on the size. */
#define BULK (256ull << 20)

static char *tcp_target(int port)
{
    static char buf[4][64];
    static int i;
    char *p = buf[i++ % 4];
    snprintf(p, 64, "tcp:127.0.0.1:%d", port);
    return p;
}

/* AddressSanitizer keeps freed blocks in a quarantine (256 MiB by
 * default): keep it small, so RSS measures what the agent holds. */
static void small_quarantine(void) { setenv("ASAN_OPTIONS", "quarantine_size_mb=16:detect_leaks=1", 1); }

static Info *get_info(sa_client_t *c, Response **keep)
{
    *keep = info_call(c);
    return (*keep)->info;
}

static unsigned open_tunnels(sa_client_t *c)
{
    Response *r;
    unsigned n = get_info(c, &r)->open_tunnels;
    sa_response_free(r);
    return n;
}

/* ------------------------------------------------------------ basics */

TEST(echo_through_a_tunnel)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_ECHO};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect_raw(&a);

    /* HelloReply announces both kinds. */
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Hello h = SANDBOX__AGENT__V1__HELLO__INIT;
        int tunnels = 0, connect = 0;
        h.protocol_version = 1;
        req.op_case = OP(HELLO);
        req.hello = &h;
        Response *r = call(c, &req);
        ASSERT_RESULT(r, HELLO);
        for (size_t i = 0; i < r->hello->n_capabilities; i++) {
            tunnels |= !strcmp(r->hello->capabilities[i], "tunnels");
            connect |= !strcmp(r->hello->capabilities[i], "connect");
        }
        ASSERT(tunnels && connect);
        sa_response_free(r);
    }
    ASSERT_EQ(open_tunnels(c), 0);

    tun_t t;
    char target[64];
    snprintf(target, sizeof target, "tcp::%d", port); /* empty host: localhost */
    uint64_t id = tun_open_send(c, target, 0);
    Response *r = recv_id(c, id);
    ASSERT_RESULT(r, TUNNEL_OPENED);
    ASSERT_EQ(r->tunnel_opened->tunnel_id, id);
    ASSERT_EQ(r->tunnel_opened->window, 256u << 10);
    ASSERT_EQ(r->tunnel_opened->agent_window, 256u << 10);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    ASSERT_STR_EQ(r->tunnel_opened->remote_address, want);
    ASSERT(!strncmp(r->tunnel_opened->local_address, "127.0.0.1:", 10));
    memset(&t, 0, sizeof t);
    t.c = c;
    t.id = id;
    t.auto_credit = 1;
    t.agent_window = r->tunnel_opened->agent_window;
    t.credited = t.window = r->tunnel_opened->window;
    sa_response_free(r);
    ASSERT_EQ(open_tunnels(c), 1);

    tun_sink(&t, 4096);
    tun_send(&t, "hello, tunnel\n", 14, 0);
    while (t.sink_len < 14)
        ASSERT_EQ(tun_step(&t, 10000), 0);
    ASSERT_MEM_EQ(t.sink, "hello, tunnel\n", 14);
    tun_send(&t, "more", 4, 1); /* and the end: the echo server closes */
    r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT(t.eof);
    ASSERT_EQ(t.sink_len, 18);
    ASSERT_EQ(r->tunnel_closed->bytes_in, 18);
    ASSERT_EQ(r->tunnel_closed->bytes_out, 18);
    ASSERT_EQ(r->tunnel_closed->os_errno, 0);
    tun_free(&t);
    ASSERT_EQ(open_tunnels(c), 0);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

/* ------------------------------------------------------------ http.server */

static void http_get_through_tunnel(sa_client_t *c, int port, const char *path,
                                    const uint8_t *body, size_t len)
{
    tun_t t;
    char req[256];
    int n = snprintf(req, sizeof req, "GET /%s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    tun_open(&t, c, tcp_target(port), 0);
    tun_sink(&t, len + 4096);
    tun_send(&t, req, (size_t)n, 1);
    Response *r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    t.sink[t.sink_len] = 0;
    ASSERT(!strncmp((char *)t.sink, "HTTP/1.0 200", 12));
    const char *sep = strstr((char *)t.sink, "\r\n\r\n");
    ASSERT(sep);
    size_t hdr = (size_t)(sep + 4 - (char *)t.sink);
    ASSERT_EQ(t.sink_len - hdr, len);
    ASSERT_MEM_EQ(t.sink + hdr, body, len);
    tun_free(&t);
}

/* Open tunnels to port until one connects (the server is starting). */
static void wait_listening(sa_client_t *c, int port)
{
    for (int i = 0; i < 400; i++) {
        uint64_t id = tun_open_send(c, tcp_target(port), 0);
        Response *r = recv_id(c, id);
        if (r->result_case == RES(TUNNEL_OPENED)) {
            sa_response_free(r);
            Request req = REQUEST_INIT;
            Sandbox__Agent__V1__Cancel cn = SANDBOX__AGENT__V1__CANCEL__INIT;
            cn.target_id = id;
            req.op_case = OP(CANCEL);
            req.cancel = &cn;
            sa_response_free(call(c, &req));
            r = recv_id(c, id);
            ASSERT_RESULT(r, TUNNEL_CLOSED);
            sa_response_free(r);
            return;
        }
        ASSERT_ERROR(r, UNAVAILABLE);
        sa_response_free(r);
        usleep(50000);
    }
    FAIL("the server never listened on port %d", port);
}

TEST(http_server_through_a_tunnel)
{
    agent_t a;
    tmpdir_make();
    size_t len = 3u << 20;
    uint8_t *body = malloc(len);
    pat_fill(body, 12345, len);
    FILE *f = fopen(P("page.bin"), "w");
    ASSERT(f && fwrite(body, 1, len, f) == len);
    fclose(f);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int port = free_port();
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    const char *argv[] = {"/usr/bin/python3", "-m", "http.server", portstr, "--bind",
                          "127.0.0.1"};
    start_opts_t so = {.cwd = g_dir};
    uint64_t sid;
    uint32_t pid = start_argv(c, argv, 6, &so, &sid);
    wait_listening(c, port);
    http_get_through_tunnel(c, port, "page.bin", body, len);
    /* Several at once on the same connection. */
    for (int i = 0; i < 3; i++)
        http_get_through_tunnel(c, port, "page.bin", body, len);
    /* Stopped with a signal. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SendSignal sg = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    sg.pid = pid;
    sg.signal = SIGTERM;
    req.op_case = OP(SIGNAL);
    req.signal = &sg;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    free(body);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ bulk */

TEST(bulk_download_slow_reader)
{
    agent_t a;
    small_quarantine();
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_SEND, .n = BULK};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    tun_t t;
    tun_open(&t, c, tcp_target(port), 1u << 20);
    t.auto_credit = 0;
    /* Slow at first: credit comes back late for the first 32 MiB; the
     * agent must never send past it (tun_step checks every byte). */
    uint64_t checked = 0;
    static uint8_t buf[4u << 20];
    t.sink = buf;
    t.sink_cap = sizeof buf;
    while (!t.eof) {
        if (tun_step(&t, 30000))
            FAIL("tunnel ended early");
        if (!pat_check(t.sink, checked, t.sink_len))
            FAIL("data differs near offset %llu", (unsigned long long)checked);
        checked += t.sink_len;
        uint32_t got = (uint32_t)t.sink_len;
        t.sink_len = 0;
        if (checked < (32u << 20))
            usleep(2000);
        if (got)
            tun_window(&t, got);
    }
    t.sink = NULL;
    ASSERT_EQ(checked, BULK);
    tun_send(&t, NULL, 0, 1);
    Response *r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT_EQ(r->tunnel_closed->bytes_in, BULK);
    long long hwm = proc_hwm(a.pid);
    printf("  agent peak RSS %.1f MiB after %llu MiB down\n", (double)hwm / 1048576.0,
           BULK >> 20);
    ASSERT_LT(hwm, 48ll << 20);
    tun_free(&t);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

TEST(bulk_upload_slow_target)
{
    agent_t a;
    small_quarantine();
    int port, lfd = listen_tcp(&port);
    /* The target reads the first 16 MiB slowly: the agent's buffer fills
     * and the client must wait for credit. */
    srv_opts_t so = {.kind = SRV_SINK, .slow = 16u << 20};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    tun_t t;
    tun_open(&t, c, tcp_target(port), 0);
    tun_sink(&t, 4096);
    size_t piece = 1u << 20;
    uint8_t *buf = malloc(piece);
    for (uint64_t off = 0; off < BULK; off += piece) {
        pat_fill(buf, off, piece);
        tun_send(&t, buf, piece, off + piece == BULK);
    }
    free(buf);
    Response *r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT_EQ(r->tunnel_closed->bytes_out, BULK);
    t.sink[t.sink_len] = 0;
    char want[64];
    snprintf(want, sizeof want, "%llu ok\n", BULK);
    ASSERT_STR_EQ((char *)t.sink, want);
    long long hwm = proc_hwm(a.pid);
    printf("  agent peak RSS %.1f MiB after %llu MiB up\n", (double)hwm / 1048576.0,
           BULK >> 20);
    ASSERT_LT(hwm, 48ll << 20);
    tun_free(&t);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

/* 50 tunnels on one connection, one of them never credited: the others
 * finish and Ping is answered throughout. */
TEST(fifty_tunnels_one_stalled)
{
    enum { N = 50 };
    const uint64_t each = 4u << 20;
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_SEND, .n = each, .max_conns = N};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    static tun_t t[N];
    for (int i = 0; i < N; i++) {
        tun_open(&t[i], c, tcp_target(port), 64u << 10);
        t[i].auto_credit = i != 0; /* tunnel 0 is stalled after its first window */
    }
    int done = 1, pings = 0;
    uint64_t got[N] = {0};
    while (done < N) {
        for (int i = 1; i < N; i++) {
            if (t[i].eof)
                continue;
            /* Everything already here for tunnel i, then one more. */
            tun_step(&t[i], 30000);
            got[i] = t[i].received;
            if (t[i].eof)
                done++;
        }
        ping_ok(c);
        pings++;
    }
    for (int i = 1; i < N; i++)
        ASSERT_EQ(got[i], each);
    /* The stalled one got exactly its window, no more. */
    while (t[0].received < (64u << 10))
        tun_step(&t[0], 30000);
    ASSERT_EQ(t[0].received, 64u << 10);
    ASSERT_EQ(open_tunnels(c), N);
    ping_ok(c);
    /* Unstall it: it finishes too. */
    t[0].auto_credit = 1;
    tun_window(&t[0], 64u << 10);
    while (!t[0].eof)
        tun_step(&t[0], 30000);
    ASSERT_EQ(t[0].received, each);
    for (int i = 0; i < N; i++) {
        tun_send(&t[i], NULL, 0, 1);
        ASSERT_RESULT(tun_finish(&t[i]), TUNNEL_CLOSED);
        tun_free(&t[i]);
    }
    printf("  %d pings answered while 49 tunnels ran\n", pings);
    ASSERT_EQ(open_tunnels(c), 0);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

/* ------------------------------------------------------------ ends */

TEST(half_close)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_SINK};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    tun_t t;
    uint8_t buf[1000];
    pat_fill(buf, 0, sizeof buf);
    tun_open(&t, c, tcp_target(port), 0);
    tun_sink(&t, 4096);
    /* The target answers only once it sees our end of file. */
    tun_send(&t, buf, sizeof buf, 1);
    Response *r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT(t.eof);
    t.sink[t.sink_len] = 0;
    ASSERT_STR_EQ((char *)t.sink, "1000 ok\n");
    ASSERT_STR_EQ(r->tunnel_closed->reason, "closed");
    tun_free(&t);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

TEST(target_closes_first)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_BYE};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    tun_t t;
    tun_open(&t, c, tcp_target(port), 0);
    tun_sink(&t, 4096);
    while (!t.eof)
        ASSERT_EQ(tun_step(&t, 10000), 0);
    ASSERT_EQ(t.sink_len, 4);
    ASSERT_MEM_EQ(t.sink, "bye\n", 4);
    /* Half open now: our side ends it. */
    tun_send(&t, NULL, 0, 1);
    Response *r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT_EQ(r->tunnel_closed->bytes_in, 4);
    tun_free(&t);
    ASSERT_EQ(open_tunnels(c), 0);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

TEST(refused_and_unresolvable)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    Response *r = tun_open_err(c, tcp_target(free_port()));
    ASSERT_ERROR(r, UNAVAILABLE);
    ASSERT_EQ(r->error->os_errno, ECONNREFUSED);
    ASSERT(strstr(r->error->message, "refused"));
    sa_response_free(r);
    r = tun_open_err(c, "tcp:no-such-host.invalid:80");
    ASSERT_ERROR(r, NOT_FOUND);
    ASSERT(strstr(r->error->message, "no-such-host.invalid"));
    sa_response_free(r);
    const char *bad[] = {"", "tcp:", "tcp:host", "tcp:host:0", "tcp:host:65536", "tcp:::1:80",
                         "tcp:[::1]80", "tcp:ho st:80", "unix:", "unix:relative", "udp:x:1",
                         "tcp:host:8x"};
    for (size_t i = 0; i < SA_ARRAY_LEN(bad); i++) {
        r = tun_open_err(c, bad[i]);
        ASSERT_ERROR(r, INVALID_ARGUMENT);
        sa_response_free(r);
    }
    r = tun_open_err(c, "unix:/nonexistent/sa-tunnel.sock");
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    ASSERT_EQ(open_tunnels(c), 0);
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(unix_target)
{
    agent_t a;
    tmpdir_make();
    int lfd = listen_unix(P("echo.sock"));
    srv_opts_t so = {.kind = SRV_ECHO};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    char target[300];
    snprintf(target, sizeof target, "unix:%s", P("echo.sock"));
    tun_t t;
    tun_open(&t, c, target, 0);
    tun_sink(&t, 1u << 20);
    uint8_t *buf = malloc(1u << 20);
    pat_fill(buf, 99, 1u << 20);
    tun_send(&t, buf, 1u << 20, 1);
    Response *r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT_EQ(t.sink_len, 1u << 20);
    ASSERT_MEM_EQ(t.sink, buf, 1u << 20);
    free(buf);
    tun_free(&t);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
    tmpdir_remove();
}

TEST(allow_list)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_ECHO, .max_conns = 4};
    pid_t srv = server_start(lfd, &so);
    char rule[64];
    snprintf(rule, sizeof rule, "tcp:127.0.0.1:%d", port);
    agent_start(&a, "--tunnel-allow", rule, "--tunnel-allow", "unix:/run/sa-test-app/*", NULL);
    sa_client_t *c = agent_connect(&a);
    tun_t t;
    tun_open(&t, c, tcp_target(port), 0);
    tun_send(&t, NULL, 0, 1);
    ASSERT_RESULT(tun_finish(&t), TUNNEL_CLOSED);
    tun_free(&t);
    /* localhost is 127.0.0.1 first: allowed through the address rule. */
    char target[64];
    snprintf(target, sizeof target, "tcp:localhost:%d", port);
    tun_open(&t, c, target, 0);
    tun_send(&t, NULL, 0, 1);
    ASSERT_RESULT(tun_finish(&t), TUNNEL_CLOSED);
    tun_free(&t);
    const char *denied[] = {"tcp:127.0.0.1:1", "tcp:127.0.0.2:1", "unix:/run/other.sock",
                            "unix:/run/sa-test-app/../x.sock", "unix:/run/sa-test-app/a/b"};
    for (size_t i = 0; i < SA_ARRAY_LEN(denied); i++) {
        Response *r = tun_open_err(c, denied[i]);
        ASSERT_ERROR(r, PERMISSION_DENIED);
        ASSERT(strstr(r->error->message, "unix:/run/sa-test-app/*"));
        ASSERT(strstr(r->error->message, rule));
        sa_response_free(r);
    }
    sa_client_close(c);
    agent_stop(&a);

    agent_start(&a, "--no-tunnels", NULL);
    c = agent_connect(&a);
    Response *r = tun_open_err(c, tcp_target(port));
    ASSERT_ERROR(r, PERMISSION_DENIED);
    ASSERT(strstr(r->error->message, "--no-tunnels"));
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
    server_stop(srv);
}

/* ------------------------------------------------------------ endings mid-way */

TEST(cancel_mid_transfer)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_SEND, .n = 1ull << 40};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int fds0 = fd_count(a.pid);
    tun_t t;
    tun_open(&t, c, tcp_target(port), 0);
    while (t.received < (8u << 20))
        ASSERT_EQ(tun_step(&t, 10000), 0);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel cn = SANDBOX__AGENT__V1__CANCEL__INIT;
    cn.target_id = t.id;
    req.op_case = OP(CANCEL);
    req.cancel = &cn;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = tun_finish(&t);
    ASSERT_RESULT(r, TUNNEL_CLOSED);
    ASSERT_EQ(r->tunnel_closed->os_errno, ECANCELED);
    ASSERT(strstr(r->tunnel_closed->reason, "cancel"));
    ASSERT_GE(r->tunnel_closed->bytes_in, 8u << 20);
    tun_free(&t);
    ASSERT_EQ(open_tunnels(c), 0);
    /* At most: a descriptor the agent held just after start-up may be closed
     * since; a leak shows as more. */
    ASSERT_LE(fd_count(a.pid), fds0);
    ping_ok(c);
    sa_client_close(c);
    /* The target's connection was closed: its writer fails and exits. */
    int st;
    for (int i = 0; i < 500 && waitpid(srv, &st, WNOHANG) == 0; i++)
        usleep(10000);
    ASSERT(kill(srv, 0) < 0);
    agent_stop(&a);
}

TEST(client_disconnect_mid_transfer)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_SEND, .n = 1ull << 40, .max_conns = 8};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *probe = agent_connect(&a);
    int fds0 = fd_count(a.pid);
    sa_client_t *c = agent_connect(&a);
    tun_t t[8];
    for (int i = 0; i < 8; i++)
        tun_open(&t[i], c, tcp_target(port), 0);
    for (int i = 0; i < 8; i++)
        while (t[i].received < (1u << 20))
            ASSERT_EQ(tun_step(&t[i], 10000), 0);
    /* Data from the client still buffered in the agent, too. */
    uint8_t buf[4096] = {0};
    tun_send(&t[0], buf, sizeof buf, 0);
    ASSERT_EQ(open_tunnels(probe), 8);
    sa_client_close(c);
    for (int i = 0; i < 8; i++)
        t[i].c = NULL;
    /* Every target connection closes: each writer dies of it. */
    for (int i = 0; i < 300 && (open_tunnels(probe) || fd_count(a.pid) > fds0); i++)
        usleep(10000);
    ASSERT_EQ(open_tunnels(probe), 0);
    /* At most: a descriptor the agent held just after start-up may be closed
     * since; a leak shows as more. */
    ASSERT_LE(fd_count(a.pid), fds0);
    sa_client_close(probe);
    server_stop(srv);
    agent_stop(&a);
}

/* ------------------------------------------------------------ misuse and limits */

TEST(misuse_and_limits)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_HOLD, .max_conns = 8};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, "--max-tunnels-per-conn", "2", "--max-tunnels", "3", "--tunnel-window",
                "65536", NULL);
    sa_client_t *c = agent_connect(&a);
    tun_t t1, t2, t3;
    tun_open(&t1, c, tcp_target(port), 0);
    ASSERT_EQ(t1.agent_window, 65536);
    tun_open(&t2, c, tcp_target(port), 0);
    Response *r = tun_open_err(c, tcp_target(port));
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    ASSERT(strstr(r->error->message, "--max-tunnels-per-conn"));
    sa_response_free(r);
    sa_client_t *c2 = agent_connect(&a);
    tun_open(&t3, c2, tcp_target(port), 0);
    r = tun_open_err(c2, tcp_target(port));
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    ASSERT(strstr(r->error->message, "--max-tunnels"));
    sa_response_free(r);

    /* A tunnel id that is not open here, on another connection's tunnel
     * too: NOT_FOUND on the message's id. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__TunnelSend ts = SANDBOX__AGENT__V1__TUNNEL_SEND__INIT;
    ts.tunnel_id = t3.id + 1000;
    req.op_case = OP(TUNNEL_SEND);
    req.tunnel_send = &ts;
    r = call(c, &req);
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);

    /* The target reads nothing: after its socket buffers, the agent's
     * window fills; one byte more closes the tunnel. */
    uint8_t *big = calloc(1, 8u << 20);
    uint64_t sent = 0;
    for (;;) {
        /* Send within the window until no credit comes back for a while. */
        while (t1.sent_outstanding + 16384 <= t1.agent_window) {
            tun_send(&t1, big, 16384, 0);
            sent += 16384;
        }
        Response *x = NULL;
        int rc = sa_client_recv_id(c, t1.id, &x, 500);
        if (rc == -ETIMEDOUT)
            break;
        ASSERT_EQ(rc, 0);
        ASSERT_RESULT(x, TUNNEL_DATA);
        t1.sent_outstanding -= x->tunnel_data->credit;
        sa_response_free(x);
        ASSERT_LT(sent, 64u << 20);
    }
    {
        Request q = REQUEST_INIT;
        Sandbox__Agent__V1__TunnelSend s2 = SANDBOX__AGENT__V1__TUNNEL_SEND__INIT;
        s2.tunnel_id = t1.id;
        s2.data.data = big;
        s2.data.len = t1.agent_window - t1.sent_outstanding + 1;
        q.id = t1.id;
        q.op_case = OP(TUNNEL_SEND);
        q.tunnel_send = &s2;
        ASSERT_EQ(sa_client_send(c, &q), 0);
    }
    r = tun_finish(&t1);
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    ASSERT(strstr(r->error->message, "window"));
    tun_free(&t1);
    free(big);
    /* The others carry on. */
    ping_ok(c);
    ASSERT_EQ(open_tunnels(c), 2);
    tun_open(&t1, c, tcp_target(port), 0);
    sa_client_close(c);
    sa_client_close(c2);
    server_stop(srv);
    agent_stop(&a);
}

/* ------------------------------------------------------------ dedicated */

/* Read from fd until n bytes or EOF; returns the count. */
static size_t read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 20000) <= 0)
            FAIL("read: nothing for 20 s after %zu bytes", got);
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("read: %s", strerror(errno));
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return got;
}

TEST(connect_dedicated)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_ECHO, .max_conns = 2};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *probe = agent_connect(&a);
    int fds0 = fd_count(a.pid);
    sa_client_t *c = agent_connect(&a);

    /* The Connect frame and the first target bytes in one write: what
     * follows the frame is the target's. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Connect cn = SANDBOX__AGENT__V1__CONNECT__INIT;
    cn.target = tcp_target(port);
    req.id = 77;
    req.op_case = OP(CONNECT);
    req.connect = &cn;
    uint8_t *frame;
    size_t flen;
    ASSERT_EQ(frame_encode(&req.base, 0, 1u << 20, &frame, &flen), 0);
    uint8_t *first = malloc(flen + 5);
    memcpy(first, frame, flen);
    memcpy(first + flen, "early", 5);
    ASSERT_EQ(sa_client_send_raw(c, first, flen + 5), 0);
    free(first);
    free(frame);
    /* The Ack, read byte-exactly: the echo of "early" may follow it at
     * once, unframed. */
    int fd = sa_client_fd(c);
    Response ack = RESPONSE_INIT;
    Ack ackm = SANDBOX__AGENT__V1__ACK__INIT;
    ack.id = 77;
    ack.done = 1;
    ack.result_case = RES(ACK);
    ack.ack = &ackm;
    ASSERT_EQ(frame_encode(&ack.base, 0, 1u << 20, &frame, &flen), 0);
    uint8_t got[64];
    ASSERT_EQ(read_full(fd, got, flen), flen);
    ASSERT_MEM_EQ(got, frame, flen);
    free(frame);
    ASSERT_EQ(open_tunnels(probe), 1);
    size_t plen = 4u << 20;
    uint8_t *out = malloc(plen), *in = malloc(plen + 5);
    pat_fill(out, 5, plen);
    pid_t w = fork();
    if (w == 0) {
        write_all_fd(fd, out, plen);
        shutdown(fd, SHUT_WR); /* half-close: the echo's answer still comes */
        _exit(0);
    }
    ASSERT_EQ(read_full(fd, in, plen + 5), plen + 5);
    ASSERT_MEM_EQ(in, "early", 5);
    ASSERT_MEM_EQ(in + 5, out, plen);
    ASSERT_EQ(read_full(fd, in, 1), 0); /* the echo server closed: so do we */
    waitpid(w, NULL, 0);
    free(out);
    free(in);
    sa_client_close(c);
    for (int i = 0; i < 300 && (open_tunnels(probe) || fd_count(a.pid) > fds0); i++)
        usleep(10000);
    ASSERT_EQ(open_tunnels(probe), 0);
    /* At most: a descriptor the agent held just after start-up may be closed
     * since; a leak shows as more. */
    ASSERT_LE(fd_count(a.pid), fds0);

    /* Through the client library. */
    c = agent_connect(&a);
    uint8_t *rest;
    size_t rest_len;
    char err[300];
    ASSERT_EQ(sa_client_dedicate(c, tcp_target(port), &rest, &rest_len, err, sizeof err), 0);
    ASSERT_EQ(rest_len, 0);
    fd = sa_client_fd(c);
    write_all_fd(fd, "ping\n", 5);
    uint8_t buf[8];
    ASSERT_EQ(read_full(fd, buf, 5), 5);
    ASSERT_MEM_EQ(buf, "ping\n", 5);
    sa_client_close(c);
    sa_client_close(probe);
    server_stop(srv);
    agent_stop(&a);
}

TEST(connect_refusals)
{
    agent_t a;
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_HOLD, .max_conns = 2};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, "--tunnel-allow", "tcp:127.0.0.1:*", NULL);
    sa_client_t *c = agent_connect(&a);
    uint8_t *rest;
    size_t rest_len;
    char err[300];
    /* Refused: an error, and the connection stays framed. */
    int rc = sa_client_dedicate(c, tcp_target(free_port()), &rest, &rest_len, err, sizeof err);
    ASSERT_EQ(rc, -ECONNREFUSED);
    ASSERT(strstr(err, "UNAVAILABLE"));
    ping_ok(c);
    rc = sa_client_dedicate(c, "unix:/tmp/x.sock", &rest, &rest_len, err, sizeof err);
    ASSERT(strstr(err, "PERMISSION_DENIED"));
    ping_ok(c);
    /* Another request in flight: FAILED_PRECONDITION. */
    tun_t t;
    tun_open(&t, c, tcp_target(port), 0);
    rc = sa_client_dedicate(c, tcp_target(port), &rest, &rest_len, err, sizeof err);
    ASSERT(strstr(err, "FAILED_PRECONDITION"));
    ping_ok(c);
    tun_send(&t, NULL, 0, 1);
    sa_client_close(c);
    server_stop(srv);
    agent_stop(&a);
}

TEST(connect_bulk_and_disconnect)
{
    agent_t a;
    small_quarantine();
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_SEND, .n = 1ull << 40, .max_conns = 4};
    pid_t srv = server_start(lfd, &so);
    agent_start(&a, NULL);
    sa_client_t *probe = agent_connect(&a);
    int fds0 = fd_count(a.pid);
    sa_client_t *c[4];
    static uint8_t buf[1u << 20];
    for (int i = 0; i < 4; i++) {
        uint8_t *rest;
        size_t rest_len;
        char err[300];
        c[i] = agent_connect(&a);
        ASSERT_EQ(sa_client_dedicate(c[i], tcp_target(port), &rest, &rest_len, err, sizeof err),
                  0);
        uint64_t got = rest_len;
        ASSERT(pat_check(rest, 0, rest_len));
        free(rest);
        while (got < BULK / 4) {
            size_t n = read_full(sa_client_fd(c[i]), buf, sizeof buf);
            ASSERT_EQ(n, sizeof buf);
            if (!pat_check(buf, got, n))
                FAIL("data differs near %llu", (unsigned long long)got);
            got += n;
        }
    }
    ASSERT_EQ(open_tunnels(probe), 4);
    long long hwm = proc_hwm(a.pid);
    ASSERT_LT(hwm, 48ll << 20);
    for (int i = 0; i < 4; i++)
        sa_client_close(c[i]);
    for (int i = 0; i < 300 && (open_tunnels(probe) || fd_count(a.pid) > fds0); i++)
        usleep(10000);
    ASSERT_EQ(open_tunnels(probe), 0);
    /* At most: a descriptor the agent held just after start-up may be closed
     * since; a leak shows as more. */
    ASSERT_LE(fd_count(a.pid), fds0);
    sa_client_close(probe);
    server_stop(srv);
    agent_stop(&a);
}

/* ------------------------------------------------------------ sandboxctl */

/* sandboxctl forward SPEC in the background, its stderr in errpath; the
 * local port from its first line of output. */
static pid_t forward_start(agent_t *a, const char *spec, const char *errpath, int *port)
{
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        int efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(efd, 2);
        close(pfd[0]);
        execl(CTL_BIN, CTL_BIN, "--connect", a->addr, "forward", spec, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char line[256];
    FILE *f = fdopen(pfd[0], "r");
    if (!fgets(line, sizeof line, f))
        FAIL("sandboxctl forward %s printed nothing", spec);
    fclose(f);
    const char *p = strstr(line, "127.0.0.1:");
    if (strncmp(line, "Forwarding from ", 16) || !p)
        FAIL("unexpected first line: %s", line);
    *port = atoi(p + 10);
    ASSERT_GT(*port, 0);
    return pid;
}

/* The whole workflow: http.server started through the agent, fetched with
 * curl through sandboxctl forward, stopped with a signal. */
TEST(forward_http_server_with_curl)
{
    agent_t a;
    tmpdir_make();
    size_t len = 5u << 20;
    uint8_t *body = malloc(len);
    pat_fill(body, 777, len);
    FILE *f = fopen(P("page.bin"), "w");
    ASSERT(f && fwrite(body, 1, len, f) == len);
    fclose(f);
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int port = free_port();
    char portstr[16], spec[32];
    snprintf(portstr, sizeof portstr, "%d", port);
    const char *argv[] = {"/usr/bin/python3", "-m", "http.server", portstr, "--bind",
                          "127.0.0.1"};
    start_opts_t so = {.cwd = g_dir};
    uint64_t sid;
    uint32_t pid = start_argv(c, argv, 6, &so, &sid);
    wait_listening(c, port);

    int lport;
    snprintf(spec, sizeof spec, "0:%d", port);
    pid_t fwd = forward_start(&a, spec, P("forward.err"), &lport);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(sh("curl -sS --max-time 30 -o %s http://127.0.0.1:%d/page.bin", P("got.bin"),
                     lport),
                  0);
        ASSERT(file_equals(P("got.bin"), body, len));
    }
    /* Several at once. */
    ASSERT_EQ(sh("for i in 1 2 3 4; do curl -sS --max-time 30 -o %s.$i "
                 "http://127.0.0.1:%d/page.bin & done; wait",
                 P("par"), lport),
              0);
    for (int i = 1; i <= 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "par.%d", i);
        ASSERT(file_equals(P(name), body, len));
    }
    /* Stopped with a signal: the next request is refused, and forward
     * says so. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SendSignal sg = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    sg.pid = pid;
    sg.signal = SIGTERM;
    req.op_case = OP(SIGNAL);
    req.signal = &sg;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    Request wq = REQUEST_INIT;
    Sandbox__Agent__V1__WaitProcess wp = SANDBOX__AGENT__V1__WAIT_PROCESS__INIT;
    wp.pid = pid;
    wq.op_case = OP(WAIT);
    wq.wait = &wp;
    sa_response_free(call(c, &wq));
    ASSERT_NE(sh("curl -sS --max-time 30 -o /dev/null http://127.0.0.1:%d/ 2>/dev/null", lport),
              0);
    kill(fwd, SIGTERM);
    waitpid(fwd, NULL, 0);
    FILE *e = fopen(P("forward.err"), "r");
    char errtext[4096] = "";
    size_t en = fread(errtext, 1, sizeof errtext - 1, e);
    errtext[en] = 0;
    fclose(e);
    if (!strstr(errtext, "refused: UNAVAILABLE") || !strstr(errtext, "Connection refused"))
        FAIL("forward did not say the target refused: %s", errtext);
    free(body);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

TEST(connect_command)
{
    agent_t a;
    tmpdir_make();
    int port, lfd = listen_tcp(&port);
    srv_opts_t so = {.kind = SRV_ECHO, .max_conns = 1};
    pid_t srv = server_start(lfd, &so);
    size_t len = 3u << 20;
    uint8_t *data = malloc(len);
    pat_fill(data, 3, len);
    FILE *f = fopen(P("in.bin"), "w");
    ASSERT(f && fwrite(data, 1, len, f) == len);
    fclose(f);
    agent_start(&a, NULL);
    /* stdin's end is passed on; the echo's answer comes back whole. */
    ASSERT_EQ(sh("%s --connect %s connect %d < %s > %s", CTL_BIN, a.addr, port, P("in.bin"),
                 P("out.bin")),
              0);
    ASSERT(file_equals(P("out.bin"), data, len));
    /* A refusal: exit status 1 and the reason. */
    ASSERT_EQ(sh("%s --connect %s connect tcp:127.0.0.1:%d </dev/null 2>%s", CTL_BIN, a.addr,
                 free_port(), P("err.txt")),
              1);
    f = fopen(P("err.txt"), "r");
    char text[1024] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    ASSERT(strstr(text, "UNAVAILABLE") && strstr(text, "Connection refused"));
    free(data);
    server_stop(srv);
    agent_stop(&a);
    tmpdir_remove();
}

TEST_MAIN(TEST_ENTRY(echo_through_a_tunnel), TEST_ENTRY(http_server_through_a_tunnel),
          TEST_ENTRY_T(bulk_download_slow_reader, 300), TEST_ENTRY_T(bulk_upload_slow_target, 300),
          TEST_ENTRY_T(fifty_tunnels_one_stalled, 120), TEST_ENTRY(half_close),
          TEST_ENTRY(target_closes_first), TEST_ENTRY(refused_and_unresolvable),
          TEST_ENTRY(unix_target), TEST_ENTRY(allow_list), TEST_ENTRY(cancel_mid_transfer),
          TEST_ENTRY(client_disconnect_mid_transfer), TEST_ENTRY(misuse_and_limits),
          TEST_ENTRY(connect_dedicated), TEST_ENTRY(connect_refusals),
          TEST_ENTRY_T(connect_bulk_and_disconnect, 120),
          TEST_ENTRY_T(forward_http_server_with_curl, 120), TEST_ENTRY(connect_command))
