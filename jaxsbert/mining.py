"""Hard-negative mining: sentence-transformers' ``util.mine_hard_negatives`` with a jaxsbert encoder.

For each distinct anchor of an (anchor, positive) dataset, the corpus (the positives, plus an optional
corpus) is ranked by the similarity of the normalised embeddings, exactly (no approximate index): the
top ``range_max + max positives + 1`` candidates by ``jax.lax.top_k`` over blocks of anchors, one
compiled program. From these candidates, as sentence-transformers does, in order:

1. the anchor itself and the anchor's positives are removed (``include_positives`` keeps the positives);
2. ``absolute_margin``: candidates with ``score + absolute_margin > min positive score`` are removed;
   ``relative_margin``: those with ``score > min positive score - |min positive score| * relative_margin``;
3. ``max_score`` / ``min_score``: candidates above / below are removed;
4. the ``range_max`` best remaining are kept, the first ``range_min`` of them dropped, and ``num_negatives``
   taken: the best (``sampling_strategy="top"``) or a random sample (``"random"``, seeded), in score order.

Output formats as sentence-transformers': ``triplet`` (anchor, positive, negative: one row per negative),
``n-tuple`` (anchor, positive, negative_1 ... negative_n: anchors with fewer negatives left out),
``labeled-pair`` (anchor, text, label 1/0, or the score with ``output_scores``) and ``labeled-list``.
A cross-encoder rescoring step is not available (jaxsbert has no cross-encoders).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Sequence

import numpy as np

from jaxsbert.evaluation.similarity import normalize

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
SCORE_BLOCK = 2 ** 26           # similarity scores per block of anchors (256 MiB in float32)


@dataclasses.dataclass(frozen=True)
class MiningOptions:
    """The options of ``mine_hard_negatives`` (sentence-transformers' names and defaults)."""
    range_min: int = 0
    range_max: Optional[int] = None
    max_score: Optional[float] = None
    min_score: Optional[float] = None
    absolute_margin: Optional[float] = None
    relative_margin: Optional[float] = None
    num_negatives: int = 3
    sampling_strategy: str = "top"
    include_positives: bool = False
    output_format: str = "triplet"
    output_scores: bool = False

    def checked(self, max_positives: int) -> "MiningOptions":
        """The options with ``range_max`` filled in as sentence-transformers does; ValueError on bad values."""
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {list(OUTPUT_FORMATS)}, got {self.output_format!r}")
        if self.sampling_strategy not in ("top", "random"):
            raise ValueError(f"sampling_strategy must be 'top' or 'random', got {self.sampling_strategy!r}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got num_negatives={self.num_negatives}")
        out = self
        if self.include_positives and self.output_format != "n-tuple":
            log.warning("include_positives=True: output_format is set to 'n-tuple' to keep the ranking order")
            out = dataclasses.replace(out, output_format="n-tuple")
        range_max = self.range_max
        if range_max is None:
            filtered = any(x is not None for x in (self.absolute_margin, self.relative_margin, self.max_score))
            range_max = self.range_min + self.num_negatives * (10 if filtered else 1) + max_positives
        if self.range_min < 0:
            raise ValueError(f"range_min must be non-negative, got range_min={self.range_min}")
        if self.range_min >= range_max:
            raise ValueError(f"range_min must be smaller than range_max, got range_min={self.range_min} and "
                             f"range_max={range_max}")
        if self.num_negatives > range_max - self.range_min:
            raise ValueError(f"Cannot mine {self.num_negatives} negatives per query: only {range_max - self.range_min} "
                             f"candidates remain after skipping the first range_min={self.range_min} of "
                             f"range_max={range_max}")
        return dataclasses.replace(out, range_max=range_max)


def top_k_similar(queries: np.ndarray, corpus: np.ndarray, k: int, block: Optional[int] = None,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices) [n_queries, k] of the ``k`` largest ``queries @ corpus.T`` per row, exact, on the
    default device: blocks of queries of one static shape (the last padded), one compiled program.
    Fewer than ``k`` documents: the missing columns have score -inf and index -1."""
    import jax
    import jax.numpy as jnp

    n, m = len(queries), len(corpus)
    kk = min(k, m)
    block = block or max(1, min(n, SCORE_BLOCK // max(m, 1)))
    corpus_dev = jnp.asarray(corpus, jnp.float32)

    @jax.jit
    def search(q):
        return jax.lax.top_k(q @ corpus_dev.T, kk)

    scores = np.full((n, k), -np.inf, np.float32)
    indices = np.full((n, k), -1, np.int64)
    starts = range(0, n, block)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="Computing similarity scores", total=len(starts))
    for start in starts:
        q = np.zeros((block, queries.shape[1]), np.float32)
        part = queries[start:start + block]
        q[:len(part)] = part
        s, i = jax.device_get(search(q))
        scores[start:start + len(part), :kk] = s[:len(part)]
        indices[start:start + len(part), :kk] = i[:len(part)]
    return scores, indices


def mine_from_embeddings(queries: Sequence[str], positives: Sequence[str], corpus: Sequence[str],
                         query_embeddings: np.ndarray, corpus_embeddings: np.ndarray, options: MiningOptions,
                         anchor_column_name: str = "anchor", positive_column_name: str = "positive",
                         seed: int = 0, progress: bool = False) -> dict[str, list]:
    """The mined dataset as columns, from the (anchor, positive) rows and the embeddings of the distinct
    anchors (in first-seen order) and of ``corpus`` (the distinct texts of the corpus and the positives,
    the corpus first), normalised here."""
    all_queries = list(queries)
    distinct = list(dict.fromkeys(all_queries))
    query_index = {q: i for i, q in enumerate(distinct)}
    corpus_index = {t: i for i, t in enumerate(corpus)}
    positive_indices: list[list[int]] = [[] for _ in distinct]
    query_in_corpus = np.asarray([corpus_index.get(q, -1) for q in distinct], np.int64)
    for q, p in zip(all_queries, positives):
        row = positive_indices[query_index[q]]
        if corpus_index[p] not in row:
            row.append(corpus_index[p])
        if options.include_positives and q == p:
            query_in_corpus[query_index[q]] = -1
    max_positives = max(len(p) for p in positive_indices)
    options = options.checked(max_positives)
    q_emb, c_emb = (normalize(np.asarray(e, np.float32)) for e in (query_embeddings, corpus_embeddings))

    scores, indices = top_k_similar(q_emb, c_emb, options.range_max + max_positives + 1, progress=progress)
    n_positives = np.asarray([len(p) for p in positive_indices])
    flat_positives = np.concatenate([np.asarray(p, np.int64) for p in positive_indices])
    positive_query = np.repeat(np.arange(len(distinct)), n_positives)
    positive_scores = np.sum(q_emb[positive_query] * c_emb[flat_positives], axis=1)

    scores[indices == -1] = -np.inf
    scores[indices == query_in_corpus[:, None]] = -np.inf
    if not options.include_positives:
        is_positive = np.zeros(indices.shape, bool)
        for i, row in enumerate(positive_indices):
            is_positive[i] = np.isin(indices[i], row)
        scores[is_positive] = -np.inf
    if options.absolute_margin is not None or options.relative_margin is not None:
        least_positive = np.minimum.reduceat(positive_scores, np.r_[0, np.cumsum(n_positives)[:-1]])[:, None]
        if options.absolute_margin is not None:
            scores[scores + options.absolute_margin > least_positive] = -np.inf
        if options.relative_margin is not None:
            scores[scores > least_positive - np.abs(least_positive) * options.relative_margin] = -np.inf
    if options.max_score is not None:
        scores[scores > options.max_score] = -np.inf
    if options.min_score is not None:
        scores[(scores < options.min_score) & (scores != -np.inf)] = -np.inf

    order = np.argsort(-scores, axis=1, kind="stable")[:, :options.range_max]
    neg_scores = np.take_along_axis(scores, order, 1)[:, options.range_min:]
    neg_indices = np.take_along_axis(indices, order, 1)[:, options.range_min:]
    if options.sampling_strategy == "top":
        neg_scores, neg_indices = neg_scores[:, :options.num_negatives], neg_indices[:, :options.num_negatives]
    else:
        rng = np.random.default_rng(seed)
        options_left = np.maximum(neg_scores.shape[1] - np.isinf(neg_scores).sum(1), options.num_negatives)
        picked = np.stack([np.sort(rng.choice(int(n), options.num_negatives, replace=False)) for n in options_left])
        neg_scores, neg_indices = np.take_along_axis(neg_scores, picked, 1), np.take_along_axis(neg_indices, picked, 1)
    return _output(options, distinct, corpus, positive_indices, positive_scores, neg_scores, neg_indices,
                   anchor_column_name, positive_column_name)


def _output(options, distinct, corpus, positive_indices, positive_scores, neg_scores, neg_indices, anchor, positive):
    found = neg_scores != -np.inf
    rows: dict[str, list] = {anchor: [], positive: []}
    k = 0                                           # index into the flat positive scores
    if options.output_format == "triplet":
        rows["negative"] = []
        if options.output_scores:
            rows["scores"] = []
        for i, pos in enumerate(positive_indices):
            for p in pos:
                for j in np.flatnonzero(found[i]):
                    rows[anchor].append(distinct[i])
                    rows[positive].append(corpus[p])
                    rows["negative"].append(corpus[neg_indices[i, j]])
                    if options.output_scores:
                        rows["scores"].append([float(positive_scores[k]), float(neg_scores[i, j])])
                k += 1
    elif options.output_format == "n-tuple":
        for j in range(neg_scores.shape[1]):
            rows[f"negative_{j + 1}"] = []
        if options.output_scores:
            rows["scores"] = []
        for i, pos in enumerate(positive_indices):
            for p in pos:
                if found[i].all():
                    rows[anchor].append(distinct[i])
                    rows[positive].append(corpus[p])
                    for j in range(neg_scores.shape[1]):
                        rows[f"negative_{j + 1}"].append(corpus[neg_indices[i, j]])
                    if options.output_scores:
                        rows["scores"].append([float(positive_scores[k])] + neg_scores[i].astype(float).tolist())
                k += 1
    elif options.output_format == "labeled-pair":
        key = "score" if options.output_scores else "label"
        rows[key] = []
        for i, pos in enumerate(positive_indices):
            for p in pos:
                rows[anchor].append(distinct[i])
                rows[positive].append(corpus[p])
                rows[key].append(float(positive_scores[k]) if options.output_scores else 1)
                k += 1
            for j in np.flatnonzero(found[i]):
                rows[anchor].append(distinct[i])
                rows[positive].append(corpus[neg_indices[i, j]])
                rows[key].append(float(neg_scores[i, j]) if options.output_scores else 0)
    else:  # labeled-list
        key = "scores" if options.output_scores else "labels"
        rows[key] = []
        for i, pos in enumerate(positive_indices):
            for p in pos:
                if found[i].any():
                    rows[anchor].append(distinct[i])
                    rows[positive].append([corpus[p]] + [corpus[n] for n in neg_indices[i][found[i]]])
                    rows[key].append([float(positive_scores[k])] + neg_scores[i][found[i]].astype(float).tolist()
                                     if options.output_scores else [1] + [0] * int(found[i].sum()))
                k += 1
    return rows


def mine_hard_negatives(dataset, encoder, anchor_column_name: Optional[str] = None,
                        positive_column_name: Optional[str] = None, corpus: Optional[Sequence[str]] = None,
                        batch_size: int = 32, seed: int = 0, progress: bool = True, **options: Any):
    """``sentence_transformers.util.mine_hard_negatives(dataset, model, ...)`` with a jaxsbert
    :class:`~jaxsbert.SentenceEncoder`; returns a ``datasets.Dataset`` (see the module docstring)."""
    import datasets

    if len(dataset) == 0:
        raise ValueError("The dataset is empty. Please provide a non-empty dataset.")
    columns = dataset.column_names
    anchor = anchor_column_name if anchor_column_name in columns else columns[0]
    if positive_column_name not in columns:
        if len(columns) < 2:
            raise ValueError(f"mining needs (anchor, positive) columns; the dataset has {columns}")
        positive_column_name = columns[1]
    queries, positives = list(dataset[anchor]), list(dataset[positive_column_name])
    for name, texts in ((anchor, queries), (positive_column_name, positives)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"column {name!r} row {bad}: expected text, got {type(texts[bad]).__name__}")
    texts = list(dict.fromkeys((list(corpus) if corpus is not None else []) + positives))
    distinct = list(dict.fromkeys(queries))
    corpus_emb = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress)
    query_emb = encoder.encode(distinct, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress)
    rows = mine_from_embeddings(queries, positives, texts, query_emb, corpus_emb, MiningOptions(**options),
                                anchor, positive_column_name, seed=seed, progress=progress)
    return datasets.Dataset.from_dict(rows)
