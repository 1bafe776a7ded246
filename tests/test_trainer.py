"""The Python Trainer: same run as the config/CLI path, callbacks (events, stop, resume), report_to, eval_loss."""
import json
import os

import jax
import numpy as np
import pytest

from helpers import save_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_path):
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), minilm_path)


def _demo(limit=None, split="train"):
    from jaxsbert import data as jdata
    return jdata.load_dataset({"source": "demo", "split": split, **({"limit": limit} if limit else {})})


def test_trainer_trains_stsb_cosent_like_the_config(tmp_path, minilm_path, shared_data, stsb_test):
    """The recipe's config through train() (what `jaxsbert train` runs) and the same recipe through the Python
    Trainer, 4 steps at the same seed: the same test Spearman (1e-6) and the same parameters. The dataset keeps
    the config's name (``stsb``): a dataset's name is part of its shuffle's seed, as in a multi-dataset config."""
    from jaxsbert import SentenceEncoder, Trainer, TrainingArguments
    from jaxsbert import data as jdata
    from jaxsbert.config import build_config
    from jaxsbert.evaluation import EmbeddingSimilarityEvaluator
    from jaxsbert.losses import CoSENTLoss
    from jaxsbert.training.loop import train

    root = str(shared_data)
    config = build_config("stsb_cosent", [f"model={minilm_path!r}", "max_steps=4", f"data.data_root={root!r}",
                                          "tensorboard=False", "eval_every=0"])
    config["data"]["eval"] = {"sts-test": config["data"]["eval"]["sts-test"]}
    by_config = train(config, str(tmp_path / "config"))

    model = SentenceEncoder.from_pretrained(minilm_path)
    args = TrainingArguments(output_dir=str(tmp_path / "python"), per_device_train_batch_size=16 // jax.device_count(),
                             num_train_epochs=1, max_steps=4, learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.0,
                             max_grad_norm=1.0, seed=42, config={"tensorboard": False})
    s1, s2, scores = stsb_test
    test = EmbeddingSimilarityEvaluator(s1, s2, [s / 5 for s in scores], name="sts-test")
    trainer = Trainer(model=model, args=args, loss=CoSENTLoss(scale=20.0), evaluator=test,
                      train_dataset={"stsb": jdata.load_dataset({"source": "stsb", "split": "train"}, data_root=root)})
    by_python = trainer.train()

    key = "sts-test_spearman_cosine"
    assert by_python["steps"] == by_config["steps"] == 4
    assert abs(by_python["eval"][key] - by_config["eval"][key]) <= 1e-6, (by_python["eval"], by_config["eval"])
    trained = jax.tree_util.tree_leaves(jax.device_get(by_config["state"]["params"]))
    for a, b in zip(trained, jax.tree_util.tree_leaves(model.params)):     # the model is trained in place
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    assert trainer.evaluate()[key] == pytest.approx(by_python["eval"][key], abs=1e-6)
    saved = json.load(open(tmp_path / "python" / "config.json"))
    assert saved["loss"]["stsb"]["name"] == "CoSENTLoss" and saved["data"]["train"]["stsb"]["num_rows"] == 5749


class Recorder:
    """Records every event; stops training at ``stop_at``."""

    def __init__(self, stop_at=None):
        self.events, self.stop_at, self.losses = [], stop_at, []

    def on_train_begin(self, args, state, control, **kw):
        self.events.append(("begin", state.global_step))

    def on_step_end(self, args, state, control, metrics=None, **kw):
        self.events.append(("step", state.global_step))
        self.losses.append(float(metrics["loss"]))
        if state.global_step == self.stop_at:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kw):
        self.events.append(("log", state.global_step, logs["loss"]))

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        self.events.append(("evaluate", state.global_step, sorted(metrics)))

    def on_save(self, args, state, control, step=None, **kw):
        self.events.append(("save", step))

    def on_train_end(self, args, state, control, **kw):
        self.events.append(("end", state.global_step))


def _args(tmp_path, name, **over):
    from jaxsbert import TrainingArguments
    kw = dict(output_dir=str(tmp_path / name), per_device_train_batch_size=16 // jax.device_count(),
              num_train_epochs=1, learning_rate=1e-3, logging_steps=2, eval_strategy="steps", eval_steps=3,
              save_strategy="no", config={"tensorboard": False, "checkpoint": {"async": False}})
    kw.update(over)
    return TrainingArguments(**kw)


def test_callbacks_see_every_event_and_can_stop(tmp_path, tiny_model):
    from jaxsbert import SentenceEncoder, Trainer
    from jaxsbert.evaluation import EmbeddingSimilarityEvaluator

    dev = _demo(split="dev")
    evaluator = EmbeddingSimilarityEvaluator(dev["sentence1"], dev["sentence2"], dev["score"], name="dev")
    full = Recorder()
    Trainer(SentenceEncoder.from_pretrained(tiny_model), _args(tmp_path, "full"), train_dataset=_demo(96),
            evaluator=evaluator, callbacks=[full]).train()
    kinds = [e[0] for e in full.events]
    assert kinds[0] == "begin" and kinds[-1] == "end" and kinds.count("step") == 6
    assert [e[1] for e in full.events if e[0] == "log"] == [2, 4, 6]
    assert [e[1] for e in full.events if e[0] == "evaluate"] == [3, 6]        # step 3, and the final evaluation
    assert ("evaluate", 3, ["dev_pearson_cosine", "dev_spearman_cosine"]) in full.events
    assert ("save", 6) in full.events

    stopper = Recorder(stop_at=4)
    trainer = Trainer(SentenceEncoder.from_pretrained(tiny_model), _args(tmp_path, "stopped"),
                      train_dataset=_demo(96), evaluator=evaluator, callbacks=[stopper])
    summary = trainer.train()
    assert summary["stopped"] and summary["steps"] == 4 and ("save", 4) in stopper.events
    assert stopper.losses == pytest.approx(full.losses[:4], abs=1e-6)
    rest = Recorder()
    trainer.callbacks = [rest]
    assert trainer.train(resume_from_checkpoint=True)["steps"] == 6               # continues where it stopped
    assert rest.losses == pytest.approx(full.losses[4:], abs=1e-6)


def test_eval_loss_matches_sentence_transformers(tmp_path, tiny_model):
    """eval_dataset -> eval_loss: sentence-transformers' trainer.evaluate() on the same model and rows. Its eval
    batches are shuffled (a torch RandomSampler), ours are in order: with one batch for the whole dataset the two
    agree for every loss that does not depend on the order of its rows."""
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("accelerate")
    from sentence_transformers.sentence_transformer import losses as st_losses
    from jaxsbert import SentenceEncoder, Trainer
    from jaxsbert.losses import CoSENTLoss, MultipleNegativesRankingLoss

    dev = _demo(split="dev").select(range(20))
    pairs = dev.remove_columns("score")
    model = st.SentenceTransformer(tiny_model, device="cpu")
    for ours, theirs, data in ((CoSENTLoss(), st_losses.CoSENTLoss(model), dev),
                               (MultipleNegativesRankingLoss(), st_losses.MultipleNegativesRankingLoss(model), pairs)):
        args = st.SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "st"), per_device_eval_batch_size=32,
                                                       report_to="none", use_cpu=True)
        expected = st.SentenceTransformerTrainer(model=model, args=args, eval_dataset=data, loss=theirs).evaluate()
        trainer = Trainer(SentenceEncoder.from_pretrained(tiny_model), _args(tmp_path, "ours", per_device_eval_batch_size=32),
                          train_dataset=_demo(32) if "score" in data.column_names else _demo(32).remove_columns("score"),
                          eval_dataset=data, loss=ours)
        assert trainer.evaluate()["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-5)


def test_report_to_wandb_and_mlflow_offline(tmp_path, tiny_model, monkeypatch):
    wandb = pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    from jaxsbert import SentenceEncoder, Trainer
    from jaxsbert.evaluation import EmbeddingSimilarityEvaluator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())   # a local file store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    dev = _demo(split="dev")
    evaluator = EmbeddingSimilarityEvaluator(dev["sentence1"], dev["sentence2"], dev["score"], name="dev")
    Trainer(SentenceEncoder.from_pretrained(tiny_model), _args(tmp_path, "run", max_steps=4, report_to=["wandb", "mlflow"],
                                                               run_name="report-test"),
            train_dataset=_demo(96), evaluator=evaluator).train()
    # wandb: an offline run directory with its log
    runs = [d for d in os.listdir(tmp_path / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1 and any(f.endswith(".wandb") for f in os.listdir(tmp_path / "wandb" / runs[0]))
    # mlflow: the run with its parameters and each logged metric's history
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == "report-test" and run.data.params["optim.lr"] == "0.001"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_spearman_cosine")] == [3, 4]


def test_report_to_unknown_integration_is_an_error(tmp_path, tiny_model):
    from jaxsbert import SentenceEncoder, Trainer

    trainer = Trainer(SentenceEncoder.from_pretrained(tiny_model), _args(tmp_path, "x", report_to=["wandbb"]),
                      train_dataset=_demo(32))
    with pytest.raises(ValueError, match="unknown integration.*wandbb"):
        trainer.train()


def test_evaluators_kept_out_of_training_run_before_and_after_only(tmp_path, tiny_model):
    """A config evaluator with "during_training": False (a test set) runs at step 0 and at the end only."""
    from jaxsbert.config import build_config
    from jaxsbert.training.loop import train

    dev = {"type": "similarity", "source": "demo", "split": "dev"}
    config = build_config(base={
        "model": tiny_model, "data": {"train": {"demo": {"source": "demo", "split": "train", "limit": 96}},
                                      "eval": {"dev": dev, "test": {**dev, "during_training": False}}},
        "loss": {"name": "CoSENTLoss"}, "batch_size": 16, "epochs": 1, "eval_every": 2, "log_every": 2,
        "tensorboard": False, "checkpoint": {"async": False}})
    train(config, str(tmp_path / "run"))
    evals = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"eval"' in line]
    assert [r["step"] for r in evals] == [0, 2, 4, 6]
    assert [r["step"] for r in evals if "test_spearman_cosine" in r] == [0, 6]
    from jaxsbert.training.evaluators import build_evaluator
    with pytest.raises(ValueError, match="during_training must be True or False"):
        build_evaluator("x", {**dev, "during_training": "no"})


def test_eval_and_save_strategy_epoch(tmp_path, tiny_model):
    from jaxsbert import SentenceEncoder, Trainer
    from jaxsbert.evaluation import EmbeddingSimilarityEvaluator

    dev = _demo(split="dev")
    evaluator = EmbeddingSimilarityEvaluator(dev["sentence1"], dev["sentence2"], dev["score"], name="dev")
    events = Recorder()
    Trainer(SentenceEncoder.from_pretrained(tiny_model),
            _args(tmp_path, "epochs", num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch"),
            train_dataset=_demo(96), evaluator=evaluator, callbacks=[events]).train()
    assert [e[1] for e in events.events if e[0] == "evaluate"] == [6, 12]      # end of epoch 1, then the final one
    assert [e[1] for e in events.events if e[0] == "save"] == [6, 12]


def test_eval_loss_refuses_losses_that_run_the_model(tmp_path, tiny_model):
    from jaxsbert.losses import get_loss
    from jaxsbert.training.eval_loss import LossEvaluator

    dev = _demo(split="dev").remove_columns(["sentence2", "score"])
    with pytest.raises(ValueError, match="no eval_loss for ContrastiveTensionLossInBatchNegatives: it runs the model"):
        LossEvaluator(dev, get_loss("ContrastiveTensionLossInBatchNegatives"))
