/* pbscan.c - see pbscan.h.
 *
 * A payload P holds the op's message S at P[op.val, op.end), and S holds the
 * bulk field B at S[b.key, b.end). protobuf-c decodes everything but B from
 * R = P[0, op.hdr) + varint(|S| - |B|) + S without B + P[op.end, len):
 * fields are independent in protobuf, so leaving out one that occurs once
 * changes nothing else; B's bytes are then pointed at where they lie. The
 * walk that finds op and B delimits fields exactly as protobuf-c's unpack
 * does (same tag, varint and length rules), and declines anything else. */
#include "pbscan.h"

#include "frame.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* One field of a message: its number and wire type, where its key starts,
 * where its length prefix starts (wire type 2) or its value does, where its
 * value starts and where the field ends. */
typedef struct pbfield {
    uint32_t num;
    uint8_t wt;
    size_t key, hdr, val, end;
} pbfield_t;

/* The field at buf[at..len), at < len, delimited as protobuf-c 1.4's
 * protobuf_c_message_unpack delimits it (parse_tag_and_wiretype, then the
 * rule of each wire type). -1 where unpack would fail, or a group. */
static int field_next(const uint8_t *buf, size_t len, size_t at, pbfield_t *f)
{
    const uint8_t *p = buf + at;
    size_t rem = len - at, tmax = rem < 5 ? rem : 5, n = 1, i;
    unsigned shift = 4;

    if ((p[0] & 0xf8) == 0)
        return -1; /* field number 0 in a one-byte key */
    f->wt = p[0] & 7;
    f->num = (uint32_t)(p[0] & 0x7f) >> 3;
    while (p[n - 1] & 0x80) {
        if (n == tmax)
            return -1;
        f->num |= (uint32_t)(p[n] & 0x7f) << shift; /* bits past 32 drop, as there */
        shift += 7;
        n++;
    }
    f->key = at;
    f->hdr = f->val = at + n;
    p += n;
    rem -= n;
    switch (f->wt) {
    case 0: /* varint: at most 10 bytes */
        for (i = 0; i < rem && i < 10 && (p[i] & 0x80); i++)
            ;
        if (i == rem || i == 10)
            return -1;
        f->end = f->val + i + 1;
        return 0;
    case 1:
        if (rem < 8)
            return -1;
        f->end = f->val + 8;
        return 0;
    case 5:
        if (rem < 4)
            return -1;
        f->end = f->val + 4;
        return 0;
    case 2: { /* a length of at most 5 bytes, at most INT_MAX, within the rest */
        size_t v = 0, hmax = rem < 5 ? rem : 5;
        for (i = 0; i < hmax; i++) {
            v |= ((size_t)p[i] & 0x7f) << (7 * i);
            if (!(p[i] & 0x80))
                break;
        }
        if (i == hmax || v > INT_MAX || i + 1 + v > rem)
            return -1;
        f->val += i + 1;
        f->end = f->val + v;
        return 0;
    }
    default:
        return -1;
    }
}

/* The Request ops whose `data` is bulk. */
static int bulk_op(const char *name)
{
    static const char *const ops[] = {"write_file", "write_data", "write_stdin", "tunnel_send"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(name, ops[i]))
            return 1;
    return 0;
}

Request *pbscan_request(const uint8_t *payload, size_t len, size_t min_bulk,
                        ProtobufCBinaryData **bulk)
{
    const ProtobufCMessageDescriptor *rd = &sandbox__agent__v1__request__descriptor;
    const ProtobufCFieldDescriptor *opd = NULL, *bd;
    pbfield_t f, op = {0}, b = {0};
    unsigned n_op = 0, n_b = 0;
    uint8_t stack[512], *rest = stack;
    Request *req = NULL;

    /* The op: exactly one member of the oneof, and one with bulk data. */
    for (size_t at = 0; at < len; at = f.end) {
        if (field_next(payload, len, at, &f) < 0)
            return NULL;
        const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(rd, f.num);
        if (fd && (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
            op = f;
            opd = fd;
            n_op++;
        }
    }
    if (n_op != 1 || op.wt != 2 || opd->type != PROTOBUF_C_TYPE_MESSAGE || !bulk_op(opd->name))
        return NULL;
    bd = protobuf_c_message_descriptor_get_field_by_name(opd->descriptor, "data");
    if (!bd || bd->type != PROTOBUF_C_TYPE_BYTES || bd->label != PROTOBUF_C_LABEL_NONE ||
        (bd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
        return NULL;
    /* Its data field: exactly once, length-delimited, large enough. */
    for (size_t at = op.val; at < op.end; at = f.end) {
        if (field_next(payload, op.end, at, &f) < 0)
            return NULL;
        if (f.num == bd->id) {
            b = f;
            n_b++;
        }
    }
    if (n_b != 1 || b.wt != 2 || b.end - b.val < (min_bulk ? min_bulk : 1))
        return NULL;

    /* Everything else, for protobuf-c. */
    size_t sublen = (op.end - op.val) - (b.end - b.key);
    size_t rlen = op.hdr + 10 + sublen + (len - op.end), r = 0;
    if (rlen > sizeof stack && !(rest = malloc(rlen)))
        return NULL;
    memcpy(rest, payload, op.hdr);
    r = op.hdr;
    r += frame_varint_put(rest + r, sublen);
    memcpy(rest + r, payload + op.val, b.key - op.val);
    r += b.key - op.val;
    memcpy(rest + r, payload + b.end, op.end - b.end);
    r += op.end - b.end;
    memcpy(rest + r, payload + op.end, len - op.end);
    r += len - op.end;
    req = (Request *)protobuf_c_message_unpack(rd, NULL, r, rest);
    if (rest != stack)
        free(rest);
    if (!req)
        return NULL;
    ProtobufCMessage *sub = *(ProtobufCMessage **)(void *)((char *)req + opd->offset);
    if (req->op_case != opd->id || !sub) { /* cannot be: what it was made from says so */
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return NULL;
    }
    *bulk = (ProtobufCBinaryData *)(void *)((char *)sub + bd->offset);
    (*bulk)->data = (uint8_t *)payload + b.val;
    (*bulk)->len = b.end - b.val;
    return req;
}

void pbscan_free(Request *req, ProtobufCBinaryData *bulk)
{
    if (!req)
        return;
    if (bulk) {
        bulk->data = NULL;
        bulk->len = 0;
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}
