"""Orbax checkpoints of the whole train state (params, loss heads, optimizer state, step, RNG) plus the
data position and run metadata as JSON, so a resumed run continues exactly.

Safety against crashes and bad disks:

- Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a process
  killed mid-write leaves no partial step directory (the tmp directory is ignored, and replaced when that
  step is saved again).
- Every checkpoint's metadata holds a checksum of each saved array. :meth:`Checkpointer.restore` checks
  them; a latest checkpoint that cannot be read or does not match its checksums is moved aside (to
  ``<checkpoints>/../corrupt-checkpoints/``) with a warning, and the previous one is used.
- Non-finite values are never written: :meth:`Checkpointer.save` refuses a state holding NaN or inf.
- A checkpoint whose arrays do not match the state being restored (another model, another loss head)
  is an error naming the arrays, not a fallback.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxsbert.parallel.mesh import in_host_memory

log = logging.getLogger("jaxsbert")


class CheckpointMismatchError(ValueError):
    """The checkpoint's arrays (names, shapes, dtypes) differ from the state it is restored into."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that cannot be read back, or whose arrays do not match their saved checksums."""


def key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flat(tree: Any) -> dict[str, Any]:
    """``{"params.transformer.embeddings....": leaf}``; the same names whether containers are dicts, lists or
    named tuples (an Orbax checkpoint read without a target has plain dicts and lists)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(key_name(k) for k in path): leaf for path, leaf in leaves}


def _leaf_digest(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two uint32 checksums of the bits of ``x`` (order-sensitive) and whether it is all finite."""
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        as_uint = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        bits = jax.lax.bitcast_convert_type(x, as_uint).astype(jnp.uint32)
    bits = bits.reshape(-1)
    i = jnp.arange(bits.shape[0], dtype=jnp.uint32)
    plain = jnp.sum(bits ^ (i * jnp.uint32(0x9E3779B9)), dtype=jnp.uint32)
    weighted = jnp.sum(bits * (2 * i + 1), dtype=jnp.uint32)    # odd weights: any one changed word shows
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True)
    return jnp.stack([plain, weighted]), finite


_digest = jax.jit(lambda leaves: [_leaf_digest(jnp.asarray(x)) for x in leaves])


def _leaf_digest_numpy(x: np.ndarray, index: dict[int, np.ndarray]) -> tuple[list[int], bool]:
    """:func:`_leaf_digest` in numpy (uint32 arithmetic wraps the same way, and sums modulo 2**32 do not
    depend on the order of the additions, so the values are identical); ``index`` caches aranges by size."""
    if x.dtype == np.bool_:
        bits = x.astype(np.uint32)
    else:
        as_uint = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[x.dtype.itemsize]
        bits = np.ascontiguousarray(x).view(as_uint).astype(np.uint32, copy=False)
    bits = bits.reshape(-1)
    if bits.shape[0] not in index:
        index[bits.shape[0]] = np.arange(bits.shape[0], dtype=np.uint32)
    i = index[bits.shape[0]]
    plain = np.sum(bits ^ (i * np.uint32(0x9E3779B9)), dtype=np.uint32)
    weighted = np.sum(bits * (2 * i + np.uint32(1)), dtype=np.uint32)
    finite = bool(np.all(np.isfinite(x))) if np.issubdtype(x.dtype, np.inexact) else True
    return [int(plain), int(weighted)], finite


def _host(x: jax.Array) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)     # replicated scalars of a multi-process computation
    return np.asarray(x)


def digest(state: Any) -> tuple[dict[str, list[int]], list[str]]:
    """Checksums of every array of ``state`` by name, and the names of arrays holding NaN or inf.

    Arrays in host memory (the CPU backend) are summed in numpy: the jitted digest's XLA compilation
    costs ~4 s on a 2-core CPU for a MiniLM train state, the numpy pass ~0.3 s. Arrays on accelerators
    or split across processes use the jitted digest (same values)."""
    flat = _flat(state)
    names = list(flat)
    if all(in_host_memory(flat[n]) for n in names):
        index: dict[int, np.ndarray] = {}
        results = [_leaf_digest_numpy(np.asarray(flat[n]), index) for n in names]
    else:
        results = [([int(v) for v in _host(sums)], bool(_host(finite)))
                   for sums, finite in _digest([flat[n] for n in names])]
    checksums, nonfinite = {}, []
    for name, (sums, finite) in zip(names, results):
        checksums[name] = sums
        if not finite:
            nonfinite.append(name)
    return checksums, nonfinite


def _short(e: BaseException, limit: int = 240) -> str:
    text = str(e).split(" [tensorstore_spec=")[0]
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


FROZEN = "frozen"    # the train state's entry of parameters a loss uses but never trains (a guide model's)


def _without_frozen(state: Any) -> tuple[Any, Any]:
    """(the state without its ``frozen`` entry, that entry or None). Frozen parameters are never saved: they
    are the guide's own, reloaded from its path when a run starts or resumes."""
    if isinstance(state, dict) and FROZEN in state:
        return {k: v for k, v in state.items() if k != FROZEN}, state[FROZEN]
    return state, None


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                            "meta": ocp.JsonCheckpointHandler()})

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves asynchronously when enabled; the write is atomic (a finished step directory or none).
        Refuses (FloatingPointError) a state holding NaN or inf, and never replaces an existing step. A
        ``frozen`` entry (a loss's untrained parameters) is left out."""
        state, _ = _without_frozen(state)
        checksums, nonfinite = digest(state)
        if nonfinite:
            raise FloatingPointError(f"{self.directory}: not saving step {step}: non-finite values in "
                                     f"{_describe(nonfinite)}")
        if step in self.all_steps():
            raise FileExistsError(f"{self.directory}: step {step} exists already; checkpoints are never overwritten")
        meta = dict(meta, checksums=checksums)
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    # ------------------------------------------------------------------ restoring

    def _check_matches(self, step: int, target_state: Any) -> None:
        """CheckpointMismatchError naming the arrays whose names, shapes or dtypes differ from the target's."""
        try:
            saved = self.manager.item_metadata(step)["state"]
            saved = _flat(saved.tree if hasattr(saved, "tree") else saved)
        except Exception as e:  # unreadable metadata: a damaged checkpoint
            raise CorruptCheckpointError(f"step {step}: cannot read the array metadata "
                                         f"({type(e).__name__}: {_short(e)})") from e
        wanted = _flat(target_state)
        wanted = dict(sorted(wanted.items(), key=lambda kv: kv[0].startswith("opt_state")))   # params first
        problems = []
        missing = [n for n in wanted if n not in saved]
        unexpected = [n for n in saved if n not in wanted]
        if missing:
            problems.append(f"missing from the checkpoint: {_describe(missing)}")
        if unexpected:
            problems.append(f"in the checkpoint but not in the model: {_describe(unexpected)}")
        for name in wanted:
            if name in saved:
                s, w = saved[name], wanted[name]
                s_shape, w_shape = tuple(getattr(s, "shape", ())), tuple(np.shape(w))
                s_dtype, w_dtype = np.dtype(getattr(s, "dtype", None) or np.float32), np.dtype(w.dtype)
                if s_shape != w_shape or s_dtype != w_dtype:
                    problems.append(f"{name}: checkpoint {s_dtype}{list(s_shape)}, model {w_dtype}{list(w_shape)}")
        if problems:
            raise CheckpointMismatchError(
                f"{self.directory}/{step}: the checkpoint does not match the model and losses being trained ("
                + "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
                + "). Resume with the model and loss config the run was started with, or use a new --workdir")

    def _verify(self, step: int, state: Any, meta: dict) -> None:
        expected = meta.get("checksums") if isinstance(meta, dict) else None
        if not expected:
            return      # written before checksums were recorded
        actual, _ = digest(state)
        bad = sorted(n for n in expected if actual.get(n) != expected[n])
        if bad or set(actual) != set(expected):
            raise CorruptCheckpointError(f"step {step}: the arrays read back do not match their checksums "
                                         f"({_describe(bad or sorted(set(actual) ^ set(expected)))})")

    def _restore_step(self, step: int, target_state: Any | None) -> tuple[Any, dict]:
        if target_state is not None:
            self._check_matches(step, target_state)
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
            state_args = ocp.args.StandardRestore(abstract)
        else:
            state_args = ocp.args.StandardRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=state_args,
                                                                          meta=ocp.args.JsonRestore()))
            state, meta = restored["state"], restored["meta"]
        except Exception as e:
            raise CorruptCheckpointError(f"step {step}: cannot be read ({type(e).__name__}: {_short(e)})") from e
        self._verify(step, state, meta)
        return state, meta

    def _quarantine(self, step: int) -> str | None:
        """Moves a damaged step directory out of the way (kept for inspection, never reused)."""
        if jax.process_index() != 0:
            return None
        src = os.path.join(self.directory, str(step))
        dst_dir = os.path.join(os.path.dirname(self.directory), "corrupt-checkpoints")
        dst = os.path.join(dst_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            os.makedirs(dst_dir, exist_ok=True)
            os.rename(src, dst)
        except OSError as e:
            log.warning("could not move the damaged checkpoint %s aside (%s)", src, e)
            return None
        self.manager.reload()
        return dst

    def _restore(self, target_state: Any | None, step: int | None, quarantine: bool) -> tuple[Any, dict]:
        if step is not None:
            return self._restore_step(step, target_state)
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        for i, s in enumerate(steps):
            try:
                state, meta = self._restore_step(s, target_state)
            except CorruptCheckpointError as e:
                moved = self._quarantine(s) if quarantine else None
                older = steps[i + 1] if i + 1 < len(steps) else None
                log.warning("checkpoint %s/%d is damaged: %s;%s %s", self.directory, s, e,
                            f" moved to {moved};" if moved else "",
                            f"falling back to step {older}" if older is not None else "no older checkpoint left")
                continue
            if s != steps[0]:
                log.warning("restored step %d instead of the latest step %d, which was damaged", s, steps[0])
            return state, meta
        raise CorruptCheckpointError(f"{self.directory}: every checkpoint ({steps}) is damaged; nothing to restore")

    def restore(self, target_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``step`` (default: the latest readable one) into arrays shaped and sharded like
        ``target_state``. Without ``step``, damaged checkpoints are moved aside and older ones tried. The
        target's ``frozen`` entry (never saved) is returned as it is."""
        target_state, frozen = _without_frozen(target_state)
        state, meta = self._restore(target_state, step, quarantine=True)
        return (state if frozen is None else {**state, FROZEN: frozen}), meta

    def restore_raw(self, step: int | None = None) -> Any:
        """The saved train state as plain nested dicts of arrays, without a target structure (checked
        against its checksums; without ``step``, the latest readable checkpoint)."""
        return self._restore(None, step, quarantine=False)[0]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
