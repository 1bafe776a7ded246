"""Subprocess worker for tests/test_parallel.py (not a test module; independent of conftest).

    python tests/parallel_worker.py SPEC.json

The parent sets XLA_FLAGS=--xla_force_host_platform_device_count=N before this process starts, so
JAX sees N CPU devices (importing jax does not start the backend; the first device query does). SPEC is a JSON object::

    {"runs": [{"name": str, "workdir": str, "config": {...}, "resume": bool}, ...],
     "restore": [{"name": str, "workdir": str, "like": run name, "step": int | null}, ...],   # optional
     "exported": [{"name": str, "path": str}, ...],                                         # optional
     "out": "results"}     # written to results.<process index>.npz

Each run is ``jaxsbert.training.loop.train(config, workdir)``; a config with ``distributed`` keys makes
the process join a multi-process job. The npz holds, per run: ``<name>/loss``, ``<name>/grad_norm``
and ``<name>/step`` (per logged step, from metrics.jsonl; process 0 only), ``<name>/state<path>`` (the final
params and loss heads, gathered to full arrays), ``<name>/eval/<metric>`` and ``<name>/steps``.
A restore entry restores ``workdir``'s checkpoint into arrays shaped and sharded like the final state
of run ``like`` (``<name>/state<path>``, ``<name>/steps``, ``<name>/data_position``); an exported entry loads a
sentence-transformers directory (``<name>/params<path>``).
"""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np


def _flatten(prefix: str, tree, out: dict) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.parallel import mesh as pmesh
    from jaxsbert.training.checkpoint import Checkpointer
    from jaxsbert.training.loop import train

    out, states = {}, {}
    for run in spec["runs"]:
        name = run["name"]
        summary = train(run["config"], run["workdir"], resume=bool(run.get("resume")))
        state = summary["state"]
        states[name] = state
        trainable = pmesh.local_copy({"params": state["params"], "heads": state["heads"]})
        _flatten(f"{name}/state", jax.device_get(trainable), out)
        out[f"{name}/steps"] = np.asarray(summary["steps"])
        for dataset, count in summary["rows_read"].items():      # rows this process parsed, per dataset
            out[f"{name}/rows_read/{dataset}"] = np.asarray(count)
        for key, value in (summary.get("eval") or {}).items():
            out[f"{name}/eval/{key}"] = np.asarray(value, np.float64)
        metrics_path = os.path.join(run["workdir"], "metrics.jsonl")
        if jax.process_index() == 0:
            records = [json.loads(line) for line in open(metrics_path)]
            train_records = [r for r in records if r["kind"] == "train"]
            out[f"{name}/loss"] = np.asarray([r["loss"] for r in train_records], np.float64)
            out[f"{name}/step"] = np.asarray([r["step"] for r in train_records])
            out[f"{name}/grad_norm"] = np.asarray([r["grad_norm"] for r in train_records], np.float64)

    for item in spec.get("restore", []):
        checkpointer = Checkpointer(os.path.join(item["workdir"], "checkpoints"), async_save=False)
        template = states[item["like"]]
        restored, meta = checkpointer.restore(template, item.get("step"))
        checkpointer.close()
        for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(template)):
            assert a.sharding == b.sharding, (a.sharding, b.sharding)
        trainable = pmesh.local_copy({"params": restored["params"], "heads": restored["heads"]})
        _flatten(f"{item['name']}/state", jax.device_get(trainable), out)
        out[f"{item['name']}/data_position"] = np.asarray([meta["data_position"]["epoch"],
                                                           meta["data_position"]["index"]])
        out[f"{item['name']}/steps"] = np.asarray(int(restored["step"]))

    for item in spec.get("exported", []):
        _flatten(f"{item['name']}/params", SentenceEncoder.from_pretrained(item["path"]).params, out)

    out["devices"] = np.asarray(jax.device_count())
    out["processes"] = np.asarray(jax.process_count())
    np.savez(f"{spec['out']}.{jax.process_index()}.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
