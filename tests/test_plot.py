"""`jaxsbert plot`: one report figure of a run, from a synthetic workdir (config.json + metrics.jsonl)."""
import json
import os
import struct

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from jaxsbert.training.metrics import lr_per_step, metric_group, plot, report_figure  # noqa: E402
from jaxsbert.training.optimizer import make_optimizer  # noqa: E402

TOTAL, LOG_EVERY, EVAL_STEPS = 40, 5, (0, 20, 40)
OPTIM = {"name": "adamw", "lr": 1e-4, "weight_decay": 0.01, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
         "schedule": "linear", "warmup_ratio": 0.1, "warmup_steps": None, "max_grad_norm": 1.0,
         "grad_accum_steps": 1}
CONFIG = {"name": "synthetic-run", "model": "sentence-transformers/all-MiniLM-L6-v2",
          "loss": {"name": "CoSENTLoss"}, "batch_size": 16, "max_steps": -1, "log_every": LOG_EVERY,
          "optim": OPTIM, "data": {"eval": {"sts-dev": {}, "sts-test": {}}}}


def _lr(step: int) -> float:
    """The rate the train step logs at ``step`` (1-based): the schedule at optimizer step ``step - 1``."""
    _, schedule = make_optimizer(OPTIM, TOTAL)
    return float(schedule(step - 1))


def _write_run(workdir, lr_steps=True, config=CONFIG):
    """A 40-step run: train records every 5 steps, evaluations at 0, 20 and 40, and step 20 logged twice (a run
    resumed from its step-15 checkpoint): the second record is the one to keep."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    records = []
    for step in range(LOG_EVERY, TOTAL + 1, LOG_EVERY):
        record = {"kind": "train", "step": step, "time": 1.0 * step, "loss": 5.0 - step / 10, "lr": _lr(step),
                  "grad_norm": 2.0 + step / 100, "pairs_per_s": 50.0 + step, "epoch": step / TOTAL, "nonfinite": 0}
        if lr_steps:
            record["lr_steps"] = [_lr(s) for s in range(step - LOG_EVERY + 1, step + 1)]
        if step == 20:
            records.append(dict(record, loss=99.0))           # the killed run's record, logged again after resume
        records.append(record)
    for step in EVAL_STEPS:
        for name, base in (("sts-dev", 0.80), ("sts-test", 0.75)):
            records.append({"kind": "eval", "step": step, "time": 1.0 * step,
                            f"{name}_pearson_cosine": base + step / 1000, f"{name}_spearman_cosine": base + step / 500})
    records.sort(key=lambda r: r["step"])
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write('{"kind": "train", "step": 4')                 # a line torn by a kill: skipped
    return str(workdir)


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("lr_steps", [True, False])
def test_plot_writes_one_png(tmp_path, lr_steps):
    workdir = _write_run(tmp_path / "run", lr_steps=lr_steps)
    paths = plot(workdir)
    assert paths == [os.path.join(workdir, "report.png")]
    pngs = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if f.endswith(".png")]
    assert pngs == paths
    width, height = _png_size(paths[0])
    assert 1200 <= width <= 2400 and 600 <= height <= 2000, (width, height)
    assert os.path.getsize(paths[0]) > 30_000


def test_plot_out_is_a_file_or_a_directory(tmp_path):
    workdir = _write_run(tmp_path / "run")
    assert plot(workdir, str(tmp_path / "figs" / "mine.png")) == [str(tmp_path / "figs" / "mine.png")]
    assert plot(workdir, str(tmp_path / "out")) == [str(tmp_path / "out" / "report.png")]
    for path in (tmp_path / "figs" / "mine.png", tmp_path / "out" / "report.png"):
        _png_size(path)


def _panel(fig, title):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


@pytest.mark.parametrize("lr_steps", [True, False])
def test_report_figure_panels(tmp_path, lr_steps):
    fig = report_figure(_write_run(tmp_path / "run", lr_steps=lr_steps))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training loss", "learning rate", "gradient norm", "evaluation: pearson",
                      "evaluation: spearman", "throughput"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "step" and ax.get_ylabel(), ax.get_title()
    assert fig.get_suptitle() == "synthetic-run"
    subtitle = " ".join(t.get_text() for t in fig.texts)
    for part in ("all-MiniLM-L6-v2", "CoSENTLoss", "batch 16", "40 steps"):
        assert part in subtitle, subtitle

    # training loss: the logged points, step 20 once with the resumed run's value, and a smoothed line
    raw, smooth = _panel(fig, "training loss").get_lines()
    assert list(raw.get_xdata()) == list(range(5, 41, 5))
    assert raw.get_ydata()[3] == pytest.approx(3.0)
    assert len(smooth.get_xdata()) == 8 and max(smooth.get_ydata()) < 99
    assert len(_panel(fig, "training loss").get_legend().get_texts()) == 2

    # learning rate: one point per step, the schedule's values (from lr_steps, or recomputed from config optim)
    (line,) = _panel(fig, "learning rate").get_lines()
    assert list(line.get_xdata()) == list(range(1, TOTAL + 1))
    np.testing.assert_allclose(line.get_ydata(), [_lr(s) for s in range(1, TOTAL + 1)], rtol=1e-5)
    assert line.get_ydata()[0] == 0.0 and max(line.get_ydata()) == pytest.approx(1e-4)

    # evaluations: dev and test in each measure's panel, before (step 0) and after (step 40) marked
    for measure in ("pearson", "spearman"):
        ax = _panel(fig, f"evaluation: {measure}")
        series = [l for l in ax.get_lines() if l.get_gid() is None]
        assert [l.get_label().split(":")[0] for l in series] == [f"sts-dev {measure}_cosine",
                                                                 f"sts-test {measure}_cosine"]
        for l in series:
            assert list(l.get_xdata()) == list(EVAL_STEPS)
        before = [l for l in ax.get_lines() if l.get_gid() == "before"]
        after = [l for l in ax.get_lines() if l.get_gid() == "after"]
        assert len(before) == len(after) == 2
        assert all(list(l.get_xdata()) == [0] for l in before) and all(list(l.get_xdata()) == [40] for l in after)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "before training (step 0)" in labels and "after training (step 40)" in labels


def test_lr_falls_back_to_the_logged_rates(tmp_path):
    """Without lr_steps: no optim in config.json, or a schedule that does not reproduce the logged rates
    (a wrong total), leaves the logged rates at the log steps only."""
    no_optim = dict(CONFIG, optim=None)
    fig = report_figure(_write_run(tmp_path / "a", lr_steps=False, config=no_optim))
    (line,) = _panel(fig, "learning rate").get_lines()
    assert list(line.get_xdata()) == list(range(5, 41, 5))
    assert "log steps only" in line.get_label()

    train = [{"kind": "train", "step": s, "lr": _lr(s)} for s in range(5, 41, 5)]
    steps, _, source = lr_per_step(train, {"optim": OPTIM}, total=80)      # wrong total: the check refuses it
    assert steps == list(range(5, 41, 5)) and "log steps only" in source
    steps, lrs, source = lr_per_step(train, {"optim": OPTIM}, total=40)
    assert steps == list(range(1, 41)) and "config optim" in source
    # lr_steps for the steps after a resume, the rest recomputed
    train[-1]["lr_steps"] = [_lr(s) for s in range(36, 41)]
    steps, lrs, source = lr_per_step(train, {"optim": OPTIM}, total=40)
    assert steps == list(range(1, 41)) and source.startswith("per step (lr_steps")
    np.testing.assert_allclose(lrs, [_lr(s) for s in range(1, 41)], rtol=1e-5)


def test_metric_groups():
    assert metric_group("spearman_cosine") == "spearman"
    assert metric_group("cosine_ndcg@10") == "ndcg@k"
    assert metric_group("max_accuracy_threshold") == "accuracy_threshold"
    assert metric_group("accuracy") == "accuracy"


def test_cli_plot(tmp_path, capsys):
    from jaxsbert.cli import main

    workdir = _write_run(tmp_path / "run")
    main(["plot", workdir])
    assert capsys.readouterr().out.strip() == f"wrote {os.path.join(workdir, 'report.png')}"
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SystemExit, match="metrics.jsonl: no metrics"):
        main(["plot", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no such directory"):
        main(["plot", str(tmp_path / "missing")])


def test_several_variants_per_measure(tmp_path):
    """Retrieval metrics @1, @10 of a dev and a test evaluator: one accuracy@k panel, the colours the metrics,
    the line styles the evaluators, every line's evaluations before and after marked."""
    config = dict(CONFIG, data={"eval": {"ir-dev": {}, "ir-test": {}}})
    workdir = _write_run(tmp_path / "run", config=config)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write("\n")
        for step in EVAL_STEPS:
            f.write(json.dumps({"kind": "eval", "step": step, **{f"ir-{split}_cosine_accuracy@{k}": 0.5 + k / 100 + step / 400
                                                                 for split in ("dev", "test") for k in (1, 10)}}) + "\n")
    fig = report_figure(workdir)
    ax = _panel(fig, "evaluation: accuracy@k")
    series = [l for l in ax.get_lines() if l.get_gid() is None]
    assert len(series) == 4 and {l.get_linestyle() for l in series} == {"-", "--"}
    assert len({l.get_color() for l in series}) == 2
    assert sum(l.get_gid() == "before" for l in ax.get_lines()) == sum(l.get_gid() == "after" for l in ax.get_lines()) == 4
    assert ax.get_ylabel() == "accuracy @ k"


def test_a_run_without_evaluations_or_config(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 10, "loss": 1.0, "lr": 1e-5}) + "\n")
    fig = report_figure(str(workdir))
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "learning rate", "gradient norm", "evaluation",
                                                   "throughput"]
    assert fig.get_suptitle() == "run"
    assert plot(str(workdir)) == [str(workdir / "report.png")]


def test_lr_steps_written_as_a_string():
    """A writer that turned the list into its text (str(list)) still gives the rates per step."""
    train = [{"kind": "train", "step": s, "lr": _lr(s), "lr_steps": str([_lr(t) for t in range(s - 4, s + 1)])}
             for s in range(5, 41, 5)]
    steps, lrs, source = lr_per_step(train, {}, total=40)
    assert steps == list(range(1, 41)) and source == "per step (lr_steps)"
    np.testing.assert_allclose(lrs, [_lr(s) for s in range(1, 41)], rtol=1e-6)
