/* lifecycle.c - see lifecycle.h.
 *
 * States of the freeze (loop thread only):
 *   IDLE --Quiesce--> HOOKS (pre-checkpoint hooks) --ok--> FREEZING (a
 *   thread: sync(), then FIFREEZE mount by mount) --ok--> FROZEN
 *   HOOKS, FREEZING, FROZEN --Thaw, thaw_after timer, restore, shutdown-->
 *   a thaw thread (FITHAW) --> IDLE
 * sync(), FIFREEZE and FITHAW can each take as long as the disks want, so
 * none runs on the loop. The freezer and the thawer share one list of
 * frozen mounts under g_mu: the freezer appends each mount it froze, the
 * thawer takes the whole list and sets g_cancel, and a freezer that sees
 * g_cancel after a FIFREEZE undoes it itself. So a thaw never waits for a
 * freeze that is stuck, and nothing it froze is left behind.
 *
 * While anything is frozen or being frozen, writes to those file systems
 * that come as requests are refused at once (lc_refuse_frozen_write), and
 * the agent's log is held in memory (log_hold): it may be a file there, or
 * a journal daemon that writes there and stops reading its socket.
 *
 * A restore (Restored, the VM generation ID uevent, or a jump of the wall
 * clock) thaws, reseeds the kernel's random number generator, counts
 * itself, closes connections whose peer is gone, runs the post-restore
 * hooks and tells WatchLifecycle subscribers.
 */
#include "lifecycle.h"

#include "config.h"
#include "conn.h"
#include "errcode.h"
#include "hooks.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/netlink.h>
#include <linux/random.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define LC_MAX_MOUNTS 64
#define LC_EVENTS_QUEUED 64          /* per subscriber */
#define LC_ENTROPY_MAX 4096
#define LC_COALESCE_NS (30ull * 1000000000ull)  /* one restore, several signs */
#define LC_CLAIM_NS (60ull * 1000000000ull)     /* a Restored for a noticed one */
#define LC_SHUTDOWN_WAIT_S 5
#define LC_MIN_UNIX_NANO 946684800000000000ull  /* 2000-01-01 */

#define LK(x) SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__##x

typedef Sandbox__Agent__V1__LifecycleEvent LifecycleEvent;
typedef Sandbox__Agent__V1__QuiesceResult QuiesceResult;
typedef Sandbox__Agent__V1__ThawResult ThawResult;
typedef Sandbox__Agent__V1__RestoredResult RestoredResult;

/* ------------------------------------------------------------ mounts */

typedef struct mnt {
    char *path;
    dev_t dev;
    int order; /* line in mountinfo */
} mnt_t;

typedef struct plan {
    mnt_t m[LC_MAX_MOUNTS];
    int n;
} plan_t;

static void plan_free(plan_t *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->m[i].path);
    p->n = 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
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
        unescape(mp);
        unescape(source);
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

static int plan_has_dev(const plan_t *p, dev_t dev)
{
    for (int i = 0; i < p->n; i++)
        if (p->m[i].dev == dev)
            return 1;
    return 0;
}

static int plan_add(plan_t *p, const mi_t *e, int order)
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
    return ((const mnt_t *)b)->order - ((const mnt_t *)a)->order;
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
static int plan_make(conn_t *c, uint64_t id, char **want, size_t n_want, plan_t *p)
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
        plan_free(p);
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

enum job_kind { JOB_FREEZE, JOB_THAW };

typedef struct job {
    enum job_kind kind;
    /* freeze: what to freeze */
    plan_t plan;
    /* results: the mounts frozen (freeze) or thawed (thaw, and the ones a
     * failed freeze undid), NULL-terminated arrays of malloc'd paths */
    char *done[LC_MAX_MOUNTS + 1];
    int n_done;
    char *undone[LC_MAX_MOUNTS + 1];
    int n_undone;
    uint64_t sync_ns, freeze_ns;
    int err;            /* -errno of the mount that failed */
    char *err_path;
    int cancelled;
    char *thaw_errors;  /* thaw: "PATH: error; ..." */
    const char *source; /* thaw: what asked for it */
    struct job *next;
} job_t;

static struct ev_loop *g_loop;
static ev_async g_async;
static job_t *g_done_head, *g_done_tail; /* under g_mu */

static void job_free(job_t *j)
{
    plan_free(&j->plan);
    for (int i = 0; i < j->n_done; i++)
        free(j->done[i]);
    for (int i = 0; i < j->n_undone; i++)
        free(j->undone[i]);
    free(j->err_path);
    free(j->thaw_errors);
    free(j);
}

static void job_finished(job_t *j)
{
    pthread_mutex_lock(&g_mu);
    j->next = NULL;
    if (g_done_tail)
        g_done_tail->next = j;
    else
        g_done_head = j;
    g_done_tail = j;
    if (j->kind == JOB_FREEZE) {
        g_freezer_running = 0;
        pthread_cond_broadcast(&g_cv);
    }
    pthread_mutex_unlock(&g_mu);
    if (g_loop)
        ev_async_send(g_loop, &g_async);
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
    job_t *j = arg;
    uint64_t t0 = util_now_mono_nano();

    sync();
    j->sync_ns = util_now_mono_nano() - t0;
    /* The thaw_after clock starts now: a sync slowed by other file systems'
     * dirty data must not eat the frozen time the caller asked for. */
    pthread_mutex_lock(&g_mu);
    g_synced = 1;
    pthread_mutex_unlock(&g_mu);
    if (g_loop)
        ev_async_send(g_loop, &g_async);
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
    job_t *j = arg;
    thaw_list(j->done, &j->n_done, &j->thaw_errors);
    job_finished(j);
    return NULL;
}

/* A detached thread with every signal blocked (they belong to the loop). */
static int thread_start(void *(*fn)(void *), job_t *j)
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

/* ------------------------------------------------------------ loop state */

enum lc_state { ST_IDLE, ST_HOOKS, ST_FREEZING, ST_FROZEN };

enum op_kind { OPK_QUIESCE, OPK_THAW, OPK_RESTORED };

/* A Quiesce, Thaw or Restored waiting for its answer: a stream of its
 * connection, so a connection that closes only marks it gone. Two owners:
 * the connection (until destroy) and the lifecycle (until answered). */
typedef struct op {
    stream_t base;
    enum op_kind kind;
    int gone, owned_by_conn, owned_by_lc;
    struct op *next;
    /* Quiesce */
    plan_t plan;
    uint32_t thaw_after_ms;
    uint64_t hooks_ns;
    /* Restored */
    int64_t step;
    uint64_t prev_generation;
} op_t;

typedef struct restore {
    const char *source;
    op_t *waiters;
    int waiting_thaw;
    char **thawed;
    int n_thawed;
    int64_t step;
} restore_t;

/* One event, as queued for a subscriber. */
typedef struct evrec {
    int kind;
    uint64_t generation, at, restores;
    int64_t step;
    const char *source; /* a string literal */
    char *mounts[LC_MAX_MOUNTS];
    int n_mounts;
} evrec_t;

typedef struct sub {
    stream_t base;
    evrec_t q[LC_EVENTS_QUEUED];
    unsigned head, len;
    int overflow;
    struct sub *next, *prev;
} sub_t;

static enum lc_state g_state;
static plan_t g_block;           /* mounts being frozen or frozen: writes refused */
static int g_thawing;            /* a thaw thread runs */
static const char *g_thaw_source;
static ev_timer g_thaw_timer;
static hooks_run_t *g_hooks;     /* pre-checkpoint or post-restore hooks running */
static op_t *g_quiesce;          /* the Quiesce in flight */
static op_t *g_thaw_waiters;
static restore_t *g_restore;     /* a restore being handled */
static sub_t *g_subs;
static uint64_t g_generation, g_restores, g_last_restore_unix, g_last_restore_mono;
static uint64_t g_unclaimed_mono; /* a noticed restore no Restored has claimed */
static int g_nl_fd = -1;
static ev_io g_nl_io;
static ev_timer g_clock_timer;
static int64_t g_off_rt, g_off_bt;
static int g_clock_base;

static void restore_after_thaw(void);
static void settle(void);

/* ------------------------------------------------------------ events */

static void emit(int kind, const char *source, int64_t step, char *const *mounts, int n)
{
    uint64_t now = util_now_unix_nano();
    for (sub_t *s = g_subs; s; s = s->next) {
        if (s->overflow)
            continue;
        if (s->len == LC_EVENTS_QUEUED) {
            s->overflow = 1;
            stream_wake(&s->base);
            continue;
        }
        evrec_t *e = &s->q[(s->head + s->len) % LC_EVENTS_QUEUED];
        memset(e, 0, sizeof *e);
        e->kind = kind;
        e->generation = g_generation;
        e->at = now;
        e->restores = g_restores;
        e->step = step;
        e->source = source;
        for (int i = 0; i < n && mounts[i]; i++)
            if ((e->mounts[e->n_mounts] = strdup(mounts[i])))
                e->n_mounts++;
        s->len++;
        stream_wake(&s->base);
    }
}

static void evrec_clear(evrec_t *e)
{
    for (int i = 0; i < e->n_mounts; i++)
        free(e->mounts[i]);
    e->n_mounts = 0;
}

static stream_status_t sub_next(stream_t *st)
{
    sub_t *s = (sub_t *)st;
    if (!s->len) {
        if (s->overflow) {
            conn_send_error(st->conn, st->id, CODE(RESOURCE_EXHAUSTED), 0,
                            "watch_lifecycle: more than %d events were not read; events "
                            "were lost, watch again",
                            LC_EVENTS_QUEUED);
            return STREAM_DONE;
        }
        return STREAM_WAIT;
    }
    evrec_t *e = &s->q[s->head];
    Response r = RESPONSE_INIT;
    LifecycleEvent ev = SANDBOX__AGENT__V1__LIFECYCLE_EVENT__INIT;
    ev.kind = e->kind;
    ev.generation = e->generation;
    ev.clock_step_nano = e->step;
    ev.at_unix_nano = e->at;
    ev.source = (char *)e->source;
    ev.n_mounts = (size_t)e->n_mounts;
    ev.mounts = e->mounts;
    ev.restores = e->restores;
    r.result_case = RES(LIFECYCLE);
    r.lifecycle = &ev;
    conn_send(st->conn, st->id, 0, &r);
    evrec_clear(e);
    s->head = (s->head + 1) % LC_EVENTS_QUEUED;
    s->len--;
    return STREAM_MORE;
}

static void sub_destroy(stream_t *st)
{
    sub_t *s = (sub_t *)st;
    while (s->len) {
        evrec_clear(&s->q[s->head]);
        s->head = (s->head + 1) % LC_EVENTS_QUEUED;
        s->len--;
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        g_subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

static const stream_ops_t sub_ops = {
    .name = "watch_lifecycle",
    .next = sub_next,
    .destroy = sub_destroy,
};

/* ------------------------------------------------------------ ops */

static stream_status_t op_next(stream_t *s)
{
    return STREAM_WAIT;
}

static void op_release(op_t *o)
{
    if (o->owned_by_conn || o->owned_by_lc)
        return;
    plan_free(&o->plan);
    free(o);
}

static void op_destroy(stream_t *s)
{
    op_t *o = (op_t *)s;
    o->gone = 1;
    o->owned_by_conn = 0;
    op_release(o);
}

static const stream_ops_t op_ops = {
    .name = "lifecycle",
    .next = op_next,
    .destroy = op_destroy,
};

/* A new op registered as the stream answering req; answers and returns
 * NULL on failure. */
static op_t *op_new(conn_t *c, const Request *req, enum op_kind kind)
{
    op_t *o = calloc(1, sizeof *o);
    int rc;
    if (!o) {
        conn_send_errno(c, req->id, -ENOMEM, "out of memory");
        return NULL;
    }
    o->kind = kind;
    o->base.ops = &op_ops;
    if ((rc = conn_stream_add(c, &o->base, req->id)) < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc, "cannot start: %s",
                        rc == -EMFILE ? "too many requests in flight" : strerror(-rc));
        free(o);
        return NULL;
    }
    o->owned_by_conn = o->owned_by_lc = 1;
    return o;
}

/* The lifecycle is done with o: end its stream (destroy() drops the
 * connection's hold) and drop its own hold. */
static void op_drop(op_t *o)
{
    if (!o->gone)
        conn_stream_end(o->base.conn, &o->base);
    o->owned_by_lc = 0;
    op_release(o);
}

/* Send r as the op's last answer, then drop it. */
static void op_reply(op_t *o, Response *r)
{
    if (!o->gone)
        conn_send(o->base.conn, o->base.id, 1, r);
    op_drop(o);
}

static void op_error(op_t *o, int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void op_error(op_t *o, int code, int os_errno, const char *fmt, ...)
{
    if (!o->gone) {
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        conn_send_error(o->base.conn, o->base.id, code, os_errno, "%s", msg);
    }
    op_drop(o);
}

/* ------------------------------------------------------------ thaw */

static void on_async(struct ev_loop *loop, ev_async *w, int revents);

static void block_set(const plan_t *p)
{
    plan_free(&g_block);
    for (int i = 0; i < p->n; i++) {
        if (!(g_block.m[g_block.n].path = strdup(p->m[i].path)))
            continue;
        g_block.m[g_block.n].dev = p->m[i].dev;
        g_block.n++;
    }
}

/* Everything is over (no freezer, no thawer, nothing frozen): let writes
 * and the log go again. */
static void settle(void)
{
    int freezer;
    pthread_mutex_lock(&g_mu);
    freezer = g_freezer_running;
    pthread_mutex_unlock(&g_mu);
    if (freezer || g_thawing || g_state == ST_FROZEN || g_state == ST_HOOKS)
        return;
    g_state = ST_IDLE;
    plan_free(&g_block);
    ev_timer_stop(g_loop, &g_thaw_timer);
    log_hold(0);
}

static void quiesce_fail_cancelled(const char *source)
{
    op_t *q = g_quiesce;
    g_quiesce = NULL;
    if (q)
        op_error(q, CODE(CANCELLED), 0,
                  "quiesce: cancelled: a thaw (%s) came before the freeze completed", source);
}

/* Start thawing. Returns 1 when a thaw runs (its end answers the waiters),
 * 0 when there was nothing to thaw. */
static int thaw_start(const char *source)
{
    switch (g_state) {
    case ST_IDLE:
        return g_thawing;
    case ST_HOOKS:
        /* Nothing frozen yet: the pre-checkpoint hooks stop here. */
        hooks_cancel(g_hooks);
        g_hooks = NULL;
        g_state = ST_IDLE;
        quiesce_fail_cancelled(source);
        settle();
        return 0;
    case ST_FREEZING:
    case ST_FROZEN:
        break;
    }
    if (g_thawing)
        return 1;
    job_t *j = calloc(1, sizeof *j);
    g_thaw_source = source;
    if (j) {
        j->kind = JOB_THAW;
        j->source = source;
    }
    if (!j || thread_start(thawer_main, j) < 0) {
        /* No thread: thawing cannot wait for one. FITHAW does not wait
         * for the disk; do it here. */
        log_warn("thaw: no thread for it; thawing on the loop");
        if (!j) {
            thaw_list(NULL, NULL, NULL);
            g_state = g_state == ST_FROZEN ? ST_IDLE : g_state;
            settle();
            return 0;
        }
        thawer_main(j);
    }
    g_thawing = 1;
    return 1;
}

static void thaw_done(job_t *j)
{
    Response r = RESPONSE_INIT;
    ThawResult tr = SANDBOX__AGENT__V1__THAW_RESULT__INIT;

    g_thawing = 0;
    if (g_state == ST_FROZEN)
        g_state = ST_IDLE;
    if (j->thaw_errors)
        log_error("thaw: %s", j->thaw_errors);
    if (j->n_done) {
        char list[1024] = "";
        for (int i = 0; i < j->n_done; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     j->done[i]);
        log_info("thawed (%s): %s", j->source, list);
        emit(LK(THAWED), j->source, 0, j->done, j->n_done);
    }
    settle();
    tr.n_thawed = (size_t)j->n_done;
    tr.thawed = j->done;
    r.result_case = RES(THAWED);
    r.thawed = &tr;
    while (g_thaw_waiters) {
        op_t *o = g_thaw_waiters;
        g_thaw_waiters = o->next;
        op_reply(o, &r);
    }
    if (g_restore && g_restore->waiting_thaw) {
        g_restore->waiting_thaw = 0;
        g_restore->thawed = calloc((size_t)j->n_done + 1, sizeof(char *));
        for (int i = 0; g_restore->thawed && i < j->n_done; i++)
            if ((g_restore->thawed[g_restore->n_thawed] = strdup(j->done[i])))
                g_restore->n_thawed++;
        restore_after_thaw();
    }
    job_free(j);
}

static void on_thaw_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    log_warn("quiesce: no Thaw or restore within thaw_after; thawing by itself");
    thaw_start("timer");
}

void lc_handle_thaw(conn_t *c, const Request *req)
{
    if (!g_loop) {
        conn_send_error(c, req->id, CODE(UNAVAILABLE), 0, "thaw: lifecycle not initialised");
        return;
    }
    op_t *o = op_new(c, req, OPK_THAW);
    if (!o)
        return;
    if (thaw_start("request")) {
        o->next = g_thaw_waiters;
        g_thaw_waiters = o;
        return;
    }
    Response r = RESPONSE_INIT;
    ThawResult tr = SANDBOX__AGENT__V1__THAW_RESULT__INIT;
    r.result_case = RES(THAWED);
    r.thawed = &tr;
    op_reply(o, &r);
}

/* ------------------------------------------------------------ quiesce */

static int freeze_errno_code(int neg)
{
    switch (-neg) {
    case EOPNOTSUPP:
    case ENOTTY:
    case EBUSY:
    case EINVAL: return CODE(FAILED_PRECONDITION);
    default: return errcode_from_errno(neg);
    }
}

static void freeze_done(job_t *j)
{
    op_t *q = g_quiesce;
    g_quiesce = NULL;

    if (j->n_undone) {
        emit(LK(THAWED), "failure", 0, j->undone, j->n_undone);
    }
    if (j->err) {
        const char *why = j->err == -EOPNOTSUPP || j->err == -ENOTTY
                              ? " (this file system cannot be frozen)"
                          : j->err == -EBUSY ? " (already frozen by someone else)"
                                             : "";
        log_warn("quiesce: freezing '%s': %s%s; %d thawed again",
                 j->err_path ? j->err_path : "?", strerror(-j->err), why, j->n_undone);
        if (g_state == ST_FREEZING)
            g_state = ST_IDLE;
        if (q)
            op_error(q, freeze_errno_code(j->err), -j->err,
                      "quiesce: freezing '%s': %s%s; nothing is left frozen",
                      j->err_path ? j->err_path : "?", strerror(-j->err), why);
        settle();
        job_free(j);
        return;
    }
    pthread_mutex_lock(&g_mu);
    /* A thaw taken after the freezer's last look still cancels it. */
    if (g_cancel)
        j->cancelled = 1;
    pthread_mutex_unlock(&g_mu);
    if (j->cancelled || g_thawing || g_state != ST_FREEZING) {
        if (g_state == ST_FREEZING)
            g_state = ST_IDLE;
        if (q)
            op_error(q, CODE(CANCELLED), 0,
                      "quiesce: cancelled: a thaw (%s) came before the freeze completed",
                      g_thaw_source ? g_thaw_source : "?");
        settle();
        job_free(j);
        return;
    }
    g_state = j->n_done ? ST_FROZEN : ST_IDLE;
    {
        /* Writes are refused on what is frozen now. */
        plan_t now = {.n = 0};
        for (int i = 0; i < j->plan.n; i++)
            for (int k = 0; k < j->n_done; k++)
                if (!strcmp(j->plan.m[i].path, j->done[k]))
                    now.m[now.n++] = j->plan.m[i];
        block_set(&now);
    }
    log_info("quiesce: %d mounts frozen (sync %.1f ms, freeze %.1f ms); thaw by itself in "
             "%u ms",
             j->n_done, (double)j->sync_ns / 1e6, (double)j->freeze_ns / 1e6,
             q ? q->thaw_after_ms : 0);
    if (j->n_done)
        emit(LK(QUIESCED), "request", 0, j->done, j->n_done);
    if (q) {
        Response r = RESPONSE_INIT;
        QuiesceResult qr = SANDBOX__AGENT__V1__QUIESCE_RESULT__INIT;
        qr.n_frozen = (size_t)j->n_done;
        qr.frozen = j->done;
        qr.sync_nanos = j->sync_ns;
        qr.freeze_nanos = j->freeze_ns;
        qr.thaw_after_ms = q->thaw_after_ms;
        qr.hooks_nanos = q->hooks_ns;
        r.result_case = RES(QUIESCED);
        r.quiesced = &qr;
        op_reply(q, &r);
    }
    settle();
    job_free(j);
}

static void freeze_begin(op_t *q)
{
    job_t *j = calloc(1, sizeof *j);
    int rc = j ? 0 : -ENOMEM;

    if (j) {
        j->kind = JOB_FREEZE;
        j->plan = q->plan; /* the job takes the paths */
        q->plan.n = 0;
        pthread_mutex_lock(&g_mu);
        g_cancel = 0;
        g_freezer_running = 1;
        g_synced = 0;
        pthread_mutex_unlock(&g_mu);
        /* From here the writes that come as requests are refused, and the
         * log waits in memory, until the thaw. */
        block_set(&j->plan);
        log_hold(1);
        g_state = ST_FREEZING;
        ev_timer_set(&g_thaw_timer, q->thaw_after_ms / 1000.0, 0);
        rc = thread_start(freezer_main, j);
        if (rc < 0) {
            pthread_mutex_lock(&g_mu);
            g_freezer_running = 0;
            pthread_mutex_unlock(&g_mu);
            g_state = ST_IDLE;
            job_free(j);
        }
    }
    if (rc < 0) {
        g_quiesce = NULL;
        op_error(q, CODE(RESOURCE_EXHAUSTED), -rc, "quiesce: cannot start the freeze: %s",
                  strerror(-rc));
        settle();
    }
}

static void on_pre_hooks(hooks_run_t *run, void *arg)
{
    op_t *q = g_quiesce;
    const char *const *fails;
    unsigned nf = hooks_failures(run, &fails);

    g_hooks = NULL;
    if (q)
        q->hooks_ns = hooks_nanos(run);
    if (nf) {
        g_state = ST_IDLE;
        g_quiesce = NULL;
        if (q)
            op_error(q, CODE(FAILED_PRECONDITION), 0,
                      "quiesce: pre-checkpoint hook %s; nothing was frozen", fails[0]);
        hooks_free(run);
        settle();
        return;
    }
    hooks_free(run);
    if (!q || q->gone) {
        /* Nobody waits for this freeze: do not start it. */
        log_info("quiesce: the client went away before the freeze; not freezing");
        g_state = ST_IDLE;
        g_quiesce = NULL;
        if (q)
            op_drop(q);
        settle();
        return;
    }
    freeze_begin(q);
}

static char *hook_dir(const char *sub)
{
    static char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/%s", g_config.hooks_dir, sub);
    return buf;
}

void lc_handle_quiesce(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Quiesce *m = req->quiesce;
    plan_t plan;
    uint32_t thaw_after = m->thaw_after_ms ? m->thaw_after_ms : g_config.thaw_after_ms;

    if (!g_loop) {
        conn_send_error(c, req->id, CODE(UNAVAILABLE), 0, "quiesce: lifecycle not initialised");
        return;
    }
    if (m->thaw_after_ms > CONFIG_MAX_THAW_AFTER_MS) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "quiesce: thaw_after_ms %u is more than %u (10 minutes)",
                        m->thaw_after_ms, CONFIG_MAX_THAW_AFTER_MS);
        return;
    }
    if (!m->dry_run) {
        if (g_state == ST_FROZEN) {
            char list[1024] = "";
            for (int i = 0; i < g_block.n; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         i ? ", " : "", g_block.m[i].path);
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                            "quiesce: already frozen (%s); Thaw first", list);
            return;
        }
        if (g_state != ST_IDLE) {
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                            "quiesce: another quiesce is in progress");
            return;
        }
        if (g_thawing || g_restore || g_hooks) {
            conn_send_error(c, req->id, CODE(UNAVAILABLE), 0,
                            "quiesce: %s; retry",
                            g_thawing ? "a thaw is in progress" : "a restore is being handled");
            return;
        }
    }
    if (plan_make(c, req->id, m->mounts, m->n_mounts, &plan) < 0)
        return;
    if (m->dry_run) {
        Response r = RESPONSE_INIT;
        QuiesceResult qr = SANDBOX__AGENT__V1__QUIESCE_RESULT__INIT;
        char *paths[LC_MAX_MOUNTS];
        for (int i = 0; i < plan.n; i++)
            paths[i] = plan.m[i].path;
        qr.n_frozen = (size_t)plan.n;
        qr.frozen = paths;
        qr.thaw_after_ms = thaw_after;
        r.result_case = RES(QUIESCED);
        r.quiesced = &qr;
        conn_send(c, req->id, 1, &r);
        plan_free(&plan);
        return;
    }
    op_t *q = op_new(c, req, OPK_QUIESCE);
    if (!q) {
        plan_free(&plan);
        return;
    }
    q->plan = plan;
    q->thaw_after_ms = thaw_after;
    g_quiesce = q;
    g_state = ST_HOOKS;
    g_hooks = hooks_start(g_loop, hook_dir("pre-checkpoint.d"), "pre-checkpoint", 1,
                          g_config.hook_timeout_ms, g_generation, on_pre_hooks, NULL);
    if (!g_hooks) {
        g_state = ST_IDLE;
        g_quiesce = NULL;
        op_error(q, CODE(RESOURCE_EXHAUSTED), ENOMEM, "quiesce: out of memory");
    }
}

/* ------------------------------------------------------------ restore */

/* Mix bytes into the kernel's pool (credited), and make the generator
 * reseed from the pool now rather than at its next interval. */
static int kernel_reseed(const void *entropy, size_t len)
{
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC), rc = 0;
    if (fd < 0)
        return -errno;
    if (len) {
        struct rand_pool_info *ri = malloc(sizeof *ri + len);
        if (!ri) {
            close(fd);
            return -ENOMEM;
        }
        ri->entropy_count = (int)(len * 8);
        ri->buf_size = (int)len;
        memcpy(ri->buf, entropy, len);
        if (ioctl(fd, RNDADDENTROPY, ri) < 0)
            rc = -errno;
        explicit_bzero(ri->buf, len);
        free(ri);
    }
    if (rc == 0 && ioctl(fd, RNDRESEEDCRNG) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Count a restore once, however many signs of it come. auto_detected:
 * the uevent or the clock; returns 0 when it is one already counted. */
static int count_restore(int auto_detected, uint64_t generation)
{
    uint64_t mono = util_now_mono_nano();
    if (auto_detected) {
        if (g_last_restore_mono && mono - g_last_restore_mono < LC_COALESCE_NS)
            return 0;
        g_restores++;
        g_unclaimed_mono = mono;
    } else if (g_unclaimed_mono && mono - g_unclaimed_mono < LC_CLAIM_NS) {
        g_unclaimed_mono = 0; /* the control plane speaks of the one noticed */
    } else if (!(generation && generation == g_generation && g_restores)) {
        g_restores++;
    }
    g_last_restore_mono = mono;
    g_last_restore_unix = util_now_unix_nano();
    return 1;
}

static void restore_finish(hooks_run_t *run, void *arg)
{
    restore_t *rs = g_restore;
    const char *const *fails = NULL;
    unsigned nf = run ? hooks_failures(run, &fails) : 0;

    g_hooks = NULL;
    g_restore = NULL;
    emit(LK(RESTORED), rs->source, rs->step, NULL, 0);
    log_info("restore (%s): generation %llu, %llu restores noticed, %u post-restore hooks "
             "failed",
             rs->source, (unsigned long long)g_generation, (unsigned long long)g_restores, nf);
    while (rs->waiters) {
        op_t *o = rs->waiters;
        Response r = RESPONSE_INIT;
        RestoredResult rr = SANDBOX__AGENT__V1__RESTORED_RESULT__INIT;
        rs->waiters = o->next;
        rr.clock_step_nano = o->step;
        rr.previous_generation = o->prev_generation;
        rr.n_thawed = (size_t)rs->n_thawed;
        rr.thawed = rs->thawed;
        rr.n_hook_failures = nf;
        rr.hook_failures = (char **)fails;
        r.result_case = RES(RESTORE_DONE);
        r.restore_done = &rr;
        op_reply(o, &r);
    }
    for (int i = 0; i < rs->n_thawed; i++)
        free(rs->thawed[i]);
    free(rs->thawed);
    free(rs);
    hooks_free(run);
}

static void restore_after_thaw(void)
{
    unsigned closed = conn_close_broken();
    if (closed)
        log_info("restore: closed %u connections whose peer is gone", closed);
    g_hooks = hooks_start(g_loop, hook_dir("post-restore.d"), "post-restore", 0,
                          g_config.hook_timeout_ms, g_generation, restore_finish, NULL);
    if (!g_hooks) {
        log_error("restore: cannot run the post-restore hooks: out of memory");
        restore_finish(NULL, NULL);
    }
}

/* Handle a restore: thaw, then close what is dead, then the hooks. op (a
 * Restored) waits for the end; a restore already being handled takes it
 * as one more waiter. */
static void restore_begin(const char *source, op_t *op, int64_t step)
{
    if (g_restore) {
        if (op) {
            op->next = g_restore->waiters;
            g_restore->waiters = op;
        }
        return;
    }
    if (!(g_restore = calloc(1, sizeof *g_restore))) {
        log_error("restore: out of memory");
        thaw_start("restore");
        if (op)
            op_error(op, CODE(RESOURCE_EXHAUSTED), ENOMEM, "restored: out of memory");
        return;
    }
    g_restore->source = source;
    g_restore->waiters = op;
    g_restore->step = step;
    if (thaw_start("restore")) {
        g_restore->waiting_thaw = 1;
        return;
    }
    restore_after_thaw();
}

/* The uevent or the clock say the VM was restored. */
static void restore_noticed(const char *source)
{
    int rc;
    if (g_restore || !count_restore(1, 0)) {
        log_info("restore (%s): already being handled or handled just now", source);
        return;
    }
    if ((rc = kernel_reseed(NULL, 0)) < 0)
        log_warn("restore (%s): reseeding the kernel's random number generator: %s", source,
                 strerror(-rc));
    log_info("restore noticed (%s): thawing, reseeding, running the post-restore hooks",
             source);
    restore_begin(source, NULL, 0);
}

/* ------------------------------------------------------------ the clocks */

static int read_clocks(int64_t *rt, int64_t *mono, int64_t *boot)
{
    struct timespec a, b, c;
    if (g_config.clock_test_file) {
        char buf[128];
        long long x, y, z;
        int fd = open(g_config.clock_test_file, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0)
            close(fd);
        if (n <= 0)
            return -1;
        buf[n] = 0;
        if (sscanf(buf, "%lld %lld %lld", &x, &y, &z) != 3)
            return -1;
        *rt = x;
        *mono = y;
        *boot = z;
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_BOOTTIME, &c);
    *rt = (int64_t)a.tv_sec * 1000000000 + a.tv_nsec;
    *mono = (int64_t)b.tv_sec * 1000000000 + b.tv_nsec;
    *boot = (int64_t)c.tv_sec * 1000000000 + c.tv_nsec;
    return 0;
}

/* Take the clocks' offsets as they are now: after the agent's own step. */
static void clock_rebase(void)
{
    int64_t rt, mono, boot;
    if (read_clocks(&rt, &mono, &boot) < 0) {
        g_clock_base = 0;
        return;
    }
    g_off_rt = rt - mono;
    g_off_bt = boot - mono;
    g_clock_base = 1;
}

/* The wall clock and the monotonic clock advance together while the VM
 * runs; the offset between them moves only when the wall clock is stepped
 * (a hypervisor or NTP correcting it after a restore). BOOTTIME moves
 * ahead of MONOTONIC only across a suspend of the guest. */
static void on_clock(struct ev_loop *loop, ev_timer *w, int revents)
{
    int64_t rt, mono, boot, thr = (int64_t)g_config.clock_jump_ms * 1000000;
    if (read_clocks(&rt, &mono, &boot) < 0)
        return;
    int64_t off_rt = rt - mono, off_bt = boot - mono;
    if (!g_clock_base) {
        g_off_rt = off_rt;
        g_off_bt = off_bt;
        g_clock_base = 1;
        return;
    }
    int64_t d_rt = off_rt - g_off_rt, d_bt = off_bt - g_off_bt;
    g_off_rt = off_rt;
    g_off_bt = off_bt;
    if (d_rt > thr || d_rt < -thr || d_bt > thr) {
        log_info("clock: the wall clock moved %+.3f s against the monotonic clock (boot time "
                 "%+.3f s): taking it as a restore",
                 (double)d_rt / 1e9, (double)d_bt / 1e9);
        emit(LK(CLOCK_STEPPED), "clock", d_rt, NULL, 0);
        restore_noticed("clock");
    }
}

/* ------------------------------------------------------------ the uevent */

/* Kernel uevents: "ACTION@DEVPATH\0KEY=VALUE\0...". Only senders with uid 0
 * are believed (the kernel, or root, who could restore the VM anyway):
 * anyone in the network namespace can send to the agent's port. */
static void on_uevent(struct ev_loop *loop, ev_io *w, int revents)
{
    char buf[8192];
    char cbuf[CMSG_SPACE(sizeof(struct ucred))];
    int found = 0;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_nl sa;
        struct iovec iov = {buf, sizeof buf - 1};
        struct msghdr mh = {.msg_name = &sa, .msg_namelen = sizeof sa, .msg_iov = &iov,
                            .msg_iovlen = 1, .msg_control = cbuf,
                            .msg_controllen = sizeof cbuf};
        ssize_t n = recvmsg(w->fd, &mh, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ENOBUFS) {
                log_warn("uevent: the kernel dropped events (receive buffer full)");
                continue;
            }
            break;
        }
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        struct ucred cr;
        if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_CREDENTIALS)
            continue;
        memcpy(&cr, CMSG_DATA(cm), sizeof cr);
        if (cr.uid != 0)
            continue;
        buf[n] = 0;
        for (char *p = buf; p < buf + n; p += strlen(p) + 1)
            if (!strcmp(p, "NEW_VMGENID=1"))
                found = 1;
    }
    if (found) {
        log_info("uevent: the VM generation ID changed");
        restore_noticed("vmgenid");
    }
}

static void uevent_open(void)
{
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
    int on = 1;
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    NETLINK_KOBJECT_UEVENT);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0) {
        log_warn("uevent: %s; a restore is noticed only by Restored or the clock",
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    g_nl_fd = fd;
    ev_io_init(&g_nl_io, on_uevent, fd, EV_READ);
    ev_io_start(g_loop, &g_nl_io);
    ev_unref(g_loop); /* does not keep the loop alive by itself */
}

/* ------------------------------------------------------------ Restored */

void lc_handle_restored(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Restored *m = req->restored;
    int64_t step = 0;
    int rc;

    if (!g_loop) {
        conn_send_error(c, req->id, CODE(UNAVAILABLE), 0, "restored: lifecycle not initialised");
        return;
    }
    if (m->entropy.len && (m->entropy.len < 32 || m->entropy.len > LC_ENTROPY_MAX)) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "restored: entropy of %zu bytes: give 32 to %d bytes, or none",
                        m->entropy.len, LC_ENTROPY_MAX);
        return;
    }
    if (m->unix_time_nano && m->unix_time_nano < LC_MIN_UNIX_NANO) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "restored: unix_time_nano %llu is before the year 2000",
                        (unsigned long long)m->unix_time_nano);
        return;
    }
    for (size_t i = 0; i < m->n_env; i++) {
        const char *k = m->env[i]->key;
        if (!k || !k[0] || strchr(k, '=')) {
            conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                            "restored: env name '%s': must be non-empty without '='",
                            k ? k : "");
            return;
        }
    }
    op_t *o = op_new(c, req, OPK_RESTORED);
    if (!o)
        return;
    if (m->unix_time_nano) {
        struct timespec now, to;
        to.tv_sec = (time_t)(m->unix_time_nano / 1000000000ull);
        to.tv_nsec = (long)(m->unix_time_nano % 1000000000ull);
        clock_gettime(CLOCK_REALTIME, &now);
        if (clock_settime(CLOCK_REALTIME, &to) < 0) {
            rc = -errno;
            op_error(o, errcode_from_errno(rc), -rc,
                      "restored: setting the clock: %s; nothing was changed", strerror(-rc));
            return;
        }
        step = ((int64_t)to.tv_sec - (int64_t)now.tv_sec) * 1000000000 +
               (to.tv_nsec - now.tv_nsec);
        clock_rebase();
        log_info("restored: wall clock stepped by %+.6f s", (double)step / 1e9);
        emit(LK(CLOCK_STEPPED), "request", step, NULL, 0);
    }
    if ((rc = kernel_reseed(m->entropy.data, m->entropy.len)) < 0) {
        if (m->entropy.len) {
            op_error(o, errcode_from_errno(rc), -rc,
                      "restored: adding entropy: %s%s", strerror(-rc),
                      m->unix_time_nano ? " (the clock was stepped)" : "");
            return;
        }
        log_warn("restored: reseeding the kernel's random number generator: %s",
                 strerror(-rc));
    }
    o->step = step;
    o->prev_generation = g_generation;
    count_restore(0, m->generation);
    if (m->generation)
        g_generation = m->generation;
    for (size_t i = 0; i < m->n_env; i++)
        /* The agent's own environment is what every later process starts
         * from (proc.c copies it, unless clear_env), hooks too. */
        if (setenv(m->env[i]->key, m->env[i]->value ? m->env[i]->value : "", 1) < 0)
            log_warn("restored: env '%s': %s", m->env[i]->key, strerror(errno));
    restore_begin("request", o, step);
}

/* ------------------------------------------------------------ watch */

void lc_handle_watch(conn_t *c, const Request *req)
{
    sub_t *s = calloc(1, sizeof *s);
    int rc;
    if (!s) {
        conn_send_errno(c, req->id, -ENOMEM, "watch_lifecycle: out of memory");
        return;
    }
    s->base.ops = &sub_ops;
    s->next = g_subs;
    if (g_subs)
        g_subs->prev = s;
    g_subs = s;
    if ((rc = conn_stream_add(c, &s->base, req->id)) < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc, "watch_lifecycle: %s",
                        rc == -EMFILE ? "too many requests in flight" : strerror(-rc));
        sub_destroy(&s->base);
    }
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

void lc_fill_info(Info *in)
{
    static char *frozen[LC_MAX_MOUNTS];
    in->generation = g_generation;
    in->restores = g_restores;
    in->last_restore_unix_nano = g_last_restore_unix;
    if (g_state == ST_FROZEN) {
        for (int i = 0; i < g_block.n; i++)
            frozen[i] = g_block.m[i].path;
        in->n_frozen = (size_t)g_block.n;
        in->frozen = frozen;
    }
}

/* ------------------------------------------------------------ lifetime */

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    int synced;
    pthread_mutex_lock(&g_mu);
    synced = g_synced;
    g_synced = 0;
    pthread_mutex_unlock(&g_mu);
    /* The timer set by freeze_begin() runs from the end of the sync. */
    if (synced && g_state == ST_FREEZING && !ev_is_active(&g_thaw_timer))
        ev_timer_start(g_loop, &g_thaw_timer);
    for (;;) {
        pthread_mutex_lock(&g_mu);
        job_t *j = g_done_head;
        if (j) {
            g_done_head = j->next;
            if (!g_done_head)
                g_done_tail = NULL;
        }
        pthread_mutex_unlock(&g_mu);
        if (!j)
            return;
        if (j->kind == JOB_FREEZE)
            freeze_done(j);
        else
            thaw_done(j);
    }
}

int lc_init(struct ev_loop *loop)
{
    g_loop = loop;
    ev_async_init(&g_async, on_async);
    ev_async_start(loop, &g_async);
    ev_unref(loop);
    ev_init(&g_thaw_timer, on_thaw_timer);
    uevent_open();
    if (g_config.clock_jump_ms) {
        ev_timer_init(&g_clock_timer, on_clock, g_config.clock_check_ms / 1000.0,
                      g_config.clock_check_ms / 1000.0);
        ev_timer_start(loop, &g_clock_timer);
        ev_unref(loop);
        clock_rebase();
    }
    return 0;
}

void lc_shutdown(void)
{
    char *names[LC_MAX_MOUNTS];
    int n = 0;
    char *errors = NULL;
    struct timespec until;

    if (!g_loop)
        return;
    if (g_hooks) {
        hooks_cancel(g_hooks);
        g_hooks = NULL;
    }
    /* Thaw here and now: the process is about to exit, and a freeze must
     * not outlive it. A freezer in flight sees g_cancel and undoes its own
     * freeze when its FIFREEZE returns; wait a little for that. */
    thaw_list(names, &n, &errors);
    pthread_mutex_lock(&g_mu);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += LC_SHUTDOWN_WAIT_S;
    while (g_freezer_running)
        if (pthread_cond_timedwait(&g_cv, &g_mu, &until) == ETIMEDOUT)
            break;
    int stuck = g_freezer_running;
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < n; i++) {
        log_info("shutdown: thawed %s", names[i]);
        free(names[i]);
    }
    if (errors)
        log_error("shutdown: thaw: %s", errors);
    if (stuck)
        log_error("shutdown: a freeze is still in progress after %d s", LC_SHUTDOWN_WAIT_S);
    free(errors);
    log_hold(0);
    ev_timer_stop(g_loop, &g_thaw_timer);
    if (g_config.clock_jump_ms) {
        ev_ref(g_loop);
        ev_timer_stop(g_loop, &g_clock_timer);
    }
    if (g_nl_fd >= 0) {
        ev_ref(g_loop);
        ev_io_stop(g_loop, &g_nl_io);
        close(g_nl_fd);
        g_nl_fd = -1;
    }
    g_state = ST_IDLE;
    plan_free(&g_block);
}
