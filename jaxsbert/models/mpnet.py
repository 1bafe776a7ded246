"""MPNet encoder in Flax (all-mpnet-base-v2 and friends); parameter names mirror Hugging Face's ``MPNetModel``.

Differences from BERT: no token types; absolute positions offset by the padding index 1 (as
RoBERTa); attention projections ``attn.q/k/v/o``; and a relative position bias: relative
distances are put in T5-style log buckets and looked up in ``encoder.relative_attention_bias``
(one value per head), computed once and added to the attention scores of every layer.

As in Hugging Face, the bucketing uses 32 buckets and a maximum distance of 128 whatever
``relative_attention_num_buckets`` says (that value only sizes the table). Relative distances come
from the given ``position_ids`` (so packed sentences each see their own distances) or, without
them, from the index in the row, as Hugging Face does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.models import bert
from jaxsbert.models.attention import MultiHeadAttention, check_attention_impl
from jaxsbert.models.dropout import Dropout, token_ids
from jaxsbert.models.roberta import offset_position_ids

PADDING_IDX = 1          # Hugging Face's MPNetEmbeddings hard-codes it
NUM_BUCKETS = 32         # MPNetEncoder.compute_position_bias's default, used by MPNetModel
MAX_DISTANCE = 128


@dataclasses.dataclass(frozen=True)
class MPNetConfig:
    """Field names and defaults as Hugging Face's ``MPNetConfig``."""
    model_type: ClassVar[str] = "mpnet"
    hf_architecture: ClassVar[str] = "MPNetModel"

    vocab_size: int = 30527
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    relative_attention_num_buckets: int = 32
    pad_token_id: int = 1
    add_pooling_layer: bool = True     # not a Hugging Face field: whether the checkpoint has pooler weights

    def __post_init__(self):
        if self.hidden_act not in bert.ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; supported: {sorted(bert.ACTIVATIONS)}")
        if self.relative_attention_num_buckets < NUM_BUCKETS:
            raise ValueError(f"relative_attention_num_buckets={self.relative_attention_num_buckets} is not supported: "
                             f"MPNet looks up {NUM_BUCKETS} buckets")

    @property
    def max_sequence_tokens(self) -> int:
        return self.max_position_embeddings - PADDING_IDX - 1

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "MPNetConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields and v is not None})

    def to_hf_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "add_pooling_layer"}
        d.update(model_type=self.model_type, architectures=[self.hf_architecture])
        return d


def _bucket_table(num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """Bucket of a non-negative distance n = 0..max_distance (beyond that: the last bucket).

    Half the buckets per direction; distances below a quarter of the buckets are exact, the rest
    are log-spaced up to max_distance. Computed in exact arithmetic (up to a tiny tolerance at
    the integer boundaries) instead of float32 logs, and checked against Hugging Face in the tests.
    """
    half = num_buckets // 2
    exact = half // 2
    n = np.arange(max_distance + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        large = exact + np.floor(np.log(n / exact) / np.log(max_distance / exact) * (half - exact) + 1e-9)
    return np.where(n < exact, n, np.minimum(large, half - 1)).astype(np.int32)


def relative_position_bucket(relative_position: jax.Array) -> jax.Array:
    """memory_position - context_position -> bucket id in [0, NUM_BUCKETS), as Hugging Face's MPNetEncoder."""
    n = -relative_position
    table = jnp.asarray(_bucket_table())
    direction = jnp.where(n < 0, NUM_BUCKETS // 2, 0)
    return direction + table[jnp.minimum(jnp.abs(n), MAX_DISTANCE)]


class SelfAttention(nn.Module):
    """MPNetAttention: attn (q, k, v, o) -> dropout -> LayerNorm(x + residual)."""
    config: MPNetConfig
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        c = self.config
        h = MultiHeadAttention(c.hidden_size, c.num_attention_heads, c.attention_probs_dropout_prob, "q", "k", "v", "o",
                               dtype=self.dtype, attention_impl=self.attention_impl, name="attn")(
            x, bias, deterministic, tokens)
        h = Dropout(c.hidden_dropout_prob)(h, deterministic, tokens)
        return bert.layer_norm(c, "LayerNorm")(h.astype(jnp.float32) + x.astype(jnp.float32))   # float32 (bert.py)


class Layer(nn.Module):
    config: MPNetConfig
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        a = SelfAttention(self.config, self.dtype, self.attention_impl, name="attention")(x, bias, deterministic, tokens)
        h = bert.Intermediate(self.config, self.dtype, name="intermediate")(a)
        return bert.DenseResidualNorm(self.config, self.dtype, name="output")(h, a, deterministic, tokens)


class Encoder(nn.Module):
    config: MPNetConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, mask_bias, positions, deterministic: bool, tokens=None, all_layers: bool = False):
        """positions: [B or 1, L] 0-based positions whose differences are the relative distances. Returns
        [B, L, H]; with ``all_layers`` [layers + 1, B, L, H] (the input, then each layer's output)."""
        c = self.config
        buckets = relative_position_bucket(positions[:, None, :] - positions[:, :, None])           # [B, Lq, Lk]
        table = nn.Embed(c.relative_attention_num_buckets, c.num_attention_heads, name="relative_attention_bias")
        bias = jnp.transpose(table(buckets), (0, 3, 1, 2)).astype(jnp.float32) + mask_bias        # [B, H, Lq, Lk]
        layer_cls = nn.remat(Layer, static_argnums=(3,)) if self.remat else Layer
        hidden = [x]
        for i in range(c.num_hidden_layers):
            x = layer_cls(c, self.dtype, self.attention_impl, name=f"layer_{i}")(x, bias, deterministic, tokens)
            if all_layers:
                hidden.append(x)
        return jnp.stack(hidden) if all_layers else x


class Embeddings(nn.Module):
    config: MPNetConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, position_ids, deterministic: bool, tokens=None):
        c = self.config
        x = (nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
             + nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")(position_ids))
        x = bert.layer_norm(c, "LayerNorm")(x)
        return Dropout(c.hidden_dropout_prob)(x, deterministic, tokens)      # float32: the residual stream


class MPNetModel(nn.Module):
    """Token embeddings [B, L, H] (float32) for token ids [B, L]; ``token_type_ids`` is accepted and ignored.
    ``all_layers=True``: [layers + 1, B, L, H], the embeddings then each layer's output."""
    config: MPNetConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"     # see jaxsbert.models.attention

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, deterministic: bool = True,
                 sentence_ids=None, all_layers: bool = False):
        c = self.config
        tokens = None if deterministic else token_ids(attention_mask, position_ids, sentence_ids)
        absolute = offset_position_ids(attention_mask, position_ids, PADDING_IDX)
        relative = jnp.arange(input_ids.shape[1])[None] if position_ids is None else position_ids
        x = Embeddings(c, self.dtype, name="embeddings")(input_ids, absolute, deterministic, tokens)
        x = Encoder(c, self.dtype, self.remat, check_attention_impl(self.attention_impl), name="encoder")(
            x, bert.attention_bias(attention_mask), relative, deterministic, tokens, all_layers)
        if c.add_pooling_layer and self.is_initializing():
            bert.Pooler(c, name="pooler")(x[-1] if all_layers else x)
        return x.astype(jnp.float32)
