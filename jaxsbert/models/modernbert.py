"""ModernBERT encoder in Flax; parameter names mirror Hugging Face's ``ModernBertModel`` (transformers 5.x).

Differences from BERT: no position table and no token types; rotary position embeddings (RoPE,
``rotate_half`` layout) on queries and keys, with one base (theta) for the global-attention layers and
another for the local ones; a fused ``attn.Wqkv`` projection and ``attn.Wo``; a GeGLU MLP (``mlp.Wi``
-> split into input and gate -> ``act(input) * gate`` -> ``mlp.Wo``); pre-norm layers (``attn_norm``,
``mlp_norm``; layer 0 has no ``attn_norm``: the embedding norm precedes it) and a ``final_norm``;
LayerNorms, projections and the MLP without biases unless ``norm_bias`` / ``attention_bias`` /
``mlp_bias`` say so.

Layers are global (every token of a sentence attends to every other) or local (a token attends to
those at most ``local_attention // 2`` positions away, as Hugging Face's sliding-window mask), after
``layer_types`` (older configs: every ``global_attn_every_n_layers``-th layer, from layer 0, is global).

``attention_mask`` is a segment-id array as in :mod:`jaxsbert.models.bert`: a token attends only to
tokens of its own segment, and in local layers only to those within the window measured on
``position_ids`` (0-based, restarting per packed sentence; default: the index in the row). That is what
Hugging Face's unpadding (and its packed-sequence masks) compute: packed sentences see neither each other
nor padding, and each sees its own positions. The residual stream and the norms are float32; the
projections run in ``dtype``.

Global layers, and local layers of short rows or with attention dropout on, use
:func:`jaxsbert.models.attention.attend` with the mask as an additive bias (``attention_impl``: materialized
probabilities, or fused ``jax.nn.dot_product_attention``, cuDNN's on a GPU in bf16): all [L, L] scores of
a row. A local layer on a row longer than three windows without attention dropout (ModernBERT's
``attention_dropout`` is 0) computes only the band (:func:`banded_attention`): each block of ``window``
queries against its own and the two neighbouring blocks of keys, [L, 3 * window] scores instead of [L, L],
the same result (the keys it leaves out are masked anyway: a sentence's tokens sit side by side in a row,
so tokens within the window of positions are within the window of indices).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.models.attention import attend, check_attention_impl, split_heads
from jaxsbert.models.bert import ACTIVATIONS
from jaxsbert.models.dropout import Dropout, token_ids

GLOBAL, LOCAL = "full_attention", "sliding_attention"     # Hugging Face's layer_types values
DEFAULT_THETA = {GLOBAL: 160_000.0, LOCAL: 10_000.0}


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """Field names and defaults as Hugging Face's ``ModernBertConfig`` (the encoder's fields only).

    ``layer_types`` (one of "full_attention" / "sliding_attention" per layer) is derived from
    ``global_attn_every_n_layers`` when not given; ``global_rope_theta`` / ``local_rope_theta`` are the RoPE
    bases of the two kinds of layer (transformers 5 keeps them in ``rope_parameters``)."""
    model_type: ClassVar[str] = "modernbert"
    hf_architecture: ClassVar[str] = "ModernBertModel"

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    mlp_dropout: float = 0.0
    local_attention: int = 128
    global_attn_every_n_layers: int = 3
    layer_types: Optional[tuple[str, ...]] = None
    global_rope_theta: float = DEFAULT_THETA[GLOBAL]
    local_rope_theta: float = DEFAULT_THETA[LOCAL]
    pad_token_id: Optional[int] = 50283
    eos_token_id: Optional[int] = 50282
    bos_token_id: Optional[int] = 50281
    cls_token_id: Optional[int] = 50281
    sep_token_id: Optional[int] = 50282

    def __post_init__(self):
        if self.layer_types is None:
            every = self.global_attn_every_n_layers
            object.__setattr__(self, "layer_types",
                               tuple(LOCAL if i % every else GLOBAL for i in range(self.num_hidden_layers)))
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= {GLOBAL, LOCAL}:
            raise ValueError(f"layer_types {list(self.layer_types)} must give one of {GLOBAL!r} / {LOCAL!r} for each "
                             f"of the num_hidden_layers={self.num_hidden_layers} layers")
        if self.hidden_activation not in ACTIVATIONS:
            raise ValueError(f"hidden_activation={self.hidden_activation!r} is not supported; supported: "
                             f"{sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must be num_attention_heads {self.num_attention_heads} "
                             "times an even head size (RoPE rotates pairs of dimensions)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_sequence_tokens(self) -> int:
        """Longest input (RoPE has no position table; Hugging Face's configs say 8192 for ModernBERT)."""
        return self.max_position_embeddings

    def rope_theta(self, layer_type: str) -> float:
        return self.global_rope_theta if layer_type == GLOBAL else self.local_rope_theta

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModernBertConfig":
        """From a ``config.json`` dict of transformers 5 (``layer_types``, ``rope_parameters``) or 4.x
        (``global_attn_every_n_layers``, ``global_rope_theta``, ``local_rope_theta``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields and v is not None}
        if kw.get("layer_types") is not None:
            kw["layer_types"] = tuple(kw["layer_types"])
        rope = d.get("rope_parameters") or {}
        for layer_type, key in ((GLOBAL, "global_rope_theta"), (LOCAL, "local_rope_theta")):
            params = rope.get(layer_type) or {}
            if params.get("rope_type", "default") != "default":
                raise ValueError(f"rope_parameters[{layer_type!r}] rope_type={params['rope_type']!r} is not supported "
                                 "(only 'default' RoPE)")
            if params.get("rope_theta") is not None:
                kw[key] = float(params["rope_theta"])
        if d.get("rope_scaling"):
            raise ValueError(f"rope_scaling={d['rope_scaling']!r} is not supported (only 'default' RoPE)")
        return cls(**kw)

    def to_hf_dict(self) -> dict[str, Any]:
        """``config.json`` contents read by transformers 5 (layer_types, rope_parameters) and 4.x (whose
        ModernBertConfig takes global_attn_every_n_layers and the two thetas; transformers 5 drops those)."""
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        d["rope_parameters"] = {t: {"rope_type": "default", "rope_theta": self.rope_theta(t)} for t in (LOCAL, GLOBAL)}
        pattern = ModernBertConfig(num_hidden_layers=self.num_hidden_layers,
                                   global_attn_every_n_layers=self.global_attn_every_n_layers).layer_types
        if pattern != self.layer_types:      # no every-n pattern says it: transformers 4.x cannot read this model
            del d["global_attn_every_n_layers"]
        d.update(model_type=self.model_type, architectures=[self.hf_architecture])
        return d


def inverse_frequencies(head_dim: int, theta: float) -> np.ndarray:
    """RoPE's [head_dim / 2] inverse frequencies ``1 / theta ** (2i / head_dim)``, float32 as Hugging Face."""
    return (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
            ).astype(np.float32)


def rotary(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) [B, L, head_dim] of the rotation angles ``position * inverse frequency`` (halves repeated)."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inverse_frequencies(head_dim, theta))
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates [B, L, heads, d] queries or keys (in float32) by [B, L, d] angles: ``x cos + rotate_half(x) sin``."""
    x = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


def allowed_keys(segments: jax.Array, positions: jax.Array, window: Optional[int]) -> jax.Array:
    """[B, 1, L, L] bool: query i may attend key j. Same segment (padding, 0, with padding only, so no row is
    empty), and with a ``window`` at most ``window`` positions apart (|position_i - position_j| <= window)."""
    allowed = segments[:, :, None] == segments[:, None, :]
    if window is not None:
        allowed = allowed & (jnp.abs(positions[:, :, None] - positions[:, None, :]) <= window)
    return allowed[:, None]


def banded_attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array, positions: jax.Array,
                     window: int, dtype: Any = jnp.float32) -> jax.Array:
    """Local attention of [B, L, heads, d] queries, keys and values -> [B, L, heads * d], scoring each query
    only against keys at most ``window`` indices away: the row is cut into blocks of ``window`` tokens and block
    i's queries meet the keys of blocks i - 1, i, i + 1, masked as :func:`allowed_keys` (same segment, at most
    ``window`` positions apart). Equal to the full masked softmax for queries whose allowed keys lie within
    ``window`` indices (every real token of a row whose sentences are contiguous with consecutive positions).
    Scores and softmax in float32; no dropout."""
    b, length, heads, d = q.shape
    size = max(window, 1)
    blocks = -(-length // size)

    def cut(x, fill):                       # [B, L, ...] -> [B, blocks, size, ...]
        x = jnp.pad(x, [(0, 0), (0, blocks * size - length)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
        return x.reshape((b, blocks, size) + x.shape[2:])

    def around(x, fill):                    # [B, blocks, size, ...] -> [B, blocks, 3 * size, ...]: blocks i-1, i, i+1
        x = jnp.pad(x, [(0, 0), (1, 1)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
        return jnp.concatenate([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=2)

    heads_ahead = lambda x: jnp.moveaxis(x, 3, 2)                       # [B, blocks, n, heads, d] -> [.., heads, n, d]
    qb = heads_ahead(cut(q, 0))
    kb, vb = heads_ahead(around(cut(k, 0), 0)), heads_ahead(around(cut(v, 0), 0))
    seg_q, pos_q = cut(segments, -1), cut(positions, 0)                 # [B, blocks, size]; -1: no token
    seg_k, pos_k = around(seg_q, -1), around(pos_q, 0)                  # [B, blocks, 3 * size]
    allowed = ((seg_q[..., :, None] == seg_k[..., None, :])
               & (jnp.abs(pos_q[..., :, None] - pos_k[..., None, :]) <= window))[:, :, None]
    scores = jnp.matmul(qb, kb.swapaxes(-1, -2), preferred_element_type=jnp.float32)
    scores = scores.astype(jnp.float32) / jnp.sqrt(jnp.float32(d))
    probs = jax.nn.softmax(jnp.where(allowed, scores, jnp.finfo(jnp.float32).min), axis=-1).astype(dtype)
    out = jnp.moveaxis(jnp.matmul(probs, vb), 2, 3)                     # [B, blocks, size, heads, d]
    return out.reshape(b, blocks * size, heads * d)[:, :length]


def takes_band(length: int, window: int, dropout_rate: float, deterministic: bool) -> bool:
    """Whether a local layer computes only the band (:func:`banded_attention`): rows longer than three windows
    (shorter ones gain nothing), and no attention dropout (its masks are drawn on [L, L] probabilities)."""
    return length > 3 * max(window, 1) and (deterministic or dropout_rate == 0.0)


def layer_norm(config: ModernBertConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.norm_eps, use_bias=config.norm_bias, dtype=jnp.float32, name=name)


class Attention(nn.Module):
    """ModernBertAttention: Wqkv -> RoPE on q, k -> masked softmax (dropout) -> Wo -> dropout."""
    config: ModernBertConfig
    layer_type: str = GLOBAL
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, segments, positions, deterministic: bool, tokens=None):
        c = self.config
        qkv = nn.Dense(3 * c.hidden_size, use_bias=c.attention_bias, dtype=self.dtype, name="Wqkv")(x)
        q, k, v = (split_heads(t, c.num_attention_heads) for t in jnp.split(qkv, 3, axis=-1))   # [B, L, heads, d]
        cos, sin = rotary(positions, c.head_dim, c.rope_theta(self.layer_type))
        q, k = apply_rotary(q, cos, sin).astype(self.dtype), apply_rotary(k, cos, sin).astype(self.dtype)
        window = c.local_attention // 2 if self.layer_type == LOCAL else None
        if window is not None and takes_band(x.shape[1], window, c.attention_dropout, deterministic):
            out = banded_attention(q, k, v, segments, positions, window, self.dtype)
        else:
            bias = jnp.where(allowed_keys(segments, positions, window), 0.0, jnp.finfo(jnp.float32).min)
            out = attend(q, k, v, bias, c.attention_dropout, deterministic, tokens, self.attention_impl, self.dtype)
        out = nn.Dense(c.hidden_size, use_bias=c.attention_bias, dtype=self.dtype, name="Wo")(out)
        return Dropout(c.attention_dropout)(out, deterministic, tokens)


class MLP(nn.Module):
    """ModernBertMLP (GeGLU): Wi -> (input, gate) -> act(input) * gate -> dropout -> Wo."""
    config: ModernBertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool, tokens=None):
        c = self.config
        h = nn.Dense(2 * c.intermediate_size, use_bias=c.mlp_bias, dtype=self.dtype, name="Wi")(x)
        inputs, gate = jnp.split(h, 2, axis=-1)
        h = Dropout(c.mlp_dropout)(ACTIVATIONS[c.hidden_activation](inputs) * gate, deterministic, tokens)
        return nn.Dense(c.hidden_size, use_bias=c.mlp_bias, dtype=self.dtype, name="Wo")(h)


class Layer(nn.Module):
    """ModernBertEncoderLayer: x + attn(attn_norm(x)), then + mlp(mlp_norm(.)); layer 0 has no attn_norm."""
    config: ModernBertConfig
    index: int = 0
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, segments, positions, deterministic: bool, tokens=None):
        c = self.config
        h = x if self.index == 0 else layer_norm(c, "attn_norm")(x)
        a = Attention(c, c.layer_types[self.index], self.dtype, self.attention_impl, name="attn")(
            h, segments, positions, deterministic, tokens)
        x = x + a.astype(jnp.float32)
        m = MLP(c, self.dtype, name="mlp")(layer_norm(c, "mlp_norm")(x), deterministic, tokens)
        return x + m.astype(jnp.float32)


class Embeddings(nn.Module):
    config: ModernBertConfig

    @nn.compact
    def __call__(self, input_ids, deterministic: bool, tokens=None):
        c = self.config
        x = layer_norm(c, "norm")(nn.Embed(c.vocab_size, c.hidden_size, name="tok_embeddings")(input_ids))
        return Dropout(c.embedding_dropout)(x, deterministic, tokens)


class ModernBertModel(nn.Module):
    """Token embeddings [B, L, H] (float32) for token ids [B, L]; ``token_type_ids`` is accepted and ignored.

    ``all_layers=True``: [layers + 1, B, L, H], Hugging Face's ``hidden_states``: the embeddings, each layer's
    output, the last one through ``final_norm`` (the model's output). ``dtype``: the matmuls' compute dtype;
    ``attention_impl``: the attention path (:mod:`jaxsbert.models.attention`)."""
    config: ModernBertConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, deterministic: bool = True,
                 sentence_ids=None, all_layers: bool = False):
        c = self.config
        tokens = None if deterministic else token_ids(attention_mask, position_ids, sentence_ids)
        positions = (jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape) if position_ids is None
                     else jnp.broadcast_to(position_ids, input_ids.shape))
        x = Embeddings(c, name="embeddings")(input_ids, deterministic, tokens)
        layer_cls = nn.remat(Layer, static_argnums=(4,)) if self.remat else Layer
        hidden = [x]
        for i in range(c.num_hidden_layers):
            x = layer_cls(c, i, self.dtype, check_attention_impl(self.attention_impl), name=f"layers_{i}")(
                x, attention_mask, positions, deterministic, tokens)
            hidden.append(x)
        x = layer_norm(c, "final_norm")(x)
        if all_layers:
            return jnp.stack(hidden[:-1] + [x])
        return x
