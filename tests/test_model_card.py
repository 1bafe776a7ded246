"""The model card of a trained model (jaxsbert train and jaxsbert export write the same one), exports that never
replace an earlier one unasked, and a resumed finished run that has nothing to do."""
import json
import os
import re

import pytest
import yaml

from helpers import save_tiny_model

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def _config():
    from jaxsbert.config import build_config

    return build_config(base={
        "name": "card-test", "model": BASE,
        "data": {"train": {"demo": {"source": "demo", "split": "train", "limit": 64}},
                 "eval": {"dev": {"type": "similarity", "source": "demo", "split": "dev"}}},
        "loss": {"name": "CoSENTLoss"}, "batch_size": 16, "max_steps": 4, "log_every": 1, "eval_every": 2,
        "optim": {"lr": 1e-3}, "checkpoint": {"every_steps": 2, "keep": 3, "async": False}, "tensorboard": False})


@pytest.fixture(scope="module")
def run(tmp_path_factory, minilm_path):
    """A tiny random BERT trained 4 steps under the name of all-MiniLM-L6-v2 (evaluated at steps 0, 2, 4;
    checkpoints at 2 and 4) -> its workdir. The name is what the card records as the base model."""
    from jaxsbert.training import loop

    root = tmp_path_factory.mktemp("card")
    tiny = save_tiny_model(str(root / "tiny"), minilm_path)
    with pytest.MonkeyPatch.context() as mp:      # the base model's name resolves to the tiny model
        mp.setattr(loop, "resolve_model", lambda name: tiny if name == BASE else name)
        workdir = str(root / "run")
        result = loop.train(_config(), workdir)
        assert result["steps"] == 4 and result["model"] == os.path.join(workdir, "model")
        yield workdir


def _read(path):
    with open(path, encoding="utf8") as f:
        return f.read()


def _front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def _headings(card: str) -> list[str]:
    body = re.sub(r"```.*?```", "", card, flags=re.S)      # not the lines of code blocks
    return [line for line in body.splitlines() if line.startswith("#")]


def _evals(workdir):
    return {r["step"]: r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["kind"] == "eval"}


def _snapshot(directory):
    return {os.path.relpath(os.path.join(d, f), directory): _read_bytes(os.path.join(d, f))
            for d, _, files in os.walk(directory) for f in files}


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_trained_model_card(run):
    from huggingface_hub import ModelCard

    card = _read(os.path.join(run, "model", "README.md"))
    meta = _front_matter(card)
    assert meta["base_model"] == BASE and meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert {"sentence-transformers", "jaxsbert", "generated_from_trainer", "loss:CoSENTLoss",
            "dataset_size:64"} <= set(meta["tags"])
    # the Hub's reading of the header: base model and the final evaluation as model-index results
    hub = ModelCard.load(os.path.join(run, "model", "README.md")).data
    assert hub.base_model == BASE
    evals = _evals(run)
    results = {r.metric_type: r.metric_value for r in hub.eval_results}
    assert results == {"pearson_cosine": evals[4]["dev_pearson_cosine"], "spearman_cosine": evals[4]["dev_spearman_cosine"]}
    assert {r.task_type for r in hub.eval_results} == {"semantic-similarity"}
    # one body: every section once, nothing unset printed
    headings = _headings(card)
    assert len(headings) == len(set(headings)), headings
    assert card.count("## Usage") == 1 and card.count("Base model") == 1
    assert "None" not in card and "not recorded" not in card
    # the evaluation before (step 0) and after training (step 4), with the values of metrics.jsonl
    assert "| Metric | Before training (step 0) | After training (step 4) |" in card
    assert f"| **spearman_cosine** | **{round(evals[0]['dev_spearman_cosine'], 4)}** | " \
           f"**{round(evals[4]['dev_spearman_cosine'], 4)}** |" in card
    # datasets with rows, columns and the loss' arguments; the training log with every logged step
    assert "* Size: 64 training samples" in card
    assert "<code>sentence1</code>, <code>sentence2</code>, and <code>score</code>" in card
    assert '"scale": 20.0' in card and "- `max_steps`: 4" in card
    log = card[card.index("### Training Logs"):]
    for step in range(5):
        assert re.search(rf"^\| [\d.]+ \| {step} \|", log, re.M), step
    assert re.search(rf"^\| [\d.]+ \| 2 \| [\d.]+ \| {round(evals[2]['dev_spearman_cosine'], 4)} \|", log, re.M)
    assert "- JAX: " in card and "- Flax: " in card and "- Transformers: " in card


def test_sentence_transformers_keeps_the_card(run, tmp_path):
    """sentence-transformers loads the model with this README and writes it back unchanged on save. (It does not
    parse the header: SentenceTransformer(dir).model_card_data.base_model is only ever set for a model loaded
    from the Hub by id, so the Hub's reading of it is the one tested above.)"""
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(os.path.join(run, "model"), device="cpu")
    model.save(str(tmp_path / "resaved"))
    assert _read(tmp_path / "resaved" / "README.md") == _read(os.path.join(run, "model", "README.md"))


def test_export_writes_the_run_card(run, tmp_path, monkeypatch):
    from jaxsbert.cli import main
    from jaxsbert.training import loop

    monkeypatch.setattr(loop, "resolve_model", lambda name: os.path.join(os.path.dirname(run), "tiny")
                        if name == BASE else name)
    out = str(tmp_path / "exported")
    main(["export", "--checkpoint", run, "--out", out])
    trained, exported = _read(os.path.join(run, "model", "README.md")), _read(os.path.join(out, "README.md"))
    note = f"They were exported with `jaxsbert export` from the checkpoint of step 4 (`{os.path.join(run, 'checkpoints')}`)."
    assert note in exported
    assert exported.replace(note + "\n", "") == trained          # the same card, marked as exported
    # an earlier checkpoint: the card describes the run up to its step
    main(["export", "--checkpoint", run, "--out", str(tmp_path / "step2"), "--step", "2"])
    early = _read(str(tmp_path / "step2" / "README.md"))
    assert "from the checkpoint of step 2" in early and "after step 2 of 4" in early
    assert "| Metric | Before training (step 0) | After training (step 2) |" in early
    assert "| 0.5 | 2 |" in early and "| 0.75 | 3 |" not in early
    assert _front_matter(early)["model-index"][0]["results"][0]["metrics"][1]["value"] == \
        _evals(run)[2]["dev_spearman_cosine"]


def test_export_never_replaces_an_earlier_export_unasked(run, tmp_path, monkeypatch):
    from jaxsbert.cli import main
    from jaxsbert.interop import export
    from jaxsbert.training import loop

    monkeypatch.setattr(loop, "resolve_model", lambda name: os.path.join(os.path.dirname(run), "tiny")
                        if name == BASE else name)
    out = str(tmp_path / "exported")
    main(["export", "--checkpoint", run, "--out", out, "--step", "2"])
    first = _snapshot(out)
    with pytest.raises(SystemExit, match=r"exported: directory exists and is not empty; nothing was written\. "
                                         r"Pass overwrite=True \(jaxsbert export --overwrite\)"):
        main(["export", "--checkpoint", run, "--out", out])
    assert _snapshot(out) == first
    # --overwrite: an export that fails leaves the earlier one whole and no temporary directory behind
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    with monkeypatch.context() as mp:
        mp.setattr(export, "_write_card", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            loop.export_checkpoint(run, out, overwrite=True)
    assert _snapshot(out) == first and os.listdir(tmp_path) == ["exported"]
    main(["export", "--checkpoint", run, "--out", out, "--overwrite"])
    assert "from the checkpoint of step 4" in _read(os.path.join(out, "README.md"))
    assert os.listdir(tmp_path) == ["exported"]
    # jaxsbert export's check refuses an earlier export; save_pretrained (as sentence-transformers' model.save)
    # replaces one, and refuses any other non-empty directory
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export.check_target(out, overwrite=False)


def test_resume_recognises_a_finished_run(run):
    """_start_or_resume tells a finished run (checkpoint at total_steps, model saved after it): position None."""
    from jaxsbert.training import loop
    from jaxsbert.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(os.path.join(run, "checkpoints"), async_save=False)
    try:
        target = checkpointer.restore_raw()
        state, position = loop._start_or_resume(checkpointer, target, True, True, run, total_steps=4)
        assert int(state["step"]) == 4 and position is None
        _, position = loop._start_or_resume(checkpointer, target, True, True, run, total_steps=8)   # more to train
        assert position is not None
        _, position = loop._start_or_resume(checkpointer, target, True, True, run)      # not asked
        assert position is not None
    finally:
        checkpointer.close()


def test_resume_of_a_finished_run_changes_nothing(run, monkeypatch):
    from jaxsbert.training import loop

    monkeypatch.setattr(loop, "resolve_model", lambda name: os.path.join(os.path.dirname(run), "tiny")
                        if name == BASE else name)
    metrics, model = _read_bytes(os.path.join(run, "metrics.jsonl")), _snapshot(os.path.join(run, "model"))
    result = loop.train(_config(), run, resume=True)
    assert result["steps"] == 4 and result.get("finished")
    assert _read_bytes(os.path.join(run, "metrics.jsonl")) == metrics
    assert _snapshot(os.path.join(run, "model")) == model


def test_card_helpers():
    from jaxsbert.training import model_card

    assert model_card.base_model_id(BASE) == BASE
    assert model_card.base_model_id("all-MiniLM-L6-v2") == BASE
    assert model_card.base_model_id("/models/mine") is None and model_card.base_model_id("./mine") is None
    records = [{"kind": "eval", "step": 0, "a_x": 0.1}, {"kind": "train", "step": 2, "loss": 1.0},
               {"kind": "eval", "step": 2, "a_x": 0.3}, {"kind": "train", "step": 4, "loss": 0.5},
               {"kind": "eval", "step": 4, "a_x": 0.2}]
    assert model_card.saved_step(records, {"a_x": 0.3}) == 2
    assert model_card.saved_step(records, {}) == 4
