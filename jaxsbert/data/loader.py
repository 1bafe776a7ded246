"""The training input pipeline: source -> order -> tokenize -> pack -> shard -> prefetch.

- source (:mod:`jaxsbert.data.sources`): random access to rows, nothing loaded up front.
- order (:mod:`jaxsbert.data.samplers`): the global rows of batch ``k`` of epoch ``e`` from (seed, epoch).
- tokenize: per batch, in the prefetch thread, only this process's rows. A small in-memory or
  memory-mapped dataset (an Arrow source of at most ``EAGER_ROWS`` rows: STSb, SICK) is instead
  tokenized whole once (distinct texts only), which is quicker for it and gives the whole token set
  (``token_ids``, for compact_vocab) and its exact longest sentence.
- pack (:mod:`jaxsbert.data.packing`, :mod:`jaxsbert.data.pack_shapes`): one row length and a few row
  counts per dataset, from a sample of the first batches; a batch that needs more rows, or holds a
  sentence longer than the rows, gets the dataset's one fallback shape (rows for every sentence, of
  the largest length bucket), so a run compiles at most ``MAX_PROGRAMS`` programs per dataset.
- shard: each process reads and builds only its contiguous slice of each global batch; the shape
  of a batch (its length bucket or packed row count) is the largest any process needs, agreed by
  ``agree`` (an element-wise max over processes) in the consuming thread.
- prefetch: ``prefetch`` batches built ahead in a background thread.

A run resumed at a :class:`Position` yields exactly the batches it had not yet consumed.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import datasets
import numpy as np

from jaxsbert.data import batching
from jaxsbert.data.buckets import bucket_for, length_buckets
from jaxsbert.data.columns import validate_dataset
from jaxsbert.data.pack_shapes import AUTO_MAX_LENGTH, MAX_PROGRAMS, auto_lengths, choose_pack_shape
from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS, rows_needed
from jaxsbert.data.samplers import (BATCH_SAMPLERS, MULTI_DATASET_SAMPLERS, GroupByLabelBatches, NoDuplicateBatches,
                                    PlainBatches, dataset_schedule, stream_id)
from jaxsbert.data.sources import ArrowSource, BadRowError, RowSource
from jaxsbert.data.tokenization import TokenizedDataset, tokenize_dataset

log = logging.getLogger("jaxsbert")

EAGER_ROWS = 32768       # an Arrow source up to this many rows is tokenized whole, once
SHAPE_SAMPLE = 256       # batches per dataset from which the packed shapes and the programs to compile are read
SHAPE_SAMPLE_ROWS = 32768   # ... at most this many rows of them (large batches sample fewer batches)
CHUNK_PARTS = 4            # packed row counts of a cached loss are multiples of 1/CHUNK_PARTS of its chunk
FALLBACK_NEED = 1 << 30     # the need of a batch that fits none of its dataset's packed row counts


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
    skipped: int = 0             # this process's bad rows left out of the batch (on_bad_row="skip")


@dataclasses.dataclass
class _Local:
    """This process's rows of one global batch, tokenized, before its shape is agreed."""
    name: str
    position: Position
    tokens: list                 # [column][row] token ids
    labels: np.ndarray | None
    valid: np.ndarray            # [rows] False for skipped bad rows
    at: np.ndarray               # [rows] each row's place in this process's share of the batch
    rows: np.ndarray | None = None   # the global batch's row indices
    need: int = 0                # packed rows (packed) or length bucket index (padded) this process needs
    error: BaseException | None = None


def local_agree(values: np.ndarray) -> np.ndarray:
    """``agree`` for a single process: its own values."""
    return np.asarray(values)


class DataLoader:
    """Static-shape batches from one dataset or a dict of named datasets.

    Args:
      datasets_: a ``datasets.Dataset`` or :class:`~jaxsbert.data.sources.RowSource` (named ``"train"``),
        or ``{name: one of those}`` (multi-dataset training).
      tokenizer: callable ``list[str] -> list[list[int]]`` with ``pad_token_id`` (and ``max_seq_length``).
      batch_size: the global batch size B (all hosts, all devices).
      batch_sampler: one of ``BATCH_SAMPLERS``, or ``{name: one of those}``.
      multi_dataset_sampler: ``"proportional"`` or ``"round_robin"`` (ignored with one dataset).
      drop_last: drop each dataset's last partial batch instead of padding and masking it.
      seed: with the epoch number, fixes every shuffle.
      max_seq_length: the largest length bucket (default ``tokenizer.max_seq_length``).
      buckets: the length buckets (default ``length_buckets(max_seq_length)``).
      process_index, process_count: build only this process's contiguous rows of each global batch.
      agree: ``values -> element-wise max of values over all processes`` (needed with several
        processes when a dataset is tokenized per batch; called from the consuming thread only).
      prefetch: batches built ahead in a background thread (0: none).
      packing: pack the sentences of each batch into rows (:mod:`jaxsbert.data.packing`); a bool, or
        ``{name: bool}``. Packed rows hold at most ``max_segments`` sentences and, per dataset, one row
        length: with ``pack_length="auto"``, the multiple of ``row_length_step`` from the longest
        sentence up to 128 tokens that :mod:`jaxsbert.data.pack_shapes` estimates cheapest (or the
        longest sentence's length bucket, past 128); with an int, ``max(pack_length, longest sentence's
        bucket)``. A batch gets the fewest rows that hold it out of a few counts per dataset (multiples
        of ``row_multiple``, chosen from the first epoch's first batches against the cost of compiling
        one more program); one that does not fit them gets the fallback shape.
      chunk_rows: ``{name: rows(length)}`` for datasets whose loss embeds packed batches in chunks
        (gradient caching): the global packed rows of ``length`` tokens per chunk; each process's row
        counts are then multiples of its share of a quarter of a chunk too, so a batch splits into chunks
        of a quarter of that to all of it.
      eager_rows: Arrow sources up to this many rows are tokenized whole up front.
      run_steps: the steps the run will take, when fewer than an epoch's (``max_steps``): the packed
        shapes' cost estimate counts those steps only (a short run compiles fewer programs).
      label_checks: ``{name: check(labels)}`` raising ValueError for label values the loss cannot take;
        applied to the rows of datasets read per batch as they are read (a bad one is a bad row).
    """

    def __init__(self, datasets_: Any, tokenizer, batch_size: int, *,
                 batch_sampler: str | Mapping[str, str] = "batch_sampler",
                 multi_dataset_sampler: str = "proportional", drop_last: bool = False, seed: int = 0,
                 max_seq_length: int | None = None, buckets: Sequence[int] | None = None,
                 process_index: int = 0, process_count: int = 1, agree: Callable | None = None,
                 prefetch: int = 0, packing: bool | Mapping[str, bool] = False,
                 pack_length: int | str = "auto", max_segments: int = DEFAULT_MAX_SEGMENTS,
                 row_multiple: int = 1, row_length_step: int = 8, eager_rows: int = EAGER_ROWS,
                 label_checks: Mapping[str, Callable[[np.ndarray], None]] | None = None,
                 run_steps: int | None = None, chunk_rows: Mapping[str, Callable[[int], int]] | None = None):
        single = isinstance(datasets_, (datasets.Dataset, RowSource))
        named = {"train": datasets_} if single else dict(datasets_)
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
        process_slice = batching.process_rows(batch_size, process_index, process_count)
        self.batch_size = batch_size
        self.share = process_slice.stop - process_slice.start
        self.process_index, self.process_count = process_index, process_count
        self.agree = agree or local_agree
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
        self.label_checks = dict(label_checks or {})
        self.truncated: dict[str, dict[str, int]] = {}    # datasets read per batch: texts cut, by column
        self.run_steps = run_steps

        self.names = tuple(named)
        self.sources: dict[str, RowSource] = {}
        self.data: dict[str, TokenizedDataset] = {}      # the datasets tokenized whole (small Arrow sources)
        self.orders: dict[str, Any] = {}
        for name, ds in named.items():
            source = ArrowSource(ds) if isinstance(ds, datasets.Dataset) else ds
            if isinstance(source, ArrowSource):
                validate_dataset(source.dataset, name=name)
            self.sources[name] = source
            if drop_last and len(source) < batch_size:
                raise ValueError(f"dataset {name!r} ({source.where}) has {len(source)} rows, fewer than the batch "
                                 f"size {batch_size}: with drop_last=True it gives no batch at all; lower "
                                 "batch_size or set drop_last=False")
            if isinstance(source, ArrowSource) and len(source) <= eager_rows:
                self.data[name] = tokenize_dataset(source.dataset, tokenizer)
                _log_truncated(name, source, self.data[name], tokenizer)
            self.orders[name] = self._order(name, source, samplers[name])
        if process_count > 1 and agree is None and len(self.data) < len(self.names):
            raise ValueError("a loader of several processes whose datasets are tokenized per batch needs 'agree' "
                             "(the element-wise max of values over processes)")
        self._schedules: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._schedule_lock = threading.Lock()
        if self.steps_per_epoch(0) == 0:
            sizes = {n: len(s) for n, s in self.sources.items()}
            raise ValueError(f"an epoch has no batches (dataset sizes {sizes}, batch_size {batch_size}, "
                             f"drop_last={drop_last})")
        packed = dict(packing) if isinstance(packing, Mapping) else {n: bool(packing) for n in named}
        if pack_length != "auto" and (isinstance(pack_length, bool) or not isinstance(pack_length, int)
                                      or pack_length < 1):
            raise ValueError(f"pack_length must be 'auto' or a positive number of tokens, got {pack_length!r}")
        self.max_segments = int(max_segments)
        self.row_multiple = max(int(row_multiple), 1)
        self.chunk_rows = dict(chunk_rows or {})
        self.pack_shapes: dict[str, tuple[int, int]] = {}    # name -> (most rows per process, row length)
        self.pack_rows: dict[str, tuple[int, ...]] = {}      # name -> the row counts of its batches
        self._sample: dict[Position, _Local] = {}            # tokenized sample batches, used once
        self._sample_needs: dict[str, list[tuple[Position, int]]] = {}
        for name in self.names:
            self._choose_shapes(name, bool(packed.get(name)), pack_length, max(int(row_length_step), 1))
            counts = self.truncated.get(name)
            if counts:
                log.warning("dataset %r (%s): %d text(s) longer than max_seq_length=%s tokens were truncated "
                            "(by column: %s) in the %d rows read up front; later ones are counted in the run's "
                            "summary", name, self.sources[name].where, sum(counts.values()),
                            getattr(tokenizer, "max_seq_length", None), counts, self.sources[name].rows_read)

    # ------------------------------------------------------------------ order

    def _order(self, name: str, source: RowSource, sampler: str):
        stream = stream_id(name)
        if sampler == "no_duplicates":
            return NoDuplicateBatches(len(source), self.batch_size, self.seed, lambda rows: source.read(rows).texts,
                                      drop_last=self.drop_last, stream=stream)
        if sampler == "group_by_label":
            labels = self.data[name].labels if name in self.data else source.all_labels()
            if labels is None:
                raise ValueError(f"dataset {name!r} ({source.where}): batch_sampler 'group_by_label' needs a "
                                 "label column")
            if np.ndim(labels) > 1:
                raise ValueError(f"dataset {name!r} ({source.where}): batch_sampler 'group_by_label' needs one class "
                                 f"label per row; this dataset's labels are lists (shape {labels.shape[1:]} per row)")
            return GroupByLabelBatches(labels, self.batch_size, self.seed, drop_last=self.drop_last, stream=stream)
        return PlainBatches(len(source), self.batch_size, self.seed, drop_last=self.drop_last, stream=stream)

    def _schedule(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset index, batch index within that dataset) of every step of ``epoch``."""
        with self._schedule_lock:
            if epoch not in self._schedules:
                counts = [self.orders[n].count(epoch) for n in self.names]
                if len(self.names) == 1:
                    which = np.zeros(counts[0], np.int64)
                else:
                    which = dataset_schedule(counts, self.multi_dataset_sampler, self.seed, epoch)
                within = np.zeros(len(which), np.int64)
                for d in range(len(self.names)):
                    at = np.flatnonzero(which == d)
                    within[at] = np.arange(len(at))
                if len(self._schedules) >= 2:
                    self._schedules.pop(min(self._schedules))
                self._schedules[epoch] = (which, within)
            return self._schedules[epoch]

    def rows_at(self, position: Position | tuple | Mapping) -> tuple[str, np.ndarray]:
        """(dataset name, global row indices) of the batch at ``position``."""
        pos = self.normalize(Position.of(position))
        which, within = self._schedule(pos.epoch)
        name = self.names[int(which[pos.index])]
        return name, self.orders[name].rows(pos.epoch, int(within[pos.index]))

    def plan(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        """(dataset name, global row indices) of every step of ``epoch`` (reads the whole epoch's order:
        for tests and small datasets)."""
        return [self.rows_at(Position(epoch, i)) for i in range(self.steps_per_epoch(epoch))]

    def steps_per_epoch(self, epoch: int = 0) -> int:
        """Number of batches in ``epoch``."""
        return len(self._schedule(epoch)[0])

    def total_steps(self, epochs: int) -> int:
        return sum(self.steps_per_epoch(e) for e in range(epochs))

    def token_ids(self) -> np.ndarray | None:
        """Every token id that this loader's batches can hold (its datasets' tokens and padding), ascending;
        None when a dataset is tokenized per batch (its tokens are not known before it is read)."""
        if len(self.data) < len(self.names):
            return None
        parts = [col.unique.values for d in self.data.values() for col in d.inputs]
        return np.unique(np.concatenate(parts + [np.asarray([self.pad_token_id], np.int32)]))

    def rows_read(self) -> dict[str, int]:
        """Rows each dataset's source has parsed in this process so far (the whole dataset for those
        tokenized up front)."""
        return {n: (len(s) if n in self.data else s.rows_read) for n, s in self.sources.items()}

    def bad_rows(self) -> int:
        """Bad rows skipped so far in this process (``on_bad_row="skip"``)."""
        return sum(s.bad_rows for s in self.sources.values())

    # ------------------------------------------------------------------ tokenize, and shapes

    def _tokens(self, name: str, rows: np.ndarray) -> tuple[list, np.ndarray | None, np.ndarray]:
        """[column][row] token ids, labels and validity of ``rows`` (global row indices)."""
        if name in self.data:
            data = self.data[name]
            return (batching.dataset_tokens(data, rows), data.labels[rows] if data.labels is not None else None,
                    np.ones(len(rows), bool))
        source = self.sources[name]
        read = source.read(rows)
        valid = np.ones(len(rows), bool)
        valid[read.skipped] = False
        check = self.label_checks.get(name)
        if check is not None and read.labels is not None:
            try:
                check(read.labels[valid])
            except ValueError:
                self._bad_label(name, rows, read.labels, valid, check)
        texts = [t for column in read.texts for t in column]
        # int32 arrays, not the tokenizer's lists of Python ints: ~3.5x less memory for the batches kept
        # (65,536 pairs: ~80 MiB as lists)
        ids = [np.asarray(t, np.int32) for t in self.tokenizer(texts)] if texts else []
        n = len(rows)
        tokens = [ids[c * n:(c + 1) * n] for c in range(len(read.texts))]
        limit = getattr(self.tokenizer, "max_seq_length", None)
        if limit is not None and hasattr(self.tokenizer, "token_counts"):
            counts = self.truncated.setdefault(name, {})
            for c, (column, column_texts) in enumerate(zip(tokens, read.texts)):
                at_limit = [i for i, t in enumerate(column) if len(t) >= limit and valid[i]]
                if at_limit:
                    full = self.tokenizer.token_counts([column_texts[i] for i in at_limit])
                    cut = sum(f > limit for f in full)
                    if cut:
                        name_c = source.columns.inputs[c]
                        counts[name_c] = counts.get(name_c, 0) + cut
        return tokens, read.labels, valid

    def _bad_label(self, name: str, rows: np.ndarray, labels: np.ndarray, valid: np.ndarray, check) -> None:
        """Finds the rows whose label ``check`` rejects: a BadRowError for the first, or (on_bad_row="skip")
        each left out of the batch (``valid`` False) and counted."""
        source = self.sources[name]
        for k in np.flatnonzero(valid):
            try:
                check(labels[k:k + 1])
            except ValueError as e:
                row = int(rows[k])
                where = source.where_row(row) if hasattr(source, "where_row") else source.where
                message = str(e).replace("at row 0:", f"at row {row}:")
                if source.on_bad_row == "error":
                    raise BadRowError(f"{where}: label column {source.columns.label!r} (row {row}): {message}") from None
                valid[k] = False
                source.bad_rows += 1

    def _raise_sample_errors(self, locals_: Sequence[_Local]) -> None:
        """A bad row among the rows read up front is an error before anything compiles, on every process."""
        error = next((l.error for l in locals_ if l.error is not None), None)
        if int(self.agree(np.asarray([error is not None], np.int64))[0]) and error is None:
            raise BadRowError("another process found a bad row among the first batches (its log names the file "
                              "and line)")
        if error is not None:
            raise error

    def _read(self, position: Position) -> _Local:
        """This process's rows of the batch at ``position``, tokenized (their need not yet set)."""
        try:
            name, rows = self.rows_at(position)
            which, at = batching.local_rows(len(rows), self.batch_size, self.process_index, self.process_count)
            tokens, labels, valid = self._tokens(name, rows[which])
            return _Local(name, position, tokens, labels, valid, at, rows)
        except BadRowError as e:
            return _Local("", position, [], None, np.zeros(0, bool), np.zeros(0, np.int64), error=e)

    def _sized(self, local: _Local) -> _Local:
        """``local`` with the shape it needs: of the global batch (the largest process share) for a
        dataset tokenized whole, which every process knows, else of this process's share."""
        if local.error is None:
            shares = (self._shares(batching.dataset_tokens(self.data[local.name], local.rows))
                      if local.name in self.data else [local.tokens])
            local.need = self._need(local.name, shares)
        return local

    def _local(self, position: Position) -> _Local:
        """This process's rows of the batch at ``position``, tokenized, with the shape it needs."""
        if position in self._sample:
            return self._sample.pop(position)
        return self._sized(self._read(position))

    def _shares(self, tokens: list) -> list[list]:
        """The global batch's ``[column][row]`` tokens split into the processes' shares."""
        n = len(tokens[0]) if tokens else 0
        picks = [batching.local_rows(n, self.batch_size, p, self.process_count)[0] for p in range(self.process_count)]
        return [[[column[i] for i in pick] for column in tokens] for pick in picks]

    def _need(self, name: str, shares: list[list]) -> int:
        """Packed rows (packed datasets) or the length-bucket index (padded ones) that the largest of
        ``shares`` (``[column][row]`` tokens) needs."""
        if name not in self.pack_shapes:
            return max(self.buckets.index(bucket_for(batching.longest(s), self.buckets)) for s in shares)
        return self._rows_for(shares, self.pack_shapes[name][1])

    def _rows_for(self, shares: list[list], length: int) -> int:
        """Packed rows of ``length`` tokens that the largest of ``shares`` needs; a sentence longer than
        ``length`` needs the fallback shape (``FALLBACK_NEED``, past every row count)."""
        need = 0
        for share in shares:
            lengths = [len(t) for t in batching.row_major(share)]
            if lengths and max(lengths) > length:
                return FALLBACK_NEED
            need = max(need, rows_needed(lengths, length, self.max_segments) if lengths else 0)
        return need

    def _choose_shapes(self, name: str, packed: bool, pack_length, row_length_step: int) -> None:
        """The packed row length and row counts of dataset ``name`` (see the class docstring), from the
        first epoch's first batches (the whole dataset's longest sentence when it is tokenized whole)."""
        which, within = self._schedule(0)
        at = np.flatnonzero(which == self.names.index(name))
        sample = at[:max(1, min(SHAPE_SAMPLE, SHAPE_SAMPLE_ROWS // self.batch_size))]
        positions = [Position(0, int(i)) for i in sample]
        if not packed:
            if name not in self.data:         # the sample's tokens are kept for the first steps
                for pos in positions:
                    self._sample[pos] = self._local(pos)
                self._raise_sample_errors([self._sample[p] for p in positions])
            return
        if name in self.data:
            shares = [self._shares(batching.dataset_tokens(self.data[name], self.rows_at(p)[1])) for p in positions]
            longest = max(int(c.lengths.max()) for c in self.data[name].inputs)
            local = None
        else:
            local = [self._read(p) for p in positions]
            self._raise_sample_errors(local)
            longest = int(self.agree(np.asarray([max((batching.longest(l.tokens) for l in local), default=1)]))[0])
        if pack_length == "auto" and longest <= AUTO_MAX_LENGTH:
            lengths = auto_lengths(longest, row_length_step)
        else:
            fixed = AUTO_MAX_LENGTH if pack_length == "auto" else pack_length
            lengths = [max(fixed, bucket_for(longest, self.buckets))]

        def needs(length: int) -> list[int]:
            if local is None:
                return [self._rows_for(s, length) for s in shares]
            return self.agree(np.asarray([self._rows_for([l.tokens], length) for l in local], np.int64)).tolist()

        epoch_steps = steps = int((which == self.names.index(name)).sum())
        if self.run_steps:          # the run's share of this dataset's steps, if the run is shorter than an epoch
            steps = min(steps, max(1, round(self.run_steps * steps / len(which))))
        # a dataset tokenized per batch keeps one program for the batches that do not fit the sample's
        # counts; one tokenized whole has its first epoch's shapes from the sample as before
        programs = MAX_PROGRAMS if local is None or len(sample) == epoch_steps else MAX_PROGRAMS - 1
        length, counts = choose_pack_shape(lengths, needs, steps, lambda n: self._row_multiple(name, n), programs)
        self.pack_rows[name] = counts
        self.pack_shapes[name] = (counts[-1], length)
        for l in local or ():
            self._sample[l.position] = self._sized(l)

    def _row_multiple(self, name: str, length: int) -> int:
        """What the packed row counts of dataset ``name`` at ``length`` tokens are multiples of: ``row_multiple``
        (the local devices), and this process's share of a quarter of a gradient-caching chunk (so a batch's
        rows split into chunks of a quarter of the budget to the whole budget: the loss takes the largest
        divisor of the rows within it)."""
        if name not in self.chunk_rows:
            return self.row_multiple
        share = max(1, int(self.chunk_rows[name](length)) // (CHUNK_PARTS * self.process_count))
        return int(np.lcm(self.row_multiple, share))

    def _packed_rows(self, name: str, need: int) -> tuple[int, int]:
        """(rows, row length) of a packed batch that needs ``need`` rows: the smallest of the dataset's
        row counts that holds it, else the fallback: a row of the largest length bucket per sentence."""
        fits = [r for r in self.pack_rows[name] if r >= need]
        if fits:
            return fits[0], self.pack_shapes[name][1]
        rows, multiple = self.share * len(self.sources[name].columns.inputs), self._row_multiple(name, self.buckets[-1])
        return -(-rows // multiple) * multiple, self.buckets[-1]

    def _build(self, local: _Local, need: int) -> dict:
        """The batch arrays of ``local`` at the agreed ``need``."""
        name = local.name
        if name in self.pack_shapes:
            rows, length = self._packed_rows(name, need)
            features = batching.pack_rows(local.tokens, local.at, self.share, rows, length, self.max_segments,
                                          self.pad_token_id, process_index=self.process_index)
        else:
            features = batching.padded_rows(local.tokens, local.at, self.buckets[need], self.share, self.pad_token_id)
        return batching.with_labels_and_mask(features, local.labels, local.valid, local.at, self.share,
                                             self.sources[name].label_dtype)

    def shape_positions(self, epoch: int = 0, sample: int = SHAPE_SAMPLE) -> list[Position]:
        """One position per distinct batch shape among each dataset's first batches of ``epoch`` (those
        the shapes were chosen from): the programs a run needs, to compile them before the first step.
        Every process returns the same positions."""
        first: dict[tuple, Position] = {}
        which, _ = self._schedule(epoch)
        for d, name in enumerate(self.names):
            at = np.flatnonzero(which == d)[:max(1, min(sample, SHAPE_SAMPLE_ROWS // self.batch_size))]
            positions = [Position(epoch, int(i)) for i in at]
            needs = self.agree(np.asarray([self._peek(p).need for p in positions], np.int64))
            for pos, need in zip(positions, needs.tolist()):
                shape = self._packed_rows(name, need) if name in self.pack_shapes else need
                first.setdefault((name, shape), pos)
        return sorted(first.values())

    def _peek(self, position: Position) -> _Local:
        """The local batch at ``position`` without consuming a kept sample batch."""
        if position in self._sample:
            return self._sample[position]
        return self._local(position)

    def batch_at(self, position: Position | tuple | Mapping) -> LoaderBatch:
        """The batch at ``position`` (this process's slice), its shape agreed with the other processes
        (every process must call it for the same positions in the same order)."""
        return self.finish(self._peek(self.normalize(Position.of(position))))

    def finish(self, local: _Local) -> LoaderBatch:
        """Agrees the shape of a local batch with the other processes and builds its arrays; a bad row
        (on_bad_row="error") on any process raises on every process."""
        need, failed = self.agree(np.asarray([local.need, local.error is not None], np.int64)).tolist()
        if local.error is not None:
            raise local.error
        if failed:
            raise BadRowError("another process found a bad row in this batch (its log names the file and line)")
        batch = self._build(local, need)
        pos = local.position
        return LoaderBatch(local.name, batch, pos, self.normalize(Position(pos.epoch, pos.index + 1)),
                           skipped=int((~local.valid).sum()))

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

    def iterate(self, start: Position | tuple | Mapping | None = None, epochs: int | None = None,
                limit: int | None = None) -> "BatchIterator":
        """Batches from ``start`` (default the beginning) until the end of epoch ``epochs - 1`` (None: forever),
        and at most ``limit`` of them (the prefetch thread reads no row past them)."""
        return BatchIterator(self, Position.of(start), epochs, limit)

    def __iter__(self) -> Iterator[LoaderBatch]:
        return self.iterate(epochs=1)


def _log_truncated(name: str, source: ArrowSource, data: TokenizedDataset, tokenizer) -> None:
    counts = {c: col.truncated for c, col in zip(source.columns.inputs, data.inputs) if col.truncated}
    if counts:
        log.warning("dataset %r (%s): %d text(s) longer than max_seq_length=%s tokens were truncated (by column: %s)",
                    name, source.where, sum(counts.values()), getattr(tokenizer, "max_seq_length", None), counts)


class BatchIterator:
    """Iterator of :class:`LoaderBatch`; ``position`` is where a checkpoint taken now should resume.
    The prefetch thread reads, tokenizes and sizes this process's rows; the consuming thread agrees the
    shape with the other processes and builds the arrays."""

    def __init__(self, loader: DataLoader, start: Position, epochs: int | None, limit: int | None = None):
        self.loader = loader
        self.epochs = epochs
        self.position = loader.normalize(start)
        self.limit = limit
        self._yielded = 0
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
            made = 0
            while not self._finished(pos) and not self._stop.is_set() and (self.limit is None or made < self.limit):
                self._put(self.loader._local(pos))
                made += 1
                pos = self.loader.normalize(Position(pos.epoch, pos.index + 1))
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
        if self._finished(self.position) or (self.limit is not None and self._yielded >= self.limit):
            self.close()
            raise StopIteration
        if self._queue is None:
            local = self.loader._local(self.position)
        else:
            local = self._queue.get()
            if isinstance(local, BaseException):
                self.close()
                raise local
        try:
            item = self.loader.finish(local)
        except BaseException:
            self.close()
            raise
        self.position = item.next_position
        self._yielded += 1
        return item

    def close(self) -> None:
        """Stops the prefetch thread (if any)."""
        self._stop.set()

    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
