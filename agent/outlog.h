/* outlog.h - a process's ordered output: one log of stdout and stderr (or
 * PTY) chunks in the order they were read, a window of bytes kept for replay,
 * followers' cursors (a combined sequence, never a copy), gaps for followers
 * that fell behind the window, and the lossless pause of the pipes.
 * Pure data structure: no I/O, no event loop, so unit tests drive it.
 * Errors: functions return 0 or a negative errno (-ENOMEM, -ERANGE). */
#ifndef SA_OUTLOG_H
#define SA_OUTLOG_H

#include <stddef.h>
#include <stdint.h>

/* Stream numbers are the wire's Stream enum values. */
#define OUTLOG_STREAMS 4
/* Bytes each chunk costs against the window beyond its data, so a process
 * writing one byte at a time cannot make the log's memory grow past it. */
#define OUTLOG_CHUNK_OVERHEAD 64
/* Lines mode: a line longer than this is delivered in pieces of at most this
 * many bytes, split before a UTF-8 sequence, never inside one. */
#define OUTLOG_LINE_MAX (64 * 1024)

typedef struct outlog_chunk {
    uint64_t seq;    /* combined position of data[0] */
    uint64_t offset; /* position of data[0] within its own stream */
    uint64_t ts;     /* unix nanoseconds when data[0] was read */
    uint32_t len, cap;
    uint32_t refs;   /* the log's own while kept, plus one per queued message
                      * that points into data (outlog_chunk_ref) */
    uint8_t stream;
    uint8_t data[];
} outlog_chunk_t;

/* A chunk's data outlives its time in the log while referenced: a message
 * queued for a follower points into it instead of copying it, and the last
 * unref (the log's eviction, or the message written) frees it. Bytes
 * already in a chunk never move or change; the log may append after them. */
void outlog_chunk_ref(const outlog_chunk_t *c);
void outlog_chunk_unref(const outlog_chunk_t *c);

typedef struct outlog_cursor outlog_cursor_t;
struct outlog_cursor {
    uint64_t seq;                         /* next combined byte to deliver */
    uint64_t stream_off[OUTLOG_STREAMS];  /* per-stream position at seq */
    int known;                            /* stream_off is exact */
    outlog_cursor_t *_next, *_prev;       /* private: the log's followers */
};

typedef struct outlog {
    outlog_chunk_t **ring; /* kept chunks, oldest at ring[head] */
    size_t ring_cap, head, n;
    uint64_t window;       /* cost (data + overhead) kept at most */
    uint64_t cost;         /* current cost */
    uint64_t kept;         /* data bytes kept */
    uint64_t oldest_seq;   /* combined position of the oldest kept byte */
    uint64_t next_seq;     /* combined bytes appended so far */
    uint64_t total[OUTLOG_STREAMS];   /* bytes appended per stream */
    uint64_t evicted[OUTLOG_STREAMS]; /* bytes evicted per stream */
    int lossless;          /* keep what a follower still needs; pause instead */
    int paused;            /* lossless: the producer must stop */
    uint64_t *account;     /* optional global counter of kept data bytes */
    outlog_cursor_t *followers;
    unsigned n_followers;
} outlog_t;

void outlog_init(outlog_t *log, uint64_t window, int lossless, uint64_t *account);
void outlog_free(outlog_t *log);

/* Append data read from stream at ts. Evicts the oldest chunks beyond the
 * window (in lossless mode only those every follower has passed). Returns 0
 * or -ENOMEM. Afterwards outlog_paused() says whether to stop reading. */
int outlog_append(outlog_t *log, int stream, const void *data, size_t len, uint64_t ts);
static inline int outlog_paused(const outlog_t *log) { return log->paused; }

/* Reading straight into the log: a buffer of cap bytes that can become a
 * chunk as it is. outlog_append_buf() appends the len bytes read into it:
 * reads of at least OUTLOG_ADOPT_MIN bytes are adopted with no copy (*taken
 * is set: the buffer is the log's now), smaller ones are copied into the
 * tail chunk and the caller keeps the buffer for its next read. Whenever
 * *taken is set (also on -ENOMEM) the buffer is no longer the caller's. */
#define OUTLOG_ADOPT_MIN (16 * 1024)
uint8_t *outlog_buf_new(size_t cap);
void outlog_buf_free(uint8_t *buf);
int outlog_append_buf(outlog_t *log, int stream, uint8_t *buf, size_t len, uint64_t ts,
                      int *taken);
/* The last len bytes appended, where the log keeps them (an adopted buffer
 * may have moved when its slack was given back); NULL when the newest chunk
 * holds fewer. Valid until the next append. */
const uint8_t *outlog_newest(const outlog_t *log, size_t len);

/* len bytes read from stream could not be stored (out of memory): they
 * count as output (sequences stay true) and are lost, with everything kept
 * before them, so every follower behind gets an OutputGap that covers them. */
void outlog_drop(outlog_t *log, int stream, size_t len);

/* Evict down to max_cost (data + overhead) now, as if the window were that
 * small, under the same rules (the newest chunk stays; lossless keeps what
 * followers need and pauses instead). Used when the agent's total cap on
 * kept output is reached. */
void outlog_trim(outlog_t *log, uint64_t max_cost);

/* Followers. A cursor starts at from_seq (0 is byte 0: a follower asking
 * for it after eviction gets an OutputGap first).
 * Returns 0, or -ERANGE when from_seq is beyond the output so far. */
int outlog_attach(outlog_t *log, outlog_cursor_t *cur, uint64_t from_seq);
/* Returns 1 when detaching let a paused log resume. */
int outlog_detach(outlog_t *log, outlog_cursor_t *cur);

typedef enum outlog_kind {
    OUTLOG_NONE = 0, /* nothing to deliver now */
    OUTLOG_DATA = 1,
    OUTLOG_GAP = 2,
} outlog_kind_t;

typedef struct outlog_item {
    outlog_kind_t kind;
    /* DATA */
    int stream;
    const uint8_t *data; /* into the log, or into the caller's scratch */
    const outlog_chunk_t *chunk; /* the chunk data points into; NULL: scratch */
    size_t len;
    uint64_t seq, offset, ts;
    /* GAP: from_seq..to_seq skipped; per stream when known (skipped[s]),
     * else skipped[0] (STREAM_UNSPECIFIED) holds the total. */
    uint64_t from_seq, to_seq;
    uint64_t skipped[OUTLOG_STREAMS];
} outlog_item_t;

/* What the cursor gets next, at most max bytes. lines: whole lines only
 * (see docs/PROTOCOL.md for the rule); scratch (at least OUTLOG_LINE_MAX or
 * max bytes) holds a line that spans chunks. final: no more output will be
 * appended (partial lines are delivered). Does not move the cursor. */
void outlog_peek(const outlog_t *log, const outlog_cursor_t *cur, size_t max, int lines,
                 int final, uint8_t *scratch, outlog_item_t *it);
/* Move the cursor past it (after it was sent). Returns 1 when this let a
 * paused log resume. */
int outlog_consume(outlog_t *log, outlog_cursor_t *cur, const outlog_item_t *it);

#endif
