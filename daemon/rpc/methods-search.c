/*
 * methods-search.c - search and embed (methods.h; the contract is PROTOCOL.md section 7).
 * Both run on the libuv pool: the query (or the texts) is embedded through the embed service,
 * whose lock a running job's batch may hold, and a search reads LMDB and the files' snippets.
 */
#include "ignore.h"
#include "methods.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunk.h"
#include "clock.h"
#include "embed-service.h"
#include "macro.h"
#include "paths.h"
#include "proto.h"
#include "rpc.h"
#include "search.h"
#include "store-repo.h"
#include "work.h"

#define SNIPPET_MAX_LINES 8
#define SNIPPET_MAX_BYTES 1024
#define EMBED_MAX_TEXTS 1024

/* Answer a failed search/embed: a model that cannot be loaded gets its own code, whatever the
 * errno (a missing file is not a missing repository, a malformed one not a malformed request). */
static void reply_op_error(struct rpc_request *req, int r, const struct embed_service_error *err,
                           const char *message)
{
    if (err->model_unavailable)
        rpc_request_reply_error(req, PROTO_ERROR_MODEL_UNAVAILABLE, "%s", err->message);
    else
        rpc_request_reply_errno(req, r, "%s", message);
}

/* ---- search ---------------------------------------------------------------------------- */

struct search_op {
    struct methods_env *env;
    struct rpc_request *req;
    struct search_request sr;
    char *query, *repo_path, *path_glob, *language;
    float *qvec;
    int r;
    struct embed_service_error err;
    char message[600];
    struct search_hit *hits;
    char **snippets;
    double ms;
};

static void search_op_free(struct search_op *op)
{
    /* search_run() hands back an array even for zero hits: free it whenever it is set. */
    if (op->hits) {
        for (int i = 0; i < op->r; i++)
            free(op->snippets ? op->snippets[i] : NULL);
        search_hits_free(op->hits, op->r > 0 ? (size_t)op->r : 0);
    }
    free(op->snippets);
    free(op->query);
    free(op->repo_path);
    free(op->path_glob);
    free(op->language);
    free(op->qvec);
    free(op);
}

/* The first lines of the unit that matched, read from the file as it is now (it may have
 * changed). */
static char *read_snippet(const struct search_hit *h)
{
    _cleanup_free_ char *full = path_join(h->repo_path, h->path);
    _cleanup_close_ int fd = -1;
    size_t want = MIN((size_t)h->text_len, (size_t)SNIPPET_MAX_BYTES);
    char *buf;
    ssize_t n;
    int lines = 0;

    if (!full)
        return NULL;
    fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    buf = malloc(want + 1);
    if (!buf)
        return NULL;
    n = pread(fd, buf, want, (off_t)h->text_offset);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n' && ++lines == SNIPPET_MAX_LINES) {
            n = i;
            break;
        }
    buf[n] = '\0';
    /* Keep the result valid UTF-8 for msgpack str: drop a cut multi-byte tail, NULs. */
    while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80)
        n--;
    if (n > 0 && (unsigned char)buf[n - 1] >= 0xC0)
        n--;
    buf[n] = '\0';
    return buf;
}

static void search_work(void *userdata)
{
    struct search_op *op = userdata;
    struct methods_env *env = op->env;
    double t0 = clock_monotonic_s();
    int r;

    if (op->sr.mode != SEARCH_MODE_LEXICAL) {
        size_t len = strlen(op->query);
        const char *q = op->query;
        unsigned dim;

        r = embed_service_embed_new(env->model, &q, &len, 1, &op->qvec, &dim, &op->err);
        if (r < 0) {
            op->r = r;
            snprintf(op->message, sizeof(op->message), "embedding the query failed: %s",
                     strerror(-r));
            return;
        }
        op->sr.dim = dim;
        op->sr.query_vec = op->qvec;
    }
    if (op->repo_path) {
        struct store_txn *t;
        r = store_read_begin(env->store, &t);
        if (r >= 0) {
            r = store_repo_find(t, op->repo_path, &op->sr.repo);
            store_read_end(t);
        }
        if (r < 0) {
            op->r = r;
            snprintf(op->message, sizeof(op->message),
                     r == -ENOENT ? "%s is not indexed (run: coarchctl index %s)"
                                  : "cannot read the index for %s",
                     op->repo_path, op->repo_path);
            return;
        }
    }
    op->r = search_run(env->store, env->cache, &op->sr, &op->hits);
    if (op->r < 0) {
        snprintf(op->message, sizeof(op->message), "search failed: %s", strerror(-op->r));
        return;
    }
    op->snippets = calloc(MAX(op->r, 1), sizeof(char *));
    for (int i = 0; op->snippets && i < op->r; i++)
        op->snippets[i] = read_snippet(&op->hits[i]);
    op->ms = (clock_monotonic_s() - t0) * 1000.0;
}

static int pack_search(msgpack_packer *pk, void *userdata)
{
    struct search_op *op = userdata;
    int r = msgpack_pack_map(pk, 3);

    r |= proto_pack_kv_str(pk, "mode", search_mode_to_string(op->sr.mode));
    r |= proto_pack_kv_double(pk, "took_ms", round(op->ms * 1000.0) / 1000.0);
    r |= proto_pack_str(pk, "results");
    r |= msgpack_pack_array(pk, (uint32_t)op->r);
    for (int i = 0; i < op->r; i++) {
        const struct search_hit *h = &op->hits[i];
        r |= msgpack_pack_map(pk, 15);
        r |= proto_pack_kv_str(pk, "path", h->path);
        r |= proto_pack_kv_uint(pk, "start_line", h->start_line);
        r |= proto_pack_kv_uint(pk, "end_line", h->end_line);
        r |= proto_pack_kv_uint(pk, "definition_start_line", h->def_start_line);
        r |= proto_pack_kv_uint(pk, "definition_end_line", h->def_end_line);
        r |= proto_pack_kv_uint(pk, "snippet_line", h->snippet_line);
        r |= proto_pack_kv_double(pk, "score", h->score);
        r |= proto_pack_kv_str(pk, "symbol", h->symbol);
        r |= proto_pack_kv_str(pk, "language", h->language);
        r |= proto_pack_kv_str(pk, "repo", h->repo_path);
        r |= proto_pack_kv_double(pk, "semantic_score", h->semantic);
        r |= proto_pack_kv_double(pk, "lexical_score", h->lexical);
        r |= proto_pack_kv_int(pk, "semantic_rank", h->semantic_rank);
        r |= proto_pack_kv_int(pk, "lexical_rank", h->lexical_rank);
        r |= proto_pack_kv_str(pk, "snippet",
                               op->snippets && op->snippets[i] ? op->snippets[i] : "");
    }
    return r ? -ENOMEM : 0;
}

static void search_done(int status, void *userdata)
{
    struct search_op *op = userdata;

    if (status < 0)
        rpc_request_reply_errno(op->req, status, "search did not run: %s", strerror(-status));
    else if (op->r < 0)
        reply_op_error(op->req, op->r, &op->err, op->message);
    else
        rpc_request_reply_ok(op->req, pack_search, op);
    search_op_free(op);
}

/* The language filter as chunks record it ("Python", "py" -> "python"); an unknown one is
 * answered invalid_params with every name coarch knows, rather than a search that can only
 * find nothing.  False once it has answered. */
static bool check_language(struct search_op *op)
{
    const char *canon = chunk_language_lookup(op->language), *names[64];
    char list[1024];
    size_t n, at = 0;

    if (canon) {
        char *c = strdup(canon);
        if (!c) {
            rpc_request_reply_errno(op->req, -ENOMEM, "out of memory");
            return false;
        }
        free(op->language);
        op->language = c;
        return true;
    }
    n = chunk_language_list(names, ELEMENTSOF(names));
    list[0] = '\0';
    for (size_t i = 0; i < n && at < sizeof(list); i++)
        at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%s", i ? ", " : "", names[i]);
    rpc_request_reply_error(op->req, PROTO_ERROR_INVALID_PARAMS,
                            "unknown language \"%.64s\": coarch knows %s", op->language, list);
    return false;
}

/* Reads and checks the optional parameters after `query`; false once it has answered. */
static bool search_params(struct search_op *op, const msgpack_object *params)
{
    struct rpc_request *req = op->req;
    _cleanup_free_ char *mode = NULL, *repo = NULL;
    uint64_t k = 10;
    int r;

    r = proto_get_uint(params, "k", &k);
    if (r == -EINVAL || k == 0 || k > SEARCH_MAX_K) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                "\"k\" must be an integer in 1..%d", SEARCH_MAX_K);
        return false;
    }
    op->sr.k = k;
    r = proto_get_strdup(params, "mode", &mode);
    if ((r == 0 && search_mode_from_string(mode, &op->sr.mode) < 0) || r == -EINVAL) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                "\"mode\" must be hybrid, semantic or lexical");
        return false;
    }
    r = proto_get_strdup(params, "repo", &repo);
    if (r == -EINVAL) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                "\"repo\" must be a string (a repository directory)");
        return false;
    }
    if (r == 0) {
        char msg[PATH_MAX + 64];
        r = methods_resolve_repo(repo, &op->repo_path, msg, sizeof(msg));
        if (r < 0) {
            rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT, "%s", msg);
            return false;
        }
    }
    if (proto_get_strdup(params, "path", &op->path_glob) == -EINVAL ||
        proto_get_strdup(params, "lang", &op->language) == -EINVAL) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                "\"path\" and \"lang\" must be strings");
        return false;
    }
    if (op->path_glob && !ignore_wildmatch_ok(op->path_glob)) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                "\"path\" is too long a glob: at most %d bytes and %d '*'",
                                IGNORE_WILDMATCH_MAX_LEN, IGNORE_WILDMATCH_MAX_STARS);
        return false;
    }
    if (op->language && !check_language(op))
        return false;
    /* Fusion knobs for tuning and experiments (PROTOCOL.md: optional, positive numbers). */
    static const char *const knobs[] = {"rrf_k", "semantic_weight", "lexical_weight"};
    double *knob_dst[] = {&op->sr.rrf_k, &op->sr.semantic_weight, &op->sr.lexical_weight};
    for (size_t i = 0; i < ELEMENTSOF(knobs); i++) {
        r = proto_get_double(params, knobs[i], knob_dst[i]);
        if (r == -EINVAL || (r == 0 && !(*knob_dst[i] > 0 && *knob_dst[i] < 1e6))) {
            rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                    "\"%s\" must be a positive number", knobs[i]);
            return false;
        }
    }
    return true;
}

static int method_search(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct search_op *op = calloc(1, sizeof(*op));
    int r;

    if (!op)
        return -ENOMEM;
    op->env = userdata;
    op->req = req;
    op->sr.mode = SEARCH_MODE_HYBRID;
    if (proto_get_strdup(params, "query", &op->query) < 0 || !op->query[0]) {
        search_op_free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"query\" is required: a non-empty string");
    }
    if (!search_params(op, params)) {
        search_op_free(op);
        return 0;
    }
    op->sr.query = op->query;
    op->sr.path_glob = op->path_glob;
    op->sr.language = op->language;
    r = event_work_queue(op->env->el, search_work, search_done, op);
    if (r < 0) {
        search_op_free(op);
        return r;
    }
    return 0;
}

/* ---- embed ----------------------------------------------------------------------------- */

struct embed_op {
    struct methods_env *env;
    struct rpc_request *req;
    char **texts;
    size_t *lens;
    size_t n;
    float *out;
    unsigned dim;
    int r;
    struct embed_service_error err;
    char message[600];
};

static void embed_op_free(struct embed_op *op)
{
    for (size_t i = 0; i < op->n; i++)
        free(op->texts[i]);
    free(op->texts);
    free(op->lens);
    free(op->out);
    free(op);
}

static void embed_work(void *userdata)
{
    struct embed_op *op = userdata;

    op->r = embed_service_embed_new(op->env->model, (const char *const *)op->texts, op->lens, op->n,
                                    &op->out, &op->dim, &op->err);
    if (op->r < 0)
        snprintf(op->message, sizeof(op->message), "embedding failed: %s", strerror(-op->r));
}

static int pack_embed(msgpack_packer *pk, void *userdata)
{
    struct embed_op *op = userdata;
    int r = msgpack_pack_map(pk, 3);

    r |= proto_pack_kv_uint(pk, "dim", op->dim);
    r |= proto_pack_kv_str(pk, "model", embed_service_model_name(op->env->model));
    r |= proto_pack_str(pk, "vectors");
    r |= msgpack_pack_array(pk, (uint32_t)op->n);
    for (size_t i = 0; i < op->n; i++) {
        r |= msgpack_pack_bin(pk, op->dim * sizeof(float));
        r |= msgpack_pack_bin_body(pk, op->out + i * op->dim, op->dim * sizeof(float));
    }
    return r ? -ENOMEM : 0;
}

static void embed_done(int status, void *userdata)
{
    struct embed_op *op = userdata;

    if (status < 0)
        rpc_request_reply_errno(op->req, status, "embed did not run");
    else if (op->r < 0)
        reply_op_error(op->req, op->r, &op->err, op->message);
    else
        rpc_request_reply_ok(op->req, pack_embed, op);
    embed_op_free(op);
}

static int method_embed(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    const msgpack_object *texts = proto_map_get(params, "texts");
    struct embed_op *op;

    if (!texts || texts->type != MSGPACK_OBJECT_ARRAY || texts->via.array.size == 0 ||
        texts->via.array.size > EMBED_MAX_TEXTS)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"texts\" must be an array of 1..%d strings",
                                       EMBED_MAX_TEXTS);
    op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->env = userdata;
    op->req = req;
    op->texts = calloc(texts->via.array.size, sizeof(char *));
    op->lens = calloc(texts->via.array.size, sizeof(size_t));
    if (!op->texts || !op->lens) {
        embed_op_free(op);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < texts->via.array.size; i++) {
        const msgpack_object *o = &texts->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR) {
            embed_op_free(op);
            return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                           "\"texts\"[%u] is not a string", i);
        }
        /* Copied whole, not with strndup(): a text may hold NUL bytes (the tokenizer drops
         * them as control characters) and lens[i] must match the bytes actually copied. */
        op->texts[i] = malloc((size_t)o->via.str.size + 1);
        op->n = i + 1;
        if (!op->texts[i]) {
            embed_op_free(op);
            return -ENOMEM;
        }
        memcpy(op->texts[i], o->via.str.ptr, o->via.str.size);
        op->texts[i][o->via.str.size] = '\0';
        op->lens[i] = o->via.str.size;
    }
    int r = event_work_queue(op->env->el, embed_work, embed_done, op);
    if (r < 0) {
        embed_op_free(op);
        return r;
    }
    return 0;
}

int methods_search_register(struct methods_env *env)
{
    int r = rpc_register(env->rpc, "search", method_search, env);

    if (r >= 0)
        r = rpc_register(env->rpc, "embed", method_embed, env);
    return r;
}
