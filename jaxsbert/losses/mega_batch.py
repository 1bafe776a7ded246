"""MegaBatchMarginLoss (Wieting & Gimpel 2018, ParaNMT)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp

from jaxsbert.losses.base import Loss, check_mini_batch, cos_sim, masked_mean


@dataclasses.dataclass(frozen=True)
class MegaBatchMarginLoss(Loss):
    """For each anchor, its positive and the hardest in-batch negative (the most similar other positive)::

        loss = mean_i relu(positive_margin - cos(a_i, p_i)) + relu(max_{j != i} cos(a_i, p_j) - negative_margin)

    Defaults: ``positive_margin=0.8``, ``negative_margin=0.3``, ``use_mini_batched_version=True``,
    ``mini_batch_size=50``: with the mini-batched version, training embeds and back-propagates
    ``mini_batch_size`` rows at a time (gradient caching; same result), so the batch size must be a
    multiple of ``mini_batch_size`` (or at most it). Columns (anchor, positive); no label. Use large batches."""
    name: ClassVar[str] = "MegaBatchMarginLoss"
    columns_doc: ClassVar[str] = "(anchor, positive)"

    positive_margin: float = 0.8
    negative_margin: float = 0.3
    use_mini_batched_version: bool = True
    mini_batch_size: int = 50
    mini_batch_num_tokens: Optional[int] = None

    def __post_init__(self):
        check_mini_batch(self.name, self.mini_batch_size, self.mini_batch_num_tokens)

    def grad_cache_mini_batch_size(self) -> Optional[int]:
        return self.mini_batch_size if self.use_mini_batched_version else None

    def grad_cache_mini_batch_num_tokens(self) -> Optional[int]:
        return self.mini_batch_num_tokens

    def compute(self, head_params, embeddings, labels, mask):
        anchors, positives = embeddings
        cos = cos_sim(anchors, positives)
        batch = cos.shape[0]
        eye = jnp.eye(batch, dtype=bool)
        positive = jnp.sum(jnp.where(eye, cos, 0.0), axis=1)
        candidates = ~eye & (mask[None, :] | ~mask[:, None])
        hardest_negative = jnp.max(jnp.where(candidates, cos, -jnp.inf), axis=1)
        losses = jax.nn.relu(self.positive_margin - positive) + jax.nn.relu(hardest_negative - self.negative_margin)
        return masked_mean(losses, mask)
