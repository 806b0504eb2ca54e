/* pgkill.c - see pgkill.h.
 *
 * One kill: scan /proc (pid, parent, group, session, start time), take the
 * group's members, its session's, the remembered ones and, transitively,
 * their children; SIGSTOP them; scan again until a scan finds nobody
 * new and every one stopped (a stopped process cannot fork, so the set
 * closes); then SIGKILL them all. A process is known by pid and start time, so a pid
 * reused meanwhile is never signalled.
 * Then a timer repeats the whole kill (after 10 ms, doubling to 1 s) until
 * the group and everything remembered are gone.
 * A scan reads one small file per process: a few milliseconds for
 * thousands of processes, on the loop, and only while a group is being
 * killed without cgroups.
 * Errors: none to the caller (see pgkill.h).
 */
#include "pgkill.h"

#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_GROUPS 256      /* groups tracked at once */
#define MAX_MEMBERS 8192    /* processes remembered per group */
#define STOP_PASSES 64      /* scans before the SIGKILL, at most */
#define FIRST_RETRY_S 0.01
#define LAST_RETRY_S 1.0

typedef struct pinfo {
    pid_t pid, ppid, pgrp, sid;
    uint64_t start;
    char state; /* /proc/PID/stat's: 'T' (or 't') once stopped */
} pinfo_t;

typedef struct member {
    pid_t pid;
    uint64_t start;
} member_t;

typedef struct pgk_group {
    pid_t pgid;
    member_t *m;
    size_t n, cap;
    int killing;
    double retry;
    ev_timer t;
    struct pgk_group *next, *prev;
} pgk_group_t;

static struct ev_loop *g_loop;
static pgk_group_t *g_groups;
static unsigned g_n_groups, g_n_killing;

unsigned pgk_active(void) { return g_n_killing; }

void pgk_init(struct ev_loop *loop) { g_loop = loop; }

/* ------------------------------------------------------------ /proc */

static int read_stat(pid_t pid, pinfo_t *pi)
{
    char path[64], buf[1024];
    int fd;
    ssize_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    /* The name may hold anything, ')' included: parse after the last one. */
    char *p = strrchr(buf, ')');
    char state;
    int ppid, pgrp, sid;
    unsigned long long start = 0;
    if (!p || sscanf(p + 2, "%c %d %d %d", &state, &ppid, &pgrp, &sid) != 4)
        return -1;
    /* Field 22, starttime: 19 fields after the session (field 6). */
    for (int f = 3; f <= 22 && p; f++)
        p = strchr(p + 1, ' ');
    if (p)
        start = strtoull(p + 1, NULL, 10);
    if (state == 'Z' || state == 'X')
        return -1; /* dead already */
    pi->pid = pid;
    pi->ppid = ppid;
    pi->pgrp = pgrp;
    pi->sid = sid;
    pi->start = start;
    pi->state = state;
    return 0;
}

/* Every live process. Returns the count (*out malloc'd) or -errno. */
static long scan(pinfo_t **out)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pinfo_t *v = NULL;
    size_t n = 0, cap = 0;
    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        pinfo_t *nv = util_grow(v, &cap, n, sizeof *v, 512);
        if (!nv)
            break;
        v = nv;
        if (read_stat((pid_t)atoi(de->d_name), &v[n]) == 0)
            n++;
    }
    closedir(d);
    *out = v;
    return (long)n;
}

/* ------------------------------------------------------------ groups */

static pgk_group_t *find_group(pid_t pgid)
{
    for (pgk_group_t *g = g_groups; g; g = g->next)
        if (g->pgid == pgid)
            return g;
    return NULL;
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents);

static pgk_group_t *get_group(pid_t pgid)
{
    pgk_group_t *g = find_group(pgid);
    if (g || g_n_groups >= MAX_GROUPS || !(g = calloc(1, sizeof *g)))
        return g;
    g->pgid = pgid;
    ev_init(&g->t, on_retry);
    g->t.data = g;
    SA_LIST_PUSH(g_groups, g, next, prev);
    g_n_groups++;
    return g;
}

static void free_group(pgk_group_t *g)
{
    ev_timer_stop(g_loop, &g->t);
    SA_LIST_UNLINK(g_groups, g, next, prev);
    if (g->killing)
        g_n_killing--;
    g_n_groups--;
    free(g->m);
    free(g);
}

static int is_member(const pgk_group_t *g, const pinfo_t *pi)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->m[i].pid == pi->pid && g->m[i].start == pi->start)
            return 1;
    return 0;
}

static int add_member(pgk_group_t *g, const pinfo_t *pi)
{
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 64;
        member_t *nm;
        if (nc > MAX_MEMBERS || !(nm = realloc(g->m, nc * sizeof *nm)))
            return -1;
        g->m = nm;
        g->cap = nc;
    }
    g->m[g->n].pid = pi->pid;
    g->m[g->n].start = pi->start;
    g->n++;
    return 0;
}

/* Add to g what belongs to it in v: the group, the session, and children
 * of members, until nothing changes. Stops the new ones when stop is set.
 * Returns how many were added. */
static size_t collect(pgk_group_t *g, pinfo_t *v, size_t n, int stop, int group_alive)
{
    size_t added = 0, before;
    pid_t self = getpid();
    do {
        before = added;
        for (size_t i = 0; i < n; i++) {
            pinfo_t *pi = &v[i];
            if (pi->pid == self || is_member(g, pi))
                continue;
            int in = group_alive && (pi->pgrp == g->pgid || pi->sid == g->pgid);
            for (size_t j = 0; !in && j < g->n; j++)
                in = g->m[j].pid == pi->ppid;
            if (!in || add_member(g, pi) < 0)
                continue;
            if (stop)
                kill(pi->pid, SIGSTOP);
            added++;
        }
    } while (added != before);
    return added;
}

/* Stop everything that belongs to g, scanning until a scan finds nobody new
 * and every member is seen stopped, then SIGKILL it all. Seen stopped, not
 * only sent SIGSTOP: a signal takes effect when its target next runs, and a
 * member still running (or in the middle of a fork) when the last scan
 * read /proc would leave a child nobody saw, which the SIGKILL of its
 * parent would orphan out of reach (found by a bomb in sessions of its
 * own, on a loaded machine). Members remembered from before (pgk_mark) are
 * stopped here too. */
static void kill_now(pgk_group_t *g)
{
    pinfo_t *v = NULL;
    int alive = kill(-g->pgid, 0) == 0;
    long n;

    for (int pass = 0; pass < STOP_PASSES; pass++) {
        if ((n = scan(&v)) < 0)
            break;
        /* Members that died are dropped; those alive stay known, and are
         * stopped if they are not yet. */
        size_t keep = 0, running = 0;
        for (size_t i = 0; i < g->n; i++) {
            const pinfo_t *live = NULL;
            for (long j = 0; j < n && !live; j++)
                if (v[j].pid == g->m[i].pid && v[j].start == g->m[i].start)
                    live = &v[j];
            if (!live)
                continue;
            if (live->state != 'T' && live->state != 't') {
                kill(live->pid, SIGSTOP);
                running++;
            }
            g->m[keep++] = g->m[i];
        }
        g->n = keep;
        size_t added = collect(g, v, (size_t)n, 1, alive);
        free(v);
        v = NULL;
        if (!added && !running)
            break;
        if (!added)
            sched_yield(); /* let the stops land */
    }
    if (alive)
        kill(-g->pgid, SIGKILL);
    for (size_t i = 0; i < g->n; i++)
        kill(g->m[i].pid, SIGKILL);
    free(v);
}

static int group_gone(pgk_group_t *g)
{
    if (kill(-g->pgid, 0) == 0)
        return 0;
    for (size_t i = 0; i < g->n; i++) {
        pinfo_t pi;
        if (read_stat(g->m[i].pid, &pi) == 0 && pi.start == g->m[i].start)
            return 0;
    }
    return 1;
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    pgk_group_t *g = w->data;
    if (group_gone(g)) {
        free_group(g);
        return;
    }
    kill_now(g);
    g->retry = g->retry * 2 > LAST_RETRY_S ? LAST_RETRY_S : g->retry * 2;
    ev_timer_set(w, g->retry, 0);
    ev_timer_start(loop, w);
}

int pgk_marked(pid_t pgid)
{
    pgk_group_t *g = find_group(pgid);
    return g && g->n > 0;
}

void pgk_mark(pid_t pgid)
{
    pgk_group_t *g = get_group(pgid);
    pinfo_t *v = NULL;
    long n;
    if (!g || (n = scan(&v)) < 0)
        return;
    collect(g, v, (size_t)n, 0, kill(-pgid, 0) == 0);
    free(v);
}

void pgk_kill(pid_t pgid)
{
    pgk_group_t *g = get_group(pgid);
    if (!g) {
        kill(-pgid, SIGKILL);
        return;
    }
    kill_now(g);
    if (!g->killing) {
        g->killing = 1;
        g_n_killing++;
    }
    g->retry = FIRST_RETRY_S;
    ev_timer_stop(g_loop, &g->t);
    ev_timer_set(&g->t, g->retry, 0);
    ev_timer_start(g_loop, &g->t);
}
