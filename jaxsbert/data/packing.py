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


def assign_rows(lengths: Sequence[int], row_length: int, max_segments: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit decreasing: ``(row, segment)`` (segment 0-based) of each sentence, and the number of rows used.

    Deterministic in ``lengths``. Every length must be in ``[1, row_length]``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.max() > row_length or lengths.min() < 1):
        raise ValueError(f"sentence lengths must be in [1, {row_length}] to pack into rows of {row_length} "
                         f"tokens; got {int(lengths.min())}..{int(lengths.max())}")
    order = np.argsort(-lengths, kind="stable")
    free: list[int] = []        # tokens left per row
    used: list[int] = []        # segments used per row
    row = np.zeros(len(lengths), np.int64)
    segment = np.zeros(len(lengths), np.int64)
    for i in order:
        r = _place(free, used, int(lengths[i]), row_length, max_segments)
        row[i], segment[i] = r, used[r] - 1
    return row, segment, len(free)


def _first_fit(free: list[int], used: list[int], n: int, max_segments: int) -> int | None:
    """The first row with room for ``n`` more tokens and one more segment, or None."""
    return next((r for r in range(len(free)) if free[r] >= n and used[r] < max_segments), None)


def _place(free: list[int], used: list[int], n: int, row_length: int, max_segments: int) -> int:
    """Puts a sentence of ``n`` tokens in the first row it fits (opening a row if none) and returns the row."""
    r = _first_fit(free, used, n, max_segments)
    if r is None:
        r = len(free)
        free.append(row_length)
        used.append(0)
    free[r] -= n
    used[r] += 1
    return r


def fill_groups(lengths: Sequence[int], items: Sequence[int], rows: int, row_length: int, max_segments: int):
    """Splits ``items`` (lengths in decreasing order) into consecutive groups that first-fit into
    ``rows`` rows of ``row_length`` tokens with at most ``max_segments`` sentences each; yields arrays."""
    group: list[int] = []
    free: list[int] = []
    used: list[int] = []
    for item, n in zip(items, lengths):
        if _first_fit(free, used, n, max_segments) is None and len(free) == rows:
            yield np.asarray(group)
            group, free, used = [], [], []
        _place(free, used, n, row_length, max_segments)
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
