/* Unit tests of the frame codec (common/frame.c): every malformed-frame case,
 * compression both ways, and incremental parsing. */
#include "frame.h"
#include "harness.h"
#include "pb.h"
#include "utf8.h"
#include "util.h"

#include <zlib.h>

static size_t make_ping(uint8_t *buf, size_t cap, uint64_t id, const char *payload)
{
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    p.payload.data = (uint8_t *)payload;
    p.payload.len = strlen(payload);
    req.id = id;
    req.op_case = OP(PING);
    req.ping = &p;
    uint8_t *out;
    size_t len;
    ASSERT_EQ(frame_encode(&req.base, 0, FRAME_DEFAULT_MAX, &out, &len), 0);
    ASSERT_LE(len, cap);
    memcpy(buf, out, len);
    free(out);
    return len;
}

TEST(header_needs_five_bytes)
{
    uint8_t h[5] = {0, 0, 0, 0, 7}, flags;
    uint32_t len;
    for (size_t i = 0; i < 5; i++)
        ASSERT_EQ(frame_header_parse(h, i, 100, &flags, &len), 0);
    ASSERT_EQ(frame_header_parse(h, 5, 100, &flags, &len), 1);
    ASSERT_EQ(len, 7);
    ASSERT_EQ(flags, 0);
}

TEST(header_big_endian)
{
    uint8_t h[5] = {1, 0x00, 0x12, 0x34, 0x56}, flags;
    uint32_t len;
    ASSERT_EQ(frame_header_parse(h, 5, FRAME_DEFAULT_MAX, &flags, &len), 1);
    ASSERT_EQ(len, 0x123456);
    ASSERT_EQ(flags, 1);
    uint8_t w[5];
    frame_header_write(w, 1, 0x123456);
    ASSERT_MEM_EQ(w, h, 5);
}

TEST(header_bad_flags)
{
    uint8_t flags;
    uint32_t len;
    for (int f = 2; f < 256; f++) {
        uint8_t h[5] = {(uint8_t)f, 0, 0, 0, 1};
        ASSERT_EQ(frame_header_parse(h, 5, 100, &flags, &len), -EPROTO);
    }
}

TEST(header_oversize_before_body)
{
    uint8_t h[5] = {0, 0xff, 0xff, 0xff, 0xff}, flags;
    uint32_t len;
    ASSERT_EQ(frame_header_parse(h, 5, FRAME_DEFAULT_MAX, &flags, &len), -EMSGSIZE);
    frame_header_write(h, 0, FRAME_DEFAULT_MAX);
    ASSERT_EQ(frame_header_parse(h, 5, FRAME_DEFAULT_MAX, &flags, &len), 1);
    frame_header_write(h, 0, FRAME_DEFAULT_MAX + 1);
    ASSERT_EQ(frame_header_parse(h, 5, FRAME_DEFAULT_MAX, &flags, &len), -EMSGSIZE);
}

TEST(header_length_unchecked)
{
    uint8_t h[5] = {0xfe, 0xff, 0xff, 0xff, 0xff}, flags;
    uint32_t len;
    /* Refused by the parser, yet its length can still be told. */
    ASSERT_EQ(frame_header_parse(h, 5, FRAME_DEFAULT_MAX, &flags, &len), -EPROTO);
    ASSERT_EQ(frame_header_length(h), 0xffffffffu);
    frame_header_write(h, 1, FRAME_DEFAULT_MAX + 1);
    ASSERT_EQ(frame_header_length(h), FRAME_DEFAULT_MAX + 1);
    ASSERT_EQ(frame_header_parse(h, 5, FRAME_DEFAULT_MAX, &flags, &len), -EMSGSIZE);
    frame_header_write(h, 0, 0x01020304);
    ASSERT_EQ(frame_header_length(h), 0x01020304u);
}

TEST(roundtrip_plain_and_zlib)
{
    char payload[5000];
    memset(payload, 'a', sizeof payload - 1);
    payload[sizeof payload - 1] = 0;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    p.payload.data = (uint8_t *)payload;
    p.payload.len = strlen(payload);
    req.id = 42;
    req.op_case = OP(PING);
    req.ping = &p;
    for (int z = 0; z < 2; z++) {
        uint8_t *out, flags;
        size_t len;
        uint32_t plen;
        ASSERT_EQ(frame_encode(&req.base, z, FRAME_DEFAULT_MAX, &out, &len), 0);
        ASSERT_EQ(frame_header_parse(out, len, FRAME_DEFAULT_MAX, &flags, &plen), 1);
        ASSERT_EQ(flags, z ? FRAME_FLAG_ZLIB : 0);
        ASSERT_EQ(len, FRAME_HEADER_SIZE + plen);
        if (z)
            ASSERT_LT(plen, 200); /* 5000 'a's compress well */
        ProtobufCMessage *m;
        char err[128];
        ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, flags,
                               out + FRAME_HEADER_SIZE, plen, FRAME_DEFAULT_MAX, &m, err,
                               sizeof err),
                  0);
        Request *r = (Request *)m;
        ASSERT_EQ(r->id, 42);
        ASSERT_EQ(r->op_case, OP(PING));
        ASSERT_EQ(r->ping->payload.len, strlen(payload));
        ASSERT_MEM_EQ(r->ping->payload.data, payload, strlen(payload));
        protobuf_c_message_free_unpacked(m, NULL);
        free(out);
    }
}

TEST(small_payload_not_compressed)
{
    uint8_t buf[256];
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    req.id = 1;
    req.op_case = OP(PING);
    req.ping = &p;
    uint8_t *out;
    size_t len;
    ASSERT_EQ(frame_encode(&req.base, 1, FRAME_DEFAULT_MAX, &out, &len), 0);
    ASSERT_EQ(out[0], 0);
    free(out);
    (void)buf;
}

TEST(incompressible_payload_sent_plain)
{
    static char payload[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof payload; i++) {
        x = x * 1103515245u + 12345u;
        payload[i] = (char)(x >> 16);
    }
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    p.payload.data = (uint8_t *)payload;
    p.payload.len = sizeof payload;
    req.op_case = OP(PING);
    req.ping = &p;
    uint8_t *out;
    size_t len;
    ASSERT_EQ(frame_encode(&req.base, 1, FRAME_DEFAULT_MAX, &out, &len), 0);
    ASSERT_EQ(out[0], 0);
    free(out);
}

TEST(corrupt_zlib)
{
    uint8_t junk[] = {0x78, 0x9c, 0xde, 0xad, 0xbe, 0xef, 0x00};
    ProtobufCMessage *m = NULL;
    char err[128];
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, FRAME_FLAG_ZLIB, junk,
                           sizeof junk, FRAME_DEFAULT_MAX, &m, err, sizeof err),
              -EBADMSG);
    ASSERT(m == NULL);
    ASSERT(strstr(err, "zlib"));
    /* Truncated: a valid stream cut in half. */
    uint8_t src[64] = {0}, comp[128];
    uLongf clen = sizeof comp;
    ASSERT_EQ(compress(comp, &clen, src, sizeof src), Z_OK);
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, FRAME_FLAG_ZLIB, comp,
                           clen / 2, FRAME_DEFAULT_MAX, &m, err, sizeof err),
              -EBADMSG);
    /* Trailing bytes after a complete stream. */
    comp[clen] = 0x55;
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, FRAME_FLAG_ZLIB, comp,
                           clen + 1, FRAME_DEFAULT_MAX, &m, err, sizeof err),
              -EBADMSG);
}

TEST(zlib_bomb_refused)
{
    /* 64 MiB of zeros compresses to ~64 KiB; the limit is 4 MiB. */
    size_t n = 64u << 20;
    uint8_t *zeros = calloc(1, n);
    uLongf clen = compressBound(n);
    uint8_t *comp = malloc(clen);
    ASSERT(zeros && comp);
    ASSERT_EQ(compress2(comp, &clen, zeros, n, 9), Z_OK);
    free(zeros);
    ProtobufCMessage *m = NULL;
    char err[128];
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, FRAME_FLAG_ZLIB, comp,
                           clen, FRAME_DEFAULT_MAX, &m, err, sizeof err),
              -EMSGSIZE);
    ASSERT(strstr(err, "maximum"));
    free(comp);
}

TEST(not_protobuf)
{
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ProtobufCMessage *m = NULL;
    char err[128];
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, 0, junk, sizeof junk,
                           FRAME_DEFAULT_MAX, &m, err, sizeof err),
              -EBADMSG);
    ASSERT(strstr(err, "not a valid"));
}

TEST(empty_payload_is_empty_request)
{
    ProtobufCMessage *m = NULL;
    char err[128];
    ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, 0, (const uint8_t *)"", 0,
                           FRAME_DEFAULT_MAX, &m, err, sizeof err),
              0);
    ASSERT_EQ(((Request *)m)->op_case, 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

TEST(encode_refuses_oversize)
{
    static char payload[70000];
    memset(payload, 'x', sizeof payload - 1);
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    p.payload.data = (uint8_t *)payload;
    p.payload.len = sizeof payload;
    req.op_case = OP(PING);
    req.ping = &p;
    uint8_t *out;
    size_t len;
    ASSERT_EQ(frame_encode(&req.base, 0, 65536, &out, &len), -EMSGSIZE);
}

/* A stream of frames parsed the way conn.c does, fed one byte at a time and
 * all at once: the same requests come out. */
static int parse_stream(const uint8_t *data, size_t len, size_t step, uint64_t *ids, int max)
{
    uint8_t buf[4096];
    size_t have = 0, fed = 0;
    int n = 0;
    while (fed < len || have) {
        size_t add = SA_MIN(step, len - fed);
        memcpy(buf + have, data + fed, add);
        have += add;
        fed += add;
        for (;;) {
            uint8_t flags;
            uint32_t plen;
            int rc = frame_header_parse(buf, have, FRAME_DEFAULT_MAX, &flags, &plen);
            ASSERT(rc >= 0);
            if (rc == 0 || have < FRAME_HEADER_SIZE + plen)
                break;
            ProtobufCMessage *m;
            char err[128];
            ASSERT_EQ(frame_decode(&sandbox__agent__v1__request__descriptor, flags,
                                   buf + FRAME_HEADER_SIZE, plen, FRAME_DEFAULT_MAX, &m, err,
                                   sizeof err),
                      0);
            ASSERT_LT(n, max);
            ids[n++] = ((Request *)m)->id;
            protobuf_c_message_free_unpacked(m, NULL);
            memmove(buf, buf + FRAME_HEADER_SIZE + plen, have - FRAME_HEADER_SIZE - plen);
            have -= FRAME_HEADER_SIZE + plen;
        }
        if (add == 0 && have)
            FAIL("leftover %zu bytes", have);
    }
    return n;
}

TEST(split_and_batched_frames)
{
    uint8_t stream[2048];
    size_t len = 0;
    for (int i = 1; i <= 20; i++)
        len += make_ping(stream + len, sizeof stream - len, (uint64_t)i * 1000, "hello");
    uint64_t ids[32];
    int n = parse_stream(stream, len, 1, ids, 32);
    ASSERT_EQ(n, 20);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(ids[i], (uint64_t)(i + 1) * 1000);
    n = parse_stream(stream, len, len, ids, 32);
    ASSERT_EQ(n, 20);
    n = parse_stream(stream, len, 7, ids, 32);
    ASSERT_EQ(n, 20);
}

TEST(utf8_sanitize)
{
    ASSERT(utf8_valid("abc", 3));
    ASSERT(utf8_valid("\xc3\xa9", 2));
    ASSERT(!utf8_valid("\xc3", 1));
    ASSERT(!utf8_valid("\xff", 1));
    ASSERT(!utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
    ASSERT(!utf8_valid("\xc0\x80", 2));     /* overlong */
    char *s = util_utf8_sanitize("a\xffz", 3);
    ASSERT_STR_EQ(s, "a\xef\xbf\xbdz");
    free(s);
}

/* A frame whose bulk bytes go by reference decodes, with protobuf-c, to the
 * same message as the frame protobuf-c packs itself, at every length where
 * a varint grows. */
static void head_roundtrip(size_t n, int output_event)
{
    uint8_t *data = malloc(n ? n : 1), head[256], *frame;
    Response r = RESPONSE_INIT;
    FileChunk fc = SANDBOX__AGENT__V1__FILE_CHUNK__INIT;
    OutputEvent oe = SANDBOX__AGENT__V1__OUTPUT_EVENT__INIT;
    ProtobufCMessage *sub;
    ProtobufCBinaryData *bulk;
    size_t plen;

    ASSERT(data != NULL);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 131 + 7);
    r.id = 1ull << 40;
    r.done = 1;
    if (output_event) {
        oe.stream = SANDBOX__AGENT__V1__STREAM__STDERR;
        oe.sequence = 300;
        oe.offset = 299;
        oe.timestamp_unix_nano = 1700000000123456789ull;
        oe.data.data = data;
        oe.data.len = n;
        r.result_case = RES(OUTPUT);
        r.output = &oe;
        sub = &oe.base;
        bulk = &oe.data;
    } else {
        fc.offset = 1ull << 33;
        fc.data.data = data;
        fc.data.len = n;
        r.result_case = RES(CHUNK);
        r.chunk = &fc;
        sub = &fc.base;
        bulk = &fc.data;
    }
    ssize_t hl = frame_encode_head(&r.base, sub, bulk, FRAME_DEFAULT_MAX, head, sizeof head, &plen);
    ASSERT_GT(hl, 0);
    /* The messages are as they were. */
    ASSERT(bulk->data == data);
    ASSERT_EQ(bulk->len, n);
    ASSERT_EQ(r.result_case, output_event ? RES(OUTPUT) : RES(CHUNK));
    ASSERT_EQ(plen, protobuf_c_message_get_packed_size(&r.base));
    ASSERT_EQ((size_t)hl + n, FRAME_HEADER_SIZE + plen);
    ASSERT(!!(frame = malloc((size_t)hl + n + 1)));
    memcpy(frame, head, (size_t)hl);
    memcpy(frame + hl, data, n);
    uint8_t flags;
    uint32_t len;
    ASSERT_EQ(frame_header_parse(frame, (size_t)hl + n, FRAME_DEFAULT_MAX, &flags, &len), 1);
    ASSERT_EQ(len, plen);
    Response *d = sandbox__agent__v1__response__unpack(NULL, len, frame + FRAME_HEADER_SIZE);
    ASSERT(d != NULL);
    ASSERT_EQ(d->id, r.id);
    ASSERT_EQ(d->done, 1);
    ASSERT_EQ(d->result_case, r.result_case);
    if (output_event) {
        ASSERT_EQ(d->output->stream, oe.stream);
        ASSERT_EQ(d->output->sequence, 300);
        ASSERT_EQ(d->output->offset, 299);
        ASSERT_EQ(d->output->timestamp_unix_nano, oe.timestamp_unix_nano);
        ASSERT_EQ(d->output->data.len, n);
        ASSERT_MEM_EQ(d->output->data.data, data, n);
    } else {
        ASSERT_EQ(d->chunk->offset, fc.offset);
        ASSERT_EQ(d->chunk->data.len, n);
        ASSERT_MEM_EQ(d->chunk->data.data, data, n);
    }
    sandbox__agent__v1__response__free_unpacked(d, NULL);
    free(frame);
    free(data);
}

TEST(bulk_by_reference_decodes_as_packed)
{
    static const size_t sizes[] = {1, 2, 127, 128, 129, 16383, 16384, 16385, 65536,
                                   (1u << 20) - 1, 1u << 20, (2u << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        head_roundtrip(sizes[i], 0);
        head_roundtrip(sizes[i], 1);
    }
}

TEST(bulk_by_reference_refusals)
{
    uint8_t head[64], other[4];
    Response r = RESPONSE_INIT;
    FileChunk fc = SANDBOX__AGENT__V1__FILE_CHUNK__INIT;
    ProtobufCBinaryData loose = {sizeof other, other};
    size_t plen;
    fc.data.data = other;
    fc.data.len = 1000;
    r.result_case = RES(CHUNK);
    r.chunk = &fc;
    ASSERT_EQ(frame_encode_head(&r.base, &fc.base, &fc.data, 100, head, sizeof head, &plen),
              -EMSGSIZE);
    ASSERT_EQ(frame_encode_head(&r.base, &fc.base, &fc.data, 4096, head, 8, &plen), -ENOBUFS);
    /* Not a field of sub. */
    ASSERT_EQ(frame_encode_head(&r.base, &fc.base, &loose, 4096, head, sizeof head, &plen),
              -EINVAL);
    /* sub is not what msg holds (the oneof says otherwise). */
    r.result_case = RES(OUTPUT);
    ASSERT_EQ(frame_encode_head(&r.base, &fc.base, &fc.data, 4096, head, sizeof head, &plen),
              -EINVAL);
    ASSERT_EQ(r.result_case, RES(OUTPUT));
}

TEST_MAIN(TEST_ENTRY(header_needs_five_bytes), TEST_ENTRY(header_big_endian),
          TEST_ENTRY(header_bad_flags), TEST_ENTRY(header_oversize_before_body),
          TEST_ENTRY(header_length_unchecked),
          TEST_ENTRY(roundtrip_plain_and_zlib), TEST_ENTRY(small_payload_not_compressed),
          TEST_ENTRY(incompressible_payload_sent_plain), TEST_ENTRY(corrupt_zlib),
          TEST_ENTRY(zlib_bomb_refused), TEST_ENTRY(not_protobuf),
          TEST_ENTRY(empty_payload_is_empty_request), TEST_ENTRY(encode_refuses_oversize),
          TEST_ENTRY(split_and_batched_frames), TEST_ENTRY(utf8_sanitize),
          TEST_ENTRY(bulk_by_reference_decodes_as_packed),
          TEST_ENTRY(bulk_by_reference_refusals))
