"""Which packed shapes a dataset's batches get: one row length and a few row counts.

Every distinct ``[rows, row_length]`` is one compiled train-step program, so the choice trades the
steps' cost against compilations. Both are estimated with :func:`row_cost` over the row needs of a
sample of the epoch's batches (:mod:`jaxsbert.data.loader` computes them):

- row counts: each batch gets the fewest rows of the chosen counts that hold it, so the usual batch does
  not compute the rows that only the largest needs; each count costs ``PROGRAM_COST`` for its compilation,
  and there are at most ``MAX_PROGRAMS``.
- row length (``pack_length="auto"``): rows as short as the longest sentence allows, or longer, up to
  ``AUTO_MAX_LENGTH``, when that packs the sentences with less waste. Attention costs
  ``rows x length^2``, so at the same number of token slots shorter rows step faster: a MiniLM CoSENT
  step with B=16 on 2 CPU cores takes ~10% less on 7 x 72 rows than on 4 x 128 (STSb's longest
  sentence has 70 tokens).
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

AUTO_MAX_LENGTH = 128     # the longest row "auto" picks when every sentence fits in it
ATTENTION_LENGTH = 512    # the row length at which a token's attention costs as much as its dense layers
MAX_PROGRAMS = 3          # row counts per dataset at most


def row_cost(rows, length: int):
    """Relative cost of a step on ``rows`` packed rows of ``length`` tokens: every token slot's dense
    layers, plus its attention over the row, which grows with the row's length (a rough fit to MiniLM
    steps on 2 CPU cores: at equal slots, 8 x 64 rows step ~4% faster than 4 x 128)."""
    return np.asarray(rows, dtype=np.float64) * length * (1.0 + length / ATTENTION_LENGTH)


# what compiling one more program costs, in row_cost units: a MiniLM train step compiles in ~6-7 s on 2 CPU
# cores, the time of ~40 of its CoSENT B=16 steps on 7 x 72 rows
PROGRAM_COST = 40 * float(row_cost(7, 72))


def choose_row_counts(needs: Sequence[int], length: int, steps: int, multiple: int = 1,
                      programs: int = MAX_PROGRAMS) -> tuple[tuple[int, ...], float]:
    """The row counts for batches that need ``needs`` rows of ``length`` tokens (a sample of an epoch of
    ``steps`` batches), at most ``programs`` of them, each a multiple of ``multiple``, and their
    estimated cost: the epoch's steps, each on the fewest rows that hold it, plus ``PROGRAM_COST`` per count. The largest
    need is always a count (every sampled batch fits); ties go to fewer counts."""
    if not len(needs):
        raise ValueError("choose_row_counts needs at least one batch")
    multiple = max(int(multiple), 1)
    rounded = -(-np.asarray(needs, dtype=np.int64) // multiple) * multiple
    values, counts = np.unique(rounded, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)])        # batches needing fewer rows than values[i]
    per_batch = steps / len(rounded)

    def cost(chosen: tuple[int, ...]) -> float:       # indices into values, ascending, last = the largest
        total, start = 0.0, 0
        for i in chosen:
            total += (below[i + 1] - below[start]) * float(row_cost(values[i], length))
            start = i + 1
        return total * per_batch + len(chosen) * PROGRAM_COST

    top = len(values) - 1
    best, best_cost = (top,), cost((top,))
    for k in range(1, max(int(programs), 1)):
        for extra in itertools.combinations(range(top), k):
            c = cost(extra + (top,))
            if c < best_cost:
                best, best_cost = extra + (top,), c
    return tuple(int(values[i]) for i in best), best_cost


def auto_lengths(longest: int, step: int) -> list[int]:
    """Candidate row lengths for sentences of at most ``longest`` (<= ``AUTO_MAX_LENGTH``) tokens: the
    multiples of ``step`` from ``longest`` up to ``AUTO_MAX_LENGTH``, and ``AUTO_MAX_LENGTH``."""
    if not 1 <= longest <= AUTO_MAX_LENGTH:
        raise ValueError(f"auto row lengths are for sentences of 1..{AUTO_MAX_LENGTH} tokens, got {longest}")
    first = -(-int(longest) // step) * step
    return sorted(set(range(first, AUTO_MAX_LENGTH + 1, step)) | {AUTO_MAX_LENGTH})


def choose_pack_shape(lengths: Sequence[int], needs: Callable[[int], Sequence[int]], steps: int,
                      multiple: int | Callable[[int], int] = 1, programs: int = MAX_PROGRAMS
                      ) -> tuple[int, tuple[int, ...]]:
    """The row length out of ``lengths`` and its row counts (:func:`choose_row_counts`) with the least
    estimated cost; ``needs(length)`` gives the sampled batches' row needs at that length, and
    ``multiple`` (or ``multiple(length)``) what the row counts are multiples of. Ties go to the longer
    rows (fewer of them)."""
    best = None
    for length in sorted(lengths, reverse=True):
        m = multiple(length) if callable(multiple) else multiple
        counts, cost = choose_row_counts(needs(length), length, steps, m, programs)
        if best is None or cost < best[2]:
            best = (length, counts, cost)
    return best[0], best[1]
