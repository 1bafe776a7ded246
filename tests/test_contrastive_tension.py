"""ContrastiveTensionLoss / ContrastiveTensionLossInBatchNegatives against sentence-transformers 6.3.

- end to end on tiny random BERTs loaded by both libraries (dropout off: ``eval()`` there, ``rng=None`` here),
  with model1 given other weights than model2 so that a swap of the two copies shows: the value and the
  gradients wrt model2 (the model), model1 (the head's copy) and logit_scale, labels given and inferred;
- padding rows change nothing; packed == padded batches (InBatchNegatives), with dropout; the two copies draw
  different dropout masks; ContrastiveTensionLoss refuses packed batches (and the trainer does not pack them);
- a short training run through jaxsbert.training.loop.train: finite loss, both copies and logit_scale move,
  the exported model is model2, and a resume is exact.
"""
from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.data.buckets import pad_token_ids
from jaxsbert.data.packing import pack_token_ids
from jaxsbert.encoder import SentenceEncoder
from jaxsbert.interop.hf import flax_to_state_dict
from jaxsbert.interop.st_dir import init_params
from jaxsbert.losses import ContrastiveTensionLoss, ContrastiveTensionLossInBatchNegatives, get_loss
from jaxsbert.losses.contrastive_tension import contrastive_tension_pairs, identical_rows
from jaxsbert.models.sentence_model import SentenceModel
from jaxsbert.training.step import make_embed_fn

from helpers import latest_checkpoint, save_tiny_model, tiny_config, write_jsonl

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

RTOL = 1e-5

SENTENCES = ["A man is eating food.", "A woman plays the violin.", "The cat sleeps on the mat.",
             "Stocks fell sharply on Monday.", "He drove to work.", "It's nice weather outside today.",
             "The kids are playing football.", "A chef is cooking pasta."]
# pairs: identical (rows 0, 3, 6), different, and one sentence that is a prefix of the other (row 5)
FIRST = SENTENCES[:7]
SECOND = [SENTENCES[0], SENTENCES[4], SENTENCES[7], SENTENCES[3], SENTENCES[1],
          "It's nice weather outside today. Very nice indeed, and warm.", SENTENCES[6]]
INFERRED = [1, 0, 0, 1, 0, 0, 1]


def _close(actual, expected, rtol=RTOL):
    """Element-wise within ``rtol`` of the expected value, entries near zero within rtol of the array's largest."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected))))


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_path):
    """(model directory, model1 directory): two tiny random BERTs (seeds 0 and 1), dropout 0.1 in their configs."""
    root = tmp_path_factory.mktemp("ct")
    return (save_tiny_model(str(root / "model"), minilm_path, seed=0),
            save_tiny_model(str(root / "model1"), minilm_path, seed=1))


def _st_run(cls, model_dir, model1_dir, columns, labels=None, **options):
    """(value, model2 grads, model1 grads, logit_scale grad or None) from sentence-transformers, model1's
    weights replaced by those of ``model1_dir`` after the loss copied the model."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    loss = cls(model, **options)
    loss.model1.load_state_dict(SentenceTransformer(model1_dir, device="cpu").state_dict())
    loss.eval()
    value = loss([model.tokenize(texts) for texts in columns],
                 None if labels is None else torch.tensor(labels, dtype=torch.float32))
    value.backward()

    def grads(m):
        return {n: p.grad.numpy() for n, p in m[0].auto_model.named_parameters() if p.grad is not None}
    scale = getattr(loss, "logit_scale", None)
    return float(value.detach()), grads(loss.model2), grads(loss.model1), \
        None if scale is None else float(scale.grad)


def _ours(model_dir, model1_dir, loss, columns, labels=None):
    model, model1 = SentenceEncoder.from_pretrained(model_dir), SentenceEncoder.from_pretrained(model1_dir)
    embed_fn = make_embed_fn(SentenceModel(model.config), dropout=False)
    head = loss.init_head(jax.random.PRNGKey(0), model.embedding_dim, params=model.params)
    for x, y in zip(jax.tree_util.tree_leaves(head["model1"]), jax.tree_util.tree_leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))    # model1 starts as the model
    head = {**head, "model1": model1.params}
    features = tuple(pad_token_ids(model.tokenizer(texts), 32, len(texts)) for texts in columns)
    labels = None if labels is None else jnp.asarray(labels, jnp.float32)
    return jax.jit(lambda p, h: loss.value_and_grad(embed_fn, p, h, features, labels, None, None))(model.params, head)


def _check_param_grads(ours, theirs):
    """Every encoder parameter's gradient within 1e-5 of sentence-transformers', relative to that gradient's
    largest entry; the attention key biases', zero up to rounding (softmax ignores a shift), relative to the
    largest entry of all."""
    ours = flax_to_state_dict(ours["transformer"])
    shared = sorted(set(ours) & set(theirs))
    assert len(shared) == len(theirs) >= 30 and "embeddings.word_embeddings.weight" in shared, shared
    scale = max(float(np.max(np.abs(theirs[name]))) for name in shared)
    for name in shared:
        if name.endswith("attention.self.key.bias"):
            np.testing.assert_allclose(ours[name], theirs[name], rtol=RTOL, atol=RTOL * scale, err_msg=name)
        else:
            _close(ours[name], theirs[name])


@pytest.mark.parametrize("labels", [None, [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.25]], ids=["inferred", "given"])
def test_contrastive_tension_equals_sentence_transformers(models, labels):
    value_st, g2_st, g1_st, _ = _st_run(st_losses.ContrastiveTensionLoss, *models, [FIRST, SECOND], labels)
    value, (g2, gh) = _ours(*models, get_loss("ContrastiveTensionLoss"), [FIRST, SECOND], labels)
    _close(value, value_st)
    _check_param_grads(g2, g2_st)
    _check_param_grads(gh["model1"], g1_st)
    assert set(gh) == {"model1"}


@pytest.mark.parametrize("options", [{}, {"scale": 1.0, "similarity_fct": "dot_score"}, {"scale": 5.0}])
def test_in_batch_negatives_equals_sentence_transformers(models, options):
    from sentence_transformers import util

    st_options = {**options, **({"similarity_fct": util.dot_score} if "similarity_fct" in options else {})}
    value_st, g2_st, g1_st, scale_st = _st_run(st_losses.ContrastiveTensionLossInBatchNegatives, *models,
                                               [SENTENCES], **st_options)
    loss = get_loss("ContrastiveTensionLossInBatchNegatives", **options)
    value, (g2, gh) = _ours(*models, loss, [SENTENCES])
    _close(value, value_st)
    _check_param_grads(g2, g2_st)
    _check_param_grads(gh["model1"], g1_st)
    _close(gh["logit_scale"], scale_st)
    assert abs(scale_st) > 1e-6


def test_inferred_labels_compare_the_tokens_only():
    """identical_rows: the tokens under the attention mask, in order, as sentence-transformers compares them."""
    a = {"input_ids": np.array([[5, 6, 7, 0], [5, 6, 7, 0], [5, 6, 0, 0], [0, 0, 0, 0], [5, 6, 7, 0]]),
         "attention_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]])}
    b = {"input_ids": np.array([[5, 6, 7, 0, 0, 0], [0, 5, 6, 7, 0, 0], [5, 6, 7, 0, 0, 0], [0] * 6,
                                [5, 6, 8, 0, 0, 0]]),
         "attention_mask": np.array([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [0] * 6,
                                     [1, 1, 1, 0, 0, 0]])}
    np.testing.assert_array_equal(identical_rows(a, b), [1, 1, 0, 1, 0])


def test_labels_given_or_inferred_and_checked(models):
    """The inferred labels of FIRST/SECOND are INFERRED (so the parity test's 'inferred' case tests them), and
    the given labels are used as given."""
    model = SentenceEncoder.from_pretrained(models[0])
    features = [pad_token_ids(model.tokenizer(t), 32, len(t)) for t in (FIRST, SECOND)]
    np.testing.assert_array_equal(identical_rows(*features), INFERRED)
    loss = ContrastiveTensionLoss()
    emb = (jnp.ones((7, 4)), jnp.full((7, 4), 0.5))
    np.testing.assert_allclose(loss({}, emb, jnp.asarray(INFERRED, jnp.float32)),
                               3 * np.log1p(np.exp(-2.0)) + 4 * np.log1p(np.exp(2.0)), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the labels"):
        loss({}, emb)
    loss.check_inputs(2, None)
    loss.check_inputs(2, np.array([0, 1, 0.5]))
    with pytest.raises(ValueError, match=r"labels in \[0, 1\]"):
        loss.check_inputs(2, np.array([0, 2]))
    with pytest.raises(ValueError, match="expects 2 input column"):
        loss.check_inputs(1, None)
    with pytest.raises(ValueError, match="expects 1 input column"):
        ContrastiveTensionLossInBatchNegatives().check_inputs(2, None)
    with pytest.raises(ValueError, match="needs the model's parameters"):
        loss.init_head(jax.random.PRNGKey(0), 32)
    with pytest.raises(ValueError, match="scale must be a positive"):
        ContrastiveTensionLossInBatchNegatives(scale=0.0)
    assert ContrastiveTensionLossInBatchNegatives(similarity_fct="util.cos_sim").config_dict() == \
        {"scale": 20.0, "similarity_fct": "cos_sim"}
    assert loss.config_dict() == {}


def test_pairs_as_the_contrastive_tension_data_loader():
    sentences = [f"sentence {i}" for i in range(40)]
    rows = contrastive_tension_pairs(sentences, batch_size=8, pos_neg_ratio=4)
    assert len(rows) == 16        # 40 // (2 * 8 - 8 // 4) = 2 batches of 8 pairs
    assert [r["label"] for r in rows] == [1, 0, 0, 0] * 4
    assert all((r["sentence1"] == r["sentence2"]) == bool(r["label"]) for r in rows)
    used = [r["sentence1"] for r in rows] + [r["sentence2"] for r in rows if not r["label"]]
    assert len(used) == len(set(used)) == 28
    with pytest.raises(ValueError, match="multiple of pos_neg_ratio"):
        contrastive_tension_pairs(sentences, batch_size=6, pos_neg_ratio=4)


# ---------------------------------------------------------------------------------------------------
# Padding rows, packing, dropout
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """(embed_fn with dropout 0.2 and 4 sentences per packed row, model params, model1 params)."""
    config = tiny_config(dropout=0.2)
    return (make_embed_fn(SentenceModel(config, max_segments=4), dropout=True), init_params(config, 0),
            init_params(config, 1))


def _tokens(rng, n, vocab=100):
    return [list(rng.integers(3, vocab, size=int(rng.integers(1, 20)))) for _ in range(n)]


def _trees_close(a, b, rtol=1e-4, atol=2e-6):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("loss", [ContrastiveTensionLoss(), ContrastiveTensionLossInBatchNegatives()],
                         ids=lambda l: l.name)
def test_padding_rows_change_nothing(tiny, loss):
    embed_fn, params, params1 = tiny
    rng = np.random.default_rng(0)
    cols = loss.min_columns
    texts = [_tokens(rng, 6) for _ in range(cols)]
    if cols == 2:
        texts[1][2] = texts[0][2]             # one identical pair
    head = {**loss.init_head(jax.random.PRNGKey(0), 32, params=params), "model1": params1}

    def run(rows, mask):
        features = tuple(pad_token_ids(t, 24, rows) for t in texts)
        return jax.jit(lambda p, h: loss.value_and_grad(embed_fn, p, h, features, None, mask, None))(params, head)

    value, grads = run(6, None)
    value_p, grads_p = run(9, np.array([True] * 6 + [False] * 3))
    np.testing.assert_allclose(value_p, value, rtol=1e-6)
    _trees_close(grads_p, grads, rtol=1e-5, atol=1e-6)


def test_in_batch_negatives_packed_equals_padded_with_dropout(tiny):
    """The same value and gradients (model2, model1, logit_scale) packed and padded, dropout on, a padding row."""
    embed_fn, params, params1 = tiny
    loss = ContrastiveTensionLossInBatchNegatives()
    b, rng, key = 10, np.random.default_rng(1), jax.random.PRNGKey(3)
    texts = _tokens(rng, b)
    mask = np.array([True] * 9 + [False])
    padded = (pad_token_ids(texts, 24, b),)
    packed = pack_token_ids(texts, rows=6, row_length=48, max_segments=4, sentence_ids=np.arange(b))
    packed["slots"] = packed["slots"].reshape(b, 1)
    head = {**loss.init_head(jax.random.PRNGKey(0), 32, params=params), "model1": params1}
    run = lambda f: jax.jit(lambda p, h: loss.value_and_grad(embed_fn, p, h, f, None, mask, key))(params, head)
    value, grads = run(padded)
    value_p, grads_p = run(packed)
    np.testing.assert_allclose(value_p, value, rtol=1e-5)
    _trees_close(grads_p, grads)
    assert float(jnp.abs(grads[1]["logit_scale"])) > 0


def test_the_two_copies_draw_different_dropout_masks(tiny):
    """With equal weights and no dropout, InBatchNegatives is symmetric in the two copies: their gradients are
    equal. With dropout, they differ: the copies do not share masks (as sentence-transformers' two modules)."""
    embed_fn, params, _ = tiny
    loss = ContrastiveTensionLossInBatchNegatives()
    features = (pad_token_ids(_tokens(np.random.default_rng(2), 8), 24, 8),)
    head = loss.init_head(jax.random.PRNGKey(0), 32, params=params)
    run = jax.jit(lambda p, h, k: loss.value_and_grad(embed_fn, p, h, features, None, None, k))

    def gap(key):
        _, (g2, gh) = run(params, head, key)
        a, b = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]) for g in (g2, gh["model1"]))
        return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))

    assert gap(None) < 1e-4
    assert gap(jax.random.PRNGKey(5)) > 1e-2


def test_contrastive_tension_refuses_packing(tiny):
    from jaxsbert.training.loop import _packing

    embed_fn, params, _ = tiny
    loss = ContrastiveTensionLoss()
    texts = _tokens(np.random.default_rng(3), 8)
    packed = pack_token_ids(texts, rows=4, row_length=48, max_segments=4, sentence_ids=np.arange(8))
    packed["slots"] = packed["slots"].reshape(4, 2)
    head = loss.init_head(jax.random.PRNGKey(0), 32, params=params)
    with pytest.raises(ValueError, match="cannot train on packed batches"):
        loss.value_and_grad(embed_fn, params, head, packed)
    losses = {"ct": loss, "ctib": ContrastiveTensionLossInBatchNegatives(),
              "mnrl": get_loss("MultipleNegativesRankingLoss")}
    assert _packing("auto", losses) == {"ct": False, "ctib": True, "mnrl": True}
    assert _packing(False, losses) == {"ct": False, "ctib": False, "mnrl": False}
    assert _packing({"ctib": True}, losses) == {"ct": False, "ctib": True, "mnrl": False}
    for setting in (True, {"ct": True}):
        with pytest.raises(ValueError, match="data.packing: dataset 'ct': ContrastiveTensionLoss cannot train on "
                                             "packed batches"):
            _packing(setting, losses)


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------

def _train_config(model_dir, pairs, sentences, **over):
    from jaxsbert.config import build_config

    base = {"name": "ct", "model": model_dir,
            "data": {"train": {"ct": {"source": pairs}, "ctib": {"source": sentences}}, "eval": {}},
            "loss": {"ct": {"name": "ContrastiveTensionLoss"},
                     "ctib": {"name": "ContrastiveTensionLossInBatchNegatives"}},
            "batch_size": 8, "max_steps": 6, "optim": {"lr": 1e-3, "warmup_ratio": 0.2}, "log_every": 1,
            "checkpoint": {"every_steps": 2, "keep": 5, "async": False}, "tensorboard": False}
    base.update(over)
    return build_config(base=base)


def _differ(a, b):
    return any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_training_trains_both_copies(models, tmp_path):
    from jaxsbert.training.loop import train
    from jaxsbert.training.metrics import read_metrics

    model_dir = models[0]
    sentences = SENTENCES + SECOND[5:6] + [s.upper() for s in SENTENCES]
    pairs = write_jsonl(str(tmp_path / "pairs.jsonl"),
                        [{"s1": r["sentence1"], "s2": r["sentence2"]}        # no label column: inferred
                         for r in contrastive_tension_pairs(sentences * 2, batch_size=8, pos_neg_ratio=4, seed=1)])
    single = write_jsonl(str(tmp_path / "single.jsonl"), [{"text": s} for s in sentences])
    config = _train_config(model_dir, pairs, single)

    full = train(config, str(tmp_path / "full"))
    assert full["steps"] == 6 and full["nonfinite_steps"] == 0
    records = [r for r in read_metrics(str(tmp_path / "full")) if "loss" in r]
    assert len(records) == 6 and all(np.isfinite(r["loss"]) for r in records)

    state = full["state"]
    initial = SentenceEncoder.from_pretrained(model_dir).params
    heads = state["heads"]
    assert set(heads) == {"ct", "ctib"} and set(heads["ctib"]) == {"model1", "logit_scale"}
    assert _differ(state["params"], initial)                    # model2 trained
    for name in ("ct", "ctib"):                                 # each model1 trained, apart from the model
        assert _differ(heads[name]["model1"], initial) and _differ(heads[name]["model1"], state["params"])
    assert float(heads["ctib"]["logit_scale"]) != pytest.approx(float(np.log(np.float32(20.0))), abs=1e-7)

    # the exported model is model2; no loss-head directory is written for the copies
    exported = SentenceEncoder.from_pretrained(full["model"]).params
    assert not _differ(exported, jax.device_get(state["params"]))
    assert not [d for d in os.listdir(tmp_path / "full") if "loss-head" in d]

    # an exact resume, the copies and logit_scale included
    part = train(_train_config(model_dir, pairs, single, stop_after_steps=3), str(tmp_path / "part"))
    assert part["stopped"] and part["steps"] == 3
    resumed = train(config, str(tmp_path / "part"), resume=True)
    assert resumed["steps"] == 6
    a, b = latest_checkpoint(str(tmp_path / "full")), latest_checkpoint(str(tmp_path / "part"))
    assert "model1" in a["heads"]["ct"] and "logit_scale" in a["heads"]["ctib"]
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_whole_word_embedding_table_is_trained():
    """compact_vocab does not apply: model1's table (in the head) would be read with remapped token ids."""
    import types

    from jaxsbert.config import DEFAULTS
    from jaxsbert.training.loop import _compact_vocab

    config = {**copy.deepcopy(DEFAULTS), "compact_vocab": True}
    run = types.SimpleNamespace(losses={"ct": ContrastiveTensionLoss()}, frozen={},
                                loader=types.SimpleNamespace(token_ids=lambda: np.arange(5)))
    assert _compact_vocab(config, run, None, None, None) is None
