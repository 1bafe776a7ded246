"""NanoBEIR: retrieval on the NanoBEIR datasets, one InformationRetrievalEvaluator each, and their aggregate.

As sentence-transformers' ``NanoBEIREvaluator``, read from a local copy (jaxsbert downloads nothing): the hub
dataset ``dataset_id`` (default ``sentence-transformers/NanoBEIR-en``) has subsets ``corpus`` (``_id``,
``text``), ``queries`` (``_id``, ``text``) and ``qrels`` (``query-id``, ``corpus-id``), each with one split per
dataset named ``Nano{Name}`` (NanoMSMARCO, NanoNFCorpus, ...). A local copy is the hub repository's files:

    <data_dir>/corpus/NanoMSMARCO-00000-of-00001.parquet     (any ``{subset}/{split}*.parquet`` / ``.jsonl``)
    <data_dir>/queries/NanoMSMARCO-00000-of-00001.parquet
    <data_dir>/qrels/NanoMSMARCO-00000-of-00001.parquet

(``huggingface-cli download sentence-transformers/NanoBEIR-en --repo-type dataset --local-dir <data_dir>``
on a machine with network makes one). ``data_dir`` may also hold it as ``<data_dir>/<dataset_id>/``;
without ``data_dir`` the environment variable ``JAXSBERT_NANOBEIR_DIR`` is used.

Keys: each dataset's ``Nano{Name}_{fn}_{metric}@{k}`` (``Nano{Name}_{truncate_dim}_...`` with truncate_dim),
then the aggregate over datasets (``aggregate_fn``, the mean by default) of each metric,
``NanoBEIR_{aggregate_key}_{fn}_{metric}@{k}`` (``NanoBEIR_mean_{truncate_dim}_...`` with truncate_dim).
Primary: ``NanoBEIR_mean_{fn}_ndcg@{max(ndcg_at_k)}`` for ``main_score_function``, else for the function with
the best aggregate ndcg at the first call (kept for later calls while the score functions stay the same).
Texts that are empty are left out of the corpus and the queries, as sentence-transformers does.
"""
from __future__ import annotations

import glob
import inspect
import json
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from jaxsbert.evaluation.base import Encoder, Evaluator
from jaxsbert.evaluation.information_retrieval import InformationRetrievalEvaluator
from jaxsbert.evaluation.retrieval import (DEFAULT_ACCURACY_AT_K, DEFAULT_MAP_AT_K, DEFAULT_MRR_AT_K,
                                           DEFAULT_NDCG_AT_K, DEFAULT_PRECISION_RECALL_AT_K, ScoreFunctions,
                                           resolve_score_functions)
from jaxsbert.evaluation.similarity import SIMILARITY_FUNCTIONS

NANOBEIR_DIR_ENV = "JAXSBERT_NANOBEIR_DIR"
DEFAULT_DATASET_ID = "sentence-transformers/NanoBEIR-en"

DATASET_NAME_TO_HUMAN_READABLE = {
    "climatefever": "ClimateFEVER",
    "dbpedia": "DBPedia",
    "fever": "FEVER",
    "fiqa2018": "FiQA2018",
    "hotpotqa": "HotpotQA",
    "msmarco": "MSMARCO",
    "nfcorpus": "NFCorpus",
    "nq": "NQ",
    "quoraretrieval": "QuoraRetrieval",
    "scidocs": "SCIDOCS",
    "arguana": "ArguAna",
    "scifact": "SciFact",
    "touche2020": "Touche2020",
}

_REQUIRED_COLUMNS = {"corpus": ("_id", "text"), "queries": ("_id", "text"), "qrels": ("query-id", "corpus-id")}


# ----------------------------------------------------------------------------------------------- local data

def _dataset_root(data_dir: str | os.PathLike | None, dataset_id: str) -> str:
    """The local copy's directory: ``data_dir`` (or ``$JAXSBERT_NANOBEIR_DIR``), or its ``<dataset_id>/``."""
    if data_dir is None:
        data_dir = os.environ.get(NANOBEIR_DIR_ENV) or None
    if data_dir is None:
        raise FileNotFoundError(
            f"NanoBEIREvaluator: no local copy of {dataset_id!r} (jaxsbert downloads nothing): pass data_dir= or set "
            f"{NANOBEIR_DIR_ENV} to a directory holding the hub dataset's files, e.g. corpus/NanoMSMARCO-*.parquet, "
            f"queries/NanoMSMARCO-*.parquet, qrels/NanoMSMARCO-*.parquet (huggingface-cli download {dataset_id} "
            f"--repo-type dataset --local-dir DIR)")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"NanoBEIREvaluator: data_dir {data_dir!r} is not a directory")
    nested = os.path.join(data_dir, *dataset_id.split("/"))
    return nested if os.path.isdir(nested) else data_dir


def _split_files(root: str, subset: str, split: str) -> list[str]:
    for ext in ("parquet", "jsonl"):
        files = sorted(glob.glob(os.path.join(glob.escape(root), subset, f"{glob.escape(split)}[-.]*{ext}")))
        files = [f for f in files if f.endswith("." + ext)]
        if files:
            return files
    return []


def _read_rows(files: list[str]) -> Iterator[dict]:
    for path in files:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq
            yield from pq.read_table(path).to_pylist()
        else:
            with open(path, encoding="utf8") as f:
                for line_no, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as e:
                            raise ValueError(f"{path}:{line_no}: not a JSON object ({e.msg})") from None


def load_split(root: str, subset: str, split: str) -> list[dict]:
    """The rows of ``{root}/{subset}/{split}*.parquet`` (or ``.jsonl``), checked for the subset's columns."""
    files = _split_files(root, subset, split)
    if not files:
        raise FileNotFoundError(f"NanoBEIREvaluator: no {subset}/{split}-*.parquet (or .jsonl) under {root!r}")
    rows = list(_read_rows(files))
    for row_no, row in enumerate(rows):
        missing = [c for c in _REQUIRED_COLUMNS[subset] if c not in row]
        if missing:
            raise ValueError(f"{files[0]}: row {row_no}: {subset} needs columns {list(_REQUIRED_COLUMNS[subset])}; "
                             f"missing {missing} (has {sorted(row)})")
    return rows


def load_nanobeir_dataset(root: str, dataset_name: str) -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant docs) of one NanoBEIR dataset, read as sentence-transformers reads them."""
    split = f"Nano{DATASET_NAME_TO_HUMAN_READABLE[dataset_name.lower()]}"
    corpus = {row["_id"]: row["text"] for row in load_split(root, "corpus", split) if len(row["text"]) > 0}
    queries = {row["_id"]: row["text"] for row in load_split(root, "queries", split) if len(row["text"]) > 0}
    relevant: dict[Any, set] = {}
    for row in load_split(root, "qrels", split):
        ids = row["corpus-id"]
        relevant.setdefault(row["query-id"], set()).update(ids if isinstance(ids, list) else [ids])
    return queries, corpus, relevant


# ----------------------------------------------------------------------------------------------- prompts

class _Prompted:
    """An encoder whose ``encode`` puts ``prompt`` before each text (``encode(..., prompt=)`` when the encoder
    takes it, as sentence-transformers' prompts; else the text is prefixed)."""

    def __init__(self, encoder: Encoder, prompt: str):
        self._encoder, self._prompt = encoder, prompt
        params = inspect.signature(encoder.encode).parameters
        self._takes_prompt = "prompt" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())

    def encode(self, sentences: list[str], batch_size: int = 32):
        if self._takes_prompt:
            return self._encoder.encode(sentences, batch_size=batch_size, prompt=self._prompt)
        return self._encoder.encode([self._prompt + s for s in sentences], batch_size=batch_size)

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)


def _with_prompt(encoder: Encoder, prompt: str | None) -> Encoder:
    return encoder if prompt is None else _Prompted(encoder, prompt)


class _PromptedIREvaluator(InformationRetrievalEvaluator):
    """InformationRetrievalEvaluator that encodes queries with ``query_prompt`` and the corpus with
    ``corpus_prompt`` (sentence-transformers' arguments of the same names)."""

    def __init__(self, *args, query_prompt: str | None = None, corpus_prompt: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.query_prompt, self.corpus_prompt = query_prompt, corpus_prompt
        self._corpus_encoder: Encoder | None = None

    def _corpus_chunks(self, encoder: Encoder) -> Iterator[np.ndarray]:
        return super()._corpus_chunks(self._corpus_encoder if self._corpus_encoder is not None else encoder)

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        self._corpus_encoder = _with_prompt(encoder, self.corpus_prompt)
        try:
            return super().__call__(_with_prompt(encoder, self.query_prompt))
        finally:
            self._corpus_encoder = None


# ----------------------------------------------------------------------------------------------- evaluator

class NanoBEIREvaluator(Evaluator):
    """sentence-transformers' NanoBEIREvaluator on a local copy of the data (see the module docstring).

    Args:
        dataset_names: short names (case-insensitive) among DATASET_NAME_TO_HUMAN_READABLE; None: all 13.
        dataset_id: the hub dataset the local copy is of (also its sub-directory of ``data_dir``, if there).
        data_dir: the local copy; default ``$JAXSBERT_NANOBEIR_DIR``.
        mrr_at_k, ndcg_at_k, accuracy_at_k, precision_recall_at_k, map_at_k, score_functions,
            main_score_function, truncate_dim, batch_size: each dataset's InformationRetrievalEvaluator's.
        aggregate_fn: combines a metric's per-dataset values (np.mean); ``aggregate_key`` names it ("mean").
        query_prompts / corpus_prompts: a prompt for every dataset, or {dataset name as given: prompt} with
            every dataset in it.
    """

    def __init__(self, dataset_names: Sequence[str] | None = None, dataset_id: str = DEFAULT_DATASET_ID,
                 mrr_at_k: Sequence[int] = DEFAULT_MRR_AT_K, ndcg_at_k: Sequence[int] = DEFAULT_NDCG_AT_K,
                 accuracy_at_k: Sequence[int] = DEFAULT_ACCURACY_AT_K,
                 precision_recall_at_k: Sequence[int] = DEFAULT_PRECISION_RECALL_AT_K,
                 map_at_k: Sequence[int] = DEFAULT_MAP_AT_K, batch_size: int = 32, truncate_dim: int | None = None,
                 score_functions: ScoreFunctions | None = None, main_score_function: str | None = None,
                 aggregate_fn: Callable[[list[float]], float] = np.mean, aggregate_key: str = "mean",
                 query_prompts: str | Mapping[str, str] | None = None,
                 corpus_prompts: str | Mapping[str, str] | None = None,
                 data_dir: str | os.PathLike | None = None):
        name = f"NanoBEIR_{aggregate_key}" + (f"_{truncate_dim}" if truncate_dim else "")
        super().__init__(name=name, batch_size=batch_size, truncate_dim=truncate_dim)
        dataset_names = list(DATASET_NAME_TO_HUMAN_READABLE) if dataset_names is None else list(dataset_names)
        if not dataset_names:
            raise ValueError("dataset_names cannot be empty; use None to evaluate on all datasets")
        unknown = [d for d in dataset_names if str(d).lower() not in DATASET_NAME_TO_HUMAN_READABLE]
        if unknown:
            raise ValueError(f"Dataset(s) {unknown} are not valid NanoBEIR datasets; valid names: "
                             f"{list(DATASET_NAME_TO_HUMAN_READABLE)}")
        if main_score_function is not None and main_score_function not in SIMILARITY_FUNCTIONS:
            raise ValueError(f"main_score_function {main_score_function!r} is not in {list(SIMILARITY_FUNCTIONS)}")
        self.dataset_names = dataset_names
        self.dataset_id = dataset_id
        self.aggregate_fn, self.aggregate_key = aggregate_fn, aggregate_key
        self.ndcg_at_k = list(ndcg_at_k)
        self.main_score_function = main_score_function
        self.score_functions = score_functions
        self.query_prompts = self._prompts(query_prompts, "query")
        self.corpus_prompts = self._prompts(corpus_prompts, "corpus")
        root = _dataset_root(data_dir, dataset_id)
        self.data_dir = root
        ir_kwargs = dict(mrr_at_k=mrr_at_k, ndcg_at_k=ndcg_at_k, accuracy_at_k=accuracy_at_k,
                         precision_recall_at_k=precision_recall_at_k, map_at_k=map_at_k, batch_size=batch_size,
                         truncate_dim=truncate_dim, score_functions=score_functions,
                         main_score_function=main_score_function)
        self.evaluators = []
        for dataset in dataset_names:
            queries, corpus, relevant = load_nanobeir_dataset(root, dataset)
            sub_name = f"Nano{DATASET_NAME_TO_HUMAN_READABLE[dataset.lower()]}"
            if truncate_dim is not None:
                sub_name += f"_{truncate_dim}"
            self.evaluators.append(_PromptedIREvaluator(
                queries, corpus, relevant, name=sub_name,
                query_prompt=(self.query_prompts or {}).get(dataset),
                corpus_prompt=(self.corpus_prompts or {}).get(dataset), **ir_kwargs))
        self._chosen_primary: tuple[tuple[str, ...], str] | None = None   # (score fn names, unprefixed key)
        if main_score_function is not None:
            self.primary_metric = self.prefixed(self._ndcg_key(main_score_function))

    def _prompts(self, prompts: str | Mapping[str, str] | None, what: str) -> dict[str, str] | None:
        if prompts is None:
            return None
        if isinstance(prompts, str):
            return {d: prompts for d in self.dataset_names}
        missing = [d for d in self.dataset_names if d not in prompts]
        if missing:
            raise ValueError(f"The following datasets are missing {what} prompts: {missing}")
        return dict(prompts)

    def _ndcg_key(self, fn: str) -> str:
        return f"{fn}_ndcg@{max(self.ndcg_at_k)}"

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        if self.score_functions is not None:
            names = tuple(sorted(resolve_score_functions(self.score_functions)))
        else:
            names = (getattr(encoder, "similarity_fn_name", None) or "cosine",)
        per_dataset: dict[str, float] = {}
        per_metric: dict[str, list[float]] = {}
        for evaluator in self.evaluators:
            for key, value in evaluator(encoder).items():
                per_dataset[key] = value
                per_metric.setdefault(key.removeprefix(f"{evaluator.name}_"), []).append(value)
        aggregated = {metric: float(self.aggregate_fn(values)) for metric, values in per_metric.items()}
        if self.main_score_function is not None:
            primary = self._ndcg_key(self.main_score_function)
        elif self._chosen_primary is not None and self._chosen_primary[0] == names:
            primary = self._chosen_primary[1]
        else:
            primary = self._ndcg_key(max(names, key=lambda fn: aggregated[self._ndcg_key(fn)]))
            self._chosen_primary = (names, primary)
        return {**per_dataset, **self._finish(aggregated, primary)}
