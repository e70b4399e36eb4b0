/*
 * bench/embed.c - the coarch side of the embedding benchmark (bench/embed, issue 3): load a
 * model with the embedder at a given precision and thread count, embed every text of a file,
 * report the time, write the vectors.
 *
 * Input: JSON lines, one text per line as {"text": "..."} (other keys are ignored).  Output:
 * the vectors as little-endian float32, row i for line i (n x dim), and on stdout one JSON
 * object with the timings, so the script that drives every engine can compare them:
 *
 *   {"precision": "int8", "threads": 2, "texts": 2000, "tokens": 301234, "dim": 384,
 *    "load_s": 0.31, "runs": [{"wall_s": 12.3, "cpu_s": 24.1}, ...]}
 *
 * What is timed: embedder_embed() over all texts (tokenize, length-sort, batch, forward, pool),
 * i.e. text in, vectors out, as coarchd calls it.  Model loading and one untimed warm-up pass
 * over the first 64 texts are not.  cpu_s is the process CPU time of that call (all threads),
 * which is what to compare on a shared machine.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu.h"
#include "embedder.h"
#include "macro.h"
#include "tokenizer.h"

struct texts {
    char **s;
    size_t *len;
    size_t n, cap;
};

static void texts_release(struct texts *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->s[i]);
    free(t->s);
    free(t->len);
}

static int texts_load(const char *path, struct texts *t)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    FILE *f = fopen(path, "re");
    int r = 0;

    if (!f) {
        fprintf(stderr, "bench-embed: %s: %s\n", path, strerror(errno));
        return -errno;
    }
    while (getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err), *text;

        lineno++;
        text = j ? json_object_get(j, "text") : NULL;
        if (!json_is_string(text)) {
            fprintf(stderr, "bench-embed: %s:%zu: expected {\"text\": string}%s%s\n", path, lineno,
                    j ? "" : ": ", j ? "" : err.text);
            json_decref(j);
            r = -EBADMSG;
            break;
        }
        if (t->n == t->cap) {
            size_t ncap = t->cap ? 2 * t->cap : 1024;
            char **s = realloc(t->s, ncap * sizeof(*s));
            size_t *len = s ? realloc(t->len, ncap * sizeof(*len)) : NULL;

            if (s)
                t->s = s;
            if (!s || !len) {
                json_decref(j);
                r = -ENOMEM;
                break;
            }
            t->len = len;
            t->cap = ncap;
        }
        t->len[t->n] = json_string_length(text);
        t->s[t->n] = malloc(t->len[t->n] + 1);
        if (!t->s[t->n]) {
            json_decref(j);
            r = -ENOMEM;
            break;
        }
        memcpy(t->s[t->n], json_string_value(text), t->len[t->n] + 1);
        t->n++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    return r;
}

static double seconds(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Every text as the embedder would tokenize it (truncated to the model's length). */
static int tokenize_all(struct embedder *e, const struct texts *t, uint32_t ***ret_ids,
                        uint32_t **ret_lens)
{
    const struct tokenizer *tok = embedder_tokenizer(e);
    uint32_t **ids = calloc(t->n, sizeof(*ids)), *lens = calloc(t->n, sizeof(*lens));
    struct tokens toks;
    int r = 0;

    tokens_init(&toks, false);
    for (size_t i = 0; r >= 0 && ids && lens && i < t->n; i++) {
        r = tokenizer_encode(tok, t->s[i], t->len[i], embedder_max_seq_length(e), &toks);
        if (r < 0)
            break;
        ids[i] = malloc(toks.n * sizeof(uint32_t));
        if (!ids[i]) {
            r = -ENOMEM;
            break;
        }
        memcpy(ids[i], toks.ids, toks.n * sizeof(uint32_t));
        lens[i] = toks.n;
    }
    tokens_release(&toks);
    if (!ids || !lens)
        r = -ENOMEM;
    *ret_ids = ids;
    *ret_lens = lens;
    return r < 0 ? r : 0;
}

static void usage(FILE *f)
{
    fputs("usage: bench-embed --model DIR --texts FILE.jsonl [--out VECTORS.f32]\n"
          "                   [--backend cpu|cuda] [--precision fp32|bf16|int8] [--threads N]\n"
          "                   [--repeat N] [--batch-tokens N] [--pretokenized]\n"
          "Embeds every {\"text\": ...} line of FILE with coarch's embedder and prints the\n"
          "timings as JSON; see bench/README.md.  --pretokenized tokenizes once before the\n"
          "timed runs, which then go from token ids to vectors (the backend's own speed).\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"texts", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},
        {"precision", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 'j'},
        {"repeat", required_argument, NULL, 'r'},
        {"batch-tokens", required_argument, NULL, 'b'},
        {"backend", required_argument, NULL, 'B'},
        {"pretokenized", no_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *texts_path = NULL, *out_path = NULL;
    struct embedder_options eo = {.backend = "cpu", .precision = "fp32"};
    struct embedder_stats st0, st1;
    struct embedder *e = NULL;
    struct texts t = {0};
    unsigned repeat = 1;
    bool pretokenized = false;
    uint32_t **ids = NULL, *lens = NULL;
    char *msg = NULL;
    float *vec = NULL;
    double t0, load_s;
    int c, r;

    embed_cpu_setup_process(argv);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 't':
            texts_path = optarg;
            break;
        case 'o':
            out_path = optarg;
            break;
        case 'p':
            eo.precision = optarg;
            break;
        case 'j':
            eo.n_threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            repeat = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            eo.max_batch_tokens = strtoul(optarg, NULL, 10);
            break;
        case 'B':
            eo.backend = optarg;
            break;
        case 'T':
            pretokenized = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model || !texts_path || optind != argc || repeat == 0) {
        usage(stderr);
        return 2;
    }
    r = texts_load(texts_path, &t);
    if (r < 0)
        goto out;
    if (t.n == 0) {
        fprintf(stderr, "bench-embed: %s has no texts\n", texts_path);
        r = -EINVAL;
        goto out;
    }

    t0 = seconds(CLOCK_MONOTONIC);
    r = embedder_load(model, &eo, &e, &msg);
    if (r < 0) {
        fprintf(stderr, "bench-embed: %s\n", msg ? msg : strerror(-r));
        goto out;
    }
    load_s = seconds(CLOCK_MONOTONIC) - t0;
    vec = array_alloc(t.n, embedder_dim(e) * sizeof(float));
    if (!vec) {
        r = -ENOMEM;
        goto out;
    }
    /* Warm-up: workspace, weight pages, thread start-up. */
    r = embedder_embed(e, (const char *const *)t.s, t.len, MIN(t.n, (size_t)64), vec);
    if (r < 0)
        goto out_embed;

    if (pretokenized) {
        r = tokenize_all(e, &t, &ids, &lens);
        if (r < 0)
            goto out_embed;
    }
    printf("{\"backend\": \"%s\", \"precision\": \"%s\", \"threads\": %u, \"texts\": %zu, "
           "\"dim\": %u, \"pretokenized\": %s, \"load_s\": %.4f, \"runs\": [",
           embedder_backend_name(e), embedder_precision(e), eo.n_threads, t.n, embedder_dim(e),
           pretokenized ? "true" : "false", load_s);
    embedder_get_stats(e, &st0);
    for (unsigned i = 0; i < repeat; i++) {
        double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID), w, cpu;

        r = pretokenized ? embedder_embed_tokens(e, (const uint32_t *const *)ids, lens, t.n, vec)
                         : embedder_embed(e, (const char *const *)t.s, t.len, t.n, vec);
        w = seconds(CLOCK_MONOTONIC) - w0;
        cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (r < 0)
            goto out_embed;
        printf("%s{\"wall_s\": %.4f, \"cpu_s\": %.4f}", i ? ", " : "", w, cpu);
        fflush(stdout);
    }
    embedder_get_stats(e, &st1);
    printf("], \"tokens\": %llu}\n", (unsigned long long)((st1.tokens - st0.tokens) / repeat));

    if (out_path) {
        FILE *f = fopen(out_path, "we");
        size_t n = t.n * embedder_dim(e);
        bool ok = f && fwrite(vec, sizeof(float), n, f) == n;

        if (f && fclose(f) != 0)
            ok = false;
        if (!ok) {
            fprintf(stderr, "bench-embed: cannot write %s: %s\n", out_path, strerror(errno));
            r = -EIO;
        }
    }
    goto out;

out_embed:
    fprintf(stderr, "bench-embed: embedding failed: %s\n", strerror(-r));
out:
    for (size_t i = 0; ids && i < t.n; i++)
        free(ids[i]);
    free(ids);
    free(lens);
    free(msg);
    free(vec);
    embedder_free(e);
    texts_release(&t);
    return r < 0 ? 1 : 0;
}
