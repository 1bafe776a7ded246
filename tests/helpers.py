"""Small models and datasets for fast tests."""
from __future__ import annotations

import json
import os

from jaxsbert.encoder import SentenceEncoder, Tokenizer
from jaxsbert.interop.st_dir import init_params
from jaxsbert.models.bert import BertConfig
from jaxsbert.models.pooling import PoolingConfig
from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModelConfig


def tiny_config(max_seq_length: int = 32, normalize: bool = False, dropout: float = 0.1) -> SentenceModelConfig:
    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)
    modules = (PoolingConfig(32, ("mean",)),) + ((NormalizeConfig(),) if normalize else ())
    return SentenceModelConfig("bert", bert, modules, max_seq_length=max_seq_length)


def save_tiny_model(directory: str, tokenizer_dir: str, seed: int = 0, **kwargs) -> str:
    """A randomly initialised tiny BERT sentence-transformers directory with MiniLM's tokenizer."""
    config = tiny_config(**kwargs)
    encoder = SentenceEncoder(config, init_params(config, seed), Tokenizer(tokenizer_dir, config.max_seq_length))
    encoder.save_pretrained(directory)
    return directory


def write_jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def latest_checkpoint(workdir: str) -> dict:
    """The raw tree (params, heads, optimizer state, ...) of a training workdir's latest checkpoint."""
    from jaxsbert.training.checkpoint import Checkpointer

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return ckpt.restore_raw()
    finally:
        ckpt.close()


def cli_train_stop_resume(config: dict, tmp_path, stop_after: int = 3) -> list[dict]:
    """``jaxsbert train`` of ``config`` (a dict written as a config file) once through, and once stopped after
    ``stop_after`` steps then resumed with ``--resume``; asserts the two runs' latest checkpoints are
    identical (every array, bit for bit). Returns the uninterrupted run's metrics.jsonl records."""
    import jax
    import numpy as np

    from jaxsbert.cli import main

    cfg = os.path.join(str(tmp_path), "cfg.py")
    with open(cfg, "w") as f:
        f.write("def get_config():\n    return " + repr(config) + "\n")
    full, part = os.path.join(str(tmp_path), "full"), os.path.join(str(tmp_path), "part")
    main(["train", cfg, "--workdir", full])
    main(["train", cfg, "--workdir", part, "-o", f"stop_after_steps={stop_after}"])
    main(["train", cfg, "--workdir", part, "--resume"])
    a, b = latest_checkpoint(full), latest_checkpoint(part)
    leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    for (path, x), (_, y) in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
    with open(os.path.join(full, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
