"""Pearson / Spearman correlation between gold scores and embedding similarities (STS-style evaluation)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, _check_texts, encode_unique, resolve_fn_names
from jaxsbert.evaluation.similarity import check_similarity_fn_names, pairwise_similarity
from jaxsbert.evaluation.stats import pearson, spearman


def similarity_metrics(embeddings1, embeddings2, scores, similarity_fn_names: Sequence[str] = ("cosine",)
                       ) -> dict[str, float]:
    """{pearson_<fn>, spearman_<fn>} per similarity function, plus pearson_max / spearman_max when there are
    several (sentence-transformers' EmbeddingSimilarityEvaluator keys, unprefixed)."""
    names = check_similarity_fn_names(similarity_fn_names)
    gold = np.asarray(scores, dtype=np.float64)
    if np.shape(embeddings1)[0] != gold.shape[0]:
        raise ValueError(f"{np.shape(embeddings1)[0]} embedding pairs but {gold.shape[0]} scores")
    out: dict[str, float] = {}
    for fn in names:
        sims = pairwise_similarity(fn, embeddings1, embeddings2)
        out[f"pearson_{fn}"] = pearson(gold, sims)
        out[f"spearman_{fn}"] = spearman(gold, sims)
    if len(names) > 1:
        out["pearson_max"] = max(out[f"pearson_{fn}"] for fn in names)
        out["spearman_max"] = max(out[f"spearman_{fn}"] for fn in names)
    return out


def similarity_primary_metric(similarity_fn_names: Sequence[str], main_similarity: str | None = None) -> str:
    if main_similarity:
        return f"spearman_{main_similarity}"
    return "spearman_max" if len(similarity_fn_names) > 1 else f"spearman_{similarity_fn_names[0]}"


class EmbeddingSimilarityEvaluator(Evaluator):
    """Correlation of gold similarity scores with sim(embedding(s1), embedding(s2)).

    Keys: ``{name}_pearson_{fn}``, ``{name}_spearman_{fn}`` for each similarity function (default: the
    encoder's ``similarity_fn_name``, else cosine), plus ``_pearson_max`` / ``_spearman_max`` for several.
    Primary: ``spearman_{main_similarity}`` if given, else ``spearman_max`` (several) or ``spearman_{fn}``.
    Every distinct sentence is encoded once.
    """

    def __init__(self, sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float],
                 batch_size: int = 16, main_similarity: str | None = None,
                 similarity_fn_names: Sequence[str] | None = None, name: str = "", truncate_dim: int | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        self.sentences1 = _check_texts(sentences1, "sentences1")
        self.sentences2 = _check_texts(sentences2, "sentences2")
        self.scores = [float(s) for s in scores]
        if not len(self.sentences1) == len(self.sentences2) == len(self.scores):
            raise ValueError(f"got {len(self.sentences1)} sentences1, {len(self.sentences2)} sentences2 and "
                             f"{len(self.scores)} scores")
        if main_similarity is not None:
            check_similarity_fn_names([main_similarity])
            similarity_fn_names = list(similarity_fn_names or [main_similarity])
            if main_similarity not in similarity_fn_names:
                raise ValueError(f"main_similarity {main_similarity!r} is not in {similarity_fn_names}")
        self.main_similarity = main_similarity
        self.similarity_fn_names = check_similarity_fn_names(similarity_fn_names) if similarity_fn_names else None
        if self.similarity_fn_names:
            self.primary_metric = self.prefixed(similarity_primary_metric(self.similarity_fn_names, main_similarity))

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        names = resolve_fn_names(self.similarity_fn_names, encoder)
        emb1, emb2 = encode_unique(encoder, [self.sentences1, self.sentences2], self.batch_size, self.truncate_dim)
        metrics = similarity_metrics(emb1, emb2, self.scores, names)
        return self._finish(metrics, similarity_primary_metric(names, self.main_similarity))
