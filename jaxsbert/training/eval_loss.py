"""``eval_loss``: a training loss on an evaluation dataset, as sentence-transformers' trainer reports it."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert import data as jdata


class LossEvaluator:
    """The loss on ``dataset`` in batches of ``batch_size`` rows, in order and without dropout, averaged over
    rows (transformers' evaluation loop: each batch's mean loss weighted by its row count). In-batch-negative
    losses see the batch's rows as negatives, as they do there. Returns ``{"{name}_loss": value}``
    (``eval_loss`` for the default name). ``head_dataset`` names the training dataset whose loss head
    (SoftmaxLoss's classifier) to use; the trainer sets ``head`` before each call.

    sentence-transformers shuffles its evaluation batches (a seeded torch RandomSampler); the batches here are
    in dataset order, so the two agree exactly when one batch holds the dataset, or for losses that do not
    depend on how rows are grouped (CosineSimilarityLoss, SoftmaxLoss, TripletLoss, ...)."""

    during_training = True

    def __init__(self, dataset, loss, name: str = "eval", batch_size: int = 8, head_dataset: str | None = None):
        from jaxsbert.losses import Loss

        columns = jdata.split_columns(dataset)
        source = f"eval dataset {name!r}"
        if type(loss).value_and_grad is not Loss.value_and_grad:
            raise ValueError(f"{source}: no eval_loss for {loss.name}: it runs the model itself (a guide, a second "
                             "copy, a decoder or every layer), not only on the final embeddings; evaluate with an "
                             "evaluator instead")
        jdata.validate_dataset(dataset, name=source)
        labels = np.asarray(dataset[columns.label]) if columns.label else None
        loss.check_inputs(len(columns.inputs), labels, source=source)
        self.texts = [list(dataset[c]) for c in columns.inputs]
        self.labels, self.loss, self.name, self.batch_size = labels, loss, name, int(batch_size)
        self.head_dataset, self.head = head_dataset, {}
        self.primary_metric = f"{name}_loss"
        self._value = jax.jit(lambda head, embeddings, labels: loss(head, embeddings, labels,
                                                                     jnp.ones(embeddings[0].shape[0], bool)))

    def __call__(self, encoder) -> dict[str, float]:
        embeddings = [encoder.encode(texts, batch_size=32) for texts in self.texts]
        n, total = len(self.texts[0]), 0.0
        for start in range(0, n, self.batch_size):
            rows = slice(start, min(start + self.batch_size, n))
            labels: Any = None if self.labels is None else jnp.asarray(self.labels[rows])
            value = self._value(self.head, tuple(jnp.asarray(e[rows]) for e in embeddings), labels)
            total += float(value) * (rows.stop - rows.start)
        return {self.primary_metric: total / max(n, 1)}
