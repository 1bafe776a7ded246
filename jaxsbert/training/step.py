"""The jitted train step: embed -> loss -> gradients -> optax update, for one (loss, batch shape).

The train state is a dict pytree ``{"step", "params", "heads", "opt_state", "rng", "nonfinite", ["frozen"]}``:
``params`` are the encoder's, ``heads`` the trainable loss heads by dataset name (SoftmaxLoss's
classifier), both updated by one optax transformation over ``{"params", "heads"}``; ``frozen`` (only when a
loss has any) holds parameters a loss uses but never trains, by dataset name (GISTEmbedLoss's guide model).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def make_embed_fn(module, dropout: bool) -> Callable:
    """embed_fn(params, features, rng) -> [B, D]; train-mode dropout when ``dropout`` (and ``rng`` is not
    None). Its ``max_segments`` is the model's sentences per packed row (for gradient caching on packed batches).
    Its ``all_layers(params, features, rng) -> [layers + 1, B, D]`` (a model taking ``all_layers``, as
    SentenceModel; else None) is the same forward pass giving every layer's sentence embeddings, for
    AdaptiveLayerLoss and Matryoshka2dLoss; the plain call is unchanged."""
    def embed(params, features, rng, **kwargs):
        if dropout and rng is not None:
            return module.apply({"params": params}, features, deterministic=False, rngs={"dropout": rng}, **kwargs)
        return module.apply({"params": params}, features, deterministic=True, **kwargs)
    embed.max_segments = getattr(module, "max_segments", None)
    takes_all_layers = "all_layers" in inspect.signature(type(module).__call__).parameters
    embed.all_layers = functools.partial(embed, all_layers=True) if takes_all_layers else None
    return embed


def init_state(params: Any, heads: dict, tx: optax.GradientTransformation, seed: int, frozen: dict | None = None) -> dict:
    """The train state; ``frozen`` ({dataset: parameters a loss uses but does not train}, e.g. a guide model's),
    when not empty, becomes its ``frozen`` entry: outside the optimizer and the gradients, passed to the loss."""
    trainable = {"params": params, "heads": heads}
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "heads": heads, "opt_state": tx.init(trainable),
             "rng": jax.random.key_data(jax.random.PRNGKey(seed)), "nonfinite": jnp.zeros((), jnp.int32)}
    if frozen:
        state["frozen"] = frozen
    return state


def make_train_step(embed_fn: Callable, loss, dataset: str, tx: optax.GradientTransformation,
                    schedule: Callable, grad_accum_steps: int = 1, has_labels: bool = True,
                    check_update: bool = True) -> Callable:
    """state, batch -> state, metrics. Metrics stay on device (no host sync here).

    Non-finite steps increment ``state["nonfinite"]`` and the loop decides whether to stop:

    - loss or gradients not finite (NaN/inf, or a global gradient norm that overflows): nothing is
      updated; parameters, loss heads and optimizer state (moments, step count, accumulators) keep their
      values. The test is on two scalars, the loss and the global gradient norm (a norm is finite only if
      every element is finite and below ~1.8e19 in magnitude), and the update runs under ``lax.cond``, so
      no old/new select runs over the optimizer state.
    - finite gradients whose update makes the parameters non-finite (a learning rate far too large): the
      parameters and loss heads keep their values; the optimizer state has taken the step (for the
      supported optimizers, SGD, Adam/AdamW, clipping and accumulation, finite gradients of that size keep
      it finite). Reverting it too would keep a second copy of every moment alive through the update:
      on a 2-core CPU, a MiniLM CoSENT B=16 step costs ~10 ms more than an unguarded one this way
      (the check and select of the new parameters), ~40 ms more with the moments reverted too.
      ``check_update=False`` compiles this check out (~9 ms of that step, ~1 s of its compilation); the
      trainer passes it when ``optimizer.update_check_never_fires`` proves that no update of the run can trip it.
    """
    # the step's gradient norm is the clipping's too (optimizer.clip_by_global_norm), except under
    # accumulation, which clips the accumulated gradient
    passes_norm = grad_accum_steps == 1 and isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(state, batch):
        rng, step_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
        step_rng = jax.random.fold_in(step_rng, state["step"])
        head = state["heads"].get(dataset, {})
        labels = batch["labels"] if has_labels else None
        frozen = state.get("frozen", {}).get(dataset)      # parameters the loss uses untrained (a guide model's)
        value, (g_params, g_head) = loss.value_and_grad(embed_fn, state["params"], head, batch["features"],
                                                        labels, batch["mask"], step_rng,
                                                        **({} if frozen is None else {"frozen": frozen}))
        g_heads = jax.tree_util.tree_map(jnp.zeros_like, state["heads"])
        if dataset in g_heads:
            g_heads[dataset] = g_head
        grads = {"params": g_params, "heads": g_heads}
        trainable = {"params": state["params"], "heads": state["heads"]}
        # the model's gradient norm (what clipping uses and sentence-transformers logs); the heads' counted
        # only in the finiteness test
        grad_norm = optax.tree.norm(g_params)
        all_norm = jnp.sqrt(grad_norm ** 2 + optax.tree.norm(g_heads, squared=True))

        def update():
            known = {"global_norm": grad_norm} if passes_norm else {}
            updates, opt_state = tx.update(grads, state["opt_state"], trainable, **known)
            applied = optax.apply_updates(trainable, updates)
            if not check_update:
                return applied, opt_state, jnp.array(True)
            # an update that overflows (a learning rate far too large) is as unusable as a NaN gradient
            params_finite = jnp.isfinite(optax.tree.norm(applied))
            kept = jax.tree_util.tree_map(lambda n, o: jnp.where(params_finite, n, o), applied, trainable)
            return kept, opt_state, params_finite

        def skip():
            return trainable, state["opt_state"], jnp.array(False)

        grads_finite = jnp.isfinite(value) & jnp.isfinite(all_norm)
        trainable, opt_state, params_finite = jax.lax.cond(grads_finite, update, skip)
        finite = grads_finite & params_finite
        new_state = {
            "step": state["step"] + 1,
            "params": trainable["params"],
            "heads": trainable["heads"],
            "opt_state": opt_state,
            "rng": jax.random.key_data(rng),
            "nonfinite": state["nonfinite"] + (~finite).astype(jnp.int32),
        }
        if "frozen" in state:
            new_state["frozen"] = state["frozen"]
        optimizer_step = state["step"] // grad_accum_steps
        metrics = {"loss": value, "lr": schedule(optimizer_step), "grad_norm": grad_norm,
                   "finite": finite, "rows": jnp.sum(batch["mask"].astype(jnp.int32))}   # global valid rows
        return new_state, metrics

    return step
