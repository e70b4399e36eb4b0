/*
 * event-int.h - private to daemon/event/: the structures behind the opaque types, shared by
 * loop.c, work.c, timer.c, server.c, listener.c and conn.c.  Nothing outside event/ includes
 * this (or uv.h).  See loop.h for the design.
 */
#ifndef COARCH_EVENT_INT_H
#define COARCH_EVENT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* uv.h pulls in <sys/param.h>, whose MIN/MAX differ from macro.h's; ours win in event/. */
#undef MIN
#undef MAX
#include "macro.h"

#include "conn.h"
#include "loop.h"
#include "proto.h"
#include "server.h"
#include "work.h"

/* Size of the one read buffer all connections share: reads are consumed (copied into the
 * connection's decoder) before the next read callback can run. */
#define EVENT_READ_BUFFER_SIZE (64u * 1024)

struct event_post_item {
    event_post_fn fn;
    void *userdata;
    struct event_post_item *next;
};

/* Loop thread only, except the post_* fields, which post_lock guards. */
struct event_loop {
    uv_loop_t uv;
    bool uv_open; /* uv_loop_init() succeeded and uv_loop_close() has not */

    uv_signal_t signals[3];
    bool signals_init;
    event_signal_fn on_signal;
    void *signal_userdata;

    uv_async_t post_async;
    bool post_init;
    pthread_mutex_t post_lock;
    struct event_post_item *post_head, **post_tail;
    bool post_closed;

    size_t work_inflight;
    event_post_fn on_work_idle;
    void *work_idle_userdata;

    bool closing;
};

/* A frame queued for writing, shared by every connection a broadcast reaches. */
struct event_frame {
    unsigned refs;
    size_t len;
    char *data;
};

struct connection {
    unsigned refs;
    struct server *server;
    uint64_t id;
    uv_pipe_t pipe;
    struct proto_decoder *decoder;
    struct connection *prev, *next; /* in server->conns while the handle is open */

    pid_t peer_pid;
    uid_t peer_uid;
    uint64_t last_activity_ms;
    size_t queued; /* bytes handed to uv_write() and not completed, plus overhead */
    char *obuf;    /* small frames coalesced during a read callback (conn.c) */
    size_t obuf_len, obuf_cap;
    unsigned pending; /* requests in flight */
    uint32_t events;  /* notification subscriptions */

    unsigned in_callback; /* > 0 while one of our callbacks for this connection runs */
    bool admitted;        /* counted in server->n_open; refused peers never are */
    bool closing;         /* connection_close() was called */
    bool close_deferred;  /* ... inside a callback: uv_close() when it unwinds */
    bool draining;        /* close once pending == 0 and queued == 0 */
    bool read_paused;     /* reading stopped by the output high-water mark */
};

struct server {
    struct event_loop *el;
    struct server_limits lim;
    struct server_handler handler;

    uv_pipe_t listener;
    bool listener_init, listener_closed;
    char *socket_path;
    bool bound_by_us;
    dev_t sock_dev;
    ino_t sock_ino;
    int sock_lock_fd;

    uv_timer_t sweep; /* idle-connection sweep */
    bool sweep_init, sweep_closed;
    uv_timer_t grace; /* server_close() deadline */
    bool grace_init, grace_closed;
    unsigned handles_open; /* listener + timers not yet through their close_cb */

    struct connection *conns;
    unsigned n_open;
    uint64_t next_id;
    bool closing;

    uint64_t refused_log_ms;
    unsigned refused_suppressed;

    char read_buf[EVENT_READ_BUFFER_SIZE];
};

/* conn.c */
int conn_accept(struct server *s);
void conn_drain(struct connection *c);
/* Whether queueing len more bytes would take c past max_output. */
bool conn_over_limit(const struct connection *c, size_t len);
/* Queues a (shared) frame after anything coalesced; takes the reference in every case. */
int conn_write_frame(struct connection *c, struct event_frame *f);
struct event_frame *event_frame_ref(struct event_frame *f);
struct event_frame *event_frame_unref(struct event_frame *f);

/* server.c */
void server_handle_closed(struct server *s);
void server_connection_closed(struct server *s, struct connection *c);

#endif
