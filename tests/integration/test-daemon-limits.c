/*
 * test-daemon-limits.c - coarchd under hostile or careless clients: malformed, oversized,
 * truncated and garbage frames, unknown methods and bad parameters, and every per-connection
 * limit (pending requests, connections, idle time, output buffering).  Part of the `daemon`
 * test program (test-daemon.c has the runner's main).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "test.h"

/* ---- framing errors and limits ---------------------------------------------------------- */

TEST(malformed_frames_get_errors_and_connection_survives)
{
    /* [0, 9, "ping", <0xc1: never-used msgpack byte>] - the id survives the broken payload. */
    static const uint8_t bad_msgpack[] = {0x94, 0x00, 0x09, 0xa4, 'p', 'i', 'n', 'g', 0xc1};
    /* [0, 10, 42, {}] - valid msgpack, wrong shape. */
    static const uint8_t bad_shape[] = {0x94, 0x00, 0x0a, 0x2a, 0x80};
    /* [0, 11, "ping", [1]] - params must be a map. */
    static const uint8_t bad_params[] = {0x94, 0x00, 0x0b, 0xa4, 'p', 'i', 'n', 'g', 0x91, 0x01};
    /* [0, 12, "ping", {}, 1] - trailing element. */
    static const uint8_t five[] = {0x95, 0x00, 0x0c, 0xa4, 'p', 'i', 'n', 'g', 0x80, 0x01};
    /* 0xc1 alone: no id to answer to; dropped. */
    static const uint8_t no_id[] = {0xc1};
    /* A notification and a response from the client: ignored. */
    static const uint8_t notification[] = {0x93, 0x02, 0xa1, 'x', 0x80};
    static const uint8_t response[] = {0x94, 0x01, 0x05, 0xc0, 0xc0};
    uint8_t deep[64];
    struct tdaemon d;
    struct tclient *c, *other;
    struct proto_msg *m;
    size_t n = 0;

    start(&d);
    c = connect_ok(&d);
    other = connect_ok(&d);

    send_payload(c, bad_msgpack, sizeof(bad_msgpack));
    expect_error(c, 9, PROTO_ERROR_PARSE);
    send_payload(c, bad_shape, sizeof(bad_shape));
    expect_error(c, 10, PROTO_ERROR_INVALID_REQUEST);
    send_payload(c, bad_params, sizeof(bad_params));
    expect_error(c, 11, PROTO_ERROR_INVALID_REQUEST);
    send_payload(c, five, sizeof(five));
    expect_error(c, 12, PROTO_ERROR_INVALID_REQUEST);

    /* [0, 13, "ping", {"x": [[[[...]]]]}] nested past the depth limit: too_large. */
    memcpy(deep, (const uint8_t[]){0x94, 0x00, 0x0d, 0xa4, 'p', 'i', 'n', 'g', 0x81, 0xa1, 'x'},
           11);
    n = 11;
    while (n < sizeof(deep) - 1)
        deep[n++] = 0x91;
    deep[n++] = 0x01;
    send_payload(c, deep, (uint32_t)n);
    expect_error(c, 13, PROTO_ERROR_TOO_LARGE);

    /* No id, an empty frame, client-side notifications and responses: no answer, and the
     * next ping's answer is the very next message. */
    send_payload(c, no_id, sizeof(no_id));
    ASSERT_OK(tclient_send_raw(c, "\0\0\0\0", 4));
    send_payload(c, notification, sizeof(notification));
    send_payload(c, response, sizeof(response));
    ASSERT_OK(tclient_send(c, 77, "ping"));
    ASSERT_OK(tclient_read(c, 5000, &m));
    ASSERT_EQ(m->type, PROTO_MSG_RESPONSE);
    ASSERT_EQ(m->id, 77);
    ASSERT_TRUE(tmsg_result_is_str(m, "pong"));
    proto_msg_free(m);

    ASSERT_OK(tclient_ping(other));
    tclient_free(c);
    tclient_free(other);
    stop_ok(&d);
}

TEST(oversized_frame_closes_without_reply)
{
    /* A header announcing 1 GiB, then a few bytes: framing is lost, the daemon must close. */
    static const uint8_t huge[] = {0x40, 0x00, 0x00, 0x00, 0x94, 0x00, 0x01};
    struct tdaemon d;
    struct tclient *c, *other;

    start(&d);
    other = connect_ok(&d);
    c = connect_ok(&d);
    ASSERT_OK(tclient_send_raw(c, huge, sizeof(huge)));
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
    tclient_free(c);
    ASSERT_TRUE(tdaemon_log_wait(&d, "framing lost", 2000));

    /* A frame just over a 1 MiB limit is refused the same way, before its bytes arrive. */
    ASSERT_OK(tclient_ping(other));
    assert_serving(&d);
    tclient_free(other);
    stop_ok(&d);
}

TEST(answers_before_an_oversized_frame_are_sent)
{
    /* Issue 16 W1: a ping and a 1 GiB header in one write lost the pong. */
    static const uint8_t ping[] = {0x00, 0x00, 0x00, 0x09, 0x94, 0x00, 0x2a,
                                   0xa4, 'p',  'i',  'n',  'g',  0x80};
    static const uint8_t huge[] = {0x40, 0x00, 0x00, 0x00, 0x94};
    uint8_t both[sizeof(ping) + sizeof(huge)];
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;

    memcpy(both, ping, sizeof(ping));
    memcpy(both + sizeof(ping), huge, sizeof(huge));
    start(&d);
    c = connect_ok(&d);
    ASSERT_OK(tclient_send_raw(c, both, sizeof(both)));
    ASSERT_OK(tclient_read(c, 5000, &m));
    ASSERT_EQ(m->type, PROTO_MSG_RESPONSE);
    ASSERT_EQ(m->id, 42);
    ASSERT_TRUE(tmsg_result_is_str(m, "pong"));
    proto_msg_free(m);
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
    tclient_free(c);
    assert_serving(&d);
    stop_ok(&d);
}

TEST(garbage_bytes_close_or_drop)
{
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    struct tdaemon d;
    struct tclient *c, *other;

    start(&d);
    other = connect_ok(&d);

    /* "GET " read as a length is 1.2 GB: over the limit, closed. */
    c = connect_ok(&d);
    ASSERT_OK(tclient_send_raw(c, http, sizeof(http) - 1));
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
    tclient_free(c);
    ASSERT_OK(tclient_ping(other));

    /* Small random-looking frames: consumed, no id, no reply; the connection lives on. */
    c = connect_ok(&d);
    for (uint32_t i = 0; i < 64; i++) {
        uint8_t payload[32];

        for (size_t j = 0; j < sizeof(payload); j++)
            payload[j] = (uint8_t)(i * 131 + j * 17 + 0xc1);
        send_payload(c, payload, 1 + i % sizeof(payload));
    }
    ASSERT_OK(tclient_ping(c));
    ASSERT_OK(tclient_ping(other));
    tclient_free(c);
    tclient_free(other);
    stop_ok(&d);
}

TEST(truncated_frame_then_close)
{
    static const uint8_t partial[] = {0x00, 0x00, 0x00, 0x64, 0x94, 0x00, 0x01, 0xa4, 'p'};
    struct tdaemon d;
    struct tclient *c, *other;

    start(&d);
    other = connect_ok(&d);
    c = connect_ok(&d);
    ASSERT_OK(tclient_send_raw(c, partial, sizeof(partial)));
    usleep(50000);
    tclient_free(c); /* mid-frame */
    wait_connections(other, 1);
    ASSERT_OK(tclient_ping(other));
    assert_serving(&d);
    tclient_free(other);
    stop_ok(&d);
}

TEST(unknown_method_and_bad_params)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", NULL};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;
    msgpack_packer *pk;

    start_env(&d, env);
    c = connect_ok(&d);
    ASSERT_OK(tclient_send(c, 5, "no.such.method"));
    m = read_response(c, 5000);
    ASSERT_EQ(m->id, 5);
    ASSERT_EQ(tmsg_error_code(m), PROTO_ERROR_METHOD_NOT_FOUND);
    ASSERT_TRUE(tmsg_error_mentions(m, "no.such.method"));
    proto_msg_free(m);

    pk = tclient_begin(c, 6, "subscribe", 1);
    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_int(pk, "events", 5));
    ASSERT_OK(tclient_end(c));
    m = read_response(c, 5000);
    ASSERT_EQ(tmsg_error_code(m), PROTO_ERROR_INVALID_PARAMS);
    ASSERT_TRUE(tmsg_error_mentions(m, "events"));
    proto_msg_free(m);

    pk = tclient_begin(c, 7, "debug.sleep", 1);
    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_str(pk, "ms", "soon"));
    ASSERT_OK(tclient_end(c));
    m = read_response(c, 5000);
    ASSERT_EQ(tmsg_error_code(m), PROTO_ERROR_INVALID_PARAMS);
    ASSERT_TRUE(tmsg_error_mentions(m, "\"ms\""));
    proto_msg_free(m);

    /* Unknown keys are ignored (forward compatibility). */
    pk = tclient_begin(c, 8, "ping", 1);
    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_str(pk, "from_the_future", "yes"));
    ASSERT_OK(tclient_end(c));
    m = read_response(c, 5000);
    ASSERT_TRUE(tmsg_result_is_str(m, "pong"));
    proto_msg_free(m);
    tclient_free(c);
    stop_ok(&d);
}

TEST(debug_methods_off_by_default)
{
    struct tdaemon d;
    struct tclient *c;

    start(&d);
    c = connect_ok(&d);
    send_sleep(c, 1, 1);
    expect_error(c, 1, PROTO_ERROR_METHOD_NOT_FOUND);
    tclient_free(c);
    stop_ok(&d);
}

TEST(max_pending_answers_busy)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", "COARCH_MAX_PENDING=2", NULL};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;

    start_env(&d, env);
    c = connect_ok(&d);
    send_sleep(c, 1, 400);
    send_sleep(c, 2, 400);
    send_sleep(c, 3, 400);
    /* The third is over the limit and answered at once, before the two sleeping ones. */
    m = read_response(c, 5000);
    ASSERT_EQ(m->id, 3);
    ASSERT_EQ(tmsg_error_code(m), PROTO_ERROR_BUSY);
    ASSERT_TRUE(tmsg_error_mentions(m, "COARCH_MAX_PENDING"));
    proto_msg_free(m);
    for (int i = 0; i < 2; i++) {
        m = read_response(c, 5000);
        ASSERT_TRUE(m->id == 1 || m->id == 2);
        ASSERT_TRUE(tmsg_result_is_true(m));
        proto_msg_free(m);
    }
    /* Below the limit again. */
    send_sleep(c, 4, 1);
    expect_true(c, 4);
    tclient_free(c);
    stop_ok(&d);
}

TEST(max_connections_refuses_extra_clients)
{
    const char *const env[] = {"COARCH_MAX_CONNECTIONS=2", NULL};
    struct tdaemon d;
    struct tclient *a, *b, *extra;

    start_env(&d, env);
    a = connect_ok(&d);
    wait_connections(a, 1); /* tdaemon_start()'s probe connection is gone */
    b = connect_ok(&d);
    ASSERT_OK(tclient_ping(a));
    ASSERT_OK(tclient_ping(b));
    extra = connect_ok(&d); /* the kernel accepts; coarchd closes it at once */
    expect_refused(extra);
    tclient_free(extra);
    ASSERT_TRUE(tdaemon_log_wait(&d, "the limit is 2 (COARCH_MAX_CONNECTIONS)", 2000));

    tclient_free(b);
    wait_connections(a, 1);
    b = connect_ok(&d);
    ASSERT_OK(tclient_ping(b));
    tclient_free(a);
    tclient_free(b);
    stop_ok(&d);
}

TEST(idle_connections_closed_busy_ones_kept)
{
    const char *const env[] = {"COARCH_IDLE_TIMEOUT_S=1", NULL};
    struct tdaemon d;
    struct tclient *idle, *chatty, *subscriber;
    uint64_t t0;

    start_env(&d, env);
    idle = connect_ok(&d);
    chatty = connect_ok(&d);
    subscriber = connect_ok(&d);
    ASSERT_OK(tclient_ping(idle));
    subscribe(subscriber, "progress");

    t0 = now_ms();
    while (now_ms() - t0 < 2000) {
        ASSERT_OK(tclient_ping(chatty));
        usleep(200000);
    }
    ASSERT_EQ(tclient_wait_closed(idle, 3000), 0);
    ASSERT_OK(tclient_ping(chatty));
    ASSERT_OK(tclient_ping(subscriber)); /* subscribers wait for events by design */
    tclient_free(idle);
    tclient_free(chatty);
    tclient_free(subscriber);
    stop_ok(&d);
}

/* A client that pipelines without reading is throttled (the daemon stops reading), not
 * disconnected, and gets every answer once it reads. */
TEST(pipelined_flood_is_throttled_not_dropped)
{
    const char *const env[] = {"COARCH_MAX_OUTPUT_MB=1", "COARCH_MAX_FRAME_MB=1", NULL};
    static const uint8_t ping_frame[] = {0,    0,   0,   9,   0x94, 0x00, 0x01,
                                         0xa4, 'p', 'i', 'n', 'g',  0x80};
    uint8_t batch[sizeof(ping_frame) * 256];
    struct tdaemon d;
    struct tclient *c;
    size_t sent = 0, got = 0, pos = 0;
    bool blocked = false;
    int fd;

    start_env(&d, env);
    c = connect_ok(&d);
    fd = tclient_fd(c);
    for (size_t i = 0; i < 256; i++)
        memcpy(batch + i * sizeof(ping_frame), ping_frame, sizeof(ping_frame));
    ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);

    /* Write without reading until the socket pushes back (at most ~8 MB of requests). */
    while (sent < 600000) {
        ssize_t n = send(fd, batch + pos, sizeof(batch) - pos, MSG_NOSIGNAL);

        if (n < 0) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};

            ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
            /* Full for a moment, or for good?  The daemon may just be behind. */
            if (poll(&p, 1, 500) == 0) {
                blocked = true;
                break;
            }
            continue;
        }
        pos += (size_t)n;
        if (pos == sizeof(batch)) {
            sent += 256;
            pos = 0;
        }
    }
    ASSERT_TRUE(blocked);
    ASSERT_TRUE(tdaemon_log_wait(&d, "pausing reads", 2000));
    ASSERT_GT(sent, 1000);

    /* Every complete frame gets its answer, in order; then finish the partial one. */
    sent += pos / sizeof(ping_frame);
    pos %= sizeof(ping_frame);
    ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
    for (int round = 0; round < 2; round++) {
        while (got < sent) {
            struct proto_msg *m;

            ASSERT_OK(tclient_read(c, 10000, &m));
            ASSERT_TRUE(tmsg_result_is_str(m, "pong"));
            proto_msg_free(m);
            got++;
        }
        if (pos == 0)
            break;
        ASSERT_OK(tclient_send_raw(c, ping_frame + pos, sizeof(ping_frame) - pos));
        pos = 0;
        sent++;
    }
    ASSERT_OK(tclient_ping(c));
    ASSERT_FALSE(tdaemon_log_wait(&d, "client is not reading", 0));
    tclient_free(c);
    stop_ok(&d);
}

/* Broadcast reaches subscribers only; one that never reads is cut off past max_output. */
TEST(notifications_to_subscribers_slow_one_closed)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", "COARCH_MAX_OUTPUT_MB=1",
                               "COARCH_MAX_FRAME_MB=1", NULL};
    struct tdaemon d;
    struct tclient *ctl, *fast, *slow, *bystander;
    bool slow_closed = false;
    struct proto_msg *m;

    start_env(&d, env);
    ctl = connect_ok(&d);
    fast = connect_ok(&d);
    slow = connect_ok(&d);
    bystander = connect_ok(&d);
    subscribe(fast, "debug");
    subscribe(slow, "debug");
    subscribe(bystander, "progress");

    for (int round = 0; round < 40 && !slow_closed; round++) {
        uint32_t id = tclient_next_id(ctl);
        msgpack_packer *pk = tclient_begin(ctl, id, "debug.notify", 2);
        int64_t delivered;

        ASSERT_TRUE(pk != NULL);
        ASSERT_OK(proto_pack_kv_int(pk, "count", 12));
        ASSERT_OK(proto_pack_kv_int(pk, "bytes", 60000));
        ASSERT_OK(tclient_end(ctl));
        m = read_response(ctl, 5000);
        ASSERT_EQ(m->id, id);
        ASSERT_EQ(m->result.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        delivered = (int64_t)m->result.via.u64;
        proto_msg_free(m);
        ASSERT_GE(delivered, 12);
        for (int64_t i = 0; i < 12; i++) {
            ASSERT_OK(tclient_read(fast, 5000, &m));
            ASSERT_EQ(m->type, PROTO_MSG_NOTIFICATION);
            ASSERT_TRUE(proto_msg_method_is(m, "debug.notify"));
            ASSERT_EQ(map_uint(&m->params, "seq"), (uint64_t)i);
            proto_msg_free(m);
        }
        slow_closed = delivered < 24;
    }
    ASSERT_TRUE(slow_closed);
    ASSERT_TRUE(tdaemon_log_wait(&d, "not reading its notifications", 2000));
    ASSERT_GT(tclient_wait_closed(slow, 5000), 0); /* what it had, then end of stream */

    /* The bystander (other event) got nothing: its next message is a ping's answer. */
    ASSERT_OK(tclient_send(bystander, 99, "ping"));
    ASSERT_OK(tclient_read(bystander, 5000, &m));
    ASSERT_EQ(m->type, PROTO_MSG_RESPONSE);
    ASSERT_EQ(m->id, 99);
    proto_msg_free(m);
    ASSERT_OK(tclient_ping(fast));
    tclient_free(ctl);
    tclient_free(fast);
    tclient_free(slow);
    tclient_free(bystander);
    stop_ok(&d);
}

/* ---- connection lifecycle --------------------------------------------------------------- */

/* A client that half-closes after sending (`... | nc -U`) still gets every answer. */
TEST(half_closed_client_gets_its_answers)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", NULL};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;
    bool seen[3] = {false};

    start_env(&d, env);
    c = connect_ok(&d);
    send_sleep(c, 1, 300);
    ASSERT_OK(tclient_send(c, 2, "ping"));
    ASSERT_OK(tclient_send(c, 3, "version"));
    ASSERT_EQ(shutdown(tclient_fd(c), SHUT_WR), 0);
    for (int i = 0; i < 3; i++) {
        m = read_response(c, 5000);
        ASSERT_TRUE(m->id >= 1 && m->id <= 3 && !seen[m->id - 1]);
        ASSERT_EQ(tmsg_error_code(m), 0);
        seen[m->id - 1] = true;
        proto_msg_free(m);
    }
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
    tclient_free(c);
    stop_ok(&d);
}

/* A worker finishing for a client that has gone: the answer is dropped, nothing leaks. */
TEST(answer_after_client_left_is_dropped)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", NULL};
    struct tdaemon d;
    struct tclient *c, *other;

    start_env(&d, env);
    other = connect_ok(&d);
    c = connect_ok(&d);
    send_sleep(c, 1, 300);
    send_sleep(c, 2, 300);
    usleep(50000);
    tclient_free(c);
    /* End of stream may be a half-close, so the connection lives until its answers are
     * due; writing them fails, and then it goes. */
    wait_connections(other, 1);
    ASSERT_TRUE(tdaemon_log_wait(&d, "write failed", 0) || tdaemon_log_wait(&d, "dropped", 0));
    ASSERT_OK(tclient_ping(other));
    tclient_free(other);
    stop_ok(&d); /* in the sanitizer build: no leaked request or connection */
}
