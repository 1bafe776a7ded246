"""optax optimizers and learning-rate schedules with sentence-transformers' (Hugging Face Trainer's) semantics."""
from __future__ import annotations

import math
from typing import Any

import jax
import optax

SCHEDULES = ("linear", "cosine", "constant")


def warmup_steps(optim: dict, total_steps: int) -> int:
    if optim.get("warmup_steps") is not None:
        return int(optim["warmup_steps"])
    return int(math.ceil(total_steps * float(optim.get("warmup_ratio") or 0.0)))


def make_schedule(optim: dict, total_steps: int) -> optax.Schedule:
    """lr(step) for the optimizer step ``step`` (0-based), as transformers' schedulers.

    linear: 0 -> lr over warmup, then lr -> 0 at ``total_steps``; cosine: warmup then half cosine to 0;
    constant: warmup then lr.
    """
    lr, kind = float(optim["lr"]), optim.get("schedule", "linear")
    warm = warmup_steps(optim, total_steps)
    if kind not in SCHEDULES:
        raise ValueError(f"optim.schedule={kind!r} is not supported; supported: {list(SCHEDULES)}")
    decay_steps = max(total_steps - warm, 1)
    if kind == "linear":
        after = optax.linear_schedule(lr, 0.0, decay_steps)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        after = optax.constant_schedule(lr)
    if warm == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def decay_mask(params: Any) -> Any:
    """True for weights that get weight decay: not biases and not LayerNorm parameters."""
    def keep(path, _):
        names = [getattr(p, "key", str(p)) for p in path]
        return not (names[-1] == "bias" or any("LayerNorm" in n or "layer_norm" in n for n in names) or names[-1] == "scale")
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim: dict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(optim, total_steps)
    name = optim.get("name", "adamw")
    if name == "adamw":
        core = optax.adamw(schedule, b1=optim["b1"], b2=optim["b2"], eps=optim["eps"],
                           weight_decay=float(optim["weight_decay"]), mask=decay_mask)
    elif name == "adam":
        core = optax.adam(schedule, b1=optim["b1"], b2=optim["b2"], eps=optim["eps"])
    else:
        raise ValueError(f"optim.name={name!r} is not supported; supported: ['adamw', 'adam']")
    chain = [core]
    if optim.get("max_grad_norm"):
        chain.insert(0, optax.clip_by_global_norm(float(optim["max_grad_norm"])))
    tx = optax.chain(*chain)
    accum = int(optim.get("grad_accum_steps") or 1)
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx, schedule
