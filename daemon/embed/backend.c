/*
 * backend.c - the table of built-in backends and opening one by name.
 */
#include "backend.h"

#include <errno.h>
#include <string.h>

#ifdef COARCH_HAVE_CUDA
extern const struct embed_backend_ops embed_backend_cuda;
#endif

const struct embed_backend_ops *const embed_backends[] = {
#ifdef COARCH_HAVE_CUDA
    &embed_backend_cuda,
#endif
    &embed_backend_cpu,
    NULL,
};

const char *embed_precision_name(enum embed_precision p)
{
    switch (p) {
    case EMBED_PRECISION_FP32:
        return "fp32";
    case EMBED_PRECISION_BF16:
        return "bf16";
    case EMBED_PRECISION_INT8:
        return "int8";
    }
    return "?";
}

int embed_precision_from_name(const char *name, enum embed_precision *ret)
{
    static const enum embed_precision all[] = {EMBED_PRECISION_FP32, EMBED_PRECISION_BF16,
                                               EMBED_PRECISION_INT8};

    for (size_t i = 0; name && i < sizeof(all) / sizeof(all[0]); i++)
        if (strcmp(name, embed_precision_name(all[i])) == 0) {
            *ret = all[i];
            return 0;
        }
    return -EINVAL;
}

const struct embed_backend_ops *embed_backend_find(const char *name)
{
    for (size_t i = 0; embed_backends[i]; i++)
        if (strcmp(embed_backends[i]->name, name) == 0)
            return embed_backends[i];
    return NULL;
}

int embed_backend_open(const char *name, const struct model *model,
                       const struct embed_backend_options *options, struct embed_backend *ret)
{
    const struct embed_backend_ops *ops = NULL;
    void *ctx;
    int r;

    if (name && strcmp(name, "auto") != 0) {
        ops = embed_backend_find(name);
        if (!ops)
            return -ENOENT;
        if (ops->abi_version != EMBED_BACKEND_ABI_VERSION || !ops->supports(&model->config))
            return -ENOTSUP;
    } else {
        /* auto: the first that supports the model and opens.  One that cannot run these
         * options, or whose device is missing or full, gives way to the next (the CPU last). */
        r = -ENOTSUP;
        for (size_t i = 0; embed_backends[i]; i++) {
            if (embed_backends[i]->abi_version != EMBED_BACKEND_ABI_VERSION ||
                !embed_backends[i]->supports(&model->config))
                continue;
            r = embed_backends[i]->init(model, options, &ctx);
            if (r >= 0) {
                ops = embed_backends[i];
                break;
            }
            if (r != -ENOTSUP && r != -ENODEV && r != -ENOMEM)
                return r;
        }
        if (!ops)
            return r;
        ret->ops = ops;
        ret->ctx = ctx;
        return 0;
    }
    r = ops->init(model, options, &ctx);
    if (r < 0)
        return r;
    ret->ops = ops;
    ret->ctx = ctx;
    return 0;
}

void embed_backend_close(struct embed_backend *b)
{
    if (b->ops)
        b->ctx = b->ops->free(b->ctx);
    b->ops = NULL;
}
