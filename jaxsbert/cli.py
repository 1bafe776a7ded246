"""Command line: ``jaxsbert train | eval | encode | mine | export | plot``.

A user error (a bad config, data file, model path, ...) is one line ``error: ...`` on stderr naming the
problem and where (file:line, column, row, config key), with exit status 2, before anything compiles;
``--debug`` shows the traceback instead. Anything else (a bug) is also one line, with exit status 1.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys

USER_ERROR_STATUS = 2      # as argparse's usage errors
INTERNAL_ERROR_STATUS = 1


class ErrorExit(SystemExit):
    """Exits with ``code`` (2: a user error, 1: an internal one) after its one-line message was printed on
    stderr; ``str()`` is that message."""

    def __init__(self, message: str, code: int = USER_ERROR_STATUS):
        super().__init__(message)
        self.code = code


def _read_sentences(path: str, field: str | None) -> list[str]:
    from jaxsbert.data.loading import json_error

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: file not found (--input)")
    sentences = []
    with open(path, encoding="utf8") as f:
        if path.endswith(".jsonl"):
            for row, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{row}: {json_error(e)}") from None
                if isinstance(item, dict):
                    key = field or next((k for k in ("text", "sentence", "sentence1") if k in item), None)
                    if key is None or key not in item:
                        raise ValueError(f"{path}:{row}: no field {field or 'text'!r} (fields: {sorted(item)}); "
                                         f"choose one with --field")
                    item = item[key]
                if not isinstance(item, str):
                    raise ValueError(f"{path}:{row}: expected a string, got {type(item).__name__}")
                sentences.append(item)
        else:
            sentences = [line.rstrip("\n") for line in f]
    return sentences


def _model_path(name: str) -> str:
    """The model directory for ``--model`` / config ``model``: a local directory, a bundled model, or a hub id
    (fetched, or found in the local hub cache). Anything else is one FileNotFoundError line."""
    from jaxsbert.interop.st_dir import resolve

    return resolve(name)


def _load_encoder(name: str, compute_dtype: str = "float32"):
    from jaxsbert.encoder import SentenceEncoder

    return SentenceEncoder.from_pretrained(_model_path(name), dtype=compute_dtype)


def cmd_encode(args) -> None:
    import numpy as np

    sentences = _read_sentences(args.input, args.field)
    encoder = _load_encoder(args.model, args.compute_dtype)
    emb = encoder.encode(sentences, batch_size=args.batch_size,
                         normalize_embeddings=True if args.normalize else None, show_progress_bar=True)
    np.save(args.output, emb)
    print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {args.output}")


CHECK_ROWS = 4096      # rows of a jsonl / csv / tsv training dataset read by check_config (~20 ms)


def _check_first_rows(spec, data_root) -> None:
    """Reads the first :data:`CHECK_ROWS` rows of a training dataset made of local jsonl / csv / tsv files
    (a bad one is a BadRowError naming its file and line): the common small-file mistakes are reported before
    the model loads. Other rows are checked as the loader reads them, as before."""
    import numpy as np

    from jaxsbert.data.sources import LineSource, is_line_source, open_source

    source = spec.get("source") if isinstance(spec, dict) else spec
    if not is_line_source(source) or (isinstance(spec, dict) and spec.get("min_score") is not None):
        return
    rows = open_source(spec, data_root=data_root)
    try:
        if isinstance(rows, LineSource):
            rows.read(np.arange(min(len(rows), CHECK_ROWS)))
    finally:
        for file in getattr(rows, "files", []):
            os.close(file._fd)            # the loader opens its own


def check_config(config: dict) -> None:
    """The checks of a training config made before the model loads (and ``jaxsbert train`` creates its
    workdir): each dataset spec names an existing file, a named dataset or a hub id; the first rows of local
    jsonl / csv / tsv training files parse (:func:`_check_first_rows`); each loss name and its arguments;
    each evaluator's type and keys, and its local data file parses; the model path. A ConfigError (or
    FileNotFoundError) naming the config key. ``prepare`` in jaxsbert.training.loop checks the rest."""
    from jaxsbert.config import ConfigError
    from jaxsbert.data.loading import check_spec, load_dataset, resolve_source
    from jaxsbert.losses import get_loss
    from jaxsbert.training import evaluators

    data = config["data"]
    root = data.get("data_root")

    def at(key: str, check, *a) -> None:
        try:
            check(*a)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"config key {key!r}: {e}") from None
        except ValueError as e:
            raise ConfigError(f"config key {key!r}: {e}") from None

    for name, spec in (data.get("train") or {}).items():
        if not hasattr(spec, "column_names"):          # a datasets.Dataset needs no check
            at(f"data.train.{name}", check_spec, spec, root)
            if data.get("on_bad_row", "error") == "error":
                at(f"data.train.{name}", _check_first_rows, spec, root)
    loss = config["loss"]
    specs = {"loss": loss} if "name" in loss else {f"loss.{k}": v for k, v in loss.items() if isinstance(v, dict)}
    for key, spec in specs.items():
        spec = dict(spec)
        if "name" not in spec:
            raise ConfigError(f"config key {key!r}: a loss spec needs 'name' (e.g. 'MultipleNegativesRankingLoss')")
        at(f"{key}.name", lambda: get_loss(spec.pop("name"), **spec))
    for name, spec in (data.get("eval") or {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"config key 'data.eval.{name}': an evaluator spec is a dict, got {spec!r}")
        at(f"data.eval.{name}", evaluators.check_spec, name, spec, root)
        kind = spec.get("type", "similarity")
        if kind in evaluators.SINGLE_DATASET_TYPES:
            dataset = evaluators.dataset_spec(spec)
            if resolve_source({**dataset, "data_root": dataset.get("data_root", root)})[0] == "file":
                at(f"data.eval.{name}", lambda: load_dataset(dataset, data_root=root))     # the file parses
    at("model", _model_path, str(config["model"]))


def cmd_train(args) -> None:
    from jaxsbert.config import build_config

    config = build_config(args.config, args.override)
    check_config(config)
    from jaxsbert.training.loop import train

    result = train(config, args.workdir, resume=args.resume)
    print(json.dumps({k: v for k, v in result.items() if k != "state"}, indent=2, default=str))
    if result.get("stopped"):
        import shlex
        import signal

        command = ["jaxsbert", "train", args.config, "--workdir", args.workdir]
        for item in args.override:
            command += ["-o", item]
        reason = f"stopped by {result['signal']}" if result.get("signal") else "stopped"
        print(f"{reason} at step {result['steps']}; a checkpoint is saved. Resume with:\n  "
              f"{shlex.join(command + ['--resume'])}", file=sys.stderr)
        if result.get("signal"):      # the conventional status of a run ended by a signal: 128 + its number
            raise SystemExit(128 + signal.Signals[result["signal"]].value)


def _dataset_spec(text: str, split: str | None = None, option: str = "--data") -> dict:
    if text.strip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{option}: not valid JSON ({e.msg}: column {e.colno}): {text!r:.80}") from None
    else:
        spec = {"source": text}
    if split:
        spec["split"] = split
    return spec


def cmd_eval(args) -> None:
    from jaxsbert.training.evaluators import build_evaluator

    spec = _dataset_spec(args.data, args.split)
    if args.task:
        spec["task"] = args.task
    evaluator = build_evaluator(args.name, spec, data_root=args.data_root)     # data errors before the model loads
    metrics = evaluator(_load_encoder(args.model, args.compute_dtype))
    print(json.dumps(metrics, indent=2))


def cmd_mine(args) -> None:

    from jaxsbert import data as jdata
    from jaxsbert.mining import mine_hard_negatives

    _check_output(args.output, args.overwrite, "mine")
    dataset = jdata.load_dataset(_dataset_spec(args.dataset, args.split, "--dataset"), data_root=args.data_root)
    for option, column in (("--anchor-column", args.anchor_column), ("--positive-column", args.positive_column)):
        if column is not None and column not in dataset.column_names:
            close = difflib.get_close_matches(column, dataset.column_names, n=1, cutoff=0.5)
            raise ValueError(f"{option} {column!r}: not a column of {jdata.dataset_source(dataset)} (columns: "
                             f"{dataset.column_names})" + (f"; did you mean {close[0]!r}?" if close else ""))
    corpus = None
    if args.corpus:
        extra = jdata.load_dataset(_dataset_spec(args.corpus, option="--corpus"), data_root=args.data_root)
        column = args.corpus_column or jdata.split_columns(extra).inputs[0]
        if column not in extra.column_names:
            raise ValueError(f"--corpus-column {column!r}: not a column of {jdata.dataset_source(extra)} "
                             f"(columns: {extra.column_names})")
        corpus = list(extra[column])
    encoder = _load_encoder(args.model)
    options = {k: getattr(args, k) for k in ("range_min", "range_max", "max_score", "min_score", "absolute_margin",
                                             "relative_margin", "num_negatives", "sampling_strategy",
                                             "include_positives", "output_format", "output_scores")}
    mined = mine_hard_negatives(dataset, encoder, args.anchor_column, args.positive_column, corpus,
                                batch_size=args.batch_size, seed=args.seed, **options)
    _write_dataset(mined, args.output)


def _check_output(path: str, overwrite: bool, command: str, csv: bool = True) -> None:
    """An output dataset file: .jsonl, .json, .parquet (or .csv), not replacing one without ``overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"jaxsbert {command}: {path} exists; pass --overwrite to replace it")
    if os.path.splitext(path)[1] not in (".jsonl", ".json", ".parquet") + ((".csv",) if csv else ()):
        raise ValueError(f"jaxsbert {command}: --output {path}: write .jsonl{', .csv' if csv else ''} or .parquet"
                         + ("" if csv else " (labels that are lists do not fit in a .csv)"))


def _write_dataset(dataset, path: str) -> None:
    """Writes a dataset jaxsbert train reads; an earlier file is replaced only by a complete one."""
    suffix = os.path.splitext(path)[1]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp" + suffix
    if suffix == ".csv":
        dataset.to_csv(tmp, index=False)
    elif suffix == ".parquet":
        dataset.to_parquet(tmp)
    else:
        dataset.to_json(tmp, lines=True, force_ascii=False)
    os.replace(tmp, path)
    print(f"wrote {len(dataset)} rows ({', '.join(dataset.column_names)}) to {path}")


def cmd_embed_labels(args) -> None:
    """Teacher labels for distillation (jaxsbert.distill): embeddings (MSELoss, EmbedDistillLoss) or scores /
    margins of (query, positive, negative ...) rows (DistillKLDivLoss, MarginMSELoss)."""
    import datasets

    from jaxsbert import data as jdata
    from jaxsbert.distill import embed_labels, score_labels

    _check_output(args.output, args.overwrite, "embed-labels", csv=False)
    loaded = [jdata.load_dataset(_dataset_spec(text, args.split, "--dataset"), data_root=args.data_root)
              for text in args.dataset]
    if args.sentences:        # every input text of every dataset, once, as one column
        texts = (t for ds in loaded for c in jdata.split_columns(ds).inputs for t in ds[c])
        dataset = datasets.Dataset.from_dict({"sentence": list(dict.fromkeys(texts))})
    elif len(loaded) == 1:
        dataset = loaded[0]
    else:
        raise ValueError("embed-labels: several --dataset need --sentences (their texts as one column)")
    teacher = _load_encoder(args.model)
    columns = args.columns.split(",") if args.columns else None
    if args.scores or args.margins:
        labelled = score_labels(dataset, teacher, columns, batch_size=args.batch_size, margins=args.margins)
    else:
        labelled = embed_labels(dataset, teacher, columns, batch_size=args.batch_size)
    _write_dataset(labelled, args.output)


def cmd_export(args) -> None:
    from jaxsbert.training.loop import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, step=args.step, overwrite=args.overwrite)
    print(f"exported to {path}")


def cmd_plot(args) -> None:
    from jaxsbert.training.metrics import plot

    if not os.path.isdir(args.workdir):
        raise SystemExit(f"error: {args.workdir}: no such directory (a jaxsbert train --workdir)")
    try:
        paths = plot(args.workdir, args.out)
    except FileNotFoundError as e:       # no metrics.jsonl: the message names it
        raise SystemExit(f"error: {e}")
    for path in paths:
        print(f"wrote {path}")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("jaxsbert")
    except metadata.PackageNotFoundError:      # run from a source tree that is not installed
        from jaxsbert import __version__
        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxsbert`` argument parser (every flag with its help)."""
    parser = argparse.ArgumentParser(prog="jaxsbert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jaxsbert {_version()}",
                        help="print jaxsbert's version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback instead of the one-line message")
    common = argparse.ArgumentParser(add_help=False)      # --debug after the subcommand too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the Python traceback instead of the one-line message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = ("a sentence-transformers or Hugging Face model directory, a bundled model "
                  "(sentence-transformers/all-MiniLM-L6-v2), or a hub id (online)")

    compute_dtype_help = ("the matmuls' dtype (default float32); bfloat16 keeps norms, softmax and pooling in "
                          "float32, and the embeddings are float32 either way")

    p = sub.add_parser("train", parents=[common], help="train a model from a config file")
    p.add_argument("config", help="config file (a .py defining get_config()), or the name of one in configs/ "
                                  "(e.g. quickstart)")
    p.add_argument("--workdir", required=True, help="directory for checkpoints, metrics and the final model")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key (dotted, a Python literal value), e.g. -o optim.lr=3e-5; repeatable")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[common], help="evaluate a model on a dataset")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--data", required=True,
                   help="a named dataset (stsb, sick, demo), a .csv/.tsv/.json/.jsonl/.parquet file, a hub id, or "
                        "a JSON evaluator spec ('{\"type\": \"binary\", \"source\": ...}'; default type: "
                        "similarity)")
    p.add_argument("--split", default=None, help="train, dev or test (named datasets; default train)")
    p.add_argument("--task", choices=["relatedness", "nli"], default=None,
                   help="SICK only: relatedness (float scores, for a similarity evaluator) or nli (class labels; "
                        "SICK's default)")
    p.add_argument("--name", default="eval", help="prefix of the metric names (default: eval)")
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default="float32", help=compute_dtype_help)
    p.add_argument("--data-root", default=None,
                   help="directory holding stsbenchmark/ and sick/ (default $JAXSBERT_DATA_ROOT or ../shared/data)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("encode", parents=[common], help="embed sentences into a .npy file")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--input", required=True, help=".txt (one sentence per line) or .jsonl")
    p.add_argument("--output", required=True, help=".npy file to write (float32, one row per sentence)")
    p.add_argument("--field", default=None, help="the .jsonl field holding the text (default: text, sentence "
                                                  "or sentence1)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default 32)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default="float32", help=compute_dtype_help)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("mine", parents=[common], help="add hard negatives to (anchor, positive) pairs "
                                                      "(sentence-transformers' util.mine_hard_negatives)")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--dataset", required=True, help="dataset name (stsb, sick, a file) or a JSON dataset spec")
    p.add_argument("--output", required=True, help=".jsonl (default), .csv or .parquet: a dataset jaxsbert train reads")
    p.add_argument("--split", default=None, help="the dataset's split (named datasets; default train)")
    p.add_argument("--data-root", default=None, help="directory holding stsbenchmark/ and sick/")
    p.add_argument("--corpus", default=None, help="more documents to mine from (a dataset: its first text column)")
    p.add_argument("--corpus-column", default=None, help="the --corpus column holding the documents")
    p.add_argument("--anchor-column", default=None, help="the anchor column (default: the first)")
    p.add_argument("--positive-column", default=None, help="the positive column (default: the second)")
    p.add_argument("--range-min", type=int, default=0, help="skip this many of the most similar candidates")
    p.add_argument("--range-max", type=int, default=None, help="consider only this many most similar candidates")
    p.add_argument("--max-score", type=float, default=None, help="drop candidates scoring above this")
    p.add_argument("--min-score", type=float, default=None, help="drop candidates scoring below this")
    p.add_argument("--absolute-margin", type=float, default=None,
                   help="drop candidates with score + margin > the positive's score")
    p.add_argument("--relative-margin", type=float, default=None,
                   help="drop candidates scoring above (1 - margin) x the positive's score")
    p.add_argument("--num-negatives", type=int, default=3, help="negatives per anchor (default 3)")
    p.add_argument("--sampling-strategy", choices=["top", "random"], default="top",
                   help="take the best remaining candidates, or a random sample of them")
    p.add_argument("--include-positives", action="store_true",
                   help="keep the anchor's positives among the candidates (n-tuple output)")
    p.add_argument("--output-format", choices=["triplet", "n-tuple", "labeled-pair", "labeled-list"],
                   default="triplet", help="row layout of the output (sentence-transformers' formats)")
    p.add_argument("--output-scores", action="store_true", help="write similarity scores too")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default 32)")
    p.add_argument("--seed", type=int, default=0, help="for sampling_strategy random")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("embed-labels", parents=[common],
                       help="write a dataset with a teacher's embeddings (or scores) as its label column, for "
                            "MSELoss / EmbedDistillLoss (or DistillKLDivLoss / MarginMSELoss)")
    p.add_argument("--model", required=True, help="the teacher: " + model_help)
    p.add_argument("--dataset", required=True, action="append",
                   help="dataset name (stsb, sick, a file) or a JSON dataset spec; repeat with --sentences")
    p.add_argument("--output", required=True, help=".jsonl (default), .csv or .parquet: a dataset jaxsbert train reads")
    p.add_argument("--split", default=None, help="the datasets' split (named datasets; default train)")
    p.add_argument("--data-root", default=None, help="directory holding stsbenchmark/ and sick/")
    p.add_argument("--sentences", action="store_true",
                   help="label every distinct input text of the dataset(s), as one column 'sentence'")
    p.add_argument("--columns", default=None,
                   help="comma-separated input columns to embed (default: every input column)")
    p.add_argument("--scores", action="store_true",
                   help="label (query, positive, negative ...) rows with the teacher's scores (DistillKLDivLoss)")
    p.add_argument("--margins", action="store_true",
                   help="label (query, positive, negative ...) rows with the teacher's margins (MarginMSELoss)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=cmd_embed_labels)

    p = sub.add_parser("export", parents=[common],
                       help="write a sentence-transformers directory from a training checkpoint")
    p.add_argument("--checkpoint", required=True, help="a workdir (its latest checkpoint) or a checkpoint dir")
    p.add_argument("--out", required=True, help="directory to write the model to")
    p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", parents=[common], help="PNG curves of a run's metrics")
    p.add_argument("workdir", help="a jaxsbert train --workdir")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: WORKDIR/plots)")
    p.set_defaults(func=cmd_plot)
    return parser


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _raised_in_jaxsbert(error: BaseException) -> bool:
    """Whether ``error`` was raised by jaxsbert's own code (a check of the user's input), not a library."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(here)


def _is_user_error(error: BaseException) -> bool:
    """Errors in what the user gave (config, data, paths, checkpoints): a known message, no traceback needed."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"ConfigError", "BadRowError", "CheckpointMismatchError", "CorruptCheckpointError",
                "WorkdirLockedError"}:
        return True
    if isinstance(error, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                          PermissionError, ConnectionError, FloatingPointError)):
        return True
    return isinstance(error, (ValueError, TypeError)) and _raised_in_jaxsbert(error)


def _message(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return _one_line(text).removeprefix("error: ") or type(error).__name__


def main(argv: list[str] | None = None) -> None:
    """Runs a ``jaxsbert`` command. A user error prints ``error: ...`` (one line) and exits with status 2;
    another exception prints ``error: <type>: ...`` and exits with status 1; ``--debug`` re-raises both."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ErrorExit:
        raise
    except SystemExit as e:
        if not isinstance(e.code, str):           # a status (a run stopped by a signal, ...)
            raise
        message = _one_line(e.code)
        message = message if message.startswith("error:") else f"error: {message}"
        print(message, file=sys.stderr)
        raise ErrorExit(message) from None
    except Exception as e:
        if args.debug:
            raise
        if _is_user_error(e):
            message, code = f"error: {_message(e)}", USER_ERROR_STATUS
        else:
            message = (f"error: {type(e).__name__}: {_message(e)} "
                       f"(an internal error? run with --debug for the traceback)")
            code = INTERNAL_ERROR_STATUS
        print(message, file=sys.stderr)
        raise ErrorExit(message, code) from None


if __name__ == "__main__":
    main(sys.argv[1:])
