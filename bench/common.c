/* common.c - clocks, statistics, the results table and JSON, the agent under
 * test, and the light response reader (see bench.h). */
#include "bench.h"
#include "spawnref.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

bench_opts_t g_opt;

/* ------------------------------------------------------------ time, stats */

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void sleep_us(unsigned us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double quantile(double *v, size_t n, double q)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

double median3(double *v, size_t n) { return quantile(v, n, 0.5); }

int sun_set(struct sockaddr_un *sa, const char *path)
{
    size_t n = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (n >= sizeof sa->sun_path)
        return -1;
    memcpy(sa->sun_path, path, n + 1);
    return 0;
}

/* ------------------------------------------------------------ results */

#define MAX_ROWS 96
#define MAX_FACTS 32

static row_t g_rows[MAX_ROWS];
static size_t g_nrows;
static char g_fact_key[MAX_FACTS][32], g_fact_val[MAX_FACTS][200];
static size_t g_nfacts;

void result_add(const char *fig, const char *what, const char *unit, double agent,
                const char *ref, double refv, enum better better, double target_ratio,
                double target_abs, const char *note)
{
    if (g_nrows == MAX_ROWS)
        return;
    row_t *r = &g_rows[g_nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->fig, sizeof r->fig, "%s", fig);
    snprintf(r->what, sizeof r->what, "%s", what);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->ref, sizeof r->ref, "%s", ref ? ref : "");
    snprintf(r->note, sizeof r->note, "%s", note ? note : "");
    r->agent = agent;
    r->refv = ref ? refv : NAN;
    r->better = better;
    r->target_ratio = target_ratio;
    r->target_abs = target_abs;
}

void result_fact(const char *key, const char *fmt, ...)
{
    if (g_nfacts == MAX_FACTS)
        return;
    va_list ap;
    va_start(ap, fmt);
    snprintf(g_fact_key[g_nfacts], sizeof g_fact_key[0], "%s", key);
    vsnprintf(g_fact_val[g_nfacts], sizeof g_fact_val[0], fmt, ap);
    va_end(ap);
    g_nfacts++;
}

static double row_ratio(const row_t *r)
{
    if (isnan(r->refv) || r->refv == 0 || isnan(r->agent))
        return NAN;
    return r->agent / r->refv;
}

/* 1 met, 0 missed, -1 no target or nothing measured. */
static int row_met(const row_t *r)
{
    double ratio = row_ratio(r);
    if (!isnan(r->target_ratio)) {
        if (isnan(ratio))
            return -1;
        return r->better == LOWER ? ratio <= r->target_ratio : ratio >= r->target_ratio;
    }
    if (!isnan(r->target_abs)) {
        if (isnan(r->agent))
            return -1;
        return r->better == LOWER ? r->agent <= r->target_abs : r->agent >= r->target_abs;
    }
    return -1;
}

static void fmt_num(char *dst, size_t len, double v)
{
    double a = fabs(v);
    if (isnan(v))
        snprintf(dst, len, "n/a");
    else if (a >= 100)
        snprintf(dst, len, "%.0f", v);
    else if (a >= 10)
        snprintf(dst, len, "%.1f", v);
    else
        snprintf(dst, len, "%.2f", v);
}

static void fmt_target(const row_t *r, char *dst, size_t len)
{
    char n[32];
    const char *op = r->better == LOWER ? "<=" : ">=";
    if (!isnan(r->target_ratio)) {
        snprintf(dst, len, "%s %.2fx", op, r->target_ratio);
    } else if (!isnan(r->target_abs)) {
        fmt_num(n, sizeof n, r->target_abs);
        snprintf(dst, len, "%s %s %s", r->better == LOWER ? "<" : ">=", n, r->unit);
    } else {
        snprintf(dst, len, "-");
    }
}

/* A Markdown table: readable on the terminal, pasteable into the README. */
void results_print_table(void)
{
    printf("\n| # | measure | sandbox-agent | reference | ratio | target | met |\n");
    printf("|---|---|---:|---|---:|---|---|\n");
    for (size_t i = 0; i < g_nrows; i++) {
        const row_t *r = &g_rows[i];
        char a[32], rv[32], ra[32], t[48];
        int met = row_met(r);
        fmt_num(a, sizeof a, r->agent);
        fmt_num(rv, sizeof rv, r->refv);
        double ratio = row_ratio(r);
        if (isnan(ratio))
            snprintf(ra, sizeof ra, "-");
        else
            snprintf(ra, sizeof ra, "%.2fx", ratio);
        fmt_target(r, t, sizeof t);
        char ref[128];
        if (r->ref[0])
            snprintf(ref, sizeof ref, "%s %s %s", r->ref, rv, r->unit);
        else
            snprintf(ref, sizeof ref, "-");
        printf("| %s | %s | %s %s | %s | %s | %s | %s |\n", r->fig, r->what, a, r->unit, ref, ra,
               t, met < 0 ? "-" : met ? "yes" : "**no**");
    }
    for (size_t i = 0; i < g_nrows; i++) {
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(g_rows[j].note, g_rows[i].note);
        if (g_rows[i].note[0] && !seen)
            printf("\n- %s %s: %s", g_rows[i].fig, g_rows[i].what, g_rows[i].note);
    }
    printf("\n");
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fprintf(f, "null");
    else
        fprintf(f, "%.6g", v);
}

int results_write_json(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "sa-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"facts\": {");
    for (size_t i = 0; i < g_nfacts; i++) {
        fprintf(f, "%s\n    ", i ? "," : "");
        json_str(f, g_fact_key[i]);
        fprintf(f, ": ");
        json_str(f, g_fact_val[i]);
    }
    fprintf(f, "\n  },\n  \"rows\": [");
    for (size_t i = 0; i < g_nrows; i++) {
        const row_t *r = &g_rows[i];
        int met = row_met(r);
        fprintf(f, "%s\n    {\"figure\": ", i ? "," : "");
        json_str(f, r->fig);
        fprintf(f, ", \"measure\": ");
        json_str(f, r->what);
        fprintf(f, ", \"unit\": ");
        json_str(f, r->unit);
        fprintf(f, ", \"sandbox_agent\": ");
        json_num(f, r->agent);
        fprintf(f, ", \"reference\": ");
        if (r->ref[0])
            json_str(f, r->ref);
        else
            fprintf(f, "null");
        fprintf(f, ", \"reference_value\": ");
        json_num(f, r->refv);
        fprintf(f, ", \"ratio\": ");
        json_num(f, row_ratio(r));
        fprintf(f, ", \"higher_is_better\": %s", r->better == HIGHER ? "true" : "false");
        fprintf(f, ", \"target_ratio\": ");
        json_num(f, r->target_ratio);
        fprintf(f, ", \"target_value\": ");
        json_num(f, r->target_abs);
        fprintf(f, ", \"met\": %s", met < 0 ? "null" : met ? "true" : "false");
        fprintf(f, ", \"note\": ");
        json_str(f, r->note);
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ the agent */

int agent_up(agent_t *a, const char *name, const char *const *extra)
{
    int pfd[2] = {-1, -1};
    char readyfd[16];
    const char *argv[48];
    int n = 0, rc = -1;

    snprintf(a->sock, sizeof a->sock, "%s/%s.sock", g_opt.dir, name);
    snprintf(a->addr, sizeof a->addr, "unix:%s", a->sock);
    snprintf(a->log, sizeof a->log, "%s/%s.log", g_opt.dir, name);
    unlink(a->sock);
    if (pipe(pfd) < 0) {
        perror("sa-bench: pipe");
        return -1;
    }
    fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
    snprintf(readyfd, sizeof readyfd, "%d", pfd[1]);
    argv[n++] = g_opt.agent_bin;
    argv[n++] = "--listen";
    argv[n++] = a->addr;
    argv[n++] = "--ready-fd";
    argv[n++] = readyfd;
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    for (; extra && *extra && n < 46; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    unlink(a->log);
    rc = bench_spawn(&a->pid, g_opt.agent_bin, (char *const *)argv, a->log);
    close(pfd[1]);
    if (rc) {
        fprintf(stderr, "sa-bench: spawn %s: %s\n", g_opt.agent_bin, strerror(rc));
        close(pfd[0]);
        a->pid = 0;
        return -1;
    }
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    char buf[16];
    if (poll(&p, 1, 10000) != 1 || read(pfd[0], buf, sizeof buf) <= 0) {
        fprintf(stderr, "sa-bench: the agent did not become ready; log in %s\n", a->log);
        close(pfd[0]);
        agent_down(a);
        return -1;
    }
    close(pfd[0]);
    return 0;
}

void agent_down(agent_t *a)
{
    int st;
    if (a->pid <= 0)
        return;
    kill(a->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(a->pid, &st, WNOHANG) == a->pid) {
            a->pid = 0;
            return;
        }
        sleep_us(10000);
    }
    kill(a->pid, SIGKILL);
    waitpid(a->pid, &st, 0);
    a->pid = 0;
}

long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

int sched_ns(pid_t pid, uint64_t *run, uint64_t *wait)
{
    char path[64];
    unsigned long long r, w;
    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%llu %llu", &r, &w);
    fclose(f);
    if (n != 2)
        return -1;
    *run = r;
    *wait = w;
    return 0;
}

sa_client_t *agent_client(const agent_t *a)
{
    char err[256];
    sa_client_t *c = sa_client_connect(a->addr, err, sizeof err);
    if (!c) {
        fprintf(stderr, "sa-bench: %s\n", err);
        exit(1);
    }
    if (sa_client_hello(c, NULL, "sa-bench", 0, err, sizeof err) < 0) {
        fprintf(stderr, "sa-bench: %s\n", err);
        exit(1);
    }
    return c;
}

int64_t agent_ping(sa_client_t *c)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    Response *r = NULL;
    req.op_case = OP(PING);
    req.ping = &p;
    uint64_t t0 = now_ns();
    if (sa_client_call(c, &req, &r, 30000) < 0)
        return -1;
    int64_t dt = (int64_t)(now_ns() - t0);
    int ok = r->result_case == RES(PONG);
    sa_response_free(r);
    return ok ? dt : -1;
}

/* ------------------------------------------------------------ light reader */

int lreader_init(lreader_t *r, int fd, size_t max_frame)
{
    r->fd = fd;
    r->cap = max_frame + 5 + (1u << 20);
    r->off = r->len = 0;
    r->buf = malloc(r->cap);
    return r->buf ? 0 : -ENOMEM;
}

void lreader_free(lreader_t *r)
{
    free(r->buf);
    r->buf = NULL;
}

static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Walk one message's fields; for each calls f(field, wiretype, varint
 * value, slice). Returns 0 or -1 on a malformed message. */
typedef void pb_field_fn(void *ctx, unsigned field, uint64_t v, const uint8_t *s, size_t slen);

static int pb_walk(const uint8_t *p, size_t len, pb_field_fn *f, void *ctx)
{
    const uint8_t *end = p + len;
    while (p < end) {
        uint64_t key, v = 0;
        if (pb_varint(&p, end, &key) < 0)
            return -1;
        unsigned field = (unsigned)(key >> 3), wt = (unsigned)(key & 7);
        switch (wt) {
        case 0:
            if (pb_varint(&p, end, &v) < 0)
                return -1;
            f(ctx, field, v, NULL, 0);
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 2:
            if (pb_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
                return -1;
            f(ctx, field, v, p, (size_t)v);
            p += v;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

static void on_result_field(void *ctx, unsigned field, uint64_t v, const uint8_t *s, size_t slen)
{
    lresp_t *o = ctx;
    switch (o->result) {
    case RES(ERROR):
        if (field == 1 && !s)
            o->code = (int)v;
        else if (field == 2 && s)
            snprintf(o->msg, sizeof o->msg, "%.*s", (int)slen, (const char *)s);
        break;
    case RES(OUTPUT):
    case RES(CHUNK):
        if (field == 2 && s)
            o->data_len = slen;
        break;
    case RES(TUNNEL_DATA):
        if (field == 1 && s)
            o->data_len = slen;
        else if (field == 2 && !s)
            o->eof = v != 0;
        else if (field == 3 && !s)
            o->num = v;
        break;
    case RES(STARTED):
    case RES(EXIT):
    case RES(WRITTEN):
    case RES(FILE_END):
        if (field == 1 && !s)
            o->num = v;
        break;
    default:
        break;
    }
}

static void on_resp_field(void *ctx, unsigned field, uint64_t v, const uint8_t *s, size_t slen)
{
    lresp_t *o = ctx;
    if (field == 1 && !s)
        o->id = v;
    else if (field == 2 && !s)
        o->done = v != 0;
    else if (field >= 3 && s) {
        o->result = (int)field;
        pb_walk(s, slen, on_result_field, o);
    }
}

int lreader_next(lreader_t *r, lresp_t *out)
{
    for (;;) {
        size_t avail = r->len - r->off;
        if (avail >= 5) {
            const uint8_t *h = r->buf + r->off;
            size_t plen = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
            if (h[0] != 0 || plen + 5 > r->cap)
                return -EBADMSG; /* the benchmark never asks for zlib */
            if (avail >= plen + 5) {
                memset(out, 0, sizeof *out);
                int rc = pb_walk(h + 5, plen, on_resp_field, out);
                r->off += plen + 5;
                return rc < 0 ? -EBADMSG : 0;
            }
            if (r->off + plen + 5 > r->cap) {
                memmove(r->buf, r->buf + r->off, avail);
                r->off = 0;
                r->len = avail;
            }
        } else if (r->off && r->off + 5 > r->cap - 4096) {
            memmove(r->buf, r->buf + r->off, avail);
            r->off = 0;
            r->len = avail;
        }
        if (r->off == r->len)
            r->off = r->len = 0;
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EPIPE;
        r->len += (size_t)n;
    }
}

int lreader_until_done(lreader_t *r, uint64_t id, uint64_t *bytes, lresp_t *last)
{
    for (;;) {
        int rc = lreader_next(r, last);
        if (rc < 0)
            return rc;
        if (last->id != id && last->id != 0)
            continue;
        if (last->result == RES(OUTPUT) || last->result == RES(CHUNK))
            *bytes += last->data_len;
        if (last->done || last->id == 0)
            return 0;
    }
}
