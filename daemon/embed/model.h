/*
 * model.h - a BERT-family sentence-transformers model on disk: its configuration and its fp32
 * weights, bound by name and shape-checked, ready for a backend.
 *
 * A model directory is what sentence-transformers saves (and scripts/fetch-model installs):
 *
 *   modules.json                optional; lists Transformer, Pooling and Normalize modules.  Any
 *                               other module (Dense, ...) is refused.  Absent: Transformer at
 *                               the root, Pooling in 1_Pooling/, no Normalize.
 *   <transformer>/config.json   BertModel config: hidden size, layers, heads, intermediate size,
 *                               layer_norm_eps, vocab/position/type sizes, hidden_act.  Only
 *                               model_type "bert" with absolute positions and hidden_act "gelu"
 *                               (the exact erf form) is accepted; anything else is refused with
 *                               a message saying which field and value.
 *   <transformer>/sentence_bert_config.json   max_seq_length (tokens, [CLS]/[SEP] included);
 *                               absent: max_position_embeddings.
 *   <transformer>/model.safetensors           F32 weights (see the name table in model.c).
 *   <pooling>/config.json       exactly one of mean or CLS pooling; others refused.
 *
 * No model-specific branches: everything the forward pass needs comes from these files.
 * Weight names may carry a "bert." prefix, and LayerNorm parameters may be called gamma/beta.
 *
 * Ownership: model_load() returns a model freed with model_free(); the weight pointers point
 * into the model's safetensors mapping and stay valid until then, so a backend built from a
 * model must be freed before it.  Threading: immutable after load; shareable across threads.
 */
#ifndef COARCH_EMBED_MODEL_H
#define COARCH_EMBED_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "safetensors.h"

enum model_pooling {
    MODEL_POOLING_MEAN, /* mean over all tokens, [CLS] and [SEP] included */
    MODEL_POOLING_CLS,  /* the last hidden state of token 0 */
};

struct model_config {
    unsigned hidden;         /* hidden_size, also the embedding dimension */
    unsigned n_layers;       /* num_hidden_layers */
    unsigned n_heads;        /* num_attention_heads */
    unsigned head_dim;       /* hidden / n_heads */
    unsigned intermediate;   /* intermediate_size */
    unsigned vocab_size;     /* vocab_size */
    unsigned max_position;   /* max_position_embeddings */
    unsigned type_vocab;     /* type_vocab_size (row 0 is used: single-text inputs) */
    float ln_eps;            /* layer_norm_eps */
    unsigned max_seq_length; /* truncation length, specials included; <= max_position */
    enum model_pooling pooling;
    bool normalize; /* a Normalize module follows pooling */
};

/*
 * Weight views.  Each points at little-endian fp32 data inside the mapping, row-major, HF
 * nn.Linear layout [out, in].  NOT aligned: copy with memcpy.
 */
struct model_layer_weights {
    const void *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* [H,H], [H] */
    const void *o_w, *o_b;                         /* attention output dense [H,H], [H] */
    const void *ln1_g, *ln1_b;                     /* attention.output.LayerNorm [H] */
    const void *up_w, *up_b;                       /* intermediate.dense [I,H], [I] */
    const void *down_w, *down_b;                   /* output.dense [H,I], [H] */
    const void *ln2_g, *ln2_b;                     /* output.LayerNorm [H] */
};

struct model {
    struct model_config config;
    char *dir;             /* the directory given to model_load() */
    char *transformer_dir; /* where config.json and model.safetensors live */
    struct safetensors *weights;
    const void *word_emb;               /* [vocab, H] */
    const void *pos_emb;                /* [max_position, H] */
    const void *type_emb;               /* [type_vocab, H] */
    const void *emb_ln_g, *emb_ln_b;    /* [H] */
    struct model_layer_weights *layers; /* n_layers entries */
};

/*
 * Read and check the configuration files of `dir` only (no weights).  Returns 0, -ENOENT (a
 * required file missing), -EBADMSG (malformed), -ENOTSUP (a valid but unsupported setting) or
 * -ENOMEM; on failure *ret_error_message (when not NULL) is set to a malloc'd message naming the
 * file and the field (caller frees).
 */
int model_config_load(const char *dir, struct model_config *ret, char **ret_error_message);

/* Configuration plus weights; same errors, weight problems name the file and the tensor. */
int model_load(const char *dir, struct model **ret, char **ret_error_message);
struct model *model_free(struct model *m);

const char *model_pooling_name(enum model_pooling pooling);

#endif
