/*
 * cmd-shutdown.c - `coarchctl shutdown`: stop the daemon and return once it is gone.
 *
 * "Gone" is the daemon closing our connection: it answers `shutdown`, finishes in-flight work,
 * removes its socket and exits, and the kernel closes our connection only when the process
 * has released it.  We then give the socket file a moment to disappear as well, but do not
 * insist: under systemd socket activation the socket belongs to systemd and stays.
 * Never starts a daemon (there would be nothing to stop), and works with a daemon of another
 * protocol version, whose `shutdown` has the same shape.
 */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "client.h"
#include "macro.h"

#define SOCKET_GONE_WAIT_MS 2000

static bool socket_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static void wait_socket_gone(const char *path, int timeout_ms)
{
    struct timespec step = {.tv_nsec = 10 * 1000000};

    for (int waited = 0; waited < timeout_ms && socket_exists(path); waited += 10)
        nanosleep(&step, NULL);
}

static int shutdown_run(struct client *cl, int argc, char **argv)
{
    struct proto_msg *resp;
    int r;

    r = client_parse_no_args(cl, &client_cmd_shutdown, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    /* Any protocol: stopping an old daemon is what one does after upgrading coarchctl. */
    r = client_connect(cl, CLIENT_CONNECT_NO_AUTOSTART | CLIENT_CONNECT_QUIET |
                               CLIENT_CONNECT_ANY_PROTOCOL);
    if (r == CLIENT_EXIT_UNREACHABLE)
        fprintf(stderr, "coarchctl: no daemon answers at %s; nothing to shut down\n",
                cl->socket_path);
    if (r != CLIENT_EXIT_OK)
        return r;
    r = client_call(cl, "shutdown", &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_msg_free(resp);

    r = conn_wait_closed(cl->conn, cl->timeout_ms);
    if (r == -ETIMEDOUT) {
        fprintf(stderr,
                "coarchctl: coarchd at %s accepted the shutdown but is still running "
                "after %g s (see --timeout)\n",
                cl->socket_path, cl->timeout_ms / 1e3);
        return CLIENT_EXIT_TIMEOUT;
    }
    if (r < 0)
        return client_conn_error(cl, r);
    wait_socket_gone(cl->socket_path, cl->timeout_ms < 0
                                          ? SOCKET_GONE_WAIT_MS
                                          : MIN(cl->timeout_ms, SOCKET_GONE_WAIT_MS));

    if (cl->json)
        fputs("{\"stopped\":true}\n", stdout);
    else
        printf("coarchd at %s stopped\n", cl->socket_path);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_shutdown = {
    .name = "shutdown",
    .summary = "Stop the daemon and wait until it has exited",
    .usage = "shutdown [--json]",
    .help = "The daemon finishes in-flight work, removes its socket and exits; coarchctl\n"
            "returns when it has (or fails with exit status 5 after --timeout).  Never starts\n"
            "a daemon: without one, exits with status 3.\n",
    .run = shutdown_run,
};
