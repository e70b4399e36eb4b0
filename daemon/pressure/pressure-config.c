/* pressure-config.c - see pressure-config.h. */
#include "pressure-config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

const char *pressure_config_getenv(const char *name, void *userdata)
{
    (void)userdata;
    return getenv(name);
}

void pressure_config_init(struct pressure_config *cfg)
{
    *cfg = (struct pressure_config){
        .memory_limit_bytes = 0,
        .interval_ms = PRESSURE_INTERVAL_MS_DEFAULT,
        .adaptive_batching = true,
        .batch_size = PRESSURE_BATCH_DEFAULT,
        .checkpoint_frequency = 0,
    };
}

static int config_error(char *errbuf, size_t errbuf_size, const char *name, const char *value,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int config_error(char *errbuf, size_t errbuf_size, const char *name, const char *value,
                        const char *fmt, ...)
{
    va_list ap;
    int n;

    if (errbuf_size == 0)
        return -EINVAL;
    n = snprintf(errbuf, errbuf_size, "%s=\"%s\": ", name, value);
    if (n >= 0 && (size_t)n < errbuf_size) {
        va_start(ap, fmt);
        vsnprintf(errbuf + n, errbuf_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/*
 * Strict decimal parse: digits only, so "64k", " 64", "-1", "+5" and "0x40" are all rejected
 * instead of being read as something the user did not mean (strtoul would accept most of them).
 */
static int parse_decimal(const char *s, uint64_t *ret)
{
    uint64_t v = 0;

    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
            return -ERANGE;
    }
    *ret = v;
    return 0;
}

/* Parses `name` into [lo, hi]; returns 1 when set, 0 when unset or empty, -EINVAL when bad. */
static int config_get_uint(pressure_getenv_fn getenv_fn, void *userdata, const char *name,
                           uint64_t lo, uint64_t hi, uint64_t *ret, char *errbuf,
                           size_t errbuf_size)
{
    const char *s = getenv_fn(name, userdata);
    uint64_t v;

    if (!s || !*s)
        return 0;
    if (parse_decimal(s, &v) < 0 || v < lo || v > hi)
        return config_error(errbuf, errbuf_size, name, s, "expected an integer in [%llu, %llu]",
                            (unsigned long long)lo, (unsigned long long)hi);
    *ret = v;
    return 1;
}

static int config_get_bool(pressure_getenv_fn getenv_fn, void *userdata, const char *name,
                           bool *ret, char *errbuf, size_t errbuf_size)
{
    static const char *const yes[] = {"1", "true"};
    static const char *const no[] = {"0", "false"};
    const char *s = getenv_fn(name, userdata);

    if (!s || !*s)
        return 0;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = true;
            return 1;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *ret = false;
            return 1;
        }
    }
    return config_error(errbuf, errbuf_size, name, s, "expected 1, true, 0 or false");
}

int pressure_config_parse(pressure_getenv_fn getenv_fn, void *userdata,
                          struct pressure_config *ret_cfg, char *errbuf, size_t errbuf_size)
{
    struct pressure_config cfg;
    uint64_t v = 0;
    int r;

    pressure_config_init(&cfg);
    if (errbuf_size > 0)
        errbuf[0] = '\0';

    r = config_get_uint(getenv_fn, userdata, "COARCH_MEMORY_LIMIT_MB", 1,
                        PRESSURE_MEMORY_LIMIT_MB_MAX, &v, errbuf, errbuf_size);
    if (r < 0)
        return r;
    if (r > 0)
        cfg.memory_limit_bytes = v << 20;

    r = config_get_uint(getenv_fn, userdata, "COARCH_PRESSURE_INTERVAL_MS",
                        PRESSURE_INTERVAL_MS_MIN, PRESSURE_INTERVAL_MS_MAX, &v, errbuf,
                        errbuf_size);
    if (r < 0)
        return r;
    if (r > 0)
        cfg.interval_ms = (unsigned)v;

    r = config_get_bool(getenv_fn, userdata, "COARCH_ADAPTIVE_BATCHING", &cfg.adaptive_batching,
                        errbuf, errbuf_size);
    if (r < 0)
        return r;

    r = config_get_uint(getenv_fn, userdata, "COARCH_BATCH_SIZE", PRESSURE_BATCH_MIN,
                        PRESSURE_BATCH_MAX, &v, errbuf, errbuf_size);
    if (r < 0)
        return r;
    if (r > 0)
        cfg.batch_size = (unsigned)v;

    r = config_get_uint(getenv_fn, userdata, "COARCH_CHECKPOINT_FREQUENCY", 1,
                        PRESSURE_CHECKPOINT_FREQUENCY_MAX, &v, errbuf, errbuf_size);
    if (r < 0)
        return r;
    if (r > 0)
        cfg.checkpoint_frequency = (unsigned)v;

    *ret_cfg = cfg;
    return 0;
}

unsigned pressure_checkpoint_frequency(const struct pressure_config *cfg, uint64_t job_chunks)
{
    if (cfg && cfg->checkpoint_frequency > 0)
        return cfg->checkpoint_frequency;
    return job_chunks > PRESSURE_CHECKPOINT_LARGE_JOB_CHUNKS
               ? PRESSURE_CHECKPOINT_FREQUENCY_LARGE_JOB
               : PRESSURE_CHECKPOINT_FREQUENCY_DEFAULT;
}
