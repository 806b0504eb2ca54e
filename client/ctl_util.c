/* ctl_util.c - sandboxctl's shared output helpers: errors in the command
 * line's words, usage errors and help, names as bytes, JSON lines. */
#include "ctl.h"
#include "utf8.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------ errors */

/* The agent's messages name protocol fields; a person at the command line
 * knows the commands instead. */
static const struct {
    const char *from, *to;
} g_words[] = {
    {"(use list_dir)", "(use ls)"},
    {"(set recursive to remove it all)", "(use rm -r)"},
    {"(stdin_mode STDIN_PIPE or a pty)", "(use run -i or --tty)"},
    {"(set overwrite to replace it)", "(mv replaces it without -n)"},
    {"(set follow_symlinks to change its target's)", "(use -L)"},
};

/* Request names an agent message may start with ("read_file '/x': ..."). */
static const char *const g_ops[] = {
    "read_file", "write_file", "write_data", "list_dir", "stat", "mkdir", "remove", "rename",
    "watch", "symlink", "set_attributes", "follow", "signal", "write_stdin", "close_stdin",
    "resize", "wait", "get_process", "forget", "start",
};

static void print_message(FILE *f, const char *m)
{
    for (size_t i = 0; i < sizeof g_ops / sizeof g_ops[0]; i++) {
        size_t n = strlen(g_ops[i]);
        if (!strncmp(m, g_ops[i], n) && (m[n] == ' ' || m[n] == ':')) {
            m += n + (m[n] == ':');
            while (*m == ' ')
                m++;
            break;
        }
    }
    while (*m) {
        size_t i;
        for (i = 0; i < sizeof g_words / sizeof g_words[0]; i++) {
            size_t n = strlen(g_words[i].from);
            if (!strncmp(m, g_words[i].from, n)) {
                fputs(g_words[i].to, f);
                m += n;
                break;
            }
        }
        if (i == sizeof g_words / sizeof g_words[0])
            fputc(*m++, f);
    }
}

int ctl_fail(const char *what, const Response *r)
{
    if (r && r->result_case == RES(ERROR)) {
        fprintf(stderr, "sandboxctl: %s: %s: ", what, sa_error_code_name(r->error->code));
        print_message(stderr, r->error->message ? r->error->message : "");
        fputc('\n', stderr);
    } else {
        fprintf(stderr, "sandboxctl: %s: unexpected response (result %d)\n", what,
                r ? (int)r->result_case : -1);
    }
    return 1;
}

/* ------------------------------------------------------------ calls */

static void lost(const char *what, int rc)
{
    fprintf(stderr, "sandboxctl: %s: connection to the agent: %s\n", what, strerror(-rc));
}

Response *ctl_request(ctl_t *ctl, Request *req, const char *what, int timeout_ms)
{
    Response *r = NULL;
    int rc = sa_client_call(ctl->cli, req, &r, timeout_ms);
    if (rc < 0) {
        lost(what, rc);
        return NULL;
    }
    return r;
}

/* Is r what the caller wants (0: any but an Error)? */
static int wanted(const Response *r, int want)
{
    return want ? (int)r->result_case == want : r->result_case != RES(ERROR);
}

int ctl_call(ctl_t *ctl, Request *req, const char *what, int want, int timeout_ms,
             Response **out)
{
    Response *r = ctl_request(ctl, req, what, timeout_ms);
    if (out)
        *out = NULL;
    if (!r)
        return -1;
    if (!wanted(r, want)) {
        ctl_fail(what, r);
        sa_response_free(r);
        return 1;
    }
    if (out)
        *out = r;
    else
        sa_response_free(r);
    return 0;
}

int ctl_stream(ctl_t *ctl, Request *req, const char *what, int want, int timeout_ms,
               ctl_each_fn *each, void *arg)
{
    int rc, status = 0, done = 0;
    if ((rc = sa_client_send(ctl->cli, req)) < 0) {
        lost(what, rc);
        return -1;
    }
    while (!done) {
        Response *r = NULL;
        if ((rc = sa_client_recv_id(ctl->cli, req->id, &r, timeout_ms)) < 0) {
            lost(what, rc);
            return -1;
        }
        if (!wanted(r, want)) {
            if (!status)
                status = ctl_fail(what, r);
        } else if (!status) {
            status = each(ctl, r, arg);
        }
        done = r->done;
        sa_response_free(r);
    }
    return status;
}

int ctl_begin_bare(ctl_t *ctl, int argc)
{
    if (argc != 1)
        return ctl_usage_error(ctl, "takes no arguments");
    return ctl_connect(ctl) < 0 ? 1 : 0;
}

void ctl_cmd_help(const ctl_cmd_t *c, FILE *f)
{
    fprintf(f, "usage: sandboxctl %s%s%s\n\n%s\n", c->name, c->usage[0] ? " " : "", c->usage,
            c->help);
    if (c->details && c->details[0])
        fprintf(f, "\n%s", c->details);
}

int ctl_usage_error(const ctl_t *ctl, const char *fmt, ...)
{
    va_list ap;
    const char *name = ctl->cmd ? ctl->cmd->name : "sandboxctl";
    fprintf(stderr, "sandboxctl: %s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (ctl->cmd)
        fprintf(stderr, "usage: sandboxctl %s %s\n(sandboxctl %s --help for more)\n", name,
                ctl->cmd->usage, name);
    return 2;
}

int ctl_signal_number(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
                 {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"ALRM", SIGALRM}, {"PIPE", SIGPIPE}};
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end)
        return v >= 0 && v <= 64 ? (int)v : -1;
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name))
            return names[i].sig;
    return -1;
}

int ctl_pid_number(const char *s, uint32_t *pid)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || !v || v > 0x7fffffff)
        return 0;
    *pid = (uint32_t)v;
    return 1;
}

/* ------------------------------------------------------------ names */

void ctl_set_path(char **str, ProtobufCBinaryData *raw, const char *path)
{
    size_t n = strlen(path);
    if (utf8_valid(path, n)) {
        *str = (char *)path;
    } else {
        *str = (char *)"";
        raw->data = (uint8_t *)path;
        raw->len = n;
    }
}

char *ctl_name_bytes(const char *str, const ProtobufCBinaryData *raw)
{
    if (raw && raw->len)
        return strndup((const char *)raw->data, raw->len);
    return strdup(str ? str : "");
}

/* ------------------------------------------------------------ JSON */

void ctl_json_string_n(const char *s, size_t n)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s, *e = p + n; p && p < e; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p == '\t')
            fputs("\\t", stdout);
        else if (*p == '\r')
            fputs("\\r", stdout);
        else if (*p < 0x20 || *p == 0x7f)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

void ctl_json_string(const char *s) { ctl_json_string_n(s, s ? strlen(s) : 0); }

void ctl_json_base64(const uint8_t *d, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    putchar('"');
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        putchar(t[(v >> 18) & 63]);
        putchar(t[(v >> 12) & 63]);
        putchar(i + 1 < n ? t[(v >> 6) & 63] : '=');
        putchar(i + 2 < n ? t[v & 63] : '=');
    }
    putchar('"');
}

void ctl_json_name(const char *key, const char *str, const ProtobufCBinaryData *raw)
{
    printf("\"%s\":", key);
    ctl_json_string(str ? str : "");
    if (raw && raw->len) {
        printf(",\"%s_raw\":", key);
        ctl_json_base64(raw->data, raw->len);
    }
}

void ctl_human(const char *unit, double b, char *out, size_t len)
{
    const char *u[] = {unit, "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

double ctl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
