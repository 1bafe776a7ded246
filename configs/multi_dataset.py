"""Multi-dataset training (as sentence-transformers v3): STSb pairs with CoSENTLoss and SICK NLI with
SoftmaxLoss in one run; each batch comes from one dataset, chosen round robin, and is trained with
that dataset's loss."""


def get_config():
    return {
        "name": "multi_dataset",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {
                "stsb": {"source": "stsb", "split": "train"},
                "sick": {"source": "sick", "split": "train", "task": "nli"},
            },
            "eval": {"sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"},
                     "sick-dev-accuracy": {"type": "label_accuracy", "source": "sick", "split": "dev",
                                           "task": "nli", "head": "sick"}},
            "multi_dataset_sampler": "round_robin",
        },
        "loss": {"stsb": {"name": "CoSENTLoss"}, "sick": {"name": "SoftmaxLoss", "num_labels": 3}},
        "batch_size": 16,
        "epochs": 1,
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.0},
        "eval_every": 140,           # 556 steps (278 per dataset): dev scores at 0, 140, 280, 420, 556
    }
