/* lifecycle.c - see lifecycle.h; the modules it is split into are named in
 * lc_internal.h. This one holds the freeze's state machine, the ops that
 * wait for an answer, Quiesce and Thaw, Info, and the lifetime.
 *
 * States of the freeze (loop thread only):
 *   IDLE --Quiesce--> HOOKS (pre-checkpoint hooks) --ok--> FREEZING (a
 *   thread: sync(), then FIFREEZE mount by mount) --ok--> FROZEN
 *   HOOKS, FREEZING, FROZEN --Thaw, thaw_after timer, restore, shutdown-->
 *   a thaw thread (FITHAW) --> IDLE
 * sync(), FIFREEZE and FITHAW can each take as long as the disks want, so
 * none runs on the loop (lc_freeze.c).
 *
 * While anything is frozen or being frozen, writes to those file systems
 * that come as requests are refused at once (lc_refuse_frozen_write), and
 * the agent's log is held in memory (log_hold): it may be a file there, or
 * a journal daemon that writes there and stops reading its socket.
 */
#include "lc_internal.h"

#include "config.h"
#include "conn.h"
#include "errcode.h"
#include "hooks.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LC_SHUTDOWN_WAIT_S 5

typedef Sandbox__Agent__V1__QuiesceResult QuiesceResult;
typedef Sandbox__Agent__V1__ThawResult ThawResult;

enum lc_state { ST_IDLE, ST_HOOKS, ST_FREEZING, ST_FROZEN };

struct ev_loop *lc_loop;
static ev_async g_async;
static enum lc_state g_state;
static int g_thawing;            /* a thaw thread runs */
static const char *g_thaw_source;
static ev_timer g_thaw_timer;
static hooks_run_t *g_hooks;     /* pre-checkpoint hooks running */
static lc_op_t *g_quiesce;       /* the Quiesce in flight */
static lc_op_t *g_thaw_waiters;

static void settle(void);


static stream_status_t op_next(stream_t *s)
{
    return STREAM_WAIT;
}

static void op_release(lc_op_t *o)
{
    if (o->owned_by_conn || o->owned_by_lc)
        return;
    lc_plan_free(&o->plan);
    free(o);
}

static void op_destroy(stream_t *s)
{
    lc_op_t *o = (lc_op_t *)s;
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
lc_op_t *lc_op_new(conn_t *c, const Request *req, enum lc_op_kind kind)
{
    lc_op_t *o = calloc(1, sizeof *o);
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
void lc_op_drop(lc_op_t *o)
{
    if (!o->gone)
        conn_stream_end(o->base.conn, &o->base);
    o->owned_by_lc = 0;
    op_release(o);
}

/* Send r as the op's last answer, then drop it. */
void lc_op_reply(lc_op_t *o, Response *r)
{
    if (!o->gone)
        conn_send(o->base.conn, o->base.id, 1, r);
    lc_op_drop(o);
}

void lc_op_error(lc_op_t *o, int code, int os_errno, const char *fmt, ...)
{
    if (!o->gone) {
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        conn_send_error(o->base.conn, o->base.id, code, os_errno, "%s", msg);
    }
    lc_op_drop(o);
}

/* ------------------------------------------------------------ thaw */

static void on_async(struct ev_loop *loop, ev_async *w, int revents);

/* Everything is over (no freezer, no thawer, nothing frozen): let writes
 * and the log go again. */
static void settle(void)
{
    if (lc_freezer_running() || g_thawing || g_state == ST_FROZEN || g_state == ST_HOOKS)
        return;
    g_state = ST_IDLE;
    lc_block_clear();
    ev_timer_stop(lc_loop, &g_thaw_timer);
    log_hold(0);
}

static void quiesce_fail_cancelled(const char *source)
{
    lc_op_t *q = g_quiesce;
    g_quiesce = NULL;
    if (q)
        lc_op_error(q, CODE(CANCELLED), 0,
                  "quiesce: cancelled: a thaw (%s) came before the freeze completed", source);
}

int lc_thaw_start(const char *source)
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
    lc_job_t *j = calloc(1, sizeof *j);
    g_thaw_source = source;
    if (j) {
        j->kind = LC_JOB_THAW;
        j->source = source;
    }
    if (!j || lc_job_start(j) < 0) {
        /* No thread: thawing cannot wait for one. FITHAW does not wait
         * for the disk; do it here. */
        log_warn("thaw: no thread for it; thawing on the loop");
        if (!j) {
            lc_thaw_now(NULL, NULL, NULL);
            g_state = g_state == ST_FROZEN ? ST_IDLE : g_state;
            settle();
            return 0;
        }
        lc_job_run_thaw(j);
    }
    g_thawing = 1;
    return 1;
}

static void thaw_done(lc_job_t *j)
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
        lc_emit(LK(THAWED), j->source, 0, j->done, j->n_done);
    }
    settle();
    tr.n_thawed = (size_t)j->n_done;
    tr.thawed = j->done;
    r.result_case = RES(THAWED);
    r.thawed = &tr;
    while (g_thaw_waiters) {
        lc_op_t *o = g_thaw_waiters;
        g_thaw_waiters = o->next;
        lc_op_reply(o, &r);
    }
    lc_restore_thawed(j->done, j->n_done);
    lc_job_free(j);
}

static void on_thaw_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    log_warn("quiesce: no Thaw or restore within thaw_after; thawing by itself");
    lc_thaw_start("timer");
}

void lc_handle_thaw(conn_t *c, const Request *req)
{
    if (!lc_loop) {
        conn_send_error(c, req->id, CODE(UNAVAILABLE), 0, "thaw: lifecycle not initialised");
        return;
    }
    lc_op_t *o = lc_op_new(c, req, LC_OPK_THAW);
    if (!o)
        return;
    if (lc_thaw_start("request")) {
        o->next = g_thaw_waiters;
        g_thaw_waiters = o;
        return;
    }
    Response r = RESPONSE_INIT;
    ThawResult tr = SANDBOX__AGENT__V1__THAW_RESULT__INIT;
    r.result_case = RES(THAWED);
    r.thawed = &tr;
    lc_op_reply(o, &r);
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

static void freeze_done(lc_job_t *j)
{
    lc_op_t *q = g_quiesce;
    g_quiesce = NULL;

    if (j->n_undone) {
        lc_emit(LK(THAWED), "failure", 0, j->undone, j->n_undone);
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
            lc_op_error(q, freeze_errno_code(j->err), -j->err,
                      "quiesce: freezing '%s': %s%s; nothing is left frozen",
                      j->err_path ? j->err_path : "?", strerror(-j->err), why);
        settle();
        lc_job_free(j);
        return;
    }
    /* A thaw taken after the freezer's last look still cancels it. */
    if (lc_freeze_cancelled())
        j->cancelled = 1;
    if (j->cancelled || g_thawing || g_state != ST_FREEZING) {
        if (g_state == ST_FREEZING)
            g_state = ST_IDLE;
        if (q)
            lc_op_error(q, CODE(CANCELLED), 0,
                      "quiesce: cancelled: a thaw (%s) came before the freeze completed",
                      g_thaw_source ? g_thaw_source : "?");
        settle();
        lc_job_free(j);
        return;
    }
    g_state = j->n_done ? ST_FROZEN : ST_IDLE;
    /* Writes are refused on what is frozen now. */
    lc_block_frozen(&j->plan, j->done, j->n_done);
    log_info("quiesce: %d mounts frozen (sync %.1f ms, freeze %.1f ms); thaw by itself in "
             "%u ms",
             j->n_done, (double)j->sync_ns / 1e6, (double)j->freeze_ns / 1e6,
             q ? q->thaw_after_ms : 0);
    if (j->n_done)
        lc_emit(LK(QUIESCED), "request", 0, j->done, j->n_done);
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
        lc_op_reply(q, &r);
    }
    settle();
    lc_job_free(j);
}

static void freeze_begin(lc_op_t *q)
{
    lc_job_t *j = calloc(1, sizeof *j);
    int rc = j ? 0 : -ENOMEM;

    if (j) {
        j->kind = LC_JOB_FREEZE;
        j->plan = q->plan; /* the job takes the paths */
        q->plan.n = 0;
        lc_freezer_arm();
        /* From here the writes that come as requests are refused, and the
         * log waits in memory, until the thaw. */
        lc_block_set(&j->plan);
        log_hold(1);
        g_state = ST_FREEZING;
        ev_timer_set(&g_thaw_timer, q->thaw_after_ms / 1000.0, 0);
        rc = lc_job_start(j);
        if (rc < 0) {
            lc_freezer_disarm();
            g_state = ST_IDLE;
            lc_job_free(j);
        }
    }
    if (rc < 0) {
        g_quiesce = NULL;
        lc_op_error(q, CODE(RESOURCE_EXHAUSTED), -rc, "quiesce: cannot start the freeze: %s",
                  strerror(-rc));
        settle();
    }
}

static void on_pre_hooks(hooks_run_t *run, void *arg)
{
    lc_op_t *q = g_quiesce;
    const char *const *fails;
    unsigned nf = hooks_failures(run, &fails);

    g_hooks = NULL;
    if (q)
        q->hooks_ns = hooks_nanos(run);
    if (nf) {
        g_state = ST_IDLE;
        g_quiesce = NULL;
        if (q)
            lc_op_error(q, CODE(FAILED_PRECONDITION), 0,
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
            lc_op_drop(q);
        settle();
        return;
    }
    freeze_begin(q);
}

const char *lc_hook_dir(const char *sub)
{
    static char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/%s", g_config.hooks_dir, sub);
    return buf;
}

void lc_handle_quiesce(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Quiesce *m = req->quiesce;
    lc_plan_t plan;
    uint32_t thaw_after = m->thaw_after_ms ? m->thaw_after_ms : g_config.thaw_after_ms;

    if (!lc_loop) {
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
            for (int i = 0; i < lc_block_count(); i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         i ? ", " : "", lc_block_path(i));
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                            "quiesce: already frozen (%s); Thaw first", list);
            return;
        }
        if (g_state != ST_IDLE) {
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                            "quiesce: another quiesce is in progress");
            return;
        }
        if (g_thawing || lc_restore_busy() || g_hooks) {
            conn_send_error(c, req->id, CODE(UNAVAILABLE), 0,
                            "quiesce: %s; retry",
                            g_thawing ? "a thaw is in progress" : "a restore is being handled");
            return;
        }
    }
    if (lc_plan_make(c, req->id, m->mounts, m->n_mounts, &plan) < 0)
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
        lc_plan_free(&plan);
        return;
    }
    lc_op_t *q = lc_op_new(c, req, LC_OPK_QUIESCE);
    if (!q) {
        lc_plan_free(&plan);
        return;
    }
    q->plan = plan;
    q->thaw_after_ms = thaw_after;
    g_quiesce = q;
    g_state = ST_HOOKS;
    g_hooks = hooks_start(lc_loop, lc_hook_dir("pre-checkpoint.d"), "pre-checkpoint", 1,
                          g_config.hook_timeout_ms, lc_generation, on_pre_hooks, NULL);
    if (!g_hooks) {
        g_state = ST_IDLE;
        g_quiesce = NULL;
        lc_op_error(q, CODE(RESOURCE_EXHAUSTED), ENOMEM, "quiesce: out of memory");
    }
}

/* ------------------------------------------------------------ restore */

void lc_fill_info(Info *in)
{
    static char *frozen[LC_MAX_MOUNTS];
    in->generation = lc_generation;
    in->restores = lc_restores;
    in->last_restore_unix_nano = lc_last_restore_unix;
    if (g_state == ST_FROZEN) {
        for (int i = 0; i < lc_block_count(); i++)
            frozen[i] = (char *)lc_block_path(i);
        in->n_frozen = (size_t)lc_block_count();
        in->frozen = frozen;
    }
}

/* ------------------------------------------------------------ lifetime */

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    int synced = lc_take_synced();
    /* The timer set by freeze_begin() runs from the end of the sync. */
    if (synced && g_state == ST_FREEZING && !ev_is_active(&g_thaw_timer))
        ev_timer_start(lc_loop, &g_thaw_timer);
    for (;;) {
        lc_job_t *j = lc_job_pop();
        if (!j)
            return;
        if (j->kind == LC_JOB_FREEZE)
            freeze_done(j);
        else
            thaw_done(j);
    }
}

void lc_wake(void)
{
    if (lc_loop)
        ev_async_send(lc_loop, &g_async);
}

int lc_init(struct ev_loop *loop)
{
    lc_loop = loop;
    ev_async_init(&g_async, on_async);
    ev_async_start(loop, &g_async);
    ev_unref(loop);
    ev_init(&g_thaw_timer, on_thaw_timer);
    lc_detect_start(loop);
    return 0;
}

void lc_shutdown(void)
{
    char *names[LC_MAX_MOUNTS];
    int n = 0;
    char *errors = NULL;

    if (!lc_loop)
        return;
    if (g_hooks) {
        hooks_cancel(g_hooks);
        g_hooks = NULL;
    }
    lc_restore_shutdown();
    /* Thaw here and now: the process is about to exit, and a freeze must
     * not outlive it. A freezer in flight sees the thaw and undoes its own
     * freeze when its FIFREEZE returns; wait a little for that. */
    lc_thaw_now(names, &n, &errors);
    int stuck = lc_freezer_wait(LC_SHUTDOWN_WAIT_S);
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
    ev_timer_stop(lc_loop, &g_thaw_timer);
    lc_detect_stop();
    g_state = ST_IDLE;
    lc_block_clear();
}
