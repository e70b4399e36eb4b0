/*
 * daemon.h - coarchd's run: the pieces put together (data dir lock, event loop, server, RPC,
 * systemd notifications), their configuration, and the stop sequence.  main.c parses the
 * command line and maps results onto exit codes; everything after that is here.
 *
 * States: RUNNING -> STOPPING (not accepting; answering `shutting_down`; waiting for requests,
 * work and holds to drain) -> CLOSING (connections closing after their last write, timers and
 * signal handles closing) -> the loop runs out of handles and daemon_run() returns.
 *
 * How a module plugs in (from engine.c, which main.c calls after daemon_new() and before
 * daemon_start()):
 *   - methods:       rpc_register(daemon_rpc(d), "search", method_search, ctx)        (rpc.h)
 *   - worker work:   event_work_queue(daemon_loop(d), ...) or its own threads plus
 *                    event_post(); answer the rpc_request on the loop thread          (work.h)
 *   - notifications: rpc_notify(daemon_rpc(d), RPC_EVENT_PROGRESS, "progress", n, ...)
 *   - timers:        event_timer_new(daemon_loop(d), ...) (the governor's tick)       (timer.h)
 *   - status keys:   daemon_status_add(d, "governor", pack_governor, gov)
 *   - shutdown:      daemon_on_stop(d, fn, ctx): fn runs when stopping begins; a module with
 *                    work of its own (jobs, threads) calls daemon_hold() while it has any and
 *                    daemon_release() when it is done; free your timers in fn.
 *
 * Threading: loop thread only.
 */
#ifndef COARCH_DAEMON_DAEMON_H
#define COARCH_DAEMON_DAEMON_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "rpc.h"

struct daemon;
struct event_loop;

struct daemon_options {
    const char *socket_path; /* bound unless listen_fd >= 0 */
    const char *data_dir;
    int listen_fd; /* socket-activated fd, or -1; daemon_new() takes it in every case */
    struct daemon_config config;
    struct daemon_config_overrides overrides; /* kept for reloads */
};

/*
 * Creates the data dir (0700) and locks it, then builds loop, server and dispatcher.  No method
 * is registered yet: engine.c registers all of them, the core ones (methods-core.h) included,
 * so this file depends on no method.  Returns 0, -EBUSY when another coarchd holds the data dir
 * (logged, with its pid), or another negative errno (logged).
 */
int daemon_new(const struct daemon_options *o, struct daemon **ret_daemon);
/* Listens (-EADDRINUSE: another daemon owns the socket), watches signals, starts the
 * watchdog and tells systemd READY=1.  Errors are logged. */
int daemon_start(struct daemon *d);
/* Runs until stopped.  Returns 0, or -EBUSY when the loop could not be closed cleanly. */
int daemon_run(struct daemon *d);
/* Accepts NULL and a daemon in any state (a failed start included); returns NULL. */
struct daemon *daemon_free(struct daemon *d);

/*
 * Begins the stop sequence (SIGTERM, SIGINT, the `shutdown` method).  Idempotent.  Also the
 * way out after a failed daemon_start(): daemon_stop() then daemon_run() run the modules' stop
 * hooks and wait for their holds, exactly as a normal stop does.
 */
void daemon_stop(struct daemon *d, const char *reason);
/* SIGHUP: re-reads the configuration; a bad one is refused with a warning. */
void daemon_reload(struct daemon *d);

struct event_loop *daemon_loop(struct daemon *d);
struct rpc *daemon_rpc(struct daemon *d);
const struct daemon_config *daemon_get_config(const struct daemon *d);
bool daemon_is_stopping(const struct daemon *d);

typedef void (*daemon_stop_fn)(struct daemon *d, void *userdata);
int daemon_on_stop(struct daemon *d, daemon_stop_fn fn, void *userdata);
void daemon_hold(struct daemon *d);
void daemon_release(struct daemon *d);

/* Adds `key` to the `status` result, its value packed by pack (exactly one value). */
int daemon_status_add(struct daemon *d, const char *key, rpc_pack_fn pack, void *userdata);
/* The effective memory limit (bytes) `status` reports under memory.limit_bytes; the governor
 * sets it on every sample.  Loop thread. */
void daemon_set_memory_limit(struct daemon *d, uint64_t bytes);
/* Packs the whole `status` map (rpc_pack_fn signature; userdata is the daemon). */
int daemon_pack_status(msgpack_packer *pk, void *daemon);

#endif
