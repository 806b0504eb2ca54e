/* spawn.h - start one child: fork (a vfork-style clone when not under
 * AddressSanitizer), its own process group or session and controlling
 * terminal, defaults for every signal, user switch, cwd, descriptors, exec.
 * Exec failures come back as the result of the start (through the shared
 * memory of the vfork-style child, or a close-on-exec pipe after fork).
 * With into_cgroup the child is born in that cgroup (clone3 with
 * CLONE_INTO_CGROUP), or, on kernels without it, moves itself there first
 * thing, before it runs anything of the command.
 * Errors: functions return 0 or a negative errno (with the failed step). */
#ifndef SA_SPAWN_H
#define SA_SPAWN_H

#include "jobq.h"

#include <ev.h>
#include <sys/types.h>

/* Which step failed in the child (for the error message). */
enum spawn_stage {
    SPAWN_OK = 0,
    SPAWN_FORK,
    SPAWN_SESSION,
    SPAWN_TTY,
    SPAWN_FDS,
    SPAWN_GROUPS,
    SPAWN_GID,
    SPAWN_UID,
    SPAWN_CWD,
    SPAWN_EXEC,
    SPAWN_CGROUP,
};

typedef struct spawn_req {
    const char *command;     /* a path (with '/'), or a name looked up in path */
    char *const *argv;       /* NULL-terminated */
    char *const *envp;       /* NULL-terminated */
    const char *path;        /* PATH for the lookup */
    const char *cwd;         /* NULL or "": home */
    const char *home;        /* without cwd: entered if it can be, else "/" (as ssh) */
    int set_user;            /* switch to uid/gid/groups */
    uid_t uid;
    gid_t gid;
    int n_groups;
    const gid_t *groups;
    int fd_in, fd_out, fd_err; /* become the child's 0, 1, 2 */
    int pty;                 /* fd_in is a PTY slave: setsid and make it the ctty */
    int reset_oom;           /* write 0 to /proc/self/oom_score_adj */
    int reset_nice;          /* set the child's nice value back to 0 */
    int into_cgroup;         /* start the child in the cgroup cgroup_fd */
    int cgroup_fd;           /* a cgroup v2 directory (with into_cgroup) */
    int cgroup_by_procs;     /* join through cgroup.procs, not clone3 (a cgroup
                                once killed: see cg_leaf_clone_ok) */
} spawn_req_t;

/* Start the child. Returns 0 with *pid, or -errno with *stage saying which
 * step failed (the failed child is already reaped). */
int spawn_run(const spawn_req_t *r, pid_t *pid, enum spawn_stage *stage);

/* Starting off the loop. The calling thread waits while a vfork-style child
 * execs, which on a busy machine takes milliseconds; one spawner thread does
 * that waiting so the loop keeps serving every connection meanwhile. The
 * spawner is a jobq of one thread. */
typedef struct spawn_job spawn_job_t;
typedef void spawn_done_fn(spawn_job_t *job);
struct spawn_job {
    spawn_req_t req;      /* everything it points to stays valid until done */
    spawn_done_fn *done;  /* called on the loop thread with the result */
    int rc;               /* spawn_run's result */
    pid_t pid;
    enum spawn_stage stage;
    jobq_node_t _node;    /* private */
};

/* Start the spawner thread (signals blocked in it). 0 or -errno. */
int spawn_async_init(struct ev_loop *loop);
/* Queue a job; its done() runs later on the loop. */
void spawn_submit(spawn_job_t *job);
const char *spawn_stage_name(enum spawn_stage s);

#endif
