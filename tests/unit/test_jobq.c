/* Unit tests of agent/jobq: jobs run off the loop thread and finish on it,
 * in order for a single thread, the pool grows while every thread is busy,
 * signals stay blocked where asked, a job runs inline before init and after
 * shutdown, and shutdown leaves a stuck thread behind without waiting for it. */
#include "harness.h"
#include "jobq.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>

typedef struct job {
    jobq_node_t node;
    int v;
    int block;            /* run() waits until g_release */
    pthread_t ran_on, done_on;
    int sigterm_blocked;
} job_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_release, g_blocked;
static int g_order[64], g_ndone;
static struct ev_loop *g_loop;
static pthread_t g_main;
static int g_want; /* the loop stops after this many done() */

static void job_run(jobq_node_t *n)
{
    job_t *j = SA_CONTAINER_OF(n, job_t, node);
    sigset_t cur;
    j->ran_on = pthread_self();
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    j->sigterm_blocked = sigismember(&cur, SIGTERM);
    if (j->block) {
        pthread_mutex_lock(&g_mu);
        g_blocked++;
        pthread_cond_broadcast(&g_cv);
        while (!g_release)
            pthread_cond_wait(&g_cv, &g_mu);
        pthread_mutex_unlock(&g_mu);
    }
}

static void job_done(jobq_node_t *n)
{
    job_t *j = SA_CONTAINER_OF(n, job_t, node);
    j->done_on = pthread_self();
    g_order[g_ndone++] = j->v;
    if (g_loop && g_ndone >= g_want)
        ev_break(g_loop, EVBREAK_ALL);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    FAIL("the loop waited 20 s for done()");
}

/* Run the loop until g_want done()s (bounded: 20 s). */
static void run_until(int want)
{
    ev_timer t;
    g_want = want;
    if (g_ndone >= want)
        return;
    ev_timer_init(&t, on_timeout, 20, 0);
    ev_timer_start(g_loop, &t);
    ev_run(g_loop, 0);
    ev_timer_stop(g_loop, &t);
}

static void reset(void)
{
    g_release = g_blocked = g_ndone = 0;
    g_main = pthread_self();
    g_loop = ev_loop_new(EVFLAG_AUTO);
    ASSERT(g_loop != NULL);
}

TEST(one_thread_runs_in_order_off_the_loop)
{
    static jobq_t q = {.name = "test", .run = job_run, .done = job_done, .min_threads = 1,
                       .max_threads = 1, .stack_size = 128 * 1024, .block_signals = 1};
    static job_t jobs[10];
    reset();
    ASSERT_EQ(jobq_init(&q, g_loop), 0);
    for (int i = 0; i < 10; i++) {
        jobs[i].v = i;
        jobq_submit(&q, &jobs[i].node);
    }
    run_until(10);
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ(g_order[i], i);
        ASSERT(!pthread_equal(jobs[i].ran_on, g_main));
        ASSERT(pthread_equal(jobs[i].done_on, g_main));
        ASSERT_EQ(jobs[i].sigterm_blocked, 1);
    }
    jobq_shutdown(&q, 5000);
    ev_loop_destroy(g_loop);
}

TEST(the_pool_grows_while_every_thread_is_busy)
{
    static jobq_t q = {.name = "test", .run = job_run, .done = job_done, .min_threads = 1,
                       .max_threads = 4, .idle_s = 30};
    static job_t jobs[4];
    reset();
    ASSERT_EQ(jobq_init(&q, g_loop), 0);
    for (int i = 0; i < 3; i++) {
        jobs[i].v = i;
        jobs[i].block = 1;
        jobq_submit(&q, &jobs[i].node);
    }
    jobs[3].v = 3;
    jobq_submit(&q, &jobs[3].node);
    /* Three threads hold the blocking jobs; a fourth runs the last one. */
    run_until(1);
    ASSERT_EQ(g_order[0], 3);
    ASSERT_EQ(jobs[3].sigterm_blocked, 0);
    pthread_mutex_lock(&g_mu);
    while (g_blocked < 3)
        pthread_cond_wait(&g_cv, &g_mu);
    g_release = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    run_until(4);
    jobq_shutdown(&q, 5000);
    ev_loop_destroy(g_loop);
}

TEST(threads_on_demand)
{
    static jobq_t q = {.name = "test", .run = job_run, .done = job_done, .max_threads = 2,
                       .weak = 1};
    static job_t jobs[3];
    reset();
    ASSERT_EQ(jobq_init(&q, g_loop), 0);
    ASSERT_EQ(q.nthreads, 0); /* none until there is work */
    for (int i = 0; i < 3; i++) {
        jobs[i].v = i;
        ASSERT_EQ(jobq_submit(&q, &jobs[i].node), 0);
    }
    run_until(3);
    for (int i = 0; i < 3; i++)
        ASSERT(!pthread_equal(jobs[i].ran_on, g_main));
    pthread_mutex_lock(&q.mu);
    ASSERT(q.nthreads >= 1 && q.nthreads <= 2);
    pthread_mutex_unlock(&q.mu);
    jobq_shutdown(&q, 5000);
    ev_loop_destroy(g_loop);
}

TEST(inline_before_init_and_after_shutdown)
{
    static jobq_t q = {.name = "test", .run = job_run, .done = job_done, .min_threads = 1,
                       .max_threads = 1, .weak = 1};
    static job_t a = {.v = 1}, b = {.v = 2};
    reset();
    jobq_submit(&q, &a.node); /* before init: at once, here */
    ASSERT_EQ(g_ndone, 1);
    ASSERT(pthread_equal(a.ran_on, g_main));
    ASSERT_EQ(jobq_init(&q, g_loop), 0);
    jobq_shutdown(&q, 5000);
    jobq_submit(&q, &b.node); /* after shutdown: likewise */
    ASSERT_EQ(g_ndone, 2);
    ASSERT(pthread_equal(b.ran_on, g_main));
    ev_loop_destroy(g_loop);
}

TEST(shutdown_leaves_a_stuck_thread_behind)
{
    static jobq_t q = {.name = "test", .run = job_run, .done = job_done, .min_threads = 1,
                       .max_threads = 1};
    static job_t stuck = {.v = 7, .block = 1};
    reset();
    ASSERT_EQ(jobq_init(&q, g_loop), 0);
    jobq_submit(&q, &stuck.node);
    pthread_mutex_lock(&g_mu);
    while (g_blocked < 1)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    jobq_shutdown(&q, 50); /* returns although the job is still running */
    ASSERT_EQ(g_ndone, 0);
    /* Let it go: it finds the loop gone and leaves its job for the exit. */
    pthread_mutex_lock(&g_mu);
    g_release = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_mutex_lock(&q.mu);
    while (q.nthreads)
        pthread_cond_wait(&q.exit_cv, &q.mu);
    pthread_mutex_unlock(&q.mu);
    ASSERT_EQ(g_ndone, 0);
    ASSERT(q.dhead == &stuck.node);
    ev_loop_destroy(g_loop);
}

TEST_MAIN(TEST_ENTRY(one_thread_runs_in_order_off_the_loop),
          TEST_ENTRY(the_pool_grows_while_every_thread_is_busy),
          TEST_ENTRY(threads_on_demand), TEST_ENTRY(inline_before_init_and_after_shutdown),
          TEST_ENTRY(shutdown_leaves_a_stuck_thread_behind))
