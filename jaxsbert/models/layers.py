"""A smaller model from a bigger one: keep some of its Transformer layers (a distillation student)."""
from __future__ import annotations

import dataclasses
from typing import Sequence


def keep_layers(encoder, layers: Sequence[int]):
    """A copy of ``encoder`` (a :class:`jaxsbert.SentenceEncoder`) with only these Transformer layers, in this
    order, renumbered from 0 (embeddings, pooling and heads kept): sentence-transformers' distillation recipe
    builds its student the same way (``auto_model.encoder.layer = [layer[i] for i in layers]``)."""
    config = encoder.config.transformer
    total = config.num_hidden_layers
    layers = [int(i) for i in layers]
    if not layers or any(not 0 <= i < total for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"keep_layers {layers}: give distinct layer indices in [0, {total}) (the model has {total})")

    renumbered = []

    def renumber(tree):
        if not isinstance(tree, dict):
            return tree
        if f"layer_{total - 1}" in tree and "layer_0" in tree:
            renumbered.append(True)
            rest = {k: v for k, v in tree.items() if not k.startswith("layer_")}
            return {**rest, **{f"layer_{new}": tree[f"layer_{old}"] for new, old in enumerate(layers)}}
        return {k: renumber(v) for k, v in tree.items()}

    params = renumber(encoder.params)
    if not renumbered:     # e.g. ModernBERT (layers_N, layer 0 without attn_norm, per-layer attention types)
        raise ValueError(f"keep_layers {layers}: not supported for the {encoder.config.family!r} family (only "
                         f"encoders whose layers are layer_0 .. layer_{total - 1}, as BERT's)")
    count = "n_layers" if hasattr(config, "n_layers") else "num_hidden_layers"   # DistilBERT's name for it
    transformer = dataclasses.replace(config, **{count: len(layers)})
    return encoder.replace(config=dataclasses.replace(encoder.config, transformer=transformer), params=params)
