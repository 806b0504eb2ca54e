/* dial.c - see dial.h.
 *
 * A dial lives until its callback has run or it is cancelled. Work on a
 * thread (a name lookup, a unix connect) owns the dial while it runs; a
 * dial cancelled meanwhile is marked and freed by the job's completion on
 * the loop. Resolver threads are started on demand, up to DIAL_THREADS, so
 * one slow name server delays at most that many lookups and never a file
 * operation.
 * Errors: as dial.h: failures reach the callback, once, through finish(). */
#include "dial.h"

#include "fsworker.h"
#include "jobq.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DIAL_THREADS 4
#define DIAL_MAX_ADDRS 16

struct dial {
    target_t t;
    user_id_t user;
    int as_user;
    const target_rule_t *rules;
    int nrules, check_addr;
    dial_done_fn *cb;
    void *arg;

    ev_io wio;       /* a TCP connect in progress */
    ev_timer timer;  /* the deadline; also defers an immediate outcome */
    int fd;
    int busy;        /* a thread owns the dial */
    int cancelled;
    int finished;    /* outcome ready, waiting for the timer to report it */
    int starting;    /* inside dial_start(): outcomes wait for the timer */

    struct sockaddr_storage addrs[DIAL_MAX_ADDRS];
    socklen_t addrlens[DIAL_MAX_ADDRS];
    int n_addrs, next_addr;

    int err;
    char msg[300];
    char tried[200]; /* addresses that failed alike so far, for the message */
    int tried_err;

    fsw_job_t fjob;  /* unix connect */
    int gai_rc;      /* resolver result */
    jobq_node_t qnode; /* on the resolvers' queue */
};

static struct ev_loop *g_loop;
/* cancelled, for a dial a resolver owns: the loop sets it, the resolver
 * reads it before the lookup. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static jobq_fn resolve_run, resolve_done;
/* Resolver threads start on demand and stay. */
static jobq_t g_resolvers = {
    .name = "resolver",
    .run = resolve_run,
    .done = resolve_done,
    .max_threads = DIAL_THREADS,
    .stack_size = 256 * 1024,
    .weak = 1, /* not a reason for the loop to keep running on its own */
};

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void on_writable(struct ev_loop *loop, ev_io *w, int revents);
static void try_next(dial_t *d);
static void dial_begin(dial_t *d);

static void dial_free(dial_t *d)
{
    ev_timer_stop(g_loop, &d->timer);
    ev_io_stop(g_loop, &d->wio);
    if (d->fd >= 0)
        close(d->fd);
    free(d);
}

static void report(dial_t *d)
{
    int fd = d->fd;
    d->fd = -1;
    d->cb(d->arg, d->err ? -1 : fd, d->err, d->msg);
    dial_free(d);
}

/* Report the outcome now, or from the timer when inside dial_start(): the
 * caller must see dial_start() return first. */
static void finish(dial_t *d, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void finish(dial_t *d, int err, const char *fmt, ...)
{
    ev_io_stop(g_loop, &d->wio);
    d->err = err;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof d->msg, fmt, ap);
        va_end(ap);
    }
    d->finished = 1;
    ev_timer_stop(g_loop, &d->timer);
    if (!d->starting) {
        report(d);
        return;
    }
    ev_timer_set(&d->timer, 0., 0.);
    ev_timer_start(g_loop, &d->timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    dial_t *d = w->data;
    if (!d->finished) {
        /* The deadline. A lookup still running on a thread finds the dial
         * cancelled when it returns and frees it. */
        char where[200];
        snprintf(where, sizeof where, "%.199s", d->msg[0] ? d->msg : "resolving the name");
        if (d->fd >= 0) {
            close(d->fd);
            d->fd = -1;
        }
        snprintf(d->msg, sizeof d->msg, "%s: no answer within %.0f s", where, DIAL_TIMEOUT_S);
        d->err = -ETIMEDOUT;
        ev_io_stop(g_loop, &d->wio);
        d->cb(d->arg, -1, d->err, d->msg);
        if (d->busy) {
            pthread_mutex_lock(&g_mu);
            d->cancelled = 1;
            pthread_mutex_unlock(&g_mu);
        } else {
            dial_free(d);
        }
        return;
    }
    report(d);
}

/* ------------------------------------------------------------ tcp */

static void add_addr(dial_t *d, const struct sockaddr *sa, socklen_t len)
{
    if (d->n_addrs == DIAL_MAX_ADDRS || len > sizeof d->addrs[0])
        return;
    memcpy(&d->addrs[d->n_addrs], sa, len);
    d->addrlens[d->n_addrs++] = len;
}

/* The message names every address that failed the same way. */
static void failed_at(dial_t *d, const char *where)
{
    size_t l = strlen(d->tried);
    if (l && d->tried_err != d->err)
        l = 0;
    d->tried_err = d->err;
    snprintf(d->tried + l, sizeof d->tried - l, "%s%s", l ? ", " : "", where);
    snprintf(d->msg, sizeof d->msg, "connect to %s: %s", d->tried, strerror(-d->err));
}

static void try_next(dial_t *d)
{
    while (d->next_addr < d->n_addrs) {
        int i = d->next_addr++;
        const struct sockaddr *sa = (const struct sockaddr *)&d->addrs[i];
        char where[80];
        target_format_addr(sa, d->addrlens[i], where, sizeof where);
        snprintf(d->msg, sizeof d->msg, "connect to %s", where);
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            d->err = -errno;
            snprintf(d->msg, sizeof d->msg, "connect to %s: socket: %s", where,
                     strerror(errno));
            continue;
        }
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        if (connect(fd, sa, d->addrlens[i]) == 0) {
            d->fd = fd;
            finish(d, 0, NULL);
            return;
        }
        if (errno == EINPROGRESS) {
            d->fd = fd;
            ev_io_set(&d->wio, fd, EV_WRITE);
            ev_io_start(g_loop, &d->wio);
            return;
        }
        d->err = -errno;
        failed_at(d, where);
        close(fd);
    }
    finish(d, d->err ? d->err : -ECONNREFUSED, NULL);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    dial_t *d = w->data;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    ev_io_stop(g_loop, &d->wio);
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (!soerr) {
        finish(d, 0, NULL);
        return;
    }
    d->err = -soerr;
    {
        char where[80];
        int i = d->next_addr - 1;
        target_format_addr((struct sockaddr *)&d->addrs[i], d->addrlens[i], where, sizeof where);
        failed_at(d, where);
    }
    close(d->fd);
    d->fd = -1;
    try_next(d);
}

/* ------------------------------------------------------------ resolver */

static void resolve_run(jobq_node_t *n)
{
    dial_t *d = SA_CONTAINER_OF(n, dial_t, qnode);
    pthread_mutex_lock(&g_mu);
    int skip = d->cancelled;
    pthread_mutex_unlock(&g_mu);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    char port[8];
    snprintf(port, sizeof port, "%u", d->t.port);
    /* A dial cancelled while queued is not looked up. */
    d->gai_rc = skip ? EAI_CANCELED : getaddrinfo(d->t.host, port, &hints, &res);
    if (d->gai_rc == 0) {
        for (struct addrinfo *p = res; p; p = p->ai_next)
            add_addr(d, p->ai_addr, p->ai_addrlen);
        freeaddrinfo(res);
    } else if (d->gai_rc == EAI_SYSTEM) {
        d->err = -errno;
    }
}

static void resolved(dial_t *d)
{
    d->busy = 0;
    if (d->cancelled) {
        dial_free(d);
        return;
    }
    switch (d->gai_rc) {
    case 0: break;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
    case EAI_ADDRFAMILY:
        finish(d, -ENOENT, "resolve '%s': %s", d->t.host, gai_strerror(d->gai_rc));
        return;
    case EAI_AGAIN:
        finish(d, -EAGAIN, "resolve '%s': %s", d->t.host, gai_strerror(d->gai_rc));
        return;
    case EAI_MEMORY: finish(d, -ENOMEM, "resolve '%s': out of memory", d->t.host); return;
    default:
        finish(d, d->err ? d->err : -EIO, "resolve '%s': %s", d->t.host,
               d->gai_rc == EAI_SYSTEM ? strerror(-d->err) : gai_strerror(d->gai_rc));
        return;
    }
    if (d->check_addr) {
        /* Keep only the addresses a rule allows: the name was allowed
         * only through what it resolves to. */
        int kept = 0, rule;
        for (int i = 0; i < d->n_addrs; i++) {
            if (target_allows_addr(d->rules, d->nrules, (struct sockaddr *)&d->addrs[i],
                                   &rule)) {
                if (kept != i) {
                    d->addrs[kept] = d->addrs[i];
                    d->addrlens[kept] = d->addrlens[i];
                }
                kept++;
            }
        }
        if (!kept && d->n_addrs) {
            char where[80];
            target_format_addr((struct sockaddr *)&d->addrs[0], d->addrlens[0], where,
                               sizeof where);
            finish(d, -EACCES,
                   "'%s' resolves to %s%s, which no --tunnel-allow rule allows", d->t.host,
                   where, d->n_addrs > 1 ? " (and others)" : "");
            return;
        }
        d->n_addrs = kept;
    }
    if (!d->n_addrs) {
        finish(d, -ENOENT, "resolve '%s': no address", d->t.host);
        return;
    }
    try_next(d);
}

static void resolve_done(jobq_node_t *n) { resolved(SA_CONTAINER_OF(n, dial_t, qnode)); }

static int resolve_submit(dial_t *d)
{
    int rc;
    d->busy = 1;
    if ((rc = jobq_submit(&g_resolvers, &d->qnode)) < 0)
        d->busy = 0;
    return rc;
}

/* ------------------------------------------------------------ unix */

/* On a file worker, with the user's file-system identity: the path walk
 * and the socket's write permission are checked as that user. */
static void unix_run(fsw_job_t *j)
{
    dial_t *d = SA_CONTAINER_OF(j, dial_t, fjob);
    struct sockaddr_un sa;
    socklen_t len;
    size_t plen = strlen(d->t.path);

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, d->t.path, plen);
    if (d->t.path[0] == '@')
        sa.sun_path[0] = 0; /* abstract: no NUL after the name */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                      (d->t.path[0] == '@' ? 0 : 1));
    d->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0) {
        d->err = -errno;
        return;
    }
    /* A unix connect completes at once, or fails with EAGAIN when the
     * listener's backlog is full; it never leaves a connect in progress. */
    if (connect(d->fd, (struct sockaddr *)&sa, len) < 0) {
        d->err = -errno;
        close(d->fd);
        d->fd = -1;
    }
}

static void unix_done(fsw_job_t *j)
{
    dial_t *d = SA_CONTAINER_OF(j, dial_t, fjob);
    d->busy = 0;
    if (d->cancelled) {
        dial_free(d);
        return;
    }
    if (j->id_err)
        finish(d, j->id_err, "connect to %s: cannot act as user %u: %s", d->t.path,
               (unsigned)d->user.uid, strerror(-j->id_err));
    else if (d->err)
        finish(d, d->err, "connect to %s: %s%s", d->t.path, strerror(-d->err),
               d->err == -EAGAIN ? " (the listener's backlog is full)" : "");
    else
        finish(d, 0, NULL);
}

/* ------------------------------------------------------------ api */

void dial_init(struct ev_loop *loop)
{
    g_loop = loop;
    jobq_init(&g_resolvers, loop); /* no thread yet: it cannot fail */
}

dial_t *dial_start(const target_t *t, const user_id_t *user, const target_rule_t *rules,
                   int nrules, int check_addr, dial_done_fn *cb, void *arg)
{
    dial_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->t = *t;
    if (user) {
        d->user = *user;
        d->as_user = 1;
    }
    d->rules = rules;
    d->nrules = nrules;
    d->check_addr = check_addr;
    d->cb = cb;
    d->arg = arg;
    d->fd = -1;
    ev_init(&d->wio, on_writable);
    d->wio.data = d;
    ev_timer_init(&d->timer, on_timer, DIAL_TIMEOUT_S, 0.);
    d->timer.data = d;
    ev_timer_start(g_loop, &d->timer);
    d->starting = 1;
    dial_begin(d);
    d->starting = 0;
    return d;
}

/* The first step of a dial; its outcome, if any, waits for the timer. */
static void dial_begin(dial_t *d)
{
    const target_t *t = &d->t;

    if (t->kind == TARGET_UNIX) {
        d->busy = 1;
        d->fjob.run = unix_run;
        d->fjob.done = unix_done;
        d->fjob.user = d->as_user ? &d->user : NULL;
        snprintf(d->msg, sizeof d->msg, "connect to %s", t->path);
        fsw_submit(&d->fjob); /* last: done() may already have run */
        return;
    }
    if (t->literal) {
        add_addr(d, (const struct sockaddr *)&t->addr,
                 t->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in));
    } else if (!strcasecmp(t->host, "localhost")) {
        /* localhost is the loopback address (RFC 6761), IPv4 first: no
         * lookup, and no /etc/hosts read on the loop. */
        struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(t->port)};
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(t->port)};
        a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a6.sin6_addr = in6addr_loopback;
        add_addr(d, (struct sockaddr *)&a4, sizeof a4);
        add_addr(d, (struct sockaddr *)&a6, sizeof a6);
    } else {
        int rc = resolve_submit(d);
        if (rc < 0)
            finish(d, rc, "resolve '%s': cannot start a resolver thread: %s", t->host,
                   strerror(-rc));
        else
            snprintf(d->msg, sizeof d->msg, "resolving '%s'", t->host);
        return;
    }
    if (d->check_addr) {
        /* A literal address or localhost: judged here, as a lookup's
         * result would be. */
        d->busy = 0;
        d->gai_rc = 0;
        resolved(d);
        return;
    }
    try_next(d);
    return;
}

void dial_cancel(dial_t *d)
{
    if (!d)
        return;
    if (d->busy) {
        /* A thread owns it: stop what the loop watches, free on return. */
        pthread_mutex_lock(&g_mu);
        d->cancelled = 1;
        pthread_mutex_unlock(&g_mu);
        ev_timer_stop(g_loop, &d->timer);
        ev_io_stop(g_loop, &d->wio);
        return;
    }
    dial_free(d);
}
