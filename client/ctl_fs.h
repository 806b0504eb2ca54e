/* ctl_fs.h - what sandboxctl's file commands share: ctl_fs.c (the
 * one-shot commands and the requests below), ctl_cp.c (cp's options and
 * progress), ctl_upload.c and ctl_download.c (each direction). The
 * functions answer 0, 1 when the agent refused or one entry failed (said
 * why), -1 when the connection failed, unless they say otherwise. */
#ifndef SA_CTL_FS_H
#define SA_CTL_FS_H

#include "ctl.h"

#include <stdint.h>
#include <sys/types.h>

#define T_FILE SANDBOX__AGENT__V1__FILE_TYPE__FILE
#define T_DIR SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY
#define T_LINK SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK
#define T_FIFO SANDBOX__AGENT__V1__FILE_TYPE__FIFO
#define T_SOCK SANDBOX__AGENT__V1__FILE_TYPE__SOCKET
#define T_CHR SANDBOX__AGENT__V1__FILE_TYPE__CHAR_DEVICE
#define T_BLK SANDBOX__AGENT__V1__FILE_TYPE__BLOCK_DEVICE

/* A tree deeper than this is reported, not followed (a -L loop). */
#define MAX_DEPTH 256

/* -u: act as this user on the agent ("" is the connection's). */
extern const char *ctl_fs_user;

/* ------------------------------------------------------------ ctl_fs.c */

/* A path from the command line without its ':'. */
const char *ctl_fs_rpath(const char *s);
/* "file", "directory", ...; and "a regular file", ... for a sentence. */
const char *ctl_fs_type_name(int t);
const char *ctl_fs_type_words(int t);
/* A local st_mode's T_* (0 for none). */
int ctl_fs_local_type(mode_t m);
/* Stat (any response, NULL when the connection failed: ctl_request). */
Response *ctl_fs_stat(ctl_t *ctl, const char *path, int follow, const char *what);
int ctl_fs_mkdir(ctl_t *ctl, const char *path, int parents, uint32_t mode, const char *what);
/* List path to depth, calling each() for every entry (1 when each() failed). */
int ctl_fs_list(ctl_t *ctl, const char *path, unsigned depth, int hidden, const char *what,
                int (*each)(ctl_t *, const Entry *, void *), void *arg);
/* a/b, malloc'd (NULL on ENOMEM); the last name of a path ("dir/" too). */
char *ctl_fs_join(const char *a, const char *b);
const char *ctl_fs_base_name(const char *p);

/* ------------------------------------------------------------ ctl_cp.c */

typedef struct ctl_cp_opts {
    int recursive; /* -r, -R, -a */
    int follow;    /* -L: copy what links point to */
    int keep_time; /* -p, -a: modification times too (modes always) */
    int depth;
    dev_t anc_dev[MAX_DEPTH]; /* the directories being uploaded, for -L loops */
    ino_t anc_ino[MAX_DEPTH];
} ctl_cp_opts_t;

/* This cp's options. */
extern ctl_cp_opts_t ctl_cp;
/* A tree's files get no bar each: a bar per file of a thousand is noise. */
extern int ctl_cp_progress_off;

typedef struct ctl_progress {
    int on;
    const char *name;
    uint64_t total, done;
    double t0, last;
} ctl_progress_t;

void ctl_progress_start(ctl_progress_t *p, const char *name, uint64_t total);
/* Redraw at most every 0.1 s; final: the last time, with a newline. */
void ctl_progress_draw(ctl_progress_t *p, int final);

ctl_cmd_fn ctl_cp_cmd;

/* ------------------------------------------------------------ ctl_upload.c */

/* Upload local to the agent's remote: a file, a tree (-r), a link as a
 * link (unless -L, or a file named on the command line without -r). top:
 * named on the command line. The rest is copied when one entry fails. */
int ctl_upload_entry(ctl_t *ctl, const char *local, const char *remote, int top);

/* ------------------------------------------------------------ ctl_download.c */

/* Download the agent's src into the local fd (a file or stdout); label is
 * the command, for messages. */
int ctl_download_fd(ctl_t *ctl, const char *src, int fd, const char *label, uint64_t size);

typedef struct ctl_item ctl_item_t;
/* What the copy needs of one entry on either side. */
struct ctl_item {
    char *name;   /* bytes */
    char *target; /* a link's, bytes */
    int type;
    uint32_t mode;
    int64_t mtime;
    uint64_t size;
};
void ctl_item_free(ctl_item_t *it);
/* -1 on ENOMEM (free it anyway). */
int ctl_item_of(ctl_item_t *it, const Entry *e);
/* Download the agent's remote (described by it, as listed) to local. */
int ctl_download_entry(ctl_t *ctl, const char *remote, const char *local, ctl_item_t *it);

#endif
