"""Start-up and memory at scale, jaxsbert vs sentence-transformers: synthetic MNRL pairs (6-20 words a
sentence) as jsonl shards of 100k, 1M and 10M pairs, all-MiniLM-L6-v2, batch 64.

    python -m benchmarks.data_scale                                  # 100k, 1M, 10M
    python -m benchmarks.data_scale --sizes 100000 1000000 --steps 8

The data is generated into a temporary directory (removed at the end; ~1.7 GB at 10M; never committed).
Each run is a fresh process; printed per size and framework: seconds from process start to the end of
the first training step (compilation included; jaxsbert with no XLA cache and no line-index cache,
sentence-transformers with an empty ``datasets`` cache, so both read the files for the first time,
and once more with the ``datasets`` cache warm), peak host RSS, and steady pairs/s over the steps
after the first two.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from benchmarks.common import machine_description, minilm_path, peak_rss_mib, run_worker

# common English words, one BERT word-piece each: sentences of 6-20 words are ~8-22 tokens, as STSb's
WORDS = ("man woman child dog cat horse guitar piano street park river kitchen ball car train city house plays "
         "eats rides walks sings reads sleeps runs cooks paints watches jumps red small happy old quiet busy "
         "green large the a on in with near under over is are was two three people group water beach field "
         "table room road bike boat plane food bread fish tree flower grass snow rain sun sky black white blue "
         "young little big long short girl boy men women children person player team game music song book "
         "phone picture camera window door wall floor bed chair shirt hat dress shoes bag box cup glass bottle "
         "playing eating riding walking running sitting standing looking holding wearing talking cutting "
         "cooking dancing singing reading swimming climbing throwing carrying pulling pushing").split()


def generate(directory: str, pairs: int, shard_rows: int = 1_000_000, seed: int = 0) -> list[str]:
    """jsonl shards of ``pairs`` rows {"anchor", "positive"} of 6-20 words drawn from WORDS."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.asarray(WORDS)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for s, start in enumerate(range(0, pairs, shard_rows)):
        path = os.path.join(directory, f"pairs-{s:05d}.jsonl")
        with open(path, "w") as f:
            for block in range(start, min(start + shard_rows, pairs), 100_000):
                m = min(100_000, pairs - block, start + shard_rows - block)
                lengths = rng.integers(6, 21, size=(m, 2))
                words = vocab[rng.integers(0, len(vocab), size=(m, 2, 20))]
                f.write("".join(json.dumps({"anchor": " ".join(words[i, 0, :lengths[i, 0]]),
                                            "positive": " ".join(words[i, 1, :lengths[i, 1]])}) + "\n"
                                for i in range(m)))
        paths.append(path)
    return paths


def process_start() -> float:
    """This process's start time (seconds since the epoch), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
    with open("/proc/stat") as f:
        boot = next(float(l.split()[1]) for l in f if l.startswith("btime"))
    return boot + start


def run_jaxsbert(pattern: str, steps: int) -> dict:
    from benchmarks.common import CompileCounter
    from jaxsbert.config import build_config
    from jaxsbert.training.loop import train
    from jaxsbert.training.metrics import read_metrics

    overrides = [f"data.train={{'pairs': {{'source': {pattern!r}}}}}", "data.eval={}",
                 "loss={'name': 'MultipleNegativesRankingLoss'}", "batch_size=64", f"max_steps={steps}",
                 "log_every=1", "eval_before=False", "save_model=False", "checkpoint.every_steps=0",
                 "tensorboard=False", "optim.warmup_ratio=0.0"]
    workdir = tempfile.mkdtemp()
    compiles = CompileCounter()
    summary = train(build_config("quickstart", overrides), workdir)
    times = [r["time"] for r in read_metrics(workdir) if r.get("kind", "train") == "train" and "loss" in r]
    shutil.rmtree(workdir, ignore_errors=True)
    return {"first_step_s": times[0] - process_start(), "pairs_per_s": 64 * (len(times) - 2) / (times[-1] - times[1]),
            "peak_rss_mib": peak_rss_mib(), "rows_read": sum(summary["rows_read"].values()),
            "compile_s": compiles.seconds}


def run_sentence_transformers(pattern: str, steps: int) -> dict:
    import glob

    import datasets
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from transformers import TrainerCallback

    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.time())

    train = datasets.load_dataset("json", data_files=sorted(glob.glob(pattern)), split="train")
    model = SentenceTransformer(minilm_path(), device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=64, learning_rate=2e-5,
        save_strategy="no", logging_steps=1000, report_to="none", use_cpu=True, seed=0)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=losses.MultipleNegativesRankingLoss(model), callbacks=[Clock()])
    trainer.train()
    return {"first_step_s": times[0] - process_start(), "pairs_per_s": 64 * (len(times) - 2) / (times[-1] - times[1]),
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--frameworks", nargs="+", default=["jaxsbert", "sentence-transformers"])
    parser.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "PATTERN", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = run_jaxsbert if args.worker[0] == "jaxsbert" else run_sentence_transformers
        print("RESULT " + json.dumps(fn(args.worker[1], int(args.worker[2]))), flush=True)
        return
    print(machine_description())
    root = tempfile.mkdtemp(prefix="jaxsbert-data-scale-")
    try:
        for size in args.sizes:
            t = time.time()
            generate(os.path.join(root, str(size)), size)
            print(f"{size:>10,} pairs: generated in {time.time() - t:.0f} s", flush=True)
            pattern = os.path.join(root, str(size), "pairs-*.jsonl")
            runs = []
            for framework in args.frameworks:
                cache = os.path.join(root, f"cache-{size}-{framework}")
                os.environ["JAXSBERT_INDEX_CACHE"] = os.path.join(cache, "line-index")
                os.environ["HF_DATASETS_CACHE"] = os.path.join(cache, "datasets")
                labels = ["cold"] + (["warm datasets cache"] if framework != "jaxsbert" else [])
                for label in labels:
                    r = run_worker(["-m", "benchmarks.data_scale", "--worker", framework, pattern, str(args.steps)],
                                   f"{framework} at {size}", framework)
                    runs.append((f"{framework} ({label})", r))
            for name, r in runs:
                extra = (f", rows read {r['rows_read']:,}, compiling {r['compile_s']:.1f} s" if "rows_read" in r
                         else "")
                print(f"{size:>10,} pairs  {name:<40} first step {r['first_step_s']:6.1f} s   peak RSS "
                      f"{r['peak_rss_mib']:7.0f} MiB   {r['pairs_per_s']:5.1f} pairs/s{extra}", flush=True)
            shutil.rmtree(os.path.join(root, str(size)), ignore_errors=True)
            for framework in args.frameworks:
                shutil.rmtree(os.path.join(root, f"cache-{size}-{framework}"), ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
