"""Shared helpers for the side-by-side benchmarks: machine description, STSb sentences, timing."""
from __future__ import annotations

import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def machine_description() -> str:
    """One line: CPU model and cores, memory, accelerators, library versions."""
    import importlib.metadata as md

    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):
        mem = float("nan")
    versions = []
    for dist in ("jax", "flax", "torch", "sentence-transformers", "transformers"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; jax devices: {jax.device_count()} x {devices}; "
            + ", ".join(versions))


def stsb_split(split: str, data_root: str | None = None):
    """(sentence1, sentence2, score 0-1) lists of an STS benchmark split (jaxsbert's reader)."""
    from jaxsbert.data import load_dataset

    ds = load_dataset({"source": "stsb", "split": split}, data_root=data_root)
    return list(ds["sentence1"]), list(ds["sentence2"]), list(ds["score"])


def minilm_path() -> str:
    from jaxsbert.models.bundled import resolve_model

    return resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def best_of(fn, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``fn()`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (ru_maxrss, which Linux reports in KiB, macOS in bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_mib() -> float:
    return round(peak_rss_bytes() / 2**20, 1)


class CompileCounter:
    """Counts XLA compilations in this process and sums their time (jax's monitoring events)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        import jax

        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if event == self.EVENT:
            self.count += 1
            self.seconds += duration


def run_worker(args: list[str], what: str, framework: str = "jaxsbert", compilation_cache: str = "0") -> dict:
    """Runs ``python ARGS`` in a fresh process from the repository root and returns the JSON of its
    ``RESULT {...}`` line; on failure prints the worker's output tails and exits naming ``what``.

    A sentence-transformers worker runs with the system allocator as its users have it: the worker
    imports jaxsbert's data readers, and importing jaxsbert would otherwise apply jaxsbert.host_memory.
    A jaxsbert worker compiles everything itself unless ``compilation_cache`` names a cache directory
    (``JAXSBERT_COMPILATION_CACHE``), so compile counts and times are a fresh machine's."""
    import json
    import subprocess

    env = dict(os.environ)
    if framework != "jaxsbert":
        env["JAXSBERT_KEEP_HOST_MEMORY"] = "0"
    env["JAXSBERT_COMPILATION_CACHE"] = compilation_cache
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        print(out.stdout[-2000:], out.stderr[-4000:])
        raise SystemExit(f"{what} failed")
    return json.loads(line[len("RESULT "):])
