"""Multi-head self-attention with configurable projection names, for the non-BERT encoder families.

BERT/RoBERTa use :class:`jaxsbert.models.bert.SelfAttention`; DistilBERT (``q_lin``/``k_lin``/
``v_lin``/``out_lin``) and MPNet (``q``/``k``/``v``/``o``) name their projections differently, so
they share this module. ``bias`` is additive and broadcasts to ``[B, heads, L, L]``: the segment
mask from :func:`jaxsbert.models.bert.attention_bias`, plus MPNet's relative position bias.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsbert.models.dropout import Dropout


def heads_first(t: jax.Array, heads: int) -> jax.Array:
    """[B, L, heads * d] -> [B, heads, L, d]."""
    return t.reshape(t.shape[:-1] + (heads, t.shape[-1] // heads)).swapaxes(-2, -3)


def attention_probs(q: jax.Array, k: jax.Array, bias: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d) + bias) in float32 for [B, heads, L, d] queries and keys."""
    scores = jnp.matmul(q, k.swapaxes(-1, -2)).astype(jnp.float32) / jnp.sqrt(jnp.float32(q.shape[-1]))
    return jax.nn.softmax(scores + bias, axis=-1)


def merge_heads(t: jax.Array) -> jax.Array:
    """[B, heads, L, d] -> [B, L, heads * d]."""
    t = t.swapaxes(-2, -3)
    return t.reshape(t.shape[:-2] + (t.shape[-2] * t.shape[-1],))


class MultiHeadAttention(nn.Module):
    hidden_size: int
    num_heads: int
    dropout_rate: float
    query: str = "query"
    key: str = "key"
    value: str = "value"
    out: Optional[str] = None      # name of the output projection; None: no projection
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        heads = self.num_heads
        head_dim = self.hidden_size // heads
        if head_dim * heads != self.hidden_size:
            raise ValueError(f"hidden size {self.hidden_size} is not a multiple of the number of heads {heads}")

        def project(name):
            return heads_first(nn.Dense(self.hidden_size, dtype=self.dtype, name=name)(x), heads)

        q, k, v = project(self.query), project(self.key), project(self.value)
        # batched matmuls with heads as a batch axis: XLA lays these out better than a 4-index einsum
        probs = attention_probs(q, k, bias)
        probs = Dropout(self.dropout_rate)(probs, deterministic, tokens).astype(self.dtype)
        out = merge_heads(jnp.matmul(probs, v))
        if self.out is not None:
            out = nn.Dense(self.hidden_size, dtype=self.dtype, name=self.out)(out)
        return out
