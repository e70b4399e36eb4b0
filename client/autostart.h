/*
 * autostart.h - start coarchd in the background when no daemon answers, so that `coarchctl
 * search ...` just works on a fresh login.
 *
 * The daemon binary is, in order: $COARCHD; `coarchd` beside the coarchctl executable (an
 * installed pair); `../daemon/coarchd` from it (the build tree); else `coarchd` on $PATH.
 *
 * It is started as our direct child in a new session (setsid), with stdin from /dev/null,
 * stdout and stderr appended to <data dir>/coarchd.log, the working directory "/" and default
 * signal dispositions.  Being our child lets us notice at once when it dies during startup
 * (waitpid WNOHANG) instead of waiting out the whole timeout; once coarchctl exits it is
 * re-parented to init like any daemon.  A flock(2) on <data dir>/coarchd.autostart.lock
 * serialises concurrent autostarts: the second client finds the first one's daemon instead
 * of racing a second daemon onto the same socket.
 *
 * Unlike the rest of the client modules, this one prints to stderr itself: a failed start is
 * explained with the daemon's own last log lines, which only it knows where to find.
 */
#ifndef COARCH_CLIENT_AUTOSTART_H
#define COARCH_CLIENT_AUTOSTART_H

#include <stdbool.h>

#include "conn.h"

#define AUTOSTART_WAIT_MS 10000

struct autostart_options {
    const char *socket_path; /* where to connect; absolute */
    bool pass_socket;        /* give the daemon --socket socket_path (the user chose it) */
    int wait_ms;             /* how long the daemon may take to answer a ping */
    int timeout_ms;          /* inactivity timeout set on the returned connection */
    bool quiet;              /* do not announce a successful start on stderr */
};

/* The daemon binary to run; *ret_path is malloc'd (caller frees), "coarchd" when only a $PATH
 * lookup is left.  -ENOMEM only. */
int autostart_find_daemon(char **ret_path);

/*
 * Starts coarchd (unless another autostart got there first) and waits until it answers a ping
 * on opt->socket_path.  Returns 0 and a connection (caller frees with conn_free()), or a
 * negative errno after printing why to stderr: -ENOENT when the binary cannot be run,
 * -ECHILD when it exited before answering, -ETIMEDOUT when it did not answer in time.
 */
int autostart_daemon(const struct autostart_options *opt, struct conn **ret_conn);

#endif
