/*
 * chunk-dump - print how coarch chunks files, or measure chunking throughput.
 *
 *   chunk-dump [-t MAX_TOKENS] [-m MIN_TOKENS] [-w] FILE... chunks as text, one block each
 *                                                           (-w: count words, -M DIR: the
 *                                                           model's tokenizer, else the
 *                                                           built-in estimate)
 *   chunk-dump --json [...] FILE...                          one JSON object per chunk
 *   chunk-dump --stats [...] FILE... | DIR                   totals: MB/s, chunks/s
 *
 * With --stats a directory argument is walked recursively (regular files only, symlinks not
 * followed); files whose language has no grammar are skipped unless --all is given.  A debugging
 * and benchmarking aid: not installed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunk.h"
#ifdef CHUNK_DUMP_TOKENIZER
#include "tokenizer.h"
#endif

struct stats {
    size_t files, bytes, chunks, lines, failed, max_tokens_seen, max_lines_seen;
    double seconds;
};

static int read_file(const char *path, char **ret, size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf;
    size_t off = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    while (off < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + off, (size_t)st.st_size - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    close(fd);
    *ret = buf;
    *ret_len = off;
    return 0;
}

/* -w: one token per whitespace-separated word (what test-chunk's count_words does). */
static size_t count_words(void *ctx, const char *s, size_t n)
{
    size_t t = 0;
    bool in = false;

    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        bool sp = s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r';
        t += !sp && !in;
        in = !sp;
    }
    return t;
}

#ifdef CHUNK_DUMP_TOKENIZER
/* -M DIR: the model's own WordPiece tokenizer, as coarchd counts. */
struct wordpiece {
    struct tokenizer *tok;
    struct tokens ids;
};

static size_t count_wordpiece(void *ctx, const char *s, size_t n)
{
    struct wordpiece *wp = ctx;
    int r = tokenizer_encode(wp->tok, s, n, UINT32_MAX / 2, &wp->ids);
    uint32_t sp = tokenizer_num_special_tokens(wp->tok);

    return r < 0 ? n : (size_t)r > sp ? (size_t)r - sp : 0;
}
#endif

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

enum mode {
    MODE_TEXT,
    MODE_JSON,
    MODE_STATS,
};

static void do_file(struct chunker *c, const char *path, const struct chunk_options *opt,
                    enum mode mode, struct stats *st)
{
    struct chunk_list l;
    char *buf = NULL;
    size_t len = 0;
    double t0;
    int r;

    r = read_file(path, &buf, &len);
    if (r < 0) {
        fprintf(stderr, "chunk-dump: %s: %s\n", path, strerror(-r));
        st->failed++;
        return;
    }
    chunk_list_init(&l);
    t0 = now_s();
    r = chunk_file(c, path, buf, len, opt, &l);
    st->seconds += now_s() - t0;
    if (r < 0) {
        fprintf(stderr, "chunk-dump: %s: %s\n", path, strerror(-r));
        st->failed++;
        free(buf);
        return;
    }
    st->files++;
    st->bytes += len;
    st->chunks += l.n;
    for (size_t i = 0; i < l.n; i++) {
        const struct chunk *ch = &l.items[i];
        size_t nl = ch->end_line - ch->start_line + 1;
        if (ch->n_tokens > st->max_tokens_seen)
            st->max_tokens_seen = ch->n_tokens;
        if (nl > st->max_lines_seen)
            st->max_lines_seen = nl;
        st->lines += nl;
        if (mode == MODE_TEXT) {
            printf("=== %s:%u-%u%s", path, ch->unit_start_line, ch->unit_end_line,
                   ch->title ? " title" : "");
            if (ch->start_line != ch->unit_start_line || ch->end_line != ch->unit_end_line)
                printf(" (group %u-%u)", ch->start_line, ch->end_line);
            if (ch->def_start_line != ch->unit_start_line || ch->def_end_line != ch->unit_end_line)
                printf(" (definition %u-%u)", ch->def_start_line, ch->def_end_line);
            printf(" [%s] %s (%u tokens)\n%s\n", ch->language, ch->symbol, ch->n_tokens,
                   ch->text + ch->header_len);
        } else if (mode == MODE_JSON) {
            printf("{\"path\":");
            json_str(path, strlen(path));
            printf(",\"start_line\":%u,\"end_line\":%u,\"unit_start_line\":%u,"
                   "\"unit_end_line\":%u,\"def_start_line\":%u,\"def_end_line\":%u,"
                   "\"language\":\"%s\",\"symbol\":",
                   ch->start_line, ch->end_line, ch->unit_start_line, ch->unit_end_line,
                   ch->def_start_line, ch->def_end_line, ch->language);
            json_str(ch->symbol, strlen(ch->symbol));
            printf(",\"title\":%s,\"tokens\":%u,\"text\":", ch->title ? "true" : "false",
                   ch->n_tokens);
            json_str(ch->text, ch->text_len);
            printf("}\n");
        }
    }
    chunk_list_release(&l);
    free(buf);
}

static void do_tree(struct chunker *c, const char *dir, const struct chunk_options *opt, bool all,
                    struct stats *st)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d) {
        fprintf(stderr, "chunk-dump: %s: %s\n", dir, strerror(errno));
        return;
    }
    while ((e = readdir(d))) {
        char path[4096];
        struct stat sb;

        if (e->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
            continue;
        if (lstat(path, &sb) < 0)
            continue;
        if (S_ISDIR(sb.st_mode))
            do_tree(c, path, opt, all, st);
        else if (S_ISREG(sb.st_mode) &&
                 (all || chunk_language_has_grammar(chunk_detect_language(path, NULL, 0))))
            do_file(c, path, opt, MODE_STATS, st);
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    struct chunk_options opt;
    struct chunker *c;
    struct stats st = {0};
    enum mode mode = MODE_TEXT;
    bool all = false;
    int i, r;

    chunk_options_init(&opt);
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0)
            mode = MODE_JSON;
        else if (strcmp(argv[i], "--stats") == 0)
            mode = MODE_STATS;
        else if (strcmp(argv[i], "--all") == 0)
            all = true;
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            opt.max_tokens = opt.merge_tokens = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            opt.min_tokens = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-w") == 0)
            opt.count_tokens = count_words;
#ifdef CHUNK_DUMP_TOKENIZER
        else if (strcmp(argv[i], "-M") == 0 && i + 1 < argc) {
            char *err = NULL;
            static struct wordpiece wp;
            r = tokenizer_load(argv[++i], &wp.tok, &err);
            if (r < 0) {
                fprintf(stderr, "chunk-dump: %s\n", err ? err : strerror(-r));
                return 1;
            }
            tokens_init(&wp.ids, false);
            opt.count_tokens = count_wordpiece;
            opt.count_ctx = &wp;
        }
#endif
        else if (strcmp(argv[i], "-l") == 0 && i + 1 < argc)
            opt.language = argv[++i];
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            opt.segment_bytes = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: chunk-dump [--json|--stats] [--all] [-t MAX_TOKENS] "
                            "[-m MIN_TOKENS] [-w | -M MODEL_DIR] [-l LANGUAGE] [-s SEGMENT_BYTES] "
                            "FILE|DIR...\n");
            return 2;
        }
    }
    r = chunker_new(&c);
    if (r < 0) {
        fprintf(stderr, "chunk-dump: %s\n", strerror(-r));
        return 1;
    }
    for (; i < argc; i++) {
        struct stat sb;
        if (mode == MODE_STATS && stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode))
            do_tree(c, argv[i], &opt, all, &st);
        else
            do_file(c, argv[i], &opt, mode, &st);
    }
    chunker_free(c);
    if (mode == MODE_STATS)
        printf("files=%zu bytes=%zu chunks=%zu failed=%zu time=%.3fs  %.2f MB/s  %.0f chunks/s  "
               "avg_lines=%.1f max_lines=%zu max_tokens=%zu\n",
               st.files, st.bytes, st.chunks, st.failed, st.seconds,
               st.seconds > 0 ? (double)st.bytes / 1e6 / st.seconds : 0.0,
               st.seconds > 0 ? (double)st.chunks / st.seconds : 0.0,
               st.chunks ? (double)st.lines / (double)st.chunks : 0.0, st.max_lines_seen,
               st.max_tokens_seen);
    return st.failed ? 1 : 0;
}
