/* Hardening of the file operations: what a hostile client or workload
 * tried, each against the real agent. A `user` is exactly that user (no
 * capability of root's helps it), a FIFO or a blocking file never holds a
 * worker, Remove never takes the root, a system directory or another file
 * system with it, and ListDirectory follows a symlink it is pointed at. */
#include "harness.h"
#define TMPDIR_PREFIX "/tmp/sa-hfs-"
#include "tmpdir.h"

#include <dirent.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>

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

static void put_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    close(fd);
}

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

__attribute__((unused)) static Response *do_stat(sa_client_t *c, const char *path)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    st.path = (char *)path;
    req.op_case = OP(STAT);
    req.stat = &st;
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
    char *buf = NULL;
    size_t len = 0;
    for (;;) {
        Response *r = recv_id(c, req.id);
        if (r->result_case == RES(CHUNK)) {
            buf = realloc(buf, len + r->chunk->data.len + 1);
            ASSERT(buf);
            memcpy(buf + len, r->chunk->data.data, r->chunk->data.len);
            len += r->chunk->data.len;
            buf[len] = 0;
            sa_response_free(r);
            continue;
        }
        ASSERT(r->done);
        if (out)
            *out = buf;
        else
            free(buf);
        if (outlen)
            *outlen = len;
        return r;
    }
}

static void expect_error_msg(Response *r, int code, const char *needle)
{
    if (r->result_case != RES(ERROR))
        FAIL("expected error %s naming '%s', got result %d", sa_error_code_name(code), needle,
             (int)r->result_case);
    if ((int)r->error->code != code)
        FAIL("expected %s, got %s: %s", sa_error_code_name(code),
             sa_error_code_name(r->error->code), r->error->message);
    if (needle && !strstr(r->error->message, needle))
        FAIL("message '%s' does not name '%s'", r->error->message, needle);
    ASSERT(r->done);
    sa_response_free(r);
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
    put_file(P("secret/inner/file"), "root only");
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
    expect_error_msg(read_as(c, P("secret/inner/file"), NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "secret/inner/file");
    expect_error_msg(read_as(c, path, NOBODY, 0, NULL, NULL), CODE(PERMISSION_DENIED), "cwd");
    Request sreq = REQUEST_INIT;
    Sandbox__Agent__V1__Stat sst = SANDBOX__AGENT__V1__STAT__INIT;
    sst.path = path;
    sst.user = NOBODY;
    sreq.op_case = OP(STAT);
    sreq.stat = &sst;
    expect_error_msg(call(c, &sreq), CODE(PERMISSION_DENIED), "cwd");
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);

    /* The agent's maps: root reads them, nobody does not. */
    snprintf(path, sizeof path, "/proc/%d/maps", (int)a.pid);
    r = read_as(c, path, NULL, 0, NULL, NULL);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_GT(r->file_end->size, 0);
    sa_response_free(r);
    expect_error_msg(read_as(c, path, NOBODY, 0, NULL, NULL), CODE(PERMISSION_DENIED), path);
    expect_error_msg(read_as(c, "/proc/self/maps", NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "/proc/self/maps");
    expect_error_msg(read_as(c, "/proc/thread-self/status", NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "status");
    expect_error_msg(read_as(c, "/proc/1/maps", NOBODY, 0, NULL, NULL),
                     CODE(PERMISSION_DENIED), "maps");
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

/* ============================================ 13: listing through a symlink */

/* ListDirectory of a symlink to a directory lists the directory (as `ls`
 * does), under the path asked for; Remove of the same symlink removes the
 * link only. Today's main answered "Not a directory" though Stat said
 * DIRECTORY. */
TEST(list_follows_final_symlink)
{
    START();
    ASSERT_EQ(mkdir(P("real"), 0755), 0);
    put_file(P("real/f"), "x");
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
    expect_error_msg(do_list(c, P("flink"), NULL), CODE(FAILED_PRECONDITION), "not a directory");

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
    put_file(P("keep/canary"), "c");

    const char *roots[] = {"/", "/.", "/..", "/tmp/..", "//", "/./", "/tmp/../."};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
        expect_error_msg(do_remove(c, roots[i], 0, NULL), CODE(INVALID_ARGUMENT), "refusing");
    /* "/" and its exact spellings recursive too: refused before any walk. */
    expect_error_msg(do_remove(c, "/", 1, NULL), CODE(INVALID_ARGUMENT), "root directory");
    /* "." and ".." recursive, where a slip would cost only the scratch
     * directory. */
    expect_error_msg(do_remove(c, P("x/.."), 1, NULL), CODE(INVALID_ARGUMENT), "refusing");
    expect_error_msg(do_remove(c, P("x/."), 1, NULL), CODE(INVALID_ARGUMENT), "refusing");
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
        expect_error_msg(do_remove(c, sysd[i], 1, NULL), CODE(INVALID_ARGUMENT),
                         "system directory '/proc'");
    if (geteuid() == 0)
        expect_error_msg(do_remove(c, "/tmp/../proc", 1, NOBODY), CODE(INVALID_ARGUMENT),
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

/* A mount namespace of the test's own, so every mount goes with it whatever
 * happens; the agent started afterwards shares it. */
static void private_mounts(void)
{
    if (unshare(CLONE_NEWNS) < 0)
        FAIL("unshare(CLONE_NEWNS): %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        FAIL("mount --make-rprivate /: %s", strerror(errno));
}

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
    put_file(P("tree/a/mnt/inside"), "i");
    ASSERT_EQ(mkdir(P("tree/a/mnt/d"), 0755), 0);
    put_file(P("tree/a/mnt/d/deeper"), "d");

    Response *r = do_remove(c, P("tree"), 1, NULL);
    expect_error_msg(r, CODE(FAILED_PRECONDITION), P("tree/a/mnt"));
    struct stat st;
    ASSERT_EQ(stat(P("tree/a/mnt/inside"), &st), 0);
    ASSERT_EQ(stat(P("tree/a/mnt/d/deeper"), &st), 0);
    /* The mount point itself, named directly. */
    r = do_remove(c, P("tree/a/mnt"), 1, NULL);
    expect_error_msg(r, CODE(FAILED_PRECONDITION), "mount point");
    ASSERT_EQ(stat(P("tree/a/mnt/inside"), &st), 0);

    /* A bind mount of the same file system (same st_dev) is a mount point
     * too. */
    ASSERT_EQ(umount2(P("tree/a/mnt"), MNT_DETACH), 0);
    ASSERT_EQ(mkdir(P("other"), 0755), 0);
    put_file(P("other/precious"), "p");
    ASSERT_EQ(mkdir(P("tree/b"), 0755), 0);
    ASSERT_EQ(mount(P("other"), P("tree/b"), NULL, MS_BIND, NULL), 0);
    r = do_remove(c, P("tree"), 1, NULL);
    expect_error_msg(r, CODE(FAILED_PRECONDITION), P("tree/b"));
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

TEST_MAIN(TEST_ENTRY(user_has_no_capability), TEST_ENTRY(list_follows_final_symlink), TEST_ENTRY(remove_refuses_root_aliases),
          TEST_ENTRY(remove_stops_at_mount_points))
