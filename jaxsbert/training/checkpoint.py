"""Orbax checkpoints of the whole train state (params, loss heads, optimizer state, step, RNG) plus the
data position and run metadata as JSON, so a resumed run continues exactly."""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("jaxsbert")


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves asynchronously when enabled; the write is atomic (a finished step directory or none)."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, target_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``step`` (default: latest) into arrays shaped and sharded like ``target_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                      meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def restore_raw(self, step: int | None = None) -> Any:
        """The saved train state as plain nested dicts of arrays, without a target structure."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
