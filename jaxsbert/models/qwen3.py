"""Qwen3 decoder in Flax, as an embedder (Qwen3-Embedding); parameter names mirror Hugging Face's ``Qwen3Model``.

A pre-norm decoder: ``embed_tokens``, then per layer ``x + self_attn(input_layernorm(x))`` and
``x + mlp(post_attention_layernorm(x))``, then a final RMSNorm ``norm``. Attention is causal and
grouped-query (``num_key_value_heads`` key/value heads, each shared by ``num_attention_heads /
num_key_value_heads`` query heads), with ``head_dim`` from the config (not ``hidden_size / heads``),
an RMSNorm over each head's queries and keys (``q_norm``, ``k_norm``) before rotary position
embeddings (RoPE, ``rope_theta``, the "default" rope type only). The MLP is SwiGLU:
``down_proj(silu(gate_proj(x)) * up_proj(x))``, no biases.

``attention_mask`` doubles as segment ids (0 = padding): a token attends to the tokens of its own
segment at or before it in the row, so packed sentences (``position_ids`` restarting at 0 per
sentence) each see only themselves, causally. Without ``position_ids`` positions count from 0 along
the row, as Hugging Face does (left padding then shifts every position by the same amount, which
RoPE's relative scores do not see). The residual stream is float32 whatever ``dtype`` the matmuls
run in.

Attention goes through :func:`jaxsbert.models.attention.attend` with that causal same-segment mask as an
additive bias (``attention_impl``: materialized probabilities, or fused ``jax.nn.dot_product_attention``,
cuDNN's on a GPU in bf16). The fused path takes the ``num_key_value_heads`` key/value heads as they are
(``jax.nn.dot_product_attention`` does grouped-query attention itself); the materialized one repeats each
for its group of query heads, as Hugging Face's ``repeat_kv``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsbert.models.attention import attend, check_attention_impl, uses_fused
from jaxsbert.models.dropout import token_ids

ACTIVATIONS = {"silu": jax.nn.silu, "swish": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """Field names and defaults as Hugging Face's ``Qwen3Config`` (``rope_theta`` is its
    ``rope_parameters["rope_theta"]``)."""
    model_type: ClassVar[str] = "qwen3"
    hf_architecture: ClassVar[str] = "Qwen3Model"

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: Optional[int] = None      # None: as many as num_attention_heads
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[Any] = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if isinstance(self.eos_token_id, list):     # a list of ids: kept hashable
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; supported: {sorted(ACTIVATIONS)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even (RoPE rotates pairs of dimensions)")

    @property
    def max_sequence_tokens(self) -> int:
        return self.max_position_embeddings

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "Qwen3Config":
        """From a ``config.json`` dict: transformers 5's ``rope_parameters`` or the older ``rope_theta`` /
        ``rope_scaling`` keys. Sliding-window attention and rope types other than "default" are refused."""
        if d.get("use_sliding_window") or any(t != "full_attention" for t in d.get("layer_types") or []):
            raise ValueError("Qwen3 config: sliding-window attention (use_sliding_window / layer_types) is not "
                             "supported; only full attention")
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"Qwen3 config: rope_type {rope_type!r} is not supported; only 'default'")
        theta = rope.get("rope_theta", d.get("rope_theta", cls.rope_theta))
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields and v is not None}
        kw["rope_theta"] = float(theta)
        return cls(**kw)

    def to_hf_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "rope_theta"}
        d.update(rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta}, use_sliding_window=False,
                 model_type=self.model_type, architectures=[self.hf_architecture])
        return d


class RMSNorm(nn.Module):
    """Qwen3RMSNorm: ``weight * x / sqrt(mean(x^2) + eps)`` over the last axis, computed in float32."""
    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return (weight * x).astype(self.dtype)


def rope_tables(position_ids: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, L, head_dim] for 0-based positions [B, L], as Hugging Face's default rotary embedding."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, heads, d] rotated: ``x * cos + rotate_half(x) * sin`` with cos, sin [B, L, d]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def causal_segment_bias(segment_ids: jax.Array) -> jax.Array:
    """[B, L] segment ids (0 = padding) -> additive bias [B, 1, L, L] (query, key): 0 where the key is in
    the query's segment at or before it, float32 min elsewhere. Padding attends to earlier padding (itself at
    least), so no row is fully masked."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    index = jnp.arange(segment_ids.shape[1])
    allowed = same & (index[None, :] <= index[:, None])[None]
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)[:, None]


class Attention(nn.Module):
    """Qwen3Attention: grouped-query causal self-attention with per-head q/k RMSNorm and RoPE; ``bias``: the
    additive [B, 1, L, L] mask of :func:`causal_segment_bias`."""
    config: Qwen3Config
    dtype: Any = jnp.float32
    attention_impl: str = "auto"   # see jaxsbert.models.attention

    @nn.compact
    def __call__(self, x, bias, cos, sin, deterministic: bool, tokens=None):
        c = self.config
        heads, kv_heads, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        b, length = x.shape[:2]

        def project(name, n):
            y = nn.Dense(n * d, use_bias=c.attention_bias, dtype=self.dtype, name=name)(x)
            return y.reshape(b, length, n, d)

        q = RMSNorm(c.rms_norm_eps, self.dtype, name="q_norm")(project("q_proj", heads))
        k = RMSNorm(c.rms_norm_eps, self.dtype, name="k_norm")(project("k_proj", kv_heads))
        v = project("v_proj", kv_heads)
        q, k = apply_rope(q, cos, sin).astype(self.dtype), apply_rope(k, cos, sin).astype(self.dtype)
        if not uses_fused(self.attention_impl, c.attention_dropout, deterministic):
            # query head h uses key/value head h // groups (Hugging Face's repeat_kv); the fused path does that
            # itself, without the copies
            k, v = (jnp.repeat(t, heads // kv_heads, axis=2) for t in (k, v))
        out = attend(q, k, v, bias, c.attention_dropout, deterministic, tokens, self.attention_impl, self.dtype)
        return nn.Dense(c.hidden_size, use_bias=c.attention_bias, dtype=self.dtype, name="o_proj")(out)


class MLP(nn.Module):
    config: Qwen3Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, name=name)
        h = ACTIVATIONS[c.hidden_act](dense(c.intermediate_size, "gate_proj")(x)) * dense(c.intermediate_size,
                                                                                        "up_proj")(x)
        return dense(c.hidden_size, "down_proj")(h)


class DecoderLayer(nn.Module):
    config: Qwen3Config
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, cos, sin, deterministic: bool, tokens=None):
        c = self.config
        h = RMSNorm(c.rms_norm_eps, self.dtype, name="input_layernorm")(x)
        a = Attention(c, self.dtype, self.attention_impl, name="self_attn")(h, bias, cos, sin, deterministic, tokens)
        x = x + a.astype(jnp.float32)
        h = RMSNorm(c.rms_norm_eps, self.dtype, name="post_attention_layernorm")(x)
        return x + MLP(c, self.dtype, name="mlp")(h).astype(jnp.float32)


class Qwen3Model(nn.Module):
    """Token embeddings [B, L, H] (float32, after the final norm) for token ids [B, L]; ``token_type_ids`` is
    accepted and ignored. ``all_layers=True``: [layers + 1, B, L, H], Hugging Face's ``hidden_states``: the
    token embeddings, each layer's output, the last one after the final norm. ``dtype``: the matmuls' compute
    dtype; ``attention_impl``: the attention path (:mod:`jaxsbert.models.attention`)."""
    config: Qwen3Config
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, deterministic: bool = True,
                 sentence_ids=None, all_layers: bool = False):
        c = self.config
        tokens = None if deterministic else token_ids(attention_mask, position_ids, sentence_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = nn.Embed(c.vocab_size, c.hidden_size, name="embed_tokens")(input_ids).astype(jnp.float32)
        if c.pad_token_id is not None:
            # torch's Embedding(padding_idx=pad_token_id): the padding row gets no gradient
            x = jnp.where((input_ids == c.pad_token_id)[..., None], jax.lax.stop_gradient(x), x)
        cos, sin = rope_tables(position_ids, c.head_dim, c.rope_theta)
        bias = causal_segment_bias(attention_mask)
        layer_cls = nn.remat(DecoderLayer, static_argnums=(5,)) if self.remat else DecoderLayer
        hidden = [x]
        for i in range(c.num_hidden_layers):
            x = layer_cls(c, self.dtype, check_attention_impl(self.attention_impl), name=f"layers_{i}")(
                x, bias, cos, sin, deterministic, tokens)
            hidden.append(x)
        x = RMSNorm(c.rms_norm_eps, jnp.float32, name="norm")(x)
        if not all_layers:
            return x
        return jnp.stack(hidden[:-1] + [x])
