/* Process output against the real agent: ordering across replay and live,
 * late and resumed followers, many followers, windows, gaps, lossless. */
#include "proc_helpers.h"

static agent_t A;

/* o1 e1 o2 e2 ... spaced out in time: the order the agent reads them in
 * may differ from the order written when its loop comes late (then both
 * pipes hold data and it reads one before the other). */
static const char *ALTERNATE = "for i in 1 2 3 4 5 6 7 8; do echo o$i; sleep 0.02; "
                               "echo e$i >&2; sleep 0.02; done";

/* The same lines, each written only when the test asks for it on stdin. */
static const char *PACED = "for i in 1 2 3 4 5 6 7 8; do read x; echo o$i; "
                           "read x; echo e$i >&2; done";

static void expect_alternating(const collected_t *k)
{
    char want[256] = "";
    size_t o = 0;
    for (int i = 1; i <= 8; i++)
        o += (size_t)snprintf(want + o, sizeof want - o, "o%d\ne%d\n", i, i);
    ASSERT_EQ(k->len, o);
    ASSERT_MEM_EQ(k->data, want, o);
}

TEST(run_with_follow_one_round_trip)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    start_sh(c, "echo out; echo err >&2; exit 3", &o, &id);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT(k.exited);
    ASSERT_EQ(k.exit_code, 3);
    ASSERT_EQ(k.len, 8);
    ASSERT_EQ(k.total_output, 8);
    ASSERT(memmem(k.data, k.len, "out\n", 4) && memmem(k.data, k.len, "err\n", 4));
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(interleaving_same_in_live_and_replay)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A), *in = agent_connect(&A);
    start_opts_t o = {.follow = 1, .stdin_pipe = 1};
    uint64_t id;
    uint32_t pid = start_sh(c, PACED, &o, &id);
    collected_t live = {0}, replay;
    /* Each line is asked for once the one before it has come back live: the
     * agent has read it, so only one pipe ever holds data and the order
     * written is the order read, however late the loop runs. */
    for (size_t want = 3; want <= 48; want += 3) {
        sa_response_free(write_stdin(in, pid, "\n", 1));
        while (live.len < want)
            ASSERT(!collect_one(&live, recv_id(c, id)));
        ASSERT_EQ(live.len, want);
    }
    collect_until_done(c, id, &live);
    expect_alternating(&live);
    for (size_t i = 0; i < live.len; i++)
        if (live.data[i] == 'o' || live.data[i] == 'e')
            ASSERT_EQ(live.tags[i], live.data[i] == 'o' ? 1 : 2);
    /* After the exit: the same bytes, streams and order from the log. */
    collect_all(c, pid, &replay);
    ASSERT_EQ(replay.len, live.len);
    ASSERT_MEM_EQ(replay.data, live.data, live.len);
    ASSERT_MEM_EQ(replay.tags, live.tags, live.len);
    ASSERT(replay.exited);
    collected_free(&live);
    collected_free(&replay);
    sa_client_close(in);
    sa_client_close(c);
    agent_stop(&A);
}

/* Free-running, the two pipes race: whatever order the agent read them in,
 * a follower from the start after the exit gets that order again. */
TEST(racing_streams_same_in_live_and_replay)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    uint32_t pid = start_sh(c, ALTERNATE, &o, &id);
    collected_t live = {0}, replay;
    collect_until_done(c, id, &live);
    /* Each stream by itself is whole and in order. */
    char per[2][32] = {"", ""}, want[2][32] = {"", ""};
    size_t n[2] = {0, 0};
    ASSERT_EQ(live.len, 48);
    for (size_t i = 0; i < live.len; i++) {
        int st = live.tags[i] == 2;
        ASSERT(live.tags[i] == 1 || st);
        ASSERT(n[st] < 24);
        per[st][n[st]++] = live.data[i];
    }
    for (int i = 1; i <= 8; i++) {
        snprintf(want[0] + strlen(want[0]), 4, "o%d\n", i);
        snprintf(want[1] + strlen(want[1]), 4, "e%d\n", i);
    }
    ASSERT_MEM_EQ(per[0], want[0], 24);
    ASSERT_MEM_EQ(per[1], want[1], 24);
    collect_all(c, pid, &replay);
    ASSERT_EQ(replay.len, live.len);
    ASSERT_MEM_EQ(replay.data, live.data, live.len);
    ASSERT_MEM_EQ(replay.tags, live.tags, live.len);
    ASSERT(replay.exited);
    collected_free(&live);
    collected_free(&replay);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(follower_joining_mid_stream_gets_everything_once)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A), *c2 = agent_connect(&A);
    start_opts_t o = {.follow = 1};
    uint64_t id;
    uint32_t pid = start_sh(c, ALTERNATE, &o, &id);
    /* Wait for some live output, then join from the start on another
     * connection: replay and live must join without loss or repeat. */
    collected_t live = {0}, mid = {0};
    while (live.len < 12)
        collect_one(&live, recv_id(c, id));
    collect_until_done(c2, follow_send(c2, pid, 0, 0, 0), &mid);
    collect_until_done(c, id, &live);
    ASSERT_EQ(mid.len, live.len);
    ASSERT_MEM_EQ(mid.data, live.data, live.len);
    ASSERT_MEM_EQ(mid.tags, live.tags, live.len);
    collected_free(&live);
    collected_free(&mid);
    sa_client_close(c);
    sa_client_close(c2);
    agent_stop(&A);
}

TEST(resume_from_sequence_after_disconnect)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    uint32_t pid = start_sh(c, "i=0; while [ $i -lt 40 ]; do echo line$i; i=$((i+1)); "
                               "sleep 0.01; done",
                            NULL, NULL);
    collected_t first = {0}, rest = {0}, all;
    uint64_t id = follow_send(c, pid, 0, 0, 0);
    while (first.len < 30)
        collect_one(&first, recv_id(c, id));
    uint64_t resume = first.next_seq;
    sa_client_close(c); /* the process keeps running */
    c = agent_connect(&A);
    collect_until_done(c, follow_send(c, pid, resume, 0, 0), &rest);
    ASSERT(rest.exited);
    ASSERT_EQ(rest.exit_code, 0);
    collect_all(c, pid, &all);
    ASSERT_EQ(first.len + rest.len, all.len);
    ASSERT_MEM_EQ(all.data, first.data, first.len);
    ASSERT_MEM_EQ(all.data + first.len, rest.data, rest.len);
    ASSERT(memmem(all.data, all.len, "line39\n", 7));
    collected_free(&first);
    collected_free(&rest);
    collected_free(&all);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(ten_followers_one_never_reads)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A), *f[10];
    uint64_t ids[10];
    start_opts_t o = {.window = 16u << 20};
    /* 6 MiB: more than the stuck connection's queue holds. */
    uint32_t pid = start_sh(c, "head -c 6291456 /dev/zero | tr '\\0' x", &o, NULL);
    for (int i = 0; i < 10; i++) {
        f[i] = agent_connect(&A);
        ids[i] = follow_send(f[i], pid, 0, 0, 0);
    }
    /* f[0] never reads. The others each get it all, in turn. */
    for (int i = 1; i < 10; i++) {
        collected_t k = {0};
        collect_until_done(f[i], ids[i], &k);
        ASSERT(k.exited);
        ASSERT_EQ(k.len, 6291456);
        ASSERT_EQ(k.gaps, 0);
        collected_free(&k);
    }
    ping_ok(c);
    for (int i = 0; i < 10; i++)
        sa_client_close(f[i]);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(gap_reported_to_a_follower_that_fell_behind)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A), *slow = agent_connect(&A);
    start_opts_t o = {.window = 65536};
    /* Both streams, 8 MiB in all, through a 64 KiB window. */
    uint32_t pid = start_sh(c, "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2; "
                               "sleep 0.3; echo tail",
                            &o, NULL);
    uint64_t id = follow_send(slow, pid, 0, 0, 0);
    Response *w = wait_exit(c, pid);
    ASSERT_RESULT(w, EXIT);
    sa_response_free(w);
    collected_t k = {0};
    collect_until_done(slow, id, &k);
    ASSERT(k.exited);
    ASSERT_GE(k.gaps, 1);
    ASSERT_EQ(k.len + k.gap_bytes, 8388608 + 5);
    ASSERT_EQ(k.gap_per_stream[0], 0); /* the split per stream is known */
    ASSERT(memmem(k.data, k.len, "tail\n", 5));
    collected_free(&k);

    /* Resuming from a position no longer kept: one gap, streams unknown. */
    collected_t r = {0};
    collect_until_done(c, follow_send(c, pid, 1, 0, 0), &r);
    ASSERT_EQ(r.gaps, 1);
    ASSERT_GT(r.gap_per_stream[0], 0);
    ASSERT_EQ(r.len + r.gap_bytes + 1, 8388608 + 5);
    collected_free(&r);
    /* From 0 means byte 0: what was dropped comes as gaps first, one per
     * stream (the split is known at 0). */
    collect_all(c, pid, &r);
    ASSERT_GE(r.gaps, 1);
    ASSERT_EQ(r.gap_per_stream[0], 0);
    ASSERT_EQ(r.len + r.gap_bytes, 8388608 + 5);
    ASSERT_LE(r.len, 65536 + 131072);
    collected_free(&r);
    sa_client_close(slow);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(lossless_slow_follower_gets_every_byte_with_bounded_rss)
{
    setenv("ASAN_OPTIONS", "quarantine_size_mb=16:detect_leaks=1", 1);
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.window = 1u << 20, .lossless = 1, .follow = 1};
    uint64_t id;
    long long rss0 = proc_rss(A.pid);
    /* 64 MiB of numbered lines: every one must arrive, in order. */
    start_sh(c, "seq 1 9500000 | head -c 67108864", &o, &id);
    uint64_t expect = 1, total = 0;
    char partial[32];
    size_t plen = 0;
    int events = 0;
    long long peak = 0;
    for (;;) {
        Response *r = recv_id(c, id);
        if (r->result_case == RES(EXIT)) {
            ASSERT_EQ(r->exit->total_output_bytes, 67108864);
            sa_response_free(r);
            break;
        }
        ASSERT_RESULT(r, OUTPUT);
        const uint8_t *d = r->output->data.data;
        ASSERT_EQ(r->output->sequence, total);
        total += r->output->data.len;
        for (size_t i = 0; i < r->output->data.len; i++) {
            if (d[i] == '\n') {
                partial[plen] = 0;
                ASSERT_EQ(strtoull(partial, NULL, 10), expect);
                expect++;
                plen = 0;
            } else {
                ASSERT_LT(plen, sizeof partial - 1);
                partial[plen++] = (char)d[i];
            }
        }
        sa_response_free(r);
        if (++events % 64 == 0) {
            usleep(2000); /* a slow reader */
            long long rss = proc_rss(A.pid);
            if (rss > peak)
                peak = rss;
        }
    }
    ASSERT_EQ(total, 67108864);
    fprintf(stderr, "  agent rss: %lld KiB at start, peak %lld KiB\n", rss0 / 1024, peak / 1024);
    /* 64 MiB went through a 1 MiB window: the log, the connection's queue
     * (a few frames of up to 4 MiB) and the allocator's slack. Under
     * AddressSanitizer freed frames sit in its quarantine as well. */
#if defined(__SANITIZE_ADDRESS__)
    ASSERT_LT(peak - rss0, 64ll << 20);
#else
    ASSERT_LT(peak - rss0, 24ll << 20);
#endif
    sa_client_close(c);
    agent_stop(&A);
}

TEST(lines_mode_whole_lines)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    start_opts_t o = {.follow = 1, .lines = 1};
    uint64_t id;
    start_sh(c, "printf 'ab'; sleep 0.1; printf 'c\\nde'; sleep 0.1; printf 'f\\ng'", &o, &id);
    int events = 0;
    const char *want[] = {"abc\n", "def\n", "g"};
    for (;;) {
        Response *r = recv_id(c, id);
        if (r->result_case == RES(EXIT)) {
            sa_response_free(r);
            break;
        }
        ASSERT_RESULT(r, OUTPUT);
        ASSERT_LT(events, 3);
        ASSERT_EQ(r->output->data.len, strlen(want[events]));
        ASSERT_MEM_EQ(r->output->data.data, want[events], strlen(want[events]));
        events++;
        sa_response_free(r);
    }
    ASSERT_EQ(events, 3);
    sa_client_close(c);
    agent_stop(&A);
}

TEST(follow_after_exit_replays_then_exit)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    uint32_t pid = start_sh(c, "echo hello; exit 5", NULL, NULL);
    Response *w = wait_exit(c, pid);
    ASSERT_RESULT(w, EXIT);
    ASSERT_EQ(w->exit->exit_code, 5);
    sa_response_free(w);
    collected_t k;
    collect_all(c, pid, &k);
    ASSERT_EQ(k.len, 6);
    ASSERT_MEM_EQ(k.data, "hello\n", 6);
    ASSERT_EQ(k.exit_code, 5);
    collected_free(&k);
    sa_client_close(c);
    agent_stop(&A);
}

TEST_MAIN(TEST_ENTRY(run_with_follow_one_round_trip), TEST_ENTRY(interleaving_same_in_live_and_replay),
          TEST_ENTRY(racing_streams_same_in_live_and_replay),
          TEST_ENTRY(follower_joining_mid_stream_gets_everything_once),
          TEST_ENTRY(resume_from_sequence_after_disconnect),
          TEST_ENTRY(ten_followers_one_never_reads),
          TEST_ENTRY(gap_reported_to_a_follower_that_fell_behind),
          TEST_ENTRY_T(lossless_slow_follower_gets_every_byte_with_bounded_rss, 300),
          TEST_ENTRY(lines_mode_whole_lines), TEST_ENTRY(follow_after_exit_replays_then_exit))
