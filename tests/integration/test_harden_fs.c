/* Hardening of the file operations: what a hostile client or workload
 * tried, each against the real agent. A `user` is exactly that user (no
 * capability of root's helps it), a FIFO or a blocking file never holds a
 * worker, Remove never takes the root, a system directory or another file
 * system with it, and ListDirectory follows a symlink it is pointed at. */
#include "fs_helpers.h"
#include "harness.h"
#define TMPDIR_PREFIX "/tmp/sa-hfs-"
#include "tmpdir.h"

#include <dirent.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/time.h>

typedef Sandbox__Agent__V1__ReadFile ReadFileReq;
typedef Sandbox__Agent__V1__WriteFile WriteFileReq;

#define NOBODY "65534"

#define START()                      \
    agent_t a;                       \
    tmpdir_make();                   \
    agent_start(&a, NULL);           \
    sa_client_t *c = agent_connect(&a)
#define STOP()                   \
    do {                         \
        sa_client_close(c);      \
        agent_stop(&a);          \
        tmpdir_remove();         \
    } while (0)

static Response *do_remove(sa_client_t *c, const char *path, int recursive, const char *user)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Remove rm = SANDBOX__AGENT__V1__REMOVE__INIT;
    rm.path = (char *)path;
    rm.recursive = recursive;
    rm.user = (char *)(user ? user : "");
    req.op_case = OP(REMOVE);
    req.remove = &rm;
    return call(c, &req);
}

static Response *do_list(sa_client_t *c, const char *path, const char *user)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = (char *)path;
    ld.user = (char *)(user ? user : "");
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    return call(c, &req);
}

/* Read a whole file as user; returns the last response, the bytes in *out
 * (NUL-terminated, malloc'd) when out is set. */
static Response *read_as(sa_client_t *c, const char *path, const char *user, uint64_t length,
                         char **out, size_t *outlen)
{
    Request req = REQUEST_INIT;
    ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    rf.path = (char *)path;
    rf.user = (char *)(user ? user : "");
    rf.length = length;
    req.id = sa_client_next_id(c);
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return read_collect(c, req.id, 0, (uint8_t **)out, outlen);
}

/* A mount namespace of the test's own, so every mount goes with it whatever
 * happens; the agent started afterwards shares it. */
static void private_mounts(void)
{
    if (unshare(CLONE_NEWNS) < 0)
        FAIL("unshare(CLONE_NEWNS): %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        FAIL("mount --make-rprivate /: %s", strerror(errno));
}

/* ============================================ 1: a user has no capability */

/* The first line of /proc/kallsyms as uid 65534 itself sees it. */
static void kallsyms_as_nobody(char *line, size_t len)
{
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
            setresuid(65534, 65534, 65534) < 0)
            _exit(1);
        FILE *f = fopen("/proc/kallsyms", "r");
        char buf[256] = "";
        if (!f || !fgets(buf, sizeof buf, f))
            _exit(1);
        if (write(pfd[1], buf, strlen(buf)) < 0)
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], line, len - 1);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    ASSERT(n > 0);
    line[n] = 0;
}

/* With user = nobody, the checks procfs makes with capabilities are the
 * user's: another user's /proc/PID/cwd (a way into a 0700 directory),
 * /proc/PID/maps of the agent and of PID 1, and the kernel's addresses in
 * /proc/kallsyms. Today's main kept CAP_SYS_PTRACE and CAP_SYSLOG in
 * effect on the worker: all three answered as for root. */
TEST(user_has_no_capability)
{
    if (geteuid() != 0) {
        printf("    skipped: acting as another user needs root\n");
        return;
    }
    START();
    ASSERT_EQ(mkdir(P("secret"), 0700), 0);
    ASSERT_EQ(mkdir(P("secret/inner"), 0755), 0);
    put_text(P("secret/inner/file"), "root only", 0644);
    /* A root process working in an open directory inside the 0700 one:
     * its cwd link would jump over the 0700 directory's check. */
    pid_t holder = fork();
    if (holder == 0) {
        if (chdir(P("secret/inner")) < 0)
            _exit(1);
        for (;;)
            pause();
    }
    char path[256];
    snprintf(path, sizeof path, "/proc/%d/cwd/file", (int)holder);
    for (int i = 0; i < 500; i++) { /* until the child has moved there */
        char l[512], lp[64];
        snprintf(lp, sizeof lp, "/proc/%d/cwd", (int)holder);
        ssize_t n = readlink(lp, l, sizeof l - 1);
        if (n > 0 && memmem(l, (size_t)n, "inner", 5))
            break;
        usleep(10000);
    }
    char *data = NULL;
    /* Root (the agent's own identity) reads it: the path is right. */
    Response *r = read_as(c, path, NULL, 0, &data, NULL);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_STR_EQ(data, "root only");
    free(data);
    sa_response_free(r);
    /* The direct path is denied to nobody, and so is the way round. */
    expect_error(read_as(c, P("secret/inner/file"), NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "secret/inner/file");
    expect_error(read_as(c, path, NOBODY, 0, NULL, NULL), CODE(PERMISSION_DENIED), "cwd");
    Request sreq = REQUEST_INIT;
    Sandbox__Agent__V1__Stat sst = SANDBOX__AGENT__V1__STAT__INIT;
    sst.path = path;
    sst.user = NOBODY;
    sreq.op_case = OP(STAT);
    sreq.stat = &sst;
    expect_error(call(c, &sreq), CODE(PERMISSION_DENIED), "cwd");
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);

    /* The agent's maps: root reads them, nobody does not. */
    snprintf(path, sizeof path, "/proc/%d/maps", (int)a.pid);
    r = read_as(c, path, NULL, 0, NULL, NULL);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_GT(r->file_end->size, 0);
    sa_response_free(r);
    expect_error(read_as(c, path, NOBODY, 0, NULL, NULL), CODE(PERMISSION_DENIED), path);
    expect_error(read_as(c, "/proc/self/maps", NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "/proc/self/maps");
    expect_error(read_as(c, "/proc/thread-self/status", NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "status");
    expect_error(read_as(c, "/proc/1/maps", NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "maps");
    /* Listing and Stat as well: the agent's descriptors are not the
     * user's to see. */
    expect_error(do_list(c, "/proc/self/fd", NOBODY), CODE(PERMISSION_DENIED), "fd");
    Request st2 = REQUEST_INIT;
    Sandbox__Agent__V1__Stat sst2 = SANDBOX__AGENT__V1__STAT__INIT;
    sst2.path = "/proc/self/status";
    sst2.user = NOBODY;
    st2.op_case = OP(STAT);
    st2.stat = &sst2;
    expect_error(call(c, &st2), CODE(PERMISSION_DENIED), "status");
    /* A listing of /proc does not descend into the agent's own entry. */
    Request lr = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    char own[64];
    snprintf(own, sizeof own, "/proc/%d/", (int)a.pid);
    ld.path = "/proc";
    ld.depth = 2;
    ld.user = NOBODY;
    lr.op_case = OP(LIST_DIR);
    lr.list_dir = &ld;
    ASSERT_EQ(sa_client_send(c, &lr), 0);
    int listed = 0;
    for (;;) {
        Response *lrr = recv_id(c, lr.id);
        ASSERT_RESULT(lrr, ENTRIES);
        for (size_t i = 0; i < lrr->entries->n_entries; i++) {
            const char *ep = lrr->entries->entries[i]->path;
            if (!strncmp(ep, own, strlen(own)))
                FAIL("listing /proc as nobody went into the agent's own %s", ep);
            listed++;
        }
        int done = lrr->done;
        sa_response_free(lrr);
        if (done)
            break;
    }
    ASSERT_GT(listed, 10);
    /* Root's own requests still see it all. */
    r = do_list(c, "/proc/self/fd", NULL);
    ASSERT_RESULT(r, ENTRIES);
    sa_response_free(r);
    /* What the user may read in procfs it still reads. */
    r = read_as(c, "/proc/meminfo", NOBODY, 0, NULL, NULL);
    ASSERT_RESULT(r, FILE_END);
    sa_response_free(r);

    /* kallsyms: what nobody itself sees (zeros unless the kernel shows
     * addresses to everyone), not what root sees. */
    char mine[256], theirs[256];
    kallsyms_as_nobody(mine, sizeof mine);
    r = read_as(c, "/proc/kallsyms", NOBODY, 4096, &data, NULL);
    ASSERT_RESULT(r, FILE_END);
    ASSERT(data);
    char *nl = strchr(data, '\n');
    ASSERT(nl);
    snprintf(theirs, sizeof theirs, "%.*s\n", (int)(nl - data), data);
    ASSERT_STR_EQ(theirs, mine);
    free(data);
    sa_response_free(r);
    r = read_as(c, "/proc/kallsyms", NULL, 4096, &data, NULL);
    ASSERT_RESULT(r, FILE_END);
    if (strncmp(data, "0000000000000000", 16) && !strncmp(mine, "0000000000000000", 16))
        printf("    root sees kernel addresses, nobody through the agent does not\n");
    free(data);
    sa_response_free(r);

    /* The worker takes root's capabilities back afterwards: root's own
     * request reads the agent's maps again. */
    r = read_as(c, path, NULL, 0, NULL, NULL);
    ASSERT_RESULT(r, FILE_END);
    sa_response_free(r);
    STOP();
}

/* ============================================ 3: FIFOs and stuck workers */

static uint64_t send_write(sa_client_t *c, const char *path, int mode, int atomic_set,
                           int atomic)
{
    Request req = REQUEST_INIT;
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = (char *)path;
    w.write_mode = mode;
    if (atomic_set) {
        w.atomic_opt_case = SANDBOX__AGENT__V1__WRITE_FILE__ATOMIC_OPT_ATOMIC;
        w.atomic = atomic;
    }
    w.data.data = (uint8_t *)"data\n";
    w.data.len = 5;
    req.op_case = OP(WRITE_FILE);
    req.write_file = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

static uint64_t send_simple(sa_client_t *c, int op, const char *path)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    req.op_case = op;
    if (op == OP(STAT)) {
        st.path = (char *)path;
        req.stat = &st;
    } else if (op == OP(READ_FILE)) {
        rf.path = (char *)path;
        req.read_file = &rf;
    } else {
        ld.path = (char *)path;
        req.list_dir = &ld;
    }
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

/* The final answer to id within ms, failing the test otherwise. */
static Response *answer_within(sa_client_t *c, uint64_t id, int ms, const char *what)
{
    for (;;) {
        Response *r = NULL;
        int rc = sa_client_recv_id(c, id, &r, ms);
        if (rc == -ETIMEDOUT)
            FAIL("%s: no answer within %d ms", what, ms);
        if (rc < 0)
            FAIL("%s: %s", what, strerror(-rc));
        if (r->done)
            return r;
        sa_response_free(r);
    }
}

/* Non-atomic WriteFile (APPEND, or atomic = false) to a FIFO, with no
 * reader and with one, and ReadFile of it: each is FAILED_PRECONDITION
 * naming a FIFO, at once, and another client's Stat and List answer
 * meanwhile. Today's main blocked a worker in open(O_WRONLY) per write:
 * two of them stopped every file operation of every client. */
TEST(fifo_never_holds_a_worker)
{
    START();
    ASSERT_EQ(mkfifo(P("fifo"), 0666), 0);
    ASSERT_EQ(mkdir(P("plain"), 0755), 0);
    put_text(P("plain/f"), "f", 0644);
    sa_client_t *other = agent_connect(&a);

    uint64_t ids[8];
    int n = 0;
    for (int i = 0; i < 3; i++)
        ids[n++] = send_write(c, P("fifo"), SANDBOX__AGENT__V1__WRITE_MODE__APPEND, 0, 0);
    for (int i = 0; i < 3; i++)
        ids[n++] = send_write(c, P("fifo"), SANDBOX__AGENT__V1__WRITE_MODE__TRUNCATE, 1, 0);
    ids[n++] = send_simple(c, OP(READ_FILE), P("fifo"));

    Response *r = answer_within(other, send_simple(other, OP(STAT), P("plain/f")), 5000,
                                "another client's Stat");
    ASSERT_RESULT(r, ENTRY);
    sa_response_free(r);
    r = answer_within(other, send_simple(other, OP(LIST_DIR), P("plain")), 5000,
                      "another client's ListDirectory");
    ASSERT_RESULT(r, ENTRIES);
    ASSERT_EQ(r->entries->n_entries, 1);
    sa_response_free(r);
    for (int i = 0; i < n; i++)
        expect_error(answer_within(c, ids[i], 5000, "request to the FIFO"),
                         CODE(FAILED_PRECONDITION), "a FIFO");

    /* With a reader the open would succeed: still refused, nothing
     * written into the FIFO. */
    int rfd = open(P("fifo"), O_RDONLY | O_NONBLOCK);
    ASSERT(rfd >= 0);
    expect_error(answer_within(c,
                                   send_write(c, P("fifo"),
                                              SANDBOX__AGENT__V1__WRITE_MODE__APPEND, 0, 0),
                                   5000, "append with a reader"),
                     CODE(FAILED_PRECONDITION), "a FIFO");
    char buf[16];
    ASSERT_EQ(read(rfd, buf, sizeof buf), 0);
    close(rfd);
    /* An atomic write does not replace the FIFO with a file either, nor a
     * device node. */
    expect_error(answer_within(c,
                                   send_write(c, P("fifo"),
                                              SANDBOX__AGENT__V1__WRITE_MODE__TRUNCATE, 0, 0),
                                   5000, "atomic write to a FIFO"),
                     CODE(FAILED_PRECONDITION), "a FIFO");
    struct stat st;
    ASSERT_EQ(lstat(P("fifo"), &st), 0);
    ASSERT(S_ISFIFO(st.st_mode));
    expect_error(answer_within(c,
                                   send_write(c, "/dev/null",
                                              SANDBOX__AGENT__V1__WRITE_MODE__APPEND, 0, 0),
                                   5000, "append to /dev/null"),
                     CODE(FAILED_PRECONDITION), "a character device");
    /* A regular file is written as before. */
    r = answer_within(c, send_write(c, P("plain/f"), SANDBOX__AGENT__V1__WRITE_MODE__APPEND, 0, 0),
                      5000, "append to a file");
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);
    sa_client_close(other);
    STOP(); /* SIGTERM stops it within 10 s */
}

/* /proc/kmsg waits for the kernel to log something: read without blocking,
 * it gives what is there and FileEnd. Today's main held the worker until
 * the kernel spoke. */
TEST(procfs_read_does_not_block)
{
    START();
    int probe = open("/proc/kmsg", O_RDONLY | O_NONBLOCK);
    if (probe < 0) {
        printf("    skipped: /proc/kmsg: %s\n", strerror(errno));
        STOP();
        return;
    }
    close(probe);
    for (int i = 0; i < 2; i++) {
        Response *r = answer_within(c, send_simple(c, OP(READ_FILE), "/proc/kmsg"), 10000,
                                    "ReadFile /proc/kmsg");
        ASSERT_RESULT(r, FILE_END);
        sa_response_free(r);
    }
    STOP();
}

/* A FUSE file system that never answers (not even its INIT): every lookup
 * in it waits in the kernel. The test's mount namespace takes it away. */
static int fuse_stuck_mount(const char *dir)
{
    char opts[128];
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0", fd);
    if (mount("sa-stuck", dir, "fuse", MS_NOSUID | MS_NODEV, opts) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Requests the kernel keeps waiting hold their workers, but other clients
 * are still served, and SIGTERM answers the stuck requests UNAVAILABLE and
 * stops the agent. Today's main had two workers: two stuck requests stopped
 * every file operation, and shutdown waited for them forever. */
TEST(stuck_workers_neither_block_others_nor_shutdown)
{
    if (geteuid() != 0) {
        printf("    skipped: mounts need root\n");
        return;
    }
    private_mounts();
    /* Under the sanitizers, LeakSanitizer's check at exit stops every
     * thread with ptrace, which a thread waiting on the unanswering FUSE
     * connection never does: it would hang that check, not the agent. */
    char asan[512];
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0",
             getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
             getenv("ASAN_OPTIONS") ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    START();
    ASSERT_EQ(mkdir(P("stuck"), 0755), 0);
    ASSERT_EQ(mkdir(P("plain"), 0755), 0);
    put_text(P("plain/f"), "f", 0644);
    int ffd = fuse_stuck_mount(P("stuck"));
    if (ffd < 0) {
        printf("    skipped: cannot mount a FUSE file system: %s\n", strerror(errno));
        STOP();
        return;
    }
    uint64_t ids[6];
    for (int i = 0; i < 4; i++)
        ids[i] = send_simple(c, OP(STAT), P("stuck/x"));
    ids[4] = send_simple(c, OP(READ_FILE), P("stuck/y"));
    ids[5] = send_simple(c, OP(LIST_DIR), P("stuck"));
    usleep(200000);

    sa_client_t *other = agent_connect(&a);
    Response *r = answer_within(other, send_simple(other, OP(STAT), P("plain/f")), 10000,
                                "another client's Stat");
    ASSERT_RESULT(r, ENTRY);
    sa_response_free(r);
    r = answer_within(other, send_simple(other, OP(LIST_DIR), P("plain")), 10000,
                      "another client's ListDirectory");
    ASSERT_RESULT(r, ENTRIES);
    sa_response_free(r);
    ping_ok(other);
    sa_client_close(other);

    /* SIGTERM: every stuck request is answered, then the agent exits. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kill(a.pid, SIGTERM);
    for (int i = 0; i < 6; i++)
        expect_error(answer_within(c, ids[i], 10000, "a stuck request at shutdown"),
                         CODE(UNAVAILABLE), "shutting down");
    int st = 0;
    for (int i = 0; i < 1000 && waitpid(a.pid, &st, WNOHANG) == 0; i++)
        usleep(10000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (kill(a.pid, 0) == 0 && waitpid(a.pid, &st, WNOHANG) == 0) {
        kill(a.pid, SIGKILL);
        waitpid(a.pid, &st, 0);
        FAIL("agent did not exit within 10 s of SIGTERM with stuck workers");
    }
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    printf("    exited %.2f s after SIGTERM with 6 requests stuck\n",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    sa_client_close(c);
    umount2(P("stuck"), MNT_DETACH);
    close(ffd);
    tmpdir_remove();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", a.dir);
    if (system(cmd)) {
    }
}

/* ============================================ 2: recursive watches as a user */

#define K_CREATE SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE
#define K_OVERFLOW SANDBOX__AGENT__V1__FS_EVENT__KIND__OVERFLOW

static uint64_t watch_send(sa_client_t *c, const char *path, const char *user)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchPath w = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    w.path = (char *)path;
    w.recursive = 1;
    w.user = (char *)(user ? user : "");
    req.op_case = OP(WATCH);
    req.watch = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

/* Skip events until one of kind for path (10 s at most); returns it. */
static Response *expect_event(sa_client_t *c, uint64_t id, int kind, const char *path)
{
    for (;;) {
        Response *r = NULL;
        int rc = sa_client_recv_id(c, id, &r, 10000);
        if (rc < 0)
            FAIL("no %d event for %s: %s", kind, path, strerror(-rc));
        ASSERT_RESULT(r, FS_EVENT);
        const char *p = r->fs_event->path ? r->fs_event->path : "";
        if ((int)r->fs_event->kind == kind && !strcmp(p, path))
            return r;
        sa_response_free(r);
    }
}

/* Events for ms; fails on one whose path contains needle (or, with needle
 * NULL, on an OVERFLOW). Returns how many came. */
static int expect_none(sa_client_t *c, uint64_t id, int ms, const char *needle)
{
    int n = 0;
    for (;;) {
        Response *r = NULL;
        int rc = sa_client_recv_id(c, id, &r, ms);
        if (rc == -ETIMEDOUT)
            return n;
        ASSERT_EQ(rc, 0);
        ASSERT_RESULT(r, FS_EVENT);
        const char *p = r->fs_event->path ? r->fs_event->path : "";
        if (needle ? strstr(p, needle) != NULL : r->fs_event->kind == K_OVERFLOW)
            FAIL("event kind %d for '%s' (looking for none with '%s')", r->fs_event->kind, p,
                 needle ? needle : "OVERFLOW");
        n++;
        sa_response_free(r);
    }
}

/* A recursive watch as nobody: a directory root makes later, 0700, is not
 * watched (nobody could not read it), and an event's Entry is what nobody
 * may stat. Today's
 * main added new directories as root, by path, on the loop, and stat'ed
 * entries as root: names made inside a 0700 directory reached the user. */
TEST(watch_as_a_user_sees_what_the_user_may)
{
    if (geteuid() != 0) {
        printf("    skipped: acting as another user needs root\n");
        return;
    }
    START();
    ASSERT_EQ(mkdir(P("w"), 0777), 0);
    ASSERT_EQ(chmod(P("w"), 0777), 0);
    ASSERT_EQ(mkdir(P("outside"), 0755), 0);
    uint64_t id = watch_send(c, P("w"), NOBODY);
    watch_wait_ready(c, id, P("w"));

    /* Made by root, 0700: nobody may not read it, so it is not watched. */
    ASSERT_EQ(mkdir(P("w/private"), 0700), 0);
    sa_response_free(expect_event(c, id, K_CREATE, P("w/private")));
    usleep(300000);
    put_text(P("w/private/secret-name"), "s", 0644);
    expect_none(c, id, 700, "secret-name");

    /* Open when it appeared: watched (as nobody). Once closed to nobody,
     * events inside still come, but without an Entry nobody may not stat. */
    ASSERT_EQ(mkdir(P("w/open"), 0777), 0);
    ASSERT_EQ(chmod(P("w/open"), 0777), 0);
    for (int i = 0;; i++) {
        char probe[64];
        snprintf(probe, sizeof probe, "w/open/probe%d", i);
        put_text(P(probe), "p", 0644);
        Response *r = NULL;
        int got = 0;
        while (sa_client_recv_id(c, id, &r, 100) == 0) {
            if (r->fs_event->path && strstr(r->fs_event->path, "/open/probe"))
                got = 1;
            sa_response_free(r);
        }
        if (got)
            break;
        if (i == 100)
            FAIL("no event from inside a directory made open inside the watch");
    }
    ASSERT_EQ(chmod(P("w/open"), 0700), 0);
    put_text(P("w/open/f"), "f", 0644);
    Response *r = expect_event(c, id, K_CREATE, P("w/open/f"));
    if (r->fs_event->entry)
        FAIL("the Entry of %s was stat'ed with root's permissions (uid %u, mode %o)",
             P("w/open/f"), r->fs_event->entry->uid, r->fs_event->entry->mode);
    sa_response_free(r);
    /* Where nobody may stat, the Entry is there. */
    put_text(P("w/g"), "g", 0644);
    r = expect_event(c, id, K_CREATE, P("w/g"));
    ASSERT(r->fs_event->entry);
    ASSERT_EQ(r->fs_event->entry->uid, 0);
    sa_response_free(r);

    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* New directories swapped for a symlink to a directory outside the watch
 * as soon as they appear: the watch never follows one. Today's main added
 * them by path and watched the symlink's target. */
TEST(watch_never_follows_a_swapped_symlink)
{
    START();
    ASSERT_EQ(mkdir(P("w"), 0777), 0);
    ASSERT_EQ(mkdir(P("outside"), 0755), 0);
    uint64_t id = watch_send(c, P("w"), geteuid() == 0 ? NOBODY : NULL);
    watch_wait_ready(c, id, P("w"));
    /* Each new directory is swapped for a symlink at once; the agent is
     * stopped meanwhile, so it meets every event after the swap (the race
     * a workload wins most of the time, won every time). */
    ASSERT_EQ(kill(a.pid, SIGSTOP), 0);
    for (int i = 0; i < 20; i++) {
        char name[64];
        snprintf(name, sizeof name, "w/swap%d", i);
        ASSERT_EQ(mkdir(P(name), 0777), 0);
        ASSERT_EQ(rmdir(P(name)), 0);
        ASSERT_EQ(symlink(P("outside"), P(name)), 0);
    }
    ASSERT_EQ(kill(a.pid, SIGCONT), 0);
    usleep(300000);
    for (int i = 0; i < 5; i++) {
        char name[64];
        snprintf(name, sizeof name, "outside/leak%d", i);
        put_text(P(name), "x", 0644);
    }
    expect_none(c, id, 700, "leak");
    STOP();
}

/* --max-watch-dirs bounds what one watch adds: its first walk, and the
 * directories that appear later; past the bound one OVERFLOW, and no more
 * kernel watches. Today's main had no bound (and no such flag). */
TEST(watch_bound_overflows)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, "--max-watch-dirs", "8", NULL);
    sa_client_t *c = agent_connect(&a);
    ASSERT_EQ(mkdir(P("t"), 0755), 0);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "t/d%d", i);
        ASSERT_EQ(mkdir(P(name), 0755), 0);
    }
    uint64_t id = watch_send(c, P("t"), NULL);
    watch_wait_ready(c, id, P("t"));
    expect_none(c, id, 200, NULL); /* 4 directories: within the bound */
    for (int i = 0; i < 10; i++) {
        char name[32];
        snprintf(name, sizeof name, "t/n%d", i);
        ASSERT_EQ(mkdir(P(name), 0755), 0);
    }
    Response *r = expect_event(c, id, K_OVERFLOW, "");
    sa_response_free(r);
    /* The stream goes on: events of what is watched still come. */
    put_text(P("t/d0/f"), "f", 0644);
    sa_response_free(expect_event(c, id, K_CREATE, P("t/d0/f")));
    /* Nothing more is added: a directory made now is reported, and what
     * happens inside it is not. */
    ASSERT_EQ(mkdir(P("t/late"), 0755), 0);
    sa_response_free(expect_event(c, id, K_CREATE, P("t/late")));
    usleep(200000);
    put_text(P("t/late/inside"), "i", 0644);
    expect_none(c, id, 500, "inside");

    /* A first walk over the bound: OVERFLOW once it is in place. */
    ASSERT_EQ(mkdir(P("big"), 0755), 0);
    for (int i = 0; i < 20; i++) {
        char name[32];
        snprintf(name, sizeof name, "big/d%d", i);
        ASSERT_EQ(mkdir(P(name), 0755), 0);
    }
    uint64_t id2 = watch_send(c, P("big"), NULL);
    sa_response_free(expect_event(c, id2, K_OVERFLOW, ""));

    /* The agent holds at most 8 kernel watches per stream. */
    char path[64], line[256];
    int watches = 0;
    snprintf(path, sizeof path, "/proc/%d/fdinfo", (int)a.pid);
    DIR *d = opendir(path);
    ASSERT(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        char fi[320];
        snprintf(fi, sizeof fi, "%s/%s", path, de->d_name);
        FILE *f = de->d_name[0] != '.' ? fopen(fi, "r") : NULL;
        while (f && fgets(line, sizeof line, f))
            watches += !strncmp(line, "inotify wd:", 11);
        if (f)
            fclose(f);
    }
    closedir(d);
    ASSERT_LE(watches, 16);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* Ping round trips on their own connection for about ms; returns the
 * slowest in ms. */
static double ping_for(sa_client_t *p, int ms)
{
    double worst = 0;
    struct timespec start, t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Ping pg = SANDBOX__AGENT__V1__PING__INIT;
        req.op_case = OP(PING);
        req.ping = &pg;
        Response *r = NULL;
        int rc = sa_client_call(p, &req, &r, 5000);
        if (rc < 0)
            FAIL("Ping: %s", strerror(-rc));
        ASSERT_RESULT(r, PONG);
        sa_response_free(r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double d = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (d > worst)
            worst = d;
        if ((double)(t1.tv_sec - start.tv_sec) * 1e3 +
                (double)(t1.tv_nsec - start.tv_nsec) / 1e6 > ms)
            return worst;
        usleep(2000);
    }
}

/* A tree of 2,000 directories moved into a recursive watch is added by a
 * worker: another client's Pings keep answering (each well under a second)
 * and the whole tree is watched afterwards. */
TEST(ping_stays_fast_while_a_tree_is_added)
{
    START();
    ASSERT_EQ(mkdir(P("w"), 0755), 0);
    ASSERT_EQ(mkdir(P("big"), 0755), 0);
    char name[64];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "big/a%d", i);
        ASSERT_EQ(mkdir(P(name), 0755), 0);
        for (int j = 0; j < 49; j++) {
            snprintf(name, sizeof name, "big/a%d/b%d", i, j);
            ASSERT_EQ(mkdir(P(name), 0755), 0);
        }
    }
    uint64_t id = watch_send(c, P("w"), NULL);
    watch_wait_ready(c, id, P("w"));
    sa_client_t *p = agent_connect(&a);
    ASSERT_EQ(rename(P("big"), P("w/big")), 0);
    double worst = ping_for(p, 500);
    printf("    slowest Ping while 2,000 directories were added: %.1f ms\n", worst);
    ASSERT_LT(worst, 1000);
    /* The deepest, last directory is watched. */
    for (int i = 0;; i++) {
        snprintf(name, sizeof name, "w/big/a39/b48/f%d", i);
        put_text(P(name), "f", 0644);
        Response *r = NULL;
        int got = 0;
        while (sa_client_recv_id(c, id, &r, 200) == 0) {
            got |= r->fs_event->path && strstr(r->fs_event->path, "/a39/b48/f") != NULL;
            sa_response_free(r);
        }
        if (got) {
            printf("    deepest directory watched after %d tries\n", i + 1);
            break;
        }
        if (i == 50)
            FAIL("the tree moved into the watch is not watched");
    }
    sa_client_close(p);
    STOP();
}

/* A directory moved into the watch holds a file system that never answers:
 * adding it waits in the kernel, on a worker; the loop goes on (Pings
 * answer), and SIGTERM still stops the agent. Today's main walked the new
 * tree on the loop and stopped answering anyone. */
TEST(frozen_fs_in_a_new_tree_stops_no_one)
{
    if (geteuid() != 0) {
        printf("    skipped: mounts need root\n");
        return;
    }
    private_mounts();
    /* See stuck_workers_neither_block_others_nor_shutdown. */
    char asan[512];
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0",
             getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
             getenv("ASAN_OPTIONS") ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    START();
    ASSERT_EQ(mkdir(P("w"), 0755), 0);
    ASSERT_EQ(mkdir(P("fz"), 0755), 0);
    ASSERT_EQ(mkdir(P("fz/m"), 0755), 0);
    int ffd = fuse_stuck_mount(P("fz/m"));
    if (ffd < 0) {
        printf("    skipped: cannot mount a FUSE file system: %s\n", strerror(errno));
        STOP();
        return;
    }
    uint64_t id = watch_send(c, P("w"), NULL);
    watch_wait_ready(c, id, P("w"));
    sa_client_t *p = agent_connect(&a);
    ASSERT_EQ(rename(P("fz"), P("w/fz")), 0);
    double worst = ping_for(p, 500);
    ASSERT_LT(worst, 1000);
    /* Other file operations are served too. */
    Response *r = do_list(p, P("w"), NULL);
    ASSERT_RESULT(r, ENTRIES);
    sa_response_free(r);
    sa_client_close(p);
    sa_client_close(c);
    agent_stop(&a);
    umount2(P("w/fz/m"), MNT_DETACH);
    close(ffd);
    tmpdir_remove();
}

/* ============================================ 13: listing through a symlink */

/* ListDirectory of a symlink to a directory lists the directory (as `ls`
 * does), under the path asked for; Remove of the same symlink removes the
 * link only. Today's main answered "Not a directory" though Stat said
 * DIRECTORY. */
TEST(list_follows_final_symlink)
{
    START();
    ASSERT_EQ(mkdir(P("real"), 0755), 0);
    put_text(P("real/f"), "x", 0644);
    ASSERT_EQ(mkdir(P("real/sub"), 0755), 0);
    ASSERT_EQ(symlink("real", P("link")), 0);
    ASSERT_EQ(symlink(P("real/f"), P("flink")), 0);
    /* A symlink to a directory that is itself inside the listing is not
     * followed below the top. */
    ASSERT_EQ(symlink("..", P("real/up")), 0);

    Response *r = do_list(c, P("link"), NULL);
    ASSERT_RESULT(r, ENTRIES);
    ASSERT_EQ(r->entries->n_entries, 3);
    ASSERT_STR_EQ(r->entries->entries[0]->path, P("link/sub"));
    ASSERT_STR_EQ(r->entries->entries[1]->path, P("link/f"));
    ASSERT_STR_EQ(r->entries->entries[2]->name, "up");
    ASSERT_EQ(r->entries->entries[2]->type, SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK);
    sa_response_free(r);

    /* Deeper: the symlink below the top stays a symlink, not a loop. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = P("link");
    ld.depth = 50;
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    r = call(c, &req);
    ASSERT_RESULT(r, ENTRIES);
    ASSERT_EQ(r->entries->n_entries, 3);
    sa_response_free(r);

    /* As another user too. */
    if (geteuid() == 0) {
        r = do_list(c, P("link"), NOBODY);
        ASSERT_RESULT(r, ENTRIES);
        ASSERT_EQ(r->entries->n_entries, 3);
        sa_response_free(r);
    }

    /* A symlink to a file is still not a directory. */
    expect_error(do_list(c, P("flink"), NULL), CODE(FAILED_PRECONDITION), "not a directory");

    /* The system's own symlinked directories, where this system has them. */
    const char *sys[] = {"/bin", "/lib", "/var/run", "/sbin"};
    for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++) {
        struct stat st, lst;
        if (lstat(sys[i], &lst) < 0 || !S_ISLNK(lst.st_mode) || stat(sys[i], &st) < 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        r = do_list(c, sys[i], NULL);
        ASSERT_RESULT(r, ENTRIES);
        sa_response_free(r);
    }

    /* Writes keep not following: removing the link removes the link. */
    r = do_remove(c, P("link"), 1, NULL);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    struct stat st;
    ASSERT_EQ(lstat(P("link"), &st), -1);
    ASSERT_EQ(stat(P("real/f"), &st), 0);
    STOP();
}

/* ============================================ 11: Remove and the root */

/* Every spelling of "/" is refused, with or without recursive, and so is a
 * recursive removal of a top-level system directory by any path that
 * resolves to it. Today's main refused only the exact string "/". The
 * recursive spellings of the root itself are tried on a scratch directory
 * instead ("x/.."), which a regression would empty, not the machine. */
TEST(remove_refuses_root_aliases)
{
    START();
    ASSERT_EQ(mkdir(P("x"), 0755), 0);
    ASSERT_EQ(mkdir(P("keep"), 0755), 0);
    put_text(P("keep/canary"), "c", 0644);

    const char *roots[] = {"/", "/.", "/..", "/tmp/..", "//", "/./", "/tmp/../."};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
        expect_error(do_remove(c, roots[i], 0, NULL), CODE(INVALID_ARGUMENT), "refusing");
    /* "/" and its exact spellings recursive too: refused before any walk. */
    expect_error(do_remove(c, "/", 1, NULL), CODE(INVALID_ARGUMENT), "root directory");
    /* "." and ".." recursive, where a slip would cost only the scratch
     * directory. */
    expect_error(do_remove(c, P("x/.."), 1, NULL), CODE(INVALID_ARGUMENT), "refusing");
    expect_error(do_remove(c, P("x/."), 1, NULL), CODE(INVALID_ARGUMENT), "refusing");
    struct stat st;
    ASSERT_EQ(stat(P("keep/canary"), &st), 0);
    ASSERT_EQ(stat(P("x"), &st), 0);

    /* A top-level system directory, recursive: refused by name, through
     * "..", and through a symlink to the root. (/proc: a slip there
     * removes nothing.) */
    ASSERT_EQ(symlink("/", P("rootlink")), 0);
    char via[600];
    snprintf(via, sizeof via, "%s/../../proc", g_dir);
    const char *sysd[] = {"/proc", "/tmp/../proc", via, P("rootlink/proc"), "/proc/"};
    for (size_t i = 0; i < sizeof sysd / sizeof sysd[0]; i++)
        expect_error(do_remove(c, sysd[i], 1, NULL), CODE(INVALID_ARGUMENT),
                         "system directory '/proc'");
    if (geteuid() == 0)
        expect_error(do_remove(c, "/tmp/../proc", 1, NOBODY), CODE(INVALID_ARGUMENT),
                         "system directory");
    /* The symlink to the root is itself removed as a link. */
    Response *r = do_remove(c, P("rootlink"), 1, NULL);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(stat("/proc/self", &st), 0);
    /* Ordinary removals still work. */
    r = do_remove(c, P("x"), 1, NULL);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(stat(P("x"), &st), -1);
    STOP();
}

/* ============================================ 12: Remove and mount points */

/* Recursive Remove of a tree with a small tmpfs and a bind mount inside:
 * FAILED_PRECONDITION naming the mount point, and nothing under either
 * mount is deleted. Today's main emptied the mounted file system, then
 * failed with EBUSY. */
TEST(remove_stops_at_mount_points)
{
    if (geteuid() != 0) {
        printf("    skipped: mounts need root\n");
        return;
    }
    private_mounts();
    START();
    ASSERT_EQ(mkdir(P("tree"), 0755), 0);
    ASSERT_EQ(mkdir(P("tree/a"), 0755), 0);
    ASSERT_EQ(mkdir(P("tree/a/mnt"), 0755), 0);
    ASSERT_EQ(mount("sa-test", P("tree/a/mnt"), "tmpfs", 0, "size=1m,mode=0755"), 0);
    put_text(P("tree/a/mnt/inside"), "i", 0644);
    ASSERT_EQ(mkdir(P("tree/a/mnt/d"), 0755), 0);
    put_text(P("tree/a/mnt/d/deeper"), "d", 0644);

    Response *r = do_remove(c, P("tree"), 1, NULL);
    expect_error(r, CODE(FAILED_PRECONDITION), P("tree/a/mnt"));
    struct stat st;
    ASSERT_EQ(stat(P("tree/a/mnt/inside"), &st), 0);
    ASSERT_EQ(stat(P("tree/a/mnt/d/deeper"), &st), 0);
    /* The mount point itself, named directly. */
    r = do_remove(c, P("tree/a/mnt"), 1, NULL);
    expect_error(r, CODE(FAILED_PRECONDITION), "mount point");
    ASSERT_EQ(stat(P("tree/a/mnt/inside"), &st), 0);

    /* A bind mount of the same file system (same st_dev) is a mount point
     * too. */
    ASSERT_EQ(umount2(P("tree/a/mnt"), MNT_DETACH), 0);
    ASSERT_EQ(mkdir(P("other"), 0755), 0);
    put_text(P("other/precious"), "p", 0644);
    ASSERT_EQ(mkdir(P("tree/b"), 0755), 0);
    ASSERT_EQ(mount(P("other"), P("tree/b"), NULL, MS_BIND, NULL), 0);
    r = do_remove(c, P("tree"), 1, NULL);
    expect_error(r, CODE(FAILED_PRECONDITION), P("tree/b"));
    ASSERT_EQ(stat(P("other/precious"), &st), 0);
    ASSERT_EQ(umount2(P("tree/b"), MNT_DETACH), 0);

    /* Without mounts, the same tree goes. */
    r = do_remove(c, P("tree"), 1, NULL);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(stat(P("tree"), &st), -1);
    ASSERT_EQ(stat(P("other/precious"), &st), 0);
    STOP();
}

TEST_MAIN(TEST_ENTRY(user_has_no_capability), TEST_ENTRY(fifo_never_holds_a_worker),
          TEST_ENTRY(procfs_read_does_not_block),
          TEST_ENTRY(stuck_workers_neither_block_others_nor_shutdown),
          TEST_ENTRY(watch_as_a_user_sees_what_the_user_may),
          TEST_ENTRY(watch_never_follows_a_swapped_symlink), TEST_ENTRY(watch_bound_overflows),
          TEST_ENTRY(ping_stays_fast_while_a_tree_is_added),
          TEST_ENTRY(frozen_fs_in_a_new_tree_stops_no_one), TEST_ENTRY(list_follows_final_symlink), TEST_ENTRY(remove_refuses_root_aliases),
          TEST_ENTRY(remove_stops_at_mount_points))
