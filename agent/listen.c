/* listen.c - see listen.h.
 * Errors: 0 or -errno with a message; accept failures are logged and
 * retried (EMFILE backs off). */
#include "listen.h"

#include "config.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "pb.h"
#include "target.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define ACCEPT_PER_TURN 64

typedef struct listener {
    ev_io io;
    ev_timer backoff; /* EMFILE: stop accepting for a moment */
    int fd;
    char kind[8];
    char name[160]; /* the bound address, for logs ("tcp:127.0.0.1:41234") */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix only */
    dev_t dev;      /* the socket file we created: removed only if still ours */
    ino_t ino;
    struct listener *next;
} listener_t;

static listener_t *g_listeners;
static int g_reserve_fd = -1; /* closed to accept-and-refuse on EMFILE */

/* Refuse a connection with one Error frame, written without blocking. */
static void refuse(int fd, int code, const char *msg)
{
    Response r = RESPONSE_INIT;
    Sandbox__Agent__V1__Error e = SANDBOX__AGENT__V1__ERROR__INIT;
    uint8_t *buf;
    size_t len;
    e.code = code;
    e.message = (char *)msg;
    r.result_case = RES(ERROR);
    r.error = &e;
    r.done = 1;
    if (frame_encode(&r.base, 0, FRAME_DEFAULT_MAX, &buf, &len) == 0) {
        if (write(fd, buf, len) < 0) {
            /* the peer is gone already; nothing to tell */
        }
        free(buf);
    }
    /* Closing a TCP socket with unread input sends a reset, which can make
     * the peer drop the error frame unread: end our side first and discard
     * what the client already sent (its Hello, typically). */
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 4; i++) {
        char sink[4096];
        if (read(fd, sink, sizeof sink) <= 0)
            break;
    }
    close(fd);
}

static void set_keepalive(int fd)
{
    int on = 1, idle = 30, intvl = 10, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

/* "host:port" for TCP (target_format_addr), the cid and port for vsock,
 * "unix" for a unix peer (named by its credentials later). */
static void peer_name(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    if (ss->ss_family == AF_INET || ss->ss_family == AF_INET6) {
        target_format_addr((const struct sockaddr *)ss, sizeof *ss, out, outlen);
    } else if (ss->ss_family == AF_VSOCK) {
        const struct sockaddr_vm *vm = (const struct sockaddr_vm *)ss;
        snprintf(out, outlen, "vsock cid=%u port=%u", vm->svm_cid, vm->svm_port);
    } else {
        snprintf(out, outlen, "unix");
    }
}

/* The address a listener actually bound (port 0 picks one), for the log. */
static void bound_name(listener_t *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[96];
    if (l->path[0]) {
        snprintf(l->name, sizeof l->name, "unix:%s", l->path);
        return;
    }
    if (getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(l->name, sizeof l->name, "%s:?", l->kind);
        return;
    }
    if (ss.ss_family == AF_VSOCK) {
        snprintf(l->name, sizeof l->name, "vsock:%u", ((struct sockaddr_vm *)&ss)->svm_port);
        return;
    }
    peer_name(&ss, addr, sizeof addr);
    snprintf(l->name, sizeof l->name, "%s:%s", l->kind, addr);
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
    listener_t *l = w->data;
    ev_io_start(loop, &l->io);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    listener_t *l = w->data;
    for (int i = 0; i < ACCEPT_PER_TURN; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        char peer[96];
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors or memory: take one connection with the
                 * reserve descriptor to tell it why, then pause accepting
                 * briefly instead of spinning on a listener that stays
                 * readable. */
                int e = errno;
                log_warn("accept on %s: %s; refusing connections for 100ms", l->name,
                         strerror(e));
                if (g_reserve_fd >= 0 && (e == EMFILE || e == ENFILE)) {
                    close(g_reserve_fd);
                    g_reserve_fd = -1;
                    int tmp = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (tmp >= 0)
                        refuse(tmp, CODE(RESOURCE_EXHAUSTED),
                               "the agent is out of file descriptors; try again later");
                    g_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                ev_io_stop(loop, &l->io);
                ev_timer_set(&l->backoff, 0.1, 0);
                ev_timer_start(loop, &l->backoff);
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("accept on %s: %s", l->name, strerror(errno));
            return;
        }
        if (conn_count() >= g_config.max_connections) {
            log_warn("connection on %s refused: %u connections open (--max-connections %u)",
                     l->name, conn_count(), g_config.max_connections);
            refuse(fd, CODE(RESOURCE_EXHAUSTED),
                   "too many connections: the agent's --max-connections limit is reached");
            continue;
        }
        /* Peers that have not authenticated hold at most their share of the
         * slots, each for --hello-timeout at most: the rest stay for clients
         * that authenticate. At the share, the one that has waited longest
         * makes room, so a client that sends its Hello promptly gets in
         * even while idle peers keep arriving. */
        if (g_config.token[0] && conn_count_unauthenticated() >= conn_max_unauthenticated())
            conn_evict_unauthenticated();
        if (strcmp(l->kind, "unix"))
            set_keepalive(fd);
        peer_name(&ss, peer, sizeof peer);
        conn_t *c = conn_new(loop, fd, l->kind, peer);
        /* For unix sockets the peer is "pid=.. uid=.. gid=.." (SO_PEERCRED):
         * who connected is worth a line at the default level. */
        if (c)
            log_info("conn %s (%s): accepted on %s", conn_peer(c), l->kind, l->name);
    }
}

/* An existing socket file is removed only when nothing answers on it, so a
 * second agent does not steal a live agent's socket. */
static int unix_stale(const char *path)
{
    struct stat st;
    struct sockaddr_un sa;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    /* Non-blocking: a live agent with a full backlog answers EAGAIN instead
     * of making us wait. Only "nobody listens" (ECONNREFUSED) proves the
     * file stale; EACCES and the rest leave it alone. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? errno : 0;
    close(fd);
    if (rc == 0 || rc == EAGAIN || rc == EINPROGRESS)
        return -EADDRINUSE;
    if (rc == ENOENT)
        return 0;
    if (rc != ECONNREFUSED)
        return -rc;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    log_info("unix socket '%s': removed a stale socket file nobody listens on", path);
    return 0;
}

static int open_unix(listener_t *l, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd = -1, rc, bound = 0;

    if (strlen(path) >= sizeof sa.sun_path || !path[0]) {
        snprintf(err, errlen, "unix socket path '%s': empty or longer than %zu bytes", path,
                 sizeof sa.sun_path - 1);
        return -ENAMETOOLONG;
    }
    if ((rc = unix_stale(path)) < 0) {
        snprintf(err, errlen, "unix socket path '%s': %s", path,
                 rc == -EADDRINUSE ? "another agent is listening there"
                 : rc == -EEXIST   ? "exists and is not a socket"
                                   : strerror(-rc));
        return rc;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        goto fail;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    /* Created with the final mode from the start: no window in which another
     * user could connect. */
    mode_t old = umask(0777 & ~g_config.socket_mode);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0) {
        if (errno == EADDRINUSE) {
            /* Another agent bound it between our check and our bind. */
            snprintf(err, errlen, "unix socket path '%s': another agent is listening there",
                     path);
            rc = -EADDRINUSE;
            goto out;
        }
        goto fail;
    }
    bound = 1;
    if (chmod(path, g_config.socket_mode) < 0)
        goto fail;
    if (g_config.socket_group) {
        /* A group name, else a numeric gid. getpwnam/getgrnam in a static
         * binary reach NSS only through /etc/group (see packaging/README). */
        struct group *gr = getgrnam(g_config.socket_group);
        char *end = NULL;
        unsigned long g = gr ? gr->gr_gid : strtoul(g_config.socket_group, &end, 10);
        if (!gr && (!end || *end || end == g_config.socket_group || g > 0xfffffffeUL)) {
            snprintf(err, errlen, "--socket-group '%s': no such group", g_config.socket_group);
            rc = -ENOENT;
            goto out;
        }
        if (chown(path, (uid_t)-1, (gid_t)g) < 0)
            goto fail;
    }
    if (listen(fd, 512) < 0)
        goto fail;
    if (lstat(path, &st) == 0) {
        l->dev = st.st_dev;
        l->ino = st.st_ino;
    }
    snprintf(l->path, sizeof l->path, "%s", path);
    l->fd = fd;
    return 0;
fail:
    rc = -errno;
    snprintf(err, errlen, "unix socket '%s': %s", path, strerror(errno));
out:
    /* A socket file we created and could not finish is not left behind. */
    if (bound)
        unlink(path);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int open_tcp(listener_t *l, const char *hostport, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints, *ai = NULL;
    int fd = -1, rc, on = 1;

    if (!colon || colon == hostport || !colon[1] || (size_t)(colon - hostport) >= sizeof host) {
        snprintf(err, errlen, "tcp address '%s': expected HOST:PORT", hostport);
        return -EINVAL;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || p - colon > 5) {
            snprintf(err, errlen, "tcp address '%s': port '%s' is not a number in [0, 65535]",
                     hostport, colon + 1);
            return -EINVAL;
        }
    }
    if (atoi(colon + 1) > 65535) {
        snprintf(err, errlen, "tcp address '%s': port '%s' is not a number in [0, 65535]",
                 hostport, colon + 1);
        return -EINVAL;
    }
    if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0) {
        snprintf(err, errlen, "tcp address '%s': %s", hostport, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 512) < 0)
        goto fail;
    freeaddrinfo(ai);
    l->fd = fd;
    return 0;
fail:
    rc = -errno;
    snprintf(err, errlen, "tcp '%s': %s", hostport, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}

static int open_vsock(listener_t *l, const char *portstr, char *err, size_t errlen)
{
    struct sockaddr_vm sa;
    char *end;
    unsigned long port = strtoul(portstr, &end, 10);
    int fd, rc;

    if (!*portstr || *end || portstr[0] == '-' || portstr[0] == '+' || port > 0xffffffffUL) {
        snprintf(err, errlen, "vsock address 'vsock:%s': expected vsock:PORT", portstr);
        return -EINVAL;
    }
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen,
                 "vsock:%lu: %s (this machine has no vsock transport; is the "
                 "vmw_vsock_virtio_transport module loaded?)",
                 port, strerror(errno));
        return rc;
    }
    memset(&sa, 0, sizeof sa);
    sa.svm_family = AF_VSOCK;
    sa.svm_cid = VMADDR_CID_ANY;
    sa.svm_port = (unsigned)port;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0) {
        rc = -errno;
        snprintf(err, errlen, "vsock:%lu: %s%s", port, strerror(errno),
                 errno == EADDRNOTAVAIL ? " (no vsock transport is loaded for guests)" : "");
        close(fd);
        return rc;
    }
    l->fd = fd;
    return 0;
}

size_t listen_describe(char *buf, size_t len)
{
    size_t o = 0;
    if (len)
        buf[0] = 0;
    for (listener_t *l = g_listeners; l && o < len; l = l->next) {
        int n = snprintf(buf + o, len - o, "%s%s", o ? ", " : "", l->name);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    return o < len ? o : len;
}

int listen_add(struct ev_loop *loop, const char *addr, char *err, size_t errlen)
{
    listener_t *l = calloc(1, sizeof *l);
    int rc;

    if (!l) {
        snprintf(err, errlen, "%s: out of memory", addr);
        return -ENOMEM;
    }
    l->fd = -1;
    if (!strncmp(addr, "unix:", 5)) {
        snprintf(l->kind, sizeof l->kind, "unix");
        rc = open_unix(l, addr + 5, err, errlen);
    } else if (!strncmp(addr, "tcp:", 4) || !strncmp(addr, "vsock:", 6)) {
        int tcp = addr[0] == 't';
        snprintf(l->kind, sizeof l->kind, tcp ? "tcp" : "vsock");
        if (!g_config.token[0] && !g_config.insecure) {
            snprintf(err, errlen,
                     "%s: refusing to listen on a network address without a token "
                     "(use --token-file, or --insecure to accept anyone who can connect)",
                     addr);
            rc = -EPERM;
        } else {
            rc = tcp ? open_tcp(l, addr + 4, err, errlen) : open_vsock(l, addr + 6, err, errlen);
        }
    } else {
        snprintf(err, errlen, "'%s': expected unix:PATH, tcp:HOST:PORT or vsock:PORT", addr);
        rc = -EINVAL;
    }
    if (rc < 0) {
        free(l);
        return rc;
    }
    if (g_reserve_fd < 0)
        g_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    bound_name(l);
    log_info("listening on %s", l->name);
    ev_io_init(&l->io, on_accept, l->fd, EV_READ);
    l->io.data = l;
    ev_init(&l->backoff, on_backoff);
    l->backoff.data = l;
    ev_io_start(loop, &l->io);
    /* Appended, so logs list the listeners in the order of the flags. */
    listener_t **tail = &g_listeners;
    while (*tail)
        tail = &(*tail)->next;
    *tail = l;
    return 0;
}

void listen_close_all(struct ev_loop *loop)
{
    while (g_listeners) {
        listener_t *l = g_listeners;
        g_listeners = l->next;
        ev_io_stop(loop, &l->io);
        ev_timer_stop(loop, &l->backoff);
        close(l->fd);
        /* Remove the socket file only if it is still the one we created: a
         * newer agent may have replaced it. */
        if (l->path[0]) {
            struct stat st;
            if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
                unlink(l->path);
        }
        free(l);
    }
    if (g_reserve_fd >= 0) {
        close(g_reserve_fd);
        g_reserve_fd = -1;
    }
}
