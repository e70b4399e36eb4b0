/*
 * helpers.c - see helpers.h.
 */
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

void require_coarchd(void)
{
    if (!tspawn_coarchd())
        TEST_SKIP("$COARCHD is not set or not executable (run through meson test)");
}

void start_env(struct tdaemon *d, const char *const *env)
{
    struct tspawn_opts o = {.env = env, .listen_fd = -1};

    require_coarchd();
    ASSERT_OK(tdaemon_start(d, &o));
}

void start(struct tdaemon *d)
{
    start_env(d, NULL);
}

struct tclient *connect_ok(const struct tdaemon *d)
{
    struct tclient *c = NULL;

    ASSERT_OK(tclient_connect(d->socket, &c));
    return c;
}

/* A fresh connection pings fine: the daemon is alive and serving. */
void assert_serving(const struct tdaemon *d)
{
    struct tclient *c = connect_ok(d);

    ASSERT_OK(tclient_ping(c));
    tclient_free(c);
}

int wait_exit_logged(struct tdaemon *d, int timeout_ms)
{
    int code = tdaemon_wait_exit(d, timeout_ms);

    if (code != 0)
        tdaemon_dump_log(d);
    return code;
}

/* SIGTERM and a clean exit (0: no leak, loop closed, socket removed). */
void stop_ok(struct tdaemon *d)
{
    ASSERT_OK(tdaemon_signal(d, SIGTERM));
    ASSERT_EQ(wait_exit_logged(d, 15000), 0);
    ASSERT_EQ(access(d->socket, F_OK), -1);
}

void send_sleep(struct tclient *c, uint32_t id, int64_t ms)
{
    msgpack_packer *pk = tclient_begin(c, id, "debug.sleep", 1);

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_int(pk, "ms", ms));
    ASSERT_OK(tclient_end(c));
}

struct proto_msg *read_response(struct tclient *c, int timeout_ms)
{
    struct proto_msg *m = NULL;

    ASSERT_OK(tclient_read_response(c, timeout_ms, NULL, &m));
    return m;
}

void expect_error(struct tclient *c, uint32_t id, int64_t code)
{
    struct proto_msg *m = read_response(c, 5000);

    ASSERT_EQ(m->id, id);
    ASSERT_EQ(tmsg_error_code(m), code);
    proto_msg_free(m);
}

void expect_true(struct tclient *c, uint32_t id)
{
    struct proto_msg *m = read_response(c, 10000);

    ASSERT_EQ(m->id, id);
    ASSERT_TRUE(tmsg_result_is_true(m));
    proto_msg_free(m);
}

struct proto_msg *status(struct tclient *c)
{
    struct proto_msg *m = NULL;

    ASSERT_OK(tclient_call(c, "status", &m));
    ASSERT_EQ(tmsg_error_code(m), 0);
    ASSERT_EQ(m->result.type, MSGPACK_OBJECT_MAP);
    return m;
}

uint64_t map_uint(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;

    if (proto_get_uint(map, key, &v) < 0)
        test_fail(__FILE__, __LINE__, "no unsigned integer \"%s\" in the map", key);
    return v;
}

/* status.<key>, or status.<section>.<key> */
uint64_t status_uint(struct tclient *c, const char *section, const char *key)
{
    struct proto_msg *m = status(c);
    const msgpack_object *map = section ? proto_map_get(&m->result, section) : &m->result;
    uint64_t v;

    ASSERT_TRUE(map != NULL);
    v = map_uint(map, key);
    proto_msg_free(m);
    return v;
}

bool map_str_is(const msgpack_object *map, const char *key, const char *want)
{
    const char *s;
    size_t len;

    return proto_get_str(map, key, &s, &len) == 0 && len == strlen(want) &&
           memcmp(s, want, len) == 0;
}

/* Frames raw payload bytes. */
size_t frame(uint8_t *out, const void *payload, uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    memcpy(out + 4, payload, len);
    return len + 4;
}

void send_payload(struct tclient *c, const void *payload, uint32_t len)
{
    uint8_t buf[4096];

    ASSERT_LE(len + 4, sizeof(buf));
    ASSERT_OK(tclient_send_raw(c, buf, frame(buf, payload, len)));
}

uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls status until connections == want (connections close asynchronously). */
void wait_connections(struct tclient *c, uint64_t want)
{
    uint64_t deadline = now_ms() + 5000, n;

    while ((n = status_uint(c, NULL, "connections")) != want && now_ms() < deadline)
        usleep(10000);
    ASSERT_EQ(n, want);
}

/* The daemon accepted c and closed it without answering (refusals close at once, so the
 * request may not even be sendable any more). */
void expect_refused(struct tclient *c)
{
    int r = tclient_send(c, 1, "ping");

    ASSERT_TRUE(r == 0 || r == -EPIPE || r == -ECONNRESET);
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
}

void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");

    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fputs(text, f) >= 0, 1);
    ASSERT_EQ(fclose(f), 0);
}

/* Runs coarchd with args/env to completion; returns its exit code, log in d->log. */
int run_to_exit(struct tdaemon *d, const char *const *args, const char *const *env)
{
    struct tspawn_opts o = {.args = args, .env = env, .listen_fd = -1};

    require_coarchd();
    ASSERT_OK(tdaemon_init(d));
    ASSERT_OK(tdaemon_spawn(d, &o));
    return tdaemon_wait_exit(d, 10000);
}

void subscribe(struct tclient *c, const char *event)
{
    uint32_t id = tclient_next_id(c);
    msgpack_packer *pk = tclient_begin(c, id, "subscribe", 1);

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_str(pk, "events"));
    ASSERT_OK(msgpack_pack_array(pk, 2));
    ASSERT_OK(proto_pack_str(pk, event));
    ASSERT_OK(proto_pack_str(pk, "no-such-event")); /* ignored */
    ASSERT_OK(tclient_end(c));
    expect_true(c, id);
}
