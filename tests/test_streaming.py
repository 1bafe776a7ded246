"""The streaming input pipeline: line-indexed file sources, per-batch tokenization equal to the
tokenize-whole path, index-based order at scale, GROUP_BY_LABEL, bad rows met mid-stream, and exact
resume after kill -9 with every sampler and a multi-dataset proportional run."""
from __future__ import annotations

import json
import os
import random
import signal

import datasets
import numpy as np
import pytest

from jaxsbert.data import BadRowError, DataLoader, LineSource, open_source
from jaxsbert.data import samplers
from jaxsbert.data.samplers import GroupByLabelBatches, Permutation
from helpers import save_tiny_model, write_jsonl
from test_data import WordTokenizer
from test_reliability import Trainer, _assert_bitwise_equal, _logged_steps, _raw_state, _steps

WORDS = "man woman dog cat plays eats rides guitar horse street park red small happy old".split()


def _rows(n, seed=0, label=None):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        row = {"anchor": " ".join(rng.choice(WORDS, int(rng.integers(2, 12)))),
               "positive": f"sentence {i} " + " ".join(rng.choice(WORDS, int(rng.integers(1, 8))))}
        if label == "class":
            row["label"] = int(i % 5)
        elif label == "score":
            row["score"] = float(rng.uniform())
        out.append(row)
    return out


def same_batch(a, b):
    import jax

    assert a.dataset == b.dataset and a.position == b.position
    xs, ys = jax.tree_util.tree_leaves(a.batch), jax.tree_util.tree_leaves(b.batch)
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _shards(directory, rows, shards):
    paths = []
    for s in range(shards):
        paths.append(write_jsonl(os.path.join(directory, f"part-{s:03d}.jsonl"), rows[s::shards]))
    return paths


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSBERT_INDEX_CACHE", str(tmp_path / "line-index"))


# ------------------------------------------------------------------ sources

def test_line_sources_read_rows_of_jsonl_csv_tsv_shards_and_globs(tmp_path):
    rows = _rows(50, label="score")
    paths = _shards(str(tmp_path / "j"), rows, 3)
    with open(paths[1], "a") as f:                    # blank lines are not rows
        f.write("\n\r\n\n")
    src = open_source(str(tmp_path / "j" / "part-*.jsonl"))
    assert isinstance(src, LineSource) and len(src) == 50
    assert src.columns.inputs == ("anchor", "positive") and src.columns.label == "score"
    order = [r for s in range(3) for r in rows[s::3]]         # file order
    got = src.read(np.asarray([0, 17, 49, 3]))
    assert got.texts[0] == [order[i]["anchor"] for i in (0, 17, 49, 3)]
    np.testing.assert_allclose(got.labels, [order[i]["score"] for i in (0, 17, 49, 3)], rtol=1e-6)
    assert src.where_row(17) == f"{paths[1]}:1"                 # 17 rows in part-000
    assert src.rows_read == 4
    # the index is cached and read back (memory-mapped) for an unchanged file
    assert len(os.listdir(tmp_path / "line-index")) == 3
    assert len(open_source([paths[0], paths[2]], on_bad_row="skip")) == 17 + 16
    # spec options: rename, columns, limit
    src = open_source({"source": paths, "rename": {"anchor": "a"}, "columns": ["positive", "a"], "limit": 7})
    assert len(src) == 7 and src.columns.inputs == ("positive", "a") and src.columns.label is None
    assert src.read(np.asarray([0])).texts == [[order[0]["positive"]], [order[0]["anchor"]]]
    # csv (quoted fields) and tsv with a header
    with open(tmp_path / "p.csv", "w") as f:
        f.write('sentence1,sentence2,label\n"a, quoted one",b,1\nc,d,0\n')
    with open(tmp_path / "p.tsv", "w") as f:
        f.write("sentence1\tsentence2\tscore\nx y\tz\t0.5\n")
    csv_src, tsv_src = open_source(str(tmp_path / "p.csv")), open_source(str(tmp_path / "p.tsv"))
    got = csv_src.read(np.asarray([0, 1]))
    assert got.texts == [["a, quoted one", "c"], ["b", "d"]] and got.labels.dtype == np.int32
    assert got.labels.tolist() == [1, 0] and csv_src.where_row(1) == f"{tmp_path / 'p.csv'}:3"
    assert tsv_src.read(np.asarray([0])).labels.tolist() == [0.5]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        open_source(str(tmp_path / "nothing-*.jsonl"))


@pytest.mark.parametrize("packing", [False, True])
def test_per_batch_tokenization_gives_the_batches_of_the_tokenize_whole_path(tmp_path, packing):
    rows = _rows(203, label="score")
    paths = _shards(str(tmp_path), rows, 2)
    order = [r for s in range(2) for r in rows[s::2]]
    ds = datasets.Dataset.from_list(order)
    tok = WordTokenizer(max_seq_length=64)
    kw = dict(batch_size=16, seed=3, packing=packing, pack_length=32, max_segments=8)
    whole = DataLoader(ds, tok, **kw)                                    # tokenized up front
    assert "train" in whole.data
    lazy_arrow = DataLoader(ds, tok, eager_rows=0, **kw)                 # the same Dataset, per batch
    lazy_files = DataLoader(open_source(paths), tok, prefetch=2, **kw)   # the files, per batch
    assert not lazy_arrow.data and not lazy_files.data and lazy_files.token_ids() is None
    assert lazy_files.pack_shapes == whole.pack_shapes and lazy_files.pack_rows == whole.pack_rows
    reference = list(whole.iterate(epochs=2))
    for loader in (lazy_arrow, lazy_files):
        got = list(loader.iterate(epochs=2))
        assert len(got) == len(reference) == 26
        for x, y in zip(got, reference):
            same_batch(x, y)
    # the files' rows were each read once an epoch (the first batches' sample is kept, not read again)
    assert lazy_files.rows_read() == {"train": 2 * 203}


def test_a_batch_that_does_not_fit_the_sampled_shapes_gets_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr("jaxsbert.data.loader.SHAPE_SAMPLE", 2)    # shapes from the first 2 batches only
    rows = _rows(64)
    rows[60]["anchor"] = " ".join(["guitar"] * 40)                # longer than the sampled rows
    paths = _shards(str(tmp_path), rows, 1)
    loader = DataLoader(open_source(paths), WordTokenizer(max_seq_length=64), batch_size=8, seed=0, packing=True)
    assert loader.pack_shapes["train"][1] < 42
    items = list(loader)
    shapes = {it.batch["features"]["input_ids"].shape for it in items}
    assert (16, 64) in shapes                      # the fallback: a row per sentence, the largest bucket
    assert len(shapes) <= 3                        # at most 2 sampled counts + the fallback
    segments = [it.batch["features"]["attention_mask"] for it in items if (16, 64) == it.batch["features"]["input_ids"].shape]
    longest = max(int(np.bincount(row[row > 0]).max()) for seg in segments for row in seg if (row > 0).any())
    assert longest == 42                           # the 40-word sentence and its two special tokens


# ------------------------------------------------------------------ order

def test_index_shuffle_at_scale_is_a_lazy_permutation_per_epoch(monkeypatch):
    monkeypatch.setattr(samplers, "MATERIALIZE_MAX", 100)
    perm = Permutation(1000, seed=5, stream=1)
    assert perm._grain is not None and not perm._cache
    e0, e1 = perm.take(0, np.arange(1000)), perm.take(1, np.arange(1000))
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(1000))
    assert e0.tolist() != e1.tolist() and e0.tolist() != list(range(1000))
    again = Permutation(1000, seed=5, stream=1)
    assert again.take(1, np.asarray([7, 3])).tolist() == [e1[7], e1[3]]
    assert Permutation(1000, seed=6, stream=1).take(0, np.arange(10)).tolist() != e0[:10].tolist()


def test_group_by_label_batches():
    labels = np.asarray([0] * 30 + [1] * 9 + [2] * 14 + [3] * 1 + [4] * 6)
    order = GroupByLabelBatches(labels, 8, seed=1)
    batches = [order.rows(0, k) for k in range(order.count(0))]
    assert all(len(b) == 8 for b in batches[:-1]) and len(batches[-1]) >= 4
    for b in batches:
        _, counts = np.unique(labels[b], return_counts=True)
        assert len(counts) >= 2 and counts.min() >= 2           # every label it holds, at least twice
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == len(flat) and 53 not in flat      # the single label-3 row never comes
    assert [b.tolist() for b in batches] == [GroupByLabelBatches(labels, 8, 1).rows(0, k).tolist()
                                             for k in range(order.count(0))]
    assert order.rows(1, 0).tolist() != batches[0].tolist()
    with pytest.raises(ValueError, match="even batch size"):
        GroupByLabelBatches(labels, 7, 0)


# ------------------------------------------------------------------ bad rows

def _with_bad_line(directory, bad: str, row: int, n: int = 400):
    """``n`` pairs in 2 shards (rows in file order: shard 0, then shard 1); source row ``row`` replaced by
    ``bad``. Returns the paths and the file:line of that row."""
    rows = _rows(n, label="score")
    paths = _shards(str(directory), rows, 2)
    first = len(rows[0::2])
    path, line = (paths[0], row + 1) if row < first else (paths[1], row - first + 1)
    lines = open(path).read().splitlines()
    lines[line - 1] = bad
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return paths, f"{path}:{line}"


@pytest.mark.parametrize("bad, why", [
    ('{"anchor": "a", "positive": "b", "score": 0.1', r"not valid JSON"),
    ('{"anchor": "a", "score": 0.1}', r"column 'positive' \(row 350\) is missing"),
    ('{"anchor": "  ", "positive": "b", "score": 0.1}', r"column 'anchor' \(row 350\): an empty text"),
    ('{"anchor": "a", "positive": "b", "score": "high"}', r"label column 'score' \(row 350\): 'high' is not a number"),
])
def test_a_bad_row_names_file_and_line_or_is_skipped(tmp_path, bad, why, monkeypatch):
    paths, where = _with_bad_line(tmp_path, bad, row=350)
    assert where == f"{paths[1]}:151"
    # among the first batches (read up front): an error before anything else
    with pytest.raises(BadRowError, match=rf"^{where}: {why}"):
        DataLoader(open_source(paths), WordTokenizer(), batch_size=16, seed=0)
    # further on: an error when its batch comes
    monkeypatch.setattr("jaxsbert.data.loader.SHAPE_SAMPLE", 2)
    loader = DataLoader(open_source(paths), WordTokenizer(), batch_size=16, seed=0, prefetch=2)
    with pytest.raises(BadRowError, match=rf"^{where}: {why}"):
        list(loader)
    skipping = DataLoader(open_source(paths, on_bad_row="skip"), WordTokenizer(), batch_size=16, seed=0)
    items = list(skipping)
    assert skipping.bad_rows() == 1 and sum(it.skipped for it in items) == 1
    assert sum(int(it.batch["mask"].sum()) for it in items) == 399


# ------------------------------------------------------------------ training: kill -9 and bad rows

@pytest.fixture(scope="module")
def stream_model(tmp_path_factory, minilm_path):
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), minilm_path)


@pytest.fixture(scope="module")
def stream_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-data")
    pairs = _rows(90)
    for i in range(0, 90, 9):                      # repeated anchors: no_duplicates has work to do
        pairs[i]["anchor"] = pairs[0]["anchor"]
    return {"pairs": _shards(str(root / "pairs"), pairs, 3),
            "labelled": _shards(str(root / "labelled"), _rows(60, seed=1, label="class"), 2),
            "scored": _shards(str(root / "scored"), _rows(50, seed=2, label="score"), 2)}


def _stream_config(model, data):
    return {
        "name": "streaming", "model": model, "max_seq_length": 32, "seed": 3,
        "data": {"train": {"pairs": {"source": data["pairs"]}, "labelled": {"source": data["labelled"], "columns": ["anchor", "label"]},
                           "scored": {"source": data["scored"]}},
                 "eval": {}, "multi_dataset_sampler": "proportional",
                 "batch_sampler": {"pairs": "no_duplicates", "labelled": "group_by_label", "scored": "batch_sampler"}},
        "loss": {"pairs": {"name": "MultipleNegativesRankingLoss"}, "labelled": {"name": "BatchAllTripletLoss"},
                 "scored": {"name": "CoSENTLoss"}},
        "batch_size": 16, "epochs": 2, "optim": {"lr": 1e-3, "warmup_ratio": 0.2},
        "log_every": 1, "eval_before": False, "save_model": False, "tensorboard": False,
        "checkpoint": {"every_steps": 3, "keep": 2, "async": True},
    }


@pytest.mark.slow
def test_streaming_runs_resume_bitwise_after_kill_with_every_sampler(stream_model, stream_data, tmp_path):
    from jaxsbert.data.samplers import BATCH_SAMPLERS

    config = _stream_config(stream_model, stream_data)
    assert set(config["data"]["batch_sampler"].values()) == set(BATCH_SAMPLERS)
    trainer = Trainer(str(tmp_path / "cli"), config)
    done = trainer.run(str(tmp_path / "reference"))
    assert done.returncode == 0, done.stderr[-3000:]
    total = _steps(str(tmp_path / "reference"))[-1]
    assert total == 2 * (6 + 4 + 4)        # per epoch: ceil(90/16) + 60 labelled rows in batches of 16 + ceil(50/16)
    reference = _raw_state(str(tmp_path / "reference"))
    kill = random.Random(os.environ.get("RELIABILITY_SEED", "20240607")).randint(4, total - 2)
    workdir = str(tmp_path / "killed")
    first = trainer.run(workdir, fault=f"kill_after_step:{kill}")
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert _logged_steps(workdir)[-1] == kill
    second = trainer.run(workdir, resume=True)
    assert second.returncode == 0, second.stderr[-3000:]
    _assert_bitwise_equal(_raw_state(workdir), reference)


@pytest.mark.slow
def test_bad_row_mid_run_keeps_the_checkpoint_and_skip_completes(stream_model, tmp_path):
    from jaxsbert.data.samplers import PlainBatches, stream_id

    # batch 32: the first 256 batches (8192 rows) are read up front; the bad row is in batch 266 of 276
    n, batch = 276 * 32, 32
    row = int(PlainBatches(n, batch, 0, stream=stream_id("pairs")).rows(0, 266)[5])
    paths, where = _with_bad_line(tmp_path / "data", '{"anchor": "a", "positive": 3}', row=row, n=n)
    config = {
        "name": "bad-row", "model": stream_model, "max_seq_length": 32, "seed": 0,
        "data": {"train": {"pairs": {"source": paths, "columns": ["anchor", "positive"]}}, "eval": {}},
        "loss": {"name": "MultipleNegativesRankingLoss"}, "batch_size": batch, "epochs": 1,
        "log_every": 1, "eval_before": False, "save_model": False, "tensorboard": False,
        "checkpoint": {"every_steps": 100, "keep": 2, "async": True},
    }
    trainer = Trainer(str(tmp_path / "cli"), config)
    workdir = str(tmp_path / "run")
    failed = trainer.run(workdir)
    assert failed.returncode == 2         # a user error (jaxsbert.cli)
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {where}: column 'positive' (row {row}): 3 (int), expected a string."), last
    assert "--resume" in last and "Traceback" not in failed.stderr
    assert _logged_steps(workdir)[-1] == 266
    assert _steps(workdir) == [200, 266]          # the last good step's checkpoint is committed
    # skip it: --resume with on_bad_row="skip" completes, counting the row
    skip = dict(config, data={**config["data"], "on_bad_row": "skip"})
    resumed = Trainer(str(tmp_path / "cli-skip"), skip).run(workdir, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    assert summary["steps"] == 276 and summary["bad_rows"] == 1
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r.get("bad_rows") for r in records if r.get("step") == 276] == [1]
