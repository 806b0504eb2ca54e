/* frame.c - see frame.h. */
#include "frame.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

uint32_t frame_header_length(const uint8_t *buf)
{
    return (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 |
           (uint32_t)buf[4];
}

int frame_header_parse(const uint8_t *buf, size_t len, uint32_t max, uint8_t *flags,
                       uint32_t *payload_len)
{
    if (len < FRAME_HEADER_SIZE)
        return 0;
    uint32_t n = frame_header_length(buf);
    if (buf[0] & ~FRAME_FLAG_ZLIB)
        return -EPROTO;
    if (n > max)
        return -EMSGSIZE;
    *flags = buf[0];
    *payload_len = n;
    return 1;
}

void frame_header_write(uint8_t *dst, uint8_t flags, uint32_t payload_len)
{
    dst[0] = flags;
    dst[1] = (uint8_t)(payload_len >> 24);
    dst[2] = (uint8_t)(payload_len >> 16);
    dst[3] = (uint8_t)(payload_len >> 8);
    dst[4] = (uint8_t)payload_len;
}

int frame_inflate(const uint8_t *in, size_t inlen, size_t max, uint8_t **out, size_t *outlen)
{
    z_stream zs;
    size_t cap = inlen * 4 + 256, used = 0;
    uint8_t *buf = NULL;
    int rc = -ENOMEM, zr;

    if (cap > max + 1)
        cap = max + 1; /* one spare byte detects "more than max" */
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK)
        return -ENOMEM;
    buf = malloc(cap ? cap : 1);
    if (!buf)
        goto out;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)inlen;
    for (;;) {
        zs.next_out = buf + used;
        zs.avail_out = (uInt)(cap - used);
        zr = inflate(&zs, Z_NO_FLUSH);
        used = cap - zs.avail_out;
        if (used > max) {
            rc = -EMSGSIZE;
            goto out;
        }
        if (zr == Z_STREAM_END) {
            /* Trailing bytes after the zlib stream are not a valid payload. */
            if (zs.avail_in) {
                rc = -EBADMSG;
                goto out;
            }
            break;
        }
        if (zr == Z_BUF_ERROR && zs.avail_in == 0) {
            rc = -EBADMSG; /* truncated stream */
            goto out;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
            goto out;
        }
        if (zs.avail_out == 0) {
            size_t ncap = cap * 2;
            if (ncap > max + 1)
                ncap = max + 1;
            if (ncap <= cap) {
                rc = -EMSGSIZE;
                goto out;
            }
            uint8_t *nb = realloc(buf, ncap);
            if (!nb)
                goto out;
            buf = nb;
            cap = ncap;
        }
    }
    inflateEnd(&zs);
    *out = buf;
    *outlen = used;
    return 0;
out:
    inflateEnd(&zs);
    free(buf);
    return rc;
}

int frame_decode(const ProtobufCMessageDescriptor *desc, uint8_t flags, const uint8_t *payload,
                 size_t len, uint32_t max, ProtobufCMessage **out, char *err, size_t errlen)
{
    uint8_t *inflated = NULL;
    size_t n = len;
    int rc;

    if (flags & FRAME_FLAG_ZLIB) {
        rc = frame_inflate(payload, len, max, &inflated, &n);
        if (rc == -EMSGSIZE) {
            snprintf(err, errlen, "compressed payload inflates past the maximum frame size %u",
                     max);
            return rc;
        }
        if (rc < 0) {
            snprintf(err, errlen, "payload is not a valid zlib stream");
            return rc;
        }
        payload = inflated;
    }
    *out = protobuf_c_message_unpack(desc, NULL, n, payload);
    free(inflated);
    if (!*out) {
        snprintf(err, errlen, "payload of %zu bytes is not a valid %s message", n, desc->name);
        return -EBADMSG;
    }
    return 0;
}

int frame_encode(const ProtobufCMessage *msg, int allow_zlib, uint32_t max, uint8_t **out,
                 size_t *outlen)
{
    size_t plen = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf;

    if (plen > max)
        return -EMSGSIZE;
    if (allow_zlib && plen >= FRAME_ZLIB_MIN) {
        uint8_t *raw = malloc(plen);
        uLongf clen = compressBound((uLong)plen);
        if (!raw)
            return -ENOMEM;
        protobuf_c_message_pack(msg, raw);
        buf = malloc(FRAME_HEADER_SIZE + clen);
        if (!buf) {
            free(raw);
            return -ENOMEM;
        }
        /* Level 1: streaming output favours speed; most of the gain on text
         * and zero-filled data comes at the lowest level. */
        if (compress2(buf + FRAME_HEADER_SIZE, &clen, raw, (uLong)plen, 1) == Z_OK &&
            clen + 16 < plen) {
            free(raw);
            frame_header_write(buf, FRAME_FLAG_ZLIB, (uint32_t)clen);
            *out = buf;
            *outlen = FRAME_HEADER_SIZE + clen;
            return 0;
        }
        /* Did not pay: send the packed bytes as they are. */
        memcpy(buf + FRAME_HEADER_SIZE, raw, plen);
        free(raw);
        frame_header_write(buf, 0, (uint32_t)plen);
        *out = buf;
        *outlen = FRAME_HEADER_SIZE + plen;
        return 0;
    }
    buf = malloc(FRAME_HEADER_SIZE + plen);
    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(msg, buf + FRAME_HEADER_SIZE);
    frame_header_write(buf, 0, (uint32_t)plen);
    *out = buf;
    *outlen = FRAME_HEADER_SIZE + plen;
    return 0;
}

/* ------------------------------------------------------------ bulk by reference */

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t frame_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* The field of desc stored at byte offset off of its struct, or NULL. */
static const ProtobufCFieldDescriptor *field_at(const ProtobufCMessageDescriptor *desc, size_t off)
{
    for (unsigned i = 0; i < desc->n_fields; i++)
        if (desc->fields[i].offset == off)
            return &desc->fields[i];
    return NULL;
}

ssize_t frame_encode_head(ProtobufCMessage *msg, ProtobufCMessage *sub, ProtobufCBinaryData *bulk,
                          uint32_t max, uint8_t *out, size_t cap, size_t *payload_len)
{
    const ProtobufCMessageDescriptor *md = msg->descriptor, *sd = sub->descriptor;
    const ProtobufCFieldDescriptor *mf = NULL, *bf;
    uint32_t *qcase = NULL, saved_case = 0;
    ProtobufCBinaryData saved = *bulk;
    ssize_t rc;

    /* The message field of msg that holds sub (in its oneof, the set one). */
    for (unsigned i = 0; i < md->n_fields && !mf; i++) {
        const ProtobufCFieldDescriptor *f = &md->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        if (*(ProtobufCMessage **)(void *)((char *)msg + f->offset) != sub ||
            f->descriptor != sub->descriptor) /* oneof members share their storage */
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *q = (uint32_t *)(void *)((char *)msg + f->quantifier_offset);
            if (*q != f->id)
                continue;
            qcase = q;
        }
        mf = f;
    }
    bf = field_at(sd, (size_t)((char *)bulk - (char *)sub));
    if (!mf || !bf || bf->type != PROTOBUF_C_TYPE_BYTES || bf->label == PROTOBUF_C_LABEL_REPEATED ||
        (bf->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
        return -EINVAL;

    /* sub without the bulk bytes, then msg without sub: both packed by
     * protobuf-c; only the two length-delimited keys are written here. */
    bulk->data = NULL;
    bulk->len = 0;
    size_t sub0 = protobuf_c_message_get_packed_size(sub);
    uint64_t bkey = (uint64_t)bf->id << 3 | 2, mkey = (uint64_t)mf->id << 3 | 2;
    size_t subtotal = sub0 + varint_size(bkey) + varint_size(saved.len) + saved.len;
    if (qcase) {
        saved_case = *qcase;
        *qcase = 0;
    } else {
        *(ProtobufCMessage **)(void *)((char *)msg + mf->offset) = NULL;
    }
    size_t env = protobuf_c_message_get_packed_size(msg);
    size_t head = env + varint_size(mkey) + varint_size(subtotal) + sub0 + varint_size(bkey) +
                  varint_size(saved.len);
    size_t plen = head + saved.len;
    if (plen > max) {
        rc = -EMSGSIZE;
    } else if (FRAME_HEADER_SIZE + head > cap) {
        rc = -ENOBUFS;
    } else {
        uint8_t *p = out;
        frame_header_write(p, 0, (uint32_t)plen);
        p += FRAME_HEADER_SIZE;
        p += protobuf_c_message_pack(msg, p);
        p += frame_varint_put(p, mkey);
        p += frame_varint_put(p, subtotal);
        p += protobuf_c_message_pack(sub, p);
        p += frame_varint_put(p, bkey);
        p += frame_varint_put(p, saved.len);
        rc = (ssize_t)(p - out);
        *payload_len = plen;
    }
    if (qcase)
        *qcase = saved_case;
    else
        *(ProtobufCMessage **)(void *)((char *)msg + mf->offset) = sub;
    *bulk = saved;
    return rc;
}
