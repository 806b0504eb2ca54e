/* pgkill.h - containment without cgroups: a process group killed, and
 * killed again until it is empty, together with every descendant that left
 * it (setsid, setpgid), found through the parent links in /proc and stopped
 * (SIGSTOP) before anything dies, so that nothing is orphaned unseen.
 * Used only when cgroup.kill is not available.
 * Errors: none to the caller; the kill repeats until the group and what
 * was remembered of it are gone. */
#ifndef SA_PGKILL_H
#define SA_PGKILL_H

#include <ev.h>
#include <sys/types.h>

void pgk_init(struct ev_loop *loop);
/* Remember the group's descendants now, while their parents still link
 * them (before a SIGTERM that may end the shell between them), so that a
 * later pgk_kill() finds them after they were re-parented to the agent. */
void pgk_mark(pid_t pgid);
/* SIGKILL to the group led by pgid, the processes in its session, every
 * descendant of theirs and what pgk_mark() saw; then again, later, until
 * none is left. */
void pgk_kill(pid_t pgid);
/* 1 when pgk_mark() remembered processes of pgid's group (alive or not). */
int pgk_marked(pid_t pgid);
/* Groups being killed (for shutdown: wait until 0). */
unsigned pgk_active(void);

#endif
