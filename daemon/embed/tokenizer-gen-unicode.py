#!/usr/bin/env python3
"""Generate daemon/embed/tokenizer-unicode-data.h from the reference tokenizer itself.

The BERT tokenizer we must match (HuggingFace `tokenizers`, Rust) takes its Unicode data from
three places, each of a different Unicode version:

  * categories (Cc/Cf/Co for clean_text, Mn for strip_accents, P* for the pre-tokenizer) come
    from the `unicode_categories` 0.1.1 crate (2016, Unicode 9 era);
  * NFD comes from `unicode-normalization-alignments` 0.1.12 (Unicode 9.0.0);
  * whitespace and lowercase come from Rust's std (the Unicode version of the compiler that
    built the wheel, 15 or newer).

utf8proc 2.8 is Unicode 15.0, so using its categories directly would treat every Cf/Mn/P*
character added since 2016 differently from the reference.  Instead this script probes the
reference, one code point at a time, through the public Python API of `tokenizers`, and writes:

  * complete range tables for the category-derived sets (clean_text removal, whitespace,
    punctuation, Mn): small, and independent of the utf8proc version installed;
  * exception lists where utf8proc's canonical decomposition, canonical combining class or
    simple lowercase mapping disagrees with the reference (characters newer than Unicode 9,
    and Rust's multi-character lowercase mappings such as U+0130 -> "i\u0307").

The C side (tokenizer-unicode.c) uses utf8proc for decomposition, combining class and lowercase
and consults the exception lists first.  tests/unit/test-tokenizer.c re-checks every code point
against tests/data/tokenizer/unicode-ref.txt, so a different utf8proc build is caught.

Run in a venv with `tokenizers` installed (e.g. /work/venvs/tok):
    python3 daemon/embed/tokenizer-gen-unicode.py > daemon/embed/tokenizer-unicode-data.h
    clang-format -i daemon/embed/tokenizer-unicode-data.h

Then regenerate tests/data/tokenizer/ with tests/data/gen-tokenizer-fixture.py and run the
tokenizer test, which compares every code point.
"""
import ctypes
import ctypes.util
import sys

import tokenizers
from tokenizers import normalizers as N
from tokenizers import pre_tokenizers as P

MAX_CP = 0x110000


def is_surrogate(cp):
    return 0xD800 <= cp <= 0xDFFF


def chars():
    for cp in range(MAX_CP):
        if not is_surrogate(cp):
            yield cp, chr(cp)


def ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def load_utf8proc():
    lib = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so.2")
    lib.utf8proc_tolower.restype = ctypes.c_int32
    lib.utf8proc_tolower.argtypes = [ctypes.c_int32]
    lib.utf8proc_decompose_char.restype = ctypes.c_ssize_t
    lib.utf8proc_decompose_char.argtypes = [
        ctypes.c_int32, ctypes.POINTER(ctypes.c_int32), ctypes.c_ssize_t, ctypes.c_int,
        ctypes.POINTER(ctypes.c_int)]
    lib.utf8proc_version.restype = ctypes.c_char_p
    lib.utf8proc_unicode_version.restype = ctypes.c_char_p

    # utf8proc_get_property returns a pointer to a struct whose second field (after the
    # int16 category) is the int16 combining class.
    class Prop(ctypes.Structure):
        _fields_ = [("category", ctypes.c_int16), ("combining_class", ctypes.c_int16)]

    lib.utf8proc_get_property.restype = ctypes.POINTER(Prop)
    lib.utf8proc_get_property.argtypes = [ctypes.c_int32]
    return lib


UTF8PROC_DECOMPOSE = 1 << 4


def u8p_decompose(lib, cp):
    buf = (ctypes.c_int32 * 8)()
    last = ctypes.c_int(0)
    n = lib.utf8proc_decompose_char(cp, buf, 8, UTF8PROC_DECOMPOSE, ctypes.byref(last))
    assert 0 < n <= 8
    return [buf[i] for i in range(n)]


def main():
    lib = load_utf8proc()
    clean = N.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                             lowercase=False)
    strip = N.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True,
                             lowercase=False)
    nfd = N.NFD()
    lower = N.Lowercase()
    pretok = P.BertPreTokenizer()

    removed, space, punct, mn = set(), set(), set(), set()
    decomp_exc, ccc_zero, lower_exc = [], [], []
    for cp, c in chars():
        r = clean.normalize_str(c)
        if r == "":
            removed.add(cp)
        elif r == " ":
            pass
        else:
            assert r == c, hex(cp)
        pieces = pretok.pre_tokenize_str("a" + c + "a")
        if len(pieces) == 2:
            space.add(cp)
        elif len(pieces) == 3:
            punct.add(cp)
        else:
            assert len(pieces) == 1, hex(cp)

        d = nfd.normalize_str(c)
        if d == c and strip.normalize_str(c) == "":
            mn.add(cp)
        ud = u8p_decompose(lib, cp)
        if [ord(x) for x in d] != ud:
            decomp_exc.append((cp, [ord(x) for x in d]))

        # Combining class: probe the reference's canonical ordering for NFD-stable characters
        # that utf8proc gives a non-zero class.  U+0334 has class 1 and U+0301 class 230: a
        # character with class > 1 moves before a following U+0334, and one with class < 230
        # moves before a preceding U+0301.
        if d == c and lib.utf8proc_get_property(cp).contents.combining_class != 0:
            a = nfd.normalize_str(c + "\u0334") != c + "\u0334"
            b = nfd.normalize_str("\u0301" + c) != "\u0301" + c
            if not (a or b):
                ccc_zero.append(cp)

        lo = lower.normalize_str(c)
        if [ord(x) for x in lo] != [lib.utf8proc_tolower(cp)]:
            lower_exc.append((cp, [ord(x) for x in lo]))

    # Whitespace as the normalizer sees it must agree with the pre-tokenizer's notion (both are
    # Rust's char::is_whitespace), except that clean_text drops the Cc ones other than tab, LF
    # and CR (U+000B, U+000C, U+0085) before mapping whitespace to ' '.
    norm_space = {cp for cp, c in chars() if clean.normalize_str(c) == " "}
    assert norm_space == space - removed, "whitespace sets differ"

    o = sys.stdout
    o.write("/*\n * tokenizer-unicode-data.h - GENERATED by tokenizer-gen-unicode.py; do not edit.\n")
    o.write(" *\n * Probed from tokenizers %s against utf8proc %s (Unicode %s).\n" %
            (tokenizers.__version__, lib.utf8proc_version().decode(),
             lib.utf8proc_unicode_version().decode()))
    o.write(" * Included only by tokenizer-unicode.c.  Ranges are inclusive and sorted.\n */\n")

    def emit_ranges(name, cps, why):
        rs = ranges(cps)
        o.write("\n/* %s */\n" % why)
        o.write("static const uint32_t %s[][2] = {\n" % name)
        for a, b in rs:
            o.write("    {0x%04X, 0x%04X},\n" % (a, b))
        o.write("};\n")

    def emit_maps(name, items, width, why):
        o.write("\n/* %s */\n" % why)
        o.write("static const struct tok_cp_map %s[] = {\n" % name)
        for cp, seq in items:
            assert len(seq) <= width, (hex(cp), seq)
            o.write("    {0x%04X, %d, {%s}},\n" % (cp, len(seq), ", ".join("0x%04X" % x for x in seq)))
        o.write("};\n")

    emit_ranges("tok_removed_ranges", removed,
                "clean_text drops these: U+0000, U+FFFD and the reference's Cc/Cf/Co except "
                "tab, LF, CR.")
    emit_ranges("tok_space_ranges", space, "Rust char::is_whitespace (Unicode White_Space).")
    emit_ranges("tok_punct_ranges", punct,
                "BertPreTokenizer isolates these: ASCII punctuation or the reference's P*.")
    emit_ranges("tok_mn_ranges", mn,
                "strip_accents drops these (reference Mn), listed for NFD-stable characters.")
    emit_maps("tok_decomp_exceptions", decomp_exc, 4,
              "Where utf8proc's canonical decomposition differs from the reference's NFD.")
    emit_ranges("tok_ccc_zero_ranges", ccc_zero,
                "utf8proc gives a non-zero combining class, the reference (Unicode 9) zero.")
    emit_maps("tok_lower_exceptions", lower_exc, 3,
              "Where Rust's char::to_lowercase differs from utf8proc_tolower.")


if __name__ == "__main__":
    main()
