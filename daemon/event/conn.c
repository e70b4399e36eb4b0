/*
 * conn.c - one client connection: accept and peer check, reading into the decoder, bounded
 * writing, deferred close and draining (see loop.h for the rules, conn.h for the API).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event-int.h"
#include "log.h"
#include "macro.h"

struct conn_write {
    uv_write_t req;
    struct connection *conn;
    struct event_frame *frame;
};

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static int conn_flush(struct connection *c);

struct event_frame *event_frame_ref(struct event_frame *f)
{
    f->refs++;
    return f;
}

struct event_frame *event_frame_unref(struct event_frame *f)
{
    if (f && --f->refs == 0) {
        free(f->data);
        free(f);
    }
    return NULL;
}

struct connection *connection_ref(struct connection *c)
{
    c->refs++;
    return c;
}

struct connection *connection_unref(struct connection *c)
{
    if (!c || --c->refs > 0)
        return NULL;
    proto_decoder_free(c->decoder);
    free(c->obuf);
    free(c);
    return NULL;
}

uint64_t connection_id(const struct connection *c)
{
    return c->id;
}

pid_t connection_peer_pid(const struct connection *c)
{
    return c->peer_pid;
}

bool connection_is_open(const struct connection *c)
{
    return !c->closing;
}

unsigned connection_pending(const struct connection *c)
{
    return c->pending;
}

void connection_set_events(struct connection *c, uint32_t events)
{
    c->events = events;
}

uint32_t connection_events(const struct connection *c)
{
    return c->events;
}

static void conn_close_cb(uv_handle_t *handle)
{
    struct connection *c = handle->data;

    if (c->admitted)
        log_debug("connection %llu closed", (unsigned long long)c->id);
    server_connection_closed(c->server, c);
    connection_unref(c); /* the handle's reference */
}

static void conn_do_close(struct connection *c)
{
    c->close_deferred = false;
    uv_close((uv_handle_t *)&c->pipe, conn_close_cb);
}

void connection_close(struct connection *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->admitted)
        c->server->n_open--;
    uv_read_stop((uv_stream_t *)&c->pipe);
    if (c->in_callback > 0) {
        c->close_deferred = true;
        return;
    }
    conn_do_close(c);
}

/* Enter/leave one of our callbacks for c: holds a reference and defers closes (loop.h). */
static void conn_enter(struct connection *c)
{
    connection_ref(c);
    c->in_callback++;
}

static void conn_leave(struct connection *c)
{
    if (--c->in_callback == 0) {
        (void)conn_flush(c);
        if (c->close_deferred)
            conn_do_close(c);
    }
    connection_unref(c);
}

/* A draining connection closes once everything it owes the peer is written. */
static void conn_maybe_finish(struct connection *c)
{
    if (c->draining && !c->closing && c->pending == 0 && c->queued == 0 && c->obuf_len == 0)
        connection_close(c);
}

void conn_drain(struct connection *c)
{
    if (c->closing)
        return;
    c->draining = true;
    uv_read_stop((uv_stream_t *)&c->pipe);
    conn_maybe_finish(c);
}

void connection_request_begin(struct connection *c)
{
    c->pending++;
}

void connection_request_end(struct connection *c)
{
    c->pending--;
    conn_maybe_finish(c);
}

static size_t conn_high_mark(const struct connection *c)
{
    return c->server->lim.max_output / 4;
}

/*
 * What a queued write costs beyond its bytes: the write request and the frame header.  Counted
 * in `queued`, so max_output bounds real memory even when a client leaves thousands of tiny
 * answers unread.
 */
#define CONN_WRITE_OVERHEAD (sizeof(struct conn_write) + sizeof(struct event_frame))

/* Frames up to this size are coalesced while a read callback runs; larger ones go out alone
 * (copying them would cost more than the extra write). */
#define CONN_COALESCE_MAX (64u * 1024)

bool conn_over_limit(const struct connection *c, size_t len)
{
    return c->queued + c->obuf_len + len + CONN_WRITE_OVERHEAD > c->server->lim.max_output;
}

static void on_write(uv_write_t *req, int status)
{
    struct conn_write *w = req->data;
    struct connection *c = w->conn;

    c->queued -= w->frame->len + CONN_WRITE_OVERHEAD;
    event_frame_unref(w->frame);
    free(w);

    if (c->closing)
        return;
    if (status < 0) {
        log_debug("connection %llu: write failed: %s", (unsigned long long)c->id,
                  uv_strerror(status));
        connection_close(c);
        return;
    }
    if (c->read_paused && !c->draining && c->queued <= conn_high_mark(c) / 2) {
        log_debug("connection %llu: client caught up, reading again", (unsigned long long)c->id);
        c->read_paused = false;
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    }
    conn_maybe_finish(c);
}

/* uv_write() of one frame; takes the frame reference in every case. */
static int conn_write_raw(struct connection *c, struct event_frame *f)
{
    struct conn_write *w;
    uv_buf_t buf;
    int r;

    w = malloc(sizeof(*w));
    if (!w) {
        event_frame_unref(f);
        connection_close(c); /* an answer is lost: the client must not wait for it forever */
        return -ENOMEM;
    }
    *w = (struct conn_write){.conn = c, .frame = f};
    w->req.data = w;
    buf = uv_buf_init(f->data, (unsigned)f->len);
    r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write);
    if (r < 0) {
        event_frame_unref(f);
        free(w);
        log_debug("connection %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(r));
        connection_close(c);
        return r;
    }
    c->queued += f->len + CONN_WRITE_OVERHEAD;
    return 0;
}

/* Writes out the coalesced frames, if any. */
static int conn_flush(struct connection *c)
{
    struct event_frame *f;

    if (c->obuf_len == 0 || c->closing)
        return 0;
    f = malloc(sizeof(*f));
    if (!f) {
        connection_close(c);
        return -ENOMEM;
    }
    *f = (struct event_frame){.refs = 1, .len = c->obuf_len, .data = c->obuf};
    c->obuf = NULL;
    c->obuf_len = c->obuf_cap = 0;
    return conn_write_raw(c, f);
}

int conn_write_frame(struct connection *c, struct event_frame *f)
{
    int r;

    if (c->closing) {
        event_frame_unref(f);
        return -ENOTCONN;
    }
    /* Order on the wire is the order of sends: coalesced frames go first. */
    r = conn_flush(c);
    if (r < 0) {
        event_frame_unref(f);
        return r;
    }
    return conn_write_raw(c, f);
}

int connection_send(struct connection *c, void *frame, size_t len)
{
    struct event_frame *f;

    if (c->closing) {
        free(frame);
        return -ENOTCONN;
    }
    if (conn_over_limit(c, len)) {
        log_warning("connection %llu: client is not reading (%zu bytes queued, limit %zu); "
                    "closing it",
                    (unsigned long long)c->id, c->queued + c->obuf_len, c->server->lim.max_output);
        free(frame);
        connection_close(c);
        return -ENOBUFS;
    }
    /*
     * Inside a read callback, answers to pipelined requests are gathered and written with one
     * uv_write() when the callback ends (conn_leave()): one syscall and one request instead of
     * one per answer.  Outside (a worker's completion) there is nothing to wait for.
     */
    if (c->in_callback > 0 && len < CONN_COALESCE_MAX) {
        if (array_grow((void **)&c->obuf, &c->obuf_cap, c->obuf_len + len, 1) < 0) {
            free(frame);
            connection_close(c);
            return -ENOMEM;
        }
        memcpy(c->obuf + c->obuf_len, frame, len);
        c->obuf_len += len;
        free(frame);
        return c->obuf_len >= CONN_COALESCE_MAX ? conn_flush(c) : 0;
    }
    f = malloc(sizeof(*f));
    if (!f) {
        free(frame);
        connection_close(c);
        return -ENOMEM;
    }
    *f = (struct event_frame){.refs = 1, .len = len, .data = frame};
    return conn_write_frame(c, f);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct connection *c = handle->data;

    buf->base = c->server->read_buf;
    buf->len = sizeof(c->server->read_buf);
}

/* Takes every complete message out of the decoder and hands it on; stops at need-more, at a
 * lost framing (closing the connection) or when the connection starts closing. */
static void conn_dispatch(struct connection *c)
{
    const struct server_handler *h = &c->server->handler;

    while (!c->closing && !c->draining) {
        struct proto_msg *msg = NULL;
        int64_t id = -1;
        const char *reason;
        int code, r;

        r = proto_decoder_next(c->decoder, &msg, &id);
        if (r == 0)
            return;
        if (r == 1) {
            h->message(c, msg, h->userdata);
            continue;
        }
        reason = proto_decoder_last_error(c->decoder, &code);
        if (r == -EMSGSIZE) {
            /* PROTOCOL.md section 2: the next frame cannot be found; log and close, but only
             * once the answers to the frames before it are written (a ping and an oversized
             * header in one write still get their pong). */
            log_info("connection %llu: %s; closing it (framing lost)", (unsigned long long)c->id,
                     reason);
            conn_drain(c);
            return;
        }
        /* -EBADMSG or -ENOMEM: the frame was consumed; answer it if it had an id. */
        h->invalid(c, id, code, reason, h->userdata);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct connection *c = stream->data;
    int r;

    if (nread == 0)
        return;
    conn_enter(c);
    if (nread < 0) {
        if (nread == UV_EOF) {
            /* The peer may have half-closed after sending: answer what it asked, then close. */
            log_debug("connection %llu: end of stream", (unsigned long long)c->id);
            conn_drain(c);
        } else {
            log_debug("connection %llu: read failed: %s", (unsigned long long)c->id,
                      uv_strerror((int)nread));
            connection_close(c);
        }
        goto out;
    }
    c->last_activity_ms = uv_now(&c->server->el->uv);

    /* -EMSGSIZE here still appended the bytes: the frames before the bad header are served
     * first, and conn_dispatch() closes when it reaches it. */
    r = proto_decoder_feed(c->decoder, buf->base, (size_t)nread);
    if (r < 0 && r != -EMSGSIZE) {
        log_warning("connection %llu: cannot buffer input: %s; closing it",
                    (unsigned long long)c->id, strerror(-r));
        connection_close(c);
        goto out;
    }
    conn_dispatch(c);
    (void)conn_flush(c);

    if (!c->closing && !c->draining && c->queued >= conn_high_mark(c)) {
        log_debug("connection %llu: %zu bytes queued, pausing reads until the client catches up",
                  (unsigned long long)c->id, c->queued);
        c->read_paused = true;
        uv_read_stop(stream);
    }
out:
    conn_leave(c);
}

/* Refuses peers that are not our uid, and connections over the limit. */
static bool conn_admit(struct server *s, struct connection *c)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uint64_t now;
    int fd = -1;

    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        log_warning("refusing a connection: cannot read its peer credentials");
        return false;
    }
    c->peer_pid = cred.pid;
    c->peer_uid = cred.uid;
    if (cred.uid != geteuid()) {
        log_warning("refusing a connection from uid %u (pid %d): only uid %u may use this "
                    "daemon",
                    (unsigned)cred.uid, (int)cred.pid, (unsigned)geteuid());
        return false;
    }
    if (s->n_open < s->lim.max_connections)
        return true;

    /* A client stuck in a reconnect loop must not flood the journal: one line a second. */
    now = uv_now(&s->el->uv);
    if (s->refused_log_ms == 0 || now - s->refused_log_ms >= 1000) {
        log_warning("refusing a connection from pid %d: %u connections open, the limit is %u "
                    "(COARCH_MAX_CONNECTIONS)%s",
                    (int)cred.pid, s->n_open, s->lim.max_connections,
                    s->refused_suppressed ? "; more refused since the last message" : "");
        s->refused_log_ms = now;
        s->refused_suppressed = 0;
    } else {
        s->refused_suppressed++;
    }
    return false;
}

int conn_accept(struct server *s)
{
    struct connection *c;
    int r;

    c = calloc(1, sizeof(*c));
    if (!c) {
        /* Without a handle we cannot even accept to close; libuv retries on the next
         * readiness event. */
        log_error("out of memory accepting a connection");
        return -ENOMEM;
    }
    c->refs = 1; /* the handle's */
    c->server = s;
    c->id = s->next_id++;
    r = uv_pipe_init(&s->el->uv, &c->pipe, 0);
    if (r < 0) {
        free(c);
        return r;
    }
    c->pipe.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;

    r = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->pipe);
    if (r < 0) {
        log_warning("accepting a connection failed: %s", uv_strerror(r));
        c->closing = true;
        conn_do_close(c);
        return r;
    }
    if (!conn_admit(s, c)) {
        c->closing = true;
        conn_do_close(c);
        return -EPERM;
    }
    c->decoder = proto_decoder_new(&s->lim.proto);
    if (!c->decoder) {
        log_warning("out of memory for a new connection; closing it");
        c->closing = true;
        conn_do_close(c);
        return -ENOMEM;
    }
    c->admitted = true;
    s->n_open++;
    c->last_activity_ms = uv_now(&s->el->uv);
    r = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    if (r < 0) {
        connection_close(c);
        return r;
    }
    log_debug("connection %llu opened (pid %d)", (unsigned long long)c->id, (int)c->peer_pid);
    return 0;
}
