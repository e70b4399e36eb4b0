/*
 * helpers.h - what the coarchd integration tests share: starting a daemon for a test, talking
 * to it, reading status, and asserting on answers.  Every helper asserts (test.h) instead of
 * returning errors, so a test reads as the scenario it checks.
 *
 * Threading: main thread only (ASSERT_* longjmp to the test runner).
 */
#ifndef COARCH_TEST_INTEGRATION_HELPERS_H
#define COARCH_TEST_INTEGRATION_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "spawn.h"

void require_coarchd(void);
void start_env(struct tdaemon *d, const char *const *env);
void start(struct tdaemon *d);
struct tclient *connect_ok(const struct tdaemon *d);
/* A fresh connection pings fine: the daemon is alive and serving. */
void assert_serving(const struct tdaemon *d);
int wait_exit_logged(struct tdaemon *d, int timeout_ms);
/* SIGTERM and a clean exit (0: no leak, loop closed, socket removed). */
void stop_ok(struct tdaemon *d);
void send_sleep(struct tclient *c, uint32_t id, int64_t ms);
struct proto_msg *read_response(struct tclient *c, int timeout_ms);
void expect_error(struct tclient *c, uint32_t id, int64_t code);
void expect_true(struct tclient *c, uint32_t id);
struct proto_msg *status(struct tclient *c);
uint64_t map_uint(const msgpack_object *map, const char *key);
/* status.<key>, or status.<section>.<key> */
uint64_t status_uint(struct tclient *c, const char *section, const char *key);
bool map_str_is(const msgpack_object *map, const char *key, const char *want);
/* Frames raw payload bytes. */
size_t frame(uint8_t *out, const void *payload, uint32_t len);
void send_payload(struct tclient *c, const void *payload, uint32_t len);
uint64_t now_ms(void);
/* Polls status until connections == want (connections close asynchronously). */
void wait_connections(struct tclient *c, uint64_t want);
/* The daemon accepted c and closed it without answering (refusals close at once, so the
 * request may not even be sendable any more). */
void expect_refused(struct tclient *c);
void write_file(const char *path, const char *text);
/* Runs coarchd with args/env to completion; returns its exit code, log in d->log. */
int run_to_exit(struct tdaemon *d, const char *const *args, const char *const *env);
void subscribe(struct tclient *c, const char *event);

#endif
