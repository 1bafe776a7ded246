"""Training throughput, jaxsbert vs sentence-transformers: all-MiniLM-L6-v2 on STS benchmark train
pairs, same loss, batch size and optimizer (AdamW 2e-5, dropout on), CPU or GPU.

    python -m benchmarks.train                               # the default set below
    python -m benchmarks.train --cases mnrl:64 cosent:16 --steps 30

Cases ``loss:batch``: ``mnrl`` (MultipleNegativesRankingLoss on (sentence1, sentence2)), ``cosent``
(CoSENTLoss on (sentence1, sentence2, score)), ``cmnrl`` (CachedMultipleNegativesRankingLoss,
mini-batch 32), ``cmnrl_tokens`` (the same with ``mini_batch_num_tokens=1024``: sentence-transformers
fills a mini-batch with sentences up to 1024 non-padding tokens, jaxsbert with packed rows up to 1024
token slots). Each framework runs in its own process. sentence-transformers runs its training
step as SentenceTransformerTrainer does (collate = tokenize each column, loss forward, backward, clip,
AdamW step); jaxsbert runs ``jaxsbert.training.loop.train`` (data loader, packing, jitted step).
Throughput is pairs/s over the steps after the first ``--warmup`` (compilation, caches); the mean
loss over the same steps is printed beside it to compare the loss curves.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from benchmarks.common import REPO, CompileCounter, machine_description, minilm_path, peak_rss_mib, run_worker

LOSSES = {"mnrl": "MultipleNegativesRankingLoss", "cosent": "CoSENTLoss",
          "cmnrl": "CachedMultipleNegativesRankingLoss", "cmnrl_tokens": "CachedMultipleNegativesRankingLoss"}
MINI_BATCH_NUM_TOKENS = 1024     # cmnrl_tokens: sentence-transformers' token budget per mini-batch
DEFAULT_CASES = ["mnrl:32", "mnrl:64", "cosent:16", "cmnrl:1024"]


def _loss_kwargs(kind: str) -> dict:
    return {"cmnrl": {"mini_batch_size": 32},
            "cmnrl_tokens": {"mini_batch_size": 32, "mini_batch_num_tokens": MINI_BATCH_NUM_TOKENS}}.get(kind, {})


def run_jaxsbert(kind: str, batch: int, steps: int, warmup: int, compute_dtype: str, packing: str) -> dict:
    from jaxsbert.config import build_config
    from jaxsbert.training.loop import train
    from jaxsbert.training.metrics import read_metrics

    columns = ["sentence1", "sentence2"] + (["score"] if kind == "cosent" else [])
    overrides = [
        f"data.train={{'stsb': {{'source': 'stsb', 'split': 'train', 'columns': {columns!r}}}}}",
        "data.eval={}", f"loss={dict(name=LOSSES[kind], **_loss_kwargs(kind))!r}",
        f"batch_size={batch}", f"max_steps={steps}", "log_every=1", "eval_before=False", "save_model=False",
        "checkpoint.every_steps=0", "tensorboard=False", f"compute_dtype={compute_dtype!r}",
        "optim.lr=2e-5", "optim.warmup_ratio=0.0", "optim.weight_decay=0.01",
        f"data.packing={packing if packing == 'auto' else packing == 'on'}",
    ]
    config = build_config("quickstart", overrides)
    workdir = tempfile.mkdtemp()
    compiles = CompileCounter()
    t = time.time()
    train(config, workdir)
    total = time.time() - t
    records = [r for r in read_metrics(workdir) if r.get("kind", "train") == "train" and "loss" in r]
    if records[-1].get("nonfinite"):      # a skipped update is cheaper than a real one: the timing would be wrong
        raise FloatingPointError(f"{kind} B={batch}: {records[-1]['nonfinite']} of {len(records)} steps had a "
                                 "non-finite loss or gradient")
    timed = records[warmup:]                      # log_every=1: one record per step, written after it
    seconds = timed[-1]["time"] - records[warmup - 1]["time"]
    return {"pairs_per_s": batch * len(timed) / seconds, "mean_loss": sum(r["loss"] for r in timed) / len(timed),
            "first_steps_s_incl_compile": round(records[warmup - 1]["time"] - t, 1), "total_s": round(total, 1),
            "xla_compilations": compiles.count, "compile_s": round(compiles.seconds, 1), "peak_rss_mib": peak_rss_mib()}


def run_sentence_transformers(kind: str, batch: int, steps: int, warmup: int, seed: int = 0) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer, losses

    from benchmarks.common import stsb_split

    torch.manual_seed(seed)
    s1, s2, score = stsb_split("train")
    model = SentenceTransformer(minilm_path(), device="cpu" if not torch.cuda.is_available() else "cuda")
    model.train()
    loss = {"mnrl": lambda: losses.MultipleNegativesRankingLoss(model),
            "cosent": lambda: losses.CoSENTLoss(model),
            "cmnrl": lambda: losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=32),
            "cmnrl_tokens": lambda: losses.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=32, mini_batch_num_tokens=MINI_BATCH_NUM_TOKENS)}[kind]()
    decay = [p for n, p in loss.named_parameters() if not any(k in n for k in ("bias", "LayerNorm"))]
    no_decay = [p for n, p in loss.named_parameters() if any(k in n for k in ("bias", "LayerNorm"))]
    # the optimizer SentenceTransformerTrainer uses by default (transformers: "adamw_torch_fused" on torch >= 2.8)
    fused = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 8)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=2e-5, fused=fused)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(s1))
    device = model.device
    times, values = [], []
    for step in range(steps):
        rows = order[(step * batch) % len(order):][:batch]
        if len(rows) < batch:
            rows = np.concatenate([rows, order[:batch - len(rows)]])
        t = time.perf_counter()
        features = [getattr(model, "preprocess", model.tokenize)([col[i] for i in rows]) for col in (s1, s2)]   # the trainer's collator
        features = [{k: v.to(device) for k, v in f.items() if hasattr(v, "to")} for f in features]
        labels = torch.tensor([score[i] for i in rows], dtype=torch.float32, device=device)
        value = loss(features, labels)
        value.backward()
        torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        values.append(float(value))
        times.append(time.perf_counter() - t)
    timed = times[warmup:]
    return {"pairs_per_s": batch * len(timed) / sum(timed), "mean_loss": float(np.mean(values[warmup:])),
            "first_steps_s_incl_compile": round(sum(times[:warmup]), 1), "total_s": round(sum(times), 1),
            "peak_rss_mib": peak_rss_mib()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--frameworks", nargs="+", default=["jaxsbert", "sentence-transformers"])
    parser.add_argument("--compute-dtype", default="float32")
    parser.add_argument("--packing", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        fw, case = args.one
        kind, batch = case.split(":")
        cached = kind.startswith("cmnrl")
        steps = args.steps if not cached else max(args.warmup + 3, args.steps // 5)
        if fw == "jaxsbert":
            out = run_jaxsbert(kind, int(batch), steps, args.warmup if not cached else 2,
                               args.compute_dtype, args.packing)
        else:
            out = run_sentence_transformers(kind, int(batch), steps, args.warmup if not cached else 2)
        print("RESULT " + json.dumps(out), flush=True)
        return
    print(machine_description(), flush=True)
    rows = []
    for case in args.cases:
        res = {}
        for fw in args.frameworks:
            cmd = ["-m", "benchmarks.train", "--one", fw, case, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--compute-dtype", args.compute_dtype, "--packing", args.packing]
            res[fw] = run_worker(cmd, f"{fw} {case}", fw)
            print(case, fw, json.dumps(res[fw]), flush=True)
        rows.append((case, res))
    print(f"\n{'case':12} {'jaxsbert pairs/s':>17} {'ST pairs/s':>11} {'ratio':>6} {'loss jax':>9} {'loss ST':>8} "
          f"{'compiles':>8} {'compile s':>9} {'peak MiB jax':>12} {'peak MiB ST':>11}")
    for case, res in rows:
        j, s = res.get("jaxsbert"), res.get("sentence-transformers")
        if j and s:
            print(f"{case:12} {j['pairs_per_s']:17.1f} {s['pairs_per_s']:11.1f} {j['pairs_per_s'] / s['pairs_per_s']:6.2f} "
                  f"{j['mean_loss']:9.4f} {s['mean_loss']:8.4f} {j['xla_compilations']:8d} {j['compile_s']:9.1f} "
                  f"{j['peak_rss_mib']:12.0f} {s['peak_rss_mib']:11.0f}")


if __name__ == "__main__":
    os.chdir(REPO)
    main()
