"""FSDP memory and one remat train step of a big model, randomly initialised, on simulated devices.

    python -m benchmarks.fsdp                               # Qwen3-0.6B's shape on 8 devices, mesh {fsdp: 8}
    python -m benchmarks.fsdp --shape bert-large --devices 8 --batch 8 --seq-len 32
    python -m benchmarks.fsdp --compile-only --batch 8 --seq-len 512 [--no-remat]   # XLA's scratch, nothing run

The train state is built as ``jaxsbert train`` builds it (``init_state``: parameters, AdamW moments with the
config defaults, step, rng; laid out by ``param_sharding``), but from random parameters computed straight
into their shards (``mesh.sharded_call`` of ``SentenceModel.init`` + ``init_state``: the whole model never
exists on one device). Reported: the state's total bytes, each device's bytes (the sum over arrays of its
addressable shards), the largest against total / devices, and the arrays left replicated. Then one
MultipleNegativesRankingLoss train step (``make_train_step`` jitted with the trainer's shardings, state
donated) with remat and bfloat16 compute, dropout on, at ``--batch`` random pairs x ``--seq-len`` tokens:
its compile time, its run time and XLA's scratch per device (``memory_analysis``).

Simulated devices share one host's memory: Qwen3-0.6B's state (0.6B float32 parameters + two AdamW
moments) is ~7 GiB whatever the device count.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Hugging Face config.json fields of each shape (random init: nothing is downloaded)
SHAPES = {
    # Qwen3-0.6B's config, with the vocabulary its tokenizer has (151,669 tokens; the checkpoint pads to 151,936)
    "qwen3-0.6b": ("qwen3", ("lasttoken",), dict(
        vocab_size=151669, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, hidden_act="silu", max_position_embeddings=40960,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, attention_bias=False)),
    "bert-large": ("bert", ("mean",), dict(
        vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=512)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices (mesh {fsdp: devices})")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step (global)")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--compute-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--no-remat", action="store_true")
    parser.add_argument("--compile-only", action="store_true",
                        help="shapes and shardings only: the bytes table and the step's XLA scratch, nothing run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "jax" not in sys.modules:   # the device count is fixed when JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import machine_description
    from jaxsbert.config import DEFAULTS
    from jaxsbert.losses import get_loss
    from jaxsbert.models import families
    from jaxsbert.models.pooling import PoolingConfig
    from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModel, SentenceModelConfig
    from jaxsbert.parallel import mesh as pmesh
    from jaxsbert.training.optimizer import make_optimizer
    from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

    family, pooling, hf = SHAPES[args.shape]
    if family not in families.FAMILIES:
        raise SystemExit(f"benchmarks/fsdp.py: family {family!r} (shape {args.shape}) is not in this jaxsbert; "
                         f"families: {sorted(families.FAMILIES)}")
    if jax.device_count() != args.devices:
        raise SystemExit(f"benchmarks/fsdp.py: JAX has {jax.device_count()} devices, not {args.devices} "
                         "(run it in a fresh process)")
    print(machine_description())
    transformer = families.FAMILIES[family].config_cls.from_hf_dict({**hf, "model_type": family})
    config = SentenceModelConfig(family, transformer, (PoolingConfig(hf["hidden_size"], pooling), NormalizeConfig()),
                                 max_seq_length=args.seq_len)
    mesh = pmesh.make_mesh({"data": 1, "fsdp": args.devices})
    tx, schedule = make_optimizer(DEFAULTS["optim"], total_steps=100)
    features = {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32)}

    def new_state(key):
        params = SentenceModel(config).init(key, features)["params"]
        return init_state(params, {}, tx, seed=0)

    t = time.perf_counter()
    if args.compile_only:     # the state's shapes and shardings only: nothing is allocated
        shapes = jax.eval_shape(new_state, jax.random.PRNGKey(0))
        state_sharding = pmesh.param_sharding(mesh, shapes)
        state = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                                       state_sharding)
    else:
        state, state_sharding = pmesh.sharded_call(new_state, mesh, jax.random.PRNGKey(0))
        jax.block_until_ready(state)
    init_s = time.perf_counter() - t

    nbytes = lambda x: int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
    leaves = jax.tree_util.tree_leaves_with_path(state)
    total = sum(nbytes(x) for _, x in leaves)
    per_device = pmesh.bytes_per_device(state)
    largest = max(per_device.values())
    replicated = [(jax.tree_util.keystr(p), x.shape, nbytes(x)) for p, x in leaves if x.sharding.is_fully_replicated]
    params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state["params"]))
    print(f"\n{args.shape} ({family}): {params:,} parameters; train state (parameters + AdamW moments + step, rng) "
          f"on mesh {dict(mesh.shape)}, {'from its shardings' if args.compile_only else 'built'} in {init_s:.1f} s")
    print("| total MiB | total / devices MiB | largest device MiB | smallest device MiB | largest / (total / devices) "
          "| replicated arrays | replicated MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    mib = lambda n: f"{n / 2 ** 20:,.1f}"
    print(f"| {mib(total)} | {mib(total / args.devices)} | {mib(largest)} | {mib(min(per_device.values()))} "
          f"| {largest / (total / args.devices):.4f} | {len(replicated)} | {mib(sum(n for *_, n in replicated))} |")
    shapes = sorted({(s, n) for _, s, n in replicated}, key=lambda x: -x[1])
    print("replicated (shape: count): " + ", ".join(
        f"{s}: {sum(1 for _, s2, _ in replicated if s2 == s)}" for s, _ in shapes))

    dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.compute_dtype]
    module = SentenceModel(config, dtype=dtype, remat=not args.no_remat)
    step = make_train_step(make_embed_fn(module, dropout=True), get_loss("MultipleNegativesRankingLoss"), "pairs",
                           tx, schedule, has_labels=False)
    batch_sharding = pmesh.batch_sharding(mesh)
    train_step = jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                         out_shardings=(state_sharding, pmesh.replicated(mesh)), donate_argnums=0)
    rng = np.random.default_rng(0)
    columns = tuple({"input_ids": rng.integers(5, hf["vocab_size"], (args.batch, args.seq_len)).astype(np.int32),
                     "attention_mask": np.ones((args.batch, args.seq_len), np.int32)} for _ in range(2))
    batch = pmesh.global_batch(mesh, {"features": columns, "labels": np.zeros((args.batch,), np.float32),
                                      "mask": np.ones((args.batch,), bool)})
    t = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    stats = compiled.memory_analysis()     # per device: XLA's scratch for the step (activations, gradients)
    temp = mib(stats.temp_size_in_bytes) if stats is not None else "-"
    print(f"\nMNRL step, {args.batch} pairs x {args.seq_len} tokens, compute {args.compute_dtype}, "
          f"remat {not args.no_remat}, dropout on:")
    bound_met = largest <= 1.05 * total / args.devices
    bound = f"\nper-device bound (largest <= total / {args.devices} + 5%): {'met' if bound_met else 'NOT met'}"
    if args.compile_only:
        print("| compile s | XLA temp per device MiB |\n|---:|---:|")
        print(f"| {compile_s:.1f} | {temp} |{bound}")
        return 0 if bound_met else 1
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    metrics = jax.device_get(metrics)
    step_s = time.perf_counter() - t
    same_layout = all(x.sharding == s for x, s in zip(jax.tree_util.tree_leaves(state),
                                                        jax.tree_util.tree_leaves(state_sharding)))
    after = max(pmesh.bytes_per_device(state).values())
    print("| compile s | step s | XLA temp per device MiB | loss | grad norm | finite | state layout kept "
          "| largest device MiB after |")
    print("|---:|---:|---:|---:|---:|---|---|---:|")
    print(f"| {compile_s:.1f} | {step_s:.1f} | {temp} | {float(metrics['loss']):.4f} "
          f"| {float(metrics['grad_norm']):.4f} "
          f"| {bool(metrics['finite'])} | {same_layout} | {mib(after)} |")
    print(bound)
    return 0 if bound_met and bool(metrics["finite"]) and same_layout else 1


if __name__ == "__main__":
    sys.exit(main())
