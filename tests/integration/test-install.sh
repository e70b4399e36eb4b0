#!/usr/bin/env bash
# test-install.sh - `meson install` into a temporary DESTDIR: both programs, the systemd user
# units (ExecStart names the installed coarchd), the man pages, and the bash, zsh and fish
# completions, each of which must parse in its shell (bash -n, zsh -n, fish --no-execute; a
# missing shell is a skip here and a failure under CI, where scripts/setup installs them), and
# the units pass `systemd-analyze --user verify`.
#
# Env (set by meson): COARCH_TEST_BUILD_DIR.
set -u
build=${COARCH_TEST_BUILD_DIR:?COARCH_TEST_BUILD_DIR must name the build directory}
tmp=$(mktemp -d /tmp/coarch-test-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

if ! DESTDIR=$tmp meson install -C "$build" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    echo "FAIL: meson install"
    exit 1
fi
prefix=$(meson introspect "$build" --buildoptions |
    python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])')
root=$tmp$prefix
for f in bin/coarchctl bin/coarchd share/man/man1/coarchctl.1 share/man/man8/coarchd.8 \
    share/systemd/user/coarchd.service share/systemd/user/coarchd.socket \
    share/bash-completion/completions/coarchctl share/zsh/site-functions/_coarchctl \
    share/fish/vendor_completions.d/coarchctl.fish \
    share/nvim/site/pack/coarch/start/coarch.nvim/lua/coarch/init.lua \
    share/nvim/site/pack/coarch/start/coarch.nvim/plugin/coarch.lua; do
    [[ -e $root/$f ]] || fail "not installed: $prefix/$f"
done
[[ -x $root/bin/coarchctl && -x $root/bin/coarchd ]] || fail "the programs are not executable"
grep -qx "ExecStart=$prefix/bin/coarchd" "$root/share/systemd/user/coarchd.service" ||
    fail "ExecStart does not name $prefix/bin/coarchd: $(grep ExecStart= "$root/share/systemd/user/coarchd.service")"
"$root/bin/coarchctl" --version >/dev/null || fail "the installed coarchctl does not run"
"$root/bin/coarchd" --version >/dev/null || fail "the installed coarchd does not run"

# The units as systemd reads them: `systemd-analyze --user verify` (any complaint fails; it
# checks ExecStart's program, so the copies name the one installed under DESTDIR).
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$tmp/units" "$tmp/run" && chmod 700 "$tmp/run"
    cp "$root/share/systemd/user/coarchd.service" "$root/share/systemd/user/coarchd.socket" "$tmp/units/"
    sed -i "s|^ExecStart=|ExecStart=$tmp|" "$tmp/units/coarchd.service"
    if ! XDG_RUNTIME_DIR=$tmp/run systemd-analyze --user verify "$tmp/units/coarchd.service" \
        "$tmp/units/coarchd.socket" >"$tmp/verify.log" 2>&1 || [[ -s $tmp/verify.log ]]; then
        fail "systemd-analyze verify: $(cat "$tmp/verify.log")"
    else
        echo "ok: systemd-analyze --user verify coarchd.service coarchd.socket"
    fi
elif [[ -n ${CI:-} ]]; then
    fail "systemd-analyze is not installed and CI is set (scripts/setup installs systemd)"
else
    echo "skip: no systemd-analyze here"
fi

shell_check() { # shell_check SHELL ARGS... FILE
    local sh=$1
    shift
    if ! command -v "$sh" >/dev/null; then
        if [[ -n ${CI:-} ]]; then
            fail "$sh is not installed and CI is set (scripts/setup installs it)"
        else
            echo "skip: no $sh here"
        fi
        return
    fi
    "$sh" "$@" 2>"$tmp/sh.err" || fail "$sh $*: $(cat "$tmp/sh.err")"
    echo "ok: $sh $*"
}
shell_check bash -n "$root/share/bash-completion/completions/coarchctl"
shell_check zsh -n "$root/share/zsh/site-functions/_coarchctl"
shell_check fish --no-execute "$root/share/fish/vendor_completions.d/coarchctl.fish"
# bash: the file defines the function and registers it.
bash -c "source '$root/share/bash-completion/completions/coarchctl' && complete -p coarchctl" \
    >/dev/null 2>&1 || fail "the bash completion does not register for coarchctl"

if [[ $failures -gt 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all install checks passed"
