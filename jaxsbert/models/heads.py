"""Heads applied to the pooled sentence embedding: sentence-transformers' ``Dense`` module."""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch activation class path (as sentence-transformers stores it) -> function
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": jnp.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.ReLU": jax.nn.relu,
    "torch.nn.modules.activation.GELU": lambda x: jax.nn.gelu(x, approximate=False),
    "torch.nn.modules.activation.Sigmoid": jax.nn.sigmoid,
    "torch.nn.modules.activation.SiLU": jax.nn.silu,
}
_SHORT_NAMES = {path.rsplit(".", 1)[1].lower(): path for path in DENSE_ACTIVATIONS}


@dataclasses.dataclass(frozen=True)
class DenseConfig:
    in_features: int
    out_features: int
    bias: bool = True
    activation_function: str = "torch.nn.modules.activation.Tanh"

    def __post_init__(self):
        act = self.activation_function or "torch.nn.modules.linear.Identity"
        act = _SHORT_NAMES.get(act.lower(), act)
        if act.startswith("torch.nn.") and act.rsplit(".", 1)[1].lower() in _SHORT_NAMES:
            act = _SHORT_NAMES[act.rsplit(".", 1)[1].lower()]
        if act not in DENSE_ACTIVATIONS:
            raise ValueError(f"Dense activation {self.activation_function!r} is not supported; "
                             f"supported: {sorted(DENSE_ACTIVATIONS)}")
        object.__setattr__(self, "activation_function", act)

    @classmethod
    def from_st_dict(cls, d: dict[str, Any]) -> "DenseConfig":
        if d.get("use_residual"):
            raise ValueError("Dense with use_residual=True is not supported")
        return cls(d["in_features"], d["out_features"], d.get("bias", True),
                   d.get("activation_function") or "torch.nn.modules.linear.Identity")

    def to_st_dict(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias,
                "activation_function": self.activation_function}


class Dense(nn.Module):
    config: DenseConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        y = nn.Dense(c.out_features, use_bias=c.bias, name="linear")(x)
        return DENSE_ACTIVATIONS[c.activation_function](y)
