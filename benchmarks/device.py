"""jaxsbert beside sentence-transformers on one accelerator (or the CPU): encode and training throughput,
compile time, peak device memory and MFU, in one command that needs nothing but the installed libraries.

    python -m benchmarks.device                     # full sizes (GPU: < 8 min on one H200), table -> runs/device/
    python -m benchmarks.device --smoke             # tiny sizes on any machine (CPU: well under a minute)
    python -m benchmarks.device --out t.md --models minilm-l6 --cases mnrl --frameworks jaxsbert
    OUT=/somewhere bash benchmarks/device_run.sh    # what a GPU machine runs (XLA settings, time limit, log)

What it measures, per model shape (``minilm-l6``: all-MiniLM-L6-v2's shape, 6 layers, hidden 384, 12 heads,
intermediate 1536; ``bert-base``: 12 / 768 / 12 / 3072; vocabulary 30522 for both), side by side, on the
same device and the same randomly initialised weights (saved once by jaxsbert, loaded by both):

* ``encode``: sentences/s of ``SentenceEncoder.encode`` (``dtype=bfloat16``: matmuls in bf16) and of
  ``SentenceTransformer.encode`` under ``torch.autocast(bfloat16)`` (transformers' default attention, SDPA),
  batch ``--encode-batch``, the best of a few repeats after a first call (compilation, autotuning).
* ``mnrl``: pairs/s of a training step with MultipleNegativesRankingLoss at B=256; ``cmnrl``: the same with
  CachedMultipleNegativesRankingLoss at B=4096, ``mini_batch_size`` 256. jaxsbert runs its jitted train step
  (``jaxsbert.training.step.make_train_step``: AdamW 2e-5, clipping at 1.0, dropout on, state donated,
  ``compute_dtype`` bfloat16) on batches built as its data loader builds them (packed rows, as the trainer's
  default ``data.packing="auto"`` does for these losses; ``--packing off``: padded to the longest
  sentence's length bucket), built before the timed steps (the trainer builds them in a background thread).
  sentence-transformers runs its trainer's step: tokenize the two columns (the collator), loss forward under
  autocast, backward, clip, fused AdamW (benchmarks/train.py's loop). Throughput is over ``--steps`` steps
  after ``--warmup``, synchronised once at the end of the timed window.
* ``compile s``: first call or step minus a steady one (jaxsbert: mostly XLA compilation; torch: kernel
  loading, cuBLAS/cuDNN autotuning).
* ``peak MiB``: jax ``device.memory_stats()["peak_bytes_in_use"]``, torch ``max_memory_allocated`` (n/a on
  CPU). With ``--isolate`` (the default except with ``--smoke``) every (framework, model, case) runs in a
  fresh process, so the peak is that case's.
* ``GFLOP/step``: XLA's cost analysis (``lowered.cost_analysis()["flops"]``) of jaxsbert's programs for the
  timed unit (one train step, one encode pass). XLA counts a loop body once, so the cached step is
  counted as the plain MNRL step on the same batch (the model's FLOPs: GradCache's recomputed forward is
  not counted, as MFU leaves out rematerialisation). Both frameworks' MFU use this one count:
  ``MFU = GFLOP/step x steps/s / device peak``. jaxsbert's packed rows are nearly all real tokens
  (all-MiniLM-L6-v2 shape, B=256: 157 x 48 = 7,536 slots for 7,346 tokens; padded to the bucket: 256 x 64
  per column), so the count is close to the model FLOPs of the batch's tokens and neither side is credited
  for padding; with ``--packing off`` it counts jaxsbert's padding too (MFU then overstates). The peak is the device's dense bf16 nominal peak by
  ``jax.devices()[0].device_kind`` (H100/H200 989 TFLOP/s, of which ~790 are measured on large matmuls;
  A100 312; TPUs by generation); on a CPU, the rate of a large matmul in the run's dtype, measured here.

Inputs are synthetic, so nothing is downloaded and ``datasets`` is not needed: a WordPiece vocabulary of
one-token words (``w104`` ... ``w30521`` plus BERT's special tokens) written to a temporary directory, and
sentences whose token counts follow STS-benchmark train's (``STSB_TOKEN_LENGTHS``: both columns under
all-MiniLM-L6-v2's tokenizer, special tokens included; mean 14.4, longest 70). The table (Markdown) is
rewritten to ``--out`` after every measurement, so a run stopped by a time limit leaves what it measured;
the raw results go to ``<out>.jsonl``. ``--budget-s`` skips what would start after that many seconds.

On a lent GPU machine (a copy of the working tree, no network, no ``datasets``; jax with CUDA, flax, optax,
orbax, torch and sentence-transformers installed), run from the repository root::

    OUT=$OUT bash benchmarks/device_run.sh          # ~5-7 min on one H200; stops itself at 470 s

``benchmarks/device_run.sh`` sets the XLA allocator's memory fraction, runs this module with a time limit
and writes the table, the raw results, the log and the machine's description (nvidia-smi, versions) under
``$OUT``. ``--smoke`` there first (about a minute) checks that everything imports and runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# STS-benchmark train, sentence1 + sentence2 (11,498 sentences): tokens per sentence -> how many, under
# all-MiniLM-L6-v2's tokenizer with [CLS] and [SEP] (computed once from /work/shared/data; pasted here)
STSB_TOKEN_LENGTHS = {
    5: 5, 6: 63, 7: 399, 8: 826, 9: 1451, 10: 1427, 11: 1189, 12: 1107, 13: 809, 14: 617, 15: 465, 16: 374,
    17: 289, 18: 244, 19: 190, 20: 179, 21: 143, 22: 143, 23: 130, 24: 147, 25: 130, 26: 118, 27: 128, 28: 90,
    29: 93, 30: 98, 31: 89, 32: 91, 33: 67, 34: 69, 35: 54, 36: 79, 37: 46, 38: 31, 39: 26, 40: 13, 41: 14,
    42: 11, 43: 20, 44: 11, 45: 6, 46: 3, 47: 3, 49: 1, 50: 1, 51: 1, 52: 1, 53: 1, 55: 1, 56: 1, 59: 1, 62: 1,
    63: 1, 70: 1}

SHAPES = {"minilm-l6": dict(layers=6, hidden=384, heads=12, intermediate=1536, vocab=30522),
          "bert-base": dict(layers=12, hidden=768, heads=12, intermediate=3072, vocab=30522)}
# --smoke: tiny stand-ins under the same names (so the table has the same rows)
SMOKE_SHAPES = {"minilm-l6": dict(layers=1, hidden=32, heads=4, intermediate=64, vocab=2000),
                "bert-base": dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=2000)}
CASES = ("encode", "mnrl", "cmnrl")
FRAMEWORKS = ("jaxsbert", "sentence-transformers")
SIZES = dict(encode_sentences=32768, encode_batch=256, encode_repeats=3, mnrl_batch=256, cmnrl_batch=4096,
             mini_batch=256, warmup=3, steps=10, cached_warmup=1, cached_steps=3)
SMOKE_SIZES = dict(encode_sentences=64, encode_batch=16, encode_repeats=1, mnrl_batch=8, cmnrl_batch=32,
                   mini_batch=8, warmup=1, steps=2, cached_warmup=1, cached_steps=1)
MAX_SEQ_LENGTH = 128
FIRST_WORD = 104                 # vocabulary ids below this are BERT's [PAD], [unused*], [UNK], [CLS], [SEP], [MASK]

# dense bf16 nominal peak FLOP/s by device_kind substring (first match; NVIDIA: without sparsity)
PEAK_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
              ("A10", 125e12), ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12))
PEAK_NOTES = {"H200": "nominal; ~790 TFLOP/s measured for large matmuls", "H100": "nominal; ~790 TFLOP/s "
              "measured for large matmuls (SXM; PCIe is lower)"}

COLUMNS = ("model", "case", "batch", "unit", "jaxsbert", "ST", "jaxsbert/ST", "compile s jaxsbert",
           "compile s ST", "peak MiB jaxsbert", "peak MiB ST", "GFLOP/step", "MFU jaxsbert", "MFU ST")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- synthetic inputs

def synthetic_lengths(n: int, seed: int) -> "np.ndarray":
    """``n`` sentence lengths in tokens ([CLS] and [SEP] included) drawn from STSb train's."""
    import numpy as np

    lengths = np.array(sorted(STSB_TOKEN_LENGTHS))
    weights = np.array([STSB_TOKEN_LENGTHS[k] for k in lengths], np.float64)
    return np.random.default_rng(seed).choice(lengths, size=n, p=weights / weights.sum())


def synthetic_sentences(n: int, seed: int, vocab_size: int) -> list[str]:
    """``n`` sentences of one-token words (``w<id>``) whose tokenized lengths follow STSb train's."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    return [" ".join(f"w{i}" for i in rng.integers(FIRST_WORD, vocab_size, size=int(k) - 2))
            for k in synthetic_lengths(n, seed)]


def write_tokenizer(directory: str, vocab_size: int) -> str:
    """A BERT WordPiece tokenizer (vocab.txt + tokenizer_config.json) whose words ``w<id>`` are one token each."""
    os.makedirs(directory, exist_ok=True)
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        for i in range(vocab_size):
            f.write(special.get(i, f"[unused{i}]" if i < FIRST_WORD else f"w{i}") + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, f)
    return directory


def prepare_model(directory: str, shape: dict, seed: int = 0) -> str:
    """Writes a sentence-transformers directory (Transformer, mean Pooling, Normalize: all-MiniLM-L6-v2's
    modules) of a randomly initialised BERT of ``shape``, with the synthetic tokenizer."""
    from jaxsbert.encoder import SentenceEncoder, Tokenizer
    from jaxsbert.interop.st_dir import init_params
    from jaxsbert.models.bert import BertConfig
    from jaxsbert.models.pooling import PoolingConfig
    from jaxsbert.models.sentence_model import NormalizeConfig, SentenceModelConfig

    bert = BertConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                      num_attention_heads=shape["heads"], intermediate_size=shape["intermediate"])
    config = SentenceModelConfig("bert", bert, (PoolingConfig(shape["hidden"], ("mean",)), NormalizeConfig()),
                                 max_seq_length=MAX_SEQ_LENGTH, do_lower_case=True)
    tokenizer = Tokenizer(write_tokenizer(directory + "-tokenizer", shape["vocab"]), MAX_SEQ_LENGTH, True)
    SentenceEncoder(config, init_params(config, seed), tokenizer).save_pretrained(directory)
    return directory


def pair_sentences(batch: int, n_batches: int, vocab: int) -> tuple[list[str], list[str]]:
    """(anchors, positives): ``batch * n_batches`` synthetic pairs, the same in every process."""
    n = batch * n_batches
    return synthetic_sentences(n, 1, vocab), synthetic_sentences(n, 2, vocab)


# ------------------------------------------------------------------------------------------------- jaxsbert

def xla_flops(jitted, *args) -> tuple[float | None, str]:
    """(FLOPs, how counted) of ``jitted(*args)`` by XLA's cost analysis: of the program lowered for the CPU
    (every op is plain HLO there, none a custom call whose FLOPs XLA cannot see), else for this backend."""
    import jax

    # abstract arguments: no device placement to carry over to the CPU lowering
    traced = jitted.trace(*jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args))
    tries = (("lowered for cpu", lambda: traced.lower(lowering_platforms=("cpu",)).cost_analysis()),
             ("lowered", lambda: traced.lower().cost_analysis()),
             ("compiled", lambda: traced.lower().compile().cost_analysis()))
    for how, fn in tries:
        try:
            cost = fn()
        except Exception:       # noqa: BLE001 - the next way of counting
            continue
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        if cost and cost.get("flops"):
            return float(cost["flops"]), how
    return None, "n/a"


def device_info() -> dict:
    """The first jax device's kind and platform, the peak FLOP/s used for MFU and where it comes from."""
    import jax

    device = jax.devices()[0]
    kind = device.device_kind
    for key, flops in PEAK_FLOPS:
        if key.lower() in kind.lower():
            return {"device": kind, "platform": device.platform, "peak_flops": flops,
                    "peak_source": f"{key} dense bf16 {flops / 1e12:.0f} TFLOP/s ({PEAK_NOTES.get(key, 'nominal')})"}
    return {"device": kind, "platform": device.platform, "peak_flops": None, "peak_source": "unknown device: n/a"}


def measured_matmul_peak(dtype_name: str, n: int = 1024) -> float:
    """FLOP/s of an [n, n] x [n, n] matmul in ``dtype_name`` on jax's first device (best of 3)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype_name)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def jax_peak_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None


def jaxsbert_encode(model_dir: str, sizes: dict, dtype: str, vocab: int) -> dict:
    import jax.numpy as jnp

    from jaxsbert import SentenceEncoder

    sentences = synthetic_sentences(sizes["encode_sentences"], 0, vocab)
    encoder = SentenceEncoder.from_pretrained(model_dir, dtype=getattr(jnp, dtype))
    forward, calls = encoder._forward, {}

    def recording(params, features):      # the shapes of the first pass's calls, for the FLOP count
        key = tuple(sorted((k, v.shape) for k, v in features.items()))
        calls.setdefault(key, [features, 0])[1] += 1
        return forward(params, features)

    encoder._forward = recording
    t = time.perf_counter()
    encoder.encode(sentences, batch_size=sizes["encode_batch"])
    first = time.perf_counter() - t
    encoder._forward = forward
    steady = float("inf")
    for _ in range(sizes["encode_repeats"]):
        t = time.perf_counter()
        encoder.encode(sentences, batch_size=sizes["encode_batch"])
        steady = min(steady, time.perf_counter() - t)
    counted = [xla_flops(forward, encoder.params, f) for f, _ in calls.values()]
    flops = (sum(c[0] * n for c, (_, n) in zip(counted, calls.values()))
             if all(c[0] for c in counted) else None)
    return {"batch": sizes["encode_batch"], "unit": "sentences/s", "per_s": len(sentences) / steady,
            "unit_s": steady, "compile_s": first - steady, "flops": flops,
            "flops_how": counted[0][1] if counted else "n/a", "programs": len(calls)}


def training_batches(tokens: list, batch: int, n_batches: int, packing: bool, multiple: int, pad_id: int) -> list:
    """``n_batches`` train batches of ``batch`` (anchor, positive) pairs as jaxsbert's data loader builds them,
    all of one shape (one compiled program): packed into rows of the length and count that its shape
    chooser (``jaxsbert.data.pack_shapes``) picks, the count the largest any batch needs (a multiple of
    ``multiple``); or padded to the length bucket of the longest sentence."""
    import numpy as np

    from jaxsbert.data.buckets import bucket_for, length_buckets, pad_token_ids
    from jaxsbert.data.pack_shapes import AUTO_MAX_LENGTH, auto_lengths, choose_pack_shape
    from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS, pack_token_ids, rows_needed, sentence_index

    parts = [[column[i * batch:(i + 1) * batch] for column in tokens] for i in range(n_batches)]
    longest = max(len(t) for column in tokens for t in column)
    buckets = length_buckets(MAX_SEQ_LENGTH)
    out = []
    if not packing:
        length = bucket_for(longest, buckets)
        for cols in parts:
            features = tuple(pad_token_ids(c, length, batch, pad_id) for c in cols)
            out.append({"features": features, "labels": np.zeros(batch, np.float32), "mask": np.ones(batch, bool)})
        return out
    row_major = [[t for row in zip(*cols) for t in row] for cols in parts]
    lengths = auto_lengths(longest, 8) if longest <= AUTO_MAX_LENGTH else [bucket_for(longest, buckets)]
    needs = lambda length: [rows_needed([len(t) for t in s], length, DEFAULT_MAX_SEGMENTS) for s in row_major]
    length, counts = choose_pack_shape(lengths, needs, steps=1000, multiple=multiple)
    rows = counts[-1]
    ids = sentence_index(np.arange(batch), 2).reshape(-1)
    for sentences in row_major:
        features = pack_token_ids(sentences, rows, length, DEFAULT_MAX_SEGMENTS, pad_id, sentence_ids=ids)
        features["slots"] = features["slots"].reshape(batch, 2)
        out.append({"features": features, "labels": np.zeros(batch, np.float32), "mask": np.ones(batch, bool)})
    return out


def jaxsbert_train(model_dir: str, case: str, sizes: dict, dtype: str, vocab: int, packing: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsbert import SentenceEncoder
    from jaxsbert.config import DEFAULTS
    from jaxsbert.data.packing import DEFAULT_MAX_SEGMENTS
    from jaxsbert.losses import get_loss
    from jaxsbert.models.sentence_model import SentenceModel
    from jaxsbert.training.optimizer import make_optimizer, update_check_never_fires
    from jaxsbert.training.step import init_state, make_embed_fn, make_train_step

    cached = case == "cmnrl"
    batch = sizes["cmnrl_batch" if cached else "mnrl_batch"]
    warmup, steps = (sizes["cached_warmup"], sizes["cached_steps"]) if cached else (sizes["warmup"], sizes["steps"])
    n_batches = min(4, warmup + steps)
    encoder = SentenceEncoder.from_pretrained(model_dir)
    anchors, positives = pair_sentences(batch, n_batches, vocab)
    tokens = [encoder.tokenizer(anchors), encoder.tokenizer(positives)]
    plain = get_loss("MultipleNegativesRankingLoss")
    loss = get_loss("CachedMultipleNegativesRankingLoss", mini_batch_size=sizes["mini_batch"]) if cached else plain
    multiple = max(1, sizes["mini_batch"] // 4) if cached else 1      # the loader's CHUNK_PARTS = 4
    batches = training_batches(tokens, batch, n_batches, packing, multiple, encoder.tokenizer.pad_token_id)
    optim = dict(DEFAULTS["optim"], lr=2e-5, warmup_ratio=0.0)
    total_steps = 1000
    tx, schedule = make_optimizer(optim, total_steps)
    leaves = jax.tree_util.tree_leaves(encoder.params)
    check = not update_check_never_fires(optim, total_steps, max(float(jnp.max(jnp.abs(x))) for x in leaves),
                                         sum(int(np.size(x)) for x in leaves))
    module = SentenceModel(encoder.config, dtype=getattr(jnp, dtype), max_segments=DEFAULT_MAX_SEGMENTS)
    embed_fn = make_embed_fn(module, dropout=True)
    state = init_state(encoder.params, {}, tx, seed=0)
    del encoder
    batches = [jax.device_put(b) for b in batches]
    model_step = make_train_step(embed_fn, plain, "pairs", tx, schedule, has_labels=False, check_update=check)
    flops, how = xla_flops(jax.jit(model_step), state, batches[0])
    step = jax.jit(make_train_step(embed_fn, loss, "pairs", tx, schedule, has_labels=False, check_update=check),
                   donate_argnums=0)
    t = time.perf_counter()
    state, metrics = step(state, batches[0])
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t
    for i in range(1, warmup):
        state, metrics = step(state, batches[i % n_batches])
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, batches[(warmup + i) % n_batches])
    loss_value = float(metrics["loss"])
    per_step = (time.perf_counter() - t) / steps
    if not np.isfinite(loss_value) or int(state["nonfinite"]):
        raise FloatingPointError(f"jaxsbert {case}: non-finite loss or gradients ({loss_value})")
    shape = batches[0]["features"]
    shape = shape["input_ids"].shape if isinstance(shape, dict) else shape[0]["input_ids"].shape
    return {"batch": batch, "unit": "pairs/s", "per_s": batch / per_step, "unit_s": per_step,
            "compile_s": first - per_step, "flops": flops, "flops_how": how, "loss": loss_value,
            "input_shape": list(shape), "packing": packing}


def run_jaxsbert(spec: dict) -> dict:
    import jax

    info = device_info()
    if info["platform"] == "cpu":
        info["peak_flops"] = measured_matmul_peak(spec["dtype"])
        info["peak_source"] = f"measured {spec['dtype']} 1024x1024 matmul on this CPU: {info['peak_flops'] / 1e9:.1f} GFLOP/s"
    if spec["case"] == "encode":
        out = jaxsbert_encode(spec["model_dir"], spec["sizes"], spec["dtype"], spec["vocab"])
    else:
        out = jaxsbert_train(spec["model_dir"], spec["case"], spec["sizes"], spec["dtype"], spec["vocab"],
                             spec["packing"])
    return {**out, **info, "peak_bytes": jax_peak_bytes(), "jax": jax.__version__}


# ---------------------------------------------------------------------------------------- sentence-transformers

def _st_losses():
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:          # sentence-transformers < 6.3
        from sentence_transformers import losses
    return losses


def run_sentence_transformers(spec: dict) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer, __version__ as st_version

    sizes, case = spec["sizes"], spec["case"]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    model = SentenceTransformer(spec["model_dir"], device=device)
    autocast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=spec["dtype"] == "bfloat16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    info = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "sentence_transformers": st_version,
            "attention": getattr(model[0].auto_model.config, "_attn_implementation", None)}
    if case == "encode":
        sentences = synthetic_sentences(sizes["encode_sentences"], 0, spec["vocab"])
        encode = lambda: model.encode(sentences, batch_size=sizes["encode_batch"], convert_to_numpy=True)
        t = time.perf_counter()
        with autocast():
            encode()
        first = time.perf_counter() - t
        steady = float("inf")
        for _ in range(sizes["encode_repeats"]):
            t = time.perf_counter()
            with autocast():
                encode()
            steady = min(steady, time.perf_counter() - t)
        out = {"batch": sizes["encode_batch"], "unit": "sentences/s", "per_s": len(sentences) / steady,
               "unit_s": steady, "compile_s": first - steady}
    else:
        cached = case == "cmnrl"
        batch = sizes["cmnrl_batch" if cached else "mnrl_batch"]
        warmup, steps = (sizes["cached_warmup"], sizes["cached_steps"]) if cached else (sizes["warmup"], sizes["steps"])
        n_batches = min(4, warmup + steps)
        anchors, positives = pair_sentences(batch, n_batches, spec["vocab"])
        losses = _st_losses()
        loss = (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=sizes["mini_batch"]) if cached
                else losses.MultipleNegativesRankingLoss(model))
        model.train()
        decay = [p for n, p in loss.named_parameters() if not any(k in n for k in ("bias", "LayerNorm"))]
        no_decay = [p for n, p in loss.named_parameters() if any(k in n for k in ("bias", "LayerNorm"))]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=2e-5, fused=True)
        tokenize = getattr(model, "preprocess", model.tokenize)

        def step(i):
            rows = slice((i % n_batches) * batch, (i % n_batches + 1) * batch)
            features = [tokenize(col[rows]) for col in (anchors, positives)]     # the trainer's collator
            features = [{k: v.to(device) for k, v in f.items() if hasattr(v, "to")} for f in features]
            labels = torch.zeros(batch, device=device)
            with autocast():
                value = loss(features, labels)
            value.backward()
            torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return value

        t = time.perf_counter()
        step(0)
        sync()
        first = time.perf_counter() - t
        for i in range(1, warmup):
            step(i)
        sync()
        t = time.perf_counter()
        for i in range(steps):
            value = step(warmup + i)
        loss_value = float(value)
        per_step = (time.perf_counter() - t) / steps
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"sentence-transformers {case}: non-finite loss {loss_value}")
        out = {"batch": batch, "unit": "pairs/s", "per_s": batch / per_step, "unit_s": per_step,
               "compile_s": first - per_step, "loss": loss_value}
    return {**out, **info, "peak_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None}


# ------------------------------------------------------------------------------------------------- the table

def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def table_rows(models, cases, results: dict) -> list[list[str]]:
    """One row per (model, case): ``results[(model, case, framework)]`` is a result dict, or a string
    (failed / skipped / pending), or absent (not run, or not installed: n/a)."""
    rows = []
    for model in models:
        for case in cases:
            j, s = (results.get((model, case, fw), "n/a") for fw in FRAMEWORKS)
            jd, sd = (r if isinstance(r, dict) else {} for r in (j, s))
            cell = lambda r, key, fmt: _num(r.get(key), fmt) if isinstance(r, dict) else r
            peak = jd.get("peak_flops")
            flops = jd.get("flops")
            mfu = lambda r: (f"{100 * flops / r['unit_s'] / peak:.1f}%" if isinstance(r, dict) and flops and peak
                             else ("n/a" if isinstance(r, dict) else r))
            ratio = f"{jd['per_s'] / sd['per_s']:.2f}" if jd.get("per_s") and sd.get("per_s") else "n/a"
            mib = lambda r: (_num(r["peak_bytes"] / 2**20 if r.get("peak_bytes") is not None else None, ".0f")
                             if isinstance(r, dict) else r)
            rows.append([model, case, str(jd.get("batch") or sd.get("batch") or "-"),
                         jd.get("unit") or sd.get("unit") or ("sentences/s" if case == "encode" else "pairs/s"),
                         cell(j, "per_s", ".1f"), cell(s, "per_s", ".1f"), ratio,
                         cell(j, "compile_s", ".1f"), cell(s, "compile_s", ".1f"), mib(j), mib(s),
                         _num(flops / 1e9 if flops else None, ".4g"), mfu(j), mfu(s)])
    return rows


def render(header: list[str], models, cases, results: dict) -> str:
    lines = list(header) + ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(models, cases, results)]
    return "\n".join(lines) + "\n"


def describe(results: dict, args, sizes: dict) -> list[str]:
    """The lines above the table: mode, device, peak, versions, sizes."""
    done = [r for r in results.values() if isinstance(r, dict)]
    j = next((r for r in done if "jax" in r), {})
    s = next((r for r in done if "torch" in r), {})
    return [f"# benchmarks/device.py{' --smoke' if args.smoke else ''} ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            f"- device: {j.get('device') or s.get('device') or 'n/a'} (jax platform {j.get('platform', 'n/a')}); "
            f"MFU peak: {j.get('peak_source', 'n/a')}",
            f"- jax {j.get('jax', 'n/a')}, torch {s.get('torch', 'n/a')}, sentence-transformers "
            f"{s.get('sentence_transformers', 'n/a')} (attention: {s.get('attention', 'n/a')}); compute dtype "
            f"{args.dtype} (jaxsbert compute_dtype, torch autocast); jaxsbert batches "
            f"{'packed' if args.packing == 'on' else 'padded'}",
            f"- sizes: {json.dumps(sizes)}{' (tiny model stand-ins: --smoke)' if args.smoke else ''}",
            "- compile s: first call/step minus a steady one; GFLOP/step: XLA's count of jaxsbert's program "
            "(cmnrl: the plain MNRL step's); MFU = GFLOP/step / step time / peak, the same count for both"]


# ---------------------------------------------------------------------------------------------------- driver

def run_spec(spec: dict) -> dict:
    return run_jaxsbert(spec) if spec["framework"] == "jaxsbert" else run_sentence_transformers(spec)


def run_isolated(spec: dict, timeout: float) -> dict | str:
    """``spec`` in a fresh process (its own device memory and peak); the result dict or why there is none."""
    env = dict(os.environ, JAXSBERT_COMPILATION_CACHE="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if spec["framework"] != "jaxsbert":
        env["JAXSBERT_KEEP_HOST_MEMORY"] = "0"
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.device", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        return "timed out"
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()
        print(tail, file=sys.stderr, flush=True)
        last = tail.splitlines()[-1] if tail else f"exit status {proc.returncode}"
        return f"failed ({last[:80].replace('|', '/')})"
    return json.loads(line[len("RESULT "):])


def run_here(spec: dict) -> dict | str:
    try:
        return run_spec(spec)
    except Exception as e:      # noqa: BLE001 - one case's failure is a table cell, not the end of the run
        import traceback

        traceback.print_exc()
        return f"failed ({type(e).__name__}: {str(e)[:60]})".replace("|", "/").replace("\n", " ")


def available_frameworks(wanted) -> list[str]:
    import importlib.util

    out = []
    for fw in wanted:
        module = "jax" if fw == "jaxsbert" else "sentence_transformers"
        if importlib.util.find_spec(module) is None or (fw != "jaxsbert" and importlib.util.find_spec("torch") is None):
            log(f"{fw}: not installed; its columns are n/a")
            continue
        out.append(fw)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and batches (CPU, CI)")
    parser.add_argument("--out", help="the table (Markdown); default runs/device/device[-smoke].md")
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS))
    parser.add_argument("--no-torch", action="store_true", help="skip sentence-transformers (its columns: n/a)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--packing", choices=["on", "off"], default="on", help="jaxsbert's train batches")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each measurement in a fresh process (default: on, off with --smoke)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="start no measurement after this many seconds (the rest: 'skipped')")
    parser.add_argument("--size", action="append", default=[], metavar="KEY=N", help="override a size")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(run_spec(json.loads(args.worker))), flush=True)
        return 0

    start = time.time()
    sizes = dict(SMOKE_SIZES if args.smoke else SIZES)
    for item in args.size:
        key, _, value = item.partition("=")
        if key not in sizes or not value.isdigit():
            parser.error(f"--size {item!r}: expected KEY=N with KEY one of {sorted(sizes)}")
        sizes[key] = int(value)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    isolate = (not args.smoke) if args.isolate is None else args.isolate
    out = args.out or os.path.join(REPO, "runs", "device", f"device{'-smoke' if args.smoke else ''}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    frameworks = available_frameworks([f for f in args.frameworks if not (args.no_torch and f != "jaxsbert")])
    results: dict = {(m, c, fw): "pending" for m in args.models for c in args.cases for fw in frameworks}
    jsonl = open(out + ".jsonl", "w")

    def write() -> None:
        with open(out, "w") as f:
            f.write(render(describe(results, args, sizes), args.models, args.cases, results))

    write()
    tmp = tempfile.mkdtemp(prefix="jaxsbert-device-")
    log(f"{'smoke' if args.smoke else 'full'} run, {'isolated processes' if isolate else 'one process'}; "
        f"table -> {out}")
    for model in args.models:
        shape = shapes[model]
        model_dir = os.path.join(tmp, model)
        log(f"{model}: writing a random {shape} model")
        if isolate:   # on the CPU, so this process never holds accelerator memory
            subprocess.run([sys.executable, "-c", "import sys; from benchmarks.device import prepare_model; "
                            "prepare_model(sys.argv[1], eval(sys.argv[2]))", model_dir, repr(shape)],
                           cwd=REPO, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        else:
            prepare_model(model_dir, shape)
        for case in args.cases:
            for fw in frameworks:
                elapsed = time.time() - start
                if elapsed > args.budget_s:
                    results[(model, case, fw)] = "skipped (time)"
                    continue
                spec = {"framework": fw, "model": model, "case": case, "model_dir": model_dir, "sizes": sizes,
                        "dtype": args.dtype, "vocab": shape["vocab"], "packing": args.packing == "on"}
                log(f"{model} {case} {fw} ...")
                t = time.time()
                result = run_isolated(spec, args.budget_s + 60 - elapsed) if isolate else run_here(spec)
                results[(model, case, fw)] = result
                summary = (f"{result['per_s']:.1f} {result['unit']}, compile {result['compile_s']:.1f} s"
                           if isinstance(result, dict) else result)
                log(f"{model} {case} {fw}: {summary} ({time.time() - t:.0f} s)")
                jsonl.write(json.dumps({"model": model, "case": case, "framework": fw, "result": result}) + "\n")
                jsonl.flush()
                write()
    jsonl.close()
    write()
    with open(out) as f:
        print(f.read(), flush=True)
    log(f"done in {time.time() - start:.0f} s; table in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
