"""optax optimizers and learning-rate schedules with sentence-transformers' (Hugging Face Trainer's) semantics."""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
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


def is_trainable_tree(tree: Any) -> bool:
    """True for the trainer's ``{"params": model parameters, "heads": loss heads}`` tree."""
    return isinstance(tree, dict) and set(tree) == {"params", "heads"}


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """Gradient clipping as sentence-transformers' trainer does it (``torch.nn.utils.clip_grad_norm_`` over
    the model's parameters): every gradient times ``min(1, max_norm / (norm + 1e-6))``, ``norm`` the global
    L2 norm; the state is optax's ``clip_by_global_norm``'s (empty). On the trainer's tree
    ``{"params": model, "heads": loss heads}`` only the model's gradients are clipped, by their own norm:
    transformers' Trainer clips ``model.parameters()``, and a loss's own parameters (SoftmaxLoss's classifier,
    TSDAE's decoder head, ContrastiveTension's second copy), which sentence-transformers' trainer adds to the
    optimizer, are updated unclipped. Any other tree is clipped whole. Multiplying by one scalar, rather than
    optax's ``(g / norm) * max_norm``, lets XLA fuse the scaling into the optimizer's passes instead of writing
    the clipped gradients out first (a division is not duplicated into its consumers): ~3% of a MiniLM
    CoSENT B=16 step on 2 CPU cores, where the clipping fires on every step.

    The train step passes the model gradients' norm it computed for its finiteness test
    (``tx.update(..., global_norm=norm)``) instead of a second pass over them. Pass it only when the updates
    are the gradients themselves (not under ``optax.MultiSteps``)."""
    def clip(tree, norm):
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree_util.tree_map(lambda t: t * coef.astype(t.dtype), tree)

    def update(updates, state, params=None, *, global_norm=None, **extra_args):
        del params, extra_args
        if is_trainable_tree(updates):
            norm = optax.tree.norm(updates["params"]) if global_norm is None else global_norm
            return {**updates, "params": clip(updates["params"], norm)}, state
        return clip(updates, optax.tree.norm(updates) if global_norm is None else global_norm), state
    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


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
        chain.insert(0, clip_by_global_norm(float(optim["max_grad_norm"])))
    tx = optax.chain(*chain)
    accum = int(optim.get("grad_accum_steps") or 1)
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx, schedule


def update_check_never_fires(optim: dict, total_steps: int, max_abs_param: float, num_params: int) -> bool:
    """True when no update of this Adam/AdamW run can trip the train step's check of the new parameters
    (``isfinite(norm(params))``, ``step.make_train_step``), given finite gradients (the step skips any others)
    and ``num_params`` trainable values, each at most ``max_abs_param`` in magnitude at the run's start.

    Per element, with q = b1^2 / b2 < 1, Cauchy-Schwarz bounds the first moment by the second:
    |m_t| <= (1 - b1) / sqrt((1 - q)(1 - b2)) * sqrt(v_t), and the bias corrections change the ratio by at
    most sqrt(1 - b2^t) / (1 - b1^t) <= 1 / (1 - b1), so |u| = |m_hat| / (sqrt(v_hat) + eps) <= C =
    1 / sqrt((1 - q)(1 - b2)) (72.7 for b1 0.9, b2 0.999; eps > 0 keeps 0/0 away, and where float32 v
    underflows to 0 the gradients in it were below ~4e-18, so |u| <= |m_hat| / eps < 1e-8). Clipping only
    scales the gradients. AdamW's step p (1 - lr wd) - lr u, with 0 <= lr wd <= 2, grows |p| by at most
    lr C, so after ``total_steps`` steps every |p| <= P = max_abs_param + total_steps lr C (the schedules
    here never exceed ``optim.lr``), and the squared norm the check computes in float32 is at most
    num_params P^2, which must stay below 1e38 (float32 overflows at 3.4e38). When this holds the check
    can be compiled out without changing any result.
    """
    name = optim.get("name", "adamw")
    if name not in ("adamw", "adam"):
        return False
    b1, b2, eps, lr = (float(optim[k]) for k in ("b1", "b2", "eps", "lr"))
    weight_decay = float(optim["weight_decay"]) if name == "adamw" else 0.0
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0 and b1 * b1 < b2 and eps > 0.0 and lr >= 0.0
            and 0.0 <= lr * weight_decay <= 2.0 and math.isfinite(max_abs_param)):
        return False
    moment_ratio = 1.0 / math.sqrt((1.0 - b1 * b1 / b2) * (1.0 - b2))
    peak = abs(max_abs_param) + max(total_steps, 1) * lr * moment_ratio
    return max(num_params, 1) * peak * peak < 1e38
