"""Fused vs materialized attention (``attention_impl``) on this backend: all-MiniLM-L6-v2's forward, and forward
+ backward of a sum of squares of its embeddings, at one batch shape; the two paths interleaved call by call.

    python -m benchmarks.attention                       # B=32, L=64, float32, 20 rounds
    python -m benchmarks.attention --dtype bfloat16 --batch 256 --length 128

Prints wall and process CPU time per call (min / median): on a shared machine the CPU time is the steadier
of the two. Random token ids with lengths drawn in [10, L] (padding masks), the bundled model's weights.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.models.bundled import resolve_model
    from jaxsbert.models.sentence_model import SentenceModel, compute_dtype

    encoder = SentenceEncoder.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    rng = np.random.default_rng(0)
    ids = np.zeros((args.batch, args.length), np.int32)
    mask = np.zeros((args.batch, args.length), np.int32)
    for i, n in enumerate(rng.integers(min(10, args.length), args.length + 1, args.batch)):
        ids[i, :n] = rng.integers(1000, 30000, n)
        mask[i, :n] = 1
    features = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
    calls = {}
    for impl in ("materialized", "fused"):
        model = SentenceModel(encoder.config, dtype=compute_dtype(args.dtype), attention_impl=impl)
        forward = lambda p, model=model: model.apply({"params": p}, features)
        calls[impl, "forward"] = jax.jit(forward)
        calls[impl, "forward+backward"] = jax.jit(jax.value_and_grad(lambda p, f=forward: jnp.sum(f(p) ** 2)))
    for fn in calls.values():
        jax.block_until_ready(fn(encoder.params))            # compile
    wall = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    for _ in range(args.rounds):
        for k, fn in calls.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(encoder.params))
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    print(f"{jax.default_backend()} {jax.devices()[0].device_kind}, all-MiniLM-L6-v2, B={args.batch}, L={args.length}, "
          f"{args.dtype}, {args.rounds} rounds")
    print(f"{'path':13} {'pass':17} {'wall min':>9} {'median':>9} {'cpu min':>9} {'median':>9}  (ms)")
    for (impl, what), w in wall.items():
        w, c = np.array(w) * 1e3, np.array(cpu[impl, what]) * 1e3
        print(f"{impl:13} {what:17} {w.min():9.1f} {np.median(w):9.1f} {c.min():9.1f} {np.median(c):9.1f}")


if __name__ == "__main__":
    main()
