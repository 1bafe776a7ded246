"""BERT-family Transformer encoder in Flax (covers BERT and MiniLM).

Parameter names mirror Hugging Face's ``BertModel`` one to one (``layer.3`` becomes
``layer_3``; a Linear's ``weight`` is a Flax ``kernel`` transposed), so the import/export
name map in :mod:`jaxsbert.interop.hf` is mechanical.

``attention_mask`` doubles as a segment-id array: 0 marks padding, and tokens attend only
to tokens with the same non-zero value. A plain 0/1 mask is the usual single-sentence case;
values 1..k pack k sentences into one row (with ``position_ids`` restarting per sentence).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsbert.models.attention import attend, check_attention_impl, split_heads
from jaxsbert.models.dropout import Dropout, token_ids

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    add_pooling_layer: bool = True

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "BertConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields and v is not None}
        pet = d.get("position_embedding_type", "absolute")
        if pet not in (None, "absolute"):
            raise ValueError(f"position_embedding_type={pet!r} is not supported (only 'absolute')")
        if kw.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise ValueError(f"hidden_act={kw['hidden_act']!r} is not supported; supported: {sorted(ACTIVATIONS)}")
        return cls(**kw)


def attention_bias(segment_ids: jax.Array, dtype=jnp.float32) -> jax.Array:
    """[B, L] segment ids (0 = padding) -> additive bias [B, 1, L, L]: 0 where allowed, -inf-ish elsewhere."""
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    # A padding query attends to the other padding tokens, so no row is fully masked.
    allowed = allowed | ((segment_ids[:, :, None] == 0) & (segment_ids[:, None, :] == 0))
    return jnp.where(allowed, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None, :, :]


class SelfAttention(nn.Module):
    """query/key/value projections and :func:`jaxsbert.models.attention.attend` (fused or materialized, see
    ``attention_impl``) -> [B, L, H] in the compute dtype."""
    config: BertConfig
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        c = self.config
        dense = lambda name: split_heads(nn.Dense(c.hidden_size, dtype=self.dtype, name=name)(x), c.num_attention_heads)
        q, k, v = dense("query"), dense("key"), dense("value")
        return attend(q, k, v, bias, c.attention_probs_dropout_prob, deterministic, tokens, self.attention_impl,
                      self.dtype)


class DenseResidualNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): HF's BertSelfOutput / BertOutput. The residual sum and the
    norm are float32 and so is the output (the residual stream stays float32 under bf16 compute, as under
    torch's autocast; the next Dense casts its input to the compute dtype)."""
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, residual, deterministic: bool, tokens=None):
        c = self.config
        x = nn.Dense(c.hidden_size, dtype=self.dtype, name="dense")(x)
        x = Dropout(c.hidden_dropout_prob)(x, deterministic, tokens)
        return layer_norm(c, "LayerNorm")(x.astype(jnp.float32) + residual.astype(jnp.float32))


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    """A LayerNorm computing in float32 and returning float32 (its parameters float32) whatever the compute dtype."""
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


class Attention(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        h = SelfAttention(self.config, self.dtype, self.attention_impl, name="self")(x, bias, deterministic, tokens)
        return DenseResidualNorm(self.config, self.dtype, name="output")(h, x, deterministic, tokens)


class Intermediate(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        return ACTIVATIONS[c.hidden_act](nn.Dense(c.intermediate_size, dtype=self.dtype, name="dense")(x))


class Layer(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        a = Attention(self.config, self.dtype, self.attention_impl, name="attention")(x, bias, deterministic, tokens)
        h = Intermediate(self.config, self.dtype, name="intermediate")(a)
        return DenseResidualNorm(self.config, self.dtype, name="output")(h, a, deterministic, tokens)


class Embeddings(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool, tokens=None):
        c = self.config
        embed = lambda n, name: nn.Embed(n, c.hidden_size, name=name)
        x = (embed(c.vocab_size, "word_embeddings")(input_ids)
             + embed(c.max_position_embeddings, "position_embeddings")(position_ids)
             + embed(c.type_vocab_size, "token_type_embeddings")(token_type_ids))
        x = layer_norm(c, "LayerNorm")(x)
        return Dropout(c.hidden_dropout_prob)(x, deterministic, tokens)      # float32: the residual stream


class Encoder(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None, all_layers: bool = False):
        """The last layer's output [B, L, H]; with ``all_layers`` every layer's, [layers + 1, B, L, H]: the
        encoder's input (the embeddings) first, as Hugging Face's ``hidden_states``."""
        layer_cls = nn.remat(Layer, static_argnums=(3,)) if self.remat else Layer
        hidden = [x]
        for i in range(self.config.num_hidden_layers):
            x = layer_cls(self.config, self.dtype, self.attention_impl, name=f"layer_{i}")(x, bias, deterministic,
                                                                                         tokens)
            if all_layers:
                hidden.append(x)
        return jnp.stack(hidden) if all_layers else x


class Pooler(nn.Module):
    """HF's BertPooler (tanh dense on [CLS]); kept so exported models have every HF key."""
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Dense(self.config.hidden_size, name="dense")(x[:, 0]))


class BertModel(nn.Module):
    """Token embeddings [B, L, H] (float32) for token ids [B, L]; ``sentence_ids`` key the dropout masks
    (:func:`jaxsbert.models.dropout.token_ids`). ``all_layers=True``: every layer's, [layers + 1, B, L, H]
    (Hugging Face's ``hidden_states``: the embeddings, then each layer's output).

    ``dtype`` is the compute dtype of the matmuls (parameters are float32 whatever it is; embeddings, layer
    norms, the residual stream and the attention softmax are float32); ``attention_impl`` picks the attention
    path (:mod:`jaxsbert.models.attention`)."""
    config: BertConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, deterministic: bool = True,
                 sentence_ids=None, all_layers: bool = False):
        tokens = None if deterministic else token_ids(attention_mask, position_ids, sentence_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = Embeddings(self.config, self.dtype, name="embeddings")(input_ids, token_type_ids, position_ids,
                                                                   deterministic, tokens)
        x = Encoder(self.config, self.dtype, self.remat, check_attention_impl(self.attention_impl), name="encoder")(
            x, attention_bias(attention_mask), deterministic, tokens, all_layers)
        if self.config.add_pooling_layer and self.is_initializing():
            Pooler(self.config, name="pooler")(x[-1] if all_layers else x)
        return x.astype(jnp.float32)
