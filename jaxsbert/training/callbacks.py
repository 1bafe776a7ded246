"""Training callbacks and reporting integrations, shaped like Hugging Face's ``TrainerCallback``.

A callback subclasses :class:`TrainerCallback` and overrides any of its events; each receives
``(args, state, control, **kwargs)`` as in transformers, so a callback written for
sentence-transformers' trainer that reads ``state.global_step`` / ``state.log_history`` and sets
``control.should_training_stop`` works unchanged:

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, metrics=None, **kwargs):
            if state.global_step >= 100:
                control.should_training_stop = True     # checkpoint saved; resume continues from here

Events: ``on_train_begin``, ``on_step_end`` (every step; ``metrics`` holds the step's loss, lr and
grad_norm as jax scalars: reading one with ``float()`` waits for that step), ``on_log`` (every
``log_every`` steps: ``logs`` as written to metrics.jsonl), ``on_evaluate`` (``metrics``), ``on_save``
(``step``), ``on_train_end``. ``control.should_evaluate`` / ``should_save`` ask for an evaluation /
a checkpoint after the current step. Every process runs the callbacks with the same values; the
reporting integrations report from process 0 only.

``report_to`` names integrations: ``"tensorboard"`` (the metrics writer's event files),
``"wandb"`` (Weights & Biases: ``WANDB_MODE=offline`` works without an account) and ``"mlflow"``
(where ``MLFLOW_TRACKING_URI`` says: a server, a database, or a local directory with
``MLFLOW_ALLOW_FILE_STORE=true``), or ``"all"`` for those installed.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, Sequence

import jax


@dataclasses.dataclass
class TrainerState:
    """Where training stands (the fields of transformers' TrainerState that apply here)."""
    global_step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    num_train_epochs: int = 0
    logging_steps: int = 0
    eval_steps: int = 0
    log_history: list = dataclasses.field(default_factory=list)
    best_metric: float | None = None
    is_world_process_zero: bool = True


@dataclasses.dataclass
class TrainerControl:
    """What callbacks ask of the loop (reset after it acts on each)."""
    should_training_stop: bool = False
    should_evaluate: bool = False
    should_save: bool = False
    should_log: bool = False


class TrainerCallback:
    """Override the events you need; every one gets ``(args, state, control, **kwargs)``."""

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs): ...
    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs): ...
    def on_log(self, args, state: TrainerState, control: TrainerControl, **kwargs): ...
    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, **kwargs): ...
    def on_save(self, args, state: TrainerState, control: TrainerControl, **kwargs): ...
    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs): ...


class CallbackList:
    """Calls each event on every callback in order."""

    def __init__(self, callbacks: Sequence[Any], args: Any, state: TrainerState):
        self.callbacks, self.args, self.state, self.control = list(callbacks), args, state, TrainerControl()

    def __getattr__(self, event: str):
        if not event.startswith("on_"):
            raise AttributeError(event)

        def call(**kwargs):
            for callback in self.callbacks:
                method = getattr(callback, event, None)
                if method is not None:
                    method(self.args, self.state, self.control, **kwargs)
        return call


# ------------------------------------------------------------------------------------ reporting


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def _numbers(values: dict) -> dict:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time")}


class WandbCallback(TrainerCallback):
    """Logs the run's config, training records and evaluations to Weights & Biases."""

    def __init__(self, config: dict):
        import wandb

        self.wandb, self.config, self.run = wandb, config, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.run = self.wandb.init(project=self.config.get("name"), name=self.config.get("name"),
                                       config=_flat(self.config), reinit="finish_previous")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in _numbers(logs or {}).items()}, step=state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.run is not None:
            self.run.log({f"eval/{k}": v for k, v in _numbers(metrics or {}).items()}, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.finish()
            self.run = None


class MLflowCallback(TrainerCallback):
    """Logs the run's config as parameters and its records and evaluations as metrics to MLflow."""

    def __init__(self, config: dict):
        import mlflow

        self.mlflow, self.config, self.active = mlflow, config, False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.mlflow.start_run(run_name=self.config.get("name"))
            self.active = True
            params = _flat(self.config)
            for start in range(0, len(params), 100):      # MLflow takes at most 100 parameters a call
                self.mlflow.log_params(dict(list(params.items())[start:start + 100]))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.active:
            self.mlflow.log_metrics(_numbers(logs or {}), step=state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.active:
            self.mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in _numbers(metrics or {}).items()},
                                    step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.active:
            self.mlflow.end_run()
            self.active = False


INTEGRATIONS = {"wandb": ("wandb", WandbCallback), "mlflow": ("mlflow", MLflowCallback)}


def reporting_callbacks(report_to: str | Sequence[str] | None, config: dict) -> tuple[list, bool]:
    """``report_to`` -> (integration callbacks, whether TensorBoard is wanted). "all" takes the installed
    ones; a named integration that is not installed is an error naming the package to install."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "none" in names:
        return [], False
    if "all" in names:
        names = ["tensorboard"] + [n for n, (module, _) in INTEGRATIONS.items() if importlib.util.find_spec(module)]
    unknown = sorted(set(names) - set(INTEGRATIONS) - {"tensorboard"})
    if unknown:
        raise ValueError(f"report_to: unknown integration(s) {unknown}; supported: "
                         f"{['tensorboard', *INTEGRATIONS, 'all', 'none']}")
    callbacks = []
    for name in names:
        if name in INTEGRATIONS:
            module, cls = INTEGRATIONS[name]
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"report_to {name!r}: the {module!r} package is not installed (pip install {module})")
            if jax.process_index() == 0:
                callbacks.append(cls(config))
    return callbacks, "tensorboard" in names
