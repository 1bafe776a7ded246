"""SICK NLI with SoftmaxLoss, the SBERT paper's NLI recipe (Reimers & Gurevych 2019) on SICK:
concat(u, v, |u-v|) -> linear -> 3 classes; Adam, lr 2e-5, 10% linear warmup, 1 epoch, batch 16,
mean pooling. Reports the classifier's SICK test accuracy and STS-style Spearman on SICK relatedness, and
the same on the SICK trial (dev) split, also during training (the curves of ``jaxsbert plot``)."""


def get_config():
    return {
        "name": "sick_softmax",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {"sick": {"source": "sick", "split": "train", "task": "nli"}},
            "eval": {
                "sick-dev-accuracy": {"type": "label_accuracy", "source": "sick", "split": "trial",
                                      "task": "nli", "head": "sick"},
                "sick-dev-relatedness": {"type": "similarity", "source": "sick", "split": "trial",
                                         "task": "relatedness"},
                "sick-test-accuracy": {"type": "label_accuracy", "source": "sick", "split": "test",
                                       "task": "nli", "head": "sick", "during_training": False},
                "sick-test-relatedness": {"type": "similarity", "source": "sick", "split": "test",
                                          "task": "relatedness", "during_training": False},
            },
        },
        "loss": {"name": "SoftmaxLoss", "num_labels": 3},
        "batch_size": 16,
        "epochs": 1,
        "optim": {"name": "adam", "lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.0},
        "log_every": 20,
        "eval_every": 70,            # 278 steps: dev (SICK trial) and test scores at 0, 70, 140, 210, 278
    }
