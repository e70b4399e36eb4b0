/*
 * server.c - the connection set: limits, the idle sweep, broadcast and the closing phase.
 * The listening socket lives in listener.c, per-connection I/O in conn.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event-int.h"
#include "log.h"
#include "macro.h"

static void sweep_cb(uv_timer_t *handle);

int server_new(struct event_loop *el, const struct server_limits *limits,
               struct server **ret_server)
{
    struct server *s;
    int r;

    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->el = el;
    s->lim = *limits;
    s->sock_lock_fd = -1;
    s->next_id = 1;

    r = uv_timer_init(&el->uv, &s->sweep);
    if (r < 0) {
        free(s);
        return r;
    }
    s->sweep.data = s;
    s->sweep_init = true;
    s->handles_open++;
    server_set_limits(s, limits);

    *ret_server = s;
    return 0;
}

void server_set_handler(struct server *s, const struct server_handler *handler)
{
    s->handler = *handler;
}

/*
 * The idle sweep runs at a quarter of the timeout (between 100 ms and 5 s), so a connection is
 * closed between 1x and 1.25x the timeout after its last activity.  One timer for all
 * connections instead of one per connection: half the handles, and nothing to re-arm on every
 * read.
 */
static void server_arm_sweep(struct server *s)
{
    uint64_t every;

    if (!s->sweep_init || s->sweep_closed)
        return;
    if (s->lim.idle_timeout_ms == 0) {
        uv_timer_stop(&s->sweep);
        return;
    }
    every = CLAMP(s->lim.idle_timeout_ms / 4, (uint64_t)100, (uint64_t)5000);
    uv_timer_start(&s->sweep, sweep_cb, every, every);
}

void server_set_limits(struct server *s, const struct server_limits *limits)
{
    uint64_t old_idle = s->lim.idle_timeout_ms;

    s->lim = *limits;
    if (old_idle != s->lim.idle_timeout_ms || !uv_is_active((uv_handle_t *)&s->sweep))
        server_arm_sweep(s);
}

static bool conn_is_idle(const struct server *s, const struct connection *c, uint64_t now)
{
    /* A subscriber waits for notifications by design, and a client with a request in flight
     * waits for its answer: neither is idle, however long it stays silent. */
    return c->admitted && !c->closing && c->pending == 0 && c->queued == 0 && c->events == 0 &&
           now - c->last_activity_ms >= s->lim.idle_timeout_ms;
}

static void sweep_cb(uv_timer_t *handle)
{
    struct server *s = handle->data;
    uint64_t now = uv_now(&s->el->uv);

    if (s->lim.idle_timeout_ms == 0)
        return;
    /* connection_close() only marks and uv_close()s; the list changes in close_cb, later. */
    for (struct connection *c = s->conns; c; c = c->next)
        if (conn_is_idle(s, c, now)) {
            log_debug("connection %llu: idle for %llu ms, closing", (unsigned long long)c->id,
                      (unsigned long long)(now - c->last_activity_ms));
            connection_close(c);
        }
}

const char *server_socket_path(const struct server *s)
{
    return s->socket_path ? s->socket_path : "";
}

unsigned server_connection_count(const struct server *s)
{
    return s->n_open;
}

static void server_handle_close_cb(uv_handle_t *handle)
{
    struct server *s = handle->data;

    s->handles_open--;
}

static void server_close_timer(struct server *s, uv_timer_t *t, bool *init, bool *closed)
{
    if (!*init || *closed)
        return;
    *closed = true;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, server_handle_close_cb);
}

/* Called when a connection's handle is through its close_cb. */
void server_connection_closed(struct server *s, struct connection *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;

    if (s->closing && !s->conns)
        server_close_timer(s, &s->grace, &s->grace_init, &s->grace_closed);
}

static void grace_cb(uv_timer_t *handle)
{
    struct server *s = handle->data;
    unsigned n = 0;

    for (struct connection *c = s->conns; c; c = c->next)
        if (!c->closing) {
            connection_close(c);
            n++;
        }
    if (n > 0)
        log_warning("closed %u connection(s) that did not finish within the shutdown grace "
                    "period",
                    n);
    server_close_timer(s, &s->grace, &s->grace_init, &s->grace_closed);
}

void server_close(struct server *s, uint64_t grace_ms)
{
    if (s->closing)
        return;
    s->closing = true;
    server_stop_accepting(s);
    server_close_timer(s, &s->sweep, &s->sweep_init, &s->sweep_closed);

    for (struct connection *c = s->conns; c; c = c->next)
        if (grace_ms == 0)
            connection_close(c);
        else
            conn_drain(c);

    if (!s->conns || grace_ms == 0)
        return;
    if (uv_timer_init(&s->el->uv, &s->grace) < 0) {
        for (struct connection *c = s->conns; c; c = c->next)
            connection_close(c);
        return;
    }
    s->grace.data = s;
    s->grace_init = true;
    s->handles_open++;
    uv_timer_start(&s->grace, grace_cb, grace_ms, 0);
    /* Every connection may already have closed synchronously above (nothing in flight). */
    if (!s->conns)
        server_close_timer(s, &s->grace, &s->grace_init, &s->grace_closed);
}

int server_broadcast(struct server *s, uint32_t events, void *frame, size_t len)
{
    struct event_frame *f;
    int n = 0;

    f = malloc(sizeof(*f));
    if (!f) {
        free(frame);
        return -ENOMEM;
    }
    *f = (struct event_frame){.refs = 1, .len = len, .data = frame};
    for (struct connection *c = s->conns; c; c = c->next) {
        if (c->closing || !c->admitted || !(c->events & events))
            continue;
        if (conn_over_limit(c, len)) {
            log_warning("connection %llu: not reading its notifications (%zu bytes queued, "
                        "limit %zu); closing it",
                        (unsigned long long)c->id, c->queued, s->lim.max_output);
            connection_close(c);
            continue;
        }
        if (conn_write_frame(c, event_frame_ref(f)) == 0)
            n++;
    }
    event_frame_unref(f);
    return n;
}

struct server *server_free(struct server *s)
{
    if (!s)
        return NULL;
    if (s->handles_open > 0 || s->conns) {
        log_error("server freed with %u handle(s) and %s connection(s) open; leaking it",
                  s->handles_open, s->conns ? "some" : "no");
        return NULL;
    }
    if (s->sock_lock_fd >= 0)
        close(s->sock_lock_fd);
    free(s->socket_path);
    free(s);
    return NULL;
}
