"""Writing a jaxsbert model as a sentence-transformers directory (no torch needed).

The directory uses the classic sentence-transformers layout, which every release from 2.x on reads
and which ``transformers.AutoModel`` reads too::

    config.json, model.safetensors, tokenizer files     the Transformer (Hugging Face names, no prefix)
    sentence_bert_config.json                           max_seq_length, do_lower_case (+ modality_config with
                                                        "message" for a chat-template model)
    modules.json                                        sentence_transformers.models.<Kind>, in order
    1_Pooling/config.json                               legacy pooling_mode_* keys
    <i>_Dense/config.json, <i>_Dense/model.safetensors  linear.weight [out, in], linear.bias
    <i>_Normalize/                                      (no files)
    config_sentence_transformers.json                   similarity_fn_name, __version__
    README.md                                           model card

Loss heads (e.g. SoftmaxLoss' classifier) are not part of the model; :func:`save_loss_head`
writes them to a directory of their own.
"""
from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import shutil
import uuid
from typing import Any, Mapping

import numpy as np

from jaxsbert.interop import chat_template, hf
from jaxsbert.models import families
from jaxsbert.models.heads import DenseConfig
from jaxsbert.models.pooling import PoolingConfig
from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModelConfig

MODULE_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    PoolingConfig: "sentence_transformers.models.Pooling",
    DenseConfig: "sentence_transformers.models.Dense",
    NormalizeConfig: "sentence_transformers.models.Normalize",
}
EXPORT_MARKER = "jaxsbert"   # key in config_sentence_transformers.json's __version__ that marks our exports


def save_sentence_transformer(encoder: Any, directory: str, model_card: str | None = None, *,
                              overwrite: bool = False, base_model: str | None = None,
                              complete_pooler: bool = True, training: Any = None) -> str:
    """Writes ``encoder`` (a :class:`jaxsbert.SentenceEncoder`, or anything with ``.config``
    (SentenceModelConfig), ``.params`` and ``.tokenizer.hf``) as a sentence-transformers directory.

    The files are written to a temporary directory next to ``directory`` and moved into place at
    the end, so a failed export leaves nothing half-written (and, with ``overwrite``, the earlier
    directory whole). An existing non-empty ``directory`` is refused (FileExistsError) unless
    ``overwrite=True`` or it is an earlier jaxsbert export: re-saving a model replaces it, as
    sentence-transformers' ``model.save`` does (``jaxsbert export`` refuses that too: :func:`check_target`).

    README.md is the model card of :func:`jaxsbert.training.model_card.model_card`; ``model_card``:
    extra Markdown appended to it. ``base_model``: the model this one was trained from (a hub id;
    default: the encoder's source when that is a hub id), recorded in the card's metadata.
    ``training``: the :class:`~jaxsbert.training.model_card.TrainingRun` that produced the
    parameters (datasets, losses, hyper-parameters, evaluations, training log), described in the
    card. ``complete_pooler``: for an encoder
    loaded from a checkpoint without Hugging Face's pooler (``pooler.dense``, unused by
    sentence-transformers), write a freshly initialised one (normal(0, 0.02) weights, zero bias, as
    transformers initialises it) so ``AutoModel`` loads without missing keys.

    Returns the directory.
    """
    config: SentenceModelConfig = encoder.config
    directory = os.fspath(directory)
    check_target(directory, overwrite or _is_previous_export(directory))
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(directory))}.tmp-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp)
    try:
        _write_transformer(config, encoder.params["transformer"], tmp, complete_pooler)
        _save_tokenizer(encoder.tokenizer.hf, config.max_seq_length, tmp)
        _write_json(os.path.join(tmp, "sentence_bert_config.json"),
                    {"max_seq_length": config.max_seq_length, "do_lower_case": config.do_lower_case,
                     **chat_template.modality_config(getattr(encoder.tokenizer, "chat_format", None))})
        modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPES["Transformer"]}]
        for i, module in enumerate(config.modules):
            name = config.module_name(i)
            modules.append({"idx": i + 1, "name": str(i + 1), "path": name, "type": MODULE_TYPES[type(module)]})
            os.mkdir(os.path.join(tmp, name))
            if isinstance(module, PoolingConfig):
                _write_json(os.path.join(tmp, name, "config.json"),
                            {**module.to_st_dict(), "include_prompt": getattr(encoder, "pooling_include_prompt", True)})
            elif isinstance(module, DenseConfig):
                _write_json(os.path.join(tmp, name, "config.json"), module.to_st_dict())
                hf.save_state_dict(hf.flax_to_state_dict(encoder.params[name]),
                                   os.path.join(tmp, name, "model.safetensors"))
        _write_json(os.path.join(tmp, "modules.json"), modules)
        _write_json(os.path.join(tmp, "config_sentence_transformers.json"), {
            "__version__": _versions(),
            "prompts": dict(getattr(encoder, "prompts", None) or {}),
            "default_prompt_name": getattr(encoder, "default_prompt_name", None),
            "similarity_fn_name": getattr(encoder, "similarity_fn_name", None) or "cosine",
            **({"truncate_dim": encoder.truncate_dim} if getattr(encoder, "truncate_dim", None) else {}),
        })
        _write_card(tmp, config, base_model or _hub_id(getattr(encoder, "source", None)), training, model_card)
        _replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_loss_head(head_params: Mapping, directory: str, **config: Any) -> str:
    """Writes a loss head's parameters (e.g. SoftmaxLoss' classifier) to ``directory/model.safetensors``
    with PyTorch names (``classifier.weight`` [out, in], ``classifier.bias``) and ``directory/config.json``
    (in_features, out_features, bias, plus ``config``). ``head_params``: ``{"classifier": {"kernel",
    "bias"}}`` or the ``{"kernel", "bias"}`` of the classifier itself. A ``{"projection": {"kernel", "bias"}}``
    head (EmbedDistillLoss / MSELoss with ``projection_dim``) is written as ``weight`` / ``bias``, the file
    sentence-transformers' ``save_projection`` writes and ``load_projection`` reads. Returns ``directory``."""
    if "projection" in head_params:
        params = dict(head_params)
    else:
        params = head_params if "classifier" in head_params else {"classifier": head_params}
    layer = next(iter(params), None)
    if len(params) != 1 or layer not in ("classifier", "projection") or "kernel" not in params[layer]:
        raise ValueError(f"loss head params must be {{'classifier': {{'kernel', 'bias'}}}}; got keys "
                         f"{sorted(params)} / {sorted(params.get('classifier', {}))}")
    state = hf.flax_to_state_dict(params)
    if layer == "projection":
        state = {k.split(".", 1)[1]: v for k, v in state.items()}
    weight = "weight" if layer == "projection" else "classifier.weight"
    out_features, in_features = state[weight].shape
    os.makedirs(directory, exist_ok=True)
    hf.save_state_dict(state, os.path.join(directory, "model.safetensors"))
    _write_json(os.path.join(directory, "config.json"), {"in_features": int(in_features),
                                                         "out_features": int(out_features),
                                                         "bias": weight.replace("weight", "bias") in state, **config})
    return directory


def load_loss_head(directory: str) -> dict:
    """Reads :func:`save_loss_head`'s output -> ``{"classifier": {"kernel", "bias"}}`` (numpy), or
    ``{"projection": {"kernel", "bias"}}`` for a projection head."""
    from safetensors.numpy import load_file

    path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found (expected a loss head written by save_loss_head)")
    state = load_file(path)
    if "classifier.weight" not in state and "weight" in state:     # a projection head (EmbedDistillLoss)
        head = {"kernel": np.ascontiguousarray(state["weight"].T)}
        return {"projection": {**head, **({"bias": state["bias"]} if "bias" in state else {})}}
    if "classifier.weight" not in state:
        raise ValueError(f"{path}: no 'classifier.weight'; found {sorted(state)}")
    head = {"kernel": np.ascontiguousarray(state["classifier.weight"].T)}
    if "classifier.bias" in state:
        head["bias"] = state["classifier.bias"]
    return {"classifier": head}


def _write_card(directory: str, config: SentenceModelConfig, base_model: str | None, training: Any,
                extra: str | None) -> None:
    """Writes README.md, with the similarity function and modules of the files written before it."""
    from jaxsbert.training.model_card import architecture_of, model_card

    with open(os.path.join(directory, "config_sentence_transformers.json"), encoding="utf8") as f:
        similarity = json.load(f).get("similarity_fn_name") or "cosine"
    text = model_card(config, base_model=base_model, similarity_fn_name=similarity, run=training,
                      architecture=architecture_of(directory))
    if extra:
        text += "\n" + extra.strip() + "\n"
    with open(os.path.join(directory, "README.md"), "w", encoding="utf8") as f:
        f.write(text)


# --- helpers ---------------------------------------------------------------------------------

def _write_transformer(config: SentenceModelConfig, params: Mapping, directory: str, complete_pooler: bool) -> None:
    _write_json(os.path.join(directory, "config.json"), families.hf_config_dict(config.family, config.transformer))
    state = hf.flax_to_state_dict(params)
    tconf = config.transformer
    if complete_pooler and getattr(tconf, "add_pooling_layer", True) is False and "pooler.dense.weight" not in state:
        rng = np.random.default_rng(0)
        h = tconf.hidden_size
        state["pooler.dense.weight"] = rng.normal(0.0, 0.02, (h, h)).astype(np.float32)
        state["pooler.dense.bias"] = np.zeros(h, np.float32)
    hf.save_state_dict(state, os.path.join(directory, "model.safetensors"))


def _save_tokenizer(tokenizer: Any, max_seq_length: int, directory: str) -> None:
    """Saves a copy of ``tokenizer`` whose tokenizer.json truncates to ``max_seq_length`` and does not pad.

    A fast tokenizer's backend keeps the truncation and padding of its last call (or those it was
    loaded with), and tokenizer.json records them; fixing them makes the export depend on the model
    only, not on whether the tokenizer has been used.
    """
    tokenizer = copy.deepcopy(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.enable_truncation(max_length=max_seq_length)
    tokenizer.save_pretrained(directory)


def _versions() -> dict[str, str]:
    import jax

    import jaxsbert

    out = {}
    for key, dist in (("sentence_transformers", "sentence-transformers"), ("transformers", "transformers"),
                      ("pytorch", "torch")):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    out.update({EXPORT_MARKER: jaxsbert.__version__, "jax": jax.__version__})
    return out


def _hub_id(source: str | None) -> str | None:
    """``source`` if it looks like a hub id (``org/name``, not a local path), else None."""
    if not source or os.path.exists(source) or os.path.isabs(source) or source.startswith("."):
        return None
    parts = source.split("/")
    return source if len(parts) == 2 and all(parts) else None


def _is_previous_export(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "config_sentence_transformers.json")) as f:
            return EXPORT_MARKER in json.load(f).get("__version__", {})
    except (OSError, ValueError, AttributeError):
        return False


def check_target(directory: str, overwrite: bool) -> None:
    """FileExistsError unless ``directory`` can take an export: absent, empty, or (``overwrite``) a directory."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"{directory}: exists and is not a directory; choose another output directory")
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise FileExistsError(f"{directory}: directory exists and is not empty; nothing was written. Pass "
                              "overwrite=True (jaxsbert export --overwrite) to replace it, or choose another directory")


def _replace(new: str, directory: str) -> None:
    """Moves the finished export ``new`` to ``directory`` (replacing what is there) with renames."""
    if not os.path.exists(directory):
        os.rename(new, directory)
        return
    old = f"{new}.old"
    os.rename(directory, old)
    try:
        os.rename(new, directory)
    except BaseException:
        os.rename(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
