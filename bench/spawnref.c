/* spawnref.c - posix_spawn for the benchmark's references (the floor every
 * exec figure is compared with). */
#include "spawnref.h"

#include <fcntl.h>
#include <spawn.h>

extern char **environ;

int bench_spawn(pid_t *pid, const char *path, char *const argv[], const char *stderr_path)
{
    posix_spawn_file_actions_t fa;
    int rc;
    if (!stderr_path)
        return posix_spawn(pid, path, NULL, NULL, argv, environ);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    rc = posix_spawn(pid, path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}
