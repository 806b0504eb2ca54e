/* jobq.h - a queue of jobs run by threads off the event loop, with the
 * results handed back to the loop: the queue under a mutex, a condition
 * variable that wakes a thread, an ev_async that wakes the loop, and the
 * list of finished jobs the loop then drains. The file worker pool
 * (fsworker: a few threads, more while all are busy) and the spawner
 * (spawn: one thread, signals blocked) are the two queues of the agent.
 *
 * A job embeds a jobq_node_t; the queue's run() and done() get the node
 * back and find their job with SA_CONTAINER_OF.
 * Errors: jobq_init and jobq_submit return 0 or a negative errno. */
#ifndef SA_JOBQ_H
#define SA_JOBQ_H

#include <ev.h>
#include <pthread.h>
#include <stddef.h>

typedef struct jobq_node {
    struct jobq_node *next;
} jobq_node_t;

typedef void jobq_fn(jobq_node_t *n);

typedef struct jobq {
    /* Set by the owner before jobq_init, read-only afterwards. */
    const char *name;     /* "file worker": for the log */
    jobq_fn *run;         /* on a thread of the queue */
    jobq_fn *done;        /* then on the loop thread; may free the job, may submit more */
    int min_threads;      /* started by jobq_init, kept while idle (0: on demand) */
    int max_threads;      /* started one by one while every thread is busy and jobs wait */
    int idle_s;           /* a thread beyond min_threads leaves after this long idle (0: never) */
    size_t stack_size;    /* 0: the default */
    int block_signals;    /* the threads block every signal: they stay with the loop */
    int weak;             /* the ev_async does not keep the loop alive on its own */

    /* Private. */
    struct ev_loop *loop; /* NULL before jobq_init and after jobq_shutdown */
    ev_async async;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work, or stop */
    pthread_cond_t exit_cv; /* a thread left */
    jobq_node_t *qhead, *qtail; /* waiting for a thread */
    jobq_node_t *dhead, *dtail; /* run, waiting for done() on the loop */
    int nthreads, idle, queued; /* under mu */
    int stop, inline_;          /* under mu */
} jobq_t;

/* Start min_threads threads (with min_threads, at least one must start)
 * and the ev_async on loop. 0 or -errno. */
int jobq_init(jobq_t *q, struct ev_loop *loop);
/* Queue n; done() runs on the loop once run() has returned. Before
 * jobq_init (as in the fuzzer) and after jobq_shutdown, both run at once on
 * the caller's thread: callers submit last, touching nothing of the job
 * afterwards. 0, or -errno when there is no thread and none could be
 * started: then n is not queued and neither function runs. Loop thread
 * only. */
int jobq_submit(jobq_t *q, jobq_node_t *n);
/* Let the threads finish the queued jobs and leave, waiting at most wait_ms
 * for them (a thread the kernel keeps waiting is left behind, and goes with
 * the process), then run the pending done()s. */
void jobq_shutdown(jobq_t *q, unsigned wait_ms);

#endif
