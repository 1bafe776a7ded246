"""Translation matching: is each sentence's most similar sentence in the other language its translation?

As sentence-transformers' ``TranslationEvaluator``: target i is the translation of source i; with cosine
similarity (always cosine, whatever the model's similarity function), source i counts as correct when the
target with the highest similarity (the first one on equal scores, as ``np.argmax``) has the same text as
target i, and likewise from targets to sources. Keys ``{name}_src2trg_accuracy``, ``{name}_trg2src_accuracy``
and ``{name}_mean_accuracy`` (their mean, the primary metric). The similarity matrix is computed in blocks of
rows, so memory stays at one block.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, _check_texts, encode_unique
from jaxsbert.evaluation.similarity import as_float_array, normalize

# Elements of one [source block, targets] similarity block (64 MiB of float32).
_BLOCK_ELEMENTS = 1 << 24


def best_matches(source_embeddings, target_embeddings) -> tuple[np.ndarray, np.ndarray]:
    """(argmax over targets for each source, argmax over sources for each target) of the cosine matrix, the
    first index on ties."""
    src = normalize(np.atleast_2d(as_float_array(source_embeddings)))
    trg = normalize(np.atleast_2d(as_float_array(target_embeddings)))
    dtype = np.result_type(src, trg)
    src, trg = src.astype(dtype, copy=False), trg.astype(dtype, copy=False)
    n_src, n_trg = src.shape[0], trg.shape[0]
    src2trg = np.empty(n_src, dtype=np.int64)
    trg2src = np.zeros(n_trg, dtype=np.int64)
    col_best = np.full(n_trg, -np.inf, dtype=dtype)
    rows = max(1, _BLOCK_ELEMENTS // max(1, n_trg))
    for start in range(0, n_src, rows):
        block = src[start:start + rows] @ trg.T
        src2trg[start:start + rows] = block.argmax(axis=1)
        block_arg = block.argmax(axis=0)
        block_max = block[block_arg, np.arange(n_trg)]
        better = block_max > col_best          # strictly: an earlier source keeps a tie
        trg2src[better] = block_arg[better] + start
        col_best[better] = block_max[better]
    return src2trg, trg2src


def translation_metrics(source_embeddings, target_embeddings, source_sentences: Sequence[str],
                        target_sentences: Sequence[str]) -> dict[str, float]:
    """src2trg_accuracy / trg2src_accuracy / mean_accuracy (unprefixed) from the embeddings of the sentences."""
    n = len(source_sentences)
    if len(target_sentences) != n or np.shape(source_embeddings)[0] != n or np.shape(target_embeddings)[0] != n:
        raise ValueError(f"need one embedding per sentence and as many sources as targets; got {n} sources, "
                         f"{len(target_sentences)} targets, embeddings {np.shape(source_embeddings)} and "
                         f"{np.shape(target_embeddings)}")
    src2trg, trg2src = best_matches(source_embeddings, target_embeddings)
    correct_src2trg = sum(target_sentences[i] == target_sentences[j] for i, j in enumerate(src2trg.tolist()))
    correct_trg2src = sum(source_sentences[i] == source_sentences[j] for i, j in enumerate(trg2src.tolist()))
    src2trg_acc, trg2src_acc = correct_src2trg / n, correct_trg2src / n
    return {"src2trg_accuracy": src2trg_acc, "trg2src_accuracy": trg2src_acc,
            "mean_accuracy": (src2trg_acc + trg2src_acc) / 2}


class TranslationEvaluator(Evaluator):
    """sentence-transformers' TranslationEvaluator (see the module docstring).

    Args:
        source_sentences: sentences in the source language.
        target_sentences: their translations, in the same order.
        print_wrong_matches: print each source whose best target is not its translation.
    """

    def __init__(self, source_sentences: Sequence[str], target_sentences: Sequence[str], batch_size: int = 16,
                 name: str = "", print_wrong_matches: bool = False, truncate_dim: int | None = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        self.source_sentences = _check_texts(source_sentences, "source_sentences")
        self.target_sentences = _check_texts(target_sentences, "target_sentences")
        if len(self.source_sentences) != len(self.target_sentences):
            raise ValueError(f"source_sentences ({len(self.source_sentences)}) and target_sentences "
                             f"({len(self.target_sentences)}) must have the same length")
        if not self.source_sentences:
            raise ValueError("TranslationEvaluator needs at least one sentence pair")
        self.print_wrong_matches = print_wrong_matches
        self.primary_metric = self.prefixed("mean_accuracy")

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        src, trg = encode_unique(encoder, [self.source_sentences, self.target_sentences], self.batch_size,
                                 self.truncate_dim)
        metrics = translation_metrics(src, trg, self.source_sentences, self.target_sentences)
        if self.print_wrong_matches:
            src2trg, _ = best_matches(src, trg)
            for i, j in enumerate(src2trg.tolist()):
                if self.target_sentences[i] != self.target_sentences[j]:
                    print(f"\nIncorrect  : Source {i} is most similar to target {j} instead of target {i}")
                    print("Source     :", self.source_sentences[i])
                    print("Pred Target:", self.target_sentences[j])
                    print("True Target:", self.target_sentences[i])
        return self._finish(metrics, "mean_accuracy")
