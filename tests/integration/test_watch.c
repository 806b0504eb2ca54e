/* WatchPath at scale and when shared: every watch stream of the agent goes
 * through one inotify instance (root has only 128 of them), the kernel's
 * watches are shared between streams that watch the same directory, and a
 * stream's end never takes another stream's events with it. */
#include "fs_helpers.h"
#include "harness.h"
#define TMPDIR_PREFIX "/tmp/sa-watch-"
#define TMPDIR_CUSTOM_P
#include "tmpdir.h"

#include <dirent.h>
#include <sched.h>
#include <sys/time.h>

typedef Sandbox__Agent__V1__WatchPath WatchReq;

#define K_CREATE SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE
#define K_DELETE SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE
#define K_MODIFY SANDBOX__AGENT__V1__FS_EVENT__KIND__MODIFY


static char *P(const char *fmt, ...)
{
    static char buf[8][512];
    static int i;
    char *p = buf[i++ % 8];
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

/* The agent's inotify descriptors, and the kernel watches they hold. */
static void inotify_state(pid_t pid, int *fds, int *watches)
{
    char path[320], link[128], line[512];
    *fds = *watches = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    ASSERT(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/fd/%s", (int)pid, de->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0)
            continue;
        link[n] = 0;
        if (strcmp(link, "anon_inode:inotify"))
            continue;
        (*fds)++;
        snprintf(path, sizeof path, "/proc/%d/fdinfo/%s", (int)pid, de->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "inotify wd:", 11))
                (*watches)++;
        if (f)
            fclose(f);
    }
    closedir(d);
}

/* Wait (up to 10 s) until the agent holds fds inotify descriptors and, when
 * watches >= 0, that many kernel watches. */
static void inotify_settle(agent_t *a, int fds, int watches)
{
    int nf = 0, nw = 0;
    for (int i = 0; i < 1000; i++) {
        inotify_state(a->pid, &nf, &nw);
        if (nf == fds && (watches < 0 || nw == watches))
            return;
        usleep(10000);
    }
    FAIL("agent holds %d inotify descriptors with %d watches, expected %d with %d", nf, nw, fds,
         watches);
}

static uint64_t watch_send(sa_client_t *c, const char *path, int recursive)
{
    Request req = REQUEST_INIT;
    WatchReq w = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    w.path = (char *)path;
    w.recursive = recursive;
    req.op_case = OP(WATCH);
    req.watch = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return req.id;
}

/* Skip events until one of kind for path; an event for forbid (if set)
 * fails the test. */
static void expect_event(sa_client_t *c, uint64_t id, int kind, const char *path,
                         const char *forbid)
{
    for (;;) {
        Response *r = recv_id(c, id);
        ASSERT_RESULT(r, FS_EVENT);
        ASSERT(!r->done);
        const char *p = r->fs_event->path ? r->fs_event->path : "";
        if (forbid && !strcmp(p, forbid))
            FAIL("stream %llu reported %s", (unsigned long long)id, forbid);
        int hit = (int)r->fs_event->kind == kind && !strcmp(p, path);
        sa_response_free(r);
        if (hit)
            return;
    }
}

/* Nothing more for id within ms (the stream is alive and quiet). */
static void expect_quiet(sa_client_t *c, uint64_t id, int ms)
{
    Response *r = NULL;
    int rc = sa_client_recv_id(c, id, &r, ms);
    if (rc == 0)
        FAIL("stream %llu sent kind %d path %s", (unsigned long long)id,
             r->result_case == RES(FS_EVENT) ? (int)r->fs_event->kind : -1,
             r->result_case == RES(FS_EVENT) && r->fs_event->path ? r->fs_event->path : "-");
    ASSERT_EQ(rc, -ETIMEDOUT);
}

static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    ASSERT(fd >= 0);
    close(fd);
}

/* ------------------------------------------------------------ the tests */

#define NDIRS 300
#define NCONNS 5

/* 300 watches on one connection, and 300 more on the same directories
 * across 5 connections: all of them work, through one inotify descriptor
 * holding one kernel watch per directory. With an instance per stream this
 * failed after about 128. */
TEST(many_streams_one_instance)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *one = agent_connect(&a), *many[NCONNS];
    static uint64_t ids1[NDIRS], idsn[NDIRS];
    for (int i = 0; i < NDIRS; i++)
        ASSERT_EQ(mkdir(P("d%d", i), 0755), 0);
    for (int i = 0; i < NCONNS; i++)
        many[i] = agent_connect(&a);
    for (int i = 0; i < NDIRS; i++) {
        ids1[i] = watch_send(one, P("d%d", i), 0);
        idsn[i] = watch_send(many[i % NCONNS], P("d%d", i), i % 2);
    }
    ping_ok(one);
    inotify_settle(&a, 1, NDIRS);
    for (int i = 0; i < NDIRS; i++) {
        watch_wait_ready(one, ids1[i], P("d%d", i));
        watch_wait_ready(many[i % NCONNS], idsn[i], P("d%d", i));
    }
    for (int i = 0; i < NDIRS; i++)
        touch(P("d%d/f", i));
    for (int i = 0; i < NDIRS; i++) {
        expect_event(one, ids1[i], K_CREATE, P("d%d/f", i), NULL);
        expect_event(many[i % NCONNS], idsn[i], K_CREATE, P("d%d/f", i), NULL);
    }
    /* The first connection's streams end; the others' keep working, and the
     * kernel watches they share stay. */
    for (int i = 0; i < NDIRS; i++)
        cancel_ok(one, ids1[i]);
    ping_ok(one);
    inotify_settle(&a, 1, NDIRS);
    for (int i = 0; i < NDIRS; i++)
        touch(P("d%d/g", i));
    for (int i = 0; i < NDIRS; i++)
        expect_event(many[i % NCONNS], idsn[i], K_CREATE, P("d%d/g", i), NULL);
    /* Connections closing end the rest: the descriptor goes with the last. */
    for (int i = 0; i < NCONNS; i++)
        sa_client_close(many[i]);
    inotify_settle(&a, 0, 0);
    /* And a new watch opens it again. */
    uint64_t id = watch_send(one, P("d0"), 0);
    watch_wait_ready(one, id, P("d0"));
    inotify_settle(&a, 1, 1);
    cancel_ok(one, id);
    inotify_settle(&a, 0, 0);
    sa_client_close(one);
    agent_stop(&a);
    tmpdir_remove();
}

/* Two streams on one directory (one kernel watch): both get each event;
 * cancelling one leaves the other working. */
TEST(two_streams_one_directory)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a), *c2 = agent_connect(&a);
    ASSERT_EQ(mkdir(P("w"), 0755), 0);
    uint64_t x = watch_send(c, P("w"), 0), y = watch_send(c, P("w"), 0);
    uint64_t z = watch_send(c2, P("w"), 1);
    watch_wait_ready(c, x, P("w"));
    watch_wait_ready(c, y, P("w"));
    watch_wait_ready(c2, z, P("w"));
    inotify_settle(&a, 1, 1);
    touch(P("w/a"));
    expect_event(c, x, K_CREATE, P("w/a"), NULL);
    expect_event(c, y, K_CREATE, P("w/a"), NULL);
    expect_event(c2, z, K_CREATE, P("w/a"), NULL);
    cancel_ok(c, x);
    inotify_settle(&a, 1, 1);
    FILE *f = fopen(P("w/a"), "a");
    fputs("more", f);
    fclose(f);
    expect_event(c, y, K_MODIFY, P("w/a"), NULL);
    expect_event(c2, z, K_MODIFY, P("w/a"), NULL);
    expect_quiet(c, x, 100); /* nothing after its CANCELLED */
    cancel_ok(c2, z);
    ASSERT_EQ(unlink(P("w/a")), 0);
    expect_event(c, y, K_DELETE, P("w/a"), NULL);
    cancel_ok(c, y);
    inotify_settle(&a, 0, 0);
    sa_client_close(c);
    sa_client_close(c2);
    agent_stop(&a);
    tmpdir_remove();
}

/* A recursive and a non-recursive watch of one tree, and a third watch
 * reaching a subdirectory through a symbolic link: they share kernel
 * watches, yet each reports what it asked for, named by its own path. */
TEST(recursive_and_flat_of_one_tree)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    ASSERT_EQ(mkdir(P("t"), 0755), 0);
    ASSERT_EQ(mkdir(P("t/s"), 0755), 0);
    ASSERT_EQ(symlink(P("t/s"), P("link")), 0);
    uint64_t rec = watch_send(c, P("t"), 1), flat = watch_send(c, P("t"), 0);
    uint64_t via = watch_send(c, P("link"), 0);
    watch_wait_ready(c, rec, P("t"));
    watch_wait_ready(c, flat, P("t"));
    watch_wait_ready(c, via, P("t/s"));
    inotify_settle(&a, 1, 2);

    touch(P("t/s/f"));
    touch(P("t/g"));
    expect_event(c, rec, K_CREATE, P("t/s/f"), NULL);
    expect_event(c, rec, K_CREATE, P("t/g"), NULL);
    expect_event(c, flat, K_CREATE, P("t/g"), P("t/s/f"));
    expect_event(c, via, K_CREATE, P("link/f"), P("t/s/f"));

    /* A new subdirectory: the recursive watch adds it, the flat one not. */
    ASSERT_EQ(mkdir(P("t/n"), 0755), 0);
    expect_event(c, rec, K_CREATE, P("t/n"), NULL);
    expect_event(c, flat, K_CREATE, P("t/n"), NULL);
    inotify_settle(&a, 1, 3);
    touch(P("t/n/x"));
    touch(P("t/h"));
    expect_event(c, rec, K_CREATE, P("t/n/x"), NULL);
    expect_event(c, flat, K_CREATE, P("t/h"), P("t/n/x"));

    /* The recursive watch ends: the flat one still sees the root, and the
     * subdirectories' watches that only it held are gone. */
    cancel_ok(c, rec);
    inotify_settle(&a, 1, 2); /* t (flat) and t/s (via the link) */
    touch(P("t/i"));
    expect_event(c, flat, K_CREATE, P("t/i"), NULL);
    touch(P("t/s/j"));
    expect_event(c, via, K_CREATE, P("link/j"), NULL);
    cancel_ok(c, flat);
    cancel_ok(c, via);
    inotify_settle(&a, 0, 0);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* A watched directory removed: its DELETE is reported and the stream stays
 * open (quiet) until cancelled; its kernel watch is gone, and a watch of a
 * sibling is untouched. */
TEST(watched_directory_removed)
{
    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    ASSERT_EQ(mkdir(P("gone"), 0755), 0);
    ASSERT_EQ(mkdir(P("gone/sub"), 0755), 0);
    ASSERT_EQ(mkdir(P("stays"), 0755), 0);
    uint64_t g = watch_send(c, P("gone"), 1), g2 = watch_send(c, P("gone"), 0);
    uint64_t s = watch_send(c, P("stays"), 0);
    watch_wait_ready(c, g, P("gone"));
    watch_wait_ready(c, g2, P("gone"));
    watch_wait_ready(c, s, P("stays"));
    inotify_settle(&a, 1, 3);
    ASSERT_EQ(rmdir(P("gone/sub")), 0);
    ASSERT_EQ(rmdir(P("gone")), 0);
    expect_event(c, g, K_DELETE, P("gone/sub"), NULL);
    expect_event(c, g, K_DELETE, P("gone"), NULL);
    expect_event(c, g2, K_DELETE, P("gone"), NULL);
    inotify_settle(&a, 1, 1);
    ping_ok(c);
    expect_quiet(c, g, 200);
    expect_quiet(c, g2, 0);
    /* Made again, the directory is a new inode: the old watches do not see it. */
    ASSERT_EQ(mkdir(P("gone"), 0755), 0);
    touch(P("gone/new"));
    touch(P("stays/f"));
    expect_event(c, s, K_CREATE, P("stays/f"), NULL);
    expect_quiet(c, g, 100);
    cancel_ok(c, g);
    cancel_ok(c, g2);
    inotify_settle(&a, 1, 1);
    cancel_ok(c, s);
    inotify_settle(&a, 0, 0);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

/* The kernel's watch limit, lowered for a user namespace of our own (the
 * machine's limit is not touched): a recursive watch that reaches it in its
 * first walk fails with RESOURCE_EXHAUSTED and gives back every watch it
 * added, but not one another stream shares; one that reaches it later, as
 * new directories appear, ends the same way. */
TEST(watch_limit_reached)
{
    unsigned uid = (unsigned)getuid(), gid = (unsigned)getgid();
    if (unshare(CLONE_NEWUSER) < 0) {
        printf("  skip: no user namespace: %s\n", strerror(errno));
        return;
    }
    static const char *const files[] = {"/proc/self/uid_map", "/proc/self/setgroups",
                                        "/proc/self/gid_map"};
    for (int i = 0; i < 3; i++) {
        char map[32];
        if (i == 1)
            snprintf(map, sizeof map, "deny");
        else
            snprintf(map, sizeof map, "0 %u 1", i ? gid : uid);
        int fd = open(files[i], O_WRONLY);
        if (fd < 0 || write(fd, map, strlen(map)) < 0) {
            printf("  skip: cannot write %s: %s\n", files[i], strerror(errno));
            return;
        }
        close(fd);
    }
    int fd;
    fd = open("/proc/sys/user/max_inotify_watches", O_WRONLY);
    if (fd < 0 || write(fd, "20", 2) != 2) {
        printf("  skip: cannot lower max_inotify_watches: %s\n", strerror(errno));
        return;
    }
    close(fd);

    agent_t a;
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    ASSERT_EQ(mkdir(P("t"), 0755), 0);
    for (int i = 0; i < 30; i++)
        ASSERT_EQ(mkdir(P("t/d%d", i), 0755), 0);
    uint64_t flat = watch_send(c, P("t"), 0);
    watch_wait_ready(c, flat, P("t"));
    expect_error(recv_id(c, watch_send(c, P("t"), 1)), CODE(RESOURCE_EXHAUSTED),
                 "max_user_watches");
    inotify_settle(&a, 1, 1);
    touch(P("t/f"));
    expect_event(c, flat, K_CREATE, P("t/f"), NULL);

    /* Within the limit at first, then past it as directories appear. */
    ASSERT_EQ(mkdir(P("t/d0/a"), 0755), 0);
    uint64_t rec = watch_send(c, P("t/d0"), 1);
    watch_wait_ready(c, rec, P("t/d0"));
    inotify_settle(&a, 1, 3);
    for (int i = 0; i < 30; i++)
        ASSERT_EQ(mkdir(P("t/d0/n%d", i), 0755), 0);
    for (;;) {
        Response *r = recv_id(c, rec);
        if (r->done) {
            expect_error(r, CODE(RESOURCE_EXHAUSTED), "max_user_watches");
            break;
        }
        ASSERT_RESULT(r, FS_EVENT);
        sa_response_free(r);
    }
    inotify_settle(&a, 1, 1);
    touch(P("t/g"));
    expect_event(c, flat, K_CREATE, P("t/g"), NULL);
    cancel_ok(c, flat);
    inotify_settle(&a, 0, 0);
    sa_client_close(c);
    agent_stop(&a);
    tmpdir_remove();
}

TEST_MAIN(TEST_ENTRY_T(many_streams_one_instance, 120), TEST_ENTRY(two_streams_one_directory),
          TEST_ENTRY(recursive_and_flat_of_one_tree), TEST_ENTRY(watched_directory_removed),
          TEST_ENTRY(watch_limit_reached))
