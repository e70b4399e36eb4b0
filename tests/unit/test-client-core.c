/*
 * test-client-core.c - coarchctl's building blocks: the msgpack -> JSON / people's-form
 * printers (client/output.h) and the synchronous connection (client/conn.h), the latter
 * against a real Unix-socket peer that speaks the real codec from a thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "output.h"
#include "proto.h"
#include "test.h"

/* ---- output ---- */

/* Packs with `pack`, converts to JSON, returns the text without its final newline. */
static char *to_json(void (*pack)(msgpack_packer *pk), bool pretty)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack(&pk);
    if (output_json_packed(f, sb.data, sb.size, pretty) < 0)
        fputs("FAILED", f);
    fclose(f);
    msgpack_sbuffer_destroy(&sb);
    if (len > 0 && text[len - 1] == '\n')
        text[len - 1] = '\0';
    return text;
}

static void pack_scalars(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 9);
    msgpack_pack_nil(pk);
    msgpack_pack_true(pk);
    msgpack_pack_false(pk);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_int64(pk, INT64_MIN);
    msgpack_pack_int64(pk, -1);
    msgpack_pack_uint8(pk, 0);
    proto_pack_str(pk, "");
    msgpack_pack_map(pk, 0);
}

TEST(json_scalars_exact)
{
    char *s = to_json(pack_scalars, false);
    ASSERT_STREQ(s, "[null,true,false,18446744073709551615,-9223372036854775808,-1,0,\"\",{}]");
    free(s);
}

static void pack_floats(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 8);
    msgpack_pack_double(pk, 0.1);
    msgpack_pack_double(pk, 1.0);
    msgpack_pack_double(pk, -2.5e-300);
    msgpack_pack_double(pk, 1e300);
    msgpack_pack_double(pk, 0.0 / 0.0);
    msgpack_pack_double(pk, 1.0 / 0.0);
    msgpack_pack_float(pk, 0.5f);
    msgpack_pack_double(pk, 123456789.125);
}

TEST(json_floats_shortest_and_finite)
{
    char *s = to_json(pack_floats, false);
    ASSERT_STREQ(s, "[0.1,1.0,-2.5e-300,1e+300,null,null,0.5,123456789.125]");
    free(s);
}

static void pack_strings(msgpack_packer *pk)
{
    static const char raw[] = "q\"b\\n\nt\tc\x01\x1f"
                              "\xc3\xa9"         /* é: valid 2-byte */
                              "\xf0\x9f\x98\x80" /* U+1F600: valid 4-byte */
                              "\xff"             /* never valid */
                              "\xc0\x80"         /* overlong NUL */
                              "\xed\xa0\x80"     /* surrogate U+D800 */
                              "\xe2\x82";        /* truncated 3-byte at the end */
    msgpack_pack_array(pk, 2);
    proto_pack_strn(pk, raw, sizeof(raw) - 1);
    proto_pack_strn(pk, "a\0b", 3);
}

TEST(json_string_escapes_and_invalid_utf8)
{
    char *s = to_json(pack_strings, false);
    ASSERT_STREQ(s, "[\"q\\\"b\\\\n\\nt\\tc\\u0001\\u001f\xc3\xa9\xf0\x9f\x98\x80"
                    "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\","
                    "\"a\\u0000b\"]");
    free(s);
}

static void pack_bin_keys(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    for (int n = 0; n < 4; n++) {
        char key[8];
        snprintf(key, sizeof(key), "b%d", n);
        proto_pack_str(pk, key);
        msgpack_pack_bin(pk, (size_t)n);
        msgpack_pack_bin_body(pk, "\xff\x00\x7f", (size_t)n);
    }
    msgpack_pack_int(pk, -3); /* a non-string key */
    msgpack_pack_ext(pk, 2, 5);
    msgpack_pack_ext_body(pk, "hello", 2);
    msgpack_pack_true(pk);
    msgpack_pack_nil(pk);
}

TEST(json_bin_base64_ext_and_non_string_keys)
{
    char *s = to_json(pack_bin_keys, false);
    ASSERT_STREQ(s, "{\"b0\":\"\",\"b1\":\"/w==\",\"b2\":\"/wA=\",\"b3\":\"/wB/\","
                    "\"-3\":{\"ext\":5,\"data\":\"aGU=\"},\"true\":null}");
    free(s);
}

static void pack_nested(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    proto_pack_kv_int(pk, "pid", 7);
    proto_pack_str(pk, "memory");
    msgpack_pack_map(pk, 1);
    proto_pack_kv_uint(pk, "rss_bytes", 1048576);
    proto_pack_str(pk, "list");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    msgpack_pack_array(pk, 0);
}

TEST(json_pretty_layout)
{
    char *s = to_json(pack_nested, true);
    ASSERT_STREQ(s, "{\n  \"pid\": 7,\n  \"memory\": {\n    \"rss_bytes\": 1048576\n  },\n"
                    "  \"list\": [\n    1,\n    []\n  ]\n}");
    free(s);
}

TEST(json_packed_rejects_trailing_and_truncated)
{
    FILE *f = fopen("/dev/null", "w");
    ASSERT_EQ(output_json_packed(f, "\x01\x02", 2, false), -EBADMSG);
    ASSERT_EQ(output_json_packed(f, "\x92\x01", 2, false), -EBADMSG);
    ASSERT_EQ(output_json_packed(f, "\xc1", 1, false), -EBADMSG);
    fclose(f);
}

static void pack_human(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 5);
    proto_pack_kv_str(pk, "state", "run\nning");
    proto_pack_str(pk, "memory");
    msgpack_pack_map(pk, 1);
    proto_pack_kv_int(pk, "rss", 5);
    proto_pack_str(pk, "backends");
    msgpack_pack_array(pk, 2);
    proto_pack_str(pk, "cpu");
    proto_pack_str(pk, "cuda");
    proto_pack_str(pk, "jobs");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 2);
    proto_pack_kv_int(pk, "id", 1);
    proto_pack_kv_bool(pk, "done", false);
    proto_pack_str(pk, "none");
    msgpack_pack_array(pk, 0);
}

TEST(human_form)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_human(&pk);
    msgpack_unpacked_init(&u);
    ASSERT_EQ(msgpack_unpack_next(&u, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    output_human(f, &u.data, 0);
    fclose(f);
    ASSERT_STREQ(text, "state: run?ning\nmemory:\n  rss: 5\nbackends: cpu, cuda\n"
                       "jobs:\n  - id: 1\n    done: false\nnone: (none)\n");
    free(text);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

TEST(format_bytes_and_durations)
{
    char b[32];

    output_format_bytes(512, b, sizeof(b));
    ASSERT_STREQ(b, "512 B");
    output_format_bytes(1536, b, sizeof(b));
    ASSERT_STREQ(b, "1.5 KiB");
    output_format_bytes(12345678, b, sizeof(b));
    ASSERT_STREQ(b, "11.8 MiB");
    output_format_bytes(UINT64_MAX, b, sizeof(b));
    ASSERT_STREQ(b, "16.0 EiB");
    output_format_duration_ms(850, b, sizeof(b));
    ASSERT_STREQ(b, "850 ms");
    output_format_duration_ms(187000, b, sizeof(b));
    ASSERT_STREQ(b, "3m 07s");
    output_format_duration_ms(7500000, b, sizeof(b));
    ASSERT_STREQ(b, "2h 05m");
    output_format_duration_ms(273600000, b, sizeof(b));
    ASSERT_STREQ(b, "3d 04h");
}

/* ---- conn, against a peer thread ---- */

enum peer_script {
    PEER_NOTIFY_THEN_ANSWER, /* two notifications, the response, a third notification */
    PEER_SILENT,             /* read the request, answer nothing, hold the connection */
    PEER_GARBAGE,            /* a frame holding invalid msgpack */
    PEER_HANG_UP,            /* close right after reading the request */
    PEER_WRONG_ID,           /* answer a request that was never sent */
};

struct peer {
    int listen_fd;
    enum peer_script script;
    char path[108];
    pthread_t thread;
};

/* The peer runs on its own thread, where ASSERT_* (longjmp) must not be used: a failure here
 * shows up as a wrong result on the client side instead. */
static void peer_send(int fd, struct proto_writer *w)
{
    if (proto_writer_end(w) == 0 && write(fd, w->sbuf.data, w->sbuf.size) < 0)
        perror("peer write");
    proto_writer_reset(w);
}

static void *peer_main(void *data)
{
    struct peer *p = data;
    struct proto_decoder *d = proto_decoder_new(NULL);
    struct proto_msg *req = NULL;
    struct proto_writer w;
    char buf[4096];
    int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    uint32_t id;

    proto_writer_init(&w, 0);
    while (proto_decoder_next(d, &req, NULL) == 0) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            goto out;
        proto_decoder_feed(d, buf, (size_t)n);
    }
    id = req->id;
    switch (p->script) {
    case PEER_NOTIFY_THEN_ANSWER:
        for (int i = 0; i < 3; i++) {
            if (i == 2) {
                proto_writer_begin(&w);
                proto_pack_response_ok(&w.pk, id);
                proto_pack_str(&w.pk, "pong");
                peer_send(fd, &w);
            }
            proto_writer_begin(&w);
            proto_pack_notification(&w.pk, "progress", 1);
            proto_pack_kv_int(&w.pk, "n", i);
            peer_send(fd, &w);
        }
        break;
    case PEER_SILENT:
        if (read(fd, buf, sizeof(buf)) < 0) /* returns when the client hangs up */
            perror("peer read");
        break;
    case PEER_GARBAGE:
        if (write(fd, "\0\0\0\2\xc1\xc1", 6) < 0)
            perror("peer write");
        break;
    case PEER_HANG_UP:
        break;
    case PEER_WRONG_ID:
        proto_writer_begin(&w);
        proto_pack_response_ok(&w.pk, id + 100);
        msgpack_pack_nil(&w.pk);
        peer_send(fd, &w);
        break;
    }
out:
    proto_msg_free(req);
    proto_decoder_free(d);
    proto_writer_release(&w);
    close(fd);
    return NULL;
}

static void peer_start(struct peer *p, enum peer_script script)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    p->script = script;
    snprintf(p->path, sizeof(p->path), "/tmp/coarch-test-client-%d.sock", (int)getpid());
    unlink(p->path);
    memcpy(sa.sun_path, p->path, strlen(p->path) + 1);
    p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(p->listen_fd, 0);
    ASSERT_EQ(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(listen(p->listen_fd, 4), 0);
    ASSERT_EQ(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_stop(struct peer *p)
{
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    unlink(p->path);
}

static int count_notify(const struct proto_msg *msg, void *userdata)
{
    int64_t n = -1;

    ASSERT_TRUE(proto_msg_method_is(msg, "progress"));
    ASSERT_OK(proto_get_int(&msg->params, "n", &n));
    ASSERT_EQ(n, *(int *)userdata);
    (*(int *)userdata)++;
    return 0;
}

TEST(conn_notifications_then_response_then_next)
{
    struct proto_msg *resp = NULL, *next = NULL;
    struct conn *c = NULL;
    struct peer p;
    int seen = 0;
    int64_t n = -1;

    peer_start(&p, PEER_NOTIFY_THEN_ANSWER);
    ASSERT_OK(conn_connect(p.path, 5000, &c));
    conn_set_notify(c, count_notify, &seen);
    ASSERT_OK(conn_call(c, "ping", &resp));
    ASSERT_EQ(seen, 2);
    ASSERT_EQ(resp->type, PROTO_MSG_RESPONSE);
    ASSERT_EQ(resp->result.type, MSGPACK_OBJECT_STR);
    ASSERT_OK(conn_next(c, &next));
    ASSERT_EQ(next->type, PROTO_MSG_NOTIFICATION);
    ASSERT_OK(proto_get_int(&next->params, "n", &n));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(conn_wait_closed(c, 5000), 0);
    proto_msg_free(next);
    proto_msg_free(resp);
    conn_free(c);
    peer_stop(&p);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

TEST(conn_failures_map_to_errno)
{
    static const struct {
        enum peer_script script;
        int expect;
    } cases[] = {
        {PEER_SILENT, -ETIMEDOUT},
        {PEER_GARBAGE, -EBADMSG},
        {PEER_HANG_UP, -ECONNRESET},
        {PEER_WRONG_ID, -EPROTO},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct proto_msg *resp = NULL;
        struct conn *c = NULL;
        struct peer p;
        int64_t t0;

        peer_start(&p, cases[i].script);
        ASSERT_OK(conn_connect(p.path, 200, &c));
        t0 = mono_ms();
        ASSERT_EQ(conn_call(c, "status", &resp), cases[i].expect);
        if (cases[i].expect == -ETIMEDOUT) {
            ASSERT_GE(mono_ms() - t0, 190);
            ASSERT_LT(mono_ms() - t0, 3000);
        }
        ASSERT_TRUE(resp == NULL);
        conn_free(c); /* lets a silent peer's read() return */
        peer_stop(&p);
    }
}

TEST(conn_connect_errors)
{
    struct conn *c = NULL;
    char path[200];

    ASSERT_EQ(conn_connect("/nonexistent-dir/coarchd.sock", 100, &c), -ENOENT);
    memset(path, 'x', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    ASSERT_EQ(conn_connect(path, 100, &c), -ENAMETOOLONG);
    ASSERT_TRUE(c == NULL);
}

TEST(conn_connect_refused_on_stale_socket)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct conn *c = NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    /* A socket file nobody listens on: what a crashed daemon leaves behind. */
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/coarch-test-stale-%d.sock", (int)getpid());
    unlink(sa.sun_path);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    ASSERT_EQ(conn_connect(sa.sun_path, 100, &c), -ECONNREFUSED);
    unlink(sa.sun_path);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
