/*
 * log.c - see log.h.  One write(2) per line keeps lines from different threads whole.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static enum log_level max_level = LOG_LEVEL_INFO;
static const char *log_ident;
static int stderr_is_tty = -1;

void log_set_level(enum log_level level)
{
    max_level = level;
}

enum log_level log_get_level(void)
{
    return max_level;
}

void log_set_ident(const char *ident)
{
    log_ident = ident;
}

int log_level_from_string(const char *s, enum log_level *ret_level)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {
        {"err", LOG_LEVEL_ERR},      {"error", LOG_LEVEL_ERR},     {"warning", LOG_LEVEL_WARNING},
        {"warn", LOG_LEVEL_WARNING}, {"notice", LOG_LEVEL_NOTICE}, {"info", LOG_LEVEL_INFO},
        {"debug", LOG_LEVEL_DEBUG},
    };

    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < ELEMENTSOF(names); i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *ret_level = names[i].level;
            return 0;
        }
    if (s[0] >= '3' && s[0] <= '7' && s[1] == '\0') {
        *ret_level = (enum log_level)(s[0] - '0');
        return 0;
    }
    return -EINVAL;
}

static const char *level_tag(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERR:
        return "error";
    case LOG_LEVEL_WARNING:
        return "warning";
    case LOG_LEVEL_NOTICE:
        return "notice";
    case LOG_LEVEL_INFO:
        return "info";
    case LOG_LEVEL_DEBUG:
        return "debug";
    }
    return "?";
}

int log_internal(enum log_level level, int error, const char *fmt, ...)
{
    char buf[4096];
    size_t n = 0;
    int saved_errno = errno;
    va_list ap;
    int k;

    if (stderr_is_tty < 0)
        stderr_is_tty = isatty(STDERR_FILENO);

    if (stderr_is_tty)
        k = snprintf(buf, sizeof(buf), "%s%s%s: ", log_ident ? log_ident : "", log_ident ? " " : "",
                     level_tag(level));
    else
        k = snprintf(buf, sizeof(buf), "<%d>%s%s", (int)level, log_ident ? log_ident : "",
                     log_ident ? ": " : "");
    if (k > 0)
        n = MIN((size_t)k, sizeof(buf) - 1);

    va_start(ap, fmt);
    errno = abs(error);
    k = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
    if (k > 0)
        n = MIN(n + (size_t)k, sizeof(buf) - 2);
    buf[n++] = '\n';

    /* Best effort: a failing stderr must never take the daemon down. */
    ssize_t w _unused_ = write(STDERR_FILENO, buf, n);

    errno = saved_errno;
    return -abs(error);
}
