"""Which rows form each batch of an epoch; a pure function of (seed, epoch), so every host agrees.

- ``batch_sampler``: a shuffled permutation cut into batches.
- ``no_duplicates``: like sentence-transformers' NoDuplicatesBatchSampler, a batch never holds the same
  text twice across its input columns (a repeated text would be a false in-batch negative).
- multi-dataset: each batch comes from one dataset; ``round_robin`` cycles through the datasets until the
  smallest runs out, ``proportional`` visits every batch of every dataset in a shuffled order (so datasets
  are picked in proportion to their number of batches).
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd

BATCH_SAMPLERS = ("batch_sampler", "no_duplicates")
MULTI_DATASET_SAMPLERS = ("round_robin", "proportional")
_SCHEDULE_STREAM = 0x7FFFFFFF


def stream_id(name: str) -> int:
    """A stable per-dataset random stream (same on every host and run, independent of dict order)."""
    return zlib.crc32(name.encode("utf8"))


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    return np.random.default_rng([seed, epoch, stream])


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int, *, drop_last: bool = False,
                     shuffle: bool = True, stream: int = 0) -> list[np.ndarray]:
    """A permutation of ``range(n)`` cut into batches of ``batch_size`` (last one partial unless ``drop_last``)."""
    order = epoch_rng(seed, epoch, stream).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def text_keys(columns: Sequence[Sequence[str]]) -> list[tuple[int, ...]]:
    """Per row, integer ids of its texts across all input columns (equal text -> equal id)."""
    n = len(columns[0]) if columns else 0
    flat = pd.Series([t for col in columns for t in col], dtype=object)
    codes, _ = pd.factorize(flat, sort=False)
    per_column = codes.reshape(len(columns), n)
    return list(zip(*(c.tolist() for c in per_column)))


def no_duplicate_batches(keys: Sequence[tuple[int, ...]], batch_size: int, seed: int, epoch: int, *,
                         drop_last: bool = False, stream: int = 0) -> list[np.ndarray]:
    """Batches in which no text id occurs twice.

    Rows are visited in a shuffled order; a batch takes each next unused row whose texts are all new to
    the batch, and is closed when full. A row that clashes waits for a later batch. When a pass over the
    unused rows cannot fill a batch, the partial batch is kept (or dropped with ``drop_last``) and the
    rows it skipped form the next batches.
    """
    order = epoch_rng(seed, epoch, stream).permutation(len(keys)).tolist()
    used = [False] * len(order)
    start, batches = 0, []
    while start < len(order):
        seen: set[int] = set()
        batch: list[int] = []
        for pos in range(start, len(order)):
            if used[pos]:
                continue
            row_keys = keys[order[pos]]
            if not seen.isdisjoint(row_keys):
                continue
            batch.append(pos)
            seen.update(row_keys)
            if len(batch) == batch_size:
                break
        for pos in batch:
            used[pos] = True
        if len(batch) == batch_size or not drop_last:
            batches.append(np.asarray([order[p] for p in batch], dtype=np.int64))
        while start < len(order) and used[start]:
            start += 1
    return batches


def dataset_schedule(batch_counts: Sequence[int], sampler: str, seed: int, epoch: int) -> list[int]:
    """The dataset index of each step of an epoch of multi-dataset training."""
    if sampler == "round_robin":
        return list(range(len(batch_counts))) * min(batch_counts, default=0)
    if sampler == "proportional":
        schedule = np.repeat(np.arange(len(batch_counts)), batch_counts)
        return epoch_rng(seed, epoch, _SCHEDULE_STREAM).permutation(schedule).tolist()
    raise ValueError(f"unknown multi-dataset sampler {sampler!r}; choose from {MULTI_DATASET_SAMPLERS}")
