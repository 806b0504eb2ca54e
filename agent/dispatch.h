/* dispatch.h - from Request.op to its handler, and the auth gate in front
 * of them. conn hands every parsed request here (main installs
 * dispatch_request with conn_set_request_handler).
 * Errors: an unknown op or a request before Hello is answered with an Error
 * here; the handlers answer the rest (handler.h). */
#ifndef SA_DISPATCH_H
#define SA_DISPATCH_H

#include "conn.h"
#include "pb.h"

void dispatch_request(conn_t *c, const Request *req);

#endif
