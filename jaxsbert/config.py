"""Experiment configs as Python files (big_vision style).

A config file defines ``get_config() -> dict``; its keys must be keys of :data:`DEFAULTS` (nested
dicts allowed where the default is a dict). ``-o key=value`` overrides use dotted keys and Python
literals (``-o optim.lr=3e-5 -o data.train.stsb.split=train``). Unknown keys are an error that
suggests the nearest known key.
"""
from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import os
import re
import traceback
from typing import Any

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "model": "sentence-transformers/all-MiniLM-L6-v2",  # ST/HF directory or hub id (bundled copy used offline)
    "max_seq_length": None,          # None: the model's own
    "keep_layers": None,             # e.g. [0, 2, 4]: train a student of only these Transformer layers of the model
    "seed": 42,
    "data": {
        # name -> dataset spec (see jaxsbert.data.load_dataset); several names = multi-dataset training
        "train": {},
        "eval": {},                  # name -> evaluator spec (see jaxsbert.training.evaluators)
        "multi_dataset_sampler": "proportional",   # or "round_robin"
        "batch_sampler": "batch_sampler",          # or "no_duplicates", "group_by_label"
        "drop_last": False,
        "data_root": None,           # where named datasets (stsb, sick) live; None: ../shared/data
        # pack several sentences per row (jaxsbert.data.packing): "auto" (every dataset; cached losses
        # embed packed rows in chunks of a token budget), True, False, or {dataset name: bool}
        "packing": "auto",
        # tokens per packed row: "auto" (as few as the data's sentences allow, up to 128, chosen by the
        # estimated step cost: jaxsbert.data.pack_shapes), or a number (longer if a sentence is longer)
        "pack_length": "auto",
        "max_segments": 32,          # sentences per packed row at most
        # a row that cannot be trained on (bad JSON, a missing column, an empty text), met when read:
        # "error" (one line naming file and line, after the last good step's checkpoint) or "skip" (counted)
        "on_bad_row": "error",
    },
    # loss spec, or name -> loss spec with the same names as data.train
    "loss": {"name": "MultipleNegativesRankingLoss"},
    "batch_size": 32,                # global batch (all devices, all hosts)
    "epochs": 1,
    "max_steps": -1,                 # > 0 overrides epochs
    "stop_after_steps": 0,           # > 0: checkpoint and stop after this many steps (resume with --resume)
    "optim": {
        "name": "adamw",             # adamw | adam
        "lr": 2e-5,
        "weight_decay": 0.01,        # not applied to biases and LayerNorm
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "schedule": "linear",        # linear | cosine | constant
        "warmup_ratio": 0.1,
        "warmup_steps": None,        # overrides warmup_ratio when set
        "max_grad_norm": 1.0,        # None: no clipping
        "grad_accum_steps": 1,
    },
    "compute_dtype": "float32",      # float32 | bfloat16: the matmuls' dtype (parameters, optimizer state, norms,
                                     # softmax, pooling and losses stay float32)
    "attention_impl": "auto",        # auto | fused | materialized (jaxsbert.models.attention)
    "remat": False,
    # train only the word-embedding rows of the training data's tokens (jaxsbert.training.compact_vocab):
    # the same result, a cheaper step; applies to Adam, and AdamW without weight decay
    "compact_vocab": True,
    "dropout": True,                 # train-mode dropout as in sentence-transformers
    "log_every": 10,
    "eval_every": 0,                 # steps, or "epoch"; 0: only before and after training
    "eval_before": True,
    "best_metric": None,             # e.g. "sts-dev_spearman_cosine": keep the best checkpoint's model
    "checkpoint": {"every_steps": 0, "keep": 2, "async": True},
    "mesh": {"data": -1, "fsdp": 1},  # -1: all remaining devices
    "distributed": {"coordinator_address": None, "num_processes": None, "process_id": None, "auto": False},
    "nonfinite": "skip",             # non-finite loss/gradient: "skip" the update (counted) or "stop"
    "save_model": True,              # write a sentence-transformers directory at the end
    "tensorboard": True,             # when tensorboard is installed
    # more places to report metrics to (jaxsbert.training.callbacks): "wandb", "mlflow", "tensorboard", "all"
    "report_to": [],
    "compilation_cache": "auto",     # persistent XLA cache dir (jaxsbert.compilation_cache); None: off
}


class ConfigError(ValueError):
    pass


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys.append(prefix + k)
        if isinstance(v, dict) and v:
            keys.extend(_flat_keys(v, prefix + k + "."))
    return keys


# sentence-transformers / transformers TrainingArguments names (and a few other common spellings) -> ours
ALIASES: dict[str, str] = {
    "learning_rate": "optim.lr", "lr": "optim.lr",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
    "num_train_epochs": "epochs", "num_epochs": "epochs",
    "warmup_steps": "optim.warmup_steps", "warmup_ratio": "optim.warmup_ratio",
    "weight_decay": "optim.weight_decay", "max_grad_norm": "optim.max_grad_norm",
    "gradient_accumulation_steps": "optim.grad_accum_steps", "lr_scheduler_type": "optim.schedule",
    "scheduler": "optim.schedule", "optimizer": "optim.name",
    "adam_beta1": "optim.b1", "adam_beta2": "optim.b2", "adam_epsilon": "optim.eps",
    "eval_steps": "eval_every", "logging_steps": "log_every",
    "save_steps": "checkpoint.every_steps", "save_total_limit": "checkpoint.keep",
    "bf16": "compute_dtype='bfloat16'", "fp16": "compute_dtype='bfloat16' (float16 is not supported)",
    "gradient_checkpointing": "remat", "metric_for_best_model": "best_metric",
    "model_name_or_path": "model", "model_name": "model", "max_seq_len": "max_seq_length",
    "dataloader_drop_last": "data.drop_last", "batch_sampler": "data.batch_sampler",
    "multi_dataset_batch_sampler": "data.multi_dataset_sampler", "output_dir": "the --workdir option",
    "prompts": "data.train.<dataset>.prompts (a string, or {column: prompt}; dataset specs in data.eval take it too)",
}


def suggest(key: str, known: list[str]) -> str:
    """'; did you mean X?' for an unknown dotted config key, or ''. Tries, in order: the key's last part
    as a sentence-transformers training argument (:data:`ALIASES`), a known key with the same last part
    in another place (``optim.max_steps`` -> ``max_steps``), then the nearest spelling (difflib)."""
    last = key.rsplit(".", 1)[-1]
    if last in ALIASES:
        target = ALIASES[last]
        shown = target if " " in target or "=" in target else repr(target)
        return f"; did you mean {shown}? ({last!r} is sentence-transformers' name)"
    same = [k for k in known if k.rsplit(".", 1)[-1] == last and k != key]
    close = same or difflib.get_close_matches(key, known, n=1, cutoff=0.6) \
        or difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""



def _line_of(source: str, key: str) -> str:
    """``source:LINE`` where a config file first writes ``key`` (its last part, quoted or as ``key=``), else
    ``source``."""
    if not source.endswith(".py") or not os.path.isfile(source):
        return source
    last = key.rsplit(".", 1)[-1]
    pattern = re.compile(rf"""(['"]){re.escape(last)}\1\s*:|\b{re.escape(last)}\s*=(?!=)""")
    with open(source, encoding="utf8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if pattern.search(line):
                return f"{source}:{number}"
    return source


# dicts whose keys are user-chosen names (datasets, losses by dataset) or free-form kwargs
_OPEN_DICTS = ("data.train", "data.eval", "loss")


def merge(base: dict, update: dict, prefix: str = "", source: str = "config") -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        path = prefix + k
        if prefix.rstrip(".") in _OPEN_DICTS or any(prefix.startswith(p + ".") for p in _OPEN_DICTS):
            out[k] = copy.deepcopy(v)
        elif k not in base:
            raise ConfigError(f"{_line_of(source, path)}: unknown config key {path!r}"
                              f"{suggest(path, _flat_keys(DEFAULTS))}")
        elif isinstance(base[k], dict) and isinstance(v, dict) and path not in _OPEN_DICTS:
            out[k] = merge(base[k], v, path + ".", source)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare strings


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    config = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. -o optim.lr=3e-5)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node, path = config, ""
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            open_dict = any(path.startswith(p + ".") for p in _OPEN_DICTS)
            if part not in node and not open_dict:
                raise ConfigError(f"override {item!r}: unknown config key {path!r}"
                                  f"{suggest(path, _flat_keys(config))}")
            if i == len(parts) - 1:
                node[part] = _parse_value(text)
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"override {item!r}: {path!r} is not a dict")
    return config


def load_config_file(path_or_name: str) -> dict:
    """A config file path, or the name of a config shipped in ``configs/`` (e.g. ``quickstart``)."""
    path = path_or_name
    if not os.path.exists(path):
        here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
        candidates = [os.path.join(here, path_or_name + ".py"), os.path.join(here, path_or_name)]
        path = next((c for c in candidates if os.path.exists(c)), None)
        if path is None:
            known = sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py")) if os.path.isdir(here) else []
            raise ConfigError(f"config {path_or_name!r} not found (not a file; shipped configs: {known})")
    spec = importlib.util.spec_from_file_location("jaxsbert_user_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: a config file must define get_config() -> dict")
        config = module.get_config()
    except SyntaxError as e:     # IndentationError too
        file = path if not e.filename or os.path.abspath(e.filename) == os.path.abspath(path) else e.filename
        where = f"{file}:{e.lineno}" if e.lineno else file
        text = f" (column {e.offset}: {e.text.strip()!r:.80})" if e.text and e.offset else ""
        raise ConfigError(f"{where}: {e.msg}{text}") from e
    except ConfigError:
        raise
    except Exception as e:       # anything the config's code raised: name its line
        raise ConfigError(f"{_raised_at(e, path)}: {type(e).__name__}: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, expected a dict")
    return merge(DEFAULTS, config, source=path)


def _raised_at(error: BaseException, path: str) -> str:
    """``path:LINE`` of the last traceback frame of ``error`` in the file ``path`` (else ``path``)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f"{path}:{frames[-1].lineno}" if frames else path


# keys that take more than the type of their default
_ALSO_ACCEPTED: dict[str, tuple[type, ...]] = {"data.batch_sampler": (dict,), "data.packing": (bool, dict),
                                               "data.pack_length": (int,), "compilation_cache": (bool,),
                                               "report_to": (str,), "eval_every": (str,), "checkpoint.every_steps": (str,)}
_EPOCH_OR_STEPS = ("eval_every", "checkpoint.every_steps")
_CHOICES: dict[str, tuple[str, ...]] = {"nonfinite": ("skip", "stop"), "compute_dtype": ("float32", "bfloat16"),
                                         "attention_impl": ("auto", "fused", "materialized")}


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def check_config(config: dict, defaults: dict = DEFAULTS, prefix: str = "", source: str = "config") -> None:
    """ConfigError naming the key whose value has the wrong type (``batch_size="32"``) or is not one of
    its choices. ``None`` is accepted everywhere (it means "the default behaviour")."""
    for key, default in defaults.items():
        path = prefix + key
        value = config.get(key)
        if path in _OPEN_DICTS or value is None or default is None:
            continue
        if isinstance(value, str) and path in _EPOCH_OR_STEPS and value != "epoch":
            raise ConfigError(f"{source}: config key {path!r} must be a number of steps or 'epoch', got {value!r}")
        if path in _CHOICES and value not in _CHOICES[path]:
            raise ConfigError(f"{source}: config key {path!r} must be one of {list(_CHOICES[path])}, got {value!r}")
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: config key {path!r} must be a dict, got {value!r} ({type(value).__name__})")
            check_config(value, default, path + ".", source)
        elif not (_type_ok(value, default) or isinstance(value, _ALSO_ACCEPTED.get(path, ()))):
            want = {bool: "True or False", int: "an int", float: "a number", str: "a string"}.get(
                type(default), f"a {type(default).__name__}")
            raise ConfigError(f"{source}: config key {path!r} must be {want} (like its default {default!r}), "
                              f"got {value!r} ({type(value).__name__})")


def build_config(path_or_name: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> dict:
    config = load_config_file(path_or_name) if path_or_name else merge(DEFAULTS, base or {})
    config = apply_overrides(config, overrides or [])
    check_config(config, source=path_or_name or "config")
    return config
