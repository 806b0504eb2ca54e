/* Unit tests of the output log (agent/outlog.c) without the event loop:
 * ordering, replay, windows and gaps, lossless pause, lines mode. */
#include "harness.h"
#include "outlog.h"

#define OUT 1
#define ERR 2

static uint8_t scratch[OUTLOG_LINE_MAX];
#define SMALL_LINE 3000

/* Read everything the cursor can get now into buf (data only); returns
 * bytes, counts gaps. */
static size_t drain(outlog_t *log, outlog_cursor_t *cur, int lines, int final, char *buf,
                    size_t cap, uint64_t *gap_bytes, int *gaps)
{
    size_t n = 0;
    for (;;) {
        outlog_item_t it;
        outlog_peek(log, cur, 1000, lines, final, scratch, &it);
        if (it.kind == OUTLOG_NONE)
            break;
        if (it.kind == OUTLOG_GAP) {
            uint64_t sum = 0;
            for (int s = 0; s < OUTLOG_STREAMS; s++)
                sum += it.skipped[s];
            ASSERT_EQ(sum, it.to_seq - it.from_seq);
            if (gap_bytes)
                *gap_bytes += sum;
            if (gaps)
                (*gaps)++;
        } else {
            ASSERT_EQ(it.seq, cur->seq);
            ASSERT_LE(n + it.len, cap);
            memcpy(buf + n, it.data, it.len);
            n += it.len;
        }
        outlog_consume(log, cur, &it);
    }
    return n;
}

TEST(interleaved_order_kept)
{
    outlog_t log;
    uint64_t acct = 0;
    outlog_cursor_t cur;
    char buf[256];
    outlog_init(&log, 1 << 20, 0, &acct);
    outlog_append(&log, OUT, "a1\n", 3, 1);
    outlog_append(&log, ERR, "b1\n", 3, 2);
    outlog_append(&log, OUT, "a2\n", 3, 3);
    ASSERT_EQ(acct, 9);
    ASSERT_EQ(outlog_attach(&log, &cur, 0), 0);
    outlog_item_t it;
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT_EQ(it.stream, OUT);
    ASSERT_EQ(it.len, 3);
    ASSERT_EQ(it.offset, 0);
    outlog_consume(&log, &cur, &it);
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.stream, ERR);
    ASSERT_EQ(it.seq, 3);
    ASSERT_EQ(it.offset, 0);
    outlog_consume(&log, &cur, &it);
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.stream, OUT);
    ASSERT_EQ(it.seq, 6);
    ASSERT_EQ(it.offset, 3);
    outlog_consume(&log, &cur, &it);
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_NONE);
    /* Live data after replay continues from the same cursor. */
    outlog_append(&log, ERR, "b2\n", 3, 4);
    ASSERT_EQ(drain(&log, &cur, 0, 0, buf, sizeof buf, NULL, NULL), 3);
    ASSERT_MEM_EQ(buf, "b2\n", 3);
    outlog_detach(&log, &cur);
    outlog_free(&log);
    ASSERT_EQ(acct, 0);
}

TEST(small_writes_coalesce_and_max_splits)
{
    outlog_t log;
    outlog_cursor_t cur;
    char buf[8192];
    outlog_init(&log, 1 << 20, 0, NULL);
    for (int i = 0; i < 3000; i++)
        outlog_append(&log, OUT, "x", 1, (uint64_t)i);
    ASSERT_LT(log.n, 3);
    outlog_attach(&log, &cur, 0);
    outlog_item_t it;
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.len, 1000); /* max respected */
    ASSERT_EQ(drain(&log, &cur, 0, 0, buf, sizeof buf, NULL, NULL), 3000);
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

TEST(window_evicts_and_gap_per_stream)
{
    outlog_t log;
    outlog_cursor_t slow, late;
    char big[5000], buf[1 << 16];
    uint64_t gapb = 0;
    int gaps = 0;
    memset(big, 'o', sizeof big);
    outlog_init(&log, 20000, 0, NULL);
    outlog_attach(&log, &slow, 0);
    for (int i = 0; i < 20; i++)
        outlog_append(&log, i % 2 ? ERR : OUT, big, sizeof big, 0);
    ASSERT_LE(log.cost, 20000 + 5000 + OUTLOG_CHUNK_OVERHEAD);
    ASSERT_GT(log.oldest_seq, 0);
    /* The slow follower first learns what it missed, per stream. */
    outlog_item_t it;
    outlog_peek(&log, &slow, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_GAP);
    ASSERT_EQ(it.from_seq, 0);
    ASSERT_EQ(it.to_seq, log.oldest_seq);
    ASSERT_EQ(it.skipped[OUT] + it.skipped[ERR], log.oldest_seq);
    ASSERT_EQ(it.skipped[OUT], log.evicted[OUT]);
    size_t n = drain(&log, &slow, 0, 0, buf, sizeof buf, &gapb, &gaps);
    ASSERT_EQ(gaps, 1);
    ASSERT_EQ(n + gapb, 100000);
    /* A follower resuming from an evicted position gets an unspecified gap. */
    ASSERT_EQ(outlog_attach(&log, &late, 7), 0);
    outlog_peek(&log, &late, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_GAP);
    ASSERT_EQ(it.skipped[0], log.oldest_seq - 7);
    outlog_detach(&log, &late);
    /* Beyond the end is refused. */
    ASSERT_EQ(outlog_attach(&log, &late, log.next_seq + 1), -ERANGE);
    outlog_detach(&log, &slow);
    outlog_free(&log);
}

TEST(resume_mid_log_knows_stream_offsets)
{
    outlog_t log;
    outlog_cursor_t cur;
    outlog_init(&log, 1 << 20, 0, NULL);
    outlog_append(&log, OUT, "aaaa", 4, 0);
    outlog_append(&log, ERR, "bb", 2, 0);
    outlog_append(&log, OUT, "cc", 2, 0);
    ASSERT_EQ(outlog_attach(&log, &cur, 5), 0);
    ASSERT_EQ(cur.stream_off[ERR], 1);
    ASSERT_EQ(cur.stream_off[OUT], 4);
    outlog_item_t it;
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.stream, ERR);
    ASSERT_EQ(it.len, 1);
    ASSERT_EQ(it.offset, 1);
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

TEST(lossless_pauses_until_follower_advances)
{
    outlog_t log;
    outlog_cursor_t cur;
    char chunk[4096], buf[1 << 16];
    memset(chunk, 'z', sizeof chunk);
    outlog_init(&log, 16384, 1, NULL);
    outlog_attach(&log, &cur, 0);
    int appended = 0;
    while (!outlog_paused(&log) && appended < 100) {
        outlog_append(&log, OUT, chunk, sizeof chunk, 0);
        appended++;
    }
    ASSERT(outlog_paused(&log));
    ASSERT_EQ(log.oldest_seq, 0); /* nothing the follower needs was dropped */
    size_t n = drain(&log, &cur, 0, 0, buf, sizeof buf, NULL, NULL);
    ASSERT_EQ(n, (size_t)appended * sizeof chunk);
    ASSERT(!outlog_paused(&log));
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

TEST(lossless_detach_resumes)
{
    outlog_t log;
    outlog_cursor_t cur;
    char chunk[8192];
    memset(chunk, 'z', sizeof chunk);
    outlog_init(&log, 8192, 1, NULL);
    outlog_attach(&log, &cur, 0);
    for (int i = 0; i < 4; i++)
        outlog_append(&log, OUT, chunk, sizeof chunk, 0);
    ASSERT(outlog_paused(&log));
    ASSERT_EQ(outlog_detach(&log, &cur), 1);
    ASSERT(!outlog_paused(&log));
    outlog_free(&log);
}

TEST(lines_whole_lines_and_final_partial)
{
    outlog_t log;
    outlog_cursor_t cur;
    outlog_item_t it;
    outlog_init(&log, 1 << 20, 0, NULL);
    outlog_attach(&log, &cur, 0);
    outlog_append(&log, OUT, "one\ntw", 6, 0);
    outlog_peek(&log, &cur, 1000, 1, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT_EQ(it.len, 4);
    outlog_consume(&log, &cur, &it);
    outlog_peek(&log, &cur, 1000, 1, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_NONE); /* "tw" waits for its newline */
    /* The same stream again, in a new chunk after a big one: gathered. */
    char big[5000];
    memset(big, 'q', sizeof big);
    outlog_append(&log, OUT, big, sizeof big, 0);
    outlog_append(&log, OUT, "o\nthr", 5, 0);
    outlog_peek(&log, &cur, OUTLOG_LINE_MAX, 1, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT_EQ(it.len, 2 + sizeof big + 2);
    ASSERT_MEM_EQ(it.data, "tw", 2);
    ASSERT_MEM_EQ(it.data + 2 + sizeof big, "o\n", 2);
    outlog_consume(&log, &cur, &it);
    outlog_peek(&log, &cur, 1000, 1, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_NONE);
    outlog_peek(&log, &cur, 1000, 1, 1, scratch, &it); /* at exit */
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT_EQ(it.len, 3);
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

TEST(lines_long_line_split_outside_utf8)
{
    outlog_t log;
    outlog_cursor_t cur;
    outlog_item_t it;
    static char line[OUTLOG_LINE_MAX + 100];
    /* 'a' then euro signs (3 bytes each) so the limit lands inside one. */
    line[0] = 'a';
    for (size_t i = 1; i + 3 <= sizeof line; i += 3)
        memcpy(line + i, "\xe2\x82\xac", 3);
    outlog_init(&log, 1 << 20, 0, NULL);
    outlog_attach(&log, &cur, 0);
    outlog_append(&log, OUT, line, sizeof line - 1, 0);
    outlog_peek(&log, &cur, 1 << 20, 1, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT_LE(it.len, OUTLOG_LINE_MAX);
    ASSERT_GT(it.len, OUTLOG_LINE_MAX - 4);
    ASSERT_EQ((it.len - 1) % 3, 0); /* whole euro signs only */
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

TEST(lines_other_stream_flushes_partial)
{
    outlog_t log;
    outlog_cursor_t cur;
    outlog_item_t it;
    outlog_init(&log, 1 << 20, 0, NULL);
    outlog_attach(&log, &cur, 0);
    outlog_append(&log, OUT, "prompt> ", 8, 0);
    outlog_append(&log, ERR, "warn\n", 5, 0);
    outlog_peek(&log, &cur, 1000, 1, 0, scratch, &it);
    ASSERT_EQ(it.stream, OUT);
    ASSERT_EQ(it.len, 8);
    outlog_consume(&log, &cur, &it);
    outlog_peek(&log, &cur, 1000, 1, 0, scratch, &it);
    ASSERT_EQ(it.stream, ERR);
    ASSERT_EQ(it.len, 5);
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

/* Reads straight into a log buffer: large ones are adopted (no copy), small
 * ones are copied and the buffer stays the caller's; order, offsets and
 * eviction are as with outlog_append. */
TEST(append_buf_adopts_large_reads)
{
    outlog_t log;
    uint64_t account = 0;
    outlog_init(&log, 256 * 1024, 0, &account);
    static char want[400000];
    size_t wn = 0;
    for (int i = 0; i < 6; i++) {
        size_t len = i % 2 ? 100 : 64 * 1024; /* large, small, large, ... */
        uint8_t *buf = outlog_buf_new(128 * 1024);
        ASSERT(buf);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)('a' + (i + j) % 26);
        memcpy(want + wn, buf, len);
        wn += len;
        int taken = -1;
        ASSERT_EQ(outlog_append_buf(&log, i % 2 ? ERR : OUT, buf, len, (uint64_t)i, &taken), 0);
        ASSERT_EQ(taken, len >= OUTLOG_ADOPT_MIN);
        /* The bytes just appended, where the log keeps them (buf itself
         * may have moved once taken). */
        const uint8_t *newest = outlog_newest(&log, len);
        ASSERT(newest);
        ASSERT_MEM_EQ(newest, want + wn - len, len);
        if (!taken)
            outlog_buf_free(buf);
    }
    ASSERT_EQ(log.next_seq, wn);
    ASSERT_EQ(log.total[OUT], 3 * 64 * 1024);
    ASSERT_EQ(log.total[ERR], 300);
    ASSERT_EQ(account, log.kept);
    ASSERT_LE(log.cost, 256 * 1024);
    /* What is kept is exactly the newest bytes, in order. */
    outlog_cursor_t cur;
    ASSERT_EQ(outlog_attach(&log, &cur, 0), 0);
    static char got[400000];
    uint64_t gap = 0;
    size_t n = drain(&log, &cur, 0, 1, got, sizeof got, &gap, NULL);
    ASSERT_EQ(gap, 0);
    ASSERT_EQ(n, log.kept);
    ASSERT_MEM_EQ(got, want + (wn - n), n);
    outlog_detach(&log, &cur);
    outlog_free(&log);
    ASSERT_EQ(account, 0);
}

/* from_seq 0 is byte 0: after eviction a late follower first gets the gap,
 * per stream (every stream is at 0 there). */
TEST(late_attach_from_zero_gets_the_gap)
{
    outlog_t log;
    outlog_cursor_t cur;
    char big[5000], buf[1 << 16];
    uint64_t gapb = 0;
    int gaps = 0;
    memset(big, 'o', sizeof big);
    outlog_init(&log, 8000, 0, NULL);
    for (int i = 0; i < 10; i++)
        outlog_append(&log, i % 2 ? ERR : OUT, big, sizeof big, 0);
    ASSERT_GT(log.oldest_seq, 0);
    ASSERT_EQ(outlog_attach(&log, &cur, 0), 0);
    outlog_item_t it;
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_GAP);
    ASSERT_EQ(it.from_seq, 0);
    ASSERT_EQ(it.to_seq, log.oldest_seq);
    ASSERT_EQ(it.skipped[0], 0);
    ASSERT_EQ(it.skipped[OUT], log.evicted[OUT]);
    ASSERT_EQ(it.skipped[ERR], log.evicted[ERR]);
    size_t n = drain(&log, &cur, 0, 0, buf, sizeof buf, &gapb, &gaps);
    ASSERT_EQ(gaps, 1);
    ASSERT_EQ(n + gapb, 50000);
    outlog_detach(&log, &cur);
    /* From the oldest kept byte: no gap. */
    ASSERT_EQ(outlog_attach(&log, &cur, log.oldest_seq), 0);
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

/* Output that could not be stored counts, and followers behind learn of it
 * as a gap that covers it; the log stays one run of bytes. */
TEST(dropped_output_is_a_gap)
{
    outlog_t log;
    outlog_cursor_t cur;
    uint64_t account = 0, gapb = 0;
    int gaps = 0;
    char buf[4096];
    outlog_init(&log, 1 << 20, 1, &account);
    outlog_attach(&log, &cur, 0);
    outlog_append(&log, OUT, "before\n", 7, 0);
    outlog_drop(&log, ERR, 1000);
    ASSERT_EQ(log.next_seq, 1007);
    ASSERT_EQ(log.oldest_seq, 1007);
    ASSERT_EQ(log.total[ERR], 1000);
    ASSERT_EQ(account, 0);
    ASSERT(!outlog_paused(&log));
    outlog_append(&log, OUT, "after\n", 6, 0);
    outlog_item_t it;
    outlog_peek(&log, &cur, 1000, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_GAP);
    ASSERT_EQ(it.skipped[OUT], 7);
    ASSERT_EQ(it.skipped[ERR], 1000);
    size_t n = drain(&log, &cur, 0, 0, buf, sizeof buf, &gapb, &gaps);
    ASSERT_EQ(gaps, 1);
    ASSERT_EQ(gapb, 1007);
    ASSERT_EQ(n, 6);
    ASSERT_MEM_EQ(buf, "after\n", 6);
    ASSERT_EQ(cur.stream_off[ERR], 1000);
    outlog_detach(&log, &cur);
    outlog_free(&log);
    ASSERT_EQ(account, 0);
}

/* A chunk referenced by a queued message outlives its eviction, and is
 * never moved or shrunk while referenced. */
TEST(referenced_chunk_outlives_eviction)
{
    outlog_t log;
    outlog_cursor_t cur;
    uint8_t *buf = outlog_buf_new(65536);
    int taken = 0;
    memset(buf, 'a', 40000);
    outlog_init(&log, 8192, 0, NULL);
    outlog_attach(&log, &cur, 0);
    ASSERT_EQ(outlog_append_buf(&log, OUT, buf, 40000, 0, &taken), 0);
    ASSERT(taken);
    outlog_item_t it;
    outlog_peek(&log, &cur, 1 << 20, 0, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT(it.chunk != NULL);
    ASSERT_EQ(it.len, 40000);
    outlog_chunk_ref(it.chunk);
    /* Evicted from the log by newer output: still readable. */
    char more[5000];
    memset(more, 'b', sizeof more);
    for (int i = 0; i < 4; i++)
        outlog_append(&log, ERR, more, sizeof more, 0);
    ASSERT_GT(log.oldest_seq, 0);
    for (size_t i = 0; i < it.len; i++)
        ASSERT_EQ(it.data[i], 'a');
    outlog_chunk_unref(it.chunk); /* the last reference frees it */
    /* Lines gathered across chunks come from scratch: no chunk to share. */
    outlog_t l2;
    outlog_cursor_t c2;
    outlog_init(&l2, 1 << 20, 0, NULL);
    outlog_attach(&l2, &c2, 0);
    char part[SMALL_LINE];
    memset(part, 'x', sizeof part);
    outlog_append(&l2, OUT, part, sizeof part, 0);
    uint8_t *b2 = outlog_buf_new(65536);
    memset(b2, 'y', 20000);
    b2[19999] = '\n';
    ASSERT_EQ(outlog_append_buf(&l2, OUT, b2, 20000, 0, &taken), 0);
    if (!taken)
        outlog_buf_free(b2);
    outlog_peek(&l2, &c2, 1 << 20, 1, 0, scratch, &it);
    ASSERT_EQ(it.kind, OUTLOG_DATA);
    ASSERT_EQ(it.len, sizeof part + 20000);
    ASSERT(it.chunk == NULL);
    outlog_detach(&l2, &c2);
    outlog_free(&l2);
    outlog_detach(&log, &cur);
    outlog_free(&log);
}

TEST_MAIN(TEST_ENTRY(referenced_chunk_outlives_eviction),
          TEST_ENTRY(late_attach_from_zero_gets_the_gap), TEST_ENTRY(dropped_output_is_a_gap),
          TEST_ENTRY(append_buf_adopts_large_reads), TEST_ENTRY(interleaved_order_kept), TEST_ENTRY(small_writes_coalesce_and_max_splits),
          TEST_ENTRY(window_evicts_and_gap_per_stream),
          TEST_ENTRY(resume_mid_log_knows_stream_offsets),
          TEST_ENTRY(lossless_pauses_until_follower_advances), TEST_ENTRY(lossless_detach_resumes),
          TEST_ENTRY(lines_whole_lines_and_final_partial),
          TEST_ENTRY(lines_long_line_split_outside_utf8),
          TEST_ENTRY(lines_other_stream_flushes_partial))
