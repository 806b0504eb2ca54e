/* user.h - resolving who a request acts as: "name", "uid" or "uid:gid",
 * with the user's supplementary groups and home directory. */
#ifndef SA_USER_H
#define SA_USER_H

#include <stddef.h>
#include <sys/types.h>

#define USER_MAX_GROUPS 64

typedef struct user_id {
    uid_t uid;
    gid_t gid;
    int n_groups;              /* supplementary groups, gid included */
    gid_t groups[USER_MAX_GROUPS];
    char name[64];             /* "" when the uid has no passwd entry */
    char home[256];            /* "/" when unknown */
    char shell[128];
} user_id_t;

/* Resolve spec. An empty or NULL spec is the agent's own user. Returns 0, or
 * -ENOENT (unknown user or group name) / -EINVAL (malformed) with a readable
 * reason in err. */
int user_resolve(const char *spec, user_id_t *out, char *err, size_t errlen);

/* Name of a uid/gid into buf (the number when unknown). Cached. */
const char *user_name(uid_t uid, char *buf, size_t len);
const char *group_name(gid_t gid, char *buf, size_t len);

#endif
