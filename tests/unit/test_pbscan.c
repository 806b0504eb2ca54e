/* Unit tests of pbscan (common/pbscan.c): the bulk field of each op found
 * where it lies and every other field as protobuf-c decodes it, and every
 * shape it must leave to protobuf-c declined. */
#include "harness.h"
#include "pb.h"
#include "pbscan.h"

static uint8_t g_data[4096];

static size_t pack(const Request *req, uint8_t **out)
{
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    *out = malloc(n + 1);
    ASSERT(*out);
    ASSERT_EQ(protobuf_c_message_pack(&req->base, *out), n);
    return n;
}

/* pbscan decodes payload to what protobuf-c decodes, and its bulk field
 * is the n bytes at payload + off. Returns the message for more checks. */
static Request *scan_same(const uint8_t *payload, size_t len, size_t off, size_t n,
                          ProtobufCBinaryData **bulk)
{
    Request *s = pbscan_request(payload, len, 1, bulk);
    ASSERT(s);
    ASSERT((*bulk)->data == payload + off);
    ASSERT_EQ((*bulk)->len, n);
    Request *full = request_unpack(len, payload);
    ASSERT(full);
    uint8_t *a, *b;
    size_t la = pack(s, &a), lb = pack(full, &b);
    ASSERT_EQ(la, lb);
    ASSERT_MEM_EQ(a, b, la);
    free(a);
    free(b);
    request_free(full);
    return s;
}

/* Where n bytes of g_data lie in a payload that holds them once. */
static size_t find_data(const uint8_t *p, size_t len, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(p + i, g_data, n))
            return i;
    FAIL("data not found in the payload");
}

static void fill(void)
{
    for (size_t i = 0; i < sizeof g_data; i++)
        g_data[i] = (uint8_t)(i * 131 + 7);
}

TEST(write_file_every_field)
{
    fill();
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WriteFile wf = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    wf.path = "/tmp/x";
    wf.data.data = g_data;
    wf.data.len = 3000;
    wf.more = 1;
    wf.mode = 0600;
    wf.make_parents = 1;
    wf.atomic_opt_case = SANDBOX__AGENT__V1__WRITE_FILE__ATOMIC_OPT_ATOMIC;
    wf.atomic = 0;
    wf.owner = "nobody";
    wf.sync = 1;
    wf.expected_crc32_opt_case = SANDBOX__AGENT__V1__WRITE_FILE__EXPECTED_CRC32_OPT_EXPECTED_CRC32;
    wf.expected_crc32 = 0;
    wf.user = "root";
    req.id = 77;
    req.op_case = OP(WRITE_FILE);
    req.write_file = &wf;
    uint8_t *p;
    size_t len = pack(&req, &p);
    ProtobufCBinaryData *bulk;
    Request *s = scan_same(p, len, find_data(p, len, 3000), 3000, &bulk);
    ASSERT_EQ(s->id, 77);
    ASSERT_EQ(s->op_case, OP(WRITE_FILE));
    ASSERT(bulk == &s->write_file->data);
    ASSERT_STR_EQ(s->write_file->path, "/tmp/x");
    ASSERT_STR_EQ(s->write_file->owner, "nobody");
    ASSERT_EQ(s->write_file->more, 1);
    ASSERT_EQ(s->write_file->sync, 1);
    ASSERT_EQ(s->write_file->atomic_opt_case, SANDBOX__AGENT__V1__WRITE_FILE__ATOMIC_OPT_ATOMIC);
    ASSERT_EQ(s->write_file->expected_crc32_opt_case,
              SANDBOX__AGENT__V1__WRITE_FILE__EXPECTED_CRC32_OPT_EXPECTED_CRC32);
    pbscan_free(s, bulk);
    free(p);
}

TEST(write_data_stdin_tunnel)
{
    fill();
    uint8_t *p;
    size_t len;
    ProtobufCBinaryData *bulk;
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__FileData fd = SANDBOX__AGENT__V1__FILE_DATA__INIT;
    fd.data.data = g_data;
    fd.data.len = 1;
    fd.more = 1;
    req.id = 3;
    req.op_case = OP(WRITE_DATA);
    req.write_data = &fd;
    len = pack(&req, &p);
    Request *s = scan_same(p, len, find_data(p, len, 1), 1, &bulk);
    ASSERT(bulk == &s->write_data->data && s->write_data->more == 1);
    pbscan_free(s, bulk);
    free(p);

    Sandbox__Agent__V1__WriteStdin ws = SANDBOX__AGENT__V1__WRITE_STDIN__INIT;
    ws.pid = 4242;
    ws.data.data = g_data;
    ws.data.len = sizeof g_data;
    req.op_case = OP(WRITE_STDIN);
    req.write_stdin = &ws;
    len = pack(&req, &p);
    s = scan_same(p, len, find_data(p, len, sizeof g_data), sizeof g_data, &bulk);
    ASSERT(bulk == &s->write_stdin->data && s->write_stdin->pid == 4242);
    pbscan_free(s, bulk);
    free(p);

    Sandbox__Agent__V1__TunnelSend ts = SANDBOX__AGENT__V1__TUNNEL_SEND__INIT;
    ts.tunnel_id = 1ull << 40;
    ts.data.data = g_data;
    ts.data.len = 200;
    ts.eof = 1;
    req.op_case = OP(TUNNEL_SEND);
    req.tunnel_send = &ts;
    len = pack(&req, &p);
    s = scan_same(p, len, find_data(p, len, 200), 200, &bulk);
    ASSERT(bulk == &s->tunnel_send->data);
    ASSERT_EQ(s->tunnel_send->tunnel_id, 1ull << 40);
    ASSERT_EQ(s->tunnel_send->eof, 1);
    pbscan_free(s, bulk);
    free(p);
}

/* Hand-made payloads: a FileData (Request field 32) with id 9. */
static size_t file_data(uint8_t *p, const uint8_t *sub, size_t sublen)
{
    size_t n = 0;
    p[n++] = 1 << 3; /* id */
    p[n++] = 9;
    p[n++] = 0x82; /* write_data (32), length-delimited: a two-byte key */
    p[n++] = 0x02;
    p[n++] = (uint8_t)sublen; /* < 128 here */
    memcpy(p + n, sub, sublen);
    return n + sublen;
}

TEST(field_order_and_unknown_fields_kept)
{
    /* more before and after data, an unknown varint and an unknown
     * length-delimited field around it, a non-canonical key for data. */
    const uint8_t sub[] = {2 << 3, 0,                  /* more = false */
                           0x98,   0x06, 5,            /* field 99, varint */
                           0x8a,   0x80, 0x00, 4,      /* data, a three-byte key */
                           'a',    'b',  'c',  'd',
                           7 << 3 | 2, 2, 'x', 'y',    /* field 7, length-delimited */
                           2 << 3, 1};                 /* more = true: the last wins */
    uint8_t p[128];
    size_t len = file_data(p, sub, sizeof sub);
    /* An unknown field of the Request after the op. */
    p[len++] = 0xc0; /* field 200, varint */
    p[len++] = 0x0c;
    p[len++] = 1;
    ProtobufCBinaryData *bulk;
    Request *s = scan_same(p, len, 14, 4, &bulk);
    ASSERT_EQ(s->write_data->more, 1);
    ASSERT_MEM_EQ(bulk->data, "abcd", 4);
    pbscan_free(s, bulk);
}

TEST(declines)
{
    uint8_t p[256];
    size_t len;
    ProtobufCBinaryData *bulk;
    /* data given twice: protobuf-c keeps the last. */
    const uint8_t twice[] = {1 << 3 | 2, 1, 'a', 1 << 3 | 2, 1, 'b'};
    len = file_data(p, twice, sizeof twice);
    ASSERT(!pbscan_request(p, len, 1, &bulk));
    /* data with a varint wire type: protobuf-c refuses it. */
    const uint8_t wrongwt[] = {1 << 3 | 0, 1};
    len = file_data(p, wrongwt, sizeof wrongwt);
    ASSERT(!pbscan_request(p, len, 1, &bulk));
    ASSERT(!request_unpack(len, p));
    /* No data at all, and data smaller than asked for. */
    const uint8_t more[] = {2 << 3, 1};
    len = file_data(p, more, sizeof more);
    ASSERT(!pbscan_request(p, len, 1, &bulk));
    const uint8_t small[] = {1 << 3 | 2, 3, 'a', 'b', 'c'};
    len = file_data(p, small, sizeof small);
    ASSERT(!pbscan_request(p, len, 4, &bulk));
    Request *s = pbscan_request(p, len, 3, &bulk);
    ASSERT(s);
    pbscan_free(s, bulk);
    /* The op twice (protobuf-c merges), or another op after it. */
    size_t one = file_data(p, small, sizeof small);
    memcpy(p + one, p + 2, one - 2);
    ASSERT(!pbscan_request(p, one + one - 2, 1, &bulk));
    p[one] = 3 << 3 | 2; /* ping */
    p[one + 1] = 0;
    ASSERT(!pbscan_request(p, one + 2, 1, &bulk));
    /* Every truncation of a good payload. */
    len = file_data(p, small, sizeof small);
    for (size_t i = 0; i < len; i++)
        ASSERT(!pbscan_request(p, i, 1, &bulk));
    /* A bad small field next to good data: protobuf-c refuses the whole. */
    const uint8_t badgroup[] = {1 << 3 | 2, 1, 'a', 5 << 3 | 3};
    len = file_data(p, badgroup, sizeof badgroup);
    ASSERT(!pbscan_request(p, len, 1, &bulk));
    ASSERT(!request_unpack(len, p));
    /* Another op with bytes: Ping.payload. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__Ping ping = SANDBOX__AGENT__V1__PING__INIT;
    ping.payload.data = (uint8_t *)"0123456789";
    ping.payload.len = 10;
    req.id = 1;
    req.op_case = OP(PING);
    req.ping = &ping;
    uint8_t *pp;
    len = pack(&req, &pp);
    ASSERT(!pbscan_request(pp, len, 1, &bulk));
    free(pp);
    /* Nothing, and garbage. */
    ASSERT(!pbscan_request(p, 0, 1, &bulk));
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ASSERT(!pbscan_request(junk, sizeof junk, 1, &bulk));
}

TEST(large_rest_and_large_data)
{
    /* The fields around data outgrow the stack copy; data is 1 MiB. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WriteFile wf = SANDBOX__AGENT__V1__WRITE_FILE__INIT;
    static uint8_t raw[3000], big[1 << 20];
    memset(raw, 'r', sizeof raw);
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i >> 3);
    wf.path_raw.data = raw;
    wf.path_raw.len = sizeof raw;
    wf.data.data = big;
    wf.data.len = sizeof big;
    req.id = 5;
    req.op_case = OP(WRITE_FILE);
    req.write_file = &wf;
    uint8_t *p;
    size_t len = pack(&req, &p);
    ProtobufCBinaryData *bulk;
    Request *s = pbscan_request(p, len, 64 * 1024, &bulk);
    ASSERT(s);
    ASSERT_EQ(bulk->len, sizeof big);
    ASSERT_MEM_EQ(bulk->data, big, sizeof big);
    ASSERT(bulk->data > p && bulk->data < p + len);
    ASSERT_EQ(s->write_file->path_raw.len, sizeof raw);
    ASSERT_MEM_EQ(s->write_file->path_raw.data, raw, sizeof raw);
    pbscan_free(s, bulk);
    free(p);
}

TEST_MAIN(TEST_ENTRY(write_file_every_field), TEST_ENTRY(write_data_stdin_tunnel),
          TEST_ENTRY(field_order_and_unknown_fields_kept), TEST_ENTRY(declines),
          TEST_ENTRY(large_rest_and_large_data))
