"""jaxsbert.losses against sentence-transformers: same embeddings in, same value and gradients out.

Each case feeds one set of random fp32 embeddings (fixed seed) to our loss and, through a stand-in
model that returns them as "sentence_embedding", to the sentence-transformers loss; values and
gradients wrt every column's embeddings must agree to rtol 1e-5 (atol 1e-6).
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert import losses as L

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
from sentence_transformers import util as st_util  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


class StandInModel(torch.nn.Module):
    """What sentence-transformers' losses need of a model: ``model(features)["sentence_embedding"]``
    (each column's features are ``{"column": c}``, which no loss can merge), plus the attributes a
    few losses read."""

    def __init__(self, embeddings: list, dim: int):
        super().__init__()
        self.embeddings = embeddings
        self.dim = dim

    def forward(self, features):
        return {"sentence_embedding": self.embeddings[features["column"]]}

    def get_embedding_dimension(self):
        return self.dim

    get_sentence_embedding_dimension = get_embedding_dimension     # older sentence-transformers
    _get_untruncated_embedding_dimension = get_embedding_dimension  # MatryoshkaLoss, sentence-transformers >= 6.3

    @property
    def device(self):
        return torch.device("cpu")

    def __getitem__(self, i):
        return torch.nn.Identity()


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    loss: L.Loss
    st: Callable[[Any], Any]          # model -> sentence-transformers loss
    columns: int
    labels: str | None = None         # None, "class3", "class4", "binary", "score", "unit"
    batch: int = 16
    dim: int = 16


def _make_labels(kind, batch, rng):
    if kind is None:
        return None
    if kind == "class3":
        return rng.integers(0, 3, batch)
    if kind == "class4":
        return rng.integers(0, 4, batch)
    if kind == "binary":
        return rng.integers(0, 2, batch)
    if kind == "score":      # with ties
        return (rng.integers(0, 11, batch) / 2.0).astype(np.float32)
    if kind == "unit":
        return rng.uniform(0, 1, batch).astype(np.float32)
    raise ValueError(kind)


def _data(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    embeddings = [rng.standard_normal((case.batch, case.dim)).astype(np.float32) for _ in range(case.columns)]
    if case.id.startswith("Contrastive") or case.id.startswith("OnlineContrastive"):
        # bring pairs closer so both sides of the margin occur
        embeddings[1] = (embeddings[0] + 0.6 * embeddings[1]).astype(np.float32)
    return embeddings, _make_labels(case.labels, case.batch, rng)


M = st_losses
TDM = st_losses.TripletDistanceMetric
SDM = st_losses.SiameseDistanceMetric
BDF = st_losses.BatchHardTripletLossDistanceFunction
MNRL = L.MultipleNegativesRankingLoss

CASES = [
    Case("SoftmaxLoss", L.get_loss("SoftmaxLoss", num_labels=3),
         lambda m: M.SoftmaxLoss(m, 16, 3), 2, "class3"),
    Case("SoftmaxLoss-mult", L.get_loss("SoftmaxLoss", num_labels=4, concatenation_sent_rep=False,
                                        concatenation_sent_multiplication=True),
         lambda m: M.SoftmaxLoss(m, 16, 4, concatenation_sent_rep=False, concatenation_sent_multiplication=True),
         2, "class4"),
    Case("MNRL", MNRL(), lambda m: M.MultipleNegativesRankingLoss(m), 2),
    Case("MNRL-2neg", MNRL(), lambda m: M.MultipleNegativesRankingLoss(m), 4),
    Case("MNRL-dot", MNRL(scale=1.0, similarity_fct="dot_score"),
         lambda m: M.MultipleNegativesRankingLoss(m, scale=1.0, similarity_fct=st_util.dot_score), 3),
    Case("MNRL-symmetric", MNRL(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"),
         lambda m: M.MultipleNegativesRankingLoss(m, directions=("query_to_doc", "doc_to_query"),
                                                  partition_mode="per_direction"), 3),
    Case("MNRL-gte", MNRL(directions=("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")),
         lambda m: M.MultipleNegativesRankingLoss(
             m, directions=("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")), 3),
    *[Case(f"MNRL-hardness-{mode}", MNRL(hardness_mode=mode, hardness_strength=5.0),
           lambda m, mode=mode: M.MultipleNegativesRankingLoss(m, hardness_mode=mode, hardness_strength=5.0), 3)
      for mode in ("in_batch_negatives", "hard_negatives", "all_negatives")],
    Case("MultipleNegativesSymmetricRankingLoss", L.get_loss("MultipleNegativesSymmetricRankingLoss"),
         lambda m: M.MultipleNegativesSymmetricRankingLoss(m), 2),
    Case("CachedMNRL", L.get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=4),
         lambda m: M.MultipleNegativesRankingLoss(m), 3),
    Case("CachedMNRL-gte-hardness", L.get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=4,
                                               directions=("query_to_doc", "query_to_query", "doc_to_query",
                                                           "doc_to_doc"),
                                               hardness_mode="all_negatives", hardness_strength=3.0),
         lambda m: M.MultipleNegativesRankingLoss(
             m, directions=("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"),
             hardness_mode="all_negatives", hardness_strength=3.0), 3),
    Case("CachedMNSymmetricRL", L.get_loss("CachedMultipleNegativesSymmetricRankingLoss", mini_batch_size=4),
         lambda m: M.MultipleNegativesSymmetricRankingLoss(m), 2),
    Case("TripletLoss", L.get_loss("TripletLoss"), lambda m: M.TripletLoss(m), 3),
    Case("TripletLoss-cosine", L.get_loss("TripletLoss", distance_metric="cosine", triplet_margin=0.5),
         lambda m: M.TripletLoss(m, distance_metric=TDM.COSINE, triplet_margin=0.5), 3),
    Case("TripletLoss-manhattan", L.get_loss("TripletLoss", distance_metric="TripletDistanceMetric.MANHATTAN"),
         lambda m: M.TripletLoss(m, distance_metric=TDM.MANHATTAN), 3),
    Case("ContrastiveLoss", L.get_loss("ContrastiveLoss"), lambda m: M.ContrastiveLoss(m), 2, "binary"),
    Case("ContrastiveLoss-euclidean-sum", L.get_loss("ContrastiveLoss", distance_metric="euclidean", margin=4.0,
                                                     size_average=False),
         lambda m: M.ContrastiveLoss(m, distance_metric=SDM.EUCLIDEAN, margin=4.0, size_average=False), 2, "binary"),
    Case("ContrastiveLoss-manhattan-fractional", L.get_loss("ContrastiveLoss", distance_metric="manhattan", margin=12.0),
         lambda m: M.ContrastiveLoss(m, distance_metric=SDM.MANHATTAN, margin=12.0), 2, "unit"),
    Case("OnlineContrastiveLoss", L.get_loss("OnlineContrastiveLoss"), lambda m: M.OnlineContrastiveLoss(m), 2,
         "binary"),
    Case("OnlineContrastiveLoss-euclidean", L.get_loss("OnlineContrastiveLoss", distance_metric="euclidean",
                                                       margin=4.0),
         lambda m: M.OnlineContrastiveLoss(m, distance_metric=SDM.EUCLIDEAN, margin=4.0), 2, "binary"),
    Case("CosineSimilarityLoss", L.get_loss("CosineSimilarityLoss"), lambda m: M.CosineSimilarityLoss(m), 2, "unit"),
    Case("CoSENTLoss", L.get_loss("CoSENTLoss"), lambda m: M.CoSENTLoss(m), 2, "score"),
    Case("AnglELoss", L.get_loss("AnglELoss"), lambda m: M.AnglELoss(m), 2, "score"),
    Case("AnglELoss-odd-dim", L.get_loss("AnglELoss", scale=10.0), lambda m: M.AnglELoss(m, scale=10.0), 2, "score",
         dim=15),
    Case("AnglELoss-triplets", L.get_loss("AnglELoss"), lambda m: M.AnglELoss(m), 4),
    Case("MatryoshkaLoss-MNRL", L.get_loss("MatryoshkaLoss", loss="MultipleNegativesRankingLoss",
                                           matryoshka_dims=[4, 16, 8], matryoshka_weights=[0.5, 1.0, 2.0]),
         lambda m: M.MatryoshkaLoss(m, M.MultipleNegativesRankingLoss(m), [4, 16, 8], [0.5, 1.0, 2.0]), 3),
    Case("MatryoshkaLoss-CoSENT", L.get_loss("MatryoshkaLoss", loss=L.get_loss("CoSENTLoss"), matryoshka_dims=(16, 6)),
         lambda m: M.MatryoshkaLoss(m, M.CoSENTLoss(m), [16, 6]), 2, "score"),
    Case("MegaBatchMarginLoss", L.get_loss("MegaBatchMarginLoss", positive_margin=0.3, negative_margin=0.1,
                                           mini_batch_size=4),
         lambda m: M.MegaBatchMarginLoss(m, positive_margin=0.3, negative_margin=0.1, use_mini_batched_version=False),
         2),
    Case("BatchHardTripletLoss", L.get_loss("BatchHardTripletLoss"), lambda m: M.BatchHardTripletLoss(m), 1,
         "class4"),
    Case("BatchHardTripletLoss-cosine", L.get_loss("BatchHardTripletLoss", distance_metric="cosine_distance",
                                                   margin=0.5),
         lambda m: M.BatchHardTripletLoss(m, distance_metric=BDF.cosine_distance, margin=0.5), 1, "class4"),
    Case("BatchSemiHardTripletLoss", L.get_loss("BatchSemiHardTripletLoss", margin=2.0),
         lambda m: M.BatchSemiHardTripletLoss(m, margin=2.0), 1, "class4"),
    Case("BatchSemiHardTripletLoss-cosine", L.get_loss("BatchSemiHardTripletLoss", distance_metric="cosine",
                                                       margin=0.2),
         lambda m: M.BatchSemiHardTripletLoss(m, distance_metric=BDF.cosine_distance, margin=0.2), 1, "class4"),
    Case("BatchAllTripletLoss", L.get_loss("BatchAllTripletLoss"), lambda m: M.BatchAllTripletLoss(m), 1, "class4"),
    Case("BatchHardSoftMarginTripletLoss", L.get_loss("BatchHardSoftMarginTripletLoss"),
         lambda m: M.BatchHardSoftMarginTripletLoss(m), 1, "class4"),
]
CASE_IDS = [c.id for c in CASES]


# losses parity-tested the same way in their own files
TESTED_ELSEWHERE = {"MSELoss", "EmbedDistillLoss", "MarginMSELoss", "DistillKLDivLoss"}   # tests/test_distill_losses.py
TESTED_ELSEWHERE |= {"GlobalOrthogonalRegularizationLoss", "AdaptiveLayerLoss", "Matryoshka2dLoss"}  # test_layer_losses.py
TESTED_ELSEWHERE |= {"ContrastiveTensionLoss", "ContrastiveTensionLossInBatchNegatives"}  # test_contrastive_tension.py
TESTED_ELSEWHERE |= {"GISTEmbedLoss", "CachedGISTEmbedLoss"}  # tests/test_gist.py
TESTED_ELSEWHERE |= {"DenoisingAutoEncoderLoss"}  # tests/test_tsdae.py


def test_every_loss_has_a_case():
    covered = {type(c.loss).name for c in CASES} | TESTED_ELSEWHERE
    assert covered == set(L.LOSSES), set(L.LOSSES) - covered


# ---------------------------------------------------------------------------------------------------
# Reference: sentence-transformers
# ---------------------------------------------------------------------------------------------------

def st_value_and_grads(case, embeddings, labels, head_state=None):
    """(value, [grad per column], head grads or None) from the sentence-transformers loss; ``head_state`` is the
    state dict of the loss's trainable module (SoftmaxLoss's ``classifier.*``, EmbedDistillLoss' ``projection.*``)."""
    leaves = [torch.tensor(e, requires_grad=True) for e in embeddings]
    model = StandInModel(leaves, case.dim)
    head_module = next(iter(head_state)).split(".", 1)[0] if head_state else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = case.st(model)
        if head_state is not None:
            getattr(loss, head_module).load_state_dict({k.split(".", 1)[1]: torch.tensor(v)
                                                        for k, v in head_state.items()})
        torch_labels = None if labels is None else torch.tensor(labels)
        if torch_labels is None and not isinstance(loss, M.AnglELoss):
            torch_labels = torch.zeros(case.batch)      # the labels a label-free dataset gets in the trainer
        value = loss([{"column": c} for c in range(case.columns)], torch_labels)
    value.backward()
    head_grads = None
    if head_state is not None:
        head_grads = {f"{head_module}.{k}": v.grad.numpy() for k, v in getattr(loss, head_module).named_parameters()}
    return float(value.detach()), [t.grad.numpy() if t.grad is not None else np.zeros_like(e)
                          for t, e in zip(leaves, embeddings)], head_grads


# ---------------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _jitted(loss: L.Loss):
    def f(head, embeddings, labels, mask):
        return loss(head, embeddings, labels, mask)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))


def ours(case, head, embeddings, labels, mask=None):
    (value, (head_grads, grads)) = _jitted(case.loss)(head, tuple(jnp.asarray(e) for e in embeddings),
                                                      None if labels is None else jnp.asarray(labels), mask)
    return float(value), [np.asarray(g) for g in grads], head_grads


def _head(case):
    return case.loss.init_head(jax.random.PRNGKey(1), case.dim)


def assert_matches_st(case, embeddings_ours, embeddings_st, labels):
    """Our value and gradients (embeddings, head) against sentence-transformers' (any case with id, loss, st,
    columns, batch and dim: the distillation tests' cases too)."""
    head = _head(case)
    head_state = case.loss.head_state_dict(head) or None
    value, grads, head_grads = ours(case, head, embeddings_ours, labels)
    ref_value, ref_grads, ref_head_grads = st_value_and_grads(case, embeddings_st, labels, head_state)
    np.testing.assert_allclose(value, ref_value, rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: loss value")
    for c, (g, r) in enumerate(zip(grads, ref_grads)):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: gradient of column {c}")
    if head_state is not None:
        ours_state = case.loss.head_state_dict(head_grads)
        for k in ref_head_grads:
            np.testing.assert_allclose(ours_state[k], ref_head_grads[k], rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: {k}")
    return value, grads


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_sentence_transformers(case):
    embeddings, labels = _data(case)
    value, grads = assert_matches_st(case, embeddings, embeddings, labels)
    assert np.isfinite(value) and value != 0.0, f"{case.id}: degenerate case (loss {value})"
    assert any(np.abs(g).max() > 0 for g in grads), f"{case.id}: degenerate case (zero gradient)"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_comparison_detects_a_perturbation(case):
    """The comparison above is not vacuous: 1e-3 noise on our side's embeddings is caught."""
    embeddings, labels = _data(case)
    rng = np.random.default_rng(7)
    perturbed = [(e + 1e-3 * rng.standard_normal(e.shape)).astype(np.float32) for e in embeddings]
    with pytest.raises(AssertionError):
        assert_matches_st(case, perturbed, embeddings, labels)


def test_softmax_head_layout_and_init():
    loss = L.get_loss("SoftmaxLoss", num_labels=3)
    head = loss.init_head(jax.random.PRNGKey(0), 384)
    assert head["classifier"]["kernel"].shape == (3 * 384, 3)
    bound = 1 / np.sqrt(3 * 384)
    assert float(jnp.abs(head["classifier"]["kernel"]).max()) <= bound
    assert float(jnp.abs(head["classifier"]["kernel"]).max()) > 0.9 * bound
    state = loss.head_state_dict(head)
    assert state["classifier.weight"].shape == (3, 3 * 384) and state["classifier.bias"].shape == (3,)
    back = loss.head_from_state_dict(state)
    np.testing.assert_array_equal(back["classifier"]["kernel"], head["classifier"]["kernel"])
    # loads into sentence-transformers' classifier as is
    st = M.SoftmaxLoss(StandInModel([], 384), 384, 3)
    st.classifier.load_state_dict({k.split(".", 1)[1]: torch.tensor(v) for k, v in state.items()})


# ---------------------------------------------------------------------------------------------------
# Padding rows change nothing
# ---------------------------------------------------------------------------------------------------

def _one_per_class():
    seen, out = set(), []
    for c in CASES:
        if type(c.loss) not in seen or c.id.startswith("CachedMNRL") or c.id in ("MNRL-gte", "AnglELoss-triplets"):
            seen.add(type(c.loss))
            out.append(c)
    return out


PADDING_CASES = _one_per_class()


@pytest.mark.parametrize("case", PADDING_CASES, ids=[c.id for c in PADDING_CASES])
def test_padding_rows_change_nothing(case):
    embeddings, labels = _data(case)
    head = _head(case)
    value, grads, head_grads = ours(case, head, embeddings, labels)

    rng = np.random.default_rng(3)
    n_pad = 4        # 20 rows: the cached losses then really run in chunks of 4
    total = case.batch + n_pad
    valid_pos = np.sort(rng.choice(total, case.batch, replace=False))     # padding rows interleaved
    mask = np.zeros(total, bool)
    mask[valid_pos] = True
    padded = []
    for e in embeddings:
        p = rng.standard_normal((total, case.dim)).astype(np.float32) * 3
        pad_rows = np.flatnonzero(~mask)
        p[pad_rows[:2]] = 0.0                       # all-zero padding rows (what empty inputs embed to)
        p[valid_pos] = e
        padded.append(p)
    padded_labels = None
    if labels is not None:
        padded_labels = _make_labels(case.labels, total, rng).astype(labels.dtype)
        padded_labels[valid_pos] = labels
    value_p, grads_p, head_grads_p = ours(case, head, padded, padded_labels, jnp.asarray(mask))
    np.testing.assert_allclose(value_p, value, rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: value with padding")
    for c, (gp, g) in enumerate(zip(grads_p, grads)):
        assert np.all(np.isfinite(gp)), f"{case.id}: non-finite gradient with padding"
        np.testing.assert_allclose(gp[valid_pos], g, rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: column {c} grads")
        assert np.all(gp[~mask] == 0), f"{case.id}: padding rows get a gradient"
    for a, b in zip(jax.tree_util.tree_leaves(head_grads_p), jax.tree_util.tree_leaves(head_grads)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_mnrl_all_padding_is_zero_not_nan():
    loss = MNRL()
    e = jnp.ones((4, 8))
    value, grads = jax.jit(jax.value_and_grad(lambda e: loss({}, (e, e), mask=jnp.zeros(4, bool))))(e)
    assert float(value) == 0.0 and np.all(np.asarray(grads) == 0)


# ---------------------------------------------------------------------------------------------------
# Errors say what the loss expects
# ---------------------------------------------------------------------------------------------------

def test_unknown_loss_lists_supported():
    with pytest.raises(ValueError, match="unknown loss 'NoSuchLoss'; supported: .*CoSENTLoss.*TripletLoss"):
        L.get_loss("NoSuchLoss")


def test_unknown_argument():
    with pytest.raises(ValueError, match=r"TripletLoss: unknown argument\(s\) \['margin'\]; supported: "
                                         r"\['distance_metric', 'triplet_margin'\]"):
        L.get_loss("TripletLoss", margin=1.0)
    with pytest.raises(ValueError, match="unknown distance_metric 'l3'"):
        L.get_loss("TripletLoss", distance_metric="l3")
    with pytest.raises(ValueError, match="directions"):
        L.get_loss("MultipleNegativesRankingLoss", directions=("doc_to_query",))
    with pytest.raises(ValueError, match="num_labels"):
        L.get_loss("SoftmaxLoss")


@pytest.mark.parametrize("name, kwargs, columns, labels, message", [
    ("MultipleNegativesRankingLoss", {}, 1, None,
     r"nli: MultipleNegativesRankingLoss expects at least 2 input column\(s\) \(anchor, positive, "
     r"\[negative_1, \.\.\., negative_n\]\) and no label column; got 1 input column"),
    ("MultipleNegativesRankingLoss", {}, 2, np.zeros(3), "has a label column"),
    ("TripletLoss", {}, 2, None, r"expects 3 input column\(s\) \(anchor, positive, negative\)"),
    ("CoSENTLoss", {}, 2, None, "no label column"),
    ("SoftmaxLoss", {"num_labels": 3}, 2, np.array([0, 1, 3]), r"labels in \[0, 3\), got values from 0 to 3"),
    ("SoftmaxLoss", {"num_labels": 3}, 2, np.array([0.0, 1.5]), "non-integer labels"),
    ("SoftmaxLoss", {"num_labels": 3}, 2, np.array(["a", "b"]), "numeric labels"),
    ("CosineSimilarityLoss", {}, 2, np.array([0.0, 4.5]), r"\[-1, 1\].*divided by 5"),
    ("CoSENTLoss", {}, 2, np.array([0.0, np.nan]), "NaN"),
    ("OnlineContrastiveLoss", {}, 2, np.array([0, 1, 2]), "binary labels"),
    ("ContrastiveLoss", {}, 2, np.array([0, 1, 2]), r"labels in \[0, 1\]"),
    ("BatchHardTripletLoss", {}, 1, np.array([0.5, 1.0]), "integer class id"),
    ("BatchAllTripletLoss", {}, 2, np.array([0, 1]), r"expects 1 input column\(s\) \(sentence,\)"),
    ("AnglELoss", {}, 2, None, "pairs need a label column"),
    ("MegaBatchMarginLoss", {}, 3, None, r"expects 2 input column\(s\) \(anchor, positive\)"),
])
def test_check_inputs_errors(name, kwargs, columns, labels, message):
    loss = L.get_loss(name, **kwargs)
    with pytest.raises(ValueError, match=message):
        loss.check_inputs(columns, labels, "nli")


def test_check_inputs_accepts_valid():
    L.get_loss("SoftmaxLoss", num_labels=3).check_inputs(2, np.array([0, 1, 2]), "nli")
    L.get_loss("MultipleNegativesRankingLoss").check_inputs(5, None)
    L.get_loss("AnglELoss").check_inputs(3, None)
    L.get_loss("BatchHardTripletLoss").check_inputs(1, np.array([1.0, 2.0]))
    L.get_loss("MatryoshkaLoss", loss="CoSENTLoss", matryoshka_dims=[8]).check_inputs(2, np.array([0.1]))
    with pytest.raises(ValueError, match="MatryoshkaLoss around CoSENTLoss: .*no label column"):
        L.get_loss("MatryoshkaLoss", loss="CoSENTLoss", matryoshka_dims=[8]).check_inputs(2, None)


def test_call_errors():
    e = jnp.zeros((4, 8))
    with pytest.raises(ValueError, match=r"expects 3 input column\(s\).*got 2 embedding"):
        L.get_loss("TripletLoss")({}, (e, e))
    with pytest.raises(ValueError, match="one label per row"):
        L.get_loss("CoSENTLoss")({}, (e, e), jnp.zeros(3))
    with pytest.raises(ValueError, match="validity mask"):
        MNRL()({}, (e, e), None, jnp.ones(5, bool))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        MNRL()({}, (e, jnp.zeros((4, 7))))
    with pytest.raises(ValueError, match="exceed the embedding dimension 8"):
        L.get_loss("MatryoshkaLoss", loss="MultipleNegativesRankingLoss", matryoshka_dims=[16, 8])({}, (e, e))
    with pytest.raises(ValueError, match="init_head"):
        L.get_loss("SoftmaxLoss", num_labels=2)({}, (e, e), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="n_dims_per_step=-1"):
        L.get_loss("MatryoshkaLoss", loss="CoSENTLoss", matryoshka_dims=[8, 4], n_dims_per_step=1)
    with pytest.raises(ValueError, match="cannot wrap SoftmaxLoss"):
        L.get_loss("MatryoshkaLoss", loss="SoftmaxLoss", loss_kwargs={"num_labels": 3}, matryoshka_dims=[8])


def test_generic_value_and_grad_matches_direct():
    """value_and_grad(embed_fn, ...) on a linear 'encoder' = autodiff through embeddings; head grads too."""
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((6, 8)), jnp.float32)
    x = [jnp.asarray(rng.standard_normal((8, 6)), jnp.float32) for _ in range(2)]
    labels = jnp.asarray(rng.integers(0, 3, 8))
    loss = L.get_loss("SoftmaxLoss", num_labels=3)
    head = loss.init_head(jax.random.PRNGKey(0), 8)

    def embed_fn(params, features, rng):
        return features["x"] @ params

    value, (gw, gh) = jax.jit(loss.value_and_grad, static_argnums=0)(embed_fn, w, head, [{"x": a} for a in x],
                                                                     labels, None, jax.random.PRNGKey(0))
    ref_value, (rw, rh) = jax.jit(jax.value_and_grad(lambda w, h: loss(h, [a @ w for a in x], labels),
                                                     argnums=(0, 1)))(w, head)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(gw, rw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gh["classifier"]["kernel"], rh["classifier"]["kernel"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("wrapper", ["MatryoshkaLoss", "AdaptiveLayerLoss", "Matryoshka2dLoss"])
def test_wrapping_losses_check_labels_as_their_inner_loss(wrapper):
    """The per-batch label checks (data read as it goes) of a loss around another are the inner loss's."""
    kwargs = {"matryoshka_dims": [16, 8]} if wrapper != "AdaptiveLayerLoss" else {}
    loss = L.get_loss(wrapper, loss="ContrastiveLoss", **kwargs)
    with pytest.raises(ValueError, match=r"ContrastiveLoss expects labels in \[0, 1\]"):
        loss.check_label_values(np.array([0.5, 2.0]), "x")
