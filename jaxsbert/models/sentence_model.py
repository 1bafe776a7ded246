"""A sentence-embedding model: Transformer -> Pooling -> [Dense ...] -> [Normalize], as in sentence-transformers.

``SentenceModel`` is a Flax module whose parameters are ``{"transformer": <HF-named encoder
params>, "<i>_Dense": {"linear": {"kernel", "bias"}}}``, ``i`` being the module's index in
sentence-transformers' ``modules.json``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsbert.models import families
from jaxsbert.models.heads import Dense, DenseConfig
from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS, is_packed
from jaxsbert.models.pooling import PoolingConfig, normalize, pool, pool_segments


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    pass


ModuleConfig = Union[PoolingConfig, DenseConfig, NormalizeConfig]


@dataclasses.dataclass(frozen=True)
class SentenceModelConfig:
    family: str                      # a key of jaxsbert.models.families.FAMILIES ("bert", ...)
    transformer: Any                 # that family's config dataclass
    modules: tuple[ModuleConfig, ...]  # what follows the Transformer, in order
    max_seq_length: int = 256
    do_lower_case: bool = False

    @property
    def embedding_dim(self) -> int:
        dim = None
        for m in self.modules:
            if isinstance(m, PoolingConfig):
                dim = m.output_dimension
            elif isinstance(m, DenseConfig):
                dim = m.out_features
        return dim

    @property
    def normalizes(self) -> bool:
        return bool(self.modules) and isinstance(self.modules[-1], NormalizeConfig)

    def module_name(self, i: int) -> str:
        """Name of module i (0-based among those after the Transformer), as sentence-transformers numbers them."""
        kind = type(self.modules[i]).__name__.replace("Config", "")
        return f"{i + 1}_{kind}"


class SentenceModel(nn.Module):
    """features {input_ids, attention_mask, [token_type_ids], [position_ids], [sentence_ids]} -> embeddings [B, D]
    (float32). ``sentence_ids`` ([B, L]: each token's sentence in the global batch) key train-mode dropout.

    Packed features (with ``slots``, see :mod:`jaxsbert.data.packing`; at most ``max_segments``
    sentences per row) give one embedding per slot: ``slots.shape + (D,)``.

    ``all_layers=True`` gives every layer's sentence embeddings from the same forward pass (the same dropout
    masks), stacked on a new leading axis: ``[layers + 1, B, D]`` (packed: ``[layers + 1] + slots.shape + (D,)``).
    Entry k is the Transformer's hidden states after layer k (0: the embeddings; the last: the ordinary output)
    through the same Pooling, Dense and Normalize modules, as sentence-transformers' ``AdaptiveLayerLoss``
    pools Hugging Face's ``hidden_states``.
    """
    config: SentenceModelConfig
    dtype: Any = jnp.float32
    remat: bool = False
    max_segments: int = DEFAULT_MAX_SEGMENTS
    attention_impl: str = "auto"     # "auto" | "fused" | "materialized": see jaxsbert.models.attention

    @nn.compact
    def __call__(self, features: dict, deterministic: bool = True, all_layers: bool = False):
        c = self.config
        transformer = transformer_module(c, self.dtype, self.remat, self.attention_impl, name="transformer")
        x = transformer(features["input_ids"], features["attention_mask"], features.get("token_type_ids"),
                        features.get("position_ids"), deterministic=deterministic,
                        sentence_ids=features.get("sentence_ids"), all_layers=all_layers)
        packed = is_packed(features)
        for i, m in enumerate(c.modules):
            if isinstance(m, PoolingConfig):
                pool_one = functools.partial(pool_tokens, features=features, config=m, packed=packed,
                                             max_segments=self.max_segments)
                x = jax.vmap(pool_one)(x) if all_layers else pool_one(x)     # Dense, Normalize: the last axis
            elif isinstance(m, DenseConfig):
                x = Dense(m, name=c.module_name(i))(x)
            elif isinstance(m, NormalizeConfig):
                x = normalize(x)
        return x


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(dtype: Any) -> Any:
    """The matmul dtype a model runs in, from a name ("float32", "bfloat16") or a dtype: float32 or bfloat16
    (parameters, norms, softmax, pooling and losses stay float32 either way)."""
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype {dtype!r} is not supported; supported: {sorted(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def transformer_module(config: SentenceModelConfig, dtype: Any = jnp.float32, remat: bool = False,
                       attention_impl: str = "auto", **kwargs):
    """The family's Transformer module; ``attention_impl`` goes to the families whose module takes one (every
    family here); a family without the choice takes only "auto"."""
    module_cls = families.FAMILIES[config.family].module
    if "attention_impl" in getattr(module_cls, "__dataclass_fields__", {}):
        kwargs["attention_impl"] = attention_impl
    elif attention_impl != "auto":
        raise ValueError(f"attention_impl={attention_impl!r}: the {config.family!r} family has no attention "
                         f"choice (only 'auto')")
    return module_cls(config.transformer, dtype=dtype, remat=remat, **kwargs)


def pool_tokens(x, features: dict, config: PoolingConfig, packed: bool, max_segments: int):
    """One layer's token embeddings [B, L, H] -> sentence embeddings [B, D] (packed: one per slot)."""
    if packed:
        pooled = pool_segments(x, features["attention_mask"], features["position_ids"], config, max_segments)
        return jnp.take(pooled, features["slots"], axis=0)
    return pool(x, features["attention_mask"], config)
