"""``SentenceEncoder``: load a sentence-transformers / Hugging Face model and encode sentences with JAX."""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.data.buckets import bucket_for, length_buckets, pad_token_ids
from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS, DEFAULT_ROW_LENGTH, fill_groups, pack_token_ids
from jaxsbert.models.sentence_model import SentenceModel, SentenceModelConfig


def check_sentences(sentences: Sequence[Any], what: str = "sentences") -> list[str]:
    if isinstance(sentences, str):
        raise TypeError(f"{what} must be a list of strings, got a single string (wrap it in a list)")
    out = list(sentences)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"{what}[{i}] is {type(s).__name__} ({s!r:.40}), expected str")
    return out


# a model directory needs one of these for its vocabulary (transformers would otherwise build a tokenizer
# with no vocabulary, mapping every word to [UNK])
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")


class Tokenizer:
    """The model's fast tokenizer with sentence-transformers' preprocessing (strip, optional lower-case, truncation)."""

    def __init__(self, directory: str, max_seq_length: int, do_lower_case: bool = False):
        from transformers import AutoTokenizer

        if os.path.isdir(directory) and not any(os.path.exists(os.path.join(directory, f)) for f in TOKENIZER_FILES):
            raise FileNotFoundError(f"{directory}: no tokenizer files; expected one of {list(TOKENIZER_FILES)} "
                                    "(copy them from the model the weights came from)")
        self.hf = AutoTokenizer.from_pretrained(directory)
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.pad_token_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else 0

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [t.strip() for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        return self.hf(texts, truncation=True, max_length=self.max_seq_length, padding=False,
                       return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text without truncation (special tokens included): > max_seq_length means cut."""
        texts = [t.strip() for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        return [len(ids) for ids in self.hf(texts, truncation=False, padding=False, verbose=False,
                                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]]


class SentenceEncoder:
    """A sentence-embedding model: config, parameters, tokenizer, and a jitted forward per shape bucket."""

    def __init__(self, config: SentenceModelConfig, params: Any, tokenizer: Tokenizer, dtype=jnp.float32,
                 length_buckets_: Sequence[int] | None = None, source: str | None = None, packing: bool = True,
                 pack_length: int = DEFAULT_ROW_LENGTH, max_segments: int = DEFAULT_MAX_SEGMENTS):
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.source = source
        self.buckets = tuple(length_buckets_ or length_buckets(config.max_seq_length))
        self.packing = packing
        self.pack_length = pack_length
        self.max_segments = max_segments
        self.module = SentenceModel(config, dtype=dtype, max_segments=max_segments)
        self._forward = jax.jit(lambda params, features: self.module.apply({"params": params}, features))

    @classmethod
    def from_pretrained(cls, path_or_id: str, dtype: Any = jnp.float32, **kwargs) -> "SentenceEncoder":
        from jaxsbert.interop import st_dir

        config, params, tokenizer_dir = st_dir.load(path_or_id)
        tokenizer = Tokenizer(tokenizer_dir, config.max_seq_length, config.do_lower_case)
        params = jax.tree_util.tree_map(jnp.asarray, params)
        return cls(config, params, tokenizer, dtype=dtype, source=path_or_id, **kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    def compiled_programs(self) -> int:
        """How many programs the encode forward has compiled so far (one per (rows, length) shape)."""
        return self._forward._cache_size()

    def encode(self, sentences: Sequence[str], batch_size: int = 32, normalize_embeddings: bool | None = None,
               show_progress_bar: bool | None = None) -> np.ndarray:
        """Embeds sentences -> float32 [N, dim] in input order.

        Sentences are sorted by length. With ``packing`` (the default) and at least ``batch_size``
        sentences, the ones up to ``pack_length`` tokens are packed several per row into fixed
        ``[rows, pack_length]`` arrays (about ``batch_size`` sentences' worth of tokens each); the
        others go in batches of ``batch_size`` rows padded to a length bucket. Either way, one compiled
        program serves every batch of a shape. ``normalize_embeddings=None`` keeps the model's own
        choice (a Normalize module); True L2-normalises in any case.
        """
        sentences = check_sentences(sentences)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not sentences:
            return np.zeros((0, self.embedding_dim), np.float32)
        token_ids = self.tokenizer(sentences)
        order = np.argsort([-len(t) for t in token_ids], kind="stable")
        batches = list(self._plan_batches(token_ids, order, batch_size))
        out = np.zeros((len(sentences), self.embedding_dim), np.float32)
        if show_progress_bar:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc="Batches", unit="batch")
        pending = []
        for idx, features in batches:
            pending.append((idx, self._forward(self.params, features)))   # dispatch async, fetch later
            if len(pending) > 2:
                done_idx, emb = pending.pop(0)
                out[done_idx] = np.asarray(emb)[: len(done_idx)]
        for done_idx, emb in pending:
            out[done_idx] = np.asarray(emb)[: len(done_idx)]
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _plan_batches(self, token_ids: list, order: np.ndarray, batch_size: int):
        """(sentence indices, features) of each forward call, longest sentences first."""
        pad = self.tokenizer.pad_token_id
        packable = self.packing and len(order) >= batch_size
        if packable:
            long = [i for i in order if len(token_ids[i]) > self.pack_length]
            short = order[len(long):]
        else:
            long, short = list(order), []
        rows = min(batch_size, 1 << (len(order) - 1).bit_length())   # fixed for the whole call
        for start in range(0, len(long), rows):
            idx = np.asarray(long[start:start + rows])
            batch_ids = [token_ids[i] for i in idx]
            length = bucket_for(max(len(t) for t in batch_ids), self.buckets)
            yield idx, pad_token_ids(batch_ids, length, rows, pad)
        if not len(short):
            return
        # ~16 tokens per sentence: a packed call holds about batch_size sentences
        packed_rows = max(1, -(-batch_size * 16 // self.pack_length))
        slots = packed_rows * self.max_segments
        for idx in fill_groups([len(token_ids[i]) for i in short], short, packed_rows, self.pack_length,
                              self.max_segments):
            features = pack_token_ids([token_ids[i] for i in idx], packed_rows, self.pack_length,
                                      self.max_segments, pad)
            features["slots"] = np.pad(features["slots"], (0, slots - len(idx)))
            yield idx, features

    def save_pretrained(self, directory: str, **kwargs) -> None:
        """Writes a sentence-transformers directory (loads in ``SentenceTransformer(dir)`` and ``AutoModel``)."""
        from jaxsbert.interop import export

        export.save_sentence_transformer(self, directory, **kwargs)

