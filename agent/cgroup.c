/* cgroup.c - see cgroup.h.
 *
 * Finding the subtree (cg_init), in order:
 *   --no-cgroups            none
 *   --cgroup-root PATH      PATH (made if missing), which must be on cgroup2
 *   delegated               the agent's own cgroup, when systemd delegated it
 *                           (Delegate=yes marks it with trusted.delegate or
 *                           user.delegate)
 *   root or PID 1           "sandbox-agent" at the top of the unified
 *                           hierarchy (".N" appended while another agent
 *                           holds that one: each root is flock'ed)
 * A root the agent started in gets the agent moved into R/agent first, so
 * no process sits in an inner node (cgroup v2's rule once controllers are
 * enabled) and freezing or killing the workload never reaches the agent.
 * Usable means cgroup.kill and cgroup.freeze exist (Linux 5.14).
 *
 * Everything here is a small read or write of a kernfs file: it does not
 * wait on disks or other processes, so it runs on the loop.
 */
#include "cgroup.h"

#include "config.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define SIGNAL_PASSES 16       /* tree signals: re-read the members this often */
#define SIGNAL_MAX_PIDS 65536  /* ... and remember at most this many */
#define RMDIR_DEPTH 16         /* sub-cgroups a member made, removed this deep */
#define ROOT_TRIES 16          /* sandbox-agent, sandbox-agent.1, ... */

struct cg_leaf {
    unsigned refs;
    int fd;          /* the directory; -1 once removed */
    int released, removed, pending;
    int killed;      /* cgroup.kill was written: no clone3 into it any more */
    char *path;      /* absolute, in the agent's mount namespace */
    char *rel;       /* as /proc/PID/cgroup shows it */
    cg_stats_t last; /* read just before it was removed */
    cg_leaf_t *pnext, *pprev;
};

static struct ev_loop *g_loop;
static int g_avail;
static unsigned g_ctrl;
static char g_reason[512] = "not initialised";
static char g_root[PATH_MAX], g_root_rel[PATH_MAX];
static char g_work[PATH_MAX], g_work_rel[PATH_MAX];
static int g_root_fd = -1, g_work_fd = -1;
static int g_auto_root; /* the agent chose the root: removed at exit if empty */
static unsigned long long g_leaf_seq;
/* Released leaves still populated are checked again soon after the agent
 * reaps anything (their last member's exit comes to the agent, their
 * subreaper; the kernel may report a cgroup populated a moment after its
 * last member's exit is reaped), then at growing intervals up to
 * PENDING_POLL_S (a member whose parent is elsewhere). */
#define PENDING_FIRST_S 0.005
#define PENDING_POLL_S 2.0
static ev_timer g_pending_t;
static double g_pending_delay;
static cg_leaf_t *g_pending; /* released, not yet removed */
static int g_freeze_wanted;  /* cgroup.freeze of the workload is 1 */
static int g_work_killed;    /* cgroup.kill of the workload was written */

int cg_available(void) { return g_avail; }
unsigned cg_controllers(void) { return g_ctrl; }
const char *cg_unavailable_reason(void) { return g_avail ? "" : g_reason; }

/* ------------------------------------------------------------ files */

__attribute__((format(printf, 1, 2))) static void set_reason(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_reason, sizeof g_reason, fmt, ap);
    va_end(ap);
}

/* snprintf for paths: a path that does not fit is an error, not a cut. */
__attribute__((format(printf, 3, 4))) static int pathf(char *out, size_t len, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int write_at(int dirfd, const char *name, const char *val)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC), e;
    size_t len = strlen(val);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, val, len);
    e = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
    close(fd);
    return e;
}

/* Read a small file into buf (NUL-terminated). Length or -errno. */
static ssize_t read_at(int dirfd, const char *name, char *buf, size_t size)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    if (fd < 0)
        return -errno;
    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* The number after "key " in a flat-keyed file ("populated 1\nfrozen 0"). */
static int keyed_u64(const char *buf, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, key, klen) && p[klen] == ' ') {
            *out = strtoull(p + klen + 1, NULL, 10);
            return 0;
        }
    }
    return -ENOENT;
}

static int events_key(int dirfd, const char *key)
{
    char buf[256];
    uint64_t v = 0;
    ssize_t n = read_at(dirfd, "cgroup.events", buf, sizeof buf);
    if (n < 0)
        return (int)n;
    if (keyed_u64(buf, key, &v) < 0)
        return -ENOENT;
    return v ? 1 : 0;
}

static unsigned parse_controllers(const char *buf)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"cpu", CG_CPU}, {"memory", CG_MEMORY}, {"pids", CG_PIDS}, {"io", CG_IO}};
    unsigned bits = 0;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", buf);
    for (char *save = NULL, *t = strtok_r(tmp, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(t, names[i].name))
                bits |= names[i].bit;
    return bits;
}

static unsigned read_controllers(int dirfd, const char *file)
{
    char buf[512];
    return read_at(dirfd, file, buf, sizeof buf) < 0 ? 0 : parse_controllers(buf);
}

/* Enable in dirfd's children every controller it has that we use. */
static void enable_controllers(int dirfd, const char *where)
{
    static const char *names[] = {"cpu", "memory", "pids", "io"};
    unsigned have = read_controllers(dirfd, "cgroup.controllers");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char op[16];
        if (!(have & (1u << i)))
            continue;
        snprintf(op, sizeof op, "+%s", names[i]);
        int rc = write_at(dirfd, "cgroup.subtree_control", op);
        if (rc < 0)
            log_warn("cgroups: cannot enable the %s controller in %s: %s", names[i], where,
                     strerror(-rc));
    }
}

/* ------------------------------------------------------------ discovery */

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
}

/* The cgroup2 mount whose mount point is the longest prefix of path (or,
 * with path NULL, the first one). Fills mnt and its root in the hierarchy. */
static int find_mount(const char *path, char *mnt, size_t mlen, char *root, size_t rlen)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096];
    size_t best = 0;
    int found = 0;
    if (!f)
        return -errno;
    while (fgets(line, sizeof line, f)) {
        char *fields[6], *save = NULL, *sep = strstr(line, " - ");
        int n = 0;
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8))
            continue;
        *sep = 0;
        for (char *t = strtok_r(line, " ", &save); t && n < 6; t = strtok_r(NULL, " ", &save))
            fields[n++] = t;
        if (n < 5)
            continue;
        unescape(fields[3]);
        unescape(fields[4]);
        size_t ml = strlen(fields[4]);
        if (path) {
            if (strncmp(path, fields[4], ml) || (path[ml] && path[ml] != '/' && ml > 1))
                continue;
            if (found && ml <= best)
                continue;
        } else if (found) {
            continue;
        }
        pathf(mnt, mlen, "%s", fields[4]);
        pathf(root, rlen, "%s", fields[3]);
        best = ml;
        found = 1;
    }
    fclose(f);
    return found ? 0 : -ENOENT;
}

/* The agent's cgroup v2 path ("0::/x/y" in /proc/self/cgroup). */
static int own_cgroup(char *out, size_t len)
{
    char buf[4096];
    int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    ssize_t n;
    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    buf[n] = 0;
    for (char *p = buf; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, "0::", 3)) {
            char *end = strchr(p, '\n');
            if (end)
                *end = 0;
            pathf(out, len, "%s", p + 3);
            return 0;
        }
    }
    return -ENOENT;
}

/* rel is under (or is) base in the hierarchy. */
static int rel_inside(const char *rel, const char *base)
{
    size_t bl = strlen(base);
    if (bl == 1 && base[0] == '/')
        return 1;
    return !strncmp(rel, base, bl) && (rel[bl] == 0 || rel[bl] == '/');
}

/* The path as /proc/PID/cgroup shows it for an absolute path under the
 * mount mnt whose hierarchy root is mroot. */
static void rel_of(const char *abs, const char *mnt, const char *mroot, char *out, size_t len)
{
    const char *tail = abs + strlen(mnt);
    if (strcmp(mnt, "/") == 0)
        tail = abs;
    if (strcmp(mroot, "/") == 0)
        pathf(out, len, "%s", tail[0] ? tail : "/");
    else
        pathf(out, len, "%s%s", mroot, tail);
}

/* Move every process of dirfd (the agent among them) into dirfd/agent. */
static int move_into_agent_leaf(int rootfd)
{
    char buf[8192];
    int rc, moved_self = 0;
    if (mkdirat(rootfd, "agent", 0755) < 0 && errno != EEXIST)
        return -errno;
    char self[16];
    snprintf(self, sizeof self, "%d", (int)getpid());
    if ((rc = write_at(rootfd, "agent/cgroup.procs", self)) < 0)
        return rc;
    moved_self = 1;
    /* Others in the root itself (a unit's helper processes) follow. */
    for (int pass = 0; pass < 4; pass++) {
        ssize_t n = read_at(rootfd, "cgroup.procs", buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *save = NULL, *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
            write_at(rootfd, "agent/cgroup.procs", t);
    }
    return moved_self ? 0 : -EIO;
}

/* Directory streams read a fresh description (openat "."): a dup would
 * share the offset, and a second listing would start at the end. */
static void remove_tree_at(int dirfd, const char *name, int depth);

/* Leaves an earlier agent left in the workload subtree: the empty ones go. */
static void sweep_stale(void)
{
    DIR *d;
    struct dirent *de;
    int fd = openat(g_work_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), left = 0, removed = 0;
    if (fd < 0 || !(d = fdopendir(fd))) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((de = readdir(d))) {
        if (de->d_type != DT_DIR || de->d_name[0] == '.')
            continue;
        int sub = openat(g_work_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int pop = sub >= 0 ? events_key(sub, "populated") : -1;
        if (sub >= 0)
            close(sub);
        if (pop == 0) {
            remove_tree_at(g_work_fd, de->d_name, 0);
            removed++;
        } else {
            left++;
        }
    }
    closedir(d);
    if (removed || left)
        log_info("cgroups: %d empty leaves of an earlier run removed; %d still hold processes "
                 "(left alone)", removed, left);
}

/* Set the root up: lock it, move the agent out of the way, enable the
 * controllers, make the workload subtree. 0, or -errno with g_reason. */
static int setup_root(const char *abs, const char *mnt, const char *mroot, const char *own,
                      const char *how)
{
    struct statfs sf;
    int rc, inside;

    if (mkdir(abs, 0755) < 0 && errno != EEXIST) {
        rc = -errno;
        set_reason("cannot create '%s': %s", abs, strerror(-rc));
        return rc;
    }
    if ((g_root_fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = -errno;
        set_reason("'%s': %s", abs, strerror(-rc));
        return rc;
    }
    if (fstatfs(g_root_fd, &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC) {
        set_reason("'%s' is not on a cgroup2 file system", abs);
        return -ENOTSUP;
    }
    if (flock(g_root_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = -errno;
        set_reason("'%s' is in use by another agent (%s)", abs,
                 strerror(-rc));
        return rc;
    }
    if (faccessat(g_root_fd, "cgroup.kill", F_OK, 0) < 0 ||
        faccessat(g_root_fd, "cgroup.freeze", F_OK, 0) < 0) {
        snprintf(g_reason, sizeof g_reason,
                 "'%s' has no cgroup.kill or cgroup.freeze (Linux 5.14 or later needed)", abs);
        return -ENOTSUP;
    }
    pathf(g_root, sizeof g_root, "%s", abs);
    rel_of(abs, mnt, mroot, g_root_rel, sizeof g_root_rel);
    char agent_rel[PATH_MAX];
    pathf(agent_rel, sizeof agent_rel, "%s%sagent", g_root_rel,
             strcmp(g_root_rel, "/") ? "/" : "");
    inside = own && rel_inside(own, g_root_rel) && !rel_inside(own, agent_rel);
    if (inside && (rc = move_into_agent_leaf(g_root_fd)) < 0) {
        set_reason("cannot move the agent into '%s/agent': %s", abs,
                 strerror(-rc));
        return rc;
    }
    enable_controllers(g_root_fd, abs);
    pathf(g_work, sizeof g_work, "%s/workload", abs);
    pathf(g_work_rel, sizeof g_work_rel, "%s%sworkload", g_root_rel,
             strcmp(g_root_rel, "/") ? "/" : "");
    if (mkdirat(g_root_fd, "workload", 0755) < 0 && errno != EEXIST) {
        rc = -errno;
        set_reason("cannot create '%s': %s", g_work, strerror(-rc));
        return rc;
    }
    if ((g_work_fd = openat(g_root_fd, "workload", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = -errno;
        set_reason("'%s': %s", g_work, strerror(-rc));
        return rc;
    }
    /* A previous run may have left it frozen. */
    write_at(g_work_fd, "cgroup.freeze", "0");
    enable_controllers(g_work_fd, g_work);
    g_ctrl = read_controllers(g_work_fd, "cgroup.subtree_control");
    sweep_stale();
    log_info("cgroups: every process in a cgroup of its own under %s (%s%s); controllers:%s%s%s%s%s",
             g_work, how, inside ? "; the agent moved to its own leaf 'agent'" : "",
             g_ctrl & CG_CPU ? " cpu" : "", g_ctrl & CG_MEMORY ? " memory" : "",
             g_ctrl & CG_PIDS ? " pids" : "", g_ctrl & CG_IO ? " io" : "",
             g_ctrl ? "" : " none (limits are refused)");
    return 0;
}

static void close_root(void)
{
    if (g_work_fd >= 0)
        close(g_work_fd);
    if (g_root_fd >= 0)
        close(g_root_fd); /* drops the lock too */
    g_work_fd = g_root_fd = -1;
}

static int is_delegated(const char *abs)
{
    char v[16];
    return getxattr(abs, "trusted.delegate", v, sizeof v) >= 0 ||
           getxattr(abs, "user.delegate", v, sizeof v) >= 0;
}

static void on_pending_poll(struct ev_loop *loop, ev_timer *w, int revents);

/* The --default-* limits: one that no controller can hold is said once
 * here (and left unapplied), rather than failing every start. */
static void check_defaults(void)
{
    struct {
        uint64_t v;
        unsigned ctrl;
        const char *flag, *name;
    } d[] = {
        {g_config.default_pids_max, CG_PIDS, "--default-pids-max", "pids"},
        {g_config.default_memory_max, CG_MEMORY, "--default-memory-max", "memory"},
        {g_config.default_memory_swap_max, CG_MEMORY, "--default-memory-swap-max", "memory"},
        {g_config.default_cpu_max_millicores, CG_CPU, "--default-cpu-max-millicores", "cpu"},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i].v && !(g_avail && (g_ctrl & d[i].ctrl)))
            log_warn("cgroups: %s is not applied: the %s controller is not available (%s)",
                     d[i].flag, d[i].name, g_avail ? "not enabled for the workload" : g_reason);
    if (g_config.default_cpu_max_millicores && g_config.default_cpu_max_millicores < 10) {
        log_warn("cgroups: --default-cpu-max-millicores %u is below the kernel's minimum of 10; "
                 "not applied", g_config.default_cpu_max_millicores);
        g_config.default_cpu_max_millicores = 0;
    }
}

int cg_init(struct ev_loop *loop)
{
    char own[PATH_MAX], mnt[PATH_MAX], mroot[PATH_MAX], abs[PATH_MAX + 64];
    int have_own, rc = -1;

    g_loop = loop;
    have_own = own_cgroup(own, sizeof own) == 0;
    if (g_config.no_cgroups) {
        set_reason("disabled by --no-cgroups");
    } else if (g_config.cgroup_root) {
        char real[PATH_MAX];
        const char *p = g_config.cgroup_root;
        /* The mount is found from the existing part of the path. */
        char parent[PATH_MAX];
        pathf(parent, sizeof parent, "%s", p);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = 0;
        if (!realpath(access(p, F_OK) == 0 ? p : parent, real)) {
            set_reason("--cgroup-root '%s': %s", p, strerror(errno));
        } else if (find_mount(real, mnt, sizeof mnt, mroot, sizeof mroot) < 0) {
            set_reason("--cgroup-root '%s' is not on a cgroup2 file "
                     "system", p);
        } else {
            if (access(p, F_OK) == 0)
                pathf(abs, sizeof abs, "%s", real);
            else
                pathf(abs, sizeof abs, "%s/%s", real, slash ? slash + 1 : p);
            rc = setup_root(abs, mnt, mroot, have_own ? own : NULL, "--cgroup-root");
        }
    } else if (!have_own) {
        set_reason("no cgroup v2 hierarchy (v1 only, or too old a "
                 "kernel)");
    } else if (find_mount(NULL, mnt, sizeof mnt, mroot, sizeof mroot) < 0) {
        set_reason("cgroup2 is not mounted");
    } else if (!rel_inside(own, mroot)) {
        set_reason("the agent's cgroup %s is outside the cgroup2 "
                 "mount at %s", own, mnt);
    } else {
        const char *tail = own + (strcmp(mroot, "/") ? strlen(mroot) : 0);
        pathf(abs, sizeof abs, "%s%s", strcmp(mnt, "/") ? mnt : "", tail);
        if (strcmp(own, "/") && strcmp(own, mroot) && is_delegated(abs)) {
            rc = setup_root(abs, mnt, mroot, own, "delegated by systemd");
        } else if (geteuid() == 0 || getpid() == 1) {
            for (int i = 0; i < ROOT_TRIES && rc < 0; i++) {
                if (i)
                    pathf(abs, sizeof abs, "%s/sandbox-agent.%d", mnt, i);
                else
                    pathf(abs, sizeof abs, "%s/sandbox-agent", mnt);
                close_root();
                rc = setup_root(abs, mnt, mroot, own, "created by the agent");
                if (rc != -EWOULDBLOCK)
                    break;
            }
            g_auto_root = rc == 0;
        } else {
            set_reason("its cgroup %s is not delegated (Delegate=yes) "
                     "and the agent is not root", own);
        }
    }
    if (rc < 0) {
        close_root();
        log_info("cgroups: not used: %s; processes are contained by process group only "
                 "(kills repeat until the group is empty)", g_reason);
    } else {
        g_avail = 1;
    }
    check_defaults();
    if (!g_avail)
        return 0;
    ev_init(&g_pending_t, on_pending_poll);
    return 0;
}

/* ------------------------------------------------------------ limits */

int cg_limits_check(const cg_limits_t *lim, char *err, size_t errlen)
{
    struct {
        int set;
        unsigned ctrl;
        const char *field, *name;
    } need[] = {
        {lim->memory_max != 0, CG_MEMORY, "memory_max_bytes", "memory"},
        {lim->memory_swap_max != 0, CG_MEMORY, "memory_swap_max_bytes", "memory"},
        {lim->memory_high != 0, CG_MEMORY, "memory_high_bytes", "memory"},
        {lim->pids_max != 0, CG_PIDS, "pids_max", "pids"},
        {lim->cpu_max_millicores != 0, CG_CPU, "cpu_max_millicores", "cpu"},
        {lim->cpu_weight != 0, CG_CPU, "cpu_weight", "cpu"},
        {lim->io_weight != 0, CG_IO, "io_weight", "io"},
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (!need[i].set || (g_avail && (g_ctrl & need[i].ctrl)))
            continue;
        if (!g_avail)
            snprintf(err, errlen, "limits.%s needs the cgroup v2 %s controller, and this agent "
                     "has no cgroups (%s)", need[i].field, need[i].name, g_reason);
        else
            snprintf(err, errlen, "limits.%s needs the cgroup v2 %s controller, which is not "
                     "enabled for %s", need[i].field, need[i].name, g_work);
        return -EOPNOTSUPP;
    }
    if (lim->cpu_weight > 10000 || lim->io_weight > 10000) {
        snprintf(err, errlen, "limits: cpu_weight and io_weight are 1..10000 (got %u, %u)",
                 lim->cpu_weight, lim->io_weight);
        return -EINVAL;
    }
    if (lim->cpu_max_millicores && lim->cpu_max_millicores < 10) {
        snprintf(err, errlen, "limits.cpu_max_millicores %u is below the kernel's minimum "
                 "of 10 (1 ms per 100 ms)", lim->cpu_max_millicores);
        return -EINVAL;
    }
    return 0;
}

void cg_limits_defaults(cg_limits_t *lim)
{
    if (!g_avail)
        return;
    if (!lim->pids_max && (g_ctrl & CG_PIDS))
        lim->pids_max = g_config.default_pids_max;
    if (!lim->memory_max && (g_ctrl & CG_MEMORY))
        lim->memory_max = g_config.default_memory_max;
    if (!lim->memory_swap_max && (g_ctrl & CG_MEMORY))
        lim->memory_swap_max = g_config.default_memory_swap_max;
    if (!lim->cpu_max_millicores && (g_ctrl & CG_CPU))
        lim->cpu_max_millicores = g_config.default_cpu_max_millicores;
}

static int apply_limits(int fd, const cg_limits_t *lim, char *err, size_t errlen)
{
    char v[64];
    int rc = 0;
    const char *file = NULL;
#define SETV(f, ...)                                  \
    do {                                              \
        snprintf(v, sizeof v, __VA_ARGS__);           \
        file = (f);                                   \
        if ((rc = write_at(fd, file, v)) < 0)         \
            goto fail;                                \
    } while (0)
    if (lim->memory_high)
        SETV("memory.high", "%llu", (unsigned long long)lim->memory_high);
    if (lim->memory_max)
        SETV("memory.max", "%llu", (unsigned long long)lim->memory_max);
    if (lim->memory_swap_max)
        SETV("memory.swap.max", "%llu", (unsigned long long)lim->memory_swap_max);
    if (lim->pids_max)
        SETV("pids.max", "%u", lim->pids_max);
    if (lim->cpu_max_millicores)
        SETV("cpu.max", "%llu 100000", (unsigned long long)lim->cpu_max_millicores * 100ull);
    if (lim->cpu_weight)
        SETV("cpu.weight", "%u", lim->cpu_weight);
    if (lim->io_weight)
        SETV("io.weight", "default %u", lim->io_weight);
#undef SETV
    return 0;
fail:
    snprintf(err, errlen, "cgroup limit %s = '%s': %s", file, v, strerror(-rc));
    return rc;
}

/* ------------------------------------------------------------ leaves */

/* Remove a cgroup directory and any sub-cgroups a member made in it. */
static void remove_tree_at(int dirfd, const char *name, int depth)
{
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return;
    if (errno != EBUSY || depth >= RMDIR_DEPTH)
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((de = readdir(d)))
        if (de->d_type == DT_DIR && de->d_name[0] != '.')
            remove_tree_at(fd, de->d_name, depth + 1);
    closedir(d);
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

int cg_leaf_new(const char *prefix, const cg_limits_t *lim, cg_leaf_t **out, char *err,
                size_t errlen)
{
    char leaf[300];
    cg_leaf_t *l = NULL;
    int rc, made = 0;

    *out = NULL;
    if (!g_avail) {
        snprintf(err, errlen, "no cgroups: %s", g_reason);
        return -EOPNOTSUPP;
    }
    if ((rc = cg_limits_check(lim, err, errlen)) < 0)
        return rc;
    if (!prefix || !prefix[0] || strchr(prefix, '/') || prefix[0] == '.')
        prefix = "p";
    for (int i = 0; i < 64 && !made; i++) {
        snprintf(leaf, sizeof leaf, "%.200s-%llu", prefix, ++g_leaf_seq);
        if (mkdirat(g_work_fd, leaf, 0755) == 0)
            made = 1;
        else if (errno != EEXIST)
            goto fail_errno;
    }
    if (!made) {
        errno = EEXIST;
        goto fail_errno;
    }
    if (!(l = calloc(1, sizeof *l)))
        goto nomem;
    l->refs = 1;
    if ((l->fd = openat(g_work_fd, leaf, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        goto fail_errno;
    if (asprintf(&l->path, "%s/%s", g_work, leaf) < 0) {
        l->path = NULL;
        goto nomem;
    }
    if (asprintf(&l->rel, "%s/%s", g_work_rel, leaf) < 0) {
        l->rel = NULL;
        goto nomem;
    }
    if ((rc = apply_limits(l->fd, lim, err, errlen)) < 0)
        goto fail;
    *out = l;
    return 0;
fail_errno:
    rc = -errno;
    snprintf(err, errlen, "cgroup '%s/%s': %s", g_work, leaf, strerror(-rc));
    goto fail;
nomem:
    rc = -ENOMEM;
    snprintf(err, errlen, "out of memory");
fail:
    if (l) {
        if (l->fd >= 0)
            close(l->fd);
        free(l->path);
        free(l->rel);
        free(l);
    }
    if (made)
        unlinkat(g_work_fd, leaf, AT_REMOVEDIR);
    return rc;
}

int cg_leaf_fd(const cg_leaf_t *l) { return l ? l->fd : -1; }
const char *cg_leaf_path(const cg_leaf_t *l) { return l ? l->rel : ""; }

int cg_leaf_kill(cg_leaf_t *l)
{
    if (!l || l->fd < 0)
        return -ESRCH;
    l->killed = 1;
    return write_at(l->fd, "cgroup.kill", "1");
}

int cg_leaf_clone_ok(const cg_leaf_t *l) { return l && !l->killed && !g_work_killed; }

/* pids seen by a tree signal, sorted for bsearch. */
typedef struct pidset {
    pid_t *v;
    size_t n, cap;
} pidset_t;

static int pid_cmp(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return x < y ? -1 : x > y;
}

/* Signal every process listed in dirfd's cgroup.procs and its sub-cgroups
 * that is not in seen; returns how many were new. */
static int signal_pass(int dirfd, int sig, pidset_t *seen, size_t sorted, int depth)
{
    int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC), fresh = 0;
    char buf[4096];
    size_t have = 0;
    if (fd < 0)
        return 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *p = buf, *nl;
        while ((nl = strchr(p, '\n'))) {
            *nl = 0;
            pid_t pid = (pid_t)atoi(p);
            p = nl + 1;
            if (pid <= 0 || (sorted && bsearch(&pid, seen->v, sorted, sizeof *seen->v, pid_cmp)))
                continue;
            if (seen->n == seen->cap) {
                if (seen->cap >= SIGNAL_MAX_PIDS)
                    continue;
                size_t cap = seen->cap ? seen->cap * 2 : 256;
                pid_t *v = realloc(seen->v, cap * sizeof *v);
                if (!v)
                    continue;
                seen->v = v;
                seen->cap = cap;
            }
            seen->v[seen->n++] = pid;
            if (kill(pid, sig) == 0)
                fresh++;
        }
        have = strlen(p);
        memmove(buf, p, have);
    }
    close(fd);
    if (depth < RMDIR_DEPTH) {
        int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        struct dirent *de;
        if (!d && dfd >= 0)
            close(dfd);
        while (d && (de = readdir(d))) {
            if (de->d_type != DT_DIR || de->d_name[0] == '.')
                continue;
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub >= 0) {
                fresh += signal_pass(sub, sig, seen, sorted, depth + 1);
                close(sub);
            }
        }
        if (d)
            closedir(d);
    }
    return fresh;
}

/* Any signal to every member: the members are read again until a pass finds
 * nobody new (a process forked while we read gets it in the next pass). */
static int signal_tree(int dirfd, int sig)
{
    pidset_t seen = {0};
    int total = 0;
    for (int pass = 0; pass < SIGNAL_PASSES; pass++) {
        size_t sorted = seen.n;
        int fresh = signal_pass(dirfd, sig, &seen, sorted, 0);
        total += fresh;
        if (seen.n > sorted)
            qsort(seen.v, seen.n, sizeof *seen.v, pid_cmp);
        if (seen.n == sorted)
            break;
    }
    free(seen.v);
    return total ? 0 : -ESRCH;
}

int cg_leaf_signal(cg_leaf_t *l, int sig)
{
    if (!l || l->fd < 0)
        return -ESRCH;
    if (sig == SIGKILL)
        return cg_leaf_kill(l);
    return signal_tree(l->fd, sig);
}

int cg_leaf_populated(const cg_leaf_t *l)
{
    if (!l || l->fd < 0)
        return 0;
    return events_key(l->fd, "populated");
}

static uint32_t count_procs(int dirfd)
{
    char buf[4096];
    uint32_t n = 0;
    int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == '\n';
    }
    close(fd);
    return n;
}

/* The figures of a leaf. Only the files its controllers have are read
 * (each is an open and a read on the path of every start's exit). */
static void read_stats(int fd, cg_stats_t *st, int with_procs)
{
    char buf[1024];
    uint64_t v;
    memset(st, 0, sizeof *st);
    if (read_at(fd, "cpu.stat", buf, sizeof buf) > 0) {
        if (keyed_u64(buf, "user_usec", &v) == 0)
            st->cpu_user_nano = v * 1000;
        if (keyed_u64(buf, "system_usec", &v) == 0)
            st->cpu_system_nano = v * 1000;
    }
    if (g_ctrl & CG_MEMORY) {
        if (read_at(fd, "memory.current", buf, sizeof buf) > 0)
            st->memory_current = strtoull(buf, NULL, 10);
        if (read_at(fd, "memory.peak", buf, sizeof buf) > 0)
            st->memory_peak = strtoull(buf, NULL, 10);
        if (read_at(fd, "memory.events", buf, sizeof buf) > 0 &&
            keyed_u64(buf, "oom_kill", &v) == 0)
            st->oom_killed = v > 0;
    }
    if (with_procs)
        st->pids_current = count_procs(fd);
}

void cg_leaf_stats(cg_leaf_t *l, cg_stats_t *st)
{
    if (!l) {
        memset(st, 0, sizeof *st);
        return;
    }
    if (l->fd < 0) {
        *st = l->last;
        return;
    }
    read_stats(l->fd, st, 1);
    /* memory.peak and oom_kill only grow; keep what was seen. */
    l->last = *st;
}

void cg_leaf_ref(cg_leaf_t *l)
{
    if (l)
        l->refs++;
}

static void pending_unlink(cg_leaf_t *l)
{
    if (!l->pending)
        return;
    SA_LIST_UNLINK(g_pending, l, pnext, pprev);
    l->pending = 0;
}

void cg_leaf_unref(cg_leaf_t *l)
{
    if (!l || --l->refs)
        return;
    pending_unlink(l);
    if (l->fd >= 0)
        close(l->fd);
    free(l->path);
    free(l->rel);
    free(l);
}

/* Remove l when empty. Returns 1 when it is gone. */
static int try_remove(cg_leaf_t *l)
{
    const char *name = strrchr(l->path, '/') + 1;
    if (l->removed)
        return 1;
    /* A pending leaf is asked first; at release it is usually empty. */
    if (l->pending && cg_leaf_populated(l) == 1)
        return 0;
    read_stats(l->fd, &l->last, 0);
    if (unlinkat(g_work_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
        /* Populated, or empty with sub-cgroups a member made. */
        if (errno != EBUSY || cg_leaf_populated(l) != 0)
            return 0;
        remove_tree_at(g_work_fd, name, 0);
        if (faccessat(g_work_fd, name, F_OK, 0) == 0)
            return 0;
    }
    l->removed = 1;
    close(l->fd);
    l->fd = -1;
    log_debug("cgroup %s removed", l->rel);
    return 1;
}

/* Check the pending leaves within PENDING_FIRST_S (a timer already due
 * sooner is left alone, so a stream of exits cannot keep pushing it back). */
static void pending_soon(void)
{
    g_pending_delay = PENDING_FIRST_S;
    if (ev_is_active(&g_pending_t) &&
        ev_timer_remaining(g_loop, &g_pending_t) <= PENDING_FIRST_S)
        return;
    ev_timer_stop(g_loop, &g_pending_t);
    ev_timer_set(&g_pending_t, g_pending_delay, 0);
    ev_timer_start(g_loop, &g_pending_t);
}

void cg_leaf_release(cg_leaf_t *l)
{
    if (!l || l->released)
        return;
    l->released = 1;
    if (try_remove(l))
        return;
    /* Still populated (a background child): checked again after reaps. The
     * pending list holds a reference until then. */
    l->refs++;
    l->pending = 1;
    SA_LIST_PUSH(g_pending, l, pnext, pprev);
    pending_soon();
}

static void retry_pending(void)
{
    if (!g_avail)
        return;
    for (cg_leaf_t *l = g_pending, *next; l; l = next) {
        next = l->pnext;
        if (try_remove(l)) {
            pending_unlink(l);
            cg_leaf_unref(l);
        }
    }
    if (!g_pending)
        ev_timer_stop(g_loop, &g_pending_t);
}

void cg_on_reap(void)
{
    if (g_pending) {
        retry_pending();
        if (g_pending)
            pending_soon();
    }
}

static void on_pending_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    retry_pending();
    if (g_pending) {
        g_pending_delay = g_pending_delay * 2 > PENDING_POLL_S ? PENDING_POLL_S
                                                               : g_pending_delay * 2;
        ev_timer_set(w, g_pending_delay, 0);
        ev_timer_start(loop, w);
    }
}

/* ------------------------------------------------------------ workload */

int cg_workload_kill(void)
{
    if (!g_avail)
        return -EOPNOTSUPP;
    g_work_killed = 1; /* its descendants count as killed too */
    return write_at(g_work_fd, "cgroup.kill", "1");
}

int cg_workload_signal(int sig)
{
    if (!g_avail)
        return -EOPNOTSUPP;
    return sig == SIGKILL ? cg_workload_kill() : signal_tree(g_work_fd, sig);
}

int cg_workload_populated(void)
{
    return g_avail ? events_key(g_work_fd, "populated") : 0;
}

int cg_freeze_all(int freeze)
{
    int rc;
    if (!g_avail)
        return -EOPNOTSUPP;
    if ((rc = write_at(g_work_fd, "cgroup.freeze", freeze ? "1" : "0")) == 0)
        g_freeze_wanted = freeze;
    return rc;
}

int cg_frozen(void)
{
    return g_avail ? events_key(g_work_fd, "frozen") == 1 : 0;
}

int cg_freeze_requested(void) { return g_freeze_wanted; }

void cg_cleanup(void)
{
    if (!g_avail)
        return;
    ev_timer_stop(g_loop, &g_pending_t);
    /* Leaves still pending are empty now or hold what shutdown could not
     * kill; the empty ones go with the subtree. */
    while (g_pending) {
        cg_leaf_t *l = g_pending;
        try_remove(l);
        pending_unlink(l);
        cg_leaf_unref(l);
    }
    write_at(g_work_fd, "cgroup.freeze", "0");
    g_freeze_wanted = 0;
    remove_tree_at(g_root_fd, "workload", 0);
    if (g_auto_root) {
        /* Our root, unless something (another agent's) is in it now. */
        unlinkat(AT_FDCWD, g_root, AT_REMOVEDIR);
    }
    close_root();
    g_avail = 0;
    set_reason("the agent is stopping");
}
