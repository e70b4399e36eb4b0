/*
 * sha256.h - SHA-256 (FIPS 180-4), for content hashes of indexed files and chunks.
 *
 * Why SHA-256 and not a faster non-cryptographic hash: the hash decides whether a file is
 * re-embedded, and a collision would silently keep stale vectors; at ~300 MB/s it costs far
 * less than chunking and embedding the same bytes.
 */
#ifndef COARCH_UTIL_SHA256_H
#define COARCH_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32

struct sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t buf_len;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[SHA256_DIGEST_SIZE]);
/* One-shot. */
void sha256(const void *data, size_t len, uint8_t out[SHA256_DIGEST_SIZE]);

#endif
