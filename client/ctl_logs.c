/* ctl_logs.c - sandboxctl's logs: a process's kept output, its last lines
 * (--tail), a time (--since), a position (--from), then what comes (-f);
 * every gap said where it happened, and a service's events (ready, a run's
 * exit, a restart) in their place. */
#include "ctl_proc.h"

#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* RFC 3339 in UTC with nanoseconds, as docker logs -t. */
static void put_time(FILE *f, uint64_t ns)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    char b[32];
    gmtime_r(&t, &tm);
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(f, "%s.%09lluZ ", b, (unsigned long long)(ns % 1000000000));
}

typedef struct ev {
    int stream;
    uint64_t seq, ts;
    size_t len;
    uint8_t *data;
} ev_t;

typedef struct gap {
    int stream;
    uint64_t skipped, from, to;
} gap_t;

/* A service's event: ProcessReady, the ProcessExit of a run the service
 * goes on after (done = false), ProcessRestarted. */
typedef struct svc_ev {
    Sandbox__Agent__V1__Response__ResultCase kind; /* RES(READY), RES(EXIT), RES(RESTARTED) */
    uint64_t seq;                                  /* its place: after the output before it */
    uint64_t ts;
    uint32_t pid, restarts; /* RES(RESTARTED) */
    ProcessExit exit;       /* RES(EXIT): numbers only */
} svc_ev_t;

typedef struct logs {
    ctl_t *ctl;
    int timestamps, allow_gaps, want_stream; /* want_stream 0: all */
    uint64_t since_ns;                        /* 0: all */
    uint64_t window;
    uint64_t next_seq; /* after the last byte seen */
    uint64_t lost;     /* bytes dropped (gaps) */
    int line_start[4]; /* per stream, for --timestamps */
    /* --tail: the kept output collected before printing */
    long tail;
    ev_t *evs;
    size_t n_evs, cap_evs;
    gap_t gaps[64]; /* more are merged into the last: every byte counted */
    size_t n_gaps;
    /* A service remembers its last 64 runs, three events each: more drop
     * the oldest, the ones furthest from the last lines. */
    svc_ev_t svc[256];
    size_t n_svc;
    uint64_t unkept; /* bytes --tail had no memory to keep */
    /* the follow's end */
    ProcessExit exit;
    int exited;
} logs_t;

static void logs_print(logs_t *l, int stream, uint64_t seq, uint64_t ts, const uint8_t *d,
                       size_t n)
{
    if (l->ctl->json) {
        ctl_proc_json_output(stream, seq, ts, d, n);
        return;
    }
    FILE *f = stream == STREAM_ERR ? stderr : stdout;
    if (!l->timestamps) {
        fflush(stdout);
        sa_write_all(fileno(f), d, n, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (l->line_start[stream & 3])
            put_time(f, ts);
        fputc(d[i], f);
        l->line_start[stream & 3] = d[i] == '\n';
    }
    fflush(f);
}

static void logs_gap_print(logs_t *l, int stream, uint64_t skipped, uint64_t from, uint64_t to)
{
    char b[32], w[32];
    l->lost += skipped;
    if (l->ctl->json)
        ctl_proc_json_gap(stream, skipped, from, to);
    fflush(stdout);
    ctl_human("bytes", (double)skipped, b, sizeof b);
    ctl_human("bytes", (double)l->window, w, sizeof w);
    fprintf(stderr, "sandboxctl: logs: %s of %s were dropped before this point (window %s)\n",
            b, stream == STREAM_UNSPECIFIED ? "output" : ctl_proc_stream_name(stream), w);
}

/* A gap: said where it happens, or with --tail kept until it is known
 * whether it falls within the lines printed. */
static void logs_gap(logs_t *l, int stream, uint64_t skipped, uint64_t from, uint64_t to)
{
    /* With --stream, the other stream's gaps are not missing output. */
    int s = stream == STREAM_PTY ? STREAM_OUT : stream;
    if (l->want_stream && s != STREAM_UNSPECIFIED && s != l->want_stream)
        return;
    if (l->tail >= 0) {
        if (l->n_gaps < sizeof l->gaps / sizeof l->gaps[0]) {
            l->gaps[l->n_gaps++] = (gap_t){stream, skipped, from, to};
        } else {
            gap_t *last = &l->gaps[l->n_gaps - 1];
            last->stream = last->stream == stream ? stream : STREAM_UNSPECIFIED;
            last->skipped += skipped;
            last->to = to;
        }
        return;
    }
    logs_gap_print(l, stream, skipped, from, to);
}

/* A service's event: a JSON line, or a note on stderr in its place among
 * the output (with --timestamps, its time first). */
static void logs_svc_print(const logs_t *l, const svc_ev_t *e)
{
    if (l->ctl->json) {
        if (e->kind == RES(READY)) {
            printf("{\"event\":\"ready\",\"timestamp_unix_nano\":%llu}\n",
                   (unsigned long long)e->ts);
        } else if (e->kind == RES(RESTARTED)) {
            printf("{\"event\":\"restarted\",\"pid\":%u,\"restarts\":%u,"
                   "\"timestamp_unix_nano\":%llu}\n",
                   e->pid, e->restarts, (unsigned long long)e->ts);
        } else {
            printf("{\"event\":\"exited\",");
            ctl_proc_json_exit_fields(&e->exit);
            printf(",\"timestamp_unix_nano\":%llu}\n", (unsigned long long)e->ts);
        }
        fflush(stdout);
        return;
    }
    fflush(stdout);
    if (l->timestamps)
        put_time(stderr, e->ts);
    if (e->kind == RES(READY))
        fprintf(stderr, "sandboxctl: logs: the service is ready here\n");
    else if (e->kind == RES(RESTARTED))
        fprintf(stderr, "sandboxctl: logs: the service restarted here as pid %u (restart %u)\n",
                e->pid, e->restarts);
    else if (e->exit.signal)
        fprintf(stderr, "sandboxctl: logs: a run of the service was killed here by signal %d%s\n",
                e->exit.signal, e->exit.timed_out ? " (it timed out)" : "");
    else
        fprintf(stderr, "sandboxctl: logs: a run of the service exited here with code %d%s\n",
                e->exit.exit_code, e->exit.timed_out ? " (it timed out)" : "");
}

/* A service's event of a follow: printed, or with --tail kept with its
 * place until the last lines are known. --stream does not hide it; --since
 * does when it is older. */
static void logs_svc(logs_t *l, const Response *r)
{
    svc_ev_t e = {.kind = r->result_case, .seq = l->next_seq};
    if (r->result_case == RES(READY)) {
        e.ts = r->ready->at_unix_nano;
    } else if (r->result_case == RES(RESTARTED)) {
        e.ts = r->restarted->at_unix_nano;
        e.pid = r->restarted->pid;
        e.restarts = r->restarted->restarts;
    } else {
        e.exit = *r->exit; /* numbers only: nothing points into r */
        e.ts = r->exit->ended_at_unix_nano;
    }
    if (l->since_ns && e.ts < l->since_ns)
        return;
    if (l->tail < 0) {
        for (size_t i = 0; i < l->n_svc; i++) {
            const svc_ev_t *k = &l->svc[i];
            if (k->kind == e.kind && k->seq == e.seq && k->ts == e.ts && k->pid == e.pid &&
                k->restarts == e.restarts)
                return; /* said before --tail's follow ended */
        }
        logs_svc_print(l, &e);
        return;
    }
    if (l->n_svc == sizeof l->svc / sizeof l->svc[0])
        memmove(l->svc, l->svc + 1, --l->n_svc * sizeof l->svc[0]);
    l->svc[l->n_svc++] = e;
}

/* --tail: keep an event until the end says which lines are the last. What
 * finds no memory is counted, and said at the end. */
static void logs_keep(logs_t *l, const OutputEvent *e)
{
    uint8_t *d = malloc(e->data.len ? e->data.len : 1);
    if (d && l->n_evs == l->cap_evs) {
        size_t cap = l->cap_evs ? l->cap_evs * 2 : 64;
        ev_t *v = realloc(l->evs, cap * sizeof *v);
        if (v) {
            l->evs = v;
            l->cap_evs = cap;
        }
    }
    if (!d || l->n_evs == l->cap_evs) {
        free(d);
        l->unkept += e->data.len;
        return;
    }
    memcpy(d, e->data.data, e->data.len);
    l->evs[l->n_evs++] = (ev_t){(int)e->stream, e->sequence, e->timestamp_unix_nano,
                                e->data.len, d};
}

static void logs_event(logs_t *l, const OutputEvent *e)
{
    /* The agent reports output evicted before the follow began as an
     * OutputGap from byte 0; an agent that started at the oldest kept byte
     * without one shows it as a later first sequence. */
    if (e->sequence > l->next_seq)
        logs_gap(l, STREAM_UNSPECIFIED, e->sequence - l->next_seq, l->next_seq, e->sequence);
    l->next_seq = e->sequence + e->data.len;
    int s = e->stream == STREAM_PTY ? STREAM_OUT : (int)e->stream;
    if (l->want_stream && s != l->want_stream)
        return;
    if (l->since_ns && e->timestamp_unix_nano < l->since_ns)
        return;
    if (l->tail >= 0) {
        logs_keep(l, e);
        return;
    }
    logs_print(l, (int)e->stream, e->sequence, e->timestamp_unix_nano, e->data.data,
               e->data.len);
}

/* --tail: print the last N lines of what was collected (a last line
 * without its newline counts as one). */
static void logs_flush_tail(logs_t *l)
{
    size_t sj = l->n_evs, sk = 0; /* where printing starts: nothing for --tail 0 */
    if (l->tail > 0) {
        long count = 0;
        int seen = 0, found = 0;
        sj = 0;
        for (size_t j = l->n_evs; j-- > 0 && !found;) {
            for (size_t k = l->evs[j].len; k-- > 0;) {
                if (l->evs[j].data[k] == '\n' && seen && ++count == l->tail) {
                    sj = j;
                    sk = k + 1;
                    found = 1;
                    break;
                }
                seen = 1;
            }
        }
    }
    /* Gaps within the lines printed are said first; older ones do not
     * matter to them. */
    uint64_t start = sj < l->n_evs ? l->evs[sj].seq + sk : UINT64_MAX;
    for (size_t g = 0; g < l->n_gaps; g++)
        if (l->gaps[g].to > start)
            logs_gap_print(l, l->gaps[g].stream, l->gaps[g].skipped, l->gaps[g].from,
                           l->gaps[g].to);
    l->n_gaps = 0;
    /* A service's events within them (all, when all the output is printed),
     * each before the output that came after it. */
    uint64_t svc_from = l->tail > 0 && sj == 0 && sk == 0 ? 0 : start;
    size_t v = 0;
    while (v < l->n_svc && l->svc[v].seq < svc_from)
        v++;
    for (size_t j = sj; j < l->n_evs; j++) {
        ev_t *e = &l->evs[j];
        size_t from = j == sj ? sk : 0;
        for (; v < l->n_svc && l->svc[v].seq <= e->seq + from; v++)
            logs_svc_print(l, &l->svc[v]);
        if (from < e->len)
            logs_print(l, e->stream, e->seq + from, e->ts, e->data + from, e->len - from);
    }
    if (svc_from != UINT64_MAX)
        for (; v < l->n_svc; v++)
            logs_svc_print(l, &l->svc[v]);
    /* A follow that goes on (-f) starts at next_seq, where the agent tells
     * again what happened there: those are kept to be known (logs_svc). */
    v = l->n_svc;
    while (v > 0 && l->svc[v - 1].seq == l->next_seq)
        v--;
    memmove(l->svc, l->svc + v, (l->n_svc - v) * sizeof l->svc[0]);
    l->n_svc -= v;
    for (size_t j = 0; j < l->n_evs; j++)
        free(l->evs[j].data);
    free(l->evs);
    l->evs = NULL;
    l->n_evs = l->cap_evs = 0;
    l->tail = -1;
}

/* "90s", "5m", "2h", "1d", or a time "2026-01-02T15:04:05Z" / "2026-01-02 15:04:05"
 * (UTC) into Unix nanoseconds. */
static int parse_since(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end != s && (!*end || !end[1])) {
        double mul = !*end || *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600
                   : *end == 'd' ? 86400 : -1;
        if (mul < 0 || v < 0)
            return -1;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double t = (double)now.tv_sec + (double)now.tv_nsec / 1e9 - v * mul;
        *out = t > 0 ? (uint64_t)(t * 1e9) : 1;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!e)
        e = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    if (!e || (*e && strcmp(e, "Z")))
        return -1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *out = (uint64_t)t * 1000000000ull;
    return 0;
}

/* One response of a follow: output, a gap, a service's event, the exit. */
static int logs_response(ctl_t *ctl, const Response *r, void *arg)
{
    logs_t *l = arg;
    if (r->result_case == RES(READY) || r->result_case == RES(RESTARTED) ||
        (r->result_case == RES(EXIT) && !r->done)) {
        logs_svc(l, r);
    } else if (r->result_case == RES(OUTPUT)) {
        logs_event(l, r->output);
    } else if (r->result_case == RES(GAP)) {
        const OutputGap *g = r->gap;
        if (g->to_sequence > l->next_seq)
            l->next_seq = g->to_sequence;
        logs_gap(l, (int)g->stream, g->skipped_bytes, g->from_sequence, g->to_sequence);
    } else if (r->result_case == RES(EXIT)) {
        l->exit = *r->exit; /* numbers only: nothing points into r */
        l->exited = 1;
    }
    return 0;
}

/* One FollowOutput from from_seq until done. 0, or 1 after an error said. */
static int logs_follow(logs_t *l, uint32_t pid, uint64_t from_seq, int follow, int lines)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    f.pid = pid;
    f.from_sequence = from_seq;
    f.no_wait = !follow;
    f.lines = lines;
    req.op_case = OP(FOLLOW);
    req.follow = &f;
    return ctl_stream(l->ctl, &req, "logs", 0, -1, logs_response, l) ? 1 : 0;
}

/* An option's value into l or *from: 0, or -1 after a usage error. */
static int logs_value(ctl_t *ctl, const char *a, const char *v, logs_t *l, uint64_t *from)
{
    char *end;
    if (!strcmp(a, "--tail") || !strcmp(a, "-n")) {
        l->tail = strtol(v, &end, 10);
        if (!v[0] || *end || l->tail < 0)
            goto bad;
    } else if (!strcmp(a, "--from")) {
        *from = strtoull(v, &end, 10);
        if (!v[0] || *end || v[0] == '-')
            goto bad;
    } else if (!strcmp(a, "--since")) {
        if (parse_since(v, &l->since_ns) < 0)
            goto bad;
    } else if (!strcmp(v, "stdout")) { /* --stream */
        l->want_stream = STREAM_OUT;
    } else if (!strcmp(v, "stderr")) {
        l->want_stream = STREAM_ERR;
    } else {
        goto bad;
    }
    return 0;
bad:;
    static const char *const expected[][2] = {
        {"--tail", "a number of lines"},
        {"-n", "a number of lines"},
        {"--from", "a position"},
        {"--since", "a duration (90s, 5m, 2h, 1d) or a time (2006-01-02T15:04:05Z, UTC)"},
        {"--stream", "stdout or stderr"},
    };
    for (size_t k = 0; k < sizeof expected / sizeof expected[0]; k++)
        if (!strcmp(a, expected[k][0]))
            ctl_usage_error(ctl, "%s '%s': expected %s", a, v, expected[k][1]);
    return -1;
}

/* The options into l, *follow and *from. The index of the process's name,
 * or -1 after a usage error (status 2). */
static int logs_options(ctl_t *ctl, int argc, char **argv, logs_t *l, int *follow,
                        uint64_t *from)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-f") || !strcmp(a, "--follow")) {
            *follow = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--timestamps")) {
            l->timestamps = 1;
        } else if (!strcmp(a, "--allow-gaps")) {
            l->allow_gaps = 1;
        } else if (!strcmp(a, "--")) {
            return i + 1;
        } else if (strcmp(a, "--tail") && strcmp(a, "-n") && strcmp(a, "--from") &&
                   strcmp(a, "--since") && strcmp(a, "--stream")) {
            ctl_usage_error(ctl, "unknown option '%s'", a);
            return -1;
        } else if (i + 1 == argc) {
            ctl_usage_error(ctl, "option '%s' needs a value", a);
            return -1;
        } else if (logs_value(ctl, a, argv[++i], l, from) < 0) {
            return -1;
        }
    }
    return i;
}

/* The process's window (for the gap messages): 0, or 1 after saying why. */
static int logs_window(logs_t *l, uint32_t pid)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    Response *r;
    gp.pid = pid;
    req.op_case = OP(GET_PROCESS);
    req.get_process = &gp;
    if (ctl_call(l->ctl, &req, "logs", RES(PROCESS), 30000, &r))
        return 1;
    l->window = r->process->output_window;
    sa_response_free(r);
    return 0;
}

/* What was not said yet about what is missing, and the status it gives. */
static int logs_missing(const logs_t *l, int status)
{
    char b[32];
    if (l->unkept) {
        ctl_human("bytes", (double)l->unkept, b, sizeof b);
        fprintf(stderr, "sandboxctl: logs: out of memory: %s of output could not be kept for "
                        "--tail and are not shown\n", b);
        status = 1;
    }
    if (!status && l->lost && !l->allow_gaps) {
        ctl_human("bytes", (double)l->lost, b, sizeof b);
        fprintf(stderr, "sandboxctl: logs: %s of output were missing (exit 1; --allow-gaps "
                        "accepts that)\n", b);
        status = 1;
    }
    return status;
}

int ctl_logs_cmd(ctl_t *ctl, int argc, char **argv)
{
    logs_t l = {.ctl = ctl, .tail = -1, .line_start = {1, 1, 1, 1}};
    int follow = 0, status, i;
    uint32_t pid;
    uint64_t from = 0;

    if ((i = logs_options(ctl, argc, argv, &l, &follow, &from)) < 0)
        return 2;
    if ((status = ctl_proc_one(ctl, argc, argv, i, &pid)))
        return status;
    if (logs_window(&l, pid))
        return 1;
    int lines = ctl->json || l.timestamps || l.tail >= 0;
    if (ctl->json)
        setvbuf(stdout, NULL, _IOLBF, 0);
    if (l.tail >= 0) {
        /* What is kept, cut to its last lines; then (with -f) what comes. */
        status = logs_follow(&l, pid, 0, 0, 1);
        logs_flush_tail(&l);
        if (!status && follow && !l.exited)
            status = logs_follow(&l, pid, l.next_seq, 1, lines);
    } else {
        l.next_seq = from; /* what comes before it is not missing: it was read */
        status = logs_follow(&l, pid, from, follow, lines);
    }
    if (ctl->json && l.exited)
        ctl_proc_json_exit(&l.exit);
    return logs_missing(&l, status);
}
