/* Integration tests of the foundation: the real agent on a temporary unix
 * socket, driven through the client library and with raw bytes. */
#include "frame.h"
#include "ctl_helpers.h"
#include "harness.h"

#include <poll.h>
#include <sys/socket.h>
#include <zlib.h>

/* Read until EOF, returning the responses' count; the first is in *first. */
static int drain_to_eof(sa_client_t *c, Response **first)
{
    int n = 0;
    *first = NULL;
    for (;;) {
        Response *r;
        int rc = sa_client_recv(c, &r, 10000);
        if (rc == -EPIPE || rc == -ECONNRESET)
            return n;
        if (rc < 0)
            FAIL("expected EOF, got %s", strerror(-rc));
        if (!*first)
            *first = r;
        else
            sa_response_free(r);
        n++;
    }
}

static void expect_protocol_error_and_close(agent_t *a, const void *bytes, size_t len,
                                            const char *needle)
{
    sa_client_t *c = agent_connect(a);
    ASSERT_EQ(sa_client_send_raw(c, bytes, len), 0);
    Response *r;
    ASSERT_EQ(drain_to_eof(c, &r), 1);
    ASSERT_ERROR(r, PROTOCOL_ERROR);
    ASSERT_EQ(r->id, 0);
    if (needle && !strstr(r->error->message, needle))
        FAIL("message '%s' lacks '%s'", r->error->message, needle);
    sa_response_free(r);
    sa_client_close(c);
    /* The agent and new connections carry on. */
    ASSERT(agent_alive(a));
    c = agent_connect(a);
    ping_ok(c);
    sa_client_close(c);
}

TEST(hello_reply)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect_raw(&a);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Hello h = SANDBOX__AGENT__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.client_name = "test";
    req.op_case = OP(HELLO);
    req.hello = &h;
    req.id = 7;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, HELLO);
    ASSERT_EQ(r->id, 7);
    ASSERT(r->done);
    ASSERT_EQ(r->hello->protocol_version, 1);
    ASSERT_STR_EQ(r->hello->agent_version, SANDBOX_AGENT_VERSION);
    ASSERT_EQ(r->hello->max_frame_size, 4u << 20);
    ASSERT_GE(r->hello->n_capabilities, 1);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(ping_echoes_payload)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    size_t sizes[] = {0, 1, 1000, 100000, (4u << 20) - 64};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *buf = malloc(sizes[i] + 1);
        for (size_t j = 0; j < sizes[i]; j++)
            buf[j] = (uint8_t)(j * 7 + i);
        Sandbox__Agent__V1__Ping p;
        Request req = ping_req(&p, buf, sizes[i]);
        Response *r = call(c, &req);
        ASSERT_RESULT(r, PONG);
        ASSERT_EQ(r->pong->payload.len, sizes[i]);
        if (sizes[i])
            ASSERT_MEM_EQ(r->pong->payload.data, buf, sizes[i]);
        ASSERT_GT(r->pong->agent_time_unix_nano, 1600000000ull * 1000000000ull);
        sa_response_free(r);
        free(buf);
    }
    sa_client_close(c);
    agent_stop(&a);
}

TEST(info_describes_agent)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    Response *r = info_call(c);
    ASSERT_EQ(r->info->agent_pid, a.pid);
    ASSERT_EQ(r->info->protocol_version, 1);
    ASSERT_GT(r->info->cpu_count, 0);
    ASSERT_GT(r->info->memory_total_bytes, 0);
    ASSERT_GT(r->info->memory_available_bytes, 0);
    ASSERT_GE(r->info->open_connections, 1);
    ASSERT(r->info->hostname[0]);
    ASSERT(r->info->kernel_release[0]);
    ASSERT(r->info->arch[0]);
    ASSERT_GT(r->info->agent_rss_bytes, 0);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(cancel_unknown_id)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel cn = SANDBOX__AGENT__V1__CANCEL__INIT;
    cn.target_id = 12345;
    req.op_case = OP(CANCEL);
    req.cancel = &cn;
    Response *r = call(c, &req);
    ASSERT_ERROR(r, NOT_FOUND);
    ASSERT(strstr(r->error->message, "12345"));
    sa_response_free(r);
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(unknown_op_keeps_connection)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    /* Request{id = 77, field 999 (a future op) = empty message}. */
    uint8_t payload[] = {0x08, 77, 0xba, 0x3e, 0x00};
    uint8_t frame[5 + sizeof payload];
    frame_header_write(frame, 0, sizeof payload);
    memcpy(frame + 5, payload, sizeof payload);
    ASSERT_EQ(sa_client_send_raw(c, frame, sizeof frame), 0);
    Response *r = recv_id(c, 77);
    ASSERT_ERROR(r, UNIMPLEMENTED);
    sa_response_free(r);
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(many_concurrent_connections)
{
    agent_t a;
    agent_start(&a, NULL);
    enum { N = 200 };
    sa_client_t *cs[N];
    for (int i = 0; i < N; i++)
        cs[i] = agent_connect(&a);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            Sandbox__Agent__V1__Ping p;
            char msg[32];
            snprintf(msg, sizeof msg, "conn %d round %d", i, round);
            Request req = ping_req(&p, msg, strlen(msg));
            req.id = (uint64_t)(i + 1);
            ASSERT_EQ(sa_client_send(cs[i], &req), 0);
        }
        for (int i = 0; i < N; i++) {
            char msg[32];
            snprintf(msg, sizeof msg, "conn %d round %d", i, round);
            Response *r = recv_id(cs[i], (uint64_t)(i + 1));
            ASSERT_RESULT(r, PONG);
            ASSERT_EQ(r->pong->payload.len, strlen(msg));
            ASSERT_MEM_EQ(r->pong->payload.data, msg, strlen(msg));
            sa_response_free(r);
        }
    }
    for (int i = 0; i < N; i++)
        sa_client_close(cs[i]);
    agent_stop(&a);
}

TEST(half_frame_then_disconnect)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *other = agent_connect(&a);
    for (int i = 0; i < 20; i++) {
        sa_client_t *c = agent_connect(&a);
        uint8_t half[5 + 10] = {0, 0, 0, 0, 100};
        ASSERT_EQ(sa_client_send_raw(c, half, sizeof half), 0);
        sa_client_close(c);
    }
    ping_ok(other);
    ASSERT(agent_alive(&a));
    sa_client_close(other);
    agent_stop(&a);
}

TEST(garbage_bytes)
{
    agent_t a;
    agent_start(&a, NULL);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    expect_protocol_error_and_close(&a, http, strlen(http), "flags");
    agent_stop(&a);
}

TEST(oversize_length)
{
    agent_t a;
    agent_start(&a, NULL);
    uint8_t h[5] = {0, 0x7f, 0xff, 0xff, 0xff};
    expect_protocol_error_and_close(&a, h, sizeof h, "exceeds");
    uint8_t h2[5];
    frame_header_write(h2, 0, (4u << 20) + 1);
    expect_protocol_error_and_close(&a, h2, sizeof h2, "exceeds");
    agent_stop(&a);
}

TEST(not_a_request)
{
    agent_t a;
    agent_start(&a, NULL);
    uint8_t f[5 + 8] = {0, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    expect_protocol_error_and_close(&a, f, sizeof f, "not a valid");
    agent_stop(&a);
}

TEST(zlib_bomb)
{
    agent_t a;
    agent_start(&a, NULL);
    size_t n = 64u << 20;
    uint8_t *zeros = calloc(1, n);
    uLongf clen = compressBound(n);
    uint8_t *frame = malloc(5 + clen);
    ASSERT(zeros && frame);
    ASSERT_EQ(compress2(frame + 5, &clen, zeros, n, 9), Z_OK);
    free(zeros);
    frame_header_write(frame, FRAME_FLAG_ZLIB, (uint32_t)clen);
    expect_protocol_error_and_close(&a, frame, 5 + clen, "maximum");
    free(frame);
    /* Bounded: the agent never held the inflated 64 MiB. */
    ASSERT_LT(proc_rss(a.pid), 32ll << 20);
    agent_stop(&a);
}

TEST(bad_zlib)
{
    agent_t a;
    agent_start(&a, NULL);
    uint8_t f[5 + 6] = {1, 0, 0, 0, 6, 0x78, 0x9c, 1, 2, 3, 4};
    expect_protocol_error_and_close(&a, f, sizeof f, "zlib");
    agent_stop(&a);
}

TEST(compressed_request_and_response)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect_raw(&a);
    char err[128];
    ASSERT_EQ(sa_client_hello(c, NULL, "z", 1, err, sizeof err), 0);
    static char big[200000];
    memset(big, 'z', sizeof big);
    Sandbox__Agent__V1__Ping p;
    Request req = ping_req(&p, big, sizeof big);
    req.id = 5;
    ASSERT_EQ(sa_client_send_z(c, &req, 1), 0);
    /* Read the raw header: the agent must have compressed its answer. */
    uint8_t h[5];
    struct pollfd pfd = {.fd = sa_client_fd(c), .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, 10000), 1);
    ASSERT_EQ(recv(sa_client_fd(c), h, 5, MSG_WAITALL), 5);
    ASSERT_EQ(h[0], FRAME_FLAG_ZLIB);
    uint32_t plen = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
    ASSERT_LT(plen, 10000);
    uint8_t *body = malloc(plen);
    ASSERT_EQ(recv(sa_client_fd(c), body, plen, MSG_WAITALL), (ssize_t)plen);
    ProtobufCMessage *m;
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__response__descriptor, h[0], body, plen,
                           4u << 20, &m, err, sizeof err),
              0);
    Response *r = (Response *)m;
    ASSERT_RESULT(r, PONG);
    ASSERT_EQ(r->pong->payload.len, sizeof big);
    ASSERT_MEM_EQ(r->pong->payload.data, big, sizeof big);
    sa_response_free(r);
    free(body);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(one_byte_at_a_time)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    Sandbox__Agent__V1__Ping p;
    Request req = ping_req(&p, "slow", 4);
    req.id = 99;
    uint8_t *f;
    size_t len;
    ASSERT_EQ(frame_encode(&req.base, 0, 4u << 20, &f, &len), 0);
    for (size_t i = 0; i < len; i++) {
        ASSERT_EQ(sa_client_send_raw(c, f + i, 1), 0);
        usleep(2000);
    }
    free(f);
    Response *r = recv_id(c, 99);
    ASSERT_RESULT(r, PONG);
    ASSERT_MEM_EQ(r->pong->payload.data, "slow", 4);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(many_frames_in_one_write)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    enum { N = 500 };
    uint8_t *all = malloc(N * 64);
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        Sandbox__Agent__V1__Ping p;
        Request req = ping_req(&p, "x", 1);
        req.id = (uint64_t)(i + 1);
        uint8_t *f;
        size_t len;
        ASSERT_EQ(frame_encode(&req.base, 0, 4u << 20, &f, &len), 0);
        memcpy(all + off, f, len);
        off += len;
        free(f);
    }
    ASSERT_EQ(sa_client_send_raw(c, all, off), 0);
    free(all);
    /* Responses come in request order. */
    for (int i = 0; i < N; i++) {
        Response *r;
        ASSERT_EQ(sa_client_recv(c, &r, 10000), 0);
        ASSERT_EQ(r->id, (uint64_t)(i + 1));
        ASSERT_RESULT(r, PONG);
        sa_response_free(r);
    }
    sa_client_close(c);
    agent_stop(&a);
}

/* A client that sends big pings and never reads: the agent stops reading
 * it instead of buffering, and serves everyone else. */
TEST(client_that_never_reads)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *hog = agent_connect(&a);
    sa_client_t *other = agent_connect(&a);
    int fd = sa_client_fd(hog);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static char payload[1 << 20];
    memset(payload, 'p', sizeof payload);
    Sandbox__Agent__V1__Ping p;
    Request req = ping_req(&p, payload, sizeof payload);
    uint8_t *f;
    size_t len;
    req.id = 1;
    ASSERT_EQ(frame_encode(&req.base, 0, 4u << 20, &f, &len), 0);
    size_t sent = 0, total = 0;
    int stalls = 0;
    for (int i = 0; i < 5000 && total < (256u << 20) && stalls < 50; i++) {
        ssize_t w = send(fd, f + sent, len - sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN)
                FAIL("send: %s", strerror(errno));
            ping_ok(other);
            stalls++;
            usleep(5000);
            continue;
        }
        stalls = 0;
        sent += (size_t)w;
        total += (size_t)w;
        if (sent == len)
            sent = 0;
    }
    free(f);
    ASSERT_LT(total, 256u << 20); /* the agent stopped taking requests */
    ping_ok(other);
    ASSERT_LT(proc_rss(a.pid), 48ll << 20);
    sa_client_close(hog);
    ping_ok(other);
    sa_client_close(other);
    agent_stop(&a);
}

TEST(sigterm_removes_socket)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    ping_ok(c);
    struct stat st;
    ASSERT_EQ(stat(a.sock, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    kill(a.pid, SIGTERM);
    int status;
    ASSERT_EQ(waitpid(a.pid, &status, 0), a.pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_NE(stat(a.sock, &st), 0);
    sa_client_close(c);
}

TEST(sandboxctl_ping_and_info)
{
    agent_t a;
    agent_start(&a, NULL);
    char out[4096];
    ASSERT_EQ(run_ctl(&a, "ping", out, sizeof out), 0);
    ASSERT(strstr(out, "pong"));
    ASSERT_EQ(run_ctl(&a, "info", out, sizeof out), 0);
    ASSERT(strstr(out, "sandbox-agent " SANDBOX_AGENT_VERSION));
    ASSERT_EQ(run_ctl(&a, "--json info", out, sizeof out), 0);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "\"agent_pid\":%d", (int)a.pid);
    ASSERT(strstr(out, pidstr));
    ASSERT_EQ(run_ctl(&a, "no-such-command", out, sizeof out), 2);
    ASSERT_EQ(run_ctl(&a, "--connect unix:/nonexistent/sock ping", out, sizeof out), 1);
    ASSERT(strstr(out, "No such file"));
    agent_stop(&a);
}

TEST(bad_flags_exit_2)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --no-such-flag >/dev/null 2>&1", AGENT_BIN);
    int st = system(cmd);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "%s --max-frame-size abc >/dev/null 2>&1", AGENT_BIN);
    st = system(cmd);
    ASSERT_EQ(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "%s --version >/dev/null 2>&1", AGENT_BIN);
    st = system(cmd);
    ASSERT_EQ(WEXITSTATUS(st), 0);
}

TEST_MAIN(TEST_ENTRY(hello_reply), TEST_ENTRY(ping_echoes_payload), TEST_ENTRY(info_describes_agent),
          TEST_ENTRY(cancel_unknown_id), TEST_ENTRY(unknown_op_keeps_connection),
          TEST_ENTRY(many_concurrent_connections), TEST_ENTRY(half_frame_then_disconnect),
          TEST_ENTRY(garbage_bytes), TEST_ENTRY(oversize_length), TEST_ENTRY(not_a_request),
          TEST_ENTRY(zlib_bomb), TEST_ENTRY(bad_zlib), TEST_ENTRY(compressed_request_and_response),
          TEST_ENTRY(one_byte_at_a_time), TEST_ENTRY(many_frames_in_one_write),
          TEST_ENTRY(client_that_never_reads), TEST_ENTRY(sigterm_removes_socket),
          TEST_ENTRY(sandboxctl_ping_and_info), TEST_ENTRY(bad_flags_exit_2))
