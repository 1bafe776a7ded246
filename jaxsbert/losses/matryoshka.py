"""MatryoshkaLoss (Kusupati et al. 2022): train embeddings whose prefixes are good embeddings too."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.losses.base import Loss, WrapsLoss, normalize


@dataclasses.dataclass(frozen=True)
class MatryoshkaLoss(WrapsLoss, Loss):
    """A weighted sum of an inner loss over truncated, re-normalised embeddings::

        loss = sum_k w_k * inner(normalize(e[:, :d_k]) for each column)

    ``loss``: the inner Loss (any loss of this package without a head). ``matryoshka_dims``: the
    dimensions d_k (each <= the model's dimension; include the full one), ``matryoshka_weights``:
    w_k (default 1 each). ``n_dims_per_step=-1`` (every dimension every step) is the only mode
    supported. Columns and labels are the inner loss's. With a gradient-caching inner loss
    (CachedMultipleNegativesRankingLoss, ...) training caches gradients too.
    """
    name: ClassVar[str] = "MatryoshkaLoss"

    loss: Optional[Loss] = None
    matryoshka_dims: tuple[int, ...] = ()
    matryoshka_weights: Optional[tuple[float, ...]] = None
    n_dims_per_step: int = -1

    def __post_init__(self):
        if not isinstance(self.loss, Loss):
            raise ValueError(f"{self.name}: 'loss' must be the inner loss (a Loss from jaxsbert.losses.get_loss), "
                             f"got {self.loss!r}")
        if type(self.loss).init_head is not Loss.init_head:
            raise ValueError(f"{self.name} cannot wrap {self.loss.name}: its trainable head expects full-size "
                             "embeddings")
        dims = tuple(int(d) for d in np.atleast_1d(self.matryoshka_dims)) if self.matryoshka_dims is not None else ()
        if not dims:
            raise ValueError(f"{self.name}: matryoshka_dims must list at least one dimension")
        if any(d <= 0 for d in dims):
            raise ValueError(f"{self.name}: every dimension in matryoshka_dims must be > 0, got {dims}")
        weights = (1.0,) * len(dims) if self.matryoshka_weights is None else tuple(float(w) for w in self.matryoshka_weights)
        if len(weights) != len(dims):
            raise ValueError(f"{self.name}: matryoshka_weights has {len(weights)} entries, matryoshka_dims {len(dims)}")
        if self.n_dims_per_step not in (-1,) and not self.n_dims_per_step >= len(dims):
            raise ValueError(f"{self.name}: only n_dims_per_step=-1 (all dimensions every step) is supported, "
                             f"got {self.n_dims_per_step}")
        order = sorted(range(len(dims)), key=lambda i: -dims[i])     # descending, as sentence-transformers
        object.__setattr__(self, "matryoshka_dims", tuple(dims[i] for i in order))
        object.__setattr__(self, "matryoshka_weights", tuple(weights[i] for i in order))
        object.__setattr__(self, "n_dims_per_step", -1)

    def grad_cache_mini_batch_size(self) -> Optional[int]:
        return self.loss.grad_cache_mini_batch_size()

    def grad_cache_mini_batch_num_tokens(self) -> Optional[int]:
        return self.loss.grad_cache_mini_batch_num_tokens()

    def __call__(self, head_params: Any, embeddings, labels=None, mask=None) -> jax.Array:
        embeddings = tuple(jnp.asarray(e, jnp.float32) for e in embeddings)
        full = embeddings[0].shape[-1] if embeddings and embeddings[0].ndim == 2 else None
        if full is not None and max(self.matryoshka_dims) > full:
            raise ValueError(f"{self.name}: matryoshka_dims {self.matryoshka_dims} exceed the embedding dimension {full}")
        total = 0.0
        for dim, weight in zip(self.matryoshka_dims, self.matryoshka_weights):
            truncated = tuple(normalize(e[..., :dim]) for e in embeddings)
            total = total + weight * self.loss(head_params, truncated, labels, mask)
        return jnp.asarray(total, jnp.float32)
