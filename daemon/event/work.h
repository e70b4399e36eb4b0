/*
 * work.h - getting work off the loop thread and results back onto it.
 *
 * Two ways, both ending on the loop thread:
 *
 *   event_work_queue()  runs `work` on libuv's thread pool, then `done` on the loop thread.
 *                       For short, self-contained jobs (a search, reading a file).  The pool
 *                       has $UV_THREADPOOL_SIZE threads (4 by default) shared with libuv's fs
 *                       calls, so long-running work belongs on a module's own threads.
 *   event_post()        called from any thread (a module's own worker, the LMDB writer) to
 *                       run `fn` on the loop thread soon, in posting order.
 *
 * Typical use from an RPC method (rpc.h): the handler keeps the rpc_request, queues the work,
 * and replies from `done`:
 *
 *     static void search_work(void *ud)  { struct search *s = ud; s->r = search_run(s); }
 *     static void search_done(int status, void *ud) {
 *         struct search *s = ud;
 *         if (status < 0 || s->r < 0) rpc_request_reply_errno(s->req, ...);
 *         else rpc_request_reply_ok(s->req, pack_results, s);
 *         search_free(s);
 *     }
 *
 * The daemon does not finish shutting down while any queued work is outstanding.
 *
 * Threading: event_post() is safe from any thread; everything else is loop thread only.
 */
#ifndef COARCH_EVENT_WORK_H
#define COARCH_EVENT_WORK_H

#include <stddef.h>

struct event_loop;

typedef void (*event_work_fn)(void *userdata);             /* pool thread */
typedef void (*event_done_fn)(int status, void *userdata); /* loop thread; status 0 or < 0 */
typedef void (*event_post_fn)(void *userdata);             /* loop thread */

/* Queues `work`; `done` runs exactly once afterwards unless this returns < 0 (-ESHUTDOWN once
 * the loop is closing, -ENOMEM). */
int event_work_queue(struct event_loop *el, event_work_fn work, event_done_fn done, void *userdata);
/* Work items queued and not yet done. */
size_t event_work_inflight(const struct event_loop *el);
/* Called (loop thread) whenever the number of work items in flight drops to zero. */
void event_work_set_idle_callback(struct event_loop *el, event_post_fn fn, void *userdata);

/*
 * Any thread: runs fn(userdata) on the loop thread.  Returns 0, -ENOMEM, or -ESHUTDOWN when
 * the loop is closing (then fn never runs: the caller still owns userdata).  A module that
 * posts from its own threads must join them before the daemon's stop sequence reaches
 * event_loop_close() (daemon_hold()/daemon_release() exist for that).
 */
int event_post(struct event_loop *el, event_post_fn fn, void *userdata);

#endif
