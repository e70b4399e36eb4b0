/*
 * config.c - see config.h.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "macro.h"
#include "paths.h"

/* A config file is a handful of lines; anything larger is a mistake (a wrong path). */
#define CONFIG_FILE_MAX_BYTES (64u * 1024)

enum config_kind {
    CONFIG_KIND_LEVEL,
    CONFIG_KIND_U32,
    CONFIG_KIND_BOOL,
};

struct config_key {
    const char *name;
    enum config_kind kind;
    size_t offset;
    uint32_t min, max;
};

#define U32_KEY(n, field, lo, hi)                                                                  \
    {                                                                                              \
        n, CONFIG_KIND_U32, offsetof(struct daemon_config, field), lo, hi                          \
    }

static const struct config_key config_keys[] = {
    {"COARCH_LOG_LEVEL", CONFIG_KIND_LEVEL, offsetof(struct daemon_config, log_level), 0, 0},
    U32_KEY("COARCH_MAX_CONNECTIONS", max_connections, 1, 65536),
    U32_KEY("COARCH_MAX_FRAME_MB", max_frame_mb, 1, 1024),
    U32_KEY("COARCH_MAX_PENDING", max_pending, 1, 65536),
    U32_KEY("COARCH_IDLE_TIMEOUT_S", idle_timeout_s, 0, 1000000),
    U32_KEY("COARCH_MAX_OUTPUT_MB", max_output_mb, 1, 4096),
    {"COARCH_DEBUG_METHODS", CONFIG_KIND_BOOL, offsetof(struct daemon_config, debug_methods), 0, 0},
};

void daemon_config_defaults(struct daemon_config *ret_config)
{
    *ret_config = (struct daemon_config){
        .log_level = LOG_LEVEL_INFO,
        .max_connections = 128,
        .max_frame_mb = 16,
        .max_pending = 64,
        .idle_timeout_s = 600,
        .max_output_mb = 64,
        .debug_methods = false,
    };
}

const char *daemon_log_level_to_string(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERR:
        return "err";
    case LOG_LEVEL_WARNING:
        return "warning";
    case LOG_LEVEL_NOTICE:
        return "notice";
    case LOG_LEVEL_INFO:
        return "info";
    case LOG_LEVEL_DEBUG:
        return "debug";
    }
    return "unknown";
}

static const struct config_key *config_key_find(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* Strict decimal: digits only (no sign, no spaces, no 0x), and no overflow past `max`. */
static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret)
{
    uint64_t v = 0;

    if (!s[0])
        return -EINVAL;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > max)
            return -ERANGE;
    }
    if (v < min)
        return -ERANGE;
    *ret = (uint32_t)v;
    return 0;
}

static int parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < ELEMENTSOF(yes); i++)
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
    for (size_t i = 0; i < ELEMENTSOF(no); i++)
        if (strcasecmp(s, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    return -EINVAL;
}

/* Sets one key from one source; `source` names where the value came from, for the error. */
static int config_set(struct daemon_config *c, const struct config_key *k, const char *value,
                      const char *source)
{
    char *field = (char *)c + k->offset;
    int r;

    switch (k->kind) {
    case CONFIG_KIND_LEVEL: {
        enum log_level level;

        r = log_level_from_string(value, &level);
        if (r < 0)
            return log_error_errno(r,
                                   "%s: invalid %s=\"%s\": expected err, warning, notice, info "
                                   "or debug (or 3-7)",
                                   source, k->name, value);
        memcpy(field, &level, sizeof(level));
        return 0;
    }
    case CONFIG_KIND_U32: {
        uint32_t v;

        r = parse_u32(value, k->min, k->max, &v);
        if (r < 0)
            return log_error_errno(
                -EINVAL, "%s: invalid %s=\"%s\": expected an integer in [%" PRIu32 ", %" PRIu32 "]",
                source, k->name, value, k->min, k->max);
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case CONFIG_KIND_BOOL: {
        bool b;

        r = parse_bool(value, &b);
        if (r < 0)
            return log_error_errno(r, "%s: invalid %s=\"%s\": expected 1/0, true/false, yes/no",
                                   source, k->name, value);
        memcpy(field, &b, sizeof(b));
        return 0;
    }
    }
    return -EINVAL;
}

static char *strip(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t')
        s++;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

/* Applies one `KEY=VALUE` line; `where` is "FILE:LINE" for messages. */
static int config_apply_line(struct daemon_config *c, char *line, const char *where)
{
    const struct config_key *k;
    char *eq, *key, *value;
    size_t n;

    line = strip(line);
    if (!line[0] || line[0] == '#')
        return 0;
    eq = strchr(line, '=');
    if (!eq)
        return log_error_errno(-EINVAL, "%s: expected KEY=VALUE, got \"%s\"", where, line);
    *eq = '\0';
    key = strip(line);
    value = strip(eq + 1);
    n = strlen(value);
    if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
        value[n - 1] = '\0';
        value++;
    }
    k = config_key_find(key);
    if (!k) {
        log_warning("%s: ignoring unknown key %s", where, key);
        return 0;
    }
    return config_set(c, k, value, where);
}

static int config_read_file(struct daemon_config *c, const char *path)
{
    char where[PATH_MAX + 32];
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    struct stat st;
    ssize_t n;
    FILE *f;
    int r = 0;

    f = fopen(path, "re");
    if (!f)
        return -errno;
    if (fstat(fileno(f), &st) < 0) {
        r = -errno;
        goto out_close;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)CONFIG_FILE_MAX_BYTES) {
        r = log_error_errno(-EINVAL, "config file %s: not a regular file of at most %u bytes", path,
                            CONFIG_FILE_MAX_BYTES);
        goto out_close;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            r = log_error_errno(-EINVAL, "%s:%u: line holds a NUL byte", path, lineno);
            break;
        }
        snprintf(where, sizeof(where), "%s:%u", path, lineno);
        r = config_apply_line(c, line, where);
        if (r < 0)
            break;
    }
    if (r == 0 && ferror(f))
        r = log_error_errno(-EIO, "config file %s: read error", path);
    free(line);
out_close:
    fclose(f);
    return r;
}

static int config_read_env(struct daemon_config *c)
{
    for (size_t i = 0; i < ELEMENTSOF(config_keys); i++) {
        const char *v = getenv(config_keys[i].name);
        int r;

        /* An empty variable means "not set", as with COARCH_SOCKET and the XDG variables. */
        if (!v || !v[0])
            continue;
        r = config_set(c, &config_keys[i], v, "environment");
        if (r < 0)
            return r;
    }
    return 0;
}

int daemon_config_load(const char *data_dir, const struct daemon_config_overrides *overrides,
                       struct daemon_config *ret_config, char **ret_path)
{
    _cleanup_free_ char *path = NULL;
    struct daemon_config c;
    const char *env = getenv("COARCH_CONFIG");
    bool required = env && env[0];
    int r;

    daemon_config_defaults(&c);

    path = required ? strdup(env) : path_join(data_dir, "coarchd.conf");
    if (!path)
        return -ENOMEM;
    r = config_read_file(&c, path);
    if (r == -ENOENT && !required) {
        free(path);
        path = NULL;
    } else if (r < 0) {
        /* Value errors were logged where they were found; say what broke for the rest. */
        if (r != -EINVAL)
            log_error_errno(r, "cannot read config file %s: %m", path);
        return r;
    }

    r = config_read_env(&c);
    if (r < 0)
        return r;

    if (overrides && overrides->has_log_level)
        c.log_level = overrides->log_level;

    if (c.max_output_mb < c.max_frame_mb)
        return log_error_errno(-EINVAL,
                               "COARCH_MAX_OUTPUT_MB (%" PRIu32
                               ") must be at least COARCH_MAX_FRAME_MB (%" PRIu32
                               "): one reply may be a whole frame",
                               c.max_output_mb, c.max_frame_mb);

    *ret_config = c;
    if (ret_path)
        *ret_path = TAKE_PTR(path);
    return 0;
}
