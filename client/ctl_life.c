/* ctl_life.c - sandboxctl's lifecycle commands: freeze, thaw, restored,
 * events. */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_MOUNTS 64
#define MAX_ENV 256
#define ENTROPY_BYTES 64

typedef Sandbox__Agent__V1__Restored__EnvEntry RestoredEnv;

/* "30s", "500ms", "2m", or a bare number of seconds, into milliseconds. */
static int parse_duration_ms(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = 1000;
    if (errno || end == s || v < 0)
        return -1;
    if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "s") || !*end)
        mult = 1000;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else
        return -1;
    v *= mult;
    if (v > 4294967295.0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static void print_list(const char *key, char **v, size_t n)
{
    printf("\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            putchar(',');
        ctl_json_string(v[i]);
    }
    putchar(']');
}

static int cmd_freeze(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Quiesce q = SANDBOX__AGENT__V1__QUIESCE__INIT;
    char *mounts[MAX_MOUNTS];
    size_t n = 0;
    int i = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--thaw-after") && i + 1 < argc) {
            if (parse_duration_ms(argv[++i], &q.thaw_after_ms) < 0 || !q.thaw_after_ms) {
                return ctl_usage_error(ctl, "--thaw-after '%s': expected a duration such as "
                                            "30s, 500ms or 2m", argv[i]);
            }
        } else if (!strcmp(argv[i], "--dry-run")) {
            q.dry_run = 1;
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else {
            return ctl_usage_error(ctl, "unknown option '%s'", argv[i]);
        }
    }
    for (; i < argc; i++) {
        if (n == MAX_MOUNTS)
            return ctl_usage_error(ctl, "at most %d mounts", MAX_MOUNTS);
        mounts[n++] = argv[i];
    }
    q.n_mounts = n;
    q.mounts = mounts;
    if (ctl_connect(ctl) < 0)
        return 1;
    req.op_case = OP(QUIESCE);
    req.quiesce = &q;
    Response *r;
    if (ctl_call(ctl, &req, "freeze", RES(QUIESCED), -1, &r))
        return 1;
    const Sandbox__Agent__V1__QuiesceResult *qr = r->quiesced;
    if (ctl->json) {
        putchar('{');
        print_list("frozen", qr->frozen, qr->n_frozen);
        printf(",\"sync_nanos\":%llu,\"freeze_nanos\":%llu,\"hooks_nanos\":%llu,"
               "\"thaw_after_ms\":%u,\"dry_run\":%s}\n",
               (unsigned long long)qr->sync_nanos, (unsigned long long)qr->freeze_nanos,
               (unsigned long long)qr->hooks_nanos, qr->thaw_after_ms,
               q.dry_run ? "true" : "false");
    } else {
        for (size_t k = 0; k < qr->n_frozen; k++)
            printf("%s %s\n", q.dry_run ? "would freeze" : "frozen", qr->frozen[k]);
        if (!q.dry_run)
            printf("hooks %.1f ms, sync %.1f ms, freeze %.1f ms; thaws by itself in %.1f s\n",
                   (double)qr->hooks_nanos / 1e6, (double)qr->sync_nanos / 1e6,
                   (double)qr->freeze_nanos / 1e6, qr->thaw_after_ms / 1000.0);
    }
    sa_response_free(r);
    return 0;
}

static int cmd_thaw(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Thaw t = SANDBOX__AGENT__V1__THAW__INIT;
    int rc = ctl_begin_bare(ctl, argc);
    if (rc)
        return rc;
    req.op_case = OP(THAW);
    req.thaw = &t;
    Response *r;
    if (ctl_call(ctl, &req, "thaw", RES(THAWED), -1, &r))
        return 1;
    if (ctl->json) {
        putchar('{');
        print_list("thawed", r->thawed->thawed, r->thawed->n_thawed);
        printf("}\n");
    } else {
        for (size_t k = 0; k < r->thawed->n_thawed; k++)
            printf("thawed %s\n", r->thawed->thawed[k]);
        if (!r->thawed->n_thawed)
            printf("nothing was frozen\n");
    }
    sa_response_free(r);
    return 0;
}

static int read_entropy(const char *path, uint8_t *buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    if (fd < 0) {
        fprintf(stderr, "sandboxctl: --entropy-from '%s': %s\n", path, strerror(errno));
        return -1;
    }
    while (got < ENTROPY_BYTES) {
        ssize_t n = read(fd, buf + got, ENTROPY_BYTES - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got < 32) {
        fprintf(stderr, "sandboxctl: --entropy-from '%s': %zu bytes; at least 32 needed\n",
                path, got);
        return -1;
    }
    *len = got;
    return 0;
}

/* The options of restored, into m (env and entropy point into env_store
 * and entropy). 0, or -1 after a usage error (said). */
static int parse_restored(ctl_t *ctl, int argc, char **argv, Sandbox__Agent__V1__Restored *m,
                          RestoredEnv **env, RestoredEnv *env_store, uint8_t *entropy,
                          const char **time_arg)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(a, "--time") && strcmp(a, "--entropy-from") && strcmp(a, "--generation") &&
            strcmp(a, "--env")) {
            ctl_usage_error(ctl, "unknown option '%s'", a);
            return -1;
        }
        if (!v) {
            ctl_usage_error(ctl, "option '%s' needs a value", a);
            return -1;
        }
        i++;
        errno = 0;
        if (!strcmp(a, "--time")) {
            *time_arg = v;
            if (!strcmp(v, "now"))
                continue;
            m->unix_time_nano = strtoull(v, &end, 10);
            if (errno || *end || end == v || !m->unix_time_nano) {
                ctl_usage_error(ctl, "--time '%s': expected now or nanoseconds since 1970", v);
                return -1;
            }
        } else if (!strcmp(a, "--entropy-from")) {
            if (read_entropy(v, entropy, &m->entropy.len) < 0)
                return -1;
            m->entropy.data = entropy;
        } else if (!strcmp(a, "--generation")) {
            m->generation = strtoull(v, &end, 10);
            if (errno || *end || end == v || v[0] == '-') {
                ctl_usage_error(ctl, "--generation '%s': expected a number", v);
                return -1;
            }
        } else { /* --env */
            char *kv = argv[i], *eq = strchr(kv, '=');
            if (!eq || eq == kv || m->n_env == MAX_ENV) {
                ctl_usage_error(ctl, "--env '%s': expected KEY=VALUE", kv);
                return -1;
            }
            RestoredEnv *e = &env_store[m->n_env];
            sandbox__agent__v1__restored__env_entry__init(e);
            *eq = 0;
            e->key = kv;
            e->value = eq + 1;
            env[m->n_env++] = e;
        }
    }
    m->env = env;
    return 0;
}

static void print_restored(ctl_t *ctl, const Sandbox__Agent__V1__RestoredResult *rr)
{
    if (ctl->json) {
        printf("{\"clock_step_nano\":%lld,\"previous_generation\":%llu,",
               (long long)rr->clock_step_nano, (unsigned long long)rr->previous_generation);
        print_list("thawed", rr->thawed, rr->n_thawed);
        putchar(',');
        print_list("hook_failures", rr->hook_failures, rr->n_hook_failures);
        printf("}\n");
        return;
    }
    printf("clock stepped by %+.6f s; previous generation %llu\n",
           (double)rr->clock_step_nano / 1e9, (unsigned long long)rr->previous_generation);
    for (size_t k = 0; k < rr->n_thawed; k++)
        printf("thawed %s\n", rr->thawed[k]);
    for (size_t k = 0; k < rr->n_hook_failures; k++)
        printf("post-restore hook failed: %s\n", rr->hook_failures[k]);
}

static int cmd_restored(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Restored m = SANDBOX__AGENT__V1__RESTORED__INIT;
    static RestoredEnv env_store[MAX_ENV];
    RestoredEnv *env[MAX_ENV];
    uint8_t entropy[ENTROPY_BYTES];
    const char *time_arg = NULL;
    Response *r;
    int rc = 2;

    if (parse_restored(ctl, argc, argv, &m, env, env_store, entropy, &time_arg) < 0)
        goto out;
    rc = 1;
    if (ctl_connect(ctl) < 0)
        goto out;
    if (time_arg && !strcmp(time_arg, "now")) {
        /* Taken at the last moment: the agent steps to what it is told. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        m.unix_time_nano = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    }
    req.op_case = OP(RESTORED);
    req.restored = &m;
    if (ctl_call(ctl, &req, "restored", RES(RESTORE_DONE), -1, &r))
        goto out;
    print_restored(ctl, r->restore_done);
    rc = r->restore_done->n_hook_failures ? 1 : 0;
    sa_response_free(r);
out:
    explicit_bzero(entropy, sizeof entropy); /* the pool's seed is not left about */
    return rc;
}

static const char *kind_name(int k)
{
    switch (k) {
    case SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__QUIESCED: return "QUIESCED";
    case SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__THAWED: return "THAWED";
    case SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__RESTORED: return "RESTORED";
    case SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__CLOCK_STEPPED: return "CLOCK_STEPPED";
    default: return "UNKNOWN";
    }
}

static int print_event(ctl_t *ctl, const Response *r, void *arg)
{
    const Sandbox__Agent__V1__LifecycleEvent *e = r->lifecycle;
    if (ctl->json) {
        printf("{\"kind\":\"%s\",\"generation\":%llu,\"clock_step_nano\":%lld,"
               "\"at_unix_nano\":%llu,\"restores\":%llu,\"source\":",
               kind_name(e->kind), (unsigned long long)e->generation,
               (long long)e->clock_step_nano, (unsigned long long)e->at_unix_nano,
               (unsigned long long)e->restores);
        ctl_json_string(e->source);
        putchar(',');
        print_list("mounts", e->mounts, e->n_mounts);
        printf("}\n");
    } else {
        time_t t = (time_t)(e->at_unix_nano / 1000000000ull);
        struct tm tm;
        char ts[32];
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("%s %-13s source=%s generation=%llu restores=%llu", ts, kind_name(e->kind),
               e->source, (unsigned long long)e->generation, (unsigned long long)e->restores);
        if (e->clock_step_nano)
            printf(" step=%+.6fs", (double)e->clock_step_nano / 1e9);
        for (size_t k = 0; k < e->n_mounts; k++)
            printf("%s%s", k ? "," : " mounts=", e->mounts[k]);
        putchar('\n');
    }
    fflush(stdout);
    return 0;
}

static int cmd_events(ctl_t *ctl, int argc, char **argv)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WatchLifecycle w = SANDBOX__AGENT__V1__WATCH_LIFECYCLE__INIT;
    int rc = ctl_begin_bare(ctl, argc);
    if (rc)
        return rc;
    req.op_case = OP(WATCH_LIFECYCLE);
    req.watch_lifecycle = &w;
    return ctl_stream(ctl, &req, "events", RES(LIFECYCLE), -1, print_event, NULL) ? 1 : 0;
}

const ctl_cmd_t ctl_cmds_life[] = {
    {"freeze", cmd_freeze, "[--thaw-after 30s] [MOUNT...]",
     "hooks, sync, freeze for a snapshot (--dry-run: list)",
     "  Runs the pre-checkpoint hooks, syncs, and freezes the mount points given,\n"
     "  or every local, writable, freezable file system. The agent thaws by itself\n"
     "  after --thaw-after (30s, 500ms, 2m; default its --thaw-after-ms).\n"
     "  --dry-run      list what would be frozen; run and freeze nothing\n"},
    {"thaw", cmd_thaw, "", "thaw what freeze froze", NULL},
    {"restored", cmd_restored, "[--time now] [--entropy-from F] ...",
     "after a restore: clock, entropy, generation, env",
     "  --time now|UNIX_NANOS   step the agent's wall clock to this time\n"
     "  --entropy-from PATH     mix 64 bytes of PATH into the kernel's pool\n"
     "  --generation N          the VM's new generation\n"
     "  --env KEY=VALUE         for processes started from now on (repeatable)\n"
     "  Also thaws and runs the post-restore hooks; exits 1 if one failed.\n"},
    {"events", cmd_events, "", "follow freeze, thaw, restore and clock events", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
