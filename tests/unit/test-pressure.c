/*
 * test-pressure.c - the memory governor: config parsing, readings from fake and real /proc and
 * cgroup trees, levels at every boundary, PSI raises, batch adaptation, OOM retry, and a real
 * OOM kill under a 100 MB cgroup (via harness/cgroup.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "governor.h"
#include "pressure-config.h"
#include "pressure.h"
#include "test.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

/* ---- config ---------------------------------------------------------------------------- */

/* A fake environment: NULL-terminated name/value pairs. */
static const char *fake_getenv(const char *name, void *userdata)
{
    const char *const *kv = userdata;

    for (; kv && kv[0]; kv += 2)
        if (strcmp(kv[0], name) == 0)
            return kv[1];
    return NULL;
}

TEST(config_defaults)
{
    struct pressure_config cfg;
    char err[256];

    ASSERT_OK(pressure_config_parse(fake_getenv, NULL, &cfg, err, sizeof(err)));
    ASSERT_EQ(cfg.memory_limit_bytes, 0);
    ASSERT_EQ(cfg.interval_ms, 200);
    ASSERT_TRUE(cfg.adaptive_batching);
    ASSERT_EQ(cfg.batch_size, 64);
    ASSERT_EQ(cfg.checkpoint_frequency, 0);
    ASSERT_STREQ(err, "");
}

TEST(config_good_values)
{
    const char *env[] = {"COARCH_MEMORY_LIMIT_MB",
                         "1536",
                         "COARCH_PRESSURE_INTERVAL_MS",
                         "50",
                         "COARCH_ADAPTIVE_BATCHING",
                         "false",
                         "COARCH_BATCH_SIZE",
                         "8",
                         "COARCH_CHECKPOINT_FREQUENCY",
                         "12",
                         NULL};
    struct pressure_config cfg;
    char err[256];

    ASSERT_OK(pressure_config_parse(fake_getenv, env, &cfg, err, sizeof(err)));
    ASSERT_EQ(cfg.memory_limit_bytes, 1536 * MiB);
    ASSERT_EQ(cfg.interval_ms, 50);
    ASSERT_FALSE(cfg.adaptive_batching);
    ASSERT_EQ(cfg.batch_size, 8);
    ASSERT_EQ(cfg.checkpoint_frequency, 12);
}

TEST(config_adaptive_spellings)
{
    static const struct {
        const char *value;
        bool expect;
    } cases[] = {{"0", false},   {"false", false}, {"FALSE", false}, {"1", true},
                 {"true", true}, {"True", true},   {"", true}};
    char err[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {"COARCH_ADAPTIVE_BATCHING", cases[i].value, NULL};
        struct pressure_config cfg;

        ASSERT_OK(pressure_config_parse(fake_getenv, env, &cfg, err, sizeof(err)));
        ASSERT_EQ(cfg.adaptive_batching, cases[i].expect);
    }
}

TEST(config_empty_is_unset)
{
    const char *env[] = {"COARCH_BATCH_SIZE", "", "COARCH_MEMORY_LIMIT_MB", "", NULL};
    struct pressure_config cfg;
    char err[256];

    ASSERT_OK(pressure_config_parse(fake_getenv, env, &cfg, err, sizeof(err)));
    ASSERT_EQ(cfg.batch_size, 64);
    ASSERT_EQ(cfg.memory_limit_bytes, 0);
}

TEST(config_bad_values)
{
    static const char *const cases[][2] = {
        {"COARCH_MEMORY_LIMIT_MB", "0"},
        {"COARCH_MEMORY_LIMIT_MB", "abc"},
        {"COARCH_MEMORY_LIMIT_MB", "-5"},
        {"COARCH_MEMORY_LIMIT_MB", "+5"},
        {"COARCH_MEMORY_LIMIT_MB", "512M"},
        {"COARCH_MEMORY_LIMIT_MB", " 512"},
        {"COARCH_MEMORY_LIMIT_MB", "99999999999999999999999"},
        {"COARCH_MEMORY_LIMIT_MB", "67108865"},
        {"COARCH_PRESSURE_INTERVAL_MS", "9"},
        {"COARCH_PRESSURE_INTERVAL_MS", "60001"},
        {"COARCH_PRESSURE_INTERVAL_MS", "0x10"},
        {"COARCH_ADAPTIVE_BATCHING", "yes"},
        {"COARCH_ADAPTIVE_BATCHING", "2"},
        {"COARCH_ADAPTIVE_BATCHING", "true "},
        {"COARCH_BATCH_SIZE", "7"},
        {"COARCH_BATCH_SIZE", "257"},
        {"COARCH_BATCH_SIZE", "64.5"},
        {"COARCH_CHECKPOINT_FREQUENCY", "0"},
        {"COARCH_CHECKPOINT_FREQUENCY", "1000001"},
        {"COARCH_CHECKPOINT_FREQUENCY", "five"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i][0], cases[i][1], NULL};
        struct pressure_config cfg, before;
        char err[256], quoted[128];

        pressure_config_init(&cfg);
        cfg.batch_size = 99; /* sentinel: must stay untouched on error */
        before = cfg;
        ASSERT_EQ(pressure_config_parse(fake_getenv, env, &cfg, err, sizeof(err)), -EINVAL);
        ASSERT_EQ(cfg.batch_size, before.batch_size);
        snprintf(quoted, sizeof(quoted), "%s=\"%s\"", cases[i][0], cases[i][1]);
        if (!strstr(err, quoted) || !strstr(err, "expected"))
            test_fail(__FILE__, __LINE__, "message for %s lacks name/value: %s", quoted, err);
    }
    /* Without a buffer it still fails. */
    {
        const char *env[] = {"COARCH_BATCH_SIZE", "x", NULL};
        struct pressure_config cfg;

        ASSERT_EQ(pressure_config_parse(fake_getenv, env, &cfg, NULL, 0), -EINVAL);
    }
}

TEST(config_process_environment)
{
    struct pressure_config cfg;
    char err[256];

    ASSERT_OK(setenv("COARCH_BATCH_SIZE", "128", 1));
    ASSERT_OK(pressure_config_parse(pressure_config_getenv, NULL, &cfg, err, sizeof(err)));
    unsetenv("COARCH_BATCH_SIZE");
    ASSERT_EQ(cfg.batch_size, 128);
}

TEST(checkpoint_frequency_policy)
{
    struct pressure_config cfg;

    pressure_config_init(&cfg);
    ASSERT_EQ(pressure_checkpoint_frequency(&cfg, 0), 5);
    ASSERT_EQ(pressure_checkpoint_frequency(&cfg, 10000), 5);
    ASSERT_EQ(pressure_checkpoint_frequency(&cfg, 10001), 3);
    ASSERT_EQ(pressure_checkpoint_frequency(NULL, 20000), 3);
    cfg.checkpoint_frequency = 7;
    ASSERT_EQ(pressure_checkpoint_frequency(&cfg, 10), 7);
    ASSERT_EQ(pressure_checkpoint_frequency(&cfg, 1000000), 7);
}

/* ---- levels ---------------------------------------------------------------------------- */

static struct governor *gov_new(bool adaptive)
{
    struct governor_params p;
    struct governor *g = NULL;

    governor_params_init(&p, NULL);
    p.adaptive = adaptive;
    if (governor_new(&p, &g) < 0)
        test_fail(__FILE__, __LINE__, "governor_new failed");
    return g;
}

/* A reading at usage/limit with optional PSI, at time t (µs). */
static struct pressure_reading reading(uint64_t usage, uint64_t limit, uint64_t t)
{
    return (struct pressure_reading){
        .timestamp_us = t,
        .usage = usage,
        .limit = limit,
        .physical = limit,
        .rss = usage,
        .vms = usage * 2,
    };
}

static struct pressure_reading reading_psi(uint64_t usage, uint64_t limit, uint64_t t, double avg10,
                                           uint64_t total_us)
{
    struct pressure_reading r = reading(usage, limit, t);

    r.psi = (struct pressure_psi){.valid = true, .some_avg10 = avg10, .some_total_us = total_us};
    return r;
}

TEST(level_boundaries)
{
    static const struct {
        uint64_t usage, limit;
        enum pressure_level level;
    } cases[] = {
        {0, 10000, PRESSURE_LEVEL_LOW},
        {5999, 10000, PRESSURE_LEVEL_LOW}, /* 59.99% */
        {6000, 10000, PRESSURE_LEVEL_MODERATE},
        {7499, 10000, PRESSURE_LEVEL_MODERATE}, /* 74.99% */
        {7500, 10000, PRESSURE_LEVEL_HIGH},
        {8999, 10000, PRESSURE_LEVEL_HIGH}, /* 89.99% */
        {9000, 10000, PRESSURE_LEVEL_CRITICAL},
        {10000, 10000, PRESSURE_LEVEL_CRITICAL},
        {30000, 10000, PRESSURE_LEVEL_CRITICAL},
        /* Large values: exact, no rounding at the boundary and no overflow. */
        {60 * (UINT64_C(1) << 50) - 1, 100 * (UINT64_C(1) << 50), PRESSURE_LEVEL_LOW},
        {60 * (UINT64_C(1) << 50), 100 * (UINT64_C(1) << 50), PRESSURE_LEVEL_MODERATE},
        {UINT64_MAX / 10 * 9 - 1, UINT64_MAX / 10 * 10, PRESSURE_LEVEL_HIGH},
        {UINT64_MAX, UINT64_MAX, PRESSURE_LEVEL_CRITICAL},
        {1, 0, PRESSURE_LEVEL_CRITICAL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct governor *g = gov_new(true);
        struct pressure_reading r = reading(cases[i].usage, cases[i].limit, 1000);
        struct pressure_snapshot s;

        ASSERT_EQ(pressure_level_from_usage(cases[i].usage, cases[i].limit), cases[i].level);
        /* The same through the governor, with injected readings. */
        governor_feed(g, &r);
        ASSERT_EQ(governor_level(g), cases[i].level);
        governor_snapshot(g, &s);
        ASSERT_STREQ(s.level_name, pressure_level_to_string(cases[i].level));
        governor_free(g);
    }
    ASSERT_STREQ(pressure_level_to_string(PRESSURE_LEVEL_LOW), "low");
    ASSERT_STREQ(pressure_level_to_string(PRESSURE_LEVEL_MODERATE), "moderate");
    ASSERT_STREQ(pressure_level_to_string(PRESSURE_LEVEL_HIGH), "high");
    ASSERT_STREQ(pressure_level_to_string(PRESSURE_LEVEL_CRITICAL), "critical");
}

TEST(level_transitions_and_actions)
{
    struct governor *g = gov_new(true);
    struct pressure_reading r;
    unsigned a;

    r = reading(5000, 10000, 1000);
    ASSERT_EQ(governor_feed(g, &r), 0);
    r = reading(6500, 10000, 2000);
    ASSERT_EQ(governor_feed(g, &r), GOVERNOR_ACTION_LEVEL_RAISED);
    r = reading(8000, 10000, 3000);
    ASSERT_EQ(governor_feed(g, &r), GOVERNOR_ACTION_LEVEL_RAISED | GOVERNOR_ACTION_CHECKPOINT);
    /* Staying at HIGH sends nothing again. */
    r = reading(8100, 10000, 4000);
    ASSERT_EQ(governor_feed(g, &r), 0);
    r = reading(9500, 10000, 5000);
    a = governor_feed(g, &r);
    ASSERT_EQ(a, GOVERNOR_ACTION_LEVEL_RAISED | GOVERNOR_ACTION_CHECKPOINT |
                     GOVERNOR_ACTION_PAUSE_FEED | GOVERNOR_ACTION_FLUSH |
                     GOVERNOR_ACTION_SHED_CACHES | GOVERNOR_ACTION_MALLOC_TRIM);
    ASSERT_TRUE(governor_feed_paused(g));
    /* Still CRITICAL: no repeat within the trim interval, SHED+TRIM after it. */
    r = reading(9500, 10000, 500000);
    ASSERT_EQ(governor_feed(g, &r), 0);
    r = reading(9500, 10000, 1005000);
    ASSERT_EQ(governor_feed(g, &r), GOVERNOR_ACTION_SHED_CACHES | GOVERNOR_ACTION_MALLOC_TRIM);
    ASSERT_TRUE(governor_feed_paused(g));
    /* Dropping below CRITICAL resumes feeding; a fall is not "raised". */
    r = reading(7000, 10000, 1100000);
    ASSERT_EQ(governor_feed(g, &r), GOVERNOR_ACTION_RESUME_FEED);
    ASSERT_FALSE(governor_feed_paused(g));
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_MODERATE);
    /* Straight from LOW to CRITICAL. */
    r = reading(0, 10000, 1200000);
    governor_feed(g, &r);
    r = reading(9999, 10000, 1300000);
    ASSERT_TRUE(governor_feed(g, &r) & GOVERNOR_ACTION_PAUSE_FEED);
    governor_free(g);
}

/* ---- PSI ------------------------------------------------------------------------------- */

TEST(psi_parse)
{
    struct pressure_psi psi;

    ASSERT_OK(pressure_psi_parse("some avg10=12.50 avg60=3.00 avg300=0.10 total=123456\n"
                                 "full avg10=4.25 avg60=1.00 avg300=0.00 total=999\n",
                                 &psi));
    ASSERT_TRUE(psi.valid);
    ASSERT_NEAR(psi.some_avg10, 12.5, 1e-9);
    ASSERT_NEAR(psi.some_avg60, 3.0, 1e-9);
    ASSERT_NEAR(psi.full_avg10, 4.25, 1e-9);
    ASSERT_EQ(psi.some_total_us, 123456);
    /* "full" is optional; "some" is not. */
    ASSERT_OK(pressure_psi_parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", &psi));
    ASSERT_EQ(pressure_psi_parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", &psi),
              -EBADMSG);
    ASSERT_EQ(pressure_psi_parse("", &psi), -EBADMSG);
    ASSERT_EQ(pressure_psi_parse("some avg10=150.00 avg60=0.00 avg300=0.00 total=0\n", &psi),
              -EBADMSG);
}

TEST(psi_avg10_raises_one_level)
{
    static const struct {
        uint64_t usage;
        double avg10;
        enum pressure_level level;
    } cases[] = {
        {1000, 9.99, PRESSURE_LEVEL_LOW},      {1000, 10.0, PRESSURE_LEVEL_MODERATE},
        {6000, 10.0, PRESSURE_LEVEL_HIGH},     {7500, 50.0, PRESSURE_LEVEL_CRITICAL},
        {9000, 90.0, PRESSURE_LEVEL_CRITICAL}, {7499, 9.99, PRESSURE_LEVEL_MODERATE},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct governor *g = gov_new(true);
        struct pressure_reading r = reading_psi(cases[i].usage, 10000, 1000, cases[i].avg10, 0);
        struct pressure_snapshot s;

        governor_feed(g, &r);
        ASSERT_EQ(governor_level(g), cases[i].level);
        governor_snapshot(g, &s);
        ASSERT_EQ(s.memory_level, pressure_level_from_usage(cases[i].usage, 10000));
        ASSERT_TRUE(s.psi_valid);
        ASSERT_NEAR(s.psi_some_avg10, cases[i].avg10, 1e-9);
        governor_free(g);
    }
}

TEST(psi_trigger_holds_high_until_calm)
{
    struct governor *g = gov_new(true);
    struct pressure_reading r;
    const uint64_t s = 1000000; /* 1 s in µs */
    unsigned a;

    r = reading_psi(1000, 10000, 10 * s, 0.0, 0);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_LOW);

    a = governor_psi_event(g, 10 * s + 50000);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_HIGH);
    ASSERT_EQ(a & (GOVERNOR_ACTION_LEVEL_RAISED | GOVERNOR_ACTION_CHECKPOINT),
              GOVERNOR_ACTION_LEVEL_RAISED | GOVERNOR_ACTION_CHECKPOINT);

    /* Calm samples inside the 2 s hold keep HIGH. */
    r = reading_psi(1000, 10000, 10 * s + 200000, 1.0, 0);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_HIGH);
    r = reading_psi(1000, 10000, 11 * s + 900000, 1.0, 0);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_HIGH);

    /* After the hold, a sample with 10% stall since the previous one is not calm... */
    r = reading_psi(1000, 10000, 12 * s + 900000, 1.0, 100000);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_HIGH);
    /* ...one with 4.9% is, and the level falls back to what memory says. */
    r = reading_psi(1000, 10000, 13 * s + 900000, 1.0, 100000 + 49000);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_LOW);

    /* An event at CRITICAL does not lower anything. */
    r = reading_psi(9500, 10000, 20 * s, 0.0, 200000);
    governor_feed(g, &r);
    governor_psi_event(g, 20 * s + 1);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_CRITICAL);

    /* Without PSI data the hold time alone ends it. */
    governor_free(g);
    g = gov_new(true);
    governor_psi_event(g, 5 * s);
    r = reading(1000, 10000, 6 * s);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_HIGH);
    r = reading(1000, 10000, 7 * s);
    governor_feed(g, &r);
    ASSERT_EQ(governor_level(g), PRESSURE_LEVEL_LOW);
    governor_free(g);
}

/* ---- batch size ------------------------------------------------------------------------ */

static void feed_level(struct governor *g, uint64_t usage_permille, uint64_t t)
{
    struct pressure_reading r = reading(usage_permille, 1000, t);

    governor_feed(g, &r);
}

TEST(batch_grows_after_run_of_successes)
{
    struct governor *g = gov_new(true);

    feed_level(g, 100, 1);
    ASSERT_EQ(governor_batch_size(g), 64);
    governor_batch_done(g, 64);
    governor_batch_done(g, 64);
    ASSERT_EQ(governor_batch_size(g), 64);
    governor_batch_done(g, 64);
    ASSERT_EQ(governor_batch_size(g), 70); /* floor(64 * 1.1) */
    governor_batch_done(g, 70);
    governor_batch_done(g, 70);
    governor_batch_done(g, 70);
    ASSERT_EQ(governor_batch_size(g), 77);

    /* A MODERATE sample in the middle resets the run. */
    governor_batch_done(g, 77);
    governor_batch_done(g, 77);
    feed_level(g, 650, 2);
    governor_batch_done(g, 77);
    ASSERT_EQ(governor_batch_size(g), 77);
    feed_level(g, 100, 3);
    governor_batch_done(g, 77);
    governor_batch_done(g, 77);
    ASSERT_EQ(governor_batch_size(g), 77);
    governor_batch_done(g, 77);
    ASSERT_EQ(governor_batch_size(g), 84);
    governor_free(g);
}

TEST(batch_moderate_holds)
{
    struct governor *g = gov_new(true);

    feed_level(g, 700, 1);
    for (int i = 0; i < 20; i++)
        governor_batch_done(g, 64);
    ASSERT_EQ(governor_batch_size(g), 64);
    governor_free(g);
}

TEST(batch_high_shrinks)
{
    struct governor *g = gov_new(true);

    feed_level(g, 100, 1);
    feed_level(g, 800, 2); /* rise: x0.75 at once */
    ASSERT_EQ(governor_batch_size(g), 48);
    governor_batch_done(g, 64); /* formed before the shrink: already accounted */
    ASSERT_EQ(governor_batch_size(g), 48);
    governor_batch_done(g, 48);
    ASSERT_EQ(governor_batch_size(g), 36);
    governor_batch_done(g, 20); /* a short (tail or token-capped) batch still counts */
    ASSERT_EQ(governor_batch_size(g), 27);
    feed_level(g, 850, 3); /* still HIGH: no further shrink without a batch */
    ASSERT_EQ(governor_batch_size(g), 27);
    governor_free(g);
}

TEST(batch_critical_halves)
{
    struct governor *g = gov_new(true);

    feed_level(g, 100, 1);
    feed_level(g, 950, 2);
    ASSERT_EQ(governor_batch_size(g), 32);
    governor_batch_done(g, 64);
    ASSERT_EQ(governor_batch_size(g), 32);
    governor_batch_done(g, 32);
    ASSERT_EQ(governor_batch_size(g), 16);
    /* HIGH -> CRITICAL also halves. */
    governor_free(g);
    g = gov_new(true);
    feed_level(g, 800, 1);
    ASSERT_EQ(governor_batch_size(g), 48);
    feed_level(g, 920, 2);
    ASSERT_EQ(governor_batch_size(g), 24);
    governor_free(g);
}

TEST(batch_clamps)
{
    struct governor *g = gov_new(true);

    feed_level(g, 950, 1);
    for (int i = 0; i < 20; i++)
        governor_batch_done(g, governor_batch_size(g));
    ASSERT_EQ(governor_batch_size(g), 8);
    feed_level(g, 100, 2);
    for (int i = 0; i < 300; i++)
        governor_batch_done(g, governor_batch_size(g));
    ASSERT_EQ(governor_batch_size(g), 256);
    governor_free(g);

    /* At the minimum, growth still moves (8 * 1.1 floors to 8). */
    g = gov_new(true);
    feed_level(g, 950, 1);
    for (int i = 0; i < 20; i++)
        governor_batch_done(g, governor_batch_size(g));
    feed_level(g, 100, 2);
    for (int i = 0; i < 3; i++)
        governor_batch_done(g, 8);
    ASSERT_EQ(governor_batch_size(g), 9);
    governor_free(g);
}

TEST(batch_fixed_mode)
{
    struct governor *g = gov_new(false);
    struct pressure_snapshot s;
    unsigned a;

    feed_level(g, 100, 1);
    for (int i = 0; i < 10; i++)
        governor_batch_done(g, 64);
    ASSERT_EQ(governor_batch_size(g), 64);
    feed_level(g, 800, 2);
    governor_batch_done(g, 64);
    ASSERT_EQ(governor_batch_size(g), 64);
    /* Actions still flow: CRITICAL pauses feeding even with a fixed size. */
    a = governor_psi_event(g, 3);
    ASSERT_EQ(a, 0); /* already HIGH */
    {
        struct pressure_reading r = reading(950, 1000, 4);

        a = governor_feed(g, &r);
    }
    ASSERT_TRUE(a & GOVERNOR_ACTION_PAUSE_FEED);
    ASSERT_EQ(governor_batch_size(g), 64);
    governor_set_token_cost(g, 1000, 128);
    ASSERT_EQ(governor_batch_tokens_max(g), UINT64_MAX);
    governor_snapshot(g, &s);
    ASSERT_FALSE(s.adaptive);
    /* An OOM is the one thing that lowers a fixed size: it cannot be honoured. */
    ASSERT_EQ(governor_batch_oom(g, 64, NULL), 32);
    ASSERT_EQ(governor_batch_size(g), 32);
    governor_free(g);
}

TEST(batch_token_budget)
{
    struct governor *g = gov_new(true);
    struct pressure_reading r;
    const uint64_t cost = 40000;
    const unsigned L = 256;

    ASSERT_EQ(governor_batch_tokens_max(g), UINT64_MAX); /* no cost reported */
    governor_set_token_cost(g, cost, L);
    ASSERT_EQ(governor_batch_tokens_max(g), 256 * L); /* no reading yet: only the cap */

    r = reading(512 * MiB, 1 * GiB, 1);
    governor_feed(g, &r);
    /* (0.9 * 1 GiB - 512 MiB) / 2 / 40000 */
    ASSERT_EQ(governor_batch_tokens_max(g), ((uint64_t)(GiB * 9 / 10) - 512 * MiB) / 2 / cost);

    /* Past 90%: one full chunk still fits. */
    r = reading(95 * GiB / 100, 1 * GiB, 2);
    governor_feed(g, &r);
    ASSERT_EQ(governor_batch_tokens_max(g), L);

    /* Lots of headroom: capped at batch_max * L. */
    r = reading(0, 64 * GiB, 3);
    governor_feed(g, &r);
    ASSERT_EQ(governor_batch_tokens_max(g), 256 * L);

    governor_set_token_cost(g, 0, L);
    ASSERT_EQ(governor_batch_tokens_max(g), UINT64_MAX);
    governor_free(g);
}

TEST(governor_rejects_bad_params)
{
    struct governor_params p;
    struct governor *g = NULL;

    governor_params_init(&p, NULL);
    p.batch_start = 300;
    ASSERT_EQ(governor_new(&p, &g), -EINVAL);
    governor_params_init(&p, NULL);
    p.batch_min = 0;
    ASSERT_EQ(governor_new(&p, &g), -EINVAL);
    governor_params_init(&p, NULL);
    p.high_factor = 1.5;
    ASSERT_EQ(governor_new(&p, &g), -EINVAL);
    ASSERT_TRUE(g == NULL);
    ASSERT_TRUE(governor_free(NULL) == NULL);
}

TEST(governor_params_from_config)
{
    const char *env[] = {"COARCH_ADAPTIVE_BATCHING", "0", "COARCH_BATCH_SIZE", "100", NULL};
    struct pressure_config cfg;
    struct governor_params p;
    struct governor *g;

    ASSERT_OK(pressure_config_parse(fake_getenv, env, &cfg, NULL, 0));
    governor_params_init(&p, &cfg);
    ASSERT_FALSE(p.adaptive);
    ASSERT_OK(governor_new(&p, &g));
    ASSERT_EQ(governor_batch_size(g), 100);
    governor_free(g);
}

/* ---- OOM retry via fault injection ------------------------------------------------------ */

struct fake_encoder {
    unsigned fail_above; /* -ENOMEM for batches of more chunks than this */
    unsigned calls, ooms;
};

static int fake_encode(struct fake_encoder *e, const unsigned *chunks, unsigned n, unsigned *done)
{
    e->calls++;
    if (n > e->fail_above) {
        e->ooms++;
        return -ENOMEM;
    }
    for (unsigned i = 0; i < n; i++)
        done[chunks[i]]++;
    return 0;
}

/*
 * The scheduler's loop in miniature: take up to batch_size chunks, encode, and on -ENOMEM re-run
 * the same chunks in sub-batches of the retry size.  Returns 0 or the governor's -ENOMEM.
 */
static int drive(struct governor *g, struct fake_encoder *e, unsigned n_chunks, unsigned *done)
{
    unsigned *ids = calloc(n_chunks, sizeof(*ids));
    unsigned next = 0, guard = 0;
    int ret = 0;

    for (unsigned i = 0; i < n_chunks; i++)
        ids[i] = i;
    while (next < n_chunks) {
        unsigned n = governor_batch_size(g);
        int r;

        if (n > n_chunks - next)
            n = n_chunks - next;
        if (++guard > 100000) {
            ret = -ELOOP;
            break;
        }
        r = fake_encode(e, ids + next, n, done);
        if (r == -ENOMEM) {
            unsigned actions = 0;

            r = governor_batch_oom(g, n, &actions);
            if (r < 0) {
                ret = r;
                break;
            }
            if (!(actions & GOVERNOR_ACTION_MALLOC_TRIM) || (n > 8 && (unsigned)r >= n)) {
                ret = -EPROTO;
                break;
            }
            /* The governor's size now bounds the next attempt at the same `next`. */
            if (governor_batch_size(g) > (unsigned)r) {
                ret = -EPROTO;
                break;
            }
            continue;
        }
        next += n;
        governor_batch_done(g, n);
    }
    free(ids);
    return ret;
}

TEST(oom_retry_processes_every_chunk_once)
{
    static const unsigned limits[] = {20, 63, 100, 8};

    for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
        struct governor *g = gov_new(true);
        struct fake_encoder e = {.fail_above = limits[k]};
        const unsigned n_chunks = 5000;
        unsigned *done = calloc(n_chunks, sizeof(*done));
        struct pressure_snapshot s;

        feed_level(g, 100, 1); /* LOW: the governor keeps trying to grow */
        ASSERT_OK(drive(g, &e, n_chunks, done));
        for (unsigned i = 0; i < n_chunks; i++)
            if (done[i] != 1)
                test_fail(__FILE__, __LINE__, "chunk %u processed %u times (limit %u)", i, done[i],
                          limits[k]);
        printf("  fail above %u: %u OOMs in %u encodes, size settled at %u\n", limits[k], e.ooms,
               e.calls, governor_batch_size(g));
        ASSERT_LE(governor_batch_size(g), limits[k]);
        ASSERT_GT(e.ooms, 0);
        /* The ceiling keeps growth from walking back into the OOM again and again. */
        ASSERT_LE(e.ooms, 6);
        governor_snapshot(g, &s);
        ASSERT_EQ(s.oom_events, e.ooms);
        free(done);
        governor_free(g);
    }
}

TEST(oom_at_minimum_gives_up)
{
    struct governor *g = gov_new(true);
    struct fake_encoder e = {.fail_above = 5}; /* nothing >= 8 chunks ever fits */
    unsigned done[100] = {0};

    feed_level(g, 100, 1);
    ASSERT_EQ(drive(g, &e, 100, done), -ENOMEM);
    for (unsigned i = 0; i < 100; i++)
        ASSERT_EQ(done[i], 0);
    /* 64 -> 32 -> 16 -> 8, then three attempts at 8. */
    ASSERT_EQ(e.ooms, 3 + 3);
    ASSERT_EQ(governor_batch_size(g), 8);
    ASSERT_EQ(governor_batch_oom(g, 0, NULL), -EINVAL);
    governor_free(g);

    /* A success in between resets the count. */
    g = gov_new(true);
    ASSERT_EQ(governor_batch_oom(g, 8, NULL), 8);
    ASSERT_EQ(governor_batch_oom(g, 8, NULL), 8);
    governor_batch_done(g, 8);
    ASSERT_EQ(governor_batch_oom(g, 8, NULL), 8);
    ASSERT_EQ(governor_batch_oom(g, 8, NULL), 8);
    ASSERT_EQ(governor_batch_oom(g, 8, NULL), -ENOMEM);
    governor_free(g);
}

TEST(oom_ceiling_lasts_for_the_job)
{
    struct governor *g = gov_new(true);

    feed_level(g, 100, 1);
    ASSERT_EQ(governor_batch_oom(g, 40, NULL), 20);
    ASSERT_EQ(governor_batch_size(g), 20);
    for (int i = 0; i < 300; i++)
        governor_batch_done(g, governor_batch_size(g));
    ASSERT_EQ(governor_batch_size(g), 36); /* floor(40 / 1.1): one growth step below */
    governor_job_begin(g);
    for (int i = 0; i < 3; i++)
        governor_batch_done(g, governor_batch_size(g));
    ASSERT_EQ(governor_batch_size(g), 39);
    for (int i = 0; i < 3; i++)
        governor_batch_done(g, governor_batch_size(g));
    ASSERT_GT(governor_batch_size(g), 40);
    governor_free(g);
}

/* ---- readings from fake trees ------------------------------------------------------------ */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *fake_root(void)
{
    char *dir = strdup("/tmp/coarch-test-pressure-XXXXXX");

    if (!dir || !mkdtemp(dir))
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    return dir;
}

static void fake_root_free(char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* Writes root/rel, creating parent directories. */
static void put(const char *root, const char *rel, const char *content)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    f = fopen(path, "w");
    if (!f)
        test_fail(__FILE__, __LINE__, "fopen %s: %s", path, strerror(errno));
    fputs(content, f);
    fclose(f);
}

static void put_proc(const char *root, const char *memtotal_kb, const char *statm)
{
    char meminfo[256];

    snprintf(meminfo, sizeof(meminfo),
             "MemTotal:       %s kB\nMemFree:        1000 kB\nMemAvailable:   2000 kB\n",
             memtotal_kb);
    put(root, "proc/meminfo", meminfo);
    put(root, "proc/self/statm", statm);
}

static struct pressure_reading sample(const char *root, uint64_t config_limit)
{
    struct pressure_source *src = pressure_source_new(root, config_limit);
    struct pressure_reading r;

    ASSERT_TRUE(src != NULL);
    ASSERT_OK(pressure_source_sample(src, &r));
    pressure_source_free(src);
    return r;
}

TEST(cgroup_v2_fake_tree)
{
    char *root = fake_root();
    struct pressure_reading r;
    long page = sysconf(_SC_PAGESIZE);

    put_proc(root, "16777216", "50000 1000 10 1 0 100 0\n"); /* 16 GiB */
    put(root, "proc/self/cgroup", "0::/user.slice/x\n");
    put(root, "proc/pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n");
    put(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
    put(root, "sys/fs/cgroup/user.slice/memory.max", "max\n");
    put(root, "sys/fs/cgroup/user.slice/x/memory.max", "1073741824\n");
    put(root, "sys/fs/cgroup/user.slice/x/memory.current", "600000000\n");
    put(root, "sys/fs/cgroup/user.slice/x/memory.stat",
        "anon 400000000\nfile 200000000\nactive_file 100000000\ninactive_file 100000000\n"
        "file_dirty 30000000\nfile_writeback 10000000\n");
    put(root, "sys/fs/cgroup/user.slice/x/memory.pressure",
        "some avg10=12.50 avg60=1.00 avg300=0.00 total=777\n"
        "full avg10=2.00 avg60=0.00 avg300=0.00 total=5\n");

    r = sample(root, 0);
    ASSERT_EQ(r.cgroup_version, PRESSURE_CGROUP_V2);
    ASSERT_EQ(r.physical, 16 * GiB);
    ASSERT_EQ(r.cgroup_limit, GiB);
    ASSERT_EQ(r.limit, GiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_CGROUP);
    ASSERT_TRUE(r.usage_from_cgroup);
    ASSERT_EQ(r.cgroup_usage, 600000000);
    /* Clean file cache (active + inactive - dirty - writeback) is reclaimable. */
    ASSERT_EQ(r.cgroup_reclaimable, 160000000);
    ASSERT_EQ(r.usage, 440000000);
    ASSERT_EQ(r.rss, 1000 * (uint64_t)page);
    ASSERT_EQ(r.vms, 50000 * (uint64_t)page);
    /* PSI comes from the cgroup's own file, not the system's. */
    ASSERT_TRUE(r.psi.valid);
    ASSERT_NEAR(r.psi.some_avg10, 12.5, 1e-9);
    ASSERT_EQ(r.psi.some_total_us, 777);

    /* The trigger goes to the cgroup's file too, NUL included (the kernel eats the last byte). */
    {
        struct pressure_source *src = pressure_source_new(root, 0);
        char path[4096], buf[64] = {0};
        int fd = pressure_psi_open_trigger(src, 0, 0), rfd;

        ASSERT_GE(fd, 0);
        close(fd);
        snprintf(path, sizeof(path), "%s/sys/fs/cgroup/user.slice/x/memory.pressure", root);
        rfd = open(path, O_RDONLY | O_CLOEXEC);
        ASSERT_GE(rfd, 0);
        ASSERT_GE(read(rfd, buf, sizeof(buf) - 1), (ssize_t)sizeof("some 150000 1000000"));
        close(rfd);
        ASSERT_EQ(memcmp(buf, "some 150000 1000000", sizeof("some 150000 1000000")), 0);
        pressure_source_free(src);
    }

    /* An ancestor's limit binds when lower; "max" at the leaf. */
    put(root, "sys/fs/cgroup/user.slice/x/memory.max", "max\n");
    put(root, "sys/fs/cgroup/user.slice/memory.max", "536870912\n");
    r = sample(root, 0);
    ASSERT_EQ(r.limit, 512 * MiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_CGROUP);

    /* memory.high (systemd's MemoryHigh=) is a limit too, when lower. */
    put(root, "sys/fs/cgroup/user.slice/x/memory.high", "268435456\n");
    r = sample(root, 0);
    ASSERT_EQ(r.limit, 256 * MiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_CGROUP);
    put(root, "sys/fs/cgroup/user.slice/x/memory.high", "max\n");

    /* No limit anywhere: physical RAM, and usage is the RSS. */
    put(root, "sys/fs/cgroup/user.slice/memory.max", "max\n");
    r = sample(root, 0);
    ASSERT_EQ(r.cgroup_limit, 0);
    ASSERT_EQ(r.limit, 16 * GiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_PHYSICAL);
    ASSERT_FALSE(r.usage_from_cgroup);
    ASSERT_EQ(r.usage, 1000 * (uint64_t)page);

    /* The configured limit wins when smallest. */
    r = sample(root, 100 * MiB);
    ASSERT_EQ(r.limit, 100 * MiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_CONFIG);
    fake_root_free(root);
}

TEST(cgroup_v2_namespace_root)
{
    char *root = fake_root();
    struct pressure_reading r;

    /* Inside a cgroup namespace: "0::/", the container's limit at the mount point. */
    put_proc(root, "8388608", "100 10 0 0 0 0 0\n");
    put(root, "proc/self/cgroup", "0::/\n");
    put(root, "sys/fs/cgroup/cgroup.controllers", "memory pids\n");
    put(root, "sys/fs/cgroup/memory.max", "2147483648\n");
    put(root, "sys/fs/cgroup/memory.current", "1000000000\n");
    put(root, "sys/fs/cgroup/memory.stat", "inactive_file 0\n");
    r = sample(root, 0);
    ASSERT_EQ(r.limit, 2 * GiB);
    ASSERT_EQ(r.usage, 1000000000);

    /* More dirty than LRU file pages (the counters are read at different instants): nothing is
     * reclaimable, never a negative one. */
    put(root, "sys/fs/cgroup/memory.stat",
        "active_file 4096\ninactive_file 4096\nfile_dirty 65536\nfile_writeback 0\n");
    r = sample(root, 0);
    ASSERT_EQ(r.cgroup_reclaimable, 0);
    ASSERT_EQ(r.usage, 1000000000);
    fake_root_free(root);
}

TEST(cgroup_v1_fake_tree)
{
    char *root = fake_root();
    struct pressure_reading r;
    long page = sysconf(_SC_PAGESIZE);

    put_proc(root, "4194304", "3000 2000 0 0 0 0 0\n"); /* 4 GiB */
    /* Hybrid layout: a v2 line exists but its hierarchy has no memory controller. */
    put(root, "proc/self/cgroup", "12:cpu,cpuacct:/bar\n4:memory:/foo\n0::/\n");
    put(root, "proc/pressure/memory",
        "some avg10=3.25 avg60=0.00 avg300=0.00 total=42\n"
        "full avg10=1.00 avg60=0.00 avg300=0.00 total=2\n");
    put(root, "sys/fs/cgroup/unified/cgroup.controllers", "\n");
    put(root, "sys/fs/cgroup/memory/foo/memory.limit_in_bytes", "268435456\n");
    put(root, "sys/fs/cgroup/memory/foo/memory.usage_in_bytes", "200000000\n");
    put(root, "sys/fs/cgroup/memory/foo/memory.stat",
        "cache 60000000\nrss 140000000\ninactive_file 1\n"
        "hierarchical_memory_limit 9223372036854771712\n"
        "total_cache 60000000\ntotal_inactive_file 50000000\ntotal_active_file 8000000\n"
        "total_dirty 4000000\ntotal_writeback 1000000\n");
    r = sample(root, 0);
    ASSERT_EQ(r.cgroup_version, PRESSURE_CGROUP_V1);
    ASSERT_EQ(r.limit, 256 * MiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_CGROUP);
    ASSERT_EQ(r.cgroup_usage, 200000000);
    ASSERT_EQ(r.cgroup_reclaimable, 53000000); /* total_, not the local inactive_file */
    ASSERT_EQ(r.usage, 147000000);
    ASSERT_TRUE(r.psi.valid);
    ASSERT_NEAR(r.psi.some_avg10, 3.25, 1e-9);

    /* An ancestor's lower limit shows in hierarchical_memory_limit. */
    put(root, "sys/fs/cgroup/memory/foo/memory.stat",
        "hierarchical_memory_limit 134217728\ntotal_inactive_file 0\n");
    r = sample(root, 0);
    ASSERT_EQ(r.limit, 128 * MiB);
    ASSERT_EQ(r.usage, 200000000);

    /* v1 "unlimited" (PAGE_COUNTER_MAX pages): physical RAM and RSS. */
    put(root, "sys/fs/cgroup/memory/foo/memory.limit_in_bytes", "9223372036854771712\n");
    put(root, "sys/fs/cgroup/memory/foo/memory.stat",
        "hierarchical_memory_limit 9223372036854771712\ntotal_inactive_file 0\n");
    r = sample(root, 0);
    ASSERT_EQ(r.cgroup_limit, 0);
    ASSERT_EQ(r.limit, 4 * GiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_PHYSICAL);
    ASSERT_EQ(r.usage, 2000 * (uint64_t)page);
    ASSERT_EQ(r.cgroup_usage, 200000000); /* still reported */
    fake_root_free(root);
}

TEST(cgroup_v1_nested_and_container_fallback)
{
    char *root = fake_root();
    struct pressure_reading r;

    put_proc(root, "4194304", "3000 2000 0 0 0 0 0\n");
    put(root, "proc/self/cgroup", "9:name=systemd:/\n4:memory:/docker/abc123/sub\n");
    put(root, "sys/fs/cgroup/memory/docker/abc123/sub/memory.limit_in_bytes", "104857600\n");
    put(root, "sys/fs/cgroup/memory/docker/abc123/sub/memory.usage_in_bytes", "52428800\n");
    r = sample(root, 0);
    ASSERT_EQ(r.limit, 100 * MiB);
    ASSERT_EQ(r.usage, 50 * MiB); /* no memory.stat: nothing subtracted */

    /* The host path is not visible (container without cgroupns): the mount point is ours. */
    fake_root_free(root);
    root = fake_root();
    put_proc(root, "4194304", "3000 2000 0 0 0 0 0\n");
    put(root, "proc/self/cgroup", "4:memory:/docker/abc123\n");
    put(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "209715200\n");
    put(root, "sys/fs/cgroup/memory/memory.usage_in_bytes", "104857600\n");
    r = sample(root, 0);
    ASSERT_EQ(r.limit, 200 * MiB);
    ASSERT_EQ(r.usage, 100 * MiB);
    fake_root_free(root);
}

TEST(physical_ram_bounds_limit)
{
    char *root = fake_root();
    struct pressure_reading r;

    put_proc(root, "1048576", "100 10 0 0 0 0 0\n"); /* 1 GiB of RAM */
    put(root, "proc/self/cgroup", "4:memory:/foo\n");
    put(root, "sys/fs/cgroup/memory/foo/memory.limit_in_bytes", "4294967296\n"); /* 4 GiB */
    put(root, "sys/fs/cgroup/memory/foo/memory.usage_in_bytes", "1000\n");
    r = sample(root, 8 * GiB);
    ASSERT_EQ(r.limit, GiB);
    ASSERT_EQ(r.limit_source, PRESSURE_LIMIT_PHYSICAL);
    ASSERT_EQ(r.cgroup_limit, 0); /* not below RAM: does not apply */
    ASSERT_FALSE(r.usage_from_cgroup);

    /* A meminfo longer than the read buffer: MemTotal leads, the rest does not matter. */
    {
        char *big = malloc(20000);
        size_t n;

        ASSERT_TRUE(big != NULL);
        n = (size_t)snprintf(big, 20000, "MemTotal:       2097152 kB\n");
        while (n + 32 < 20000)
            n += (size_t)snprintf(big + n, 20000 - n, "Padding:        %8zu kB\n", n);
        put(root, "proc/meminfo", big);
        free(big);
        r = sample(root, 0);
        ASSERT_EQ(r.physical, 2 * GiB);
    }
    fake_root_free(root);
}

TEST(rss_fallback_without_cgroup)
{
    char *root = fake_root();
    struct pressure_reading r;
    long page = sysconf(_SC_PAGESIZE);
    struct pressure_source *src;

    put_proc(root, "2097152", "7000 1234 0 0 0 0 0\n");
    r = sample(root, 0);
    ASSERT_EQ(r.cgroup_version, PRESSURE_CGROUP_NONE);
    ASSERT_EQ(r.limit, 2 * GiB);
    ASSERT_EQ(r.usage, 1234 * (uint64_t)page);
    ASSERT_EQ(r.rss, 1234 * (uint64_t)page);
    ASSERT_EQ(r.vms, 7000 * (uint64_t)page);
    ASSERT_EQ(r.rss_anon, r.rss); /* no /proc/self/status: the whole RSS counts */
    ASSERT_FALSE(r.psi.valid);
    ASSERT_GT(r.timestamp_us, 0);

    /* With /proc/self/status, usage is the anonymous and shmem part: the file-backed pages
     * (LMDB's map, the model) are clean page cache, as in the cgroup rule. */
    put(root, "proc/self/status",
        "Name:\tcoarchd\nVmRSS:\t    4936 kB\nRssAnon:\t    3000 kB\nRssFile:\t    1836 kB\n"
        "RssShmem:\t     100 kB\nVmData:\t  9000 kB\n");
    r = sample(root, 0);
    ASSERT_EQ(r.rss_anon, 3100 * KiB);
    ASSERT_EQ(r.usage, 3100 * KiB);
    ASSERT_EQ(r.rss, 1234 * (uint64_t)page);
    /* A status without the fields (an old kernel) falls back to the RSS; a bad number too. */
    put(root, "proc/self/status", "Name:\tcoarchd\nVmRSS:\t    4936 kB\n");
    r = sample(root, 0);
    ASSERT_EQ(r.usage, 1234 * (uint64_t)page);
    put(root, "proc/self/status", "RssAnon:\t  12x kB\nRssShmem:\t 0 kB\n");
    r = sample(root, 0);
    ASSERT_EQ(r.usage, 1234 * (uint64_t)page);

    /* No PSI file: no trigger. */
    src = pressure_source_new(root, 0);
    ASSERT_EQ(pressure_psi_open_trigger(src, 0, 0), -ENOENT);
    pressure_source_free(src);

    /* Without /proc/meminfo there is no reading at all. */
    put(root, "proc/meminfo", "garbage\n");
    src = pressure_source_new(root, 0);
    ASSERT_EQ(pressure_source_sample(src, &r), -EBADMSG);
    pressure_source_free(src);
    fake_root_free(root);
    src = pressure_source_new("/nonexistent-coarch-root", 0);
    ASSERT_EQ(pressure_source_sample(src, &r), -ENOENT);
    pressure_source_free(src);
}

static int fake_gpu(void *userdata, struct pressure_gpu *ret)
{
    int *calls = userdata;

    (*calls)++;
    *ret = (struct pressure_gpu){
        .free = 3 * GiB, .total = 16 * GiB, .allocated = 5 * GiB, .reserved = 6 * GiB};
    return 0;
}

static int failing_gpu(void *userdata, struct pressure_gpu *ret)
{
    (void)userdata;
    (void)ret;
    return -EIO;
}

TEST(gpu_reading_and_snapshot)
{
    char *root = fake_root();
    struct pressure_source *src;
    struct pressure_reading r;
    struct pressure_snapshot s;
    struct governor *g = gov_new(true);
    int calls = 0;

    put_proc(root, "1048576", "200 100 0 0 0 0 0\n");
    src = pressure_source_new(root, 0);
    pressure_source_set_gpu(src, fake_gpu, &calls);
    ASSERT_OK(pressure_source_sample(src, &r));
    ASSERT_EQ(calls, 1);
    ASSERT_TRUE(r.gpu.valid);
    ASSERT_EQ(r.gpu.allocated, 5 * GiB);

    governor_feed(g, &r);
    governor_note_checkpoint(g);
    governor_note_checkpoint(g);
    governor_snapshot(g, &s);
    ASSERT_TRUE(s.gpu_valid);
    ASSERT_EQ(s.gpu_free, 3 * GiB);
    ASSERT_EQ(s.gpu_total, 16 * GiB);
    ASSERT_EQ(s.gpu_allocated, 5 * GiB);
    ASSERT_EQ(s.gpu_reserved, 6 * GiB);
    ASSERT_EQ(s.checkpoints_written, 2);
    ASSERT_EQ(s.usage, r.usage);
    ASSERT_EQ(s.limit, GiB);
    ASSERT_EQ(s.rss, r.rss);
    ASSERT_EQ(s.vms, r.vms);
    ASSERT_EQ(s.batch_size, 64);
    ASSERT_EQ(s.samples, 1);
    ASSERT_STREQ(s.level_name, "low");
    ASSERT_FALSE(s.feed_paused);

    pressure_source_set_gpu(src, failing_gpu, NULL);
    ASSERT_OK(pressure_source_sample(src, &r));
    ASSERT_FALSE(r.gpu.valid);
    pressure_source_set_gpu(src, NULL, NULL);
    ASSERT_OK(pressure_source_sample(src, &r));
    ASSERT_FALSE(r.gpu.valid);
    pressure_source_free(src);
    governor_free(g);
    fake_root_free(root);
    ASSERT_TRUE(pressure_source_free(NULL) == NULL);
}

/* ---- the real machine ---------------------------------------------------------------------- */

TEST(real_machine_reading)
{
    struct pressure_source *src = pressure_source_new(NULL, 0);
    struct pressure_reading r;
    struct governor *g = gov_new(true);
    struct pressure_snapshot s;
    int fd;

    ASSERT_TRUE(src != NULL);
    ASSERT_OK(pressure_source_sample(src, &r));
    printf("  limit %llu (source %d) usage %llu (cgroup %d, v%d) rss %llu vms %llu phys %llu "
           "psi %s some avg10 %.2f\n",
           (unsigned long long)r.limit, (int)r.limit_source, (unsigned long long)r.usage,
           (int)r.usage_from_cgroup, (int)r.cgroup_version, (unsigned long long)r.rss,
           (unsigned long long)r.vms, (unsigned long long)r.physical, r.psi.valid ? "yes" : "no",
           r.psi.some_avg10);
    ASSERT_GT(r.limit, 0);
    ASSERT_GT(r.usage, 0);
    ASSERT_GT(r.rss, 0);
    ASSERT_GE(r.vms, r.rss);
    ASSERT_GT(r.physical, 0);
    ASSERT_LE(r.limit, r.physical);
    if (access("/proc/pressure/memory", R_OK) == 0)
        ASSERT_TRUE(r.psi.valid);

    governor_feed(g, &r);
    governor_snapshot(g, &s);
    ASSERT_EQ(s.limit, r.limit);

    /* The PSI trigger the loop would watch: arms, and polls without error. */
    fd = pressure_psi_open_trigger(src, 0, 0);
    printf("  PSI trigger: %s\n", fd >= 0 ? "armed" : strerror(-fd));
    if (fd >= 0) {
        struct pollfd p = {.fd = fd, .events = POLLPRI};

        ASSERT_GE(poll(&p, 1, 0), 0);
        ASSERT_FALSE(p.revents & (POLLERR | POLLNVAL));
        ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        close(fd);
    } else if (fd != -ENOENT && fd != -EOPNOTSUPP && fd != -EACCES && fd != -EPERM) {
        test_fail(__FILE__, __LINE__, "pressure_psi_open_trigger: %s", strerror(-fd));
    }
    ASSERT_EQ(pressure_psi_open_trigger(src, 2000000, 1000000), -EINVAL);

    /* Free some heap, then hand it back: must not disturb anything. */
    {
        void *p = malloc(32 * MiB);

        ASSERT_TRUE(p != NULL);
        memset(p, 1, 32 * MiB);
        free(p);
        (void)pressure_malloc_trim();
    }
    governor_free(g);
    pressure_source_free(src);
}

/* ---- a real OOM kill under a real cgroup limit --------------------------------------------- */

TEST(cgroup_harness_oom_kill)
{
    struct test_cgroup *cg = NULL;
    char name[64], path[4096];
    uint64_t kills = 0;
    int pfd[2], status = 0, r;
    pid_t pid;

    snprintf(name, sizeof(name), "coarch-test-oom-%d", (int)getpid());
    r = test_cgroup_new(name, &cg);
    if (r == -EOPNOTSUPP || r == -EACCES)
        TEST_SKIP("no writable memory cgroup (v1 or v2) here");
    ASSERT_OK(r);
    printf("  cgroup v%d at %s\n", test_cgroup_version(cg), test_cgroup_path(cg));
    ASSERT_OK(test_cgroup_set_memory_limit(cg, 100 * MiB));
    ASSERT_OK(test_cgroup_oom_kills(cg, &kills));
    ASSERT_EQ(kills, 0);

    ASSERT_OK(pipe2(pfd, O_CLOEXEC));
    pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        const size_t size = 300 * MiB;
        char go;
        char *p;

        close(pfd[1]);
        if (read(pfd[0], &go, 1) != 1)
            _exit(3);
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(2);
        for (size_t i = 0; i < size; i += 4096)
            p[i] = 1;
        _exit(0);
    }
    close(pfd[0]);
    r = test_cgroup_add_pid(cg, pid);
    if (r < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(pfd[1]);
        test_cgroup_remove(cg);
        ASSERT_OK(r);
    }
    ASSERT_EQ(write(pfd[1], "g", 1), 1);
    close(pfd[1]);
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        test_cgroup_remove(cg);
        test_fail(__FILE__, __LINE__, "child not OOM-killed: status 0x%x", status);
    }
    r = test_cgroup_oom_kills(cg, &kills);
    snprintf(path, sizeof(path), "%s", test_cgroup_path(cg));
    ASSERT_OK(test_cgroup_remove(cg));
    ASSERT_OK(r);
    ASSERT_GE(kills, 1);
    /* Removed for real. */
    ASSERT_TRUE(access(path, F_OK) < 0 && errno == ENOENT);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
