/* conn_internal.h - what the connection modules share: the connection
 * struct, the output block, the tunables, and the functions one of them
 * defines for the others. conn.c: the connection object (accept, close,
 * hand-over, authentication, the Hello deadline, the streams registry and
 * the service loop); conn_out.c: the output queue; conn_in.c: the input
 * buffer, frame parsing, input holds and the upload budget. Private to them.
 * Errors: 0 or -errno, as conn.h says. */
#ifndef SA_CONN_INTERNAL_H
#define SA_CONN_INTERNAL_H

#include "conn.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

#define BLOCK_SIZE (16 * 1024)
#define IN_INITIAL (16 * 1024)
/* Frames at least this long that carry bulk data (uploads, stdin, tunnel
 * data) are decoded by pbscan: the data is used where it lies in the input
 * buffer instead of being copied out. */
#define IN_SCAN_MIN 1024
#define WRITE_BUDGET (2u << 20)
#define PUMP_MAX_CALLS 4096
#define IOV_BATCH 64
/* Seconds of request handling per loop turn after which each connection
 * handles one request per turn, so that one connection's pipelined burst
 * does not hold up the others' requests. */
#define TURN_BUDGET 0.002
#define ZLIB_MISSES 2
#define ZLIB_SKIP 64
/* Before Hello succeeds, the largest frame accepted: a Hello fits in well
 * under this, and an unauthenticated peer costs no more. */
#define PREAUTH_FRAME_MAX (64u * 1024)
/* After the peer shut down its side, how often to ask whether it closed
 * the socket altogether (then nothing it asked for can reach it). */
#define EOF_CHECK_S 1.0
#define TRIM_MIN (4u << 20)
#define TRIM_QUIET_S 0.1

typedef struct oblock {
    struct oblock *next;
    uint8_t *data;
    size_t len; /* bytes filled */
    size_t off; /* bytes already written */
    size_t cap; /* 0: data is borrowed (conn_send_ref), release() gives it back */
    conn_release_fn *release;
    void *arg;
} oblock_t;

struct conn {
    struct ev_loop *loop;
    ev_io rio, wio;
    ev_timer wtimer;
    ev_timer htimer; /* the Hello deadline; after a half-close, the peer check */
    int fd;
    char kind[8];
    char peer[96];
    pid_t peer_pid;
    uid_t peer_uid;

    uint8_t *in;
    size_t in_off, in_len, in_cap; /* unparsed bytes: in[in_off .. in_len) */
    /* While a request is handled whose bulk bytes lie in `in` (pbscan):
     * that field. `in` is then neither moved nor freed, only given away
     * whole (conn_keep_bulk). */
    ProtobufCBinaryData *in_bulk;

    oblock_t *qhead, *qtail;
    size_t queued;
    uint64_t last_progress; /* monotonic ns of the last write that moved data */

    stream_t *streams; /* all in flight */
    unsigned n_streams;
    stream_t *rhead, *rtail; /* ready to be pulled */

    unsigned holds; /* conn_hold_input() nesting */
    size_t upload;  /* upload bytes held for this connection (conn_upload_*) */
    uint64_t dead_id; /* a unary answer that could not be sent: ignore its id */
    unsigned n_dead;  /* streams marked _dead */
    /* Compression that does not pay (random file data, already compressed
     * output) is skipped for a while instead of costing the loop on every
     * frame: after ZLIB_MISSES misses, the next ZLIB_SKIP large frames go
     * plain, then compression is tried again. */
    unsigned zlib_misses, zlib_skip;
    unsigned authed : 1, zlib : 1, closing : 1, close_after_flush : 1, paused : 1,
        pending : 1, in_service : 1, deferred : 1;
    conn_handover_fn *handover_fn; /* conn_handover(): called once flushed */
    void *handover_arg;
    unsigned unauth_counted : 1, eof : 1, eof_told : 1, budget_held : 1, has_dead_id : 1;
    conn_t *next_all, *prev_all;
    conn_t *next_pending;
    conn_t *next_free;
};

/* Every open connection, newest first (conn.c). */
extern conn_t *conn_all;

/* Memory given back to the allocator; large releases end with malloc_trim
 * (conn_before_sleep), so a burst that is over leaves no footprint. */
static inline void conn_freed(size_t n) { util_freed(n); }

/* conn.c: queue c for conn_service() before the loop sleeps. */
void conn_mark_pending(conn_t *c);
/* conn.c: pull streams, write, resume input, arm the write watcher. */
void conn_service(conn_t *c);

/* conn_in.c: the read watcher's callback. */
void conn_in_on_read(struct ev_loop *loop, ev_io *w, int revents);
/* conn_in.c: parse and dispatch the complete frames in the input buffer. */
void conn_in_process(conn_t *c);
/* conn_in.c: the peer closed the socket altogether. */
int conn_in_peer_gone(const conn_t *c);

/* conn_out.c: write the queue, within the turn's budget; 0 or -errno. */
int conn_out_write(conn_t *c);
/* conn_out.c: free every queued block (borrowed ones are released). */
void conn_out_free(conn_t *c);

#endif
