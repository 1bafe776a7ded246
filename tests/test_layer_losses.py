"""GlobalOrthogonalRegularizationLoss, AdaptiveLayerLoss and Matryoshka2dLoss against sentence-transformers.

GOR is compared on the same random embeddings. The layer losses are compared on one tiny random BERT
directory that both libraries load, on the same token ids: loss value and gradients with respect to every
Transformer weight (mapped by Hugging Face name), dropout off, with sentence-transformers' random layer and
dimension draws (``random.sample``) replaced by the ones jaxsbert draws from its key. Every family's
``all_layers`` hidden states are compared with Hugging Face's ``output_hidden_states``.
"""
from __future__ import annotations

import random
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert import losses as L
from jaxsbert.data.buckets import pad_token_ids
from jaxsbert.data.packing import pack_token_ids
from jaxsbert.encoder import SentenceEncoder
from jaxsbert.interop.hf import flax_to_state_dict, state_dict_to_flax
from jaxsbert.models import families
from jaxsbert.models.sentence_model import SentenceModel
from jaxsbert.training.step import make_embed_fn

from helpers import save_tiny_model, tiny_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers import util as st_util  # noqa: E402

RTOL = 1e-5

# ---------------------------------------------------------------------------------------------------
# GlobalOrthogonalRegularizationLoss on embeddings
# ---------------------------------------------------------------------------------------------------

GOR_CASES = [
    ({}, {}, 2),
    ({"similarity_fct": "dot_score", "aggregation": "sum", "mean_weight": 0.5}, {"similarity_fct": st_util.dot_score,
                                                                                 "aggregation": "sum", "mean_weight": 0.5}, 3),
    ({"mean_weight": None, "aggregation": "sum"}, {"mean_weight": None, "aggregation": "sum"}, 1),   # EmbeddingGemma
    ({"second_moment_weight": 0.0}, {"second_moment_weight": 0.0}, 2),
]


def _gor_embeddings(columns, batch=12, dim=16, seed=0):
    """Random embeddings sharing a common direction, so both terms are active (M2 > 1/d)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    return [(rng.standard_normal((batch, dim)) + 0.7 * common).astype(np.float32) for _ in range(columns)]


def _st_gor(kwargs, embeddings):
    leaves = [torch.tensor(e, requires_grad=True) for e in embeddings]
    out = st_losses.GlobalOrthogonalRegularizationLoss(None, **kwargs).compute_loss_from_embeddings(leaves)
    sum(out.values()).backward()
    return {k: float(v.detach()) for k, v in out.items()}, [t.grad.numpy() for t in leaves]


@pytest.mark.parametrize("ours_kwargs, st_kwargs, columns", GOR_CASES)
def test_gor_matches_sentence_transformers(ours_kwargs, st_kwargs, columns):
    loss = L.get_loss("GlobalOrthogonalRegularizationLoss", **ours_kwargs)
    embeddings = _gor_embeddings(columns)
    ref_parts, ref_grads = _st_gor(st_kwargs, embeddings)
    parts = loss.components({}, tuple(jnp.asarray(e) for e in embeddings))
    assert set(parts) == set(ref_parts)
    for k in parts:
        assert float(parts[k]) > 1e-3, f"{k}: degenerate case"
        np.testing.assert_allclose(float(parts[k]), ref_parts[k], rtol=RTOL, err_msg=k)
    value, grads = jax.jit(jax.value_and_grad(lambda e: loss({}, e)))(tuple(jnp.asarray(e) for e in embeddings))
    np.testing.assert_allclose(float(value), sum(ref_parts.values()), rtol=RTOL)
    for g, r in zip(grads, ref_grads):     # elements near 0 relative to the column's largest gradient
        np.testing.assert_allclose(np.asarray(g), r, rtol=RTOL, atol=RTOL * float(np.abs(r).max()))

    # padding rows change nothing: the value and the valid rows' gradients are the unpadded ones, padding gets 0
    mask = np.array([True] * 12 + [False] * 3)
    padded = tuple(jnp.asarray(np.concatenate([e, np.full((3, 16), 5.0, np.float32)])) for e in embeddings)
    value_p, grads_p = jax.jit(jax.value_and_grad(lambda e: loss({}, e, None, jnp.asarray(mask))))(padded)
    np.testing.assert_allclose(float(value_p), float(value), rtol=RTOL)
    for gp, g in zip(grads_p, grads):
        np.testing.assert_allclose(np.asarray(gp)[:12], np.asarray(g), rtol=RTOL, atol=RTOL * float(np.abs(g).max()))
        assert np.all(np.asarray(gp)[12:] == 0)


def test_gor_single_row_is_zero_and_arguments_are_checked():
    value, grads = jax.value_and_grad(lambda e: L.get_loss("GlobalOrthogonalRegularizationLoss")({}, (e,)))(
        jnp.ones((1, 8)))
    assert float(value) == 0.0 and np.all(np.isfinite(np.asarray(grads)))
    with pytest.raises(ValueError, match="at least one of mean_weight or second_moment_weight"):
        L.get_loss("GlobalOrthogonalRegularizationLoss", mean_weight=0, second_moment_weight=None)
    with pytest.raises(ValueError, match="aggregation must be 'mean' or 'sum'"):
        L.get_loss("GlobalOrthogonalRegularizationLoss", aggregation="max")
    with pytest.raises(ValueError, match="has a label column"):
        L.get_loss("GlobalOrthogonalRegularizationLoss").check_inputs(2, np.zeros(3))
    L.get_loss("GlobalOrthogonalRegularizationLoss").check_inputs(1, None)


# ---------------------------------------------------------------------------------------------------
# AdaptiveLayerLoss / Matryoshka2dLoss on a tiny BERT
# ---------------------------------------------------------------------------------------------------

ANCHORS = ["A man is playing a guitar.", "Stocks fell sharply on Monday.", "The cat sleeps.", "Hi there"]
POSITIVES = ["Someone plays an instrument on stage tonight.", "Markets dropped.", "A kitten is asleep on the sofa.",
             "Hello"]
SCORES = [0.9, 0.2, 0.7, 0.4]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_path):
    """(jaxsbert encoder, sentence-transformers model in eval mode, each column's features for each of them:
    the same token ids)."""
    directory = save_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), minilm_path, seed=3, normalize=True)
    ours = SentenceEncoder.from_pretrained(directory)
    theirs = SentenceTransformer(directory, device="cpu").eval()
    torch_features = [theirs.preprocess(column) for column in (ANCHORS, POSITIVES)]
    features = tuple({k: np.asarray(v, np.int32) for k, v in f.items() if isinstance(v, torch.Tensor)}
                     for f in torch_features)
    return ours, theirs, features, torch_features


def _st_value_and_grads(theirs, make_loss, features, labels, draws, monkeypatch):
    """sentence-transformers' loss value and Transformer gradients, its random.sample calls answered by ``draws``
    (a list of (population size, indices)) in order."""
    queue = list(draws)

    def sample(population, k):
        size, indices = queue.pop(0)
        assert len(population) == size and len(indices) == k, (len(population), k, size, indices)
        return list(indices)

    monkeypatch.setattr(random, "sample", sample)
    theirs.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = make_loss(theirs)
        value = loss([{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features],
                     None if labels is None else torch.tensor(labels))
    value.backward()
    assert not queue, f"sentence-transformers drew fewer times than expected: {queue} left"
    grads = {k: (p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
             for k, p in theirs[0].auto_model.named_parameters()}
    return float(value.detach()), grads


def _expected_draws(loss, rng, num_prior=2):
    """The random.sample calls sentence-transformers makes, answered with jaxsbert's draws for ``rng``."""
    layers = loss.sample_layers(rng, num_prior)
    passes = 1 + (num_prior if layers is None else len(layers))      # the last layer's, then one per earlier layer
    draws = []
    dims = getattr(loss, "sample_dims", None)
    for p in range(passes):
        if dims is not None and dims(rng, p) is not None:       # MatryoshkaLoss' draw in each pass
            draws.append((len(loss.matryoshka_dims), [int(i) for i in dims(rng, p)]))
        if p == 0 and layers is not None:                        # AdaptiveLayerLoss' draw, after the last layer's loss
            draws.append((num_prior, [int(i) for i in layers]))
    return draws


M = st_losses
# seeds: ALL-MNRL draws layer 1; M2d-MNRL layer 0 with dimensions 8, then 16; M2d-CoSENT layer 1 with (32, 8), then (16, 8)
LAYER_CASES = [
    ("ALL-MNRL", lambda: L.get_loss("AdaptiveLayerLoss", loss="MultipleNegativesRankingLoss"),
     lambda m: M.AdaptiveLayerLoss(m, M.MultipleNegativesRankingLoss(m)), False, None),
    ("ALL-CoSENT-all-layers-log", lambda: L.get_loss("AdaptiveLayerLoss", loss="CoSENTLoss", n_layers_per_step=-1,
                                                      last_layer_weight=0.7, prior_layers_weight=1.3,
                                                      kl_div_weight=0.5, kl_temperature=0.5, layer_weighting="log"),
     lambda m: M.AdaptiveLayerLoss(m, M.CoSENTLoss(m), n_layers_per_step=-1, last_layer_weight=0.7,
                                   prior_layers_weight=1.3, kl_div_weight=0.5, kl_temperature=0.5,
                                   layer_weighting="log"), True, 1),
    ("M2d-MNRL", lambda: L.get_loss("Matryoshka2dLoss", loss="MultipleNegativesRankingLoss",
                                     loss_kwargs={"scale": 10.0}, matryoshka_dims=[32, 16, 8]),
     lambda m: M.Matryoshka2dLoss(m, M.MultipleNegativesRankingLoss(m, scale=10.0), [32, 16, 8]), False, 1),
    ("M2d-CoSENT", lambda: L.get_loss("Matryoshka2dLoss", loss="CoSENTLoss", matryoshka_dims=[8, 32, 16],
                                       matryoshka_weights=[2.0, 1.0, 0.5], n_dims_per_step=2, kl_temperature=0.0,
                                       layer_weighting="linear"),
     lambda m: M.Matryoshka2dLoss(m, M.CoSENTLoss(m), [8, 32, 16], [2.0, 1.0, 0.5], n_dims_per_step=2,
                                  kl_temperature=0.0, layer_weighting="linear"), True, None),
]


@pytest.mark.parametrize("name, ours_fn, st_fn, scored, seed", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_losses_match_sentence_transformers(tiny, monkeypatch, name, ours_fn, st_fn, scored, seed):
    encoder, theirs, features, torch_features = tiny
    loss = ours_fn()
    rng = None if seed is None else jax.random.PRNGKey(seed)      # the draws' key; dropout stays off
    embed_fn = make_embed_fn(encoder.module, dropout=False)
    labels = np.asarray(SCORES, np.float32) if scored else None
    value, (grads, _) = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, features, labels, None, rng))(
        encoder.params)
    ref_value, ref_grads = _st_value_and_grads(theirs, st_fn, torch_features, labels, _expected_draws(loss, rng),
                                               monkeypatch)
    np.testing.assert_allclose(float(value), ref_value, rtol=RTOL, err_msg=f"{name}: loss value")
    ours = flax_to_state_dict(grads["transformer"])
    assert set(ref_grads) <= set(ours)
    scale = max(float(np.abs(g).max()) for g in ref_grads.values())   # attention key biases: 0 up to rounding
    for key, ref in ref_grads.items():
        np.testing.assert_allclose(ours[key], ref, rtol=RTOL, atol=RTOL * scale, err_msg=f"{name}: gradient of {key}")
    assert float(np.abs(ref_grads["encoder.layer.1.output.dense.weight"]).max()) > 1e-4, f"{name}: degenerate"


def test_draws_come_from_the_key():
    """The layers and dimensions drawn are a function of the step's key only, and vary with it."""
    loss = L.get_loss("Matryoshka2dLoss", loss="CoSENTLoss", matryoshka_dims=[32, 16, 8])
    keys = [jax.random.PRNGKey(s) for s in range(12)]
    layers = [tuple(np.asarray(loss.sample_layers(k, 5))) for k in keys]
    assert layers == [tuple(np.asarray(loss.sample_layers(k, 5))) for k in keys]
    assert len(set(layers)) > 1 and all(0 <= i < 5 for draw in layers for i in draw)
    dims = {tuple(np.asarray(loss.sample_dims(k, p))) for k in keys for p in range(2)}
    assert len(dims) > 1
    assert L.get_loss("AdaptiveLayerLoss", loss="CoSENTLoss", n_layers_per_step=-1).sample_layers(keys[0], 5) is None


def test_packed_batch_equals_padded_with_dropout():
    """A packed batch gives the padded batch's value and gradients, dropout on (one forward pass per batch:
    the last and the earlier layers share its masks, keyed by sentence), padding rows masked."""
    config = tiny_config(normalize=True, dropout=0.2)
    rng = np.random.default_rng(4)
    b = 6
    columns = [[list(rng.integers(3, 100, size=int(rng.integers(1, 14)))) for _ in range(b)] for _ in range(2)]
    model = SentenceModel(config, max_segments=4)
    embed_fn = make_embed_fn(model, dropout=True)
    padded = tuple(pad_token_ids(c, 16, b) for c in columns)
    params = model.init(jax.random.PRNGKey(0), padded[0])["params"]
    mask = np.array([True] * 5 + [False])
    loss = L.get_loss("AdaptiveLayerLoss", loss="MultipleNegativesRankingLoss")
    flat = [s for row in zip(*columns) for s in row]
    packed = pack_token_ids(flat, rows=6, row_length=32, max_segments=4, sentence_ids=np.arange(2 * b))
    packed["slots"] = packed["slots"].reshape(b, 2)

    def run(features):
        return jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, features, None, mask,
                                                     jax.random.PRNGKey(11)))(params)

    value, (grads, _) = run(padded)
    value_p, (grads_p, _) = run(packed)
    np.testing.assert_allclose(float(value_p), float(value), rtol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(grads_p), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_layer_loss_errors():
    with pytest.raises(ValueError, match="AdaptiveLayerLoss cannot wrap CachedMultipleNegativesRankingLoss"):
        L.get_loss("AdaptiveLayerLoss", loss="CachedMultipleNegativesRankingLoss")
    with pytest.raises(ValueError, match="Matryoshka2dLoss: loss_kwargs only goes with loss given by name"):
        L.get_loss("Matryoshka2dLoss", loss=L.get_loss("CoSENTLoss"), loss_kwargs={"scale": 1.0}, matryoshka_dims=[8])
    with pytest.raises(ValueError, match="Matryoshka2dLoss: MatryoshkaLoss cannot wrap SoftmaxLoss"):
        L.get_loss("Matryoshka2dLoss", loss="SoftmaxLoss", loss_kwargs={"num_labels": 3}, matryoshka_dims=[8])
    class TwoModels(L.MultipleNegativesRankingLoss):          # a loss that needs more than its embeddings
        def value_and_grad(self, *args, **kwargs):
            raise AssertionError("not called")

    with pytest.raises(ValueError, match="cannot wrap MultipleNegativesRankingLoss: it is computed from more than"):
        L.AdaptiveLayerLoss(loss=TwoModels())
    with pytest.raises(ValueError, match="layer_weighting must be one of"):
        L.get_loss("AdaptiveLayerLoss", loss="CoSENTLoss", layer_weighting="cubic")
    with pytest.raises(ValueError, match="AdaptiveLayerLoss around CoSENTLoss: .*no label column"):
        L.get_loss("AdaptiveLayerLoss", loss="CoSENTLoss").check_inputs(2, None)
    loss = L.get_loss("AdaptiveLayerLoss", loss="MultipleNegativesRankingLoss")
    e = jnp.zeros((4, 8))
    with pytest.raises(ValueError, match=r"every layer's embeddings, one \[layers \+ 1, B, D\] array per column"):
        loss({}, (e, e))
    features = ({"x": np.ones((4, 3), np.float32)},) * 2
    with pytest.raises(ValueError, match="needs every layer's sentence embeddings: embed_fn.all_layers"):
        loss.value_and_grad(lambda p, f, r: f["x"] @ p, jnp.ones((3, 8)), {}, features)


# ---------------------------------------------------------------------------------------------------
# every family's all_layers = Hugging Face's hidden_states
# ---------------------------------------------------------------------------------------------------

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=40, vocab_size=50)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "mpnet"])
def test_all_layers_are_hugging_face_hidden_states(family):
    small = (dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=40, vocab_size=50)
             if family == "distilbert" else SMALL)
    hf_config = transformers.AutoConfig.for_model(family, **small)
    torch.manual_seed(0)
    hf = transformers.AutoModel.from_config(hf_config).eval()
    fam = families.family_for(family)
    config = fam.config_cls.from_hf_dict(hf_config.to_dict())
    module = fam.module(config)
    pad = hf_config.pad_token_id
    ids = np.random.default_rng(0).integers(3, 50, (3, 9)).astype(np.int32)
    mask = np.ones((3, 9), np.int32)
    mask[1, 6:], mask[2, 3:] = 0, 0
    ids = np.where(mask > 0, ids, pad).astype(np.int32)
    template = module.init(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))["params"]
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = state_dict_to_flax(state, template)
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), all_layers=True))
    plain = np.asarray(module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                    output_hidden_states=True).hidden_states
    assert ours.shape[0] == len(theirs) == 3
    np.testing.assert_array_equal(ours[-1], plain)
    real = mask.astype(bool)
    for k, t in enumerate(theirs):
        np.testing.assert_allclose(ours[k][real], t.numpy()[real], atol=2e-5, err_msg=f"{family}: hidden state {k}")
