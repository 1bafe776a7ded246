"""Correlation and classification statistics in numpy (the definitions scipy / scikit-learn use).

Degenerate inputs give nan (correlations of a constant or too-short vector) or 0.0 (average precision
without positives, MCC with an empty row or column of the confusion matrix), as those libraries return.
"""
from __future__ import annotations

import numpy as np


def _vectors(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y need the same length, got {x.shape[0]} and {y.shape[0]}")
    return x, y


def pearson(x, y) -> float:
    """Pearson correlation coefficient (nan for fewer than 2 points, a constant input or nan values)."""
    x, y = _vectors(x, y)
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    if (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    xm = x - x.mean()
    ym = y - y.mean()
    r = np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym))
    return float(np.clip(r, -1.0, 1.0))


def rankdata(x) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span."""
    x = np.asarray(x).ravel()
    n = x.size
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = xs[1:] != xs[:-1]
    group = np.cumsum(new_group) - 1                       # 0-based group of each sorted position
    bounds = np.append(np.flatnonzero(new_group), n)        # group g spans sorted positions [bounds[g], bounds[g+1])
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = 0.5 * (bounds[group] + 1 + bounds[group + 1])
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson on average ranks)."""
    x, y = _vectors(x, y)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return pearson(rankdata(x), rankdata(y))


def average_precision(labels, scores) -> float:
    """Average precision of ranking by descending score: sum over distinct score values of
    (recall gained at that value) x (precision at that value). 0.0 when there is no positive."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores need the same length, got {labels.size} and {scores.size}")
    n_pos = int(labels.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_group = np.append(s[1:] != s[:-1], True)
    tp = np.cumsum(y)[last_of_group].astype(np.float64)
    predicted = (np.flatnonzero(last_of_group) + 1).astype(np.float64)
    precision = tp / predicted
    recall_gain = np.diff(np.concatenate([[0.0], tp / n_pos]))
    return float(max(0.0, np.sum(recall_gain * precision)))


def matthews_corrcoef(labels, predicted) -> float:
    """Matthews correlation of two binary vectors (0.0 when the denominator is 0)."""
    t = np.asarray(labels).ravel().astype(bool)
    p = np.asarray(predicted).ravel().astype(bool)
    tp = float(np.sum(t & p))
    tn = float(np.sum(~t & ~p))
    fp = float(np.sum(~t & p))
    fn = float(np.sum(t & ~p))
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0:
        return 0.0
    return float((tp * tn - fp * fn) / np.sqrt(denominator))
