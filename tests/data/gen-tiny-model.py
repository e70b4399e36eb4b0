#!/usr/bin/env python3
"""Write a tiny random BERT sentence-transformers model for fast indexing tests.

    python3 tests/data/gen-tiny-model.py --tokenizer-from ~/.local/share/coarch/models/all-MiniLM-L6-v2 \
        --out BUILD/tiny-minilm

The model has the REAL tokenizer of --tokenizer-from (tokenizer.json, vocab.txt and
tokenizer_config.json are copied byte for byte, and the vocabulary size follows them), so the
chunker counts tokens and the daemon tokenizes exactly as with the real model; only the network
is small: 2 layers, hidden 64, 4 heads, intermediate 128, 128 positions, max_seq_length 128,
mean pooling followed by Normalize -- the same module layout as all-MiniLM-L6-v2.  Embedding it
costs about 1/100 of the real model per token, which is what lets an integration test index
25,000 chunks in a minute on two cores.

The weights are deterministic for a given --seed (default 5) and written with the standard
library only: float32 bit patterns are built from seeded random bytes with a fixed exponent
range (magnitudes in [2^-7, 2^-5), random sign), which keeps every weight small and finite
without a per-element Python loop.  LayerNorm weights are 1 and biases 0, as BERT's own
initialisation has them.  The vectors mean nothing semantically, but they depend on the text
(mean pooling over random token embeddings), so identical chunks get identical vectors and
different chunks different ones -- enough for the store and resume checks that use it.

Output (everything model.h requires, see daemon/embed/model.h):
    OUT/config.json, OUT/model.safetensors, OUT/sentence_bert_config.json, OUT/modules.json,
    OUT/1_Pooling/config.json, OUT/2_Normalize/ (empty, as sentence-transformers saves it),
    OUT/config_sentence_transformers.json, and the copied tokenizer files.
Exit status 0, or 1 with a message on stderr (missing tokenizer files, unwritable OUT).
"""

import argparse
import json
import os
import random
import shutil
import struct
import sys
from pathlib import Path

HIDDEN = 64
LAYERS = 2
HEADS = 4
INTERMEDIATE = 128
MAX_POSITION = 128
MAX_SEQ_LENGTH = 128
TYPE_VOCAB = 2

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def vocab_size(src):
    """The vocabulary size the tokenizer files define: the largest id + 1."""
    tj = src / "tokenizer.json"
    if tj.exists():
        data = json.loads(tj.read_text(encoding="utf-8"))
        ids = list(data["model"]["vocab"].values())
        ids += [a["id"] for a in data.get("added_tokens", [])]
        return max(ids) + 1
    with open(src / "vocab.txt", encoding="utf-8") as f:
        return sum(1 for _ in f)


def random_f32(rng, n):
    """n little-endian float32 values, |x| in [2^-7, 2^-5), random sign, as bytes."""
    b = bytearray(rng.randbytes(4 * n))
    # Byte 3 holds the sign and the top 7 exponent bits, byte 2 the lowest exponent bit and
    # the top of the mantissa.  Exponent 0x78..0x79 -> 2^-7 .. 2^-6 times [1, 2).
    top = bytes((x & 0x80) | 0x3C for x in range(256))
    b[3::4] = b[3::4].translate(top)
    return bytes(b)


def const_f32(value, n):
    return struct.pack("<f", value) * n


def tensors(vocab):
    """(name, shape, kind) in BERT's order; kind is 'rand', 'one' or 'zero'."""
    H, I = HIDDEN, INTERMEDIATE
    out = [
        ("embeddings.word_embeddings.weight", [vocab, H], "rand"),
        ("embeddings.position_embeddings.weight", [MAX_POSITION, H], "rand"),
        ("embeddings.token_type_embeddings.weight", [TYPE_VOCAB, H], "rand"),
        ("embeddings.LayerNorm.weight", [H], "one"),
        ("embeddings.LayerNorm.bias", [H], "zero"),
    ]
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            out.append((p + f"attention.self.{m}.weight", [H, H], "rand"))
            out.append((p + f"attention.self.{m}.bias", [H], "rand"))
        out += [
            (p + "attention.output.dense.weight", [H, H], "rand"),
            (p + "attention.output.dense.bias", [H], "rand"),
            (p + "attention.output.LayerNorm.weight", [H], "one"),
            (p + "attention.output.LayerNorm.bias", [H], "zero"),
            (p + "intermediate.dense.weight", [I, H], "rand"),
            (p + "intermediate.dense.bias", [I], "rand"),
            (p + "output.dense.weight", [H, I], "rand"),
            (p + "output.dense.bias", [H], "rand"),
            (p + "output.LayerNorm.weight", [H], "one"),
            (p + "output.LayerNorm.bias", [H], "zero"),
        ]
    return out


def write_safetensors(path, vocab, seed):
    rng = random.Random(seed)
    header, blobs, offset = {}, [], 0
    for name, shape, kind in tensors(vocab):
        n = 1
        for d in shape:
            n *= d
        if kind == "rand":
            data = random_f32(rng, n)
        else:
            data = const_f32(1.0 if kind == "one" else 0.0, n)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt", "generator": "tests/data/gen-tiny-model.py"}
    hdr = json.dumps(header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)  # the reference writer pads the header to 8 bytes
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer-from", required=True,
                    help="model directory whose tokenizer files are copied (all-MiniLM-L6-v2)")
    ap.add_argument("--out", required=True, help="output model directory (replaced)")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    src, out = Path(args.tokenizer_from).expanduser(), Path(args.out)
    if not (src / "tokenizer.json").exists() and not (src / "vocab.txt").exists():
        sys.exit(f"gen-tiny-model: {src}: no tokenizer.json or vocab.txt "
                 "(install the model with scripts/fetch-model)")
    vocab = vocab_size(src)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, tmp / name)
    write_json(tmp / "config.json", {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POSITION,
        "type_vocab_size": TYPE_VOCAB,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    })
    write_json(tmp / "sentence_bert_config.json",
               {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    write_json(tmp / "config_sentence_transformers.json",
               {"__version__": {"generator": "tests/data/gen-tiny-model.py"}})
    write_json(tmp / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(tmp / "1_Pooling" / "config.json", {
        "word_embedding_dimension": HIDDEN,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    (tmp / "2_Normalize").mkdir()
    write_safetensors(tmp / "model.safetensors", vocab, args.seed)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"gen-tiny-model: {out}: vocab {vocab} (tokenizer from {src}), hidden {HIDDEN}, "
          f"{LAYERS} layers, seed {args.seed}")


if __name__ == "__main__":
    main()
