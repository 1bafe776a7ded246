"""Dropout whose keep mask is a counter-based hash of *which token* each element belongs to.

Same law as ``flax.linen.Dropout``: each element is zeroed with probability ``rate`` (to within
1.2e-10: the drop test is ``bits < round(rate * 2**32)`` on 32 random bits), survivors are scaled by
``1 / (1 - rate)``, and the randomness comes from the module's ``"dropout"`` RNG stream (one key per
layer and site, from the module's path), so a run is deterministic in its seed.

What the bits are a function of makes a run the same on every topology. Inside an encoder the mask
of an element is a function of (the key, the index of its token's sentence in the global batch, the
token's position in its sentence, and the element's place in that token's features: the hidden unit,
or for attention probabilities the head and the attended token's position), never of the row, packed
row, device, process or gradient-caching chunk the token happens to sit in (:class:`TokenIds`). One
batch laid out unpacked on 1 device, packed on 8, or split over 2 hosts draws the same masks.

The bits are ``mix(mix(element ^ a) + b)``, with ``a`` and ``b`` two words per token (``mix`` of the
sentence index xor a key word, plus the position, mixed again) and ``mix`` the murmur3 32-bit
finalizer (a bijection with full avalanche). Threefry for every element costs ~20 rounds of integer
work; this is ~7 operations, and on CPU it is what dropout cost: attention-probability dropout draws one
number per score, ``[rows, heads, L, L]`` per layer (~6M per step of a batch of 16 packed STSb pairs).
Measured on such a CoSENT step with the earlier element-index hash (session 4; the token-keyed bits add ~3
integer operations per element and two [rows, L] words per site, not re-timed alone): dropout ~53 ms with
flax's Dropout, ~10 ms hashed (one layer's attention mask: 15.5 ms with ``jax.random.bernoulli``, 0.7 ms hashed). The key words are read from the key
(``key_data``) rather than drawn (``jax.random.bits``): MiniLM's train step has 19 dropouts, and those
draws were ~0.5 s of its ~4.3 s compilation on 2 CPU cores.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

MAX_ATTENTION_POSITION = 2 ** 16     # attended positions and heads are packed into one 32-bit word


class TokenIds(NamedTuple):
    """Which token each position of a ``[rows, L]`` batch holds, for dropout masks."""
    sentence: jax.Array    # [rows, L] the index of the token's sentence in the global batch (any value on padding)
    position: jax.Array    # [rows, L] the token's position in its sentence


def token_ids(attention_mask: jax.Array, position_ids: Optional[jax.Array] = None,
              sentence_ids: Optional[jax.Array] = None) -> TokenIds:
    """The :class:`TokenIds` of an encoder's input. Without ``sentence_ids`` (a model applied on its own,
    outside a loss) each (row, segment) is its own sentence; without ``position_ids`` positions count
    from 0 along the row."""
    rows, length = attention_mask.shape
    if position_ids is None:
        position_ids = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))
    if sentence_ids is None:
        sentence_ids = jnp.arange(rows, dtype=jnp.int32)[:, None] * (length + 1) + attention_mask
    return TokenIds(jnp.broadcast_to(sentence_ids, (rows, length)), jnp.broadcast_to(position_ids, (rows, length)))


def drop_threshold(rate: float) -> int:
    """Elements whose 32 random bits are below this are dropped."""
    return int(round(float(rate) * 2 ** 32))


def _mix32(h: jax.Array) -> jax.Array:
    """murmur3's fmix32 on uint32."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    words = jax.random.key_data(key).reshape(-1)             # threefry keys: 2 words, rbg keys: 4
    return _mix32(words[0] ^ jnp.uint32(0x9E3779B9)), _mix32(words[1] ^ jnp.uint32(0x7F4A7C15))


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of ``shape``, one per element, hashed from the element's flat index (at most 2**32
    elements): dropout on an array that is not an encoder's tokens."""
    size = math.prod(shape)
    if size > 2 ** 32:
        raise ValueError(f"dropout on {size} elements: at most 2**32 per call")
    seed = _key_words(key)
    index = lax.iota(jnp.uint32, size).reshape(shape) if shape else jnp.zeros((), jnp.uint32)
    return _mix32(_mix32(index ^ seed[0]) + seed[1])


def token_bits(key: jax.Array, tokens: TokenIds, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits for a ``[rows, L, features]`` array of token features, or ``[rows, heads, L, L]``
    attention probabilities (query token, attended token), each a function of the element's token
    (:class:`TokenIds`) and its place in that token's features only."""
    k0, k1 = _key_words(key)
    sentence = tokens.sentence.astype(jnp.uint32)
    position = tokens.position.astype(jnp.uint32)
    a = _mix32(_mix32(sentence ^ k0) + position)                          # [rows, L]
    b = _mix32(_mix32(sentence ^ k1) + position * jnp.uint32(0x9E3779B1))
    if len(shape) == 3:                                                   # [rows, L, features]
        element = lax.broadcasted_iota(jnp.uint32, (1, 1, shape[2]), 2)
        a, b = a[:, :, None], b[:, :, None]
    elif len(shape) == 4:                                                 # [rows, heads, L, L]
        heads, length = shape[1], shape[3]
        if heads > MAX_ATTENTION_POSITION or length > MAX_ATTENTION_POSITION:
            raise ValueError(f"dropout on attention of {heads} heads x {length} positions: at most "
                             f"{MAX_ATTENTION_POSITION} each")
        head = lax.broadcasted_iota(jnp.uint32, (1, heads, 1, 1), 1)
        element = (head << 16) | position[:, None, None, :]              # [rows, heads, 1, L] (attended token)
        a, b = a[:, None, :, None], b[:, None, :, None]                   # the query token
    else:
        raise ValueError(f"token dropout takes [rows, L, features] or [rows, heads, L, L] arrays, got shape {shape}")
    return _mix32(_mix32(element ^ a) + b)


class Dropout(nn.Module):
    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool, tokens: Optional[TokenIds] = None) -> jax.Array:
        """``x`` dropped out; ``tokens`` say which token each row/position of ``x`` holds (see
        :func:`token_bits`), None hashes the flat element index instead."""
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"dropout rate must be in [0, 1]; got {self.rate}")
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        key = self.make_rng("dropout")
        bits = random_bits(key, x.shape) if tokens is None else token_bits(key, tokens, x.shape)
        keep = bits >= jnp.uint32(drop_threshold(self.rate))
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))
