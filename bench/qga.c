/* qga.c - a minimal client of qemu-guest-agent's JSON protocol over its unix
 * socket (`qemu-ga -m unix-listen`): one command, one reply line. Only what
 * the reference measurements need: guest-sync, guest-exec and its status,
 * guest-file-open/read/write/close. */
#include "bench.h"
#include "spawnref.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int unix_connect(const char *path)
{
    struct sockaddr_un sa;
    if (sun_set(&sa, path) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int qga_up(qga_t *q)
{
    char pidf[200], logf[200];
    int rc;

    memset(q, 0, sizeof *q);
    q->fd = -1;
    snprintf(q->sock, sizeof q->sock, "%s/qga.sock", g_opt.dir);
    snprintf(pidf, sizeof pidf, "%s/qga.pid", g_opt.dir);
    snprintf(logf, sizeof logf, "%s/qga.log", g_opt.dir);
    unlink(q->sock);
    unlink(pidf);
    const char *argv[] = {g_opt.qga_bin, "-m", "unix-listen", "-p", q->sock, "-t", g_opt.dir,
                          "-f", pidf, "-l", logf, NULL};
    rc = bench_spawn(&q->pid, g_opt.qga_bin, (char *const *)argv, logf);
    if (rc) {
        fprintf(stderr, "sa-bench: spawn %s: %s\n", g_opt.qga_bin, strerror(rc));
        q->pid = 0;
        return -1;
    }
    for (int i = 0; i < 2000 && q->fd < 0; i++) {
        if ((q->fd = unix_connect(q->sock)) < 0)
            sleep_us(5000);
    }
    if (q->fd < 0) {
        fprintf(stderr, "sa-bench: qemu-ga did not listen on %s; log in %s\n", q->sock, logf);
        qga_down(q);
        return -1;
    }
    if (qga_cmd(q, "{\"execute\":\"guest-sync\",\"arguments\":{\"id\":4242}}") < 0 ||
        qga_num(q, "return") != 4242) {
        fprintf(stderr, "sa-bench: qemu-ga guest-sync failed: %.200s\n", q->buf ? q->buf : "");
        qga_down(q);
        return -1;
    }
    return 0;
}

void qga_down(qga_t *q)
{
    int st;
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    if (q->pid > 0) {
        kill(q->pid, SIGTERM);
        for (int i = 0; i < 500; i++) {
            if (waitpid(q->pid, &st, WNOHANG) == q->pid) {
                q->pid = 0;
                break;
            }
            sleep_us(10000);
        }
        if (q->pid > 0) {
            kill(q->pid, SIGKILL);
            waitpid(q->pid, &st, 0);
        }
    }
    q->pid = 0;
    free(q->buf);
    q->buf = NULL;
    q->cap = q->len = 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int qga_cmd(qga_t *q, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int rc = write_all(q->fd, cmd, (size_t)n);
    free(cmd);
    if (rc < 0)
        return -1;
    /* One reply per command, ending with a newline. */
    q->len = 0;
    for (;;) {
        if (q->cap - q->len < 65536) {
            size_t ncap = q->cap ? q->cap * 2 : 1u << 20;
            char *nb = realloc(q->buf, ncap);
            if (!nb)
                return -1;
            q->buf = nb;
            q->cap = ncap;
        }
        ssize_t r = read(q->fd, q->buf + q->len, q->cap - q->len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        q->len += (size_t)r;
        if (q->buf[q->len - 1] == '\n')
            break;
    }
    q->buf[q->len] = 0;
    return strstr(q->buf, "\"error\"") && !strstr(q->buf, "\"return\"") ? -1 : 0;
}

static const char *after_key(const qga_t *q, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = q->buf ? strstr(q->buf, pat) : NULL;
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    return p;
}

long long qga_num(const qga_t *q, const char *key)
{
    const char *p = after_key(q, key);
    return p && (*p == '-' || (*p >= '0' && *p <= '9')) ? strtoll(p, NULL, 10) : -1;
}

int qga_true(const qga_t *q, const char *key)
{
    const char *p = after_key(q, key);
    return p && !strncmp(p, "true", 4);
}

static int b64v(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

long long qga_b64(const qga_t *q, const char *key, uint8_t *dst)
{
    const char *p = after_key(q, key);
    long long n = 0;
    unsigned acc = 0;
    int bits = 0;
    if (!p || *p != '"')
        return -1;
    for (p++; *p && *p != '"'; p++) {
        if (*p == '\\')
            continue; /* qemu escapes '/' as "\/" */
        int v = b64v((unsigned char)*p);
        if (v < 0)
            continue; /* '=' padding */
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (dst)
                dst[n] = (uint8_t)(acc >> bits);
            n++;
        }
    }
    return n;
}

long long qga_exec(qga_t *q, const char *path, const char *const *args, int capture)
{
    char argj[512];
    size_t off = 0;
    argj[0] = 0;
    for (; args && *args; args++)
        off += (size_t)snprintf(argj + off, sizeof argj - off, "%s\"%s\"", off ? "," : "", *args);
    if (qga_cmd(q,
                "{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"%s\",\"arg\":[%s],"
                "\"capture-output\":%s}}",
                path, argj, capture ? "true" : "false") < 0)
        return -1;
    long long pid = qga_num(q, "pid");
    if (pid <= 0)
        return -1;
    for (;;) {
        if (qga_cmd(q, "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":%lld}}", pid) <
            0)
            return -1;
        if (qga_true(q, "exited"))
            break;
    }
    long long n = qga_b64(q, "out-data", NULL);
    return n < 0 ? 0 : n;
}
