"""Scale-out: data/FSDP-parallel training on 8 simulated CPU devices and a real 2-process job (gloo)
give the same losses, gradients and parameters as one device / one process, and packed as unpacked
(within 1e-5), with dropout on (the masks are keyed by sentence, not by device, process or packed row),
so in-batch negatives are global; a checkpoint written by 2 processes restores (and resumes) in 1 process.

Device counts are fixed when JAX starts, so every run is a subprocess (tests/parallel_worker.py)
with XLA_FLAGS=--xla_force_host_platform_device_count=N that writes its results to an .npz.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import save_tiny_model, write_jsonl

WORKER = pathlib.Path(__file__).with_name("parallel_worker.py")
REPO = WORKER.parents[1]
TOL = 1e-5
BATCH = 32          # global batch: 4 rows per device on 8 devices
ROWS = 144          # 4.5 batches per epoch: every dataset's 5th batch is partial (padding rows)

WORDS = ("man woman child dog cat horse guitar piano street park river kitchen ball car train city house "
         "plays eats rides walks sings reads sleeps runs cooks paints watches jumps red small happy old "
         "quiet busy green large").split()


def _sentence(rng, low=3, high=9):
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("parallel")
    model = save_tiny_model(str(root / "model"), minilm_path)
    rng = np.random.default_rng(0)
    triplets = write_jsonl(str(root / "data" / "triplets.jsonl"), [
        {"anchor": _sentence(rng), "positive": _sentence(rng), "negative": _sentence(rng)} for _ in range(ROWS)])
    # a few long anchors (> 16 tokens): an unpacked global batch holding one takes the 32-token bucket,
    # on both processes
    long_triplets = write_jsonl(str(root / "data" / "long_triplets.jsonl"), [
        {"anchor": _sentence(rng, 3, 22 if i % 17 == 0 else 9), "positive": _sentence(rng),
         "negative": _sentence(rng)} for i in range(ROWS)])
    nli = write_jsonl(str(root / "data" / "nli.jsonl"), [
        {"premise": _sentence(rng), "hypothesis": _sentence(rng), "label": int(rng.integers(0, 3))}
        for _ in range(ROWS)])
    sts = write_jsonl(str(root / "data" / "sts.jsonl"), [
        {"sentence1": _sentence(rng), "sentence2": _sentence(rng), "score": float(rng.uniform())} for _ in range(40)])
    nli_dev = write_jsonl(str(root / "data" / "nli_dev.jsonl"), [
        {"premise": _sentence(rng), "hypothesis": _sentence(rng), "label": int(rng.integers(0, 3))} for _ in range(24)])
    return {"root": root, "model": model, "triplets": triplets, "long_triplets": long_triplets, "nli": nli,
            "sts": sts, "nli_dev": nli_dev}


def _config(setup, train: dict, loss: dict, mesh: dict, **over) -> dict:
    from jaxsbert.config import build_config

    base = {
        "name": "parallel", "model": setup["model"], "seed": 7,
        "data": {"train": {name: {"source": setup[source]} for name, source in train.items()}, "eval": {},
                 "multi_dataset_sampler": "round_robin"},
        "loss": loss, "batch_size": BATCH, "epochs": 1, "dropout": True,     # the tiny model's rates: 0.1
        # A parameter whose true gradient is exactly zero (attention key biases: softmax is shift invariant;
        # with TripletLoss also the last LayerNorm bias: distances are shift invariant) gets float rounding
        # noise as its gradient, and Adam divides it by its own magnitude (+ eps): with lr=1e-3, eps=1e-8
        # such parameters differ by up to 6e-4 between any two reduction orders (every other parameter by
        # < 2e-7). A small lr and eps=1e-6 keep that noise below the tolerance; the real updates are
        # ~lr per step, 50x the tolerance after 5 steps.
        "optim": {"lr": 1e-4, "warmup_steps": 0, "eps": 1e-6},
        "log_every": 1, "eval_before": False, "checkpoint": {"every_steps": 0, "keep": 1, "async": False},
        "mesh": mesh, "save_model": False, "tensorboard": False,
    }
    base.update(over)
    return build_config(base=base)


def _env(devices: int, cache: pathlib.Path) -> dict:
    env = dict(os.environ)
    # optimization level 0: LLVM codegen only (the SPMD partitioning under test is HLO-level, the same for
    # every run), a third less compile time; a compilation cache shared by the workers of this test
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache), TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    return env


def _write_spec(path: pathlib.Path, spec: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return str(path)


def _run_workers(jobs: list[tuple[str, int]], cache: pathlib.Path, timeout: float = 900) -> None:
    """Runs one worker per (spec, device count), all at once; when one fails (or time runs out) the
    others are killed."""
    logs = [open(f"{spec}.log", "w") for spec, _ in jobs]
    procs = [subprocess.Popen([sys.executable, str(WORKER), spec], env=_env(devices, cache), stdout=log,
                              stderr=subprocess.STDOUT, cwd=str(REPO)) for (spec, devices), log in zip(jobs, logs)]
    deadline = time.time() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.time() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    for (spec, _), p in zip(jobs, procs):
        if p.returncode != 0:
            pytest.fail(f"worker {spec} exited with {p.returncode}:\n{pathlib.Path(f'{spec}.log').read_text()[-6000:]}")


def _load(out: str, process: int = 0) -> dict:
    with np.load(f"{out}.{process}.npz") as f:
        return dict(f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _tree(results: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}


def _max_diff(a: dict, b: dict) -> float:
    """Max |a - b| over two flattened trees with the same keys."""
    assert a and sorted(a) == sorted(b), (sorted(a)[:4], sorted(b)[:4])
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


# ------------------------------------------------------------ 8 simulated devices vs one device

# One multi-dataset run, round robin: step i trains dataset i % 4, so each loss takes 5 steps (20 in all)
LOSSES = {
    # (anchor, positive, hard negative): every positive and negative of the batch is a negative of each anchor
    "mnrl": ("triplets", {"name": "MultipleNegativesRankingLoss"}),
    # GradCache over chunks of 8 rows: a chunk spans the devices, the loss sees the whole global batch
    "cached_mnrl": ("triplets", {"name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": 8}),
    "softmax": ("nli", {"name": "SoftmaxLoss", "num_labels": 3}),
    "triplet": ("triplets", {"name": "TripletLoss"}),
}
MESHES = {"data8": {"data": 8, "fsdp": 1}, "data4_fsdp2": {"data": 4, "fsdp": 2}}


def _loss_run(setup, name: str, mesh: dict, packing=None) -> dict:
    config = _config(setup, {n: data for n, (data, _) in LOSSES.items()},
                     {n: loss for n, (_, loss) in LOSSES.items()}, mesh)
    if packing is not None:
        config["data"]["packing"] = packing
    return {"name": name, "workdir": str(setup["root"] / "losses" / name), "config": config}


def _loss_specs(setup) -> list[tuple[str, int]]:
    """The single-device reference (packed, as "auto" packs every dataset; and unpacked) and both 8-device
    meshes (one worker each for 1 and 8 devices)."""
    root = setup["root"] / "losses"
    single = {"runs": [_loss_run(setup, "single", {"data": 1, "fsdp": 1}),
                       _loss_run(setup, "unpacked", {"data": 1, "fsdp": 1}, packing=False)],
              "exported": [{"name": "init", "path": setup["model"]}], "out": str(root / "single")}
    multi = {"runs": [_loss_run(setup, name, mesh) for name, mesh in MESHES.items()], "out": str(root / "multi")}
    return [(_write_spec(root / "single.json", single), 1), (_write_spec(root / "multi.json", multi), 8)]


@pytest.fixture(scope="module")
def runs(setup):
    """Every worker of this module: first all independent ones side by side (1 device; 8 devices; the
    2-process job; its 1-process reference), then the 1-process restore and resume of the 2-process
    checkpoints. Returns {npz name: results}."""
    cache = setup["root"] / "jax-cache"
    _run_workers(_loss_specs(setup) + _two_process_specs(setup), cache)
    _run_workers(_one_process_after_specs(setup), cache)
    loaded = {name: _load(str(setup["root"] / "losses" / name)) for name in ("single", "multi")}
    loaded.update({name: _load(str(setup["root"] / "multihost" / name)) for name in ("one", "after")})
    loaded.update({f"two.{i}": _load(str(setup["root"] / "multihost" / "two"), i) for i in range(2)})
    return loaded


@pytest.mark.parametrize("mesh", list(MESHES))
def test_eight_devices_match_one_device(runs, mesh):
    ref, ours = runs["single"], runs["multi"]
    assert int(ref["devices"]) == 1 and int(ours["devices"]) == 8
    steps = 5 * len(LOSSES)
    assert int(ref["single/steps"]) == int(ours[f"{mesh}/steps"]) == steps
    np.testing.assert_array_equal(ours[f"{mesh}/step"], np.arange(1, steps + 1))
    # every step's loss and global gradient norm (step i: loss i % 4; steps 17-20: the partial batches)
    loss_diff = np.abs(ours[f"{mesh}/loss"] - ref["single/loss"])
    grad_diff = np.abs(ours[f"{mesh}/grad_norm"] - ref["single/grad_norm"])
    for i, name in enumerate(LOSSES):
        assert loss_diff[i::4].max() <= TOL, (name, loss_diff[i::4])
        assert grad_diff[i::4].max() <= TOL, (name, grad_diff[i::4])
    state = _tree(ours, f"{mesh}/state")
    param_diff = _max_diff(state, _tree(ref, "single/state"))
    print(f"\n{mesh}: max |loss diff| {loss_diff.max():.2e}, max |grad norm diff| {grad_diff.max():.2e}, "
          f"max |param diff| {param_diff:.2e}")
    assert param_diff <= TOL
    # training moved the encoder far more than the tolerance, so the comparison is not vacuous
    trained = _tree(ref, "single/state['params']")
    assert _max_diff(trained, _tree(ref, "init/params")) > 30 * TOL
    assert any(k.startswith("['heads']['softmax']") for k in state)   # the SoftmaxLoss head is compared too


def test_unpacked_matches_packed(runs):
    """Packing off (padded rows in length buckets) vs on (several sentences per row), dropout on: the same
    losses and parameters."""
    ref = runs["single"]
    steps = 5 * len(LOSSES)
    assert int(ref["unpacked/steps"]) == steps
    loss_diff = np.abs(ref["unpacked/loss"] - ref["single/loss"]).max()
    param_diff = _max_diff(_tree(ref, "unpacked/state"), _tree(ref, "single/state"))
    print(f"\nunpacked vs packed: max |loss diff| {loss_diff:.2e}, max |param diff| {param_diff:.2e}")
    assert loss_diff <= TOL and param_diff <= TOL


# ------------------------------------------------------------ 2 processes x 2 devices vs 1 process x 4 devices

STEPS_2P = 10          # round robin over two datasets of 5 batches
RESUME_FROM = 4


def _two_process_config(setup, distributed: dict | None = None) -> dict:
    config = _config(
        setup, {"pairs": "long_triplets", "nli": "nli"},
        {"pairs": {"name": "MultipleNegativesRankingLoss"}, "nli": {"name": "SoftmaxLoss", "num_labels": 3}},
        {"data": 2, "fsdp": 2}, eval_before=True, eval_every=4, best_metric="sts_spearman_cosine",
        save_model=True, checkpoint={"every_steps": RESUME_FROM, "keep": 3, "async": False})
    config["data"]["eval"] = {"sts": {"type": "similarity", "source": setup["sts"]},
                              "nli-dev": {"type": "label_accuracy", "source": setup["nli_dev"], "head": "nli"}}
    # MNRL unpacked (batches of padded rows, the length bucket of the global batch on both processes),
    # SoftmaxLoss packed (each process packs its own rows)
    config["data"]["packing"] = {"pairs": False, "nli": True}
    if distributed:
        config["distributed"].update(distributed)
    return config


def _two_process_specs(setup) -> list[tuple[str, int]]:
    """The 2-process job (2 devices each, gloo on a free localhost port) and its 1-process 4-device twin."""
    root = setup["root"] / "multihost"
    port = _free_port()
    jobs = []
    for i in range(2):
        dist = {"coordinator_address": f"localhost:{port}", "num_processes": 2, "process_id": i}
        jobs.append((_write_spec(root / f"process{i}.json", {
            "runs": [{"name": "two", "workdir": str(root / "two"), "config": _two_process_config(setup, dist)}],
            "out": str(root / "two")}), 2))
    one = {"runs": [{"name": "one", "workdir": str(root / "one"), "config": _two_process_config(setup)}],
           "out": str(root / "one")}
    return jobs + [(_write_spec(root / "one.json", one), 4)]


def _one_process_after_specs(setup) -> list[tuple[str, int]]:
    """One process with 4 devices: restores the 2-process job's last checkpoint, resumes its step-4
    checkpoint (copied to a new workdir) to the end, and loads its exported model."""
    root = setup["root"] / "multihost"
    resumed = root / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(root / "two" / "checkpoints" / str(RESUME_FROM), resumed / "checkpoints" / str(RESUME_FROM))
    shutil.copy(root / "two" / "config.json", resumed / "config.json")
    spec = {"runs": [{"name": "resumed", "workdir": str(resumed), "config": _two_process_config(setup),
                      "resume": True}],
            "restore": [{"name": "restored", "workdir": str(root / "two"), "like": "resumed", "step": STEPS_2P}],
            "exported": [{"name": "exported", "path": str(root / "two" / "model")}],
            "out": str(root / "after")}
    return [(_write_spec(root / "after.json", spec), 4)]


def test_two_processes_match_one_process(runs):
    p0, p1, one = runs["two.0"], runs["two.1"], runs["one"]
    assert int(p0["processes"]) == int(p1["processes"]) == 2 and int(p0["devices"]) == 4
    assert int(one["processes"]) == 1 and int(one["devices"]) == 4
    assert int(p0["two/steps"]) == int(p1["two/steps"]) == int(one["one/steps"]) == STEPS_2P
    # process 0 alone writes the metrics: each step once
    np.testing.assert_array_equal(p0["two/step"], np.arange(1, STEPS_2P + 1))
    assert "two/loss" not in p1
    loss_diff = np.abs(p0["two/loss"] - one["one/loss"]).max()
    grad_diff = np.abs(p0["two/grad_norm"] - one["one/grad_norm"]).max()
    state = _tree(p0, "two/state")
    param_diff = _max_diff(state, _tree(one, "one/state"))
    print(f"\n2 processes vs 1: max |loss diff| {loss_diff:.2e}, max |grad norm diff| {grad_diff:.2e}, "
          f"max |param diff| {param_diff:.2e}")
    assert loss_diff <= TOL and grad_diff <= TOL and param_diff <= TOL
    assert any(k.startswith("['heads']['nli']") for k in state)
    # each process read (parsed) only its slice of each global batch: together every row of the epoch once,
    # each half of the 4 whole batches and half of the partial fifth (its 16 rows spread over the 32 slots)
    for dataset in ("pairs", "nli"):
        reads = [int(p[f"two/rows_read/{dataset}"]) for p in (p0, p1)]
        print(f"{dataset}: rows read by each process {reads} of {ROWS}")
        assert sum(reads) == ROWS and max(reads) <= 0.55 * ROWS and max(reads) - min(reads) <= 1, (dataset, reads)
    assert int(one["one/rows_read/pairs"]) >= ROWS
    # both processes hold the same final state and computed the same evaluation
    assert _max_diff(state, _tree(p1, "two/state")) == 0
    evals = _tree(p0, "two/eval/")
    assert set(evals) == {"sts_pearson_cosine", "sts_spearman_cosine", "nli-dev_accuracy"}
    assert _max_diff(evals, _tree(p1, "two/eval/")) == 0
    assert _max_diff(evals, _tree(one, "one/eval/")) <= TOL


def test_two_process_checkpoint_and_model_in_one_process(setup, runs):
    root, p0, one, after = setup["root"] / "multihost", runs["two.0"], runs["one"], runs["after"]
    state = _tree(p0, "two/state")
    # the last checkpoint, restored by one process into its 4-device shardings, is the final state
    assert int(after["restored/steps"]) == STEPS_2P
    assert after["restored/data_position"].tolist() == [1, 0]     # (epoch, batch) after the last step
    assert _max_diff(_tree(after, "restored/state"), state) == 0
    # the step-4 checkpoint resumed by one process: same later losses and final parameters
    np.testing.assert_array_equal(after["resumed/step"], np.arange(RESUME_FROM + 1, STEPS_2P + 1))
    np.testing.assert_allclose(after["resumed/loss"], one["one/loss"][RESUME_FROM:], rtol=0, atol=TOL)
    assert _max_diff(_tree(after, "resumed/state"), state) <= TOL
    # the exported model (written by process 0) holds the final parameters; best-model was written too
    assert _max_diff(_tree(after, "exported/params"), _tree(p0, "two/state['params']")) == 0
    assert (root / "two" / "best-model" / "config_sentence_transformers.json").exists()
    assert (root / "two" / "model-loss-head-nli").is_dir()
