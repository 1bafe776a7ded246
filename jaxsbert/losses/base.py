"""The ``Loss`` interface every loss implements, its input checks, and the similarity helpers they share.

A loss is a frozen (hashable) dataclass holding its hyper-parameters. It is called on the
embeddings of the input columns of one (global) batch::

    loss(head_params, embeddings, labels, mask) -> scalar

* ``head_params``: the loss's own trainable parameters (``{}`` for all but ``SoftmaxLoss``),
  created by ``loss.init_head(rng, embedding_dim)``.
* ``embeddings``: one ``[B, D]`` array per input column, in dataset column order.
* ``labels``: ``[B]`` array, or ``None`` for losses that take no label; ``[B, ...]`` for the losses whose
  label is a vector (the distillation losses: teacher embeddings ``[B, D]``, teacher scores ``[B, n]``),
  whose accepted per-row shapes :meth:`Loss.check_label_shape` says.
* ``mask``: ``[B]`` bool, ``False`` on the padding rows of a fixed-size batch. Padding rows change
  nothing: the value and the gradients equal those of the loss on the valid rows alone. ``None``
  means every row is valid.

All functions are pure and jit-able. Under ``jax.jit`` with the batch axis sharded over devices, a
loss sees the global batch, so in-batch negatives span all devices without explicit gathers.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.data.packing import is_packed, sentence_index

EmbedFn = Callable[[Any, dict, Optional[jax.Array]], jax.Array]
"""``embed_fn(params, features, rng) -> [b, D]``: the model's forward pass on one column's features."""


# --------------------------------------------------------------------------------------------------
# Similarities and distances (fp32, NaN-free gradients where the input vector is zero)
# --------------------------------------------------------------------------------------------------

def safe_norm(x: jax.Array, eps: float = 0.0, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """``max(||x||, eps)`` computed as ``sqrt(max(sum x^2, eps^2))``: same value, but a zero vector
    gets a zero gradient instead of NaN (padding rows are often all-zero embeddings)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    if eps > 0:
        return jnp.sqrt(jnp.maximum(sq, eps * eps))
    safe = sq > 0
    return jnp.where(safe, jnp.sqrt(jnp.where(safe, sq, 1.0)), 0.0)


def normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """L2 normalisation along the last axis, as ``torch.nn.functional.normalize``: x / max(||x||, eps)."""
    return x / safe_norm(x, eps, keepdims=True)


def cos_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """[n, D], [m, D] -> [n, m] cosine similarities (sentence-transformers' ``util.cos_sim``)."""
    return normalize(a) @ normalize(b).T


def dot_score(a: jax.Array, b: jax.Array) -> jax.Array:
    """[n, D], [m, D] -> [n, m] dot products (``util.dot_score``)."""
    return a @ b.T


def pairwise_cos_sim(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
    """[B, D], [B, D] -> [B]: cos(a_i, b_i). ``eps=1e-8`` gives ``torch.cosine_similarity``."""
    return jnp.sum(normalize(a, eps) * normalize(b, eps), axis=-1)


def pairwise_angle_sim(x: jax.Array, y: jax.Array) -> jax.Array:
    """AnglE similarity |cos(x, y) + sin(x, y)| after L2 normalisation; dimension i pairs with i + D/2
    (an odd D is padded with one zero), as ``util.pairwise_angle_sim``."""
    if x.shape[-1] % 2:
        pad = [(0, 0)] * (x.ndim - 1) + [(0, 1)]
        x, y = jnp.pad(x, pad), jnp.pad(y, pad)
    x, y = normalize(x), normalize(y)
    h = x.shape[-1] // 2
    cosines = jnp.sum(x * y, axis=-1)
    sines = jnp.sum(x[..., h:] * y[..., :h] - x[..., :h] * y[..., h:], axis=-1)
    return jnp.abs(cosines + sines)


SIMILARITY_FNS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {"cos_sim": cos_sim, "dot_score": dot_score}
_SIMILARITY_ALIASES = {"cos_sim": "cos_sim", "cosine": "cos_sim", "pytorch_cos_sim": "cos_sim",
                       "dot_score": "dot_score", "dot": "dot_score"}


def similarity_name(name: str, loss: str) -> str:
    """Canonical name ('cos_sim' or 'dot_score') of a similarity given by name (``util.cos_sim`` spellings accepted)."""
    key = str(name).rsplit(".", 1)[-1]
    if key not in _SIMILARITY_ALIASES:
        raise ValueError(f"{loss}: unknown similarity_fct {name!r}; supported: 'cos_sim' (default), 'dot_score'")
    return _SIMILARITY_ALIASES[key]


def metric_name(name: str, choices: dict[str, str], loss: str, argument: str = "distance_metric") -> str:
    """Resolves a distance-metric spelling (``"cosine"``, ``"TripletDistanceMetric.COSINE"``, ...) to its canonical name."""
    key = str(name).rsplit(".", 1)[-1].lower()
    if key not in choices:
        supported = sorted(set(choices.values()))
        raise ValueError(f"{loss}: unknown {argument} {name!r}; supported: {supported}")
    return choices[key]


# --------------------------------------------------------------------------------------------------
# Masked reductions
# --------------------------------------------------------------------------------------------------

def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` over ``mask``; 0 when nothing is valid."""
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(values.dtype)


def masked_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0.0))


def zero_padding(embeddings: Sequence[jax.Array], mask: jax.Array) -> tuple[jax.Array, ...]:
    """Replaces padding rows by zeros. Their gradient is then exactly zero, and any NaN a loss's
    backward pass may produce inside a padding row (a norm at 0, say) stops here."""
    return tuple(jnp.where(mask[:, None], e, 0.0) for e in embeddings)


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------

def check_mini_batch(loss: str, mini_batch_size: Any, mini_batch_num_tokens: Any) -> None:
    """The gradient-caching arguments of a loss: ``mini_batch_size`` a positive int, ``mini_batch_num_tokens``
    a positive int or None."""
    if not isinstance(mini_batch_size, int) or mini_batch_size < 1:
        raise ValueError(f"{loss}: mini_batch_size must be a positive integer, got {mini_batch_size!r}")
    if mini_batch_num_tokens is not None and (isinstance(mini_batch_num_tokens, bool) or not isinstance(
            mini_batch_num_tokens, int) or mini_batch_num_tokens < 1):
        raise ValueError(f"{loss}: mini_batch_num_tokens must be a positive integer or None, "
                         f"got {mini_batch_num_tokens!r}")


def _where(source: str) -> str:
    return f"{source}: " if source else ""


def check_labels_numeric(loss: str, labels: Any, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{_where(source)}{loss} expects one label per example (a 1-D column), got shape {labels.shape}")
    if labels.dtype == object or not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"{_where(source)}{loss} expects numeric labels, got dtype {labels.dtype}")
    if labels.size and not np.all(np.isfinite(labels.astype(np.float64))):
        row = int(np.argmin(np.isfinite(labels.astype(np.float64))))
        raise ValueError(f"{_where(source)}{loss} expects finite labels; the label column has NaN or inf "
                         f"(first at row {row}: {labels[row]})")
    return labels


def check_vector_labels(loss: str, labels: Any, source: str, allow_neg_inf: bool = False) -> np.ndarray:
    """Labels that are vectors, ``[rows, *shape]``: numbers, finite (``allow_neg_inf``: -inf passes, a
    candidate left out); the error names the first bad row."""
    labels = np.asarray(labels)
    if labels.dtype == object or not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"{_where(source)}{loss} expects numeric labels, got dtype {labels.dtype}")
    values = labels.astype(np.float64).reshape(len(labels), int(np.prod(labels.shape[1:])))
    bad = np.isnan(values) | (values == np.inf) | (~np.isfinite(values) if not allow_neg_inf else False)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        allowed = " (-inf leaves a candidate out)" if allow_neg_inf else ""
        raise ValueError(f"{_where(source)}{loss} expects finite labels{allowed}; the label column has NaN or inf "
                         f"(first at row {row}: value {col} is {values[row, col]})")
    return labels


def check_labels_integer(loss: str, labels: Any, source: str, what: str = "integer class ids") -> np.ndarray:
    labels = check_labels_numeric(loss, labels, source)
    if labels.size and not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            bad = labels[np.mod(labels, 1) != 0][:3]
            row = int(np.argmax(np.mod(labels, 1) != 0))
            raise ValueError(f"{_where(source)}{loss} expects {what}, got non-integer labels such as {bad.tolist()} "
                             f"(first at row {row})")
    return labels


def check_labels_range(loss: str, labels: np.ndarray, low: float, high: float, source: str, hint: str = "",
                       high_inclusive: bool = True) -> None:
    if not labels.size:
        return
    lo, hi = labels.min(), labels.max()
    above = hi > high if high_inclusive else hi >= high
    if lo < low or above:
        interval = f"[{low}, {high}]" if high_inclusive else f"[{low}, {high})"
        outside = (labels < low) | ((labels > high) if high_inclusive else (labels >= high))
        row = int(np.argmax(outside))
        raise ValueError(f"{_where(source)}{loss} expects labels in {interval}, got values from {lo} to {hi} "
                         f"(first outside at row {row}: {labels[row]})" + (f"; {hint}" if hint else ""))


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------

def with_sentence_ids(features: Sequence[dict]) -> tuple[dict, ...]:
    """Unpacked columns with ``sentence_ids`` (each token's sentence in the global batch, the key of its
    dropout masks): row b of column c of C is sentence ``b * C + c`` (:func:`jaxsbert.data.packing.sentence_index`).
    Columns that carry them already keep theirs, as do features that are not token ids (no ``input_ids``)."""
    features = tuple(features)
    out = []
    for c, f in enumerate(features):
        if "sentence_ids" not in f and "input_ids" in f:
            shape = jnp.shape(f["input_ids"])
            ids = sentence_index(jnp.arange(shape[0], dtype=jnp.int32), len(features))[:, c]
            f = {**f, "sentence_ids": jnp.broadcast_to(ids[:, None], shape).astype(jnp.int32)}
        out.append(f)
    return tuple(out)


def group_columns(features: Sequence[dict]) -> list[list[int]]:
    """Columns grouped by identical feature structure, shapes and dtypes (in column order)."""
    groups: dict[Any, list[int]] = {}
    for c, f in enumerate(features):
        leaves, tree = jax.tree_util.tree_flatten(f)
        key = (tree, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
        groups.setdefault(key, []).append(c)
    return list(groups.values())


def embed_columns(embed_fn: EmbedFn, params: Any, features: Sequence[dict], rng: jax.Array | None) -> tuple:
    """Each column's embeddings. Columns with the same feature shapes go through the encoder as one
    concatenated batch (rows column-major). Every call gets ``rng``: the columns' dropout masks differ
    by their tokens' ``sentence_ids`` (:func:`with_sentence_ids`), not by their keys."""
    out: list = [None] * len(features)
    for columns in group_columns(features):
        if len(columns) == 1:
            out[columns[0]] = embed_fn(params, features[columns[0]], rng)
            continue
        merged = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *[features[c] for c in columns])
        emb = embed_fn(params, merged, rng)
        for i, part in enumerate(jnp.split(emb, len(columns), axis=0)):
            out[columns[i]] = part
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Loss:
    """Base class. Subclasses set the class attributes and implement :meth:`compute`.

    Class attributes:
      ``name``: the sentence-transformers class name.
      ``min_columns`` / ``max_columns``: how many input columns the loss takes (``None``: no maximum).
      ``label_mode``: ``"none"`` (no label column), ``"required"``, or ``"optional"``.
      ``columns_doc`` / ``label_doc``: what the columns and the label are, for error messages and docs.
      ``head_from_model``: the head is made from the model's parameters (``init_head(rng, dim, params=...)``:
      ContrastiveTension's model1, a trainable copy of the model); the trainer passes them, keeps the head out
      of the exported model and trains the whole word-embedding table.
      ``supports_packing``: the loss trains on packed batches (``data.packing="auto"`` leaves the datasets of
      the others unpacked, and ``True`` is refused for them).
    """
    name: ClassVar[str] = "Loss"
    min_columns: ClassVar[int] = 2
    max_columns: ClassVar[Optional[int]] = 2
    label_mode: ClassVar[str] = "none"
    columns_doc: ClassVar[str] = "(anchor, positive)"
    label_doc: ClassVar[str] = "none"
    head_from_model: ClassVar[bool] = False
    supports_packing: ClassVar[bool] = True

    # ---- what subclasses implement ------------------------------------------------------------
    def compute(self, head_params: Any, embeddings: tuple[jax.Array, ...], labels: jax.Array | None,
                mask: jax.Array) -> jax.Array:
        """The loss on checked inputs (``mask`` is a [B] bool array; padding rows already zeroed)."""
        raise NotImplementedError

    def check_label_values(self, labels: np.ndarray, source: str) -> None:
        """Checks the values of a label column (called by :meth:`check_inputs`); default: numeric."""
        check_labels_numeric(self.name, labels, source)

    def check_label_shape(self, shape: tuple[int, ...], num_columns: int, embedding_dim: Optional[int] = None,
                          source: str = "") -> None:
        """Checks the shape of one row's label, ``()`` for a number, ``(n,)`` for a list of n numbers, ``(C, D)``
        for a list of lists, for a batch of ``num_columns`` input columns whose embeddings have
        ``embedding_dim`` dimensions (None: not known here). Default: a number per row. Called by
        :meth:`check_inputs` (without the dimension), by the trainer before anything compiles (with the
        model's) and when the loss is traced."""
        if tuple(shape) != ():
            raise ValueError(f"{_where(source)}{self.expects()}; got labels that are lists "
                             f"(shape {tuple(shape)} per row)")

    # ---- the public interface -----------------------------------------------------------------
    def init_head(self, rng: jax.Array, embedding_dim: int) -> Any:
        """The loss's trainable parameters (a pytree); ``{}`` for losses without any."""
        return {}

    def head_state_dict(self, head_params: Any) -> dict[str, np.ndarray]:
        """The head as a PyTorch state dict of the sentence-transformers loss module (``{}`` when none)."""
        return {}

    def frozen_params(self, encoder: Any) -> Any:
        """Parameters the loss uses but never trains (GISTEmbedLoss's guide model), for training ``encoder``;
        ValueError when they cannot go with it. None (the default): none. The trainer keeps them in the train
        state's ``frozen`` entry (sharded like the model, outside the optimizer, gradients and checkpoints)
        and passes them to :meth:`value_and_grad` as ``frozen``."""
        return None

    def expects(self) -> str:
        """One line saying what the loss takes, for error messages."""
        if self.max_columns is None:
            n = f"at least {self.min_columns}"
        elif self.min_columns == self.max_columns:
            n = str(self.min_columns)
        else:
            n = f"{self.min_columns} to {self.max_columns}"
        lab = {"none": "no label column", "required": f"a label column ({self.label_doc})",
               "optional": f"an optional label column ({self.label_doc})"}[self.label_mode]
        return f"{self.name} expects {n} input column(s) {self.columns_doc} and {lab}"

    def check_inputs(self, num_columns: int, labels: np.ndarray | None, source: str = "") -> None:
        """Raises ValueError (saying what the loss expects) if a dataset with ``num_columns`` input
        columns and this label column (``None``: no label column) does not fit the loss."""
        if num_columns < self.min_columns or (self.max_columns is not None and num_columns > self.max_columns):
            raise ValueError(f"{_where(source)}{self.expects()}; got {num_columns} input column(s)")
        if labels is None and self.label_mode == "required":
            raise ValueError(f"{_where(source)}{self.expects()}; the dataset has no label column "
                             "(a column named 'label' or 'score')")
        if labels is not None and self.label_mode == "none":
            raise ValueError(f"{_where(source)}{self.expects()}; the dataset has a label column, which this loss "
                             "would ignore: remove it (or rename it if it is an input)")
        if labels is not None:
            labels = np.asarray(labels)
            self.check_label_shape(labels.shape[1:], num_columns, None, source)
            self.check_label_values(labels, source)

    def __call__(self, head_params: Any, embeddings: Sequence[jax.Array], labels: jax.Array | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        """The loss value (a float32 scalar) on one batch; see the module docstring."""
        return self.compute(head_params, *self.checked_inputs(embeddings, labels, mask))

    def checked_inputs(self, embeddings: Sequence[jax.Array], labels: jax.Array | None,
                       mask: jax.Array | None) -> tuple[tuple[jax.Array, ...], jax.Array | None, jax.Array]:
        """``(embeddings, labels, mask)`` checked (ValueError saying what the loss expects), as float32 / a [B]
        bool mask, padding rows zeroed: what :meth:`compute` takes."""
        embeddings = tuple(jnp.asarray(e, jnp.float32) for e in embeddings)
        n = len(embeddings)
        if n < self.min_columns or (self.max_columns is not None and n > self.max_columns):
            raise ValueError(f"{self.expects()}; got {n} embedding array(s)")
        shapes = {e.shape for e in embeddings}
        if len(shapes) != 1 or len(embeddings[0].shape) != 2:
            raise ValueError(f"{self.name} expects every column's embeddings as [B, D] arrays of one shape, "
                             f"got shapes {[e.shape for e in embeddings]}")
        batch = embeddings[0].shape[0]
        if labels is None and self.label_mode == "required":
            raise ValueError(f"{self.expects()}; got labels=None")
        if labels is not None and self.label_mode == "none":
            raise ValueError(f"{self.expects()}; got labels")
        if labels is not None:
            labels = jnp.asarray(labels)
            if labels.shape[:1] != (batch,):
                more = " ..." if labels.ndim > 1 else ""
                raise ValueError(f"{self.name} expects one label per row, shape ({batch},{more}), got {labels.shape}")
            self.check_label_shape(labels.shape[1:], n, embeddings[0].shape[1])
        if mask is None:
            mask = jnp.ones((batch,), bool)
        else:
            mask = jnp.asarray(mask)
            if mask.shape != (batch,):
                raise ValueError(f"{self.name} expects a [B] validity mask of shape ({batch},), got {mask.shape}")
            mask = mask.astype(bool)
            embeddings = zero_padding(embeddings, mask)
        return embeddings, labels, mask

    def value_and_grad(self, embed_fn: EmbedFn, params: Any, head_params: Any, features: Sequence[dict],
                       labels: jax.Array | None = None, mask: jax.Array | None = None,
                       rng: jax.Array | None = None, frozen: Any = None) -> tuple[jax.Array, tuple[Any, Any]]:
        """Loss and gradients wrt the model and head parameters for one batch.

        ``features``: one feature dict per input column (arrays with leading axis B), or one packed
        feature dict whose ``slots`` are [B, columns] (:mod:`jaxsbert.data.packing`). Every column is
        embedded as ``embed_fn(params, features[c], rng)`` (``rng=None``: no dropout); columns with identical
        feature shapes are embedded in one call (see :func:`embed_columns`). The dropout masks are keyed by
        each token's sentence in the global batch (``sentence_ids``: added to unpacked columns without them,
        :func:`with_sentence_ids`; packed batches carry theirs), so padded or packed, chunked or not, a
        batch draws the same masks.
        Returns ``(loss, (param_grads, head_grads))``. Losses that cache gradients
        (``grad_cache_mini_batch_size()`` not None) embed and back-propagate in chunks instead,
        with the same result (see :mod:`jaxsbert.losses.gradcache`). ``frozen``: the parameters of
        :meth:`frozen_params` (the train state's ``frozen`` entry for this loss's dataset); ignored here.
        """
        return self.embeddings_value_and_grad(lambda e, h: self(h, e, labels, mask), embed_fn, params,
                                              head_params, features, mask, rng)

    def embeddings_value_and_grad(self, loss_fn: Callable[[tuple, Any], jax.Array], embed_fn: EmbedFn, params: Any,
                                  head_params: Any, features: Sequence[dict], mask: jax.Array | None = None,
                                  rng: jax.Array | None = None) -> tuple[jax.Array, tuple[Any, Any]]:
        """:meth:`value_and_grad` of ``loss_fn(embeddings, head_params)`` (the columns' embeddings -> the loss):
        embedded and differentiated as this loss does (gradient caching included)."""
        if is_packed(features):
            chunk = self.grad_cache_chunk_rows(features["input_ids"].shape[1])
            if chunk is not None:
                from jaxsbert.losses.gradcache import packed_grad_cache_value_and_grad

                return packed_grad_cache_value_and_grad(loss_fn, embed_fn, params, head_params, features, mask,
                                                        rng, chunk, self.name)

            def total_packed(p, h):
                emb = embed_fn(p, features, rng)              # [B, columns, D]
                return loss_fn(tuple(emb[:, c] for c in range(emb.shape[1])), h)

            return jax.value_and_grad(total_packed, argnums=(0, 1))(params, head_params)
        features = tuple(features) if rng is None else with_sentence_ids(features)
        chunk = self.grad_cache_mini_batch_size()
        if chunk is not None:
            from jaxsbert.losses.gradcache import grad_cache_value_and_grad, largest_divisor

            if self.grad_cache_mini_batch_num_tokens():     # a token budget: the rows of the longest column that fit it
                length = max(jnp.shape(f["input_ids"])[-1] for f in features)
                chunk = largest_divisor(jnp.shape(features[0]["input_ids"])[0], self.grad_cache_chunk_rows(length))

            return grad_cache_value_and_grad(loss_fn, embed_fn, params, head_params, features, rng, chunk,
                                             self.name)

        def total(p, h):
            return loss_fn(embed_columns(embed_fn, p, features, rng), h)

        loss, grads = jax.value_and_grad(total, argnums=(0, 1))(params, head_params)
        return loss, grads

    def grad_cache_mini_batch_size(self) -> Optional[int]:
        """Rows per chunk when :meth:`value_and_grad` uses gradient caching; None: one plain pass."""
        return None

    def grad_cache_mini_batch_num_tokens(self) -> Optional[int]:
        """The token budget of a chunk (``mini_batch_num_tokens``), if one is set; None: ``mini_batch_size`` rows."""
        return None

    def grad_cache_chunk_rows(self, length: int) -> Optional[int]:
        """Rows of ``length`` tokens per gradient-caching chunk: ``mini_batch_num_tokens // length`` (at
        least 1) with a token budget, else ``mini_batch_size`` (packed rows hold several sentences each, so a
        packed chunk has the memory of ``mini_batch_size`` padded sentences of that length); None: no caching.
        Without a token budget, an unpadded batch must be a multiple of it; with one, a chunk is the largest
        divisor of the batch's rows that fits the budget."""
        size = self.grad_cache_mini_batch_size()
        if size is None:
            return None
        tokens = self.grad_cache_mini_batch_num_tokens()
        return max(1, int(tokens) // int(length)) if tokens else size

    def config_dict(self) -> dict[str, Any]:
        """Hyper-parameters (like sentence-transformers' ``get_config_dict``)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.config_dict() | {"name": v.name} if isinstance(v, Loss) else v
        return out


class WrapsLoss:
    """What a loss around an inner loss ``self.loss`` (MatryoshkaLoss, AdaptiveLayerLoss, Matryoshka2dLoss) takes
    from it: its columns and labels, and their checks (also the per-batch label checks of data read as it goes)."""

    def expects(self) -> str:
        return f"{self.name} around {self.loss.expects()}"

    def check_inputs(self, num_columns: int, labels: np.ndarray | None, source: str = "") -> None:
        try:
            self.loss.check_inputs(num_columns, labels, source)
        except ValueError as e:
            raise ValueError(f"{self.name} around {self.loss.name}: {e}") from None

    def check_label_values(self, labels: np.ndarray, source: str) -> None:
        self.loss.check_label_values(labels, source)

    def check_label_shape(self, *args, **kwargs) -> None:
        self.loss.check_label_shape(*args, **kwargs)
