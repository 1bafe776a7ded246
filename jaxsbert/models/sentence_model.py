"""A sentence-embedding model: Transformer -> Pooling -> [Dense ...] -> [Normalize], as in sentence-transformers.

``SentenceModel`` is a Flax module whose parameters are ``{"transformer": <HF-named encoder
params>, "<i>_Dense": {"linear": {"kernel", "bias"}}}``, ``i`` being the module's index in
sentence-transformers' ``modules.json``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Union

import flax.linen as nn
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
    """
    config: SentenceModelConfig
    dtype: Any = jnp.float32
    remat: bool = False
    max_segments: int = DEFAULT_MAX_SEGMENTS

    @nn.compact
    def __call__(self, features: dict, deterministic: bool = True):
        c = self.config
        transformer = families.FAMILIES[c.family].module(c.transformer, dtype=self.dtype, remat=self.remat,
                                                           name="transformer")
        x = transformer(features["input_ids"], features["attention_mask"], features.get("token_type_ids"),
                        features.get("position_ids"), deterministic=deterministic,
                        sentence_ids=features.get("sentence_ids"))
        packed = is_packed(features)
        for i, m in enumerate(c.modules):
            if isinstance(m, PoolingConfig) and packed:
                pooled = pool_segments(x, features["attention_mask"], features["position_ids"], m, self.max_segments)
                x = jnp.take(pooled, features["slots"], axis=0)
            elif isinstance(m, PoolingConfig):
                x = pool(x, features["attention_mask"], m)
            elif isinstance(m, DenseConfig):
                x = Dense(m, name=c.module_name(i))(x)
            elif isinstance(m, NormalizeConfig):
                x = normalize(x)
        return x
