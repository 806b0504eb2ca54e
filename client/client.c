/* client.c - see client.h. */
#include "client.h"

#include "defaults.h"
#include "frame.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

typedef struct stash {
    sa_response_t *r;
    struct stash *next;
} stash_t;

struct sa_client {
    int fd;
    uint64_t next_id;
    uint32_t max_frame;
    int zlib;
    uint8_t *in;
    size_t in_len, in_cap;
    stash_t *stash_head, *stash_tail;
};

/* A socket of family connected to sa: the fd, or -errno. */
static int connect_to(int family, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), e;
    if (fd < 0)
        return -errno;
    if (connect(fd, sa, len) == 0)
        return fd;
    e = errno;
    close(fd);
    return -e;
}

static int connect_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int fd;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix socket path '%s' is too long", path);
        return -ENAMETOOLONG;
    }
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if ((fd = connect_to(AF_UNIX, (struct sockaddr *)&sa, sizeof sa)) >= 0)
        return fd;
    int e = -fd;
    struct stat st;
    char hint[256] = "";
    if (e == ENOENT) {
        snprintf(hint, sizeof hint, " (is sandbox-agent running?)");
    } else if ((e == EACCES || e == EPERM) && stat(path, &st) == 0 && st.st_uid != geteuid()) {
        /* Typically a user next to the root agent's socket. */
        char who[32] = "root";
        if (st.st_uid)
            snprintf(who, sizeof who, "uid %u", (unsigned)st.st_uid);
        snprintf(hint, sizeof hint, " (the agent at %s runs as %s; use sudo or --connect)",
                 path, who);
    }
    snprintf(err, errlen, "connect to unix:%s: %s%s", path, strerror(e), hint);
    return -e;
}

static int connect_tcp(const char *hostport, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints, *ai = NULL, *p;
    int fd = -1, rc, e = ECONNREFUSED;

    if (!colon || (size_t)(colon - hostport) >= sizeof host) {
        snprintf(err, errlen, "tcp address '%s': expected HOST:PORT", hostport);
        return -EINVAL;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0) {
        snprintf(err, errlen, "tcp address '%s': %s", hostport, gai_strerror(rc));
        return -EINVAL;
    }
    for (p = ai; p; p = p->ai_next) {
        if ((fd = connect_to(p->ai_family, p->ai_addr, p->ai_addrlen)) >= 0)
            break;
        e = -fd;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        snprintf(err, errlen, "connect to tcp:%s: %s", hostport, strerror(e));
        return -e;
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &on, sizeof on);
    return fd;
}

static int connect_vsock(const char *cidport, char *err, size_t errlen)
{
    unsigned cid, port;
    struct sockaddr_vm sa;
    int fd;
    if (sscanf(cidport, "%u:%u", &cid, &port) != 2) {
        snprintf(err, errlen, "vsock address '%s': expected vsock:CID:PORT", cidport);
        return -EINVAL;
    }
    memset(&sa, 0, sizeof sa);
    sa.svm_family = AF_VSOCK;
    sa.svm_cid = cid;
    sa.svm_port = port;
    if ((fd = connect_to(AF_VSOCK, (struct sockaddr *)&sa, sizeof sa)) < 0)
        snprintf(err, errlen, "connect to vsock:%s: %s", cidport, strerror(-fd));
    return fd;
}

sa_client_t *sa_client_connect(const char *addr, char *err, size_t errlen)
{
    char def[300];
    int fd;
    sa_client_t *c;

    if (!addr || !*addr)
        addr = getenv("SANDBOX_AGENT_ADDR");
    if (!addr || !*addr) {
        sa_default_socket(def, sizeof def, geteuid());
        /* A non-root user debugging next to a root agent. */
        if (geteuid() != 0 && access(def, F_OK) != 0 &&
            access("/run/sandbox-agent.sock", F_OK) == 0)
            snprintf(def, sizeof def, "/run/sandbox-agent.sock");
        addr = def;
    }
    if (!strncmp(addr, "unix:", 5))
        fd = connect_unix(addr + 5, err, errlen);
    else if (!strncmp(addr, "tcp:", 4))
        fd = connect_tcp(addr + 4, err, errlen);
    else if (!strncmp(addr, "vsock:", 6))
        fd = connect_vsock(addr + 6, err, errlen);
    else
        fd = connect_unix(addr, err, errlen);
    if (fd < 0)
        return NULL;
    if (!(c = calloc(1, sizeof *c))) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->next_id = 1;
    c->max_frame = FRAME_DEFAULT_MAX;
    return c;
}

void sa_client_close(sa_client_t *c)
{
    if (!c)
        return;
    while (c->stash_head) {
        stash_t *s = c->stash_head;
        c->stash_head = s->next;
        sa_response_free(s->r);
        free(s);
    }
    close(c->fd);
    free(c->in);
    free(c);
}

int sa_client_fd(const sa_client_t *c) { return c->fd; }
uint32_t sa_client_max_frame(const sa_client_t *c) { return c->max_frame; }
uint64_t sa_client_next_id(sa_client_t *c) { return c->next_id++; }

/* The one write loop of the client: EINTR retried, short writes continued.
 * On a socket it uses send(MSG_NOSIGNAL) so a closed peer is an -EPIPE, not a
 * signal; anywhere else (stdout, a file) write(2) keeps the usual SIGPIPE. */
int sa_write_all(int fd, const void *buf, size_t len, int socket)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = socket ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int sa_client_send_raw(sa_client_t *c, const void *buf, size_t len)
{
    return sa_write_all(c->fd, buf, len, 1);
}

int sa_client_send_z(sa_client_t *c, sa_request_t *req, int compress)
{
    uint8_t *buf;
    size_t len;
    int rc;
    if (!req->id)
        req->id = sa_client_next_id(c);
    /* The agent's limit, not ours, decides; let it say so. */
    if ((rc = frame_encode(&req->base, compress, 0xffffffffu, &buf, &len)) < 0)
        return rc;
    rc = sa_write_all(c->fd, buf, len, 1);
    free(buf);
    return rc;
}

int sa_client_send(sa_client_t *c, sa_request_t *req) { return sa_client_send_z(c, req, 0); }

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read one frame off the socket. */
static int read_frame(sa_client_t *c, sa_response_t **out, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        uint8_t flags;
        uint32_t plen;
        int rc = frame_header_parse(c->in, c->in_len, 0xffffffffu, &flags, &plen);
        if (rc < 0)
            return -EBADMSG;
        if (rc == 1 && c->in_len >= FRAME_HEADER_SIZE + (size_t)plen) {
            ProtobufCMessage *m = NULL;
            char err[160];
            rc = frame_decode(&sandbox__agent__v1__response__descriptor, flags,
                              c->in + FRAME_HEADER_SIZE, plen, 0x7fffffffu, &m, err,
                              sizeof err);
            size_t used = FRAME_HEADER_SIZE + (size_t)plen;
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            if (rc < 0)
                return -EBADMSG;
            *out = (sa_response_t *)m;
            return 0;
        }
        size_t need = rc == 1 ? FRAME_HEADER_SIZE + (size_t)plen : 64 * 1024;
        if (need < 64 * 1024)
            need = 64 * 1024;
        if (c->in_cap < need) {
            uint8_t *nb = realloc(c->in, need);
            if (!nb)
                return -ENOMEM;
            c->in = nb;
            c->in_cap = need;
        }
        if (deadline >= 0) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            int64_t left = deadline - now_ms();
            if (left < 0)
                left = 0;
            int pr = poll(&pfd, 1, (int)left);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr < 0)
                return -errno;
            if (pr == 0)
                return -ETIMEDOUT;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EPIPE;
        c->in_len += (size_t)n;
    }
}

int sa_client_recv(sa_client_t *c, sa_response_t **out, int timeout_ms)
{
    if (c->stash_head) {
        stash_t *s = c->stash_head;
        c->stash_head = s->next;
        if (!c->stash_head)
            c->stash_tail = NULL;
        *out = s->r;
        free(s);
        return 0;
    }
    return read_frame(c, out, timeout_ms);
}

int sa_client_recv_id(sa_client_t *c, uint64_t id, sa_response_t **out, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (stash_t **pp = &c->stash_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if ((*pp)->r->id == id) {
            stash_t *s = *pp;
            *pp = s->next;
            if (c->stash_tail == s)
                c->stash_tail = prev;
            *out = s->r;
            free(s);
            return 0;
        }
    }
    for (;;) {
        sa_response_t *r;
        int left = -1;
        if (deadline >= 0) {
            int64_t l = deadline - now_ms();
            left = l < 0 ? 0 : (int)l;
        }
        int rc = read_frame(c, &r, left);
        if (rc < 0)
            return rc;
        /* id 0 is the agent speaking about the connection itself: deliver
         * it to whoever is waiting. */
        if (r->id == id || r->id == 0) {
            *out = r;
            return 0;
        }
        stash_t *s = malloc(sizeof *s);
        if (!s) {
            sa_response_free(r);
            return -ENOMEM;
        }
        s->r = r;
        s->next = NULL;
        if (c->stash_tail)
            c->stash_tail->next = s;
        else
            c->stash_head = s;
        c->stash_tail = s;
    }
}

int sa_client_call(sa_client_t *c, sa_request_t *req, sa_response_t **out, int timeout_ms)
{
    int rc = sa_client_send(c, req);
    if (rc < 0)
        return rc;
    for (;;) {
        sa_response_t *r;
        rc = sa_client_recv_id(c, req->id, &r, timeout_ms);
        if (rc < 0)
            return rc;
        if (r->done) {
            *out = r;
            return 0;
        }
        sa_response_free(r);
    }
}

int sa_client_hello(sa_client_t *c, const char *token, const char *client_name,
                    int accept_zlib, char *err, size_t errlen)
{
    sa_request_t req = SANDBOX__AGENT__V1__REQUEST__INIT;
    Sandbox__Agent__V1__Hello h = SANDBOX__AGENT__V1__HELLO__INIT;
    sa_response_t *r = NULL;
    int rc;

    if (!token)
        token = getenv("SANDBOX_AGENT_TOKEN");
    h.protocol_version = 1;
    h.token = (char *)(token ? token : "");
    h.client_name = (char *)(client_name ? client_name : "libsandbox-agent-client");
    h.accept_zlib = accept_zlib;
    req.op_case = SANDBOX__AGENT__V1__REQUEST__OP_HELLO;
    req.hello = &h;
    if ((rc = sa_client_call(c, &req, &r, 10000)) < 0) {
        snprintf(err, errlen, "hello: %s", strerror(-rc));
        return rc;
    }
    if (r->result_case == SANDBOX__AGENT__V1__RESPONSE__RESULT_ERROR) {
        snprintf(err, errlen, "hello: %s: %s", sa_error_code_name(r->error->code),
                 r->error->message);
        sa_response_free(r);
        return -EACCES;
    }
    if (r->result_case == SANDBOX__AGENT__V1__RESPONSE__RESULT_HELLO && r->hello->max_frame_size)
        c->max_frame = r->hello->max_frame_size;
    c->zlib = accept_zlib;
    sa_response_free(r);
    return 0;
}

int sa_client_dedicate(sa_client_t *c, const char *target, uint8_t **rest, size_t *rest_len,
                       char *err, size_t errlen)
{
    sa_request_t req = SANDBOX__AGENT__V1__REQUEST__INIT;
    Sandbox__Agent__V1__Connect cn = SANDBOX__AGENT__V1__CONNECT__INIT;
    sa_response_t *r = NULL;
    int rc;

    *rest = NULL;
    *rest_len = 0;
    cn.target = (char *)target;
    req.op_case = SANDBOX__AGENT__V1__REQUEST__OP_CONNECT;
    req.connect = &cn;
    /* No timeout of our own: the agent gives up dialling after its own. */
    if ((rc = sa_client_call(c, &req, &r, -1)) < 0) {
        snprintf(err, errlen, "connect %s: %s", target, strerror(-rc));
        return rc;
    }
    if (r->result_case == SANDBOX__AGENT__V1__RESPONSE__RESULT_ERROR) {
        snprintf(err, errlen, "%s: %s", sa_error_code_name(r->error->code), r->error->message);
        rc = r->error->os_errno > 0 ? -r->error->os_errno : -EIO;
        sa_response_free(r);
        return rc;
    }
    if (r->result_case != SANDBOX__AGENT__V1__RESPONSE__RESULT_ACK) {
        snprintf(err, errlen, "connect %s: unexpected response (result %d)", target,
                 (int)r->result_case);
        sa_response_free(r);
        return -EPROTO;
    }
    sa_response_free(r);
    /* What was read past the Ack is the target's. */
    if (c->in_len) {
        *rest = c->in;
        *rest_len = c->in_len;
        c->in = NULL;
        c->in_len = c->in_cap = 0;
    }
    return 0;
}

void sa_response_free(sa_response_t *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

const char *sa_error_code_name(int code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&sandbox__agent__v1__error__code__descriptor, code);
    return v ? v->name : "UNKNOWN";
}
