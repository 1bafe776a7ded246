"""The Python trainer, shaped like sentence-transformers' ``SentenceTransformerTrainer``.

    from datasets import Dataset
    from jaxsbert import SentenceEncoder, Trainer, TrainingArguments
    from jaxsbert.losses import CoSENTLoss

    model = SentenceEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    args = TrainingArguments(output_dir="runs/py", num_train_epochs=1, per_device_train_batch_size=16,
                             learning_rate=2e-5, warmup_ratio=0.1)
    trainer = Trainer(model=model, args=args, train_dataset=train, loss=CoSENTLoss(), evaluator=dev_evaluator)
    trainer.train()                   # model.params are the trained parameters afterwards
    model.save_pretrained("runs/py/final")

It maps its arguments onto a config (``TrainingArguments.to_config``: the same keys as ``configs/*.py``)
and runs the same loop as ``jaxsbert train``; the config is written to ``output_dir/config.json``, so
a run started here can be exported with ``jaxsbert export`` like any other.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax

from jaxsbert.config import DEFAULTS, ConfigError, check_config, merge

_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}
_OPTIMIZERS = {"adamw": "adamw", "adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adam": "adam"}


@dataclasses.dataclass
class TrainingArguments:
    """sentence-transformers' ``SentenceTransformerTrainingArguments`` where they mean the same, same defaults.

    Batch size: ``per_device_train_batch_size`` times the number of devices (all hosts) is the global batch,
    as with sentence-transformers under DDP; ``global_batch_size`` sets the global batch directly (what the
    config's ``batch_size`` is). In-batch negatives are always the whole global batch.
    ``eval_strategy``/``save_strategy``: "no", "steps" (every ``eval_steps``/``save_steps``) or "epoch".
    ``warmup_steps``: steps, or a float in [0, 1) as a ratio of the run (transformers 5).
    ``config``: any other config keys (``jaxsbert.config.DEFAULTS``), e.g. ``{"mesh": {"data": 4, "fsdp": 2}}``.
    """
    output_dir: str
    per_device_train_batch_size: int = 8
    global_batch_size: int | None = None
    per_device_eval_batch_size: int = 8
    num_train_epochs: int = 3
    max_steps: int = -1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim: str = "adamw"
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int | float = 0
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    seed: int = 42
    bf16: bool = False
    eval_strategy: str = "no"
    eval_steps: int | None = None
    eval_on_start: bool = False
    save_strategy: str = "steps"
    save_steps: int = 500
    save_total_limit: int | None = None
    logging_steps: int = 500
    batch_sampler: str = "batch_sampler"
    multi_dataset_batch_sampler: str = "proportional"
    report_to: str | Sequence[str] = "none"
    run_name: str | None = None
    metric_for_best_model: str | None = None
    load_best_model_at_end: bool = False
    dataloader_drop_last: bool = False
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def global_batch(self) -> int:
        return int(self.global_batch_size or self.per_device_train_batch_size * jax.device_count())

    def to_config(self) -> dict:
        """The config these arguments stand for (checked as a config file's would be)."""
        def pick(field: str, value: Any, choices: Mapping[str, Any]) -> Any:
            if value not in choices:
                raise ConfigError(f"TrainingArguments.{field}={value!r} is not supported; choose one of {sorted(choices)}")
            return choices[value]

        def every(field: str, strategy: str, steps: int | None) -> Any:
            return pick(field, strategy, {"no": 0, "steps": int(steps or 0), "epoch": "epoch"})

        if float(self.num_train_epochs) != int(self.num_train_epochs):
            raise ConfigError(f"TrainingArguments.num_train_epochs={self.num_train_epochs}: whole epochs only; "
                              "set max_steps for part of an epoch")
        warmup_ratio, warmup_steps = self.warmup_ratio, self.warmup_steps
        if isinstance(warmup_steps, float) and 0 < warmup_steps < 1:
            warmup_ratio, warmup_steps = warmup_steps, 0
        metric = self.metric_for_best_model
        config = {
            "name": self.run_name or os.path.basename(os.path.normpath(self.output_dir)),
            "seed": self.seed,
            "batch_size": self.global_batch(),
            "epochs": int(self.num_train_epochs),
            "max_steps": self.max_steps,
            "optim": {"name": pick("optim", self.optim, _OPTIMIZERS), "lr": self.learning_rate,
                      "weight_decay": self.weight_decay, "b1": self.adam_beta1, "b2": self.adam_beta2,
                      "eps": self.adam_epsilon,
                      "schedule": pick("lr_scheduler_type", self.lr_scheduler_type, _SCHEDULES),
                      "warmup_ratio": warmup_ratio, "warmup_steps": int(warmup_steps) or None,
                      "max_grad_norm": self.max_grad_norm, "grad_accum_steps": self.gradient_accumulation_steps},
            "compute_dtype": "bfloat16" if self.bf16 else "float32",
            "log_every": self.logging_steps,
            "eval_every": every("eval_strategy", self.eval_strategy, self.eval_steps or self.logging_steps),
            "eval_before": self.eval_on_start,
            "checkpoint": {"every_steps": every("save_strategy", self.save_strategy, self.save_steps),
                           **({"keep": self.save_total_limit} if self.save_total_limit else {})},
            "best_metric": metric[len("eval_"):] if metric and metric.startswith("eval_") and metric != "eval_loss"
            else metric,
            "report_to": self.report_to,
            "data": {"batch_sampler": self.batch_sampler, "multi_dataset_sampler": self.multi_dataset_batch_sampler,
                     "drop_last": self.dataloader_drop_last},
        }
        config = merge(merge(DEFAULTS, config, source="TrainingArguments"), dict(self.config),
                       source="TrainingArguments.config")
        check_config(config, source="TrainingArguments")
        return config


class Trainer:
    """Trains a :class:`jaxsbert.SentenceEncoder` in place, like ``SentenceTransformerTrainer``.

    ``train_dataset``: a ``datasets.Dataset`` (columns as sentence-transformers: inputs in order, then an
    optional ``label``/``score``; named ``train``), or a ``DatasetDict`` / dict of them by name (a dataset's name
    is part of its shuffle's seed, as in a config's ``data.train``) for multi-dataset training, with
    ``loss`` a loss or a dict of losses by the same names (default CoSENTLoss, as sentence-transformers).
    ``eval_dataset`` (a Dataset or a dict of them) gives ``eval_loss`` (``eval_{name}_loss``);
    ``evaluator`` is an evaluator or a list of them (``jaxsbert.evaluation``); ``callbacks`` are
    :class:`jaxsbert.TrainerCallback` s.
    """

    def __init__(self, model=None, args: TrainingArguments | None = None, train_dataset=None, eval_dataset=None,
                 loss=None, evaluator=None, callbacks: Sequence[Any] | None = None):
        from jaxsbert.encoder import SentenceEncoder
        from jaxsbert.models.bundled import resolve_model

        if args is None:
            raise ValueError("Trainer needs args=TrainingArguments(output_dir=...)")
        if train_dataset is None:
            raise ValueError("Trainer needs a train_dataset")
        if isinstance(model, str) or model is None:
            model = SentenceEncoder.from_pretrained(resolve_model(model or DEFAULTS["model"]))
        self.model, self.args, self.callbacks = model, args, list(callbacks or [])
        self.train_dataset = _named(train_dataset, "train")
        self.loss = self._losses(loss)
        self.evaluators = self._evaluators(evaluator, eval_dataset)
        self.config = args.to_config()
        self.config["model"] = model.source or self.config["model"]
        self.config["data"]["train"] = {name: _describe(ds) for name, ds in self.train_dataset.items()}
        self.config["loss"] = {name: {"name": loss.name, **loss.config_dict()} for name, loss in self.loss.items()}
        self.state = None

    def _losses(self, loss) -> dict:
        from jaxsbert.losses import Loss, get_loss

        if loss is None or isinstance(loss, (str, Loss)):
            loss = {name: loss for name in self.train_dataset}
        losses = {name: get_loss(l or "CoSENTLoss") if not isinstance(l, Loss) else l
                  for name, l in dict(loss).items()}
        missing = sorted(set(self.train_dataset) - set(losses))
        if missing:
            raise ValueError(f"Trainer: loss names losses for {sorted(losses)} but none for dataset(s) {missing}")
        return {name: losses[name] for name in self.train_dataset}

    def _evaluators(self, evaluator, eval_dataset) -> dict:
        from jaxsbert.training.eval_loss import LossEvaluator

        listed = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator] if evaluator else []
        out = {getattr(e, "name", "") or f"evaluator{i}": e for i, e in enumerate(listed)}
        if eval_dataset is not None:
            single = not isinstance(eval_dataset, Mapping)
            for name, ds in _named(eval_dataset, "eval").items():
                key = name if name in self.loss else next(iter(self.loss))
                out[f"eval-loss-{name}"] = LossEvaluator(ds, self.loss[key], name="eval" if single else f"eval_{name}",
                                                         batch_size=self.args.per_device_eval_batch_size,
                                                         head_dataset=key)
        return out

    def add_callback(self, callback) -> None:
        self.callbacks.append(callback)

    def train(self, resume_from_checkpoint: bool = False) -> dict:
        """Trains; returns the run's summary (steps, train_seconds, eval, model path, ...). The model's
        parameters are the trained ones afterwards (the best evaluation's with ``load_best_model_at_end``)."""
        from jaxsbert.training.loop import train

        summary = train(self.config, self.args.output_dir, resume=resume_from_checkpoint,
                        objects={"encoder": self.model, "datasets": self.train_dataset, "losses": self.loss,
                                 "evaluators": self.evaluators},
                        callbacks=self.callbacks, callback_args=self.args)
        self.state = summary.pop("state")
        best = summary.get("best_model")
        if self.args.load_best_model_at_end and best:
            from jaxsbert.encoder import SentenceEncoder
            self.model.params = SentenceEncoder.from_pretrained(best).params
        else:
            self.model.params = jax.device_get(self.state["params"])
        return summary

    def evaluate(self) -> dict[str, float]:
        """Runs the evaluators (and the eval loss) on the model as it is now."""
        results = {}
        for evaluator in self.evaluators.values():
            if hasattr(evaluator, "head_dataset") and self.state is not None:
                evaluator.head = jax.device_get(self.state["heads"]).get(evaluator.head_dataset, {})
            results.update(evaluator(self.model))
        return results

    def save_model(self, output_dir: str | None = None) -> str:
        directory = output_dir or os.path.join(self.args.output_dir, "model")
        self.model.save_pretrained(directory)
        return directory


def _named(datasets_, default: str) -> dict:
    """A Dataset -> {default: it}; a DatasetDict / dict -> a plain dict in its order."""
    if isinstance(datasets_, Mapping):
        return dict(datasets_)
    return {default: datasets_}


def _describe(dataset) -> Any:
    """What config.json records of a dataset passed as an object: its own spec, or its size and columns."""
    if isinstance(dataset, (str, Mapping)):
        return dataset
    from jaxsbert import data as jdata
    return {"source": jdata.dataset_source(dataset), "num_rows": len(dataset), "columns": list(dataset.column_names)}
