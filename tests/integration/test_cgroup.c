/* test_cgroup.c - containment: every process in a cgroup v2 leaf of its own.
 *
 * The whole file runs in a mount namespace of its own with cgroup2 mounted
 * on a temporary directory; each test gives its agent a fresh root
 * (--cgroup-root MNT/sa-test-PID-N) and removes it afterwards, on failure
 * and on timeout too (atexit and SIGALRM), and main sweeps whatever is left
 * once all tests ran. Forking tests have hard counts (255 processes at most).
 * Without root or cgroup2 the cgroup tests are skipped, saying why; the
 * fallback tests (no cgroups) run everywhere. */
#include "harness.h"
#include "proc_helpers.h"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static char g_mnt[128];     /* the private cgroup2 mount; "" when unavailable */
static char g_skip[256];    /* why cgroup tests are skipped */
static char g_root[256];    /* this test's --cgroup-root */
static char g_rootrel[256]; /* the same, as /proc/PID/cgroup shows it */
static pid_t g_main_pid;
static char g_marker[320];   /* a bomb's processes carry it; killed at cleanup */

/* ------------------------------------------------------------ cleanup */

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    close(fd);
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static void rm_cgroup_tree(const char *path, int depth)
{
    DIR *d;
    struct dirent *de;
    if (rmdir(path) == 0 || errno == ENOENT || depth > 8)
        return;
    if (!(d = opendir(path)))
        return;
    while ((de = readdir(d))) {
        char sub[512];
        if (de->d_type != DT_DIR || de->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        rm_cgroup_tree(sub, depth + 1);
    }
    closedir(d);
    rmdir(path);
}

/* Kill everything under a test root, then remove it (the agent's own leaf
 * included: it is empty once the agent is gone). */
static void kill_and_remove(const char *root)
{
    char p[512];
    snprintf(p, sizeof p, "%s/workload/cgroup.freeze", root);
    write_str(p, "0");
    snprintf(p, sizeof p, "%s/cgroup.kill", root);
    for (int i = 0; i < 200; i++) {
        if (write_str(p, "1") < 0)
            break;
        rm_cgroup_tree(root, 0);
        if (access(root, F_OK) < 0)
            return;
        usleep(10000);
    }
}

/* Processes anywhere on the machine whose command line holds marker, each
 * sent sig unless it is 0; -1 when /proc cannot be read. A zombie has an
 * empty command line: it is dead already. */
static int signal_marked(const char *marker, int sig)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;
    size_t mlen = strlen(marker);
    if (!d)
        return -1;
    while ((de = readdir(d))) {
        char path[300], buf[4096];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        for (ssize_t i = 0; i + (ssize_t)mlen <= len; i++) {
            if (!memcmp(buf + i, marker, mlen)) {
                if (sig)
                    kill(atoi(de->d_name), sig);
                n++;
                break;
            }
        }
    }
    closedir(d);
    return n;
}

/* SIGKILL to every process whose command line holds marker (the bombs
 * of the tests without cgroups, were the agent to miss them). */
static void kill_marked(const char *marker)
{
    for (int round = 0; round < 20 && signal_marked(marker, SIGKILL) > 0; round++)
        usleep(10000);
}

static void test_cleanup(void)
{
    if (g_marker[0])
        kill_marked(g_marker);
    if (g_root[0])
        kill_and_remove(g_root);
}

static void on_alarm(int sig)
{
    test_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Whatever a crashed test left (main, after every test). */
static void sweep_roots(void)
{
    char prefix[64];
    DIR *d;
    struct dirent *de;
    if (!g_mnt[0] || !(d = opendir(g_mnt)))
        return;
    snprintf(prefix, sizeof prefix, "sa-test-%d-", (int)g_main_pid);
    while ((de = readdir(d))) {
        char p[512];
        if (strncmp(de->d_name, prefix, strlen(prefix)))
            continue;
        snprintf(p, sizeof p, "%s/%s", g_mnt, de->d_name);
        kill_and_remove(p);
    }
    closedir(d);
}

/* ------------------------------------------------------------ helpers */

/* 1 when cgroup tests can run here; else prints why and returns 0. */
static int cg_setup(void)
{
    static int n;
    if (!g_mnt[0]) {
        printf("    skipped: %s\n", g_skip);
        return 0;
    }
    snprintf(g_root, sizeof g_root, "%s/sa-test-%d-%d-%d", g_mnt, (int)g_main_pid,
             (int)getpid(), n);
    snprintf(g_rootrel, sizeof g_rootrel, "/sa-test-%d-%d-%d", (int)g_main_pid, (int)getpid(),
             n++);
    atexit(test_cleanup);
    signal(SIGALRM, on_alarm);
    return 1;
}

static void cg_agent_start(agent_t *a, const char *extra)
{
    agent_start(a, "--cgroup-root", g_root, "--kill-grace-ms", "300", extra, (char *)NULL);
}

/* A small file's text, in a buffer the next call reuses. */
static char *text_of(const char *path)
{
    static char buf[65536];
    slurp(path, buf, sizeof buf);
    return buf;
}

static int hello_has(agent_t *a, const char *cap)
{
    sa_client_t *c = agent_connect_raw(a);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Hello h = SANDBOX__AGENT__V1__HELLO__INIT;
    int found = 0;
    h.protocol_version = 1;
    req.op_case = OP(HELLO);
    req.hello = &h;
    Response *r = call(c, &req);
    ASSERT_RESULT(r, HELLO);
    for (size_t i = 0; i < r->hello->n_capabilities; i++)
        found |= !strcmp(r->hello->capabilities[i], cap);
    sa_response_free(r);
    sa_client_close(c);
    return found;
}

static Response *get_process(sa_client_t *c, uint32_t pid)
{
    Sandbox__Agent__V1__GetProcess g = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    g.pid = pid;
    Response *r = simple(c, OP(GET_PROCESS), &g);
    ASSERT_RESULT(r, PROCESS);
    return r;
}

static Response *tree_signal(sa_client_t *c, uint32_t pid, int sig)
{
    Sandbox__Agent__V1__SendSignal s = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    s.pid = pid;
    s.signal = sig;
    s.tree = 1;
    return simple(c, OP(SIGNAL), &s);
}

static Response *freeze_op(sa_client_t *c, int freeze, uint32_t thaw_after_ms)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FreezeProcesses f = SANDBOX__AGENT__V1__FREEZE_PROCESSES__INIT;
    Sandbox__Agent__V1__ThawProcesses t = SANDBOX__AGENT__V1__THAW_PROCESSES__INIT;
    if (freeze) {
        f.thaw_after_ms = thaw_after_ms;
        req.op_case = OP(FREEZE_PROCESSES);
        req.freeze_processes = &f;
    } else {
        req.op_case = OP(THAW_PROCESSES);
        req.thaw_processes = &t;
    }
    return call(c, &req);
}

/* Processes anywhere on the machine whose command line holds marker. */
static int count_marked(const char *marker)
{
    int n = signal_marked(marker, 0);
    if (n < 0)
        FAIL("opendir /proc: %s", strerror(errno));
    return n;
}

/* Wait until no process carries marker (10 s at most); returns the count. */
static int marked_gone(const char *marker)
{
    int n = 0;
    for (int i = 0; i < 1000; i++) {
        if ((n = count_marked(marker)) == 0)
            return 0;
        usleep(10000);
    }
    return n;
}

/* pid is dead (gone, or a zombie nobody reaped yet). */
static int pid_dead(pid_t pid)
{
    char path[64];
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *rp = strrchr(text_of(path), ')');
    return !rp || rp[2] == 'Z' || rp[2] == 'X';
}

static int wait_dead(pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        if (pid_dead(pid))
            return 1;
        usleep(10000);
    }
    return 0;
}

/* Read a pid a test process wrote into path (5 s at most). */
static pid_t read_pid_file(const char *path)
{
    for (int i = 0; i < 500; i++) {
        char *s = text_of(path);
        if (s[0] && strchr(s, '\n'))
            return (pid_t)atoi(s);
        usleep(10000);
    }
    FAIL("no pid in %s", path);
}

static uint64_t cpu_nano(sa_client_t *c, uint32_t pid)
{
    Response *r = get_process(c, pid);
    uint64_t v = r->process->cpu_user_nano + r->process->cpu_system_nano;
    sa_response_free(r);
    return v;
}

/* The bounded bomb: a binary tree of depth 7 (255 processes), each node
 * starting its two children (in new sessions with setsid when asked)
 * before it becomes `sleep MARKER`. */
static void write_bomb(const char *dir, const char *marker, int use_setsid, char *script,
                       size_t len)
{
    char body[1024];
    snprintf(script, len, "%s/bomb.sh", dir);
    snprintf(body, sizeof body,
             "d=$1\n"
             "if [ \"$d\" -gt 0 ]; then\n"
             "  %s/bin/sh %s $((d - 1)) &\n"
             "  %s/bin/sh %s $((d - 1)) &\n"
             "fi\n"
             "exec sleep %s\n",
             use_setsid ? "setsid " : "", script, use_setsid ? "setsid " : "", script, marker);
    int fd = open(script, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
}

/* ------------------------------------------------------------ tests */

TEST(leaf_per_process_then_removed)
{
    agent_t a;
    collected_t k;
    char leaf[512];
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    ASSERT(hello_has(&a, "cgroups"));
    sa_client_t *c = agent_connect(&a);

    uint32_t pid = start_sh(c, "cat /proc/self/cgroup; sleep 0.3", NULL, NULL);
    Response *r = get_process(c, pid);
    ASSERT(strncmp(r->process->cgroup, g_rootrel, strlen(g_rootrel)) == 0);
    ASSERT(strstr(r->process->cgroup, "/workload/p-"));
    ASSERT_GE(r->process->pids_current, 1);
    snprintf(leaf, sizeof leaf, "%s%s", g_mnt, r->process->cgroup);
    sa_response_free(r);
    ASSERT_EQ(access(leaf, F_OK), 0);
    collect_all(c, pid, &k);
    /* The child ran in that leaf from the start: cat saw it. */
    char want[300];
    snprintf(want, sizeof want, "0::%s\n", leaf + strlen(g_mnt));
    k.data = realloc(k.data, k.len + 1);
    k.data[k.len] = 0;
    ASSERT(strstr(k.data, want));
    collected_free(&k);
    /* Removed after the exit. */
    for (int i = 0; i < 500 && access(leaf, F_OK) == 0; i++)
        usleep(10000);
    ASSERT_NE(access(leaf, F_OK), 0);

    /* A background child keeps the leaf until it exits too. */
    pid = start_sh(c, "sleep 2 </dev/null >/dev/null 2>&1 & exit 0", NULL, NULL);
    r = get_process(c, pid);
    snprintf(leaf, sizeof leaf, "%s%s", g_mnt, r->process->cgroup);
    sa_response_free(r);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    sa_response_free(r);
    ASSERT_EQ(access(leaf, F_OK), 0);
    for (int i = 0; i < 500 && access(leaf, F_OK) == 0; i++)
        usleep(10000);
    ASSERT_NE(access(leaf, F_OK), 0);

    /* Two processes, two leaves. */
    uint32_t p1 = start_sh(c, "sleep 5", NULL, NULL), p2 = start_sh(c, "sleep 5", NULL, NULL);
    Response *r1 = get_process(c, p1), *r2 = get_process(c, p2);
    ASSERT(strcmp(r1->process->cgroup, r2->process->cgroup) != 0);
    sa_response_free(r1);
    sa_response_free(r2);
    sa_client_close(c);
    agent_stop(&a);
    /* The agent's workload subtree goes with it. */
    char work[400];
    snprintf(work, sizeof work, "%s/workload", g_root);
    ASSERT_NE(access(work, F_OK), 0);
}

static void setsid_survivor_script(char *script, size_t len, const char *pidfile)
{
    /* A grandchild in a session of its own that ignores SIGTERM. */
    snprintf(script, len,
             "setsid sh -c 'trap \"\" TERM; echo $$ > %s; while :; do sleep 1; done' & "
             "sleep 1000",
             pidfile);
}

TEST(timeout_kills_setsid_grandchild)
{
    agent_t a;
    char script[512], pidfile[300];
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    snprintf(pidfile, sizeof pidfile, "%s/gc.pid", a.dir);
    setsid_survivor_script(script, sizeof script, pidfile);
    start_opts_t o = {0};
    o.timeout_ms = 500;
    o.kill_grace_ms = 200;
    uint32_t pid = start_sh(c, script, &o, NULL);
    pid_t gc = read_pid_file(pidfile);
    Response *r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT(r->exit->timed_out);
    sa_response_free(r);
    ASSERT(wait_dead(gc));
    sa_client_close(c);
    agent_stop(&a);
}

TEST(shutdown_kills_setsid_grandchild)
{
    agent_t a;
    char script[512], pidfile[300];
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    snprintf(pidfile, sizeof pidfile, "%s/gc.pid", a.dir);
    setsid_survivor_script(script, sizeof script, pidfile);
    start_sh(c, script, NULL, NULL);
    pid_t gc = read_pid_file(pidfile);
    ASSERT(!pid_dead(gc));
    sa_client_close(c);
    /* Also a grandchild whose shell exited before the shutdown. */
    c = agent_connect(&a);
    char pidfile2[300], script2[512];
    snprintf(pidfile2, sizeof pidfile2, "%s/gc2.pid", a.dir);
    snprintf(script2, sizeof script2,
             "setsid sh -c 'trap \"\" TERM; echo $$ > %s; while :; do sleep 1; done' "
             "</dev/null >/dev/null 2>&1 &",
             pidfile2);
    uint32_t pid2 = start_sh(c, script2, NULL, NULL);
    pid_t gc2 = read_pid_file(pidfile2);
    Response *r = wait_exit(c, pid2);
    ASSERT_RESULT(r, EXIT);
    sa_response_free(r);
    ASSERT(!pid_dead(gc2));
    sa_client_close(c);
    agent_stop(&a);
    ASSERT(pid_dead(gc));
    ASSERT(pid_dead(gc2));
}

static void start_bomb(sa_client_t *c, agent_t *a, const char *marker, int use_setsid,
                       uint32_t *pid)
{
    char script[300];
    snprintf(g_marker, sizeof g_marker, "%s", marker);
    if (!g_root[0]) {
        atexit(test_cleanup);
        signal(SIGALRM, on_alarm);
    }
    write_bomb(a->dir, marker, use_setsid, script, sizeof script);
    const char *argv[] = {"/bin/sh", script, "7"};
    *pid = start_argv(c, argv, 3, NULL, NULL);
}

TEST(fork_bomb_gone_after_group_kill)
{
    agent_t a;
    char marker[64];
    uint32_t pid;
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    snprintf(marker, sizeof marker, "7%d.%d", (int)getpid() % 1000, (int)time(NULL) % 100000);
    start_bomb(c, &a, marker, 1, &pid);
    /* Kill it while it is still growing. */
    for (int i = 0; i < 500 && count_marked(marker) < 40; i++)
        usleep(2000);
    ASSERT_GE(count_marked(marker), 1);
    Response *r = send_signal(c, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(marked_gone(marker), 0);
    /* And nothing comes back. */
    usleep(300000);
    ASSERT_EQ(count_marked(marker), 0);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->signal, SIGKILL);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(tree_signal_reaches_setsid_descendant)
{
    agent_t a;
    char script[1000], pidfile[300], gotfile[300];
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    snprintf(pidfile, sizeof pidfile, "%s/gc.pid", a.dir);
    snprintf(gotfile, sizeof gotfile, "%s/got", a.dir);
    snprintf(script, sizeof script,
             "trap : USR1; setsid sh -c 'trap \"echo usr1 > %s; exit 0\" USR1; echo $$ > %s; "
             "while :; do sleep 0.05; done' & while :; do sleep 1; done",
             gotfile, pidfile);
    uint32_t pid = start_sh(c, script, NULL, NULL);
    pid_t gc = read_pid_file(pidfile);
    /* The group signal does not reach another session... */
    Response *r = send_signal(c, pid, SIGUSR1, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    usleep(200000);
    ASSERT_NE(access(gotfile, F_OK), 0);
    /* ...the tree signal does. */
    r = tree_signal(c, pid, SIGUSR1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT(wait_dead(gc));
    ASSERT_STR_EQ(text_of(gotfile), "usr1\n");
    /* The shell caught it and runs on; a tree SIGKILL ends everything. */
    r = tree_signal(c, pid, SIGKILL);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->signal, SIGKILL);
    sa_response_free(r);
    /* Exited: a tree signal is refused as for any signal. */
    r = tree_signal(c, pid, SIGTERM);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(freeze_stops_busy_loop_ping_answers)
{
    agent_t a;
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "while :; do :; done", NULL, NULL);
    uint64_t t0 = cpu_nano(c, pid);
    for (int i = 0; i < 200 && cpu_nano(c, pid) < t0 + 20000000ull; i++)
        usleep(10000);
    ASSERT_GT(cpu_nano(c, pid), t0);

    Response *r = freeze_op(c, 1, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    char events[400];
    snprintf(events, sizeof events, "%s/workload/cgroup.events", g_root);
    ASSERT(strstr(text_of(events), "frozen 1"));
    uint64_t f1 = cpu_nano(c, pid);
    for (int i = 0; i < 20; i++) {
        ping_ok(c);
        usleep(15000);
    }
    uint64_t f2 = cpu_nano(c, pid);
    ASSERT_EQ(f2, f1);
    /* Nothing starts into a frozen workload. */
    const char *argv[] = {"/bin/true"};
    uint64_t id = start_send(c, argv, 1, NULL);
    r = recv_id(c, id);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    /* Freezing twice is fine. */
    r = freeze_op(c, 1, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);

    r = freeze_op(c, 0, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    for (int i = 0; i < 300 && cpu_nano(c, pid) <= f2 + 10000000ull; i++)
        usleep(10000);
    ASSERT_GT(cpu_nano(c, pid), f2 + 10000000ull);

    /* thaw_after_ms thaws by itself. */
    r = freeze_op(c, 1, 200);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    for (int i = 0; i < 300 && strstr(text_of(events), "frozen 1"); i++)
        usleep(10000);
    ASSERT(strstr(text_of(events), "frozen 0"));

    /* Shutdown of a frozen workload still ends it. */
    r = freeze_op(c, 1, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
    ASSERT(pid_dead((pid_t)pid));
}

TEST(exit_reports_cpu_time)
{
    agent_t a;
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    start_opts_t o = {0};
    o.timeout_ms = 400;
    uint32_t pid = start_sh(c, "while :; do :; done", &o, NULL);
    Response *r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT(r->exit->timed_out);
    ASSERT_GT(r->exit->cpu_user_nano + r->exit->cpu_system_nano, 20000000ull);
    ASSERT(!r->exit->oom_killed);
    sa_response_free(r);
    r = get_process(c, pid);
    ASSERT_GT(r->process->cpu_user_nano, 0);
    ASSERT_EQ(r->process->pids_current, 0);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

static uint64_t start_with_limits(sa_client_t *c, const Sandbox__Agent__V1__Limits *lim)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    sp.command = "/bin/true";
    sp.limits = (Sandbox__Agent__V1__Limits *)lim;
    req.op_case = OP(START);
    req.start = &sp;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

/* On this kind of machine the controllers are bound to cgroup v1: limits
 * are refused naming the controller, never ignored. Where a controller is
 * enabled, that limit must be taken instead. */
TEST(limit_without_controller_refused)
{
    agent_t a;
    char ctl[400];
    if (!cg_setup())
        return;
    cg_agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    snprintf(ctl, sizeof ctl, "%s/workload/cgroup.subtree_control", g_root);
    int have_pids = strstr(text_of(ctl), "pids") != NULL;
    Sandbox__Agent__V1__Limits lim = SANDBOX__AGENT__V1__LIMITS__INIT;
    lim.pids_max = 16;
    Response *r = recv_id(c, start_with_limits(c, &lim));
    if (have_pids) {
        ASSERT_RESULT(r, STARTED);
    } else {
        ASSERT_ERROR(r, FAILED_PRECONDITION);
        ASSERT(strstr(r->error->message, "pids"));
    }
    sa_response_free(r);
    lim.pids_max = 0;
    lim.cpu_weight = 20000;
    r = recv_id(c, start_with_limits(c, &lim));
    ASSERT_EQ(r->result_case, RES(ERROR));
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

/* ------------------------------------------------------------ fallback */

TEST(no_cgroups_fallback_kills_group_repeatedly)
{
    agent_t a;
    char marker[64];
    uint32_t pid;
    agent_start(&a, "--no-cgroups", "--kill-grace-ms", "300", (char *)NULL);
    ASSERT(!hello_has(&a, "cgroups"));
    sa_client_t *c = agent_connect(&a);
    /* A bomb whose every process is in a session of its own, still forking
     * while it is killed: kill(-pgid) alone reaches only the first shell. */
    snprintf(marker, sizeof marker, "8%d.%d", (int)getpid() % 1000, (int)time(NULL) % 100000);
    start_bomb(c, &a, marker, 1, &pid);
    for (int i = 0; i < 500 && count_marked(marker) < 40; i++)
        usleep(2000);
    Response *r = send_signal(c, pid, SIGKILL, 1);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(marked_gone(marker), 0);
    usleep(300000);
    ASSERT_EQ(count_marked(marker), 0);

    /* A timeout reaches a grandchild in another session that ignores
     * SIGTERM, though its shell is gone when the SIGKILL comes. */
    char script[512], pidfile[300];
    snprintf(pidfile, sizeof pidfile, "%s/gc.pid", a.dir);
    setsid_survivor_script(script, sizeof script, pidfile);
    snprintf(g_marker, sizeof g_marker, "%s", pidfile); /* in its command line */
    start_opts_t o = {0};
    o.timeout_ms = 300;
    o.kill_grace_ms = 200;
    uint32_t tp = start_sh(c, script, &o, NULL);
    pid_t gc = read_pid_file(pidfile);
    r = wait_exit(c, tp);
    ASSERT_RESULT(r, EXIT);
    ASSERT(r->exit->timed_out);
    sa_response_free(r);
    ASSERT(wait_dead(gc));

    /* What needs cgroups says so. */
    Sandbox__Agent__V1__Limits lim = SANDBOX__AGENT__V1__LIMITS__INIT;
    lim.memory_max_bytes = 64 << 20;
    r = recv_id(c, start_with_limits(c, &lim));
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT(strstr(r->error->message, "memory"));
    sa_response_free(r);
    uint32_t p2 = start_sh(c, "sleep 5", NULL, NULL);
    r = tree_signal(c, p2, SIGTERM);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    r = freeze_op(c, 1, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    r = get_process(c, p2);
    ASSERT_STR_EQ(r->process->cgroup, "");
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST(cgroup_root_not_cgroup2_falls_back)
{
    agent_t a;
    char dir[] = "/tmp/sa-notcg-XXXXXX";
    ASSERT(mkdtemp(dir));
    agent_start(&a, "--cgroup-root", dir, (char *)NULL);
    ASSERT(!hello_has(&a, "cgroups"));
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "exit 3", NULL, NULL);
    Response *r = wait_exit(c, pid);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->exit_code, 3);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
    rm_cgroup_tree(dir, 0); /* nothing was made in it: an empty directory */
    ASSERT_NE(access(dir, F_OK), 0);
}

/* ------------------------------------------------------------ main */

static void private_cgroup2(void)
{
    struct statfs sf;
    if (geteuid() != 0) {
        snprintf(g_skip, sizeof g_skip, "needs root (a mount namespace and cgroup2)");
        return;
    }
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        snprintf(g_skip, sizeof g_skip, "no mount namespace: %s", strerror(errno));
        return;
    }
    snprintf(g_mnt, sizeof g_mnt, "/tmp/sa-cgmnt-XXXXXX");
    if (!mkdtemp(g_mnt)) {
        snprintf(g_skip, sizeof g_skip, "mkdtemp: %s", strerror(errno));
        g_mnt[0] = 0;
        return;
    }
    if (mount("none", g_mnt, "cgroup2", 0, NULL) < 0 || statfs(g_mnt, &sf) < 0 ||
        sf.f_type != CGROUP2_SUPER_MAGIC || access("/proc/self/cgroup", R_OK) < 0) {
        snprintf(g_skip, sizeof g_skip, "cannot mount cgroup2: %s", strerror(errno));
        rmdir(g_mnt);
        g_mnt[0] = 0;
        return;
    }
    char kill_file[300];
    /* The root cgroup has no cgroup.kill: look at a scratch child. */
    char probe[200];
    snprintf(probe, sizeof probe, "%s/sa-test-%d-probe", g_mnt, (int)g_main_pid);
    if (mkdir(probe, 0755) == 0) {
        snprintf(kill_file, sizeof kill_file, "%s/cgroup.kill", probe);
        int ok = access(kill_file, F_OK) == 0;
        rmdir(probe);
        if (!ok) {
            snprintf(g_skip, sizeof g_skip, "the kernel has no cgroup.kill (before 5.14)");
            umount(g_mnt);
            rmdir(g_mnt);
            g_mnt[0] = 0;
        }
    }
}

int main(int argc, char **argv)
{
    static const test_entry_t tests[] = {
        TEST_ENTRY(leaf_per_process_then_removed),
        TEST_ENTRY(timeout_kills_setsid_grandchild),
        TEST_ENTRY(shutdown_kills_setsid_grandchild),
        TEST_ENTRY(fork_bomb_gone_after_group_kill),
        TEST_ENTRY(tree_signal_reaches_setsid_descendant),
        TEST_ENTRY(freeze_stops_busy_loop_ping_answers),
        TEST_ENTRY(exit_reports_cpu_time),
        TEST_ENTRY(limit_without_controller_refused),
        TEST_ENTRY(no_cgroups_fallback_kills_group_repeatedly),
        TEST_ENTRY(cgroup_root_not_cgroup2_falls_back),
    };
    g_main_pid = getpid();
    private_cgroup2();
    int rc = test_run_all(tests, sizeof tests / sizeof tests[0], argc, argv);
    sweep_roots();
    if (g_mnt[0]) {
        umount2(g_mnt, MNT_DETACH);
        rmdir(g_mnt);
    }
    return rc;
}
