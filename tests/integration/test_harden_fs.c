/* Hardening of the file operations: what a hostile client or workload
 * tried, each against the real agent. A `user` is exactly that user (no
 * capability of root's helps it), a FIFO or a blocking file never holds a
 * worker, Remove never takes the root, a system directory or another file
 * system with it, and ListDirectory follows a symlink it is pointed at. */
#include "harness.h"
#define TMPDIR_PREFIX "/tmp/sa-hfs-"
#include "tmpdir.h"

#include <dirent.h>
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
__attribute__((unused)) static Response *read_as(sa_client_t *c, const char *path, const char *user, uint64_t length,
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

TEST_MAIN(TEST_ENTRY(list_follows_final_symlink), TEST_ENTRY(remove_refuses_root_aliases),
          TEST_ENTRY(remove_stops_at_mount_points))
