/* tmpdir.h - a scratch directory per test file: define TMPDIR_PREFIX (e.g.
 * "/tmp/sa-fs-") before including. tmpdir_make() creates it (mode 0755, so
 * tests acting as another user can enter it), tmpdir_remove() deletes it,
 * and P("name") gives "<dir>/name" in one of eight rotating buffers. */
#ifndef SA_TEST_TMPDIR_H
#define SA_TEST_TMPDIR_H

#include "harness.h"

static char g_dir[64];

static inline void tmpdir_make(void)
{
    snprintf(g_dir, sizeof g_dir, "%sXXXXXX", TMPDIR_PREFIX);
    if (!mkdtemp(g_dir))
        FAIL("mkdtemp: %s", strerror(errno));
    chmod(g_dir, 0755);
}

static inline void tmpdir_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) {
        /* a leftover scratch directory fails nothing */
    }
}

#ifndef TMPDIR_CUSTOM_P
static inline char *P(const char *name)
{
    static char buf[8][512];
    static int i;
    char *p = buf[i++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}
#endif

#endif
