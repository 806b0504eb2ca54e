/* client.h - libsandbox-agent-client: a small blocking client for the
 * sandbox-agent protocol, shared by sandboxctl and the tests.
 *
 * One sa_client_t is one connection. Requests are the generated protobuf-c
 * types of proto/agent.proto; responses come back unpacked and are freed with
 * sa_response_free(). Responses for other ids that arrive while waiting for
 * one id are kept, in order, for later sa_client_recv*() calls.
 * All functions return 0 or a negative errno.
 */
#ifndef SANDBOX_AGENT_CLIENT_H
#define SANDBOX_AGENT_CLIENT_H

#include "agent.pb-c.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sa_client sa_client_t;
typedef Sandbox__Agent__V1__Request sa_request_t;
typedef Sandbox__Agent__V1__Response sa_response_t;

/* addr: "unix:PATH", a bare PATH, "tcp:HOST:PORT" or "vsock:CID:PORT"; NULL
 * or "" means $SANDBOX_AGENT_ADDR, else the agent's default socket. On
 * failure returns NULL and a readable reason in err. */
sa_client_t *sa_client_connect(const char *addr, char *err, size_t errlen);
void sa_client_close(sa_client_t *c);
int sa_client_fd(const sa_client_t *c);
/* Largest payload the agent accepts (from HelloReply; 4 MiB before Hello). */
uint32_t sa_client_max_frame(const sa_client_t *c);

/* A fresh request id, never 0. */
uint64_t sa_client_next_id(sa_client_t *c);
/* Send one request (compressed when compress is set and it pays). A request
 * with id 0 gets sa_client_next_id(). */
int sa_client_send(sa_client_t *c, sa_request_t *req);
int sa_client_send_z(sa_client_t *c, sa_request_t *req, int compress);
/* Raw bytes, for tests of malformed input. */
/* Write all of buf to fd: 0 or -errno. socket: send(MSG_NOSIGNAL), else write(2). */
int sa_write_all(int fd, const void *buf, size_t len, int socket);
int sa_client_send_raw(sa_client_t *c, const void *buf, size_t len);

/* Next response of any id. timeout_ms < 0 waits forever. -ETIMEDOUT,
 * -EPIPE when the agent closed the connection, -EBADMSG on a bad frame. */
int sa_client_recv(sa_client_t *c, sa_response_t **out, int timeout_ms);
/* Next response for id; others are kept for later. */
int sa_client_recv_id(sa_client_t *c, uint64_t id, sa_response_t **out, int timeout_ms);
/* Send req and wait for its final response (done = true). */
int sa_client_call(sa_client_t *c, sa_request_t *req, sa_response_t **out, int timeout_ms);
/* Hello; token may be NULL (then $SANDBOX_AGENT_TOKEN is used if set).
 * Returns 0, or -EACCES when the agent refused, with the message in err. */
int sa_client_hello(sa_client_t *c, const char *token, const char *client_name,
                    int accept_zlib, char *err, size_t errlen);

/* Dedicated mode: send Connect{target} (nothing else may be in flight) and
 * wait for its answer. On the Ack the connection carries the target's bytes
 * from then on: sa_client_fd() is the byte stream, and *rest (malloc'd, or
 * NULL) gets *rest_len bytes already read past the Ack, which come first.
 * On an Error returns -os_errno (or -EIO) with "CODE: message" in err; the
 * connection stays framed. */
int sa_client_dedicate(sa_client_t *c, const char *target, uint8_t **rest, size_t *rest_len,
                       char *err, size_t errlen);

void sa_response_free(sa_response_t *r);
/* "NOT_FOUND" for Error.Code values. */
const char *sa_error_code_name(int code);

#endif
