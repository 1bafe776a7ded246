"""CachedMultipleNegativesRankingLoss (GradCache) on a tiny random BERT: the parameter gradients equal
plain MultipleNegativesRankingLoss's, for every chunk size, with hard negatives and padding rows."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert import losses as L
from jaxsbert.interop.st_dir import init_params
from jaxsbert.models.bert import BertConfig
from jaxsbert.models.pooling import PoolingConfig
from jaxsbert.models.sentence_model import SentenceModel, SentenceModelConfig

BATCH, LENGTH = 8, 16


def _config(dropout: float = 0.0) -> SentenceModelConfig:
    bert = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return SentenceModelConfig("bert", bert, (PoolingConfig(32, ("mean",)),), max_seq_length=LENGTH)


def _embed_fn(config):
    module = SentenceModel(config)

    def embed_fn(params, features, rng):
        if rng is None:
            return module.apply({"params": params}, features, deterministic=True)
        return module.apply({"params": params}, features, deterministic=False, rngs={"dropout": rng})
    return embed_fn


def _features(rng, rows, n_padding=0):
    lengths = rng.integers(3, LENGTH + 1, rows)
    ids = np.zeros((rows, LENGTH), np.int32)
    mask = np.zeros((rows, LENGTH), np.int32)
    for i, n in enumerate(lengths[: rows - n_padding]):
        ids[i, :n] = rng.integers(1, 100, n)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def setup():
    config = _config()
    params = init_params(config, seed=0)
    rng = np.random.default_rng(0)
    features = tuple(_features(rng, BATCH) for _ in range(3))     # anchor, positive, hard negative
    return config, params, features


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _value_and_grad(loss, embed_fn, params, features, mask=None, rng=None):
    f = jax.jit(lambda p, feats, m, r: loss.value_and_grad(embed_fn, p, {}, feats, None, m, r))
    return f(params, features, mask, rng)


def test_cached_gradients_equal_plain(setup):
    """(anchor, positive, hard negative); chunks of 1, 4 and the full batch."""
    config, params, features = setup
    embed_fn = _embed_fn(config)
    value, (grads, _) = _value_and_grad(L.get_loss("MultipleNegativesRankingLoss"), embed_fn, params, features)
    assert float(jnp.max(jnp.abs(grads["transformer"]["embeddings"]["word_embeddings"]["embedding"]))) > 0
    length = features[0]["input_ids"].shape[1]
    for options in ({"mini_batch_size": 1}, {"mini_batch_size": 4}, {"mini_batch_size": BATCH},
                    {"mini_batch_num_tokens": 3 * length + 1}):     # 3 rows fit: chunks of 2 (divide BATCH)
        loss = L.get_loss("CachedMultipleNegativesRankingLoss", **options)
        value_c, (grads_c, _) = _value_and_grad(loss, embed_fn, params, features)
        np.testing.assert_allclose(value_c, value, rtol=1e-5)
        _assert_trees_close(grads_c, grads)


def test_cached_symmetric_with_padding_rows(setup):
    """Padding rows (all-zero attention mask, masked out) change nothing in the cached loss either."""
    config, params, features = setup
    embed_fn = _embed_fn(config)
    features = features[:2]
    value, (grads, _) = _value_and_grad(L.get_loss("MultipleNegativesSymmetricRankingLoss"), embed_fn, params, features)
    rng = np.random.default_rng(1)
    padded = tuple({k: np.concatenate([v, _features(rng, 4, n_padding=4)[k]]) for k, v in f.items()} for f in features)
    mask = jnp.asarray(np.arange(BATCH + 4) < BATCH)
    loss = L.get_loss("CachedMultipleNegativesSymmetricRankingLoss", mini_batch_size=4)
    value_c, (grads_c, _) = _value_and_grad(loss, embed_fn, params, padded, mask)
    np.testing.assert_allclose(value_c, value, rtol=1e-5)
    _assert_trees_close(grads_c, grads)


@pytest.mark.parametrize("chunk", [1, 4])
def test_cached_dropout_draws_the_uncached_masks(setup, chunk):
    """With dropout on, every chunk (both passes) draws the masks the uncached loss draws for the same
    sentences (keyed by sentence, not by chunk): the cached value and gradients equal plain MNRL's with
    the same key."""
    _, params, features = setup
    embed_fn = _embed_fn(_config(dropout=0.3))
    rng = jax.random.PRNGKey(42)
    loss = L.get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=chunk)
    value_c, (grads_c, _) = _value_and_grad(loss, embed_fn, params, features, None, rng)
    plain = L.get_loss("MultipleNegativesRankingLoss")
    value, (grads, _) = _value_and_grad(plain, embed_fn, params, features, None, rng)
    np.testing.assert_allclose(value_c, value, rtol=1e-5)
    # dropout masks make the two programs sum in different orders: entries near zero get an absolute bound
    _assert_trees_close(grads_c, grads, atol=1e-5)
    # and dropout is really on: another key gives another loss, and without dropout another value again
    value_other, _ = _value_and_grad(loss, embed_fn, params, features, None, jax.random.PRNGKey(7))
    value_off, _ = _value_and_grad(plain, embed_fn, params, features, None, None)
    assert abs(float(value_other) - float(value_c)) > 1e-4 and abs(float(value_off) - float(value_c)) > 1e-4


def test_chunk_layout_spans_the_batch():
    """Chunk k = rows k::n_chunks, so a batch sharded in contiguous blocks puts every chunk on every device."""
    from jaxsbert.losses.gradcache import merge_chunks, split_chunks
    x = jnp.arange(12)
    chunks = split_chunks(x, 3)
    assert chunks.tolist() == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert merge_chunks(chunks).tolist() == x.tolist()


def test_batch_not_divisible_is_an_error(setup):
    config, params, features = setup
    loss = L.get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=3)
    with pytest.raises(ValueError, match="batch size 8 is not a multiple of mini_batch_size 3"):
        loss.value_and_grad(_embed_fn(config), params, {}, features[:2])


@pytest.mark.parametrize("options", [{}, {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")},
                                     {"hardness_mode": "all_negatives", "hardness_strength": 5.0}])
def test_large_batches_compute_the_logits_in_blocks(monkeypatch, options):
    """A batch whose [B, B * n] logits exceed LOGIT_BLOCK is computed in blocks of anchors (here 2 of 8
    rows at a time): the same value and embedding gradients as in one block, hard negatives and padding
    rows included."""
    import jaxsbert.losses.ranking as ranking

    rng = np.random.default_rng(3)
    emb = tuple(jnp.asarray(rng.normal(size=(BATCH, 16)), jnp.float32) for _ in range(3))
    mask = jnp.asarray([True] * 7 + [False])
    loss = L.get_loss("MultipleNegativesRankingLoss", **options)
    f = lambda e: loss({}, e, None, mask)
    value, grads = jax.value_and_grad(f)(emb)
    calls = []
    original = ranking._row_losses
    monkeypatch.setattr(ranking, "_row_losses", lambda rows, *a, **k: calls.append(rows.shape) or original(rows, *a, **k))
    monkeypatch.setattr(ranking, "LOGIT_BLOCK", 2 * BATCH * 2)       # 2 anchors x 16 candidates
    value_b, grads_b = jax.value_and_grad(f)(emb)
    assert calls and all(shape == (2,) for shape in calls)
    np.testing.assert_allclose(value_b, value, rtol=1e-6)
    _assert_trees_close(grads_b, grads, rtol=1e-5, atol=1e-7)
