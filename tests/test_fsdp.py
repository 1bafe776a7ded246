"""FSDP (issue 22): parameters and optimizer state sharded over the ``fsdp`` axis for every family.

On 8 simulated devices with mesh {fsdp: 8}, for every family in ``jaxsbert.models.families.FAMILIES``:

- a small model (hidden 256, 1 layer, vocabulary 4096: the proportions of a real one, so the arrays
  ``param_sharding`` leaves replicated, biases and norms, weigh as little as they do in one), its train state
  built as the trainer builds it (``mesh.sharded_call`` of ``init_state``): the largest device holds at most
  1/8 of the parameters + AdamW moments + 5%, measured from the arrays' addressable shards, and equal to what
  the shardings alone give; every moment is sharded as its parameter;
- the family's default config (base sizes: BERT's is MiniLM-L6, RoBERTa's roberta-base, ...) meets the same
  bound from the shardings alone (``jax.eval_shape``, nothing allocated);
- one MNRL train step with remat and bfloat16 compute, jitted with the trainer's shardings, runs, its
  program rematerialises (a ``checkpoint``/``remat`` primitive in its jaxpr) and its new state keeps the layout.

And ``jaxsbert train`` itself on mesh {fsdp: 8}: the final state's moments are sharded as the parameters, and
the state was computed into its shards (``init_state`` traced, never run eagerly on one device).

Device counts are fixed when JAX starts, so the checks run in one subprocess (this file run as a script)
with XLA_FLAGS=--xla_force_host_platform_device_count=8, which prints its results as JSON.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

DEVICES = 8
BOUND = 1.05        # largest device <= BOUND * total / DEVICES
# the size fields of every family's config (each family has some of them), set to a small model's values
SMALL = dict(vocab_size=4096, hidden_size=256, dim=256, num_hidden_layers=1, n_layers=1, num_attention_heads=4,
             n_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=1024, hidden_dim=1024,
             max_position_embeddings=128, global_attn_every_n_layers=2)
SMALL_MAX_PARAMS = 5_000_000


# ------------------------------------------------------------------------------------ the worker

class _Clock:
    """Prints each stage's seconds to stderr (shown when the test fails)."""

    def __init__(self, name: str):
        import time
        self.name, self.time, self.last = name, time.perf_counter, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = self.time()
        print(f"{self.name}: {stage} {now - self.last:.1f} s", file=sys.stderr, flush=True)
        self.last = now


def _model_config(family: str, transformer):
    from jaxsbert.models.pooling import PoolingConfig
    from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModelConfig

    hidden = getattr(transformer, "hidden_size", None) or transformer.dim
    return SentenceModelConfig(family, transformer, (PoolingConfig(hidden, ("mean",)), NormalizeConfig()),
                               max_seq_length=16)


def _bound(total: int, per_device: dict) -> dict:
    largest = max(per_device.values())
    return {"total": total, "largest": largest, "ratio": largest / (total / DEVICES), "devices": len(per_device)}


def _moments_sharded_as_params(state) -> bool:
    """Every Adam moment (mu, nu) of a parameter has the parameter's sharding."""
    import jax

    params = jax.tree_util.tree_leaves_with_path(state["params"])
    moments = [s for s in jax.tree_util.tree_leaves(state["opt_state"], is_leaf=lambda x: hasattr(x, "mu"))
               if hasattr(s, "mu")]
    assert moments, "no Adam state found"
    for m in moments:
        for which in (m.mu["params"], m.nu["params"]):
            for (path, p), (_, x) in zip(params, jax.tree_util.tree_leaves_with_path(which)):
                if x.sharding != p.sharding or x.shape != p.shape:
                    print(f"{jax.tree_util.keystr(path)}: moment {x.sharding} vs parameter {p.sharding}")
                    return False
    return True


def check_family(family: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsbert.config import DEFAULTS
    from jaxsbert.interop.st_dir import init_params
    from jaxsbert.losses import get_loss
    from jaxsbert.models import families
    from jaxsbert.models.sentence_model import SentenceModel
    from jaxsbert.parallel import mesh as pmesh
    from jaxsbert.training.optimizer import make_optimizer
    from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

    fam = families.FAMILIES[family]
    mesh = pmesh.make_mesh({"data": 1, "fsdp": DEVICES})
    # a constant learning rate: the one step moves the parameters
    tx, schedule = make_optimizer({**DEFAULTS["optim"], "schedule": "constant", "warmup_steps": 0}, total_steps=10)
    new_state = lambda params, heads: init_state(params, heads, tx, seed=0)
    out, clock = {}, _Clock(family)

    # the family's default (base-size) config: the bound from the shardings alone
    config = _model_config(family, fam.config_cls())
    features = {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32)}
    shapes = jax.eval_shape(lambda: new_state(SentenceModel(config).init(jax.random.PRNGKey(0), features)["params"],
                                              {}))
    sharding = pmesh.param_sharding(mesh, shapes)
    abstract = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                                      sharding)
    total = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in jax.tree_util.tree_leaves(shapes))
    out["default"] = _bound(total, pmesh.bytes_per_device(abstract))
    out["default"]["params"] = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
    clock("default config")

    # a small model through the trainer's path, measured from the arrays
    small = fam.config_cls.from_hf_dict(SMALL)     # the family's own field names; the rest its defaults
    config = _model_config(family, small)
    params = init_params(config)
    out["small_params"] = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params))
    state, state_sharding = pmesh.sharded_call(new_state, mesh, params, {})
    measured = pmesh.bytes_per_device(state)
    out["small"] = _bound(sum(x.nbytes for x in jax.tree_util.tree_leaves(state)), measured)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    out["measured_equals_shardings"] = measured == pmesh.bytes_per_device(abstract)
    out["moments_sharded_as_params"] = _moments_sharded_as_params(state)
    out["sharded_arrays"] = sum(not x.sharding.is_fully_replicated for x in jax.tree_util.tree_leaves(state["params"]))
    clock("small state")

    # one MNRL step, remat, bfloat16 compute, dropout on, the trainer's shardings
    module = SentenceModel(config, dtype=jnp.bfloat16, remat=True)
    step = make_train_step(make_embed_fn(module, dropout=True), get_loss("MultipleNegativesRankingLoss"), "pairs",
                           tx, schedule, has_labels=False)
    rng = np.random.default_rng(0)
    pad = int(getattr(small, "pad_token_id", 0) or 0)
    pad = pad if pad < small.vocab_size else 0      # the defaults' pad id can be outside SMALL's vocabulary
    columns = []
    for _ in range(2):
        ids = rng.integers(5, small.vocab_size, (DEVICES, 12)).astype(np.int32)
        mask = (np.arange(12)[None, :] < rng.integers(3, 13, (DEVICES, 1))).astype(np.int32)
        columns.append({"input_ids": np.where(mask > 0, ids, pad).astype(np.int32), "attention_mask": mask})
    batch = pmesh.global_batch(mesh, {"features": tuple(columns), "labels": np.zeros((DEVICES,), np.float32),
                                      "mask": np.ones((DEVICES,), bool)})
    jaxpr = str(jax.make_jaxpr(step)(state, batch))
    out["remat_in_program"] = "checkpoint" in jaxpr or "remat" in jaxpr
    clock("jaxpr")
    train_step = jax.jit(step, in_shardings=(state_sharding, pmesh.batch_sharding(mesh)),
                         out_shardings=(state_sharding, pmesh.replicated(mesh)), donate_argnums=0)
    before = jax.device_get(state["params"])
    state, metrics = train_step(state, batch)
    out["step_finite"] = bool(metrics["finite"]) and bool(np.isfinite(float(metrics["loss"])))
    out["step_moved_params"] = any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(jax.device_get(state["params"]))))
    out["layout_kept"] = all(x.sharding == s for x, s in zip(jax.tree_util.tree_leaves(state),
                                                             jax.tree_util.tree_leaves(state_sharding)))
    clock("step")
    return out


def check_trainer(root: str, model: str) -> dict:
    """``jaxsbert train`` (MNRL, 1 step, mesh {fsdp: 8}): where its state was built and how it ends up sharded."""
    import jax

    from jaxsbert.config import build_config
    from jaxsbert.training import loop, step as step_module

    traced = []
    real_init_state = step_module.init_state

    def spy(params, *args, **kwargs):
        traced.append(all(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(params)))
        return real_init_state(params, *args, **kwargs)

    loop.init_state = spy
    data = os.path.join(root, "pairs.jsonl")
    with open(data, "w") as f:
        for i in range(16):
            f.write(json.dumps({"anchor": f"a man plays {i}", "positive": f"someone plays {i}"}) + "\n")
    config = build_config(base={
        "model": model, "data": {"train": {"pairs": {"source": data}}}, "batch_size": 8, "max_steps": 1,
        "mesh": {"data": 1, "fsdp": DEVICES}, "remat": True, "compute_dtype": "bfloat16", "eval_before": False,
        "save_model": False, "tensorboard": False, "checkpoint": {"async": False}})
    summary = loop.train(config, os.path.join(root, "run"))
    state = summary["state"]
    return {"init_state_traced": bool(traced) and all(traced),
            "moments_sharded_as_params": _moments_sharded_as_params(state),
            "sharded_arrays": sum(not x.sharding.is_fully_replicated
                                  for x in jax.tree_util.tree_leaves(state["params"]))}


def worker(root: str, model: str) -> None:
    from jaxsbert.models import families

    import jax
    assert jax.device_count() == DEVICES, jax.device_count()
    results = {"families": {f: check_family(f) for f in sorted(families.FAMILIES)},
               "trainer": check_trainer(root, model)}
    print("RESULTS " + json.dumps(results))


# ------------------------------------------------------------------------------------- the tests

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory, minilm_path):
    from helpers import save_tiny_model

    root = tmp_path_factory.mktemp("fsdp")
    model = save_tiny_model(str(root / "model"), minilm_path)
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
           "JAX_PLATFORMS": "cpu", "JAXSBERT_COMPILATION_CACHE": "0"}
    proc = subprocess.run([sys.executable, __file__, str(root), model], env=env, capture_output=True, text=True,
                          timeout=900, cwd=pathlib.Path(__file__).parents[1])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, (f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                            f"{proc.stderr[-5000:]}")
    return json.loads(lines[-1][len("RESULTS "):])


def _families():
    from jaxsbert.models import families
    return sorted(families.FAMILIES)


@pytest.mark.parametrize("family", _families())
def test_per_device_bytes_of_a_small_model(results, family):
    r = results["families"][family]
    assert r["small_params"] <= SMALL_MAX_PARAMS, (
        f"{family}: the small model has {r['small_params']:,} parameters; add its config's size fields to SMALL")
    assert r["small"]["devices"] == DEVICES and r["sharded_arrays"] > 0
    assert r["measured_equals_shardings"]
    assert r["small"]["ratio"] <= BOUND, f"{family}: largest device holds {r['small']['ratio']:.4f} x total / {DEVICES}"
    assert r["moments_sharded_as_params"]


@pytest.mark.parametrize("family", _families())
def test_per_device_bytes_of_the_default_config(results, family):
    r = results["families"][family]["default"]
    assert r["params"] > 10_000_000      # a real model's size
    assert r["ratio"] <= BOUND, f"{family}: largest device holds {r['ratio']:.4f} x total / {DEVICES}"


@pytest.mark.parametrize("family", _families())
def test_remat_bfloat16_step_on_the_fsdp_mesh(results, family):
    r = results["families"][family]
    assert r["remat_in_program"], f"{family}: no rematerialisation in the train step's program"
    assert r["step_finite"] and r["step_moved_params"] and r["layout_kept"], r


def test_trainer_builds_the_state_in_shards(results):
    r = results["trainer"]
    assert r["init_state_traced"], "the trainer ran init_state eagerly: the moments existed whole on one device"
    assert r["moments_sharded_as_params"] and r["sharded_arrays"] > 0


if __name__ == "__main__":
    worker(*sys.argv[1:3])
