/* fs_helpers.h - what the file tests share: a ReadFile's chunks collected
 * to its end, and waiting until a watch is in place. */
#ifndef SA_TEST_FS_HELPERS_H
#define SA_TEST_FS_HELPERS_H

#include "harness.h"

#include <sys/time.h>

/* The responses of the read id (from offset off) to its final one, which
 * is returned: each chunk at the offset that follows the one before. The
 * bytes go to *out (NUL-terminated, malloc'd; NULL when there were none)
 * when out is set, their count to *outlen when it is. */
static inline Response *read_collect(sa_client_t *c, uint64_t id, uint64_t off, uint8_t **out,
                                     size_t *outlen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    for (;;) {
        Response *r = recv_id(c, id);
        if (r->result_case == RES(CHUNK)) {
            ASSERT(!r->done);
            ASSERT_EQ(r->chunk->offset, off + len);
            if (out) {
                buf = realloc(buf, len + r->chunk->data.len + 1);
                ASSERT(buf);
                memcpy(buf + len, r->chunk->data.data, r->chunk->data.len);
                buf[len + r->chunk->data.len] = 0;
            }
            len += r->chunk->data.len;
            sa_response_free(r);
            continue;
        }
        ASSERT(r->done);
        if (out)
            *out = buf;
        if (outlen)
            *outlen = len;
        return r;
    }
}

/* The watch id is in place once it reports something: touch the
 * directory's times until an event for it comes (at most 30 s). */
static inline void watch_wait_ready(sa_client_t *c, uint64_t id, const char *dir)
{
    for (int i = 0; i < 300; i++) {
        ASSERT_EQ(utimes(dir, NULL), 0);
        Response *r = NULL;
        int rc = sa_client_recv_id(c, id, &r, 100);
        if (rc == 0) {
            ASSERT_RESULT(r, FS_EVENT);
            sa_response_free(r);
            return;
        }
        ASSERT_EQ(rc, -ETIMEDOUT);
    }
    FAIL("watch of %s reported nothing in 30 s", dir);
}

#endif
