/* ctl_helpers.h - running the real sandboxctl binary against a test agent:
 * its stdout, stderr and exit status, and JSON lines checked by Python's
 * json module (an independent parser). */
#ifndef SA_TEST_CTL_HELPERS_H
#define SA_TEST_CTL_HELPERS_H

#include "harness.h"

#include <poll.h>

typedef struct ctl_out {
    char *out, *err; /* NUL-terminated (the data may hold NULs: use the lengths) */
    size_t out_len, err_len;
    int status; /* the exit status, or 128 + the signal */
} ctl_out_t;

static inline void ctl_out_free(ctl_out_t *o)
{
    free(o->out);
    free(o->err);
    memset(o, 0, sizeof *o);
}

static inline void ctl_append(char **buf, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
        ASSERT(*buf);
    }
    memcpy(*buf + *len, d, n);
    *len += n;
    (*buf)[*len] = 0;
}

/* Start sandboxctl --connect addr ARGS (NULL-terminated) with stdin from
 * in_fd (-1: /dev/null); returns its pid and the read ends of its stdout
 * and stderr. */
static inline pid_t ctl_spawn(const char *addr, const char *const *args, int in_fd, int *out_r,
                              int *err_r)
{
    int po[2], pe[2];
    ASSERT_EQ(pipe(po), 0);
    ASSERT_EQ(pipe(pe), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        const char *argv[64];
        int n = 0;
        argv[n++] = CTL_BIN;
        argv[n++] = "--connect";
        argv[n++] = addr;
        for (; *args && n < 62; args++)
            argv[n++] = *args;
        argv[n] = NULL;
        int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        signal(SIGPIPE, SIG_DFL);
        execv(CTL_BIN, (char *const *)argv);
        _exit(126);
    }
    close(po[1]);
    close(pe[1]);
    *out_r = po[0];
    *err_r = pe[0];
    return pid;
}

/* Read both pipes to their end and reap pid. */
static inline void ctl_collect(pid_t pid, int out_r, int err_r, ctl_out_t *o)
{
    size_t ocap = 0, ecap = 0;
    char buf[65536];
    memset(o, 0, sizeof *o);
    ctl_append(&o->out, &o->out_len, &ocap, "", 0);
    ctl_append(&o->err, &o->err_len, &ecap, "", 0);
    int open_fds = 2;
    while (open_fds) {
        struct pollfd pf[2] = {{.fd = out_r, .events = POLLIN}, {.fd = err_r, .events = POLLIN}};
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            FAIL("poll: %s", strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(pf[i].fd, buf, sizeof buf);
            if (n > 0) {
                if (i == 0)
                    ctl_append(&o->out, &o->out_len, &ocap, buf, (size_t)n);
                else
                    ctl_append(&o->err, &o->err_len, &ecap, buf, (size_t)n);
            } else {
                close(pf[i].fd);
                if (i == 0)
                    out_r = -1;
                else
                    err_r = -1;
                open_fds--;
            }
        }
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    o->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run sandboxctl with ARGS to its end. */
static inline void ctl_run(const char *addr, const char *const *args, ctl_out_t *o)
{
    int out_r, err_r;
    pid_t pid = ctl_spawn(addr, args, -1, &out_r, &err_r);
    ctl_collect(pid, out_r, err_r, o);
}

#define CTL(o, addr, ...)                                                             \
    do {                                                                              \
        const char *_args[] = {__VA_ARGS__, NULL};                                    \
        ctl_run((addr), _args, (o));                                                  \
    } while (0)

/* Run sandboxctl with ARGS; its stdout (at most cap - 1 bytes) in out,
 * NUL-terminated. Returns its exit status (128 + N for signal N). */
static inline int ctl_stdout(const char *addr, const char *const *args, char *out, size_t cap)
{
    ctl_out_t o;
    ctl_run(addr, args, &o);
    size_t n = o.out_len < cap - 1 ? o.out_len : cap - 1;
    memcpy(out, o.out ? o.out : "", n);
    out[n] = 0;
    int status = o.status;
    ctl_out_free(&o);
    return status;
}

#ifdef AGENT_BIN
/* Run "sandboxctl ARGS" through the shell (args are split and expanded by
 * it) against agent a; stdout and stderr together in out (at most
 * outlen - 1 bytes). Returns the exit status, -1 when killed. */
static inline int run_ctl(agent_t *a, const char *args, char *out, size_t outlen)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "SANDBOX_AGENT_ADDR=%s %s %s 2>&1", a->addr, CTL_BIN, args);
    FILE *f = popen(cmd, "r");
    ASSERT(f);
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
#endif

/* Every line of s parses as one JSON object (Python's json module); lines
 * is the count expected, or -1 for any. Returns the count. */
static inline int json_lines_ok(const char *s, size_t len, int lines)
{
    char path[] = "/tmp/sa-ctl-json-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, s, len), (ssize_t)len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys\n"
             "n=0\n"
             "for l in open(sys.argv[1],encoding=\"utf-8\"):\n"
             "    assert l.endswith(\"\\n\"), repr(l)\n"
             "    o=json.loads(l)\n"
             "    assert isinstance(o,dict), repr(l)\n"
             "    n+=1\n"
             "print(n)' %s",
             path);
    FILE *f = popen(cmd, "r");
    ASSERT(f);
    int n = -1;
    if (fscanf(f, "%d", &n) != 1)
        n = -1;
    int st = pclose(f);
    unlink(path);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || n < 0)
        FAIL("not JSON lines:\n%.*s", (int)(len > 2000 ? 2000 : len), s);
    if (lines >= 0)
        ASSERT_EQ(n, lines);
    return n;
}

#endif
