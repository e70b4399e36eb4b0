/*
 * test-daemon.c - drives the real coarchd ($COARCHD) through proto/: the command line and
 * configuration, the foundation methods, concurrency, peer credentials, single-instance rules,
 * stopping, and systemd integration.  test-daemon-limits.c (same program) covers framing
 * errors and per-connection limits; helpers.h what both share.
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

#include "helpers.h"
#include "test.h"

/* ---- command line and configuration ----------------------------------------------------- */

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

/*
 * A stop requested the moment the socket appears is a clean stop: signals are watched before the
 * socket is bound, so no client (or systemd) can see a socket whose daemon dies of a SIGTERM's
 * default action (exit 143, no stop sequence).  Repeated: the window it guards is microseconds.
 */
TEST(sigterm_as_soon_as_socket_exists_exits_0)
{
    require_coarchd();
    for (int i = 0; i < 20; i++) {
        struct tspawn_opts o = {.listen_fd = -1};
        struct tdaemon d;
        struct stat st;
        int spins = 0;

        ASSERT_OK(tdaemon_init(&d));
        ASSERT_OK(tdaemon_spawn(&d, &o));
        while (lstat(d.socket, &st) < 0) {
            ASSERT_LT(spins++, 2000000); /* ~10 s at most */
            usleep(5);
        }
        ASSERT_OK(tdaemon_signal(&d, SIGTERM));
        ASSERT_EQ(wait_exit_logged(&d, 10000), 0);
    }
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
