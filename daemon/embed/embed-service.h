/*
 * embed-service.h - the daemon's one embedding model: which model and precision it runs, which
 * backend runs it, when it loads, and the lock that lets indexing jobs and searches share it.
 *
 * The model loads lazily, on the first job or search that needs it, and stays loaded until
 * embed_service_free().  A load that fails is retried by the next caller (the files may have
 * been fetched meanwhile); each failure is logged and returned with a message naming the model,
 * its directory and the reason.
 *
 * Choices made once, at embed_service_new(), so that a bad setting stops coarchd at start like
 * every other setting:
 *   - the model: COARCH_MODEL, a name under <data dir>/models or a directory (contains '/');
 *     default all-MiniLM-L6-v2;
 *   - the backend: COARCH_BACKEND (auto, cpu, cuda; unset means auto).  auto is CUDA when the
 *     build has it and a usable GPU is present, else the CPU; cuda without a usable GPU is an
 *     error now (-ENODEV), never a quiet fall back.  The choice is handed to embedder_load();
 *   - the GEMM precision: COARCH_PRECISION (auto, fp32, bf16, int8); auto is bf16 on the GPU,
 *     and on the CPU int8 where it has AVX512_VNNI and AVX512_BF16, else fp32;
 *   - COARCH_GPU_MEMORY_FRACTION, when the backend is CUDA (cuda/cuda.h).
 *
 * The lock.  Every use of the embedder goes through this module and holds its lock for one
 * embedder_embed() call: a search waits at most for the batch in flight.  The lock is never held
 * across anything but model loading and one embed call.
 *
 * Threading: embed_service_new()/free() on the loop thread while no other thread uses the
 * service; embed_service_status() on any thread (it reads atomics, never the lock); everything
 * else on worker threads (the job worker, the libuv pool), never on the loop thread: loading
 * reads the model files and embedding takes milliseconds to seconds.
 */
#ifndef COARCH_EMBED_SERVICE_H
#define COARCH_EMBED_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct embed_service;

#define EMBED_SERVICE_DEFAULT_MODEL "all-MiniLM-L6-v2"

/* Why a call failed: model_unavailable when the model could not be loaded (message says why). */
struct embed_service_error {
    bool model_unavailable;
    char message[600];
};

/* What an indexing job needs to know about the loaded model. */
struct embed_service_info {
    unsigned dim;             /* vector width */
    unsigned max_tokens;      /* the model's max_seq_length, [CLS]/[SEP] included */
    uint64_t bytes_per_token; /* activation bytes one token of a batch costs (the governor's) */
};

/* Loaded-model facts for `status`; strings are static or live as long as the service. */
struct embed_service_status {
    const char *name, *dir;
    bool loaded;
    unsigned dim;                                      /* 0 until loaded */
    const char *backend;                               /* "" until loaded */
    const char *precision;                             /* as the backend runs it; "" until loaded */
    const char *selected_backend, *selected_precision; /* chosen at start */
    const char *device;                                /* the GPU's name, "" on the CPU */
};

/*
 * Reads the settings above; models named without a '/' are looked up in <data_dir>/models.
 * Returns 0, -EINVAL for a bad setting (logged, naming the variable, the value and what is
 * wrong), -ENODEV for COARCH_BACKEND=cuda without a usable GPU (logged, with the reason), or
 * -ENOMEM.
 */
int embed_service_new(const char *data_dir, struct embed_service **ret);
/* Frees the model too.  Accepts NULL; returns NULL. */
struct embed_service *embed_service_free(struct embed_service *s);

/* The model's name as configured (borrowed; lives as long as the service).  Any thread. */
const char *embed_service_model_name(const struct embed_service *s);
/* Any thread. */
void embed_service_status(struct embed_service *s, struct embed_service_status *ret);

/* The device memory of a GPU backend as of its last load or batch (never waits for the lock):
 * 0, or -ENODEV when the model runs on the host or is not loaded yet.  Any thread. */
int embed_service_device_memory(struct embed_service *s, uint64_t *ret_total, uint64_t *ret_free,
                                uint64_t *ret_allocated);

/* Loads the model if needed and describes it.  Returns 0, or a negative errno with ret_err set
 * (model_unavailable is then true). */
int embed_service_prepare(struct embed_service *s, struct embed_service_info *ret_info,
                          struct embed_service_error *ret_err);

/*
 * Embeds n texts (texts[i] is lens[i] bytes, not necessarily NUL-terminated) into a new array of
 * n * dim floats, row i for texts[i]; the caller frees *ret_vectors.  Loads the model if needed.
 * Returns 0, or a negative errno with ret_err set when the model could not be loaded
 * (model_unavailable) and ret_err->message empty otherwise (the caller names the operation).
 */
int embed_service_embed_new(struct embed_service *s, const char *const *texts, const size_t *lens,
                            size_t n, float **ret_vectors, unsigned *ret_dim,
                            struct embed_service_error *ret_err);

/* The same into caller storage of n * dim floats (the indexer's callback; the model is loaded
 * by embed_service_prepare() before a job starts).  Returns 0 or a negative errno. */
int embed_service_embed(struct embed_service *s, const char *const *texts, const size_t *lens,
                        size_t n, float *ret_vectors);

/*
 * The chunker's token counter: WordPiece tokens of text without the special ones.  Only after
 * a successful embed_service_prepare(), and from one thread only (the job worker): it reuses one
 * token buffer.  Never fails: out of memory gives a pessimistic estimate, keeping chunks small.
 */
size_t embed_service_count_tokens(struct embed_service *s, const char *text, size_t len);

#endif
