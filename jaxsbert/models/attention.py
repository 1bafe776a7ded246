"""Scaled dot-product self-attention, two ways, and the multi-head module the non-BERT families share.

:func:`attend` is the attention of every encoder family here: ``softmax(q k^T / sqrt(d) + bias) v`` for
``[B, L, heads, d]`` queries, keys and values, the scores and the softmax in float32 whatever the compute
dtype. It runs one of two paths (``attention_impl``):

- ``"materialized"``: the ``[B, heads, L, L]`` probabilities are an array of their own, so attention-probability
  dropout (:class:`jaxsbert.models.dropout.Dropout`, token-keyed masks) can be applied to them.
- ``"fused"``: :func:`jax.nn.dot_product_attention`. On a GPU with bf16/fp16 inputs and a head size cuDNN
  takes, ``implementation="cudnn"`` (cuDNN's flash attention: the probabilities are never written to memory);
  elsewhere ``implementation=None``, XLA's version of the same computation. It has no dropout argument (jax
  0.10.2; the cuDNN kernel underneath has a rate and a seed, but its own random stream, which would break the
  topology-independent masks of :mod:`jaxsbert.models.dropout`), so training with attention dropout > 0 takes
  the materialized path whatever is asked.
- ``"auto"`` (the default): fused unless attention dropout is on; on CPU the materialized path, which is no
  slower there (see :data:`FUSED_ON_CPU`).

``bias`` is additive and broadcasts to ``[B, heads, L, L]``: the segment mask from
:func:`jaxsbert.models.bert.attention_bias` (a packed row's sentences do not see each other), plus MPNet's
relative position bias. BERT/RoBERTa use :class:`jaxsbert.models.bert.SelfAttention`; DistilBERT
(``q_lin``/``k_lin``/``v_lin``/``out_lin``) and MPNet (``q``/``k``/``v``/``o``) name their projections
differently, so they share :class:`MultiHeadAttention`.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsbert.models.dropout import Dropout

ATTENTION_IMPLS = ("auto", "fused", "materialized")
# CPU (2 shared cores), all-MiniLM-L6-v2 at B=32, L=64, float32 (python -m benchmarks.attention; RESULTS.md):
# CPU time per call of the two paths within 2% of each other, either way, in forward and forward + backward.
# On CPU XLA's dot_product_attention is the same computation laid out differently, no faster; the
# materialized path stays there (the one training with attention dropout takes anyway).
FUSED_ON_CPU = False
# cuDNN flash attention's limits (jax._src.cudnn.fused_attention_stablehlo.check_is_flash_attention): bf16 or
# fp16 inputs, a head size that is a multiple of 8 and at most 128 (256 from Hopper on), and with a bias in
# training even sequence lengths.
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128
CUDNN_MASK_VALUE = -(2.0 ** 40)   # jax's cuDNN wrapper masks bf16 scores with this (cuDNN mishandles lower ones)


def check_attention_impl(name: str) -> str:
    if name not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl {name!r} is not one of {list(ATTENTION_IMPLS)}")
    return name


def uses_fused(attention_impl: str, dropout_rate: float, deterministic: bool) -> bool:
    """Whether :func:`attend` takes the fused path: never while attention dropout is on (training with a rate
    > 0), else ``attention_impl`` ("auto": per backend, see :data:`FUSED_ON_CPU`)."""
    check_attention_impl(attention_impl)
    if attention_impl == "materialized" or (not deterministic and dropout_rate > 0.0):
        return False
    return attention_impl == "fused" or jax.default_backend() != "cpu" or FUSED_ON_CPU


def fused_implementation(q: jax.Array, training_with_bias: bool = True) -> Optional[str]:
    """``implementation`` for :func:`jax.nn.dot_product_attention`: "cudnn" on a GPU where cuDNN's flash
    attention takes these queries, else None (XLA)."""
    head_dim, length = q.shape[-1], q.shape[-3]
    if (jax.default_backend() == "gpu" and q.dtype in CUDNN_DTYPES and head_dim % 8 == 0
            and head_dim <= CUDNN_MAX_HEAD_DIM and not (training_with_bias and length % 2)):
        return "cudnn"
    return None


def split_heads(t: jax.Array, heads: int) -> jax.Array:
    """[B, L, heads * d] -> [B, L, heads, d]."""
    return t.reshape(t.shape[:-1] + (heads, t.shape[-1] // heads))


def heads_first(t: jax.Array, heads: int) -> jax.Array:
    """[B, L, heads * d] -> [B, heads, L, d]."""
    return split_heads(t, heads).swapaxes(-2, -3)


def attention_probs(q: jax.Array, k: jax.Array, bias: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d) + bias) in float32 for [B, heads, L, d] queries and keys (scores accumulated in
    float32 from bf16 inputs too)."""
    scores = jnp.matmul(q, k.swapaxes(-1, -2), preferred_element_type=jnp.float32)
    scores = scores.astype(jnp.float32) / jnp.sqrt(jnp.float32(q.shape[-1]))
    return jax.nn.softmax(scores + bias, axis=-1)


def merge_heads(t: jax.Array) -> jax.Array:
    """[B, heads, L, d] -> [B, L, heads * d]."""
    t = t.swapaxes(-2, -3)
    return t.reshape(t.shape[:-2] + (t.shape[-2] * t.shape[-1],))


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array, training: bool = True) -> jax.Array:
    """:func:`jax.nn.dot_product_attention` of [B, L, heads, d] q, k, v and an additive float32 bias
    (broadcasting to [B, heads, L, L]) -> [B, L, heads * d] in v's dtype."""
    out = None
    if fused_implementation(q, training) == "cudnn":
        # cuDNN takes the bias in the inputs' dtype (a masked score's -3e38 would be -inf there). What it refuses
        # when traced (no cuDNN found, a shape its kernels lack) goes to XLA instead.
        try:
            out = jax.nn.dot_product_attention(q, k, v, bias=jnp.maximum(bias, CUDNN_MASK_VALUE).astype(q.dtype),
                                               implementation="cudnn")
        except (NotImplementedError, RuntimeError):
            out = None
    if out is None:
        out = jax.nn.dot_product_attention(q, k, v, bias=bias)
    return out.reshape(out.shape[:-2] + (out.shape[-2] * out.shape[-1],))


def attend(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array, dropout_rate: float, deterministic: bool,
           tokens=None, attention_impl: str = "auto", dtype: Any = jnp.float32) -> jax.Array:
    """Attention of [B, L, heads, d] queries, keys and values with an additive ``bias`` -> [B, L, heads * d].
    Call it inside a compact module's method: the materialized path creates the attention-probability
    :class:`Dropout` there (its masks keyed by ``tokens``)."""
    if uses_fused(attention_impl, dropout_rate, deterministic):
        return fused_attention(q, k, v, bias, training=not deterministic).astype(dtype)
    q, k, v = (t.swapaxes(-2, -3) for t in (q, k, v))
    # batched matmuls with heads as a batch axis: XLA lays these out better than a 4-index einsum
    probs = attention_probs(q, k, bias)
    probs = Dropout(dropout_rate)(probs, deterministic, tokens).astype(dtype)
    return merge_heads(jnp.matmul(probs, v))


class MultiHeadAttention(nn.Module):
    hidden_size: int
    num_heads: int
    dropout_rate: float
    query: str = "query"
    key: str = "key"
    value: str = "value"
    out: Optional[str] = None      # name of the output projection; None: no projection
    dtype: Any = jnp.float32
    attention_impl: str = "auto"   # see attend

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        heads = self.num_heads
        head_dim = self.hidden_size // heads
        if head_dim * heads != self.hidden_size:
            raise ValueError(f"hidden size {self.hidden_size} is not a multiple of the number of heads {heads}")

        def project(name):
            return split_heads(nn.Dense(self.hidden_size, dtype=self.dtype, name=name)(x), heads)

        q, k, v = project(self.query), project(self.key), project(self.value)
        out = attend(q, k, v, bias, self.dropout_rate, deterministic, tokens, self.attention_impl, self.dtype)
        if self.out is not None:
            out = nn.Dense(self.hidden_size, dtype=self.dtype, name=self.out)(out)
        return out
