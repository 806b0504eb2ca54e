/* lc_restore.c - handling a restore: Restored from the control plane
 * (steps the wall clock, mixes entropy into the kernel's pool, records the
 * generation, merges env), or one the agent noticed itself (lc_detect.c).
 * Either way it thaws, reseeds the kernel's random number generator,
 * counts the restore once, closes connections whose peer is gone, runs the
 * post-restore hooks and tells WatchLifecycle subscribers. See
 * lc_internal.h. */
#include "lc_internal.h"

#include "config.h"
#include "conn.h"
#include "errcode.h"
#include "hooks.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define LC_ENTROPY_MAX 4096
#define LC_COALESCE_NS (30ull * 1000000000ull)  /* one restore, several signs */
#define LC_CLAIM_NS (60ull * 1000000000ull)     /* a Restored for a noticed one */
#define LC_MIN_UNIX_NANO 946684800000000000ull  /* 2000-01-01 */

typedef Sandbox__Agent__V1__RestoredResult RestoredResult;

/* The restore being handled: its thaw, then its post-restore hooks; the
 * Restored requests that wait for its end. */
typedef struct restore {
    const char *source;
    lc_op_t *waiters;
    int waiting_thaw;
    char **thawed;
    int n_thawed;
    int64_t step;
} restore_t;

uint64_t lc_generation, lc_restores, lc_last_restore_unix;
static uint64_t g_last_restore_mono;
static uint64_t g_unclaimed_mono; /* a noticed restore no Restored has claimed */
static restore_t *g_restore;      /* a restore being handled */
static hooks_run_t *g_hooks;      /* its post-restore hooks */

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
        lc_restores++;
        g_unclaimed_mono = mono;
    } else if (g_unclaimed_mono && mono - g_unclaimed_mono < LC_CLAIM_NS) {
        g_unclaimed_mono = 0; /* the control plane speaks of the one noticed */
    } else if (!(generation && generation == lc_generation && lc_restores)) {
        lc_restores++;
    }
    g_last_restore_mono = mono;
    lc_last_restore_unix = util_now_unix_nano();
    return 1;
}

static void restore_finish(hooks_run_t *run, void *arg)
{
    restore_t *rs = g_restore;
    const char *const *fails = NULL;
    unsigned nf = run ? hooks_failures(run, &fails) : 0;

    g_hooks = NULL;
    g_restore = NULL;
    lc_emit(LK(RESTORED), rs->source, rs->step, NULL, 0);
    log_info("restore (%s): generation %llu, %llu restores noticed, %u post-restore hooks "
             "failed",
             rs->source, (unsigned long long)lc_generation, (unsigned long long)lc_restores, nf);
    while (rs->waiters) {
        lc_op_t *o = rs->waiters;
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
        lc_op_reply(o, &r);
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
    g_hooks = hooks_start(lc_loop, lc_hook_dir("post-restore.d"), "post-restore", 0,
                          g_config.hook_timeout_ms, lc_generation, restore_finish, NULL);
    if (!g_hooks) {
        log_error("restore: cannot run the post-restore hooks: out of memory");
        restore_finish(NULL, NULL);
    }
}

/* Handle a restore: thaw, then close what is dead, then the hooks. op (a
 * Restored) waits for the end; a restore already being handled takes it
 * as one more waiter. */
static void restore_begin(const char *source, lc_op_t *op, int64_t step)
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
        lc_thaw_start("restore");
        if (op)
            lc_op_error(op, CODE(RESOURCE_EXHAUSTED), ENOMEM, "restored: out of memory");
        return;
    }
    g_restore->source = source;
    g_restore->waiters = op;
    g_restore->step = step;
    if (lc_thaw_start("restore")) {
        g_restore->waiting_thaw = 1;
        return;
    }
    restore_after_thaw();
}

/* The uevent or the clock say the VM was restored. */
void lc_restore_noticed(const char *source)
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

/* ------------------------------------------------------------ Restored */

/* Checks Restored's fields; answers and returns -1 when one is wrong. */
static int restored_check(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Restored *m = req->restored;

    if (!lc_loop) {
        conn_send_error(c, req->id, CODE(UNAVAILABLE), 0, "restored: lifecycle not initialised");
        return -1;
    }
    if (m->entropy.len && (m->entropy.len < 32 || m->entropy.len > LC_ENTROPY_MAX)) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "restored: entropy of %zu bytes: give 32 to %d bytes, or none",
                        m->entropy.len, LC_ENTROPY_MAX);
        return -1;
    }
    if (m->unix_time_nano && m->unix_time_nano < LC_MIN_UNIX_NANO) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "restored: unix_time_nano %llu is before the year 2000",
                        (unsigned long long)m->unix_time_nano);
        return -1;
    }
    for (size_t i = 0; i < m->n_env; i++) {
        const char *k = m->env[i]->key;
        if (!k || !k[0] || strchr(k, '=')) {
            conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                            "restored: env name '%s': must be non-empty without '='",
                            k ? k : "");
            return -1;
        }
    }
    return 0;
}

/* Step the wall clock to unix_nano; *step: by how much. 0 or -errno. */
static int clock_step(uint64_t unix_nano, int64_t *step)
{
    struct timespec now, to;
    to.tv_sec = (time_t)(unix_nano / 1000000000ull);
    to.tv_nsec = (long)(unix_nano % 1000000000ull);
    clock_gettime(CLOCK_REALTIME, &now);
    if (clock_settime(CLOCK_REALTIME, &to) < 0)
        return -errno;
    *step = ((int64_t)to.tv_sec - (int64_t)now.tv_sec) * 1000000000 +
            (to.tv_nsec - now.tv_nsec);
    lc_detect_rebase();
    log_info("restored: wall clock stepped by %+.6f s", (double)*step / 1e9);
    lc_emit(LK(CLOCK_STEPPED), "request", *step, NULL, 0);
    return 0;
}

void lc_handle_restored(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Restored *m = req->restored;
    int64_t step = 0;
    int rc;

    if (restored_check(c, req) < 0)
        return;
    lc_op_t *o = lc_op_new(c, req, LC_OPK_RESTORED);
    if (!o)
        return;
    if (m->unix_time_nano && (rc = clock_step(m->unix_time_nano, &step)) < 0) {
        lc_op_error(o, errcode_from_errno(rc), -rc,
                    "restored: setting the clock: %s; nothing was changed", strerror(-rc));
        return;
    }
    if ((rc = kernel_reseed(m->entropy.data, m->entropy.len)) < 0) {
        if (m->entropy.len) {
            lc_op_error(o, errcode_from_errno(rc), -rc,
                      "restored: adding entropy: %s%s", strerror(-rc),
                      m->unix_time_nano ? " (the clock was stepped)" : "");
            return;
        }
        log_warn("restored: reseeding the kernel's random number generator: %s",
                 strerror(-rc));
    }
    o->step = step;
    o->prev_generation = lc_generation;
    count_restore(0, m->generation);
    if (m->generation)
        lc_generation = m->generation;
    for (size_t i = 0; i < m->n_env; i++)
        /* The agent's own environment is what every later process starts
         * from (proc.c copies it, unless clear_env), hooks too. */
        if (setenv(m->env[i]->key, m->env[i]->value ? m->env[i]->value : "", 1) < 0)
            log_warn("restored: env '%s': %s", m->env[i]->key, strerror(errno));
    restore_begin("request", o, step);
}

int lc_restore_busy(void)
{
    return g_restore != NULL;
}

void lc_restore_thawed(char *const *thawed, int n)
{
    if (!g_restore || !g_restore->waiting_thaw)
        return;
    g_restore->waiting_thaw = 0;
    g_restore->thawed = calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; g_restore->thawed && i < n; i++)
        if ((g_restore->thawed[g_restore->n_thawed] = strdup(thawed[i])))
            g_restore->n_thawed++;
    restore_after_thaw();
}

void lc_restore_shutdown(void)
{
    if (g_hooks) {
        hooks_cancel(g_hooks);
        g_hooks = NULL;
    }
}
