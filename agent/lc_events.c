/* lc_events.c - WatchLifecycle: every subscriber gets its own bounded
 * queue of lifecycle events (QUIESCED, THAWED, RESTORED, CLOCK_STEPPED);
 * one that does not read is ended with RESOURCE_EXHAUSTED rather than
 * holding memory. See lc_internal.h. */
#include "lc_internal.h"

#include "conn.h"
#include "errcode.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LC_EVENTS_QUEUED 64 /* per subscriber */

typedef Sandbox__Agent__V1__LifecycleEvent LifecycleEvent;

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

static sub_t *g_subs;

void lc_emit(int kind, const char *source, int64_t step, char *const *mounts, int n)
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
        e->generation = lc_generation;
        e->at = now;
        e->restores = lc_restores;
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
    SA_LIST_UNLINK(g_subs, s, next, prev);
    free(s);
}

static const stream_ops_t sub_ops = {
    .name = "watch_lifecycle",
    .next = sub_next,
    .destroy = sub_destroy,
};

/* ------------------------------------------------------------ ops */

void lc_handle_watch(conn_t *c, const Request *req)
{
    sub_t *s = calloc(1, sizeof *s);
    int rc;
    if (!s) {
        conn_send_errno(c, req->id, -ENOMEM, "watch_lifecycle: out of memory");
        return;
    }
    s->base.ops = &sub_ops;
    SA_LIST_PUSH(g_subs, s, next, prev);
    if ((rc = conn_stream_add(c, &s->base, req->id)) < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc, "watch_lifecycle: %s",
                        rc == -EMFILE ? "too many requests in flight" : strerror(-rc));
        sub_destroy(&s->base);
    }
}
