/*
 * conn.h - coarchctl's synchronous connection to coarchd.
 *
 * The client has one request in flight at a time, so the connection is a plain blocking
 * state machine over a non-blocking Unix socket and poll(2): send one request frame, then read
 * frames until the response with the same id arrives.  Notifications ([2, method, params])
 * that arrive while waiting are handed to the notification callback, so a command such as
 * `index --wait` can print progress while a request is outstanding; after the response,
 * conn_next() returns further messages one at a time.
 *
 * Timeouts are inactivity timeouts: a wait fails with -ETIMEDOUT when the daemon sends nothing
 * at all for `timeout_ms`.  Any message (a notification too) proves the daemon alive and
 * restarts the clock, so a long job that reports progress never times out while a hung daemon
 * always does.  timeout_ms < 0 waits forever.
 *
 * Errors are negative errno: -ECONNREFUSED / -ENOENT / -EACCES from connecting, -ETIMEDOUT,
 * -ECONNRESET when the daemon closed the connection, -EMSGSIZE / -EBADMSG for frames that
 * break proto.h's limits or shape, -EPROTO for a well-formed message the protocol does not
 * allow here (a response to a request we never sent), -ENOMEM.
 *
 * Ownership: messages returned through ret_* belong to the caller (proto_msg_free()); the
 * message passed to the notification callback is borrowed for the duration of the call.
 * Threading: one thread at a time per connection; nothing is global.
 */
#ifndef COARCH_CLIENT_CONN_H
#define COARCH_CLIENT_CONN_H

#include <msgpack.h>
#include <stdint.h>

#include "proto.h"

struct conn;

/* Called for each notification received while waiting for a response.  Return 0 to keep
 * waiting, or a negative errno to abandon the wait, which then returns that value. */
typedef int (*conn_notify_fn)(const struct proto_msg *msg, void *userdata);

/* Connects to the socket at `path`, giving up after timeout_ms (< 0: never).  On success
 * *ret_conn is a connection the caller frees with conn_free(). */
int conn_connect(const char *path, int timeout_ms, struct conn **ret_conn);
struct conn *conn_free(struct conn *c); /* closes the socket; accepts NULL, returns NULL */

void conn_set_timeout(struct conn *c, int timeout_ms);
void conn_set_notify(struct conn *c, conn_notify_fn fn, void *userdata);
int conn_fd(const struct conn *c); /* the socket, e.g. to poll it for hang-up */

/*
 * A request with parameters, in two steps:
 *
 *     r = conn_request_begin(c, "search", 2, &pk);   // then 2 key/value pairs on pk
 *     proto_pack_kv_str(pk, "query", q);
 *     proto_pack_kv_int(pk, "k", 10);
 *     r = conn_request_end(c, &resp);                // sends, waits for the response
 *
 * conn_request_end() returns 0 and the response (which may carry an error: check it with
 * proto_msg_get_error()), or a negative errno when no response could be had.  A begun request
 * must be ended (an error from begin leaves nothing open).
 */
int conn_request_begin(struct conn *c, const char *method, uint32_t n_params,
                       msgpack_packer **ret_pk);
int conn_request_end(struct conn *c, struct proto_msg **ret_response);

/* A request without parameters: begin + end. */
int conn_call(struct conn *c, const char *method, struct proto_msg **ret_response);

/*
 * Waits for the next message of any kind (after a request completed, e.g. progress
 * notifications of a job) and returns it; notifications are NOT passed to the callback here.
 * Returns 0 and the message, or -ECONNRESET at end of stream, -ETIMEDOUT, ...
 */
int conn_next(struct conn *c, struct proto_msg **ret_msg);

/*
 * Waits until the daemon closes the connection, discarding anything it still sends.  Returns 0
 * on end of stream, -ETIMEDOUT, or another read error.  Used by `shutdown`.
 */
int conn_wait_closed(struct conn *c, int timeout_ms);

#endif
