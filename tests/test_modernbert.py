"""ModernBERT (issue 22): jaxsbert's Flax ModernBERT against transformers' ``ModernBertModel`` and
sentence-transformers, import and export, and a CLI training run with resume.

Small random models (odd sizes, global and local layers, RoPE bases off their defaults) built with
transformers' config class, with a byte-level BPE tokenizer of the ModernBERT kind (fast, ``[CLS] ... [SEP]``,
no token_type_ids) trained here on a few sentences; no hub access. Every compared sentence but one is
longer than the local window of the sentence-transformers model (local_attention=8: +-4 tokens); the
token-level test also runs the default window (128: +-64) on a 200-token row.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

try:
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
except ImportError:   # sentence-transformers < 6
    from sentence_transformers.models import Normalize, Pooling, Transformer

from jaxsbert import SentenceEncoder  # noqa: E402
from jaxsbert.interop import hf  # noqa: E402
from jaxsbert.models import families  # noqa: E402
from jaxsbert.models import modernbert  # noqa: E402
from jaxsbert.models.modernbert import GLOBAL, LOCAL, ModernBertConfig  # noqa: E402

ATOL = 1e-5
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]     # ids 0..4
CORPUS = ["A man is playing a guitar.", "Stocks fell sharply on Monday.", "The quick brown fox jumps over the lazy dog.",
          "a woman is slicing an onion", "the children are playing in the park", "It rained all day in the city."]
SENTENCES = [
    "A man is playing a guitar.",
    "Stocks FELL sharply on Monday!",
    "Café naïve — 東京",
    "Hi",
    "the man plays " * 40 + "end",        # ~200 tokens: longer than the 128-token packed rows, so encoded unpacked
    "a guitar, a man, and 3 stocks; is the man playing?",
    "the children are playing in the park while it rained all day in the city and a woman sliced an onion",
    "The quick brown fox jumps over the lazy dog.",
]
MAX_SEQ = 256
SMALL = dict(vocab_size=None, hidden_size=36, num_hidden_layers=4, num_attention_heads=3, intermediate_size=37,
             global_attn_every_n_layers=3, global_rope_theta=1000.0, local_rope_theta=500.0)


def small_tokenizer():
    """A ModernBERT-style fast tokenizer: byte-level BPE, ``[CLS] $A [SEP]``, input_ids and attention_mask only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=360, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]", model_max_length=8192,
        model_input_names=["input_ids", "attention_mask"])


def small_hf_config(vocab_size: int, local_attention: int = 8, biases: bool = False):
    return transformers.ModernBertConfig(**{**SMALL, "vocab_size": vocab_size}, local_attention=local_attention,
                                         norm_bias=biases, attention_bias=biases, mlp_bias=biases, pad_token_id=3,
                                         bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)


def perturbed_hf_model(config, seed=0, cls=None):
    """A random ModernBertModel (or ``cls``) with every parameter (norms and biases too) away from its init value."""
    torch.manual_seed(seed)
    model = (cls or transformers.ModernBertModel)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory) -> str:
    """ModernBERT (local_attention=8) + its tokenizer, wrapped as Transformer + Pooling(mean) + Normalize and
    saved by sentence-transformers. Beside it, ``hf``: the masked-LM checkpoint it was made from (as ModernBERT's
    on the hub: ``model.``-prefixed encoder weights and an MLM head)."""
    root = tmp_path_factory.mktemp("modernbert")
    tokenizer = small_tokenizer()
    model = perturbed_hf_model(small_hf_config(len(tokenizer)), cls=transformers.ModernBertForMaskedLM)
    hf_dir = str(root / "hf")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=MAX_SEQ)
    out = str(root / "st")
    SentenceTransformer(modules=[transformer, Pooling(SMALL["hidden_size"], pooling_mode="mean"), Normalize()],
                        device="cpu").save(out)
    return out


@pytest.fixture(scope="module")
def st_model(st_dir):
    return SentenceTransformer(st_dir, device="cpu")


@pytest.fixture(scope="module")
def encoder(st_dir):
    return SentenceEncoder.from_pretrained(st_dir)


@pytest.fixture(scope="module")
def export_dir(encoder, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("modernbert-export") / "exported")
    encoder.save_pretrained(out)
    return out


def _max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


# ----------------------------------------------------------------------------------- the Flax module

def _to_jax(model, ids, mask):
    fam = families.FAMILIES["modernbert"]
    config = fam.config_cls.from_hf_dict(model.config.to_dict())
    module = fam.module(config)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))["params"]
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return config, module, hf.state_dict_to_flax({k: v.numpy() for k, v in model.state_dict().items()}, template)


def _count_calls(monkeypatch, module, name) -> list:
    """Replaces ``module.name`` by a wrapper that records each call (trace) in the returned list."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return calls


def _apply(module, params, ids, segments, positions=None, all_layers=False) -> np.ndarray:
    """The module's output (jitted: one program compiles faster than running the ops one by one)."""
    run = jax.jit(lambda p, i, s, q: module.apply({"params": p}, i, s, position_ids=q, all_layers=all_layers))
    return np.asarray(run(params, jnp.asarray(ids), jnp.asarray(segments), None if positions is None else
                          jnp.asarray(positions)))


@pytest.mark.parametrize("local_attention,biases,width", [(8, False, 40), (128, True, 200)])
def test_token_embeddings_and_hidden_states_match_hugging_face(local_attention, biases, width, monkeypatch):
    """Every row longer than the local window (+-4, or the default +-64 on a 200-token row) but one; the local
    layers compute the band only (rows longer than three windows)."""
    bands = _count_calls(monkeypatch, modernbert, "banded_attention")
    model = perturbed_hf_model(small_hf_config(97, local_attention, biases))
    lengths = [width, 5, 1, width - 7]
    rng = np.random.default_rng(0)
    ids, mask = np.full((4, width), 3, np.int32), np.zeros((4, width), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n], mask[i, :n] = rng.integers(5, 97, n), 1
    config, module, params = _to_jax(model, ids, mask)
    assert config.layer_types == (GLOBAL, LOCAL, LOCAL, GLOBAL)
    bands.clear()                                          # the init's trace
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                    output_hidden_states=True)
    ref, ref_layers = out.last_hidden_state.numpy(), np.stack([h.numpy() for h in out.hidden_states])
    layers = _apply(module, params, ids, mask, all_layers=True)
    ours = layers[-1]                                   # the model's output: the last layer through final_norm
    assert layers.shape == ref_layers.shape == (5, 4, width, 36)
    diff = max(_max_diff(ours[i, :n], ref[i, :n]) for i, n in enumerate(lengths))
    diff_layers = max(_max_diff(layers[:, i, :n], ref_layers[:, i, :n]) for i, n in enumerate(lengths))
    assert diff < ATOL and diff_layers < ATOL, (diff, diff_layers)
    assert len(bands) == 2                                 # traced once per local layer
    # the comparison can fail: without the local window the long rows come out elsewhere
    unwindowed = module.clone(config=dataclasses.replace(config, local_attention=10 ** 6))
    wrong = _apply(unwindowed, params, ids, mask)
    assert _max_diff(wrong[0], ref[0]) > 1e-3
    # the state dict round trip is exact and complete (no attn_norm in layer 0, no biases unless configured)
    back, state = hf.flax_to_state_dict(params), model.state_dict()
    assert set(back) == set(state) and ("layers.0.attn_norm.weight" in state) is False
    assert any(k.endswith(".bias") for k in state) is biases
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key].numpy(), err_msg=key)


def test_packed_segments_see_their_own_positions_and_window():
    """Two sentences longer than the window packed in one row (segment ids, restarting positions) equal
    the two padded rows."""
    model = perturbed_hf_model(small_hf_config(97), seed=1)
    rng = np.random.default_rng(3)
    ids, mask = np.full((2, 17), 3, np.int32), np.zeros((2, 17), np.int32)
    ids[0], mask[0] = rng.integers(5, 97, 17), 1
    ids[1, :11], mask[1, :11] = rng.integers(5, 97, 11), 1
    _, module, params = _to_jax(model, ids, mask)
    separate = _apply(module, params, ids, mask)
    packed_ids = np.full((1, 30), 3, np.int32)
    packed_ids[0, :17], packed_ids[0, 17:28] = ids[0], ids[1, :11]
    segments = np.array([[1] * 17 + [2] * 11 + [0] * 2], np.int32)
    positions = np.array([list(range(17)) + list(range(11)) + [0, 0]], np.int32)
    packed = _apply(module, params, packed_ids, segments, positions)
    assert _max_diff(packed[0, :17], separate[0]) < ATOL and _max_diff(packed[0, 17:28], separate[1, :11]) < ATOL
    # RoPE and the window depend on position differences only, so positions counted along the row give the same;
    # what keeps the sentences apart is the segment mask
    along_row = _apply(module, params, packed_ids, segments)
    assert _max_diff(along_row[0, 17:28], separate[1, :11]) < ATOL
    one_segment = _apply(module, params, packed_ids, (segments > 0).astype(np.int32), positions)
    assert _max_diff(one_segment[0, 17:28], separate[1, :11]) > 1e-3


@pytest.mark.parametrize("window", [4, 7])
def test_banded_local_attention_equals_the_full_mask(window):
    """The band (blocks of ``window`` queries against three blocks of keys) gives the full masked softmax's result
    for every real token: a packed row (segments of 13, 20 and 9 tokens, positions restarting, padding at 0) and
    a padded row, lengths not a multiple of the window."""
    from jaxsbert.models.attention import attention_probs, merge_heads

    rng = np.random.default_rng(window)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 50, 3, 6)), jnp.float32) for _ in range(3))
    segments = np.array([[1] * 13 + [2] * 20 + [3] * 9 + [0] * 8, [1] * 37 + [0] * 13], np.int32)
    positions = np.array([list(range(13)) + list(range(20)) + list(range(9)) + [0] * 8, list(range(50))], np.int32)
    segments, positions = jnp.asarray(segments), jnp.asarray(positions)
    assert modernbert.takes_band(50, window, 0.0, True)
    banded = np.asarray(modernbert.banded_attention(q, k, v, segments, positions, window))
    bias = jnp.where(modernbert.allowed_keys(segments, positions, window), 0.0, jnp.finfo(jnp.float32).min)
    heads_first = lambda t: t.swapaxes(1, 2)             # [B, heads, L, d]
    full = np.asarray(merge_heads(jnp.matmul(attention_probs(heads_first(q), heads_first(k), bias), heads_first(v))))
    real = np.asarray(segments) > 0
    assert _max_diff(banded[real], full[real]) < 1e-6
    # training with attention dropout draws its masks on [L, L] probabilities: the full path
    assert not modernbert.takes_band(50, window, 0.1, False) and modernbert.takes_band(50, window, 0.1, True)


def test_fused_attention_equals_materialized(monkeypatch):
    """attention_impl="fused" (jax.nn.dot_product_attention; XLA's on CPU) gives the materialized path's token
    embeddings and gradients, on a packed row whose sentences are longer than the local window."""
    from jaxsbert.models import attention

    calls = _count_calls(monkeypatch, attention, "fused_attention")
    model = perturbed_hf_model(small_hf_config(97), seed=2)
    rng = np.random.default_rng(4)
    ids = rng.integers(5, 97, (1, 30)).astype(np.int32)
    segments = np.array([[1] * 17 + [2] * 11 + [0] * 2], np.int32)
    positions = np.array([list(range(17)) + list(range(11)) + [0, 0]], np.int32)
    _, module, params = _to_jax(model, ids, segments)
    weights = jnp.asarray(rng.normal(size=(1, 30, 36)) * (segments[..., None] > 0), jnp.float32)

    def out_and_grads(impl):
        m = module.clone(attention_impl=impl)
        f = lambda p: m.apply({"params": p}, jnp.asarray(ids), jnp.asarray(segments), position_ids=jnp.asarray(positions))
        out, grads = jax.jit(lambda p: (f(p), jax.grad(lambda q: (f(q) * weights).sum())(p)))(params)
        return np.asarray(out)[0, :28], jax.tree_util.tree_leaves(grads)

    out, grads = out_and_grads("materialized")
    assert not calls
    fused_out, fused_grads = out_and_grads("fused")
    assert calls and _max_diff(fused_out, out) < ATOL
    for a, b in zip(fused_grads, grads):      # gradients up to ~80: within 1e-5 of their scale
        assert _max_diff(a, b) < ATOL * max(1.0, float(np.abs(b).max())), (_max_diff(a, b), float(np.abs(b).max()))


def test_bfloat16_compute_stays_close_to_float32():
    """dtype=bfloat16 (the matmuls; RoPE, norms, softmax and the residual stream stay float32): float32 output,
    every token's vector within cosine 0.999 of the float32 model's."""
    model = perturbed_hf_model(small_hf_config(97), seed=5)
    rng = np.random.default_rng(0)
    ids, mask = rng.integers(5, 97, (2, 40)).astype(np.int32), np.ones((2, 40), np.int32)
    mask[1, 25:] = 0
    _, module, params = _to_jax(model, ids, mask)
    f32, b16 = _apply(module, params, ids, mask), _apply(module.clone(dtype=jnp.bfloat16), params, ids, mask)
    a, b = f32[mask > 0], b16[mask > 0]
    assert b16.dtype == np.float32 and _max_diff(a, b) > 1e-4           # bf16 did run
    cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cosine.min() > 0.999, cosine.min()


def test_dropout_and_remat_train():
    """With dropout everywhere and rematerialised layers the gradient is finite and dropout changes the output."""
    config = ModernBertConfig(vocab_size=50, hidden_size=12, intermediate_size=7, num_hidden_layers=3,
                              num_attention_heads=2, local_attention=4, global_attn_every_n_layers=2,
                              attention_dropout=0.2, embedding_dropout=0.2, mlp_dropout=0.2)
    module = families.FAMILIES["modernbert"].module(config, remat=True)
    ids, mask = jnp.ones((2, 9), jnp.int32), jnp.array([[1] * 9, [1] * 4 + [0] * 5])
    params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, mask)["params"]     # jitted: eager init takes ~10 s

    @jax.jit
    def loss_and_grads(p, key):
        def loss(p):
            out = module.apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": key})
            return (out[..., 0] ** 2).mean()       # not of the whole token vector: final_norm makes that ~1
        return jax.value_and_grad(loss)(p)

    loss, grads = loss_and_grads(params, jax.random.PRNGKey(1))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))
    assert float(loss) != float(loss_and_grads(params, jax.random.PRNGKey(2))[0])     # the masks are drawn


# ------------------------------------------------------------------------------------------- config

def test_config_round_trips_through_hugging_face():
    hf_config = small_hf_config(97, local_attention=16, biases=True)
    config = ModernBertConfig.from_hf_dict(hf_config.to_dict())
    assert (config.global_rope_theta, config.local_rope_theta, config.local_attention) == (1000.0, 500.0, 16)
    d = families.hf_config_dict("modernbert", config)
    assert d["model_type"] == "modernbert" and d["architectures"] == ["ModernBertModel"]
    rebuilt = transformers.AutoConfig.for_model(**d)
    assert type(rebuilt) is type(hf_config)
    for key in ("layer_types", "rope_parameters", "local_attention", "sliding_window", "hidden_size",
                "intermediate_size", "num_hidden_layers", "num_attention_heads", "norm_eps", "norm_bias",
                "attention_bias", "mlp_bias", "pad_token_id", "cls_token_id", "sep_token_id", "hidden_activation"):
        assert getattr(rebuilt, key) == getattr(hf_config, key), key
    assert ModernBertConfig.from_hf_dict(d) == config
    # transformers 4.x's names (what ModernBERT checkpoints on the hub say) give the same model
    legacy = {k: v for k, v in d.items() if k not in ("layer_types", "rope_parameters")}
    assert ModernBertConfig.from_hf_dict(legacy) == config
    assert ModernBertConfig(num_hidden_layers=22).layer_types.count(GLOBAL) == 8      # ModernBERT-base: 0, 3, ..., 21


def test_unsupported_options_are_errors():
    with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
        ModernBertConfig.from_hf_dict({"rope_parameters": {GLOBAL: {"rope_type": "yarn", "rope_theta": 1.0}}})
    with pytest.raises(ValueError, match="hidden_activation='mish'"):
        ModernBertConfig.from_hf_dict({"hidden_activation": "mish"})
    with pytest.raises(ValueError, match="layer_types"):
        ModernBertConfig.from_hf_dict({"num_hidden_layers": 2, "layer_types": [GLOBAL]})
    with pytest.raises(ValueError, match="even head size"):
        ModernBertConfig(hidden_size=9, num_attention_heads=3)


# -------------------------------------------------------------------- sentence-transformers directories

def test_import_matches_sentence_transformers_packed_and_unpacked(encoder, st_model):
    assert encoder.config.family == "modernbert" and encoder.max_seq_length == st_model.max_seq_length == MAX_SEQ
    lengths = [len(ids) for ids in encoder.tokenizer(SENTENCES)]
    assert max(lengths) > 128 and sum(n > 9 for n in lengths) >= 6, lengths    # past the window, and the packed rows
    theirs = st_model.encode(SENTENCES, convert_to_numpy=True)
    assert np.abs(theirs).max() > 1e-2 and _max_diff(theirs[0], theirs[1]) > 1e-3
    # packed: at least batch_size sentences, the ones up to 128 tokens several per row
    packed = [f for _, f in encoder._plan_batches(encoder.tokenizer(SENTENCES), np.argsort([-n for n in lengths]), 4)]
    assert any("slots" in f for f in packed) and any("slots" not in f for f in packed)
    assert _max_diff(encoder.encode(SENTENCES, batch_size=4), theirs) < ATOL
    unpacked = encoder.replace()
    unpacked.packing = False
    assert _max_diff(unpacked.encode(SENTENCES, batch_size=4), theirs) < ATOL


def test_export_loads_in_sentence_transformers_and_automodel(encoder, st_model, export_dir):
    exported = SentenceTransformer(export_dir, device="cpu")
    assert [type(m).__name__ for m in exported] == [type(m).__name__ for m in st_model]
    assert exported.max_seq_length == MAX_SEQ
    assert _max_diff(exported.encode(SENTENCES, convert_to_numpy=True), encoder.encode(SENTENCES)) < ATOL
    # the exported tokenizer is ModernBERT's kind: no token_type_ids
    assert set(exported.tokenizer(["a b"])) == {"input_ids", "attention_mask"}

    model, info = transformers.AutoModel.from_pretrained(export_dir, output_loading_info=True)
    assert type(model).__name__ == "ModernBertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    original = st_model[0].auto_model
    assert model.config.layer_types == original.config.layer_types
    assert model.config.rope_parameters == original.config.rope_parameters
    assert model.config.sliding_window == original.config.sliding_window
    state = original.state_dict()
    assert set(model.state_dict()) == set(state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    batch = dict(st_model.tokenizer(SENTENCES, padding=True, truncation=True, max_length=MAX_SEQ, return_tensors="pt"))
    with torch.no_grad():
        a = model.eval()(**batch, output_hidden_states=True).hidden_states
        b = original.eval()(**batch, output_hidden_states=True).hidden_states
    for x, y in zip(a, b):
        assert torch.equal(x, y)

    again = SentenceEncoder.from_pretrained(export_dir)
    assert again.config == encoder.config
    for x, y in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(encoder.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_keep_layers_is_refused(encoder):
    """A distillation student of some layers is not built for ModernBERT (whose layer 0 has no attn_norm and whose
    layers each have their attention type): one error line instead of a model with the wrong layers."""
    from jaxsbert.models.layers import keep_layers

    with pytest.raises(ValueError, match="keep_layers \\[0, 2\\]: not supported for the 'modernbert' family"):
        keep_layers(encoder, [0, 2])


def test_masked_lm_checkpoint_loads_with_the_models_max_seq_length(st_dir):
    """The plain Hugging Face masked-LM directory (what fine-tuning starts from): the encoder's weights (the MLM
    head left out), max_seq_length = max_position_embeddings (8192) as sentence-transformers gives it, and
    sentence-transformers' default mean-pooled embeddings within 1e-5."""
    hf_dir = os.path.join(os.path.dirname(st_dir), "hf")
    ours, theirs = SentenceEncoder.from_pretrained(hf_dir), SentenceTransformer(hf_dir, device="cpu")
    assert ours.max_seq_length == 8192 == theirs.max_seq_length
    assert ours.tokenizer(["word " * 9000])[0].__len__() == 8192
    assert _max_diff(ours.encode(SENTENCES), theirs.encode(SENTENCES, convert_to_numpy=True)) < ATOL


# ------------------------------------------------------------------------------- CLI training, resume

def test_cli_trains_modernbert_with_mnrl_and_resumes(st_dir, tmp_path):
    """MNRL on the demo pairs through ``jaxsbert train``: the loss goes down, and a run stopped after 3 steps and
    resumed with --resume ends with the checkpoint of the run that was not stopped."""
    from helpers import cli_train_stop_resume

    config = {"model": st_dir, "loss": {"name": "MultipleNegativesRankingLoss"}, "batch_size": 8, "max_steps": 6,
              "data": {"train": {"demo": {"source": "demo", "columns": ["sentence1", "sentence2"], "limit": 24}}},
              "optim": {"lr": 2e-3, "warmup_ratio": 0.0}, "log_every": 1, "eval_before": False, "tensorboard": False,
              "checkpoint": {"every_steps": 3, "keep": 2, "async": False}}
    metrics = cli_train_stop_resume(config, tmp_path)
    losses = [m["loss"] for m in metrics if m["kind"] == "train"]
    assert len(losses) == 6 and np.mean(losses[3:]) < np.mean(losses[:3]) - 0.1, losses     # epoch 2 vs epoch 1
    full = str(tmp_path / "full")
    trained = SentenceEncoder.from_pretrained(os.path.join(full, "model"))
    assert trained.config.family == "modernbert"
    theirs = SentenceTransformer(os.path.join(full, "model"), device="cpu").encode(SENTENCES[:4])
    assert _max_diff(trained.encode(SENTENCES[:4]), theirs) < ATOL
