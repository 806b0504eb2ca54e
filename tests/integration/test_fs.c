/* Integration tests of the file operations: the real agent, driven through
 * the client library, on files in a fresh temporary directory. */
#include "fs_helpers.h"
#include "harness.h"
#define TMPDIR_PREFIX "/tmp/sa-fs-"
#include "tmpdir.h"

#include <dirent.h>
#include <sys/mount.h>
#include <zlib.h>

#define SA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef Sandbox__Agent__V1__ReadFile ReadFileReq;
typedef Sandbox__Agent__V1__WriteFile WriteFileReq;
typedef Sandbox__Agent__V1__FileData FileDataReq;



static size_t chunk_size(sa_client_t *c) { return sa_client_max_frame(c) - 1024; }

/* Deterministic bytes that do not compress. */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

/* Upload data as one WriteFile; wreq fields other than path/data/more are
 * the caller's. Returns the final response. */
static Response *upload(sa_client_t *c, WriteFileReq *w, const uint8_t *data, size_t len)
{
    size_t cs = chunk_size(c), first = len < cs ? len : cs;
    Request req = REQUEST_INIT;
    req.id = sa_client_next_id(c);
    req.op_case = OP(WRITE_FILE);
    req.write_file = w;
    w->data.data = (uint8_t *)data;
    w->data.len = first;
    w->more = first < len;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    for (size_t off = first; off < len;) {
        size_t n = len - off < cs ? len - off : cs;
        Request r2 = REQUEST_INIT;
        FileDataReq fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
        fd.data.data = (uint8_t *)data + off;
        fd.data.len = n;
        off += n;
        fd.more = off < len;
        r2.id = req.id;
        r2.op_case = OP(WRITE_DATA);
        r2.write_data = &fd;
        ASSERT_EQ(sa_client_send(c, &r2), 0);
    }
    return recv_id(c, req.id);
}

static Response *put(sa_client_t *c, const char *path, const void *data, size_t len)
{
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = (char *)path;
    return upload(c, &w, data, len);
}

static void put_ok(sa_client_t *c, const char *path, const void *data, size_t len)
{
    Response *r = put(c, path, data, len);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, len);
    ASSERT_EQ(r->written->crc32, crc32(0, data, (uInt)len));
    sa_response_free(r);
}

/* Read a file (or a range) into a malloc'd buffer; returns the last
 * response (FileEnd or the error), with the bytes in *out. */
static Response *get(sa_client_t *c, const char *path, const ProtobufCBinaryData *raw,
                     uint64_t off, uint64_t length, uint8_t **out, size_t *outlen)
{
    Request req = REQUEST_INIT;
    ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    rf.path = (char *)(path ? path : "");
    if (raw)
        rf.path_raw = *raw;
    rf.offset = off;
    rf.length = length;
    req.id = sa_client_next_id(c);
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    return read_collect(c, req.id, off, out, outlen);
}

static void expect_content(sa_client_t *c, const char *path, const void *data, size_t len)
{
    uint8_t *buf;
    size_t n;
    Response *r = get(c, path, NULL, 0, 0, &buf, &n);
    ASSERT_RESULT(r, FILE_END);
    ASSERT_EQ(n, len);
    ASSERT_EQ(r->file_end->size, len);
    ASSERT_EQ(r->file_end->crc32, crc32(0, data, (uInt)len));
    ASSERT_EQ(r->file_end->entry->size, len);
    if (len)
        ASSERT_MEM_EQ(buf, data, len);
    free(buf);
    sa_response_free(r);
}

static Response *simple_call(sa_client_t *c, Request *req)
{
    req->id = 0;
    return call(c, req);
}

static Response *do_stat(sa_client_t *c, const char *path)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    st.path = (char *)path;
    req.op_case = OP(STAT);
    req.stat = &st;
    return simple_call(c, &req);
}

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

TEST(round_trip_sizes)
{
    START();
    size_t fr = sa_client_max_frame(c) - 256; /* the agent's largest payload */
    size_t sizes[] = {0, 1, 1u << 20, (1u << 20) + 1, fr, fr + 1, 3 * fr + 17};
    uint8_t *data = malloc(3 * fr + 17);
    fill(data, 3 * fr + 17, 1);
    for (size_t i = 0; i < SA_ARRAY_LEN(sizes); i++) {
        char name[32];
        snprintf(name, sizeof name, "f%zu", sizes[i]);
        put_ok(c, P(name), data, sizes[i]);
        expect_content(c, P(name), data, sizes[i]);
        struct stat st;
        ASSERT_EQ(stat(P(name), &st), 0);
        ASSERT_EQ(st.st_size, sizes[i]);
        ASSERT_EQ(st.st_mode & 0777, 0644);
    }
    ASSERT_EQ(dir_count(g_dir, ""), (int)SA_ARRAY_LEN(sizes)); /* no temporaries left */
    free(data);
    STOP();
}

/* 1 GiB up and down in bounded memory. */
TEST(one_gib)
{
    agent_t a;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char path[128];
    snprintf(path, sizeof path, "%s/sa-fs-1g-%d", dir, (int)getpid());
    /* ASan keeps freed blocks in quarantine; keep it small so RSS measures
     * what the agent holds, not what the sanitizer remembers. */
    setenv("ASAN_OPTIONS", "quarantine_size_mb=16:detect_leaks=1", 1);
    tmpdir_make();
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    long long base = proc_rss(a.pid), peak = base;
    const size_t total = 1ull << 30, cs = chunk_size(c);
    uint8_t *buf = malloc(cs);
    uLong crc = crc32(0, NULL, 0);

    Request req = REQUEST_INIT;
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = path;
    req.id = sa_client_next_id(c);
    req.op_case = OP(WRITE_FILE);
    req.write_file = &w;
    w.more = 1;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    size_t i = 0;
    for (size_t off = 0; off < total; i++) {
        size_t n = total - off < cs ? total - off : cs;
        fill(buf, 4096, i); /* vary every chunk cheaply */
        crc = crc32(crc, buf, (uInt)n);
        Request r2 = REQUEST_INIT;
        FileDataReq fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
        fd.data.data = buf;
        fd.data.len = n;
        off += n;
        fd.more = off < total;
        r2.id = req.id;
        r2.op_case = OP(WRITE_DATA);
        r2.write_data = &fd;
        ASSERT_EQ(sa_client_send(c, &r2), 0);
        if (i % 16 == 0) {
            long long rss = proc_rss(a.pid);
            peak = rss > peak ? rss : peak;
        }
    }
    Response *r = recv_id(c, req.id);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, total);
    ASSERT_EQ(r->written->crc32, crc);
    sa_response_free(r);

    /* Download, reading slowly at first: a slow reader costs no memory. */
    Request rq = REQUEST_INIT;
    ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    rf.path = path;
    rq.id = sa_client_next_id(c);
    rq.op_case = OP(READ_FILE);
    rq.read_file = &rf;
    ASSERT_EQ(sa_client_send(c, &rq), 0);
    usleep(300000);
    uLong rcrc = crc32(0, NULL, 0);
    size_t got = 0;
    for (int n = 0;; n++) {
        r = recv_id(c, rq.id);
        if (r->result_case != RES(CHUNK))
            break;
        rcrc = crc32(rcrc, r->chunk->data.data, (uInt)r->chunk->data.len);
        got += r->chunk->data.len;
        sa_response_free(r);
        if (n % 64 == 0) {
            long long rss = proc_rss(a.pid);
            peak = rss > peak ? rss : peak;
        }
    }
    ASSERT_RESULT(r, FILE_END);
    ASSERT_EQ(got, total);
    ASSERT_EQ(r->file_end->crc32, crc);
    ASSERT_EQ(rcrc, crc);
    sa_response_free(r);
    unlink(path);
    printf("    agent RSS: %lld KiB at start, %lld KiB peak during 1 GiB up and down\n",
           base / 1024, peak / 1024);
    ASSERT_LT(peak - base, 64ll << 20);
    free(buf);
    STOP();
}

TEST(ranges)
{
    START();
    uint8_t data[10000];
    fill(data, sizeof data, 2);
    put_ok(c, P("r"), data, sizeof data);
    struct {
        uint64_t off, len, want_off, want_len;
    } cases[] = {{0, 0, 0, 10000},     {100, 0, 100, 9900}, {100, 50, 100, 50},
                 {9990, 100, 9990, 10}, {10000, 5, 10000, 0}, {20000, 0, 20000, 0}};
    for (size_t i = 0; i < SA_ARRAY_LEN(cases); i++) {
        uint8_t *buf;
        size_t n;
        Response *r = get(c, P("r"), NULL, cases[i].off, cases[i].len, &buf, &n);
        ASSERT_RESULT(r, FILE_END);
        ASSERT_EQ(n, cases[i].want_len);
        ASSERT_EQ(r->file_end->size, cases[i].want_len);
        if (n)
            ASSERT_MEM_EQ(buf, data + cases[i].want_off, n);
        ASSERT_EQ(r->file_end->crc32, crc32(0, data + cases[i].want_off, (uInt)n));
        free(buf);
        sa_response_free(r);
    }
    STOP();
}

TEST(append_and_create_new)
{
    START();
    put_ok(c, P("a"), "abc", 3);
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = P("a");
    w.write_mode = SANDBOX__AGENT__V1__WRITE_MODE__APPEND;
    Response *r = upload(c, &w, (const uint8_t *)"defg", 4);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->bytes_written, 4);
    ASSERT_EQ(r->written->entry->size, 7);
    sa_response_free(r);
    expect_content(c, P("a"), "abcdefg", 7);

    WriteFileReq n = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    n.path = P("new");
    n.write_mode = SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW;
    n.mode = 0600;
    r = upload(c, &n, (const uint8_t *)"one", 3);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->entry->mode, 0600);
    sa_response_free(r);
    WriteFileReq n2 = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    n2.path = P("new");
    n2.write_mode = SANDBOX__AGENT__V1__WRITE_MODE__CREATE_NEW;
    r = upload(c, &n2, (const uint8_t *)"two", 3);
    ASSERT_ERROR(r, ALREADY_EXISTS);
    ASSERT_EQ(r->error->os_errno, EEXIST);
    sa_response_free(r);
    expect_content(c, P("new"), "one", 3);
    /* make_parents */
    WriteFileReq mp = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    mp.path = P("x/y/z/file");
    mp.make_parents = 1;
    mp.sync = 1;
    r = upload(c, &mp, (const uint8_t *)"deep", 4);
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);
    expect_content(c, P("x/y/z/file"), "deep", 4);
    ASSERT_EQ(dir_count(g_dir, ""), 3);
    STOP();
}

TEST(crc_mismatch_leaves_nothing)
{
    START();
    uint8_t data[100000];
    fill(data, sizeof data, 3);
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = P("c");
    w.expected_crc32_opt_case = SANDBOX__AGENT__V1__WRITE_FILE__EXPECTED_CRC32_OPT_EXPECTED_CRC32;
    w.expected_crc32 = (uint32_t)crc32(0, data, sizeof data) ^ 1;
    Response *r = upload(c, &w, data, sizeof data);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "crc32"));
    sa_response_free(r);
    ASSERT_EQ(dir_count(g_dir, ""), 0);
    /* Over an existing file: the old content stays. */
    put_ok(c, P("c"), "old", 3);
    r = upload(c, &w, data, sizeof data);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    expect_content(c, P("c"), "old", 3);
    ASSERT_EQ(dir_count(g_dir, ""), 1);
    /* The right crc passes. */
    w.expected_crc32 ^= 1;
    r = upload(c, &w, data, sizeof data);
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);
    STOP();
}

TEST(disconnect_mid_upload_leaves_nothing)
{
    START();
    put_ok(c, P("keep"), "old", 3);
    const char *targets[] = {"gone", "keep"};
    for (int t = 0; t < 2; t++) {
        sa_client_t *c2 = agent_connect(&a);
        uint8_t data[200000];
        fill(data, sizeof data, 4);
        Request req = REQUEST_INIT;
        WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
        w.path = P(targets[t]);
        w.data.data = data;
        w.data.len = sizeof data;
        w.more = 1;
        req.id = 1;
        req.op_case = OP(WRITE_FILE);
        req.write_file = &w;
        ASSERT_EQ(sa_client_send(c2, &req), 0);
        /* The first chunk is in its temporary file (a file worker writes
         * it, after the loop has answered anything): cut it off there. */
        for (int i = 0; i < 3000 && dir_count(g_dir, ".sa-tmp.") != 1; i++)
            usleep(10000);
        ASSERT_EQ(dir_count(g_dir, ".sa-tmp."), 1);
        sa_client_close(c2);
        /* Cleanup is asynchronous: poll until the file is gone. */
        for (int i = 0; i < 3000 && dir_count(g_dir, ".sa-tmp.") != 0; i++)
            usleep(10000);
        ASSERT_EQ(dir_count(g_dir, ".sa-tmp."), 0);
    }
    ASSERT_EQ(dir_count(g_dir, ""), 1); /* only "keep" */
    expect_content(c, P("keep"), "old", 3);
    STOP();
}

TEST(enospc_small_tmpfs)
{
    START();
    char mnt[512];
    snprintf(mnt, sizeof mnt, "%s", P("small"));
    mkdir(mnt, 0755);
    if (geteuid() != 0 || mount("tmpfs", mnt, "tmpfs", 0, "size=1m") < 0) {
        printf("    skipped: cannot mount a 1 MiB tmpfs (%s)\n",
               geteuid() ? "not root" : strerror(errno));
        STOP();
        return;
    }
    size_t len = 3u << 20;
    uint8_t *data = malloc(len);
    fill(data, len, 5);
    char path[600];
    snprintf(path, sizeof path, "%s/big", mnt);
    Response *r = put(c, path, data, len);
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    ASSERT_EQ(r->error->os_errno, ENOSPC);
    ASSERT(strstr(r->error->message, path));
    sa_response_free(r);
    ASSERT_EQ(dir_count(mnt, ""), 0);
    /* The connection carries on; a later chunk of that id is refused. */
    Request d = REQUEST_INIT;
    FileDataReq fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
    d.op_case = OP(WRITE_DATA);
    d.write_data = &fd;
    d.id = 4242;
    r = call(c, &d);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    /* Non-atomic too: the partial file this upload created goes. */
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = path;
    w.atomic_opt_case = SANDBOX__AGENT__V1__WRITE_FILE__ATOMIC_OPT_ATOMIC;
    w.atomic = 0;
    r = upload(c, &w, data, len);
    ASSERT_ERROR(r, RESOURCE_EXHAUSTED);
    sa_response_free(r);
    ASSERT_EQ(dir_count(mnt, ""), 0);
    umount2(mnt, MNT_DETACH);
    free(data);
    STOP();
}

TEST(acting_as_a_user)
{
    START();
    if (geteuid() != 0) {
        printf("    skipped: acting as another user needs root\n");
        STOP();
        return;
    }
    const char *nobody = "65534";
    mkdir(P("private"), 0700);
    int fd = open(P("private/secret"), O_WRONLY | O_CREAT, 0600);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "s", 1), 1);
    close(fd);
    mkdir(P("open"), 0777);
    chmod(P("open"), 0777);

    Request req = REQUEST_INIT;
    ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
    rf.path = P("private/secret");
    rf.user = (char *)nobody;
    req.op_case = OP(READ_FILE);
    req.read_file = &rf;
    Response *r = simple_call(c, &req);
    ASSERT_ERROR(r, PERMISSION_DENIED);
    ASSERT_EQ(r->error->os_errno, EACCES);
    sa_response_free(r);
    /* The same as the agent's user works. */
    rf.user = "";
    r = simple_call(c, &req);
    ASSERT_RESULT(r, FILE_END);
    sa_response_free(r);

    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = P("private/x");
    w.user = (char *)nobody;
    r = upload(c, &w, (const uint8_t *)"x", 1);
    ASSERT_ERROR(r, PERMISSION_DENIED);
    sa_response_free(r);
    w.path = P("open/mine");
    r = upload(c, &w, (const uint8_t *)"x", 1);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->entry->uid, 65534);
    sa_response_free(r);
    struct stat st;
    ASSERT_EQ(stat(P("open/mine"), &st), 0);
    ASSERT_EQ(st.st_uid, 65534);

    /* mkdir, list and remove as that user. */
    Request mk = REQUEST_INIT;
    Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
    md.path = P("private/d");
    md.user = (char *)nobody;
    mk.op_case = OP(MKDIR);
    mk.mkdir = &md;
    r = simple_call(c, &mk);
    ASSERT_ERROR(r, PERMISSION_DENIED);
    sa_response_free(r);
    Request rm = REQUEST_INIT;
    Sandbox__Agent__V1__Remove rmv = SANDBOX__AGENT__V1__REMOVE__INIT;
    rmv.path = P("private/secret");
    rmv.user = (char *)nobody;
    rm.op_case = OP(REMOVE);
    rm.remove = &rmv;
    r = simple_call(c, &rm);
    ASSERT_ERROR(r, PERMISSION_DENIED);
    sa_response_free(r);
    ASSERT_EQ(access(P("private/secret"), F_OK), 0);

    /* owner: the result is chowned (by the agent's root). */
    WriteFileReq o = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    o.path = P("owned");
    o.owner = "65534:65534";
    r = upload(c, &o, (const uint8_t *)"o", 1);
    ASSERT_RESULT(r, WRITTEN);
    sa_response_free(r);
    ASSERT_EQ(stat(P("owned"), &st), 0);
    ASSERT_EQ(st.st_uid, 65534);
    ASSERT_EQ(st.st_gid, 65534);
    /* The agent's own file operations keep root's identity afterwards. */
    put_ok(c, P("private/after"), "a", 1);
    ASSERT_EQ(stat(P("private/after"), &st), 0);
    ASSERT_EQ(st.st_uid, 0);
    STOP();
}

TEST(non_utf8_names)
{
    START();
    char name[] = "bad-\xff\xfe-name";
    char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "raw!", 4), 4);
    close(fd);

    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = g_dir;
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    Response *r = simple_call(c, &req);
    ASSERT_RESULT(r, ENTRIES);
    ASSERT(r->done);
    ASSERT_EQ(r->entries->n_entries, 1);
    Entry *e = r->entries->entries[0];
    ASSERT_EQ(e->name_raw.len, strlen(name));
    ASSERT_MEM_EQ(e->name_raw.data, name, strlen(name));
    ASSERT(strstr(e->name, "\xef\xbf\xbd")); /* U+FFFD in the readable form */
    ASSERT_EQ(e->path_raw.len, strlen(path));

    uint8_t *buf;
    size_t n;
    Response *r2 = get(c, NULL, &e->path_raw, 0, 0, &buf, &n);
    ASSERT_RESULT(r2, FILE_END);
    ASSERT_EQ(n, 4);
    ASSERT_MEM_EQ(buf, "raw!", 4);
    ASSERT_EQ(r2->file_end->entry->name_raw.len, strlen(name));
    free(buf);
    sa_response_free(r2);
    sa_response_free(r);

    /* Written through the raw path too. */
    char name2[] = "w-\xc3\x28";
    char path2[600];
    snprintf(path2, sizeof path2, "%s/%s", g_dir, name2);
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path_raw.data = (uint8_t *)path2;
    w.path_raw.len = strlen(path2);
    r = upload(c, &w, (const uint8_t *)"ok", 2);
    ASSERT_RESULT(r, WRITTEN);
    ASSERT_EQ(r->written->entry->path_raw.len, strlen(path2));
    sa_response_free(r);
    ASSERT_EQ(access(path2, F_OK), 0);
    STOP();
}

TEST(big_directory_while_pinging)
{
    START();
    const int N = 100000;
    char path[600];
    snprintf(path, sizeof path, "%s/big", g_dir);
    mkdir(path, 0755);
    int dfd = open(path, O_RDONLY | O_DIRECTORY), gfd = open(g_dir, O_RDONLY | O_DIRECTORY);
    double tc = now_ms();
    /* The files are hard links to a few made outside it (a link count
     * stays under ext4's 65,000): one system call each instead of three
     * and no inode, so making them takes seconds, not minutes, on a
     * loaded machine. The agent lists and removes 100,000 names alike. */
    for (int i = 0; i < N; i++) {
        char n[32], src[32];
        snprintf(n, sizeof n, i < 3 ? "dir%06d" : "f%06d", N - i);
        snprintf(src, sizeof src, "link-src%d", i / 60000);
        if (i < 3) {
            ASSERT_EQ(mkdirat(dfd, n, 0755), 0);
            continue;
        }
        if (i == 3 || i % 60000 == 0) {
            int fd = openat(gfd, src, O_WRONLY | O_CREAT | O_EXCL, 0644);
            ASSERT(fd >= 0);
            close(fd);
        }
        ASSERT_EQ(linkat(gfd, src, dfd, n, 0), 0);
    }
    for (int i = 0; i * 60000 < N; i++) {
        char src[32];
        snprintf(src, sizeof src, "link-src%d", i);
        ASSERT_EQ(unlinkat(gfd, src, 0), 0);
    }
    close(gfd);
    close(dfd);
    printf("    %d entries made in %.0f ms\n", N, now_ms() - tc);
    sa_client_t *c2 = agent_connect(&a);

    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = path;
    req.id = sa_client_next_id(c);
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    double t0 = now_ms();
    ping_ok(c2);
    double ping_ms = now_ms() - t0;
    int count = 0, batches = 0, done = 0;
    char prev[64] = "";
    while (!done) {
        Response *r = recv_id(c, req.id);
        ASSERT_RESULT(r, ENTRIES);
        batches++;
        for (size_t i = 0; i < r->entries->n_entries; i++, count++) {
            const char *nm = r->entries->entries[i]->name;
            int isdir = r->entries->entries[i]->type == SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY;
            ASSERT_EQ(isdir, count < 3);
            if (count != 3)
                ASSERT_LT(strcmp(prev, nm), 0);
            snprintf(prev, sizeof prev, "%s", nm);
        }
        done = r->done;
        sa_response_free(r);
    }
    printf("    %d entries in %d batches in %.0f ms; ping answered after %.1f ms\n", count,
           batches, now_ms() - t0, ping_ms);
    ASSERT_EQ(count, N);
    ASSERT_GT(batches, 1);

    /* Recursive removal of it all, while pinging. */
    Request rm = REQUEST_INIT;
    Sandbox__Agent__V1__Remove rmv = SANDBOX__AGENT__V1__REMOVE__INIT;
    rmv.path = path;
    rmv.recursive = 1;
    rm.id = sa_client_next_id(c);
    rm.op_case = OP(REMOVE);
    rm.remove = &rmv;
    ASSERT_EQ(sa_client_send(c, &rm), 0);
    t0 = now_ms();
    ping_ok(c2);
    /* 100,000 unlinks on a loaded disk: bounded by the test's own alarm. */
    Response *r = NULL;
    ASSERT_EQ(sa_client_recv_id(c, rm.id, &r, 250000), 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    printf("    removed in %.0f ms\n", now_ms() - t0);
    ASSERT_EQ(access(path, F_OK), -1);
    sa_client_close(c2);
    STOP();
}

static Response *next_event(sa_client_t *c, uint64_t id, int kind)
{
    for (;;) {
        Response *r = recv_id(c, id);
        ASSERT_RESULT(r, FS_EVENT);
        if ((int)r->fs_event->kind == kind)
            return r;
        sa_response_free(r);
    }
}

TEST(watch_events)
{
    START();
    mkdir(P("w"), 0755);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchPath wp = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    wp.path = P("w");
    wp.recursive = 1;
    req.id = sa_client_next_id(c);
    req.op_case = OP(WATCH);
    req.watch = &wp;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    watch_wait_ready(c, req.id, P("w")); /* the watches are added by a worker */
    mkdir(P("w/sub"), 0755);
    Response *r = next_event(c, req.id, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE);
    ASSERT_STR_EQ(r->fs_event->path, P("w/sub"));
    ASSERT(r->fs_event->entry);
    ASSERT_EQ(r->fs_event->entry->type, SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY);
    sa_response_free(r);

    int fd = open(P("w/sub/f"), O_WRONLY | O_CREAT, 0644);
    r = next_event(c, req.id, SANDBOX__AGENT__V1__FS_EVENT__KIND__CREATE);
    ASSERT_STR_EQ(r->fs_event->path, P("w/sub/f"));
    sa_response_free(r);
    ASSERT_EQ(write(fd, "hello", 5), 5);
    close(fd);
    r = next_event(c, req.id, SANDBOX__AGENT__V1__FS_EVENT__KIND__MODIFY);
    ASSERT_STR_EQ(r->fs_event->path, P("w/sub/f"));
    ASSERT_EQ(r->fs_event->entry->size, 5);
    sa_response_free(r);
    chmod(P("w/sub/f"), 0600);
    r = next_event(c, req.id, SANDBOX__AGENT__V1__FS_EVENT__KIND__ATTRIB);
    sa_response_free(r);
    ASSERT_EQ(rename(P("w/sub/f"), P("w/g")), 0);
    r = next_event(c, req.id, SANDBOX__AGENT__V1__FS_EVENT__KIND__RENAME);
    ASSERT_STR_EQ(r->fs_event->path, P("w/g"));
    ASSERT_STR_EQ(r->fs_event->old_path, P("w/sub/f"));
    sa_response_free(r);
    ASSERT_EQ(unlink(P("w/g")), 0);
    r = next_event(c, req.id, SANDBOX__AGENT__V1__FS_EVENT__KIND__DELETE);
    ASSERT_STR_EQ(r->fs_event->path, P("w/g"));
    ASSERT(!r->fs_event->entry);
    sa_response_free(r);

    /* Cancel ends it. */
    Request cn = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel cc = SANDBOX__AGENT__V1__CANCEL__INIT;
    cc.target_id = req.id;
    cn.op_case = OP(CANCEL);
    cn.cancel = &cc;
    r = simple_call(c, &cn);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    STOP();
}

TEST(stat_mkdir_remove_rename)
{
    START();
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
    md.path = P("a/b/c");
    md.parents = 1;
    md.mode = 0700;
    req.op_case = OP(MKDIR);
    req.mkdir = &md;
    Response *r = simple_call(c, &req);
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->type, SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY);
    ASSERT_EQ(r->entry->mode, 0700);
    ASSERT_STR_EQ(r->entry->name, "c");
    sa_response_free(r);
    r = simple_call(c, &req); /* parents: existing is fine */
    ASSERT_RESULT(r, ENTRY);
    sa_response_free(r);
    md.parents = 0;
    r = simple_call(c, &req);
    ASSERT_ERROR(r, ALREADY_EXISTS);
    sa_response_free(r);

    put_ok(c, P("a/b/c/f"), "1", 1);
    put_ok(c, P("a/g"), "2", 1);
    ASSERT_EQ(symlink("g", P("a/link")), 0);
    r = do_stat(c, P("a/link"));
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->type, SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK);
    ASSERT_STR_EQ(r->entry->symlink_target, "g");
    sa_response_free(r);
    r = do_stat(c, P("a/g"));
    ASSERT_RESULT(r, ENTRY);
    ASSERT_EQ(r->entry->size, 1);
    ASSERT_STR_EQ(r->entry->owner, geteuid() == 0 ? "root" : r->entry->owner);
    sa_response_free(r);

    /* Recursive listing: depth first, directories first. */
    Request lr = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = P("a");
    ld.depth = 10;
    lr.op_case = OP(LIST_DIR);
    lr.list_dir = &ld;
    r = simple_call(c, &lr);
    ASSERT_RESULT(r, ENTRIES);
    ASSERT_EQ(r->entries->n_entries, 5);
    ASSERT_STR_EQ(r->entries->entries[0]->path, P("a/b"));
    ASSERT_STR_EQ(r->entries->entries[1]->path, P("a/b/c"));
    ASSERT_STR_EQ(r->entries->entries[2]->path, P("a/b/c/f"));
    ASSERT_STR_EQ(r->entries->entries[3]->path, P("a/g"));
    ASSERT_STR_EQ(r->entries->entries[4]->path, P("a/link"));
    sa_response_free(r);
    ld.depth = 0;
    ld.include_hidden_opt_case = SANDBOX__AGENT__V1__LIST_DIRECTORY__INCLUDE_HIDDEN_OPT_INCLUDE_HIDDEN;
    ld.include_hidden = 0;
    put_ok(c, P("a/.hidden"), "h", 1);
    r = simple_call(c, &lr);
    ASSERT_EQ(r->entries->n_entries, 3);
    sa_response_free(r);

    Request rn = REQUEST_INIT;
    Sandbox__Agent__V1__Rename rnm = SANDBOX__AGENT__V1__RENAME__INIT;
    rnm.source = P("a/g");
    rnm.destination = P("a/b/c/f");
    rn.op_case = OP(RENAME);
    rn.rename = &rnm;
    r = simple_call(c, &rn);
    ASSERT_ERROR(r, ALREADY_EXISTS);
    sa_response_free(r);
    expect_content(c, P("a/b/c/f"), "1", 1);
    rnm.overwrite = 1;
    r = simple_call(c, &rn);
    ASSERT_RESULT(r, ENTRY);
    ASSERT_STR_EQ(r->entry->path, P("a/b/c/f"));
    sa_response_free(r);
    expect_content(c, P("a/b/c/f"), "2", 1);
    rnm.source = P("a/b/c/f");
    rnm.destination = P("n/e/w");
    rnm.make_parents = 1;
    r = simple_call(c, &rn);
    ASSERT_RESULT(r, ENTRY);
    sa_response_free(r);
    expect_content(c, P("n/e/w"), "2", 1);

    Request rm = REQUEST_INIT;
    Sandbox__Agent__V1__Remove rmv = SANDBOX__AGENT__V1__REMOVE__INIT;
    rmv.path = P("a");
    rm.op_case = OP(REMOVE);
    rm.remove = &rmv;
    r = simple_call(c, &rm);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT_EQ(r->error->os_errno, ENOTEMPTY);
    sa_response_free(r);
    rmv.recursive = 1;
    r = simple_call(c, &rm);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    ASSERT_EQ(access(P("a"), F_OK), -1);
    r = simple_call(c, &rm);
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    STOP();
}

TEST(bad_input)
{
    START();
    Response *r;
    /* Missing path. */
    r = get(c, "", NULL, 0, 0, NULL, NULL);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "missing path"));
    sa_response_free(r);
    r = put(c, "", "x", 1);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    /* Missing file: NOT_FOUND with the path and errno. */
    r = get(c, P("nope"), NULL, 0, 0, NULL, NULL);
    ASSERT_ERROR(r, NOT_FOUND);
    ASSERT_EQ(r->error->os_errno, ENOENT);
    ASSERT(strstr(r->error->message, P("nope")));
    sa_response_free(r);
    /* A relative path is taken from the user's home: nobody's does not
     * exist here, root's does. */
    if (geteuid() == 0) {
        Request req = REQUEST_INIT;
        ReadFileReq rf = SANDBOX__AGENT__V1__READ_FILE__INIT;
        rf.path = "relative/file";
        rf.user = "nobody";
        req.op_case = OP(READ_FILE);
        req.read_file = &rf;
        r = simple_call(c, &req);
        ASSERT_EQ(r->result_case, RES(ERROR));
        ASSERT(strstr(r->error->message, "/relative/file"));
        sa_response_free(r);
    }
    /* Directory read, write to a directory, list a file. */
    r = get(c, g_dir, NULL, 0, 0, NULL, NULL);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT_EQ(r->error->os_errno, EISDIR);
    sa_response_free(r);
    r = put(c, g_dir, "x", 1);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    put_ok(c, P("file"), "x", 1);
    Request lr = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    ld.path = P("file");
    lr.op_case = OP(LIST_DIR);
    lr.list_dir = &ld;
    r = simple_call(c, &lr);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    ASSERT_EQ(r->error->os_errno, ENOTDIR);
    sa_response_free(r);
    /* Under a file: ENOTDIR. */
    r = put(c, P("file/x"), "x", 1);
    ASSERT_ERROR(r, FAILED_PRECONDITION);
    sa_response_free(r);
    /* Names too long: a component, and a whole path. */
    char longname[400];
    memset(longname, 'n', 300);
    longname[300] = 0;
    r = put(c, P(longname), "x", 1);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT_EQ(r->error->os_errno, ENAMETOOLONG);
    sa_response_free(r);
    char *huge = malloc(8000);
    memset(huge, 'a', 7999);
    huge[0] = '/';
    huge[7999] = 0;
    r = do_stat(c, huge);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT_EQ(r->error->os_errno, ENAMETOOLONG);
    sa_response_free(r);
    free(huge);
    /* A chunk for an id with no upload. */
    Request d = REQUEST_INIT;
    FileDataReq fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
    d.op_case = OP(WRITE_DATA);
    d.write_data = &fd;
    r = simple_call(c, &d);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    /* Unknown user. */
    Request sr = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    st.path = g_dir;
    st.user = "no-such-user-here";
    sr.op_case = OP(STAT);
    sr.stat = &st;
    r = simple_call(c, &sr);
    ASSERT_ERROR(r, NOT_FOUND);
    sa_response_free(r);
    /* Atomic append is refused; remove "/" is refused. */
    WriteFileReq w = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    w.path = P("file");
    w.write_mode = SANDBOX__AGENT__V1__WRITE_MODE__APPEND;
    w.atomic_opt_case = SANDBOX__AGENT__V1__WRITE_FILE__ATOMIC_OPT_ATOMIC;
    w.atomic = 1;
    r = upload(c, &w, (const uint8_t *)"x", 1);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    Request rm = REQUEST_INIT;
    Sandbox__Agent__V1__Remove rmv = SANDBOX__AGENT__V1__REMOVE__INIT;
    rmv.path = "/";
    rmv.recursive = 1;
    rm.op_case = OP(REMOVE);
    rm.remove = &rmv;
    r = simple_call(c, &rm);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    sa_response_free(r);
    /* Still serving. */
    ping_ok(c);
    ASSERT_EQ(dir_count(g_dir, ""), 1);
    STOP();
}

TEST_MAIN(TEST_ENTRY(round_trip_sizes), TEST_ENTRY_T(one_gib, 400), TEST_ENTRY(ranges),
          TEST_ENTRY(append_and_create_new), TEST_ENTRY(crc_mismatch_leaves_nothing),
          TEST_ENTRY(disconnect_mid_upload_leaves_nothing), TEST_ENTRY(enospc_small_tmpfs),
          TEST_ENTRY(acting_as_a_user), TEST_ENTRY(non_utf8_names),
          TEST_ENTRY_T(big_directory_while_pinging, 300), TEST_ENTRY(watch_events),
          TEST_ENTRY(stat_mkdir_remove_rename), TEST_ENTRY(bad_input))
