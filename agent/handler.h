/* handler.h - the shape of a request handler, the one thing every module
 * that answers requests (control, proc, fs, watch, ...) shares with dispatch.
 *
 * A handler answers its request itself: one conn_send*() with done = true,
 * or a stream registered with conn_stream_add(). It never returns an error to
 * its caller: whatever went wrong has been answered.
 */
#ifndef SA_HANDLER_H
#define SA_HANDLER_H

#include "conn.h"
#include "pb.h"

typedef void handler_fn(conn_t *c, const Request *req);

#endif
