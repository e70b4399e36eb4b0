#!/usr/bin/env bash
# test-client.sh - coarchctl against the real coarchd: help and version without a daemon,
# exit codes, autostart (single daemon even when clients race), status --json, a search
# before anything is indexed, --socket pass-through, a daemon that fails to start, and
# shutdown.
#
# Env (set by meson): COARCHCTL, COARCHD.  Everything runs in a temporary directory with its
# own COARCH_SOCKET and COARCH_DATA_DIR; every daemon this test caused is killed on exit.
set -u

ctl=${COARCHCTL:?COARCHCTL must name the coarchctl binary}
daemon=${COARCHD:?COARCHD must name the coarchd binary}
if [[ ! -x $ctl ]]; then
    echo "FAIL: coarchctl not built at $ctl"
    exit 1
fi
if [[ ! -x $daemon ]]; then
    echo "SKIP: coarchd not built at $daemon"
    exit 77
fi

tmp=$(mktemp -d /tmp/coarch-test-client.XXXXXX)
export COARCH_SOCKET=$tmp/run/coarchd.sock
export COARCH_DATA_DIR=$tmp/data
export COARCHD=$daemon
unset COARCH_CONFIG
pids=()
failures=0

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# run NAME EXPECTED_RC ARGS...: runs coarchctl, keeps stdout/stderr in $out/$err, checks rc.
run() {
    local name=$1 want=$2
    shift 2
    "$ctl" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
    # Remember every daemon an autostart reported, so the trap can stop it.
    local p
    p=$(sed -n 's/.*started coarchd (pid \([0-9]*\)).*/\1/p' "$tmp/err")
    [[ -n $p ]] && pids+=("$p")
    if [[ $rc -ne $want ]]; then
        fail "$name: exit $rc, expected $want; stdout: $out; stderr: $err"
        return 1
    fi
    echo "ok: $name"
}

contains() { # contains NAME HAYSTACK NEEDLE
    [[ $2 == *"$3"* ]] || fail "$1: expected '$3' in: $2"
}

json_get() { # json_get KEY: prints the top-level KEY of the JSON in $out (fails on bad JSON)
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d[sys.argv[1]])' "$1" <<<"$out"
}

alive() { # alive PID: running, not a zombie (an exited daemon re-parented to a PID 1 that
    # does not reap stays a zombie, and kill -0 still reaches it)
    kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

wait_gone() { # wait_gone PID: up to 10 s for the process to exit
    for _ in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
    return 1
}

# ---- without a daemon ----
run "--help" 0 --help && for c in ping status shutdown version help; do
    contains "--help lists $c" "$out" "  $c "
done
contains "--help documents exit codes" "$out" "Exit status"
run "help status" 0 help status && contains "help status" "$out" "usage: coarchctl status"
run "status --help" 0 status --help && contains "status --help" "$out" "usage: coarchctl status"
run "help nosuch" 2 help nosuch
run "--version without daemon" 0 --version &&
    contains "--version" "$out" "coarchctl 0.1.0 (protocol 1)" &&
    contains "--version no daemon" "$out" "not running"
[[ -e $COARCH_SOCKET ]] && fail "--version must not start a daemon"
run "--no-autostart ping" 3 --no-autostart ping &&
    contains "--no-autostart names the socket" "$err" "$COARCH_SOCKET" &&
    contains "--no-autostart says what to do" "$err" "drop --no-autostart"
[[ -e $COARCH_SOCKET ]] && fail "--no-autostart started a daemon"
run "unknown command" 2 stauts && contains "unknown command" "$err" "is not a coarchctl command" &&
    contains "suggestion" "$err" "status"
run "unknown option" 2 status --bogus && contains "unknown option" "$err" "--bogus"
run "bad --timeout" 2 --timeout soon ping
run "shutdown without daemon" 3 shutdown

# ---- autostart ----
run "ping autostarts" 0 ping && contains "ping" "$out" "pong" &&
    contains "autostart announced" "$err" "started coarchd"
[[ -S $COARCH_SOCKET ]] || fail "no socket at $COARCH_SOCKET after autostart"
[[ -e $COARCH_DATA_DIR/coarchd.log ]] ||
    fail "no daemon log at $COARCH_DATA_DIR/coarchd.log"
run "ping again (no second start)" 0 ping && [[ $err == *"started coarchd"* ]] &&
    fail "second ping started another daemon"

run "status --json" 0 status --json
pid=$(json_get pid) || fail "status --json is not JSON with a pid: $out"
version=$(json_get version) || fail "status --json has no version: $out"
protocol=$(json_get protocol) || fail "status --json has no protocol: $out"
[[ $protocol == 1 ]] || fail "status --json protocol is '$protocol', expected 1"
[[ $version == 0.1.0 ]] || fail "status --json version is '$version', expected 0.1.0"
[[ -n ${pid:-} ]] && pids+=("$pid")
alive "${pid:-0}" || fail "status --json pid '${pid:-}' is not a live process"
run "global --json before the command" 0 --json status && json_get pid >/dev/null ||
    fail "--json status is not JSON: $out"
run "status (human)" 0 status && contains "status" "$out" "pid $pid"
run "version with daemon" 0 --json version
python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["daemon"]["protocol"] == 1' \
    <<<"$out" || fail "version --json has no daemon protocol: $out"
run "ping --json" 0 ping --json
python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["result"] == "pong"
assert d["rtt_ms"] >= 0' <<<"$out" || fail "ping --json: $out"

# ---- a search before anything is indexed says so and fails (lexical: no model needed) ----
run "search with nothing indexed" 1 search --mode lexical parse config &&
    contains "nothing indexed" "$err" "nothing is indexed yet" &&
    contains "how to index" "$err" "coarchctl index"
run "search --all with nothing indexed" 1 search --all --mode lexical parse config &&
    contains "nothing indexed (--all)" "$err" "nothing is indexed yet"

# ---- shutdown ----
run "shutdown" 0 shutdown && contains "shutdown" "$out" "stopped"
[[ -e $COARCH_SOCKET ]] && fail "socket $COARCH_SOCKET still there after shutdown"
wait_gone "$pid" || fail "coarchd $pid still running after shutdown"
run "ping after shutdown, --no-autostart" 3 --no-autostart ping

# ---- racing autostarts start one daemon ----
for i in 1 2 3 4; do
    "$ctl" ping >"$tmp/race$i.out" 2>"$tmp/race$i.err" &
done
wait
started=0
for i in 1 2 3 4; do
    grep -q pong "$tmp/race$i.out" || fail "racing ping $i: $(cat "$tmp/race$i.err")"
    p=$(sed -n 's/.*started coarchd (pid \([0-9]*\)).*/\1/p' "$tmp/race$i.err")
    [[ -n $p ]] && pids+=("$p") && started=$((started + 1))
done
[[ $started -eq 1 ]] || fail "4 racing clients started $started daemons, expected 1"
run "shutdown after race" 0 shutdown

# ---- --socket is passed on to an autostarted daemon ----
other=$tmp/other/explicit.sock
run "--socket autostart" 0 --socket "$other" status --json &&
    [[ $(json_get socket) == "$other" ]] || fail "daemon is not on --socket $other: $out"
[[ -S $other ]] || fail "no socket at $other"
run "--socket shutdown" 0 --socket "$other" shutdown

# ---- a daemon that cannot start is explained ----
bad=$tmp/bad-coarchd
printf '#!/bin/sh\necho "bad-coarchd: cannot open the store" >&2\nexit 1\n' >"$bad"
chmod +x "$bad"
COARCHD=$bad run "failing daemon" 3 --socket "$tmp/bad.sock" ping &&
    contains "failing daemon status" "$err" "exited with status 1" &&
    contains "failing daemon log" "$err" "cannot open the store"
COARCHD=$tmp/missing run "missing daemon binary" 3 --socket "$tmp/missing.sock" ping &&
    contains "missing daemon binary" "$err" "COARCHD"

# ---- a socket served by another user is refused before anything is sent ----
# (issue 16 A1: with no XDG_RUNTIME_DIR another user can create the fallback directory first.)
if [[ $(id -u) -eq 0 ]]; then
    squat=$tmp/squat
    mkdir -p "$squat" && chmod 777 "$squat" && chmod o+x "$tmp" # nobody must reach it
    python3 - "$squat/s.sock" "$squat/got" <<'PY' &
import os, socket, sys, time
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(4)
s.settimeout(20)
try:
    c, _ = s.accept()
    c.settimeout(2)
    data = c.recv(65536)
    open(sys.argv[2], "w").write(str(len(data)))
except OSError:
    pass
PY
    pids+=($!)
    for _ in $(seq 50); do [[ -S $squat/s.sock ]] && break; sleep 0.1; done
    run "another user's socket" 3 --no-autostart --socket "$squat/s.sock" ping &&
        contains "another user's socket" "$err" "runs as another user"
    sleep 0.5
    [[ ! -s $squat/got || $(cat "$squat/got") == 0 ]] ||
        fail "coarchctl sent $(cat "$squat/got") bytes to another user's socket"
else
    echo "skip: another user's socket (needs root to run a listener as another uid)"
fi

if [[ $failures -gt 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all client checks passed"
