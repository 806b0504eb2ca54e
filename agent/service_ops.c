/* service_ops.c - the requests about a service: WaitReady (answered once
 * the current run is ready, or with why it never will be) and StopService
 * (the run gets its signal, SIGKILL after the grace; answered once the
 * service has ended). Each waits as a stream on the service's waiter list.
 * Part of the service module (service_internal.h).
 * Errors: every request is answered on its connection, with an Error when
 * it is refused or fails. */
#include "service_internal.h"

#include "conn.h"
#include "errcode.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum wkind { W_READY, W_STOP };

struct svc_waiter {
    stream_t base;
    enum wkind kind;
    svc_t *svc;
    proc_t *p; /* referenced: the record (and so svc) outlives the waiter */
    ev_timer deadline;
    uint32_t timeout_ms;
    int expired;
    svc_waiter_t *next, *prev;
};

void svc_wake_waiters(svc_t *s)
{
    for (svc_waiter_t *w = s->waiters; w; w = w->next)
        stream_wake(&w->base);
}

static const char *state_name(int st)
{
    switch (st) {
    case SSTATE(STARTING): return "starting";
    case SSTATE(READY): return "ready";
    case SSTATE(UNHEALTHY): return "unhealthy";
    case SSTATE(BACKING_OFF): return "backing off";
    case SSTATE(STOPPED): return "stopped";
    case SSTATE(FAILED): return "failed";
    default: return "-";
    }
}

static stream_status_t waiter_next(stream_t *base)
{
    svc_waiter_t *w = (svc_waiter_t *)base;
    svc_t *s = w->svc;
    const svc_run_t *r = svc_run_cur(s);
    char ex[96] = "";

    if (w->kind == W_STOP) {
        if (!proc_final(w->p))
            return STREAM_WAIT;
        proc_send_info(base->conn, base->id, 1, w->p);
        return STREAM_DONE;
    }
    if (!s->over && r && !r->ended && r->ready) {
        proc_send_info(base->conn, base->id, 1, w->p);
        return STREAM_DONE;
    }
    if (s->over) {
        if (r && r->ended)
            svc_describe_exit(r->status, r->timed_out, ex, sizeof ex);
        conn_send_error(base->conn, base->id, CODE(FAILED_PRECONDITION), 0,
                        "wait_ready: process %d %s%s (%s%s%s%s)", (int)proc_pid(w->p),
                        s->state == SSTATE(FAILED) ? "gave up" : "exited",
                        r && r->ready ? "" : " before it was ready", ex,
                        s->restarts ? ", after restarts" : "", s->last_error[0] ? "; last error: " : "",
                        s->last_error);
        return STREAM_DONE;
    }
    if (w->expired) {
        conn_send_error(base->conn, base->id, CODE(DEADLINE_EXCEEDED), ETIMEDOUT,
                        "wait_ready: process %d not ready within %u ms (%s, %u restarts): %s",
                        (int)proc_pid(w->p), w->timeout_ms, state_name(s->state), s->restarts,
                        s->last_error[0] ? s->last_error : "no probe attempt finished yet");
        return STREAM_DONE;
    }
    return STREAM_WAIT;
}

static void waiter_destroy(stream_t *base)
{
    svc_waiter_t *w = (svc_waiter_t *)base;
    ev_timer_stop(w->svc->loop, &w->deadline);
    SA_LIST_UNLINK(w->svc->waiters, w, next, prev);
    proc_unref(w->p); /* may free the record and its svc: last */
    free(w);
}

static const stream_ops_t waiter_ops = {
    .name = "wait_ready",
    .next = waiter_next,
    .destroy = waiter_destroy,
};

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    svc_waiter_t *w = t->data;
    w->expired = 1;
    stream_wake(&w->base);
}

static void waiter_add(conn_t *c, uint64_t id, svc_t *s, enum wkind kind, uint32_t timeout_ms,
                       const char *op)
{
    svc_waiter_t *w = calloc(1, sizeof *w);
    int rc;
    if (!w) {
        conn_send_error(c, id, CODE(RESOURCE_EXHAUSTED), ENOMEM, "%s: out of memory", op);
        return;
    }
    w->base.ops = &waiter_ops;
    w->kind = kind;
    w->svc = s;
    w->p = s->p;
    proc_ref(w->p);
    w->timeout_ms = timeout_ms;
    ev_init(&w->deadline, on_deadline);
    w->deadline.data = w;
    SA_LIST_PUSH(s->waiters, w, next, prev);
    if ((rc = conn_stream_add(c, &w->base, id)) < 0) {
        waiter_destroy(&w->base);
        conn_send_stream_refused(c, id, rc, op);
        return;
    }
    if (timeout_ms) {
        ev_timer_set(&w->deadline, timeout_ms / 1000.0, 0);
        ev_timer_start(s->loop, &w->deadline);
    }
}

/* ------------------------------------------------------------ handlers */

void svc_handle_wait_ready(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__WaitReady *w = req->wait_ready;
    proc_t *p;
    if (!w->pid && !(w->tag && w->tag[0])) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0, "wait_ready: give a pid or a tag");
        return;
    }
    if (!(p = proc_find(w->pid, w->tag))) {
        if (w->pid)
            conn_send_error(c, req->id, CODE(NOT_FOUND), ESRCH,
                            "wait_ready: process %u: not started by this agent, or already "
                            "forgotten",
                            w->pid);
        else
            conn_send_error(c, req->id, CODE(NOT_FOUND), 0, "wait_ready: no process has tag '%s'",
                            w->tag);
        return;
    }
    svc_t *s = proc_service(p);
    if (!s) {
        /* No ready probe: a running process is as ready as it will get. */
        if (proc_running(p))
            proc_send_info(c, req->id, 1, p);
        else
            conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                            "wait_ready: process %d has exited", (int)proc_pid(p));
        return;
    }
    waiter_add(c, req->id, s, W_READY, w->timeout_ms, "wait_ready");
}

void svc_handle_stop(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__StopService *st = req->stop_service;
    proc_t *p;
    svc_t *s;
    if (!st->tag || !st->tag[0]) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0, "stop_service: tag is empty");
        return;
    }
    if (st->signal < 0 || st->signal > 64) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL,
                        "stop_service: %d is not a valid signal number (1..64)", st->signal);
        return;
    }
    if (!(p = proc_find(0, st->tag))) {
        conn_send_error(c, req->id, CODE(NOT_FOUND), 0, "stop_service: no service has tag '%s'",
                        st->tag);
        return;
    }
    if (!(s = proc_service(p)) || (s->mode == MODE(NEVER) && !proc_running(p))) {
        if (proc_final(p) || !proc_running(p)) {
            proc_send_info(c, req->id, 1, p); /* already stopped */
            return;
        }
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), 0,
                        "stop_service: process %d (tag '%s') is not a service; use SendSignal",
                        (int)proc_pid(p), st->tag);
        return;
    }
    if (proc_final(p)) {
        proc_send_info(c, req->id, 1, p);
        return;
    }
    s->stop_requested = 1;
    s->stop_signal = st->signal ? st->signal : SIGTERM;
    s->stop_grace_ms = st->grace_ms ? st->grace_ms : proc_kill_grace_ms(p);
    ev_timer_stop(s->loop, &s->t_restart);
    /* The answer comes once the service has ended (its ProcessInfo). */
    proc_ref(p);
    waiter_add(c, req->id, s, W_STOP, 0, "stop_service");
    if (proc_running(p)) {
        log_info("service '%s': stopping (signal %d, SIGKILL after %u ms)", st->tag,
                 s->stop_signal, s->stop_grace_ms);
        svc_kill_run(s, s->stop_signal, s->stop_grace_ms);
    } else if (!s->respawning && !s->over) {
        log_info("service '%s': stopped while waiting to restart", st->tag);
        svc_set_over(s, SSTATE(STOPPED));
        proc_end(p);
    }
    proc_unref(p);
}
