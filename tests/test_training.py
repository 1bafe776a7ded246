"""Trainer: config handling, optimizer/schedule parity with PyTorch/transformers, exact resume, CLI."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.config import DEFAULTS, ConfigError, apply_overrides, build_config, merge
from jaxsbert.training.optimizer import decay_mask, make_optimizer, make_schedule, update_check_never_fires
from helpers import latest_checkpoint, save_tiny_model


# ---------------------------------------------------------------------------------------------- config

def test_unknown_config_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_sise'.*did you mean 'batch_size'"):
        merge(DEFAULTS, {"batch_sise": 8})
    with pytest.raises(ConfigError, match=r"'optim.lrr'.*did you mean 'optim.lr'"):
        apply_overrides(DEFAULTS, ["optim.lrr=1e-4"])


def test_overrides_parse_python_literals():
    cfg = apply_overrides(DEFAULTS, ["optim.lr=3e-5", "epochs=2", "name=my run", "data.train.x={'source': 'demo'}"])
    assert cfg["optim"]["lr"] == 3e-5 and cfg["epochs"] == 2 and cfg["name"] == "my run"
    assert cfg["data"]["train"]["x"] == {"source": "demo"}


def test_shipped_configs_load():
    for name in ("quickstart", "stsb_cosent", "stsb_cosine", "sick_softmax", "nli_mnrl", "nli_triplet", "multi_dataset",
                 "stsb_retrieval", "distill_mse", "gist", "tsdae"):
        cfg = build_config(name)
        assert cfg["data"]["train"], name
    with pytest.raises(ConfigError, match="not found"):
        build_config("no_such_config")


# ----------------------------------------------------------------------------------- optimizer parity

@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_matches_transformers(kind):
    torch = pytest.importorskip("torch")
    import transformers

    total, warm, lr = 50, 7, 3e-5
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    get = {"linear": transformers.get_linear_schedule_with_warmup,
           "cosine": transformers.get_cosine_schedule_with_warmup,
           "constant": lambda o, w, t: transformers.get_constant_schedule_with_warmup(o, w)}[kind]
    sched = get(opt, warm, total)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = make_schedule({"lr": lr, "schedule": kind, "warmup_steps": warm}, total)
    np.testing.assert_allclose([float(ours(i)) for i in range(total)], expected, rtol=1e-6, atol=1e-12)


def test_adamw_matches_torch_with_decay_mask_and_clipping():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params = {"dense": {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
                        "bias": rng.normal(size=(3,)).astype(np.float32)},
              "LayerNorm": {"scale": rng.normal(size=(3,)).astype(np.float32)}}
    grads = [jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 3, params) for _ in range(6)]
    optim = dict(DEFAULTS["optim"], lr=1e-2, weight_decay=0.1, warmup_steps=2, max_grad_norm=1.0)
    tx, _ = make_optimizer(optim, 6)
    ours, state = jax.tree_util.tree_map(jnp.asarray, params), None
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, ours)
        ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)

    import transformers
    tp = {k: torch.nn.Parameter(torch.tensor(params[a][b])) for k, (a, b) in
          {"w": ("dense", "kernel"), "b": ("dense", "bias"), "ln": ("LayerNorm", "scale")}.items()}
    opt = torch.optim.AdamW([{"params": [tp["w"]], "weight_decay": 0.1},
                             {"params": [tp["b"], tp["ln"]], "weight_decay": 0.0}], lr=1e-2, eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(opt, 2, 6)
    for g in grads:
        tp["w"].grad, tp["b"].grad, tp["ln"].grad = (torch.tensor(g["dense"]["kernel"]), torch.tensor(g["dense"]["bias"]),
                                                     torch.tensor(g["LayerNorm"]["scale"]))
        torch.nn.utils.clip_grad_norm_(list(tp.values()), 1.0)
        opt.step()
        sched.step()
    np.testing.assert_allclose(ours["dense"]["kernel"], tp["w"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["dense"]["bias"], tp["b"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["LayerNorm"]["scale"], tp["ln"].detach().numpy(), rtol=1e-5, atol=1e-6)
    mask = decay_mask(params)
    assert mask["dense"]["kernel"] and not mask["dense"]["bias"] and not mask["LayerNorm"]["scale"]


def test_clipping_leaves_the_loss_heads_alone():
    """On the trainer's {"params", "heads"} tree only the model's gradients are clipped, by their own norm, as
    transformers' Trainer clips model.parameters() while sentence-transformers optimizes the loss's own
    parameters (SoftmaxLoss's classifier, TSDAE's decoder head) unclipped."""
    import optax
    from jaxsbert.training.optimizer import clip_by_global_norm
    rng = np.random.default_rng(2)
    grads = {"params": {"w": jnp.asarray(rng.normal(size=(4, 3)) * 5, jnp.float32)},
             "heads": {"softmax": {"k": jnp.asarray(rng.normal(size=(6,)) * 50, jnp.float32)}}}
    clip = clip_by_global_norm(1.0)
    for known in ({}, {"global_norm": optax.tree.norm(grads["params"])}):
        clipped, _ = clip.update(grads, clip.init(grads), **known)
        np.testing.assert_allclose(float(optax.tree.norm(clipped["params"])), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(clipped["heads"]["softmax"]["k"]), np.asarray(grads["heads"]["softmax"]["k"]))
    other = {"a": grads["params"]["w"], "b": grads["heads"]["softmax"]["k"]}       # any other tree: clipped whole
    clipped, _ = clip.update(other, clip.init(other))
    np.testing.assert_allclose(float(optax.tree.norm(clipped)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("scale", [0.1, 10.0])        # below and above max_grad_norm
def test_clipping_is_torchs_and_takes_a_given_norm(scale):
    """optimizer.clip_by_global_norm: the gradients torch.nn.utils.clip_grad_norm_ leaves (to float32
    rounding of the norm); bitwise the same updates whether the train step passes the norm
    (global_norm=...) or the clipping computes it; the state tree is optax's (checkpoints)."""
    import optax
    torch = pytest.importorskip("torch")
    from jaxsbert.training.optimizer import clip_by_global_norm
    rng = np.random.default_rng(1)
    params = {"a": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=7), jnp.float32)}
    optim = dict(DEFAULTS["optim"], lr=1e-2, weight_decay=0.01, warmup_steps=1, max_grad_norm=1.0)
    ours, schedule = make_optimizer(optim, 5)
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01, mask=decay_mask))
    assert jax.tree_util.tree_structure(ours.init(params)) == jax.tree_util.tree_structure(theirs.init(params))
    with_norm = jax.jit(lambda g, s: ours.update(g, s, params, global_norm=optax.tree.norm(g)))
    without = jax.jit(lambda g, s: ours.update(g, s, params))
    clip = clip_by_global_norm(1.0)
    states = [ours.init(params), ours.init(params)]
    for _ in range(4):
        g = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape) * scale, jnp.float32), params)
        out = [fn(g, s) for fn, s in zip((with_norm, without), states)]
        for x, y in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(out[1])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        states = [s for _, s in out]
        clipped, _ = clip.update(g, clip.init(params))
        tg = [torch.nn.Parameter(torch.zeros(x.shape)) for x in jax.tree_util.tree_leaves(g)]
        for t, x in zip(tg, jax.tree_util.tree_leaves(g)):
            t.grad = torch.tensor(np.asarray(x))
        torch.nn.utils.clip_grad_norm_(tg, 1.0)
        for x, t in zip(jax.tree_util.tree_leaves(clipped), tg):
            np.testing.assert_allclose(np.asarray(x), t.grad.numpy(), rtol=2e-7, atol=0)
        if scale < 1:        # below max_norm: untouched
            for x, y in zip(jax.tree_util.tree_leaves(clipped), jax.tree_util.tree_leaves(g)):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name, clip", [("adam", 0.0), ("adamw", 1.0)])
def test_adam_update_stays_within_the_proved_bound(name, clip):
    """update_check_never_fires rests on |update| <= lr C, C = 1 / sqrt((1 - b1^2/b2)(1 - b2)). Gradients
    g_i = (b1/b2)^(t-i) make Cauchy-Schwarz tight (the ratio m / sqrt(v) tends to (1 - b1) C), followed by a
    sign flip, a spike and random heavy-tailed noise: the measured ratio must stay below C at every step."""
    b1, b2 = DEFAULTS["optim"]["b1"], DEFAULTS["optim"]["b2"]
    bound = 1.0 / np.sqrt((1 - b1 * b1 / b2) * (1 - b2))
    optim = dict(DEFAULTS["optim"], name=name, lr=1.0, schedule="constant", warmup_ratio=0.0, weight_decay=0.0,
                 max_grad_norm=clip)
    tx, _ = make_optimizer(optim, 4000)
    rng = np.random.default_rng(0)
    growth = (b1 / b2) ** -np.arange(3000)                     # oldest smallest: the tight case for step 3000
    grads = np.concatenate([growth / growth[-1] * 0.5, [-1e3, 1e6, -1e-6], rng.standard_cauchy(900)])
    params = {"w": jnp.zeros(())}
    update = jax.jit(lambda g, state: tx.update({"w": g}, state, params))
    state, ratios = tx.init(params), []
    for g in grads.astype(np.float32):
        updates, state = update(g, state)
        ratios.append(abs(float(updates["w"])))
    assert max(ratios) <= bound
    assert max(ratios[:3000]) > 0.95 * (1 - b1) * bound        # the sequence did reach the tight regime


def test_update_check_never_fires_decides_on_the_bound():
    optim = build_config("stsb_cosent")["optim"]               # the recipe: AdamW 2e-5, 360 steps, MiniLM
    assert update_check_never_fires(optim, 360, 12.0, 22_713_216)
    b1, b2 = optim["b1"], optim["b2"]
    ratio = 1.0 / np.sqrt((1 - b1 * b1 / b2) * (1 - b2))
    n, steps = 1_000_000, 100
    lr_edge = (np.sqrt(1e38 / n) - 1.0) / (steps * ratio)      # the lr at which n (1 + steps lr C)^2 = 1e38
    assert update_check_never_fires(dict(optim, lr=lr_edge * 0.999), steps, 1.0, n)
    assert not update_check_never_fires(dict(optim, lr=lr_edge * 1.001), steps, 1.0, n)
    assert not update_check_never_fires(dict(optim, lr=1e38), 360, 12.0, 22_713_216)
    assert not update_check_never_fires(optim, 360, float("nan"), 22_713_216)
    assert not update_check_never_fires(optim, 360, float("inf"), 22_713_216)
    assert not update_check_never_fires(dict(optim, b1=0.999, b2=0.9), 360, 12.0, 22_713_216)   # b1^2 >= b2
    assert not update_check_never_fires(dict(optim, eps=0.0), 360, 12.0, 22_713_216)
    assert not update_check_never_fires(dict(optim, weight_decay=1e6, lr=1e-5), 360, 12.0, 22_713_216)
    assert not update_check_never_fires(dict(optim, name="sgd"), 360, 12.0, 22_713_216)


# --------------------------------------------------------------------------------- end to end, resume

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_path):
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), minilm_path)


def _config(model, **over):
    base = {
        "name": "test",
        "model": model,
        "data": {"train": {"demo": {"source": "demo", "split": "train", "limit": 96}},
                 "eval": {"dev": {"type": "similarity", "source": "demo", "split": "dev"}}},
        "loss": {"name": "CoSENTLoss"},
        "batch_size": 16,
        "epochs": 2,
        "optim": {"lr": 1e-3, "warmup_ratio": 0.2},
        "log_every": 2,
        "checkpoint": {"every_steps": 4, "keep": 3, "async": False},
        "tensorboard": False,
    }
    base.update(over)
    return build_config(base=base)


def test_resume_continues_exactly(tiny_model, tmp_path):
    from jaxsbert.training.loop import train

    full = train(_config(tiny_model), str(tmp_path / "full"))
    assert full["steps"] == 12 and "model" in full
    part = train(_config(tiny_model, stop_after_steps=5), str(tmp_path / "part"))
    assert part["stopped"] and part["steps"] == 5
    resumed = train(_config(tiny_model), str(tmp_path / "part"), resume=True)
    assert resumed["steps"] == 12
    a, b = latest_checkpoint(str(tmp_path / "full")), latest_checkpoint(str(tmp_path / "part"))
    flat_a, flat_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the run learned something and the initial params differ from the final ones
    assert full["eval"]["dev_spearman_cosine"] is not None
    metrics = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
    assert [m["step"] for m in metrics if m["kind"] == "train"][-1] == 12


def _leaves_equal(a, b, atol=0.0):
    """Same tree paths, and every leaf equal (to within ``atol`` when given)."""
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b):
        if atol:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def _recording_compaction(monkeypatch):
    from jaxsbert.training import loop

    sizes = []
    plan = loop._compact_vocab

    def recording(*args):
        vocab = plan(*args)
        sizes.append(vocab.size if vocab else None)
        return vocab
    monkeypatch.setattr(loop, "_compact_vocab", recording)
    return sizes


@pytest.mark.parametrize("optim", [{"name": "adamw", "weight_decay": 0.0, "max_grad_norm": None},
                                   {"name": "adam", "max_grad_norm": 1e-3}])
def test_compact_vocab_trains_what_the_whole_table_trains(tiny_model, tmp_path, monkeypatch, optim):
    """The step trains only the rows of the data's tokens and the run ends as one that trains the whole
    table: bit for bit (parameters and optimizer moments) without clipping; with clipping, which fires on
    every step at 1e-3, the global norm adds the same squares in another order, so the parameters agree to
    float32 rounding. Checkpoints and the saved model hold the whole table, the other rows as they were."""
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.training.loop import train

    sizes = _recording_compaction(monkeypatch)
    kw = dict(optim={"lr": 1e-3, "warmup_ratio": 0.2, **optim})
    compact = train(_config(tiny_model, **kw), str(tmp_path / "compact"))
    whole = train(_config(tiny_model, compact_vocab=False, **kw), str(tmp_path / "whole"))
    assert sizes[0] is not None and sizes[0] % 128 == 0 and sizes[0] < 30522 and sizes[1:] == [None]
    if optim["max_grad_norm"] is None:
        _leaves_equal(compact["state"], whole["state"])
        _leaves_equal(latest_checkpoint(str(tmp_path / "compact")), latest_checkpoint(str(tmp_path / "whole")))
    else:
        _leaves_equal(compact["state"]["params"], whole["state"]["params"], atol=1e-6)
        _leaves_equal(latest_checkpoint(str(tmp_path / "compact"))["params"], latest_checkpoint(str(tmp_path / "whole"))["params"], atol=1e-6)
    start = SentenceEncoder.from_pretrained(tiny_model).params["transformer"]["embeddings"]["word_embeddings"]
    saved = SentenceEncoder.from_pretrained(compact["model"]).params["transformer"]["embeddings"]["word_embeddings"]
    changed = np.flatnonzero(np.any(np.asarray(saved["embedding"]) != np.asarray(start["embedding"]), axis=1))
    assert saved["embedding"].shape == (30522, 32) and 0 < len(changed) <= sizes[0]


def test_resume_moves_between_compact_and_whole_tables(tiny_model, tmp_path, monkeypatch):
    """A run stopped with compact_vocab and resumed without it (and the other way round) ends as an
    uninterrupted run: checkpoints always hold the whole table and its moments."""
    from jaxsbert.training.loop import train

    sizes = _recording_compaction(monkeypatch)
    kw = dict(optim={"lr": 1e-3, "warmup_ratio": 0.2, "weight_decay": 0.0})
    full = train(_config(tiny_model, compact_vocab=False, **kw), str(tmp_path / "full"))
    for first, then in [(True, False), (False, True)]:
        workdir = str(tmp_path / f"{first}-{then}")
        train(_config(tiny_model, stop_after_steps=5, compact_vocab=first, **kw), workdir)
        resumed = train(_config(tiny_model, compact_vocab=then, **kw), workdir, resume=True)
        assert resumed["steps"] == 12
        _leaves_equal(latest_checkpoint(workdir), latest_checkpoint(str(tmp_path / "full")))
    assert [s is not None for s in sizes] == [False, True, False, False, True]


def test_compact_vocab_plan():
    """Which optimizers allow it; rows are the data's tokens, the rows a resumed run's moments touch, and
    padding up to a multiple of 128; bad token ids are named."""
    import optax
    from jaxsbert.parallel import mesh as pmesh
    from jaxsbert.training.compact_vocab import CompactVocab, why_not

    base = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert why_not({**base, "name": "adamw", "weight_decay": 0.0}) is None
    assert why_not({**base, "name": "adam", "weight_decay": 0.01}) is None        # adam has no decay
    assert "weight decay" in why_not({**base, "name": "adamw", "weight_decay": 0.01})
    assert "eps" in why_not({**base, "name": "adam", "eps": 0.0, "weight_decay": 0.0})
    assert "sgd" in why_not({**base, "name": "sgd", "weight_decay": 0.0})

    params = {"transformer": {"embeddings": {"word_embeddings": {"embedding": jnp.ones((1000, 4))}},
                              "pooler": {"kernel": jnp.ones((4, 4))}}}
    tx = optax.adam(1e-3)
    trainable = {"params": params, "heads": {}}
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "heads": {}, "opt_state": tx.init(trainable)}
    mesh = pmesh.make_mesh(None)
    sharding = pmesh.param_sharding(mesh, state)
    vocab = CompactVocab.plan(np.array([5, 3, 900, 3]), state, mesh, sharding)
    assert vocab.size == 128 and {3, 5, 900} <= set(vocab.rows.tolist()) and list(vocab.rows) == sorted(vocab.rows)
    batch = {"features": ({"input_ids": np.array([[3, 5, 900]])},), "labels": np.zeros(1), "mask": np.ones(1, bool)}
    ids = vocab.remap(batch)["features"][0]["input_ids"]
    np.testing.assert_array_equal(vocab.rows[ids], [[3, 5, 900]])
    assert 950 not in vocab.rows      # padding takes the lowest unused ids
    with pytest.raises(ValueError, match="token id 950 is not in the compact vocabulary"):
        vocab.remap({**batch, "features": {"input_ids": np.array([[3, 950]])}})
    with pytest.raises(ValueError, match="token id 1000, outside the model's word-embedding table of 1000 rows"):
        CompactVocab.plan(np.array([1, 1000]), state, mesh, sharding)
    # a resumed state whose moments touched row 950 keeps it
    mu = jax.tree_util.tree_map(jnp.zeros_like, trainable)
    mu["params"]["transformer"]["embeddings"]["word_embeddings"]["embedding"] = jnp.zeros((1000, 4)).at[950, 1].set(1e-9)
    resumed = {**state, "step": jnp.ones((), jnp.int32),
               "opt_state": (optax.ScaleByAdamState(jnp.ones((), jnp.int32), mu, jax.tree_util.tree_map(jnp.zeros_like, mu)),)
               + tuple(state["opt_state"][1:])}
    assert 950 in CompactVocab.plan(np.array([3]), resumed, mesh, sharding).rows
    compacted = CompactVocab.plan(np.array([3]), resumed, mesh, sharding).compact(resumed)
    assert compacted["params"]["transformer"]["embeddings"]["word_embeddings"]["embedding"].shape == (128, 4)
    assert compacted["params"]["transformer"]["pooler"]["kernel"].shape == (4, 4)
    # no smaller table: no compaction
    assert CompactVocab.plan(np.arange(900), state, mesh, sharding) is None


def test_trainer_keeps_the_update_check_only_where_an_update_can_trip_it(tiny_model, tmp_path, monkeypatch):
    """lr 1e-3: the check is compiled out and training goes on as usual; lr 1e30: it is kept, and every
    update (which overflows the parameters' norm) is skipped and counted, the parameters unchanged."""
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.training import loop

    built = []

    def recording(*args, **kwargs):
        built.append(kwargs["check_update"])
        return make_train_step(*args, **kwargs)
    make_train_step = loop.make_train_step
    monkeypatch.setattr(loop, "make_train_step", recording)
    kw = dict(epochs=1, data={"train": {"demo": {"source": "demo", "split": "train", "limit": 48}}, "eval": {}},
              checkpoint={"every_steps": 0, "keep": 1, "async": False})
    usual = loop.train(_config(tiny_model, **kw), str(tmp_path / "usual"))
    assert built == [False] and usual["steps"] == 3
    records = [json.loads(l) for l in open(tmp_path / "usual" / "metrics.jsonl")]
    assert [r["nonfinite"] for r in records if r["kind"] == "train"][-1] == 0
    huge = loop.train(_config(tiny_model, optim={"lr": 1e30, "warmup_ratio": 0.0}, **kw), str(tmp_path / "huge"))
    assert built == [False, True] and huge["steps"] == 3
    records = [json.loads(l) for l in open(tmp_path / "huge" / "metrics.jsonl")]
    assert [r["nonfinite"] for r in records if r["kind"] == "train"][-1] == 3
    start, end = SentenceEncoder.from_pretrained(tiny_model).params, latest_checkpoint(str(tmp_path / "huge"))["params"]
    for x, y in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(end)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_cli_train_export_and_sentence_transformers_loads(tiny_model, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from jaxsbert.cli import main
    from jaxsbert import SentenceEncoder

    workdir = str(tmp_path / "run")
    cfg = tmp_path / "cfg.py"
    cfg.write_text("def get_config():\n    return " + repr({
        "model": tiny_model, "data": {"train": {"demo": {"source": "demo", "limit": 32}}},
        "loss": {"name": "CosineSimilarityLoss"}, "batch_size": 16, "log_every": 1, "tensorboard": False,
        "checkpoint": {"every_steps": 0, "keep": 1, "async": False}}) + "\n")
    main(["train", str(cfg), "--workdir", workdir, "-o", "optim.lr=1e-3"])
    main(["export", "--checkpoint", workdir, "--out", str(tmp_path / "exported")])
    sentences = ["A man is playing a guitar.", "Stocks fell sharply on Monday.", "short"]
    ours = SentenceEncoder.from_pretrained(str(tmp_path / "exported")).encode(sentences)
    final = SentenceEncoder.from_pretrained(os.path.join(workdir, "model")).encode(sentences)
    theirs = st.SentenceTransformer(str(tmp_path / "exported"), device="cpu").encode(sentences)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_array_equal(ours, final)
    main(["plot", workdir])
    assert os.path.exists(os.path.join(workdir, "report.png"))
    with pytest.raises(SystemExit, match="unknown config key 'epoch'.*'epochs'"):
        main(["train", str(cfg), "--workdir", str(tmp_path / "bad"), "-o", "epoch=2"])


def test_bad_loss_columns_fail_before_compiling(tiny_model, tmp_path):
    from jaxsbert.training.loop import prepare

    cfg = _config(tiny_model, loss={"name": "SoftmaxLoss", "num_labels": 3})
    with pytest.raises(ValueError, match="SoftmaxLoss.*integer class ids"):
        prepare(cfg)
