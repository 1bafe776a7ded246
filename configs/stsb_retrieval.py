"""Retrieval: MultipleNegativesRankingLoss with mined hard negatives on the highly similar STSb pairs
(score >= 4 of 5), evaluated by retrieval (MRR@10, NDCG@10, ...) on a held-out split built from the STSb
test pairs: each test sentence1 of a pair scored >= 4 is a query, its sentence2 the relevant document,
and every distinct sentence2 of the test split (1,337) the corpus. Two commands, offline:

    jaxsbert mine --model sentence-transformers/all-MiniLM-L6-v2 \\
        --dataset '{"source": "stsb", "split": "train", "min_score": 0.8, "columns": ["sentence1", "sentence2"]}' \\
        --output runs/stsb_retrieval/hard_negatives.jsonl --num-negatives 1 --range-min 2 --absolute-margin 0.02
    jaxsbert train configs/stsb_retrieval.py --workdir runs/stsb_retrieval

(all-MiniLM-L6-v2, 1 epoch, batch 32 without duplicate texts in a batch, lr 2e-5, 10% warmup, as
sentence-transformers' SentenceTransformerTrainer defaults). benchmarks/recipes.py runs the same recipe in
sentence-transformers side by side (``--recipes stsb_retrieval``).
"""

MINED = "runs/stsb_retrieval/hard_negatives.jsonl"
TEST_IR = {"type": "information_retrieval", "source": "stsb", "split": "test", "min_score": 0.8,
           "columns": ["sentence1", "sentence2"],
           "corpus": {"source": "stsb", "split": "test", "columns": ["sentence2"]}}


def get_config():
    return {
        "name": "stsb_retrieval",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {"pairs": {"source": MINED}},            # (sentence1, sentence2, negative)
            "eval": {
                "stsb-dev-ir": dict(TEST_IR, split="dev", corpus=dict(TEST_IR["corpus"], split="dev")),
                "stsb-test-ir": dict(TEST_IR, during_training=False),
            },
            "batch_sampler": "no_duplicates",
        },
        "loss": {"name": "MultipleNegativesRankingLoss", "scale": 20.0},
        "batch_size": 32,
        "epochs": 1,
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0},
        "log_every": 10,
        "eval_every": 10,            # ~44 steps: dev (and test) retrieval scores at 0, 10, 20, 30, 40 and the end
        "eval_before": True,
        "best_metric": "stsb-dev-ir_cosine_ndcg@10",
    }
