/* harness.h - a small test runner for sandbox-agent's tests.
 *
 * Each test runs in its own child process with a timeout, so a crash or hang
 * fails that test only. ASSERT_* print both sides and the location.
 * Integration tests start the real agent on a temporary unix socket with
 * agent_start() and talk to it through the client library.
 * Shared here: files (slurp, put_file, file_equals, log_count), time
 * (now_ms), children (child_status, gone_within, sh), directories
 * (dir_count, fd_count), UTF-8 (utf8_ok); with the agent: call, simple (a
 * request of any op), recv_id, expect_error, cancel_ok, ping_req, ping_ok,
 * info_call, proc_rss. Beside it in
 * integration/: ctl_helpers.h (the sandboxctl binary: ctl_run, run_ctl),
 * proc_helpers.h (processes: start_sh, collect_all, wait_exit for a
 * WaitProcess), fs_helpers.h (read_collect, watch_wait_ready),
 * tunnel_helpers.h, tmpdir.h.
 *
 * Usage:
 *   TEST(ping_works) { ... }
 *   TEST_MAIN(TEST_ENTRY(ping_works), ...)
 * Run one test: ./it_test_x NAME
 */
#ifndef SA_TEST_HARNESS_H
#define SA_TEST_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef void test_fn(void);
typedef struct test_entry {
    const char *name;
    test_fn *fn;
    int timeout_s;
} test_entry_t;

#define TEST(name) static void test_##name(void)
#define TEST_ENTRY(name) {#name, test_##name, 60}
#define TEST_ENTRY_T(name, secs) {#name, test_##name, secs}

#define FAIL(...)                                                                     \
    do {                                                                              \
        fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                                 \
        fprintf(stderr, "\n");                                                        \
        exit(1);                                                                      \
    } while (0)

#define ASSERT(cond)                                                                  \
    do {                                                                              \
        if (!(cond))                                                                  \
            FAIL("assertion failed: %s", #cond);                                      \
    } while (0)
#define ASSERT_INT_OP(a, op, b)                                                       \
    do {                                                                              \
        long long _a = (long long)(a), _b = (long long)(b);                           \
        if (!(_a op _b))                                                              \
            FAIL("%s %s %s (%lld vs %lld)", #a, #op, #b, _a, _b);                     \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)
#define ASSERT_STR_EQ(a, b)                                                           \
    do {                                                                              \
        const char *_a = (a), *_b = (b);                                              \
        if (!_a || !_b || strcmp(_a, _b))                                             \
            FAIL("%s == %s (\"%s\" vs \"%s\")", #a, #b, _a ? _a : "(null)",           \
                 _b ? _b : "(null)");                                                 \
    } while (0)
#define ASSERT_MEM_EQ(a, b, n)                                                        \
    do {                                                                              \
        if (memcmp((a), (b), (n)))                                                    \
            FAIL("memory %s != %s over %zu bytes", #a, #b, (size_t)(n));              \
    } while (0)

static inline int test_run_all(const test_entry_t *tests, size_t n, int argc, char **argv)
{
    int failed = 0, ran = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name))
            continue;
        ran++;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0);
            alarm((unsigned)tests[i].timeout_s);
            tests[i].fn();
            fflush(NULL);
            _exit(0);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        /* Whatever the test left behind in its group goes too. */
        kill(-pid, SIGKILL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            printf("ok   %-44s %.2fs\n", tests[i].name, secs);
        } else {
            failed++;
            if (WIFSIGNALED(st))
                printf("FAIL %-44s signal %d%s\n", tests[i].name, WTERMSIG(st),
                       WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
            else
                printf("FAIL %-44s exit %d\n", tests[i].name, WEXITSTATUS(st));
        }
    }
    if (!ran) {
        fprintf(stderr, "no test named '%s'\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    printf("%d/%d passed\n", ran - failed, ran);
    return failed ? 1 : 0;
}

#define TEST_MAIN(...)                                                                \
    int main(int argc, char **argv)                                                   \
    {                                                                                 \
        static const test_entry_t tests[] = {__VA_ARGS__};                            \
        return test_run_all(tests, sizeof tests / sizeof tests[0], argc, argv);       \
    }

/* ------------------------------------------------------------ files, time */

/* The file's bytes (at most len - 1), NUL-terminated; 0 when it cannot be
 * read. */
static inline size_t slurp(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t o = 0;
    ssize_t r;
    if (fd < 0) {
        buf[0] = 0;
        return 0;
    }
    while (o < len - 1 && ((r = read(fd, buf + o, len - 1 - o)) > 0 || (r < 0 && errno == EINTR)))
        o += r > 0 ? (size_t)r : 0;
    close(fd);
    buf[o] = 0;
    return o;
}

/* 1 when path holds exactly the len bytes of data. */
static inline int file_equals(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    uint8_t *got = malloc(len + 1);
    ASSERT(got);
    size_t n = fread(got, 1, len + 1, f);
    fclose(f);
    int same = n == len && !memcmp(got, data, len);
    free(got);
    return same;
}

/* Create or replace path with len bytes of data, then give it mode. */
static inline void put_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        FAIL("open %s: %s", path, strerror(errno));
    ASSERT_EQ(write(fd, data, len), (ssize_t)len);
    ASSERT_EQ(close(fd), 0);
    ASSERT_EQ(chmod(path, mode), 0);
}

static inline void put_text(const char *path, const char *text, mode_t mode)
{
    put_file(path, text, strlen(text), mode);
}

/* Occurrences of needle in the first MiB of a log file. */
static inline int log_count(const char *path, const char *needle)
{
    static char buf[1 << 20];
    size_t n = slurp(path, buf, sizeof buf), k = strlen(needle);
    int count = 0;
    for (const char *p = buf; (p = memmem(p, n - (size_t)(p - buf), needle, k)); p += k)
        count++;
    return count;
}

static inline int log_has(const char *path, const char *needle)
{
    return log_count(path, needle) > 0;
}

/* Milliseconds on the monotonic clock. */
static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The status of our child pid as a shell gives it (128+N for signal N),
 * waiting at most 10 s for it. */
static inline int child_status(pid_t pid)
{
    int st;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    FAIL("no exit of child %d within 10 s", (int)pid);
}

/* Names in dir that start with prefix ("": all), "." and ".." aside; -1
 * when it cannot be read. */
static inline int dir_count(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    size_t plen = strlen(prefix);
    if (!d)
        return -1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            !strncmp(de->d_name, prefix, plen))
            n++;
    closedir(d);
    return n;
}

/* Open descriptors of a process. */
static inline int fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    return dir_count(path, "");
}

/* A shell command line (printf's format); its exit status as a shell gives
 * it (128 when it did not exit). */
static inline int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* 1 once pid no longer exists (reaped), within ms milliseconds; else 0. */
static inline int gone_within(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* 1 when s is valid UTF-8 (no overlong forms). */
static inline int utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2
                              : (*p & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || (n == 1 && *p < 0xc2))
            return 0;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ the agent */

#ifdef AGENT_BIN
#include "client.h"
#include "pb.h"

typedef struct agent {
    pid_t pid;
    char dir[128];
    char sock[200];
    char addr[210];
    char log[200];
} agent_t;

/* Start the agent with extra arguments (NULL-terminated) on a fresh socket;
 * returns once it accepts connections (--ready-fd). */
static inline void agent_start_v(agent_t *a, const char *const *extra)
{
    int pfd[2];
    const char *argv[64];
    int n = 0;
    char readyfd[16];

    snprintf(a->dir, sizeof a->dir, "/tmp/sa-test-XXXXXX");
    if (!mkdtemp(a->dir))
        FAIL("mkdtemp: %s", strerror(errno));
    chmod(a->dir, 0755);
    snprintf(a->sock, sizeof a->sock, "%s/agent.sock", a->dir);
    snprintf(a->addr, sizeof a->addr, "unix:%s", a->sock);
    snprintf(a->log, sizeof a->log, "%s/agent.log", a->dir);
    if (pipe(pfd) < 0)
        FAIL("pipe: %s", strerror(errno));
    snprintf(readyfd, sizeof readyfd, "%d", pfd[1]);
    argv[n++] = AGENT_BIN;
    argv[n++] = "--listen";
    argv[n++] = a->addr;
    argv[n++] = "--ready-fd";
    argv[n++] = readyfd;
    for (; extra && *extra && n < 60; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    a->pid = fork();
    if (a->pid == 0) {
        int lfd = open(a->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lfd >= 0 && !getenv("SA_TEST_AGENT_STDERR"))
            dup2(lfd, 2);
        close(pfd[0]);
        execv(AGENT_BIN, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char buf[16];
    ssize_t r = read(pfd[0], buf, sizeof buf);
    close(pfd[0]);
    if (r <= 0) {
        int st;
        waitpid(a->pid, &st, 0);
        FAIL("agent did not become ready (exit status %d); log in %s", st, a->log);
    }
}

static inline void agent_start(agent_t *a, ...)
{
    const char *extra[48];
    int n = 0;
    va_list ap;
    va_start(ap, a);
    const char *s;
    while ((s = va_arg(ap, const char *)) && n < 47)
        extra[n++] = s;
    va_end(ap);
    extra[n] = NULL;
    agent_start_v(a, extra);
}

/* SIGTERM, and expect a clean exit 0 within 10 s. Returns the exit status. */
static inline int agent_stop(agent_t *a)
{
    int st = 0;
    kill(a->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(a->pid, &st, WNOHANG);
        if (r == a->pid)
            break;
        usleep(10000);
        if (i == 999) {
            kill(a->pid, SIGKILL);
            waitpid(a->pid, &st, 0);
            FAIL("agent did not exit within 10 s of SIGTERM");
        }
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("agent exited with status 0x%x; log in %s", st, a->log);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", a->dir);
    if (system(cmd)) {
    }
    return 0;
}

/* 1 if the agent process is still alive. */
static inline int agent_alive(agent_t *a)
{
    int st;
    return waitpid(a->pid, &st, WNOHANG) == 0;
}

static inline sa_client_t *agent_connect_raw(agent_t *a)
{
    char err[256];
    sa_client_t *c = sa_client_connect(a->addr, err, sizeof err);
    if (!c)
        FAIL("connect: %s", err);
    return c;
}

static inline sa_client_t *agent_connect(agent_t *a)
{
    char err[256];
    sa_client_t *c = agent_connect_raw(a);
    if (sa_client_hello(c, NULL, "test", 0, err, sizeof err) < 0)
        FAIL("%s", err);
    return c;
}

/* Send req and return its final response; fails the test on transport error. */
static inline Response *call(sa_client_t *c, Request *req)
{
    Response *r = NULL;
    int rc = sa_client_call(c, req, &r, 30000);
    if (rc < 0)
        FAIL("call (op %d): %s", (int)req->op_case, strerror(-rc));
    return r;
}

/* A request of any op whose message is msg (its field found by the op's
 * number, which is the field's), and its final response. */
static inline Response *simple(sa_client_t *c, int op, void *msg)
{
    Request req = REQUEST_INIT;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&sandbox__agent__v1__request__descriptor,
                                                (unsigned)op);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || f->quantifier_offset == 0)
        FAIL("op %d is not a request's message", op);
    req.op_case = (Sandbox__Agent__V1__Request__OpCase)op;
    *(void **)(void *)((char *)&req + f->offset) = msg;
    return call(c, &req);
}

/* Next response for id, failing the test on transport error or timeout. */
static inline Response *recv_id(sa_client_t *c, uint64_t id)
{
    Response *r = NULL;
    int rc = sa_client_recv_id(c, id, &r, 30000);
    if (rc < 0)
        FAIL("recv id %llu: %s", (unsigned long long)id, strerror(-rc));
    return r;
}

#define ASSERT_RESULT(r, kind)                                                        \
    do {                                                                              \
        if ((r)->result_case != RES(kind)) {                                          \
            if ((r)->result_case == RES(ERROR))                                       \
                FAIL("expected %s, got error %s: %s", #kind,                          \
                     sa_error_code_name((r)->error->code), (r)->error->message);      \
            FAIL("expected %s, got result %d", #kind, (int)(r)->result_case);         \
        }                                                                             \
    } while (0)
#define ASSERT_ERROR(r, codename)                                                     \
    do {                                                                              \
        if ((r)->result_case != RES(ERROR))                                           \
            FAIL("expected error %s, got result %d", #codename, (int)(r)->result_case); \
        if ((r)->error->code != CODE(codename))                                       \
            FAIL("expected error %s, got %s: %s", #codename,                          \
                 sa_error_code_name((r)->error->code), (r)->error->message);          \
        ASSERT((r)->done);                                                            \
    } while (0)

/* An error response of code whose message names needle (NULL: any) in
 * valid UTF-8, final; freed. */
static inline void expect_error(Response *r, int code, const char *needle)
{
    if (r->result_case != RES(ERROR))
        FAIL("expected error %s naming '%s', got result %d", sa_error_code_name(code),
             needle ? needle : "", (int)r->result_case);
    if ((int)r->error->code != code)
        FAIL("expected %s, got %s: %s", sa_error_code_name(code),
             sa_error_code_name(r->error->code), r->error->message);
    if (needle && !strstr(r->error->message, needle))
        FAIL("message '%s' does not name '%s'", r->error->message, needle);
    ASSERT(utf8_ok(r->error->message));
    ASSERT(r->done);
    sa_response_free(r);
}

/* Send Cancel for target; returns the Cancel's id. */
static inline uint64_t cancel_send(sa_client_t *c, uint64_t target)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel cn = SANDBOX__AGENT__V1__CANCEL__INIT;
    cn.target_id = target;
    req.op_case = OP(CANCEL);
    req.cancel = &cn;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

/* Cancel target, which is in flight: it ends with CANCELLED, the Cancel
 * gets an Ack; responses of target before the CANCELLED are skipped. A
 * second Cancel finds it no longer in flight. */
static inline void cancel_ok(sa_client_t *c, uint64_t target)
{
    uint64_t id = cancel_send(c, target);
    Response *r = recv_id(c, id);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    for (;;) {
        r = recv_id(c, target);
        if (r->done) {
            expect_error(r, CODE(CANCELLED), "cancelled");
            break;
        }
        sa_response_free(r);
    }
    id = cancel_send(c, target);
    expect_error(recv_id(c, id), CODE(NOT_FOUND), "no request");
}

/* A Ping request with a payload (p holds it; both live in the caller). */
static inline Request ping_req(Sandbox__Agent__V1__Ping *p, const void *data, size_t len)
{
    Request req = REQUEST_INIT;
    sandbox__agent__v1__ping__init(p);
    p->payload.data = (uint8_t *)data;
    p->payload.len = len;
    req.op_case = OP(PING);
    req.ping = p;
    return req;
}

static inline void ping_ok(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    req.op_case = OP(PING);
    req.ping = &p;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, PONG);
    sa_response_free(r);
}

/* GetInfo's answer (an Info, or the test fails); free it. */
static inline Response *info_call(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetInfo gi = SANDBOX__AGENT__V1__GET_INFO__INIT;
    req.op_case = OP(INFO);
    req.info = &gi;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, INFO);
    return r;
}

/* A "Vm...: N kB" line of /proc/PID/status (VmRSS, VmHWM) in bytes; -1
 * when there is none. */
static inline long long proc_vm(pid_t pid, const char *key)
{
    char path[64], line[256];
    long long kb = -1;
    size_t k = strlen(key);
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':' && sscanf(line + k + 1, "%lld", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* VmRSS of a pid in bytes. */
static inline long long proc_rss(pid_t pid) { return proc_vm(pid, "VmRSS"); }
#endif

#endif
