/* Unit tests of user resolution (agent/user.c): "name", "uid" and
 * "uid:gid" into the ids, groups and home a request acts with, the
 * mistakes, the agent's own identity, and the uid/gid name cache. The expected values come from
 * this machine's passwd and group databases, asked directly. */
#include "harness.h"
#include "user.h"

#include <grp.h>
#include <pwd.h>

/* A uid (and gid) no passwd or group entry has. */
static unsigned unused_id(void)
{
    for (unsigned id = 4242421; id < 4242521; id++)
        if (!getpwuid((uid_t)id) && !getgrgid((gid_t)id))
            return id;
    FAIL("every id tried has an entry");
}

/* A group other than root's (gid != 0), or NULL. */
static struct group *other_group(void)
{
    struct group *gr;
    setgrent();
    while ((gr = getgrent()) && gr->gr_gid == 0)
        ;
    endgrent();
    return gr;
}

static int has_group(const user_id_t *u, gid_t g)
{
    for (int i = 0; i < u->n_groups; i++)
        if (u->groups[i] == g)
            return 1;
    return 0;
}

TEST(empty_is_the_agents_own_user)
{
    user_id_t u;
    char err[128] = "";
    ASSERT_EQ(user_resolve(NULL, &u, err, sizeof err), 0);
    ASSERT_EQ(u.uid, geteuid());
    ASSERT_EQ(u.gid, getegid());
    struct passwd *pw = getpwuid(geteuid());
    ASSERT(pw);
    ASSERT_STR_EQ(u.name, pw->pw_name);
    ASSERT_STR_EQ(u.home, pw->pw_dir[0] ? pw->pw_dir : "/");
    ASSERT_EQ(u.n_groups, getgroups(0, NULL));
    user_id_t v;
    ASSERT_EQ(user_resolve("", &v, err, sizeof err), 0);
    ASSERT_EQ(v.uid, u.uid);
    ASSERT_EQ(v.gid, u.gid);
}

TEST(the_agents_own_identity_is_resolved_once)
{
    user_id_t u;
    char err[128];
    ASSERT_EQ(user_resolve(NULL, &u, err, sizeof err), 0);
    const user_id_t *self = user_self();
    ASSERT(self);
    ASSERT_EQ(self->uid, u.uid);
    ASSERT_EQ(self->gid, u.gid);
    ASSERT_STR_EQ(self->name, u.name);
    ASSERT_STR_EQ(self->home, u.home);
    ASSERT_EQ(self->n_groups, u.n_groups);
    ASSERT(user_self() == self);
}

TEST(a_name_and_its_number_are_the_same_user)
{
    user_id_t byname, bynum;
    char err[128] = "";
    struct passwd *pw = getpwnam("root");
    ASSERT(pw);
    ASSERT_EQ(user_resolve("root", &byname, err, sizeof err), 0);
    ASSERT_EQ(byname.uid, 0);
    ASSERT_EQ(byname.gid, pw->pw_gid);
    ASSERT_STR_EQ(byname.name, "root");
    ASSERT_STR_EQ(byname.home, pw->pw_dir);
    ASSERT_STR_EQ(byname.shell, pw->pw_shell);
    ASSERT(has_group(&byname, pw->pw_gid));
    ASSERT_EQ(user_resolve("0", &bynum, err, sizeof err), 0);
    ASSERT_EQ(bynum.uid, byname.uid);
    ASSERT_EQ(bynum.gid, byname.gid);
    ASSERT_STR_EQ(bynum.name, byname.name);
    ASSERT_STR_EQ(bynum.home, byname.home);
    ASSERT_EQ(bynum.n_groups, byname.n_groups);
}

TEST(supplementary_groups_are_the_users)
{
    struct passwd *pw = getpwnam("root");
    ASSERT(pw);
    gid_t want[USER_MAX_GROUPS];
    int n = USER_MAX_GROUPS;
    ASSERT(getgrouplist("root", pw->pw_gid, want, &n) >= 0);
    user_id_t u;
    char err[128];
    ASSERT_EQ(user_resolve("root", &u, err, sizeof err), 0);
    ASSERT_EQ(u.n_groups, n);
    for (int i = 0; i < n; i++)
        ASSERT(has_group(&u, want[i]));
}

TEST(a_uid_without_an_entry_is_its_own_group)
{
    unsigned id = unused_id();
    char spec[32], err[128];
    user_id_t u;
    snprintf(spec, sizeof spec, "%u", id);
    ASSERT_EQ(user_resolve(spec, &u, err, sizeof err), 0);
    ASSERT_EQ(u.uid, id);
    ASSERT_EQ(u.gid, id);
    ASSERT_STR_EQ(u.name, "");
    ASSERT_STR_EQ(u.home, "/");
    ASSERT_EQ(u.n_groups, 1);
    ASSERT_EQ(u.groups[0], id);
}

TEST(uid_colon_gid)
{
    unsigned id = unused_id();
    char spec[64], err[128];
    user_id_t u;
    snprintf(spec, sizeof spec, "%u:%u", id, id + 1);
    ASSERT_EQ(user_resolve(spec, &u, err, sizeof err), 0);
    ASSERT_EQ(u.uid, id);
    ASSERT_EQ(u.gid, id + 1);
    ASSERT_EQ(u.n_groups, 1);
    ASSERT_EQ(u.groups[0], id + 1);
    /* A group by name replaces the user's primary group. */
    struct group *gr = other_group();
    if (!gr) {
        printf("  (no group but root's here: the group name case is not tried)\n");
        return;
    }
    gid_t g = gr->gr_gid;
    snprintf(spec, sizeof spec, "root:%s", gr->gr_name);
    ASSERT_EQ(user_resolve(spec, &u, err, sizeof err), 0);
    ASSERT_EQ(u.uid, 0);
    ASSERT_EQ(u.gid, g);
    ASSERT(has_group(&u, g));
}

TEST(mistakes_are_named)
{
    user_id_t u;
    char err[256], spec[300];
    ASSERT_EQ(user_resolve("no-such-user-sa-test", &u, err, sizeof err), -ENOENT);
    ASSERT(strstr(err, "no-such-user-sa-test"));
    ASSERT(strstr(err, "no such user"));
    ASSERT_EQ(user_resolve("root:no-such-group-sa-test", &u, err, sizeof err), -ENOENT);
    ASSERT(strstr(err, "no such group 'no-such-group-sa-test'"));
    ASSERT_EQ(user_resolve("root:", &u, err, sizeof err), -ENOENT);
    ASSERT_EQ(user_resolve(":0", &u, err, sizeof err), -ENOENT);
    /* Not a number, so a name, and no user is called that. */
    ASSERT_EQ(user_resolve("-1", &u, err, sizeof err), -ENOENT);
    ASSERT_EQ(user_resolve("2147483648", &u, err, sizeof err), -ENOENT);
    ASSERT_EQ(user_resolve("12abc", &u, err, sizeof err), -ENOENT);
    memset(spec, 'a', 200);
    spec[200] = 0;
    ASSERT_EQ(user_resolve(spec, &u, err, sizeof err), -EINVAL);
    ASSERT(strstr(err, "too long"));
    /* The largest uid accepted. */
    ASSERT_EQ(user_resolve("2147483647", &u, err, sizeof err), 0);
    ASSERT_EQ(u.uid, 2147483647u);
}

TEST(names_of_ids_and_the_cache)
{
    char buf[64];
    unsigned id = unused_id();
    ASSERT_STR_EQ(user_name(0, buf, sizeof buf), "root");
    struct group *g0 = getgrgid(0);
    ASSERT(g0);
    ASSERT_STR_EQ(user_group_name(0, buf, sizeof buf), g0->gr_name);
    char want[16];
    snprintf(want, sizeof want, "%u", id);
    ASSERT_STR_EQ(user_name((uid_t)id, buf, sizeof buf), want);
    ASSERT_STR_EQ(user_group_name((gid_t)id, buf, sizeof buf), want);
    /* More ids than the cache holds, then the first ones again. */
    for (unsigned k = 0; k < 40; k++)
        user_name((uid_t)(id + k), buf, sizeof buf);
    ASSERT_STR_EQ(user_name(0, buf, sizeof buf), "root");
    ASSERT_STR_EQ(user_name((uid_t)id, buf, sizeof buf), want);
    /* A short buffer gets a cut name, never an overrun. */
    char small[3];
    ASSERT_STR_EQ(user_name(0, small, sizeof small), "ro");
}

TEST_MAIN(TEST_ENTRY(empty_is_the_agents_own_user),
          TEST_ENTRY(the_agents_own_identity_is_resolved_once),
          TEST_ENTRY(a_name_and_its_number_are_the_same_user),
          TEST_ENTRY(supplementary_groups_are_the_users),
          TEST_ENTRY(a_uid_without_an_entry_is_its_own_group), TEST_ENTRY(uid_colon_gid),
          TEST_ENTRY(mistakes_are_named), TEST_ENTRY(names_of_ids_and_the_cache))
