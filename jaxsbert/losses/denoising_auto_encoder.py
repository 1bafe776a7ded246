"""DenoisingAutoEncoderLoss (TSDAE, Wang et al. 2021): reconstruct a sentence from the embedding of its damaged copy."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsbert.data.packing import is_packed
from jaxsbert.losses.base import Loss, with_sentence_ids
from jaxsbert.models import bert_decoder
from jaxsbert.models.dropout import TokenIds

log = logging.getLogger("jaxsbert")


class DecoderSpec(NamedTuple):
    """What the loss knows of its decoder once it has seen the model (:meth:`DenoisingAutoEncoderLoss.setup`)."""
    config: Any                     # jaxsbert.models.bert.BertConfig of the decoder
    initializer_range: float        # the std of newly initialised weights
    pad_token_id: int               # targets equal to it are ignored
    checkpoint: Optional[str]       # the directory whose weights initialise the decoder (None: none)


@dataclasses.dataclass(frozen=True)
class DenoisingAutoEncoderLoss(Loss):
    """TSDAE: a decoder reconstructs each original sentence from the embedding of its damaged copy::

        e_i = model(damaged_i)                                   # the sentence embedding, [D]
        logits_i = decoder(original_i[:-1], cross-attending to e_i alone)
        loss = sum_{i,t} CE(logits_i[t], original_i[t + 1]) / #{(i, t): original_i[t + 1] is not padding}

    The decoder is a BERT causal language model with cross-attention (Hugging Face's ``BertLMHeadModel`` with
    ``is_decoder=True, add_cross_attention=True``, :mod:`jaxsbert.models.bert_decoder`) whose output layer is
    its word-embedding table plus a bias. Columns (damaged_sentence, original_sentence), e.g. from
    :func:`jaxsbert.data.add_noise`, both tokenized with the model's tokenizer; no label.

    ``tie_encoder_decoder=True`` (default): the decoder is the model's checkpoint and shares every model
    parameter with the same name (the embeddings, word-embedding table included, and each layer's
    self-attention and feed-forward; not the pooler): those are read from the model's parameters inside the
    loss, so their gradients add up there. The loss's head is the rest: each layer's ``crossattention`` and
    ``cls.predictions`` (transform dense and LayerNorm, output bias), loaded from the model's checkpoint where
    it has them and otherwise initialised as transformers does (normal(0, initializer_range) weights, zero
    biases, unit LayerNorm). ``tie_encoder_decoder=False``: the decoder is ``decoder_name_or_path`` (a BERT
    directory or id with the model's tokenizer vocabulary), all of it the loss's head. The head is trained with
    the model by the same optimizer, as sentence-transformers' trainer trains every parameter of the loss.

    The loss needs the model: :meth:`setup` (the trainer's check of the model, ``frozen_params(model)``, calls
    it; the loss has no frozen parameters) or ``init_head(rng, embedding_dim, encoder=model)``. It trains on
    the whole word-embedding table (no ``compact_vocab``).

    Packed batches (:mod:`jaxsbert.data.packing`; the trainer packs this loss's datasets like the others'):
    the model embeds the packed rows, and the decoder runs on the same rows: each token of an original
    sentence attends causally within its sentence and cross-attends to its row's damaged-sentence embedding,
    and predicts the next token of its sentence. The damaged sentences' tokens are decoded too and not
    scored. The value and gradients equal the unpacked batch's (the decoder then runs on the real tokens,
    not on rows padded to the longest sentence's bucket).
    """
    name: ClassVar[str] = "DenoisingAutoEncoderLoss"
    columns_doc: ClassVar[str] = "(damaged_sentence, original_sentence)"
    label_mode: ClassVar[str] = "none"
    supports_packing: ClassVar[bool] = True
    predicts_tokens: ClassVar[bool] = True      # logits over the whole vocabulary: the trainer has no compact_vocab

    decoder_name_or_path: Optional[str] = None
    tie_encoder_decoder: bool = True

    def __post_init__(self):
        if not isinstance(self.tie_encoder_decoder, bool):
            raise ValueError(f"{self.name}: tie_encoder_decoder must be true or false, got {self.tie_encoder_decoder!r}")
        if self.decoder_name_or_path is not None and not isinstance(self.decoder_name_or_path, (str, os.PathLike)):
            raise ValueError(f"{self.name}: decoder_name_or_path must be a model path or id, "
                             f"got {type(self.decoder_name_or_path).__name__}")
        if not self.tie_encoder_decoder and self.decoder_name_or_path is None:
            raise ValueError(f"{self.name}: tie_encoder_decoder=False needs decoder_name_or_path (the decoder's "
                             "model path or id)")
        if self.tie_encoder_decoder and self.decoder_name_or_path is not None:
            log.warning("%s: with tie_encoder_decoder=True the decoder is the model itself; decoder_name_or_path=%r "
                        "is not used", self.name, self.decoder_name_or_path)

    # ---- the decoder -------------------------------------------------------------------------------
    def setup(self, encoder: Any) -> DecoderSpec:
        """Reads the decoder's configuration for training ``encoder`` (a ``SentenceEncoder``) and keeps it on the
        loss; ValueError when the two cannot go together. Returns it."""
        spec = self._setup(encoder)
        object.__setattr__(self, "_spec", spec)
        return spec

    def _setup(self, encoder: Any) -> DecoderSpec:
        pad = encoder.tokenizer.hf.pad_token_id
        if self.tie_encoder_decoder:
            model = encoder.source or "the model"
            bert_decoder.check_family(encoder.config.family, f"{self.name}: the model {model!r}")
            directory = _transformer_dir(encoder.source) if encoder.source else None
            hf_config = _read_config(directory) if directory else {}
            config = dataclasses.replace(encoder.config.transformer, add_pooling_layer=False)
            return DecoderSpec(config, float(hf_config.get("initializer_range", 0.02)),
                               int(pad if pad is not None else 0), directory)
        directory = _transformer_dir(str(self.decoder_name_or_path))
        config, init_range = bert_decoder.decoder_config(_read_config(directory),
                                                         f"{self.name}: decoder {self.decoder_name_or_path!r}")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
        if tokenizer.get_vocab() != encoder.tokenizer.hf.get_vocab():
            raise ValueError(f"{self.name}: the decoder {self.decoder_name_or_path!r} has another tokenizer "
                             "vocabulary than the model; the decoder reads the model's token ids here "
                             "(sentence-transformers re-tokenizes the texts for a decoder of another tokenizer "
                             "class), so choose a decoder with the model's tokenizer")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return DecoderSpec(config, init_range, int(pad if pad is not None else 0), directory)

    def frozen_params(self, encoder: Any) -> None:
        """Sets the loss up for training ``encoder`` (:meth:`setup`: ValueError when the two cannot go together,
        before anything compiles); the loss uses no frozen parameters."""
        self.setup(encoder)
        return None

    def spec(self) -> DecoderSpec:
        spec = self.__dict__.get("_spec")
        if spec is None:
            raise ValueError(f"{self.name} needs the model it trains: call loss.setup(model) (the trainer does) or "
                             "loss.init_head(rng, embedding_dim, encoder=model) first")
        return spec

    def init_head(self, rng: jax.Array, embedding_dim: int, params: Any = None, encoder: Any = None) -> dict:
        """The decoder's parameters that the model does not hold (see the class docstring), for the model
        ``encoder`` (None: the one given to :meth:`setup`). ``params`` is not used."""
        spec = self.setup(encoder) if encoder is not None else self.spec()
        if embedding_dim != spec.config.hidden_size:
            raise ValueError(f"{self.name}: the model's embeddings have dimension {embedding_dim} but the decoder's "
                             f"hidden size is {spec.config.hidden_size}; they must match (the embedding is the "
                             "decoder's cross-attention input)")
        decoder = bert_decoder.init_decoder_params(spec.config, rng, spec.initializer_range)
        head = self.untied(decoder)
        if spec.checkpoint is not None:
            from jaxsbert.interop import hf

            state, source = hf.read_state_dict(spec.checkpoint)
            head, _ = bert_decoder.load_decoder_weights(head, state, source)
        return head

    def untied(self, decoder_params: dict) -> dict:
        """The part of a whole decoder's parameters that is the loss's head: all of it without ties, else each
        layer's ``crossattention`` and ``cls``."""
        if not self.tie_encoder_decoder:
            return decoder_params
        layers = decoder_params["bert"]["encoder"]
        return {"bert": {"encoder": {name: {"crossattention": layer["crossattention"]} for name, layer in layers.items()}},
                "cls": decoder_params["cls"]}

    def decoder_params(self, params: Any, head_params: dict) -> dict:
        """The whole decoder's parameters: the head, and with ties the model's transformer (less its pooler)."""
        if not self.tie_encoder_decoder:
            return head_params
        tied = {k: v for k, v in params["transformer"].items() if k != "pooler"}
        return _merge({"bert": tied}, head_params)

    def head_state_dict(self, head_params: Any) -> dict[str, np.ndarray]:
        """The head as sentence-transformers' loss module names it (``decoder.bert.encoder.layer.0.crossattention
        .self.query.weight``, ``decoder.cls.predictions.bias``, ...)."""
        from jaxsbert.interop import hf

        return {f"decoder.{k}": v for k, v in hf.flax_to_state_dict(jax.device_get(head_params)).items()}

    def head_from_state_dict(self, state_dict: dict) -> dict:
        """The head from a state dict of sentence-transformers' loss module (``decoder.*`` keys; the model's keys
        and the tied ones are ignored) or of its decoder (numpy arrays or torch tensors); needs :meth:`setup`."""
        spec = self.spec()
        state = {}
        for key, value in state_dict.items():
            if key.startswith("decoder.") or not key.startswith("encoder."):
                value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
                state[key[len("decoder."):] if key.startswith("decoder.") else key] = value
        template = self.untied(bert_decoder.init_decoder_params(spec.config, jax.random.PRNGKey(0)))
        head, loaded = bert_decoder.load_decoder_weights(template, state, "state_dict")
        missing = len(jax.tree_util.tree_leaves(template)) - len(loaded)
        if missing:
            raise ValueError(f"{self.name}: the state dict lacks {missing} of the head's "
                             f"{len(jax.tree_util.tree_leaves(template))} weights")
        return head

    # ---- the loss ----------------------------------------------------------------------------------
    def compute(self, head_params, embeddings, labels, mask):
        raise ValueError(f"{self.name} decodes the original sentences' token ids, not embeddings: train it with "
                         "loss.value_and_grad(embed_fn, params, head, features, ...)")

    def reconstruction_loss(self, decoder_params: dict, embeddings: jax.Array, source_mask: jax.Array,
                            target: dict, mask: jax.Array, rng: Optional[jax.Array] = None) -> jax.Array:
        """The mean cross-entropy of the decoder's next-token predictions of ``target`` (the original
        sentences' features: ``input_ids``, ``attention_mask``, with ``sentence_ids`` for dropout) from
        ``embeddings`` [B, D] (each the only key of its row's cross-attention, masked where ``source_mask``'s
        first column is 0), over the targets that are not padding, in valid rows (``mask``). ``rng``: dropout
        in the decoder (None: none)."""
        spec = self.spec()
        ids = jnp.asarray(target["input_ids"])
        inputs, labels = ids[:, :-1], ids[:, 1:]
        valid = (labels != spec.pad_token_id) & (jnp.asarray(target["attention_mask"])[:, 1:] > 0) & mask[:, None]
        tokens, rngs = None, {}
        if rng is not None:
            sentences = target.get("sentence_ids")
            if sentences is None:
                sentences = jnp.broadcast_to(jnp.arange(ids.shape[0], dtype=jnp.int32)[:, None], ids.shape)
            positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
            tokens = TokenIds(jnp.asarray(sentences)[:, :-1], positions)
            rngs = {"dropout": jax.random.fold_in(rng, 0x75DAE)}
        module = bert_decoder.BertLMHeadModel(spec.config)
        logits = module.apply({"params": decoder_params}, inputs, embeddings[:, None, :],
                              (jnp.asarray(source_mask)[:, :1] > 0).astype(jnp.int32), deterministic=rng is None,
                              tokens=tokens, rngs=rngs)
        return _mean_next_token_nll(logits, labels, valid)

    def packed_reconstruction_loss(self, decoder_params: dict, embeddings: jax.Array, features: dict,
                                   mask: jax.Array, max_segments: int) -> jax.Array:
        """:meth:`reconstruction_loss` of a packed batch of (damaged, original) pairs: ``features`` the packed
        rows of at most ``max_segments`` sentences, ``embeddings`` [B, 2, D] the model's embedding of each slot.
        Each token of an original sentence predicts the next token of its sentence, cross-attending to its
        row's damaged-sentence embedding: the same scored tokens as the unpacked batch's, so the same mean."""
        spec = self.spec()
        ids, segments = jnp.asarray(features["input_ids"]), jnp.asarray(features["attention_mask"])
        slots = jnp.asarray(features["slots"])
        batch, columns = slots.shape
        rows = ids.shape[0]
        # slot numbers are row * max_segments + segment - 1; each slot's sentence b * columns + c
        # (padding rows' slots are not owners: mode="drop")
        owner = jnp.full((rows * max_segments,), -1, jnp.int32).at[
            jnp.where(mask[:, None], slots, rows * max_segments).reshape(-1)].set(
            jnp.arange(batch * columns, dtype=jnp.int32), mode="drop")
        token_slot = jnp.arange(rows, dtype=jnp.int32)[:, None] * max_segments + segments - 1
        sentence = jnp.where(segments > 0, owner[jnp.clip(token_slot, 0)], -1)
        pair, column = jnp.clip(sentence, 0) // columns, sentence % columns
        memory = embeddings[:, 0][pair]                                               # [R, L, D]
        module = bert_decoder.BertLMHeadModel(spec.config)
        logits = module.apply({"params": decoder_params}, ids, memory, deterministic=True, segment_ids=segments,
                              position_ids=jnp.asarray(features["position_ids"]))
        following = jnp.concatenate([ids[:, 1:], jnp.full((rows, 1), spec.pad_token_id, ids.dtype)], axis=1)
        same = jnp.concatenate([segments[:, 1:] == segments[:, :-1], jnp.zeros((rows, 1), bool)], axis=1)
        valid = (sentence >= 0) & (column == 1) & same & (following != spec.pad_token_id) & mask[pair]
        return _mean_next_token_nll(logits, following, valid)

    def value_and_grad(self, embed_fn, params, head_params, features, labels=None, mask=None, rng=None, frozen=None):
        """Loss and gradients wrt the model's parameters and the head for one batch of (damaged, original)
        columns: the model embeds the damaged sentences (``embed_fn``, with dropout when it has and ``rng`` is
        given), the decoder reconstructs the originals without dropout, as in sentence-transformers: its
        decoder comes from ``from_pretrained`` in eval mode, and its trainer puts only the model in train mode
        (the decoder is the loss's module, not the model's), so the decoder's dropout never runs there."""
        if is_packed(features):
            return self._packed_value_and_grad(embed_fn, params, head_params, features, labels, mask, rng)
        features = tuple(features)
        if len(features) != 2:
            raise ValueError(f"{self.expects()}; got {len(features)} column(s)")
        if labels is not None:
            raise ValueError(f"{self.expects()}; got labels")
        if rng is not None:
            features = with_sentence_ids(features)
        source, target = features
        batch = jnp.shape(source["input_ids"])[0]
        mask = jnp.ones((batch,), bool) if mask is None else jnp.asarray(mask).astype(bool)

        def total(p, h):
            embeddings = jnp.asarray(embed_fn(p, source, rng), jnp.float32)
            embeddings = jnp.where(mask[:, None], embeddings, 0.0)
            return self.reconstruction_loss(self.decoder_params(p, h), embeddings, source["attention_mask"], target,
                                            mask)

        return jax.value_and_grad(total, argnums=(0, 1))(params, head_params)

    def _packed_value_and_grad(self, embed_fn, params, head_params, features, labels, mask, rng):
        slots = features["slots"]
        if getattr(embed_fn, "max_segments", None) is None:
            raise ValueError(f"{self.name}: a packed batch needs the model's sentences per packed row "
                             "(embed_fn.max_segments, see jaxsbert.training.step.make_embed_fn)")
        if slots.ndim != 2 or slots.shape[1] != 2:
            raise ValueError(f"{self.expects()}; got {slots.shape[1:] or 'no'} column(s)")
        if labels is not None:
            raise ValueError(f"{self.expects()}; got labels")
        mask = jnp.ones(slots.shape[:1], bool) if mask is None else jnp.asarray(mask).astype(bool)

        def total(p, h):
            embeddings = jnp.asarray(embed_fn(p, features, rng), jnp.float32)          # [B, 2, D]
            embeddings = jnp.where(mask[:, None, None], embeddings, 0.0)
            return self.packed_reconstruction_loss(self.decoder_params(p, h), embeddings, features, mask,
                                                   embed_fn.max_segments)

        return jax.value_and_grad(total, argnums=(0, 1))(params, head_params)

    def config_dict(self) -> dict[str, Any]:
        return {"decoder_name_or_path": None if self.decoder_name_or_path is None else str(self.decoder_name_or_path),
                "tie_encoder_decoder": self.tie_encoder_decoder}


def _mean_next_token_nll(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
    """The mean cross-entropy of ``logits`` [..., vocab] against ``targets`` [...] over the ``valid`` ones."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def _merge(a: dict, b: dict) -> dict:
    """Two nested dicts with disjoint leaves, merged."""
    out = dict(a)
    for k, v in b.items():
        if k in out and isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _merge(out[k], v)
        elif k in out:
            raise ValueError(f"decoder parameter {k!r} is both tied to the model and in the loss's head")
        else:
            out[k] = v
    return out


def _transformer_dir(path_or_id: str) -> str:
    """The directory of a model's Transformer (a sentence-transformers directory's first module, else the
    directory itself): where its config.json and weights are."""
    from jaxsbert.interop import st_dir

    root = st_dir.resolve(str(path_or_id))
    modules = os.path.join(root, "modules.json")
    if os.path.exists(modules):
        entries = st_dir.read_json(modules)
        if entries:
            return os.path.join(root, entries[0].get("path", ""))
    return root


def _read_config(directory: str) -> dict:
    from jaxsbert.interop import st_dir

    return st_dir.read_json(os.path.join(directory, "config.json"))
