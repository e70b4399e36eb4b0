/*
 * cmd-search.c - `coarchctl search [options] [--] QUERY...`: semantic, lexical or hybrid search
 * over indexed repositories.
 *
 * --json prints the daemon's result map unchanged, {"mode", "took_ms", "results": [...]}, as
 * DESIGN.md section 7 promises the evaluation: every result carries path (relative to its
 * repository), start_line and end_line (1-based, inclusive: the definition, or the part of a
 * long one that matched), definition_start/end_line, snippet_line (where the snippet starts),
 * score and the rest as the daemon sent them.  One line when piped, so `json.loads(stdout)`
 * always works.
 *
 * People's form, per hit:
 *
 *     src/config.py:12-30  0.8123  parse_config_file
 *         12  def parse_config_file(path):
 *         13      settings = {}
 *
 * Paths are relative to the repository with --repo; without it (every indexed repository is
 * searched) they are absolute, or relative to the working directory when inside it, so they can
 * be opened from where the command ran.  On a terminal (and NO_COLOR unset) the location is
 * coloured and the query's words are shown bold in the snippet.  Snippet bytes come from the
 * user's files: control characters are shown as '?' so a file cannot drive the terminal.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "macro.h"

#define SEARCH_MAX_TERMS 32

struct style {
    const char *path, *range, *score, *symbol, *lineno, *match, *reset;
};

static const struct style plain = {"", "", "", "", "", "", ""};
static const struct style color = {
    .path = "\033[35m",
    .range = "\033[32m",
    .score = "\033[2m",
    .symbol = "\033[36m",
    .lineno = "\033[2m",
    .match = "\033[1m",
    .reset = "\033[0m",
};

struct term {
    const char *s;
    size_t len;
};

static bool use_color(void)
{
    const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");

    return isatty(STDOUT_FILENO) && !(nc && nc[0]) && !(term && strcmp(term, "dumb") == 0);
}

/* The query's words (runs of letters, digits and '_'; two characters or more), borrowed. */
static size_t split_terms(const char *q, struct term *terms, size_t max)
{
    size_t n = 0;

    while (*q && n < max) {
        const char *s;

        while (*q && !(isalnum((unsigned char)*q) || *q == '_'))
            q++;
        s = q;
        while (*q && (isalnum((unsigned char)*q) || *q == '_'))
            q++;
        if (q - s >= 2)
            terms[n++] = (struct term){s, (size_t)(q - s)};
    }
    return n;
}

/*
 * Length of the query term matching at line[i], or 0.  A match must start a word or a part of
 * an identifier (after a non-alphanumeric, '_' or a lower-to-upper case change), so "config"
 * lights up in parse_config_file and readConfig but "to" does not in "token".
 */
static size_t match_at(const char *line, size_t len, size_t i, const struct term *terms,
                       size_t n_terms)
{
    size_t best = 0;

    if (i > 0) {
        unsigned char p = (unsigned char)line[i - 1], c = (unsigned char)line[i];
        bool boundary = !isalnum(p) || (islower(p) && isupper(c));
        if (!boundary)
            return 0;
    }
    for (size_t t = 0; t < n_terms; t++)
        if (terms[t].len <= len - i && terms[t].len > best &&
            strncasecmp(line + i, terms[t].s, terms[t].len) == 0)
            best = terms[t].len;
    return best;
}

static void put_sanitized(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        putchar(c == '\t' || c >= 0x20 ? (c == 0x7f ? '?' : c) : '?');
    }
}

static void print_snippet_line(const char *line, size_t len, const struct term *terms,
                               size_t n_terms, const struct style *st)
{
    size_t i = 0, plain_start = 0;

    if (!st->match[0] || n_terms == 0) {
        put_sanitized(line, len);
        return;
    }
    while (i < len) {
        size_t m = match_at(line, len, i, terms, n_terms);
        if (!m) {
            i++;
            continue;
        }
        put_sanitized(line + plain_start, i - plain_start);
        fputs(st->match, stdout);
        put_sanitized(line + i, m);
        fputs(st->reset, stdout);
        i += m;
        plain_start = i;
    }
    put_sanitized(line + plain_start, len - plain_start);
}

static void print_snippet(const char *s, size_t len, uint64_t first_line, const struct term *terms,
                          size_t n_terms, const struct style *st)
{
    uint64_t lineno = first_line;

    /* Trailing blank lines say nothing. */
    while (len > 0 &&
           (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    while (len > 0) {
        const char *nl = memchr(s, '\n', len);
        size_t l = nl ? (size_t)(nl - s) : len;
        size_t shown = l > 0 && s[l - 1] == '\r' ? l - 1 : l;

        printf("    %s%6" PRIu64 "%s  ", st->lineno, lineno++, st->reset);
        print_snippet_line(s, shown, terms, n_terms, st);
        putchar('\n');
        if (!nl)
            break;
        len -= l + 1;
        s = nl + 1;
    }
}

/* Where a hit is, as people should see it (see the header comment); writes buf. */
static void display_path(const msgpack_object *hit, bool repo_given, const char *cwd, char *buf,
                         size_t size)
{
    const char *path = "", *repo = "";
    size_t plen = 0, rlen = 0, cwdlen = strlen(cwd);

    (void)proto_get_str(hit, "path", &path, &plen);
    (void)proto_get_str(hit, "repo", &repo, &rlen);
    if (repo_given || rlen == 0) {
        snprintf(buf, size, "%.*s", (int)plen, path);
        return;
    }
    snprintf(buf, size, "%.*s/%.*s", (int)rlen, repo, (int)plen, path);
    if (cwdlen > 1 && strncmp(buf, cwd, cwdlen) == 0 && buf[cwdlen] == '/')
        memmove(buf, buf + cwdlen + 1, strlen(buf + cwdlen + 1) + 1);
}

enum search_output {
    SEARCH_OUTPUT_PEOPLE,  /* location, score, symbol, snippet */
    SEARCH_OUTPUT_VIMGREP, /* path:line:col:text, one line per hit */
    SEARCH_OUTPUT_FILES,   /* each file once, best first */
};

/* The first line of a hit's snippet, for the one-line form. */
static void first_line(const msgpack_object *hit, const char **ret, size_t *ret_len)
{
    const char *snippet = "", *nl;
    size_t len = 0;

    (void)proto_get_str(hit, "snippet", &snippet, &len);
    nl = memchr(snippet, '\n', len);
    *ret = snippet;
    *ret_len = nl ? (size_t)(nl - snippet) : len;
}

/* Whether two hits are in the same file: the same repository and path. */
static bool same_file(const msgpack_object *a, const msgpack_object *b)
{
    const char *pa = "", *pb = "", *ra = "", *rb = "";
    size_t la = 0, lb = 0, rla = 0, rlb = 0;

    (void)proto_get_str(a, "path", &pa, &la);
    (void)proto_get_str(b, "path", &pb, &lb);
    (void)proto_get_str(a, "repo", &ra, &rla);
    (void)proto_get_str(b, "repo", &rb, &rlb);
    return la == lb && rla == rlb && memcmp(pa, pb, la) == 0 && memcmp(ra, rb, rla) == 0;
}

/* --vimgrep and -l: paths people can open from here (relative to the working directory inside
 * it, else absolute), whatever --repo said.  -l prints a file at its best hit only. */
static void print_lines(const msgpack_object *results, enum search_output output, const char *cwd)
{
    char where[2 * PATH_MAX + 2];

    for (uint32_t i = 0; i < results->via.array.size; i++) {
        const msgpack_object *hit = &results->via.array.ptr[i];
        uint64_t start = 0;
        const char *text;
        size_t tlen;
        bool seen = false;

        for (uint32_t k = 0; output == SEARCH_OUTPUT_FILES && k < i && !seen; k++)
            seen = same_file(&results->via.array.ptr[k], hit);
        if (seen)
            continue;
        display_path(hit, false, cwd, where, sizeof(where));
        put_sanitized(where, strlen(where));
        if (output == SEARCH_OUTPUT_FILES) {
            putchar('\n');
            continue;
        }
        (void)proto_get_uint(hit, "start_line", &start);
        (void)proto_get_uint(hit, "snippet_line", &start);
        first_line(hit, &text, &tlen);
        printf(":%" PRIu64 ":1:", start);
        put_sanitized(text, tlen);
        putchar('\n');
    }
}

static void print_hits(const msgpack_object *res, const char *query, bool repo_given,
                       enum search_output output)
{
    const msgpack_object *results = proto_map_get(res, "results");
    const struct style *st = use_color() ? &color : &plain;
    struct term terms[SEARCH_MAX_TERMS];
    size_t n_terms = split_terms(query, terms, SEARCH_MAX_TERMS);
    char cwd[PATH_MAX] = "", where[2 * PATH_MAX + 2];

    if (!getcwd(cwd, sizeof(cwd)))
        cwd[0] = '\0';
    if (!results || results->type != MSGPACK_OBJECT_ARRAY || results->via.array.size == 0) {
        /* The query as typed, but not a pasted file's worth of it. */
        int n = (int)strlen(query);
        fprintf(stderr, "coarchctl search: no results for '%.*s%s'\n", n > 60 ? 57 : n, query,
                n > 60 ? "..." : "");
        return;
    }
    if (output != SEARCH_OUTPUT_PEOPLE) {
        print_lines(results, output, cwd);
        return;
    }
    for (uint32_t i = 0; i < results->via.array.size; i++) {
        const msgpack_object *hit = &results->via.array.ptr[i];
        const char *sym = "", *snippet = "";
        size_t slen = 0, snlen = 0;
        uint64_t start = 0, end = 0, def_start, def_end, snippet_line;
        double score = 0;

        (void)proto_get_uint(hit, "start_line", &start);
        (void)proto_get_uint(hit, "end_line", &end);
        def_start = start;
        def_end = end;
        snippet_line = start;
        (void)proto_get_uint(hit, "definition_start_line", &def_start);
        (void)proto_get_uint(hit, "definition_end_line", &def_end);
        (void)proto_get_uint(hit, "snippet_line", &snippet_line);
        (void)proto_get_double(hit, "score", &score);
        (void)proto_get_str(hit, "symbol", &sym, &slen);
        (void)proto_get_str(hit, "snippet", &snippet, &snlen);
        display_path(hit, repo_given, cwd, where, sizeof(where));

        if (i > 0)
            putchar('\n');
        fputs(st->path, stdout);
        put_sanitized(where, strlen(where));
        printf("%s:%s%" PRIu64 "-%" PRIu64 "%s  %s%.4f%s", st->reset, st->range, start, end,
               st->reset, st->score, score, st->reset);
        if (slen) {
            printf("  %s", st->symbol);
            put_sanitized(sym, slen);
            fputs(st->reset, stdout);
        }
        /* A definition too long for one hit: say which part this is. */
        if (def_start != start || def_end != end)
            printf("  (part of %" PRIu64 "-%" PRIu64 ", %" PRIu64 " lines)", def_start, def_end,
                   def_end - def_start + 1);
        putchar('\n');
        print_snippet(snippet, snlen, snippet_line, terms, n_terms, st);
    }
}

/* The query words joined with single spaces; NULL when out of memory. */
static char *join_words(int argc, char **argv)
{
    size_t len = 0, at = 0;
    char *q;

    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    q = malloc(len + 1);
    if (!q)
        return NULL;
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        if (i > 0)
            q[at++] = ' ';
        memcpy(q + at, argv[i], l);
        at += l;
    }
    q[at] = '\0';
    return q;
}

/* The query from standard input ("-"): at most SEARCH_MAX_STDIN bytes, trailing blanks cut. */
#define SEARCH_MAX_STDIN (1u << 20)

static char *read_stdin_query(void)
{
    char *q = malloc(SEARCH_MAX_STDIN + 1);
    size_t n = 0, got;

    if (!q)
        return NULL;
    while (n < SEARCH_MAX_STDIN && (got = fread(q + n, 1, SEARCH_MAX_STDIN - n, stdin)) > 0)
        n += got;
    while (n > 0 && isspace((unsigned char)q[n - 1]))
        n--;
    q[n] = '\0';
    return q;
}

static int search_run(struct client *cl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"repo", required_argument, NULL, 'r'},         {"all", no_argument, NULL, 'A'},
        {"mode", required_argument, NULL, 'm'},         {"lang", required_argument, NULL, 'L'},
        {"path", required_argument, NULL, 'p'},         {"vimgrep", no_argument, NULL, 'V'},
        {"files-with-matches", no_argument, NULL, 'l'}, {0},
    };
    const struct client_command *cmd = &client_cmd_search;
    const char *mode = NULL, *lang = NULL, *glob = NULL, *repo_arg = NULL;
    char *repo = NULL, *query = NULL, *end;
    enum search_output output = SEARCH_OUTPUT_PEOPLE;
    struct proto_msg *resp;
    msgpack_packer *pk;
    unsigned long k = 10;
    uint32_t n_params, n_repos = 1;
    bool all = false, implicit = false;
    int opt, r, code = CLIENT_EXIT_USAGE;

    while ((opt = client_getopt(cl, cmd, argc, argv, "k:r:m:p:l", opts, &code)) !=
           CLIENT_CONTINUE) {
        switch (opt) {
        case CLIENT_GETOPT_EXIT:
            return code;
        case 'k':
            errno = 0;
            k = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || !isdigit((unsigned char)optarg[0]) || k < 1 ||
                k > 1000)
                return client_usage_error(cmd, "-k '%s': expected a number of results in 1..1000",
                                          optarg);
            break;
        case 'r':
            repo_arg = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "hybrid") != 0 && strcmp(optarg, "semantic") != 0 &&
                strcmp(optarg, "lexical") != 0)
                return client_usage_error(cmd, "--mode '%s': expected hybrid, semantic or lexical",
                                          optarg);
            mode = optarg;
            break;
        case 'L':
            lang = optarg;
            break;
        case 'p':
            glob = optarg;
            break;
        case 'A':
            all = true;
            break;
        case 'V':
            output = SEARCH_OUTPUT_VIMGREP;
            break;
        case 'l':
            output = SEARCH_OUTPUT_FILES;
            break;
        }
    }
    if (optind >= argc)
        return client_usage_error(cmd, "missing the query ('-' reads it from standard input)");
    if (all && repo_arg)
        return client_usage_error(cmd, "--all and --repo exclude each other");
    if (argc - optind == 1 && strcmp(argv[optind], "-") == 0)
        query = read_stdin_query();
    else
        query = join_words(argc - optind, argv + optind);
    if (!query) {
        fprintf(stderr, "coarchctl: out of memory\n");
        return CLIENT_EXIT_FAILED;
    }
    if (!query[strspn(query, " \t\n")]) {
        free(query);
        return client_usage_error(cmd, "the query is empty");
    }
    if (repo_arg) {
        /* Resolved here: the daemon's working directory is /, not ours. */
        repo = realpath(repo_arg, NULL);
        if (!repo) {
            if (errno == ENOENT)
                fprintf(stderr, "coarchctl search: %s is not indexed (no such directory)\n",
                        repo_arg);
            else
                fprintf(stderr, "coarchctl search: --repo %s: %s\n", repo_arg, strerror(errno));
            r = CLIENT_EXIT_FAILED;
            goto out;
        }
    }

    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        goto out;
    /* Inside an indexed repository, that repository (as git and rg keep to the work tree). */
    if (!repo && !all) {
        r = client_repo_of_cwd(cl, &repo, &n_repos);
        if (r != CLIENT_EXIT_OK)
            goto out;
        implicit = repo != NULL;
    }
    n_params = 2 + !!repo + !!mode + !!lang + !!glob;
    r = client_request_begin(cl, "search", n_params, &pk);
    if (r != CLIENT_EXIT_OK)
        goto out;
    proto_pack_kv_str(pk, "query", query);
    proto_pack_kv_uint(pk, "k", k);
    if (repo)
        proto_pack_kv_str(pk, "repo", repo);
    if (mode)
        proto_pack_kv_str(pk, "mode", mode);
    if (lang)
        proto_pack_kv_str(pk, "lang", lang);
    if (glob)
        proto_pack_kv_str(pk, "path", glob);
    r = client_request_end(cl, &resp);
    if (r != CLIENT_EXIT_OK)
        goto out;
    if (cl->json)
        client_print_json(cl, &resp->result);
    else
        print_hits(&resp->result, query, repo != NULL && !implicit, output);
    {
        const msgpack_object *res = proto_map_get(&resp->result, "results");
        bool none = !res || res->type != MSGPACK_OBJECT_ARRAY || res->via.array.size == 0;
        /* Nothing found because nothing is indexed: say so, and fail like a missing --repo.
         * The repositories were counted already unless --all skipped the scoping. */
        if (none && !repo && all && client_repo_of_cwd(cl, &repo, &n_repos) != CLIENT_EXIT_OK)
            n_repos = 1; /* cannot tell: say nothing more than "no results" */
        if (none && !repo && n_repos == 0) {
            fprintf(stderr, "coarchctl search: nothing is indexed yet: index a repository "
                            "first (coarchctl index DIR)\n");
            r = CLIENT_EXIT_FAILED;
        }
    }
    proto_msg_free(resp);
out:
    free(repo);
    free(query);
    return r;
}

const struct client_command client_cmd_search = {
    .name = "search",
    .summary = "Search indexed code by meaning and by words",
    .usage = "search [--json|--vimgrep|-l] [-k N] [--repo DIR|--all]\n"
             "                 [--mode semantic|lexical|hybrid] [--lang LANG] [--path GLOB]\n"
             "                 [--] QUERY...|-",
    .help = "The QUERY words are joined with spaces; '-' reads the query from standard input.\n"
            "Inside an indexed repository only that repository is searched (the deepest one\n"
            "when they nest); elsewhere, or with --all, every indexed repository.  Each hit\n"
            "is one definition (a function with its comment, a class header, a block of\n"
            "code), printed as PATH:START-END  SCORE  SYMBOL, then its first lines from the\n"
            "ones that matched.  A definition over 100 lines reports the part that matched\n"
            "and says \"(part of START-END, N lines)\".\n"
            "\n"
            "Options:\n"
            "  -k N                 number of results, 1..1000 (default 10)\n"
            "  -r, --repo DIR       search only the repository indexed at DIR\n"
            "      --all            search every indexed repository, wherever you are\n"
            "  -m, --mode MODE      semantic (embeddings), lexical (BM25 over words and\n"
            "                       identifiers) or hybrid (both, fused; the default)\n"
            "      --lang LANG      only chunks in this language (python, c, go, ...; an\n"
            "                       unknown name is refused with the list of known ones)\n"
            "      --vimgrep        one line per hit, PATH:LINE:COLUMN:TEXT, for editors\n"
            "                       and pipes (as ripgrep --vimgrep)\n"
            "  -l, --files-with-matches\n"
            "                       only the files of the hits, each once, best first\n"
            "  -p, --path GLOB      only files matching GLOB: without '/' it matches the\n"
            "                       file name ('*.py'), with '/' the path in the repository\n"
            "                       ('src/*.c', '**' allowed); 'dir/' is a directory prefix\n"
            "      --json           print {\"mode\", \"took_ms\", \"results\": [{path,\n"
            "                       start_line, end_line, definition_start_line,\n"
            "                       definition_end_line, snippet_line, score, symbol,\n"
            "                       language, repo, semantic_score, lexical_score,\n"
            "                       semantic_rank, lexical_rank, snippet}]}; lines are\n"
            "                       1-based, inclusive\n"
            "\n"
            "Exit status 1 when the daemon reports an error, e.g. a --repo that is not indexed,\n"
            "or when nothing is indexed yet.\n"
            "Colour is off when stdout is not a terminal or NO_COLOR is set.\n",
    .run = search_run,
};
