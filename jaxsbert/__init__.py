"""jaxsbert: sentence-transformers models, trained and served in pure JAX."""
__version__ = "0.1.0"

from jaxsbert.host_memory import keep_freed_memory as _keep_freed_memory

_keep_freed_memory()     # before XLA starts its threads: see jaxsbert/host_memory.py


def __getattr__(name):  # lazy: importing jaxsbert stays cheap
    if name == "SentenceEncoder":
        from jaxsbert.encoder import SentenceEncoder
        return SentenceEncoder
    if name == "losses":
        import importlib
        return importlib.import_module("jaxsbert.losses")
    raise AttributeError(name)
