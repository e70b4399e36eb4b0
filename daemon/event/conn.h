/*
 * conn.h - one client connection, as the RPC layer sees it.
 *
 * A connection is created by the server on accept and lives while its handle is open or
 * anyone holds a reference: an RPC request keeps its connection referenced until it is
 * answered, so a handler may reply long after the client went away (the reply is dropped).
 *
 * Invariants:
 *   - refs >= 1 while the handle is open (the handle's own reference);
 *   - once connection_is_open() is false it stays false: no more reads, and
 *     connection_send() drops what it is given;
 *   - pending counts requests begun and not ended; the connection never closes gracefully
 *     (EOF from the peer, server stop) while pending > 0 or bytes are queued.
 *
 * Threading: loop thread only.
 */
#ifndef COARCH_EVENT_CONN_H
#define COARCH_EVENT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct connection;

struct connection *connection_ref(struct connection *c);
/* Drops a reference; the last one frees the connection.  Accepts NULL, returns NULL. */
struct connection *connection_unref(struct connection *c);

/* A number unique within this daemon's run, for log lines. */
uint64_t connection_id(const struct connection *c);
pid_t connection_peer_pid(const struct connection *c);
bool connection_is_open(const struct connection *c);

/*
 * Queues one or more complete frames for writing; takes ownership of `frame` (malloc'd, e.g.
 * from proto_writer_steal()) in every case.  Returns 0; -ENOTCONN when the connection is
 * closing (frame dropped); -ENOBUFS when it would push the queued bytes past max_output (the
 * client is not reading: the connection is closed with a warning); or a libuv error (closed).
 */
int connection_send(struct connection *c, void *frame, size_t len);

/* Closes now, dropping anything unwritten; deferred while inside the connection's own
 * callback (loop.h, "Deferred close").  Idempotent. */
void connection_close(struct connection *c);

/* Requests in flight, for the per-connection limit.  end() may close a draining connection. */
void connection_request_begin(struct connection *c);
void connection_request_end(struct connection *c);
unsigned connection_pending(const struct connection *c);

/* Notification subscriptions: a bitmask of the daemon's event kinds (rpc.h). */
void connection_set_events(struct connection *c, uint32_t events);
uint32_t connection_events(const struct connection *c);

#endif
