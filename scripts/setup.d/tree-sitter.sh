#!/usr/bin/env bash
# scripts/setup.d/tree-sitter.sh - fetch the tree-sitter runtime and grammar C sources for the
# chunker (daemon/index/chunk.c).  Run by scripts/setup; idempotent; prints nothing when done.
#
# The sources come from PyPI source distributions pinned by sha256 in scripts/tree-sitter.sha256
# (see the comments there for why these packages).  They are downloaded once with
# `pip download --no-deps --no-binary NAME` into a cache outside the work tree,
#   ${COARCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coarch}/sdist/,
# verified, and only the C sources are unpacked into third_party/tree-sitter/ (git-ignored):
#   runtime/include/tree_sitter/api.h   runtime/src/lib.c (+ what it includes)
#   grammars/LANG/src/parser.c [scanner.c] tree_sitter/*.h   grammars/LANG/common/*.h
#   VERSIONS, LICENSE.*, .stamp
# daemon/index/meson.build builds them from there as a static library.  The stamp holds the pins
# the tree was unpacked from, so a changed pin re-unpacks, and a fresh clone on a machine that
# fetched once before sets up offline from the cache.  After the tree appears or changes, an
# existing build directory needs `meson setup --reconfigure DIR`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
prog=setup.d/tree-sitter
pins="$top/scripts/tree-sitter.sha256"
dest="$top/third_party/tree-sitter"
cache="${COARCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coarch}/sdist"
langs=(c cpp python go rust java javascript typescript tsx)
# Bump when the unpacked layout changes, so old trees are replaced.
layout=1

die() {
    echo "$prog: $*" >&2
    exit 1
}

[ -r "$pins" ] || die "missing $pins"
want="$(grep -v '^#' "$pins" | grep -v '^[[:space:]]*$'; echo "layout $layout")"
if [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$want" ]; then
    exit 0
fi

# FILE -> "name version" for a PyPI sdist file name (name_with_underscores-VERSION.tar.gz).
sdist_req() {
    local base=${1%.tar.gz}
    echo "${base%-*} ${base##*-}"
}

sha_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# Make sure every pinned sdist is in the cache with the pinned hash; download what is not.
mkdir -p "$cache"
while read -r sum file; do
    case "$sum" in '' | '#'*) continue ;; esac
    [ -n "$file" ] || die "bad line in $pins: '$sum'"
    if [ -f "$cache/$file" ] && [ "$(sha_of "$cache/$file")" = "$sum" ]; then
        continue
    fi
    read -r name ver < <(sdist_req "$file")
    echo "$prog: downloading $name $ver" >&2
    tmp=$(mktemp -d "$cache/.dl.XXXXXX")
    # --no-binary NAME (not :all:): only the package itself must be an sdist; its build
    # dependencies, which pip installs to read the metadata, may come as wheels.
    if ! python3 -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
        --no-binary "$name" -d "$tmp" "$name==$ver" >"$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        rm -rf "$tmp"
        die "pip download $name==$ver failed"
    fi
    [ -f "$tmp/$file" ] || {
        ls "$tmp" >&2
        rm -rf "$tmp"
        die "pip download $name==$ver did not produce $file"
    }
    got=$(sha_of "$tmp/$file")
    if [ "$got" != "$sum" ]; then
        rm -rf "$tmp"
        die "$file: sha256 $got does not match the pin $sum"
    fi
    mv -f "$tmp/$file" "$cache/$file"
    rm -rf "$tmp"
done <"$pins"

runtime=$(awk '$2 ~ /^tree_sitter-[0-9]/ {print $2}' "$pins")
pack=$(awk '$2 ~ /^tree_sitter_language_pack-/ {print $2}' "$pins")
[ -n "$runtime" ] && [ -n "$pack" ] || die "$pins must pin tree_sitter and tree_sitter_language_pack"

# Unpack into a staging directory beside the destination, then swap it in, so an interrupted
# run never leaves a half-written tree that meson would pick up.
mkdir -p "$(dirname "$dest")"
stage=$(mktemp -d "$dest.new.XXXXXX")
trap 'rm -rf "$stage"' EXIT
work="$stage/.unpack"
mkdir -p "$work"

rt=${runtime%.tar.gz}
tar -xzf "$cache/$runtime" -C "$work" "$rt/LICENSE" "$rt/tree_sitter/core/lib/include" \
    "$rt/tree_sitter/core/lib/src"
mkdir -p "$stage/runtime"
mv "$work/$rt/tree_sitter/core/lib/include" "$stage/runtime/include"
mv "$work/$rt/tree_sitter/core/lib/src" "$stage/runtime/src"
mv "$work/$rt/LICENSE" "$stage/LICENSE.tree-sitter"
[ -f "$stage/runtime/src/lib.c" ] && [ -f "$stage/runtime/include/tree_sitter/api.h" ] ||
    die "$runtime has no lib/src/lib.c or lib/include/tree_sitter/api.h"

pk=${pack%.tar.gz}
members=("$pk/LICENSE" "$pk/sources/language_definitions.json")
for l in "${langs[@]}"; do
    members+=("$pk/parsers/$l")
done
tar -xzf "$cache/$pack" -C "$work" "${members[@]}"
# Keep only the C sources and headers (grammar.json, node-types.json, *.js are not built).
find "$work/$pk/parsers" -type f ! -name '*.c' ! -name '*.h' -delete
mkdir -p "$stage/grammars"
for l in "${langs[@]}"; do
    [ -f "$work/$pk/parsers/$l/src/parser.c" ] || die "$pack has no parsers/$l/src/parser.c"
    mv "$work/$pk/parsers/$l" "$stage/grammars/$l"
done
mv "$work/$pk/LICENSE" "$stage/LICENSE.tree-sitter-language-pack"

# VERSIONS: what each piece is, for humans and for the chunker's --version output.
{
    echo "runtime ${rt#tree_sitter-} (PyPI tree-sitter sdist)"
    for l in "${langs[@]}"; do
        abi=$(sed -n 's/^#define LANGUAGE_VERSION \([0-9]*\).*/\1/p' "$stage/grammars/$l/src/parser.c")
        rev=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]]["repo"].rsplit("/",1)[-1] + "@" + d[sys.argv[2]]["rev"][:12])' \
            "$work/$pk/sources/language_definitions.json" "$l")
        echo "grammar $l abi $abi $rev (PyPI tree-sitter-language-pack ${pk##*-})"
    done
} >"$stage/VERSIONS"
rm -rf "$work"
echo "$want" >"$stage/.stamp"

rm -rf "$dest.old"
[ ! -e "$dest" ] || mv "$dest" "$dest.old"
mv "$stage" "$dest"
trap - EXIT
rm -rf "$dest.old"
echo "$prog: tree-sitter sources ready in ${dest#"$top"/} (reconfigure existing build dirs)" >&2
