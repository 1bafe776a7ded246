"""Run metrics: one JSON object per line in ``WORKDIR/metrics.jsonl``, and TensorBoard event files when
the ``tensorboard`` package is installed (no TensorFlow needed). Only process 0 writes."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax


class MetricsWriter:
    def __init__(self, workdir: str, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            _end_torn_line(self.path)
        if self.enabled and tensorboard:
            try:
                from tensorboard.summary.writer.event_file_writer import EventFileWriter
                self._tb = EventFileWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                pass

    def write(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "time": time.time()}
        record.update({k: _plain(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            values = [summary_pb2.Summary.Value(tag=f"{kind}/{k}", simple_value=float(v))
                      for k, v in record.items() if k not in ("kind", "step", "time") and isinstance(v, (int, float))]
            self._tb.add_event(event_pb2.Event(wall_time=record["time"], step=int(step),
                                               summary=summary_pb2.Summary(value=values)))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    try:
        v = float(v) if not isinstance(v, (str, bool, int)) else v
    except (TypeError, ValueError):
        return str(v)
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _end_torn_line(path: str) -> None:
    """A run killed while appending can leave a last line without its newline: end it, so that the lines
    appended by the resumed run stay separate (:func:`read_metrics` skips the torn one)."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        pass


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``metrics.jsonl``; a line torn by a killed run is skipped."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no metrics (is {workdir} a jaxsbert workdir?)")
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue      # empty, or torn by a kill
    return records


# ------------------------------------------------------------------------------------------ report figure

_NOT_PLOTTED = ("kind", "step", "time", "epoch", "lr_steps", "total_steps")
_MEASURE_NAMES = {"spearman": "Spearman correlation", "pearson": "Pearson correlation", "accuracy": "accuracy",
                  "ap": "average precision", "map": "MAP", "mrr": "MRR", "ndcg": "NDCG", "f1": "F1",
                  "precision": "precision", "recall": "recall", "mcc": "Matthews correlation"}
_SIMILARITY_FNS = ("cosine", "dot", "euclidean", "manhattan", "max")


def report_path(workdir: str, out: str | None = None) -> str:
    """Where :func:`plot` writes: ``WORKDIR/report.png``, ``out`` when it ends in .png, else ``out/report.png``."""
    if out is None:
        return os.path.join(workdir, "report.png")
    return out if out.lower().endswith(".png") else os.path.join(out, "report.png")


def plot(workdir: str, out: str | None = None) -> list[str]:
    """Writes one report figure of a run (:func:`report_figure`) as a PNG -> ``[its path]``
    (``WORKDIR/report.png``, or ``out``: a .png path or a directory)."""
    path = report_path(workdir, out)
    fig = report_figure(workdir)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    return [path]


def latest_records(records: list[dict]) -> dict[str, list[dict]]:
    """kind -> its records sorted by step, one per (kind, step): records of the same kind and step are merged,
    the last written winning where they share a key (a resumed run logs again the steps after its checkpoint)."""
    by_key: dict[tuple[str, int], dict] = {}
    for r in records:
        if isinstance(r.get("step"), int) and isinstance(r.get("kind"), str):
            by_key.setdefault((r["kind"], r["step"]), {}).update(r)
    out: dict[str, list[dict]] = {}
    for (kind, _), r in sorted(by_key.items(), key=lambda item: item[0][1]):
        out.setdefault(kind, []).append(r)
    return out


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records with a finite number under ``key``."""
    pairs = [(r["step"], _number(r.get(key))) for r in records]
    pairs = [(s, v) for s, v in pairs if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def moving_average(values: list[float], window: int) -> list[float]:
    """Centered moving average over ``window`` points (odd), the window shrunk symmetrically at the ends: no lag,
    and the first and last points are the values themselves."""
    half, out = max(window, 1) // 2, []
    for i in range(len(values)):
        h = min(half, i, len(values) - 1 - i)
        out.append(sum(values[i - h:i + h + 1]) / (2 * h + 1))
    return out


def eval_intervals(train_steps: list[int], eval_steps: list[int]) -> list[bool]:
    """For each train record, whether its log interval's time includes an evaluation: an evaluation at step e
    (e > 0) runs after step e's record is written, so it falls in the interval of the next record."""
    out, previous = [], 0
    for s in train_steps:
        out.append(any(previous <= e < s and e > 0 for e in eval_steps))
        previous = s
    return out


def total_steps(records: dict[str, list[dict]], config: dict) -> int:
    """The run's planned number of steps: a record's ``total_steps``, else config ``max_steps`` when set, else
    the last step logged."""
    for r in reversed([r for rs in records.values() for r in rs]):
        if isinstance(r.get("total_steps"), int) and r["total_steps"] > 0:
            return r["total_steps"]
    if isinstance(config.get("max_steps"), int) and config["max_steps"] > 0:
        return config["max_steps"]
    return max((r["step"] for rs in records.values() for r in rs), default=0)


def lr_per_step(train: list[dict], config: dict, total: int) -> tuple[list[int], list[float], str]:
    """The learning rate of every step 1..last -> (steps, lrs, where they come from).

    A train record's ``lr_steps`` are the rates of the steps since the previous record (the last is its step's);
    steps without them are recomputed from config.json's ``optim`` with the run's schedule
    (:func:`jaxsbert.training.optimizer.make_optimizer`), when that schedule reproduces every ``lr`` logged
    (else the total steps guessed were wrong); failing both, only the logged ``lr`` of the log steps remain."""
    known: dict[int, float] = {}
    for r in train:
        rates = r.get("lr_steps")
        if isinstance(rates, str) and rates.startswith("["):      # a writer that stringified the list
            try:
                rates = json.loads(rates)
            except json.JSONDecodeError:
                rates = None
        if isinstance(rates, list):
            for i, v in enumerate(rates):
                if _number(v) is not None:
                    known[r["step"] - len(rates) + 1 + i] = float(v)
    steps, sampled = _series(train, "lr")
    last = max(steps + list(known), default=0)
    missing = [s for s in range(1, last + 1) if s not in known]
    if not missing:
        return list(range(1, last + 1)), [known[s] for s in range(1, last + 1)], "per step (lr_steps)"
    schedule = _schedule(config.get("optim"), total)
    why = "no lr_steps, no optim in config.json"
    if schedule is not None:
        if steps and all(math.isclose(schedule(s), v, rel_tol=1e-4, abs_tol=1e-12) for s, v in zip(steps, sampled)):
            source = "per step (lr_steps; the rest from config optim)" if known else "per step (from config optim)"
            known.update({s: schedule(s) for s in missing})
            return list(range(1, last + 1)), [known[s] for s in range(1, last + 1)], source
        why = "no lr_steps; config optim's schedule does not give the logged lr"
    known.update({s: v for s, v in zip(steps, sampled) if s not in known})
    return sorted(known), [known[s] for s in sorted(known)], f"at log steps only ({why})"


def _schedule(optim, total: int):
    """step (1-based, as logged) -> the learning rate the train step used, or None without the settings."""
    if not isinstance(optim, dict) or total <= 0:
        return None
    try:
        import numpy as np

        from jaxsbert.training.optimizer import make_optimizer
        accum = int(optim.get("grad_accum_steps") or 1)
        _, schedule = make_optimizer(optim, max(total // accum, 1))
        table = np.asarray(schedule(np.arange(max(total // accum, 1) + 1)), dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    return lambda step: float(table[min((step - 1) // accum, len(table) - 1)])


def _evaluator_of(key: str, evaluators: list[str]) -> tuple[str, str]:
    """``sts-dev_spearman_cosine`` -> (``sts-dev``, ``spearman_cosine``): the longest evaluator name of the
    config that prefixes the key, else the text before the first ``_``."""
    for name in sorted(evaluators, key=len, reverse=True):
        if key.startswith(name + "_"):
            return name, key[len(name) + 1:]
    name, _, metric = key.partition("_")
    return (name, metric) if metric else ("", key)


def metric_group(metric: str) -> str:
    """The measure a metric is a variant of (its panel): ``spearman_cosine`` -> ``spearman``,
    ``cosine_ndcg@10`` -> ``ndcg@k``, ``max_accuracy_threshold`` -> ``accuracy_threshold``."""
    parts = [p for p in metric.split("_") if p not in _SIMILARITY_FNS]
    group = "_".join(parts) or metric
    return group.split("@")[0] + "@k" if "@" in group else group


Series = dict[tuple[str, str], tuple[list[int], list[float]]]


def eval_groups(evals: list[dict], evaluators: list[str]) -> dict[str, Series]:
    """group -> {(evaluator, metric): (steps, values)} of every evaluation metric, in first-seen order."""
    groups: dict[str, Series] = {}
    keys = list(dict.fromkeys(k for r in evals for k in r if k not in _NOT_PLOTTED))
    for key in keys:
        steps, values = _series(evals, key)
        if not steps:
            continue
        name, metric = _evaluator_of(key, evaluators)
        groups.setdefault(metric_group(metric), {})[(name, metric)] = (steps, values)
    return groups


def _group_ylabel(group: str) -> str:
    base = group.replace("@k", "")
    words = _MEASURE_NAMES.get(base, base.replace("_", " "))
    return words + (" @ k" if group.endswith("@k") else "")


def _loss_name(loss) -> str:
    if isinstance(loss, dict) and isinstance(loss.get("name"), str):
        return loss["name"]
    if isinstance(loss, dict):
        return ", ".join(f"{k}: {_loss_name(v)}" for k, v in loss.items())
    return str(loss)


def _subtitle(config: dict, last_step: int, total: int, nonfinite: int) -> str:
    parts = []
    if config.get("model"):
        parts.append(f"model {str(config['model']).rstrip('/').split('/')[-1]}")
    if config.get("loss"):
        parts.append(f"loss {_loss_name(config['loss'])}")
    if config.get("batch_size"):
        parts.append(f"batch {config['batch_size']}")
    parts.append(f"{last_step} steps" if last_step >= total else f"stopped at step {last_step} of {total}")
    optim = config.get("optim") or {}
    if _number(optim.get("lr")) is not None:
        parts.append(f"lr {optim['lr']:g} {optim.get('schedule', 'linear')}")
    if nonfinite:
        parts.append(f"{nonfinite} non-finite step(s) skipped")
    return " | ".join(parts)


def _eval_panel(ax, group: str, series: Series, last_step: int) -> None:
    """One evaluation measure: a line per (evaluator, metric), the evaluation before training (step 0) ringed
    by a square and the one after (at ``last_step``) by a star. With one metric per evaluator the colours are
    the evaluators and the legend gives each one's first -> last value; with several (``@1, @3 ...``) the
    colours are the metrics and the line styles the evaluators."""
    from matplotlib.lines import Line2D

    ax.set(title=f"evaluation: {group}", xlabel="step", ylabel=_group_ylabel(group))
    names = list(dict.fromkeys(name for name, _ in series))
    metrics = list(dict.fromkeys(metric for _, metric in series))
    styles = ("-", "--", ":", "-.")
    handles = []
    for i, ((name, metric), (steps, values)) in enumerate(series.items()):
        label = f"{name} {metric}".strip()
        if len(metrics) == 1:
            color, style = f"C{i % 10}", "-"
            change = f"{values[0]:.4f} -> {values[-1]:.4f}" if len(values) > 1 else f"{values[0]:.4f}"
            handles.append(ax.plot(steps, values, "o-", ms=3.5, lw=1.5, color=color, label=f"{label}: {change}")[0])
        else:
            color, style = f"C{metrics.index(metric) % 10}", styles[names.index(name) % len(styles)]
            ax.plot(steps, values, marker="o", ls=style, ms=3, lw=1.3, color=color, label=label)
        if steps[0] == 0:
            ax.plot([0], [values[0]], "s", ms=8, mfc="none", mew=1.8, color=color, gid="before")
        if steps[-1] == last_step and last_step > 0:
            ax.plot([steps[-1]], [values[-1]], "*", ms=12, color=color, gid="after")
    if len(metrics) > 1:
        handles = [Line2D([], [], color=f"C{i % 10}", lw=2, label=m) for i, m in enumerate(metrics)]
        handles += [Line2D([], [], color="black", ls=styles[i % len(styles)], lw=1.3, label=n or "(no name)")
                    for i, n in enumerate(names)]
    handles += [Line2D([], [], ls="none", marker="s", mfc="none", color="gray", label="before training (step 0)"),
                Line2D([], [], ls="none", marker="*", ms=10, color="gray", label=f"after training (step {last_step})")]
    ax.legend(handles=handles, fontsize=7, ncol=1 if len(handles) <= 5 else 2)
    ax.set_xlim(left=-0.04 * max(last_step, 1), right=1.04 * max(last_step, 1))


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in metrics.jsonl", ha="center", va="center", transform=ax.transAxes, color="gray")


def report_figure(workdir: str):
    """The report of a run as a matplotlib ``Figure`` (no pyplot, so no GUI backend): training loss (logged
    points and an EMA), learning rate per step, gradient norm, one panel per evaluation measure (every
    evaluator's variants of it, the evaluations before (step 0) and after training (the last step) marked),
    throughput. Reads ``metrics.jsonl`` and ``config.json`` (for the title, subtitle and lr schedule)."""
    from matplotlib.figure import Figure

    records = latest_records(read_metrics(workdir))
    config = {}
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    train, evals = records.get("train", []), records.get("eval", [])
    total = total_steps(records, config)
    last_step = max([r["step"] for r in train + evals], default=0)
    groups = eval_groups(evals, list((config.get("data") or {}).get("eval") or {}))

    n_panels = 4 + max(len(groups), 1)
    ncols = 3 if n_panels <= 9 else 4
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(5.4 * ncols, 3.6 * nrows + 0.6))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    panel = iter(axes)

    ax = next(panel)
    steps, loss = _series(train, "loss")
    ax.set(title="training loss", xlabel="step", ylabel="loss (mean over the log interval)")
    if steps:
        window = max(3, len(steps) // 10) | 1
        every = f"mean of log_every={config['log_every']} steps" if config.get("log_every") else "logged"
        ax.plot(steps, loss, "o", ms=3, alpha=0.5, color="C0", label=every)
        ax.plot(steps, moving_average(loss, window), "-", lw=2, color="C0",
                label=f"moving average ({window} points, centered)")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "training loss")

    ax = next(panel)
    ax.set(title="learning rate", xlabel="step", ylabel="learning rate")
    lr_steps, lrs, source = lr_per_step(train, config, total)
    if lr_steps:
        ax.plot(lr_steps, lrs, "-" if "per step" in source else "o-", lw=1.5, color="C1", ms=3, label=source)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "learning rate")

    ax = next(panel)
    ax.set(title="gradient norm", xlabel="step", ylabel="global L2 norm (before clipping)")
    steps, norms = _series(train, "grad_norm")
    if steps:
        ax.plot(steps, norms, "o-", ms=3, lw=1, color="C2", label="last step of each log interval")
        clip = _number((config.get("optim") or {}).get("max_grad_norm"))
        if clip:
            ax.axhline(clip, ls="--", color="gray", lw=1, label=f"clipped to {clip:g}")
        low = min(norms + ([clip] if clip else []))
        if low > 0 and max(norms) / low > 20:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "gradient norm")

    for group, series in groups.items():
        _eval_panel(next(panel), group, series, last_step)
    if not groups:
        ax = next(panel)
        ax.set(title="evaluation", xlabel="step", ylabel="score")
        _no_data(ax, "evaluation")

    ax = next(panel)
    ax.set(title="throughput", xlabel="step", ylabel="pairs / s (mean over the log interval)")
    steps, speed = _series(train, "pairs_per_s")
    if steps:
        with_eval = eval_intervals(steps, [r["step"] for r in evals])
        ax.plot(steps, speed, "-", lw=1, color="C4")
        clean = [(s, v) for s, v, e in zip(steps, speed, with_eval) if not e]
        ax.plot([s for s, _ in clean], [v for _, v in clean], "o", ms=4, color="C4", label="logged")
        if any(with_eval):
            ax.plot([s for s, e in zip(steps, with_eval) if e], [v for v, e in zip(speed, with_eval) if e], "o",
                    ms=5, mfc="white", color="C4", label="interval includes an evaluation")
        values = sorted(v for _, v in clean) or sorted(speed)
        median = values[len(values) // 2]
        ax.axhline(median, ls="--", color="gray", lw=1, label=f"median {median:.1f} pairs/s"
                   + (" (intervals without evaluation)" if any(with_eval) else ""))
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "throughput")

    for ax in axes:
        ax.grid(alpha=0.3)
    nonfinite = int(max([_number(r.get("nonfinite")) or 0 for r in train], default=0))
    fig.suptitle(str(config.get("name") or os.path.basename(os.path.normpath(workdir))), fontsize=15,
                 fontweight="bold", y=1 - 0.12 / fig.get_figheight())
    fig.text(0.5, 1 - 0.5 / fig.get_figheight(), _subtitle(config, last_step, total, nonfinite), ha="center",
             fontsize=10, color="dimgray")
    fig.tight_layout()
    fig.subplots_adjust(top=1 - 0.95 / fig.get_figheight())      # room for the title and subtitle only
    return fig
