"""Knowledge distillation (sentence-transformers' model_distillation recipe): a 3-layer student cut from
all-MiniLM-L6-v2 (layers 0, 2, 4) learns the 6-layer teacher's embeddings of the STSb + SICK training sentences
with MSELoss; STS benchmark dev during training, test before and after.

First write the teacher's embeddings as the label column (15,354 distinct sentences):

    jaxsbert embed-labels --model sentence-transformers/all-MiniLM-L6-v2 --dataset stsb --dataset sick \\
        --sentences --output runs/distill_mse/teacher_embeddings.jsonl
    jaxsbert train distill_mse --workdir runs/distill_mse/run
"""

TEACHER_EMBEDDINGS = "runs/distill_mse/teacher_embeddings.jsonl"


def get_config():
    return {
        "name": "distill_mse",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "keep_layers": [0, 2, 4],
        "data": {
            "train": {"distill": {"source": TEACHER_EMBEDDINGS}},        # (sentence, label = teacher embedding)
            "eval": {
                "sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"},
                "sts-test": {"type": "similarity", "source": "stsb", "split": "test", "during_training": False},
            },
        },
        "loss": {"name": "MSELoss"},
        "batch_size": 64,
        "epochs": 1,
        "optim": {"lr": 1e-4, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0},
        "log_every": 20,
        "eval_every": 60,
    }
