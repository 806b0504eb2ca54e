/* prio.h - the loop's priority while processes start. While a start is in
 * flight (and PRIO_HOLD_S after the last one), the loop's thread runs at
 * nice -10, so the children it starts, busy exec'ing, cannot keep it
 * waiting for a CPU; otherwise it runs as started. Children and the
 * agent's other threads start at nice 0 whatever the loop runs at
 * (SCHED_FLAG_RESET_ON_FORK). Not used when the operator set the agent's
 * nice value (--nice). Loop thread only. */
#ifndef SA_PRIO_H
#define SA_PRIO_H

#include <ev.h>

/* enabled 0: never raise (the operator chose the agent's priority). */
void prio_init(struct ev_loop *loop, int enabled);
/* A start is about to run: raise now (a syscall only when it was not). */
void prio_starting(void);
/* No start is in flight any more: back to the nice value the agent was
 * started with after PRIO_HOLD_S, unless another start comes first. */
void prio_started(void);

#endif
