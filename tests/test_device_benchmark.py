"""benchmarks/device.py: the smoke run prints and writes the whole table, without `datasets` installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# runs benchmarks.device as `python -m` would, with `datasets` looking uninstalled (no module spec, no
# distribution), as on the GPU machine; fails if anything imported it anyway
HIDE_DATASETS = r'''
import importlib.metadata as md, runpy, sys

class Hide:
    def __init__(self, finders):
        self.finders = finders
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "datasets":
            return None
        for f in self.finders:
            spec = f.find_spec(name, path, target) if hasattr(f, "find_spec") else None
            if spec is not None:
                return spec
    def find_distributions(self, context=md.DistributionFinder.Context()):
        if (context.name or "").lower() == "datasets":
            return
        for f in self.finders:
            for d in (f.find_distributions(context) if hasattr(f, "find_distributions") else ()):
                if (d.metadata["Name"] or "").lower() != "datasets":
                    yield d
    def invalidate_caches(self):
        for f in self.finders:
            getattr(f, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [Hide(list(sys.meta_path))]
'''
RUN_DEVICE = HIDE_DATASETS + '''
sys.argv = ["benchmarks.device"] + sys.argv[1:]
try:
    runpy.run_module("benchmarks.device", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
assert "datasets" not in sys.modules, "something imported datasets"
'''

NUMERIC = ("jaxsbert", "ST", "jaxsbert/ST", "compile s jaxsbert", "compile s ST", "GFLOP/step", "MFU jaxsbert", "MFU ST")


def parse_table(text: str) -> list[dict]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header) == device.COLUMNS, header
    return [dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in lines[2:]]


@pytest.mark.slow
def test_smoke_run_prints_and_writes_the_full_table(tmp_path):
    out = tmp_path / "device.md"
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")   # torch's threads spin on a busy 2-core machine
    proc = subprocess.run([sys.executable, "-c", RUN_DEVICE, "--smoke", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    table = out.read_text()
    assert table.strip().splitlines()[-1] in proc.stdout          # printed too
    rows = parse_table(table)
    assert [(r["model"], r["case"]) for r in rows] == [(m, c) for m in device.SHAPES for c in device.CASES]
    for r in rows:
        for column in NUMERIC:
            float(r[column].rstrip("%"))                        # every cell measured: a number
        for column in ("peak MiB jaxsbert", "peak MiB ST"):
            assert r[column] == "n/a" or float(r[column]) > 0   # CPU: no device memory statistics
        assert r["unit"] == ("sentences/s" if r["case"] == "encode" else "pairs/s")
    assert "device: cpu" in table and "MFU peak: measured" in table
    records = [json.loads(l) for l in open(str(out) + ".jsonl")]
    assert len(records) == len(device.SHAPES) * len(device.CASES) * len(device.FRAMEWORKS)
    assert all(isinstance(r["result"], dict) for r in records), [r["result"] for r in records]
    # the two frameworks train the same model on the same pairs: the losses agree roughly (dropout differs)
    for model in device.SHAPES:
        losses = {r["framework"]: r["result"]["loss"] for r in records if r["model"] == model and r["case"] == "mnrl"}
        assert abs(losses["jaxsbert"] - losses["sentence-transformers"]) < 0.5, losses


def test_the_benchmarks_jaxsbert_modules_import_without_datasets():
    """The GPU machine has no `datasets`: what benchmarks/device.py imports of jaxsbert must not need it."""
    code = HIDE_DATASETS + (
        "import jaxsbert.encoder, jaxsbert.losses, jaxsbert.training.step, jaxsbert.training.optimizer, "
        "jaxsbert.interop.st_dir, jaxsbert.interop.export, jaxsbert.config, jaxsbert.data.pack_shapes\n"
        "from jaxsbert.data.buckets import bucket_for\n"
        "assert 'datasets' not in sys.modules\n"
        "try:\n    import datasets\nexcept ModuleNotFoundError:\n    print('hidden')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0 and proc.stdout.strip() == "hidden", proc.stderr[-3000:]


def test_synthetic_sentences_follow_stsb_lengths_one_token_per_word(tmp_path):
    from transformers import AutoTokenizer

    lengths = device.synthetic_lengths(20000, 0)
    counts = device.STSB_TOKEN_LENGTHS
    mean = sum(k * v for k, v in counts.items()) / sum(counts.values())
    assert abs(lengths.mean() - mean) < 0.2 and lengths.min() >= min(counts) and lengths.max() <= max(counts)
    tokenizer = AutoTokenizer.from_pretrained(device.write_tokenizer(str(tmp_path / "tok"), 500))
    sentences = device.synthetic_sentences(50, 3, 500)
    ids = tokenizer(sentences)["input_ids"]
    assert [len(i) for i in ids] == device.synthetic_lengths(50, 3).tolist()
    assert all(i[0] == 101 and i[-1] == 102 and min(i[1:-1]) >= device.FIRST_WORD and 100 not in i for i in ids)


def test_table_marks_what_is_missing():
    result = {"batch": 8, "unit": "pairs/s", "per_s": 100.0, "unit_s": 0.08, "compile_s": 2.0, "flops": 4e9,
              "peak_flops": 1e12, "peak_bytes": 2 ** 21}
    results = {("minilm-l6", "mnrl", "jaxsbert"): result,
               ("minilm-l6", "mnrl", "sentence-transformers"): dict(result, per_s=50.0, unit_s=0.16, peak_bytes=None),
               ("minilm-l6", "cmnrl", "jaxsbert"): "failed (oom)", ("minilm-l6", "cmnrl", "sentence-transformers"):
               "skipped (time)"}
    rows = device.table_rows(["minilm-l6"], ["mnrl", "cmnrl", "encode"], results)
    assert rows[0][4:] == ["100.0", "50.0", "2.00", "2.0", "2.0", "2", "n/a", "4", "5.0%", "2.5%"]
    assert rows[1][4:6] == ["failed (oom)", "skipped (time)"] and rows[1][-2:] == ["failed (oom)", "skipped (time)"]
    assert rows[2][4:] == ["n/a"] * 10 and rows[2][3] == "sentences/s"
    assert np.isclose(float(rows[0][-2].rstrip("%")), 100 * 4e9 / 0.08 / 1e12)
