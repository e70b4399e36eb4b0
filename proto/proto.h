/*
 * proto.h - coarch's wire format, shared by coarchd and every client.
 *
 * A frame is a 4-byte big-endian length followed by exactly that many bytes holding one msgpack
 * value, a msgpack-RPC message:
 *
 *     [0, id, method, params]   request       (params: a map of named parameters; nil or an
 *                                              empty array means "no parameters")
 *     [1, id, error, result]    response      (error: nil, or a map {code: int, message: str})
 *     [2, method, params]       notification  (params: a map)
 *
 * PROTOCOL.md beside this file is the normative spec: methods, parameters, results, error codes,
 * limits and versioning.
 *
 * This module depends on libc and msgpack-c only: no libuv, no LMDB.  It is pure: the decoder is
 * fed bytes and hands back complete messages, so the daemon and clients own all I/O.
 *
 * Limits (frame length, nesting depth, element counts, str/bin/ext length) are checked by a
 * pre-scan of the raw bytes *before* anything is allocated for them.  A decoded message costs
 * its payload plus at most 24 bytes per msgpack value (msgpack_object), in one arena.
 *
 * Threading: a decoder or writer is used by one thread at a time; nothing here is global.
 */
#ifndef COARCH_PROTO_H
#define COARCH_PROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1 /* bumped on incompatible wire changes; see PROTOCOL.md */
#define PROTO_FRAME_HEADER_SIZE 4
#define PROTO_DEPTH_MAX 32 /* msgpack-c's unpack stack; a larger max_depth is clamped to it */

enum proto_msg_type {
    PROTO_MSG_REQUEST = 0,
    PROTO_MSG_RESPONSE = 1,
    PROTO_MSG_NOTIFICATION = 2,
};

/* Stable error codes carried in response errors; PROTOCOL.md lists their meaning. */
enum proto_error_code {
    PROTO_ERROR_PARSE = -32700,            /* frame did not hold exactly one msgpack value */
    PROTO_ERROR_INVALID_REQUEST = -32600,  /* msgpack, but not a well-formed message */
    PROTO_ERROR_METHOD_NOT_FOUND = -32601, /* unknown method */
    PROTO_ERROR_INVALID_PARAMS = -32602,   /* missing/ill-typed parameter */
    PROTO_ERROR_INTERNAL = -32603,         /* bug or unexpected failure in coarchd */
    PROTO_ERROR_TOO_LARGE = 1,             /* frame or element over a limit */
    PROTO_ERROR_BUSY = 2,                  /* too many pending requests on this connection */
    PROTO_ERROR_SHUTTING_DOWN = 3,         /* daemon is stopping */
    PROTO_ERROR_NOT_FOUND = 4,             /* repo / job / object does not exist */
    PROTO_ERROR_IO = 5,                    /* filesystem or storage failure */
    PROTO_ERROR_NO_MEMORY = 6,             /* out of memory or over the memory limit */
    PROTO_ERROR_CANCELLED = 7,             /* the job or request was cancelled */
    PROTO_ERROR_UNSUPPORTED = 8,           /* protocol version / feature not supported */
    PROTO_ERROR_INVALID_INPUT = 9,         /* a path or value the caller gave is unusable */
    PROTO_ERROR_MODEL_UNAVAILABLE = 10,    /* the embedding model is missing or cannot load */
};

/* Returns the stable lower-case name of a code ("parse_error", "busy", ...) or "unknown". */
const char *proto_error_code_name(int code);
/* Maps a negative errno from a coarch module onto the closest code (INTERNAL when none fits). */
int proto_error_code_from_errno(int neg_errno);

/* A zero field means "the default"; max_depth is clamped to PROTO_DEPTH_MAX. */
struct proto_limits {
    uint32_t max_frame;    /* bytes after the 4-byte header; default 16 MiB */
    uint32_t max_depth;    /* nesting of arrays/maps, the message array being 1; default 32 */
    uint32_t max_elements; /* items in one array or pairs in one map; default 1,000,000 */
    uint32_t max_str;      /* bytes in one str/bin/ext; default max_frame */
};

void proto_limits_default(struct proto_limits *ret_limits);

/*
 * One decoded message.  Every msgpack_object inside (method, params, error, result) points into
 * one arena owned by the message; free the pointer you were given with proto_msg_free().
 */
struct proto_msg {
    enum proto_msg_type type;
    uint32_t id;        /* request and response only */
    const char *method; /* request and notification; NOT NUL-terminated, see method_len */
    uint32_t method_len;
    msgpack_object params; /* request/notification: MAP or NIL (an empty array becomes NIL) */
    msgpack_object error;  /* response: NIL on success, else a MAP */
    msgpack_object result; /* response */
    size_t frame_size;     /* payload size of the frame this came from */
};

struct proto_msg *proto_msg_free(struct proto_msg *msg); /* accepts NULL, returns NULL */
bool proto_msg_method_is(const struct proto_msg *msg, const char *method);
/* A response's error: 0 if none, 1 with the code and borrowed message (maybe "") set, -EINVAL
 * if not a response or the error map has no integer "code". */
int proto_msg_get_error(const struct proto_msg *msg, int64_t *ret_code, const char **ret_message,
                        size_t *ret_len);

/* The incremental decoder.  It buffers bytes fed and not yet taken: drain proto_decoder_next()
 * after every feed and that is at most one partial frame plus one read. */
struct proto_decoder;

struct proto_decoder *proto_decoder_new(const struct proto_limits *limits); /* NULL = defaults */
struct proto_decoder *proto_decoder_free(struct proto_decoder *d);          /* accepts NULL */

/*
 * Append bytes read from the peer.  Returns 0, -ENOMEM, or -EMSGSIZE when the pending frame
 * header already announced a frame larger than max_frame (the connection must be closed:
 * framing is lost).
 */
int proto_decoder_feed(struct proto_decoder *d, const void *buf, size_t len);

/*
 * Take the next complete message.  Returns:
 *   1  and *ret_msg set (caller frees with proto_msg_free())
 *   0  need more bytes
 *  -EMSGSIZE  frame header announces more than max_frame: framing is lost, close the connection
 *  -EBADMSG   the frame was complete but its payload is not a valid message (bad msgpack,
 *             over a nesting/element/string limit, trailing bytes, wrong shape).
 *  -ENOMEM
 * After -EBADMSG and -ENOMEM the frame is consumed, so the caller may answer with an error and
 * keep reading; *ret_id (may be NULL) is then the request/response id when one could be
 * recovered from the bytes, else -1.
 */
int proto_decoder_next(struct proto_decoder *d, struct proto_msg **ret_msg, int64_t *ret_id);

/* Why the last proto_decoder_next() failed: a reason valid until the next call on d, and
 * *ret_code (may be NULL): PROTO_ERROR_PARSE, _INVALID_REQUEST, _TOO_LARGE or _NO_MEMORY.
 * "" and 0 when it did not fail. */
const char *proto_decoder_last_error(const struct proto_decoder *d, int *ret_code);

/* Bytes buffered but not yet returned as messages. */
size_t proto_decoder_pending(const struct proto_decoder *d);

/*
 * Validate a complete payload (without the frame header) against the limits (NULL = defaults)
 * and decode it.  This is what proto_decoder_next() uses; exposed for the fuzz target and tests.
 * Returns 1, -EBADMSG or -ENOMEM as proto_decoder_next(), or -EMSGSIZE when len > max_frame.
 */
int proto_decode_payload(const void *payload, size_t len, const struct proto_limits *limits,
                         struct proto_msg **ret_msg, int64_t *ret_id);

/*
 * The writer builds one or more frames into a growable buffer.  Between proto_writer_begin()
 * and proto_writer_end() the caller packs exactly one message with the helpers below or with
 * msgpack_pack_*() on &w->pk.  The packer points at w: do not move an initialised writer.
 *
 *     proto_writer_begin(&w);
 *     proto_pack_request(&w.pk, id, "search", 3);    // then 3 key/value pairs:
 *     proto_pack_str(&w.pk, "query"); proto_pack_str(&w.pk, q);
 *     ...
 *     r = proto_writer_end(&w);                      // patches the length header
 *
 * w.sbuf.data / w.sbuf.size hold the finished frames; proto_writer_reset() empties it.  A frame
 * growing past max_frame stops being buffered at once, so a huge result costs no memory.
 */
struct proto_writer {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    size_t frame_start; /* offset of the open frame's header; SIZE_MAX when none is open */
    uint32_t max_frame;
    int error; /* first failure while packing the open frame: -ENOMEM or -EMSGSIZE */
};

void proto_writer_init(struct proto_writer *w, uint32_t max_frame); /* 0 = default 16 MiB */
void proto_writer_release(struct proto_writer *w);
void proto_writer_reset(struct proto_writer *w); /* drops everything, frees a large buffer */
int proto_writer_begin(struct proto_writer *w);  /* 0, -ENOMEM, -EBUSY if a frame is open */
/* 0, or (the frame is dropped from the buffer) -EMSGSIZE, -ENOMEM, -EINVAL (none open/empty). */
int proto_writer_end(struct proto_writer *w);
/* Hands the finished frames to the caller (free() them) and empties w; NULL when empty. */
char *proto_writer_steal(struct proto_writer *w, size_t *ret_size);

/*
 * Message heads: each packs the envelope; the caller then packs what the comment says.  These
 * and the helpers below return 0 or -ENOMEM when the packer's write failed (with a writer,
 * proto_writer_end() reports the real cause).
 */
int proto_pack_request(msgpack_packer *pk, uint32_t id, const char *method, uint32_t n_params);
/*   ... then n_params key/value pairs of the params map. */
int proto_pack_response_ok(msgpack_packer *pk, uint32_t id);
/*   ... then exactly one value: the result. */
int proto_pack_response_error(msgpack_packer *pk, uint32_t id, int code, const char *message);
/*   complete; nothing follows. */
int proto_pack_notification(msgpack_packer *pk, const char *method, uint32_t n_params);
/*   ... then n_params key/value pairs. */

/* Small packing helpers. */
int proto_pack_str(msgpack_packer *pk, const char *s); /* NULL packs nil */
int proto_pack_strn(msgpack_packer *pk, const char *s, size_t len);
int proto_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
int proto_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value);
int proto_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t value);
int proto_pack_kv_double(msgpack_packer *pk, const char *key, double value);
int proto_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);

/*
 * Reading maps.  proto_map_get() returns the value for `key` in a MSGPACK_OBJECT_MAP (the first
 * if repeated), or NULL when absent or when `map` is not a map.  The typed getters return 0 on
 * success, -ENOENT when absent or nil (outputs untouched, so callers preset defaults), -EINVAL
 * when present with the wrong type or out of range.  Strings are borrowed, not NUL-terminated.
 */
const msgpack_object *proto_map_get(const msgpack_object *map, const char *key);
int proto_get_str(const msgpack_object *map, const char *key, const char **ret_s, size_t *ret_len);
/* proto_get_str() as a malloc'd NUL-terminated copy; -EINVAL if it holds a NUL, or -ENOMEM. */
int proto_get_strdup(const msgpack_object *map, const char *key, char **ret_s);
int proto_get_int(const msgpack_object *map, const char *key, int64_t *ret_v);
int proto_get_uint(const msgpack_object *map, const char *key, uint64_t *ret_v);
int proto_get_double(const msgpack_object *map, const char *key, double *ret_v); /* ints too */
int proto_get_bool(const msgpack_object *map, const char *key, bool *ret_v);

#endif
