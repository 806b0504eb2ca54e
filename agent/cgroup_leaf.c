/* cgroup_leaf.c - a cgroup per started process: limits checked and
 * applied, the leaf made, killed and signalled as a whole, its figures, and
 * its removal once its owner released it and it is empty (when the loop is
 * next idle, or from the pending list, tried again after reaps and on a
 * timer); a few empty leaves made ahead of time. Part of the
 * cgroup module (cgroup_internal.h).
 * Errors: functions return 0 or a negative errno; with an err buffer, it
 * says why. */
#include "cgroup_internal.h"

#include "config.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cg_leaf {
    unsigned refs;
    int fd;          /* the directory; -1 once removed */
    int released, removed, pending;
    int killed;      /* cgroup.kill was written: no clone3 into it any more */
    /* Released and then seen unpopulated: nothing starts in it any more and
     * no member is left to fork, so it stays empty (short of a privileged
     * process moving one in) and its figures, once read, are final. Saves
     * the exit's cgroup.procs count and a second cpu.stat at removal. */
    int empty, final;
    char *path;      /* absolute, in the agent's mount namespace */
    char *rel;       /* as /proc/PID/cgroup shows it */
    cg_stats_t last; /* read just before it was removed */
    cg_leaf_t *pnext, *pprev;
    cg_leaf_t *dnext; /* released, removed when the loop is idle (g_doomed) */
};

static struct ev_loop *g_loop;
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
/* Leaves made ahead of time, and released leaves removed later. A cgroup's
 * mkdir (kernfs makes its files) took 30-120 us here and its rmdir 10-20
 * us, on the path of every start and every exit. A start with the default
 * name and limits takes a leaf made while the loop had nothing else to do,
 * and a released leaf is removed then too (after its ProcessExit went out),
 * or at once when DOOMED_MAX already wait: under a steady stream of starts
 * the loop is never idle, and then this costs what it did before. A leaf
 * in the pool holds no descriptor (the agent's count stays what it was):
 * its directory is opened when a start takes it. */
#define POOL_SIZE 2
#define DOOMED_MAX 8
static cg_leaf_t *g_pool[POOL_SIZE];
static int g_pool_n;
static cg_leaf_t *g_doomed;
static unsigned g_n_doomed;
static ev_idle g_idle;

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
        if (!need[i].set || (cg_avail && (cg_ctrl & need[i].ctrl)))
            continue;
        if (!cg_avail)
            snprintf(err, errlen, "limits.%s needs the cgroup v2 %s controller, and this agent "
                     "has no cgroups (%s)", need[i].field, need[i].name, cg_reason);
        else
            snprintf(err, errlen, "limits.%s needs the cgroup v2 %s controller, which is not "
                     "enabled for %s", need[i].field, need[i].name, cg_work);
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
    if (!cg_avail)
        return;
    if (!lim->pids_max && (cg_ctrl & CG_PIDS))
        lim->pids_max = g_config.default_pids_max;
    if (!lim->memory_max && (cg_ctrl & CG_MEMORY))
        lim->memory_max = g_config.default_memory_max;
    if (!lim->memory_swap_max && (cg_ctrl & CG_MEMORY))
        lim->memory_swap_max = g_config.default_memory_swap_max;
    if (!lim->cpu_max_millicores && (cg_ctrl & CG_CPU))
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
        if ((rc = cg_write_at(fd, file, v)) < 0)         \
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

/* A pooled leaf with no limits to write is left unopened (see g_pool). */
static int no_limits(const cg_limits_t *lim)
{
    return !lim->memory_max && !lim->memory_swap_max && !lim->memory_high && !lim->pids_max &&
           !lim->cpu_max_millicores && !lim->cpu_weight && !lim->io_weight;
}

static int leaf_make(const char *prefix, const cg_limits_t *lim, int pooled, cg_leaf_t **out,
                     char *err, size_t errlen)
{
    char leaf[300];
    cg_leaf_t *l = NULL;
    int rc, made = 0;

    for (int i = 0; i < 64 && !made; i++) {
        snprintf(leaf, sizeof leaf, "%.200s-%llu", prefix, ++g_leaf_seq);
        if (mkdirat(cg_work_fd, leaf, 0755) == 0)
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
    l->fd = -1;
    if ((!pooled || !no_limits(lim)) &&
        (l->fd = openat(cg_work_fd, leaf, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        goto fail_errno;
    if (asprintf(&l->path, "%s/%s", cg_work, leaf) < 0) {
        l->path = NULL;
        goto nomem;
    }
    if (asprintf(&l->rel, "%s/%s", cg_work_rel, leaf) < 0) {
        l->rel = NULL;
        goto nomem;
    }
    if (l->fd >= 0 && (rc = apply_limits(l->fd, lim, err, errlen)) < 0)
        goto fail;
    *out = l;
    return 0;
fail_errno:
    rc = -errno;
    snprintf(err, errlen, "cgroup '%s/%s': %s", cg_work, leaf, strerror(-rc));
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
        unlinkat(cg_work_fd, leaf, AT_REMOVEDIR);
    return rc;
}

/* ------------------------------------------------------------ the pool */

/* The limits every start without limits of its own gets. */
static int default_limits(const cg_limits_t *lim)
{
    cg_limits_t d = {0};
    cg_limits_defaults(&d);
    return lim->memory_max == d.memory_max && lim->memory_swap_max == d.memory_swap_max &&
           lim->memory_high == d.memory_high && lim->pids_max == d.pids_max &&
           lim->cpu_max_millicores == d.cpu_max_millicores && lim->cpu_weight == d.cpu_weight &&
           lim->io_weight == d.io_weight;
}

static void idle_soon(void)
{
    if (cg_avail && !ev_is_active(&g_idle))
        ev_idle_start(g_loop, &g_idle);
}

static int try_remove(cg_leaf_t *l);
static void pending_add(cg_leaf_t *l);

/* Remove the first doomed leaf: gone, or still populated and so pending. */
static void doomed_remove_one(void)
{
    cg_leaf_t *l = g_doomed;
    g_doomed = l->dnext;
    l->dnext = NULL;
    g_n_doomed--;
    if (try_remove(l))
        cg_leaf_unref(l);
    else
        pending_add(l); /* its reference goes with it */
}

/* One thing per call, so a Ping arriving meanwhile waits for one rmdir or
 * one mkdir at most: the doomed leaves first, then the pool. */
static void on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    cg_leaf_t *l;
    char err[256];
    cg_limits_t lim = {0};
    if (g_doomed) {
        doomed_remove_one();
        return;
    }
    cg_limits_defaults(&lim);
    if (g_pool_n < POOL_SIZE && !cg_freeze_requested() && !cg_work_killed &&
        leaf_make("p", &lim, 1, &l, err, sizeof err) == 0) {
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
        g_pool[g_pool_n++] = l;
        if (g_pool_n < POOL_SIZE)
            return;
    }
    ev_idle_stop(loop, w);
}

/* A leaf from the pool, its directory opened; NULL when none is left that
 * can still be opened. */
static cg_leaf_t *pool_take(void)
{
    while (g_pool_n) {
        cg_leaf_t *l = g_pool[--g_pool_n];
        const char *name = strrchr(l->path, '/') + 1;
        if ((l->fd = openat(cg_work_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
            return l;
        cg_leaf_unref(l); /* removed by someone else: make another */
    }
    return NULL;
}

int cg_leaf_new(const char *prefix, const cg_limits_t *lim, cg_leaf_t **out, char *err,
                size_t errlen)
{
    int rc;

    *out = NULL;
    if (!cg_avail) {
        snprintf(err, errlen, "no cgroups: %s", cg_reason);
        return -EOPNOTSUPP;
    }
    if ((rc = cg_limits_check(lim, err, errlen)) < 0)
        return rc;
    if (!prefix || !prefix[0] || strchr(prefix, '/') || prefix[0] == '.')
        prefix = "p";
    idle_soon(); /* make the pool's next leaf when there is time */
    if (!strcmp(prefix, "p") && g_pool_n && default_limits(lim) && (*out = pool_take()))
        return 0;
    return leaf_make(prefix, lim, 0, out, err, errlen);
}

int cg_leaf_fd(const cg_leaf_t *l) { return l ? l->fd : -1; }
const char *cg_leaf_path(const cg_leaf_t *l) { return l ? l->rel : ""; }

int cg_leaf_kill(cg_leaf_t *l)
{
    if (!l || l->fd < 0)
        return -ESRCH;
    l->killed = 1;
    return cg_write_at(l->fd, "cgroup.kill", "1");
}

int cg_leaf_clone_ok(const cg_leaf_t *l) { return l && !l->killed && !cg_work_killed; }

int cg_leaf_signal(cg_leaf_t *l, int sig)
{
    if (!l || l->fd < 0)
        return -ESRCH;
    if (sig == SIGKILL)
        return cg_leaf_kill(l);
    return cg_signal_tree(l->fd, sig);
}

int cg_leaf_populated(cg_leaf_t *l)
{
    int v;
    if (!l || l->fd < 0 || l->empty)
        return 0;
    v = cg_events_key(l->fd, "populated");
    if (v == 0 && l->released)
        l->empty = 1;
    return v;
}

/* The figures of a leaf. Only the files its controllers have are read
 * (each is an open and a read on the path of every start's exit). */
static void read_stats(int fd, cg_stats_t *st, int with_procs)
{
    char buf[1024];
    uint64_t v;
    memset(st, 0, sizeof *st);
    if (cg_read_at(fd, "cpu.stat", buf, sizeof buf) > 0) {
        if (cg_keyed_u64(buf, "user_usec", &v) == 0)
            st->cpu_user_nano = v * 1000;
        if (cg_keyed_u64(buf, "system_usec", &v) == 0)
            st->cpu_system_nano = v * 1000;
    }
    if (cg_ctrl & CG_MEMORY) {
        if (cg_read_at(fd, "memory.current", buf, sizeof buf) > 0)
            st->memory_current = strtoull(buf, NULL, 10);
        if (cg_read_at(fd, "memory.peak", buf, sizeof buf) > 0)
            st->memory_peak = strtoull(buf, NULL, 10);
        if (cg_read_at(fd, "memory.events", buf, sizeof buf) > 0 &&
            cg_keyed_u64(buf, "oom_kill", &v) == 0)
            st->oom_killed = v > 0;
    }
    if (with_procs)
        st->pids_current = cg_count_procs(fd);
}

void cg_leaf_stats(cg_leaf_t *l, cg_stats_t *st)
{
    if (!l) {
        memset(st, 0, sizeof *st);
        return;
    }
    if (l->fd < 0 || l->final) {
        *st = l->last;
        return;
    }
    read_stats(l->fd, st, l->empty ? 0 : 1);
    /* memory.peak and oom_kill only grow; keep what was seen. */
    l->last = *st;
    l->final = l->empty;
}

uint32_t cg_leaf_pids(const cg_leaf_t *l)
{
    return l && l->fd >= 0 && !l->empty ? cg_count_procs(l->fd) : 0;
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
    if (!l->final)
        read_stats(l->fd, &l->last, 0);
    if (unlinkat(cg_work_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
        /* Populated, or empty with sub-cgroups a member made. */
        if (errno != EBUSY || cg_leaf_populated(l) != 0)
            return 0;
        cg_remove_tree_at(cg_work_fd, name, 0);
        if (faccessat(cg_work_fd, name, F_OK, 0) == 0)
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

/* Still populated (a background child): checked again after reaps. The
 * pending list holds a reference until then (the caller's, given). */
static void pending_add(cg_leaf_t *l)
{
    l->pending = 1;
    SA_LIST_PUSH(g_pending, l, pnext, pprev);
    pending_soon();
}

void cg_leaf_release(cg_leaf_t *l)
{
    if (!l || l->released)
        return;
    l->released = 1;
    /* Removed when the loop is idle (see g_pool); the list holds a
     * reference. Too many waiting already: one goes now. */
    l->refs++;
    l->dnext = g_doomed;
    g_doomed = l;
    g_n_doomed++;
    if (g_n_doomed > DOOMED_MAX)
        doomed_remove_one();
    idle_soon();
}

static void retry_pending(void)
{
    if (!cg_avail)
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

/* A reap may have emptied a pending leaf: they are all tried within
 * PENDING_FIRST_S, not here, so a reap (every exec's) costs the same with
 * 1 or 1,000 leaves held by background children, and a burst of reaps is
 * one pass over them. */
void cg_on_reap(void)
{
    if (g_pending)
        pending_soon();
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

void cg_pending_init(struct ev_loop *loop)
{
    g_loop = loop;
    ev_init(&g_pending_t, on_pending_poll);
    ev_idle_init(&g_idle, on_idle);
    idle_soon(); /* the pool's first leaves, once the agent answers */
}

void cg_pending_drop(void)
{
    /* The leaves waiting for an idle loop, and those made ahead of time. */
    ev_idle_stop(g_loop, &g_idle);
    while (g_doomed)
        doomed_remove_one();
    while (g_pool_n) {
        cg_leaf_t *l = g_pool[--g_pool_n];
        unlinkat(cg_work_fd, strrchr(l->path, '/') + 1, AT_REMOVEDIR);
        cg_leaf_unref(l);
    }
    ev_timer_stop(g_loop, &g_pending_t);
    /* Leaves still pending are empty now or hold what shutdown could not
     * kill; the empty ones go with the subtree. */
    while (g_pending) {
        cg_leaf_t *l = g_pending;
        try_remove(l);
        pending_unlink(l);
        cg_leaf_unref(l);
    }
}
