/* dispatch.h - from Request.op to its handler; the auth gate; the mapping
 * from negative errno to Error.Code at the protocol edge. */
#ifndef SA_DISPATCH_H
#define SA_DISPATCH_H

#include "conn.h"
#include "pb.h"

/* A handler answers its request itself: one conn_send*() with done = true,
 * or a stream registered with conn_stream_add(). */
typedef void dispatch_handler_fn(conn_t *c, const Request *req);

void dispatch_request(conn_t *c, const Request *req);
/* Error.Code for a negative errno. */
int dispatch_errno_code(int neg_errno);

#endif
