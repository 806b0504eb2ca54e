/* freeze.h - FreezeProcesses and ThawProcesses: every started process
 * stopped at once through the workload's cgroup.freeze (the agent keeps
 * serving), answered once the kernel reports the workload frozen, with an
 * optional thaw by itself.
 * Errors: handlers answer their request themselves (handler.h); without
 * cgroups the answer is an Error. */
#ifndef SA_FREEZE_H
#define SA_FREEZE_H

#include "handler.h"

#include <ev.h>

void freeze_init(struct ev_loop *loop);

handler_fn freeze_handle_freeze;
handler_fn freeze_handle_thaw;

#endif
