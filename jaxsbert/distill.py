"""Teacher labels for knowledge distillation: a teacher model's embeddings or similarity scores written into a
dataset's ``label`` column, in the layouts the distillation losses take (as sentence-transformers' examples
build them with ``dataset.map``).

- :func:`embed_labels`: the teacher's embeddings, for :class:`~jaxsbert.losses.MSELoss` and
  :class:`~jaxsbert.losses.EmbedDistillLoss`.
- :func:`score_labels`: the teacher's similarity scores of each row's (query, positive, negative_1, ...), or
  their margins, for :class:`~jaxsbert.losses.DistillKLDivLoss` and :class:`~jaxsbert.losses.MarginMSELoss`.

The teacher is any :class:`jaxsbert.SentenceEncoder` (or an object with its ``encode(sentences, batch_size=...)``,
e.g. a ``sentence_transformers.SentenceTransformer``). Each column's distinct texts are embedded once; the
labels are held in memory (rows x dimension float32) and stored as fixed-length Arrow lists of float32.

    from jaxsbert import SentenceEncoder
    from jaxsbert.distill import embed_labels

    teacher = SentenceEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    train = embed_labels(train, teacher, columns="english")   # label: teacher(english), [384] per row
    # then train (english, french) with MSELoss: both columns learn the teacher's English embedding
"""
from __future__ import annotations

from typing import Any, Sequence

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from jaxsbert.data.columns import LABEL_COLUMNS, split_columns
from jaxsbert.data.loading import dataset_source


def _prepare(dataset: datasets.Dataset, columns: str | Sequence[str] | None, overwrite: bool,
             what: str) -> tuple[datasets.Dataset, list[str], list[str]]:
    """(the dataset without its label column when ``overwrite``, the columns the teacher reads, the input
    columns); ValueError naming the dataset for a missing column, an existing label, a non-text value."""
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"{what}: expected a datasets.Dataset, got {type(dataset).__name__}")
    where = dataset_source(dataset)
    labels = [c for c in dataset.column_names if c in LABEL_COLUMNS]
    if labels:
        if not overwrite:
            raise ValueError(f"{where}: the dataset already has a label column {labels[0]!r}; pass overwrite=True "
                             "to replace it with the teacher's labels")
        dataset = dataset.remove_columns(labels)
    inputs = list(split_columns(dataset).inputs)
    chosen = inputs if columns is None else [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in chosen if c not in inputs]
    if missing:
        raise ValueError(f"{where}: no input column(s) {missing}; the input columns are {inputs}")
    if not chosen:
        raise ValueError(f"{where}: no input column to give the teacher")
    return dataset, chosen, inputs


def _teacher_embeddings(teacher: Any, dataset: datasets.Dataset, column: str, batch_size: int,
                        encode_kwargs: dict) -> np.ndarray:
    """[rows, D] float32: the teacher's embedding of each row's text in ``column`` (each distinct text once)."""
    texts = dataset[column]
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{dataset_source(dataset)}: column {column!r}, row {row}: {text!r:.60} is not a text "
                             "(a non-empty string)")
    codes, uniques = pd.factorize(pd.Series(texts, dtype=object), sort=False)
    embeddings = np.asarray(teacher.encode(list(uniques), batch_size=batch_size, **encode_kwargs), np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(uniques):
        raise ValueError(f"the teacher's encode gave an array of shape {embeddings.shape} for {len(uniques)} "
                         "texts; expected [texts, dimension] (precision='float32', output_value='sentence_embedding')")
    return embeddings[codes]


def _with_label(dataset: datasets.Dataset, values: np.ndarray, label_column: str) -> datasets.Dataset:
    """``dataset`` with ``values`` ([rows] or [rows, ...] float32) as its label column (fixed-size lists)."""
    values = np.ascontiguousarray(values, np.float32)
    array: pa.Array = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return dataset.add_column(label_column, array)


def embed_labels(dataset: datasets.Dataset, teacher_encoder: Any, columns: str | Sequence[str] | None = None,
                 batch_size: int = 64, *, label_column: str = "label", overwrite: bool = False,
                 **encode_kwargs: Any) -> datasets.Dataset:
    """``dataset`` with a ``label`` column holding the teacher's embeddings of ``columns``, the layout
    :class:`~jaxsbert.losses.MSELoss` / :class:`~jaxsbert.losses.EmbedDistillLoss` take:

    - one column (a name, or ``columns=None`` on a dataset with one input column): a list of ``D`` numbers per
      row, every input column's target (multilingual distillation: the teacher embeds the English column,
      the student learns that embedding for the English and the translated column alike);
    - several columns (every input column, in order; ``None`` on a dataset with several): ``C`` lists of ``D``
      numbers per row, column ``c``'s target being the teacher's embedding of column ``c``.

    ``encode_kwargs`` go to ``teacher_encoder.encode`` (``prompt_name``, ``normalize_embeddings``, ...). An
    existing label column is an error unless ``overwrite=True`` (then it is replaced)."""
    dataset, chosen, inputs = _prepare(dataset, columns, overwrite, "embed_labels")
    if len(chosen) > 1 and chosen != inputs:
        raise ValueError(f"{dataset_source(dataset)}: embed_labels: per-column teacher embeddings are one per input "
                         f"column, in order ({inputs}); got columns={chosen}. Embed one column for every input "
                         "column's target, or all of them")
    per_column = [_teacher_embeddings(teacher_encoder, dataset, c, batch_size, encode_kwargs) for c in chosen]
    values = per_column[0] if len(per_column) == 1 else np.stack(per_column, axis=1)
    return _with_label(dataset, values, label_column)


def score_labels(dataset: datasets.Dataset, teacher_encoder: Any, columns: Sequence[str] | None = None,
                 batch_size: int = 64, *, margins: bool = False, similarity_fn_name: str | None = None,
                 label_column: str = "label", overwrite: bool = False, **encode_kwargs: Any) -> datasets.Dataset:
    """``dataset`` of (query, positive, negative_1, ..., negative_n) rows with a ``label`` column holding the
    teacher's similarity scores, ``T(q, c) = sim(teacher(q), teacher(c))``:

    - ``margins=False``: the scores ``[T(q, p), T(q, n_1), ..., T(q, n_n)]``, a list of n + 1 per row, what
      :class:`~jaxsbert.losses.DistillKLDivLoss` takes (and :class:`~jaxsbert.losses.MarginMSELoss` too);
    - ``margins=True``: the margins ``T(q, p) - T(q, n_k)``, a number per row for one negative, else a list of n,
      :class:`~jaxsbert.losses.MarginMSELoss`'s label.

    ``columns``: the (query, positive, negatives...) columns, at least 3 (default: the input columns).
    ``sim`` is ``similarity_fn_name`` (``"cosine"``, ``"dot"``, ``"euclidean"``, ``"manhattan"``), by default
    the teacher's own (``teacher_encoder.similarity_fn_name``, else cosine), as ``similarity_pairwise``.
    ``encode_kwargs`` go to ``teacher_encoder.encode``."""
    from jaxsbert.encoder import similarity_pairwise

    dataset, chosen, _ = _prepare(dataset, columns, overwrite, "score_labels")
    if len(chosen) < 3:
        raise ValueError(f"{dataset_source(dataset)}: score_labels needs (query, positive, negative_1, ...) columns, "
                         f"at least 3; got {chosen}")
    name = similarity_fn_name or getattr(teacher_encoder, "similarity_fn_name", None) or "cosine"
    embedded = [_teacher_embeddings(teacher_encoder, dataset, c, batch_size, encode_kwargs) for c in chosen]
    query = embedded[0]
    scores = np.stack([np.asarray(similarity_pairwise(query, c, name), np.float32) for c in embedded[1:]], axis=1)
    if margins:
        scores = scores[:, :1] - scores[:, 1:]
        if scores.shape[1] == 1:
            scores = scores[:, 0]
    return _with_label(dataset, scores, label_column)
