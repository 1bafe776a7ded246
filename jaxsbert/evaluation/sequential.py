"""Run several evaluators one after another and combine their primary scores."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

from jaxsbert.evaluation.base import Encoder, Evaluator


def _last(scores: Sequence[float]) -> float:
    return scores[-1]


class SequentialEvaluator(Evaluator):
    """Calls each evaluator with the encoder and merges their metric dicts (later keys win on a clash).

    Adds ``sequential_score`` = ``main_score_function([primary score of each evaluator])`` (default: the last
    one; pass e.g. ``numpy.mean`` to average), which is the primary metric. An evaluator without a
    ``primary_metric`` contributes its first metric.
    """

    def __init__(self, evaluators: Iterable[Evaluator],
                 main_score_function: Callable[[list[float]], float] = _last):
        super().__init__()
        self.evaluators = list(evaluators)
        self.main_score_function = main_score_function
        self.primary_metric = "sequential_score"

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        results: dict[str, float] = {}
        scores: list[float] = []
        for i, evaluator in enumerate(self.evaluators):
            metrics = evaluator(encoder)
            if not isinstance(metrics, dict):
                scores.append(float(metrics))
                metrics = {f"evaluator_{i}": float(metrics)}
            else:
                key = getattr(evaluator, "primary_metric", None)
                scores.append(metrics[key] if key is not None else next(iter(metrics.values())))
            results.update(metrics)
        results["sequential_score"] = float(self.main_score_function(scores)) if scores else 0.0
        return results
