/* lc_freeze.c - the file systems a Quiesce freezes: which mounts (from
 * /proc/self/mountinfo), the threads that freeze and thaw them (sync(),
 * FIFREEZE and FITHAW never run on the loop), and the writes refused while
 * they are frozen. See lc_internal.h.
 *
 * The freezer and the thawer share one list of frozen mounts under g_mu:
 * the freezer appends each mount it froze, the thawer takes the whole list
 * and sets g_cancel, and a freezer that sees g_cancel after a FIFREEZE
 * undoes it itself. So a thaw never waits for a freeze that is stuck, and
 * nothing it froze is left behind.
 */
#include "lc_internal.h"

#include "conn.h"
#include "errcode.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ mounts */

void lc_plan_free(lc_plan_t *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->m[i].path);
    p->n = 0;
}

static int has_opt(const char *opts, const char *want)
{
    size_t wl = strlen(want);
    for (const char *p = opts; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == wl && !strncmp(p, want, l))
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

typedef struct mi {
    char *path, *source;
    dev_t dev;
    int ro;
} mi_t;

/* The mount table of the agent's mount namespace, in mount order. Read
 * from procfs, which answers from memory. */
static int mountinfo_read(mi_t **out, int *n)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char *line = NULL;
    size_t cap = 0;
    mi_t *v = NULL;
    int cnt = 0, capv = 0, rc = 0;

    if (!f)
        return -errno;
    while (getline(&line, &cap, f) > 0) {
        unsigned maj, min;
        char mp[4096], opts[1024], *dash, fstype[256], source[4096], sopts[1024];
        if (sscanf(line, "%*d %*d %u:%u %*s %4095s %1023s", &maj, &min, mp, opts) != 4)
            continue;
        if (!(dash = strstr(line, " - ")) ||
            sscanf(dash + 3, "%255s %4095s %1023s", fstype, source, sopts) != 3)
            continue;
        if (cnt == capv) {
            mi_t *nv = realloc(v, (size_t)(capv = capv ? capv * 2 : 64) * sizeof *v);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        util_mountinfo_unescape(mp);
        util_mountinfo_unescape(source);
        v[cnt].path = strdup(mp);
        v[cnt].source = strdup(source);
        v[cnt].dev = makedev(maj, min);
        v[cnt].ro = has_opt(opts, "ro") || has_opt(sopts, "ro");
        if (!v[cnt].path || !v[cnt].source) {
            free(v[cnt].path);
            free(v[cnt].source);
            rc = -ENOMEM;
            break;
        }
        cnt++;
    }
    free(line);
    fclose(f);
    if (rc < 0) {
        for (int i = 0; i < cnt; i++) {
            free(v[i].path);
            free(v[i].source);
        }
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static void mountinfo_free(mi_t *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].source);
    }
    free(v);
}

/* A later mount on the same path hides this one: it cannot be reached by
 * its path, so it is not ours to freeze. */
static int hidden(const mi_t *v, int n, int i)
{
    for (int k = i + 1; k < n; k++)
        if (!strcmp(v[k].path, v[i].path))
            return 1;
    return 0;
}

static int plan_has_dev(const lc_plan_t *p, dev_t dev)
{
    for (int i = 0; i < p->n; i++)
        if (p->m[i].dev == dev)
            return 1;
    return 0;
}

static int plan_add(lc_plan_t *p, const mi_t *e, int order)
{
    if (p->n == LC_MAX_MOUNTS)
        return -E2BIG;
    if (!(p->m[p->n].path = strdup(e->path)))
        return -ENOMEM;
    p->m[p->n].dev = e->dev;
    p->m[p->n].order = order;
    p->n++;
    return 0;
}

static int order_desc(const void *a, const void *b)
{
    return ((const lc_mnt_t *)b)->order - ((const lc_mnt_t *)a)->order;
}

/* Which mounts a Quiesce freezes, in the order it freezes them: the mount
 * mounted last first, so a file system whose device lives on another (a
 * loop device's image file) is frozen before the one holding its image,
 * whose freeze would otherwise stop the first one's flush.
 * With no mounts named: every mount that is backed by a block device (a
 * real major number, or a /dev/ source: pseudo file systems such as proc,
 * sysfs, tmpfs, cgroup, overlay and network file systems have neither),
 * writable (neither the mount nor the super block read-only), reachable by
 * its path, and not the same device as one already chosen (bind mounts).
 * Answers the error and returns -1 when it cannot. */
int lc_plan_make(conn_t *c, uint64_t id, char **want, size_t n_want, lc_plan_t *p)
{
    mi_t *v = NULL;
    int n = 0, rc = mountinfo_read(&v, &n);

    p->n = 0;
    if (rc < 0) {
        conn_send_errno(c, id, rc, "quiesce: reading /proc/self/mountinfo: %s", strerror(-rc));
        return -1;
    }
    if (!n_want) {
        for (int i = 0; i < n && rc == 0; i++) {
            int devsrc = !strncmp(v[i].source, "/dev/", 5);
            if ((major(v[i].dev) == 0 && !devsrc) || v[i].ro || hidden(v, n, i) ||
                plan_has_dev(p, v[i].dev))
                continue;
            /* One device mounted twice (bind mounts, btrfs subvolumes) is
             * one file system: freezing it twice would fail. */
            int dup = 0;
            for (int k = 0; k < p->n && devsrc && !dup; k++)
                dup = !strcmp(v[p->m[k].order].source, v[i].source);
            if (!dup)
                rc = plan_add(p, &v[i], i);
        }
    } else {
        for (size_t w = 0; w < n_want && rc == 0; w++) {
            char path[PATH_MAX];
            size_t len = strlen(want[w]);
            int found = -1;
            if (want[w][0] != '/' || len >= sizeof path) {
                conn_send_error(c, id, CODE(INVALID_ARGUMENT), EINVAL,
                                "quiesce: mount '%s': expected an absolute path", want[w]);
                rc = -1;
                break;
            }
            memcpy(path, want[w], len + 1);
            while (len > 1 && path[len - 1] == '/')
                path[--len] = 0;
            for (int i = 0; i < n; i++)
                if (!strcmp(v[i].path, path))
                    found = i;
            if (found < 0) {
                conn_send_error(c, id, CODE(INVALID_ARGUMENT), EINVAL,
                                "quiesce: '%s' is not a mount point", path);
                rc = -1;
                break;
            }
            if (!plan_has_dev(p, v[found].dev))
                rc = plan_add(p, &v[found], found);
        }
    }
    mountinfo_free(v, n);
    if (rc < -1) {
        conn_send_errno(c, id, rc, "quiesce: %s",
                        rc == -E2BIG ? "more than 64 mounts to freeze" : strerror(-rc));
    }
    if (rc < 0) {
        lc_plan_free(p);
        return -1;
    }
    qsort(p->m, (size_t)p->n, sizeof p->m[0], order_desc);
    return 0;
}

/* ------------------------------------------------------------ threads */

/* Shared with the freezer and thawer threads, under g_mu. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_cancel;          /* a thaw came: the freezer stops and undoes */
static int g_freezer_running;
static int g_synced;          /* the freezer's sync() returned: FIFREEZE begins */
static struct {
    char *path;
    int fd;
} g_frozen[LC_MAX_MOUNTS];
static int g_nfrozen;

static lc_job_t *g_done_head, *g_done_tail; /* under g_mu */

void lc_job_free(lc_job_t *j)
{
    lc_plan_free(&j->plan);
    for (int i = 0; i < j->n_done; i++)
        free(j->done[i]);
    for (int i = 0; i < j->n_undone; i++)
        free(j->undone[i]);
    free(j->err_path);
    free(j->thaw_errors);
    free(j);
}

static void job_finished(lc_job_t *j)
{
    pthread_mutex_lock(&g_mu);
    j->next = NULL;
    if (g_done_tail)
        g_done_tail->next = j;
    else
        g_done_head = j;
    g_done_tail = j;
    if (j->kind == LC_JOB_FREEZE) {
        g_freezer_running = 0;
        pthread_cond_broadcast(&g_cv);
    }
    pthread_mutex_unlock(&g_mu);
    lc_wake();
}

/* Thaw every mount in the shared list (most recently frozen first), and
 * tell a freezer still running to stop. Records into names (may be NULL). */
static void thaw_list(char **names, int *n_names, char **errors)
{
    char *paths[LC_MAX_MOUNTS];
    int fds[LC_MAX_MOUNTS], n;

    pthread_mutex_lock(&g_mu);
    g_cancel = 1;
    n = g_nfrozen;
    for (int i = 0; i < n; i++) {
        paths[i] = g_frozen[i].path;
        fds[i] = g_frozen[i].fd;
    }
    g_nfrozen = 0;
    pthread_mutex_unlock(&g_mu);
    for (int i = n - 1; i >= 0; i--) {
        if (ioctl(fds[i], FITHAW, 0) < 0 && errors) {
            /* EINVAL: not frozen (someone else thawed it): nothing to do. */
            if (errno != EINVAL) {
                char buf[PATH_MAX + 64];
                size_t ol = *errors ? strlen(*errors) : 0;
                int bl = snprintf(buf, sizeof buf, "%s%s: %s", ol ? "; " : "", paths[i],
                                  strerror(errno));
                char *ne = realloc(*errors, ol + (size_t)bl + 1);
                if (ne) {
                    memcpy(ne + ol, buf, (size_t)bl + 1);
                    *errors = ne;
                }
            }
        }
        close(fds[i]);
        if (names && n_names)
            names[(*n_names)++] = paths[i];
        else
            free(paths[i]);
    }
}

static void *freezer_main(void *arg)
{
    lc_job_t *j = arg;
    uint64_t t0 = util_now_mono_nano();

    sync();
    j->sync_ns = util_now_mono_nano() - t0;
    /* The thaw_after clock starts now: a sync slowed by other file systems'
     * dirty data must not eat the frozen time the caller asked for. */
    pthread_mutex_lock(&g_mu);
    g_synced = 1;
    pthread_mutex_unlock(&g_mu);
    lc_wake();
    t0 = util_now_mono_nano();
    for (int i = 0; i < j->plan.n; i++) {
        const char *path = j->plan.m[i].path;
        pthread_mutex_lock(&g_mu);
        int cancel = g_cancel;
        pthread_mutex_unlock(&g_mu);
        if (cancel) {
            j->cancelled = 1;
            break;
        }
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, FIFREEZE, 0) < 0) {
            j->err = -errno;
            j->err_path = strdup(path);
            if (fd >= 0)
                close(fd);
            break;
        }
        char *copy = strdup(path);
        pthread_mutex_lock(&g_mu);
        if (g_cancel || !copy) {
            pthread_mutex_unlock(&g_mu);
            /* A thaw ran while this one froze: undo it here. */
            ioctl(fd, FITHAW, 0);
            close(fd);
            free(copy);
            if (!copy) {
                j->err = -ENOMEM;
                j->err_path = NULL;
            } else {
                j->cancelled = 1;
            }
            break;
        }
        g_frozen[g_nfrozen].path = copy;
        g_frozen[g_nfrozen].fd = fd;
        g_nfrozen++;
        pthread_mutex_unlock(&g_mu);
        j->done[j->n_done++] = strdup(path);
    }
    j->freeze_ns = util_now_mono_nano() - t0;
    pthread_mutex_lock(&g_mu);
    if (g_cancel)
        j->cancelled = 1;
    pthread_mutex_unlock(&g_mu);
    if (j->err)
        thaw_list(j->undone, &j->n_undone, NULL);
    job_finished(j);
    return NULL;
}

static void *thawer_main(void *arg)
{
    lc_job_t *j = arg;
    thaw_list(j->done, &j->n_done, &j->thaw_errors);
    job_finished(j);
    return NULL;
}

/* A detached thread with every signal blocked (they belong to the loop). */
static int thread_start(void *(*fn)(void *), lc_job_t *j)
{
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    rc = pthread_create(&t, &attr, fn, j);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}


int lc_job_start(lc_job_t *j)
{
    return thread_start(j->kind == LC_JOB_FREEZE ? freezer_main : thawer_main, j);
}

void lc_job_run_thaw(lc_job_t *j)
{
    thawer_main(j);
}

lc_job_t *lc_job_pop(void)
{
    pthread_mutex_lock(&g_mu);
    lc_job_t *j = g_done_head;
    if (j) {
        g_done_head = j->next;
        if (!g_done_head)
            g_done_tail = NULL;
    }
    pthread_mutex_unlock(&g_mu);
    return j;
}

void lc_freezer_arm(void)
{
    pthread_mutex_lock(&g_mu);
    g_cancel = 0;
    g_freezer_running = 1;
    g_synced = 0;
    pthread_mutex_unlock(&g_mu);
}

void lc_freezer_disarm(void)
{
    pthread_mutex_lock(&g_mu);
    g_freezer_running = 0;
    pthread_mutex_unlock(&g_mu);
}

int lc_freezer_running(void)
{
    pthread_mutex_lock(&g_mu);
    int r = g_freezer_running;
    pthread_mutex_unlock(&g_mu);
    return r;
}

int lc_freeze_cancelled(void)
{
    pthread_mutex_lock(&g_mu);
    int r = g_cancel;
    pthread_mutex_unlock(&g_mu);
    return r;
}

int lc_take_synced(void)
{
    pthread_mutex_lock(&g_mu);
    int r = g_synced;
    g_synced = 0;
    pthread_mutex_unlock(&g_mu);
    return r;
}

void lc_thaw_now(char **names, int *n_names, char **errors)
{
    thaw_list(names, n_names, errors);
}

int lc_freezer_wait(int seconds)
{
    struct timespec until;
    pthread_mutex_lock(&g_mu);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    while (g_freezer_running)
        if (pthread_cond_timedwait(&g_cv, &g_mu, &until) == ETIMEDOUT)
            break;
    int stuck = g_freezer_running;
    pthread_mutex_unlock(&g_mu);
    return stuck;
}

/* ------------------------------------------------------------ the block */

/* Loop thread only. */
static lc_plan_t g_block;

void lc_block_set(const lc_plan_t *p)
{
    lc_plan_free(&g_block);
    for (int i = 0; i < p->n; i++) {
        if (!(g_block.m[g_block.n].path = strdup(p->m[i].path)))
            continue;
        g_block.m[g_block.n].dev = p->m[i].dev;
        g_block.n++;
    }
}

void lc_block_frozen(const lc_plan_t *plan, char *const *done, int n)
{
    lc_plan_t now = {.n = 0};
    for (int i = 0; i < plan->n; i++)
        for (int k = 0; k < n; k++)
            if (!strcmp(plan->m[i].path, done[k]))
                now.m[now.n++] = plan->m[i];
    lc_block_set(&now);
}

void lc_block_clear(void)
{
    lc_plan_free(&g_block);
}

int lc_block_count(void)
{
    return g_block.n;
}

const char *lc_block_path(int i)
{
    return g_block.m[i].path;
}



/* ------------------------------------------------------------ fs check */

static const char *blocked_mount(dev_t dev)
{
    for (int i = 0; i < g_block.n; i++)
        if (g_block.m[i].dev == dev)
            return g_block.m[i].path;
    return NULL;
}

int lc_refuse_frozen_write(conn_t *c, const Request *req, const char *path)
{
    const char *what, *hit = NULL;
    char buf[PATH_MAX];
    struct stat st;
    size_t len;

    if (!g_block.n || !path)
        return 0;
    switch (req->op_case) {
    case OP(WRITE_FILE): what = "write_file"; break;
    case OP(MKDIR): what = "mkdir"; break;
    case OP(REMOVE): what = "remove"; break;
    case OP(RENAME): what = "rename"; break;
    case OP(SYMLINK): what = "symlink"; break;
    case OP(SET_ATTRIBUTES): what = "set_attributes"; break;
    default: return 0;
    }
    /* The target itself (it may be a mount point, or a symlink to another
     * file system), then its nearest existing ancestor, where a new name
     * would be made. stat() of a frozen file system does not wait. */
    if (stat(path, &st) == 0)
        hit = blocked_mount(st.st_dev);
    len = strlen(path);
    if (!hit && len < sizeof buf) {
        memcpy(buf, path, len + 1);
        for (;;) {
            char *slash = strrchr(buf, '/');
            if (!slash)
                break;
            if (slash == buf)
                slash[1] = 0;
            else
                *slash = 0;
            if (stat(buf, &st) == 0) {
                hit = blocked_mount(st.st_dev);
                break;
            }
            if (slash == buf)
                break;
        }
    }
    if (!hit)
        return 0;
    conn_send_error(c, req->id, CODE(UNAVAILABLE), 0,
                    "%s '%s': file system frozen (%s is quiesced for a snapshot); retry after "
                    "Thaw",
                    what, path, hit);
    return 1;
}

/* ------------------------------------------------------------ info */
