"""Evaluator base class and encoding helpers shared by the evaluators.

An evaluator is built from sentences and labels, and called with an encoder: any object with
``encode(list[str], batch_size=...) -> np.ndarray [n, dim]`` (e.g. ``jaxsbert.SentenceEncoder``). It returns
``{metric name: float}`` with sentence-transformers' key names (prefixed with ``{name}_`` when a name is
given) and sets ``primary_metric`` to the key used to pick the best checkpoint (higher is better).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from jaxsbert.evaluation.similarity import check_similarity_fn_names


class Encoder(Protocol):
    def encode(self, sentences: list[str], batch_size: int = ...) -> np.ndarray: ...


def _check_texts(texts: Sequence[Any], what: str) -> list:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, got a single string")
    return list(texts)


def encode_texts(encoder: Encoder, texts: Sequence[str], batch_size: int, truncate_dim: int | None = None
                 ) -> np.ndarray:
    """encoder.encode(texts) as a 2-D array, checked for one row per text, optionally truncated."""
    texts = list(texts)
    emb = np.asarray(encoder.encode(texts, batch_size=batch_size))
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {emb.shape} for {len(texts)} texts (expected [n, dim])")
    if truncate_dim is not None:
        emb = emb[:, :truncate_dim]
    return emb


def encode_unique(encoder: Encoder, columns: Sequence[Sequence[str]], batch_size: int,
                  truncate_dim: int | None = None) -> list[np.ndarray]:
    """Embeddings of each column of texts, encoding every distinct text once (in first-seen order)."""
    unique = list(dict.fromkeys(t for col in columns for t in col))
    emb = encode_texts(encoder, unique, batch_size, truncate_dim)
    index = {t: i for i, t in enumerate(unique)}
    return [emb[np.fromiter((index[t] for t in col), dtype=np.int64, count=len(col))] for col in columns]


def resolve_fn_names(names: Sequence[str] | None, encoder: Any) -> list[str]:
    """Explicit names, else the encoder's ``similarity_fn_name`` (as sentence-transformers), else cosine."""
    if names:
        return check_similarity_fn_names(names)
    return check_similarity_fn_names([getattr(encoder, "similarity_fn_name", None) or "cosine"])


class Evaluator:
    """Base: holds ``name``, ``primary_metric`` and ``greater_is_better``; subclasses implement ``__call__``."""

    greater_is_better = True

    def __init__(self, name: str = "", batch_size: int = 32, truncate_dim: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.truncate_dim = truncate_dim
        self.primary_metric: str | None = None

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        raise NotImplementedError

    def prefixed(self, key: str) -> str:
        return f"{self.name}_{key}" if self.name else key

    def _finish(self, metrics: dict[str, float], primary: str) -> dict[str, float]:
        """Prefixes the keys with the evaluator name and records the primary metric key."""
        self.primary_metric = self.prefixed(primary)
        return {self.prefixed(k): float(v) for k, v in metrics.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
