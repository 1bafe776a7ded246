"""Sequence packing: several short sentences share one row of a fixed ``[rows, row_length]`` array.

Sentence batches are mostly padding (STS sentences average ~14 tokens; a random batch pads to its
longest, often 40+). Packing puts sentences end to end in rows of ``row_length`` tokens; the encoder
keeps them apart with segment ids (``attention_mask`` holds 1..k for the k sentences of a row, 0 for
padding: a token attends only within its own sentence), ``position_ids`` restart at 0 for every
sentence, and pooling is done per segment. The result equals the unpacked forward pass.

A packed feature dict::

    {"input_ids": int32 [R, L], "attention_mask": int32 [R, L] (segment ids), "position_ids": int32 [R, L],
     "slots": int32 [...],   # sentence i's pooled embedding is slot slots[i] = row * max_segments + segment - 1
     "sentence_ids": int32 [R, L]}   # training batches: each token's sentence in the global batch

The model returns one embedding per entry of ``slots`` (same shape + [D]). ``sentence_ids`` number
sentence (b, c) of a global batch (row b, input column c of C) ``b * C + c`` (:func:`sentence_index`), as
an unpacked batch's rows are numbered: the dropout masks are keyed by it, so they do not depend on the
packing (:mod:`jaxsbert.models.dropout`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_ROW_LENGTH = 128
DEFAULT_MAX_SEGMENTS = 32


def sentence_index(rows, columns: int):
    """The index of sentence (row b, column c) of a global batch: ``b * columns + c``, as ``[len(rows), columns]``
    (numpy or jax arrays alike)."""
    return rows[:, None] * columns + np.arange(columns)[None]


def is_packed(features) -> bool:
    """True for a packed feature dict (it has ``slots``)."""
    return isinstance(features, dict) and "slots" in features


class FirstFit:
    """Rows of ``row_length`` tokens with at most ``max_segments`` sentences each, filled first-fit:
    :meth:`place` puts a sentence in the lowest-numbered row with room for it (rows are opened in order),
    in O(log rows) through a max-tree of the rows' free tokens (a full row counts -1): packing a batch of
    65,536 pairs takes ~1 s instead of the ~hour of a scan over the open rows per sentence."""

    def __init__(self, capacity: int, row_length: int, max_segments: int):
        self.size = 1 << max(capacity - 1, 0).bit_length()
        self.tree = [-1] * (2 * self.size)
        self.tree[self.size:self.size + capacity] = [row_length] * capacity
        for i in range(self.size - 1, 0, -1):
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])
        self.used = [0] * capacity
        self.max_segments = max_segments
        self.rows = 0               # rows opened so far

    def place(self, n: int) -> int | None:
        """The row (0-based) the sentence of ``n`` tokens goes to, or None when no row of the capacity fits it."""
        tree = self.tree
        if tree[1] < n:
            return None
        i = 1
        while i < self.size:
            i = 2 * i if tree[2 * i] >= n else 2 * i + 1
        r = i - self.size
        self.used[r] += 1
        tree[i] = tree[i] - n if self.used[r] < self.max_segments else -1
        i //= 2
        while i:
            tree[i] = max(tree[2 * i], tree[2 * i + 1])
            i //= 2
        self.rows = max(self.rows, r + 1)
        return r


def assign_rows(lengths: Sequence[int], row_length: int, max_segments: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit decreasing: ``(row, segment)`` (segment 0-based) of each sentence, and the number of rows used.

    Deterministic in ``lengths``. Every length must be in ``[1, row_length]``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.max() > row_length or lengths.min() < 1):
        raise ValueError(f"sentence lengths must be in [1, {row_length}] to pack into rows of {row_length} "
                         f"tokens; got {int(lengths.min())}..{int(lengths.max())}")
    order = np.argsort(-lengths, kind="stable")
    rows = FirstFit(max(len(lengths), 1), row_length, max_segments)
    row = np.zeros(len(lengths), np.int64)
    segment = np.zeros(len(lengths), np.int64)
    for i, n in zip(order.tolist(), lengths[order].tolist()):
        r = rows.place(n)
        row[i], segment[i] = r, rows.used[r] - 1
    return row, segment, rows.rows


def fill_groups(lengths: Sequence[int], items: Sequence[int], rows: int, row_length: int, max_segments: int):
    """Splits ``items`` (lengths in decreasing order) into consecutive groups that first-fit into
    ``rows`` rows of ``row_length`` tokens with at most ``max_segments`` sentences each; yields arrays."""
    group: list[int] = []
    fit = FirstFit(rows, row_length, max_segments)
    for item, n in zip(items, lengths):
        if fit.place(int(n)) is None:
            yield np.asarray(group)
            group, fit = [], FirstFit(rows, row_length, max_segments)
            fit.place(int(n))
        group.append(item)
    if group:
        yield np.asarray(group)


def rows_needed(lengths: Sequence[int], row_length: int, max_segments: int) -> int:
    return assign_rows(lengths, row_length, max_segments)[2]


def pack_token_ids(token_ids: Sequence[Sequence[int]], rows: int, row_length: int,
                   max_segments: int = DEFAULT_MAX_SEGMENTS, pad_id: int = 0, slot_offset: int = 0,
                   sentence_ids: Sequence[int] | None = None) -> dict:
    """Packs sentences into a ``[rows, row_length]`` feature dict (see the module docstring).

    ``slots`` has one entry per sentence, in input order, plus ``slot_offset`` (a process's first
    slot in a global array); ``sentence_ids`` (one per sentence), when given, are written to each of the
    sentence's tokens (0 on padding). Raises ValueError if the sentences need more than ``rows`` rows.
    """
    lengths = [len(t) for t in token_ids]
    row, segment, used = assign_rows(lengths, row_length, max_segments)
    if used > rows:
        raise ValueError(f"{len(lengths)} sentences ({sum(lengths)} tokens) need {used} packed rows of "
                         f"{row_length} tokens; only {rows} available")
    input_ids = np.full((rows, row_length), pad_id, np.int32)
    segment_ids = np.zeros((rows, row_length), np.int32)
    position_ids = np.zeros((rows, row_length), np.int32)
    token_sentences = np.zeros((rows, row_length), np.int32)
    fill = np.zeros(rows, np.int64)
    for i in np.lexsort((segment, row)):        # row by row, segments in order
        r, n = row[i], lengths[i]
        start = fill[r]
        input_ids[r, start:start + n] = token_ids[i]
        segment_ids[r, start:start + n] = segment[i] + 1
        position_ids[r, start:start + n] = np.arange(n)
        if sentence_ids is not None:
            token_sentences[r, start:start + n] = sentence_ids[i]
        fill[r] += n
    slots = (row * max_segments + segment + slot_offset).astype(np.int32)
    out = {"input_ids": input_ids, "attention_mask": segment_ids, "position_ids": position_ids, "slots": slots}
    if sentence_ids is not None:
        out["sentence_ids"] = token_sentences
    return out
