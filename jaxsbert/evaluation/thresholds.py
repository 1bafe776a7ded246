"""Best decision thresholds for binary classification from similarity scores.

The search follows sentence-transformers' BinaryClassificationEvaluator: pairs are ranked from most to least
similar, the cut is only ever placed between two *different* score values (tied scores always fall on the
same side), and the reported threshold is the midpoint between the last score kept and the next one
(computed in the scores' own dtype; if that midpoint rounds onto the next score, the last kept score is used).
The first best cut in rank order wins.
"""
from __future__ import annotations

import numpy as np


def _ranked(scores, labels, greater_is_better: bool):
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels need the same length, got {scores.size} and {labels.size}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    order = np.argsort(-scores if greater_is_better else scores, kind="stable")
    s = scores[order]
    y = labels[order].astype(bool)
    group_end = np.append(s[1:] != s[:-1], True) if s.size else np.zeros(0, dtype=bool)
    return s, y, group_end


def _cut_threshold(s: np.ndarray, i: int):
    """Threshold for keeping ranked scores s[:i+1] on the "similar" side."""
    if i == s.size - 1:
        return s[i]
    threshold = (s[i] + s[i + 1]) / 2
    if threshold == s[i + 1]:
        threshold = s[i]
    return threshold


def best_accuracy_threshold(scores, labels, greater_is_better: bool = True) -> tuple[float, float]:
    """(best accuracy, threshold). Predict "similar" for score >= threshold (<= when not greater_is_better).

    The starting point is "everything dissimilar" (accuracy = fraction of negatives), with a threshold just
    beyond the most similar score; a cut replaces it only when strictly more accurate.
    """
    s, y, group_end = _ranked(scores, labels, greater_is_better)
    n = s.size
    if n == 0:
        return 0.0, -1.0
    n_neg = int((~y).sum())
    correct = np.cumsum(y) + (n_neg - np.cumsum(~y))     # positives kept + negatives not yet kept
    ends = np.flatnonzero(group_end)
    best = ends[np.argmax(correct[ends])]
    if correct[best] > n_neg:
        return float(correct[best] / n), float(_cut_threshold(s, int(best)))
    score_dtype = np.result_type(s.dtype, np.float16)
    towards = np.asarray(np.inf if greater_is_better else -np.inf, dtype=score_dtype)
    return n_neg / n, float(np.nextafter(s[0].astype(score_dtype), towards))


def best_f1_threshold(scores, labels, greater_is_better: bool = True) -> tuple[float, float, float, float]:
    """(best F1, its precision, its recall, threshold); all 0.0 when no cut keeps a positive."""
    s, y, group_end = _ranked(scores, labels, greater_is_better)
    n_pos = int(y.sum())
    kept_pos = np.cumsum(y)
    candidates = np.flatnonzero(group_end & (kept_pos > 0))
    if candidates.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    precision = kept_pos[candidates] / (candidates + 1)
    recall = kept_pos[candidates] / n_pos
    f1 = 2 * precision * recall / (precision + recall)
    j = int(np.argmax(f1))
    return float(f1[j]), float(precision[j]), float(recall[j]), float(_cut_threshold(s, int(candidates[j])))
