/* conn.h - one client connection: input buffer and frame parsing, the
 * output queue (writev, bounded), its streams by request id, the auth state,
 * and deferred close. Everything a handler needs to answer goes through
 * conn_send*(). Files: conn.c (the connection object, its streams),
 * conn_in.c (input, frames, holds, the upload budget), conn_out.c (the
 * output queue); conn_internal.h is what they share.
 * Errors: functions return 0 or a negative errno; an answer that cannot be
 * queued becomes an Error for its request, or closes the connection. */
#ifndef SA_CONN_H
#define SA_CONN_H

#include "pb.h"
#include "stream.h"

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct conn conn_t;

/* What conn does with each parsed request: set once at start-up (main
 * installs dispatch_request), so conn depends on nothing above it. */
typedef void conn_request_fn(conn_t *c, const Request *req);
void conn_set_request_handler(conn_request_fn *fn);

/* Take ownership of an accepted, non-blocking fd. kind is the listener's
 * "unix", "tcp" or "vsock" (listen.c has set keepalive on the others): used
 * in logs, and for "unix" the peer is named by its credentials
 * (SO_PEERCRED). Returns NULL (fd closed) on OOM. */
conn_t *conn_new(struct ev_loop *loop, int fd, const char *kind, const char *peer);

/* Queue one response frame. done marks the request's last response.
 * An answer is never dropped silently: when r cannot be queued (larger than
 * a frame: -EMSGSIZE; out of memory: -ENOMEM) the request gets an Error with
 * done instead, its stream (if any) ends after its current next(), and later
 * sends for that id are ignored (-EPIPE); when even the Error cannot be
 * queued the connection is closed. -EPIPE also when the connection is
 * closing. */
int conn_send(conn_t *c, uint64_t id, int done, Response *r);
/* The same, but a message that does not fit (-EMSGSIZE) is not answered:
 * for callers that cut it smaller and try again. */
int conn_send_try(conn_t *c, uint64_t id, int done, Response *r);
/* Bulk bytes by reference: r's result message sub has the bytes field bulk,
 * whose data is written to the socket from where it lies instead of being
 * packed into the queue (common/frame.h, frame_encode_head). release(arg)
 * is called once, on the loop, when the connection no longer needs the
 * bytes: written, or the connection gone. Until then they must not change.
 * Below CONN_REF_MIN bytes, on a compressing connection, or when sub and
 * bulk are not r's (a mistake, logged) or its head is unusually long, the
 * message is packed as by conn_send and release called before returning. Returns as
 * conn_send; on an error release is not called (the caller keeps the
 * bytes). */
#define CONN_REF_MIN (2u * 1024)
typedef void conn_release_fn(void *arg);
int conn_send_ref(conn_t *c, uint64_t id, int done, Response *r, ProtobufCMessage *sub,
                  ProtobufCBinaryData *bulk, conn_release_fn *release, void *arg);
/* Queue an Error response (done = true). code is an Error.Code value. */
int conn_send_error(conn_t *c, uint64_t id, int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Queue an error chosen from a negative errno (see errcode_from_errno). */
int conn_send_errno(conn_t *c, uint64_t id, int neg_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Register s as the stream answering id; schedules its first next().
 * Returns 0, -EEXIST (id in flight), -EMFILE (in-flight limit). On error the
 * stream is not taken: the caller destroys it. */
int conn_stream_add(conn_t *c, stream_t *s, uint64_t id);
/* Answer id when conn_stream_add refused its stream with rc: "op: too many
 * requests in flight on this connection", or the errno's text. */
int conn_send_stream_refused(conn_t *c, uint64_t id, int rc, const char *op);
stream_t *conn_stream_find(conn_t *c, uint64_t id);
/* End a stream now (Cancel): destroy without sending anything. */
void conn_stream_end(conn_t *c, stream_t *s);
/* An id is in flight (a stream answers it). */
int conn_id_in_flight(conn_t *c, uint64_t id);

/* Bytes of the largest payload a handler may put in one frame, leaving room
 * for the envelope. */
size_t conn_max_payload(const conn_t *c);
/* Bytes of data a stream should put in one message (an output event, a
 * file chunk, a list batch): at most a frame and half of
 * --max-queued-bytes, so a connection's queue stays within that limit. */
size_t conn_max_event(const conn_t *c);
/* Bytes queued for the peer. */
size_t conn_queued(const conn_t *c);

/* Stop parsing further requests of this connection (hold = 1) until
 * released (hold = 0): an upload whose previous chunk is still being written
 * by a worker holds its connection's input, which is the upload's
 * backpressure. Holds nest: each hold needs its release. */
void conn_hold_input(conn_t *c, int hold);

/* Requests in flight on this connection (its streams). */
unsigned conn_in_flight(const conn_t *c);

/* Receives a connection's socket and the bytes read from it but not parsed
 * (malloc'd, or NULL when len is 0). fd < 0: the connection closed first. */
typedef void conn_handover_fn(void *arg, int fd, uint8_t *in, size_t len);
/* Give the socket away once the queued output is written (Connect's Ack):
 * fn receives it with the unparsed input, which belongs to whoever reads
 * the socket next, and the connection closes without closing the socket.
 * The caller holds the input (conn_hold_input) and has no stream left. */
void conn_handover(conn_t *c, conn_handover_fn *fn, void *arg);
/* Data received but not yet written (WriteFile chunks waiting for or in a
 * file worker, stdin writes the pipe has not taken) has a budget: two
 * frames per connection, eight for the agent. A connection whose data
 * takes it over either is not read again until enough is given back. take: n more bytes
 * held for c. give: n bytes freed; c NULL when the upload has left its
 * connection (conn_upload_leave). leave: the upload's stream leaves c (it
 * was cancelled or c closed) while its n bytes are still held elsewhere. */
/* Keep the bulk bytes d (the data field of the request being handled: a
 * WriteFile, FileData, WriteStdin or TunnelSend) past the handler's
 * return: out->data and out->len say where they are from now on, until the
 * handler frees out->block (NULL when d is empty); d is emptied. When
 * protobuf-c copied the bytes, that copy is the block; when they lie in the
 * connection's input buffer, that buffer becomes the block if they fill
 * most of it (the connection goes on in a new one), else they are copied
 * into one of their own, so the block is never much more than the bytes.
 * Returns 0, or -ENOMEM with nothing taken. */
typedef struct conn_bulk {
    void *block;
    uint8_t *data;
    size_t len;
} conn_bulk_t;
int conn_keep_bulk(conn_t *c, ProtobufCBinaryData *d, conn_bulk_t *out);
void conn_upload_take(conn_t *c, size_t n);
void conn_upload_give(conn_t *c, size_t n);
void conn_upload_leave(conn_t *c, size_t n);

int conn_authenticated(const conn_t *c);
void conn_set_authenticated(conn_t *c);
void conn_set_zlib(conn_t *c, int accept_zlib);
/* Close after the queued output is flushed (protocol errors, auth). */
void conn_close_after_flush(conn_t *c);
/* Close now: cancels streams, frees later. */
void conn_close(conn_t *c);
const char *conn_peer(const conn_t *c);
/* Peer credentials for unix sockets (-1 when unknown). */
pid_t conn_peer_pid(const conn_t *c);
uid_t conn_peer_uid(const conn_t *c);

/* Global: number of open connections; close all (shutdown). */
unsigned conn_count(void);
/* Connections that have not authenticated yet (a token is configured), and
 * how many of them the agent admits at once: the rest of --max-connections
 * stays for clients that authenticate. */
unsigned conn_count_unauthenticated(void);
unsigned conn_max_unauthenticated(void);
/* Close the unauthenticated connection that has waited longest (it gets
 * RESOURCE_EXHAUSTED with id 0). */
void conn_evict_unauthenticated(void);
void conn_close_all(void);
/* Shutdown: answer every stream in flight with UNAVAILABLE, write what each
 * socket takes without waiting, then close all. */
void conn_shutdown_all(void);
/* Close every connection whose socket reports an error or a hang-up: after
 * a restore, vsock connections have been reset by the transport, and TCP
 * ones may have been. Returns how many. */
unsigned conn_close_broken(void);
/* Per-loop-turn work: flush woken streams, free closed connections. Called
 * from an ev_prepare watcher that main installs. */
void conn_before_sleep(struct ev_loop *loop);

#endif
