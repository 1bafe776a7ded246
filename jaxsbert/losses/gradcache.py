"""Gradient caching (GradCache, Gao et al. 2021): a contrastive loss over a large batch with the
activation memory of one mini-batch.

1. Embed every column chunk by chunk without keeping activations (``lax.map``; nothing is
   differentiated, so nothing is stored).
2. Compute the loss on the full-batch embeddings and its gradient wrt the embeddings (and the
   loss head).
3. Re-run each chunk's forward pass under ``jax.vjp`` and pull its slice of the cached embedding
   gradient back to the parameters, summing over chunks (``lax.scan``: one chunk's activations
   alive at a time).

Both passes give every chunk the step's dropout key: the masks are keyed by each token's sentence in
the global batch (``sentence_ids``, :mod:`jaxsbert.models.dropout`), not by the chunk, so the re-run
reproduces the first pass exactly and the parameter gradients equal those of the un-chunked loss with
the same dropout masks.

Chunk ``k`` holds rows ``k, k + n, k + 2n, ...`` (``n`` = number of chunks): a batch sharded over
devices along its first axis is reshaped to ``[chunk, n, ...]`` and every chunk spans every device,
so the passes run data-parallel without moving rows between devices.

Packed batches (:mod:`jaxsbert.data.packing`) are chunked the same way along their packed rows: a
chunk is a fixed token budget (rows x row length) holding as many sentences as its rows hold; pass 1
scatters each chunk's slot embeddings into the batch's sentence embeddings, pass 3 gathers each
chunk's slots' gradients back from the loss's.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxsbert.losses.base import EmbedFn, group_columns


def chunk_layout(batch_size: int, mini_batch_size: int, loss: str = "loss") -> tuple[int, int]:
    """(chunk size, number of chunks) for a batch; the chunk is the whole batch if it is smaller."""
    if mini_batch_size < 1:
        raise ValueError(f"{loss}: mini_batch_size must be >= 1, got {mini_batch_size}")
    chunk = min(mini_batch_size, batch_size)
    if batch_size % chunk:
        raise ValueError(f"{loss}: the batch size {batch_size} is not a multiple of mini_batch_size {chunk}; "
                         f"choose a mini_batch_size that divides the (global, padded) batch size")
    return chunk, batch_size // chunk


def split_chunks(x: jax.Array, n_chunks: int) -> jax.Array:
    """[B, ...] -> [n_chunks, B // n_chunks, ...] with chunk k = rows k::n_chunks."""
    return jnp.swapaxes(x.reshape(x.shape[0] // n_chunks, n_chunks, *x.shape[1:]), 0, 1)


def merge_chunks(x: jax.Array) -> jax.Array:
    """Inverse of :func:`split_chunks`: [n_chunks, chunk, ...] -> [B, ...] in the original row order."""
    return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (>= 1)."""
    return max(d for d in range(1, max(min(n, at_most), 1) + 1) if n % d == 0)


def _batch_size(features: dict) -> int:
    sizes = {jnp.shape(v)[0] for v in jax.tree_util.tree_leaves(features)}
    if len(sizes) != 1:
        raise ValueError(f"a column's features disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def grad_cache_value_and_grad(loss_fn: Callable[[tuple, Any], jax.Array], embed_fn: EmbedFn, params: Any,
                              head_params: Any, features: Sequence[dict], rng: jax.Array | None,
                              mini_batch_size: int, name: str = "loss") -> tuple[jax.Array, tuple[Any, Any]]:
    """``(loss, (param_grads, head_grads))`` of ``loss_fn(embeddings, head_params)`` where column ``c``'s
    embeddings are ``embed_fn(params, features[c], .)``, computed in chunks of ``mini_batch_size`` rows.

    Columns whose features have the same shapes share one ``lax.map`` / ``lax.scan`` (one copy of
    the encoder in the compiled program); every chunk gets ``rng`` (its tokens' ``sentence_ids`` key the masks)."""
    features = tuple(features)
    batch = _batch_size(features[0])
    for c, f in enumerate(features[1:], 1):
        if _batch_size(f) != batch:
            raise ValueError(f"{name}: column {c} has {_batch_size(f)} rows, column 0 has {batch}")
    _, n_chunks = chunk_layout(batch, mini_batch_size, name)

    def stack(columns, arrays):   # per-column [B, ...] -> [len(columns) * n_chunks, chunk, ...]
        out = jnp.stack([split_chunks(a, n_chunks) for a in arrays])
        return out.reshape(len(columns) * n_chunks, *out.shape[2:])

    groups = []
    for columns in group_columns(features):
        xs = jax.tree_util.tree_map(lambda *a, cols=columns: stack(cols, a), *[features[c] for c in columns])
        groups.append((columns, xs))

    # Pass 1: embeddings without activations.
    embeddings = [None] * len(features)
    for columns, xs in groups:
        out = jax.lax.map(lambda f_k: embed_fn(params, f_k, rng), xs)
        out = jax.lax.stop_gradient(out).reshape(len(columns), n_chunks, *out.shape[1:])
        for i, c in enumerate(columns):
            embeddings[c] = merge_chunks(out[i])

    # Pass 2: the loss and its gradient wrt the embeddings (and the head).
    loss, (emb_grads, head_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1))(tuple(embeddings), head_params)

    # Pass 3: back-propagate each chunk's cached embedding gradient through the encoder.
    def body(acc, a):
        f_k, g_k = a
        _, pullback = jax.vjp(lambda p: embed_fn(p, f_k, rng), params)
        (g_params,) = pullback(g_k)
        return jax.tree_util.tree_map(jnp.add, acc, g_params), None

    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    for columns, xs in groups:
        g = stack(columns, [emb_grads[c] for c in columns])
        grads, _ = jax.lax.scan(body, grads, (xs, g))
    return loss, (grads, head_grads)


def packed_grad_cache_value_and_grad(loss_fn: Callable[[tuple, Any], jax.Array], embed_fn: EmbedFn, params: Any,
                                     head_params: Any, features: dict, mask: jax.Array | None, rng: jax.Array | None,
                                     chunk_rows: int, name: str = "loss") -> tuple[jax.Array, tuple[Any, Any]]:
    """:func:`grad_cache_value_and_grad` of a packed batch (``features`` with ``slots`` [B, columns]; ``mask``
    the [B] valid rows or None), in chunks of the largest divisor of its rows that is at most ``chunk_rows``.
    ``embed_fn`` must say how many slots its model gives a row (``embed_fn.max_segments``, see ``make_embed_fn``).

    Pass 1 writes each chunk's slot embeddings straight into the [B * columns, D] array of the batch's
    sentences (a scatter by each slot's sentence index ``b * columns + c``; empty slots are dropped), and
    pass 3 gathers each chunk's slots' gradients back from that array: memory O(sentences x D), not
    O(rows x max_segments x D) (at 65,536 pairs, ~3 sentences a row and 32 slots a row, ~10x less). A
    slot's sentence is read from its tokens' ``sentence_ids`` (the packed batches of the data loader carry
    them: :func:`jaxsbert.data.packing.sentence_index`), chunk by chunk on the chunk's own devices; without
    them, from the inverse of ``slots`` over the valid rows."""
    segments = getattr(embed_fn, "max_segments", None)
    if segments is None:
        raise ValueError(f"{name}: gradient caching on packed batches needs embed_fn.max_segments "
                         "(the model's sentences per packed row); make embed_fn with training.step.make_embed_fn")
    slots = features["slots"]
    batch, columns = slots.shape
    sentences = batch * columns
    rows = features["input_ids"].shape[0]
    chunk = largest_divisor(rows, chunk_rows)
    n_chunks = rows // chunk
    # chunk k is rows k::n_chunks (as split_chunks), read in place from the [chunk, n_chunks, ...] view of the
    # batch (no transposed copy); row j of a chunk has the chunk's slots j * S ... j * S + S - 1
    by_chunk = jax.tree_util.tree_map(lambda a: a.reshape(chunk, n_chunks, *a.shape[1:]),
                                      {k: v for k, v in features.items() if k != "slots"})
    chunk_slots = jnp.arange(chunk * segments, dtype=jnp.int32).reshape(chunk, segments)

    def chunk_features(k):
        f_k = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, k, axis=1, keepdims=False), by_chunk)
        return {**f_k, "slots": chunk_slots}

    if "sentence_ids" in features:      # each slot's sentence, from its tokens: per chunk, on the chunk's devices
        chunk_sentences = None
    else:                               # the inverse of ``slots`` over the valid rows (a [rows * S] array)
        kept = slots if mask is None else jnp.where(jnp.asarray(mask, bool)[:, None], slots, rows * segments)
        of_slot = jnp.full((rows * segments,), sentences, jnp.int32)
        of_slot = of_slot.at[kept.reshape(-1)].set(jnp.arange(sentences, dtype=jnp.int32), mode="drop")
        chunk_sentences = split_chunks(of_slot.reshape(rows, segments), n_chunks).reshape(n_chunks, chunk * segments)

    def slot_sentences(f_k, ids_k):     # [chunk * S]: the sentence (b * columns + c) in each slot; ``sentences``: empty
        if ids_k is not None:
            return ids_k
        in_slot = f_k["attention_mask"][:, :, None] == jnp.arange(1, segments + 1, dtype=f_k["attention_mask"].dtype)
        ids = jnp.max(jnp.where(in_slot, f_k["sentence_ids"][:, :, None].astype(jnp.int32), -1), axis=1)   # [chunk, S]
        return jnp.where(ids < 0, sentences, ids).reshape(-1)

    def embed(p, f_k):                  # [chunk * S, D]: the chunk's slot embeddings
        e = embed_fn(p, f_k, rng)
        return e.reshape(-1, e.shape[-1])

    shape = jax.eval_shape(embed, params, chunk_features(0))
    ks = jnp.arange(n_chunks)

    # Pass 1: every chunk's sentences' embeddings, without activations.
    def embed_chunk(out, a):
        k, ids_k = a
        f_k = chunk_features(k)
        return out.at[slot_sentences(f_k, ids_k)].set(jax.lax.stop_gradient(embed(params, f_k)), mode="drop"), None

    embeddings, _ = jax.lax.scan(embed_chunk, jnp.zeros((sentences, shape.shape[-1]), shape.dtype), (ks, chunk_sentences))

    # Pass 2: the loss and its gradient wrt the sentences' embeddings (and the head).
    def sentence_loss(e, head):
        e = e.reshape(batch, columns, -1)
        return loss_fn(tuple(e[:, c] for c in range(columns)), head)

    loss, (emb_grads, head_grads) = jax.value_and_grad(sentence_loss, argnums=(0, 1))(embeddings, head_params)

    # Pass 3: each chunk's slots' gradients (0 for empty slots) back through the encoder.
    def backward_chunk(acc, a):
        k, ids_k = a
        f_k = chunk_features(k)
        g_k = jnp.take(emb_grads, slot_sentences(f_k, ids_k), axis=0, mode="fill", fill_value=0)
        _, pullback = jax.vjp(lambda p: embed(p, f_k), params)
        (g_params,) = pullback(g_k)
        return jax.tree_util.tree_map(jnp.add, acc, g_params), None

    grads, _ = jax.lax.scan(backward_chunk, jax.tree_util.tree_map(jnp.zeros_like, params), (ks, chunk_sentences))
    return loss, (grads, head_grads)
