"""The fused attention path (jax.nn.dot_product_attention) against the materialized one: the same embeddings,
gradients and train steps (float32, CPU), packed and unpacked, for every family that takes ``attention_impl``;
and when each path is taken."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsbert.config import DEFAULTS
from jaxsbert.data.batching import pack_rows
from jaxsbert.data.buckets import pad_token_ids
from jaxsbert.data.packing import pack_token_ids
from jaxsbert.losses import get_loss
from jaxsbert.models import attention
from jaxsbert.models.bert import BertConfig
from jaxsbert.models.distilbert import DistilBertConfig
from jaxsbert.models.mpnet import MPNetConfig
from jaxsbert.models.pooling import PoolingConfig
from jaxsbert.models.roberta import RobertaConfig
from jaxsbert.models.sentence_model import SentenceModel, SentenceModelConfig
from jaxsbert.training.optimizer import make_optimizer
from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

SMALL = dict(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
CONFIGS = {
    "bert": lambda dropout: BertConfig(**SMALL, max_position_embeddings=64, hidden_dropout_prob=dropout,
                                       attention_probs_dropout_prob=dropout),
    "roberta": lambda dropout: RobertaConfig(**SMALL, max_position_embeddings=66, type_vocab_size=1,
                                             hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout),
    "distilbert": lambda dropout: DistilBertConfig(vocab_size=120, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                                                   dropout=dropout, attention_dropout=dropout),
    "mpnet": lambda dropout: MPNetConfig(**SMALL, max_position_embeddings=66, hidden_dropout_prob=dropout,
                                         attention_probs_dropout_prob=dropout),
}


def _config(family, dropout=0.0):
    return SentenceModelConfig(family, CONFIGS[family](dropout), (PoolingConfig(32, ("mean",)),), max_seq_length=32)


def _sentences(rng, n):
    return [list(rng.integers(5, 120, size=int(rng.integers(2, 20)))) for _ in range(n)]


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the fused path ran (traced) since the test began."""
    calls = []
    real = attention.fused_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(attention, "fused_attention", counting)
    return calls


def _both_paths(fused, materialized, f, params, fused_calls, layout):
    """The gradients of ``f(model, params) -> (value, embeddings)`` with the fused and the materialized model,
    after checking that each took its path and that their embeddings agree within 1e-5."""
    before = len(fused_calls)
    (_, emb_m), grads_m = jax.value_and_grad(lambda p: f(materialized, p), has_aux=True)(params)
    assert len(fused_calls) == before, "materialized took the fused path"
    (_, emb_f), grads_f = jax.value_and_grad(lambda p: f(fused, p), has_aux=True)(params)
    assert len(fused_calls) > before, "fused did not take the fused path"
    np.testing.assert_allclose(np.asarray(emb_f), np.asarray(emb_m), atol=1e-5, rtol=0, err_msg=layout)
    return grads_f, grads_m


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_fused_embeddings_and_gradients_equal_materialized(family, fused_calls):
    """Unpacked (padding mask) and packed (segment mask; MPNet's relative bias on restarting positions) batches:
    fused and materialized embeddings within 1e-5, and the gradients of a function of them within 1e-5."""
    config = _config(family)
    rng = np.random.default_rng(0)
    sentences = _sentences(rng, 9)
    batches = {"unpacked": pad_token_ids(sentences, 32, 9),
               "packed": pack_token_ids(sentences, rows=4, row_length=48, max_segments=4)}
    fused, materialized = (SentenceModel(config, max_segments=4, attention_impl=impl)
                           for impl in ("fused", "materialized"))
    params = fused.init(jax.random.PRNGKey(0), batches["unpacked"])["params"]
    for layout, features in batches.items():
        def f(model, p):
            emb = model.apply({"params": p}, features)
            return jnp.sum(jnp.sin(emb)), emb

        # eager: compiling costs more here
        grads_f, grads_m = _both_paths(fused, materialized, f, params, fused_calls, layout)
        for (path, g_f), g_m in zip(jax.tree_util.tree_leaves_with_path(grads_f), jax.tree_util.tree_leaves(grads_m)):
            np.testing.assert_allclose(np.asarray(g_f), np.asarray(g_m), atol=1e-5, rtol=1e-5,
                                       err_msg=f"{layout} {jax.tree_util.keystr(path)}")


def test_train_step_loss_and_gradient_norm_fused_equal_materialized(fused_calls):
    """A packed MNRL train step with hidden dropout on and attention dropout 0 (so the fused path trains): the
    loss, gradient norm and updated parameters of the two paths within 1e-5."""
    bert = BertConfig(**SMALL, max_position_embeddings=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)
    config = SentenceModelConfig("bert", bert, (PoolingConfig(32, ("mean",)),), max_seq_length=32)
    rng = np.random.default_rng(1)
    b = 8
    columns = [_sentences(rng, b) for _ in range(2)]
    packed = pack_rows(columns, np.arange(b), b, packed_rows=8, row_length=48, max_segments=4)
    batch = {"features": packed, "mask": jnp.ones(b, bool)}
    tx, schedule = make_optimizer(dict(DEFAULTS["optim"], lr=1e-3), 10)
    results = {}
    for impl in ("materialized", "fused"):
        model = SentenceModel(config, max_segments=4, attention_impl=impl)
        params = model.init(jax.random.PRNGKey(0), pad_token_ids(columns[0], 32, b))["params"]
        step = make_train_step(make_embed_fn(model, dropout=True), get_loss("MultipleNegativesRankingLoss"), "d", tx,
                               schedule, has_labels=False)
        before = len(fused_calls)
        results[impl] = jax.jit(step)(init_state(params, {}, tx, seed=3), batch)
        assert (len(fused_calls) > before) == (impl == "fused")
    (state_m, metrics_m), (state_f, metrics_f) = results["materialized"], results["fused"]
    assert bool(metrics_f["finite"]) and float(metrics_f["loss"]) > 0
    np.testing.assert_allclose(float(metrics_f["loss"]), float(metrics_m["loss"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(metrics_f["grad_norm"]), float(metrics_m["grad_norm"]), rtol=1e-5, atol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(state_f["params"]), jax.tree_util.tree_leaves(state_m["params"])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_attention_dropout_in_training_takes_the_materialized_path(fused_calls):
    """jax.nn.dot_product_attention has no dropout: with attention dropout on, "fused" trains materialized (the
    same dropped-out result as "materialized"), and goes fused again in inference."""
    config = _config("bert", dropout=0.2)
    features = pad_token_ids(_sentences(np.random.default_rng(2), 4), 32, 4)
    fused, materialized = (SentenceModel(config, attention_impl=impl) for impl in ("fused", "materialized"))
    params = fused.init(jax.random.PRNGKey(0), features)["params"]
    fused_calls.clear()
    train = lambda model: model.apply({"params": params}, features, deterministic=False,
                                      rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(np.asarray(train(fused)), np.asarray(train(materialized)))
    assert not fused_calls
    fused.apply({"params": params}, features)
    assert fused_calls


def test_which_path_and_implementation(monkeypatch):
    assert attention.uses_fused("auto", 0.1, True) == attention.FUSED_ON_CPU      # CPU: the faster one there
    assert attention.uses_fused("fused", 0.0, False) and attention.uses_fused("fused", 0.1, True)
    assert not attention.uses_fused("fused", 0.1, False) and not attention.uses_fused("materialized", 0.0, True)
    with pytest.raises(ValueError, match="attention_impl 'flash' is not one of"):
        attention.uses_fused("flash", 0.0, True)
    q16 = jnp.zeros((2, 64, 4, 32), jnp.bfloat16)
    assert attention.fused_implementation(q16) is None                              # CPU: XLA
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert attention.uses_fused("auto", 0.1, True)
    assert attention.fused_implementation(q16) == "cudnn"
    assert attention.fused_implementation(q16.astype(jnp.float32)) is None         # cuDNN takes bf16/fp16 only
    assert attention.fused_implementation(jnp.zeros((2, 64, 4, 12), jnp.bfloat16)) is None   # head size % 8
    assert attention.fused_implementation(jnp.zeros((2, 63, 4, 32), jnp.bfloat16)) is None   # odd length, training
    assert attention.fused_implementation(jnp.zeros((2, 63, 4, 32), jnp.bfloat16), False) == "cudnn"
    # a "GPU" whose cuDNN refuses (here: none found) computes with XLA instead
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 8, 4, 8)).astype(jnp.bfloat16) for i in range(3))
    bias = jnp.where(jnp.arange(8) < 6, 0.0, jnp.finfo(jnp.float32).min)[None, None, None, :]
    expected = jax.nn.dot_product_attention(q, k, v, bias=bias).reshape(2, 8, 32)
    np.testing.assert_array_equal(np.asarray(attention.fused_attention(q, k, v, bias), np.float32),
                                  np.asarray(expected, np.float32))


def test_a_family_without_the_choice_takes_only_auto(monkeypatch):
    """A family whose module has no ``attention_impl`` (one that computes its attention its own way) is built
    without it under "auto", and refuses another choice in one line."""
    from jaxsbert.models import families
    from jaxsbert.models.sentence_model import transformer_module

    class Module:
        __dataclass_fields__ = {"config": None, "dtype": None, "remat": None}

        def __init__(self, config, dtype, remat):
            self.config = config

    monkeypatch.setitem(families.FAMILIES, "other", families.Family("other", None, Module, "Other"))
    config = SentenceModelConfig("other", "its config", ())
    assert transformer_module(config).config == "its config"
    with pytest.raises(ValueError, match="attention_impl='fused': the 'other' family has no attention choice"):
        transformer_module(config, attention_impl="fused")


# ------------------------------------------------------------------ Qwen3: causal mask, grouped-query attention

def _qwen3_batches():
    """Right-padded, left-padded and packed rows for Qwen3: (token ids, segment ids, position ids or None)."""
    ids = jnp.asarray(np.random.default_rng(4).integers(3, 120, (3, 12)), jnp.int32)
    right = np.array([[1] * 12, [1] * 5 + [0] * 7, [1] + [0] * 11], np.int32)
    segments = np.array([[1] * 5 + [2] * 6 + [0], [1] * 12, [1, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0, 0]], np.int32)
    positions = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0], list(range(12)), [0, 0, 1, 0, 1, 2, 3, 0, 0, 0, 0, 0]],
                         np.int32)
    return {"right-padded": (ids, jnp.asarray(right), None), "left-padded": (ids, jnp.asarray(right[:, ::-1]), None),
            "packed": (ids, jnp.asarray(segments), jnp.asarray(positions))}


def test_qwen3_fused_embeddings_and_gradients_equal_materialized(fused_calls):
    """Qwen3 (4 query heads on 2 key/value heads, the causal same-segment mask as the bias): fused token
    embeddings within 1e-5 of the materialized ones and gradients within 1e-5 of their scale, for right-padded,
    left-padded and packed rows; with attention dropout in training "fused" computes what "materialized" does;
    SentenceModel passes the choice on and a wrong name is refused."""
    from jaxsbert.models.qwen3 import Qwen3Config, Qwen3Model
    from jaxsbert.models.sentence_model import transformer_module

    config = Qwen3Config(vocab_size=120, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_dropout=0.2)
    fused, materialized = (Qwen3Model(config, attention_impl=impl) for impl in ("fused", "materialized"))
    batches = _qwen3_batches()
    params = fused.init(jax.random.PRNGKey(0), *batches["packed"][:2])["params"]
    weights = jnp.asarray(np.random.default_rng(5).normal(size=(3, 12, 32)), jnp.float32)
    for layout, (ids, segments, positions) in batches.items():
        def f(model, p):
            emb = model.apply({"params": p}, ids, segments, position_ids=positions)
            return jnp.sum(jnp.sin(emb) * weights), emb

        grads_f, grads_m = _both_paths(fused, materialized, f, params, fused_calls, layout)
        scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads_m))
        for (path, g_f), g_m in zip(jax.tree_util.tree_leaves_with_path(grads_f), jax.tree_util.tree_leaves(grads_m)):
            np.testing.assert_allclose(np.asarray(g_f), np.asarray(g_m), atol=1e-5 * scale, rtol=0,
                                       err_msg=f"{layout} {jax.tree_util.keystr(path)}")

    ids, segments, positions = batches["packed"]
    train = lambda model: model.apply({"params": params}, ids, segments, position_ids=positions, deterministic=False,
                                      rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(np.asarray(train(fused)), np.asarray(train(materialized)))
    sentence_config = SentenceModelConfig("qwen3", config, (PoolingConfig(32, ("lasttoken",)),))
    assert transformer_module(sentence_config, attention_impl="fused").attention_impl == "fused"
    with pytest.raises(ValueError, match="attention_impl 'flash' is not one of"):
        Qwen3Model(config, attention_impl="flash").init(jax.random.PRNGKey(0), ids, segments)
