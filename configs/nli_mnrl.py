"""AllNLI (sentence-transformers/all-nli, "triplet" subset: anchor, positive, negative) with
MultipleNegativesRankingLoss and hard negatives; NO_DUPLICATES batches. Needs the network to fetch
the data (datasets hub); evaluated on the STS benchmark dev/test."""


def get_config():
    return {
        "name": "nli_mnrl",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {"all-nli": {"source": "sentence-transformers/all-nli", "subset": "triplet", "split": "train"}},
            "eval": {"sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"},
                     "sts-test": {"type": "similarity", "source": "stsb", "split": "test", "during_training": False}},
            "batch_sampler": "no_duplicates",
        },
        "loss": {"name": "MultipleNegativesRankingLoss", "scale": 20.0},
        "batch_size": 128,
        "epochs": 1,
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.0},
        "eval_every": 1000,
        "best_metric": "sts-dev_spearman_cosine",
        "checkpoint": {"every_steps": 1000, "keep": 2},
        "compute_dtype": "bfloat16",
    }
