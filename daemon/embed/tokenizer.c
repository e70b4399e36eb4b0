/*
 * tokenizer.c - BERT WordPiece tokenizer (see tokenizer.h for the contract).
 *
 * DESIGN
 *
 * The reference (HuggingFace `tokenizers`) runs whole-string passes: split out added tokens,
 * then clean_text, CJK padding, NFD + drop Mn, lowercase, then the pre-tokenizer, then WordPiece
 * on each word, then the post-processor, then truncation.  Every one of these passes is a
 * per-character map except NFD's canonical reordering, so we run them as one left-to-right
 * stream: each input character goes through the normalizer stages and lands in the current word;
 * a whitespace or punctuation character ends the word, which WordPiece turns into ids at once.
 * Because ids come out in order and each word's ids are final when the word ends, stopping at
 * the max_tokens-th id gives exactly "encode everything, then truncate", and a 10 MB line costs
 * only the prefix that fits.
 *
 * NFD reordering: canonical ordering sorts each run of non-starters (combining class > 0) by
 * class, stably.  With strip_accents the Mn marks are dropped right after, and sorting then
 * dropping equals dropping then sorting, so only the few non-Mn non-starters are held in a
 * "pending" buffer until the next starter (class 0, which may itself be a dropped Mn) arrives.
 * That buffer is bounded: once it holds more characters than a word may have, the word is [UNK]
 * whatever their order, so it is flushed unsorted.
 *
 * WordPiece: the vocabulary sits in two open-addressing hash tables, one with every token and one
 * with the continuation tokens ("##foo") stored without their prefix, so a piece that does not
 * start the word is looked up without building "##" + piece.  FNV-1a is computed incrementally
 * over the candidate piece, so trying every length from the longest down costs one hash pass.
 * Candidate lengths are capped by the longest key, which leaves the greedy longest-match result
 * unchanged.
 *
 * ASCII fast path: ASCII is never decomposed, never a CJK ideograph and never a mark, so a
 * per-tokenizer 128-entry table gives each byte's fate (dropped, space, punctuation or a
 * lowercased word byte) and the Unicode machinery runs only for non-ASCII characters.
 */
#include "tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"
#include "paths.h"
#include "tokenizer-unicode.h"

#define VOCAB_EMPTY UINT32_MAX
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
/*
 * Largest input we accept.  Every content id covers at least one input byte, so the id count
 * (returned as int) stays below INT32_MAX with up to 64 template specials, and spans fit in
 * uint32_t.
 */
#define TOK_MAX_TEXT ((size_t)INT32_MAX - 64)
/* Search for added tokens this far ahead, so a long text is scanned only as far as needed. */
#define ADDED_WINDOW (64 * 1024)

struct vocab_slot {
    uint64_t hash;
    uint32_t key_off; /* into tokenizer.keys */
    uint32_t key_len;
    uint32_t id; /* VOCAB_EMPTY when the slot is free */
};

/*
 * Most lookups miss (WordPiece tries every length from the longest down), so each table has a
 * one-bit-per-hash filter small enough to stay in cache in front of its slot array.
 */
#define VOCAB_FILTER_BITS (1u << 19)

struct vocab_table {
    struct vocab_slot *slots;
    size_t mask; /* capacity - 1, capacity a power of two */
    uint32_t max_key_len;
    uint64_t *filter; /* VOCAB_FILTER_BITS bits, indexed by the hash's top bits */
};

struct added_token {
    char *content;
    uint32_t len;
    uint32_t id;
    bool lstrip;
    bool rstrip;
};

enum ascii_class {
    ASCII_WORD,
    ASCII_DROP,
    ASCII_SPACE,
    ASCII_PUNCT,
};

/* Immutable after tokenizer_load(). */
struct tokenizer {
    /* BertNormalizer; all false when tokenizer.json has no normalizer */
    bool clean_text;
    bool handle_chinese_chars;
    bool strip_accents;
    bool lowercase;

    /* WordPiece */
    uint32_t unk_id;
    uint32_t max_input_chars_per_word;
    char *keys; /* every vocabulary token, concatenated */
    size_t keys_len;
    struct vocab_table full; /* every token */
    struct vocab_table cont; /* tokens that start with the prefix, prefix removed */
    uint32_t vocab_size;     /* largest id + 1 */
    size_t vocab_count;      /* entries in the model's vocabulary */

    struct added_token *added;
    size_t n_added;
    uint8_t added_first[256]; /* 1 when some added token starts with this byte */

    /* post-processor: ids before and after the sequence */
    uint32_t *prefix_ids;
    uint32_t n_prefix;
    uint32_t *suffix_ids;
    uint32_t n_suffix;

    uint8_t ascii_class[128];
    char ascii_map[128];
};

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */

static int fail(char **ret_error_message, int error, const char *fmt, ...) _printf_(3, 4);
static int fail(char **ret_error_message, int error, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;

    if (ret_error_message) {
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL;
        va_end(ap);
        free(*ret_error_message);
        *ret_error_message = msg;
    }
    return -abs(error);
}

/* ---------------------------------------------------------------------------------------- */
/* Vocabulary hash tables                                                                    */

static inline uint64_t fnv_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * FNV_PRIME;
}

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = FNV_OFFSET;

    for (size_t i = 0; i < n; i++)
        h = fnv_step(h, (unsigned char)s[i]);
    return h;
}

static int vocab_table_init(struct vocab_table *vt, size_t n)
{
    size_t cap = 16;

    while (cap < n * 2)
        cap *= 2;
    vt->slots = array_alloc(cap, sizeof(*vt->slots));
    if (!vt->slots)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        vt->slots[i].id = VOCAB_EMPTY;
    vt->mask = cap - 1;
    vt->max_key_len = 0;
    vt->filter = calloc(VOCAB_FILTER_BITS / 64, sizeof(uint64_t));
    if (!vt->filter)
        return -ENOMEM;
    return 0;
}

static inline uint32_t filter_bit(uint64_t h)
{
    return (uint32_t)(h >> 45); /* 19 bits, independent of the slot index (low bits) */
}

static const struct vocab_slot *vocab_find(const struct tokenizer *t, const struct vocab_table *vt,
                                           uint64_t h, const char *key, uint32_t len)
{
    uint32_t bit = filter_bit(h);

    if (!(vt->filter[bit / 64] & (1ULL << (bit % 64))))
        return NULL;
    for (size_t i = h & vt->mask;; i = (i + 1) & vt->mask) {
        const struct vocab_slot *s = &vt->slots[i];
        if (s->id == VOCAB_EMPTY)
            return NULL;
        if (s->hash == h && s->key_len == len && memcmp(t->keys + s->key_off, key, len) == 0)
            return s;
    }
}

/* Insert or overwrite (a later duplicate wins, as in a Python dict built line by line). */
static void vocab_put(struct tokenizer *t, struct vocab_table *vt, uint32_t key_off,
                      uint32_t key_len, uint32_t id)
{
    const char *key = t->keys + key_off;
    uint64_t h = fnv(key, key_len);
    struct vocab_slot *s;

    for (size_t i = h & vt->mask;; i = (i + 1) & vt->mask) {
        s = &vt->slots[i];
        if (s->id == VOCAB_EMPTY)
            break;
        if (s->hash == h && s->key_len == key_len &&
            memcmp(t->keys + s->key_off, key, key_len) == 0) {
            s->id = id;
            return;
        }
    }
    *s = (struct vocab_slot){.hash = h, .key_off = key_off, .key_len = key_len, .id = id};
    vt->max_key_len = MAX(vt->max_key_len, key_len);
    vt->filter[filter_bit(h) / 64] |= 1ULL << (filter_bit(h) % 64);
}

/*
 * A vocabulary under construction: tokens appended to one buffer, then hashed by vocab_build().
 */
struct vocab_builder {
    char *keys;
    size_t keys_len, keys_cap;
    uint32_t (*items)[3]; /* key_off, key_len, id */
    size_t n, cap;
};

static int vocab_builder_add(struct vocab_builder *b, const char *tok, size_t len, uint32_t id)
{
    int r;

    if (len > UINT16_MAX || b->keys_len + len > UINT32_MAX)
        return -EINVAL;
    r = array_grow((void **)&b->keys, &b->keys_cap, b->keys_len + len + 1, 1);
    if (r < 0)
        return r;
    r = array_grow((void **)&b->items, &b->cap, b->n + 1, sizeof(*b->items));
    if (r < 0)
        return r;
    memcpy(b->keys + b->keys_len, tok, len);
    b->items[b->n][0] = (uint32_t)b->keys_len;
    b->items[b->n][1] = (uint32_t)len;
    b->items[b->n][2] = id;
    b->n++;
    b->keys_len += len;
    return 0;
}

static void vocab_builder_release(struct vocab_builder *b)
{
    free(b->keys);
    free(b->items);
}

/* Moves the builder's keys into t and builds both tables. */
static int vocab_build(struct tokenizer *t, struct vocab_builder *b, const char *prefix)
{
    size_t plen = strlen(prefix);
    int r;

    t->keys = TAKE_PTR(b->keys);
    t->keys_len = b->keys_len;
    t->vocab_count = b->n;
    r = vocab_table_init(&t->full, b->n);
    if (r < 0)
        return r;
    r = vocab_table_init(&t->cont, b->n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t off = b->items[i][0], len = b->items[i][1], id = b->items[i][2];
        t->vocab_size = MAX(t->vocab_size, id + 1);
        if (len == 0)
            continue; /* never looked up: pieces are never empty */
        vocab_put(t, &t->full, off, len, id);
        if (len > plen && memcmp(t->keys + off, prefix, plen) == 0)
            vocab_put(t, &t->cont, off + (uint32_t)plen, len - (uint32_t)plen, id);
    }
    return 0;
}

static int64_t vocab_lookup(const struct tokenizer *t, const char *tok)
{
    size_t len = strlen(tok);
    const struct vocab_slot *s;

    if (len == 0 || len > UINT32_MAX)
        return -ENOENT;
    s = vocab_find(t, &t->full, fnv(tok, len), tok, (uint32_t)len);
    return s ? (int64_t)s->id : -ENOENT;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                   */

struct tokenizer *tokenizer_free(struct tokenizer *t)
{
    if (!t)
        return NULL;
    free(t->keys);
    free(t->full.slots);
    free(t->full.filter);
    free(t->cont.slots);
    free(t->cont.filter);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->prefix_ids);
    free(t->suffix_ids);
    free(t);
    return NULL;
}

static void setup_ascii(struct tokenizer *t)
{
    for (uint32_t c = 0; c < 128; c++) {
        uint32_t low[TOK_LOWER_MAX];

        t->ascii_map[c] = (char)c;
        if (t->clean_text && tok_is_removed(c))
            t->ascii_class[c] = ASCII_DROP;
        else if (tok_is_space(c))
            t->ascii_class[c] = ASCII_SPACE;
        else if (tok_is_punct(c))
            t->ascii_class[c] = ASCII_PUNCT;
        else
            t->ascii_class[c] = ASCII_WORD;
        if (t->lowercase) {
            tok_lowercase(c, low);
            t->ascii_map[c] = (char)low[0];
        }
    }
}

static int add_added_token(struct tokenizer *t, const char *content, uint32_t id, bool lstrip,
                           bool rstrip)
{
    struct added_token *n;
    size_t len = strlen(content);

    if (len == 0)
        return 0; /* an empty pattern never matches */
    for (size_t i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, content) == 0) {
            /* a repeated token keeps its first id and takes the later options */
            t->added[i].lstrip = lstrip;
            t->added[i].rstrip = rstrip;
            return 0;
        }
    n = array_realloc(t->added, t->n_added + 1, sizeof(*t->added));
    if (!n)
        return -ENOMEM;
    t->added = n;
    n[t->n_added] = (struct added_token){.content = strdup(content),
                                         .len = (uint32_t)len,
                                         .id = id,
                                         .lstrip = lstrip,
                                         .rstrip = rstrip};
    if (!n[t->n_added].content)
        return -ENOMEM;
    t->n_added++;
    t->added_first[(unsigned char)content[0]] = 1;
    t->vocab_size = MAX(t->vocab_size, id + 1);
    return 0;
}

static int set_ids(uint32_t **dst, uint32_t *n, const uint32_t *ids, uint32_t count)
{
    uint32_t *p = array_realloc(*dst, count, sizeof(uint32_t));

    if (!p)
        return -ENOMEM;
    memcpy(p, ids, count * sizeof(uint32_t));
    *dst = p;
    *n = count;
    return 0;
}

static bool json_get_bool(json_t *obj, const char *key, bool dflt)
{
    json_t *v = json_object_get(obj, key);

    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int load_normalizer(struct tokenizer *t, json_t *norm, const char *path, char **err)
{
    const char *type;
    json_t *sa;

    if (!norm || json_is_null(norm))
        return 0;
    type = json_string_value(json_object_get(norm, "type"));
    if (!type || strcmp(type, "BertNormalizer") != 0)
        return fail(err, ENOTSUP, "%s: normalizer type '%s' is not supported (only BertNormalizer)",
                    path, type ? type : "(none)");
    t->clean_text = json_get_bool(norm, "clean_text", true);
    t->handle_chinese_chars = json_get_bool(norm, "handle_chinese_chars", true);
    t->lowercase = json_get_bool(norm, "lowercase", true);
    /* strip_accents: null (or absent) follows lowercase, as in the reference. */
    sa = json_object_get(norm, "strip_accents");
    t->strip_accents = json_is_boolean(sa) ? json_is_true(sa) : t->lowercase;
    return 0;
}

/* The ids of a TemplateProcessing "special_tokens" entry named `name`. */
static int template_special_ids(json_t *specials, const char *name, json_t **ret_ids)
{
    json_t *ids = json_object_get(json_object_get(specials, name), "ids");

    if (!json_is_array(ids))
        return -EINVAL;
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_int_t v = json_integer_value(json_array_get(ids, i));
        if (!json_is_integer(json_array_get(ids, i)) || v < 0 || v >= UINT32_MAX)
            return -EINVAL;
    }
    *ret_ids = ids;
    return 0;
}

static int load_template(struct tokenizer *t, json_t *pp, const char *path, char **err)
{
    json_t *single = json_object_get(pp, "single");
    json_t *specials = json_object_get(pp, "special_tokens");
    uint32_t before[64], after[64];
    uint32_t nb = 0, na = 0;
    bool seen_seq = false;
    size_t i;
    json_t *item;
    int r;

    if (!json_is_array(single))
        return fail(err, EINVAL, "%s: post_processor.single is not an array", path);
    json_array_foreach(single, i, item)
    {
        json_t *st = json_object_get(item, "SpecialToken");
        json_t *ids;
        const char *name;

        if (json_object_get(item, "Sequence")) {
            if (seen_seq)
                return fail(err, ENOTSUP, "%s: post_processor.single has two sequences", path);
            seen_seq = true;
            continue;
        }
        name = json_string_value(json_object_get(st, "id"));
        if (!name)
            return fail(err, EINVAL, "%s: post_processor.single[%zu] is malformed", path, i);
        r = template_special_ids(specials, name, &ids);
        if (r < 0)
            return fail(err, EINVAL, "%s: post_processor.special_tokens has no valid entry '%s'",
                        path, name);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            uint32_t id = (uint32_t)json_integer_value(json_array_get(ids, k));
            if (nb + na >= ELEMENTSOF(before))
                return fail(err, ENOTSUP, "%s: too many special tokens in the template", path);
            if (seen_seq)
                after[na++] = id;
            else
                before[nb++] = id;
        }
    }
    if (!seen_seq)
        return fail(err, EINVAL, "%s: post_processor.single has no $A sequence", path);
    r = set_ids(&t->prefix_ids, &t->n_prefix, before, nb);
    if (r < 0)
        return r;
    return set_ids(&t->suffix_ids, &t->n_suffix, after, na);
}

/* BertProcessing: {"sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}. */
static int load_bert_processing(struct tokenizer *t, json_t *pp, const char *path, char **err)
{
    json_t *cls = json_array_get(json_object_get(pp, "cls"), 1);
    json_t *sep = json_array_get(json_object_get(pp, "sep"), 1);
    uint32_t c, s;
    int r;

    if (!json_is_integer(cls) || !json_is_integer(sep) || json_integer_value(cls) < 0 ||
        json_integer_value(sep) < 0 || json_integer_value(cls) >= UINT32_MAX ||
        json_integer_value(sep) >= UINT32_MAX)
        return fail(err, EINVAL, "%s: post_processor (BertProcessing) needs cls and sep ids", path);
    c = (uint32_t)json_integer_value(cls);
    s = (uint32_t)json_integer_value(sep);
    r = set_ids(&t->prefix_ids, &t->n_prefix, &c, 1);
    if (r < 0)
        return r;
    return set_ids(&t->suffix_ids, &t->n_suffix, &s, 1);
}

static int load_post_processor(struct tokenizer *t, json_t *pp, const char *path, char **err)
{
    const char *type;

    if (!pp || json_is_null(pp))
        return 0;
    type = json_string_value(json_object_get(pp, "type"));
    if (type && strcmp(type, "TemplateProcessing") == 0)
        return load_template(t, pp, path, err);
    if (type && strcmp(type, "BertProcessing") == 0)
        return load_bert_processing(t, pp, path, err);
    return fail(err, ENOTSUP,
                "%s: post_processor type '%s' is not supported (TemplateProcessing or "
                "BertProcessing)",
                path, type ? type : "(none)");
}

static int load_added_tokens(struct tokenizer *t, json_t *added, const char *path, char **err)
{
    uint64_t next_id = t->vocab_count;
    size_t i;
    json_t *a;
    int r;

    if (!added || json_is_null(added))
        return 0;
    if (!json_is_array(added))
        return fail(err, EINVAL, "%s: added_tokens is not an array", path);
    /*
     * The reference ignores the declared "id" (it only warns when it differs): a token in the
     * model's vocabulary gets that id, any other the next id after the vocabulary's entry count
     * (AddedVocabulary::add_tokens).  For BERT every added token is in the vocabulary.
     */
    json_array_foreach(added, i, a)
    {
        const char *content = json_string_value(json_object_get(a, "content"));
        json_t *id = json_object_get(a, "id");
        int64_t vid;

        if (!content || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= UINT32_MAX)
            return fail(err, EINVAL, "%s: added_tokens[%zu] needs a content string and an id", path,
                        i);
        if (json_get_bool(a, "normalized", false) || json_get_bool(a, "single_word", false))
            return fail(err, ENOTSUP,
                        "%s: added token '%s' uses normalized or single_word matching, which "
                        "is not supported",
                        path, content);
        vid = tokenizer_token_id(t, content);
        if (vid < 0 && content[0]) {
            if (next_id >= UINT32_MAX)
                return fail(err, EINVAL, "%s: too many added tokens", path);
            vid = next_id++;
        }
        r = add_added_token(t, content, (uint32_t)MAX(vid, 0), json_get_bool(a, "lstrip", false),
                            json_get_bool(a, "rstrip", false));
        if (r < 0)
            return r;
    }
    return 0;
}

static int load_wordpiece(struct tokenizer *t, json_t *model, const char *path, char **err)
{
    struct vocab_builder b = {0};
    const char *type = json_string_value(json_object_get(model, "type"));
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    const char *prefix = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    json_t *maxc = json_object_get(model, "max_input_chars_per_word");
    json_t *vocab = json_object_get(model, "vocab");
    const char *key;
    json_t *v;
    int64_t unk_id;
    int r = 0;

    if (!json_is_object(model))
        return fail(err, EINVAL, "%s: no \"model\" object", path);
    if (type && strcmp(type, "WordPiece") != 0)
        return fail(err, ENOTSUP, "%s: model type '%s' is not supported (only WordPiece)", path,
                    type);
    if (!json_is_object(vocab))
        return fail(err, EINVAL, "%s: model.vocab is not an object", path);
    t->max_input_chars_per_word = 100;
    if (json_is_integer(maxc)) {
        if (json_integer_value(maxc) < 0)
            return fail(err, EINVAL, "%s: model.max_input_chars_per_word is negative", path);
        t->max_input_chars_per_word = (uint32_t)MIN(json_integer_value(maxc), UINT32_MAX - 1);
    }
    json_object_foreach(vocab, key, v)
    {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= UINT32_MAX) {
            r = fail(err, EINVAL, "%s: model.vocab entry '%s' has no valid id", path, key);
            goto out;
        }
        r = vocab_builder_add(&b, key, strlen(key), (uint32_t)id);
        if (r < 0) {
            r = fail(err, r, "%s: cannot add vocabulary entry '%s'", path, key);
            goto out;
        }
    }
    r = vocab_build(t, &b, prefix ? prefix : "##");
    if (r < 0)
        goto out;
    unk_id = vocab_lookup(t, unk ? unk : "[UNK]");
    if (unk_id < 0) {
        r = fail(err, EINVAL, "%s: unk_token '%s' is not in model.vocab", path,
                 unk ? unk : "[UNK]");
        goto out;
    }
    t->unk_id = (uint32_t)unk_id;
out:
    vocab_builder_release(&b);
    return r;
}

static int load_tokenizer_json(struct tokenizer *t, const char *path, char **err)
{
    json_error_t jerr;
    json_t *root, *pre;
    const char *pre_type;
    int r;

    root = json_load_file(path, 0, &jerr);
    if (!root)
        return fail(err, EINVAL, "%s:%d:%d: malformed JSON: %s", path, jerr.line, jerr.column,
                    jerr.text);
    if (!json_is_object(root)) {
        r = fail(err, EINVAL, "%s: top level is not an object", path);
        goto out;
    }
    r = load_normalizer(t, json_object_get(root, "normalizer"), path, err);
    if (r < 0)
        goto out;
    pre = json_object_get(root, "pre_tokenizer");
    pre_type = json_string_value(json_object_get(pre, "type"));
    if (!pre_type || strcmp(pre_type, "BertPreTokenizer") != 0) {
        r = fail(err, ENOTSUP,
                 "%s: pre_tokenizer type '%s' is not supported (only BertPreTokenizer)", path,
                 pre_type ? pre_type : "(none)");
        goto out;
    }
    r = load_wordpiece(t, json_object_get(root, "model"), path, err);
    if (r < 0)
        goto out;
    r = load_added_tokens(t, json_object_get(root, "added_tokens"), path, err);
    if (r < 0)
        goto out;
    r = load_post_processor(t, json_object_get(root, "post_processor"), path, err);
out:
    json_decref(root);
    return r;
}

/* A special token named in tokenizer_config.json: a string or an AddedToken object. */
static const char *config_token(json_t *cfg, const char *key, const char *dflt)
{
    json_t *v = json_object_get(cfg, key);

    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return dflt;
}

static int read_file(const char *path, char **ret, size_t *ret_len)
{
    _cleanup_free_ char *buf = NULL;
    FILE *f = fopen(path, "re");
    size_t len = 0, cap = 0, n;
    int r = 0;

    if (!f)
        return -errno;
    for (;;) {
        r = array_grow((void **)&buf, &cap, len + 65536 + 1, 1);
        if (r < 0)
            break;
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                r = -EIO;
            break;
        }
    }
    fclose(f);
    if (r < 0)
        return r;
    buf[len] = 0;
    *ret = TAKE_PTR(buf);
    *ret_len = len;
    return 0;
}

/*
 * vocab.txt (one token per line, id = line number) plus tokenizer_config.json, turned into the
 * pipeline transformers' BertConverter builds: BertNormalizer(clean_text, tokenize_chinese_chars,
 * strip_accents, do_lower_case), BertPreTokenizer, WordPiece("##", 100), [CLS] $A [SEP], and the
 * special tokens as raw-text added tokens.  Lines split as Python's universal newlines do.
 */
static int load_vocab_txt(struct tokenizer *t, const char *dir, char **err)
{
    static const char *const special_keys[] = {"unk_token", "sep_token", "pad_token", "cls_token",
                                               "mask_token"};
    static const char *const special_dflt[] = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"};
    _cleanup_free_ char *vpath = path_join(dir, "vocab.txt");
    _cleanup_free_ char *cpath = path_join(dir, "tokenizer_config.json");
    _cleanup_free_ char *text = NULL;
    struct vocab_builder b = {0};
    json_t *cfg = NULL;
    json_error_t jerr;
    size_t len = 0, start = 0;
    uint32_t line = 0;
    int64_t cls, sep, unk;
    int r;

    if (!vpath || !cpath)
        return -ENOMEM;
    r = read_file(vpath, &text, &len);
    if (r < 0)
        return fail(err, r, "%s: cannot read: %s", vpath, strerror(-r));
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '\n' && text[i] != '\r')
            continue;
        if (i == len && start == len)
            break; /* no empty token after a final newline */
        r = vocab_builder_add(&b, text + start, i - start, line++);
        if (r < 0) {
            r = fail(err, r, "%s: cannot add line %" PRIu32, vpath, line);
            goto out;
        }
        if (i < len && text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')
            i++;
        start = i + 1;
    }
    if (access(cpath, F_OK) == 0) {
        cfg = json_load_file(cpath, 0, &jerr);
        if (!json_is_object(cfg)) {
            r = fail(err, EINVAL, "%s:%d:%d: malformed JSON: %s", cpath, jerr.line, jerr.column,
                     cfg ? "not an object" : jerr.text);
            goto out;
        }
    }
    t->clean_text = true;
    t->handle_chinese_chars = json_get_bool(cfg, "tokenize_chinese_chars", true);
    t->lowercase = json_get_bool(cfg, "do_lower_case", true);
    t->strip_accents = json_get_bool(cfg, "strip_accents", t->lowercase);
    t->max_input_chars_per_word = 100;
    r = vocab_build(t, &b, "##");
    if (r < 0)
        goto out;
    for (size_t i = 0; i < ELEMENTSOF(special_keys); i++) {
        const char *tok = config_token(cfg, special_keys[i], special_dflt[i]);
        int64_t id = vocab_lookup(t, tok);
        if (id < 0) {
            r = fail(err, EINVAL, "%s: %s '%s' is not in the vocabulary", vpath, special_keys[i],
                     tok);
            goto out;
        }
        r = add_added_token(t, tok, (uint32_t)id, false, false);
        if (r < 0)
            goto out;
    }
    unk = vocab_lookup(t, config_token(cfg, "unk_token", "[UNK]"));
    cls = vocab_lookup(t, config_token(cfg, "cls_token", "[CLS]"));
    sep = vocab_lookup(t, config_token(cfg, "sep_token", "[SEP]"));
    t->unk_id = (uint32_t)unk;
    r = set_ids(&t->prefix_ids, &t->n_prefix, &(uint32_t){(uint32_t)cls}, 1);
    if (r < 0)
        goto out;
    r = set_ids(&t->suffix_ids, &t->n_suffix, &(uint32_t){(uint32_t)sep}, 1);
out:
    json_decref(cfg);
    vocab_builder_release(&b);
    return r;
}

int tokenizer_load(const char *model_dir, struct tokenizer **ret, char **ret_error_message)
{
    _cleanup_free_ char *json_path = path_join(model_dir, "tokenizer.json");
    _cleanup_free_ char *vocab_path = path_join(model_dir, "vocab.txt");
    char *err = NULL;
    struct tokenizer *t;
    int r;

    if (!json_path || !vocab_path)
        return -ENOMEM;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    if (access(json_path, F_OK) == 0)
        r = load_tokenizer_json(t, json_path, &err);
    else if (access(vocab_path, F_OK) == 0)
        r = load_vocab_txt(t, model_dir, &err);
    else
        r = fail(&err, ENOENT, "%s: no tokenizer.json or vocab.txt (run scripts/fetch-model?)",
                 model_dir);
    if (r < 0) {
        tokenizer_free(t);
        if (ret_error_message)
            *ret_error_message = err;
        else
            free(err);
        return r;
    }
    free(err);
    setup_ascii(t);
    *ret = t;
    return 0;
}

uint32_t tokenizer_num_special_tokens(const struct tokenizer *t)
{
    return t->n_prefix + t->n_suffix;
}

int64_t tokenizer_token_id(const struct tokenizer *t, const char *token)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, token) == 0)
            return t->added[i].id;
    return vocab_lookup(t, token);
}

uint32_t tokenizer_vocab_size(const struct tokenizer *t)
{
    return t->vocab_size;
}

/* ---------------------------------------------------------------------------------------- */
/* Encoding                                                                                  */

struct pending_cp {
    uint32_t cp;
    uint32_t ccc;
    uint32_t os, oe;
};

/* Per-struct-tokens scratch, reused between calls. */
struct scratch {
    char *word;                  /* normalized bytes of the current word */
    uint32_t *word_os, *word_oe; /* source span of each byte's character (spans only) */
    size_t word_cap, word_off_cap;
    uint64_t *hashes;
    size_t hashes_cap;
    uint32_t (*pieces)[3]; /* id, start, end within the word */
    size_t pieces_cap;
    struct pending_cp *pend;
    size_t pend_cap;
};

struct encoder {
    const struct tokenizer *t;
    struct tokens *out;
    struct scratch *s;
    const unsigned char *text;
    size_t len;
    uint32_t limit; /* index in out->ids where content must stop */
    bool stop;
    int error;

    uint32_t word_len;   /* bytes in s->word */
    uint32_t word_chars; /* characters in the word, also past the stored ones */
    uint32_t word_start, word_end;
    size_t npend;
};

void tokens_init(struct tokens *toks, bool want_spans)
{
    *toks = (struct tokens){.want_spans = want_spans};
}

void tokens_release(struct tokens *toks)
{
    struct scratch *s = toks->scratch;

    if (s) {
        free(s->word);
        free(s->word_os);
        free(s->word_oe);
        free(s->hashes);
        free(s->pieces);
        free(s->pend);
        free(s);
    }
    free(toks->ids);
    free(toks->spans);
    tokens_init(toks, toks->want_spans);
}

static void enc_fail(struct encoder *e, int r)
{
    if (!e->error)
        e->error = r;
    e->stop = true;
}

static int out_reserve(struct tokens *out, uint32_t need)
{
    size_t cap = out->cap;
    int r;

    if (need <= out->cap)
        return 0;
    r = array_grow((void **)&out->ids, &cap, need, sizeof(*out->ids));
    if (r < 0)
        return r;
    if (out->want_spans) {
        /* Exactly as many spans as ids: out->cap counts both. */
        struct token_span *spans = array_realloc(out->spans, cap, sizeof(*out->spans));
        if (!spans)
            return -ENOMEM;
        out->spans = spans;
    }
    out->cap = (uint32_t)MIN(cap, UINT32_MAX);
    return 0;
}

static void out_push(struct encoder *e, uint32_t id, uint32_t os, uint32_t oe)
{
    struct tokens *out = e->out;
    int r;

    if (out->n >= out->cap) {
        r = out_reserve(out, out->n + 1);
        if (r < 0) {
            enc_fail(e, r);
            return;
        }
    }
    out->ids[out->n] = id;
    if (out->want_spans)
        out->spans[out->n] = (struct token_span){os, oe};
    out->n++;
}

/* A content token: past the limit it only records that the text was truncated. */
static void emit(struct encoder *e, uint32_t id, uint32_t os, uint32_t oe)
{
    if (e->stop)
        return;
    if (e->out->n >= e->limit) {
        e->out->truncated = true;
        e->stop = true;
        return;
    }
    out_push(e, id, os, oe);
}

/*
 * WordPiece on the finished word: greedy longest match from the left, the first piece looked up
 * as is, later ones behind the continuation prefix; one position without any match makes the
 * whole word [UNK] (tokenizers/src/models/wordpiece/mod.rs).
 */
static void wordpiece(struct encoder *e)
{
    const struct tokenizer *t = e->t;
    struct scratch *s = e->s;
    const char *w = s->word;
    uint32_t L = e->word_len, start = 0;
    size_t np = 0;
    int r;

    r = array_grow((void **)&s->hashes, &s->hashes_cap, (size_t)L + 1, sizeof(*s->hashes));
    if (r >= 0)
        r = array_grow((void **)&s->pieces, &s->pieces_cap, L, sizeof(*s->pieces));
    if (r < 0) {
        enc_fail(e, r);
        return;
    }
    while (start < L) {
        const struct vocab_table *vt = start == 0 ? &t->full : &t->cont;
        uint32_t maxe = (uint32_t)MIN((uint64_t)L, (uint64_t)start + vt->max_key_len);
        const struct vocab_slot *hit = NULL;
        uint64_t h = FNV_OFFSET;
        uint32_t end;

        for (uint32_t i = start; i < maxe; i++) {
            h = fnv_step(h, (unsigned char)w[i]);
            s->hashes[i + 1] = h;
        }
        for (end = maxe; end > start; end--) {
            /* Only character boundaries: the reference shortens by whole characters. */
            if (end < L && ((unsigned char)w[end] & 0xC0) == 0x80)
                continue;
            hit = vocab_find(t, vt, s->hashes[end], w + start, end - start);
            if (hit)
                break;
        }
        if (!hit) {
            emit(e, t->unk_id, e->word_start, e->word_end);
            return;
        }
        s->pieces[np][0] = hit->id;
        s->pieces[np][1] = start;
        s->pieces[np][2] = end;
        np++;
        start = end;
    }
    for (size_t i = 0; i < np; i++) {
        uint32_t os = e->word_start, oe = e->word_end;
        if (e->out->want_spans) {
            os = UINT32_MAX;
            oe = 0;
            for (uint32_t k = s->pieces[i][1]; k < s->pieces[i][2]; k++) {
                os = MIN(os, s->word_os[k]);
                oe = MAX(oe, s->word_oe[k]);
            }
        }
        emit(e, s->pieces[i][0], os, oe);
    }
}

static void end_word(struct encoder *e)
{
    if (e->word_chars == 0)
        return;
    if (e->word_chars > e->t->max_input_chars_per_word)
        emit(e, e->t->unk_id, e->word_start, e->word_end);
    else
        wordpiece(e);
    e->word_len = 0;
    e->word_chars = 0;
}

static int word_reserve(struct encoder *e, size_t need)
{
    struct scratch *s = e->s;
    size_t cap2 = s->word_off_cap;
    int r;

    if (need <= s->word_cap && (!e->out->want_spans || need <= s->word_off_cap))
        return 0;
    r = array_grow((void **)&s->word, &s->word_cap, need, 1);
    if (r < 0 || !e->out->want_spans)
        return r;
    r = array_grow((void **)&s->word_os, &cap2, need, sizeof(uint32_t));
    if (r < 0)
        return r;
    cap2 = s->word_off_cap;
    r = array_grow((void **)&s->word_oe, &cap2, need, sizeof(uint32_t));
    if (r < 0)
        return r;
    s->word_off_cap = cap2;
    return 0;
}

/* Append one normalized character, from source bytes [os, oe), to the current word. */
static void word_push(struct encoder *e, uint32_t cp, uint32_t os, uint32_t oe)
{
    struct scratch *s = e->s;
    char buf[4];
    int n;

    /* min/max rather than first/last: canonical reordering can move a later character first */
    if (e->word_chars == 0) {
        e->word_start = os;
        e->word_end = oe;
    }
    e->word_start = MIN(e->word_start, os);
    e->word_end = MAX(e->word_end, oe);
    e->word_chars++;
    /* Past the limit the word is [UNK] whatever it holds: only count it. */
    if (e->word_chars > e->t->max_input_chars_per_word)
        return;
    if (cp < 0x80) {
        buf[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        buf[0] = (char)(0xF0 | (cp >> 18));
        buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (word_reserve(e, (size_t)e->word_len + (size_t)n) < 0) {
        enc_fail(e, -ENOMEM);
        return;
    }
    memcpy(s->word + e->word_len, buf, (size_t)n);
    if (e->out->want_spans)
        for (int i = 0; i < n; i++) {
            s->word_os[e->word_len + (uint32_t)i] = os;
            s->word_oe[e->word_len + (uint32_t)i] = oe;
        }
    e->word_len += (uint32_t)n;
}

/* BertPreTokenizer: whitespace ends a word and vanishes, punctuation is a word of its own. */
static void pretokenize_cp(struct encoder *e, uint32_t cp, uint32_t os, uint32_t oe)
{
    if (tok_is_space(cp)) {
        end_word(e);
    } else if (tok_is_punct(cp)) {
        end_word(e);
        word_push(e, cp, os, oe);
        end_word(e);
    } else {
        word_push(e, cp, os, oe);
    }
}

static void lowercase_cp(struct encoder *e, uint32_t cp, uint32_t os, uint32_t oe)
{
    uint32_t low[TOK_LOWER_MAX];
    int n;

    if (!e->t->lowercase) {
        pretokenize_cp(e, cp, os, oe);
        return;
    }
    n = tok_lowercase(cp, low);
    for (int i = 0; i < n; i++)
        pretokenize_cp(e, low[i], os, oe);
}

/* Release the held non-starters in canonical order (stable by combining class). */
static void flush_pending(struct encoder *e)
{
    struct pending_cp *p = e->s->pend;
    size_t n = e->npend;
    uint64_t present[4] = {0};

    e->npend = 0;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            struct pending_cp x = p[i];
            size_t j = i;
            while (j > 0 && p[j - 1].ccc > x.ccc) {
                p[j] = p[j - 1];
                j--;
            }
            p[j] = x;
        }
        for (size_t i = 0; i < n; i++)
            lowercase_cp(e, p[i].cp, p[i].os, p[i].oe);
        return;
    }
    /* A long run (only when max_input_chars_per_word is huge): one pass per class present,
     * linear and stable without a second buffer. */
    for (size_t i = 0; i < n; i++)
        present[p[i].ccc / 64] |= 1ULL << (p[i].ccc % 64);
    for (uint32_t c = 0; c < 256; c++) {
        if (!(present[c / 64] & (1ULL << (c % 64))))
            continue;
        for (size_t i = 0; i < n; i++)
            if (p[i].ccc == c)
                lowercase_cp(e, p[i].cp, p[i].os, p[i].oe);
    }
}

/* strip_accents: NFD, then drop Mn. */
static void strip_cp(struct encoder *e, uint32_t cp, uint32_t os, uint32_t oe)
{
    uint32_t d[TOK_DECOMP_MAX];
    int n;

    if (!e->t->strip_accents) {
        lowercase_cp(e, cp, os, oe);
        return;
    }
    n = tok_decompose(cp, d);
    for (int i = 0; i < n; i++) {
        int ccc = tok_combining_class(d[i]);
        if (ccc == 0) {
            if (e->npend)
                flush_pending(e);
            if (!tok_is_mn(d[i]))
                lowercase_cp(e, d[i], os, oe);
        } else if (!tok_is_mn(d[i])) {
            struct scratch *s = e->s;
            /* More held characters than a word may have: the word is [UNK] in any order. */
            if (e->npend > e->t->max_input_chars_per_word)
                flush_pending(e);
            if (array_grow((void **)&s->pend, &s->pend_cap, e->npend + 1, sizeof(*s->pend)) < 0) {
                enc_fail(e, -ENOMEM);
                return;
            }
            s->pend[e->npend++] = (struct pending_cp){d[i], (uint32_t)ccc, os, oe};
        }
    }
}

/* clean_text and handle_chinese_chars for one decoded character. */
static void normalize_cp(struct encoder *e, uint32_t cp, uint32_t os, uint32_t oe)
{
    const struct tokenizer *t = e->t;

    if (t->clean_text) {
        if (tok_is_removed(cp))
            return;
        if (tok_is_space(cp))
            cp = ' ';
    }
    if (t->handle_chinese_chars && tok_is_cjk(cp)) {
        strip_cp(e, ' ', os, oe);
        strip_cp(e, cp, os, oe);
        strip_cp(e, ' ', os, oe);
        return;
    }
    strip_cp(e, cp, os, oe);
}

/*
 * Decode one character at s[0..n) (n >= 1).  Invalid input yields U+FFFD for each maximal
 * subpart of an ill-formed sequence (Unicode 3.9, as Python's "replace" handler does).
 */
static uint32_t utf8_decode(const unsigned char *s, size_t n, size_t *ret_adv)
{
    unsigned char c = s[0];
    uint32_t cp;
    size_t need, i;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80) {
        *ret_adv = 1;
        return c;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *ret_adv = 1;
        return 0xFFFD;
    }
    for (i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *ret_adv = i;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *ret_adv = need + 1;
    return cp;
}

/*
 * The hot path: the run of plain ASCII word bytes at text[p] goes into the word in one go;
 * returns the position after it.  Bytes past max_input_chars_per_word are only counted (the word is
 * [UNK] anyway), so an endless "word" costs one compare per byte.
 */
static size_t ascii_run(struct encoder *e, size_t p, size_t end)
{
    const struct tokenizer *t = e->t;
    const unsigned char *text = e->text;
    uint32_t max = t->max_input_chars_per_word;
    size_t q = p, n, store;

    while (q < end && text[q] < 0x80 && t->ascii_class[text[q]] == ASCII_WORD)
        q++;
    n = q - p;
    store = e->word_chars < max ? MIN(n, (size_t)(max - e->word_chars)) : 0;
    if (store && word_reserve(e, (size_t)e->word_len + store) < 0) {
        enc_fail(e, -ENOMEM);
        return q;
    }
    if (e->word_chars == 0)
        e->word_start = (uint32_t)p;
    for (size_t i = 0; i < store; i++) {
        e->s->word[e->word_len + i] = t->ascii_map[text[p + i]];
        if (e->out->want_spans) {
            e->s->word_os[e->word_len + i] = (uint32_t)(p + i);
            e->s->word_oe[e->word_len + i] = (uint32_t)(p + i + 1);
        }
    }
    e->word_len += (uint32_t)store;
    e->word_chars = (uint32_t)MIN((uint64_t)e->word_chars + n, (uint64_t)UINT32_MAX);
    e->word_end = (uint32_t)q;
    return q;
}

/*
 * Run text[p, end) through the pipeline, without closing the current word (a segment may be
 * fed in windows).  A character starting before `end` is decoded whole, so the return value,
 * the position reached, may pass `end` by up to 3 bytes.
 */
static size_t feed(struct encoder *e, size_t p, size_t end)
{
    const struct tokenizer *t = e->t;
    const unsigned char *text = e->text;

    while (p < end && !e->stop) {
        unsigned char c = text[p];

        if (c < 0x80) {
            if (e->npend)
                flush_pending(e);
            switch (t->ascii_class[c]) {
            case ASCII_DROP:
                break;
            case ASCII_SPACE:
                end_word(e);
                break;
            case ASCII_PUNCT:
                end_word(e);
                word_push(e, c, (uint32_t)p, (uint32_t)p + 1);
                end_word(e);
                break;
            default:
                p = ascii_run(e, p, end);
                continue;
            }
            p++;
        } else {
            size_t adv;
            uint32_t cp = utf8_decode(text + p, e->len - p, &adv);
            normalize_cp(e, cp, (uint32_t)p, (uint32_t)(p + adv));
            p += adv;
        }
    }
    return p;
}

/* End of a segment: the reference normalizes and pre-tokenizes each segment on its own. */
static void segment_end(struct encoder *e)
{
    if (e->npend)
        flush_pending(e);
    end_word(e);
}

static bool added_match_at(const struct tokenizer *t, const unsigned char *s, size_t n,
                           const struct added_token **ret)
{
    const struct added_token *best = NULL;

    for (size_t i = 0; i < t->n_added; i++) {
        const struct added_token *a = &t->added[i];
        if (a->len <= n && (!best || a->len > best->len) && memcmp(s, a->content, a->len) == 0)
            best = a;
    }
    *ret = best;
    return best != NULL;
}

/* Decode backwards the character that ends at p (p > floor); invalid bytes are U+FFFD. */
static size_t prev_char_start(const unsigned char *s, size_t floor, size_t p, uint32_t *ret_cp)
{
    size_t q = p - 1, adv;

    while (q > floor && p - q < 4 && (s[q] & 0xC0) == 0x80)
        q--;
    *ret_cp = utf8_decode(s + q, p - q, &adv);
    if (q + adv != p) {
        *ret_cp = 0xFFFD;
        return p - 1;
    }
    return q;
}

/*
 * Leftmost-longest search for an added token starting in [p, end); returns its start or
 * SIZE_MAX.  BERT has five added tokens, so a first-byte filter and a direct compare beat an
 * automaton.
 */
static size_t added_find(const struct encoder *e, size_t p, size_t end,
                         const struct added_token **ret)
{
    const struct tokenizer *t = e->t;

    for (size_t q = p; q < end; q++)
        if (t->added_first[e->text[q]] && added_match_at(t, e->text + q, e->len - q, ret))
            return q;
    return SIZE_MAX;
}

static void encode_text(struct encoder *e)
{
    const struct tokenizer *t = e->t;
    size_t p = 0;

    while (p < e->len && !e->stop) {
        size_t win_end = e->len - p > ADDED_WINDOW ? p + ADDED_WINDOW : e->len;
        const struct added_token *a = NULL;
        size_t m = t->n_added ? added_find(e, p, win_end, &a) : SIZE_MAX;
        size_t ms, me;

        if (m == SIZE_MAX) {
            /* No added token starts in this window: feed it and keep the word open. */
            p = feed(e, p, win_end);
            continue;
        }
        ms = m;
        me = m + a->len;
        if (a->lstrip) {
            while (ms > p) {
                uint32_t cp;
                size_t q = prev_char_start(e->text, p, ms, &cp);
                if (!tok_is_space(cp))
                    break;
                ms = q;
            }
        }
        if (a->rstrip) {
            while (me < e->len) {
                size_t adv;
                uint32_t cp = utf8_decode(e->text + me, e->len - me, &adv);
                if (!tok_is_space(cp))
                    break;
                me += adv;
            }
        }
        if (p < ms)
            feed(e, p, ms);
        segment_end(e);
        emit(e, a->id, (uint32_t)ms, (uint32_t)me);
        p = me;
    }
    segment_end(e);
}

static int scratch_get(struct tokens *out, struct scratch **ret)
{
    if (!out->scratch) {
        out->scratch = calloc(1, sizeof(struct scratch));
        if (!out->scratch)
            return -ENOMEM;
    }
    *ret = out->scratch;
    return 0;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, uint32_t max_tokens,
                     struct tokens *out)
{
    uint32_t nspecial = t->n_prefix + t->n_suffix;
    struct encoder e;
    struct scratch *s;
    int r;

    if (max_tokens < nspecial || len > TOK_MAX_TEXT)
        return -EINVAL;
    r = scratch_get(out, &s);
    if (r < 0)
        return r;
    r = out_reserve(out, MIN(max_tokens, 512u));
    if (r < 0)
        return r;
    out->n = 0;
    out->truncated = false;
    e = (struct encoder){
        .t = t,
        .out = out,
        .s = s,
        .text = (const unsigned char *)text,
        .len = len,
        .limit = max_tokens - t->n_suffix,
    };
    for (uint32_t i = 0; i < t->n_prefix; i++)
        out_push(&e, t->prefix_ids[i], 0, 0);
    if (len > 0)
        encode_text(&e);
    for (uint32_t i = 0; i < t->n_suffix && !e.error; i++)
        out_push(&e, t->suffix_ids[i], 0, 0);
    if (e.error) {
        out->n = 0;
        out->truncated = false;
        return e.error;
    }
    return (int)out->n;
}
