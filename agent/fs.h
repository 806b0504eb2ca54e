/* fs.h - file operations and their streams, each done with the requesting
 * user's permissions. */
#ifndef SA_FS_H
#define SA_FS_H

#include "dispatch.h"

#include <ev.h>

int fs_init(struct ev_loop *loop);
void fs_shutdown(void);

dispatch_handler_fn fs_handle_read;
dispatch_handler_fn fs_handle_write; /* later chunks arrive through the stream's feed() */
dispatch_handler_fn fs_handle_list;
dispatch_handler_fn fs_handle_stat;
dispatch_handler_fn fs_handle_mkdir;
dispatch_handler_fn fs_handle_remove;
dispatch_handler_fn fs_handle_rename;
dispatch_handler_fn fs_handle_watch;

#endif
