"""AllNLI triplets (anchor, positive, negative) with TripletLoss (euclidean, margin 5). Needs the
network to fetch the data; evaluated with a TripletEvaluator on the AllNLI dev split and STSb dev."""


def get_config():
    return {
        "name": "nli_triplet",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {"all-nli": {"source": "sentence-transformers/all-nli", "subset": "triplet", "split": "train"}},
            "eval": {"all-nli-dev": {"type": "triplet", "source": "sentence-transformers/all-nli",
                                     "subset": "triplet", "split": "dev"},
                     "sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"}},
        },
        "loss": {"name": "TripletLoss", "distance_metric": "euclidean", "triplet_margin": 5.0},
        "batch_size": 16,
        "epochs": 1,
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.0},
        "eval_every": 2000,
        "best_metric": "all-nli-dev_cosine_accuracy",
    }
