"""A run is the same on every topology, dropout on: the quickstart trained through the CLI on 1 device,
on 8 simulated devices (mesh {data: 4, fsdp: 2}), as 2 processes x 4 devices (gloo on localhost) and with
packing off, then the exported models compared (max abs difference of every weight).

    python -m benchmarks.topology                      # CoSENTLoss (the quickstart) and CachedMNRL, 12 steps
    python -m benchmarks.topology --losses cosent --steps 12

CachedMultipleNegativesRankingLoss trains on the demo pairs without their score column (mini-batches
of 4 of the batch of 16). Not a timing benchmark: ~1 min per run on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import itertools
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.common import REPO
from jaxsbert.models.bundled import resolve_model

LOSSES = {
    "cosent": [],
    "cached_mnrl": ["-o", "loss={'name': 'CachedMultipleNegativesRankingLoss', 'mini_batch_size': 4}",
                    "-o", "data.train.demo.columns=['sentence1', 'sentence2']"],
}
TOPOLOGIES = {     # name -> (processes, devices per process, overrides)
    "1 device": (1, 1, []),
    "8 devices {data: 4, fsdp: 2}": (1, 8, ["-o", "mesh.data=4", "-o", "mesh.fsdp=2"]),
    "2 processes x 4 devices": (2, 4, []),
    "1 device, packing off": (1, 1, ["-o", "data.packing=False"]),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train(workdir: str, steps: int, processes: int, devices: int, overrides: list[str]) -> str:
    """Trains the quickstart through the CLI; returns the exported model's directory."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               TOKENIZERS_PARALLELISM="false")
    base = [sys.executable, "-m", "jaxsbert.cli", "train", "configs/quickstart.py", "--workdir", workdir,
            "-o", f"max_steps={steps}", "-o", "eval_before=False", "-o", "eval_every=0", "-o", "tensorboard=False", *overrides]
    port = _free_port()
    procs = []
    for i in range(processes):
        extra = [] if processes == 1 else ["-o", f"distributed.coordinator_address='localhost:{port}'",
                                           "-o", f"distributed.num_processes={processes}", "-o", f"distributed.process_id={i}"]
        log = open(os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}.{i}.log"), "w")
        procs.append((subprocess.Popen(base + extra, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for p, log in procs:
        if p.wait() != 0:
            raise SystemExit(f"training failed: see {log.name}")
        log.close()
    import json

    last = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]
    if last.get("nonfinite"):
        raise SystemExit(f"{workdir}: {last['nonfinite']} steps were skipped (non-finite gradients)")
    return os.path.join(workdir, "model")


def weights(model_dir: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(os.path.join(model_dir, "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="jaxsbert-topology-")
    print(f"quickstart, {args.steps} steps, dropout on; workdirs under {root}")
    for loss in args.losses:
        models = {}
        for i, (name, (processes, devices, overrides)) in enumerate(TOPOLOGIES.items()):
            models[name] = weights(train(os.path.join(root, f"{loss}-{i}"), args.steps, processes, devices,
                                         LOSSES[loss] + overrides))
        print(f"\n{loss}: max |weight difference| between the exported models")
        for a, b in itertools.combinations(models, 2):
            print(f"  {a:30s} vs {b:30s} {max_diff(models[a], models[b]):.2e}")
        start = weights(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
        start = {k: start[k] for k in models["1 device"] if k in start}
        moved = max_diff({k: models["1 device"][k] for k in start}, start)
        print(f"  (training moved the weights by up to {moved:.2e} from all-MiniLM-L6-v2)")


if __name__ == "__main__":
    main()
