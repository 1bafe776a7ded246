"""STS benchmark, CoSENTLoss: sentence-transformers' training_stsbenchmark recipe
(all-MiniLM-L6-v2, 1 epoch, batch 16, lr 2e-5, 10% warmup, SentenceTransformerTrainer defaults:
AdamW, weight decay 0, max grad norm 1). Scores are rescaled to [0, 1]."""


def get_config():
    return {
        "name": "stsb_cosent",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {"stsb": {"source": "stsb", "split": "train"}},
            "eval": {
                "sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"},
                "sts-test": {"type": "similarity", "source": "stsb", "split": "test", "during_training": False},
            },
        },
        "loss": {"name": "CoSENTLoss", "scale": 20.0},
        "batch_size": 16,
        "epochs": 1,
        "optim": {"lr": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0},
        "log_every": 20,
        "eval_before": True,
        "eval_every": 90,            # 360 steps: dev (and test) Spearman at 0, 90, 180, 270, 360
    }
