/*
 * test-daemon.c - drives the real coarchd ($COARCHD) through proto/: the foundation methods,
 * framing errors and limits, signals, systemd integration and single-instance rules.
 *
 * Each test starts its own daemon in a fresh temporary directory (spawn.h) and ends it with
 * SIGTERM or the shutdown method, asserting exit status 0 - which, in the sanitizer build, also
 * proves the daemon leak-free and the event loop closed (uv_loop_close() == 0).  Anything a
 * failing test leaves running is killed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "spawn.h"
#include "test.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static void require_coarchd(void)
{
    if (!tspawn_coarchd())
        TEST_SKIP("$COARCHD is not set or not executable (run through meson test)");
}

static void start_env(struct tdaemon *d, const char *const *env)
{
    struct tspawn_opts o = {.env = env, .listen_fd = -1};

    require_coarchd();
    ASSERT_OK(tdaemon_start(d, &o));
}

static void start(struct tdaemon *d)
{
    start_env(d, NULL);
}

static struct tclient *connect_ok(const struct tdaemon *d)
{
    struct tclient *c = NULL;

    ASSERT_OK(tclient_connect(d->socket, &c));
    return c;
}

/* A fresh connection pings fine: the daemon is alive and serving. */
static void assert_serving(const struct tdaemon *d)
{
    struct tclient *c = connect_ok(d);

    ASSERT_OK(tclient_ping(c));
    tclient_free(c);
}

static int wait_exit_logged(struct tdaemon *d, int timeout_ms)
{
    int code = tdaemon_wait_exit(d, timeout_ms);

    if (code != 0)
        tdaemon_dump_log(d);
    return code;
}

/* SIGTERM and a clean exit (0: no leak, loop closed, socket removed). */
static void stop_ok(struct tdaemon *d)
{
    ASSERT_OK(tdaemon_signal(d, SIGTERM));
    ASSERT_EQ(wait_exit_logged(d, 15000), 0);
    ASSERT_EQ(access(d->socket, F_OK), -1);
}

static void send_sleep(struct tclient *c, uint32_t id, int64_t ms)
{
    msgpack_packer *pk = tclient_begin(c, id, "debug.sleep", 1);

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_int(pk, "ms", ms));
    ASSERT_OK(tclient_end(c));
}

static struct proto_msg *read_response(struct tclient *c, int timeout_ms)
{
    struct proto_msg *m = NULL;

    ASSERT_OK(tclient_read_response(c, timeout_ms, NULL, &m));
    return m;
}

static void expect_error(struct tclient *c, uint32_t id, int64_t code)
{
    struct proto_msg *m = read_response(c, 5000);

    ASSERT_EQ(m->id, id);
    ASSERT_EQ(tmsg_error_code(m), code);
    proto_msg_free(m);
}

static void expect_true(struct tclient *c, uint32_t id)
{
    struct proto_msg *m = read_response(c, 10000);

    ASSERT_EQ(m->id, id);
    ASSERT_TRUE(tmsg_result_is_true(m));
    proto_msg_free(m);
}

static struct proto_msg *status(struct tclient *c)
{
    struct proto_msg *m = NULL;

    ASSERT_OK(tclient_call(c, "status", &m));
    ASSERT_EQ(tmsg_error_code(m), 0);
    ASSERT_EQ(m->result.type, MSGPACK_OBJECT_MAP);
    return m;
}

static uint64_t map_uint(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;

    if (proto_get_uint(map, key, &v) < 0)
        test_fail(__FILE__, __LINE__, "no unsigned integer \"%s\" in the map", key);
    return v;
}

/* status.<key>, or status.<section>.<key> */
static uint64_t status_uint(struct tclient *c, const char *section, const char *key)
{
    struct proto_msg *m = status(c);
    const msgpack_object *map = section ? proto_map_get(&m->result, section) : &m->result;
    uint64_t v;

    ASSERT_TRUE(map != NULL);
    v = map_uint(map, key);
    proto_msg_free(m);
    return v;
}

static bool map_str_is(const msgpack_object *map, const char *key, const char *want)
{
    const char *s;
    size_t len;

    return proto_get_str(map, key, &s, &len) == 0 && len == strlen(want) &&
           memcmp(s, want, len) == 0;
}

/* Frames raw payload bytes. */
static size_t frame(uint8_t *out, const void *payload, uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    memcpy(out + 4, payload, len);
    return len + 4;
}

static void send_payload(struct tclient *c, const void *payload, uint32_t len)
{
    uint8_t buf[4096];

    ASSERT_LE(len + 4, sizeof(buf));
    ASSERT_OK(tclient_send_raw(c, buf, frame(buf, payload, len)));
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls status until connections == want (connections close asynchronously). */
static void wait_connections(struct tclient *c, uint64_t want)
{
    uint64_t deadline = now_ms() + 5000, n;

    while ((n = status_uint(c, NULL, "connections")) != want && now_ms() < deadline)
        usleep(10000);
    ASSERT_EQ(n, want);
}

/* The daemon accepted c and closed it without answering (refusals close at once, so the
 * request may not even be sendable any more). */
static void expect_refused(struct tclient *c)
{
    int r = tclient_send(c, 1, "ping");

    ASSERT_TRUE(r == 0 || r == -EPIPE || r == -ECONNRESET);
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");

    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fputs(text, f) >= 0, 1);
    ASSERT_EQ(fclose(f), 0);
}

/* ---- command line and configuration ----------------------------------------------------- */

/* Runs coarchd with args/env to completion; returns its exit code, log in d->log. */
static int run_to_exit(struct tdaemon *d, const char *const *args, const char *const *env)
{
    struct tspawn_opts o = {.args = args, .env = env, .listen_fd = -1};

    require_coarchd();
    ASSERT_OK(tdaemon_init(d));
    ASSERT_OK(tdaemon_spawn(d, &o));
    return tdaemon_wait_exit(d, 10000);
}

TEST(cli_version_and_help)
{
    struct tdaemon d;
    char *log;

    ASSERT_EQ(run_to_exit(&d, (const char *const[]){"--version", NULL}, NULL), 0);
    log = tdaemon_log(&d);
    ASSERT_TRUE(strstr(log, "coarchd 0.1.0 (protocol 1)") != NULL);
    free(log);

    ASSERT_EQ(run_to_exit(&d, (const char *const[]){"--help", NULL}, NULL), 0);
    log = tdaemon_log(&d);
    ASSERT_TRUE(strstr(log, "--data-dir") && strstr(log, "Exit status"));
    free(log);
}

TEST(cli_usage_errors_exit_2)
{
    struct tdaemon d;

    ASSERT_EQ(run_to_exit(&d, (const char *const[]){"--bogus", NULL}, NULL), 2);
    ASSERT_EQ(run_to_exit(&d, (const char *const[]){"--log-level", "loud", NULL}, NULL), 2);
    ASSERT_TRUE(tdaemon_log_wait(&d, "invalid --log-level \"loud\"", 0));
    ASSERT_EQ(run_to_exit(&d, (const char *const[]){"extra", NULL}, NULL), 2);
}

TEST(bad_config_refused_with_clear_message)
{
    struct tdaemon d;

    ASSERT_EQ(run_to_exit(&d, NULL, (const char *const[]){"COARCH_MAX_CONNECTIONS=0", NULL}), 2);
    ASSERT_TRUE(
        tdaemon_log_wait(&d, "COARCH_MAX_CONNECTIONS=\"0\": expected an integer in [1, 65536]", 0));
    ASSERT_EQ(run_to_exit(&d, NULL, (const char *const[]){"COARCH_IDLE_TIMEOUT_S=10s", NULL}), 2);
    ASSERT_TRUE(tdaemon_log_wait(&d, "COARCH_IDLE_TIMEOUT_S", 0));
    ASSERT_EQ(
        run_to_exit(&d, NULL,
                    (const char *const[]){"COARCH_MAX_OUTPUT_MB=1", "COARCH_MAX_FRAME_MB=2", NULL}),
        2);
    ASSERT_TRUE(tdaemon_log_wait(&d, "must be at least COARCH_MAX_FRAME_MB", 0));
    ASSERT_EQ(run_to_exit(&d, NULL, (const char *const[]){"COARCH_LOG_LEVEL=chatty", NULL}), 2);
    /* An explicitly named config file must exist. */
    ASSERT_EQ(run_to_exit(&d, NULL, (const char *const[]){"COARCH_CONFIG=/nonexistent.conf", NULL}),
              1);
    ASSERT_TRUE(tdaemon_log_wait(&d, "/nonexistent.conf", 0));
}

/* ---- the foundation methods ------------------------------------------------------------- */

TEST(ping_version_status)
{
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;
    const msgpack_object *mem, *backends;

    start(&d);
    c = connect_ok(&d);
    ASSERT_OK(tclient_ping(c));

    ASSERT_OK(tclient_call(c, "version", &m));
    ASSERT_EQ(tmsg_error_code(m), 0);
    ASSERT_TRUE(map_str_is(&m->result, "version", "0.1.0"));
    ASSERT_EQ(map_uint(&m->result, "protocol"), PROTO_VERSION);
    backends = proto_map_get(&m->result, "backends");
    ASSERT_TRUE(backends && backends->type == MSGPACK_OBJECT_ARRAY &&
                backends->via.array.size >= 1);
    proto_msg_free(m);

    m = status(c);
    ASSERT_EQ(map_uint(&m->result, "pid"), (uint64_t)d.pid);
    ASSERT_TRUE(map_str_is(&m->result, "version", "0.1.0"));
    ASSERT_EQ(map_uint(&m->result, "protocol"), PROTO_VERSION);
    (void)map_uint(&m->result, "uptime_ms");
    ASSERT_TRUE(map_str_is(&m->result, "socket", d.socket));
    ASSERT_TRUE(map_str_is(&m->result, "data_dir", d.data_dir));
    ASSERT_EQ(map_uint(&m->result, "connections"), 1);
    ASSERT_EQ(map_uint(&m->result, "requests"), 2); /* ping and version; status counts after */
    mem = proto_map_get(&m->result, "memory");
    ASSERT_TRUE(mem != NULL);
    ASSERT_GT(map_uint(mem, "rss_bytes"), 1024 * 1024);
    (void)map_uint(mem, "limit_bytes");
    ASSERT_TRUE(map_str_is(&m->result, "state", "running"));
    proto_msg_free(m);
    ASSERT_EQ(status_uint(c, NULL, "requests"), 3);
    ASSERT_EQ(status_uint(c, "config", "max_connections"), 128);

    tclient_free(c);
    stop_ok(&d);
}

TEST(socket_and_data_dir_are_private)
{
    struct tdaemon d;
    char path[PATH_MAX + 32], buf[32] = {0};
    struct stat st;
    int fd;

    start(&d);
    ASSERT_EQ(lstat(d.socket, &st), 0);
    ASSERT_TRUE(S_ISSOCK(st.st_mode));
    ASSERT_EQ(st.st_mode & 07777, 0600);
    snprintf(path, sizeof(path), "%s/run", d.dir);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0700);
    ASSERT_EQ(stat(d.data_dir, &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0700);

    snprintf(path, sizeof(path), "%s/coarchd.lock", d.data_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_GT(read(fd, buf, sizeof(buf) - 1), 0);
    close(fd);
    ASSERT_EQ(atoi(buf), d.pid);
    stop_ok(&d);
}

TEST(default_socket_under_xdg_runtime_dir)
{
    char env_xdg[PATH_MAX + 32], env_data[PATH_MAX + 32], sock[PATH_MAX + 32];
    struct tspawn_opts o = {.listen_fd = -1, .no_paths = true};
    struct tdaemon d;
    struct stat st;

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    snprintf(env_xdg, sizeof(env_xdg), "XDG_RUNTIME_DIR=%s", d.dir);
    snprintf(env_data, sizeof(env_data), "COARCH_DATA_DIR=%s", d.data_dir);
    o.env = (const char *const[]){env_xdg, env_data, NULL};
    ASSERT_OK(tdaemon_spawn(&d, &o));
    snprintf(sock, sizeof(sock), "%s/coarch/coarchd.sock", d.dir);
    ASSERT_OK(tdaemon_wait_socket(&d, sock, 10000));
    snprintf(env_xdg, sizeof(env_xdg), "%s/coarch", d.dir);
    ASSERT_EQ(stat(env_xdg, &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0700);
    ASSERT_OK(tdaemon_signal(&d, SIGTERM));
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    ASSERT_EQ(access(sock, F_OK), -1);
}

TEST(command_line_overrides_environment)
{
    char sock[PATH_MAX + 32], data[PATH_MAX + 32];
    struct tspawn_opts o = {.listen_fd = -1};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    snprintf(sock, sizeof(sock), "%s/cli.sock", d.dir);
    snprintf(data, sizeof(data), "%s/cli-data", d.dir);
    o.args =
        (const char *const[]){"--socket", sock, "--data-dir", data, "--log-level", "info", NULL};
    ASSERT_OK(tdaemon_spawn(&d, &o));
    ASSERT_OK(tdaemon_wait_socket(&d, sock, 10000));
    ASSERT_EQ(access(d.socket, F_OK), -1); /* $COARCH_SOCKET lost to --socket */
    ASSERT_OK(tclient_connect(sock, &c));
    m = status(c);
    ASSERT_TRUE(map_str_is(&m->result, "data_dir", data));
    ASSERT_TRUE(map_str_is(proto_map_get(&m->result, "config"), "log_level", "info"));
    proto_msg_free(m);
    tclient_free(c);
    ASSERT_OK(tdaemon_signal(&d, SIGTERM));
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define N_CLIENTS 100
#define N_REQUESTS 100
#define PIPELINE 4

struct client_job {
    const char *socket;
    atomic_int *failures;
    char error[128];
};

static void *client_thread(void *arg)
{
    struct client_job *job = arg;
    struct tclient *c = NULL;
    int r = tclient_connect(job->socket, &c);

    for (uint32_t base = 0; r == 0 && base < N_REQUESTS; base += PIPELINE) {
        bool seen[PIPELINE] = {false};

        for (uint32_t i = 0; i < PIPELINE && r == 0; i++)
            r = tclient_send(c, 1000 + base + i, "ping");
        for (uint32_t i = 0; i < PIPELINE && r == 0; i++) {
            struct proto_msg *m;

            r = tclient_read_response(c, 20000, NULL, &m);
            if (r < 0)
                break;
            if (m->id < 1000 + base || m->id >= 1000 + base + PIPELINE ||
                seen[m->id - 1000 - base] || !tmsg_result_is_str(m, "pong"))
                r = -EPROTO;
            else
                seen[m->id - 1000 - base] = true;
            proto_msg_free(m);
        }
    }
    if (r < 0) {
        snprintf(job->error, sizeof(job->error), "%s", strerror(-r));
        atomic_fetch_add(job->failures, 1);
    }
    tclient_free(c);
    return NULL;
}

TEST(hundred_concurrent_clients_pipelining)
{
    static struct client_job jobs[N_CLIENTS];
    pthread_t threads[N_CLIENTS];
    atomic_int failures = 0;
    struct tdaemon d;
    struct tclient *c;

    start(&d);
    for (int i = 0; i < N_CLIENTS; i++) {
        jobs[i] = (struct client_job){.socket = d.socket, .failures = &failures};
        ASSERT_EQ(pthread_create(&threads[i], NULL, client_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N_CLIENTS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < N_CLIENTS; i++)
        if (jobs[i].error[0])
            fprintf(stderr, "  client %d: %s\n", i, jobs[i].error);
    ASSERT_EQ(atomic_load(&failures), 0);

    c = connect_ok(&d);
    ASSERT_EQ(status_uint(c, NULL, "requests"), N_CLIENTS * N_REQUESTS);
    wait_connections(c, 1);
    tclient_free(c);
    stop_ok(&d);
}

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

static void subscribe(struct tclient *c, const char *event)
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

/* ---- peer credentials ------------------------------------------------------------------- */

/* In a child as uid/gid 65534: connect and ping.  Exit 0 = refused the expected way. */
static int other_uid_child(const char *socket, bool expect_eacces)
{
    struct tclient *c;
    int r;

    if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
        setresuid(65534, 65534, 65534) < 0)
        return 10;
    r = tclient_connect(socket, &c);
    if (expect_eacces)
        return r == -EACCES ? 0 : 11;
    if (r < 0)
        return 12;
    r = tclient_send(c, 1, "ping");
    if (r < 0 && r != -EPIPE && r != -ECONNRESET)
        return 13;
    r = tclient_wait_closed(c, 5000);
    tclient_free(c);
    return r == 0 ? 0 : 14; /* closed, and not a single answer */
}

static int run_as_other_uid(const char *socket, bool expect_eacces)
{
    int status;
    pid_t pid = fork();

    if (pid == 0)
        _exit(other_uid_child(socket, expect_eacces));
    if (pid < 0)
        return -errno;
    tspawn_track(pid);
    waitpid(pid, &status, 0);
    tspawn_untrack(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

TEST(other_uid_is_refused)
{
    char run_dir[PATH_MAX + 8];
    struct tdaemon d;

    if (geteuid() != 0)
        TEST_SKIP("needs root to connect as another uid");
    start(&d);
    /* Let uid 65534 reach the socket: first the 0600 socket itself refuses it... */
    snprintf(run_dir, sizeof(run_dir), "%s/run", d.dir);
    ASSERT_EQ(chmod(d.dir, 0755), 0);
    ASSERT_EQ(chmod(run_dir, 0755), 0);
    ASSERT_EQ(run_as_other_uid(d.socket, true), 0);
    /* ...then, with the socket opened up, SO_PEERCRED does. */
    ASSERT_EQ(chmod(d.socket, 0666), 0);
    ASSERT_EQ(run_as_other_uid(d.socket, false), 0);
    ASSERT_TRUE(tdaemon_log_wait(&d, "refusing a connection from uid 65534", 2000));
    assert_serving(&d);
    stop_ok(&d);
}

/* ---- single instance -------------------------------------------------------------------- */

TEST(second_instance_on_same_data_dir_refused)
{
    char env_sock[PATH_MAX + 32], env_data[PATH_MAX + 32], needle[PATH_MAX + 64];
    struct tdaemon first, second;
    struct tspawn_opts o = {.listen_fd = -1};

    start(&first);
    ASSERT_OK(tdaemon_init(&second));
    snprintf(env_sock, sizeof(env_sock), "COARCH_SOCKET=%s/other.sock", second.dir);
    snprintf(env_data, sizeof(env_data), "COARCH_DATA_DIR=%s", first.data_dir);
    o.env = (const char *const[]){env_sock, env_data, NULL};
    ASSERT_OK(tdaemon_spawn(&second, &o));
    ASSERT_EQ(tdaemon_wait_exit(&second, 10000), 3);
    snprintf(needle, sizeof(needle), "data dir %s is in use by another coarchd (pid %d)",
             first.data_dir, (int)first.pid);
    if (!tdaemon_log_wait(&second, needle, 0))
        tdaemon_dump_log(&second);
    ASSERT_TRUE(tdaemon_log_wait(&second, needle, 0));
    assert_serving(&first);
    stop_ok(&first);
}

TEST(second_instance_on_same_socket_refused)
{
    char env_sock[PATH_MAX + 32], needle[PATH_MAX + 64];
    struct tdaemon first, second;
    struct tspawn_opts o = {.listen_fd = -1};

    start(&first);
    ASSERT_OK(tdaemon_init(&second)); /* its own data dir */
    snprintf(env_sock, sizeof(env_sock), "COARCH_SOCKET=%s", first.socket);
    o.env = (const char *const[]){env_sock, NULL};
    ASSERT_OK(tdaemon_spawn(&second, &o));
    ASSERT_EQ(tdaemon_wait_exit(&second, 10000), 3);
    snprintf(needle, sizeof(needle), "socket %s is in use by another coarchd (pid %d)",
             first.socket, (int)first.pid);
    ASSERT_TRUE(tdaemon_log_wait(&second, needle, 0));
    assert_serving(&first); /* its socket was not touched */
    stop_ok(&first);
}

TEST(stale_socket_replaced_non_socket_kept)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct tspawn_opts o = {.listen_fd = -1};
    char run_dir[PATH_MAX + 8];
    struct tdaemon d;
    struct stat st;
    int fd;

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    snprintf(run_dir, sizeof(run_dir), "%s/run", d.dir);
    ASSERT_EQ(mkdir(run_dir, 0700), 0);

    /* A regular file where the socket goes: refused, and left alone. */
    write_file(d.socket, "not a socket\n");
    ASSERT_OK(tdaemon_spawn(&d, &o));
    ASSERT_EQ(tdaemon_wait_exit(&d, 10000), 1);
    ASSERT_TRUE(tdaemon_log_wait(&d, "exists and is not a socket; refusing to remove it", 0));
    ASSERT_EQ(stat(d.socket, &st), 0);
    ASSERT_TRUE(S_ISREG(st.st_mode));
    ASSERT_EQ(unlink(d.socket), 0);

    /* A socket file nobody listens on (a daemon killed with -9): removed and replaced. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    strcpy(sa.sun_path, d.socket);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    ASSERT_OK(tdaemon_spawn(&d, &o));
    ASSERT_OK(tdaemon_wait_socket(&d, d.socket, 10000));
    ASSERT_TRUE(tdaemon_log_wait(&d, "removed stale socket", 0));
    assert_serving(&d);
    stop_ok(&d);
}

/* A live listener that is not coarchd (no lock file) is not replaced either. */
TEST(live_foreign_socket_not_stolen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct tspawn_opts o = {.listen_fd = -1};
    char run_dir[PATH_MAX + 8];
    struct tdaemon d;
    int fd;

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    snprintf(run_dir, sizeof(run_dir), "%s/run", d.dir);
    ASSERT_EQ(mkdir(run_dir, 0700), 0);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    strcpy(sa.sun_path, d.socket);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(listen(fd, 4), 0);
    ASSERT_OK(tdaemon_spawn(&d, &o));
    ASSERT_EQ(tdaemon_wait_exit(&d, 10000), 3);
    ASSERT_TRUE(tdaemon_log_wait(&d, "another process is listening on", 0));
    ASSERT_EQ(access(d.socket, F_OK), 0);
    close(fd);
}

/* ---- stopping --------------------------------------------------------------------------- */

static void wait_gone(const char *path)
{
    uint64_t deadline = now_ms() + 5000;

    while (access(path, F_OK) == 0 && now_ms() < deadline)
        usleep(5000);
    ASSERT_EQ(access(path, F_OK), -1);
}

TEST(sigterm_finishes_in_flight_work_then_exits_0)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", NULL};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;

    start_env(&d, env);
    c = connect_ok(&d);
    send_sleep(c, 1, 600);
    usleep(100000); /* dispatched and sleeping on a worker */
    ASSERT_OK(tdaemon_signal(&d, SIGTERM));
    wait_gone(d.socket); /* stopped accepting at once */

    /* New requests on an open connection: shutting_down; the one in flight still finishes. */
    ASSERT_OK(tclient_send(c, 2, "ping"));
    expect_error(c, 2, PROTO_ERROR_SHUTTING_DOWN);
    m = read_response(c, 5000);
    ASSERT_EQ(m->id, 1);
    ASSERT_TRUE(tmsg_result_is_true(m));
    proto_msg_free(m);
    ASSERT_EQ(tclient_wait_closed(c, 5000), 0);
    tclient_free(c);
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    ASSERT_TRUE(tdaemon_log_wait(&d, "stopping (SIGTERM)", 0));
}

TEST(sigint_exits_0)
{
    struct tdaemon d;

    start(&d);
    ASSERT_OK(tdaemon_signal(&d, SIGINT));
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    ASSERT_EQ(access(d.socket, F_OK), -1);
}

TEST(shutdown_method_answers_then_exits_0)
{
    const char *const env[] = {"COARCH_DEBUG_METHODS=1", NULL};
    struct tdaemon d;
    struct tclient *worker, *admin, *idle;

    start_env(&d, env);
    worker = connect_ok(&d);
    admin = connect_ok(&d);
    idle = connect_ok(&d);
    ASSERT_OK(tclient_ping(idle));
    send_sleep(worker, 1, 500);
    usleep(100000);

    ASSERT_OK(tclient_send(admin, 7, "shutdown"));
    expect_true(admin, 7);
    ASSERT_OK(tclient_send(admin, 8, "shutdown"));
    expect_error(admin, 8, PROTO_ERROR_SHUTTING_DOWN);
    expect_true(worker, 1);
    ASSERT_EQ(tclient_wait_closed(worker, 5000), 0);
    ASSERT_EQ(tclient_wait_closed(admin, 5000), 0);
    ASSERT_EQ(tclient_wait_closed(idle, 5000), 0);
    tclient_free(worker);
    tclient_free(admin);
    tclient_free(idle);
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    ASSERT_EQ(access(d.socket, F_OK), -1);
}

/* ---- systemd ---------------------------------------------------------------------------- */

TEST(socket_activation)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char act[PATH_MAX + 16], env_sock[PATH_MAX + 32];
    struct tspawn_opts o = {.listen_fd = -1};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;
    int fd;

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    snprintf(act, sizeof(act), "%s/act.sock", d.dir);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    strcpy(sa.sun_path, act);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(listen(fd, 16), 0);

    /* $COARCH_SOCKET names another path: the passed socket must win, the path stay unused. */
    snprintf(env_sock, sizeof(env_sock), "COARCH_SOCKET=%s", d.socket);
    o.env = (const char *const[]){env_sock, NULL};
    o.listen_fd = fd;
    ASSERT_OK(tdaemon_spawn(&d, &o));
    close(fd);
    ASSERT_OK(tdaemon_wait_socket(&d, act, 10000));
    ASSERT_OK(tclient_connect(act, &c));
    ASSERT_OK(tclient_ping(c));
    m = status(c);
    ASSERT_TRUE(map_str_is(&m->result, "socket", act));
    proto_msg_free(m);
    tclient_free(c);
    ASSERT_EQ(access(d.socket, F_OK), -1);

    ASSERT_OK(tdaemon_signal(&d, SIGTERM));
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    ASSERT_EQ(access(act, F_OK), 0); /* systemd's socket file is not ours to remove */
}

/* Collects datagrams from the notify socket until `needle` shows up. */
static bool notify_wait(int fd, const char *needle, int timeout_ms, int *count)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char buf[1024];
        uint64_t now = now_ms();
        ssize_t n;

        if (now >= deadline)
            return false;
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strstr(buf, needle)) {
            if (count)
                (*count)++;
            return true;
        }
    }
}

TEST(sd_notify_ready_watchdog_reload_stopping)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char env_notify[PATH_MAX + 32];
    struct tspawn_opts o = {.listen_fd = -1};
    struct tdaemon d;
    int fd, pings = 0;

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", d.dir);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", sa.sun_path);
    o.env = (const char *const[]){env_notify, "WATCHDOG_USEC=100000", NULL};
    ASSERT_OK(tdaemon_spawn(&d, &o));

    ASSERT_TRUE(notify_wait(fd, "READY=1\nSTATUS=Listening on ", 10000, NULL));
    ASSERT_OK(tdaemon_wait_socket(&d, d.socket, 1000));
    for (int i = 0; i < 3; i++)
        ASSERT_TRUE(notify_wait(fd, "WATCHDOG=1", 1000, &pings));
    ASSERT_EQ(pings, 3);
    ASSERT_OK(tdaemon_signal(&d, SIGHUP));
    ASSERT_TRUE(notify_wait(fd, "RELOADING=1\nMONOTONIC_USEC=", 5000, NULL));
    ASSERT_TRUE(notify_wait(fd, "READY=1", 5000, NULL));
    ASSERT_OK(tdaemon_signal(&d, SIGTERM));
    ASSERT_TRUE(notify_wait(fd, "STOPPING=1", 5000, NULL));
    ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    close(fd);
}

TEST(sighup_reloads_config_file_and_keeps_it_on_errors)
{
    char conf[PATH_MAX + 32];
    struct tdaemon d;
    struct tclient *c, *more[3];
    uint64_t deadline;

    start(&d);
    c = connect_ok(&d);
    ASSERT_EQ(status_uint(c, "config", "max_connections"), 128);

    snprintf(conf, sizeof(conf), "%s/coarchd.conf", d.data_dir);
    write_file(conf, "# test configuration\n"
                     "COARCH_MAX_CONNECTIONS = 3\n"
                     "COARCH_MAX_PENDING=\"7\"\n"
                     "\n"
                     "COARCH_SOMETHING_NEWER=1\n");
    ASSERT_OK(tdaemon_signal(&d, SIGHUP));
    deadline = now_ms() + 5000;
    while (status_uint(c, "config", "max_connections") != 3 && now_ms() < deadline)
        usleep(10000);
    ASSERT_EQ(status_uint(c, "config", "max_connections"), 3);
    ASSERT_EQ(status_uint(c, "config", "max_pending"), 7);
    ASSERT_TRUE(tdaemon_log_wait(&d, "ignoring unknown key COARCH_SOMETHING_NEWER", 0));

    /* The new limit applies: c + 2 more, the third extra is refused. */
    more[0] = connect_ok(&d);
    more[1] = connect_ok(&d);
    ASSERT_OK(tclient_ping(more[0]));
    ASSERT_OK(tclient_ping(more[1]));
    more[2] = connect_ok(&d);
    expect_refused(more[2]);
    for (int i = 0; i < 3; i++)
        tclient_free(more[i]);

    /* A bad value: refused with the file and line, the previous configuration stays. */
    write_file(conf, "COARCH_MAX_CONNECTIONS=9\nCOARCH_MAX_PENDING=lots\n");
    ASSERT_OK(tdaemon_signal(&d, SIGHUP));
    ASSERT_TRUE(tdaemon_log_wait(&d, "keeping the current one", 5000));
    ASSERT_TRUE(tdaemon_log_wait(&d, "coarchd.conf:2: invalid COARCH_MAX_PENDING=\"lots\"", 0));
    ASSERT_EQ(status_uint(c, "config", "max_connections"), 3);
    ASSERT_EQ(status_uint(c, "config", "max_pending"), 7);
    tclient_free(c);
    stop_ok(&d);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
