/* watch.h - WatchPath: inotify watches of a file or a tree, streamed as
 * FsEvents through a bounded queue (an OVERFLOW event instead of growth).
 * Every stream shares the agent's one inotify instance, open while any
 * watch stream exists. The handler, fs_handle_watch, is declared in fs.h
 * with the other file operations. */
#ifndef SA_WATCH_H
#define SA_WATCH_H

#include "fs.h"

/* Events kept per watch for a client that does not read; past this the
 * watch drops events and reports one OVERFLOW. */
#define WATCH_QUEUE 4096

#endif
