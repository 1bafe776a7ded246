"""The README.md model card written next to a trained model."""
from __future__ import annotations

import json

import jax


def model_card(config: dict, run, eval_results: dict) -> str:
    c = run.encoder.config
    datasets_ = json.dumps(config["data"]["train"], indent=2, default=str)
    losses = ", ".join(f"{name}: {loss.name}" for name, loss in run.losses.items())
    optim = config["optim"]
    lines = [
        f"# {config['name']}",
        "",
        "A sentence-transformers model fine-tuned with [jaxsbert](https://pypi.org/project/jaxsbert/) (JAX).",
        "It maps sentences to a "
        f"{c.embedding_dim}-dimensional dense vector space.",
        "",
        "## Training",
        f"- Base model: `{config['model']}`",
        f"- Loss: {losses}",
        f"- Steps: {run.total_steps}, global batch size {config['batch_size']}, epochs {config['epochs']}, "
        f"seed {config['seed']}, devices {jax.device_count()}",
        f"- Optimizer: {optim['name']} lr {optim['lr']}, weight decay {optim['weight_decay']}, schedule "
        f"{optim['schedule']} (warmup ratio {optim['warmup_ratio']}, steps {optim['warmup_steps']}), "
        f"max grad norm {optim['max_grad_norm']}",
        f"- Max sequence length: {c.max_seq_length}; compute dtype {config['compute_dtype']}",
        "",
        "Training data:",
        "```json",
        datasets_,
        "```",
        "",
        "## Evaluation",
    ]
    if eval_results:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in sorted(eval_results.items())]
    else:
        lines.append("No evaluator was configured.")
    lines += ["", "## Usage", "```python", "from sentence_transformers import SentenceTransformer",
              "model = SentenceTransformer('path/to/this/directory')",
              "embeddings = model.encode(['A sentence.', 'Another one.'])", "```"]
    return "\n".join(lines) + "\n"
