/* service_follow.c - the run boundaries a follower of a service is told
 * about, in order, between the output of the runs: ProcessReady,
 * ProcessExit of each run, ProcessRestarted. Part of the service module
 * (service_internal.h).
 * Errors: none; a follower that fell behind the ring of runs skips to the
 * oldest one remembered. */
#include "service_internal.h"

#include "conn.h"

#include <string.h>
#include <sys/wait.h>

void svc_follow_init(const svc_t *s, svc_follow_t *f, uint64_t seq)
{
    uint32_t oldest = s->n_runs > SVC_HISTORY ? s->n_runs - SVC_HISTORY + 1 : 1;
    memset(f, 0, sizeof *f);
    f->run = s->n_runs ? s->n_runs : 1;
    /* The first run remembered that this position is within (or at the
     * end of: its exit comes first). */
    for (uint32_t i = oldest; i <= s->n_runs; i++) {
        const svc_run_t *r = &s->runs[(i - 1) % SVC_HISTORY];
        if (!r->ended || r->end_seq >= seq) {
            f->run = i;
            f->ready_sent = r->ready && r->ready_seq < seq;
            break;
        }
    }
}

static int send_event(stream_t *base, Response *r, stream_status_t *st)
{
    conn_send(base->conn, base->id, 0, r);
    *st = STREAM_MORE;
    return 1;
}

int svc_follow_event(svc_t *s, svc_follow_t *f, uint64_t seq, stream_t *base, size_t *max,
                     int *final, stream_status_t *st)
{
    Response resp = RESPONSE_INIT;
    uint32_t oldest = s->n_runs > SVC_HISTORY ? s->n_runs - SVC_HISTORY + 1 : 1;
    svc_run_t *r;

    if (!s->n_runs)
        return 0;
    if (f->run < oldest) {
        f->run = oldest; /* fell more than SVC_HISTORY runs behind */
        f->ready_sent = f->exit_sent = 0;
    }
    if (f->run > s->n_runs)
        return 0;
    r = svc_run_at(s, f->run);
    if (s->ready && r->ready && !f->ready_sent) { /* only with a ready probe */
        if (seq >= r->ready_seq) {
            Sandbox__Agent__V1__ProcessReady pr = SANDBOX__AGENT__V1__PROCESS_READY__INIT;
            pr.at_unix_nano = r->ready_at;
            resp.result_case = RES(READY);
            resp.ready = &pr;
            f->ready_sent = 1;
            return send_event(base, &resp, st);
        }
        if (r->ready_seq - seq < *max)
            *max = (size_t)(r->ready_seq - seq);
        return 0;
    }
    if (!r->ended)
        return 0;
    if (seq < r->end_seq) {
        /* Output of this run comes first, and stops at its end. */
        if (r->end_seq - seq < *max)
            *max = (size_t)(r->end_seq - seq);
        *final = 1;
        return 0;
    }
    if (!f->exit_sent) {
        /* The newest run of a service that is over: its exit is the
         * stream's last response (done), sent by the follower itself. */
        if (f->run == s->n_runs && s->over)
            return 0;
        ProcessExit e = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
        if (WIFSIGNALED(r->status)) {
            e.signal = WTERMSIG(r->status);
            e.exit_code = 128 + e.signal;
            e.core_dumped = WCOREDUMP(r->status) ? 1 : 0;
        } else {
            e.exit_code = WEXITSTATUS(r->status);
        }
        e.ended_at_unix_nano = r->ended_at;
        e.timed_out = r->timed_out;
        e.total_output_bytes = r->end_seq;
        resp.result_case = RES(EXIT);
        resp.exit = &e;
        f->exit_sent = 1;
        return send_event(base, &resp, st);
    }
    if (f->run == s->n_runs)
        return 0; /* the next run has not started */
    const svc_run_t *nx = svc_run_at(s, f->run + 1);
    Sandbox__Agent__V1__ProcessRestarted rs = SANDBOX__AGENT__V1__PROCESS_RESTARTED__INIT;
    rs.pid = (uint32_t)nx->pid;
    rs.restarts = nx->restarts;
    rs.at_unix_nano = nx->started_at;
    resp.result_case = RES(RESTARTED);
    resp.restarted = &rs;
    f->run++;
    f->ready_sent = f->exit_sent = 0;
    return send_event(base, &resp, st);
}
