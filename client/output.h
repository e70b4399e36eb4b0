/*
 * output.h - how coarchctl prints daemon results: JSON for scripts (--json) and an indented
 * "key: value" form for people.
 *
 * The JSON writer converts any msgpack value, so a command whose result is a map only needs
 * output_json() to support --json, and keys a newer daemon adds pass through untouched:
 *
 *   nil -> null, bool -> true/false, int/uint -> integer (exact, all 64 bits), float ->
 *   shortest text that reads back as the same double (NaN and infinities -> null, which JSON
 *   cannot express otherwise), str -> string, bin -> base64 string, ext -> {"ext": type,
 *   "data": base64}, array -> array, map -> object.
 *
 * Strings are escaped per RFC 8259; bytes that are not valid UTF-8 (msgpack does not promise
 * UTF-8) become U+FFFD, so the output is always valid JSON that any parser accepts.  Map keys
 * that are not strings are written as strings of their JSON text (1 -> "1").
 *
 * Everything writes to a caller's FILE *; errors surface through ferror() on it, as with
 * stdio, and are checked once when coarchctl flushes stdout.  No global state; thread-safe
 * as far as the FILE * is.
 */
#ifndef COARCH_CLIENT_OUTPUT_H
#define COARCH_CLIENT_OUTPUT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One JSON value, then a newline.  pretty: objects and arrays indented by two spaces. */
void output_json(FILE *f, const msgpack_object *o, bool pretty);
/* As output_json() for a value given as msgpack bytes (as built with a msgpack_packer);
 * -EBADMSG when `data` is not exactly one msgpack value, -ENOMEM. */
int output_json_packed(FILE *f, const char *data, size_t len, bool pretty);
/* A JSON string literal of `len` bytes of `s`, quotes included. */
void output_json_string(FILE *f, const char *s, size_t len);
/* Base64 (RFC 4648, padded) of `len` bytes, no quotes. */
void output_base64(FILE *f, const unsigned char *data, size_t len);

/*
 * People's form: a map prints as one "key: value" line per entry, nested maps and arrays of
 * maps indented below their key, arrays of scalars as "a, b, c"; strings are printed without
 * quotes, control characters shown as '?'.  `indent` is the number of leading spaces.
 */
void output_human(FILE *f, const msgpack_object *o, int indent);
/* One scalar as output_human() prints it (no newline). */
void output_human_scalar(FILE *f, const msgpack_object *o);

/* "512 B", "1.5 KiB", "12.3 MiB", ... into buf. */
void output_format_bytes(uint64_t bytes, char *buf, size_t size);
/* "850 ms", "42 s", "3m 07s", "2h 05m", "3d 04h" into buf. */
void output_format_duration_ms(uint64_t ms, char *buf, size_t size);

#endif
