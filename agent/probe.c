/* probe.c - see probe.h.
 *
 * One attempt at a time: an attempt starts on the interval timer, ends with
 * a result (or its timeout), and the next is due interval_ms after the
 * previous one started (at once when an attempt took longer). An exec
 * probe's child is started inline (a vfork-style spawn: the loop waits only
 * for the exec, as for a lone start) so its child watcher is in place
 * before the loop can reap it; a child that outlives its timeout is killed
 * and the next attempt waits until it is reaped.
 * Errors: probe_check returns a negative errno with a message; probe_new
 * returns NULL only for want of memory; a probe's failures are its results
 * (the callback with ok 0 and why).
 */
#include "probe.h"

#include "log.h"
#include "spawn.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_READY_INTERVAL_MS 100
#define DEFAULT_HEALTH_INTERVAL_MS 1000
#define DEFAULT_TIMEOUT_MS 1000
#define MIN_INTERVAL_MS 10
#define MAX_MS (24u * 3600 * 1000)
#define PATTERN_MAX 4096
#define HTTP_PATH_MAX 2048
#define HTTP_REPLY_MAX 512
#define PROBE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum pkind { PK_TCP, PK_HTTP, PK_EXEC, PK_OUTPUT };

struct probe {
    struct ev_loop *loop;
    enum pkind kind;
    int active;     /* started and not stopped */
    int attempting; /* an attempt is in flight */
    uint32_t interval_ms, timeout_ms, initial_delay_ms;
    ev_timer t_next, t_timeout;
    uint64_t attempt_start; /* ev_now of the attempt, ms */
    probe_result_fn *cb;
    void *arg;
    char desc[160];
    /* tcp, http */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int fd;
    ev_io io;
    char *request; /* http: the whole request */
    size_t req_len, req_off;
    char reply[HTTP_REPLY_MAX + 1];
    size_t reply_len;
    uint32_t status_min, status_max;
    /* exec */
    char **argv;
    char **envp;
    char *cwd;
    user_id_t user;
    int set_user;
    ev_child child;
    pid_t pid; /* a child not reaped yet, or 0 */
    /* output */
    char *pattern;
    size_t plen;
    int line_prefix;
    char *tail; /* contains: the last plen-1 bytes seen */
    size_t tail_len;
    long matched; /* line_prefix: bytes of the prefix matched on this line, -1 none */
    int matched_once;
};

static int g_null = -1;

static uint32_t ms_or(uint32_t v, uint32_t dflt) { return v ? (v > MAX_MS ? MAX_MS : v) : dflt; }

/* An IP literal (no name lookups on the loop) or "localhost"; "" is
 * 127.0.0.1. */
static int parse_host(const char *host, uint32_t port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (!host || !host[0] || !strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        return 0;
    }
    const char *h = host;
    char buf[64];
    size_t hl = strlen(host);
    if (h[0] == '[' && hl > 2 && hl < sizeof buf && h[hl - 1] == ']') {
        memcpy(buf, h + 1, hl - 2);
        buf[hl - 2] = 0;
        h = buf;
    }
    if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return -EINVAL;
}

static int bad_text(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

int probe_check(const Probe *cfg, int ready, char *err, size_t n)
{
    const char *what = ready ? "ready probe" : "health probe";
    struct sockaddr_storage ss;
    socklen_t len;

    switch (cfg->check_case) {
    case SANDBOX__AGENT__V1__PROBE__CHECK_TCP:
        if (!cfg->tcp->port || cfg->tcp->port > 65535)
            goto bad_port;
        if (parse_host(cfg->tcp->host, cfg->tcp->port, &ss, &len) < 0)
            goto bad_host;
        break;
    case SANDBOX__AGENT__V1__PROBE__CHECK_HTTP: {
        const Sandbox__Agent__V1__HttpProbe *h = cfg->http;
        if (!h->port || h->port > 65535)
            goto bad_port;
        if (parse_host(h->host, h->port, &ss, &len) < 0)
            goto bad_host;
        if (h->path && h->path[0] &&
            (h->path[0] != '/' || strchr(h->path, ' ') || bad_text(h->path) ||
             strlen(h->path) > HTTP_PATH_MAX)) {
            snprintf(err, n, "%s: http path '%s' must start with '/', have no spaces or "
                             "control characters and be at most %d bytes",
                     what, h->path, HTTP_PATH_MAX);
            return -EINVAL;
        }
        if (bad_text(h->host_header) || (h->host_header && strlen(h->host_header) > 255)) {
            snprintf(err, n, "%s: http host_header has control characters or is too long", what);
            return -EINVAL;
        }
        if ((h->status_min || h->status_max) &&
            (h->status_min < 100 || h->status_max > 599 || h->status_min > h->status_max)) {
            snprintf(err, n, "%s: http status range %u..%u is not within 100..599", what,
                     h->status_min, h->status_max);
            return -EINVAL;
        }
        break;
    }
    case SANDBOX__AGENT__V1__PROBE__CHECK_EXEC:
        if (!cfg->exec->command || !cfg->exec->command[0]) {
            snprintf(err, n, "%s: exec command is empty", what);
            return -EINVAL;
        }
        break;
    case SANDBOX__AGENT__V1__PROBE__CHECK_OUTPUT: {
        const Sandbox__Agent__V1__OutputProbe *o = cfg->output;
        int has_c = o->contains && o->contains[0], has_p = o->line_prefix && o->line_prefix[0];
        if (!ready) {
            snprintf(err, n, "%s: an output probe can only be a ready probe", what);
            return -EINVAL;
        }
        if (has_c == has_p) {
            snprintf(err, n, "%s: an output probe needs exactly one of contains and line_prefix",
                     what);
            return -EINVAL;
        }
        if (strlen(has_c ? o->contains : o->line_prefix) > PATTERN_MAX) {
            snprintf(err, n, "%s: output text is longer than %d bytes", what, PATTERN_MAX);
            return -EINVAL;
        }
        break;
    }
    default:
        snprintf(err, n, "%s: no check set (tcp, http, exec or output)", what);
        return -EINVAL;
    }
    return 0;
bad_port:
    snprintf(err, n, "%s: port must be 1..65535", what);
    return -EINVAL;
bad_host:
    snprintf(err, n, "%s: host must be an IPv4 or IPv6 address (no name lookups)", what);
    return -EINVAL;
}

/* ------------------------------------------------------------ attempts */

static void attempt_close(probe_t *pr)
{
    /* The watcher stops before its fd closes. */
    ev_io_stop(pr->loop, &pr->io);
    ev_timer_stop(pr->loop, &pr->t_timeout);
    if (pr->fd >= 0) {
        close(pr->fd);
        pr->fd = -1;
    }
}

static void schedule_next(probe_t *pr)
{
    double now_ms = ev_now(pr->loop) * 1000.0;
    double due = (double)pr->attempt_start + pr->interval_ms - now_ms;
    ev_timer_stop(pr->loop, &pr->t_next);
    ev_timer_set(&pr->t_next, due > 0 ? due / 1000.0 : 0, 0);
    ev_timer_start(pr->loop, &pr->t_next);
}

/* An attempt ended: report it, then the next is due. cb may stop or free
 * the probe, so nothing touches pr after it. */
static void attempt_done(probe_t *pr, int ok, const char *err)
{
    attempt_close(pr);
    pr->attempting = 0;
    if (pr->active)
        schedule_next(pr);
    pr->cb(pr->arg, ok, err);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    probe_t *pr = w->data;
    char err[200];
    snprintf(err, sizeof err, "%s: no answer within %u ms", pr->desc, pr->timeout_ms);
    if (pr->kind == PK_EXEC && pr->pid > 0)
        kill(-pr->pid, SIGKILL); /* reaped by on_child; the next attempt waits for that */
    attempt_done(pr, 0, err);
}

static void http_result(probe_t *pr)
{
    char err[300];
    unsigned code = 0;
    char *eol = strstr(pr->reply, "\r\n");
    if (eol)
        *eol = 0;
    if (sscanf(pr->reply, "HTTP/%*u.%*u %u", &code) != 1 || code < 100 || code > 999) {
        snprintf(err, sizeof err, "%s: not an HTTP status line: '%.80s'", pr->desc, pr->reply);
        attempt_done(pr, 0, err);
        return;
    }
    if (code < pr->status_min || code > pr->status_max) {
        snprintf(err, sizeof err, "%s: status %u (healthy is %u..%u)", pr->desc, code,
                 pr->status_min, pr->status_max);
        attempt_done(pr, 0, err);
        return;
    }
    attempt_done(pr, 1, NULL);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    probe_t *pr = w->data;
    char err[300];
    int soerr = 0;
    socklen_t sl = sizeof soerr;

    if (pr->req_off == 0 && pr->reply_len == 0 && (w->events & EV_WRITE)) {
        /* The connect finished, one way or the other. */
        if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            snprintf(err, sizeof err, "%s: connect: %s", pr->desc, strerror(soerr));
            attempt_done(pr, 0, err);
            return;
        }
        if (pr->kind == PK_TCP) {
            attempt_done(pr, 1, NULL);
            return;
        }
    }
    if (pr->req_off < pr->req_len) {
        ssize_t n = send(pr->fd, pr->request + pr->req_off, pr->req_len - pr->req_off,
                         MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, sizeof err, "%s: send: %s", pr->desc, strerror(errno));
            attempt_done(pr, 0, err);
            return;
        }
        if (n > 0)
            pr->req_off += (size_t)n;
        if (pr->req_off == pr->req_len) {
            ev_io_stop(loop, w);
            ev_io_set(w, pr->fd, EV_READ);
            ev_io_start(loop, w);
        }
        return;
    }
    ssize_t n = util_read(pr->fd, pr->reply + pr->reply_len, HTTP_REPLY_MAX - pr->reply_len);
    if (n < 0) {
        if (n == -EAGAIN)
            return;
        snprintf(err, sizeof err, "%s: read: %s", pr->desc, strerror((int)-n));
        attempt_done(pr, 0, err);
        return;
    }
    pr->reply_len += (size_t)n;
    pr->reply[pr->reply_len] = 0;
    /* The status line is all we need. */
    if (n == 0 || strstr(pr->reply, "\r\n") || pr->reply_len == HTTP_REPLY_MAX) {
        if (pr->reply_len == 0) {
            snprintf(err, sizeof err, "%s: the connection closed with no reply", pr->desc);
            attempt_done(pr, 0, err);
            return;
        }
        http_result(pr);
    }
}

static void start_socket(probe_t *pr)
{
    char err[300];
    pr->fd = socket(pr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (pr->fd < 0) {
        snprintf(err, sizeof err, "%s: socket: %s", pr->desc, strerror(errno));
        attempt_done(pr, 0, err);
        return;
    }
    pr->req_off = 0;
    pr->reply_len = 0;
    pr->reply[0] = 0;
    if (connect(pr->fd, (struct sockaddr *)&pr->addr, pr->addr_len) < 0 && errno != EINPROGRESS) {
        snprintf(err, sizeof err, "%s: connect: %s", pr->desc, strerror(errno));
        attempt_done(pr, 0, err);
        return;
    }
    ev_io_set(&pr->io, pr->fd, EV_WRITE);
    ev_io_start(pr->loop, &pr->io);
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    probe_t *pr = w->data;
    int st = w->rstatus;
    char err[300];
    ev_child_stop(loop, w);
    pr->pid = 0;
    if (!pr->attempting)
        return; /* it had timed out already */
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        attempt_done(pr, 1, NULL);
        return;
    }
    if (WIFSIGNALED(st))
        snprintf(err, sizeof err, "%s: killed by signal %d", pr->desc, WTERMSIG(st));
    else
        snprintf(err, sizeof err, "%s: exit %d", pr->desc, WEXITSTATUS(st));
    attempt_done(pr, 0, err);
}

static void start_exec(probe_t *pr)
{
    spawn_req_t r;
    enum spawn_stage stage = SPAWN_OK;
    pid_t pid;
    char err[300];
    int rc;

    if (pr->pid > 0) {
        snprintf(err, sizeof err, "%s: the previous attempt has not exited yet", pr->desc);
        attempt_done(pr, 0, err);
        return;
    }
    if (g_null < 0 && (g_null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
        snprintf(err, sizeof err, "%s: /dev/null: %s", pr->desc, strerror(errno));
        attempt_done(pr, 0, err);
        return;
    }
    memset(&r, 0, sizeof r);
    r.command = pr->argv[0];
    r.argv = pr->argv;
    r.envp = pr->envp;
    r.path = PROBE_PATH;
    r.cwd = pr->cwd;
    r.set_user = pr->set_user;
    r.uid = pr->user.uid;
    r.gid = pr->user.gid;
    r.n_groups = pr->user.n_groups;
    r.groups = pr->user.groups;
    r.fd_in = r.fd_out = r.fd_err = g_null;
    if ((rc = spawn_run(&r, &pid, &stage)) < 0) {
        snprintf(err, sizeof err, "%s: %s: %s", pr->desc, spawn_stage_name(stage),
                 strerror(-rc));
        attempt_done(pr, 0, err);
        return;
    }
    /* Before the loop runs again, so the loop cannot reap it unseen. */
    pr->pid = pid;
    ev_child_set(&pr->child, pid, 0);
    ev_child_start(pr->loop, &pr->child);
}

static void on_next(struct ev_loop *loop, ev_timer *w, int revents)
{
    probe_t *pr = w->data;
    if (!pr->active || pr->attempting)
        return;
    pr->attempting = 1;
    pr->attempt_start = (uint64_t)(ev_now(loop) * 1000.0);
    ev_timer_set(&pr->t_timeout, pr->timeout_ms / 1000.0, 0);
    ev_timer_start(loop, &pr->t_timeout);
    if (pr->kind == PK_EXEC)
        start_exec(pr);
    else
        start_socket(pr);
}

/* ------------------------------------------------------------ output */

static void output_match(probe_t *pr)
{
    pr->matched_once = 1;
    pr->active = 0;
    pr->cb(pr->arg, 1, NULL);
}

void probe_output(probe_t *pr, const uint8_t *data, size_t len)
{
    if (!pr || pr->kind != PK_OUTPUT || !pr->active || !len)
        return;
    if (pr->line_prefix) {
        for (size_t i = 0; i < len; i++) {
            if (pr->matched >= 0) {
                if ((uint8_t)pr->pattern[pr->matched] == data[i]) {
                    if ((size_t)++pr->matched == pr->plen) {
                        output_match(pr);
                        return;
                    }
                } else {
                    pr->matched = -1;
                }
            }
            if (data[i] == '\n')
                pr->matched = 0;
        }
        return;
    }
    /* contains: across the boundary with what came before, then within. */
    size_t keep = pr->plen - 1;
    if (pr->tail_len) {
        char buf[2 * PATTERN_MAX];
        size_t take = len < keep ? len : keep;
        memcpy(buf, pr->tail, pr->tail_len);
        memcpy(buf + pr->tail_len, data, take);
        if (memmem(buf, pr->tail_len + take, pr->pattern, pr->plen)) {
            output_match(pr);
            return;
        }
    }
    if (memmem(data, len, pr->pattern, pr->plen)) {
        output_match(pr);
        return;
    }
    if (!keep)
        return;
    if (len >= keep) {
        memcpy(pr->tail, data + len - keep, keep);
        pr->tail_len = keep;
    } else {
        size_t old = pr->tail_len + len > keep ? pr->tail_len + len - keep : 0;
        memmove(pr->tail, pr->tail + old, pr->tail_len - old);
        memcpy(pr->tail + pr->tail_len - old, data, len);
        pr->tail_len = pr->tail_len - old + len;
    }
}

/* ------------------------------------------------------------ lifetime */

static char *dup0(const char *s) { return strdup(s ? s : ""); }

static int setup_exec(probe_t *pr, const Sandbox__Agent__V1__ExecProbe *ex, const probe_env_t *env)
{
    size_t ne = 0;
    if (!(pr->argv = calloc(ex->n_args + 2, sizeof *pr->argv)) || !(pr->argv[0] = dup0(ex->command)))
        return -ENOMEM;
    for (size_t i = 0; i < ex->n_args; i++)
        if (!(pr->argv[i + 1] = dup0(ex->args[i])))
            return -ENOMEM;
    while (env && env->env && env->env[ne])
        ne++;
    if (!(pr->envp = calloc(ne + 3, sizeof *pr->envp)))
        return -ENOMEM;
    size_t k = 0;
    char home[300];
    snprintf(home, sizeof home, "HOME=%s", env && env->user ? env->user->home : "/");
    if (!(pr->envp[k++] = strdup("PATH=" PROBE_PATH)) || !(pr->envp[k++] = strdup(home)))
        return -ENOMEM;
    for (size_t i = 0; i < ne; i++)
        if (!(pr->envp[k++] = strdup(env->env[i])))
            return -ENOMEM;
    if (env && env->cwd && env->cwd[0] && !(pr->cwd = strdup(env->cwd)))
        return -ENOMEM;
    if (env && env->user)
        pr->user = *env->user;
    pr->set_user = env ? env->set_user : 0;
    ev_child_init(&pr->child, on_child, 0, 0);
    pr->child.data = pr;
    snprintf(pr->desc, sizeof pr->desc, "exec probe '%s'", ex->command);
    return 0;
}

/* The probe's address as text, for its description and Host header. */
static void addr_text(const probe_t *pr, char *host, size_t n)
{
    inet_ntop(pr->addr.ss_family,
              pr->addr.ss_family == AF_INET
                  ? (const void *)&((const struct sockaddr_in *)&pr->addr)->sin_addr
                  : (const void *)&((const struct sockaddr_in6 *)&pr->addr)->sin6_addr,
              host, (socklen_t)n);
}

static void setup_tcp(probe_t *pr, const Sandbox__Agent__V1__TcpProbe *t)
{
    char host[80];
    pr->kind = PK_TCP;
    parse_host(t->host, t->port, &pr->addr, &pr->addr_len);
    addr_text(pr, host, sizeof host);
    snprintf(pr->desc, sizeof pr->desc, "tcp probe %s port %u", host, t->port);
}

/* The whole request is made here, once. 0 or -ENOMEM. */
static int setup_http(probe_t *pr, const Sandbox__Agent__V1__HttpProbe *h)
{
    const char *path = h->path && h->path[0] ? h->path : "/";
    char host[80], hosthdr[300];
    pr->kind = PK_HTTP;
    parse_host(h->host, h->port, &pr->addr, &pr->addr_len);
    addr_text(pr, host, sizeof host);
    if (h->host_header && h->host_header[0])
        snprintf(hosthdr, sizeof hosthdr, "%s", h->host_header);
    else if (pr->addr.ss_family == AF_INET6)
        snprintf(hosthdr, sizeof hosthdr, "[%s]:%u", host, h->port);
    else
        snprintf(hosthdr, sizeof hosthdr, "%s:%u", host, h->port);
    pr->status_min = h->status_min ? h->status_min : 200;
    pr->status_max = h->status_max ? h->status_max : 399;
    size_t cap = strlen(path) + strlen(hosthdr) + 128;
    if (!(pr->request = malloc(cap)))
        return -ENOMEM;
    pr->req_len = (size_t)snprintf(pr->request, cap,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sandbox-agent "
                                   "probe\r\nConnection: close\r\n\r\n",
                                   path, hosthdr);
    snprintf(pr->desc, sizeof pr->desc, "http probe %s port %u %.60s", host, h->port, path);
    return 0;
}

/* 0, or -ENOMEM (an empty pattern too: probe_check refused it already). */
static int setup_output(probe_t *pr, const Sandbox__Agent__V1__OutputProbe *o)
{
    pr->kind = PK_OUTPUT;
    pr->line_prefix = !(o->contains && o->contains[0]);
    if (!(pr->pattern = dup0(pr->line_prefix ? o->line_prefix : o->contains)))
        return -ENOMEM;
    pr->plen = strlen(pr->pattern);
    if (!pr->plen || !(pr->tail = malloc(pr->plen)))
        return -ENOMEM;
    snprintf(pr->desc, sizeof pr->desc, "output probe %s '%.60s'",
             pr->line_prefix ? "line prefix" : "text", pr->pattern);
    return 0;
}

probe_t *probe_new(struct ev_loop *loop, const Probe *cfg, int ready, const probe_env_t *env,
                   probe_result_fn *cb, void *arg)
{
    probe_t *pr = calloc(1, sizeof *pr);
    int rc;
    if (!pr)
        return NULL;
    pr->loop = loop;
    pr->fd = -1;
    pr->cb = cb;
    pr->arg = arg;
    pr->interval_ms = ms_or(cfg->interval_ms, ready ? DEFAULT_READY_INTERVAL_MS
                                                    : DEFAULT_HEALTH_INTERVAL_MS);
    if (pr->interval_ms < MIN_INTERVAL_MS)
        pr->interval_ms = MIN_INTERVAL_MS;
    pr->timeout_ms = ms_or(cfg->timeout_ms, DEFAULT_TIMEOUT_MS);
    pr->initial_delay_ms = ms_or(cfg->initial_delay_ms, 0);
    ev_init(&pr->t_next, on_next);
    ev_init(&pr->t_timeout, on_timeout);
    ev_init(&pr->io, on_io);
    pr->t_next.data = pr->t_timeout.data = pr->io.data = pr;
    switch (cfg->check_case) {
    case SANDBOX__AGENT__V1__PROBE__CHECK_TCP: setup_tcp(pr, cfg->tcp); rc = 0; break;
    case SANDBOX__AGENT__V1__PROBE__CHECK_HTTP: rc = setup_http(pr, cfg->http); break;
    case SANDBOX__AGENT__V1__PROBE__CHECK_EXEC:
        pr->kind = PK_EXEC;
        rc = setup_exec(pr, cfg->exec, env);
        break;
    case SANDBOX__AGENT__V1__PROBE__CHECK_OUTPUT: rc = setup_output(pr, cfg->output); break;
    default: rc = -EINVAL; break;
    }
    if (rc < 0) {
        probe_free(pr);
        return NULL;
    }
    return pr;
}

void probe_start(probe_t *pr)
{
    probe_stop(pr);
    pr->active = 1;
    if (pr->kind == PK_OUTPUT) {
        pr->tail_len = 0;
        pr->matched = 0;
        return;
    }
    ev_timer_set(&pr->t_next, pr->initial_delay_ms / 1000.0, 0);
    ev_timer_start(pr->loop, &pr->t_next);
}

void probe_stop(probe_t *pr)
{
    if (!pr)
        return;
    pr->active = 0;
    pr->attempting = 0;
    ev_timer_stop(pr->loop, &pr->t_next);
    attempt_close(pr);
    if (pr->pid > 0) {
        /* Its exit is reaped by the agent's catch-all child watcher. */
        kill(-pr->pid, SIGKILL);
        ev_child_stop(pr->loop, &pr->child);
        pr->pid = 0;
    }
}

void probe_free(probe_t *pr)
{
    if (!pr)
        return;
    probe_stop(pr);
    util_strv_free(pr->argv);
    util_strv_free(pr->envp);
    free(pr->cwd);
    free(pr->request);
    free(pr->pattern);
    free(pr->tail);
    free(pr);
}

const char *probe_describe(const probe_t *pr) { return pr->desc; }
