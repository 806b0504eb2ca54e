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
#include <stddef.h>
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

/* Put the message in err; returns -1, for "return set_err(...)". */
static int set_err(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
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

/* One kind of probe: its fields from the spec's text after the kind's
 * prefix (arg). 0, or -1 with err (ENOMEM says "out of memory"). */
typedef int probe_fn(Probe *p, const char *spec, const char *arg, char *err, size_t n);

static int probe_tcp(Probe *p, const char *spec, const char *arg, char *err, size_t n)
{
    Sandbox__Agent__V1__TcpProbe *t = calloc(1, sizeof *t);
    char *host = NULL;
    if (!t)
        return set_err(err, n, "out of memory");
    sandbox__agent__v1__tcp_probe__init(t);
    p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_TCP;
    p->tcp = t;
    if (host_port(arg, strlen(arg), &host, &t->port) < 0 || !t->port || t->port > 65535) {
        free(host);
        return set_err(err, n, "probe '%s': expected tcp:[HOST:]PORT", spec);
    }
    if (host)
        t->host = host;
    return 0;
}

static int probe_http(Probe *p, const char *spec, const char *arg, char *err, size_t n)
{
    Sandbox__Agent__V1__HttpProbe *h = calloc(1, sizeof *h);
    const char *slash;
    char *host = NULL;
    if (!h)
        return set_err(err, n, "out of memory");
    sandbox__agent__v1__http_probe__init(h);
    p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_HTTP;
    p->http = h;
    if (!strncmp(arg, "//", 2))
        arg += 2;
    slash = strchr(arg, '/');
    if (host_port(arg, slash ? (size_t)(slash - arg) : strlen(arg), &host, &h->port) < 0 ||
        !h->port || h->port > 65535) {
        free(host);
        return set_err(err, n, "probe '%s': expected http:[HOST:]PORT[/PATH]", spec);
    }
    if (host)
        h->host = host;
    if (slash && !(h->path = strdup(slash)))
        return set_err(err, n, "out of memory");
    return 0;
}

static int probe_exec(Probe *p, const char *spec, const char *arg, char *err, size_t n)
{
    Sandbox__Agent__V1__ExecProbe *e = calloc(1, sizeof *e);
    char **w = NULL, msg[160];
    size_t nw = 0;
    if (!e)
        return set_err(err, n, "out of memory");
    sandbox__agent__v1__exec_probe__init(e);
    p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_EXEC;
    p->exec = e;
    if (split_words(arg, &w, &nw, msg, sizeof msg) < 0)
        return set_err(err, n, "probe '%s': %s", spec, msg);
    if (!nw) {
        free_words(w, nw);
        return set_err(err, n, "probe '%s': expected exec:COMMAND [ARGS...]", spec);
    }
    /* The args array must be an allocation of its own. */
    if (nw > 1 && !(e->args = malloc((nw - 1) * sizeof *e->args))) {
        free_words(w, nw);
        return set_err(err, n, "out of memory");
    }
    e->command = w[0];
    e->n_args = nw - 1;
    if (nw > 1)
        memcpy(e->args, w + 1, (nw - 1) * sizeof *e->args);
    free(w);
    return 0;
}

/* output:TEXT (anywhere in the output) and line:PREFIX (a line's start). */
static int probe_output(Probe *p, const char *spec, const char *arg, char *err, size_t n)
{
    Sandbox__Agent__V1__OutputProbe *o = calloc(1, sizeof *o);
    int line = spec[0] == 'l';
    if (!o)
        return set_err(err, n, "out of memory");
    sandbox__agent__v1__output_probe__init(o);
    p->check_case = SANDBOX__AGENT__V1__PROBE__CHECK_OUTPUT;
    p->output = o;
    if (!arg[0])
        return set_err(err, n, "probe '%s': the text to wait for is empty", spec);
    if (!(line ? (o->line_prefix = strdup(arg)) : (o->contains = strdup(arg))))
        return set_err(err, n, "out of memory");
    return 0;
}

static const struct {
    const char *prefix;
    probe_fn *parse;
} g_probes[] = {
    {"tcp:", probe_tcp},       {"http:", probe_http},   {"exec:", probe_exec},
    {"output:", probe_output}, {"line:", probe_output},
};

Probe *svcfile_parse_probe(const char *spec, char *err, size_t n)
{
    Probe *p = calloc(1, sizeof *p);
    if (!p) {
        set_err(err, n, "out of memory");
        return NULL;
    }
    sandbox__agent__v1__probe__init(p);
    for (size_t i = 0; i < sizeof g_probes / sizeof g_probes[0]; i++) {
        size_t len = strlen(g_probes[i].prefix);
        if (strncmp(spec, g_probes[i].prefix, len))
            continue;
        if (g_probes[i].parse(p, spec, spec + len, err, n) == 0)
            return p;
        /* A half-filled probe is sound: each part is set as it is made. */
        sandbox__agent__v1__probe__free_unpacked(p, NULL);
        return NULL;
    }
    set_err(err, n, "probe '%s': expected tcp:, http:, exec:, output: or line:", spec);
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

/* exec = WORDS: the command and its arguments. */
static int key_exec(pstate_t *st, char *val, char *msg, size_t n)
{
    StartProcess *sp = st->sp;
    char **w = NULL, m[160];
    size_t nw = 0;
    if (st->have_command)
        return set_err(msg, n, "give exec or command and arg, not both");
    if (split_words(val, &w, &nw, m, sizeof m) < 0)
        return set_err(msg, n, "exec: %s", m);
    if (!nw) {
        free(w);
        return set_err(msg, n, "exec is empty");
    }
    sp->command = w[0];
    for (size_t i = 1; i < nw; i++) {
        if (push((void ***)&sp->args, &sp->n_args, w[i]) < 0) {
            for (size_t j = i; j < nw; j++)
                free(w[j]);
            free(w);
            return set_err(msg, n, "out of memory");
        }
    }
    free(w);
    st->have_exec = 1;
    return 0;
}

/* command = WORD, arg = WORD (one argument each, taken as it is). */
static int key_command(pstate_t *st, int is_arg, char *val, char *msg, size_t n)
{
    StartProcess *sp = st->sp;
    char *v;
    if (st->have_exec)
        return set_err(msg, n, "give exec or command and arg, not both");
    if (sp->n_args >= WORDS_MAX)
        return set_err(msg, n, "more than %d arguments", WORDS_MAX);
    if (!(v = strdup(val)))
        return set_err(msg, n, "out of memory");
    if (!is_arg) {
        sp->command = v;
        st->have_command = 1;
    } else if (push((void ***)&sp->args, &sp->n_args, v) < 0) {
        free(v);
        return set_err(msg, n, "out of memory");
    }
    return 0;
}

static int key_env(pstate_t *st, char *val, char *msg, size_t n)
{
    StartProcess *sp = st->sp;
    char *eq = strchr(val, '=');
    Sandbox__Agent__V1__StartProcess__EnvEntry *e;
    if (!eq || eq == val)
        return set_err(msg, n, "env: expected KEY=VALUE");
    if (sp->n_env >= ENV_MAX)
        return set_err(msg, n, "more than %d env entries", ENV_MAX);
    if (!(e = calloc(1, sizeof *e)))
        return set_err(msg, n, "out of memory");
    sandbox__agent__v1__start_process__env_entry__init(e);
    if (!(e->key = strndup(val, (size_t)(eq - val))) || !(e->value = strdup(eq + 1)) ||
        push((void ***)&sp->env, &sp->n_env, e) < 0) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return set_err(msg, n, "out of memory");
    }
    return 0;
}

static int key_restart(pstate_t *st, char *val, char *msg, size_t n)
{
    if (!policy(st))
        return set_err(msg, n, "out of memory");
    if (!strcmp(val, "never"))
        st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__NEVER;
    else if (!strcmp(val, "on-failure"))
        st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ON_FAILURE;
    else if (!strcmp(val, "always"))
        st->rp->mode = SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ALWAYS;
    else
        return set_err(msg, n, "restart '%s': expected never, on-failure or always", val);
    return 0;
}

/* ready = SPEC, health = SPEC; interval keys may have come first. */
static int key_probe(Probe **slot, char *val, char *msg, size_t n)
{
    Probe *keep = *slot;
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

/* The probe of *slot, made when its settings come before its check: held
 * in a probe with no check yet; a file that never gives the check is
 * refused. NULL on ENOMEM. */
static Probe *probe_slot(Probe **slot)
{
    if (!*slot && (*slot = calloc(1, sizeof **slot)))
        sandbox__agent__v1__probe__init(*slot);
    return *slot;
}

/* What a key sets, and where. */
typedef enum { K_EXEC, K_COMMAND, K_ARG, K_ENV, K_STR, K_RESTART, K_PROBE, K_U32, K_U64 } kkind_t;
typedef enum { IN_SP, IN_POLICY, IN_READY, IN_HEALTH } kwhere_t;

#define SPF(f) offsetof(StartProcess, f)
#define RPF(f) offsetof(Sandbox__Agent__V1__RestartPolicy, f)
#define PRF(f) offsetof(Probe, f)

static const struct key {
    const char *name;
    kkind_t kind;
    kwhere_t where;
    size_t off; /* of the field, in where */
    int once;   /* given at most once */
} g_keys[] = {
    {"exec", K_EXEC, IN_SP, 0, 1},
    {"command", K_COMMAND, IN_SP, 0, 1},
    {"arg", K_ARG, IN_SP, 0, 0},
    {"env", K_ENV, IN_SP, 0, 0},
    {"tag", K_STR, IN_SP, SPF(tag), 1},
    {"cwd", K_STR, IN_SP, SPF(cwd), 1},
    {"user", K_STR, IN_SP, SPF(user), 1},
    {"restart", K_RESTART, IN_POLICY, 0, 1},
    {"max_restarts", K_U32, IN_POLICY, RPF(max_restarts), 1},
    {"backoff_initial_ms", K_U32, IN_POLICY, RPF(backoff_initial_ms), 1},
    {"backoff_max_ms", K_U32, IN_POLICY, RPF(backoff_max_ms), 1},
    {"reset_after_ms", K_U32, IN_POLICY, RPF(reset_after_ms), 1},
    {"kill_grace_ms", K_U32, IN_SP, SPF(kill_grace_ms), 1},
    {"output_window", K_U64, IN_SP, SPF(output_window), 1},
    {"ready", K_PROBE, IN_SP, SPF(ready), 1},
    {"health", K_PROBE, IN_SP, SPF(health), 1},
    {"ready_interval_ms", K_U32, IN_READY, PRF(interval_ms), 1},
    {"ready_timeout_ms", K_U32, IN_READY, PRF(timeout_ms), 1},
    {"ready_initial_delay_ms", K_U32, IN_READY, PRF(initial_delay_ms), 1},
    {"health_interval_ms", K_U32, IN_HEALTH, PRF(interval_ms), 1},
    {"health_timeout_ms", K_U32, IN_HEALTH, PRF(timeout_ms), 1},
    {"health_initial_delay_ms", K_U32, IN_HEALTH, PRF(initial_delay_ms), 1},
    {"health_failure_threshold", K_U32, IN_HEALTH, PRF(failure_threshold), 1},
};

_Static_assert(sizeof g_keys / sizeof g_keys[0] <= 32, "pstate_t.seen has a bit per key");

/* The struct a key's field is in (made when it is the first of its
 * struct's keys); NULL on ENOMEM. */
static char *key_base(pstate_t *st, kwhere_t where)
{
    switch (where) {
    case IN_POLICY: return (char *)policy(st);
    case IN_READY: return (char *)probe_slot(&st->sp->ready);
    case IN_HEALTH: return (char *)probe_slot(&st->sp->health);
    default: return (char *)st->sp;
    }
}

/* A string field: the value replaces what was there. */
static int key_str(char **str, const char *val, char *msg, size_t n)
{
    char *v = strdup(val);
    if (!v)
        return set_err(msg, n, "out of memory");
    if (*str != protobuf_c_empty_string)
        free(*str);
    *str = v;
    return 0;
}

/* One key = value. 0, or -1 with msg. */
static int apply(pstate_t *st, const char *key, char *val, char *msg, size_t n)
{
    size_t i = 0, nkeys = sizeof g_keys / sizeof g_keys[0];
    while (i < nkeys && strcmp(key, g_keys[i].name))
        i++;
    if (i == nkeys)
        return set_err(msg, n, "unknown key '%s'", key);
    const struct key *k = &g_keys[i];
    if (k->once && (st->seen & (1u << i)))
        return set_err(msg, n, "'%s' is given twice", key);
    st->seen |= 1u << i;
    char *base = key_base(st, k->where);
    if (!base)
        return set_err(msg, n, "out of memory");
    switch (k->kind) {
    case K_EXEC: return key_exec(st, val, msg, n);
    case K_COMMAND: return key_command(st, 0, val, msg, n);
    case K_ARG: return key_command(st, 1, val, msg, n);
    case K_ENV: return key_env(st, val, msg, n);
    case K_STR: return key_str((char **)(base + k->off), val, msg, n);
    case K_RESTART: return key_restart(st, val, msg, n);
    case K_PROBE: return key_probe((Probe **)(base + k->off), val, msg, n);
    case K_U64:
        if (parse_u64(val, (uint64_t *)(base + k->off)) < 0)
            return set_err(msg, n, "%s '%s' is not a number", key, val);
        return 0;
    case K_U32:
        if (parse_u32(val, (uint32_t *)(base + k->off)) < 0)
            return set_err(msg, n, "%s '%s' is not a number (0..%u)", key, val, UINT32_MAX);
        return 0;
    }
    return set_err(msg, n, "unknown key '%s'", key);
}

/* One line (NUL-terminated, without its newline): blank, a comment, or
 * key = value. 0, or -1 with msg. */
static int parse_line(pstate_t *st, char *line, char *msg, size_t n)
{
    char *s = trim(line);
    if (!*s || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq)
        return set_err(msg, n, "expected key = value");
    *eq = 0;
    char *key = trim(s), *val = trim(eq + 1);
    for (char *k = key; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || *k == '_' || (*k >= '0' && *k <= '9')))
            return set_err(msg, n, "'%.60s' is not a key (lower case letters, digits, _)", key);
    if (!*key)
        return set_err(msg, n, "a key is missing before '='");
    return apply(st, key, val, msg, n);
}

/* What the whole file must have given, and the defaults of what it did
 * not. 0, or -1 with msg. */
static int finish(pstate_t *st, const char *name, char *msg, size_t n)
{
    StartProcess *sp = st->sp;
    if (!sp->command || !sp->command[0])
        return set_err(msg, n, "no exec (or command) line: nothing to run");
    if ((sp->ready && sp->ready->check_case == SANDBOX__AGENT__V1__PROBE__CHECK__NOT_SET) ||
        (sp->health && sp->health->check_case == SANDBOX__AGENT__V1__PROBE__CHECK__NOT_SET))
        return set_err(msg, n, "probe settings without the probe (ready = or health =)");
    if (!sp->tag || !sp->tag[0]) {
        char *t = name_tag(name);
        if (!t || !t[0]) {
            free(t);
            return set_err(msg, n, "no tag, and none can come from the file's name");
        }
        if (sp->tag != protobuf_c_empty_string)
            free(sp->tag);
        sp->tag = t;
    }
    if (!st->rp && !policy(st))
        return set_err(msg, n, "out of memory");
    return 0;
}

int svcfile_parse(const char *text, size_t len, const char *name, StartProcess **out, char *err,
                  size_t n)
{
    pstate_t st = {0};
    char line[LINE_MAX_LEN + 1], msg[300];
    unsigned lineno = 0;
    size_t i = 0;

    *out = NULL;
    if (len > SVCFILE_MAX_SIZE)
        return set_err(err, n, "%s: larger than %d bytes", name, SVCFILE_MAX_SIZE);
    if (memchr(text, 0, len))
        return set_err(err, n, "%s: contains a NUL byte", name);
    if (!(st.sp = calloc(1, sizeof *st.sp)))
        return set_err(err, n, "%s: out of memory", name);
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
        if (parse_line(&st, line, msg, sizeof msg) < 0)
            goto fail;
    }
    lineno = 0; /* what follows is about the whole file */
    if (finish(&st, name, msg, sizeof msg) < 0)
        goto fail;
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
