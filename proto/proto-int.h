/*
 * proto-int.h - private to proto/: the allocation-free pre-scan and the decode entry point that
 * reports why a payload was rejected.
 *
 * The pre-scan (scan.c) walks the msgpack bytes with a fixed stack of PROTO_DEPTH_MAX counters,
 * checking every length against the bytes actually present and against the limits, and computes
 * how many bytes msgpack_unpack() will take from the zone.  Only a payload that passes is handed
 * to msgpack_unpack(), which then cannot be made to allocate more than the scan predicted.
 */
#ifndef COARCH_PROTO_INT_H
#define COARCH_PROTO_INT_H

#include "proto.h"

#define PROTO_DEFAULT_MAX_FRAME (16u * 1024 * 1024)
#define PROTO_DEFAULT_MAX_DEPTH 32u
#define PROTO_DEFAULT_MAX_ELEMENTS 1000000u

/* Why a payload was rejected: a PROTO_ERROR_* code and a short reason for logs and replies. */
struct proto_decode_error {
    int code;
    char reason[96];
};

/* Fills in zero fields with defaults and clamps max_depth; `in` may be NULL. */
void proto_limits_normalize(const struct proto_limits *in, struct proto_limits *ret_limits);

/*
 * Checks that p[0..len) is exactly one msgpack value within `lim` (normalized).  Returns 0 and
 * *ret_zone_bytes (what msgpack_unpack will allocate for arrays and maps), or -EBADMSG with err
 * filled in.  Allocates nothing.
 */
int proto_scan(const uint8_t *p, size_t len, const struct proto_limits *lim, size_t *ret_zone_bytes,
               struct proto_decode_error *err);

/*
 * Recovers the id of a request or response from raw bytes, however broken the rest is: the
 * payload must start with an array of at least two items whose first is 0 or 1 and whose
 * second is an integer in [0, UINT32_MAX].  Returns the id or -1.
 */
int64_t proto_peek_id(const uint8_t *p, size_t len);

/* proto_decode_payload() that also says why it failed (err may be NULL). */
int proto_decode_payload_err(const void *payload, size_t len, const struct proto_limits *limits,
                             struct proto_msg **ret_msg, int64_t *ret_id,
                             struct proto_decode_error *err);

void proto_decode_error_set(struct proto_decode_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
