/* Hostile-client tests: what a person who runs agents for a living throws at
 * one. Each case checks what such a user would: the right Error code and a
 * message naming the thing, the agent alive, other connections served, no
 * descriptor left behind in the agent, memory bounded. */
#include "fs_helpers.h"
#include "proc_helpers.h"
#define TMPDIR_PREFIX "/tmp/sa-hostile-"
#include "tmpdir.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>

typedef Sandbox__Agent__V1__ReadFile ReadFileReq;
typedef Sandbox__Agent__V1__WriteFile WriteFileReq;
typedef Sandbox__Agent__V1__FileData FileDataReq;



/* The agent's descriptors return to at most base (closing is asynchronous:
 * connections are freed on the next loop turn, uploads by a worker, and
 * starts still queued for the spawner hold their pipes until they run,
 * which under AddressSanitizer on a loaded machine takes seconds). */
static void fds_settle(agent_t *a, int base)
{
    int n = 0;
    for (int i = 0; i < 3000; i++) {
        if ((n = fd_count(a->pid)) <= base)
            return;
        usleep(10000);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd >&2", (int)a->pid);
    if (system(cmd)) {
    }
    FAIL("agent holds %d descriptors, %d before", n, base);
}

static uint64_t read_send(sa_client_t *c, const char *path, uint64_t off, uint64_t len)
{
    Request req = REQUEST_INIT;
    ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    rf.path = (char *)path;
    rf.offset = off;
    rf.length = len;
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

/* Read to the end; returns the final response, the bytes counted in *n. */
static Response *read_all(sa_client_t *c, const char *path, uint64_t off, uint64_t len,
                          size_t *n, uint8_t **data)
{
    return read_collect(c, read_send(c, path, off, len), off, data, n);
}

static uint64_t write_send(sa_client_t *c, uint64_t id, const char *path, const void *d,
                           size_t len, int more)
{
    Request req = REQUEST_INIT;
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = (char *)path;
    w.data.data = (uint8_t *)d;
    w.data.len = len;
    w.more = more;
    req.id = id;
    req.op_case = OP(WRITE_FILE);
    req.write_file = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

static void data_send(sa_client_t *c, uint64_t id, const void *d, size_t len, int more)
{
    Request req = REQUEST_INIT;
    FileDataReq fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
    fd.data.data = (uint8_t *)d;
    fd.data.len = len;
    fd.more = more;
    req.id = id;
    req.op_case = OP(WRITE_DATA);
    req.write_data = &fd;
    ASSERT_EQ(sa_client_send(c, &req), 0);
}

static void no_tmp_files_settle(const char *dir)
{
    int n = 0;
    for (int i = 0; i < 300; i++) {
        if ((n = dir_count(dir, ".sa-tmp.")) == 0)
            return;
        usleep(10000);
    }
    FAIL("%d temporary files left in %s", n, dir);
}

static Response *simple_fs(sa_client_t *c, int op, void *msg)
{
    Request req = REQUEST_INIT;
    req.op_case = (Sandbox__Agent__V1__Request__OpCase)op;
    switch (op) {
    case OP(STAT): req.stat = msg; break;
    case OP(MKDIR): req.mkdir = msg; break;
    case OP(REMOVE): req.remove = msg; break;
    case OP(RENAME): req.rename = msg; break;
    default: FAIL("op %d", op);
    }
    return call(c, &req);
}

static Response *get_process(sa_client_t *c, uint32_t pid)
{
    Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    g.pid = pid;
    return simple(c, OP(GET_PROCESS), &g);
}

/* ------------------------------------------------------------ strings */

/* Strings that are not UTF-8 (protobuf-c does not check proto3 strings) in
 * every field the agent echoes: answers must still be valid UTF-8, or a
 * strict client (Python, Go) cannot even parse them. */
TEST(invalid_utf8_in_string_fields_is_never_echoed_raw)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);

    /* A command that is not UTF-8: NOT_FOUND, message clean. */
    const char *bad_cmd[] = {"/nonexistent/\xff\xfe-cmd"};
    uint64_t id = start_send(c, bad_cmd, 1, NULL);
    expect_error(recv_id(c, id), CODE(NOT_FOUND), "nonexistent");

    /* A process started with a tag, cwd-less args and env that are not
     * UTF-8: GetProcess and ListProcesses must stay valid UTF-8. */
    start_opts_t o = {0};
    o.tag = "tag-\xc3\x28-bad";
    const char *argv[] = {"/bin/sh", "-c", "exit 0", "arg-\xff", "\xe2\x82"};
    uint32_t pid = start_argv(c, argv, 5, &o, NULL);
    sa_response_free(wait_exit(c, pid));
    Response *r = get_process(c, pid);
    ASSERT_RESULT(r, PROCESS);
    ASSERT(utf8_ok(r->process->tag));
    ASSERT(utf8_ok(r->process->command));
    ASSERT(utf8_ok(r->process->cwd));
    ASSERT(utf8_ok(r->process->user));
    ASSERT_EQ(r->process->n_args, 4);
    for (size_t i = 0; i < r->process->n_args; i++)
        ASSERT(utf8_ok(r->process->args[i]));
    sa_response_free(r);
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    lp.include_exited = 1;
    r = simple(c, OP(LIST_PROCESSES), &lp);
    ASSERT_RESULT(r, PROCESSES);
    for (size_t i = 0; i < r->processes->n_processes; i++)
        ASSERT(utf8_ok(r->processes->processes[i]->tag));
    sa_response_free(r);
    /* The same tag, sent again, still finds the process. */
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
        f.tag = (char *)o.tag;
        req.op_case = OP(FOLLOW);
        req.follow = &f;
        r = call(c, &req);
        ASSERT_RESULT(r, EXIT);
        sa_response_free(r);
    }

    /* A path that is not UTF-8, as a string and as path_raw: the same
     * NOT_FOUND, the message readable. */
    size_t n;
    r = read_all(c, "/nonexistent-\xff\xfe/x", 0, 0, &n, NULL);
    expect_error(r, CODE(NOT_FOUND), "nonexistent-");
    /* A user name that is not UTF-8. */
    o = (start_opts_t){0};
    o.user = "nobody\xff";
    const char *tr[] = {"/bin/true"};
    id = start_send(c, tr, 1, &o);
    expect_error(recv_id(c, id), CODE(NOT_FOUND), "nobody");
    /* An env key that is not UTF-8 is a valid name for Linux. */
    o = (start_opts_t){0};
    o.env_k = "K\xff";
    o.env_v = "v\xfe";
    const char *env[] = {"/usr/bin/env"};
    pid = start_argv(c, env, 1, &o, NULL);
    collected_t k;
    collect_all(c, pid, &k);
    ASSERT_EQ(k.exit_code, 0);
    ASSERT(memmem(k.data, k.len, "\nK\xff=v\xfe\n", 7));
    collected_free(&k);

    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ pipelining */

typedef struct writer_arg {
    sa_client_t *c;
    int n;
} writer_arg_t;

static void *ping_writer(void *arg)
{
    writer_arg_t *w = arg;
    /* Frames built by hand: id i+1, ping with an empty payload. */
    size_t cap = (size_t)w->n * 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (int i = 0; i < w->n; i++) {
        uint8_t body[16];
        size_t b = 0;
        uint64_t id = (uint64_t)i + 1;
        body[b++] = 0x08;
        while (id >= 0x80) {
            body[b++] = (uint8_t)(id | 0x80);
            id >>= 7;
        }
        body[b++] = (uint8_t)id;
        body[b++] = 0x1a; /* ping */
        body[b++] = 0x00;
        buf[len++] = 0;
        buf[len++] = 0;
        buf[len++] = 0;
        buf[len++] = 0;
        buf[len++] = (uint8_t)b;
        memcpy(buf + len, body, b);
        len += b;
    }
    int rc = sa_client_send_raw(w->c, buf, len);
    free(buf);
    return (void *)(intptr_t)rc;
}

/* 10,000 requests in one burst, the responses read only afterwards (the
 * writer blocks when the agent stops reading): every one answered exactly
 * once, in order, and another connection is served meanwhile. */
TEST(ten_thousand_pipelined_requests)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    sa_client_t *other = agent_connect(&a);
    writer_arg_t w = {c, 10000};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, ping_writer, &w), 0);
    usleep(200000);
    ping_ok(other); /* the flood does not stop the others */
    for (int i = 0; i < w.n; i++) {
        Response *r = NULL;
        int rc = sa_client_recv(c, &r, 30000);
        if (rc < 0)
            FAIL("response %d: %s", i, strerror(-rc));
        ASSERT_EQ(r->id, (uint64_t)i + 1);
        ASSERT_RESULT(r, PONG);
        sa_response_free(r);
    }
    void *ret;
    pthread_join(t, &ret);
    ASSERT_EQ((intptr_t)ret, 0);
    ping_ok(c);
    sa_client_close(c);
    sa_client_close(other);
    agent_stop(&a);
}

/* ------------------------------------------------------------ in flight */

TEST(inflight_limit_then_close)
{
    agent_t a;
    agent_start(&a, "--max-inflight", "64", NULL);
    sa_client_t *c = agent_connect(&a), *other = agent_connect(&a);
    uint32_t pid = start_sh(other, "sleep 30", NULL, NULL);
    int base = fd_count(a.pid);
    uint64_t ids[80];
    for (int i = 0; i < 80; i++)
        ids[i] = follow_send(c, pid, 0, 0, 0);
    /* The first 64 are in flight; the rest are refused one by one. */
    for (int i = 64; i < 80; i++)
        expect_error(recv_id(c, ids[i]), CODE(RESOURCE_EXHAUSTED), "in flight");
    ping_ok(c);
    /* Mixed kinds up to the limit: reads and watches are streams too. */
    sa_client_close(c);
    c = agent_connect(&a);
    for (int i = 0; i < 70; i++)
        read_send(c, "/dev/zero", 0, 0);
    sa_client_close(c);
    ping_ok(other);
    fds_settle(&a, base);
    send_signal(other, pid, SIGKILL, 1);
    sa_client_close(other);
    agent_stop(&a);
}

/* ------------------------------------------------------------ cancel */

TEST(cancel_every_kind_of_stream)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int base = fd_count(a.pid);
    start_opts_t o = {0};
    o.stdin_pipe = 1;
    uint32_t pid = start_sh(c, "exec sleep 30", &o, NULL);

    /* follow */
    cancel_ok(c, follow_send(c, pid, 0, 0, 0));
    cancel_ok(c, follow_send(c, pid, 0, 1, 0));
    /* wait */
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__WaitProcess w = SANDBOX__AGENT__V1__WAIT_PROCESS__INIT;
        w.pid = pid;
        req.op_case = OP(WAIT);
        req.wait = &w;
        ASSERT_EQ(sa_client_send(c, &req), 0);
        cancel_ok(c, req.id);
    }
    /* write_stdin in progress: 4 MiB to a process that never reads. */
    size_t big = 4u << 20;
    uint8_t *buf = calloc(1, big);
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
        w.pid = pid;
        w.data.data = buf;
        w.data.len = big - 4096;
        req.op_case = OP(WRITE_STDIN);
        req.write_stdin = &w;
        ASSERT_EQ(sa_client_send(c, &req), 0);
        ping_ok(c); /* the connection goes on while it waits */
        Response *r = NULL;
        ASSERT_EQ(sa_client_recv_id(c, req.id, &r, 200), -ETIMEDOUT);
        cancel_ok(c, req.id);
    }
    /* read_file of an endless device */
    cancel_ok(c, read_send(c, "/dev/zero", 0, 0));
    /* watch */
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__WatchPath w = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
        w.path = g_dir;
        req.op_case = OP(WATCH);
        req.watch = &w;
        ASSERT_EQ(sa_client_send(c, &req), 0);
        usleep(50000);
        cancel_ok(c, req.id);
    }
    /* write_file mid-upload: the temporary file goes, the target is not
     * created, later chunks are refused by id. */
    {
        uint64_t id = write_send(c, 0, P("up"), buf, 1000, 1);
        data_send(c, id, buf, 1000, 1);
        ping_ok(c);
        cancel_ok(c, id);
        no_tmp_files_settle(g_dir);
        struct stat st;
        ASSERT(stat(P("up"), &st) < 0 && errno == ENOENT);
        data_send(c, id, buf, 10, 0);
        expect_error(recv_id(c, id), CODE(INVALID_ARGUMENT), "no upload");
    }
    /* A unary op's id, once answered, is not cancellable. */
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
        req.op_case = OP(PING);
        req.ping = &p;
        sa_response_free(call(c, &req));
        expect_error(recv_id(c, cancel_send(c, req.id)), CODE(NOT_FOUND), "no request");
    }
    /* The process is unharmed by all of it. */
    Response *r = get_process(c, pid);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING);
    sa_response_free(r);
    r = send_signal(c, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    sa_response_free(wait_exit(c, pid));
    fds_settle(&a, base);
    free(buf);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* CloseStdin queued behind a write that is then cancelled still closes. */
TEST(close_stdin_after_cancelled_write_still_closes)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    start_opts_t o = {0};
    o.stdin_pipe = 1;
    /* Reads nothing for a while, then everything until EOF. */
    uint32_t pid = start_sh(c, "sleep 1; cat >/dev/null; echo eof", &o, NULL);
    size_t big = 2u << 20;
    uint8_t *buf = calloc(1, big);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
    w.pid = pid;
    w.data.data = buf;
    w.data.len = big;
    req.op_case = OP(WRITE_STDIN);
    req.write_stdin = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    Response *r = close_stdin(c, pid);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    cancel_ok(c, req.id);
    collected_t k;
    collect_all(c, pid, &k);
    ASSERT_EQ(k.exit_code, 0);
    ASSERT(k.len >= 4 && !memcmp(k.data + k.len - 4, "eof\n", 4));
    collected_free(&k);
    free(buf);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ uploads */

TEST(upload_edge_cases)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int base = fd_count(a.pid);
    char x[3000], y[3000];
    memset(x, 'x', sizeof x);
    memset(y, 'y', sizeof y);

    /* write_data after the upload finished. */
    uint64_t id = write_send(c, 0, P("done"), x, 10, 0);
    Response *r = recv_id(c, id);
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);
    data_send(c, id, x, 10, 0);
    expect_error(recv_id(c, id), CODE(INVALID_ARGUMENT), "no upload");

    /* write_data after the upload failed (parent missing). */
    id = write_send(c, 0, P("missing/dir/f"), x, 10, 1);
    expect_error(recv_id(c, id), CODE(NOT_FOUND), "missing");
    data_send(c, id, x, 10, 0);
    expect_error(recv_id(c, id), CODE(INVALID_ARGUMENT), "no upload");

    /* Two uploads interleaved on one connection, different ids. */
    uint64_t ia = write_send(c, 1001, P("a"), x, 1000, 1);
    uint64_t ib = write_send(c, 1002, P("b"), y, 1000, 1);
    data_send(c, ib, y, 1000, 1);
    data_send(c, ia, x, 1000, 1);
    data_send(c, ia, x, 1000, 0);
    data_send(c, ib, y, 1000, 0);
    r = recv_id(c, ia);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, 3000);
    sa_response_free(r);
    r = recv_id(c, ib);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, 3000);
    sa_response_free(r);
    size_t n;
    uint8_t *got;
    r = read_all(c, P("a"), 0, 0, &n, &got);
    ASSERT_EQ(n, 3000);
    ASSERT_MEM_EQ(got, x, 3000);
    free(got);
    sa_response_free(r);

    /* Two uploads to the same target at once: the result is one of them,
     * whole, and no temporary file is left. */
    ia = write_send(c, 2001, P("same"), x, 1500, 1);
    ib = write_send(c, 2002, P("same"), y, 1500, 1);
    data_send(c, ia, x, 1500, 0);
    data_send(c, ib, y, 1500, 0);
    sa_response_free(recv_id(c, ia));
    sa_response_free(recv_id(c, ib));
    r = read_all(c, P("same"), 0, 0, &n, &got);
    ASSERT_EQ(n, 3000);
    ASSERT(!memcmp(got, x, 3000) || !memcmp(got, y, 3000));
    free(got);
    sa_response_free(r);
    no_tmp_files_settle(g_dir);

    /* An upload whose connection goes away mid-way, many times. */
    for (int i = 0; i < 20; i++) {
        sa_client_t *d = agent_connect(&a);
        id = write_send(d, 0, P("gone"), x, 1000, 1);
        data_send(d, id, x, 1000, 1);
        sa_client_close(d);
    }
    no_tmp_files_settle(g_dir);
    struct stat st;
    ASSERT(stat(P("gone"), &st) < 0);
    fds_settle(&a, base);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ follow */

TEST(follow_sequence_edges)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "printf 0123456789", NULL, NULL);
    sa_response_free(wait_exit(c, pid));
    /* At exactly the end: no data, then the exit. */
    uint64_t id = follow_send(c, pid, 10, 0, 0);
    Response *r = recv_id(c, id);
    ASSERT_RESULT(r, EXIT);
    sa_response_free(r);
    /* Beyond it: INVALID_ARGUMENT naming the sizes. */
    expect_error(recv_id(c, follow_send(c, pid, 11, 0, 0)), CODE(INVALID_ARGUMENT), "beyond");
    expect_error(recv_id(c, follow_send(c, pid, UINT64_MAX, 0, 0)), CODE(INVALID_ARGUMENT),
                 "beyond");
    /* A tag that nothing has, and pid 0 without tag. */
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
        f.tag = "no-such-tag";
        req.op_case = OP(FOLLOW);
        req.follow = &f;
        expect_error(call(c, &req), CODE(NOT_FOUND), "no-such-tag");
        f.tag = "";
        expect_error(call(c, &req), CODE(INVALID_ARGUMENT), "pid 0");
    }
    sa_client_close(c);
    agent_stop(&a);
}

/* lines = 1 on binary output with no newline at all and very long lines:
 * every byte once, in order, pieces no larger than the documented limit. */
TEST(lines_mode_binary_without_newlines)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    start_opts_t o = {0};
    o.follow = 1;
    o.lines = 1;
    uint64_t id;
    uint32_t pid = start_sh(
        c, "head -c 300000 /dev/urandom | tr -d '\\n'; head -c 200000 /dev/zero | tr '\\0' a; echo",
        &o, &id);
    (void)pid;
    collected_t k = {0};
    size_t biggest = 0;
    for (;;) {
        Response *r = recv_id(c, id);
        if (r->result_case == RES(OUTPUT) && r->output->data.len > biggest)
            biggest = r->output->data.len;
        if (collect_one(&k, r))
            break;
    }
    ASSERT_EQ(k.exit_code, 0);
    ASSERT_EQ(k.gaps, 0);
    ASSERT_EQ(k.len, k.total_output);
    ASSERT_GT(k.len, 400000);
    ASSERT_LE(biggest, 65536);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&a);
}

/* Output and exit ordering for processes that close their outputs. */
TEST(closed_outputs_and_exit_ordering)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    /* stderr only, stdout closed early, keeps running after. */
    uint32_t pid = start_sh(c, "exec 1>&-; echo to-stderr >&2; sleep 0.3; exit 3", NULL, NULL);
    collected_t k;
    collect_all(c, pid, &k);
    ASSERT_EQ(k.exit_code, 3);
    ASSERT_EQ(k.len, 10);
    ASSERT_EQ(k.tags[0], SANDBOX__AGENT__V1__STREAM__STDERR);
    collected_free(&k);
    /* Both outputs closed while running: still RUNNING, the exit comes
     * only after the exit. */
    pid = start_sh(c, "exec 1>&- 2>&-; sleep 0.5; exit 4", NULL, NULL);
    usleep(200000);
    Response *r = get_process(c, pid);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING);
    sa_response_free(r);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->exit_code, 4);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ stdin */

TEST(write_stdin_to_closed_or_exited)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    start_opts_t o = {0};
    o.stdin_pipe = 1;
    /* Closes its stdin, keeps running: EPIPE is an IO_ERROR, the agent
     * does not die of SIGPIPE. */
    uint32_t pid = start_sh(c, "exec 0<&-; sleep 30", &o, NULL);
    usleep(200000);
    expect_error(write_stdin(c, pid, "hello", 5), CODE(IO_ERROR), "stdin");
    ASSERT(agent_alive(&a));
    ping_ok(c);
    send_signal(c, pid, SIGKILL, 1);
    sa_response_free(wait_exit(c, pid));
    /* Exited: FAILED_PRECONDITION. */
    expect_error(write_stdin(c, pid, "hello", 5), CODE(FAILED_PRECONDITION), "closed");
    /* Not piped. */
    pid = start_sh(c, "exit 0", NULL, NULL);
    expect_error(write_stdin(c, pid, "x", 1), CODE(FAILED_PRECONDITION), "stdin");
    expect_error(close_stdin(c, pid), CODE(FAILED_PRECONDITION), "stdin");
    /* Closed twice. */
    pid = start_sh(c, "sleep 30", &o, NULL);
    Response *r = close_stdin(c, pid);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    expect_error(close_stdin(c, pid), CODE(FAILED_PRECONDITION), "closed");
    expect_error(write_stdin(c, pid, "x", 1), CODE(FAILED_PRECONDITION), "closed");
    send_signal(c, pid, SIGKILL, 1);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ numbers */

TEST(signal_and_resize_bounds)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "sleep 30", NULL, NULL);
    Response *r = send_signal(c, pid, 0, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    expect_error(send_signal(c, pid, 65, 0), CODE(INVALID_ARGUMENT), "65");
    expect_error(send_signal(c, pid, -1, 0), CODE(INVALID_ARGUMENT), "-1");
    expect_error(send_signal(c, pid, INT32_MAX, 0), CODE(INVALID_ARGUMENT), "signal");
    expect_error(send_signal(c, 0, 9, 0), CODE(INVALID_ARGUMENT), "pid 0");
    expect_error(send_signal(c, UINT32_MAX, 9, 0), CODE(NOT_FOUND), "4294967295");
    r = send_signal(c, pid, 64, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->signal, 64);
    sa_response_free(r);
    expect_error(send_signal(c, pid, 9, 0), CODE(FAILED_PRECONDITION), "exited");

    start_opts_t o = {0};
    o.pty = 1;
    pid = start_sh(c, "sleep 30", &o, NULL);
    Sandbox__Agent__V1__ResizePty rz = SANDBOX__AGENT__V1__RESIZE_PTY__INIT;
    rz.pid = pid;
    rz.rows = 0;
    rz.cols = 80;
    expect_error(simple(c, OP(RESIZE), &rz), CODE(INVALID_ARGUMENT), "0x80");
    rz.rows = 24;
    rz.cols = 65536;
    expect_error(simple(c, OP(RESIZE), &rz), CODE(INVALID_ARGUMENT), "65536");
    rz.cols = 65535;
    r = simple(c, OP(RESIZE), &rz);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    send_signal(c, pid, SIGKILL, 1);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(start_bad_fields)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    const char *tr[] = {"/bin/true"};
    start_opts_t o = {0};
    o.env_k = "A=B";
    o.env_v = "x";
    expect_error(recv_id(c, start_send(c, tr, 1, &o)), CODE(INVALID_ARGUMENT), "A=B");
    o.env_k = "";
    expect_error(recv_id(c, start_send(c, tr, 1, &o)), CODE(INVALID_ARGUMENT), "env key");
    /* cwd that is a file */
    FILE *f = fopen(P("file"), "w");
    fclose(f);
    o = (start_opts_t){0};
    o.cwd = P("file");
    expect_error(recv_id(c, start_send(c, tr, 1, &o)), CODE(FAILED_PRECONDITION), "file");
    o.cwd = P("nope");
    expect_error(recv_id(c, start_send(c, tr, 1, &o)), CODE(NOT_FOUND), "nope");
    /* users */
    o = (start_opts_t){0};
    o.user = "root:nosuchgroup";
    expect_error(recv_id(c, start_send(c, tr, 1, &o)), CODE(NOT_FOUND), "nosuchgroup");
    o.user = "-1";
    Response *r = recv_id(c, start_send(c, tr, 1, &o));
    ASSERT_RESULT(r, ERROR);
    ASSERT(strstr(r->error->message, "-1"));
    sa_response_free(r);
    o.user = "nosuchuser-xyz";
    expect_error(recv_id(c, start_send(c, tr, 1, &o)), CODE(NOT_FOUND), "nosuchuser-xyz");
    if (geteuid() == 0) {
        o.user = "99999:99999";
        const char *id[] = {"/bin/sh", "-c", "test $(id -u) = 99999 && test $(id -g) = 99999"};
        uint32_t pid = start_argv(c, id, 3, &o, NULL);
        r = wait_exit(c, pid);
        ASSERT_RESULT(r, EXIT);
        ASSERT_EQ(r->exit->exit_code, 0);
        sa_response_free(r);
    }
    /* Tags collide freely: the newest running one is followed. */
    o = (start_opts_t){0};
    o.tag = "dup";
    uint32_t p1 = start_sh(c, "echo one", &o, NULL);
    sa_response_free(wait_exit(c, p1));
    uint32_t p2 = start_sh(c, "echo two; sleep 0.2", &o, NULL);
    {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__FollowOutput fo = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
        fo.tag = "dup";
        req.op_case = OP(FOLLOW);
        req.follow = &fo;
        ASSERT_EQ(sa_client_send(c, &req), 0);
        collected_t k = {0};
        collect_until_done(c, req.id, &k);
        ASSERT_EQ(k.len, 4);
        ASSERT_MEM_EQ(k.data, "two\n", 4);
        collected_free(&k);
    }
    (void)p2;
    /* Forget a running process; follow a forgotten one. */
    uint32_t pid = start_sh(c, "sleep 0.3", NULL, NULL);
    Sandbox__Agent__V1__ForgetProcess fg = SANDBOX__AGENT__V1__FORGET_PROCESS__INIT;
    fg.pid = pid;
    expect_error(simple(c, OP(FORGET), &fg), CODE(FAILED_PRECONDITION), "running");
    sa_response_free(wait_exit(c, pid));
    r = simple(c, OP(FORGET), &fg);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    expect_error(recv_id(c, follow_send(c, pid, 0, 0, 0)), CODE(NOT_FOUND), "forgotten");
    expect_error(simple(c, OP(FORGET), &fg), CODE(NOT_FOUND), "forgotten");
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* ------------------------------------------------------------ storm */

/* 20 connections start 10 chatty processes each, follow them, and vanish
 * mid-stream. Afterwards the agent holds what it held before: descriptors,
 * no zombies, memory within its caps. */
TEST(storm_of_followers_that_disconnect)
{
    agent_t a;
    agent_start(&a, "--max-kept-output", "33554432", NULL);
    sa_client_t *c = agent_connect(&a);
    ping_ok(c);
    int base = fd_count(a.pid);
    long long rss0 = proc_rss(a.pid);
    pid_t kids[20];
    for (int k = 0; k < 20; k++) {
        if ((kids[k] = fork()) == 0) {
            sa_client_t *d = agent_connect(&a);
            start_opts_t o = {0};
            o.follow = 1;
            uint64_t ids[10];
            for (int i = 0; i < 10; i++)
                start_send(d, (const char *const[]){"/bin/sh", "-c",
                                                    "head -c 3000000 /dev/zero | tr '\\0' x"},
                           3, &o), ids[i] = 0;
            (void)ids;
            for (int i = 0; i < 30; i++) {
                Response *r = NULL;
                if (sa_client_recv(d, &r, 5000) < 0)
                    break;
                sa_response_free(r);
            }
            _exit(0); /* without closing anything */
        }
    }
    for (int k = 0; k < 20; k++)
        waitpid(kids[k], NULL, 0);
    ping_ok(c);
    /* All 200 run to their end: a WaitProcess for each (600 MB of output
     * on a loaded machine may take minutes; the wait is for the exits).
     * A start still queued for the spawner when its client left runs after
     * the list is made (200 forks of an ASan build take seconds): GetInfo
     * counts those too, so the list is made again until neither shows one
     * (20 ms apart while only GetInfo does; at most 60 s). */
    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    size_t running = 1;
    for (int pass = 0; pass < 3000 && running; pass++) {
        Response *l = simple(c, OP(LIST_PROCESSES), &lp);
        ASSERT_RESULT(l, PROCESSES);
        size_t listed = l->processes->n_processes;
        running = listed;
        if (!listed) {
            Response *in = info_call(c);
            running = in->info->running_processes;
            sa_response_free(in);
            if (running)
                usleep(20000);
        }
        for (size_t i = 0; i < listed; i++) {
            Request req = REQUEST_INIT;
            Sandbox__Agent__V1__WaitProcess w = SANDBOX__AGENT__V1__WAIT_PROCESS__INIT;
            Response *r = NULL;
            w.pid = l->processes->processes[i]->pid;
            req.op_case = OP(WAIT);
            req.wait = &w;
            ASSERT_EQ(sa_client_call(c, &req, &r, 240000), 0);
            /* Or exited already and forgotten: the kept output is capped. */
            if (r->result_case != RES(ERROR) ||
                r->error->code != SANDBOX__AGENT__V1__ERROR__CODE__NOT_FOUND)
                ASSERT_RESULT(r, EXIT);
            sa_response_free(r);
        }
        sa_response_free(l);
    }
    {
        Response *r = info_call(c);
        ASSERT_EQ(r->info->running_processes, 0);
        sa_response_free(r);
    }
    fds_settle(&a, base);
    ASSERT_EQ(zombies_settle(a.pid), 0);
    long long rss = proc_rss(a.pid);
    printf("  agent RSS %lld MiB before, %lld MiB after\n", rss0 >> 20, rss >> 20);
    /* The kept output is capped at 32 MiB; allow as much again. (Under
     * AddressSanitizer freed memory sits in its quarantine: not measured.) */
#if !defined(__SANITIZE_ADDRESS__)
    ASSERT_LT(rss - rss0, 64ll << 20);
#endif
    Response *r = info_call(c);
    ASSERT_LE(r->info->kept_output_bytes, 32u << 20);
    ASSERT_EQ(r->info->open_connections, 1);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ files */

TEST(read_special_files)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    size_t n;
    uint8_t *data;
    /* /proc files: size 0, content all the same. */
    Response *r = read_all(c, "/proc/self/status", 0, 0, &n, &data);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_GT(n, 100);
    ASSERT_EQ(r->file_end->size, n);
    ASSERT(memmem(data, n, "VmRSS", 5));
    free(data);
    sa_response_free(r);
    /* A FIFO: refused at once, the worker not stuck in open(). */
    ASSERT_EQ(mkfifo(P("fifo"), 0644), 0);
    expect_error(read_all(c, P("fifo"), 0, 0, &n, NULL), CODE(FAILED_PRECONDITION), "fifo");
    /* /dev/zero with a length: exactly that many zeros. */
    r = read_all(c, "/dev/zero", 0, 5000000, &n, NULL);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_EQ(n, 5000000);
    sa_response_free(r);
    /* /dev/null: empty. */
    r = read_all(c, "/dev/null", 0, 0, &n, NULL);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_EQ(n, 0);
    sa_response_free(r);
    /* A directory. */
    expect_error(read_all(c, g_dir, 0, 0, &n, NULL), CODE(FAILED_PRECONDITION), g_dir);
    /* Character devices that block when they have nothing: reading them
     * must end (what is there now), not hang a file worker forever. Two of
     * them at once would take every worker. */
    const char *blocking[] = {"/dev/kmsg", "/dev/ptmx"};
    for (size_t i = 0; i < 2; i++) {
        if (access(blocking[i], R_OK) < 0)
            continue;
        for (int k = 0; k < 3; k++) {
            Response *e = NULL;
            uint64_t id = read_send(c, blocking[i], 0, 0);
            int done = 0;
            while (!done) {
                int rc = sa_client_recv_id(c, id, &e, 5000);
                if (rc < 0)
                    FAIL("read of %s did not end: %s", blocking[i], strerror(-rc));
                done = e->done;
                sa_response_free(e);
            }
        }
    }
    r = read_all(c, "/proc/self/status", 0, 0, &n, NULL);
    ASSERT_RESULT(r, FILE_END);
    sa_response_free(r);
    /* A file truncated while it is read: what was sent is what FileEnd
     * says. */
    {
        size_t big = 20u << 20;
        char *buf = malloc(big);
        memset(buf, 'q', big);
        FILE *f = fopen(P("shrinks"), "w");
        fwrite(buf, 1, big, f);
        fclose(f);
        free(buf);
        uint64_t id = read_send(c, P("shrinks"), 0, 0);
        Response *first = recv_id(c, id);
        ASSERT_RESULT(first, CHUNK);
        size_t got = first->chunk->data.len;
        sa_response_free(first);
        ASSERT_EQ(truncate(P("shrinks"), 1000), 0);
        for (;;) {
            Response *x = recv_id(c, id);
            if (x->result_case == RES(CHUNK)) {
                got += x->chunk->data.len;
                sa_response_free(x);
                continue;
            }
            ASSERT_RESULT(x, FILE_END);
            ASSERT_EQ(x->file_end->size, got);
            sa_response_free(x);
            break;
        }
    }
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

static uint64_t list_send(sa_client_t *c, const char *path, unsigned depth)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = (char *)path;
    ld.depth = depth;
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

static uint64_t watch_send(sa_client_t *c, const char *path, int recursive)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchPath w = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    w.path = (char *)path;
    w.recursive = recursive;
    req.op_case = OP(WATCH);
    req.watch = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

TEST(list_watch_rename_remove_edges)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int base = fd_count(a.pid);
    /* /proc: entries vanish while listed; the listing still ends. */
    uint64_t id = list_send(c, "/proc", 2);
    size_t entries = 0;
    for (;;) {
        Response *r = recv_id(c, id);
        ASSERT_RESULT(r, ENTRIES);
        entries += r->entries->n_entries;
        int done = r->done;
        sa_response_free(r);
        if (done)
            break;
    }
    ASSERT_GT(entries, 10);

    /* Watch a file, not a directory: its modification is reported. */
    FILE *f = fopen(P("watched"), "w");
    fclose(f);
    id = watch_send(c, P("watched"), 0);
    usleep(100000);
    f = fopen(P("watched"), "a");
    fputs("x", f);
    fclose(f);
    Response *r = recv_id(c, id);
    ASSERT_RESULT(r, FS_EVENT);
    ASSERT_STR_EQ(r->fs_event->path, P("watched"));
    sa_response_free(r);
    cancel_ok(c, id);

    /* Watch a directory that is then deleted: DELETE of the root. */
    ASSERT_EQ(mkdir(P("gone"), 0755), 0);
    id = watch_send(c, P("gone"), 1);
    usleep(100000);
    ASSERT_EQ(rmdir(P("gone")), 0);
    int saw_delete = 0;
    for (int i = 0; i < 5 && !saw_delete; i++) {
        r = recv_id(c, id);
        ASSERT_RESULT(r, FS_EVENT);
        saw_delete = r->fs_event->kind == SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE;
        sa_response_free(r);
    }
    ASSERT(saw_delete);
    cancel_ok(c, id);
    /* Watch what does not exist. */
    expect_error(recv_id(c, watch_send(c, P("never"), 0)), CODE(NOT_FOUND), "never");

    /* Rename onto itself: nothing happens, no error. */
    f = fopen(P("self"), "w");
    fputs("keep", f);
    fclose(f);
    Sandbox__Agent__V1__Rename rn = SANDBOX__AGENT__V1__RENAME__INIT;
    rn.source = P("self");
    rn.destination = P("self");
    rn.overwrite = 1;
    r = simple_fs(c, OP(RENAME), &rn);
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->size, 4);
    sa_response_free(r);
    rn.overwrite = 0;
    r = simple_fs(c, OP(RENAME), &rn);
    ASSERT_EQ(r->result_case, RES(ERROR));
    ASSERT_EQ(r->error->code, CODE(ALREADY_EXISTS));
    sa_response_free(r);
    struct stat st;
    ASSERT_EQ(stat(P("self"), &st), 0);
    ASSERT_EQ(st.st_size, 4);

    /* Remove of a symlink to a directory, recursive: the link goes, the
     * target's contents stay. */
    ASSERT_EQ(mkdir(P("target"), 0755), 0);
    f = fopen(P("target/precious"), "w");
    fclose(f);
    ASSERT_EQ(symlink(P("target"), P("link")), 0);
    Sandbox__Agent__V1__Remove rm = SANDBOX__AGENT__V1__REMOVE__INIT;
    rm.path = P("link");
    rm.recursive = 1;
    r = simple_fs(c, OP(REMOVE), &rm);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT(lstat(P("link"), &st) < 0);
    ASSERT_EQ(stat(P("target/precious"), &st), 0);
    /* ... and with a trailing slash, which names the directory itself. */
    ASSERT_EQ(symlink(P("target"), P("link2")), 0);
    char slash[600];
    snprintf(slash, sizeof slash, "%s/", P("link2"));
    rm.path = slash;
    r = simple_fs(c, OP(REMOVE), &rm);
    sa_response_free(r);
    ASSERT_EQ(stat(P("target/precious"), &st), 0);

    /* Every op with every field empty. */
    Sandbox__Agent__V1__Stat sta = SANDBOX__AGENT__V1__STAT__INIT;
    expect_error(simple_fs(c, OP(STAT), &sta), CODE(INVALID_ARGUMENT), "missing path");
    Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
    expect_error(simple_fs(c, OP(MKDIR), &md), CODE(INVALID_ARGUMENT), "missing path");
    Sandbox__Agent__V1__Remove rm0 = SANDBOX__AGENT__V1__REMOVE__INIT;
    expect_error(simple_fs(c, OP(REMOVE), &rm0), CODE(INVALID_ARGUMENT), "missing path");
    Sandbox__Agent__V1__Rename rn0 = SANDBOX__AGENT__V1__RENAME__INIT;
    expect_error(simple_fs(c, OP(RENAME), &rn0), CODE(INVALID_ARGUMENT), "missing path");
    expect_error(recv_id(c, list_send(c, "", 0)), CODE(INVALID_ARGUMENT), "missing path");
    expect_error(recv_id(c, watch_send(c, "", 0)), CODE(INVALID_ARGUMENT), "missing path");
    expect_error(recv_id(c, read_send(c, "", 0, 0)), CODE(INVALID_ARGUMENT), "missing path");
    expect_error(recv_id(c, write_send(c, 0, "", "", 0, 0)), CODE(INVALID_ARGUMENT),
                 "missing path");
    fds_settle(&a, base);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* A tree as deep as PATH_MAX allows, watched recursively and listed: the
 * agent walks it without running out of stack or descriptors. */
TEST(deep_tree_watch_and_list)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    int base = fd_count(a.pid);
    int dfd = open(g_dir, O_RDONLY | O_DIRECTORY);
    int levels = (4096 - (int)strlen(g_dir) - 16) / 2;
    for (int i = 0; i < levels; i++) {
        ASSERT_EQ(mkdirat(dfd, "d", 0755), 0);
        int nfd = openat(dfd, "d", O_RDONLY | O_DIRECTORY);
        close(dfd);
        dfd = nfd;
    }
    close(dfd);
    uint64_t wid = watch_send(c, g_dir, 1);
    ping_ok(c);
    uint64_t id = list_send(c, g_dir, 100000);
    size_t entries = 0;
    for (;;) {
        Response *r = recv_id(c, id);
        ASSERT_RESULT(r, ENTRIES);
        entries += r->entries->n_entries;
        int done = r->done;
        sa_response_free(r);
        if (done)
            break;
    }
    ASSERT_GT(entries, 100);
    /* Something created at the bottom is seen by the watch. */
    ping_ok(c);
    cancel_ok(c, wid);
    ASSERT(agent_alive(&a));
    fds_settle(&a, base);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* A child started while uploads, watches, reads and listings hold
 * descriptors in the agent inherits none of them. */
TEST(children_inherit_no_descriptor_of_work_in_flight)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    uint64_t up = write_send(c, 0, P("up"), "x", 1, 1);
    uint64_t w = watch_send(c, g_dir, 1);
    uint64_t ls = list_send(c, "/proc", 3);
    ping_ok(c);
    for (int i = 0; i < 20; i++) {
        uint32_t pid = start_sh(c, "ls /proc/self/fd | tr '\\n' ' '", NULL, NULL);
        collected_t k;
        collect_all(c, pid, &k);
        ASSERT_EQ(k.exit_code, 0);
        /* ls's own directory descriptor is 3. */
        if (k.len != 8 || memcmp(k.data, "0 1 2 3 ", 8))
            FAIL("the child has descriptors: %.*s", (int)k.len, k.data);
        collected_free(&k);
    }
    cancel_ok(c, up);
    cancel_ok(c, w);
    /* The listing may have ended by now; either way it is not in flight. */
    uint64_t cid = cancel_send(c, ls);
    sa_response_free(recv_id(c, cid));
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* Pipes the agent holds now. */
static int pipe_count(pid_t pid)
{
    char path[64], link[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    struct dirent *de;
    if (!d)
        return -1;
    while ((de = readdir(d))) {
        char fp[340];
        snprintf(fp, sizeof fp, "%s/%s", path, de->d_name);
        ssize_t k = readlink(fp, link, sizeof link - 1);
        if (k > 0 && (link[k] = 0, !strncmp(link, "pipe:", 5)))
            n++;
    }
    closedir(d);
    return n;
}

/* A vfork-style child shares the agent's descriptor table until its first
 * system call gives it a private copy of the few low descriptors its pipes
 * were put in (spawn.c). With hundreds of connections open, starts that
 * come together (the spawner thread), a lone one (the loop's thread) and a
 * PTY one each see only 0, 1 and 2; and once they have ended the agent
 * holds no pipe of theirs, so those low descriptors were given back. */
#define MANY_CONNS 200
#define TOGETHER 12
TEST(starts_with_many_descriptors_open_inherit_none)
{
    agent_t a;
    const char *argv[] = {"/bin/sh", "-c", "ls /proc/self/fd | tr '\\n' ' '"};
    start_opts_t o = {.follow = 1};
    sa_client_t *many[MANY_CONNS], *sc[TOGETHER];
    uint64_t ids[TOGETHER];
    collected_t k;

    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    for (int i = 0; i < MANY_CONNS; i++)
        many[i] = agent_connect(&a);
    for (int i = 0; i < TOGETHER; i++)
        sc[i] = agent_connect(&a);
    ping_ok(c);
    int base = pipe_count(a.pid);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < TOGETHER; i++)
            ids[i] = start_send(sc[i], argv, 3, &o);
        for (int i = 0; i < TOGETHER; i++) {
            memset(&k, 0, sizeof k);
            collect_until_done(sc[i], ids[i], &k);
            ASSERT_EQ(k.exit_code, 0);
            /* ls's own directory descriptor is 3. */
            if (k.len != 8 || memcmp(k.data, "0 1 2 3 ", 8))
                FAIL("a child has descriptors: %.*s", (int)k.len, k.data);
            collected_free(&k);
        }
        start_opts_t t = {.follow = 1, .pty = round == 1};
        memset(&k, 0, sizeof k);
        collect_until_done(c, start_send(c, argv, 3, &t), &k);
        ASSERT_EQ(k.exit_code, 0);
        if (k.len != 8 || memcmp(k.data, "0 1 2 3 ", 8))
            FAIL("a lone child has descriptors: %.*s", (int)k.len, k.data);
        collected_free(&k);
    }
    int n = 0;
    for (int i = 0; i < 500 && (n = pipe_count(a.pid)) > base; i++)
        usleep(10000);
    if (n > base)
        FAIL("the agent holds %d pipes, %d before the starts", n, base);
    for (int i = 0; i < TOGETHER; i++)
        sa_client_close(sc[i]);
    for (int i = 0; i < MANY_CONNS; i++)
        sa_client_close(many[i]);
    sa_client_close(c);
    agent_stop(&a);
}

TEST_MAIN(TEST_ENTRY(children_inherit_no_descriptor_of_work_in_flight),
          TEST_ENTRY(starts_with_many_descriptors_open_inherit_none),
          TEST_ENTRY(invalid_utf8_in_string_fields_is_never_echoed_raw),
          TEST_ENTRY(ten_thousand_pipelined_requests), TEST_ENTRY(inflight_limit_then_close),
          TEST_ENTRY(cancel_every_kind_of_stream),
          TEST_ENTRY(close_stdin_after_cancelled_write_still_closes),
          TEST_ENTRY(upload_edge_cases), TEST_ENTRY(follow_sequence_edges),
          TEST_ENTRY(lines_mode_binary_without_newlines),
          TEST_ENTRY(closed_outputs_and_exit_ordering), TEST_ENTRY(write_stdin_to_closed_or_exited),
          TEST_ENTRY(signal_and_resize_bounds), TEST_ENTRY(start_bad_fields),
          TEST_ENTRY_T(storm_of_followers_that_disconnect, 300), TEST_ENTRY(read_special_files),
          TEST_ENTRY(list_watch_rename_remove_edges), TEST_ENTRY(deep_tree_watch_and_list))
