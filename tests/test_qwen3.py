"""Qwen3 decoder embedder (Qwen3-Embedding style) against transformers' Qwen3Model and sentence-transformers.

A small random Qwen3 (grouped-query attention with 2 key/value heads) saved by transformers, with a tiny
byte-level BPE tokenizer built offline whose post-processor appends ``<|endoftext|>`` to every text and
whose padding side is left, as Qwen3-Embedding ships; wrapped as a sentence-transformers directory
(Transformer + last-token Pooling + Normalize, with query prompts). No hub access.

No text starts or ends with whitespace: jaxsbert strips it (as sentence-transformers < 6), 6.x keeps it,
and for a byte-level BPE that changes the tokens (see tests/test_interop.py).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")

from jaxsbert import SentenceEncoder  # noqa: E402
from jaxsbert.interop import hf  # noqa: E402
from jaxsbert.models import families, qwen3  # noqa: E402
from jaxsbert.models.pooling import PoolingConfig, pool, pool_segments  # noqa: E402

EOS = "<|endoftext|>"
MAX_SEQ_LENGTH = 80
PROMPTS = {"query": "Instruct: Given a question, retrieve passages that answer it\nQuery:", "document": ""}
TEXTS = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "Stocks fell sharply on Monday after the announcement, and analysts expect more losses this week.",
    "Where is the nearest train station?",
    "a",
    "Two dogs run through a field of tall grass, chasing a red ball that their owner keeps throwing.",
    "Qwen3 embeds the last token.",
    "What is the capital of France?",
    "Paris is the capital and largest city of France, on the river Seine.",
    "two  spaces inside,\ta tab and a\nnewline",
    "The weather is lovely today." * 20,      # longer than MAX_SEQ_LENGTH tokens: truncated, EOS kept
]
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=80, max_position_embeddings=128, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def build_tokenizer():
    """A byte-level BPE (Qwen's pre-tokenizer) with ``<|endoftext|>`` appended by its post-processor, as a
    Qwen2TokenizerFast padding on the left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOS, "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 3 + list(PROMPTS.values()), trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A:0 {EOS}:0", pair=f"$A:0 {EOS}:0 $B:1 {EOS}:1",
                                                       special_tokens=[(EOS, tok.token_to_id(EOS))])
    return transformers.Qwen2TokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=None,
                                           padding_side="left", model_max_length=128)


def hf_model(vocab_size, seed=0, pad_token_id=None):
    """A random Qwen3Model with every parameter (the RMSNorm weights too) away from its init value."""
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(vocab_size=vocab_size, pad_token_id=pad_token_id, **SMALL)
    model = transformers.AutoModel.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def to_jax(model, ids, mask):
    fam = families.FAMILIES["qwen3"]
    config = fam.config_cls.from_hf_dict(model.config.to_dict())
    module = fam.module(config)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))["params"]
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return config, module, hf.state_dict_to_flax(state, template, "qwen3")


def padded(lengths, width, left=False, seed=0, vocab=300):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for i, n in enumerate(lengths):
        span = slice(width - n, width) if left else slice(0, n)
        ids[i, span] = rng.integers(3, vocab, n)
        mask[i, span] = 1
    return ids, mask


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    """A sentence-transformers directory: the random Qwen3, the tokenizer, last-token pooling, Normalize, prompts."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    root = tmp_path_factory.mktemp("qwen3")
    tokenizer = build_tokenizer()
    model = hf_model(len(tokenizer))
    hf_dir = str(root / "hf")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=MAX_SEQ_LENGTH)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), "lasttoken"), Normalize()]
    path = str(root / "st")
    SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu").save(path)
    return path


# ------------------------------------------------------------------------------------------ the module

def test_token_embeddings_match_hugging_face_both_paddings():
    """Right and left padding (Hugging Face's positions count along the row either way), every layer's
    hidden states, and an exact, complete state-dict round trip."""
    model = hf_model(300)
    lengths, width = [12, 5, 1, 9], 12
    for left in (False, True):
        ids, mask = padded(lengths, width, left=left)
        config, module, params = to_jax(model, ids, mask)
        with torch.no_grad():
            out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                        output_hidden_states=True)
        ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), all_layers=True))
        ref = np.stack([h.numpy() for h in out.hidden_states])
        assert ours.shape == ref.shape == (3, 4, width, 48)
        real = mask.astype(bool)
        diff = float(np.abs(ours[:, real] - ref[:, real]).max())
        assert diff < 1e-5, f"left={left}: max abs diff {diff}"
        np.testing.assert_array_equal(ours[-1], np.asarray(module.apply({"params": params}, jnp.asarray(ids),
                                                                        jnp.asarray(mask))))
    back = hf.flax_to_state_dict(params)
    state = model.state_dict()
    assert set(back) == set(state) and "layers.1.self_attn.k_norm.weight" in back
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key].numpy(), err_msg=key)


def test_packed_sentences_are_causal_and_separate():
    """Sentences packed in a row (segment ids, positions restarting at 0) give what each gives alone; a token
    never sees later tokens: changing the last token leaves the others as they were."""
    model = hf_model(300, seed=1)
    ids, mask = padded([7, 4], 7, seed=3)
    config, module, params = to_jax(model, ids, mask)
    apply = lambda *a, **k: np.asarray(module.apply({"params": params}, *map(jnp.asarray, a), **k))
    separate = apply(ids, mask)
    packed_ids = np.zeros((1, 13), np.int32)
    packed_ids[0, :7], packed_ids[0, 7:11] = ids[0], ids[1, :4]
    segments = np.array([[1] * 7 + [2] * 4 + [0] * 2], np.int32)
    positions = np.array([list(range(7)) + list(range(4)) + [0, 0]], np.int32)
    packed = apply(packed_ids, segments, position_ids=jnp.asarray(positions))
    np.testing.assert_allclose(packed[0, :7], separate[0, :7], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:11], separate[1, :4], atol=1e-5)
    changed = ids.copy()
    changed[0, 6] = (changed[0, 6] + 1) % 300
    after = apply(changed, mask)
    np.testing.assert_array_equal(after[0, :6], separate[0, :6])
    assert np.abs(after[0, 6] - separate[0, 6]).max() > 1e-3


def test_remat_dropout_and_padding_row_gradient():
    """Attention dropout and rematerialised layers run and give finite gradients; with pad_token_id set, the
    padding token's embedding row gets no gradient (torch's Embedding(padding_idx))."""
    config = qwen3.Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_dropout=0.2,
                               pad_token_id=0)
    module = qwen3.Qwen3Model(config, remat=True)
    ids = jnp.asarray([[5, 6, 0, 7], [8, 0, 0, 0]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]], jnp.int32)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, mask)["params"]

    def loss(p, deterministic):
        out = module.apply({"params": p}, ids, mask, deterministic=deterministic, rngs={"dropout": jax.random.PRNGKey(1)})
        return out[..., :3].sum()          # not (out ** 2).mean(): the final RMSNorm makes that ~1

    grads = jax.jit(jax.grad(loss), static_argnums=1)(params, False)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.abs(grads["embed_tokens"]["embedding"][0]).max()) == 0.0
    assert float(jnp.abs(grads["embed_tokens"]["embedding"][5]).max()) > 0.0
    value = jax.jit(loss, static_argnums=1)
    assert abs(float(value(params, False)) - float(value(params, True))) > 1e-6


def test_config_round_trips_through_hugging_face():
    hf_config = transformers.Qwen3Config(vocab_size=300, eos_token_id=0, **SMALL)
    config = qwen3.Qwen3Config.from_hf_dict(hf_config.to_dict())
    assert (config.num_key_value_heads, config.head_dim, config.rope_theta) == (2, 16, 1e6)
    d = families.hf_config_dict("qwen3", config)
    assert d["model_type"] == "qwen3" and d["architectures"] == ["Qwen3Model"]
    rebuilt = transformers.AutoConfig.for_model(**d)
    assert type(rebuilt) is type(hf_config)
    for key in ("vocab_size", "hidden_size", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_parameters",
                "intermediate_size", "max_position_embeddings", "layer_types", "eos_token_id"):
        assert getattr(rebuilt, key) == getattr(hf_config, key), key
    assert qwen3.Qwen3Config.from_hf_dict(d) == config
    # a transformers 4 config.json (Qwen3-Embedding-0.6B's keys)
    old = {"model_type": "qwen3", "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 8,
           "head_dim": 128, "num_hidden_layers": 28, "intermediate_size": 3072, "rope_theta": 1000000,
           "rope_scaling": None, "sliding_window": None, "use_sliding_window": False, "vocab_size": 151669}
    assert qwen3.Qwen3Config.from_hf_dict(old).rope_theta == 1e6
    with pytest.raises(ValueError, match="sliding-window"):
        qwen3.Qwen3Config.from_hf_dict({**old, "use_sliding_window": True})
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported"):
        qwen3.Qwen3Config.from_hf_dict({**old, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="num_attention_heads=6 is not a multiple of num_key_value_heads=4"):
        qwen3.Qwen3Config(num_attention_heads=6, num_key_value_heads=4)


def test_last_token_pooling_left_right_and_packed():
    """lasttoken pools the last real token of each sentence: right-padded, left-padded and packed rows."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), jnp.float32)
    config = PoolingConfig(3, ("lasttoken",))
    right = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = jnp.asarray([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(pool(x, right, config), jnp.stack([x[0, 2], x[1, 4]]))
    np.testing.assert_array_equal(pool(x, left, config), jnp.stack([x[0, 4], x[1, 4]]))
    segments = jnp.asarray([[1, 1, 2, 2, 2], [1, 2, 2, 0, 0]])
    positions = jnp.asarray([[0, 1, 0, 1, 2], [0, 0, 1, 0, 0]])
    got = pool_segments(x, segments, positions, config, max_segments=2)
    np.testing.assert_allclose(got, jnp.stack([x[0, 1], x[0, 4], x[1, 0], x[1, 2]]), atol=1e-6)


# ------------------------------------------------------------------ sentence-transformers, both directions

def _st(path, padding_side="left"):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    model.tokenizer.padding_side = padding_side
    return model


def test_tokenization_matches_the_hugging_face_tokenizer(st_dir):
    """Our token ids are the tokenizer's: EOS appended, truncation keeps it, prompts prepended."""
    encoder = SentenceEncoder.from_pretrained(st_dir)
    model = _st(st_dir)
    eos = encoder.tokenizer.hf.convert_tokens_to_ids(EOS)
    assert encoder.tokenizer.hf.padding_side == "left" and encoder.prompts["query"] == PROMPTS["query"]
    texts = TEXTS + [PROMPTS["query"] + t for t in TEXTS]
    features = model.preprocess(texts)
    ours = encoder.tokenizer(texts)
    for ids, row, row_mask in zip(ours, features["input_ids"].numpy(), features["attention_mask"].numpy()):
        assert list(row[row_mask.astype(bool)]) == ids and ids[-1] == eos
    assert features["attention_mask"][:, -1].all()          # left padding
    full = encoder.tokenizer.token_counts(texts)
    assert [len(ids) for ids in ours] == [min(n, MAX_SEQ_LENGTH) for n in full]
    assert full[len(TEXTS) - 1] > MAX_SEQ_LENGTH and sum(n <= MAX_SEQ_LENGTH for n in full) > len(TEXTS) + 4


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_embeddings_match_sentence_transformers(st_dir, packing, prompt_name):
    encoder = SentenceEncoder.from_pretrained(st_dir, packing=packing, pack_length=48)
    ids = encoder.tokenizer(TEXTS)
    batches = list(encoder._plan_batches(ids, np.argsort([-len(t) for t in ids], kind="stable"), 4))
    assert any("slots" in f for _, f in batches) == packing
    ours = encoder.encode(TEXTS, batch_size=4, prompt_name=prompt_name)
    for side in ("left", "right"):
        theirs = _st(st_dir, side).encode(TEXTS, batch_size=4, prompt_name=prompt_name)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"{side} padding")
    if prompt_name:      # the prompt changes the embeddings
        assert np.abs(ours - encoder.encode(TEXTS, batch_size=4)).max() > 1e-3


@pytest.mark.parametrize("packing", [False, True])
def test_mnrl_value_and_gradients_match_sentence_transformers(st_dir, packing):
    """MultipleNegativesRankingLoss on (query with prompt, document) pairs: the value and the gradient of every
    Qwen3 parameter within 1e-5 of sentence-transformers' (padded on the left there; right-padded or packed here)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from jaxsbert.data.buckets import pad_token_ids
    from jaxsbert.data.packing import pack_token_ids
    from jaxsbert.losses import get_loss
    from jaxsbert.models.sentence_model import SentenceModel
    from jaxsbert.training.step import make_embed_fn

    queries = [PROMPTS["query"] + t for t in TEXTS[:4]]
    documents = TEXTS[6:10]
    model = _st(st_dir)
    value = MultipleNegativesRankingLoss(model)([model.preprocess(queries), model.preprocess(documents)], None)
    value.backward()
    theirs = {name: p.grad.numpy() for name, p in model[0].model.named_parameters()}

    encoder = SentenceEncoder.from_pretrained(st_dir)
    columns = [encoder.tokenizer(queries), encoder.tokenizer(documents)]
    if packing:
        features = pack_token_ids(columns[0] + columns[1], rows=6, row_length=96, max_segments=8,
                                  pad_id=encoder.tokenizer.pad_token_id, sentence_ids=np.arange(8))
        features["slots"] = features["slots"].reshape(2, 4).T            # [pairs, columns]
    else:
        features = tuple(pad_token_ids(c, 96, 4, encoder.tokenizer.pad_token_id) for c in columns)
    loss = get_loss("MultipleNegativesRankingLoss")
    embed_fn = make_embed_fn(SentenceModel(encoder.config, max_segments=8), dropout=False)
    ours, (grads, _) = jax.jit(lambda p: loss.value_and_grad(embed_fn, p, {}, features, None, np.ones(4, bool)))(
        encoder.params)
    assert abs(float(ours) - value.item()) < 1e-5
    ours_grads = hf.flax_to_state_dict(grads["transformer"])
    assert set(ours_grads) == set(theirs)
    scale = max(float(np.abs(g).max()) for g in theirs.values())
    for name, g in theirs.items():
        np.testing.assert_allclose(ours_grads[name], g, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_a_non_causal_mask_fails_the_comparison(st_dir, monkeypatch):
    """The comparison above sees the causal mask: bidirectional attention moves the embeddings."""
    theirs = _st(st_dir).encode(TEXTS[:4])
    monkeypatch.setattr(qwen3, "causal_segment_bias", lambda seg: jnp.where(
        seg[:, None, None, :] == seg[:, None, :, None], 0.0, jnp.finfo(jnp.float32).min))
    ours = SentenceEncoder.from_pretrained(st_dir, packing=False).encode(TEXTS[:4])
    assert np.abs(ours - theirs).max() > 1e-3


def test_export_loads_in_sentence_transformers_and_automodel(st_dir, tmp_path):
    encoder = SentenceEncoder.from_pretrained(st_dir)
    out = str(tmp_path / "export")
    encoder.save_pretrained(out)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model_type"] == "qwen3" and config["architectures"] == ["Qwen3Model"]
    assert json.load(open(os.path.join(out, "config_sentence_transformers.json")))["prompts"]["query"] == PROMPTS["query"]
    ours = encoder.encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(_st(out).encode(TEXTS, prompt_name="query"), ours, atol=1e-5)
    np.testing.assert_allclose(SentenceEncoder.from_pretrained(out).encode(TEXTS, prompt_name="query"), ours,
                               atol=1e-6)
    auto = transformers.AutoModel.from_pretrained(out).eval()
    assert type(auto).__name__ == "Qwen3Model"
    reference = transformers.AutoModel.from_pretrained(os.path.join(st_dir)).eval()
    ids, mask = padded([9, 4], 9, left=True)
    with torch.no_grad():
        a = auto(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state
        b = reference(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state
    np.testing.assert_array_equal(a.numpy()[mask.astype(bool)], b.numpy()[mask.astype(bool)])


def test_a_causal_lm_checkpoint_pools_its_last_token_as_sentence_transformers(tmp_path):
    """A plain Hugging Face Qwen3ForCausalLM directory (``model.`` keys, an untied ``lm_head``): sentence-transformers
    pools it by the last token; so do we (with the LM head left out)."""
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    tokenizer = build_tokenizer()
    torch.manual_seed(2)
    config = transformers.Qwen3Config(vocab_size=len(tokenizer), tie_word_embeddings=False, **SMALL)
    model = transformers.Qwen3ForCausalLM(config).eval()
    model.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    assert "lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))
    encoder = SentenceEncoder.from_pretrained(str(tmp_path))
    assert encoder.config.modules[0].modes == ("lasttoken",)
    theirs = SentenceTransformer(str(tmp_path), device="cpu")
    assert theirs[1].pooling_mode == "lasttoken"
    np.testing.assert_allclose(encoder.encode(TEXTS[:6]), theirs.encode(TEXTS[:6]), atol=1e-5)


# ----------------------------------------------------------------------------- prompts in the data, CLI

def test_dataset_prompts_prefix_input_columns():
    import datasets

    from jaxsbert.data import load_dataset

    ds = datasets.Dataset.from_dict({"anchor": ["a1", "a2"], "positive": ["p1", "p2"], "score": [0.5, 1.0]})
    from jaxsbert.data.loading import add_prompts

    out = add_prompts(ds, {"anchor": "Instruct: x\nQuery:"})
    assert out["anchor"] == ["Instruct: x\nQuery:a1", "Instruct: x\nQuery:a2"] and out["positive"] == ["p1", "p2"]
    assert add_prompts(ds, "q: ")["positive"] == ["q: p1", "q: p2"] and add_prompts(ds, "q: ")["score"] == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"names column\(s\) \['anchr'\] that are not input columns"):
        add_prompts(ds, {"anchr": "q: "})
    dev = load_dataset({"source": "demo", "split": "dev", "limit": 3, "prompts": {"sentence1": "q: "}})
    plain = load_dataset({"source": "demo", "split": "dev", "limit": 3})
    assert dev["sentence1"] == ["q: " + t for t in plain["sentence1"]] and dev["sentence2"] == plain["sentence2"]
    from jaxsbert.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=r"unknown config key 'prompts'; did you mean data.train.<dataset>.prompts"):
        build_config(base={"prompts": {"anchor": "q: "}})      # sentence-transformers' training argument


def test_cli_trains_qwen3_with_mnrl_prompts_and_resumes(st_dir, tmp_path):
    """MNRL on the demo pairs through ``jaxsbert train`` with a query instruction on the first column (training
    and evaluation): the loss goes down, and a run stopped after 3 steps and resumed with --resume ends with the
    checkpoint of the run that was not stopped; the saved model loads in sentence-transformers."""
    from helpers import cli_train_stop_resume

    prompts = {"sentence1": PROMPTS["query"]}
    config = {"model": st_dir, "loss": {"name": "MultipleNegativesRankingLoss"}, "batch_size": 8, "max_steps": 6,
              "data": {"train": {"demo": {"source": "demo", "columns": ["sentence1", "sentence2"], "limit": 24,
                                          "prompts": prompts}},
                       "eval": {"dev": {"type": "similarity", "source": "demo", "split": "dev", "limit": 16,
                                        "prompts": prompts}}},
              "optim": {"lr": 2e-3, "warmup_ratio": 0.0}, "log_every": 1, "eval_before": False, "tensorboard": False,
              "checkpoint": {"every_steps": 3, "keep": 2, "async": False}}
    metrics = cli_train_stop_resume(config, tmp_path)
    losses = [m["loss"] for m in metrics if m["kind"] == "train"]
    assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert any("dev_spearman_cosine" in m for m in metrics), metrics[-1]
    full = str(tmp_path / "full")
    trained = SentenceEncoder.from_pretrained(os.path.join(full, "model"))
    assert trained.config.family == "qwen3" and trained.prompts["query"] == PROMPTS["query"]
    theirs = _st(os.path.join(full, "model")).encode(TEXTS[:4], prompt_name="query")
    np.testing.assert_allclose(trained.encode(TEXTS[:4], prompt_name="query"), theirs, atol=1e-5)
