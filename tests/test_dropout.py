"""jaxsbert.models.dropout: the law of flax.linen.Dropout (drop probability, scaling, determinism)
with hashed random bits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.models.dropout import Dropout, TokenIds, drop_threshold, random_bits, token_bits, token_ids


def _apply(rate, x, seed, deterministic=False):
    return Dropout(rate).apply({}, x, deterministic=deterministic, rngs={"dropout": jax.random.PRNGKey(seed)})


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_rate_and_scale(rate):
    """Each element is dropped with probability ``rate`` (within 5 standard errors over 2M elements) and
    survivors are scaled by 1 / (1 - rate), so the mean is kept."""
    x = jnp.ones((8, 12, 128, 160), jnp.float32)
    y = np.asarray(_apply(rate, x, 0))
    dropped = np.mean(y == 0)
    n = y.size
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n), (dropped, rate)
    np.testing.assert_allclose(np.unique(y[y != 0]), [1 / (1 - rate)], rtol=1e-6)
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)


def test_masks_are_independent_across_keys_and_positions():
    """Masks of two keys, and of neighbouring elements of one mask, are uncorrelated; bits are uniform."""
    shape = (1024, 1024)
    a = np.asarray(random_bits(jax.random.PRNGKey(1), shape))
    b = np.asarray(random_bits(jax.random.PRNGKey(2), shape))
    keep_a, keep_b = (a >= drop_threshold(0.5)).astype(float), (b >= drop_threshold(0.5)).astype(float)
    bound = 5 / np.sqrt(a.size)
    assert abs(np.corrcoef(keep_a.ravel(), keep_b.ravel())[0, 1]) < bound
    assert abs(np.corrcoef(keep_a[:, 1:].ravel(), keep_a[:, :-1].ravel())[0, 1]) < bound     # along a row
    assert abs(np.corrcoef(keep_a[1:].ravel(), keep_a[:-1].ravel())[0, 1]) < bound           # along a column
    counts = np.bincount((a >> 28).ravel(), minlength=16)                                  # top 4 bits uniform
    expected = a.size / 16
    assert np.sum((counts - expected) ** 2 / expected) < 60     # chi-square, 15 dof: p ~ 1e-6
    for bit in (0, 7, 15, 31):                                  # every bit is a fair coin
        assert abs(np.mean((a >> bit) & 1) - 0.5) < 5 * 0.5 / np.sqrt(a.size)


def test_same_key_same_mask_and_deterministic_mode():
    x = jnp.arange(1, 1001, dtype=jnp.float32)
    np.testing.assert_array_equal(_apply(0.3, x, 7), _apply(0.3, x, 7))
    assert not np.array_equal(_apply(0.3, x, 7), _apply(0.3, x, 8))
    np.testing.assert_array_equal(_apply(0.3, x, 7, deterministic=True), x)
    np.testing.assert_array_equal(_apply(0.0, x, 7), x)
    np.testing.assert_array_equal(_apply(1.0, x, 7), np.zeros(1000))
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\]; got 1.5"):
        _apply(1.5, x, 7)


def test_gradient_is_the_mask_times_the_scale():
    x = jnp.linspace(-1, 1, 4096)
    y = _apply(0.2, x, 3)
    g = jax.grad(lambda v: jnp.sum(_apply(0.2, v, 3)))(x)
    np.testing.assert_allclose(g, np.where(np.asarray(y) != 0, 1 / 0.8, 0.0), rtol=1e-6)


def test_drop_threshold_is_the_rate_in_units_of_2_to_the_32():
    assert drop_threshold(0.1) == 429496730 and abs(drop_threshold(0.1) / 2 ** 32 - 0.1) < 1.2e-10
    assert drop_threshold(0.0) == 0


# ------------------------------------------------------------------ masks keyed by token (inside encoders)

def _tokens(rows, length, offset=0):
    sentence = jnp.broadcast_to(jnp.arange(rows)[:, None] + offset, (rows, length))
    position = jnp.broadcast_to(jnp.arange(length)[None], (rows, length))
    return TokenIds(sentence, position)


@pytest.mark.parametrize("shape", [(64, 48, 384), (16, 12, 48, 48)])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_token_masks_drop_rate_and_independence(shape, rate):
    """Token-keyed masks of hidden features [rows, L, H] and attention probabilities [rows, heads, L, L]:
    drop rate within 5 standard errors, survivors scaled by 1 / (1 - rate), and no correlation between
    neighbouring features, positions, sentences (rows) or heads."""
    tokens = _tokens(shape[0], shape[-2] if len(shape) == 4 else shape[1])
    x = jnp.ones(shape, jnp.float32)
    y = np.asarray(Dropout(rate).apply({}, x, False, tokens, rngs={"dropout": jax.random.PRNGKey(3)}))
    dropped = np.mean(y == 0)
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / y.size), (dropped, rate)
    np.testing.assert_allclose(np.unique(y[y != 0]), [1 / (1 - rate)], rtol=1e-6)
    keep = (y != 0).astype(float)
    for axis in range(len(shape)):
        a, b = np.take(keep, np.arange(1, shape[axis]), axis), np.take(keep, np.arange(shape[axis] - 1), axis)
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size), axis


def test_token_masks_follow_the_token_not_its_row():
    """A sentence's mask is the same wherever its tokens sit (another row, another offset in a packed
    row, another row length), and differs between sentences, positions and keys."""
    key = jax.random.PRNGKey(11)
    rows, length, hidden, heads = 6, 10, 32, 4
    tokens = _tokens(rows, length, offset=100)
    hid = np.asarray(token_bits(key, tokens, (rows, length, hidden)))
    att = np.asarray(token_bits(key, tokens, (rows, heads, length, length)))
    # the same six sentences packed: sentence 100 + r in row r // 2 at offset (r % 2) * 12 of 24-token rows
    sentence = np.zeros((3, 24), np.int32)
    position = np.zeros((3, 24), np.int32)
    for r in range(rows):
        sentence[r // 2, (r % 2) * 12:(r % 2) * 12 + length] = 100 + r
        position[r // 2, (r % 2) * 12:(r % 2) * 12 + length] = np.arange(length)
    packed = TokenIds(jnp.asarray(sentence), jnp.asarray(position))
    hid_p = np.asarray(token_bits(key, packed, (3, 24, hidden)))
    att_p = np.asarray(token_bits(key, packed, (3, heads, 24, 24)))
    for r in range(rows):
        cols = slice((r % 2) * 12, (r % 2) * 12 + length)
        np.testing.assert_array_equal(hid_p[r // 2, cols], hid[r])
        np.testing.assert_array_equal(att_p[r // 2, :, cols, cols], att[r])
    assert len(np.unique(hid)) > 0.999 * hid.size and len(np.unique(att)) > 0.999 * att.size
    assert not np.array_equal(token_bits(jax.random.PRNGKey(12), tokens, (rows, length, hidden)), hid)


def test_token_ids_defaults_number_each_segment():
    """Without sentence ids each (row, segment) is its own sentence; positions default to the column."""
    mask = jnp.asarray([[1, 1, 2, 2, 0], [1, 1, 1, 0, 0]])
    ids = token_ids(mask)
    assert len({int(ids.sentence[r, c]) for r, c in [(0, 0), (0, 2), (1, 0)]}) == 3
    assert int(ids.sentence[0, 0]) == int(ids.sentence[0, 1]) and int(ids.sentence[0, 2]) == int(ids.sentence[0, 3])
    np.testing.assert_array_equal(ids.position, np.broadcast_to(np.arange(5), (2, 5)))
