"""Datasets as Hugging Face ``datasets.Dataset``: named readers (STS benchmark, SICK, the shipped demo),
local files by extension, and hub names (when online).

A *spec* is a string (a name, a file path or a hub id) or a dict ``{"source": ..., "split": ..., ...}``;
see :func:`load_dataset` for the keys. The returned dataset's ``info.description`` records where it came
from (``dataset_source``), so validation errors can name the file.
"""
from __future__ import annotations

import contextlib
import csv
import difflib
import glob
import json
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
              "limit", "noise", "prompts")

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

def json_error(e: json.JSONDecodeError) -> str:
    """``not valid JSON (Expecting ',' delimiter: column 12)``: a JSON error without json's own line number
    (the caller names the file's line)."""
    return f"not valid JSON ({e.msg}: column {e.colno})"


def _first_bad_line(path: str, ext: str) -> str | None:
    """``FILE:LINE: what is wrong`` for the first line of a json / jsonl / csv / tsv file that does not parse
    (or has a wrong number of fields), else None. Used to explain a file ``datasets`` failed to read."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip()
    if ext == ".json" and head[:1] == b"[":          # one JSON document, not JSON lines
        try:
            with open(path, encoding="utf8") as f:
                json.load(f)
        except json.JSONDecodeError as e:
            return f"{path}:{e.lineno}: {json_error(e)}"
        except UnicodeDecodeError as e:
            return f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"
        return None
    if ext in (".json", ".jsonl"):
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw.decode("utf8"))
                except UnicodeDecodeError as e:
                    return f"{path}:{number}: not UTF-8 text ({e.reason})"
                except json.JSONDecodeError as e:
                    return f"{path}:{number}: {json_error(e)}"
                if not isinstance(value, dict):
                    return (f"{path}:{number}: a JSON {type(value).__name__}, expected an object with the columns "
                            f"as keys (one row per line)")
        return None
    try:
        with open(path, encoding="utf8", newline="") as f:
            if ext == ".tsv":
                rows = ((n, line.rstrip("\r\n").split("\t")) for n, line in enumerate(f, 1) if line.strip())
            else:
                reader = csv.reader(f)
                rows = ((reader.line_num, row) for row in reader if row)
            header = None
            for number, row in rows:
                if header is None:
                    header = row
                elif len(row) != len(header):
                    return f"{path}:{number}: expected {len(header)} fields (as the header), got {len(row)}"
    except UnicodeDecodeError as e:
        return f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"
    except csv.Error as e:
        return f"{path}:{reader.line_num}: not valid csv ({e})"
    return None


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


@contextlib.contextmanager
def _quiet_datasets():
    """No progress bars and no error logs from ``datasets`` (read errors are raised as one line instead), nor
    the hub client's retry warnings."""
    from huggingface_hub.utils import logging as hub_logging

    verbosity, hub_verbosity = datasets.logging.get_verbosity(), hub_logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 10)
    hub_logging.set_verbosity(datasets.logging.CRITICAL + 10)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        if bars:
            datasets.enable_progress_bars()


def read_file(path: PathLike) -> datasets.Dataset:
    """A local csv / tsv / json / jsonl / parquet file (or a glob of them), chosen by extension.

    A file that does not parse is a ValueError naming the file and line (``FILE:LINE: not valid JSON
    (...)``, ``FILE:LINE: expected 3 fields (as the header), got 4``)."""
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FILE_BUILDERS:
        raise ValueError(f"{path}: unknown file type {ext!r}; supported: {sorted(_FILE_BUILDERS)}")
    builder, kwargs = _FILE_BUILDERS[ext]
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"{path}: the dataset file is empty")
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
    except ValueError as e:
        if "corresponds to no data" in str(e):        # a file with a header and no rows
            raise ValueError(f"{path}: the dataset file has no rows") from None
        raise _unreadable(path, ext, e) from e
    except datasets.exceptions.DatasetsError as e:      # DatasetGenerationError: a line that does not parse
        raise _unreadable(path, ext, e) from e
    if builder == "csv" and any(ds.data.column(c).null_count for c in ds.column_names):
        # pandas fills a row with too few fields with nulls: name its line (an empty field is not an error)
        found = next(filter(None, (_first_bad_line(f, ext) for f in _matching(path))), None)
        if found:
            raise ValueError(found)
    return _tag(ds, path)


def _matching(path: str) -> list[str]:
    """The files of a path or a glob pattern."""
    return sorted(glob.glob(path)) if any(ch in path for ch in "*?[") else [path]


def _unreadable(path: str, ext: str, error: BaseException) -> ValueError:
    """The ValueError for a file ``datasets`` could not read: its first bad line, else the root cause."""
    if ext != ".parquet":
        found = next(filter(None, (_first_bad_line(f, ext) for f in _matching(path))), None)
        if found:
            return ValueError(found)
    cause = _root_cause(error)
    text = " ".join(str(cause).split())
    return ValueError(f"{path}: cannot be read as a {ext[1:]} dataset ({type(cause).__name__}: {text:.300})")


def read_demo(split: str = "train") -> datasets.Dataset:
    """The shipped demo pairs (sentence1, sentence2, score in [0, 1])."""
    return read_file(demo_path(split))


def read_hub(name: str, split: str = "train", subset: str | None = None) -> datasets.Dataset:
    """A Hugging Face hub dataset (needs network, or a local datasets cache). A hub that cannot be reached,
    or has no such dataset, is a FileNotFoundError of one line."""
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset(name, subset, split=split)
    except (OSError, datasets.exceptions.DatasetsError) as e:       # ConnectionError, DatasetNotFoundError, ...
        text = " ".join(str(e).split())
        raise FileNotFoundError(f"dataset {name!r}: not a local file or a named dataset "
                                f"({', '.join(NAMED_DATASETS)}), and the hub could not give it "
                                f"({type(e).__name__}: {text:.300})") from e
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
HUB_PREFIX = "hub:"      # "hub:NAME": a hub dataset whose id has no owner part (otherwise taken for a typo)


def _looks_like_file(source: str) -> bool:
    return os.path.splitext(source)[1].lower() in _FILE_BUILDERS


def resolve_source(options: Mapping[str, Any]) -> tuple[str, str]:
    """How a spec's ``source`` is read: ``("named", name)``, ``("file", path)`` or ``("hub", id)``.

    A file-like source that does not exist is a FileNotFoundError; a source that is neither a file, a
    named dataset nor a hub id (``owner/name``, or ``hub:name``) is a ValueError suggesting the nearest
    named dataset. Reads nothing."""
    source = str(options["source"])
    if source.lower() in _named_readers():
        return "named", source.lower()
    if source.startswith(HUB_PREFIX):
        return "hub", source[len(HUB_PREFIX):]
    root = options.get("data_root")
    if _looks_like_file(source) or os.path.exists(source):
        exists = glob.glob if any(ch in source for ch in "*?[") else os.path.exists
        path = source
        if not exists(path) and root is not None and not os.path.isabs(path):
            path = os.path.join(str(root), source)
        if exists is glob.glob and not glob.glob(path):
            raise FileNotFoundError(f"dataset file pattern {source!r} matches no file")
        if not exists(path):
            tried = "" if root is None or os.path.isabs(source) else f" (nor in data_root {str(root)!r})"
            raise FileNotFoundError(f"dataset file {source!r} not found{tried}")
        return "file", path
    if "/" not in source:
        close = difflib.get_close_matches(source.lower(), NAMED_DATASETS, n=1, cutoff=0.5)
        hint = (f"; did you mean {close[0]!r}?" if close
                else f" (for a hub dataset without an owner write '{HUB_PREFIX}{source}')")
        raise ValueError(f"dataset {source!r}: not a file and not a named dataset ({', '.join(NAMED_DATASETS)})"
                         f"{hint}")
    return "hub", source


def check_spec(spec: str | Mapping[str, Any], data_root: PathLike | None = None) -> None:
    """The checks :func:`load_dataset` makes before reading anything (spec keys, the source exists or is a
    named dataset or a hub id, ``task`` only for SICK), for a spec or one whose source is a list of files."""
    options = _options(spec, None, data_root)
    sources = options["source"] if isinstance(options["source"], (list, tuple)) else [options["source"]]
    for source in sources:
        kind, name = resolve_source({**options, "source": source})
        if options.get("task") is not None and not (kind == "named" and name.startswith("sick")):
            raise ValueError(f"dataset {str(source)!r}: 'task' is for SICK only (nli or relatedness)")


def _options(spec: str | Mapping[str, Any], split: str | None, data_root: PathLike | None) -> dict:
    options = {"source": spec} if isinstance(spec, (str, os.PathLike, list, tuple)) else dict(spec)
    unknown = sorted(set(options) - set(_SPEC_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _SPEC_KEYS, n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]!r}? " if close else "") + f"(known keys: {list(_SPEC_KEYS)})"
        raise ValueError(f"dataset spec has unknown keys {unknown}; {hint}")
    if "source" not in options:
        raise ValueError(f"dataset spec {dict(options)} has no 'source'")
    if split is not None:
        options.setdefault("split", split)
    if data_root is not None:
        options.setdefault("data_root", data_root)
    return options


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
      ``data_root``), or a hub id (``owner/name``; ``hub:name`` for one without an owner). A name that is
      none of these is an error suggesting the nearest named dataset.
    - ``split``: train (default) / dev / test (SICK: trial = dev); for hub datasets any split name.
    - ``data_root``: directory holding ``stsbenchmark/`` and ``sick/`` (default :func:`default_data_root`).
    - ``score_divisor``: STSb / SICK relatedness scores are divided by it (default 5).
    - ``task``: SICK only (an error elsewhere), ``nli`` (premise, hypothesis, label, the default) or
      ``relatedness`` (sentence1, sentence2, score).
    - ``subset``: hub config name.
    - ``min_score``: keep only the rows whose label / score column is at least this (after ``score_divisor``;
      e.g. the highly similar STSb pairs for in-batch-negatives training or retrieval evaluation).
    - ``rename``: ``{old: new}`` column renames; ``columns``: the columns to keep, in this order (after renaming).
    - ``limit``: keep only the first ``limit`` rows.
    - ``noise``: ``True`` or ``{"del_ratio": 0.6, "seed": 0}``: the one text column becomes TSDAE's (damaged,
      original) pair, words deleted as sentence-transformers' ``DenoisingAutoEncoderDataset``
      (:func:`jaxsbert.data.noise.add_noise`; the damage is fixed by the seed).
    - ``prompts``: a string put before the texts of every input column, or ``{column: prompt}`` for some of them
      (:func:`add_prompts`; sentence-transformers' ``prompts`` training argument, e.g. a Qwen3-Embedding query
      instruction ``{"anchor": "Instruct: ...\\nQuery:"}``); applied last. Local line files with prompts are
      read into memory rather than streamed.

    The keyword arguments ``split`` and ``data_root`` fill in what the spec does not set.
    """
    if isinstance(spec, datasets.Dataset):
        return spec
    options = _options(spec, split, data_root)
    if isinstance(options["source"], (list, tuple)):
        raise ValueError(f"dataset source {options['source']}: a list of files is read only as training data "
                         f"(jsonl / csv / tsv files)")
    check_spec(options)
    kind, name = resolve_source(options)
    if kind == "named":
        ds = _named_readers()[name](options)
    elif kind == "file":
        ds = read_file(name)
    else:
        ds = read_hub(name, options.get("split", "train"), options.get("subset"))
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
    if options.get("noise"):      # TSDAE: (damaged, original) from the one text column
        from jaxsbert.data.noise import add_noise

        noise = options["noise"] if isinstance(options["noise"], Mapping) else {}
        unknown = sorted(set(noise) - {"del_ratio", "seed"})
        if unknown:
            raise ValueError(f"{source}: 'noise' takes del_ratio and seed; got {unknown}")
        ds = add_noise(ds, **noise)
    if options.get("prompts"):
        ds = add_prompts(ds, options["prompts"], source)
    return _tag(ds, source)


def add_prompts(ds: datasets.Dataset, prompts: str | Mapping[str, str], source: str = "dataset") -> datasets.Dataset:
    """``ds`` with each prompt put before the texts of its input column, as sentence-transformers' trainer does
    with its ``prompts`` argument: one string for every input column (not the label), or ``{column: prompt}``.
    Prompt tokens are pooled with the rest (a Pooling ``include_prompt=False`` does not leave them out here)."""
    from jaxsbert.data.columns import split_columns

    inputs = list(split_columns(ds).inputs)
    if isinstance(prompts, str):
        prompts = {c: prompts for c in inputs}
    if not isinstance(prompts, Mapping) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"{source}: 'prompts' must be a string or {{column: prompt string}}, got {prompts!r:.80}")
    unknown = [c for c in prompts if c not in inputs]
    if unknown:
        raise ValueError(f"{source}: 'prompts' names column(s) {unknown} that are not input columns; input "
                         f"columns: {inputs}")
    prompts = {c: p for c, p in prompts.items() if p}
    if not prompts:
        return ds
    return ds.map(lambda row: {c: p + row[c] for c, p in prompts.items()}, desc="adding prompts")
