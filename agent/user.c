/* user.c - see user.h. getpwnam and friends may read files or ask NSS; they
 * are called once per request that names a user, never per output byte. */
#include "user.h"

#include <errno.h>
#include <grp.h>
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

/* A small cache: ls -l of a big directory asks for the same few ids. */
#define NAME_CACHE 16
typedef struct name_ent {
    unsigned id;
    int valid;
    char name[64];
} name_ent_t;

static const char *cached_name(name_ent_t *cache, unsigned *next, unsigned id, int is_group,
                               char *buf, size_t len)
{
    for (int i = 0; i < NAME_CACHE; i++) {
        if (cache[i].valid && cache[i].id == id) {
            snprintf(buf, len, "%s", cache[i].name);
            return buf;
        }
    }
    name_ent_t *e = &cache[(*next)++ % NAME_CACHE];
    e->id = id;
    e->valid = 1;
    if (is_group) {
        struct group *gr = getgrgid((gid_t)id);
        snprintf(e->name, sizeof e->name, gr ? "%s" : "%.0s", gr ? gr->gr_name : "");
    } else {
        struct passwd *pw = getpwuid((uid_t)id);
        snprintf(e->name, sizeof e->name, pw ? "%s" : "%.0s", pw ? pw->pw_name : "");
    }
    if (!e->name[0])
        snprintf(e->name, sizeof e->name, "%u", id);
    snprintf(buf, len, "%s", e->name);
    return buf;
}

const char *user_name(uid_t uid, char *buf, size_t len)
{
    static name_ent_t cache[NAME_CACHE];
    static unsigned next;
    return cached_name(cache, &next, (unsigned)uid, 0, buf, len);
}

const char *group_name(gid_t gid, char *buf, size_t len)
{
    static name_ent_t cache[NAME_CACHE];
    static unsigned next;
    return cached_name(cache, &next, (unsigned)gid, 1, buf, len);
}
