/* ctl_logs.c - sandboxctl's logs: a process's kept output, its last lines
 * (--tail), a time (--since), a position (--from), then what comes (-f);
 * every gap said where it happened. */
#include "ctl.h"
#include "ctl_proc.h"

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
    size_t n_evs;
    gap_t gaps[64];
    size_t n_gaps;
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
        if (l->n_gaps < sizeof l->gaps / sizeof l->gaps[0])
            l->gaps[l->n_gaps++] = (gap_t){stream, skipped, from, to};
        return;
    }
    logs_gap_print(l, stream, skipped, from, to);
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
        ev_t *v = realloc(l->evs, (l->n_evs + 1) * sizeof *v);
        uint8_t *d = malloc(e->data.len ? e->data.len : 1);
        if (!v || !d) {
            free(d);
            if (v)
                l->evs = v;
            return;
        }
        l->evs = v;
        memcpy(d, e->data.data, e->data.len);
        v[l->n_evs++] = (ev_t){(int)e->stream, e->sequence, e->timestamp_unix_nano,
                               e->data.len, d};
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
    for (size_t j = sj; j < l->n_evs; j++) {
        ev_t *e = &l->evs[j];
        size_t from = j == sj ? sk : 0;
        if (from < e->len)
            logs_print(l, e->stream, e->seq + from, e->ts, e->data + from, e->len - from);
    }
    for (size_t j = 0; j < l->n_evs; j++)
        free(l->evs[j].data);
    free(l->evs);
    l->evs = NULL;
    l->n_evs = 0;
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

/* One FollowOutput from from_seq until done. Returns 0, 1 after an error
 * said, and the exit in *exit_out when it came. */
static int logs_follow(logs_t *l, uint32_t pid, uint64_t from_seq, int follow, int lines,
                       ProcessExit *exit_out, int *exited)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    int rc;
    f.pid = pid;
    f.from_sequence = from_seq;
    f.no_wait = !follow;
    f.lines = lines;
    req.op_case = OP(FOLLOW);
    req.follow = &f;
    if ((rc = sa_client_send(l->ctl->cli, &req)) < 0) {
        fprintf(stderr, "sandboxctl: logs: %s\n", strerror(-rc));
        return 1;
    }
    int status = 0;
    for (;;) {
        Response *r;
        if ((rc = sa_client_recv_id(l->ctl->cli, req.id, &r, -1)) < 0) {
            fprintf(stderr, "sandboxctl: logs: connection to the agent: %s\n", strerror(-rc));
            return 1;
        }
        if (r->result_case == RES(OUTPUT)) {
            logs_event(l, r->output);
        } else if (r->result_case == RES(GAP)) {
            const OutputGap *g = r->gap;
            if (g->to_sequence > l->next_seq)
                l->next_seq = g->to_sequence;
            logs_gap(l, (int)g->stream, g->skipped_bytes, g->from_sequence, g->to_sequence);
        } else if (r->result_case == RES(EXIT)) {
            *exit_out = *r->exit;
            *exited = 1;
        } else if (r->result_case == RES(ERROR)) {
            status = ctl_fail("logs", r);
        }
        int done = r->done;
        sa_response_free(r);
        if (done)
            return status;
    }
}

int ctl_logs_cmd(ctl_t *ctl, int argc, char **argv)
{
    logs_t l;
    int follow = 0, i = 1, status;
    uint32_t pid;
    uint64_t from = 0;
    memset(&l, 0, sizeof l);
    l.ctl = ctl;
    l.tail = -1;
    for (int s = 0; s < 4; s++)
        l.line_start[s] = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "-f") || !strcmp(a, "--follow")) {
            follow = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--timestamps")) {
            l.timestamps = 1;
        } else if (!strcmp(a, "--allow-gaps")) {
            l.allow_gaps = 1;
        } else if (!strcmp(a, "--tail") || !strcmp(a, "-n")) {
            char *end;
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            l.tail = strtol(argv[++i], &end, 10);
            if (!argv[i][0] || *end || l.tail < 0)
                return ctl_usage_error(ctl, "--tail '%s': expected a number of lines", argv[i]);
        } else if (!strcmp(a, "--from")) {
            char *end;
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            from = strtoull(argv[++i], &end, 10);
            if (!argv[i][0] || *end || argv[i][0] == '-')
                return ctl_usage_error(ctl, "--from '%s': expected a position", argv[i]);
        } else if (!strcmp(a, "--since")) {
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            if (parse_since(argv[++i], &l.since_ns) < 0)
                return ctl_usage_error(ctl, "--since '%s': expected a duration (90s, 5m, 2h, "
                                            "1d) or a time (2006-01-02T15:04:05Z, UTC)", argv[i]);
        } else if (!strcmp(a, "--stream")) {
            if (!has_value)
                return ctl_usage_error(ctl, "option '%s' needs a value", a);
            i++;
            if (!strcmp(argv[i], "stdout"))
                l.want_stream = STREAM_OUT;
            else if (!strcmp(argv[i], "stderr"))
                l.want_stream = STREAM_ERR;
            else
                return ctl_usage_error(ctl, "--stream '%s': expected stdout or stderr", argv[i]);
        } else if (!strcmp(a, "--")) {
            i++;
            break;
        } else {
            return ctl_usage_error(ctl, "unknown option '%s'", a);
        }
    }
    if (i + 1 != argc)
        return ctl_usage_error(ctl, i == argc ? "needs a pid or a tag" : "one process at a time");
    if (ctl_connect(ctl) < 0 || ctl_proc_resolve(ctl, "logs", argv[i], &pid))
        return 1;
    /* The process's window, for the gap messages. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    Response *r = NULL;
    gp.pid = pid;
    req.op_case = OP(GET_PROCESS);
    req.get_process = &gp;
    if (sa_client_call(ctl->cli, &req, &r, 30000) < 0) {
        fprintf(stderr, "sandboxctl: logs: connection to the agent lost\n");
        return 1;
    }
    if (r->result_case != RES(PROCESS)) {
        status = ctl_fail("logs", r);
        sa_response_free(r);
        return status;
    }
    l.window = r->process->output_window;
    sa_response_free(r);

    ProcessExit ex = SANDBOX__AGENT__V1__PROCESS_EXIT__INIT;
    int exited = 0, lines = ctl->json || l.timestamps || l.tail >= 0;
    if (ctl->json)
        setvbuf(stdout, NULL, _IOLBF, 0);
    if (l.tail >= 0) {
        /* What is kept, cut to its last lines; then (with -f) what comes. */
        status = logs_follow(&l, pid, 0, 0, 1, &ex, &exited);
        logs_flush_tail(&l);
        if (!status && follow && !exited)
            status = logs_follow(&l, pid, l.next_seq, 1, lines, &ex, &exited);
    } else {
        l.next_seq = from; /* what comes before it is not missing: it was read */
        status = logs_follow(&l, pid, from, follow, lines, &ex, &exited);
    }
    if (ctl->json && exited)
        ctl_proc_json_exit(&ex);
    if (!status && l.lost && !l.allow_gaps) {
        char b[32];
        ctl_human("bytes", (double)l.lost, b, sizeof b);
        fprintf(stderr, "sandboxctl: logs: %s of output were missing (exit 1; --allow-gaps "
                        "accepts that)\n", b);
        status = 1;
    }
    return status;
}

