/*
 * loop.h - coarchd's event loop: one libuv loop on one thread, and the signals it watches.
 *
 * DESIGN (daemon/event/ as a whole)
 *
 * Ownership.  event/ is the only code that includes uv.h and the only owner of uv handles.
 * Everything else gets opaque objects - event_loop, event_timer (timer.h), server and
 * connection (server.h, conn.h) - plus callbacks, and work on threads through work.h.
 *
 * Threading.  Every function in event/ runs on the loop thread, except event_post(), which any
 * thread may call, and the `work` function given to event_work_queue(), which runs on a pool
 * thread and must touch nothing of event/.  Results travel back to the loop thread through
 * event_post() (a mutex-guarded queue plus one uv_async_t) or the work's `done` callback.
 *
 * Handle lifetime.  A handle's memory is freed only in (or after) its close_cb.  Objects that
 * embed a handle and are shared - connections - are reference counted: the open handle holds
 * one reference, each request in flight another, and the memory goes with the last one, which
 * is never before close_cb.  A reply for a connection that has gone away is dropped.
 *
 * Deferred close.  connection_close() called from inside one of that connection's own
 * callbacks (a method handler runs inside the read callback) only marks the connection; the
 * uv_close() happens when the callback unwinds.  So code up the stack - the decode loop, the
 * dispatcher - never finds its connection freed or half torn down under it.  After
 * connection_close() nothing runs for that connection any more except write completions,
 * which only release their buffers.
 *
 * Async contract (libuv's): a function that takes a callback and returns `int` either returns
 * < 0 and never calls the callback, or returns 0 and calls it exactly once.
 *
 * Bounded buffering.  A connection counts the bytes it has queued for writing.  Over a high
 * mark (max_output / 4) it stops reading, so a client that pipelines requests without reading
 * replies is throttled by its own socket; under max_output / 8 it reads again.  Notifications
 * and late replies can still pile up on a client that never reads: past max_output the
 * connection is closed with a warning.
 *
 * Shutdown, driven by daemon.c: stop accepting and remove the socket; answer new requests
 * with `shutting_down` while requests, work and module holds drain; close each connection once
 * its replies are written (forced after a grace period); close the daemon's timers; then
 * event_loop_close() closes the signal and post handles, uv_run() returns for lack of handles,
 * and event_loop_finish() checks that uv_loop_close() succeeds.
 */
#ifndef COARCH_EVENT_LOOP_H
#define COARCH_EVENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct event_loop;

/* SIGTERM, SIGINT and SIGHUP are delivered here, on the loop thread. */
typedef void (*event_signal_fn)(struct event_loop *el, int signum, void *userdata);

/* Creates the loop with its post queue and signal handles (not yet watching); NULL only for
 * ENOMEM, other errors as negative errno.  Caller ends with event_loop_finish() and
 * event_loop_free(). */
int event_loop_new(struct event_loop **ret_loop);

/* Starts watching SIGTERM, SIGINT and SIGHUP.  SIGPIPE must be ignored process-wide by main. */
int event_loop_watch_signals(struct event_loop *el, event_signal_fn fn, void *userdata);

/* Runs until no handle is left open (after event_loop_close() and every owner closing its
 * objects).  Returns 0 or a negative errno from libuv. */
int event_loop_run(struct event_loop *el);

/* Runs posted callbacks still queued, then closes the loop's own handles (signals, post
 * queue); event_post() fails with -ESHUTDOWN from here on.  Idempotent. */
void event_loop_close(struct event_loop *el);
bool event_loop_is_closing(const struct event_loop *el);

/* After event_loop_run() returned: uv_loop_close().  Returns 0, or -EBUSY after logging (at
 * error level) every handle some owner forgot to close. */
int event_loop_finish(struct event_loop *el);

/* Frees the loop; accepts NULL, returns NULL.  If the libuv loop could not be closed the
 * memory is deliberately leaked: freeing it under live handles would be worse. */
struct event_loop *event_loop_free(struct event_loop *el);

/* The loop's cached clock (ms, monotonic), updated once per loop iteration. */
uint64_t event_loop_now_ms(const struct event_loop *el);

#endif
