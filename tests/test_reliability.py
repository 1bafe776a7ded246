"""Reliability: exact resume after kill -9 (also mid-checkpoint-write) and SIGTERM, damaged checkpoints,
the workdir lock, non-finite steps, and bad input rejected before compilation with a clear message.

The kill / signal tests run ``jaxsbert train`` in subprocesses (through a small launcher that injects the
fault) and compare the final train state bitwise with an uninterrupted run. The soak test
(``-m soak``, not in CI) drives ``benchmarks/soak.py``.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsbert.config import ConfigError, build_config
from jaxsbert.training.checkpoint import (Checkpointer, CheckpointMismatchError, CorruptCheckpointError, _flat,
                                          digest)
from jaxsbert.training.preemption import StopSignals, WorkdirLock, WorkdirLockedError
from helpers import save_tiny_model, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = int(os.environ.get("RELIABILITY_SEED", "20240607"))   # picks the kill points; any seed must pass


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_path):
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), minilm_path)


@pytest.fixture
def jaxsbert_log(caplog):
    """caplog for the 'jaxsbert' logger (which does not propagate once training has set it up)."""
    logger = logging.getLogger("jaxsbert")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="jaxsbert")
    yield caplog
    logger.removeHandler(caplog.handler)


def _config(model, **over):
    base = {
        "name": "reliability",
        "model": model,
        "max_seq_length": 16,         # one length bucket: one compilation
        "data": {"train": {"demo": {"source": "demo", "split": "train", "limit": 48}}, "eval": {}},
        "loss": {"name": "CoSENTLoss"},
        "batch_size": 8,
        "epochs": 1,
        "optim": {"lr": 1e-3, "warmup_ratio": 0.2},
        "log_every": 1,
        "eval_before": False,
        "save_model": False,
        "tensorboard": False,
        "checkpoint": {"every_steps": 0, "keep": 2, "async": False},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return build_config(base=base)


def _raw_state(workdir, step=None):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return _flat(jax.device_get(ckpt.restore_raw(step)))
    finally:
        ckpt.close()


def _all_raw_states(workdir) -> dict[int, dict]:
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return {step: _flat(jax.device_get(ckpt.restore_raw(step))) for step in ckpt.all_steps()}
    finally:
        ckpt.close()


def _steps(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return ckpt.all_steps()
    finally:
        ckpt.close()


def _logged_steps(workdir) -> list[int]:
    """Train steps in metrics.jsonl (a line being written, or torn by a kill, is skipped)."""
    path = os.path.join(workdir, "metrics.jsonl")
    steps = []
    for line in open(path) if os.path.exists(path) else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "train":
            steps.append(record["step"])
    return steps


def _assert_bitwise_equal(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"


# ------------------------------------------------------------------- training in a subprocess, with faults

# Runs ``jaxsbert.cli.main`` with a fault from $RELIABILITY_FAULT injected by monkeypatching (no test hooks
# in the library): kill_after_step:N  SIGKILL right after step N is logged;  kill_in_save:N  SIGKILL
# while checkpoint N is being written (its state and metadata files are in the orbax tmp directory, not yet
# committed);  slow:SECONDS  sleep after each logged step (so that an outside signal lands mid-run).
LAUNCHER = textwrap.dedent('''
    import os, signal, sys, time
    fault = os.environ.get("RELIABILITY_FAULT", "")
    kind, _, arg = fault.partition(":")
    if kind in ("kill_after_step", "slow"):
        from jaxsbert.training import metrics
        original_write = metrics.MetricsWriter.write
        def write(self, step, record, kind="train"):
            original_write(self, step, record, kind)
            if kind == "train" and fault.startswith("kill_after_step") and step >= int(arg):
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "train" and fault.startswith("slow"):
                time.sleep(float(arg))
        metrics.MetricsWriter.write = write
    elif kind == "kill_in_save":
        import orbax.checkpoint as ocp
        from jaxsbert.training import checkpoint
        original_save, original_json = checkpoint.Checkpointer.save, ocp.JsonCheckpointHandler._save_fn
        armed = []
        def save(self, step, state, meta):
            if step == int(arg):
                armed.append(step)
            return original_save(self, step, state, meta)
        async def json_save(self, x, directory):
            await original_json(self, x, directory)
            if armed:
                self_dir = str(directory)
                sys.stderr.write(f"RELIABILITY: killing while writing {self_dir}\\n")
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.Checkpointer.save = save
        ocp.JsonCheckpointHandler._save_fn = json_save
    from jaxsbert.cli import main
    main(sys.argv[1:])
''')


class Trainer:
    """``python launcher.py train CONFIG --workdir DIR`` in a subprocess, on CPU."""

    def __init__(self, root, config: dict):
        os.makedirs(root, exist_ok=True)
        self.cache = os.path.join(root, "jax-cache")
        self.launcher = os.path.join(root, "launcher.py")
        with open(self.launcher, "w") as f:
            f.write(LAUNCHER)
        self.config_file = os.path.join(root, "config_file.py")
        with open(self.config_file, "w") as f:
            f.write("def get_config():\n    return " + repr(config) + "\n")

    def command(self, workdir, resume=False):
        return [sys.executable, self.launcher, "train", self.config_file, "--workdir", workdir] + \
            (["--resume"] if resume else [])

    def env(self, fault=""):
        env = dict(os.environ, JAX_PLATFORMS="cpu", RELIABILITY_FAULT=fault, PYTHONUNBUFFERED="1",
                   # the runs share compiled programs (the same HLO every time): half the time of a run
                   JAX_COMPILATION_CACHE_DIR=self.cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def run(self, workdir, resume=False, fault="", timeout=420) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(workdir, resume), env=self.env(fault), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def start(self, workdir, resume=False, fault="") -> subprocess.Popen:
        return subprocess.Popen(self.command(workdir, resume), env=self.env(fault), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)


RUN_CONFIG = {  # 64 rows, batch 16: 4 steps an epoch, 16 steps; a checkpoint every 3 steps, 2 kept, async
    "name": "reliability", "max_seq_length": 16, "data": {"train": {"demo": {"source": "demo", "split": "train", "limit": 64}}, "eval": {}},
    "loss": {"name": "CoSENTLoss"}, "batch_size": 16, "epochs": 4, "optim": {"lr": 1e-3, "warmup_ratio": 0.2},
    "log_every": 1, "eval_before": False, "save_model": False, "tensorboard": False,
    "checkpoint": {"every_steps": 3, "keep": 2, "async": True},
}
TOTAL_STEPS = 16


@pytest.fixture(scope="module")
def trainer(tiny_model, tmp_path_factory):
    return Trainer(str(tmp_path_factory.mktemp("cli")), dict(RUN_CONFIG, model=tiny_model))


@pytest.fixture(scope="module")
def reference(trainer, tmp_path_factory):
    """The final train state of an uninterrupted run."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    done = trainer.run(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _steps(workdir)[-1] == TOTAL_STEPS
    return _raw_state(workdir)


def test_sigkill_at_a_random_step_and_during_a_checkpoint_write_then_resume_is_bitwise_exact(trainer, reference,
                                                                                          tmp_path):
    rng = random.Random(SEED)
    kill_step = rng.randint(1, 7)              # may be before the first checkpoint (step 3)
    save_step = rng.choice([9, 12, 15])         # a checkpoint written after the first resume
    workdir = str(tmp_path / "run")
    ckpt_dir = os.path.join(workdir, "checkpoints")

    first = trainer.run(workdir, fault=f"kill_after_step:{kill_step}")
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert _logged_steps(workdir)[-1] == kill_step
    committed = _steps(workdir)        # the async write of the latest one may not have finished
    assert all(s <= kill_step for s in committed)

    second = trainer.run(workdir, resume=True, fault=f"kill_in_save:{save_step}")
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    if committed:
        assert f"resumed from step {committed[-1]}" in second.stderr
    else:                 # killed before a first checkpoint was committed: --resume starts over, saying so
        assert "has no checkpoint yet (the run stopped before its first); starting from step 0" in second.stderr
    assert f"RELIABILITY: killing while writing {ckpt_dir}/{save_step}.orbax-checkpoint-tmp" in second.stderr
    # killed mid-write: the step exists only as orbax's uncommitted tmp directory, and is not listed
    assert glob.glob(os.path.join(ckpt_dir, f"{save_step}.orbax-checkpoint-tmp*")), os.listdir(ckpt_dir)
    good = _steps(workdir)
    assert save_step not in good and good == [save_step - 6, save_step - 3]

    # and the latest committed checkpoint is damaged too (a bad disk): resume must fall back to the one before
    for path in glob.glob(os.path.join(ckpt_dir, str(good[-1]), "state", "**", "d", "*"), recursive=True):
        with open(path, "r+b") as f:
            f.truncate(max(os.path.getsize(path) // 2, 1))

    third = trainer.run(workdir, resume=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"checkpoint {ckpt_dir}/{good[-1]} is damaged" in third.stderr
    assert f"falling back to step {good[0]}" in third.stderr
    assert f"resumed from step {good[0]}" in third.stderr
    assert os.listdir(os.path.join(workdir, "corrupt-checkpoints"))     # kept aside, not deleted
    assert _steps(workdir)[-1] == TOTAL_STEPS
    _assert_bitwise_equal(_raw_state(workdir), reference)


def test_sigterm_saves_at_the_next_step_and_exits_with_how_to_resume(trainer, reference, tmp_path):
    rng = random.Random(SEED + 1)
    signal_after = rng.randint(4, 10)
    workdir = str(tmp_path / "run")
    proc = trainer.start(workdir, fault="slow:0.3")
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            steps = _logged_steps(workdir)
            if steps and max(steps) >= signal_after:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = json.loads(out)
    assert stopped["stopped"] and stopped["signal"] == "SIGTERM"
    stop_step = stopped["steps"]
    assert signal_after <= stop_step < TOTAL_STEPS
    assert f"stopped by SIGTERM at step {stop_step}; a checkpoint is saved. Resume with:" in err
    assert f"jaxsbert train {trainer.config_file} --workdir {workdir} --resume" in err
    assert "Traceback" not in err
    assert _steps(workdir)[-1] == stop_step                      # saved at the step boundary
    assert int(_raw_state(workdir)["step"]) == stop_step

    resumed = trainer.run(workdir, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stop_step}" in resumed.stderr
    _assert_bitwise_equal(_raw_state(workdir), reference)


def test_stop_signals_handler():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert not stop.requested and not stop.should_stop(0)
        os.kill(os.getpid(), signal.SIGINT)       # handled at the next bytecode boundary
        time.sleep(0.01)
        assert stop.requested and stop.name == "SIGINT" and stop.should_stop(3)
        with pytest.raises(KeyboardInterrupt):   # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# -------------------------------------------------------------------------------------------- lock

def test_workdir_lock_names_the_holder_and_dies_with_it(tiny_model, tmp_path):
    from jaxsbert.training.loop import train

    workdir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f'''
        import sys, time
        from jaxsbert.training.preemption import WorkdirLock
        lock = WorkdirLock({workdir!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    ''')], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLockedError, match=rf"workdir {re.escape(workdir)} is in use by another training "
                                                     rf"run \(pid {holder.pid} on host .*\).*choose another --workdir"):
            train(_config(tiny_model), workdir)
        assert not os.path.exists(os.path.join(workdir, "config.json"))      # nothing was written
    finally:
        holder.kill()              # SIGKILL: the kernel releases the lock with the process
        holder.wait()
    with WorkdirLock(workdir):
        with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):   # two runs in one process, too
            WorkdirLock(workdir).acquire()
    WorkdirLock(workdir).acquire().release()


# ----------------------------------------------------------------------------------- damaged checkpoints

def _small_state(scale: float):
    from jaxsbert.training.step import init_state

    tx = optax.adamw(1e-3)
    params = {"dense": {"kernel": jnp.arange(12.0).reshape(4, 3) * scale, "bias": jnp.full((3,), scale)}}
    return init_state(params, {}, tx, 0)


def _three_checkpoints(directory):
    ckpt = Checkpointer(directory, keep=5, async_save=True)
    for s in (1, 2, 3):
        ckpt.save(s, _small_state(s), {"data_position": {"epoch": 0, "index": s}})
    ckpt.close()


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, jaxsbert_log):
    directory = str(tmp_path / "checkpoints")
    _three_checkpoints(directory)
    for path in glob.glob(os.path.join(directory, "3", "state", "**", "d", "*"), recursive=True):
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF                     # a flipped byte
        open(path, "wb").write(bytes(data))
    ckpt = Checkpointer(directory, keep=5)
    state, meta = ckpt.restore(_small_state(0))
    assert meta["data_position"]["index"] == 2 and int(state["params"]["dense"]["bias"][0]) == 2
    assert any("checkpoint" in r.message and "/3 is damaged" in r.message and "falling back to step 2" in r.message
               for r in jaxsbert_log.records if r.levelno == logging.WARNING)
    # moved aside (kept for inspection); the step can be written again, the good ones are untouched
    assert ckpt.all_steps() == [1, 2] and len(os.listdir(tmp_path / "corrupt-checkpoints")) == 1
    ckpt.save(3, _small_state(30), {"data_position": {"epoch": 0, "index": 3}})
    ckpt.wait()
    with pytest.raises(FileExistsError, match="step 2 exists already; checkpoints are never overwritten"):
        ckpt.save(2, _small_state(99), {})
    assert int(ckpt.restore(_small_state(0), step=2)[0]["params"]["dense"]["bias"][0]) == 2
    ckpt.close()


def test_silently_wrong_checkpoint_is_caught_by_its_checksums(tmp_path, jaxsbert_log):
    directory = str(tmp_path / "checkpoints")
    _three_checkpoints(directory)
    # a checkpoint that reads back without error but holds other arrays (say, a torn copy of step 2)
    shutil.rmtree(os.path.join(directory, "3", "state"))
    shutil.copytree(os.path.join(directory, "2", "state"), os.path.join(directory, "3", "state"))
    ckpt = Checkpointer(directory, keep=5)
    with pytest.raises(CorruptCheckpointError, match=r"step 3: the arrays read back do not match their checksums "
                                                     r"\(.*params\.dense\.bias"):
        ckpt.restore(_small_state(0), step=3)            # an explicit step: no fallback
    state, meta = ckpt.restore(_small_state(0))
    assert meta["data_position"]["index"] == 2
    assert any("checksums" in r.message and "falling back to step 2" in r.message for r in jaxsbert_log.records)
    ckpt.close()


def test_every_checkpoint_damaged_is_an_error(tmp_path):
    directory = str(tmp_path / "checkpoints")
    _three_checkpoints(directory)
    for s in (1, 2, 3):
        os.remove(os.path.join(directory, str(s), "meta", "metadata"))
    ckpt = Checkpointer(directory, keep=5)
    with pytest.raises(CorruptCheckpointError, match=r"every checkpoint \(\[3, 2, 1\]\) is damaged"):
        ckpt.restore(_small_state(0))
    ckpt.close()


def test_non_finite_state_is_never_written(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    state = _small_state(1.0)
    state["params"]["dense"]["bias"] = state["params"]["dense"]["bias"].at[1].set(jnp.inf)
    with pytest.raises(FloatingPointError, match=r"not saving step 5: non-finite values in params\.dense\.bias"):
        ckpt.save(5, state, {})
    assert ckpt.all_steps() == []
    ckpt.close()


def test_digest_sees_any_changed_word():
    state = _small_state(1.0)
    base, _ = digest(state)
    changed = jax.tree_util.tree_map(lambda x: x, state)
    kernel = changed["params"]["dense"]["kernel"]
    changed["params"]["dense"]["kernel"] = kernel.at[2, 1].set(jnp.nextafter(kernel[2, 1], jnp.inf))
    after, _ = digest(changed)
    assert after["params.dense.kernel"] != base["params.dense.kernel"]
    assert {k: v for k, v in after.items() if k != "params.dense.kernel"} == \
        {k: v for k, v in base.items() if k != "params.dense.kernel"}
    swapped = dict(state, params={"dense": {"kernel": kernel[::-1], "bias": state["params"]["dense"]["bias"]}})
    assert digest(swapped)[0]["params.dense.kernel"] != base["params.dense.kernel"]


def test_digest_same_on_host_and_in_xla():
    """The numpy digest (CPU arrays) and the jitted one (accelerators, arrays split across processes) give
    the same checksums, so a checkpoint written through one path verifies through the other."""
    from jaxsbert.training.checkpoint import _digest
    rng = np.random.default_rng(3)
    state = {"f32": jnp.asarray(rng.normal(size=(37, 5)), jnp.float32),
             "bf16": jnp.asarray(rng.normal(size=(300,)), jnp.bfloat16),
             "i32": jnp.asarray(rng.integers(-2**31, 2**31 - 1, size=(4, 3, 2)), jnp.int32),
             "u8": jnp.asarray(rng.integers(0, 255, size=(9,)), jnp.uint8),
             "flag": jnp.asarray([True, False, True]), "scalar": jnp.float32(-3.5), "step": jnp.int32(7),
             "key": jax.random.key_data(jax.random.PRNGKey(5)),
             "nan": jnp.asarray([1.0, jnp.nan], jnp.float32), "big": jnp.asarray(rng.normal(size=70001), jnp.float32)}
    host, host_nonfinite = digest(state)
    names = sorted(host)
    flat = [state[n] for n in names]
    xla = {n: [int(v) for v in np.asarray(sums)] for n, (sums, _) in zip(names, _digest(flat))}
    assert host == xla
    assert host_nonfinite == ["nan"]


# --------------------------------------------------------------------------------------- non-finite steps

MARKER = 0.4242      # the score of the one row whose batch gets a NaN loss and NaN gradients


@pytest.fixture
def nan_row_data(tiny_model, tmp_path, monkeypatch):
    """48 demo rows (6 batches of 8 an epoch) as a file, one row with the marker score, chosen in batch 3 of
    epoch 0 and not in the first or last batch of epoch 1; CoSENTLoss gives a NaN loss and NaN gradients on a batch holding it.
    Returns (file, row, the steps whose batch holds the row)."""
    from jaxsbert.data import load_dataset
    from jaxsbert.losses import pairwise
    from jaxsbert.training.loop import prepare

    rows = [dict(r) for r in load_dataset({"source": "demo", "limit": 48})]
    assert not any(r["score"] == MARKER for r in rows)
    path = write_jsonl(str(tmp_path / "data" / "pairs.jsonl"), rows)
    loader = prepare(_config(tiny_model, data={"train": {"demo": path}})).loader   # the plan: seed, size, name
    epoch0, epoch1 = [[set(int(r) for r in rows_) for _, rows_ in loader.plan(e)] for e in (0, 1)]
    row = min(epoch0[2] - epoch1[0] - epoch1[-1])
    bad_steps = [3, 6 + 1 + next(i for i, batch in enumerate(epoch1) if row in batch)]
    rows[row]["score"] = MARKER
    write_jsonl(path, rows)
    original = pairwise.CoSENTLoss.compute

    def compute(self, head_params, embeddings, labels, mask):
        poisoned = jnp.any(mask & (labels == jnp.float32(MARKER)))
        return original(self, head_params, embeddings, labels, mask) * jnp.where(poisoned, jnp.nan, 1.0)

    monkeypatch.setattr(pairwise.CoSENTLoss, "compute", compute)
    return path, row, bad_steps


def test_nonfinite_skip_keeps_the_previous_values_and_counts(tiny_model, nan_row_data, tmp_path):
    from jaxsbert.training.loop import train

    path, row, bad_steps = nan_row_data
    workdir = str(tmp_path / "run")
    summary = train(_config(tiny_model, data={"train": {"demo": path}}, epochs=2, nonfinite="skip",
                            checkpoint={"every_steps": 1, "keep": 20}), workdir)
    assert summary["steps"] == 12 and int(summary["state"]["nonfinite"]) == 2     # the row, once an epoch
    assert summary["nonfinite_steps"] == 2
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["nonfinite"] for r in records] == [int(r["step"] >= bad_steps[0]) + int(r["step"] >= bad_steps[1])
                                                 for r in records]
    assert [r["loss"] is None for r in records] == [r["step"] in bad_steps for r in records]   # NaN logged as null
    states = _all_raw_states(workdir)
    assert sorted(states) == list(range(1, 13))
    for b in bad_steps:
        before, at, after = states[b - 1], states[b], states[b + 1]
        trained = [n for n in before if n.startswith(("params", "heads", "opt_state"))]
        assert all(np.array_equal(before[n], at[n]) for n in trained)          # the update was not applied
        assert int(at["step"]) == b and int(at["nonfinite"]) == int(before["nonfinite"]) + 1
        assert not np.array_equal(at["rng"], before["rng"])                     # the stream of steps goes on
        assert any(not np.array_equal(at[n], after[n]) for n in trained if n.startswith("params"))  # and trains
    for state in states.values():                    # nothing non-finite was ever written
        assert all(np.all(np.isfinite(v)) for v in state.values())


def test_nonfinite_stop_names_step_dataset_and_rows(tiny_model, nan_row_data, tmp_path):
    from jaxsbert.training.loop import train

    path, row, bad_steps = nan_row_data
    workdir = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=rf"non-finite loss or gradient at step 3 \(dataset 'demo' "
                                                 rf"\({re.escape(path)}\), epoch 0 batch 2, rows [\d, ]*\b{row}\b"
                                                 rf"[\d, ]*\); the update was skipped.*checkpoint of step 4 .* holds "
                                                 rf"the last finite parameters.*nonfinite='skip'"):
        train(_config(tiny_model, data={"train": {"demo": path}}, nonfinite="stop", log_every=2), workdir)
    assert _steps(workdir) == [4]           # saved at the log boundary that noticed it (every 2 steps)
    state = _raw_state(workdir)
    assert int(state["nonfinite"]) == 1 and all(np.all(np.isfinite(v)) for v in state.values())


def test_overflowing_update_is_skipped():
    """A learning rate so large that the update overflows to inf: the parameters keep their values, the
    step is counted, and the optimizer state (which took the finite gradients) stays finite."""
    from jaxsbert.losses import get_loss
    from jaxsbert.training.step import init_state, make_train_step

    def embed(params, features, rng):
        return features["x"] @ params["w"]

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)}
    batch = {"features": ({"x": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)},
                          {"x": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)}),
             "labels": jnp.asarray([0.1, 0.9, 0.5, 0.3]), "mask": jnp.ones(4, bool)}
    for make_tx, lr, applied in ((optax.sgd, 1e38, False), (optax.adam, 1e38, False), (optax.sgd, 1e-2, True),
                                 (optax.adam, 1e-2, True)):
        tx = make_tx(lr)
        step = jax.jit(make_train_step(embed, get_loss("CoSENTLoss"), "d", tx, lambda s: lr))
        state = init_state(params, {}, tx, 0)
        new, metrics = step(state, batch)
        assert bool(metrics["finite"]) is applied and np.isfinite(float(metrics["loss"]))
        assert int(new["nonfinite"]) == (0 if applied else 1) and int(new["step"]) == 1
        assert np.array_equal(new["params"]["w"], params["w"]) is not applied
        assert np.all(np.isfinite(new["params"]["w"]))
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new["opt_state"]))


# ---------------------------------------------------------------------- bad input, before compilation

@pytest.fixture(autouse=True)
def _no_compiling_in_validation(request, monkeypatch):
    """The bad-input tests (test_bad_*) must fail before any train step is built."""
    if request.node.name.startswith("test_bad_"):
        from jaxsbert.training import loop

        def refuse(*args, **kwargs):
            raise AssertionError("a train step was built although the input is bad")
        monkeypatch.setattr(loop, "make_train_step", refuse)


def _pairs_file(tmp_path, rows, name="pairs.jsonl"):
    return write_jsonl(str(tmp_path / "data" / name), rows)


def _pairs(n=24, **extra):
    return [{"sentence1": f"sentence number {i}", "sentence2": f"another sentence {i}", "score": (i % 5) / 5, **extra}
            for i in range(n)]


def _train(config, workdir, resume=False):
    from jaxsbert.training.loop import train
    return train(config, str(workdir), resume=resume)


def test_bad_missing_column(tiny_model, tmp_path):
    path = _pairs_file(tmp_path, _pairs())
    cfg = _config(tiny_model, data={"train": {"pairs": {"source": path, "columns": ["anchor", "sentence2"]}}})
    with pytest.raises(ValueError, match=r"pairs\.jsonl: missing column\(s\) \['anchor'\]; the dataset has columns "
                                         r"\['sentence1', 'sentence2', 'score'\]"):
        _train(cfg, tmp_path / "run")


def test_bad_number_of_columns_for_the_loss(tiny_model, tmp_path):
    path = _pairs_file(tmp_path, [{k: v for k, v in r.items() if k != "score"} for r in _pairs()])
    cfg = _config(tiny_model, data={"train": {"pairs": path}}, loss={"name": "TripletLoss"})
    with pytest.raises(ValueError, match=r"dataset 'pairs' \(.*pairs\.jsonl\): TripletLoss expects 3 input "
                                         r"column\(s\) \(anchor, positive, negative\).*got 2 input column"):
        _train(cfg, tmp_path / "run")


def test_bad_non_string_text(tiny_model, tmp_path):
    rows = _pairs()
    rows[5]["sentence2"] = 7                    # one number among strings
    cfg = _config(tiny_model, data={"train": {"pairs": _pairs_file(tmp_path, rows)}})
    with pytest.raises(ValueError, match=r"pairs\.jsonl:6: column 'sentence2' \(row 5\): 7 \(int\), expected a string"):
        _train(cfg, tmp_path / "run")


def test_bad_none_text(tiny_model, tmp_path):
    rows = _pairs()
    rows[9]["sentence1"] = None
    cfg = _config(tiny_model, data={"train": {"pairs": _pairs_file(tmp_path, rows)}})
    with pytest.raises(ValueError, match=r"pairs\.jsonl:10: column 'sentence1' \(row 9\): None, "
                                         r"expected a string"):
        _train(cfg, tmp_path / "run")


def test_bad_empty_dataset_file(tiny_model, tmp_path):
    path = tmp_path / "data" / "empty.jsonl"
    path.parent.mkdir()
    path.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl: the dataset file is empty"):
        _train(_config(tiny_model, data={"train": {"pairs": str(path)}}), tmp_path / "run")


def test_bad_empty_dataset_header_only_or_selected_away(tiny_model, tmp_path):
    path = tmp_path / "data" / "header.csv"
    path.parent.mkdir()
    path.write_text("sentence1,sentence2,score\n")
    with pytest.raises(ValueError, match=r"header\.csv: the dataset file has no rows"):
        _train(_config(tiny_model, data={"train": {"pairs": str(path)}}), tmp_path / "run")
    with pytest.raises(ValueError, match=r"dataset 'pairs' \(.*pairs\.jsonl\): the dataset is empty"):
        _train(_config(tiny_model, data={"train": {"pairs": {"source": _pairs_file(tmp_path, _pairs()), "limit": 0}}}),
               tmp_path / "run")


def test_bad_label_outside_num_labels(tiny_model, tmp_path):
    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "label": i % 3} for i in range(24)]
    rows[13]["label"] = 3
    cfg = _config(tiny_model, data={"train": {"nli": _pairs_file(tmp_path, rows, "nli.jsonl")}},
                  loss={"name": "SoftmaxLoss", "num_labels": 3})
    with pytest.raises(ValueError, match=r"nli\.jsonl:14: label column 'label' \(row 13\): SoftmaxLoss expects labels in \[0, 3\), "
                                         r"got values from 3 to 3 \(first outside at row 13: 3\); num_labels=3"):
        _train(cfg, tmp_path / "run")


def test_bad_negative_label(tiny_model, tmp_path):
    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "label": i % 3} for i in range(24)]
    rows[2]["label"] = -1
    cfg = _config(tiny_model, data={"train": {"nli": _pairs_file(tmp_path, rows, "nli.jsonl")}},
                  loss={"name": "SoftmaxLoss", "num_labels": 3})
    with pytest.raises(ValueError, match=r"nli\.jsonl:3: label column 'label' \(row 2\): SoftmaxLoss expects labels in \[0, 3\).*row 2: -1"):
        _train(cfg, tmp_path / "run")


def test_bad_nan_score(tiny_model, tmp_path):
    scores = [(i % 5) / 5 for i in range(24)]
    scores[17] = math.nan
    path = str(tmp_path / "nan.parquet")
    datasets.Dataset.from_dict({"sentence1": [f"a {i}" for i in range(24)], "sentence2": [f"b {i}" for i in range(24)],
                                "score": scores}).to_parquet(path)
    with pytest.raises(ValueError, match=r"dataset 'pairs' \(.*nan\.parquet\): label column 'score', row 17: nan is "
                                         r"not a finite number"):
        _train(_config(tiny_model, data={"train": {"pairs": path}}), tmp_path / "run")


def test_bad_missing_score_in_csv(tiny_model, tmp_path):
    path = tmp_path / "data" / "pairs.csv"
    path.parent.mkdir()
    path.write_text("sentence1,sentence2,score\n" + "".join(f"a {i},b {i},{0.5 if i != 4 else ''}\n" for i in range(24)))
    with pytest.raises(ValueError, match=r"pairs\.csv:6: label column 'score' \(row 4\): None, expected a number"):
        _train(_config(tiny_model, data={"train": {"pairs": str(path)}}), tmp_path / "run")


def test_bad_label_column_missing_for_the_loss(tiny_model, tmp_path):
    path = _pairs_file(tmp_path, [{"sentence1": f"a {i}", "sentence2": f"b {i}"} for i in range(24)])
    with pytest.raises(ValueError, match=r"dataset 'pairs' \(.*\): CoSENTLoss expects .*; the dataset has no label "
                                         r"column"):
        _train(_config(tiny_model, data={"train": {"pairs": path}}), tmp_path / "run")


def test_bad_batch_larger_than_dataset_with_drop_last(tiny_model, tmp_path):
    path = _pairs_file(tmp_path, _pairs(10))
    other = _pairs_file(tmp_path, _pairs(40), "big.jsonl")
    cfg = _config(tiny_model, data={"train": {"small": path, "big": other}, "drop_last": True}, batch_size=16)
    with pytest.raises(ValueError, match=r"dataset 'small' \(.*pairs\.jsonl\) has 10 rows, fewer than the batch size "
                                         r"16: with drop_last=True it gives no batch at all"):
        _train(cfg, tmp_path / "run")


def test_bad_unknown_dataset_spec_key(tiny_model, tmp_path):
    path = _pairs_file(tmp_path, _pairs())
    with pytest.raises(ValueError, match=r"dataset spec has unknown keys \['colums'\]"):
        _train(_config(tiny_model, data={"train": {"pairs": {"source": path, "colums": ["a"]}}}), tmp_path / "run")


def test_bad_dataset_file_not_found(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset file '.*nope\.jsonl' not found"):
        _train(_config(tiny_model, data={"train": {"pairs": str(tmp_path / "nope.jsonl")}}), tmp_path / "run")


def test_bad_unknown_config_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'checkpoint\.every_step'; did you mean "
                                          r"'checkpoint\.every_steps'"):
        build_config(base={"checkpoint": {"every_step": 10}})
    with pytest.raises(ConfigError, match=r"override 'nonfinte=stop': unknown config key 'nonfinte'; did you mean "
                                          r"'nonfinite'"):
        build_config("quickstart", ["nonfinte=stop"])


def test_bad_mistyped_config_values(tmp_path):
    with pytest.raises(ConfigError, match=r"quickstart: config key 'batch_size' must be an int \(like its default "
                                          r"32\), got 'abc' \(str\)"):
        build_config("quickstart", ["batch_size=abc"])
    with pytest.raises(ConfigError, match=r"config key 'optim\.lr' must be a number.*got '1e-3x'"):
        build_config(base={"optim": {"lr": "1e-3x"}})
    with pytest.raises(ConfigError, match=r"config key 'dropout' must be True or False.*got 'no' \(str\)"):
        build_config(base={"dropout": "no"})
    with pytest.raises(ConfigError, match=r"config key 'checkpoint' must be a dict, got 5"):
        build_config("quickstart", ["checkpoint=5"])
    with pytest.raises(ConfigError, match=r"config key 'nonfinite' must be one of \['skip', 'stop'\], got 'ignore'"):
        build_config(base={"nonfinite": "ignore"})
    assert build_config(base={"optim": {"lr": 1}, "max_seq_length": 64})["optim"]["lr"] == 1   # ints are numbers
    cfg = tmp_path / "cfg.py"
    cfg.write_text("def get_config():\n    return {'epochs': '3'}\n")
    from jaxsbert.cli import main
    with pytest.raises(SystemExit, match=r"error: .*cfg\.py: config key 'epochs' must be an int"):
        main(["train", str(cfg), "--workdir", str(tmp_path / "run")])


def test_bad_checkpoint_shapes_do_not_match_the_model(tiny_model, minilm_path, tmp_path):
    from jaxsbert.encoder import SentenceEncoder, Tokenizer
    from jaxsbert.interop.st_dir import init_params
    from jaxsbert.training.optimizer import make_optimizer
    from jaxsbert.training.step import init_state

    # a checkpoint of the tiny model ...
    cfg = _config(tiny_model)
    workdir = tmp_path / "run"
    tx, _ = make_optimizer(cfg["optim"], 10)
    params = SentenceEncoder.from_pretrained(tiny_model).params
    ckpt = Checkpointer(str(workdir / "checkpoints"), async_save=False)
    ckpt.save(4, init_state(params, {}, tx, 0), {"data_position": {"epoch": 0, "index": 4}, "step": 4})
    ckpt.close()
    # ... resumed with a model whose feed-forward layers are wider
    other = SentenceEncoder.from_pretrained(tiny_model)
    config = dataclasses.replace(other.config, transformer=dataclasses.replace(other.config.transformer,
                                                                               intermediate_size=48))
    wider = str(tmp_path / "wider")
    SentenceEncoder(config, init_params(config, 0), Tokenizer(minilm_path, 32)).save_pretrained(wider)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoints/4: the checkpoint does not match the model and "
                                                      r"losses being trained \(params\.transformer\.encoder\.layer_0\."
                                                      r"intermediate\.dense\.bias: checkpoint float32\[64\], model "
                                                      r"float32\[48\]; params\.transformer\.encoder\.layer_0\."
                                                      r"intermediate\.dense\.kernel: checkpoint float32\[32, 64\], "
                                                      r"model float32\[32, 48\];.* and 12 more\)"):
        _train(_config(wider), workdir, resume=True)


def test_bad_checkpoint_from_another_loss(tiny_model, tmp_path):
    """A run with SoftmaxLoss (a trainable head) resumed from a CoSENTLoss checkpoint (none)."""
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.training.optimizer import make_optimizer
    from jaxsbert.training.step import init_state

    cfg = _config(tiny_model)
    workdir = tmp_path / "run"
    tx, _ = make_optimizer(cfg["optim"], 10)
    ckpt = Checkpointer(str(workdir / "checkpoints"), async_save=False)
    ckpt.save(2, init_state(SentenceEncoder.from_pretrained(tiny_model).params, {}, tx, 0),
              {"data_position": {"epoch": 0, "index": 2}, "step": 2})
    ckpt.close()
    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "label": i % 3} for i in range(24)]
    nli = _config(tiny_model, data={"train": {"nli": _pairs_file(tmp_path, rows, "nli.jsonl")}},
                  loss={"name": "SoftmaxLoss", "num_labels": 3})
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: heads\.nli\.\w+"):
        _train(nli, workdir, resume=True)


def _broken_model(tiny_model, tmp_path, remove):
    path = str(tmp_path / "broken")
    shutil.copytree(tiny_model, path)
    os.remove(os.path.join(path, remove))
    return path


@pytest.mark.parametrize("remove, error, message", [
    ("model.safetensors", FileNotFoundError, r"broken/: no model weights; expected one of \['model\.safetensors'"),
    ("tokenizer.json", FileNotFoundError, r"broken/?: no tokenizer files; expected one of \['tokenizer\.json', "
                                          r"'vocab\.txt'"),
    ("config.json", FileNotFoundError, r"broken/config\.json: file not found"),
    ("1_Pooling/config.json", FileNotFoundError, r"broken/1_Pooling/config\.json: file not found"),
])
def test_bad_model_directory_missing_files(tiny_model, tmp_path, remove, error, message):
    with pytest.raises(error, match=message):
        _train(_config(_broken_model(tiny_model, tmp_path, remove)), tmp_path / "run")


def test_bad_model_directory_empty(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: neither modules\.json \(sentence-transformers\) nor "
                                                r"config\.json \(Hugging Face\) found"):
        _train(_config(str(tmp_path / "empty")), tmp_path / "run")


def test_bad_resume_without_any_checkpoint(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--resume: no checkpoint in .*run/checkpoints"):
        _train(_config(tiny_model), tmp_path / "run", resume=True)


def test_bad_fresh_run_into_a_workdir_with_checkpoints(tiny_model, tmp_path):
    ckpt = Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
    ckpt.save(3, _small_state(1.0), {"data_position": {"epoch": 0, "index": 3}})
    ckpt.close()
    with pytest.raises(FileExistsError, match=r"run holds the checkpoints of an earlier run \(steps \[3\]\); continue "
                                              r"it with --resume, or choose another --workdir"):
        _train(_config(tiny_model), tmp_path / "run")


def test_overlong_texts_are_truncated_and_counted(tiny_model, tmp_path, jaxsbert_log):
    from jaxsbert.training.loop import prepare

    rows = _pairs(16)
    rows[3]["sentence1"] = " ".join(["hello"] * 30)     # [CLS] + 30 + [SEP] = 32 tokens: fits max_seq_length 32
    rows[4]["sentence1"] = " ".join(["hello"] * 31)     # 33 tokens: cut
    rows[7]["sentence1"] = "word " * 200
    rows[8]["sentence2"] = "another long sentence " * 40
    rows[11]["sentence1"] = rows[4]["sentence1"]        # a repeated text counts per row
    run = prepare(_config(tiny_model, max_seq_length=None, data={"train": {"pairs": _pairs_file(tmp_path, rows)}}))
    warnings = [r.getMessage() for r in jaxsbert_log.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1
    assert re.search(r"dataset 'pairs' \(.*pairs\.jsonl\): 4 text\(s\) longer than max_seq_length=32 tokens were "
                     r"truncated \(by column: \{'sentence1': 3, 'sentence2': 1\}\)", warnings[0]), warnings[0]
    # the file is read per batch: its sentences' lengths, from the packed batches' segments
    lengths = [int(np.bincount(row[row > 0]).max()) for item in run.loader.iterate(epochs=1)
               for row in item.batch["features"]["attention_mask"] if (row > 0).any()]
    assert max(lengths) == 32 and lengths.count(32) >= 5      # rows 3, 4, 7, 8 and 11 hold 32 tokens


# ------------------------------------------------------------------------------------------------ soak

@pytest.mark.soak
def test_soak_random_sigterms_end_with_the_same_parameters(tmp_path):
    """benchmarks/soak.py: the quickstart (all-MiniLM-L6-v2) for SOAK_STEPS steps (2,000) with a SIGTERM
    every SOAK_MIN_INTERVAL..SOAK_MAX_INTERVAL (100..300) steps, resumed each time, against one run."""
    spec = importlib.util.spec_from_file_location("soak", os.path.join(REPO, "benchmarks", "soak.py"))
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    report = soak.run_soak(steps=int(os.environ.get("SOAK_STEPS", "2000")),
                           min_interval=int(os.environ.get("SOAK_MIN_INTERVAL", "100")),
                           max_interval=int(os.environ.get("SOAK_MAX_INTERVAL", "300")),
                           seed=SEED, root=str(tmp_path))
    assert not report["source_changed"], "the working tree changed during the soak: run it again"
    assert report["interruptions"] >= 1
    assert report["identical"], report
