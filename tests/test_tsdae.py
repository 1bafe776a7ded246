"""DenoisingAutoEncoderLoss (TSDAE) and its noise against sentence-transformers 6.3; training with it."""
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import save_tiny_model, write_jsonl
from jaxsbert.data.noise import add_noise, delete, detokenize, word_tokenize
from jaxsbert.losses import DenoisingAutoEncoderLoss, get_loss

TRICKY = ['He said, "I can\'t go -- it\'s (really) late..." and left!', "“Smart quotes” and ‘single’ — dashes",
          "Gimme $3.88; 50% off #tag @me", "'Tis the season. Wanna go?", "I'd've done it: 3,000 times [sic].",
          "one", "two words", "", "   "]


def _sentences(shared_data, n):
    out = []
    with open(shared_data / "stsbenchmark" / "sts-dev.csv", encoding="utf8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            out += [cols[5], cols[6]]
    return out[:n]


# ------------------------------------------------------------------------------------------------ noise

@pytest.fixture
def nltk_one_line(monkeypatch):
    """nltk with ``word_tokenize`` on one line (Punkt's sentence data is not installed here)."""
    nltk = pytest.importorskip("nltk")
    whole = nltk.word_tokenize
    monkeypatch.setattr(nltk, "word_tokenize", lambda text, language="english", preserve_line=False:
                        whole(text, language, True))
    return nltk


def test_tokenizer_and_detokenizer_are_nltks(nltk_one_line, shared_data):
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    tokenizer, detokenizer = NLTKWordTokenizer(), TreebankWordDetokenizer()
    for text in _sentences(shared_data, 1000) + TRICKY:
        words = tokenizer.tokenize(text)
        assert word_tokenize(text) == words, text
        assert detokenize(words) == detokenizer.detokenize(words), text
        assert detokenize(words[::2]) == detokenizer.detokenize(words[::2]), text


@pytest.mark.parametrize("seed,del_ratio", [(0, 0.6), (7, 0.3), (3, 0.95)])
def test_noise_equals_sentence_transformers(nltk_one_line, shared_data, seed, del_ratio):
    """ST's DenoisingAutoEncoderDataset.delete on numpy's global state seeded with ``seed`` == add_noise(seed)."""
    from sentence_transformers.sentence_transformer.datasets import DenoisingAutoEncoderDataset

    texts = _sentences(shared_data, 300) + TRICKY
    np.random.seed(seed)
    expected = [DenoisingAutoEncoderDataset.delete(t, del_ratio=del_ratio) for t in texts]
    noisy = add_noise(texts, del_ratio=del_ratio, seed=seed)
    assert noisy.column_names == ["noisy", "text"]
    assert list(noisy["noisy"]) == expected and list(noisy["text"]) == texts


def test_noise_statistics_and_errors(shared_data):
    import datasets

    texts = _sentences(shared_data, 400)
    words = sum(len(word_tokenize(t)) for t in texts)
    kept = sum(len(word_tokenize(t)) for t in add_noise(texts, seed=1)["noisy"])
    assert 0.35 < kept / words < 0.45                       # keep probability 1 - 0.6 (plus one word per empty draw)
    assert list(add_noise(texts, seed=1)["noisy"]) == list(add_noise(texts, seed=1)["noisy"])
    assert list(add_noise(texts, seed=1)["noisy"]) != list(add_noise(texts, seed=2)["noisy"])
    assert all(len(word_tokenize(t)) == 1 for t in add_noise(texts[:50], del_ratio=1.0)["noisy"])
    assert list(add_noise(["A man plays a guitar."], del_ratio=0.0)["noisy"]) == ["A man plays a guitar."]
    assert delete("", rng=np.random.RandomState(0)) == ""

    ds = datasets.Dataset.from_dict({"sentence": texts[:4], "id": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match=r"columns \['sentence', 'id'\]; name the text column"):
        add_noise(ds)
    out = add_noise(ds, column="sentence")
    assert out.column_names == ["noisy", "sentence"] and list(out["sentence"]) == texts[:4]
    with pytest.raises(ValueError, match="row 1: expected a string"):
        add_noise(["ok", None])
    with pytest.raises(ValueError, match=r"del_ratio must be in \[0, 1\]"):
        add_noise(texts, del_ratio=1.5)


# ------------------------------------------------------------------------------------- loss parity

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("tsdae")
    return (save_tiny_model(str(root / "model"), minilm_path, dropout=0.0),
            save_tiny_model(str(root / "decoder"), minilm_path, seed=1, dropout=0.0))


ORIGINAL = ["A man is playing a guitar on the stage.", "The cat sat.",
            "Two dogs run through a field of tall grass on a sunny day"]
DAMAGED = ["man playing guitar", "cat", "dogs field grass day"]


def _features(token_ids, length, rows=None):
    rows = rows or len(token_ids)
    ids = np.zeros((rows, length), np.int32)
    for i, row in enumerate(token_ids):
        ids[i, :len(row)] = row
    return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray((ids != 0).astype(np.int32))}


def _st_loss(tiny_models, tie):
    torch = pytest.importorskip("torch")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss as STLoss

    model_dir, decoder_dir = tiny_models
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    if tie:
        return STLoss(model, tie_encoder_decoder=True)
    return STLoss(model, decoder_name_or_path=decoder_dir, tie_encoder_decoder=False)


def _st_value_and_grads(st_loss):
    model = st_loss.encoder
    value = st_loss([model.tokenize(DAMAGED), model.tokenize(ORIGINAL)], None)
    value.backward()
    return float(value.detach()), {n: p.grad.numpy() for n, p in st_loss.named_parameters() if p.grad is not None}


def _ours(tiny_models, tie):
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.models.sentence_model import SentenceModel
    from jaxsbert.training.step import make_embed_fn

    encoder = SentenceEncoder.from_pretrained(tiny_models[0])
    loss = DenoisingAutoEncoderLoss() if tie else DenoisingAutoEncoderLoss(tiny_models[1], tie_encoder_decoder=False)
    loss.setup(encoder)
    return encoder, loss, make_embed_fn(SentenceModel(encoder.config), dropout=False)


@pytest.mark.parametrize("tie", [True, False])
def test_value_and_gradients_equal_sentence_transformers(tiny_models, tie):
    """Same weights (the torch decoder's newly initialised ones copied into the head): the value and the gradients
    wrt the model's parameters and the decoder's agree to 1e-5 relative. The loss's parameters are the model's
    plus the head (tie: each layer's cross-attention and cls.predictions; no tie: the whole decoder)."""
    from jaxsbert.interop import hf

    st_loss = _st_loss(tiny_models, tie)
    st_value, st_grads = _st_value_and_grads(st_loss)
    encoder, loss, embed_fn = _ours(tiny_models, tie)
    head = loss.head_from_state_dict(st_loss.state_dict())
    damaged, original = encoder.tokenizer(DAMAGED), encoder.tokenizer(ORIGINAL)
    value, (g_params, g_head) = jax.jit(lambda p, h: loss.value_and_grad(
        embed_fn, p, h, (_features(damaged, 16), _features(original, 24))))(encoder.params, head)
    assert float(value) == pytest.approx(st_value, rel=1e-5)

    ours = {f"encoder.0.model.{k}": v for k, v in hf.flax_to_state_dict(g_params["transformer"]).items()}
    ours.update(loss.head_state_dict(g_head))
    st_names = {n for n, _ in st_loss.named_parameters()}
    assert set(ours) == st_names                     # the same parameters, tied ones once
    scale = max(float(np.abs(g).max()) for g in st_grads.values())
    for name, grad in st_grads.items():
        # entries that are 0 in exact arithmetic (the key biases; the cross-attention's queries and keys, whose
        # one key gets probability 1) are rounding noise in torch, 0 here: the absolute floor covers them
        np.testing.assert_allclose(ours[name], grad, rtol=1e-5, atol=1e-6 * scale, err_msg=name)
    for name in st_names - set(st_grads):            # no gradient in torch (the pooler): none here either
        assert not np.any(ours[name]), name
    n_head = len(jax.tree_util.tree_leaves(head))
    assert n_head == (sum(k.startswith("decoder.") for k in st_names))
    if tie:   # each layer's cross-attention (10 tensors) and cls.predictions (5)
        assert n_head == 2 * 10 + 5


def test_padding_rows_and_longer_rows_change_nothing(tiny_models):
    encoder, loss, embed_fn = _ours(tiny_models, tie=True)
    head = loss.init_head(jax.random.PRNGKey(0), 32)
    damaged, original = encoder.tokenizer(DAMAGED), encoder.tokenizer(ORIGINAL)
    fn = jax.jit(lambda f, m: loss.value_and_grad(embed_fn, encoder.params, head, f, None, m))
    plain = fn((_features(damaged, 16), _features(original, 24)), None)
    padded = fn((_features(damaged, 24, rows=5), _features(original, 40, rows=5)),
                jnp.asarray([True, True, True, False, False]))
    assert float(padded[0]) == pytest.approx(float(plain[0]), rel=1e-6)
    scale = max(float(np.abs(a).max()) for a in jax.tree_util.tree_leaves(plain[1]))
    for a, b in zip(jax.tree_util.tree_leaves(plain[1]), jax.tree_util.tree_leaves(padded[1])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7 * scale)


def test_head_initialisation_and_errors(tiny_models):
    from jaxsbert.encoder import SentenceEncoder

    encoder, loss, embed_fn = _ours(tiny_models, tie=True)
    head = loss.init_head(jax.random.PRNGKey(3), 32)
    cross = head["bert"]["encoder"]["layer_0"]["crossattention"]
    assert set(head) == {"bert", "cls"} and set(head["bert"]["encoder"]) == {"layer_0", "layer_1"}
    assert 0.015 < float(jnp.std(cross["self"]["query"]["kernel"])) < 0.025          # normal(0, 0.02)
    assert not np.any(cross["self"]["query"]["bias"]) and np.all(cross["output"]["LayerNorm"]["scale"] == 1)
    assert not np.any(head["cls"]["predictions"]["bias"]) and head["cls"]["predictions"]["bias"].shape == (30522,)
    # without ties the whole decoder is the head, loaded from its checkpoint (the cross-attention is new)
    _, untied, _ = _ours(tiny_models, tie=False)
    decoder_head = untied.init_head(jax.random.PRNGKey(3), 32)
    decoder = SentenceEncoder.from_pretrained(tiny_models[1]).params["transformer"]
    np.testing.assert_array_equal(decoder_head["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  decoder["embeddings"]["word_embeddings"]["embedding"])

    # a checkpoint with a language-model head (BertForMaskedLM's cls.*) initialises cls from it, as transformers does
    import shutil
    from safetensors.numpy import load_file, save_file
    mlm = shutil.copytree(tiny_models[0], os.path.join(os.path.dirname(tiny_models[0]), "mlm"), dirs_exist_ok=True)
    state = load_file(os.path.join(mlm, "model.safetensors"))
    rng = np.random.default_rng(0)
    lm_head = {"cls.predictions.bias": rng.normal(size=30522), "cls.predictions.transform.dense.weight":
               rng.normal(size=(32, 32)), "cls.predictions.transform.LayerNorm.gamma": rng.normal(size=32)}
    save_file({**state, **{k: v.astype(np.float32) for k, v in lm_head.items()}}, os.path.join(mlm, "model.safetensors"))
    with pytest.warns(UserWarning, match="unused weights"):
        mlm_encoder = SentenceEncoder.from_pretrained(mlm)
    mlm_head = DenoisingAutoEncoderLoss().init_head(jax.random.PRNGKey(3), 32, encoder=mlm_encoder)["cls"]["predictions"]
    np.testing.assert_array_equal(mlm_head["bias"], lm_head["cls.predictions.bias"].astype(np.float32))
    np.testing.assert_array_equal(mlm_head["transform"]["dense"]["kernel"],
                                  lm_head["cls.predictions.transform.dense.weight"].astype(np.float32).T)
    np.testing.assert_array_equal(mlm_head["transform"]["LayerNorm"]["scale"],
                                  lm_head["cls.predictions.transform.LayerNorm.gamma"].astype(np.float32))
    assert not np.any(mlm_head["transform"]["dense"]["bias"])               # not in the checkpoint: new

    with pytest.raises(ValueError, match="tie_encoder_decoder=False needs decoder_name_or_path"):
        get_loss("DenoisingAutoEncoderLoss", tie_encoder_decoder=False)
    with pytest.raises(ValueError, match="embeddings have dimension 16 but the decoder's hidden size is 32"):
        loss.init_head(jax.random.PRNGKey(0), 16)
    with pytest.raises(ValueError, match="needs the model it trains"):
        DenoisingAutoEncoderLoss().init_head(jax.random.PRNGKey(0), 32)
    other = types.SimpleNamespace(config=types.SimpleNamespace(family="mpnet"), source="x/mpnet", tokenizer=encoder.tokenizer)
    with pytest.raises(ValueError, match=r"model 'x/mpnet'.*model_type 'mpnet'.*\['bert'\] models only"):
        DenoisingAutoEncoderLoss().setup(other)
    with pytest.raises(ValueError, match="decodes the original sentences' token ids"):
        loss(head, (jnp.zeros((2, 32)), jnp.zeros((2, 32))))
    packed = {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32),
              "position_ids": jnp.zeros((1, 8), jnp.int32), "slots": jnp.zeros((1, 3), jnp.int32)}
    with pytest.raises(ValueError, match=r"\(damaged_sentence, original_sentence\).*got \(3,\) column"):
        loss.value_and_grad(embed_fn, encoder.params, head, packed)

    from jaxsbert.training.loop import _packing
    assert _packing("auto", {"tsdae": loss}) == {"tsdae": True}


@pytest.mark.parametrize("rows,row_length", [(2, 40), (6, 16)])
def test_packed_batch_equals_the_padded_batch(tiny_models, rows, row_length):
    """The packed batch's value and gradients (model and head) equal the padded batch's: pairs sharing rows
    (2 rows of 40 tokens) or spread over rows (6 of 16), a padding row masked out (its slots point at the first
    sentence's, as the loader's do)."""
    from jaxsbert.data.batching import pack_rows

    encoder, loss, embed_fn = _ours(tiny_models, tie=True)
    head = loss.init_head(jax.random.PRNGKey(0), 32)
    head["cls"]["predictions"]["bias"] = jax.random.normal(jax.random.PRNGKey(1), (30522,))   # no zero gradients by luck
    damaged, original = encoder.tokenizer(DAMAGED), encoder.tokenizer(ORIGINAL)
    fn = jax.jit(lambda f, m: loss.value_and_grad(embed_fn, encoder.params, head, f, None, m))
    mask = jnp.asarray([True, True, True, False])
    padded = fn((_features(damaged, 24, rows=4), _features(original, 24, rows=4)), mask)
    features = pack_rows([damaged, original], np.arange(3), 4, rows, row_length, embed_fn.max_segments)
    features = {k: jnp.asarray(v) for k, v in features.items()}
    assert int(features["attention_mask"].max()) >= 2                       # several sentences share a row
    packed = fn(features, mask)
    assert float(packed[0]) == pytest.approx(float(padded[0]), rel=1e-6)
    scale = max(float(np.abs(a).max()) for a in jax.tree_util.tree_leaves(padded[1]))
    leaves = jax.tree_util.tree_leaves_with_path(padded[1])
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(packed[1])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=jax.tree_util.keystr(path))


# ------------------------------------------------------------------------------------------- training

def _config(model, data, **over):
    from jaxsbert.config import build_config

    base = {"name": "tsdae", "model": model, "data": {"train": {"tsdae": {"source": data}}, "eval": {}},
            "loss": {"name": "DenoisingAutoEncoderLoss"}, "batch_size": 8, "epochs": 3,
            "optim": {"lr": 1e-3, "warmup_ratio": 0.1, "weight_decay": 0.0}, "log_every": 1,
            "checkpoint": {"every_steps": 4, "keep": 3, "async": False}, "tensorboard": False}
    base.update(over)
    return build_config(base=base)


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, minilm_path, shared_data, monkeypatch):
    from jaxsbert.training import loop
    from jaxsbert.training.loop import train

    plans, plan = [], loop._compact_vocab
    monkeypatch.setattr(loop, "_compact_vocab", lambda *args: plans.append(plan(*args)) or plans[-1])

    model = save_tiny_model(str(tmp_path / "model"), minilm_path)          # dropout 0.1 in the model (the decoder: none, as ST)
    pairs = add_noise(_sentences(shared_data, 24), seed=0)
    data = write_jsonl(str(tmp_path / "tsdae.jsonl"), [{"noisy": n, "text": t} for n, t in zip(pairs["noisy"],
                                                                                             pairs["text"])])
    full = train(_config(model, data), str(tmp_path / "full"))
    assert full["steps"] == 9
    losses = [json.loads(l)["loss"] for l in open(tmp_path / "full" / "metrics.jsonl")
              if json.loads(l).get("kind") == "train"]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses
    head = full["state"]["heads"]["tsdae"]
    assert not np.any(np.asarray(head["cls"]["predictions"]["bias"]) == 0)    # the decoder is trained too
    assert not os.path.exists(tmp_path / "full" / "model-loss-head-tsdae")   # the head stays in the checkpoints

    part = train(_config(model, data, stop_after_steps=5), str(tmp_path / "part"))
    assert part["stopped"] and part["steps"] == 5
    resumed = train(_config(model, data), str(tmp_path / "part"), resume=True)
    assert resumed["steps"] == 9
    assert plans == [None, None, None]               # the decoder's logits span the whole word-embedding table
    for a, b in zip(jax.tree_util.tree_leaves(full["state"]), jax.tree_util.tree_leaves(resumed["state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_noise_spec_key_makes_the_damaged_original_pairs(shared_data):
    """A dataset spec's ``noise`` gives add_noise's (damaged, original) columns, as configs/tsdae.py reads them."""
    from jaxsbert.data import add_noise, load_dataset

    spec = {"source": "stsb", "split": "train", "columns": ["sentence1"], "limit": 50, "data_root": str(shared_data)}
    noisy = load_dataset({**spec, "noise": {"del_ratio": 0.6, "seed": 3}})
    assert noisy.column_names == ["noisy", "sentence1"]
    assert noisy.to_dict() == add_noise(load_dataset(spec), del_ratio=0.6, seed=3).to_dict()
    assert noisy["noisy"] != noisy["sentence1"]
    with pytest.raises(ValueError, match="'noise' takes del_ratio and seed; got \\['ratio'\\]"):
        load_dataset({**spec, "noise": {"ratio": 0.5}})
