"""AdaptiveLayerLoss and Matryoshka2dLoss (2DMSE, Li et al. 2024): an inner loss on the sentence embeddings
of the Transformer's earlier layers too, so that a model cut after layer k still embeds well.

Both need every layer's embeddings of one forward pass: ``embed_fn.all_layers(params, features, rng)`` gives
``[layers + 1, B, D]`` (``jaxsbert.training.step.make_embed_fn`` attaches it for a
:class:`~jaxsbert.models.sentence_model.SentenceModel`): the hidden states after each layer (0: the
embeddings, the last: the ordinary output) through the model's Pooling, Dense and Normalize modules, with the
dropout masks of that one pass, as sentence-transformers reuses ``output_hidden_states`` of one forward.

**Which layers (and dimensions) a step uses.** sentence-transformers draws them with Python's ``random``. Here
the draw is a function of the ``rng`` given to :meth:`AdaptiveLayerLoss.value_and_grad` (the train step's
key, the same on every device and host), folded with a constant: so it is the same whatever the topology,
packed or not, and on a resumed run. ``rng=None`` (no dropout, e.g. a test) draws from key 0, the same
every call. :meth:`AdaptiveLayerLoss.sample_layers` and :meth:`Matryoshka2dLoss.sample_dims` say what a key draws.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.data.packing import is_packed
from jaxsbert.losses.base import EmbedFn, Loss, WrapsLoss, group_columns, normalize, with_sentence_ids
from jaxsbert.losses.matryoshka import MatryoshkaLoss

LAYER_WEIGHTINGS = ("uniform", "log", "linear")
_SALT = 0x2D4D5345      # folded into the step's key: the draw is independent of the dropout masks


def layer_weight(weighting: str, layer: int) -> float:
    """Weight of prior layer ``layer`` (0: the embeddings' output): uniform 1, log ``1 / (1 + ln(1 + i))``
    (ESE), linear ``1 / (1 + i)``."""
    if weighting == "log":
        return 1.0 / (1.0 + math.log(1 + layer))
    if weighting == "linear":
        return 1.0 / (1 + layer)
    return 1.0


def draw_keys(rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(layers key, dimensions key) of a step's ``rng`` (None: key 0)."""
    key = jax.random.PRNGKey(0) if rng is None else rng
    layers, dims = jax.random.split(jax.random.fold_in(key, _SALT))
    return layers, dims


def embed_all_layers(all_layers: EmbedFn, params: Any, features: Sequence[dict], rng) -> tuple[jax.Array, ...]:
    """Each column's every-layer embeddings ``[layers + 1, B, D]``: columns with the same feature shapes in one
    forward pass, as :func:`jaxsbert.losses.base.embed_columns` (rows column-major; split on axis 1)."""
    out: list = [None] * len(features)
    for columns in group_columns(features):
        merged = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *[features[c] for c in columns])
        emb = all_layers(params, merged, rng)
        for i, part in enumerate(jnp.split(emb, len(columns), axis=1)):
            out[columns[i]] = part
    return tuple(out)


def _kl_batchmean(layer: tuple, final: tuple, mask: jax.Array, temperature: float) -> jax.Array:
    """``F.kl_div(log_softmax(layer / T), softmax(final / T).detach(), reduction="batchmean")`` over the valid
    rows of every column (sentence-transformers concatenates the columns: the mean is over columns x rows)."""
    total = 0.0
    for x, y in zip(layer, final):
        target = jax.lax.stop_gradient(jax.nn.softmax(y / temperature, axis=-1))
        log_q = jax.nn.log_softmax(x / temperature, axis=-1)
        rows = jnp.sum(jax.scipy.special.xlogy(target, target) - target * log_q, axis=-1)
        total = total + jnp.sum(jnp.where(mask, rows, 0.0))
    return total / (len(layer) * jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32))


class _LayerLoss(WrapsLoss, Loss):
    """What AdaptiveLayerLoss and Matryoshka2dLoss share (fields are the subclasses')."""

    def _check(self) -> None:
        if not isinstance(self.loss, Loss):
            raise ValueError(f"{self.name}: 'loss' must be the inner loss (a Loss from jaxsbert.losses.get_loss), "
                             f"got {self.loss!r}")
        if isinstance(self.loss, _LayerLoss):
            raise ValueError(f"{self.name} cannot wrap {self.loss.name}: both take the layers' embeddings")
        if type(self.loss).value_and_grad is not Loss.value_and_grad:
            raise ValueError(f"{self.name} cannot wrap {self.loss.name}: it is computed from more than its columns' "
                             "sentence embeddings (another model, a decoder, ...)")
        if self.loss.grad_cache_mini_batch_size() is not None:
            raise ValueError(f"{self.name} cannot wrap {self.loss.name}, which caches gradients (as in "
                             "sentence-transformers); use its uncached version (e.g. MultipleNegativesRankingLoss, "
                             "MegaBatchMarginLoss with use_mini_batched_version=False)")
        if isinstance(self.n_layers_per_step, bool) or not isinstance(self.n_layers_per_step, int):
            raise ValueError(f"{self.name}: n_layers_per_step must be an integer, got {self.n_layers_per_step!r}")
        if self.layer_weighting not in LAYER_WEIGHTINGS:
            raise ValueError(f"{self.name}: layer_weighting must be one of {list(LAYER_WEIGHTINGS)} (a callable is "
                             f"not supported), got {self.layer_weighting!r}")

    # The head is the inner loss's (columns and labels: WrapsLoss).
    def init_head(self, rng: jax.Array, embedding_dim: int) -> Any:
        return self.loss.init_head(rng, embedding_dim)

    def head_state_dict(self, head_params: Any) -> dict[str, np.ndarray]:
        return self.loss.head_state_dict(head_params)

    # ---- the layers ----------------------------------------------------------------------------
    def sample_layers(self, rng: jax.Array | None, num_prior: int) -> Optional[jax.Array]:
        """The prior layers (0 .. num_prior − 1; 0 is the embeddings' output) this step's ``rng`` uses: an int
        array of ``n_layers_per_step`` distinct layers in the order they are added, or None for all of them
        (``n_layers_per_step`` <= 0 or >= ``num_prior``)."""
        n = self.n_layers_per_step
        if not 0 < n < num_prior:
            return None
        return jax.random.choice(draw_keys(rng)[0], num_prior, (n,), replace=False)

    def inner(self, head_params: Any, embeddings: tuple, labels, mask, rng, pass_index: int) -> jax.Array:
        """The inner loss on one layer's embeddings (``pass_index``: 0 the last layer, j + 1 the j-th drawn)."""
        return self.loss(head_params, embeddings, labels, mask)

    def __call__(self, head_params: Any, embeddings, labels=None, mask=None, rng=None) -> jax.Array:
        """The loss from each column's every-layer embeddings ``[layers + 1, B, D]`` (``embed_fn.all_layers``);
        ``rng`` draws the layers (see the module docstring)."""
        embeddings = tuple(jnp.asarray(e, jnp.float32) for e in embeddings)
        if not embeddings or any(e.ndim != 3 for e in embeddings) or len({e.shape for e in embeddings}) != 1:
            raise ValueError(f"{self.name} is computed from every layer's embeddings, one [layers + 1, B, D] array per "
                             f"column (embed_fn.all_layers, see jaxsbert.losses.adaptive_layer), got shapes "
                             f"{[e.shape for e in embeddings]}; it cannot be evaluated on the final embeddings alone")
        layers, batch = embeddings[0].shape[:2]
        if layers < 2:
            raise ValueError(f"{self.name} needs at least one layer before the last; got {layers} hidden states")
        mask = jnp.ones((batch,), bool) if mask is None else jnp.asarray(mask).astype(bool)
        embeddings = tuple(jnp.where(mask[None, :, None], e, 0.0) for e in embeddings)
        final = tuple(e[-1] for e in embeddings)
        loss = self.inner(head_params, final, labels, mask, rng, 0) * self.last_layer_weight
        num_prior = layers - 1
        drawn = self.sample_layers(rng, num_prior)
        chosen = range(num_prior) if drawn is None else [drawn[j] for j in range(drawn.shape[0])]
        weights = jnp.asarray([layer_weight(self.layer_weighting, i) for i in range(num_prior)], jnp.float32)
        for j, layer in enumerate(chosen):
            current = tuple(e[layer] for e in embeddings)
            layer_loss = self.inner(head_params, current, labels, mask, rng, j + 1)
            loss = loss + layer_loss * weights[layer] / len(chosen) * self.prior_layers_weight
            if self.kl_temperature > 0:
                kl = _kl_batchmean(current, final, mask, self.kl_temperature)
                loss = loss + kl * self.kl_temperature * self.kl_div_weight
        return jnp.asarray(loss, jnp.float32)

    def value_and_grad(self, embed_fn: EmbedFn, params: Any, head_params: Any, features, labels=None, mask=None,
                       rng=None, frozen=None):
        """As :meth:`Loss.value_and_grad`, from one forward pass of ``embed_fn.all_layers`` per column group
        (packed batches too: ``[layers + 1, B, columns, D]``); ``rng`` keys dropout and draws the layers.
        ``frozen`` is ignored (an inner loss with frozen parameters is refused)."""
        all_layers = getattr(embed_fn, "all_layers", None)
        if all_layers is None:
            raise ValueError(f"{self.name} needs every layer's sentence embeddings: embed_fn.all_layers(params, "
                             "features, rng) -> [layers + 1, B, D], which jaxsbert.training.step.make_embed_fn "
                             "attaches for a SentenceModel; this embed_fn has none")
        if is_packed(features):
            def total(p, h):
                emb = all_layers(p, features, rng)                      # [layers + 1, B, columns, D]
                return self(h, tuple(emb[:, :, c] for c in range(emb.shape[2])), labels, mask, rng)
        else:
            features = tuple(features) if rng is None else with_sentence_ids(features)

            def total(p, h):
                return self(h, embed_all_layers(all_layers, p, features, rng), labels, mask, rng)

        return jax.value_and_grad(total, argnums=(0, 1))(params, head_params)


@dataclasses.dataclass(frozen=True)
class AdaptiveLayerLoss(_LayerLoss):
    """The inner loss on the last layer and on ``n_layers_per_step`` earlier layers, plus a KL term pulling
    each earlier layer's embeddings towards the last layer's (sentence-transformers' ``AdaptiveLayerLoss``)::

        loss = last_layer_weight · inner(E_L)
             + Σ_{k ∈ K} [ prior_layers_weight · w(k) / |K| · inner(E_k)
                          + kl_div_weight · T · KL(softmax(E_L / T) ‖ softmax(E_k / T)) ]

    ``E_k``: each column's sentence embeddings from the hidden states after layer k (k = 0: the embeddings'
    output; L: the last layer, the ordinary embeddings), through the model's Pooling/Dense/Normalize, all from
    one forward pass. ``K``: ``n_layers_per_step`` distinct layers of 0 .. L − 1 drawn from the step's key (all
    of them if ``n_layers_per_step`` <= 0 or >= L; see the module docstring). ``w(k)``: ``layer_weighting``
    ``"uniform"`` (1), ``"log"`` (``1 / (1 + ln(1 + k))``) or ``"linear"`` (``1 / (1 + k)``). KL is
    ``batchmean`` over the columns' valid rows, the target ``softmax(E_L / T)`` held constant; ``T =
    kl_temperature``, and ``kl_temperature=0`` drops the term. Input columns and labels: the inner loss's (any
    jaxsbert loss that does not cache gradients).
    """
    name: ClassVar[str] = "AdaptiveLayerLoss"

    loss: Optional[Loss] = None
    n_layers_per_step: int = 1
    last_layer_weight: float = 1.0
    prior_layers_weight: float = 1.0
    kl_div_weight: float = 1.0
    kl_temperature: float = 0.3
    layer_weighting: str = "uniform"

    def __post_init__(self):
        self._check()


@dataclasses.dataclass(frozen=True)
class Matryoshka2dLoss(_LayerLoss):
    """AdaptiveLayerLoss around MatryoshkaLoss (sentence-transformers' ``Matryoshka2dLoss``): the formula of
    :class:`AdaptiveLayerLoss` with ``inner`` the Matryoshka sum over ``n_dims_per_step`` of the dimensions::

        inner(E) = Σ_{k ∈ D} w_k · loss(normalize(e[:, :d_k]) for each column of E)

    ``D``: ``n_dims_per_step`` distinct dimensions of ``matryoshka_dims`` (all of them if <= 0 or >= their
    number), drawn anew for the last layer and for each earlier layer from the step's key (see the module
    docstring; :meth:`sample_dims`). Defaults as sentence-transformers (the 2DMSE paper):
    ``n_layers_per_step=1``, ``n_dims_per_step=1``; ``matryoshka_weights=None`` is 1 each. Input columns and
    labels: ``loss``'s (not SoftmaxLoss, not a gradient-caching loss).
    """
    name: ClassVar[str] = "Matryoshka2dLoss"

    loss: Optional[Loss] = None
    matryoshka_dims: tuple[int, ...] = ()
    matryoshka_weights: Optional[tuple[float, ...]] = None
    n_layers_per_step: int = 1
    n_dims_per_step: int = 1
    last_layer_weight: float = 1.0
    prior_layers_weight: float = 1.0
    kl_div_weight: float = 1.0
    kl_temperature: float = 0.3
    layer_weighting: str = "uniform"

    def __post_init__(self):
        self._check()
        if isinstance(self.n_dims_per_step, bool) or not isinstance(self.n_dims_per_step, int):
            raise ValueError(f"{self.name}: n_dims_per_step must be an integer, got {self.n_dims_per_step!r}")
        try:   # MatryoshkaLoss checks the dimensions and sorts them (descending), as sentence-transformers
            matryoshka = MatryoshkaLoss(loss=self.loss, matryoshka_dims=self.matryoshka_dims,
                                        matryoshka_weights=self.matryoshka_weights)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from None
        object.__setattr__(self, "_matryoshka", matryoshka)
        object.__setattr__(self, "matryoshka_dims", matryoshka.matryoshka_dims)
        object.__setattr__(self, "matryoshka_weights", matryoshka.matryoshka_weights)

    def sample_dims(self, rng: jax.Array | None, pass_index: int) -> Optional[jax.Array]:
        """Indices into the (descending) ``matryoshka_dims`` that pass ``pass_index`` uses (0: the last layer,
        j + 1: the j-th drawn earlier layer), ascending; None for all of them."""
        count, n = len(self._matryoshka.matryoshka_dims), self.n_dims_per_step
        if not 0 < n < count:
            return None
        key = jax.random.fold_in(draw_keys(rng)[1], pass_index)
        return jnp.sort(jax.random.choice(key, count, (n,), replace=False))

    def inner(self, head_params, embeddings, labels, mask, rng, pass_index):
        m = self._matryoshka
        drawn = self.sample_dims(rng, pass_index)
        if drawn is None:
            return m(head_params, embeddings, labels, mask)
        full = embeddings[0].shape[-1]
        if max(m.matryoshka_dims) > full:
            raise ValueError(f"{self.name}: matryoshka_dims {m.matryoshka_dims} exceed the embedding dimension {full}")

        def one(dim, weight, emb):
            return weight * self.loss(head_params, tuple(normalize(e[..., :dim]) for e in emb), labels, mask)

        branches = [functools.partial(one, d, w) for d, w in zip(m.matryoshka_dims, m.matryoshka_weights)]
        total = 0.0
        for j in range(drawn.shape[0]):     # only the drawn dimension's branch runs
            total = total + jax.lax.switch(drawn[j], branches, embeddings)
        return total
