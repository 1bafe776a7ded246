"""Sequence packing: packed rows give the same embeddings, losses and gradients as unpacked batches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.data.buckets import pad_token_ids
from jaxsbert.data.packing import assign_rows, pack_token_ids
from jaxsbert.losses import get_loss
from jaxsbert.models.pooling import PoolingConfig
from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModel, SentenceModelConfig
from jaxsbert.models.heads import DenseConfig
from jaxsbert.training.step import make_embed_fn

from helpers import tiny_config


def test_assign_rows_fills_first_fit_and_respects_limits():
    row, segment, used = assign_rows([5, 3, 8, 2, 2], row_length=8, max_segments=2)
    assert used == 3
    per_row = {}
    for i, (r, s) in enumerate(zip(row, segment)):
        per_row.setdefault(int(r), []).append(i)
    for r, members in per_row.items():
        assert sum([5, 3, 8, 2, 2][i] for i in members) <= 8 and len(members) <= 2
    assert sorted((int(r), int(s)) for r, s in zip(row, segment)) == sorted(set((int(r), int(s)) for r, s in zip(row, segment)))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 8\]"):
        assign_rows([9], 8, 4)
    with pytest.raises(ValueError, match="need 3 packed rows"):
        pack_token_ids([[1] * 5, [1] * 3, [1] * 8, [1] * 2, [1] * 2], rows=2, row_length=8, max_segments=2)


def _sentences(rng, n, vocab=100):
    return [list(rng.integers(3, vocab, size=int(rng.integers(1, 20)))) for _ in range(n)]


@pytest.mark.parametrize("modes", [("mean",), ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")])
def test_packed_embeddings_equal_padded(modes):
    config = tiny_config()
    config = SentenceModelConfig(config.family, config.transformer,
                                 (PoolingConfig(32, modes), DenseConfig(32 * len(modes), 16, True, "torch.nn.modules.activation.Tanh"),
                                  NormalizeConfig()), config.max_seq_length)
    rng = np.random.default_rng(0)
    sentences = _sentences(rng, 23)
    model = SentenceModel(config, max_segments=6)
    padded = pad_token_ids(sentences, 32, 23)
    params = model.init(jax.random.PRNGKey(0), padded)["params"]
    expected = np.asarray(model.apply({"params": params}, padded))
    packed = pack_token_ids(sentences, rows=12, row_length=40, max_segments=6)
    got = np.asarray(model.apply({"params": params}, packed))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_packed_loss_and_gradients_equal_padded():
    """MNRL with a hard negative: value and parameter gradients of a packed batch equal the padded batch's."""
    config = tiny_config()
    rng = np.random.default_rng(1)
    b = 8
    columns = [_sentences(rng, b) for _ in range(3)]
    model = SentenceModel(config, max_segments=8)
    embed_fn = make_embed_fn(model, dropout=False)
    padded = tuple(pad_token_ids(c, 32, b) for c in columns)
    params = model.init(jax.random.PRNGKey(0), padded[0])["params"]
    mask = np.array([True] * 6 + [False] * 2)
    loss = get_loss("MultipleNegativesRankingLoss")
    value, (grads, _) = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, padded, None, mask))(params)

    flat = [s for row in zip(*columns) for s in row]           # row-major: sentence (b, c) at b * 3 + c
    packed = pack_token_ids(flat, rows=10, row_length=48, max_segments=8)
    packed["slots"] = packed["slots"].reshape(b, 3)
    value_p, (grads_p, _) = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, packed, None, mask))(params)
    np.testing.assert_allclose(value_p, value, rtol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(grads_p), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_cached_loss_rejects_packed_batches():
    config = tiny_config()
    model = SentenceModel(config)
    packed = pack_token_ids([[5, 6], [7, 8, 9]], rows=1, row_length=8)
    packed["slots"] = packed["slots"].reshape(1, 2)
    params = model.init(jax.random.PRNGKey(0), packed)["params"]
    loss = get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=1)
    with pytest.raises(ValueError, match="packed"):
        loss.value_and_grad(make_embed_fn(model, False), params, {}, packed)


def _unpack(features, max_segments):
    """slot -> token ids of that segment, from a (global) packed feature dict."""
    ids, seg = features["input_ids"], features["attention_mask"]
    return lambda slot: list(ids[slot // max_segments][seg[slot // max_segments] == slot % max_segments + 1])


@pytest.mark.parametrize("process_count", [1, 3])
def test_packed_loader_batches_hold_each_row_sentences(process_count):
    """Every (row, column) slot of a packed batch decodes to that row's tokens, also when 3 processes
    each pack their share and the global array is their concatenation; padding rows are masked."""
    from test_data import WordTokenizer, pairs
    from jaxsbert.data import DataLoader

    ds, tok = pairs(40, max_words=30), WordTokenizer()
    plain = DataLoader(ds, tok, batch_size=12, seed=3)
    loaders = [DataLoader(ds, tok, batch_size=12, seed=3, packing=True, pack_length=64, max_segments=4,
                          process_index=p, process_count=process_count) for p in range(process_count)]
    assert len({ld.pack_shapes["train"] for ld in loaders}) == 1
    for step, g in enumerate(plain.iterate(epochs=1)):
        parts = [ld.batch_at((0, step)).batch for ld in loaders]
        shapes = {p["features"]["input_ids"].shape for p in parts}
        assert len(shapes) == 1 and shapes.pop()[1] == 64
        merged = {k: np.concatenate([p["features"][k] for p in parts]) for k in parts[0]["features"]}
        np.testing.assert_array_equal(np.concatenate([p["mask"] for p in parts]), g.batch["mask"])
        np.testing.assert_array_equal(np.concatenate([p["labels"] for p in parts]), g.batch["labels"])
        decode = _unpack(merged, 4)
        for b in np.flatnonzero(g.batch["mask"]):
            for c in range(2):
                expected = g.batch["features"][c]["input_ids"][b][g.batch["features"][c]["attention_mask"][b] > 0]
                assert decode(int(merged["slots"][b, c])) == list(expected)


def test_row_buckets():
    from jaxsbert.data.loader import row_buckets

    assert row_buckets([4] * 80 + [5] * 20) == (4, 5)                  # median 4, 90th percentile and max 5
    assert row_buckets([15] * 60 + [16] * 31 + [17] * 6 + [18] * 3) == (15, 16, 18)
    assert row_buckets([4] * 80 + [5] * 20, multiple=4) == (4, 8)
    assert row_buckets([3]) == (3,)
    with pytest.raises(ValueError, match="at least one batch"):
        row_buckets([])


def test_packed_loader_pads_each_batch_to_the_fewest_rows_that_hold_it():
    """A batch gets the smallest of the dataset's row counts that holds it, so the usual batch computes
    no padding rows that only the largest batch needs; the counts are few (few programs)."""
    from test_data import WordTokenizer, pairs
    from jaxsbert.data import DataLoader
    from jaxsbert.data.batching import batch_sentences
    from jaxsbert.data.packing import rows_needed

    ds, tok = pairs(200, max_words=30), WordTokenizer()
    ld = DataLoader(ds, tok, batch_size=12, seed=3, packing=True, pack_length=64, max_segments=8)
    counts = ld.pack_rows["train"]
    assert 2 <= len(counts) <= 3 and ld.pack_shapes["train"] == (counts[-1], 64)
    used = set()
    for index, (_, rows) in enumerate(ld.plan(0)):
        need = rows_needed([len(t) for t in batch_sentences(ld.data["train"], rows)], 64, 8)
        got = ld.batch_at((0, index)).batch["features"]["input_ids"].shape[0]
        assert got == min(c for c in counts if c >= need), (need, got, counts)
        used.add(got)
    assert used == set(counts)


@pytest.mark.parametrize("packing", [True, False])
def test_shape_positions_name_one_batch_per_program(packing):
    """The loader names one batch of each shape of the first epoch, which the trainer compiles before its
    first step: packed, one per row count; unpacked, one per length bucket."""
    from test_data import WordTokenizer, pairs
    from jaxsbert.data import DataLoader

    ds, tok = pairs(200, max_words=30), WordTokenizer()
    ld = DataLoader(ds, tok, batch_size=12 if packing else 3, seed=3, packing=packing, pack_length=64,
                    max_segments=8, buckets=(8, 16, 24, 32))
    shape = lambda b: b["features"]["input_ids"].shape if packing else b["features"][0]["input_ids"].shape
    every = {shape(ld.batch_at((0, i)).batch) for i in range(ld.steps_per_epoch(0))}
    named = [shape(ld.batch_at(p).batch) for p in ld.shape_positions(0)]
    assert sorted(named) == sorted(every) and len(every) >= 2
