/*
 * sdnotify.c - see sdnotify.h.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

int sdnotify_listen_fd(int *ret_fd)
{
    int n, r;

    /* unset_environment=1: a child we might spawn must not believe the fds are its own. */
    n = sd_listen_fds(1);
    if (n < 0)
        return n;
    if (n == 0)
        return 0;
    if (n > 1)
        return -EINVAL;
    r = sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0);
    if (r < 0)
        return r;
    if (r == 0)
        return -ENOTSOCK;
    *ret_fd = SD_LISTEN_FDS_START;
    return 1;
}

static void notify(const char *state)
{
    int r = sd_notify(0, state);

    if (r < 0)
        log_debug_errno(r, "sd_notify(\"%s\") failed: %m", state);
}

void sdnotify_ready(const char *status)
{
    char buf[1024];

    snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%s", status);
    notify(buf);
}

void sdnotify_status(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int n;

    n = snprintf(buf, sizeof(buf), "STATUS=");
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    notify(buf);
}

void sdnotify_reloading(void)
{
    struct timespec ts;
    char buf[128];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    notify(buf);
}

void sdnotify_stopping(void)
{
    notify("STOPPING=1");
}

void sdnotify_watchdog(void)
{
    notify("WATCHDOG=1");
}

uint64_t sdnotify_watchdog_usec(void)
{
    uint64_t usec = 0;

    /* unset_environment=0: the variables stay for a re-exec; they name our pid anyway. */
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
