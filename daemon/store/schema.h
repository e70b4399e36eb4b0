/*
 * schema.h - the on-disk layout of coarch's LMDB environment, schema version 2.
 *
 * This file is the format's documentation (in the manner of SQLite's btreeInt.h) and the single
 * source of the offsets that store-*.c encode and decode.  Nothing outside daemon/store/ should
 * need it: the typed APIs in store-repo.h, store-chunk.h and store-job.h hide the bytes.
 *
 * Byte order.  Integer KEYS are big-endian so that LMDB's default memcmp order sorts them
 * numerically: a repository's files, a repository's postings and a repository's chunk ids each
 * form one contiguous key range, which is what makes "all vectors of repo R" a sequential leaf
 * walk and "remove repo R" a handful of range deletions.  Integer VALUES are host byte order and
 * read with memcpy (LMDB gives values only 2-byte alignment): an LMDB file is tied to the host's
 * endianness and word size anyway, so a portable value encoding would buy nothing.
 *
 * Strings in values are stored with a trailing NUL so the typed APIs can hand out borrowed
 * `const char *` pointing into the map.  Strings in keys have no NUL.
 *
 * Identifiers.
 *   repo id   u32, 1..STORE_MAX_REPO_ID, allocated from meta "coarch.next_repo_id", never reused
 *             while the environment lives (a removed repository's id stays retired).
 *   chunk id  u64 = repo id << 40 | seq, seq 1..2^40-1 allocated from the repo row's next_seq.
 *             Putting the repo in the high bits keeps every per-chunk table (chunks, vectors,
 *             lexdocs) clustered by repository with no extra key bytes; a file's chunks get one
 *             contiguous id range, recorded in its file row.
 *   job id    u64, allocated from meta "coarch.next_job_id".
 *
 * Limits: LMDB keys (and DUPSORT values) are at most STORE_MAX_KEY (511) bytes, which bounds
 * repository paths and file paths; see store-repo.h.
 *
 * Named databases ("tables"):
 *
 * meta        key: ASCII name.  Keys starting "coarch." are the store's own:
 *               coarch.schema_version  u32   the schema of this environment (see store.h)
 *               coarch.next_repo_id    u64   next repo id to hand out (absent = 1)
 *               coarch.next_job_id     u64   next job id to hand out (absent = 1)
 *               coarch.staged.<repo>   u64 first chunk id, u32 n: a file's chunks written
 *                                      over several transactions, hidden from searches
 *                                      until its file row is put (store-chunk.h)
 *             other keys are free for the daemon (store_meta_get/put), e.g. the embedding model
 *             the vectors were computed with.
 *
 * repo_paths  key: absolute repository path bytes (1..511).   value: u32 repo id.
 *
 * repos       key: u32 BE repo id.   value:
 *               OFFSET SIZE  FIELD
 *                  0     8   n_files       file rows
 *                  8     8   n_chunks      chunk rows
 *                 16     8   n_vectors     vector rows
 *                 24     8   n_lex_docs    chunks with postings (BM25's N)
 *                 32     8   sum_doc_len   sum of their lengths (BM25's avgdl = sum/N)
 *                 40     8   next_seq      next chunk sequence number (starts at 1)
 *                 48     8   created_ns    i64, CLOCK_REALTIME
 *                 56     8   indexed_ns    i64, set by the indexer (0 = never)
 *                 64     N   path          absolute path + NUL
 *
 * files       key: u32 BE repo id + relative path bytes (1..507, '/'-separated).   value:
 *               OFFSET SIZE  FIELD
 *                  0    32   hash          content hash (the indexer's choice, zero-padded)
 *                 32     8   mtime_ns      i64
 *                 40     8   size          bytes
 *                 48     8   first_chunk   first chunk id of the file's range (0 if none)
 *                 56     4   n_chunks      length of the range
 *                 60     4   reserved      0
 *
 * chunks      key: u64 BE chunk id.   value:
 *               OFFSET SIZE  FIELD
 *                  0    32   hash          content hash of the chunk text
 *                 32     8   text_offset   byte offset of the chunk in its file
 *                 40     4   text_len      bytes
 *                 44     4   start_line    1-based, inclusive
 *                 48     4   end_line      1-based, inclusive
 *                 52     2   path_len      L1, without NUL
 *                 54     2   lang_len      L2, without NUL
 *                 56     2   symbol_len    L3, without NUL (0 = no symbol)
 *                 58     2   flags         CHUNK_F_UNIT: the unit fields follow the strings
 *                 60  L1+1   path + NUL    relative to the repository
 *                  .  L2+1   language + NUL
 *                  .  L3+1   symbol + NUL
 *               with CHUNK_F_UNIT (schema 2), right after the symbol's NUL (unaligned):
 *                  +0    8   unit_offset   byte offset of the unit (the embedded lines)
 *                  +8    4   unit_len      bytes
 *                 +12    4   unit_start_line
 *                 +16    4   unit_end_line
 *             Since schema 2 the line and byte range at 32..51 is the chunk's *definition*
 *             (the whole function its unit was cut from: what a search hit reports) and the
 *             unit fields the part that was embedded.  A row without CHUNK_F_UNIT (every row
 *             of schema 1, where the range was the chunk's group) is its own unit.
 *
 * vectors     key: u64 BE chunk id.   value:
 *               OFFSET SIZE  FIELD
 *                  0     4   dim
 *                  4     4   format        1 = fp32 (room for quantised formats later)
 *                  8  4*dim  components    fp32, host order
 *             One row per chunk, not blocks: a repository's rows are one key range (walked in
 *             order by store_vector_foreach) and a re-indexed file rewrites only its own rows.
 *             Rows are put with MDB_APPEND when their id is the table's largest, which is the
 *             bulk case (a repository's first index, any index of the newest repository).  That
 *             matters: a 384-d row is 1.5 KiB, two fit a 4 KiB leaf, and LMDB's ordinary split
 *             of a full leaf on an ascending insert leaves ONE row per page, while an append
 *             split keeps the full page.  Measured (3,000 rows): 2,999 leaves and 78k rows/s
 *             without, 1,500 leaves and 350k rows/s with; 100k rows walk in ~70 ms.  Rows added
 *             later to an older repository take the ordinary path (small, incremental).
 *
 * lexdocs     key: u64 BE chunk id.   value: the chunk's BM25 document, kept so that its
 *             postings can be removed without the (possibly gone) text:
 *               OFFSET SIZE  FIELD
 *                  0     4   doc_len       term occurrences in the chunk
 *                  4     4   n_terms       distinct terms
 *                  8     .   n_terms x { u32 tf, u8 len, len bytes }
 *
 * postings    MDB_DUPSORT | MDB_DUPFIXED.   key: u32 BE repo id + term bytes (1..255).
 *             Each duplicate is one 16-byte posting, sorted by chunk id:
 *               OFFSET SIZE  FIELD
 *                  0     8   chunk id      BE, so duplicates sort by id
 *                  8     4   tf            term frequency in the chunk
 *                 12     4   doc_len       the chunk's length, copied here so BM25 scoring
 *                                          needs no per-candidate lookup
 *             df of a term = the key's duplicate count (mdb_cursor_count).
 *
 * jobs        key: u64 BE job id.   value:
 *               OFFSET SIZE  FIELD
 *                  0     4   repo_id       0 = none
 *                  4     4   state         owned by sched/ (opaque here)
 *                  8     4   error         negative errno of a failed job, else 0
 *                 12     4   cursor_len    N
 *                 16     8   created_ns
 *                 24     8   updated_ns
 *                 32     8   files_done
 *                 40     8   files_total
 *                 48     8   chunks_done
 *                 56     8   chunks_total
 *                 64     N   cursor        opaque checkpoint cursor (the indexer's format)
 */
#ifndef COARCH_STORE_SCHEMA_H
#define COARCH_STORE_SCHEMA_H

/* The schema this build writes.  Bump it together with a step in store.c's migration table. */
#define STORE_SCHEMA_VERSION 2u

#define STORE_META_SCHEMA_VERSION "coarch.schema_version"
#define STORE_META_NEXT_REPO_ID "coarch.next_repo_id"
#define STORE_META_NEXT_JOB_ID "coarch.next_job_id"
#define STORE_META_STAGED_PREFIX "coarch.staged." /* + repo id: store_chunk_stage() */
#define STORE_META_RESERVED_PREFIX "coarch."

#define STORE_CHUNK_SEQ_BITS 40

/* repos */
#define REPO_N_FILES 0
#define REPO_N_CHUNKS 8
#define REPO_N_VECTORS 16
#define REPO_N_LEX_DOCS 24
#define REPO_SUM_DOC_LEN 32
#define REPO_NEXT_SEQ 40
#define REPO_CREATED_NS 48
#define REPO_INDEXED_NS 56
#define REPO_PATH 64

/* files */
#define FILE_HASH 0
#define FILE_MTIME_NS 32
#define FILE_SIZE 40
#define FILE_FIRST_CHUNK 48
#define FILE_N_CHUNKS 56
#define FILE_RESERVED 60
#define FILE_ROW_SIZE 64

/* chunks */
#define CHUNK_HASH 0
#define CHUNK_TEXT_OFFSET 32
#define CHUNK_TEXT_LEN 40
#define CHUNK_START_LINE 44
#define CHUNK_END_LINE 48
#define CHUNK_PATH_LEN 52
#define CHUNK_LANG_LEN 54
#define CHUNK_SYMBOL_LEN 56
#define CHUNK_FLAGS 58
#define CHUNK_STRINGS 60
#define CHUNK_F_UNIT 1u
#define CHUNK_UNIT_SIZE 20 /* the unit fields after the strings */
#define CHUNK_UNIT_OFFSET 0
#define CHUNK_UNIT_LEN 8
#define CHUNK_UNIT_START_LINE 12
#define CHUNK_UNIT_END_LINE 16

/* vectors */
#define VECTOR_DIM 0
#define VECTOR_FORMAT 4
#define VECTOR_DATA 8
#define VECTOR_FORMAT_F32 1u

/* lexdocs */
#define LEXDOC_DOC_LEN 0
#define LEXDOC_N_TERMS 4
#define LEXDOC_TERMS 8

/* postings (one duplicate) */
#define POSTING_CHUNK_ID 0
#define POSTING_TF 8
#define POSTING_DOC_LEN 12
#define POSTING_SIZE 16

/* jobs */
#define JOB_REPO_ID 0
#define JOB_STATE 4
#define JOB_ERROR 8
#define JOB_CURSOR_LEN 12
#define JOB_CREATED_NS 16
#define JOB_UPDATED_NS 24
#define JOB_FILES_DONE 32
#define JOB_FILES_TOTAL 40
#define JOB_CHUNKS_DONE 48
#define JOB_CHUNKS_TOTAL 56
#define JOB_CURSOR 64

#endif
