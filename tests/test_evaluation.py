"""jaxsbert.evaluation against sentence-transformers' evaluators on identical embeddings.

Both sides see the same per-sentence embeddings: ours through a fake encoder, sentence-transformers' through a
stand-in model with the attributes its evaluators use (encode / encode_query / encode_document,
similarity_fn_name, similarity, model_card_data).
"""
import math
import re

import numpy as np
import pytest

from jaxsbert import evaluation as ev

torch = pytest.importorskip("torch")
st_eval = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator as STSequential  # noqa: E402
from sentence_transformers.util.similarity import SimilarityFunction, cos_sim, dot_score  # noqa: E402

FNS = ["cosine", "dot", "euclidean", "manhattan"]


# ----------------------------------------------------------------------------------------------- fakes

class FakeEncoder:
    """jaxsbert side: precomputed embedding per sentence; records what it was asked to encode."""

    def __init__(self, table, similarity_fn_name=None):
        self.table = table
        if similarity_fn_name is not None:
            self.similarity_fn_name = similarity_fn_name
        self.calls = []

    def encode(self, sentences, batch_size=32):
        assert isinstance(sentences, list) and batch_size >= 1
        self.calls.append(list(sentences))
        dim = len(next(iter(self.table.values())))
        return np.array([self.table[s] for s in sentences], dtype=np.float32).reshape(len(sentences), dim)


class _NoModelCard:
    def set_evaluation_metrics(self, *args, **kwargs):
        pass


class STStandIn:
    """sentence-transformers side: what its evaluators call on a SentenceTransformer."""

    def __init__(self, table, similarity_fn_name="cosine"):
        self.table = table
        self.similarity_fn_name = similarity_fn_name
        self.model_card_data = _NoModelCard()

    def encode(self, sentences, convert_to_tensor=False, truncate_dim=None, **kwargs):
        emb = np.stack([np.asarray(self.table[s], dtype=np.float32) for s in sentences])
        if truncate_dim is not None:
            emb = emb[:, :truncate_dim]
        return torch.from_numpy(emb) if convert_to_tensor else emb

    encode_query = encode
    encode_document = encode

    def similarity(self, a, b):
        return SimilarityFunction.to_similarity_fn(self.similarity_fn_name)(a, b)


def assert_same(ours, theirs, rel=1e-6, abs_=1e-6):
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs)))
    bad = []
    for key, ref in theirs.items():
        got, ref = float(ours[key]), float(ref)
        if math.isnan(ref) and math.isnan(got):
            continue
        if not got == pytest.approx(ref, rel=rel, abs=abs_):
            bad.append((key, got, ref))
    assert not bad, bad


def both(ours_cls, st_cls, table, *args, fn_name="cosine", ours_kwargs=None, **kwargs):
    """Runs our evaluator and sentence-transformers' on the same data; returns (ours, theirs, evaluators)."""
    mine = ours_cls(*args, **{**kwargs, **(ours_kwargs or {})})
    theirs = st_cls(*args, **kwargs)
    r_ours = mine(FakeEncoder(table, fn_name))
    r_theirs = theirs(STStandIn(table, fn_name))
    return r_ours, r_theirs, mine, theirs


# ----------------------------------------------------------------------------------------------- data

def on_grid(table, step):
    """Rounds every embedding to a multiple of `step` so that each dot product is exact in float32.

    Products are multiples of step**2 and every partial sum stays below 2**24 such units, so any summation order
    (numpy's, torch's, AVX2 or AVX-512) gives the bit-identical score; the CI machine differs from ours in
    exactly that, and near-tied dot scores then swapped ranks. Cosine, euclidean and manhattan are unaffected.
    """
    table = {s: (np.round(v / step) * step).astype(np.float32) for s, v in table.items()}
    largest = max(float(np.abs(v).sum()) for v in table.values()) * max(float(np.abs(v).max()) for v in table.values())
    assert largest / step**2 < 2**24, "grid too fine for exact float32 dot products"
    return table


def random_pairs(seed, n=240, n_unique=180, dim=24, scale=1.0):
    rng = np.random.default_rng(seed)
    texts = [f"sentence {i}" for i in range(n_unique)]
    table = on_grid({t: (rng.standard_normal(dim) * scale).astype(np.float32) for t in texts}, 2.0**-8)
    i1 = rng.integers(0, n_unique, n)
    i2 = (i1 + rng.integers(1, n_unique, n)) % n_unique      # no (x, x) pair: see test_self_pairs_are_exact
    return rng, table, [texts[i] for i in i1], [texts[i] for i in i2]


@pytest.fixture(scope="module")
def sts_dev(shared_data):
    """(sentence1, sentence2, score) rows of STSb dev, and bag-of-words embeddings under a random projection."""
    rows = []
    with open(shared_data / "stsbenchmark" / "sts-dev.csv", encoding="utf8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            rows.append((cols[5], cols[6], float(cols[4])))
    s1, s2, scores = map(list, zip(*rows))
    vocab = {}
    tokens = {s: re.findall(r"[a-z0-9]+", s.lower()) for s in set(s1) | set(s2)}
    for toks in tokens.values():
        for t in toks:
            vocab.setdefault(t, len(vocab))
    rng = np.random.default_rng(1234)
    projection = rng.standard_normal((len(vocab), 64)).astype(np.float32)
    table = {}
    for s, toks in sorted(tokens.items()):
        counts = np.zeros(len(vocab), np.float32)
        for t in toks:
            counts[vocab[t]] += 1
        table[s] = counts @ projection + 0.1 * rng.standard_normal(64).astype(np.float32)
    table = on_grid(table, 2.0**-4)
    keep = without_near_ties(s1, s2, table)
    assert len(keep) > 0.98 * len(rows), (len(keep), len(rows))
    return [s1[i] for i in keep], [s2[i] for i in keep], [scores[i] for i in keep], table


def without_near_ties(s1, s2, table, gap=2e-6):
    """Indices of the pairs whose cosine score is not within `gap` of another pair's.

    On the grid, dot, manhattan and euclidean scores are exact in float32 (sums of grid multiples; one correctly
    rounded sqrt), cosine scores are not: numpy and torch may differ in the last bits, so two pairs a few ulps
    apart can swap ranks on one side only, and a swap between a positive and a negative moves AP by ~1e-5 (a CI
    run failed on it). Such pairs are left out; pairs of the same two sentences score identically on both
    sides and stay.
    """
    a = np.stack([table[s] for s in s1]).astype(np.float64)
    b = np.stack([table[s] for s in s2]).astype(np.float64)
    score = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    pair = [frozenset((x, y)) for x, y in zip(s1, s2)]
    drop = set()
    order = np.argsort(score, kind="stable")
    for i, j in zip(order[:-1], order[1:]):
        if pair[i] != pair[j] and score[j] - score[i] <= gap:
            drop.update((int(i), int(j)))
    return [i for i in range(len(s1)) if i not in drop]


# ----------------------------------------------------------------------------------------------- embedding similarity

@pytest.mark.parametrize("seed", [0, 1])
def test_similarity_all_functions_random(seed):
    rng, table, s1, s2 = random_pairs(seed)
    gold = np.round(rng.uniform(0, 5, len(s1)), 1).tolist()    # many tied gold scores
    ours, theirs, mine, st = both(ev.EmbeddingSimilarityEvaluator, st_eval.EmbeddingSimilarityEvaluator, table,
                                  s1, s2, gold, similarity_fn_names=FNS, name="sts-dev")
    assert_same(ours, theirs)
    assert len(ours) == 10 and "sts-dev_spearman_max" in ours
    assert mine.primary_metric == st.primary_metric == "sts-dev_spearman_max"


def test_similarity_defaults_main_similarity_and_truncation():
    rng, table, s1, s2 = random_pairs(3)
    gold = rng.uniform(0, 5, len(s1)).tolist()
    # default: the model's similarity_fn_name
    ours, theirs, mine, st = both(ev.EmbeddingSimilarityEvaluator, st_eval.EmbeddingSimilarityEvaluator, table,
                                  s1, s2, gold, fn_name="dot")
    assert_same(ours, theirs)
    assert set(ours) == {"pearson_dot", "spearman_dot"} and mine.primary_metric == st.primary_metric
    # an encoder without similarity_fn_name gets cosine
    assert set(ev.EmbeddingSimilarityEvaluator(s1, s2, gold)(FakeEncoder(table))) == {"pearson_cosine",
                                                                                     "spearman_cosine"}
    ours, theirs, mine, st = both(ev.EmbeddingSimilarityEvaluator, st_eval.EmbeddingSimilarityEvaluator, table,
                                  s1, s2, gold, main_similarity="manhattan", name="x", truncate_dim=7)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == "x_spearman_manhattan"
    ours, theirs, mine, st = both(ev.EmbeddingSimilarityEvaluator, st_eval.EmbeddingSimilarityEvaluator, table,
                                  s1, s2, gold, main_similarity="euclidean", similarity_fn_names=FNS)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == "spearman_euclidean"


def test_similarity_sts_dev(sts_dev):
    s1, s2, gold, table = sts_dev
    ours, theirs, mine, st = both(ev.EmbeddingSimilarityEvaluator, st_eval.EmbeddingSimilarityEvaluator, table,
                                  s1, s2, gold, similarity_fn_names=FNS, name="sts-dev")
    assert_same(ours, theirs)
    assert ours["sts-dev_spearman_cosine"] > 0.3     # bag of words does correlate with STS
    assert mine.primary_metric == st.primary_metric


def test_similarity_encodes_each_sentence_once(sts_dev):
    s1, s2, gold, table = sts_dev
    enc = FakeEncoder(table)
    ev.EmbeddingSimilarityEvaluator(s1, s2, gold, batch_size=64)(enc)
    assert len(enc.calls) == 1
    encoded = enc.calls[0]
    assert len(encoded) == len(set(encoded)) == len(set(s1) | set(s2)) < len(s1) + len(s2)


def test_similarity_metrics_pure_and_constant_input():
    rng = np.random.default_rng(5)
    e1, e2 = rng.standard_normal((2, 50, 8)).astype(np.float32)
    gold = rng.uniform(0, 5, 50)
    table = {f"a{i}": e1[i] for i in range(50)} | {f"b{i}": e2[i] for i in range(50)}
    theirs = st_eval.EmbeddingSimilarityEvaluator([f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)],
                                                  gold.tolist(), similarity_fn_names=FNS)(STStandIn(table))
    assert_same(ev.similarity_metrics(e1, e2, gold, FNS), theirs)
    # constant gold scores: correlations are undefined (nan), as with scipy
    out = ev.similarity_metrics(e1, e2, np.ones(50), ["cosine"])
    assert math.isnan(out["pearson_cosine"]) and math.isnan(out["spearman_cosine"])


def test_similarity_rejects_bad_input():
    with pytest.raises(ValueError):
        ev.EmbeddingSimilarityEvaluator(["a"], ["b", "c"], [1.0])
    with pytest.raises(ValueError):
        ev.EmbeddingSimilarityEvaluator(["a"], ["b"], [1.0], similarity_fn_names=["angle"])
    with pytest.raises(ValueError):
        ev.EmbeddingSimilarityEvaluator(["a"], ["b"], [1.0], main_similarity="dot", similarity_fn_names=["cosine"])


# ----------------------------------------------------------------------------------------------- triplets

@pytest.mark.parametrize("margin", [None, 0.05, {"cosine": 0.1, "euclidean": 0.3}])
def test_triplet_random(margin):
    rng, table, a, p = random_pairs(7, dim=16)
    n = [f"sentence {i}" for i in rng.integers(0, 180, len(a))]
    ours, theirs, mine, st = both(ev.TripletEvaluator, st_eval.TripletEvaluator, table, a, p, n,
                                  similarity_fn_names=FNS, margin=margin, name="trip")
    assert_same(ours, theirs, rel=0, abs_=0)    # float32 accuracy: bit-identical
    assert mine.primary_metric == st.primary_metric == "trip_max_accuracy"
    assert 0 < ours["trip_cosine_accuracy"] < 1


def test_triplet_ties_count_as_wrong_and_defaults():
    # integer embeddings: many exact ties between the positive and the negative score
    rng = np.random.default_rng(11)
    table = {f"t{i}": rng.integers(-1, 2, 3).astype(np.float32) for i in range(40)}
    names = list(table)
    a, p, n = ([names[i] for i in rng.integers(0, 40, 300)] for _ in range(3))
    for fn in ["dot", "manhattan", "euclidean"]:
        ours, theirs, mine, st = both(ev.TripletEvaluator, st_eval.TripletEvaluator, table, a, p, n, fn_name=fn)
        assert_same(ours, theirs, rel=0, abs_=0)
        assert set(ours) == {f"{fn}_accuracy"} and mine.primary_metric == st.primary_metric
    ours, theirs, mine, st = both(ev.TripletEvaluator, st_eval.TripletEvaluator, table, a, p, n,
                                  main_similarity_function="dot", margin=1.0)
    assert_same(ours, theirs, rel=0, abs_=0)
    assert mine.primary_metric == st.primary_metric == "dot_accuracy"


def test_triplet_sts_dev(sts_dev):
    s1, s2, gold, table = sts_dev
    rng = np.random.default_rng(2)
    keep = [i for i, g in enumerate(gold) if g >= 3]
    anchors = [s1[i] for i in keep]
    positives = [s2[i] for i in keep]
    negatives = [s2[j] for j in rng.integers(0, len(s2), len(keep))]
    ours, theirs, mine, st = both(ev.TripletEvaluator, st_eval.TripletEvaluator, table, anchors, positives,
                                  negatives, similarity_fn_names=FNS, name="sts-trip")
    assert_same(ours, theirs, rel=0, abs_=0)
    assert ours["sts-trip_cosine_accuracy"] > 0.8


# ----------------------------------------------------------------------------------------------- binary classification

@pytest.mark.parametrize("seed", [0, 1])
def test_binary_random(seed):
    rng, table, s1, s2 = random_pairs(seed, dim=12, scale=0.3)
    # labels correlated with cosine, with noise
    cos = ev.pairwise_similarity("cosine", [table[s] for s in s1], [table[s] for s in s2])
    labels = (cos + 0.4 * rng.standard_normal(len(cos)) > 0).astype(int).tolist()
    ours, theirs, mine, st = both(ev.BinaryClassificationEvaluator, st_eval.BinaryClassificationEvaluator, table,
                                  s1, s2, labels, similarity_fn_names=FNS, name="quora")
    assert_same(ours, theirs)
    assert len(ours) == 5 * 8
    assert mine.primary_metric == st.primary_metric == "quora_max_ap"


@pytest.mark.parametrize("fn", FNS)
def test_binary_tied_scores(fn):
    # 3-dim integer embeddings: many pairs share exactly the same score; duplicate (s1, s2) pairs too
    rng = np.random.default_rng(21)
    table = {f"t{i}": rng.integers(-1, 2, 3).astype(np.float32) for i in range(25)}
    names = list(table)
    s1 = [names[i] for i in rng.integers(0, 25, 400)]
    s2 = [names[i] for i in rng.integers(0, 25, 400)]
    labels = rng.integers(0, 2, 400).tolist()
    ours, theirs, mine, st = both(ev.BinaryClassificationEvaluator, st_eval.BinaryClassificationEvaluator, table,
                                  s1, s2, labels, fn_name=fn)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == f"{fn}_ap"


def test_binary_sts_dev(sts_dev):
    s1, s2, gold, table = sts_dev
    labels = [int(g >= 3.0) for g in gold]
    ours, theirs, mine, st = both(ev.BinaryClassificationEvaluator, st_eval.BinaryClassificationEvaluator, table,
                                  s1, s2, labels, similarity_fn_names=FNS, name="sts-bin")
    assert_same(ours, theirs)
    assert ours["sts-bin_cosine_ap"] > 0.6
    enc = FakeEncoder(table)
    ev.BinaryClassificationEvaluator(s1, s2, labels)(enc)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == len(set(s1) | set(s2))


def _threshold_cases():
    rng = np.random.default_rng(8)
    f = np.float32
    yield np.array([0.5, 0.5, 0.5, 0.2], f), [1, 0, 1, 0]
    yield np.array([0.3, 0.3, 0.3], f), [0, 0, 0]                       # no positive
    yield np.array([0.3, 0.1, 0.3], f), [1, 1, 1]                       # no negative
    yield np.array([0.9, 0.1], f), [0, 1]                               # nothing beats "all dissimilar"
    x = f(0.7)
    yield np.array([x, np.nextafter(x, f(1)), np.nextafter(x, f(0)), f(0.2)], f), [1, 1, 0, 0]  # midpoint rounds
    yield np.array([1.0, np.nextafter(f(1.0), f(2)), 0.5], f), [1, 0, 1]
    yield np.round(rng.uniform(-1, 1, 300), 1).astype(f), rng.integers(0, 2, 300)   # heavy ties
    yield rng.standard_normal(301).astype(f), rng.integers(0, 2, 301)
    yield np.array([0.4], f), [1]


@pytest.mark.parametrize("greater_is_better", [True, False])
def test_threshold_search_matches_st(greater_is_better):
    ST = st_eval.BinaryClassificationEvaluator
    for scores, labels in _threshold_cases():
        labels = np.asarray(labels)
        acc_ref = ST.find_best_acc_and_threshold(scores, labels, greater_is_better)
        acc = ev.best_accuracy_threshold(scores, labels, greater_is_better)
        assert acc[0] == acc_ref[0] and acc[1] == float(acc_ref[1]), (scores, labels, acc, acc_ref)
        f1_ref = ST.find_best_f1_and_threshold(scores, labels, greater_is_better)
        f1 = ev.best_f1_threshold(scores, labels, greater_is_better)
        assert f1 == tuple(float(v) for v in f1_ref), (scores, labels, f1, f1_ref)


def test_stats_match_scipy_sklearn():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import average_precision_score, matthews_corrcoef

    rng = np.random.default_rng(9)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        x = np.round(rng.standard_normal(n), 1)
        y = np.round(rng.standard_normal(n) + x, 1)
        assert ev.pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
        assert ev.spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
        labels = rng.integers(0, 2, n)
        if labels.any():
            assert ev.average_precision(labels, x) == pytest.approx(average_precision_score(labels, x), abs=1e-12)
        pred = rng.integers(0, 2, n)
        assert ev.matthews_corrcoef(labels, pred) == pytest.approx(matthews_corrcoef(labels, pred), abs=1e-12)
    assert ev.average_precision([0, 0], [0.1, 0.2]) == 0.0
    assert ev.matthews_corrcoef([1, 1, 0], [1, 1, 1]) == 0.0


def test_pure_functions_equal_evaluators(sts_dev):
    s1, s2, gold, table = sts_dev
    e1 = np.stack([table[s] for s in s1])
    e2 = np.stack([table[s] for s in s2])
    labels = [int(g >= 3) for g in gold]
    enc = FakeEncoder(table)
    assert ev.binary_classification_metrics(e1, e2, labels, FNS) == \
        ev.BinaryClassificationEvaluator(s1, s2, labels, similarity_fn_names=FNS)(enc)
    assert ev.similarity_metrics(e1, e2, gold, FNS) == \
        ev.EmbeddingSimilarityEvaluator(s1, s2, gold, similarity_fn_names=FNS)(enc)
    neg = np.roll(e2, 1, axis=0)
    assert ev.triplet_metrics(e1, e2, neg, FNS, margin=0.1) == \
        ev.TripletEvaluator(s1, s2, s2[-1:] + s2[:-1], similarity_fn_names=FNS, margin=0.1)(enc)


def test_self_pairs_are_exact():
    # sim(x, x) is accumulated in float64 and rounded once: cosine exactly 1.0 and distance exactly 0 for every
    # x (sentence-transformers' float32 torch reductions can give 1 - a few ulps, splitting these ties).
    x = np.random.default_rng(0).standard_normal((500, 24)).astype(np.float32)
    assert (ev.pairwise_similarity("cosine", x, x) == 1.0).all()
    assert (ev.pairwise_similarity("euclidean", x, x) == 0.0).all()
    assert ev.pairwise_similarity("cosine", x, x).dtype == np.float32


def test_binary_rejects_non_binary_labels():
    with pytest.raises(ValueError):
        ev.BinaryClassificationEvaluator(["a", "b"], ["c", "d"], [0, 2])


# ----------------------------------------------------------------------------------------------- information retrieval

def _ir_data(seed, n_q=40, n_docs=300, dim=16, integer=False):
    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i}" for i in rng.permutation(n_docs)]       # id order differs from insertion order
    if integer:
        emb = rng.integers(-1, 2, (n_q + n_docs, dim)).astype(np.float32)
    else:
        emb = rng.standard_normal((n_q + n_docs, dim)).astype(np.float32)
    queries = {f"q{i}": f"query text {i}" for i in range(n_q)}
    corpus = {cid: f"doc text {cid}" for cid in doc_ids}
    table = {f"query text {i}": emb[i] for i in range(n_q)}
    table.update({f"doc text {cid}": emb[n_q + j] for j, cid in enumerate(doc_ids)})
    relevant = {}
    for i in range(n_q):
        if i % 7 == 3:
            continue                                        # no relevant docs: skipped
        rel = set(rng.choice(doc_ids, int(rng.integers(1, 5)), replace=False))
        if i % 5 == 0:
            rel.add("not-in-corpus")
        relevant[f"q{i}"] = rel
        # make the first relevant doc close to its query so the metrics are not all ~0
        table[queries[f"q{i}"]] = table[corpus[sorted(rel - {'not-in-corpus'})[0]]] + \
            (0.5 * rng.standard_normal(dim)).astype(np.float32) * (0 if integer else 1)
    relevant["q1000"] = {"d1"}                               # a query id that is not a query
    return queries, corpus, relevant, table


IR_KS = dict(mrr_at_k=[1, 10], ndcg_at_k=[5, 10], accuracy_at_k=[1, 3, 5, 10], precision_recall_at_k=[1, 3, 10],
             map_at_k=[10, 100])


@pytest.mark.parametrize("chunk", [50000, 37])
def test_ir_random_cosine_and_dot(chunk):
    queries, corpus, relevant, table = _ir_data(0)
    ours, theirs, mine, st = both(
        ev.InformationRetrievalEvaluator, st_eval.InformationRetrievalEvaluator, table, queries, corpus, relevant,
        corpus_chunk_size=chunk, name="ir", score_functions={"cosine": cos_sim, "dot": dot_score},
        ours_kwargs=dict(score_functions=["cosine", "dot"]), **IR_KS)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric
    assert 0.2 < ours["ir_cosine_ndcg@10"] < 1


def test_ir_default_keys_and_model_similarity():
    queries, corpus, relevant, table = _ir_data(1)
    ours, theirs, mine, st = both(ev.InformationRetrievalEvaluator, st_eval.InformationRetrievalEvaluator, table,
                                  queries, corpus, relevant, fn_name="dot")
    assert_same(ours, theirs)
    assert len(ours) == 4 + 4 + 4 + 1 + 1 + 1
    assert mine.primary_metric == st.primary_metric == "dot_ndcg@10"
    ours, theirs, mine, st = both(ev.InformationRetrievalEvaluator, st_eval.InformationRetrievalEvaluator, table,
                                  queries, corpus, relevant, main_score_function="cosine", fn_name="cosine",
                                  truncate_dim=9)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == "cosine_ndcg@10"


@pytest.mark.parametrize("chunk", [1000, 16, 5])
def test_ir_ties_broken_by_corpus_id(chunk):
    # 3-dim integer embeddings and dot scores: exact ties everywhere, across chunk boundaries
    queries, corpus, relevant, table = _ir_data(2, n_docs=120, dim=3, integer=True)
    ours, theirs, mine, st = both(
        ev.InformationRetrievalEvaluator, st_eval.InformationRetrievalEvaluator, table, queries, corpus, relevant,
        corpus_chunk_size=chunk, fn_name="dot", **IR_KS)
    assert_same(ours, theirs)
    ref = ev.InformationRetrievalEvaluator(queries, corpus, relevant, corpus_chunk_size=1000, **IR_KS)(
        FakeEncoder(table, "dot"))
    assert ours == ref                                       # independent of chunking, exactly


def test_ir_small_corpus_and_custom_k():
    queries, corpus, relevant, table = _ir_data(3, n_q=12, n_docs=6)
    kwargs = dict(mrr_at_k=[3, 20], ndcg_at_k=[2, 20], accuracy_at_k=[1, 20], precision_recall_at_k=[2, 20],
                  map_at_k=[4, 20])
    ours, theirs, mine, st = both(ev.InformationRetrievalEvaluator, st_eval.InformationRetrievalEvaluator, table,
                                  queries, corpus, relevant, corpus_chunk_size=4, name="tiny", **kwargs)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == "tiny_cosine_ndcg@20"


def test_ir_sts_dev(sts_dev):
    s1, s2, gold, table = sts_dev
    queries, corpus, relevant = {}, {}, {}
    for i, (a, b, g) in enumerate(zip(s1, s2, gold)):
        corpus[f"c{i:04d}"] = b                      # duplicate texts -> exactly tied scores
        if g >= 4:
            queries[f"q{i}"] = a
            relevant[f"q{i}"] = {f"c{i:04d}"}
    ours, theirs, mine, st = both(ev.InformationRetrievalEvaluator, st_eval.InformationRetrievalEvaluator, table,
                                  queries, corpus, relevant, corpus_chunk_size=400, name="sts-ir",
                                  score_functions={"cosine": cos_sim, "dot": dot_score},
                                  ours_kwargs=dict(score_functions=["cosine", "dot"]))
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric
    assert ours["sts-ir_cosine_mrr@10"] > 0.3


def test_ir_pure_function_matches_evaluator():
    queries, corpus, relevant, table = _ir_data(4)
    ours = ev.InformationRetrievalEvaluator(queries, corpus, relevant, score_functions=["cosine", "dot"])(
        FakeEncoder(table))
    q_ids = list(queries)
    q_emb = np.stack([table[queries[q]] for q in q_ids])
    c_ids = list(corpus)
    c_emb = np.stack([table[corpus[c]] for c in c_ids])
    pure = ev.information_retrieval_metrics(q_emb, c_emb, [relevant.get(q, set()) for q in q_ids], c_ids,
                                            ["cosine", "dot"], corpus_chunk_size=50)
    assert pure == ours
    chunks = iter([c_emb[:100], c_emb[100:]])
    assert ev.information_retrieval_metrics(q_emb, chunks, [relevant.get(q, set()) for q in q_ids], c_ids,
                                            ["cosine", "dot"]) == ours


# ----------------------------------------------------------------------------------------------- sequential

@pytest.mark.parametrize("mean", [False, True])
def test_sequential(sts_dev, mean):
    s1, s2, gold, table = sts_dev
    s1, s2, gold = s1[:300], s2[:300], gold[:300]
    labels = [int(g >= 3) for g in gold]
    kw = dict(main_score_function=np.mean) if mean else {}
    ours = ev.SequentialEvaluator([ev.EmbeddingSimilarityEvaluator(s1, s2, gold, name="a"),
                                   ev.BinaryClassificationEvaluator(s1, s2, labels, name="b")], **kw)
    theirs = STSequential([st_eval.EmbeddingSimilarityEvaluator(s1, s2, gold, name="a"),
                           st_eval.BinaryClassificationEvaluator(s1, s2, labels, name="b")], **kw)
    r_ours, r_theirs = ours(FakeEncoder(table)), theirs(STStandIn(table))
    assert_same(r_ours, r_theirs)
    assert ours.primary_metric == theirs.primary_metric == "sequential_score"


# ----------------------------------------------------------------------------------------------- the checks can fail

def test_comparison_detects_a_difference():
    rng, table, s1, s2 = random_pairs(0)
    gold = rng.uniform(0, 5, len(s1)).tolist()
    ours = ev.EmbeddingSimilarityEvaluator(s1, s2, gold)(FakeEncoder(table))
    nudged = dict(table)
    nudged[s1[0]] = nudged[s1[0]] + 0.5                      # one sentence moved a little
    theirs = st_eval.EmbeddingSimilarityEvaluator(s1, s2, gold)(STStandIn(nudged))
    with pytest.raises(AssertionError):
        assert_same(ours, theirs)


# ----------------------------------------------------------------------------------------------- reranking

def _rerank_data(seed, n=40, dim=16, ties=False):
    rng = np.random.default_rng(seed)
    samples, table = [], {}
    for i in range(n):
        query = f"q{i}"
        pos = [f"p{i}.{j}" for j in range(int(rng.integers(0 if i % 9 == 4 else 1, 4)))]
        neg = [f"n{i}.{j}" for j in range(int(rng.integers(0 if i % 11 == 5 else 1, 14)))]
        base = rng.standard_normal(dim).astype(np.float32)
        table[query] = base
        for t in pos:
            table[t] = base + rng.standard_normal(dim).astype(np.float32) * 1.5
        for t in neg:
            table[t] = rng.standard_normal(dim).astype(np.float32)
        if ties and pos and neg:
            table[neg[0]] = table[pos[0]].copy()          # a positive and a negative with the same score
        samples.append({"query": query, "positive": pos[0] if len(pos) == 1 else pos,
                        "negative": neg[0] if len(neg) == 1 else neg})
    return samples, table


@pytest.mark.parametrize("fn", ["cosine", "dot"])
@pytest.mark.parametrize("at_k", [10, 3])
def test_reranking_matches_st(fn, at_k):
    samples, table = _rerank_data(0)
    if fn == "dot":
        table = on_grid(table, 2.0 ** -8)
    ours, theirs, mine, st = both(ev.RerankingEvaluator, st_eval.RerankingEvaluator, table, samples, at_k=at_k,
                                  name="rr", fn_name=fn)
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == f"rr_ndcg@{at_k}"
    assert 0.2 < ours[f"rr_map"] < 1 and len(mine.samples) < len(samples)   # samples without pos/neg left out


def test_reranking_tied_scores_as_scikit_learn():
    """A positive tied with a negative: NDCG averages their discounts and MAP counts both at that score,
    as scikit-learn; the per-sample functions equal sklearn's on random scores with ties."""
    from sklearn.metrics import average_precision_score, ndcg_score

    from jaxsbert.evaluation.reranking import average_precision, ndcg

    samples, table = _rerank_data(1, ties=True)
    ours, theirs, _, _ = both(ev.RerankingEvaluator, st_eval.RerankingEvaluator, table, samples)
    assert ours["map"] == pytest.approx(theirs["map"], abs=1e-9)
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg@10"], abs=1e-9)
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        scores = rng.integers(0, 5, n).astype(np.float64)
        relevant = rng.random(n) < 0.3
        relevant[0] = True
        for k in (1, 5, 10, 50):
            assert ndcg(relevant, scores, k) == pytest.approx(ndcg_score([relevant], [scores], k=k), abs=1e-12)
        assert average_precision(relevant, scores) == pytest.approx(average_precision_score(relevant, scores), abs=1e-12)


def test_reranking_rejects_bad_samples():
    with pytest.raises(ValueError, match=r"reranking sample 1 lacks \['negative'\]"):
        ev.RerankingEvaluator([{"query": "a", "positive": "b", "negative": "c"}, {"query": "a", "positive": "b"}])
    with pytest.raises(ValueError, match="no reranking sample has both a positive and a negative"):
        ev.RerankingEvaluator([{"query": "a", "positive": [], "negative": "c"}])


# ------------------------------------------------------------------- retrieval evaluators from configs

def _write_jsonl(path, rows):
    import json
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_information_retrieval_from_config_columns_and_files(tmp_path):
    """The config types build the evaluator sentence-transformers would get from the same data: from
    (query, relevant doc) columns plus a distractor corpus, and from BEIR-style files; same numbers."""
    from jaxsbert.training.evaluators import build_evaluator

    rng = np.random.default_rng(4)
    docs = [f"doc {i}" for i in range(60)]
    queries = [f"query {i}" for i in range(15)]
    table = {t: rng.standard_normal(12).astype(np.float32) for t in docs + queries}
    pairs = []
    for i, q in enumerate(queries):
        for d in rng.choice(20, int(rng.integers(1, 3)), replace=False):
            pairs.append({"query": q, "doc": docs[d], "score": 0.9})
            table[q] = table[q] * 0.3 + table[docs[d]]
    spec = {"type": "information_retrieval", "source": _write_jsonl(tmp_path / "pairs.jsonl", pairs),
            "corpus": {"source": _write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in docs])},
            "mrr_at_k": 10, "ndcg_at_k": [10], "accuracy_at_k": [1, 5], "precision_recall_at_k": [1, 10],
            "map_at_k": [100]}
    mine = build_evaluator("ir", spec)
    q_ids = {q: f"q{i}" for i, q in enumerate(dict.fromkeys(p["query"] for p in pairs))}
    doc_order = list(dict.fromkeys([p["doc"] for p in pairs] + docs))
    d_ids = {d: f"d{i}" for i, d in enumerate(doc_order)}
    relevant = {}
    for p in pairs:
        relevant.setdefault(q_ids[p["query"]], set()).add(d_ids[p["doc"]])
    ks = dict(mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 5], precision_recall_at_k=[1, 10], map_at_k=[100])
    st = st_eval.InformationRetrievalEvaluator({i: q for q, i in q_ids.items()}, {i: d for d, i in d_ids.items()},
                                               relevant, name="ir", **ks)
    ours, theirs = mine(FakeEncoder(table, "cosine")), st(STStandIn(table, "cosine"))
    assert_same(ours, theirs)
    assert mine.primary_metric == st.primary_metric == "ir_cosine_ndcg@10" and len(mine.corpus) == 60

    files = {"queries": _write_jsonl(tmp_path / "queries.jsonl", [{"_id": i, "text": q} for q, i in q_ids.items()]),
             "corpus": _write_jsonl(tmp_path / "docs.jsonl", [{"_id": i, "title": "", "text": d} for d, i in d_ids.items()]),
             "relevant": _write_jsonl(tmp_path / "qrels.jsonl", [{"query-id": q, "corpus-id": d, "score": 1}
                                                                for q, ds in relevant.items() for d in sorted(ds)]
                                      + [{"query-id": "q0", "corpus-id": "d59", "score": 0}])}
    from_files = build_evaluator("ir", {"type": "information_retrieval", **files, **ks})
    assert_same(from_files(FakeEncoder(table, "cosine")), theirs)
    with pytest.raises(ValueError, match=r"from files needs \['queries', 'corpus', 'relevant'\]; missing \['relevant'\]"):
        build_evaluator("ir", {"type": "information_retrieval", "queries": files["queries"], "corpus": files["corpus"]})


def test_reranking_from_config_rows_grouped_by_query(tmp_path):
    from jaxsbert.training.evaluators import build_evaluator

    samples, table = _rerank_data(3)
    rows = [{"query": s["query"], "positive": p, "negative": n}
            for s in samples for p, n in zip(np.atleast_1d(s["positive"]).tolist(), np.atleast_1d(s["negative"]).tolist())]
    mine = build_evaluator("rr", {"type": "reranking", "source": _write_jsonl(tmp_path / "rr.jsonl", rows), "at_k": 5})
    grouped = {}
    for r in rows:
        g = grouped.setdefault(r["query"], {"query": r["query"], "positive": [], "negative": []})
        g["positive"] += [r["positive"]] if r["positive"] not in g["positive"] else []
        g["negative"] += [r["negative"]] if r["negative"] not in g["negative"] else []
    st = st_eval.RerankingEvaluator(list(grouped.values()), at_k=5, name="rr")
    assert_same(mine(FakeEncoder(table, "cosine")), st(STStandIn(table, "cosine")))
    assert mine.primary_metric == "rr_ndcg@5"


def test_retrieval_config_errors_name_the_file(tmp_path):
    from jaxsbert.training.evaluators import build_evaluator

    path = _write_jsonl(tmp_path / "one.jsonl", [{"query": "a"}])
    with pytest.raises(ValueError, match=r"one.jsonl\): an information_retrieval evaluator needs \(query, relevant"):
        build_evaluator("ir", {"type": "information_retrieval", "source": path})
    with pytest.raises(ValueError, match=r"one.jsonl\): a reranking evaluator needs \(query, positive, negative"):
        build_evaluator("rr", {"type": "reranking", "source": path})
