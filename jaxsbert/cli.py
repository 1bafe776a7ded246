"""Command line: ``jaxsbert train | eval | encode | export | plot``."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _read_sentences(path: str, field: str | None) -> list[str]:
    if not os.path.exists(path):
        raise SystemExit(f"error: {path}: file not found")
    sentences = []
    with open(path, encoding="utf8") as f:
        if path.endswith(".jsonl"):
            for row, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"error: {path}: line {row} is not valid JSON ({e})")
                if isinstance(item, dict):
                    key = field or next((k for k in ("text", "sentence", "sentence1") if k in item), None)
                    if key is None or key not in item:
                        raise SystemExit(f"error: {path}: line {row} has no field {field or 'text'!r} "
                                         f"(fields: {sorted(item)}); choose one with --field")
                    item = item[key]
                if not isinstance(item, str):
                    raise SystemExit(f"error: {path}: line {row}: expected a string, got {type(item).__name__}")
                sentences.append(item)
        else:
            sentences = [line.rstrip("\n") for line in f]
    return sentences


def cmd_encode(args) -> None:
    import numpy as np
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.models.bundled import resolve_model

    sentences = _read_sentences(args.input, args.field)
    encoder = SentenceEncoder.from_pretrained(resolve_model(args.model))
    emb = encoder.encode(sentences, batch_size=args.batch_size,
                         normalize_embeddings=True if args.normalize else None, show_progress_bar=True)
    np.save(args.output, emb)
    print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {args.output}")


def cmd_train(args) -> None:
    from jaxsbert.config import ConfigError, build_config
    from jaxsbert.training.loop import train

    from jaxsbert.data.sources import BadRowError
    from jaxsbert.training.checkpoint import CheckpointMismatchError
    from jaxsbert.training.preemption import WorkdirLockedError

    try:
        config = build_config(args.config, args.override)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    try:
        result = train(config, args.workdir, resume=args.resume)
    except (WorkdirLockedError, CheckpointMismatchError, FileExistsError, FloatingPointError, BadRowError) as e:
        raise SystemExit(f"error: {e}")
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


def _dataset_spec(text: str, split: str | None = None) -> dict:
    spec = json.loads(text) if text.strip().startswith("{") else {"source": text}
    if split:
        spec["split"] = split
    return spec


def cmd_eval(args) -> None:
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.models.bundled import resolve_model
    from jaxsbert.training.evaluators import build_evaluator

    encoder = SentenceEncoder.from_pretrained(resolve_model(args.model))
    evaluator = build_evaluator(args.name, _dataset_spec(args.data, args.split), data_root=args.data_root)
    metrics = evaluator(encoder)
    print(json.dumps(metrics, indent=2))


def cmd_mine(args) -> None:
    import os

    from jaxsbert import data as jdata
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.mining import mine_hard_negatives
    from jaxsbert.models.bundled import resolve_model

    if os.path.exists(args.output) and not args.overwrite:
        raise SystemExit(f"jaxsbert mine: {args.output} exists; pass --overwrite to replace it")
    suffix = os.path.splitext(args.output)[1]
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise SystemExit(f"jaxsbert mine: --output {args.output}: write .jsonl, .csv or .parquet")
    dataset = jdata.load_dataset(_dataset_spec(args.dataset, args.split), data_root=args.data_root)
    corpus = None
    if args.corpus:
        extra = jdata.load_dataset(_dataset_spec(args.corpus), data_root=args.data_root)
        column = args.corpus_column or jdata.split_columns(extra).inputs[0]
        corpus = list(extra[column])
    encoder = SentenceEncoder.from_pretrained(resolve_model(args.model))
    options = {k: getattr(args, k) for k in ("range_min", "range_max", "max_score", "min_score", "absolute_margin",
                                             "relative_margin", "num_negatives", "sampling_strategy",
                                             "include_positives", "output_format", "output_scores")}
    mined = mine_hard_negatives(dataset, encoder, args.anchor_column, args.positive_column, corpus,
                                batch_size=args.batch_size, seed=args.seed, **options)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp" + suffix
    if suffix == ".csv":
        mined.to_csv(tmp, index=False)
    elif suffix == ".parquet":
        mined.to_parquet(tmp)
    else:
        mined.to_json(tmp, lines=True, force_ascii=False)
    os.replace(tmp, args.output)          # an earlier output is replaced only by a complete one
    print(f"wrote {len(mined)} rows ({', '.join(mined.column_names)}) to {args.output}")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jaxsbert", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument("config", help="config file, or the name of one in configs/ (e.g. quickstart)")
    p.add_argument("--workdir", required=True)
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="dataset name (stsb, sick, a file) or a JSON evaluator spec")
    p.add_argument("--split", default=None)
    p.add_argument("--name", default="eval")
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("encode", help="embed sentences into a .npy file")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help=".txt (one sentence per line) or .jsonl")
    p.add_argument("--output", required=True, help=".npy")
    p.add_argument("--field", default=None, help="the .jsonl field holding the text")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--normalize", action="store_true")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("mine", help="add hard negatives to (anchor, positive) pairs (sentence-transformers' "
                                    "util.mine_hard_negatives)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="dataset name (stsb, sick, a file) or a JSON dataset spec")
    p.add_argument("--output", required=True, help=".jsonl (default), .csv or .parquet: a dataset jaxsbert train reads")
    p.add_argument("--split", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--corpus", default=None, help="more documents to mine from (a dataset: its first text column)")
    p.add_argument("--corpus-column", default=None)
    p.add_argument("--anchor-column", default=None)
    p.add_argument("--positive-column", default=None)
    p.add_argument("--range-min", type=int, default=0)
    p.add_argument("--range-max", type=int, default=None)
    p.add_argument("--max-score", type=float, default=None)
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--absolute-margin", type=float, default=None)
    p.add_argument("--relative-margin", type=float, default=None)
    p.add_argument("--num-negatives", type=int, default=3)
    p.add_argument("--sampling-strategy", choices=["top", "random"], default="top")
    p.add_argument("--include-positives", action="store_true")
    p.add_argument("--output-format", choices=["triplet", "n-tuple", "labeled-pair", "labeled-list"], default="triplet")
    p.add_argument("--output-scores", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="for sampling_strategy random")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("export", help="write a sentence-transformers directory from a training checkpoint")
    p.add_argument("--checkpoint", required=True, help="a workdir (its latest checkpoint) or a checkpoint dir")
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="PNG curves of a run's metrics")
    p.add_argument("workdir")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_plot)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
