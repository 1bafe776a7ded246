"""GISTEmbedLoss and CachedGISTEmbedLoss (Solatorio 2024, arXiv:2402.16829): in-batch-negatives InfoNCE whose
false negatives are picked out by a second, frozen model, the *guide*.

With anchors a_i, positives p_i, optional negatives n^k_i of the model being trained, the guide's embeddings
of the same texts a'_i, p'_i, n'^k_i, ``cos`` the cosine similarity and ``t`` the temperature::

    loss = mean_i [ log sum_{c in C_i} exp(cos(x_i, c) / t) - cos(a_i, p_i) / t ]

``C_i`` holds, for row i, (x_i = a_i) every positive p_j, (with ``contrast_anchors``) every anchor a_j, j != i,
(with ``contrast_positives``, x_i = p_i) every positive p_j, j != i, and every negative n^k_j; a candidate is
dropped from ``C_i`` when the guide finds it more similar to the row's own text than the guide finds the
row's positive, ``cos'(x'_i, c') > cut_i``, with ``g_i = cos'(a'_i, p'_i)`` and
``cut_i = g_i - margin`` (``margin_strategy="absolute"``) or ``g_i - |g_i| * margin`` (``"relative"``). The
row's own positive p_i is never dropped.

The guide is a second jaxsbert model (any supported family) that reads the same token ids as the model being
trained: it must have the model's tokenizer and a ``max_seq_length`` of at least the model's
(sentence-transformers re-tokenizes the texts for a guide with another tokenizer; jaxsbert does not, and
says so before anything compiles). Its parameters are not trained: the trainer keeps them in the train
state's ``frozen`` entry (sharded like the model, outside the optimizer and the checkpoints) and passes
them to :meth:`GISTEmbedLoss.value_and_grad` as ``frozen``.

Padding rows (``mask`` False) are neither anchors nor candidates. The batch is the global one: under
``jax.jit`` with a sharded batch the negatives come from every device.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsbert.losses.base import Loss, normalize, zero_padding
from jaxsbert.losses.gradcache import chunk_layout, largest_divisor, split_chunks
from jaxsbert.losses.ranking import LOGIT_BLOCK, _Cached

MARGIN_STRATEGIES = ("absolute", "relative")


def _row_losses(rows: jax.Array, emb: tuple[jax.Array, ...], guide: tuple[jax.Array, ...], valid: jax.Array, *,
                temperature: float, margin_strategy: str, margin: float, contrast_anchors: bool,
                contrast_positives: bool) -> jax.Array:
    """Per-row losses [c] of the rows ``rows`` [c] (0 on padding rows); ``emb`` / ``guide`` normalised."""
    batch = emb[0].shape[0]
    a, ga = emb[0][rows], guide[0][rows]
    row_valid = valid[rows]
    own = rows[:, None] == jnp.arange(batch)[None, :]                     # [c, B]: row i's own column
    guided_ap = ga @ guide[1].T
    threshold = jnp.sum(jnp.where(own, guided_ap, 0.0), axis=1, keepdims=True)   # g_i, from the same matrix
    cut = threshold - margin if margin_strategy == "absolute" else threshold - jnp.abs(threshold) * margin
    # padding columns drop out of valid rows; a padding row drops nothing (finite logits, zeroed below)
    applies = row_valid[:, None]

    def scores(q, x, guided, keep=None, exclude=None):
        drop = (guided > cut) | ~valid[None, :]
        if keep is not None:
            drop = drop & ~keep
        if exclude is not None:
            drop = drop | exclude
        return jnp.where(drop & applies, -jnp.inf, (q @ x.T) / temperature)

    ap = scores(a, emb[1], guided_ap, keep=own)
    blocks = [ap]
    if contrast_anchors:
        blocks.append(scores(a, emb[0], ga @ guide[0].T, exclude=own))
    if contrast_positives:
        blocks.append(scores(emb[1][rows], emb[1], guide[1][rows] @ guide[1].T, exclude=own))
    for k in range(2, len(emb)):
        blocks.append(scores(a, emb[k], ga @ guide[k].T))
    positive = jnp.sum(jnp.where(own, ap, 0.0), axis=1)
    log_z = jax.nn.logsumexp(jnp.concatenate(blocks, axis=1), axis=1)
    return jnp.where(row_valid, log_z - positive, 0.0)


def gist_embed_loss(embeddings: Sequence[jax.Array], guide_embeddings: Sequence[jax.Array],
                    mask: jax.Array | None = None, *, temperature: float = 0.01, margin_strategy: str = "absolute",
                    margin: float = 0.0, contrast_anchors: bool = True, contrast_positives: bool = True,
                    row_chunk: Optional[int] = None) -> jax.Array:
    """GISTEmbedLoss on (anchor, positive, *negatives) embeddings [B, D] of the model and [B, D'] of the guide
    (see the module docstring). ``row_chunk``: ``row_chunk`` anchors at a time (rematerialised in the backward
    pass); without one, batches whose similarity matrices would exceed ``LOGIT_BLOCK`` elements are chunked
    so that each block fits it. Same value and gradient either way."""
    emb = tuple(normalize(e) for e in embeddings)
    guide = tuple(normalize(jax.lax.stop_gradient(g)) for g in guide_embeddings)
    batch = emb[0].shape[0]
    valid = jnp.ones((batch,), bool) if mask is None else jnp.asarray(mask, bool)
    kwargs = dict(temperature=temperature, margin_strategy=margin_strategy, margin=margin,
                  contrast_anchors=contrast_anchors, contrast_positives=contrast_positives)

    def chunk_total(rows):
        return jnp.sum(_row_losses(rows, emb, guide, valid, **kwargs))

    candidates = batch * (len(emb) - 1 + int(contrast_anchors) + int(contrast_positives))
    if row_chunk is None and 2 * batch * candidates > LOGIT_BLOCK:      # the model's and the guide's matrices
        row_chunk = largest_divisor(batch, max(1, LOGIT_BLOCK // (2 * candidates)))
    if row_chunk is None or row_chunk >= batch or batch % row_chunk:
        total = chunk_total(jnp.arange(batch))
    else:
        _, n_chunks = chunk_layout(batch, row_chunk)
        total = jnp.sum(jax.lax.map(jax.checkpoint(chunk_total), split_chunks(jnp.arange(batch), n_chunks)))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(total.dtype)


def _guide_name(guide: Any) -> str:
    if isinstance(guide, (str, os.PathLike)):
        return str(guide)
    return getattr(guide, "source", None) or type(guide).__name__


@dataclasses.dataclass(frozen=True)
class GISTEmbedLoss(Loss):
    """In-batch-negatives InfoNCE with guided false-negative filtering (see the module docstring for the formula).

    Columns: (anchor, positive) pairs or (anchor, positive, negative) triplets; no label.
    ``guide``: the guide model, a jaxsbert ``SentenceEncoder`` or a model path / bundled id (loaded with
    ``SentenceEncoder.from_pretrained`` when first needed); it must share the trained model's tokenizer.
    Defaults as sentence-transformers: ``temperature=0.01`` (scale 100), ``margin_strategy="absolute"``
    (or ``"relative"``), ``margin=0.0``, ``contrast_anchors=True``, ``contrast_positives=True``.
    ``gather_across_devices`` is accepted and changes nothing: the loss always sees the global batch.

    ``loss(head, embeddings, labels, mask, guide_embeddings=...)`` takes the guide's embeddings of the same
    columns; :meth:`value_and_grad` computes them itself from ``frozen`` (the guide's parameters).
    """
    name: ClassVar[str] = "GISTEmbedLoss"
    min_columns: ClassVar[int] = 2
    max_columns: ClassVar[Optional[int]] = 3
    columns_doc: ClassVar[str] = "(anchor, positive, [negative])"

    guide: Any = None
    temperature: float = 0.01
    margin_strategy: str = "absolute"
    margin: float = 0.0
    contrast_anchors: bool = True
    contrast_positives: bool = True
    gather_across_devices: bool = False

    def __post_init__(self):
        if self.guide is None:
            raise ValueError(f"{self.name}: guide is required: a model path or bundled id (e.g. "
                             "'sentence-transformers/all-MiniLM-L6-v2'), or a SentenceEncoder")
        if not isinstance(self.guide, (str, os.PathLike)) and not (hasattr(self.guide, "params")
                                                                   and hasattr(self.guide, "config")):
            raise ValueError(f"{self.name}: guide must be a model path, a bundled id or a SentenceEncoder, "
                             f"got {type(self.guide).__name__}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ValueError(f"{self.name}: temperature must be a positive number, got {self.temperature!r}")
        if self.margin_strategy not in MARGIN_STRATEGIES:
            raise ValueError(f"{self.name}: margin_strategy must be 'absolute' or 'relative', "
                             f"got {self.margin_strategy!r}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not math.isfinite(self.margin):
            raise ValueError(f"{self.name}: margin must be a finite number, got {self.margin!r}")
        for flag in ("contrast_anchors", "contrast_positives", "gather_across_devices"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{self.name}: {flag} must be true or false, got {getattr(self, flag)!r}")

    # ---- the guide ---------------------------------------------------------------------------------
    def guide_encoder(self):
        """The guide as a ``SentenceEncoder`` (loaded once from ``guide`` when that is a path or id)."""
        encoder = self.__dict__.get("_guide_encoder")
        if encoder is None:
            if isinstance(self.guide, (str, os.PathLike)):
                from jaxsbert.encoder import SentenceEncoder
                from jaxsbert.models.bundled import resolve_model
                try:
                    encoder = SentenceEncoder.from_pretrained(resolve_model(str(self.guide)))
                except FileNotFoundError as e:
                    raise FileNotFoundError(f"{self.name}: guide: {e}") from None
            else:
                encoder = self.guide
            object.__setattr__(self, "_guide_encoder", encoder)
        return encoder

    def frozen_params(self, encoder: Any) -> Any:
        """The guide's parameters (host copies) for training ``encoder``; ValueError if the guide cannot read
        ``encoder``'s token ids (another vocabulary, or a shorter ``max_seq_length``)."""
        guide = self.guide_encoder()
        problem = None
        if guide.tokenizer.hf.get_vocab() != encoder.tokenizer.hf.get_vocab():
            problem = "its tokenizer's vocabulary differs from the model's"
        elif guide.max_seq_length < encoder.max_seq_length:
            problem = (f"its max_seq_length {guide.max_seq_length} is below the model's {encoder.max_seq_length} "
                       f"(set the config's max_seq_length to at most {guide.max_seq_length})")
        if problem:
            raise ValueError(f"{self.name}: the guide {_guide_name(self.guide)!r} cannot read the tokens of the model "
                             f"{encoder.source or 'being trained'!r}: {problem}; the guide runs on the model's "
                             "tokens (jaxsbert does not re-tokenize the texts for it, as sentence-transformers "
                             "does), so choose a guide with the model's tokenizer")
        return jax.device_get(guide.params)

    def guide_embed_fn(self, max_segments: Optional[int] = None):
        """``guide_fn(guide_params, features) -> [B, D']``: the guide's forward pass (no dropout), packed
        batches with at most ``max_segments`` sentences per row."""
        from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS
        from jaxsbert.models.sentence_model import SentenceModel

        guide = self.guide_encoder()
        module = SentenceModel(guide.config, dtype=guide.dtype, max_segments=max_segments or DEFAULT_MAX_SEGMENTS)
        return lambda params, features: module.apply({"params": params}, features, deterministic=True)

    # ---- the loss ------------------------------------------------------------------------------------
    def _row_chunk(self) -> Optional[int]:
        return None

    def __call__(self, head_params: Any, embeddings: Sequence[jax.Array], labels: jax.Array | None = None,
                 mask: jax.Array | None = None, guide_embeddings: Sequence[jax.Array] | None = None) -> jax.Array:
        """The loss on the model's embeddings of each column and the guide's (``guide_embeddings``, one
        [B, D'] array per column)."""
        embeddings, labels, mask = self.checked_inputs(embeddings, labels, mask)
        if guide_embeddings is None:
            raise ValueError(f"{self.name} needs the guide's embeddings of the columns (guide_embeddings=...): "
                             "encode them with loss.guide_encoder(), or train with loss.value_and_grad")
        guide = tuple(jnp.asarray(g, jnp.float32) for g in guide_embeddings)
        batch = embeddings[0].shape[0]
        if len(guide) != len(embeddings) or len({g.shape for g in guide}) != 1 or guide[0].ndim != 2 \
                or guide[0].shape[0] != batch:
            raise ValueError(f"{self.name} expects the guide's embeddings as one [{batch}, D'] array per column "
                             f"({len(embeddings)}), got shapes {[g.shape for g in guide]}")
        return gist_embed_loss(embeddings, zero_padding(guide, mask), mask, temperature=self.temperature,
                               margin_strategy=self.margin_strategy, margin=self.margin,
                               contrast_anchors=self.contrast_anchors, contrast_positives=self.contrast_positives,
                               row_chunk=self._row_chunk())

    def compute(self, head_params, embeddings, labels, mask):
        raise ValueError(f"{self.name} needs the guide's embeddings: call it with guide_embeddings=...")

    def value_and_grad(self, embed_fn, params, head_params, features, labels=None, mask=None, rng=None, frozen=None):
        """As :meth:`Loss.value_and_grad`, with the guide's embeddings of the same features from ``frozen`` (the
        guide's parameters, :meth:`frozen_params`; no gradient flows to them). The guide runs beside the model
        in every pass over the batch: with gradient caching, chunk by chunk in the first pass (its forward
        pass in the third is dead code, which XLA removes)."""
        if frozen is None:
            raise ValueError(f"{self.name}.value_and_grad needs frozen=<the guide's parameters> "
                             "(loss.frozen_params(encoder); the trainer passes its state's 'frozen' entry)")
        max_segments = getattr(embed_fn, "max_segments", None)
        guide_fn = self.guide_embed_fn(max_segments)
        width = self.guide_encoder().embedding_dim

        def joined(p, f, r):       # [..., D + D']: the model's embeddings, then the guide's (constants)
            guide = jax.lax.stop_gradient(guide_fn(frozen, f))
            return jnp.concatenate([embed_fn(p, f, r).astype(jnp.float32), guide.astype(jnp.float32)], axis=-1)
        joined.max_segments = max_segments

        def loss_fn(e, h):
            return self(h, tuple(x[:, :-width] for x in e), labels, mask,
                        guide_embeddings=tuple(x[:, -width:] for x in e))

        return self.embeddings_value_and_grad(loss_fn, joined, params, head_params, features, mask, rng)

    def config_dict(self) -> dict[str, Any]:
        """Hyper-parameters, the guide by its path or id (what a config names it by)."""
        return {**super().config_dict(), "guide": _guide_name(self.guide)}


@dataclasses.dataclass(frozen=True)
class CachedGISTEmbedLoss(_Cached, GISTEmbedLoss):
    """GISTEmbedLoss trained with gradient caching: the same value and gradients, with the activation memory of
    ``mini_batch_size`` rows (default 32; or chunks of ``mini_batch_num_tokens`` token slots), so the batch
    is limited by embedding memory only. Columns: (anchor, positive, [negative_1, ..., negative_n]); no label.
    Other options as GISTEmbedLoss."""
    name: ClassVar[str] = "CachedGISTEmbedLoss"
    max_columns: ClassVar[Optional[int]] = None
    columns_doc: ClassVar[str] = "(anchor, positive, [negative_1, ..., negative_n])"

    mini_batch_size: int = 32
    mini_batch_num_tokens: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        self._check_mini_batch()
