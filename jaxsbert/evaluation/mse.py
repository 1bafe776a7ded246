"""Mean squared error between a teacher's embeddings of source sentences and the model's of target sentences.

As sentence-transformers' ``MSEEvaluator`` (multilingual knowledge distillation): the teacher embeds
``source_sentences`` once, at construction; each call embeds ``target_sentences`` with the model being evaluated
and returns ``{name}_negative_mse`` = -100 * mean((teacher - student) ** 2) over all rows and dimensions
(negated so that higher is better; float32 arithmetic, as sentence-transformers' numpy).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator, _check_texts, encode_unique
from jaxsbert.evaluation.similarity import as_float_array


def negative_mse(source_embeddings, target_embeddings) -> float:
    """-100 * mean squared difference (sentence-transformers' MSEEvaluator metric)."""
    source, target = np.asarray(source_embeddings), np.asarray(target_embeddings)
    if source.shape != target.shape:
        raise ValueError(f"teacher embeddings have shape {source.shape} but the model's have {target.shape}")
    mse = ((source - target) ** 2).mean()
    return -float(mse * 100)


class MSEEvaluator(Evaluator):
    """sentence-transformers' MSEEvaluator (see the module docstring).

    Args:
        source_sentences: sentences for the teacher (e.g. English).
        target_sentences: the model's sentences, one per source sentence (e.g. their translations).
        teacher_model: an encoder (anything with ``encode(list[str], batch_size=...)``, e.g. a
            ``jaxsbert.SentenceEncoder``), or the teacher's embeddings of ``source_sentences`` as an
            array [n, dim] (precomputed: then no teacher is needed).
        source_embeddings: the teacher's embeddings, as a keyword (instead of ``teacher_model``).
        truncate_dim: keep the first ``truncate_dim`` dimensions of both sides' embeddings.

    Key ``{name}_negative_mse``, which is also the primary metric.
    """

    def __init__(self, source_sentences: Sequence[str], target_sentences: Sequence[str], teacher_model: Any = None,
                 batch_size: int = 32, name: str = "", truncate_dim: int | None = None,
                 source_embeddings: Any = None):
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        self.source_sentences = _check_texts(source_sentences, "source_sentences")
        self.target_sentences = _check_texts(target_sentences, "target_sentences")
        if len(self.source_sentences) != len(self.target_sentences):
            raise ValueError(f"source_sentences ({len(self.source_sentences)}) and target_sentences "
                             f"({len(self.target_sentences)}) must have the same length")
        if teacher_model is not None and not hasattr(teacher_model, "encode"):
            if source_embeddings is not None:
                raise ValueError("give the teacher's embeddings once: as teacher_model or as source_embeddings")
            teacher_model, source_embeddings = None, teacher_model
        if (teacher_model is None) == (source_embeddings is None):
            raise ValueError("MSEEvaluator needs exactly one of teacher_model (an encoder) and source_embeddings "
                             "(the teacher's embeddings of source_sentences)")
        if teacher_model is not None:
            (emb,) = encode_unique(teacher_model, [self.source_sentences], batch_size, truncate_dim)
        else:
            emb = np.atleast_2d(as_float_array(source_embeddings))
            if emb.ndim != 2 or emb.shape[0] != len(self.source_sentences):
                raise ValueError(f"source_embeddings have shape {emb.shape}; expected one row per source sentence "
                                 f"({len(self.source_sentences)}, dim)")
            if truncate_dim is not None:
                emb = emb[:, :truncate_dim]
        self.source_embeddings = emb
        self.primary_metric = self.prefixed("negative_mse")

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        (target,) = encode_unique(encoder, [self.target_sentences], self.batch_size, self.truncate_dim)
        return self._finish({"negative_mse": negative_mse(self.source_embeddings, target)}, "negative_mse")
