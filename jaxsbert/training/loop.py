"""``train(config, workdir)``: the whole run — model, data, losses, optimizer, sharded jitted steps,
evaluation, Orbax checkpoints, metrics — and the export of the trained model."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert import data as jdata
from jaxsbert.encoder import SentenceEncoder
from jaxsbert.losses import get_loss
from jaxsbert.models.bundled import resolve_model
from jaxsbert.parallel import distributed, mesh as pmesh
from jaxsbert.training import evaluators as tevals
from jaxsbert.training.checkpoint import Checkpointer
from jaxsbert.training.metrics import MetricsWriter
from jaxsbert.training.optimizer import make_optimizer
from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

log = logging.getLogger("jaxsbert")


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _loss_specs(config: dict, names: list[str]) -> dict[str, dict]:
    """``loss`` is one spec for every dataset, or ``{dataset name: spec}``."""
    loss = config["loss"]
    if "name" in loss:
        return {n: dict(loss) for n in names}
    missing = [n for n in names if n not in loss]
    if missing:
        raise ValueError(f"config 'loss' names losses per dataset {sorted(loss)}, but has none for {missing}")
    return {n: dict(loss[n]) for n in names}


def load_model(config: dict) -> SentenceEncoder:
    encoder = SentenceEncoder.from_pretrained(resolve_model(config["model"]))
    if config.get("max_seq_length"):
        msl = int(config["max_seq_length"])
        tokenizer = copy.copy(encoder.tokenizer)
        tokenizer.max_seq_length = msl
        encoder = SentenceEncoder(dataclasses.replace(encoder.config, max_seq_length=msl), encoder.params,
                                  tokenizer, source=encoder.source)
    return encoder


@dataclasses.dataclass
class Run:
    """What the loop needs, built (and validated) before any compilation."""
    config: dict
    encoder: SentenceEncoder
    loader: jdata.DataLoader
    losses: dict[str, Any]
    has_labels: dict[str, bool]
    evaluators: dict[str, Any]
    total_steps: int


def prepare(config: dict) -> Run:
    """Loads the model, the datasets and the losses and checks that they fit, before anything compiles."""
    data_cfg = config["data"]
    if not data_cfg["train"]:
        raise ValueError("config data.train is empty: name at least one training dataset")
    encoder = load_model(config)
    datasets_ = {name: jdata.load_dataset(spec, data_root=data_cfg.get("data_root"))
                 for name, spec in data_cfg["train"].items()}
    losses, has_labels = {}, {}
    for name, spec in _loss_specs(config, list(datasets_)).items():
        spec = dict(spec)
        losses[name] = get_loss(spec.pop("name"), **spec)
        columns = jdata.split_columns(datasets_[name])
        labels = np.asarray(datasets_[name][columns.label]) if columns.label else None
        losses[name].check_inputs(len(columns.inputs), labels, source=f"dataset {name!r} ({jdata.dataset_source(datasets_[name])})")
        has_labels[name] = columns.label is not None
    loader = jdata.DataLoader(datasets_, encoder.tokenizer, int(config["batch_size"]),
                              batch_sampler=data_cfg["batch_sampler"],
                              multi_dataset_sampler=data_cfg["multi_dataset_sampler"],
                              drop_last=bool(data_cfg["drop_last"]), seed=int(config["seed"]),
                              process_index=jax.process_index(), process_count=jax.process_count(), prefetch=2)
    total = int(config["max_steps"]) if int(config["max_steps"]) > 0 else loader.total_steps(int(config["epochs"]))
    evaluators = {name: tevals.build_evaluator(name, spec, data_root=data_cfg.get("data_root"), losses=losses)
                  for name, spec in data_cfg["eval"].items()}
    return Run(config, encoder, loader, losses, has_labels, evaluators, total)


def _evaluate(run: Run, params, heads, step: int, writer: MetricsWriter) -> dict[str, float]:
    encoder = run.encoder
    encoder.params = params
    results = {}
    for name, evaluator in run.evaluators.items():
        if isinstance(evaluator, tevals.LabelAccuracyEvaluator):
            evaluator.head = heads[evaluator.head_dataset]
        results.update(evaluator(encoder))
    if results:
        writer.write(step, results, kind="eval")
        log.info("eval @ step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return results


def train(config: dict, workdir: str, resume: bool = False) -> dict:
    """Runs training as configured; returns a summary (final metrics, paths, timings)."""
    _setup_logging()
    distributed.maybe_initialize(config.get("distributed"))
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    run = prepare(config)
    encoder = run.encoder
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config, f, indent=2, default=str)

    optim = config["optim"]
    accum = int(optim.get("grad_accum_steps") or 1)
    tx, schedule = make_optimizer(optim, max(run.total_steps // accum, 1))
    dim = encoder.embedding_dim
    head_rng = jax.random.PRNGKey(int(config["seed"]) + 1)
    heads = {name: loss.init_head(jax.random.fold_in(head_rng, i), dim)
             for i, (name, loss) in enumerate(run.losses.items())}
    heads = {k: v for k, v in heads.items() if jax.tree_util.tree_leaves(v)}

    mesh = pmesh.make_mesh(config.get("mesh"))
    state = init_state(encoder.params, heads, tx, int(config["seed"]))
    state_sharding = pmesh.param_sharding(mesh, state)
    state = jax.device_put(state, state_sharding)

    ckpt_cfg = config["checkpoint"]
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(ckpt_cfg["keep"]),
                                async_save=bool(ckpt_cfg["async"]))
    position = jdata.Position()
    if resume:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpointer.directory}")
        state, meta = checkpointer.restore(state)
        position = jdata.Position.of(meta["data_position"])
        log.info("resumed from step %d (data position %s)", int(state["step"]), position)

    compute_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config["compute_dtype"]]
    from jaxsbert.models.sentence_model import SentenceModel
    module = SentenceModel(encoder.config, dtype=compute_dtype, remat=bool(config["remat"]))
    embed_fn = make_embed_fn(module, bool(config["dropout"]))
    batch_sharding = pmesh.batch_sharding(mesh)
    metric_sharding = pmesh.replicated(mesh)
    steps = {}
    for name, loss in run.losses.items():
        fn = make_train_step(embed_fn, loss, name, tx, schedule, accum, has_labels=run.has_labels[name])
        steps[name] = jax.jit(fn, in_shardings=(state_sharding, batch_sharding),
                              out_shardings=(state_sharding, metric_sharding), donate_argnums=0)

    writer = MetricsWriter(workdir, tensorboard=bool(config["tensorboard"]))
    start_step = int(state["step"])
    log.info("training %s: %d steps, global batch %d, %d device(s), mesh %s, losses %s", config["name"],
             run.total_steps, config["batch_size"], jax.device_count(), dict(mesh.shape),
             {n: l.name for n, l in run.losses.items()})
    best_metric, best_value, eval_results = config.get("best_metric"), None, {}
    if config["eval_before"] and start_step == 0 and run.evaluators:
        eval_results = _evaluate(run, state["params"], state["heads"], 0, writer)
        best_value = eval_results.get(best_metric) if best_metric else None

    log_every, eval_every = int(config["log_every"]), int(config["eval_every"])
    ckpt_every = int(ckpt_cfg["every_steps"])
    stop_after = int(config["stop_after_steps"])
    pending, rows_since, t_log = [], 0, time.time()
    stop_on_nonfinite = config["nonfinite"] == "stop"
    step = start_step
    progress = _progress(run.total_steps, start_step)
    iterator = run.loader.iterate(position)

    def save_checkpoint():
        if step not in checkpointer.all_steps():
            checkpointer.save(step, state, {"data_position": position.to_dict(), "step": step})

    try:
        for item in iterator:
            if step >= run.total_steps or (stop_after and step - start_step >= stop_after):
                break
            batch = pmesh.global_batch(mesh, item.batch)
            state, metrics = steps[item.dataset](state, batch)
            step += 1
            position = item.next_position
            pending.append(metrics)
            rows_since += int(np.sum(item.batch["mask"])) * jax.process_count()
            if step % log_every == 0 or step == run.total_steps:
                fetched = jax.device_get(pending)
                now = time.time()
                record = {"loss": float(np.mean([m["loss"] for m in fetched])), "lr": float(fetched[-1]["lr"]),
                          "grad_norm": float(fetched[-1]["grad_norm"]), "pairs_per_s": rows_since / (now - t_log),
                          "epoch": position.epoch + position.index / max(run.loader.steps_per_epoch(position.epoch), 1),
                          "nonfinite": int(state["nonfinite"])}
                writer.write(step, record)
                progress(step, record)
                if stop_on_nonfinite and not all(bool(m["finite"]) for m in fetched):
                    raise FloatingPointError(f"non-finite loss or gradient at step {step} (dataset "
                                             f"{item.dataset!r}, batch {item.position}); the update was skipped")
                pending, rows_since, t_log = [], 0, now
            if eval_every and step % eval_every == 0 and step < run.total_steps and run.evaluators:
                eval_results = _evaluate(run, state["params"], state["heads"], step, writer)
                best_value = _maybe_save_best(run, eval_results, best_metric, best_value, workdir, state)
            if ckpt_every and step % ckpt_every == 0:
                save_checkpoint()
    finally:
        iterator.close()
    save_checkpoint()
    checkpointer.close()
    train_seconds = time.time() - t_start
    summary = {"steps": step, "train_seconds": round(train_seconds, 2), "workdir": workdir}
    if step < run.total_steps:
        log.info("stopped at step %d of %d; continue with: jaxsbert train ... --workdir %s --resume",
                 step, run.total_steps, workdir)
        writer.close()
        summary.update(stopped=True, state=state)
        return summary
    if run.evaluators:
        eval_results = _evaluate(run, state["params"], state["heads"], step, writer)
        best_value = _maybe_save_best(run, eval_results, best_metric, best_value, workdir, state)
    writer.close()
    summary["eval"] = eval_results
    if config["save_model"] and jax.process_index() == 0:
        final_dir = os.path.join(workdir, "model")
        _save_model(run, state, final_dir, eval_results)
        summary["model"] = final_dir
        if best_metric and os.path.isdir(os.path.join(workdir, "best-model")):
            summary["best_model"] = os.path.join(workdir, "best-model")
    summary["state"] = state
    return summary


def _progress(total: int, start: int):
    if jax.process_index() != 0:
        return lambda step, record: None
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(step, record):
        bar.n = step
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", pairs_s=f"{record['pairs_per_s']:.0f}")
        bar.refresh()
        if step >= total:
            bar.close()
    return update


def _maybe_save_best(run: Run, results: dict, metric: str | None, best: float | None, workdir: str, state) -> float | None:
    if not metric or metric not in results:
        return best
    if best is None or results[metric] > best:
        if jax.process_index() == 0:
            _save_model(run, state, os.path.join(workdir, "best-model"), results, overwrite=True)
        return results[metric]
    return best


def _save_model(run: Run, state, directory: str, eval_results: dict, overwrite: bool = True) -> None:
    from jaxsbert.training.model_card import model_card
    from jaxsbert.interop import export

    encoder = SentenceEncoder(run.encoder.config, jax.device_get(state["params"]), run.encoder.tokenizer,
                              source=run.encoder.source)
    encoder.save_pretrained(directory, model_card=model_card(run.config, run, eval_results), overwrite=overwrite)
    for name, head in jax.device_get(state["heads"]).items():   # loss heads live beside the model, not in it
        export.save_loss_head(head, os.path.join(os.path.dirname(os.path.abspath(directory)),
                                                 f"{os.path.basename(directory)}-loss-head-{name}"),
                              loss=run.losses[name].name, **run.losses[name].config_dict())


def export_checkpoint(checkpoint: str, out: str, step: int | None = None, overwrite: bool = False) -> str:
    """A training workdir (its config.json and checkpoints) -> a sentence-transformers directory."""
    workdir = checkpoint
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: not found; --checkpoint must be a jaxsbert training workdir")
    with open(cfg_path) as f:
        config = json.load(f)
    encoder = load_model(config)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    params = checkpointer.restore_raw(step)["params"]
    expected = jax.tree_util.tree_structure(encoder.params)
    if jax.tree_util.tree_structure(params) != expected:
        raise ValueError(f"{checkpointer.directory}: the checkpoint's parameters do not match the model {config['model']}")
    encoder.params = jax.tree_util.tree_map(jnp.asarray, params)
    encoder.save_pretrained(out, overwrite=overwrite)
    return out
