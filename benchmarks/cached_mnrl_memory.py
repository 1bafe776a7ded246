"""Peak memory and speed of one training step with CachedMultipleNegativesRankingLoss (GradCache)
against plain MultipleNegativesRankingLoss, on all-MiniLM-L6-v2.

    python -m benchmarks.cached_mnrl_memory                                   # batches 64 512 4096, chunk 32, 32 tokens
    python -m benchmarks.cached_mnrl_memory --batch-sizes 64 512 --seq-len 16 --json results.json

One step = the library's jitted train step (``jaxsbert.training.step.make_train_step``): embed both
columns, loss, gradients, AdamW update (``make_optimizer`` with the config defaults), state donated
as in ``jaxsbert train``, dropout on. Pairs are STS-benchmark (sentence1, sentence2) rows tokenised
and padded to ``--seq-len`` tokens (``--data random``: random token ids of that length).

Every configuration runs in a fresh subprocess, so no measurement sees another's caches or
allocator state. Each reports:

* XLA's buffer assignment of the compiled step (``compiled.memory_analysis()``): ``temp`` (scratch
  buffers: activations, the similarity blocks, gradients before the update) and ``args`` (train state
  plus batch; the new state is written into the donated one): what XLA plans to allocate for the step,
  independent of the allocator and of compilation.
* ``peak RSS``: the process's whole-life peak resident set (``ru_maxrss``: model, state, XLA's
  compiler and the steps). It also counts file-backed pages (the mapped jaxlib library, ...), which
  the kernel evicts when other processes need memory, so the next two columns use the anonymous
  resident set (``RssAnon``: heap and buffers only), sampled every 5 ms by a thread (Linux):
* ``anon peak - baseline``: the whole-life anonymous peak minus that of a baseline subprocess that
  does everything but compile and run the step (imports, model, data, train state with AdamW moments).
* ``step anon``: the anonymous peak while the first step runs, above its value just before the step
  (after compiling and ``malloc_trim``): the step's own working memory as the process sees it.
* seconds per step and milliseconds per pair (median of the timed steps, compilation excluded),
  wall-clock and in CPU time of the process (user + system, all threads: core-milliseconds per pair),
  which other processes on a shared machine disturb less than wall-clock time.

Plain MultipleNegativesRankingLoss keeps every layer's activations for the whole batch; at batch
sizes listed in ``--plain-compile-only`` it is compiled (for XLA's numbers) but not run.

Very large global batches, through the trainer (``jaxsbert.training.loop.train``: the data loader,
packing as ``data.packing="auto"`` does, the mesh, the jitted step), one step each in a fresh process::

    python -m benchmarks.cached_mnrl_memory --global-batch 1024 65536 --devices 8

trains a small random BERT (2 layers, hidden 64, MiniLM's tokenizer) with CachedMNRL (``--mini-batch-size``
rows per chunk) on that many STSb pairs (sentence1, sentence2 + the row number) on ``--devices`` simulated
CPU devices, and reports each run's peak RSS and anonymous peak against the smallest batch's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.common import machine_description, peak_rss_bytes  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MIB = 2 ** 20


# --------------------------------------------------------------------------------------------------
# Process memory (Linux /proc; ru_maxrss elsewhere)
# --------------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (core-seconds)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def release_free_heap() -> None:
    """Returns freed heap pages to the OS (glibc), so that the resident set is what is in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class AnonSampler:
    """Samples the process's anonymous resident set (``RssAnon``) every ``interval`` seconds in a
    thread; ``peak`` since start, ``window_peak`` since the last :meth:`mark`. Unsupported (no /proc):
    every value is None."""

    def __init__(self, interval: float = 0.005):
        import threading

        self.supported = _status_kib("RssAnon") is not None
        self.peak = self.window_peak = self.read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        if self.supported:
            self._thread.start()

    def read(self) -> int | None:
        kib = _status_kib("RssAnon")
        return None if kib is None else kib * 1024

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            now = self.read()
            self.peak = max(self.peak, now)
            self.window_peak = max(self.window_peak, now)

    def mark(self) -> int | None:
        """Starts a new window at the current value, which it returns."""
        now = self.read()
        self.window_peak = now
        return now

    def stop(self) -> None:
        self._stop.set()
        if self.supported:
            self._thread.join()
            now = self.read()
            self.peak, self.window_peak = max(self.peak, now), max(self.window_peak, now)


# --------------------------------------------------------------------------------------------------
# One configuration, in its own process
# --------------------------------------------------------------------------------------------------

def pair_batch(tokenizer, batch_size: int, seq_len: int, data: str, seed: int = 0) -> dict:
    """{"features": (anchor, positive), "labels", "mask"} as the data loader makes them, [B, seq_len]."""
    import numpy as np

    from jaxsbert.data import pad_token_ids

    if data == "random":
        rng = np.random.default_rng(seed)
        vocab = tokenizer.hf.vocab_size
        columns = []
        for _ in range(2):
            ids = rng.integers(1000, vocab, (batch_size, seq_len)).astype(np.int32)
            ids[:, 0], ids[:, -1] = tokenizer.hf.cls_token_id, tokenizer.hf.sep_token_id
            columns.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    else:
        from jaxsbert.data import load_dataset

        ds = load_dataset({"source": "stsb", "split": "train"})
        rows = [i % len(ds) for i in range(batch_size)]
        tokenizer.max_seq_length = seq_len
        columns = []
        for name in ("sentence1", "sentence2"):
            texts = ds[name]
            columns.append(pad_token_ids(tokenizer([texts[i] for i in rows]), seq_len, batch_size,
                                         tokenizer.pad_token_id))
    return {"features": tuple(columns), "labels": np.zeros((batch_size,), np.float32),
            "mask": np.ones((batch_size,), bool)}


def run_one(spec: dict) -> dict:
    """Builds the train step for ``spec`` and measures it; ``spec["mode"]``: "baseline" (setup only),
    "compile" (compile and report XLA's numbers) or "run" (compile, then run ``steps`` steps)."""
    import jax
    import numpy as np

    from jaxsbert.config import DEFAULTS
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.losses import get_loss
    from jaxsbert.models.bundled import resolve_model
    from jaxsbert.models.sentence_model import SentenceModel
    from jaxsbert.training.optimizer import make_optimizer
    from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

    out = {k: spec[k] for k in ("mode", "loss", "batch_size", "mini_batch_size", "seq_len")}
    sampler = AnonSampler()
    encoder = SentenceEncoder.from_pretrained(resolve_model(MODEL))
    batch = jax.device_put(pair_batch(encoder.tokenizer, spec["batch_size"], spec["seq_len"], spec["data"]))
    tx, schedule = make_optimizer(DEFAULTS["optim"], total_steps=1000)
    state = init_state(encoder.params, {}, tx, seed=0)
    jax.block_until_ready((state, batch))
    out["rss_setup"] = rss_bytes()
    if spec["mode"] == "baseline":
        sampler.stop()
        out.update(peak_rss=peak_rss_bytes(), peak_anon=sampler.peak)
        return out

    kwargs = {"mini_batch_size": spec["mini_batch_size"]} if spec["loss"].startswith("Cached") else {}
    loss = get_loss(spec["loss"], **kwargs)
    embed_fn = make_embed_fn(SentenceModel(encoder.config), dropout=True)
    step = jax.jit(make_train_step(embed_fn, loss, "pairs", tx, schedule, has_labels=False), donate_argnums=0)
    del encoder   # the state holds the parameters

    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    out["compile_s"] = time.perf_counter() - t
    stats = compiled.memory_analysis()
    if stats is not None:
        for key in ("temp", "argument", "output", "alias", "generated_code"):
            out[f"xla_{key}"] = int(getattr(stats, f"{key}_size_in_bytes", 0) or 0)
    out["peak_rss_after_compile"] = peak_rss_bytes()
    if spec["mode"] == "compile":
        sampler.stop()
        out.update(peak_rss=peak_rss_bytes(), peak_anon=sampler.peak)
        return out

    release_free_heap()
    out["anon_before_step"] = sampler.mark()
    times, cpu_times, losses = [], [], []
    while True:
        t, c = time.perf_counter(), _cpu_seconds()
        state, metrics = compiled(state, batch)
        metrics = jax.device_get(metrics)
        times.append(time.perf_counter() - t)
        cpu_times.append(_cpu_seconds() - c)
        losses.append(float(metrics["loss"]))
        if len(times) == 1:
            out["step_peak_anon"] = sampler.window_peak
        if len(times) >= spec["steps"] or sum(times) >= spec["time_budget_s"]:
            break
    if not all(np.isfinite(losses)):
        raise FloatingPointError(f"non-finite loss {losses}")
    device_stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in device_stats:
        out["device_peak_bytes"] = int(device_stats["peak_bytes_in_use"])
    sampler.stop()
    out.update(step_times_s=times, step_cpu_s=cpu_times, first_loss=losses[0], peak_rss=peak_rss_bytes(), peak_anon=sampler.peak,
               load_avg_1min=round(os.getloadavg()[0], 2))
    return out


def run_trainer_step(spec: dict) -> dict:
    """One training step of a small random BERT with CachedMNRL at ``spec["batch_size"]`` pairs, through
    the trainer, in this process (whose XLA_FLAGS set the device count)."""
    import tempfile

    import jax

    from jaxsbert.encoder import SentenceEncoder, Tokenizer
    from jaxsbert.interop.st_dir import init_params
    from jaxsbert.models.bert import BertConfig
    from jaxsbert.models.bundled import resolve_model
    from jaxsbert.models.pooling import PoolingConfig
    from jaxsbert.models.sentence_model import SentenceModelConfig
    from jaxsbert.data import load_dataset
    from jaxsbert.training.loop import train

    sampler = AnonSampler()
    root = tempfile.mkdtemp(prefix="jaxsbert-global-batch-")
    bert = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, max_position_embeddings=128)
    config = SentenceModelConfig("bert", bert, (PoolingConfig(64, ("mean",)),), max_seq_length=spec["seq_len"])
    model = os.path.join(root, "model")
    SentenceEncoder(config, init_params(config, 0), Tokenizer(resolve_model(MODEL), spec["seq_len"])).save_pretrained(model)
    ds = load_dataset({"source": "stsb", "split": "train"})
    a, b = ds["sentence1"], ds["sentence2"]
    data = os.path.join(root, "pairs.jsonl")
    with open(data, "w") as f:
        for i in range(spec["batch_size"]):
            f.write(json.dumps({"anchor": f"{a[i % len(a)]} {i}", "positive": f"{b[i % len(b)]} {i}"}) + "\n")
    train_config = {
        "name": "global-batch", "model": model, "seed": 0, "batch_size": spec["batch_size"], "max_steps": 1,
        "data": {"train": {"pairs": {"source": data}}, "eval": {}},
        "loss": {"name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": spec["mini_batch_size"]},
        "eval_before": False, "save_model": False, "tensorboard": False, "log_every": 1,
        "compilation_cache": None,     # every run compiles its step (a cache hit would hide the compiler's memory)
        "checkpoint": {"every_steps": 0, "keep": 1, "async": False},
    }
    from jaxsbert.config import build_config

    t = time.perf_counter()
    summary = train(build_config(base=train_config), os.path.join(root, "run"))
    sampler.stop()
    return {"mode": "trainer", "batch_size": spec["batch_size"], "devices": jax.device_count(),
            "steps": int(summary["steps"]), "wall_s": time.perf_counter() - t, "peak_rss": peak_rss_bytes(),
            "peak_anon": sampler.peak}


def global_batch_report(results: list[dict]) -> str:
    ref = min(results, key=lambda r: r["batch_size"])
    lines = ["| pairs | devices | peak RSS MiB | vs smallest | anon peak MiB | vs smallest | wall s (1 step, "
             "with loading and compilation) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['batch_size']:,} | {r['devices']} | {_mib(r['peak_rss'])} | "
                     f"{_ratio(r['peak_rss'], ref['peak_rss'])} | {_mib(r['peak_anon'])} | "
                     f"{_ratio(r['peak_anon'], ref['peak_anon'])} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def run_in_subprocess(spec: dict, devices: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.cached_mnrl_memory", "--worker", json.dumps(spec)]
    env = None
    if devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"configuration {spec} failed (exit status {proc.returncode})")
    return json.loads(line[len("RESULT "):])


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------

def _mib(x) -> str:
    return "-" if x is None else f"{x / MIB:,.0f}"


def _sub(a, b):
    return None if a is None or b is None else a - b


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"


def report(results: list[dict], baseline: dict, reference_batch: int) -> str:
    lines = ["| loss | pairs | chunk | XLA temp MiB | XLA args MiB | peak RSS MiB | anon peak - baseline MiB "
             "| step anon MiB | s/step | ms/pair | CPU ms/pair |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cached = r["loss"].startswith("Cached")
        r["anon_above_baseline"] = _sub(r.get("peak_anon"), baseline.get("peak_anon"))
        r["step_anon"] = _sub(r.get("step_peak_anon"), r.get("anon_before_step"))
        if r["mode"] == "run":
            sec = statistics.median(r["step_times_s"])
            cpu = statistics.median(r["step_cpu_s"])
            timing = f"{sec:.2f} | {1000 * sec / r['batch_size']:.1f} | {1000 * cpu / r['batch_size']:.1f}"
            memory = f"{_mib(r['peak_rss'])} | {_mib(r['anon_above_baseline'])} | {_mib(r['step_anon'])}"
        else:
            timing, memory = "not run | - | -", "- | - | -"
        lines.append(f"| {'Cached MNRL' if cached else 'MNRL'} | {r['batch_size']} | "
                     f"{r['mini_batch_size'] if cached else '-'} | {_mib(r.get('xla_temp'))} | "
                     f"{_mib(r.get('xla_argument'))} | {memory} | {timing} |")
    lines.append(f"\nbaseline (imports, model, data, train state; nothing compiled): peak RSS "
                 f"{_mib(baseline['peak_rss'])} MiB, anon peak {_mib(baseline.get('peak_anon'))} MiB")

    cached = {r["batch_size"]: r for r in results if r["loss"].startswith("Cached") and r["mode"] == "run"}
    plain = {r["batch_size"]: r for r in results if not r["loss"].startswith("Cached") and r["mode"] == "run"}
    ref = cached.get(reference_batch)
    for b, r in sorted(cached.items()):
        if ref is None or b == reference_batch:
            continue
        args = lambda x: (x.get("xla_temp") or 0) + (x.get("xla_argument") or 0)
        lines.append(f"Cached MNRL memory at {b} pairs vs {reference_batch}: "
                     f"XLA temp {_ratio(r.get('xla_temp'), ref.get('xla_temp'))}, "
                     f"XLA temp+args {_ratio(args(r), args(ref))}, "
                     f"peak RSS {_ratio(r['peak_rss'], ref['peak_rss'])}, "
                     f"anon peak - baseline {_ratio(r['anon_above_baseline'], ref['anon_above_baseline'])}, "
                     f"step anon {_ratio(r['step_anon'], ref['step_anon'])}")
    for b in sorted(set(cached) & set(plain)):
        c, p = statistics.median(cached[b]["step_times_s"]), statistics.median(plain[b]["step_times_s"])
        cc, pc = statistics.median(cached[b]["step_cpu_s"]), statistics.median(plain[b]["step_cpu_s"])
        lines.append(f"time per pair at {b} pairs: Cached MNRL / MNRL = {c / p:.2f}x wall, {cc / pc:.2f}x CPU")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512, 4096],
                        help="pairs per step for CachedMultipleNegativesRankingLoss")
    parser.add_argument("--plain-batch-sizes", type=int, nargs="*", default=[64, 512],
                        help="pairs per step for plain MultipleNegativesRankingLoss (run)")
    parser.add_argument("--plain-compile-only", type=int, nargs="*", default=[4096],
                        help="batch sizes at which plain MNRL is only compiled (XLA's memory numbers), not run")
    parser.add_argument("--mini-batch-size", type=int, default=32, help="CachedMNRL mini_batch_size (chunk)")
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per sentence (padded / truncated)")
    parser.add_argument("--data", choices=["stsb", "random"], default="stsb")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (at most)")
    parser.add_argument("--time-budget", type=float, default=60.0,
                        help="stop timing a configuration after this many seconds (at least one step runs)")
    parser.add_argument("--json", help="also write the raw measurements here")
    parser.add_argument("--global-batch", type=int, nargs="*",
                        help="instead: one trainer step of a small random BERT at each of these global batch sizes")
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices for --global-batch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        result = run_trainer_step(spec) if spec["mode"] == "trainer" else run_one(spec)
        print("RESULT " + json.dumps(result), flush=True)
        return

    import jax

    if args.global_batch:
        print(machine_description())
        print(f"small random BERT (2 layers, hidden 64), CachedMNRL mini_batch_size={args.mini_batch_size}, "
              f"STSb pairs up to {args.seq_len} tokens, {args.devices} simulated devices, one trainer step\n", flush=True)
        results = []
        for b in args.global_batch:
            spec = dict(mode="trainer", batch_size=b, mini_batch_size=args.mini_batch_size, seq_len=args.seq_len)
            results.append(run_in_subprocess(spec, devices=args.devices))
            print(f"# {json.dumps(results[-1])}", flush=True)
        print()
        print(global_batch_report(results))
        return

    common = dict(mini_batch_size=args.mini_batch_size, seq_len=args.seq_len, data=args.data, steps=args.steps,
                  time_budget_s=args.time_budget)
    specs = [dict(common, mode="baseline", loss="MultipleNegativesRankingLoss", batch_size=min(args.batch_sizes))]
    specs += [dict(common, mode="run", loss="CachedMultipleNegativesRankingLoss", batch_size=b) for b in args.batch_sizes]
    specs += [dict(common, mode="run", loss="MultipleNegativesRankingLoss", batch_size=b) for b in args.plain_batch_sizes]
    specs += [dict(common, mode="compile", loss="MultipleNegativesRankingLoss", batch_size=b)
              for b in args.plain_compile_only if b not in args.plain_batch_sizes]

    print(machine_description())
    print(f"all-MiniLM-L6-v2, {args.seq_len} tokens per sentence ({args.data}), AdamW, dropout on, "
          f"float32; CachedMNRL mini_batch_size={args.mini_batch_size}\n", flush=True)
    results = []
    for spec in specs:
        t = time.time()
        r = run_in_subprocess(spec)
        results.append(r)
        print(f"# {spec['mode']} {spec['loss']} batch {spec['batch_size']}: {time.time() - t:.0f} s wall, "
              + json.dumps({k: v for k, v in r.items() if k not in spec or k == 'batch_size'}), flush=True)
    baseline, results = results[0], results[1:]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "jax": jax.__version__, "args": vars(args),
                       "baseline": baseline, "results": results}, f, indent=2)
    print()
    print(report(results, baseline, min(args.batch_sizes)))


if __name__ == "__main__":
    main()
