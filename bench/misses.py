#!/usr/bin/env python3
"""bench/misses.py - where hybrid search loses the gold answer, per query (issue 15).

    misses.py CORPUS QUERIES.jsonl --coarchctl PATH [-k 10] [--depth 100] [--json]

The corpus must already be indexed by the coarchd that coarchctl reaches.  For each query,
asks hybrid (k), semantic and lexical (depth) searches and puts the query in one bucket:

  hit          hybrid ranks the gold in the top k
  not_found    neither list has the gold in its top `depth`: the embedding and BM25 both miss
  fused_out    a list has it (best rank shown) but fusion puts it below k
  bad_range    a hybrid hit is in the gold file and overlaps the gold lines but spans > 100 lines
  duplicate    the gold is below k while a definition above it appears twice

Prints the counts per bucket, and per query with --json.
"""
import argparse
import json
import subprocess
import sys


def search(ctl, corpus, query, mode, k):
    p = subprocess.run([ctl, "--no-autostart", "search", "--json", "-k", str(k), "--repo", corpus,
                        "--mode", mode, "--", query], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"search failed: {p.stderr.strip()}")
    return json.loads(p.stdout)["results"]


def gold_rank(res, q, span=100):
    for i, r in enumerate(res, 1):
        if (r["path"] == q["file"] and r["start_line"] <= q["end"] and r["end_line"] >= q["start"]
                and r["end_line"] - r["start_line"] + 1 <= span):
            return i
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("queries")
    ap.add_argument("--coarchctl", required=True)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    buckets = {b: 0 for b in ("hit", "not_found", "fused_out", "bad_range", "duplicate")}
    rows = []
    for line in open(a.queries):
        q = json.loads(line)
        hy = search(a.coarchctl, a.corpus, q["query"], "hybrid", a.k)
        sem = search(a.coarchctl, a.corpus, q["query"], "semantic", a.depth)
        lex = search(a.coarchctl, a.corpus, q["query"], "lexical", a.depth)
        rh, rs, rl = gold_rank(hy, q), gold_rank(sem, q), gold_rank(lex, q)
        defs = [(r["path"], r.get("definition_start_line", r["start_line"])) for r in hy]
        if rh:
            b = "hit"
        elif gold_rank(hy, q, span=10**9):
            b = "bad_range"
        elif len(set(defs)) < len(defs):
            b = "duplicate"
        elif rs or rl:
            b = "fused_out"
        else:
            b = "not_found"
        buckets[b] += 1
        rows.append({"query": q["query"], "name": q.get("name"), "bucket": b, "hybrid": rh,
                     "semantic": rs, "lexical": rl,
                     "gold_lines": q["end"] - q["start"] + 1})
    n = len(rows)
    if a.json:
        print(json.dumps({"buckets": buckets, "queries": rows}))
    else:
        print(" ".join(f"{b}={c} ({c / n:.0%})" for b, c in buckets.items()))
        out = [r for r in rows if r["bucket"] == "fused_out"]
        if out:
            print("fused_out: best list ranks (semantic, lexical): " +
                  ", ".join(f"({r['semantic']},{r['lexical']})" for r in out))


if __name__ == "__main__":
    main()
