/* dispatch.c - see dispatch.h.
 * Errors: as dispatch.h. */
#include "dispatch.h"

#include "config.h"
#include "control.h"
#include "freeze.h"
#include "fs.h"
#include "handler.h"
#include "lifecycle.h"
#include "log.h"
#include "proc.h"
#include "service.h"
#include "tunnel.h"
#include "watch.h"

#include <errno.h>

typedef struct route {
    const char *name;
    handler_fn *fn;
} route_t;

/* Indexed by Request.op case. */
static const route_t routes[] = {
    [OP(HELLO)] = {"hello", control_hello},
    [OP(PING)] = {"ping", control_ping},
    [OP(INFO)] = {"info", control_info},
    [OP(CANCEL)] = {"cancel", control_cancel},

    [OP(START)] = {"start", proc_handle_start},
    [OP(FOLLOW)] = {"follow", proc_handle_follow},
    [OP(SIGNAL)] = {"signal", proc_handle_signal},
    [OP(WRITE_STDIN)] = {"write_stdin", proc_handle_write_stdin},
    [OP(CLOSE_STDIN)] = {"close_stdin", proc_handle_close_stdin},
    [OP(RESIZE)] = {"resize", proc_handle_resize},
    [OP(WAIT)] = {"wait", proc_handle_wait},
    [OP(LIST_PROCESSES)] = {"list_processes", proc_handle_list},
    [OP(GET_PROCESS)] = {"get_process", proc_handle_get},
    [OP(FORGET)] = {"forget", proc_handle_forget},
    [OP(WAIT_READY)] = {"wait_ready", svc_handle_wait_ready},
    [OP(STOP_SERVICE)] = {"stop_service", svc_handle_stop},
    [OP(FREEZE_PROCESSES)] = {"freeze_processes", freeze_handle_freeze},
    [OP(THAW_PROCESSES)] = {"thaw_processes", freeze_handle_thaw},

    [OP(READ_FILE)] = {"read_file", fs_handle_read},
    [OP(WRITE_FILE)] = {"write_file", fs_handle_write},
    [OP(LIST_DIR)] = {"list_dir", fs_handle_list},
    [OP(STAT)] = {"stat", fs_handle_stat},
    [OP(MKDIR)] = {"mkdir", fs_handle_mkdir},
    [OP(REMOVE)] = {"remove", fs_handle_remove},
    [OP(RENAME)] = {"rename", fs_handle_rename},
    [OP(WATCH)] = {"watch", watch_handle},
    [OP(SYMLINK)] = {"symlink", fs_handle_symlink},
    [OP(SET_ATTRIBUTES)] = {"set_attributes", fs_handle_set_attributes},

    [OP(OPEN_TUNNEL)] = {"open_tunnel", tunnel_handle_open},
    [OP(CONNECT)] = {"connect", tunnel_handle_connect},
    [OP(QUIESCE)] = {"quiesce", lc_handle_quiesce},
    [OP(THAW)] = {"thaw", lc_handle_thaw},
    [OP(RESTORED)] = {"restored", lc_handle_restored},
    [OP(WATCH_LIFECYCLE)] = {"watch_lifecycle", lc_handle_watch},
};

void dispatch_request(conn_t *c, const Request *req)
{
    int op = (int)req->op_case;

    /* The auth gate: with a token configured, the first request must be a
     * Hello carrying it. Anything else ends the connection. */
    if (!conn_authenticated(c) && op != OP(HELLO)) {
        log_warn("conn %s: request before authentication; closing", conn_peer(c));
        conn_send_error(c, req->id, CODE(UNAUTHENTICATED), 0,
                        "authentication required: send Hello with the token first");
        conn_close_after_flush(c);
        return;
    }
    /* Responses with id 0 speak about the connection: a request cannot
     * have it, or its answers would be taken for the connection's. */
    if (req->id == 0) {
        conn_send_error(c, 0, CODE(INVALID_ARGUMENT), 0,
                        "request id 0 is reserved for messages about the connection; "
                        "number requests from 1");
        return;
    }
    /* A chunk of an upload in flight goes to the stream that owns its id. */
    if (op == OP(WRITE_DATA)) {
        stream_t *s = conn_stream_find(c, req->id);
        if (!s || !s->ops->feed) {
            conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0,
                            "write_data for id %llu: no upload in flight with that id",
                            (unsigned long long)req->id);
            return;
        }
        if (s->ops->feed(s, req) == STREAM_DONE)
            conn_stream_end(c, s);
        else
            stream_wake(s);
        return;
    }
    /* A tunnel's data and credit belong to the tunnel's request, usually
     * under its id. */
    if (op == OP(TUNNEL_SEND) || op == OP(TUNNEL_WINDOW)) {
        tunnel_handle_feed(c, req);
        return;
    }
    if (op <= 0 || (size_t)op >= sizeof routes / sizeof routes[0] || !routes[op].fn) {
        conn_send_error(c, req->id, CODE(UNIMPLEMENTED), 0,
                        "operation %d is not implemented by this agent (protocol version 1)",
                        op);
        return;
    }
    if (conn_id_in_flight(c, req->id)) {
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0,
                        "request id %llu is already in flight on this connection",
                        (unsigned long long)req->id);
        return;
    }
    log_debug("conn %s: request %llu %s", conn_peer(c), (unsigned long long)req->id,
              routes[op].name);
    routes[op].fn(c, req);
}
