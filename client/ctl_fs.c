/* ctl_fs.c - sandboxctl's file commands but cp: cat, ls, stat, mkdir, rm,
 * mv, watch; and the requests and option parsing every file command shares
 * (ctl_fs.h). Names travel as bytes: a path from the command line that is
 * not UTF-8 goes in the request's *_raw field, and a listed name is used as
 * its *_raw bytes. */
#include "ctl_fs.h"

#include "ctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *ctl_fs_user = ""; /* -u: act as this user on the agent */

/* File commands connect with ctl_connect_z(ctl, o['z']): file data is mostly
 * incompressible, and compressing it costs the agent more than the bytes it
 * saves on a local transport (-z turns it on). */

const char *ctl_fs_rpath(const char *s) { return s[0] == ':' ? s + 1 : s; }

const char *ctl_fs_type_name(int t)
{
    switch (t) {
    case T_FILE: return "file";
    case T_DIR: return "directory";
    case T_LINK: return "symlink";
    case T_FIFO: return "fifo";
    case T_SOCK: return "socket";
    case T_CHR: return "char_device";
    case T_BLK: return "block_device";
    default: return "other";
    }
}

/* The same, for a sentence. */
const char *ctl_fs_type_words(int t)
{
    switch (t) {
    case T_FIFO: return "a fifo";
    case T_SOCK: return "a socket";
    case T_CHR: return "a character device";
    case T_BLK: return "a block device";
    case T_LINK: return "a symbolic link";
    case T_DIR: return "a directory";
    case T_FILE: return "a regular file";
    default: return "a special file";
    }
}

int ctl_fs_local_type(mode_t m)
{
    return S_ISREG(m) ? T_FILE : S_ISDIR(m) ? T_DIR : S_ISLNK(m) ? T_LINK : S_ISFIFO(m) ? T_FIFO
         : S_ISSOCK(m) ? T_SOCK : S_ISCHR(m) ? T_CHR : S_ISBLK(m) ? T_BLK : 0;
}

Response *ctl_fs_stat(ctl_t *ctl, const char *path, int follow, const char *what)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Stat st = SANDBOX__AGENT__V1__STAT__INIT;
    ctl_set_path(&st.path, &st.path_raw, path);
    st.follow_symlinks = follow;
    st.user = (char *)ctl_fs_user;
    req.op_case = OP(STAT);
    req.stat = &st;
    return ctl_request(ctl, &req, what, -1);
}

int ctl_fs_mkdir(ctl_t *ctl, const char *path, int parents, uint32_t mode, const char *what)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__MakeDirectory md = SANDBOX__AGENT__V1__MAKE_DIRECTORY__INIT;
    ctl_set_path(&md.path, &md.path_raw, path);
    md.parents = parents;
    md.mode = mode;
    md.user = (char *)ctl_fs_user;
    req.op_case = OP(MKDIR);
    req.mkdir = &md;
    return ctl_call(ctl, &req, what, RES(ENTRY), -1, NULL);
}

char *ctl_fs_join(const char *a, const char *b)
{
    char *p = NULL;
    size_t la = strlen(a);
    if (asprintf(&p, "%s%s%s", a, la && a[la - 1] == '/' ? "" : "/", b) < 0)
        return NULL;
    return p;
}

const char *ctl_fs_base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    while (s && !s[1] && s > p) { /* "dir/" */
        const char *t = s - 1;
        while (t > p && *t != '/')
            t--;
        return *t == '/' ? t + 1 : t;
    }
    return s ? s + 1 : p;
}

typedef struct fs_list {
    int (*each)(ctl_t *, const Entry *, void *);
    void *arg;
} fs_list_t;

static int fs_list_each(ctl_t *ctl, const Response *r, void *arg)
{
    fs_list_t *l = arg;
    int rc = 0;
    for (size_t i = 0; i < r->entries->n_entries && !rc; i++)
        rc = l->each(ctl, r->entries->entries[i], l->arg);
    return rc;
}

int ctl_fs_list(ctl_t *ctl, const char *path, unsigned depth, int hidden, const char *what,
                int (*each)(ctl_t *, const Entry *, void *), void *arg)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__ListDirectory ld = SANDBOX__AGENT__V1__LIST_DIRECTORY__INIT;
    fs_list_t l = {each, arg};
    ctl_set_path(&ld.path, &ld.path_raw, path);
    ld.depth = depth;
    ld.user = (char *)ctl_fs_user;
    ld.include_hidden_opt_case =
        SANDBOX__AGENT__V1__LIST_DIRECTORY__INCLUDE_HIDDEN_OPT_INCLUDE_HIDDEN;
    ld.include_hidden = hidden;
    req.op_case = OP(LIST_DIR);
    req.list_dir = &ld;
    return ctl_stream(ctl, &req, what, RES(ENTRIES), -1, fs_list_each, &l);
}

/* Parse the options every file command shares (-u USER) plus its own into
 * seen[]. Returns the index of the first operand, or -1 after a usage
 * error (its exit status in *rc). */
static int opts(ctl_t *ctl, int argc, char **argv, const char *own, char *seen, int *rc)
{
    char spec[32];
    int c;
    snprintf(spec, sizeof spec, "+u:%s", own);
    optind = 1;
    opterr = 0;
    memset(seen, 0, 128);
    while ((c = getopt(argc, argv, spec)) != -1) {
        if (c == '?') {
            *rc = optopt == 'u' ? ctl_usage_error(ctl, "-u needs a user")
                                : ctl_usage_error(ctl, "unknown option '-%c'", optopt);
            return -1;
        }
        if (c == 'u')
            ctl_fs_user = optarg;
        else
            seen[c & 127] = 1;
    }
    return optind;
}

/* The start every file command shares: its options, between min and max
 * operands (max < 0: no bound; else the usage error says `need`), then the
 * connection (compressed unless the command has a -z to ask for it).
 * Returns the first operand's index, or -1 with *rc the exit status. */
static int fs_begin(ctl_t *ctl, int argc, char **argv, const char *own, char *seen, int min,
                    int max, const char *need, int *rc)
{
    int i = opts(ctl, argc, argv, own, seen, rc);
    if (i < 0)
        return -1;
    if (argc - i < min || (max >= 0 && argc - i > max)) {
        *rc = ctl_usage_error(ctl, "%s", need);
        return -1;
    }
    if (ctl_connect_z(ctl, strchr(own, 'z') ? seen['z'] : 1) < 0) {
        *rc = 1;
        return -1;
    }
    return i;
}

static int cmd_cat(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "z", o, 1, -1, "needs a path", &rc);
    if (i < 0)
        return rc;
    /* As cat: a file that cannot be read is reported, the others printed. */
    for (; i < argc; i++) {
        int k = ctl_download_fd(ctl, ctl_fs_rpath(argv[i]), 1, "cat", 0);
        if (k < 0)
            return 1;
        rc |= k;
    }
    return rc;
}

static void mode_string(const Entry *e, char *out)
{
    const char *rwx = "rwxrwxrwx";
    switch (e->type) {
    case T_FILE: out[0] = '-'; break;
    case T_DIR: out[0] = 'd'; break;
    case T_LINK: out[0] = 'l'; break;
    case T_FIFO: out[0] = 'p'; break;
    case T_SOCK: out[0] = 's'; break;
    case T_CHR: out[0] = 'c'; break;
    case T_BLK: out[0] = 'b'; break;
    default: out[0] = '?';
    }
    for (int i = 0; i < 9; i++)
        out[i + 1] = (e->mode & (1u << (8 - i))) ? rwx[i] : '-';
    if (e->mode & 04000)
        out[3] = out[3] == 'x' ? 's' : 'S';
    if (e->mode & 02000)
        out[6] = out[6] == 'x' ? 's' : 'S';
    if (e->mode & 01000)
        out[9] = out[9] == 'x' ? 't' : 'T';
    out[10] = 0;
}

static void print_json_entry(const Entry *e)
{
    putchar('{');
    ctl_json_name("name", e->name, &e->name_raw);
    putchar(',');
    ctl_json_name("path", e->path, &e->path_raw);
    printf(",\"type\":\"%s\",\"size\":%llu,\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u,\"owner\":",
           ctl_fs_type_name(e->type), (unsigned long long)e->size, e->mode, e->uid, e->gid);
    ctl_json_string(e->owner);
    printf(",\"group\":");
    ctl_json_string(e->group);
    printf(",\"mtime_unix_nano\":%lld,\"nlink\":%llu,\"inode\":%llu",
           (long long)e->mtime_unix_nano, (unsigned long long)e->nlink,
           (unsigned long long)e->inode);
    if (e->type == T_LINK) {
        putchar(',');
        ctl_json_name("symlink_target", e->symlink_target, &e->symlink_target_raw);
    }
    if (e->type == T_CHR || e->type == T_BLK)
        printf(",\"rdev_major\":%u,\"rdev_minor\":%u", e->rdev_major, e->rdev_minor);
    printf("}\n");
}

static void fput_bytes(const char *s, const ProtobufCBinaryData *raw)
{
    if (raw && raw->len)
        fwrite(raw->data, 1, raw->len, stdout);
    else
        fputs(s ? s : "", stdout);
}

/* One entry; name: what to call it (bytes), NULL for its own name. */
static void print_entry(ctl_t *ctl, const Entry *e, int lng, const char *name)
{
    if (ctl->json) {
        print_json_entry(e);
        return;
    }
    if (lng) {
        char m[12], when[32], size[48];
        time_t t = (time_t)(e->mtime_unix_nano / 1000000000);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
        mode_string(e, m);
        if (e->type == T_CHR || e->type == T_BLK)
            snprintf(size, sizeof size, "%u, %u", e->rdev_major, e->rdev_minor);
        else
            snprintf(size, sizeof size, "%llu", (unsigned long long)e->size);
        printf("%s %3llu %-8s %-8s %10s %s ", m, (unsigned long long)e->nlink, e->owner,
               e->group, size, when);
    }
    if (name)
        fputs(name, stdout);
    else
        fput_bytes(e->name, &e->name_raw);
    if (lng && e->type == T_LINK) {
        fputs(" -> ", stdout);
        fput_bytes(e->symlink_target, &e->symlink_target_raw);
    } else if (!lng && e->type == T_DIR) {
        putchar('/');
    }
    putchar('\n');
}

typedef struct ls_ctx {
    int lng, rec;
    size_t strip; /* the listed directory's path, left out of -R names */
} ls_ctx_t;

static int ls_each(ctl_t *ctl, const Entry *e, void *arg)
{
    ls_ctx_t *x = arg;
    if (!x->rec) {
        print_entry(ctl, e, x->lng, NULL);
        return 0;
    }
    char *p = ctl_name_bytes(e->path, &e->path_raw);
    if (!p)
        return 1;
    const char *name = strlen(p) >= x->strip ? p + x->strip : p;
    while (*name == '/')
        name++;
    print_entry(ctl, e, x->lng, name);
    free(p);
    return 0;
}

static int cmd_ls(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "lRadLz", o, 0, -1, "", &rc);
    if (i < 0)
        return rc;
    /* As ls: a link named on the command line is followed unless -l or -d
     * shows the link itself (-L follows it anyway). */
    int follow = o['L'] || (!o['l'] && !o['d']);
    int n = argc - i;
    for (int k = 0; k < (n ? n : 1); k++) {
        const char *path = n ? ctl_fs_rpath(argv[i + k]) : "."; /* "." is the user's home */
        Response *r = ctl_fs_stat(ctl, path, follow, "ls");
        if (!r)
            return 1;
        if (r->result_case != RES(ENTRY)) {
            rc |= ctl_fail("ls", r);
            sa_response_free(r);
            continue;
        }
        if (r->entry->type != T_DIR || o['d']) {
            print_entry(ctl, r->entry, o['l'], path);
            sa_response_free(r);
            continue;
        }
        char *base = ctl_name_bytes(r->entry->path, &r->entry->path_raw);
        sa_response_free(r);
        if (!base)
            return 1;
        if (n > 1 && !ctl->json)
            printf("%s%s:\n", k ? "\n" : "", path);
        ls_ctx_t x = {o['l'], o['R'], strlen(base)};
        free(base);
        int e = ctl_fs_list(ctl, path, o['R'] ? 0xffffffffu : 1, o['a'], "ls", ls_each, &x);
        if (e < 0)
            return 1;
        rc |= e;
    }
    return rc;
}

static int cmd_stat(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "L", o, 1, -1, "needs a path", &rc);
    if (i < 0)
        return rc;
    for (; i < argc; i++) {
        Response *r = ctl_fs_stat(ctl, ctl_fs_rpath(argv[i]), o['L'], "stat");
        if (!r)
            return 1;
        if (r->result_case != RES(ENTRY)) {
            rc |= ctl_fail("stat", r);
            sa_response_free(r);
            continue;
        }
        const Entry *e = r->entry;
        if (ctl->json) {
            print_json_entry(e);
        } else {
            char m[12], when[40];
            time_t t = (time_t)(e->mtime_unix_nano / 1000000000);
            struct tm tm;
            mode_string(e, m);
            localtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            fputs("  Path: ", stdout);
            fput_bytes(e->path, &e->path_raw);
            if (e->type == T_LINK) {
                fputs(" -> ", stdout);
                fput_bytes(e->symlink_target, &e->symlink_target_raw);
            }
            printf("\n  Type: %s", ctl_fs_type_words(e->type) + 2);
            if (e->type == T_CHR || e->type == T_BLK)
                printf(" %u, %u", e->rdev_major, e->rdev_minor);
            printf("\n  Size: %llu\n  Mode: %04o (%s)\n Owner: %s (%u)\n Group: %s (%u)\n"
                   " Links: %llu\n Inode: %llu\n Mtime: %s.%09lld\n",
                   (unsigned long long)e->size, e->mode, m, e->owner, e->uid, e->group, e->gid,
                   (unsigned long long)e->nlink, (unsigned long long)e->inode, when,
                   (long long)(e->mtime_unix_nano % 1000000000));
        }
        sa_response_free(r);
    }
    return rc;
}

static int cmd_mkdir(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "p", o, 1, -1, "needs a path", &rc);
    if (i < 0)
        return rc;
    for (; i < argc; i++) {
        int k = ctl_fs_mkdir(ctl, ctl_fs_rpath(argv[i]), o['p'], 0, "mkdir");
        if (k < 0)
            return 1;
        rc |= k;
    }
    return rc;
}

static int cmd_rm(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = opts(ctl, argc, argv, "rRf", o, &rc);
    if (i < 0)
        return rc;
    if (i >= argc)
        return o['f'] ? 0 : ctl_usage_error(ctl, "needs a path");
    if (ctl_connect_z(ctl, 1) < 0)
        return 1;
    for (; i < argc; i++) {
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__Remove rm = SANDBOX__AGENT__V1__REMOVE__INIT;
        ctl_set_path(&rm.path, &rm.path_raw, ctl_fs_rpath(argv[i]));
        rm.recursive = o['r'] || o['R'];
        rm.user = (char *)ctl_fs_user;
        req.op_case = OP(REMOVE);
        req.remove = &rm;
        Response *r = ctl_request(ctl, &req, "rm", -1);
        if (!r)
            return 1;
        if (r->result_case != RES(ACK) &&
            !(o['f'] && r->result_case == RES(ERROR) && r->error->code == CODE(NOT_FOUND)))
            rc |= ctl_fail("rm", r);
        sa_response_free(r);
    }
    return rc;
}

static int cmd_mv(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "np", o, 2, 2, "needs a source and a destination", &rc);
    if (i < 0)
        return rc;
    const char *src = ctl_fs_rpath(argv[i]), *dst = ctl_fs_rpath(argv[i + 1]);
    char *target = NULL;
    Response *r = ctl_fs_stat(ctl, dst, 1, "mv");
    if (!r)
        return 1;
    if (r->result_case == RES(ENTRY) && r->entry->type == T_DIR)
        target = ctl_fs_join(dst, ctl_fs_base_name(src));
    sa_response_free(r);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Rename rn = SANDBOX__AGENT__V1__RENAME__INIT;
    ctl_set_path(&rn.source, &rn.source_raw, src);
    ctl_set_path(&rn.destination, &rn.destination_raw, target ? target : dst);
    rn.overwrite = !o['n'];
    rn.make_parents = o['p'];
    rn.user = (char *)ctl_fs_user;
    req.op_case = OP(RENAME);
    req.rename = &rn;
    rc = ctl_call(ctl, &req, "mv", RES(ENTRY), -1, NULL);
    free(target);
    return rc ? 1 : 0;
}

static int print_fs_event(ctl_t *ctl, const Response *r, void *arg)
{
    static const char *kinds[] = {"?", "CREATE", "MODIFY", "DELETE", "RENAME", "ATTRIB",
                                  "OVERFLOW"};
    const FsEvent *e = r->fs_event;
    const char *k = e->kind < sizeof kinds / sizeof kinds[0] ? kinds[e->kind] : "?";
    int has_old = (e->old_path && e->old_path[0]) || e->old_path_raw.len;
    if (ctl->json) {
        printf("{\"kind\":\"%s\",", k);
        ctl_json_name("path", e->path, &e->path_raw);
        if (has_old) {
            putchar(',');
            ctl_json_name("old_path", e->old_path, &e->old_path_raw);
        }
        if (e->entry)
            printf(",\"type\":\"%s\"", ctl_fs_type_name(e->entry->type));
        printf("}\n");
        return 0;
    }
    printf("%-8s ", k);
    if (has_old) {
        fput_bytes(e->old_path, &e->old_path_raw);
        fputs(" -> ", stdout);
    }
    fput_bytes(e->path, &e->path_raw);
    putchar('\n');
    return 0;
}

static int cmd_watch(ctl_t *ctl, int argc, char **argv)
{
    char o[128];
    int rc = 0, i = fs_begin(ctl, argc, argv, "r", o, 1, 1, "needs one path", &rc);
    if (i < 0)
        return rc;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchPath wp = SANDBOX__AGENT__V1__WATCH_PATH__INIT;
    ctl_set_path(&wp.path, &wp.path_raw, ctl_fs_rpath(argv[i]));
    wp.recursive = o['r'];
    wp.user = (char *)ctl_fs_user;
    req.op_case = OP(WATCH);
    req.watch = &wp;
    setvbuf(stdout, NULL, _IOLBF, 0);
    return ctl_stream(ctl, &req, "watch", RES(FS_EVENT), -1, print_fs_event, NULL) ? 1 : 0;
}

const ctl_cmd_t ctl_cmds_fs[] = {
    {"cp", ctl_cp_cmd, "[-r] [-a] [-p] [-L] [-z] [-u USER] SRC... DST",
     "copy a file or (-r) a tree to or from the agent; ':' marks the agent's side",
     "  The agent's side starts with ':' (as with scp): the sources, or the destination.\n"
     "  An existing directory as DST receives the sources inside it (several sources\n"
     "  need one). '-' as SRC uploads stdin, as DST prints a downloaded file.\n"
     "\n"
     "  -r, -R    copy directories and what is in them\n"
     "  -a        archive: -r -p, links kept as links\n"
     "  -p        keep modification times too (modes are always kept)\n"
     "  -L        copy what symbolic links point to instead of the links\n"
     "  -P        copy links as links (the default with -r; a file named without -r\n"
     "            is followed, as cp does)\n"
     "  -z        compress the data on the wire (worth it only on a slow link)\n"
     "  -u USER   act as USER on the agent\n"
     "\n"
     "  A name that is not UTF-8 is copied as its exact bytes. An entry that cannot be\n"
     "  copied (unreadable, a dangling link with -L, a device, fifo or socket) is\n"
     "  reported and the copy carries on; the exit status is then 1.\n"},
    {"cat", cmd_cat, "[-z] [-u USER] PATH...", "print files of the agent",
     "  A file that cannot be read is reported and the others are printed (exit 1).\n"},
    {"ls", cmd_ls, "[-l] [-a] [-R] [-d] [-L] [-u USER] [PATH...]", "list a directory of the agent",
     "  Without PATH: the user's home directory.\n"
     "\n"
     "  -l        long: type and mode, links, owner, group, size (major, minor for\n"
     "            devices), time, name; a link as 'l ... NAME -> TARGET'\n"
     "  -a        entries whose names start with '.' too\n"
     "  -R        recursively\n"
     "  -d        a directory itself, not what it holds\n"
     "  -L        follow symbolic links (with -l a link named on the command line is\n"
     "            shown as a link unless -L)\n"
     "  -u USER   as USER (permissions are checked as theirs)\n"},
    {"stat", cmd_stat, "[-L] [-u USER] PATH...", "show a path's type, size, mode, owner",
     "  -L        follow a symbolic link\n"
     "  -u USER   as USER\n"},
    {"mkdir", cmd_mkdir, "[-p] [-u USER] PATH...", "make directories",
     "  -p        make the parents too; an existing directory is not an error\n"
     "  -u USER   as USER (the directories belong to them)\n"},
    {"rm", cmd_rm, "[-r] [-f] [-u USER] PATH...", "remove files or (-r) trees",
     "  -r, -R    remove directories and what is in them (links are not followed)\n"
     "  -f        a path that does not exist is not an error\n"
     "  -u USER   as USER\n"},
    {"mv", cmd_mv, "[-n] [-p] [-u USER] SRC DST", "rename or move",
     "  Into DST when it is a directory.\n"
     "  -n        do not replace an existing DST\n"
     "  -p        make DST's parent directories\n"
     "  -u USER   as USER\n"},
    {"watch", cmd_watch, "[-r] [-u USER] PATH", "print changes under a path until interrupted",
     "  One line per change: CREATE, MODIFY, DELETE, RENAME (OLD -> NEW), ATTRIB, or\n"
     "  OVERFLOW (the kernel dropped events: look again).\n"
     "  -r        subdirectories too\n"
     "  -u USER   as USER\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
