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
