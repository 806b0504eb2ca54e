/* frame.h - the pure wire codec: the 5-byte header (flags, big-endian
 * length), the length limit, zlib in and out, protobuf pack and unpack, and
 * the varints of encodings written by hand around bulk data.
 * No I/O and no global state, so unit tests and the fuzzer drive it directly,
 * and the client library shares it with the agent. */
#ifndef SA_FRAME_H
#define SA_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FRAME_HEADER_SIZE 5
#define FRAME_FLAG_ZLIB 0x01u
#define FRAME_DEFAULT_MAX (4u * 1024 * 1024)
/* Payloads smaller than this are never worth compressing. */
#define FRAME_ZLIB_MIN 1024

/* Parse a header from buf[0..len).
 * Returns 0 when fewer than FRAME_HEADER_SIZE bytes are there, 1 when the
 * header is valid (fills *flags and *payload_len), -EPROTO for unknown flag
 * bits, -EMSGSIZE when the length exceeds max. Checked before any allocation
 * for the body. */
int frame_header_parse(const uint8_t *buf, size_t len, uint32_t max, uint8_t *flags,
                       uint32_t *payload_len);

/* The length field of buf[0..FRAME_HEADER_SIZE), unchecked: for saying what
 * a header that frame_header_parse refused asked for. */
uint32_t frame_header_length(const uint8_t *buf);

/* Inflate a zlib (RFC 1950) payload, refusing to produce more than max bytes.
 * Returns 0 with a malloc'd *out, -EMSGSIZE past max, -EBADMSG if corrupt,
 * -ENOMEM. */
int frame_inflate(const uint8_t *in, size_t inlen, size_t max, uint8_t **out, size_t *outlen);

/* Decode one message of type desc from a complete frame payload.
 * Returns 0 and *out (free with protobuf_c_message_free_unpacked(*out, NULL)),
 * or -EMSGSIZE / -EBADMSG / -ENOMEM; err gets a readable reason. */
int frame_decode(const ProtobufCMessageDescriptor *desc, uint8_t flags, const uint8_t *payload,
                 size_t len, uint32_t max, ProtobufCMessage **out, char *err, size_t errlen);

/* Encode msg as one frame in a malloc'd buffer. With allow_zlib, payloads of
 * at least FRAME_ZLIB_MIN bytes are compressed when that makes them smaller.
 * Returns 0, -EMSGSIZE if the payload exceeds max, -ENOMEM. */
int frame_encode(const ProtobufCMessage *msg, int allow_zlib, uint32_t max, uint8_t **out,
                 size_t *outlen);

/* Bulk bytes by reference. msg has a message field (or the set member of a
 * oneof) holding sub, and sub a bytes field, bulk. Writes into out[0..cap)
 * the frame header and every byte of the encoding that precedes bulk's data,
 * with bulk placed last (field order is free in protobuf), so that the frame
 * is out[0..return) followed by bulk->data[0..bulk->len): the caller writes
 * the data from where it lies, without packing it into a buffer. The
 * messages are modified during the call and restored. Returns the header's
 * length with *payload_len, -EMSGSIZE past max, -ENOBUFS when cap is too
 * small, -EINVAL when the fields are not as described. */
ssize_t frame_encode_head(ProtobufCMessage *msg, ProtobufCMessage *sub, ProtobufCBinaryData *bulk,
                          uint32_t max, uint8_t *out, size_t cap, size_t *payload_len);

/* Write a header for payload_len into dst[0..5). */
void frame_header_write(uint8_t *dst, uint8_t flags, uint32_t payload_len);

/* Write v at p as a protobuf varint (at most 10 bytes); returns its length.
 * For encodings written by hand around bulk data (frame_encode_head,
 * pbscan). */
size_t frame_varint_put(uint8_t *p, uint64_t v);

#endif
