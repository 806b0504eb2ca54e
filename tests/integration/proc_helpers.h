/* proc_helpers.h - what the process tests share: starting a command,
 * following its output into a buffer while checking sequences. */
#ifndef SA_TEST_PROC_HELPERS_H
#define SA_TEST_PROC_HELPERS_H

#include "harness.h"

#include <dirent.h>

typedef struct start_opts {
    const char *user, *cwd, *tag;
    const char *env_k, *env_v;
    int clear_env;
    unsigned pty_rows, pty_cols;
    int pty;
    int stdin_pipe;
    uint32_t timeout_ms, kill_grace_ms;
    uint64_t window;
    int lossless, follow, lines;
} start_opts_t;

/* Send a StartProcess for argv[0] with argv[1..]; returns its id. */
static inline uint64_t start_send(sa_client_t *c, const char *const *argv, size_t argc,
                                  const start_opts_t *o)
{
    static const start_opts_t none;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__StartProcess sp = SANDBOX__AGENT__V1__START_PROCESS__INIT;
    Sandbox__Agent__V1__Pty pty = SANDBOX__AGENT__V1__PTY__INIT;
    Sandbox__Agent__V1__StartProcess__EnvEntry e =
        SANDBOX__AGENT__V1__START_PROCESS__ENV_ENTRY__INIT, *ep = &e;
    if (!o)
        o = &none;
    sp.command = (char *)argv[0];
    sp.args = (char **)argv + 1;
    sp.n_args = argc - 1;
    if (o->user)
        sp.user = (char *)o->user;
    if (o->cwd)
        sp.cwd = (char *)o->cwd;
    if (o->tag)
        sp.tag = (char *)o->tag;
    if (o->env_k) {
        e.key = (char *)o->env_k;
        e.value = (char *)o->env_v;
        sp.env = &ep;
        sp.n_env = 1;
    }
    sp.clear_env = o->clear_env;
    if (o->pty) {
        pty.rows = o->pty_rows;
        pty.cols = o->pty_cols;
        sp.pty = &pty;
    }
    sp.stdin_mode = o->stdin_pipe ? SANDBOX__AGENT__V1__STDIN_MODE__STDIN_PIPE
                                  : SANDBOX__AGENT__V1__STDIN_MODE__STDIN_NULL;
    sp.timeout_ms = o->timeout_ms;
    sp.kill_grace_ms = o->kill_grace_ms;
    sp.output_window = o->window;
    sp.lossless = o->lossless;
    sp.follow = o->follow;
    sp.follow_lines = o->lines;
    req.op_case = OP(START);
    req.start = &sp;
    int rc = sa_client_send(c, &req);
    if (rc < 0)
        FAIL("send start: %s", strerror(-rc));
    return req.id;
}

/* Start and expect ProcessStarted; returns the pid (and the id in *id). */
static inline uint32_t start_argv(sa_client_t *c, const char *const *argv, size_t argc,
                                  const start_opts_t *o, uint64_t *id)
{
    uint64_t rid = start_send(c, argv, argc, o);
    Response *r = recv_id(c, rid);
    ASSERT_RESULT(r, STARTED);
    ASSERT_EQ(r->done, !(o && o->follow));
    uint32_t pid = r->started->pid;
    ASSERT_GT(pid, 0);
    sa_response_free(r);
    if (id)
        *id = rid;
    return pid;
}

static inline uint32_t start_sh(sa_client_t *c, const char *script, const start_opts_t *o,
                                uint64_t *id)
{
    const char *argv[] = {"/bin/sh", "-c", script};
    return start_argv(c, argv, 3, o, id);
}

static inline uint64_t follow_send(sa_client_t *c, uint32_t pid, uint64_t from, int lines,
                                   int no_wait)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FollowOutput f = SANDBOX__AGENT__V1__FOLLOW_OUTPUT__INIT;
    f.pid = pid;
    f.from_sequence = from;
    f.lines = lines;
    f.no_wait = no_wait;
    req.op_case = OP(FOLLOW);
    req.follow = &f;
    int rc = sa_client_send(c, &req);
    if (rc < 0)
        FAIL("send follow: %s", strerror(-rc));
    return req.id;
}

typedef struct collected {
    char *data;  /* all delivered bytes, in order */
    char *tags;  /* the stream of each byte */
    size_t len, cap;
    uint64_t next_seq; /* expected sequence of the next event */
    int started;
    int gaps;
    int last_gap;           /* the previous response was a gap */
    uint64_t last_gap_from; /* its from_sequence */
    uint64_t gap_bytes;
    uint64_t gap_per_stream[4];
    int exited;
    int exit_code, signal, timed_out;
    uint64_t total_output;
    int events;
} collected_t;

static inline void collected_free(collected_t *k)
{
    free(k->data);
    free(k->tags);
    memset(k, 0, sizeof *k);
}

/* Account for one response; returns 1 when it was the last. */
static inline int collect_one(collected_t *k, Response *r)
{
    int done = r->done;
    if (r->result_case == RES(OUTPUT)) {
        const OutputEvent *ev = r->output;
        k->last_gap = 0;
        if (k->started || k->events)
            ASSERT_EQ(ev->sequence, k->next_seq);
        k->started = 1;
        k->events++;
        if (k->len + ev->data.len > k->cap) {
            k->cap = (k->len + ev->data.len) * 2 + 4096;
            k->data = realloc(k->data, k->cap);
            k->tags = realloc(k->tags, k->cap);
            ASSERT(k->data && k->tags);
        }
        memcpy(k->data + k->len, ev->data.data, ev->data.len);
        memset(k->tags + k->len, (int)ev->stream, ev->data.len);
        k->len += ev->data.len;
        k->next_seq = ev->sequence + ev->data.len;
    } else if (r->result_case == RES(GAP)) {
        const OutputGap *g = r->gap;
        /* One gap per stream with skipped bytes: the same from and to. */
        if (k->started && !(k->last_gap && g->from_sequence == k->last_gap_from &&
                            g->to_sequence == k->next_seq))
            ASSERT_EQ(g->from_sequence, k->next_seq);
        k->last_gap = 1;
        k->last_gap_from = g->from_sequence;
        k->started = 1;
        k->gaps++;
        k->gap_bytes += g->skipped_bytes;
        k->gap_per_stream[g->stream & 3] += g->skipped_bytes;
        k->next_seq = g->to_sequence;
    } else if (r->result_case == RES(EXIT)) {
        ASSERT(done);
        k->exited = 1;
        k->exit_code = r->exit->exit_code;
        k->signal = r->exit->signal;
        k->timed_out = r->exit->timed_out;
        k->total_output = r->exit->total_output_bytes;
    } else if (r->result_case == RES(ERROR)) {
        FAIL("stream error %s: %s", sa_error_code_name(r->error->code), r->error->message);
    }
    sa_response_free(r);
    return done;
}

static inline void collect_until_done(sa_client_t *c, uint64_t id, collected_t *k)
{
    while (!collect_one(k, recv_id(c, id)))
        ;
}

/* Follow pid from the start to its exit. */
static inline void collect_all(sa_client_t *c, uint32_t pid, collected_t *k)
{
    memset(k, 0, sizeof *k);
    collect_until_done(c, follow_send(c, pid, 0, 0, 0), k);
}

static inline Response *send_signal(sa_client_t *c, uint32_t pid, int sig, int group)
{
    Sandbox__Agent__V1__SendSignal s = SANDBOX__AGENT__V1__SEND_SIGNAL__INIT;
    s.pid = pid;
    s.signal = sig;
    s.group = group;
    return simple(c, OP(SIGNAL), &s);
}

static inline Response *write_stdin(sa_client_t *c, uint32_t pid, const void *d, size_t n)
{
    Sandbox__Agent__V1__WriteStdin w = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
    w.pid = pid;
    w.data.data = (uint8_t *)d;
    w.data.len = n;
    return simple(c, OP(WRITE_STDIN), &w);
}

static inline Response *close_stdin(sa_client_t *c, uint32_t pid)
{
    Sandbox__Agent__V1__CloseStdin cs = SANDBOX__AGENT__V1__CLOSE_STDIN__INIT;
    cs.pid = pid;
    return simple(c, OP(CLOSE_STDIN), &cs);
}

static inline Response *wait_exit(sa_client_t *c, uint32_t pid)
{
    Sandbox__Agent__V1__WaitProcess w = SANDBOX__AGENT__V1__WAIT_PROCESS__INIT;
    w.pid = pid;
    return simple(c, OP(WAIT), &w);
}

/* Children of pid in state Z (zombies). */
static inline int zombie_children(pid_t parent)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;
    if (!d)
        return -1;
    while ((de = readdir(d))) {
        char path[300], buf[512];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *rp = strrchr(buf, ')');
        char st;
        int ppid;
        if (rp && sscanf(rp + 2, "%c %d", &st, &ppid) == 2 && ppid == parent && st == 'Z')
            n++;
    }
    closedir(d);
    return n;
}

/* Poll until no zombie children remain (reaping is asynchronous). */
static inline int zombies_settle(pid_t parent)
{
    int z = 0;
    for (int i = 0; i < 200; i++) {
        if ((z = zombie_children(parent)) == 0)
            return 0;
        usleep(10000);
    }
    return z;
}

#endif
