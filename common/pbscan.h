/* pbscan.h - the bulk bytes of an upload, stdin or tunnel request used
 * where they lie in the received frame, instead of being copied out by
 * protobuf-c. Only the one `bytes` field is found by hand; every other field
 * is decoded by protobuf-c from a copy of the payload that leaves it out.
 * tests/fuzz/fuzz_pbscan.c decodes every input both ways and compares. */
#ifndef SA_PBSCAN_H
#define SA_PBSCAN_H

#include "pb.h"

#include <stddef.h>
#include <stdint.h>

/* Decode a Request from payload[0..len) as protobuf_c_message_unpack does,
 * except that when it is a WriteFile, FileData (write_data), WriteStdin or
 * TunnelSend whose `data` holds at least min_bulk bytes, those bytes are not
 * copied: the returned message's data field points into payload, and *bulk
 * is that field. Returns NULL for any other shape (another op, a smaller
 * field, the op or the field given twice, a compressed or malformed
 * payload): the caller decodes it with protobuf-c, which also says what is
 * wrong with an invalid one. payload must outlive the message's use of
 * data; free the message with pbscan_free. */
Request *pbscan_request(const uint8_t *payload, size_t len, size_t min_bulk,
                        ProtobufCBinaryData **bulk);

/* Free a message from pbscan_request: the borrowed field is emptied first,
 * so protobuf-c does not free what it did not allocate. */
void pbscan_free(Request *req, ProtobufCBinaryData *bulk);

#endif
