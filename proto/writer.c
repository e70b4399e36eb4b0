/*
 * writer.c - framing on the way out, and the message/value packing helpers.
 *
 * The packer writes through writer_write() rather than straight into the sbuffer, so that the
 * size limit is enforced while packing (a result that outgrows max_frame stops costing memory
 * at once) and so that a failure in the middle of a message is remembered even when the caller
 * ignores msgpack_pack_*() return values; proto_writer_end() reports it and drops the frame.
 */
#include <errno.h>
#include <string.h>

#include "proto-int.h"

#define WRITER_KEEP_BYTES (64u * 1024)
#define NO_FRAME SIZE_MAX

static int writer_write(void *data, const char *buf, size_t len)
{
    struct proto_writer *w = data;
    size_t payload;

    if (w->frame_start == NO_FRAME || w->error < 0)
        return -1;
    payload = w->sbuf.size - w->frame_start - PROTO_FRAME_HEADER_SIZE;
    if (len > w->max_frame - payload) {
        w->error = -EMSGSIZE;
        return -1;
    }
    if (msgpack_sbuffer_write(&w->sbuf, buf, len) < 0) {
        w->error = -ENOMEM;
        return -1;
    }
    return 0;
}

void proto_writer_init(struct proto_writer *w, uint32_t max_frame)
{
    msgpack_sbuffer_init(&w->sbuf);
    msgpack_packer_init(&w->pk, w, writer_write);
    w->frame_start = NO_FRAME;
    w->max_frame = max_frame ? max_frame : PROTO_DEFAULT_MAX_FRAME;
    w->error = 0;
}

void proto_writer_release(struct proto_writer *w)
{
    msgpack_sbuffer_destroy(&w->sbuf);
    msgpack_sbuffer_init(&w->sbuf);
    w->frame_start = NO_FRAME;
    w->error = 0;
}

void proto_writer_reset(struct proto_writer *w)
{
    if (w->sbuf.alloc > WRITER_KEEP_BYTES)
        proto_writer_release(w);
    w->sbuf.size = 0;
    w->frame_start = NO_FRAME;
    w->error = 0;
}

int proto_writer_begin(struct proto_writer *w)
{
    static const char header[PROTO_FRAME_HEADER_SIZE];

    if (w->frame_start != NO_FRAME)
        return -EBUSY;
    if (msgpack_sbuffer_write(&w->sbuf, header, sizeof(header)) < 0)
        return -ENOMEM;
    w->frame_start = w->sbuf.size - sizeof(header);
    w->error = 0;
    return 0;
}

int proto_writer_end(struct proto_writer *w)
{
    size_t start = w->frame_start, payload;
    uint8_t *h;
    int r = w->error;

    if (start == NO_FRAME)
        return -EINVAL;
    w->frame_start = NO_FRAME;
    w->error = 0;
    payload = w->sbuf.size - start - PROTO_FRAME_HEADER_SIZE;
    if (r == 0 && payload == 0)
        r = -EINVAL;
    if (r == 0 && payload > w->max_frame) /* only if someone wrote to sbuf directly */
        r = -EMSGSIZE;
    if (r < 0) {
        w->sbuf.size = start;
        return r;
    }
    h = (uint8_t *)w->sbuf.data + start;
    h[0] = (uint8_t)(payload >> 24);
    h[1] = (uint8_t)(payload >> 16);
    h[2] = (uint8_t)(payload >> 8);
    h[3] = (uint8_t)payload;
    return 0;
}

char *proto_writer_steal(struct proto_writer *w, size_t *ret_size)
{
    size_t size = w->sbuf.size;

    if (size == 0 || w->frame_start != NO_FRAME)
        return NULL;
    *ret_size = size;
    return msgpack_sbuffer_release(&w->sbuf);
}

/* msgpack_pack_*() return 0 or -1; every helper folds a chain of them into 0 or -ENOMEM. */
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) < 0)                                                                               \
            return -ENOMEM;                                                                        \
    } while (0)

int proto_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    TRY(msgpack_pack_str(pk, len));
    TRY(msgpack_pack_str_body(pk, s, len));
    return 0;
}

int proto_pack_str(msgpack_packer *pk, const char *s)
{
    if (!s) {
        TRY(msgpack_pack_nil(pk));
        return 0;
    }
    return proto_pack_strn(pk, s, strlen(s));
}

int proto_pack_request(msgpack_packer *pk, uint32_t id, const char *method, uint32_t n_params)
{
    if (!method)
        return -EINVAL;
    TRY(msgpack_pack_array(pk, 4));
    TRY(msgpack_pack_uint8(pk, PROTO_MSG_REQUEST));
    TRY(msgpack_pack_uint32(pk, id));
    TRY(proto_pack_str(pk, method));
    TRY(msgpack_pack_map(pk, n_params));
    return 0;
}

int proto_pack_response_ok(msgpack_packer *pk, uint32_t id)
{
    TRY(msgpack_pack_array(pk, 4));
    TRY(msgpack_pack_uint8(pk, PROTO_MSG_RESPONSE));
    TRY(msgpack_pack_uint32(pk, id));
    TRY(msgpack_pack_nil(pk));
    return 0;
}

int proto_pack_response_error(msgpack_packer *pk, uint32_t id, int code, const char *message)
{
    TRY(msgpack_pack_array(pk, 4));
    TRY(msgpack_pack_uint8(pk, PROTO_MSG_RESPONSE));
    TRY(msgpack_pack_uint32(pk, id));
    TRY(msgpack_pack_map(pk, 2));
    TRY(proto_pack_kv_int(pk, "code", code));
    TRY(proto_pack_kv_str(pk, "message", message ? message : proto_error_code_name(code)));
    TRY(msgpack_pack_nil(pk));
    return 0;
}

int proto_pack_notification(msgpack_packer *pk, const char *method, uint32_t n_params)
{
    if (!method)
        return -EINVAL;
    TRY(msgpack_pack_array(pk, 3));
    TRY(msgpack_pack_uint8(pk, PROTO_MSG_NOTIFICATION));
    TRY(proto_pack_str(pk, method));
    TRY(msgpack_pack_map(pk, n_params));
    return 0;
}

int proto_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    TRY(proto_pack_str(pk, key));
    TRY(proto_pack_str(pk, value));
    return 0;
}

int proto_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value)
{
    TRY(proto_pack_str(pk, key));
    TRY(msgpack_pack_int64(pk, value));
    return 0;
}

int proto_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t value)
{
    TRY(proto_pack_str(pk, key));
    TRY(msgpack_pack_uint64(pk, value));
    return 0;
}

int proto_pack_kv_double(msgpack_packer *pk, const char *key, double value)
{
    TRY(proto_pack_str(pk, key));
    TRY(msgpack_pack_double(pk, value));
    return 0;
}

int proto_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    TRY(proto_pack_str(pk, key));
    TRY(value ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
    return 0;
}
