/* libFuzzer target: the frame codec. The input is a byte stream as a client
 * would send it; it is split into frames and each is decoded as a Request,
 * exactly as conn.c does, and as a Response, as the client library does. */
#include "frame.h"
#include "pb.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint32_t max = 1u << 20;
    while (size) {
        uint8_t flags;
        uint32_t plen;
        if (frame_header_parse(data, size, max, &flags, &plen) != 1)
            return 0;
        if (size < FRAME_HEADER_SIZE + (size_t)plen)
            return 0;
        const uint8_t *payload = data + FRAME_HEADER_SIZE;
        ProtobufCMessage *m = NULL;
        char err[160];
        if (frame_decode(&sandbox__agent__v1__request__descriptor, flags, payload, plen, max, &m,
                         err, sizeof err) == 0) {
            /* Re-encode what was decoded: packing must accept anything the
             * unpacker produced. */
            uint8_t *out;
            size_t outlen;
            if (frame_encode(m, 1, 0xffffffffu, &out, &outlen) == 0)
                free(out);
            protobuf_c_message_free_unpacked(m, NULL);
        }
        if (frame_decode(&sandbox__agent__v1__response__descriptor, flags, payload, plen, max,
                         &m, err, sizeof err) == 0)
            protobuf_c_message_free_unpacked(m, NULL);
        data += FRAME_HEADER_SIZE + plen;
        size -= FRAME_HEADER_SIZE + plen;
    }
    return 0;
}
