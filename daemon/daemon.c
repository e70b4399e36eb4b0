/*
 * daemon.c - see daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockfile.h"
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "paths.h"
#include "sdnotify.h"
#include "server.h"
#include "timer.h"
#include "work.h"

/* How long connections get, once everything is answered, to take their last bytes. */
#define DAEMON_CLOSE_GRACE_MS 5000

enum daemon_state {
    DAEMON_STATE_NEW,
    DAEMON_STATE_RUNNING,
    DAEMON_STATE_STOPPING,
    DAEMON_STATE_CLOSING,
    DAEMON_STATE_DONE,
};

struct daemon_stop_hook {
    daemon_stop_fn fn;
    void *userdata;
};

struct daemon_status_part {
    const char *key;
    rpc_pack_fn pack;
    void *userdata;
};

struct daemon {
    enum daemon_state state;
    struct daemon_config config;
    struct daemon_config_overrides overrides;
    char *socket_path;
    char *data_dir;
    int listen_fd;
    int lock_fd;
    uint64_t started_ms;
    uint64_t memory_limit; /* bytes; 0 until the memory governor reports one */

    struct event_loop *el;
    struct server *server;
    struct rpc *rpc;
    struct event_timer *watchdog;

    struct daemon_stop_hook *stop_hooks;
    size_t n_stop_hooks, cap_stop_hooks;
    struct daemon_status_part *status_parts;
    size_t n_status_parts, cap_status_parts;
    unsigned holds;
};

static void daemon_limits(const struct daemon_config *c, struct server_limits *ret_server,
                          struct rpc_limits *ret_rpc)
{
    struct proto_limits proto;

    proto_limits_default(&proto);
    proto.max_frame = c->max_frame_mb * 1024u * 1024u;
    proto.max_str = proto.max_frame;
    *ret_server = (struct server_limits){
        .max_connections = c->max_connections,
        .idle_timeout_ms = (uint64_t)c->idle_timeout_s * 1000,
        .max_output = (size_t)c->max_output_mb * 1024 * 1024,
        .proto = proto,
    };
    *ret_rpc = (struct rpc_limits){
        .max_pending = c->max_pending,
        .max_frame = proto.max_frame,
    };
}

/* mkdir -p 0700 and flock(<data dir>/coarchd.lock): one daemon per data dir (one LMDB writer). */
static int daemon_lock_data_dir(struct daemon *d)
{
    _cleanup_free_ char *lock_path = NULL;
    pid_t holder = 0;
    int r;

    r = mkdir_p(d->data_dir, 0700);
    if (r < 0)
        return log_error_errno(r, "cannot create data dir %s: %m", d->data_dir);
    lock_path = path_join(d->data_dir, "coarchd.lock");
    if (!lock_path)
        return -ENOMEM;
    r = lockfile_acquire(lock_path, &holder);
    if (r == -EBUSY) {
        if (holder > 0)
            return log_error_errno(r,
                                   "data dir %s is in use by another coarchd (pid %d); refusing "
                                   "to start a second one",
                                   d->data_dir, (int)holder);
        return log_error_errno(r, "data dir %s is in use by another coarchd; refusing to start",
                               d->data_dir);
    }
    if (r < 0)
        return log_error_errno(r, "cannot lock %s: %m", lock_path);
    d->lock_fd = r;
    return 0;
}

static void daemon_check_drained(struct daemon *d);

static void on_rpc_idle(void *userdata)
{
    daemon_check_drained(userdata);
}

int daemon_new(const struct daemon_options *o, struct daemon **ret_daemon)
{
    struct server_limits slim;
    struct rpc_limits rlim;
    struct daemon *d;
    int r;

    d = calloc(1, sizeof(*d));
    if (!d) {
        if (o->listen_fd >= 0)
            close(o->listen_fd);
        return -ENOMEM;
    }
    d->lock_fd = -1;
    d->listen_fd = o->listen_fd;
    d->config = o->config;
    d->overrides = o->overrides;
    d->data_dir = strdup(o->data_dir);
    d->socket_path = o->socket_path ? strdup(o->socket_path) : NULL;
    if (!d->data_dir || (o->socket_path && !d->socket_path)) {
        r = -ENOMEM;
        goto out_free;
    }

    r = daemon_lock_data_dir(d);
    if (r < 0)
        goto out_free;

    r = event_loop_new(&d->el);
    if (r < 0)
        goto out_free;
    d->started_ms = event_loop_now_ms(d->el);
    event_work_set_idle_callback(d->el, on_rpc_idle, d);

    daemon_limits(&d->config, &slim, &rlim);
    r = server_new(d->el, &slim, &d->server);
    if (r < 0)
        goto out_free;
    r = rpc_new(d->server, &rlim, &d->rpc);
    if (r < 0)
        goto out_free;
    rpc_set_idle_callback(d->rpc, on_rpc_idle, d);

    *ret_daemon = d;
    return 0;

out_free:
    /* The data dir errors were logged with their path; say what failed for the rest. */
    if (d->lock_fd >= 0 || r == -ENOMEM)
        log_error_errno(r, "cannot set up the daemon: %m");
    daemon_free(d);
    return r;
}

/* READY=1 with the status line `systemctl --user status coarchd` shows while running. */
static void daemon_notify_ready(struct daemon *d)
{
    char status[1024];

    snprintf(status, sizeof(status), "Listening on %s; data dir %s", server_socket_path(d->server),
             d->data_dir);
    sdnotify_ready(status);
}

static void watchdog_cb(struct event_timer *t, void *userdata)
{
    sdnotify_watchdog();
}

static void on_signal(struct event_loop *el, int signum, void *userdata)
{
    struct daemon *d = userdata;

    switch (signum) {
    case SIGHUP:
        daemon_reload(d);
        break;
    default:
        if (d->state != DAEMON_STATE_RUNNING) {
            log_notice("%s: already stopping (%u request(s), %zu work item(s), %u hold(s) left)",
                       strsignal(signum), rpc_requests_inflight(d->rpc), event_work_inflight(d->el),
                       d->holds);
            break;
        }
        daemon_stop(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
}

int daemon_start(struct daemon *d)
{
    uint64_t wd_usec;
    int r;

    /* Signals first: once the socket exists a client (or systemd) may ask us to stop, and a
     * SIGTERM before the watch would kill us with no stop sequence.  Their callbacks run only
     * once daemon_run() runs the loop. */
    r = event_loop_watch_signals(d->el, on_signal, d);
    if (r < 0)
        return log_error_errno(r, "cannot watch signals: %m");
    if (d->listen_fd >= 0) {
        int fd = TAKE_FD(d->listen_fd);

        r = server_listen_fd(d->server, fd);
    } else {
        r = server_listen_path(d->server, d->socket_path);
    }
    if (r < 0)
        return r;

    wd_usec = sdnotify_watchdog_usec();
    if (wd_usec > 0) {
        /* Half the interval, as sd_watchdog_enabled(3) recommends; at least every 1 ms. */
        uint64_t every = MAX(wd_usec / 2000, (uint64_t)1);

        r = event_timer_new(d->el, watchdog_cb, d, &d->watchdog);
        if (r < 0)
            return log_error_errno(r, "cannot create the watchdog timer: %m");
        r = event_timer_start(d->watchdog, every, every);
        if (r < 0)
            return log_error_errno(r, "cannot start the watchdog timer: %m");
        log_debug("systemd watchdog: pinging every %llu ms", (unsigned long long)every);
    }

    d->state = DAEMON_STATE_RUNNING;
    log_info("ready: listening on %s", server_socket_path(d->server));
    daemon_notify_ready(d);
    return 0;
}

/* The last phase: everything owed is answered, so connections and timers can go. */
static void daemon_close(struct daemon *d)
{
    d->state = DAEMON_STATE_CLOSING;
    log_debug("requests and work drained; closing connections");
    server_close(d->server, DAEMON_CLOSE_GRACE_MS);
    d->watchdog = event_timer_free(d->watchdog);
    event_loop_close(d->el);
}

static void daemon_check_drained(struct daemon *d)
{
    if (d->state != DAEMON_STATE_STOPPING)
        return;
    if (rpc_requests_inflight(d->rpc) > 0 || event_work_inflight(d->el) > 0 || d->holds > 0)
        return;
    daemon_close(d);
}

void daemon_stop(struct daemon *d, const char *reason)
{
    /* From NEW too: a failed daemon_start() winds down through the same sequence, so modules'
     * stop hooks run and their threads finish before anything is freed. */
    if (d->state != DAEMON_STATE_RUNNING && d->state != DAEMON_STATE_NEW)
        return;
    d->state = DAEMON_STATE_STOPPING;
    log_info("stopping (%s)", reason);
    sdnotify_stopping();
    sdnotify_status("Stopping (%s)", reason);

    rpc_set_stopping(d->rpc);
    server_stop_accepting(d->server);
    /* Hooks may take holds, or finish at once; either way the check below sees it. */
    for (size_t i = 0; i < d->n_stop_hooks; i++)
        d->stop_hooks[i].fn(d, d->stop_hooks[i].userdata);

    if (rpc_requests_inflight(d->rpc) > 0 || event_work_inflight(d->el) > 0 || d->holds > 0)
        log_info("waiting for %u request(s), %zu work item(s) and %u module hold(s) to finish",
                 rpc_requests_inflight(d->rpc), event_work_inflight(d->el), d->holds);
    daemon_check_drained(d);
}

void daemon_reload(struct daemon *d)
{
    struct daemon_config c;
    struct server_limits slim;
    struct rpc_limits rlim;
    _cleanup_free_ char *path = NULL;
    int r;

    if (d->state != DAEMON_STATE_RUNNING)
        return;
    sdnotify_reloading();
    r = daemon_config_load(d->data_dir, &d->overrides, &c, &path);
    if (r < 0) {
        log_warning("SIGHUP: the new configuration is invalid (see above); keeping the "
                    "current one");
    } else {
        d->config = c;
        log_set_level(c.log_level);
        daemon_limits(&c, &slim, &rlim);
        server_set_limits(d->server, &slim);
        rpc_set_limits(d->rpc, &rlim);
        log_info("SIGHUP: configuration reloaded (%s): log level %s, max connections %" PRIu32
                 ", max frame %" PRIu32 " MiB, max pending %" PRIu32 ", idle timeout %" PRIu32
                 " s, max output %" PRIu32 " MiB",
                 path ? path : "no config file", daemon_log_level_to_string(c.log_level),
                 c.max_connections, c.max_frame_mb, c.max_pending, c.idle_timeout_s,
                 c.max_output_mb);
    }
    daemon_notify_ready(d);
}

int daemon_run(struct daemon *d)
{
    int r;

    r = event_loop_run(d->el);
    if (r < 0)
        log_error_errno(r, "event loop failed: %m");
    d->state = DAEMON_STATE_DONE;
    return event_loop_finish(d->el) < 0 ? -EBUSY : r;
}

struct daemon *daemon_free(struct daemon *d)
{
    if (!d)
        return NULL;
    if (d->el && d->state != DAEMON_STATE_DONE) {
        /* Never ran, or failed half-way: close what exists and let the close callbacks run. */
        if (d->server)
            server_close(d->server, 0);
        d->watchdog = event_timer_free(d->watchdog);
        event_loop_close(d->el);
        (void)event_loop_run(d->el);
        (void)event_loop_finish(d->el);
    }
    d->rpc = rpc_free(d->rpc);
    d->server = server_free(d->server);
    d->el = event_loop_free(d->el);
    if (d->listen_fd >= 0)
        close(d->listen_fd);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    free(d->stop_hooks);
    free(d->status_parts);
    free(d->socket_path);
    free(d->data_dir);
    free(d);
    return NULL;
}

struct event_loop *daemon_loop(struct daemon *d)
{
    return d->el;
}

struct rpc *daemon_rpc(struct daemon *d)
{
    return d->rpc;
}

const struct daemon_config *daemon_get_config(const struct daemon *d)
{
    return &d->config;
}

bool daemon_is_stopping(const struct daemon *d)
{
    return d->state >= DAEMON_STATE_STOPPING;
}

int daemon_on_stop(struct daemon *d, daemon_stop_fn fn, void *userdata)
{
    int r = array_grow((void **)&d->stop_hooks, &d->cap_stop_hooks, d->n_stop_hooks + 1,
                       sizeof(*d->stop_hooks));

    if (r < 0)
        return r;
    d->stop_hooks[d->n_stop_hooks++] = (struct daemon_stop_hook){fn, userdata};
    return 0;
}

void daemon_hold(struct daemon *d)
{
    d->holds++;
}

void daemon_release(struct daemon *d)
{
    d->holds--;
    daemon_check_drained(d);
}

void daemon_set_memory_limit(struct daemon *d, uint64_t bytes)
{
    d->memory_limit = bytes;
}

int daemon_status_add(struct daemon *d, const char *key, rpc_pack_fn pack, void *userdata)
{
    int r = array_grow((void **)&d->status_parts, &d->cap_status_parts, d->n_status_parts + 1,
                       sizeof(*d->status_parts));

    if (r < 0)
        return r;
    d->status_parts[d->n_status_parts++] = (struct daemon_status_part){key, pack, userdata};
    return 0;
}

/* Resident set size from /proc/self/statm (pages), or 0 when unreadable. */
static uint64_t read_rss_bytes(void)
{
    unsigned long long size, resident;
    FILE *f = fopen("/proc/self/statm", "re");
    int n;

    if (!f)
        return 0;
    n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    if (n != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int _r = (x);                                                                              \
        if (_r < 0)                                                                                \
            return _r;                                                                             \
    } while (0)

static int pack_config(msgpack_packer *pk, const struct daemon_config *c)
{
    TRY(msgpack_pack_map(pk, 7));
    TRY(proto_pack_kv_str(pk, "log_level", daemon_log_level_to_string(c->log_level)));
    TRY(proto_pack_kv_uint(pk, "max_connections", c->max_connections));
    TRY(proto_pack_kv_uint(pk, "max_frame_mb", c->max_frame_mb));
    TRY(proto_pack_kv_uint(pk, "max_pending", c->max_pending));
    TRY(proto_pack_kv_uint(pk, "idle_timeout_s", c->idle_timeout_s));
    TRY(proto_pack_kv_uint(pk, "max_output_mb", c->max_output_mb));
    TRY(proto_pack_kv_bool(pk, "debug_methods", c->debug_methods));
    return 0;
}

int daemon_pack_status(msgpack_packer *pk, void *daemon)
{
    struct daemon *d = daemon;

    TRY(msgpack_pack_map(pk, (uint32_t)(11 + d->n_status_parts)));
    TRY(proto_pack_kv_int(pk, "pid", getpid()));
    TRY(proto_pack_kv_str(pk, "version", COARCH_VERSION));
    TRY(proto_pack_kv_int(pk, "protocol", PROTO_VERSION));
    TRY(proto_pack_kv_uint(pk, "uptime_ms", event_loop_now_ms(d->el) - d->started_ms));
    TRY(proto_pack_kv_str(pk, "socket", server_socket_path(d->server)));
    TRY(proto_pack_kv_str(pk, "data_dir", d->data_dir));
    TRY(proto_pack_kv_uint(pk, "connections", server_connection_count(d->server)));
    TRY(proto_pack_kv_uint(pk, "requests", rpc_requests_served(d->rpc)));
    TRY(proto_pack_str(pk, "memory"));
    TRY(msgpack_pack_map(pk, 2));
    TRY(proto_pack_kv_uint(pk, "rss_bytes", read_rss_bytes()));
    /* 0 = unknown until the memory governor reports its limit (DESIGN section 5). */
    TRY(proto_pack_kv_uint(pk, "limit_bytes", d->memory_limit));
    TRY(proto_pack_kv_str(pk, "state", daemon_is_stopping(d) ? "stopping" : "running"));
    TRY(proto_pack_str(pk, "config"));
    TRY(pack_config(pk, &d->config));
    for (size_t i = 0; i < d->n_status_parts; i++) {
        TRY(proto_pack_str(pk, d->status_parts[i].key));
        TRY(d->status_parts[i].pack(pk, d->status_parts[i].userdata));
    }
    return 0;
}
