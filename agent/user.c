/* user.c - see user.h. getpwnam and friends may read files or ask NSS; they
 * are called once per request that names a user, never per output byte.
 * Errors: a negative errno, with a reason written into the caller's buffer;
 * nothing here answers a request. */
#include "user.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_id(const char *s, unsigned long *out)
{
    char *end;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoul(s, &end, 10);
    if (errno || *end || *out > 0x7fffffffUL)
        return -1;
    return 0;
}

static void fill_from_passwd(user_id_t *u, const struct passwd *pw)
{
    snprintf(u->name, sizeof u->name, "%s", pw->pw_name);
    snprintf(u->home, sizeof u->home, "%s", pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/");
    snprintf(u->shell, sizeof u->shell, "%s", pw->pw_shell ? pw->pw_shell : "");
}

int user_resolve(const char *spec, user_id_t *out, char *err, size_t errlen)
{
    char ubuf[128], *colon;
    const char *gpart = NULL;
    unsigned long id;
    struct passwd *pw = NULL;

    memset(out, 0, sizeof *out);
    snprintf(out->home, sizeof out->home, "/");
    if (!spec || !*spec) {
        out->uid = geteuid();
        out->gid = getegid();
        if ((pw = getpwuid(out->uid)))
            fill_from_passwd(out, pw);
        int n = getgroups(USER_MAX_GROUPS, out->groups);
        out->n_groups = n < 0 ? 0 : n;
        return 0;
    }
    if (strlen(spec) >= sizeof ubuf) {
        snprintf(err, errlen, "user '%.40s...': too long", spec);
        return -EINVAL;
    }
    snprintf(ubuf, sizeof ubuf, "%s", spec);
    if ((colon = strchr(ubuf, ':'))) {
        *colon = 0;
        gpart = colon + 1;
    }
    if (parse_id(ubuf, &id) == 0) {
        out->uid = (uid_t)id;
        if ((pw = getpwuid(out->uid))) {
            fill_from_passwd(out, pw);
            out->gid = pw->pw_gid;
        } else {
            out->gid = (gid_t)id; /* no entry: the same number as its group */
        }
    } else {
        if (!ubuf[0] || !(pw = getpwnam(ubuf))) {
            snprintf(err, errlen, "user '%s': no such user", ubuf);
            return -ENOENT;
        }
        out->uid = pw->pw_uid;
        out->gid = pw->pw_gid;
        fill_from_passwd(out, pw);
    }
    if (gpart) {
        if (parse_id(gpart, &id) == 0) {
            out->gid = (gid_t)id;
        } else {
            struct group *gr = *gpart ? getgrnam(gpart) : NULL;
            if (!gr) {
                snprintf(err, errlen, "user '%s': no such group '%s'", spec, gpart);
                return -ENOENT;
            }
            out->gid = gr->gr_gid;
        }
    }
    out->n_groups = USER_MAX_GROUPS;
    if (out->name[0] && getgrouplist(out->name, out->gid, out->groups, &out->n_groups) < 0)
        out->n_groups = USER_MAX_GROUPS; /* truncated: keep the first ones */
    if (!out->name[0]) {
        out->groups[0] = out->gid;
        out->n_groups = 1;
    }
    return 0;
}

/* ------------------------------------------------------------ the agent */

const user_id_t *user_self(void)
{
    static user_id_t self;
    static int have;
    char err[128];
    if (!have && user_resolve(NULL, &self, err, sizeof err) == 0)
        have = 1;
    return &self;
}

/* ------------------------------------------------------------ id names */

/* uid and gid names, shared by the file workers: getpw*_r under one lock,
 * with a small cache because a listing asks for the same few ids. */
#define NAME_CACHE 32
typedef struct name_ent {
    unsigned id;
    int valid, group;
    char name[64];
} name_ent_t;
static name_ent_t g_names[NAME_CACHE];
static unsigned g_names_next;
static pthread_mutex_t g_names_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *id_name(int group, unsigned id, char *out, size_t len)
{
    char buf[4096];
    pthread_mutex_lock(&g_names_mu);
    for (int i = 0; i < NAME_CACHE; i++) {
        if (g_names[i].valid && g_names[i].group == group && g_names[i].id == id) {
            snprintf(out, len, "%s", g_names[i].name);
            pthread_mutex_unlock(&g_names_mu);
            return out;
        }
    }
    name_ent_t *e = &g_names[g_names_next++ % NAME_CACHE];
    e->valid = 1;
    e->group = group;
    e->id = id;
    e->name[0] = 0;
    if (group) {
        struct group gr, *res = NULL;
        if (getgrgid_r((gid_t)id, &gr, buf, sizeof buf, &res) == 0 && res)
            snprintf(e->name, sizeof e->name, "%s", gr.gr_name);
    } else {
        struct passwd pw, *res = NULL;
        if (getpwuid_r((uid_t)id, &pw, buf, sizeof buf, &res) == 0 && res)
            snprintf(e->name, sizeof e->name, "%s", pw.pw_name);
    }
    if (!e->name[0])
        snprintf(e->name, sizeof e->name, "%u", id);
    snprintf(out, len, "%s", e->name);
    pthread_mutex_unlock(&g_names_mu);
    return out;
}

const char *user_name(uid_t uid, char *buf, size_t len)
{
    return id_name(0, (unsigned)uid, buf, len);
}

const char *user_group_name(gid_t gid, char *buf, size_t len)
{
    return id_name(1, (unsigned)gid, buf, len);
}
