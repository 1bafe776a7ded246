"""Training recipes side by side: sentence-transformers' SentenceTransformerTrainer vs ``jaxsbert train``
on the same model, data and hyper-parameters; prints test scores and wall times.

    python benchmarks/recipes.py                      # stsb_cosent and stsb_cosine, both frameworks
    python benchmarks/recipes.py --recipes sick_softmax --frameworks jaxsbert
    python -m benchmarks.recipes --recipes stsb_cosent --seeds 42 1 2   # mean and sd over seeds
    python -m benchmarks.recipes --recipes stsb_retrieval --seeds 42 1 2  # mine + MNRL, test MRR@10
    python -m benchmarks.recipes --recipes distill_mse --seeds 42 1 2     # teacher labels + MSELoss student
    python -m benchmarks.recipes --recipes gist --seeds 42 1 2            # GISTEmbedLoss with a guide
    python -m benchmarks.recipes --recipes tsdae --seeds 42 1 2           # DenoisingAutoEncoderLoss (unsupervised)

Each run is a fresh process. ``train s`` is, in both frameworks, the time from loading the model to
the end of training: imports and the final test evaluation are not in it; jaxsbert's includes
tokenizing, building the evaluators and compiling its train steps (no compilation cache unless
``--cache-dir``). Run on a quiet machine for clean timings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RECIPES = {
    "stsb_cosent": {"loss": "CoSENTLoss", "data": "stsb"},
    "stsb_cosine": {"loss": "CosineSimilarityLoss", "data": "stsb"},
    "sick_softmax": {"loss": "SoftmaxLoss", "data": "sick"},
    "stsb_retrieval": {"loss": "MultipleNegativesRankingLoss", "data": "stsb_retrieval"},
    "distill_mse": {"loss": "MSELoss", "data": "distill"},
    "gist": {"loss": "GISTEmbedLoss", "data": "gist"},
    "tsdae": {"loss": "DenoisingAutoEncoderLoss", "data": "tsdae"},
}
# configs/gist.py's datasets: the high-similarity pairs of STSb and SICK
GIST_DATASETS = {"stsb": {"source": "stsb", "split": "train", "min_score": 0.8, "columns": ["sentence1", "sentence2"]},
                 "sick": {"source": "sick", "split": "train", "task": "relatedness", "min_score": 0.8,
                          "columns": ["sentence1", "sentence2"]}}


def run_st_gist(seed: int) -> dict:
    """configs/gist.py in sentence-transformers: GISTEmbedLoss with all-MiniLM-L6-v2 as the guide on both datasets,
    NO_DUPLICATES batches, proportional multi-dataset sampling."""
    import torch
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.training_args import BatchSamplers

    from jaxsbert.data import load_dataset
    from jaxsbert.models.bundled import resolve_model

    torch.manual_seed(seed)
    t = time.time()
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    model, guide = SentenceTransformer(path, device="cpu"), SentenceTransformer(path, device="cpu")
    train = DatasetDict({name: Dataset.from_dict(load_dataset(spec).to_dict()) for name, spec in GIST_DATASETS.items()})
    loss = losses.GISTEmbedLoss(model, guide, temperature=0.01)
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=32, learning_rate=2e-5,
        warmup_ratio=0.1, weight_decay=0.01, seed=seed, save_strategy="no", logging_steps=50, report_to="none",
        use_cpu=True, dataloader_drop_last=False, batch_sampler=BatchSamplers.NO_DUPLICATES)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss={n: loss for n in train}).train()
    seconds = time.time() - t
    test = load_dataset({"source": "stsb", "split": "test"})
    evaluator = EmbeddingSimilarityEvaluator(test["sentence1"], test["sentence2"], test["score"], name="test")
    return {"framework": "sentence-transformers", "recipe": "gist", "train_seconds": round(seconds, 1),
            "test_spearman_cosine": float(evaluator(model)["test_spearman_cosine"])}
# configs/distill_mse.py: the teacher labels every distinct STSb + SICK training sentence; the student keeps these layers
DISTILL_SOURCES = ({"source": "stsb", "split": "train"}, {"source": "sick", "split": "train"})
DISTILL_LAYERS = [0, 2, 4]


def distill_sentences() -> list[str]:
    from jaxsbert import data as jdata

    loaded = [jdata.load_dataset(spec) for spec in DISTILL_SOURCES]
    return list(dict.fromkeys(t for ds in loaded for c in jdata.split_columns(ds).inputs for t in ds[c]))


def run_st_distill(seed: int) -> dict:
    """configs/distill_mse.py in sentence-transformers (its model_distillation example): the teacher embeds the
    sentences, a student of the teacher's layers 0, 2, 4 learns them with MSELoss."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from jaxsbert.data import load_dataset
    from jaxsbert.models.bundled import resolve_model

    torch.manual_seed(seed)
    t = time.time()
    teacher = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    sentences = distill_sentences()
    train = Dataset.from_dict({"sentence": sentences, "label": list(teacher.encode(sentences, batch_size=64))})
    student = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    auto = student[0].auto_model
    auto.encoder.layer = torch.nn.ModuleList([auto.encoder.layer[i] for i in DISTILL_LAYERS])
    auto.config.num_hidden_layers = len(DISTILL_LAYERS)
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=64, learning_rate=1e-4,
        warmup_ratio=0.1, weight_decay=0.01, seed=seed, save_strategy="no", logging_steps=50, report_to="none",
        use_cpu=True, dataloader_drop_last=False)
    SentenceTransformerTrainer(model=student, args=args, train_dataset=train, loss=losses.MSELoss(student)).train()
    seconds = time.time() - t
    test = load_dataset({"source": "stsb", "split": "test"})
    evaluator = EmbeddingSimilarityEvaluator(test["sentence1"], test["sentence2"], test["score"], name="test")
    return {"framework": "sentence-transformers", "recipe": "distill_mse", "train_seconds": round(seconds, 1),
            "test_spearman_cosine": float(evaluator(student)["test_spearman_cosine"]), "sentences": len(sentences)}
# configs/stsb_retrieval.py's mining step, in both frameworks
MINE_SPEC = {"source": "stsb", "split": "train", "min_score": 0.8, "columns": ["sentence1", "sentence2"]}
MINE_OPTIONS = dict(num_negatives=1, range_min=2, absolute_margin=0.02)


def run_st_retrieval(seed: int) -> dict:
    """configs/stsb_retrieval.py in sentence-transformers: mine, train MNRL (NO_DUPLICATES), evaluate IR on
    the test split built as the config's information_retrieval evaluator builds it."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.training_args import BatchSamplers
    from sentence_transformers.util import mine_hard_negatives

    from jaxsbert.config import load_config_file
    from jaxsbert.data import load_dataset
    from jaxsbert.models.bundled import resolve_model
    from jaxsbert.training.evaluators import build_evaluator

    torch.manual_seed(seed)
    t = time.time()
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    pairs = Dataset.from_dict(load_dataset(MINE_SPEC).to_dict())
    train = mine_hard_negatives(pairs, model, verbose=False, **MINE_OPTIONS)
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=32, learning_rate=2e-5,
        warmup_ratio=0.1, seed=seed, save_strategy="no", logging_steps=50, report_to="none", use_cpu=True,
        dataloader_drop_last=False, batch_sampler=BatchSamplers.NO_DUPLICATES)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=losses.MultipleNegativesRankingLoss(model))
    trainer.train()
    seconds = time.time() - t
    # the query/corpus split exactly as the config's evaluator builds it
    ours = build_evaluator("test", load_config_file("stsb_retrieval")["data"]["eval"]["stsb-test-ir"])
    ir = InformationRetrievalEvaluator(dict(zip(ours.queries_ids, ours.queries)), dict(zip(ours.corpus_ids, ours.corpus)),
                                       ours.relevant_docs, name="test")
    metrics = ir(model)
    return {"framework": "sentence-transformers", "recipe": "stsb_retrieval", "train_seconds": round(seconds, 1),
            "test_mrr@10": float(metrics["test_cosine_mrr@10"]), "test_ndcg@10": float(metrics["test_cosine_ndcg@10"]),
            "mined_rows": len(train)}


def jaxsbert_start(recipe: str, seed: int) -> tuple[list[list[int]], dict, dict]:
    """What jaxsbert's run of ``recipe`` at ``seed`` starts from: the rows of each training batch (one dataset,
    epoch 0), its loss heads' initial parameters ({dataset: head}) and its losses ({dataset: Loss})."""
    from jaxsbert.config import build_config
    from jaxsbert.training.loop import initial_heads, prepare

    run = prepare(build_config(recipe, [f"seed={seed}"]))
    batches = [[int(r) for r in rows] for _, rows in run.loader.plan(0)]
    return batches, initial_heads(run, seed), run.losses


def fixed_order_sampler(batches: list[list[int]]):
    """A sentence-transformers ``batch_sampler`` (callable) that yields ``batches`` in this order every epoch."""
    from sentence_transformers.sampler import DefaultBatchSampler

    class FixedOrder(DefaultBatchSampler):
        def __iter__(self):
            return iter([list(b) for b in batches])

        def __len__(self):
            return len(batches)

    return lambda dataset, **kwargs: FixedOrder(dataset, **kwargs)


def run_st_tsdae(seed: int) -> dict:
    """configs/tsdae.py in sentence-transformers (its training_tsdae example): DenoisingAutoEncoderLoss with a
    decoder tied to the model, on the same (damaged, original) rows (the config's noise, drawn once), in the
    same batches as jaxsbert's run at this seed, from the same initial decoder head (jaxsbert's draw loaded
    into sentence-transformers' decoder). The batch order and the head's random draw decide much of TSDAE's
    outcome at 64 steps (RESULTS.md: 0.33 to 0.59 over orders and draws, while the two frameworks given the
    same order and draw agree within 0.014), so with independent draws three seeds cannot resolve 0.005;
    the dropout masks stay each framework's own."""
    import numpy as np
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from jaxsbert.config import load_config_file
    from jaxsbert.data import load_dataset
    from jaxsbert.models.bundled import resolve_model

    batches, heads, jax_losses = jaxsbert_start("tsdae", seed)      # before the clock starts
    torch.manual_seed(seed)
    t = time.time()
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    model = SentenceTransformer(path, device="cpu")
    train = Dataset.from_dict(load_dataset(load_config_file("tsdae")["data"]["train"]["sentences"]).to_dict())
    loss = losses.DenoisingAutoEncoderLoss(model, decoder_name_or_path=path, tie_encoder_decoder=True)
    head = {k: torch.tensor(np.array(v)) for k, v in jax_losses["sentences"].head_state_dict(heads["sentences"]).items()}
    unexpected = loss.load_state_dict(head, strict=False).unexpected_keys
    assert not unexpected and all(torch.equal(loss.state_dict()[k], v) for k, v in head.items()), unexpected
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=32, learning_rate=3e-5,
        lr_scheduler_type="constant", weight_decay=0.0, seed=seed, save_strategy="no", logging_steps=50,
        report_to="none", use_cpu=True, dataloader_drop_last=False, batch_sampler=fixed_order_sampler(batches))
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    seconds = time.time() - t
    test = load_dataset({"source": "stsb", "split": "test"})
    evaluator = EmbeddingSimilarityEvaluator(test["sentence1"], test["sentence2"], test["score"], name="test")
    return {"framework": "sentence-transformers", "recipe": "tsdae", "train_seconds": round(seconds, 1),
            "test_spearman_cosine": float(evaluator(model)["test_spearman_cosine"])}


def run_sentence_transformers(recipe: str, seed: int = 42) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from jaxsbert.data import load_dataset
    from jaxsbert.models.bundled import resolve_model

    if recipe == "stsb_retrieval":
        return run_st_retrieval(seed)
    if recipe == "distill_mse":
        return run_st_distill(seed)
    if recipe == "gist":
        return run_st_gist(seed)
    if recipe == "tsdae":
        return run_st_tsdae(seed)
    torch.manual_seed(seed)
    t = time.time()     # as jaxsbert's clock: from loading the model to the end of training, imports excluded
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    spec = RECIPES[recipe]
    if spec["data"] == "stsb":
        train = Dataset.from_dict(load_dataset({"source": "stsb", "split": "train"}).to_dict())
        test = load_dataset({"source": "stsb", "split": "test"})
        loss = losses.CoSENTLoss(model) if spec["loss"] == "CoSENTLoss" else losses.CosineSimilarityLoss(model)
    else:
        train = Dataset.from_dict(load_dataset({"source": "sick", "split": "train", "task": "nli"}).to_dict())
        test = load_dataset({"source": "sick", "split": "test", "task": "relatedness"})
        loss = losses.SoftmaxLoss(model, model.get_sentence_embedding_dimension(), num_labels=3)
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=16, learning_rate=2e-5,
        warmup_ratio=0.1, seed=seed, save_strategy="no", logging_steps=50, report_to="none", use_cpu=True,
        dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    trainer.train()
    seconds = time.time() - t
    evaluator = EmbeddingSimilarityEvaluator(test["sentence1"], test["sentence2"], test["score"], name="test")
    result = {"framework": "sentence-transformers", "recipe": recipe, "train_seconds": round(seconds, 1),
              "test_spearman_cosine": float(evaluator(model)["test_spearman_cosine"])}
    if spec["data"] == "sick":
        nli_test = load_dataset({"source": "sick", "split": "test", "task": "nli"})
        with torch.no_grad():
            u = model.encode(nli_test["premise"], convert_to_tensor=True)
            v = model.encode(nli_test["hypothesis"], convert_to_tensor=True)
            logits = loss.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
        result["test_accuracy"] = float((logits.argmax(-1).numpy() == np.asarray(nli_test["label"])).mean())
    return result


def run_jaxsbert(recipe: str, seed: int = 42) -> dict:
    import transformers  # noqa: F401  (imported before the clock starts, as sentence-transformers' side does)
    from transformers import AutoTokenizer  # noqa: F401

    from jaxsbert.config import build_config
    from jaxsbert.training.loop import train

    overrides = [f"seed={seed}", "eval_before=False", "eval_every=0", "save_model=False"]   # evaluate at the end only, as the sentence-transformers side
    workdir = tempfile.mkdtemp()
    t = time.time()
    prep_seconds, mined_rows = 0.0, None
    if recipe == "stsb_retrieval":      # the config's first command, `jaxsbert mine`, in this process (timed)
        from jaxsbert.data import load_dataset
        from jaxsbert.encoder import SentenceEncoder
        from jaxsbert.mining import mine_hard_negatives
        from jaxsbert.models.bundled import resolve_model

        encoder = SentenceEncoder.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
        mined = mine_hard_negatives(load_dataset(MINE_SPEC), encoder, progress=False, **MINE_OPTIONS)
        path = os.path.join(workdir, "hard_negatives.jsonl")
        mined.to_json(path, lines=True)
        prep_seconds, mined_rows = time.time() - t, len(mined)
        overrides += [f"data.train.pairs.source={path!r}", "best_metric=None"]
    if recipe == "distill_mse":       # the config's first command, `jaxsbert embed-labels`, in this process (timed)
        from datasets import Dataset

        from jaxsbert.distill import embed_labels
        from jaxsbert.encoder import SentenceEncoder
        from jaxsbert.models.bundled import resolve_model

        teacher = SentenceEncoder.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
        labelled = embed_labels(Dataset.from_dict({"sentence": distill_sentences()}), teacher)
        path = os.path.join(workdir, "teacher_embeddings.jsonl")
        labelled.to_json(path, lines=True)
        prep_seconds = time.time() - t
        overrides += [f"data.train.distill.source={path!r}"]
    config = build_config(recipe, overrides)
    summary = train(config, os.path.join(workdir, "run"))
    seconds = summary["train_seconds"] + prep_seconds
    result = {"framework": "jaxsbert", "recipe": recipe, "train_seconds": round(seconds, 1),
              "wall_seconds_with_eval": round(time.time() - t, 1)}
    ev = summary["eval"]
    if "sts-test_spearman_cosine" in ev:
        result["test_spearman_cosine"] = ev["sts-test_spearman_cosine"]
    if "sick-test-relatedness_spearman_cosine" in ev:
        result["test_spearman_cosine"] = ev["sick-test-relatedness_spearman_cosine"]
    if "sick-test-accuracy_accuracy" in ev:
        result["test_accuracy"] = ev["sick-test-accuracy_accuracy"]
    if "stsb-test-ir_cosine_mrr@10" in ev:
        result.update({"test_mrr@10": ev["stsb-test-ir_cosine_mrr@10"], "test_ndcg@10": ev["stsb-test-ir_cosine_ndcg@10"],
                       "mined_rows": mined_rows, "prep_seconds": round(prep_seconds, 1)})
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", nargs="+", default=["stsb_cosent", "stsb_cosine"], choices=sorted(RECIPES))
    parser.add_argument("--frameworks", nargs="+", default=["jaxsbert", "sentence-transformers"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42],
                        help="one run per seed and framework; with several, means and standard deviations")
    parser.add_argument("--cache-dir", default=None,
                        help="jaxsbert's persistent compilation cache for every run (the first run fills it); "
                             "default: none, every run compiles (a fresh machine)")
    parser.add_argument("--one", nargs=3, metavar=("FRAMEWORK", "RECIPE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        fn = run_jaxsbert if args.one[0] == "jaxsbert" else run_sentence_transformers
        print("RESULT " + json.dumps(dict(fn(args.one[1], int(args.one[2])), seed=int(args.one[2]))), flush=True)
        return
    import numpy as np

    from benchmarks.common import machine_description, run_worker
    print(machine_description())
    results = []
    for recipe in args.recipes:
        for seed in args.seeds:
            for fw in args.frameworks:   # each run in a fresh process: no shared warm state or threads
                results.append(run_worker([__file__, "--one", fw, recipe, str(seed)], f"{fw} {recipe} seed {seed}", fw,
                                          compilation_cache=os.path.abspath(args.cache_dir) if args.cache_dir else "0"))
                print(json.dumps(results[-1]), flush=True)
    score_key = lambda recipe: "test_mrr@10" if recipe == "stsb_retrieval" else "test_spearman_cosine"
    print(f"\n{'recipe':14} {'framework':22} {'seed':>5} {'test score':>14} {'accuracy':>9} {'train s':>8}")
    for r in results:
        acc = f"{r['test_accuracy']:.4f}" if "test_accuracy" in r else ""
        print(f"{r['recipe']:14} {r['framework']:22} {r['seed']:5d} {r[score_key(r['recipe'])]:14.4f} {acc:>9} "
              f"{r['train_seconds']:8.1f}")
    for recipe in args.recipes:
        mean = {}
        for fw in args.frameworks:
            runs = [r for r in results if r["recipe"] == recipe and r["framework"] == fw]
            scores, seconds = [r[score_key(recipe)] for r in runs], [r["train_seconds"] for r in runs]
            mean[fw] = float(np.mean(seconds))
            print(f"{recipe} {fw}: {score_key(recipe)} mean {np.mean(scores):.4f} (sd {np.std(scores):.4f}, "
                  f"{len(runs)} seed(s)), train time mean {mean[fw]:.1f} s")
        if len(mean) == 2:
            ratio = mean["jaxsbert"] / mean["sentence-transformers"]
            print(f"{recipe}: jaxsbert wall time = {ratio:.2f}x sentence-transformers'")


if __name__ == "__main__":
    main()
