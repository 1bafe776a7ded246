"""The token ids of a process's rows -> one statically shaped batch (padded or packed).

A batch is a dict of numpy arrays::

    {"features": ({"input_ids": int32 [B, L], "attention_mask": int32 [B, L]}, ...)  # one per input column
     "labels": int32 or float32 [B],   # zeros when the dataset has no label; float32 [B, *shape] for labels
                                       # that are lists of numbers (teacher embeddings / scores)
     "mask": bool [B]}                 # False on padding rows and rows left out (bad rows skipped)

``B`` is this process's share of the fixed global batch size and ``L`` the length bucket of the
longest sequence in the *global* batch across all its columns (agreed between processes by the
loader), so every column, every host and every batch of that bucket share one shape. Packed batches
(:func:`pack_rows`) put the sentences into ``[rows, row_length]`` arrays instead.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsbert.data.buckets import bucket_for, pad_token_ids
from jaxsbert.data.tokenization import TokenizedDataset

Tokens = Sequence[Sequence[Sequence[int]]]      # [column][row] -> token ids


def process_rows(batch_size: int, process_index: int = 0, process_count: int = 1) -> slice:
    """The contiguous rows of every global batch that belong to ``process_index``."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index={process_index} / process_count={process_count}")
    if batch_size % process_count:
        raise ValueError(f"the global batch size {batch_size} is not divisible by the number of processes "
                         f"{process_count}; choose a batch size that is a multiple of {process_count}")
    share = batch_size // process_count
    return slice(process_index * share, (process_index + 1) * share)


def batch_slots(n: int, batch_size: int) -> np.ndarray:
    """The slot in the global batch of each of a batch's ``n`` rows: a full batch in order; a partial
    (last) batch spread evenly over the ``batch_size`` slots (row ``i`` at ``i * batch_size // n``), so
    that every process and every device holds its share of its rows, and the global batch is the same
    on every topology."""
    return np.arange(n, dtype=np.int64) * batch_size // max(n, 1)


def local_rows(n: int, batch_size: int, process_index: int = 0, process_count: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """(which of a batch's ``n`` rows are this process's, their slots in its share of the batch)."""
    local = process_rows(batch_size, process_index, process_count)
    slots = batch_slots(n, batch_size)
    mine = np.flatnonzero((slots >= local.start) & (slots < local.stop))
    return mine, slots[mine] - local.start


def longest(tokens: Tokens) -> int:
    """The longest sequence of ``tokens`` (1 when there is none)."""
    return max((len(t) for column in tokens for t in column), default=1)


def padded_rows(tokens: Tokens, at: np.ndarray, length: int, share: int, pad_token_id: int = 0) -> tuple[dict, ...]:
    """One ``{"input_ids", "attention_mask"}`` of ``[share, length]`` per column; row ``k`` of ``tokens``
    at row ``at[k]`` (:func:`local_rows`), the other rows padding."""
    def placed(column):
        out = [()] * share
        for k, t in zip(at, column):
            out[k] = t
        return out
    return tuple(pad_token_ids(placed(column), length, share, pad_token_id) for column in tokens)


def row_major(tokens: Tokens) -> list:
    """The sentences row-major over the columns: sentence (b, c) at ``b * columns + c``."""
    return [t for row in zip(*tokens) for t in row]


def pack_rows(tokens: Tokens, at: np.ndarray, share: int, packed_rows: int, row_length: int, max_segments: int,
              pad_token_id: int = 0, *, process_index: int = 0) -> dict:
    """This process's sentences packed (:mod:`jaxsbert.data.packing`) into ``packed_rows`` rows of
    ``row_length`` tokens::

        {"input_ids", "attention_mask" (segment ids), "position_ids", "sentence_ids": [packed_rows, row_length],
         "slots": int32 [share, columns]}   # slots index the global array of all processes

    Row ``k`` of ``tokens`` is row ``at[k]`` of the share (:func:`local_rows`), so row
    ``process_index * share + at[k]`` of the global batch (its ``sentence_ids``, :func:`packing.sentence_index`).
    """
    from jaxsbert.data.packing import pack_token_ids, sentence_index

    offset = process_index * packed_rows * max_segments
    ids = sentence_index(process_index * share + np.asarray(at, np.int64), len(tokens)).reshape(-1)
    features = pack_token_ids(row_major(tokens), packed_rows, row_length, max_segments, pad_token_id,
                              slot_offset=offset, sentence_ids=ids)
    n = len(tokens[0]) if tokens else 0
    slots = np.full((share, len(tokens)), offset, np.int32)   # padding rows: any valid slot (masked out)
    slots[at] = features["slots"].reshape(n, len(tokens))
    features["slots"] = slots
    return features


def with_labels_and_mask(features, labels: np.ndarray | None, valid: np.ndarray, at: np.ndarray, share: int,
                         label_dtype: np.dtype) -> dict:
    """The batch dict: ``features``, the labels padded to ``share`` rows (zeros; labels that are vectors
    ``[rows, *shape]`` give ``[share, *shape]``), and the validity mask (row ``k`` at row ``at[k]``)."""
    out_labels = np.zeros((share, *np.shape(labels)[1:]), label_dtype)
    if labels is not None:
        out_labels[at] = labels
    mask = np.zeros(share, bool)
    mask[at] = valid
    return {"features": features, "labels": out_labels, "mask": mask}


# --------------------------------------------------------------------------- whole tokenized datasets

def dataset_tokens(data: TokenizedDataset, rows: Sequence[int]) -> list[list[np.ndarray]]:
    """``[column][row]`` token ids of ``rows`` of a tokenized dataset."""
    return [[col[r] for r in rows] for col in data.inputs]


def batch_sentences(data: TokenizedDataset, rows: Sequence[int]) -> list:
    """Token ids of ``rows``, row-major over the input columns: sentence (b, c) at ``b * columns + c``."""
    return row_major(dataset_tokens(data, rows))


def make_batch(data: TokenizedDataset, rows: Sequence[int], batch_size: int, buckets: Sequence[int],
               pad_token_id: int = 0, *, process_index: int = 0, process_count: int = 1) -> dict:
    """The padded batch of dataset ``rows`` (the global batch): this process's slice, its length bucket
    the global batch's."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > batch_size:
        raise ValueError(f"{len(rows)} rows do not fit in a batch of {batch_size}")
    length = bucket_for(longest(dataset_tokens(data, rows)), buckets)
    share = batch_size // process_count
    which, at = local_rows(len(rows), batch_size, process_index, process_count)
    mine = rows[which]
    features = padded_rows(dataset_tokens(data, mine), at, length, share, pad_token_id)
    labels = data.labels[mine] if data.labels is not None else None
    return with_labels_and_mask(features, labels, np.ones(len(mine), bool), at, share, data.label_dtype)
