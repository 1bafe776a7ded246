"""Encode throughput, jaxsbert vs sentence-transformers, same sentences (STSb test, both columns),
same model (all-MiniLM-L6-v2) and batch size; also the max abs difference of the embeddings and
jaxsbert's compiled-program count and first-call (compile) time. Each framework runs in its own
process, so neither one's thread pool slows the other.

    python -m benchmarks.encode [--batch-size 64] [--repeats 3] [--split test] [--no-packing]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from benchmarks.common import CompileCounter, best_of, machine_description, minilm_path, peak_rss_mib, run_worker, stsb_split


def run_one(framework: str, args, out_path: str) -> dict:
    s1, s2, _ = stsb_split(args.split)
    sentences = s1 + s2
    if framework == "jaxsbert":
        from jaxsbert import SentenceEncoder

        model = SentenceEncoder.from_pretrained(minilm_path(), packing=not args.no_packing)
        encode = lambda: model.encode(sentences, batch_size=args.batch_size)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(minilm_path(), device="cpu")
        encode = lambda: model.encode(sentences, batch_size=args.batch_size)
    compiles = CompileCounter()
    t = time.perf_counter()
    embeddings = encode()                    # first call: jaxsbert compiles here
    first = time.perf_counter() - t
    seconds = best_of(encode, args.repeats)
    np.save(out_path, embeddings)
    result = {"sent_per_s": len(sentences) / seconds, "first_call_s": first, "sentences": len(sentences),
              "peak_rss_mib": peak_rss_mib()}
    if framework == "jaxsbert":
        result["compiled_programs"] = model.compiled_programs()
        result["length_buckets"] = len(model.buckets)
        result["xla_compilations"], result["compile_s"] = compiles.count, round(compiles.seconds, 2)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split", default="test")
    parser.add_argument("--no-packing", action="store_true", help="jaxsbert without sequence packing")
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args, args.one[1])), flush=True)
        return
    print(machine_description(), flush=True)
    tmp = tempfile.mkdtemp()
    res = {}
    for fw in ("jaxsbert", "sentence-transformers"):
        cmd = ["-m", "benchmarks.encode", "--one", fw, os.path.join(tmp, fw + ".npy"),
               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats), "--split", args.split]
        cmd += ["--no-packing"] if args.no_packing else []
        res[fw] = run_worker(cmd, fw, fw)
    ours, theirs = (np.load(os.path.join(tmp, fw + ".npy")) for fw in ("jaxsbert", "sentence-transformers"))
    j, s = res["jaxsbert"], res["sentence-transformers"]
    summary = {"sentences": j["sentences"], "batch_size": args.batch_size, "packing": not args.no_packing,
               "jaxsbert_sent_per_s": round(j["sent_per_s"], 1),
               "sentence_transformers_sent_per_s": round(s["sent_per_s"], 1),
               "ratio": round(j["sent_per_s"] / s["sent_per_s"], 2),
               "max_abs_diff": float(np.abs(ours - theirs).max()),
               "compiled_programs": j["compiled_programs"], "length_buckets": j["length_buckets"],
               "jaxsbert_first_call_s_incl_compile": round(j["first_call_s"], 2),
               "jaxsbert_xla_compilations": j["xla_compilations"], "jaxsbert_compile_s": j["compile_s"],
               "jaxsbert_peak_rss_mib": j["peak_rss_mib"], "sentence_transformers_peak_rss_mib": s["peak_rss_mib"]}
    print(json.dumps(summary))
    print(f"jaxsbert {summary['jaxsbert_sent_per_s']} sent/s, sentence-transformers "
          f"{summary['sentence_transformers_sent_per_s']} sent/s: ratio {summary['ratio']}x; "
          f"max |diff| {summary['max_abs_diff']:.2e}; {summary['compiled_programs']} compiled program(s)")


if __name__ == "__main__":
    main()
