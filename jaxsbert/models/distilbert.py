"""DistilBERT encoder in Flax; parameter names mirror Hugging Face's ``DistilBertModel``.

No token types and no pooler. Learned absolute positions (0-based, or the given ``position_ids``);
checkpoints with ``sinusoidal_pos_embds=True`` are refused. ``attention_mask`` is a segment-id
array as in :mod:`jaxsbert.models.bert`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxsbert.models.attention import MultiHeadAttention, check_attention_impl
from jaxsbert.models.bert import ACTIVATIONS, attention_bias
from jaxsbert.models.dropout import Dropout, token_ids

LAYER_NORM_EPS = 1e-12   # fixed in Hugging Face's DistilBERT
_ALIASES = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """Field names and defaults as Hugging Face's ``DistilBertConfig``."""
    model_type: ClassVar[str] = "distilbert"
    hf_architecture: ClassVar[str] = "DistilBertModel"

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    pad_token_id: int = 0

    def __post_init__(self):
        if self.sinusoidal_pos_embds:
            raise ValueError("DistilBERT with sinusoidal_pos_embds=True is not supported (only learned positions)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not supported; supported: {sorted(ACTIVATIONS)}")

    # the names the rest of jaxsbert (and Hugging Face's attribute_map) use
    hidden_size = property(lambda self: self.dim)
    num_attention_heads = property(lambda self: self.n_heads)
    num_hidden_layers = property(lambda self: self.n_layers)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "DistilBertConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {_ALIASES.get(k, k): v for k, v in d.items()}
        return cls(**{k: v for k, v in d.items() if k in fields and v is not None})

    def to_hf_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(model_type=self.model_type, architectures=[self.hf_architecture])
        return d


class TransformerBlock(nn.Module):
    config: DistilBertConfig
    dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None):
        c = self.config
        norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=jnp.float32, name=name)
        dropout = Dropout(c.dropout)
        a = MultiHeadAttention(c.dim, c.n_heads, c.attention_dropout, "q_lin", "k_lin", "v_lin", "out_lin",
                               dtype=self.dtype, attention_impl=self.attention_impl, name="attention")(
            x, bias, deterministic, tokens)
        a = norm("sa_layer_norm")(a.astype(jnp.float32) + x.astype(jnp.float32))   # float32, as bert.py's norms
        h = FFN(c, self.dtype, name="ffn")(a)
        h = dropout(h, deterministic, tokens)
        return norm("output_layer_norm")(h.astype(jnp.float32) + a.astype(jnp.float32))


class FFN(nn.Module):
    config: DistilBertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        h = ACTIVATIONS[c.activation](nn.Dense(c.hidden_dim, dtype=self.dtype, name="lin1")(x))
        return nn.Dense(c.dim, dtype=self.dtype, name="lin2")(h)


class Transformer(nn.Module):
    config: DistilBertConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, tokens=None, all_layers: bool = False):
        """[B, L, H]; with ``all_layers`` [layers + 1, B, L, H] (the input, then each layer's output)."""
        block = nn.remat(TransformerBlock, static_argnums=(3,)) if self.remat else TransformerBlock
        hidden = [x]
        for i in range(self.config.n_layers):
            x = block(self.config, self.dtype, self.attention_impl, name=f"layer_{i}")(x, bias, deterministic, tokens)
            if all_layers:
                hidden.append(x)
        return jnp.stack(hidden) if all_layers else x


class Embeddings(nn.Module):
    config: DistilBertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, position_ids, deterministic: bool, tokens=None):
        c = self.config
        x = (nn.Embed(c.vocab_size, c.dim, name="word_embeddings")(input_ids)
             + nn.Embed(c.max_position_embeddings, c.dim, name="position_embeddings")(position_ids))
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=jnp.float32, name="LayerNorm")(x)
        return Dropout(c.dropout)(x, deterministic, tokens)      # float32: the residual stream


class DistilBertModel(nn.Module):
    """Token embeddings [B, L, H] (float32) for token ids [B, L]; ``token_type_ids`` is accepted and ignored.
    ``all_layers=True``: [layers + 1, B, L, H], the embeddings then each layer's output."""
    config: DistilBertConfig
    dtype: Any = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"     # see jaxsbert.models.attention

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, deterministic: bool = True,
                 sentence_ids=None, all_layers: bool = False):
        tokens = None if deterministic else token_ids(attention_mask, position_ids, sentence_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = Embeddings(self.config, self.dtype, name="embeddings")(input_ids, position_ids, deterministic, tokens)
        x = Transformer(self.config, self.dtype, self.remat, check_attention_impl(self.attention_impl),
                        name="transformer")(
            x, attention_bias(attention_mask), deterministic, tokens, all_layers)
        return x.astype(jnp.float32)
