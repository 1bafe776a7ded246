"""Evaluators built from config specs: ``data.eval = {name: {"type": ..., <dataset spec>}}``.

Types (columns by order, as the column convention gives them):
- ``similarity``: (sentence1, sentence2) + score -> EmbeddingSimilarityEvaluator
- ``binary``: (sentence1, sentence2) + 0/1 label -> BinaryClassificationEvaluator
- ``triplet``: (anchor, positive, negative) -> TripletEvaluator
- ``label_accuracy``: (premise, hypothesis) + class label -> accuracy of a SoftmaxLoss head
  (``"head": <training dataset name>``), as sentence-transformers' LabelAccuracyEvaluator
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxsbert import data as jdata
from jaxsbert.evaluation.binary_classification import BinaryClassificationEvaluator
from jaxsbert.evaluation.embedding_similarity import EmbeddingSimilarityEvaluator
from jaxsbert.evaluation.triplet import TripletEvaluator

TYPES = ("similarity", "binary", "triplet", "label_accuracy")
_EVAL_KEYS = ("type", "batch_size", "similarity_fn_names", "main_similarity", "head")


class LabelAccuracyEvaluator:
    """Accuracy of a classification loss head (SoftmaxLoss) on (sentence1, sentence2, label)."""

    def __init__(self, sentences1, sentences2, labels, loss, head_dataset: str, name: str = "", batch_size: int = 32):
        self.sentences1, self.sentences2 = list(sentences1), list(sentences2)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.loss, self.head_dataset, self.name, self.batch_size = loss, head_dataset, name, batch_size
        self.head = None   # set by the training loop to the current head parameters
        self.primary_metric = f"{name}_accuracy" if name else "accuracy"

    def __call__(self, encoder) -> dict[str, float]:
        if self.head is None:
            raise ValueError(f"evaluator {self.name!r}: no loss head set (needs the training dataset "
                             f"{self.head_dataset!r} trained with SoftmaxLoss)")
        u = jnp.asarray(encoder.encode(self.sentences1, batch_size=self.batch_size))
        v = jnp.asarray(encoder.encode(self.sentences2, batch_size=self.batch_size))
        predicted = np.asarray(jnp.argmax(self.loss.logits(self.head, u, v), axis=-1))
        return {self.primary_metric: float(np.mean(predicted == self.labels))}


def build_evaluator(name: str, spec: dict[str, Any], data_root: str | None = None, losses: dict | None = None):
    spec = dict(spec)
    kind = spec.pop("type", "similarity")
    if kind not in TYPES:
        raise ValueError(f"evaluator {name!r}: type {kind!r} is not supported; supported: {list(TYPES)}")
    options = {k: spec.pop(k) for k in list(spec) if k in _EVAL_KEYS}
    ds = jdata.load_dataset(spec, data_root=data_root)
    columns = jdata.split_columns(ds)
    source = f"evaluator {name!r} ({jdata.dataset_source(ds)})"
    need = {"similarity": (2, True), "binary": (2, True), "triplet": (3, False), "label_accuracy": (2, True)}[kind]
    if len(columns.inputs) != need[0] or (columns.label is not None) != need[1]:
        raise ValueError(f"{source}: a {kind} evaluator needs {need[0]} text columns"
                         f"{' and a label/score column' if need[1] else ' and no label column'}; "
                         f"got columns {ds.column_names}")
    jdata.validate_dataset(ds, name=name)
    texts = [list(ds[c]) for c in columns.inputs]
    labels = list(ds[columns.label]) if columns.label else None
    batch_size = int(options.get("batch_size", 32))
    fn_names = options.get("similarity_fn_names")
    if kind == "similarity":
        return EmbeddingSimilarityEvaluator(texts[0], texts[1], labels, batch_size=batch_size, name=name,
                                            main_similarity=options.get("main_similarity"),
                                            similarity_fn_names=fn_names or ["cosine"])
    if kind == "binary":
        return BinaryClassificationEvaluator(texts[0], texts[1], labels, name=name, batch_size=batch_size,
                                             similarity_fn_names=fn_names or ["cosine"])
    if kind == "triplet":
        return TripletEvaluator(texts[0], texts[1], texts[2], name=name, batch_size=batch_size,
                                similarity_fn_names=fn_names or ["cosine"])
    head = options.get("head")
    if not losses or head not in losses or not hasattr(losses[head], "logits"):
        raise ValueError(f"{source}: label_accuracy needs 'head': the name of a training dataset trained with "
                         f"SoftmaxLoss (training datasets: {sorted(losses or {})})")
    return LabelAccuracyEvaluator(texts[0], texts[1], labels, losses[head], head, name=name, batch_size=batch_size)
