"""Training losses for sentence-embedding models, pure JAX, with sentence-transformers' names,
formulas and defaults.

    loss = get_loss("MultipleNegativesRankingLoss", scale=20.0)
    head = loss.init_head(rng, embedding_dim)                 # {} except SoftmaxLoss
    loss.check_inputs(num_columns, labels_or_None, "nli")    # ValueError saying what the loss expects
    value = loss(head, (emb_anchor, emb_positive), labels=None, mask=valid_rows)
    value, (param_grads, head_grads) = loss.value_and_grad(embed_fn, params, head, features, labels, mask, rng)

See :mod:`jaxsbert.losses.base` for the interface and ``docs/losses.md`` for the table of losses.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from jaxsbert.losses.adaptive_layer import AdaptiveLayerLoss, Matryoshka2dLoss
from jaxsbert.losses.base import EmbedFn, Loss, cos_sim, dot_score, normalize, pairwise_angle_sim, pairwise_cos_sim
from jaxsbert.losses.contrastive_tension import ContrastiveTensionLoss, ContrastiveTensionLossInBatchNegatives
from jaxsbert.losses.denoising_auto_encoder import DenoisingAutoEncoderLoss
from jaxsbert.losses.distill import DistillKLDivLoss, EmbedDistillLoss, MarginMSELoss, MSELoss
from jaxsbert.losses.gradcache import grad_cache_value_and_grad
from jaxsbert.losses.gist import CachedGISTEmbedLoss, GISTEmbedLoss
from jaxsbert.losses.matryoshka import MatryoshkaLoss
from jaxsbert.losses.mega_batch import MegaBatchMarginLoss
from jaxsbert.losses.orthogonal import GlobalOrthogonalRegularizationLoss
from jaxsbert.losses.pairwise import (AnglELoss, ContrastiveLoss, CoSENTLoss, CosineSimilarityLoss,
                                      OnlineContrastiveLoss)
from jaxsbert.losses.ranking import (CachedMultipleNegativesRankingLoss, CachedMultipleNegativesSymmetricRankingLoss,
                                     MultipleNegativesRankingLoss, MultipleNegativesSymmetricRankingLoss,
                                     multiple_negatives_ranking_loss)
from jaxsbert.losses.softmax import SoftmaxLoss
from jaxsbert.losses.triplet import (BatchAllTripletLoss, BatchHardSoftMarginTripletLoss, BatchHardTripletLoss,
                                     BatchSemiHardTripletLoss, TripletLoss)

LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (
    MSELoss, MarginMSELoss, DistillKLDivLoss, EmbedDistillLoss,
    SoftmaxLoss, MultipleNegativesRankingLoss, MultipleNegativesSymmetricRankingLoss,
    CachedMultipleNegativesRankingLoss, CachedMultipleNegativesSymmetricRankingLoss, TripletLoss, ContrastiveLoss,
    OnlineContrastiveLoss, CosineSimilarityLoss, CoSENTLoss, AnglELoss, MatryoshkaLoss, MegaBatchMarginLoss,
    BatchHardTripletLoss, BatchSemiHardTripletLoss, BatchAllTripletLoss, BatchHardSoftMarginTripletLoss,
    ContrastiveTensionLoss, ContrastiveTensionLossInBatchNegatives,
    DenoisingAutoEncoderLoss,
    GISTEmbedLoss, CachedGISTEmbedLoss, GlobalOrthogonalRegularizationLoss, AdaptiveLayerLoss, Matryoshka2dLoss)}


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def _initials(name: str) -> str:
    """MultipleNegativesRankingLoss -> mnrl (how the losses are often written)."""
    return "".join(c for c in name if c.isupper()).lower()


def _closest(name: str, known) -> str | None:
    """The known name ``name`` most likely means: the same up to case / a missing 'Loss' / its initials
    (MNRL), else the nearest spelling (difflib), else None."""
    key = name.lower().replace("_", "")
    for candidate in known:
        if key in (candidate.lower(), candidate.lower().removesuffix("loss")):
            return candidate
    initials = [c for c in known if c[:1].isupper() and _initials(c) == key]
    if len(initials) == 1:
        return initials[0]
    stem = lambda text: text.lower().removesuffix("loss")      # the common suffix makes every name look close
    by_stem = {stem(c): c for c in known}
    close = difflib.get_close_matches(stem(key), list(by_stem), n=1, cutoff=0.6)
    return by_stem[close[0]] if close else None


def get_loss(name: str, **kwargs: Any) -> Loss:
    """The loss named ``name`` (a sentence-transformers class name) with these hyper-parameters.

    Unknown names and arguments raise ValueError listing what is supported. ``MatryoshkaLoss``,
    ``AdaptiveLayerLoss`` and ``Matryoshka2dLoss`` take their inner loss as ``loss=`` (a Loss, or a name with
    its arguments in ``loss_kwargs=``)."""
    name = str(name).rsplit(".", 1)[-1]
    if name not in LOSSES:
        close = _closest(name, LOSSES)
        hint = f"did you mean {close!r}?" if close else f"supported: {', '.join(sorted(LOSSES))}"
        raise ValueError(f"unknown loss {name!r}; {hint}")
    cls = LOSSES[name]
    if cls in (MatryoshkaLoss, AdaptiveLayerLoss, Matryoshka2dLoss):
        inner = kwargs.pop("loss", None)
        inner_kwargs = kwargs.pop("loss_kwargs", None) or {}
        if isinstance(inner, str):
            inner = get_loss(inner, **inner_kwargs)
        elif inner_kwargs:
            raise ValueError(f"{name}: loss_kwargs only goes with loss given by name")
        kwargs["loss"] = inner
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        close = _closest(unknown[0], fields)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ValueError(f"{name}: unknown argument(s) {unknown}; supported: {fields}{hint}")
    return cls(**{k: _hashable(v) for k, v in kwargs.items()})


__all__ = ["EmbedFn", "LOSSES", "Loss", "get_loss", "grad_cache_value_and_grad", "multiple_negatives_ranking_loss",
           "cos_sim", "dot_score", "normalize", "pairwise_angle_sim", "pairwise_cos_sim", *LOSSES]
