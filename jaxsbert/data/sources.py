"""The source stage: random access to the rows of a training dataset without loading it.

A :class:`RowSource` has a length, its :class:`~jaxsbert.data.columns.Columns` and ``read(rows)``,
which parses just those rows. Two kinds:

- :class:`ArrowSource`: a Hugging Face ``datasets.Dataset``, memory-mapped Arrow (named datasets,
  parquet and arrow files through ``datasets``' cache, hub datasets, in-memory datasets). Checked
  whole up front: columnar checks of an Arrow table are cheap.
- :class:`LineSource`: local ``.jsonl`` / ``.csv`` / ``.tsv`` files, one or many (globs, lists). Each
  file gets an index of where its lines start (one numpy pass over the file, ~1 GB/s, cached on
  disk in ``~/.cache/jaxsbert/line-index``), so reading row ``i`` reads and parses one line. Rows are checked when they
  are read: a bad one is a :class:`BadRowError` naming the file, line and column, or, with
  ``on_bad_row="skip"``, a row the batch leaves out (masked) and counts.

Memory: an ArrowSource holds nothing beyond the memory map; a LineSource holds 8 bytes per row for
its line index (memory-mapped from the cache file). Opening a source reads no row.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import io
import json
import os
import pathlib
import threading
from typing import Any, Mapping, Sequence

import datasets
import numpy as np

from jaxsbert.data.columns import (LABEL_COLUMNS, MAX_LABEL_RANK, Columns, label_array, label_dtype, label_shape,
                                   split_columns)

LINE_FORMATS = (".jsonl", ".csv", ".tsv")
ON_BAD_ROW = ("error", "skip")


class BadRowError(ValueError):
    """A row that cannot be trained on; the message names the file, line and column."""


@dataclasses.dataclass
class Rows:
    """What ``read`` returns: the texts of each input column and the labels of the rows read, in the
    order asked, and the positions (into the rows asked) of rows that were bad and skipped."""
    texts: list[list[str]]           # [column][row]
    labels: np.ndarray | None        # [rows, *label_shape]
    skipped: list[int]


class RowSource:
    """Random access to a dataset's rows: see the module docstring."""
    columns: Columns
    label_dtype: np.dtype
    label_shape: tuple[int, ...] = ()   # one row's label: () a number, (D,) a list of D numbers, (C, D)
    where: str                      # the file(s) or dataset, for messages

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, rows: np.ndarray) -> Rows:
        raise NotImplementedError

    @property
    def rows_read(self) -> int:
        return self._rows_read

    _rows_read = 0
    on_bad_row = "error"
    bad_rows = 0

    def _count(self, n: int) -> None:
        with _COUNT_LOCK:
            self._rows_read += n


_COUNT_LOCK = threading.Lock()


def _bad_text(value: Any) -> str | None:
    """Why ``value`` is not a trainable input text, or None when it is."""
    if value is None:
        return "None, expected a string"
    if not isinstance(value, str):
        return f"{value!r:.60} ({type(value).__name__}), expected a string"
    if not value.strip():
        return "an empty text"
    return None


# --------------------------------------------------------------------------- Arrow

class ArrowSource(RowSource):
    """A ``datasets.Dataset`` (memory-mapped or in memory), checked whole with
    :func:`~jaxsbert.data.columns.validate_dataset` by the caller; rows read by Arrow ``take``."""

    def __init__(self, dataset: datasets.Dataset, where: str | None = None):
        from jaxsbert.data.loading import dataset_source

        self.dataset = dataset
        self.columns = split_columns(dataset)
        self.label_dtype = label_dtype(dataset, self.columns.label)
        self.where = where or dataset_source(dataset)
        self.label_shape = label_shape(dataset, self.columns.label)
        self._arrow = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, rows: np.ndarray) -> Rows:
        rows = np.asarray(rows, dtype=np.int64)
        table = self._arrow[rows] if len(rows) else self._arrow[:0]
        texts = [table[c].to_pylist() for c in self.columns.inputs]
        labels = None
        if self.columns.label is not None:
            labels = label_array(table[self.columns.label], self.label_shape, self.label_dtype)
        self._count(len(rows))
        return Rows(texts, labels, [])

    def all_labels(self) -> np.ndarray | None:
        if self.columns.label is None:
            return None
        return label_array(self._arrow[self.columns.label], self.label_shape, self.label_dtype)


# --------------------------------------------------------------------------- line files

def _index_cache_dir() -> pathlib.Path:
    root = os.environ.get("JAXSBERT_INDEX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxsbert",
                                                                    "line-index")
    return pathlib.Path(root)


def line_starts(path: str, chunk: int = 1 << 26) -> np.ndarray:
    """Byte offsets where the non-blank lines of ``path`` start, and the file's size (int64 [lines + 1]):
    line ``i`` is ``[starts[i], starts[i + 1])`` (blank lines stay at the end of the line before them).

    One pass over the file in 64 MiB chunks (~1 GB/s, host memory bounded by the chunk and the index,
    8 bytes a line); the result is cached in ``~/.cache/jaxsbert/line-index`` (``$JAXSBERT_INDEX_CACHE``)
    under the file's path, size and modification time, and memory-mapped from there on later runs."""
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    cache = _index_cache_dir() / f"{key}.npy"
    try:
        return np.load(cache, mmap_mode="r")
    except (OSError, ValueError):
        pass
    parts, blanks = [np.zeros(1, np.int64)], []
    buffer = bytearray(chunk)
    prev = -1           # offset of the last newline seen
    offset = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            data = np.frombuffer(buffer, np.uint8, count=n)
            newlines = np.flatnonzero(data == 10).astype(np.int64) + offset
            if len(newlines):
                gaps = np.diff(np.concatenate([[prev], newlines]))     # line length incl. its newline
                blank = gaps == 1
                two = np.flatnonzero(gaps == 2)
                if len(two):                                          # "\r\n" alone
                    local = newlines[two] - 1 - offset
                    ok = local >= 0
                    cr = np.zeros(len(two), bool)
                    cr[ok] = data[local[ok]] == 13
                    blank[two[cr]] = True
                blanks.append(blank)
                parts.append(newlines + 1)
                prev = int(newlines[-1])
            offset += n
    starts = np.concatenate(parts)
    blank = np.concatenate(blanks) if blanks else np.zeros(0, bool)
    if starts[-1] != st.st_size:                 # a last line without a newline
        starts = np.append(starts, st.st_size)
        blank = np.append(blank, False)
    index = np.append(starts[:-1][~blank], st.st_size).astype(np.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{key}.{os.getpid()}.tmp.npy")
        np.save(tmp, index)
        os.replace(tmp, cache)
    except OSError:
        pass
    return index


def expand_files(source: str | Sequence[str]) -> list[str]:
    """A path, a glob pattern or a list of them -> the files, sorted within each pattern, in order."""
    patterns = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        if any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern))
            if not found:
                raise FileNotFoundError(f"dataset file pattern {pattern!r} matches no file")
            files.extend(found)
        elif os.path.isfile(pattern):
            files.append(pattern)
        else:
            raise FileNotFoundError(f"dataset file {pattern!r} not found")
    return files


class _LineFile:
    """One file of a LineSource: its line index and format; lines are read with ``pread`` (no memory
    map, so a long run's reads do not accumulate in the process's resident memory)."""

    def __init__(self, path: str):
        self.path = path
        self.ext = os.path.splitext(path)[1].lower()
        if self.ext not in LINE_FORMATS:
            raise ValueError(f"{path}: a line-indexed file must be one of {LINE_FORMATS}")
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: the dataset file is empty")
        self.starts = line_starts(path)
        self._fd = os.open(path, os.O_RDONLY)
        self.header: list[str] | None = None
        self.first = 0                       # index of the first data line (1 after a csv/tsv header)
        if self.ext != ".jsonl":
            if len(self.starts) < 2:
                raise ValueError(f"{path}: the dataset file has no header")
            self.header = self._split(self._line(0))
            if len(set(self.header)) != len(self.header):
                raise ValueError(f"{path}:1: the header repeats a column name: {self.header}")
            self.first = 1

    def __len__(self) -> int:
        return len(self.starts) - 1 - self.first

    def _line(self, j: int) -> bytes:
        start, end = int(self.starts[j]), int(self.starts[j + 1])
        return os.pread(self._fd, end - start, start)

    def line_number(self, i: int) -> int:
        """The 1-based line number in the file of row ``i`` (counts the newlines before it: for messages)."""
        offset, count, pos = int(self.starts[i + self.first]), 0, 0
        while pos < offset:
            block = os.pread(self._fd, min(1 << 24, offset - pos), pos)
            count += block.count(b"\n")
            pos += len(block)
        return count + 1

    def _split(self, raw: bytes) -> list[str]:
        text = raw.decode("utf8").rstrip("\r\n")
        if self.ext == ".tsv":
            return text.split("\t")
        return next(csv.reader(io.StringIO(text)))

    def parse(self, i: int) -> dict:
        """Row ``i`` as a dict; ValueError (without a location) when the line does not parse."""
        raw = self._line(i + self.first)
        if self.ext == ".jsonl":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"not valid JSON ({e.msg}: column {e.colno})") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"not valid JSON ({e})") from None
            if not isinstance(value, dict):
                raise ValueError(f"a JSON {type(value).__name__}, expected an object with the columns as keys")
            return value
        try:
            fields = self._split(raw)
        except (UnicodeDecodeError, csv.Error, StopIteration) as e:
            raise ValueError(f"cannot be parsed ({e})") from None
        if len(fields) != len(self.header):
            raise ValueError(f"expected {len(self.header)} fields (as the header {self.header}), got {len(fields)}")
        return dict(zip(self.header, fields))


class LineSource(RowSource):
    """Rows of one or more ``.jsonl`` / ``.csv`` / ``.tsv`` files, in file order.

    Columns come from the first file's first row (jsonl: its keys, in order; csv/tsv: the header),
    after ``rename`` and ``columns`` (which keeps and orders columns), as in
    :func:`~jaxsbert.data.loading.load_dataset`. Every row must have them; labels must be numbers, or (jsonl)
    lists of numbers of the first row's shape (:func:`vector_label`)."""

    def __init__(self, files: Sequence[str], *, rename: Mapping[str, str] | None = None,
                 columns: Sequence[str] | None = None, limit: int | None = None, on_bad_row: str = "error"):
        if on_bad_row not in ON_BAD_ROW:
            raise ValueError(f"data.on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
        self.files = [_LineFile(f) for f in files]
        self.on_bad_row = on_bad_row
        self.bad_rows = 0
        self._lock = threading.Lock()
        counts = np.asarray([len(f) for f in self.files], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._length = int(self._starts[-1]) if limit is None else min(int(limit), int(self._starts[-1]))
        self.where = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more file(s)"
        if self._starts[-1] == 0:
            raise ValueError(f"{self.where}: the dataset file has no rows")
        first = self.files[0]
        try:
            names = list(first.parse(0)) if first.header is None else list(first.header)
        except ValueError as e:
            raise BadRowError(f"{first.path}:{first.line_number(0)}: {e}") from None
        except IndexError:
            raise ValueError(f"{first.path}: the dataset file has no rows") from None
        self.rename = dict(rename or {})
        missing = [c for c in self.rename if c not in names]
        if missing:
            raise ValueError(f"{self.where}: cannot rename missing column(s) {missing}; columns: {names}")
        renamed = [self.rename.get(c, c) for c in names]
        if columns is not None:
            missing = [c for c in columns if c not in renamed]
            if missing:
                raise ValueError(f"{self.where}: missing column(s) {missing}; the dataset has columns {renamed}")
            renamed = list(columns)
        self.columns = split_columns(renamed)
        labels = [c for c in renamed if c in LABEL_COLUMNS]
        self._raw = {new: old for old, new in ((c, self.rename.get(c, c)) for c in names)}
        # the label's dtype: float for a score; for a label, int (class ids) when the first row's is an integer;
        # its shape: the first row's, when that is a list of numbers (a teacher embedding, teacher scores)
        self.label_dtype = np.dtype(np.float32)
        self.label_shape = ()
        if labels:
            value = first.parse(0).get(self._raw[labels[0]])
            if isinstance(value, list):
                self.label_shape = _first_shape(value)
                try:
                    vector_label(value, self.label_shape)
                except ValueError as e:
                    raise BadRowError(f"{first.path}:{first.line_number(0)}: label column {labels[0]!r} (row 0): "
                                      f"{e}") from None
            elif isinstance(value, str) and value.lstrip().startswith("[") and first.header is not None:
                raise ValueError(f"{first.path}: label column {labels[0]!r} holds lists ({value:.40}...): a "
                                 f"{first.ext} file takes one number per row; write labels that are lists "
                                 "(teacher embeddings or scores) to a .jsonl or .parquet file")
            elif labels[0] in ("label", "labels"):
                if isinstance(value, str):
                    value = int(value) if value.strip().lstrip("-").isdigit() else value
                if isinstance(value, (bool, int)):
                    self.label_dtype = np.dtype(np.int32)

    def __len__(self) -> int:
        return self._length

    def locate(self, row: int) -> tuple[_LineFile, int]:
        f = int(np.searchsorted(self._starts, row, side="right") - 1)
        return self.files[f], int(row - self._starts[f])

    def where_row(self, row: int) -> str:
        file, i = self.locate(row)
        return f"{file.path}:{file.line_number(i)}"

    def _row(self, row: int) -> tuple[list[str], Any]:
        file, i = self.locate(row)
        try:
            record = file.parse(i)
        except ValueError as e:
            raise BadRowError(f"{self.where_row(row)}: {e}") from None
        texts = []
        for c in self.columns.inputs:
            value = record.get(self._raw[c], _MISSING)
            if value is _MISSING:
                raise BadRowError(f"{self.where_row(row)}: column {c!r} (row {row}) is missing (the row has "
                                  f"{sorted(record)})")
            why = _bad_text(value)
            if why:
                raise BadRowError(f"{self.where_row(row)}: column {c!r} (row {row}): {why}")
            texts.append(value)
        label = None
        if self.columns.label is not None:
            c = self.columns.label
            value = record.get(self._raw[c], _MISSING)
            try:
                if value is _MISSING:
                    raise ValueError("is missing")
                if self.label_shape:
                    return texts, vector_label(value, self.label_shape)
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise ValueError("None, expected a number")
                label = float(value)
                if not np.isfinite(label):
                    raise ValueError(f"{value!r} is not a finite number")
                if self.label_dtype.kind == "i" and label != int(label):
                    raise ValueError(f"{value!r} is not a class id (an integer), as the first row's label is")
            except (TypeError, ValueError) as e:
                msg = str(e) if value is _MISSING or value is None or "finite" in str(e) or "class id" in str(e) \
                    or "None" in str(e) or self.label_shape else f"{value!r:.40} is not a number"
                raise BadRowError(f"{self.where_row(row)}: label column {c!r} (row {row}){'' if msg.startswith('is') else ':'} "
                                  f"{msg}") from None
        return texts, label

    def read(self, rows: np.ndarray) -> Rows:
        texts: list[list[str]] = [[] for _ in self.columns.inputs]
        labels, skipped = [], []
        for k, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            try:
                row_texts, label = self._row(row)
            except BadRowError:
                if self.on_bad_row == "error":
                    raise
                with self._lock:
                    self.bad_rows += 1
                skipped.append(k)
                row_texts, label = [""] * len(self.columns.inputs), np.zeros(self.label_shape)
            for col, t in zip(texts, row_texts):
                col.append(t)
            labels.append(label)
        self._count(len(rows))
        lab = None
        if self.columns.label:
            lab = np.asarray(labels, dtype=np.float64).reshape(len(labels), *self.label_shape).astype(self.label_dtype)
        return Rows(texts, lab, skipped)

    def all_labels(self) -> np.ndarray | None:
        if self.columns.label is None:
            return None
        return self.read(np.arange(len(self))).labels


_MISSING = object()


def _first_shape(value: Any) -> tuple[int, ...]:
    """The shape of a nested list read along its first elements ([[1, 2], [3]] -> (2, 2))."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def vector_label(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A label that is a (nested) list of numbers of ``shape`` (as the first row's) -> float64 array;
    ValueError saying what is wrong (not a list, another length, not a number, NaN). Infinities pass: the
    loss decides (DistillKLDivLoss takes -inf for a left-out candidate)."""
    if len(shape) > MAX_LABEL_RANK:
        raise ValueError(f"lists nested {len(shape)} deep; a label is a number, a list of numbers or a list of lists")
    if 0 in shape:
        raise ValueError("an empty list, expected numbers")
    try:
        array = np.array(value, dtype=None if isinstance(value, list) else object)
    except (TypeError, ValueError):        # ragged nested lists
        array = np.array(None, dtype=object)
    if array.shape == tuple(shape) and array.dtype.kind in "iuf":
        if array.dtype.kind == "f" and np.isnan(array).any():
            at = np.argwhere(np.isnan(array))[0].tolist()
            raise ValueError(f"NaN at position {at}, expected a number")
        return array.astype(np.float64)

    def walk(v, depth, at):                 # the first thing wrong, for the message
        if depth == len(shape):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{v!r:.30} ({type(v).__name__}) at position {at}, expected a number")
            return
        if not isinstance(v, list):
            raise ValueError(f"{v!r:.30} ({type(v).__name__}){f' at position {at}' if at else ''}, expected a list of "
                             f"{shape[depth]} numbers (as the first row's label)")
        if len(v) != shape[depth]:
            raise ValueError(f"a list of {len(v)} values{f' at position {at}' if at else ''}, expected {shape[depth]} "
                             "(as the first row's label): every row's label must have the same length")
        for i, x in enumerate(v):
            walk(x, depth + 1, at + [i])

    walk(value, 0, [])
    raise ValueError(f"{value!r:.40} is not a list of numbers of shape {tuple(shape)}")


def is_line_source(source: Any) -> bool:
    """True when ``source`` (a spec's ``source``) names local jsonl/csv/tsv files (a path, glob or list)."""
    paths = [source] if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(paths, (list, tuple)) or not paths:
        return False
    return all(isinstance(p, (str, os.PathLike)) and os.path.splitext(str(p))[1].lower() in LINE_FORMATS
               for p in paths)


def open_source(spec: str | Mapping[str, Any] | datasets.Dataset, *, data_root: str | None = None,
                on_bad_row: str = "error") -> RowSource:
    """The training source of a dataset spec (see :func:`~jaxsbert.data.loading.load_dataset`): local
    jsonl/csv/tsv files (a path, a glob or a list of them) become a :class:`LineSource`; everything
    else is loaded by ``datasets`` (memory-mapped) as an :class:`ArrowSource`."""
    from jaxsbert.data.loading import _SPEC_KEYS, load_dataset

    if isinstance(spec, datasets.Dataset):
        return ArrowSource(spec)
    options = {"source": spec} if isinstance(spec, (str, os.PathLike, list, tuple)) else dict(spec)
    unknown = sorted(set(options) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"dataset spec has unknown keys {unknown}; known keys: {list(_SPEC_KEYS)}")
    source = options.get("source")
    if is_line_source(source) and options.get("min_score") is None and not options.get("noise") \
            and not options.get("prompts"):                                                     # else in memory
        root = options.get("data_root", data_root)
        patterns = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        resolved = []
        for p in map(str, patterns):
            if not os.path.isabs(p) and not glob.glob(p) and root is not None and glob.glob(os.path.join(str(root), p)):
                p = os.path.join(str(root), p)
            resolved.append(p)
        return LineSource(expand_files(resolved), rename=options.get("rename"), columns=options.get("columns"),
                          limit=options.get("limit"), on_bad_row=on_bad_row)
    return ArrowSource(load_dataset(options, data_root=data_root))
