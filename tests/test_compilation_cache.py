"""jaxsbert.compilation_cache: where the persistent XLA cache goes, and that a second run of the same
config loads its train steps from it instead of compiling them, with the same result."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxsbert.compilation_cache import ENV, default_dir, resolve
from helpers import save_tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolve(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert resolve("auto") == resolve(True) == default_dir() == str(tmp_path / "jaxsbert" / "xla")
    assert resolve(None) is None and resolve(False) is None
    assert all(resolve(off) is None for off in ("0", "off", "False", "none", "", " "))   # as the env var reads them
    assert resolve(str(tmp_path / "c")) == str(tmp_path / "c")
    for off in ("0", "off", ""):
        monkeypatch.setenv(ENV, off)
        assert resolve("auto") is None
    monkeypatch.setenv(ENV, str(tmp_path / "env"))
    assert resolve("auto") == str(tmp_path / "env")
    assert resolve(str(tmp_path / "c")) == str(tmp_path / "c")     # an explicit path wins over the env
    with pytest.raises(ValueError, match="compilation_cache must be 'auto', a directory or None; got 3"):
        resolve(3)


RUN = """
import json, sys, jax
events = {}
jax.monitoring.register_event_listener(lambda e, **k: events.__setitem__(e, events.get(e, 0) + 1))
from jaxsbert.cli import main
main(["train", sys.argv[1], "--workdir", sys.argv[2], "-o", "compilation_cache=" + repr(sys.argv[3])])
print("EVENTS " + json.dumps(events))
"""


def test_second_run_loads_its_train_step_from_the_cache(tmp_path, minilm_path):
    model = save_tiny_model(str(tmp_path / "model"), minilm_path)
    cfg = tmp_path / "cfg.py"
    cfg.write_text("def get_config():\n    return " + repr({
        "model": model, "data": {"train": {"demo": {"source": "demo", "limit": 48}}},
        "loss": {"name": "CoSENTLoss"}, "batch_size": 16, "log_every": 1, "tensorboard": False, "eval_before": False,
        "save_model": False, "checkpoint": {"every_steps": 0, "keep": 1, "async": False}}) + "\n")
    cache = tmp_path / "cache"
    env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=REPO)
    runs = []
    for name in ("first", "second"):
        out = subprocess.run([sys.executable, "-c", RUN, str(cfg), str(tmp_path / name), str(cache)],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        events = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("EVENTS "))[7:])
        losses = [json.loads(l)["loss"] for l in open(tmp_path / name / "metrics.jsonl") if '"train"' in l]
        runs.append((events, losses))
    (first, first_losses), (second, second_losses) = runs
    assert first.get("/jax/compilation_cache/cache_misses", 0) > 0 and "/jax/compilation_cache/cache_hits" not in first
    assert len(os.listdir(cache)) > 0
    assert second.get("/jax/compilation_cache/cache_hits", 0) >= 1        # the train step, at least
    assert second.get("/jax/compilation_cache/cache_misses", 0) < first["/jax/compilation_cache/cache_misses"]
    assert len(first_losses) == 3 and np.array_equal(first_losses, second_losses)
