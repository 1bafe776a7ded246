"""SentenceEncoder against sentence-transformers on the real all-MiniLM-L6-v2 and the STS benchmark test set."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxsbert.encoder import SentenceEncoder


@pytest.fixture(scope="module")
def encoder(minilm_path):
    return SentenceEncoder.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def st_embeddings(minilm_path, stsb_test):
    from sentence_transformers import SentenceTransformer

    s1, s2, _ = stsb_test
    model = SentenceTransformer(minilm_path, device="cpu")
    return model.encode(s1 + s2, batch_size=64, convert_to_numpy=True)


def _spearman(emb, n, scores):
    a, b = emb[:n], emb[n:]
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return spearmanr(cos, scores).correlation


@pytest.mark.parametrize("packing", [True, False])
def test_stsb_test_embeddings_equal_sentence_transformers(minilm_path, st_embeddings, stsb_test, packing):
    s1, s2, scores = stsb_test
    encoder = SentenceEncoder.from_pretrained(minilm_path, packing=packing)
    ours = encoder.encode(s1 + s2, batch_size=64)
    programs = encoder.compiled_programs()
    assert ours.dtype == np.float32 and ours.shape == st_embeddings.shape
    diff = float(np.abs(ours - st_embeddings).max())
    assert diff <= 1e-5, diff
    ours_rho, st_rho = _spearman(ours, len(s1), scores), _spearman(st_embeddings, len(s1), scores)
    assert round(ours_rho, 4) == round(st_rho, 4)
    assert round(st_rho, 4) == 0.8203
    assert 1 <= programs <= len(encoder.buckets), (programs, encoder.buckets)
    print(f"packing={packing}: max|diff|={diff:.2e} spearman={ours_rho:.6f} (ST {st_rho:.6f}) "
          f"programs={programs} buckets={len(encoder.buckets)}")


def test_encode_reuses_compiled_programs(encoder, stsb_test):
    s1, _, _ = stsb_test
    encoder.packing = True
    encoder.encode(s1[:300], batch_size=64)
    n = encoder.compiled_programs()
    encoder.encode(s1[300:700], batch_size=64)
    assert encoder.compiled_programs() == n


def test_small_inputs_and_normalization(encoder):
    one = encoder.encode(["A man is playing a guitar."])
    assert one.shape == (1, 384)
    two = encoder.encode(["A man is playing a guitar.", "A dog runs."], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(two, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(two[0], one[0] / np.linalg.norm(one[0]), atol=1e-6)


def test_bad_input(encoder):
    empty = encoder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TypeError, match=r"sentences\[1\] is int"):
        encoder.encode(["fine", 3])
    assert encoder.encode("a single string").shape == (384,)   # one vector, as sentence-transformers
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encoder.encode(["x"], batch_size=0)


def test_missing_or_unsupported_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        SentenceEncoder.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not supported; supported: \[.*'bert'"):
        SentenceEncoder.from_pretrained(str(tmp_path))


def test_cli_encode_txt_and_jsonl(minilm_path, tmp_path, encoder):
    sentences = ["A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs play in the snow."]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in sentences) + "\n")
    expected = encoder.encode(sentences)
    for name in ("in.txt", "in.jsonl"):
        out = tmp_path / (name + ".npy")
        subprocess.run([sys.executable, "-m", "jaxsbert.cli", "encode", "--model", minilm_path, "--input",
                        str(tmp_path / name), "--output", str(out)], check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
        np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
