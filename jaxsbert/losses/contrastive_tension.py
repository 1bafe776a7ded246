"""Contrastive Tension (Carlsson et al., ICLR 2021): two copies of the encoder pulled together on identical
sentences and apart on different ones. ``ContrastiveTensionLoss`` and ``ContrastiveTensionLossInBatchNegatives``
as in sentence-transformers 6.3.

Both copies are trained. ``model2`` is the model itself (the train state's ``params``: what evaluations see
and what is exported); ``model1`` is a trainable copy of it made when training starts, kept as the loss's head
(the train state's ``heads[dataset]["model1"]``, updated by the same optimizer, saved in the checkpoints, not in
the exported model). ``init_head(rng, dim, params=model_params)`` makes the copy; the trainer passes the
model's parameters to the losses whose ``head_from_model`` is true. The first column goes through model1, the
second (InBatchNegatives: the same, only, column again) through model2, in one jitted step with gradients for
both.

Dropout, as sentence-transformers' two independent modules: model2 draws its masks from the step's key exactly
as any other loss's model does (keyed per token by the sentence's index in the batch,
:mod:`jaxsbert.models.dropout`), model1 from ``jax.random.fold_in(rng, 1)``, so the two copies never share a
mask, even on the same sentence (InBatchNegatives).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.data.packing import is_packed
from jaxsbert.losses.base import (Loss, check_labels_numeric, check_labels_range, masked_sum, similarity_name,
                                  with_sentence_ids)
from jaxsbert.losses.ranking import multiple_negatives_ranking_loss


def model1_rng(rng: jax.Array | None) -> jax.Array | None:
    """The dropout key of model1 (the copy) for a step whose model (model2) gets ``rng``."""
    return None if rng is None else jax.random.fold_in(rng, 1)


def identical_rows(a: dict, b: dict) -> jax.Array:
    """[B] float32: 1 where row i of column ``a`` holds the same token ids as row i of column ``b``, else 0.

    As sentence-transformers infers ContrastiveTensionLoss's labels: with attention masks, only the tokens
    (``attention_mask`` nonzero) are compared, in order (``torch.equal(ids1[mask1], ids2[mask2])``), so padding
    on either side and a different padded length do not matter; without them, the whole rows."""
    ids_a, ids_b = jnp.asarray(a["input_ids"]), jnp.asarray(b["input_ids"])
    if "attention_mask" not in a or "attention_mask" not in b:
        if ids_a.shape != ids_b.shape:
            return jnp.zeros(ids_a.shape[:1], jnp.float32)
        return jnp.all(ids_a == ids_b, axis=1).astype(jnp.float32)

    def tokens(ids, mask):       # the tokens moved to the front, in order; their count
        mask = jnp.asarray(mask) != 0
        order = jnp.argsort(~mask, axis=1, stable=True)
        return jnp.take_along_axis(ids, order, axis=1), jnp.sum(mask, axis=1)

    (ta, na), (tb, nb) = tokens(ids_a, a["attention_mask"]), tokens(ids_b, b["attention_mask"])
    length = max(ta.shape[1], tb.shape[1])
    ta, tb = (jnp.pad(t, ((0, 0), (0, length - t.shape[1]))) for t in (ta, tb))
    inside = jnp.arange(length)[None, :] < na[:, None]
    return ((na == nb) & jnp.all(~inside | (ta == tb), axis=1)).astype(jnp.float32)


def contrastive_tension_pairs(sentences: Sequence[str], batch_size: int, pos_neg_ratio: int = 8,
                              seed: int = 0) -> list[dict]:
    """Rows ``{"sentence1", "sentence2", "label"}`` for ContrastiveTensionLoss, formed as sentence-transformers'
    ``ContrastiveTensionDataLoader`` forms its batches: the sentences shuffled (numpy, ``seed``; not Python's
    ``random``, so not the same order), then in each batch of ``batch_size`` pairs, pair k is positive
    ``(s, s, 1)`` when ``k % pos_neg_ratio == 0`` and negative ``(s, next sentence, 0)`` otherwise; as many
    whole batches as the sentences give. ``batch_size`` must be a multiple of ``pos_neg_ratio``. Keep the
    batches whole (``batch_size`` the same, no shuffling) to keep one positive in every ``pos_neg_ratio`` pairs
    of each batch; shuffled, the ratio holds over the dataset."""
    if batch_size % pos_neg_ratio:
        raise ValueError(f"contrastive_tension_pairs: batch_size {batch_size} must be a multiple of pos_neg_ratio "
                         f"{pos_neg_ratio}")
    order = np.random.default_rng(seed).permutation(len(sentences))
    it = iter(sentences[i] for i in order)
    per_batch = 2 * batch_size - batch_size // pos_neg_ratio
    rows = []
    for _ in range(len(sentences) // per_batch):
        for k in range(batch_size):
            s1 = next(it)
            positive = k % pos_neg_ratio == 0
            rows.append({"sentence1": s1, "sentence2": s1 if positive else next(it), "label": int(positive)})
    return rows


def _copy(params: Any) -> Any:
    """A copy of a parameter tree in new buffers (the copy and the model are donated to the step separately)."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype, copy=True), params)


@dataclasses.dataclass(frozen=True)
class _TwoModels(Loss):
    """What both Contrastive Tension losses share: model1, a trainable copy of the model, as the head."""
    head_from_model: ClassVar[bool] = True

    def init_head(self, rng: jax.Array, embedding_dim: int, params: Any = None) -> dict:
        """``{"model1": a copy of params}``: model1 starts as the model does."""
        if params is None:
            raise ValueError(f"{self.name}.init_head needs the model's parameters (params=...): its head, model1, "
                             "is a trainable copy of the model")
        return {"model1": _copy(params)}

    def _model1(self, head_params: Any) -> Any:
        if not isinstance(head_params, dict) or "model1" not in head_params:
            raise ValueError(f"{self.name} needs its head, model1 (a copy of the model's parameters): pass "
                             "loss.init_head(rng, embedding_dim, params=model_params)")
        return head_params["model1"]


@dataclasses.dataclass(frozen=True)
class ContrastiveTensionLoss(_TwoModels):
    """Binary cross-entropy (a sum over the rows, as ``BCEWithLogitsLoss(reduction="sum")``) of the dot
    products of the pairs' embeddings, the first sentence by model1 (the copy), the second by model2 (the
    model)::

        x_i = model1(s1_i) · model2(s2_i);   loss = Σ_i [ log(1 + exp(x_i)) − y_i x_i ]

    Columns (sentence1, sentence2); label optional: 1 for a positive pair, 0 for a negative one (values in
    [0, 1]). Without a label column, ``y_i`` is 1 where the two sentences have the same token ids and 0
    elsewhere (:func:`identical_rows`, as sentence-transformers infers them). Make the pairs as
    :func:`contrastive_tension_pairs` does (sentence-transformers' ``ContrastiveTensionDataLoader``: one
    identical pair per ``pos_neg_ratio=8``). Called on embeddings, the loss needs the labels;
    :meth:`value_and_grad` infers them. Padded batches only: packed batches hold both columns in the same rows,
    which two different models cannot share (the trainer does not pack its datasets, ``data.packing="auto"``,
    and refuses ``True``). No hyper-parameters.
    """
    name: ClassVar[str] = "ContrastiveTensionLoss"
    label_mode: ClassVar[str] = "optional"
    columns_doc: ClassVar[str] = "(sentence1, sentence2)"
    label_doc: ClassVar[str] = "1 identical pair, 0 different; inferred from the token ids when absent"
    supports_packing: ClassVar[bool] = False

    def check_label_values(self, labels, source):
        labels = check_labels_numeric(self.name, labels, source)
        check_labels_range(self.name, labels, 0, 1, source)

    def compute(self, head_params, embeddings, labels, mask):
        if labels is None:
            raise ValueError(f"{self.name} on embeddings needs the labels (1 identical pair, 0 different): "
                             "value_and_grad infers them from the token ids, or use identical_rows(features1, "
                             "features2)")
        x = jnp.sum(embeddings[0] * embeddings[1], axis=-1)
        y = labels.astype(jnp.float32)
        bce = jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
        return masked_sum(bce, mask)

    def value_and_grad(self, embed_fn, params, head_params, features, labels=None, mask=None, rng=None, frozen=None):
        """Loss and gradients ``(loss, (model2 grads, {"model1": model1 grads}))``: column 1 through model1
        (dropout key ``fold_in(rng, 1)``), column 2 through the model (``rng``); the labels, when None, from the
        columns' token ids (:func:`identical_rows`)."""
        if is_packed(features):
            raise ValueError(f"{self.name} cannot train on packed batches (its two columns go through two "
                             "different models, and a packed row holds both): set data.packing to False or "
                             "'auto' for this dataset")
        features = tuple(features)
        if len(features) != 2:
            raise ValueError(f"{self.expects()}; got {len(features)} feature column(s)")
        self._model1(head_params)
        if labels is None:
            labels = identical_rows(features[0], features[1])
        features = features if rng is None else with_sentence_ids(features)

        def total(p, h):
            first = embed_fn(h["model1"], features[0], model1_rng(rng))
            second = embed_fn(p, features[1], rng)
            return self(h, (first, second), labels, mask)

        return jax.value_and_grad(total, argnums=(0, 1))(params, head_params)


@dataclasses.dataclass(frozen=True)
class ContrastiveTensionLossInBatchNegatives(_TwoModels):
    """Contrastive Tension with in-batch negatives: every sentence of the batch through both model1 (the copy)
    and model2 (the model); sentence i's two embeddings are the positive pair and every other row a negative,
    in both directions, with a trainable temperature::

        S_ij = exp(t) · sim(model1(s_i), model2(s_j));   loss = ½ [ mean_i CE(S_i·, i) + mean_j CE(S_·j, j) ]

    One column (sentence); no label. ``scale=20.0``: ``t`` (the head's ``logit_scale``, trained with the
    models) starts at ``log(scale)``; ``similarity_fct="cos_sim"`` (or ``"dot_score"``, then usually
    ``scale=1``). Padding rows are neither anchors nor candidates. Packed batches are supported (both models
    embed the same packed rows). The head is ``{"model1": ..., "logit_scale": float32 []}``;
    ``head_state_dict`` gives ``logit_scale`` (model1 is a whole model, kept in the checkpoints).
    """
    name: ClassVar[str] = "ContrastiveTensionLossInBatchNegatives"
    min_columns: ClassVar[int] = 1
    max_columns: ClassVar[Optional[int]] = 1
    columns_doc: ClassVar[str] = "(sentence,)"

    scale: float = 20.0
    similarity_fct: str = "cos_sim"

    def __post_init__(self):
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0 \
                or not np.isfinite(self.scale):
            raise ValueError(f"{self.name}: scale must be a positive number, got {self.scale!r}")
        object.__setattr__(self, "similarity_fct", similarity_name(self.similarity_fct, self.name))

    def init_head(self, rng: jax.Array, embedding_dim: int, params: Any = None) -> dict:
        """``{"model1": a copy of params, "logit_scale": log(scale)}``."""
        return {**super().init_head(rng, embedding_dim, params),
                "logit_scale": jnp.asarray(np.float32(np.log(np.float32(self.scale))), jnp.float32)}

    def head_state_dict(self, head_params: Any) -> dict[str, np.ndarray]:
        return {"logit_scale": np.asarray(head_params["logit_scale"], np.float32)}

    def compute(self, head_params, embeddings, labels, mask):
        if not isinstance(head_params, dict) or "logit_scale" not in head_params:
            raise ValueError(f"{self.name} needs its head's logit_scale: pass loss.init_head(rng, embedding_dim, "
                             "params=model_params)")
        return multiple_negatives_ranking_loss(
            (embeddings[0], embeddings[1]), mask, scale=jnp.exp(jnp.asarray(head_params["logit_scale"], jnp.float32)),
            similarity_fct=self.similarity_fct, directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction")

    def __call__(self, head_params: Any, embeddings: Sequence[jax.Array], labels: jax.Array | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        """The loss on ``(model1 embeddings, model2 embeddings)`` of the one column (two [B, D] arrays)."""
        embeddings = tuple(embeddings)
        if len(embeddings) != 2:
            raise ValueError(f"{self.name} on embeddings takes the column's embeddings by model1 and by model2 "
                             f"(two [B, D] arrays), got {len(embeddings)}")
        (first,), labels, mask = self.checked_inputs(embeddings[:1], labels, mask)
        (second,), _, _ = self.checked_inputs(embeddings[1:], labels, mask)
        if first.shape != second.shape:
            raise ValueError(f"{self.name}: model1's and model2's embeddings differ in shape: {first.shape} and "
                             f"{second.shape}")
        return self.compute(head_params, (first, second), labels, mask)

    def value_and_grad(self, embed_fn, params, head_params, features, labels=None, mask=None, rng=None, frozen=None):
        """Loss and gradients ``(loss, (model2 grads, {"model1": ..., "logit_scale": ...}))``: the column
        through model1 (dropout key ``fold_in(rng, 1)``) and through the model (``rng``); padded or packed."""
        self._model1(head_params)
        if is_packed(features):
            def embed(p, r):
                return embed_fn(p, features, r)[:, 0]          # [B, 1, D] -> [B, D]
        else:
            features = tuple(features)
            if len(features) != 1:
                raise ValueError(f"{self.expects()}; got {len(features)} feature column(s)")
            column = (features if rng is None else with_sentence_ids(features))[0]

            def embed(p, r):
                return embed_fn(p, column, r)

        def total(p, h):
            return self(h, (embed(h["model1"], model1_rng(rng)), embed(p, rng)), labels, mask)

        return jax.value_and_grad(total, argnums=(0, 1))(params, head_params)
