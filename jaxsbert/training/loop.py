"""``train(config, workdir)``: the whole run — model, data, losses, optimizer, sharded jitted steps,
evaluation, Orbax checkpoints, metrics — and the export of the trained model."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert import compilation_cache, data as jdata
from jaxsbert.encoder import SentenceEncoder
from jaxsbert.losses import get_loss
from jaxsbert.models.bundled import resolve_model
from jaxsbert.parallel import distributed, mesh as pmesh
from jaxsbert.training import evaluators as tevals, preemption
from jaxsbert.training.callbacks import CallbackList, TrainerState, reporting_callbacks
from jaxsbert.training.checkpoint import Checkpointer
from jaxsbert.training.compact_vocab import CompactVocab, why_not as compaction_blocked
from jaxsbert.training.metrics import MetricsWriter
from jaxsbert.training.optimizer import make_optimizer, update_check_never_fires
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


def load_model(config: dict, encoder: SentenceEncoder | None = None) -> SentenceEncoder:
    """The config's model (or ``encoder``, already loaded), with the config's ``keep_layers`` and ``max_seq_length``
    if it sets them."""
    encoder = encoder or SentenceEncoder.from_pretrained(resolve_model(config["model"]))
    if config.get("keep_layers") is not None:
        from jaxsbert.models.layers import keep_layers
        encoder = keep_layers(encoder, config["keep_layers"])
    if config.get("max_seq_length"):
        msl = int(config["max_seq_length"])
        tokenizer = copy.copy(encoder.tokenizer)
        tokenizer.max_seq_length = msl
        encoder = encoder.replace(config=dataclasses.replace(encoder.config, max_seq_length=msl), tokenizer=tokenizer)
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
    frozen: dict = dataclasses.field(default_factory=dict)   # {dataset: parameters its loss uses untrained}


def initial_heads(run: Run, seed: int) -> dict:
    """{dataset: its loss's trainable head} at the start of a run of ``seed`` (datasets whose loss has none
    left out): each drawn from ``seed + 1`` and the dataset's place among the losses."""
    head_rng = jax.random.PRNGKey(seed + 1)
    heads = {name: loss.init_head(jax.random.fold_in(head_rng, i), run.encoder.embedding_dim,
                                  **({"params": run.encoder.params} if loss.head_from_model else {}))  # CT's model1
             for i, (name, loss) in enumerate(run.losses.items())}
    return {k: v for k, v in heads.items() if jax.tree_util.tree_leaves(v)}


def prepare(config: dict, *, encoder: SentenceEncoder | None = None, datasets: dict | None = None,
            losses: dict | None = None, evaluators: dict | None = None) -> Run:
    """Loads the model, the datasets and the losses and checks that they fit, before anything compiles.

    The Python :class:`jaxsbert.Trainer` passes objects instead of specs: an ``encoder``, ``datasets``
    ({name: datasets.Dataset or spec}) for ``data.train``, ``losses`` ({name: Loss}) for ``loss``, and
    ``evaluators`` ({name: callable(encoder) -> metrics}) beside those of ``data.eval``."""
    data_cfg = config["data"]
    train_specs = datasets if datasets is not None else data_cfg["train"]
    if not train_specs:
        raise ValueError("config data.train is empty: name at least one training dataset")
    encoder = load_model(config, encoder)
    if getattr(encoder.tokenizer, "chat_format", None) is not None:   # prompts would be prefixed, not system messages
        for where, specs in (("data.train", train_specs), ("data.eval", data_cfg.get("eval") or {})):
            for name, spec in specs.items():
                if isinstance(spec, dict) and spec.get("prompts"):
                    raise ValueError(f"{where}.{name}.prompts: not supported for a model that renders texts "
                                     "through its chat template (sentence-transformers puts the prompt in a "
                                     "system message); leave prompts out or pin the model to the text modality")
    on_bad_row = data_cfg.get("on_bad_row", "error")
    sources = {name: jdata.open_source(spec, data_root=data_cfg.get("data_root"), on_bad_row=on_bad_row)
               for name, spec in train_specs.items()}
    if losses is None:
        losses = {}
        for name, spec in _loss_specs(config, list(sources)).items():
            spec = dict(spec)
            losses[name] = get_loss(spec.pop("name"), **spec)
    has_labels = {}
    for name in sources:
        source = sources[name]
        if len(source) == 0:
            raise ValueError(f"dataset {name!r} ({source.where}): the dataset is empty")
        labels = None
        if isinstance(source, jdata.ArrowSource):     # checked whole: file, column, row
            jdata.validate_dataset(source.dataset, name=f"dataset {name!r}")
            labels = source.all_labels()
        elif source.columns.label is not None:         # read per batch: the values are checked as they are read
            labels = np.zeros((0, *source.label_shape), source.label_dtype)
        losses[name].check_inputs(len(source.columns.inputs), labels, source=f"dataset {name!r} ({source.where})")
        if labels is not None:      # a label that is a vector (teacher embeddings) against the model's dimension
            losses[name].check_label_shape(labels.shape[1:], len(source.columns.inputs), encoder.embedding_dim,
                                           source=f"dataset {name!r} ({source.where}), label column "
                                                  f"{source.columns.label!r}")
        has_labels[name] = source.columns.label is not None
    # parameters a loss uses but does not train (GISTEmbedLoss's guide), checked against the model here
    frozen = {name: p for name, loss in losses.items() if (p := loss.frozen_params(encoder)) is not None}
    agree = None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        def agree(values):       # the element-wise max over processes (every process calls it in step)
            return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int64))).max(axis=0)
    loader = jdata.DataLoader(sources, encoder.tokenizer, int(config["batch_size"]),
                              batch_sampler=data_cfg["batch_sampler"],
                              multi_dataset_sampler=data_cfg["multi_dataset_sampler"],
                              drop_last=bool(data_cfg["drop_last"]), seed=int(config["seed"]),
                              process_index=jax.process_index(), process_count=jax.process_count(), agree=agree,
                              prefetch=2, packing=_packing(data_cfg["packing"], losses),
                              pack_length=data_cfg["pack_length"],
                              max_segments=int(data_cfg["max_segments"]), row_multiple=jax.local_device_count(),
                              row_length_step=128 if jax.default_backend() == "tpu" else 8,
                              run_steps=int(config["max_steps"]) if int(config["max_steps"]) > 0 else None,
                              chunk_rows={n: loss.grad_cache_chunk_rows for n, loss in losses.items()
                                          if loss.grad_cache_mini_batch_size() is not None},
                              label_checks={n: (lambda labels, loss=loss: loss.check_label_values(labels, ""))
                                            for n, loss in losses.items()})
    total = int(config["max_steps"]) if int(config["max_steps"]) > 0 else loader.total_steps(int(config["epochs"]))
    evaluators = {**{name: tevals.build_evaluator(name, spec, data_root=data_cfg.get("data_root"), losses=losses)
                     for name, spec in data_cfg["eval"].items()}, **(evaluators or {})}
    return Run(config, encoder, loader, losses, has_labels, evaluators, total, frozen)


def _packing(setting: Any, losses: dict) -> dict[str, bool]:
    """Which datasets are packed: "auto" packs every dataset whose loss trains on packed batches."""
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(losses))
        if unknown:
            raise ValueError(f"data.packing names unknown dataset(s) {unknown}; datasets: {sorted(losses)}")
        packed = {name: bool(setting.get(name, False)) for name in losses}
    elif setting == "auto" or isinstance(setting, bool):
        packed = {name: setting is True or (setting == "auto" and loss.supports_packing)
                  for name, loss in losses.items()}
    else:
        raise ValueError(f"data.packing must be 'auto', True, False or {{dataset: bool}}; got {setting!r}")
    for name, loss in losses.items():
        if packed[name] and not loss.supports_packing:
            raise ValueError(f"data.packing: dataset {name!r}: {loss.name} cannot train on packed batches; "
                             f"set data.packing to 'auto' or False (or {{{name!r}: False}})")
    return packed


def _evaluate(run: Run, state, step: int, writer: MetricsWriter, final: bool = False) -> dict[str, float]:
    """Runs the evaluators (during training, those not marked ``during_training=False``) on ``state``."""
    encoder = run.encoder
    params, heads = pmesh.local_copy((state["params"], state["heads"]))   # encode runs process-locally, on one device
    encoder.params = params
    results = {}
    for name, evaluator in run.evaluators.items():
        if not (final or step == 0 or getattr(evaluator, "during_training", True)):
            continue
        if hasattr(evaluator, "head_dataset"):      # evaluators of a loss head (SoftmaxLoss's classifier)
            evaluator.head = heads[evaluator.head_dataset]
        results.update(evaluator(encoder))
    if results:
        writer.write(step, results, kind="eval")
        log.info("eval @ step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return results


def train(config: dict, workdir: str, resume: bool = False, *, objects: dict | None = None,
          callbacks: list | tuple = (), callback_args: Any = None) -> dict:
    """Runs training as configured; returns a summary (final metrics, paths, timings).

    ``objects`` are :func:`prepare`'s keyword arguments (the Python Trainer's model, datasets, losses and
    evaluators); ``callbacks`` are :class:`jaxsbert.training.callbacks.TrainerCallback` s, called with
    ``callback_args`` (default: the config) as their ``args``.

    The workdir is locked for the run. SIGTERM / SIGINT save a checkpoint at the next step boundary and
    return a summary with ``stopped=True`` and ``signal`` (resume with ``resume=True``).
    """
    _setup_logging()
    distributed.maybe_initialize(config.get("distributed"))
    os.makedirs(workdir, exist_ok=True)
    with preemption.WorkdirLock(workdir, jax.process_index(), jax.process_count()), \
            preemption.StopSignals(jax.process_count(), sync_every=int(config["log_every"])) as stop:
        return _train(config, workdir, resume, stop, objects or {}, list(callbacks),
                      config if callback_args is None else callback_args)


def _every(setting: Any, step: int, epoch_ended: bool) -> bool:
    """Whether a periodic action set to ``setting`` (steps, "epoch", or 0 / None: never) runs after ``step``."""
    if setting == "epoch":
        return epoch_ended
    return bool(setting) and step % int(setting) == 0


def _train(config: dict, workdir: str, resume: bool, stop: preemption.StopSignals, objects: dict,
           callbacks: list, callback_args: Any) -> dict:
    t_start = time.time()
    cache = compilation_cache.enable(config["compilation_cache"])
    log.info("XLA compilation cache: %s", cache or "off")
    reporters, tensorboard = reporting_callbacks(config.get("report_to"), config)
    run = prepare(config, **objects)
    encoder = run.encoder
    config_path = os.path.join(workdir, "config.json")
    started_before = os.path.exists(config_path)
    if jax.process_count() > 1:     # process 0's answer: it may write config.json before another process looks
        from jax.experimental import multihost_utils
        started_before = bool(multihost_utils.broadcast_one_to_all(np.asarray(started_before)))
    if jax.process_index() == 0:
        with open(config_path + ".tmp", "w") as f:
            json.dump(config, f, indent=2, default=str)
        os.replace(config_path + ".tmp", config_path)    # atomic: a kill never leaves half a config

    optim = config["optim"]
    accum = int(optim.get("grad_accum_steps") or 1)
    tx, schedule = make_optimizer(optim, max(run.total_steps // accum, 1))
    heads = initial_heads(run, int(config["seed"]))

    mesh = pmesh.make_mesh(config.get("mesh"))
    pmesh.check_batch_size(mesh, int(config["batch_size"]))
    # built straight into its FSDP shards: the optimizer moments never exist whole on one device
    state, state_sharding = pmesh.sharded_call(
        lambda params, heads, frozen: init_state(params, heads, tx, int(config["seed"]), frozen=frozen),
        mesh, encoder.params, heads, run.frozen)

    ckpt_cfg = config["checkpoint"]
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(ckpt_cfg["keep"]),
                                async_save=bool(ckpt_cfg["async"]))
    try:
        state, position = _start_or_resume(checkpointer, state, resume, started_before, workdir, run.total_steps)
    except BaseException:
        checkpointer.close()
        raise
    if position is None:     # a resumed run that had finished: nothing to evaluate, log or save
        checkpointer.close()
        model = os.path.join(workdir, "model")
        return {"steps": int(state["step"]), "finished": True, "workdir": workdir,
                **({"model": model} if os.path.isdir(model) else {}), "state": state}

    vocab = _compact_vocab(config, run, state, mesh, state_sharding)
    if vocab:     # the step trains the compact table; checkpoints, evaluations and the model get the whole one
        state = vocab.compact(state)
        state_sharding = pmesh.param_sharding(mesh, state)

    def whole(train_state):
        return vocab.expand(train_state) if vocab else train_state

    def to_device(batch):
        return pmesh.global_batch(mesh, vocab.remap(batch) if vocab else batch)

    from jaxsbert.models.sentence_model import SentenceModel, compute_dtype
    module = SentenceModel(vocab.model_config(encoder.config) if vocab else encoder.config,
                           dtype=compute_dtype(config["compute_dtype"]), remat=bool(config["remat"]),
                           max_segments=int(config["data"]["max_segments"]), attention_impl=config["attention_impl"])
    embed_fn = make_embed_fn(module, bool(config["dropout"]))
    batch_sharding = pmesh.batch_sharding(mesh)
    metric_sharding = pmesh.replicated(mesh)
    # the step's check of the new parameters is compiled out when no update of this run can trip it
    trainable = {"params": state["params"], "heads": state["heads"]}
    check_update = not update_check_never_fires(optim, max(run.total_steps // accum, 1), _max_abs(trainable),
                                                sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(trainable)))
    steps = {}
    for name, loss in run.losses.items():
        fn = make_train_step(embed_fn, loss, name, tx, schedule, accum, has_labels=run.has_labels[name],
                             check_update=check_update)
        steps[name] = jax.jit(fn, in_shardings=(state_sharding, batch_sharding),
                              out_shardings=(state_sharding, metric_sharding), donate_argnums=0)

    # every program the first epoch's batches need, compiled before the first step: throughput is steady
    # from there on, and a program that does not fit fails here rather than mid-run
    t_compile = time.time()
    start_step = int(state["step"])
    programs = run.loader.shape_positions(position.epoch) if start_step < run.total_steps else []
    _compile_all(steps, programs, run.loader, to_device, state)
    log.info("compiled %d train step program(s) in %.1f s", len(programs), time.time() - t_compile)

    writer = MetricsWriter(workdir, tensorboard=bool(config["tensorboard"]) or tensorboard)
    log.info("training %s: %d steps, global batch %d, %d device(s), mesh %s, losses %s", config["name"],
             run.total_steps, config["batch_size"], jax.device_count(), dict(mesh.shape),
             {n: l.name for n, l in run.losses.items()})
    best_metric, best_value, eval_results = config.get("best_metric"), None, {}
    step = start_step
    hooks = CallbackList(reporters + callbacks, callback_args, TrainerState(
        global_step=step, max_steps=run.total_steps, num_train_epochs=int(config["epochs"]),
        epoch=position.epoch + position.index / max(run.loader.steps_per_epoch(position.epoch), 1),
        logging_steps=int(config["log_every"]),
        eval_steps=config["eval_every"] if isinstance(config["eval_every"], int) else 0,
        is_world_process_zero=jax.process_index() == 0))
    hooks.on_train_begin()

    def evaluate(trained, final=False):
        nonlocal eval_results, best_value
        eval_results = _evaluate(run, trained, step, writer, final)
        best_value = _maybe_save_best(run, eval_results, best_metric, best_value, workdir, trained)
        hooks.state.best_metric = best_value
        hooks.state.log_history.append({"step": step, **eval_results})
        hooks.on_evaluate(metrics=eval_results)

    def save_checkpoint(whole_state):
        if step not in checkpointer.all_steps():
            checkpointer.save(step, whole_state, {"data_position": position.to_dict(), "step": step})
            hooks.on_save(step=step)

    if config["eval_before"] and start_step == 0 and run.evaluators:
        evaluate(whole(state))

    stop_after = int(config["stop_after_steps"])
    stop_on_nonfinite = config["nonfinite"] == "stop"
    log_step = _logger(run, writer, checkpointer, hooks, _progress(run.total_steps, start_step))
    iterator = run.loader.iterate(position, limit=max(run.total_steps - start_step, 0))
    control = hooks.control
    try:
        for item in _batches(iterator, lambda: (save_checkpoint(whole(state)), checkpointer.close())):
            if step >= run.total_steps or (stop_after and step - start_step >= stop_after) or stop.should_stop(step) \
                    or control.should_training_stop:
                break
            state, metrics = steps[item.dataset](state, to_device(item.batch))
            step, position = step + 1, item.next_position
            epoch_ended = position.epoch > item.position.epoch
            hooks.state.global_step = step
            hooks.state.epoch = position.epoch + position.index / max(run.loader.steps_per_epoch(position.epoch), 1)
            hooks.on_step_end(metrics=metrics)
            # the periodic actions: log, evaluate, checkpoint
            if _every(config["log_every"], step, False) or step == run.total_steps or control.should_log:
                if log_step(step, state, metrics, item, flush=True) and stop_on_nonfinite:
                    save_checkpoint(whole(state))      # the skipped update left the state finite
                    checkpointer.close()
                    raise FloatingPointError(log_step.nonfinite_message)
            else:
                log_step(step, state, metrics, item, flush=False)
            if (_every(config["eval_every"], step, epoch_ended) or control.should_evaluate) \
                    and step < run.total_steps and run.evaluators:
                t_eval = time.time()
                evaluate(whole(state))
                log_step.exclude(time.time() - t_eval)       # pairs/s counts training time only
            if _every(ckpt_cfg["every_steps"], step, epoch_ended) or control.should_save:
                save_checkpoint(whole(state))
            control.should_log = control.should_evaluate = control.should_save = False
    finally:
        iterator.close()
        log_step.progress.close()
    state = whole(state)
    save_checkpoint(state)
    checkpointer.close()
    train_seconds = time.time() - t_start
    summary = {"steps": step, "train_seconds": round(train_seconds, 2), "workdir": workdir,
               "rows_read": run.loader.rows_read(), "bad_rows": run.loader.bad_rows()}
    log.info("process %d read %s rows of datasets of %s rows%s", jax.process_index(), summary["rows_read"],
             {n: len(s) for n, s in run.loader.sources.items()},
             f"; skipped {summary['bad_rows']} bad row(s)" if summary["bad_rows"] else "")
    summary["nonfinite_steps"] = int(state["nonfinite"])
    if summary["nonfinite_steps"]:
        log.warning("%d of %d steps had a non-finite loss or gradient; their updates were skipped "
                    "(nonfinite='stop' stops at the first)", summary["nonfinite_steps"], step)
    if step < run.total_steps or stop.requested:
        by = f"{stop.name}: " if stop.requested else "a callback: " if control.should_training_stop else ""
        log.info("%sstopped at step %d of %d; checkpoint saved; continue with: jaxsbert train CONFIG --workdir %s "
                 "--resume", by, step, run.total_steps, workdir)
        writer.close()
        hooks.on_train_end()
        summary.update(stopped=True, state=state, **({"signal": stop.name} if stop.requested else {}))
        return summary
    if run.evaluators:
        evaluate(state, final=True)
    writer.close()
    summary["eval"] = eval_results
    if config["save_model"]:
        trained = pmesh.local_copy({"params": state["params"], "heads": state["heads"]})   # on every process
    if config["save_model"] and jax.process_index() == 0:
        final_dir = os.path.join(workdir, "model")
        _save_model(run, trained, final_dir, eval_results)
        summary["model"] = final_dir
        if best_metric and os.path.isdir(os.path.join(workdir, "best-model")):
            summary["best_model"] = os.path.join(workdir, "best-model")
    hooks.on_train_end()
    summary["state"] = state
    return summary


def _logger(run: Run, writer: MetricsWriter, checkpointer: Checkpointer, hooks: CallbackList, progress):
    """log_step(step, state, metrics, item, flush): keeps each step's metrics (on device) until ``flush``, then
    writes one record of the steps since the last (mean loss; the last step's lr and gradient norm; ``lr_steps``,
    each step's learning rate; pairs/s) and returns whether any of them was not finite (``nonfinite_message``
    then names the first)."""
    pending, pending_at, t_log = [], [], [time.time()]

    def log_step(step, state, metrics, item, flush):
        pending.append(metrics)
        pending_at.append((step, item.dataset, item.position))
        if not flush:
            return False
        fetched = jax.device_get(pending)
        now = time.time()
        rows = sum(int(m["rows"]) for m in fetched)   # valid rows of the global batches, all hosts
        position = item.next_position
        record = {"loss": float(np.mean([m["loss"] for m in fetched])), "lr": float(fetched[-1]["lr"]),
                  "grad_norm": float(fetched[-1]["grad_norm"]), "pairs_per_s": rows / (now - t_log[0]),
                  "epoch": position.epoch + position.index / max(run.loader.steps_per_epoch(position.epoch), 1),
                  "nonfinite": int(state["nonfinite"]), "lr_steps": [float(m["lr"]) for m in fetched],
                  "total_steps": run.total_steps}
        if run.loader.bad_rows():
            record["bad_rows"] = run.loader.bad_rows()
        writer.write(step, record)
        progress(step, record)
        hooks.state.log_history.append({"step": step, **{k: v for k, v in record.items() if k != "lr_steps"}})
        hooks.on_log(logs=record)
        bad = next((at for m, at in zip(fetched, pending_at) if not bool(m["finite"])), None)
        if bad is not None:
            log_step.nonfinite_message = _nonfinite_message(run, bad, step, checkpointer.directory)
        pending.clear()
        pending_at.clear()
        t_log[0] = now
        return bad is not None

    log_step.progress = progress
    log_step.exclude = lambda seconds: t_log.__setitem__(0, t_log[0] + seconds)   # time spent on other things
    return log_step


def _batches(iterator, on_bad_row):
    """The iterator's batches; on a bad row (on_bad_row="error") ``on_bad_row()`` saves the checkpoint of
    the last good step before the error goes on."""
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except jdata.BadRowError as e:
            on_bad_row()
            raise jdata.BadRowError(f"{e}. The checkpoint of the last good step is saved: fix the row, or set "
                                    "data.on_bad_row='skip', and continue with --resume") from None
        yield item


def _compact_vocab(config: dict, run: Run, state: dict, mesh, sharding) -> CompactVocab | None:
    """The word-embedding rows to train (:mod:`jaxsbert.training.compact_vocab`), or None for the whole table."""
    if not config["compact_vocab"]:
        return None
    blocked = compaction_blocked(config["optim"])
    token_ids = run.loader.token_ids()
    if token_ids is None:
        blocked = "a dataset is tokenized per batch, so its tokens are not known up front"
    if run.frozen:
        blocked = "a loss runs a guide model on the batches' token ids (GISTEmbedLoss)"
    if any(loss.head_from_model for loss in run.losses.values()):
        blocked = "a loss trains a copy of the model as its head (ContrastiveTension's model1)"
    if any(getattr(loss, "predicts_tokens", False) for loss in run.losses.values()):
        blocked = "a loss predicts tokens over the whole vocabulary (DenoisingAutoEncoderLoss's decoder)"
    if blocked:
        log.info("training the whole word-embedding table (compact_vocab does not apply: %s)", blocked)
        return None
    vocab = CompactVocab.plan(token_ids, state, mesh, sharding)
    if vocab:
        log.info("training %d of the word-embedding table's %d rows: the tokens of the training data "
                 "(compact_vocab)", vocab.size, vocab.vocab_size)
    return vocab


def _compile_all(steps: dict, positions: list, loader: jdata.DataLoader, to_device, state) -> None:
    """Compiles the train step for the batch at each position. XLA compiles in threads (it releases the
    GIL), so one program compiles while the next is traced and lowered, and several compile at once on
    several cores (two MiniLM programs on 2 cores: ~15 s one after the other, ~12 s this way)."""
    if not positions:
        return
    with ThreadPoolExecutor(max_workers=min(len(positions), os.cpu_count() or 1)) as pool:
        futures = []
        for pos in positions:
            item = loader.batch_at(pos)
            futures.append(pool.submit(steps[item.dataset].lower(state, to_device(item.batch)).compile))
        for future in futures:
            future.result()


def _max_abs(tree) -> float:
    """The largest magnitude in a tree of arrays (NaN if any element is): in numpy where every array is in
    this process's CPU memory, else one small jitted reduction (no transfer of the arrays to the host, and
    arrays sharded across processes stay sharded)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if np.size(x)]
    if not leaves:
        return 0.0
    if all(pmesh.in_host_memory(x) for x in leaves):
        return float(np.max([np.max(np.abs(np.asarray(x))) for x in leaves]))   # np.max: a NaN wins
    return float(jax.jit(lambda xs: jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in xs])))(leaves))


def _start_or_resume(checkpointer: Checkpointer, state, resume: bool, started_before: bool, workdir: str,
                     total_steps: int | None = None):
    """-> (train state, data position): fresh, or the latest readable checkpoint's with ``resume``.

    With ``total_steps``: a resumed run that had finished (its checkpoint is at ``total_steps`` or later
    and what the end of a run writes is there: the model saved after that checkpoint, or without
    ``save_model`` the final evaluation) is logged as finished and its position is None: the caller
    then stops without evaluating or writing anything."""
    if not resume and checkpointer.latest_step() is not None:
        raise FileExistsError(f"{workdir} holds the checkpoints of an earlier run (steps {checkpointer.all_steps()}); "
                              "continue it with --resume, or choose another --workdir")
    if resume and checkpointer.latest_step() is None:
        if not started_before:
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpointer.directory}")
        log.warning("--resume: %s has no checkpoint yet (the run stopped before its first); starting from step 0",
                    checkpointer.directory)
    elif resume:
        state, meta = checkpointer.restore(state)
        position = jdata.Position.of(meta["data_position"])
        step = int(state["step"])
        if total_steps is not None and step >= total_steps:
            with open(os.path.join(workdir, "config.json")) as f:
                config = json.load(f)
            model = os.path.join(workdir, "model", "modules.json")
            checkpoint = os.path.join(checkpointer.directory, str(step))
            if config.get("save_model", True):      # written after the final checkpoint (not an earlier run's)
                finished = os.path.exists(model) and (not os.path.exists(checkpoint)
                                                      or os.path.getmtime(model) >= os.path.getmtime(checkpoint))
            else:
                from jaxsbert.training.metrics import read_metrics
                finished = not config["data"].get("eval") or any(
                    r.get("kind") == "eval" and r.get("step") == step for r in
                    (read_metrics(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else []))
            if finished:
                log.info("--resume: the run in %s finished at step %d of %d%s; nothing to do", workdir, step,
                         total_steps, f" (model: {os.path.dirname(model)})" if os.path.exists(model) else "")
                return state, None
        log.info("resumed from step %d (data position %s)", step, position)
        return state, position
    return state, jdata.Position()


def _nonfinite_message(run: Run, bad: tuple, step: int, checkpoints: str) -> str:
    bad_step, dataset, position = bad
    rows = np.sort(np.asarray(run.loader.rows_at(position)[1]))
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        rows_text = f"rows {rows[0]}-{rows[-1]}"
    else:
        rows_text = "rows " + ", ".join(str(r) for r in rows[:32]) + (f", ... ({len(rows)} rows)" if len(rows) > 32 else "")
    spec = run.config["data"]["train"].get(dataset)
    source = spec.get("source") if isinstance(spec, dict) else spec
    return (f"non-finite loss or gradient at step {bad_step} (dataset {dataset!r} ({source}), epoch "
            f"{position.epoch} batch {position.index}, {rows_text}); the update was skipped. Stopping "
            f"(nonfinite='stop'): the checkpoint of step {step} in {checkpoints} holds the last finite "
            "parameters. Check those rows and the learning rate, or set nonfinite='skip' to skip such steps")


def _progress(total: int, start: int):
    if jax.process_index() != 0:
        update = lambda step, record: None
        update.close = lambda: None
        return update
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(step, record):
        bar.n = step
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", pairs_s=f"{record['pairs_per_s']:.0f}")
        bar.refresh()
        if step >= total:
            bar.close()
    update.close = bar.close       # before an error's message, so that the message is the last line
    return update


def _maybe_save_best(run: Run, results: dict, metric: str | None, best: float | None, workdir: str, state) -> float | None:
    if not metric or metric not in results:
        return best
    if best is None or results[metric] > best:   # the same on every process: evaluation is deterministic
        trained = pmesh.local_copy({"params": state["params"], "heads": state["heads"]})   # on every process
        if jax.process_index() == 0:
            _save_model(run, trained, os.path.join(workdir, "best-model"), results, overwrite=True)
        return results[metric]
    return best


def _save_model(run: Run, state, directory: str, eval_results: dict, overwrite: bool = True,
                step: int | None = None) -> None:
    """Writes the model (and its loss heads beside it) with the model card of the run: read from the
    workdir (``directory``'s parent: config.json, metrics.jsonl). ``step``: that of these parameters; by
    default the step of the evaluation that gave ``eval_results`` (the last logged step without any)."""
    from jaxsbert.interop import export
    from jaxsbert.training import model_card

    workdir = os.path.dirname(os.path.abspath(directory))
    facts = model_card.dataset_facts(run.loader.sources, run.losses)
    logged = model_card.read_run(workdir, 1 << 62, facts, config=run.config, total_steps=run.total_steps)
    if step is None:
        step = model_card.saved_step(logged.records, eval_results)
    step = run.total_steps if step is None else step
    training = dataclasses.replace(logged, step=step, records=[r for r in logged.records if r["step"] <= step])
    encoder = copy.copy(run.encoder)          # its prompts and similarity function, these parameters
    encoder.params = jax.device_get(state["params"])
    encoder.save_pretrained(directory, overwrite=overwrite, base_model=model_card.base_model_id(run.config["model"]),
                            training=training)
    for name, head in jax.device_get(state["heads"]).items():   # loss heads live beside the model, not in it
        if run.losses[name].head_from_model or getattr(run.losses[name], "predicts_tokens", False):
            continue      # a copy of the model (ContrastiveTension), TSDAE's decoder: in the checkpoints
        export.save_loss_head(head, os.path.join(os.path.dirname(os.path.abspath(directory)),
                                                 f"{os.path.basename(directory)}-loss-head-{name}"),
                              loss=run.losses[name].name, **run.losses[name].config_dict())


def export_checkpoint(checkpoint: str, out: str, step: int | None = None, overwrite: bool = False) -> str:
    """A training workdir (its config.json and checkpoints) -> a sentence-transformers directory whose
    model card describes the run up to the exported step (config.json, metrics.jsonl).

    An existing non-empty ``out`` is refused (FileExistsError) unless ``overwrite``; the export is written
    beside it and swapped in at the end, so a failure leaves the earlier directory whole."""
    from jaxsbert.interop import export
    from jaxsbert.training import model_card

    workdir = checkpoint
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: not found; --checkpoint must be a jaxsbert training workdir")
    export.check_target(out, overwrite)      # before anything is loaded: the answer comes at once
    with open(cfg_path) as f:
        config = json.load(f)
    encoder = load_model(config)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        raw = checkpointer.restore_raw(step)
    finally:
        checkpointer.close()
    params = raw["params"]
    expected = jax.tree_util.tree_structure(encoder.params)
    if jax.tree_util.tree_structure(params) != expected:
        raise ValueError(f"{checkpointer.directory}: the checkpoint's parameters do not match the model {config['model']}")
    encoder.params = jax.tree_util.tree_map(jnp.asarray, params)
    saved = int(np.asarray(raw["step"]))
    names = list(config["data"]["train"])
    losses = {}
    for name, spec in _loss_specs(config, names).items():
        spec = dict(spec)
        losses[name] = get_loss(spec.pop("name"), **spec)
    sources = {}
    for name, spec in config["data"]["train"].items():    # for the card's row counts and columns
        try:
            sources[name] = jdata.open_source(spec, data_root=config["data"].get("data_root"))
        except Exception as e:     # the data may have moved since training: the card then gives no counts
            log.warning("export: dataset %r (%s) cannot be opened for the model card: %s", name, spec, e)
    training = model_card.read_run(workdir, saved, model_card.dataset_facts(sources, losses), config=config,
                                   exported_from=checkpointer.directory)
    encoder.save_pretrained(out, overwrite=overwrite, base_model=model_card.base_model_id(config["model"]),
                            training=training)
    return out
