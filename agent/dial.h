/* dial.h - a connected, non-blocking socket to a tunnel target without
 * blocking the loop: host names are resolved by a few resolver threads,
 * unix sockets are connected on the file workers (a path walk can block,
 * and it runs with the requesting user's permissions), TCP connects are
 * non-blocking and try each address in turn, all within a deadline.
 * Errors: dial_start returns NULL only for want of memory; every other
 * failure comes to the callback once, as err (-errno) with a message. */
#ifndef SA_DIAL_H
#define SA_DIAL_H

#include "target.h"
#include "user.h"

#include <ev.h>

#define DIAL_TIMEOUT_S 30.0

typedef struct dial dial_t;

/* The outcome, called once on the loop, never from inside dial_start().
 * Success: fd >= 0 (non-blocking, close-on-exec, now the callee's), err 0.
 * Failure: fd -1, err a negative errno (-ENOENT: the name or path does not
 * exist; -EACCES: no --tunnel-allow rule allows any of its addresses;
 * -EAGAIN: temporary resolver failure or a full unix backlog; -ETIMEDOUT:
 * the deadline passed) and msg a readable reason. The dial is freed after
 * the callback returns. */
typedef void dial_done_fn(void *arg, int fd, int err, const char *msg);

void dial_init(struct ev_loop *loop);
/* Start dialling t (already allowed by name, or needing its resolved
 * addresses checked against rules when check_addr). user NULL: the agent
 * itself. Returns NULL on ENOMEM. */
dial_t *dial_start(const target_t *t, const user_id_t *user, const target_rule_t *rules,
                   int nrules, int check_addr, dial_done_fn *cb, void *arg);
/* Stop: the callback is not called; resources are released now or, for
 * work running on a thread, when it returns. */
void dial_cancel(dial_t *d);

#endif
