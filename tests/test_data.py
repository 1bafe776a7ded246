"""jaxsbert.data: loading, column convention, validation, static batches, samplers, resume, multi-host, demo."""
import json
import math

import datasets
import numpy as np
import pytest

from jaxsbert import data
from jaxsbert.data import DataLoader, Position, load_dataset, validate_dataset
from jaxsbert.data.samplers import NoDuplicateBatches, stream_id


class WordTokenizer:
    """A tiny deterministic tokenizer: [CLS]=1, a stable id per lower-cased word, [SEP]=2; truncates."""
    pad_token_id = 0

    def __init__(self, max_seq_length=64):
        self.max_seq_length = max_seq_length
        self.vocab = {}

    def __call__(self, texts):
        out = []
        for t in texts:
            ids = [self.vocab.setdefault(w, len(self.vocab) + 3) for w in t.strip().lower().split()]
            out.append(([1] + ids)[: self.max_seq_length - 1] + [2])
        return out


def pairs(n, seed=0, label=True, max_words=40):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(50)]
    cols = {"sentence1": [" ".join(rng.choice(words, rng.integers(1, max_words))) for _ in range(n)],
            "sentence2": [" ".join(rng.choice(words, rng.integers(1, max_words))) for _ in range(n)]}
    if label:
        cols["score"] = rng.random(n).tolist()
    return datasets.Dataset.from_dict(cols)


def all_batches(loader, epochs=1, **kw):
    return list(loader.iterate(epochs=epochs, **kw))


def same_batch(a, b):
    assert a.dataset == b.dataset
    for fa, fb in zip(a.batch["features"], b.batch["features"]):
        np.testing.assert_array_equal(fa["input_ids"], fb["input_ids"])
        np.testing.assert_array_equal(fa["attention_mask"], fb["attention_mask"])
    np.testing.assert_array_equal(a.batch["labels"], b.batch["labels"])
    np.testing.assert_array_equal(a.batch["mask"], b.batch["mask"])


# ------------------------------------------------------------------ named readers

@pytest.mark.parametrize("split,rows", [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_stsb_reader(shared_data, split, rows):
    ds = load_dataset({"source": "stsb", "split": split}, data_root=shared_data)
    assert len(ds) == rows
    assert ds.column_names == ["sentence1", "sentence2", "score"]
    scores = np.asarray(ds["score"])
    assert scores.min() >= 0 and scores.max() <= 1 and scores.max() > 0.99
    assert str(shared_data) in data.dataset_source(ds)


def test_stsb_score_divisor_and_content(shared_data, stsb_test):
    s1, s2, raw = stsb_test
    ds = load_dataset({"source": "stsb", "split": "test", "score_divisor": 1.0}, data_root=shared_data)
    assert list(ds["sentence1"]) == s1 and list(ds["sentence2"]) == s2
    np.testing.assert_allclose(ds["score"], raw)
    scaled = load_dataset({"source": "stsb", "split": "test"}, data_root=shared_data)
    np.testing.assert_allclose(scaled["score"], np.asarray(raw) / 5)


def test_stsb_reader_ignores_quotes_and_extra_columns(tmp_path):
    (tmp_path / "stsbenchmark").mkdir()
    lines = ['main\tf\t2012\t1\t5.0\tA "quoted start.\tAnother sentence.\textra\tcols',
             'main\tf\t2012\t2\t2.5\tPlain one.\tEnds with quote"',
             'main\tf\t2012\t3\t0.0\tThird.\tFourth.']
    (tmp_path / "stsbenchmark" / "sts-dev.csv").write_text("\n".join(lines) + "\n", encoding="utf8")
    ds = load_dataset("stsb", split="dev", data_root=tmp_path)
    assert len(ds) == 3
    assert ds[0] == {"sentence1": 'A "quoted start.', "sentence2": "Another sentence.", "score": 1.0}
    assert ds[1]["sentence2"] == 'Ends with quote"' and ds[1]["score"] == 0.5


@pytest.mark.parametrize("split,rows", [("train", 4439), ("trial", 495), ("dev", 495), ("test", 4906)])
def test_sick_nli_reader(shared_data, split, rows):
    ds = load_dataset({"source": "sick", "split": split, "data_root": shared_data})
    assert len(ds) == rows
    assert ds.column_names == ["premise", "hypothesis", "label"]
    labels = np.asarray(ds["label"])
    assert set(labels.tolist()) == {0, 1, 2}
    assert ds.features["label"].names == ["entailment", "neutral", "contradiction"]


def test_sick_relatedness_reader(shared_data):
    ds = load_dataset({"source": "sick", "split": "train", "task": "relatedness", "data_root": shared_data})
    assert len(ds) == 4439 and ds.column_names == ["sentence1", "sentence2", "score"]
    # pair 1 of SICK.txt: NEUTRAL, relatedness 4.5
    assert ds[0]["score"] == pytest.approx(4.5 / 5)
    nli = load_dataset({"source": "sick-nli", "split": "train", "data_root": shared_data})
    assert nli[0]["label"] == 1 and nli[0]["premise"] == ds[0]["sentence1"]


# ------------------------------------------------------------------ files, hub, spec options

def test_load_files_by_extension(tmp_path):
    rows = [{"sentence1": 'He said "hi', "sentence2": "b", "score": 0.5}, {"sentence1": "c", "sentence2": "d", "score": 1.0}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    (tmp_path / "p.tsv").write_text("sentence1\tsentence2\tscore\n" +
                                    "".join(f"{r['sentence1']}\t{r['sentence2']}\t{r['score']}\n" for r in rows))
    (tmp_path / "p.csv").write_text('sentence1,sentence2,score\n"He said ""hi",b,0.5\nc,d,1.0\n')
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    for ext in ("jsonl", "json", "tsv", "csv", "parquet"):
        ds = load_dataset(str(tmp_path / f"p.{ext}"))
        assert ds.column_names == ["sentence1", "sentence2", "score"], ext
        assert list(ds["sentence1"]) == ['He said "hi', "c"], ext
        assert data.dataset_source(ds).endswith(f"p.{ext}")
    # relative to data_root, with rename / columns / limit
    ds = load_dataset({"source": "p.jsonl", "rename": {"sentence1": "anchor"}, "columns": ["sentence2", "anchor"],
                       "limit": 1}, data_root=tmp_path)
    assert ds.column_names == ["sentence2", "anchor"] and len(ds) == 1
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="unknown keys.*'splt'"):
        load_dataset({"source": "stsb", "splt": "dev"})


def test_hub_names_go_to_datasets(monkeypatch):
    calls = []

    def fake(name, subset=None, split=None, **kw):
        calls.append((name, subset, split))
        return datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    ds = load_dataset({"source": "sentence-transformers/all-nli", "subset": "pair", "split": "dev"})
    assert calls == [("sentence-transformers/all-nli", "pair", "dev")]
    assert data.dataset_source(ds).startswith("hub:sentence-transformers/all-nli")


# ------------------------------------------------------------------ columns and validation

def test_column_convention():
    cols = data.split_columns(["anchor", "positive", "negative"])
    assert cols.inputs == ("anchor", "positive", "negative") and cols.label is None
    for name in ("label", "score", "labels", "scores"):
        cols = data.split_columns(["a", name, "b"])
        assert cols.inputs == ("a", "b") and cols.label == name
    with pytest.raises(ValueError, match="several label columns"):
        data.split_columns(["a", "label", "score"])


def test_validation_messages(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": 0.1}\n'
                    '{"sentence1": "c", "sentence2": null, "score": 0.2}\n')
    bad = load_dataset(str(path))
    with pytest.raises(ValueError, match=r"bad\.jsonl.*column 'sentence2', row 1: None"):
        validate_dataset(bad)
    good = pairs(5)
    assert validate_dataset(good, num_inputs=2, needs_label=True).inputs == ("sentence1", "sentence2")
    with pytest.raises(ValueError, match="expects 3 input column.*has 2"):
        validate_dataset(good, num_inputs=3)
    with pytest.raises(ValueError, match="at least 3 input"):
        validate_dataset(good, num_inputs=(3, None))
    with pytest.raises(ValueError, match="missing label column"):
        validate_dataset(pairs(5, label=False), needs_label=True)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['anchor'\]"):
        load_dataset({"source": str(path), "columns": ["anchor", "sentence2"]})
    with pytest.raises(ValueError, match="stsb-train.*empty"):
        validate_dataset(good.select([]), name="stsb-train")
    nan = datasets.Dataset.from_dict({"a": ["x", "y", "z"], "b": ["u", "v", "w"], "score": [0.1, 0.2, math.nan]})
    with pytest.raises(ValueError, match="column 'score', row 2: nan is not a finite"):
        validate_dataset(nan)
    nli = datasets.Dataset.from_dict({"premise": ["x", "y"], "hypothesis": ["u", "v"], "label": [2, 3]})
    validate_dataset(nli, num_labels=4)
    with pytest.raises(ValueError, match=r"column 'label', row 1: 3 is not a class id in \[0, 3\)"):
        validate_dataset(nli, num_labels=3)
    ints = datasets.Dataset.from_dict({"a": ["x", "y"], "b": [1, 2]})
    with pytest.raises(ValueError, match="column 'b', row 0: 1 .*expected a string"):
        validate_dataset(ints)
    # the row index is that of the dataset as seen (after select / shuffle)
    with pytest.raises(ValueError, match="row 0: None"):
        validate_dataset(bad.select([1, 0]))


# ------------------------------------------------------------------ batches

def test_static_shapes_buckets_and_padding():
    ds = pairs(103)
    tok = WordTokenizer(max_seq_length=64)
    loader = DataLoader(ds, tok, batch_size=16, seed=3)
    assert loader.buckets == (16, 32, 64)
    assert loader.steps_per_epoch() == 7
    items = all_batches(loader, epochs=2)
    assert len(items) == 14
    shapes = set()
    for it in items:
        b = it.batch
        assert len(b["features"]) == 2
        L = b["features"][0]["input_ids"].shape[1]
        assert L in loader.buckets
        for f in b["features"]:
            assert f["input_ids"].shape == f["attention_mask"].shape == (16, L)
            assert f["input_ids"].dtype == f["attention_mask"].dtype == np.int32
        longest = max(int(f["attention_mask"].sum(1).max()) for f in b["features"])
        assert data.bucket_for(longest, loader.buckets) == L     # the bucket of the longest sequence
        assert b["labels"].shape == (16,) and b["labels"].dtype == np.float32
        assert b["mask"].dtype == bool
        shapes.add(L)
    assert len(shapes) <= len(loader.buckets)
    last = items[6].batch
    assert last["mask"].sum() == 103 - 6 * 16
    # the last batch's 7 rows are spread over its 16 slots (row i at slot i * 16 // 7), padding between
    real = np.flatnonzero(last["mask"])
    assert real.tolist() == (np.arange(7) * 16 // 7).tolist() == data.batch_slots(7, 16).tolist()
    pad = ~last["mask"]
    for f in last["features"]:
        assert (f["attention_mask"][pad] == 0).all() and (f["input_ids"][pad] == 0).all()
        assert (f["attention_mask"][real].sum(1) >= 2).all()
    assert (last["labels"][pad] == 0).all()
    name, rows = loader.rows_at((0, 6))
    assert np.allclose(last["labels"][real], np.asarray(ds.select(rows)["score"], np.float32))
    # every row exactly once per epoch, labels carried along
    seen = np.concatenate([rows for _, rows in loader.plan(0)])
    assert sorted(seen.tolist()) == list(range(103))
    dropped = DataLoader(ds, tok, batch_size=16, drop_last=True)
    assert dropped.steps_per_epoch() == 6 and all(it.batch["mask"].all() for it in dropped)


def test_labels_dtype_and_unlabelled():
    tok = WordTokenizer()
    nli = datasets.Dataset.from_dict({"premise": ["a b", "c d", "e"], "hypothesis": ["x", "y z", "w"], "label": [0, 2, 1]})
    b = next(iter(DataLoader(nli, tok, batch_size=4))).batch
    assert b["labels"].dtype == np.int32 and sorted(b["labels"][b["mask"]].tolist()) == [0, 1, 2]
    trip = datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"], "negative": ["c"]})
    b = next(iter(DataLoader(trip, tok, batch_size=2))).batch
    assert len(b["features"]) == 3 and b["labels"].dtype == np.float32 and (b["labels"] == 0).all()


def test_no_duplicates():
    # heavy repetition: 30 anchors, each with several positives; some positives reused as anchors
    rng = np.random.default_rng(0)
    anchors = [f"a{i % 30}" for i in range(200)]
    positives = [f"a{rng.integers(0, 30)}" if i % 7 == 0 else f"p{i % 90}" for i in range(200)]
    ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    loader = DataLoader(ds, WordTokenizer(), batch_size=16, batch_sampler="no_duplicates", seed=1)
    rows_seen = []
    for name, rows in loader.plan(0):
        texts = [t for r in rows for t in (anchors[r], positives[r])]
        row_texts = [{anchors[r], positives[r]} for r in rows]
        assert sum(len(s) for s in row_texts) == len(set(texts)), "a text repeats within a batch"
        rows_seen.extend(rows.tolist())
    # ceil(200 / 16) batches, as sentence-transformers' sampler reports; no row twice; rows still
    # deferred at the end of the epoch are left out and counted
    order = loader.orders["train"]
    assert loader.steps_per_epoch(0) == 13
    assert len(set(rows_seen)) == len(rows_seen)
    assert len(rows_seen) + order.left_out[0] == 200 and order.left_out[0] < 16
    texts = lambda rows: [[anchors[r] for r in rows], [positives[r] for r in rows]]
    stream = stream_id("train")

    def batches(epoch, **kw):
        order = NoDuplicateBatches(200, 16, 1, texts, stream=stream, **kw)
        return [order.rows(epoch, k).tolist() for k in range(order.count(epoch))]
    assert batches(0) == batches(0) != batches(1)
    assert batches(0) == [r.tolist() for _, r in loader.plan(0)]
    # random access (a resume) replays from the nearest kept state and gives the same batches
    fresh = NoDuplicateBatches(200, 16, 1, texts, stream=stream)
    assert [fresh.rows(0, k).tolist() for k in (7, 3, 12)] == [batches(0)[k] for k in (7, 3, 12)]
    dropped = batches(0, drop_last=True)
    assert len(dropped) == 12
    # plain sampling of the same data does repeat texts
    plain = DataLoader(ds, WordTokenizer(), batch_size=16, seed=1)
    assert any(len({anchors[r] for r in rows}) < len(rows) for _, rows in plain.plan(0))


def test_determinism_by_seed_and_epoch():
    ds = pairs(50)
    tok = WordTokenizer()
    a = DataLoader(ds, tok, batch_size=8, seed=7)
    b = DataLoader(ds, tok, batch_size=8, seed=7)
    c = DataLoader(ds, tok, batch_size=8, seed=8)
    for x, y in zip(all_batches(a, epochs=2), all_batches(b, epochs=2)):
        same_batch(x, y)
    order = lambda loader, epoch: np.concatenate([r for _, r in loader.plan(epoch)]).tolist()
    assert order(a, 0) == order(b, 0) and order(a, 1) == order(b, 1)
    assert order(a, 0) != order(c, 0)
    assert order(a, 0) != order(a, 1)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_yields_the_remaining_batches(prefetch):
    ds = pairs(45)
    tok = WordTokenizer()
    loader = DataLoader({"x": ds, "y": pairs(30, seed=1)}, tok, batch_size=8, seed=5, prefetch=prefetch,
                        batch_sampler={"y": "no_duplicates"})
    full = all_batches(loader, epochs=3)
    assert len(full) == sum(loader.steps_per_epoch(e) for e in range(3)) == loader.total_steps(3)
    it = loader.iterate(epochs=3)
    consumed = [next(it) for _ in range(9)]
    saved = json.loads(json.dumps(it.position.to_dict()))  # as a checkpoint would store it
    it.close()
    assert consumed[-1].next_position == Position.of(saved)
    resumed = DataLoader({"x": ds, "y": pairs(30, seed=1)}, tok, batch_size=8, seed=5, prefetch=prefetch,
                         batch_sampler={"y": "no_duplicates"})
    rest = all_batches(resumed, start=saved, epochs=3)
    assert len(consumed) + len(rest) == len(full)
    for x, y in zip(consumed + rest, full):
        same_batch(x, y)
        assert x.position == y.position
    # position bookkeeping: the end of an epoch is the start of the next
    steps = loader.steps_per_epoch(0)
    assert loader.normalize(Position(0, steps)) == Position(1, 0)
    assert full[steps - 1].next_position == Position(1, 0) == full[steps].position


def test_multi_host_slices_concatenate_to_the_global_batch():
    ds = pairs(37)
    tok = WordTokenizer()
    whole = all_batches(DataLoader(ds, tok, batch_size=12, seed=2))
    hosts = [all_batches(DataLoader(ds, tok, batch_size=12, seed=2, process_index=p, process_count=3)) for p in range(3)]
    for step, g in enumerate(whole):
        parts = [h[step].batch for h in hosts]
        assert all(p["mask"].shape == (4,) for p in parts)
        for c in range(2):
            for key in ("input_ids", "attention_mask"):
                np.testing.assert_array_equal(np.concatenate([p["features"][c][key] for p in parts]),
                                              g.batch["features"][c][key])
        np.testing.assert_array_equal(np.concatenate([p["labels"] for p in parts]), g.batch["labels"])
        np.testing.assert_array_equal(np.concatenate([p["mask"] for p in parts]), g.batch["mask"])
    with pytest.raises(ValueError, match="not divisible by the number of processes 5"):
        DataLoader(ds, tok, batch_size=12, process_index=0, process_count=5)


def test_round_robin_and_proportional():
    tok = WordTokenizer()
    sets = {"big": pairs(80), "small": pairs(20, seed=1), "mid": pairs(40, seed=2)}   # 10, 3 (2.5), 5 batches of 8
    rr = DataLoader(sets, tok, batch_size=8, multi_dataset_sampler="round_robin", seed=0)
    names = [it.dataset for it in rr]
    assert names == ["big", "small", "mid"] * 3
    prop = DataLoader(sets, tok, batch_size=8, multi_dataset_sampler="proportional", seed=0)
    names = [it.dataset for it in prop]
    assert {n: names.count(n) for n in sets} == {"big": 10, "small": 3, "mid": 5}
    assert names != sorted(names, key=list(sets).index)                  # interleaved, not in blocks
    for name, rows in prop.plan(0):                                       # each batch from its own dataset
        assert rows.max() < len(sets[name])
    rows_big = np.concatenate([r for n, r in prop.plan(1) if n == "big"])
    assert sorted(rows_big.tolist()) == list(range(80))
    names1 = [n for n, _ in prop.plan(1)]
    assert names1 != names                                                # reshuffled every epoch


def test_real_tokenizer_on_stsb(shared_data, minilm_path):
    from jaxsbert.encoder import Tokenizer

    tok = Tokenizer(minilm_path, max_seq_length=256)
    ds = load_dataset({"source": "stsb", "split": "dev", "limit": 200}, data_root=shared_data)
    loader = DataLoader(ds, tok, batch_size=32, seed=0)
    assert loader.buckets == (16, 32, 64, 128, 256)
    item = next(iter(loader))
    ids = item.batch["features"][0]["input_ids"]
    assert ids.shape[1] in loader.buckets and ids[0, 0] == 101          # [CLS]
    row = int(loader.plan(0)[0][1][0])
    assert ids[0, : item.batch["features"][0]["attention_mask"][0].sum()].tolist() == tok([ds[row]["sentence1"]])[0]
    assert item.batch["labels"][0] == pytest.approx(ds[row]["score"])


# ------------------------------------------------------------------ demo data

def test_demo_dataset():
    from jaxsbert.data import make_demo

    train, dev = load_dataset("demo"), load_dataset({"source": "demo", "split": "dev"})
    assert len(train) >= 200 and len(dev) >= 50
    assert train.column_names == dev.column_names == ["sentence1", "sentence2", "score"]
    for ds in (train, dev):
        validate_dataset(ds, num_inputs=2, needs_label=True)
        scores = np.asarray(ds["score"])
        assert scores.min() == 0.0 and scores.max() == 1.0 and len(set(scores.tolist())) == 6
    train_texts = set(train["sentence1"]) | set(train["sentence2"])
    assert not train_texts & (set(dev["sentence1"]) | set(dev["sentence2"]))   # unseen phrasings in dev
    assert data.demo_path("train").name == "pairs_train.jsonl"
    built = make_demo.build_demo()                                               # the files are reproducible
    assert [dict(r) for r in train] == built["train"] and [dict(r) for r in dev] == built["dev"]
    with pytest.raises(ValueError, match="no split 'test'"):
        data.demo_path("test")
