"""Every user error through the ``jaxsbert`` CLI is one line ``error: ...`` on stderr naming the problem and
where (file:line, column, config key), with exit status 2, before the model loads or anything compiles.

``jaxsbert.cli.main`` runs in-process; the ``no_model_no_training`` fixture makes loading a model or
starting training an internal error (exit status 1), so a case that reached either fails its status check.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxsbert.cli import main

MODEL = "sentence-transformers/all-MiniLM-L6-v2"     # the bundled copy: resolved, never loaded here


@pytest.fixture(autouse=True)
def no_model_no_training(monkeypatch):
    import jaxsbert.training.loop as loop
    from jaxsbert.encoder import SentenceEncoder

    def model_loaded(*args, **kwargs):
        raise RuntimeError("the model was loaded")

    def training_started(*args, **kwargs):
        raise RuntimeError("training started")

    monkeypatch.setattr(SentenceEncoder, "from_pretrained", model_loaded)
    monkeypatch.setattr(loop, "train", training_started)


def error_line(capsys, argv: list[str]) -> str:
    """Runs the CLI; checks exit status 2 and exactly one non-empty stderr line ``error: ...``; returns it."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def config_file(tmp_path, body: dict | str, name: str = "cfg.py") -> str:
    text = body if isinstance(body, str) else f"def get_config():\n    return {body!r}\n"
    return write(tmp_path / name, text)


def train_config(tmp_path, **overrides) -> str:
    pairs = write(tmp_path / "pairs.jsonl", "".join(json.dumps({"anchor": f"a {i}", "positive": f"p {i}"}) + "\n"
                                                    for i in range(4)))
    config = {"model": MODEL, "data": {"train": {"pairs": {"source": pairs}}, "eval": {}},
              "loss": {"name": "MultipleNegativesRankingLoss"}, "batch_size": 2, "max_steps": 2}
    for key, value in overrides.items():
        config[key] = value
    return config_file(tmp_path, config)


BAD_JSONL = ('{"sentence1": "a b", "sentence2": "c d", "score": 0.5}\n'
             '{"sentence1": "e f" "sentence2": "g h", "score": 0.1}\n')


# ---------------------------------------------------------------------------------------------- data files

def test_malformed_jsonl_eval_data_names_file_line_column(tmp_path, capsys):
    data = write(tmp_path / "dev.jsonl", BAD_JSONL)
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", data])
    assert line == f"error: {data}:2: not valid JSON (Expecting ',' delimiter: column 21)"


def test_malformed_jsonl_training_data(tmp_path, capsys):
    data = write(tmp_path / "train.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "d"}\n'
                                           '{"anchor": "e" "positive": "f"}\n')
    cfg = config_file(tmp_path, {"model": MODEL, "data": {"train": {"pairs": {"source": data}}}})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == (f"error: config key 'data.train.pairs': {data}:3: not valid JSON (Expecting ',' delimiter: "
                    f"column 16)")
    assert not os.path.exists(tmp_path / "run")


def test_malformed_jsonl_evaluator_file_in_a_training_config(tmp_path, capsys):
    dev = write(tmp_path / "dev.jsonl", BAD_JSONL)
    cfg = train_config(tmp_path)
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run"),
                               "-o", f"data.eval={{'dev': {{'source': {dev!r}}}}}"])
    assert line == f"error: config key 'data.eval.dev': {dev}:2: not valid JSON (Expecting ',' delimiter: column 21)"


def test_csv_with_a_wrong_field_count(tmp_path, capsys):
    data = write(tmp_path / "dev.csv", "sentence1,sentence2,score\na,b,0.5\nc,d,0.1,extra\n")
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", data])
    assert line == f"error: {data}:3: expected 3 fields (as the header), got 4"
    # the same file as training data (read line by line)
    train = write(tmp_path / "train.csv", "anchor,positive\na,b\nc,d,e\n")
    cfg = config_file(tmp_path, {"model": MODEL, "data": {"train": {"pairs": {"source": train}}}})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line.startswith(f"error: config key 'data.train.pairs': {train}:3: expected 2 fields"), line
    assert line.endswith("got 3"), line


def test_missing_column_in_training_data(tmp_path, capsys):
    data = write(tmp_path / "train.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n')
    cfg = config_file(tmp_path, {"model": MODEL, "data": {"train": {"pairs": {"source": data}}}})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == (f"error: config key 'data.train.pairs': {data}:2: column 'positive' (row 1) is missing "
                    f"(the row has ['anchor'])")


def test_missing_data_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.jsonl")
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", missing])
    assert line == f"error: dataset file {missing!r} not found"
    cfg = config_file(tmp_path, {"model": MODEL, "data": {"train": {"pairs": {"source": missing}}}})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == f"error: config key 'data.train.pairs': dataset file {missing!r} not found"


def test_misspelled_dataset_name(tmp_path, capsys):
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", "stbs", "--split", "test"])
    assert line == ("error: dataset 'stbs': not a file and not a named dataset (stsb, sick, sick-nli, "
                    "sick-relatedness, demo); did you mean 'stsb'?")
    cfg = config_file(tmp_path, {"model": MODEL, "data": {"train": {"sts": {"source": "stbs"}}}})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line.startswith("error: config key 'data.train.sts': dataset 'stbs': not a file") and "'stsb'?" in line


def test_sick_similarity_eval_refuses_nli_labels(shared_data, capsys):
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", "sick", "--split", "test",
                               "--data-root", str(shared_data)])
    assert line.startswith("error: evaluator 'eval' (") and "SICK.txt [TEST, nli]" in line
    assert line.endswith("labels are class ids (0, 1, 2) in column 'label': a similarity evaluator needs float "
                         "scores; for SICK use task 'relatedness' (jaxsbert eval --task relatedness)"), line
    # --task is SICK's: elsewhere it is an error, not ignored
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", "demo", "--task", "relatedness"])
    assert line == "error: dataset 'demo': 'task' is for SICK only (nli or relatedness)"


def test_sick_relatedness_eval_reaches_the_model(shared_data, capsys):
    """--task relatedness passes the checks: the next thing is loading the model (here: an internal error)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", MODEL, "--data", "sick", "--split", "test", "--task", "relatedness",
              "--data-root", str(shared_data)])
    assert exit_info.value.code == 1
    assert "RuntimeError: the model was loaded" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- config

def test_misspelled_loss_name(tmp_path, capsys):
    cfg = train_config(tmp_path, loss={"name": "CoSENTLos"})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == "error: config key 'loss.name': unknown loss 'CoSENTLos'; did you mean 'CoSENTLoss'?"
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run"), "-o", "loss.name='MNRL'"])
    assert line.endswith("unknown loss 'MNRL'; did you mean 'MultipleNegativesRankingLoss'?"), line


def test_sentence_transformers_key_names_suggest_ours(tmp_path, capsys):
    cfg = train_config(tmp_path)
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run"), "-o", "optim.learning_rate=3e-5"])
    assert line == ("error: override 'optim.learning_rate=3e-5': unknown config key 'optim.learning_rate'; "
                    "did you mean 'optim.lr'? ('learning_rate' is sentence-transformers' name)")
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run"), "-o", "per_device_train_batch_size=8"])
    assert "unknown config key 'per_device_train_batch_size'; did you mean 'batch_size'?" in line
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run"), "-o", "bf16=True"])
    assert "did you mean compute_dtype='bfloat16'?" in line
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run"), "-o", "optim.max_steps=5"])
    assert "unknown config key 'optim.max_steps'; did you mean 'max_steps'?" in line
    # in a config file: file:line of the key
    cfg = config_file(tmp_path, "def get_config():\n    return {\n        'epochs': 1,\n"
                                "        'learning_rate': 3e-5,\n    }\n", name="st_names.py")
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == (f"error: {cfg}:4: unknown config key 'learning_rate'; did you mean 'optim.lr'? ('learning_rate' "
                    f"is sentence-transformers' name)")


def test_unknown_evaluator_type(tmp_path, capsys):
    cfg = train_config(tmp_path, data={"train": {"d": {"source": "demo"}},
                                       "eval": {"dev": {"type": "similiarity", "source": "demo", "split": "dev"}}})
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == ("error: config key 'data.eval.dev': evaluator 'dev': type 'similiarity' is not supported; "
                    "did you mean 'similarity'?")
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", '{"type": "tripplet", "source": "demo"}'])
    assert line == "error: evaluator 'eval': type 'tripplet' is not supported; did you mean 'triplet'?"


def test_config_file_errors_name_the_line(tmp_path, capsys):
    cfg = config_file(tmp_path, "def get_config():\n    return {\n        'epochs': 1\n        'batch_size': 8,\n"
                                "    }\n", name="syntax.py")
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line.startswith(f"error: {cfg}:3: invalid syntax"), line
    cfg = config_file(tmp_path, "def get_config():\n    config = {'epochs': 1}\n    return config['epoch']\n",
                      name="raises.py")
    line = error_line(capsys, ["train", cfg, "--workdir", str(tmp_path / "run")])
    assert line == f"error: {cfg}:3: KeyError: 'epoch'"


def test_override_that_is_not_key_value(tmp_path, capsys):
    line = error_line(capsys, ["train", train_config(tmp_path), "--workdir", str(tmp_path / "run"), "-o", "epochs"])
    assert line == "error: override 'epochs' is not key=value (e.g. -o optim.lr=3e-5)"


def test_missing_model_path(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "runs" / "nope")
    line = error_line(capsys, ["eval", "--model", missing, "--data", "demo"])
    assert line == (f"error: model {missing!r}: no such directory, and not a bundled model "
                    f"(bundled: ['sentence-transformers/all-MiniLM-L6-v2'])")
    line = error_line(capsys, ["train", train_config(tmp_path, model=missing), "--workdir", str(tmp_path / "run")])
    assert line.startswith(f"error: config key 'model': model {missing!r}: no such directory"), line
    # a relative path is also a valid hub id: offline, the hub's local cache does not have it either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = error_line(capsys, ["train", train_config(tmp_path, model="runs/nope"), "--workdir", str(tmp_path / "run")])
    assert line.startswith("error: config key 'model': model 'runs/nope': no such directory"), line
    assert not os.path.exists(tmp_path / "run")


def test_bad_json_spec_on_the_command_line(capsys):
    line = error_line(capsys, ["eval", "--model", MODEL, "--data", '{"source": "demo",}'])
    assert line.startswith("error: --data: not valid JSON (Expecting property name enclosed in double quotes: "
                           "column 19)"), line


# ---------------------------------------------------------------------------------------------- main()

def test_a_good_config_reaches_training(tmp_path, capsys, monkeypatch):
    import jaxsbert.training.loop as loop

    monkeypatch.setattr(loop, "train", lambda config, workdir, resume=False: {"steps": 0})
    main(["train", "quickstart", "--workdir", str(tmp_path / "run")])
    assert json.loads(capsys.readouterr().out) == {"steps": 0}


def test_debug_shows_the_exception(capsys):
    with pytest.raises(ValueError, match="did you mean 'stsb'"):
        main(["--debug", "eval", "--model", MODEL, "--data", "stbs"])
    with pytest.raises(ValueError, match="did you mean 'stsb'"):     # after the subcommand too
        main(["eval", "--model", MODEL, "--data", "stbs", "--debug"])


def test_an_internal_error_is_one_line_with_status_1(capsys, monkeypatch):
    import jaxsbert.training.evaluators as evaluators

    def bug(*args, **kwargs):
        return {}["oops"]

    monkeypatch.setattr(evaluators, "build_evaluator", bug)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", MODEL, "--data", "demo"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert err == "error: KeyError: oops (an internal error? run with --debug for the traceback)"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().startswith("jaxsbert 0.")


def test_stderr_of_a_real_process_is_one_line(tmp_path):
    """Nothing else on stderr (progress bars, library logs, warnings) in a real ``jaxsbert`` process."""
    data = write(tmp_path / "dev.jsonl", BAD_JSONL)
    done = subprocess.run([sys.executable, "-m", "jaxsbert.cli", "eval", "--model", MODEL, "--data", data],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {data}:2: not valid JSON (Expecting ',' delimiter: column 21)"
