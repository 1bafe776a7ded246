"""Encoder families (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, MPNet) against Hugging Face's PyTorch models.

Small random models built with transformers' config classes; no hub access.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxsbert.interop import hf  # noqa: E402
from jaxsbert.models import families, mpnet  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
HF_CONFIGS = {
    "bert": lambda: transformers.BertConfig(vocab_size=120, **SMALL),
    "roberta": lambda: transformers.RobertaConfig(vocab_size=120, max_position_embeddings=40, type_vocab_size=1,
                                                  layer_norm_eps=1e-5, hidden_act="gelu_new", **SMALL),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(vocab_size=120, max_position_embeddings=40,
                                                         type_vocab_size=1, **SMALL),
    "distilbert": lambda: transformers.DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=37),
    "mpnet": lambda: transformers.MPNetConfig(vocab_size=120, max_position_embeddings=300, **SMALL),
}


def perturbed_hf_model(family, seed=0):
    """A random Hugging Face model with every parameter (LayerNorm and biases too) away from its init value."""
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(HF_CONFIGS[family]()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def to_jax(family, model, ids, mask):
    fam = families.FAMILIES[family]
    config = fam.config_cls.from_hf_dict(model.config.to_dict())
    module = fam.module(config)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))["params"]
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return config, module, hf.state_dict_to_flax(state, template, family)


def padded_batch(lengths, width, pad_id, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), width), pad_id, np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, 120, n)
        mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_token_embeddings_match_hugging_face(family):
    model = perturbed_hf_model(family)
    # MPNet: one row longer than 128 tokens, so relative distances reach the last (clamped) bucket
    lengths, width = ([150, 5, 1, 9], 160) if family == "mpnet" else ([12, 5, 1, 9], 12)
    ids, mask = padded_batch(lengths, width, model.config.pad_token_id)
    config, module, params = to_jax(family, model, ids, mask)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    out = np.asarray(module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    diff = max(float(np.abs(out[i, :n] - ref[i, :n]).max()) for i, n in enumerate(lengths))
    assert diff < 1e-5, f"{family}: max abs diff {diff}"
    # the state dict round trip is exact and complete
    back = hf.flax_to_state_dict(params)
    state = model.state_dict()
    assert set(back) == set(state)
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key].numpy(), err_msg=key)


@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_packed_segments_equal_separate_rows(family):
    """attention_mask as segment ids + restarting position_ids: two packed sentences = two padded rows."""
    model = perturbed_hf_model(family, seed=1)
    pad = model.config.pad_token_id
    ids, mask = padded_batch([7, 4], 7, pad, seed=3)
    config, module, params = to_jax(family, model, ids, mask)
    apply = module.apply
    separate = np.asarray(apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    packed_ids = np.full((1, 13), pad, np.int32)
    packed_ids[0, :7], packed_ids[0, 7:11] = ids[0], ids[1, :4]
    segments = np.array([[1] * 7 + [2] * 4 + [0] * 2], np.int32)
    positions = np.array([list(range(7)) + list(range(4)) + [0, 0]], np.int32)
    packed = np.asarray(apply({"params": params}, jnp.asarray(packed_ids), jnp.asarray(segments),
                                     position_ids=jnp.asarray(positions)))
    np.testing.assert_allclose(packed[0, :7], separate[0, :7], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:11], separate[1, :4], atol=1e-5)


def test_mpnet_relative_buckets_match_hugging_face():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    rel = np.arange(-600, 601)
    ref = MPNetEncoder.relative_position_bucket(torch.tensor(rel)).numpy()
    np.testing.assert_array_equal(np.asarray(mpnet.relative_position_bucket(jnp.asarray(rel))), ref)


@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_config_round_trips_through_hugging_face(family):
    hf_config = HF_CONFIGS[family]()
    fam = families.FAMILIES[family]
    config = fam.config_cls.from_hf_dict(hf_config.to_dict())
    d = families.hf_config_dict(family, config)
    assert d["model_type"] == family and d["architectures"] == [fam.hf_architecture]
    rebuilt = transformers.AutoConfig.for_model(**d)
    assert type(rebuilt) is type(hf_config)
    for key, value in d.items():
        if key not in ("architectures", "model_type"):
            assert getattr(rebuilt, key) == getattr(hf_config, key), key
    assert fam.config_cls.from_hf_dict(d) == config


def test_roberta_and_mpnet_max_sequence_tokens_account_for_the_padding_offset():
    roberta = families.FAMILIES["roberta"].config_cls.from_hf_dict({"max_position_embeddings": 514, "pad_token_id": 1})
    assert roberta.max_sequence_tokens == 512
    assert families.FAMILIES["mpnet"].config_cls(max_position_embeddings=514).max_sequence_tokens == 512


def test_unsupported_options_are_errors():
    with pytest.raises(ValueError, match="sinusoidal"):
        families.FAMILIES["distilbert"].config_cls.from_hf_dict({"sinusoidal_pos_embds": True})
    with pytest.raises(ValueError, match="position_embedding_type"):
        families.FAMILIES["roberta"].config_cls.from_hf_dict({"position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="hidden_act"):
        families.FAMILIES["mpnet"].config_cls.from_hf_dict({"hidden_act": "mish"})
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not supported; supported: \['bert', 'distilbert'"):
        families.family_for("gpt2", "x/config.json")


def test_families_train_with_dropout_and_remat():
    """Every module runs with dropout on and rematerialised layers, and its gradient is finite."""
    ids, mask = padded_batch([6, 3], 6, 1)
    for family in sorted(HF_CONFIGS):
        fam = families.FAMILIES[family]
        config = fam.config_cls.from_hf_dict(HF_CONFIGS[family]().to_dict())
        module = fam.module(config, remat=True)
        params = module.init(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask))["params"]

        def loss(p):
            out = module.apply({"params": p}, jnp.asarray(ids), jnp.asarray(mask), deterministic=False,
                               rngs={"dropout": jax.random.PRNGKey(1)})
            return (out ** 2).mean()

        grads = jax.grad(loss)(params)   # eager: compiling costs more than running these tiny models
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads)), family
        if dataclasses.is_dataclass(config) and hasattr(config, "add_pooling_layer"):
            assert "pooler" in params
