/*
 * test-memory-limit.c - coarchd indexes a React-sized repository (>= 25,000 chunks) inside a
 * memory cgroup whose limit the memory governor has to respect, and nothing is OOM-killed.
 *
 * Setup: a child memory cgroup of the test's own (tests/harness/cgroup.h) with a hard limit
 * (memory + swap); coarchd joins it between fork and exec (tspawn_opts.cgroup_procs), so every
 * byte it ever allocates is charged there.  The daemon embeds with the tiny test model
 * (tests/data/gen-tiny-model.py: the real MiniLM tokenizer, a 2-layer 64-wide network), which
 * keeps the run to about a minute on two cores.
 *
 * The limit.  Unlimited, this job (30,512 chunks) peaks at ~124 MiB charged to the cgroup: ~50
 * MiB of anonymous memory (tokenizer vocabulary, model, OpenBLAS buffers, the job's file list,
 * batches) plus page cache (the corpus, and LMDB's map, which the writer keeps touching).  The
 * default limit, 96 MiB, is below that peak, so the kernel has to reclaim cache while the job
 * runs, and puts the governor's usage (charge less clean file cache, see pressure.h) near the
 * MODERATE boundary: measured 20 s, max usage 55 MiB, cgroup peak 96.0 MiB, no OOM kill
 * (unlimited: 10 s).  At 64 MiB the job still completes without an OOM kill, but LMDB's map no
 * longer fits and every page is re-read: 450 s, too slow for the default run.
 * `COARCH_TEST_MEMORY_LIMIT_MB=N` explores other limits; `0` runs the same job without a
 * limit and prints the peak, which is how 96 was chosen.
 *
 * Checks: the job ends "done" with chunks_done >= 25,000; the cgroup counted no OOM kill;
 * coarchd still answers and exits cleanly on SIGTERM; a search returns results; the
 * governor's status reports the cgroup's limit as its limit (limit_bytes == the cgroup limit,
 * usage measured from the cgroup) and a usage that stays below it; the peak the kernel
 * recorded (v1 memory.max_usage_in_bytes, v2 memory.peak) is within the limit.  The levels
 * and batch sizes the governor went through are printed.
 *
 * Skips (77) under AddressSanitizer, and when no memory cgroup can be created here (read-only
 * cgroupfs, cgroup v2 without a delegated subtree, no permission); fails when the tiny model cannot
 * be generated.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "helpers.h"
#include "indexing.h"
#include "test.h"

#define CORPUS_FILES 2500
#define CORPUS_SEED 25
#define MIN_CHUNKS 25000
#define DEFAULT_LIMIT_MB 96
#define JOB_TIMEOUT_MS (480 * 1000)
#define SAMPLE_MS 200

struct gov_sample {
    char level[16];
    uint64_t usage, limit, cgroup_limit, batch_size, rss, status_limit;
    bool from_cgroup;
};

static void governor_sample(struct tclient *c, struct gov_sample *ret)
{
    struct proto_msg *m = status(c);
    const msgpack_object *g = proto_map_get(&m->result, "governor");
    const char *s;
    size_t len;

    ASSERT_TRUE(g != NULL);
    memset(ret, 0, sizeof(*ret));
    /* The daemon's own memory section shows the governor's limit too. */
    ret->status_limit = map_uint(proto_map_get(&m->result, "memory"), "limit_bytes");
    ret->usage = map_uint(g, "usage_bytes");
    ret->limit = map_uint(g, "limit_bytes");
    ret->cgroup_limit = map_uint(g, "cgroup_limit_bytes");
    ret->batch_size = map_uint(g, "batch_size");
    ret->rss = map_uint(g, "rss_bytes");
    ASSERT_OK(proto_get_bool(g, "usage_from_cgroup", &ret->from_cgroup));
    ASSERT_OK(proto_get_str(g, "level", &s, &len));
    snprintf(ret->level, sizeof(ret->level), "%.*s", (int)len, s);
    proto_msg_free(m);
}

/* The kernel's high-water mark of the cgroup's charge, or 0 when it keeps none. */
static uint64_t cgroup_peak(const struct test_cgroup *cg)
{
    char path[PATH_MAX + 32];
    unsigned long long v = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", test_cgroup_path(cg),
             test_cgroup_version(cg) == 2 ? "memory.peak" : "memory.max_usage_in_bytes");
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (fscanf(f, "%llu", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

static unsigned limit_mb(void)
{
    const char *v = getenv("COARCH_TEST_MEMORY_LIMIT_MB");
    char *end;
    unsigned long n;

    if (!v || !v[0])
        return DEFAULT_LIMIT_MB;
    n = strtoul(v, &end, 10);
    if (*end || n > 1u << 20)
        test_fail(__FILE__, __LINE__, "COARCH_TEST_MEMORY_LIMIT_MB=\"%s\": expected MiB", v);
    return (unsigned)n;
}

static int level_index(const char *level)
{
    static const char *const names[] = {"low", "moderate", "high", "critical"};

    for (int i = 0; i < 4; i++)
        if (strcmp(level, names[i]) == 0)
            return i;
    return -1;
}

TEST(index_25k_chunks_under_a_cgroup_limit)
{
    const unsigned mb = limit_mb();
    const uint64_t limit = (uint64_t)mb << 20;
    struct test_cgroup *cg = NULL;
    struct corpus_stats cs;
    struct tdaemon d;
    struct tclient *c;
    struct job_info job;
    struct gov_sample s, max = {0};
    unsigned level_samples[4] = {0}, n_samples = 0;
    uint64_t min_batch = UINT64_MAX, max_batch = 0, kills = 0, peak, t0, deadline;
    char repo[PATH_MAX + 8], procs[PATH_MAX + 16], model_env[PATH_MAX + 16];
    const char *model;
    int r;

    require_coarchd();
#if defined(__SANITIZE_ADDRESS__)
    /* ASan's shadow memory and quarantine multiply the footprint: a limit sized for coarchd
     * would measure the sanitizer. */
    TEST_SKIP("built with AddressSanitizer, whose own memory use makes a memory limit meaningless");
#endif
    model = tiny_model_make();
    r = test_cgroup_new("coarch-memory-limit", &cg);
    if (r == -EOPNOTSUPP)
        TEST_SKIP("no usable memory cgroup hierarchy (cgroup v2 without a delegated subtree, "
                  "or no memory controller)");
    if (r == -EACCES)
        TEST_SKIP("the memory cgroup hierarchy is not writable here");
    ASSERT_OK(r);
    if (mb > 0)
        ASSERT_OK(test_cgroup_set_memory_limit(cg, limit));
    fprintf(stderr, "cgroup v%d %s, limit %u MiB%s\n", test_cgroup_version(cg),
            test_cgroup_path(cg), mb, mb ? "" : " (none: calibration run)");

    ASSERT_OK(tdaemon_init(&d));
    snprintf(repo, sizeof(repo), "%s/repo", d.dir);
    ASSERT_EQ(mkdir(repo, 0755), 0);
    t0 = now_ms();
    corpus_write(repo, CORPUS_FILES, CORPUS_SEED, &cs);
    fprintf(stderr,
            "corpus: %u files, %" PRIu64 " lines, %" PRIu64 " KiB, %" PRIu64
            " functions (%.1f s)\n",
            cs.files, cs.lines, cs.bytes >> 10, cs.functions, (double)(now_ms() - t0) / 1000);

    snprintf(procs, sizeof(procs), "%s/cgroup.procs", test_cgroup_path(cg));
    snprintf(model_env, sizeof(model_env), "COARCH_MODEL=%s", model);
    {
        const char *env[] = {model_env, "COARCH_LOG_LEVEL=info", NULL};
        struct tspawn_opts o = {.env = env, .listen_fd = -1, .cgroup_procs = procs};

        ASSERT_OK(tdaemon_spawn(&d, &o));
        r = tdaemon_wait_socket(&d, d.socket, 20000);
        if (r < 0)
            tdaemon_dump_log(&d);
        ASSERT_OK(r);
    }
    c = connect_ok(&d);

    t0 = now_ms();
    index_call(c, repo, false, 10000, &job);
    deadline = t0 + JOB_TIMEOUT_MS;
    for (;;) {
        governor_sample(c, &s);
        n_samples++;
        if (level_index(s.level) >= 0)
            level_samples[level_index(s.level)]++;
        max.usage = s.usage > max.usage ? s.usage : max.usage;
        max.rss = s.rss > max.rss ? s.rss : max.rss;
        min_batch = s.batch_size < min_batch ? s.batch_size : min_batch;
        max_batch = s.batch_size > max_batch ? s.batch_size : max_batch;
        if (mb > 0) {
            /* The governor works with the cgroup's limit and the cgroup's charge. */
            ASSERT_EQ(s.limit, limit);
            ASSERT_EQ(s.cgroup_limit, limit);
            ASSERT_EQ(s.status_limit, limit);
            ASSERT_TRUE(s.from_cgroup);
        }
        ASSERT_TRUE(jobs_find(c, job.id, &job));
        if (strcmp(job.state, "queued") != 0 && strcmp(job.state, "running") != 0)
            break;
        if (now_ms() > deadline) {
            tdaemon_dump_log(&d);
            test_fail(__FILE__, __LINE__,
                      "job %" PRIu64 " still %s after %d s: %" PRIu64 " chunks done", job.id,
                      job.state, JOB_TIMEOUT_MS / 1000, job.chunks_done);
        }
        usleep(SAMPLE_MS * 1000);
    }
    peak = cgroup_peak(cg);
    fprintf(stderr,
            "job %" PRIu64 ": %s in %.1f s: %" PRIu64 " files, %" PRIu64 " chunks, %" PRIu64
            " checkpoints%s%s\n",
            job.id, job.state, (double)(now_ms() - t0) / 1000, job.files_done, job.chunks_done,
            job.checkpoints, job.message[0] ? ": " : "", job.message);
    fprintf(stderr,
            "governor (%u samples): levels low %u, moderate %u, high %u, critical %u; batch "
            "size %" PRIu64 "..%" PRIu64 "; max usage %.1f MiB, max RSS %.1f MiB; cgroup peak "
            "%.1f MiB of %u MiB\n",
            n_samples, level_samples[0], level_samples[1], level_samples[2], level_samples[3],
            min_batch, max_batch, (double)max.usage / 1048576, (double)max.rss / 1048576,
            (double)peak / 1048576, mb);

    if (strcmp(job.state, "done") != 0)
        tdaemon_dump_log(&d);
    ASSERT_STREQ(job.state, "done");
    ASSERT_EQ(job.error_code, 0);
    ASSERT_GE(job.chunks_done, MIN_CHUNKS);
    ASSERT_EQ(job.files_done, CORPUS_FILES);

    ASSERT_OK(test_cgroup_oom_kills(cg, &kills));
    ASSERT_EQ(kills, 0);
    assert_serving(&d);
    ASSERT_GT(search_count(c, repo, "flush the pending journal to the store", 10), 0);
    ASSERT_GT(max.usage, 0);
    if (mb > 0) {
        ASSERT_LT(max.usage, limit);
        if (peak > 0)
            ASSERT_LE(peak, limit);
    }
    tclient_free(c);
    stop_ok(&d);
    ASSERT_OK(test_cgroup_oom_kills(cg, &kills));
    ASSERT_EQ(kills, 0);
    ASSERT_OK(test_cgroup_remove(cg));
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
