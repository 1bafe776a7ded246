"""jaxsbert: sentence-transformers models, trained and served in pure JAX."""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing jaxsbert stays cheap
    if name == "SentenceEncoder":
        from jaxsbert.encoder import SentenceEncoder
        return SentenceEncoder
    if name == "losses":
        import importlib
        return importlib.import_module("jaxsbert.losses")
    raise AttributeError(name)
