/* hooks.c - see hooks.h.
 *
 * A run is a small state machine on the loop:
 *   listing (a file worker reads the directory)
 *   -> for each hook: spawning (the spawner thread) -> running (its pipes,
 *      its time limit, its exit) -> next
 *   -> done() once.
 * Hooks run as root with the agent's environment, so only files the agent's
 * user owns and nobody else may write are run: anything else would let
 * whoever can write there run code as the agent. Exits are seen by an
 * ev_child watcher on pid 0 (as proc.c's): a hook that exits before its
 * start has been handed back to the loop is remembered by pid until it is.
 * Errors: as hooks.h: a hook that cannot start or fails is logged and
 * counted.
 */
#include "hooks.h"

#include "fsworker.h"
#include "log.h"
#include "spawn.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TAIL_MAX 512       /* bytes of stderr kept for a failure message */
#define LINE_MAX_LOG 512   /* a longer line is logged in pieces */
#define LINES_LOGGED 200   /* per hook; the rest is counted */
#define EARLY_MAX 8
#define NOTES_MAX 8

extern char **environ;

struct hooks_run {
    struct ev_loop *loop;
    char *dir;
    const char *kind;
    int stop_on_failure;
    uint32_t limit_ms;
    uint64_t generation;
    hooks_done_fn *done;
    void *arg;
    uint64_t t0, t1;
    int cancelled;

    /* listing */
    fsw_job_t list_job;
    int listing;
    int list_err;
    char *names[HOOKS_MAX];
    unsigned n, idx;
    char *notes[NOTES_MAX]; /* skipped entries, logged from the loop */
    unsigned n_notes;

    /* the hook running */
    ev_child child;
    spawn_job_t sj;
    int spawning;
    char path[PATH_MAX];
    char *argv[3];
    char **envp;
    char *env_owned[2];
    const char *name;
    pid_t pid;
    int status, timed_out;
    int fd[2];          /* stdout, stderr read ends */
    ev_io rio[2];
    ev_timer limit;
    char line[2][LINE_MAX_LOG];
    size_t llen[2];
    unsigned lines_logged, lines_dropped;
    char tail[TAIL_MAX];
    size_t tail_len;
    struct {
        pid_t pid;
        int status;
    } early[EARLY_MAX];
    unsigned n_early;

    char *failures[HOOKS_MAX_FAILURES];
    unsigned n_fail, n_fail_total, ran;
};

static void next_hook(hooks_run_t *r);

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void note(hooks_run_t *r, const char *fmt, const char *name, const char *why)
{
    char buf[512];
    if (r->n_notes == NOTES_MAX)
        return;
    snprintf(buf, sizeof buf, fmt, name, why);
    r->notes[r->n_notes] = strdup(buf);
    if (r->notes[r->n_notes])
        r->n_notes++;
}

/* On a file worker: the names of the hooks to run, sorted. */
static void list_run(fsw_job_t *j)
{
    hooks_run_t *r = SA_CONTAINER_OF(j, hooks_run_t, list_job);
    DIR *d = opendir(r->dir);
    struct dirent *de;
    uid_t me = geteuid();

    if (!d) {
        r->list_err = errno == ENOENT ? 0 : -errno;
        return;
    }
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        struct stat st;
        /* Hidden files, editor backups and package manager leftovers are
         * not hooks (as run-parts skips them). */
        if (n[0] == '.' || n[len - 1] == '~' || strstr(n, ".dpkg-") || strstr(n, ".rpmnew") ||
            strstr(n, ".rpmsave"))
            continue;
        if (fstatat(dirfd(d), n, &st, 0) < 0) {
            note(r, "hook '%s': %s; skipped", n, strerror(errno));
            continue;
        }
        if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR))
            continue;
        if (st.st_uid != me || (st.st_mode & (S_IWGRP | S_IWOTH))) {
            note(r, "hook '%s': %s; skipped", n,
                 st.st_uid != me ? "not owned by the agent's user"
                                 : "writable by group or others");
            continue;
        }
        if (r->n == HOOKS_MAX) {
            note(r, "hook '%s': %s; skipped", n, "more than 64 hooks in the directory");
            continue;
        }
        if (!(r->names[r->n] = strdup(n))) {
            r->list_err = -ENOMEM;
            break;
        }
        r->n++;
    }
    closedir(d);
    qsort(r->names, r->n, sizeof r->names[0], name_cmp);
}

static void run_free(hooks_run_t *r)
{
    for (unsigned i = 0; i < r->n; i++)
        free(r->names[i]);
    for (unsigned i = 0; i < r->n_notes; i++)
        free(r->notes[i]);
    for (unsigned i = 0; i < r->n_fail; i++)
        free(r->failures[i]);
    free(r->envp);
    free(r->env_owned[0]);
    free(r->env_owned[1]);
    free(r->dir);
    free(r);
}

static void fail(hooks_run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(hooks_run_t *r, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_warn("%s hook %s", r->kind, buf);
    r->n_fail_total++;
    if (r->n_fail < HOOKS_MAX_FAILURES) {
        char *s = util_utf8_sanitize(buf, strlen(buf));
        if (s)
            r->failures[r->n_fail++] = s;
    }
}

static void finish(hooks_run_t *r)
{
    ev_child_stop(r->loop, &r->child);
    r->t1 = util_now_mono_nano();
    if (r->ran || r->n_fail_total)
        log_info("%s hooks: %u run, %u failed, %.1f ms", r->kind, r->ran, r->n_fail_total,
                 (double)(r->t1 - r->t0) / 1e6);
    r->done(r, r->arg);
}

static void list_done(fsw_job_t *j)
{
    hooks_run_t *r = SA_CONTAINER_OF(j, hooks_run_t, list_job);
    r->listing = 0;
    if (r->cancelled) {
        run_free(r);
        return;
    }
    for (unsigned i = 0; i < r->n_notes; i++)
        log_warn("%s", r->notes[i]);
    if (r->list_err < 0)
        fail(r, "directory '%s': %s", r->dir, strerror(-r->list_err));
    next_hook(r);
}

/* ------------------------------------------------------------ output */

static void log_line(hooks_run_t *r, int which)
{
    if (r->lines_logged >= LINES_LOGGED) {
        r->lines_dropped++;
    } else {
        r->lines_logged++;
        log_info("%s hook %s %s: %.*s", r->kind, r->name, which ? "stderr" : "stdout",
                 (int)r->llen[which], r->line[which]);
    }
    r->llen[which] = 0;
}

static void take(hooks_run_t *r, int which, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            log_line(r, which);
            continue;
        }
        r->line[which][r->llen[which]++] = buf[i];
        if (r->llen[which] == LINE_MAX_LOG)
            log_line(r, which);
    }
    if (which == 1) {
        /* The last TAIL_MAX bytes of stderr. */
        if (n >= TAIL_MAX) {
            memcpy(r->tail, buf + n - TAIL_MAX, TAIL_MAX);
            r->tail_len = TAIL_MAX;
        } else {
            size_t keep = SA_MIN(r->tail_len, TAIL_MAX - n);
            memmove(r->tail, r->tail + r->tail_len - keep, keep);
            memcpy(r->tail + keep, buf, n);
            r->tail_len = keep + n;
        }
    }
}

/* Read what the pipe holds now. Returns 1 at EOF or error (fd closed). */
static int drain(hooks_run_t *r, int which)
{
    char buf[4096];
    for (;;) {
        ssize_t n = util_read(r->fd[which], buf, sizeof buf);
        if (n > 0) {
            take(r, which, buf, (size_t)n);
            continue;
        }
        if (n == -EAGAIN)
            return 0;
        /* EOF or error: this stream is over. Watcher first, then the fd. */
        ev_io_stop(r->loop, &r->rio[which]);
        close(r->fd[which]);
        r->fd[which] = -1;
        return 1;
    }
}

static void on_output(struct ev_loop *loop, ev_io *w, int revents)
{
    hooks_run_t *r = w->data;
    drain(r, w == &r->rio[1]);
}

/* ------------------------------------------------------------ one hook */

static void close_pipes(hooks_run_t *r)
{
    for (int i = 0; i < 2; i++) {
        if (r->fd[i] >= 0) {
            ev_io_stop(r->loop, &r->rio[i]);
            close(r->fd[i]);
            r->fd[i] = -1;
        }
    }
}

/* The hook exited: take the rest of its output (a grandchild that keeps
 * the pipe open is not waited for), judge, and go on. */
static void hook_end(hooks_run_t *r)
{
    ev_timer_stop(r->loop, &r->limit);
    for (int i = 0; i < 2; i++)
        if (r->fd[i] >= 0)
            drain(r, i);
    close_pipes(r);
    for (int i = 0; i < 2; i++)
        if (r->llen[i])
            log_line(r, i);
    if (r->lines_dropped)
        log_info("%s hook %s: %u more lines of output not logged", r->kind, r->name,
                 r->lines_dropped);

    char tail[TAIL_MAX + 1];
    size_t tl = r->tail_len;
    while (tl && (r->tail[tl - 1] == '\n' || r->tail[tl - 1] == '\r'))
        tl--;
    memcpy(tail, r->tail, tl);
    tail[tl] = 0;
    if (r->timed_out)
        fail(r, "%s: killed after its time limit of %u ms%s%s", r->name, r->limit_ms,
             tl ? ": " : "", tail);
    else if (WIFEXITED(r->status) && WEXITSTATUS(r->status) != 0)
        fail(r, "%s: exit status %d%s%s", r->name, WEXITSTATUS(r->status), tl ? ": " : "",
             tail);
    else if (WIFSIGNALED(r->status))
        fail(r, "%s: killed by signal %d (%s)%s%s", r->name, WTERMSIG(r->status),
             strsignal(WTERMSIG(r->status)), tl ? ": " : "", tail);
    r->pid = 0;
    next_hook(r);
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    hooks_run_t *r = w->data;
    if (r->pid > 0 && w->rpid == r->pid) {
        r->status = w->rstatus;
        hook_end(r);
    } else if (r->spawning && r->n_early < EARLY_MAX) {
        r->early[r->n_early].pid = w->rpid;
        r->early[r->n_early].status = w->rstatus;
        r->n_early++;
    }
}

static void on_limit(struct ev_loop *loop, ev_timer *w, int revents)
{
    hooks_run_t *r = w->data;
    log_warn("%s hook %s: time limit of %u ms reached; SIGKILL to its group", r->kind,
             r->name, r->limit_ms);
    r->timed_out = 1;
    kill(-r->pid, SIGKILL);
}

static void on_spawned(spawn_job_t *sj)
{
    hooks_run_t *r = SA_CONTAINER_OF(sj, hooks_run_t, sj);
    r->spawning = 0;
    /* stdin and the write ends belong to the child now. */
    close(sj->req.fd_in);
    close(sj->req.fd_out);
    close(sj->req.fd_err);
    if (r->cancelled) {
        if (sj->rc == 0)
            kill(-sj->pid, SIGKILL);
        close_pipes(r);
        run_free(r);
        return;
    }
    if (sj->rc < 0) {
        close_pipes(r);
        fail(r, "%s: cannot start (%s): %s", r->name, spawn_stage_name(sj->stage),
             strerror(-sj->rc));
        next_hook(r);
        return;
    }
    r->pid = sj->pid;
    r->ran++;
    for (int i = 0; i < 2; i++)
        ev_io_start(r->loop, &r->rio[i]);
    ev_timer_set(&r->limit, r->limit_ms / 1000.0, 0);
    ev_timer_start(r->loop, &r->limit);
    for (unsigned i = 0; i < r->n_early; i++) {
        if (r->early[i].pid == r->pid) {
            r->status = r->early[i].status;
            r->n_early = 0;
            hook_end(r);
            return;
        }
    }
    r->n_early = 0;
}

/* envp: the agent's environment (which holds what Restored merged) and
 * the hook's two variables. */
static int build_env(hooks_run_t *r)
{
    size_t n = 0, o = 0;
    while (environ[n])
        n++;
    free(r->envp);
    free(r->env_owned[0]);
    free(r->env_owned[1]);
    r->envp = calloc(n + 3, sizeof *r->envp);
    r->env_owned[0] = malloc(64);
    r->env_owned[1] = malloc(64);
    if (!r->envp || !r->env_owned[0] || !r->env_owned[1])
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SANDBOX_AGENT_HOOK=", 19) &&
            strncmp(environ[i], "SANDBOX_AGENT_GENERATION=", 25))
            r->envp[o++] = environ[i];
    snprintf(r->env_owned[0], 64, "SANDBOX_AGENT_HOOK=%s", r->kind);
    snprintf(r->env_owned[1], 64, "SANDBOX_AGENT_GENERATION=%llu",
             (unsigned long long)r->generation);
    r->envp[o++] = r->env_owned[0];
    r->envp[o++] = r->env_owned[1];
    r->envp[o] = NULL;
    return 0;
}

static void next_hook(hooks_run_t *r)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, devnull = -1;

    if (r->idx == r->n || (r->stop_on_failure && r->n_fail_total)) {
        finish(r);
        return;
    }
    r->name = r->names[r->idx++];
    snprintf(r->path, sizeof r->path, "%s/%s", r->dir, r->name);
    r->timed_out = 0;
    r->status = 0;
    r->tail_len = 0;
    r->llen[0] = r->llen[1] = 0;
    r->lines_logged = r->lines_dropped = 0;
    if (build_env(r) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        int e = errno ? errno : ENOMEM;
        for (int i = 0; i < 2; i++) {
            if (out[i] >= 0)
                close(out[i]);
            if (err[i] >= 0)
                close(err[i]);
        }
        fail(r, "%s: cannot start: %s", r->name, strerror(e));
        next_hook(r);
        return;
    }
    r->fd[0] = out[0];
    r->fd[1] = err[0];
    util_set_nonblock_cloexec(out[0]);
    util_set_nonblock_cloexec(err[0]);
    ev_io_init(&r->rio[0], on_output, out[0], EV_READ);
    ev_io_init(&r->rio[1], on_output, err[0], EV_READ);
    r->rio[0].data = r->rio[1].data = r;
    r->argv[0] = r->path;
    r->argv[1] = (char *)r->kind;
    r->argv[2] = NULL;
    memset(&r->sj, 0, sizeof r->sj);
    r->sj.req.command = r->path;
    r->sj.req.argv = r->argv;
    r->sj.req.envp = r->envp;
    r->sj.req.path = "/usr/sbin:/usr/bin:/sbin:/bin";
    r->sj.req.cwd = "/";
    r->sj.req.fd_in = devnull;
    r->sj.req.fd_out = out[1];
    r->sj.req.fd_err = err[1];
    r->sj.req.reset_oom = 1;
    r->sj.req.reset_nice = 1;
    r->sj.done = on_spawned;
    r->spawning = 1;
    r->n_early = 0;
    /* The three descriptors are the child's from here; on_spawned closes
     * our copies once the spawner is done with them. */
    spawn_submit(&r->sj);
}

/* ------------------------------------------------------------ the run */

hooks_run_t *hooks_start(struct ev_loop *loop, const char *dir, const char *kind,
                         int stop_on_failure, uint32_t limit_ms, uint64_t generation,
                         hooks_done_fn *done, void *arg)
{
    hooks_run_t *r = calloc(1, sizeof *r);
    if (!r || !(r->dir = strdup(dir))) {
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->kind = kind;
    r->stop_on_failure = stop_on_failure;
    r->limit_ms = limit_ms ? limit_ms : 1;
    r->generation = generation;
    r->done = done;
    r->arg = arg;
    r->fd[0] = r->fd[1] = -1;
    r->t0 = util_now_mono_nano();
    ev_child_init(&r->child, on_child, 0, 0);
    r->child.data = r;
    ev_child_start(loop, &r->child);
    ev_init(&r->limit, on_limit);
    r->limit.data = r;
    r->listing = 1;
    r->list_job.run = list_run;
    r->list_job.done = list_done;
    r->list_job.user = NULL;
    fsw_submit(&r->list_job);
    return r;
}

void hooks_cancel(hooks_run_t *r)
{
    if (!r)
        return;
    r->cancelled = 1;
    ev_child_stop(r->loop, &r->child);
    ev_timer_stop(r->loop, &r->limit);
    if (r->pid > 0) {
        log_warn("%s hook %s: cancelled; SIGKILL to its group", r->kind, r->name);
        kill(-r->pid, SIGKILL);
        r->pid = 0;
    }
    close_pipes(r);
    /* A listing or a start in flight frees the run when it comes back. */
    if (!r->listing && !r->spawning)
        run_free(r);
}

unsigned hooks_failures(const hooks_run_t *r, const char *const **out)
{
    *out = (const char *const *)r->failures;
    return r->n_fail;
}

unsigned hooks_ran(const hooks_run_t *r) { return r->ran; }

uint64_t hooks_nanos(const hooks_run_t *r) { return r->t1 - r->t0; }

void hooks_free(hooks_run_t *r)
{
    if (r)
        run_free(r);
}
