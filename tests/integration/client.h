/*
 * client.h - a small blocking protocol client for integration tests: connect to coarchd,
 * send requests (or raw bytes), read messages with a timeout.  It speaks through proto/ like
 * every real client, but keeps everything visible: raw sends for malformed input, and every
 * received message handed back as is.
 *
 * Errors are negative errno: -ETIMEDOUT, -ECONNRESET at end of stream (EOF or a reset from
 * the daemon), -EMSGSIZE/-EBADMSG for frames that break the limits, -ENOMEM.
 *
 * Threading: one thread per client; nothing global.
 */
#ifndef COARCH_TEST_CLIENT_H
#define COARCH_TEST_CLIENT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct tclient;

/* One connect attempt: 0, or -errno of connect(2) (-ENOENT, -ECONNREFUSED, -EACCES...). */
int tclient_connect(const char *path, struct tclient **ret_client);
/* Retries -ENOENT/-ECONNREFUSED every 10 ms until timeout_ms has passed. */
int tclient_connect_wait(const char *path, int timeout_ms, struct tclient **ret_client);
struct tclient *tclient_free(struct tclient *c); /* accepts NULL, returns NULL */
int tclient_fd(const struct tclient *c);

/* Writes all of buf (blocking).  0 or -errno (-EPIPE once the daemon closed). */
int tclient_send_raw(struct tclient *c, const void *buf, size_t len);

/* A request in two steps: begin packs the head (then pack n_params pairs on the returned
 * packer), end frames and sends it.  Returns NULL / negative errno on failure. */
msgpack_packer *tclient_begin(struct tclient *c, uint32_t id, const char *method,
                              uint32_t n_params);
int tclient_end(struct tclient *c);
/* A request without parameters. */
int tclient_send(struct tclient *c, uint32_t id, const char *method);

/* Next message, waiting at most timeout_ms.  0 with *ret_msg (proto_msg_free() it). */
int tclient_read(struct tclient *c, int timeout_ms, struct proto_msg **ret_msg);
/* Next response, skipping (and counting in *ret_skipped, may be NULL) notifications. */
int tclient_read_response(struct tclient *c, int timeout_ms, size_t *ret_skipped,
                          struct proto_msg **ret_msg);

/* Sends a parameterless request with a fresh id and waits for its response. */
int tclient_call(struct tclient *c, const char *method, struct proto_msg **ret_msg);
/* ping and check for "pong": 0, or a negative errno / -EPROTO for a wrong answer. */
int tclient_ping(struct tclient *c);

/* Reads until end of stream, discarding; returns the number of messages seen before it, or
 * -ETIMEDOUT when the daemon kept the connection open past timeout_ms. */
int tclient_wait_closed(struct tclient *c, int timeout_ms);

/* A fresh request id for this client. */
uint32_t tclient_next_id(struct tclient *c);

/* Helpers for responses: the error code (0 when none), a result string compared to s. */
int64_t tmsg_error_code(const struct proto_msg *m);
bool tmsg_error_mentions(const struct proto_msg *m, const char *needle);
bool tmsg_result_is_str(const struct proto_msg *m, const char *s);
bool tmsg_result_is_true(const struct proto_msg *m);

#endif
