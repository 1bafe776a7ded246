"""GlobalOrthogonalRegularizationLoss (Zhang et al. 2017): spread a column's embeddings out over the space."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp

from jaxsbert.losses.base import SIMILARITY_FNS, Loss, similarity_name


@dataclasses.dataclass(frozen=True)
class GlobalOrthogonalRegularizationLoss(Loss):
    """Global Orthogonal Regularization of each input column on its own, sentence-transformers' formula.

    For one column's embeddings ``e`` (``n`` valid rows, dimension ``d``) and ``S = sim(e, e)`` with the diagonal
    left out::

        M1 = Σ_{i≠j} S_ij / max(n(n − 1), 1)          mean_term   = M1²
        M2 = Σ_{i≠j} S_ij² / max(n(n − 1), 1)         second_term = relu(M2 − 1/d)

        loss = mean_weight · agg_c(mean_term_c) + second_moment_weight · agg_c(second_term_c)

    ``agg`` is the mean (``aggregation="mean"``, the default) or the sum (``"sum"``, EmbeddingGemma) over
    the columns. ``similarity_fct``: ``"cos_sim"`` (default) or ``"dot_score"``. A weight of 0 or None drops its
    term (not both). Input columns: any number (one or more text columns, e.g. (anchor, positive)); no label.
    sentence-transformers returns the two weighted terms as a dict (``{"gor_mean", "gor_second_moment"}``) that
    its trainer sums; :meth:`components` gives that dict, the loss is their sum. It is meant as a
    regulariser beside a main loss (e.g. MultipleNegativesRankingLoss): in jaxsbert, train the same
    dataset twice under two names, one per loss (multi-dataset training).
    """
    name: ClassVar[str] = "GlobalOrthogonalRegularizationLoss"
    min_columns: ClassVar[int] = 1
    max_columns: ClassVar[Optional[int]] = None
    columns_doc: ClassVar[str] = "(any text columns, each regularised on its own)"

    similarity_fct: str = "cos_sim"
    mean_weight: Optional[float] = 1.0
    second_moment_weight: Optional[float] = 1.0
    aggregation: str = "mean"

    def __post_init__(self):
        object.__setattr__(self, "similarity_fct", similarity_name(self.similarity_fct, self.name))
        if not self.mean_weight and not self.second_moment_weight:
            raise ValueError(f"{self.name}: at least one of mean_weight or second_moment_weight must be non-zero")
        if self.aggregation not in ("mean", "sum"):
            raise ValueError(f"{self.name}: aggregation must be 'mean' or 'sum', got {self.aggregation!r}")

    def terms(self, embeddings: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean_term, second_moment_term), unweighted, of one column's [B, D] embeddings over its valid rows."""
        b, d = embeddings.shape
        sim = SIMILARITY_FNS[self.similarity_fct](embeddings, embeddings)
        pairs = mask[:, None] & mask[None, :] & ~jnp.eye(b, dtype=bool)
        sim = jnp.where(pairs, sim, 0.0)
        n = jnp.sum(mask).astype(jnp.float32)
        count = jnp.maximum(n * (n - 1.0), 1.0)
        mean_term = (jnp.sum(sim) / count) ** 2
        second_moment_term = jax.nn.relu(jnp.sum(sim * sim) / count - 1.0 / d)
        return mean_term, second_moment_term

    def components(self, head_params: Any, embeddings, labels=None, mask=None) -> dict[str, jax.Array]:
        """The weighted terms as sentence-transformers returns them: ``{"gor_mean", "gor_second_moment"}``
        (a term whose weight is 0 or None is absent)."""
        embeddings = tuple(jnp.asarray(e, jnp.float32) for e in embeddings)
        mask = jnp.ones((embeddings[0].shape[0],), bool) if mask is None else jnp.asarray(mask, bool)
        means, seconds = zip(*(self.terms(e, mask) for e in embeddings))
        agg = jnp.sum if self.aggregation == "sum" else jnp.mean
        out = {}
        if self.mean_weight:
            out["gor_mean"] = self.mean_weight * agg(jnp.stack(means))
        if self.second_moment_weight:
            out["gor_second_moment"] = self.second_moment_weight * agg(jnp.stack(seconds))
        return out

    def compute(self, head_params, embeddings, labels, mask):
        return sum(self.components(head_params, embeddings, None, mask).values())
