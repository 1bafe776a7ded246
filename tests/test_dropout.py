"""jaxsbert.models.dropout: the law of flax.linen.Dropout (drop probability, scaling, determinism)
with hashed random bits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.models.dropout import Dropout, drop_threshold, random_bits


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
