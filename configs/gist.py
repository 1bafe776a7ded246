"""GISTEmbedLoss: all-MiniLM-L6-v2 trained on the high-similarity pairs of STSb (score >= 4 of 5: 1,406 pairs) and
SICK (relatedness >= 4 of 5: 1,651 pairs) with in-batch negatives, a frozen copy of all-MiniLM-L6-v2 as the guide
that drops the negatives it scores above the positive (false negatives: a near-duplicate pair in the batch);
STS benchmark dev during training, test before and after."""

GUIDED = {"name": "GISTEmbedLoss", "guide": "sentence-transformers/all-MiniLM-L6-v2", "temperature": 0.01}


def get_config():
    return {
        "name": "gist",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {
                "stsb": {"source": "stsb", "split": "train", "min_score": 0.8, "columns": ["sentence1", "sentence2"]},
                "sick": {"source": "sick", "split": "train", "task": "relatedness", "min_score": 0.8,
                         "columns": ["sentence1", "sentence2"]},
            },
            "eval": {
                "sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"},
                "sts-test": {"type": "similarity", "source": "stsb", "split": "test", "during_training": False},
            },
            "batch_sampler": "no_duplicates",
        },
        "loss": {"stsb": GUIDED, "sick": GUIDED},
        "batch_size": 32,
        "epochs": 1,
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0},
        "log_every": 10,
        "eval_every": 30,
    }
