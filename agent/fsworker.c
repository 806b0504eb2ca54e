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
 * kept, so it can take them back), and restores it before switching back. */
#include "fsworker.h"

#include "log.h"

#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Threads kept while idle, and the most there may be. A job the kernel
 * keeps waiting (a frozen or unanswering file system) holds its worker; while
 * every worker is busy and jobs wait, another is started, so other requests
 * are still served, up to FSW_MAX_THREADS stuck at once. Workers beyond the
 * minimum leave after FSW_IDLE_S seconds without work. */
#define FSW_MIN_THREADS 2
#define FSW_MAX_THREADS 16
#define FSW_IDLE_S 30

static struct ev_loop *g_loop;
static ev_async g_async;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;      /* work, or stop */
static pthread_cond_t g_exit_cv = PTHREAD_COND_INITIALIZER; /* a worker left */
static fsw_job_t *g_qhead, *g_qtail;   /* waiting for a worker */
static fsw_job_t *g_dhead, *g_dtail;   /* run, waiting for done() on the loop */
static int g_nthreads, g_idle, g_queued; /* under g_mu */
static int g_stop, g_inline;
static uid_t g_euid;
static gid_t g_egid;
static int g_ngroups;
static gid_t g_groups[USER_MAX_GROUPS];

static void list_push(fsw_job_t **h, fsw_job_t **t, fsw_job_t *j)
{
    j->_next = NULL;
    if (*t)
        (*t)->_next = j;
    else
        *h = j;
    *t = j;
}

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

static void run_one(fsw_job_t *j)
{
    caps_t saved;
    int changed;
    j->id_err = id_enter(j->user, saved, &changed);
    if (!j->id_err)
        j->run(j);
    if (changed)
        id_leave(saved);
}

/* Wait for work; 0 when a worker beyond the minimum should leave. Under
 * g_mu. */
static int wait_work(void)
{
    while (!g_qhead && !g_stop) {
        int rc = 0;
        g_idle++;
        if (g_nthreads > FSW_MIN_THREADS) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += FSW_IDLE_S;
            rc = pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        } else {
            pthread_cond_wait(&g_cv, &g_mu);
        }
        g_idle--;
        if (rc == ETIMEDOUT && !g_qhead && g_nthreads > FSW_MIN_THREADS)
            return 0;
    }
    return g_qhead != NULL;
}

static void *worker(void *arg)
{
    pthread_mutex_lock(&g_mu);
    while (wait_work()) {
        fsw_job_t *j = g_qhead;
        g_qhead = j->_next;
        if (!g_qhead)
            g_qtail = NULL;
        g_queued--;
        pthread_mutex_unlock(&g_mu);
        run_one(j);
        pthread_mutex_lock(&g_mu);
        list_push(&g_dhead, &g_dtail, j);
        /* After fsw_shutdown gave up on this worker the loop is gone: the
         * result stays in the list, which the exit reclaims. */
        if (!g_inline)
            ev_async_send(g_loop, &g_async);
    }
    g_nthreads--;
    pthread_cond_broadcast(&g_exit_cv);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

/* Start one more detached worker. Under g_mu. Returns 0 or -errno. */
static int spawn_worker(void)
{
    pthread_attr_t attr;
    pthread_t t;
    int rc = pthread_attr_init(&attr);
    if (rc)
        return -rc;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, worker, NULL);
    pthread_attr_destroy(&attr);
    if (rc)
        return -rc;
    g_nthreads++;
    return 0;
}

/* Run done() for everything finished; done() may submit more. */
static void drain_done(void)
{
    for (;;) {
        pthread_mutex_lock(&g_mu);
        fsw_job_t *j = g_dhead;
        g_dhead = g_dtail = NULL;
        pthread_mutex_unlock(&g_mu);
        if (!j)
            return;
        while (j) {
            fsw_job_t *next = j->_next;
            j->done(j);
            j = next;
        }
    }
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    drain_done();
}

int fsw_init(struct ev_loop *loop)
{
    int n, rc = 0;
    g_loop = loop;
    g_euid = geteuid();
    g_egid = getegid();
    n = getgroups(USER_MAX_GROUPS, g_groups);
    g_ngroups = n < 0 ? 0 : n;
    ev_async_init(&g_async, on_async);
    ev_async_start(loop, &g_async);
    /* The async watcher must not keep the loop alive on its own. */
    ev_unref(loop);
    pthread_mutex_lock(&g_mu);
    while (g_nthreads < FSW_MIN_THREADS && (rc = spawn_worker()) == 0)
        ;
    n = g_nthreads;
    pthread_mutex_unlock(&g_mu);
    if (rc)
        log_error("file worker thread: %s", strerror(-rc));
    return n ? 0 : rc;
}

void fsw_submit(fsw_job_t *j)
{
    pthread_mutex_lock(&g_mu);
    /* No threads (never initialised, as in the fuzzer, or shut down): run
     * here. Callers submit last, touching nothing of the job afterwards. */
    if (g_inline || !g_loop) {
        pthread_mutex_unlock(&g_mu);
        run_one(j);
        j->done(j);
        return;
    }
    list_push(&g_qhead, &g_qtail, j);
    g_queued++;
    if (g_queued > g_idle && g_nthreads < FSW_MAX_THREADS) {
        int rc = spawn_worker();
        if (rc < 0 && !g_nthreads)
            log_error("file worker thread: %s", strerror(-rc));
    }
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

void fsw_shutdown(unsigned wait_ms)
{
    struct timespec ts;
    int stuck;
    if (!g_loop)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&g_mu);
    g_stop = 1;
    pthread_cond_broadcast(&g_cv);
    while (g_nthreads && pthread_cond_timedwait(&g_exit_cv, &g_mu, &ts) != ETIMEDOUT)
        ;
    stuck = g_nthreads;
    g_inline = 1;
    pthread_mutex_unlock(&g_mu);
    if (stuck)
        log_warn("%d file worker(s) still waiting in the kernel after %u ms; exiting without "
                 "them", stuck, wait_ms);
    drain_done();
    ev_ref(g_loop);
    ev_async_stop(g_loop, &g_async);
    g_loop = NULL;
}
