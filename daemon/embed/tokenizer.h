/*
 * tokenizer.h - BERT WordPiece tokenizer producing the same ids as HuggingFace `tokenizers`.
 *
 * The reference is the Rust `tokenizers` crate (what sentence-transformers uses), driven by the
 * model's tokenizer.json: added/special tokens matched in the raw text, BertNormalizer,
 * BertPreTokenizer, WordPiece and the post-processor's [CLS] ... [SEP].  tests/unit/
 * test-tokenizer.c compares every id of thousands of real source lines and adversarial strings,
 * and every Unicode code point, against that reference.
 *
 * Decisions, each made to keep ids identical to `tokenizers` with default settings:
 *   - Added tokens (for BERT: [PAD] [UNK] [CLS] [SEP] [MASK]) are matched in the raw text,
 *     case-sensitively, leftmost-longest, before normalization: a literal "[SEP]" in a source
 *     file becomes id 102, as `encode_special_tokens=False` (the default) does.  Added tokens
 *     with `normalized: true` or `single_word: true` are refused at load (-ENOTSUP): BERT
 *     checkpoints do not use them and we would not match them exactly.
 *   - The length limit is the caller's (the model reads it from sentence_bert_config.json);
 *     tokenizer.json's own "truncation" and "padding" are ignored.  max_tokens counts the
 *     post-processor's specials: the result equals encoding everything and truncating with
 *     max_length = max_tokens, but work stops as soon as the limit is reached.
 *   - Invalid UTF-8 never fails: each maximal invalid subsequence becomes one U+FFFD, exactly
 *     what Python's bytes.decode("utf-8", "replace") gives; clean_text then drops U+FFFD.
 *   - Unicode tables follow the reference's own (older) data, see tokenizer-unicode.h.
 *
 * Ownership and threading: a struct tokenizer is immutable after tokenizer_load(), so any number
 * of threads may call tokenizer_encode() on it at once.  Each thread needs its own struct tokens,
 * which also carries the reusable scratch space, so steady-state encoding does not allocate.
 */
#ifndef COARCH_EMBED_TOKENIZER_H
#define COARCH_EMBED_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer;

/* Byte range [start, end) of a token in the text passed to tokenizer_encode(); (0, 0) for the
 * post-processor's [CLS]/[SEP], which have no source text. */
struct token_span {
    uint32_t start;
    uint32_t end;
};

/*
 * The result of one encode, in caller-owned storage: tokens_init() it once, pass it to any
 * number of tokenizer_encode() calls (each overwrites it), tokens_release() it at the end.
 * Fields are read-only for the caller.
 */
struct tokens {
    uint32_t *ids;            /* n ids, [CLS] first and [SEP] last for BERT */
    struct token_span *spans; /* n spans when initialised with want_spans, else NULL */
    uint32_t n;
    bool truncated; /* the text had more tokens than max_tokens allowed */

    /* private: capacity and scratch reused between calls */
    bool want_spans;
    uint32_t cap;
    void *scratch;
};

void tokens_init(struct tokens *toks, bool want_spans);
void tokens_release(struct tokens *toks);

/*
 * Load the tokenizer of the model in `model_dir`: tokenizer.json when present, else vocab.txt
 * plus tokenizer_config.json (as transformers' BertConverter would build tokenizer.json from
 * them).  On success *ret is the new tokenizer (free with tokenizer_free()).  On failure returns
 * -ENOENT (no tokenizer files), -EINVAL (malformed file), -ENOTSUP (a component or option this
 * tokenizer does not implement) or -ENOMEM, and, when ret_error_message is not NULL, sets it to a
 * malloc'd message naming the file and the problem (caller frees).
 */
int tokenizer_load(const char *model_dir, struct tokenizer **ret, char **ret_error_message);

struct tokenizer *tokenizer_free(struct tokenizer *t);

/*
 * Tokenize text[0, len) (UTF-8, need not be NUL-terminated or valid) into *out: ids with the
 * post-processor's special tokens, at most max_tokens of them in total.  Returns the number of
 * ids (>= 0, also in out->n), -EINVAL when max_tokens cannot hold the special tokens or len
 * is 2 GiB or more, or -ENOMEM (then *out holds no result).  Pass UINT32_MAX for no limit.
 */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, uint32_t max_tokens,
                     struct tokens *out);

/* Number of special tokens the post-processor adds to every sequence (2 for BERT). */
uint32_t tokenizer_num_special_tokens(const struct tokenizer *t);

/* The id of a vocabulary token or added token (e.g. "[PAD]"), or -ENOENT. */
int64_t tokenizer_token_id(const struct tokenizer *t, const char *token);

/* Vocabulary size: one more than the largest id. */
uint32_t tokenizer_vocab_size(const struct tokenizer *t);

#endif
