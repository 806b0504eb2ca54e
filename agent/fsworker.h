/* fsworker.h - a small pool of threads that run blocking file operations
 * off the event loop, each with the requesting user's file-system identity
 * and without capabilities, and hand the results back to the loop
 * (ev_async). The pool grows while every worker is busy, so a few jobs the
 * kernel keeps waiting do not stop the others. The queue is a jobq.
 * Errors: fsw_init returns 0 or -errno; a job's failure to take the identity
 * is in its id_err. */
#ifndef SA_FSWORKER_H
#define SA_FSWORKER_H

#include "jobq.h"
#include "user.h"

#include <ev.h>

typedef struct fsw_job fsw_job_t;
typedef void fsw_fn(fsw_job_t *j);

struct fsw_job {
    fsw_fn *run;           /* on a worker thread, with the identity of user */
    fsw_fn *done;          /* then on the loop thread */
    const user_id_t *user; /* NULL: the agent's own identity */
    int id_err;            /* -errno when the identity could not be taken: run not called */
    jobq_node_t _node;     /* private */
};

int fsw_init(struct ev_loop *loop);
/* Queue j; its done() runs on the loop once run() has returned. During and
 * after fsw_shutdown() both run at once on the caller's thread. */
void fsw_submit(fsw_job_t *j);
/* Let the workers finish the queued jobs and leave, waiting at most
 * wait_ms for them (a worker the kernel keeps waiting is left behind, and
 * goes with the process), then run the pending done()s. */
void fsw_shutdown(unsigned wait_ms);

#endif
