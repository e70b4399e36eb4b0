/*
 * cmd-status.c - `coarchctl status`: what the daemon is doing.
 *
 * --json prints the daemon's status map as it came, so keys that later daemons add reach
 * scripts without a client change.  The people's form lays out the keys this client knows and
 * then lists every other key generically, for the same reason.
 */
#include <inttypes.h>
#include <string.h>

#include "client.h"
#include "macro.h"
#include "output.h"

/* Keys laid out by print_known(); everything else is printed generically after them. */
static const char *const known_keys[] = {
    "pid",      "version",     "protocol", "uptime_ms", "socket",
    "data_dir", "connections", "requests", "memory",    "state",
};

static bool is_known(const msgpack_object *key)
{
    if (key->type != MSGPACK_OBJECT_STR)
        return false;
    for (size_t i = 0; i < ELEMENTSOF(known_keys); i++)
        if (key->via.str.size == strlen(known_keys[i]) &&
            memcmp(key->via.str.ptr, known_keys[i], key->via.str.size) == 0)
            return true;
    return false;
}

/* "label:" padded, then the value of `key` (or "?" when absent). */
static void print_field(const msgpack_object *map, const char *label, const char *key)
{
    const msgpack_object *v = proto_map_get(map, key);

    printf("%-13s", label);
    if (v)
        output_human_scalar(stdout, v);
    else
        fputs("?", stdout);
    putchar('\n');
}

static void print_known(const msgpack_object *st)
{
    const msgpack_object *mem = proto_map_get(st, "memory");
    const char *version = "?", *state = "?";
    size_t vlen = 1, slen = 1;
    int64_t pid = 0, protocol = 0;
    uint64_t uptime = 0, rss = 0, limit = 0;
    char up[32], b1[32], b2[32];

    (void)proto_get_str(st, "version", &version, &vlen);
    (void)proto_get_str(st, "state", &state, &slen);
    (void)proto_get_int(st, "pid", &pid);
    (void)proto_get_int(st, "protocol", &protocol);
    (void)proto_get_uint(st, "uptime_ms", &uptime);
    output_format_duration_ms(uptime, up, sizeof(up));
    printf("coarchd %.*s (protocol %" PRId64 "), pid %" PRId64 ", %.*s for %s\n", (int)vlen,
           version, protocol, pid, (int)slen, state, up);

    print_field(st, "socket:", "socket");
    print_field(st, "data dir:", "data_dir");
    print_field(st, "connections:", "connections");
    print_field(st, "requests:", "requests");
    if (mem) {
        (void)proto_get_uint(mem, "rss_bytes", &rss);
        (void)proto_get_uint(mem, "limit_bytes", &limit);
        output_format_bytes(rss, b1, sizeof(b1));
        output_format_bytes(limit, b2, sizeof(b2));
        printf("%-13s%s RSS, limit %s\n", "memory:", b1, limit ? b2 : "unknown");
    }
}

static int status_run(struct client *cl, int argc, char **argv)
{
    struct proto_msg *resp;
    const msgpack_object *st;
    int r;

    r = client_parse_no_args(cl, &client_cmd_status, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        return r;
    r = client_call(cl, "status", &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    st = &resp->result;

    if (cl->json || st->type != MSGPACK_OBJECT_MAP) {
        client_print_result(cl, st);
        proto_msg_free(resp);
        return CLIENT_EXIT_OK;
    }
    print_known(st);
    for (uint32_t i = 0; i < st->via.map.size; i++) {
        msgpack_object one = {.type = MSGPACK_OBJECT_MAP,
                              .via.map = {.size = 1, .ptr = &st->via.map.ptr[i]}};
        if (!is_known(&st->via.map.ptr[i].key))
            output_human(stdout, &one, 0);
    }
    proto_msg_free(resp);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_status = {
    .name = "status",
    .summary = "Show the daemon's state, memory use and counters",
    .usage = "status [--json]",
    .help = "Starts coarchd first when none answers (unless --no-autostart).  With --json the\n"
            "daemon's status map is printed as one JSON object: pid, version, protocol,\n"
            "uptime_ms, socket, data_dir, connections, requests, memory {rss_bytes,\n"
            "limit_bytes}, state, and whatever else this daemon reports.\n",
    .run = status_run,
};
