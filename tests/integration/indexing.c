/*
 * indexing.c - see indexing.h.
 */
#include "indexing.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "paths.h"
#include "spawn.h"
#include "test.h"

/* ---- the tiny model --------------------------------------------------------------------- */

const char *tiny_model_make(void)
{
    static char dir[PATH_MAX];
    char tokenizer[PATH_MAX], script[PATH_MAX], tmpl[PATH_MAX], cmd[4 * PATH_MAX];
    const char *src = getenv("COARCH_TEST_SOURCE_DIR");
    const char *tmp = getenv("TMPDIR");
    char *models = NULL;
    int status;

    if (dir[0])
        return dir;
    if (!src)
        src = "..";
    snprintf(script, sizeof(script), "%s/tests/data/gen-tiny-model.py", src);
    ASSERT_EQ(access(script, R_OK), 0);
    tokenizer[0] = '\0';
    if (coarch_models_dir(&models) == 0) {
        snprintf(tokenizer, sizeof(tokenizer), "%s/all-MiniLM-L6-v2", models);
        free(models);
        if (access(tokenizer, F_OK) < 0)
            tokenizer[0] = '\0';
    }
    if (!tokenizer[0]) {
        snprintf(tokenizer, sizeof(tokenizer), "%s/tests/data/embed/tiny-model", src);
        fprintf(stderr,
                "tiny model: all-MiniLM-L6-v2 is not installed (scripts/fetch-model); using the "
                "tokenizer of %s\n",
                tokenizer);
    }
    snprintf(tmpl, sizeof(tmpl), "%s/coarch-tiny-model-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    ASSERT_TRUE(mkdtemp(tmpl) != NULL);
    tspawn_track_dir(tmpl);
    snprintf(dir, sizeof(dir), "%s/tiny-minilm", tmpl);
    snprintf(cmd, sizeof(cmd), "python3 '%s' --tokenizer-from '%s' --out '%s' >&2", script,
             tokenizer, dir);
    status = system(cmd);
    if (status != 0) {
        dir[0] = '\0';
        test_fail(__FILE__, __LINE__, "cannot generate the tiny model (%s): status %d", cmd,
                  status);
    }
    return dir;
}

/* ---- the corpus ------------------------------------------------------------------------- */

static const char *const nouns[] = {
    "buffer",  "cache",   "index",  "node",     "tree",     "list",    "queue",    "stream",
    "socket",  "file",    "path",   "token",    "chunk",    "vector",  "matrix",   "parser",
    "lexer",   "config",  "option", "session",  "user",     "request", "response", "header",
    "payload", "record",  "entry",  "table",    "column",   "row",     "key",      "value",
    "hash",    "map",     "set",    "count",    "size",     "length",  "offset",   "limit",
    "timeout", "retry",   "error",  "status",   "state",    "event",   "handler",  "callback",
    "worker",  "thread",  "lock",   "signal",   "timer",    "clock",   "budget",   "batch",
    "job",     "task",    "pool",   "arena",    "block",    "page",    "frame",    "packet",
    "message", "channel", "client", "server",   "store",    "schema",  "model",    "layer",
    "weight",  "tensor",  "score",  "rank",     "query",    "result",  "filter",   "match",
    "pattern", "range",   "window", "cursor",   "snapshot", "journal", "trace",    "metric",
    "counter", "sample",  "level",  "pressure", "memory",   "region",  "segment",  "bitmap",
    "flag",    "mask",    "mode",   "kind",     "name",     "label",   "version",  "digest",
    "account", "invoice", "order",  "product",  "cart",     "price",   "tax",      "address",
    "image",   "pixel",   "color",  "font",     "glyph",    "layout",  "widget",   "button",
};
static const char *const verbs[] = {
    "read",     "write",    "open",    "close",   "parse",    "format",   "update",   "insert",
    "remove",   "find",     "lookup",  "merge",   "split",    "flush",    "sync",     "load",
    "save",     "init",     "release", "reset",   "grow",     "shrink",   "compute",  "apply",
    "check",    "validate", "resolve", "emit",    "collect",  "scan",     "walk",     "visit",
    "sort",     "pack",     "unpack",  "encode",  "decode",   "compress", "schedule", "dispatch",
    "register", "render",   "measure", "convert", "estimate", "refresh",  "evict",    "attach",
};
static const char *const adjectives[] = {
    "pending", "stale",  "dirty",    "shared",  "cached",   "partial", "empty",  "full",
    "sorted",  "unique", "visible",  "hidden",  "remote",   "local",   "active", "expired",
    "current", "next",   "previous", "largest", "smallest", "first",   "last",   "default",
};
static const char *const phrases[] = {
    "so that the caller never sees a half-written state",
    "because the previous owner may still hold a reference",
    "after the lock is taken, in the order the queue gave them",
    "without allocating when the fast path applies",
    "and reports how many were changed",
    "unless the limit was reached, in which case nothing happens",
    "which keeps the common case cheap",
    "as the protocol requires for every message",
    "from the oldest to the newest",
    "and retries once when the first attempt times out",
};

struct gen {
    uint64_t s;
    FILE *f;
    uint64_t lines, functions;
};

static uint64_t gen_next(struct gen *g)
{
    /* splitmix64: fixed, portable output for a seed. */
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned gen_int(struct gen *g, unsigned n)
{
    return (unsigned)(gen_next(g) % n);
}

#define PICK(g, a) (a)[gen_int(g, ELEMENTS(a))]
#define ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static void out(struct gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct gen *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(g->f, fmt, ap);
    va_end(ap);
    for (const char *p = fmt; *p; p++)
        g->lines += *p == '\n';
}

static void c_statement(struct gen *g, const char *obj, const char *arr, const char *n, int depth)
{
    const char *f1 = PICK(g, nouns), *f2 = PICK(g, nouns);

    switch (gen_int(g, depth > 0 ? 6 : 9)) {
    case 0:
        out(g, "    if (%s->%s_%s > %u)\n        %s->%s_%s = %u;\n", obj, PICK(g, adjectives), f1,
            gen_int(g, 4096), obj, PICK(g, adjectives), f1, gen_int(g, 512));
        break;
    case 1:
        out(g, "    %s->%s = %s->%s * %u + %s;\n", obj, f1, obj, f2, 1 + gen_int(g, 31), n);
        break;
    case 2:
        out(g, "    /* %s the %s %s %s. */\n", PICK(g, verbs), PICK(g, adjectives), f1,
            PICK(g, phrases));
        break;
    case 3:
        out(g, "    r = %s_%s(%s, %s, %s / %u);\n    if (r < 0)\n        return r;\n",
            PICK(g, verbs), f1, obj, arr, n, 2 + gen_int(g, 6));
        break;
    case 4:
        out(g, "    log_debug(\"%s %s: %%zu of %%zu\", %s->%s, %s);\n", PICK(g, verbs), f1, obj, f2,
            n);
        break;
    case 5:
        out(g, "    memcpy(%s->%s_%s, %s, %s * sizeof(*%s));\n", obj, PICK(g, adjectives), f1, arr,
            n, arr);
        break;
    case 6:
        out(g, "    for (size_t i = 0; i < %s; i++) {\n", n);
        for (unsigned k = 1 + gen_int(g, 2); k > 0; k--) {
            out(g, "    ");
            c_statement(g, obj, arr, "i", depth + 1);
        }
        out(g, "    }\n");
        break;
    case 7:
        out(g, "    while (%s->%s < %s && !%s->%s) {\n        %s->%s += %s_%s(%s);\n    }\n", obj,
            f1, n, obj, PICK(g, adjectives), obj, f1, PICK(g, verbs), f2, obj);
        break;
    default:
        out(g, "    if (!%s || %s == 0)\n        return -EINVAL;\n", arr, n);
        break;
    }
}

static void c_function(struct gen *g, const char *module)
{
    const char *verb = PICK(g, verbs), *noun = PICK(g, nouns), *type = PICK(g, nouns);
    char obj[32], arr[32], n[32];

    snprintf(obj, sizeof(obj), "%.3s%s", type, gen_int(g, 2) ? "" : "_p");
    snprintf(arr, sizeof(arr), "%ss", PICK(g, nouns));
    snprintf(n, sizeof(n), "n_%s", arr);
    out(g, "/*\n * %c%ss the %s %s of a %s %s.\n * Returns 0 or a negative errno.\n */\n",
        verb[0] - 32, verb + 1, PICK(g, adjectives), noun, type, PICK(g, phrases));
    out(g, "%sint %s_%s_%s(struct %s *%s, const uint32_t *%s, size_t %s)\n{\n    int r = 0;\n\n",
        gen_int(g, 3) ? "static " : "", module, verb, noun, type, obj, arr, n);
    for (unsigned k = 2 + gen_int(g, 3); k > 0; k--)
        c_statement(g, obj, arr, n, 0);
    out(g, "    return r;\n}\n\n");
    g->functions++;
}

static void py_statement(struct gen *g, const char *ind, const char *obj, const char *n, int depth)
{
    const char *f1 = PICK(g, nouns), *f2 = PICK(g, nouns);

    switch (gen_int(g, depth > 0 ? 5 : 8)) {
    case 0:
        out(g, "%sif %s.%s_%s > %u:\n%s    %s.%s = %s.%s // %u\n", ind, obj, PICK(g, adjectives),
            f1, gen_int(g, 4096), ind, obj, f1, obj, f2, 1 + gen_int(g, 15));
        break;
    case 1:
        out(g, "%s%s_%s = self._%s_%s(%s, %s)\n", ind, PICK(g, adjectives), f1, PICK(g, verbs), f2,
            obj, n);
        break;
    case 2:
        /* A comment alone would leave a loop body empty: only at function level. */
        if (depth == 0)
            out(g, "%s# %s the %s %s %s.\n", ind, PICK(g, verbs), PICK(g, adjectives), f1,
                PICK(g, phrases));
        else
            out(g, "%s%s.%s -= 1\n", ind, obj, f1);
        break;
    case 3:
        out(g, "%slog.debug(\"%s %s: %%d\", %s)\n", ind, PICK(g, verbs), f1, n);
        break;
    case 4:
        out(g, "%sself.%s[%s.%s] = %s\n", ind, f1, obj, f2, n);
        break;
    case 5: {
        char inner[16];

        out(g, "%sfor i, %s in enumerate(%s.%ss):\n", ind, f1, obj, f2);
        snprintf(inner, sizeof(inner), "%s    ", ind);
        for (unsigned k = 1 + gen_int(g, 2); k > 0; k--)
            py_statement(g, inner, f1, "i", depth + 1);
        break;
    }
    case 6:
        out(g, "%sif not %s:\n%s    raise ValueError(\"%s: no %s %s\")\n", ind, obj, ind, f1,
            PICK(g, adjectives), f2);
        break;
    default:
        out(g, "%swith self._%s_lock:\n%s    self._%s.append((%s, %s))\n", ind, f1, ind, f2, obj,
            n);
        break;
    }
}

static void py_function(struct gen *g)
{
    const char *verb = PICK(g, verbs), *noun = PICK(g, nouns), *arg = PICK(g, nouns);

    out(g, "    def %s_%s(self, %s, count=%u):\n", verb, noun, arg, gen_int(g, 64));
    out(g, "        \"\"\"%c%s the %s %s %s.\"\"\"\n", verb[0] - 32, verb + 1, PICK(g, adjectives),
        noun, PICK(g, phrases));
    for (unsigned k = 2 + gen_int(g, 3); k > 0; k--)
        py_statement(g, "        ", arg, "count", 0);
    out(g, "        return %s\n\n", arg);
    g->functions++;
}

static void write_one(struct gen *g, const char *path, bool python, unsigned n_functions)
{
    char module[64];

    g->f = fopen(path, "we");
    ASSERT_TRUE(g->f != NULL);
    snprintf(module, sizeof(module), "%s_%s", PICK(g, nouns), PICK(g, nouns));
    if (python) {
        out(g,
            "\"\"\"%s: %s %s helpers.\"\"\"\n\nimport logging\n\nlog = "
            "logging.getLogger(__name__)\n\n\n",
            module, PICK(g, adjectives), PICK(g, nouns));
        out(g, "class %c%s%c%s:\n    \"\"\"Keeps the %s %s %s.\"\"\"\n\n", module[0] - 32,
            module + 1, 'M', "anager", PICK(g, adjectives), PICK(g, nouns), PICK(g, phrases));
        for (unsigned i = 0; i < n_functions; i++)
            py_function(g);
    } else {
        out(g,
            "/* %s.c - %s %s helpers. */\n#include <errno.h>\n#include <stdint.h>\n"
            "#include <string.h>\n\n#include \"%s.h\"\n\n",
            module, PICK(g, adjectives), PICK(g, nouns), module);
        for (unsigned i = 0; i < n_functions; i++)
            c_function(g, module);
    }
    ASSERT_EQ(fclose(g->f), 0);
    g->f = NULL;
}

void corpus_write(const char *dir, unsigned n_files, uint64_t seed, struct corpus_stats *ret)
{
    struct gen g = {.s = seed};
    struct corpus_stats st = {0};

    for (unsigned i = 0; i < n_files; i++) {
        char sub[PATH_MAX], path[PATH_MAX + 64];
        bool python = gen_int(&g, 3) == 0;
        struct stat sb;

        /* 50 files per directory, two levels, like a real source tree. */
        snprintf(sub, sizeof(sub), "%s/pkg%02u", dir, i / 500);
        mkdir(sub, 0755);
        snprintf(sub + strlen(sub), sizeof(sub) - strlen(sub), "/%s%02u", PICK(&g, nouns),
                 (i / 50) % 10);
        mkdir(sub, 0755);
        snprintf(path, sizeof(path), "%s/%s_%s_%u.%s", sub, PICK(&g, verbs), PICK(&g, nouns), i,
                 python ? "py" : "c");
        write_one(&g, path, python, 4 + gen_int(&g, 4));
        ASSERT_EQ(stat(path, &sb), 0);
        st.bytes += (uint64_t)sb.st_size;
    }
    st.files = n_files;
    st.lines = g.lines;
    st.functions = g.functions;
    if (ret)
        *ret = st;
}

/* ---- RPC -------------------------------------------------------------------------------- */

static void copy_str(const msgpack_object *map, const char *key, char *buf, size_t size)
{
    const char *s;
    size_t len;

    buf[0] = '\0';
    if (proto_get_str(map, key, &s, &len) == 0)
        snprintf(buf, size, "%.*s", (int)len, s);
}

bool job_info_parse(const void *msgpack_map, struct job_info *ret)
{
    const msgpack_object *m = msgpack_map;
    struct job_info j = {0};

    if (m->type != MSGPACK_OBJECT_MAP || proto_get_uint(m, "job", &j.id) < 0)
        return false;
    copy_str(m, "state", j.state, sizeof(j.state));
    copy_str(m, "phase", j.phase, sizeof(j.phase));
    copy_str(m, "message", j.message, sizeof(j.message));
    (void)proto_get_uint(m, "files_done", &j.files_done);
    (void)proto_get_uint(m, "files_total", &j.files_total);
    (void)proto_get_uint(m, "chunks_done", &j.chunks_done);
    (void)proto_get_uint(m, "chunks_total", &j.chunks_total);
    (void)proto_get_uint(m, "checkpoints", &j.checkpoints);
    (void)proto_get_uint(m, "batch_size", &j.batch_size);
    (void)proto_get_bool(m, "resumed", &j.resumed);
    (void)proto_get_int(m, "error_code", &j.error_code);
    *ret = j;
    return true;
}

void index_call(struct tclient *c, const char *path, bool wait, int timeout_ms,
                struct job_info *ret)
{
    uint32_t id = tclient_next_id(c);
    msgpack_packer *pk = tclient_begin(c, id, "index", 2);
    struct proto_msg *m = NULL;

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_str(pk, "path", path));
    ASSERT_OK(proto_pack_kv_bool(pk, "wait", wait));
    ASSERT_OK(tclient_end(c));
    ASSERT_OK(tclient_read_response(c, timeout_ms, NULL, &m));
    ASSERT_EQ(m->id, id);
    if (tmsg_error_code(m) != 0) {
        const char *msg = "";
        int64_t code = 0;

        (void)proto_msg_get_error(m, &code, &msg, NULL);
        test_fail(__FILE__, __LINE__, "index %s: error %lld: %s", path, (long long)code, msg);
    }
    ASSERT_TRUE(job_info_parse(&m->result, ret));
    proto_msg_free(m);
}

bool jobs_find(struct tclient *c, uint64_t id, struct job_info *ret)
{
    struct proto_msg *m = NULL;
    const msgpack_object *list;
    bool found = false;

    ASSERT_OK(tclient_call(c, "jobs", &m));
    ASSERT_EQ(tmsg_error_code(m), 0);
    list = proto_map_get(&m->result, "jobs");
    ASSERT_TRUE(list != NULL && list->type == MSGPACK_OBJECT_ARRAY);
    for (uint32_t i = 0; i < list->via.array.size && !found; i++) {
        struct job_info j;

        if (job_info_parse(&list->via.array.ptr[i], &j) && j.id == id) {
            *ret = j;
            found = true;
        }
    }
    proto_msg_free(m);
    return found;
}

struct proto_msg *search_call(struct tclient *c, const char *repo, const char *query, unsigned k,
                              const msgpack_object **ret_results)
{
    uint32_t id = tclient_next_id(c);
    msgpack_packer *pk = tclient_begin(c, id, "search", 3);
    struct proto_msg *m = NULL;
    const msgpack_object *results;

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_kv_str(pk, "query", query));
    ASSERT_OK(proto_pack_kv_str(pk, "repo", repo));
    ASSERT_OK(proto_pack_kv_uint(pk, "k", k));
    ASSERT_OK(tclient_end(c));
    ASSERT_OK(tclient_read_response(c, 60000, NULL, &m));
    ASSERT_EQ(m->id, id);
    ASSERT_EQ(tmsg_error_code(m), 0);
    results = proto_map_get(&m->result, "results");
    ASSERT_TRUE(results != NULL && results->type == MSGPACK_OBJECT_ARRAY);
    ASSERT_LE(results->via.array.size, k);
    *ret_results = results;
    return m;
}

size_t search_count(struct tclient *c, const char *repo, const char *query, unsigned k)
{
    const msgpack_object *results;
    struct proto_msg *m = search_call(c, repo, query, k, &results);
    size_t n = results->via.array.size;

    proto_msg_free(m);
    return n;
}
