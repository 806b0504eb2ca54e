/* fsworker.c - see fsworker.h.
 *
 * Credentials are per thread in the kernel; glibc's setgroups/setfsuid
 * wrappers would broadcast a change to every thread, so the raw system calls
 * are used: they change only the calling worker, for one job, and the worker
 * switches back before taking the next.
 *
 * A file-system identity alone is not the user: setfsuid drops only the
 * file-system capabilities, and the kernel's other checks on a file (procfs
 * asks for CAP_SYS_PTRACE before showing /proc/PID/cwd or maps, CAP_SYSLOG
 * before showing kernel addresses) would still pass as root. So while it
 * acts for a user other than root, the worker also empties its effective
 * capability set (capset on the calling thread only; the permitted set is
 * kept, so it can take them back), and restores it before switching back.
 * Errors: as fsworker.h: a job whose identity cannot be taken is not run,
 * and id_err says why. */
#include "fsworker.h"

#include "util.h"

#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Threads kept while idle (one: each costs its stack's pages while the
 * agent idles; a second starts when two jobs are in flight), and the most
 * there may be. A job the kernel
 * keeps waiting (a frozen or unanswering file system) holds its worker; while
 * every worker is busy and jobs wait, another is started, so other requests
 * are still served, up to FSW_MAX_THREADS stuck at once. Workers beyond the
 * minimum leave after FSW_IDLE_S seconds without work. */
#define FSW_MIN_THREADS 1
#define FSW_MAX_THREADS 16
#define FSW_IDLE_S 30

static jobq_fn run_one, done_one;
static jobq_t g_q = {
    .name = "file worker",
    .run = run_one,
    .done = done_one,
    .min_threads = FSW_MIN_THREADS,
    .max_threads = FSW_MAX_THREADS,
    .idle_s = FSW_IDLE_S,
    .weak = 1, /* the pool must not keep the loop alive on its own */
};
static uid_t g_euid;
static gid_t g_egid;
static int g_ngroups;
static gid_t g_groups[USER_MAX_GROUPS];

typedef struct __user_cap_data_struct caps_t[_LINUX_CAPABILITY_U32S_3];

/* The calling thread's capabilities (the raw calls: pid 0 is this thread). */
static int caps_get(caps_t c)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return syscall(SYS_capget, &h, c) < 0 ? -errno : 0;
}

static int caps_set(caps_t c)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return syscall(SYS_capset, &h, c) < 0 ? -errno : 0;
}

/* Take u's identity for this thread only; saved receives the capabilities
 * to restore, and *changed says whether id_leave must run (even after a
 * failure). Returns 0, or -EPERM when the agent may not act as u. */
static int id_enter(const user_id_t *u, caps_t saved, int *changed)
{
    *changed = 0;
    if (!u || (u->uid == g_euid && u->gid == g_egid))
        return 0;
    if (caps_get(saved) < 0)
        return -EPERM;
    *changed = 1;
    if (syscall(SYS_setgroups, (size_t)u->n_groups, u->groups) < 0)
        return -errno;
    syscall(SYS_setfsgid, u->gid);
    syscall(SYS_setfsuid, u->uid);
    /* setfs[ug]id return the previous value and never fail visibly: ask. */
    if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != u->uid ||
        (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != u->gid)
        return -EPERM;
    if (u->uid != 0) {
        /* Last: setgroups and setfsuid above needed CAP_SETGID/SETUID. */
        caps_t none;
        memcpy(none, saved, sizeof none);
        for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
            none[i].effective = 0;
        if (caps_set(none) < 0)
            return -EPERM; /* never act for u with root's capabilities */
    }
    return 0;
}

/* Capabilities first: switching back the groups needs CAP_SETGID. */
static void id_leave(caps_t saved)
{
    caps_set(saved);
    syscall(SYS_setfsuid, g_euid);
    syscall(SYS_setfsgid, g_egid);
    syscall(SYS_setgroups, (size_t)g_ngroups, g_groups);
    /* setfsuid back to 0 raised the file-system capabilities again; the
     * saved set is the whole truth. */
    caps_set(saved);
}

static void run_one(jobq_node_t *n)
{
    fsw_job_t *j = SA_CONTAINER_OF(n, fsw_job_t, _node);
    caps_t saved;
    int changed;
    j->id_err = id_enter(j->user, saved, &changed);
    if (!j->id_err)
        j->run(j);
    if (changed)
        id_leave(saved);
}

static void done_one(jobq_node_t *n)
{
    fsw_job_t *j = SA_CONTAINER_OF(n, fsw_job_t, _node);
    j->done(j);
}

int fsw_init(struct ev_loop *loop)
{
    int n;
    g_euid = geteuid();
    g_egid = getegid();
    n = getgroups(USER_MAX_GROUPS, g_groups);
    g_ngroups = n < 0 ? 0 : n;
    return jobq_init(&g_q, loop);
}

void fsw_submit(fsw_job_t *j) { jobq_submit(&g_q, &j->_node); }

void fsw_shutdown(unsigned wait_ms) { jobq_shutdown(&g_q, wait_ms); }
