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
    """A local directory as is; a bundled model's hub id (:mod:`jaxsbert.models.bundled`) -> its installed
    directory; otherwise a Hugging Face hub id, fetched with ``snapshot_download`` (from the local hub cache
    only when HF_HUB_OFFLINE is set). Anything else raises one FileNotFoundError line, without the hub's
    own error text."""
    from jaxsbert.models.bundled import describe_missing, resolve_model

    path = resolve_model(path_or_id)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ValueError(f"{path_or_id}: expected a model directory, got a file")
    missing = describe_missing(path_or_id)
    try:
        from huggingface_hub import constants, errors, snapshot_download
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(path)
    except Exception:   # not a hub id (a path such as ./runs/x or a/b/c), or no huggingface_hub
        raise FileNotFoundError(missing) from None
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    try:
        return snapshot_download(path, local_files_only=offline)
    except errors.LocalEntryNotFoundError:
        reason = ("not in the local hub cache and HF_HUB_OFFLINE is set" if offline
                  else "the Hugging Face hub could not be reached and it is not in the local hub cache")
    except errors.GatedRepoError:
        reason = "the hub repository is gated (log in with a token that has access)"
    except errors.RepositoryNotFoundError:
        reason = "no such model on the Hugging Face hub either"
    except Exception as e:  # noqa: BLE001 - any other hub failure, in one line
        reason = f"fetching it from the hub failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    raise FileNotFoundError(f"{missing}; {reason}") from None


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


def _is_causal_lm(directory: str) -> bool:
    """Whether config.json names a causal LM (``*ForCausalLM``, not ``is_causal: false``): sentence-transformers
    then pools a plain Hugging Face directory by its last token instead of the mean."""
    d = read_json(os.path.join(directory, "config.json"))
    architectures = d.get("architectures") or [""]
    return architectures[0].endswith("ForCausalLM") and d.get("is_causal", True) is not False


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
        pooling = PoolingConfig(tconf.hidden_size, ("lasttoken",) if _is_causal_lm(root) else ("mean",))
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


def chat_settings(root: str):
    """Whether sentence-transformers 6.3 feeds the texts of the directory ``root`` (resolved) through the
    tokenizer's chat template (:mod:`jaxsbert.interop.chat_template`): a plain Hugging Face directory when its
    tokenizer has one; a sentence-transformers directory when its Transformer's sentence_bert_config.json
    names the "message" modality."""
    from jaxsbert.interop import chat_template

    modules_path = os.path.join(root, "modules.json")
    if not os.path.exists(modules_path):
        return chat_template.read_settings(None, root)
    tdir = os.path.join(root, (read_json(modules_path) or [{}])[0].get("path", ""))
    path = os.path.join(tdir, "sentence_bert_config.json")
    return chat_template.read_settings(read_json(path) if os.path.exists(path) else {}, path)


SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")


def read_settings(directory: str) -> dict[str, Any]:
    """A model directory's inference settings, as ``SentenceTransformer`` reads them:

    ``prompts`` (name -> text; None texts become ""), ``default_prompt_name``, ``similarity_fn_name``
    (None when absent; a name sentence-transformers' SentenceTransformer does not support, e.g. "maxsim",
    is ignored with a warning, as it ignores it) and ``truncate_dim`` from config_sentence_transformers.json,
    and ``include_prompt``: False when a Pooling module's config.json says so (prompt tokens are then left
    out of the pooling). A directory without these files gets the defaults.
    """
    path = os.path.join(directory, "config_sentence_transformers.json")
    saved = read_json(path) if os.path.exists(path) else {}
    prompts = saved.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, (str, type(None))) for v in prompts.values()):
        raise ValueError(f"{path}: 'prompts' must map names to strings, got {prompts!r:.80}")
    prompts = {str(k): v or "" for k, v in prompts.items()}
    default = saved.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"{path}: default_prompt_name {default!r} is not a key of 'prompts' {sorted(prompts)}")
    similarity = saved.get("similarity_fn_name")
    if similarity is not None and similarity not in SIMILARITY_FN_NAMES:
        import warnings

        warnings.warn(f"{path}: similarity_fn_name {similarity!r} is not one of {list(SIMILARITY_FN_NAMES)}; "
                      "using cosine (as sentence-transformers' SentenceTransformer does)", stacklevel=2)
        similarity = None
    include_prompt = True
    modules_path = os.path.join(directory, "modules.json")
    if os.path.exists(modules_path):
        for entry in read_json(modules_path):
            pooling_path = os.path.join(directory, entry.get("path", ""), "config.json")
            if entry.get("type", "").endswith("Pooling") and os.path.exists(pooling_path):
                include_prompt = include_prompt and bool(read_json(pooling_path).get("include_prompt", True))
    return {"prompts": prompts, "default_prompt_name": default, "similarity_fn_name": similarity,
            "truncate_dim": saved.get("truncate_dim"), "include_prompt": include_prompt}


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
