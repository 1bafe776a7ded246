"""In-batch-negatives ranking losses: MultipleNegativesRankingLoss (InfoNCE) and its symmetric and
cached (GradCache) variants, following sentence-transformers 6.2's ``directions`` /
``partition_mode`` / ``hardness_mode`` formulation.

With queries q_i (column 0) and documents d_j (column 1 = positives, further columns = hard
negatives, all concatenated: ``B * (columns - 1)`` candidates), ``s = similarity * scale``::

    loss = mean_i [ log Z_i - s(q_i, d_i) ]

``Z_i`` sums ``exp`` of the logits of the chosen directions for row i:
``query_to_doc`` s(q_i, every document), ``query_to_query`` s(q_i, q_j) for j != i,
``doc_to_query`` s(d_i, every query), ``doc_to_doc`` s(d_i, every document not of row i).
``partition_mode="joint"`` takes one log-sum-exp over all of them, ``"per_direction"`` the mean
of one log-sum-exp per direction. ``hardness_mode`` adds ``hardness_strength * stop_gradient(cos)``
to the chosen negatives' query_to_doc logits (not scaled).

Padding rows (``mask`` False) are neither anchors nor candidates. The batch is the global one:
under ``jax.jit`` with a sharded batch the negatives come from every device.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsbert.losses.base import Loss, check_mini_batch, masked_sum, normalize, similarity_name
from jaxsbert.losses.gradcache import chunk_layout, largest_divisor, split_chunks

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITION_MODES = ("joint", "per_direction")
HARDNESS_MODES = (None, "in_batch_negatives", "hard_negatives", "all_negatives")
LOGIT_BLOCK = 2 ** 24      # logits per block of anchors (64 MiB in float32) when a batch's would be more


def _row_losses(rows: jax.Array, queries: jax.Array, docs: tuple[jax.Array, ...], docs_all: jax.Array,
                valid: jax.Array, *, scale: float, directions: tuple[str, ...], partition_mode: str,
                hardness_mode: Optional[str], hardness_strength: float) -> jax.Array:
    """Per-row losses [c] for the rows ``rows`` [c] (0 on padding rows). Similarities are dot
    products: cosine callers pass normalised embeddings."""
    batch = queries.shape[0]
    n_docs = len(docs)
    q, d, row_valid = queries[rows], docs[0][rows], valid[rows]
    own = rows[:, None] == jnp.arange(batch)[None, :]          # [c, B]: column of row i's own example
    own_all = jnp.tile(own, (1, n_docs))                        # [c, B * n_docs]
    valid_all = jnp.tile(valid, n_docs)
    first_block = (jnp.arange(batch * n_docs) < batch)[None, :]

    logits = {}   # direction -> (scaled logits, valid columns)
    q2d = q @ docs_all.T
    penalty = 0.0
    if hardness_mode is not None and hardness_strength > 0.0:
        if hardness_mode == "hard_negatives":
            applies = own_all & ~first_block
        elif hardness_mode == "in_batch_negatives":
            applies = ~own_all
        else:  # all_negatives: everything but the row's own positive
            applies = ~(own_all & first_block)
        penalty = jnp.where(applies, hardness_strength * jax.lax.stop_gradient(q2d), 0.0)
    logits["query_to_doc"] = (q2d * scale + penalty, valid_all)
    if "query_to_query" in directions:
        logits["query_to_query"] = (jnp.where(own, -jnp.inf, q @ queries.T) * scale, valid)
    if "doc_to_query" in directions:
        logits["doc_to_query"] = (d @ queries.T * scale, valid)
    if "doc_to_doc" in directions:
        logits["doc_to_doc"] = (jnp.where(own_all, -jnp.inf, d @ docs_all.T) * scale, valid_all)

    positive = jnp.sum(jnp.where(own_all & first_block, logits["query_to_doc"][0], 0.0), axis=1)
    # Padding columns drop out; a padding row keeps its (finite) logits and is zeroed below.
    masked = [jnp.where(cols[None, :] | ~row_valid[:, None], s, -jnp.inf)
              for key in DIRECTIONS if key in logits for s, cols in [logits[key]]]
    if partition_mode == "joint":
        log_z = jax.nn.logsumexp(jnp.concatenate(masked, axis=1), axis=1)
    else:
        log_z = sum(jax.nn.logsumexp(s, axis=1) for s in masked) / len(masked)
    return jnp.where(row_valid, log_z - positive, 0.0)


def multiple_negatives_ranking_loss(embeddings: Sequence[jax.Array], mask: jax.Array | None = None, *,
                                    scale: float = 20.0, similarity_fct: str = "cos_sim",
                                    directions: Sequence[str] = ("query_to_doc",), partition_mode: str = "joint",
                                    hardness_mode: Optional[str] = None, hardness_strength: float = 0.0,
                                    row_chunk: Optional[int] = None) -> jax.Array:
    """MultipleNegativesRankingLoss on (anchor, positive, *negatives) embeddings [B, D] each.

    ``row_chunk``: compute the loss ``row_chunk`` anchors at a time (rematerialised in the backward
    pass), so the [B, B * n] logits never exist at once; same value and gradient. Without one, batches
    whose logits would exceed ``LOGIT_BLOCK`` elements are chunked so that each block of logits fits it
    (the largest divisor of B that does): the loss's memory grows linearly with the global batch, not
    quadratically, hard negatives included.
    """
    embeddings = tuple(embeddings)
    batch = embeddings[0].shape[0]
    valid = jnp.ones((batch,), bool) if mask is None else jnp.asarray(mask, bool)
    if similarity_name(similarity_fct, "MultipleNegativesRankingLoss") == "cos_sim":
        embeddings = tuple(normalize(e) for e in embeddings)
    queries, docs = embeddings[0], embeddings[1:]
    docs_all = jnp.concatenate(docs, axis=0)
    kwargs = dict(scale=scale, directions=tuple(directions), partition_mode=partition_mode,
                  hardness_mode=hardness_mode, hardness_strength=hardness_strength)

    def chunk_total(rows):
        return jnp.sum(_row_losses(rows, queries, docs, docs_all, valid, **kwargs))

    if row_chunk is None and batch * docs_all.shape[0] > LOGIT_BLOCK:
        row_chunk = largest_divisor(batch, max(1, LOGIT_BLOCK // docs_all.shape[0]))
    if row_chunk is None or row_chunk >= batch or batch % row_chunk:
        total = chunk_total(jnp.arange(batch))
    else:
        _, n_chunks = chunk_layout(batch, row_chunk)
        total = jnp.sum(jax.lax.map(jax.checkpoint(chunk_total), split_chunks(jnp.arange(batch), n_chunks)))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(total.dtype)


@dataclasses.dataclass(frozen=True)
class MultipleNegativesRankingLoss(Loss):
    """InfoNCE with in-batch negatives (see the module docstring for the formula).

    Columns: (anchor, positive) pairs, or (anchor, positive, negative_1, ..., negative_n); no label.
    Defaults as sentence-transformers: ``scale=20.0`` (temperature 0.05), ``similarity_fct="cos_sim"``
    ("dot_score" for dot products, usually with ``scale=1``), ``directions=("query_to_doc",)``,
    ``partition_mode="joint"``, ``hardness_mode=None``, ``hardness_strength=0.0``.
    The symmetric loss is ``directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"``
    (= MultipleNegativesSymmetricRankingLoss); GTE's improved contrastive loss is all four
    directions, joint.
    """
    name: ClassVar[str] = "MultipleNegativesRankingLoss"
    min_columns: ClassVar[int] = 2
    max_columns: ClassVar[Optional[int]] = None
    columns_doc: ClassVar[str] = "(anchor, positive, [negative_1, ..., negative_n])"

    scale: float = 20.0
    similarity_fct: str = "cos_sim"
    directions: tuple[str, ...] = ("query_to_doc",)
    partition_mode: str = "joint"
    hardness_mode: Optional[str] = None
    hardness_strength: float = 0.0

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"{self.name}: scale must be positive, got {self.scale}")
        object.__setattr__(self, "similarity_fct", similarity_name(self.similarity_fct, self.name))
        directions = (self.directions,) if isinstance(self.directions, str) else tuple(self.directions)
        if not directions or not set(directions) <= set(DIRECTIONS) or "query_to_doc" not in directions:
            raise ValueError(f"{self.name}: directions must be a non-empty subset of {DIRECTIONS} containing "
                             f"'query_to_doc', got {self.directions!r}")
        object.__setattr__(self, "directions", tuple(k for k in DIRECTIONS if k in directions))
        if self.partition_mode not in PARTITION_MODES:
            raise ValueError(f"{self.name}: partition_mode must be one of {PARTITION_MODES}, got {self.partition_mode!r}")
        if self.partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
            raise ValueError(f"{self.name}: partition_mode='per_direction' cannot be combined with 'query_to_query' "
                             "or 'doc_to_doc' (their candidates never include the positive); use 'joint'")
        if self.hardness_mode not in HARDNESS_MODES:
            raise ValueError(f"{self.name}: hardness_mode must be one of {HARDNESS_MODES}, got {self.hardness_mode!r}")
        if self.hardness_strength < 0:
            raise ValueError(f"{self.name}: hardness_strength must be >= 0, got {self.hardness_strength}")

    def _row_chunk(self) -> Optional[int]:
        return None

    def compute(self, head_params, embeddings, labels, mask):
        return multiple_negatives_ranking_loss(
            embeddings, mask, scale=self.scale, similarity_fct=self.similarity_fct, directions=self.directions,
            partition_mode=self.partition_mode, hardness_mode=self.hardness_mode,
            hardness_strength=self.hardness_strength, row_chunk=self._row_chunk())


@dataclasses.dataclass(frozen=True)
class MultipleNegativesSymmetricRankingLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss with ``directions=("query_to_doc", "doc_to_query")`` and
    ``partition_mode="per_direction"``: the mean of the anchor->documents and positive->anchors
    InfoNCE losses. Columns: (anchor, positive, [negatives...]) (negatives only enter query_to_doc); no label.
    Defaults: ``scale=20.0``, ``similarity_fct="cos_sim"``."""
    name: ClassVar[str] = "MultipleNegativesSymmetricRankingLoss"
    directions: tuple[str, ...] = dataclasses.field(default=("query_to_doc", "doc_to_query"), init=False)
    partition_mode: str = dataclasses.field(default="per_direction", init=False)
    hardness_mode: Optional[str] = dataclasses.field(default=None, init=False)
    hardness_strength: float = dataclasses.field(default=0.0, init=False)


class _Cached:
    """Mixin: GradCache training (see :mod:`jaxsbert.losses.gradcache`) with ``mini_batch_size`` rows
    per chunk, for the encoder passes and for the loss itself. The (global) batch size must be a
    multiple of ``mini_batch_size`` (or at most it). The chunks draw the dropout masks of the uncached
    loss (keyed by sentence, not by chunk)."""
    mini_batch_size: int
    mini_batch_num_tokens: Optional[int]

    def _check_mini_batch(self):
        check_mini_batch(self.name, self.mini_batch_size, self.mini_batch_num_tokens)

    def grad_cache_mini_batch_num_tokens(self) -> Optional[int]:
        return self.mini_batch_num_tokens

    def _row_chunk(self) -> Optional[int]:
        return self.mini_batch_size

    def grad_cache_mini_batch_size(self) -> Optional[int]:
        return self.mini_batch_size


@dataclasses.dataclass(frozen=True)
class CachedMultipleNegativesRankingLoss(_Cached, MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss trained with gradient caching: same value and gradients, with the
    activation memory of ``mini_batch_size`` rows (default 32), so the batch (and the number of
    in-batch negatives) is limited by embedding memory only. Columns and options as
    MultipleNegativesRankingLoss; no label."""
    name: ClassVar[str] = "CachedMultipleNegativesRankingLoss"
    mini_batch_size: int = 32
    mini_batch_num_tokens: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        self._check_mini_batch()


@dataclasses.dataclass(frozen=True)
class CachedMultipleNegativesSymmetricRankingLoss(_Cached, MultipleNegativesSymmetricRankingLoss):
    """MultipleNegativesSymmetricRankingLoss trained with gradient caching (``mini_batch_size=32``)."""
    name: ClassVar[str] = "CachedMultipleNegativesSymmetricRankingLoss"
    mini_batch_size: int = 32
    mini_batch_num_tokens: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        self._check_mini_batch()
