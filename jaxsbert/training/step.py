"""The jitted train step: embed -> loss -> gradients -> optax update, for one (loss, batch shape).

The train state is a dict pytree ``{"step", "params", "heads", "opt_state", "rng", "nonfinite"}``:
``params`` are the encoder's, ``heads`` the trainable loss heads by dataset name (SoftmaxLoss's
classifier), both updated by one optax transformation over ``{"params", "heads"}``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def make_embed_fn(module, dropout: bool) -> Callable:
    """embed_fn(params, features, rng) -> [B, D]; train-mode dropout when ``dropout``."""
    def embed(params, features, rng):
        if dropout:
            return module.apply({"params": params}, features, deterministic=False, rngs={"dropout": rng})
        return module.apply({"params": params}, features, deterministic=True)
    return embed


def init_state(params: Any, heads: dict, tx: optax.GradientTransformation, seed: int) -> dict:
    trainable = {"params": params, "heads": heads}
    return {"step": jnp.zeros((), jnp.int32), "params": params, "heads": heads, "opt_state": tx.init(trainable),
            "rng": jax.random.key_data(jax.random.PRNGKey(seed)), "nonfinite": jnp.zeros((), jnp.int32)}


def make_train_step(embed_fn: Callable, loss, dataset: str, tx: optax.GradientTransformation,
                    schedule: Callable, grad_accum_steps: int = 1, has_labels: bool = True) -> Callable:
    """state, batch -> state, metrics. Metrics stay on device (no host sync here).

    A step whose loss, gradients or update are not all finite applies no update (parameters, optimizer
    state and loss heads keep their values) and increments ``state["nonfinite"]``; the loop decides
    whether to stop. The test is on three scalars instead of an isfinite pass over every leaf of the
    gradients, parameters and optimizer state: the loss, the global gradient norm and the global norm of
    the update (a norm is finite only if every element is finite and below ~1.8e19 in magnitude, so
    gradients or updates that large also count as non-finite). For the supported optimizers (SGD,
    Adam/AdamW, gradient clipping, accumulation) finite gradients of that size keep the optimizer state
    finite, and such an update keeps finite parameters finite.
    """
    def step(state, batch):
        rng, step_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
        step_rng = jax.random.fold_in(step_rng, state["step"])
        head = state["heads"].get(dataset, {})
        labels = batch["labels"] if has_labels else None
        value, (g_params, g_head) = loss.value_and_grad(embed_fn, state["params"], head, batch["features"],
                                                        labels, batch["mask"], step_rng)
        g_heads = jax.tree_util.tree_map(jnp.zeros_like, state["heads"])
        if dataset in g_heads:
            g_heads[dataset] = g_head
        grads = {"params": g_params, "heads": g_heads}
        trainable = {"params": state["params"], "heads": state["heads"]}
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], trainable)
        # an update that overflows (a learning rate far too large) is as unusable as a NaN gradient
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
        trainable = keep(optax.apply_updates(trainable, updates), trainable)
        opt_state = keep(opt_state, state["opt_state"])
        new_state = {
            "step": state["step"] + 1,
            "params": trainable["params"],
            "heads": trainable["heads"],
            "opt_state": opt_state,
            "rng": jax.random.key_data(rng),
            "nonfinite": state["nonfinite"] + (~finite).astype(jnp.int32),
        }
        optimizer_step = state["step"] // grad_accum_steps
        metrics = {"loss": value, "lr": schedule(optimizer_step), "grad_norm": grad_norm,
                   "finite": finite, "rows": jnp.sum(batch["mask"].astype(jnp.int32))}   # global valid rows
        return new_state, metrics

    return step
