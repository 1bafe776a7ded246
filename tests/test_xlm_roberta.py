"""XLM-RoBERTa parity (issue 22): the RoBERTa path with an ``XLMRobertaModel`` config and a SentencePiece
Unigram tokenizer, against sentence-transformers.

No XLM-R SentencePiece model is available offline (no hub, no ``sentencepiece`` package), so the tokenizer is
a Unigram model trained here by the ``tokenizers`` library (its SentencePiece-Unigram trainer) on a few
multilingual sentences, wrapped as transformers' ``XLMRobertaTokenizer`` (the tokenizers-backed one: XLM-R's
Metaspace pre-tokenizer, ``<s> A </s>`` template, ``<pad>`` = 1, ``<mask>`` last). The model is a small random
``XLMRobertaModel`` (every weight moved off its init) saved by transformers and wrapped by sentence-transformers
as Transformer + Pooling(mean) + Normalize.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

try:
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
except ImportError:   # sentence-transformers < 6
    from sentence_transformers.models import Normalize, Pooling, Transformer

from jaxsbert import SentenceEncoder  # noqa: E402
from jaxsbert.models import roberta  # noqa: E402

ATOL = 1e-5
MAX_SEQ = 20
HIDDEN = 32
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El hombre toca la guitarra en la calle.",
    "A man is playing a guitar on the street.",
    "東京は日本の首都です。",
]
SENTENCES = [
    "A man is playing a guitar.",
    "Le chien paresseux dort.",
    "Zebras über alles — 東京!",              # pieces the trainer never saw: <unk> and single characters
    "Hi",
    "the lazy dog " * 20 + "end",              # longer than max_seq_length: truncated alike
    "Der Fuchs springt.",
    "guitar",
    "El renard saute over the Hund, quick quick.",
]


def unigram_tokenizer():
    """A SentencePiece-Unigram model trained by ``tokenizers`` on CORPUS, as XLM-R's tokenizer."""
    from tokenizers import SentencePieceUnigramTokenizer

    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(CORPUS * 10, vocab_size=150, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                unk_token="<unk>", show_progress=False)
    pieces = [tuple(p) for p in json.loads(trained.to_str())["model"]["vocab"]]
    assert [p for p, _ in pieces[:4]] == ["<s>", "<pad>", "</s>", "<unk>"], pieces[:4]
    return transformers.XLMRobertaTokenizer(vocab=pieces + [("<mask>", 0.0)])


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("xlmr"))
    tokenizer = unigram_tokenizer()
    assert tokenizer.pad_token_id == 1 and len(tokenizer) > 60
    torch.manual_seed(0)
    config = transformers.XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=37, max_position_embeddings=40,
                                           type_vocab_size=1, pad_token_id=tokenizer.pad_token_id)
    model = transformers.AutoModel.from_config(config).eval()
    assert type(model).__name__ == "XLMRobertaModel"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf_dir = os.path.join(root, "hf")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    modules = [Transformer(hf_dir, max_seq_length=MAX_SEQ), Pooling(HIDDEN, pooling_mode="mean"), Normalize()]
    path = os.path.join(root, "st")
    SentenceTransformer(modules=modules, device="cpu").save(path)
    return path


@pytest.fixture(scope="module")
def st_model(st_dir) -> SentenceTransformer:
    return SentenceTransformer(st_dir, device="cpu")


@pytest.fixture(scope="module")
def theirs(st_model) -> np.ndarray:
    out = st_model.encode(SENTENCES, convert_to_numpy=True)
    # the comparison means something: distinct sentences get distinct, non-trivial embeddings
    assert float(np.abs(out[0] - out[1]).max()) > 1e-2
    return out


def _max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def test_tokenizer_matches_sentence_transformers(st_dir, st_model):
    encoder = SentenceEncoder.from_pretrained(st_dir)
    ours = encoder.tokenizer(SENTENCES)
    theirs = st_model.tokenize(SENTENCES)
    for i, ids in enumerate(ours):
        expected = [int(t) for t, m in zip(theirs["input_ids"][i], theirs["attention_mask"][i]) if m]
        assert ids == expected, (SENTENCES[i], ids, expected)
    assert any(3 in ids for ids in ours), "no <unk> token: the unseen-characters sentence lost its point"


@pytest.mark.parametrize("packing", [True, False])
def test_import_matches_sentence_transformers(st_dir, theirs, packing):
    encoder = SentenceEncoder.from_pretrained(st_dir, packing=packing)
    assert encoder.config.family == "xlm-roberta" and encoder.max_seq_length == MAX_SEQ
    ids = encoder.tokenizer(SENTENCES)
    plan = list(encoder._plan_batches(ids, np.argsort([-len(t) for t in ids], kind="stable"), 4))
    assert any("slots" in features for _, features in plan) == packing   # packed rows when asked, only then
    ours = encoder.encode(SENTENCES, batch_size=4)
    diff = _max_diff(ours, theirs)
    print(f"xlm-roberta packing={packing}: max abs diff {diff:.2e}")
    assert diff < ATOL, f"packing={packing}: max abs diff {diff}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def export_dir(st_dir, tmp_path_factory) -> str:
    path = os.path.join(str(tmp_path_factory.mktemp("xlmr-export")), "exported")
    SentenceEncoder.from_pretrained(st_dir).save_pretrained(path)
    return path


def test_export_loads_in_sentence_transformers(export_dir, st_model, theirs):
    exported = SentenceTransformer(export_dir, device="cpu")
    assert [type(m).__name__ for m in exported] == ["Transformer", "Pooling", "Normalize"]
    assert type(exported[0].auto_model).__name__ == "XLMRobertaModel"
    assert exported.max_seq_length == MAX_SEQ
    diff = _max_diff(exported.encode(SENTENCES, convert_to_numpy=True), theirs)
    assert diff < ATOL, f"max abs diff {diff}"


def test_export_loads_in_transformers_automodel(export_dir, st_model):
    model, info = transformers.AutoModel.from_pretrained(export_dir, output_loading_info=True)
    assert type(model).__name__ == "XLMRobertaModel" and model.config.model_type == "xlm-roberta"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    original = st_model[0].auto_model.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(original)
    for key, value in loaded.items():
        assert torch.equal(value, original[key]), key


def test_a_wrong_position_offset_is_caught(st_dir, theirs, monkeypatch):
    """The comparison sees the padding_idx offset: positions off by one (``padding_idx`` instead of
    ``padding_idx + 1`` for the first token) move the embeddings far beyond ATOL."""
    right = roberta.offset_position_ids
    monkeypatch.setattr(roberta, "offset_position_ids", lambda mask, pos, pad: right(mask, pos, pad - 1))
    wrong = SentenceEncoder.from_pretrained(st_dir, packing=False).encode(SENTENCES, batch_size=4)
    assert _max_diff(wrong, theirs) > 100 * ATOL


def test_cli_trains_xlm_roberta_with_mnrl_and_resumes(st_dir, tmp_path):
    """MNRL on the demo pairs through ``jaxsbert train``: the loss goes down, a run stopped after 3 steps and
    resumed ends with the uninterrupted run's checkpoint, and the saved model loads in sentence-transformers."""
    from helpers import cli_train_stop_resume

    config = {"model": st_dir, "loss": {"name": "MultipleNegativesRankingLoss"}, "batch_size": 8, "max_steps": 6,
              "data": {"train": {"demo": {"source": "demo", "columns": ["sentence1", "sentence2"], "limit": 24}}},
              "optim": {"lr": 1e-2, "warmup_ratio": 0.0}, "log_every": 1, "eval_before": False, "tensorboard": False,
              "checkpoint": {"every_steps": 3, "keep": 2, "async": False}}
    metrics = cli_train_stop_resume(config, tmp_path)
    losses = [m["loss"] for m in metrics if m["kind"] == "train"]
    assert len(losses) == 6 and np.mean(losses[3:]) < np.mean(losses[:3]) - 0.05, losses    # epoch 2 vs 1 (~0.07)
    model = os.path.join(str(tmp_path / "full"), "model")
    trained = SentenceEncoder.from_pretrained(model)
    assert trained.config.family == "xlm-roberta"
    assert _max_diff(trained.encode(SENTENCES), SentenceTransformer(model, device="cpu").encode(SENTENCES)) < ATOL
