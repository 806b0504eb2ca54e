/* proc_index.c - the process table's indexes, so that what a request or a
 * reap does costs the same with 1 or 100,000 records kept: records by pid
 * (a hash whose buckets double as the table grows, so chains stay short),
 * and by tag (one group per tag: every record with it in start order, and
 * apart the few that can be "the running one" a tag names first).
 *
 * Figure 9 of the benchmark (bench/scale.c) measures that nothing grows;
 * before these, a pid lookup walked a chain of table/1,024 records and a
 * tag lookup the whole table. */
#include "proc_internal.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_MIN 1024 /* buckets of either hash when first made */

struct proc_tag {
    struct proc_tag *hnext;
    uint32_t hash;
    char *tag;
    proc_t *head, *tail;         /* every record with the tag, start order */
    proc_t *hot_head, *hot_tail; /* of those, the running ones and services */
};

static proc_t **g_pid;
static size_t g_pid_size, g_pid_n;
static proc_tag_t **g_tag;
static size_t g_tag_size, g_tag_n;
/* Tagged records whose group could not be made (out of memory): walked by
 * every tag lookup, so normally empty. */
static proc_t *g_loose;
static uint64_t g_seq; /* start order, across groups */

static size_t pid_slot(uint32_t pid, size_t size) { return pid & (size - 1); }

static uint32_t tag_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Twice the buckets once the entries outnumber them; rehashing now and then
 * keeps every lookup O(1) on average. Out of memory: the chains just get
 * longer (still correct). */
static void pid_grow(void)
{
    size_t size = g_pid_size ? g_pid_size * 2 : INDEX_MIN;
    proc_t **b = calloc(size, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < g_pid_size; i++) {
        for (proc_t *p = g_pid[i], *next; p; p = next) {
            next = p->hnext;
            size_t k = pid_slot((uint32_t)p->pid, size);
            p->hnext = b[k];
            b[k] = p;
        }
    }
    free(g_pid);
    g_pid = b;
    g_pid_size = size;
}

static void tag_grow(void)
{
    size_t size = g_tag_size ? g_tag_size * 2 : INDEX_MIN;
    proc_tag_t **b = calloc(size, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < g_tag_size; i++) {
        for (proc_tag_t *t = g_tag[i], *next; t; t = next) {
            next = t->hnext;
            t->hnext = b[t->hash & (size - 1)];
            b[t->hash & (size - 1)] = t;
        }
    }
    free(g_tag);
    g_tag = b;
    g_tag_size = size;
}

proc_t *proc_find_pid(uint32_t pid)
{
    if (!g_pid)
        return NULL;
    for (proc_t *p = g_pid[pid_slot(pid, g_pid_size)]; p; p = p->hnext)
        if ((uint32_t)p->pid == pid)
            return p;
    return NULL;
}

int proc_index_init(void)
{
    pid_grow();
    return g_pid ? 0 : -ENOMEM;
}

static void pid_link(proc_t *p)
{
    if (g_pid_n >= g_pid_size)
        pid_grow();
    size_t k = pid_slot((uint32_t)p->pid, g_pid_size);
    p->hnext = g_pid[k];
    g_pid[k] = p;
    g_pid_n++;
}

static void pid_unlink(proc_t *p)
{
    for (proc_t **pp = &g_pid[pid_slot((uint32_t)p->pid, g_pid_size)]; *pp;
         pp = &(*pp)->hnext) {
        if (*pp == p) {
            *pp = p->hnext;
            p->hnext = NULL;
            g_pid_n--;
            return;
        }
    }
}

static proc_tag_t *tag_find(const char *tag, uint32_t h)
{
    if (!g_tag)
        return NULL;
    for (proc_tag_t *t = g_tag[h & (g_tag_size - 1)]; t; t = t->hnext)
        if (t->hash == h && !strcmp(t->tag, tag))
            return t;
    return NULL;
}

/* The group of p's tag, made when it is the first. NULL on ENOMEM. */
static proc_tag_t *tag_group(const char *tag)
{
    uint32_t h = tag_hash(tag);
    proc_tag_t *t = tag_find(tag, h);
    if (t)
        return t;
    if (g_tag_n >= g_tag_size)
        tag_grow();
    if (!g_tag || !(t = calloc(1, sizeof *t)))
        return NULL;
    if (!(t->tag = strdup(tag))) {
        free(t);
        return NULL;
    }
    t->hash = h;
    t->hnext = g_tag[h & (g_tag_size - 1)];
    g_tag[h & (g_tag_size - 1)] = t;
    g_tag_n++;
    return t;
}

static void tag_group_free(proc_tag_t *t)
{
    for (proc_tag_t **pp = &g_tag[t->hash & (g_tag_size - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            break;
        }
    }
    g_tag_n--;
    free(t->tag);
    free(t);
}

static void hot_unlink(proc_t *p)
{
    if (!p->hot)
        return;
    SA_LIST_UNLINK_TAIL(p->tg->hot_head, p->tg->hot_tail, p, hotnext, hotprev);
    p->hot = 0;
}

void proc_index_add(proc_t *p)
{
    p->seq = ++g_seq;
    pid_link(p);
    if (!p->tag)
        return;
    if (!(p->tg = tag_group(p->tag))) {
        /* Out of memory for a new group: still found, on the short list. */
        SA_LIST_PUSH(g_loose, p, tnext, tprev);
        return;
    }
    SA_LIST_APPEND(p->tg->head, p->tg->tail, p, tnext, tprev);
    if (p->state == PROC_RUNNING || p->svc) {
        SA_LIST_APPEND(p->tg->hot_head, p->tg->hot_tail, p, hotnext, hotprev);
        p->hot = 1;
    }
}

void proc_index_remove(proc_t *p)
{
    pid_unlink(p);
    if (!p->tag)
        return;
    if (!p->tg) {
        SA_LIST_UNLINK(g_loose, p, tnext, tprev);
        return;
    }
    hot_unlink(p);
    SA_LIST_UNLINK_TAIL(p->tg->head, p->tg->tail, p, tnext, tprev);
    if (!p->tg->head)
        tag_group_free(p->tg);
    p->tg = NULL;
}

void proc_index_rekey(proc_t *p, pid_t pid)
{
    pid_unlink(p);
    p->pid = pid;
    pid_link(p); /* the buckets exist (made by proc_index_init): cannot fail */
}

/* A record that ran and no longer does: a process's leader was reaped. A
 * service's record stays among the hot ones between runs. */
void proc_index_cooled(proc_t *p)
{
    if (p->tg && p->state != PROC_RUNNING && !p->svc)
        hot_unlink(p);
}

static int is_hot(const proc_t *p)
{
    return p->state == PROC_RUNNING || (p->svc && svc_live(p->svc));
}

/* The newest record with this tag, a running one (or a live service) first:
 * the hot ones are few, whatever else the tag has kept. A service's record
 * that is over can never be running again, so it leaves them when met. */
proc_t *proc_index_tag(const char *tag)
{
    proc_tag_t *t = tag_find(tag, tag_hash(tag));
    proc_t *best = NULL;
    if (t) {
        for (proc_t *p = t->hot_tail, *prev; p && !best; p = prev) {
            prev = p->hotprev;
            if (is_hot(p))
                best = p;
            else if (p->state == PROC_FINAL)
                hot_unlink(p);
        }
        if (!best)
            best = t->tail;
    }
    for (proc_t *p = g_loose; p; p = p->tnext) {
        if (strcmp(p->tag, tag))
            continue;
        int better = best ? is_hot(p) - is_hot(best) : 1;
        if (better > 0 || (better == 0 && p->seq > best->seq))
            best = p;
    }
    return best;
}
