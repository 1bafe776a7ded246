"""Hugging Face checkpoints <-> Flax parameter trees, without torch.

The Flax encoders name their parameters after Hugging Face's modules, so the map is mechanical:
``a/layer_3/b/kernel`` <-> ``a.layer.3.b.weight`` (``layers_3``: ``layers.3``) (transposed), ``scale``/``embedding`` <-> ``weight``.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any, Mapping

import numpy as np

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_IGNORED_KEYS = re.compile(r"(^|\.)(position_ids|token_type_ids)$")   # registered buffers, not parameters


def flax_path_to_hf_key(path: tuple[str, ...]) -> str:
    *modules, leaf = path
    name = ".".join(modules)
    name = re.sub(r"(^|\.)(layers?)_(\d+)(?=\.|$)", r"\1\2.\3", name)   # Qwen3 numbers ``layers``
    return f"{name}.{'bias' if leaf == 'bias' else 'weight'}"


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def flax_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """Flax params -> Hugging Face state dict (numpy, float32 as stored)."""
    state = {}
    for path, value in _flatten(params).items():
        value = np.asarray(value)
        state[flax_path_to_hf_key(path)] = value.T.copy() if path[-1] == "kernel" else value
    return state


def state_dict_to_flax(state: Mapping[str, np.ndarray], template: Mapping, source: str = "checkpoint") -> dict:
    """Hugging Face state dict -> Flax params shaped like ``template`` (e.g. from ``module.init``).

    A prefix such as ``bert.`` is dropped; old ``gamma``/``beta`` LayerNorm names are accepted. Missing
    keys or shape mismatches raise a ValueError naming the key and ``source``; extra keys are ignored
    with a warning (as transformers does for, e.g., a pretraining head).
    """
    state = {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v for k, v in state.items()
             if not _IGNORED_KEYS.search(k)}
    wanted = {flax_path_to_hf_key(p): p for p in _flatten(template)}
    state = _strip_prefix(state, set(wanted))
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f"{source}: missing weights {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                         f"({len(missing)} of {len(wanted)})")
    extra = sorted(set(state) - set(wanted))
    if extra:
        warnings.warn(f"{source}: ignoring {len(extra)} unused weights, e.g. {extra[:4]}")
    flat_template = _flatten(template)
    flat = {}
    for key, path in wanted.items():
        value = np.asarray(state[key], dtype=np.float32)
        if path[-1] == "kernel":
            value = value.T
        expected = tuple(np.shape(flat_template[path]))
        if value.shape != expected:
            raise ValueError(f"{source}: weight {key!r} has shape {value.shape[::-1] if path[-1] == 'kernel' else value.shape}, "
                             f"the model expects {expected[::-1] if path[-1] == 'kernel' else expected}")
        flat[path] = value
    return _unflatten(flat)


def _strip_prefix(state: dict, wanted: set[str]) -> dict:
    """Drops the head model's prefix (``bert.``, ``roberta.``, ``distilbert.``, ``mpnet.``, ...), if any.

    Keeps the keys as they are when they already match; otherwise takes the prefix whose stripped
    keys match the most wanted names (a masked-LM checkpoint also has ``lm_head.*``).
    """
    best, best_hits = state, len(wanted & set(state))
    if best_hits:
        return state
    for p in sorted({k.split(".", 1)[0] for k in state if "." in k}):
        stripped = {k[len(p) + 1:]: v for k, v in state.items() if k.startswith(p + ".")}
        hits = len(wanted & set(stripped))
        if hits > best_hits:
            best, best_hits = stripped, hits
    return best


def read_state_dict(directory: str) -> tuple[dict[str, np.ndarray], str]:
    """Reads model.safetensors (sharded too) or pytorch_model.bin (needs torch) from a directory."""
    from safetensors.numpy import load_file

    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(single):
        return load_file(single), single
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(os.path.join(directory, shard)))
        return state, index
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(binary):
        try:
            import torch
        except ImportError:
            raise ImportError(f"{binary}: reading pytorch_model.bin needs torch, which is not installed; "
                              "install torch or convert the checkpoint to model.safetensors") from None
        state = torch.load(binary, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}, binary
    raise FileNotFoundError(f"{directory}: no model weights; expected one of {list(WEIGHT_FILES)}")


def save_state_dict(state: Mapping[str, np.ndarray], path: str) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path, metadata={"format": "pt"})
