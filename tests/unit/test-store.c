/* test-store.c - daemon/store: environment, schema, map growth, errors and every table. */
#include "store-chunk.h"
#include "store-job.h"
#include "store-repo.h"
#include "store.h"
#include "test.h"

#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tmpdir_new(void)
{
    char tmpl[] = "/tmp/coarch-test-store-XXXXXX";
    char *d = mkdtemp(tmpl);

    if (!d)
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    return strdup(d);
}

static struct store_options test_options(void)
{
    struct store_options o;

    store_options_init(&o);
    o.no_sync = true;
    o.map_size = 8u << 20;
    return o;
}

static struct store *open_at(const char *dir)
{
    struct store_options o = test_options();
    struct store *s = NULL;
    int r = store_open(dir, &o, &s);

    if (r < 0)
        test_fail(__FILE__, __LINE__, "store_open(%s): %s: %s", dir, strerror(-r),
                  store_last_error());
    return s;
}

/* A store stamped with an older schema, as an earlier coarch made it. */
static struct store *open_at_version(const char *dir, uint32_t version)
{
    struct store_options o = test_options();
    struct store *s = NULL;

    o.schema_version = version;
    ASSERT_OK(store_open(dir, &o, &s));
    return s;
}

static void fill_vec(float *v, uint32_t dim, uint64_t seed)
{
    for (uint32_t i = 0; i < dim; i++)
        v[i] = (float)((seed * 131 + i * 7) % 1000) / 1000.0f - 0.5f;
}

static void fill_hash(uint8_t *h, uint8_t seed)
{
    for (int i = 0; i < STORE_HASH_SIZE; i++)
        h[i] = (uint8_t)(seed + i);
}

/* Put one chunk with a vector and two postings; the terms are fixed ("alpha", "beta"). */
static void put_chunk_full(struct store_txn *t, uint64_t id, const char *path, uint32_t line)
{
    struct store_chunk c = {.id = id,
                            .path = path,
                            .language = "c",
                            .symbol = "fn",
                            .start_line = line,
                            .end_line = line + 9,
                            .text_offset = line * 10,
                            .text_len = 100};
    struct store_term terms[] = {{"alpha", 2}, {"beta", 1}};
    float v[8];

    fill_hash(c.hash, (uint8_t)id);
    fill_vec(v, 8, id);
    ASSERT_OK(store_chunk_put(t, &c));
    ASSERT_OK(store_vector_put(t, id, v, 8));
    ASSERT_OK(store_postings_add(t, id, 3, terms, 2));
}

static uint64_t repo_field(struct store *s, uint32_t repo, size_t off)
{
    struct store_txn *t;
    struct store_repo r;
    uint64_t v;

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_repo_get(t, repo, &r));
    v = *(const uint64_t *)((const char *)&r + off);
    store_read_end(t);
    return v;
}
#define REPO_COUNT(s, repo, field) repo_field((s), (repo), offsetof(struct store_repo, field))

static int count_postings(void *userdata, const struct store_posting *p, size_t n)
{
    (void)p;
    *(size_t *)userdata += n;
    return 0;
}

static size_t postings_of(struct store_txn *t, uint32_t repo, const char *term)
{
    size_t n = 0;

    ASSERT_OK(store_postings_foreach(t, repo, term, count_postings, &n));
    return n;
}

/* ---- errors ---------------------------------------------------------------------------- */

TEST(error_mapping_table)
{
    static const struct {
        int mdb, expect;
    } cases[] = {
        {MDB_SUCCESS, 0},
        {MDB_KEYEXIST, -EEXIST},
        {MDB_NOTFOUND, -ENOENT},
        {MDB_PAGE_NOTFOUND, -EUCLEAN},
        {MDB_CORRUPTED, -EUCLEAN},
        {MDB_PANIC, -EIO},
        {MDB_VERSION_MISMATCH, -EPROTONOSUPPORT},
        {MDB_INVALID, -EBADMSG},
        {MDB_MAP_FULL, -ENOSPC},
        {MDB_DBS_FULL, -EMFILE},
        {MDB_READERS_FULL, -EAGAIN},
        {MDB_TLS_FULL, -EAGAIN},
        {MDB_TXN_FULL, -E2BIG},
        {MDB_CURSOR_FULL, -ENOBUFS},
        {MDB_PAGE_FULL, -ENOBUFS},
        {MDB_MAP_RESIZED, -ESTALE},
        {MDB_INCOMPATIBLE, -EBADMSG},
        {MDB_BAD_RSLOT, -EBUSY},
        {MDB_BAD_TXN, -EINVAL},
        {MDB_BAD_VALSIZE, -EMSGSIZE},
        {MDB_BAD_DBI, -EBADF},
        {ENOSPC, -ENOSPC},
        {EACCES, -EACCES},
        {ENOMEM, -ENOMEM},
        {EIO, -EIO},
        {MDB_LAST_ERRCODE + 1, -EIO},
        {-1, -EIO},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (store_errno(cases[i].mdb) != cases[i].expect)
            test_fail(__FILE__, __LINE__, "store_errno(%d) = %d, expected %d", cases[i].mdb,
                      store_errno(cases[i].mdb), cases[i].expect);
    }
    /* Every LMDB code is covered: none falls through to the default. */
    for (int rc = MDB_KEYEXIST; rc <= MDB_LAST_ERRCODE; rc++)
        ASSERT_LT(store_errno(rc), 0);
}

TEST(errors_through_the_api)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_chunk c;
    uint32_t id;

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_EQ(store_chunk_get(t, 1ull << 40 | 1, &c), -ENOENT);
    ASSERT_EQ(store_repo_find(t, "/nowhere", &id), -ENOENT);
    ASSERT_EQ(store_repo_find(t, "relative", &id), -EINVAL);
    ASSERT_TRUE(strstr(store_last_error(), "absolute") != NULL);
    /* A read transaction refuses writes. */
    ASSERT_EQ(store_repo_get_or_create(t, "/x", &id), -EROFS);
    store_read_end(t);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- open, schema ---------------------------------------------------------------------- */

TEST(open_creates_private_dir)
{
    char *base = tmpdir_new(), path[512], data[600];
    struct store_options o = test_options();
    struct store *s;
    struct stat st;
    struct store_stat ss;

    snprintf(path, sizeof(path), "%s/a/b/coarch", base);
    ASSERT_OK(store_open(path, &o, &s));
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0700);
    snprintf(data, sizeof(data), "%s/data.mdb", path);
    ASSERT_EQ(stat(data, &st), 0);
    ASSERT_STREQ(store_dir(s), path);
    ASSERT_OK(store_stat(s, &ss));
    ASSERT_EQ(ss.schema_version, STORE_SCHEMA_VERSION);
    ASSERT_EQ(ss.map_size, 8u << 20);
    ASSERT_EQ(ss.readers, 0);
    store_free(s);

    /* dir == NULL: the data dir from the environment. */
    setenv("COARCH_DATA_DIR", base, 1);
    ASSERT_OK(store_open(NULL, &o, &s));
    ASSERT_STREQ(store_dir(s), base);
    snprintf(data, sizeof(data), "%s/data.mdb", base);
    ASSERT_EQ(stat(data, &st), 0);
    store_free(s);
    unsetenv("COARCH_DATA_DIR");

    ASSERT_TRUE(store_free(NULL) == NULL);
    rm_rf(base);
    free(base);
}

TEST(open_rejects_garbage)
{
    char *dir = tmpdir_new(), data[600];
    struct store_options o = test_options();
    struct store *s = NULL;
    FILE *f;
    int r;

    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    f = fopen(data, "w");
    ASSERT_TRUE(f != NULL);
    for (int i = 0; i < 4096; i++)
        fputs("not an lmdb file ", f);
    fclose(f);
    r = store_open(dir, &o, &s);
    ASSERT_TRUE(r == -EBADMSG || r == -EUCLEAN);
    ASSERT_TRUE(s == NULL);
    ASSERT_TRUE(strstr(store_last_error(), dir) != NULL);

    o.map_size = 1 << 20;
    o.max_map_size = 1 << 16;
    ASSERT_EQ(store_open(dir, &o, &s), -EINVAL);
    rm_rf(dir);
    free(dir);
}

TEST(schema_fresh_gets_current_version)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    const void *v;
    size_t len;
    uint32_t ver;

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_meta_get(t, STORE_META_SCHEMA_VERSION, &v, &len));
    ASSERT_EQ(len, 4);
    memcpy(&ver, v, 4);
    ASSERT_EQ(ver, STORE_SCHEMA_VERSION);
    store_read_end(t);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

struct migration_log {
    char steps[16];
    int fail_at;
};

static int migration_step(struct store_txn *t, struct migration_log *log, char step)
{
    size_t n = strlen(log->steps);
    char key[16];

    log->steps[n] = step;
    log->steps[n + 1] = '\0';
    snprintf(key, sizeof(key), "migrated.%c", step);
    /* A migration writes through the same typed API and transaction. */
    if (store_meta_put(t, key, &step, 1) < 0)
        return -EIO;
    if (log->fail_at == step - '0')
        return -EIO;
    return 0;
}

static int migrate_1_2(struct store_txn *t, void *userdata)
{
    return migration_step(t, userdata, '1');
}

static int migrate_2_3(struct store_txn *t, void *userdata)
{
    return migration_step(t, userdata, '2');
}

static const struct store_migration test_migrations[] = {
    {2, migrate_2_3, "test: 2 -> 3"}, /* out of order on purpose: looked up by version */
    {1, migrate_1_2, "test: 1 -> 2"},
};

static uint32_t stored_version(struct store *s)
{
    struct store_txn *t;
    const void *v;
    size_t len;
    uint32_t ver;

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_meta_get(t, STORE_META_SCHEMA_VERSION, &v, &len));
    ASSERT_EQ(len, 4);
    memcpy(&ver, v, 4);
    store_read_end(t);
    return ver;
}

static bool meta_has(struct store *s, const char *key)
{
    struct store_txn *t;
    const void *v;
    size_t len;
    int r;

    ASSERT_OK(store_read_begin(s, &t));
    r = store_meta_get(t, key, &v, &len);
    store_read_end(t);
    ASSERT_TRUE(r == 0 || r == -ENOENT);
    return r == 0;
}

TEST(schema_migrates_older_and_refuses_newer)
{
    char *dir = tmpdir_new();
    struct store_options o = test_options();
    struct migration_log log = {.fail_at = -1};
    struct store *s = open_at_version(dir, 1);
    struct store_txn *t;
    uint32_t repo;

    /* Data written at version 1 must survive the migration. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_EQ(store_repo_get_or_create(t, "/src/a", &repo), 1);
    ASSERT_OK(store_write_commit(t));
    store_free(s);

    /* This "build" is at version 3: steps 1->2 and 2->3 run in order, in one transaction. */
    o.schema_version = 3;
    o.migrations = test_migrations;
    o.n_migrations = 2;
    o.migration_userdata = &log;
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_STREQ(log.steps, "12");
    ASSERT_EQ(stored_version(s), 3);
    ASSERT_TRUE(meta_has(s, "migrated.1"));
    ASSERT_TRUE(meta_has(s, "migrated.2"));
    ASSERT_EQ(REPO_COUNT(s, repo, n_files), 0);
    store_free(s);

    /* The same build again: nothing to migrate. */
    log.steps[0] = '\0';
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_STREQ(log.steps, "");
    store_free(s);

    /* A build at version 2 refuses a version 3 store, naming both versions. */
    o = test_options();
    o.schema_version = 2;
    s = NULL;
    ASSERT_EQ(store_open(dir, &o, &s), -EPROTONOSUPPORT);
    ASSERT_TRUE(s == NULL);
    ASSERT_TRUE(strstr(store_last_error(), "schema version 3") != NULL);
    ASSERT_TRUE(strstr(store_last_error(), "supports (2)") != NULL);
    o.read_only = true;
    ASSERT_EQ(store_open(dir, &o, &s), -EPROTONOSUPPORT);
    ASSERT_TRUE(strstr(store_last_error(), "schema version 3") != NULL);
    rm_rf(dir);
    free(dir);
}

TEST(schema_migration_failure_keeps_old_version)
{
    char *dir = tmpdir_new();
    struct store_options o = test_options();
    struct migration_log log = {.fail_at = 2};
    struct store *s = open_at_version(dir, 1);

    store_free(s);
    o.schema_version = 3;
    o.migrations = test_migrations;
    o.n_migrations = 2;
    o.migration_userdata = &log;
    ASSERT_EQ(store_open(dir, &o, &s), -EIO);
    ASSERT_STREQ(log.steps, "12");
    ASSERT_TRUE(strstr(store_last_error(), "migration from schema 2 to 3") != NULL);

    /* All or nothing: version 1, and step 1's write is gone too. */
    s = open_at_version(dir, 1);
    ASSERT_EQ(stored_version(s), 1);
    ASSERT_FALSE(meta_has(s, "migrated.1"));
    store_free(s);

    /* A missing step is refused, clearly, and changes nothing. */
    o.n_migrations = 1; /* only 2 -> 3 */
    log = (struct migration_log){.fail_at = -1};
    ASSERT_EQ(store_open(dir, &o, &s), -EPROTONOSUPPORT);
    ASSERT_TRUE(strstr(store_last_error(), "no migration from it") != NULL);
    ASSERT_STREQ(log.steps, "");

    /* A read-only open cannot migrate. */
    o.read_only = true;
    ASSERT_EQ(store_open(dir, &o, &s), -EROFS);
    rm_rf(dir);
    free(dir);
}

TEST(schema_1_chunks_read_as_their_own_unit_after_the_real_migration)
{
    char *dir = tmpdir_new();
    struct store *s = open_at_version(dir, 1);
    struct store_txn *t;
    struct store_chunk c, g;
    uint64_t first;
    uint32_t repo;

    /* A row without unit fields is byte for byte a schema-1 row. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/m", &repo));
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 2, &first));
    c = (struct store_chunk){.id = first,
                             .path = "a.c",
                             .language = "c",
                             .symbol = "f",
                             .start_line = 3,
                             .end_line = 9,
                             .text_offset = 20,
                             .text_len = 80};
    ASSERT_OK(store_chunk_put(t, &c));
    ASSERT_OK(store_write_commit(t));
    store_free(s);

    s = open_at(dir);
    ASSERT_EQ(stored_version(s), STORE_SCHEMA_VERSION);
    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_chunk_get(t, first, &g));
    ASSERT_EQ(g.start_line, 3);
    ASSERT_EQ(g.unit_start_line, 3);
    ASSERT_EQ(g.unit_end_line, 9);
    ASSERT_EQ(g.unit_offset, 20);
    ASSERT_EQ(g.unit_len, 80);
    store_read_end(t);

    /* A unit inside its definition round-trips; one outside it is refused. */
    ASSERT_OK(store_write_begin(s, &t));
    c.id = first + 1;
    c.unit_start_line = 5;
    c.unit_end_line = 7;
    c.unit_offset = 40;
    c.unit_len = 30;
    ASSERT_OK(store_chunk_put(t, &c));
    c.unit_end_line = 10;
    ASSERT_EQ(store_chunk_put(t, &c), -EINVAL);
    c.unit_end_line = 7;
    c.unit_len = 61; /* past the definition's last byte */
    ASSERT_EQ(store_chunk_put(t, &c), -EINVAL);
    ASSERT_OK(store_write_commit(t));
    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_chunk_get(t, first + 1, &g));
    ASSERT_EQ(g.start_line, 3);
    ASSERT_EQ(g.end_line, 9);
    ASSERT_EQ(g.unit_start_line, 5);
    ASSERT_EQ(g.unit_end_line, 7);
    ASSERT_EQ(g.unit_offset, 40);
    ASSERT_EQ(g.unit_len, 30);
    ASSERT_STREQ(g.symbol, "f");
    store_read_end(t);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

TEST(truncated_data_file_is_refused_not_a_crash)
{
    /* Issue 16 C1: half a data.mdb made the first page read a SIGBUS in mdb_dbi_open(). */
    char *dir = tmpdir_new(), path[4096];
    struct store *s = open_at(dir);
    struct store_options o = test_options();
    struct store_txn *t;
    struct stat st;
    uint32_t repo;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/t", &repo));
    for (uint64_t i = 1; i <= 200; i++)
        put_chunk_full(t, (uint64_t)repo << STORE_CHUNK_SEQ_BITS | i, "a.c", (uint32_t)i);
    ASSERT_OK(store_write_commit(t));
    store_free(s);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(truncate(path, st.st_size / 2), 0);
    s = NULL;
    ASSERT_EQ(store_open(dir, &o, &s), -EBADMSG);
    ASSERT_TRUE(s == NULL);
    ASSERT_TRUE(strstr(store_last_error(), "damaged") != NULL);
    ASSERT_TRUE(strstr(store_last_error(), "index again") != NULL);
    rm_rf(dir);
    free(dir);
}

TEST(full_disk_is_reported_as_no_space)
{
    /* Issue 16: a full disk said "commit: Input/output error" (LMDB's word for a short
     * write).  Needs a small tmpfs: root only. */
    char *dir = tmpdir_new(), mnt[4096];
    struct store_options o = test_options();
    struct store *s;
    struct store_txn *t;
    uint32_t repo;
    int r = 0;
    uint64_t seq = 1;

    snprintf(mnt, sizeof(mnt), "%s/small", dir);
    ASSERT_EQ(mkdir(mnt, 0700), 0);
    if (geteuid() != 0 || mount("tmpfs", mnt, "tmpfs", 0, "size=1m") < 0) {
        rm_rf(dir);
        free(dir);
        TEST_SKIP("mounting a small tmpfs needs root");
    }
    o.map_size = 8u << 20; /* the map may be bigger than the disk: the disk fills first */
    ASSERT_OK(store_open(mnt, &o, &s));
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/full", &repo));
    ASSERT_OK(store_write_commit(t));
    while (r == 0 && seq < 100000) {
        ASSERT_OK(store_write_begin(s, &t));
        for (int i = 0; i < 100; i++, seq++)
            put_chunk_full(t, (uint64_t)repo << STORE_CHUNK_SEQ_BITS | seq, "a.c", (uint32_t)seq);
        r = store_write_commit(t);
    }
    printf("# %s\n", store_last_error());
    ASSERT_EQ(r, -ENOSPC);
    ASSERT_TRUE(strstr(store_last_error(), "no space") != NULL ||
                strstr(store_last_error(), "No space") != NULL);
    /* What was committed before is there. */
    ASSERT_TRUE(REPO_COUNT(s, repo, n_chunks) >= 100);
    store_free(s);
    ASSERT_EQ(umount(mnt), 0);
    rm_rf(dir);
    free(dir);
}

TEST(read_only_open)
{
    char *dir = tmpdir_new(), missing[512];
    struct store_options o = test_options();
    struct store *s = open_at(dir);
    struct store_txn *t;
    uint32_t repo, id;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/ro", &repo));
    ASSERT_OK(store_write_commit(t));
    store_free(s);

    o.read_only = true;
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_EQ(store_write_begin(s, &t), -EROFS);
    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_repo_find(t, "/src/ro", &id));
    ASSERT_EQ(id, repo);
    store_read_end(t);
    store_free(s);

    snprintf(missing, sizeof(missing), "%s/missing", dir);
    ASSERT_EQ(store_open(missing, &o, &s), -ENOENT);
    ASSERT_TRUE(strstr(store_last_error(), missing) != NULL);
    rm_rf(dir);
    free(dir);
}

/* ---- transactions ---------------------------------------------------------------------- */

TEST(meta_put_get_delete)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    const void *v;
    size_t len;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_meta_put(t, "model", "all-MiniLM-L6-v2", 16));
    ASSERT_EQ(store_meta_put(t, "coarch.schema_version", "x", 1), -EPERM);
    ASSERT_EQ(store_meta_delete(t, STORE_META_NEXT_REPO_ID), -EPERM);
    ASSERT_EQ(store_meta_put(t, "", "x", 1), -EINVAL);
    ASSERT_OK(store_meta_get(t, "model", &v, &len));
    ASSERT_EQ(len, 16);
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_meta_get(t, "model", &v, &len));
    ASSERT_TRUE(len == 16 && memcmp(v, "all-MiniLM-L6-v2", 16) == 0);
    store_read_end(t);

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_meta_delete(t, "model"));
    ASSERT_EQ(store_meta_delete(t, "model"), -ENOENT);
    ASSERT_OK(store_write_commit(t));
    ASSERT_FALSE(meta_has(s, "model"));
    store_free(s);
    rm_rf(dir);
    free(dir);
}

TEST(write_txn_rules)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t, *t2, *r;
    uint32_t repo;
    struct store_repo row;

    uint64_t ops;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_TRUE(store_txn_is_write(t));
    ASSERT_EQ(store_write_ops(t), 0);
    /* A second write transaction on the same thread would deadlock: refused. */
    ASSERT_EQ(store_write_begin(s, &t2), -EDEADLK);
    ASSERT_EQ(store_repo_get_or_create(t, "/src/a", &repo), 1);
    /* Creating a repository writes its row and the id counter at least. */
    ops = store_write_ops(t);
    ASSERT_GE(ops, 2);
    /* Finding it again, and reads, write nothing. */
    ASSERT_EQ(store_repo_get_or_create(t, "/src/a", &repo), 0);
    ASSERT_OK(store_repo_get(t, repo, &row));
    ASSERT_EQ(store_write_ops(t), ops);
    ASSERT_OK(store_meta_put(t, "x", "1", 1));
    ASSERT_EQ(store_write_ops(t), ops + 1);

    /* Readers see the last commit, not the open write. */
    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_FALSE(store_txn_is_write(r));
    ASSERT_EQ(store_write_ops(r), 0);
    ASSERT_EQ(store_repo_get(r, repo, &row), -ENOENT);
    store_read_end(r);
    store_write_abort(t);

    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_EQ(store_repo_get(r, repo, &row), -ENOENT);
    store_read_end(r);
    store_write_abort(NULL);
    store_read_end(NULL);
    ASSERT_EQ(store_write_commit(NULL), -EINVAL);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

static int write_from_callback(void *userdata, const struct store_repo *repo)
{
    struct store_txn *t = userdata;
    uint32_t id;

    (void)repo;
    return store_repo_get_or_create(t, "/src/inside", &id) == -EBUSY ? 42 : -1;
}

TEST(no_writes_inside_foreach)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    uint32_t repo;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/a", &repo));
    ASSERT_EQ(store_repo_foreach(t, write_from_callback, t), 42);
    /* The refusal did not poison the transaction. */
    ASSERT_EQ(store_repo_get_or_create(t, "/src/b", &repo), 1);
    ASSERT_OK(store_write_commit(t));
    store_free(s);
    rm_rf(dir);
    free(dir);
}

struct cross_thread {
    struct store_txn *t;
    uint32_t repo;
    int r;
};

static void *read_on_other_thread(void *arg)
{
    struct cross_thread *x = arg;
    struct store_repo row;

    x->r = store_repo_get(x->t, x->repo, &row);
    if (x->r == 0 && strcmp(row.path, "/src/x") != 0)
        x->r = -EBADMSG;
    store_read_end(x->t);
    return NULL;
}

TEST(read_txn_moves_between_threads)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct cross_thread x = {0};
    struct store_txn *t;
    pthread_t th;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/x", &x.repo));
    ASSERT_OK(store_write_commit(t));
    /* MDB_NOTLS: begun here, used and ended there. */
    ASSERT_OK(store_read_begin(s, &x.t));
    ASSERT_EQ(pthread_create(&th, NULL, read_on_other_thread, &x), 0);
    pthread_join(th, NULL);
    ASSERT_OK(x.r);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- map growth ------------------------------------------------------------------------ */

#define GROW_DIM 384

struct reader_loop {
    struct store *s;
    uint32_t repo;
    atomic_bool stop;
    atomic_int reads;
    int error;
};

static void *reader_loop(void *arg)
{
    struct reader_loop *l = arg;

    while (!atomic_load(&l->stop)) {
        struct store_txn *t;
        struct store_repo row;
        int r = store_read_begin(l->s, &t);

        if (r == 0) {
            r = store_repo_get(t, l->repo, &row);
            store_read_end(t);
        }
        if (r < 0 && r != -ENOENT) {
            l->error = r;
            break;
        }
        atomic_fetch_add(&l->reads, 1);
    }
    return NULL;
}

struct vec_check {
    uint64_t next_seq;
    uint32_t dim;
    size_t n;
    bool bad;
};

static int check_vec(void *userdata, uint64_t id, const float *v, uint32_t dim)
{
    struct vec_check *c = userdata;
    float want[GROW_DIM];

    if ((uintptr_t)v % _Alignof(float) != 0 || dim != c->dim ||
        (id & 0xffffffffffull) < c->next_seq)
        c->bad = true;
    fill_vec(want, dim, id);
    if (memcmp(want, v, dim * sizeof(float)) != 0)
        c->bad = true;
    c->next_seq = (id & 0xffffffffffull) + 1;
    c->n++;
    return 0;
}

TEST(map_grows_on_map_full)
{
    char *dir = tmpdir_new();
    struct store_options o = test_options();
    struct reader_loop l = {0};
    struct store_stat st;
    struct store_txn *t;
    struct store *s;
    float v[GROW_DIM];
    uint64_t first;
    pthread_t th;
    const uint32_t per_txn = 1500, n_txn = 2; /* 2 x 1500 x 1.5 KiB = 4.6 MB */

    o.map_size = 64 << 10;
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_OK(store_stat(s, &st));
    ASSERT_EQ(st.map_size, 64 << 10);

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/big", &l.repo));
    ASSERT_OK(store_write_commit(t));

    /* A reader hammering the store on another thread: resizes must wait for it, not crash. */
    l.s = s;
    ASSERT_EQ(pthread_create(&th, NULL, reader_loop, &l), 0);
    for (uint32_t k = 0; k < n_txn; k++) {
        ASSERT_OK(store_write_begin(s, &t));
        ASSERT_OK(store_chunk_ids_alloc(t, l.repo, per_txn, &first));
        for (uint32_t i = 0; i < per_txn; i++) {
            fill_vec(v, GROW_DIM, first + i);
            ASSERT_OK(store_vector_put(t, first + i, v, GROW_DIM));
        }
        ASSERT_OK(store_write_commit(t));
    }
    atomic_store(&l.stop, true);
    pthread_join(th, NULL);
    ASSERT_OK(l.error);
    ASSERT_GT(atomic_load(&l.reads), 0);

    ASSERT_OK(store_stat(s, &st));
    ASSERT_GT(st.grows, 5);
    ASSERT_GE(st.map_size, (uint64_t)n_txn * per_txn * GROW_DIM * 4);
    ASSERT_LE(st.used_bytes, st.map_size);
    printf("# map grew %" PRIu64 " times to %" PRIu64 " KiB, %" PRIu64 " KiB used\n", st.grows,
           st.map_size >> 10, st.used_bytes >> 10);
    ASSERT_EQ(REPO_COUNT(s, l.repo, n_vectors), n_txn * per_txn);
    store_free(s);

    /* Everything replayed exactly once, in order, and survives a reopen (which starts with a
     * map at least twice the file, so no growth is needed to read). */
    s = open_at(dir);
    {
        struct vec_check c = {.dim = GROW_DIM};

        ASSERT_OK(store_read_begin(s, &t));
        ASSERT_OK(store_vector_foreach(t, l.repo, check_vec, &c));
        store_read_end(t);
        ASSERT_EQ(c.n, n_txn * per_txn);
        ASSERT_FALSE(c.bad);
    }
    store_free(s);
    rm_rf(dir);
    free(dir);
}

TEST(map_full_at_maximum_is_enospc)
{
    char *dir = tmpdir_new();
    struct store_options o = test_options();
    struct store_txn *t;
    struct store *s;
    float v[GROW_DIM];
    uint64_t first;
    uint32_t repo;
    int r = 0;

    o.map_size = 64 << 10;
    o.max_map_size = 256 << 10;
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/full", &repo));
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 1000, &first));
    for (uint32_t i = 0; i < 1000 && r == 0; i++) {
        fill_vec(v, GROW_DIM, i);
        r = store_vector_put(t, first + i, v, GROW_DIM);
    }
    ASSERT_EQ(r, -ENOSPC);
    ASSERT_TRUE(strstr(store_last_error(), "maximum") != NULL);
    /* Poisoned: later calls and the commit report the same error. */
    ASSERT_EQ(store_vector_put(t, first, v, GROW_DIM), -ENOSPC);
    ASSERT_EQ(store_write_commit(t), -ENOSPC);

    /* The store itself is fine: the last commit is there and small writes still work. */
    ASSERT_EQ(REPO_COUNT(s, repo, n_vectors), 0);
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_vector_put(t, (uint64_t)repo << 40 | 1, v, GROW_DIM));
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, repo, n_vectors), 1);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

TEST(resize_refused_while_writer_holds_a_reader)
{
    char *dir = tmpdir_new();
    struct store_options o = test_options();
    struct store_txn *t, *r;
    struct store *s;
    float v[GROW_DIM];
    uint64_t first;
    uint32_t repo;
    int rc = 0;

    o.map_size = 64 << 10;
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/dl", &repo));
    ASSERT_OK(store_write_commit(t));

    /* Beginning a write while holding a read is refused outright... */
    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_EQ(store_write_begin(s, &t), -EDEADLK);
    store_read_end(r);
    /* ...and a read begun during the write makes a resize refuse to wait for it forever. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 200, &first));
    for (uint32_t i = 0; i < 200 && rc == 0; i++) {
        fill_vec(v, GROW_DIM, i);
        rc = store_vector_put(t, first + i, v, GROW_DIM);
    }
    ASSERT_EQ(rc, -EDEADLK);
    store_write_abort(t);
    store_read_end(r);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- repos and files ------------------------------------------------------------------- */

static int collect_repo(void *userdata, const struct store_repo *repo)
{
    char *out = userdata;

    strcat(out, repo->path);
    strcat(out, ";");
    return 0;
}

TEST(repo_get_or_create_list_find)
{
    char *dir = tmpdir_new(), longp[600], list[256] = "";
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_repo row;
    uint32_t a, b, a2;
    int64_t before = 0;

    {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        before = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_EQ(store_repo_get_or_create(t, "/src/zeta", &a), 1);
    ASSERT_EQ(store_repo_get_or_create(t, "/src/alpha", &b), 1);
    ASSERT_EQ(store_repo_get_or_create(t, "/src/zeta", &a2), 0);
    ASSERT_EQ(a, a2);
    ASSERT_NE(a, b);
    ASSERT_EQ(store_repo_get_or_create(t, "src/rel", &a2), -EINVAL);
    memset(longp, 'x', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    ASSERT_EQ(store_repo_get_or_create(t, longp, &a2), -ENAMETOOLONG);
    ASSERT_OK(store_repo_set_indexed(t, a, 12345));
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_repo_find(t, "/src/alpha", &a2));
    ASSERT_EQ(a2, b);
    ASSERT_OK(store_repo_get(t, a, &row));
    ASSERT_STREQ(row.path, "/src/zeta");
    ASSERT_EQ(row.id, a);
    ASSERT_EQ(row.indexed_ns, 12345);
    ASSERT_GE(row.created_ns, before);
    ASSERT_EQ(row.n_files + row.n_chunks + row.n_vectors + row.n_lex_docs + row.sum_doc_len, 0);
    /* Id order, which is creation order. */
    ASSERT_OK(store_repo_foreach(t, collect_repo, list));
    ASSERT_STREQ(list, "/src/zeta;/src/alpha;");
    store_read_end(t);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

struct file_list {
    char paths[512];
    uint64_t sizes;
    int stop_after;
    int seen;
};

static int collect_file(void *userdata, const struct store_file *f)
{
    struct file_list *l = userdata;

    strcat(l->paths, f->path);
    strcat(l->paths, ";");
    l->sizes += f->size;
    if (++l->seen == l->stop_after)
        return 7;
    return 0;
}

TEST(file_put_get_delete_foreach)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_file f = {0}, g;
    struct file_list l = {0};
    uint32_t a, b;
    uint64_t first;
    const char *paths[] = {"src/main.c", "README.md", "src/a/b.c", "src/util.h"};

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/a", &a));
    ASSERT_OK(store_repo_get_or_create(t, "/src/b", &b));
    for (size_t i = 0; i < 4; i++) {
        f.path = paths[i];
        fill_hash(f.hash, (uint8_t)i);
        f.mtime_ns = 1000 + (int64_t)i;
        f.size = 10 * (i + 1);
        ASSERT_OK(store_file_put(t, a, &f));
    }
    f.path = "other.c";
    ASSERT_OK(store_file_put(t, b, &f));
    f.path = "";
    ASSERT_EQ(store_file_put(t, a, &f), -EINVAL);
    f.path = "x.c";
    ASSERT_EQ(store_file_put(t, 999, &f), -ENOENT);
    /* A range that belongs to another repository is refused. */
    ASSERT_OK(store_chunk_ids_alloc(t, b, 2, &first));
    f.first_chunk = first;
    f.n_chunks = 2;
    ASSERT_EQ(store_file_put(t, a, &f), -EINVAL);
    ASSERT_OK(store_write_commit(t));

    ASSERT_EQ(REPO_COUNT(s, a, n_files), 4);
    ASSERT_EQ(REPO_COUNT(s, b, n_files), 1);

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_file_get(t, a, "src/a/b.c", &g));
    ASSERT_STREQ(g.path, "src/a/b.c");
    ASSERT_EQ(g.size, 30);
    ASSERT_EQ(g.mtime_ns, 1002);
    ASSERT_EQ(g.hash[0], 2);
    ASSERT_EQ(g.n_chunks, 0);
    ASSERT_EQ(store_file_get(t, b, "src/a/b.c", &g), -ENOENT);
    /* Byte order of paths, only this repository's files. */
    ASSERT_OK(store_file_foreach(t, a, NULL, collect_file, &l));
    ASSERT_STREQ(l.paths, "README.md;src/a/b.c;src/main.c;src/util.h;");
    ASSERT_EQ(l.sizes, 100);
    /* Resume from a path; stop early with the callback's value. */
    l = (struct file_list){.stop_after = 2};
    ASSERT_EQ(store_file_foreach(t, a, "src/b", collect_file, &l), 7);
    ASSERT_STREQ(l.paths, "src/main.c;src/util.h;");
    store_read_end(t);

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_file_delete(t, a, "src/main.c"));
    ASSERT_EQ(store_file_delete(t, a, "src/main.c"), -ENOENT);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, a, n_files), 3);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- chunks, vectors, postings --------------------------------------------------------- */

TEST(chunk_put_get_replace_delete)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_chunk c = {0}, g;
    uint64_t first, second;
    uint32_t repo;
    float v[8];

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/c", &repo));
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 3, &first));
    ASSERT_EQ(STORE_CHUNK_REPO(first), repo);
    ASSERT_EQ(first & 0xffffffffffull, 1);
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 2, &second));
    ASSERT_EQ(second, first + 3);
    ASSERT_EQ(store_chunk_ids_alloc(t, repo + 7, 2, &second), -ENOENT);
    ASSERT_EQ(store_chunk_ids_alloc(t, repo, 0, &second), -EINVAL);

    c = (struct store_chunk){.id = first,
                             .path = "src/x.py",
                             .language = "python",
                             .symbol = "Parser.parse",
                             .start_line = 10,
                             .end_line = 42,
                             .text_offset = 1234,
                             .text_len = 567};
    fill_hash(c.hash, 9);
    ASSERT_OK(store_chunk_put(t, &c));
    c.id = first + 1;
    c.language = NULL;
    c.symbol = NULL;
    ASSERT_OK(store_chunk_put(t, &c));
    /* Replacing a row does not count it twice. */
    c.start_line = 11;
    ASSERT_OK(store_chunk_put(t, &c));
    c.start_line = 0;
    ASSERT_EQ(store_chunk_put(t, &c), -EINVAL);
    c.start_line = 50;
    ASSERT_EQ(store_chunk_put(t, &c), -EINVAL);
    c.start_line = 1;
    c.id = 5; /* repo 0 */
    ASSERT_EQ(store_chunk_put(t, &c), -EINVAL);
    c.id = (uint64_t)repo << 40; /* seq 0 */
    ASSERT_EQ(store_chunk_put(t, &c), -EINVAL);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 2);

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_chunk_get(t, first, &g));
    ASSERT_EQ(g.id, first);
    ASSERT_STREQ(g.path, "src/x.py");
    ASSERT_STREQ(g.language, "python");
    ASSERT_STREQ(g.symbol, "Parser.parse");
    ASSERT_EQ(g.start_line, 10);
    ASSERT_EQ(g.end_line, 42);
    ASSERT_EQ(g.text_offset, 1234);
    ASSERT_EQ(g.text_len, 567);
    ASSERT_EQ(g.hash[31], 9 + 31);
    ASSERT_OK(store_chunk_get(t, first + 1, &g));
    ASSERT_STREQ(g.language, "");
    ASSERT_STREQ(g.symbol, "");
    ASSERT_EQ(g.start_line, 11);
    store_read_end(t);

    /* Deleting a chunk takes its vector and postings with it. */
    ASSERT_OK(store_write_begin(s, &t));
    put_chunk_full(t, first + 2, "src/y.py", 1);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 3);
    ASSERT_EQ(REPO_COUNT(s, repo, n_vectors), 1);
    ASSERT_EQ(REPO_COUNT(s, repo, n_lex_docs), 1);
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_chunk_delete(t, first + 2));
    ASSERT_EQ(store_chunk_delete(t, first + 2), -ENOENT);
    ASSERT_EQ(store_vector_get(t, first + 2, v, 8, &(uint32_t){0}), -ENOENT);
    ASSERT_EQ(postings_of(t, repo, "alpha"), 0);
    ASSERT_EQ(store_chunk_delete_range(t, first, 4), 2);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 0);
    ASSERT_EQ(REPO_COUNT(s, repo, n_vectors), 0);
    ASSERT_EQ(REPO_COUNT(s, repo, n_lex_docs), 0);
    ASSERT_EQ(REPO_COUNT(s, repo, sum_doc_len), 0);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

struct vec_ids {
    uint64_t ids[16];
    size_t n;
};

static int collect_vec_id(void *userdata, uint64_t id, const float *v, uint32_t dim)
{
    struct vec_ids *l = userdata;
    float want[16];

    fill_vec(want, dim, id);
    if ((uintptr_t)v % _Alignof(float) != 0 || memcmp(want, v, dim * sizeof(float)) != 0)
        return -EBADMSG;
    if (l->n == 16)
        return 1;
    l->ids[l->n++] = id;
    return 0;
}

TEST(vector_put_get_foreach)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct vec_ids l = {0};
    float v[16], out[16];
    uint64_t fa, fb;
    uint32_t a, b, dim;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/a", &a));
    ASSERT_OK(store_repo_get_or_create(t, "/src/b", &b));
    ASSERT_OK(store_chunk_ids_alloc(t, a, 5, &fa));
    ASSERT_OK(store_chunk_ids_alloc(t, b, 5, &fb));
    /* Interleave the repositories and vary dims so both alignments of LMDB values occur. */
    for (uint32_t i = 0; i < 5; i++) {
        fill_vec(v, 9 + i, fb + i);
        ASSERT_OK(store_vector_put(t, fb + i, v, 9 + i));
        fill_vec(v, 9 + i, fa + 4 - i);
        ASSERT_OK(store_vector_put(t, fa + 4 - i, v, 9 + i));
    }
    /* Replace one: not counted twice. */
    fill_vec(v, 9 + 4, fa);
    ASSERT_OK(store_vector_put(t, fa, v, 9 + 4));
    ASSERT_EQ(store_vector_put(t, fa, v, 0), -EINVAL);
    ASSERT_EQ(store_vector_put(t, fa, v, STORE_MAX_DIM + 1), -EINVAL);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, a, n_vectors), 5);
    ASSERT_EQ(REPO_COUNT(s, b, n_vectors), 5);

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_vector_get(t, fb + 2, out, 16, &dim));
    ASSERT_EQ(dim, 11);
    fill_vec(v, 11, fb + 2);
    ASSERT_TRUE(memcmp(v, out, 11 * sizeof(float)) == 0);
    ASSERT_EQ(store_vector_get(t, fb + 2, out, 10, &dim), -ENOBUFS);
    ASSERT_OK(store_vector_foreach(t, a, collect_vec_id, &l));
    ASSERT_EQ(l.n, 5);
    for (size_t i = 0; i < 5; i++)
        ASSERT_EQ(l.ids[i], fa + i);
    l.n = 0;
    ASSERT_OK(store_vector_foreach(t, b, collect_vec_id, &l));
    ASSERT_EQ(l.n, 5);
    ASSERT_EQ(l.ids[0], fb);
    l.n = 0;
    ASSERT_OK(store_vector_foreach(t, b + 1, collect_vec_id, &l));
    ASSERT_EQ(l.n, 0);
    store_read_end(t);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

struct posting_list {
    struct store_posting p[1200];
    size_t n, batches;
};

static int collect_postings(void *userdata, const struct store_posting *p, size_t n)
{
    struct posting_list *l = userdata;

    l->batches++;
    for (size_t i = 0; i < n && l->n < 1200; i++)
        l->p[l->n++] = p[i];
    return 0;
}

TEST(postings_add_remove_foreach)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct posting_list *l = calloc(1, sizeof(*l));
    struct store_term terms[] = {{"common", 1}, {"parse", 3}, {"request", 2}};
    struct store_term bad[] = {{"b", 1}, {"a", 1}};
    struct store_term dup[] = {{"a", 1}, {"a", 2}};
    uint64_t first, df;
    uint32_t a, b, dl;

    ASSERT_TRUE(l != NULL);
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/a", &a));
    ASSERT_OK(store_repo_get_or_create(t, "/src/b", &b));
    ASSERT_OK(store_chunk_ids_alloc(t, a, 1000, &first));
    /* 1000 chunks share "common" (several leaf pages of duplicates); every 10th has "parse". */
    for (uint32_t i = 0; i < 1000; i++) {
        size_t n = i % 10 == 0 ? 3 : 1;

        ASSERT_OK(store_postings_add(t, first + i, 5 + i % 7, terms, n));
    }
    {
        /* Each term is one write (what the indexer's per-commit write budget counts); refused
         * calls write nothing. */
        uint64_t ops = store_write_ops(t);

        ASSERT_OK(store_postings_add(t, (uint64_t)b << 40 | 1, 4, terms, 3));
        ASSERT_GE(store_write_ops(t), ops + 3);
        ops = store_write_ops(t);
        ASSERT_EQ(store_postings_add(t, first, 1, bad, 2), -EINVAL);
        ASSERT_EQ(store_postings_add(t, first, 1, dup, 2), -EINVAL);
        bad[0].tf = 0;
        ASSERT_EQ(store_postings_add(t, first, 1, bad, 1), -EINVAL);
        ASSERT_EQ(store_write_ops(t), ops);
    }
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_postings_df(t, a, "common", &df));
    ASSERT_EQ(df, 1000);
    ASSERT_OK(store_postings_df(t, a, "parse", &df));
    ASSERT_EQ(df, 100);
    ASSERT_OK(store_postings_df(t, b, "parse", &df));
    ASSERT_EQ(df, 1);
    ASSERT_OK(store_postings_df(t, a, "absent", &df));
    ASSERT_EQ(df, 0);
    ASSERT_OK(store_postings_foreach(t, a, "common", collect_postings, l));
    ASSERT_EQ(l->n, 1000);
    ASSERT_GT(l->batches, 1);
    for (size_t i = 0; i < 1000; i++) {
        ASSERT_EQ(l->p[i].chunk_id, first + i);
        ASSERT_EQ(l->p[i].tf, 1);
        ASSERT_EQ(l->p[i].doc_len, 5 + i % 7);
    }
    memset(l, 0, sizeof(*l));
    ASSERT_OK(store_postings_foreach(t, a, "request", collect_postings, l));
    ASSERT_EQ(l->n, 100);
    ASSERT_EQ(l->p[1].chunk_id, first + 10);
    ASSERT_EQ(l->p[1].tf, 2);
    memset(l, 0, sizeof(*l));
    /* A single posting (stored inline, not as a duplicate tree). */
    ASSERT_OK(store_postings_foreach(t, b, "request", collect_postings, l));
    ASSERT_EQ(l->n, 1);
    ASSERT_EQ(l->p[0].chunk_id, (uint64_t)b << 40 | 1);
    ASSERT_EQ(l->p[0].doc_len, 4);
    ASSERT_OK(store_postings_doc_len(t, first + 3, &dl));
    ASSERT_EQ(dl, 5 + 3);
    store_read_end(t);
    ASSERT_EQ(REPO_COUNT(s, a, n_lex_docs), 1000);
    {
        uint64_t sum = 0;

        for (uint32_t i = 0; i < 1000; i++)
            sum += 5 + i % 7;
        ASSERT_EQ(REPO_COUNT(s, a, sum_doc_len), sum);
    }

    /* Re-adding replaces; removing takes every posting of the chunk. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_postings_add(t, first, 1, &terms[1], 1));
    ASSERT_OK(store_postings_df(t, a, "common", &df));
    ASSERT_EQ(df, 999);
    ASSERT_OK(store_postings_remove(t, first + 10));
    ASSERT_EQ(store_postings_remove(t, first + 10), -ENOENT);
    ASSERT_OK(store_postings_df(t, a, "parse", &df));
    ASSERT_EQ(df, 99);
    ASSERT_OK(store_postings_df(t, a, "request", &df));
    ASSERT_EQ(df, 98); /* first lost it to the re-add, first + 10 to the removal */
    ASSERT_EQ(store_postings_doc_len(t, first + 10, &dl), -ENOENT);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, a, n_lex_docs), 999);
    free(l);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- jobs ------------------------------------------------------------------------------ */

static int collect_job(void *userdata, const struct store_job *j)
{
    uint64_t *ids = userdata;

    ids[++ids[0]] = j->id;
    return 0;
}

TEST(job_put_get_list_delete)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_job j = {0}, g;
    uint64_t id1, id2, ids[8] = {0};
    uint32_t repo;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/j", &repo));
    ASSERT_OK(store_job_id_alloc(t, &id1));
    ASSERT_OK(store_job_id_alloc(t, &id2));
    ASSERT_EQ(id2, id1 + 1);
    j = (struct store_job){.id = id1,
                           .repo_id = repo,
                           .state = 2,
                           .error = -EIO,
                           .created_ns = 100,
                           .updated_ns = 200,
                           .files_done = 3,
                           .files_total = 10,
                           .chunks_done = 30,
                           .chunks_total = 100,
                           .cursor = "src/m.c",
                           .cursor_len = 7};
    ASSERT_OK(store_job_put(t, &j));
    j.id = id2;
    j.repo_id = 0;
    j.cursor = NULL;
    j.cursor_len = 0;
    ASSERT_OK(store_job_put(t, &j));
    j.repo_id = repo + 5;
    ASSERT_EQ(store_job_put(t, &j), -ENOENT);
    j.id = 0;
    ASSERT_EQ(store_job_put(t, &j), -EINVAL);
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_job_get(t, id1, &g));
    ASSERT_EQ(g.repo_id, repo);
    ASSERT_EQ(g.state, 2);
    ASSERT_EQ(g.error, -EIO);
    ASSERT_EQ(g.created_ns, 100);
    ASSERT_EQ(g.updated_ns, 200);
    ASSERT_EQ(g.files_done + g.files_total + g.chunks_done + g.chunks_total, 143);
    ASSERT_EQ(g.cursor_len, 7);
    ASSERT_TRUE(memcmp(g.cursor, "src/m.c", 7) == 0);
    ASSERT_OK(store_job_get(t, id2, &g));
    ASSERT_EQ(g.cursor_len, 0);
    ASSERT_OK(store_job_foreach(t, collect_job, ids));
    ASSERT_EQ(ids[0], 2);
    ASSERT_EQ(ids[1], id1);
    ASSERT_EQ(ids[2], id2);
    store_read_end(t);

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_job_delete(t, id2));
    ASSERT_EQ(store_job_delete(t, id2), -ENOENT);
    ASSERT_EQ(store_job_get(t, id2, &g), -ENOENT);
    ASSERT_OK(store_write_commit(t));
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- whole-repository and whole-file operations ---------------------------------------- */

TEST(repo_remove_removes_all_rows)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_file f = {0}, g;
    struct store_job j = {0}, jg;
    struct store_chunk c;
    uint32_t a, b, a2, dim;
    uint64_t fa, fb, jid_a, jid_b, df;
    float v[8];

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/a", &a));
    ASSERT_OK(store_repo_get_or_create(t, "/src/b", &b));
    ASSERT_OK(store_chunk_ids_alloc(t, a, 20, &fa));
    ASSERT_OK(store_chunk_ids_alloc(t, b, 20, &fb));
    for (uint32_t i = 0; i < 20; i++) {
        put_chunk_full(t, fa + i, "a.c", i + 1);
        put_chunk_full(t, fb + i, "b.c", i + 1);
    }
    f = (struct store_file){.path = "a.c", .first_chunk = fa, .n_chunks = 20};
    ASSERT_OK(store_file_put(t, a, &f));
    f = (struct store_file){.path = "b.c", .first_chunk = fb, .n_chunks = 20};
    ASSERT_OK(store_file_put(t, b, &f));
    ASSERT_OK(store_job_id_alloc(t, &jid_a));
    j = (struct store_job){.id = jid_a, .repo_id = a};
    ASSERT_OK(store_job_put(t, &j));
    ASSERT_OK(store_job_id_alloc(t, &jid_b));
    j = (struct store_job){.id = jid_b, .repo_id = b};
    ASSERT_OK(store_job_put(t, &j));
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_remove(t, a));
    ASSERT_EQ(store_repo_remove(t, a), -ENOENT);
    ASSERT_EQ(store_repo_remove(t, 0), -ENOENT);
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_EQ(store_repo_find(t, "/src/a", &a2), -ENOENT);
    ASSERT_EQ(store_repo_get(t, a, &(struct store_repo){0}), -ENOENT);
    ASSERT_EQ(store_file_get(t, a, "a.c", &g), -ENOENT);
    for (uint32_t i = 0; i < 20; i++) {
        ASSERT_EQ(store_chunk_get(t, fa + i, &c), -ENOENT);
        ASSERT_EQ(store_vector_get(t, fa + i, v, 8, &dim), -ENOENT);
        ASSERT_EQ(store_postings_doc_len(t, fa + i, &dim), -ENOENT);
    }
    ASSERT_OK(store_postings_df(t, a, "alpha", &df));
    ASSERT_EQ(df, 0);
    ASSERT_EQ(store_job_get(t, jid_a, &jg), -ENOENT);
    /* The other repository is untouched. */
    ASSERT_OK(store_file_get(t, b, "b.c", &g));
    ASSERT_OK(store_chunk_get(t, fb + 19, &c));
    ASSERT_OK(store_vector_get(t, fb + 19, v, 8, &dim));
    ASSERT_OK(store_postings_df(t, b, "beta", &df));
    ASSERT_EQ(df, 20);
    ASSERT_OK(store_job_get(t, jid_b, &jg));
    store_read_end(t);

    /* The path can come back; it gets a new id (ids are never reused). */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_EQ(store_repo_get_or_create(t, "/src/a", &a2), 1);
    ASSERT_GT(a2, b);
    ASSERT_OK(store_write_commit(t));
    store_free(s);
    rm_rf(dir);
    free(dir);
}

static void put_file_v(struct store_txn *t, uint32_t repo, const char *path, uint32_t n,
                       uint64_t *ret_first)
{
    struct store_file f = {.path = path, .n_chunks = n, .size = n};
    uint64_t first;

    ASSERT_OK(store_chunk_ids_alloc(t, repo, n, &first));
    for (uint32_t i = 0; i < n; i++)
        put_chunk_full(t, first + i, path, 1 + i * 10);
    f.first_chunk = first;
    ASSERT_OK(store_file_put(t, repo, &f));
    *ret_first = first;
}

TEST(file_replaced_atomically)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_file g;
    struct store_chunk c;
    uint64_t old_first, new_first, df;
    uint32_t repo, dim;
    float v[8];

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/r", &repo));
    put_file_v(t, repo, "lib.c", 4, &old_first);
    ASSERT_OK(store_write_commit(t));

    /* Replace mid-way, then abort: the old row and all old chunks remain. */
    ASSERT_OK(store_write_begin(s, &t));
    put_file_v(t, repo, "lib.c", 6, &new_first);
    ASSERT_EQ(store_chunk_get(t, old_first, &c), -ENOENT); /* gone inside the transaction */
    store_write_abort(t);

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_file_get(t, repo, "lib.c", &g));
    ASSERT_EQ(g.first_chunk, old_first);
    ASSERT_EQ(g.n_chunks, 4);
    for (uint32_t i = 0; i < 4; i++) {
        ASSERT_OK(store_chunk_get(t, old_first + i, &c));
        ASSERT_EQ(c.start_line, 1 + i * 10);
        ASSERT_OK(store_vector_get(t, old_first + i, v, 8, &dim));
    }
    ASSERT_OK(store_postings_df(t, repo, "alpha", &df));
    ASSERT_EQ(df, 4);
    store_read_end(t);
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 4);

    /* The same replacement committed: only the new chunks exist, counters follow. */
    ASSERT_OK(store_write_begin(s, &t));
    put_file_v(t, repo, "lib.c", 6, &new_first);
    ASSERT_OK(store_write_commit(t));
    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_file_get(t, repo, "lib.c", &g));
    ASSERT_EQ(g.first_chunk, new_first);
    ASSERT_EQ(g.n_chunks, 6);
    ASSERT_EQ(store_chunk_get(t, old_first, &c), -ENOENT);
    ASSERT_EQ(store_vector_get(t, old_first + 3, v, 8, &dim), -ENOENT);
    ASSERT_OK(store_postings_df(t, repo, "alpha", &df));
    ASSERT_EQ(df, 6);
    store_read_end(t);
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 6);
    ASSERT_EQ(REPO_COUNT(s, repo, n_vectors), 6);
    ASSERT_EQ(REPO_COUNT(s, repo, n_lex_docs), 6);
    ASSERT_EQ(REPO_COUNT(s, repo, sum_doc_len), 18);
    ASSERT_EQ(REPO_COUNT(s, repo, n_files), 1);

    /* Deleting the file deletes its chunks. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_file_delete(t, repo, "lib.c"));
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 0);
    ASSERT_EQ(REPO_COUNT(s, repo, n_vectors), 0);
    ASSERT_EQ(REPO_COUNT(s, repo, n_lex_docs), 0);
    ASSERT_EQ(REPO_COUNT(s, repo, n_files), 0);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

static int count_vecs(void *userdata, uint64_t id, const float *v, uint32_t dim)
{
    (void)id, (void)v, (void)dim;
    (*(size_t *)userdata)++;
    return 0;
}

static size_t vectors_of(struct store_txn *t, uint32_t repo)
{
    size_t n = 0;

    ASSERT_OK(store_vector_foreach(t, repo, count_vecs, &n));
    return n;
}

/* A file written over several commits: its staged chunks stay out of the walks searches use
 * (the old version stays in) until its row goes in; dropping them after a "crash" removes
 * every row and hands the ids back, so the next allocation is the same range again. */
TEST(staged_chunks_hidden_until_file_row)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_file f = {.path = "big.c", .n_chunks = 6, .size = 6};
    struct store_chunk c;
    uint64_t old_first, first, again, got_first;
    uint32_t repo, got_n;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/r", &repo));
    put_file_v(t, repo, "big.c", 2, &old_first);
    ASSERT_OK(store_write_commit(t));

    /* Three of six new chunks, staged, committed. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 6, &first));
    for (uint32_t i = 0; i < 3; i++)
        put_chunk_full(t, first + i, "big.c", 100 + i * 10);
    ASSERT_OK(store_chunk_stage(t, repo, first, 6));
    ASSERT_OK(store_chunk_stage(t, repo, first, 6)); /* the same range again: no-op */
    ASSERT_EQ(store_chunk_stage(t, repo, first, 5), -EBUSY);
    ASSERT_EQ(store_chunk_stage(t, repo + 1, first, 6), -EINVAL);
    ASSERT_OK(store_write_commit(t));

    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_chunk_staged(t, repo, &got_first, &got_n));
    ASSERT_EQ(got_first, first);
    ASSERT_EQ(got_n, 6);
    ASSERT_EQ(vectors_of(t, repo), 2);           /* the old version only */
    ASSERT_EQ(postings_of(t, repo, "alpha"), 2); /* likewise */
    ASSERT_OK(store_chunk_get(t, first, &c));    /* the rows exist */
    store_read_end(t);

    /* "Crash": the next writer drops the range; ids come back, the old version stays. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_chunk_unstage(t, repo, true));
    ASSERT_EQ(store_chunk_unstage(t, repo, true), -ENOENT);
    ASSERT_EQ(store_chunk_get(t, first, &c), -ENOENT);
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 6, &again));
    ASSERT_EQ(again, first);
    ASSERT_OK(store_write_commit(t));
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 2);
    ASSERT_EQ(REPO_COUNT(s, repo, n_lex_docs), 2);

    /* Written to the end over two commits, then the file row: the new version replaces the
     * old one and becomes visible. */
    ASSERT_OK(store_write_begin(s, &t));
    for (uint32_t i = 0; i < 3; i++)
        put_chunk_full(t, again + i, "big.c", 100 + i * 10);
    ASSERT_OK(store_chunk_stage(t, repo, again, 6));
    ASSERT_OK(store_write_commit(t));
    ASSERT_OK(store_write_begin(s, &t));
    for (uint32_t i = 3; i < 6; i++)
        put_chunk_full(t, again + i, "big.c", 100 + i * 10);
    f.first_chunk = again;
    ASSERT_OK(store_file_put(t, repo, &f));
    ASSERT_OK(store_chunk_unstage(t, repo, false));
    ASSERT_OK(store_write_commit(t));
    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_EQ(store_chunk_staged(t, repo, &got_first, &got_n), -ENOENT);
    ASSERT_EQ(vectors_of(t, repo), 6);
    ASSERT_EQ(postings_of(t, repo, "alpha"), 6);
    ASSERT_EQ(store_chunk_get(t, old_first, &c), -ENOENT);
    store_read_end(t);
    ASSERT_EQ(REPO_COUNT(s, repo, n_chunks), 6);

    /* Removing a repository removes its staged record too. */
    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_chunk_ids_alloc(t, repo, 2, &first));
    put_chunk_full(t, first, "new.c", 1);
    ASSERT_OK(store_chunk_stage(t, repo, first, 2));
    ASSERT_OK(store_repo_remove(t, repo));
    ASSERT_EQ(store_chunk_staged(t, repo, &got_first, &got_n), -ENOENT);
    ASSERT_OK(store_write_commit(t));
    store_free(s);
    rm_rf(dir);
    free(dir);
}

TEST(reopen_keeps_data)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_txn *t;
    struct store_chunk c;
    struct store_file g;
    uint64_t first, df;
    uint32_t repo, id, dim;
    float v[8];

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/keep", &repo));
    put_file_v(t, repo, "k.c", 3, &first);
    ASSERT_OK(store_meta_put(t, "model", "m", 1));
    ASSERT_OK(store_write_commit(t));
    store_free(s);

    s = open_at(dir);
    ASSERT_OK(store_read_begin(s, &t));
    ASSERT_OK(store_repo_find(t, "/src/keep", &id));
    ASSERT_EQ(id, repo);
    ASSERT_OK(store_file_get(t, repo, "k.c", &g));
    ASSERT_EQ(g.first_chunk, first);
    ASSERT_OK(store_chunk_get(t, first + 2, &c));
    ASSERT_STREQ(c.path, "k.c");
    ASSERT_OK(store_vector_get(t, first + 2, v, 8, &dim));
    ASSERT_EQ(dim, 8);
    ASSERT_OK(store_postings_df(t, repo, "beta", &df));
    ASSERT_EQ(df, 3);
    store_read_end(t);
    ASSERT_TRUE(meta_has(s, "model"));
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/*
 * store_release_memory(): LMDB keeps the dirty pages of a big write transaction after commit
 * (one malloc'd page per page touched); releasing gives them back and keeps every row, the
 * table handles and the ability to write.  The heap measure (mallinfo2) is glibc's and means
 * nothing under AddressSanitizer, whose allocator replaces it.
 */
TEST(release_memory_keeps_data_and_frees_pages)
{
    char *dir = tmpdir_new();
    struct store *s = open_at(dir);
    struct store_options o;
    struct store_txn *t, *r;
    struct store_file g;
    uint64_t first, df, first2, base;
    uint32_t repo;
    char term[32];
    size_t before, after;

    ASSERT_OK(store_write_begin(s, &t));
    ASSERT_OK(store_repo_get_or_create(t, "/src/big", &repo));
    put_file_v(t, repo, "k.c", 3, &first);
    ASSERT_OK(store_write_commit(t));
    /* 60,000 distinct terms, then a transaction that adds a posting to each: it copies every
     * leaf of the postings table (thousands of pages), as a big file's postings do. */
    for (int pass = 0; pass < 2; pass++) {
        ASSERT_OK(store_write_begin(s, &t));
        ASSERT_OK(store_chunk_ids_alloc(t, repo, 60000, &base));
        for (uint32_t i = 0; i < 60000; i++) {
            struct store_term one = {term, 1};

            snprintf(term, sizeof(term), "term%06u", i * 7919u % 1000003u);
            ASSERT_OK(store_postings_add(t, base + i, 1, &one, 1));
        }
        ASSERT_OK(store_write_commit(t));
    }

    before = mallinfo2().uordblks;
    ASSERT_OK(store_release_memory(s));
    after = mallinfo2().uordblks;
    printf("  heap in use: %zu KiB before release, %zu KiB after\n", before >> 10, after >> 10);
#if !defined(__SANITIZE_ADDRESS__)
    ASSERT_GT(before, after + 2 * 1024 * 1024);
#endif

    /* Everything is still there, and the store takes new writes. */
    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_OK(store_file_get(r, repo, "k.c", &g));
    ASSERT_EQ(g.first_chunk, first);
    snprintf(term, sizeof(term), "term%06u", 59999u * 7919u % 1000003u);
    ASSERT_OK(store_postings_df(r, repo, term, &df));
    ASSERT_EQ(df, 2);
    /* Refused while this thread holds a read transaction: it would wait for itself. */
    ASSERT_EQ(store_release_memory(s), -EDEADLK);
    store_read_end(r);
    ASSERT_OK(store_write_begin(s, &t));
    put_file_v(t, repo, "l.c", 2, &first2);
    /* ... and while it has the write transaction open. */
    ASSERT_EQ(store_release_memory(s), -EDEADLK);
    ASSERT_OK(store_write_commit(t));
    ASSERT_OK(store_release_memory(s));
    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_OK(store_file_get(r, repo, "l.c", &g));
    ASSERT_EQ(g.first_chunk, first2);
    store_read_end(r);
    store_free(s);

    /* A read-only store has nothing to give back. */
    store_options_init(&o);
    o.read_only = true;
    ASSERT_OK(store_open(dir, &o, &s));
    ASSERT_OK(store_release_memory(s));
    ASSERT_OK(store_read_begin(s, &r));
    ASSERT_OK(store_file_get(r, repo, "l.c", &g));
    store_read_end(r);
    store_free(s);
    rm_rf(dir);
    free(dir);
}

/* A child commits, starts another transaction and is SIGKILLed mid-way (holding a read
 * transaction too); the parent finds exactly the committed data, and the dead reader slot
 * does not get in the way. */
TEST(kill_9_loses_nothing_committed)
{
    char *dir = tmpdir_new();
    int pipefd[2], status;
    pid_t pid;
    char c;

    ASSERT_EQ(pipe(pipefd), 0);
    pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        struct store_options o;
        struct store_txn *t, *r;
        struct store *s;
        uint32_t repo;
        uint64_t first;

        close(pipefd[0]);
        store_options_init(&o); /* default: synchronous commits */
        o.map_size = 1 << 20;
        if (store_open(dir, &o, &s) < 0 || store_write_begin(s, &t) < 0 ||
            store_repo_get_or_create(t, "/src/committed", &repo) < 0 || store_write_commit(t) < 0)
            _exit(1);
        if (store_write_begin(s, &t) < 0 || store_read_begin(s, &r) < 0 ||
            store_repo_get_or_create(t, "/src/uncommitted", &repo) < 0 ||
            store_chunk_ids_alloc(t, repo, 10, &first) < 0)
            _exit(1);
        if (write(pipefd[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(pipefd[1]);
    ASSERT_EQ(read(pipefd[0], &c, 1), 1);
    close(pipefd[0]);
    kill(pid, SIGKILL);
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    {
        struct store *s = open_at(dir);
        struct store_txn *t;
        uint32_t id;

        ASSERT_OK(store_read_begin(s, &t));
        ASSERT_OK(store_repo_find(t, "/src/committed", &id));
        ASSERT_EQ(store_repo_find(t, "/src/uncommitted", &id), -ENOENT);
        store_read_end(t);
        ASSERT_OK(store_write_begin(s, &t));
        ASSERT_EQ(store_repo_get_or_create(t, "/src/after", &id), 1);
        ASSERT_OK(store_write_commit(t));
        store_free(s);
    }
    rm_rf(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
