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
    def __call__(self, x, bias, deterministic: bool):
        heads = self.num_heads
        head_dim = self.hidden_size // heads
        if head_dim * heads != self.hidden_size:
            raise ValueError(f"hidden size {self.hidden_size} is not a multiple of the number of heads {heads}")

        def project(name):
            y = nn.Dense(self.hidden_size, dtype=self.dtype, name=name)(x)
            return y.reshape(y.shape[:-1] + (heads, head_dim))

        q, k, v = project(self.query), project(self.key), project(self.value)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(head_dim))
        probs = jax.nn.softmax(scores + bias, axis=-1)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        out = out.reshape(out.shape[:-2] + (self.hidden_size,))
        if self.out is not None:
            out = nn.Dense(self.hidden_size, dtype=self.dtype, name=self.out)(out)
        return out
