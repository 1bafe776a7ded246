"""The training data loader: datasets + tokenizer -> an endless, resumable stream of static-shape batches.

Every epoch's plan (which dataset and rows each step takes) is a pure function of (seed, epoch), so all
hosts compute the same global batches and a run resumed at a :class:`Position` yields exactly the batches
it had not yet consumed. Each process builds only its own slice of the rows of each global batch.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import datasets
import numpy as np

from jaxsbert.data.batching import batch_length, make_batch, make_packed_batch, process_rows
from jaxsbert.data.buckets import bucket_for, length_buckets
from jaxsbert.data.pack_shapes import AUTO_MAX_LENGTH, auto_lengths, choose_pack_shape
from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS, rows_needed
from jaxsbert.data.columns import validate_dataset
from jaxsbert.data.loading import dataset_source
from jaxsbert.data.samplers import (BATCH_SAMPLERS, MULTI_DATASET_SAMPLERS, dataset_schedule,
                                    no_duplicate_batches, shuffled_batches, stream_id, text_keys)
from jaxsbert.data.tokenization import TokenizedDataset, tokenize_dataset


class Position(NamedTuple):
    """Where the data stream stands: the next batch to yield is batch ``index`` of epoch ``epoch``."""
    epoch: int = 0
    index: int = 0

    @classmethod
    def of(cls, value: Any) -> "Position":
        """From a Position, an (epoch, index) pair, or a dict {"epoch", "index"} (as saved in a checkpoint)."""
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            return cls(int(value["epoch"]), int(value["index"]))
        epoch, index = value
        return cls(int(epoch), int(index))

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}


@dataclasses.dataclass(frozen=True)
class LoaderBatch:
    """One step's data: the dataset it came from, the batch arrays, and its place in the stream."""
    dataset: str
    batch: dict
    position: Position           # this batch
    next_position: Position      # where to resume after this batch has been trained on


SHAPE_SAMPLE = 256   # batches per dataset from which the packed shapes and the programs to compile are read


class DataLoader:
    """Static-shape batches from one dataset or a dict of named datasets.

    Args:
      datasets_: a ``datasets.Dataset`` (named ``"train"``) or ``{name: Dataset}`` (multi-dataset training).
      tokenizer: callable ``list[str] -> list[list[int]]`` with ``pad_token_id`` (and ``max_seq_length``).
      batch_size: the global batch size B (all hosts, all devices).
      batch_sampler: ``"batch_sampler"`` or ``"no_duplicates"``, or ``{name: one of those}``.
      multi_dataset_sampler: ``"proportional"`` or ``"round_robin"`` (ignored with one dataset).
      drop_last: drop each dataset's last partial batch instead of padding and masking it.
      seed: with the epoch number, fixes every shuffle.
      max_seq_length: the largest length bucket (default ``tokenizer.max_seq_length``).
      buckets: the length buckets (default ``length_buckets(max_seq_length)``).
      process_index, process_count: build only this process's contiguous rows of each global batch.
      prefetch: batches built ahead in a background thread (0: none).
      use_map_cache: tokenize through ``datasets.map`` (on-disk cache) instead of in memory.
      packing: pack the sentences of each batch into rows (:mod:`jaxsbert.data.packing`); a bool, or
        ``{name: bool}``. Packed rows hold at most ``max_segments`` sentences and, per dataset, one row
        length: with ``pack_length="auto"``, the multiple of ``row_length_step`` from the longest
        sentence up to 128 tokens that :mod:`jaxsbert.data.pack_shapes` estimates cheapest (or the
        longest sentence's length bucket, past 128); with an int, ``max(pack_length, longest sentence's
        bucket)``. A batch gets the fewest rows that hold it out of up to three counts per dataset
        (multiples of ``row_multiple``, chosen from the first epoch's first ``SHAPE_SAMPLE`` batches
        against the cost of compiling one more program), so a few programs serve every batch; one that
        needs more than the largest count gets more rows (and a program of its own).
    """

    def __init__(self, datasets_: datasets.Dataset | Mapping[str, datasets.Dataset], tokenizer, batch_size: int, *,
                 batch_sampler: str | Mapping[str, str] = "batch_sampler",
                 multi_dataset_sampler: str = "proportional", drop_last: bool = False, seed: int = 0,
                 max_seq_length: int | None = None, buckets: Sequence[int] | None = None,
                 process_index: int = 0, process_count: int = 1, prefetch: int = 0,
                 use_map_cache: bool = False, packing: bool | Mapping[str, bool] = False,
                 pack_length: int | str = "auto", max_segments: int = DEFAULT_MAX_SEGMENTS,
                 row_multiple: int = 1, row_length_step: int = 8):
        named = {"train": datasets_} if isinstance(datasets_, datasets.Dataset) else dict(datasets_)
        if not named:
            raise ValueError("no training dataset given")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if multi_dataset_sampler not in MULTI_DATASET_SAMPLERS:
            raise ValueError(f"unknown multi_dataset_sampler {multi_dataset_sampler!r}; "
                             f"choose from {MULTI_DATASET_SAMPLERS}")
        samplers = dict(batch_sampler) if isinstance(batch_sampler, Mapping) else {n: batch_sampler for n in named}
        for name in named:
            s = samplers.setdefault(name, "batch_sampler")
            if s not in BATCH_SAMPLERS:
                raise ValueError(f"dataset {name!r}: unknown batch_sampler {s!r}; choose from {BATCH_SAMPLERS}")
        self.process_slice = process_rows(batch_size, process_index, process_count)
        self.batch_size = batch_size
        self.process_index, self.process_count = process_index, process_count
        self.samplers = samplers
        self.multi_dataset_sampler = multi_dataset_sampler
        self.drop_last = drop_last
        self.seed = int(seed)
        self.tokenizer = tokenizer
        self.pad_token_id = getattr(tokenizer, "pad_token_id", 0)
        if buckets is None:
            max_seq_length = max_seq_length or getattr(tokenizer, "max_seq_length", None)
            if max_seq_length is None:
                raise ValueError("give max_seq_length or buckets (the tokenizer has no max_seq_length)")
            buckets = length_buckets(max_seq_length)
        self.buckets = tuple(sorted(buckets))
        self.prefetch = prefetch

        self.names = tuple(named)
        self.data: dict[str, TokenizedDataset] = {}
        self._keys: dict[str, list] = {}
        for name, ds in named.items():
            columns = validate_dataset(ds, name=name)
            if drop_last and len(ds) < batch_size:
                raise ValueError(f"dataset {name!r} ({dataset_source(ds)}) has {len(ds)} rows, fewer than the batch "
                                 f"size {batch_size}: with drop_last=True it gives no batch at all; lower "
                                 "batch_size or set drop_last=False")
            self.data[name] = tokenize_dataset(ds, tokenizer, use_map_cache=use_map_cache)
            _log_truncated(name, ds, columns.inputs, self.data[name], tokenizer)
            if samplers[name] == "no_duplicates":
                self._keys[name] = text_keys([ds[c] for c in columns.inputs])
        self._plans: dict[int, list[tuple[str, np.ndarray]]] = {}
        self._plan_lock = threading.Lock()     # the prefetch thread plans too
        if self.steps_per_epoch(0) == 0:
            sizes = {n: len(d) for n, d in self.data.items()}
            raise ValueError(f"an epoch has no batches (dataset sizes {sizes}, batch_size {batch_size}, "
                             f"drop_last={drop_last})")
        packed = dict(packing) if isinstance(packing, Mapping) else {n: bool(packing) for n in named}
        if pack_length != "auto" and (isinstance(pack_length, bool) or not isinstance(pack_length, int)
                                      or pack_length < 1):
            raise ValueError(f"pack_length must be 'auto' or a positive number of tokens, got {pack_length!r}")
        self.max_segments = int(max_segments)
        self.row_multiple = max(int(row_multiple), 1)
        self.pack_shapes: dict[str, tuple[int, int]] = {}    # name -> (most rows per process, row length)
        self.pack_rows: dict[str, tuple[int, ...]] = {}      # name -> the row counts of its batches
        for name in self.names:
            if packed.get(name):
                longest = max(int(c.lengths.max()) for c in self.data[name].inputs)
                if pack_length == "auto" and longest <= AUTO_MAX_LENGTH:
                    lengths = auto_lengths(longest, max(int(row_length_step), 1))
                else:
                    fixed = AUTO_MAX_LENGTH if pack_length == "auto" else pack_length
                    lengths = [max(fixed, bucket_for(longest, self.buckets))]
                plan = [rows for n, rows in self.plan(0) if n == name]
                sample = plan[:SHAPE_SAMPLE]
                length, counts = choose_pack_shape(
                    lengths, lambda n: [self._rows_needed(name, rows, n) for rows in sample], len(plan),
                    self.row_multiple)
                self.pack_rows[name] = counts
                self.pack_shapes[name] = (counts[-1], length)

    # ------------------------------------------------------------------ the plan of an epoch

    def _dataset_batches(self, name: str, epoch: int) -> list[np.ndarray]:
        stream = stream_id(name)
        if self.samplers[name] == "no_duplicates":
            return no_duplicate_batches(self._keys[name], self.batch_size, self.seed, epoch,
                                        drop_last=self.drop_last, stream=stream)
        return shuffled_batches(len(self.data[name]), self.batch_size, self.seed, epoch,
                                drop_last=self.drop_last, stream=stream)

    def plan(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        """(dataset name, global row indices) of every step of ``epoch``; deterministic in (seed, epoch)."""
        with self._plan_lock:
            return self._plan_locked(epoch)

    def _plan_locked(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        if epoch not in self._plans:
            per_dataset = [self._dataset_batches(n, epoch) for n in self.names]
            if len(self.names) == 1:
                plan = [(self.names[0], rows) for rows in per_dataset[0]]
            else:
                schedule = dataset_schedule([len(b) for b in per_dataset], self.multi_dataset_sampler,
                                            self.seed, epoch)
                taken = [0] * len(self.names)
                plan = []
                for d in schedule:
                    plan.append((self.names[d], per_dataset[d][taken[d]]))
                    taken[d] += 1
            if len(self._plans) >= 2:      # keep the current and the next epoch
                self._plans.pop(min(self._plans))
            self._plans[epoch] = plan
        return self._plans[epoch]

    def token_ids(self) -> np.ndarray:
        """Every token id that this loader's batches can hold (its datasets' tokens and padding), ascending."""
        parts = [col.unique.values for d in self.data.values() for col in d.inputs]
        return np.unique(np.concatenate(parts + [np.asarray([self.pad_token_id], np.int32)]))

    def steps_per_epoch(self, epoch: int = 0) -> int:
        """Number of batches in ``epoch`` (the same every epoch, except with no_duplicates where it can vary)."""
        return len(self.plan(epoch))

    def total_steps(self, epochs: int) -> int:
        return sum(self.steps_per_epoch(e) for e in range(epochs))

    def _rows_needed(self, name: str, rows: np.ndarray, length: int) -> int:
        """Packed rows of ``length`` tokens that the largest process share of the global batch ``rows`` needs."""
        size = self.batch_size // self.process_count
        lengths = np.stack([c.lengths_of(rows) for c in self.data[name].inputs], axis=1)   # [rows, columns]
        return max(rows_needed(lengths[p * size:(p + 1) * size].ravel(), length, self.max_segments)
                   for p in range(self.process_count))

    def _packed_rows(self, name: str, rows: np.ndarray) -> int:
        """Packed rows per process for the global batch ``rows``: the smallest of the dataset's row counts
        that holds every process's share (more, in steps, past the largest). The same on every process."""
        need = self._rows_needed(name, rows, self.pack_shapes[name][1])
        fits = [r for r in self.pack_rows[name] if r >= need]
        if fits:
            return fits[0]
        step = max(self.row_multiple, self.pack_rows[name][-1] // 4)
        return -(-need // step) * step

    def shape_positions(self, epoch: int = 0, sample: int = SHAPE_SAMPLE) -> list[Position]:
        """One position per distinct batch shape (dataset and packed rows, or dataset and length bucket)
        among each dataset's first ``sample`` batches of ``epoch``: the programs a run needs, to compile
        them before the first step."""
        first: dict[tuple, Position] = {}
        seen: dict[str, int] = {}
        for index, (name, rows) in enumerate(self.plan(epoch)):
            if seen.get(name, 0) >= sample:
                continue
            seen[name] = seen.get(name, 0) + 1
            shape = (self._packed_rows(name, rows) if name in self.pack_shapes
                     else batch_length(self.data[name], rows, self.buckets))
            first.setdefault((name, shape), Position(epoch, index))
        return list(first.values())

    def batch_at(self, position: Position | tuple | Mapping) -> LoaderBatch:
        """The batch at ``position`` (this process's slice)."""
        pos = self.normalize(Position.of(position))
        name, rows = self.plan(pos.epoch)[pos.index]
        if name in self.pack_shapes:
            batch = make_packed_batch(self.data[name], rows, self.batch_size, self._packed_rows(name, rows),
                                      self.pack_shapes[name][1], self.max_segments, self.pad_token_id,
                                      process_index=self.process_index, process_count=self.process_count)
        else:
            batch = make_batch(self.data[name], rows, self.batch_size, self.buckets, self.pad_token_id,
                               process_index=self.process_index, process_count=self.process_count)
        return LoaderBatch(name, batch, pos, self.normalize(Position(pos.epoch, pos.index + 1)))

    def normalize(self, pos: Position) -> Position:
        """Maps the position one past an epoch's last batch to the start of the next epoch."""
        epoch, index = pos
        if index < 0:
            raise ValueError(f"bad position {tuple(pos)}")
        while index >= self.steps_per_epoch(epoch):
            index -= self.steps_per_epoch(epoch)
            epoch += 1
        return Position(epoch, index)

    # ------------------------------------------------------------------ iteration

    def iterate(self, start: Position | tuple | Mapping | None = None, epochs: int | None = None) -> "BatchIterator":
        """Batches from ``start`` (default the beginning) until the end of epoch ``epochs - 1`` (None: forever)."""
        return BatchIterator(self, Position.of(start), epochs)

    def __iter__(self) -> Iterator[LoaderBatch]:
        return self.iterate(epochs=1)


def _log_truncated(name: str, ds: datasets.Dataset, columns: Sequence[str], data: TokenizedDataset, tokenizer) -> None:
    counts = {c: col.truncated for c, col in zip(columns, data.inputs) if col.truncated}
    if counts:
        logging.getLogger("jaxsbert").warning(
            "dataset %r (%s): %d text(s) longer than max_seq_length=%s tokens were truncated (by column: %s)",
            name, dataset_source(ds), sum(counts.values()), getattr(tokenizer, "max_seq_length", None), counts)


class BatchIterator:
    """Iterator of :class:`LoaderBatch`; ``position`` is where a checkpoint taken now should resume."""

    def __init__(self, loader: DataLoader, start: Position, epochs: int | None):
        self.loader = loader
        self.epochs = epochs
        self.position = loader.normalize(start)
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        if loader.prefetch > 0:
            self._queue = queue.Queue(maxsize=loader.prefetch)
            self._thread = threading.Thread(target=self._produce, args=(self.position,), daemon=True)
            self._thread.start()

    def _finished(self, pos: Position) -> bool:
        return self.epochs is not None and pos.epoch >= self.epochs

    def _produce(self, pos: Position) -> None:
        try:
            while not self._finished(pos) and not self._stop.is_set():
                item = self.loader.batch_at(pos)
                self._put(item)
                pos = item.next_position
            self._put(StopIteration())
        except BaseException as e:  # handed to the consumer
            self._put(e)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> LoaderBatch:
        if self._queue is None:
            if self._finished(self.position):
                raise StopIteration
            item = self.loader.batch_at(self.position)
        else:
            if self._finished(self.position):
                self.close()
                raise StopIteration
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
        self.position = item.next_position
        return item

    def close(self) -> None:
        """Stops the prefetch thread (if any)."""
        self._stop.set()

    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
