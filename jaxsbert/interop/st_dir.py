"""Reading sentence-transformers and plain Hugging Face model directories (no torch needed)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.interop import hf
from jaxsbert.models import families
from jaxsbert.models.heads import DenseConfig
from jaxsbert.models.pooling import PoolingConfig
from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModel, SentenceModelConfig

SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def resolve(path_or_id: str) -> str:
    """A local directory as is; otherwise a Hugging Face hub id, downloaded (needs the network)."""
    if os.path.isdir(path_or_id):
        return path_or_id
    if os.path.exists(path_or_id):
        raise ValueError(f"{path_or_id}: expected a model directory, got a file")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path_or_id)
    except Exception as e:  # offline, unknown id, ...
        raise FileNotFoundError(f"{path_or_id}: not a local directory, and fetching it from the hub failed ({e})") from None


def _module_kind(entry: dict, source: str) -> str:
    kind = entry.get("type", "").rsplit(".", 1)[-1]
    if kind not in SUPPORTED_MODULES:
        raise ValueError(f"{source}: module type {entry.get('type')!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_MODULES)}")
    return kind


def init_params(config: SentenceModelConfig, seed: int = 0) -> dict:
    """Randomly initialised parameters (the template the import fills in)."""
    features = {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32)}
    return jax.jit(SentenceModel(config).init)(jax.random.PRNGKey(seed), features)["params"]


def param_shapes(config: SentenceModelConfig) -> dict:
    features = {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32)}
    shapes = jax.eval_shape(SentenceModel(config).init, jax.random.PRNGKey(0), features)["params"]
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _transformer_config(directory: str) -> tuple[str, Any]:
    path = os.path.join(directory, "config.json")
    d = read_json(path)
    family = families.family_for(d.get("model_type", "<missing>"), path)
    return family.name, family.config_cls.from_hf_dict(d)


def _max_seq_length(directory: str, transformer_config: Any) -> int:
    limit = getattr(transformer_config, "max_sequence_tokens", None) or transformer_config.max_position_embeddings
    tok_cfg = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(tok_cfg):
        model_max = read_json(tok_cfg).get("model_max_length")
        if isinstance(model_max, int) and model_max < limit:
            return model_max
    return limit


def load(path_or_id: str) -> tuple[SentenceModelConfig, dict, str]:
    """-> (config, params, tokenizer directory) for a sentence-transformers or Hugging Face directory."""
    root = resolve(path_or_id)
    modules_path = os.path.join(root, "modules.json")
    if not os.path.exists(modules_path):
        if not os.path.exists(os.path.join(root, "config.json")):
            raise FileNotFoundError(f"{root}: neither modules.json (sentence-transformers) nor config.json "
                                    "(Hugging Face) found; supported: a sentence-transformers directory or a "
                                    "Hugging Face model directory with config.json and model.safetensors")
        family, tconf = _transformer_config(root)
        pooling = PoolingConfig(tconf.hidden_size, ("mean",))
        config = SentenceModelConfig(family, tconf, (pooling,), _max_seq_length(root, tconf), False)
        return (*_load_params(config, root, {}), root)

    entries = read_json(modules_path)
    if not entries or _module_kind(entries[0], modules_path) != "Transformer":
        raise ValueError(f"{modules_path}: the first module must be a Transformer")
    tdir = os.path.join(root, entries[0].get("path", ""))
    family, tconf = _transformer_config(tdir)
    sbert_cfg_path = next((os.path.join(tdir, n) for n in ("sentence_bert_config.json", "sentence_xlnet_config.json")
                           if os.path.exists(os.path.join(tdir, n))), None)
    sbert_cfg = read_json(sbert_cfg_path) if sbert_cfg_path else {}
    max_seq_length = sbert_cfg.get("max_seq_length") or _max_seq_length(tdir, tconf)
    modules, dense_dirs = [], {}
    for entry in entries[1:]:
        kind = _module_kind(entry, modules_path)
        mdir = os.path.join(root, entry.get("path", ""))
        if kind == "Pooling":
            modules.append(PoolingConfig.from_st_dict(read_json(os.path.join(mdir, "config.json"))))
        elif kind == "Dense":
            modules.append(DenseConfig.from_st_dict(read_json(os.path.join(mdir, "config.json"))))
            dense_dirs[len(modules) - 1] = mdir
        else:
            modules.append(NormalizeConfig())
    config = SentenceModelConfig(family, tconf, tuple(modules), int(max_seq_length),
                                 bool(sbert_cfg.get("do_lower_case", False)))
    return (*_load_params(config, tdir, dense_dirs), tdir)


def _load_params(config: SentenceModelConfig, transformer_dir: str,
                 dense_dirs: dict[int, str]) -> tuple[SentenceModelConfig, dict]:
    template = param_shapes(config)
    tconf = config.transformer
    state, source = hf.read_state_dict(transformer_dir)
    if getattr(tconf, "add_pooling_layer", False) and not any(k.endswith("pooler.dense.weight") for k in state):
        # checkpoints saved without the pooler: build the encoder without it
        config = dataclasses.replace(config, transformer=dataclasses.replace(tconf, add_pooling_layer=False))
        template = param_shapes(config)
    params = {"transformer": hf.state_dict_to_flax(state, template["transformer"], source)}
    for i, mdir in dense_dirs.items():
        name = config.module_name(i)
        dense_state, dsource = hf.read_state_dict(mdir)
        params[name] = hf.state_dict_to_flax(dense_state, template[name], dsource)
    return config, params
