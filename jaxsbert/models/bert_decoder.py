"""BERT as a causal language model with cross-attention, in Flax: Hugging Face's ``BertLMHeadModel`` built
with ``is_decoder=True, add_cross_attention=True`` (TSDAE's decoder, :mod:`jaxsbert.losses.denoising_auto_encoder`).

Parameters are named after that model's state dict (``layer.3`` -> ``layer_3``, a Linear's ``weight`` -> a
transposed Flax ``kernel``, ``weight`` of an embedding / LayerNorm -> ``embedding`` / ``scale``), so
:func:`jaxsbert.interop.hf.flax_to_state_dict` gives ``bert.encoder.layer.0.crossattention.self.query.weight``,
``cls.predictions.bias`` and so on::

    {"bert": {"embeddings": ..., "encoder": {"layer_i": {"attention", "crossattention", "intermediate", "output"}}},
     "cls": {"predictions": {"transform": {"dense", "LayerNorm"}, "bias"}}}

``bert`` without ``crossattention`` is :class:`jaxsbert.models.bert.BertModel`'s tree less the pooler, which is
how TSDAE ties the decoder to the encoder. The output projection is the word-embedding table (Hugging Face's
``tie_word_embeddings``) plus ``cls.predictions.bias``.

One layer: causal self-attention -> cross-attention (queries from the self-attention's output, keys and values
from ``encoder_hidden_states``) -> feed-forward, each with dropout, residual and LayerNorm as in BERT. The
self-attention sees every earlier position (no padding mask: padding sits after the tokens, so it changes
no earlier position's output).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.models.attention import attention_probs, heads_first, merge_heads
from jaxsbert.models.bert import (ACTIVATIONS, Attention, BertConfig, DenseResidualNorm, Embeddings, Intermediate,
                                  layer_norm)
from jaxsbert.models.dropout import Dropout, TokenIds

SUPPORTED_FAMILIES = ("bert",)
"""Model types whose decoder is built here (MiniLM checkpoints are ``bert``)."""


def check_family(model_type: str, what: str) -> None:
    """ValueError naming ``what`` when ``model_type`` has no decoder here."""
    if model_type not in SUPPORTED_FAMILIES:
        raise ValueError(f"{what} has model_type {model_type!r}; a decoder (Hugging Face's BertLMHeadModel with "
                         f"cross-attention) is built for {list(SUPPORTED_FAMILIES)} models only (MiniLM is 'bert')")


def causal_bias(length: int, dtype=jnp.float32) -> jax.Array:
    """[1, 1, L, L] additive bias: position i attends to positions <= i."""
    allowed = jnp.tril(jnp.ones((length, length), bool))
    return jnp.where(allowed, 0.0, jnp.finfo(dtype).min).astype(dtype)[None, None]


def segment_causal_bias(segment_ids: jax.Array, dtype=jnp.float32) -> jax.Array:
    """[R, 1, L, L] additive bias of packed rows (``segment_ids`` [R, L], :mod:`jaxsbert.data.packing`): a token
    attends to itself and the earlier tokens of its own sentence."""
    length = segment_ids.shape[1]
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & jnp.tril(jnp.ones((length, length), bool))[None]
    return jnp.where(allowed, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None]


def memory_bias(encoder_attention_mask: jax.Array, dtype=jnp.float32) -> jax.Array:
    """[B, M] mask of the cross-attention's keys (0: masked) -> [B, 1, 1, M] additive bias."""
    return jnp.where(encoder_attention_mask > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None, None, :]


class CrossSelfAttention(nn.Module):
    """Multi-head attention of ``x`` [B, L, H] over ``memory`` [B, M, H] (``query`` / ``key`` / ``value``).

    ``bias=None``: ``memory`` is [B, L, H], one vector per token of ``x``, the only key that token attends
    to (packed rows, each token reading its own sentence's embedding). A softmax over one key is exactly 1
    whatever the scores, so the output is that key's value projection (the query and key projections get
    zero gradients, as they do with one key per row)."""
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, memory, bias, deterministic: bool, tokens: Optional[TokenIds] = None):
        c = self.config
        heads = c.num_attention_heads

        def project(name, inputs):
            return heads_first(nn.Dense(c.hidden_size, dtype=self.dtype, name=name)(inputs), heads)

        if bias is None:
            v = nn.Dense(c.hidden_size, dtype=self.dtype, name="value")(memory)          # [B, L, heads * d]
            if not deterministic and c.attention_probs_dropout_prob > 0:
                probs = Dropout(c.attention_probs_dropout_prob)(jnp.ones(x.shape[:2] + (heads,), jnp.float32),
                                                                deterministic, tokens)
                v = (v.reshape(v.shape[:2] + (heads, -1)) * probs[..., None].astype(v.dtype)).reshape(v.shape)
            return v
        q, k, v = project("query", x), project("key", memory), project("value", memory)
        probs = attention_probs(q, k, bias)                                  # [B, heads, L, M]
        if not deterministic and c.attention_probs_dropout_prob > 0:
            # keyed by the query token: [B, L, heads * M] features of each decoder token
            b, h, length, m = probs.shape
            per_token = probs.transpose(0, 2, 1, 3).reshape(b, length, h * m)
            per_token = Dropout(c.attention_probs_dropout_prob)(per_token, deterministic, tokens)
            probs = per_token.reshape(b, length, h, m).transpose(0, 2, 1, 3)
        return merge_heads(jnp.matmul(probs.astype(self.dtype), v))


class CrossAttention(nn.Module):
    """Hugging Face's ``crossattention``: ``self`` (the attention) and ``output`` (dense, dropout, LayerNorm of the sum)."""
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, memory, bias, deterministic: bool, tokens=None):
        h = CrossSelfAttention(self.config, self.dtype, name="self")(x, memory, bias, deterministic, tokens)
        return DenseResidualNorm(self.config, self.dtype, name="output")(h, x, deterministic, tokens)


class DecoderLayer(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, self_bias, memory, cross_bias, deterministic: bool, tokens=None):
        a = Attention(self.config, self.dtype, name="attention")(x, self_bias, deterministic, tokens)
        a = CrossAttention(self.config, self.dtype, name="crossattention")(a, memory, cross_bias, deterministic, tokens)
        h = Intermediate(self.config, self.dtype, name="intermediate")(a)
        return DenseResidualNorm(self.config, self.dtype, name="output")(h, a, deterministic, tokens)


class DecoderEncoder(nn.Module):
    """Hugging Face's ``bert.encoder`` of the decoder: the layers."""
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, self_bias, memory, cross_bias, deterministic: bool, tokens=None):
        for i in range(self.config.num_hidden_layers):
            x = DecoderLayer(self.config, self.dtype, name=f"layer_{i}")(x, self_bias, memory, cross_bias,
                                                                          deterministic, tokens)
        return x


class DecoderBert(nn.Module):
    """``bert``: embeddings and layers, no pooler. Returns the hidden states and the word-embedding table."""
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, memory, encoder_attention_mask, deterministic: bool, tokens=None,
                 segment_ids=None, position_ids=None):
        length = input_ids.shape[1]
        if segment_ids is None:
            positions = jnp.broadcast_to(jnp.arange(length), input_ids.shape)
            self_bias, cross_bias = causal_bias(length), memory_bias(encoder_attention_mask)
        else:        # packed rows: each sentence's positions restart at 0, memory is one vector per token
            positions, self_bias, cross_bias = position_ids, segment_causal_bias(segment_ids), None
        embeddings = Embeddings(self.config, self.dtype, name="embeddings")
        x = embeddings(input_ids, jnp.zeros_like(input_ids), positions, deterministic, tokens)
        x = DecoderEncoder(self.config, self.dtype, name="encoder")(
            x, self_bias, memory.astype(self.dtype), cross_bias, deterministic, tokens)
        table = embeddings.variables["params"]["word_embeddings"]["embedding"]
        return x, table


class BertLMHeadModel(nn.Module):
    """Logits [B, L, vocab] (float32) of the next token at each position of ``input_ids`` [B, L], attending
    causally to the earlier positions and to ``encoder_hidden_states`` [B, M, H] (keys masked where
    ``encoder_attention_mask`` [B, M] is 0; None: none masked). ``tokens`` key the dropout masks
    (:mod:`jaxsbert.models.dropout`).

    Packed rows: ``segment_ids`` and ``position_ids`` [B, L] (:mod:`jaxsbert.data.packing`); each token
    attends causally within its own sentence, and ``encoder_hidden_states`` is [B, L, H]: each token's own
    memory vector (its sentence's embedding), the one key of its cross-attention."""
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, encoder_hidden_states, encoder_attention_mask=None, deterministic: bool = True,
                 tokens: Optional[TokenIds] = None, segment_ids=None, position_ids=None):
        c = self.config
        if encoder_attention_mask is None and segment_ids is None:
            encoder_attention_mask = jnp.ones(encoder_hidden_states.shape[:2], jnp.int32)
        x, table = DecoderBert(c, self.dtype, name="bert")(input_ids, encoder_hidden_states, encoder_attention_mask,
                                                           deterministic, tokens, segment_ids, position_ids)
        return LMPredictionHead(c, name="cls")(x, table)


class LMPredictionHead(nn.Module):
    """``cls``: its ``predictions`` are ``transform`` (dense -> activation -> LayerNorm), then the word-embedding
    table (transposed) plus ``predictions.bias``."""
    config: BertConfig

    @nn.compact
    def __call__(self, x, table):
        return Predictions(self.config, name="predictions")(x, table)


class Predictions(nn.Module):
    """``cls.predictions``: ``transform`` of the hidden states, times the word-embedding table, plus ``bias``."""
    config: BertConfig

    @nn.compact
    def __call__(self, x, table):
        c = self.config
        h = _Transform(c, name="transform")(x)
        bias = self.param("bias", nn.initializers.zeros, (c.vocab_size,), jnp.float32)
        return h @ table.astype(jnp.float32).T + bias


class _Transform(nn.Module):
    """``cls.predictions.transform``: dense -> the config's activation -> LayerNorm."""
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.Dense(c.hidden_size, name="dense")(x.astype(jnp.float32))
        return layer_norm(c, "LayerNorm")(ACTIVATIONS[c.hidden_act](x))


# ------------------------------------------------------------------------------------------------------
# Configuration, initialisation, checkpoints
# ------------------------------------------------------------------------------------------------------

def decoder_config(hf_config: dict, source: str) -> tuple[BertConfig, float]:
    """A Hugging Face ``config.json`` dict -> (the decoder's :class:`BertConfig`, its ``initializer_range``);
    ValueError naming ``source`` for a family without a decoder here or untied output embeddings."""
    check_family(hf_config.get("model_type", "<missing>"), source)
    if hf_config.get("tie_word_embeddings", True) is False:
        raise ValueError(f"{source}: tie_word_embeddings=false is not supported (the decoder's output projection "
                         "here is its word-embedding table)")
    config = dataclasses.replace(BertConfig.from_hf_dict(hf_config), add_pooling_layer=False)
    return config, float(hf_config.get("initializer_range", 0.02))


def init_decoder_params(config: BertConfig, rng: jax.Array, initializer_range: float = 0.02) -> dict:
    """Parameters initialised as transformers initialises a BertLMHeadModel: weights (Linear and Embedding)
    normal(0, initializer_range), biases 0, LayerNorm weight 1 and bias 0 (``cls.predictions.bias`` 0)."""
    ids = jnp.zeros((1, 2), jnp.int32)
    memory = jnp.zeros((1, 1, config.hidden_size), jnp.float32)
    shapes = jax.eval_shape(BertLMHeadModel(config).init, jax.random.PRNGKey(0), ids, memory)["params"]
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(rng, len(leaves))
    out = []
    for (path, shape), key in zip(leaves, keys):
        name = getattr(path[-1], "key", str(path[-1]))
        if name in ("kernel", "embedding"):
            out.append(initializer_range * jax.random.normal(key, shape.shape, jnp.float32))
        elif name == "scale":
            out.append(jnp.ones(shape.shape, jnp.float32))
        else:
            out.append(jnp.zeros(shape.shape, jnp.float32))
    return jax.tree_util.tree_unflatten(tree, out)


def decoder_key(key: str) -> str:
    """A checkpoint key in BertLMHeadModel's names: a BertModel checkpoint's ``embeddings...`` /
    ``encoder...`` become ``bert.embeddings...``; ``bert.*`` and ``cls.*`` stay."""
    return key if key.startswith(("bert.", "cls.")) else f"bert.{key}"


def load_decoder_weights(params: dict, state: dict, source: str) -> tuple[dict, list[str]]:
    """``params`` (a decoder tree, or part of one) with every weight that the checkpoint ``state`` (a Hugging
    Face state dict of a BertModel, BertLMHeadModel, BertForMaskedLM, ...) holds, as transformers loads a
    BertLMHeadModel from it; the others keep their values. Returns (params, the keys loaded)."""
    from jaxsbert.interop import hf

    state = {decoder_key(k): v for k, v in state.items()}
    state = {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v for k, v in state.items()}
    flat = jax.tree_util.tree_flatten_with_path(params)
    values, loaded = [], []
    for path, value in flat[0]:
        names = tuple(getattr(p, "key", str(p)) for p in path)
        key = hf.flax_path_to_hf_key(names)
        if key in state:
            new = np.asarray(state[key], np.float32)
            new = new.T if names[-1] == "kernel" else new
            if new.shape != tuple(np.shape(value)):
                raise ValueError(f"{source}: weight {key!r} has shape {np.shape(state[key])}, the decoder expects "
                                 f"{tuple(np.shape(value))[::-1] if names[-1] == 'kernel' else tuple(np.shape(value))}")
            values.append(jnp.asarray(new))
            loaded.append(key)
        else:
            values.append(value)
    return jax.tree_util.tree_unflatten(flat[1], values), loaded
