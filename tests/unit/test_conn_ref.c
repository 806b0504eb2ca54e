/* Unit tests of conn_send_ref's fallbacks (agent/conn_out.c): whatever
 * becomes of the by-reference path, the request gets exactly one answer
 * and the bytes are given back exactly once. */
#include "config.h"
#include "conn.h"
#include "frame.h"
#include "harness.h"
#include "pb.h"

#include <ev.h>
#include <sys/socket.h>

static int g_released;
static void on_release(void *arg) { g_released += arg == &g_released; }

/* Every frame the peer has received, decoded; returns how many. */
static int read_responses(int fd, Response **out, int max)
{
    static uint8_t buf[1 << 20];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, sizeof buf - len)) > 0)
        len += (size_t)n;
    int k = 0;
    for (size_t off = 0; off < len && k < max;) {
        uint8_t flags;
        uint32_t plen;
        ASSERT_EQ(frame_header_parse(buf + off, len - off, 1u << 24, &flags, &plen), 1);
        ASSERT_LE(off + FRAME_HEADER_SIZE + plen, len);
        out[k] = sandbox__agent__v1__response__unpack(NULL, plen, buf + off + FRAME_HEADER_SIZE);
        ASSERT(out[k]);
        k++;
        off += FRAME_HEADER_SIZE + plen;
    }
    return k;
}

TEST(bulk_not_of_the_response_is_packed_and_answered_once)
{
    struct ev_loop *loop = ev_default_loop(0);
    int sv[2];
    config_defaults(&g_config);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    conn_t *c = conn_new(loop, sv[0], "unix", "test");
    ASSERT(c);

    static uint8_t data[8192], other[8192];
    memset(data, 'd', sizeof data);
    memset(other, 'o', sizeof other);
    Response r = RESPONSE_INIT;
    FileChunk held = SANDBOX__AGENT__V1__FILE_CHUNK__INIT, stray = SANDBOX__AGENT__V1__FILE_CHUNK__INIT;
    held.data.data = data;
    held.data.len = sizeof data;
    held.offset = 5;
    stray.data.data = other;
    stray.data.len = sizeof other;
    r.result_case = RES(CHUNK);
    r.chunk = &held;
    /* stray is not what r holds: frame_encode_head says -EINVAL. */
    ASSERT_EQ(conn_send_ref(c, 7, 1, &r, &stray.base, &stray.data, on_release, &g_released), 0);
    ASSERT_EQ(g_released, 1);
    conn_before_sleep(loop);

    Response *got[4];
    ASSERT_EQ(read_responses(sv[1], got, 4), 1);
    ASSERT_EQ(got[0]->id, 7);
    ASSERT_EQ(got[0]->done, 1);
    ASSERT_EQ(got[0]->result_case, RES(CHUNK));
    ASSERT_EQ(got[0]->chunk->offset, 5);
    ASSERT_EQ(got[0]->chunk->data.len, sizeof data);
    ASSERT_MEM_EQ(got[0]->chunk->data.data, data, sizeof data);
    sandbox__agent__v1__response__free_unpacked(got[0], NULL);

    /* The by-reference path itself still works on the same connection:
     * released once the bytes are written. */
    g_released = 0;
    ASSERT_EQ(conn_send_ref(c, 8, 1, &r, &held.base, &held.data, on_release, &g_released), 0);
    ASSERT_EQ(g_released, 0);
    conn_before_sleep(loop);
    ASSERT_EQ(read_responses(sv[1], got, 4), 1);
    ASSERT_EQ(got[0]->id, 8);
    ASSERT_MEM_EQ(got[0]->chunk->data.data, data, sizeof data);
    sandbox__agent__v1__response__free_unpacked(got[0], NULL);
    ASSERT_EQ(g_released, 1);

    conn_close_all();
    conn_before_sleep(loop);
    close(sv[1]);
}

TEST_MAIN(TEST_ENTRY(bulk_not_of_the_response_is_packed_and_answered_once))
