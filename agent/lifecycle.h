/* lifecycle.h - the guest's half of suspend, resume, checkpoint and
 * restore: Quiesce (pre-checkpoint hooks, sync, FIFREEZE) with a thaw that
 * always comes, Thaw, Restored (clock, entropy, generation, environment,
 * post-restore hooks), noticing a restore on its own (the VM generation ID
 * uevent, a jump of the wall clock), and WatchLifecycle. */
#ifndef SA_LIFECYCLE_H
#define SA_LIFECYCLE_H

#include "handler.h"

#include <ev.h>

/* Start the uevent listener and the clock watch. 0 or -errno (only for
 * what the agent cannot run without; a missing uevent socket is logged). */
int lc_init(struct ev_loop *loop);
/* Shutdown: stop hooks, thaw whatever is frozen (waiting a little for a
 * freeze in flight to finish so it can be undone), stop the watchers. */
void lc_shutdown(void);

handler_fn lc_handle_quiesce;
handler_fn lc_handle_thaw;
handler_fn lc_handle_restored;
handler_fn lc_handle_watch;

/* For file operations, before they go to a worker: when req (WriteFile,
 * MakeDirectory, Remove, Rename, MakeSymlink, SetAttributes) would write to
 * a frozen file system, answer UNAVAILABLE ("file system frozen") and
 * return 1; else 0. path is the request's resolved target. Costs nothing while nothing is frozen. */
int lc_refuse_frozen_write(conn_t *c, const Request *req, const char *path);

/* Info's lifecycle fields (pointers valid until the next loop turn). */
void lc_fill_info(Info *in);

#endif
