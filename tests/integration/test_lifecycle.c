/* Integration tests: Quiesce, Thaw, Restored, WatchLifecycle, and noticing
 * a restore (the VM generation ID uevent, the kernel's VM fork line in
 * /dev/kmsg, a jump of the wall clock, the RTC ahead of the wall clock).
 *
 * Needs root: each test makes a private mount namespace, formats a 16 MiB
 * ext4 image and loop-mounts it there; only that file system is ever
 * frozen. A freeze never outlives a test: the agent thaws after a short
 * thaw_after, the test thaws its mount at exit (atexit) and on its
 * timeout (SIGALRM), and the namespace (with the mount and its loop
 * device) goes when the test's processes do. The clock is stepped only to
 * the time the test reads just before asking (a step of the round trip). */
#define TMPDIR_PREFIX "/tmp/sa-lc-"
#include "harness.h"
#include "proc_helpers.h"
#include "tmpdir.h"

#include <linux/capability.h>
#include <linux/fs.h>
#include <dirent.h>
#include <limits.h>
#include <linux/netlink.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define LK(x) SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__##x

static char g_mnt[128];
static int g_mfd = -1;

static void thaw_mine(void)
{
    if (g_mfd >= 0)
        ioctl(g_mfd, FITHAW, 0);
}

static void on_alarm(int sig)
{
    (void)sig;
    thaw_mine();
    static const char msg[] = "  FAIL: timeout (the test's mount was thawed)\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    _exit(1);
}

static void cleanup(void)
{
    thaw_mine();
    if (g_mfd >= 0) {
        close(g_mfd);
        g_mfd = -1;
    }
    if (!g_dir[0])
        return;
    /* Whatever a failed test left mounted in its scratch directory goes
     * before the directory does. */
    sh("for m in %s/*; do umount -l \"$m\" 2>/dev/null; done; true", g_dir);
    tmpdir_remove();
    g_dir[0] = 0;
}

/* A test that passes ends with _exit(), which runs no atexit handler:
 * each test cleans up itself when it returns. */
#define LC_TEST(name)                                                                 \
    static void lc_##name(void);                                                      \
    TEST(name)                                                                        \
    {                                                                                 \
        lc_##name();                                                                  \
        cleanup();                                                                    \
    }                                                                                 \
    static void lc_##name(void)

/* A 16 MiB ext4 image mounted at name, in this test's own mount namespace
 * (made on the first call). */
static void mount_image(const char *name, const char *mnt, int ro)
{
    if (sh("truncate -s 16M %s/%s.img && mkfs.ext4 -q -F %s/%s.img", g_dir, name, g_dir, name))
        FAIL("mkfs.ext4 failed (is e2fsprogs installed?)");
    mkdir(mnt, 0755);
    if (sh("mount -o loop%s %s/%s.img %s", ro ? ",ro" : "", g_dir, name, mnt))
        FAIL("mount -o loop %s failed", mnt);
}

/* Root, a private mount namespace, a scratch directory and the image at
 * g_mnt. Returns 0 (after printing why) when the test cannot run here. */
static int setup(void)
{
    if (geteuid() != 0) {
        printf("    skipped: freezing a file system needs root\n");
        return 0;
    }
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        printf("    skipped: no private mount namespace (%s)\n", strerror(errno));
        return 0;
    }
    tmpdir_make();
    atexit(cleanup);
    signal(SIGALRM, on_alarm);
    snprintf(g_mnt, sizeof g_mnt, "%s", P("mnt"));
    mount_image("img", g_mnt, 0);
    g_mfd = open(g_mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g_mfd < 0)
        FAIL("open %s: %s", g_mnt, strerror(errno));
    return 1;
}

/* 1 when the test's mount is frozen now (FIFREEZE answers EBUSY). */
static int mnt_frozen(void)
{
    if (ioctl(g_mfd, FIFREEZE, 0) == 0) {
        ioctl(g_mfd, FITHAW, 0);
        return 0;
    }
    return errno == EBUSY;
}

/* ------------------------------------------------------------ requests */

static Response *quiesce(sa_client_t *c, const char *const *mounts, size_t n, uint32_t thaw_ms,
                         int dry)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Quiesce q = SANDBOX__AGENT__V1__QUIESCE__INIT;
    q.mounts = (char **)mounts;
    q.n_mounts = n;
    q.thaw_after_ms = thaw_ms;
    q.dry_run = dry;
    req.op_case = OP(QUIESCE);
    req.quiesce = &q;
    return call(c, &req);
}

static Response *thaw(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Thaw t = SANDBOX__AGENT__V1__THAW__INIT;
    req.op_case = OP(THAW);
    req.thaw = &t;
    return call(c, &req);
}

static Response *write_file(sa_client_t *c, const char *path, const char *data)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WriteFile w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = (char *)path;
    w.data.data = (uint8_t *)data;
    w.data.len = strlen(data);
    req.op_case = OP(WRITE_FILE);
    req.write_file = &w;
    return call(c, &req);
}

static uint64_t watch_send(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchLifecycle w = SANDBOX__AGENT__V1__WATCH_LIFECYCLE__INIT;
    req.op_case = OP(WATCH_LIFECYCLE);
    req.watch_lifecycle = &w;
    if (sa_client_send(c, &req) < 0)
        FAIL("send watch_lifecycle");
    /* A Ping on the same connection after it: once answered, the watch is
     * registered (requests are handled in order). */
    ping_ok(c);
    return req.id;
}

/* The next lifecycle event of the watch (fails after 20 s). */
static Response *next_event(sa_client_t *c, uint64_t id)
{
    Response *r = NULL;
    int rc = sa_client_recv_id(c, id, &r, 20000);
    if (rc < 0)
        FAIL("no lifecycle event: %s", strerror(-rc));
    ASSERT_RESULT(r, LIFECYCLE);
    ASSERT(!r->done);
    return r;
}

static void expect_event(sa_client_t *c, uint64_t id, int kind, const char *source)
{
    Response *r = next_event(c, id);
    if ((int)r->lifecycle->kind != kind || strcmp(r->lifecycle->source, source))
        FAIL("expected event %d from %s, got %d from %s", kind, source,
             (int)r->lifecycle->kind, r->lifecycle->source);
    sa_response_free(r);
}

/* Run a shell command through the agent and return its output. */
static char *run_out(sa_client_t *c, const char *script)
{
    collected_t k;
    uint32_t pid = start_sh(c, script, NULL, NULL);
    collect_all(c, pid, &k);
    ASSERT(k.exited);
    char *s = strndup(k.data ? k.data : "", k.len);
    collected_free(&k);
    return s;
}

static void write_hook(const char *dir, const char *name, const char *body)
{
    char path[512];
    sh("mkdir -p %s", dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        FAIL("%s: %s", path, strerror(errno));
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, 0755);
}

/* A post-restore hook that touches P("post-ran"). */
static void hook_touches_post_ran(void)
{
    char post[256], line[512];
    snprintf(post, sizeof post, "%s/post-restore.d", P("hooks"));
    snprintf(line, sizeof line, "touch %s", P("post-ran"));
    write_hook(post, "10-mark", line);
}

/* Freeze the test's mount for a minute through c; w's lifecycle watch
 * (wid) reports it. */
static void freeze_watched(sa_client_t *c, sa_client_t *w, uint64_t wid)
{
    const char *m[] = {g_mnt};
    Response *r = quiesce(c, m, 1, 60000, 0);
    ASSERT_RESULT(r, QUIESCED);
    sa_response_free(r);
    expect_event(w, wid, LK(QUIESCED), "request");
}

/* The first restore, noticed from source: the watch reports the thaw, then
 * RESTORED; the mount is thawed and the post-restore hook has run. */
static void expect_restore(sa_client_t *w, uint64_t wid, const char *source)
{
    expect_event(w, wid, LK(THAWED), "restore");
    Response *r = next_event(w, wid);
    ASSERT_EQ(r->lifecycle->kind, LK(RESTORED));
    ASSERT_STR_EQ(r->lifecycle->source, source);
    ASSERT_EQ(r->lifecycle->restores, 1);
    sa_response_free(r);
    ASSERT(!mnt_frozen());
    ASSERT(access(P("post-ran"), F_OK) == 0);
}

/* The --clock-test-file: "REALTIME MONOTONIC BOOTTIME" in nanoseconds, and
 * the RTC in whole seconds unless rtc < 0; replaced by a rename, so the
 * agent never reads half a line. */
static void write_clocks(const char *path, long long rt, long long mono, long long boot,
                         long long rtc)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        FAIL("%s: %s", tmp, strerror(errno));
    if (rtc < 0)
        fprintf(f, "%lld %lld %lld\n", rt, mono, boot);
    else
        fprintf(f, "%lld %lld %lld %lld\n", rt, mono, boot, rtc);
    fclose(f);
    if (rename(tmp, path) < 0)
        FAIL("rename: %s", strerror(errno));
}

/* ------------------------------------------------------------ tests */

LC_TEST(quiesce_freezes_refuses_writes_and_thaws)
{
    if (!setup())
        return;
    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), NULL);
    sa_client_t *c = agent_connect(&a);
    const char *m[] = {g_mnt};
    char path[256];

    Response *r = quiesce(c, m, 1, 60000, 0);
    ASSERT_RESULT(r, QUIESCED);
    ASSERT_EQ(r->quiesced->n_frozen, 1);
    ASSERT_STR_EQ(r->quiesced->frozen[0], g_mnt);
    ASSERT_EQ(r->quiesced->thaw_after_ms, 60000);
    sa_response_free(r);
    ASSERT(mnt_frozen());

    /* A process that writes there waits for the thaw. */
    snprintf(path, sizeof path, "echo data > %s/f && echo written", g_mnt);
    uint32_t pid = start_sh(c, path, NULL, NULL);

    /* The agent keeps answering: Ping, a listing and a stat of the frozen
     * file system, a write elsewhere. */
    double t0 = now_ms();
    for (int i = 0; i < 20; i++)
        ping_ok(c);
    ASSERT_LT(now_ms() - t0, 10000.0);
    r = write_file(c, P("elsewhere"), "x");
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);

    /* Writes there are refused at once. */
    snprintf(path, sizeof path, "%s/g", g_mnt);
    t0 = now_ms();
    r = write_file(c, path, "y");
    ASSERT_ERROR(r, UNAVAILABLE);
    ASSERT(strstr(r->error->message, "file system frozen"));
    sa_response_free(r);
    snprintf(path, sizeof path, "%s/new/deeper/g", g_mnt);
    r = write_file(c, path, "y");
    ASSERT_ERROR(r, UNAVAILABLE);
    sa_response_free(r);
    ASSERT_LT(now_ms() - t0, 10000.0);
    {
        Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
        snprintf(path, sizeof path, "%s/d", g_mnt);
        md.path = path;
        r = simple(c, OP(MKDIR), &md);
        ASSERT_ERROR(r, UNAVAILABLE);
        sa_response_free(r);
        Sandbox__Agent__V1__Remove rm = SANDBOX__AGENT__V1__REMOVE__INIT;
        snprintf(path, sizeof path, "%s/lost+found", g_mnt);
        rm.path = path;
        r = simple(c, OP(REMOVE), &rm);
        ASSERT_ERROR(r, UNAVAILABLE);
        sa_response_free(r);
        Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
        ld.path = g_mnt;
        r = simple(c, OP(LIST_DIR), &ld);
        ASSERT_EQ(r->result_case, RES(ENTRIES));
        sa_response_free(r);
    }

    /* Info says what is frozen; a second Quiesce is refused. */
    r = info_call(c);
    ASSERT_EQ(r->info->n_frozen, 1);
    ASSERT_STR_EQ(r->info->frozen[0], g_mnt);
    sa_response_free(r);
    r = quiesce(c, m, 1, 0, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);

    /* The writer has not got through. */
    {
        Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
        gp.pid = pid;
        r = simple(c, OP(GET_PROCESS), &gp);
        ASSERT_RESULT(r, PROCESS);
        ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING);
        ASSERT_EQ(r->process->stdout_bytes, 0);
        sa_response_free(r);
    }

    r = thaw(c);
    ASSERT_RESULT(r, THAWED);
    ASSERT_EQ(r->thawed->n_thawed, 1);
    ASSERT_STR_EQ(r->thawed->thawed[0], g_mnt);
    sa_response_free(r);
    ASSERT(!mnt_frozen());
    collected_t k;
    collect_all(c, pid, &k);
    ASSERT_EQ(k.exit_code, 0);
    ASSERT_EQ(k.len, 8);
    ASSERT_MEM_EQ(k.data, "written\n", 8);
    collected_free(&k);
    snprintf(path, sizeof path, "%s/g", g_mnt);
    r = write_file(c, path, "y");
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);
    r = info_call(c);
    ASSERT_EQ(r->info->n_frozen, 0);
    sa_response_free(r);
    /* A Thaw with nothing frozen answers an empty list. */
    r = thaw(c);
    ASSERT_RESULT(r, THAWED);
    ASSERT_EQ(r->thawed->n_thawed, 0);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

LC_TEST(freeze_thaws_by_itself)
{
    if (!setup())
        return;
    agent_t a;
    /* The flag sets the default; the request's value wins. */
    agent_start(&a, "--thaw-after-ms", "1000", "--hooks-dir", P("hooks"), NULL);
    sa_client_t *c = agent_connect(&a), *w = agent_connect(&a);
    uint64_t wid = watch_send(w);
    const char *m[] = {g_mnt};

    Response *r = quiesce(c, m, 1, 0, 0);
    ASSERT_RESULT(r, QUIESCED);
    ASSERT_EQ(r->quiesced->thaw_after_ms, 1000);
    sa_response_free(r);
    r = next_event(w, wid);
    ASSERT_EQ(r->lifecycle->kind, LK(QUIESCED));
    ASSERT_EQ(r->lifecycle->n_mounts, 1);
    ASSERT_STR_EQ(r->lifecycle->mounts[0], g_mnt);
    sa_response_free(r);
    expect_event(w, wid, LK(THAWED), "timer");
    ASSERT(!mnt_frozen());

    r = quiesce(c, m, 1, 1500, 0);
    ASSERT_RESULT(r, QUIESCED);
    ASSERT_EQ(r->quiesced->thaw_after_ms, 1500);
    sa_response_free(r);
    expect_event(w, wid, LK(QUIESCED), "request");
    expect_event(w, wid, LK(THAWED), "timer");
    ASSERT(!mnt_frozen());

    r = quiesce(c, m, 1, 600001, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    sa_client_close(w);
    sa_client_close(c);
    agent_stop(&a);
}

LC_TEST(shutdown_thaws)
{
    if (!setup())
        return;
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    const char *m[] = {g_mnt};
    Response *r = quiesce(c, m, 1, 600000, 0);
    ASSERT_RESULT(r, QUIESCED);
    sa_response_free(r);
    ASSERT(mnt_frozen());
    sa_client_close(c);
    agent_stop(&a);
    ASSERT(!mnt_frozen());
}

LC_TEST(failing_pre_checkpoint_hook_fails_quiesce)
{
    if (!setup())
        return;
    char pre[256], line[512];
    snprintf(pre, sizeof pre, "%s/pre-checkpoint.d", P("hooks"));
    snprintf(line, sizeof line, "echo \"$1 $SANDBOX_AGENT_HOOK\" > %s", P("ran-10"));
    write_hook(pre, "10-flush", line);
    write_hook(pre, "20-db", "echo starting; echo 'db: cannot flush' >&2; exit 3");
    snprintf(line, sizeof line, "touch %s", P("ran-30"));
    write_hook(pre, "30-never", line);
    /* Not run: writable by others. */
    snprintf(line, sizeof line, "touch %s", P("ran-05"));
    write_hook(pre, "05-open", line);
    chmod(P("hooks/pre-checkpoint.d/05-open"), 0757);

    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), NULL);
    sa_client_t *c = agent_connect(&a);
    const char *m[] = {g_mnt};
    Response *r = quiesce(c, m, 1, 20000, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT(strstr(r->error->message, "20-db"));
    ASSERT(strstr(r->error->message, "exit status 3"));
    ASSERT(strstr(r->error->message, "db: cannot flush"));
    sa_response_free(r);
    ASSERT(!mnt_frozen());
    char *got = NULL;
    size_t n = 0;
    FILE *f = fopen(P("ran-10"), "r");
    ASSERT(f);
    ASSERT(getline(&got, &n, f) > 0);
    fclose(f);
    ASSERT_STR_EQ(got, "pre-checkpoint pre-checkpoint\n");
    free(got);
    ASSERT(access(P("ran-30"), F_OK) < 0);
    ASSERT(access(P("ran-05"), F_OK) < 0);

    /* With the failing hook gone the freeze goes ahead. */
    unlink(P("hooks/pre-checkpoint.d/20-db"));
    r = quiesce(c, m, 1, 20000, 0);
    ASSERT_RESULT(r, QUIESCED);
    sa_response_free(r);
    ASSERT(access(P("ran-30"), F_OK) == 0);
    r = thaw(c);
    ASSERT_RESULT(r, THAWED);
    sa_response_free(r);

    /* A hook that outlives its time limit is killed and fails the call. */
    write_hook(pre, "40-slow", "sleep 30");
    sa_client_close(c);
    agent_stop(&a);
    agent_start(&a, "--hooks-dir", P("hooks"), "--hook-timeout-ms", "300", NULL);
    c = agent_connect(&a);
    r = quiesce(c, m, 1, 20000, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT(strstr(r->error->message, "40-slow"));
    ASSERT(strstr(r->error->message, "time limit"));
    sa_response_free(r);
    ASSERT(!mnt_frozen());
    sa_client_close(c);
    agent_stop(&a);
}

LC_TEST(unfreezable_mounts_fail_and_undo)
{
    if (!setup())
        return;
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    char tmpfs[256];
    snprintf(tmpfs, sizeof tmpfs, "%s", P("tmpfs"));
    mkdir(tmpfs, 0755);
    if (mount("tmpfs", tmpfs, "tmpfs", 0, "size=1m") < 0)
        FAIL("mount tmpfs: %s", strerror(errno));

    /* The image is mounted after /proc, so it is frozen first; the
     * failure at /proc thaws it again. */
    const char *m1[] = {"/proc", g_mnt};
    Response *r = quiesce(c, m1, 2, 20000, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT(strstr(r->error->message, "'/proc'"));
    ASSERT_EQ(r->error->os_errno, EOPNOTSUPP);
    sa_response_free(r);
    ASSERT(!mnt_frozen());

    const char *m2[] = {tmpfs};
    r = quiesce(c, m2, 1, 20000, 0);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);

    char sub[300];
    snprintf(sub, sizeof sub, "%s/lost+found", g_mnt);
    const char *m3[] = {sub};
    r = quiesce(c, m3, 1, 20000, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "not a mount point"));
    sa_response_free(r);
    const char *m4[] = {"relative"};
    r = quiesce(c, m4, 1, 20000, 0);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);

    /* Nothing is left frozen: a freeze of the image works. */
    const char *m5[] = {g_mnt};
    r = quiesce(c, m5, 1, 20000, 0);
    ASSERT_RESULT(r, QUIESCED);
    sa_response_free(r);
    r = thaw(c);
    ASSERT_RESULT(r, THAWED);
    ASSERT_EQ(r->thawed->n_thawed, 1);
    sa_response_free(r);
    umount2(tmpfs, MNT_DETACH);
    sa_client_close(c);
    agent_stop(&a);
}

LC_TEST(automatic_choice_of_mounts)
{
    if (!setup())
        return;
    char ro[256], tmpfs[256], bind[256];
    snprintf(ro, sizeof ro, "%s", P("ro"));
    snprintf(tmpfs, sizeof tmpfs, "%s", P("tmpfs"));
    snprintf(bind, sizeof bind, "%s", P("bind"));
    mount_image("img2", ro, 1);
    mkdir(tmpfs, 0755);
    mkdir(bind, 0755);
    if (mount("tmpfs", tmpfs, "tmpfs", 0, "size=1m") < 0 ||
        mount(g_mnt, bind, NULL, MS_BIND, NULL) < 0)
        FAIL("mount: %s", strerror(errno));
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    /* A dry run: what a Quiesce with no mounts would freeze (the machine's
     * own disks are in the list, so nothing here really freezes). */
    Response *r = quiesce(c, NULL, 0, 0, 1);
    ASSERT_RESULT(r, QUIESCED);
    int saw_mnt = 0;
    for (size_t i = 0; i < r->quiesced->n_frozen; i++) {
        const char *p = r->quiesced->frozen[i];
        if (!strcmp(p, g_mnt))
            saw_mnt = 1;
        if (!strcmp(p, ro) || !strcmp(p, tmpfs) || !strcmp(p, bind) || !strcmp(p, "/proc") ||
            !strcmp(p, "/sys") || !strncmp(p, "/dev", 4))
            FAIL("dry run lists %s", p);
        /* Mounted later first: the image before anything mounted before it. */
        if (!strcmp(p, "/"))
            ASSERT(saw_mnt);
    }
    ASSERT(saw_mnt);
    ASSERT_EQ(r->quiesced->sync_nanos, 0);
    sa_response_free(r);
    ASSERT(!mnt_frozen());
    umount2(bind, MNT_DETACH);
    umount2(tmpfs, MNT_DETACH);
    umount2(ro, MNT_DETACH);
    sa_client_close(c);
    agent_stop(&a);
}

/* The log may live on the frozen file system, and so may a socket: the
 * agent neither blocks on its log nor needs to write to either. */
LC_TEST(log_and_socket_on_the_frozen_fs)
{
    if (!setup())
        return;
    agent_t a;
    char log[160], sock[160], listen[200], readyfd[16];
    int pfd[2];
    snprintf(log, sizeof log, "%s/agent.log", g_mnt);
    snprintf(sock, sizeof sock, "%s/agent.sock", g_mnt);
    snprintf(listen, sizeof listen, "unix:%s", sock);
    memset(&a, 0, sizeof a);
    snprintf(a.dir, sizeof a.dir, "%s", P("agent"));
    mkdir(a.dir, 0755);
    snprintf(a.sock, sizeof a.sock, "%s/a.sock", a.dir);
    snprintf(a.addr, sizeof a.addr, "unix:%s", a.sock);
    snprintf(a.log, sizeof a.log, "%s", log);
    if (pipe(pfd) < 0)
        FAIL("pipe");
    snprintf(readyfd, sizeof readyfd, "%d", pfd[1]);
    a.pid = fork();
    if (a.pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        close(pfd[0]);
        execl(AGENT_BIN, AGENT_BIN, "--listen", a.addr, "--listen", listen, "--ready-fd",
              readyfd, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char buf[16];
    ASSERT_GT(read(pfd[0], buf, sizeof buf), 0);
    close(pfd[0]);

    sa_client_t *c = agent_connect(&a);
    const char *m[] = {g_mnt};
    Response *r = quiesce(c, m, 1, 60000, 0);
    ASSERT_RESULT(r, QUIESCED);
    sa_response_free(r);
    struct stat st0, st1;
    ASSERT_EQ(stat(log, &st0), 0);
    /* Each connection logs a line or two; the socket on the frozen file
     * system takes new connections. */
    for (int i = 0; i < 5; i++) {
        char err[256];
        sa_client_t *x = sa_client_connect(listen, err, sizeof err);
        if (!x)
            FAIL("connect %s: %s", listen, err);
        if (sa_client_hello(x, NULL, "frozen", 0, err, sizeof err) < 0)
            FAIL("%s", err);
        ping_ok(x);
        sa_client_close(x);
    }
    ping_ok(c);
    ASSERT_EQ(stat(log, &st1), 0);
    ASSERT_EQ(st1.st_size, st0.st_size);
    r = thaw(c);
    ASSERT_RESULT(r, THAWED);
    sa_response_free(r);
    ping_ok(c);
    /* The lines held during the freeze are written after it. */
    ASSERT_EQ(stat(log, &st1), 0);
    ASSERT_GT(st1.st_size, st0.st_size);
    ASSERT_EQ(sh("grep -q \"hello from 'frozen'\" %s", log), 0);
    sa_client_close(c);
    kill(a.pid, SIGTERM);
    int status;
    waitpid(a.pid, &status, 0);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

LC_TEST(restored_steps_clock_adds_entropy_sets_env)
{
    if (!setup())
        return;
    char post[256], line[512];
    snprintf(post, sizeof post, "%s/post-restore.d", P("hooks"));
    snprintf(line, sizeof line, "echo \"$SANDBOX_AGENT_GENERATION $SA_LC_TEST\" > %s",
             P("post-ran"));
    write_hook(post, "10-note", line);
    write_hook(post, "20-fails", "echo 'cannot reconnect' >&2; exit 2");

    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), NULL);
    sa_client_t *c = agent_connect(&a), *w = agent_connect(&a);
    uint64_t wid = watch_send(w);
    freeze_watched(c, w, wid);
    Response *r;

    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Restored rs = SANDBOX__AGENT__V1__RESTORED__INIT;
    Sandbox__Agent__V1__Restored__EnvEntry e = SANDBOX__AGENT__V1__RESTORED__ENV_ENTRY__INIT;
    Sandbox__Agent__V1__Restored__EnvEntry *ep = &e;
    uint8_t entropy[64];
    ASSERT_EQ(getrandom(entropy, sizeof entropy, 0), (ssize_t)sizeof entropy);

    /* Too little entropy is refused, and changes nothing. */
    rs.entropy.data = entropy;
    rs.entropy.len = 16;
    req.op_case = OP(RESTORED);
    req.restored = &rs;
    r = call(c, &req);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    ASSERT(mnt_frozen());

    e.key = "SA_LC_TEST";
    e.value = "after-restore";
    rs.env = &ep;
    rs.n_env = 1;
    rs.entropy.len = sizeof entropy;
    rs.generation = 42;
    /* The time now: the agent steps the clock by the request's transit. */
    uint64_t before = 0;
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rs.unix_time_nano = before = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    }
    req.id = 0;
    r = call(c, &req);
    ASSERT_RESULT(r, RESTORE_DONE);
    const Sandbox__Agent__V1__RestoredResult *rr = r->restore_done;
    ASSERT_LE(rr->clock_step_nano, 0);
    ASSERT_GT(rr->clock_step_nano, -1000000000ll);
    ASSERT_EQ(rr->previous_generation, 0);
    ASSERT_EQ(rr->n_thawed, 1);
    ASSERT_STR_EQ(rr->thawed[0], g_mnt);
    ASSERT_EQ(rr->n_hook_failures, 1);
    ASSERT(strstr(rr->hook_failures[0], "20-fails: exit status 2: cannot reconnect"));
    sa_response_free(r);
    ASSERT(!mnt_frozen());

    r = next_event(w, wid);
    ASSERT_EQ(r->lifecycle->kind, LK(CLOCK_STEPPED));
    ASSERT_STR_EQ(r->lifecycle->source, "request");
    ASSERT_LE(r->lifecycle->clock_step_nano, 0);
    sa_response_free(r);
    expect_event(w, wid, LK(THAWED), "restore");
    r = next_event(w, wid);
    ASSERT_EQ(r->lifecycle->kind, LK(RESTORED));
    ASSERT_STR_EQ(r->lifecycle->source, "request");
    ASSERT_EQ(r->lifecycle->generation, 42);
    ASSERT_EQ(r->lifecycle->restores, 1);
    sa_response_free(r);

    r = info_call(c);
    ASSERT_EQ(r->info->generation, 42);
    ASSERT_EQ(r->info->restores, 1);
    ASSERT_GE(r->info->last_restore_unix_nano, before - 1000000000ull);
    ASSERT_LE(r->info->last_restore_unix_nano, before + 60000000000ull);
    ASSERT_EQ(r->info->n_frozen, 0);
    sa_response_free(r);

    /* The hooks saw the generation and the env; later processes see it. */
    char *got = NULL;
    size_t n = 0;
    FILE *f = fopen(P("post-ran"), "r");
    ASSERT(f);
    ASSERT(getline(&got, &n, f) > 0);
    fclose(f);
    ASSERT_STR_EQ(got, "42 after-restore\n");
    free(got);
    char *out = run_out(c, "echo \"$SA_LC_TEST\"");
    ASSERT_STR_EQ(out, "after-restore\n");
    free(out);

    /* The same generation again is the same restore: not counted twice. */
    rs.unix_time_nano = 0;
    rs.entropy.len = 0;
    rs.n_env = 0;
    req.id = 0;
    r = call(c, &req);
    ASSERT_RESULT(r, RESTORE_DONE);
    ASSERT_EQ(r->restore_done->previous_generation, 42);
    ASSERT_EQ(r->restore_done->clock_step_nano, 0);
    sa_response_free(r);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 1);
    sa_response_free(r);

    /* Nonsense is refused. */
    rs.unix_time_nano = 12345;
    req.id = 0;
    r = call(c, &req);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    sa_client_close(w);
    sa_client_close(c);
    agent_stop(&a);
}

LC_TEST(clock_jump_is_noticed_as_a_restore)
{
    if (!setup())
        return;
    hook_touches_post_ran();
    const char *clocks = P("clocks");
    const long long S = 1000000000ll;
    long long rt = 1700000000 * S, mono = 100 * S, boot = 100 * S;
    write_clocks(clocks, rt, mono, boot, -1);

    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), "--clock-test-file", clocks, "--clock-check-ms",
                "50", "--clock-jump-ms", "2000", NULL);
    sa_client_t *c = agent_connect(&a), *w = agent_connect(&a);
    uint64_t wid = watch_send(w);
    freeze_watched(c, w, wid);
    Response *r;

    /* Time passing on both clocks, and a drift below the threshold, are
     * not a restore. */
    write_clocks(clocks, rt + 5 * S, mono + 5 * S, boot + 5 * S, -1);
    usleep(300000);
    write_clocks(clocks, rt + 6 * S + S / 2, mono + 5 * S + S / 10, boot + 5 * S + S / 10, -1);
    usleep(300000);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 0);
    sa_response_free(r);
    ASSERT(mnt_frozen());

    /* The wall clock an hour ahead of the monotonic clock: a restore. */
    write_clocks(clocks, rt + 3606 * S, mono + 6 * S, boot + 6 * S, -1);
    r = next_event(w, wid);
    ASSERT_EQ(r->lifecycle->kind, LK(CLOCK_STEPPED));
    ASSERT_STR_EQ(r->lifecycle->source, "clock");
    ASSERT_GT(r->lifecycle->clock_step_nano, 3590 * S);
    ASSERT_LT(r->lifecycle->clock_step_nano, 3610 * S);
    sa_response_free(r);
    expect_restore(w, wid, "clock");

    /* BOOTTIME ahead of MONOTONIC (a suspend) is one too, but so soon
     * after the last it is the same restore: counted once. */
    write_clocks(clocks, rt + 7300 * S, mono + 7 * S, boot + 3700 * S, -1);
    expect_event(w, wid, LK(CLOCK_STEPPED), "clock");
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 1);
    sa_response_free(r);
    sa_client_close(w);
    sa_client_close(c);
    agent_stop(&a);
}

LC_TEST(rtc_ahead_of_the_wall_clock_is_noticed_as_a_pause)
{
    if (!setup())
        return;
    hook_touches_post_ran();
    const char *clocks = P("clocks");
    const long long S = 1000000000ll, T = 1700000000;
    long long mono = 100 * S;
    write_clocks(clocks, T * S, mono, mono, T);

    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), "--clock-test-file", clocks, "--clock-check-ms",
                "50", "--clock-jump-ms", "2000", "--kmsg", "off", NULL);
    sa_client_t *c = agent_connect(&a), *w = agent_connect(&a);
    uint64_t wid = watch_send(w);
    freeze_watched(c, w, wid);
    Response *r;

    /* Time passing on every clock, the RTC's whole seconds ahead of and
     * behind the wall clock, and the RTC set back by someone: no pause. */
    write_clocks(clocks, (T + 5) * S, mono + 5 * S, mono + 5 * S, T + 5);
    usleep(300000);
    write_clocks(clocks, (T + 6) * S + S / 2, mono + 6 * S + S / 2, mono + 6 * S + S / 2,
                     T + 7);
    usleep(300000);
    write_clocks(clocks, (T + 7) * S + 9 * S / 10, mono + 7 * S + 9 * S / 10,
                     mono + 7 * S + 9 * S / 10, T + 7);
    usleep(300000);
    write_clocks(clocks, (T + 9) * S, mono + 9 * S, mono + 9 * S, T - 91);
    usleep(300000);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 0);
    sa_response_free(r);
    ASSERT(mnt_frozen());

    /* Paused for an hour: the guest's clocks stood still, the RTC (the
     * host's clock) did not. */
    write_clocks(clocks, (T + 10) * S, mono + 10 * S, mono + 10 * S, T - 90 + 3600);
    expect_restore(w, wid, "rtc");

    /* The wall clock stepped forward to catch up (NTP): the clock watch
     * reports the step, and it is the same restore. */
    write_clocks(clocks, (T + 3511) * S, mono + 11 * S, mono + 11 * S, T + 3511);
    r = next_event(w, wid);
    ASSERT_EQ(r->lifecycle->kind, LK(CLOCK_STEPPED));
    ASSERT_STR_EQ(r->lifecycle->source, "clock");
    sa_response_free(r);
    usleep(300000);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 1);
    sa_response_free(r);
    sa_client_close(w);
    sa_client_close(c);
    agent_stop(&a);
}

/* Send a uevent-shaped message to the uevent group, as root or as user
 * `as` who keeps CAP_NET_ADMIN (which sending to the group needs): the
 * agent must believe only uid 0. */
static void send_uevent(const char *payload, size_t len, uid_t as)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
        struct sockaddr_nl dst = {.nl_family = AF_NETLINK, .nl_groups = 1};
        if (fd < 0)
            _exit(2);
        if (as) {
            struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
            struct __user_cap_data_struct d[2];
            memset(d, 0, sizeof d);
            d[0].effective = d[0].permitted = 1u << CAP_NET_ADMIN;
            if (prctl(PR_SET_KEEPCAPS, 1) < 0 || setresuid(as, as, as) < 0 ||
                syscall(SYS_capset, &h, d) < 0)
                _exit(3);
        }
        if (sendto(fd, payload, len, 0, (struct sockaddr *)&dst, sizeof dst) < 0)
            _exit(4);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        FAIL("sending a uevent failed (status 0x%x)", st);
}

LC_TEST(vmgenid_uevent_is_noticed_as_a_restore)
{
    if (!setup())
        return;
    /* The agent runs in a network namespace of the test's own, where the
     * test may send uevent-shaped messages to the uevent group. */
    if (unshare(CLONE_NEWNET) < 0)
        FAIL("unshare(CLONE_NEWNET): %s", strerror(errno));
    hook_touches_post_ran();
    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), NULL);
    sa_client_t *c = agent_connect(&a), *w = agent_connect(&a);
    uint64_t wid = watch_send(w);
    freeze_watched(c, w, wid);
    Response *r;

    static const char other[] = "change@/devices/virtual/net/lo\0ACTION=change\0"
                                "DEVPATH=/devices/virtual/net/lo\0SUBSYSTEM=net\0SEQNUM=1";
    static const char vmgenid[] = "change@/devices/platform/QEMUVGID:00\0ACTION=change\0"
                                  "DEVPATH=/devices/platform/QEMUVGID:00\0SUBSYSTEM=platform\0"
                                  "NEW_VMGENID=1\0SEQNUM=2";
    /* Another device's event, and the right one from a user who is not
     * root, change nothing. */
    send_uevent(other, sizeof other, 0);
    send_uevent(vmgenid, sizeof vmgenid, 65534);
    usleep(300000);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 0);
    sa_response_free(r);
    ASSERT(mnt_frozen());

    send_uevent(vmgenid, sizeof vmgenid, 0);
    expect_restore(w, wid, "vmgenid");
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 1);
    ASSERT_GT(r->info->last_restore_unix_nano, 0);
    sa_response_free(r);

    /* A Restored that follows speaks of the same restore. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Restored rs = SANDBOX__AGENT__V1__RESTORED__INIT;
    rs.generation = 7;
    req.op_case = OP(RESTORED);
    req.restored = &rs;
    r = call(c, &req);
    ASSERT_RESULT(r, RESTORE_DONE);
    sa_response_free(r);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 1);
    ASSERT_EQ(r->info->generation, 7);
    sa_response_free(r);
    sa_client_close(w);
    sa_client_close(c);
    agent_stop(&a);
}

/* Write all of s to fd (the FIFO the agent reads as its kernel log). */
static void kmsg_put(int fd, const char *s)
{
    size_t len = strlen(s);
    if (write(fd, s, len) != (ssize_t)len)
        FAIL("writing to the kmsg FIFO: %s", strerror(errno));
}

#define VMFORK "random: crng reseeded due to virtual machine fork"

LC_TEST(kmsg_vmfork_line_is_noticed_as_a_restore)
{
    if (!setup())
        return;
    hook_touches_post_ran();
    const char *fifo = P("kmsg");
    if (mkfifo(fifo, 0600) < 0)
        FAIL("mkfifo: %s", strerror(errno));
    int kfd = open(fifo, O_RDWR | O_CLOEXEC);
    if (kfd < 0)
        FAIL("open %s: %s", fifo, strerror(errno));
    /* Logged before the agent started: old news, not a restore. */
    kmsg_put(kfd, "5,90,1000,-;" VMFORK "\n");
    agent_t a;
    agent_start(&a, "--hooks-dir", P("hooks"), "--kmsg", fifo, "--clock-jump-ms", "0", NULL);
    sa_client_t *c = agent_connect(&a), *w = agent_connect(&a);
    uint64_t wid = watch_send(w);
    freeze_watched(c, w, wid);
    Response *r;

    /* The line written by a process (facility 1, user: what the kernel
     * gives whatever a writer asks for, here notice 5 + 8), other kernel
     * lines, the words inside a longer line, and as a record's
     * continuation line: none is the kernel's VM fork. */
    kmsg_put(kfd, "13,100,2000,-;" VMFORK "\n");
    kmsg_put(kfd, "190,101,2100,-;" VMFORK "\n");
    kmsg_put(kfd, "6,102,3000,-;random: crng init done\n SUBSYSTEM=" VMFORK "\n");
    kmsg_put(kfd, "5,103,3500,-;x" VMFORK "\n5,104,3600,-;" VMFORK " (no)\n");
    kmsg_put(kfd, "5,105,3700,-," VMFORK "\n" VMFORK "\n");
    usleep(300000);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 0);
    sa_response_free(r);
    ASSERT(mnt_frozen());

    /* Records overwritten before the agent read them (a gap in the
     * sequence numbers, what EPIPE says on /dev/kmsg), then the kernel's
     * line, arriving in two pieces. */
    kmsg_put(kfd, "4,200,5000,-;virtio_net virtio1: up\n5,201,5100,-;random: crng reseeded ");
    usleep(100000);
    kmsg_put(kfd, "due to virtual machine fork\n");
    expect_restore(w, wid, "kmsg");
    ASSERT(log_has(a.log, "95 kernel log records were overwritten"));

    /* The same line again so soon is the same restore. */
    kmsg_put(kfd, "5,202,5200,-;" VMFORK "\n");
    usleep(300000);
    r = info_call(c);
    ASSERT_EQ(r->info->restores, 1);
    sa_response_free(r);
    close(kfd);
    sa_client_close(w);
    sa_client_close(c);
    agent_stop(&a);
}

/* The real kernel log: a process that writes the VM fork line to
 * /dev/kmsg, asking for the kernel's facility, does not make a restore. */
LC_TEST(kmsg_line_written_by_a_process_is_not_a_restore)
{
    int kfd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (kfd < 0) {
        printf("    skipped: /dev/kmsg: %s\n", strerror(errno));
        return;
    }
    agent_t a;
    agent_start(&a, "--clock-jump-ms", "0", NULL);
    sa_client_t *c = agent_connect(&a);
    /* The agent reads the kernel log. */
    char fdir[64], link[PATH_MAX];
    int reading = 0;
    snprintf(fdir, sizeof fdir, "/proc/%d/fd", (int)a.pid);
    DIR *d = opendir(fdir);
    ASSERT(d != NULL);
    for (struct dirent *e; (e = readdir(d));) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", fdir, e->d_name);
        ssize_t n = readlink(p, link, sizeof link - 1);
        if (n > 0) {
            link[n] = 0;
            reading |= !strcmp(link, "/dev/kmsg");
        }
    }
    closedir(d);
    ASSERT(reading);
    kmsg_put(kfd, "<0>" VMFORK);
    kmsg_put(kfd, VMFORK);
    close(kfd);
    usleep(500000);
    Response *r = info_call(c);
    ASSERT_EQ(r->info->restores, 0);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

TEST_MAIN(TEST_ENTRY(quiesce_freezes_refuses_writes_and_thaws),
          TEST_ENTRY(freeze_thaws_by_itself),
          TEST_ENTRY(shutdown_thaws),
          TEST_ENTRY(failing_pre_checkpoint_hook_fails_quiesce),
          TEST_ENTRY(unfreezable_mounts_fail_and_undo),
          TEST_ENTRY(automatic_choice_of_mounts),
          TEST_ENTRY(log_and_socket_on_the_frozen_fs),
          TEST_ENTRY(restored_steps_clock_adds_entropy_sets_env),
          TEST_ENTRY(clock_jump_is_noticed_as_a_restore),
          TEST_ENTRY(rtc_ahead_of_the_wall_clock_is_noticed_as_a_pause),
          TEST_ENTRY(vmgenid_uevent_is_noticed_as_a_restore),
          TEST_ENTRY(kmsg_vmfork_line_is_noticed_as_a_restore),
          TEST_ENTRY(kmsg_line_written_by_a_process_is_not_a_restore))
