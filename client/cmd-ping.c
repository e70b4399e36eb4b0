/*
 * cmd-ping.c - `coarchctl ping`: is the daemon there, and how fast does it answer?
 *
 * The round-trip time covers one request on an open connection (not the connect, and not an
 * autostart), so it measures the daemon's loop latency, which is what a slow answer means.
 */
#include <time.h>

#include "client.h"

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int ping_run(struct client *cl, int argc, char **argv)
{
    struct proto_msg *resp;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    double t0, rtt;
    int r;

    r = client_parse_no_args(cl, &client_cmd_ping, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        return r;

    t0 = now_ms();
    r = client_call(cl, "ping", &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    rtt = now_ms() - t0;
    if (resp->result.type != MSGPACK_OBJECT_STR) {
        fprintf(stderr,
                "coarchctl: coarchd at %s answered ping with something else than a "
                "string\n",
                cl->socket_path);
        proto_msg_free(resp);
        return CLIENT_EXIT_CONNECTION;
    }

    if (!cl->json) {
        printf("%.*s from %s in %.3f ms\n", (int)resp->result.via.str.size,
               resp->result.via.str.ptr, cl->socket_path, rtt);
        proto_msg_free(resp);
        return CLIENT_EXIT_OK;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    proto_pack_str(&pk, "result");
    msgpack_pack_object(&pk, resp->result);
    proto_pack_kv_double(&pk, "rtt_ms", rtt);
    r = client_print_json_packed(cl, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    proto_msg_free(resp);
    return r;
}

const struct client_command client_cmd_ping = {
    .name = "ping",
    .summary = "Check that the daemon answers and print the round-trip time",
    .usage = "ping [--json]",
    .help = "Starts coarchd first when none answers (unless --no-autostart).  Prints\n"
            "\"pong from SOCKET in T ms\"; with --json {\"result\": \"pong\", \"rtt_ms\": T}.\n",
    .run = ping_run,
};
