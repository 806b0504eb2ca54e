/* freeze.c - see freeze.h.
 *
 * The kernel freezes a cgroup asynchronously: cgroup.freeze = 1 asks, and
 * cgroup.events says "frozen 1" once every member has stopped. A freeze
 * request is a stream that checks every FREEZE_POLL_S until then. A member
 * that cannot stop (in an uninterruptible sleep) holds the answer back for
 * at most FREEZE_WAIT_S: then the workload is thawed again and the request
 * fails, so a half-done freeze is never left behind.
 * Errors: as freeze.h; a freeze that does not complete in time is undone
 * and answered with an Error.
 */
#include "freeze.h"

#include "cgroup.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FREEZE_POLL_S 0.005
#define FREEZE_WAIT_S 10.0

typedef struct fstream {
    stream_t base;
    ev_timer poll;
    double deadline;
    int state; /* 0 waiting, 1 frozen, -1 timed out */
} fstream_t;

static struct ev_loop *g_loop;
static ev_timer g_auto_thaw;
static unsigned g_waiting; /* freeze requests not answered yet */

static void on_auto_thaw(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (cg_freeze_requested()) {
        log_warn("processes thawed: thaw_after_ms passed without ThawProcesses");
        cg_freeze_all(0);
    }
}

void freeze_init(struct ev_loop *loop)
{
    g_loop = loop;
    ev_init(&g_auto_thaw, on_auto_thaw);
}

static void send_ack(conn_t *c, uint64_t id)
{
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;
    r.result_case = RES(ACK);
    r.ack = &ack;
    conn_send(c, id, 1, &r);
}

static stream_status_t fs_next(stream_t *base)
{
    fstream_t *s = (fstream_t *)base;
    if (s->state == 0)
        return STREAM_WAIT;
    if (s->state > 0)
        send_ack(base->conn, base->id);
    else
        conn_send_error(base->conn, base->id, CODE(DEADLINE_EXCEEDED), ETIMEDOUT,
                        "freeze: the processes did not all stop within %.0f s (one in an "
                        "uninterruptible sleep?); thawed again",
                        FREEZE_WAIT_S);
    return STREAM_DONE;
}

static void fs_destroy(stream_t *base)
{
    fstream_t *s = (fstream_t *)base;
    ev_timer_stop(g_loop, &s->poll);
    if (s->state == 0)
        g_waiting--;
    free(s);
}

static const stream_ops_t freeze_ops = {
    .name = "freeze",
    .next = fs_next,
    .destroy = fs_destroy,
};

static void on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    fstream_t *s = w->data;
    if (cg_frozen()) {
        s->state = 1;
    } else if (!cg_freeze_requested()) {
        s->state = -1; /* thawed meanwhile (ThawProcesses, auto-thaw) */
    } else if (ev_now(loop) >= s->deadline) {
        s->state = -1;
        /* Nobody else waits for this freeze: do not leave it half done. */
        if (g_waiting == 1)
            cg_freeze_all(0);
    } else {
        return;
    }
    g_waiting--;
    ev_timer_stop(loop, w);
    stream_wake(&s->base);
}

/* 1 when cgroups are in use; else the request is answered and 0. */
static int need_cgroups(conn_t *c, uint64_t id, const char *op)
{
    if (cg_available())
        return 1;
    conn_send_error(c, id, CODE(FAILED_PRECONDITION), EOPNOTSUPP,
                    "%s: needs cgroups, which this agent does not use (%s)", op,
                    cg_unavailable_reason());
    return 0;
}

void freeze_handle_freeze(conn_t *c, const Request *req)
{
    uint32_t thaw_ms = req->freeze_processes->thaw_after_ms;
    fstream_t *s;
    int rc;

    if (!need_cgroups(c, req->id, "freeze"))
        return;
    if ((rc = cg_freeze_all(1)) < 0) {
        conn_send_errno(c, req->id, rc, "freeze: cgroup.freeze: %s", strerror(-rc));
        return;
    }
    ev_timer_stop(g_loop, &g_auto_thaw);
    if (thaw_ms) {
        ev_timer_set(&g_auto_thaw, thaw_ms / 1000.0, 0);
        ev_timer_start(g_loop, &g_auto_thaw);
    }
    if (cg_frozen()) {
        send_ack(c, req->id);
        return;
    }
    if (!(s = calloc(1, sizeof *s))) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "freeze: out of memory");
        return;
    }
    s->base.ops = &freeze_ops;
    s->deadline = ev_now(g_loop) + FREEZE_WAIT_S;
    ev_timer_init(&s->poll, on_poll, FREEZE_POLL_S, FREEZE_POLL_S);
    s->poll.data = s;
    g_waiting++;
    if ((rc = conn_stream_add(c, &s->base, req->id)) < 0) {
        fs_destroy(&s->base);
        conn_send_stream_refused(c, req->id, rc, "freeze");
        return;
    }
    ev_timer_start(g_loop, &s->poll);
}

void freeze_handle_thaw(conn_t *c, const Request *req)
{
    int rc;
    if (!need_cgroups(c, req->id, "thaw"))
        return;
    ev_timer_stop(g_loop, &g_auto_thaw);
    if ((rc = cg_freeze_all(0)) < 0) {
        conn_send_errno(c, req->id, rc, "thaw: cgroup.freeze: %s", strerror(-rc));
        return;
    }
    send_ack(c, req->id);
}
