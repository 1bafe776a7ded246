"""Datasets as Hugging Face ``datasets.Dataset``: named readers (STS benchmark, SICK, the shipped demo),
local files by extension, and hub names (when online).

A *spec* is a string (a name, a file path or a hub id) or a dict ``{"source": ..., "split": ..., ...}``;
see :func:`load_dataset` for the keys. The returned dataset's ``info.description`` records where it came
from (``dataset_source``), so validation errors can name the file.
"""
from __future__ import annotations

import csv
import os
import pathlib
from typing import Any, Callable, Mapping

import datasets

PathLike = str | os.PathLike

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_DEMO_DIR = pathlib.Path(__file__).resolve().parent / "demo"

# file extension -> (datasets builder, builder kwargs). TSV: no quoting, so a stray quote cannot swallow lines.
_FILE_BUILDERS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}

_SPEC_KEYS = ("source", "split", "data_root", "score_divisor", "task", "subset", "min_score", "columns", "rename",
              "limit")

# SICK entailment labels, in the order of sentence-transformers' NLI examples.
NLI_LABELS = ("entailment", "neutral", "contradiction")


def default_data_root() -> pathlib.Path:
    """``$JAXSBERT_DATA_ROOT``, else ``shared/data`` next to the repository."""
    env = os.environ.get("JAXSBERT_DATA_ROOT") or os.environ.get("JAXSBERT_SHARED_DATA")
    return pathlib.Path(env) if env else _REPO_ROOT.parent / "shared" / "data"


def demo_path(split: str = "train") -> pathlib.Path:
    """Path of the shipped demo pairs (``train`` or ``dev``): jsonl with sentence1, sentence2, score in [0, 1]."""
    split = {"validation": "dev", "eval": "dev"}.get(split, split)
    path = _DEMO_DIR / f"pairs_{split}.jsonl"
    if not path.is_file():
        known = sorted(p.stem[len("pairs_"):] for p in _DEMO_DIR.glob("pairs_*.jsonl"))
        raise ValueError(f"demo dataset has no split {split!r}; splits: {known}")
    return path


def dataset_source(dataset: datasets.Dataset) -> str:
    """Where ``dataset`` came from (as recorded by :func:`load_dataset`), else its cache file, else 'in-memory dataset'."""
    description = getattr(dataset.info, "description", "") or ""
    if description.startswith("jaxsbert source: "):
        return description[len("jaxsbert source: "):]
    files = [f["filename"] for f in (dataset.cache_files or [])]
    return files[0] if files else "in-memory dataset"


def _tag(dataset: datasets.Dataset, source: str) -> datasets.Dataset:
    dataset.info.description = f"jaxsbert source: {source}"
    return dataset


def _root(data_root: PathLike | None) -> pathlib.Path:
    return pathlib.Path(data_root) if data_root is not None else default_data_root()


# --------------------------------------------------------------------------- STS benchmark

_STSB_SPLITS = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}


def read_stsb(split: str = "train", data_root: PathLike | None = None, score_divisor: float = 5.0) -> datasets.Dataset:
    """STS benchmark ``sts-{split}.csv`` -> columns sentence1, sentence2, score (= raw 0-5 score / divisor).

    The file is tab-separated without a header (genre, file, year, id, score, sentence1, sentence2, and on
    some rows extra source columns). It is read line by line, split on tabs, with no quote handling.
    """
    if split not in _STSB_SPLITS:
        raise ValueError(f"STS benchmark has no split {split!r}; splits: train, dev, test")
    path = _root(data_root) / "stsbenchmark" / f"sts-{_STSB_SPLITS[split]}.csv"
    s1, s2, scores = [], [], []
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            try:
                if len(cols) < 7:
                    raise ValueError(f"{len(cols)} tab-separated fields, expected at least 7")
                score = float(cols[4])
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: {e}") from None
            s1.append(cols[5])
            s2.append(cols[6])
            scores.append(score / score_divisor)
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "score": datasets.Value("float64")})
    ds = datasets.Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores}, features=features)
    return _tag(ds, str(path))


# --------------------------------------------------------------------------- SICK

_SICK_SPLITS = {"train": "TRAIN", "trial": "TRIAL", "dev": "TRIAL", "validation": "TRIAL", "test": "TEST"}


def read_sick(split: str = "train", data_root: PathLike | None = None, task: str = "nli",
              score_divisor: float = 5.0) -> datasets.Dataset:
    """SICK ``SICK.txt`` rows of one SemEval_set (train / trial (= dev) / test).

    ``task="nli"``: premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction).
    ``task="relatedness"``: sentence1, sentence2, score (= relatedness 1-5 / divisor).
    """
    wanted = _SICK_SPLITS.get(split.lower()) if isinstance(split, str) else None
    if wanted is None:
        raise ValueError(f"SICK has no split {split!r}; splits: train, trial (dev), test")
    if task not in ("nli", "relatedness"):
        raise ValueError(f"SICK task must be 'nli' or 'relatedness', got {task!r}")
    path = _root(data_root) / "sick" / "SICK.txt"
    a, b, labels, scores = [], [], [], []
    label_ids = {name.upper(): i for i, name in enumerate(NLI_LABELS)}
    with open(path, encoding="utf8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        need = ("sentence_A", "sentence_B", "entailment_label", "relatedness_score", "SemEval_set")
        missing = [c for c in need if c not in header]
        if missing:
            raise ValueError(f"{path}: header lacks columns {missing}")
        col = {name: header.index(name) for name in need}
        for line_no, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < len(header):
                raise ValueError(f"{path}:{line_no}: {len(cols)} tab-separated fields, expected {len(header)}")
            if cols[col["SemEval_set"]].strip() != wanted:
                continue
            a.append(cols[col["sentence_A"]])
            b.append(cols[col["sentence_B"]])
            try:
                if task == "nli":
                    labels.append(label_ids[cols[col["entailment_label"]].strip().upper()])
                else:
                    scores.append(float(cols[col["relatedness_score"]]) / score_divisor)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}:{line_no}: bad value {e}") from None
    if task == "nli":
        features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=list(NLI_LABELS))})
        ds = datasets.Dataset.from_dict({"premise": a, "hypothesis": b, "label": labels}, features=features)
    else:
        features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                      "score": datasets.Value("float64")})
        ds = datasets.Dataset.from_dict({"sentence1": a, "sentence2": b, "score": scores}, features=features)
    return _tag(ds, f"{path} [{wanted}, {task}]")


# --------------------------------------------------------------------------- files, demo, hub

def read_file(path: PathLike) -> datasets.Dataset:
    """A local csv / tsv / json / jsonl / parquet file (or a glob of them), chosen by extension."""
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FILE_BUILDERS:
        raise ValueError(f"{path}: unknown file type {ext!r}; supported: {sorted(_FILE_BUILDERS)}")
    builder, kwargs = _FILE_BUILDERS[ext]
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"{path}: the dataset file is empty")
    try:
        ds = datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
    except ValueError as e:
        if "corresponds to no data" in str(e):        # a file with a header and no rows
            raise ValueError(f"{path}: the dataset file has no rows") from None
        raise
    return _tag(ds, path)


def read_demo(split: str = "train") -> datasets.Dataset:
    """The shipped demo pairs (sentence1, sentence2, score in [0, 1])."""
    return read_file(demo_path(split))


def read_hub(name: str, split: str = "train", subset: str | None = None) -> datasets.Dataset:
    """A Hugging Face hub dataset (needs network, or a local datasets cache)."""
    ds = datasets.load_dataset(name, subset, split=split)
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(f"hub dataset {name!r} split {split!r} did not give a single Dataset ({type(ds).__name__})")
    return _tag(ds, f"hub:{name}" + (f"/{subset}" if subset else "") + f" [{split}]")


def _named_readers() -> dict[str, Callable[..., datasets.Dataset]]:
    return {
        "stsb": lambda o: read_stsb(o.get("split", "train"), o.get("data_root"), o.get("score_divisor", 5.0)),
        "sick": lambda o: read_sick(o.get("split", "train"), o.get("data_root"), o.get("task", "nli"),
                                    o.get("score_divisor", 5.0)),
        "sick-nli": lambda o: read_sick(o.get("split", "train"), o.get("data_root"), "nli"),
        "sick-relatedness": lambda o: read_sick(o.get("split", "train"), o.get("data_root"), "relatedness",
                                                o.get("score_divisor", 5.0)),
        "demo": lambda o: read_demo(o.get("split", "train")),
    }


NAMED_DATASETS = ("stsb", "sick", "sick-nli", "sick-relatedness", "demo")


def _looks_like_file(source: str) -> bool:
    return os.path.splitext(source)[1].lower() in _FILE_BUILDERS


def _at_least(ds: datasets.Dataset, min_score: float, source: str) -> datasets.Dataset:
    """The rows whose label column is >= ``min_score``, keeping the dataset's recorded source."""
    from jaxsbert.data.columns import split_columns

    label = split_columns(ds).label
    if label is None:
        raise ValueError(f"{source}: min_score={min_score} needs a label / score column; columns: {ds.column_names}")
    import numpy as np

    scores = np.asarray(ds.with_format("numpy")[label], np.float64)
    kept = ds.select(np.flatnonzero(scores >= min_score))
    kept.info.description = ds.info.description
    return kept


def load_dataset(spec: str | Mapping[str, Any] | datasets.Dataset, *, split: str | None = None,
                 data_root: PathLike | None = None) -> datasets.Dataset:
    """Loads one dataset.

    ``spec`` is a ``datasets.Dataset`` (returned as is), a string (same as ``{"source": string}``) or a dict:

    - ``source``: a named dataset (``stsb``, ``sick``, ``sick-nli``, ``sick-relatedness``, ``demo``), a local
      ``.csv/.tsv/.json/.jsonl/.parquet`` file (relative paths are tried in the working directory, then in
      ``data_root``), or a hub id.
    - ``split``: train (default) / dev / test (SICK: trial = dev); for hub datasets any split name.
    - ``data_root``: directory holding ``stsbenchmark/`` and ``sick/`` (default :func:`default_data_root`).
    - ``score_divisor``: STSb / SICK relatedness scores are divided by it (default 5).
    - ``task``: SICK only, ``nli`` (premise, hypothesis, label) or ``relatedness`` (sentence1, sentence2, score).
    - ``subset``: hub config name.
    - ``min_score``: keep only the rows whose label / score column is at least this (after ``score_divisor``;
      e.g. the highly similar STSb pairs for in-batch-negatives training or retrieval evaluation).
    - ``rename``: ``{old: new}`` column renames; ``columns``: the columns to keep, in this order (after renaming).
    - ``limit``: keep only the first ``limit`` rows.

    The keyword arguments ``split`` and ``data_root`` fill in what the spec does not set.
    """
    if isinstance(spec, datasets.Dataset):
        return spec
    options = {"source": spec} if isinstance(spec, (str, os.PathLike)) else dict(spec)
    unknown = sorted(set(options) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"dataset spec has unknown keys {unknown}; known keys: {list(_SPEC_KEYS)}")
    if "source" not in options:
        raise ValueError(f"dataset spec {dict(options)} has no 'source'")
    if split is not None:
        options.setdefault("split", split)
    if data_root is not None:
        options.setdefault("data_root", data_root)
    source = str(options["source"])

    readers = _named_readers()
    if source.lower() in readers:
        ds = readers[source.lower()](options)
    elif _looks_like_file(source) or os.path.exists(source):
        path = source
        if not os.path.exists(path) and options.get("data_root") is not None and not os.path.isabs(path):
            path = os.path.join(str(options["data_root"]), source)
        if not os.path.exists(path) and not any(ch in path for ch in "*?["):
            raise FileNotFoundError(f"dataset file {source!r} not found")
        ds = read_file(path)
    else:
        ds = read_hub(source, options.get("split", "train"), options.get("subset"))
    return _postprocess(ds, options)


def _postprocess(ds: datasets.Dataset, options: Mapping[str, Any]) -> datasets.Dataset:
    source = dataset_source(ds)
    if options.get("min_score") is not None:
        ds = _at_least(ds, float(options["min_score"]), source)
    if options.get("rename"):
        missing = [c for c in options["rename"] if c not in ds.column_names]
        if missing:
            raise ValueError(f"{source}: cannot rename missing column(s) {missing}; columns: {ds.column_names}")
        ds = ds.rename_columns(dict(options["rename"]))
    if options.get("columns") is not None:
        from jaxsbert.data.columns import select_columns

        ds = select_columns(ds, options["columns"])
    if options.get("limit") is not None:
        ds = ds.select(range(min(int(options["limit"]), len(ds))))
    return _tag(ds, source)
