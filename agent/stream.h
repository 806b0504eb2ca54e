/* stream.h - the pull interface behind every long response.
 *
 * A request that answers more than once (following output, reading a file,
 * listing a directory, watching a path, waiting for an exit) becomes a
 * stream owned by its connection. The connection calls next() only while its
 * output queue has room, so a slow client costs no memory: the producer
 * stops, or (for process output) the follower's cursor simply lags.
 * Producers call stream_wake() when next() may have something new.
 * Errors: a stream answers its own errors (an Error with done) and returns
 * STREAM_DONE; nothing is returned to the connection.
 */
#ifndef SA_STREAM_H
#define SA_STREAM_H

#include "pb.h"

#include <stdint.h>

struct conn;
typedef struct stream stream_t;

typedef enum stream_status {
    STREAM_WAIT = 0, /* nothing now; the producer will stream_wake() */
    STREAM_MORE = 1, /* sent something; may have more at once */
    STREAM_DONE = 2, /* sent the final (done = true) response; destroy me */
} stream_status_t;

typedef struct stream_ops {
    const char *name; /* names the stream in errors such as "read_file: the agent is shutting down" */
    /* Send at most about one frame with conn_send*(), and say what next. */
    stream_status_t (*next)(stream_t *s);
    /* A further request carrying this stream's id (WriteFile's FileData).
     * NULL: such requests are refused with INVALID_ARGUMENT. The handler
     * answers errors itself and returns STREAM_DONE to end the stream. */
    stream_status_t (*feed)(stream_t *s, const Request *req);
    /* Release everything. Called once: after DONE, on Cancel, or when the
     * connection closes. Must not send. Frees the stream itself. */
    void (*destroy)(stream_t *s);
} stream_ops_t;

struct stream {
    const stream_ops_t *ops;
    struct conn *conn;  /* owner; never NULL while registered */
    uint64_t id;        /* the request id it answers */
    /* Optional, set by the producer: the client shut down its sending side
     * (half-close) and every request it sent has been dispatched, so no
     * further request for this stream can come. A stream that needed more
     * input (an upload without its last chunk) answers its error and
     * returns STREAM_DONE; NULL: it finishes as usual. */
    stream_status_t (*input_end)(stream_t *s);
    /* private to conn.c */
    stream_t *_next, *_prev;   /* all streams of the connection */
    stream_t *_rnext;          /* ready list */
    int _ready;
    int _dead;                 /* an answer could not be sent: end it */
};

/* The producer has something: schedule next() when the connection has room.
 * Safe to call any number of times, from any callback. */
void stream_wake(stream_t *s);

#endif
