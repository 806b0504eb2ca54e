/* watch_internal.h - private to watch*.c: a watch stream, the kernel watch
 * descriptors it subscribes to, and what the three files of WatchPath ask of
 * each other (watch.c the streams and their events, watch_inotify.c the
 * shared instance and its wds, watch_walk.c the watches a worker adds). */
#ifndef SA_WATCH_INTERNAL_H
#define SA_WATCH_INTERNAL_H

#include "fs_internal.h"
#include "watch.h"

#include <sys/inotify.h>
#include <sys/types.h>

typedef struct watch watch_t;
typedef struct kwd kwd_t;

typedef struct wev {
    int kind;
    char *path, *old; /* malloc'd; old only for RENAME */
    int has_entry;    /* entry filled (in the watch's arena) by a worker */
    Entry entry;
} wev_t;

/* A directory that appeared in a recursive watch, to be added by a worker:
 * name inside the directory parent, which must still be the inode
 * (pdev, pino) that was watched. */
typedef struct grow {
    struct grow *next;
    char *parent, *name, *path;
    dev_t pdev;
    ino_t pino;
} grow_t;

/* One stream's interest in one kernel wd. */
typedef struct sub {
    watch_t *w;
    kwd_t *k;
    char *path;               /* this directory (or file) as the stream names it */
    struct sub *knext, *kprev; /* the subscribers of k */
    struct sub *wnext, *wprev; /* the subscriptions of w */
} sub_t;

/* One kernel watch descriptor of the shared instance. */
struct kwd {
    int wd;
    dev_t dev;      /* the inode watched */
    ino_t ino;
    size_t refs;    /* subscriptions; 0 only while a walk is in flight */
    sub_t *subs;
    kwd_t *hnext;   /* hash chain */
};

/* What a worker's job added: taken by the loop in job_done. */
typedef struct added {
    int wd;
    char *path;
    dev_t dev;
    ino_t ino;
} added_t;

/* A watch stream is a file operation (fsop_t: its stream, its one job at a
 * time, its user, path and error): the job runs as the user, and a stream
 * destroyed while it runs is freed by the job's end. */
struct watch {
    fsop_t o;
    int started, ready;
    int walking; /* a job's results wait for watch_settle */
    int ifd;     /* the shared instance, for the worker */
    int recursive;
    int root_wd;
    sub_t *subs;
    size_t nsubs;   /* directories (and files) this stream watches */
    added_t *added; /* the walk's results, until job_done */
    size_t nadded, capadded;
    grow_t *grow, *grow_tail; /* new directories waiting for a job */
    grow_t *jgrow;            /* those the job in flight adds */
    size_t ngrow;             /* in both lists */
    size_t budget;            /* directories the job may still add */
    int capped, jcapped;      /* stopped adding (the bound was reached) */
    size_t nstat;             /* events at the queue's head the job stats */
    size_t nready;            /* events at the head ready to send */
    watch_t *gnext, *gprev; /* every watch stream */
    wev_t q[WATCH_QUEUE];
    size_t qhead, qcount;
    int overflow;
    uint32_t moved_cookie; /* a MOVED_FROM waiting for its MOVED_TO */
    char *moved_path;
};

/* watch.c: the streams */
void watch_enqueue(watch_t *w, int kind, char *path, char *old);
void watch_flush_moved(watch_t *w);
void watch_event(sub_t *s, const struct inotify_event *ev);

/* watch_inotify.c: the shared instance and its wds */
int watch_hold(watch_t *w);
void watch_unhold(watch_t *w);
int watch_sub_add(watch_t *w, int wd, char *path, dev_t dev, ino_t ino);
void watch_sub_free(sub_t *s);
int watch_was_ignored(int wd);
/* A job that may be handed wds starts; and ends (its wds taken): the
 * unreferenced ones are removed once none is in flight. */
void watch_walks_begin(void);
void watch_walks_end(void);

/* watch_walk.c: on a worker, as the user */
void watch_fail(watch_t *w, int rc, const char *path);
void watch_grow_free(grow_t *g);
void watch_job_run(fsw_job_t *j);

#endif
