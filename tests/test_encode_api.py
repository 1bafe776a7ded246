"""SentenceEncoder's sentence-transformers API (encode's arguments, similarity, from_pretrained by name),
each against SentenceTransformer on the bundled all-MiniLM-L6-v2 (and copies of it with prompts)."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxsbert.encoder import SentenceEncoder, quantize_embeddings
from jaxsbert.interop import st_dir

ATOL = 1e-5
SENTENCES = ["A man is eating food.", "A man is riding a horse on a beach at sunset.",
             "Two dogs play in the snow near a small red house while children watch.", "Hi",
             "A woman is slicing an onion.", "The stock market fell sharply on Monday after the announcement."]
PROMPTS = {"query": "query: ", "doc": "Represent this passage for retrieval: "}


def _st(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def _variant(src: str, dst, *, normalize: bool, include_prompt: bool) -> str:
    """A copy of the model directory (weights symlinked) with PROMPTS (default "query"), similarity_fn_name
    "manhattan", optionally without its Normalize module and with the Pooling's include_prompt off."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    os.symlink(os.path.join(src, "model.safetensors"), os.path.join(dst, "model.safetensors"))
    (dst / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": "query", "similarity_fn_name": "manhattan"}))
    modules = json.loads((dst / "modules.json").read_text())
    (dst / "modules.json").write_text(json.dumps([m for m in modules if normalize or "Normalize" not in m["type"]]))
    pooling = json.loads((dst / "1_Pooling" / "config.json").read_text())
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "include_prompt": include_prompt}))
    return str(dst)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    """(ours, sentence-transformers') all-MiniLM-L6-v2; ours is loaded by its hub id (the bundled copy)."""
    return SentenceEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2"), _st(minilm_path)


@pytest.fixture(scope="module")
def prompted(minilm_path, tmp_path_factory):
    """all-MiniLM-L6-v2 without Normalize, with prompts (default "query") and similarity_fn_name "manhattan"."""
    path = _variant(minilm_path, tmp_path_factory.mktemp("m") / "prompted", normalize=False, include_prompt=True)
    return SentenceEncoder.from_pretrained(path), _st(path)


@pytest.fixture(scope="module")
def excluded(minilm_path, tmp_path_factory):
    """As ``prompted``, with the Pooling's include_prompt False (prompt tokens left out of the mean)."""
    path = _variant(minilm_path, tmp_path_factory.mktemp("m") / "excluded", normalize=False, include_prompt=False)
    return SentenceEncoder.from_pretrained(path), _st(path)


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def _max_rel_diff(a, b) -> float:
    """Max |a - b| / max(1, |b|): 1e-5 absolute below 1, relative above (a Manhattan distance of ~22 summed over
    384 float32 terms in another order moves by ~1e-5)."""
    b = np.asarray(b, np.float64)
    return float((np.abs(np.asarray(a, np.float64) - b) / np.maximum(1, np.abs(b))).max())


# --- from_pretrained by name, offline --------------------------------------------------------------------

def test_bundled_names_resolve_without_the_hub(minilm, minilm_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("the hub was asked"))
    for name in ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        assert st_dir.resolve(name) == minilm_path
    assert minilm[0].source == "sentence-transformers/all-MiniLM-L6-v2"


def test_missing_model_is_one_clear_error(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def unreachable(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        raise LocalEntryNotFoundError("Got: ConnectError: [Errno -2] Name or service not known\n" * 5)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    missing = "model 'runs/nope': no such directory, and not a bundled model (bundled: " \
              "['sentence-transformers/all-MiniLM-L6-v2'])"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as e:
        SentenceEncoder.from_pretrained("runs/nope")
    assert str(e.value) == f"{missing}; not in the local hub cache and HF_HUB_OFFLINE is set"
    assert e.value.__suppress_context__ and calls == [("runs/nope", {"local_files_only": True})]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(FileNotFoundError) as e:
        SentenceEncoder.from_pretrained("runs/nope")
    assert str(e.value) == f"{missing}; the Hugging Face hub could not be reached and it is not in the local hub cache"
    calls.clear()
    with pytest.raises(FileNotFoundError) as e:     # a path, not a hub id: the hub is not asked
        SentenceEncoder.from_pretrained("./runs/nope")
    assert str(e.value) == missing.replace("'runs/nope'", "'./runs/nope'") and calls == []


# --- encode's arguments ----------------------------------------------------------------------------------

def test_single_string_gives_one_vector(minilm):
    ours, theirs = minilm
    one = ours.encode(SENTENCES[1])
    assert isinstance(one, np.ndarray) and one.shape == (384,) and one.dtype == np.float32
    assert _max_diff(one, ours.encode(SENTENCES[1:2])[0]) <= 1e-6
    assert _max_diff(one, theirs.encode(SENTENCES[1])) <= ATOL
    many = ours.encode(SENTENCES)
    assert many.shape == (len(SENTENCES), 384) and _max_diff(many, theirs.encode(SENTENCES)) <= ATOL


def test_convert_to_tensor_and_numpy(minilm):
    ours, theirs = minilm
    expected = theirs.encode(SENTENCES, convert_to_tensor=True).numpy()
    tensor = ours.encode(SENTENCES, convert_to_tensor=True)
    assert isinstance(tensor, jax.Array) and tensor.shape == (6, 384) and tensor.dtype == np.float32
    assert _max_diff(tensor, expected) <= ATOL
    # convert_to_tensor wins over convert_to_numpy, as in sentence-transformers
    assert isinstance(ours.encode(SENTENCES, convert_to_numpy=True, convert_to_tensor=True), jax.Array)
    rows = ours.encode(SENTENCES, convert_to_numpy=False)      # a list of per-sentence arrays
    assert isinstance(rows, list) and len(rows) == 6 and all(isinstance(r, jax.Array) and r.shape == (384,) for r in rows)
    assert _max_diff(np.stack(rows), expected) <= ATOL
    single = ours.encode(SENTENCES[0], convert_to_tensor=True)
    assert isinstance(single, jax.Array) and single.shape == (384,)


def test_normalize_embeddings(prompted):
    ours, theirs = prompted           # no Normalize module: the flag matters
    raw = ours.encode(SENTENCES)
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).min() > 0.1
    assert _max_diff(raw, theirs.encode(SENTENCES, normalize_embeddings=False)) <= ATOL
    unit = ours.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    assert _max_diff(unit, theirs.encode(SENTENCES, normalize_embeddings=True)) <= ATOL


def test_truncate_dim(minilm):
    ours, theirs = minilm
    for normalize in (False, True):
        got = ours.encode(SENTENCES, truncate_dim=64, normalize_embeddings=normalize)
        assert got.shape == (6, 64)
        assert _max_diff(got, theirs.encode(SENTENCES, truncate_dim=64, normalize_embeddings=normalize)) <= ATOL


def test_prompts_and_prompt_name(prompted):
    ours, theirs = prompted
    assert ours.prompts == theirs.prompts == {"query": "query: ", "document": "", **PROMPTS}
    assert ours.default_prompt_name == theirs.default_prompt_name == "query"
    for kwargs in ({}, {"prompt_name": "doc"}, {"prompt_name": "query"}, {"prompt": "custom: "}, {"prompt": ""},
                   {"prompt": "custom: ", "batch_size": 4}):      # batch_size 4: packed rows
        assert _max_diff(ours.encode(SENTENCES, **kwargs), theirs.encode(SENTENCES, **kwargs)) <= ATOL, kwargs
    assert _max_diff(ours.encode(SENTENCES), ours.encode(SENTENCES, prompt="")) > 1e-2    # the default applied
    assert _max_diff(ours.encode_query(SENTENCES), theirs.encode_query(SENTENCES)) <= ATOL
    assert _max_diff(ours.encode_document(SENTENCES), theirs.encode_document(SENTENCES)) <= ATOL
    with pytest.raises(ValueError, match=r"prompt_name 'nope' is not one of the model's prompts "
                                         r"\['doc', 'document', 'query'\]"):
        ours.encode(SENTENCES, prompt_name="nope")


def test_prompt_left_out_of_pooling_with_include_prompt_false(excluded, prompted):
    ours, theirs = excluded
    assert ours.pooling_include_prompt is False
    for kwargs in ({}, {"prompt_name": "doc", "batch_size": 4}, {"prompt": ""}, {"normalize_embeddings": True}):
        assert _max_diff(ours.encode(SENTENCES, **kwargs), theirs.encode(SENTENCES, **kwargs)) <= ATOL, kwargs
    assert _max_diff(ours.encode(SENTENCES), prompted[0].encode(SENTENCES)) > 1e-2       # it made a difference
    assert _max_diff(ours.encode(SENTENCES, prompt=""), prompted[0].encode(SENTENCES, prompt="")) <= ATOL


def test_quantize_embeddings_equals_sentence_transformers(minilm):
    from sentence_transformers.util import quantize_embeddings as st_quantize

    rng = np.random.default_rng(0)
    emb = np.concatenate([minilm[1].encode(SENTENCES), rng.normal(0, 0.1, (58, 384)).astype(np.float32)])
    calibration = rng.normal(0, 0.08, (100, 384)).astype(np.float32)
    ranges = np.stack([np.full(384, -0.2), np.full(384, 0.25)]).astype(np.float32)
    for precision in ("float32", "int8", "uint8", "binary", "ubinary"):
        for kwargs in ({}, {"calibration_embeddings": calibration}, {"ranges": ranges}):
            ours, theirs = quantize_embeddings(emb, precision, **kwargs), st_quantize(emb, precision, **kwargs)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (precision, kwargs)
            np.testing.assert_array_equal(ours, theirs)
        matrices = [emb[:5], emb[5:30], emb[30:]]     # token-embedding matrices: ranges shared by all
        for ours, theirs in zip(quantize_embeddings(matrices, precision), st_quantize(matrices, precision)):
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="from a single embedding"):
        quantize_embeddings(emb[:1], "int8")


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_encode_precision(minilm, precision):
    ours, theirs = minilm
    got, expected = ours.encode(SENTENCES, precision=precision), theirs.encode(SENTENCES, precision=precision)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, quantize_embeddings(ours.encode(SENTENCES), precision))
    # end to end: the float embeddings differ by <= 1e-5, which may move a value across a bucket's edge
    if precision.endswith("binary"):
        assert np.mean(got != expected) < 0.01
    else:
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1 and np.mean(got != expected) < 0.01
    tensor = ours.encode(SENTENCES, precision=precision, convert_to_tensor=True)
    assert isinstance(tensor, jax.Array) and tensor.dtype == got.dtype


@pytest.mark.parametrize("batch_size", [32, 4])      # 4: packed rows
def test_token_embeddings(minilm, batch_size):
    ours, theirs = minilm
    got = ours.encode(SENTENCES, output_value="token_embeddings", batch_size=batch_size)
    expected = theirs.encode(SENTENCES, output_value="token_embeddings")
    assert isinstance(got, list) and len(got) == len(SENTENCES)
    for g, e in zip(got, expected):
        assert isinstance(g, np.ndarray) and g.dtype == np.float32 and g.shape == tuple(e.shape)
        assert _max_diff(g, e.numpy()) <= ATOL
    single = ours.encode(SENTENCES[2], output_value="token_embeddings")
    assert _max_diff(single, expected[2].numpy()) <= ATOL


def test_output_value_none(minilm):
    ours, theirs = minilm
    got = ours.encode(SENTENCES, output_value=None, prompt="query: ")
    expected = theirs.encode(SENTENCES, output_value=None, prompt="query: ")
    for g, e in zip(got, expected):
        mask = e["attention_mask"].bool()
        np.testing.assert_array_equal(g["input_ids"], e["input_ids"][mask].numpy())
        assert g["prompt_length"] == e["prompt_length"] == 3
        assert _max_diff(g["token_embeddings"], e["token_embeddings"][mask].numpy()) <= ATOL
        assert _max_diff(g["sentence_embedding"], e["sentence_embedding"].numpy()) <= ATOL


def test_bad_arguments(minilm):
    ours, _ = minilm
    with pytest.raises(ValueError, match="precision 'int4' is not supported"):
        ours.encode(SENTENCES, precision="int4")
    with pytest.raises(ValueError, match="output_value 'logits' is not supported"):
        ours.encode(SENTENCES, output_value="logits")
    with pytest.raises(ValueError, match="from a single embedding"):
        ours.encode(SENTENCES[0], precision="int8")          # as sentence-transformers
    with pytest.raises(ValueError, match="similarity_fn_name 'maxsim' is not supported"):
        ours.similarity_fn_name = "maxsim"


# --- similarity ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_functions(minilm, prompted, name, monkeypatch):
    ours, theirs = minilm
    monkeypatch.setattr(ours, "similarity_fn_name", name)
    monkeypatch.setattr(theirs, "similarity_fn_name", name)
    for emb in (theirs.encode(SENTENCES), prompted[1].encode(SENTENCES)):      # unit and raw vectors
        a, b = emb[:4], emb[2:]
        for x, y in ((a, b), (jax.numpy.asarray(a), b), (a[0], b)):
            got, expected = ours.similarity(x, y), theirs.similarity(x, y).numpy()
            assert isinstance(got, jax.Array) and got.shape == expected.shape
            assert _max_rel_diff(got, expected) <= ATOL, name
        got, expected = ours.similarity_pairwise(a[:3], b[:3]), theirs.similarity_pairwise(a[:3], b[:3]).numpy()
        assert isinstance(got, jax.Array) and got.shape == (3,) and _max_rel_diff(got, expected) <= ATOL, name


def test_similarity_fn_name_read_and_saved(prompted, excluded, tmp_path):
    ours, theirs = prompted
    assert ours.similarity_fn_name == theirs.similarity_fn_name == "manhattan"
    emb = ours.encode(SENTENCES)
    assert _max_rel_diff(ours.similarity(emb, emb), theirs.similarity(emb, emb).numpy()) <= ATOL
    excluded[0].save_pretrained(str(tmp_path / "saved"))
    assert st_dir.read_settings(str(tmp_path / "saved")) == {
        "prompts": {"query": "query: ", "document": "", **PROMPTS}, "default_prompt_name": "query",
        "similarity_fn_name": "manhattan", "truncate_dim": None, "include_prompt": False}
