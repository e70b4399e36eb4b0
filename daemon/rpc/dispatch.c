/*
 * dispatch.c - the method table, request objects and answers (see rpc.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "rpc.h"
#include "server.h"

struct rpc_method {
    const char *name;
    size_t name_len;
    rpc_method_fn fn;
    void *userdata;
};

struct rpc {
    struct server *server;
    struct rpc_limits lim;
    struct rpc_method *methods;
    size_t n_methods, cap_methods;
    bool stopping;
    uint64_t served;
    unsigned inflight;
    void (*on_idle)(void *userdata);
    void *idle_userdata;
};

struct rpc_request {
    struct rpc *rpc;
    struct connection *conn; /* referenced */
    struct proto_msg *msg;   /* owns params */
    uint32_t id;
};

static const struct {
    const char *name;
    uint32_t event;
} event_names[] = {
    {"progress", RPC_EVENT_PROGRESS},
    {"debug", RPC_EVENT_DEBUG},
};

int rpc_event_from_name(const char *name, size_t len, uint32_t *ret_event)
{
    for (size_t i = 0; i < ELEMENTSOF(event_names); i++)
        if (strlen(event_names[i].name) == len && memcmp(event_names[i].name, name, len) == 0) {
            *ret_event = event_names[i].event;
            return 0;
        }
    return -ENOENT;
}

static void rpc_on_message(struct connection *c, struct proto_msg *msg, void *userdata);
static void rpc_on_invalid(struct connection *c, int64_t id, int code, const char *reason,
                           void *userdata);

int rpc_new(struct server *server, const struct rpc_limits *limits, struct rpc **ret_rpc)
{
    struct rpc *rpc = calloc(1, sizeof(*rpc));

    if (!rpc)
        return -ENOMEM;
    rpc->server = server;
    rpc->lim = *limits;
    server_set_handler(server, &(struct server_handler){
                                   .message = rpc_on_message,
                                   .invalid = rpc_on_invalid,
                                   .userdata = rpc,
                               });
    *ret_rpc = rpc;
    return 0;
}

struct rpc *rpc_free(struct rpc *rpc)
{
    if (!rpc)
        return NULL;
    if (rpc->inflight > 0)
        log_error("%u request(s) never answered", rpc->inflight);
    free(rpc->methods);
    free(rpc);
    return NULL;
}

void rpc_set_limits(struct rpc *rpc, const struct rpc_limits *limits)
{
    rpc->lim = *limits;
}

void rpc_set_stopping(struct rpc *rpc)
{
    rpc->stopping = true;
}

uint64_t rpc_requests_served(const struct rpc *rpc)
{
    return rpc->served;
}

unsigned rpc_requests_inflight(const struct rpc *rpc)
{
    return rpc->inflight;
}

void rpc_set_idle_callback(struct rpc *rpc, void (*fn)(void *userdata), void *userdata)
{
    rpc->on_idle = fn;
    rpc->idle_userdata = userdata;
}

static const struct rpc_method *rpc_find(const struct rpc *rpc, const char *name, size_t len)
{
    for (size_t i = 0; i < rpc->n_methods; i++)
        if (rpc->methods[i].name_len == len && memcmp(rpc->methods[i].name, name, len) == 0)
            return &rpc->methods[i];
    return NULL;
}

int rpc_register(struct rpc *rpc, const char *name, rpc_method_fn fn, void *userdata)
{
    int r;

    if (rpc_find(rpc, name, strlen(name)))
        return -EEXIST;
    r = array_grow((void **)&rpc->methods, &rpc->cap_methods, rpc->n_methods + 1,
                   sizeof(*rpc->methods));
    if (r < 0)
        return r;
    rpc->methods[rpc->n_methods++] = (struct rpc_method){
        .name = name,
        .name_len = strlen(name),
        .fn = fn,
        .userdata = userdata,
    };
    return 0;
}

uint32_t rpc_request_id(const struct rpc_request *req)
{
    return req->id;
}

struct connection *rpc_request_connection(const struct rpc_request *req)
{
    return req->conn;
}

bool rpc_request_abandoned(const struct rpc_request *req)
{
    return !connection_is_open(req->conn);
}

/* The end of every request: counters, the connection's pending count, the arena. */
static void rpc_request_finish(struct rpc_request *req)
{
    struct rpc *rpc = req->rpc;

    connection_request_end(req->conn);
    connection_unref(req->conn);
    proto_msg_free(req->msg);
    free(req);
    rpc->served++;
    if (--rpc->inflight == 0 && rpc->on_idle)
        rpc->on_idle(rpc->idle_userdata);
}

/* Packs and queues [1, id, {code, message}, nil]; nothing is consumed. */
static int send_error(struct rpc *rpc, struct connection *c, uint32_t id, int code,
                      const char *message)
{
    struct proto_writer w;
    size_t len;
    char *buf;
    int r;

    proto_writer_init(&w, rpc->lim.max_frame);
    r = proto_writer_begin(&w);
    if (r == 0) {
        (void)proto_pack_response_error(&w.pk, id, code, message);
        r = proto_writer_end(&w); /* reports a failed write */
    }
    if (r < 0) {
        proto_writer_release(&w);
        return r;
    }
    buf = proto_writer_steal(&w, &len);
    proto_writer_release(&w);
    return connection_send(c, buf, len);
}

/* Logs an answer that could not be queued; the request is finished either way. */
static void log_dropped(const struct rpc_request *req, int r)
{
    if (r < 0)
        log_debug("connection %llu: answer to request %" PRIu32 " dropped: %s",
                  (unsigned long long)connection_id(req->conn), req->id, strerror(-r));
}

static int reply_error_va(struct rpc_request *req, int code, const char *fmt, va_list ap)
{
    char message[512];
    int r = -ENOTCONN;

    if (connection_is_open(req->conn)) {
        vsnprintf(message, sizeof(message), fmt, ap);
        r = send_error(req->rpc, req->conn, req->id, code, message);
    }
    log_dropped(req, r);
    rpc_request_finish(req);
    return 0;
}

int rpc_request_reply_error(struct rpc_request *req, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    reply_error_va(req, code, fmt, ap);
    va_end(ap);
    return 0;
}

int rpc_request_reply_errno(struct rpc_request *req, int neg_errno, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    reply_error_va(req, proto_error_code_from_errno(neg_errno), fmt, ap);
    va_end(ap);
    return 0;
}

int rpc_request_reply_ok(struct rpc_request *req, rpc_pack_fn pack, void *userdata)
{
    struct rpc *rpc = req->rpc;
    struct proto_writer w;
    size_t len;
    char *buf;
    int r;

    if (!connection_is_open(req->conn)) {
        log_dropped(req, -ENOTCONN);
        rpc_request_finish(req);
        return 0;
    }
    proto_writer_init(&w, rpc->lim.max_frame);
    r = proto_writer_begin(&w);
    if (r == 0) {
        int pr = proto_pack_response_ok(&w.pk, req->id);

        if (pr == 0)
            pr = pack(&w.pk, userdata);
        /* A failed write makes the packers say -ENOMEM; the writer knows the real cause
         * (-EMSGSIZE for a result over max_frame).  Otherwise the packer's own error wins. */
        r = proto_writer_end(&w);
        if (r == 0 && pr < 0)
            r = pr;
    }
    if (r < 0) {
        proto_writer_release(&w);
        if (r == -EMSGSIZE)
            return rpc_request_reply_error(req, PROTO_ERROR_TOO_LARGE,
                                           "the result is larger than the frame limit of %" PRIu32
                                           " bytes",
                                           rpc->lim.max_frame);
        return rpc_request_reply_errno(req, r, "cannot build the result: %s", strerror(-r));
    }
    buf = proto_writer_steal(&w, &len);
    proto_writer_release(&w);
    r = connection_send(req->conn, buf, len);
    log_dropped(req, r);
    rpc_request_finish(req);
    return 0;
}

static int pack_bool(msgpack_packer *pk, void *userdata)
{
    int r = *(bool *)userdata ? msgpack_pack_true(pk) : msgpack_pack_false(pk);

    return r < 0 ? -ENOMEM : 0;
}

static int pack_str(msgpack_packer *pk, void *userdata)
{
    return proto_pack_str(pk, userdata);
}

int rpc_request_reply_bool(struct rpc_request *req, bool value)
{
    return rpc_request_reply_ok(req, pack_bool, &value);
}

int rpc_request_reply_str(struct rpc_request *req, const char *value)
{
    return rpc_request_reply_ok(req, pack_str, (void *)value);
}

static void rpc_on_message(struct connection *c, struct proto_msg *msg, void *userdata)
{
    struct rpc *rpc = userdata;
    const struct rpc_method *m;
    struct rpc_request *req;
    int r;

    if (msg->type != PROTO_MSG_REQUEST) {
        /* PROTOCOL.md section 3: clients send requests only; anything else is ignored. */
        log_debug("connection %llu: ignoring a message of type %d",
                  (unsigned long long)connection_id(c), (int)msg->type);
        proto_msg_free(msg);
        return;
    }
    req = calloc(1, sizeof(*req));
    if (!req) {
        (void)send_error(rpc, c, msg->id, PROTO_ERROR_NO_MEMORY, "out of memory");
        proto_msg_free(msg);
        return;
    }
    *req = (struct rpc_request){
        .rpc = rpc,
        .conn = connection_ref(c),
        .msg = msg,
        .id = msg->id,
    };
    connection_request_begin(c);
    rpc->inflight++;

    log_debug("connection %llu: request %" PRIu32 " %.*s", (unsigned long long)connection_id(c),
              msg->id, (int)MIN(msg->method_len, 64u), msg->method);
    if (rpc->stopping) {
        rpc_request_reply_error(req, PROTO_ERROR_SHUTTING_DOWN, "coarchd is shutting down");
        return;
    }
    if (connection_pending(c) > rpc->lim.max_pending) {
        rpc_request_reply_error(req, PROTO_ERROR_BUSY,
                                "too many requests in flight on this connection (limit %" PRIu32
                                ", COARCH_MAX_PENDING)",
                                rpc->lim.max_pending);
        return;
    }
    m = rpc_find(rpc, msg->method, msg->method_len);
    if (!m) {
        rpc_request_reply_error(req, PROTO_ERROR_METHOD_NOT_FOUND, "unknown method \"%.*s\"",
                                (int)MIN(msg->method_len, 64u), msg->method);
        return;
    }
    r = m->fn(req, &msg->params, m->userdata);
    if (r < 0)
        rpc_request_reply_errno(req, r, "%s failed: %s", m->name, strerror(-r));
}

static void rpc_on_invalid(struct connection *c, int64_t id, int code, const char *reason,
                           void *userdata)
{
    struct rpc *rpc = userdata;

    if (id < 0) {
        /* PROTOCOL.md section 6: no id, nobody to answer. */
        log_debug("connection %llu: dropping an invalid frame without an id: %s",
                  (unsigned long long)connection_id(c), reason);
        return;
    }
    log_debug("connection %llu: invalid frame (id %" PRId64 "): %s",
              (unsigned long long)connection_id(c), id, reason);
    (void)send_error(rpc, c, (uint32_t)id, code ? code : PROTO_ERROR_INVALID_REQUEST, reason);
}

int rpc_notify(struct rpc *rpc, uint32_t events, const char *method, uint32_t n_params,
               rpc_pack_fn pack, void *userdata)
{
    struct proto_writer w;
    size_t len;
    char *buf;
    int r;

    proto_writer_init(&w, rpc->lim.max_frame);
    r = proto_writer_begin(&w);
    if (r == 0) {
        int pr = proto_pack_notification(&w.pk, method, n_params);

        if (pr == 0 && pack)
            pr = pack(&w.pk, userdata);
        r = proto_writer_end(&w); /* as in rpc_request_reply_ok() */
        if (r == 0 && pr < 0)
            r = pr;
    }
    if (r < 0) {
        proto_writer_release(&w);
        return r;
    }
    buf = proto_writer_steal(&w, &len);
    proto_writer_release(&w);
    if (!buf)
        return -ENOMEM;
    return server_broadcast(rpc->server, events, buf, len);
}
