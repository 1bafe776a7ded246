"""Triplet losses: TripletLoss on (anchor, positive, negative) columns, and the batch-mining triplet
losses on (sentence, class label) rows: BatchHardTripletLoss, BatchSemiHardTripletLoss,
BatchAllTripletLoss, BatchHardSoftMarginTripletLoss."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp

from jaxsbert.losses.base import Loss, check_labels_integer, cos_sim, masked_mean, metric_name, pairwise_cos_sim, safe_norm

TRIPLET_METRICS = {"euclidean": "euclidean", "cosine": "cosine", "manhattan": "manhattan"}
BATCH_METRICS = {"euclidean_distance": "euclidean_distance", "euclidean": "euclidean_distance",
                 "eucledian_distance": "euclidean_distance",
                 "cosine_distance": "cosine_distance", "cosine": "cosine_distance"}


def triplet_distance(a: jax.Array, b: jax.Array, metric: str) -> jax.Array:
    """sentence-transformers' ``TripletDistanceMetric``: ||a - b||_2, 1 - cos(a, b) or ||a - b||_1."""
    if metric == "euclidean":
        return safe_norm(a - b)
    if metric == "cosine":
        return 1.0 - pairwise_cos_sim(a, b)
    return jnp.sum(jnp.abs(a - b), axis=-1)


@dataclasses.dataclass(frozen=True)
class TripletLoss(Loss):
    """Triplet loss (Schroff et al. 2015)::

        loss = mean_i relu(d(a_i, p_i) - d(a_i, n_i) + triplet_margin)

    Defaults: ``distance_metric="euclidean"`` ("cosine": 1 - cos, "manhattan"), ``triplet_margin=5``
    (suits euclidean distances; use ~0.5 with cosine). Columns (anchor, positive, negative); no label."""
    name: ClassVar[str] = "TripletLoss"
    min_columns: ClassVar[int] = 3
    max_columns: ClassVar[Optional[int]] = 3
    columns_doc: ClassVar[str] = "(anchor, positive, negative)"

    distance_metric: str = "euclidean"
    triplet_margin: float = 5.0

    def __post_init__(self):
        object.__setattr__(self, "distance_metric", metric_name(self.distance_metric, TRIPLET_METRICS, self.name))

    def compute(self, head_params, embeddings, labels, mask):
        a, p, n = embeddings
        losses = jax.nn.relu(triplet_distance(a, p, self.distance_metric)
                             - triplet_distance(a, n, self.distance_metric) + self.triplet_margin)
        return masked_mean(losses, mask)


def pairwise_distance_matrix(embeddings: jax.Array, metric: str) -> jax.Array:
    """[B, D] -> [B, B] distances as ``BatchHardTripletLossDistanceFunction``: cosine distance, or
    euclidean from the Gram matrix (clamped at 0, exact zeros on the diagonal, zero gradient there)."""
    if metric == "cosine_distance":
        return 1.0 - cos_sim(embeddings, embeddings)
    dot = embeddings @ embeddings.T
    sq = jnp.diagonal(dot)
    d2 = jnp.maximum(sq[None, :] - 2.0 * dot + sq[:, None], 0.0)
    zero = d2 == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, d2)))


class _BatchTriplet(Loss):
    """Shared: one input column, integer class labels; distances between all valid rows."""
    min_columns: ClassVar[int] = 1
    max_columns: ClassVar[Optional[int]] = 1
    columns_doc: ClassVar[str] = "(sentence,)"
    label_mode: ClassVar[str] = "required"
    label_doc: ClassVar[str] = "integer class id; put at least 2 examples of each class in a batch"

    def __post_init__(self):
        object.__setattr__(self, "distance_metric", metric_name(self.distance_metric, BATCH_METRICS, self.name))

    def check_label_values(self, labels, source):
        check_labels_integer(self.name, labels, source)

    def _masks(self, labels, mask):
        batch = labels.shape[0]
        same = labels[:, None] == labels[None, :]
        both = mask[:, None] & mask[None, :]
        anchor_positive = same & ~jnp.eye(batch, dtype=bool) & both
        anchor_negative = ~same & mask[None, :]
        return anchor_positive, anchor_negative

    def _hardest(self, embeddings, labels, mask):
        """(hardest positive distance, hardest negative distance) per row, as BatchHardTripletLoss mines them."""
        dist = pairwise_distance_matrix(embeddings[0], self.distance_metric)
        anchor_positive, anchor_negative = self._masks(labels, mask)
        hardest_pos = jnp.max(jnp.where(anchor_positive, dist, 0.0), axis=1)
        keep = mask[None, :] | ~mask[:, None]                       # valid columns (all, on padding rows)
        row_max = jnp.max(jnp.where(keep, dist, -jnp.inf), axis=1, keepdims=True)
        shifted = dist + row_max * (1.0 - anchor_negative.astype(dist.dtype))   # non-negatives pushed up
        hardest_neg = jnp.min(jnp.where(keep, shifted, jnp.inf), axis=1)
        return hardest_pos, hardest_neg


@dataclasses.dataclass(frozen=True)
class BatchHardTripletLoss(_BatchTriplet):
    """Batch-hard triplet loss (Hermans et al. 2017): for each anchor, its farthest positive (same
    label) and closest negative (different label) in the batch::

        loss = mean_a relu(max_p d(a, p) - min_n d(a, n) + margin)

    Defaults: ``distance_metric="euclidean_distance"`` ("cosine_distance"), ``margin=5``.
    One column (sentence) with integer class labels."""
    name: ClassVar[str] = "BatchHardTripletLoss"
    distance_metric: str = "euclidean_distance"
    margin: float = 5.0

    def compute(self, head_params, embeddings, labels, mask):
        hardest_pos, hardest_neg = self._hardest(embeddings, labels, mask)
        return masked_mean(jax.nn.relu(hardest_pos - hardest_neg + self.margin), mask)


@dataclasses.dataclass(frozen=True)
class BatchHardSoftMarginTripletLoss(_BatchTriplet):
    """BatchHardTripletLoss with a soft margin::

        loss = mean_a softplus(max_p d(a, p) - min_n d(a, n))

    Default ``distance_metric="euclidean_distance"``. One column with integer class labels."""
    name: ClassVar[str] = "BatchHardSoftMarginTripletLoss"
    distance_metric: str = "euclidean_distance"

    def compute(self, head_params, embeddings, labels, mask):
        hardest_pos, hardest_neg = self._hardest(embeddings, labels, mask)
        return masked_mean(jax.nn.softplus(hardest_pos - hardest_neg), mask)


def _per_anchor(fn, batch: int):
    """Maps ``fn(anchor_index) -> (sum, count)`` over the anchors, a few at a time (bounded memory:
    [group, B, B] instead of the [B, B, B] triplet cube)."""
    sums, counts = jax.lax.map(fn, jnp.arange(batch), batch_size=min(batch, 16))
    return jnp.sum(sums), jnp.sum(counts)


@dataclasses.dataclass(frozen=True)
class BatchAllTripletLoss(_BatchTriplet):
    """Batch-all triplet loss: every valid triplet (a, p, n) of the batch (label_a = label_p, a != p,
    label_n != label_a), averaged over the triplets with a positive loss::

        loss = sum_{a,p,n} relu(d(a, p) - d(a, n) + margin) / #{triplets with loss > 0}

    Defaults: ``distance_metric="euclidean_distance"``, ``margin=5``. One column with integer class labels."""
    name: ClassVar[str] = "BatchAllTripletLoss"
    distance_metric: str = "euclidean_distance"
    margin: float = 5.0

    def compute(self, head_params, embeddings, labels, mask):
        dist = pairwise_distance_matrix(embeddings[0], self.distance_metric)
        anchor_positive, anchor_negative = self._masks(labels, mask)

        def anchor(a):
            t = dist[a][:, None] - dist[a][None, :] + self.margin              # [p, n]
            t = jax.nn.relu(jnp.where(anchor_positive[a][:, None] & anchor_negative[a][None, :], t, 0.0))
            return jnp.sum(t), jnp.sum(t > 1e-16)

        total, count = _per_anchor(anchor, dist.shape[0])
        return total / (count.astype(total.dtype) + 1e-16)


@dataclasses.dataclass(frozen=True)
class BatchSemiHardTripletLoss(_BatchTriplet):
    """Batch semi-hard triplet loss (FaceNet, Schroff et al. 2015): for every positive pair (a, p),
    the closest negative farther than p (semi-hard); if there is none, the farthest negative::

        loss = sum_{(a,p)} relu(d(a, p) - d(a, n*(a, p)) + margin) / #positive pairs

    Defaults: ``distance_metric="euclidean_distance"``, ``margin=5``. One column with integer class labels."""
    name: ClassVar[str] = "BatchSemiHardTripletLoss"
    distance_metric: str = "euclidean_distance"
    margin: float = 5.0

    def compute(self, head_params, embeddings, labels, mask):
        dist = pairwise_distance_matrix(embeddings[0], self.distance_metric)
        anchor_positive, anchor_negative = self._masks(labels, mask)
        keep = mask[None, :] | ~mask[:, None]
        row_min = jnp.min(jnp.where(keep, dist, jnp.inf), axis=1)
        has_negative = jnp.any(anchor_negative, axis=1)
        inside = jnp.where(has_negative, jnp.max(jnp.where(anchor_negative, dist, -jnp.inf), axis=1), row_min)

        def anchor(a):
            d_ap = dist[a][:, None]                                            # [p, 1]
            d_an = dist[a][None, :]                                            # [1, n]
            outside_ok = anchor_negative[a][None, :] & (jax.lax.stop_gradient(d_an) > jax.lax.stop_gradient(d_ap))
            outside = jnp.min(jnp.where(outside_ok, d_an, jnp.inf), axis=1)     # [p]
            semi_hard = jnp.where(jnp.any(outside_ok, axis=1), outside, inside[a])
            losses = jax.nn.relu(dist[a] - semi_hard + self.margin)
            return jnp.sum(jnp.where(anchor_positive[a], losses, 0.0)), jnp.sum(anchor_positive[a])

        total, count = _per_anchor(anchor, dist.shape[0])
        return total / jnp.maximum(count.astype(total.dtype), 1e-16)
