/* tunnel_helpers.h - what the tunnel tests share: targets the test runs
 * itself (listeners and forked servers with a behaviour each) and a small
 * client side of the tunnel protocol that keeps both windows. */
#ifndef SA_TEST_TUNNEL_HELPERS_H
#define SA_TEST_TUNNEL_HELPERS_H

#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

/* The byte at offset off of a test stream: no short period, so a lost or
 * repeated block shows. */
static inline uint8_t pat(uint64_t off) { return (uint8_t)(off * 7 + (off >> 13) + (off >> 21)); }

static inline void pat_fill(uint8_t *buf, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = pat(off + i);
}

static inline int pat_check(const uint8_t *buf, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (buf[i] != pat(off + i))
            return 0;
    return 1;
}

/* A listener on 127.0.0.1 with a free port. */
static inline int listen_tcp(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0)
        FAIL("listen: %s", strerror(errno));
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

static inline int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0)
        FAIL("listen unix %s: %s", path, strerror(errno));
    return fd;
}

/* A port nothing listens on (bound, then closed). */
static inline int free_port(void)
{
    int port, fd = listen_tcp(&port);
    close(fd);
    return port;
}

static inline void write_all_fd(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(3);
        p += w;
        n -= (size_t)w;
    }
}

typedef enum srv_kind {
    SRV_ECHO,  /* echo until EOF, then close */
    SRV_SEND,  /* send n pattern bytes, then close */
    SRV_SINK,  /* read (slowly for the first slow bytes) until EOF, check the
                * pattern, answer "<count> ok|bad\n", close */
    SRV_BYE,   /* write "bye\n" and close at once */
    SRV_HOLD,  /* keep the connection open, reading nothing, until killed */
} srv_kind_t;

typedef struct srv_opts {
    srv_kind_t kind;
    uint64_t n;    /* SRV_SEND: bytes */
    uint64_t slow; /* SRV_SINK: the first this-many bytes are read slowly */
    int max_conns; /* accepted connections before the server exits (default 1) */
} srv_opts_t;

static inline void serve_one(int fd, const srv_opts_t *o)
{
    static uint8_t buf[256 * 1024];
    switch (o->kind) {
    case SRV_ECHO:
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0)
                break;
            write_all_fd(fd, buf, (size_t)n);
        }
        break;
    case SRV_SEND:
        for (uint64_t off = 0; off < o->n;) {
            size_t k = o->n - off < sizeof buf ? (size_t)(o->n - off) : sizeof buf;
            pat_fill(buf, off, k);
            write_all_fd(fd, buf, k);
            off += k;
        }
        break;
    case SRV_SINK: {
        uint64_t total = 0;
        int ok = 1;
        for (;;) {
            size_t want = total < o->slow ? 16384 : sizeof buf;
            ssize_t n = read(fd, buf, want);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            ok &= pat_check(buf, total, (size_t)n);
            total += (uint64_t)n;
            if (total < o->slow)
                usleep(2000);
        }
        char msg[64];
        int len = snprintf(msg, sizeof msg, "%llu %s\n", (unsigned long long)total,
                           ok ? "ok" : "bad");
        write_all_fd(fd, msg, (size_t)len);
        break;
    }
    case SRV_BYE: write_all_fd(fd, "bye\n", 4); break;
    case SRV_HOLD: pause(); break;
    }
    close(fd);
}

/* Serve on lfd in a child (each connection in a child of its own). */
static inline pid_t server_start(int lfd, const srv_opts_t *o)
{
    pid_t pid = fork();
    if (pid == 0) {
        int n = o->max_conns ? o->max_conns : 1;
        for (int i = 0; i < n; i++) {
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0)
                _exit(2);
            if (fork() == 0) {
                close(lfd);
                serve_one(fd, o);
                _exit(0);
            }
            close(fd);
        }
        while (wait(NULL) > 0)
            ;
        _exit(0);
    }
    close(lfd);
    return pid;
}

static inline void server_stop(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Peak RSS (VmHWM) in bytes. */
static inline long long proc_hwm(pid_t pid) { return proc_vm(pid, "VmHWM"); }

/* ------------------------------------------------------------ client side */

typedef struct tun {
    sa_client_t *c;
    uint64_t id;
    uint32_t agent_window, window;
    uint64_t sent_outstanding; /* our bytes not yet credited back */
    uint64_t received, credited; /* data received; credit granted in all (window included) */
    int eof;                    /* TunnelData.eof seen */
    Response *end;              /* the final response, kept */
    /* received data goes here when set */
    uint8_t *sink;
    size_t sink_len, sink_cap;
    int auto_credit;            /* credit everything received at once */
} tun_t;

static inline uint64_t tun_open_send(sa_client_t *c, const char *target, uint32_t window)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__OpenTunnel ot = SANDBOX__AGENT__V1__OPEN_TUNNEL__INIT;
    ot.target = (char *)target;
    ot.window = window;
    req.op_case = OP(OPEN_TUNNEL);
    req.open_tunnel = &ot;
    if (sa_client_send(c, &req) < 0)
        FAIL("send open_tunnel");
    return req.id;
}

/* Open and expect TunnelOpened. */
static inline void tun_open(tun_t *t, sa_client_t *c, const char *target, uint32_t window)
{
    memset(t, 0, sizeof *t);
    t->c = c;
    t->auto_credit = 1;
    t->id = tun_open_send(c, target, window);
    Response *r = recv_id(c, t->id);
    ASSERT_RESULT(r, TUNNEL_OPENED);
    ASSERT(!r->done);
    ASSERT_EQ(r->tunnel_opened->tunnel_id, t->id);
    ASSERT_GT(r->tunnel_opened->agent_window, 0);
    t->agent_window = r->tunnel_opened->agent_window;
    t->window = r->tunnel_opened->window;
    t->credited = t->window;
    sa_response_free(r);
}

/* Open and expect an Error; returns it. */
static inline Response *tun_open_err(sa_client_t *c, const char *target)
{
    uint64_t id = tun_open_send(c, target, 0);
    Response *r = recv_id(c, id);
    if (r->result_case != RES(ERROR))
        FAIL("open_tunnel %s: expected an error, got result %d", target, (int)r->result_case);
    ASSERT(r->done);
    return r;
}

static inline void tun_window(tun_t *t, uint32_t credit)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__TunnelWindow tw = SANDBOX__AGENT__V1__TUNNEL_WINDOW__INIT;
    tw.tunnel_id = t->id;
    tw.credit = credit;
    req.id = t->id;
    req.op_case = OP(TUNNEL_WINDOW);
    req.tunnel_window = &tw;
    if (sa_client_send(t->c, &req) < 0)
        FAIL("send tunnel_window");
    t->credited += credit;
}

/* Handle the tunnel's next response. Returns 0 while the tunnel is open,
 * 1 once its final response (kept in t->end) has arrived. */
static inline int tun_step(tun_t *t, int timeout_ms)
{
    Response *r = NULL;
    int rc = sa_client_recv_id(t->c, t->id, &r, timeout_ms);
    if (rc < 0)
        FAIL("tunnel %llu: recv: %s", (unsigned long long)t->id, strerror(-rc));
    if (r->done) {
        t->end = r;
        return 1;
    }
    ASSERT_RESULT(r, TUNNEL_DATA);
    const Sandbox__Agent__V1__TunnelData *td = r->tunnel_data;
    ASSERT(!t->eof);
    ASSERT_LE(td->credit, t->sent_outstanding);
    t->sent_outstanding -= td->credit;
    if (td->data.len) {
        t->received += td->data.len;
        /* The agent never sends beyond the credit it was given. */
        ASSERT_LE(t->received, t->credited);
        if (t->sink) {
            if (t->sink_len + td->data.len > t->sink_cap)
                FAIL("tunnel %llu: more data than expected", (unsigned long long)t->id);
            memcpy(t->sink + t->sink_len, td->data.data, td->data.len);
            t->sink_len += td->data.len;
        }
        if (t->auto_credit)
            tun_window(t, (uint32_t)td->data.len);
    }
    if (td->eof)
        t->eof = 1;
    sa_response_free(r);
    return 0;
}

/* Send data (in pieces within the agent's window, waiting for credit). */
static inline void tun_send(tun_t *t, const void *data, size_t n, int eof)
{
    const uint8_t *p = data;
    size_t piece = t->agent_window / 2;
    do {
        size_t k = n < piece ? n : piece;
        while (t->sent_outstanding + k > t->agent_window)
            if (tun_step(t, 30000))
                FAIL("tunnel %llu ended while sending", (unsigned long long)t->id);
        Request req = REQUEST_INIT;
        Sandbox__Agent__V1__TunnelSend ts = SANDBOX__AGENT__V1__TUNNEL_SEND__INIT;
        ts.tunnel_id = t->id;
        ts.data.data = (uint8_t *)p;
        ts.data.len = k;
        ts.eof = eof && k == n;
        req.id = t->id;
        req.op_case = OP(TUNNEL_SEND);
        req.tunnel_send = &ts;
        if (sa_client_send(t->c, &req) < 0)
            FAIL("send tunnel_send");
        t->sent_outstanding += k;
        p += k;
        n -= k;
    } while (n);
}

/* Run until the final response; returns it (TunnelClosed expected). */
static inline Response *tun_finish(tun_t *t)
{
    while (!t->end)
        tun_step(t, 30000);
    return t->end;
}

static inline void tun_free(tun_t *t)
{
    sa_response_free(t->end);
    free(t->sink);
    t->end = NULL;
    t->sink = NULL;
}

static inline void tun_sink(tun_t *t, size_t cap)
{
    t->sink = malloc(cap + 1);
    t->sink_cap = cap;
    t->sink_len = 0;
}

#endif
