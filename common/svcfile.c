/* svcfile.c - see svcfile.h.
 *
 * The format, one service per file:
 *   # a comment
 *   exec = python3 -m http.server 8080     (words: '...' and "..." quote,
 *                                           \ escapes; or command = and
 *                                           one arg = per argument)
 *   tag = web                              (default: the file's name)
 *   cwd = /srv    user = www-data    env = KEY=VALUE (repeatable)
 *   restart = on-failure                   (never, on-failure (default), always)
 *   max_restarts = 5   backoff_initial_ms = 100   backoff_max_ms = 30000
 *   reset_after_ms = 10000   kill_grace_ms = 5000   output_window = 1048576
 *   ready = tcp:8080                       (see svcfile_parse_probe)
 *   ready_interval_ms, ready_timeout_ms, ready_initial_delay_ms
 *   health = http:8080/healthz
 *   health_interval_ms, health_timeout_ms, health_initial_delay_ms,
 *   health_failure_threshold
 * Every value is the rest of its line with the blanks around it removed.
 */
#include "svcfile.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_LEN 4096
#define WORDS_MAX 256
#define ENV_MAX 256

typedef Sandbox__Agent__V1__StartProcess StartProcess;
typedef Sandbox__Agent__V1__Probe Probe;

static void set_err(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

/* Words of s, shell-like: blanks separate; '...' is literal; in "..." a
 * backslash escapes " and \; elsewhere a backslash escapes any character.
 * 0 with *words (NULL-terminated, malloc'd), or -1 with err. */
static int split_words(const char *s, char ***words, size_t *count, char *err, size_t n)
{
    size_t len = strlen(s), nw = 0;
    char **w = calloc(WORDS_MAX + 1, sizeof *w);
    char *buf = NULL;
    if (!w)
        goto nomem;
    for (size_t i = 0; i < len;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == len)
            break;
        if (nw == WORDS_MAX) {
            set_err(err, n, "more than %d words", WORDS_MAX);
            goto fail;
        }
        size_t o = 0;
        if (!(buf = malloc(len + 1)))
            goto nomem;
        while (i < len && s[i] != ' ' && s[i] != '\t') {
            char q = s[i];
            if (q == '\'' || q == '"') {
                size_t j = i + 1;
                for (; j < len && s[j] != q; j++) {
                    if (q == '"' && s[j] == '\\' && j + 1 < len && (s[j + 1] == '"' || s[j + 1] == '\\'))
                        j++;
                    buf[o++] = s[j];
                }
                if (j == len) {
                    set_err(err, n, "unterminated %c quote", q);
                    goto fail;
                }
                i = j + 1;
            } else if (q == '\\' && i + 1 < len) {
                buf[o++] = s[i + 1];
                i += 2;
            } else {
                buf[o++] = s[i++];
            }
        }
        buf[o] = 0;
        w[nw++] = buf;
        buf = NULL;
    }
    *words = w;
    *count = nw;
    return 0;
nomem:
    set_err(err, n, "out of memory");
fail:
    free(buf);
    if (w)
        for (size_t i = 0; i < nw; i++)
            free(w[i]);
    free(w);
    return -1;
}

static void free_words(char **w, size_t nw)
{
    for (size_t i = 0; w && i < nw; i++)
        free(w[i]);
    free(w);
}

static int parse_u32(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || (v = v * 10 + (uint64_t)(*s - '0')) > UINT32_MAX)
            return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* "[HOST:]PORT" (an IPv6 host in brackets) into host (malloc'd or NULL)
 * and port. */
static int host_port(const char *s, size_t len, char **host, uint32_t *port)
{
    char buf[300];
    const char *colon;
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    colon = strrchr(buf, ':');
    if (colon && (buf[0] != '[' || colon > strchr(buf, ']'))) {
        if (parse_u32(colon + 1, port) < 0 || colon == buf)
            return -1;
        if (!(*host = strndup(buf, (size_t)(colon - buf))))
            return -1;
        return 0;
    }
    *host = NULL;
    return parse_u32(buf, port);
}

Probe *svcfile_parse_probe(const char *spec, char *err, size_t n)
{
    Probe *p = calloc(1, sizeof *p);
    if (!p) {
        set_err(err, n, "out of memory");
        return NULL;
    }
    sandbox__agent__v1__probe__init(p);
    if (!strncmp(spec, "tcp:", 4)) {
        Sandbox__Agent__V1__TcpProbe *t = calloc(1, sizeof *t);
        char *host = NULL;
        if (!t)
            goto nomem;
        sandbox__agent__v1__tcp_probe__init(t);
        p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_TCP;
        p->tcp = t;
        if (host_port(spec + 4, strlen(spec + 4), &host, &t->port) < 0 || !t->port ||
            t->port > 65535) {
            free(host);
            set_err(err, n, "probe '%s': expected tcp:[HOST:]PORT", spec);
            goto fail;
        }
        if (host)
            t->host = host;
    } else if (!strncmp(spec, "http:", 5)) {
        Sandbox__Agent__V1__HttpProbe *h = calloc(1, sizeof *h);
        const char *rest = spec + 5, *slash;
        char *host = NULL;
        if (!h)
            goto nomem;
        sandbox__agent__v1__http_probe__init(h);
        p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_HTTP;
        p->http = h;
        if (!strncmp(rest, "//", 2))
            rest += 2;
        slash = strchr(rest, '/');
        if (host_port(rest, slash ? (size_t)(slash - rest) : strlen(rest), &host, &h->port) < 0 ||
            !h->port || h->port > 65535) {
            free(host);
            set_err(err, n, "probe '%s': expected http:[HOST:]PORT[/PATH]", spec);
            goto fail;
        }
        if (host)
            h->host = host;
        if (slash && !(h->path = strdup(slash)))
            goto nomem;
    } else if (!strncmp(spec, "exec:", 5)) {
        Sandbox__Agent__V1__ExecProbe *e = calloc(1, sizeof *e);
        char **w = NULL, msg[160];
        size_t nw = 0;
        if (!e)
            goto nomem;
        sandbox__agent__v1__exec_probe__init(e);
        p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_EXEC;
        p->exec = e;
        if (split_words(spec + 5, &w, &nw, msg, sizeof msg) < 0) {
            set_err(err, n, "probe '%s': %s", spec, msg);
            goto fail;
        }
        if (!nw) {
            free_words(w, nw);
            set_err(err, n, "probe '%s': expected exec:COMMAND [ARGS...]", spec);
            goto fail;
        }
        e->command = w[0];
        e->n_args = nw - 1;
        if (nw > 1) {
            /* The array must be an allocation of its own. */
            if (!(e->args = malloc((nw - 1) * sizeof *e->args))) {
                free_words(w, nw);
                e->command = NULL;
                e->n_args = 0;
                goto nomem;
            }
            memcpy(e->args, w + 1, (nw - 1) * sizeof *e->args);
        }
        free(w);
    } else if (!strncmp(spec, "output:", 7) || !strncmp(spec, "line:", 5)) {
        Sandbox__Agent__V1__OutputProbe *o = calloc(1, sizeof *o);
        int line = spec[0] == 'l';
        const char *text = spec + (line ? 5 : 7);
        if (!o)
            goto nomem;
        sandbox__agent__v1__output_probe__init(o);
        p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_OUTPUT;
        p->output = o;
        if (!text[0]) {
            set_err(err, n, "probe '%s': the text to wait for is empty", spec);
            goto fail;
        }
        if (!(line ? (o->line_prefix = strdup(text)) : (o->contains = strdup(text))))
            goto nomem;
    } else {
        set_err(err, n, "probe '%s': expected tcp:, http:, exec:, output: or line:", spec);
        goto fail;
    }
    return p;
nomem:
    set_err(err, n, "out of memory");
fail:
    sandbox__agent__v1__probe__free_unpacked(p, NULL);
    return NULL;
}

/* Append to a malloc'd array of pointers. */
static int push(void ***arr, size_t *count, void *item)
{
    void **a = realloc(*arr, (*count + 1) * sizeof *a);
    if (!a)
        return -1;
    a[(*count)++] = item;
    *arr = a;
    return 0;
}

static char *trim(char *s)
{
    char *e = s + strlen(s);
    while (*s == ' ' || *s == '\t')
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = 0;
    return s;
}

/* The default tag: the base name without ".conf". */
static char *name_tag(const char *name)
{
    const char *b = strrchr(name, '/');
    b = b ? b + 1 : name;
    size_t len = strlen(b);
    if (len > 5 && !strcmp(b + len - 5, ".conf"))
        len -= 5;
    return strndup(b, len);
}

typedef struct pstate {
    StartProcess *sp;
    Sandbox__Agent__V1__RestartPolicy *rp;
    unsigned seen; /* keys given once */
    int have_exec, have_command;
} pstate_t;

static Sandbox__Agent__V1__RestartPolicy *policy(pstate_t *st)
{
    if (!st->rp && (st->rp = calloc(1, sizeof *st->rp))) {
        sandbox__agent__v1__restart_policy__init(st->rp);
        st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ON_FAILURE;
        st->sp->restart = st->rp;
    }
    return st->rp;
}

/* One key = value. 0, or -1 with msg. */
static int apply(pstate_t *st, const char *key, char *val, char *msg, size_t n)
{
    StartProcess *sp = st->sp;
    static const char *const once[] = {
        "exec", "command", "tag", "cwd", "user", "restart", "max_restarts",
        "backoff_initial_ms", "backoff_max_ms", "reset_after_ms", "kill_grace_ms",
        "output_window", "ready", "health", "ready_interval_ms", "ready_timeout_ms",
        "ready_initial_delay_ms", "health_interval_ms", "health_timeout_ms",
        "health_initial_delay_ms", "health_failure_threshold"};
    uint32_t *u32 = NULL;
    char **str = NULL;

    for (unsigned i = 0; i < sizeof once / sizeof once[0]; i++) {
        if (!strcmp(key, once[i])) {
            if (st->seen & (1u << i)) {
                set_err(msg, n, "'%s' is given twice", key);
                return -1;
            }
            st->seen |= 1u << i;
        }
    }
    if (!strcmp(key, "exec")) {
        char **w = NULL;
        size_t nw = 0;
        char m[160];
        if (st->have_command) {
            set_err(msg, n, "give exec or command and arg, not both");
            return -1;
        }
        if (split_words(val, &w, &nw, m, sizeof m) < 0) {
            set_err(msg, n, "exec: %s", m);
            return -1;
        }
        if (!nw) {
            free(w);
            set_err(msg, n, "exec is empty");
            return -1;
        }
        sp->command = w[0];
        for (size_t i = 1; i < nw; i++) {
            if (push((void ***)&sp->args, &sp->n_args, w[i]) < 0) {
                for (size_t j = i; j < nw; j++)
                    free(w[j]);
                free(w);
                set_err(msg, n, "out of memory");
                return -1;
            }
        }
        free(w);
        st->have_exec = 1;
        return 0;
    }
    if (!strcmp(key, "command") || !strcmp(key, "arg")) {
        char *v;
        if (st->have_exec) {
            set_err(msg, n, "give exec or command and arg, not both");
            return -1;
        }
        if (sp->n_args >= WORDS_MAX) {
            set_err(msg, n, "more than %d arguments", WORDS_MAX);
            return -1;
        }
        if (!(v = strdup(val)))
            goto nomem;
        if (key[0] == 'c') {
            sp->command = v;
            st->have_command = 1;
        } else if (push((void ***)&sp->args, &sp->n_args, v) < 0) {
            free(v);
            goto nomem;
        }
        return 0;
    }
    if (!strcmp(key, "env")) {
        char *eq = strchr(val, '=');
        Sandbox__Agent__V1__StartProcess__EnvEntry *e;
        if (!eq || eq == val) {
            set_err(msg, n, "env: expected KEY=VALUE");
            return -1;
        }
        if (sp->n_env >= ENV_MAX) {
            set_err(msg, n, "more than %d env entries", ENV_MAX);
            return -1;
        }
        if (!(e = calloc(1, sizeof *e)))
            goto nomem;
        sandbox__agent__v1__start_process__env_entry__init(e);
        if (!(e->key = strndup(val, (size_t)(eq - val))) || !(e->value = strdup(eq + 1)) ||
            push((void ***)&sp->env, &sp->n_env, e) < 0) {
            protobuf_c_message_free_unpacked(&e->base, NULL);
            goto nomem;
        }
        return 0;
    }
    if (!strcmp(key, "tag"))
        str = &sp->tag;
    else if (!strcmp(key, "cwd"))
        str = &sp->cwd;
    else if (!strcmp(key, "user"))
        str = &sp->user;
    if (str) {
        char *v = strdup(val);
        if (!v)
            goto nomem;
        if (*str != protobuf_c_empty_string)
            free(*str);
        *str = v;
        return 0;
    }
    if (!strcmp(key, "restart")) {
        if (!policy(st))
            goto nomem;
        if (!strcmp(val, "never"))
            st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__NEVER;
        else if (!strcmp(val, "on-failure"))
            st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ON_FAILURE;
        else if (!strcmp(val, "always"))
            st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ALWAYS;
        else {
            set_err(msg, n, "restart '%s': expected never, on-failure or always", val);
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "ready") || !strcmp(key, "health")) {
        Probe **slot = key[0] == 'r' ? &sp->ready : &sp->health;
        Probe *keep = *slot; /* interval keys may have come first */
        Probe *p = svcfile_parse_probe(val, msg, n);
        if (!p)
            return -1;
        if (keep) {
            p->interval_ms = keep->interval_ms;
            p->timeout_ms = keep->timeout_ms;
            p->initial_delay_ms = keep->initial_delay_ms;
            p->failure_threshold = keep->failure_threshold;
            sandbox__agent__v1__probe__free_unpacked(keep, NULL);
        }
        *slot = p;
        return 0;
    }
    if (!strncmp(key, "ready_", 6) || !strncmp(key, "health_", 7)) {
        int ready = key[0] == 'r';
        const char *k = key + (ready ? 6 : 7);
        Probe **slot = ready ? &sp->ready : &sp->health;
        if (!*slot) {
            /* Settings first, the check later: hold them in a probe with no
             * check yet; a file that never gives the check is refused. */
            if (!(*slot = calloc(1, sizeof **slot)))
                goto nomem;
            sandbox__agent__v1__probe__init(*slot);
        }
        if (!strcmp(k, "interval_ms"))
            u32 = &(*slot)->interval_ms;
        else if (!strcmp(k, "timeout_ms"))
            u32 = &(*slot)->timeout_ms;
        else if (!strcmp(k, "initial_delay_ms"))
            u32 = &(*slot)->initial_delay_ms;
        else if (!ready && !strcmp(k, "failure_threshold"))
            u32 = &(*slot)->failure_threshold;
    } else if (!strcmp(key, "max_restarts") || !strcmp(key, "backoff_initial_ms") ||
               !strcmp(key, "backoff_max_ms") || !strcmp(key, "reset_after_ms")) {
        if (!policy(st))
            goto nomem;
        u32 = key[0] == 'm'   ? &st->rp->max_restarts
              : key[0] == 'r' ? &st->rp->reset_after_ms
              : key[8] == 'i' ? &st->rp->backoff_initial_ms
                              : &st->rp->backoff_max_ms;
    } else if (!strcmp(key, "kill_grace_ms")) {
        u32 = &sp->kill_grace_ms;
    } else if (!strcmp(key, "output_window")) {
        if (parse_u64(val, &sp->output_window) < 0) {
            set_err(msg, n, "output_window '%s' is not a number", val);
            return -1;
        }
        return 0;
    }
    if (!u32) {
        set_err(msg, n, "unknown key '%s'", key);
        return -1;
    }
    if (parse_u32(val, u32) < 0) {
        set_err(msg, n, "%s '%s' is not a number (0..%u)", key, val, UINT32_MAX);
        return -1;
    }
    return 0;
nomem:
    set_err(msg, n, "out of memory");
    return -1;
}

int svcfile_parse(const char *text, size_t len, const char *name, StartProcess **out, char *err,
                  size_t n)
{
    pstate_t st = {0};
    char line[LINE_MAX_LEN + 1], msg[300];
    unsigned lineno = 0;
    size_t i = 0;

    *out = NULL;
    if (len > SVCFILE_MAX_SIZE) {
        set_err(err, n, "%s: larger than %d bytes", name, SVCFILE_MAX_SIZE);
        return -1;
    }
    if (memchr(text, 0, len)) {
        set_err(err, n, "%s: contains a NUL byte", name);
        return -1;
    }
    if (!(st.sp = calloc(1, sizeof *st.sp))) {
        set_err(err, n, "%s: out of memory", name);
        return -1;
    }
    sandbox__agent__v1__start_process__init(st.sp);
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - (text + i)) : len - i;
        lineno++;
        if (ll > LINE_MAX_LEN) {
            set_err(msg, sizeof msg, "line longer than %d bytes", LINE_MAX_LEN);
            goto fail;
        }
        memcpy(line, text + i, ll);
        line[ll] = 0;
        i += ll + (nl ? 1 : 0);
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            set_err(msg, sizeof msg, "expected key = value");
            goto fail;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        for (char *k = key; *k; k++) {
            if (!((*k >= 'a' && *k <= 'z') || *k == '_' || (*k >= '0' && *k <= '9'))) {
                set_err(msg, sizeof msg, "'%.60s' is not a key (lower case letters, digits, _)",
                        key);
                goto fail;
            }
        }
        if (!*key) {
            set_err(msg, sizeof msg, "a key is missing before '='");
            goto fail;
        }
        if (apply(&st, key, val, msg, sizeof msg) < 0)
            goto fail;
    }
    lineno = 0; /* what follows is about the whole file */
    if (!st.sp->command || !st.sp->command[0]) {
        set_err(msg, sizeof msg, "no exec (or command) line: nothing to run");
        goto fail;
    }
    if ((st.sp->ready && st.sp->ready->check_case == SANDBOX__AGENT__V1__PROBE__CHECK__NOT_SET) ||
        (st.sp->health && st.sp->health->check_case == SANDBOX__AGENT__V1__PROBE__CHECK__NOT_SET)) {
        set_err(msg, sizeof msg, "probe settings without the probe (ready = or health =)");
        goto fail;
    }
    if (!st.sp->tag || !st.sp->tag[0]) {
        char *t = name_tag(name);
        if (!t || !t[0]) {
            free(t);
            set_err(msg, sizeof msg, "no tag, and none can come from the file's name");
            goto fail;
        }
        if (st.sp->tag != protobuf_c_empty_string)
            free(st.sp->tag);
        st.sp->tag = t;
    }
    if (!st.rp && !policy(&st)) {
        set_err(msg, sizeof msg, "out of memory");
        goto fail;
    }
    *out = st.sp;
    return 0;
fail:
    if (lineno)
        set_err(err, n, "%s:%u: %s", name, lineno, msg);
    else
        set_err(err, n, "%s: %s", name, msg);
    sandbox__agent__v1__start_process__free_unpacked(st.sp, NULL);
    return -1;
}
