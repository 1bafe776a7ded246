"""Static shapes: sequence lengths and batch rows come from a few buckets so XLA compiles few programs."""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


def length_buckets(max_seq_length: int, buckets: Sequence[int] = DEFAULT_LENGTH_BUCKETS) -> tuple[int, ...]:
    """The buckets below ``max_seq_length``, then ``max_seq_length`` itself."""
    return tuple(b for b in sorted(buckets) if b < max_seq_length) + (max_seq_length,)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= length (buckets sorted ascending); the largest if none is."""
    for b in buckets:
        if length <= b:
            return b
    return buckets[-1]


def pad_token_ids(token_ids: Sequence[Sequence[int]], length: int, rows: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pads a list of token-id lists into fixed [rows, length] int32 arrays.

    Returns ``input_ids`` and ``attention_mask`` (1 = token). Rows past ``len(token_ids)`` are
    all padding; sequences longer than ``length`` are an error (truncate before).
    """
    if len(token_ids) > rows:
        raise ValueError(f"{len(token_ids)} sequences do not fit in a batch of {rows} rows")
    input_ids = np.full((rows, length), pad_id, dtype=np.int32)
    attention_mask = np.zeros((rows, length), dtype=np.int32)
    for i, ids in enumerate(token_ids):
        if len(ids) > length:
            raise ValueError(f"sequence {i} has {len(ids)} tokens, more than the bucket length {length}")
        input_ids[i, : len(ids)] = ids
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
