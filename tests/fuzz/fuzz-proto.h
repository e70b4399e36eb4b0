/*
 * fuzz-proto.h - the body of the proto fuzz target, shared by the libFuzzer binary
 * (fuzz-proto.c, clang only) and the corpus replay test (replay-proto.c, any compiler).
 *
 * It is a header with a static function rather than a .c file so that the replay test stays a
 * single source in tests/meson.build's table.  Each input is used three ways, under a default
 * and a tight set of limits:
 *   1. as one payload, through proto_decode_payload();
 *   2. as that payload wrapped in a frame, fed to a decoder in irregular pieces, which must give
 *      the same answer as 1 (the streaming path and the one-shot path agree);
 *   3. as a raw byte stream of frames, fed in irregular pieces and drained after each piece.
 * Every decoded message is re-encoded with the writer, decoded again and re-encoded again: the
 * two encodings must be byte-identical (canonical msgpack is a fixed point), and a re-encoding
 * is never larger than the original, so it must pass the same limits.  Violations abort().
 */
#ifndef COARCH_FUZZ_PROTO_H
#define COARCH_FUZZ_PROTO_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz-proto: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Deterministic piece sizes, so a crashing input reproduces exactly. */
static uint32_t fuzz_next_piece(uint32_t *seed, size_t left)
{
    uint32_t n;

    *seed = *seed * 1103515245u + 12345u;
    n = (*seed >> 16) % 97;
    n = n < 60 ? 1 + n % 7 : n; /* mostly tiny pieces, sometimes larger ones */
    return left < n ? (uint32_t)left : n;
}

/* Packs m as one frame into w. */
static int fuzz_encode(struct proto_writer *w, const struct proto_msg *m)
{
    msgpack_packer *pk = &w->pk;
    int r;

    r = proto_writer_begin(w);
    FUZZ_CHECK(r == 0);
    switch (m->type) {
    case PROTO_MSG_REQUEST:
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint8(pk, 0);
        msgpack_pack_uint32(pk, m->id);
        proto_pack_strn(pk, m->method, m->method_len);
        msgpack_pack_object(pk, m->params);
        break;
    case PROTO_MSG_RESPONSE:
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint8(pk, 1);
        msgpack_pack_uint32(pk, m->id);
        msgpack_pack_object(pk, m->error);
        msgpack_pack_object(pk, m->result);
        break;
    case PROTO_MSG_NOTIFICATION:
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint8(pk, 2);
        proto_pack_strn(pk, m->method, m->method_len);
        msgpack_pack_object(pk, m->params);
        break;
    }
    return proto_writer_end(w);
}

/* A getter's result: 0, or -ENOENT/-EINVAL and nothing else. */
#define FUZZ_GETTER_OK(r) ((r) == 0 || (r) == -ENOENT || (r) == -EINVAL)

/* Exercises the getters on whatever the message holds; they must never fail oddly. */
static void fuzz_touch(const struct proto_msg *m)
{
    static const char *const keys[] = {"path", "query", "k", "code", "message", "a", ""};
    const msgpack_object *maps[] = {&m->params, &m->error, &m->result};
    int64_t code;
    const char *s;
    size_t len;

    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            int64_t iv;
            uint64_t uv;
            double dv;
            bool bv;
            char *dup = NULL;
            int r;

            r = proto_get_str(maps[i], keys[k], &s, &len);
            FUZZ_CHECK(FUZZ_GETTER_OK(r));
            r = proto_get_int(maps[i], keys[k], &iv);
            FUZZ_CHECK(FUZZ_GETTER_OK(r));
            r = proto_get_uint(maps[i], keys[k], &uv);
            FUZZ_CHECK(FUZZ_GETTER_OK(r));
            r = proto_get_double(maps[i], keys[k], &dv);
            FUZZ_CHECK(FUZZ_GETTER_OK(r));
            r = proto_get_bool(maps[i], keys[k], &bv);
            FUZZ_CHECK(FUZZ_GETTER_OK(r));
            r = proto_get_strdup(maps[i], keys[k], &dup);
            FUZZ_CHECK(FUZZ_GETTER_OK(r));
            FUZZ_CHECK((r == 0) == (dup != NULL));
            free(dup);
        }
    }
    if (m->type == PROTO_MSG_RESPONSE) {
        int r = proto_msg_get_error(m, &code, &s, &len);

        FUZZ_CHECK(r == 0 || r == 1 || r == -EINVAL);
    } else
        FUZZ_CHECK(proto_msg_method_is(m, "ping") ==
                   (m->method_len == 4 && !memcmp(m->method, "ping", 4)));
}

/*
 * Re-encodes m, decodes that, re-encodes again, and checks the fixed point.  Returns the first
 * encoding's payload in *ret_enc (malloc'd) so callers can compare messages across paths.
 */
static void fuzz_roundtrip(const struct proto_msg *m, const struct proto_limits *lim,
                           char **ret_enc, size_t *ret_len)
{
    struct proto_writer w1, w2;
    struct proto_msg *m2 = NULL;
    int64_t id = -2;
    int r;

    fuzz_touch(m);
    proto_writer_init(&w1, lim->max_frame);
    proto_writer_init(&w2, lim->max_frame);
    r = fuzz_encode(&w1, m);
    FUZZ_CHECK(r == 0);
    FUZZ_CHECK(w1.sbuf.size - 4 <= m->frame_size);
    r = proto_decode_payload(w1.sbuf.data + 4, w1.sbuf.size - 4, lim, &m2, &id);
    FUZZ_CHECK(r == 1);
    FUZZ_CHECK(m2->type == m->type && m2->id == m->id && m2->method_len == m->method_len);
    r = fuzz_encode(&w2, m2);
    FUZZ_CHECK(r == 0);
    FUZZ_CHECK(w1.sbuf.size == w2.sbuf.size);
    FUZZ_CHECK(memcmp(w1.sbuf.data, w2.sbuf.data, w1.sbuf.size) == 0);
    proto_msg_free(m2);
    if (ret_enc) {
        *ret_len = w1.sbuf.size - 4;
        *ret_enc = malloc(*ret_len);
        FUZZ_CHECK(*ret_enc);
        memcpy(*ret_enc, w1.sbuf.data + 4, *ret_len);
    }
    proto_writer_release(&w1);
    proto_writer_release(&w2);
}

static void fuzz_one_limits(const uint8_t *data, size_t size, const struct proto_limits *lim)
{
    struct proto_decoder *d;
    struct proto_msg *m = NULL, *m2 = NULL;
    uint8_t header[4] = {(uint8_t)(size >> 24), (uint8_t)(size >> 16), (uint8_t)(size >> 8),
                         (uint8_t)size};
    uint32_t seed = (uint32_t)size * 2654435761u ^ (size ? data[0] : 0);
    char *enc1 = NULL, *enc2 = NULL;
    size_t len1 = 0, len2 = 0, fed = 0;
    int64_t id1 = -2, id2 = -2;
    int r1, r2 = 0, feed_r = 0;

    /* 1. one payload */
    r1 = proto_decode_payload(data, size, lim, &m, &id1);
    FUZZ_CHECK(r1 == 1 || r1 == -EBADMSG || r1 == -EMSGSIZE);
    FUZZ_CHECK(r1 == 1 || (id1 >= -1 && id1 <= UINT32_MAX));
    if (r1 == 1) {
        FUZZ_CHECK(m->frame_size == size);
        fuzz_roundtrip(m, lim, &enc1, &len1);
        m = proto_msg_free(m);
    }

    /* 2. the same payload framed, fed in pieces: the decoder must agree with 1 */
    if (size <= UINT32_MAX) {
        d = proto_decoder_new(lim);
        FUZZ_CHECK(d);
        feed_r = proto_decoder_feed(d, header, 4);
        for (size_t left = size; feed_r == 0 && left > 0;) {
            uint32_t n = fuzz_next_piece(&seed, left);

            r2 = proto_decoder_next(d, &m2, &id2);
            FUZZ_CHECK(r2 == 0 || r2 == -EMSGSIZE);
            feed_r = proto_decoder_feed(d, data + fed, n);
            fed += n;
            left -= n;
        }
        FUZZ_CHECK(feed_r == 0 || feed_r == -EMSGSIZE);
        r2 = proto_decoder_next(d, &m2, &id2);
        FUZZ_CHECK(r2 == r1);
        if (r1 == -EBADMSG)
            FUZZ_CHECK(id2 == id1);
        if (r2 == 1) {
            fuzz_roundtrip(m2, lim, &enc2, &len2);
            FUZZ_CHECK(len1 == len2 && memcmp(enc1, enc2, len1) == 0);
            m2 = proto_msg_free(m2);
            FUZZ_CHECK(proto_decoder_pending(d) == 0);
            FUZZ_CHECK(proto_decoder_next(d, &m2, &id2) == 0);
        }
        proto_decoder_free(d);
    }
    free(enc1);
    free(enc2);

    /* 3. the input as a stream of frames */
    d = proto_decoder_new(lim);
    FUZZ_CHECK(d);
    fed = 0;
    while (fed < size) {
        uint32_t n = fuzz_next_piece(&seed, size - fed);
        int r;

        if (proto_decoder_feed(d, data + fed, n) == -EMSGSIZE)
            break;
        fed += n;
        FUZZ_CHECK(proto_decoder_pending(d) <= fed);
        while ((r = proto_decoder_next(d, &m2, &id2)) != 0) {
            FUZZ_CHECK(r == 1 || r == -EBADMSG || r == -EMSGSIZE);
            if (r == -EMSGSIZE)
                break;
            if (r == 1) {
                fuzz_roundtrip(m2, lim, NULL, NULL);
                m2 = proto_msg_free(m2);
            }
        }
        if (r == -EMSGSIZE)
            break;
    }
    proto_decoder_free(d);
}

/* Runs one input; always returns 0 (libFuzzer's convention). */
static int fuzz_proto_one(const uint8_t *data, size_t size)
{
    struct proto_limits def, tight = {
                                 .max_frame = 512,
                                 .max_depth = 5,
                                 .max_elements = 8,
                                 .max_str = 24,
                             };

    proto_limits_default(&def);
    def.max_frame = 1 << 20; /* keeps inputs with a huge random header quick */
    fuzz_one_limits(data, size, &def);
    fuzz_one_limits(data, size, &tight);
    return 0;
}

#endif
