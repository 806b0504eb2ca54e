/* proc_env.c - what a child starts with: its environment (as ssh gives a
 * login), its PTY or its pipes.
 *
 * Errors: 0 (or a count) or a negative errno; nothing here answers. */
#include "proc_internal.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#define USER_PATH "/usr/local/bin:/usr/bin:/bin" /* a user other than root's */

void proc_ctx_free(proc_start_ctx_t *x)
{
    for (size_t i = 0; i < x->n_owned; i++)
        free(x->owned[i]);
    free(x->owned);
    free(x->envp);
    free(x->argv);
    for (int i = 0; i < x->n_fds; i++)
        if (x->fds[i] >= 0)
            close(x->fds[i]);
}

static int env_key_eq(const char *entry, const char *key, size_t klen)
{
    return !strncmp(entry, key, klen) && entry[klen] == '=';
}

static int env_set(proc_start_ctx_t *x, size_t *n, const char *key, const char *value)
{
    size_t klen = strlen(key), vlen = strlen(value);
    char *s = malloc(klen + vlen + 2);
    if (!s)
        return -ENOMEM;
    memcpy(s, key, klen);
    s[klen] = '=';
    memcpy(s + klen + 1, value, vlen + 1);
    x->owned[x->n_owned++] = s;
    for (size_t i = 0; i < *n; i++) {
        if (env_key_eq(x->envp[i], key, klen)) {
            x->envp[i] = s;
            return 0;
        }
    }
    x->envp[(*n)++] = s;
    return 0;
}

const char *proc_env_get(char **envp, size_t n, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (env_key_eq(envp[i], key, klen))
            return envp[i] + klen + 1;
    return NULL;
}

static int has_req_env(const StartProcess *sp, const char *key)
{
    for (size_t i = 0; i < sp->n_env; i++)
        if (!strcmp(sp->env[i]->key, key))
            return 1;
    return 0;
}

extern char **environ;

/* Left out of what a child inherits: they describe the agent's own shell. */
static int env_shell_var(const char *e)
{
    return !strncmp(e, "PWD=", 4) || !strncmp(e, "OLDPWD=", 7) || !strncmp(e, "_=", 2);
}

/* What another user's login keeps of the agent's environment. */
static int env_locale_var(const char *e)
{
    return !strncmp(e, "LANG=", 5) || !strncmp(e, "LANGUAGE=", 9) || !strncmp(e, "LC_", 3) ||
           !strncmp(e, "TZ=", 3);
}

/* envp, as ssh gives a login: the agent's environment (for another user
 * only its locale and TZ; never its PWD, OLDPWD, _), then the user's HOME,
 * USER, LOGNAME, SHELL and, unless the agent's own user inherits one, a
 * PATH; then on a PTY TERM; then the request's env, later ones winning.
 * clear_env: the request's env (and TERM) only. */
int proc_env_build(proc_start_ctx_t *x, const StartProcess *sp, const user_id_t *u, int set_user)
{
    size_t base = 0, n = 0;
    if (!sp->clear_env)
        while (environ[base])
            base++;
    size_t cap = base + sp->n_env + 8;
    x->envp = calloc(cap, sizeof *x->envp);
    x->owned = calloc(sp->n_env + 8, sizeof *x->owned);
    if (!x->envp || !x->owned)
        return -ENOMEM;
    for (size_t i = 0; i < base; i++)
        if (!env_shell_var(environ[i]) && (!set_user || env_locale_var(environ[i])))
            x->envp[n++] = environ[i];
    if (!sp->clear_env) {
        char uid[16];
        const char *name = u->name[0] ? u->name : uid;
        snprintf(uid, sizeof uid, "%u", (unsigned)u->uid);
        if (env_set(x, &n, "HOME", u->home) < 0 || env_set(x, &n, "USER", name) < 0 ||
            env_set(x, &n, "LOGNAME", name) < 0 ||
            env_set(x, &n, "SHELL", u->shell[0] ? u->shell : "/bin/sh") < 0)
            return -ENOMEM;
        if (!proc_env_get(x->envp, n, "PATH") &&
            env_set(x, &n, "PATH", u->uid == 0 ? PROC_DEFAULT_PATH : USER_PATH) < 0)
            return -ENOMEM;
    }
    if (sp->pty && !has_req_env(sp, "TERM") &&
        env_set(x, &n, "TERM", sp->pty->term && sp->pty->term[0] ? sp->pty->term
                                                                 : "xterm-256color") < 0)
        return -ENOMEM;
    for (size_t i = 0; i < sp->n_env; i++)
        if (env_set(x, &n, sp->env[i]->key, sp->env[i]->value) < 0)
            return -ENOMEM;
    x->envp[n] = NULL;
    return (int)n;
}

int proc_pty_open(const StartProcess *sp, int *master, int *slave, uint8_t *veof)
{
    char name[128];
    struct winsize ws = {0};
    struct termios t;
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), s = -1, e;
    if (m < 0)
        return -errno;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name) != 0)
        goto fail;
    if ((s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
        goto fail;
    ws.ws_row = (unsigned short)(sp->pty->rows ? sp->pty->rows : 24);
    ws.ws_col = (unsigned short)(sp->pty->cols ? sp->pty->cols : 80);
    if (ioctl(m, TIOCSWINSZ, &ws) < 0)
        goto fail;
    *veof = tcgetattr(s, &t) == 0 && t.c_cc[VEOF] ? t.c_cc[VEOF] : 4;
    if (util_set_nonblock_cloexec(m) < 0)
        goto fail;
    *master = m;
    *slave = s;
    return 0;
fail:
    e = errno ? errno : EIO;
    close(m);
    if (s >= 0)
        close(s);
    return -e;
}

int proc_pipe_make(int fds[2], int parent_end)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    /* A fresh pipe end has no status flags but its access mode, which
     * F_SETFL ignores: no F_GETFL needed. Only the agent's end is
     * non-blocking; the child's stays blocking. */
    fcntl(fds[parent_end], F_SETFL, O_NONBLOCK);
    return 0;
}
