"""Registry of encoder families: Hugging Face ``model_type`` -> (config class, Flax module)."""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxsbert.models import bert


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    config_cls: Any        # has .from_hf_dict(dict)
    module: Any            # flax module class(config, dtype=, remat=)
    hf_architecture: str   # written to config.json "architectures"


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", bert.BertConfig, bert.BertModel, "BertModel"),
}


def family_for(model_type: str, source: str = "config.json") -> Family:
    if model_type not in FAMILIES:
        raise ValueError(f"{source}: model_type {model_type!r} is not supported; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]
