"""RoBERTa and XLM-RoBERTa encoders in Flax.

Both are BERT layers (same parameter names as Hugging Face's ``RobertaModel`` /
``XLMRobertaModel``) with one difference in the embeddings: positions are offset by the padding
index, as fairseq does. A token's position is ``padding_idx + 1 + <its 0-based position>``; padding
gets ``padding_idx``. Without ``position_ids`` the 0-based position is the count of real tokens
before it (``cumsum(attention_mask > 0) - 1``, which is what Hugging Face computes from
``input_ids != pad_token_id``). With ``position_ids`` (0-based, e.g. restarting per packed
sentence) those are offset instead, so the same ``position_ids`` work for every family.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxsbert.models import bert


def offset_position_ids(attention_mask: jax.Array, position_ids: jax.Array | None, padding_idx: int) -> jax.Array:
    """0-based positions (given, or counted over real tokens) -> fairseq-style positions offset by padding_idx."""
    tokens = attention_mask > 0
    if position_ids is None:
        position_ids = jnp.cumsum(tokens.astype(jnp.int32), axis=1) - 1
    return jnp.where(tokens, position_ids + padding_idx + 1, padding_idx).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class RobertaConfig(bert.BertConfig):
    """Field names and defaults as Hugging Face's ``RobertaConfig``."""
    model_type: ClassVar[str] = "roberta"
    hf_architecture: ClassVar[str] = "RobertaModel"

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    pad_token_id: int = 1

    @property
    def max_sequence_tokens(self) -> int:
        """Longest input: positions 0..padding_idx are taken by the offset."""
        return self.max_position_embeddings - self.pad_token_id - 1

    def to_hf_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "add_pooling_layer"}
        d.update(model_type=self.model_type, architectures=[self.hf_architecture])
        return d


@dataclasses.dataclass(frozen=True)
class XLMRobertaConfig(RobertaConfig):
    """Hugging Face's ``XLMRobertaConfig``: the RoBERTa architecture under another name."""
    model_type: ClassVar[str] = "xlm-roberta"
    hf_architecture: ClassVar[str] = "XLMRobertaModel"

    vocab_size: int = 30522


class RobertaModel(bert.BertModel):
    """Token embeddings [B, L, H] (float32); parameters named as Hugging Face's ``RobertaModel``.

    Same call signature and ``attention_mask``-as-segment-ids convention as :class:`bert.BertModel`.
    """

    def __call__(self, input_ids, attention_mask, token_type_ids=None, position_ids=None, deterministic: bool = True,
                 sentence_ids=None, all_layers: bool = False):
        position_ids = offset_position_ids(attention_mask, position_ids, self.config.pad_token_id)
        if token_type_ids is None or self.config.type_vocab_size == 1:
            token_type_ids = jnp.zeros_like(input_ids)   # as Hugging Face's all-zeros buffer
        return super().__call__(input_ids, attention_mask, token_type_ids, position_ids, deterministic, sentence_ids,
                                all_layers)
