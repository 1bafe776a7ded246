"""``SentenceEncoder``: load a sentence-transformers / Hugging Face model and encode sentences with JAX.

``encode`` takes sentence-transformers' ``SentenceTransformer.encode`` arguments (a single string or a
list, ``prompt`` / ``prompt_name``, ``precision``, ``output_value``, ``convert_to_tensor``, ...), and
``similarity`` / ``similarity_pairwise`` score embeddings with the model's similarity function.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.data.buckets import bucket_for, length_buckets, pad_token_ids
from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS, DEFAULT_ROW_LENGTH, fill_groups, pack_token_ids
from jaxsbert.models.heads import Dense, DenseConfig
from jaxsbert.models.pooling import PoolingConfig, normalize
from jaxsbert.models.sentence_model import (NormalizeConfig, SentenceModel, SentenceModelConfig, compute_dtype,
                                             transformer_module)

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")
# prompt names every SentenceTransformer has (empty unless the model or the user sets them): encode_query / encode_document
DEFAULT_PROMPTS = {"query": "", "document": ""}


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
    """The model's fast tokenizer with sentence-transformers' preprocessing (strip, optional lower-case, truncation).

    ``chat``: the directory's message-modality settings (:func:`jaxsbert.interop.st_dir.chat_settings`; None:
    plain text). When they put it in message mode (``chat_format`` not None), each text is rendered through
    the tokenizer's chat template as sentence-transformers 6.3 does (:mod:`jaxsbert.interop.chat_template`):
    not stripped, a prompt as a system message."""

    def __init__(self, directory: str, max_seq_length: int, do_lower_case: bool = False, chat: Any = None):
        from transformers import AutoTokenizer

        from jaxsbert.interop import chat_template

        if os.path.isdir(directory) and not any(os.path.exists(os.path.join(directory, f)) for f in TOKENIZER_FILES):
            raise FileNotFoundError(f"{directory}: no tokenizer files; expected one of {list(TOKENIZER_FILES)} "
                                    "(copy them from the model the weights came from)")
        self.hf = AutoTokenizer.from_pretrained(directory)
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.pad_token_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else 0
        self.chat_format = chat_template.resolve(chat, self.hf, directory, do_lower_case)
        self._suffix_cache: dict = {}

    def __call__(self, texts: Sequence[str], prompt: str | None = None) -> list[list[int]]:
        """Token ids of each text (``prompt`` put before it: prefixed, or a system message in message mode)."""
        if self.chat_format is not None:
            from jaxsbert.interop import chat_template
            return chat_template.encode(self.hf, list(texts), prompt, self.chat_format, self.max_seq_length,
                                        self._suffix_cache)
        texts = [(prompt or "") + t for t in texts]
        texts = [t.strip() for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        return self.hf(texts, truncation=True, max_length=self.max_seq_length, padding=False,
                       return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def token_counts(self, texts: Sequence[str], prompt: str | None = None) -> list[int]:
        """Tokens of each text without truncation (special tokens included): > max_seq_length means cut."""
        if self.chat_format is not None:
            from jaxsbert.interop import chat_template
            return chat_template.token_counts(self.hf, list(texts), prompt, self.chat_format)
        texts = [(prompt or "") + t for t in texts]
        texts = [t.strip() for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        return [len(ids) for ids in self.hf(texts, truncation=False, padding=False, verbose=False,
                                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]]


# --- quantization, similarity, pooling of one sentence's tokens (pure functions) -----------------------

def quantize_embeddings(embeddings, precision: str, ranges: np.ndarray | None = None,
                        calibration_embeddings: np.ndarray | None = None):
    """sentence-transformers' ``quantize_embeddings``, in numpy, with the same results.

    ``int8`` / ``uint8``: each dimension's [min, max] (from ``ranges`` [2, dim], else from
    ``calibration_embeddings``, else from ``embeddings`` themselves, which needs more than one) is cut
    into 255 steps; ``floor((x - min) / step)`` clipped to [0, 255], minus 128 for int8. ``binary`` /
    ``ubinary``: the bits ``x > 0`` packed 8 per byte (``np.packbits``), minus 128 for binary (int8).
    A list of [tokens, dim] matrices is quantized matrix by matrix with ranges shared by all of them.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; expected one of {list(PRECISIONS)}")
    if isinstance(embeddings, list):
        if not embeddings:
            return []
        matrices = [np.asarray(e) for e in embeddings]
        if matrices[0].ndim == 2:
            if precision.endswith("int8") and ranges is None:
                data = np.concatenate(matrices) if calibration_embeddings is None else calibration_embeddings
                if len(data):
                    ranges = _quantization_ranges(np.asarray(data), precision, calibration_embeddings)
            return [quantize_embeddings(m, precision, ranges, calibration_embeddings) for m in matrices]
        embeddings = np.array(matrices)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.int8, np.uint8):
        raise ValueError("embeddings to quantize must be floats, got int8/uint8")
    if embeddings.ndim == 2 and embeddings.shape[0] == 0:
        dim = embeddings.shape[1]
        dtype = np.int8 if precision in ("int8", "binary") else np.uint8
        if precision.endswith("int8"):
            return np.zeros((0, dim), dtype)
        if precision.endswith("binary"):
            return np.zeros((0, (dim + 7) // 8), dtype)
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            ranges = _quantization_ranges(embeddings, precision, calibration_embeddings)
        ranges = np.asarray(ranges).astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1)
    return bits if precision == "ubinary" else (bits - 128).astype(np.int8)


def _quantization_ranges(embeddings: np.ndarray, precision: str, calibration_embeddings) -> np.ndarray:
    """[2, dim]: per-dimension min and max of the calibration embeddings (or of ``embeddings``)."""
    if calibration_embeddings is None:
        if embeddings.ndim == 1 or embeddings.shape[0] == 1:
            raise ValueError(f"cannot compute {precision} quantization ranges from a single embedding; encode "
                             "several sentences, or call quantize_embeddings with `ranges` or "
                             "`calibration_embeddings`")
        calibration_embeddings = embeddings
    calibration_embeddings = np.asarray(calibration_embeddings)
    return np.vstack((calibration_embeddings.min(axis=0), calibration_embeddings.max(axis=0)))


def _as_float(x) -> jax.Array:
    """A jax array of floats (ints and sub-32-bit floats -> float32); a list of vectors is stacked."""
    if isinstance(x, (list, tuple)) and len(x) and hasattr(x[0], "shape"):
        x = jnp.stack([jnp.asarray(v) for v in x])
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def _check_similarity_fn_name(name: str) -> str:
    name = getattr(name, "value", name)        # sentence-transformers' SimilarityFunction enum too
    if name not in SIMILARITY_FN_NAMES:
        raise ValueError(f"similarity_fn_name {name!r} is not supported; expected one of {list(SIMILARITY_FN_NAMES)}")
    return name


def similarity_matrix(a, b, similarity_fn_name: str = "cosine") -> jax.Array:
    """[Na, Nb] scores of every row of ``a`` ([Na, D] or [D]) with every row of ``b``, as
    sentence-transformers' ``cos_sim`` / ``dot_score`` / ``euclidean_sim`` / ``manhattan_sim``: distances
    are negated (-||a - b||_2, -||a - b||_1) so that higher is more similar. numpy or jax input, jax output
    (float32 unless the input is float64 with jax_enable_x64)."""
    name = _check_similarity_fn_name(similarity_fn_name)
    a, b = _as_float(a), _as_float(b)
    a, b = (a[None] if a.ndim == 1 else a), (b[None] if b.ndim == 1 else b)
    if name in ("cosine", "dot"):
        if name == "cosine":
            a, b = normalize(a), normalize(b)
        return jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    if a.shape[0] == 0:
        return jnp.zeros((0, b.shape[0]), a.dtype)
    p = 2 if name == "euclidean" else 1
    # the differences row by row of a (a few rows at a time: at most ~16M elements at once), not |a|^2 - 2ab + |b|^2,
    # which loses the distances of near-duplicates to cancellation
    rows = max(1, min(a.shape[0], (1 << 24) // max(1, b.size)))
    return -jax.lax.map(lambda x: _distance(x, b, p), a, batch_size=rows)


def similarity_pairwise(a, b, similarity_fn_name: str = "cosine") -> jax.Array:
    """[N] scores of ``a[i]`` with ``b[i]`` (sentence-transformers' ``pairwise_*`` functions; [D] inputs give a
    scalar). numpy or jax input, jax output."""
    name = _check_similarity_fn_name(similarity_fn_name)
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"similarity_pairwise needs two arrays of the same shape, got {a.shape} and {b.shape}")
    if name == "cosine":
        return jnp.sum(normalize(a) * normalize(b), axis=-1)
    if name == "dot":
        return jnp.sum(a * b, axis=-1)
    return -_distance(a, b, 2 if name == "euclidean" else 1)


def _distance(a: jax.Array, b: jax.Array, p: int) -> jax.Array:
    d = a - b
    return jnp.sqrt(jnp.sum(d * d, axis=-1)) if p == 2 else jnp.sum(jnp.abs(d), axis=-1)


def pool_tokens(tokens: np.ndarray, config: PoolingConfig, skip: int = 0) -> np.ndarray:
    """One sentence's [n, H] token embeddings -> its pooled [H * modes] vector, as sentence-transformers'
    ``Pooling`` computes it with the first ``skip`` tokens masked out (``include_prompt=False``: the prompt's
    tokens, [CLS] included): ``cls`` takes the first token kept, ``weightedmean`` weighs token i by i + 1
    (positions counted from the start, prompt included), ``lasttoken`` is the last token."""
    x = np.asarray(tokens, np.float32)
    n, h = x.shape
    kept = x[skip:]
    out = []
    for mode in config.modes:
        if mode == "cls":
            out.append(x[skip] if skip < n else x[0])
        elif mode == "max":
            out.append(kept.max(axis=0) if len(kept) else np.full(h, -np.inf, np.float32))
        elif mode == "mean":
            out.append(kept.sum(axis=0) / max(len(kept), 1e-9))
        elif mode == "mean_sqrt_len_tokens":
            out.append(kept.sum(axis=0) / np.float32(np.sqrt(max(len(kept), 1e-9))))
        elif mode == "weightedmean":
            w = np.arange(skip + 1, n + 1, dtype=np.float32)[:, None]
            out.append((kept * w).sum(axis=0) / max(float(w.sum()), 1e-9))
        else:  # lasttoken
            out.append(x[n - 1] if skip < n else np.zeros(h, np.float32))
    return np.concatenate(out).astype(np.float32)


class SentenceEncoder:
    """A sentence-embedding model: config, parameters, tokenizer, and a jitted forward per shape bucket.

    Like sentence-transformers' ``SentenceTransformer``, it carries the model's ``prompts`` (name -> text),
    ``default_prompt_name``, ``similarity_fn_name``, ``truncate_dim`` (from config_sentence_transformers.json)
    and ``pooling_include_prompt`` (the Pooling config's ``include_prompt``).
    """

    def __init__(self, config: SentenceModelConfig, params: Any, tokenizer: Tokenizer, dtype=jnp.float32,
                 length_buckets_: Sequence[int] | None = None, source: str | None = None, packing: bool = True,
                 pack_length: int = DEFAULT_ROW_LENGTH, max_segments: int = DEFAULT_MAX_SEGMENTS, *,
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None,
                 similarity_fn_name: str | None = None, truncate_dim: int | None = None,
                 pooling_include_prompt: bool = True, attention_impl: str = "auto"):
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.dtype = dtype = compute_dtype(dtype)
        self.attention_impl = attention_impl
        self.source = source
        self.buckets = tuple(length_buckets_ or length_buckets(config.max_seq_length))
        self.packing = packing
        self.pack_length = pack_length
        self.max_segments = max_segments
        self.prompts = {**DEFAULT_PROMPTS, **(prompts or {})}
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not a key of prompts "
                             f"{sorted(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.similarity_fn_name = similarity_fn_name
        self.truncate_dim = truncate_dim
        self.pooling_include_prompt = pooling_include_prompt
        self.module = SentenceModel(config, dtype=dtype, max_segments=max_segments, attention_impl=attention_impl)
        self._forward = jax.jit(lambda params, features: self.module.apply({"params": params}, features))
        transformer = transformer_module(config, dtype, attention_impl=attention_impl)
        self._forward_tokens = jax.jit(lambda params, f: transformer.apply(
            {"params": params["transformer"]}, f["input_ids"], f["attention_mask"], f.get("token_type_ids"),
            f.get("position_ids")).astype(jnp.float32))

    def replace(self, *, config: SentenceModelConfig | None = None, params: Any = None,
                tokenizer: Tokenizer | None = None) -> "SentenceEncoder":
        """A new encoder with these parts changed and every other setting kept (dtype, source, packing, prompts,
        similarity function, truncate_dim, the pooling's include_prompt)."""
        config = config or self.config
        return SentenceEncoder(config, self.params if params is None else params, tokenizer or self.tokenizer,
                               dtype=self.dtype, source=self.source, packing=self.packing,
                               length_buckets_=None if config.max_seq_length != self.config.max_seq_length
                               else self.buckets, pack_length=self.pack_length, max_segments=self.max_segments,
                               prompts=self.prompts, default_prompt_name=self.default_prompt_name,
                               similarity_fn_name=self.similarity_fn_name, truncate_dim=self.truncate_dim,
                               pooling_include_prompt=self.pooling_include_prompt, attention_impl=self.attention_impl)

    @classmethod
    def from_pretrained(cls, path_or_id: str, dtype: Any = jnp.float32, *, prompts: dict[str, str] | None = None,
                        default_prompt_name: str | None = None, similarity_fn_name: str | None = None,
                        truncate_dim: int | None = None, **kwargs) -> "SentenceEncoder":
        """Loads a sentence-transformers or Hugging Face directory, a bundled model by its hub id (with or
        without 'sentence-transformers/': no network needed), or a hub id (fetched when online).

        ``prompts`` / ``default_prompt_name`` / ``similarity_fn_name`` / ``truncate_dim`` override the
        directory's config_sentence_transformers.json as in ``SentenceTransformer(...)`` (``prompts`` per
        name). Other keyword arguments go to the constructor (``packing``, ``pack_length``, ...).
        A name that is none of these raises FileNotFoundError (one line, no hub traceback).
        """
        from jaxsbert.interop import st_dir

        root = st_dir.resolve(path_or_id)
        config, params, tokenizer_dir = st_dir.load(root)
        saved = st_dir.read_settings(root)
        tokenizer = Tokenizer(tokenizer_dir, config.max_seq_length, config.do_lower_case,
                              chat=st_dir.chat_settings(root))
        params = jax.tree_util.tree_map(jnp.asarray, params)
        return cls(config, params, tokenizer, dtype=dtype, source=path_or_id,
                   prompts={**saved["prompts"], **(prompts or {})},
                   default_prompt_name=default_prompt_name or saved["default_prompt_name"],
                   similarity_fn_name=similarity_fn_name or saved["similarity_fn_name"],
                   truncate_dim=truncate_dim if truncate_dim is not None else saved["truncate_dim"],
                   pooling_include_prompt=saved["include_prompt"], **kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    @property
    def similarity_fn_name(self) -> str:
        """"cosine" (the default), "dot", "euclidean" or "manhattan": what :meth:`similarity` computes."""
        return self._similarity_fn_name or "cosine"

    @similarity_fn_name.setter
    def similarity_fn_name(self, name: str | None) -> None:
        self._similarity_fn_name = None if name is None else _check_similarity_fn_name(name)

    def similarity(self, embeddings1, embeddings2) -> jax.Array:
        """[N1, N2] jax array: the model's similarity function (``similarity_fn_name``) of every embedding of
        ``embeddings1`` ([N1, D] or [D], numpy or jax) with every one of ``embeddings2``, with
        sentence-transformers' conventions (euclidean and manhattan negated: higher is more similar)."""
        return similarity_matrix(embeddings1, embeddings2, self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1, embeddings2) -> jax.Array:
        """[N] jax array: the model's similarity of ``embeddings1[i]`` with ``embeddings2[i]``."""
        return similarity_pairwise(embeddings1, embeddings2, self.similarity_fn_name)

    def compiled_programs(self) -> int:
        """How many programs the encode forward has compiled so far (one per (rows, length) shape)."""
        return self._forward._cache_size()

    def encode(self, sentences: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, show_progress_bar: bool | None = None,
               output_value: str | None = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               normalize_embeddings: bool | None = None, truncate_dim: int | None = None):
        """Embeds sentences, with ``SentenceTransformer.encode``'s arguments (same order) and results.

        - ``sentences``: a list -> float32 [N, dim] numpy array in input order; a single string -> [dim].
        - ``prompt``: a string put before every sentence; ``prompt_name``: a key of ``self.prompts``
          (ValueError for another); neither: the ``default_prompt_name``'s prompt, if the model has one.
          ``prompt=""`` means no prompt. With a Pooling ``include_prompt=False``, the prompt's tokens are
          left out of the pooling, as sentence-transformers does.
        - ``precision``: "float32", or "int8" / "uint8" / "binary" / "ubinary" as
          :func:`quantize_embeddings` (int8 ranges from the embeddings of this call).
        - ``convert_to_tensor``: one jax array (wins over ``convert_to_numpy``); both False: a list of
          jax arrays, one per sentence.
        - ``output_value``: "sentence_embedding"; "token_embeddings": a list of float32 [n_tokens, hidden]
          numpy arrays, the tokens of each sentence (prompt and special tokens included, no padding);
          None: a list of dicts per sentence (input_ids, attention_mask, token_embeddings,
          sentence_embedding, and prompt_length with a prompt; numpy, without padding).
        - ``normalize_embeddings``: True L2-normalises (None or False keeps the model's own choice, e.g. a
          Normalize module); ``truncate_dim``: keep the first dims (before normalising), default the
          model's ``truncate_dim``.

        Sentences are sorted by length. With ``packing`` (the default) and at least ``batch_size``
        sentences, the ones up to ``pack_length`` tokens are packed several per row into fixed
        ``[rows, pack_length]`` arrays (about ``batch_size`` sentences' worth of tokens each); the
        others go in batches of ``batch_size`` rows padded to a length bucket. Either way, one compiled
        program serves every batch of a shape. An empty list gives a [0, dim] array (token outputs: []).
        """
        singular = isinstance(sentences, str)
        sentences = check_sentences([sentences] if singular else sentences)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        precision = precision or "float32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported; expected one of {list(PRECISIONS)}")
        if output_value not in OUTPUT_VALUES:
            raise ValueError(f"output_value {output_value!r} is not supported; expected one of {list(OUTPUT_VALUES)}")
        if output_value is None and precision != "float32":
            raise ValueError("precision applies to embeddings; with output_value=None use precision='float32'")
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        prompt = self._resolve_prompt(prompt, prompt_name)
        # message mode (chat template): the prompt is a system message, pooled with the rest (no prompt_length)
        chat = getattr(self.tokenizer, "chat_format", None) is not None
        skip = 0 if not prompt or self.pooling_include_prompt or chat else self._prompt_length(prompt)

        if output_value == "sentence_embedding" and not skip:
            out = self._embed(sentences, batch_size, show_progress_bar, prompt)
        else:
            token_ids, tokens = self._embed_tokens(sentences, batch_size, show_progress_bar, prompt)
            if output_value != "token_embeddings":
                out = self._pool_and_head(tokens, skip)
        if output_value == "token_embeddings":
            result = quantize_embeddings(tokens, precision) if precision != "float32" else tokens
            return result[0] if singular else result
        if truncate_dim is not None:
            out = np.ascontiguousarray(out[:, :truncate_dim])
        if output_value is None:
            result = [{"input_ids": np.asarray(ids, np.int32), "attention_mask": np.ones(len(ids), np.int32),
                       "token_embeddings": t, "sentence_embedding": e, **({"prompt_length": skip or
                       self._prompt_length(prompt)} if prompt and not chat else {})}
                      for ids, t, e in zip(token_ids, tokens, out)]
            return result[0] if singular else result

        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        if precision != "float32" and len(out):
            out = quantize_embeddings(out, precision)
        if convert_to_tensor:
            result = jnp.asarray(out)
        elif convert_to_numpy:
            result = out
        else:
            result = [jnp.asarray(row) for row in out]
        return result[0] if singular else result

    def encode_query(self, sentences: str | Sequence[str], **kwargs):
        """:meth:`encode` with the model's "query" prompt unless ``prompt`` or ``prompt_name`` is given
        (sentence-transformers' ``encode_query``)."""
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None and "query" in self.prompts:
            kwargs["prompt_name"] = "query"
        return self.encode(sentences, **kwargs)

    def encode_document(self, sentences: str | Sequence[str], **kwargs):
        """:meth:`encode` with the model's "document" prompt (or "passage", "corpus", as sentence-transformers'
        ``encode_document`` looks them up) unless ``prompt`` or ``prompt_name`` is given."""
        if kwargs.get("prompt") is None and kwargs.get("prompt_name") is None:
            name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
            if name is not None:
                kwargs["prompt_name"] = name
        return self.encode(sentences, **kwargs)

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt text, as sentence-transformers picks it: ``prompt``; else ``prompts[prompt_name]``;
        else the default prompt name's text; else None."""
        if prompt is not None:
            if prompt_name is not None:
                warnings.warn("encode got both `prompt` and `prompt_name`; using `prompt`", stacklevel=3)
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"prompt_name {prompt_name!r} is not one of the model's prompts "
                                 f"{sorted(self.prompts)}")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def _prompt_length(self, prompt: str) -> int:
        """The prompt's tokens at the start of a sentence: its tokenization without a trailing special token
        (sentence-transformers' Transformer._get_prompt_length)."""
        ids = self.tokenizer([prompt])[0]
        return len(ids) - (1 if ids and ids[-1] in set(self.tokenizer.hf.all_special_ids) else 0)

    def _tokenize(self, texts: list[str], prompt: str | None) -> list:
        """Token ids of each text with ``prompt`` (the tokenizer's way when it takes one, else prefixed)."""
        if getattr(self.tokenizer, "chat_format", None) is not None:
            return self.tokenizer(texts, prompt=prompt)
        return self.tokenizer([prompt + t for t in texts] if prompt else texts)

    def _embed(self, texts: list[str], batch_size: int, show_progress_bar: bool | None,
               prompt: str | None = None) -> np.ndarray:
        """float32 [N, dim] sentence embeddings from the whole model, in input order."""
        out = np.zeros((len(texts), self.embedding_dim), np.float32)

        def collect(idx, features, emb):
            out[idx] = np.asarray(emb)[: len(idx)]

        self._run(self._tokenize(texts, prompt), batch_size, show_progress_bar, self._forward, collect)
        return out

    def _embed_tokens(self, texts: list[str], batch_size: int, show_progress_bar: bool | None,
                      prompt: str | None = None):
        """(token ids, float32 [n_i, hidden] transformer outputs) of each text, without padding, in input order."""
        token_ids = self._tokenize(texts, prompt)
        tokens: list = [None] * len(texts)

        def collect(idx, features, result):
            result = np.asarray(result)
            if "slots" in features:         # packed: sentence k is segment s of row r
                rows, segments = np.divmod(features["slots"][: len(idx)], self.max_segments)
                for i, r, s in zip(idx, rows, segments):
                    tokens[i] = result[r][features["attention_mask"][r] == s + 1]
            else:
                for k, i in enumerate(idx):
                    tokens[i] = result[k, : len(token_ids[i])].copy()

        self._run(token_ids, batch_size, show_progress_bar, self._forward_tokens, collect)
        return token_ids, tokens

    def _pool_and_head(self, tokens: list[np.ndarray], skip: int) -> np.ndarray:
        """Sentence embeddings from token embeddings: the Pooling (leaving out the first ``skip`` tokens), then
        the modules after it (Dense, Normalize) -> float32 [N, dim]."""
        modules = self.config.modules
        if not modules or not isinstance(modules[0], PoolingConfig) or any(
                isinstance(m, PoolingConfig) for m in modules[1:]):
            raise ValueError(f"this path needs the model's modules to be one Pooling followed by Dense/Normalize; "
                             f"got {[type(m).__name__ for m in modules]}")
        if not tokens:
            return np.zeros((0, self.embedding_dim), np.float32)
        x = jnp.asarray(np.stack([pool_tokens(t, modules[0], skip) for t in tokens]))
        for i, m in enumerate(modules[1:], start=1):
            if isinstance(m, DenseConfig):
                x = Dense(m).apply({"params": self.params[self.config.module_name(i)]}, x)
            elif isinstance(m, NormalizeConfig):
                x = normalize(x)
        return np.array(x, np.float32)

    def _run(self, token_ids: list, batch_size: int, show_progress_bar: bool | None, forward, collect) -> None:
        """Calls ``forward(params, features)`` on every planned batch (dispatched ahead, fetched two behind)
        and ``collect(sentence indices, features, result)`` on each result."""
        if not token_ids:
            return
        order = np.argsort([-len(t) for t in token_ids], kind="stable")
        batches = list(self._plan_batches(token_ids, order, batch_size))
        if show_progress_bar:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc="Batches", unit="batch")
        pending = []
        for idx, features in batches:
            pending.append((idx, features, forward(self.params, features)))   # dispatch async, fetch later
            if len(pending) > 2:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)

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
        """Writes a sentence-transformers directory (loads in ``SentenceTransformer(dir)`` and ``AutoModel``),
        with this encoder's prompts, default_prompt_name, similarity_fn_name and include_prompt."""
        from jaxsbert.interop import export

        export.save_sentence_transformer(self, directory, **kwargs)
