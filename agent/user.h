/* user.h - resolving who a request acts as: "name", "uid" or "uid:gid",
 * with the user's supplementary groups and home directory; the agent's own
 * identity; uid and gid names.
 * Errors: functions return 0 or a negative errno, with the reason in err. */
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

/* The agent's own user (user_resolve(NULL)), resolved once: its identity
 * does not change, and a lookup reads nsswitch.conf and passwd. Loop
 * thread only. */
const user_id_t *user_self(void);

/* Name of a uid/gid into buf (the number when unknown); returns buf.
 * Cached, and safe on any thread (the file workers call it). */
const char *user_name(uid_t uid, char *buf, size_t len);
const char *user_group_name(gid_t gid, char *buf, size_t len);

#endif
