#!/usr/bin/env bash
# test-index.sh - indexing and search end to end: coarchctl index/search/jobs/cancel/repos/
# remove/embed against a real coarchd with the real embedding model, on a small git repository
# generated here (python, c, js, go, markdown, a binary file, a .gitignore'd file and a vendored
# node_modules directory).
#
# Checks: index --wait and repos; ignored, binary and vendored files never indexed; a function
# found from a description of it (semantic, hybrid) and by its name (lexical); the JSON contract
# of DESIGN.md section 7 (lines 1-based, inclusive, within the file); --lang and --path filters;
# incremental re-index after an edit, a delete and a rename, and an unchanged re-index that
# indexes nothing; a job cancelled midway (search still works, indexing again completes); the
# errors for a missing directory and a repository that is not indexed; and the shell's habits:
# search scoped to the repository around the working directory (--all for every one), index
# with no path, the query from stdin, --vimgrep and -l, --lang checked and case-insensitive;
# every hit is one whole definition (a function's comment hit covers the function, a tiny
# neighbour is reported alone, a definition over 100 lines reports the part that matched).
#
# Needs the model (all-MiniLM-L6-v2, `scripts/fetch-model`) in $COARCH_TEST_MODEL_DIR or the
# default models directory: without it the test skips (77), or fails when CI is set.
# Env (set by meson): COARCHCTL, COARCHD.  The daemon runs on a temporary socket and data
# directory with a fixed batch of 16 chunks and a checkpoint after every batch, so that a
# cancel lands midway even on a fast machine; it is killed on exit.
set -u

ctl=${COARCHCTL:?COARCHCTL must name the coarchctl binary}
daemon=${COARCHD:?COARCHD must name the coarchd binary}
model_dir=${COARCH_TEST_MODEL_DIR:-$HOME/.local/share/coarch/models/all-MiniLM-L6-v2}
if [[ ! -x $ctl ]]; then
    echo "FAIL: coarchctl not built at $ctl"
    exit 1
fi
if [[ ! -x $daemon ]]; then
    echo "SKIP: coarchd not built at $daemon"
    exit 77
fi
if [[ ! -f $model_dir/config.json ]]; then
    if [[ -n ${CI:-} ]]; then
        echo "FAIL: no embedding model at $model_dir (run scripts/fetch-model); CI needs it"
        exit 1
    fi
    echo "SKIP: no embedding model at $model_dir (run scripts/fetch-model)"
    exit 77
fi

tmp=$(mktemp -d /tmp/coarch-test-index.XXXXXX)
export COARCH_SOCKET=$tmp/run/coarchd.sock
export COARCH_DATA_DIR=$tmp/data
export COARCH_MODEL=$model_dir
export COARCH_ADAPTIVE_BATCHING=0 COARCH_BATCH_SIZE=16 COARCH_CHECKPOINT_FREQUENCY=1
export NO_COLOR=1
unset COARCH_CONFIG COARCH_MEMORY_LIMIT_MB
failures=0
dpid=

# Stops the daemon; one that does not exit cleanly (a sanitizer report, a crash) fails the test.
cleanup() {
    local status=0
    if [[ -n $dpid ]]; then
        kill -TERM "$dpid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$dpid" 2>/dev/null
        wait "$dpid"
        status=$?
        if [[ $status -ne 0 ]]; then
            echo "FAIL: coarchd exited with status $status after SIGTERM"
            failures=$((failures + 1))
        fi
    fi
    if [[ $failures -gt 0 && -f $tmp/daemon.log ]]; then
        echo "--- last lines of the daemon log ---"
        tail -n 60 "$tmp/daemon.log"
    fi
    rm -rf "$tmp"
    [[ $failures -eq 0 ]] || exit 1
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

t0=$(date +%s.%N)
section_t=$t0
section() { # section NAME: prints the time the previous section took
    local now
    now=$(date +%s.%N)
    awk -v n="$1" -v a="$now" -v b="$t0" -v c="$section_t" \
        'BEGIN { printf "# %-44s (%6.1f s since start; previous section %5.1f s)\n", n, a - b, a - c }'
    section_t=$now
}

# run NAME EXPECTED_RC ARGS...: coarchctl (never autostarting), stdout/stderr in $out/$err.
run() {
    local name=$1 want=$2
    shift 2
    "$ctl" --no-autostart "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
    if [[ $rc -ne $want ]]; then
        fail "$name: exit $rc, expected $want; stdout: ${out:0:2000}; stderr: ${err:0:2000}"
        if [[ $rc -eq 3 || $rc -eq 4 ]] && ! kill -0 "$dpid" 2>/dev/null; then
            echo "coarchd (pid $dpid) is gone; stopping here"
            exit 1
        fi
        return 1
    fi
    echo "ok: $name"
}

contains() { # contains NAME HAYSTACK NEEDLE
    [[ $2 == *"$3"* ]] || fail "$1: expected '$3' in: ${2:0:2000}"
}

# check NAME PYTHON...: runs the Python statements with d = the JSON in $out, cwd = the
# generated repository; an AssertionError (or bad JSON) is a failure with its message.
check() {
    local name=$1
    shift
    if ! (cd "$repo" && python3 -c "
import json, os, sys
d = json.loads(sys.stdin.read())
$*
") <<<"$out" 2>"$tmp/py.err"; then
        fail "$name: $(tail -n 3 "$tmp/py.err"); output: ${out:0:1500}"
        return 1
    fi
    echo "ok: $name"
}

# Python helpers for check(): the results, their paths, and where a function starts.
py_helpers='
res = d["results"] if isinstance(d, dict) and "results" in d else []
paths = [r["path"] for r in res]
def line_of(path, needle):
    for i, l in enumerate(open(path, encoding="utf-8").read().split("\n"), 1):
        if needle in l:
            return i
    raise AssertionError(f"{needle!r} not in {path}")
def covers(r, path, needle):
    return r["path"] == path and r["start_line"] <= line_of(path, needle) <= r["end_line"]
def rank_of(path, needle):
    for i, r in enumerate(res, 1):
        if covers(r, path, needle):
            return i
    return 0
'

# ---- the repository -------------------------------------------------------------------------
repo=$tmp/repo
mkdir -p "$repo/src" "$repo/pkg" "$repo/web" "$repo/node_modules/leftpad" "$repo/docs"
cat >"$repo/src/config.py" <<'EOF'
"""Configuration handling for the service."""
import os


def parse_config_file(path):
    settings = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}:{number}: expected key=value, got {raw!r}")
            settings[key.strip()] = value.strip()
    return settings


def merge_settings(defaults, overrides):
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def settings_from_environment(prefix="APP_"):
    found = {}
    for name, value in os.environ.items():
        if name.startswith(prefix):
            found[name[len(prefix):].lower()] = value
    return found
EOF
cat >"$repo/src/geometry.py" <<'EOF'
"""Small geometry helpers."""
import math


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def distance_to(self, other):
        return math.hypot(self.x - other.x, self.y - other.y)


def polygon_area(points):
    area = 0.0
    for i, p in enumerate(points):
        q = points[(i + 1) % len(points)]
        area += p.x * q.y - q.x * p.y
    return abs(area) / 2.0


def centroid(points):
    n = len(points)
    return Point(sum(p.x for p in points) / n, sum(p.y for p in points) / n)
EOF
cat >"$repo/src/checksum.py" <<'EOF'
"""Checksums over byte strings."""


def rolling_checksum(data):
    low, high = 1, 0
    for byte in data:
        low = (low + byte) % 65521
        high = (high + low) % 65521
    zebrawombatold = (high << 16) | low
    return zebrawombatold


def hex_digest(data):
    return format(rolling_checksum(data), "08x")
EOF
cat >"$repo/src/list.c" <<'EOF'
#include <stdlib.h>

struct node {
    int value;
    struct node *next;
};

/* Turn the list around so that the last node comes first. */
struct node *list_reverse(struct node *head)
{
    struct node *prev = NULL;

    while (head) {
        struct node *next = head->next;
        head->next = prev;
        prev = head;
        head = next;
    }
    return prev;
}

size_t list_length(const struct node *head)
{
    size_t n = 0;

    for (; head; head = head->next)
        n++;
    return n;
}
EOF
cat >"$repo/pkg/server.go" <<'EOF'
package main

import (
	"fmt"
	"log"
	"net/http"
)

func healthHandler(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	fmt.Fprintln(w, "ok")
}

func main() {
	http.HandleFunc("/health", healthHandler)
	log.Fatal(http.ListenAndServe(":8080", nil))
}
EOF
cat >"$repo/web/util.js" <<'EOF'
function debounce(fn, wait) {
  let timer = null;
  return function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}

function capitalizeWords(text) {
  return text.replace(/\b\w/g, (c) => c.toUpperCase());
}

module.exports = { debounce, capitalizeWords };
EOF
cat >"$repo/docs/deploy.md" <<'EOF'
# Deploying

Build the container image, push it to the registry, and roll the service out with
`docker compose up -d`.  The health endpoint answers on port 8080.
EOF
printf 'secret_local_only.py\n*.log\n' >"$repo/.gitignore"
printf 'ignoredtokenplugh = "never indexed"\n' >"$repo/secret_local_only.py"
printf 'logtokenfrotz\n' >"$repo/debug.log"
echo 'module.exports = function vendoredtokenxyzzy(s) { return s; };' \
    >"$repo/node_modules/leftpad/index.js"
head -c 2048 /dev/zero | tr '\0' 'A' >"$repo/src/blob.bin"
printf '\0\1\2binarytokenquux\0\0' >>"$repo/src/blob.bin"
git -C "$repo" init -q && git -C "$repo" add -A >/dev/null 2>&1
n_files=8 # .gitignore, 3 .py, list.c, server.go, util.js, deploy.md

# ---- the daemon ------------------------------------------------------------------------------
section "start coarchd"
mkdir -p "$tmp/run"
"$daemon" >"$tmp/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do
    "$ctl" --no-autostart ping >/dev/null 2>&1 && break
    sleep 0.1
done
run "daemon answers" 0 ping || exit 1

# ---- 1. index --wait, repos, what is not indexed -------------------------------------------
section "1. index --wait"
run "index --wait" 0 index --wait "$repo" && contains "index summary" "$out" "indexed $repo" &&
    contains "progress lines on stderr" "$err" ": done"
run "index --wait --quiet" 0 index --wait --quiet "$repo" && [[ -z $err ]] ||
    fail "--quiet printed progress: $err"
run "index --wait --json again" 0 index --wait --json "$repo" &&
    check "re-index without changes indexes nothing" "
assert d['state'] == 'done', d
assert d['files_unchanged'] == $n_files, d
assert d['files_done'] == 0 and d['chunks_done'] == 0, d"
run "repos --json" 0 repos --json && check "repos lists the repository" "
r = [x for x in d['repos'] if x['path'] == '$repo']
assert len(r) == 1, d
assert r[0]['files'] == $n_files and r[0]['chunks'] > 0, r"
run "repos" 0 repos && contains "repos table" "$out" "$repo"
run "jobs" 0 jobs && contains "jobs table" "$out" "done"
for q in ignoredtokenplugh logtokenfrotz vendoredtokenxyzzy binarytokenquux; do
    run "lexical $q" 0 search --json --mode lexical --repo "$repo" "$q" &&
        check "$q is not indexed" "$py_helpers
assert res == [], paths"
done
run "everything (semantic, k 1000)" 0 search --json -k 1000 --mode semantic --repo "$repo" \
    "anything at all" && check "only tracked text files are indexed" "$py_helpers
bad = [p for p in paths if p.startswith('node_modules/') or p in
       ('secret_local_only.py', 'debug.log', 'src/blob.bin')]
assert not bad, bad
assert 'src/config.py' in paths and 'pkg/server.go' in paths and 'docs/deploy.md' in paths, paths"

# ---- 2. finding a function in every mode ---------------------------------------------------
section "2. search modes"
for mode in semantic hybrid; do
    run "$mode: description" 0 search --json -k 5 --mode "$mode" --repo "$repo" \
        read key value settings from a file &&
        check "$mode finds parse_config_file in the top 3" "$py_helpers
rk = rank_of('src/config.py', 'def parse_config_file')
assert 1 <= rk <= 3, (rk, [(r['path'], r['start_line'], r['end_line']) for r in res])
print('    rank', rk)"
done
run "lexical: identifier" 0 search --json -k 5 --mode lexical --repo "$repo" parse_config_file &&
    check "lexical finds parse_config_file first" "$py_helpers
assert rank_of('src/config.py', 'def parse_config_file') == 1, res[:2]"
run "semantic: reverse a list" 0 search --json -k 3 --mode semantic --repo "$repo" \
    turn a linked list around && check "semantic finds list_reverse" "$py_helpers
assert rank_of('src/list.c', 'list_reverse(struct') in (1, 2, 3), paths"
run "human output" 0 search -k 3 --repo "$repo" read key value settings from a file &&
    contains "human output has path:lines" "$out" "src/config.py:" &&
    contains "human output has the snippet" "$out" "def parse_config_file(path):"
(cd "$repo/src" && "$ctl" --no-autostart search --json -k 3 --repo .. parse_config_file \
    >"$tmp/out" 2>"$tmp/err") || fail "search --repo .. from a subdirectory: $(cat "$tmp/err")"
out=$(cat "$tmp/out") && check "--repo resolves a relative path" "$py_helpers
assert res and res[0]['repo'] == '$repo', res[:1]"
run "search every repository" 0 search --json -k 3 parse_config_file &&
    check "no --repo searches every repository" "$py_helpers
assert any(r['repo'] == '$repo' for r in res), res"

# ---- 3. the JSON contract -------------------------------------------------------------------
section "3. JSON contract"
run "search --json -k 5" 0 search --json -k 5 --repo "$repo" "compute the area of a polygon" &&
    check "results parse, are complete and within their files" "$py_helpers
assert isinstance(d['results'], list) and 1 <= len(res) <= 5, d
for r in res:
    for key in ('path', 'start_line', 'end_line', 'score', 'symbol', 'language', 'snippet'):
        assert key in r, (key, r)
    n = len(open(r['path'], encoding='utf-8').read().rstrip('\n').split('\n'))
    assert 1 <= r['start_line'] <= r['end_line'] <= n, (r['path'], r['start_line'],
                                                        r['end_line'], n)
scores = [r['score'] for r in res]
assert scores == sorted(scores, reverse=True), scores
assert res[0]['path'] == 'src/geometry.py', paths"
[[ $(wc -l <"$tmp/out") -eq 1 ]] || fail "search --json to a pipe is not one line"

# ---- 4. filters ------------------------------------------------------------------------------
section "4. filters"
run "--lang python" 0 search --json -k 50 --lang python --repo "$repo" handler settings list &&
    check "--lang python returns only python" "$py_helpers
assert res and all(r['language'] == 'python' for r in res), [(r['path'], r['language']) for r in res]"
run "--path '*.go'" 0 search --json -k 50 --path '*.go' --repo "$repo" settings from a file &&
    check "--path '*.go' returns only .go files" "$py_helpers
assert res and all(p.endswith('.go') for p in paths), paths"
run "--path 'src/'" 0 search --json -k 50 --path 'src/' --repo "$repo" health endpoint &&
    check "--path 'src/' stays in src" "$py_helpers
assert res and all(p.startswith('src/') for p in paths), paths"
run "--path src" 0 search --json -k 50 --path src --repo "$repo" health endpoint &&
    check "--path src (a bare directory name) stays in src" "$py_helpers
assert res and all(p.startswith('src/') or '/src/' in p for p in paths), paths"

# ---- 5. incremental re-index: edit, delete, rename --------------------------------------------
section "5. re-index after edit, delete, rename"
sed -i 's/zebrawombatold/quokkanarwhalnew/g' "$repo/src/checksum.py"
rm "$repo/web/util.js"
git -C "$repo" mv src/list.c src/linked_list.c
run "re-index after changes" 0 index --wait --json "$repo" && check "only changed files re-indexed" "
assert d['state'] == 'done', d
assert d['files_done'] == 2, d           # checksum.py (edited), linked_list.c (new name)
assert d['files_deleted'] == 2, d        # util.js, list.c
assert d['files_unchanged'] == $n_files - 3, d
# checksum.py's untouched chunks (the module docstring, hex_digest, rolling_checksum's title)
# keep their vectors; only the edited body is embedded again.
assert d['chunks_reused'] >= 2 and d['chunks_reused'] < d['chunks_done'], d"
run "a reused vector still finds its function" 0 search --json -k 3 --mode semantic --repo "$repo" \
    format a checksum as eight hex digits && check "hex_digest found by meaning" "$py_helpers
assert res and res[0]['symbol'] == 'hex_digest', [(r['symbol'], r['score']) for r in res]"
run "new content" 0 search --json --mode lexical --repo "$repo" quokkanarwhalnew &&
    check "the edited function's new body is found" "$py_helpers
assert paths and paths[0] == 'src/checksum.py', paths"
run "old content" 0 search --json --mode lexical --repo "$repo" zebrawombatold &&
    check "the old body is gone" "$py_helpers
assert res == [], paths"
run "deleted file" 0 search --json -k 1000 --mode semantic --repo "$repo" debounce a function &&
    check "the deleted file is gone" "$py_helpers
assert 'web/util.js' not in paths, paths"
run "renamed file" 0 search --json -k 5 --mode lexical --repo "$repo" list_reverse &&
    check "the renamed file shows under its new path only" "$py_helpers
assert paths and paths[0] == 'src/linked_list.c', paths
assert 'src/list.c' not in paths, paths"
run "renamed file (hybrid, all)" 0 search --json -k 1000 --repo "$repo" reverse a linked list &&
    check "the old path is never a result" "$py_helpers
assert 'src/list.c' not in paths, paths"
run "unchanged re-index" 0 index --wait --json "$repo" && check "unchanged re-index" "
assert d['files_unchanged'] == $n_files - 1 and d['files_done'] == 0, d
assert d['chunks_done'] == 0 and d['files_deleted'] == 0, d"

# ---- 6. cancel midway --------------------------------------------------------------------------
section "6. cancel a job midway"
big=$tmp/big
mkdir -p "$big"
std=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
find "$std" -name '*.py' -size -3k -not -path '*/test*' -not -path '*-packages/*' 2>/dev/null |
    sort | head -n 200 | while read -r f; do
    rel=${f#"$std"/}
    cp "$f" "$big/${rel//\//_}"
done
n_big=$(find "$big" -name '*.py' | wc -l)
echo "    $n_big python files in $big"
[[ $n_big -ge 50 ]] || fail "only $n_big stdlib files found under $std"
# A fast machine may finish the job before the cancel lands: then drop the index and try again.
cancelled=
for attempt in 1 2 3; do
    run "index without --wait" 0 index --json "$big" && check "a queued job" "
assert d['state'] in ('queued', 'running'), d" && job=$(python3 -c \
        'import json, sys; print(json.load(sys.stdin)["job"])' <<<"$out")
    run "index without --wait (people)" 0 index "$big" && contains "job id" "$out" "job ${job:-?} "
    started=
    for _ in $(seq 1200); do
        "$ctl" --no-autostart jobs --json >"$tmp/jobs" 2>/dev/null
        started=$(python3 -c '
import json, sys
j = [j for j in json.load(open(sys.argv[1]))["jobs"] if j["job"] == int(sys.argv[2])][0]
print(j["state"] if j["state"] != "running" or j["chunks_done"] > 0 else "")' \
            "$tmp/jobs" "${job:-0}" 2>/dev/null)
        [[ -n $started ]] && break
        sleep 0.05
    done
    if [[ $started == running ]] && "$ctl" --no-autostart cancel "${job:-0}" >"$tmp/out" 2>"$tmp/err"
    then
        out=$(cat "$tmp/out")
        contains "cancel" "$out" "job ${job:-?} cancelled"
        cancelled=1
        break
    fi
    [[ $started == running || $started == done ]] ||
        fail "job ${job:-?} did not get going (state '$started')"
    echo "    job ${job:-?} ended before the cancel landed ($(cat "$tmp/err" 2>/dev/null)); again"
    "$ctl" --no-autostart remove "$big" >/dev/null
done
[[ -n $cancelled ]] || fail "three jobs in a row ended before a cancel could land"
run "jobs --json after cancel" 0 jobs --json && check "the job is cancelled" "
j = [j for j in d['jobs'] if j['job'] == ${job:-0}]
assert j and j[0]['state'] == 'cancelled', j
assert 0 < j[0]['chunks_done'], j
print('    cancelled at', j[0]['chunks_done'], 'of ~', j[0]['chunks_total'], 'chunks')"
cancelled_chunks=$(python3 -c 'import json, sys
print([j for j in json.load(sys.stdin)["jobs"] if j["job"] == int(sys.argv[1])][0]["chunks_done"])' \
    "${job:-0}" <<<"$out" 2>/dev/null)
run "repos after cancel" 0 repos --json && check "the counts agree after a cancel" "
r = [r for r in d['repos'] if r['path'] == '$big']
assert r and r[0]['chunks'] == int('${cancelled_chunks:-0}'), (r, '${cancelled_chunks:-}')"
run "jobs after cancel" 0 jobs && contains "jobs shows cancelled" "$out" "cancelled"
run "cancel again" 1 cancel "${job:-0}" && contains "cancel again" "$err" "already cancelled" &&
    contains "named by the command" "$err" "coarchctl cancel:" &&
    [[ $err != *job.cancel* ]] || fail "a protocol method name in a message: $err"
run "cancel unknown job" 1 cancel 999999 && contains "cancel unknown" "$err" "999999"
run "search after cancel" 0 search --json -k 5 --repo "$big" "parse command line arguments" &&
    check "search works on a partial index" "$py_helpers
assert isinstance(res, list)"
run "index --wait after cancel" 0 index --wait --json "$big" && check "indexing completes" "
assert d['state'] == 'done', d
assert d['files_done'] + d['files_unchanged'] == $n_big, d
print('    resumed with', d['files_unchanged'], 'files already indexed')"
run "remove" 0 remove "$big" && contains "remove" "$out" "removed $big"
run "search removed repo" 1 search --repo "$big" x && contains "removed" "$err" "not indexed"
run "repos after remove" 0 repos --json && check "removed repository is not listed" "
assert all(r['path'] != '$big' for r in d['repos']), d"

# ---- 7. errors and embed --------------------------------------------------------------------
section "7. errors, embed"
run "index /nonexistent" 1 index /nonexistent-coarch-test && contains "names the path" "$err" \
    "/nonexistent-coarch-test"
run "index a file" 1 index "$repo/src/config.py" && contains "not a directory" "$err" \
    "not a directory"
mkdir -p "$tmp/not-indexed"
run "search not indexed" 1 search --repo "$tmp/not-indexed" x &&
    contains "not indexed" "$err" "not indexed" && contains "how to index" "$err" "coarchctl index"
run "search missing dir" 1 search --repo "$tmp/missing" x && contains "missing" "$err" "not indexed"
run "remove not indexed" 1 remove "$tmp/not-indexed" && contains "remove" "$err" "not indexed"
run "search without query" 2 search --repo "$repo"
run "search bad -k" 2 search -k 0 x
run "search bad mode" 2 search --mode fuzzy x
run "query after --" 0 search --json --mode lexical --repo "$repo" -- -parse_config_file &&
    check "a query may start with '-' after --" "$py_helpers
assert paths and paths[0] == 'src/config.py', paths"
run "cancel bad id" 2 cancel abc
run "index --help" 0 index --help && contains "index --help" "$out" "--wait"
run "embed --json" 0 embed --json "open a file" "close the socket" && check "embed vectors" "
import math
assert d['dim'] == 384 and len(d['vectors']) == 2, d.keys()
for v in d['vectors']:
    assert len(v) == 384 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3"
run "embed" 0 embed "open a file" && contains "embed human" "$out" "norm 1.0000"

# ---- 8. habits of the shell: scope, index without a path, stdin, one-line forms, --lang ------
section "8. shell habits"
other=$tmp/other
mkdir -p "$other"
printf 'def parse_config_file_elsewhere(path):\n    """Another parse_config_file."""\n    return path\n' \
    >"$other/elsewhere.py"
run "index another repository" 0 index --wait --quiet "$other" &&
    contains "one file, in the singular" "$out" ": 1 file (" &&
    [[ $out != *" 1 files"* && $out != *" 1 chunks"* ]] || fail "plural for one: $out"
pushd "$repo/src" >/dev/null || exit 1
run "index with no path (inside the repo)" 0 index --wait --json &&
    check "indexes the work tree's root" "assert d['repo'] == '$repo', d['repo']" &&
    check "what was skipped, and why" "
sk = d['skipped']
assert sk['binary'] == 1 and sk['vendored'] == 1, sk
files = {(f['path'], f['reason']) for f in d['skipped_files']}
assert ('src/blob.bin', 'binary') in files and ('node_modules', 'vendored') in files, files"
run "index --verbose" 0 index --wait --verbose &&
    contains "skip counts" "$out" "skipped: " && contains "binary count" "$out" "1 binary" &&
    contains "vendored count" "$out" "1 vendored directory" &&
    contains "binary named" "$out" "  src/blob.bin: binary" &&
    contains "vendored named" "$out" "  node_modules: vendored" &&
    [[ $err != *"files 0/0  chunks 0/~0"* ]] || fail "counters shown before the job began: $err"
run "search inside a repo" 0 search --json -k 50 --mode lexical parse_config_file &&
    check "only that repository" "$py_helpers

assert res, 'no results'
assert {r['repo'] for r in res} == {'$repo'}, {r['repo'] for r in res}"
run "search --all inside a repo" 0 search --json -k 50 --mode lexical --all parse_config_file &&
    check "every repository" "$py_helpers
assert {'$repo', '$other'} <= {r['repo'] for r in res}, res"
run "search --all --repo" 2 search --all --repo "$repo" x
run "JSON numbers" 0 search --json -k 3 --mode lexical parse_config_file &&
    python3 -c 'import re, sys; t = sys.stdin.read()
m = re.search(r"\"took_ms\":(-?[0-9.e+-]+)", t)
assert m and len(m.group(1).partition(".")[2]) <= 3, t[:200]' <<<"$out" ||
    fail "took_ms not to the microsecond: ${out:0:200}"
run "jobs --json numbers" 0 jobs --json &&
    python3 -c 'import json, sys
# A value, not its spelling: 3.4e+06 chunks/s (a job of nothing) is rounded too.
for j in json.loads(sys.stdin.read())["jobs"]:
    for k in ("elapsed_s", "chunks_per_s"):
        assert j[k] == round(j[k], 3), (k, j[k])' <<<"$out" 2>"$tmp/py.err" ||
    fail "unrounded job numbers: $(tail -n 1 "$tmp/py.err")"
run "query from stdin" 0 search --json -k 3 --mode lexical - <<<"parse_config_file" &&
    check "stdin query" "$py_helpers
assert res and res[0]['symbol'] == 'parse_config_file', res[:1]"
run "--vimgrep" 0 search --vimgrep -k 5 --mode lexical parse_config_file &&
    python3 - "$out" <<'PY' || fail "--vimgrep lines: $out"
import os, re, sys
lines = sys.argv[1].splitlines()
assert lines, "no lines"
for l in lines:
    m = re.match(r"^([^:]+):(\d+):1:(.*)$", l)
    assert m, l
    assert os.path.isfile(m.group(1)), m.group(1)  # openable from here
    text = open(m.group(1), encoding="utf-8").read().split("\n")[int(m.group(2)) - 1]
    assert text.rstrip() == m.group(3).rstrip(), (text, m.group(3))
PY
run "-l" 0 search -l -k 20 settings from a file &&
    python3 - "$out" <<'PY' || fail "-l lines: $out"
import os, sys
lines = sys.argv[1].splitlines()
assert lines and len(lines) == len(set(lines)), lines
assert all(os.path.isfile(l) for l in lines), lines
PY
run "--lang klingon" 1 search --lang klingon x &&
    contains "--lang klingon" "$err" "unknown language" && contains "lists languages" "$err" "python"
run "--lang Python" 0 search --json -k 20 --lang Python settings &&
    check "--lang is case-insensitive" "$py_helpers
assert res and {r['language'] for r in res} == {'python'}"
run "--lang py" 0 search --json -k 20 --lang py settings &&
    check "--lang alias" "$py_helpers
assert res and {r['language'] for r in res} == {'python'}"
stars=$(printf '*%.0s' $(seq 65))
run "--path with 65 stars" 1 search --path "$stars" x && contains "too long a glob" "$err" "too long a glob"
timeout 30 "$ctl" --no-autostart search --json -k 3 --path '*a*a*a*a*a*a*a*a*a*a*a*a*b' \
    "$(head -c 200 /dev/zero | tr '\0' a)" >/dev/null 2>&1 && echo "ok: a many-star glob answers quickly" ||
    fail "a many-star --path glob did not answer within 30 s"
long=$(head -c 5000 /dev/zero | tr '\0' 'q')
run "no results for a long query" 0 search --mode lexical "$long" &&
    [[ ${#err} -lt 200 ]] || fail "a long query is echoed whole: ${#err} bytes"
popd >/dev/null || exit 1

# ---- 9. a hit is its definition, once --------------------------------------------------------
section "9. hits are whole definitions"
hits=$tmp/hits
mkdir -p "$hits"
python3 - "$hits/ring.c" <<'PY'
import sys
out = ["#include <stddef.h>", ""]
# Tiny neighbours: one group of small functions in the chunker, but each its own hit.
for name, op in (("ring_first", "0"), ("ring_second", "1"), ("ring_third", "2")):
    out += [f"int {name}(const int *r) {{", f"    return r[{op}];", "}", ""]
# A leading comment long enough to be cut off the function as a chunk of its own.
out += ["/*"]
out += [f" * Okapi quartz lanterns {i}: the drained reservoir keeps its ledger of tides, and the"
        f" lighthouse keeper counts the herons twice before dawn." for i in range(12)]
out += [" */", "int ring_drain(int *r, size_t n)", "{", "    int sum = 0;", ""]
out += [f"    sum += r[{i}] * {i + 3}; /* step {i} */" for i in range(40)]
out += ["    return sum;", "}", ""]
# A definition longer than a hit may be: it reports the part that matched.
out += ["int ring_enormous(int *r)", "{", "    int acc = 0;"]
out += [f"    acc ^= r[{i}] << {i % 7}; /* mix {i} */" for i in range(150)]
out += ["    acc += 7; /* zanzibar marmalade platypus */", "    return acc;", "}"]
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
run "index the definitions repository" 0 index --wait --quiet "$hits"
run "a hit on a function's comment" 0 search --json -k 10 --repo "$hits" \
    okapi quartz lanterns drained reservoir ledger herons lighthouse &&
    check "covers the whole function, names it, once" "
res = d['results']
lines = open('$hits/ring.c').read().split('\n')
fn = lines.index('int ring_drain(int *r, size_t n)') + 1
close = fn + 1 + lines[fn:].index('}')
top = res[0]
assert top['symbol'] == 'ring_drain', top
assert top['start_line'] < fn and top['end_line'] == close, (top['start_line'], top['end_line'], fn, close)
assert (top['definition_start_line'], top['definition_end_line']) == (top['start_line'], top['end_line'])
assert top['snippet'].startswith('/*'), top['snippet'][:80]
defs = [(r['path'], r['definition_start_line'], r['definition_end_line']) for r in res]
assert len(defs) == len(set(defs)), defs"
run "a hit on a tiny neighbour" 0 search --json -k 10 --mode lexical --repo "$hits" ring_second &&
    check "reports that function alone" "
top = d['results'][0]
lines = open('$hits/ring.c').read().split('\n')
fn = lines.index('int ring_second(const int *r) {') + 1
assert top['symbol'] == 'ring_second', top
assert (top['start_line'], top['end_line']) == (fn, fn + 2), (top['start_line'], top['end_line'], fn)"
run "a hit deep in a long definition" 0 search --json -k 10 --mode lexical --repo "$hits" \
    zanzibar marmalade platypus &&
    check "reports the part that matched, says so" "
top = d['results'][0]
lines = open('$hits/ring.c').read().split('\n')
want = next(i for i, l in enumerate(lines, 1) if 'zanzibar' in l)
assert top['symbol'] == 'ring_enormous', top
assert top['end_line'] - top['start_line'] < 100, top
assert top['start_line'] <= want <= top['end_line'], (top['start_line'], top['end_line'], want)
assert top['definition_end_line'] - top['definition_start_line'] >= 150, top
assert top['start_line'] <= top['snippet_line'] <= want, top
assert sum(r['symbol'] == 'ring_enormous' for r in d['results']) == 1, d['results']"
run "people's form of a long definition" 0 search -k 1 --mode lexical --repo "$hits" zanzibar &&
    contains "says it is a part" "$out" "(part of "

section "done"
if [[ $failures -gt 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all index checks passed"
