"""The sentence-transformers column convention, and checking a dataset against what a loss expects.

Columns named ``label``, ``score``, ``labels`` or ``scores`` are the label; every other column is an
input text, in dataset order. A label is a number per row, or a list of numbers of the same length in
every row (a teacher embedding ``[D]``, teacher scores ``[n]``; or ``[C, D]``, one list per input column).
:func:`validate_dataset` runs on the host before anything is compiled and raises ``ValueError`` naming the
source file, the column and the row.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxsbert.data.loading import dataset_source

LABEL_COLUMNS = ("label", "score", "labels", "scores")


@dataclasses.dataclass(frozen=True)
class Columns:
    """Input text columns (in order) and the label column (None when unlabelled)."""
    inputs: tuple[str, ...]
    label: str | None


def split_columns(dataset: datasets.Dataset | Sequence[str]) -> Columns:
    """Splits column names into inputs and the label by the sentence-transformers convention."""
    names = list(dataset.column_names if isinstance(dataset, datasets.Dataset) else dataset)
    labels = [c for c in names if c in LABEL_COLUMNS]
    if len(labels) > 1:
        where = dataset_source(dataset) if isinstance(dataset, datasets.Dataset) else "dataset"
        raise ValueError(f"{where}: several label columns {labels}; keep one of {list(LABEL_COLUMNS)}")
    return Columns(inputs=tuple(c for c in names if c not in LABEL_COLUMNS), label=labels[0] if labels else None)


def select_columns(dataset: datasets.Dataset, names: Sequence[str]) -> datasets.Dataset:
    """Keeps ``names`` in this order; a missing name is a ValueError listing the available columns."""
    names = list(names)
    missing = [c for c in names if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{dataset_source(dataset)}: missing column(s) {missing}; "
                         f"the dataset has columns {dataset.column_names}")
    return dataset.select_columns(names)      # in the requested order (inputs are positional)


def _column(dataset: datasets.Dataset, name: str) -> pa.ChunkedArray:
    """The column as arrow, in dataset order (respects an indices mapping from ``select``/``shuffle``)."""
    return dataset.with_format("arrow")[name]


def _first(mask: pa.ChunkedArray) -> int | None:
    i = pc.index(mask.fill_null(False), True).as_py()
    return None if i < 0 else i


def label_dtype(dataset: datasets.Dataset, label: str | None) -> np.dtype:
    """int32 for integer (class) labels, float32 for everything else (scores, lists of numbers) and for no label."""
    if label is None:
        return np.dtype(np.float32)
    t = dataset.features[label]
    if isinstance(t, datasets.ClassLabel):
        return np.dtype(np.int32)
    arrow_type = _column(dataset, label).type
    return np.dtype(np.int32 if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type) else np.float32)


MAX_LABEL_RANK = 2      # a label per row is a number, a list of numbers [D] or a list of lists [C, D]


def is_list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def label_shape(dataset: datasets.Dataset, label: str | None) -> tuple[int, ...]:
    """The shape of one row's label: ``()`` for a number (or no label), ``(D,)`` for a list of ``D`` numbers
    (a teacher embedding, teacher scores), ``(C, D)`` for a list of ``C`` such lists. Read from the first
    row; :func:`validate_dataset` checks that every row has it (:func:`check_vector_label`)."""
    if label is None or not len(dataset):
        return ()
    level = dataset.with_format("arrow")[:1][label]
    shape = []
    while is_list_type(level.type) and len(level) and level.null_count == 0:
        shape.append(int(pc.list_value_length(level)[0].as_py()))
        level = pc.list_flatten(level)[:shape[-1]]
    return tuple(shape)


def check_vector_label(col: pa.ChunkedArray, name: str, where: str) -> tuple[int, ...]:
    """Checks a label column of (nested) lists of numbers and returns one row's shape: no None, every row
    the same shape (at most ``MAX_LABEL_RANK`` levels, none empty), numbers inside, no NaN (infinities are
    left to the loss: DistillKLDivLoss takes -inf for a candidate left out). ValueError naming the column
    and the first bad row."""
    shape: list[int] = []
    level, per_row = col, 1            # per_row: elements of this level per dataset row
    while is_list_type(level.type):
        if len(shape) == MAX_LABEL_RANK:
            raise ValueError(f"{where}: label column {name!r} has type {col.type}: lists nested more than "
                             f"{MAX_LABEL_RANK} deep; a label is a number, a list of numbers or a list of lists")
        i = _first(pc.is_null(level))
        if i is not None:
            raise ValueError(f"{where}: label column {name!r}, row {i // per_row}: None, expected "
                             f"{'a list' if not shape else 'lists'} of numbers")
        lengths = np.asarray(pc.list_value_length(level).to_numpy(zero_copy_only=False))
        size = int(lengths[0]) if len(lengths) else 0
        bad = np.flatnonzero(lengths != size)
        if len(bad):
            i = int(bad[0])
            inner = "" if not shape else f" (list {i % per_row} of the row)"
            raise ValueError(f"{where}: label column {name!r}, row {i // per_row}{inner}: {int(lengths[i])} values, "
                             f"but row 0 has {size}: every row's label must have the same length")
        if size == 0:
            raise ValueError(f"{where}: label column {name!r}, row 0: an empty list, expected numbers")
        shape.append(size)
        per_row *= size
        level = pc.list_flatten(level)
    if not (pa.types.is_integer(level.type) or pa.types.is_floating(level.type)):
        raise ValueError(f"{where}: label column {name!r} has type {col.type}, expected lists of numbers")
    i = _first(pc.is_null(level))
    if i is not None:
        raise ValueError(f"{where}: label column {name!r}, row {i // per_row}: None in the list, expected a number")
    if pa.types.is_floating(level.type):
        i = _first(pc.is_nan(level))
        if i is not None:
            raise ValueError(f"{where}: label column {name!r}, row {i // per_row}: NaN in the list (value "
                             f"{i % per_row}), expected a number")
    return tuple(shape)


def label_array(col: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An Arrow label column (checked: every row of ``shape``) -> numpy ``[rows, *shape]`` of ``dtype``."""
    if not shape:
        return np.asarray(col.to_numpy(zero_copy_only=False)).astype(dtype)
    flat = col
    for _ in shape:
        flat = pc.list_flatten(flat)
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype).reshape(len(col), *shape)


def num_classes(dataset: datasets.Dataset, label: str | None) -> int | None:
    """Number of classes declared by a ClassLabel feature, else None."""
    if label is not None and isinstance(dataset.features[label], datasets.ClassLabel):
        return dataset.features[label].num_classes
    return None


def _check_text(dataset: datasets.Dataset, name: str, where: str) -> None:
    col = _column(dataset, name)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        i = _first(pc.is_null(col))
        if i is not None:
            raise ValueError(f"{where}: column {name!r}, row {i}: None, expected a string")
        i = _first(pc.equal(pc.utf8_trim_whitespace(col), ""))
        if i is not None:
            raise ValueError(f"{where}: column {name!r}, row {i}: an empty text")
        return
    if pa.types.is_null(col.type):
        raise ValueError(f"{where}: column {name!r}, row 0: None, expected a string (the column is all None)")
    values = dataset[name]       # decoded (a JSON column mixing strings and numbers gives Python objects)
    row = next((i for i, v in enumerate(values) if not isinstance(v, str)), 0)
    value = values[row] if len(values) else None
    raise ValueError(f"{where}: column {name!r}, row {row}: {value!r:.60} ({type(value).__name__}), expected a "
                     f"string; every column except {list(LABEL_COLUMNS)} is an input text")


def _check_label(dataset: datasets.Dataset, name: str, where: str, num_labels: int | None) -> None:
    col = _column(dataset, name)
    if is_list_type(col.type) and num_labels is None:      # a vector per row (teacher embeddings or scores)
        check_vector_label(col, name, where)
        return
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise ValueError(f"{where}: label column {name!r} has type {col.type}, expected numbers "
                         f"(map class names to integers 0..num_labels-1)")
    i = _first(pc.is_null(col))
    if i is not None:
        raise ValueError(f"{where}: label column {name!r}, row {i}: None, expected a number")
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int64())
    if pa.types.is_floating(col.type):
        i = _first(pc.invert(pc.is_finite(col)))
        if i is not None:
            raise ValueError(f"{where}: label column {name!r}, row {i}: {col[i].as_py()} is not a finite number")
    if num_labels is not None:
        values = col.to_numpy()
        bad = (values < 0) | (values >= num_labels) | (values != np.floor(values))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{where}: label column {name!r}, row {i}: {values[i].item()!r} is not a class id in "
                             f"[0, {num_labels}) (num_labels={num_labels})")


def validate_dataset(dataset: datasets.Dataset, *, num_inputs: int | tuple[int, int | None] | None = None,
                     needs_label: bool = False, num_labels: int | None = None, name: str | None = None) -> Columns:
    """Checks ``dataset`` against a loss's expectation; returns its :class:`Columns`.

    ``num_inputs``: the exact number of input columns, or ``(min, max)`` with ``max=None`` for no upper
    bound (MultipleNegativesRankingLoss: ``(2, None)``). ``needs_label``: a label column must exist.
    ``num_labels``: labels must be class ids in ``[0, num_labels)`` (classification losses).
    Also checked: the dataset is not empty, input texts are strings (not None), label values are finite
    numbers, or lists of numbers of one length in every row (:func:`check_vector_label`). ``name`` (e.g. the
    dataset's name in the config) prefixes the messages with the source file.
    """
    where = dataset_source(dataset) if name is None else f"{name} ({dataset_source(dataset)})"
    if len(dataset) == 0:
        raise ValueError(f"{where}: the dataset is empty")
    columns = split_columns(dataset)
    n = len(columns.inputs)
    if num_inputs is not None:
        lo, hi = (num_inputs, num_inputs) if isinstance(num_inputs, int) else num_inputs
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise ValueError(f"{where}: the loss expects {want} input column(s), the dataset has {n}: "
                             f"{list(columns.inputs)} (label columns: {list(LABEL_COLUMNS)}; use the spec's "
                             f"'columns' to select)")
    if n == 0:
        raise ValueError(f"{where}: no input column; columns are {dataset.column_names}")
    if needs_label and columns.label is None:
        raise ValueError(f"{where}: missing label column (one of {list(LABEL_COLUMNS)}); "
                         f"the dataset has columns {dataset.column_names}")
    for c in columns.inputs:
        _check_text(dataset, c, where)
    if columns.label is not None:
        _check_label(dataset, columns.label, where, num_labels)
    return columns
