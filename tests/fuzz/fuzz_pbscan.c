/* libFuzzer target: pbscan against protobuf-c. The input is split into
 * frames as fuzz_frame does; each payload is decoded by protobuf-c's unpack
 * and by pbscan_request (every bulk size accepted). Whenever pbscan decodes
 * one, protobuf-c must have decoded it too, to the same message: both are
 * packed and the bytes compared, and the bulk field must point into the
 * payload at bytes equal to protobuf-c's copy. Any difference aborts. */
#include "frame.h"
#include "pb.h"
#include "pbscan.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void disagree(const char *why, const uint8_t *payload, size_t len)
{
    fprintf(stderr, "pbscan and protobuf-c disagree: %s (payload of %zu bytes)\n", why, len);
    abort();
}

static void both_ways(const uint8_t *payload, size_t len)
{
    ProtobufCBinaryData *bulk = NULL;
    Request *scanned = pbscan_request(payload, len, 1, &bulk);
    if (!scanned)
        return; /* declined: the agent uses protobuf-c's result */
    ProtobufCMessage *full =
        protobuf_c_message_unpack(&sandbox__agent__v1__request__descriptor, NULL, len, payload);
    if (!full)
        disagree("protobuf-c refuses what pbscan decoded", payload, len);
    if (bulk->data < payload || bulk->data + bulk->len > payload + len || !bulk->len)
        disagree("the bulk field does not lie in the payload", payload, len);
    size_t a = protobuf_c_message_get_packed_size(&scanned->base);
    size_t b = protobuf_c_message_get_packed_size(full);
    if (a != b)
        disagree("packed sizes differ", payload, len);
    uint8_t *pa = malloc(a ? a : 1), *pb = malloc(b ? b : 1);
    if (!pa || !pb)
        abort();
    if (protobuf_c_message_pack(&scanned->base, pa) != a || protobuf_c_message_pack(full, pb) != b)
        disagree("pack sizes differ from get_packed_size", payload, len);
    if (memcmp(pa, pb, a))
        disagree("packed bytes differ", payload, len);
    free(pa);
    free(pb);
    protobuf_c_message_free_unpacked(full, NULL);
    pbscan_free(scanned, bulk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint32_t max = 1u << 20;
    /* The input as one payload too: the mutator reaches the message
     * without having to keep a frame header right. */
    both_ways(data, size);
    while (size) {
        uint8_t flags;
        uint32_t plen;
        if (frame_header_parse(data, size, max, &flags, &plen) != 1)
            return 0;
        if (size < FRAME_HEADER_SIZE + (size_t)plen)
            return 0;
        if (!(flags & FRAME_FLAG_ZLIB))
            both_ways(data + FRAME_HEADER_SIZE, plen);
        data += FRAME_HEADER_SIZE + plen;
        size -= FRAME_HEADER_SIZE + plen;
    }
    return 0;
}
