/* test_ctl_files.c - sandboxctl's file commands through the real binary:
 * cp keeps what cp -a keeps (raw names, links as links, modes, times) both
 * ways; ls -l and stat show every file type; cat carries on past a missing
 * file; errors speak of commands. The agent runs on this machine, so its
 * side is a directory of the same scratch area. */
#define TMPDIR_PREFIX "/tmp/sa-ctlf-"
#include "ctl_helpers.h"
#include "tmpdir.h"

#include <dirent.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

static agent_t A;

#define BAD_NAME "bad\xff\xfe name"   /* not UTF-8, with a space */
#define BAD_DIR "dir\xc3\x28"         /* an invalid two-byte sequence */

static void set_mtime(const char *path, time_t sec, long nsec)
{
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = sec, .tv_nsec = nsec}};
    ASSERT_EQ(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* The tree every copy test uses. */
static void make_tree(const char *root)
{
    char p[1024];
    ASSERT_EQ(mkdir(root, 0755), 0);
#define AT(name) (snprintf(p, sizeof p, "%s/%s", root, name), p)
    put_text(AT("plain"), "plain\n", 0640);
    put_text(AT("exec"), "#!/bin/sh\n", 0755);
    put_text(AT("private"), "secret", 0600);
    put_text(AT("with space"), "space", 0644);
    put_text(AT(BAD_NAME), "raw bytes in the name", 0604);
    ASSERT_EQ(mkdir(AT(BAD_DIR), 0750), 0);
    put_text(AT(BAD_DIR "/inner"), "inner", 0644);
    ASSERT_EQ(mkdir(AT("empty"), 0755), 0);
    ASSERT_EQ(mkdir(AT("closed"), 0700), 0);
    put_text(AT("closed/x"), "x", 0400);
    ASSERT_EQ(mkdir(AT("deep"), 0755), 0);
    ASSERT_EQ(mkdir(AT("deep/er"), 0711), 0);
    ASSERT_EQ(mkdir(AT("deep/er/est"), 0755), 0);
    ASSERT_EQ(symlink("/etc/hostname", AT("abs-link")), 0);
    ASSERT_EQ(symlink("plain", AT("rel-link")), 0);
    ASSERT_EQ(symlink("../plain", AT("deep/up-link")), 0);
    ASSERT_EQ(symlink("no/such/target", AT("dangling")), 0);
    ASSERT_EQ(symlink("deep", AT("dir-link")), 0);
    ASSERT_EQ(symlink(BAD_NAME, AT("link-to-" BAD_NAME)), 0);
    /* Times: distinct, old, with nanoseconds; directories last. */
    const char *files[] = {"plain", "exec", "private", "with space", BAD_NAME, BAD_DIR "/inner",
                           "closed/x", "abs-link", "rel-link", "deep/up-link", "dangling",
                           "dir-link", "link-to-" BAD_NAME};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        set_mtime(AT(files[i]), 1500000000 + (time_t)i * 1000, 123456789);
    const char *dirs[] = {"deep/er/est", "deep/er", "deep", "empty", "closed", BAD_DIR};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        set_mtime(AT(dirs[i]), 1400000000 + (time_t)i * 1000, 987654321);
#undef AT
}

/* a and b hold the same tree: names, types, modes, link targets, contents
 * (diff -r --no-dereference), and mtimes when times. */
static void compare_trees(const char *a, const char *b, int times)
{
    struct stat sa, sb;
    ASSERT_EQ(lstat(a, &sa), 0);
    if (lstat(b, &sb) != 0)
        FAIL("%s: missing in the copy", b);
    if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT))
        FAIL("%s: type %o, copy %o", a, sa.st_mode & S_IFMT, sb.st_mode & S_IFMT);
    if (!S_ISLNK(sa.st_mode) && (sa.st_mode & 07777) != (sb.st_mode & 07777))
        FAIL("%s: mode %04o, copy %04o", a, sa.st_mode & 07777, sb.st_mode & 07777);
    if (times && (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec || sa.st_mtim.tv_nsec != sb.st_mtim.tv_nsec))
        FAIL("%s: mtime %lld.%09ld, copy %lld.%09ld", a, (long long)sa.st_mtim.tv_sec,
             sa.st_mtim.tv_nsec, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
    if (S_ISLNK(sa.st_mode)) {
        char ta[PATH_MAX], tb[PATH_MAX];
        ssize_t na = readlink(a, ta, sizeof ta), nb = readlink(b, tb, sizeof tb);
        ASSERT(na > 0);
        ASSERT_EQ(na, nb);
        ASSERT_MEM_EQ(ta, tb, (size_t)na);
    }
    if (!S_ISDIR(sa.st_mode))
        return;
    DIR *d = opendir(a);
    ASSERT(d);
    int na = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char ca[1024], cb[1024];
        snprintf(ca, sizeof ca, "%s/%s", a, de->d_name);
        snprintf(cb, sizeof cb, "%s/%s", b, de->d_name);
        compare_trees(ca, cb, times);
        na++;
    }
    closedir(d);
    /* Nothing extra in the copy. */
    int nb = 0;
    d = opendir(b);
    ASSERT(d);
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            nb++;
    closedir(d);
    if (na != nb)
        FAIL("%s has %d entries, its copy %s %d", a, na, b, nb);
}

static void diff_r(const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "diff -r --no-dereference '%s' '%s'", a, b);
    ASSERT_EQ(system(cmd), 0);
}

static char *remote(const char *path)
{
    static char buf[4][600];
    static int i;
    char *p = buf[i++ % 4];
    snprintf(p, 600, ":%s", path);
    return p;
}

TEST(cp_archive_round_trip_keeps_names_links_modes_times)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    make_tree(P("src"));
    /* Up: into a fresh path. */
    CTL(&o, A.addr, "cp", "-a", P("src"), remote(P("up")));
    if (o.status)
        FAIL("cp -a up: exit %d: %s", o.status, o.err);
    ASSERT_EQ(o.err_len, 0);
    ctl_out_free(&o);
    compare_trees(P("src"), P("up"), 1);
    diff_r(P("src"), P("up"));
    /* The absolute link is a link, not a copy of this machine's file. */
    struct stat st;
    ASSERT_EQ(lstat(P("up/abs-link"), &st), 0);
    ASSERT(S_ISLNK(st.st_mode));
    ASSERT_EQ(lstat(P("up/dir-link"), &st), 0);
    ASSERT(S_ISLNK(st.st_mode));
    /* Down: into an existing directory, as cp does (DST/NAME). */
    ASSERT_EQ(mkdir(P("down"), 0755), 0);
    CTL(&o, A.addr, "cp", "-a", remote(P("up")), P("down"));
    if (o.status)
        FAIL("cp -a down: exit %d: %s", o.status, o.err);
    ctl_out_free(&o);
    compare_trees(P("src"), P("down/up"), 1);
    diff_r(P("src"), P("down/up"));
    agent_stop(&A);
    tmpdir_remove();
}

TEST(cp_r_keeps_modes_and_links_not_times)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    make_tree(P("src"));
    CTL(&o, A.addr, "cp", "-r", P("src"), remote(P("up")));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    CTL(&o, A.addr, "cp", "-r", remote(P("up")), P("down"));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    compare_trees(P("src"), P("up"), 0);
    compare_trees(P("src"), P("down"), 0);
    struct stat st;
    ASSERT_EQ(stat(P("down/plain"), &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0640);
    ASSERT_NE(st.st_mtim.tv_sec, 1500000000); /* -p not given */
    ASSERT_EQ(stat(P("down/closed"), &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0700);
    /* -p on a single file: its time too. */
    CTL(&o, A.addr, "cp", "-p", remote(P("src/plain")), P("one"));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    ASSERT_EQ(stat(P("one"), &st), 0);
    ASSERT_EQ(st.st_mtim.tv_sec, 1500000000);
    ASSERT_EQ(st.st_mtim.tv_nsec, 123456789);
    ASSERT_EQ(st.st_mode & 07777, 0640);
    agent_stop(&A);
    tmpdir_remove();
}

TEST(cp_bad_entries_are_reported_and_the_copy_carries_on)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    make_tree(P("src"));
    ASSERT_EQ(mkfifo(P("src/a-fifo"), 0644), 0);
    /* -L: links followed; the dangling one is reported, all else copied. */
    CTL(&o, A.addr, "cp", "-r", "-L", P("src"), remote(P("up")));
    ASSERT_EQ(o.status, 1);
    ASSERT(strstr(o.err, "dangling"));
    ASSERT(strstr(o.err, "a-fifo"));
    ctl_out_free(&o);
    struct stat st;
    ASSERT_EQ(lstat(P("up/abs-link"), &st), 0);
    ASSERT(S_ISREG(st.st_mode)); /* followed: a copy of the file */
    ASSERT_EQ(lstat(P("up/dir-link/er/est"), &st), 0);
    ASSERT(S_ISDIR(st.st_mode));
    ASSERT_EQ(lstat(P("up/with space"), &st), 0); /* after the bad entries too */
    ASSERT_EQ(lstat(P("up/" BAD_DIR "/inner"), &st), 0);
    ASSERT_NE(lstat(P("up/dangling"), &st), 0);
    ASSERT_NE(lstat(P("up/a-fifo"), &st), 0);
    /* Down with -L: the same. */
    CTL(&o, A.addr, "cp", "-r", "-L", remote(P("src")), P("down"));
    ASSERT_EQ(o.status, 1);
    ASSERT(strstr(o.err, "dangling") || strstr(o.err, "no/such/target"));
    ASSERT(strstr(o.err, "a fifo"));
    ctl_out_free(&o);
    ASSERT_EQ(lstat(P("down/rel-link"), &st), 0);
    ASSERT(S_ISREG(st.st_mode));
    ASSERT_EQ(lstat(P("down/" BAD_NAME), &st), 0);
    /* A directory without -r. */
    CTL(&o, A.addr, "cp", P("src"), remote(P("x")));
    ASSERT_EQ(o.status, 1);
    ASSERT(strstr(o.err, "use -r"));
    ctl_out_free(&o);
    /* Exactly one side is the agent's. */
    CTL(&o, A.addr, "cp", P("src"), P("y"));
    ASSERT_EQ(o.status, 2);
    ASSERT(strstr(o.err, "':'"));
    ctl_out_free(&o);
    agent_stop(&A);
    tmpdir_remove();
}

TEST(cp_several_sources_into_a_directory)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    make_tree(P("src"));
    ASSERT_EQ(mkdir(P("up"), 0755), 0);
    CTL(&o, A.addr, "cp", "-a", P("src/plain"), P("src/" BAD_NAME), P("src/deep"),
        remote(P("up")));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    compare_trees(P("src/plain"), P("up/plain"), 1);
    compare_trees(P("src/" BAD_NAME), P("up/" BAD_NAME), 1);
    compare_trees(P("src/deep"), P("up/deep"), 1);
    ASSERT_EQ(mkdir(P("down"), 0755), 0);
    CTL(&o, A.addr, "cp", "-a", remote(P("up/plain")), remote(P("up/deep")), P("down"));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    compare_trees(P("src/deep"), P("down/deep"), 1);
    compare_trees(P("src/plain"), P("down/plain"), 1);
    /* Several sources need a directory; mixed sides are a usage error. */
    CTL(&o, A.addr, "cp", P("src/plain"), P("src/exec"), remote(P("up/plain")));
    ASSERT_EQ(o.status, 1);
    ASSERT(strstr(o.err, "is not a directory"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "cp", P("src/plain"), remote(P("src/exec")), remote(P("up")));
    ASSERT_EQ(o.status, 2);
    ctl_out_free(&o);
    agent_stop(&A);
    tmpdir_remove();
}

static void make_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
}

/* The line of `ls -l` output naming name. */
static const char *line_of(const char *out, const char *name)
{
    static char line[1024];
    for (const char *p = out; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(line, sizeof line, "%.*s", (int)n, p);
        if (strstr(line, name))
            return line;
        p += n + (e ? 1 : 0);
    }
    FAIL("no line with '%s' in:\n%s", name, out);
}

TEST(ls_l_and_stat_show_every_file_type)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    ASSERT_EQ(mkdir(P("d"), 0755), 0);
    ASSERT_EQ(mkfifo(P("d/fifo"), 0640), 0);
    make_socket(P("d/sock"));
    put_text(P("d/file"), "12345", 0644);
    ASSERT_EQ(symlink("file", P("d/link")), 0);
    int have_blk = mknod(P("d/blk"), S_IFBLK | 0600, makedev(7, 200)) == 0;
    int have_chr = mknod(P("d/chr"), S_IFCHR | 0600, makedev(1, 3)) == 0;
    CTL(&o, A.addr, "ls", "-l", P("d"));
    ASSERT_EQ(o.status, 0);
    ASSERT_EQ(line_of(o.out, "fifo")[0], 'p');
    ASSERT_EQ(line_of(o.out, "sock")[0], 's');
    ASSERT_EQ(line_of(o.out, "file")[0], '-');
    ASSERT_EQ(line_of(o.out, "link")[0], 'l');
    ASSERT(strstr(line_of(o.out, "link"), "link -> file"));
    if (have_blk) {
        ASSERT_EQ(line_of(o.out, "blk")[0], 'b');
        ASSERT(strstr(line_of(o.out, "blk"), " 7, 200 "));
    }
    if (have_chr) {
        ASSERT_EQ(line_of(o.out, "chr")[0], 'c');
        ASSERT(strstr(line_of(o.out, "chr"), " 1, 3 "));
    }
    ctl_out_free(&o);
    /* A device the machine always has. */
    CTL(&o, A.addr, "ls", "-l", "/dev/null");
    ASSERT_EQ(o.status, 0);
    ASSERT_EQ(o.out[0], 'c');
    ASSERT(strstr(o.out, " 1, 3 "));
    ctl_out_free(&o);
    /* ls -l LINK: the link itself; -L: what it points to. */
    CTL(&o, A.addr, "ls", "-l", P("d/link"));
    ASSERT_EQ(o.out[0], 'l');
    ASSERT(strstr(o.out, "-> file"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "ls", "-lL", P("d/link"));
    ASSERT_EQ(o.out[0], '-');
    ASSERT(strstr(o.out, " 5 "));
    ctl_out_free(&o);
    /* A link to a directory, listed through with -L. */
    ASSERT_EQ(symlink(P("d"), P("dl")), 0);
    CTL(&o, A.addr, "ls", "-L", P("dl"));
    ASSERT_EQ(o.status, 0);
    ASSERT(strstr(o.out, "fifo\n"));
    ctl_out_free(&o);
    /* stat says the type in words, and JSON says it by name. */
    CTL(&o, A.addr, "stat", P("d/fifo"), P("d/sock"), "/dev/null");
    ASSERT_EQ(o.status, 0);
    ASSERT(strstr(o.out, "Type: fifo"));
    ASSERT(strstr(o.out, "Type: socket"));
    ASSERT(strstr(o.out, "Type: character device 1, 3"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "--json", "stat", P("d/fifo"), P("d/sock"), "/dev/null", P("d/link"));
    json_lines_ok(o.out, o.out_len, 4);
    ASSERT(strstr(o.out, "\"type\":\"fifo\""));
    ASSERT(strstr(o.out, "\"type\":\"socket\""));
    ASSERT(strstr(o.out, "\"type\":\"char_device\""));
    ASSERT(strstr(o.out, "\"rdev_major\":1,\"rdev_minor\":3"));
    ASSERT(strstr(o.out, "\"type\":\"symlink\""));
    ctl_out_free(&o);
    agent_stop(&A);
    tmpdir_remove();
}

TEST(raw_names_in_ls_stat_rm_mv_and_json)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    make_tree(P("t"));
    CTL(&o, A.addr, "ls", P("t"));
    ASSERT_EQ(o.status, 0);
    ASSERT(memmem(o.out, o.out_len, BAD_NAME "\n", strlen(BAD_NAME) + 1));
    ASSERT(memmem(o.out, o.out_len, BAD_DIR "/\n", strlen(BAD_DIR) + 2));
    ctl_out_free(&o);
    /* Every line of every --json listing parses; raw names are base64. */
    CTL(&o, A.addr, "--json", "ls", "-a", "-R", P("t"));
    ASSERT_EQ(o.status, 0);
    ASSERT_GE(json_lines_ok(o.out, o.out_len, -1), 18);
    ASSERT(strstr(o.out, "\"name_raw\":\"YmFk//4gbmFtZQ==\"")); /* base64 of BAD_NAME */
    ctl_out_free(&o);
    CTL(&o, A.addr, "mv", P("t/" BAD_NAME), P("t/" BAD_DIR));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    struct stat st;
    ASSERT_EQ(stat(P("t/" BAD_DIR "/" BAD_NAME), &st), 0);
    CTL(&o, A.addr, "cat", P("t/" BAD_DIR "/" BAD_NAME));
    ASSERT_STR_EQ(o.out, "raw bytes in the name");
    ctl_out_free(&o);
    CTL(&o, A.addr, "rm", "-r", P("t/" BAD_DIR));
    ASSERT_EQ(o.status, 0);
    ctl_out_free(&o);
    ASSERT_NE(lstat(P("t/" BAD_DIR), &st), 0);
    agent_stop(&A);
    tmpdir_remove();
}

TEST(cat_carries_on_and_errors_speak_of_commands)
{
    tmpdir_make();
    agent_start(&A, NULL);
    ctl_out_t o;
    put_text(P("b"), "B\n", 0644);
    put_text(P("c"), "C\n", 0644);
    ASSERT_EQ(mkdir(P("d"), 0755), 0);
    put_text(P("d/x"), "x", 0644);
    CTL(&o, A.addr, "cat", P("missing"), P("b"), P("d"), P("c"));
    ASSERT_EQ(o.status, 1);
    ASSERT_STR_EQ(o.out, "B\nC\n");
    ASSERT(strstr(o.err, "missing"));
    ASSERT(strstr(o.err, "(use ls)"));
    ASSERT(!strstr(o.err, "list_dir"));
    ASSERT(!strstr(o.err, "read_file"));
    ctl_out_free(&o);
    CTL(&o, A.addr, "rm", P("d"));
    ASSERT_EQ(o.status, 1);
    ASSERT(strstr(o.err, "(use rm -r)"));
    ASSERT(!strstr(o.err, "recursive"));
    ctl_out_free(&o);
    /* rm goes on to the next path, as rm does. */
    CTL(&o, A.addr, "rm", P("missing"), P("b"));
    ASSERT_EQ(o.status, 1);
    ctl_out_free(&o);
    struct stat st;
    ASSERT_NE(stat(P("b"), &st), 0);
    agent_stop(&A);
    tmpdir_remove();
}

TEST(ls_without_a_path_lists_the_users_home)
{
    agent_start(&A, NULL);
    ctl_out_t o, p;
    const char *home = getenv("HOME");
    struct passwd *pw = getpwuid(geteuid());
    if (pw && pw->pw_dir && pw->pw_dir[0])
        home = pw->pw_dir;
    CTL(&o, A.addr, "ls", "-a");
    CTL(&p, A.addr, "ls", "-a", home);
    ASSERT_EQ(o.status, p.status); /* both fail alike for a home that does not exist */
    ASSERT_STR_EQ(o.out, p.out);
    ctl_out_free(&o);
    ctl_out_free(&p);
    agent_stop(&A);
}

static Response *do_symlink(sa_client_t *c, const char *path, const char *target, int overwrite,
                            const char *user)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeSymlink m = SANDBOX__AGENT__V1__MAKE_SYMLINK__INIT;
    m.path = (char *)path;
    m.target = (char *)target;
    m.overwrite = overwrite;
    m.user = (char *)user;
    req.op_case = OP(SYMLINK);
    req.symlink = &m;
    return call(c, &req);
}

static Response *do_setattr(sa_client_t *c, const char *path, long mode, int64_t mtime,
                            int follow, const char *user)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__SetAttributes m = SANDBOX__AGENT__V1__SET_ATTRIBUTES__INIT;
    m.path = (char *)path;
    if (mode >= 0) {
        m.mode_opt_case = SANDBOX__AGENT__V1__SET_ATTRIBUTES__MODE_OPT_MODE;
        m.mode = (uint32_t)mode;
    }
    if (mtime >= 0) {
        m.mtime_opt_case = SANDBOX__AGENT__V1__SET_ATTRIBUTES__MTIME_OPT_MTIME_UNIX_NANO;
        m.mtime_unix_nano = mtime;
    }
    m.follow_symlinks = follow;
    m.user = (char *)user;
    req.op_case = OP(SET_ATTRIBUTES);
    req.set_attributes = &m;
    return call(c, &req);
}

TEST(symlink_and_set_attributes_answer_bad_input_clearly)
{
    tmpdir_make();
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    put_text(P("f"), "x", 0644);
    ASSERT_EQ(mkdir(P("d"), 0755), 0);
    Response *r = do_symlink(c, P("l"), "f", 0, "");
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->type, SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK);
    ASSERT_STR_EQ(r->entry->symlink_target, "f");
    sa_response_free(r);
    r = do_symlink(c, P("l"), "g", 0, "");
    ASSERT_ERROR(r, ALREADY_EXISTS);
    sa_response_free(r);
    r = do_symlink(c, P("l"), "g", 1, "");
    ASSERT_RESULT(r, ENTRY);
    ASSERT_STR_EQ(r->entry->symlink_target, "g");
    sa_response_free(r);
    r = do_symlink(c, P("d"), "g", 1, "");
    ASSERT_ERROR(r, FAILED_PRECONDITION); /* a directory is never replaced */
    sa_response_free(r);
    r = do_symlink(c, P("m"), "", 0, "");
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = do_symlink(c, P("nodir/m"), "f", 0, "");
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    /* Mode and time, each only when set. */
    r = do_setattr(c, P("f"), 04711, -1, 0, "");
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->mode, 04711);
    sa_response_free(r);
    r = do_setattr(c, P("f"), -1, 1234567890123456789LL, 0, "");
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->mode, 04711);
    ASSERT_EQ(r->entry->mtime_unix_nano, 1234567890123456789LL);
    sa_response_free(r);
    r = do_setattr(c, P("f"), 010000, -1, 0, "");
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    r = do_setattr(c, P("l"), 0600, -1, 0, "");
    ASSERT_ERROR(r, UNIMPLEMENTED); /* a link has no mode of its own */
    sa_response_free(r);
    r = do_setattr(c, P("l"), -1, 1000000000LL * 1000000000LL, 0, "");
    ASSERT_RESULT(r, ENTRY); /* its time it has */
    ASSERT_EQ(r->entry->type, SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK);
    sa_response_free(r);
    r = do_setattr(c, P("missing"), 0600, -1, 0, "");
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    if (geteuid() == 0 && getpwnam("nobody")) {
        /* As another user: only what that user could. */
        r = do_setattr(c, P("f"), 0777, -1, 0, "nobody");
        ASSERT_ERROR(r, PERMISSION_DENIED);
        sa_response_free(r);
        r = do_setattr(c, P("f"), -1, 0, 0, "nobody");
        ASSERT_ERROR(r, PERMISSION_DENIED);
        sa_response_free(r);
        r = do_symlink(c, P("d/x"), "f", 0, "nobody");
        ASSERT_ERROR(r, PERMISSION_DENIED);
        sa_response_free(r);
        struct stat st;
        ASSERT_EQ(stat(P("f"), &st), 0);
        ASSERT_EQ(st.st_mode & 07777, 04711);
    }
    ping_ok(c);
    sa_client_close(c);
    agent_stop(&A);
    tmpdir_remove();
}

TEST_MAIN(TEST_ENTRY_T(cp_archive_round_trip_keeps_names_links_modes_times, 120),
          TEST_ENTRY_T(cp_r_keeps_modes_and_links_not_times, 120),
          TEST_ENTRY_T(cp_bad_entries_are_reported_and_the_copy_carries_on, 120),
          TEST_ENTRY_T(cp_several_sources_into_a_directory, 120),
          TEST_ENTRY(ls_l_and_stat_show_every_file_type),
          TEST_ENTRY(raw_names_in_ls_stat_rm_mv_and_json),
          TEST_ENTRY(cat_carries_on_and_errors_speak_of_commands),
          TEST_ENTRY(ls_without_a_path_lists_the_users_home),
          TEST_ENTRY(symlink_and_set_attributes_answer_bad_input_clearly))
