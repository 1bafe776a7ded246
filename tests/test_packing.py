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


@pytest.mark.parametrize("dropout", [False, True])
def test_packed_loss_and_gradients_equal_padded(dropout):
    """MNRL with a hard negative: value and parameter gradients of a packed batch equal the padded batch's,
    with dropout too (the masks are keyed by each token's sentence and position, not by its row)."""
    config = tiny_config(dropout=0.3)
    rng = np.random.default_rng(1)
    b = 8
    columns = [_sentences(rng, b) for _ in range(3)]
    model = SentenceModel(config, max_segments=8)
    embed_fn = make_embed_fn(model, dropout=dropout)
    key = jax.random.PRNGKey(5) if dropout else None
    padded = tuple(pad_token_ids(c, 32, b) for c in columns)
    params = model.init(jax.random.PRNGKey(0), padded[0])["params"]
    mask = np.array([True] * 6 + [False] * 2)
    loss = get_loss("MultipleNegativesRankingLoss")
    value, (grads, _) = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, padded, None, mask, key))(params)

    flat = [s for row in zip(*columns) for s in row]           # row-major: sentence (b, c) at b * 3 + c
    packed = pack_token_ids(flat, rows=10, row_length=48, max_segments=8, sentence_ids=np.arange(3 * b))
    packed["slots"] = packed["slots"].reshape(b, 3)
    value_p, (grads_p, _) = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, packed, None, mask, key))(params)
    if dropout:     # dropout is on: the value moved
        value_off, _ = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, padded, None, mask))(params)
        assert abs(float(value_off) - float(value)) > 1e-3
    np.testing.assert_allclose(value_p, value, rtol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(grads_p), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("name, options, rows", [
    ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 4}, 12),              # 3 chunks of 4 rows
    ("CachedMultipleNegativesRankingLoss", {"mini_batch_num_tokens": 150}, 12),      # 150 // 48 = 3 rows
    ("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 5}, 12),              # 4 rows: 5 does not divide 12
    ("CachedMultipleNegativesSymmetricRankingLoss", {"mini_batch_size": 3}, 12),
    ("MegaBatchMarginLoss", {"mini_batch_size": 2}, 12),
    ("MatryoshkaLoss", {"loss": "CachedMultipleNegativesRankingLoss", "matryoshka_dims": [32, 16],
                        "mini_batch_size": 6}, 12),
])
def test_cached_losses_on_packed_batches_equal_the_uncached_loss(name, options, rows, dropout):
    """GradCache over packed chunks: the value and gradients of a cached loss on a packed batch equal
    those of the same loss uncached (on the packed batch, and on the padded batch), with dropout too:
    every chunk draws the masks the uncached loss draws for its sentences."""
    config = tiny_config(normalize=True, dropout=0.2)   # Normalize: empty slots are zero vectors
    rng = np.random.default_rng(2)
    b = 10
    columns = [_sentences(rng, b) for _ in range(2)]
    model = SentenceModel(config, max_segments=4)
    embed_fn = make_embed_fn(model, dropout=dropout)
    key = jax.random.PRNGKey(9) if dropout else None
    padded = tuple(pad_token_ids(c, 32, b) for c in columns)
    params = model.init(jax.random.PRNGKey(0), padded[0])["params"]
    mask = np.array([True] * 9 + [False])
    options = dict(options)
    if name == "MatryoshkaLoss":
        inner = options.pop("loss")
        cached = get_loss(name, loss=inner, loss_kwargs={"mini_batch_size": options.pop("mini_batch_size")}, **options)
        plain = get_loss(name, loss="MultipleNegativesRankingLoss", **options)
    elif name == "MegaBatchMarginLoss":
        cached, plain = get_loss(name, **options), get_loss(name, use_mini_batched_version=False)
    else:
        cached, plain = get_loss(name, **options), get_loss(name.replace("Cached", ""))
    assert cached.grad_cache_mini_batch_size() is not None and plain.grad_cache_mini_batch_size() is None
    flat = [s for row in zip(*columns) for s in row]
    packed = pack_token_ids(flat, rows=rows, row_length=48, max_segments=4, sentence_ids=np.arange(2 * b))
    packed["slots"] = packed["slots"].reshape(b, 2)

    def run(loss, features):
        return jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, features, None, mask, key))(params)

    value, (grads, _) = run(cached, packed)
    if not dropout:     # without sentence_ids the cached loss finds each slot's sentence from the slots
        bare = {k: v for k, v in packed.items() if k != "sentence_ids"}
        value_b, (grads_b, _) = run(cached, bare)
        np.testing.assert_allclose(value_b, value, rtol=1e-6)
        for x, y in zip(jax.tree_util.tree_leaves(grads_b), jax.tree_util.tree_leaves(grads)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    for features in (packed, padded):
        value_u, (grads_u, _) = run(plain, features)
        np.testing.assert_allclose(value, value_u, rtol=1e-5)
        for x, y in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_u)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=2e-6)
    assert float(optax_norm(grads)) > 0


def optax_norm(tree):
    import optax
    return optax.tree.norm(tree)


def test_packed_grad_cache_chunks():
    """A packed batch is cut into the chunks the loss's budget allows: rows // chunk programs' worth."""
    from jaxsbert.losses.gradcache import largest_divisor
    assert [largest_divisor(12, k) for k in (1, 4, 5, 12, 50)] == [1, 4, 4, 12, 12]
    assert largest_divisor(7, 3) == 1
    loss = get_loss("CachedMultipleNegativesRankingLoss", mini_batch_num_tokens=1000)
    assert loss.grad_cache_chunk_rows(48) == 20 and loss.grad_cache_chunk_rows(2000) == 1
    assert get_loss("CachedMultipleNegativesRankingLoss").grad_cache_chunk_rows(48) == 32
    with pytest.raises(ValueError, match="mini_batch_num_tokens must be a positive integer"):
        get_loss("CachedMultipleNegativesRankingLoss", mini_batch_num_tokens=0)
    config = tiny_config()
    model = SentenceModel(config, max_segments=4)
    packed = pack_token_ids([[5, 6], [7, 8, 9]], rows=2, row_length=8, max_segments=4)
    packed["slots"] = packed["slots"].reshape(1, 2)
    params = model.init(jax.random.PRNGKey(0), packed)["params"]
    bare = lambda p, f, r: model.apply({"params": p}, f)      # no max_segments: it cannot find the slots
    with pytest.raises(ValueError, match="max_segments"):
        get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=1).value_and_grad(bare, params, {}, packed)


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


def _brute_force_counts(needs, length, steps, multiple=1):
    """Every set of at most MAX_PROGRAMS counts out of the rounded needs that holds the largest, each batch
    on the fewest rows that hold it: the cheapest (fewest counts on a tie) and its cost, batch by batch."""
    import itertools
    from jaxsbert.data.pack_shapes import MAX_PROGRAMS, PROGRAM_COST, row_cost

    rounded = [-(-n // multiple) * multiple for n in needs]
    values = sorted(set(rounded))
    best = None
    for k in range(1, MAX_PROGRAMS + 1):
        for counts in itertools.combinations(values, k):
            if counts[-1] != values[-1]:
                continue
            rows = sum(float(row_cost(min(c for c in counts if c >= n), length)) for n in rounded)
            cost = rows * steps / len(needs) + k * PROGRAM_COST
            if best is None or cost < best[1] - 1e-9 * cost:
                best = (counts, cost)
    return best


def test_row_counts_weigh_the_steps_against_compiling_one_more_program():
    from jaxsbert.data.pack_shapes import PROGRAM_COST, choose_row_counts, row_cost

    needs = [4] * 300 + [5] * 60          # STSb B=16 at 128-token rows, about
    counts, cost = choose_row_counts(needs, 128, steps=360)
    assert counts == (4, 5)                # 300 batches a row cheaper pay for a second program ...
    assert cost == pytest.approx(float(300 * row_cost(4, 128) + 60 * row_cost(5, 128)) + 2 * PROGRAM_COST)
    assert choose_row_counts(needs, 128, steps=36)[0] == (5,)     # ... 30 of them do not
    assert choose_row_counts([4] * 80 + [5] * 20, 128, steps=1000, multiple=4)[0] == (4, 8)
    assert choose_row_counts([3], 64, steps=10)[0] == (3,)
    assert choose_row_counts([7] * 50, 72, steps=10 ** 6)[0] == (7,)
    rng = np.random.default_rng(0)
    for trial in range(40):
        needs = list(rng.integers(2, 14, size=int(rng.integers(1, 60))))
        length, steps, multiple = int(rng.choice([64, 72, 128])), int(rng.choice([30, 360, 5000])), int(rng.choice([1, 2]))
        counts, cost = choose_row_counts(needs, length, steps, multiple)
        expected = _brute_force_counts(needs, length, steps, multiple)
        assert counts == expected[0] and cost == pytest.approx(expected[1]), (needs, length, steps, multiple)
        assert len(counts) <= 3 and counts[-1] == -(-max(needs) // multiple) * multiple
    with pytest.raises(ValueError, match="at least one batch"):
        choose_row_counts([], 128, steps=10)


def test_pack_shape_prefers_short_rows_when_they_hold_the_sentences_as_tightly():
    from jaxsbert.data.pack_shapes import auto_lengths, choose_pack_shape

    assert auto_lengths(70, 8) == [72, 80, 88, 96, 104, 112, 120, 128]
    assert auto_lengths(125, 8) == [128] and auto_lengths(70, 128) == [128] and auto_lengths(100, 48) == [128]
    assert auto_lengths(20, 48) == [48, 96, 128]
    with pytest.raises(ValueError, match="1..128"):
        auto_lengths(129, 8)
    from jaxsbert.data.packing import rows_needed

    rng = np.random.default_rng(1)
    short = [list(rng.integers(6, 30, size=32)) for _ in range(100)]        # sentences of 6..29 tokens
    needs = lambda batches: (lambda n: [rows_needed(b, n, 32) for b in batches])
    # the same token slots either way, and attention costs less on short rows
    assert choose_pack_shape([64, 128], needs(short), steps=100)[0] == 64
    # 33-token sentences: rows of 64 hold one each (half empty), rows of 128 hold three
    wasteful = [[33] * 32 for _ in range(100)]
    length, counts = choose_pack_shape([64, 128], needs(wasteful), steps=100)
    assert (length, counts) == (128, (11,))


def test_packed_loader_pads_each_batch_to_the_fewest_rows_that_hold_it(monkeypatch):
    """A batch gets the smallest of the dataset's row counts that holds it, so the usual batch computes
    no padding rows that only the largest batch needs; the counts are few (few programs). (Programs are
    made free here: this epoch of 17 steps would not pay for compiling a second one.)"""
    from test_data import WordTokenizer, pairs
    from jaxsbert.data import DataLoader, pack_shapes

    monkeypatch.setattr(pack_shapes, "PROGRAM_COST", 0.0)
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
def test_shape_positions_name_one_batch_per_program(packing, monkeypatch):
    """The loader names one batch of each shape of the first epoch, which the trainer compiles before its
    first step: packed, one per row count; unpacked, one per length bucket."""
    from test_data import WordTokenizer, pairs
    from jaxsbert.data import DataLoader, pack_shapes

    monkeypatch.setattr(pack_shapes, "PROGRAM_COST", 0.0)     # several row counts for this short epoch

    ds, tok = pairs(200, max_words=30), WordTokenizer()
    ld = DataLoader(ds, tok, batch_size=12 if packing else 3, seed=3, packing=packing, pack_length=64,
                    max_segments=8, buckets=(8, 16, 24, 32))
    shape = lambda b: b["features"]["input_ids"].shape if packing else b["features"][0]["input_ids"].shape
    every = {shape(ld.batch_at((0, i)).batch) for i in range(ld.steps_per_epoch(0))}
    named = [shape(ld.batch_at(p).batch) for p in ld.shape_positions(0)]
    assert sorted(named) == sorted(every) and len(every) >= 2


def test_packed_row_length_auto_or_fixed():
    """``pack_length="auto"`` gives rows a multiple of 8 that hold the longest sentence, at most 128 tokens
    (the cost model's pick); an int gives exactly that length (longer only for a longer sentence); past
    128 tokens auto rows take the longest sentence's bucket; other values are an error before any batch."""
    from test_data import WordTokenizer, pairs
    from jaxsbert.data import DataLoader
    from jaxsbert.data.batching import batch_sentences
    from jaxsbert.data.pack_shapes import auto_lengths, choose_pack_shape
    from jaxsbert.data.packing import rows_needed

    ds, tok = pairs(300, max_words=20), WordTokenizer()
    auto = DataLoader(ds, tok, batch_size=16, seed=3, packing=True)
    longest = max(int(c.lengths.max()) for c in auto.data["train"].inputs)
    rows, length = auto.pack_shapes["train"]
    assert length % 8 == 0 and longest <= length <= 128
    sample = [r for _, r in auto.plan(0)]
    assert (length, auto.pack_rows["train"]) == choose_pack_shape(
        auto_lengths(longest, 8),
        lambda n: [rows_needed([len(t) for t in batch_sentences(auto.data["train"], r)], n, auto.max_segments)
                   for r in sample], len(sample))
    assert {auto.batch_at((0, i)).batch["features"]["input_ids"].shape[1] for i in range(len(sample))} == {length}

    assert DataLoader(ds, tok, batch_size=16, seed=3, packing=True, pack_length=100).pack_shapes["train"][1] == 100
    assert DataLoader(ds, tok, batch_size=16, seed=3, packing=True, pack_length=8).pack_shapes["train"][1] == 32
    assert DataLoader(ds, tok, batch_size=16, seed=3, packing=True,
                      row_length_step=128).pack_shapes["train"][1] == 128          # TPU: lane-sized rows
    long_ds, long_tok = pairs(40, max_words=200), WordTokenizer(max_seq_length=256)
    assert DataLoader(long_ds, long_tok, batch_size=8, seed=3, packing=True).pack_shapes["train"][1] == 256
    for bad in ("long", 0, True, 2.5):
        with pytest.raises(ValueError, match="pack_length must be 'auto' or a positive number of tokens"):
            DataLoader(ds, tok, batch_size=16, seed=3, packing=True, pack_length=bad)


def test_first_fit_tree_places_as_a_scan_of_the_rows():
    """FirstFit (a max-tree over the rows' free tokens) puts every sentence where scanning the rows in order
    for the first with room and a free segment would."""
    from jaxsbert.data.packing import FirstFit

    rng = np.random.default_rng(5)
    for _ in range(200):
        length, segments, capacity = int(rng.integers(4, 40)), int(rng.integers(1, 6)), int(rng.integers(1, 30))
        fit, free, used = FirstFit(capacity, length, segments), [length] * capacity, [0] * capacity
        for n in rng.integers(1, length + 1, int(rng.integers(1, 80))).tolist():
            expected = next((r for r in range(capacity) if free[r] >= n and used[r] < segments), None)
            assert fit.place(n) == expected
            if expected is not None:
                free[expected] -= n
                used[expected] += 1
        assert fit.rows == max((r + 1 for r in range(capacity) if used[r]), default=0)
