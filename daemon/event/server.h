/*
 * server.h - the listening socket and the set of client connections.
 *
 * The server accepts connections on one Unix stream socket - bound by us (server_listen_path)
 * or adopted from systemd socket activation (server_listen_fd) - checks each peer's uid with
 * SO_PEERCRED, feeds the bytes each connection reads to its own proto decoder, and hands every
 * complete message (or every invalid frame) to the handler, on the loop thread.
 *
 * Socket safety, when we bind:
 *   - the socket's directory is created 0700 (only if missing: an existing directory such as
 *     /tmp is not ours to change);
 *   - `<socket>.lock` is flocked for as long as we own the path, so two daemons never race
 *     to remove each other's socket;
 *   - an existing path is removed only if it is a socket nobody answers on (ECONNREFUSED):
 *     a live daemon's socket is never stolen, and a non-socket is never removed;
 *   - the socket is created 0600 (fchmod before bind plus a 0177 umask around bind, so there
 *     is no window in which it is more open);
 *   - on stop, the path is unlinked only if it is still the inode we bound.
 *
 * Limits (server_limits) bound every client-controlled resource: connections (over the limit:
 * accepted and closed at once, with a rate-limited warning), frame and element sizes
 * (proto_limits), bytes queued for writing (see loop.h, "Bounded buffering") and idle time (a
 * connection that sends nothing, has nothing in flight, nothing to write and no subscription
 * is closed after idle_timeout_ms).
 *
 * Ownership: the server owns its connections' handles; connections are reference counted
 * (conn.h).  server_free() only after event_loop_run() has returned.
 * Threading: loop thread only.
 */
#ifndef COARCH_EVENT_SERVER_H
#define COARCH_EVENT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct event_loop;
struct connection;
struct server;

struct server_limits {
    uint32_t max_connections;
    uint64_t idle_timeout_ms; /* 0 = never */
    size_t max_output;        /* bytes queued for writing per connection */
    struct proto_limits proto;
};

struct server_handler {
    /* A complete message arrived on c; the handler owns msg (proto_msg_free()). */
    void (*message)(struct connection *c, struct proto_msg *msg, void *userdata);
    /* A frame was consumed but held no valid message: id is the recovered request id or -1,
     * code a PROTO_ERROR_*, reason a text valid during the call. */
    void (*invalid)(struct connection *c, int64_t id, int code, const char *reason, void *userdata);
    void *userdata;
};

int server_new(struct event_loop *el, const struct server_limits *limits,
               struct server **ret_server);
/* Only after event_loop_run() returned; accepts NULL, returns NULL.  A server whose handles
 * are somehow still open is leaked (and logged) rather than freed under libuv. */
struct server *server_free(struct server *s);

void server_set_handler(struct server *s, const struct server_handler *handler);
/* New limits: connections and idle time at once, frame limits for new connections. */
void server_set_limits(struct server *s, const struct server_limits *limits);

/*
 * Binds `path` as described above and starts accepting.  Errors are logged at error level
 * with the path and what to do; returns 0, -EADDRINUSE when another daemon owns the socket
 * (live, or its lock is held), -EEXIST when the path exists and is not a socket, or another
 * negative errno.
 */
int server_listen_path(struct server *s, const char *path);
/* Adopts an already listening socket (socket activation); takes ownership of fd.  The path
 * (for status) is read from the socket; it is never unlinked by us. */
int server_listen_fd(struct server *s, int fd);

/* The socket's path, or "" before listening. */
const char *server_socket_path(const struct server *s);
/* Admitted connections not closing. */
unsigned server_connection_count(const struct server *s);

/* Stops accepting: closes the listener, removes the socket file (if we bound it).  Idempotent. */
void server_stop_accepting(struct server *s);
/*
 * The server's last phase: stops accepting, stops reading, and closes every connection once
 * its requests are answered and its replies written; whatever is left after grace_ms is
 * closed regardless.  After this the server holds no handle once all connections are gone.
 */
void server_close(struct server *s, uint64_t grace_ms);

/*
 * Queues one ready-made frame (from proto_writer_steal(); ownership passes here) to every
 * open connection subscribed to any event in `events` (connection_set_events()).  The bytes
 * are shared, not copied.  Returns the number of connections it was queued to, or -ENOMEM.
 */
int server_broadcast(struct server *s, uint32_t events, void *frame, size_t len);

#endif
