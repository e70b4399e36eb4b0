/*
 * output.c - see output.h.
 */
#include "output.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

/* ---- UTF-8 ---- */

/*
 * Length of the valid UTF-8 sequence at s[0..len), or 0 when it is not one: overlong forms,
 * surrogates (U+D800..DFFF) and code points above U+10FFFF are rejected, as RFC 3629 says.
 */
static size_t utf8_valid_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp, min;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void output_json_string(FILE *f, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    putc('"', f);
    while (i < len) {
        unsigned char c = s[i];
        size_t n;

        switch (c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\b':
            fputs("\\b", f);
            break;
        case '\f':
            fputs("\\f", f);
            break;
        default:
            if (c < 0x20) {
                fprintf(f, "\\u%04x", c);
                break;
            }
            n = utf8_valid_len(s + i, len - i);
            if (n == 0) {
                fputs("\\ufffd", f); /* one replacement per invalid byte, as decoders do */
                break;
            }
            fwrite(s + i, 1, n, f);
            i += n;
            continue;
        }
        i++;
    }
    putc('"', f);
}

void output_base64(FILE *f, const unsigned char *d, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        putc(tab[v >> 18], f);
        putc(tab[(v >> 12) & 63], f);
        putc(tab[(v >> 6) & 63], f);
        putc(tab[v & 63], f);
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        putc(tab[v >> 18], f);
        putc(tab[(v >> 12) & 63], f);
        fputs("==", f);
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        putc(tab[v >> 18], f);
        putc(tab[(v >> 12) & 63], f);
        putc(tab[(v >> 6) & 63], f);
        putc('=', f);
    }
}

/*
 * The shortest %g text that reads back as exactly `v` (so 0.1 prints as 0.1, not
 * 0.10000000000000001), with ".0" added when it would otherwise read as an integer: a float
 * stays a float for the reader (Python's json gives float, not int).  float32 values are
 * widened exactly, so their shortest double text is used; that is what they are.
 */
static void format_double(double v, char *buf, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strpbrk(buf, ".eE")) {
        size_t l = strlen(buf);
        if (l + 3 <= size)
            memcpy(buf + l, ".0", 3);
    }
}

static void json_indent(FILE *f, bool pretty, int depth)
{
    if (!pretty)
        return;
    putc('\n', f);
    for (int i = 0; i < depth; i++)
        fputs("  ", f);
}

static void json_value(FILE *f, const msgpack_object *o, bool pretty, int depth);

/* JSON object keys must be strings: anything else is written as the string of its JSON. */
static void json_key(FILE *f, const msgpack_object *k)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m;

    if (k->type == MSGPACK_OBJECT_STR) {
        output_json_string(f, k->via.str.ptr, k->via.str.size);
        return;
    }
    m = open_memstream(&text, &len);
    if (!m) {
        fputs("\"?\"", f);
        return;
    }
    json_value(m, k, false, 0);
    if (fclose(m) != 0 || !text) {
        free(text);
        fputs("\"?\"", f);
        return;
    }
    output_json_string(f, text, len);
    free(text);
}

static void json_value(FILE *f, const msgpack_object *o, bool pretty, int depth)
{
    char num[64];

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        fputs("null", f);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        fputs(o->via.boolean ? "true" : "false", f);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        fprintf(f, "%" PRIu64, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        fprintf(f, "%" PRId64, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) {
            fputs("null", f);
            break;
        }
        format_double(o->via.f64, num, sizeof(num));
        fputs(num, f);
        break;
    case MSGPACK_OBJECT_STR:
        output_json_string(f, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        putc('"', f);
        output_base64(f, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
        putc('"', f);
        break;
    case MSGPACK_OBJECT_EXT:
        fprintf(f, pretty ? "{\"ext\": %d, \"data\": \"" : "{\"ext\":%d,\"data\":\"",
                (int)o->via.ext.type);
        output_base64(f, (const unsigned char *)o->via.ext.ptr, o->via.ext.size);
        fputs("\"}", f);
        break;
    case MSGPACK_OBJECT_ARRAY:
        putc('[', f);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i > 0)
                putc(',', f);
            json_indent(f, pretty, depth + 1);
            json_value(f, &o->via.array.ptr[i], pretty, depth + 1);
        }
        if (o->via.array.size > 0)
            json_indent(f, pretty, depth);
        putc(']', f);
        break;
    case MSGPACK_OBJECT_MAP:
        putc('{', f);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i > 0)
                putc(',', f);
            json_indent(f, pretty, depth + 1);
            json_key(f, &o->via.map.ptr[i].key);
            fputs(pretty ? ": " : ":", f);
            json_value(f, &o->via.map.ptr[i].val, pretty, depth + 1);
        }
        if (o->via.map.size > 0)
            json_indent(f, pretty, depth);
        putc('}', f);
        break;
    default:
        fputs("null", f); /* no other msgpack type exists; keep the output valid JSON */
        break;
    }
}

void output_json(FILE *f, const msgpack_object *o, bool pretty)
{
    json_value(f, o, pretty, 0);
    putc('\n', f);
}

int output_json_packed(FILE *f, const char *data, size_t len, bool pretty)
{
    msgpack_unpacked u;
    size_t off = 0;
    int r = 0;

    msgpack_unpacked_init(&u);
    switch (msgpack_unpack_next(&u, data, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        if (off != len) {
            r = -EBADMSG;
            break;
        }
        output_json(f, &u.data, pretty);
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        r = -ENOMEM;
        break;
    default:
        r = -EBADMSG;
        break;
    }
    msgpack_unpacked_destroy(&u);
    return r;
}

/* ---- people's form ---- */

static bool is_scalar(const msgpack_object *o)
{
    return o->type != MSGPACK_OBJECT_ARRAY && o->type != MSGPACK_OBJECT_MAP;
}

static void human_text(FILE *f, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        putc(c < 0x20 || c == 0x7f ? '?' : c, f);
    }
}

void output_human_scalar(FILE *f, const msgpack_object *o)
{
    char num[64];

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        fputs("-", f);
        break;
    case MSGPACK_OBJECT_STR:
        human_text(f, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        fprintf(f, "<%" PRIu32 " bytes>", o->via.bin.size);
        break;
    case MSGPACK_OBJECT_EXT:
        fprintf(f, "<ext %d, %" PRIu32 " bytes>", (int)o->via.ext.type, o->via.ext.size);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        snprintf(num, sizeof(num), "%g", o->via.f64);
        fputs(num, f);
        break;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        json_value(f, o, false, 0);
        break;
    default:
        json_value(f, o, false, 0);
        break;
    }
}

static void human_key(FILE *f, const msgpack_object *k, int indent)
{
    fprintf(f, "%*s", indent, "");
    output_human_scalar(f, k);
    putc(':', f);
}

static bool array_all_scalars(const msgpack_object *o)
{
    for (uint32_t i = 0; i < o->via.array.size; i++)
        if (!is_scalar(&o->via.array.ptr[i]))
            return false;
    return true;
}

static void human_value_after_key(FILE *f, const msgpack_object *v, int indent);

static void human_array(FILE *f, const msgpack_object *o, int indent)
{
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];

        fprintf(f, "%*s-", indent, "");
        if (e->type == MSGPACK_OBJECT_MAP && e->via.map.size > 0) {
            /* "- key: value" for the first entry, the rest aligned under it. */
            for (uint32_t j = 0; j < e->via.map.size; j++) {
                human_key(f, &e->via.map.ptr[j].key, j == 0 ? 1 : indent + 2);
                human_value_after_key(f, &e->via.map.ptr[j].val, indent + 2);
            }
        } else {
            human_value_after_key(f, e, indent);
        }
    }
}

/* Prints what follows "key:" (or "-"), ending with a newline. */
static void human_value_after_key(FILE *f, const msgpack_object *v, int indent)
{
    if (v->type == MSGPACK_OBJECT_MAP && v->via.map.size > 0) {
        putc('\n', f);
        output_human(f, v, indent + 2);
    } else if (v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size > 0 && !array_all_scalars(v)) {
        putc('\n', f);
        human_array(f, v, indent + 2);
    } else if (v->type == MSGPACK_OBJECT_ARRAY) {
        putc(' ', f);
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            if (i > 0)
                fputs(", ", f);
            output_human_scalar(f, &v->via.array.ptr[i]);
        }
        if (v->via.array.size == 0)
            fputs("(none)", f);
        putc('\n', f);
    } else {
        putc(' ', f);
        if (v->type == MSGPACK_OBJECT_MAP)
            fputs("(none)", f);
        else
            output_human_scalar(f, v);
        putc('\n', f);
    }
}

void output_human(FILE *f, const msgpack_object *o, int indent)
{
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            human_key(f, &o->via.map.ptr[i].key, indent);
            human_value_after_key(f, &o->via.map.ptr[i].val, indent);
        }
    } else if (o->type == MSGPACK_OBJECT_ARRAY && !array_all_scalars(o)) {
        human_array(f, o, indent);
    } else {
        fprintf(f, "%*s", indent, "");
        if (o->type == MSGPACK_OBJECT_ARRAY) {
            for (uint32_t i = 0; i < o->via.array.size; i++) {
                if (i > 0)
                    fputs(", ", f);
                output_human_scalar(f, &o->via.array.ptr[i]);
            }
        } else {
            output_human_scalar(f, o);
        }
        putc('\n', f);
    }
}

void output_format_bytes(uint64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    size_t u = 0;

    if (bytes < 1024) {
        snprintf(buf, size, "%" PRIu64 " B", bytes);
        return;
    }
    v /= 1024;
    while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void output_format_duration_ms(uint64_t ms, char *buf, size_t size)
{
    uint64_t s = ms / 1000;

    if (ms < 1000)
        snprintf(buf, size, "%" PRIu64 " ms", ms);
    else if (s < 60)
        snprintf(buf, size, "%" PRIu64 " s", s);
    else if (s < 3600)
        snprintf(buf, size, "%" PRIu64 "m %02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%" PRIu64 "h %02" PRIu64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(buf, size, "%" PRIu64 "d %02" PRIu64 "h", s / 86400, s / 3600 % 24);
}
