/* Connections, memory bounds, stdin, processes and gaps under a hostile
 * client or an unlucky workload: each test is one promise of README.md or
 * docs/PROTOCOL.md, checked against the real binary, bounded in time and in
 * what it makes the agent hold. */
#include "proc_helpers.h"
#define TMPDIR_PREFIX "/tmp/sa-harden-"
#include "tmpdir.h"

#include "frame.h"

#include <dirent.h>
#include <poll.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/un.h>

#define TOKEN "harden-token-0123456789"
#define MIB (1024 * 1024)

/* Under AddressSanitizer freed memory waits in a quarantine and every block
 * has red zones: memory checks get twice the room, and the check that
 * memory is given back is left to the normal build. */
#if defined(__SANITIZE_ADDRESS__)
#define SA_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SA_TEST_ASAN 1
#endif
#endif
#ifdef SA_TEST_ASAN
#define ROOM(x) (2 * (x))
#else
#define ROOM(x) (x)
#endif

typedef Sandbox__Agent__V1__WriteFile WriteFileReq;

/* One request as a frame in a malloc'd buffer. */
static uint8_t *encode(Request *req, size_t *len)
{
    uint8_t *buf;
    if (frame_encode(&req->base, 0, 0xffffffffu, &buf, len) < 0)
        FAIL("frame_encode");
    return buf;
}

/* A unix socket to the agent, nothing sent. */
static int raw_connect(agent_t *a)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (strlen(a->sock) >= sizeof sa.sun_path)
        FAIL("socket path too long");
    memcpy(sa.sun_path, a->sock, strlen(a->sock) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        FAIL("connect %s: %s", a->sock, strerror(errno));
    return fd;
}

static pid_t g_tr_main; /* the agent's loop thread while traced */
static void tracer_poll(void);

/* Write what the socket takes without blocking, for up to ms milliseconds
 * (the agent reads meanwhile). Returns the bytes written. */
static size_t push_for(int fd, const uint8_t *buf, size_t len, int ms)
{
    size_t off = 0;
    for (int waited = 0; off < len && waited < ms;) {
        ssize_t n = send(fd, buf + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            FAIL("send: %s", strerror(errno));
        if (g_tr_main)
            tracer_poll();
        usleep(20000);
        waited += 20;
    }
    return off;
}

/* The first response on a raw socket, within ms; NULL when the agent
 * closed it without one. */
static Response *raw_recv(int fd, int ms)
{
    uint8_t hdr[5], *body;
    size_t got = 0, need = 5;
    uint8_t *dst = hdr;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint32_t plen = 0;
    for (int phase = 0; phase < 2; phase++) {
        while (got < need) {
            if (poll(&p, 1, ms) != 1)
                FAIL("no response within %d ms", ms);
            ssize_t n = read(fd, dst + got, need - got);
            if (n <= 0)
                return NULL;
            got += (size_t)n;
        }
        if (phase == 0) {
            plen = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
            body = malloc(plen ? plen : 1);
            dst = body;
            got = 0;
            need = plen;
        }
    }
    Response *r = sandbox__agent__v1__response__unpack(NULL, plen, dst);
    free(dst);
    if (!r)
        FAIL("bad response frame");
    return r;
}

/* 1 when the agent closed the socket (EOF or reset) within ms. */
static int raw_closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char buf[4096];
    for (int waited = 0; waited <= ms; waited += 20) {
        if (poll(&p, 1, 20) == 1) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0)
                return 1;
        }
    }
    return 0;
}

static Response *ping_call(sa_client_t *c, size_t payload)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    uint8_t *data = calloc(1, payload ? payload : 1);
    p.payload.data = data;
    p.payload.len = payload;
    req.op_case = OP(PING);
    req.ping = &p;
    Response *r = call(c, &req);
    free(data);
    return r;
}

static void write_token_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        FAIL("%s: %s", path, strerror(errno));
    fputs(TOKEN "\n", f);
    fclose(f);
    chmod(path, 0600);
}

/* ------------------------------------------------------------ freezing the workers */

/* Uploads wait for a file worker as they would behind a slow disk: every
 * thread of the agent but the loop's is stopped with ptrace, and the loop's
 * thread is traced with PTRACE_O_TRACECLONE so that a worker the pool adds
 * starts stopped too (before it takes any lock). The loop itself runs on;
 * tracer_poll() lets it go on at each clone and passes its signals on. */
#define MAX_FROZEN 64
static pid_t g_frozen[MAX_FROZEN];
static int g_nfrozen;

static void frozen_add(pid_t tid)
{
    for (int i = 0; i < g_nfrozen; i++)
        if (g_frozen[i] == tid)
            return;
    if (g_nfrozen == MAX_FROZEN)
        FAIL("more than %d threads", MAX_FROZEN);
    g_frozen[g_nfrozen++] = tid;
}

/* Handle every ptrace stop reported so far (never blocks). */
static void tracer_poll(void)
{
    int st;
    pid_t t;
    while ((t = waitpid(-1, &st, __WALL | WNOHANG)) > 0) {
        if (!WIFSTOPPED(st))
            FAIL("traced thread %d ended (status 0x%x)", (int)t, st);
        if (t != g_tr_main) {
            frozen_add(t); /* new: it stays stopped */
            continue;
        }
        int ev = st >> 16, sig = WSTOPSIG(st);
        /* A clone or an interrupt: go on. A signal: deliver it. */
        ptrace(PTRACE_CONT, t, 0, ev || sig == SIGTRAP ? 0 : sig);
    }
}

/* Returns 0 when ptrace is not allowed here. */
static int freeze_workers(pid_t pid)
{
    char path[64];
    struct dirent *de;
    if (ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACECLONE) < 0) {
        printf("  (ptrace not allowed here: %s)\n", strerror(errno));
        return 0;
    }
    g_tr_main = pid;
    g_nfrozen = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        FAIL("%s: %s", path, strerror(errno));
    while ((de = readdir(d))) {
        int tid = atoi(de->d_name), st;
        if (tid <= 0 || tid == pid)
            continue;
        /* Idle workers wait in the kernel (futex) holding no lock. */
        if (ptrace(PTRACE_SEIZE, tid, 0, 0) < 0 || ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0)
            FAIL("ptrace thread %d: %s", tid, strerror(errno));
        while (waitpid(tid, &st, __WALL) < 0)
            if (errno != EINTR)
                FAIL("waitpid thread %d: %s", tid, strerror(errno));
        frozen_add(tid);
    }
    closedir(d);
    return 1;
}

/* Every thread goes on. */
static void thaw_workers(void)
{
    char path[64];
    struct dirent *de;
    int st;
    /* The loop's thread must be in a stop to be detached. */
    ptrace(PTRACE_INTERRUPT, g_tr_main, 0, 0);
    for (;;) {
        pid_t t = waitpid(-1, &st, __WALL);
        if (t < 0 && errno == EINTR)
            continue;
        if (t < 0)
            FAIL("waitpid: %s", strerror(errno));
        if (t == g_tr_main)
            break;
        frozen_add(t);
    }
    /* A thread cloned just before that stop may not have reported yet:
     * every thread but the loop's is one of ours now. */
    snprintf(path, sizeof path, "/proc/%d/task", (int)g_tr_main);
    DIR *d = opendir(path);
    while (d && (de = readdir(d))) {
        int tid = atoi(de->d_name), known = 0;
        if (tid <= 0 || tid == g_tr_main)
            continue;
        for (int i = 0; i < g_nfrozen; i++)
            known |= g_frozen[i] == tid;
        if (!known) {
            while (waitpid(tid, &st, __WALL) < 0 && errno == EINTR)
                ;
            frozen_add(tid);
        }
    }
    if (d)
        closedir(d);
    for (int i = 0; i < g_nfrozen; i++)
        if (ptrace(PTRACE_DETACH, g_frozen[i], 0, 0) < 0)
            FAIL("detach %d: %s", (int)g_frozen[i], strerror(errno));
    if (ptrace(PTRACE_DETACH, g_tr_main, 0, 0) < 0)
        FAIL("detach %d: %s", (int)g_tr_main, strerror(errno));
    g_nfrozen = 0;
    g_tr_main = 0;
}

static uint8_t *upload_frames(int n, size_t each, const char *dir, const char *stem,
                              size_t *total)
{
    uint8_t *all = NULL;
    size_t len = 0;
    uint8_t *data = malloc(each);
    memset(data, 'u', each);
    for (int i = 0; i < n; i++) {
        char path[256];
        Request req = REQUEST_INIT;
        WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
        snprintf(path, sizeof path, "%s/%s-%d", dir, stem, i);
        w.path = path;
        w.data.data = data;
        w.data.len = each;
        req.id = (uint64_t)i + 1;
        req.op_case = OP(WRITE_FILE);
        req.write_file = &w;
        size_t flen;
        uint8_t *f = encode(&req, &flen);
        all = realloc(all, len + flen);
        memcpy(all + len, f, flen);
        len += flen;
        free(f);
    }
    free(data);
    *total = len;
    return all;
}

/* Item 4: uploads waiting for a worker have a budget per connection and for
 * the agent; beyond it the agent stops reading the connection instead of
 * queueing. With the workers stopped, one connection sending 32 x 1 MiB
 * gets no further than its budget (2 frames) plus the socket's buffers, and
 * eight connections together no further than the agent's (8 frames). */
TEST(upload_budget_backpressure)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, "--max-frame-size", "1048576", NULL);
    sa_client_t *ctl = agent_connect(&a), *up = agent_connect(&a), *many[8];
    for (int i = 0; i < 8; i++)
        many[i] = agent_connect(&a);
    ping_ok(ctl);
    long long rss0 = proc_rss(a.pid);
    if (!freeze_workers(a.pid)) {
        agent_stop(&a);
        tmpdir_remove();
        return;
    }
    /* One connection, 32 MiB. */
    size_t total;
    uint8_t *frames = upload_frames(32, MIB - 4096, g_dir, "one", &total);
    size_t pushed = push_for(sa_client_fd(up), frames, total, 1500);
    printf("  one connection: the agent took %.1f of %.1f MiB\n", pushed / (double)MIB,
           total / (double)MIB);
    /* The budget (2 MiB), the frame being parsed, the socket's buffers. */
    ASSERT_LT(pushed, 12 * (size_t)MIB);
    /* Eight more connections, 8 MiB each. */
    size_t mlen, mpushed[8], sum = 0;
    uint8_t *mframes[8];
    for (int i = 0; i < 8; i++) {
        char stem[16];
        snprintf(stem, sizeof stem, "m%d", i);
        mframes[i] = upload_frames(8, MIB - 4096, g_dir, stem, &mlen);
        mpushed[i] = push_for(sa_client_fd(many[i]), mframes[i], mlen, 300);
    }
    for (int i = 0; i < 8; i++)
        sum += mpushed[i] += push_for(sa_client_fd(many[i]), mframes[i] + mpushed[i],
                                      mlen - mpushed[i], 100);
    tracer_poll();
    long long rss1 = proc_rss(a.pid);
    printf("  eight connections: the agent took %.1f of %.1f MiB; RSS %lld -> %lld KiB\n",
           sum / (double)MIB, 8.0 * mlen / MIB, rss0 / 1024, rss1 / 1024);
    ASSERT_LT(sum, 40 * (size_t)MIB);
    /* The agent's budget (8 MiB) and what each connection has in hand
     * (a frame being parsed, one over the budget), not 96 MiB. */
    ASSERT_LT(rss1 - rss0, ROOM(48LL * MIB));

    /* The workers go on: every upload completes, each answered once, and
     * the agent serves as before. */
    thaw_workers();
    ASSERT_EQ(sa_client_send_raw(up, frames + pushed, total - pushed), 0);
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(sa_client_send_raw(many[i], mframes[i] + mpushed[i], mlen - mpushed[i]), 0);
    for (uint64_t id = 1; id <= 32; id++) {
        Response *r = recv_id(up, id);
        ASSERT_RESULT(r, WRITTEN);
        ASSERT_EQ(r->written->bytes_written, MIB - 4096);
        sa_response_free(r);
    }
    for (int i = 0; i < 8; i++) {
        for (uint64_t id = 1; id <= 8; id++) {
            Response *r = recv_id(many[i], id);
            ASSERT_RESULT(r, WRITTEN);
            sa_response_free(r);
        }
        sa_client_close(many[i]);
        free(mframes[i]);
    }
    free(frames);
    sa_client_close(up);
    ping_ok(ctl);
    sa_client_close(ctl);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ before Hello */

/* Item 5: with a token, a connection that sends no valid Hello within
 * --hello-timeout is closed (UNAUTHENTICATED, id 0), and idle peers never
 * hold more than half of --max-connections: a client that authenticates
 * gets in while they keep arriving. */
TEST(hello_deadline_and_reserve)
{
    agent_t a;
    char tok[128], err[256];
    tmpdir_make();
    snprintf(tok, sizeof tok, "%s", P("token"));
    write_token_file(tok);
    agent_start(&a, "--token-file", tok, "--hello-timeout", "2", "--max-connections", "8", NULL);
    int idle[12];
    for (int i = 0; i < 12; i++) {
        idle[i] = raw_connect(&a);
        usleep(5000);
    }
    /* Twelve idle peers, at most four (half of eight) kept: the oldest went,
     * told why. */
    Response *r = raw_recv(idle[0], 2000);
    ASSERT(r != NULL);
    ASSERT_EQ(r->id, 0);
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    sa_response_free(r);
    ASSERT(raw_closed_within(idle[0], 2000));
    /* A client with the token gets in and is served. */
    sa_client_t *c = agent_connect_raw(&a);
    if (sa_client_hello(c, TOKEN, "test", 0, err, sizeof err) < 0)
        FAIL("hello: %s", err);
    ping_ok(c);
    /* After the deadline every idle peer is gone; the one still waiting
     * when it passed was told. */
    r = raw_recv(idle[11], 4000);
    ASSERT(r != NULL);
    ASSERT_EQ(r->id, 0);
    ASSERT_ERROR(r, UNAUTHENTICATED);
    ASSERT(strstr(r->error->message, "hello-timeout"));
    sa_response_free(r);
    for (int i = 0; i < 12; i++) {
        ASSERT(raw_closed_within(idle[i], 3000));
        close(idle[i]);
    }
    /* The authenticated one has no deadline. */
    ping_ok(c);
    r = info_call(c);
    ASSERT_EQ(r->info->open_connections, 1);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* Item 6: before Hello succeeds a frame longer than 64 KiB is a
 * PROTOCOL_ERROR and a close, decided from the header: the agent does not
 * wait for (or allocate) the body. After Hello, frames up to
 * --max-frame-size are fine. */
TEST(small_frames_before_hello)
{
    agent_t a;
    char tok[128], err[256];
    tmpdir_make();
    snprintf(tok, sizeof tok, "%s", P("token"));
    write_token_file(tok);
    agent_start(&a, "--token-file", tok, NULL);
    long long rss0 = proc_rss(a.pid);
    int fds[20];
    uint8_t hdr[5];
    frame_header_write(hdr, 0, 4 * MIB - 1);
    for (int i = 0; i < 20; i++) {
        fds[i] = raw_connect(&a);
        ASSERT_EQ(write(fds[i], hdr, 5), 5);
    }
    for (int i = 0; i < 20; i++) {
        Response *r = raw_recv(fds[i], 3000);
        ASSERT(r != NULL);
        ASSERT_EQ(r->id, 0);
        ASSERT_ERROR(r, PROTOCOL_ERROR);
        ASSERT(strstr(r->error->message, "before authentication"));
        sa_response_free(r);
        ASSERT(raw_closed_within(fds[i], 2000));
        close(fds[i]);
    }
    ASSERT_LT(proc_rss(a.pid) - rss0, ROOM(8LL * MIB));
    /* Authenticated: a 1 MiB ping is answered. */
    sa_client_t *c = agent_connect_raw(&a);
    if (sa_client_hello(c, TOKEN, "test", 0, err, sizeof err) < 0)
        FAIL("hello: %s", err);
    Response *r = ping_call(c, MIB);
    ASSERT_RESULT(r, PONG);
    ASSERT_EQ(r->pong->payload.len, MIB);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ stdin */

/* Item 7: a WriteStdin the pipe cannot take waits without a copy; one
 * queued behind it, or past the budget for data waiting to be written (2
 * frames), holds the connection's input. 24 pipelined 1 MiB writes to a
 * process that does not read cost the agent about two of them, not all. */
TEST(write_stdin_holds_input)
{
    agent_t a;
    agent_start(&a, "--max-frame-size", "1048576", NULL);
    sa_client_t *c = agent_connect(&a);
    start_opts_t o = {.stdin_pipe = 1};
    uint32_t pid = start_sh(c, "exec sleep 60", &o, NULL);
    long long rss0 = proc_rss(a.pid);
    uint8_t *all = NULL, *data = malloc(MIB);
    size_t len = 0;
    memset(data, 's', MIB);
    for (int i = 0; i < 24; i++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
        w.pid = pid;
        w.data.data = data;
        w.data.len = MIB - 4096;
        req.id = 1000 + (uint64_t)i;
        req.op_case = OP(WRITE_STDIN);
        req.write_stdin = &w;
        size_t flen;
        uint8_t *f = encode(&req, &flen);
        all = realloc(all, len + flen);
        memcpy(all + len, f, flen);
        len += flen;
        free(f);
    }
    free(data);
    size_t pushed = push_for(sa_client_fd(c), all, len, 1500);
    long long rss1 = proc_rss(a.pid);
    printf("  the agent took %.1f of %.1f MiB; RSS %lld -> %lld KiB\n", pushed / (double)MIB,
           len / (double)MIB, rss0 / 1024, rss1 / 1024);
    ASSERT_LT(pushed, 8 * (size_t)MIB);
    ASSERT_LT(rss1 - rss0, ROOM(12LL * MIB));
    /* Another connection kills the process: the waiting write fails, the
     * rest are read and answered, one answer each. */
    sa_client_t *k = agent_connect(&a);
    Response *r = send_signal(k, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(sa_client_send_raw(c, all + pushed, len - pushed), 0);
    free(all);
    for (int i = 0; i < 24; i++) {
        r = recv_id(c, 1000 + (uint64_t)i);
        ASSERT(r->done);
        ASSERT(r->result_case == RES(ACK) || r->result_case == RES(ERROR));
        sa_response_free(r);
    }
    ping_ok(c);
    sa_client_close(k);
    sa_client_close(c);
    agent_stop(&a);
}

/* Bulk data is written from where it arrived in the input buffer: a frame
 * that fills the buffer gives it away whole, the bytes read after it move
 * to a new one, a small frame in a large buffer is copied, and an empty
 * last chunk that waits behind a busy one still ends the upload. Uneven
 * chunks sent back to back, and stdin writes the pipe cannot take at once,
 * arrive byte for byte. */
static void append_frame(uint8_t **all, size_t *len, Request *req)
{
    size_t flen;
    uint8_t *f = encode(req, &flen);
    *all = realloc(*all, *len + flen);
    memcpy(*all + *len, f, flen);
    *len += flen;
    free(f);
}

TEST(bulk_in_place)
{
    static const size_t sizes[] = {2 * MIB + 3, 5,    700 * 1024, MIB + 1, 1500,
                                   3 * MIB,     4000, 600,        0};
    const size_t n = sizeof sizes / sizeof sizes[0];
    size_t total = 0, len = 0;
    for (size_t i = 0; i < n; i++)
        total += sizes[i];
    uint8_t *data = malloc(total), *all = NULL;
    for (size_t i = 0; i < total; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 11);
    tmpdir_make();
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);

    Request req = REQUEST_INIT;
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = P("up");
    w.data.data = data;
    w.data.len = sizes[0];
    w.more = 1;
    req.id = 7;
    req.op_case = OP(WRITE_FILE);
    req.write_file = &w;
    append_frame(&all, &len, &req);
    for (size_t i = 1, off = sizes[0]; i < n; off += sizes[i++]) {
        Request r2 = REQUEST_INIT;
        Sandbox__Agent__V1__FileData fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
        fd.data.data = data + off;
        fd.data.len = sizes[i];
        fd.more = i + 1 < n;
        r2.id = 7;
        r2.op_case = OP(WRITE_DATA);
        r2.write_data = &fd;
        append_frame(&all, &len, &r2);
    }
    ASSERT_EQ(sa_client_send_raw(c, all, len), 0);
    Response *r = recv_id(c, 7);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, total);
    sa_response_free(r);
    ASSERT(file_equals(P("up"), data, total));

    /* stdin: writes larger than the pipe, queued behind each other. */
    start_opts_t o = {.stdin_pipe = 1};
    char script[128];
    snprintf(script, sizeof script, "sleep 0.2; exec cat > %s", P("in"));
    uint32_t pid = start_sh(c, script, &o, NULL);
    free(all);
    all = NULL;
    len = 0;
    for (size_t i = 0, off = 0; i < n; off += sizes[i++]) {
        Request r2 = REQUEST_INIT;
        Sandbox__Agent__V1__WriteStdin ws = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
        ws.pid = pid;
        ws.data.data = data + off;
        ws.data.len = sizes[i];
        r2.id = 100 + i;
        r2.op_case = OP(WRITE_STDIN);
        r2.write_stdin = &ws;
        append_frame(&all, &len, &r2);
    }
    ASSERT_EQ(sa_client_send_raw(c, all, len), 0);
    for (size_t i = 0; i < n; i++) {
        r = recv_id(c, 100 + i);
        ASSERT_RESULT(r, ACK);
        sa_response_free(r);
    }
    r = close_stdin(c, pid);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    sa_response_free(r);
    ASSERT(file_equals(P("in"), data, total));
    ping_ok(c);
    free(all);
    free(data);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ idle followers */

/* Item 8: each connection's queue stays within --max-queued-bytes (output
 * events are cut to fit), so idle followers that never read cost that
 * each, and the memory comes back once they leave. */
TEST(idle_followers_bounded)
{
    agent_t a;
    enum { N = 40 };
    agent_start(&a, "--max-queued-bytes", "65536", NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "head -c 4000000 /dev/urandom; exec sleep 60", NULL, NULL);
    /* Wait until the output is in. */
    for (int i = 0; i < 500; i++) {
        Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
        g.pid = pid;
        Response *r = simple(c, OP(GET_PROCESS), &g);
        ASSERT_RESULT(r, PROCESS);
        uint64_t n = r->process->next_sequence;
        sa_response_free(r);
        if (n >= 4000000)
            break;
        usleep(10000);
    }
    long long rss0 = proc_rss(a.pid);
    sa_client_t *f[N];
    for (int i = 0; i < N; i++) {
        f[i] = agent_connect(&a);
        follow_send(f[i], pid, 0, 0, 0);
    }
    usleep(300000);
    ping_ok(c);
    long long rss1 = proc_rss(a.pid);
    printf("  %d idle followers: RSS %lld -> %lld KiB\n", N, rss0 / 1024, rss1 / 1024);
    /* 64 KiB each and the connections' own buffers; a 4 MiB frame each
     * would be 160 MiB. */
    ASSERT_LT(rss1 - rss0, ROOM(24LL * MIB));
    for (int i = 0; i < N; i++)
        sa_client_close(f[i]);
    Response *r = send_signal(c, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    sa_response_free(wait_exit(c, pid));
    Sandbox__Agent__V1__ForgetProcess fg = SANDBOX__AGENT__V1__FORGET_PROCESS__INIT;
    fg.pid = pid;
    r = simple(c, OP(FORGET), &fg);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ping_ok(c);
    usleep(200000);
    ping_ok(c);
    long long rss2 = proc_rss(a.pid);
    printf("  after they left and the process was forgotten: RSS %lld KiB\n", rss2 / 1024);
#ifndef SA_TEST_ASAN
    ASSERT_LT(rss2 - rss0, 8LL * MIB);
#endif
    sa_client_close(c);
    agent_stop(&a);
}

/* Item 8, the other half: followers of one process share the log's bytes
 * rather than each holding a copy in its queue. Forty idle followers, each
 * allowed the default 1 MiB queue, cost the agent a few MiB, not forty. */
TEST(idle_followers_share_the_log)
{
    agent_t a;
    enum { N = 40 };
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "head -c 4000000 /dev/urandom; exec sleep 60", NULL, NULL);
    for (int i = 0; i < 500; i++) {
        Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
        g.pid = pid;
        Response *r = simple(c, OP(GET_PROCESS), &g);
        ASSERT_RESULT(r, PROCESS);
        uint64_t n = r->process->next_sequence;
        sa_response_free(r);
        if (n >= 4000000)
            break;
        usleep(10000);
    }
    long long rss0 = proc_rss(a.pid);
    sa_client_t *f[N];
    for (int i = 0; i < N; i++) {
        f[i] = agent_connect(&a);
        follow_send(f[i], pid, 0, 0, 0);
    }
    usleep(300000);
    ping_ok(c);
    long long rss1 = proc_rss(a.pid);
    printf("  %d idle followers, 1 MiB queues: RSS %lld -> %lld KiB\n", N, rss0 / 1024,
           rss1 / 1024);
    ASSERT_LT(rss1 - rss0, ROOM(12LL * MIB));
    /* Each still gets every byte, in order, once it reads. */
    for (int i = 0; i < N; i += 13) {
        collected_t k;
        memset(&k, 0, sizeof k);
        uint64_t got = 0;
        while (got < 4000000) {
            Response *r = NULL;
            ASSERT_EQ(sa_client_recv(f[i], &r, 10000), 0);
            ASSERT_RESULT(r, OUTPUT);
            ASSERT_EQ(r->output->sequence, got);
            got += r->output->data.len;
            sa_response_free(r);
        }
        ASSERT_EQ(got, 4000000);
    }
    for (int i = 0; i < N; i++)
        sa_client_close(f[i]);
    Response *r = send_signal(c, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ echoed strings */

/* Item 9: a tag is at most 256 bytes, command and cwd at most PATH_MAX, and
 * longer ones are INVALID_ARGUMENT; so every ProcessInfo fits an answer and
 * GetProcess and ListProcesses always answer, done included. */
TEST(echoed_strings_bounded)
{
    agent_t a;
    agent_start(&a, "--max-frame-size", "65536", NULL);
    sa_client_t *c = agent_connect(&a);
    char *big = malloc(64000);
    memset(big, 't', 63999);
    big[63999] = 0;
    const char *argv[] = {"/bin/true"};
    start_opts_t o = {.tag = big};
    Response *r = recv_id(c, start_send(c, argv, 1, &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "tag"));
    sa_response_free(r);
    big[257] = 0;
    r = recv_id(c, start_send(c, argv, 1, &o));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    big[256] = 0;
    uint32_t pid = start_argv(c, argv, 1, &o, NULL);
    sa_response_free(wait_exit(c, pid));
    /* command and cwd */
    big[256] = big[257] = 't';
    big[5000] = 0;
    const char *argv2[] = {big};
    r = recv_id(c, start_send(c, argv2, 1, NULL));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "command"));
    sa_response_free(r);
    start_opts_t o2 = {.cwd = big};
    r = recv_id(c, start_send(c, argv, 1, &o2));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "cwd"));
    sa_response_free(r);
    free(big);
    /* Every process still answers, and the list ends with done. */
    Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    g.pid = pid;
    r = simple(c, OP(GET_PROCESS), &g);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(strlen(r->process->tag), 256);
    sa_response_free(r);
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    lp.include_exited = 1;
    r = simple(c, OP(LIST_PROCESSES), &lp);
    ASSERT_RESULT(r, PROCESSES);
    ASSERT(r->done);
    sa_response_free(r);
    /* A ping that fills the frame cannot be echoed in one: it is answered
     * with an error, not dropped. */
    r = ping_call(c, 65536 - 16);
    ASSERT(r->done);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ stale signals */

/* Item 10: after a timeout, the SIGKILL that follows the grace period goes
 * to the process's group only while that group exists: once it is gone,
 * its pid (made to be reused at once, in a PID namespace of the test's own)
 * belongs to an innocent process group that must not be killed. */
TEST(stale_timeout_kill_spares_a_reused_pid)
{
    if (geteuid() != 0) {
        printf("  (skipped: needs root for a PID namespace)\n");
        return;
    }
    agent_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.dir, sizeof a.dir, "/tmp/sa-harden-ns-XXXXXX");
    if (!mkdtemp(a.dir))
        FAIL("mkdtemp");
    snprintf(a.sock, sizeof a.sock, "%s/agent.sock", a.dir);
    snprintf(a.addr, sizeof a.addr, "unix:%s", a.sock);
    snprintf(a.log, sizeof a.log, "%s/agent.log", a.dir);
    int pfd[2];
    char readyfd[16], buf[16];
    if (pipe(pfd) < 0)
        FAIL("pipe");
    snprintf(readyfd, sizeof readyfd, "%d", pfd[1]);
    pid_t un = fork();
    if (un == 0) {
        int lfd = open(a.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(lfd, 2);
        close(pfd[0]);
        execlp("unshare", "unshare", "--pid", "--fork", "--mount-proc", AGENT_BIN, "--listen",
               a.addr, "--ready-fd", readyfd, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    ssize_t rn = read(pfd[0], buf, sizeof buf);
    close(pfd[0]);
    if (rn <= 0) {
        waitpid(un, NULL, 0);
        printf("  (skipped: unshare --pid is not allowed here)\n");
        return;
    }
    sa_client_t *c = agent_connect(&a);
    /* A process that dies at the timeout's SIGTERM; the SIGKILL is due
     * 2.5 s later. */
    const char *victim[] = {"/bin/sleep", "60"};
    start_opts_t o = {.timeout_ms = 200, .kill_grace_ms = 2500};
    uint32_t pid = start_argv(c, victim, 2, &o, NULL);
    Response *r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT(r->exit->timed_out);
    ASSERT_EQ(r->exit->signal, SIGTERM);
    sa_response_free(r);
    /* Its pid goes to the next process: an innocent one, a group leader. */
    char script[128];
    snprintf(script, sizeof script, "echo %u > /proc/sys/kernel/ns_last_pid", pid - 1);
    uint32_t setter = start_sh(c, script, NULL, NULL);
    r = wait_exit(c, setter);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->exit_code, 0);
    sa_response_free(r);
    const char *innocent[] = {"/bin/sleep", "60"};
    uint32_t pid2 = start_argv(c, innocent, 2, NULL, NULL);
    ASSERT_EQ(pid2, pid);
    /* Past the victim's grace period. */
    usleep(3500000);
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    r = simple(c, OP(LIST_PROCESSES), &lp);
    ASSERT_RESULT(r, PROCESSES);
    int running = 0;
    for (size_t i = 0; i < r->processes->n_processes; i++)
        if (r->processes->processes[i]->pid == pid2)
            running = 1;
    sa_response_free(r);
    ASSERT(running);
    r = send_signal(c, pid2, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    sa_client_close(c);
    /* SIGTERM to the agent (PID 1 there): unshare exits with it. */
    kill(un, SIGTERM);
    int st;
    for (int i = 0; i < 500 && waitpid(un, &st, WNOHANG) == 0; i++)
        usleep(10000);
    kill(un, SIGKILL);
    waitpid(un, &st, WNOHANG);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", a.dir);
    if (system(cmd)) {
    }
}

/* ------------------------------------------------------------ half-close */

/* Item 14: a client that sends its requests and shuts down its writing side
 * gets every answer in flight, then the agent closes. An upload still
 * waiting for chunks cannot finish: it is told so. */
TEST(half_close_finishes_answers)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    FILE *fp = fopen(P("in"), "w");
    fputs("some file content\n", fp);
    fclose(fp);
    sa_client_t *c = agent_connect(&a);
    /* ping 1, start+follow 2, read 3, a whole upload 4, a partial one 5 */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    req.id = 1;
    req.op_case = OP(PING);
    req.ping = &p;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    Request sreq = REQUEST_INIT;
    Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    char *args[] = {"-c", "sleep 0.5; echo late"};
    sp.command = "/bin/sh";
    sp.args = args;
    sp.n_args = 2;
    sp.follow = 1;
    sreq.id = 2;
    sreq.op_case = OP(START);
    sreq.start = &sp;
    ASSERT_EQ(sa_client_send(c, &sreq), 0);
    Request rreq = REQUEST_INIT;
    Sandbox__Agent__V1__ReadFile rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    rf.path = P("in");
    rreq.id = 3;
    rreq.op_case = OP(READ_FILE);
    rreq.read_file = &rf;
    ASSERT_EQ(sa_client_send(c, &rreq), 0);
    for (int i = 4; i <= 5; i++) {
        Request wreq = REQUEST_INIT;
        WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
        w.path = P(i == 4 ? "out" : "partial");
        w.data.data = (uint8_t *)"data";
        w.data.len = 4;
        w.more = i == 5;
        wreq.id = (uint64_t)i;
        wreq.op_case = OP(WRITE_FILE);
        wreq.write_file = &w;
        ASSERT_EQ(sa_client_send(c, &wreq), 0);
    }
    ASSERT_EQ(shutdown(sa_client_fd(c), SHUT_WR), 0);

    Response *r = recv_id(c, 1);
    ASSERT_RESULT(r, PONG);
    sa_response_free(r);
    r = recv_id(c, 3);
    ASSERT_RESULT(r, CHUNK);
    sa_response_free(r);
    r = recv_id(c, 3);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_EQ(r->file_end->size, 18);
    sa_response_free(r);
    r = recv_id(c, 4);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, 4);
    sa_response_free(r);
    r = recv_id(c, 5);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "last chunk"));
    sa_response_free(r);
    r = recv_id(c, 2);
    ASSERT_RESULT(r, STARTED);
    sa_response_free(r);
    collected_t k;
    memset(&k, 0, sizeof k);
    collect_until_done(c, 2, &k);
    ASSERT(k.exited);
    ASSERT_EQ(k.len, 5);
    ASSERT_MEM_EQ(k.data, "late\n", 5);
    collected_free(&k);
    /* Then the agent closes. */
    r = NULL;
    ASSERT_EQ(sa_client_recv(c, &r, 5000), -EPIPE);
    struct stat st;
    ASSERT_EQ(stat(P("partial"), &st), -1);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ id 0 */

/* Item 15: id 0 belongs to messages about the connection; a request with
 * it is refused with INVALID_ARGUMENT (answered with id 0) and the
 * connection goes on. */
TEST(request_id_zero_refused)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    req.id = 0;
    req.op_case = OP(PING);
    req.ping = &p;
    size_t len;
    uint8_t *f = encode(&req, &len);
    ASSERT_EQ(sa_client_send_raw(c, f, len), 0);
    free(f);
    Response *r = recv_id(c, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "id 0"));
    sa_response_free(r);
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ gaps */

/* Item 16: FollowOutput from_sequence = 0 means byte 0; when the oldest kept
 * byte is past it, the follower first gets an OutputGap (per stream: at 0
 * every stream's position is known), and never silently less. */
TEST(late_follower_told_of_the_gap)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    start_opts_t o = {.window = 4096};
    uint32_t pid = start_sh(c, "head -c 100000 /dev/zero; head -c 30000 /dev/zero >&2; echo tail",
                            &o, NULL);
    sa_response_free(wait_exit(c, pid));
    Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    g.pid = pid;
    Response *r = simple(c, OP(GET_PROCESS), &g);
    ASSERT_RESULT(r, PROCESS);
    uint64_t oldest = r->process->oldest_sequence, next = r->process->next_sequence;
    sa_response_free(r);
    ASSERT_EQ(next, 130005);
    ASSERT_GT(oldest, 0);
    uint64_t id = follow_send(c, pid, 0, 0, 0);
    uint64_t skipped = 0;
    r = recv_id(c, id);
    ASSERT_RESULT(r, GAP);
    ASSERT_EQ(r->gap->from_sequence, 0);
    ASSERT_EQ(r->gap->to_sequence, oldest);
    ASSERT(r->gap->stream != SANDBOX__AGENT__V1__STREAM__STREAM_UNSPECIFIED);
    skipped += r->gap->skipped_bytes;
    sa_response_free(r);
    collected_t k;
    memset(&k, 0, sizeof k);
    k.started = 1;
    k.next_seq = oldest;
    for (;;) {
        r = recv_id(c, id);
        if (r->result_case == RES(GAP)) {
            ASSERT_EQ(r->gap->to_sequence, oldest);
            skipped += r->gap->skipped_bytes;
            sa_response_free(r);
            continue;
        }
        if (collect_one(&k, r))
            break;
    }
    ASSERT_EQ(skipped, oldest);
    ASSERT_EQ(oldest + k.len, next);
    collected_free(&k);
    /* from the oldest kept byte: no gap */
    id = follow_send(c, pid, oldest, 0, 0);
    r = recv_id(c, id);
    ASSERT_RESULT(r, OUTPUT);
    ASSERT_EQ(r->output->sequence, oldest);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST_MAIN(TEST_ENTRY(upload_budget_backpressure), TEST_ENTRY(hello_deadline_and_reserve),
          TEST_ENTRY(small_frames_before_hello), TEST_ENTRY(write_stdin_holds_input),
          TEST_ENTRY(bulk_in_place),
          TEST_ENTRY(idle_followers_bounded), TEST_ENTRY(idle_followers_share_the_log),
          TEST_ENTRY(echoed_strings_bounded),
          TEST_ENTRY(stale_timeout_kill_spares_a_reused_pid),
          TEST_ENTRY(half_close_finishes_answers), TEST_ENTRY(request_id_zero_refused),
          TEST_ENTRY(late_follower_told_of_the_gap))
