#!/usr/bin/env bash
# test-watch.sh - the live index against a real coarchd with the real model: `coarchctl watch`
# and `index --watch`; an edit, a new file, a new directory, a delete and a rename reach search
# by themselves; an edit re-embeds only the chunks whose text changed; .gitignore changes are
# applied both ways; the watch survives a restart and catches up with what changed while the
# daemon was down; directories past COARCH_WATCH_MAX_DIRS are rescanned instead (and say so in
# the log); `watch --stop` and `remove` end it; a bad COARCH_WATCH_* value stops coarchd
# with exit 2.
#
# Needs the model: without it the test skips (77), or fails when CI is set.  Env (set by meson):
# COARCHCTL, COARCHD.
set -u
ctl=${COARCHCTL:?} daemon=${COARCHD:?}
model_dir=${COARCH_TEST_MODEL_DIR:-$HOME/.local/share/coarch/models/all-MiniLM-L6-v2}
if [[ ! -f $model_dir/config.json ]]; then
    [[ -n ${CI:-} ]] && { echo "FAIL: no embedding model at $model_dir; CI needs it"; exit 1; }
    echo "SKIP: no embedding model at $model_dir (run scripts/fetch-model)"
    exit 77
fi
tmp=$(mktemp -d /tmp/coarch-test-watch.XXXXXX)
export COARCH_SOCKET=$tmp/run/coarchd.sock COARCH_DATA_DIR=$tmp/data COARCH_MODEL=$model_dir
export COARCH_WATCH_DEBOUNCE_MS=100 COARCH_WATCH_RESCAN_S=1 NO_COLOR=1
unset COARCH_CONFIG COARCH_MEMORY_LIMIT_MB COARCH_WATCH_MAX_DIRS
mkdir -p "$tmp/run"
failures=0
dpid=
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
ok() { echo "ok: $*"; }
start_daemon() {
    "$daemon" >>"$tmp/daemon.log" 2>&1 &
    dpid=$!
    for _ in $(seq 100); do "$ctl" --no-autostart ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "FAIL: coarchd did not start"
    tail -n 20 "$tmp/daemon.log"
    exit 1
}
stop_daemon() {
    [[ -n $dpid ]] || return 0
    kill -TERM "$dpid" 2>/dev/null
    wait "$dpid"
    local rc=$?
    dpid=
    [[ $rc -eq 0 ]] || fail "coarchd exited $rc: $(tail -n 5 "$tmp/daemon.log")"
}
cleanup() {
    stop_daemon
    rm -rf "$tmp"
}
trap cleanup EXIT

# hits QUERY: the repo-relative paths of lexical hits, one per line
hits() { "$ctl" --no-autostart search --json -k 20 --mode lexical --repo "$repo" "$1" |
    python3 -c 'import json,sys; [print(r["path"]) for r in json.load(sys.stdin)["results"]]'; }
# eventually NAME QUERY PATH [absent]: within 10 s PATH is (or, with absent, is not) a hit
eventually() {
    local name=$1 q=$2 path=$3 absent=${4:-} t0=$SECONDS
    while ((SECONDS - t0 < 10)); do
        if hits "$q" | grep -qx "$path"; then
            [[ -z $absent ]] && { ok "$name ($((SECONDS - t0)) s)"; return 0; }
        else
            [[ -n $absent ]] && { ok "$name ($((SECONDS - t0)) s)"; return 0; }
        fi
        sleep 0.2
    done
    fail "$name: after 10 s, '$q' gives: $(hits "$q" | tr '\n' ' ')"
    return 1
}
# never NAME QUERY PATH: PATH is still not a hit after 2 s
never() {
    sleep 2
    if hits "$2" | grep -qx "$3"; then fail "$1: '$2' found $3"; else ok "$1"; fi
}

repo=$tmp/repo
mkdir -p "$repo/src"
cat >"$repo/src/shapes.py" <<'EOF'
def polygon_area(points):
    area = 0.0
    for i, p in enumerate(points):
        q = points[(i + 1) % len(points)]
        area += p[0] * q[1] - q[0] * p[1]
    return abs(area) / 2.0


def circle_area(radius):
    return 3.14159 * radius * radius
EOF
git -C "$repo" init -q

# A bad setting is refused at start.
COARCH_WATCH_DEBOUNCE_MS=0 "$daemon" >"$tmp/bad.log" 2>&1
rc=$?
[[ $rc -eq 2 ]] && grep -q COARCH_WATCH_DEBOUNCE_MS "$tmp/bad.log" && ok "bad COARCH_WATCH_DEBOUNCE_MS: exit 2, named" ||
    fail "bad COARCH_WATCH_DEBOUNCE_MS: exit $rc: $(cat "$tmp/bad.log")"

start_daemon
out=$(cd "$repo/src" && "$ctl" --no-autostart watch 2>&1) && [[ $out == *"watching $repo"* ]] &&
    ok "watch with no path watches the work tree" || fail "watch: $out"
"$ctl" --no-autostart repos --json | python3 -c "
import json, sys
r = json.load(sys.stdin)['repos'][0]
assert r['watching'] and r['watched_dirs'] == 2 and r['unwatched_dirs'] == 0, r" &&
    ok "repos says watching, 2 directories" || fail "repos --json does not show the watch"
eventually "the first job indexes it" polygon_area src/shapes.py

# Edits, new files and directories, deletes and renames arrive by themselves.
sed -i 's/return 3.14159 \* radius \* radius/return 3.14159 * radius ** 2  # quokkaedit/' "$repo/src/shapes.py"
eventually "an edit" quokkaedit src/shapes.py
python3 - "$tmp/data" <<'PY' || fail "the edit re-embedded more than the edited function"
import json, subprocess, sys, os
jobs = json.loads(subprocess.run([os.environ["COARCHCTL"], "--no-autostart", "jobs", "--json"],
                                 capture_output=True, text=True).stdout)["jobs"]
last = [j for j in jobs if j["files_done"] == 1][-1]
assert last["chunks_reused"] >= 2 and last["chunks_reused"] < last["chunks_done"], last
PY
[[ $failures -eq 0 ]] && ok "the edit kept the other chunks' vectors"
printf 'def zebra_new_file():\n    return 1\n' >"$repo/src/fresh.py"
eventually "a new file" zebra_new_file src/fresh.py
mkdir -p "$repo/src/deep/er"
printf 'def narwhal_in_new_dir():\n    return 2\n' >"$repo/src/deep/er/n.py"
eventually "a new directory's file" narwhal_in_new_dir src/deep/er/n.py
sleep 0.5 # the new directories get their watches
printf 'def second_in_new_dir():\n    return 3\n' >"$repo/src/deep/er/m.py"
eventually "a later file in the new directory" second_in_new_dir src/deep/er/m.py
rm "$repo/src/fresh.py"
eventually "a delete" zebra_new_file src/fresh.py absent
mv "$repo/src/deep/er/n.py" "$repo/src/deep/moved.py"
eventually "a rename: the new path" narwhal_in_new_dir src/deep/moved.py
eventually "a rename: not the old one" narwhal_in_new_dir src/deep/er/n.py absent

# .gitignore is applied as it changes, both ways.
printf 'deep/\n' >"$repo/src/.gitignore"
eventually "a newly ignored directory leaves" second_in_new_dir src/deep/er/m.py absent
printf 'def ignored_then_back():\n    return 4\n' >"$repo/src/deep/back.py"
never "a file in an ignored directory stays out" ignored_then_back src/deep/back.py
rm "$repo/src/.gitignore"
eventually "un-ignored files come back" ignored_then_back src/deep/back.py

# The watch survives a restart, and the start catches up with what changed meanwhile.
stop_daemon
printf 'def written_while_down():\n    return 5\n' >"$repo/src/down.py"
start_daemon
eventually "a file written while coarchd was down" written_while_down src/down.py
printf 'def after_restart_yak():\n    return 6\n' >"$repo/src/yak.py"
eventually "an edit after the restart" after_restart_yak src/yak.py

# Past COARCH_WATCH_MAX_DIRS: rescanned, and the log says so.
stop_daemon
COARCH_WATCH_MAX_DIRS=1 start_daemon
printf 'def capped_dir_file():\n    return 7\n' >"$repo/src/deep/er/capped.py"
eventually "a directory past the cap is rescanned" capped_dir_file src/deep/er/capped.py
grep -q "COARCH_WATCH_MAX_DIRS=1 reached" "$tmp/daemon.log" && ok "the log names the cap" ||
    fail "no warning about the cap: $(grep watch "$tmp/daemon.log" | tail -n 3)"
"$ctl" --no-autostart repos --json | python3 -c "
import json, sys
r = json.load(sys.stdin)['repos'][0]
assert r['watched_dirs'] == 1 and r['unwatched_dirs'] >= 3, r" &&
    ok "repos counts the unwatched directories" || fail "repos does not count unwatched directories"
stop_daemon
start_daemon

# watch --stop ends it; index --watch starts it again; remove ends it for good.  (First the
# restart's catch-up job ends: a job that runs after the stop indexes what it finds.)
for _ in $(seq 100); do
    "$ctl" --no-autostart jobs --json | python3 -c "
import json, sys; sys.exit(any(j['state'] in ('queued', 'running') for j in json.load(sys.stdin)['jobs']))" && break
    sleep 0.1
done
sleep 0.5
out=$("$ctl" --no-autostart watch --stop "$repo" 2>&1) && ok "watch --stop" || fail "watch --stop: $out"
printf 'def after_unwatch_emu():\n    return 8\n' >"$repo/src/emu.py"
never "no indexing after watch --stop" after_unwatch_emu src/emu.py
"$ctl" --no-autostart index --watch --wait --quiet "$repo" >/dev/null 2>&1 || fail "index --watch"
eventually "index --watch indexes and watches" after_unwatch_emu src/emu.py
printf 'def watched_again_ibis():\n    return 9\n' >"$repo/src/ibis.py"
eventually "watched again" watched_again_ibis src/ibis.py
out=$("$ctl" --no-autostart watch --stop "$tmp/nowhere" 2>&1)
[[ $? -eq 1 && $out == *"not indexed"* ]] && ok "watch --stop of an unknown directory" ||
    fail "watch --stop of an unknown directory: $out"
"$ctl" --no-autostart remove "$repo" >/dev/null 2>&1 || fail "remove"
"$ctl" --no-autostart repos --json | python3 -c "
import json, sys; assert json.load(sys.stdin)['repos'] == []" || fail "remove left the repository"
stop_daemon
start_daemon
since_start=$(awk '/coarchd 0\.[0-9.]* starting/ { n = 0 } /watching .* for changes/ { n++ } END { print n }' \
    "$tmp/daemon.log")
[[ $since_start -eq 0 ]] && ok "a removed repository is not watched after a restart" ||
    fail "$since_start watch(es) started after the restart"
grep -q "watching $repo for changes" "$tmp/daemon.log" || fail "the log never said it watched"


if [[ $failures -gt 0 ]]; then
    echo "$failures check(s) failed"
    tail -n 30 "$tmp/daemon.log"
    exit 1
fi
echo "all watch checks passed"
