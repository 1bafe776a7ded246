"""The model card (README.md) of a saved model, laid out as sentence-transformers' own
(sentence_transformers/sentence_transformer/model_card_template.md).

One card, written by :func:`model_card`: a YAML header (library_name, tags, datasets, metrics, pipeline_tag,
model-index, base_model) and one body: what the model is, its architecture, usage, and, for a trained model,
the evaluation before and after training, the training datasets (rows, columns, loss and its arguments),
the hyper-parameters, the training log and the framework versions.

What a card says about training is read from the run's workdir (config.json, metrics.jsonl) and the step
of the saved parameters (:func:`read_run`), so ``jaxsbert train`` and ``jaxsbert export`` write the same card.

Who reads the header: the Hugging Face Hub and ``huggingface_hub.ModelCard.load(dir).data`` (base_model,
model-index, ...). sentence-transformers (6.3) keeps this README when it loads and re-saves the model, but
does not parse it: ``SentenceTransformer(dir).model_card_data.base_model`` is set only for a model loaded
from the Hub by its id (it asks the Hub), never from a local directory's files.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
from typing import Any, Mapping

# evaluator type in a config -> (sentence-transformers class name, its description: the model-index task)
EVALUATORS = {
    "similarity": ("EmbeddingSimilarityEvaluator", "Semantic Similarity"),
    "binary": ("BinaryClassificationEvaluator", "Binary Classification"),
    "triplet": ("TripletEvaluator", "Triplet"),
    "information_retrieval": ("InformationRetrievalEvaluator", "Information Retrieval"),
    "reranking": ("RerankingEvaluator", "Reranking"),
    "label_accuracy": ("LabelAccuracyEvaluator", "Label Accuracy"),
}
SIMILARITY_NAMES = {"cosine": "Cosine Similarity", "dot": "Dot Product", "euclidean": "Euclidean Distance",
                    "manhattan": "Manhattan Distance"}
# config keys that are the machine's, not the training's: left out of the hyper-parameters
_NOT_HYPERPARAMETERS = ("name", "model", "data.train", "data.eval", "data.data_root", "loss", "distributed",
                        "compilation_cache")
_ST_LOSS_DOCS = "https://sbert.net/docs/package_reference/sentence_transformer/losses.html#"
_ST_CITATION = """@inproceedings{reimers-2019-sentence-bert,
    title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    month = "11",
    year = "2019",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/1908.10084",
}"""


@dataclasses.dataclass
class TrainingRun:
    """What a card says about the training that produced a model's parameters."""
    config: dict                       # the run's config (WORKDIR/config.json)
    step: int                          # the training step of these parameters
    records: list[dict]                # metrics.jsonl up to ``step``: one per (kind, step), by step
    datasets: dict[str, dict]          # training dataset -> {"loss", "loss_config", ["size", "columns"]}
    total_steps: int | None = None     # the run's planned steps, where known
    exported_from: str | None = None   # the checkpoint directory ``jaxsbert export`` read, if it wrote the card


# --------------------------------------------------------------------------- reading a run

def read_run(workdir: str, step: int, datasets: dict[str, dict], *, config: dict | None = None,
             total_steps: int | None = None, exported_from: str | None = None) -> TrainingRun:
    """The :class:`TrainingRun` of the parameters of ``step`` in ``workdir``: its config.json (unless
    ``config`` is given) and the records of its metrics.jsonl up to ``step`` (none if the file is missing).
    A resumed run logs the steps after its checkpoint again: the last record of each (kind, step) is kept."""
    from jaxsbert.training.metrics import read_metrics

    if config is None:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
    try:
        records = read_metrics(workdir)
    except FileNotFoundError:
        records = []
    last = {(r.get("kind"), r.get("step")): r for r in records if isinstance(r.get("step"), int) and r["step"] <= step}
    ordered = sorted(last.values(), key=lambda r: (r["step"], r.get("kind") != "train"))
    if total_steps is None:     # a train record's total_steps, else config max_steps when set
        logged = [r["total_steps"] for r in ordered if isinstance(r.get("total_steps"), int) and r["total_steps"] > 0]
        max_steps = config.get("max_steps")
        total_steps = logged[-1] if logged else (max_steps if isinstance(max_steps, int) and max_steps > 0 else None)
    return TrainingRun(config, int(step), ordered, datasets, total_steps, exported_from)


def dataset_facts(sources: Mapping[str, Any], losses: Mapping[str, Any]) -> dict[str, dict]:
    """{training dataset: {"loss", "loss_config", "size", "columns"}} from the loss objects and the data
    sources (``jaxsbert.data`` RowSources; a name missing from ``sources`` gets no size or columns)."""
    out = {}
    for name, loss in losses.items():
        facts = {"loss": loss.name, "loss_config": loss.config_dict()}
        source = sources.get(name)
        if source is not None:
            facts["size"] = len(source)
            facts["columns"] = list(source.columns.inputs) + ([source.columns.label] if source.columns.label else [])
        out[name] = facts
    return out


def saved_step(records: list[dict], eval_results: Mapping[str, float]) -> int | None:
    """The step of parameters saved right after an evaluation gave ``eval_results``: the latest eval record
    holding exactly these results; without results, the latest training record's step."""
    for r in reversed(records):
        if eval_results and r.get("kind") == "eval" and all(r.get(k) == v for k, v in eval_results.items()):
            return int(r["step"])
        if not eval_results and r.get("kind") == "train":
            return int(r["step"])
    return None


def base_model_id(name: str | None) -> str | None:
    """The hub id of the model a run started from (config ``model``): an ``org/name`` that is not a local
    path, or a bundled model's short name (``all-MiniLM-L6-v2``) completed; None for a local directory."""
    from jaxsbert.models.bundled import BUNDLED

    if not name or os.path.exists(name) or os.path.isabs(name) or name.startswith("."):
        return None
    if f"sentence-transformers/{name}" in BUNDLED:
        return f"sentence-transformers/{name}"
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) else None


# --------------------------------------------------------------------------- the card

def model_card(model, *, base_model: str | None = None, similarity_fn_name: str = "cosine",
               run: TrainingRun | None = None, architecture: str | None = None) -> str:
    """The README.md of a model (``model``: its SentenceModelConfig), trained by ``run`` if given.
    ``architecture``: the modules as sentence-transformers prints them (:func:`architecture_of` a saved
    directory); by default from ``model``."""
    title = f"SentenceTransformer based on {base_model}" if base_model else "Sentence Transformer model"
    evaluations = _evaluations(run) if run else []
    header = _yaml_header(title, base_model, run, evaluations)
    body = [f"# {title}", "", _intro(model, run), "", "## Model Details", "", "### Model Description",
            *_description(model, base_model, similarity_fn_name, run), "",
            "### Full Model Architecture", "", "```", architecture or _architecture(model), "```", "",
            *_usage(model), ""]
    if evaluations:
        body += _evaluation_section(evaluations, run)
    if run:
        body += _training_section(run, evaluations)
    body += [f"{'###' if run else '##'} Framework Versions", *[f"- {k}: {v}" for k, v in framework_versions().items()], "",
             "## Citation", "", "### BibTeX", "", "#### Sentence Transformers", "```bibtex", _ST_CITATION, "```"]
    return header + "\n" + "\n".join(body) + "\n"


def framework_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that trained and wrote the model."""
    out = {"Python": platform.python_version()}
    for label, dist in (("jaxsbert", "jaxsbert"), ("JAX", "jax"), ("Flax", "flax"), ("Optax", "optax"),
                        ("Transformers", "transformers"), ("Tokenizers", "tokenizers"), ("Datasets", "datasets")):
        try:
            out[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _yaml_header(title: str, base_model: str | None, run: TrainingRun | None, evaluations: list[dict]) -> str:
    import yaml

    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "jaxsbert"]
    meta: dict[str, Any] = {"library_name": "sentence-transformers"}
    if run:
        tags.append("generated_from_trainer")
        sizes = [d["size"] for d in run.datasets.values() if d.get("size")]
        if sizes:
            tags.append(f"dataset_size:{sum(sizes)}")
        tags += [f"loss:{name}" for name in _loss_names(run)]
    meta["tags"] = tags
    hub = _hub_datasets(run) if run else []
    if hub:
        meta["datasets"] = hub
    final = [e for e in evaluations if e["after"]]
    if final:
        meta["metrics"] = list(dict.fromkeys(k for e in final for k in e["after"]))
    meta["pipeline_tag"] = "sentence-similarity"
    if final:
        meta["model-index"] = [{"name": title, "results": [_model_index_result(e) for e in final]}]
    if base_model:
        meta["base_model"] = base_model
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _model_index_result(evaluation: dict) -> dict:
    dataset = {"name": evaluation["name"].replace("_", " ").replace("-", " "), "type": evaluation["name"]}
    if evaluation["split"]:
        dataset["split"] = evaluation["split"]
    return {"task": {"type": evaluation["description"].lower().replace(" ", "-"), "name": evaluation["description"]},
            "dataset": dataset,
            "metrics": [{"type": k, "value": v, "name": k.replace("_", " ").title()}
                        for k, v in evaluation["after"].items()]}


def _intro(model, run: TrainingRun | None) -> str:
    named = [n for n in run.datasets] if run else []
    trained = (f" trained with [jaxsbert](https://pypi.org/project/jaxsbert/) (JAX) on the {_join(named)} "
               f"dataset{'s' if len(named) > 1 else ''}") if run else " written by [jaxsbert](https://pypi.org/project/jaxsbert/) (JAX)"
    return (f"This is a [sentence-transformers](https://www.SBERT.net) model{trained}. It maps sentences & "
            f"paragraphs to a {model.embedding_dim}-dimensional dense vector space and can be used for semantic "
            "textual similarity, semantic search, paraphrase mining, text classification, clustering, and more.")


def _description(model, base_model: str | None, similarity_fn_name: str, run: TrainingRun | None) -> list[str]:
    lines = ["- **Model Type:** Sentence Transformer"]
    if base_model:
        lines.append(f"- **Base model:** [{base_model}](https://huggingface.co/{base_model})")
    lines += [f"- **Maximum Sequence Length:** {model.max_seq_length} tokens",
              f"- **Output Dimensionality:** {model.embedding_dim} dimensions",
              f"- **Similarity Function:** {SIMILARITY_NAMES.get(similarity_fn_name, similarity_fn_name)}"]
    if run:
        lines.append(f"- **Training Dataset{'s' if len(run.datasets) > 1 else ''}:**")
        lines += [f"    - {name}" for name in run.datasets]
    return lines


def _architecture(model) -> str:
    from jaxsbert.models import families
    from jaxsbert.models.heads import DenseConfig
    from jaxsbert.models.pooling import PoolingConfig

    transformer = {"max_seq_length": model.max_seq_length, "do_lower_case": model.do_lower_case,
                   "architecture": families.FAMILIES[model.family].hf_architecture}
    modules = [f"Transformer({transformer})"]
    for module in model.modules:
        if isinstance(module, (PoolingConfig, DenseConfig)):
            modules.append(f"{type(module).__name__.replace('Config', '')}({module.to_st_dict()})")
        else:
            modules.append("Normalize()")
    return "\n".join(["SentenceTransformer("] + [f"  ({i}): {m}" for i, m in enumerate(modules)] + [")"])


def architecture_of(directory: str) -> str:
    """The modules of a saved sentence-transformers directory as sentence-transformers prints them (from
    its modules.json and the modules' config files)."""
    def read(*path):
        with open(os.path.join(directory, *path), encoding="utf8") as f:
            return json.load(f)
    modules = []
    for module in read("modules.json"):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            config = dict(read(module["path"], "sentence_bert_config.json"))
            config["architecture"] = read(module["path"], "config.json").get("architectures", ["?"])[0]
            modules.append(f"Transformer({config})")
        elif os.path.exists(os.path.join(directory, module["path"], "config.json")):
            modules.append(f"{kind}({read(module['path'], 'config.json')})")
        else:
            modules.append(f"{kind}()")
    return "\n".join(["SentenceTransformer("] + [f"  ({i}): {m}" for i, m in enumerate(modules)] + [")"])


def _usage(model) -> list[str]:
    return ["## Usage", "",
            "With sentence-transformers (`pip install -U sentence-transformers`):", "",
            "```python", "from sentence_transformers import SentenceTransformer", "",
            'model = SentenceTransformer("path/to/this/model")',
            "sentences = [", '    "The weather is lovely today.",', '    "It\'s so sunny outside!",',
            '    "He drove to the stadium.",', "]",
            "embeddings = model.encode(sentences)", "print(embeddings.shape)", f"# [3, {model.embedding_dim}]", "",
            "similarities = model.similarity(embeddings, embeddings)", "print(similarities.shape)", "# [3, 3]",
            "```", "",
            "With jaxsbert (`pip install jaxsbert`):", "",
            "```python", "from jaxsbert import SentenceEncoder", "",
            'model = SentenceEncoder.from_pretrained("path/to/this/model")',
            'embeddings = model.encode(["The weather is lovely today.", "It\'s so sunny outside!"])', "```", "",
            "The encoder alone (token embeddings, without the modules after it) loads with "
            "`transformers.AutoModel.from_pretrained`."]


# --------------------------------------------------------------------------- evaluation

def _evaluations(run: TrainingRun) -> list[dict]:
    """Per configured evaluator: its name, type, class, description, dataset text, split, primary metric,
    and its metrics (unprefixed) at step 0 ("before") and at the model's step ("after"), {} where none ran."""
    specs = run.config.get("data", {}).get("eval", {}) or {}
    evals = {r["step"]: r for r in run.records if r.get("kind") == "eval"}
    out = []
    for name, spec in specs.items():
        kind = spec.get("type", "similarity") if isinstance(spec, dict) else "similarity"
        cls, description = EVALUATORS.get(kind, (kind, kind.replace("_", " ").title()))

        def metrics_at(step):
            record = evals.get(step, {})
            return {k[len(name) + 1:]: v for k, v in record.items()
                    if k.startswith(name + "_") and _owner(k, specs) == name and isinstance(v, (int, float))}
        after = metrics_at(run.step)
        before = metrics_at(0) if run.step != 0 else {}
        out.append({"name": name, "type": kind, "class": cls, "description": description,
                    "dataset": _spec_text(spec), "split": spec.get("split") if isinstance(spec, dict) else None,
                    "primary": _primary_metric(kind, spec, after or before), "before": before, "after": after})
    return out


def _owner(key: str, specs: Mapping) -> str | None:
    """The evaluator a metric key belongs to: the longest evaluator name that prefixes it."""
    names = [n for n in specs if key.startswith(n + "_")]
    return max(names, key=len) if names else None


def _primary_metric(kind: str, spec: Any, metrics: Mapping[str, float]) -> str | None:
    """The evaluator's primary metric (unprefixed), as jaxsbert's evaluators choose it."""
    from jaxsbert.evaluation.binary_classification import binary_primary_metric
    from jaxsbert.evaluation.embedding_similarity import similarity_primary_metric
    from jaxsbert.evaluation.triplet import triplet_primary_metric

    spec = spec if isinstance(spec, dict) else {}
    fns = list(spec.get("similarity_fn_names") or ["cosine"])
    if kind == "similarity":
        key = similarity_primary_metric(fns, spec.get("main_similarity"))
    elif kind == "binary":
        key = binary_primary_metric(fns)
    elif kind == "triplet":
        key = triplet_primary_metric(fns, spec.get("main_similarity"))
    elif kind == "label_accuracy":
        key = "accuracy"
    elif kind == "reranking":
        key = f"ndcg@{spec.get('at_k', 10)}"
    else:    # information_retrieval: the main score function's, else the best function's ndcg at the largest k
        ndcg = [k for k in metrics if "_ndcg@" in k]
        main = spec.get("main_score_function")
        ndcg = [k for k in ndcg if k.startswith(f"{main}_")] if main else ndcg
        key = max(ndcg, key=lambda k: (int(k.rsplit("@", 1)[1]), metrics[k])) if ndcg else None
    if key in metrics or not metrics:
        return key
    return next(iter(metrics))


def _evaluation_section(evaluations: list[dict], run: TrainingRun) -> list[str]:
    lines = ["## Evaluation", "", "### Metrics", ""]
    for e in evaluations:
        lines += [f"#### {e['description']}", "", f"* Dataset: `{e['name']}`, from {e['dataset']}",
                  f"* Evaluated with `{e['class']}` (jaxsbert's, with sentence-transformers' metrics)", ""]
        columns = [(f"Before training (step 0)", e["before"])] if e["before"] else []
        if e["after"]:
            columns.append((f"{'After training' if run.step else 'Untrained'} (step {run.step})", e["after"]))
        if not columns:
            lines += [f"This evaluator did not run at step 0 or at step {run.step}.", ""]
            continue
        keys = list(dict.fromkeys(k for _, m in columns for k in m))
        rows = [["Metric"] + [c for c, _ in columns]]
        for k in keys:
            bold = k == e["primary"]
            rows.append([_bold(k, bold)] + [_bold(_fmt(m[k]), bold) if k in m else "-" for _, m in columns])
        lines += _table(rows) + [""]
        if not e["after"]:
            lines += [f"These parameters (step {run.step}) were not evaluated; the training log below shows the "
                      "evaluations that ran.", ""]
    return lines


# --------------------------------------------------------------------------- training details

def _training_section(run: TrainingRun, evaluations: list[dict]) -> list[str]:
    config = run.config
    epoch = next((r.get("epoch") for r in run.records if r.get("kind") == "train" and r["step"] == run.step), None)
    of = f" of {run.total_steps}" if run.total_steps else ""
    at = f" (epoch {_fmt(epoch)})" if isinstance(epoch, (int, float)) else ""
    lines = ["## Training Details", "",
             f"These parameters are the model after step {run.step}{of}{at} of the jaxsbert run "
             f"`{config.get('name', 'experiment')}`."]
    if run.exported_from:
        lines.append(f"They were exported with `jaxsbert export` from the checkpoint of step {run.step} "
                     f"(`{run.exported_from}`).")
    lines.append("")
    lines += [f"### Training Dataset{'s' if len(run.datasets) > 1 else ''}", ""]
    for name, facts in run.datasets.items():
        spec = config.get("data", {}).get("train", {}).get(name)
        lines += [f"#### {name}", "", f"* Dataset: {_spec_text(spec)}"]
        if facts.get("size") is not None:
            lines.append(f"* Size: {facts['size']:,} training samples")
        if facts.get("columns"):
            lines.append(f"* Columns: {_join([f'<code>{c}</code>' for c in facts['columns']])}")
        loss = facts["loss"]
        lines.append(f"* Loss: [<code>{loss}</code>]({_ST_LOSS_DOCS}{loss.lower()}) with these parameters:")
        lines += ["  ```json", *["  " + l for l in json.dumps(facts["loss_config"], indent=4, default=str).split("\n")],
                  "  ```", ""]
    lines += _hyperparameters(config)
    lines += _training_log(run, evaluations)
    return lines


def _hyperparameters(config: dict) -> list[str]:
    from jaxsbert.config import DEFAULTS

    values = _flatten({k: v for k, v in config.items()})
    defaults = _flatten(DEFAULTS)
    non_default = {k: v for k, v in values.items() if k in defaults and defaults[k] != v}
    lines = ["### Training Hyperparameters", ""]
    if non_default:
        lines += ["#### Non-Default Hyperparameters", ""] + [f"- `{k}`: {_value(v)}" for k, v in non_default.items()]
        lines.append("")
    lines += ["#### All Hyperparameters", "<details><summary>Click to expand</summary>", ""]
    lines += [f"- `{k}`: {_value(v)}" for k, v in values.items()]
    return lines + ["", "</details>", ""]


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = prefix + k
        if any(key == s or key.startswith(s + ".") for s in _NOT_HYPERPARAMETERS):
            continue
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _training_log(run: TrainingRun, evaluations: list[dict]) -> list[str]:
    """Epoch, step, training loss, and each evaluator's primary metric at the steps where it ran."""
    columns = [f"{e['name']}_{e['primary']}" for e in evaluations if e["primary"]]
    steps: dict[int, dict] = {}
    for r in run.records:
        row = steps.setdefault(r["step"], {})
        if r.get("kind") == "train":
            row["Epoch"], row["Training Loss"] = r.get("epoch"), r.get("loss")
        elif r.get("kind") == "eval":
            row.update({c: r[c] for c in columns if c in r})
            if r["step"] == 0:
                row.setdefault("Epoch", 0)
    if not steps:
        return []
    _interpolate_epochs(steps)
    last = max(steps)
    rows = [["Epoch", "Step", "Training Loss", *columns]]
    for step, row in sorted(steps.items()):
        bold = step == run.step and step != last
        cells = [_fmt(row["Epoch"]) if row.get("Epoch") is not None else "-", str(step),
                 _fmt(row["Training Loss"]) if row.get("Training Loss") is not None else "-",
                 *[_fmt(row[c]) if row.get(c) is not None else "-" for c in columns]]
        rows.append([_bold(c, bold) for c in cells])
    lines = ["### Training Logs", ""]
    hide = len(rows) > 101
    if hide:
        lines += ["<details><summary>Click to expand</summary>", ""]
    lines += _table(rows)
    if hide:
        lines += ["", "</details>"]
    if any(step == run.step and step != last for step in steps):
        lines += ["", "* The bold row is the step of these parameters."]
    return lines + [""]


def _interpolate_epochs(steps: dict[int, dict]) -> None:
    """Gives a row without an epoch (an evaluation between log steps) the epoch interpolated between the
    logged rows around it."""
    known = sorted((s, r["Epoch"]) for s, r in steps.items() if isinstance(r.get("Epoch"), (int, float)))
    for step, row in steps.items():
        if row.get("Epoch") is None:
            before = [(s, e) for s, e in known if s < step]
            after = [(s, e) for s, e in known if s > step]
            if before and after:
                (s0, e0), (s1, e1) = before[-1], after[0]
                row["Epoch"] = e0 + (e1 - e0) * (step - s0) / (s1 - s0)


# --------------------------------------------------------------------------- small helpers

def _loss_names(run: TrainingRun) -> list[str]:
    """The losses of the run, inner losses (MatryoshkaLoss' ``loss``) included, each once."""
    names = []

    def visit(name, config):
        names.append(name)
        for v in (config or {}).values():
            if isinstance(v, dict) and "name" in v:
                visit(v["name"], v)
    for facts in run.datasets.values():
        visit(facts["loss"], facts["loss_config"])
    return list(dict.fromkeys(names))


def _hub_datasets(run: TrainingRun) -> list[str]:
    """The training and evaluation datasets read from the Hugging Face Hub (sources that are hub ids)."""
    from jaxsbert.data.loading import NAMED_DATASETS

    specs = list((run.config.get("data", {}).get("train") or {}).values())
    specs += list((run.config.get("data", {}).get("eval") or {}).values())
    out = []
    for spec in specs:
        source = spec.get("source") if isinstance(spec, dict) else spec
        if isinstance(source, str) and source not in NAMED_DATASETS and base_model_id(source) == source:
            out.append(source)
    return list(dict.fromkeys(out))


def _spec_text(spec: Any) -> str:
    """A dataset spec in words: its source (name, files or hub id), split and subset."""
    if not isinstance(spec, dict):
        return str(spec)
    source = spec.get("source")
    if source is None:
        parts = [f"{k}: {_spec_text(spec[k])}" for k in ("queries", "corpus", "relevant") if k in spec]
        return "; ".join(parts) or "a dataset"
    text = ", ".join(map(str, source)) if isinstance(source, (list, tuple)) else str(source)
    extra = [f"{k} {spec[k]}" for k in ("subset", "split", "limit") if spec.get(k) is not None]
    return text + (f" ({', '.join(extra)})" if extra else "")


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _fmt(v: Any) -> str:
    return str(round(v, 4)) if isinstance(v, float) else str(v)


def _value(v: Any) -> str:
    """A hyper-parameter as the card prints it: strings as they are, other values as JSON (null: not set)."""
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text


def _table(rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(rows[0]) + " |", "|" + "|".join(":--" for _ in rows[0]) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows[1:]])
