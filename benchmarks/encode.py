"""Encode throughput, jaxsbert vs sentence-transformers, same sentences (STSb test, both columns),
same model (all-MiniLM-L6-v2) and batch size; also the max abs difference of the embeddings and
jaxsbert's compiled-program count and compile time.

    python -m benchmarks.encode [--batch-size 64] [--repeats 3] [--split test]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import best_of, machine_description, minilm_path, stsb_split


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split", default="test")
    parser.add_argument("--no-packing", action="store_true", help="jaxsbert without sequence packing")
    args = parser.parse_args()
    s1, s2, _ = stsb_split(args.split)
    sentences = s1 + s2
    path = minilm_path()
    print(machine_description())

    from jaxsbert import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(path)
    encoder.packing = not args.no_packing
    t = time.perf_counter()
    ours = encoder.encode(sentences, batch_size=args.batch_size)       # first call: compiles
    first = time.perf_counter() - t
    jax_s = best_of(lambda: encoder.encode(sentences, batch_size=args.batch_size), args.repeats)

    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    theirs = model.encode(sentences, batch_size=args.batch_size)
    st_s = best_of(lambda: model.encode(sentences, batch_size=args.batch_size), args.repeats)

    result = {
        "sentences": len(sentences), "batch_size": args.batch_size, "packing": encoder.packing,
        "jaxsbert_sent_per_s": round(len(sentences) / jax_s, 1),
        "sentence_transformers_sent_per_s": round(len(sentences) / st_s, 1),
        "ratio": round(st_s / jax_s, 2),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "compiled_programs": encoder.compiled_programs(), "length_buckets": len(encoder.buckets),
        "first_call_s_incl_compile": round(first, 2), "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    print(f"jaxsbert {result['jaxsbert_sent_per_s']} sent/s, sentence-transformers "
          f"{result['sentence_transformers_sent_per_s']} sent/s: ratio {result['ratio']}x; "
          f"max |diff| {result['max_abs_diff']:.2e}; {result['compiled_programs']} compiled programs")


if __name__ == "__main__":
    main()
