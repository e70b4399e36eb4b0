/*
 * model.c - load a sentence-transformers BERT model directory: configuration files (see model.h)
 * and the weights in model.safetensors, bound by the names transformers' BertModel uses:
 *
 *   embeddings.word_embeddings.weight                         [vocab, H]
 *   embeddings.position_embeddings.weight                     [max_position, H]
 *   embeddings.token_type_embeddings.weight                   [type_vocab, H]
 *   embeddings.LayerNorm.{weight,bias}                        [H]
 *   encoder.layer.N.attention.self.{query,key,value}.{weight,bias}   [H,H], [H]
 *   encoder.layer.N.attention.output.dense.{weight,bias}             [H,H], [H]
 *   encoder.layer.N.attention.output.LayerNorm.{weight,bias}         [H]
 *   encoder.layer.N.intermediate.dense.{weight,bias}                 [I,H], [I]
 *   encoder.layer.N.output.dense.{weight,bias}                       [H,I], [H]
 *   encoder.layer.N.output.LayerNorm.{weight,bias}                   [H]
 *
 * optionally prefixed "bert." (checkpoints saved from BertFor* heads), LayerNorm parameters
 * possibly named gamma/beta (old TF conversions).  Other tensors (pooler.*, position_ids) are
 * ignored.
 */
#include "model.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"

/* Sets *errmsg (when not NULL) to a malloc'd message and returns `r`. */
_printf_(3, 4) static int fail(char **errmsg, int r, const char *fmt, ...)
{
    va_list ap;

    if (!errmsg)
        return r;
    va_start(ap, fmt);
    if (vasprintf(errmsg, fmt, ap) < 0)
        *errmsg = NULL;
    va_end(ap);
    return r;
}

const char *model_pooling_name(enum model_pooling pooling)
{
    switch (pooling) {
    case MODEL_POOLING_MEAN:
        return "mean";
    case MODEL_POOLING_CLS:
        return "cls";
    }
    return "?";
}

static char *join(const char *a, const char *b)
{
    char *p;

    if (!b || !*b)
        return strdup(a);
    if (asprintf(&p, "%s/%s", a, b) < 0)
        return NULL;
    return p;
}

/*
 * Parse a JSON file.  A missing optional file gives 0 and *ret = NULL; a missing required one
 * gives -ENOENT with a hint.
 */
static int load_json(const char *path, bool optional, json_t **ret, char **errmsg)
{
    json_error_t jerr;
    struct stat sb;
    json_t *j;

    if (stat(path, &sb) < 0) {
        if (errno == ENOENT && optional) {
            *ret = NULL;
            return 0;
        }
        return fail(errmsg, -errno, "%s: %s%s", path, strerror(errno),
                    errno == ENOENT ? " (is the model installed? see scripts/fetch-model)" : "");
    }
    j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return fail(errmsg, -EBADMSG, "%s: invalid JSON: %s (line %d)", path, jerr.text, jerr.line);
    *ret = j;
    return 0;
}

/*
 * Read an integer field in [lo, hi].  A missing field takes `def` when def >= 0, else it is an
 * error.
 */
static int get_uint(const json_t *obj, const char *file, const char *key, long long def,
                    long long lo, long long hi, unsigned *ret, char **errmsg)
{
    json_t *v = json_object_get(obj, key);
    long long x;

    if (!v) {
        if (def < 0)
            return fail(errmsg, -EBADMSG, "%s: missing \"%s\"", file, key);
        *ret = (unsigned)def;
        return 0;
    }
    if (!json_is_integer(v))
        return fail(errmsg, -EBADMSG, "%s: \"%s\" is not an integer", file, key);
    x = json_integer_value(v);
    if (x < lo || x > hi)
        return fail(errmsg, -EBADMSG, "%s: \"%s\" is %lld, expected %lld..%lld", file, key, x, lo,
                    hi);
    *ret = (unsigned)x;
    return 0;
}

static int get_string(const json_t *obj, const char *file, const char *key, const char *def,
                      const char **ret, char **errmsg)
{
    json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v)) {
        *ret = def;
        return 0;
    }
    if (!json_is_string(v))
        return fail(errmsg, -EBADMSG, "%s: \"%s\" is not a string", file, key);
    *ret = json_string_value(v);
    return 0;
}

/* The class name at the end of a dotted module type ("sentence_transformers.models.Pooling"). */
static const char *type_tail(const char *type)
{
    const char *dot = strrchr(type, '.');
    return dot ? dot + 1 : type;
}

/* A module path from modules.json must stay inside the model directory. */
static bool path_is_safe(const char *p)
{
    if (p[0] == '/')
        return false;
    for (const char *s = p; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return false;
        s += n;
        s += *s == '/';
    }
    return true;
}

struct module_paths {
    char *transformer; /* relative, "" for the root */
    char *pooling;     /* relative, NULL when there is no Pooling module */
    bool normalize;
};

static void module_paths_release(struct module_paths *mp)
{
    free(mp->transformer);
    free(mp->pooling);
}

static int parse_modules(const char *dir, struct module_paths *ret, char **errmsg)
{
    struct module_paths mp = {0};
    char *file = join(dir, "modules.json");
    json_t *j = NULL, *m;
    size_t i;
    int r = 0;

    if (!file)
        return -ENOMEM;
    r = load_json(file, true, &j, errmsg);
    if (r < 0)
        goto out;
    if (!j) {
        /* No modules.json: what sentence-transformers builds around a plain HF checkpoint. */
        mp.transformer = strdup("");
        mp.pooling = strdup("1_Pooling");
        if (!mp.transformer || !mp.pooling)
            r = -ENOMEM;
        goto out;
    }
    if (!json_is_array(j)) {
        r = fail(errmsg, -EBADMSG, "%s: not a JSON array", file);
        goto out;
    }
    json_array_foreach(j, i, m)
    {
        const char *type = NULL, *path = NULL, *tail;
        char **slot = NULL;

        if (!json_is_object(m)) {
            r = fail(errmsg, -EBADMSG, "%s: entry %zu is not an object", file, i);
            goto out;
        }
        r = get_string(m, file, "type", NULL, &type, errmsg);
        if (r >= 0)
            r = get_string(m, file, "path", "", &path, errmsg);
        if (r < 0)
            goto out;
        if (!type) {
            r = fail(errmsg, -EBADMSG, "%s: entry %zu has no \"type\"", file, i);
            goto out;
        }
        if (!path_is_safe(path)) {
            r = fail(errmsg, -EBADMSG, "%s: module path \"%s\" leaves the model directory", file,
                     path);
            goto out;
        }
        tail = type_tail(type);
        if (strcmp(tail, "Transformer") == 0 && i == 0)
            slot = &mp.transformer;
        else if (strcmp(tail, "Pooling") == 0 && mp.transformer && !mp.pooling)
            slot = &mp.pooling;
        else if (strcmp(tail, "Normalize") == 0 && mp.pooling && !mp.normalize)
            mp.normalize = true;
        else {
            r = fail(errmsg, -ENOTSUP,
                     "%s: module %zu \"%s\" is not supported here (only Transformer, Pooling, "
                     "Normalize, in that order)",
                     file, i, type);
            goto out;
        }
        if (slot && !(*slot = strdup(path))) {
            r = -ENOMEM;
            goto out;
        }
    }
    if (!mp.transformer || !mp.pooling) {
        r = fail(errmsg, -ENOTSUP, "%s: needs a Transformer and a Pooling module", file);
        goto out;
    }
out:
    json_decref(j);
    free(file);
    if (r < 0) {
        module_paths_release(&mp);
        return r;
    }
    *ret = mp;
    return 0;
}

static int parse_bert_config(const char *tdir, struct model_config *c, char **errmsg)
{
    char *file = join(tdir, "config.json");
    const char *s = NULL;
    json_t *j = NULL, *v;
    int r;

    if (!file)
        return -ENOMEM;
    r = load_json(file, false, &j, errmsg);
    if (r < 0)
        goto out;
    if (!json_is_object(j)) {
        r = fail(errmsg, -EBADMSG, "%s: not a JSON object", file);
        goto out;
    }
    r = get_string(j, file, "model_type", "bert", &s, errmsg);
    if (r < 0)
        goto out;
    if (strcmp(s, "bert") != 0) {
        r = fail(errmsg, -ENOTSUP, "%s: model_type \"%s\" is not supported (only bert)", file, s);
        goto out;
    }
    /* HF's "gelu" is the exact erf form; tanh approximations ("gelu_new", "gelu_pytorch_tanh")
     * and other activations would silently change the vectors, so they are refused. */
    r = get_string(j, file, "hidden_act", "gelu", &s, errmsg);
    if (r < 0)
        goto out;
    if (strcmp(s, "gelu") != 0) {
        r = fail(errmsg, -ENOTSUP,
                 "%s: hidden_act \"%s\" is not supported (only \"gelu\", the erf form)", file, s);
        goto out;
    }
    r = get_string(j, file, "position_embedding_type", "absolute", &s, errmsg);
    if (r < 0)
        goto out;
    if (strcmp(s, "absolute") != 0) {
        r = fail(errmsg, -ENOTSUP,
                 "%s: position_embedding_type \"%s\" is not supported (only absolute)", file, s);
        goto out;
    }
    if ((r = get_uint(j, file, "hidden_size", -1, 1, 16384, &c->hidden, errmsg)) < 0 ||
        (r = get_uint(j, file, "num_hidden_layers", -1, 1, 256, &c->n_layers, errmsg)) < 0 ||
        (r = get_uint(j, file, "num_attention_heads", -1, 1, 1024, &c->n_heads, errmsg)) < 0 ||
        (r = get_uint(j, file, "intermediate_size", -1, 1, 65536, &c->intermediate, errmsg)) < 0 ||
        (r = get_uint(j, file, "vocab_size", -1, 1, 1 << 24, &c->vocab_size, errmsg)) < 0 ||
        (r = get_uint(j, file, "max_position_embeddings", -1, 1, 1 << 16, &c->max_position,
                      errmsg)) < 0 ||
        (r = get_uint(j, file, "type_vocab_size", 2, 1, 1024, &c->type_vocab, errmsg)) < 0)
        goto out;
    if (c->hidden % c->n_heads != 0) {
        r = fail(errmsg, -EBADMSG, "%s: hidden_size %u is not a multiple of num_attention_heads %u",
                 file, c->hidden, c->n_heads);
        goto out;
    }
    c->head_dim = c->hidden / c->n_heads;
    c->ln_eps = 1e-12f;
    v = json_object_get(j, "layer_norm_eps");
    if (v) {
        double eps = json_number_value(v);

        if (!json_is_number(v) || !(eps > 0 && eps < 1)) {
            r = fail(errmsg, -EBADMSG, "%s: layer_norm_eps must be a number in (0, 1)", file);
            goto out;
        }
        c->ln_eps = (float)eps;
    }
out:
    json_decref(j);
    free(file);
    return r;
}

/*
 * max_seq_length, as sentence-transformers decides it: sentence_bert_config.json's
 * "max_seq_length" (every classic checkpoint, e.g. 256 for all-MiniLM-L6-v2, which its
 * tokenizer_config.json contradicts with 512); else, as sentence-transformers >= 6 saves it,
 * tokenizer_config.json's "model_max_length"; else max_position_embeddings.  A length above
 * max_position_embeddings (transformers writes 1e30 for "unlimited") falls back to it.
 */
static int parse_st_config(const char *tdir, struct model_config *c, char **errmsg)
{
    char *file = join(tdir, "sentence_bert_config.json");
    json_t *j = NULL, *v;
    json_error_t jerr;
    int r;

    if (!file)
        return -ENOMEM;
    c->max_seq_length = c->max_position;
    r = load_json(file, true, &j, errmsg);
    if (r < 0)
        goto out;
    if (j && !json_is_object(j)) {
        r = fail(errmsg, -EBADMSG, "%s: not a JSON object", file);
        goto out;
    }
    if (j && json_object_get(j, "max_seq_length")) {
        /* [CLS] and [SEP] need two positions. */
        r = get_uint(j, file, "max_seq_length", -1, 2, c->max_position, &c->max_seq_length, errmsg);
        goto out;
    }
    json_decref(j);
    free(file);
    file = join(tdir, "tokenizer_config.json");
    if (!file)
        return -ENOMEM;
    /* Integers as reals: 1e30-style sentinels do not fit jansson's integers. */
    j = json_load_file(file, JSON_DECODE_INT_AS_REAL, &jerr);
    v = json_object_get(j, "model_max_length");
    if (json_is_number(v) && json_number_value(v) >= 2 && json_number_value(v) <= c->max_position)
        c->max_seq_length = (unsigned)json_number_value(v);
out:
    json_decref(j);
    free(file);
    return r;
}

static int parse_pooling(const char *dir, const char *pdir, struct model_config *c, char **errmsg)
{
    static const struct {
        const char *key, *name;
    } modes[] = {
        {"pooling_mode_cls_token", "cls"},
        {"pooling_mode_mean_tokens", "mean"},
        {"pooling_mode_max_tokens", "max"},
        {"pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"},
        {"pooling_mode_weightedmean_tokens", "weightedmean"},
        {"pooling_mode_lasttoken", "lasttoken"},
    };
    char *sub = join(dir, pdir), *file = sub ? join(sub, "config.json") : NULL;
    const char *mode = NULL;
    unsigned dim = 0;
    json_t *j = NULL, *v;
    int r;

    if (!file) {
        r = -ENOMEM;
        goto out;
    }
    r = load_json(file, false, &j, errmsg);
    if (r < 0)
        goto out;
    if (!json_is_object(j)) {
        r = fail(errmsg, -EBADMSG, "%s: not a JSON object", file);
        goto out;
    }
    /* sentence-transformers >= 5 may write one "pooling_mode" string instead of flags. */
    r = get_string(j, file, "pooling_mode", NULL, &mode, errmsg);
    if (r < 0)
        goto out;
    if (!mode) {
        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
            v = json_object_get(j, modes[i].key);
            if (v && !json_is_boolean(v)) {
                r = fail(errmsg, -EBADMSG, "%s: \"%s\" is not a boolean", file, modes[i].key);
                goto out;
            }
            if (!json_is_true(v))
                continue;
            if (mode) {
                r = fail(errmsg, -ENOTSUP, "%s: pooling modes %s and %s combined are not supported",
                         file, mode, modes[i].name);
                goto out;
            }
            mode = modes[i].name;
        }
        if (!mode) {
            r = fail(errmsg, -EBADMSG, "%s: no pooling mode is enabled", file);
            goto out;
        }
    }
    /* mode is set here: the flags loop above fails when it finds none (cppcheck cannot see). */
    /* cppcheck-suppress nullPointerRedundantCheck */
    if (strcmp(mode, "mean") == 0)
        c->pooling = MODEL_POOLING_MEAN;
    else if (strcmp(mode, "cls") == 0)
        c->pooling = MODEL_POOLING_CLS;
    else {
        r = fail(errmsg, -ENOTSUP, "%s: pooling mode \"%s\" is not supported (only mean and cls)",
                 file, mode);
        goto out;
    }
    /* "embedding_dimension" since sentence-transformers 6. */
    r = get_uint(j, file,
                 json_object_get(j, "word_embedding_dimension") ? "word_embedding_dimension"
                                                                : "embedding_dimension",
                 c->hidden, 1, 1 << 20, &dim, errmsg);
    if (r < 0)
        goto out;
    if (dim != c->hidden) {
        r = fail(errmsg, -EBADMSG, "%s: word_embedding_dimension %u does not match hidden_size %u",
                 file, dim, c->hidden);
        goto out;
    }
out:
    json_decref(j);
    free(file);
    free(sub);
    return r;
}

/* Everything from the config files; *ret_tdir (malloc'd) is the Transformer module directory. */
static int config_load(const char *dir, struct model_config *ret, char **ret_tdir, char **errmsg)
{
    struct module_paths mp = {0};
    struct model_config c = {0};
    char *tdir;
    int r;

    r = parse_modules(dir, &mp, errmsg);
    if (r < 0)
        return r;
    tdir = join(dir, mp.transformer);
    if (!tdir) {
        r = -ENOMEM;
        goto out;
    }
    c.normalize = mp.normalize;
    r = parse_bert_config(tdir, &c, errmsg);
    if (r >= 0)
        r = parse_st_config(tdir, &c, errmsg);
    if (r >= 0)
        r = parse_pooling(dir, mp.pooling, &c, errmsg);
    if (r < 0) {
        free(tdir);
        goto out;
    }
    *ret = c;
    if (ret_tdir)
        *ret_tdir = tdir;
    else
        free(tdir);
out:
    module_paths_release(&mp);
    return r;
}

int model_config_load(const char *dir, struct model_config *ret, char **errmsg)
{
    return config_load(dir, ret, NULL, errmsg);
}

/* Binds tensors by name with the accepted variants, checking dtype and shape. */
struct binder {
    const struct safetensors *st;
    const char *prefix; /* "" or "bert." */
    char **errmsg;
};

/*
 * Find prefix+name (for LayerNorm parameters also the gamma/beta spelling), F32, with exactly
 * the given shape (d1 == 0 for a vector).
 */
_printf_(5, 6) static int bind(struct binder *b, const void **ret, unsigned long d0,
                               unsigned long d1, const char *fmt, ...)
{
    const struct safetensors_tensor *t;
    char name[256], full[272], alt[272];
    const char *base = safetensors_basename(b->st);
    unsigned nd = d1 ? 2 : 1;
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "%s%s", b->prefix, name);
    t = safetensors_find(b->st, full);
    n = strlen(full);
    if (!t && strstr(full, "LayerNorm.") && n > 7) {
        /* TF-converted checkpoints name LayerNorm parameters gamma/beta. */
        if (strcmp(full + n - 7, ".weight") == 0)
            snprintf(alt, sizeof(alt), "%.*s.gamma", (int)(n - 7), full);
        else
            snprintf(alt, sizeof(alt), "%.*s.beta", (int)(n - 5), full);
        t = safetensors_find(b->st, alt);
    }
    if (!t)
        return fail(b->errmsg, -EBADMSG, "%s: tensor %s is missing", base, full);
    if (t->dtype != SAFETENSORS_DTYPE_F32)
        return fail(b->errmsg, -ENOTSUP,
                    "%s: tensor %s: dtype %s, expected F32 (only fp32 checkpoints are supported)",
                    base, t->name, safetensors_dtype_name(t->dtype));
    if (t->n_dims != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char got[96] = "[";
        size_t k = 1;

        for (unsigned i = 0; i < t->n_dims && k < sizeof(got); i++)
            k += (size_t)snprintf(got + k, sizeof(got) - k, "%s%llu", i ? "," : "",
                                  (unsigned long long)t->shape[i]);
        if (k < sizeof(got))
            snprintf(got + k, sizeof(got) - k, "]");
        if (nd == 2)
            return fail(b->errmsg, -EBADMSG, "%s: tensor %s: shape %s, expected [%lu,%lu]", base,
                        t->name, got, d0, d1);
        return fail(b->errmsg, -EBADMSG, "%s: tensor %s: shape %s, expected [%lu]", base, t->name,
                    got, d0);
    }
    *ret = t->data;
    return 0;
}

static int bind_weights(struct model *m, char **errmsg)
{
    const struct model_config *c = &m->config;
    struct binder b = {.st = m->weights, .prefix = "", .errmsg = errmsg};
    unsigned long H = c->hidden, I = c->intermediate;
    int r;

    if (!safetensors_find(m->weights, "embeddings.word_embeddings.weight") &&
        safetensors_find(m->weights, "bert.embeddings.word_embeddings.weight"))
        b.prefix = "bert.";

    if ((r = bind(&b, &m->word_emb, c->vocab_size, H, "embeddings.word_embeddings.weight")) < 0 ||
        (r = bind(&b, &m->pos_emb, c->max_position, H, "embeddings.position_embeddings.weight")) <
            0 ||
        (r = bind(&b, &m->type_emb, c->type_vocab, H, "embeddings.token_type_embeddings.weight")) <
            0 ||
        (r = bind(&b, &m->emb_ln_g, H, 0, "embeddings.LayerNorm.weight")) < 0 ||
        (r = bind(&b, &m->emb_ln_b, H, 0, "embeddings.LayerNorm.bias")) < 0)
        return r;

    for (unsigned i = 0; i < c->n_layers; i++) {
        struct model_layer_weights *l = &m->layers[i];
        const char *p = "encoder.layer";

        if ((r = bind(&b, &l->q_w, H, H, "%s.%u.attention.self.query.weight", p, i)) < 0 ||
            (r = bind(&b, &l->q_b, H, 0, "%s.%u.attention.self.query.bias", p, i)) < 0 ||
            (r = bind(&b, &l->k_w, H, H, "%s.%u.attention.self.key.weight", p, i)) < 0 ||
            (r = bind(&b, &l->k_b, H, 0, "%s.%u.attention.self.key.bias", p, i)) < 0 ||
            (r = bind(&b, &l->v_w, H, H, "%s.%u.attention.self.value.weight", p, i)) < 0 ||
            (r = bind(&b, &l->v_b, H, 0, "%s.%u.attention.self.value.bias", p, i)) < 0 ||
            (r = bind(&b, &l->o_w, H, H, "%s.%u.attention.output.dense.weight", p, i)) < 0 ||
            (r = bind(&b, &l->o_b, H, 0, "%s.%u.attention.output.dense.bias", p, i)) < 0 ||
            (r = bind(&b, &l->ln1_g, H, 0, "%s.%u.attention.output.LayerNorm.weight", p, i)) < 0 ||
            (r = bind(&b, &l->ln1_b, H, 0, "%s.%u.attention.output.LayerNorm.bias", p, i)) < 0 ||
            (r = bind(&b, &l->up_w, I, H, "%s.%u.intermediate.dense.weight", p, i)) < 0 ||
            (r = bind(&b, &l->up_b, I, 0, "%s.%u.intermediate.dense.bias", p, i)) < 0 ||
            (r = bind(&b, &l->down_w, H, I, "%s.%u.output.dense.weight", p, i)) < 0 ||
            (r = bind(&b, &l->down_b, H, 0, "%s.%u.output.dense.bias", p, i)) < 0 ||
            (r = bind(&b, &l->ln2_g, H, 0, "%s.%u.output.LayerNorm.weight", p, i)) < 0 ||
            (r = bind(&b, &l->ln2_b, H, 0, "%s.%u.output.LayerNorm.bias", p, i)) < 0)
            return r;
    }
    return 0;
}

int model_load(const char *dir, struct model **ret, char **errmsg)
{
    struct model *m;
    char *path;
    int r;

    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->dir = strdup(dir);
    if (!m->dir) {
        r = -ENOMEM;
        goto out_free;
    }
    r = config_load(dir, &m->config, &m->transformer_dir, errmsg);
    if (r < 0)
        goto out_free;
    path = join(m->transformer_dir, "model.safetensors");
    if (!path) {
        r = -ENOMEM;
        goto out_free;
    }
    r = safetensors_open(path, &m->weights, errmsg);
    free(path);
    if (r < 0)
        goto out_free;
    m->layers = calloc(m->config.n_layers, sizeof(*m->layers));
    if (!m->layers) {
        r = -ENOMEM;
        goto out_free;
    }
    r = bind_weights(m, errmsg);
    if (r < 0)
        goto out_free;
    *ret = m;
    return 0;

out_free:
    model_free(m);
    return r;
}

struct model *model_free(struct model *m)
{
    if (!m)
        return NULL;
    safetensors_free(m->weights);
    free(m->layers);
    free(m->transformer_dir);
    free(m->dir);
    free(m);
    return NULL;
}
