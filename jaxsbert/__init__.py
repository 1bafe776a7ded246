"""jaxsbert: sentence-transformers models, trained and served in pure JAX."""
__version__ = "0.1.0"

from jaxsbert.host_memory import keep_freed_memory as _keep_freed_memory

_keep_freed_memory()     # before XLA starts its threads: see jaxsbert/host_memory.py


# name -> the module that defines it: imported on first use, so that importing jaxsbert stays cheap
_LAZY = {"SentenceEncoder": "jaxsbert.encoder", "Trainer": "jaxsbert.trainer", "TrainingArguments": "jaxsbert.trainer",
         "TrainerCallback": "jaxsbert.training.callbacks", "TrainerState": "jaxsbert.training.callbacks",
         "TrainerControl": "jaxsbert.training.callbacks"}
__all__ = [*_LAZY, "losses", "evaluation", "__version__"]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("losses", "evaluation"):
        return importlib.import_module(f"jaxsbert.{name}")
    raise AttributeError(f"module 'jaxsbert' has no attribute {name!r}")
