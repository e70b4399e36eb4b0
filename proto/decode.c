/*
 * decode.c - payload decoding into a per-message arena, message shape checks, and the
 * incremental frame decoder.
 *
 * A message lives in one msgpack_zone sized from the pre-scan: the zone holds the message
 * struct, a copy of the payload (msgpack_unpack() points str/bin/ext objects into its input)
 * and the object arrays.  proto_msg_free() frees the zone, and with it everything.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "proto-int.h"

/* The arena header in front of each message; proto_msg_free() finds it from the msg. */
struct proto_msg_box {
    msgpack_zone *zone;
    struct proto_msg msg;
};

struct proto_msg *proto_msg_free(struct proto_msg *msg)
{
    struct proto_msg_box *box;

    if (!msg)
        return NULL;
    box = (struct proto_msg_box *)((char *)msg - offsetof(struct proto_msg_box, msg));
    msgpack_zone_free(box->zone);
    return NULL;
}

static bool is_u32(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= UINT32_MAX;
}

/* Checks the msgpack-RPC envelope and fills in m; the objects stay in the zone. */
static int parse_shape(const msgpack_object *o, struct proto_msg *m, struct proto_decode_error *err)
{
    const msgpack_object *a, *params;
    uint32_t n, want;

    if (o->type != MSGPACK_OBJECT_ARRAY) {
        proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST, "message is not an array");
        return -EBADMSG;
    }
    a = o->via.array.ptr;
    n = o->via.array.size;
    if (n < 1 || a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > 2) {
        proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST,
                               "message type (first element) must be 0, 1 or 2");
        return -EBADMSG;
    }
    *m = (struct proto_msg){.type = (enum proto_msg_type)a[0].via.u64};
    want = m->type == PROTO_MSG_NOTIFICATION ? 3 : 4;
    if (n != want) {
        proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST,
                               "message of type %d must have %u elements, not %u", (int)m->type,
                               want, n);
        return -EBADMSG;
    }
    if (m->type != PROTO_MSG_NOTIFICATION) {
        if (!is_u32(&a[1])) {
            proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST,
                                   "id must be an integer in [0, 2^32)");
            return -EBADMSG;
        }
        m->id = (uint32_t)a[1].via.u64;
    }

    if (m->type == PROTO_MSG_RESPONSE) {
        if (a[2].type != MSGPACK_OBJECT_NIL && a[2].type != MSGPACK_OBJECT_MAP) {
            proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST,
                                   "response error must be nil or a map");
            return -EBADMSG;
        }
        m->error = a[2];
        m->result = a[3];
        return 0;
    }

    a += m->type == PROTO_MSG_REQUEST ? 2 : 1;
    if (a[0].type != MSGPACK_OBJECT_STR) {
        proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST, "method must be a string");
        return -EBADMSG;
    }
    m->method = a[0].via.str.ptr;
    m->method_len = a[0].via.str.size;
    params = &a[1];
    if (params->type == MSGPACK_OBJECT_MAP || params->type == MSGPACK_OBJECT_NIL)
        m->params = *params;
    else if (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 0)
        m->params = (msgpack_object){.type = MSGPACK_OBJECT_NIL};
    else {
        proto_decode_error_set(err, PROTO_ERROR_INVALID_REQUEST,
                               "params must be a map, nil or an empty array");
        return -EBADMSG;
    }
    return 0;
}

int proto_decode_payload_err(const void *payload, size_t len, const struct proto_limits *limits,
                             struct proto_msg **ret_msg, int64_t *ret_id,
                             struct proto_decode_error *err)
{
    struct proto_limits lim;
    struct proto_msg_box *box;
    msgpack_zone *zone;
    msgpack_object obj;
    size_t zone_bytes, chunk, off = 0;
    int64_t id = -1;
    char *copy;
    int r;

    proto_limits_normalize(limits, &lim);
    if (len > lim.max_frame) {
        proto_decode_error_set(err, PROTO_ERROR_TOO_LARGE,
                               "payload of %zu bytes over the limit of %" PRIu32, len,
                               lim.max_frame);
        r = -EMSGSIZE;
        goto out_fail;
    }
    id = proto_peek_id(payload, len);
    r = proto_scan(payload, len, &lim, &zone_bytes, err);
    if (r < 0)
        goto out_fail;

    /* One chunk for everything: the box, the payload copy, the objects, alignment slack. */
    chunk = sizeof(*box) + len + zone_bytes + 64;
    zone = msgpack_zone_new(chunk);
    if (!zone)
        goto out_nomem;
    box = msgpack_zone_malloc(zone, sizeof(*box));
    copy = box ? msgpack_zone_malloc_no_align(zone, len) : NULL;
    if (!copy)
        goto out_free_zone;
    memcpy(copy, payload, len);

    switch (msgpack_unpack(copy, len, &off, zone, &obj)) {
    case MSGPACK_UNPACK_SUCCESS:
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        goto out_free_zone;
    default:
        /* The pre-scan accepted what msgpack-c refuses: keep the two in step if this shows. */
        proto_decode_error_set(err, PROTO_ERROR_PARSE, "msgpack-c rejected the payload");
        msgpack_zone_free(zone);
        r = -EBADMSG;
        goto out_fail;
    }
    r = parse_shape(&obj, &box->msg, err);
    if (r < 0) {
        msgpack_zone_free(zone);
        goto out_fail;
    }
    box->zone = zone;
    box->msg.frame_size = len;
    *ret_msg = &box->msg;
    return 1;

out_free_zone:
    msgpack_zone_free(zone);
out_nomem:
    proto_decode_error_set(err, PROTO_ERROR_NO_MEMORY, "out of memory decoding %zu bytes", len);
    r = -ENOMEM;
out_fail:
    if (ret_id)
        *ret_id = r == -EMSGSIZE ? -1 : id;
    return r;
}

int proto_decode_payload(const void *payload, size_t len, const struct proto_limits *limits,
                         struct proto_msg **ret_msg, int64_t *ret_id)
{
    return proto_decode_payload_err(payload, len, limits, ret_msg, ret_id, NULL);
}

/*
 * The decoder's buffer: buf[start..end) is unconsumed.  It is compacted only when an append
 * does not fit, so feeding byte by byte costs amortised O(1) per byte, and it is freed when it
 * empties after holding a large frame, so an idle connection keeps little memory.
 */
#define DECODER_KEEP_BYTES (64u * 1024)

struct proto_decoder {
    struct proto_limits lim;
    uint8_t *buf;
    size_t start, end, cap;
    struct proto_decode_error err;
};

struct proto_decoder *proto_decoder_new(const struct proto_limits *limits)
{
    struct proto_decoder *d = calloc(1, sizeof(*d));

    if (!d)
        return NULL;
    proto_limits_normalize(limits, &d->lim);
    return d;
}

struct proto_decoder *proto_decoder_free(struct proto_decoder *d)
{
    if (!d)
        return NULL;
    free(d->buf);
    free(d);
    return NULL;
}

size_t proto_decoder_pending(const struct proto_decoder *d)
{
    return d->end - d->start;
}

static uint32_t pending_frame_len(const struct proto_decoder *d)
{
    const uint8_t *h = d->buf + d->start;

    return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

static bool framing_lost(const struct proto_decoder *d)
{
    return proto_decoder_pending(d) >= PROTO_FRAME_HEADER_SIZE &&
           pending_frame_len(d) > d->lim.max_frame;
}

int proto_decoder_feed(struct proto_decoder *d, const void *buf, size_t len)
{
    size_t need;

    if (framing_lost(d))
        return -EMSGSIZE;
    if (len == 0)
        return 0;
    if (d->start == d->end)
        d->start = d->end = 0;
    if (d->cap - d->end < len && d->start > 0) {
        memmove(d->buf, d->buf + d->start, d->end - d->start);
        d->end -= d->start;
        d->start = 0;
    }
    if (!size_add_ok(d->end, len, &need))
        return -ENOMEM;
    if (need > d->cap) {
        size_t ncap = MAX(d->cap, (size_t)4096);
        uint8_t *n;

        while (ncap < need)
            ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
        n = realloc(d->buf, ncap);
        if (!n)
            return -ENOMEM;
        d->buf = n;
        d->cap = ncap;
    }
    memcpy(d->buf + d->end, buf, len);
    d->end += len;
    return framing_lost(d) ? -EMSGSIZE : 0;
}

int proto_decoder_next(struct proto_decoder *d, struct proto_msg **ret_msg, int64_t *ret_id)
{
    uint32_t n;
    int r;

    d->err.code = 0;
    d->err.reason[0] = '\0';
    if (proto_decoder_pending(d) < PROTO_FRAME_HEADER_SIZE)
        return 0;
    n = pending_frame_len(d);
    if (n > d->lim.max_frame) {
        proto_decode_error_set(&d->err, PROTO_ERROR_TOO_LARGE,
                               "frame of %" PRIu32 " bytes over the limit of %" PRIu32, n,
                               d->lim.max_frame);
        if (ret_id)
            *ret_id = -1;
        return -EMSGSIZE;
    }
    if (proto_decoder_pending(d) - PROTO_FRAME_HEADER_SIZE < n)
        return 0;

    r = proto_decode_payload_err(d->buf + d->start + PROTO_FRAME_HEADER_SIZE, n, &d->lim, ret_msg,
                                 ret_id, &d->err);
    d->start += PROTO_FRAME_HEADER_SIZE + (size_t)n;
    if (d->start == d->end) {
        d->start = d->end = 0;
        if (d->cap > DECODER_KEEP_BYTES) {
            free(d->buf);
            d->buf = NULL;
            d->cap = 0;
        }
    }
    return r;
}

const char *proto_decoder_last_error(const struct proto_decoder *d, int *ret_code)
{
    if (ret_code)
        *ret_code = d->err.code;
    return d->err.reason;
}
