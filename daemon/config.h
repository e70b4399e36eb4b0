/*
 * config.h - coarchd's runtime settings: what they are, where they come from, how they are
 * validated.
 *
 * Sources, later ones winning:
 *   1. built-in defaults;
 *   2. a config file: $COARCH_CONFIG when set (it must then exist), else
 *      <data dir>/coarchd.conf when it exists.  One `KEY=VALUE` per line, keys named like the
 *      environment variables below, `#` starts a comment line, blank lines are ignored, spaces
 *      around key and value are trimmed and a value may be wrapped in double quotes;
 *   3. the environment (COARCH_LOG_LEVEL, ...);
 *   4. command-line overrides (--log-level).
 *
 * SIGHUP re-reads all of them (the environment of a running process cannot change, so in
 * practice the file is what a reload picks up).  A value that fails validation makes the
 * whole load fail, naming the key, the source and the accepted range: at start-up coarchd
 * then refuses to start, on reload it keeps the configuration it has.  Unknown keys in the
 * file get a warning and are ignored, so a newer file works with an older daemon.
 *
 *   key                      default  range         applies
 *   COARCH_LOG_LEVEL         info     err..debug    at once
 *   COARCH_MAX_CONNECTIONS   128      1..65536      to new connections
 *   COARCH_MAX_FRAME_MB      16       1..1024       to connections opened after a reload
 *   COARCH_MAX_PENDING       64       1..65536      at once (requests in flight per connection)
 *   COARCH_IDLE_TIMEOUT_S    600      0..1000000    at once; 0 = never close idle connections
 *   COARCH_MAX_OUTPUT_MB     64       1..4096       at once; >= COARCH_MAX_FRAME_MB
 *   COARCH_DEBUG_METHODS     0        0/1/true/...  at once; enables debug.* test methods
 *
 * Threading: plain data, no globals; loading reads files and the environment only.
 */
#ifndef COARCH_DAEMON_CONFIG_H
#define COARCH_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

struct daemon_config {
    enum log_level log_level;
    uint32_t max_connections;
    uint32_t max_frame_mb;
    uint32_t max_pending;
    uint32_t idle_timeout_s;
    uint32_t max_output_mb;
    bool debug_methods;
};

/* What the command line fixes; it outranks every other source, on reload too. */
struct daemon_config_overrides {
    bool has_log_level;
    enum log_level log_level;
};

void daemon_config_defaults(struct daemon_config *ret_config);

/*
 * Loads the configuration for the data dir `data_dir` (where the default config file lives).
 * Returns 0 and fills *ret_config; or -EINVAL for a bad value, -ENOENT when $COARCH_CONFIG
 * names a missing file, another negative errno when the file cannot be read.  Every failure
 * is logged at error level with the key and its source, so the caller only adds what it does
 * about it.  *ret_path (may be NULL) is set on success to the file that was read, or NULL when
 * none was (caller frees).
 */
int daemon_config_load(const char *data_dir, const struct daemon_config_overrides *overrides,
                       struct daemon_config *ret_config, char **ret_path);

/* "err", "warning", "notice", "info" or "debug". */
const char *daemon_log_level_to_string(enum log_level level);

#endif
