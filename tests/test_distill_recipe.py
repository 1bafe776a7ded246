"""The distillation recipe's pieces: a student cut from the teacher's layers, and `jaxsbert embed-labels`."""
import json

import numpy as np
import pytest

from helpers import save_tiny_model, write_jsonl


def test_keep_layers_is_sentence_transformers_student(tmp_path, minilm_path):
    """keep_layers([0, 2, 4]) embeds as sentence-transformers' distillation student (its layers cut the same way),
    and its export loads there with 3 layers."""
    torch = pytest.importorskip("torch")
    from sentence_transformers import SentenceTransformer

    from jaxsbert import SentenceEncoder
    from jaxsbert.models.layers import keep_layers

    sentences = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank."]
    student = keep_layers(SentenceEncoder.from_pretrained(minilm_path), [0, 2, 4])
    theirs = SentenceTransformer(minilm_path, device="cpu")
    auto = theirs[0].auto_model
    auto.encoder.layer = torch.nn.ModuleList([auto.encoder.layer[i] for i in (0, 2, 4)])
    np.testing.assert_allclose(student.encode(sentences), theirs.encode(sentences), atol=1e-6)
    student.save_pretrained(str(tmp_path / "student"))
    assert json.load(open(tmp_path / "student" / "config.json"))["num_hidden_layers"] == 3
    np.testing.assert_allclose(SentenceTransformer(str(tmp_path / "student"), device="cpu").encode(sentences),
                               theirs.encode(sentences), atol=1e-6)
    with pytest.raises(ValueError, match=r"keep_layers \[0, 3\]: give distinct layer indices in \[0, 3\)"):
        keep_layers(student, [0, 3])


def test_embed_labels_cli_writes_the_teachers_embeddings(tmp_path, minilm_path):
    from jaxsbert import SentenceEncoder
    from jaxsbert.cli import main
    from jaxsbert.config import build_config

    teacher = save_tiny_model(str(tmp_path / "teacher"), minilm_path)
    a = write_jsonl(str(tmp_path / "a.jsonl"), [{"sentence1": "one cat", "sentence2": "two dogs", "score": 0.5},
                                                {"sentence1": "two dogs", "sentence2": "a bird", "score": 0.1}])
    out = tmp_path / "labels.jsonl"
    main(["embed-labels", "--model", teacher, "--dataset", a, "--sentences", "--output", str(out)])
    rows = [json.loads(line) for line in open(out)]
    assert [r["sentence"] for r in rows] == ["one cat", "two dogs", "a bird"]       # each distinct text once
    expected = SentenceEncoder.from_pretrained(teacher).encode([r["sentence"] for r in rows])
    np.testing.assert_allclose(np.array([r["label"] for r in rows]), expected, atol=1e-6)
    with pytest.raises(SystemExit) as e:                                           # never replaces an earlier one
        main(["embed-labels", "--model", teacher, "--dataset", a, "--sentences", "--output", str(out)])
    assert e.value.code == 2
    config = build_config("distill_mse", [f"data.train.distill.source={str(out)!r}"])
    assert config["keep_layers"] == [0, 2, 4] and config["loss"]["name"] == "MSELoss"
