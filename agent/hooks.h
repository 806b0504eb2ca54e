/* hooks.h - run the executables of one hook directory (pre-checkpoint.d,
 * post-restore.d) one after another in name order, as ordinary children of
 * the agent: listed on a file worker, started by the spawner thread, watched
 * by the loop, each with a time limit, their output logged line by line.
 * Errors: hooks_start returns NULL only for want of memory; a hook that
 * fails is counted and named (hooks_failures), never fatal to the run. */
#ifndef SA_HOOKS_H
#define SA_HOOKS_H

#include <ev.h>
#include <stdint.h>

#define HOOKS_MAX 64           /* hooks run from one directory */
#define HOOKS_MAX_FAILURES 8   /* failures kept for the answer */

typedef struct hooks_run hooks_run_t;

/* Called once on the loop when the run ends (not after hooks_cancel). */
typedef void hooks_done_fn(hooks_run_t *run, void *arg);

/* Run every hook of dir. kind ("pre-checkpoint", "post-restore") is the
 * hook's first argument and $SANDBOX_AGENT_HOOK; generation goes in
 * $SANDBOX_AGENT_GENERATION. stop_on_failure: the first failing hook ends
 * the run. A missing directory is a run of no hooks. Returns NULL on ENOMEM
 * (done is not called then). */
hooks_run_t *hooks_start(struct ev_loop *loop, const char *dir, const char *kind,
                         int stop_on_failure, uint32_t limit_ms, uint64_t generation,
                         hooks_done_fn *done, void *arg);
/* Kill the running hook's group and forget the run: done is not called.
 * The run's memory is freed here or, with a start in flight, when it
 * returns. */
void hooks_cancel(hooks_run_t *run);
/* After done: the failures ("NAME: exit status 3: <stderr tail>"), how many
 * hooks ran, and the run's time. hooks_free releases the run. */
unsigned hooks_failures(const hooks_run_t *run, const char *const **out);
unsigned hooks_ran(const hooks_run_t *run);
uint64_t hooks_nanos(const hooks_run_t *run);
void hooks_free(hooks_run_t *run);

#endif
