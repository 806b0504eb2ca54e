/* proc.c - placeholder until the process table lands: every process
 * operation answers UNIMPLEMENTED. */
#include "proc.h"

#include <errno.h>

int proc_init(struct ev_loop *loop) { (void)loop; return 0; }
void proc_shutdown(struct ev_loop *loop, uint32_t grace_ms, void (*done)(struct ev_loop *))
{
    (void)grace_ms;
    done(loop);
}
unsigned proc_count_running(void) { return 0; }
unsigned proc_count_kept(void) { return 0; }
uint64_t proc_kept_output_bytes(void) { return 0; }

#define UNIMPL(fn)                                                                          \
    void fn(conn_t *c, const Request *req)                                                  \
    {                                                                                       \
        conn_send_error(c, req->id, CODE(UNIMPLEMENTED), ENOSYS, "%s: not implemented yet", \
                        #fn);                                                               \
    }
UNIMPL(proc_handle_start)
UNIMPL(proc_handle_follow)
UNIMPL(proc_handle_signal)
UNIMPL(proc_handle_write_stdin)
UNIMPL(proc_handle_close_stdin)
UNIMPL(proc_handle_resize)
UNIMPL(proc_handle_wait)
UNIMPL(proc_handle_list)
UNIMPL(proc_handle_get)
UNIMPL(proc_handle_forget)
