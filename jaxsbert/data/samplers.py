"""The order stage: which rows form each batch of an epoch, from (seed, epoch) and row indices alone.

Every sampler gives batch ``k`` of epoch ``e`` of one dataset (``rows(e, k)``, global row indices) and
the number of batches of an epoch (``count(e)``), the same on every host, without reading the data
(except where its semantics need the texts or labels, as said):

- ``batch_sampler``: a permutation cut into batches. Up to ``MATERIALIZE_MAX`` rows the permutation is
  numpy's (``default_rng([seed, epoch, stream]).permutation(n)``, as in earlier jaxsbert versions, so
  their runs and checkpoints continue the same); above it, Grain's index shuffle
  (``grain.MapDataset.range(n).shuffle(seed)``), which maps an index to its place without
  materializing anything: O(1) memory at any size.
- ``no_duplicates``: as sentence-transformers' NO_DUPLICATES (hashed): rows are visited in the
  permuted order and a batch takes each next row none of whose texts it already holds; a row that
  clashes waits (deferred) for a later batch. An epoch has ``ceil(n / B)`` batches (``floor`` with
  drop_last), the number sentence-transformers' sampler reports; the last ones may be partial when
  only clashing rows remain, and rows still deferred at the end of the epoch are left out of it (and
  counted). It reads the texts of the rows it visits (every row of each global batch, on every host)
  and is sequential: batch ``k`` is computed from the state after batch ``k - 1``; states are kept
  every ``NO_DUPLICATES_STRIDE`` batches, so a resume replays at most that many.
- ``group_by_label``: as sentence-transformers' GroupByLabelBatchSampler (for the batch triplet
  losses): rows are shuffled within each label and labels take turns giving two rows each, in an
  order reshuffled every round, so that every batch holds >= 2 rows of each label it has. Reads the
  label column once (4 bytes a row).
- multi-dataset: each batch comes from one dataset; ``round_robin`` cycles through the datasets until
  the smallest runs out, ``proportional`` visits every batch of every dataset in a shuffled order.
"""
from __future__ import annotations

import threading
import zlib
from typing import Callable, Sequence

import numpy as np

BATCH_SAMPLERS = ("batch_sampler", "no_duplicates", "group_by_label")
MULTI_DATASET_SAMPLERS = ("round_robin", "proportional")
_SCHEDULE_STREAM = 0x7FFFFFFF
MATERIALIZE_MAX = 1 << 22          # rows up to which an epoch's permutation is a numpy array (32 MiB)
NO_DUPLICATES_STRIDE = 64


def stream_id(name: str) -> int:
    """A stable per-dataset random stream (same on every host and run, independent of dict order)."""
    return zlib.crc32(name.encode("utf8"))


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    return np.random.default_rng([seed, epoch, stream])


class Permutation:
    """The permutation of ``range(n)`` of each epoch; ``take(epoch, positions)`` -> row indices."""

    def __init__(self, n: int, seed: int, stream: int = 0, shuffle: bool = True):
        self.n, self.seed, self.stream, self.shuffle = int(n), int(seed), int(stream), shuffle
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._grain = None
        if shuffle and self.n > MATERIALIZE_MAX:
            import grain

            mixed = int(np.random.default_rng([self.seed, self.stream]).integers(0, 2**31 - 1))
            self._grain = grain.MapDataset.range(self.n).shuffle(seed=mixed)

    def _epoch(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._cache:
                if len(self._cache) >= 2:          # the current and the next epoch
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = epoch_rng(self.seed, epoch, self.stream).permutation(self.n)
            return self._cache[epoch]

    def take(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if not self.shuffle:
            return positions
        if self._grain is None:
            return self._epoch(epoch)[positions]
        base = epoch * self.n             # Grain reshuffles every pass over range(n)
        return np.fromiter((self._grain[base + int(p)] for p in positions), np.int64, count=len(positions))


class PlainBatches:
    """``batch_sampler``: batch k is positions [kB, (k+1)B) of the epoch's permutation."""

    def __init__(self, n: int, batch_size: int, seed: int, *, drop_last: bool = False, stream: int = 0):
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.permutation = Permutation(n, seed, stream)

    def count(self, epoch: int) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def rows(self, epoch: int, k: int) -> np.ndarray:
        stop = min((k + 1) * self.batch_size, self.n)
        return self.permutation.take(epoch, np.arange(k * self.batch_size, stop))


class NoDuplicateBatches:
    """``no_duplicates`` (see the module docstring). ``texts(rows) -> [column][row]`` reads rows' texts."""

    def __init__(self, n: int, batch_size: int, seed: int, texts: Callable[[np.ndarray], list[list[str]]], *,
                 drop_last: bool = False, stream: int = 0, read_ahead: int = 1024):
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.permutation = Permutation(n, seed, stream)
        self.texts, self.read_ahead = texts, read_ahead
        self._states: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {}   # (epoch, k) -> (cursor, deferred)
        self._keys: dict[int, frozenset] = {}     # row -> its texts, for rows read ahead or deferred
        self._lock = threading.Lock()
        self.left_out: dict[int, int] = {}        # epoch -> rows still deferred at its end

    def count(self, epoch: int) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _read(self, rows: np.ndarray) -> None:
        for row, texts in zip(rows.tolist(), zip(*self.texts(rows))):
            self._keys[row] = frozenset(texts)

    def _next(self, epoch: int, state) -> tuple[np.ndarray, tuple]:
        """The batch after ``state`` and the state after it."""
        cursor, deferred = state
        missing = [r for r in deferred if r not in self._keys]
        if missing:                                  # a state restored from elsewhere
            self._read(np.asarray(missing, np.int64))
        batch, seen, waiting = [], set(), []
        for row in deferred:
            if len(batch) < self.batch_size and seen.isdisjoint(self._keys[row]):
                batch.append(row)
                seen |= self._keys.pop(row)
            else:
                waiting.append(row)
        while len(batch) < self.batch_size and cursor < self.n:
            stop = min(cursor + self.read_ahead, self.n)
            ahead = self.permutation.take(epoch, np.arange(cursor, stop))
            unread = [r for r in ahead.tolist() if r not in self._keys]
            if unread:
                self._read(np.asarray(unread, np.int64))
            for row in ahead.tolist():
                cursor += 1
                keys = self._keys[row]
                if seen.isdisjoint(keys):
                    batch.append(row)
                    seen |= self._keys.pop(row)
                else:
                    waiting.append(row)
                if len(batch) == self.batch_size:
                    break
        return np.asarray(batch, np.int64), (cursor, tuple(waiting))

    def rows(self, epoch: int, k: int) -> np.ndarray:
        with self._lock:
            start = max((j for (e, j) in self._states if e == epoch and j <= k), default=0)
            state = self._states.get((epoch, start), (0, ()))
            if (epoch, start) not in self._states:
                self._keys.clear()
            for j in range(start, k + 1):
                if j % NO_DUPLICATES_STRIDE == 0:
                    self._states[(epoch, j)] = state
                batch, state = self._next(epoch, state)
            self._states = {key: v for key, v in self._states.items()
                            if key[0] >= epoch - 1 and (key[1] % NO_DUPLICATES_STRIDE == 0 or key[0] != epoch)}
            self._states[(epoch, k + 1)] = state      # the next call continues from here
            if k + 1 == self.count(epoch):
                self.left_out[epoch] = len(state[1]) + self.n - state[0]
            return batch


class GroupByLabelBatches:
    """``group_by_label`` (see the module docstring); ``labels``: the dataset's label column."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int, *, drop_last: bool = False, stream: int = 0):
        if batch_size < 4 or batch_size % 2:
            raise ValueError(f"batch_sampler 'group_by_label' needs an even batch size >= 4, got {batch_size}")
        labels = np.asarray(labels)
        values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(counts)[:-1])
        self.groups = [g for g in groups if len(g) >= 2]
        if len(self.groups) < 2:
            raise ValueError("batch_sampler 'group_by_label' needs at least 2 distinct labels with >= 2 rows each, "
                             f"but only {len(self.groups)} label(s) have that many")
        self.batch_size, self.drop_last, self.seed, self.stream = batch_size, drop_last, seed, stream
        pairs = sorted((len(g) // 2 for g in self.groups), reverse=True)
        self.stream_length = 2 * sum(min(p, pairs[1]) for p in pairs)
        self._epochs: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def count(self, epoch: int) -> int:
        n = self.stream_length // self.batch_size
        return n + (not self.drop_last and self.stream_length % self.batch_size >= 4)

    def _stream(self, epoch: int) -> np.ndarray:
        rng = epoch_rng(self.seed, epoch, self.stream)
        queues = [g[rng.permutation(len(g))[:len(g) // 2 * 2]].reshape(-1, 2) for g in self.groups]
        taken = [0] * len(queues)
        remaining = list(range(len(queues)))
        out, last = [], None
        while len(remaining) >= 2:
            remaining = [remaining[i] for i in rng.permutation(len(remaining))]
            if len(out) % (self.batch_size // 2) and remaining[0] == last:   # a batch is open: no label twice in a row
                remaining[0], remaining[1] = remaining[1], remaining[0]
            for g in remaining:
                out.append(queues[g][taken[g]])
                taken[g] += 1
            last = remaining[-1]
            remaining = [g for g in remaining if taken[g] < len(queues[g])]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def rows(self, epoch: int, k: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._epochs:
                if len(self._epochs) >= 2:
                    self._epochs.pop(min(self._epochs))
                self._epochs[epoch] = self._stream(epoch)
            return self._epochs[epoch][k * self.batch_size:(k + 1) * self.batch_size].astype(np.int64)


def dataset_schedule(batch_counts: Sequence[int], sampler: str, seed: int, epoch: int) -> np.ndarray:
    """The dataset index of each step of an epoch of multi-dataset training."""
    if sampler == "round_robin":
        return np.tile(np.arange(len(batch_counts)), min(batch_counts, default=0))
    if sampler == "proportional":
        schedule = np.repeat(np.arange(len(batch_counts)), batch_counts)
        return epoch_rng(seed, epoch, _SCHEDULE_STREAM).permutation(schedule)
    raise ValueError(f"unknown multi-dataset sampler {sampler!r}; choose from {MULTI_DATASET_SAMPLERS}")
