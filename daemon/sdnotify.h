/*
 * sdnotify.h - everything coarchd says to (or takes from) systemd, in one small place over
 * libsystemd's sd-daemon API.
 *
 * Without systemd (no $NOTIFY_SOCKET, no $LISTEN_FDS, no $WATCHDOG_USEC) every call is a
 * cheap no-op, so coarchd runs the same in a terminal, under `coarchctl` (setsid) or as a
 * user unit (contrib/systemd/coarchd.service.in, Type=notify).
 *
 * Threading: loop thread (or main before the loop runs).  Nothing here can fail in a way the
 * daemon should act on: notification errors are logged at debug level and dropped.
 */
#ifndef COARCH_DAEMON_SDNOTIFY_H
#define COARCH_DAEMON_SDNOTIFY_H

#include <stdint.h>

#include "macro.h"

/*
 * Adopts a socket passed by systemd socket activation ($LISTEN_FDS/$LISTEN_PID, fd 3).
 * Returns 0 when none was passed, 1 with *ret_fd set to a listening AF_UNIX stream socket
 * (O_CLOEXEC; the caller owns it), -EINVAL when more than one fd was passed, -ENOTSOCK when
 * the fd is not a listening Unix stream socket.  Unsets the variables either way, so children
 * do not inherit them.
 */
int sdnotify_listen_fd(int *ret_fd);

/* READY=1 with a STATUS= line: the socket is listening and requests are served. */
void sdnotify_ready(const char *status);
/* STATUS=<status>: a human-readable line shown by `systemctl --user status coarchd`. */
void sdnotify_status(const char *fmt, ...) _printf_(1, 2);
/* RELOADING=1 (with MONOTONIC_USEC=, as Type=notify-reload wants); READY=1 follows it. */
void sdnotify_reloading(void);
void sdnotify_stopping(void);
void sdnotify_watchdog(void);

/* The watchdog interval systemd asked for ($WATCHDOG_USEC, for this pid), or 0 when none. */
uint64_t sdnotify_watchdog_usec(void);

#endif
