/*
 * getters.c - reading values out of decoded messages, and the error code table.
 *
 * The getters are strict about types (an int is not a string, a negative number is not a
 * uint) but treat nil like an absent key, so that clients which spell "not given" as nil (Lua's
 * vim.NIL, Python's None) get the default rather than an error.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto-int.h"

const char *proto_error_code_name(int code)
{
    switch (code) {
    case PROTO_ERROR_PARSE:
        return "parse_error";
    case PROTO_ERROR_INVALID_REQUEST:
        return "invalid_request";
    case PROTO_ERROR_METHOD_NOT_FOUND:
        return "method_not_found";
    case PROTO_ERROR_INVALID_PARAMS:
        return "invalid_params";
    case PROTO_ERROR_INTERNAL:
        return "internal_error";
    case PROTO_ERROR_TOO_LARGE:
        return "too_large";
    case PROTO_ERROR_BUSY:
        return "busy";
    case PROTO_ERROR_SHUTTING_DOWN:
        return "shutting_down";
    case PROTO_ERROR_NOT_FOUND:
        return "not_found";
    case PROTO_ERROR_IO:
        return "io_error";
    case PROTO_ERROR_NO_MEMORY:
        return "no_memory";
    case PROTO_ERROR_CANCELLED:
        return "cancelled";
    case PROTO_ERROR_UNSUPPORTED:
        return "unsupported";
    case PROTO_ERROR_INVALID_INPUT:
        return "invalid_input";
    case PROTO_ERROR_MODEL_UNAVAILABLE:
        return "model_unavailable";
    default:
        return "unknown";
    }
}

int proto_error_code_from_errno(int neg_errno)
{
    switch (-neg_errno) {
    case ENOMEM:
        return PROTO_ERROR_NO_MEMORY;
    case ENOENT:
    case ESRCH:
        return PROTO_ERROR_NOT_FOUND;
    case EIO:
    case ENOSPC:
    case EDQUOT:
    case EROFS:
    case EACCES:
    case EPERM:
    case EMFILE:
    case ENFILE:
    case EFBIG:
        return PROTO_ERROR_IO;
    case EINVAL:
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
    case ELOOP:
    case EDOM:
    case ERANGE:
    case EILSEQ:
        return PROTO_ERROR_INVALID_INPUT;
    case ECANCELED:
        return PROTO_ERROR_CANCELLED;
    case EBUSY:
    case EAGAIN:
    case EALREADY:
    case ENOBUFS:
        return PROTO_ERROR_BUSY;
    case ESHUTDOWN:
        return PROTO_ERROR_SHUTTING_DOWN;
    case EMSGSIZE:
    case E2BIG:
    case EOVERFLOW:
        return PROTO_ERROR_TOO_LARGE;
    case ENOTSUP:
    case EPROTONOSUPPORT:
    case ENOSYS:
    case ENODEV:
        return PROTO_ERROR_UNSUPPORTED;
    case EBADMSG:
    case EPROTO:
        return PROTO_ERROR_INVALID_REQUEST;
    default:
        return PROTO_ERROR_INTERNAL;
    }
}

bool proto_msg_method_is(const struct proto_msg *msg, const char *method)
{
    size_t n = strlen(method);

    return msg->method && msg->method_len == n && memcmp(msg->method, method, n) == 0;
}

const msgpack_object *proto_map_get(const msgpack_object *map, const char *key)
{
    size_t n = strlen(key);

    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];

        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
            memcmp(kv->key.via.str.ptr, key, n) == 0)
            return &kv->val;
    }
    return NULL;
}

/* The value for key, or NULL when absent or nil. */
static const msgpack_object *get_value(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = proto_map_get(map, key);

    return v && v->type != MSGPACK_OBJECT_NIL ? v : NULL;
}

int proto_get_str(const msgpack_object *map, const char *key, const char **ret_s, size_t *ret_len)
{
    const msgpack_object *v = get_value(map, key);

    if (!v)
        return -ENOENT;
    if (v->type != MSGPACK_OBJECT_STR)
        return -EINVAL;
    *ret_s = v->via.str.ptr;
    *ret_len = v->via.str.size;
    return 0;
}

int proto_get_strdup(const msgpack_object *map, const char *key, char **ret_s)
{
    const char *s;
    size_t len;
    char *copy;
    int r;

    r = proto_get_str(map, key, &s, &len);
    if (r < 0)
        return r;
    if (memchr(s, '\0', len))
        return -EINVAL;
    copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    *ret_s = copy;
    return 0;
}

int proto_get_int(const msgpack_object *map, const char *key, int64_t *ret_v)
{
    const msgpack_object *v = get_value(map, key);

    if (!v)
        return -ENOENT;
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *ret_v = v->via.i64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
        *ret_v = (int64_t)v->via.u64;
    else
        return -EINVAL;
    return 0;
}

int proto_get_uint(const msgpack_object *map, const char *key, uint64_t *ret_v)
{
    const msgpack_object *v = get_value(map, key);

    if (!v)
        return -ENOENT;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -EINVAL;
    *ret_v = v->via.u64;
    return 0;
}

int proto_get_double(const msgpack_object *map, const char *key, double *ret_v)
{
    const msgpack_object *v = get_value(map, key);

    if (!v)
        return -ENOENT;
    switch (v->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *ret_v = v->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *ret_v = (double)v->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *ret_v = (double)v->via.i64;
        return 0;
    default:
        return -EINVAL;
    }
}

int proto_get_bool(const msgpack_object *map, const char *key, bool *ret_v)
{
    const msgpack_object *v = get_value(map, key);

    if (!v)
        return -ENOENT;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return -EINVAL;
    *ret_v = v->via.boolean;
    return 0;
}

int proto_msg_get_error(const struct proto_msg *msg, int64_t *ret_code, const char **ret_message,
                        size_t *ret_len)
{
    const char *s = "";
    size_t len = 0;
    int64_t code;
    int r;

    if (msg->type != PROTO_MSG_RESPONSE)
        return -EINVAL;
    if (msg->error.type == MSGPACK_OBJECT_NIL)
        return 0;
    if (proto_get_int(&msg->error, "code", &code) < 0)
        return -EINVAL;
    r = proto_get_str(&msg->error, "message", &s, &len);
    if (r == -EINVAL)
        return r;
    *ret_code = code;
    *ret_message = s;
    *ret_len = len;
    return 1;
}
