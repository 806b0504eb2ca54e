/* fs.c - placeholder until the file operations land: every file operation
 * answers UNIMPLEMENTED. */
#include "fs.h"

#include <errno.h>

int fs_init(struct ev_loop *loop) { (void)loop; return 0; }
void fs_shutdown(void) {}

#define UNIMPL(fn)                                                                          \
    void fn(conn_t *c, const Request *req)                                                  \
    {                                                                                       \
        conn_send_error(c, req->id, CODE(UNIMPLEMENTED), ENOSYS, "%s: not implemented yet", \
                        #fn);                                                               \
    }
UNIMPL(fs_handle_read)
UNIMPL(fs_handle_write)
UNIMPL(fs_handle_list)
UNIMPL(fs_handle_stat)
UNIMPL(fs_handle_mkdir)
UNIMPL(fs_handle_remove)
UNIMPL(fs_handle_rename)
UNIMPL(fs_handle_watch)
