"""Rows of a tokenized dataset -> one statically shaped batch.

A batch is a dict of numpy arrays::

    {"features": ({"input_ids": int32 [B, L], "attention_mask": int32 [B, L]}, ...)  # one per input column
     "labels": int32 or float32 [B],   # zeros when the dataset has no label
     "mask": bool [B]}                 # False on padding rows

``B`` is the fixed global batch size (or this process's share of it) and ``L`` the length bucket of the
longest sequence in the *global* batch across all its columns, so every column, every host and every
batch of that bucket share one shape; there are at most ``len(buckets)`` distinct shapes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsbert.data.buckets import bucket_for, pad_token_ids
from jaxsbert.data.tokenization import TokenizedDataset


def process_rows(batch_size: int, process_index: int = 0, process_count: int = 1) -> slice:
    """The contiguous rows of every global batch that belong to ``process_index``."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index={process_index} / process_count={process_count}")
    if batch_size % process_count:
        raise ValueError(f"the global batch size {batch_size} is not divisible by the number of processes "
                         f"{process_count}; choose a batch size that is a multiple of {process_count}")
    share = batch_size // process_count
    return slice(process_index * share, (process_index + 1) * share)


def batch_length(data: TokenizedDataset, rows: Sequence[int], buckets: Sequence[int]) -> int:
    """The length bucket of the longest sequence of ``rows`` across all input columns."""
    rows = np.asarray(rows, dtype=np.int64)
    longest = max((int(c.lengths_of(rows).max()) for c in data.inputs), default=1) if len(rows) else 1
    if longest > buckets[-1]:
        raise ValueError(f"a sequence of {longest} tokens exceeds the largest length bucket {buckets[-1]} "
                         f"(the tokenizer must truncate at max_seq_length)")
    return bucket_for(longest, buckets)


def make_batch(data: TokenizedDataset, rows: Sequence[int], batch_size: int, buckets: Sequence[int],
               pad_token_id: int = 0, *, process_index: int = 0, process_count: int = 1) -> dict:
    """The batch of dataset ``rows`` (the global batch), padded to ``batch_size`` rows and masked.

    With ``process_count > 1`` only this process's contiguous slice of the global batch is built
    (``batch_size // process_count`` rows); the length bucket is still the global batch's.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > batch_size:
        raise ValueError(f"{len(rows)} rows do not fit in a batch of {batch_size}")
    length = batch_length(data, rows, buckets)
    local = process_rows(batch_size, process_index, process_count)
    mine = rows[local]
    share = local.stop - local.start
    features = tuple(pad_token_ids([col[r] for r in mine], length, share, pad_token_id) for col in data.inputs)
    return _with_labels_and_mask(features, data, mine, share)


def batch_sentences(data: TokenizedDataset, rows: Sequence[int]) -> list:
    """Token ids of ``rows``, row-major over the input columns: sentence (b, c) at ``b * columns + c``."""
    return [col[r] for r in rows for col in data.inputs]


def make_packed_batch(data: TokenizedDataset, rows: Sequence[int], batch_size: int, packed_rows: int,
                      row_length: int, max_segments: int, pad_token_id: int = 0, *,
                      process_index: int = 0, process_count: int = 1) -> dict:
    """Like :func:`make_batch`, but the sentences of this process's rows are packed
    (:mod:`jaxsbert.data.packing`) into ``packed_rows`` rows of ``row_length`` tokens::

        {"features": {"input_ids", "attention_mask" (segment ids), "position_ids": [packed_rows, row_length],
                      "slots": int32 [B_local, columns]},   # slots index the global array of all processes
         "labels": [B_local], "mask": bool [B_local]}
    """
    from jaxsbert.data.packing import pack_token_ids

    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > batch_size:
        raise ValueError(f"{len(rows)} rows do not fit in a batch of {batch_size}")
    local = process_rows(batch_size, process_index, process_count)
    mine = rows[local]
    share = local.stop - local.start
    offset = process_index * packed_rows * max_segments
    features = pack_token_ids(batch_sentences(data, mine), packed_rows, row_length, max_segments, pad_token_id,
                              slot_offset=offset)
    slots = np.full((share, len(data.inputs)), offset, np.int32)   # padding rows: any valid slot (masked out)
    slots[:len(mine)] = features["slots"].reshape(len(mine), len(data.inputs))
    features["slots"] = slots
    return _with_labels_and_mask(features, data, mine, share)


def _with_labels_and_mask(features, data: TokenizedDataset, mine: np.ndarray, share: int) -> dict:
    """The batch dict: ``features``, the labels of rows ``mine`` padded to ``share``, and the validity mask."""
    labels = np.zeros(share, data.label_dtype)
    if data.labels is not None:
        labels[:len(mine)] = data.labels[mine]
    mask = np.zeros(share, bool)
    mask[:len(mine)] = True
    return {"features": features, "labels": labels, "mask": mask}
