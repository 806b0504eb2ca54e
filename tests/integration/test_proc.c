/* Process lifecycle against the real agent: timeouts and signals to the
 * group, PTY, stdin, exec failures, reaping (zombies, orphans), bad input,
 * list/get/forget, and sandboxctl run. */
#include "ctl_helpers.h"
#include "proc_helpers.h"

#include <pwd.h>

static agent_t A;

/* The first line of output as a number (a pid printed by the script). */
static int read_pid_line(sa_client_t *c, uint64_t id)
{
    collected_t k = {0};
    while (!memchr(k.data ? k.data : "", '\n', k.len))
        ASSERT(!collect_one(&k, recv_id(c, id)));
    int pid = atoi(k.data);
    collected_free(&k);
    return pid;
}

TEST(timeout_kills_the_shell_and_its_children)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1, .timeout_ms = 300, .kill_grace_ms = 500};
    uint64_t id;
    start_sh(c, "sleep 300 & echo $!; wait", &o, &id);
    int child = read_pid_line(c, id);
    ASSERT_GT(child, 0);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT(k.timed_out);
    ASSERT_EQ(k.signal, SIGTERM);
    ASSERT_EQ(k.exit_code, 128 + SIGTERM);
    ASSERT(gone_within(child, 3000)); /* reaped too: not even a zombie */
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(timeout_escalates_to_sigkill)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1, .timeout_ms = 200, .kill_grace_ms = 200};
    uint64_t id;
    start_sh(c, "trap '' TERM; echo ready; while :; do sleep 0.05; done", &o, &id);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT(k.timed_out);
    ASSERT_EQ(k.signal, SIGKILL);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(signal_leader_or_group)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    uint32_t pid = start_sh(c, "sleep 300 & echo $!; wait", &o, &id);
    int child = read_pid_line(c, id);
    Response *r = send_signal(c, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT_EQ(k.signal, SIGKILL);
    ASSERT(gone_within(child, 3000));
    collected_free(&k);
    /* Exited now: a further signal is refused. */
    r = send_signal(c, pid, SIGTERM, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);

    /* Leader only: the background child survives. */
    pid = start_sh(c, "sleep 300 & echo $!; wait", &o, &id);
    child = read_pid_line(c, id);
    r = send_signal(c, pid, SIGTERM, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    memset(&k, 0, sizeof k);
    collect_until_done(c, id, &k);
    ASSERT_EQ(k.signal, SIGTERM);
    ASSERT_EQ(kill(child, 0), 0);
    kill(child, SIGKILL);
    ASSERT(gone_within(child, 3000));
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

/* Read PTY output until needle shows up. */
static void pty_expect(sa_client_t *c, uint64_t id, collected_t *k, const char *needle)
{
    while (!memmem(k->data ? k->data : "", k->len, needle, strlen(needle)))
        if (collect_one(k, recv_id(c, id)))
            FAIL("process ended before '%s' appeared", needle);
}

TEST(pty_echo_resize_and_ctrl_d)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1, .pty = 1, .pty_rows = 24, .pty_cols = 80};
    uint64_t id;
    uint32_t pid = start_sh(c, "stty size; exec sh", &o, &id);
    collected_t k = {0};
    pty_expect(c, id, &k, "24 80");
    Response *r = write_stdin(c, pid, "echo hel''lo\n", 13);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    pty_expect(c, id, &k, "echo hel''lo"); /* the terminal echoes input */
    pty_expect(c, id, &k, "hello");
    Sandbox__Agent__V1__ResizePty rz = SANDBOX__AGENT__V1__RESIZE_PTY__INIT;
    rz.pid = pid;
    rz.rows = 40;
    rz.cols = 100;
    r = simple(c, OP(RESIZE), &rz);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = write_stdin(c, pid, "stty size\n", 10);
    sa_response_free(r);
    pty_expect(c, id, &k, "40 100");
    for (size_t i = 0; i < k.len; i++)
        ASSERT_EQ(k.tags[i], 3); /* STREAM PTY */
    r = close_stdin(c, pid); /* Ctrl-D: the shell exits */
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    collect_until_done(c, id, &k);
    ASSERT(k.exited);
    ASSERT_EQ(k.exit_code, 0);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(stdin_pipe_round_trip)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.stdin_pipe = 1};
    const char *argv[] = {"cat"};
    uint32_t pid = start_argv(c, argv, 1, &o, NULL);
    uint64_t fid = follow_send(c, pid, 0, 0, 0);
    /* 2 MiB in 256 KiB writes: more than the pipe holds, so some writes are
     * answered only once cat has read. */
    size_t total = 2u << 20, chunk = 256u << 10;
    char *buf = malloc(total);
    for (size_t i = 0; i < total; i++)
        buf[i] = (char)('a' + (i * 7) % 26);
    for (size_t off = 0; off < total; off += chunk) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
        w.pid = pid;
        w.data.data = (uint8_t *)buf + off;
        w.data.len = chunk;
        req.op_case = OP(WRITE_STDIN);
        req.write_stdin = &w;
        ASSERT_EQ(sa_client_send(c, &req), 0);
        Response *r = recv_id(c, req.id);
        ASSERT_RESULT(r, ACK);
        sa_response_free(r);
    }
    Response *r = close_stdin(c, pid);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    collected_t k = {0};
    collect_until_done(c, fid, &k);
    ASSERT_EQ(k.exit_code, 0);
    ASSERT_EQ(k.len, total);
    ASSERT_MEM_EQ(k.data, buf, total);
    /* Closed now. */
    r = write_stdin(c, pid, "x", 1);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    free(buf);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

static void expect_start_error(sa_client_t *c, const char *const *argv, size_t argc,
                               const start_opts_t *o, int code, int os_errno)
{
    Response *r = recv_id(c, start_send(c, argv, argc, o));
    if (r->result_case != RES(ERROR))
        FAIL("%s: expected an error, got result %d", argv[0], (int)r->result_case);
    if ((int)r->error->code != code)
        FAIL("%s: expected %s, got %s: %s", argv[0], sa_error_code_name(code),
             sa_error_code_name(r->error->code), r->error->message);
    if (os_errno)
        ASSERT_EQ(r->error->os_errno, os_errno);
    ASSERT(r->done);
    ASSERT_GT(strlen(r->error->message), 5);
    sa_response_free(r);
}

TEST(exec_failures_are_synchronous_errors)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    const char *missing[] = {"no-such-command-xyz"};
    const char *missing_path[] = {"/nonexistent/bin/x"};
    const char *notexec[] = {"/etc/passwd"};
    const char *ok[] = {"true"};
    start_opts_t badcwd = {.cwd = "/nonexistent-dir"};
    start_opts_t baduser = {.user = "no-such-user-xyz"};
    start_opts_t nopath = {.clear_env = 1, .env_k = "PATH", .env_v = "/nonexistent"};
    /* A plain PATH: a directory in the caller's PATH that this user may not
     * search would rightly make it EACCES, as execvp does. */
    start_opts_t plain = {.env_k = "PATH", .env_v = "/usr/bin:/bin"};
    expect_start_error(c, missing, 1, &plain, CODE(NOT_FOUND), ENOENT);
    expect_start_error(c, missing_path, 1, NULL, CODE(NOT_FOUND), ENOENT);
    expect_start_error(c, notexec, 1, NULL, CODE(PERMISSION_DENIED), EACCES);
    expect_start_error(c, ok, 1, &badcwd, CODE(NOT_FOUND), ENOENT);
    expect_start_error(c, ok, 1, &baduser, CODE(NOT_FOUND), ENOENT);
    expect_start_error(c, ok, 1, &nopath, CODE(NOT_FOUND), ENOENT); /* the request's PATH */
    /* Nothing was left behind. */
    ASSERT_EQ(zombies_settle(A.pid), 0);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(environment_cwd_and_user)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1, .cwd = "/tmp", .env_k = "GREETING", .env_v = "hi there"};
    uint64_t id;
    start_sh(c, "echo \"$GREETING\"; pwd; ls -l /proc/self/fd | grep -c ' -> ' ; "
                "grep SigIgn /proc/self/status",
             &o, &id);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT(memmem(k.data, k.len, "hi there\n/tmp\n", 14));
    /* 0, 1, 2 and the fd ls itself opens: no agent descriptor leaked. */
    ASSERT(memmem(k.data, k.len, "\n4\n", 3));
    ASSERT(memmem(k.data, k.len, "SigIgn:\t0000000000000000", 24));
    collected_free(&k);
    if (geteuid() == 0 && getpwnam("nobody")) {
        start_opts_t u = {.follow = 1, .user = "nobody"};
        start_sh(c, "id -u; echo $HOME $USER", &u, &id);
        memset(&k, 0, sizeof k);
        collect_until_done(c, id, &k);
        char want[64];
        snprintf(want, sizeof want, "%u\n", (unsigned)getpwnam("nobody")->pw_uid);
        ASSERT(memmem(k.data, k.len, want, strlen(want)));
        ASSERT(memmem(k.data, k.len, " nobody\n", 8));
        collected_free(&k);
    }
    sa_client_close(c);
    agent_stop(&A);
}

TEST(no_zombies_after_1000_short_processes)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    const char *argv[] = {"/bin/true"};
    /* 50 in flight at a time. */
    for (int round = 0; round < 20; round++) {
        uint64_t ids[50];
        for (int i = 0; i < 50; i++)
            ids[i] = start_send(c, argv, 1, NULL);
        for (int i = 0; i < 50; i++) {
            Response *r = recv_id(c, ids[i]);
            ASSERT_RESULT(r, STARTED);
            sa_response_free(r);
        }
    }
    ASSERT_EQ(zombies_settle(A.pid), 0);
    Sandbox__Agent__V1__GetInfo gi = SANDBOX__AGENT__V1__GET_INFO__INIT;
    Response *r = NULL;
    /* Reaped by the kernel's count is not yet finished by the agent's: the
     * last exits may still be draining their pipes. */
    for (int tries = 0; tries < 500; tries++) {
        sa_response_free(r);
        r = simple(c, OP(INFO), &gi);
        ASSERT_RESULT(r, INFO);
        if (r->info->running_processes == 0 && r->info->kept_processes == 1000)
            break;
        usleep(10000);
    }
    ASSERT_EQ(r->info->running_processes, 0);
    ASSERT_EQ(r->info->kept_processes, 1000);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(orphans_are_reaped)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    /* The background child outlives the shell, is re-parented to the
     * agent (a subreaper) and must be reaped when it exits. Its stdout is
     * /dev/null, so the shell's exit is not held back. */
    start_sh(c, "sleep 0.3 >/dev/null 2>&1 & echo $!", &o, &id);
    int orphan = read_pid_line(c, id);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT_EQ(k.exit_code, 0);
    usleep(100000);
    char path[64], buf[512] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", orphan);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        char st;
        if (rp && sscanf(rp + 2, "%c %d", &st, &ppid) == 2)
            ASSERT_EQ(ppid, A.pid);
    }
    ASSERT(gone_within(orphan, 3000));
    ASSERT_EQ(zombies_settle(A.pid), 0);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(grandchild_holding_the_pipe_does_not_hold_the_exit)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    start_sh(c, "sleep 30 & echo $!; echo done", &o, &id);
    int bg = read_pid_line(c, id);
    collected_t k = {0};
    collect_until_done(c, id, &k); /* returns long before 30 s */
    ASSERT(k.exited);
    ASSERT_EQ(k.exit_code, 0);
    kill(bg, SIGKILL);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(bad_input_gets_clear_errors)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    Response *r;
    r = send_signal(c, 0, SIGTERM, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = send_signal(c, 999999, SIGTERM, 0);
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    const char *sl[] = {"sleep", "30"};
    uint32_t pid = start_argv(c, sl, 2, NULL, NULL);
    r = send_signal(c, pid, -1, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = send_signal(c, pid, 1000, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = write_stdin(c, pid, "x", 1);
    ASSERT_ERROR(r, FAILED_PRECONDITION); /* stdin not piped */
    sa_response_free(r);
    Sandbox__Agent__V1__ResizePty rz = SANDBOX__AGENT__V1__RESIZE_PTY__INIT;
    rz.pid = pid;
    rz.rows = rz.cols = 10;
    r = simple(c, OP(RESIZE), &rz);
    ASSERT_ERROR(r, FAILED_PRECONDITION); /* not a pty */
    sa_response_free(r);
    Sandbox__Agent__V1__ForgetProcess fg = SANDBOX__AGENT__V1__FORGET_PROCESS__INIT;
    fg.pid = pid;
    r = simple(c, OP(FORGET), &fg);
    ASSERT_ERROR(r, FAILED_PRECONDITION); /* still running */
    sa_response_free(r);
    r = send_signal(c, pid, SIGKILL, 0);
    sa_response_free(r);

    /* A follow of a pid that never existed, and of pid 0. */
    collected_t k = {0};
    r = recv_id(c, follow_send(c, 999999, 0, 0, 0));
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    r = recv_id(c, follow_send(c, 0, 0, 0, 0));
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    (void)k;

    /* Missing command. */
    const char *empty[] = {""};
    expect_start_error(c, empty, 1, NULL, CODE(INVALID_ARGUMENT), 0);
    /* A huge argument list, and a 1 MiB environment value: too big for
     * exec, refused with E2BIG. */
    size_t n = 300000;
    const char **many = malloc((n + 1) * sizeof *many);
    many[0] = "true";
    for (size_t i = 1; i <= n; i++)
        many[i] = "xyzxyz";
    expect_start_error(c, many, n + 1, NULL, CODE(INVALID_ARGUMENT), E2BIG);
    free(many);
    char *big = malloc(1u << 20);
    memset(big, 'v', (1u << 20) - 1);
    big[(1u << 20) - 1] = 0;
    start_opts_t o = {.env_k = "BIG", .env_v = big};
    const char *tr[] = {"true"};
    expect_start_error(c, tr, 1, &o, CODE(INVALID_ARGUMENT), E2BIG);
    free(big);
    start_opts_t badkey = {.env_k = "A=B", .env_v = "x"};
    expect_start_error(c, tr, 1, &badkey, CODE(INVALID_ARGUMENT), 0);
    ping_ok(c);
    ASSERT(agent_alive(&A));
    sa_client_close(c);
    agent_stop(&A);
}

TEST(list_get_wait_forget)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.tag = "job-a"};
    uint32_t done = start_sh(c, "echo x; echo yy >&2", &o, NULL);
    const char *sl[] = {"sleep", "30"};
    uint32_t run = start_argv(c, sl, 2, NULL, NULL);
    Response *r = wait_exit(c, done);
    ASSERT_RESULT(r, EXIT);
    sa_response_free(r);

    Sandbox__Agent__V1__ListProcesses lp = SANDBOX__AGENT__V1__LIST_PROCESSES__INIT;
    r = simple(c, OP(LIST_PROCESSES), &lp);
    ASSERT_RESULT(r, PROCESSES);
    ASSERT_EQ(r->processes->n_processes, 1);
    ASSERT_EQ(r->processes->processes[0]->pid, run);
    ASSERT_STR_EQ(r->processes->processes[0]->command, "sleep");
    ASSERT_EQ(r->processes->processes[0]->n_args, 1);
    sa_response_free(r);
    lp.include_exited = 1;
    r = simple(c, OP(LIST_PROCESSES), &lp);
    ASSERT_EQ(r->processes->n_processes, 2);
    sa_response_free(r);

    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.pid = done;
    r = simple(c, OP(GET_PROCESS), &gp);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_STR_EQ(r->process->tag, "job-a");
    ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__EXITED);
    ASSERT_EQ(r->process->stdout_bytes, 2);
    ASSERT_EQ(r->process->stderr_bytes, 3);
    ASSERT(r->process->exit);
    ASSERT_EQ(r->process->exit->exit_code, 0);
    sa_response_free(r);

    Sandbox__Agent__V1__ForgetProcess fg = SANDBOX__AGENT__V1__FORGET_PROCESS__INIT;
    fg.pid = done;
    r = simple(c, OP(FORGET), &fg);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = simple(c, OP(GET_PROCESS), &gp);
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    r = send_signal(c, run, SIGKILL, 0);
    sa_response_free(r);
    r = wait_exit(c, run);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->signal, SIGKILL);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(kept_output_cap_drops_oldest_exited)
{
    agent_start(&A, "--max-kept-output", "1048576", NULL);
    sa_client_t *c = agent_connect(&A);
    uint32_t pids[6];
    for (int i = 0; i < 6; i++) {
        pids[i] = start_sh(c, "head -c 300000 /dev/zero", NULL, NULL);
        Response *r = wait_exit(c, pids[i]);
        sa_response_free(r);
    }
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.pid = pids[0];
    Response *r = simple(c, OP(GET_PROCESS), &gp);
    ASSERT_ERROR(r, NOT_FOUND); /* the oldest went */
    sa_response_free(r);
    gp.pid = pids[5];
    r = simple(c, OP(GET_PROCESS), &gp);
    ASSERT_RESULT(r, PROCESS);
    sa_response_free(r);
    r = info_call(c);
    ASSERT_LE(r->info->kept_output_bytes, 1048576);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&A);
}

/* GetProcess by tag; 0 when NOT_FOUND. */
static uint32_t pid_of_tag(sa_client_t *c, const char *tag)
{
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.tag = (char *)tag;
    Response *r = simple(c, OP(GET_PROCESS), &gp);
    uint32_t pid = 0;
    if (r->result_case == RES(ERROR))
        ASSERT_EQ(r->error->code, CODE(NOT_FOUND));
    else
        pid = r->process->pid;
    sa_response_free(r);
    return pid;
}

static void forget(sa_client_t *c, uint32_t pid)
{
    Sandbox__Agent__V1__ForgetProcess fg = SANDBOX__AGENT__V1__FORGET_PROCESS__INIT;
    fg.pid = pid;
    Response *r = simple(c, OP(FORGET), &fg);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
}

/* The tag index (proc_index.c) names what a walk of the table would: the
 * newest running record first, else the newest; and it stays right as
 * records exit, are forgotten and are evicted by the kept-output cap. */
TEST(tag_lookup_across_exit_forget_and_eviction)
{
    agent_start(&A, "--max-kept-output", "1048576", NULL);
    sa_client_t *c = agent_connect(&A);
    const char *sl[] = {"sleep", "30"}, *tr[] = {"true"};
    start_opts_t t = {.tag = "t"}, u = {.tag = "u"};

    ASSERT_EQ(pid_of_tag(c, "t"), 0);
    uint32_t a = start_argv(c, sl, 2, &t, NULL);
    uint32_t b = start_argv(c, tr, 1, &t, NULL);
    sa_response_free(wait_exit(c, b));
    ASSERT_EQ(pid_of_tag(c, "t"), a); /* running first, though older */
    uint32_t b2 = start_argv(c, tr, 1, &t, NULL);
    sa_response_free(wait_exit(c, b2));
    ASSERT_EQ(pid_of_tag(c, "t"), a);
    sa_response_free(send_signal(c, a, SIGKILL, 0));
    sa_response_free(wait_exit(c, a));
    ASSERT_EQ(pid_of_tag(c, "t"), b2); /* all exited: the newest */
    forget(c, b2);
    ASSERT_EQ(pid_of_tag(c, "t"), b);
    forget(c, b);
    ASSERT_EQ(pid_of_tag(c, "t"), a);
    forget(c, a);
    ASSERT_EQ(pid_of_tag(c, "t"), 0);

    /* Eviction: each run keeps 300 kB of a 1 MiB cap, so only the newest
     * three stay; "u" (the oldest) goes as a whole, "t" keeps its newest. */
    uint32_t first = start_sh(c, "head -c 300000 /dev/zero", &u, NULL);
    sa_response_free(wait_exit(c, first));
    ASSERT_EQ(pid_of_tag(c, "u"), first);
    uint32_t last = 0;
    for (int i = 0; i < 5; i++) {
        last = start_sh(c, "head -c 300000 /dev/zero", &t, NULL);
        sa_response_free(wait_exit(c, last));
    }
    ASSERT_EQ(pid_of_tag(c, "u"), 0);
    ASSERT_EQ(pid_of_tag(c, "t"), last);
    /* A tag met again after its group went away. */
    uint32_t again = start_argv(c, sl, 2, &u, NULL);
    ASSERT_EQ(pid_of_tag(c, "u"), again);
    sa_response_free(send_signal(c, again, SIGKILL, 0));
    sa_response_free(wait_exit(c, again));
    ASSERT_EQ(pid_of_tag(c, "u"), again);
    sa_client_close(c);
    agent_stop(&A);
}

/* The pid index doubles its buckets as the table grows past them: every
 * record is still found (and forgotten) by pid after the rehash. */
TEST(pid_lookup_after_the_index_grows)
{
    enum { N = 1300, BATCH = 50 };
    static uint32_t pids[N];
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    const char *argv[] = {"/bin/true"};
    for (int done = 0; done < N; done += BATCH) {
        uint64_t ids[BATCH];
        for (int i = 0; i < BATCH; i++)
            ids[i] = start_send(c, argv, 1, NULL);
        for (int i = 0; i < BATCH; i++) {
            Response *r = recv_id(c, ids[i]);
            ASSERT_RESULT(r, STARTED);
            pids[done + i] = r->started->pid;
            sa_response_free(r);
        }
    }
    for (int i = 0; i < N; i += 7) {
        Response *r = wait_exit(c, pids[i]);
        ASSERT_RESULT(r, EXIT);
        sa_response_free(r);
    }
    for (int i = 0; i < N; i += 7)
        forget(c, pids[i]);
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    for (int i = 0; i < N; i++) {
        gp.pid = pids[i];
        Response *r = simple(c, OP(GET_PROCESS), &gp);
        if (i % 7 == 0)
            ASSERT_ERROR(r, NOT_FOUND);
        else
            ASSERT_RESULT(r, PROCESS);
        sa_response_free(r);
    }
    sa_client_close(c);
    agent_stop(&A);
}

TEST(sandboxctl_run_status_and_output)
{
    agent_start(&A, NULL);
    char out[4096];
    const char *a1[] = {"run", "--env", "X=42", "--", "sh", "-c", "echo x=$X; exit 7", NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a1, out, sizeof out), 7);
    ASSERT_STR_EQ(out, "x=42\n");
    const char *a2[] = {"run", "--", "sh", "-c", "kill -9 $$", NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a2, out, sizeof out), 128 + 9);
    const char *a3[] = {"run", "--timeout", "0.2", "--", "sleep", "30", NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a3, out, sizeof out), 124); /* as timeout(1) */
    const char *a4[] = {"run", "--env", "PATH=/usr/bin:/bin", "--", "no-such-command-xyz", NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a4, out, sizeof out), 127);
    const char *a5[] = {"start", "--", "sleep", "30", NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a5, out, sizeof out), 0);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", atoi(out));
    const char *a6[] = {"kill", "-s", "KILL", pid, NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a6, out, sizeof out), 0);
    const char *a7[] = {"wait", pid, NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a7, out, sizeof out), 128 + 9);
    const char *a8[] = {"ps", "-a", NULL};
    ASSERT_EQ(ctl_stdout(A.addr, a8, out, sizeof out), 0);
    ASSERT(strstr(out, "sleep 30"));
    agent_stop(&A);
}

TEST(shutdown_stops_running_processes)
{
    agent_start(&A, "--kill-grace-ms", "300", NULL);
    sa_client_t *c = agent_connect(&A);
    const char *sl[] = {"sleep", "300"};
    start_opts_t o = {.follow = 1};
    uint64_t id;
    uint32_t p1 = start_argv(c, sl, 2, NULL, NULL);
    uint32_t p2 = start_sh(c, "trap '' TERM; echo up; while :; do sleep 0.05; done", &o, &id);
    ASSERT_EQ(read_pid_line(c, id), 0); /* "up" */
    sa_client_close(c);
    agent_stop(&A); /* exits 0, so no leak either */
    ASSERT(gone_within((pid_t)p1, 2000));
    ASSERT(gone_within((pid_t)p2, 2000));
}

TEST_MAIN(TEST_ENTRY(timeout_kills_the_shell_and_its_children),
          TEST_ENTRY(tag_lookup_across_exit_forget_and_eviction),
          TEST_ENTRY(pid_lookup_after_the_index_grows), TEST_ENTRY(timeout_escalates_to_sigkill),
          TEST_ENTRY(signal_leader_or_group), TEST_ENTRY(pty_echo_resize_and_ctrl_d),
          TEST_ENTRY(stdin_pipe_round_trip), TEST_ENTRY(exec_failures_are_synchronous_errors),
          TEST_ENTRY(environment_cwd_and_user), TEST_ENTRY_T(no_zombies_after_1000_short_processes, 240),
          TEST_ENTRY(orphans_are_reaped), TEST_ENTRY(grandchild_holding_the_pipe_does_not_hold_the_exit),
          TEST_ENTRY(bad_input_gets_clear_errors), TEST_ENTRY(list_get_wait_forget),
          TEST_ENTRY(kept_output_cap_drops_oldest_exited), TEST_ENTRY(sandboxctl_run_status_and_output),
          TEST_ENTRY(shutdown_stops_running_processes))
