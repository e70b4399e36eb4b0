/*
 * test-proto.c - the wire codec: round trips of every message kind, framing fed in arbitrary
 * pieces, every limit at its boundary, malformed input of every kind, getters and the writer.
 */
#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "test.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- helpers ------------------------------------------------------------------------------ */

/* Appends a frame header for len bytes and the payload to out. */
static void frame_append(msgpack_sbuffer *out, const void *payload, size_t len)
{
    uint8_t h[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};

    msgpack_sbuffer_write(out, (const char *)h, 4);
    msgpack_sbuffer_write(out, payload, len);
}

/* The payload length in the frame header at p. */
static size_t frame_len(const char *p)
{
    const uint8_t *h = (const uint8_t *)p;

    return (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
}

/*
 * Decodes one payload through a fresh decoder (framed, fed in one piece) and also through
 * proto_decode_payload(), checking both agree.  Returns the decoder's result; *ret_code gets
 * its last error code.
 */
static int decode_one(const void *payload, size_t len, const struct proto_limits *lim,
                      struct proto_msg **ret_msg, int64_t *ret_id, int *ret_code)
{
    msgpack_sbuffer f;
    struct proto_decoder *d = proto_decoder_new(lim);
    struct proto_msg *m = NULL, *m2 = NULL;
    int64_t id = -7, id2 = -7;
    int r, r2, code;

    ASSERT_TRUE(d);
    msgpack_sbuffer_init(&f);
    frame_append(&f, payload, len);
    r = proto_decoder_feed(d, f.data, f.size);
    if (r == 0 || r == -EMSGSIZE) /* next() reports the oversized frame too, with its code */
        r = proto_decoder_next(d, &m, &id);
    proto_decoder_last_error(d, &code);
    if (r != -EMSGSIZE)
        ASSERT_EQ(proto_decoder_pending(d), 0);
    proto_decoder_free(d);
    msgpack_sbuffer_destroy(&f);

    r2 = proto_decode_payload(payload, len, lim, &m2, &id2);
    ASSERT_EQ(r2, r);
    if (r < 0 && r != -EMSGSIZE)
        ASSERT_EQ(id2, id);
    if (r == 1) {
        ASSERT_EQ(m2->type, m->type);
        ASSERT_EQ(m2->id, m->id);
        ASSERT_EQ(code, 0);
    }
    proto_msg_free(m2);
    if (ret_code)
        *ret_code = code;
    if (ret_id)
        *ret_id = id;
    if (ret_msg)
        *ret_msg = m;
    else
        proto_msg_free(m);
    return r;
}

/* Packs [0, 7, "m", {"s": <str of len bytes>}] into sb (reset first). */
static void pack_request_with_str(msgpack_sbuffer *sb, size_t len)
{
    msgpack_packer pk;
    char *s = malloc(len + 1);

    memset(s, 'x', len);
    sb->size = 0;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    ASSERT_OK(proto_pack_request(&pk, 7, "m", 1));
    ASSERT_OK(proto_pack_str(&pk, "s"));
    ASSERT_OK(proto_pack_strn(&pk, s, len));
    free(s);
}

/* Packs [0, 7, "m", {"a": <depth-3 nested arrays, innermost holding `inner`>}]: depth `depth`. */
static void pack_request_nested(msgpack_sbuffer *sb, unsigned depth, bool empty_inner)
{
    msgpack_packer pk;

    sb->size = 0;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    ASSERT_OK(proto_pack_request(&pk, 7, "m", 1)); /* message array 1, params map 2 */
    ASSERT_OK(proto_pack_str(&pk, "a"));
    for (unsigned i = 3; i <= depth; i++)
        msgpack_pack_array(&pk, i == depth && empty_inner ? 0 : 1);
    if (!empty_inner)
        msgpack_pack_nil(&pk);
}

/* Packs [0, 7, "m", {"a": <array of n nils>}] or with a map of n pairs when as_map. */
static void pack_request_elements(msgpack_sbuffer *sb, uint32_t n, bool as_map)
{
    msgpack_packer pk;

    sb->size = 0;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    ASSERT_OK(proto_pack_request(&pk, 7, "m", 1));
    ASSERT_OK(proto_pack_str(&pk, "a"));
    if (as_map) {
        msgpack_pack_map(&pk, n);
        for (uint32_t i = 0; i < n; i++) {
            msgpack_pack_uint32(&pk, i);
            msgpack_pack_nil(&pk);
        }
    } else {
        msgpack_pack_array(&pk, n);
        for (uint32_t i = 0; i < n; i++)
            msgpack_pack_nil(&pk);
    }
}

/* ---- round trips ---------------------------------------------------------------------------- */

TEST(limits_default)
{
    struct proto_limits l;

    proto_limits_default(&l);
    ASSERT_EQ(l.max_frame, 16u * 1024 * 1024);
    ASSERT_EQ(l.max_depth, 32);
    ASSERT_EQ(l.max_elements, 1000000);
    ASSERT_EQ(l.max_str, l.max_frame);
}

TEST(roundtrip_request)
{
    struct proto_writer w;
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *m;
    const char *s;
    size_t len;
    int64_t i;
    uint64_t u;
    double f;
    bool b;

    proto_writer_init(&w, 0);
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_request(&w.pk, 4000000000u, "search", 6));
    ASSERT_OK(proto_pack_kv_str(&w.pk, "query", "parse a frame"));
    ASSERT_OK(proto_pack_kv_int(&w.pk, "delta", -5));
    ASSERT_OK(proto_pack_kv_uint(&w.pk, "k", 10));
    ASSERT_OK(proto_pack_kv_double(&w.pk, "min_score", 0.25));
    ASSERT_OK(proto_pack_kv_bool(&w.pk, "wait", true));
    ASSERT_OK(proto_pack_kv_str(&w.pk, "repo", NULL));
    ASSERT_OK(proto_writer_end(&w));

    ASSERT_OK(proto_decoder_feed(d, w.sbuf.data, w.sbuf.size));
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(m->type, PROTO_MSG_REQUEST);
    ASSERT_EQ(m->id, 4000000000u);
    ASSERT_TRUE(proto_msg_method_is(m, "search"));
    ASSERT_FALSE(proto_msg_method_is(m, "searc"));
    ASSERT_FALSE(proto_msg_method_is(m, "search2"));
    ASSERT_EQ(m->frame_size, w.sbuf.size - 4);
    ASSERT_EQ(m->params.type, MSGPACK_OBJECT_MAP);
    ASSERT_OK(proto_get_str(&m->params, "query", &s, &len));
    ASSERT_EQ(len, 13);
    ASSERT_TRUE(memcmp(s, "parse a frame", 13) == 0);
    ASSERT_OK(proto_get_int(&m->params, "delta", &i));
    ASSERT_EQ(i, -5);
    ASSERT_OK(proto_get_uint(&m->params, "k", &u));
    ASSERT_EQ(u, 10);
    ASSERT_OK(proto_get_double(&m->params, "min_score", &f));
    ASSERT_NEAR(f, 0.25, 0);
    ASSERT_OK(proto_get_bool(&m->params, "wait", &b));
    ASSERT_TRUE(b);
    ASSERT_EQ(proto_get_str(&m->params, "repo", &s, &len), -ENOENT); /* nil counts as absent */
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 0);
    proto_msg_free(m);
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(roundtrip_request_params_forms)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct proto_msg *m;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* params nil, [] and {} are all "no parameters"; [] is normalised to nil. */
    for (int form = 0; form < 3; form++) {
        sb.size = 0;
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint8(&pk, 0);
        msgpack_pack_uint8(&pk, 1);
        proto_pack_str(&pk, "ping");
        if (form == 0)
            msgpack_pack_nil(&pk);
        else if (form == 1)
            msgpack_pack_array(&pk, 0);
        else
            msgpack_pack_map(&pk, 0);
        ASSERT_EQ(decode_one(sb.data, sb.size, NULL, &m, NULL, NULL), 1);
        ASSERT_EQ(m->params.type, form == 2 ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_NIL);
        ASSERT_TRUE(proto_msg_method_is(m, "ping"));
        ASSERT_TRUE(proto_map_get(&m->params, "x") == NULL);
        proto_msg_free(m);
    }
    msgpack_sbuffer_destroy(&sb);
}

TEST(roundtrip_response_ok)
{
    struct proto_writer w;
    struct proto_msg *m;
    int64_t code = 99;
    const char *s = NULL;
    size_t len = 0;
    uint64_t pid;

    proto_writer_init(&w, 0);
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_ok(&w.pk, 12));
    ASSERT_OK(proto_pack_str(&w.pk, "pong"));
    ASSERT_OK(proto_writer_end(&w));
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_ok(&w.pk, 13));
    msgpack_pack_map(&w.pk, 2);
    ASSERT_OK(proto_pack_kv_uint(&w.pk, "pid", 4242));
    ASSERT_OK(proto_pack_kv_str(&w.pk, "state", "running"));
    ASSERT_OK(proto_writer_end(&w));

    len = frame_len(w.sbuf.data);
    ASSERT_EQ(len, 9); /* [1, 12, nil, "pong"] */
    ASSERT_EQ(decode_one(w.sbuf.data + 4, len, NULL, &m, NULL, NULL), 1);
    ASSERT_EQ(m->type, PROTO_MSG_RESPONSE);
    ASSERT_EQ(m->id, 12);
    ASSERT_EQ(m->error.type, MSGPACK_OBJECT_NIL);
    ASSERT_EQ(m->result.type, MSGPACK_OBJECT_STR);
    ASSERT_EQ(m->result.via.str.size, 4);
    ASSERT_TRUE(m->method == NULL);
    ASSERT_FALSE(proto_msg_method_is(m, "pong"));
    ASSERT_EQ(proto_msg_get_error(m, &code, &s, &len), 0);
    ASSERT_EQ(code, 99); /* untouched */
    proto_msg_free(m);

    ASSERT_EQ(4 + len + 4 + frame_len(w.sbuf.data + 4 + len), w.sbuf.size);
    ASSERT_EQ(decode_one(w.sbuf.data + 8 + len, w.sbuf.size - 8 - len, NULL, &m, NULL, NULL), 1);
    ASSERT_EQ(m->id, 13);
    ASSERT_OK(proto_get_uint(&m->result, "pid", &pid));
    ASSERT_EQ(pid, 4242);
    proto_msg_free(m);
    proto_writer_release(&w);
}

TEST(roundtrip_response_error)
{
    struct proto_writer w;
    struct proto_msg *m;
    int64_t code;
    const char *s;
    size_t len;

    proto_writer_init(&w, 0);
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_error(&w.pk, 5, PROTO_ERROR_NOT_FOUND, "no such repo"));
    ASSERT_OK(proto_writer_end(&w));
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_error(&w.pk, 6, PROTO_ERROR_BUSY, NULL));
    ASSERT_OK(proto_writer_end(&w));

    struct proto_decoder *d = proto_decoder_new(NULL);
    ASSERT_OK(proto_decoder_feed(d, w.sbuf.data, w.sbuf.size));
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(m->id, 5);
    ASSERT_EQ(m->error.type, MSGPACK_OBJECT_MAP);
    ASSERT_EQ(m->result.type, MSGPACK_OBJECT_NIL);
    ASSERT_EQ(proto_msg_get_error(m, &code, &s, &len), 1);
    ASSERT_EQ(code, PROTO_ERROR_NOT_FOUND);
    ASSERT_EQ(len, 12);
    ASSERT_TRUE(memcmp(s, "no such repo", 12) == 0);
    proto_msg_free(m);
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(proto_msg_get_error(m, &code, &s, &len), 1);
    ASSERT_EQ(code, PROTO_ERROR_BUSY);
    ASSERT_EQ(len, 4); /* a NULL message becomes the code's name */
    ASSERT_TRUE(memcmp(s, "busy", 4) == 0);
    proto_msg_free(m);
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 0);
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(response_error_map_without_code)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct proto_msg *m;
    int64_t code;
    const char *s;
    size_t len;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 3);
    msgpack_pack_map(&pk, 1);
    proto_pack_kv_str(&pk, "message", "oops");
    msgpack_pack_nil(&pk);
    ASSERT_EQ(decode_one(sb.data, sb.size, NULL, &m, NULL, NULL), 1);
    ASSERT_EQ(proto_msg_get_error(m, &code, &s, &len), -EINVAL);
    proto_msg_free(m);
    msgpack_sbuffer_destroy(&sb);
}

TEST(roundtrip_notification)
{
    struct proto_writer w;
    struct proto_msg *m;
    uint64_t done;
    double rate;

    proto_writer_init(&w, 0);
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_notification(&w.pk, "progress", 2));
    ASSERT_OK(proto_pack_kv_uint(&w.pk, "chunks_done", 1234));
    ASSERT_OK(proto_pack_kv_double(&w.pk, "chunks_per_s", 87.5));
    ASSERT_OK(proto_writer_end(&w));
    ASSERT_EQ(decode_one(w.sbuf.data + 4, w.sbuf.size - 4, NULL, &m, NULL, NULL), 1);
    ASSERT_EQ(m->type, PROTO_MSG_NOTIFICATION);
    ASSERT_TRUE(proto_msg_method_is(m, "progress"));
    ASSERT_OK(proto_get_uint(&m->params, "chunks_done", &done));
    ASSERT_EQ(done, 1234);
    ASSERT_OK(proto_get_double(&m->params, "chunks_per_s", &rate));
    ASSERT_NEAR(rate, 87.5, 0);
    ASSERT_EQ(proto_msg_get_error(m, NULL, NULL, NULL), -EINVAL); /* not a response */
    proto_msg_free(m);
    proto_writer_release(&w);
}

/* ---- framing -------------------------------------------------------------------------------- */

/* Builds n request frames with ids 0..n-1 and increasing string sizes into w. */
static void build_frames(struct proto_writer *w, unsigned n)
{
    char s[300];

    memset(s, 'a', sizeof(s));
    for (unsigned i = 0; i < n; i++) {
        ASSERT_OK(proto_writer_begin(w));
        ASSERT_OK(proto_pack_request(&w->pk, i, "index", 1));
        ASSERT_OK(proto_pack_str(&w->pk, "path"));
        ASSERT_OK(proto_pack_strn(&w->pk, s, (i * 37) % sizeof(s)));
        ASSERT_OK(proto_writer_end(w));
    }
}

TEST(byte_at_a_time)
{
    struct proto_writer w;
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *m;
    unsigned got = 0;

    proto_writer_init(&w, 0);
    build_frames(&w, 20);
    for (size_t i = 0; i < w.sbuf.size; i++) {
        int r;

        ASSERT_OK(proto_decoder_feed(d, w.sbuf.data + i, 1));
        while ((r = proto_decoder_next(d, &m, NULL)) == 1) {
            const char *s;
            size_t len;

            ASSERT_EQ(m->id, got);
            ASSERT_OK(proto_get_str(&m->params, "path", &s, &len));
            ASSERT_EQ(len, (got * 37) % 300);
            proto_msg_free(m);
            got++;
        }
        ASSERT_EQ(r, 0);
    }
    ASSERT_EQ(got, 20);
    ASSERT_EQ(proto_decoder_pending(d), 0);
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(irregular_pieces)
{
    struct proto_writer w;
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *m;
    unsigned got = 0, seed = 12345;

    proto_writer_init(&w, 0);
    build_frames(&w, 50);
    for (size_t i = 0; i < w.sbuf.size;) {
        size_t piece;

        seed = seed * 1103515245 + 12345;
        piece = MIN(1 + (seed >> 16) % 700, w.sbuf.size - i);
        ASSERT_OK(proto_decoder_feed(d, w.sbuf.data + i, piece));
        i += piece;
        while (proto_decoder_next(d, &m, NULL) == 1) {
            ASSERT_EQ(m->id, got++);
            proto_msg_free(m);
        }
    }
    ASSERT_EQ(got, 50);
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(several_frames_one_feed)
{
    struct proto_writer w;
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *m;

    proto_writer_init(&w, 0);
    build_frames(&w, 5);
    ASSERT_OK(proto_decoder_feed(d, w.sbuf.data, w.sbuf.size));
    ASSERT_EQ(proto_decoder_pending(d), w.sbuf.size);
    for (unsigned i = 0; i < 5; i++) {
        ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
        ASSERT_EQ(m->id, i);
        proto_msg_free(m);
    }
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 0);
    ASSERT_EQ(proto_decoder_pending(d), 0);
    /* A second batch that ends mid-frame: the tail waits for the rest. */
    ASSERT_OK(proto_decoder_feed(d, w.sbuf.data, w.sbuf.size - 3));
    for (unsigned i = 0; i < 4; i++) {
        ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
        proto_msg_free(m);
    }
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 0);
    ASSERT_OK(proto_decoder_feed(d, w.sbuf.data + w.sbuf.size - 3, 3));
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(m->id, 4);
    proto_msg_free(m);
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(truncated_frame_needs_more)
{
    struct proto_writer w;
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *m = NULL;

    proto_writer_init(&w, 0);
    build_frames(&w, 1);
    for (size_t cut = 0; cut < w.sbuf.size; cut++) {
        struct proto_decoder *t = proto_decoder_new(NULL);

        ASSERT_OK(proto_decoder_feed(t, w.sbuf.data, cut));
        ASSERT_EQ(proto_decoder_next(t, &m, NULL), 0);
        ASSERT_EQ(proto_decoder_pending(t), cut);
        proto_decoder_free(t); /* freeing with a partial frame buffered leaks nothing */
    }
    ASSERT_TRUE(m == NULL);
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 0); /* empty decoder */
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(truncated_payload_in_complete_frame)
{
    /* A frame of 3 bytes holding [0, 1, ... (array of 4 with only 2 items present). */
    static const uint8_t p[] = {0x94, 0x00, 0x01};
    static const uint8_t q[] = {0xa5, 'a', 'b'}; /* str of 5 with 2 bytes */
    int64_t id;
    int code;

    ASSERT_EQ(decode_one(p, sizeof(p), NULL, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(id, 1); /* still recovered */
    ASSERT_EQ(decode_one(q, sizeof(q), NULL, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(id, -1);
    ASSERT_EQ(decode_one(p, 0, NULL, NULL, &id, &code), -EBADMSG); /* empty payload */
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
}

TEST(oversized_frame_header)
{
    struct proto_limits lim = {.max_frame = 100};
    struct proto_decoder *d = proto_decoder_new(&lim);
    static const uint8_t big[] = {0x00, 0x00, 0x00, 101, 0x90};
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    struct proto_msg *m = NULL;
    int64_t id = 5;
    int code;

    /* Half a header is not yet an error; the rest makes it one, in feed and in next. */
    ASSERT_OK(proto_decoder_feed(d, big, 2));
    ASSERT_EQ(proto_decoder_next(d, &m, &id), 0);
    ASSERT_EQ(proto_decoder_feed(d, big + 2, 3), -EMSGSIZE);
    ASSERT_EQ(proto_decoder_next(d, &m, &id), -EMSGSIZE);
    ASSERT_EQ(id, -1);
    ASSERT_TRUE(strstr(proto_decoder_last_error(d, &code), "101") != NULL);
    ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
    /* Framing is lost for good: more bytes are refused, next keeps failing. */
    ASSERT_EQ(proto_decoder_feed(d, big, 1), -EMSGSIZE);
    ASSERT_EQ(proto_decoder_next(d, &m, &id), -EMSGSIZE);
    ASSERT_TRUE(m == NULL);
    proto_decoder_free(d);

    d = proto_decoder_new(NULL);
    ASSERT_EQ(proto_decoder_feed(d, huge, sizeof(huge)), -EMSGSIZE);
    ASSERT_EQ(proto_decoder_pending(d), 4); /* the header only: nothing was reserved for it */
    proto_decoder_free(d);
}

TEST(garbage_bytes)
{
    static const uint8_t never_used[] = {0xc1};
    static const uint8_t not_array[] = {0x05};
    static const uint8_t trailing[] = {0x94, 0x00, 0x09, 0xa1, 'm', 0xc0, 0xc0};
    int64_t id;
    int code;
    unsigned seed = 99;

    ASSERT_EQ(decode_one(never_used, 1, NULL, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(decode_one(not_array, 1, NULL, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_INVALID_REQUEST);
    ASSERT_EQ(decode_one(trailing, sizeof(trailing), NULL, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(id, 9);
    {
        struct proto_decoder *d = proto_decoder_new(NULL);
        uint8_t f[4 + sizeof(trailing)] = {0, 0, 0, sizeof(trailing)};
        struct proto_msg *m;

        memcpy(f + 4, trailing, sizeof(trailing));
        ASSERT_OK(proto_decoder_feed(d, f, sizeof(f)));
        ASSERT_EQ(proto_decoder_next(d, &m, NULL), -EBADMSG);
        ASSERT_STREQ(proto_decoder_last_error(d, NULL), "1 trailing bytes after the message");
        proto_decoder_free(d);
    }
    ASSERT_OK(decode_one(trailing, sizeof(trailing) - 1, NULL, NULL, NULL, NULL));

    /* A stream of random bytes: every call returns a defined result and nothing leaks. */
    for (int round = 0; round < 200; round++) {
        struct proto_limits lim = {.max_frame = 4096};
        struct proto_decoder *d = proto_decoder_new(&lim);
        uint8_t junk[512];
        struct proto_msg *m;
        int r = 0;

        for (size_t i = 0; i < sizeof(junk); i++) {
            seed = seed * 1103515245 + 12345;
            junk[i] = (uint8_t)(seed >> 16);
        }
        junk[0] = junk[1] = 0; /* small frame lengths, so payloads get decoded */
        junk[2] = (uint8_t)(round % 2);
        ASSERT_OK(proto_decoder_feed(d, junk, sizeof(junk)));
        for (int i = 0; i < 100; i++) {
            r = proto_decoder_next(d, &m, &id);
            if (r == 1)
                proto_msg_free(m);
            else if (r == 0 || r == -EMSGSIZE)
                break;
            else
                ASSERT_EQ(r, -EBADMSG);
        }
        ASSERT_TRUE(r == 0 || r == -EMSGSIZE || r == -EBADMSG);
        proto_decoder_free(d);
    }
}

TEST(bad_frame_then_good_frame)
{
    static const uint8_t bad[] = {0x94, 0x00, 0x2a, 0xc1, 0xc0}; /* id 42, then 0xc1 */
    struct proto_writer w;
    struct proto_decoder *d = proto_decoder_new(NULL);
    msgpack_sbuffer sb;
    struct proto_msg *m = NULL;
    int64_t id;
    int code;

    msgpack_sbuffer_init(&sb);
    proto_writer_init(&w, 0);
    frame_append(&sb, bad, sizeof(bad));
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_request(&w.pk, 43, "ping", 0));
    ASSERT_OK(proto_writer_end(&w));
    msgpack_sbuffer_write(&sb, w.sbuf.data, w.sbuf.size);

    ASSERT_OK(proto_decoder_feed(d, sb.data, sb.size));
    ASSERT_EQ(proto_decoder_next(d, &m, &id), -EBADMSG);
    ASSERT_EQ(id, 42);
    ASSERT_TRUE(m == NULL);
    ASSERT_TRUE(strlen(proto_decoder_last_error(d, &code)) > 0);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(proto_decoder_next(d, &m, &id), 1);
    ASSERT_EQ(m->id, 43);
    ASSERT_STREQ(proto_decoder_last_error(d, &code), "");
    ASSERT_EQ(code, 0);
    proto_msg_free(m);
    proto_decoder_free(d);
    proto_writer_release(&w);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- limits at their boundaries ------------------------------------------------------------ */

TEST(limit_frame_size)
{
    msgpack_sbuffer sb;
    struct proto_limits lim = {0};
    struct proto_msg *m;
    int64_t id;
    int code;

    msgpack_sbuffer_init(&sb);
    pack_request_with_str(&sb, 1000);
    lim.max_frame = (uint32_t)sb.size;
    lim.max_str = 100000;
    ASSERT_EQ(decode_one(sb.data, sb.size, &lim, &m, NULL, NULL), 1);
    ASSERT_EQ(m->frame_size, lim.max_frame);
    proto_msg_free(m);
    pack_request_with_str(&sb, 1001);
    ASSERT_EQ(sb.size, lim.max_frame + 1);
    ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, &id, &code), -EMSGSIZE);
    ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
    msgpack_sbuffer_destroy(&sb);
}

TEST(limit_depth)
{
    msgpack_sbuffer sb;
    int64_t id;
    int code;

    msgpack_sbuffer_init(&sb);
    for (unsigned max = 3; max <= PROTO_DEPTH_MAX; max++) {
        struct proto_limits lim = {.max_depth = max};

        for (int empty = 0; empty < 2; empty++) {
            pack_request_nested(&sb, max, empty);
            ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, NULL, NULL), 1);
            pack_request_nested(&sb, max + 1, empty);
            ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, &id, &code), -EBADMSG);
            ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
            ASSERT_EQ(id, 7);
        }
    }
    /* The default is the msgpack-c maximum, and a larger setting is clamped to it. */
    struct proto_limits big = {.max_depth = 1000};
    pack_request_nested(&sb, PROTO_DEPTH_MAX, false);
    ASSERT_EQ(decode_one(sb.data, sb.size, NULL, NULL, NULL, NULL), 1);
    pack_request_nested(&sb, PROTO_DEPTH_MAX + 1, false);
    ASSERT_EQ(decode_one(sb.data, sb.size, &big, NULL, NULL, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
    msgpack_sbuffer_destroy(&sb);
}

TEST(limit_elements)
{
    struct proto_limits lim = {.max_elements = 10};
    msgpack_sbuffer sb;
    int64_t id;
    int code;

    msgpack_sbuffer_init(&sb);
    for (int as_map = 0; as_map < 2; as_map++) {
        pack_request_elements(&sb, 10, as_map);
        ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, NULL, NULL), 1);
        pack_request_elements(&sb, 11, as_map);
        ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, &id, &code), -EBADMSG);
        ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
        ASSERT_EQ(id, 7);
    }
    /* Sizes that need array32/map16 headers, against the default limit. */
    pack_request_elements(&sb, 70000, false);
    ASSERT_EQ(decode_one(sb.data, sb.size, NULL, NULL, NULL, NULL), 1);
    pack_request_elements(&sb, 1000, true);
    ASSERT_EQ(decode_one(sb.data, sb.size, NULL, NULL, NULL, NULL), 1);
    msgpack_sbuffer_destroy(&sb);
}

TEST(counts_checked_against_bytes_before_allocating)
{
    /* [0, 1, "m", {"a": array32 of 2^32-1 items}] in 16 bytes: msgpack_unpack would ask for
     * ~96 GiB; the pre-scan refuses it from the byte count even with no element limit. */
    static const uint8_t p[] = {0x94, 0x00, 0x01, 0xa1, 'm',  0x81, 0xa1, 'a',
                                0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0};
    static const uint8_t q[] = {0x94, 0x00, 0x01, 0xa1, 'm',  0x81, 0xa1,
                                'a',  0xdf, 0x7f, 0xff, 0xff, 0xff}; /* map32 */
    static const uint8_t s[] = {0x94, 0x00, 0x01, 0xa1, 'm',  0x81, 0xa1,
                                'a',  0xc6, 0xff, 0xff, 0xff, 0xf0}; /* bin32 */
    struct proto_limits lim = {.max_elements = UINT32_MAX, .max_str = UINT32_MAX};
    int64_t id;
    int code;

    ASSERT_EQ(decode_one(p, sizeof(p), &lim, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(id, 1);
    ASSERT_EQ(decode_one(q, sizeof(q), &lim, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
    ASSERT_EQ(decode_one(s, sizeof(s), &lim, NULL, &id, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_PARSE);
}

TEST(limit_string_length)
{
    struct proto_limits lim = {.max_str = 16};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char data[17];
    int code;

    memset(data, 'z', sizeof(data));
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* kind 0: str, 1: bin, 2: ext (fixext 16 at the limit, ext8 of 17 over it). */
    for (int kind = 0; kind < 3; kind++) {
        for (size_t len = 16; len <= 17; len++) {
            sb.size = 0;
            ASSERT_OK(proto_pack_request(&pk, 7, "m", 1));
            ASSERT_OK(proto_pack_str(&pk, "s"));
            if (kind == 0) {
                ASSERT_OK(proto_pack_strn(&pk, data, len));
            } else if (kind == 1) {
                msgpack_pack_bin(&pk, len);
                msgpack_pack_bin_body(&pk, data, len);
            } else {
                msgpack_pack_ext(&pk, len, 3);
                msgpack_pack_ext_body(&pk, data, len);
            }
            if (len == 16) {
                ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, NULL, NULL), 1);
            } else {
                ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, NULL, &code), -EBADMSG);
                ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
            }
        }
    }
    /* The method name is a string too. */
    sb.size = 0;
    ASSERT_OK(proto_pack_request(&pk, 7, "abcdefghijklmnopq", 0));
    ASSERT_EQ(decode_one(sb.data, sb.size, &lim, NULL, NULL, &code), -EBADMSG);
    ASSERT_EQ(code, PROTO_ERROR_TOO_LARGE);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- message shapes ------------------------------------------------------------------------ */

/* A hand-written payload, and the id proto_decoder_next() should recover from it. */
struct shape_case {
    const char *what;
    uint8_t bytes[24];
    size_t len;
    int64_t want_id;
};

TEST(wrong_shapes)
{
    static const struct shape_case cases[] = {
        {"not an array", {0x81, 0xa1, 'a', 0x01}, 4, -1},
        {"empty array", {0x90}, 1, -1},
        {"type 3", {0x94, 0x03, 0x01, 0xa1, 'm', 0xc0}, 6, -1},
        {"type negative", {0x94, 0xff, 0x01, 0xa1, 'm', 0xc0}, 6, -1},
        {"type is a string", {0x94, 0xa1, '0', 0x01, 0xa1, 'm', 0xc0}, 7, -1},
        {"request of 3", {0x93, 0x00, 0x08, 0xa1, 'm'}, 5, 8},
        {"request of 5", {0x95, 0x00, 0x08, 0xa1, 'm', 0xc0, 0xc0}, 7, 8},
        {"id negative", {0x94, 0x00, 0xff, 0xa1, 'm', 0xc0}, 6, -1},
        {"id too big", {0x94, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xa1, 'm', 0xc0}, 14, -1},
        {"id is a string", {0x94, 0x00, 0xa1, '1', 0xa1, 'm', 0xc0}, 7, -1},
        {"id is a float", {0x94, 0x00, 0xca, 0x3f, 0x80, 0, 0, 0xa1, 'm', 0xc0}, 10, -1},
        {"method is an int", {0x94, 0x00, 0x09, 0x05, 0xc0}, 5, 9},
        {"method is bin", {0x94, 0x00, 0x09, 0xc4, 0x01, 'm', 0xc0}, 7, 9},
        {"params an array", {0x94, 0x00, 0x09, 0xa1, 'm', 0x91, 0x01}, 7, 9},
        {"params a string", {0x94, 0x00, 0x09, 0xa1, 'm', 0xa1, 'x'}, 7, 9},
        {"response of 3", {0x93, 0x01, 0x0a, 0xc0}, 4, 10},
        {"response error int", {0x94, 0x01, 0x0a, 0x05, 0xc0}, 5, 10},
        {"notification of 4", {0x94, 0x02, 0xa1, 'm', 0x80, 0xc0}, 6, -1},
        {"notification method int", {0x93, 0x02, 0x01, 0x80}, 4, -1},
        {"notification params array", {0x93, 0x02, 0xa1, 'm', 0x91, 0xc0}, 6, -1},
        /* ids in the other int encodings are still recovered */
        {"id int8 request of 2", {0x92, 0x00, 0xd0, 0x11}, 4, 17},
        {"id uint32 in array16",
         {0xdc, 0x00, 0x02, 0x00, 0xce, 0xff, 0xff, 0xff, 0xff},
         9,
         UINT32_MAX},
    };

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int64_t id = 1234;
        int code;
        int r = decode_one(cases[i].bytes, cases[i].len, NULL, NULL, &id, &code);

        if (r != -EBADMSG || id != cases[i].want_id || code != PROTO_ERROR_INVALID_REQUEST)
            test_fail(__FILE__, __LINE__, "%s: r=%d id=%" PRId64 " code=%d", cases[i].what, r, id,
                      code);
    }
}

TEST(ids_in_every_encoding)
{
    /* Ids packed as int8/int16/int32/int64 (as some clients do) are accepted when >= 0. */
    static const uint8_t p[][16] = {
        {0x94, 0x00, 0xd0, 0x7f, 0xa1, 'm', 0xc0},
        {0x94, 0x00, 0xd1, 0x01, 0x00, 0xa1, 'm', 0xc0},
        {0x94, 0x00, 0xd2, 0x00, 0x01, 0x00, 0x00, 0xa1, 'm', 0xc0},
        {0x94, 0x00, 0xd3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xa1, 'm', 0xc0},
        {0x94, 0x00, 0xcf, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xa1, 'm', 0xc0},
    };
    static const size_t len[] = {7, 8, 10, 14, 14};
    static const uint32_t want[] = {127, 256, 65536, UINT32_MAX, UINT32_MAX};
    struct proto_msg *m;

    for (size_t i = 0; i < 5; i++) {
        ASSERT_EQ(decode_one(p[i], len[i], NULL, &m, NULL, NULL), 1);
        ASSERT_EQ(m->id, want[i]);
        proto_msg_free(m);
    }
}

/* ---- getters -------------------------------------------------------------------------------- */

TEST(getters_wrong_types)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct proto_msg *m;
    const char *s = "preset";
    size_t len = 99;
    int64_t i = 77;
    uint64_t u = 77;
    double f = 7.5;
    bool b = false;
    char *dup = NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    ASSERT_OK(proto_pack_request(&pk, 1, "m", 9));
    ASSERT_OK(proto_pack_kv_int(&pk, "neg", -3));
    ASSERT_OK(proto_pack_kv_uint(&pk, "huge", UINT64_MAX));
    ASSERT_OK(proto_pack_kv_str(&pk, "str", "hello"));
    ASSERT_OK(proto_pack_kv_bool(&pk, "flag", false));
    ASSERT_OK(proto_pack_kv_double(&pk, "real", 1.5));
    ASSERT_OK(proto_pack_kv_str(&pk, "nil", NULL));
    ASSERT_OK(proto_pack_str(&pk, "nul"));
    ASSERT_OK(proto_pack_strn(&pk, "a\0b", 3));
    msgpack_pack_uint8(&pk, 5); /* a non-string key is skipped by lookups */
    msgpack_pack_uint8(&pk, 6);
    ASSERT_OK(proto_pack_kv_int(&pk, "str", 1)); /* repeated key: the first wins */
    ASSERT_EQ(decode_one(sb.data, sb.size, NULL, &m, NULL, NULL), 1);
    const msgpack_object *p = &m->params;

    ASSERT_EQ(proto_get_str(p, "neg", &s, &len), -EINVAL);
    ASSERT_EQ(proto_get_int(p, "str", &i), -EINVAL);
    ASSERT_EQ(proto_get_int(p, "huge", &i), -EINVAL); /* out of int64 range */
    ASSERT_EQ(proto_get_uint(p, "neg", &u), -EINVAL);
    ASSERT_EQ(proto_get_uint(p, "real", &u), -EINVAL);
    ASSERT_EQ(proto_get_double(p, "str", &f), -EINVAL);
    ASSERT_EQ(proto_get_bool(p, "neg", &b), -EINVAL);
    ASSERT_EQ(proto_get_bool(p, "missing", &b), -ENOENT);
    ASSERT_EQ(proto_get_int(p, "nil", &i), -ENOENT);
    ASSERT_EQ(proto_get_strdup(p, "nul", &dup), -EINVAL);
    ASSERT_EQ(proto_get_strdup(p, "neg", &dup), -EINVAL);
    /* Outputs are untouched by every failure above. */
    ASSERT_STREQ(s, "preset");
    ASSERT_EQ(len, 99);
    ASSERT_EQ(i, 77);
    ASSERT_EQ(u, 77);
    ASSERT_NEAR(f, 7.5, 0);
    ASSERT_FALSE(b);
    ASSERT_TRUE(dup == NULL);

    ASSERT_OK(proto_get_uint(p, "huge", &u));
    ASSERT_TRUE(u == UINT64_MAX);
    ASSERT_OK(proto_get_double(p, "neg", &f));
    ASSERT_NEAR(f, -3, 0);
    ASSERT_OK(proto_get_bool(p, "flag", &b));
    ASSERT_FALSE(b);
    ASSERT_OK(proto_get_strdup(p, "str", &dup));
    ASSERT_STREQ(dup, "hello");
    free(dup);
    ASSERT_TRUE(proto_map_get(p, "nil") != NULL); /* present, as nil */
    ASSERT_TRUE(proto_map_get(NULL, "x") == NULL);
    ASSERT_TRUE(proto_map_get(&m->params.via.map.ptr[0].val, "x") == NULL); /* not a map */
    ASSERT_EQ(proto_get_str(&m->params.via.map.ptr[2].val, "x", &s, &len), -ENOENT);
    proto_msg_free(m);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- writer --------------------------------------------------------------------------------- */

TEST(writer_emsgsize)
{
    struct proto_writer w;
    char big[200];
    size_t before;

    memset(big, 'q', sizeof(big));
    proto_writer_init(&w, 64);
    ASSERT_EQ(w.max_frame, 64);
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_request(&w.pk, 1, "ping", 0));
    ASSERT_OK(proto_writer_end(&w));
    before = w.sbuf.size;

    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_request(&w.pk, 2, "index", 1));
    ASSERT_OK(proto_pack_str(&w.pk, "path"));
    ASSERT_EQ(proto_pack_strn(&w.pk, big, sizeof(big)), -ENOMEM); /* the write was refused */
    ASSERT_LE(w.sbuf.size, before + 4 + 64);                      /* nothing past the limit */
    ASSERT_EQ(proto_writer_end(&w), -EMSGSIZE);
    ASSERT_EQ(w.sbuf.size, before); /* dropped; the earlier frame intact */

    /* A frame of exactly max_frame bytes passes; one more byte does not. */
    for (size_t n = 40; n < 70; n++) {
        struct proto_writer t;
        int r;

        proto_writer_init(&t, 64);
        ASSERT_OK(proto_writer_begin(&t));
        msgpack_pack_array(&t.pk, 1);
        msgpack_pack_bin(&t.pk, n);
        msgpack_pack_bin_body(&t.pk, big, n);
        r = proto_writer_end(&t);
        /* fixarray(1) + bin8 header (2) + n */
        if (3 + n <= 64) {
            ASSERT_EQ(r, 0);
            ASSERT_EQ(t.sbuf.size, 4 + 3 + n);
        } else {
            ASSERT_EQ(r, -EMSGSIZE);
            ASSERT_EQ(t.sbuf.size, 0);
        }
        proto_writer_release(&t);
    }

    /* The writer is usable again, and the frames decode. */
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_request(&w.pk, 3, "ping", 0));
    ASSERT_OK(proto_writer_end(&w));
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *m;
    ASSERT_OK(proto_decoder_feed(d, w.sbuf.data, w.sbuf.size));
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(m->id, 1);
    proto_msg_free(m);
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(m->id, 3);
    proto_msg_free(m);
    proto_decoder_free(d);
    proto_writer_release(&w);
}

TEST(writer_misuse_and_steal)
{
    struct proto_writer w;
    size_t size = 0;
    char *data;

    proto_writer_init(&w, 0);
    ASSERT_EQ(w.max_frame, 16u * 1024 * 1024);
    ASSERT_EQ(proto_writer_end(&w), -EINVAL);           /* nothing open */
    ASSERT_EQ(msgpack_pack_nil(&w.pk), -1);             /* packing outside a frame is refused */
    ASSERT_TRUE(proto_writer_steal(&w, &size) == NULL); /* empty */
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_EQ(proto_writer_begin(&w), -EBUSY);
    ASSERT_TRUE(proto_writer_steal(&w, &size) == NULL); /* a frame is open */
    ASSERT_EQ(proto_writer_end(&w), -EINVAL);           /* empty frame */
    ASSERT_EQ(w.sbuf.size, 0);
    ASSERT_EQ(proto_pack_request(&w.pk, 1, NULL, 0), -EINVAL);
    ASSERT_EQ(proto_pack_notification(&w.pk, NULL, 0), -EINVAL);

    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_ok(&w.pk, 9));
    ASSERT_OK(proto_pack_str(&w.pk, NULL));
    ASSERT_OK(proto_writer_end(&w));
    data = proto_writer_steal(&w, &size);
    ASSERT_TRUE(data != NULL);
    ASSERT_EQ(size, 4 + 5);
    ASSERT_EQ(w.sbuf.size, 0);
    ASSERT_EQ((uint8_t)data[3], 5);
    free(data);

    /* reset drops everything, including an open frame, and the writer stays usable */
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_ok(&w.pk, 9));
    proto_writer_reset(&w);
    ASSERT_EQ(w.sbuf.size, 0);
    ASSERT_OK(proto_writer_begin(&w));
    ASSERT_OK(proto_pack_response_ok(&w.pk, 9));
    ASSERT_OK(msgpack_pack_true(&w.pk));
    ASSERT_OK(proto_writer_end(&w));
    proto_writer_release(&w);
    proto_writer_release(&w); /* twice is harmless */
}

/* ---- error codes ---------------------------------------------------------------------------- */

TEST(error_codes)
{
    static const int codes[] = {
        PROTO_ERROR_PARSE,
        PROTO_ERROR_INVALID_REQUEST,
        PROTO_ERROR_METHOD_NOT_FOUND,
        PROTO_ERROR_INVALID_PARAMS,
        PROTO_ERROR_INTERNAL,
        PROTO_ERROR_TOO_LARGE,
        PROTO_ERROR_BUSY,
        PROTO_ERROR_SHUTTING_DOWN,
        PROTO_ERROR_NOT_FOUND,
        PROTO_ERROR_IO,
        PROTO_ERROR_NO_MEMORY,
        PROTO_ERROR_CANCELLED,
        PROTO_ERROR_UNSUPPORTED,
        PROTO_ERROR_INVALID_INPUT,
    };

    for (size_t i = 0; i < 14; i++) {
        ASSERT_TRUE(strcmp(proto_error_code_name(codes[i]), "unknown") != 0);
        for (size_t j = 0; j < i; j++)
            ASSERT_TRUE(strcmp(proto_error_code_name(codes[i]), proto_error_code_name(codes[j])) !=
                        0);
    }
    ASSERT_STREQ(proto_error_code_name(PROTO_ERROR_PARSE), "parse_error");
    ASSERT_STREQ(proto_error_code_name(PROTO_ERROR_SHUTTING_DOWN), "shutting_down");
    ASSERT_STREQ(proto_error_code_name(12345), "unknown");

    ASSERT_EQ(proto_error_code_from_errno(-ENOMEM), PROTO_ERROR_NO_MEMORY);
    ASSERT_EQ(proto_error_code_from_errno(-ENOENT), PROTO_ERROR_NOT_FOUND);
    ASSERT_EQ(proto_error_code_from_errno(-EIO), PROTO_ERROR_IO);
    ASSERT_EQ(proto_error_code_from_errno(-ENOSPC), PROTO_ERROR_IO);
    ASSERT_EQ(proto_error_code_from_errno(-EINVAL), PROTO_ERROR_INVALID_INPUT);
    ASSERT_EQ(proto_error_code_from_errno(-ENOTDIR), PROTO_ERROR_INVALID_INPUT);
    ASSERT_EQ(proto_error_code_from_errno(-ECANCELED), PROTO_ERROR_CANCELLED);
    ASSERT_EQ(proto_error_code_from_errno(-EBUSY), PROTO_ERROR_BUSY);
    ASSERT_EQ(proto_error_code_from_errno(-ESHUTDOWN), PROTO_ERROR_SHUTTING_DOWN);
    ASSERT_EQ(proto_error_code_from_errno(-EMSGSIZE), PROTO_ERROR_TOO_LARGE);
    ASSERT_EQ(proto_error_code_from_errno(-ENOTSUP), PROTO_ERROR_UNSUPPORTED);
    ASSERT_EQ(proto_error_code_from_errno(-EBADMSG), PROTO_ERROR_INVALID_REQUEST);
    ASSERT_EQ(proto_error_code_from_errno(-EXDEV), PROTO_ERROR_INTERNAL);
    ASSERT_EQ(proto_error_code_from_errno(0), PROTO_ERROR_INTERNAL);
}

TEST(free_null)
{
    ASSERT_TRUE(proto_msg_free(NULL) == NULL);
    ASSERT_TRUE(proto_decoder_free(NULL) == NULL);
}

TEST(decoder_buffer_released_after_big_frame)
{
    struct proto_decoder *d = proto_decoder_new(NULL);
    msgpack_sbuffer sb, f;
    struct proto_msg *m;

    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&f);
    pack_request_with_str(&sb, 1 << 20);
    frame_append(&f, sb.data, sb.size);
    for (size_t i = 0; i < f.size; i += 4096)
        ASSERT_OK(proto_decoder_feed(d, f.data + i, MIN(4096, f.size - i)));
    ASSERT_EQ(proto_decoder_next(d, &m, NULL), 1);
    ASSERT_EQ(m->frame_size, sb.size);
    proto_msg_free(m);
    ASSERT_EQ(proto_decoder_pending(d), 0);
    proto_decoder_free(d);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&f);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
