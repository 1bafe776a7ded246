"""bf16 mixed precision: matmuls in bfloat16; parameters, optimizer state, layer norms, the residual stream,
softmax, pooling, normalization and losses in float32 (plain, packed and gradient-cached paths)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.config import DEFAULTS
from jaxsbert.data.batching import pack_rows
from jaxsbert.data.buckets import pad_token_ids
from jaxsbert.encoder import SentenceEncoder
from jaxsbert.losses import get_loss
from jaxsbert.models.sentence_model import SentenceModel, compute_dtype
from jaxsbert.training.optimizer import make_optimizer
from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

from helpers import tiny_config


def _sentences(rng, n, vocab=200):
    return [list(rng.integers(3, vocab, size=int(rng.integers(2, 20)))) for _ in range(n)]


def _cosines(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.slow
def test_packed_bf16_encode_of_every_stsb_test_sentence_is_within_2e2_cosine_of_float32(minilm_path, stsb_test):
    """The real all-MiniLM-L6-v2, packed rows (the encoder's default), every distinct STSb test sentence: each
    bf16 embedding's cosine with its float32 embedding is >= 0.98 (measured: worst 0.99993, mean 0.99999; with
    XLA_FLAGS=--xla_allow_excess_precision=false, which rounds every bf16 intermediate as a GPU would, worst
    0.99989, mean 0.99998)."""
    s1, s2, _ = stsb_test
    sentences = sorted(set(s1) | set(s2))
    f32 = SentenceEncoder.from_pretrained(minilm_path)
    bf16 = SentenceEncoder.from_pretrained(minilm_path, dtype="bfloat16")
    assert f32.packing and bf16.packing and bf16.dtype == jnp.bfloat16
    a = f32.encode(sentences, batch_size=256)
    b = bf16.encode(sentences, batch_size=256)
    assert a.dtype == b.dtype == np.float32
    cos = _cosines(a, b)
    worst = int(np.argmin(cos))
    print(f"bf16 vs float32 over {len(sentences)} sentences: worst cosine {cos[worst]:.6f}, mean {cos.mean():.6f}")
    assert cos[worst] >= 0.98, f"sentence {worst} {sentences[worst]!r}: cosine {cos[worst]}"
    assert cos.mean() < 1 - 1e-7, "the bf16 encoder gave float32's embeddings: it did not run in bf16"


def test_compute_dtype_names():
    assert compute_dtype("bfloat16") == jnp.bfloat16 and compute_dtype(jnp.float32) == jnp.float32
    with pytest.raises(ValueError, match="compute dtype 'float16' is not supported"):
        compute_dtype("float16")


def _primitive_dtypes(jaxpr, found=None):
    """{primitive name: set of (input dtypes, output dtypes)} over a closed jaxpr and its sub-jaxprs."""
    found = {} if found is None else found
    for eqn in jaxpr.eqns:
        ins = tuple(str(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype"))
        outs = tuple(str(v.aval.dtype) for v in eqn.outvars)
        found.setdefault(eqn.primitive.name, set()).add((ins, outs))
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
            _primitive_dtypes(sub, found)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                _primitive_dtypes(getattr(inner, "jaxpr", inner), found)
    return found


def _step(dtype, loss_name="CoSENTLoss", dropout=True):
    config = tiny_config(dropout=0.1)
    model = SentenceModel(config, dtype=dtype, max_segments=4)
    rng = np.random.default_rng(0)
    b = 8
    columns = [_sentences(rng, b) for _ in range(2)]
    features = tuple(pad_token_ids(c, 32, b) for c in columns)
    params = model.init(jax.random.PRNGKey(0), features[0])["params"]
    tx, schedule = make_optimizer(dict(DEFAULTS["optim"], lr=1e-3), 10)
    state = init_state(params, {}, tx, seed=0)
    batch = {"features": features, "labels": jnp.asarray(rng.random(b), jnp.float32), "mask": jnp.ones(b, bool)}
    step = make_train_step(make_embed_fn(model, dropout), get_loss(loss_name), "d", tx, schedule)
    return jax.jit(step), state, batch


def test_bf16_train_step_keeps_parameters_and_optimizer_state_float32():
    """One CoSENT step with compute dtype bf16: parameters and Adam moments stay float32, the loss and gradient
    norm are float32 and close to float32's; the program's matmuls run in bf16 while every max (the softmaxes'),
    log (the loss's logsumexp) and rsqrt (layer norm) runs in float32 (bf16 exps remain: exact GELU's erfc and its
    derivative, elementwise, as under torch's autocast)."""
    step16, state, batch = _step(jnp.bfloat16)
    new, metrics = step16(state, batch)
    floats = [x for x in jax.tree_util.tree_leaves((new["params"], new["opt_state"]))
              if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats), {str(x.dtype) for x in floats}
    assert metrics["loss"].dtype == jnp.float32 and metrics["grad_norm"].dtype == jnp.float32
    assert bool(metrics["finite"])
    step32, state32, _ = _step(jnp.float32)
    _, metrics32 = step32(state32, batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(metrics32["loss"]), rtol=2e-2)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(metrics32["grad_norm"]), rtol=5e-2)
    assert float(metrics["loss"]) != float(metrics32["loss"])       # it did run in bf16

    prims = _primitive_dtypes(jax.make_jaxpr(step16)(state, batch).jaxpr)
    assert any("bfloat16" in ins for ins, _ in prims["dot_general"]), "no bf16 matmul"
    for name in ("reduce_max", "log", "rsqrt"):
        assert prims[name] and all(outs == ("float32",) for _, outs in prims[name]), (name, prims[name])


def test_bf16_packed_cached_loss_is_finite_and_close_to_float32():
    """CachedMNRL (gradient caching over chunks of packed rows, with dropout): bf16's loss is float32, finite
    and within 1e-2 of float32's, and its parameter gradients point the same way (cosine > 0.99)."""
    config = tiny_config(normalize=True, dropout=0.1)
    rng = np.random.default_rng(3)
    b = 12
    columns = [_sentences(rng, b) for _ in range(2)]
    packed = pack_rows(columns, np.arange(b), b, packed_rows=16, row_length=48, max_segments=4)
    mask = np.ones(b, bool)
    loss = get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=4)
    results = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = SentenceModel(config, dtype=dtype, max_segments=4)
        params = model.init(jax.random.PRNGKey(0), pad_token_ids(columns[0], 32, b))["params"]
        embed_fn = make_embed_fn(model, dropout=True)
        results[dtype] = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, packed, None, mask,
                                                               jax.random.PRNGKey(4)))(params)
    (v32, (g32, _)), (v16, (g16, _)) = results[jnp.float32], results[jnp.bfloat16]
    assert v16.dtype == jnp.float32 and bool(jnp.isfinite(v16))
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(g16))
    np.testing.assert_allclose(float(v16), float(v32), rtol=1e-2)
    flat32 = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(g32)])
    flat16 = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(g16)])
    assert np.isfinite(flat16).all()
    assert _cosines(flat16, flat32) > 0.99


def test_cli_encode_takes_a_compute_dtype(tmp_path, minilm_path, monkeypatch):
    """``jaxsbert encode --compute-dtype bfloat16`` loads the encoder in bf16 and writes float32 embeddings."""
    from jaxsbert import cli
    from helpers import save_tiny_model

    model = save_tiny_model(str(tmp_path / "tiny"), minilm_path)
    (tmp_path / "s.txt").write_text("A man is playing a guitar.\nA woman slices an onion.\n")
    loaded = []
    real = cli._load_encoder
    monkeypatch.setattr(cli, "_load_encoder", lambda *a: loaded.append(real(*a)) or loaded[-1])
    out = {}
    for dtype in ("float32", "bfloat16"):
        cli.main(["encode", "--model", model, "--input", str(tmp_path / "s.txt"), "--output",
                  str(tmp_path / f"{dtype}.npy"), "--compute-dtype", dtype])
        out[dtype] = np.load(tmp_path / f"{dtype}.npy")
    assert [e.dtype for e in loaded] == [jnp.float32, jnp.bfloat16]
    assert out["bfloat16"].dtype == np.float32 and (_cosines(out["bfloat16"], out["float32"]) > 0.98).all()
