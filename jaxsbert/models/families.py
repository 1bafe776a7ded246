"""Registry of encoder families: Hugging Face ``model_type`` -> (config class, Flax module, architecture).

Every family's module has the call signature ``module(config, dtype=, remat=, attention_impl=)(input_ids,
attention_mask, token_type_ids=None, position_ids=None, deterministic=True, sentence_ids=None, all_layers=False)
-> [B, L, H]`` (``all_layers=True``: [layers + 1, B, L, H], Hugging Face's ``hidden_states``),
takes ``attention_mask`` as segment ids (0 = padding), ``position_ids`` as 0-based positions and
``sentence_ids`` as each token's sentence in the global batch (the dropout masks' key, see
:mod:`jaxsbert.models.dropout`), and names
its parameters after the Hugging Face model's state dict (see :mod:`jaxsbert.interop.hf`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxsbert.models import bert, distilbert, modernbert, mpnet, qwen3, roberta


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    config_cls: Any        # has .from_hf_dict(dict)
    module: Any            # flax module class(config, dtype=, remat=)
    hf_architecture: str   # written to config.json "architectures"


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", bert.BertConfig, bert.BertModel, "BertModel"),
    "roberta": Family("roberta", roberta.RobertaConfig, roberta.RobertaModel, "RobertaModel"),
    "xlm-roberta": Family("xlm-roberta", roberta.XLMRobertaConfig, roberta.RobertaModel, "XLMRobertaModel"),
    "distilbert": Family("distilbert", distilbert.DistilBertConfig, distilbert.DistilBertModel, "DistilBertModel"),
    "mpnet": Family("mpnet", mpnet.MPNetConfig, mpnet.MPNetModel, "MPNetModel"),
    "modernbert": Family("modernbert", modernbert.ModernBertConfig, modernbert.ModernBertModel, "ModernBertModel"),
    "qwen3": Family("qwen3", qwen3.Qwen3Config, qwen3.Qwen3Model, "Qwen3Model"),
}


def family_for(model_type: str, source: str = "config.json") -> Family:
    if model_type not in FAMILIES:
        raise ValueError(f"{source}: model_type {model_type!r} is not supported; supported: {sorted(FAMILIES)} "
                         f"(Hugging Face architectures {sorted(f.hf_architecture for f in FAMILIES.values())})")
    return FAMILIES[model_type]


def bert_config_to_hf_dict(config: bert.BertConfig) -> dict[str, Any]:
    """``config.json`` contents for a BERT config (BertConfig lives in bert.py and has no ``to_hf_dict``)."""
    d = {k: v for k, v in dataclasses.asdict(config).items() if k != "add_pooling_layer"}
    d.update(model_type="bert", architectures=["BertModel"])
    return d


def hf_config_dict(family: str, config: Any) -> dict[str, Any]:
    """The Hugging Face ``config.json`` dict (model_type, architectures, every config field) for a family's config."""
    fam = FAMILIES[family]
    if not isinstance(config, fam.config_cls):
        raise TypeError(f"family {family!r} expects a {fam.config_cls.__name__}, got {type(config).__name__}")
    d = config.to_hf_dict() if hasattr(config, "to_hf_dict") else bert_config_to_hf_dict(config)
    d.update(model_type=fam.name, architectures=[fam.hf_architecture])
    return dict(sorted(d.items()))
