/*
 * methods-core.c - see methods-core.h; the contract is PROTOCOL.md section 7.
 */
#include "methods-core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "conn.h"
#include "daemon.h"
#include "log.h"
#include "rpc.h"
#include "work.h"

/* Bounds for the debug methods: enough for any test, too little to hurt. */
#define DEBUG_SLEEP_MAX_MS 60000
#define DEBUG_NOTIFY_MAX_COUNT 100000
#define DEBUG_NOTIFY_MAX_BYTES (1u << 20)

static int method_ping(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    return rpc_request_reply_str(req, "pong");
}

/* The compute backends built into this coarchd (backend.h), best first. */
static int pack_version(msgpack_packer *pk, void *userdata)
{
    uint32_t n = 0;

    while (embed_backends[n])
        n++;
    if (msgpack_pack_map(pk, 3) < 0 || proto_pack_kv_str(pk, "version", COARCH_VERSION) < 0 ||
        proto_pack_kv_int(pk, "protocol", PROTO_VERSION) < 0 ||
        proto_pack_str(pk, "backends") < 0 || msgpack_pack_array(pk, n) < 0)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        if (proto_pack_str(pk, embed_backends[i]->name) < 0)
            return -ENOMEM;
    return 0;
}

static int method_version(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    return rpc_request_reply_ok(req, pack_version, NULL);
}

static int method_status(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    return rpc_request_reply_ok(req, daemon_pack_status, userdata);
}

static int method_shutdown(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct daemon *d = userdata;

    /* Answer first: the stop sequence writes this answer out before closing the connection. */
    rpc_request_reply_bool(req, true);
    daemon_stop(d, "shutdown request");
    return 0;
}

static int method_subscribe(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    const msgpack_object *events = proto_map_get(params, "events");
    uint32_t mask = 0;

    if (!events || events->type == MSGPACK_OBJECT_NIL)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"events\" is required (an array of event names)");
    if (events->type != MSGPACK_OBJECT_ARRAY)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"events\" must be an array of strings");
    for (uint32_t i = 0; i < events->via.array.size; i++) {
        const msgpack_object *e = &events->via.array.ptr[i];
        uint32_t bit;

        if (e->type != MSGPACK_OBJECT_STR)
            return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                           "\"events\" must be an array of strings");
        /* Unknown names are ignored (PROTOCOL.md 7.11): a newer client may know more. */
        if (rpc_event_from_name(e->via.str.ptr, e->via.str.size, &bit) == 0)
            mask |= bit;
    }
    connection_set_events(rpc_request_connection(req), mask);
    return rpc_request_reply_bool(req, true);
}

static bool debug_enabled(struct rpc_request *req, struct daemon *d, const char *name)
{
    if (daemon_get_config(d)->debug_methods)
        return true;
    rpc_request_reply_error(req, PROTO_ERROR_METHOD_NOT_FOUND,
                            "unknown method \"%s\" (debug methods are off; see "
                            "COARCH_DEBUG_METHODS)",
                            name);
    return false;
}

/* Reads an optional integer parameter in [lo, hi]; answers invalid_params and returns false
 * when it is present and wrong. */
static bool get_int_param(struct rpc_request *req, const msgpack_object *params, const char *key,
                          int64_t lo, int64_t hi, int64_t *value)
{
    int r = proto_get_int(params, key, value);

    if (r == -ENOENT)
        return true;
    if (r < 0 || *value < lo || *value > hi) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                "\"%s\" must be an integer in [%lld, %lld]", key, (long long)lo,
                                (long long)hi);
        return false;
    }
    return true;
}

struct debug_sleep {
    struct rpc_request *req;
    int64_t ms;
};

static void debug_sleep_work(void *userdata)
{
    struct debug_sleep *s = userdata;
    struct timespec ts = {.tv_sec = s->ms / 1000, .tv_nsec = (s->ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void debug_sleep_done(int status, void *userdata)
{
    struct debug_sleep *s = userdata;

    if (status < 0)
        rpc_request_reply_errno(s->req, status, "debug.sleep: %s", strerror(-status));
    else
        rpc_request_reply_bool(s->req, true);
    free(s);
}

/* debug.sleep {ms}: answers true after sleeping on a pool thread; a request held in flight. */
static int method_debug_sleep(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct daemon *d = userdata;
    struct debug_sleep *s;
    int64_t ms = 0;
    int r;

    if (!debug_enabled(req, d, "debug.sleep"))
        return 0;
    if (!get_int_param(req, params, "ms", 0, DEBUG_SLEEP_MAX_MS, &ms))
        return 0;
    s = malloc(sizeof(*s));
    if (!s)
        return -ENOMEM;
    *s = (struct debug_sleep){.req = req, .ms = ms};
    r = event_work_queue(daemon_loop(d), debug_sleep_work, debug_sleep_done, s);
    if (r < 0) {
        free(s);
        return r;
    }
    return 0;
}

struct debug_notify {
    int64_t seq;
    const char *pad;
    size_t pad_len;
};

static int pack_debug_notify(msgpack_packer *pk, void *userdata)
{
    struct debug_notify *n = userdata;

    if (proto_pack_kv_int(pk, "seq", n->seq) < 0 || proto_pack_str(pk, "pad") < 0 ||
        msgpack_pack_bin(pk, n->pad_len) < 0 || msgpack_pack_bin_body(pk, n->pad, n->pad_len) < 0)
        return -ENOMEM;
    return 0;
}

static int pack_int(msgpack_packer *pk, void *userdata)
{
    return msgpack_pack_int64(pk, *(int64_t *)userdata) < 0 ? -ENOMEM : 0;
}

/* debug.notify {count, bytes, event}: broadcasts `count` notifications [2, "debug.notify",
 * {seq, pad}] to subscribers of `event` (default "debug"); answers how many were queued. */
static int method_debug_notify(struct rpc_request *req, const msgpack_object *params,
                               void *userdata)
{
    struct daemon *d = userdata;
    int64_t count = 1, bytes = 0, delivered = 0;
    const char *name = "debug";
    size_t name_len = 5;
    uint32_t event;
    char *pad;
    int r;

    if (!debug_enabled(req, d, "debug.notify"))
        return 0;
    if (!get_int_param(req, params, "count", 1, DEBUG_NOTIFY_MAX_COUNT, &count) ||
        !get_int_param(req, params, "bytes", 0, DEBUG_NOTIFY_MAX_BYTES, &bytes))
        return 0;
    r = proto_get_str(params, "event", &name, &name_len);
    if ((r < 0 && r != -ENOENT) || rpc_event_from_name(name, name_len, &event) < 0)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"event\" must be a known event name");
    pad = calloc(1, (size_t)bytes + 1);
    if (!pad)
        return -ENOMEM;
    for (int64_t i = 0; i < count; i++) {
        struct debug_notify n = {.seq = i, .pad = pad, .pad_len = (size_t)bytes};

        r = rpc_notify(daemon_rpc(d), event, "debug.notify", 2, pack_debug_notify, &n);
        if (r < 0) {
            free(pad);
            return r;
        }
        delivered += r;
    }
    free(pad);
    return rpc_request_reply_ok(req, pack_int, &delivered);
}

int methods_core_register(struct rpc *rpc, struct daemon *d)
{
    static const struct {
        const char *name;
        rpc_method_fn fn;
    } methods[] = {
        {"ping", method_ping},
        {"version", method_version},
        {"status", method_status},
        {"shutdown", method_shutdown},
        {"subscribe", method_subscribe},
        {"debug.sleep", method_debug_sleep},
        {"debug.notify", method_debug_notify},
    };

    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        int r = rpc_register(rpc, methods[i].name, methods[i].fn, d);

        if (r < 0)
            return r;
    }
    return 0;
}
