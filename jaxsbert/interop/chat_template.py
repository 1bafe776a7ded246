"""Texts through the tokenizer's chat template, as sentence-transformers 6.3's ``Transformer`` feeds them.

sentence-transformers 6.3 gives its Transformer a "message" modality when the tokenizer has a chat template,
and then turns every plain text into a conversation before tokenizing ("Always convert to the message
format if it's supported"). Which directories are in this mode (:func:`read_settings`):

- a sentence-transformers directory (modules.json): only when the Transformer's sentence_bert_config.json has
  a ``modality_config`` with a "message" entry (sentence-transformers >= 6 saves one for a tokenizer with a
  chat template). Without ``modality_config`` (saved by older releases, e.g. Qwen3-Embedding on the hub, or by
  jaxsbert for a text model) the directory is text-only, whatever the tokenizer has;
- a plain Hugging Face directory (no modules.json): when its tokenizer has a ``chat_template``.

In message mode (:func:`encode`): a text is one user message, ``[{"role": "user", "content": text}]``
("flat" format; "structured": ``content=[{"type": "text", "text": text}]``); a non-empty prompt is a
system message before it (not a prefix of the text, and not left out of the pooling); the conversation
is rendered by ``apply_chat_template`` (no generation prompt unless the directory's
``processing_kwargs["chat_template"]`` asks for one) and tokenized without special tokens (no EOS
appended), truncated to ``max_seq_length``. A row that reaches ``max_seq_length`` gets the template's tail
(e.g. ``<|im_end|>\\n``) written back over its last tokens (sentence-transformers' ``restore_suffix``).
Texts are not stripped (6.x does not strip them).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

# sentence-transformers' KNOWN_MODEL_TYPES_MESSAGE_FORMATS is for families jaxsbert does not load; the
# format is otherwise read from the template (InputFormatter._infer_format)
STRUCTURED_PATTERNS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")
# apply_chat_template arguments that size the tokenization (sentence-transformers folds them elsewhere)
SIZE_KWARGS = ("padding", "truncation", "max_length", "return_tensors")


@dataclasses.dataclass(frozen=True)
class ChatSettings:
    """What a directory says about the message modality: ``message`` True / False, or None for a plain
    Hugging Face directory (decided by the tokenizer's chat template); ``format`` "flat", "structured" or
    "auto" (from the template); ``template_kwargs``: ``processing_kwargs["chat_template"]`` as JSON text."""
    message: bool | None = None
    format: str = "auto"
    template_kwargs: str = "{}"


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """A tokenizer in message mode: the message ``format`` ("flat" / "structured"), the extra
    ``apply_chat_template`` arguments (JSON text) and whether truncated rows get the template's tail back."""
    format: str
    template_kwargs: str = "{}"
    restore_suffix: bool = True

    @property
    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.template_kwargs)


def read_settings(sbert_config: dict | None, where: str) -> ChatSettings:
    """The message-modality settings of a Transformer whose sentence_bert_config.json is ``sbert_config``
    (None: a plain Hugging Face directory, no modules.json)."""
    if sbert_config is None:
        return ChatSettings(None)
    modality = sbert_config.get("modality_config") or {}
    if "message" not in modality:
        return ChatSettings(False)
    fmt = (modality["message"] or {}).get("format", "auto")
    processing = sbert_config.get("processing_kwargs") or {}
    other = sorted(k for k, v in processing.items() if k != "chat_template" and v)
    template_kwargs = dict(processing.get("chat_template") or {})
    size = sorted(k for k in template_kwargs if k in SIZE_KWARGS)
    if other or size:
        raise ValueError(f"{where}: processing_kwargs {other + [f'chat_template.{k}' for k in size]} are not "
                         "supported with the message modality; supported: chat_template template variables and "
                         "restore_suffix")
    if fmt not in ("auto", "flat", "structured"):
        raise ValueError(f"{where}: modality_config.message.format {fmt!r} is not one of auto, flat, structured")
    return ChatSettings(True, fmt, json.dumps(template_kwargs, sort_keys=True))


def resolve(settings: ChatSettings | None, hf_tokenizer: Any, where: str, do_lower_case: bool = False
            ) -> ChatFormat | None:
    """The tokenizer's :class:`ChatFormat` (None: plain text), as sentence-transformers decides it."""
    template = getattr(hf_tokenizer, "chat_template", None)
    if settings is None or settings.message is False or (settings.message is None and template is None):
        return None
    if template is None:
        raise ValueError(f"{where}: sentence_bert_config.json's modality_config has 'message', but the tokenizer "
                         "has no chat_template")
    if not isinstance(template, str):
        raise ValueError(f"{where}: the tokenizer has several named chat templates; only a single template is "
                         "supported with the message modality")
    if do_lower_case:
        raise ValueError(f"{where}: do_lower_case is not supported with the message modality (chat template)")
    try:        # what sentence-transformers reads to pass a task ("query" / "document") to the template
        from transformers.utils.chat_template_utils import _get_template_variables
        uses_task = "task" in _get_template_variables(template)
    except ImportError:
        uses_task = "task" in template
    if uses_task:
        raise ValueError(f"{where}: the chat template uses a 'task' variable (query/document renders); not "
                         "supported, only task-free templates are")
    fmt = settings.format
    if fmt == "auto":
        fmt = "structured" if any(p in template for p in STRUCTURED_PATTERNS) else "flat"
    kwargs = json.loads(settings.template_kwargs)
    restore = bool(kwargs.pop("restore_suffix", True))
    return ChatFormat(fmt, json.dumps(kwargs, sort_keys=True), restore)


def _content(text: str, fmt: str):
    return text if fmt == "flat" else [{"type": "text", "text": text}]


def conversations(texts: Sequence[str], prompt: str | None, fmt: str) -> list[list[dict]]:
    """One conversation per text: the prompt (if non-empty) as a system message, the text as a user message."""
    system = [{"role": "system", "content": _content(prompt, fmt)}] if prompt else []
    return [system + [{"role": "user", "content": _content(t, fmt)}] for t in texts]


def _tokenize(hf_tokenizer: Any, convs: list, chat: ChatFormat, max_length: int | None) -> list[list[int]]:
    out = hf_tokenizer.apply_chat_template(convs, tokenize=True, return_dict=True, padding=False,
                                           truncation=max_length is not None, max_length=max_length,
                                           tokenizer_kwargs={"return_attention_mask": False, "verbose": False}, **chat.kwargs)
    return [list(ids) for ids in out["input_ids"]]


def suffix_ids(hf_tokenizer: Any, prompt: str | None, chat: ChatFormat) -> list[int]:
    """The template's tail after the user text (sentence-transformers' ``_chat_template_suffix_ids``): the
    longest common token suffix of two renders with different texts, [] when they never differ."""
    first, second = _tokenize(hf_tokenizer, conversations(["0", "1 2 3 4"], prompt, chat.format), chat, None)
    count = 0
    for a, b in zip(reversed(first), reversed(second)):
        if a != b:
            break
        count += 1
    return first[len(first) - count:] if 0 < count < min(len(first), len(second)) else []


def encode(hf_tokenizer: Any, texts: Sequence[str], prompt: str | None, chat: ChatFormat, max_length: int,
           suffix_cache: dict | None = None) -> list[list[int]]:
    """Token ids of each text rendered through the chat template, as sentence-transformers 6.3 feeds them."""
    if not texts:
        return []
    ids = _tokenize(hf_tokenizer, conversations(texts, prompt, chat.format), chat, max_length)
    if chat.restore_suffix and any(len(row) >= max_length for row in ids):
        cache = suffix_cache if suffix_cache is not None else {}
        key = (prompt or "", chat)
        if key not in cache:
            cache[key] = suffix_ids(hf_tokenizer, prompt, chat)
        suffix = cache[key]
        for row in ids:
            keep = min(len(suffix), len(row))
            if len(row) >= max_length and keep:
                row[len(row) - keep:] = suffix[len(suffix) - keep:]
    return ids


def token_counts(hf_tokenizer: Any, texts: Sequence[str], prompt: str | None, chat: ChatFormat) -> list[int]:
    """Tokens of each rendered text without truncation."""
    if not texts:
        return []
    return [len(ids) for ids in _tokenize(hf_tokenizer, conversations(texts, prompt, chat.format), chat, None)]


def modality_config(chat: ChatFormat | None) -> dict[str, Any]:
    """The sentence_bert_config.json keys that make sentence-transformers 6.3 load a Transformer in the same
    mode: nothing for text (a directory without modality_config loads text-only), else the text and message
    modalities, the message format and the template arguments."""
    if chat is None:
        return {}
    entry = {"method": "forward", "method_output_name": "last_hidden_state"}
    kwargs = chat.kwargs if chat.restore_suffix else {**chat.kwargs, "restore_suffix": False}
    return {"transformer_task": "feature-extraction",
            "modality_config": {"text": dict(entry), "message": {**entry, "format": chat.format}},
            "module_output_name": "token_embeddings",
            **({"processing_kwargs": {"chat_template": kwargs}} if kwargs else {})}
