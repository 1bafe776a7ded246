"""Hard-negative mining against sentence-transformers' util.mine_hard_negatives: the same negatives from the
same embeddings (every option and output format), and on STSb with all-MiniLM-L6-v2 end to end."""
import json

import numpy as np
import pytest

from jaxsbert.mining import MiningOptions, mine_from_embeddings, top_k_similar

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")
st_util = pytest.importorskip("sentence_transformers.util")


class _Card:
    base_model = None


class TableModel:
    """What mine_hard_negatives calls on a SentenceTransformer, with fixed embeddings per text."""
    device = torch.device("cpu")
    model_card_data = _Card()

    def __init__(self, table):
        self.table = table

    def encode_document(self, texts, normalize_embeddings=True, **kwargs):
        e = np.stack([self.table[t] for t in texts]).astype(np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    encode_query = encode_document

    def similarity(self, a, b):
        return st_util.cos_sim(torch.as_tensor(a), torch.as_tensor(b))

    def similarity_pairwise(self, a, b):
        return st_util.pairwise_cos_sim(torch.as_tensor(a), torch.as_tensor(b))

    def get_embedding_dimension(self):
        return len(next(iter(self.table.values())))


def _data(seed=0, n=60, dim=16):
    """(anchor, positive) rows (some anchors with 2-3 positives, one anchor equal to a positive) and a
    distractor corpus; embeddings on a grid of 1/64 so no two scores tie."""
    rng = np.random.default_rng(seed)
    anchors, positives, table = [], [], {}
    for i in range(n):
        a = f"a{i}"
        table[a] = rng.standard_normal(dim)
        for j in range(1 + (i % 7 == 0) + (i % 11 == 0)):
            p = f"p{i}.{j}"
            table[p] = table[a] + rng.standard_normal(dim) * 0.8
            anchors.append(a)
            positives.append(p)
    corpus = [f"c{i}" for i in range(80)]
    for c in corpus:
        table[c] = rng.standard_normal(dim)
    anchors.append("p3.0")                 # an anchor that is in the corpus (it must not be its own negative)
    positives.append("p4.0")
    table = {t: np.round(v * 64) / 64 for t, v in table.items()}
    return anchors, positives, corpus, table


def _ours(anchors, positives, corpus, table, **options):
    texts = list(dict.fromkeys(corpus + positives))
    distinct = list(dict.fromkeys(anchors))
    emb = lambda ts: np.stack([table[t] for t in ts]).astype(np.float32)
    seed = options.pop("seed", 0)
    rows = mine_from_embeddings(anchors, positives, texts, emb(distinct), emb(texts), MiningOptions(**options), seed=seed)
    return datasets.Dataset.from_dict(rows)


def _theirs(anchors, positives, corpus, table, **options):
    ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    return st_util.mine_hard_negatives(ds, TableModel(table), corpus=corpus, verbose=False, **options)


@pytest.mark.parametrize("options", [
    {},
    {"num_negatives": 5, "range_min": 3},
    {"num_negatives": 2, "absolute_margin": 0.05},
    {"num_negatives": 2, "relative_margin": 0.1, "range_max": 40},
    {"num_negatives": 4, "max_score": 0.6, "min_score": 0.1},
    {"num_negatives": 3, "output_format": "n-tuple", "output_scores": True},
    {"num_negatives": 3, "output_format": "labeled-pair", "absolute_margin": 0.1},
    {"num_negatives": 2, "output_format": "labeled-pair", "output_scores": True},
    {"num_negatives": 3, "output_format": "labeled-list", "range_min": 1},
    {"num_negatives": 2, "output_format": "triplet", "output_scores": True, "max_score": 0.5},
    {"num_negatives": 4, "include_positives": True},
])
def test_same_negatives_as_sentence_transformers(options):
    anchors, positives, corpus, table = _data()
    ours, theirs = _ours(anchors, positives, corpus, table, **options), _theirs(anchors, positives, corpus, table, **options)
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs) > 0
    for column in ours.column_names:
        a, b = ours[column], theirs[column]
        if column in ("scores", "score"):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-5)
        else:
            assert a == b, column


def test_random_sampling_draws_from_the_allowed_candidates():
    """sampling_strategy='random' (seeded): num_negatives distinct candidates per anchor, from the range the
    filters leave, in score order; another seed draws others."""
    anchors, positives, corpus, table = _data(1)
    kw = dict(num_negatives=3, range_min=2, range_max=20, sampling_strategy="random", output_format="n-tuple",
              output_scores=True)
    ours = _ours(anchors, positives, corpus, table, seed=0, **kw)
    allowed = _theirs(anchors, positives, corpus, table, **{**kw, "sampling_strategy": "top", "num_negatives": 18})
    by_anchor = {a: {allowed[f"negative_{j}"][i] for j in range(1, 19)} for i, a in enumerate(allowed["anchor"])}
    for i, a in enumerate(ours["anchor"]):
        negs = [ours[f"negative_{j}"][i] for j in (1, 2, 3)]
        assert len(set(negs)) == 3 and set(negs) <= by_anchor[a]
        assert ours["scores"][i][1:] == sorted(ours["scores"][i][1:], reverse=True)
    other = _ours(anchors, positives, corpus, table, seed=1, **kw)
    assert ours["negative_1"] != other["negative_1"]


def test_top_k_blocks_and_small_corpora():
    rng = np.random.default_rng(0)
    q, c = rng.standard_normal((37, 8)).astype(np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    scores, idx = top_k_similar(q, c, 10, block=8)
    ref = np.argsort(-(q @ c.T), axis=1)[:, :10]
    np.testing.assert_array_equal(idx, ref)
    scores, idx = top_k_similar(q, c[:4], 6)                  # fewer documents than k
    assert (idx[:, 4:] == -1).all() and np.isinf(scores[:, 4:]).all()


def test_bad_options_say_what_is_wrong():
    anchors, positives, corpus, table = _data()
    with pytest.raises(ValueError, match="Cannot mine 5 negatives per query: only 2 candidates remain"):
        _ours(anchors, positives, corpus, table, num_negatives=5, range_min=3, range_max=5)
    with pytest.raises(ValueError, match="output_format must be one of"):
        _ours(anchors, positives, corpus, table, output_format="pairs")


def test_minilm_on_stsb_matches_sentence_transformers(minilm_path, tmp_path):
    """all-MiniLM-L6-v2 on STSb dev pairs (score >= 0.6) through `jaxsbert mine`: the same negatives as
    sentence-transformers for >= 99% of anchors (top sampling, a margin and a range), and the file is a
    dataset `jaxsbert train` reads."""
    from sentence_transformers import SentenceTransformer

    from jaxsbert.cli import main
    from jaxsbert.data import load_dataset

    spec = {"source": "stsb", "split": "dev", "min_score": 0.6, "columns": ["sentence1", "sentence2"]}
    out = tmp_path / "mined.jsonl"
    main(["mine", "--model", minilm_path, "--dataset", json.dumps(spec), "--output", str(out), "--num-negatives", "3",
          "--range-min", "2", "--absolute-margin", "0.02", "--output-format", "n-tuple"])
    ours = load_dataset({"source": str(out)})
    theirs = st_util.mine_hard_negatives(load_dataset(spec), SentenceTransformer(minilm_path, device="cpu"),
                                         num_negatives=3, range_min=2, absolute_margin=0.02, output_format="n-tuple",
                                         verbose=False)
    negatives = lambda ds: {(a, p): tuple(ds[f"negative_{j}"][i] for j in (1, 2, 3))
                            for i, (a, p) in enumerate(zip(ds["sentence1"], ds["sentence2"]))}
    mine, st = negatives(ours), negatives(theirs)
    assert len(st) > 500
    same = sum(mine.get(k) == v for k, v in st.items())
    print(f"\nsame negatives for {same} of {len(st)} (anchor, positive) rows; jaxsbert {len(mine)} rows")
    assert same >= 0.99 * len(st) and abs(len(mine) - len(st)) <= 0.01 * len(st)
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main(["mine", "--model", minilm_path, "--dataset", json.dumps(spec), "--output", str(out)])
