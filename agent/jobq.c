/* jobq.c - see jobq.h.
 *
 * The loop thread submits and drains; the queue's threads take jobs and put
 * them, run, on the done list. Both lists are guarded by one mutex, held only
 * to move a job between them. A thread the kernel keeps waiting in run()
 * holds nothing; after jobq_shutdown has given up on it, it finds inline_ set
 * when it comes back and leaves its job on the done list, which the process
 * exit reclaims (the loop is gone by then).
 * Errors: jobq_init and jobq_submit return 0 or -errno; a thread that
 * would not start is logged, at init, or later when there is none. */
#include "jobq.h"

#include "log.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static void node_push(jobq_node_t **h, jobq_node_t **t, jobq_node_t *n)
{
    n->next = NULL;
    if (*t)
        (*t)->next = n;
    else
        *h = n;
    *t = n;
}

/* Wait for work; 0 when a thread beyond the minimum should leave (idle too
 * long) or the queue stops with nothing left. Under q->mu. */
static int wait_work(jobq_t *q)
{
    while (!q->qhead && !q->stop) {
        int rc = 0;
        q->idle++;
        if (q->nthreads > q->min_threads && q->idle_s > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += q->idle_s;
            rc = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
        } else {
            pthread_cond_wait(&q->cv, &q->mu);
        }
        q->idle--;
        if (rc == ETIMEDOUT && !q->qhead && q->nthreads > q->min_threads)
            return 0;
    }
    return q->qhead != NULL;
}

static void *thread_main(void *arg)
{
    jobq_t *q = arg;
    pthread_mutex_lock(&q->mu);
    while (wait_work(q)) {
        jobq_node_t *n = q->qhead;
        q->qhead = n->next;
        if (!q->qhead)
            q->qtail = NULL;
        q->queued--;
        pthread_mutex_unlock(&q->mu);
        q->run(n);
        pthread_mutex_lock(&q->mu);
        node_push(&q->dhead, &q->dtail, n);
        /* After jobq_shutdown gave up on this thread the loop is gone: the
         * result stays in the list, which the exit reclaims. */
        if (!q->inline_)
            ev_async_send(q->loop, &q->async);
    }
    q->nthreads--;
    pthread_cond_broadcast(&q->exit_cv);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Start one more detached thread. Under q->mu. Returns 0 or -errno. */
static int start_thread(jobq_t *q)
{
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int rc = pthread_attr_init(&attr);
    if (rc)
        return -rc;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (q->stack_size)
        pthread_attr_setstacksize(&attr, q->stack_size);
    /* A new thread inherits the creator's signal mask. */
    if (q->block_signals) {
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
    }
    rc = pthread_create(&t, &attr, thread_main, q);
    if (q->block_signals)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc)
        return -rc;
    q->nthreads++;
    return 0;
}

/* Run done() for everything finished; done() may submit more. */
static void drain_done(jobq_t *q)
{
    for (;;) {
        pthread_mutex_lock(&q->mu);
        jobq_node_t *n = q->dhead;
        q->dhead = q->dtail = NULL;
        pthread_mutex_unlock(&q->mu);
        if (!n)
            return;
        while (n) {
            jobq_node_t *next = n->next;
            q->done(n); /* may free n */
            n = next;
        }
    }
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    drain_done((jobq_t *)w->data);
}

/* Stop the ev_async; the loop is the queue's no longer. */
static void async_stop(jobq_t *q)
{
    if (q->weak)
        ev_ref(q->loop);
    ev_async_stop(q->loop, &q->async);
    q->loop = NULL;
}

int jobq_init(jobq_t *q, struct ev_loop *loop)
{
    int rc = 0, n;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_cond_init(&q->exit_cv, NULL);
    q->qhead = q->qtail = q->dhead = q->dtail = NULL;
    q->nthreads = q->idle = q->queued = q->stop = q->inline_ = 0;
    q->loop = loop;
    ev_async_init(&q->async, on_async);
    q->async.data = q;
    ev_async_start(loop, &q->async);
    if (q->weak)
        ev_unref(loop);
    pthread_mutex_lock(&q->mu);
    while (q->nthreads < q->min_threads && (rc = start_thread(q)) == 0)
        ;
    n = q->nthreads;
    pthread_mutex_unlock(&q->mu);
    if (rc)
        log_error("%s thread: %s", q->name, strerror(-rc));
    if (!n && q->min_threads) {
        async_stop(q);
        return rc;
    }
    return 0;
}

int jobq_submit(jobq_t *q, jobq_node_t *n)
{
    /* q->loop and inline_ change only on this thread. */
    if (!q->loop || q->inline_) {
        q->run(n);
        q->done(n);
        return 0;
    }
    pthread_mutex_lock(&q->mu);
    if (q->queued + 1 > q->idle && q->nthreads < q->max_threads) {
        /* Without another thread the ones there are take it, in turn. */
        int rc = start_thread(q);
        if (rc < 0 && !q->nthreads) {
            pthread_mutex_unlock(&q->mu);
            log_error("%s thread: %s", q->name, strerror(-rc));
            return rc;
        }
    }
    node_push(&q->qhead, &q->qtail, n);
    q->queued++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void jobq_shutdown(jobq_t *q, unsigned wait_ms)
{
    struct timespec ts;
    int stuck;
    if (!q->loop)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    while (q->nthreads && pthread_cond_timedwait(&q->exit_cv, &q->mu, &ts) != ETIMEDOUT)
        ;
    stuck = q->nthreads;
    q->inline_ = 1;
    pthread_mutex_unlock(&q->mu);
    if (stuck)
        log_warn("%d %s thread(s) still waiting in the kernel after %u ms; exiting without "
                 "them", stuck, q->name, wait_ms);
    drain_done(q);
    async_stop(q);
}
