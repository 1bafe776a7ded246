"""Exact top-k retrieval over a chunked corpus, and ranking metrics (sentence-transformers' definitions).

Ranking order is (descending score, ascending corpus id): ties are broken by corpus id, never by position or
chunking, so results do not depend on ``corpus_chunk_size``. Memory is bounded by one score block of at most
``max(corpus_chunk_size, _BLOCK_ELEMENTS)`` floats plus the running top-k per query.
"""
from __future__ import annotations

from typing import Callable, Collection, Iterable, Mapping, Sequence, Union

import numpy as np

from jaxsbert.evaluation.similarity import MATRIX, SIMILARITY_FUNCTIONS, as_float_array

ScoreFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
ScoreFunctions = Union[Sequence[str], Mapping[str, Union[str, ScoreFunction]]]

DEFAULT_MRR_AT_K = (10,)
DEFAULT_NDCG_AT_K = (10,)
DEFAULT_ACCURACY_AT_K = (1, 3, 5, 10)
DEFAULT_PRECISION_RECALL_AT_K = (1, 3, 5, 10)
DEFAULT_MAP_AT_K = (100,)

# Elements of one [query block, corpus chunk] score matrix (64 MiB of float32).
_BLOCK_ELEMENTS = 1 << 24


def resolve_score_functions(score_functions: ScoreFunctions) -> dict[str, ScoreFunction]:
    """Names (from SIMILARITY_FUNCTIONS) or {name: name-or-callable(queries, docs) -> [n_q, n_docs] scores}."""
    if isinstance(score_functions, str):
        score_functions = [score_functions]
    items = score_functions.items() if isinstance(score_functions, Mapping) else ((n, n) for n in score_functions)
    out = {}
    for name, fn in items:
        if isinstance(fn, str):
            if fn not in SIMILARITY_FUNCTIONS:
                raise ValueError(f"unknown score function {fn!r}; expected one of {list(SIMILARITY_FUNCTIONS)} "
                                 "or a callable")
            fn = MATRIX[fn]
        elif not callable(fn):
            raise TypeError(f"score function {name!r} must be a name or a callable, got {type(fn).__name__}")
        out[str(name)] = fn
    if not out:
        raise ValueError("at least one score function is needed")
    return out


def corpus_id_ranks(corpus_ids: Sequence) -> np.ndarray:
    """rank[i] = position of corpus_ids[i] in ascending id order (the tie-break key)."""
    order = sorted(range(len(corpus_ids)), key=corpus_ids.__getitem__)
    ranks = np.empty(len(corpus_ids), dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(corpus_ids), dtype=np.int64)
    return ranks


def _chunk_top_k(scores: np.ndarray, ranks: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best entries per row of ``scores`` under (-score, rank) order (unsorted)."""
    n = scores.shape[1]
    if k >= n:
        return np.broadcast_to(np.arange(n), scores.shape).copy()
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    threshold = np.take_along_axis(scores, idx, axis=1).min(axis=1, keepdims=True)
    # argpartition picks among scores tied with the k-th best arbitrarily: redo those rows exactly.
    for row in np.flatnonzero((scores >= threshold).sum(axis=1) > k):
        candidates = np.flatnonzero(scores[row] >= threshold[row])
        order = np.lexsort((ranks[candidates], -scores[row, candidates]))
        idx[row] = candidates[order[:k]]
    return idx


def top_k_search(query_embeddings: np.ndarray, corpus_chunks: Iterable[np.ndarray],
                 score_functions: Mapping[str, ScoreFunction], k: int,
                 ranks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact top-k for every query and score function, consuming the corpus chunk by chunk.

    ``ranks[j]`` is the tie-break key of corpus entry j (lower wins). Returns {name: (scores [n_q, K],
    corpus positions [n_q, K])}, each row sorted best first, with K = min(k, corpus size).
    """
    query_embeddings = np.atleast_2d(as_float_array(query_embeddings))
    n_q = query_embeddings.shape[0]
    best = {name: (np.empty((n_q, 0), np.float32), np.empty((n_q, 0), np.int64)) for name in score_functions}
    start = 0
    for chunk in corpus_chunks:
        chunk = np.atleast_2d(as_float_array(chunk))
        n_c = chunk.shape[0]
        if n_c == 0:
            continue
        chunk_ranks = ranks[start:start + n_c]
        if chunk_ranks.shape[0] != n_c:
            raise ValueError("the corpus chunks hold more rows than there are corpus ids")
        q_block = max(1, _BLOCK_ELEMENTS // n_c)
        for name, fn in score_functions.items():
            kept_scores, kept_pos = best[name]
            new_scores, new_pos = [], []
            for q0 in range(0, n_q, q_block):
                scores = np.asarray(fn(query_embeddings[q0:q0 + q_block], chunk))
                if scores.shape != (min(q_block, n_q - q0), n_c):
                    raise ValueError(f"score function {name!r} returned shape {scores.shape}")
                idx = _chunk_top_k(scores, chunk_ranks, k)
                new_scores.append(np.take_along_axis(scores, idx, axis=1))
                new_pos.append(idx + start)
            all_scores = np.concatenate([kept_scores, *new_scores], axis=1)
            all_pos = np.concatenate([kept_pos, *new_pos], axis=1)
            order = np.lexsort((ranks[all_pos], -all_scores), axis=1)[:, :k]
            best[name] = (np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_pos, order, axis=1))
        start += n_c
    if start != ranks.shape[0]:
        raise ValueError(f"the corpus chunks hold {start} rows, but there are {ranks.shape[0]} corpus ids")
    return best


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, *,
                    mrr_at_k: Sequence[int] = DEFAULT_MRR_AT_K,
                    ndcg_at_k: Sequence[int] = DEFAULT_NDCG_AT_K,
                    accuracy_at_k: Sequence[int] = DEFAULT_ACCURACY_AT_K,
                    precision_recall_at_k: Sequence[int] = DEFAULT_PRECISION_RECALL_AT_K,
                    map_at_k: Sequence[int] = DEFAULT_MAP_AT_K) -> dict[str, float]:
    """Mean IR metrics from ``hits[q, r]`` (is the r-th ranked document relevant to query q) and the number of
    relevant documents per query (which may count documents missing from the corpus).

    Keys: accuracy@k, precision@k, recall@k, ndcg@k (binary gain, log2 discount), mrr@k, map@k
    (sum of precision at each relevant hit within k / min(k, n_relevant)).
    """
    hits = np.asarray(hits, dtype=bool)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    n_q, n_ranked = hits.shape
    if n_q == 0:
        raise ValueError("no queries to evaluate")
    if (n_relevant <= 0).any():
        raise ValueError("every query needs at least one relevant document")
    all_k = [*mrr_at_k, *ndcg_at_k, *accuracy_at_k, *precision_recall_at_k, *map_at_k]
    if any(int(k) < 1 for k in all_k):
        raise ValueError("every k must be >= 1")
    ranks_1 = np.arange(1, n_ranked + 1, dtype=np.float64)
    discount = np.log2(np.arange(max(all_k), dtype=np.float64) + 2)
    ideal_dcg = np.cumsum(1.0 / discount)
    cum_hits = np.cumsum(hits, axis=1)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), n_ranked)

    out: dict[str, float] = {}
    for k in accuracy_at_k:
        out[f"accuracy@{k}"] = float(hits[:, :k].any(axis=1).mean())
    correct = {k: hits[:, :k].sum(axis=1) for k in precision_recall_at_k}
    for k in precision_recall_at_k:
        out[f"precision@{k}"] = float(np.mean(correct[k] / k))
    for k in precision_recall_at_k:
        out[f"recall@{k}"] = float(np.mean(correct[k] / n_relevant))
    for k in ndcg_at_k:
        m = min(k, n_ranked)
        dcg = (hits[:, :m] / discount[:m]).sum(axis=1)
        idcg = ideal_dcg[np.minimum(n_relevant, k).astype(np.int64) - 1]
        out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
    for k in mrr_at_k:
        rr = np.where(first_hit < k, 1.0 / (first_hit + 1.0), 0.0)
        out[f"mrr@{k}"] = float(rr.sum() / n_q)
    for k in map_at_k:
        m = min(k, n_ranked)
        precision_at_hits = np.where(hits[:, :m], cum_hits[:, :m] / ranks_1[:m], 0.0).sum(axis=1)
        out[f"map@{k}"] = float(np.mean(precision_at_hits / np.minimum(k, n_relevant)))
    return out


def information_retrieval_metrics(
        query_embeddings, corpus_embeddings, relevant_docs: Sequence[Collection], corpus_ids: Sequence | None = None,
        score_functions: ScoreFunctions = ("cosine",), *, corpus_chunk_size: int = 50000,
        mrr_at_k: Sequence[int] = DEFAULT_MRR_AT_K, ndcg_at_k: Sequence[int] = DEFAULT_NDCG_AT_K,
        accuracy_at_k: Sequence[int] = DEFAULT_ACCURACY_AT_K,
        precision_recall_at_k: Sequence[int] = DEFAULT_PRECISION_RECALL_AT_K,
        map_at_k: Sequence[int] = DEFAULT_MAP_AT_K) -> dict[str, float]:
    """IR metrics on precomputed embeddings; keys ``{score_fn}_{metric}@{k}`` as InformationRetrievalEvaluator.

    ``relevant_docs[i]`` holds the ids (from ``corpus_ids``; row positions when ``corpus_ids`` is None) of the
    documents relevant to query i. Queries without a relevant document are skipped, as sentence-transformers
    does. ``corpus_embeddings`` is an array (or list of rows), or an iterator of row chunks (e.g. encoded
    lazily), in which case ``corpus_ids`` gives the corpus size.
    """
    query_embeddings = np.atleast_2d(as_float_array(query_embeddings))
    if len(relevant_docs) != query_embeddings.shape[0]:
        raise ValueError(f"{query_embeddings.shape[0]} query embeddings but {len(relevant_docs)} relevant_docs")
    if isinstance(corpus_embeddings, (list, tuple)) or hasattr(corpus_embeddings, "__array__"):
        corpus_embeddings = np.atleast_2d(as_float_array(corpus_embeddings))
        n_corpus = corpus_embeddings.shape[0]
        chunks = (corpus_embeddings[i:i + corpus_chunk_size] for i in range(0, n_corpus, corpus_chunk_size))
    else:
        if corpus_ids is None:
            raise ValueError("corpus_ids are needed when the corpus embeddings come as chunks")
        n_corpus, chunks = len(corpus_ids), corpus_embeddings
    if corpus_ids is None:
        corpus_ids = list(range(n_corpus))
    elif len(corpus_ids) != n_corpus:
        raise ValueError(f"{len(corpus_ids)} corpus ids but {n_corpus} corpus embeddings")
    keep = [i for i, rel in enumerate(relevant_docs) if len(rel) > 0]
    relevant = [set(relevant_docs[i]) for i in keep]
    return _retrieval_metrics(query_embeddings[keep], chunks, corpus_ids, relevant,
                              resolve_score_functions(score_functions),
                              dict(mrr_at_k=mrr_at_k, ndcg_at_k=ndcg_at_k, accuracy_at_k=accuracy_at_k,
                                   precision_recall_at_k=precision_recall_at_k, map_at_k=map_at_k))


def _retrieval_metrics(query_embeddings: np.ndarray, chunks: Iterable[np.ndarray], corpus_ids: Sequence,
                       relevant: list[set], score_functions: dict[str, ScoreFunction],
                       at_k: dict[str, Sequence[int]], ranks: np.ndarray | None = None) -> dict[str, float]:
    if not relevant:
        raise ValueError("no query has a relevant document")
    max_k = max(max(ks) for ks in at_k.values())
    if ranks is None:
        ranks = corpus_id_ranks(corpus_ids)
    found = top_k_search(query_embeddings, chunks, score_functions, max_k, ranks)
    n_relevant = np.array([len(r) for r in relevant])
    out: dict[str, float] = {}
    for name, (_, positions) in found.items():
        hits = np.array([[corpus_ids[p] in rel for p in row] for row, rel in zip(positions.tolist(), relevant)],
                        dtype=bool).reshape(positions.shape)
        for key, value in ranking_metrics(hits, n_relevant, **at_k).items():
            out[f"{name}_{key}"] = value
    return out
