/*
 * rpc.h - method dispatch: the method table, the request object a handler answers through (now
 * or later, from a worker's completion), and notifications to subscribed connections.
 *
 * Adding a method:
 *
 *     static int method_repos(struct rpc_request *req, const msgpack_object *params, void *ud)
 *     {
 *         struct store *st = ud;
 *         ...                                    // read params with proto_get_*()
 *         if (bad) return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
 *                                                 "\"k\" must be an integer in 1..1000");
 *         return rpc_request_reply_ok(req, pack_repos, st);
 *     }
 *     rpc_register(rpc, "repos", method_repos, store);
 *
 * The handler contract: return 0 once the request is answered *or* kept for answering later
 * (e.g. handed to event_work_queue(); see work.h); or return a negative errno WITHOUT having
 * answered, and the dispatcher answers with proto_error_code_from_errno() of it.  Every
 * request is answered exactly once; answering consumes it (the pointer is gone afterwards).
 * `params` is a MAP or NIL (no parameters) and lives, like the request, until the answer.
 *
 * Before a handler runs the dispatcher has already answered: `shutting_down` once the daemon
 * is stopping, `busy` when the connection has more than max_pending requests in flight,
 * `method_not_found` for unknown names, and the decode errors of PROTOCOL.md section 6.
 *
 * A request keeps its connection referenced, so answering after the client went away is fine:
 * the answer is dropped (rpc_request_abandoned() lets long work notice and stop early).
 *
 * Threading: loop thread only, all of it.  Workers get back to the loop thread with
 * event_post() or event_work_queue()'s `done` and answer there.
 */
#ifndef COARCH_RPC_H
#define COARCH_RPC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "proto.h"

struct connection;
struct server;
struct rpc;
struct rpc_request;

/* Packs exactly one msgpack value (a result) - or, for notifications, n_params key/value
 * pairs.  Returns 0 or a negative errno (the answer then becomes an error). */
typedef int (*rpc_pack_fn)(msgpack_packer *pk, void *userdata);
typedef int (*rpc_method_fn)(struct rpc_request *req, const msgpack_object *params, void *userdata);

/* Notification kinds a connection can subscribe to (`subscribe {events: [...]}`). */
enum rpc_event {
    RPC_EVENT_PROGRESS = 1u << 0, /* "progress": indexing job progress */
    RPC_EVENT_DEBUG = 1u << 1,    /* "debug": debug.notify, for tests */
};
/* 0 and the bit for a known name, -ENOENT for an unknown one. */
int rpc_event_from_name(const char *name, size_t len, uint32_t *ret_event);

struct rpc_limits {
    uint32_t max_pending; /* requests in flight per connection */
    uint32_t max_frame;   /* largest frame we send; bigger answers become too_large errors */
};

/* Creates the dispatcher and installs it as the server's message handler. */
int rpc_new(struct server *server, const struct rpc_limits *limits, struct rpc **ret_rpc);
struct rpc *rpc_free(struct rpc *rpc); /* accepts NULL, returns NULL */
void rpc_set_limits(struct rpc *rpc, const struct rpc_limits *limits);

/* Registers `name` (borrowed: a string literal); -EEXIST if taken, -ENOMEM. */
int rpc_register(struct rpc *rpc, const char *name, rpc_method_fn fn, void *userdata);

/* From now on every new request is answered `shutting_down`. */
void rpc_set_stopping(struct rpc *rpc);
/* Requests answered since start, and requests in flight now. */
uint64_t rpc_requests_served(const struct rpc *rpc);
unsigned rpc_requests_inflight(const struct rpc *rpc);
/* Called whenever the number of requests in flight drops to zero. */
void rpc_set_idle_callback(struct rpc *rpc, void (*fn)(void *userdata), void *userdata);

/*
 * Answering.  Each consumes req and returns 0, always, so that a handler can end with
 * `return rpc_request_reply_...(req, ...)`.  An answer that cannot be delivered (connection
 * gone, client not reading, out of memory) is dropped and logged at debug level; a result
 * that does not fit in max_frame becomes a `too_large` error, a packer's error an error
 * answer of its errno.
 */
int rpc_request_reply_ok(struct rpc_request *req, rpc_pack_fn pack, void *userdata);
int rpc_request_reply_error(struct rpc_request *req, int code, const char *fmt, ...) _printf_(3, 4);
/* The code from proto_error_code_from_errno(neg_errno); the message as given. */
int rpc_request_reply_errno(struct rpc_request *req, int neg_errno, const char *fmt, ...)
    _printf_(3, 4);
int rpc_request_reply_bool(struct rpc_request *req, bool value);
int rpc_request_reply_str(struct rpc_request *req, const char *value);

uint32_t rpc_request_id(const struct rpc_request *req);
/* Borrowed; valid until the answer.  For per-connection state such as subscriptions. */
struct connection *rpc_request_connection(const struct rpc_request *req);
/* True once the client's connection is closing: the answer will be dropped. */
bool rpc_request_abandoned(const struct rpc_request *req);

/*
 * Sends [2, method, {n_params pairs from pack}] to every connection subscribed to any event
 * in `events`.  Returns the number of connections reached, or a negative errno (-EMSGSIZE
 * when the notification is larger than max_frame).
 */
int rpc_notify(struct rpc *rpc, uint32_t events, const char *method, uint32_t n_params,
               rpc_pack_fn pack, void *userdata);

#endif
