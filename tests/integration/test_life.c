/* Life of the agent as a service: authentication, transports, socket files,
 * limits, readiness, signals, logging, the OOM score and descriptor
 * exhaustion. The real binary, started the way init systems start it. */
#include "harness.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>

#define TOKEN "s3cret-T0ken-for-tests-7f2a"

/* ------------------------------------------------------------ launcher */

typedef struct life {
    pid_t pid;
    char dir[128];
    char sock[200];
    char addr[210]; /* unix:SOCK */
    char log[200];  /* the agent's stderr */
    double start_ms;
} life_t;

typedef struct life_opts {
    const char *env_token; /* $SANDBOX_AGENT_TOKEN for the agent */
    const char *notify;    /* $NOTIFY_SOCKET for the agent */
    int nofile;            /* RLIMIT_NOFILE, 0: inherited */
    int no_listen;         /* no --listen unix:SOCK of our own */
} life_opts_t;

static void life_dir(life_t *a)
{
    memset(a, 0, sizeof *a);
    snprintf(a->dir, sizeof a->dir, "/tmp/sa-life-XXXXXX");
    if (!mkdtemp(a->dir))
        FAIL("mkdtemp: %s", strerror(errno));
    snprintf(a->sock, sizeof a->sock, "%s/agent.sock", a->dir);
    snprintf(a->addr, sizeof a->addr, "unix:%s", a->sock);
    snprintf(a->log, sizeof a->log, "%s/agent.log", a->dir);
}

/* Start the agent with extra (NULL-terminated) arguments. Returns 0 once it
 * is ready, else its exit status after it ended (its stderr in a->log). The
 * directory is fresh unless a->dir is already set. */
static int life_start_v(life_t *a, const life_opts_t *o, const char *const *extra)
{
    static const life_opts_t none = {0};
    const char *argv[64];
    char readyfd[16];
    int pfd[2], n = 0;
    struct timespec t0, t1;

    if (!o)
        o = &none;
    if (!a->dir[0])
        life_dir(a);
    if (pipe(pfd) < 0)
        FAIL("pipe: %s", strerror(errno));
    snprintf(readyfd, sizeof readyfd, "%d", pfd[1]);
    argv[n++] = AGENT_BIN;
    if (!o->no_listen) {
        argv[n++] = "--listen";
        argv[n++] = a->addr;
    }
    argv[n++] = "--ready-fd";
    argv[n++] = readyfd;
    for (; extra && *extra && n < 62; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    a->pid = fork();
    if (a->pid == 0) {
        int lfd = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (lfd >= 0) {
            dup2(lfd, 1);
            dup2(lfd, 2);
        }
        close(pfd[0]);
        unsetenv("SANDBOX_AGENT_TOKEN");
        unsetenv("NOTIFY_SOCKET");
        if (o->env_token)
            setenv("SANDBOX_AGENT_TOKEN", o->env_token, 1);
        if (o->notify)
            setenv("NOTIFY_SOCKET", o->notify, 1);
        if (o->nofile) {
            struct rlimit rl = {(rlim_t)o->nofile, (rlim_t)o->nofile};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        execv(AGENT_BIN, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char buf[16];
    ssize_t r;
    while ((r = read(pfd[0], buf, sizeof buf)) < 0 && errno == EINTR)
        ;
    close(pfd[0]);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    a->start_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (r == 8 && !memcmp(buf, "READY=1\n", 8))
        return 0;
    int st;
    waitpid(a->pid, &st, 0);
    a->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define LIFE_ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void life_start_ok(life_t *a, const life_opts_t *o, const char *const *extra)
{
    int rc = life_start_v(a, o, extra);
    if (rc != 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "cat %s >&2", a->log);
        if (system(cmd)) {
        }
        FAIL("agent did not become ready (exit %d)", rc);
    }
}

/* Signal the agent and expect exit 0; the directory is removed. */
static void life_stop_sig(life_t *a, int sig)
{
    int st = 0;
    kill(a->pid, sig);
    for (int i = 0;; i++) {
        if (waitpid(a->pid, &st, WNOHANG) == a->pid)
            break;
        if (i == 1000) {
            kill(a->pid, SIGKILL);
            waitpid(a->pid, &st, 0);
            FAIL("agent did not exit within 10 s of signal %d", sig);
        }
        usleep(10000);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("agent exited with status 0x%x after signal %d; log in %s", st, sig, a->log);
    a->pid = 0;
}

static void life_cleanup(life_t *a)
{
    char cmd[300];
    if (a->pid > 0)
        life_stop_sig(a, SIGTERM);
    snprintf(cmd, sizeof cmd, "rm -rf %s", a->dir);
    if (system(cmd)) {
    }
}

/* Run the agent to its end with these arguments (no ready fd, no listen of
 * ours); returns the exit status, output in out. */
static int life_run(const char *const *args, const char *env_token, char *out, size_t outlen)
{
    int p[2];
    const char *argv[32];
    int n = 0;
    if (pipe(p) < 0)
        FAIL("pipe");
    argv[n++] = AGENT_BIN;
    for (; *args && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        unsetenv("SANDBOX_AGENT_TOKEN");
        if (env_token)
            setenv("SANDBOX_AGENT_TOKEN", env_token, 1);
        execv(AGENT_BIN, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t o = 0;
    ssize_t r;
    while (o < outlen - 1 && (r = read(p[0], out + o, outlen - 1 - o)) > 0)
        o += (size_t)r;
    out[o] = 0;
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st)) {
        /* The agent was started as a server by mistake, or crashed. */
        FAIL("agent killed by signal %d; output: %s", WTERMSIG(st), out);
    }
    return WEXITSTATUS(st);
}

static sa_client_t *connect_to(const char *addr)
{
    char err[256];
    sa_client_t *c = sa_client_connect(addr, err, sizeof err);
    if (!c)
        FAIL("connect %s: %s", addr, err);
    return c;
}

static sa_client_t *connect_hello(const char *addr, const char *token)
{
    char err[256];
    sa_client_t *c = connect_to(addr);
    if (sa_client_hello(c, token, "test-life", 0, err, sizeof err) < 0)
        FAIL("hello on %s: %s", addr, err);
    return c;
}

/* The next thing on c is EOF (or a reset): the agent closed it. */
static void expect_closed(sa_client_t *c)
{
    Response *r = NULL;
    int rc = sa_client_recv(c, &r, 10000);
    if (rc == 0) {
        FAIL("expected the connection closed, got result %d", (int)r->result_case);
    }
    if (rc != -EPIPE && rc != -ECONNRESET)
        FAIL("expected the connection closed, got %s", strerror(-rc));
}

/* The address "tcp:127.0.0.1:PORT" the agent logged for its TCP listener. */
static void tcp_addr_from_log(life_t *a, char *out, size_t len)
{
    static char buf[1 << 16];
    slurp(a->log, buf, sizeof buf);
    const char *p = strstr(buf, "listening on tcp:");
    if (!p)
        FAIL("no TCP listener in the log");
    p += strlen("listening on ");
    size_t n = strcspn(p, "\"\n ");
    snprintf(out, len, "%.*s", (int)n, p);
}

/* ------------------------------------------------------------ tokens */

static void token_file(life_t *a, char *path, size_t len, const char *content)
{
    life_dir(a);
    snprintf(path, len, "%s/token", a->dir);
    put_file(path, content, strlen(content), 0600);
}

TEST(token_good)
{
    life_t a;
    char tf[256];
    token_file(&a, tf, sizeof tf, TOKEN "\n");
    life_start_ok(&a, NULL, LIFE_ARGS("--token-file", tf));
    sa_client_t *c = connect_hello(a.addr, TOKEN);
    ping_ok(c);
    sa_client_close(c);
    ASSERT(log_has(a.log, "token required"));
    life_cleanup(&a);
}

TEST(token_bad_and_missing_close)
{
    life_t a;
    char tf[256], err[256];
    token_file(&a, tf, sizeof tf, TOKEN);
    life_start_ok(&a, NULL, LIFE_ARGS("--token-file", tf));
    const char *wrong[] = {"wrong", "", TOKEN "x", "s3cret"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        sa_client_t *c = connect_to(a.addr);
        ASSERT_EQ(sa_client_hello(c, wrong[i], "test", 0, err, sizeof err), -EACCES);
        if (!strstr(err, "UNAUTHENTICATED"))
            FAIL("token '%s': '%s'", wrong[i], err);
        expect_closed(c);
        sa_client_close(c);
    }
    /* The good token still works afterwards. */
    sa_client_t *c = connect_hello(a.addr, TOKEN);
    ping_ok(c);
    sa_client_close(c);
    life_cleanup(&a);
}

TEST(request_before_hello_closes)
{
    life_t a;
    char tf[256];
    token_file(&a, tf, sizeof tf, TOKEN);
    life_start_ok(&a, NULL, LIFE_ARGS("--token-file", tf));
    /* A Ping, an Info, a file op: each gets UNAUTHENTICATED and the close. */
    int ops[] = {OP(PING), OP(INFO), OP(STAT)};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        sa_client_t *c = connect_to(a.addr);
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
        Sandbox__Agent__V1__GetInfo gi = SANDBOX__AGENT__V1__GET_INFO__INIT;
        Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
        req.op_case = ops[i];
        if (ops[i] == OP(PING))
            req.ping = &p;
        else if (ops[i] == OP(INFO))
            req.info = &gi;
        else {
            st.path = "/etc/passwd";
            req.stat = &st;
        }
        req.id = 41;
        Response *r = call(c, &req);
        ASSERT_ERROR(r, UNAUTHENTICATED);
        ASSERT_EQ(r->id, 41);
        sa_response_free(r);
        expect_closed(c);
        sa_client_close(c);
    }
    /* A Hello with the right token after another op is too late: the
     * connection is already closing, the Hello is never answered. */
    sa_client_t *c = connect_to(a.addr);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p;
    req = ping_req(&p, "x", 1);
    req.id = 1;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    Request hr = REQUEST_INIT;
    Sandbox__Agent__V1__Hello h = SANDBOX__AGENT__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.token = TOKEN;
    hr.op_case = OP(HELLO);
    hr.hello = &h;
    hr.id = 2;
    sa_client_send(c, &hr); /* may fail if already closed */
    Response *r = recv_id(c, 1);
    ASSERT_ERROR(r, UNAUTHENTICATED);
    sa_response_free(r);
    expect_closed(c);
    sa_client_close(c);
    ASSERT(kill(a.pid, 0) == 0);
    life_cleanup(&a);
}

TEST(token_from_environment_is_hidden)
{
    life_t a;
    life_opts_t o = {.env_token = TOKEN};
    life_dir(&a);
    life_start_ok(&a, &o, LIFE_ARGS("--log-level", "debug"));
    sa_client_t *c = connect_hello(a.addr, TOKEN);
    ping_ok(c);
    sa_client_close(c);
    c = connect_to(a.addr);
    char err[256];
    ASSERT_EQ(sa_client_hello(c, "nope", "test", 0, err, sizeof err), -EACCES);
    sa_client_close(c);
    /* Neither /proc/PID/environ (what children would inherit and what
     * /proc shows) nor the log holds the token. */
    char path[64], env[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)a.pid);
    size_t n = slurp(path, env, sizeof env);
    ASSERT_GT(n, 0);
    ASSERT(!memmem(env, n, TOKEN, strlen(TOKEN)));
    ASSERT(!memmem(env, n, "SANDBOX_AGENT_TOKEN=", 20));
    life_stop_sig(&a, SIGTERM);
    ASSERT(!log_has(a.log, TOKEN));
    ASSERT(log_has(a.log, "authentication failed"));
    life_cleanup(&a);
}

TEST(token_never_logged)
{
    life_t a;
    char tf[256], err[256];
    token_file(&a, tf, sizeof tf, TOKEN);
    life_start_ok(&a, NULL, LIFE_ARGS("--token-file", tf, "--log-level", "debug"));
    sa_client_t *c = connect_hello(a.addr, TOKEN);
    ping_ok(c);
    sa_client_close(c);
    c = connect_to(a.addr);
    sa_client_hello(c, TOKEN "-almost", "test", 0, err, sizeof err);
    sa_client_close(c);
    life_stop_sig(&a, SIGTERM);
    ASSERT(!log_has(a.log, TOKEN));
    ASSERT(!log_has(a.log, "s3cret"));
    life_cleanup(&a);
}

TEST(token_file_errors)
{
    char dir[] = "/tmp/sa-life-tok-XXXXXX", path[128], out[4096], big[400];
    ASSERT(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t", dir);
    /* Missing file, empty file, only a newline, longer than 255 bytes. */
    ASSERT_EQ(life_run(LIFE_ARGS("--token-file", "/nonexistent/token"), NULL, out, sizeof out), 2);
    ASSERT(strstr(out, "--token-file '/nonexistent/token'") && strstr(out, "No such file"));
    put_file(path, "", 0, 0600);
    ASSERT_EQ(life_run(LIFE_ARGS("--token-file", path), NULL, out, sizeof out), 2);
    ASSERT(strstr(out, "empty"));
    put_file(path, "\n", 1, 0600);
    ASSERT_EQ(life_run(LIFE_ARGS("--token-file", path), NULL, out, sizeof out), 2);
    memset(big, 'a', sizeof big);
    put_file(path, big, sizeof big, 0600);
    ASSERT_EQ(life_run(LIFE_ARGS("--token-file", path), NULL, out, sizeof out), 2);
    ASSERT(strstr(out, "longer than 255"));
    /* The same rule for the environment. */
    big[sizeof big - 1] = 0;
    ASSERT_EQ(life_run(LIFE_ARGS("--listen", "unix:/nonexistent/x"), big, out, sizeof out), 2);
    ASSERT(strstr(out, "$SANDBOX_AGENT_TOKEN"));
    ASSERT(!strstr(out, "aaaa"));
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

/* ------------------------------------------------------------ TCP, vsock */

TEST(tcp_without_token_refuses_to_start)
{
    life_t a;
    char out[4096];
    life_dir(&a);
    /* A unix listener first: it must be cleaned up when TCP is refused. */
    int rc = life_start_v(&a, NULL, LIFE_ARGS("--listen", "tcp:127.0.0.1:0"));
    ASSERT_EQ(rc, 1);
    slurp(a.log, out, sizeof out);
    if (!strstr(out, "without a token") || !strstr(out, "--insecure") ||
        !strstr(out, "--token-file"))
        FAIL("unclear message: %s", out);
    struct stat st;
    ASSERT_NE(stat(a.sock, &st), 0);
    /* The same for vsock (refused before any socket is made). */
    ASSERT_EQ(life_run(LIFE_ARGS("--listen", "vsock:5000"), NULL, out, sizeof out), 1);
    ASSERT(strstr(out, "without a token"));
    life_cleanup(&a);
}

static void tcp_session(const char *addr, const char *token)
{
    sa_client_t *c = connect_hello(addr, token);
    /* The stream path is the transport's: a payload of many segments, an
     * Info, and a compressed exchange. */
    size_t len = 1 << 20;
    uint8_t *buf = malloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    Sandbox__Agent__V1__Ping p;
    Request req = ping_req(&p, buf, len);
    Response *r = call(c, &req);
    ASSERT_RESULT(r, PONG);
    ASSERT_EQ(r->pong->payload.len, len);
    ASSERT_MEM_EQ(r->pong->payload.data, buf, len);
    sa_response_free(r);
    r = info_call(c);
    ASSERT_GE(r->info->open_connections, 1);
    sa_response_free(r);
    free(buf);
    sa_client_close(c);
}

TEST(tcp_insecure_end_to_end)
{
    life_t a;
    char tcp[128];
    life_dir(&a);
    life_start_ok(&a, NULL, LIFE_ARGS("--listen", "tcp:127.0.0.1:0", "--insecure"));
    tcp_addr_from_log(&a, tcp, sizeof tcp);
    tcp_session(tcp, "");
    /* The unix socket next to it serves too. */
    tcp_session(a.addr, "");
    life_cleanup(&a);
}

TEST(tcp_with_token)
{
    life_t a;
    char tf[256], tcp[128], err[256];
    token_file(&a, tf, sizeof tf, TOKEN);
    life_start_ok(&a, NULL, LIFE_ARGS("--listen", "tcp:127.0.0.1:0", "--token-file", tf));
    tcp_addr_from_log(&a, tcp, sizeof tcp);
    tcp_session(tcp, TOKEN);
    sa_client_t *c = connect_to(tcp);
    ASSERT_EQ(sa_client_hello(c, "bad", "test", 0, err, sizeof err), -EACCES);
    ASSERT(strstr(err, "UNAUTHENTICATED"));
    expect_closed(c);
    sa_client_close(c);
    life_cleanup(&a);
}

TEST(bad_listen_addresses)
{
    char out[4096];
    const char *bad[][2] = {
        {"tcp:127.0.0.1", "expected HOST:PORT"},
        {"tcp:127.0.0.1:99999", "not a number"},
        {"tcp:127.0.0.1:http", "not a number"},
        {"vsock:abc", "expected vsock:PORT"},
        {"vsock:-1", "expected vsock:PORT"},
        {"unix:", "empty"},
        {"unix:/nonexistent-dir/agent.sock", "No such file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = life_run(LIFE_ARGS("--listen", bad[i][0], "--insecure"), NULL, out, sizeof out);
        if (rc != 1 || !strstr(out, bad[i][1]))
            FAIL("--listen %s: exit %d, '%s' (wanted '%s')", bad[i][0], rc, out, bad[i][1]);
    }
    ASSERT_EQ(life_run(LIFE_ARGS("--listen", "http://x"), NULL, out, sizeof out), 2);
    ASSERT(strstr(out, "expected unix:PATH"));
}

TEST(vsock_bind_and_listen)
{
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("  SKIP vsock: socket(AF_VSOCK): %s (no vsock in this kernel)\n", strerror(errno));
        return;
    }
    close(fd);
    life_t a;
    char port[16], vaddr[32];
    life_dir(&a);
    snprintf(port, sizeof port, "vsock:%d", 20000 + (int)(getpid() % 20000));
    int rc = life_start_v(&a, NULL, LIFE_ARGS("--listen", port, "--insecure"));
    if (rc != 0) {
        char out[4096];
        slurp(a.log, out, sizeof out);
        ASSERT_EQ(rc, 1);
        ASSERT(strstr(out, "vsock"));
        printf("  SKIP vsock: the kernel refused bind/listen: %s", out);
        life_cleanup(&a);
        return;
    }
    ASSERT(log_has(a.log, "listening on vsock:"));
    /* The loopback transport (CID 1) lets us talk to it where loaded. */
    snprintf(vaddr, sizeof vaddr, "vsock:1:%s", port + 6);
    char err[256];
    sa_client_t *c = sa_client_connect(vaddr, err, sizeof err);
    if (c) {
        if (sa_client_hello(c, "", "test", 0, err, sizeof err) == 0)
            ping_ok(c);
        else
            FAIL("hello over vsock: %s", err);
        sa_client_close(c);
        printf("  vsock: ping over %s ok\n", vaddr);
    } else {
        printf("  vsock: bind and listen ok; no loopback transport to connect (%s)\n", err);
    }
    /* The same port twice: a clear error. */
    life_t b;
    life_dir(&b);
    ASSERT_EQ(life_start_v(&b, NULL, LIFE_ARGS("--listen", port, "--insecure")), 1);
    ASSERT(log_has(b.log, "Address already in use"));
    life_cleanup(&b);
    life_cleanup(&a);
}

/* ------------------------------------------------------------ socket file */

TEST(socket_modes_and_group)
{
    life_t a;
    struct stat st;
    life_dir(&a);
    life_start_ok(&a, NULL, NULL);
    ASSERT_EQ(stat(a.sock, &st), 0);
    ASSERT(S_ISSOCK(st.st_mode));
    ASSERT_EQ(st.st_mode & 07777, 0600);
    life_stop_sig(&a, SIGTERM);
    ASSERT_NE(stat(a.sock, &st), 0);

    const char *modes[][2] = {{"0660", "0660"}, {"660", "0660"}, {"0666", "0666"}};
    /* Root may give the socket any group; another user only one of its own. */
    char gid[16];
    snprintf(gid, sizeof gid, "%u", geteuid() == 0 ? 1u : (unsigned)getegid());
    for (size_t i = 0; i < 3; i++) {
        life_start_ok(&a, NULL, LIFE_ARGS("--socket-mode", modes[i][0], "--socket-group", gid));
        ASSERT_EQ(stat(a.sock, &st), 0);
        ASSERT_EQ(st.st_mode & 07777, strtol(modes[i][1], NULL, 8));
        ASSERT_EQ(st.st_gid, strtol(gid, NULL, 10));
        life_stop_sig(&a, SIGTERM);
    }
    char out[4096];
    const char *badmodes[] = {"999", "0x1ff", "-1", "77777", "", "rw"};
    for (size_t i = 0; i < sizeof badmodes / sizeof badmodes[0]; i++) {
        ASSERT_EQ(life_run(LIFE_ARGS("--socket-mode", badmodes[i]), NULL, out, sizeof out), 2);
        ASSERT(strstr(out, "--socket-mode"));
    }
    /* An unknown group: exit 1, and no socket file is left behind. */
    ASSERT_EQ(life_start_v(&a, NULL, LIFE_ARGS("--socket-group", "no-such-group-sa")), 1);
    ASSERT(log_has(a.log, "no such group"));
    ASSERT_NE(stat(a.sock, &st), 0);
    life_cleanup(&a);
}

TEST(stale_socket_replaced_live_not_stolen)
{
    life_t a, b;
    struct stat st;
    life_dir(&a);
    /* A socket file whose agent died without removing it. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%.100s", a.sock);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    ASSERT_EQ(stat(a.sock, &st), 0);
    life_start_ok(&a, NULL, NULL);
    ASSERT(log_has(a.log, "stale"));
    sa_client_t *c = connect_hello(a.addr, "");
    ping_ok(c);

    /* A second agent on the live socket fails and leaves it alone. */
    memset(&b, 0, sizeof b);
    life_dir(&b);
    snprintf(b.addr, sizeof b.addr, "%s", a.addr);
    ASSERT_EQ(life_start_v(&b, NULL, NULL), 1);
    ASSERT(log_has(b.log, "another agent is listening there"));
    ASSERT_EQ(stat(a.sock, &st), 0);
    ping_ok(c);
    sa_client_t *c2 = connect_hello(a.addr, "");
    ping_ok(c2);
    sa_client_close(c2);
    sa_client_close(c);
    life_cleanup(&b);

    /* A path that is not a socket is never removed. */
    life_stop_sig(&a, SIGTERM);
    put_file(a.sock, "precious", 8, 0644);
    ASSERT_EQ(life_start_v(&a, NULL, NULL), 1);
    ASSERT(log_has(a.log, "exists and is not a socket"));
    char buf[16];
    ASSERT_EQ(slurp(a.sock, buf, sizeof buf), 8);
    life_cleanup(&a);
}

/* ------------------------------------------------------------ limits */

/* Connection n+1 gets one RESOURCE_EXHAUSTED frame and EOF; the others keep
 * working; once one closes, a new one is served. */
/* Connect and Hello, retrying while the agent still counts connections
 * that were just closed (it notices a close on its next loop turn). */
static sa_client_t *connect_hello_retry(const char *addr)
{
    for (int tries = 0; tries < 200; tries++) {
        char err[256];
        sa_client_t *c = connect_to(addr);
        if (sa_client_hello(c, "", "test", 0, err, sizeof err) == 0)
            return c;
        sa_client_close(c);
        usleep(10000);
    }
    FAIL("no connection accepted on %s within 2 s", addr);
}

static void max_connections_on(life_t *a, const char *addr, int n)
{
    sa_client_t *cs[16];
    for (int i = 0; i < n; i++) {
        cs[i] = connect_hello_retry(addr);
        ping_ok(cs[i]);
    }
    for (int round = 0; round < 2; round++) {
        sa_client_t *x = connect_to(addr);
        Response *r = NULL;
        ASSERT_EQ(sa_client_recv(x, &r, 10000), 0);
        ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
        ASSERT(strstr(r->error->message, "--max-connections"));
        sa_response_free(r);
        expect_closed(x);
        sa_client_close(x);
    }
    for (int i = 0; i < n; i++)
        ping_ok(cs[i]);
    sa_client_close(cs[0]);
    sa_client_t *y = connect_hello_retry(addr);
    ping_ok(y);
    sa_client_close(y);
    for (int i = 1; i < n; i++)
        sa_client_close(cs[i]);
    ASSERT(log_has(a->log, "--max-connections"));
}

TEST(max_connections)
{
    life_t a;
    char tcp[128];
    life_dir(&a);
    life_start_ok(&a, NULL,
                  LIFE_ARGS("--max-connections", "3", "--listen", "tcp:127.0.0.1:0", "--insecure"));
    max_connections_on(&a, a.addr, 3);
    tcp_addr_from_log(&a, tcp, sizeof tcp);
    max_connections_on(&a, tcp, 3);
    life_cleanup(&a);
}

/* Streams in flight per connection. Needs an operation that stays in
 * flight: WatchPath. */
TEST(max_inflight)
{
    life_t a;
    life_dir(&a);
    life_start_ok(&a, NULL, LIFE_ARGS("--max-inflight", "2"));
    sa_client_t *c = connect_hello(a.addr, "");
    Sandbox__Agent__V1__WatchPath w[3];
    for (int i = 0; i < 3; i++) {
        Request req = REQUEST_INIT;
        sandbox__agent__v1__watch_path__init(&w[i]);
        w[i].path = a.dir;
        req.op_case = OP(WATCH);
        req.watch = &w[i];
        req.id = (uint64_t)(100 + i);
        ASSERT_EQ(sa_client_send(c, &req), 0);
    }
    /* The first answer tells whether watching exists in this build. */
    Response *r = NULL;
    ASSERT_EQ(sa_client_recv(c, &r, 10000), 0);
    if (r->result_case == RES(ERROR) && r->error->code == CODE(UNIMPLEMENTED)) {
        printf("  SKIP max_inflight: WatchPath answers UNIMPLEMENTED in this build; no "
               "operation stays in flight to fill the limit\n");
        sa_response_free(r);
        sa_client_close(c);
        life_cleanup(&a);
        return;
    }
    if (r->id != 102) {
        sa_response_free(r);
        r = recv_id(c, 102);
    }
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    sa_response_free(r);
    ping_ok(c);
    /* Cancelling one makes room again. */
    Request cr = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel cc = SANDBOX__AGENT__V1__CANCEL__INIT;
    cc.target_id = 100;
    cr.op_case = OP(CANCEL);
    cr.cancel = &cc;
    r = call(c, &cr);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    Request req = REQUEST_INIT;
    req.op_case = OP(WATCH);
    req.watch = &w[0];
    req.id = 200;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    ping_ok(c);
    Response *late = NULL;
    /* No error for 200 within the ping's round trip. */
    while (sa_client_recv(c, &late, 200) == 0) {
        if (late->id == 200 && late->result_case == RES(ERROR))
            FAIL("watch after cancel: %s", late->error->message);
        sa_response_free(late);
    }
    sa_client_close(c);
    life_cleanup(&a);
}

TEST(emfile_recovers)
{
    life_t a;
    life_opts_t o = {.nofile = 32};
    enum { N = 48 };
    sa_client_t *cs[N];
    int served = 0, exhausted = 0, refused = 0, waiting = 0;
    life_dir(&a);
    life_start_ok(&a, &o, NULL);
    for (int i = 0; i < N; i++) {
        cs[i] = connect_to(a.addr);
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Hello h = SANDBOX__AGENT__V1__HELLO__INIT;
        h.protocol_version = 1;
        h.token = "";
        req.op_case = OP(HELLO);
        req.hello = &h;
        req.id = 1;
        sa_client_send(cs[i], &req);
    }
    for (int i = 0; i < N; i++) {
        Response *r = NULL;
        int rc = sa_client_recv(cs[i], &r, 5000);
        if (rc == 0 && r->result_case == RES(HELLO))
            served++;
        else if (rc == 0 && r->result_case == RES(ERROR) &&
                 r->error->code == CODE(RESOURCE_EXHAUSTED))
            exhausted++;
        else if (rc == -EPIPE || rc == -ECONNRESET)
            refused++;
        else if (rc == -ETIMEDOUT)
            waiting++;
        else
            FAIL("connection %d: rc %d result %d", i, rc, rc == 0 ? (int)r->result_case : -1);
        if (rc == 0)
            sa_response_free(r);
    }
    printf("  RLIMIT_NOFILE 32, %d connections: %d served, %d RESOURCE_EXHAUSTED, %d closed, "
           "%d still waiting\n",
           N, served, exhausted, refused, waiting);
    ASSERT_GE(served, 1);
    ASSERT_LT(served, N);
    ASSERT_GE(exhausted, 1);
    ASSERT(kill(a.pid, 0) == 0);
    for (int i = 0; i < N; i++)
        sa_client_close(cs[i]);
    /* Descriptors come back; the agent serves again. */
    sa_client_t *c = NULL;
    for (int tries = 0; tries < 300 && !c; tries++) {
        char err[256];
        c = connect_to(a.addr);
        if (sa_client_hello(c, "", "test", 0, err, sizeof err) < 0) {
            sa_client_close(c);
            c = NULL;
            usleep(20000);
        }
    }
    ASSERT(c);
    ping_ok(c);
    sa_client_close(c);
    ASSERT(log_has(a.log, "Too many open files"));
    life_cleanup(&a);
}

/* ------------------------------------------------------------ readiness */

TEST(ready_fd_and_notify_socket)
{
    life_t a;
    char ns[200], buf[256];
    life_dir(&a);
    snprintf(ns, sizeof ns, "%s/notify", a.dir);
    int nfd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%.100s", ns);
    ASSERT_EQ(bind(nfd, (struct sockaddr *)&sa, sizeof sa), 0);
    life_opts_t o = {.notify = ns};
    /* life_start checks the ready fd says READY=1. */
    life_start_ok(&a, &o, NULL);
    printf("  start to ready: %.1f ms\n", a.start_ms);
    struct pollfd p = {nfd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1);
    ssize_t n = recv(nfd, buf, sizeof buf - 1, 0);
    ASSERT_GT(n, 0);
    buf[n] = 0;
    char want[64];
    snprintf(want, sizeof want, "READY=1\nMAINPID=%d", (int)a.pid);
    ASSERT_STR_EQ(buf, want);
    /* The socket accepts by the time readiness is told. */
    sa_client_t *c = connect_hello(a.addr, "");
    ping_ok(c);
    sa_client_close(c);
    life_stop_sig(&a, SIGTERM);
    ASSERT_EQ(poll(&p, 1, 10000), 1);
    n = recv(nfd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    ASSERT_STR_EQ(buf, "STOPPING=1");
    close(nfd);

    char out[4096];
    ASSERT_EQ(life_run(LIFE_ARGS("--ready-fd", "97"), NULL, out, sizeof out), 2);
    ASSERT(strstr(out, "--ready-fd 97: Bad file descriptor"));
    ASSERT_EQ(life_run(LIFE_ARGS("--ready-fd", "x"), NULL, out, sizeof out), 2);
    life_cleanup(&a);
}

/* ------------------------------------------------------------ flags */

TEST(flags_help_version_and_errors)
{
    char out[16384];
    ASSERT_EQ(life_run(LIFE_ARGS("--help"), NULL, out, sizeof out), 0);
    const char *flags[] = {"--listen", "--token-file", "--insecure", "--socket-mode",
                           "--socket-group", "--max-frame-size", "--max-connections",
                           "--max-inflight", "--max-queued-bytes", "--max-processes",
                           "--output-window", "--max-kept-output", "--exited-ttl",
                           "--kill-grace-ms", "--write-timeout", "--ready-fd",
                           "--oom-score-adj", "--log-level", "--log-format", "--version"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strstr(out, flags[i]))
            FAIL("--help does not mention %s", flags[i]);
    ASSERT_EQ(life_run(LIFE_ARGS("--version"), NULL, out, sizeof out), 0);
    ASSERT_STR_EQ(out, "sandbox-agent " SANDBOX_AGENT_VERSION "\n");

    const char *bad[][3] = {
        {"--no-such-flag", NULL, "unknown option '--no-such-flag'"},
        {"--listen", NULL, "needs a value"},
        {"--max-connections", "0", "--max-connections"},
        {"--max-connections", "-5", "--max-connections"},
        {"--max-inflight", "lots", "--max-inflight"},
        {"--max-frame-size", "1", "--max-frame-size"},
        {"--max-queued-bytes", "12", "--max-queued-bytes"},
        {"--oom-score-adj", "-1001", "--oom-score-adj"},
        {"--oom-score-adj", "abc", "--oom-score-adj"},
        {"--log-level", "loud", "--log-level"},
        {"--log-format", "xml", "--log-format"},
        {"--socket-group", "", "--socket-group"},
        {"extra-argument", NULL, "unexpected argument"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[] = {bad[i][0], bad[i][1], NULL};
        int rc = life_run(args, NULL, out, sizeof out);
        if (rc != 2 || !strstr(out, bad[i][2]))
            FAIL("%s %s: exit %d, output '%.300s'", bad[i][0], bad[i][1] ? bad[i][1] : "", rc,
                 out);
    }
}

/* ------------------------------------------------------------ signals */

TEST(sigterm_and_sigint_exit_clean)
{
    int sigs[] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        life_t a;
        struct stat st;
        life_dir(&a);
        life_start_ok(&a, NULL, NULL);
        sa_client_t *c = connect_hello(a.addr, "");
        ping_ok(c);
        life_stop_sig(&a, sigs[i]);
        ASSERT_NE(stat(a.sock, &st), 0);
        expect_closed(c);
        sa_client_close(c);
        life_cleanup(&a);
    }
}

TEST(stray_signals_ignored)
{
    life_t a;
    life_dir(&a);
    life_start_ok(&a, NULL, NULL);
    sa_client_t *c = connect_hello(a.addr, "");
    int sigs[] = {SIGHUP, SIGUSR1, SIGUSR2};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(kill(a.pid, sigs[i]), 0);
        ping_ok(c);
    }
    /* Each one logged once handled. */
    for (int tries = 0; tries < 100 && !log_has(a.log, "signal 12 (User defined signal 2) ignored");
         tries++)
        usleep(10000);
    ASSERT(log_has(a.log, "signal 1 (Hangup) ignored"));
    ASSERT(log_has(a.log, "signal 10 (User defined signal 1) ignored"));
    sa_client_close(c);
    life_cleanup(&a);
}

/* ------------------------------------------------------------ logging */

TEST(json_log_lines_parse)
{
    life_t a;
    char tf[256], err[256];
    token_file(&a, tf, sizeof tf, TOKEN);
    life_start_ok(&a, NULL,
                  LIFE_ARGS("--token-file", tf, "--log-format", "json", "--log-level", "debug"));
    /* A client name with quotes, backslashes, a newline, control bytes and
     * invalid UTF-8: the log lines must stay one line each, valid JSON. */
    const char *nasty = "evil \"name\" \\ \n{\"level\":\"error\"} \x01\x7f \xff\xfe \xc3\xa9";
    sa_client_t *c = connect_to(a.addr);
    ASSERT_EQ(sa_client_hello(c, TOKEN, nasty, 0, err, sizeof err), 0);
    ping_ok(c);
    sa_client_close(c);
    c = connect_to(a.addr);
    sa_client_hello(c, "bad", nasty, 0, err, sizeof err);
    sa_client_close(c);
    life_stop_sig(&a, SIGTERM);
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("  SKIP json check: no /usr/bin/python3\n");
        life_cleanup(&a);
        return;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import json,sys\n"
             "n=0\n"
             "for l in open(sys.argv[1],encoding=\"utf-8\"):\n"
             "  o=json.loads(l); assert set(o)>={\"ts\",\"level\",\"msg\"}, o; n+=1\n"
             "  assert o[\"level\"] in (\"debug\",\"info\",\"warn\",\"error\")\n"
             "assert n>=5, n\n"
             "print(\"  %%d JSON lines parse\" %% n)' %s",
             a.log);
    ASSERT_EQ(system(cmd), 0);
    ASSERT(log_has(a.log, "hello from 'evil \\\"name\\\" \\\\ \\n{"));
    life_cleanup(&a);
}

TEST(text_log_escapes_newlines)
{
    life_t a;
    char err[256];
    life_dir(&a);
    life_start_ok(&a, NULL, NULL);
    sa_client_t *c = connect_to(a.addr);
    ASSERT_EQ(sa_client_hello(c, "", "x\n2020-01-01T00:00:00.000000Z error FORGED", 0, err,
                              sizeof err),
              0);
    sa_client_close(c);
    life_stop_sig(&a, SIGTERM);
    ASSERT(log_has(a.log, "x\\n2020-01-01"));
    ASSERT(!log_has(a.log, "\n2020-01-01T00:00:00.000000Z error FORGED"));
    life_cleanup(&a);
}

/* ------------------------------------------------------------ pressure */

static int read_oom(pid_t pid)
{
    char path[64], buf[32];
    snprintf(path, sizeof path, "/proc/%d/oom_score_adj", (int)pid);
    if (!slurp(path, buf, sizeof buf))
        return 9999;
    return atoi(buf);
}

TEST(oom_score_adj)
{
    life_t a;
    int mine = read_oom(getpid());
    life_dir(&a);
    life_start_ok(&a, NULL, NULL);
    int got = read_oom(a.pid);
    printf("  agent oom_score_adj %d (test process has %d)\n", got, mine);
    ASSERT_LE(got, mine);
    if (got == -1000)
        ASSERT(log_has(a.log, "oom_score_adj set to -1000"));
    else
        ASSERT(log_has(a.log, "the lowest allowed"));
    life_stop_sig(&a, SIGTERM);
    /* Raising is always allowed. */
    life_start_ok(&a, NULL, LIFE_ARGS("--oom-score-adj", "500"));
    ASSERT_EQ(read_oom(a.pid), 500);
    life_cleanup(&a);
}

TEST_MAIN(TEST_ENTRY(token_good), TEST_ENTRY(token_bad_and_missing_close),
          TEST_ENTRY(request_before_hello_closes), TEST_ENTRY(token_from_environment_is_hidden),
          TEST_ENTRY(token_never_logged), TEST_ENTRY(token_file_errors),
          TEST_ENTRY(tcp_without_token_refuses_to_start), TEST_ENTRY(tcp_insecure_end_to_end),
          TEST_ENTRY(tcp_with_token), TEST_ENTRY(bad_listen_addresses),
          TEST_ENTRY(vsock_bind_and_listen), TEST_ENTRY(socket_modes_and_group),
          TEST_ENTRY(stale_socket_replaced_live_not_stolen), TEST_ENTRY(max_connections),
          TEST_ENTRY(max_inflight), TEST_ENTRY(emfile_recovers),
          TEST_ENTRY(ready_fd_and_notify_socket), TEST_ENTRY(flags_help_version_and_errors),
          TEST_ENTRY(sigterm_and_sigint_exit_clean), TEST_ENTRY(stray_signals_ignored),
          TEST_ENTRY(json_log_lines_parse), TEST_ENTRY(text_log_escapes_newlines),
          TEST_ENTRY(oom_score_adj))
