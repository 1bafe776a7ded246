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


def plot(workdir: str, out_dir: str | None = None) -> list[str]:
    """Writes PNG curves (training loss, learning rate, each evaluation metric) -> their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    out_dir = out_dir or os.path.join(workdir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    series: dict[str, tuple[list, list]] = {}
    for r in records:
        for k, v in r.items():
            if k in ("kind", "step", "time") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            xs, ys = series.setdefault(f"{r['kind']}/{k}", ([], []))
            xs.append(r["step"])
            ys.append(v)
    paths = []
    for name, (xs, ys) in sorted(series.items()):
        if name.split("/", 1)[1] in ("pairs_per_s", "epoch", "finite", "nonfinite"):
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        path = os.path.join(out_dir, name.replace("/", "_") + ".png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
