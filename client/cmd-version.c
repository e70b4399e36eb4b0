/*
 * cmd-version.c - `coarchctl version` and `coarchctl --version`.
 *
 * Never starts a daemon: asking for versions must not have side effects, and must work where
 * no daemon can run.  A daemon that answers is reported too, since a client/daemon mismatch is
 * the first thing to rule out when something behaves oddly.
 */
#include <inttypes.h>

#include "client.h"

/* --version should come back quickly even from a daemon that is stuck. */
#define VERSION_TIMEOUT_MS 5000

static void print_human(struct client *cl, const struct proto_msg *resp)
{
    const msgpack_object *backends;
    const char *v = "?";
    size_t vlen = 1;
    int64_t protocol = -1;

    printf("coarchctl %s (protocol %d)\n", COARCH_VERSION, PROTO_VERSION);
    if (!resp) {
        printf("coarchd   not running at %s\n", cl->socket_path);
        return;
    }
    (void)proto_get_str(&resp->result, "version", &v, &vlen);
    (void)proto_get_int(&resp->result, "protocol", &protocol);
    printf("coarchd   %.*s (protocol %" PRId64, (int)vlen, v, protocol);
    backends = proto_map_get(&resp->result, "backends");
    if (backends && backends->type == MSGPACK_OBJECT_ARRAY) {
        fputs(", backends:", stdout);
        for (uint32_t i = 0; i < backends->via.array.size; i++) {
            const msgpack_object *b = &backends->via.array.ptr[i];
            if (b->type == MSGPACK_OBJECT_STR)
                printf(" %.*s", (int)b->via.str.size, b->via.str.ptr);
        }
    }
    printf(") at %s\n", cl->socket_path);
    if (protocol != PROTO_VERSION)
        fprintf(stderr,
                "warning: coarchd speaks protocol %" PRId64 " but coarchctl speaks %d;"
                " install matching versions\n",
                protocol, PROTO_VERSION);
}

static int print_json(struct client *cl, const struct proto_msg *resp)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int r;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    proto_pack_str(&pk, "client");
    msgpack_pack_map(&pk, 2);
    proto_pack_kv_str(&pk, "version", COARCH_VERSION);
    proto_pack_kv_int(&pk, "protocol", PROTO_VERSION);
    proto_pack_kv_str(&pk, "socket", cl->socket_path);
    proto_pack_str(&pk, "daemon");
    if (resp)
        msgpack_pack_object(&pk, resp->result);
    else
        msgpack_pack_nil(&pk);
    r = client_print_json_packed(cl, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return r;
}

static int version_run(struct client *cl, int argc, char **argv)
{
    struct proto_msg *resp = NULL;
    int r;

    r = client_parse_no_args(cl, &client_cmd_version, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    if (cl->timeout_ms < 0 || cl->timeout_ms > VERSION_TIMEOUT_MS)
        cl->timeout_ms = VERSION_TIMEOUT_MS;

    /* Unreachable is a normal answer here ("not running"), not an error. */
    r = client_connect(cl, CLIENT_CONNECT_NO_AUTOSTART | CLIENT_CONNECT_QUIET |
                               CLIENT_CONNECT_ANY_PROTOCOL);
    if (r == CLIENT_EXIT_OK)
        r = client_call(cl, "version", &resp);
    else
        r = CLIENT_EXIT_OK;
    /* A daemon that failed to answer was explained on stderr; still show our own version. */
    if (cl->json) {
        int pr = print_json(cl, resp);
        r = r != CLIENT_EXIT_OK ? r : pr;
    } else {
        print_human(cl, resp);
    }
    proto_msg_free(resp);
    return r;
}

const struct client_command client_cmd_version = {
    .name = "version",
    .summary = "Show the versions of coarchctl and of the running daemon",
    .usage = "version [--json]",
    .help =
        "Never starts a daemon.  Prints the client's version and protocol, then the\n"
        "daemon's (version, protocol, compute backends) or \"not running\".  With --json:\n"
        "{\"client\": {\"version\", \"protocol\"}, \"socket\": PATH, \"daemon\": {...} or null}.\n",
    .run = version_run,
};
