/* watch.h - WatchPath: inotify watches of a file or a tree, streamed as
 * FsEvents through a bounded queue (an OVERFLOW event instead of growth).
 * Every stream shares the agent's one inotify instance, open while any
 * watch stream exists. */
#ifndef SA_WATCH_H
#define SA_WATCH_H

#include "handler.h"

#include <ev.h>

/* Events kept per watch for a client that does not read; past this the
 * watch drops events and reports one OVERFLOW. */
#define WATCH_QUEUE 4096

/* The loop the shared instance's watcher runs on; before any request. */
void watch_init(struct ev_loop *loop);

handler_fn watch_handle;

#endif
