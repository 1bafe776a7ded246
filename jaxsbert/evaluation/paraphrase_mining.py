"""Paraphrase mining: find the most similar sentence pairs of a collection and score them against known duplicates.

As sentence-transformers' ``util.paraphrase_mining`` and ``ParaphraseMiningEvaluator``:

* mining: every sentence is compared with every other (``query_chunk_size`` sentences against
  ``corpus_chunk_size`` at a time, exact top-k per block); each sentence's ``top_k + 1`` best matches, itself
  left out, then its first ``top_k``, are candidate pairs (i, j), i < j, scored from the row that found them
  first; the ``max_pairs`` best distinct pairs are returned, best first;
* metrics, walking the pairs best first and stopping only between different scores (pairs with equal scores
  are taken together): ``average_precision`` (sum of precision x new duplicates at each stop, divided by the
  number of duplicate pairs), and the stop with the best F1 (the first one reaching it): ``f1``, ``precision``,
  ``recall`` and ``threshold`` (the mean of that stop's score and the next pair's).

Ties: within a sentence's matches, equal scores rank by ascending sentence index; at the ``max_pairs``
cut-off, among pairs with equal scores the pair found first (by query sentence, then rank) is kept.
sentence-transformers leaves the first to ``torch.topk`` (unspecified order) and keeps, at the cut-off, the
pairs its heap holds when the first one with that score is evicted (it evicts the smallest (score, i, j)).
Neither changes a metric unless a tie straddles a ``top_k`` or ``max_pairs`` cut-off: the metrics take equal
scores together.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, encode_unique, resolve_fn_names
from jaxsbert.evaluation.retrieval import top_k_search
from jaxsbert.evaluation.similarity import MATRIX, as_float_array, check_similarity_fn_names


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")


def paraphrase_mining_embeddings(embeddings, query_chunk_size: int = 5000, corpus_chunk_size: int = 100000,
                                 max_pairs: int = 500000, top_k: int = 100, similarity_fn_name: str = "cosine"
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mined pairs as (scores, i, j) arrays, best first, i < j (see the module docstring)."""
    _check_positive(query_chunk_size=query_chunk_size, corpus_chunk_size=corpus_chunk_size, max_pairs=max_pairs,
                    top_k=top_k)
    (name,) = check_similarity_fn_names([similarity_fn_name])
    emb = np.atleast_2d(as_float_array(embeddings))
    n = emb.shape[0]
    ranks = np.arange(n, dtype=np.int64)
    fns = {name: MATRIX[name]}
    # the pairs kept so far: score, (i, j) as i * n + j, and the order in which they were found (tie-break)
    kept_score = np.empty(0, dtype=emb.dtype)
    kept_key = np.empty(0, dtype=np.int64)
    kept_seq = np.empty(0, dtype=np.int64)
    seen = 0
    for q0 in range(0, n, query_chunk_size):
        queries = emb[q0:q0 + query_chunk_size]
        chunks = (emb[c0:c0 + corpus_chunk_size] for c0 in range(0, n, corpus_chunk_size))
        scores, pos = top_k_search(queries, chunks, fns, top_k + 1, ranks)[name]
        rows = np.arange(q0, q0 + queries.shape[0], dtype=np.int64)[:, None]
        others = pos != rows
        keep = others & (np.cumsum(others, axis=1) <= top_k)
        i = np.broadcast_to(rows, pos.shape)[keep]
        j = pos[keep]
        new_key = np.minimum(i, j) * n + np.maximum(i, j)
        new_seq = seen + np.arange(new_key.shape[0], dtype=np.int64)
        seen += new_key.shape[0]
        all_score = np.concatenate([kept_score, scores[keep]])
        all_key = np.concatenate([kept_key, new_key])
        all_seq = np.concatenate([kept_seq, new_seq])
        # one entry per pair: the first found (kept pairs come first and were found earlier)
        _, first = np.unique(all_key, return_index=True)
        order = first[np.lexsort((all_seq[first], -all_score[first].astype(np.float64)))][:max_pairs]
        kept_score, kept_key, kept_seq = all_score[order], all_key[order], all_seq[order]
    return kept_score, kept_key // max(n, 1), kept_key % max(n, 1)


def paraphrase_mining_metrics(scores, is_duplicate, total_duplicates: int) -> dict[str, float]:
    """average_precision / f1 / precision / recall / threshold (unprefixed) of mined pairs sorted best first;
    ``is_duplicate[p]`` says whether pair p is a known duplicate, of ``total_duplicates`` in all."""
    scores = np.asarray(scores)
    hits = np.asarray(is_duplicate, dtype=bool)
    out = {"average_precision": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": 0.0}
    if scores.shape[0] == 0:
        return out
    s64 = scores.astype(np.float64)
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))   # last pair of each run of equal scores
    n_correct = np.cumsum(hits)[ends]
    previous = np.concatenate([[0], n_correct[:-1]])
    new = n_correct > previous
    if not new.any():
        return out
    ends, n_correct, previous = ends[new], n_correct[new], previous[new]
    precision = n_correct / (ends + 1.0)
    recall = n_correct / total_duplicates if total_duplicates > 0 else np.zeros_like(precision)
    f1 = 2 * precision * recall / (precision + recall)
    average_precision = float(np.sum(precision * (n_correct - previous)))
    out["average_precision"] = average_precision / total_duplicates if total_duplicates > 0 else 0.0
    best = int(np.argmax(f1))
    if f1[best] > 0:
        end = int(ends[best])
        out.update(f1=float(f1[best]), precision=float(precision[best]), recall=float(recall[best]),
                   threshold=(s64[end] + s64[min(end + 1, len(s64) - 1)]) / 2)
    return out


def transitive_closure(graph: Mapping[Any, Mapping[Any, bool]]) -> dict[Any, dict[Any, bool]]:
    """sentence-transformers' ParaphraseMiningEvaluator.add_transitive_closure, on a copy: for each node (in
    key order) not yet in a closed group, every pair of the nodes reachable from it along duplicate edges
    becomes a duplicate, both ways."""
    out: dict[Any, dict[Any, bool]] = defaultdict(dict)
    for a, row in graph.items():
        out[a].update(row)
    visited: set = set()
    for a in list(out):
        if a in visited:
            continue
        group = [a]
        members = {a}
        queue = [b for b, dup in out.get(a, {}).items() if dup]
        while queue:
            node = queue.pop(0)
            if node not in members:
                members.add(node)
                group.append(node)
                queue.extend(b for b, dup in out.get(node, {}).items() if dup)
        if len(group) > 1:
            for x in range(len(group) - 1):
                for y in range(x + 1, len(group)):
                    out[group[x]][group[y]] = True
                    out[group[y]][group[x]] = True
            visited.update(group)
    return dict(out)


class ParaphraseMiningEvaluator(Evaluator):
    """sentence-transformers' ParaphraseMiningEvaluator (see the module docstring).

    Args:
        sentences_map: {sentence id: sentence}.
        duplicates_list: (id1, id2) duplicate pairs; pairs with an id not in ``sentences_map`` are ignored.
        duplicates_dict: {id1: {id2: True}} duplicates (read both ways: [id1][id2] or [id2][id1]).
        add_transitive_closure: also count a and c as duplicates when a-b and b-c are.
        query_chunk_size, corpus_chunk_size, max_pairs, top_k: the mining's (see the module docstring).
        similarity_fn_name: the score (cosine / dot / euclidean / manhattan); default: the encoder's
            ``similarity_fn_name``, else cosine (sentence-transformers uses ``model.similarity``).

    Keys ``{name}_average_precision`` (primary), ``{name}_f1``, ``{name}_precision``, ``{name}_recall``,
    ``{name}_threshold``.
    """

    def __init__(self, sentences_map: Mapping[Any, str], duplicates_list: Sequence[tuple] | None = None,
                 duplicates_dict: Mapping[Any, Mapping[Any, bool]] | None = None,
                 add_transitive_closure: bool = False, query_chunk_size: int = 5000,
                 corpus_chunk_size: int = 100000, max_pairs: int = 500000, top_k: int = 100, batch_size: int = 16,
                 name: str = "", truncate_dim: int | None = None, similarity_fn_name: str | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        _check_positive(query_chunk_size=query_chunk_size, corpus_chunk_size=corpus_chunk_size,
                        max_pairs=max_pairs, top_k=top_k)
        if similarity_fn_name is not None:
            check_similarity_fn_names([similarity_fn_name])
        self.ids = list(sentences_map)
        self.sentences = [sentences_map[i] for i in self.ids]
        if len(self.ids) < 2:
            raise ValueError(f"paraphrase mining needs at least 2 sentences, got {len(self.ids)}")
        self.query_chunk_size, self.corpus_chunk_size = int(query_chunk_size), int(corpus_chunk_size)
        self.max_pairs, self.top_k = int(max_pairs), int(top_k)
        self.similarity_fn_name = similarity_fn_name
        self.add_transitive_closure = add_transitive_closure
        graph: dict[Any, dict[Any, bool]] = defaultdict(dict)
        for a, row in (duplicates_dict or {}).items():
            graph[a].update(row)
        for a, b in duplicates_list or ():
            if a in sentences_map and b in sentences_map:
                graph[a][b] = True
                graph[b][a] = True
        if add_transitive_closure:
            graph = transitive_closure(graph)
        self.duplicates: set[frozenset] = {frozenset((a, b)) for a, row in graph.items() for b, dup in row.items()
                                           if dup and a in sentences_map and b in sentences_map}
        self.total_num_duplicates = len(self.duplicates)
        self.primary_metric = self.prefixed("average_precision")

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        (fn,) = resolve_fn_names([self.similarity_fn_name] if self.similarity_fn_name else None, encoder)
        (emb,) = encode_unique(encoder, [self.sentences], self.batch_size, self.truncate_dim)
        scores, i, j = paraphrase_mining_embeddings(emb, self.query_chunk_size, self.corpus_chunk_size,
                                                    self.max_pairs, self.top_k, fn)
        hits = [frozenset((self.ids[a], self.ids[b])) in self.duplicates for a, b in zip(i.tolist(), j.tolist())]
        metrics = paraphrase_mining_metrics(scores, hits, self.total_num_duplicates)
        return self._finish(metrics, "average_precision")

