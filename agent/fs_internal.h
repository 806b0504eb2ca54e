/* fs_internal.h - private to fs*.c and watch*.c: the operation base every
 * file request is built on (fsop_t: a stream holding at most one
 * file-worker job, busy while it runs, orphan when its stream went
 * meanwhile), and the helpers the operations share. */
#ifndef SA_FS_INTERNAL_H
#define SA_FS_INTERNAL_H

#include "conn.h"
#include "fs.h"
#include "fsworker.h"

#include <sys/stat.h>

typedef struct fsop fsop_t;
typedef void fsop_fn(fsop_t *o);

struct fsop {
    stream_t base;
    fsw_job_t job;
    const char *what;   /* "read_file", for messages */
    fsop_fn *on_done;   /* on the loop after a job, unless orphan */
    fsop_fn *release;   /* orphan or finished: close and free (may submit) */
    int busy, orphan;
    int as_user;
    user_id_t user;
    char *path;
    /* The failure of the last job: -errno, the Error.Code (0: from errno)
     * and a message saying what was wrong with what. */
    int err, errcode;
    char *errmsg;
    fs_arena_t arena;
    Entry entry;
};

/* The request's path as a malloc'd absolute path: raw when non-empty, else
 * str; relative paths are taken from u's home ("/" without one). Answers the
 * error and returns -1 when missing or too long. */
int fs_req_path(conn_t *c, uint64_t id, const char *what, const char *str,
                const ProtobufCBinaryData *raw, const user_id_t *u, char **out);

/* fs.c: the operation base */
void fs_op_fail(fsop_t *o, int neg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void fs_op_fail_path(fsop_t *o, int neg, const char *path);
void fs_op_send_error(fsop_t *o);
void fs_op_free(fsop_t *o);
void fs_op_submit(fsop_t *o, fsw_fn *run);
void fs_op_destroy(stream_t *s);
fsop_t *fs_op_new(conn_t *c, const Request *req, size_t size, const char *what,
                  const char *user, const char *path, const ProtobufCBinaryData *raw);
int fs_op_register(conn_t *c, const Request *req, fsop_t *o, const stream_ops_t *ops);
void fs_op_finish(fsop_t *o, Response *r);
stream_status_t fs_op_next_wait(stream_t *s);
/* An on_done for streams that answer from next(): wake it. */
void fs_op_wake(fsop_t *o);

/* fs.c: paths, types, and the guard for acting as a user */
int fs_mkdir_p(char *path, mode_t mode, char **failed);
int fs_split_path(const char *path, char **dir, const char **name);
const char *fs_type_name(mode_t m);
int fs_open_as_user(const char *path, int flags);
int fs_own_proc_child(int dirfd, const char *name);
int fs_op_guarded(const fsop_t *o);

/* fs_entry.c */
int fs_entry_fill(fs_arena_t *a, Entry *e, const char *path, const struct stat *st,
                  const char *target, size_t tlen);

#endif
