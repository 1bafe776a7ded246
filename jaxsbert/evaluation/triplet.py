"""Triplet accuracy: how often sim(anchor, positive) > sim(anchor, negative) + margin."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, _check_texts, encode_unique, resolve_fn_names
from jaxsbert.evaluation.similarity import SIMILARITY_FUNCTIONS, check_similarity_fn_names, pairwise_similarity


def resolve_margins(margin: float | Mapping[str, float] | None) -> dict[str, float]:
    """Per-function margins: None -> 0, a number -> that for every function, a dict -> given ones, others 0."""
    if margin is None:
        return {fn: 0.0 for fn in SIMILARITY_FUNCTIONS}
    if isinstance(margin, Mapping):
        unknown = sorted(set(margin) - set(SIMILARITY_FUNCTIONS))
        if unknown:
            raise ValueError(f"margin got unexpected keys {unknown}, expected keys in {list(SIMILARITY_FUNCTIONS)}")
        return {fn: float(margin.get(fn, 0.0)) for fn in SIMILARITY_FUNCTIONS}
    if isinstance(margin, (int, float, np.number)) and not isinstance(margin, bool):
        return {fn: float(margin) for fn in SIMILARITY_FUNCTIONS}
    raise TypeError(f"margin must be a number or a dict of numbers, got {type(margin).__name__}")


def triplet_metrics(anchors, positives, negatives, similarity_fn_names: Sequence[str] = ("cosine",),
                    margin: float | Mapping[str, float] | None = None) -> dict[str, float]:
    """{<fn>_accuracy} per similarity function (+ max_accuracy for several), sentence-transformers' keys.

    A triplet counts as correct when sim(a, p) > sim(a, n) + margin[fn] (strictly; ties are wrong). Scores,
    the margin sum and the mean are float32, as sentence-transformers computes them.
    """
    names = check_similarity_fn_names(similarity_fn_names)
    margins = resolve_margins(margin)
    out: dict[str, float] = {}
    for fn in names:
        pos = pairwise_similarity(fn, anchors, positives)
        neg = pairwise_similarity(fn, anchors, negatives)
        correct = pos > neg + np.asarray(margins[fn], dtype=neg.dtype)
        out[f"{fn}_accuracy"] = float(np.float32(correct.sum()) / np.float32(correct.size)) if correct.size \
            else float("nan")
    if len(names) > 1:
        out["max_accuracy"] = max(out.values())
    return out


def triplet_primary_metric(similarity_fn_names: Sequence[str], main_similarity_function: str | None = None) -> str:
    if main_similarity_function:
        return f"{main_similarity_function}_accuracy"
    return "max_accuracy" if len(similarity_fn_names) > 1 else f"{similarity_fn_names[0]}_accuracy"


class TripletEvaluator(Evaluator):
    """Accuracy of ranking the positive above the negative for each (anchor, positive, negative).

    Keys: ``{name}_{fn}_accuracy`` per similarity function (default: the encoder's ``similarity_fn_name``,
    else cosine) and ``{name}_max_accuracy`` for several. Primary: ``{main_similarity_function}_accuracy`` if
    given, else ``max_accuracy`` (several) or ``{fn}_accuracy``. ``margin``: a number or {fn: number}; for the
    distances it applies to the negated distance, i.e. d(a, n) must exceed d(a, p) by more than the margin.
    """

    def __init__(self, anchors: Sequence[str], positives: Sequence[str], negatives: Sequence[str],
                 main_similarity_function: str | None = None, margin: float | Mapping[str, float] | None = None,
                 name: str = "", batch_size: int = 16, truncate_dim: int | None = None,
                 similarity_fn_names: Sequence[str] | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        self.anchors = _check_texts(anchors, "anchors")
        self.positives = _check_texts(positives, "positives")
        self.negatives = _check_texts(negatives, "negatives")
        if not len(self.anchors) == len(self.positives) == len(self.negatives):
            raise ValueError(f"got {len(self.anchors)} anchors, {len(self.positives)} positives and "
                             f"{len(self.negatives)} negatives")
        if main_similarity_function is not None:
            check_similarity_fn_names([main_similarity_function])
            similarity_fn_names = list(similarity_fn_names or [main_similarity_function])
            if main_similarity_function not in similarity_fn_names:
                raise ValueError(f"main_similarity_function {main_similarity_function!r} is not in "
                                 f"{similarity_fn_names}")
        self.main_similarity_function = main_similarity_function
        self.similarity_fn_names = check_similarity_fn_names(similarity_fn_names) if similarity_fn_names else None
        self.margin = resolve_margins(margin)
        if self.similarity_fn_names:
            self.primary_metric = self.prefixed(
                triplet_primary_metric(self.similarity_fn_names, main_similarity_function))

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        names = resolve_fn_names(self.similarity_fn_names, encoder)
        a, p, n = encode_unique(encoder, [self.anchors, self.positives, self.negatives], self.batch_size,
                                self.truncate_dim)
        metrics = triplet_metrics(a, p, n, names, self.margin)
        return self._finish(metrics, triplet_primary_metric(names, self.main_similarity_function))
