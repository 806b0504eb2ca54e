/* proc_check.c - what a start is refused for, and how a failed start is
 * told: the request's fields and sizes, shutdown, the limit on processes,
 * and the answer for a spawn that failed.
 *
 * Errors: a check returns 0, or -1 with a proc_start_err_t filled (code, errno,
 * message), which its caller answers: the StartProcess handler with an
 * Error, a service's restart through svc_respawn_failed(), services.d in
 * its log. proc_start_reply_error() answers on the connection itself. */
#include "proc_internal.h"

#include "config.h"
#include "errcode.h"
#include "service.h"
#include "spawn.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* What a ProcessInfo echoes must fit an answer: the tag is a label (the
 * documented limit), command and cwd are paths, user a name; each argument
 * and environment entry is at most what exec takes (MAX_ARG_STRLEN). */
#define TAG_MAX 256
#define USER_SPEC_MAX 256
#define ARG_STR_MAX (128 * 1024)

int proc_start_refuse(proc_start_err_t *e, int code, int os_errno, const char *fmt, ...)
{
    va_list ap;
    e->code = code;
    e->os_errno = os_errno;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int proc_start_refuse_errno(proc_start_err_t *e, int rc, const char *msg)
{
    return proc_start_refuse(e, errcode_from_errno(rc), -rc, "%s", msg);
}

/* Everything a ProcessInfo echoes must fit in an answer, so that GetProcess
 * and ListProcesses can always answer: the strings are bounded here. */
static int start_check_sizes(const StartProcess *sp, proc_start_err_t *e)
{
    char what[64] = "";
    size_t n = 0, max = 0;
    int err = 0;

    if ((n = sp->tag ? strlen(sp->tag) : 0) > TAG_MAX) {
        snprintf(what, sizeof what, "tag");
        max = TAG_MAX;
    } else if ((n = strlen(sp->command)) >= PATH_MAX) {
        snprintf(what, sizeof what, "command");
        max = PATH_MAX - 1;
        err = ENAMETOOLONG;
    } else if ((n = sp->cwd ? strlen(sp->cwd) : 0) >= PATH_MAX) {
        snprintf(what, sizeof what, "cwd");
        max = PATH_MAX - 1;
        err = ENAMETOOLONG;
    } else if ((n = sp->user ? strlen(sp->user) : 0) > USER_SPEC_MAX) {
        snprintf(what, sizeof what, "user");
        max = USER_SPEC_MAX;
    }
    for (size_t i = 0; !what[0] && i < sp->n_args; i++) {
        if ((n = strlen(sp->args[i])) >= ARG_STR_MAX) {
            snprintf(what, sizeof what, "argument %zu", i + 1);
            max = ARG_STR_MAX - 1;
            err = E2BIG;
        }
    }
    for (size_t i = 0; !what[0] && i < sp->n_env; i++) {
        const Sandbox__Agent__V1__StartProcess__EnvEntry *en = sp->env[i];
        if ((n = strlen(en->key ? en->key : "") + 1 + strlen(en->value ? en->value : "")) >=
            ARG_STR_MAX) {
            snprintf(what, sizeof what, "env entry %zu", i + 1);
            max = ARG_STR_MAX - 1;
            err = E2BIG;
        }
    }
    if (!what[0])
        return 0;
    return proc_start_refuse(e, CODE(INVALID_ARGUMENT), err,
                             "start: %s of %zu bytes is longer than %zu", what, n, max);
}

static int valid_env_key(const char *k)
{
    return k && k[0] && !strchr(k, '=');
}

/* What a start request alone can be refused for, before anything is made:
 * its fields, shutdown, the limit on processes. 0, or -1 with e filled. */
int proc_start_check(const StartProcess *sp, const proc_t *rec, proc_start_err_t *e)
{
    if (!sp->command || !sp->command[0])
        return proc_start_refuse(e, CODE(INVALID_ARGUMENT), 0, "start: command is empty");
    if (start_check_sizes(sp, e) < 0)
        return -1;
    for (size_t i = 0; i < sp->n_env; i++) {
        if (!valid_env_key(sp->env[i]->key))
            return proc_start_refuse(
                e, CODE(INVALID_ARGUMENT), 0,
                "start: env key '%s' is not a valid name (empty or contains '=')",
                sp->env[i]->key ? sp->env[i]->key : "");
    }
    if (sp->pty && (sp->pty->rows > 65535 || sp->pty->cols > 65535))
        return proc_start_refuse(e, CODE(INVALID_ARGUMENT), 0,
                                 "start: pty size %ux%u is out of range (1..65535)", sp->pty->rows,
                                 sp->pty->cols);
    if (proc_shutdown_done)
        return proc_start_refuse(e, CODE(UNAVAILABLE), 0, "start: the agent is shutting down");
    /* Services waiting to restart count: each holds its record and log. A
     * service's own next run is not counted twice. */
    unsigned busy = proc_n_running + proc_n_spawning + svc_count_waiting() - (rec ? 1 : 0);
    if (busy >= g_config.max_processes)
        return proc_start_refuse(e, CODE(RESOURCE_EXHAUSTED), 0,
                                 "start: %u processes are running or waiting to restart, the limit "
                                 "(--max-processes) is %u",
                                 busy, g_config.max_processes);
    return 0;
}

int proc_start_reply_error(conn_t *c, uint64_t id, int rc, enum spawn_stage st,
                           const StartProcess *sp)
{
    int e = -rc;
    switch (st) {
    case SPAWN_EXEC:
        if (e == E2BIG)
            return conn_send_errno(c, id, rc,
                                   "command '%s': arguments and environment too large for exec "
                                   "(%zu args, %zu env entries): %s",
                                   sp->command, sp->n_args, sp->n_env, strerror(e));
        return conn_send_errno(c, id, rc, "command '%s': %s", sp->command, strerror(e));
    case SPAWN_CWD:
        return conn_send_errno(c, id, rc, "cwd '%s': %s", sp->cwd, strerror(e));
    case SPAWN_CGROUP:
        return conn_send_errno(c, id, rc, "command '%s': cannot start it in its cgroup: %s",
                               sp->command, strerror(e));
    case SPAWN_GROUPS:
    case SPAWN_GID:
    case SPAWN_UID:
        return conn_send_errno(c, id, rc, "user '%s': %s: %s", sp->user, spawn_stage_name(st),
                               strerror(e));
    case SPAWN_FORK:
        if (e == EAGAIN || e == ENOMEM)
            return conn_send_error(c, id, CODE(RESOURCE_EXHAUSTED), e,
                                   "cannot start '%s': the system refuses more processes "
                                   "(%s; see ulimit -u, pids.max)",
                                   sp->command, strerror(e));
        return conn_send_errno(c, id, rc, "cannot start '%s': %s", sp->command, strerror(e));
    default:
        return conn_send_errno(c, id, rc, "command '%s': %s: %s", sp->command,
                               spawn_stage_name(st), strerror(e));
    }
}
