/* spawnref.h - posix_spawn with stderr sent to a file (NULL: inherited).
 * Returns 0 or an errno value, as posix_spawn does. */
#ifndef SA_BENCH_SPAWNREF_H
#define SA_BENCH_SPAWNREF_H

#include <sys/types.h>

int bench_spawn(pid_t *pid, const char *path, char *const argv[], const char *stderr_path);

#endif
