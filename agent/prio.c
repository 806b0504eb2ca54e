/* prio.c - see prio.h.
 *
 * Measured on 2 vCPUs with 64 clients starting /bin/true in a loop: the
 * loop's thread spent half the time runnable but waiting for a CPU behind
 * the children it had just started (each new task is placed level with the
 * others; the loop, which had used more than its share, waits until they
 * catch up), and a Ping waited up to 20 ms. At nice -10 while starts are in
 * flight it waits about 2 ms at worst. Not all the time: at nice -10 the
 * loop also takes the CPU from a process each time it writes to its pipe,
 * and output streaming fell to half (1.0 GiB/s -> 0.5 GiB/s here).
 *
 * SCHED_FLAG_RESET_ON_FORK puts every child and every thread the loop makes
 * back to nice 0 (a spawner, a file worker), so only the loop is raised.
 * Errors: none returned; without the privilege to raise, nothing changes. */
#include "prio.h"

#include "log.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PRIO_NICE (-10)
/* Starts come in bursts; between two starts of a burst the loop stays
 * raised (two syscalls a start otherwise). */
#define PRIO_HOLD_S 0.05

#ifndef SCHED_FLAG_RESET_ON_FORK
#define SCHED_FLAG_RESET_ON_FORK 0x01
#endif

/* The kernel's struct sched_attr (its first version). */
struct prio_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

static struct ev_loop *g_loop;
static ev_timer g_hold;
static int g_on;     /* prio_init enabled it */
static int g_raised; /* the loop runs at PRIO_NICE now */
static int g_base;   /* the nice value the agent was started with */

static int set_nice(int nice)
{
    struct prio_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.policy = SCHED_OTHER;
    a.flags = SCHED_FLAG_RESET_ON_FORK;
    a.nice = nice;
    return syscall(SYS_sched_setattr, 0, &a, 0) < 0 ? -errno : 0;
}

static void on_hold(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (g_raised && set_nice(g_base) == 0)
        g_raised = 0;
}

void prio_init(struct ev_loop *loop, int enabled)
{
    int rc;
    g_loop = loop;
    ev_init(&g_hold, on_hold);
    errno = 0;
    g_base = getpriority(PRIO_PROCESS, 0);
    if (!enabled || errno || g_base <= PRIO_NICE)
        return;
    /* Raised once to see whether it may be, then back. */
    if ((rc = set_nice(PRIO_NICE)) < 0 || (rc = set_nice(g_base)) < 0) {
        log_info("the loop stays at its priority while processes start: sched_setattr: %s",
                 strerror(-rc));
        return;
    }
    g_on = 1;
}

void prio_starting(void)
{
    if (!g_on)
        return;
    ev_timer_stop(g_loop, &g_hold);
    if (!g_raised && set_nice(PRIO_NICE) == 0)
        g_raised = 1;
}

void prio_started(void)
{
    if (!g_raised)
        return;
    ev_timer_stop(g_loop, &g_hold); /* a timer is set only while stopped */
    ev_timer_set(&g_hold, PRIO_HOLD_S, 0);
    ev_timer_start(g_loop, &g_hold);
}

