"""Similarity scores on embeddings, in numpy, with sentence-transformers' conventions.

Distances are returned negated (``euclidean`` = -||a - b||_2, ``manhattan`` = -||a - b||_1) so that for every
function a higher score means "more similar". Scores come back in float32 (float64 for float64 input), as
sentence-transformers returns them, so thresholds live on the same float grid. Pairwise scores are accumulated
in float64 and rounded once: sentence-transformers' torch float32 reductions can differ from them by a few ulps
(e.g. the cosine of a vector with itself may come out as 1 - 1ulp there, exactly 1.0 here). Similarity matrices
(retrieval) use float32 BLAS for float32 input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")

# Elements of one [queries, corpus, dim] block in the Manhattan matrix (bounds its temporary).
_MANHATTAN_BLOCK_ELEMENTS = 1 << 24


def as_float_array(x) -> np.ndarray:
    """2-D (or 1-D) floating array; integers and sub-32-bit floats become float32, float64 stays float64."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating) or a.dtype.itemsize < 4:
        a = a.astype(np.float32)
    return a


def check_similarity_fn_names(names) -> list[str]:
    names = list(names)
    unknown = sorted(set(names) - set(SIMILARITY_FUNCTIONS))
    if unknown:
        raise ValueError(f"unknown similarity function(s) {unknown}; expected names in {list(SIMILARITY_FUNCTIONS)}")
    if not names:
        raise ValueError("at least one similarity function name is needed")
    return names


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (rows with norm < eps are divided by eps, as torch's F.normalize)."""
    x = as_float_array(x)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, np.asarray(eps, dtype=x.dtype))


def _pair(a, b) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """(a, b) in float64 and the dtype of the result (float32, or float64 for float64 input)."""
    a, b = as_float_array(a), as_float_array(b)
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings need the same shape, got {a.shape} and {b.shape}")
    return a.astype(np.float64), b.astype(np.float64), np.result_type(a, b)


def pairwise_dot(a, b) -> np.ndarray:
    a, b, dtype = _pair(a, b)
    return (a * b).sum(axis=-1).astype(dtype)


def pairwise_cosine(a, b) -> np.ndarray:
    a, b, dtype = _pair(a, b)
    return (normalize(a) * normalize(b)).sum(axis=-1).astype(dtype)


def pairwise_euclidean(a, b) -> np.ndarray:
    """Negative Euclidean distance."""
    a, b, dtype = _pair(a, b)
    # the difference is taken in the input precision, as sentence-transformers does
    return -np.linalg.norm((a.astype(dtype) - b.astype(dtype)).astype(np.float64), axis=-1).astype(dtype)


def pairwise_manhattan(a, b) -> np.ndarray:
    """Negative Manhattan distance."""
    a, b, dtype = _pair(a, b)
    return -np.abs((a.astype(dtype) - b.astype(dtype)).astype(np.float64)).sum(axis=-1).astype(dtype)


PAIRWISE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": pairwise_cosine,
    "dot": pairwise_dot,
    "euclidean": pairwise_euclidean,
    "manhattan": pairwise_manhattan,
}


def pairwise_similarity(name: str, a, b) -> np.ndarray:
    """score[i] = sim(a[i], b[i]) for one of SIMILARITY_FUNCTIONS."""
    check_similarity_fn_names([name])
    return PAIRWISE[name](a, b)


def _matrix_inputs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.atleast_2d(as_float_array(a)), np.atleast_2d(as_float_array(b))
    dtype = np.result_type(a, b)
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)


def dot_matrix(a, b) -> np.ndarray:
    a, b = _matrix_inputs(a, b)
    return a @ b.T


def cosine_matrix(a, b) -> np.ndarray:
    a, b = _matrix_inputs(a, b)
    return normalize(a) @ normalize(b).T


def euclidean_matrix(a, b) -> np.ndarray:
    """Negative Euclidean distances, [len(a), len(b)]."""
    a, b = _matrix_inputs(a, b)
    sq = (a * a).sum(-1)[:, None] - 2 * (a @ b.T) + (b * b).sum(-1)[None, :]
    return -np.sqrt(np.maximum(sq, 0))


def manhattan_matrix(a, b) -> np.ndarray:
    """Negative Manhattan distances, [len(a), len(b)], computed in blocks of rows of ``a``."""
    a, b = _matrix_inputs(a, b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=a.dtype)
    rows = max(1, _MANHATTAN_BLOCK_ELEMENTS // max(1, b.shape[0] * a.shape[1]))
    for start in range(0, a.shape[0], rows):
        block = a[start:start + rows]
        out[start:start + rows] = -np.abs(block[:, None, :] - b[None, :, :]).sum(-1)
    return out


MATRIX: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": cosine_matrix,
    "dot": dot_matrix,
    "euclidean": euclidean_matrix,
    "manhattan": manhattan_matrix,
}


def similarity_matrix(name: str, a, b) -> np.ndarray:
    """score[i, j] = sim(a[i], b[j]) for one of SIMILARITY_FUNCTIONS."""
    check_similarity_fn_names([name])
    return MATRIX[name](a, b)
