"""Losses on labelled sentence pairs (sentence1, sentence2, label): ContrastiveLoss,
OnlineContrastiveLoss, CosineSimilarityLoss, CoSENTLoss and AnglELoss."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.losses.base import (Loss, check_labels_numeric, check_labels_range, masked_mean, masked_sum,
                                  metric_name, pairwise_angle_sim, pairwise_cos_sim, safe_norm)

SIAMESE_METRICS = {"cosine_distance": "cosine_distance", "cosine": "cosine_distance",
                   "euclidean": "euclidean", "manhattan": "manhattan"}


def siamese_distance(a: jax.Array, b: jax.Array, metric: str) -> jax.Array:
    """sentence-transformers' ``SiameseDistanceMetric``: 1 - cos (torch eps 1e-8), or
    ``torch.pairwise_distance`` (p = 2 or 1, which adds eps=1e-6 to the difference)."""
    if metric == "cosine_distance":
        return 1.0 - pairwise_cos_sim(a, b, eps=1e-8)
    diff = a - b + 1e-6
    if metric == "euclidean":
        return safe_norm(diff)
    return jnp.sum(jnp.abs(diff), axis=-1)


def _check_binary(loss: str, labels: np.ndarray, source: str, allow_fraction: bool) -> None:
    labels = check_labels_numeric(loss, labels, source)
    if allow_fraction:
        check_labels_range(loss, labels, 0, 1, source, hint="1 = similar pair, 0 = dissimilar pair")
    elif labels.size and not np.all((labels == 0) | (labels == 1)):
        bad = np.unique(labels[(labels != 0) & (labels != 1)])[:3]
        raise ValueError(f"{source + ': ' if source else ''}{loss} expects binary labels (1 = similar pair, "
                         f"0 = dissimilar pair), got values such as {bad.tolist()}")


@dataclasses.dataclass(frozen=True)
class ContrastiveLoss(Loss):
    """Contrastive loss (Hadsell et al. 2006) on (sentence1, sentence2) pairs with label y (1 similar, 0 not)::

        l_i = 0.5 * (y_i * d_i^2 + (1 - y_i) * relu(margin - d_i)^2),  loss = mean_i l_i  (sum if not size_average)

    ``d`` = ``distance_metric``: ``"cosine_distance"`` (default, 1 - cos), ``"euclidean"``, ``"manhattan"``.
    Defaults: ``margin=0.5``, ``size_average=True``. Labels in [0, 1] (fractions weight the two terms)."""
    name: ClassVar[str] = "ContrastiveLoss"
    columns_doc: ClassVar[str] = "(sentence1, sentence2)"
    label_mode: ClassVar[str] = "required"
    label_doc: ClassVar[str] = "1 = similar pair, 0 = dissimilar pair"

    distance_metric: str = "cosine_distance"
    margin: float = 0.5
    size_average: bool = True

    def __post_init__(self):
        object.__setattr__(self, "distance_metric", metric_name(self.distance_metric, SIAMESE_METRICS, self.name))

    def check_label_values(self, labels, source):
        _check_binary(self.name, labels, source, allow_fraction=True)

    def compute(self, head_params, embeddings, labels, mask):
        d = siamese_distance(embeddings[0], embeddings[1], self.distance_metric)
        y = labels.astype(jnp.float32)
        losses = 0.5 * (y * d ** 2 + (1 - y) * jax.nn.relu(self.margin - d) ** 2)
        return masked_mean(losses, mask) if self.size_average else masked_sum(losses, mask)


@dataclasses.dataclass(frozen=True)
class OnlineContrastiveLoss(Loss):
    """ContrastiveLoss on the hard pairs of the batch only: positives (y=1) farther apart than the
    closest negative, and negatives (y=0) closer than the farthest positive (if a batch has no
    positives, negatives closer than the mean negative distance; likewise for positives)::

        loss = sum_{hard positives} d^2 + sum_{hard negatives} relu(margin - d)^2     (a sum, not a mean)

    Defaults: ``distance_metric="cosine_distance"``, ``margin=0.5``. Labels must be 0 or 1."""
    name: ClassVar[str] = "OnlineContrastiveLoss"
    columns_doc: ClassVar[str] = "(sentence1, sentence2)"
    label_mode: ClassVar[str] = "required"
    label_doc: ClassVar[str] = "1 = similar pair, 0 = dissimilar pair"

    distance_metric: str = "cosine_distance"
    margin: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "distance_metric", metric_name(self.distance_metric, SIAMESE_METRICS, self.name))

    def check_label_values(self, labels, source):
        _check_binary(self.name, labels, source, allow_fraction=False)

    def compute(self, head_params, embeddings, labels, mask):
        d = siamese_distance(embeddings[0], embeddings[1], self.distance_metric)
        pos = mask & (labels == 1)
        neg = mask & (labels == 0)
        dd = jax.lax.stop_gradient(d)   # the thresholds only select pairs
        n_pos, n_neg = jnp.sum(pos), jnp.sum(neg)
        pos_max = jnp.where(n_pos > 0, jnp.max(jnp.where(pos, dd, -jnp.inf)), masked_mean(dd, neg))
        neg_min = jnp.where(n_neg > 0, jnp.min(jnp.where(neg, dd, jnp.inf)), masked_mean(dd, pos))
        hard_neg = neg & (dd < pos_max)
        hard_pos = pos & (dd > neg_min)
        return masked_sum(d ** 2, hard_pos) + masked_sum(jax.nn.relu(self.margin - d) ** 2, hard_neg)


@dataclasses.dataclass(frozen=True)
class CosineSimilarityLoss(Loss):
    """Regresses cos(u, v) on a gold similarity score::

        loss = mean_i (cos(u_i, v_i) - y_i)^2

    (``torch.cosine_similarity``, ``loss_fct=MSELoss``, identity score transformation, as the
    sentence-transformers defaults.) Labels: float scores in [-1, 1], usually [0, 1] (STSb: score / 5)."""
    name: ClassVar[str] = "CosineSimilarityLoss"
    columns_doc: ClassVar[str] = "(sentence1, sentence2)"
    label_mode: ClassVar[str] = "required"
    label_doc: ClassVar[str] = "float similarity score, in [-1, 1] (usually [0, 1])"

    loss_fct: str = "MSELoss"

    def __post_init__(self):
        if str(self.loss_fct).rsplit(".", 1)[-1] != "MSELoss":
            raise ValueError(f"{self.name}: only loss_fct='MSELoss' is supported, got {self.loss_fct!r}")
        object.__setattr__(self, "loss_fct", "MSELoss")

    def check_label_values(self, labels, source):
        labels = check_labels_numeric(self.name, labels, source)
        check_labels_range(self.name, labels, -1, 1, source,
                           hint="scale the scores to the cosine range (e.g. STSb scores 0-5 divided by 5)")

    def compute(self, head_params, embeddings, labels, mask):
        cos = pairwise_cos_sim(embeddings[0], embeddings[1], eps=1e-8)
        return masked_mean((cos - labels.astype(jnp.float32)) ** 2, mask)


def cosent_from_scores(scores: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """log(1 + sum over valid pairs (i, j) with label_i > label_j of exp(s_j - s_i)), s already scaled."""
    labels = labels.astype(jnp.float32)
    higher = (labels[:, None] > labels[None, :]) & mask[:, None] & mask[None, :]   # [i, j]: label_i > label_j
    diff = jnp.where(higher, scores[None, :] - scores[:, None], -jnp.inf)
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), diff.dtype), diff.ravel()]))


@dataclasses.dataclass(frozen=True)
class CoSENTLoss(Loss):
    """CoSENT (Su 2022): a ranking loss over all pairs of pairs in the batch::

        loss = log(1 + sum_{(i, j): y_i > y_j} exp(scale * (cos_j - cos_i)))

    Defaults: ``scale=20.0``, ``similarity_fct="pairwise_cos_sim"``. Labels: float scores (any range;
    only their order matters)."""
    name: ClassVar[str] = "CoSENTLoss"
    columns_doc: ClassVar[str] = "(sentence1, sentence2)"
    label_mode: ClassVar[str] = "required"
    label_doc: ClassVar[str] = "float similarity score (only the order matters)"

    scale: float = 20.0
    similarity_fct: str = "pairwise_cos_sim"

    def __post_init__(self):
        key = str(self.similarity_fct).rsplit(".", 1)[-1]
        if key not in ("pairwise_cos_sim", "cos_sim", "cosine", "pairwise_angle_sim"):
            raise ValueError(f"{self.name}: unknown similarity_fct {self.similarity_fct!r}; supported: "
                             "'pairwise_cos_sim' (default), 'pairwise_angle_sim'")
        object.__setattr__(self, "similarity_fct", "pairwise_angle_sim" if key == "pairwise_angle_sim"
                           else "pairwise_cos_sim")

    def _similarity(self, a, b):
        return pairwise_angle_sim(a, b) if self.similarity_fct == "pairwise_angle_sim" else pairwise_cos_sim(a, b)

    def compute(self, head_params, embeddings, labels, mask):
        return cosent_from_scores(self._similarity(embeddings[0], embeddings[1]) * self.scale, labels, mask)


@dataclasses.dataclass(frozen=True)
class AnglELoss(CoSENTLoss):
    """AnglE (Li & Li 2024): CoSENTLoss with the angle similarity |cos + sin| of the embeddings as
    complex vectors (``util.pairwise_angle_sim``). Default ``scale=20.0``.

    Columns: (sentence1, sentence2) with a score label, or (anchor, positive, negative_1, ...) with an
    optional label: then each (anchor, candidate) is a pair labelled ``label`` (default 1) for the
    positive and ``1 - label`` for the negatives."""
    name: ClassVar[str] = "AnglELoss"
    max_columns: ClassVar[Optional[int]] = None
    columns_doc: ClassVar[str] = "(sentence1, sentence2) or (anchor, positive, negative_1, ..., negative_n)"
    label_mode: ClassVar[str] = "optional"
    label_doc: ClassVar[str] = "float score; required with 2 columns, default 1 for n-tuples"

    similarity_fct: str = dataclasses.field(default="pairwise_angle_sim", init=False)

    def check_inputs(self, num_columns, labels, source=""):
        super().check_inputs(num_columns, labels, source)
        if num_columns == 2 and labels is None:
            raise ValueError(f"{source + ': ' if source else ''}{self.expects()}; pairs need a label column")

    def compute(self, head_params, embeddings, labels, mask):
        if len(embeddings) == 2:
            if labels is None:
                raise ValueError(f"{self.expects()}; got labels=None for pairs")
            return super().compute(head_params, embeddings, labels, mask)
        k = len(embeddings) - 1
        anchors = jnp.tile(embeddings[0], (k, 1))
        candidates = jnp.concatenate(embeddings[1:], axis=0)
        labels = jnp.ones(embeddings[0].shape[:1], jnp.float32) if labels is None else labels.astype(jnp.float32)
        pair_labels = jnp.concatenate([labels] + [1.0 - labels] * (k - 1))
        return cosent_from_scores(pairwise_angle_sim(anchors, candidates) * self.scale, pair_labels,
                                  jnp.tile(mask, k))
