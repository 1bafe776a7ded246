"""Pooling of token embeddings into one sentence embedding, as sentence-transformers' ``Pooling``.

Several modes may be on at once; their outputs are concatenated in the order given (the legacy
``pooling_mode_*`` keys give sentence-transformers' fixed order: cls, max, mean,
mean_sqrt_len_tokens, weightedmean, lasttoken).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclasses.dataclass(frozen=True)
class PoolingConfig:
    word_embedding_dimension: int
    modes: tuple[str, ...] = ("mean",)

    def __post_init__(self):
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"unsupported pooling mode(s) {bad or self.modes}; supported: {list(MODES)}")
        object.__setattr__(self, "modes", tuple(self.modes))

    @property
    def output_dimension(self) -> int:
        return self.word_embedding_dimension * len(self.modes)

    @classmethod
    def from_st_dict(cls, d: dict[str, Any]) -> "PoolingConfig":
        """Reads 1_Pooling/config.json in the legacy ``pooling_mode_*`` keys or the newer ``pooling_mode`` form."""
        dim = d.get("word_embedding_dimension", d.get("embedding_dimension"))
        if dim is None:
            raise ValueError("pooling config has neither 'word_embedding_dimension' nor 'embedding_dimension'")
        if isinstance(d.get("pooling_mode"), str):
            mode = {"mean_tokens": "mean", "max_tokens": "max", "cls_token": "cls", "weightedmean_tokens": "weightedmean",
                    "mean_sqrt_len": "mean_sqrt_len_tokens"}.get(d["pooling_mode"], d["pooling_mode"])
            return cls(dim, (mode,))
        if isinstance(d.get("pooling_mode"), (list, tuple)):
            return cls(dim, tuple(d["pooling_mode"]))
        unknown = [k for k in d if k.startswith("pooling_mode") and k not in _LEGACY_KEYS]
        if unknown:
            raise ValueError(f"unsupported pooling key(s) {unknown}; supported: {sorted(_LEGACY_KEYS)}")
        return cls(dim, tuple(mode for key, mode in _LEGACY_KEYS.items() if d.get(key)) or ("mean",))

    def to_st_dict(self) -> dict[str, Any]:
        d = {"word_embedding_dimension": self.word_embedding_dimension}
        d.update({key: mode in self.modes for key, mode in _LEGACY_KEYS.items()})
        if len(self.modes) > 1 and self.modes != tuple(m for m in MODES if m in self.modes):
            raise ValueError(f"pooling modes {self.modes} are not in sentence-transformers' legacy order {MODES}")
        d["include_prompt"] = True
        return d


def pool(token_embeddings: jnp.ndarray, attention_mask: jnp.ndarray, config: PoolingConfig) -> jnp.ndarray:
    """[B, L, H] token embeddings and [B, L] mask (non-zero = token) -> [B, H * len(modes)]."""
    x = token_embeddings.astype(jnp.float32)
    mask = (attention_mask > 0).astype(jnp.float32)[..., None]
    n_tokens = mask.sum(axis=1)
    outputs = []
    for mode in config.modes:
        if mode == "cls":
            outputs.append(x[:, 0])
        elif mode == "max":
            outputs.append(jnp.where(mask > 0, x, -1e9).max(axis=1))
        elif mode == "mean":
            outputs.append((x * mask).sum(axis=1) / jnp.maximum(n_tokens, 1e-9))
        elif mode == "mean_sqrt_len_tokens":
            outputs.append((x * mask).sum(axis=1) / jnp.sqrt(jnp.maximum(n_tokens, 1e-9)))
        elif mode == "weightedmean":
            weights = jnp.arange(1, x.shape[1] + 1, dtype=jnp.float32)[None, :, None] * mask
            outputs.append((x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            # the last position with a token (right or left padding, as sentence-transformers); 0 for none
            last = jnp.max(jnp.where(attention_mask > 0, jnp.arange(x.shape[1]), 0), axis=1)
            outputs.append(jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0])
    return jnp.concatenate(outputs, axis=-1)


def normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """L2 normalization as ``torch.nn.functional.normalize``: x / max(||x||, eps), with torch's zero
    gradient at a zero vector (``jnp.linalg.norm``'s is NaN there: an empty packed slot would poison the
    parameter gradients of a gradient-caching chunk)."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def pool_segments(token_embeddings: jnp.ndarray, segment_ids: jnp.ndarray, position_ids: jnp.ndarray,
                  config: PoolingConfig, max_segments: int) -> jnp.ndarray:
    """Pooling of packed rows (see :mod:`jaxsbert.data.packing`), one result per segment.

    [R, L, H] token embeddings, [R, L] segment ids (1..max_segments, 0 = padding) and [R, L] positions
    restarting at 0 per segment -> [R * max_segments, H * len(modes)]; slot ``r * max_segments + s - 1``
    is segment s of row r (empty slots are zeros). Equals :func:`pool` on each sentence alone.
    """
    x = token_embeddings.astype(jnp.float32)
    r, l, h = x.shape
    ids = jnp.arange(1, max_segments + 1, dtype=segment_ids.dtype)
    member = (segment_ids[:, None, :] == ids[None, :, None]).astype(jnp.float32)      # [R, S, L]
    n_tokens = member.sum(axis=2, keepdims=True)                                        # [R, S, 1]
    pos = position_ids.astype(jnp.float32)[:, None, :]                                  # [R, 1, L]
    outputs = []
    for mode in config.modes:
        if mode == "max":
            masked = jnp.where(member[..., None] > 0, x[:, None], -1e9)                   # [R, S, L, H]
            outputs.append(masked.max(axis=2))
            continue
        if mode == "cls":
            weights = member * (pos == 0)
        elif mode == "mean":
            weights = member / jnp.maximum(n_tokens, 1e-9)
        elif mode == "mean_sqrt_len_tokens":
            weights = member / jnp.sqrt(jnp.maximum(n_tokens, 1e-9))
        elif mode == "weightedmean":
            weights = member * (pos + 1)
            weights = weights / jnp.maximum(weights.sum(axis=2, keepdims=True), 1e-9)
        else:  # lasttoken
            weights = member * (pos == n_tokens - 1)
        outputs.append(jnp.einsum("rsl,rlh->rsh", weights, x))
    return jnp.concatenate(outputs, axis=-1).reshape(r * max_segments, -1)
