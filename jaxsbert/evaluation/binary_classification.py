"""Binary classification of sentence pairs (similar = 1 / dissimilar = 0) by thresholding a similarity."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, _check_texts, encode_unique, resolve_fn_names
from jaxsbert.evaluation.similarity import check_similarity_fn_names, pairwise_similarity
from jaxsbert.evaluation.stats import average_precision, matthews_corrcoef
from jaxsbert.evaluation.thresholds import best_accuracy_threshold, best_f1_threshold

BINARY_METRICS = ("accuracy", "accuracy_threshold", "f1", "f1_threshold", "precision", "recall", "ap", "mcc")


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be a flat sequence of 0 / 1")
    return labels.astype(np.int64)


def binary_scores(fn: str, embeddings1, embeddings2) -> tuple[np.ndarray, bool]:
    """(scores, greater_is_better): similarities for cosine / dot, positive distances for euclidean /
    manhattan (so their thresholds are distances, as sentence-transformers reports them)."""
    sims = pairwise_similarity(fn, embeddings1, embeddings2)
    if fn in ("euclidean", "manhattan"):
        return -sims, False
    return sims, True


def binary_classification_metrics(embeddings1, embeddings2, labels, similarity_fn_names: Sequence[str] = ("cosine",)
                                  ) -> dict[str, float]:
    """{<fn>_<metric>} for metric in BINARY_METRICS per similarity function, plus max_<metric> over the
    functions when there are several (sentence-transformers' BinaryClassificationEvaluator keys, unprefixed).

    accuracy / f1 come with the best threshold found for each; precision / recall are those at the best-F1
    threshold, as is the MCC; ap is the average precision of the ranking by similarity.
    """
    names = check_similarity_fn_names(similarity_fn_names)
    labels = _check_labels(labels)
    if np.shape(embeddings1)[0] != labels.shape[0]:
        raise ValueError(f"{np.shape(embeddings1)[0]} embedding pairs but {labels.shape[0]} labels")
    per_fn: dict[str, dict[str, float]] = {}
    for fn in names:
        scores, greater_is_better = binary_scores(fn, embeddings1, embeddings2)
        acc, acc_threshold = best_accuracy_threshold(scores, labels, greater_is_better)
        f1, precision, recall, f1_threshold = best_f1_threshold(scores, labels, greater_is_better)
        predicted = scores >= f1_threshold if greater_is_better else scores <= f1_threshold
        per_fn[fn] = {
            "accuracy": acc, "accuracy_threshold": acc_threshold, "f1": f1, "f1_threshold": f1_threshold,
            "precision": precision, "recall": recall,
            "ap": average_precision(labels, scores if greater_is_better else -scores),
            "mcc": matthews_corrcoef(labels, predicted),
        }
    out = {f"{fn}_{m}": v for fn, values in per_fn.items() for m, v in values.items()}
    if len(names) > 1:
        out.update({f"max_{m}": max(per_fn[fn][m] for fn in names) for m in BINARY_METRICS})
    return out


def binary_primary_metric(similarity_fn_names: Sequence[str]) -> str:
    return "max_ap" if len(similarity_fn_names) > 1 else f"{similarity_fn_names[0]}_ap"


class BinaryClassificationEvaluator(Evaluator):
    """Accuracy / F1 / precision / recall (at the best thresholds), average precision and MCC of predicting
    the 0/1 label of each pair from its similarity.

    Keys: ``{name}_{fn}_{metric}`` for metric in accuracy, accuracy_threshold, f1, f1_threshold, precision,
    recall, ap, mcc, per similarity function (default: the encoder's ``similarity_fn_name``, else cosine), and
    ``{name}_max_{metric}`` for several. Primary: ``{fn}_ap``, or ``max_ap`` for several functions.
    Euclidean / Manhattan thresholds are distances (predict 1 when distance <= threshold).
    """

    def __init__(self, sentences1: Sequence[str], sentences2: Sequence[str], labels: Sequence[int],
                 name: str = "", batch_size: int = 32, truncate_dim: int | None = None,
                 similarity_fn_names: Sequence[str] | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        self.sentences1 = _check_texts(sentences1, "sentences1")
        self.sentences2 = _check_texts(sentences2, "sentences2")
        self.labels = _check_labels(list(labels))
        if not len(self.sentences1) == len(self.sentences2) == len(self.labels):
            raise ValueError(f"got {len(self.sentences1)} sentences1, {len(self.sentences2)} sentences2 and "
                             f"{len(self.labels)} labels")
        self.similarity_fn_names = check_similarity_fn_names(similarity_fn_names) if similarity_fn_names else None
        if self.similarity_fn_names:
            self.primary_metric = self.prefixed(binary_primary_metric(self.similarity_fn_names))

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        names = resolve_fn_names(self.similarity_fn_names, encoder)
        emb1, emb2 = encode_unique(encoder, [self.sentences1, self.sentences2], self.batch_size, self.truncate_dim)
        metrics = binary_classification_metrics(emb1, emb2, self.labels, names)
        return self._finish(metrics, binary_primary_metric(names))
