/*
 * test-safetensors.c - the safetensors loader: a valid file read back exactly, and malformed
 * files (generated here) each refused with -EBADMSG and a message naming the file and tensor.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "test.h"

static char tmpdir[] = "/tmp/test-safetensors.XXXXXX";
static char path[256];

/* Write 8-byte length `hlen` (little-endian), the header bytes, then `data`. */
static const char *write_raw(uint64_t hlen, const char *header, size_t header_len, const void *data,
                             size_t data_len)
{
    unsigned char len[8];
    FILE *f;

    if (strstr(tmpdir, "XXXXXX"))
        ASSERT_TRUE(mkdtemp(tmpdir) != NULL);
    snprintf(path, sizeof(path), "%s/t.safetensors", tmpdir);
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(hlen >> (8 * i));
    f = fopen(path, "wb");
    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fwrite(len, 1, 8, f), 8);
    if (header_len)
        ASSERT_EQ(fwrite(header, 1, header_len, f), header_len);
    if (data_len)
        ASSERT_EQ(fwrite(data, 1, data_len, f), data_len);
    ASSERT_EQ(fclose(f), 0);
    return path;
}

/* A file whose header is `header` (exact length) followed by `data_len` bytes 0..255. */
static const char *write_file(const char *header, size_t data_len)
{
    unsigned char data[4096] = {0};

    ASSERT_LE(data_len, sizeof(data));
    for (size_t i = 0; i < data_len; i++)
        data[i] = (unsigned char)i;
    return write_raw(strlen(header), header, strlen(header), data, data_len);
}

/* Opening must fail with `err` and a message containing every given fragment. */
static void expect_fail(const char *p, int err, const char *frag1, const char *frag2)
{
    struct safetensors *st = NULL;
    char *msg = NULL;
    int r;

    r = safetensors_open(p, &st, &msg);
    if (r >= 0)
        safetensors_free(st);
    ASSERT_EQ(r, err);
    ASSERT_TRUE(msg != NULL);
    fprintf(stderr, "  refused: %s\n", msg);
    if (frag1 && !strstr(msg, frag1))
        test_fail(__FILE__, __LINE__, "message \"%s\" lacks \"%s\"", msg, frag1);
    if (frag2 && !strstr(msg, frag2))
        test_fail(__FILE__, __LINE__, "message \"%s\" lacks \"%s\"", msg, frag2);
    free(msg);
}

TEST(valid_round_trip)
{
    /* Header padded with spaces to a multiple of 8, as the Rust writer does; tensors listed out
     * of offset order; an empty tensor and a 0-rank scalar, both legal. */
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,7],\"data_offsets\":[40,40]},"
                      "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[40,42]}}";
    char header[512];
    unsigned char data[42];
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, 6};
    int64_t b[2] = {-1, 1LL << 40};
    const struct safetensors_tensor *t;
    struct safetensors *st = NULL;
    char *msg = NULL;
    size_t hl = strlen(hdr);
    float got[6];

    memcpy(header, hdr, hl);
    while (hl % 8)
        header[hl++] = ' ';
    memcpy(data, a, 24);
    memcpy(data + 24, b, 16);
    data[40] = 0x80, data[41] = 0x3f; /* bf16 1.0 */
    write_raw(hl, header, hl, data, sizeof(data));

    ASSERT_OK(safetensors_open(path, &st, &msg));
    ASSERT_TRUE(msg == NULL);
    ASSERT_EQ(safetensors_count(st), 4);
    ASSERT_STREQ(safetensors_metadata(st, "format"), "pt");
    ASSERT_TRUE(safetensors_metadata(st, "nope") == NULL);
    ASSERT_STREQ(safetensors_basename(st), "t.safetensors");
    ASSERT_EQ(safetensors_mapped_size(st), 8 + hl + sizeof(data));

    /* Offset order: a, b, then the empty tensor before the scalar at the same offset. */
    ASSERT_STREQ(safetensors_get(st, 0)->name, "a");
    ASSERT_STREQ(safetensors_get(st, 1)->name, "b");
    ASSERT_STREQ(safetensors_get(st, 2)->name, "empty");
    ASSERT_STREQ(safetensors_get(st, 3)->name, "s");
    ASSERT_TRUE(safetensors_get(st, 4) == NULL);

    t = safetensors_find(st, "a");
    ASSERT_TRUE(t != NULL);
    ASSERT_EQ(t->dtype, SAFETENSORS_DTYPE_F32);
    ASSERT_EQ(t->n_dims, 2);
    ASSERT_EQ(t->shape[0], 2);
    ASSERT_EQ(t->shape[1], 3);
    ASSERT_EQ(t->numel, 6);
    ASSERT_EQ(t->size, 24);
    ASSERT_EQ(t->offset, 8 + hl);
    memcpy(got, t->data, sizeof(got));
    ASSERT_EQ(memcmp(got, a, sizeof(a)), 0);

    t = safetensors_find(st, "b");
    ASSERT_EQ(t->dtype, SAFETENSORS_DTYPE_I64);
    ASSERT_EQ(memcmp(t->data, b, sizeof(b)), 0);
    t = safetensors_find(st, "empty");
    ASSERT_EQ(t->numel, 0);
    ASSERT_EQ(t->size, 0);
    ASSERT_TRUE(t->data == NULL);
    t = safetensors_find(st, "s");
    ASSERT_EQ(t->n_dims, 0);
    ASSERT_EQ(t->numel, 1);
    ASSERT_EQ(((const unsigned char *)t->data)[1], 0x3f);
    ASSERT_TRUE(safetensors_find(st, "c") == NULL);
    ASSERT_TRUE(safetensors_find(st, "") == NULL);

    /* Releasing pages is harmless (the data is re-read from the file) and range-checked. */
    t = safetensors_find(st, "a");
    ASSERT_OK(safetensors_release_pages(st, t->data, t->size));
    memcpy(got, t->data, sizeof(got));
    ASSERT_EQ(memcmp(got, a, sizeof(a)), 0);
    ASSERT_EQ(safetensors_release_pages(st, got, sizeof(got)), -EINVAL);
    ASSERT_EQ(safetensors_release_pages(st, t->data, 1 << 20), -EINVAL);

    ASSERT_STREQ(safetensors_dtype_name(SAFETENSORS_DTYPE_BF16), "BF16");
    ASSERT_EQ(safetensors_dtype_bits(SAFETENSORS_DTYPE_F64), 64);
    ASSERT_TRUE(safetensors_free(st) == NULL);
    ASSERT_TRUE(safetensors_free(NULL) == NULL);
}

TEST(empty_header_object)
{
    struct safetensors *st = NULL;

    write_file("{}", 0);
    ASSERT_OK(safetensors_open(path, &st, NULL));
    ASSERT_EQ(safetensors_count(st), 0);
    safetensors_free(st);
}

TEST(file_level_errors)
{
    char *msg = NULL;
    struct safetensors *st;

    ASSERT_EQ(safetensors_open("/nonexistent/model.safetensors", &st, &msg), -ENOENT);
    ASSERT_TRUE(strstr(msg, "/nonexistent/model.safetensors") != NULL);
    free(msg);
    write_file("{}", 0);
    expect_fail(tmpdir, -EBADMSG, "not a regular file", NULL);
    write_raw(0, NULL, 0, NULL, 0);
    ASSERT_EQ(truncate(path, 5), 0);
    expect_fail(path, -EBADMSG, "t.safetensors: ", "too short");
    /* NULL message pointer is fine too. */
    ASSERT_EQ(safetensors_open(path, &st, NULL), -EBADMSG);
}

TEST(header_length)
{
    write_raw(1ULL << 62, "{}", 2, NULL, 0);
    expect_fail(path, -EBADMSG, "exceeds the limit", NULL);
    write_raw(SAFETENSORS_MAX_HEADER + 1, "{}", 2, NULL, 0);
    expect_fail(path, -EBADMSG, "exceeds the limit", NULL);
    write_raw(100, "{}", 2, NULL, 0);
    expect_fail(path, -EBADMSG, "runs past the end", NULL);
    write_raw(0, NULL, 0, NULL, 0);
    expect_fail(path, -EBADMSG, "does not start with '{'", NULL);
}

TEST(bad_json)
{
    write_file("[1,2]", 0);
    expect_fail(path, -EBADMSG, "does not start with '{'", NULL);
    write_file("{\"a\":{\"dtype\":\"F32\",", 0);
    expect_fail(path, -EBADMSG, "not valid JSON", NULL);
    write_file("{\"a\":1} x", 0);
    expect_fail(path, -EBADMSG, "not valid JSON", NULL);
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8);
    expect_fail(path, -EBADMSG, "not valid JSON", "duplicate");
    write_file("{\"a\":[]}", 0);
    expect_fail(path, -EBADMSG, "tensor a: header entry is not an object", NULL);
    write_file("{\"__metadata__\":{\"x\":1}}", 0);
    expect_fail(path, -EBADMSG, "__metadata__", NULL);
    write_file("{\"\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
    expect_fail(path, -EBADMSG, "empty name", NULL);
}

TEST(bad_fields)
{
    write_file("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: unknown dtype \"F33\"", NULL);
    write_file("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: missing", "dtype");
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: shape[0]", NULL);
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: shape[0]", NULL);
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4);
    expect_fail(path, -EBADMSG, "tensor w: 9 dimensions", NULL);
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: \"data_offsets\"", NULL);
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: data_offsets [4,0] end before", NULL);
}

TEST(sizes_and_overflow)
{
    /* numel * dtype size must equal the byte range. */
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[384,383],\"data_offsets\":[0,8]}}", 8);
    expect_fail(path, -EBADMSG, "tensor w: data_offsets [0,8] hold 8 bytes", "needs 588288");
    write_file("{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,12]}}", 12);
    expect_fail(path, -EBADMSG, "shape [4] of F16 needs 8", NULL);
    /* Shape product overflowing 64 bits, and numel * bits overflowing. */
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],"
               "\"data_offsets\":[0,4]}}",
               4);
    expect_fail(path, -EBADMSG, "tensor w: shape", "overflows");
    write_file("{\"w\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],"
               "\"data_offsets\":[0,8]}}",
               8);
    expect_fail(path, -EBADMSG, "tensor w: shape", "no byte size");
    /* Offsets beyond 2^63 are not JSON integers jansson accepts: still a clean refusal. */
    write_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
               "\"data_offsets\":[18446744073709551615,0]}}",
               1);
    expect_fail(path, -EBADMSG, NULL, NULL);
}

TEST(offsets)
{
    /* Past the end of the file. */
    write_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    expect_fail(path, -EBADMSG, "tensor w: data_offsets [0,8] run past the end", NULL);
    /* Overlap. */
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12);
    expect_fail(path, -EBADMSG, "tensor b: data_offsets [4,12] overlap the previous tensor a",
                NULL);
    /* Same range twice. */
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8);
    expect_fail(path, -EBADMSG, "overlap", NULL);
    /* A hole. */
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12);
    expect_fail(path, -EBADMSG, "tensor b: data_offsets begin at 8, leaving a hole after 4", NULL);
    /* Not starting at 0. */
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_fail(path, -EBADMSG, "tensor a: data_offsets begin at 4", NULL);
    /* Trailing garbage after the last tensor. */
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9);
    expect_fail(path, -EBADMSG, "tensors end at data offset 4 but the file holds 9", NULL);
}

TEST(zzz_cleanup)
{
    if (!strstr(tmpdir, "XXXXXX")) {
        unlink(path);
        ASSERT_EQ(rmdir(tmpdir), 0);
    }
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
