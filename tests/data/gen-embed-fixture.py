#!/usr/bin/env python3
"""Generate the embedding parity fixtures used by tests/unit/test-model.c.

The reference is sentence-transformers itself (torch, CPU, fp32).  Run once, in a venv with
`pip install torch sentence-transformers`, e.g.

    /work/venvs/st/bin/python tests/data/gen-embed-fixture.py \
        --model ~/.local/share/coarch/models/all-MiniLM-L6-v2 --out tests/data/embed/minilm

It selects real code chunks from this machine (functions and classes from the Python standard
library, declaration blocks from C headers), stratified by token length so that short, medium,
long and truncated (> max_seq_length) inputs are all present, plus a few edge cases.  Output,
for a prefix P:

    P.jsonl   one JSON object per line: {"text": str, "ids": [int, ...]}; ids are what the
              model's own (HF fast) tokenizer produced, [CLS]/[SEP] included, truncated to
              max_seq_length, so the C test can check the engine without our tokenizer.
    P.f32     the sentence-transformers embeddings, n x dim little-endian float32, row i
              belonging to line i of P.jsonl.
    P.json    metadata: model, n, dim, max_seq_length, pooling, normalize, library versions.

--tiny DIR additionally writes a tiny random BERT (CLS pooling, Normalize, small vocab) as a
complete sentence-transformers model directory into DIR and uses it as the model: that
exercises the CLS/normalize/config paths with a committed model when no second real model can
be fetched (see scripts/fetch-model on bge-small-en-v1.5).
"""

import argparse
import ast
import json
import os
import random
import struct
import sys
from pathlib import Path


def python_chunks(root):
    out = []
    for path in sorted(Path(root).glob("*.py")):
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = src.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = node.lineno - 1
                if getattr(node, "decorator_list", None):
                    start = min(d.lineno for d in node.decorator_list) - 1
                text = "\n".join(lines[start : node.end_lineno])
                if 0 < len(text) <= 6000:
                    out.append(text)
    return out


def c_chunks(roots):
    out = []
    for root in roots:
        for path in sorted(Path(root).glob("*.h")):
            try:
                src = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            block = []
            for line in src.splitlines() + [""]:
                if line.strip():
                    block.append(line)
                    continue
                if block:
                    text = "\n".join(block)
                    if 20 <= len(text) <= 6000:
                        out.append(text)
                    block = []
    return out


# Token-length strata (with [CLS]/[SEP]): (lo, hi, how many).  hi=None means "longer than
# max_seq_length", i.e. truncated by the model.
def strata(max_len, total):
    q, h = max_len // 4, max_len // 2
    parts = [(3, 16, 0.10), (17, q, 0.22), (q + 1, h, 0.22), (h + 1, max_len, 0.26), (max_len + 1, None, 0.20)]
    return [(lo, hi, max(1, round(total * f))) for lo, hi, f in parts]


EDGE_TEXTS = [
    "",
    " ",
    "x",
    "\n\n\t",
    "def f():\n    return 0",
    "#include <stdio.h>",
    "int main(void) { return 0; }",
    "Ångström naïve café Hokkaidō 東京都 — “quotes” ½ ∑",
]


def make_tiny_model(dst, vocab_src, seed):
    """A 2-layer, 64-wide random BERT saved as a sentence-transformers model (CLS pooling)."""
    import shutil
    import torch
    from transformers import BertConfig, BertModel
    from sentence_transformers import SentenceTransformer, models

    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    # A small vocabulary in the real one's order: the specials, then ids 999..3499 of the real
    # vocab (single characters of many scripts, their ## forms, then the most frequent words).
    words = [w.rstrip("\n") for w in open(vocab_src, encoding="utf-8")]
    keep = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    keep += [w for w in words[999:3500] if w not in keep and not w.startswith("[unused")]
    # The real model's tokenizer.json with the vocabulary swapped (and every id that names a
    # vocabulary entry renumbered), so normalizer, pre-tokenizer and post-processor are the
    # real ones.
    vocab = {w: i for i, w in enumerate(keep)}
    tj = json.load(open(Path(vocab_src).parent / "tokenizer.json", encoding="utf-8"))
    tj["model"]["vocab"] = vocab
    for a in tj["added_tokens"]:
        a["id"] = vocab[a["content"]]
    for v in tj["post_processor"]["special_tokens"].values():
        v["ids"] = [vocab[t] for t in v["tokens"]]
    tdir = dst / "_hf"
    tdir.mkdir()
    (tdir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    (tdir / "vocab.txt").write_text("\n".join(keep) + "\n", encoding="utf-8")
    shutil.copy(Path(vocab_src).parent / "tokenizer_config.json", tdir / "tokenizer_config.json")
    shutil.copy(Path(vocab_src).parent / "special_tokens_map.json", tdir / "special_tokens_map.json")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(keep), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=128, hidden_act="gelu",
                     layer_norm_eps=1e-12, pad_token_id=0)
    bert = BertModel(cfg, add_pooling_layer=False)
    with torch.no_grad():
        for name, p in bert.named_parameters():
            # Larger than the init default so every layer visibly matters numerically.
            p.normal_(0.0, 0.2)
            if "LayerNorm.weight" in name:
                p.add_(1.0)
    bert.eval()
    bert.save_pretrained(tdir, safe_serialization=True)
    word = models.Transformer(str(tdir), max_seq_length=96)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="cls")
    st = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    st.save(str(dst))
    shutil.rmtree(tdir)
    for junk in ("README.md",):
        if (dst / junk).exists():
            (dst / junk).unlink()
    return st


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="sentence-transformers model directory")
    ap.add_argument("--tiny", help="write a tiny random model here and use it")
    ap.add_argument("--out", required=True, help="output prefix, e.g. tests/data/embed/minilm")
    ap.add_argument("--count", type=int, default=512, help="number of code chunks (plus edge cases)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--pyroot", default="/usr/lib/python3.11")
    ap.add_argument("--croots", default="/usr/include,/usr/include/linux")
    args = ap.parse_args()

    import numpy as np
    import torch
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    if args.tiny:
        if not args.model:
            sys.exit("--tiny needs --model (its vocab.txt seeds the tiny vocabulary)")
        model = make_tiny_model(args.tiny, Path(args.model) / "vocab.txt", args.seed)
        model = SentenceTransformer(args.tiny, device="cpu")
        model_name = "tiny-random-bert-cls"
    elif args.model:
        model = SentenceTransformer(args.model, device="cpu")
        model_name = Path(args.model).name
    else:
        sys.exit("need --model or --tiny")
    max_len = model.max_seq_length
    tok = model.tokenizer

    rng = random.Random(args.seed)
    pool = python_chunks(args.pyroot)
    cpool = c_chunks(args.croots.split(","))
    rng.shuffle(pool)
    rng.shuffle(cpool)
    # Interleave ~70% Python, ~30% C so both kinds land in every stratum.
    cands = []
    ci = 0
    for i, t in enumerate(pool):
        cands.append(t)
        if i % 7 in (0, 3, 5) and ci < len(cpool):
            cands.append(cpool[ci])
            ci += 1
    cands = [t for t in dict.fromkeys(cands) if "\x00" not in t]

    chosen = []
    wanted = strata(max_len, args.count)
    filled = [0] * len(wanted)
    for t in cands:
        n = len(tok(t, add_special_tokens=True, truncation=False)["input_ids"])
        for k, (lo, hi, want) in enumerate(wanted):
            if filled[k] < want and n >= lo and (hi is None or n <= hi):
                chosen.append(t)
                filled[k] += 1
                break
        if all(f >= w for f, (_, _, w) in zip(filled, wanted)):
            break
    if sum(filled) < sum(w for _, _, w in wanted):
        sys.exit(f"not enough candidate chunks: strata filled {filled} of {wanted}")
    rng.shuffle(chosen)
    texts = EDGE_TEXTS + chosen

    enc = model.tokenize(texts)
    ids = [
        [int(x) for x, m in zip(row, mask) if m]
        for row, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())
    ]
    with torch.no_grad():
        vecs = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    vecs = np.asarray(vecs, dtype="<f4")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(str(out) + ".jsonl", "w", encoding="utf-8") as f:
        for t, i in zip(texts, ids):
            f.write(json.dumps({"text": t, "ids": i}, ensure_ascii=False, separators=(",", ":")))
            f.write("\n")
    with open(str(out) + ".f32", "wb") as f:
        f.write(vecs.tobytes())
    pooling = [m for m in model if type(m).__name__ == "Pooling"][0]
    meta = {
        "model": model_name,
        "n": len(texts),
        "dim": int(vecs.shape[1]),
        "max_seq_length": max_len,
        "pooling": pooling.get_config_dict().get("pooling_mode", "?"),
        "normalize": any(type(m).__name__ == "Normalize" for m in model),
        "tokens": sum(len(i) for i in ids),
        "truncated": sum(1 for i in ids if len(i) == max_len),
        "generator": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seed": args.seed,
        },
    }
    with open(str(out) + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
