"""Persistent XLA compilation cache: a train step is compiled once per machine, not once per run.

A MiniLM train step takes ~6-8 s to trace and compile on a 2-core CPU, and a run compiles one per (loss, batch
shape); a re-run of the same config (another seed, a resumed or restarted run) loads them from disk.
``jaxsbert train`` turns the cache on (config key ``compilation_cache``):

- ``"auto"`` or ``True`` (default): ``$JAXSBERT_COMPILATION_CACHE`` if set (``0``/``off``/empty: no cache), else
  ``$XDG_CACHE_HOME/jaxsbert/xla`` (``~/.cache/jaxsbert/xla``);
- a path: that directory;  ``None``/``False``, or the strings the environment variable reads as off
  (``"0"``, ``"off"``, ``"false"``, ``"none"``, ``""``): no cache (never a directory named ``0``).

The cache is JAX's own (``jax_compilation_cache_dir``); like any compilation cache it is trusted
code, so keep it in a directory only you can write. Programs that compile in under a second are
not stored (JAX's ``jax_persistent_cache_min_compile_time_secs``).
"""
from __future__ import annotations

import logging
import os

import jax

ENV = "JAXSBERT_COMPILATION_CACHE"
_OFF = ("", "0", "off", "false", "none")
log = logging.getLogger("jaxsbert")


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxsbert", "xla")


def _is_off(text: str) -> bool:
    return text.strip().lower() in _OFF


def resolve(setting) -> str | None:
    """The cache directory for a config's ``compilation_cache`` setting, or None for no cache."""
    if setting is None or setting is False:
        return None
    if setting is True or setting == "auto":
        if ENV in os.environ:
            value = os.environ[ENV].strip()
            return None if _is_off(value) else os.path.expanduser(value)
        return default_dir()
    if isinstance(setting, str):
        return None if _is_off(setting) else os.path.expanduser(setting)
    raise ValueError(f"compilation_cache must be 'auto', a directory or None; got {setting!r}")


def enable(setting="auto") -> str | None:
    """Points JAX's persistent compilation cache at ``resolve(setting)``; returns the directory (or None).

    A cache directory the user already set through JAX (``jax_compilation_cache_dir``) is kept.
    """
    path = resolve(setting)
    current = jax.config.jax_compilation_cache_dir
    if path is None or current == path:
        return current
    if current:
        log.info("compilation cache: keeping jax_compilation_cache_dir=%s (config asks for %s)", current, path)
        return current
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # JAX decides once per process whether it has a cache; anything compiled before this call
    # (model loading runs small programs) made that decision without the directory
    from jax._src import compilation_cache as _cc
    _cc.reset_cache()
    return path
