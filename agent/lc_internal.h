/* lc_internal.h - what the lifecycle modules share. lifecycle.c: the
 * freeze state machine, the ops waiting for answers, Quiesce and Thaw;
 * lc_freeze.c: which mounts a Quiesce freezes, the threads that freeze and
 * thaw them, and the writes refused meanwhile; lc_events.c: WatchLifecycle;
 * lc_restore.c: handling a restore (Restored, or one noticed);
 * lc_detect.c: noticing a restore (uevent, kernel log, clocks). Private to
 * them. */
#ifndef SA_LC_INTERNAL_H
#define SA_LC_INTERNAL_H

#include "lifecycle.h"

#include <stdint.h>
#include <sys/types.h>

#define LC_MAX_MOUNTS 64

#define LK(x) SANDBOX__AGENT__V1__LIFECYCLE_EVENT__KIND__##x

/* ------------------------------------------------ lc_freeze.c */

typedef struct lc_mnt {
    char *path;
    dev_t dev;
    int order; /* line in mountinfo */
} lc_mnt_t;

typedef struct lc_plan {
    lc_mnt_t m[LC_MAX_MOUNTS];
    int n;
} lc_plan_t;

enum lc_job_kind { LC_JOB_FREEZE, LC_JOB_THAW };

/* A freeze or a thaw run by a thread, handed back to the loop when done. */
typedef struct lc_job {
    enum lc_job_kind kind;
    /* freeze: what to freeze */
    lc_plan_t plan;
    /* results: the mounts frozen (freeze) or thawed (thaw, and the ones a
     * failed freeze undid), NULL-terminated arrays of malloc'd paths */
    char *done[LC_MAX_MOUNTS + 1];
    int n_done;
    char *undone[LC_MAX_MOUNTS + 1];
    int n_undone;
    uint64_t sync_ns, freeze_ns;
    int err;            /* -errno of the mount that failed */
    char *err_path;
    int cancelled;
    char *thaw_errors;  /* thaw: "PATH: error; ..." */
    const char *source; /* thaw: what asked for it */
    struct lc_job *next;
} lc_job_t;

void lc_plan_free(lc_plan_t *p);
/* Which mounts a Quiesce freezes (want: the ones named); answers the error
 * on c and returns -1 when it cannot. */
int lc_plan_make(conn_t *c, uint64_t id, char **want, size_t n_want, lc_plan_t *p);

void lc_job_free(lc_job_t *j);
/* Start j on a thread of its own (a freeze or a thaw); 0 or -errno. */
int lc_job_start(lc_job_t *j);
/* Run a thaw job here, when no thread can be had. */
void lc_job_run_thaw(lc_job_t *j);
/* The next job done, or NULL. */
lc_job_t *lc_job_pop(void);
/* Before a freezer starts: clear the cancel mark, mark a freezer running. */
void lc_freezer_arm(void);
/* A freezer that could not start. */
void lc_freezer_disarm(void);
int lc_freezer_running(void);
/* A thaw was taken since lc_freezer_arm. */
int lc_freeze_cancelled(void);
/* The freezer's sync() has returned since the last call. */
int lc_take_synced(void);
/* Thaw every frozen mount now, on this thread (names: the paths thawed,
 * the caller frees; errors: "PATH: error; ..." or NULL). */
void lc_thaw_now(char **names, int *n_names, char **errors);
/* Wait up to seconds for a freezer in flight to end; 1 if it did not. */
int lc_freezer_wait(int seconds);

/* The mounts being frozen or frozen, whose writes are refused. */
void lc_block_set(const lc_plan_t *p);
void lc_block_clear(void);
int lc_block_count(void);
const char *lc_block_path(int i);
/* Set the block to the mounts of plan that are in done[0..n). */
void lc_block_frozen(const lc_plan_t *plan, char *const *done, int n);

/* ------------------------------------------------ lifecycle.c */

extern struct ev_loop *lc_loop; /* NULL before lc_init */

/* Wake the loop: a job is done, or the freezer synced (any thread). */
void lc_wake(void);
/* Start thawing. Returns 1 when a thaw runs (its end answers the waiters
 * and calls lc_restore_thawed), 0 when there was nothing to thaw. */
int lc_thaw_start(const char *source);
/* A directory under the hooks directory (a static buffer). */
const char *lc_hook_dir(const char *sub);

enum lc_op_kind { LC_OPK_QUIESCE, LC_OPK_THAW, LC_OPK_RESTORED };

/* A Quiesce, Thaw or Restored waiting for its answer: a stream of its
 * connection, so a connection that closes only marks it gone. Two owners:
 * the connection (until destroy) and the lifecycle (until answered). */
typedef struct lc_op {
    stream_t base;
    enum lc_op_kind kind;
    int gone, owned_by_conn, owned_by_lc;
    struct lc_op *next;
    /* Quiesce */
    lc_plan_t plan;
    uint32_t thaw_after_ms;
    uint64_t hooks_ns;
    /* Restored */
    int64_t step;
    uint64_t prev_generation;
} lc_op_t;

/* A new op registered as the stream answering req; answers and returns
 * NULL on failure. */
lc_op_t *lc_op_new(conn_t *c, const Request *req, enum lc_op_kind kind);
/* The lifecycle is done with o: end its stream and drop its own hold. */
void lc_op_drop(lc_op_t *o);
/* Send r as the op's last answer, then drop it. */
void lc_op_reply(lc_op_t *o, Response *r);
void lc_op_error(lc_op_t *o, int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------ lc_events.c */

/* Queue an event for every WatchLifecycle subscriber. source: a string
 * literal; mounts: the mounts it concerns (may be NULL). */
void lc_emit(int kind, const char *source, int64_t step, char *const *mounts, int n);

/* ------------------------------------------------ lc_restore.c */

extern uint64_t lc_generation, lc_restores, lc_last_restore_unix;

/* A restore is being handled (thaw, post-restore hooks). */
int lc_restore_busy(void);
/* The thaw a restore waited for is done; thawed: what it thawed. */
void lc_restore_thawed(char *const *thawed, int n);
/* A restore noticed by the agent itself (source: "vmgenid", "kmsg",
 * "clock", "rtc"): counted once however many signs come, then handled. */
void lc_restore_noticed(const char *source);
/* Shutdown: stop the post-restore hooks. */
void lc_restore_shutdown(void);

/* ------------------------------------------------ lc_detect.c */

void lc_detect_start(struct ev_loop *loop);
void lc_detect_stop(void);
/* Take the clocks' offsets as they are now: after the agent's own step. */
void lc_detect_rebase(void);

#endif
