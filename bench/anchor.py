#!/usr/bin/env python3
"""bench/anchor.py - the plain retrieval pipeline coarch has to beat (issue 15).

What a weekend project would build: every file cut into 40-line windows with a stride of 20,
all-MiniLM-L6-v2 through sentence-transformers over the windows in a FAISS flat inner-product
index (normalised vectors: exact cosine), BM25 (rank_bm25's Okapi, k1 1.5, b 0.75) over the same
windows with identifiers split at camelCase and snake_case, and the two fused by reciprocal rank
fusion with k = 60 over each list's top 100.  A hit counts as run_eval.py counts it: the gold
file, overlapping the gold definition, at most 100 lines.

    anchor.py CORPUS QUERIES.jsonl --model DIR [--out RANKS.jsonl] [-k 10]

Prints one line per mode (semantic, lexical, rrf) with MRR@k, R@1, R@k; --out writes, per
query, the rank (0 = not in the top k) in each mode, for paired comparisons.  Needs a venv
with sentence-transformers, faiss-cpu and rank-bm25 (bench/eval --anchor makes one).
"""
import argparse
import json
import os
import re
import sys
import time

import faiss
import numpy as np
from rank_bm25 import BM25Okapi
from sentence_transformers import SentenceTransformer

WINDOW, STRIDE, RRF_K, DEPTH = 40, 20, 60, 100


def tokens(s):
    out = []
    for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", s):
        parts = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", w) or [w]
        out += [p.lower() for p in parts]
    return out


def windows(corpus):
    out = []
    for dp, dn, fn in os.walk(corpus):
        dn.sort()
        if ".git" in dp.split(os.sep):
            continue
        for f in sorted(fn):
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, corpus)
            try:
                lines = open(p, encoding="utf-8").read().split("\n")
            except (UnicodeDecodeError, OSError):
                continue
            i = 0
            while True:
                text = "\n".join(lines[i:i + WINDOW])
                if text.strip():
                    out.append((rel, i + 1, min(i + WINDOW, len(lines)), text))
                if i + WINDOW >= len(lines):
                    break
                i += STRIDE
    return out


def rank_of(ids, wins, q, k):
    for r, j in enumerate(ids[:k], 1):
        rel, a, e, _ = wins[j]
        if rel == q["file"] and a <= q["end"] and e >= q["start"] and e - a + 1 <= 100:
            return r
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("queries")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out")
    ap.add_argument("-k", type=int, default=10)
    a = ap.parse_args()

    t0 = time.time()
    wins = windows(a.corpus)
    model = SentenceTransformer(a.model, device="cpu")
    vecs = model.encode([w[3] for w in wins], batch_size=64, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    bm25 = BM25Okapi([tokens(w[3]) for w in wins])
    print(f"anchor: {len(wins)} windows indexed in {time.time() - t0:.1f} s", file=sys.stderr)

    qs = [json.loads(line) for line in open(a.queries)]
    qv = model.encode([q["query"] for q in qs], normalize_embeddings=True,
                      convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    _, sem_ids = index.search(qv, DEPTH)
    ranks = []
    for qi, q in enumerate(qs):
        sem = [int(j) for j in sem_ids[qi] if j >= 0]
        scores = bm25.get_scores(tokens(q["query"]))
        lex = [int(j) for j in np.argsort(-scores)[:DEPTH] if scores[j] > 0]
        fused = {}
        for lst in (sem, lex):
            for r, j in enumerate(lst, 1):
                fused[j] = fused.get(j, 0.0) + 1.0 / (RRF_K + r)
        rrf = sorted(fused, key=lambda j: -fused[j])
        ranks.append({"query": q["query"], "semantic": rank_of(sem, wins, q, a.k),
                      "lexical": rank_of(lex, wins, q, a.k), "rrf": rank_of(rrf, wins, q, a.k)})
    if a.out:
        with open(a.out, "w") as f:
            for r in ranks:
                f.write(json.dumps(r) + "\n")
    n = len(qs)
    for mode in ("semantic", "lexical", "rrf"):
        rr = [1.0 / r[mode] if r[mode] else 0.0 for r in ranks]
        print(f"anchor-{mode}: queries={n} MRR@{a.k}={sum(rr) / n:.3f} "
              f"R@1={sum(r[mode] == 1 for r in ranks) / n:.3f} "
              f"R@{a.k}={sum(r[mode] > 0 for r in ranks) / n:.3f}")


if __name__ == "__main__":
    main()
