"""Soak test of preemption safety: a long ``jaxsbert train`` interrupted by SIGTERM at random steps and
resumed each time must end with exactly the parameters (the whole train state, bitwise) of one
uninterrupted run.

    python benchmarks/soak.py                                   # quickstart, 2,000 steps, SIGTERM every 100-300
    python benchmarks/soak.py --steps 60 --min-interval 10 --max-interval 25 --root /tmp/soak   # a short one

Each run is ``python -m jaxsbert.cli train CONFIG --workdir DIR [--resume]`` on CPU (JAX_PLATFORMS=cpu unless
--platform is given); the interrupted run gets a SIGTERM once it has logged the chosen step, saves a
checkpoint at the next step boundary, exits with status 143, and is started again with --resume. Prints a
JSON report; exits 1 when the final states differ. The runs import the working tree, so do not edit it
while a soak runs: the report says whether jaxsbert's sources changed during the soak (``source_changed``,
which voids the comparison), and the first logged step whose loss differs between the two runs
(``first_differing_step``; one before the first stop points at the platform, not at resuming).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the quickstart (all-MiniLM-L6-v2, CoSENTLoss on the demo pairs), for a fixed number of steps, without the
# evaluations and the model export (the comparison is on the checkpointed train state)
DEFAULT_OVERRIDES = ["log_every=1", "eval_before=False", "save_model=False", "tensorboard=False", "data.eval={}",
                     "checkpoint.every_steps=100", "checkpoint.keep=2"]


def _command(config: str, workdir: str, steps: int, overrides: list[str], resume: bool) -> list[str]:
    command = [sys.executable, "-m", "jaxsbert.cli", "train", config, "--workdir", workdir,
               "-o", f"max_steps={steps}"]
    for item in DEFAULT_OVERRIDES + list(overrides):
        command += ["-o", item]
    return command + (["--resume"] if resume else [])


def _env(platform: str | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if platform:
        env["JAX_PLATFORMS"] = platform
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _last_step(metrics: str, offset: int) -> int:
    """The largest train step logged after byte ``offset`` of metrics.jsonl (what this process wrote)."""
    if not os.path.exists(metrics):
        return -1
    with open(metrics) as f:
        f.seek(offset)
        steps = []
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue          # a line being written
            if record.get("kind") == "train":
                steps.append(record["step"])
    return max(steps, default=-1)


def _source_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(REPO, "jaxsbert", "**", "*.py"), recursive=True)):
        digest.update(path.encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _logged(workdir: str) -> dict[int, tuple]:
    """step -> (loss, grad_norm) of the first train record of each step in metrics.jsonl."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("kind") == "train":
                out.setdefault(record["step"], (record.get("loss"), record.get("grad_norm")))
    return out


def _final_state(workdir: str) -> dict:
    import jax
    from jaxsbert.training.checkpoint import Checkpointer, _flat

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        step = ckpt.latest_step()
        return {"step": step, "state": _flat(jax.device_get(ckpt.restore_raw(step)))}
    finally:
        ckpt.close()


def _compare(a: dict, b: dict) -> list[str]:
    import numpy as np

    if sorted(a) != sorted(b):
        return sorted(set(a) ^ set(b))
    return [name for name in a if np.asarray(a[name]).tobytes() != np.asarray(b[name]).tobytes()
            or np.asarray(a[name]).dtype != np.asarray(b[name]).dtype]


def run_soak(steps: int = 2000, min_interval: int = 100, max_interval: int = 300, seed: int = 0,
             root: str | None = None, config: str = "quickstart", overrides: list[str] | None = None,
             platform: str | None = "cpu", timeout: float = 6 * 3600, log=print) -> dict:
    """Runs the reference and the interrupted run; returns a report (``identical``: the final states match)."""
    overrides = list(overrides or [])
    root = root or tempfile.mkdtemp(prefix="jaxsbert-soak-")
    env = _env(platform)
    t0 = time.time()
    source = _source_fingerprint()

    reference = os.path.join(root, "reference")
    log(f"[soak] reference run: {steps} steps in {reference}")
    done = subprocess.run(_command(config, reference, steps, overrides, False), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    t_reference = time.time() - t0

    rng = random.Random(seed)
    workdir = os.path.join(root, "interrupted")
    metrics = os.path.join(workdir, "metrics.jsonl")
    stops, resume, target = [], False, rng.randint(min_interval, max_interval)
    deadline = time.time() + timeout
    while True:
        offset = os.path.getsize(metrics) if os.path.exists(metrics) else 0
        proc = subprocess.Popen(_command(config, workdir, steps, overrides, resume), env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sent = False
        try:
            while proc.poll() is None and time.time() < deadline:
                if not sent and target < steps and _last_step(metrics, offset) >= target:
                    proc.send_signal(signal.SIGTERM)
                    sent = True
                time.sleep(0.2)
            out, err = proc.communicate(timeout=max(deadline - time.time(), 1))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == 128 + signal.SIGTERM:
            summary = json.loads(out)
            stops.append({"signalled_after": target, "stopped_at": summary["steps"]})
            log(f"[soak] SIGTERM after step {target}: stopped at step {summary['steps']}, resuming")
            if "--resume" not in err:
                raise RuntimeError(f"the stopped run did not say how to resume:\n{err[-2000:]}")
            target = summary["steps"] + rng.randint(min_interval, max_interval)
            resume = True
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"interrupted run failed ({proc.returncode}):\n{err[-4000:]}")
        break

    ref, got = _final_state(reference), _final_state(workdir)
    differing = _compare(ref["state"], got["state"]) if ref["step"] == got["step"] else ["<step>"]
    ref_log, got_log = _logged(reference), _logged(workdir)
    first_diff = next((s for s in sorted(ref_log) if got_log.get(s) != ref_log[s]), None)
    source_changed = _source_fingerprint() != source
    if source_changed:
        log("[soak] WARNING: jaxsbert's sources changed during the soak; the runs may have run different code")
    report = {"steps": steps, "config": config, "seed": seed, "interruptions": len(stops), "stops": stops,
              "final_step": [ref["step"], got["step"]], "identical": not differing, "differing": differing[:10],
              "first_differing_step": first_diff, "source_changed": source_changed,
              "reference_seconds": round(t_reference, 1), "total_seconds": round(time.time() - t0, 1),
              "root": root}
    log("[soak] " + json.dumps(report))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--min-interval", type=int, default=100)
    parser.add_argument("--max-interval", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="where the two workdirs go (default: a new temp dir)")
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--platform", default="cpu", help="JAX_PLATFORMS for the runs ('' to leave it unset)")
    args = parser.parse_args(argv)
    report = run_soak(args.steps, args.min_interval, args.max_interval, args.seed, args.root, args.config,
                      args.override, args.platform or None)
    sys.exit(0 if report["identical"] else 1)


if __name__ == "__main__":
    main()
