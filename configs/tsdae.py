"""TSDAE (unsupervised, sentence-transformers' training_tsdae recipe): all-MiniLM-L6-v2 learns to embed the first
2,048 STS benchmark training sentences (sentence1, no labels) so that a BERT decoder tied to it can rebuild each
one from its embedding after 60% of its words were deleted (DenoisingAutoEncoderLoss); STS benchmark dev during
training, test before and after. Constant learning rate 3e-5 and no weight decay, as the sentence-transformers
example."""


def get_config():
    return {
        "name": "tsdae",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": {"sentences": {"source": "stsb", "split": "train", "columns": ["sentence1"], "limit": 2048,
                                    "noise": {"del_ratio": 0.6, "seed": 0}}},       # -> (noisy, sentence1)
            "eval": {
                "sts-dev": {"type": "similarity", "source": "stsb", "split": "dev"},
                "sts-test": {"type": "similarity", "source": "stsb", "split": "test", "during_training": False},
            },
        },
        "loss": {"name": "DenoisingAutoEncoderLoss", "tie_encoder_decoder": True},
        "batch_size": 32,
        "epochs": 1,
        "optim": {"lr": 3e-5, "schedule": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0},
        "log_every": 20,
        "eval_every": 60,
    }
