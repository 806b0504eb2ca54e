/* tunnel.c - see tunnel.h.
 *
 * A multiplexed tunnel is a stream of its connection, answering the
 * OpenTunnel's id; the tunnel id is that request id. Target to client: the
 * stream's next() reads at most the client's credit from the target, and
 * only when the connection's queue has room, so a slow client leaves the
 * bytes in the kernel and the target blocks. Client to target: TunnelSend
 * data is written at once; what the target does not take waits in a buffer
 * of at most --tunnel-window bytes, which is also the credit the client
 * may have outstanding; written bytes are credited back in TunnelData. So
 * each tunnel costs at most its window in memory, and a stalled tunnel
 * stalls nothing else.
 *
 * A dedicated tunnel (Connect) is a stream only while its target is being
 * dialled, with the connection's input held; then the Ack is queued and the
 * connection's socket, with the bytes read after the Connect frame, is
 * handed to a relay (relay.h).
 *
 * This file: admission, the tunnel object, dialling, OpenTunnel and
 * Connect. The bytes of an open multiplexed tunnel: tunnel_io.c.
 */
#include "tunnel.h"
#include "tunnel_internal.h"

#include "config.h"
#include "conn.h"
#include "dial.h"
#include "errcode.h"
#include "fs.h"
#include "log.h"
#include "relay.h"
#include "target.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TUNNEL_DEFAULT_WINDOW (256u << 10)

struct ev_loop *tunnel_loop;
static tunnel_t *g_tunnels;
static unsigned g_count;
static target_rule_t g_rules[CONFIG_MAX_TUNNEL_ALLOW];
static int g_nrules;

static void t_destroy(stream_t *s);
const stream_ops_t tunnel_ops = {
    .name = "tunnel",
    .next = tunnel_io_next,
    .destroy = t_destroy,
};

unsigned tunnel_count(void) { return g_count + relay_count(); }

void tunnel_init(struct ev_loop *loop)
{
    char err[300];
    tunnel_loop = loop;
    g_nrules = 0;
    /* config_parse() checked every rule already. */
    for (int i = 0; i < g_config.n_tunnel_allow; i++)
        if (target_rule_parse(g_config.tunnel_allow[i], &g_rules[g_nrules], err, sizeof err) ==
            0)
            g_nrules++;
    dial_init(loop);
}

/* Connection failures are the target's state, not the request's fault. */
int tunnel_code_of(int neg_errno)
{
    switch (-neg_errno) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case EADDRNOTAVAIL:
    case EAGAIN: return CODE(UNAVAILABLE);
    default: return errcode_from_errno(neg_errno);
    }
}

/* ------------------------------------------------------------ admission */

static void rules_list(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < g_nrules && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", g_rules[i].text);
}

/* Everything checked before a tunnel exists: switched on, a valid and
 * allowed target, the user, the global limit. Answers and returns -1 on
 * refusal. */
static int admit(conn_t *c, const Request *req, const char *op, const char *text,
                 const char *user, tunnel_t *t, int *check_addr)
{
    char err[300];
    int rule;

    if (g_config.no_tunnels) {
        conn_send_error(c, req->id, CODE(PERMISSION_DENIED), EPERM,
                        "%s: tunnels are disabled on this agent (--no-tunnels)", op);
        return -1;
    }
    if (target_parse(text, &t->target, err, sizeof err) < 0) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), EINVAL, "%s: %s", op, err);
        return -1;
    }
    snprintf(t->text, sizeof t->text, "%s", text);
    int verdict = target_allows(g_rules, g_nrules, &t->target, &rule);
    if (verdict == TARGET_DENY) {
        char rules[1024];
        rules_list(rules, sizeof rules);
        conn_send_error(c, req->id, CODE(PERMISSION_DENIED), EACCES,
                        "%s: target '%s' is not allowed: no --tunnel-allow rule matches it "
                        "(rules: %s)",
                        op, text, rules);
        return -1;
    }
    *check_addr = verdict == TARGET_CHECK_ADDR;
    if (tunnel_count() >= g_config.max_tunnels) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), EMFILE,
                        "%s: %u tunnels are open, the agent's limit (--max-tunnels)", op,
                        tunnel_count());
        return -1;
    }
    if (fs_req_user(c, req->id, user, &t->user, &t->as_user) < 0)
        return -1;
    return 0;
}

static tunnel_t *tunnel_alloc(void)
{
    tunnel_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->fd = -1;
    t->base.ops = &tunnel_ops;
    ev_init(&t->rio, NULL);
    ev_init(&t->wio, NULL);
    return t;
}

static void tunnel_link(tunnel_t *t)
{
    SA_LIST_PUSH(g_tunnels, t, next, prev);
    g_count++;
}

static void t_destroy(stream_t *s)
{
    tunnel_t *t = (tunnel_t *)s;
    /* The dial, the watchers, then the descriptor, then memory. */
    dial_cancel(t->dial);
    ev_io_stop(tunnel_loop, &t->rio);
    ev_io_stop(tunnel_loop, &t->wio);
    if (t->fd >= 0)
        close(t->fd);
    free(t->ibuf);
    SA_LIST_UNLINK(g_tunnels, t, next, prev);
    g_count--;
    free(t);
}

/* ------------------------------------------------------------ dialling */

static void name_socket(tunnel_t *t)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(t->fd, (struct sockaddr *)&ss, &len) == 0)
        target_format_addr((struct sockaddr *)&ss, len, t->local, sizeof t->local);
    len = sizeof ss;
    if (getpeername(t->fd, (struct sockaddr *)&ss, &len) == 0)
        target_format_addr((struct sockaddr *)&ss, len, t->remote, sizeof t->remote);
    if (t->target.kind == TARGET_UNIX)
        snprintf(t->remote, sizeof t->remote, "%s", t->target.path);
}

static void connect_done(tunnel_t *t, int fd, int err, const char *msg)
{
    conn_t *c = t->base.conn;
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;
    relay_t *rl = NULL;

    if (fd >= 0 && !(rl = relay_new(tunnel_loop, fd, t->text))) {
        close(fd);
        err = -ENOMEM;
        msg = "out of memory";
    }
    if (!rl) {
        conn_send_error(c, t->base.id, tunnel_code_of(err), -err, "connect '%s': %s", t->text,
                        msg);
        conn_stream_end(c, &t->base);
        /* Still a framed connection: what the client sent next is parsed. */
        conn_hold_input(c, 0);
        return;
    }
    log_debug("conn %s: connect %s: dedicated from now on", conn_peer(c), t->text);
    r.result_case = RES(ACK);
    r.ack = &ack;
    conn_send(c, t->base.id, 1, &r);
    conn_stream_end(c, &t->base);
    /* The input stays held: after the Ack the socket is the relay's. */
    conn_handover(c, relay_start, rl);
}

static void on_dialled(void *arg, int fd, int err, const char *msg)
{
    tunnel_t *t = arg;
    t->dial = NULL;
    if (t->dedicated) {
        connect_done(t, fd, err, msg);
        return;
    }
    if (fd < 0) {
        t->fail_err = err;
        snprintf(t->msg, sizeof t->msg, "%s", msg);
        stream_wake(&t->base);
        return;
    }
    t->fd = fd;
    t->open = 1;
    name_socket(t);
    log_debug("tunnel %llu: %s open (%s -> %s)", (unsigned long long)t->base.id, t->text,
              t->local, t->remote);
    tunnel_io_open(t);
}

static tunnel_t *start(conn_t *c, const Request *req, const char *op, const char *text,
                       const char *user, int dedicated)
{
    tunnel_t *t = tunnel_alloc();
    int check_addr = 0, rc;
    if (!t) {
        conn_send_errno(c, req->id, -ENOMEM, "%s: out of memory", op);
        return NULL;
    }
    if (admit(c, req, op, text, user, t, &check_addr) < 0) {
        free(t);
        return NULL;
    }
    t->dedicated = dedicated;
    tunnel_link(t);
    if ((rc = conn_stream_add(c, &t->base, req->id)) < 0) {
        conn_send_errno(c, req->id, rc == -EEXIST ? -EINVAL : rc, "%s: cannot start: %s", op,
                        rc == -EMFILE ? "too many requests in flight" : strerror(-rc));
        t_destroy(&t->base);
        return NULL;
    }
    t->dial = dial_start(&t->target, t->as_user ? &t->user : NULL, g_rules, g_nrules,
                         check_addr, on_dialled, t);
    if (!t->dial) {
        conn_send_errno(c, req->id, -ENOMEM, "%s: out of memory", op);
        conn_stream_end(c, &t->base);
        return NULL;
    }
    return t;
}

void tunnel_handle_open(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__OpenTunnel *ot = req->open_tunnel;
    unsigned mine = 0;
    for (tunnel_t *t = g_tunnels; t; t = t->next)
        mine += t->base.conn == c && !t->dedicated;
    if (mine >= g_config.max_tunnels_per_conn) {
        conn_send_error(c, req->id, CODE(RESOURCE_EXHAUSTED), EMFILE,
                        "open_tunnel: %u tunnels are open on this connection, the limit "
                        "(--max-tunnels-per-conn)",
                        mine);
        return;
    }
    tunnel_t *t = start(c, req, "open_tunnel", ot->target, ot->user, 0);
    if (!t)
        return;
    t->window = ot->window ? ot->window : TUNNEL_DEFAULT_WINDOW;
    t->window = SA_MIN(t->window, g_config.max_tunnel_window);
    t->credit = t->window;
    t->agent_window = g_config.tunnel_window;
}

void tunnel_handle_connect(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Connect *cn = req->connect;
    if (conn_in_flight(c)) {
        conn_send_error(c, req->id, CODE(FAILED_PRECONDITION), EBUSY,
                        "connect: %u other requests are in flight on this connection; "
                        "Connect needs a connection of its own",
                        conn_in_flight(c));
        return;
    }
    /* Nothing after the Connect frame is parsed: it is the target's if the
     * connect succeeds. (The dial reports later, never from start().) */
    if (start(c, req, "connect", cn->target, cn->user, 1))
        conn_hold_input(c, 1);
}

void tunnel_close_all(void) { relay_close_all(); }
