/*
 * cmd-embed.c - `coarchctl embed TEXT...`: the daemon's embedding of each TEXT, for checking
 * the model from the shell (and for scripts that want vectors).
 *
 * The daemon sends each vector as `dim` little-endian float32 in a msgpack bin.  People see the
 * first components and the norm (1.0 for a normalising model); --json writes the floats as
 * numbers, {"dim": N, "model": NAME, "vectors": [[...], ...]}, each in the shortest form that
 * reads back as the same float32, so a script gets exactly the daemon's values.
 */
#include <endian.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "output.h"

#define EMBED_SHOWN_COMPONENTS 8

static float float_le(const char *p)
{
    uint32_t u;
    float f;

    memcpy(&u, p, sizeof(u));
    u = le32toh(u);
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* The shortest %g text that reads back as the same float32. */
static void format_float(float f, char *buf, size_t size)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, size, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            return;
    }
}

/* Checks that every vector is a bin of dim floats; prints why not. */
static bool vectors_valid(const msgpack_object *vecs, uint64_t dim, uint32_t n_texts)
{
    if (!vecs || vecs->type != MSGPACK_OBJECT_ARRAY || vecs->via.array.size != n_texts ||
        dim == 0 || dim > 65536) {
        fprintf(stderr, "coarchctl embed: malformed reply (vectors or dim missing)\n");
        return false;
    }
    for (uint32_t i = 0; i < n_texts; i++) {
        const msgpack_object *v = &vecs->via.array.ptr[i];
        if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != dim * sizeof(float)) {
            fprintf(stderr,
                    "coarchctl embed: malformed reply (vector %u is not %" PRIu64 " float32)\n", i,
                    dim);
            return false;
        }
    }
    return true;
}

static void print_json(const msgpack_object *res, const msgpack_object *vecs, uint64_t dim)
{
    bool pretty = isatty(STDOUT_FILENO);
    const char *model = "";
    size_t mlen = 0;
    char num[32];

    (void)proto_get_str(res, "model", &model, &mlen);
    printf(pretty ? "{\n  \"dim\": %" PRIu64 ",\n  \"model\": " : "{\"dim\":%" PRIu64 ",\"model\":",
           dim);
    output_json_string(stdout, model, mlen);
    fputs(pretty ? ",\n  \"vectors\": [" : ",\"vectors\":[", stdout);
    for (uint32_t i = 0; i < vecs->via.array.size; i++) {
        const char *p = vecs->via.array.ptr[i].via.bin.ptr;
        fputs(i ? "," : "", stdout);
        fputs(pretty ? "\n    [" : "[", stdout);
        for (uint64_t c = 0; c < dim; c++) {
            format_float(float_le(p + c * sizeof(float)), num, sizeof(num));
            printf(c ? (pretty ? ", %s" : ",%s") : "%s", num);
        }
        putchar(']');
    }
    fputs(pretty ? "\n  ]\n}\n" : "]}\n", stdout);
}

static void print_human(const msgpack_object *res, const msgpack_object *vecs, uint64_t dim,
                        char **texts)
{
    const char *model = "?";
    size_t mlen = 1;

    (void)proto_get_str(res, "model", &model, &mlen);
    for (uint32_t i = 0; i < vecs->via.array.size; i++) {
        const char *p = vecs->via.array.ptr[i].via.bin.ptr;
        double norm = 0;

        for (uint64_t c = 0; c < dim; c++) {
            double x = float_le(p + c * sizeof(float));
            norm += x * x;
        }
        printf("%s\n  [", texts[i]);
        for (uint64_t c = 0; c < dim && c < EMBED_SHOWN_COMPONENTS; c++)
            printf("%s%.4f", c ? ", " : "", (double)float_le(p + c * sizeof(float)));
        printf("%s]  norm %.4f  (%" PRIu64 " dims, %.*s)\n",
               dim > EMBED_SHOWN_COMPONENTS ? ", ..." : "", sqrt(norm), dim, (int)mlen, model);
    }
}

static int embed_run(struct client *cl, int argc, char **argv)
{
    const struct client_command *cmd = &client_cmd_embed;
    const msgpack_object *vecs;
    struct proto_msg *resp;
    msgpack_packer *pk;
    uint64_t dim = 0;
    uint32_t n;
    int r, code = CLIENT_EXIT_USAGE;

    r = client_getopt(cl, cmd, argc, argv, NULL, NULL, &code);
    if (r == CLIENT_GETOPT_EXIT)
        return code;
    if (optind >= argc)
        return client_usage_error(cmd, "missing the text to embed");
    if (argc - optind > 1024)
        return client_usage_error(cmd, "at most 1024 texts per call (got %d)", argc - optind);
    n = (uint32_t)(argc - optind);

    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        return r;
    r = client_request_begin(cl, "embed", 1, &pk);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_pack_str(pk, "texts");
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++)
        proto_pack_str(pk, argv[optind + i]);
    r = client_request_end(cl, &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    vecs = proto_map_get(&resp->result, "vectors");
    (void)proto_get_uint(&resp->result, "dim", &dim);
    if (!vectors_valid(vecs, dim, n)) {
        proto_msg_free(resp);
        return CLIENT_EXIT_CONNECTION;
    }
    if (cl->json)
        print_json(&resp->result, vecs, dim);
    else
        print_human(&resp->result, vecs, dim, argv + optind);
    proto_msg_free(resp);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_embed = {
    .name = "embed",
    .summary = "Embed texts with the daemon's model and print the vectors",
    .usage = "embed [--json] TEXT...",
    .help = "Each TEXT (up to 1024) is embedded separately.  Prints each text, then its\n"
            "first 8 components and its norm; --json prints {\"dim\": N, \"model\": NAME,\n"
            "\"vectors\": [[float, ...], ...]} in the order of the texts.\n",
    .run = embed_run,
};
