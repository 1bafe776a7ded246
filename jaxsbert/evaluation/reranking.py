"""Re-ranking evaluation: each query's own candidates (its positives and negatives) ranked by similarity.

As sentence-transformers' ``RerankingEvaluator``: for each sample ``{"query", "positive": [...], "negative": [...]}``
the candidates are scored against the query and

* ``mrr@k``: 1 / rank of the first positive among the top ``k`` (0 when none is there), candidates in
  decreasing score;
* ``ndcg@k``: scikit-learn's ``ndcg_score([relevance], [scores], k=k)`` (tied scores share their
  discounts, averaged);
* ``map``: scikit-learn's ``average_precision_score(relevance, scores)`` (one precision per distinct score),

each averaged over the samples that have at least one positive and one negative. Keys ``{name}_map``,
``{name}_mrr@{k}``, ``{name}_ndcg@{k}``; primary: ``ndcg@{k}``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxsbert.evaluation.base import Evaluator, encode_unique, resolve_fn_names
from jaxsbert.evaluation.similarity import similarity_matrix
from jaxsbert.evaluation.stats import average_precision     # scikit-learn's average_precision_score


def _as_list(x) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def reciprocal_rank(relevant: np.ndarray, scores: np.ndarray, k: int) -> float:
    """1 / rank of the first relevant candidate among the ``k`` best scores (stable order on ties), else 0."""
    order = np.argsort(-scores, kind="stable")[:k]
    hits = np.flatnonzero(relevant[order])
    return 1.0 / (hits[0] + 1) if hits.size else 0.0


def ndcg(relevant: np.ndarray, scores: np.ndarray, k: int) -> float:
    """scikit-learn's ``ndcg_score([relevant], [scores], k=k)``: tied scores get the mean of their discounts."""
    n = len(scores)
    discount = 1.0 / np.log2(np.arange(n) + 2.0)
    discount[k:] = 0.0
    cumulative = np.cumsum(discount)
    _, group, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    gains = np.zeros(len(counts))
    np.add.at(gains, group, relevant.astype(np.float64))
    ends = np.cumsum(counts) - 1
    group_discounts = np.diff(cumulative[ends], prepend=0.0)
    dcg = float(np.sum(gains / counts * group_discounts))
    ideal = float(np.sum(np.sort(relevant.astype(np.float64))[::-1] * discount))
    return dcg / ideal if ideal > 0 else 0.0


def reranking_metrics(query_embeddings: np.ndarray, candidates: Sequence[np.ndarray], n_positives: Sequence[int],
                      at_k: int = 10, similarity_fn_name: str = "cosine") -> dict[str, float]:
    """The metrics (unprefixed) from embeddings: query i's candidates ``candidates[i]`` [n_i, dim], of
    which the first ``n_positives[i]`` are the positives."""
    mrr, ndcgs, aps = [], [], []
    for q, docs, n_pos in zip(query_embeddings, candidates, n_positives):
        scores = similarity_matrix(similarity_fn_name, q[None], docs)[0].astype(np.float64)
        relevant = np.arange(len(docs)) < n_pos
        mrr.append(reciprocal_rank(relevant, scores, at_k))
        ndcgs.append(ndcg(relevant, scores, at_k))
        aps.append(average_precision(relevant, scores))
    return {"map": float(np.mean(aps)), f"mrr@{at_k}": float(np.mean(mrr)), f"ndcg@{at_k}": float(np.mean(ndcgs))}


class RerankingEvaluator(Evaluator):
    """sentence-transformers' RerankingEvaluator (see the module docstring).

    Args:
        samples: a list (or a dict's values) of ``{"query": str, "positive": str | [str], "negative": str | [str]}``;
            samples without a positive or without a negative are left out.
        at_k: the cut-off of MRR and NDCG (10).
        similarity_fn_name: cosine / dot / euclidean / manhattan; default: the encoder's ``similarity_fn_name``,
            else cosine (as ``model.similarity``).
    """

    def __init__(self, samples: Sequence[Mapping] | Mapping, at_k: int = 10, name: str = "", batch_size: int = 64,
                 truncate_dim: int | None = None, similarity_fn_name: str | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        if isinstance(samples, Mapping):
            samples = list(samples.values())
        if int(at_k) < 1:
            raise ValueError(f"at_k must be >= 1, got {at_k}")
        self.at_k = int(at_k)
        self.samples = []
        for i, sample in enumerate(samples):
            missing = {"query", "positive", "negative"} - set(sample)
            if missing:
                raise ValueError(f"reranking sample {i} lacks {sorted(missing)} (has {sorted(sample)})")
            positive, negative = _as_list(sample["positive"]), _as_list(sample["negative"])
            if positive and negative:
                self.samples.append({"query": sample["query"], "positive": positive, "negative": negative})
        if not self.samples:
            raise ValueError("no reranking sample has both a positive and a negative")
        self.similarity_fn_name = similarity_fn_name
        self.primary_metric = self.prefixed(f"ndcg@{self.at_k}")

    def __call__(self, encoder) -> dict[str, float]:
        (fn,) = resolve_fn_names([self.similarity_fn_name] if self.similarity_fn_name else None, encoder)
        queries = [s["query"] for s in self.samples]
        docs = [d for s in self.samples for d in s["positive"] + s["negative"]]
        query_emb, doc_emb = encode_unique(encoder, [queries, docs], self.batch_size, self.truncate_dim)
        sizes = [len(s["positive"]) + len(s["negative"]) for s in self.samples]
        candidates = np.split(doc_emb, np.cumsum(sizes)[:-1])
        metrics = reranking_metrics(query_emb, candidates, [len(s["positive"]) for s in self.samples], self.at_k, fn)
        return self._finish(metrics, f"ndcg@{self.at_k}")
