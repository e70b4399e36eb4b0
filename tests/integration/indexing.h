/*
 * indexing.h - what the indexing integration tests (memory-limit, crash-resume) share: the
 * tiny test model, a generated source corpus, and the index/jobs/search RPCs as plain calls.
 *
 * The tiny model is made at test time by tests/data/gen-tiny-model.py (python3, standard
 * library only) from the REAL all-MiniLM-L6-v2 tokenizer files, so chunking and tokenizing
 * behave as with the real model while embedding costs ~1% of it.  Weights are never committed.
 *
 * The corpus is C and Python source written by a seeded generator: functions with comments,
 * loops, conditions and calls over identifiers drawn from a vocabulary of real programming
 * words, about ten functions per file.  Same seed, same bytes.
 *
 * Every helper asserts (test.h) instead of returning errors.  Threading: main thread only.
 */
#ifndef COARCH_TEST_INTEGRATION_INDEXING_H
#define COARCH_TEST_INTEGRATION_INDEXING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"

/*
 * Writes the tiny model into a fresh temporary directory (removed at exit) and returns its
 * path (static storage).  The tokenizer comes from $COARCH_MODELS_DIR or the user's models
 * directory (all-MiniLM-L6-v2, see scripts/fetch-model); when that is not installed, from the
 * committed tests/data/embed/tiny-model fixture (a real tokenizer.json with a smaller
 * vocabulary), so the test never depends on a download.  Fails the test when python3 or the
 * generator fails: a model that cannot be made is a bug, not a missing prerequisite.
 */
const char *tiny_model_make(void);

struct corpus_stats {
    unsigned files;
    uint64_t lines, bytes, functions;
};

/* Writes n_files source files (C and Python, in nested directories) under `dir`, which must
 * exist. */
void corpus_write(const char *dir, unsigned n_files, uint64_t seed, struct corpus_stats *ret);

/* The fields of a job object (methods-index.md) the tests look at. */
struct job_info {
    uint64_t id;
    char state[16], phase[16];
    uint64_t files_done, files_total, chunks_done, chunks_total, checkpoints;
    uint64_t batch_size;
    bool resumed;
    int64_t error_code;
    char message[256];
};

/* Parses a job map; false when required fields are missing. */
bool job_info_parse(const void *msgpack_map, struct job_info *ret);

/* `index {path, wait}`; with wait the answer comes when the job ends (timeout_ms). */
void index_call(struct tclient *c, const char *path, bool wait, int timeout_ms,
                struct job_info *ret);

/* The job `id` in the `jobs` list; false when it is not there. */
bool jobs_find(struct tclient *c, uint64_t id, struct job_info *ret);

/* `search {query, repo, k}`, asserted to succeed with at most k results: the response (free
 * it with proto_msg_free()) and its results array (inside it). */
struct proto_msg *search_call(struct tclient *c, const char *repo, const char *query, unsigned k,
                              const msgpack_object **ret_results);

/* Number of results of `search {query, repo, k}` (asserts the call succeeds). */
size_t search_count(struct tclient *c, const char *repo, const char *query, unsigned k);

#endif
