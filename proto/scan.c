/*
 * scan.c - the allocation-free validating pre-scan of a msgpack payload, and id recovery.
 *
 * msgpack_unpack() trusts the lengths it reads: an array32 header announcing 2^32 items makes it
 * ask the zone for 96 GiB before it notices that the bytes are missing.  So every payload is
 * first walked here, iteratively, with one counter per open container on a fixed stack; each
 * count and length is checked against the limits and against the bytes that are actually left.
 * A payload that passes is exactly one well-formed value, and what msgpack_unpack() will
 * allocate for it is known (and at most 24 bytes per byte of payload).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <msgpack/unpack_define.h>

#include "proto-int.h"

_Static_assert(PROTO_DEPTH_MAX <= MSGPACK_EMBED_STACK_SIZE,
               "msgpack_unpack cannot nest deeper than its embedded stack");

void proto_limits_default(struct proto_limits *ret_limits)
{
    *ret_limits = (struct proto_limits){
        .max_frame = PROTO_DEFAULT_MAX_FRAME,
        .max_depth = PROTO_DEFAULT_MAX_DEPTH,
        .max_elements = PROTO_DEFAULT_MAX_ELEMENTS,
        .max_str = PROTO_DEFAULT_MAX_FRAME,
    };
}

void proto_limits_normalize(const struct proto_limits *in, struct proto_limits *ret_limits)
{
    struct proto_limits l;

    proto_limits_default(&l);
    if (in) {
        if (in->max_frame)
            l.max_frame = in->max_frame;
        if (in->max_depth)
            l.max_depth = in->max_depth;
        if (in->max_elements)
            l.max_elements = in->max_elements;
        l.max_str = in->max_str ? in->max_str : l.max_frame;
    }
    if (l.max_depth > PROTO_DEPTH_MAX)
        l.max_depth = PROTO_DEPTH_MAX;
    *ret_limits = l;
}

void proto_decode_error_set(struct proto_decode_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
    va_end(ap);
}

static uint64_t read_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

enum head_kind {
    HEAD_INVALID,
    HEAD_SCALAR, /* fixed-size value: n bytes follow the type byte */
    HEAD_DATA,   /* str/bin/ext: a length field of lf bytes, then `extra` bytes, then data */
    HEAD_ARRAY,  /* count in the type byte or in an lf-byte field */
    HEAD_MAP,
};

struct head {
    enum head_kind kind;
    unsigned lf;    /* bytes of the big-endian length/count field after the type byte */
    unsigned extra; /* bytes between the length field and the data (ext's type byte) */
    uint64_t n;     /* data bytes or item count, when not taken from the length field */
};

/* The msgpack format table (https://github.com/msgpack/msgpack/blob/master/spec.md). */
static struct head classify(uint8_t b)
{
    static const uint8_t pow2[4] = {1, 2, 4, 8};

    if (b <= 0x7f || b >= 0xe0) /* positive / negative fixint */
        return (struct head){HEAD_SCALAR, 0, 0, 0};
    if (b <= 0x8f)
        return (struct head){HEAD_MAP, 0, 0, b & 0x0f};
    if (b <= 0x9f)
        return (struct head){HEAD_ARRAY, 0, 0, b & 0x0f};
    if (b <= 0xbf)
        return (struct head){HEAD_DATA, 0, 0, b & 0x1f};
    switch (b) {
    case 0xc0: /* nil */
    case 0xc2: /* false */
    case 0xc3: /* true */
        return (struct head){HEAD_SCALAR, 0, 0, 0};
    case 0xc4: /* bin 8/16/32 */
    case 0xc5:
    case 0xc6:
        return (struct head){HEAD_DATA, pow2[b - 0xc4], 0, 0};
    case 0xc7: /* ext 8/16/32: length, then the ext type byte */
    case 0xc8:
    case 0xc9:
        return (struct head){HEAD_DATA, pow2[b - 0xc7], 1, 0};
    case 0xca: /* float 32/64 */
        return (struct head){HEAD_SCALAR, 0, 0, 4};
    case 0xcb:
        return (struct head){HEAD_SCALAR, 0, 0, 8};
    case 0xcc: /* uint 8..64 */
    case 0xcd:
    case 0xce:
    case 0xcf:
        return (struct head){HEAD_SCALAR, 0, 0, pow2[b - 0xcc]};
    case 0xd0: /* int 8..64 */
    case 0xd1:
    case 0xd2:
    case 0xd3:
        return (struct head){HEAD_SCALAR, 0, 0, pow2[b - 0xd0]};
    case 0xd4: /* fixext 1..16: the ext type byte, then the data */
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return (struct head){HEAD_DATA, 0, 1, 1u << (b - 0xd4)};
    case 0xd9: /* str 8/16/32 */
    case 0xda:
    case 0xdb:
        return (struct head){HEAD_DATA, pow2[b - 0xd9], 0, 0};
    case 0xdc: /* array 16/32 */
    case 0xdd:
        return (struct head){HEAD_ARRAY, 2u << (b - 0xdc), 0, 0};
    case 0xde: /* map 16/32 */
    case 0xdf:
        return (struct head){HEAD_MAP, 2u << (b - 0xde), 0, 0};
    default: /* 0xc1 is "never used" */
        return (struct head){HEAD_INVALID, 0, 0, 0};
    }
}

int proto_scan(const uint8_t *p, size_t len, const struct proto_limits *lim, size_t *ret_zone_bytes,
               struct proto_decode_error *err)
{
    uint64_t left[PROTO_DEPTH_MAX]; /* items still to read in each open container */
    unsigned depth = 0;
    uint64_t zone = 0;
    size_t pos = 0;

    for (;;) {
        struct head h;
        uint64_t avail, items;

        if (pos >= len) {
            proto_decode_error_set(err, PROTO_ERROR_PARSE, "truncated msgpack at byte %zu", pos);
            return -EBADMSG;
        }
        h = classify(p[pos]);
        if (h.kind == HEAD_INVALID) {
            proto_decode_error_set(err, PROTO_ERROR_PARSE, "invalid msgpack byte 0x%02x at %zu",
                                   p[pos], pos);
            return -EBADMSG;
        }
        avail = len - pos - 1;
        if (h.lf + h.extra > avail) {
            proto_decode_error_set(err, PROTO_ERROR_PARSE, "truncated msgpack header at %zu", pos);
            return -EBADMSG;
        }
        if (h.lf)
            h.n = read_be(p + pos + 1, h.lf);
        pos += 1 + h.lf + h.extra;
        avail -= h.lf + h.extra;

        switch (h.kind) {
        case HEAD_DATA:
            if (h.n > lim->max_str) {
                proto_decode_error_set(err, PROTO_ERROR_TOO_LARGE,
                                       "string of %" PRIu64 " bytes over the limit of %" PRIu32,
                                       h.n, lim->max_str);
                return -EBADMSG;
            }
            /* fall through */
        case HEAD_SCALAR:
            if (h.n > avail) {
                proto_decode_error_set(err, PROTO_ERROR_PARSE,
                                       "truncated msgpack: %" PRIu64 " bytes announced at %zu", h.n,
                                       pos);
                return -EBADMSG;
            }
            pos += h.n;
            break;
        case HEAD_ARRAY:
        case HEAD_MAP:
            if (depth + 1 > lim->max_depth) {
                proto_decode_error_set(err, PROTO_ERROR_TOO_LARGE,
                                       "nesting deeper than the limit of %" PRIu32, lim->max_depth);
                return -EBADMSG;
            }
            if (h.n > lim->max_elements) {
                proto_decode_error_set(err, PROTO_ERROR_TOO_LARGE,
                                       "%" PRIu64 " elements over the limit of %" PRIu32, h.n,
                                       lim->max_elements);
                return -EBADMSG;
            }
            /* Every item takes at least one byte: refuse counts the bytes cannot hold. */
            items = h.kind == HEAD_MAP ? 2 * h.n : h.n;
            if (items > avail) {
                proto_decode_error_set(err, PROTO_ERROR_PARSE,
                                       "truncated msgpack: %" PRIu64 " items announced at %zu",
                                       items, pos);
                return -EBADMSG;
            }
            zone += h.n * (h.kind == HEAD_MAP ? sizeof(msgpack_object_kv) : sizeof(msgpack_object));
            if (items > 0) {
                left[depth++] = items;
                continue;
            }
            break;
        case HEAD_INVALID:
            break;
        }

        /* A value is complete: it counts against its container, which may complete in turn. */
        while (depth > 0 && --left[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }

    if (pos != len) {
        proto_decode_error_set(err, PROTO_ERROR_PARSE, "%zu trailing bytes after the message",
                               len - pos);
        return -EBADMSG;
    }
    *ret_zone_bytes = (size_t)zone;
    return 0;
}

/* Reads a non-negative integer in any msgpack int encoding; false for anything else. */
static bool read_uint(const uint8_t *p, size_t len, size_t *pos, uint64_t *ret_v)
{
    uint8_t b;
    unsigned n;
    uint64_t v;

    if (*pos >= len)
        return false;
    b = p[*pos];
    if (b <= 0x7f) {
        *ret_v = b;
        *pos += 1;
        return true;
    }
    if (b >= 0xcc && b <= 0xcf)
        n = 1u << (b - 0xcc);
    else if (b >= 0xd0 && b <= 0xd3)
        n = 1u << (b - 0xd0);
    else
        return false;
    if (len - *pos - 1 < n)
        return false;
    v = read_be(p + *pos + 1, n);
    if (b >= 0xd0 && (v >> (8 * n - 1)) & 1) /* signed and negative */
        return false;
    *ret_v = v;
    *pos += 1 + n;
    return true;
}

int64_t proto_peek_id(const uint8_t *p, size_t len)
{
    size_t pos = 1;
    uint64_t n, type, id;

    if (len == 0)
        return -1;
    if (p[0] >= 0x90 && p[0] <= 0x9f)
        n = p[0] & 0x0f;
    else if ((p[0] == 0xdc && len >= 3) || (p[0] == 0xdd && len >= 5)) {
        n = read_be(p + 1, p[0] == 0xdc ? 2 : 4);
        pos += p[0] == 0xdc ? 2 : 4;
    } else
        return -1;
    if (n < 2 || !read_uint(p, len, &pos, &type) || type > PROTO_MSG_RESPONSE ||
        !read_uint(p, len, &pos, &id) || id > UINT32_MAX)
        return -1;
    return (int64_t)id;
}
