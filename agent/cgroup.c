/* cgroup.c - the cgroup subtree the agent manages: finding and setting it
 * up, the workload as a whole (kill, signal, freeze), cleanup at exit. The
 * leaves are in cgroup_leaf.c, the kernfs files in cgroup_file.c.
 * Errors: functions return 0 or a negative errno; why cgroups are not used
 * is kept in cg_reason.
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
#include "cgroup_internal.h"

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

#define ROOT_TRIES 16          /* sandbox-agent, sandbox-agent.1, ... */

int cg_avail;
unsigned cg_ctrl;
char cg_reason[512] = "not initialised";
/* The paths are set by setup_root at their length: four PATH_MAX arrays
 * would be four pages dirty for the agent's life. */
char *cg_work, *cg_work_rel;
int cg_work_fd = -1;
int cg_work_killed;
static char *g_root, *g_root_rel;
static int g_root_fd = -1;
static int g_auto_root; /* the agent chose the root: removed at exit if empty */
static int g_freeze_wanted;  /* cgroup.freeze of the workload is 1 */

int cg_available(void) { return cg_avail; }
unsigned cg_controllers(void) { return cg_ctrl; }
const char *cg_unavailable_reason(void) { return cg_avail ? "" : cg_reason; }

__attribute__((format(printf, 1, 2))) static void set_reason(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cg_reason, sizeof cg_reason, fmt, ap);
    va_end(ap);
}

/* snprintf for paths: a path that does not fit is an error, not a cut. */
/* *dst becomes a new string made from fmt. 0 or -ENOMEM (*dst unchanged). */
__attribute__((format(printf, 2, 3))) static int set_path(char **dst, const char *fmt, ...)
{
    va_list ap;
    char *p;
    va_start(ap, fmt);
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -ENOMEM;
    free(*dst);
    *dst = p;
    return 0;
}

__attribute__((format(printf, 3, 4))) static int pathf(char *out, size_t len, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------ discovery */

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
        util_mountinfo_unescape(fields[3]);
        util_mountinfo_unescape(fields[4]);
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
    if ((rc = cg_write_at(rootfd, "agent/cgroup.procs", self)) < 0)
        return rc;
    moved_self = 1;
    /* Others in the root itself (a unit's helper processes) follow. */
    for (int pass = 0; pass < 4; pass++) {
        ssize_t n = cg_read_at(rootfd, "cgroup.procs", buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *save = NULL, *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
            cg_write_at(rootfd, "agent/cgroup.procs", t);
    }
    return moved_self ? 0 : -EIO;
}

/* Directory streams read a fresh description (openat "."): a dup would
 * share the offset, and a second listing would start at the end. */

/* Leaves an earlier agent left in the workload subtree: the empty ones go. */
static void sweep_stale(void)
{
    DIR *d;
    struct dirent *de;
    int fd = openat(cg_work_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), left = 0, removed = 0;
    if (fd < 0 || !(d = fdopendir(fd))) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((de = readdir(d))) {
        if (de->d_type != DT_DIR || de->d_name[0] == '.')
            continue;
        int sub = openat(cg_work_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int pop = sub >= 0 ? cg_events_key(sub, "populated") : -1;
        if (sub >= 0)
            close(sub);
        if (pop == 0) {
            cg_remove_tree_at(cg_work_fd, de->d_name, 0);
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
 * controllers, make the workload subtree. 0, or -errno with cg_reason. */
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
        snprintf(cg_reason, sizeof cg_reason,
                 "'%s' has no cgroup.kill or cgroup.freeze (Linux 5.14 or later needed)", abs);
        return -ENOTSUP;
    }
    char rel[PATH_MAX], agent_rel[PATH_MAX];
    rel_of(abs, mnt, mroot, rel, sizeof rel);
    if (set_path(&g_root, "%s", abs) < 0 || set_path(&g_root_rel, "%s", rel) < 0 ||
        set_path(&cg_work, "%s/workload", abs) < 0 ||
        set_path(&cg_work_rel, "%s%sworkload", rel, strcmp(rel, "/") ? "/" : "") < 0) {
        set_reason("out of memory");
        return -ENOMEM;
    }
    pathf(agent_rel, sizeof agent_rel, "%s%sagent", g_root_rel,
             strcmp(g_root_rel, "/") ? "/" : "");
    inside = own && rel_inside(own, g_root_rel) && !rel_inside(own, agent_rel);
    if (inside && (rc = move_into_agent_leaf(g_root_fd)) < 0) {
        set_reason("cannot move the agent into '%s/agent': %s", abs,
                 strerror(-rc));
        return rc;
    }
    cg_enable_controllers(g_root_fd, abs);
    if (mkdirat(g_root_fd, "workload", 0755) < 0 && errno != EEXIST) {
        rc = -errno;
        set_reason("cannot create '%s': %s", cg_work, strerror(-rc));
        return rc;
    }
    if ((cg_work_fd = openat(g_root_fd, "workload", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = -errno;
        set_reason("'%s': %s", cg_work, strerror(-rc));
        return rc;
    }
    /* A previous run may have left it frozen. */
    cg_write_at(cg_work_fd, "cgroup.freeze", "0");
    cg_enable_controllers(cg_work_fd, cg_work);
    cg_ctrl = cg_read_controllers(cg_work_fd, "cgroup.subtree_control");
    sweep_stale();
    log_info("cgroups: every process in a cgroup of its own under %s (%s%s); controllers:%s%s%s%s%s",
             cg_work, how, inside ? "; the agent moved to its own leaf 'agent'" : "",
             cg_ctrl & CG_CPU ? " cpu" : "", cg_ctrl & CG_MEMORY ? " memory" : "",
             cg_ctrl & CG_PIDS ? " pids" : "", cg_ctrl & CG_IO ? " io" : "",
             cg_ctrl ? "" : " none (limits are refused)");
    return 0;
}

static void close_root(void)
{
    if (cg_work_fd >= 0)
        close(cg_work_fd);
    if (g_root_fd >= 0)
        close(g_root_fd); /* drops the lock too */
    cg_work_fd = g_root_fd = -1;
}

static int is_delegated(const char *abs)
{
    char v[16];
    return getxattr(abs, "trusted.delegate", v, sizeof v) >= 0 ||
           getxattr(abs, "user.delegate", v, sizeof v) >= 0;
}

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
        if (d[i].v && !(cg_avail && (cg_ctrl & d[i].ctrl)))
            log_warn("cgroups: %s is not applied: the %s controller is not available (%s)",
                     d[i].flag, d[i].name, cg_avail ? "not enabled for the workload" : cg_reason);
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
                 "(kills repeat until the group is empty)", cg_reason);
    } else {
        cg_avail = 1;
    }
    check_defaults();
    if (!cg_avail)
        return 0;
    cg_pending_init(loop);
    return 0;
}

/* ------------------------------------------------------------ workload */

int cg_workload_kill(void)
{
    if (!cg_avail)
        return -EOPNOTSUPP;
    cg_work_killed = 1; /* its descendants count as killed too */
    return cg_write_at(cg_work_fd, "cgroup.kill", "1");
}

int cg_workload_signal(int sig)
{
    if (!cg_avail)
        return -EOPNOTSUPP;
    return sig == SIGKILL ? cg_workload_kill() : cg_signal_tree(cg_work_fd, sig);
}

int cg_workload_populated(void)
{
    return cg_avail ? cg_events_key(cg_work_fd, "populated") : 0;
}

int cg_freeze_all(int freeze)
{
    int rc;
    if (!cg_avail)
        return -EOPNOTSUPP;
    if ((rc = cg_write_at(cg_work_fd, "cgroup.freeze", freeze ? "1" : "0")) == 0)
        g_freeze_wanted = freeze;
    return rc;
}

int cg_frozen(void)
{
    return cg_avail ? cg_events_key(cg_work_fd, "frozen") == 1 : 0;
}

int cg_freeze_requested(void) { return g_freeze_wanted; }

void cg_cleanup(void)
{
    if (!cg_avail)
        return;
    cg_pending_drop();
    cg_write_at(cg_work_fd, "cgroup.freeze", "0");
    g_freeze_wanted = 0;
    cg_remove_tree_at(g_root_fd, "workload", 0);
    if (g_auto_root) {
        /* Our root, unless something (another agent's) is in it now. */
        unlinkat(AT_FDCWD, g_root, AT_REMOVEDIR);
    }
    close_root();
    cg_avail = 0;
    set_reason("the agent is stopping");
}
