"""SoftmaxLoss: a trainable linear classifier on the pair representation (the SBERT NLI objective)."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.losses.base import Loss, check_labels_integer, check_labels_range, masked_mean


@dataclasses.dataclass(frozen=True)
class SoftmaxLoss(Loss):
    """Cross-entropy of a linear classifier on the concatenated pair features (Reimers & Gurevych 2019)::

        x = concat(u, v, |u - v|, [u * v]);  logits = x W^T + b;  loss = mean_i CE(logits_i, y_i)

    ``concatenation_sent_rep`` (u, v; default True), ``concatenation_sent_difference`` (|u - v|; True),
    ``concatenation_sent_multiplication`` (u * v; False). ``num_labels`` is required. Columns
    (sentence1, sentence2); labels: integer class ids in [0, num_labels).

    The classifier is the loss's head: ``init_head(rng, embedding_dim)`` returns
    ``{"classifier": {"kernel": [in, num_labels], "bias": [num_labels]}}`` initialised like
    ``torch.nn.Linear`` (uniform in +-1/sqrt(in)); ``head_state_dict`` gives it as the PyTorch
    ``classifier.weight`` [num_labels, in] / ``classifier.bias`` of sentence-transformers' SoftmaxLoss.
    ``embedding_dimension`` (optional) is checked against the dimension ``init_head`` is given.
    """
    name: ClassVar[str] = "SoftmaxLoss"
    columns_doc: ClassVar[str] = "(sentence1, sentence2)"
    label_mode: ClassVar[str] = "required"
    label_doc: ClassVar[str] = "integer class id in [0, num_labels)"

    num_labels: int = 0
    embedding_dimension: Optional[int] = None
    concatenation_sent_rep: bool = True
    concatenation_sent_difference: bool = True
    concatenation_sent_multiplication: bool = False

    def __post_init__(self):
        if not isinstance(self.num_labels, (int, np.integer)) or self.num_labels < 2:
            raise ValueError(f"{self.name}: num_labels must be an integer >= 2 (the number of classes), "
                             f"got {self.num_labels!r}")
        if self.num_vectors == 0:
            raise ValueError(f"{self.name}: at least one of concatenation_sent_rep, concatenation_sent_difference "
                             "or concatenation_sent_multiplication must be True")

    @property
    def num_vectors(self) -> int:
        return (2 * bool(self.concatenation_sent_rep) + bool(self.concatenation_sent_difference)
                + bool(self.concatenation_sent_multiplication))

    def check_label_values(self, labels, source):
        labels = check_labels_integer(self.name, labels, source, what=f"integer class ids in [0, {self.num_labels})")
        check_labels_range(self.name, labels, 0, self.num_labels, source, high_inclusive=False,
                           hint=f"num_labels={self.num_labels}")

    def init_head(self, rng: jax.Array, embedding_dim: int) -> dict:
        if self.embedding_dimension is not None and self.embedding_dimension != embedding_dim:
            raise ValueError(f"{self.name}: embedding_dimension={self.embedding_dimension} but the model's "
                             f"embeddings have dimension {embedding_dim}")
        fan_in = self.num_vectors * embedding_dim
        bound = 1.0 / np.sqrt(fan_in)
        k_w, k_b = jax.random.split(rng)
        return {"classifier": {
            "kernel": jax.random.uniform(k_w, (fan_in, self.num_labels), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(k_b, (self.num_labels,), jnp.float32, -bound, bound)}}

    def head_state_dict(self, head_params: Any) -> dict[str, np.ndarray]:
        c = head_params["classifier"]
        return {"classifier.weight": np.ascontiguousarray(np.asarray(c["kernel"], np.float32).T),
                "classifier.bias": np.asarray(c["bias"], np.float32)}

    def head_from_state_dict(self, state_dict: dict) -> dict:
        """Inverse of :meth:`head_state_dict` (accepts numpy arrays or torch tensors)."""
        w = np.asarray(state_dict["classifier.weight"], np.float32)
        return {"classifier": {"kernel": jnp.asarray(w.T), "bias": jnp.asarray(state_dict["classifier.bias"], jnp.float32)}}

    def features(self, u: jax.Array, v: jax.Array) -> jax.Array:
        parts = []
        if self.concatenation_sent_rep:
            parts += [u, v]
        if self.concatenation_sent_difference:
            parts.append(jnp.abs(u - v))
        if self.concatenation_sent_multiplication:
            parts.append(u * v)
        return jnp.concatenate(parts, axis=-1)

    def logits(self, head_params: Any, u: jax.Array, v: jax.Array) -> jax.Array:
        c = head_params["classifier"]
        x = self.features(u, v)
        if x.shape[-1] != c["kernel"].shape[0]:
            raise ValueError(f"{self.name}: the classifier takes {c['kernel'].shape[0]} features but the embeddings "
                             f"give {x.shape[-1]} ({self.num_vectors} x {u.shape[-1]})")
        return x @ c["kernel"] + c["bias"]

    def compute(self, head_params, embeddings, labels, mask):
        if not head_params or "classifier" not in head_params:
            raise ValueError(f"{self.name} needs its classifier parameters: pass loss.init_head(rng, embedding_dim)")
        logits = self.logits(head_params, embeddings[0], embeddings[1])
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        y = labels.astype(jnp.int32)
        nll = -jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
        return masked_mean(nll, mask)
