/*
 * test-engine.c - the indexing engine's RPC edges, against the real coarchd with the tiny test
 * model (tests/data/gen-tiny-model.py), so they run in seconds and need no download:
 *  - `embed` texts holding NUL bytes are embedded whole (the tokenizer drops NUL like any
 *    control character), never read past;
 *  - a model that cannot be loaded answers model_unavailable, naming the directory once;
 *  - `search` refuses a `repo` of the wrong type instead of searching every repository;
 *  - a queued job cancelled is at once cancelled for `jobs` and a second `job.cancel`, and its
 *    row says so after a restart;
 *  - `status` reports the model as loaded while a job is embedding;
 *  - `repo.remove` while the repository's job runs cancels it, and indexing it again works;
 *  - finished job rows are pruned to the newest 100.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu.h"
#include "helpers.h"
#include "indexing.h"
#include "test.h"

#define JOB_ROWS_KEEP 100 /* engine.c */

/* Starts coarchd with the tiny model: in a fresh directory, or again in d's (restart). */
static void spawn_tiny(struct tdaemon *d, const char *extra_env, bool restart)
{
    static char model_env[PATH_MAX + 16];
    const char *env[] = {model_env, extra_env, NULL};
    struct tspawn_opts o = {.env = env, .listen_fd = -1};
    int r;

    require_coarchd();
    snprintf(model_env, sizeof(model_env), "COARCH_MODEL=%s", tiny_model_make());
    if (!restart)
        ASSERT_OK(tdaemon_init(d));
    ASSERT_OK(tdaemon_spawn(d, &o));
    r = tdaemon_wait_socket(d, d->socket, 10000);
    if (r < 0)
        tdaemon_dump_log(d);
    ASSERT_OK(r);
}

static void start_tiny(struct tdaemon *d, const char *extra_env)
{
    spawn_tiny(d, extra_env, false);
}

static void restart_tiny(struct tdaemon *d)
{
    spawn_tiny(d, NULL, true);
}

/* `embed {texts}` with explicit lengths; returns the response (caller frees). */
static struct proto_msg *embed_call(struct tclient *c, const char *const *texts, const size_t *lens,
                                    size_t n)
{
    uint32_t id = tclient_next_id(c);
    msgpack_packer *pk = tclient_begin(c, id, "embed", 1);
    struct proto_msg *m = NULL;

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_str(pk, "texts"));
    ASSERT_OK(msgpack_pack_array(pk, n));
    for (size_t i = 0; i < n; i++) {
        ASSERT_OK(msgpack_pack_str(pk, lens[i]));
        ASSERT_OK(msgpack_pack_str_body(pk, texts[i], lens[i]));
    }
    ASSERT_OK(tclient_end(c));
    ASSERT_OK(tclient_read_response(c, 60000, NULL, &m));
    ASSERT_EQ(m->id, id);
    return m;
}

TEST(embed_text_with_nul_bytes)
{
    static const char with_nul[] = "open\0 the\0\0 socket";
    const char *texts[] = {with_nul, "open the socket", "close the file"};
    const size_t lens[] = {sizeof(with_nul) - 1, strlen(texts[1]), strlen(texts[2])};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;
    const msgpack_object *v;

    start_tiny(&d, NULL);
    c = connect_ok(&d);
    m = embed_call(c, texts, lens, 3);
    ASSERT_EQ(tmsg_error_code(m), 0);
    v = proto_map_get(&m->result, "vectors");
    ASSERT_TRUE(v && v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size == 3);
    for (uint32_t i = 0; i < 3; i++)
        ASSERT_EQ(v->via.array.ptr[i].type, MSGPACK_OBJECT_BIN);
    /* NUL is dropped by the normaliser: the same tokens, the same vector, bit for bit. */
    ASSERT_EQ(v->via.array.ptr[0].via.bin.size, v->via.array.ptr[1].via.bin.size);
    ASSERT_EQ(memcmp(v->via.array.ptr[0].via.bin.ptr, v->via.array.ptr[1].via.bin.ptr,
                     v->via.array.ptr[0].via.bin.size),
              0);
    ASSERT_NE(memcmp(v->via.array.ptr[1].via.bin.ptr, v->via.array.ptr[2].via.bin.ptr,
                     v->via.array.ptr[1].via.bin.size),
              0);
    proto_msg_free(m);
    tclient_free(c);
    stop_ok(&d);
}

TEST(model_unavailable)
{
    const char *env[] = {"COARCH_MODEL=/nonexistent/coarch-test-model", NULL};
    const char *texts[] = {"x"};
    const size_t lens[] = {1};
    struct tdaemon d;
    struct tclient *c;
    struct proto_msg *m;
    const char *msg = NULL;
    size_t len = 0;
    int64_t code = 0;
    char text[1024];

    start_env(&d, env);
    c = connect_ok(&d);
    m = embed_call(c, texts, lens, 1);
    ASSERT_OK(proto_msg_get_error(m, &code, &msg, &len));
    ASSERT_EQ(code, PROTO_ERROR_MODEL_UNAVAILABLE);
    snprintf(text, sizeof(text), "%.*s", (int)len, msg);
    ASSERT_TRUE(strstr(text, "/nonexistent/coarch-test-model") != NULL);
    ASSERT_TRUE(strstr(text, "fetch-model") != NULL);
    /* The hint is given once. */
    ASSERT_TRUE(strstr(strstr(text, "fetch-model") + 1, "fetch-model") == NULL);
    proto_msg_free(m);
    tclient_free(c);
    stop_ok(&d);
}

TEST(search_repo_of_the_wrong_type)
{
    struct tdaemon d;
    struct tclient *c;
    uint32_t id;
    msgpack_packer *pk;

    start_tiny(&d, NULL);
    c = connect_ok(&d);
    id = tclient_next_id(c);
    pk = tclient_begin(c, id, "search", 2);
    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_str(pk, "query", "open a file"));
    ASSERT_OK(proto_pack_str(pk, "repo"));
    ASSERT_OK(msgpack_pack_int(pk, 5));
    ASSERT_OK(tclient_end(c));
    expect_error(c, id, PROTO_ERROR_INVALID_PARAMS);
    tclient_free(c);
    stop_ok(&d);
}

TEST(index_and_watch_refuse_relative_paths)
{
    /* Issue 16: a relative path was resolved against the daemon's working directory. */
    static const char *const methods[] = {"index", "watch"};
    struct tdaemon d;
    struct tclient *c;

    start_tiny(&d, NULL);
    c = connect_ok(&d);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        uint32_t id = tclient_next_id(c);
        msgpack_packer *pk = tclient_begin(c, id, methods[i], 1);
        struct proto_msg *m = NULL;
        const char *msg = "";
        int64_t code = 0;
        size_t len = 0;

        ASSERT_TRUE(pk != NULL);
        ASSERT_OK(proto_pack_kv_str(pk, "path", "src"));
        ASSERT_OK(tclient_end(c));
        ASSERT_OK(tclient_read_response(c, 10000, NULL, &m));
        ASSERT_EQ(proto_msg_get_error(m, &code, &msg, &len), 1);
        ASSERT_EQ(code, PROTO_ERROR_INVALID_INPUT);
        ASSERT_TRUE(memmem(msg, len, "not an absolute path", 20) != NULL);
        proto_msg_free(m);
    }
    tclient_free(c);
    stop_ok(&d);
}

static struct proto_msg *cancel_call(struct tclient *c, uint64_t job)
{
    uint32_t id = tclient_next_id(c);
    msgpack_packer *pk = tclient_begin(c, id, "job.cancel", 1);
    struct proto_msg *m = NULL;

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_uint(pk, "job", job));
    ASSERT_OK(tclient_end(c));
    ASSERT_OK(tclient_read_response(c, 30000, NULL, &m));
    ASSERT_EQ(m->id, id);
    return m;
}

/* Loads the model with an embed call; status' model.precision, as a static string. */
static const char *precision_in_use(struct tdaemon *d)
{
    const char *texts[] = {"int main(void) { return 0; }"};
    const size_t lens[] = {strlen(texts[0])};
    struct tclient *c = connect_ok(d);
    struct proto_msg *m = embed_call(c, texts, lens, 1);
    const msgpack_object *model;
    const char *s = NULL, *ret;
    size_t len = 0;

    ASSERT_TRUE(m->error.type == MSGPACK_OBJECT_NIL);
    proto_msg_free(m);
    m = status(c);
    model = proto_map_get(&m->result, "model");
    ASSERT_TRUE(model != NULL);
    ASSERT_OK(proto_get_str(model, "precision", &s, &len));
    ret = len == 4 && memcmp(s, "int8", 4) == 0   ? "int8"
          : len == 4 && memcmp(s, "fp32", 4) == 0 ? "fp32"
          : len == 4 && memcmp(s, "bf16", 4) == 0 ? "bf16"
                                                  : "?";
    proto_msg_free(m);
    tclient_free(c);
    return ret;
}

/*
 * COARCH_PRECISION unset or "auto": int8 where this CPU and build can run it, else fp32; a
 * precision named runs as named; a bad name stops coarchd at start with the usage status.
 */
TEST(precision_choice)
{
    const char *want = embed_cpu_precision_supported(EMBED_PRECISION_INT8, NULL) ? "int8" : "fp32";
    const char *bad[] = {"COARCH_PRECISION=fp16", NULL};
    struct tdaemon d;

    start_tiny(&d, NULL);
    ASSERT_STREQ(precision_in_use(&d), want);
    stop_ok(&d);
    start_tiny(&d, "COARCH_PRECISION=auto");
    ASSERT_STREQ(precision_in_use(&d), want);
    stop_ok(&d);
    start_tiny(&d, "COARCH_PRECISION=fp32");
    ASSERT_STREQ(precision_in_use(&d), "fp32");
    stop_ok(&d);
    start_tiny(&d, "COARCH_CPU_KERNELS=generic");
    ASSERT_STREQ(precision_in_use(&d), "fp32");
    stop_ok(&d);

    require_coarchd();
    ASSERT_OK(tdaemon_init(&d));
    ASSERT_OK(tdaemon_spawn(&d, &(struct tspawn_opts){.env = bad, .listen_fd = -1}));
    ASSERT_EQ(tdaemon_wait_exit(&d, 10000), 2);
    ASSERT_TRUE(
        tdaemon_log_wait(&d, "COARCH_PRECISION=fp16: expected auto, fp32, bf16 or int8", 0));
}

static bool status_model_loaded(struct tclient *c)
{
    struct proto_msg *m = status(c);
    const msgpack_object *model = proto_map_get(&m->result, "model");
    bool loaded = false;

    ASSERT_TRUE(model != NULL);
    ASSERT_OK(proto_get_bool(model, "loaded", &loaded));
    if (loaded)
        ASSERT_GT(map_uint(model, "dim"), 0);
    proto_msg_free(m);
    return loaded;
}

static void wait_job_end(struct tclient *c, uint64_t id, struct job_info *ret)
{
    uint64_t deadline = now_ms() + 240000;

    for (;;) {
        ASSERT_TRUE(jobs_find(c, id, ret));
        if (strcmp(ret->state, "queued") != 0 && strcmp(ret->state, "running") != 0)
            return;
        ASSERT_LT(now_ms(), deadline);
        usleep(50 * 1000);
    }
}

TEST(cancel_a_queued_job_twice)
{
    struct tdaemon d;
    struct tclient *c;
    struct corpus_stats cs;
    struct job_info big, small, j;
    struct proto_msg *m;
    char big_dir[PATH_MAX + 8], small_dir[PATH_MAX + 8];

    /* One batch per checkpoint keeps the running job busy long enough on a fast machine. */
    start_tiny(&d, "COARCH_CHECKPOINT_FREQUENCY=1");
    snprintf(big_dir, sizeof(big_dir), "%s/big", d.dir);
    snprintf(small_dir, sizeof(small_dir), "%s/small", d.dir);
    ASSERT_EQ(mkdir(big_dir, 0755), 0);
    ASSERT_EQ(mkdir(small_dir, 0755), 0);
    corpus_write(big_dir, 1500, 7, &cs);
    corpus_write(small_dir, 5, 8, &cs);
    c = connect_ok(&d);

    index_call(c, big_dir, false, 30000, &big);
    index_call(c, small_dir, false, 30000, &small);
    ASSERT_STREQ(small.state, "queued");
    /* While the big job embeds, status still reports the model (no lock wait, no "unloaded"). */
    for (;;) {
        ASSERT_TRUE(jobs_find(c, big.id, &j));
        if (j.chunks_done > 0 || strcmp(j.state, "running") != 0)
            break;
        usleep(20 * 1000);
    }
    ASSERT_TRUE(status_model_loaded(c));

    m = cancel_call(c, small.id);
    ASSERT_TRUE(tmsg_result_is_true(m));
    proto_msg_free(m);
    ASSERT_TRUE(jobs_find(c, small.id, &j));
    ASSERT_STREQ(j.state, "cancelled");
    m = cancel_call(c, small.id);
    ASSERT_EQ(tmsg_error_code(m), PROTO_ERROR_INVALID_INPUT);
    ASSERT_TRUE(tmsg_error_mentions(m, "already cancelled"));
    proto_msg_free(m);

    wait_job_end(c, big.id, &j);
    ASSERT_STREQ(j.state, "done");
    tclient_free(c);
    stop_ok(&d);

    /* The row says cancelled too: the restarted daemon does not run the job. */
    restart_tiny(&d);
    c = connect_ok(&d);
    ASSERT_TRUE(jobs_find(c, small.id, &j));
    ASSERT_STREQ(j.state, "cancelled");
    tclient_free(c);
    stop_ok(&d);
}

TEST(remove_a_repository_while_it_is_indexed)
{
    struct tdaemon d;
    struct tclient *c;
    struct corpus_stats cs;
    struct job_info job, j;
    struct proto_msg *m;
    char repo[PATH_MAX + 8];
    uint32_t id;
    msgpack_packer *pk;

    start_tiny(&d, "COARCH_CHECKPOINT_FREQUENCY=1");
    snprintf(repo, sizeof(repo), "%s/repo", d.dir);
    ASSERT_EQ(mkdir(repo, 0755), 0);
    corpus_write(repo, 1500, 9, &cs);
    c = connect_ok(&d);
    index_call(c, repo, false, 30000, &job);

    id = tclient_next_id(c);
    pk = tclient_begin(c, id, "repo.remove", 1);
    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_str(pk, "repo", repo));
    ASSERT_OK(tclient_end(c));
    ASSERT_OK(tclient_read_response(c, 120000, NULL, &m));
    ASSERT_EQ(m->id, id);
    if (tmsg_error_code(m) != 0) {
        /* Only possible if the job had not registered the repository yet: it always has, the
         * index answer came first. */
        test_fail(__FILE__, __LINE__, "repo.remove failed: error %lld",
                  (long long)tmsg_error_code(m));
    }
    proto_msg_free(m);
    wait_job_end(c, job.id, &j);
    ASSERT_TRUE(strcmp(j.state, "cancelled") == 0 || strcmp(j.state, "done") == 0);

    /* Indexing it again is a fresh repository that completes. */
    index_call(c, repo, true, 240000, &j);
    ASSERT_STREQ(j.state, "done");
    ASSERT_EQ(j.files_done, 1500);
    ASSERT_GT(search_count(c, repo, "flush the pending journal", 5), 0);
    tclient_free(c);
    stop_ok(&d);
}

TEST(job_rows_are_pruned)
{
    struct tdaemon d;
    struct tclient *c;
    struct corpus_stats cs;
    struct job_info j, first;
    struct proto_msg *m;
    const msgpack_object *list;
    char repo[PATH_MAX + 8];

    start_tiny(&d, NULL);
    snprintf(repo, sizeof(repo), "%s/repo", d.dir);
    ASSERT_EQ(mkdir(repo, 0755), 0);
    corpus_write(repo, 3, 11, &cs);
    c = connect_ok(&d);
    index_call(c, repo, true, 60000, &first);
    for (int i = 0; i < JOB_ROWS_KEEP + 10; i++) {
        index_call(c, repo, true, 60000, &j);
        ASSERT_STREQ(j.state, "done");
    }
    tclient_free(c);
    stop_ok(&d);

    /* After a restart `jobs` lists the stored rows: bounded, the newest kept. */
    restart_tiny(&d);
    c = connect_ok(&d);
    ASSERT_OK(tclient_call(c, "jobs", &m));
    list = proto_map_get(&m->result, "jobs");
    ASSERT_TRUE(list != NULL && list->type == MSGPACK_OBJECT_ARRAY);
    ASSERT_LE(list->via.array.size, JOB_ROWS_KEEP + 1);
    ASSERT_GE(list->via.array.size, JOB_ROWS_KEEP);
    proto_msg_free(m);
    ASSERT_FALSE(jobs_find(c, first.id, &j));
    ASSERT_TRUE(jobs_find(c, first.id + JOB_ROWS_KEEP + 10, &j));
    tclient_free(c);
    stop_ok(&d);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
