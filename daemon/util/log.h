/*
 * log.h - leveled logging to stderr, journald-friendly.
 *
 * When stderr is not a TTY each line starts with a syslog priority prefix ("<6>") that journald
 * understands, and carries no colour.  On a TTY lines get a short level tag instead.  The level
 * threshold comes from log_set_level() (coarchd reads $COARCH_LOG_LEVEL).  Library modules log
 * only at debug level (STYLE.md rule 15); main.c and event/ may log at any level.
 *
 * Thread-safe: each line is formatted into a local buffer and written with one write(2).
 */
#ifndef COARCH_UTIL_LOG_H
#define COARCH_UTIL_LOG_H

#include "macro.h"

enum log_level {
    LOG_LEVEL_ERR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_NOTICE = 5,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "err|error|warning|warn|notice|info|debug" or a digit 3-7; -EINVAL otherwise. */
int log_level_from_string(const char *s, enum log_level *ret_level);
/* Prefix every line with "name: " (e.g. "coarchd"). The string is borrowed; keep it alive. */
void log_set_ident(const char *ident);

/* Returns -abs(error) so callers can write `return log_error_errno(r, "...")`. */
int log_internal(enum log_level level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...)                                                          \
    ({                                                                                             \
        int _e = (error);                                                                          \
        (log_get_level() >= (level)) ? log_internal((level), _e, __VA_ARGS__) : -abs(_e);          \
    })
#define log_full(level, ...) ((void)log_full_errno((level), 0, __VA_ARGS__))

#define log_debug(...) log_full(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_LEVEL_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_LEVEL_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_LEVEL_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_LEVEL_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_LEVEL_ERR, (e), __VA_ARGS__)

#endif
