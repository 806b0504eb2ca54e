/* fs.h - file operations and their streams, each done with the requesting
 * user's permissions. Blocking work runs on the file workers (fsworker.h);
 * every request, even a one-shot one, is a stream of its connection, so a
 * connection that closes mid-operation orphans the work, never the memory. */
#ifndef SA_FS_H
#define SA_FS_H

#include "handler.h"
#include "user.h"

#include <ev.h>
#include <sys/stat.h>

int fs_init(struct ev_loop *loop);
/* After the loop: wait up to wait_ms for the file workers (see fsw_shutdown). */
void fs_shutdown(unsigned wait_ms);

handler_fn fs_handle_read;
handler_fn fs_handle_write; /* later chunks arrive through the stream's feed() */
handler_fn fs_handle_list;
handler_fn fs_handle_stat;
handler_fn fs_handle_mkdir;
handler_fn fs_handle_remove;
handler_fn fs_handle_rename;
handler_fn fs_handle_symlink;
handler_fn fs_handle_set_attributes;

/* ------------------------------------ for other modules (watch, tunnel) */

/* A bump allocator for the strings of Entries: freed all at once after the
 * response that points into it is packed. */
typedef struct fs_arena {
    struct fs_ablk *head;
} fs_arena_t;
void *fs_arena_alloc(fs_arena_t *a, size_t n); /* NULL on ENOMEM */
void fs_arena_free(fs_arena_t *a);

/* Set a string field and its *_raw twin from the bytes src[0..len): the
 * string is always valid UTF-8; raw is set only when src is not. */
int fs_set_name(fs_arena_t *a, char **str, ProtobufCBinaryData *raw, const char *src,
                size_t len);
/* Fill e for path from fstatat(dirfd, name) (following symlinks when
 * follow). Thread-safe: the workers call it. Returns 0 or -errno. */
int fs_entry_at(fs_arena_t *a, Entry *e, int dirfd, const char *name, const char *path,
                int follow);

/* The request's user (spec empty: the agent's own; *set = 0). Answers the
 * error and returns -1 when it cannot be resolved. */
int fs_req_user(conn_t *c, uint64_t id, const char *spec, user_id_t *u, int *set);

#endif
