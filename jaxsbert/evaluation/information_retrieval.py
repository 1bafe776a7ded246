"""Information-retrieval evaluation: rank a corpus for each query, score against the relevant documents."""
from __future__ import annotations

from typing import Collection, Iterator, Mapping, Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, encode_texts, encode_unique
from jaxsbert.evaluation.retrieval import (DEFAULT_ACCURACY_AT_K, DEFAULT_MAP_AT_K, DEFAULT_MRR_AT_K,
                                           DEFAULT_NDCG_AT_K, DEFAULT_PRECISION_RECALL_AT_K, ScoreFunctions,
                                           _retrieval_metrics, corpus_id_ranks, resolve_score_functions)
from jaxsbert.evaluation.similarity import SIMILARITY_FUNCTIONS


class InformationRetrievalEvaluator(Evaluator):
    """Exact retrieval over ``corpus`` for each query with a relevant document.

    Args:
        queries: {query id: text}. Queries absent from ``relevant_docs`` (or with no relevant doc) are skipped.
        corpus: {doc id: text}. Encoded ``corpus_chunk_size`` documents at a time, so memory stays bounded.
        relevant_docs: {query id: set of relevant doc ids}.
        score_functions: names among cosine / dot / euclidean / manhattan, or {name: name or callable(q, d) ->
            [n_q, n_d] scores}. Default: the encoder's ``similarity_fn_name``, else cosine.
        main_score_function: the function whose ndcg is the primary metric.

    Keys: ``{name}_{fn}_{metric}@{k}`` for metric in accuracy (k in accuracy_at_k), precision and recall
    (precision_recall_at_k), ndcg (ndcg_at_k), mrr (mrr_at_k), map (map_at_k). Ties in score rank by ascending
    doc id. Primary: ``{fn}_ndcg@{max(ndcg_at_k)}`` for ``main_score_function``, else for the function with the
    best ndcg at the first call (names in sorted order on equality); kept for later calls, as in
    sentence-transformers, so the checkpoint metric does not switch between evaluations.
    """

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str], relevant_docs: Mapping[str, Collection],
                 corpus_chunk_size: int = 50000, mrr_at_k: Sequence[int] = DEFAULT_MRR_AT_K,
                 ndcg_at_k: Sequence[int] = DEFAULT_NDCG_AT_K, accuracy_at_k: Sequence[int] = DEFAULT_ACCURACY_AT_K,
                 precision_recall_at_k: Sequence[int] = DEFAULT_PRECISION_RECALL_AT_K,
                 map_at_k: Sequence[int] = DEFAULT_MAP_AT_K, batch_size: int = 32, name: str = "",
                 truncate_dim: int | None = None, score_functions: ScoreFunctions | None = None,
                 main_score_function: str | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        if corpus_chunk_size < 1:
            raise ValueError(f"corpus_chunk_size must be >= 1, got {corpus_chunk_size}")
        self.queries_ids = [qid for qid in queries if len(relevant_docs.get(qid, ())) > 0]
        if not self.queries_ids:
            raise ValueError("no query has a relevant document")
        self.queries = [queries[qid] for qid in self.queries_ids]
        self.corpus_ids = list(corpus.keys())
        self.corpus = [corpus[cid] for cid in self.corpus_ids]
        self.relevant_docs = {qid: set(relevant_docs[qid]) for qid in self.queries_ids}
        self.corpus_chunk_size = corpus_chunk_size
        self.at_k = dict(mrr_at_k=list(mrr_at_k), ndcg_at_k=list(ndcg_at_k), accuracy_at_k=list(accuracy_at_k),
                         precision_recall_at_k=list(precision_recall_at_k), map_at_k=list(map_at_k))
        for key, ks in self.at_k.items():
            if not ks or any(int(k) < 1 for k in ks):
                raise ValueError(f"{key} needs at least one k, all >= 1; got {ks}")
        self.score_functions = None if score_functions is None else resolve_score_functions(score_functions)
        if main_score_function is not None:
            known = self.score_functions or SIMILARITY_FUNCTIONS
            if main_score_function not in known:
                raise ValueError(f"main_score_function {main_score_function!r} is not in {list(known)}")
        self.main_score_function = main_score_function
        self._ranks = corpus_id_ranks(self.corpus_ids)
        self._chosen_primary: tuple[tuple[str, ...], str] | None = None   # (score fn names, unprefixed key)
        if main_score_function is not None:
            self.primary_metric = self.prefixed(self._ndcg_key(main_score_function))

    def _ndcg_key(self, fn: str) -> str:
        return f"{fn}_ndcg@{max(self.at_k['ndcg_at_k'])}"

    def _corpus_chunks(self, encoder: Encoder) -> Iterator[np.ndarray]:
        for start in range(0, len(self.corpus), self.corpus_chunk_size):
            texts = self.corpus[start:start + self.corpus_chunk_size]
            yield encode_texts(encoder, texts, self.batch_size, self.truncate_dim)

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        score_functions = self.score_functions
        if score_functions is None:
            score_functions = resolve_score_functions([getattr(encoder, "similarity_fn_name", None) or "cosine"])
        if self.main_score_function is not None and self.main_score_function not in score_functions:
            raise ValueError(f"main_score_function {self.main_score_function!r} is not among the score functions "
                             f"{list(score_functions)}")
        (query_emb,) = encode_unique(encoder, [self.queries], self.batch_size, self.truncate_dim)
        relevant = [self.relevant_docs[qid] for qid in self.queries_ids]
        metrics = _retrieval_metrics(query_emb, self._corpus_chunks(encoder), self.corpus_ids, relevant,
                                     score_functions, self.at_k, ranks=self._ranks)
        names = tuple(sorted(score_functions))
        if self.main_score_function is not None:
            primary = self._ndcg_key(self.main_score_function)
        elif self._chosen_primary is not None and self._chosen_primary[0] == names:
            primary = self._chosen_primary[1]
        else:
            primary = self._ndcg_key(max(names, key=lambda fn: metrics[self._ndcg_key(fn)]))
            self._chosen_primary = (names, primary)
        return self._finish(metrics, primary)
