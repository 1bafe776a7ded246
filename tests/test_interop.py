"""PyTorch interop (issue 6): sentence-transformers / transformers directories into and out of jaxsbert.

For every encoder family, a sentence-transformers model (the real all-MiniLM-L6-v2; small random
RoBERTa, XLM-RoBERTa, DistilBERT and MPNet models with tokenizers of their own kind, wrapped and
saved by sentence-transformers; MiniLM + Dense + Normalize) is imported, compared with
sentence-transformers, exported, and the export is loaded back by sentence-transformers,
``transformers.AutoModel`` and jaxsbert. Then a model fine-tuned by ``jaxsbert train`` is checked
to give the same STSb test Spearman in both libraries, and ``jaxsbert export`` to reproduce it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import string

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

try:
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator as STEvaluator
    from sentence_transformers.sentence_transformer.modules import Pooling
except ImportError:   # sentence-transformers < 6
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator as STEvaluator
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

from jaxsbert import SentenceEncoder  # noqa: E402
from jaxsbert.models import families  # noqa: E402

ATOL = 1e-5
SENTENCES = [
    "A man is playing a guitar.",
    "Stocks FELL sharply on Monday!",
    "Café naïve — 東京",
    "Hi",
    "the man " * 150 + "end",           # longer than every model's max_seq_length: truncated alike
    "a guitar, a man, and 3 stocks; is the man playing?",
]
# No leading/trailing whitespace: jaxsbert strips it, as sentence-transformers < 6 does, while 6.x keeps
# it (for byte-level BPE and SentencePiece that changes the tokens).

# ------------------------------------------------------------------------------ small random models

SMALL_MAX_SEQ = 24
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
WORDS = ["the", "a", "man", "is", "playing", "guitar", "stocks", "fell"]
# a different pooling per family, so every mode sentence-transformers writes is read back somewhere
POOLING = {"roberta": "cls", "xlm-roberta": ("max", "mean"), "distilbert": "mean_sqrt_len_tokens",
           "mpnet": "weightedmean"}


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = specials + list(chars) + ["##" + c for c in string.ascii_lowercase + string.digits] + WORDS
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def small_tokenizer(family: str):
    """A tiny tokenizer of the family's own kind (WordPiece, byte-level BPE, Unigram) with its special tokens."""
    if family == "distilbert":
        return transformers.DistilBertTokenizer(vocab=_wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    if family == "mpnet":
        return transformers.MPNetTokenizer(vocab=_wordpiece_vocab(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]))
    if family == "roberta":
        from tokenizers.pre_tokenizers import ByteLevel

        tokens = ["<s>", "<pad>", "</s>", "<unk>"] + sorted(ByteLevel.alphabet()) + ["Ġm", "an", "Ġman", "<mask>"]
        return transformers.RobertaTokenizer(vocab={t: i for i, t in enumerate(tokens)},
                                             merges=[("Ġ", "m"), ("a", "n"), ("Ġm", "an")])
    if family == "xlm-roberta":
        pieces = ([("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
                  + [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
                  + [("▁" + w, -1.0) for w in WORDS] + [("<mask>", 0.0)])
        return transformers.XLMRobertaTokenizer(vocab=pieces)
    raise ValueError(family)


def small_hf_config(family: str, vocab_size: int):
    if family == "roberta":
        return transformers.RobertaConfig(vocab_size=vocab_size, max_position_embeddings=40, type_vocab_size=1,
                                          layer_norm_eps=1e-5, hidden_act="gelu_new", **SMALL)
    if family == "xlm-roberta":
        return transformers.XLMRobertaConfig(vocab_size=vocab_size, max_position_embeddings=40, type_vocab_size=1,
                                             **SMALL)
    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=40, dim=32, n_layers=2,
                                             n_heads=4, hidden_dim=37)
    if family == "mpnet":
        return transformers.MPNetConfig(vocab_size=vocab_size, max_position_embeddings=40, **SMALL)
    raise ValueError(family)


def save_small_sentence_transformer(family: str, root: str) -> str:
    """A random Hugging Face model (every weight moved off its init value) + tokenizer, wrapped with
    sentence-transformers' Transformer and Pooling modules and saved by sentence-transformers."""
    tokenizer = small_tokenizer(family)
    torch.manual_seed(sorted(POOLING).index(family))
    model = transformers.AutoModel.from_config(small_hf_config(family, len(tokenizer))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf_dir = os.path.join(root, "hf")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=SMALL_MAX_SEQ)
    pooling = Pooling(SMALL["hidden_size"], pooling_mode=POOLING[family])
    st_dir = os.path.join(root, "st")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(st_dir)
    return st_dir


def save_dense_normalize_sentence_transformer(minilm_path: str, root: str) -> str:
    """all-MiniLM-L6-v2's Transformer and Pooling + Dense(384 -> 64, Tanh) + Normalize, saved by sentence-transformers."""
    minilm = SentenceTransformer(minilm_path, device="cpu")
    torch.manual_seed(0)
    dense = Dense(384, 64, activation_function=torch.nn.Tanh())
    st_dir = os.path.join(root, "st")
    SentenceTransformer(modules=[minilm[0], minilm[1], dense, Normalize()], device="cpu").save(st_dir)
    return st_dir


# ------------------------------------------------------------------------------------- the cases

@dataclasses.dataclass
class Case:
    name: str
    family: str
    st_dir: str              # what sentence-transformers saved (or shipped)
    st_model: SentenceTransformer
    encoder: SentenceEncoder  # jaxsbert's import of st_dir
    export_dir: str           # jaxsbert's export of encoder


CASES = {"minilm": "bert", "minilm-dense-normalize": "bert", "roberta": "roberta", "xlm-roberta": "xlm-roberta",
         "distilbert": "distilbert", "mpnet": "mpnet"}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory, minilm_path) -> Case:
    name = request.param
    root = str(tmp_path_factory.mktemp(name))
    if name == "minilm":
        st_dir = minilm_path
    elif name == "minilm-dense-normalize":
        st_dir = save_dense_normalize_sentence_transformer(minilm_path, root)
    else:
        st_dir = save_small_sentence_transformer(name, root)
    encoder = SentenceEncoder.from_pretrained(st_dir)
    export_dir = os.path.join(root, "exported")
    encoder.save_pretrained(export_dir)
    return Case(name, CASES[name], st_dir, SentenceTransformer(st_dir, device="cpu"), encoder, export_dir)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def test_import_matches_sentence_transformers(case):
    assert case.encoder.config.family == case.family
    theirs = case.st_model.encode(SENTENCES, convert_to_numpy=True)
    ours = case.encoder.encode(SENTENCES)
    # the comparison means something: distinct sentences get distinct, non-trivial embeddings
    assert np.abs(theirs).max() > 1e-2 and float(np.abs(theirs[0] - theirs[1]).max()) > 1e-3
    diff = _max_diff(ours, theirs)
    print(f"{case.name}: import vs sentence-transformers max abs diff {diff:.2e}")
    assert diff < ATOL, f"{case.name}: max abs diff {diff}"
    assert case.encoder.max_seq_length == case.st_model.max_seq_length
    if case.name == "minilm-dense-normalize":
        assert ours.shape[1] == 64
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_export_loads_in_sentence_transformers(case):
    exported = SentenceTransformer(case.export_dir, device="cpu")
    assert [type(m).__name__ for m in exported] == [type(m).__name__ for m in case.st_model]
    assert exported.max_seq_length == case.st_model.max_seq_length
    assert exported.similarity_fn_name == "cosine"
    ours = case.encoder.encode(SENTENCES)
    diff = _max_diff(exported.encode(SENTENCES, convert_to_numpy=True), ours)
    print(f"{case.name}: export in sentence-transformers vs jaxsbert max abs diff {diff:.2e}")
    assert diff < ATOL, f"{case.name}: max abs diff {diff}"


def test_export_loads_in_transformers_automodel(case):
    model, info = transformers.AutoModel.from_pretrained(case.export_dir, output_loading_info=True)
    assert type(model).__name__ == families.FAMILIES[case.family].hf_architecture
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # the weights are the ones sentence-transformers had, exactly
    original = case.st_model[0].auto_model.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(original)
    for key, value in loaded.items():
        assert torch.equal(value, original[key]), key


def test_import_of_export_is_bitwise_equal(case):
    again = SentenceEncoder.from_pretrained(case.export_dir)
    assert again.config == case.encoder.config
    paths = jax.tree_util.tree_flatten_with_path(case.encoder.params)[0]
    paths_again = jax.tree_util.tree_flatten_with_path(again.params)[0]
    assert [p for p, _ in paths] == [p for p, _ in paths_again]
    for (path, a), (_, b) in zip(paths, paths_again):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype == np.float32, path
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_export_layout_is_the_classic_sentence_transformers_one(case):
    """modules.json, module folders and the Dense weights (PyTorch names and layout) as sentence-transformers
    writes them; the module list is the one sentence-transformers had."""
    from safetensors.numpy import load_file

    with open(os.path.join(case.export_dir, "modules.json")) as f:
        entries = json.load(f)
    names = [type(m).__name__ for m in case.st_model]
    assert [(m["idx"], m["path"], m["type"]) for m in entries] == [
        (i, f"{i}_{n}" if i else "", f"sentence_transformers.models.{n}") for i, n in enumerate(names)]
    with open(os.path.join(case.export_dir, "sentence_bert_config.json")) as f:
        assert json.load(f) == {"max_seq_length": case.st_model.max_seq_length, "do_lower_case": False}
    for i, module in enumerate(case.st_model):
        if names[i] != "Dense":
            continue
        with open(os.path.join(case.export_dir, f"{i}_Dense", "config.json")) as f:
            config = json.load(f)
        assert config == {"in_features": 384, "out_features": 64, "bias": True,
                          "activation_function": "torch.nn.modules.activation.Tanh"}
        weights = load_file(os.path.join(case.export_dir, f"{i}_Dense", "model.safetensors"))
        assert sorted(weights) == ["linear.bias", "linear.weight"]
        np.testing.assert_array_equal(weights["linear.weight"], module.linear.weight.detach().numpy())
        np.testing.assert_array_equal(weights["linear.bias"], module.linear.bias.detach().numpy())
    assert ("Dense" in names) == (case.name == "minilm-dense-normalize")


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def test_export_does_not_depend_on_tokenizer_use(tmp_path, minilm_path):
    """A fast tokenizer remembers its last call's truncation/padding; the export must not record it."""
    encoder = SentenceEncoder.from_pretrained(minilm_path)
    encoder.save_pretrained(str(tmp_path / "fresh"))
    encoder.encode(SENTENCES[:2])
    encoder.save_pretrained(str(tmp_path / "used"))
    assert _files(str(tmp_path / "fresh")) == _files(str(tmp_path / "used"))
    for rel in _files(str(tmp_path / "fresh")):
        assert _same_bytes(str(tmp_path / "fresh" / rel), str(tmp_path / "used" / rel)), rel
    with open(tmp_path / "used" / "tokenizer.json") as f:
        tokenizer = json.load(f)
    assert tokenizer["truncation"]["max_length"] == encoder.max_seq_length == 256 and tokenizer["padding"] is None


# -------------------------------------------------------------- a model fine-tuned by jaxsbert train

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """all-MiniLM-L6-v2 fine-tuned for 3 steps with the quickstart config -> (workdir, base encoder)."""
    from jaxsbert.config import build_config
    from jaxsbert.training.loop import load_model, train

    config = build_config("quickstart", ["max_steps=3", "eval_before=False", "data.eval={}", "tensorboard=False",
                                         "checkpoint.async=False", "log_every=1", "optim.warmup_ratio=0.0"])
    workdir = str(tmp_path_factory.mktemp("trained"))
    result = train(config, workdir)
    assert result["steps"] == 3 and result["model"] == os.path.join(workdir, "model")
    return workdir, load_model(config)


def test_trained_model_has_the_same_stsb_spearman_in_sentence_transformers(trained, stsb_test):
    from jaxsbert.evaluation.embedding_similarity import EmbeddingSimilarityEvaluator

    workdir, base = trained
    model_dir = os.path.join(workdir, "model")
    ours = SentenceEncoder.from_pretrained(model_dir)
    # it is the fine-tuned model, not the base one
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
             zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(base.params))]
    assert max(moved) > 1e-6
    theirs = SentenceTransformer(model_dir, device="cpu")
    s1, s2, scores = stsb_test
    np.testing.assert_allclose(ours.encode(s1[:64]), theirs.encode(s1[:64], convert_to_numpy=True), atol=ATOL)
    ours_spearman = EmbeddingSimilarityEvaluator(s1, s2, scores, batch_size=64,
                                                 similarity_fn_names=["cosine"])(ours)["spearman_cosine"]
    theirs_spearman = STEvaluator(s1, s2, scores, batch_size=64, similarity_fn_names=["cosine"],
                                  write_csv=False)(theirs)["spearman_cosine"]
    print(f"STSb test Spearman(cosine): jaxsbert {ours_spearman:.6f}, sentence-transformers {theirs_spearman:.6f}")
    assert 0.5 < ours_spearman < 1.0
    assert abs(ours_spearman - theirs_spearman) < 5e-5, (ours_spearman, theirs_spearman)


def test_cli_export_of_the_checkpoint_equals_the_final_model(trained, tmp_path):
    """``jaxsbert export --checkpoint WORKDIR --out DIR`` writes the files train wrote to WORKDIR/model
    (the README differs: train's model card describes the run)."""
    from jaxsbert.cli import main

    workdir, _ = trained
    out = str(tmp_path / "exported")
    main(["export", "--checkpoint", workdir, "--out", out])
    final = os.path.join(workdir, "model")
    assert _files(out) == _files(final)
    for rel in _files(final):
        if rel != "README.md":
            assert _same_bytes(os.path.join(out, rel), os.path.join(final, rel)), rel
    with open(os.path.join(out, "README.md"), encoding="utf8") as f:
        assert "library_name: sentence-transformers" in f.read()
    sentences = SENTENCES[:3]
    np.testing.assert_array_equal(SentenceEncoder.from_pretrained(out).encode(sentences),
                                  SentenceEncoder.from_pretrained(final).encode(sentences))
