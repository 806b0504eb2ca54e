/* cgroup.h - containment: the cgroup v2 subtree the agent manages, a leaf
 * cgroup per started process (created before exec, removed once empty),
 * killing and signalling a whole leaf, limits, usage figures, and freezing
 * the whole workload. Without a usable cgroup v2 everything here reports
 * that, and callers fall back to process groups.
 * Files: cgroup.c (the subtree), cgroup_leaf.c (the leaves), cgroup_file.c
 * (kernfs files), cgroup_internal.h (what they share).
 * Errors: functions return 0 or a negative errno; those with an err buffer
 * fill it with a message for the client.
 *
 * Layout under the managed root R:
 *   R/agent      the agent itself, when it started inside R (delegation)
 *   R/workload   every started process, one leaf each; frozen and killed
 *                as a whole; never holds the agent
 */
#ifndef SA_CGROUP_H
#define SA_CGROUP_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

/* Controllers that limits need. */
enum {
    CG_CPU = 1u << 0,
    CG_MEMORY = 1u << 1,
    CG_PIDS = 1u << 2,
    CG_IO = 1u << 3,
};

typedef struct cg_limits {
    uint64_t memory_max;      /* bytes; 0 = none */
    uint64_t memory_swap_max; /* bytes; 0 = none */
    uint64_t memory_high;     /* bytes; 0 = none */
    uint32_t pids_max;
    uint32_t cpu_max_millicores; /* 1000 = one CPU */
    uint32_t cpu_weight;         /* 1..10000 */
    uint32_t io_weight;          /* 1..10000 */
} cg_limits_t;

typedef struct cg_stats {
    uint64_t cpu_user_nano, cpu_system_nano;
    uint64_t memory_current, memory_peak;
    uint32_t pids_current;
    int oom_killed;
} cg_stats_t;

typedef struct cg_leaf cg_leaf_t;

/* Find or make the subtree (from g_config: --cgroup-root, --no-cgroups;
 * else systemd's delegation, else one created when root). Says once in the
 * log what it found. Never fails the agent: 0 always. */
int cg_init(struct ev_loop *loop);
/* 1 when processes get cgroups. */
int cg_available(void);
/* Controllers enabled for the leaves (CG_* bits). */
unsigned cg_controllers(void);
/* Why cgroups are not used (for error messages); "" when they are. */
const char *cg_unavailable_reason(void);
/* The agent is exiting and nothing is left running: remove the workload
 * subtree (and the root when the agent created it). */
void cg_cleanup(void);

/* Check limits against the enabled controllers. 0, or -EOPNOTSUPP with a
 * message naming the controller, or -EINVAL for an out-of-range value. */
int cg_limits_check(const cg_limits_t *lim, char *err, size_t errlen);
/* Fill the unset fields of lim with the agent's defaults (the --default-*
 * flags) where their controller is enabled. */
void cg_limits_defaults(cg_limits_t *lim);

/* A new leaf under the workload subtree, named "PREFIX-N" (NULL: "p"),
 * with lim applied. A service keeps one across its runs. The caller holds
 * one reference. 0, or -errno with err filled. */
int cg_leaf_new(const char *prefix, const cg_limits_t *lim, cg_leaf_t **out, char *err,
                size_t errlen);
/* A directory fd of the leaf, for clone3(CLONE_INTO_CGROUP); -1 once removed. */
int cg_leaf_fd(const cg_leaf_t *l);
/* Its cgroup.procs opened for writing, for a child to join by writing "0"
 * where clone3 cannot place it; -1 once removed. */
int cg_leaf_procs_fd(const cg_leaf_t *l);
/* 0 once the leaf was killed (cgroup.kill): the kernel then kills every
 * child that clone3(CLONE_INTO_CGROUP) places in it (seen on 6.18), so a
 * new member joins through cgroup.procs instead. */
int cg_leaf_clone_ok(const cg_leaf_t *l);
/* The path as /proc/PID/cgroup shows it. */
const char *cg_leaf_path(const cg_leaf_t *l);
/* cgroup.kill: SIGKILL to every member at once, forks in flight included. */
int cg_leaf_kill(cg_leaf_t *l);
/* Any signal to every member (SIGKILL: cg_leaf_kill). 0 or -errno. */
int cg_leaf_signal(cg_leaf_t *l, int sig);
/* 1 populated, 0 empty (or removed), -errno. */
int cg_leaf_populated(cg_leaf_t *l);
/* Live figures, or the last ones read before the leaf was removed. */
void cg_leaf_stats(cg_leaf_t *l, cg_stats_t *st);
/* The processes in it now (0 once removed), whatever the owner's state. */
uint32_t cg_leaf_pids(const cg_leaf_t *l);
/* The owner is done starting processes in it: it is removed once it is
 * empty (when the loop is next idle, or when a later reap finds it so). */
void cg_leaf_release(cg_leaf_t *l);
void cg_leaf_ref(cg_leaf_t *l);
void cg_leaf_unref(cg_leaf_t *l);
/* Try the released leaves again (call after reaping). */
void cg_on_reap(void);

/* The whole workload subtree: every started process, never the agent. */
int cg_workload_kill(void);
int cg_workload_signal(int sig);
int cg_workload_populated(void);
/* Freeze (1) or thaw (0) every started process. The C API of FreezeProcesses
 * and ThawProcesses, for the lifecycle's Quiesce too. 0 or -errno
 * (-EOPNOTSUPP without cgroups). Freezing completes asynchronously: see
 * cg_frozen(). */
int cg_freeze_all(int freeze);
/* 1 when the kernel reports the workload frozen, 0 if not (yet). */
int cg_frozen(void);
/* 1 while a freeze is asked for (cgroup.freeze is 1). */
int cg_freeze_requested(void);

#endif
