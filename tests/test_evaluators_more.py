"""MSEEvaluator, TranslationEvaluator, ParaphraseMiningEvaluator and NanoBEIREvaluator against
sentence-transformers' evaluators of the same names.

Both sides see identical embeddings (all-MiniLM-L6-v2's, computed once by jaxsbert, of STSb sentences): ours
through test_evaluation's FakeEncoder, sentence-transformers' through its STStandIn. One test runs both real
models end to end.
"""
import os
from collections import defaultdict

import numpy as np
import pytest

from jaxsbert import evaluation as ev
from jaxsbert.evaluation import translation as translation_mod

torch = pytest.importorskip("torch")
st_eval = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
from sentence_transformers.util import paraphrase_mining_embeddings as st_mining  # noqa: E402
from sentence_transformers.util.similarity import cos_sim, dot_score  # noqa: E402
from test_evaluation import FakeEncoder, STStandIn, assert_same, on_grid  # noqa: E402

N_PAIRS = 80


class STListStandIn(STStandIn):
    """STStandIn that also answers ``convert_to_numpy=False`` with a list of tensors (TranslationEvaluator)."""

    def encode(self, sentences, convert_to_tensor=False, convert_to_numpy=True, truncate_dim=None, prompt=None,
               **kwargs):
        if prompt:
            sentences = [prompt + s for s in sentences]
        emb = super().encode(sentences, convert_to_tensor=convert_to_tensor, truncate_dim=truncate_dim)
        if not convert_to_numpy and not convert_to_tensor:
            return list(torch.from_numpy(np.asarray(emb)))
        return emb

    encode_query = encode
    encode_document = encode


@pytest.fixture(scope="module")
def stsb(stsb_test):
    s1, s2, scores = (list(x[:N_PAIRS]) for x in stsb_test)
    return s1, s2, scores


@pytest.fixture(scope="module")
def encoder(minilm_path):
    from jaxsbert import SentenceEncoder
    return SentenceEncoder.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def table(encoder, stsb):
    """all-MiniLM-L6-v2 embedding (jaxsbert's) of every STSb sentence used here, and of prompted variants."""
    s1, s2, _ = stsb
    texts = list(dict.fromkeys(s1 + s2))
    texts += [p + t for p in ("query: ", "doc: ", "passage: ") for t in texts]
    emb = encoder.encode(texts, batch_size=64)
    return {t: e for t, e in zip(texts, np.asarray(emb, dtype=np.float32))}


def run_both(ours, theirs, table, fn_name="cosine"):
    return ours(FakeEncoder(table, fn_name)), theirs(STListStandIn(table, fn_name))


# ----------------------------------------------------------------------------------------------- MSE

@pytest.mark.parametrize("truncate_dim", [None, 100])
def test_mse_matches_st(table, stsb, truncate_dim):
    s1, s2, _ = stsb
    ours = ev.MSEEvaluator(s1, s2, teacher_model=FakeEncoder(table), name="dev", truncate_dim=truncate_dim)
    theirs = st_eval.MSEEvaluator(s1, s2, teacher_model=STListStandIn(table), name="dev", truncate_dim=truncate_dim)
    r_ours, r_theirs = run_both(ours, theirs, table)
    assert_same(r_ours, r_theirs)
    assert list(r_ours) == ["dev_negative_mse"] and ours.primary_metric == theirs.primary_metric
    assert r_ours["dev_negative_mse"] < -0.05

    # precomputed teacher embeddings (positional or keyword) give the same number
    teacher = np.stack([table[s] for s in s1])
    for kwargs in ({"teacher_model": teacher}, {"source_embeddings": teacher}):
        pre = ev.MSEEvaluator(s1, s2, name="dev", truncate_dim=truncate_dim, **kwargs)
        assert pre(FakeEncoder(table)) == r_ours


def test_mse_errors(table, stsb):
    s1, s2, _ = stsb
    with pytest.raises(ValueError, match="same length"):
        ev.MSEEvaluator(s1, s2[:-1], teacher_model=FakeEncoder(table))
    with pytest.raises(ValueError, match="exactly one of teacher_model"):
        ev.MSEEvaluator(s1, s2)
    with pytest.raises(ValueError, match="one row per source sentence"):
        ev.MSEEvaluator(s1, s2, source_embeddings=np.zeros((3, 384)))
    with pytest.raises(ValueError, match=r"shape \(80, 10\) but the model's have \(80, 384\)"):
        ev.MSEEvaluator(s1, s2, source_embeddings=np.zeros((80, 10)))(FakeEncoder(table))


# ----------------------------------------------------------------------------------------------- translation

@pytest.mark.parametrize("truncate_dim", [None, 32])
def test_translation_matches_st(table, stsb, truncate_dim):
    s1, s2, _ = stsb
    # a repeated target text: a match to its twin counts as correct (text comparison, as sentence-transformers)
    src, trg = s1 + [s1[0]], s2 + [s2[0]]
    ours = ev.TranslationEvaluator(src, trg, name="en-en", truncate_dim=truncate_dim)
    theirs = st_eval.TranslationEvaluator(src, trg, name="en-en", truncate_dim=truncate_dim)
    r_ours, r_theirs = run_both(ours, theirs, table, fn_name="dot")   # always cosine, whatever the model's
    assert_same(r_ours, r_theirs)
    assert list(r_ours) == ["en-en_src2trg_accuracy", "en-en_trg2src_accuracy", "en-en_mean_accuracy"]
    assert ours.primary_metric == theirs.primary_metric == "en-en_mean_accuracy"
    assert 0.3 < r_ours["en-en_mean_accuracy"] < 1.0     # neither trivial nor perfect


def test_translation_ties_take_the_first_index(monkeypatch):
    """Equal similarities: np.argmax's first index, in both directions, however the rows are blocked."""
    v = np.eye(3, dtype=np.float32)
    src = np.stack([v[0], v[0], v[1], v[2]])          # sources 0 and 1 are the same vector
    trg = np.stack([v[0], v[1], v[1], v[2]])          # targets 1 and 2 are the same vector
    for block in (1 << 24, 4, 1):                     # rows per block: all, 1 (column maxima across blocks)
        monkeypatch.setattr(translation_mod, "_BLOCK_ELEMENTS", block)
        src2trg, trg2src = translation_mod.best_matches(src, trg)
        assert src2trg.tolist() == [0, 0, 1, 3]
        assert trg2src.tolist() == [0, 2, 2, 3]
    metrics = translation_mod.translation_metrics(src, trg, ["a", "b", "c", "d"], ["A", "B", "C", "D"])
    assert metrics == {"src2trg_accuracy": 0.5, "trg2src_accuracy": 0.75, "mean_accuracy": 0.625}


# ----------------------------------------------------------------------------------------------- paraphrase mining

@pytest.fixture(scope="module")
def mining_data(stsb):
    """{id: sentence} of the STSb sentences, and (id1, id2) for the pairs scored >= 3.8 as duplicates."""
    s1, s2, scores = stsb
    texts = list(dict.fromkeys(s1 + s2))
    ids = {t: f"s{i}" for i, t in enumerate(texts)}
    duplicates = [(ids[a], ids[b]) for a, b, s in zip(s1, s2, scores) if s >= 3.8]
    assert 10 < len(duplicates) < 60
    return {i: t for t, i in ids.items()}, duplicates


MINING_SETTINGS = [
    {},                                                                   # defaults: every pair is a candidate
    {"query_chunk_size": 7, "corpus_chunk_size": 11, "top_k": 3, "max_pairs": 60},
    {"query_chunk_size": 50, "corpus_chunk_size": 13, "top_k": 1, "max_pairs": 500},
    {"top_k": 5, "max_pairs": 25, "add_transitive_closure": True},
]


@pytest.mark.parametrize("settings", MINING_SETTINGS)
def test_paraphrase_mining_matches_st(table, mining_data, settings):
    sentences, duplicates = mining_data
    ours = ev.ParaphraseMiningEvaluator(sentences, duplicates, name="quora", **settings)
    theirs = st_eval.ParaphraseMiningEvaluator(sentences, duplicates, name="quora", **settings)
    r_ours, r_theirs = run_both(ours, theirs, table)
    assert_same(r_ours, r_theirs)
    assert list(r_ours) == [f"quora_{k}" for k in ("average_precision", "f1", "precision", "recall", "threshold")]
    assert ours.primary_metric == theirs.primary_metric == "quora_average_precision"
    assert ours.total_num_duplicates == theirs.total_num_duplicates
    assert 0 < r_ours["quora_f1"] < 1


@pytest.mark.parametrize("fn_name", ["dot", "manhattan"])
def test_paraphrase_mining_uses_the_model_similarity(table, mining_data, fn_name):
    sentences, duplicates = mining_data
    rng = np.random.default_rng(5)                 # MiniLM's embeddings are unit length: dot would be cosine
    table = {t: v * np.float32(rng.uniform(0.5, 2.0)) for t, v in table.items()}
    duplicates_dict = {}
    for a, b in duplicates:                        # one direction only: read both ways
        duplicates_dict.setdefault(a, {})[b] = True
    ours = ev.ParaphraseMiningEvaluator(sentences, duplicates_dict=duplicates_dict, top_k=4, max_pairs=80)
    # sentence-transformers looks up [id1][id2] for every mined pair: it needs a defaultdict
    st_dict = defaultdict(lambda: defaultdict(bool), {a: defaultdict(bool, row) for a, row in duplicates_dict.items()})
    theirs = st_eval.ParaphraseMiningEvaluator(sentences, duplicates_dict=st_dict, top_k=4, max_pairs=80)
    r_ours, r_theirs = run_both(ours, theirs, table, fn_name=fn_name)
    assert_same(r_ours, r_theirs)
    cosine = ev.ParaphraseMiningEvaluator(sentences, duplicates_dict=duplicates_dict, top_k=4, max_pairs=80)
    assert cosine(FakeEncoder(table)) != r_ours


@pytest.mark.parametrize("settings", [dict(top_k=100), dict(top_k=3, max_pairs=40, query_chunk_size=9,
                                                              corpus_chunk_size=5)])
def test_paraphrase_mining_pairs_match_st(table, mining_data, settings):
    """The mined pairs themselves: the same (i, j) with the same scores, best first. The order of pairs with
    equal scores may differ (there is one exact float32 tie in these 500 pairs, which the two sides list in
    opposite orders)."""
    sentences, _ = mining_data
    emb = np.stack([table[s] for s in sentences.values()])
    scores, i, j = ev.paraphrase_mining_embeddings(emb, **settings)
    theirs = st_mining(torch.from_numpy(emb), **settings)
    ours = {(a, b): score for score, a, b in zip(scores.tolist(), i.tolist(), j.tolist())}
    assert len(ours) == len(scores) == len(theirs) and set(ours) == {(a, b) for _, a, b in theirs}
    np.testing.assert_allclose([ours[a, b] for _, a, b in theirs], [s for s, _, _ in theirs], rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, [s for s, _, _ in theirs], rtol=0, atol=1e-6)
    assert (i < j).all() and (np.diff(scores) <= 0).all()


def test_paraphrase_mining_ties_give_st_metrics():
    """Exactly tied scores (repeated vectors, dot products exact in float32): the metrics take equal scores
    together, so they equal sentence-transformers' although the order within a tie may differ."""
    rng = np.random.default_rng(0)
    base = [rng.standard_normal(16).astype(np.float32) for _ in range(12)]
    table = on_grid({f"t{k}": base[k % 12] for k in range(30)}, 2.0**-6)     # t0, t12, t24 share a vector ...
    sentences = {f"id{k}": f"t{k}" for k in range(30)}
    duplicates = [(f"id{k}", f"id{k + 12}") for k in range(0, 12, 2)] + [("id1", "id5"), ("id3", "id20")]
    for fn in ("dot", "euclidean"):
        ours = ev.ParaphraseMiningEvaluator(sentences, duplicates, top_k=40)
        theirs = st_eval.ParaphraseMiningEvaluator(sentences, duplicates, top_k=40)
        r_ours, r_theirs = run_both(ours, theirs, table, fn_name=fn)
        assert_same(r_ours, r_theirs, rel=0, abs_=0)


def test_transitive_closure_matches_st():
    graph = {"a": {"b": True}, "b": {"c": True}, "d": {"e": True, "f": False}, "x": {"y": False}}
    theirs = st_eval.ParaphraseMiningEvaluator.add_transitive_closure(
        {k: dict(v) for k, v in graph.items()} | {"c": {}, "e": {}, "f": {}, "y": {}})
    ours = ev.paraphrase_mining.transitive_closure(graph)
    as_set = lambda g: {(a, b) for a, row in g.items() for b, dup in row.items() if dup}
    assert as_set(ours) == as_set(theirs)
    assert ("a", "c") in as_set(ours) and ("c", "a") in as_set(ours) and ("x", "y") not in as_set(ours)
    assert graph["a"] == {"b": True}                          # the input is not modified


# ----------------------------------------------------------------------------------------------- NanoBEIR

def _write_split(root, subset, split, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(root / subset, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / subset / f"{split}-00000-of-00001.parquet")


@pytest.fixture(scope="module")
def nano_dir(stsb, tmp_path_factory):
    """A NanoBEIR-en copy with two datasets (MSMARCO, SciFact) of STSb sentences, laid out as on the hub."""
    s1, s2, _ = stsb
    root = tmp_path_factory.mktemp("nanobeir")
    halves = {"NanoMSMARCO": range(0, 40), "NanoSciFact": range(40, 80)}
    for split, rows in halves.items():
        rows = list(rows)
        corpus = [{"_id": f"d{i}", "text": s2[i]} for i in rows] + [{"_id": "empty", "text": ""}]
        queries = [{"_id": f"q{i}", "text": s1[i]} for i in rows[:25]] + [{"_id": "q-none", "text": s1[rows[-1]]}]
        qrels = [{"query-id": f"q{i}", "corpus-id": f"d{i}"} for i in rows[:25]]
        qrels += [{"query-id": f"q{rows[0]}", "corpus-id": f"d{rows[1]}"},
                  {"query-id": f"q{rows[2]}", "corpus-id": f"d{rows[3]}"}]
        _write_split(root, "corpus", split, corpus)
        _write_split(root, "queries", split, queries)
        _write_split(root, "qrels", split, qrels)
    return root


@pytest.fixture
def st_reads(nano_dir, monkeypatch):
    """sentence-transformers' NanoBEIREvaluator reading the tmp copy: datasets.load_dataset(id, subset, split)
    answered from its parquet files."""
    import datasets

    def load_dataset(dataset_id, subset, split):
        return datasets.Dataset.from_list(ev.nano_beir.load_split(str(nano_dir), subset, split))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


NANO_SETTINGS = [
    ({}, {}),
    ({"truncate_dim": 64, "ndcg_at_k": [5, 10], "mrr_at_k": [3], "map_at_k": [10]}, {}),
    ({"score_functions": {"cosine": cos_sim, "dot": dot_score}}, {"score_functions": ["cosine", "dot"]}),
    ({"main_score_function": "dot", "score_functions": {"cosine": cos_sim, "dot": dot_score},
      "aggregate_fn": np.median, "aggregate_key": "median"},
     {"score_functions": ["cosine", "dot"]}),
    ({"query_prompts": {"msmarco": "query: ", "SciFact": "passage: "}, "corpus_prompts": "doc: "}, {}),
]


@pytest.mark.parametrize("settings,ours_settings", NANO_SETTINGS)
def test_nanobeir_matches_st(table, nano_dir, st_reads, settings, ours_settings):
    names = ["msmarco", "SciFact"]
    ours = ev.NanoBEIREvaluator(names, data_dir=nano_dir, **{**settings, **ours_settings})
    theirs = st_eval.NanoBEIREvaluator(names, **settings)
    r_ours, r_theirs = run_both(ours, theirs, table)
    assert_same(r_ours, r_theirs)
    assert list(r_ours) == list(r_theirs)
    assert ours.primary_metric == theirs.primary_metric
    if not settings:
        assert ours.primary_metric == "NanoBEIR_mean_cosine_ndcg@10"
        assert "NanoMSMARCO_cosine_accuracy@1" in r_ours and "NanoSciFact_cosine_map@100" in r_ours
        assert len(ours.evaluators[0].queries) == 25 and len(ours.evaluators[0].corpus) == 40
    # a second call keeps the keys and the primary metric
    assert ours(FakeEncoder(table)) == r_ours and ours.primary_metric == theirs.primary_metric


def test_nanobeir_reads_data_dir_from_env_and_nested_dataset_id(table, nano_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSBERT_NANOBEIR_DIR", str(nano_dir))
    from_env = ev.NanoBEIREvaluator(["scifact"])(FakeEncoder(table))
    nested = tmp_path / "sentence-transformers" / "NanoBEIR-en"
    nested.parent.mkdir()
    nested.symlink_to(nano_dir)
    from_nested = ev.NanoBEIREvaluator(["scifact"], data_dir=tmp_path)(FakeEncoder(table))
    assert from_env == from_nested and "NanoBEIR_mean_cosine_ndcg@10" in from_env


def test_nanobeir_errors(nano_dir, monkeypatch):
    monkeypatch.delenv("JAXSBERT_NANOBEIR_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="pass data_dir= or set JAXSBERT_NANOBEIR_DIR"):
        ev.NanoBEIREvaluator(["msmarco"])
    with pytest.raises(FileNotFoundError, match=r"no corpus/NanoNQ-\*.parquet"):
        ev.NanoBEIREvaluator(["msmarco", "nq"], data_dir=nano_dir)
    with pytest.raises(ValueError, match=r"\['bogus'\] are not valid NanoBEIR datasets"):
        ev.NanoBEIREvaluator(["msmarco", "bogus"], data_dir=nano_dir)
    with pytest.raises(ValueError, match=r"missing query prompts: \['SciFact'\]"):
        ev.NanoBEIREvaluator(["msmarco", "SciFact"], data_dir=nano_dir, query_prompts={"msmarco": "q: "})


# ----------------------------------------------------------------------------------------------- real models

def test_real_models_end_to_end(minilm_path, encoder, stsb):
    """sentence-transformers' SentenceTransformer and jaxsbert's SentenceEncoder of all-MiniLM-L6-v2, each
    through its own library's evaluators."""
    from sentence_transformers import SentenceTransformer
    st_model = SentenceTransformer(minilm_path, device="cpu")
    s1, s2, _ = stsb
    pairs = [
        (ev.MSEEvaluator(s1, s2, teacher_model=encoder, name="mse"),
         st_eval.MSEEvaluator(s1, s2, teacher_model=st_model, name="mse")),
        (ev.TranslationEvaluator(s1, s2, name="tr"), st_eval.TranslationEvaluator(s1, s2, name="tr")),
    ]
    for ours, theirs in pairs:
        assert_same(ours(encoder), theirs(st_model), rel=1e-4, abs_=1e-6)


# ----------------------------------------------------------------------------------------------- config specs

def _jsonl(path, rows):
    import json
    with open(path, "w", encoding="utf8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def test_config_types_build_the_evaluators(table, stsb, mining_data, nano_dir, minilm_path, encoder, tmp_path):
    from jaxsbert.training.evaluators import build_evaluator
    s1, s2, _ = stsb
    fake = FakeEncoder(table)
    parallel = _jsonl(tmp_path / "parallel.jsonl", [{"english": a, "non_english": b} for a, b in zip(s1, s2)])

    mse = build_evaluator("distill", {"type": "mse", "source": parallel, "teacher": minilm_path, "truncate_dim": 64})
    assert isinstance(mse, ev.MSEEvaluator)
    direct = ev.MSEEvaluator(s1, s2, teacher_model=encoder, name="distill", truncate_dim=64)(fake)
    assert mse(fake) == pytest.approx(direct, rel=1e-5)

    translation = build_evaluator("tr", {"type": "translation", "source": parallel, "batch_size": 8})
    assert translation(fake) == ev.TranslationEvaluator(s1, s2, name="tr")(fake)

    sentences, duplicates = mining_data
    direct = ev.ParaphraseMiningEvaluator(sentences, duplicates, name="pm", top_k=5)(fake)
    files = {"sentences": _jsonl(tmp_path / "q.jsonl", [{"qid": i, "question": t} for i, t in sentences.items()]),
             "duplicates": _jsonl(tmp_path / "d.jsonl", [{"qid1": a, "qid2": b} for a, b in duplicates])}
    from_files = build_evaluator("pm", {"type": "paraphrase_mining", **files, "top_k": 5})
    assert from_files(fake) == direct
    # columns: duplicate pairs labelled 1, the other STSb pairs labelled 0 (they add their sentences only)
    is_dup = {frozenset(p) for p in duplicates}
    ids = {t: i for i, t in sentences.items()}
    pairs = [{"sentence1": x, "sentence2": y, "label": int(frozenset((ids[x], ids[y])) in is_dup)}
             for x, y in zip(s1, s2)]
    from_columns = build_evaluator("pm", {"type": "paraphrase_mining", "source": _jsonl(tmp_path / "p.jsonl", pairs),
                                          "top_k": 5})
    assert from_columns.total_num_duplicates == len(is_dup) and from_columns(fake) == direct

    nano = build_evaluator("nano", {"type": "nanobeir", "data_dir": nano_dir.name, "dataset_names": ["msmarco"],
                                    "ndcg_at_k": 5}, data_root=str(nano_dir.parent))
    direct = ev.NanoBEIREvaluator(["msmarco"], data_dir=nano_dir, ndcg_at_k=[5])(fake)
    assert nano(fake) == direct and nano.primary_metric == "NanoBEIR_mean_cosine_ndcg@5"


def test_config_checks_name_the_problem(nano_dir, minilm_path, tmp_path, monkeypatch):
    from jaxsbert.config import build_config
    from jaxsbert.cli import check_config
    from jaxsbert.training.evaluators import check_spec
    monkeypatch.delenv("JAXSBERT_NANOBEIR_DIR", raising=False)
    with pytest.raises(ValueError, match="did you mean 'dataset_names'"):
        check_spec("n", {"type": "nanobeir", "data_dir": str(nano_dir), "dataset_name": ["nq"]})
    with pytest.raises(FileNotFoundError, match="pass data_dir= or set JAXSBERT_NANOBEIR_DIR"):
        check_spec("n", {"type": "nanobeir"})
    with pytest.raises(FileNotFoundError, match="data_dir 'nowhere' is not a directory"):
        check_spec("n", {"type": "nanobeir", "data_dir": "nowhere"})
    with pytest.raises(ValueError, match="an mse evaluator needs 'teacher'"):
        check_spec("m", {"type": "mse", "source": "stsb"})
    with pytest.raises(ValueError, match="needs a dataset of duplicate pairs"):
        check_spec("p", {"type": "paraphrase_mining", "top_k": 3})
    with pytest.raises(ValueError, match=r"missing \['duplicates'\]"):
        check_spec("p", {"type": "paraphrase_mining", "sentences": "stsb"})
    with pytest.raises(ValueError, match="did you mean 'max_pairs'"):
        check_spec("p", {"type": "paraphrase_mining", "source": "stsb", "max_pair": 3})
    # the CLI's config check takes the types without one dataset spec
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"anchor": "a", "positive": "b"}])
    config = build_config(base={"model": minilm_path, "loss": {"name": "MultipleNegativesRankingLoss"},
                                "data": {"train": {"pairs": {"source": pairs}}, "eval": {
                                    "nano": {"type": "nanobeir", "data_dir": str(nano_dir)},
                                    "pm": {"type": "paraphrase_mining", "sentences": pairs, "duplicates": pairs},
                                    "tr": {"type": "translation", "source": pairs}}}})
    check_config(config)
