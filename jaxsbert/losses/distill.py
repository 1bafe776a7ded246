"""Knowledge-distillation losses, whose labels come from a teacher model: MSELoss and EmbedDistillLoss (teacher
embeddings), MarginMSELoss and DistillKLDivLoss (teacher similarity scores).

Their label is a vector per row, ``[B, ...]`` (see :meth:`jaxsbert.losses.base.Loss.check_label_shape`):
:func:`jaxsbert.distill.embed_labels` and :func:`jaxsbert.distill.score_labels` write such label columns.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.losses.base import (Loss, _where, check_labels_numeric, check_vector_labels, masked_mean,
                                  pairwise_angle_sim, pairwise_cos_sim, safe_norm)

log = logging.getLogger("jaxsbert")


# --------------------------------------------------------------------------------------------------
# Pairwise similarities (sentence-transformers' util.pairwise_*): [B, D], [B, D] -> [B]
# --------------------------------------------------------------------------------------------------

def pairwise_dot_score(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(a * b, axis=-1)


def pairwise_euclidean_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """-||a_i - b_i|| (zero gradient, not NaN, where a_i = b_i)."""
    return -safe_norm(a - b)


def pairwise_manhattan_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.abs(a - b), axis=-1)


PAIRWISE_SIMILARITIES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "pairwise_dot_score": pairwise_dot_score, "pairwise_cos_sim": pairwise_cos_sim,
    "pairwise_euclidean_sim": pairwise_euclidean_sim, "pairwise_manhattan_sim": pairwise_manhattan_sim,
    "pairwise_angle_sim": pairwise_angle_sim}
# a model's similarity_fn_name means the same pairwise function (SentenceTransformer.similarity_pairwise)
_PAIRWISE_ALIASES = {"dot": "pairwise_dot_score", "dot_score": "pairwise_dot_score", "cosine": "pairwise_cos_sim",
                     "cos_sim": "pairwise_cos_sim", "euclidean": "pairwise_euclidean_sim",
                     "manhattan": "pairwise_manhattan_sim"}


def pairwise_similarity_name(name: Any, loss: str) -> str:
    """The canonical name of a pairwise similarity given by name (``"pairwise_cos_sim"``, ``"util.pairwise_cos_sim"``,
    or a model's ``similarity_fn_name``: ``"cosine"``, ``"dot"``, ``"euclidean"``, ``"manhattan"``)."""
    key = str(name).rsplit(".", 1)[-1].lower()
    key = _PAIRWISE_ALIASES.get(key, key)
    if key not in PAIRWISE_SIMILARITIES:
        raise ValueError(f"{loss}: unknown similarity_fct {name!r}; supported: {sorted(PAIRWISE_SIMILARITIES)} "
                         f"(or {sorted(_PAIRWISE_ALIASES)})")
    return key


def _shape_error(loss: Loss, source: str, shape: tuple, want: str) -> ValueError:
    got = "a number" if not shape else f"lists of shape {tuple(shape)}"
    return ValueError(f"{_where(source)}{loss.expects()}; the labels must be {want}, got {got} per row")


# --------------------------------------------------------------------------------------------------
# Teacher embeddings
# --------------------------------------------------------------------------------------------------

EMBED_METRICS = ("mse", "l2", "cosine")


@dataclasses.dataclass(frozen=True)
class EmbedDistillLoss(Loss):
    """Embedding distillation (EmbedDistill, Kim et al. 2023, Eq. 7/8): each input column's student embedding
    ``u_c`` (projected, ``W u_c + b``, when ``projection_dim`` is set) against a teacher embedding ``t_c``::

        loss = mean_c mean_i dist(u_ci, t_ci)

    ``distance_metric``: ``"cosine"`` (default, ``1 - cos``), ``"l2"`` (``||u - t||``) or ``"mse"``
    (``mean_d (u_d - t_d)^2``). Columns: one or more input texts. Label: the teacher embedding(s), a list of
    ``D`` numbers per row (every column's target: a multilingual student learns the English teacher's
    embedding for both the English and the translated column), or ``N`` lists of ``D`` numbers, one per input
    column (per-column teacher embeddings). ``D`` is the model's embedding dimension, or ``projection_dim``:
    a trainable ``torch.nn.Linear(dim, projection_dim)`` head (``{"projection": {"kernel", "bias"}}``,
    initialised as torch does) for a teacher of another dimension."""
    name: ClassVar[str] = "EmbedDistillLoss"
    min_columns: ClassVar[int] = 1
    max_columns: ClassVar[Optional[int]] = None
    label_mode: ClassVar[str] = "required"
    columns_doc: ClassVar[str] = "(input_1, ..., input_N)"
    label_doc: ClassVar[str] = ("teacher embeddings: a list of D numbers per row, or N lists of D (one per input "
                                "column); D = the model's embedding dimension, or projection_dim")

    distance_metric: str = "cosine"
    projection_dim: Optional[int] = None

    def __post_init__(self):
        if self.distance_metric not in EMBED_METRICS:
            raise ValueError(f"{self.name}: distance_metric must be one of {list(EMBED_METRICS)}, "
                             f"got {self.distance_metric!r}")
        if self.projection_dim is not None and (isinstance(self.projection_dim, bool) or not isinstance(
                self.projection_dim, (int, np.integer)) or self.projection_dim < 1):
            raise ValueError(f"{self.name}: projection_dim must be a positive integer or None, "
                             f"got {self.projection_dim!r}")

    def check_label_shape(self, shape, num_columns, embedding_dim=None, source=""):
        shape = tuple(shape)
        if len(shape) not in (1, 2):
            raise _shape_error(self, source, shape, "teacher embeddings (a list of D numbers per row, or one such "
                                                    "list per input column)")
        if len(shape) == 2 and shape[0] != num_columns:
            raise ValueError(f"{_where(source)}{self.name}: the labels hold {shape[0]} teacher embeddings per row "
                             f"(shape {shape}) for {num_columns} input column(s); give one per input column, or "
                             "one list of D numbers for every column")
        target = self.projection_dim if self.projection_dim is not None else embedding_dim
        if target is not None and shape[-1] != target:
            if self.projection_dim is not None:
                raise ValueError(f"{_where(source)}{self.name}: the teacher embeddings (labels) have {shape[-1]} "
                                 f"dimensions but projection_dim={self.projection_dim}")
            raise ValueError(f"{_where(source)}{self.name}: the teacher embeddings (labels) have {shape[-1]} "
                             f"dimensions but the model's embeddings have {embedding_dim}; a teacher of another "
                             f"dimension needs projection_dim={shape[-1]} (a trainable projection)")

    def check_label_values(self, labels, source):
        check_vector_labels(self.name, labels, source)

    def init_head(self, rng: jax.Array, embedding_dim: int) -> dict:
        if self.projection_dim is None:
            return {}
        bound = 1.0 / np.sqrt(embedding_dim)
        k_w, k_b = jax.random.split(rng)
        return {"projection": {
            "kernel": jax.random.uniform(k_w, (embedding_dim, self.projection_dim), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(k_b, (self.projection_dim,), jnp.float32, -bound, bound)}}

    def head_state_dict(self, head_params: Any) -> dict[str, np.ndarray]:
        """The projection as sentence-transformers' ``projection.weight`` [projection_dim, dim] / ``projection.bias``
        (``save_projection`` writes the same tensors as ``weight`` / ``bias``)."""
        if not head_params:
            return {}
        p = head_params["projection"]
        return {"projection.weight": np.ascontiguousarray(np.asarray(p["kernel"], np.float32).T),
                "projection.bias": np.asarray(p["bias"], np.float32)}

    def head_from_state_dict(self, state_dict: dict) -> dict:
        """Inverse of :meth:`head_state_dict`; also reads ``save_projection``'s ``weight`` / ``bias``."""
        prefix = "projection." if "projection.weight" in state_dict else ""
        w = np.asarray(state_dict[prefix + "weight"], np.float32)
        bias = jnp.asarray(state_dict[prefix + "bias"], jnp.float32)
        return {"projection": {"kernel": jnp.asarray(w.T), "bias": bias}}

    def compute(self, head_params, embeddings, labels, mask):
        if self.projection_dim is not None and not (head_params and "projection" in head_params):
            raise ValueError(f"{self.name} with projection_dim needs its projection parameters: pass "
                             "loss.init_head(rng, embedding_dim)")
        teacher = jax.lax.stop_gradient(labels.astype(jnp.float32))
        targets = [teacher] * len(embeddings) if teacher.ndim == 2 else [teacher[:, c] for c in range(len(embeddings))]
        losses = []
        for student, target in zip(embeddings, targets):
            if self.projection_dim is not None:
                student = student @ head_params["projection"]["kernel"] + head_params["projection"]["bias"]
            if self.distance_metric == "mse":
                per_row = jnp.mean((student - target) ** 2, axis=-1)
            elif self.distance_metric == "l2":
                per_row = safe_norm(student - target)
            else:
                per_row = 1.0 - pairwise_cos_sim(student, target, eps=1e-8)
            losses.append(masked_mean(per_row, mask))
        return jnp.mean(jnp.stack(losses))


@dataclasses.dataclass(frozen=True)
class MSELoss(EmbedDistillLoss):
    """Mean squared error between the student's embeddings and the teacher's (Reimers & Gurevych 2020,
    multilingual distillation): :class:`EmbedDistillLoss` with ``distance_metric="mse"``::

        loss = mean_c mean_i mean_d (u_cid - t_cid)^2

    Columns: one or more input texts (e.g. (english, french)). Label: the teacher's embedding of the row,
    a list of ``D`` numbers (every column's target), or ``N`` lists of ``D`` (one per input column).
    ``D`` is the model's embedding dimension unless ``projection_dim`` (default None) adds a trainable
    projection. :func:`jaxsbert.distill.embed_labels` writes the label column."""
    name: ClassVar[str] = "MSELoss"

    distance_metric: str = dataclasses.field(default="mse", init=False)
    projection_dim: Optional[int] = None

    def config_dict(self) -> dict[str, Any]:
        return {"projection_dim": self.projection_dim}


# --------------------------------------------------------------------------------------------------
# Teacher scores
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MarginMSELoss(Loss):
    """MarginMSE (Hofstätter et al. 2021): the student's score margins regress the teacher's::

        m_ik = sim(q_i, p_i) - sim(q_i, n_ik);   loss = mean_i mean_k (m_ik - y_ik)^2

    ``sim`` = ``similarity_fct`` (default ``"pairwise_dot_score"``; also ``"pairwise_cos_sim"``,
    ``"pairwise_euclidean_sim"``, ``"pairwise_manhattan_sim"``, ``"pairwise_angle_sim"``). Columns (query,
    positive, negative_1, ..., negative_n). Label: the teacher's margins ``y_ik = T(q, p) - T(q, n_k)``, a number
    (n = 1) or a list of n; or the teacher's scores ``[T(q, p), T(q, n_1), ..., T(q, n_n)]`` (a list of n + 1),
    whose margins are taken."""
    name: ClassVar[str] = "MarginMSELoss"
    min_columns: ClassVar[int] = 3
    max_columns: ClassVar[Optional[int]] = None
    label_mode: ClassVar[str] = "required"
    columns_doc: ClassVar[str] = "(query, positive, negative_1, ..., negative_n)"
    label_doc: ClassVar[str] = ("the teacher's margins T(q, p) - T(q, n_k): a number (one negative) or a list of n; "
                                "or its scores [T(q, p), T(q, n_1), ...]: a list of n + 1")

    similarity_fct: str = "pairwise_dot_score"

    def __post_init__(self):
        object.__setattr__(self, "similarity_fct", pairwise_similarity_name(self.similarity_fct, self.name))

    def check_label_shape(self, shape, num_columns, embedding_dim=None, source=""):
        n = num_columns - 2
        allowed = {(n,), (n + 1,)} | ({()} if n == 1 else set())
        if tuple(shape) not in allowed:
            want = (f"a number or a list of 1 (the margin), or a list of 2 (the scores)" if n == 1 else
                    f"a list of {n} margins or of {n + 1} scores, for {n} negative columns")
            raise _shape_error(self, source, shape, want)

    def check_label_values(self, labels, source):
        labels = np.asarray(labels)
        if labels.ndim == 1:
            check_labels_numeric(self.name, labels, source)
        else:
            check_vector_labels(self.name, labels, source)

    def compute(self, head_params, embeddings, labels, mask):
        sim = PAIRWISE_SIMILARITIES[self.similarity_fct]
        query, positive, negatives = embeddings[0], embeddings[1], embeddings[2:]
        labels = jax.lax.stop_gradient(labels.astype(jnp.float32))
        if labels.ndim == 2 and labels.shape[1] == len(negatives) + 1:     # scores -> margins
            labels = labels[:, :1] - labels[:, 1:]
        elif labels.ndim == 1:
            labels = labels[:, None]
        positive_score = sim(query, positive)
        margins = jnp.stack([positive_score - sim(query, n) for n in negatives], axis=1)
        return masked_mean(jnp.mean((margins - labels) ** 2, axis=1), mask)


@dataclasses.dataclass(frozen=True)
class DistillKLDivLoss(Loss):
    """KL divergence from the teacher's score distribution over a query's candidates to the student's (Lin et al.
    2020)::

        s_ik = sim(q_i, c_ik) / T_s;   p_ik = softmax_k(y_ik / T_t)
        loss = T_s^2 * mean_i sum_k p_ik (log p_ik - log_softmax_k(s_ik))

    over the candidates ``c_i1..c_iN`` (the positive and the negatives). ``sim`` = ``similarity_fct`` (default
    ``"pairwise_dot_score"``, as :class:`MarginMSELoss`). ``temperature`` (default 1.0) is both ``T_s`` and ``T_t``
    unless ``student_temperature`` / ``teacher_temperature`` (default None) set one. Columns (query, positive,
    negative_1, ..., negative_n). Label: the teacher's scores ``[T(q, p), T(q, n_1), ...]``, a list of N = n + 1
    numbers per row; -inf leaves a candidate out."""
    name: ClassVar[str] = "DistillKLDivLoss"
    min_columns: ClassVar[int] = 3
    max_columns: ClassVar[Optional[int]] = None
    label_mode: ClassVar[str] = "required"
    columns_doc: ClassVar[str] = "(query, positive, negative_1, ..., negative_n)"
    label_doc: ClassVar[str] = "the teacher's scores [T(q, p), T(q, n_1), ..., T(q, n_n)]: a list of n + 1 numbers"

    similarity_fct: str = "pairwise_dot_score"
    temperature: float = 1.0
    student_temperature: Optional[float] = None
    teacher_temperature: Optional[float] = None

    def __post_init__(self):
        object.__setattr__(self, "similarity_fct", pairwise_similarity_name(self.similarity_fct, self.name))
        for label in ("temperature", "student_temperature", "teacher_temperature"):
            value = getattr(self, label)
            if value is None and label != "temperature":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{self.name}: {label} must be a positive finite number, got {value!r}")

    @property
    def student_t(self) -> float:
        return float(self.temperature if self.student_temperature is None else self.student_temperature)

    @property
    def teacher_t(self) -> float:
        return float(self.temperature if self.teacher_temperature is None else self.teacher_temperature)

    def check_label_shape(self, shape, num_columns, embedding_dim=None, source=""):
        if tuple(shape) != (num_columns - 1,):
            raise _shape_error(self, source, shape, f"the teacher's scores of the {num_columns - 1} candidate "
                                                    f"columns (a list of {num_columns - 1} numbers)")

    def check_label_values(self, labels, source):
        labels = check_vector_labels(self.name, labels, source, allow_neg_inf=True)
        values = labels.astype(np.float32).reshape(len(labels), int(np.prod(labels.shape[1:])))
        left_out = np.all(values == -np.inf, axis=1)
        if left_out.any():
            row = int(np.argmax(left_out))
            raise ValueError(f"{_where(source)}{self.name}: every teacher score of a row is -inf (first at row {row}:"
                             f" {values[row].tolist()}), which leaves no candidate")
        # sentence-transformers' check_teacher_targets: a float32 softmax that underflows drops candidates
        if values.size and np.isfinite(values).all():
            scaled = values / np.float32(self.teacher_t)
            probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
            collapsed = int(np.sum(probs / probs.sum(axis=1, keepdims=True) == 0))
            if collapsed:
                spread = float((values.max(axis=1) - values.min(axis=1)).max())
                log.warning("%s%s: teacher_temperature=%s underflows %d of %d teacher scores to exactly zero, so those "
                            "candidates carry no gradient. The widest candidate row spans %.1f; raise "
                            "teacher_temperature above %.3g.", _where(source), self.name, self.teacher_t, collapsed,
                            values.size, spread, spread / 100)

    def compute(self, head_params, embeddings, labels, mask):
        sim = PAIRWISE_SIMILARITIES[self.similarity_fct]
        query = embeddings[0]
        student = jnp.stack([sim(query, c) for c in embeddings[1:]], axis=1) / self.student_t
        log_q = jax.nn.log_softmax(student, axis=1)
        p = jax.nn.softmax(jax.lax.stop_gradient(labels.astype(jnp.float32)) / self.teacher_t, axis=1)
        kl = jnp.sum(jax.scipy.special.xlogy(p, p) - p * log_q, axis=1)    # torch.nn.KLDivLoss's terms
        return masked_mean(kl, mask) * self.student_t ** 2
