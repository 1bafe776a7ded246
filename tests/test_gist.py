"""GISTEmbedLoss / CachedGISTEmbedLoss against sentence-transformers 6.3, with the guide as a second, frozen model.

- on embeddings: value and gradients wrt the model's embeddings equal sentence-transformers' (both margin
  strategies, with and without contrast_anchors / contrast_positives, pairs and triplets);
- end to end on two tiny random BERTs (student and guide, different seeds), loaded by both libraries: value,
  gradients wrt the embeddings and wrt every encoder parameter, GIST and cached GIST;
- the cached loss's gradients equal the uncached loss's, padded and packed, with dropout and padding rows;
- a short training run through jaxsbert.training.loop.train with a guide: finite loss, the guide untouched
  and outside the optimizer and the checkpoints, and an exact resume.
"""
from __future__ import annotations

import json
import os
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.data.buckets import pad_token_ids
from jaxsbert.data.packing import pack_token_ids
from jaxsbert.encoder import SentenceEncoder, Tokenizer
from jaxsbert.interop.hf import flax_to_state_dict
from jaxsbert.interop.st_dir import init_params
from jaxsbert.losses import CachedGISTEmbedLoss, GISTEmbedLoss, get_loss
from jaxsbert.models.sentence_model import SentenceModel
from jaxsbert.training.step import make_embed_fn

from helpers import latest_checkpoint, save_tiny_model, tiny_config, write_jsonl

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

RTOL = 1e-5

ANCHORS = ["A man is eating food.", "A woman plays the violin.", "The cat sleeps on the mat.",
           "Stocks fell sharply on Monday.", "He drove to work.", "It's nice weather outside today.",
           "The kids are playing football.", "A chef is cooking pasta."]
POSITIVES = ["Someone is having a meal.", "A lady performs music on a violin.", "A kitten naps on a rug.",
             "The market dropped at the start of the week.", "He took the car to the office.", "It's so sunny.",
             "Children play soccer in the park.", "Pasta is being prepared by a cook."]
NEGATIVES = ["A man is riding a horse.", "A woman is slicing onions.", "The dog barks at the mailman.",
             "Interest rates stayed the same.", "She walked to school.", "It is raining heavily.",
             "The adults are watching television.", "A baker sells bread."]


def _close(actual, expected, rtol=RTOL):
    """Element-wise within ``rtol`` of the expected value, entries near zero within rtol of the array's largest."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected))))


# ---------------------------------------------------------------------------------------------------
# On embeddings: a stand-in sentence-transformers model that returns given embeddings
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_tokenizer(minilm_path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm_path)


class StandIn(torch.nn.Module):
    """What GISTEmbedLoss needs of a model: ``model(features)["sentence_embedding"]`` (column ``c``'s features
    are ``{"column": c}``), a transformers tokenizer and a max_seq_length (the same for model and guide: no
    re-tokenization)."""

    def __init__(self, embeddings, tokenizer):
        super().__init__()
        self.embeddings, self.tokenizer, self.max_seq_length = embeddings, tokenizer, 32

    def forward(self, features):
        return {"sentence_embedding": self.embeddings[features["column"]]}

    def __getitem__(self, i):
        return torch.nn.Identity()


def _embeddings(columns, seed, batch=8, dim=16, guide_dim=12):
    """Model embeddings (positives near their anchors) and guide embeddings whose positives are close enough to
    their anchors that some, but not all, in-batch candidates pass the guide's filter."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, dim))
    emb = [a] + [a + 3.0 * rng.standard_normal((batch, dim)) for _ in range(columns - 1)]
    g = rng.standard_normal((batch, guide_dim))
    guide = [g] + [g + 1.0 * rng.standard_normal((batch, guide_dim)) for _ in range(columns - 1)]
    return [e.astype(np.float32) for e in emb], [x.astype(np.float32) for x in guide]


OPTIONS = [{}, {"margin": 0.1}, {"margin": -0.02}, {"margin_strategy": "relative", "margin": 0.2},
           {"contrast_anchors": False}, {"contrast_positives": False},
           {"contrast_anchors": False, "contrast_positives": False, "margin": 0.05},
           {"margin_strategy": "relative", "margin": 0.1, "contrast_anchors": False, "temperature": 0.05}]


@pytest.mark.parametrize("columns", [2, 3])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_gist_equals_sentence_transformers_on_embeddings(options, columns, hf_tokenizer):
    emb, guide = _embeddings(columns, seed=columns)
    leaves = [torch.tensor(e, requires_grad=True) for e in emb]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = st_losses.GISTEmbedLoss(StandIn(leaves, hf_tokenizer),
                                     StandIn([torch.tensor(g) for g in guide], hf_tokenizer), **options)
        assert not st.must_retokenize
        value_st = st([{"column": c} for c in range(columns)], None)
    value_st.backward()

    loss = get_loss("GISTEmbedLoss", guide="unused: the guide's embeddings are given", **options)
    value, grads = jax.value_and_grad(lambda e: loss({}, e, guide_embeddings=guide))(tuple(map(jnp.asarray, emb)))
    _close(value, float(value_st.detach()))
    for g, leaf in zip(grads, leaves):
        _close(g, leaf.grad.numpy())


def test_the_guide_filters_some_candidates_but_not_all():
    """The parity cases above are not vacuous: the guide drops some in-batch candidates and keeps others."""
    emb, guide = _embeddings(3, seed=3)
    g = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in guide]
    sims = np.concatenate([g[0] @ g[1].T, g[0] @ g[2].T], axis=1)
    threshold = np.sum(g[0] * g[1], axis=1, keepdims=True)
    dropped = (sims > threshold).sum() - 0      # the positive itself is never above its own threshold
    assert 0 < dropped < sims.size - 8


def test_padding_rows_change_nothing():
    emb, guide = _embeddings(3, seed=5)
    loss = get_loss("GISTEmbedLoss", guide="unused")
    f = lambda e, g, m: loss({}, e, mask=m, guide_embeddings=g)
    value, grads = jax.value_and_grad(f)(tuple(map(jnp.asarray, emb)), guide, None)
    rng = np.random.default_rng(0)
    padded = tuple(jnp.concatenate([e, jnp.asarray(rng.standard_normal((3, e.shape[1])), jnp.float32)]) for e in emb)
    padded_guide = tuple(np.concatenate([g, rng.standard_normal((3, g.shape[1])).astype(np.float32)]) for g in guide)
    mask = jnp.arange(11) < 8
    value_p, grads_p = jax.value_and_grad(f)(padded, padded_guide, mask)
    np.testing.assert_allclose(value_p, value, rtol=1e-6)
    for x, y in zip(grads_p, grads):
        np.testing.assert_allclose(x[:8], y, rtol=1e-5, atol=1e-7)
        assert not np.any(np.asarray(x[8:]))
    all_padding = jax.value_and_grad(f)(padded, padded_guide, jnp.zeros(11, bool))
    assert float(all_padding[0]) == 0.0 and all(np.all(np.isfinite(np.asarray(x))) for x in all_padding[1])


def test_arguments_are_checked():
    assert GISTEmbedLoss(guide="g") == get_loss("GISTEmbedLoss", guide="g")
    defaults = get_loss("CachedGISTEmbedLoss", guide="g").config_dict()
    assert defaults == {"guide": "g", "temperature": 0.01, "margin_strategy": "absolute", "margin": 0.0,
                        "contrast_anchors": True, "contrast_positives": True, "gather_across_devices": False,
                        "mini_batch_size": 32, "mini_batch_num_tokens": None}
    with pytest.raises(ValueError, match="guide is required"):
        get_loss("GISTEmbedLoss")
    with pytest.raises(ValueError, match="margin_strategy must be 'absolute' or 'relative'"):
        get_loss("GISTEmbedLoss", guide="g", margin_strategy="percent")
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        get_loss("GISTEmbedLoss", guide="g", temperature=0)
    with pytest.raises(ValueError, match="mini_batch_size must be a positive integer"):
        get_loss("CachedGISTEmbedLoss", guide="g", mini_batch_size=0)
    with pytest.raises(ValueError, match="expects 2 to 3 input column"):
        get_loss("GISTEmbedLoss", guide="g").check_inputs(4, None)
    get_loss("CachedGISTEmbedLoss", guide="g").check_inputs(5, None)       # any number of negatives
    with pytest.raises(ValueError, match="needs the guide's embeddings"):
        get_loss("GISTEmbedLoss", guide="g")({}, [jnp.ones((2, 4))] * 2)
    with pytest.raises(FileNotFoundError, match="GISTEmbedLoss: guide: "):
        get_loss("GISTEmbedLoss", guide="/no/such/guide").guide_encoder()


# ---------------------------------------------------------------------------------------------------
# End to end: two tiny random BERT sentence-transformers directories, loaded by both libraries
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_path):
    """(student directory, guide directory): different seeds; the guide normalises its embeddings."""
    root = tmp_path_factory.mktemp("gist")
    student = save_tiny_model(str(root / "student"), minilm_path, seed=0, dropout=0.0)
    guide = save_tiny_model(str(root / "guide"), minilm_path, seed=1, dropout=0.0, normalize=True)
    return student, guide


def _columns(n):
    return [ANCHORS, POSITIVES, NEGATIVES][:n]


def _st_run(cls, student_dir, guide_dir, columns, **options):
    """(value, [grad wrt each column's embeddings] or None, {parameter name: grad}) from sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    student = SentenceTransformer(student_dir, device="cpu")
    guide = SentenceTransformer(guide_dir, device="cpu")
    loss = cls(student, guide, **options)
    assert not loss.must_retokenize
    outputs = []

    def keep(module, inputs, output):
        if output["sentence_embedding"].requires_grad:
            output["sentence_embedding"].retain_grad()
            outputs.append(output["sentence_embedding"])
    hook = student.register_forward_hook(keep)
    value = loss([student.tokenize(texts) for texts in columns], None)
    value.backward()
    hook.remove()
    emb_grads = None
    if cls is st_losses.GISTEmbedLoss:      # one forward of the columns merged (column-major), or one per column
        merged = torch.cat([o.grad for o in outputs]).numpy()
        emb_grads = np.split(merged, len(columns))
    params = {n: p.grad.numpy() for n, p in student[0].auto_model.named_parameters() if p.grad is not None}
    return float(value.detach()), emb_grads, params


def _ours(student_dir, guide_dir):
    student, guide = SentenceEncoder.from_pretrained(student_dir), SentenceEncoder.from_pretrained(guide_dir)
    embed_fn = make_embed_fn(SentenceModel(student.config), dropout=False)
    return student, guide, embed_fn


def _features(encoder, columns, length=32):
    return tuple(pad_token_ids(encoder.tokenizer(texts), length, len(texts)) for texts in columns)


def _check_param_grads(ours, theirs):
    """Every encoder parameter's gradient within 1e-5 of sentence-transformers', relative to the gradient's largest
    entry (the attention key biases' gradients are zero up to rounding: their own scale is noise)."""
    ours = flax_to_state_dict(ours["transformer"])
    shared = sorted(set(ours) & set(theirs))
    assert len(shared) == len(theirs) >= 30 and "embeddings.word_embeddings.weight" in shared, shared
    scale = max(float(np.max(np.abs(theirs[name]))) for name in shared)
    for name in shared:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=RTOL, atol=RTOL * scale, err_msg=name)


@pytest.mark.parametrize("columns, options", [
    (2, {}), (3, {"margin_strategy": "relative", "margin": 0.05, "contrast_anchors": False}),
    (3, {"margin": 0.02, "contrast_positives": False, "temperature": 0.05})])
def test_gist_end_to_end_equals_sentence_transformers(models, columns, options):
    student_dir, guide_dir = models
    value_st, emb_grads_st, params_st = _st_run(st_losses.GISTEmbedLoss, student_dir, guide_dir, _columns(columns),
                                                **options)
    student, guide, embed_fn = _ours(student_dir, guide_dir)
    loss = get_loss("GISTEmbedLoss", guide=guide, **options)
    features = _features(student, _columns(columns))
    frozen = loss.frozen_params(student)
    value, (grads, _) = jax.jit(lambda p, g: loss.value_and_grad(embed_fn, p, {}, features, frozen=g))(
        student.params, frozen)
    _close(value, value_st)
    _check_param_grads(grads, params_st)
    # the gradient wrt the model's embeddings
    guide_fn = loss.guide_embed_fn()
    emb = tuple(embed_fn(student.params, f, None) for f in features)
    guide_emb = tuple(guide_fn(frozen, f) for f in features)
    emb_grads = jax.grad(lambda e: loss({}, e, guide_embeddings=guide_emb))(emb)
    for ours, theirs in zip(emb_grads, emb_grads_st):
        _close(ours, theirs)


def test_the_tiny_guide_filters_some_candidates(models):
    """The end-to-end cases are not vacuous: the tiny guide drops some candidates and keeps others."""
    _, guide_dir = models
    guide = SentenceEncoder.from_pretrained(guide_dir)
    a, p, n = (guide.encode(texts, normalize_embeddings=True) for texts in _columns(3))
    sims = np.concatenate([a @ p.T, a @ a.T, a @ n.T], axis=1)
    kept = sims <= np.sum(a * p, axis=1, keepdims=True)
    assert 0 < kept.sum() < kept.size
    assert np.min(np.abs(sims - np.sum(a * p, axis=1, keepdims=True))[~np.eye(8, 24, dtype=bool)]) > 1e-5


@pytest.mark.parametrize("columns, options", [(2, {"mini_batch_size": 2}),
                                              (3, {"mini_batch_size": 4, "margin": 0.02, "contrast_positives": False})])
def test_cached_gist_end_to_end_equals_sentence_transformers(models, columns, options):
    student_dir, guide_dir = models
    value_st, _, params_st = _st_run(st_losses.CachedGISTEmbedLoss, student_dir, guide_dir, _columns(columns),
                                     **options)
    student, guide, embed_fn = _ours(student_dir, guide_dir)
    loss = get_loss("CachedGISTEmbedLoss", guide=guide, **options)
    features = _features(student, _columns(columns))
    frozen = loss.frozen_params(student)
    value, (grads, _) = jax.jit(lambda p, g: loss.value_and_grad(embed_fn, p, {}, features, frozen=g))(
        student.params, frozen)
    _close(value, value_st)
    _check_param_grads(grads, params_st)


# ---------------------------------------------------------------------------------------------------
# Cached == uncached, padded and packed
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(minilm_path):
    """(student config, student params, guide encoder) in memory; the student with dropout, normalising."""
    config = tiny_config(normalize=True, dropout=0.2)
    guide_config = tiny_config(normalize=True, dropout=0.0)
    guide = SentenceEncoder(guide_config, init_params(guide_config, 7), Tokenizer(minilm_path, 32))
    return config, init_params(config, 0), guide


def _sentences(rng, n, vocab=100):
    return [list(rng.integers(3, vocab, size=int(rng.integers(1, 20)))) for _ in range(n)]


def _trees_close(a, b, rtol=RTOL):
    """Every leaf within ``rtol`` of ``b``'s, relative to the largest entry of ``b`` (entries near zero are rounding)."""
    scale = max(float(np.max(np.abs(np.asarray(y)))) for y in jax.tree_util.tree_leaves(b))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("columns, options, rows, chunk, dropout", [
    (3, {"mini_batch_num_tokens": 150, "margin": 0.01}, 15, 5, False),        # packed: 150 // 48 = 3 rows a chunk
    (4, {"mini_batch_size": 5, "contrast_anchors": False, "margin_strategy": "relative", "margin": 0.02}, 16, 2,
     True),
])
def test_cached_gradients_equal_the_uncached_loss(tiny, columns, options, rows, chunk, dropout):
    """CachedGISTEmbedLoss on a packed batch and on the padded batch (chunks of ``chunk`` rows): the value and
    gradients of the uncached loss on the padded batch, with padding rows, and with dropout drawing the
    uncached loss's masks."""
    config, params, guide = tiny
    rng = np.random.default_rng(columns)
    b = 10
    texts = [_sentences(rng, b) for _ in range(columns)]
    embed_fn = make_embed_fn(SentenceModel(config, max_segments=4), dropout=dropout)
    key = jax.random.PRNGKey(3) if dropout else None
    mask = np.array([True] * 9 + [False])
    padded = tuple(pad_token_ids(c, 24, b) for c in texts)
    flat = [s for row in zip(*texts) for s in row]
    packed = pack_token_ids(flat, rows=rows, row_length=48, max_segments=4, sentence_ids=np.arange(columns * b))
    packed["slots"] = packed["slots"].reshape(b, columns)
    plain_options = {k: v for k, v in options.items() if not k.startswith("mini_batch")}
    frozen = jax.device_get(guide.params)

    def run(loss, features):
        return jax.jit(lambda p, g: loss.value_and_grad(embed_fn, p, {}, features, None, mask, key, frozen=g))(
            params, frozen)

    # GISTEmbedLoss takes at most one negative (as sentence-transformers'): beyond, one chunk of the whole batch
    reference = GISTEmbedLoss(guide=guide, **plain_options) if columns <= 3 else \
        CachedGISTEmbedLoss(guide=guide, **plain_options, mini_batch_size=b)
    value, (grads, _) = run(reference, padded)
    assert float(optax_norm(grads)) > 0
    for loss, features in [(CachedGISTEmbedLoss(guide=guide, **options), packed),
                           (CachedGISTEmbedLoss(guide=guide, **plain_options, mini_batch_size=chunk), padded)]:
        assert loss.grad_cache_mini_batch_size() is not None
        value_c, (grads_c, _) = run(loss, features)
        np.testing.assert_allclose(value_c, value, rtol=RTOL)
        _trees_close(grads_c, grads)


def optax_norm(tree):
    import optax
    return optax.tree.norm(tree)


def test_the_guide_is_a_traced_input_not_a_constant(tiny):
    """One compiled step serves any guide parameters: they are an argument of the jitted function, and new
    values change the loss without recompiling."""
    config, params, guide = tiny
    embed_fn = make_embed_fn(SentenceModel(config), dropout=False)
    rng = np.random.default_rng(0)
    features = tuple(pad_token_ids(_sentences(rng, 8), 24, 8) for _ in range(2))
    loss = GISTEmbedLoss(guide=guide)
    step = jax.jit(lambda p, g: loss.value_and_grad(embed_fn, p, {}, features, frozen=g)[0])
    a = step(params, jax.device_get(guide.params))
    b = step(params, jax.device_get(init_params(guide.config, 8)))
    assert step._cache_size() == 1 and float(a) != float(b)
    with pytest.raises(ValueError, match="needs frozen="):
        loss.value_and_grad(embed_fn, params, {}, features)


def test_a_guide_that_cannot_read_the_model_tokens_is_a_config_error(tiny, minilm_path, tmp_path):
    config, params, guide = tiny
    student = SentenceEncoder(config, params, Tokenizer(minilm_path, 32), source="student")
    other_vocab = SentenceEncoder(guide.config, guide.params, types.SimpleNamespace(
        hf=types.SimpleNamespace(get_vocab=lambda: {"[PAD]": 0})), source="other-guide")
    with pytest.raises(ValueError, match=r"guide 'other-guide' cannot read the tokens of the model 'student': "
                                         r"its tokenizer's vocabulary differs"):
        GISTEmbedLoss(guide=other_vocab).frozen_params(student)
    short = SentenceEncoder(guide.config.__class__(**{**guide.config.__dict__, "max_seq_length": 16}), guide.params,
                            Tokenizer(minilm_path, 16), source="short-guide")
    with pytest.raises(ValueError, match="its max_seq_length 16 is below the model's 32"):
        GISTEmbedLoss(guide=short).frozen_params(student)


# ---------------------------------------------------------------------------------------------------
# Training with a guide
# ---------------------------------------------------------------------------------------------------

def _train_config(student_dir, guide_dir, data, **over):
    from jaxsbert.config import build_config

    base = {"name": "gist", "model": student_dir, "data": {"train": {"pairs": {"source": data}}, "eval": {}},
            "loss": {"name": "CachedGISTEmbedLoss", "guide": guide_dir, "mini_batch_size": 4},
            "batch_size": 8, "max_steps": 6, "optim": {"lr": 1e-3, "warmup_ratio": 0.2}, "log_every": 1,
            "checkpoint": {"every_steps": 2, "keep": 5, "async": False}, "tensorboard": False, "save_model": False}
    base.update(over)
    return build_config(base=base)


def test_training_with_a_guide(models, tmp_path):
    from jaxsbert.training.loop import train
    from jaxsbert.training.metrics import read_metrics

    student_dir, guide_dir = models
    rows = [{"anchor": a, "positive": p} for a, p in zip(ANCHORS + NEGATIVES, POSITIVES + ANCHORS[::-1])] * 3
    data = write_jsonl(str(tmp_path / "pairs.jsonl"), rows)
    config = _train_config(student_dir, guide_dir, data)

    full = train(config, str(tmp_path / "full"))
    assert full["steps"] == 6 and full["nonfinite_steps"] == 0
    losses = [r["loss"] for r in read_metrics(str(tmp_path / "full")) if "loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))

    # the guide: untouched, outside the optimizer state and the checkpoints
    state = full["state"]
    guide = SentenceEncoder.from_pretrained(guide_dir)
    assert set(state["frozen"]) == {"pairs"}
    for x, y in zip(jax.tree_util.tree_leaves(state["frozen"]["pairs"]), jax.tree_util.tree_leaves(guide.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    size = lambda tree: sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))
    assert size(state["opt_state"]) < 2 * size(state["params"]) + 1000          # AdamW: two moments of the model
    saved = latest_checkpoint(str(tmp_path / "full"))
    assert "frozen" not in saved and set(saved) >= {"params", "opt_state", "step"}
    trained = SentenceEncoder.from_pretrained(student_dir).params
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
               zip(jax.tree_util.tree_leaves(saved["params"]), jax.tree_util.tree_leaves(trained)))

    # an exact resume: the guide comes back from its path
    part = train(_train_config(student_dir, guide_dir, data, stop_after_steps=3), str(tmp_path / "part"))
    assert part["stopped"] and part["steps"] == 3
    resumed = train(config, str(tmp_path / "part"), resume=True)
    assert resumed["steps"] == 6
    a, b = latest_checkpoint(str(tmp_path / "full")), latest_checkpoint(str(tmp_path / "part"))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(os.path.join(tmp_path, "full", "config.json")) as f:
        assert json.load(f)["loss"]["guide"] == guide_dir
