"""Texts through the tokenizer's chat template, as sentence-transformers 6.3 feeds a decoder embedder.

The tiny Qwen3 of tests/test_qwen3.py, its tokenizer given a Qwen-style (ChatML) chat template. sentence-
transformers 6.3 then renders every text as ``<|im_start|>user\\n{text}<|im_end|>\\n`` (a prompt as a system
message before it, no EOS appended) when the directory is in the "message" modality: a plain Hugging Face
directory, or a sentence-transformers directory whose sentence_bert_config.json names "message"; a directory
pinned to the text modality tokenizes plain text as before.
"""
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

from jaxsbert import SentenceEncoder  # noqa: E402
from jaxsbert.encoder import Tokenizer  # noqa: E402
from test_qwen3 import EOS, MAX_SEQ_LENGTH, PROMPTS, TEXTS, build_tokenizer, hf_model  # noqa: E402

QWEN_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}"
    "{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """{kind: directory}: "hf" a plain Hugging Face directory; sentence-transformers directories (last-token
    pooling, Normalize, query prompt) saved by sentence-transformers 6.3: "message" (modalities inferred: text and
    message), "generation" (message, with add_generation_prompt in processing_kwargs), "text" (pinned to text)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    root = tmp_path_factory.mktemp("chat")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = QWEN_TEMPLATE
    out = {"hf": str(root / "hf")}
    hf_model(len(tokenizer), seed=3).save_pretrained(out["hf"])
    tokenizer.save_pretrained(out["hf"])
    for kind, kwargs in (("message", {}), ("generation", {"processing_kwargs": {"chat_template": {
            "add_generation_prompt": True}}}), ("text", {"modality_config": TEXT_ONLY,
                                                        "module_output_name": "token_embeddings"})):
        transformer = Transformer(out["hf"], max_seq_length=MAX_SEQ_LENGTH, **kwargs)
        modules = [transformer, Pooling(transformer.get_embedding_dimension(), "lasttoken"), Normalize()]
        out[kind] = str(root / kind)
        SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu").save(out[kind])
    return out


def _st(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def _fed(model, texts, prompt=None):
    """The token ids sentence-transformers feeds its model for ``texts`` (padding removed)."""
    features = model.preprocess(texts, prompt=prompt)
    return [list(row[mask.astype(bool)]) for row, mask in zip(features["input_ids"].numpy(),
                                                              features["attention_mask"].numpy())]


@pytest.mark.parametrize("kind", ["message", "generation", "hf", "text"])
@pytest.mark.parametrize("prompt", [None, PROMPTS["query"]])
def test_token_ids_are_what_sentence_transformers_feeds(dirs, kind, prompt):
    model, encoder = _st(dirs[kind]), SentenceEncoder.from_pretrained(dirs[kind])
    assert ("message" in model[0].modality_config) == (kind != "text")
    assert (encoder.tokenizer.chat_format is not None) == (kind != "text")
    texts = TEXTS + [TEXTS[-1] * 2]         # the last one longer than every max_seq_length here
    theirs = _fed(model, texts, prompt)
    assert encoder.tokenizer(texts, prompt=prompt) == theirs
    hf = encoder.tokenizer.hf
    if kind == "text":
        assert all(ids[-1] == hf.convert_tokens_to_ids(EOS) for ids in theirs)
        return
    rendered = hf.decode(theirs[2])
    tail = "<|im_end|>\n" + ("<|im_start|>assistant\n" if kind == "generation" else "")
    assert rendered.endswith(tail) and "<|im_start|>user\nhel" in rendered     # "hello" (cut with the prompt)
    assert rendered.startswith(f"<|im_start|>system\n{prompt}<|im_end|>\n" if prompt else "<|im_start|>user\n")
    # the long text is cut to max_seq_length (MAX_SEQ_LENGTH; "hf": the tokenizer's 128) with the template's
    # tail written back over its last tokens
    limit = encoder.max_seq_length
    assert limit == (128 if kind == "hf" else MAX_SEQ_LENGTH)
    assert len(theirs[-1]) == limit and hf.decode(theirs[-1]).endswith(tail)
    assert encoder.tokenizer.token_counts(texts[-1:], prompt)[0] > limit
    # the plain tokenization (the tokenizer without the directory's modality) is not what the model is fed
    plain = Tokenizer(encoder.tokenizer.hf.name_or_path, limit)
    assert plain.chat_format is None and plain(texts, prompt=prompt) != theirs


@pytest.mark.parametrize("kind", ["message", "text"])
@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_embeddings_match_sentence_transformers(dirs, kind, prompt_name):
    theirs = _st(dirs[kind]).encode(TEXTS, batch_size=4, prompt_name=prompt_name)
    encoder = SentenceEncoder.from_pretrained(dirs[kind], pack_length=96)
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=4, prompt_name=prompt_name), theirs, atol=1e-5)


def test_plain_hugging_face_directory_with_a_prompt(dirs):
    """A plain directory (mean pooling) in message mode, prompt as a system message; output_value=None's ids."""
    model, encoder = _st(dirs["hf"]), SentenceEncoder.from_pretrained(dirs["hf"])
    prompt = PROMPTS["query"]
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=4, prompt=prompt),
                               model.encode(TEXTS, batch_size=4, prompt=prompt), atol=1e-5)
    rows = encoder.encode(TEXTS[:3], output_value=None, prompt=prompt)
    assert [list(r["input_ids"]) for r in rows] == _fed(model, TEXTS[:3], prompt)
    assert "prompt_length" not in rows[0]


@pytest.mark.parametrize("kind", ["generation", "text"])
def test_export_round_trip_keeps_the_modality(dirs, kind, tmp_path):
    encoder = SentenceEncoder.from_pretrained(dirs[kind])
    out = str(tmp_path / "export")
    encoder.save_pretrained(out)
    saved = json.load(open(os.path.join(out, "sentence_bert_config.json")))
    model = _st(out)
    assert ("message" in model[0].modality_config) == ("message" in saved.get("modality_config", {})) \
        == (kind != "text")
    again = SentenceEncoder.from_pretrained(out)
    assert again.tokenizer.chat_format == encoder.tokenizer.chat_format
    assert _fed(model, TEXTS, PROMPTS["query"]) == again.tokenizer(TEXTS, prompt=PROMPTS["query"])
    ours = encoder.encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(model.encode(TEXTS, prompt_name="query"), ours, atol=1e-5)
    np.testing.assert_allclose(again.encode(TEXTS, prompt_name="query"), ours, atol=1e-6)


def test_training_data_is_rendered_and_dataset_prompts_are_refused(dirs):
    """Training tokenizes with the encoder's tokenizer (the chat template); a dataset spec's prompts would be
    prefixed to the text instead of a system message, so they are refused in message mode."""
    import datasets

    from jaxsbert.data.tokenization import tokenize_dataset
    from jaxsbert.training import loop

    encoder = SentenceEncoder.from_pretrained(dirs["message"])
    ds = datasets.Dataset.from_dict({"anchor": TEXTS[:4], "positive": TEXTS[4:8]})
    tokenized = tokenize_dataset(ds, encoder.tokenizer)
    model = _st(dirs["message"])
    assert [list(tokenized.inputs[0][i]) for i in range(4)] == _fed(model, TEXTS[:4])
    config = {"data": {"train": {"pairs": {"source": ds, "prompts": {"anchor": "query: "}}}, "eval": {}}}
    with pytest.raises(ValueError, match=r"^data\.train\.pairs\.prompts: not supported"):
        loop.prepare(config, encoder=encoder)
