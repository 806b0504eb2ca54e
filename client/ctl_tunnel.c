/* ctl_tunnel.c - sandboxctl connect and forward: byte streams to a TCP port
 * or unix socket inside the guest, each over a dedicated connection to the
 * agent (Connect), like ssh -W and ssh -L. Each direction of a stream is
 * copied by its own thread with blocking I/O, so one side that does not
 * read never stalls the other direction. */
#include "ctl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define COPY_SIZE (128u * 1024)
#define FORWARD_MAX_SPECS 16
#define FORWARD_MAX_CONNS 512

/* Copy in to out until in ends, then pass the end on (a half-close where out
 * is a socket). Returns 0 at a clean end, -errno when either side failed. */
static int copy_until_eof(int in, int out)
{
    uint8_t *buf = malloc(COPY_SIZE);
    int rc = 0;
    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t n = read(in, buf, COPY_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        if ((rc = sa_write_all(out, buf, (size_t)n, 0)) < 0)
            break;
    }
    free(buf);
    if (rc == 0)
        shutdown(out, SHUT_WR);
    return rc;
}

/* A connection to the agent, with Hello, in dedicated mode to target. The
 * bytes already read past the Ack are written to out. Returns the socket,
 * or -1 with the reason in err. */
static int dedicated(ctl_t *ctl, const char *target, int out, char *err, size_t errlen)
{
    char e[512];
    uint8_t *rest = NULL;
    size_t rest_len = 0;
    sa_client_t *cli = sa_client_connect(ctl->addr, e, sizeof e);
    if (!cli) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    if (sa_client_hello(cli, ctl->token, "sandboxctl", 0, e, sizeof e) < 0 ||
        sa_client_dedicate(cli, target, &rest, &rest_len, e, sizeof e) < 0) {
        snprintf(err, errlen, "%s", e);
        sa_client_close(cli);
        return -1;
    }
    int fd = dup(sa_client_fd(cli));
    sa_client_close(cli);
    if (fd < 0) {
        snprintf(err, errlen, "dup: %s", strerror(errno));
        free(rest);
        return -1;
    }
    if (rest_len && sa_write_all(out, rest, rest_len, 0) < 0) {
        snprintf(err, errlen, "write: %s", strerror(errno));
        free(rest);
        close(fd);
        return -1;
    }
    free(rest);
    return fd;
}

/* A bare port is tcp:localhost:PORT, HOST:PORT is tcp:HOST:PORT. */
static int normalize_target(const char *t, char *out, size_t len)
{
    size_t i = 0;
    if (!strncmp(t, "tcp:", 4) || !strncmp(t, "unix:", 5)) {
        snprintf(out, len, "%s", t);
        return 0;
    }
    while (t[i] && isdigit((unsigned char)t[i]))
        i++;
    if (i && !t[i]) {
        snprintf(out, len, "tcp:localhost:%s", t);
        return 0;
    }
    if (strchr(t, ':')) {
        snprintf(out, len, "tcp:%s", t);
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------ connect */

typedef struct up {
    int in, sock;
} up_t;

static void *up_thread(void *arg)
{
    up_t *u = arg;
    copy_until_eof(u->in, u->sock);
    return NULL;
}

static int cmd_connect(ctl_t *ctl, int argc, char **argv)
{
    char target[600], err[600];
    if (argc != 2)
        return ctl_usage_error(ctl, "expected one TARGET");
    if (normalize_target(argv[1], target, sizeof target) < 0)
        return ctl_usage_error(ctl, "'%s' is not a target", argv[1]);
    signal(SIGPIPE, SIG_IGN);
    int sock = dedicated(ctl, target, STDOUT_FILENO, err, sizeof err);
    if (sock < 0) {
        fprintf(stderr, "sandboxctl: connect %s: %s\n", target, err);
        return 1;
    }
    /* stdin to the target in a thread; the target to stdout here. The
     * target's end ends the command, as with nc: the reader of stdout has
     * everything. */
    up_t u = {STDIN_FILENO, sock};
    pthread_t th;
    if (pthread_create(&th, NULL, up_thread, &u) != 0) {
        fprintf(stderr, "sandboxctl: connect: cannot start a thread\n");
        close(sock);
        return 1;
    }
    pthread_detach(th);
    int rc = copy_until_eof(sock, STDOUT_FILENO);
    close(sock);
    if (rc < 0 && rc != -EPIPE) {
        fprintf(stderr, "sandboxctl: connect %s: %s\n", target, strerror(-rc));
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ forward */

typedef struct fwd_spec {
    char bind[256];
    char port[8];
    char target[600];
    char name[300]; /* "127.0.0.1:8080", as bound */
    int fd;
} fwd_spec_t;

typedef struct fwd_conn {
    ctl_t *ctl;
    const fwd_spec_t *spec;
    int fd;
    char peer[80];
} fwd_conn_t;

static atomic_int g_conns;

static void addr_name(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
        port = ntohs(s->sin_port);
        snprintf(buf, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
        port = ntohs(s->sin6_port);
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        snprintf(buf, len, "?");
    }
}

/* [BIND_ADDR:]LOCAL_PORT:TARGET */
static int parse_spec(const char *s, fwd_spec_t *f)
{
    const char *p = s, *colon;
    size_t n;
    memset(f, 0, sizeof *f);
    f->fd = -1;
    snprintf(f->bind, sizeof f->bind, "127.0.0.1");
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (!end || end[1] != ':' || (size_t)(end - p - 1) >= sizeof f->bind)
            return -1;
        memcpy(f->bind, p + 1, (size_t)(end - p - 1));
        f->bind[end - p - 1] = 0;
        p = end + 2;
    } else {
        colon = strchr(p, ':');
        if (!colon)
            return -1;
        n = strspn(p, "0123456789");
        if (p + n != colon) {
            if ((size_t)(colon - p) >= sizeof f->bind)
                return -1;
            memcpy(f->bind, p, (size_t)(colon - p));
            f->bind[colon - p] = 0;
            p = colon + 1;
        }
    }
    n = strspn(p, "0123456789");
    if (!n || n >= sizeof f->port || p[n] != ':' || atoi(p) > 65535)
        return -1;
    memcpy(f->port, p, n);
    f->port[n] = 0;
    return normalize_target(p + n + 1, f->target, sizeof f->target);
}

static int spec_listen(fwd_spec_t *f, char *err, size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    int rc, on = 1;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const char *host = !strcmp(f->bind, "*") ? NULL : f->bind;
    if ((rc = getaddrinfo(host, f->port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "%s: %s", f->bind, gai_strerror(rc));
        return -1;
    }
    f->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->fd < 0 || setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
        bind(f->fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(f->fd, 128) < 0) {
        snprintf(err, errlen, "listen on %s port %s: %s", f->bind, f->port, strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(f->fd, (struct sockaddr *)&ss, &len);
    addr_name((struct sockaddr *)&ss, f->name, sizeof f->name);
    return 0;
}

/* A connection the target refused is reset, so the local client sees a
 * refusal too (curl: "Connection reset by peer"), not an empty answer. */
static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void *fwd_thread(void *arg)
{
    fwd_conn_t *fc = arg;
    char err[600];
    int sock = dedicated(fc->ctl, fc->spec->target, fc->fd, err, sizeof err);
    if (sock < 0) {
        fprintf(stderr, "sandboxctl: forward %s -> %s: connection from %s refused: %s\n",
                fc->spec->name, fc->spec->target, fc->peer, err);
        reset_close(fc->fd);
    } else {
        int on = 1;
        setsockopt(fc->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        up_t u = {fc->fd, sock};
        pthread_t th;
        if (pthread_create(&th, NULL, up_thread, &u) == 0) {
            /* A failed direction shuts both sockets, which ends the other. */
            if (copy_until_eof(sock, fc->fd) < 0) {
                shutdown(sock, SHUT_RDWR);
                shutdown(fc->fd, SHUT_RDWR);
            }
            pthread_join(th, NULL);
        }
        close(sock);
        close(fc->fd);
    }
    atomic_fetch_sub(&g_conns, 1);
    free(fc);
    return NULL;
}

static int cmd_forward(ctl_t *ctl, int argc, char **argv)
{
    fwd_spec_t specs[FORWARD_MAX_SPECS];
    struct pollfd pfd[FORWARD_MAX_SPECS];
    int n = 0;
    char err[600];

    if (argc < 2 || argc - 1 > FORWARD_MAX_SPECS)
        return ctl_usage_error(ctl, "expected 1 to %d forwardings", FORWARD_MAX_SPECS);
    for (int i = 1; i < argc; i++, n++) {
        if (parse_spec(argv[i], &specs[n]) < 0)
            return ctl_usage_error(ctl, "'%s' is not [BIND_ADDR:]LOCAL_PORT:TARGET", argv[i]);
    }
    signal(SIGPIPE, SIG_IGN);
    /* The agent must answer before anything is promised. */
    if (ctl_connect(ctl) < 0)
        return 1;
    sa_client_close(ctl->cli);
    ctl->cli = NULL;
    for (int i = 0; i < n; i++) {
        if (spec_listen(&specs[i], err, sizeof err) < 0) {
            fprintf(stderr, "sandboxctl: forward: %s\n", err);
            return 1;
        }
        pfd[i].fd = specs[i].fd;
        pfd[i].events = POLLIN;
        printf("Forwarding from %s -> %s\n", specs[i].name, specs[i].target);
    }
    fflush(stdout);
    for (;;) {
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "sandboxctl: forward: poll: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            struct sockaddr_storage ss;
            socklen_t len = sizeof ss;
            int fd = accept4(specs[i].fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE)
                    usleep(100000); /* the connection waits in the backlog */
                continue;
            }
            fwd_conn_t *fc = calloc(1, sizeof *fc);
            if (!fc || atomic_load(&g_conns) >= FORWARD_MAX_CONNS) {
                fprintf(stderr, "sandboxctl: forward %s: %d connections at once; refusing one\n",
                        specs[i].name, FORWARD_MAX_CONNS);
                free(fc);
                reset_close(fd);
                continue;
            }
            fc->ctl = ctl;
            fc->spec = &specs[i];
            fc->fd = fd;
            addr_name((struct sockaddr *)&ss, fc->peer, sizeof fc->peer);
            fprintf(stderr, "Handling connection from %s to %s -> %s\n", fc->peer,
                    specs[i].name, specs[i].target);
            atomic_fetch_add(&g_conns, 1);
            pthread_t th;
            pthread_attr_t at;
            pthread_attr_init(&at);
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&th, &at, fwd_thread, fc) != 0) {
                atomic_fetch_sub(&g_conns, 1);
                reset_close(fd);
                free(fc);
            }
            pthread_attr_destroy(&at);
        }
    }
}

const ctl_cmd_t ctl_cmds_tunnel[] = {
    {"connect", cmd_connect, "TARGET",
     "stdin and stdout to TARGET in the VM (an ssh ProxyCommand)",
     "  TARGET  tcp:HOST:PORT (HOST empty: localhost), unix:/path, HOST:PORT or PORT\n"
     "\n"
     "One dedicated connection to the agent; the end of stdin is passed on as a\n"
     "half-close, and the command ends when the target closes its side.\n"
     "  ssh -o ProxyCommand='sandboxctl connect 22' user@vm\n"},
    {"forward", cmd_forward, "[BIND_ADDR:]LOCAL_PORT:TARGET...",
     "forward connections to LOCAL_PORT here to TARGET in the VM",
     "  BIND_ADDR   address to listen on (default 127.0.0.1; '*' for every one)\n"
     "  LOCAL_PORT  0 picks a free port (printed)\n"
     "  TARGET      tcp:HOST:PORT, unix:/path, HOST:PORT or PORT (tcp:localhost:PORT)\n"
     "\n"
     "Repeatable, like ssh -L. Each accepted connection gets a dedicated\n"
     "connection to the agent; one the target refuses is reset and reported.\n"
     "Runs until interrupted.\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
