"""Distillation: MSELoss, EmbedDistillLoss, MarginMSELoss and DistillKLDivLoss against sentence-transformers 6.3
(value and gradients wrt every column's embeddings, and the projection head's, rtol 1e-5, as tests/test_losses.py);
labels that are vectors through the data pipeline (Arrow and jsonl sources, padded and packed batches, the checks
before compilation); jaxsbert.distill's teacher labels; a short MSELoss training run, packed as unpacked.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert import losses as L

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
from sentence_transformers import util as st_util  # noqa: E402

from helpers import save_tiny_model, write_jsonl  # noqa: E402
from test_losses import ATOL, RTOL, StandInModel, _head, assert_matches_st, ours  # noqa: E402

M = st_losses


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    loss: L.Loss
    st: Callable[[Any], Any]          # model -> sentence-transformers loss
    columns: int
    label_shape: tuple                # one row's label
    batch: int = 12
    dim: int = 16
    neg_inf: bool = False             # some teacher scores -inf (candidates left out)


def _labels(case: Case, batch: int, rng) -> np.ndarray:
    labels = (rng.standard_normal((batch, *case.label_shape)) * 2).astype(np.float32)
    if case.neg_inf:
        labels[::3, -1] = -np.inf
    return labels


def _data(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    embeddings = [rng.standard_normal((case.batch, case.dim)).astype(np.float32) for _ in range(case.columns)]
    return embeddings, _labels(case, case.batch, rng)


PROJ = 24        # projection_dim: a teacher of another dimension than the student's 16

CASES = [
    Case("MSELoss-1col", L.get_loss("MSELoss"), lambda m: M.MSELoss(m), 1, (16,)),
    Case("MSELoss-2col-broadcast", L.get_loss("MSELoss"), lambda m: M.MSELoss(m), 2, (16,)),
    Case("MSELoss-2col-per-column", L.get_loss("MSELoss"), lambda m: M.MSELoss(m), 2, (2, 16)),
    Case("MSELoss-projection", L.get_loss("MSELoss", projection_dim=PROJ), lambda m: M.MSELoss(m, projection_dim=PROJ),
         2, (PROJ,)),
    Case("EmbedDistillLoss-cosine", L.get_loss("EmbedDistillLoss"), lambda m: M.EmbedDistillLoss(m), 2, (16,)),
    Case("EmbedDistillLoss-l2-per-column", L.get_loss("EmbedDistillLoss", distance_metric="l2"),
         lambda m: M.EmbedDistillLoss(m, distance_metric="l2"), 3, (3, 16)),
    Case("EmbedDistillLoss-mse", L.get_loss("EmbedDistillLoss", distance_metric="mse"),
         lambda m: M.EmbedDistillLoss(m, distance_metric="mse"), 1, (16,)),
    Case("EmbedDistillLoss-cosine-projection", L.get_loss("EmbedDistillLoss", projection_dim=PROJ),
         lambda m: M.EmbedDistillLoss(m, projection_dim=PROJ), 2, (2, PROJ)),
    Case("MarginMSELoss-margin", L.get_loss("MarginMSELoss"), lambda m: M.MarginMSELoss(m), 3, ()),
    Case("MarginMSELoss-1neg-scores", L.get_loss("MarginMSELoss"), lambda m: M.MarginMSELoss(m), 3, (2,)),
    Case("MarginMSELoss-3neg-margins", L.get_loss("MarginMSELoss"), lambda m: M.MarginMSELoss(m), 5, (3,)),
    Case("MarginMSELoss-3neg-scores", L.get_loss("MarginMSELoss"), lambda m: M.MarginMSELoss(m), 5, (4,)),
    *[Case(f"MarginMSELoss-{fn}", L.get_loss("MarginMSELoss", similarity_fct=fn),
           lambda m, fn=fn: M.MarginMSELoss(m, similarity_fct=getattr(st_util, fn)), 4, (2,))
      for fn in ("pairwise_cos_sim", "pairwise_euclidean_sim", "pairwise_manhattan_sim", "pairwise_angle_sim")],
    Case("DistillKLDivLoss", L.get_loss("DistillKLDivLoss"), lambda m: M.DistillKLDivLoss(m), 3, (2,)),
    Case("DistillKLDivLoss-4cand", L.get_loss("DistillKLDivLoss"), lambda m: M.DistillKLDivLoss(m), 5, (4,)),
    Case("DistillKLDivLoss-temperature", L.get_loss("DistillKLDivLoss", temperature=2.0),
         lambda m: M.DistillKLDivLoss(m, temperature=2.0), 4, (3,)),
    Case("DistillKLDivLoss-student-teacher-T", L.get_loss("DistillKLDivLoss", student_temperature=0.5,
                                                          teacher_temperature=3.0),
         lambda m: M.DistillKLDivLoss(m, student_temperature=0.5, teacher_temperature=3.0), 4, (3,)),
    Case("DistillKLDivLoss-cos", L.get_loss("DistillKLDivLoss", similarity_fct="pairwise_cos_sim", temperature=0.5),
         lambda m: M.DistillKLDivLoss(m, similarity_fct=st_util.pairwise_cos_sim, temperature=0.5), 4, (3,)),
    Case("DistillKLDivLoss-neg-inf", L.get_loss("DistillKLDivLoss"), lambda m: M.DistillKLDivLoss(m), 4, (3,),
         neg_inf=True),
]
CASE_IDS = [c.id for c in CASES]
DISTILL = {"MSELoss", "EmbedDistillLoss", "MarginMSELoss", "DistillKLDivLoss"}


def test_every_distill_loss_has_a_case_and_is_registered():
    assert {type(c.loss).name for c in CASES} == DISTILL
    assert DISTILL <= set(L.LOSSES)


# ---------------------------------------------------------------------------------------------------
# Value and gradients against sentence-transformers
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_sentence_transformers(case):
    embeddings, labels = _data(case)
    value, grads = assert_matches_st(case, embeddings, embeddings, labels)
    assert np.isfinite(value) and value != 0.0, f"{case.id}: degenerate case (loss {value})"
    assert all(np.abs(g).max() > 0 for g in grads), f"{case.id}: degenerate case (a column without gradient)"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_comparison_detects_a_perturbation(case):
    """The comparison above is not vacuous: 1e-3 noise on our side's embeddings is caught."""
    embeddings, labels = _data(case)
    rng = np.random.default_rng(7)
    perturbed = [(e + 1e-3 * rng.standard_normal(e.shape)).astype(np.float32) for e in embeddings]
    with pytest.raises(AssertionError):
        assert_matches_st(case, perturbed, embeddings, labels)


def test_projection_head_layout_and_init():
    loss = L.get_loss("EmbedDistillLoss", projection_dim=48)
    head = loss.init_head(jax.random.PRNGKey(0), 32)
    assert head["projection"]["kernel"].shape == (32, 48) and head["projection"]["bias"].shape == (48,)
    bound = 1 / np.sqrt(32)
    assert bound * 0.9 < float(jnp.abs(head["projection"]["kernel"]).max()) <= bound
    state = loss.head_state_dict(head)
    st = M.EmbedDistillLoss(StandInModel([], 32), projection_dim=48)
    st.projection.load_state_dict({k.split(".", 1)[1]: torch.tensor(v) for k, v in state.items()})
    back = loss.head_from_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})   # save_projection's keys
    np.testing.assert_array_equal(back["projection"]["kernel"], head["projection"]["kernel"])
    assert L.get_loss("MSELoss").init_head(jax.random.PRNGKey(0), 32) == {}


def test_projection_head_is_saved_for_load_projection(tmp_path):
    """The trainer writes loss heads with export.save_loss_head: a projection as save_projection's file."""
    from jaxsbert.interop.export import load_loss_head, save_loss_head

    loss = L.get_loss("MSELoss", projection_dim=24)
    head = jax.device_get(loss.init_head(jax.random.PRNGKey(0), 16))
    directory = save_loss_head(head, str(tmp_path / "head"), loss=loss.name, **loss.config_dict())
    st = M.MSELoss(StandInModel([], 16), projection_dim=24)
    st.load_projection(str(tmp_path / "head" / "model.safetensors"))
    np.testing.assert_array_equal(st.projection.weight.detach().numpy(), np.asarray(head["projection"]["kernel"]).T)
    back = load_loss_head(directory)
    np.testing.assert_array_equal(back["projection"]["bias"], head["projection"]["bias"])
    assert json.load(open(tmp_path / "head" / "config.json"))["out_features"] == 24


def test_config_dicts_match_sentence_transformers():
    model = StandInModel([], 16)
    for ours_loss, st in [(L.get_loss("MSELoss"), M.MSELoss(model)),
                          (L.get_loss("EmbedDistillLoss", distance_metric="l2"), M.EmbedDistillLoss(model, "l2")),
                          (L.get_loss("MarginMSELoss"), M.MarginMSELoss(model)),
                          (L.get_loss("DistillKLDivLoss", temperature=2.0), M.DistillKLDivLoss(model, temperature=2.0))]:
        theirs = st.get_config_dict()
        mine = ours_loss.config_dict()
        assert {k: mine[k] for k in theirs} == theirs


# ---------------------------------------------------------------------------------------------------
# Padding rows change nothing
# ---------------------------------------------------------------------------------------------------

PADDING_CASES = [c for c in CASES if c.id in ("MSELoss-2col-per-column", "MSELoss-projection", "EmbedDistillLoss-cosine",
                                              "EmbedDistillLoss-l2-per-column", "MarginMSELoss-3neg-scores",
                                              "MarginMSELoss-margin", "MarginMSELoss-pairwise_euclidean_sim",
                                              "DistillKLDivLoss-temperature", "DistillKLDivLoss-neg-inf")]


@pytest.mark.parametrize("case", PADDING_CASES, ids=[c.id for c in PADDING_CASES])
def test_padding_rows_change_nothing(case):
    embeddings, labels = _data(case)
    head = _head(case)
    value, grads, head_grads = ours(case, head, embeddings, labels)
    rng = np.random.default_rng(3)
    total = case.batch + 4
    valid = np.sort(rng.choice(total, case.batch, replace=False))       # padding rows interleaved
    mask = np.zeros(total, bool)
    mask[valid] = True
    padded = []
    for e in embeddings:
        p = rng.standard_normal((total, case.dim)).astype(np.float32) * 3
        p[np.flatnonzero(~mask)[:2]] = 0.0          # all-zero padding rows, as empty inputs embed to
        p[valid] = e
        padded.append(p)
    padded_labels = np.zeros((total, *case.label_shape), np.float32)   # what the batches carry: zeros
    padded_labels[valid] = labels
    value_p, grads_p, head_grads_p = ours(case, head, padded, padded_labels, jnp.asarray(mask))
    np.testing.assert_allclose(value_p, value, rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: value with padding")
    for c, (gp, g) in enumerate(zip(grads_p, grads)):
        assert np.all(np.isfinite(gp)), f"{case.id}: non-finite gradient with padding"
        np.testing.assert_allclose(gp[valid], g, rtol=RTOL, atol=ATOL, err_msg=f"{case.id}: column {c} grads")
        assert np.all(gp[~mask] == 0), f"{case.id}: padding rows get a gradient"
    for a, b in zip(jax.tree_util.tree_leaves(head_grads_p), jax.tree_util.tree_leaves(head_grads)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------------
# Errors say what the loss expects
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, columns, labels, message", [
    ("MSELoss", {}, 2, np.zeros(4), r"teacher embeddings .* got a number per row"),
    ("MSELoss", {}, 2, np.zeros((4, 3, 8)), r"hold 3 teacher embeddings per row .* for 2 input column"),
    ("MSELoss", {}, 1, np.full((2, 8), np.nan), r"finite labels.*first at row 0: value 0 is nan"),
    ("EmbedDistillLoss", {}, 1, np.array([[0.0, np.inf]]), "finite labels"),
    ("MarginMSELoss", {}, 2, np.zeros(4), r"expects at least 3 input column"),
    ("MarginMSELoss", {}, 4, np.zeros(4), r"a list of 2 margins or of 3 scores, for 2 negative columns, got a number"),
    ("MarginMSELoss", {}, 3, np.zeros((4, 3)), r"a list of 2 \(the scores\), got lists of shape \(3,\)"),
    ("DistillKLDivLoss", {}, 4, np.zeros((4, 2)), r"scores of the 3 candidate columns .* got lists of shape \(2,\)"),
    ("DistillKLDivLoss", {}, 3, np.array([[0.0, np.nan]]), "NaN or inf"),
    ("DistillKLDivLoss", {}, 3, np.array([[0.0, np.inf]]), "NaN or inf"),
    ("DistillKLDivLoss", {}, 3, np.array([[0.0, 1.0], [-np.inf, -np.inf]]), "every teacher score of a row is -inf"),
    ("CoSENTLoss", {}, 2, np.zeros((4, 8)), r"got labels that are lists \(shape \(8,\) per row\)"),
    ("MSELoss", {}, 2, None, "no label column"),
])
def test_check_inputs_errors(name, kwargs, columns, labels, message):
    with pytest.raises(ValueError, match=message):
        L.get_loss(name, **kwargs).check_inputs(columns, labels, "distill")


def test_check_inputs_accepts_valid():
    L.get_loss("MSELoss").check_inputs(2, np.zeros((3, 8)))
    L.get_loss("MSELoss").check_inputs(2, np.zeros((3, 2, 8)))
    L.get_loss("MarginMSELoss").check_inputs(3, np.zeros(3))
    L.get_loss("MarginMSELoss").check_inputs(3, np.zeros((3, 1)))
    L.get_loss("MarginMSELoss").check_inputs(5, np.zeros((3, 4)))
    L.get_loss("DistillKLDivLoss").check_inputs(4, np.array([[1.0, -np.inf, 0.0]]))
    L.get_loss("MSELoss").check_inputs(2, np.zeros((0, 8)))           # a jsonl source before its rows are read
    L.get_loss("DistillKLDivLoss").check_inputs(3, np.zeros((0, 2)))


def test_dimension_against_the_model():
    loss = L.get_loss("MSELoss")
    loss.check_label_shape((32,), 2, 32)
    with pytest.raises(ValueError, match=r"have 24 dimensions but the model's embeddings have 32; .* projection_dim=24"):
        loss.check_label_shape((24,), 2, 32, "dataset 'x'")
    with pytest.raises(ValueError, match=r"have 32 dimensions but projection_dim=24"):
        L.get_loss("EmbedDistillLoss", projection_dim=24).check_label_shape((32,), 1, 32)
    with pytest.raises(ValueError, match="have 24 dimensions but the model's embeddings have 16"):   # when traced
        loss({}, (jnp.zeros((4, 16)),), jnp.zeros((4, 24)))
    with pytest.raises(ValueError, match="one label per row"):
        loss({}, (jnp.zeros((4, 16)),), jnp.zeros((3, 16)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="distance_metric must be one of"):
        L.get_loss("EmbedDistillLoss", distance_metric="dot")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['distance_metric'\]"):
        L.get_loss("MSELoss", distance_metric="l2")
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        L.get_loss("DistillKLDivLoss", teacher_temperature=0.0)
    with pytest.raises(ValueError, match="unknown similarity_fct 'cos'"):
        L.get_loss("MarginMSELoss", similarity_fct="cos")
    assert L.get_loss("MarginMSELoss", similarity_fct="util.pairwise_cos_sim").similarity_fct == "pairwise_cos_sim"
    assert L.get_loss("DistillKLDivLoss", similarity_fct="dot").similarity_fct == "pairwise_dot_score"


# ---------------------------------------------------------------------------------------------------
# Labels that are vectors through the data pipeline
# ---------------------------------------------------------------------------------------------------

TEXTS = ["a man plays a guitar", "a dog runs in the park", "the cat sleeps", "a woman reads a book",
         "children play football", "a car on the street", "the train leaves the city", "an old house",
         "a small red ball", "the river is quiet", "a horse eats grass"]


def _vectors(n, shape=(4,), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("label, message", [
    ([[1.0, 2.0], [1.0, 2.0], [1.0]], r"row 2: 1 values, but row 0 has 2"),
    ([[1.0, 2.0], None, [1.0, 2.0]], r"row 1: None, expected a list"),
    ([[1.0, 2.0], [1.0, None], [1.0, 2.0]], r"row 1: None in the list"),
    ([[1.0, 2.0], [1.0, float("nan")], [1.0, 2.0]], r"row 1: NaN in the list \(value 1\)"),
    ([["a", "b"], ["c", "d"], ["e", "f"]], r"has type list<item: string>, expected lists of numbers"),
    ([[[1.0], [2.0]], [[1.0], [2.0]], [[1.0], [2.0, 3.0]]], r"row 2 \(list 1 of the row\): 2 values, but row 0 has 1"),
    ([[[[1.0]]]] * 3, r"has type .*: lists nested more than 2 deep"),
])
def test_arrow_vector_labels_are_checked(label, message):
    from jaxsbert.data import validate_dataset

    ds = datasets.Dataset.from_dict({"text": TEXTS[:3], "label": label})
    with pytest.raises(ValueError, match=f"dataset 'distill' \\(in-memory dataset\\): label column 'label',? {message}"):
        validate_dataset(ds, name="dataset 'distill'")


def test_arrow_sources_read_vector_labels():
    from jaxsbert.data import ArrowSource, tokenize_dataset
    from jaxsbert.data.columns import label_shape

    flat, per_column = _vectors(11, (4,)), _vectors(11, (2, 3), seed=1)
    fixed = datasets.Dataset.from_dict({"a": TEXTS, "label": list(flat)}).cast_column(
        "label", datasets.Sequence(datasets.Value("float32"), length=4))
    for ds, values in [(datasets.Dataset.from_dict({"a": TEXTS, "label": flat.tolist()}), flat), (fixed, flat),
                       (datasets.Dataset.from_dict({"a": TEXTS, "b": TEXTS, "label": per_column.tolist()}),
                        per_column)]:
        shuffled = ds.select([5, 0, 9, 2, 7, 1, 3, 4, 6, 8, 10])            # an indices mapping
        order = np.asarray([5, 0, 9, 2, 7, 1, 3, 4, 6, 8, 10])
        source = ArrowSource(shuffled)
        assert source.label_shape == values.shape[1:] == label_shape(shuffled, "label")
        np.testing.assert_array_equal(source.read(np.array([2, 0])).labels, values[order[[2, 0]]])
        np.testing.assert_array_equal(source.all_labels(), values[order])
        assert source.read(np.array([], np.int64)).labels.shape == (0, *values.shape[1:])
        data = tokenize_dataset(shuffled, lambda texts: [[1, 2]] * len(texts))
        assert data.label_shape == values.shape[1:] and data.labels.dtype == np.float32
        np.testing.assert_array_equal(data.labels, values[order])


def test_jsonl_vector_labels(tmp_path):
    from jaxsbert.data import BadRowError, LineSource

    values = _vectors(4, (3,))
    rows = [{"a": t, "label": v.tolist()} for t, v in zip(TEXTS, values)]
    source = LineSource([write_jsonl(str(tmp_path / "ok.jsonl"), rows)])
    assert source.label_shape == (3,) and source.label_dtype == np.float32
    np.testing.assert_allclose(source.read(np.array([3, 1])).labels, values[[3, 1]])
    assert source.read(np.array([], np.int64)).labels.shape == (0, 3)
    for bad, message in [([1.0, 2.0], r"bad.jsonl:3: label column 'label' \(row 2\): a list of 2 values, expected 3"),
                         ([1.0, "2", 3.0], r"bad.jsonl:3: label column 'label' \(row 2\): '2' \(str\) at position \[1\]"),
                         (0.5, r"row 2\): 0.5 \(float\), expected a list of 3 numbers"),
                         (None, r"row 2\): None \(NoneType\), expected a list of 3"),
                         ([1.0, float("nan"), 3.0], r"row 2\): NaN at position \[1\]")]:
        broken = rows[:2] + [{"a": TEXTS[2], "label": bad}] + rows[3:]
        path = write_jsonl(str(tmp_path / "bad.jsonl"), broken)
        with pytest.raises(BadRowError, match=message):
            LineSource([path]).read(np.arange(4))
        skipping = LineSource([path], on_bad_row="skip")
        read = skipping.read(np.arange(4))
        assert read.skipped == [2] and read.labels.shape == (4, 3) and not read.labels[2].any()
    with pytest.raises(BadRowError, match=r"first.jsonl:1: label column 'label' \(row 0\): an empty list"):
        LineSource([write_jsonl(str(tmp_path / "first.jsonl"), [{"a": "x", "label": []}])])
    csv = tmp_path / "vectors.csv"
    csv.write_text('a,label\nx,"[0.1, 0.2]"\n')
    with pytest.raises(ValueError, match=r"vectors.csv: label column 'label' holds lists .* to a .jsonl or .parquet"):
        LineSource([str(csv)])


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from jaxsbert.encoder import Tokenizer

    return Tokenizer(minilm_path, 32)


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("kind", ["arrow", "jsonl"])
def test_loader_batches_carry_vector_labels(tokenizer, tmp_path, packing, kind):
    """Batches of 4 rows from 11 (the last batch partial): labels [4, 2, 3], each valid row's its dataset row's,
    padding rows zero; on 2 processes each holds its rows' labels."""
    from jaxsbert.data import DataLoader, LineSource
    from jaxsbert.data.batching import local_rows

    values = _vectors(11, (2, 3))
    if kind == "arrow":
        data = datasets.Dataset.from_dict({"a": TEXTS, "b": TEXTS[::-1], "label": values.tolist()})
    else:
        data = LineSource([write_jsonl(str(tmp_path / "d.jsonl"), [
            {"a": a, "b": b, "label": v.tolist()} for a, b, v in zip(TEXTS, TEXTS[::-1], values)])])
    for process in range(2):
        loader = DataLoader(data, tokenizer, 4, seed=3, packing=packing, process_index=process, process_count=2,
                            agree=lambda v: np.asarray(v))
        plan = loader.plan(0)
        for item, (_, rows) in zip(loader, plan):
            batch = item.batch
            assert batch["labels"].shape == (2, 2, 3) and batch["labels"].dtype == np.float32
            which, at = local_rows(len(rows), 4, process, 2)
            np.testing.assert_allclose(batch["labels"][at], values[rows[which]])
            assert batch["mask"][at].all() and batch["mask"].sum() == len(at)
            assert not batch["labels"][~batch["mask"]].any()


def test_group_by_label_refuses_vector_labels(tokenizer):
    from jaxsbert.data import DataLoader

    ds = datasets.Dataset.from_dict({"a": TEXTS, "label": _vectors(11).tolist()})
    with pytest.raises(ValueError, match="'group_by_label' needs one class label per row"):
        DataLoader(ds, tokenizer, 4, batch_sampler="group_by_label")


# ---------------------------------------------------------------------------------------------------
# Teacher labels (jaxsbert.distill) and training
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("distill")
    return {"student": save_tiny_model(str(root / "student"), minilm_path, seed=0),
            "teacher": save_tiny_model(str(root / "teacher"), minilm_path, seed=1, normalize=True)}


@pytest.fixture(scope="module")
def teacher(models):
    from jaxsbert import SentenceEncoder

    return SentenceEncoder.from_pretrained(models["teacher"])


def test_embed_labels(teacher):
    from jaxsbert.distill import embed_labels

    ds = datasets.Dataset.from_dict({"english": TEXTS[:6], "french": TEXTS[5::-1]})
    one = embed_labels(ds, teacher, columns="english", batch_size=4)
    assert one.column_names == ["english", "french", "label"]
    np.testing.assert_allclose(np.asarray(one["label"]), teacher.encode(TEXTS[:6]), rtol=1e-6, atol=1e-6)
    both = embed_labels(ds, teacher)
    labels = np.asarray(both["label"])
    assert labels.shape == (6, 2, 32)
    np.testing.assert_allclose(labels[:, 1], teacher.encode(TEXTS[5::-1]), rtol=1e-6, atol=1e-6)
    L.get_loss("MSELoss").check_inputs(2, labels)            # the layouts MSELoss takes, for both columns
    L.get_loss("MSELoss").check_label_shape(labels.shape[1:], 2, teacher.embedding_dim)
    with pytest.raises(ValueError, match="already has a label column 'label'; pass overwrite=True"):
        embed_labels(both, teacher)
    again = embed_labels(both, teacher, columns="french", overwrite=True)
    np.testing.assert_allclose(np.asarray(again["label"]), labels[:, 1], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"no input column\(s\) \['german'\]"):
        embed_labels(ds, teacher, columns=["german"])
    three = datasets.Dataset.from_dict({"a": TEXTS[:3], "b": TEXTS[:3], "c": TEXTS[:3]})
    with pytest.raises(ValueError, match="one per input column, in order"):
        embed_labels(three, teacher, columns=["a", "c"])


def test_score_labels(teacher):
    from jaxsbert.distill import score_labels

    ds = datasets.Dataset.from_dict({"query": TEXTS[:5], "pos": TEXTS[1:6], "neg1": TEXTS[2:7], "neg2": TEXTS[3:8]})
    q, p, n1, n2 = (teacher.encode(ds[c]) for c in ds.column_names)
    expected = np.stack([np.sum(q * d, axis=1) for d in (p, n1, n2)], axis=1)     # a normalising teacher: cosine
    scores = np.asarray(score_labels(ds, teacher)["label"])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    margins = np.asarray(score_labels(ds, teacher, margins=True)["label"])
    np.testing.assert_allclose(margins, expected[:, :1] - expected[:, 1:], rtol=1e-5, atol=1e-6)
    triplet = score_labels(ds.remove_columns("neg2"), teacher, margins=True, similarity_fn_name="euclidean")
    euclid = -np.linalg.norm(q - p, axis=1) + np.linalg.norm(q - n1, axis=1)
    np.testing.assert_allclose(np.asarray(triplet["label"]), euclid, rtol=1e-5, atol=1e-6)   # a number per row
    L.get_loss("MarginMSELoss").check_inputs(3, np.asarray(triplet["label"]))
    L.get_loss("DistillKLDivLoss").check_inputs(4, scores)
    L.get_loss("MarginMSELoss").check_inputs(4, margins)
    with pytest.raises(ValueError, match="at least 3"):
        score_labels(ds, teacher, columns=["query", "pos"])


def _train_config(model, source, packing="auto", **over):
    from jaxsbert.config import build_config

    base = {"name": "distill", "model": model, "seed": 3,
            "data": {"train": {"train": {"source": source}}, "eval": {}, "packing": packing},
            "loss": {"name": "MSELoss"}, "batch_size": 8, "max_steps": 3,
            "optim": {"lr": 1e-3, "warmup_steps": 0}, "log_every": 1, "eval_before": False,
            "checkpoint": {"every_steps": 0, "keep": 1, "async": False}, "save_model": False, "tensorboard": False}
    base.update(over)
    return build_config(base=base)


def _losses(workdir) -> np.ndarray:
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return np.asarray([r["loss"] for r in records if r["kind"] == "train"])


@pytest.fixture(scope="module")
def distill_data(models, teacher, tmp_path_factory):
    """(english, french) rows with the teacher's English embeddings as labels (embed_labels), as parquet."""
    from jaxsbert.distill import embed_labels

    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()
    english = [" ".join(rng.choice(words, size=int(rng.integers(3, 9)))) for _ in range(20)]
    ds = datasets.Dataset.from_dict({"english": english, "french": [t[::-1] for t in english]})
    path = str(tmp_path_factory.mktemp("distill_data") / "distill.parquet")
    embed_labels(ds, teacher, columns="english").to_parquet(path)
    return path


@pytest.fixture(scope="module")
def unpacked_run(models, distill_data, tmp_path_factory):
    """Losses of 3 MSELoss steps on one device, padded batches (dropout on)."""
    from jaxsbert.training.loop import train

    workdir = tmp_path_factory.mktemp("unpacked")
    train(_train_config(models["student"], distill_data, False), str(workdir))
    losses = _losses(workdir)
    assert len(losses) == 3 and np.all(np.isfinite(losses)) and losses[0] > 0
    return losses


def test_mse_distillation_trains_packed_as_unpacked(models, distill_data, unpacked_run, tmp_path):
    from jaxsbert.training.loop import train

    train(_train_config(models["student"], distill_data, True), str(tmp_path))
    np.testing.assert_allclose(_losses(tmp_path), unpacked_run, rtol=1e-5)


def test_mse_distillation_on_two_devices(models, distill_data, unpacked_run, tmp_path):
    """The same run on 2 simulated devices (labels [B, D] sharded on the batch axis), packed: the same losses."""
    from test_parallel import _load, _run_workers, _write_spec

    config = _train_config(models["student"], distill_data, True)
    spec = _write_spec(tmp_path / "spec.json", {"runs": [{"name": "d2", "workdir": str(tmp_path / "d2"),
                                                          "config": config}], "out": str(tmp_path / "results")})
    _run_workers([(spec, 2)], tmp_path / "cache")
    np.testing.assert_allclose(_load(str(tmp_path / "results"))["d2/loss"], unpacked_run, rtol=1e-5)


def test_wrong_teacher_dimension_fails_before_compiling(models, distill_data, tmp_path):
    from jaxsbert.training.loop import prepare

    small = str(tmp_path / "small.jsonl")
    write_jsonl(small, [{"english": t, "french": t, "label": [0.5] * 8} for t in TEXTS])
    with pytest.raises(ValueError, match=r"dataset 'train' \(.*small.jsonl\), label column 'label': MSELoss: the "
                                         r"teacher embeddings \(labels\) have 8 dimensions but the model's embeddings "
                                         r"have 32; .* projection_dim=8"):
        prepare(_train_config(models["student"], small))
    with pytest.raises(ValueError, match=r"dataset 'train' \(.*distill.parquet\).*have 32 dimensions but "
                                         r"projection_dim=16"):
        prepare(_train_config(models["student"], distill_data, loss={"name": "MSELoss", "projection_dim": 16}))
