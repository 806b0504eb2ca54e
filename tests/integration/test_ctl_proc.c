/* test_ctl_proc.c - sandboxctl's process commands and its conventions
 * through the real binary: logs never lose output silently, tags name
 * processes, --json is JSON lines everywhere, every command has help,
 * --timeout is 124, and what happens to the remote group when sandboxctl
 * is terminated or detached. */
#define TMPDIR_PREFIX "/tmp/sa-ctlp-"
#include "ctl_helpers.h"
#include "tmpdir.h"

#include <grp.h>
#include <pwd.h>

static agent_t A;

/* Poll `ps -a --json` until the process tagged tag has exited (bounded). */
static void wait_exited(const char *tag)
{
    ctl_out_t o;
    CTL(&o, A.addr, "wait", tag);
    ctl_out_free(&o);
}

static int alive(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

/* Read a pid a test's shell wrote to path (waits for it, bounded). */
static pid_t read_pid(const char *path)
{
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        int pid = 0;
        if (f) {
            int ok = fscanf(f, "%d", &pid) == 1;
            fclose(f);
            if (ok && pid > 0)
                return pid;
        }
        usleep(10000);
    }
    FAIL("no pid in %s", path);
}

TEST(logs_of_an_overflowed_window_say_so_and_fail)
{
    agent_start(&A, NULL);
    ctl_out_t o;
    /* 6,000,005 bytes and then a last line, through the default 4 MiB window. */
    CTL(&o, A.addr, "start", "--tag", "flood", "--", "sh", "-c",
        "head -c 6000005 /dev/zero | tr '\\0' a; echo; echo last; echo oops >&2");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    wait_exited("flood");
    CTL(&o, A.addr, "logs", "flood");
    ASSERT_EQ(o.status, 1);
    ASSERT_LT(o.out_len, 6000005);
    ASSERT(o.out_len > 1000000);
    ASSERT(strstr(o.err, "were dropped before this point (window 4.0 MiB)"));
    ASSERT(strstr(o.err, "oops\n"));
    ASSERT(memmem(o.out, o.out_len, "\nlast\n", 6));
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "--allow-gaps", "flood");
    ASSERT_EQ(o.status, 0);
    ASSERT(strstr(o.err, "were dropped"));
    ctl_out_free(&o);
    /* As events: the gap is one, every line parses, the data adds up. */
    CTL(&o, A.addr, "--json", "logs", "--allow-gaps", "flood");
    ASSERT_EQ(o.status, 0);
    json_lines_ok(o.out, o.out_len, -1);
    /* From byte 0 the agent knows the split: the dropped bytes were stdout. */
    ASSERT(strstr(o.out, "{\"event\":\"gap\",\"stream\":\"stdout\",\"skipped_bytes\":"));
    ASSERT(strstr(o.out, "\\nlast\\n\"}\n"));
    ASSERT(strstr(o.out, "{\"event\":\"exit\",\"exit_code\":0,"));
    ctl_out_free(&o);
    /* Only stderr: nothing of it was dropped. */
    CTL(&o, A.addr, "logs", "--stream", "stderr", "flood");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.err, "oops\n");
    ASSERT_EQ(o.out_len, 0);
    ctl_out_free(&o);
    /* --tail: the last lines only, and the gap is before them, so unsaid. */
    CTL(&o, A.addr, "logs", "--tail", "1", "--stream", "stdout", "flood");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.out, "last\n");
    ASSERT_EQ(o.err_len, 0);
    ctl_out_free(&o);
    agent_stop(&A);
}

TEST(run_says_when_it_fell_behind_the_window)
{
    agent_start(&A, "--output-window", "65536", NULL);
    /* sandboxctl's stdout is not read for a while: it stops reading the
     * agent, falls behind the small window, and must say so. */
    const char *args[] = {"run", "--", "sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x", NULL};
    int out_r, err_r;
    pid_t pid = ctl_spawn(A.addr, args, -1, &out_r, &err_r);
    sleep(2);
    ctl_out_t o;
    ctl_collect(pid, out_r, err_r, &o);
    ASSERT_EQ(o.status, 0);
    ASSERT_LT(o.out_len, 20000000);
    ASSERT(strstr(o.err, "were dropped here"));
    ctl_out_free(&o);
    agent_stop(&A);
}

TEST(logs_tail_since_timestamps_stream_and_tags)
{
    agent_start(&A, NULL);
    ctl_out_t o;
    CTL(&o, A.addr, "start", "--tag", "lines", "--", "sh", "-c",
        "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    wait_exited("lines");
    CTL(&o, A.addr, "logs", "--tail", "2", "--stream", "stdout", "lines");
    ASSERT_EQ(o.status, 0);
    ASSERT_STR_EQ(o.out, "out4\nout5\n");
    ASSERT_EQ(o.err_len, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "--stream", "stderr", "lines");
    ASSERT_STR_EQ(o.err, "err1\nerr2\nerr3\nerr4\nerr5\n");
    ASSERT_EQ(o.out_len, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "-t", "--tail", "1", "--stream", "stdout", "lines");
    /* 2026-11-30T16:08:54.952351232Z out5 */
    ASSERT_EQ(o.out_len, 36);
    ASSERT_EQ(o.out[4], '-');
    ASSERT_EQ(o.out[10], 'T');
    ASSERT_EQ(o.out[29], 'Z');
    ASSERT_STR_EQ(o.out + 31, "out5\n");
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "--since", "1h", "--stream", "stdout", "lines");
    ASSERT_STR_EQ(o.out, "out1\nout2\nout3\nout4\nout5\n");
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "--since", "2999-01-01T00:00:00Z", "lines");
    ASSERT_EQ(o.status, 0);
    ASSERT_EQ(o.out_len + o.err_len, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "--since", "yesterday-ish", "lines");
    ASSERT_EQ(o.status, 2);
    ASSERT(strstr(o.err, "yesterday-ish"));
    ctl_out_free(&o);
    /* A tag works wherever a pid does. */
    CTL(&o, A.addr, "start", "-i", "--tag", "cat", "--", "cat");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    {
        int in[2];
        ASSERT_EQ(pipe(in), 0);
        ASSERT_EQ(write(in[1], "hello\n", 6), 6);
        close(in[1]);
        const char *args[] = {"write", "cat", NULL};
        int out_r, err_r;
        pid_t pid = ctl_spawn(A.addr, args, in[0], &out_r, &err_r);
        close(in[0]);
        ctl_collect(pid, out_r, err_r, &o);
        ASSERT_EQ(o.status, 0);
        ctl_out_free(&o);
    }
    CTL(&o, A.addr, "wait", "cat");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "cat");
    ASSERT_STR_EQ(o.out, "hello\n");
    ctl_out_free(&o);
    CTL(&o, A.addr, "start", "--tag", "sleeper", "--", "sleep", "60");
    ctl_out_free(&o);
    CTL(&o, A.addr, "kill", "-s", "KILL", "sleeper");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "wait", "sleeper");
    ASSERT_EQ(o.status, 128 + 9);
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs", "no-such-tag");
    ASSERT_EQ(o.status, 1);
    ASSERT(strstr(o.err, "no process has pid or tag 'no-such-tag'"));
    ctl_out_free(&o);
    /* forget drops it. */
    CTL(&o, A.addr, "forget", "sleeper");
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "ps", "-a");
    ASSERT(!strstr(o.out, "sleep 60"));
    ASSERT(strstr(o.out, "cat"));
    ctl_out_free(&o);
    agent_stop(&A);
}

TEST(every_json_output_is_json_lines)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    CTL(&o, A.addr, "--json", "ping", "3");
    json_lines_ok(o.out, o.out_len, 3);
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "info");
    json_lines_ok(o.out, o.out_len, 1);
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "start", "--tag", "j", "--", "sh", "-c",
        "printf 'text\\n'; printf '\\377\\376bin'; exit 3");
    json_lines_ok(o.out, o.out_len, 1);
    ASSERT(strstr(o.out, "{\"pid\":"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "start", "--", "sh", "-c", "sleep 60", "with arg");
    json_lines_ok(o.out, o.out_len, 1);
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "wait", "j");
    ASSERT_EQ(o.status, 3);
    json_lines_ok(o.out, o.out_len, 1);
    ASSERT(strstr(o.out, "\"exit_code\":3"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "ps", "-a");
    ASSERT_EQ(json_lines_ok(o.out, o.out_len, -1), 2);
    ASSERT(strstr(o.out, "\"argv\":[\"sh\",\"-c\",\"sleep 60\",\"with arg\"]"));
    ASSERT(strstr(o.out, "\"state\":\"running\",\"exit_code\":null"));
    ctl_out_free(&o);
    /* Two streams: two events whatever the timing, then the exit. */
    CTL(&o, A.addr, "--json", "run", "--", "sh", "-c", "echo hi; printf '\\377' >&2; exit 4");
    ASSERT_EQ(o.status, 4);
    ASSERT_EQ(json_lines_ok(o.out, o.out_len, -1), 3);
    ASSERT(strstr(o.out, "\"data\":\"hi\\n\""));
    ASSERT(strstr(o.out, "\"data_base64\":\"/w==\""));
    ASSERT(strstr(o.out, "{\"event\":\"exit\",\"exit_code\":4,"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "logs", "j");
    json_lines_ok(o.out, o.out_len, -1);
    ASSERT(strstr(o.out, "\"data\":\"text\\n\""));
    ASSERT(strstr(o.out, "\"data_base64\":\"//5iaW4=\"")); /* \377\376bin */
    ctl_out_free(&o);
    ASSERT_EQ(mkdir(P("d"), 0755), 0);
    ASSERT_EQ(symlink("x\ny", P("d/odd\tname")), 0);
    CTL(&o, A.addr, "--json", "ls", "-l", P("d"));
    json_lines_ok(o.out, o.out_len, 1);
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "stat", P("d"), P("d/odd\tname"));
    json_lines_ok(o.out, o.out_len, 2);
    ctl_out_free(&o);
    /* watch: a few events, then the command is stopped. */
    {
        const char *args[] = {"--json", "watch", P("d"), NULL};
        int out_r, err_r;
        pid_t pid = ctl_spawn(A.addr, args, -1, &out_r, &err_r);
        /* Until the watch is in place and reports (bounded: 20 s). */
        int seen = 0;
        for (int i = 0; i < 200 && !seen; i++) {
            char name[32];
            snprintf(name, sizeof name, "d/new%d", i);
            int fd = open(P(name), O_CREAT | O_WRONLY, 0644);
            ASSERT(fd >= 0);
            close(fd);
            struct pollfd pf = {.fd = out_r, .events = POLLIN};
            seen = poll(&pf, 1, 100) == 1;
        }
        ASSERT(seen);
        ASSERT_EQ(rename(P("d/new0"), P("d/renamed")), 0);
        /* Until the rename's line has come (bounded: 30 s), then stop it. */
        char *acc = NULL;
        size_t len = 0, cap = 0;
        ctl_append(&acc, &len, &cap, "", 0);
        for (int i = 0; i < 300; i++) {
            const char *rn = strstr(acc, "\"kind\":\"RENAME\"");
            if (rn && strchr(rn, '\n'))
                break;
            struct pollfd pf = {.fd = out_r, .events = POLLIN};
            char buf[4096];
            ssize_t n = poll(&pf, 1, 100) == 1 ? read(out_r, buf, sizeof buf) : 0;
            ASSERT(n >= 0 && !(n == 0 && pf.revents));
            ctl_append(&acc, &len, &cap, buf, (size_t)n);
        }
        kill(pid, SIGTERM);
        ctl_collect(pid, out_r, err_r, &o);
        ctl_append(&acc, &len, &cap, o.out, o.out_len);
        ASSERT_GE(json_lines_ok(acc, len, -1), 2);
        ASSERT(strstr(acc, "\"kind\":\"CREATE\""));
        ASSERT(strstr(acc, "\"kind\":\"RENAME\""));
        free(acc);
        ctl_out_free(&o);
    }
    agent_stop(&A);
    tmpdir_remove();
}

TEST(every_command_has_help)
{
    ctl_out_t o;
    const char *addr = "unix:/nonexistent/sock"; /* help needs no agent */
    CTL(&o, addr, "--help");
    ASSERT_EQ(o.status, 0);
    /* The commands, as the overview lists them (so new ones are checked too). */
    const char *list = strstr(o.out, "commands:\n");
    ASSERT(list);
    char names[64][32];
    int n = 0;
    for (const char *p = list + 10; *p == ' ' && n < 64;) {
        if (sscanf(p, " %31s", names[n]) == 1)
            n++;
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
    }
    ASSERT_GE(n, 18);
    ctl_out_free(&o);
    for (int i = 0; i < n; i++) {
        char want[96];
        snprintf(want, sizeof want, "usage: sandboxctl %.31s", names[i]);
        const char *forms[3][3] = {{names[i], "--help", NULL}, {names[i], "-h", NULL},
                                   {"help", names[i], NULL}};
        for (int f = 0; f < 3; f++) {
            const char *args[] = {forms[f][0], forms[f][1], NULL};
            ctl_run(addr, args, &o);
            if (o.status != 0 || strncmp(o.out, want, strlen(want)))
                FAIL("sandboxctl %s %s: exit %d, out '%.80s', err '%.200s'", args[0], args[1],
                     o.status, o.out, o.err);
            ctl_out_free(&o);
        }
    }
    /* --help after the command line of run is the command's own. */
    agent_start(&A, NULL);
    CTL(&o, A.addr, "run", "--", "sh", "-c", "echo $0 $1", "x", "--help");
    ASSERT_STR_EQ(o.out, "x --help\n");
    ctl_out_free(&o);
    /* Usage errors say what was wrong. */
    CTL(&o, A.addr, "ping", "abc");
    ASSERT_EQ(o.status, 2);
    ASSERT(strstr(o.err, "'abc' is not a count"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "logs");
    ASSERT_EQ(o.status, 2);
    ASSERT(strstr(o.err, "needs a pid or a tag"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "run", "--bogus", "true");
    ASSERT_EQ(o.status, 2);
    ASSERT(strstr(o.err, "unknown option '--bogus'"));
    ctl_out_free(&o);
    agent_stop(&A);
}

TEST(timeout_exits_124_and_says_so)
{
    agent_start(&A, NULL);
    ctl_out_t o;
    CTL(&o, A.addr, "run", "--timeout", "1", "--", "sleep", "30");
    ASSERT_EQ(o.status, 124);
    ASSERT(strstr(o.err, "sandboxctl: run: timed out after 1 s"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "run", "--timeout", "10", "--", "sh", "-c", "exit 5");
    ASSERT_EQ(o.status, 5);
    ctl_out_free(&o);
    agent_stop(&A);
}

/* Until sandboxctl catches SIGINT, SIGTERM and SIGHUP (it sets its
 * handlers once the process has started), at most ~10 s. */
static void wait_handlers(pid_t pid)
{
    char path[64], line[256];
    unsigned long long want = (1ull << (SIGINT - 1)) | (1ull << (SIGTERM - 1)) |
                              (1ull << (SIGHUP - 1)), cgt = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        cgt = 0;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "SigCgt: %llx", &cgt) == 1)
                break;
        if (f)
            fclose(f);
        if ((cgt & want) == want)
            return;
        usleep(10000);
    }
    FAIL("sandboxctl %d never caught SIGINT/SIGTERM/SIGHUP (SigCgt %llx)", (int)pid, cgt);
}

/* run a shell that ignores SIGINT/SIGTERM and has a child that does too;
 * returns sandboxctl's pid and the two remote pids. */
static pid_t run_stubborn(int keep, pid_t *sh, pid_t *child, int *out_r, int *err_r)
{
    char script[1400];
    unlink(P("sh.pid"));
    unlink(P("child.pid"));
    snprintf(script, sizeof script,
             "trap '' INT TERM HUP; sleep 300 & echo $! > %s; echo $$ > %s; wait; wait",
             P("child.pid"), P("sh.pid"));
    const char *args[] = {"run", keep ? "--keep" : "--", keep ? "--" : "sh",
                          keep ? "sh" : "-c", keep ? "-c" : script, keep ? script : NULL, NULL};
    pid_t pid = ctl_spawn(A.addr, args, -1, out_r, err_r);
    *sh = read_pid(P("sh.pid"));
    *child = read_pid(P("child.pid"));
    wait_handlers(pid);
    return pid;
}

TEST(sigterm_or_sighup_to_run_leaves_no_remote_process)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    int sigs[] = {SIGTERM, SIGHUP};
    for (int i = 0; i < 2; i++) {
        pid_t sh, child;
        int out_r, err_r;
        pid_t pid = run_stubborn(0, &sh, &child, &out_r, &err_r);
        ASSERT(alive(sh) && alive(child));
        kill(pid, sigs[i]);
        ctl_collect(pid, out_r, err_r, &o);
        ASSERT_EQ(o.status, 128 + sigs[i]);
        ctl_out_free(&o);
        ASSERT(gone_within(sh, 10000));
        ASSERT(gone_within(child, 10000));
    }
    /* --keep: it stays, and sandboxctl says which pid. */
    pid_t sh, child;
    int out_r, err_r;
    pid_t pid = run_stubborn(1, &sh, &child, &out_r, &err_r);
    kill(pid, SIGTERM);
    ctl_collect(pid, out_r, err_r, &o);
    ASSERT_EQ(o.status, 128 + SIGTERM);
    ASSERT(strstr(o.err, "keeps running (--keep)"));
    ctl_out_free(&o);
    usleep(200000);
    ASSERT(alive(sh) && alive(child));
    kill(-sh, SIGKILL);
    ASSERT(gone_within(sh, 10000));
    agent_stop(&A);
    tmpdir_remove();
}

TEST(second_ctrl_c_within_a_second_detaches)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    pid_t sh, child;
    int out_r, err_r;
    pid_t pid = run_stubborn(0, &sh, &child, &out_r, &err_r);
    kill(pid, SIGINT); /* forwarded; ignored by the shell */
    usleep(300000);    /* apart, so that the two are not merged into one */
    kill(pid, SIGINT);
    ctl_collect(pid, out_r, err_r, &o);
    ASSERT_EQ(o.status, 130);
    ASSERT(strstr(o.err, "detached"));
    ctl_out_free(&o);
    ASSERT(alive(sh) && alive(child));
    kill(-sh, SIGKILL);
    ASSERT(gone_within(sh, 10000));
    agent_stop(&A);
    tmpdir_remove();
}

TEST(commands_get_the_users_home_environment)
{
    setenv("OLDPWD", "/agent-oldpwd", 1);
    setenv("_", "/agent-underscore", 1);
    setenv("SA_AGENT_MARK", "agent", 1);
    agent_start(&A, NULL);
    ctl_out_t o;
    struct passwd *me = getpwuid(geteuid());
    ASSERT(me);
    char want[1024];
    CTL(&o, A.addr, "run", "--", "sh", "-c", "pwd; echo $HOME; echo $USER $LOGNAME; echo $SHELL");
    ASSERT_EQ(o.status, 0);
    /* A home that does not exist leaves the command in "/" (as ssh does). */
    struct stat st;
    const char *dir = stat(me->pw_dir, &st) == 0 ? me->pw_dir : "/";
    snprintf(want, sizeof want, "%s\n%s\n%s %s\n%s\n", dir, me->pw_dir, me->pw_name, me->pw_name,
             me->pw_shell);
    ASSERT_STR_EQ(o.out, want);
    ctl_out_free(&o);
    /* The agent's own shell variables do not leak (its PWD, OLDPWD, _);
     * the rest of its environment is its own user's to keep. */
    CTL(&o, A.addr, "run", "--", "printenv", "OLDPWD");
    ASSERT_EQ(o.status, 1);
    ctl_out_free(&o);
    CTL(&o, A.addr, "run", "--", "printenv", "_");
    ASSERT_EQ(o.status, 1);
    ctl_out_free(&o);
    CTL(&o, A.addr, "run", "--", "printenv", "SA_AGENT_MARK");
    ASSERT_STR_EQ(o.out, "agent\n");
    ctl_out_free(&o);
    if (geteuid() == 0 && getpwnam("nobody")) {
        CTL(&o, A.addr, "run", "--user", "nobody", "--", "printenv", "SA_AGENT_MARK");
        ASSERT_EQ(o.status, 1); /* another user gets a login environment */
        ctl_out_free(&o);
    }
    if (geteuid() == 0 && getpwnam("nobody")) {
        struct passwd *pw = getpwnam("nobody");
        char home[256], shell[256];
        snprintf(home, sizeof home, "%s", pw->pw_dir);
        snprintf(shell, sizeof shell, "%s", pw->pw_shell);
        CTL(&o, A.addr, "run", "--user", "nobody", "--", "/bin/sh", "-c",
            "pwd; echo $HOME; echo $USER $LOGNAME; echo $SHELL; echo $PATH");
        ASSERT_EQ(o.status, 0);
        dir = stat(home, &st) == 0 ? home : "/";
        snprintf(want, sizeof want, "%s\n%s\nnobody nobody\n%s\n/usr/local/bin:/usr/bin:/bin\n", dir,
                 home, shell);
        ASSERT_STR_EQ(o.out, want);
        ctl_out_free(&o);
        /* --env and --cwd still decide. */
        CTL(&o, A.addr, "run", "--user", "nobody", "--cwd", "/tmp", "--env", "PATH=/bin", "--env",
            "HOME=/elsewhere", "--", "/bin/sh", "-c", "pwd; echo $HOME $PATH");
        ASSERT_STR_EQ(o.out, "/tmp\n/elsewhere /bin\n");
        ctl_out_free(&o);
    }
    agent_stop(&A);
}

TEST(refused_socket_says_whose_it_is)
{
    struct passwd *pw = getpwnam("nobody");
    if (geteuid() != 0 || !pw)
        return; /* needs root, to be someone else */
    agent_start(&A, NULL);
    int pe[2];
    ASSERT_EQ(pipe(pe), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pe[1], 2);
        if (setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
            _exit(99);
        execl(CTL_BIN, CTL_BIN, "--connect", A.sock, "ping", (char *)NULL);
        _exit(98);
    }
    close(pe[1]);
    char err[1024];
    ssize_t n = read(pe[0], err, sizeof err - 1);
    err[n > 0 ? n : 0] = 0;
    close(pe[0]);
    int st;
    waitpid(pid, &st, 0);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 1);
    char want[400];
    snprintf(want, sizeof want,
             "Permission denied (the agent at %s runs as root; use sudo or --connect)", A.sock);
    if (!strstr(err, want))
        FAIL("stderr: %s", err);
    agent_stop(&A);
}

TEST_MAIN(TEST_ENTRY_T(logs_of_an_overflowed_window_say_so_and_fail, 120),
          TEST_ENTRY(run_says_when_it_fell_behind_the_window),
          TEST_ENTRY(logs_tail_since_timestamps_stream_and_tags),
          TEST_ENTRY_T(every_json_output_is_json_lines, 120),
          TEST_ENTRY_T(every_command_has_help, 120),
          TEST_ENTRY(timeout_exits_124_and_says_so),
          TEST_ENTRY(sigterm_or_sighup_to_run_leaves_no_remote_process),
          TEST_ENTRY(second_ctrl_c_within_a_second_detaches),
          TEST_ENTRY(commands_get_the_users_home_environment),
          TEST_ENTRY(refused_socket_says_whose_it_is))
