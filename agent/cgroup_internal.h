/* cgroup_internal.h - what the pieces of the cgroup module share, private to
 * them. cgroup.c: finding and setting up the subtree, the workload as a
 * whole, cleanup; cgroup_leaf.c: a leaf per process (limits, kill, figures,
 * removal); cgroup_file.c: the kernfs files of one cgroup. cgroup.h is the
 * public interface.
 * Errors: 0 or a negative errno, as in cgroup.h. */
#ifndef SA_CGROUP_INTERNAL_H
#define SA_CGROUP_INTERNAL_H

#include "cgroup.h"

#include <ev.h>
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

/* Set by cg_init (cgroup.c), read by the others. */
extern int cg_avail;                 /* processes get cgroups */
extern unsigned cg_ctrl;             /* CG_* enabled for the leaves */
extern char cg_reason[512];          /* why not, when !cg_avail */
extern char *cg_work;       /* the workload subtree, absolute */
extern char *cg_work_rel;   /* ... as /proc/PID/cgroup shows it */
extern int cg_work_fd;               /* ... its directory */
extern int cg_work_killed;           /* cgroup.kill of the workload was written */

/* cgroup_file.c */
int cg_write_at(int dirfd, const char *name, const char *val);
/* Read a small file into buf (NUL-terminated). Length or -errno. */
ssize_t cg_read_at(int dirfd, const char *name, char *buf, size_t size);
/* The number after "key " in a flat-keyed file ("populated 1\nfrozen 0"). */
int cg_keyed_u64(const char *buf, const char *key, uint64_t *out);
/* A key of cgroup.events: 1, 0, or -errno. */
int cg_events_key(int dirfd, const char *key);
/* The CG_* bits named in file (cgroup.controllers, cgroup.subtree_control). */
unsigned cg_read_controllers(int dirfd, const char *file);
/* Enable in dirfd's children every controller it has that we use. */
void cg_enable_controllers(int dirfd, const char *where);
/* Remove a cgroup directory and any sub-cgroups a member made in it. */
void cg_remove_tree_at(int dirfd, const char *name, int depth);
/* Any signal to every member of dirfd and its sub-cgroups. 0, or -ESRCH
 * when nobody got it. */
int cg_signal_tree(int dirfd, int sig);
/* The members listed in dirfd's cgroup.procs. */
uint32_t cg_count_procs(int dirfd);

/* cgroup_leaf.c: the released leaves not yet removed, and the leaves made
 * ahead of time. */
void cg_pending_init(struct ev_loop *loop);
/* The agent is stopping: remove what can be, drop the rest. */
void cg_pending_drop(void);

#endif
