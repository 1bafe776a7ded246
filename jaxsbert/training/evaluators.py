"""Evaluators built from config specs: ``data.eval = {name: {"type": ..., <dataset spec>}}``.

Types (columns by order, as the column convention gives them):
- ``similarity``: (sentence1, sentence2) + score -> EmbeddingSimilarityEvaluator (class-id labels, e.g. SICK's
  default NLI task, are an error: use SICK's ``task: "relatedness"``)
- ``binary``: (sentence1, sentence2) + 0/1 label -> BinaryClassificationEvaluator
- ``triplet``: (anchor, positive, negative) -> TripletEvaluator
- ``label_accuracy``: (premise, hypothesis) + class label -> accuracy of a SoftmaxLoss head
  (``"head": <training dataset name>``), as sentence-transformers' LabelAccuracyEvaluator
- ``information_retrieval`` -> InformationRetrievalEvaluator, from columns or from files:

  * columns: (query, relevant document, [more documents ...]) rows (a label column is ignored): the queries are
    the distinct first-column texts, each relevant to the second-column texts of its rows; the corpus is every
    document column's texts, plus the texts of an optional ``"corpus"`` dataset (one text column) as distractors;
  * files (BEIR's layout): ``"queries"`` (id, text), ``"corpus"`` (id, [title], text: "title text" when a title
    is there) and ``"relevant"`` (query id, corpus id, [score]: rows with a score <= 0 are not relevant) dataset
    specs; id columns named ``_id`` / ``id`` / ``query-id`` / ``corpus-id``, else the first columns.

  Options: ``mrr_at_k``, ``ndcg_at_k``, ``accuracy_at_k``, ``precision_recall_at_k``, ``map_at_k``,
  ``corpus_chunk_size``, ``score_functions``, ``main_score_function``, ``truncate_dim``; keys
  ``{name}_{fn}_{metric}@{k}`` as sentence-transformers (e.g. ``best_metric: "ir_cosine_ndcg@10"``).
- ``reranking`` -> RerankingEvaluator: (query, positive, negative ...) rows, grouped by query (a row's positive
  and negatives may also be lists); options ``at_k``, ``similarity_fn_name``, ``truncate_dim``; keys
  ``{name}_map``, ``{name}_mrr@{k}``, ``{name}_ndcg@{k}``.
- ``mse``: (source, target) -> MSEEvaluator with ``"teacher"``: a model path or name that embeds the sources
  (loaded once, when the evaluator is built); option ``truncate_dim``; key ``{name}_negative_mse``.
- ``translation``: (source, target) -> TranslationEvaluator; option ``truncate_dim``; keys
  ``{name}_src2trg_accuracy``, ``{name}_trg2src_accuracy``, ``{name}_mean_accuracy``.
- ``paraphrase_mining`` -> ParaphraseMiningEvaluator, from columns or from files:

  * columns: (sentence1, sentence2, [label]) rows of duplicate pairs (with a label, rows labelled <= 0 only add
    their sentences), plus the texts of an optional ``"corpus"`` dataset (one text column) as more sentences;
  * files: ``"sentences"`` (id, text) and ``"duplicates"`` (id1, id2) dataset specs.

  Options ``top_k``, ``max_pairs``, ``query_chunk_size``, ``corpus_chunk_size``, ``add_transitive_closure``,
  ``similarity_fn_name``, ``truncate_dim``; keys ``{name}_average_precision``, ``_f1``, ``_precision``,
  ``_recall``, ``_threshold``.
- ``nanobeir`` -> NanoBEIREvaluator on a local copy of the NanoBEIR data (no dataset spec): ``data_dir``
  (relative to data_root if not found as given; default ``$JAXSBERT_NANOBEIR_DIR``), ``dataset_names``,
  ``dataset_id``, ``query_prompts``, ``corpus_prompts``, ``aggregate_key`` and the information_retrieval
  options; keys as sentence-transformers, whatever the evaluator's name: ``Nano{Dataset}_{fn}_{metric}@{k}``
  and ``NanoBEIR_mean_{fn}_{metric}@{k}`` (e.g. ``best_metric: "NanoBEIR_mean_cosine_ndcg@10"``).
"""
from __future__ import annotations

import difflib
import os
from typing import Any

import datasets
import jax.numpy as jnp
import numpy as np

from jaxsbert import data as jdata
from jaxsbert.data.columns import label_dtype
from jaxsbert.data.loading import _SPEC_KEYS as SPEC_KEYS
from jaxsbert.data.loading import check_spec as check_dataset_spec
from jaxsbert.evaluation.binary_classification import BinaryClassificationEvaluator
from jaxsbert.evaluation.embedding_similarity import EmbeddingSimilarityEvaluator
from jaxsbert.evaluation.information_retrieval import InformationRetrievalEvaluator
from jaxsbert.evaluation.mse import MSEEvaluator
from jaxsbert.evaluation.nano_beir import DEFAULT_DATASET_ID, NANOBEIR_DIR_ENV, NanoBEIREvaluator, _dataset_root
from jaxsbert.evaluation.paraphrase_mining import ParaphraseMiningEvaluator
from jaxsbert.evaluation.reranking import RerankingEvaluator
from jaxsbert.evaluation.translation import TranslationEvaluator
from jaxsbert.evaluation.triplet import TripletEvaluator

TYPES = ("similarity", "binary", "triplet", "label_accuracy", "information_retrieval", "reranking", "mse",
         "translation", "paraphrase_mining", "nanobeir")
# types whose spec is one dataset spec plus options (the others hold several dataset specs, or none)
SINGLE_DATASET_TYPES = ("similarity", "binary", "triplet", "label_accuracy", "mse", "translation")
_TYPE_KEYS = {"mse": ("teacher", "truncate_dim"), "translation": ("truncate_dim",)}
_EVAL_KEYS = ("type", "batch_size", "similarity_fn_names", "main_similarity", "head", "during_training")
_IR_KEYS = ("mrr_at_k", "ndcg_at_k", "accuracy_at_k", "precision_recall_at_k", "map_at_k", "corpus_chunk_size",
            "score_functions", "main_score_function", "truncate_dim")
_RERANKING_KEYS = ("at_k", "similarity_fn_name", "truncate_dim")
_IR_FILES = ("queries", "corpus", "relevant")
_MINING_KEYS = ("top_k", "max_pairs", "query_chunk_size", "corpus_chunk_size", "add_transitive_closure",
                "similarity_fn_name", "truncate_dim", "batch_size")
_MINING_FILES = ("sentences", "duplicates")
_NANOBEIR_KEYS = ("type", "data_dir", "dataset_names", "dataset_id", "query_prompts", "corpus_prompts",
                  "aggregate_key", "batch_size") + _IR_KEYS


class LabelAccuracyEvaluator:
    """Accuracy of a classification loss head (SoftmaxLoss) on (sentence1, sentence2, label)."""

    def __init__(self, sentences1, sentences2, labels, loss, head_dataset: str, name: str = "", batch_size: int = 32):
        self.sentences1, self.sentences2 = list(sentences1), list(sentences2)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.loss, self.head_dataset, self.name, self.batch_size = loss, head_dataset, name, batch_size
        self.head = None   # set by the training loop to the current head parameters
        self.primary_metric = f"{name}_accuracy" if name else "accuracy"

    def __call__(self, encoder) -> dict[str, float]:
        if self.head is None:
            raise ValueError(f"evaluator {self.name!r}: no loss head set (needs the training dataset "
                             f"{self.head_dataset!r} trained with SoftmaxLoss)")
        u = jnp.asarray(encoder.encode(self.sentences1, batch_size=self.batch_size))
        v = jnp.asarray(encoder.encode(self.sentences2, batch_size=self.batch_size))
        predicted = np.asarray(jnp.argmax(self.loss.logits(self.head, u, v), axis=-1))
        return {self.primary_metric: float(np.mean(predicted == self.labels))}


def check_spec(name: str, spec: dict[str, Any], data_root: str | None = None) -> str:
    """The evaluator's type, after the checks that read no data: a known type (else a ValueError suggesting
    the nearest), known keys, and (SINGLE_DATASET_TYPES, paraphrase_mining) dataset sources that exist
    (:func:`jaxsbert.data.loading.check_spec`), nanobeir's data directory. Returns the type."""
    kind = spec.get("type", "similarity")
    if kind not in TYPES:
        close = difflib.get_close_matches(str(kind), TYPES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"supported: {list(TYPES)}"
        raise ValueError(f"evaluator {name!r}: type {kind!r} is not supported; {hint}")
    if kind == "paraphrase_mining":
        _check_mining_spec(name, spec, data_root)
    elif kind == "nanobeir":
        _check_keys(name, spec, _NANOBEIR_KEYS)
        _nanobeir_options(spec, data_root)
    elif kind in SINGLE_DATASET_TYPES:
        if kind == "mse" and not spec.get("teacher"):
            raise ValueError(f"evaluator {name!r}: an mse evaluator needs 'teacher': the model (path or name) "
                             "that embeds the source sentences")
        known = ("type",) + _EVAL_KEYS + _TYPE_KEYS.get(kind, ()) + SPEC_KEYS
        unknown = sorted(set(spec) - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {list(dict.fromkeys(known))}"
            raise ValueError(f"evaluator {name!r}: unknown key(s) {unknown}; {hint}")
        check_dataset_spec(dataset_spec(spec), data_root)
    return kind


def dataset_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The dataset part of a SINGLE_DATASET_TYPES evaluator's spec."""
    extra = _TYPE_KEYS.get(spec.get("type", "similarity"), ())
    return {k: v for k, v in spec.items() if k != "type" and k not in _EVAL_KEYS and k not in extra}


def _check_keys(name: str, spec: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(spec) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {list(dict.fromkeys(known))}"
        raise ValueError(f"evaluator {name!r}: unknown key(s) {unknown}; {hint}")


def _class_id_labels(ds, label: str | None) -> np.ndarray | None:
    """The distinct values of an integer label column named label / labels (class ids by the column
    convention; a score column is named score), else None."""
    if label is None:
        return None
    feature = ds.features[label]
    if not isinstance(feature, datasets.ClassLabel) and not (label in ("label", "labels")
                                                             and label_dtype(ds, label).kind == "i"):
        return None
    return np.unique(np.asarray(ds.with_format("numpy")[label]))


def _similarity_labels_check(ds, label: str | None, spec: dict, source: str) -> None:
    """A similarity evaluator correlates float scores with similarities: class ids (NLI labels) are refused."""
    ids = _class_id_labels(ds, label)
    if ids is None:
        return
    shown = ", ".join(str(v) for v in ids[:5]) + (", ..." if len(ids) > 5 else "")
    if str(spec.get("source", "")).lower() in ("sick", "sick-nli"):
        hint = "for SICK use task 'relatedness' (jaxsbert eval --task relatedness)"
    elif len(ids) <= 2:
        hint = "for 0/1 labels use type 'binary'; scores belong in a column named 'score'"
    else:
        hint = "scores belong in a float column named 'score'; for class labels use type 'label_accuracy'"
    raise ValueError(f"{source}: labels are class ids ({shown}) in column {label!r}: a similarity evaluator needs "
                     f"float scores; {hint}")


def build_evaluator(name: str, spec: dict[str, Any], data_root: str | None = None, losses: dict | None = None):
    """The evaluator a config's ``data.eval`` entry describes. ``"during_training": False`` (any type) keeps it to
    the evaluations before and after training (a test set), out of those every ``eval_every`` steps."""
    spec = dict(spec)
    during_training = spec.pop("during_training", True)
    if not isinstance(during_training, bool):
        raise ValueError(f"evaluator {name!r}: during_training must be True or False, got {during_training!r}")
    evaluator = _build_evaluator(name, spec, data_root, losses)
    evaluator.during_training = during_training
    return evaluator


def _build_evaluator(name: str, spec: dict[str, Any], data_root: str | None, losses: dict | None):
    kind = check_spec(name, spec, data_root)
    spec.pop("type", None)
    if kind in ("information_retrieval", "reranking"):
        return _build_ranking_evaluator(name, kind, spec, data_root)
    if kind == "paraphrase_mining":
        return _build_paraphrase_mining(name, spec, data_root)
    if kind == "nanobeir":
        return NanoBEIREvaluator(**_nanobeir_options(spec, data_root))
    options = {k: spec.pop(k) for k in list(spec) if k in _EVAL_KEYS + _TYPE_KEYS.get(kind, ())}
    ds = jdata.load_dataset(spec, data_root=data_root)
    columns = jdata.split_columns(ds)
    source = f"evaluator {name!r} ({jdata.dataset_source(ds)})"
    need = {"similarity": (2, True), "binary": (2, True), "triplet": (3, False), "label_accuracy": (2, True),
            "mse": (2, False), "translation": (2, False)}[kind]
    if len(columns.inputs) != need[0] or (columns.label is not None) != need[1]:
        raise ValueError(f"{source}: a {kind} evaluator needs {need[0]} text columns"
                         f"{' and a label/score column' if need[1] else ' and no label column'}; "
                         f"got columns {ds.column_names}")
    jdata.validate_dataset(ds, name=name)
    if kind == "similarity":
        _similarity_labels_check(ds, columns.label, spec, source)
    texts = [list(ds[c]) for c in columns.inputs]
    labels = list(ds[columns.label]) if columns.label else None
    batch_size = int(options.get("batch_size", 32))
    fn_names = options.get("similarity_fn_names")
    if kind == "similarity":
        return EmbeddingSimilarityEvaluator(texts[0], texts[1], labels, batch_size=batch_size, name=name,
                                            main_similarity=options.get("main_similarity"),
                                            similarity_fn_names=fn_names or ["cosine"])
    if kind == "binary":
        return BinaryClassificationEvaluator(texts[0], texts[1], labels, name=name, batch_size=batch_size,
                                             similarity_fn_names=fn_names or ["cosine"])
    if kind == "triplet":
        return TripletEvaluator(texts[0], texts[1], texts[2], name=name, batch_size=batch_size,
                                similarity_fn_names=fn_names or ["cosine"])
    if kind == "mse":
        from jaxsbert.encoder import SentenceEncoder
        teacher = SentenceEncoder.from_pretrained(str(options["teacher"]))
        return MSEEvaluator(texts[0], texts[1], teacher_model=teacher, name=name, batch_size=batch_size,
                            truncate_dim=options.get("truncate_dim"))
    if kind == "translation":
        return TranslationEvaluator(texts[0], texts[1], name=name, batch_size=batch_size,
                                    truncate_dim=options.get("truncate_dim"))
    head = options.get("head")
    if not losses or head not in losses or not hasattr(losses[head], "logits"):
        raise ValueError(f"{source}: label_accuracy needs 'head': the name of a training dataset trained with "
                         f"SoftmaxLoss (training datasets: {sorted(losses or {})})")
    return LabelAccuracyEvaluator(texts[0], texts[1], labels, losses[head], head, name=name, batch_size=batch_size)


# ----------------------------------------------------------------------------- retrieval and re-ranking

def _texts(ds, source: str, what: str) -> tuple[list[str], ...]:
    columns = jdata.split_columns(ds)
    if not columns.inputs:
        raise ValueError(f"{source}: {what} needs text columns; got columns {ds.column_names}")
    return tuple(list(ds[c]) for c in columns.inputs)


def _id_column(ds, names: tuple[str, ...], position: int) -> str:
    return next((c for c in names if c in ds.column_names), ds.column_names[position])


def _ir_from_files(name: str, files: dict, data_root) -> tuple[dict, dict, dict]:
    loaded = {key: jdata.load_dataset(files[key], data_root=data_root) for key in _IR_FILES}
    where = {key: f"evaluator {name!r} {key} ({jdata.dataset_source(ds)})" for key, ds in loaded.items()}
    for key, ds in loaded.items():
        if len(ds.column_names) < 2:
            raise ValueError(f"{where[key]}: needs an id and a text column (or two ids); got {ds.column_names}")
    q = loaded["queries"]
    qid, qtext = _id_column(q, ("_id", "id", "query-id", "query_id"), 0), "text" if "text" in q.column_names else None
    qtext = qtext or next(c for c in q.column_names if c != qid)
    queries = {str(i): str(t) for i, t in zip(q[qid], q[qtext])}
    c = loaded["corpus"]
    cid = _id_column(c, ("_id", "id", "corpus-id", "corpus_id", "doc_id"), 0)
    ctext = "text" if "text" in c.column_names else next(x for x in c.column_names if x not in (cid, "title"))
    titles = c["title"] if "title" in c.column_names else [""] * len(c)
    corpus = {str(i): f"{title} {text}".strip() if title else str(text) for i, title, text in zip(c[cid], titles, c[ctext])}
    r = loaded["relevant"]
    rq = _id_column(r, ("query-id", "query_id", "qid"), 0)
    rc = _id_column(r, ("corpus-id", "corpus_id", "doc_id", "cid"), 1)
    scores = r["score"] if "score" in r.column_names else [1] * len(r)
    relevant: dict[str, set] = {}
    for row, (q_id, c_id, score) in enumerate(zip(r[rq], r[rc], scores)):
        q_id, c_id = str(q_id), str(c_id)
        if q_id not in queries:
            raise ValueError(f"{where['relevant']}: row {row}: query id {q_id!r} is not in the queries")
        if float(score) > 0:
            relevant.setdefault(q_id, set()).add(c_id)
    return queries, corpus, relevant


def _text_columns(name: str, spec: dict, data_root, what: str, columns: str, at_least: int) -> tuple[list, ...]:
    """The text columns of an evaluator's dataset, at least ``at_least`` of them (``columns`` says which)."""
    ds = jdata.load_dataset(spec, data_root=data_root)
    source = f"evaluator {name!r} ({jdata.dataset_source(ds)})"
    texts = _texts(ds, source, what)
    if len(texts) < at_least:
        raise ValueError(f"{source}: {what} needs {columns} columns; got {ds.column_names}")
    return texts


def _ir_from_columns(name: str, spec: dict, corpus_spec, data_root) -> tuple[dict, dict, dict]:
    texts = _text_columns(name, spec, data_root, "an information_retrieval evaluator",
                          "(query, relevant document, [more documents ...])", 2)
    documents = list(dict.fromkeys(t for column in texts[1:] for t in column))
    if corpus_spec is not None:
        extra = jdata.load_dataset(corpus_spec, data_root=data_root)
        extra_texts = _texts(extra, f"evaluator {name!r} corpus ({jdata.dataset_source(extra)})", "a corpus")[0]
        documents = list(dict.fromkeys(documents + list(extra_texts)))
    doc_id = {t: f"d{i}" for i, t in enumerate(documents)}
    query_id = {t: f"q{i}" for i, t in enumerate(dict.fromkeys(texts[0]))}
    relevant: dict[str, set] = {}
    for query, doc in zip(texts[0], texts[1]):
        relevant.setdefault(query_id[query], set()).add(doc_id[doc])
    return {i: t for t, i in query_id.items()}, {i: t for t, i in doc_id.items()}, relevant


def _reranking_samples(name: str, spec: dict, data_root) -> list[dict]:
    texts = _text_columns(name, spec, data_root, "a reranking evaluator", "(query, positive, negative, [negative ...])", 3)
    samples: dict[str, dict] = {}
    as_list = lambda x: list(x) if isinstance(x, (list, tuple)) else [x]
    for row, (query, positive, *negatives) in enumerate(zip(*texts)):
        sample = samples.setdefault(query, {"query": query, "positive": [], "negative": []})
        sample["positive"] += [p for p in as_list(positive) if p not in sample["positive"]]
        for n in negatives:
            sample["negative"] += [x for x in as_list(n) if x not in sample["negative"]]
    return list(samples.values())


def _build_ranking_evaluator(name: str, kind: str, spec: dict, data_root):
    allowed = _IR_KEYS if kind == "information_retrieval" else _RERANKING_KEYS
    options = {k: spec.pop(k) for k in list(spec) if k in allowed}
    batch_size = int(spec.pop("batch_size", 32 if kind == "information_retrieval" else 64))
    if kind == "reranking":
        return RerankingEvaluator(_reranking_samples(name, spec, data_root), name=name, batch_size=batch_size, **options)
    if "queries" in spec or "relevant" in spec:
        missing = [k for k in _IR_FILES if k not in spec]
        if missing:
            raise ValueError(f"evaluator {name!r}: an information_retrieval evaluator from files needs "
                             f"{list(_IR_FILES)}; missing {missing}")
        extra = sorted(set(spec) - set(_IR_FILES))
        if extra:
            raise ValueError(f"evaluator {name!r}: unknown keys {extra} (files form: {list(_IR_FILES)}; "
                             f"options: {list(_IR_KEYS) + ['batch_size']})")
        queries, corpus, relevant = _ir_from_files(name, spec, data_root)
    else:
        corpus_spec = spec.pop("corpus", None)
        queries, corpus, relevant = _ir_from_columns(name, spec, corpus_spec, data_root)
    for key in ("mrr_at_k", "ndcg_at_k", "accuracy_at_k", "precision_recall_at_k", "map_at_k"):
        if key in options and isinstance(options[key], int):
            options[key] = [options[key]]
    return InformationRetrievalEvaluator(queries, corpus, relevant, name=name, batch_size=batch_size, **options)


# ----------------------------------------------------------------------------- paraphrase mining and NanoBEIR

def _check_mining_spec(name: str, spec: dict[str, Any], data_root) -> None:
    if any(k in spec for k in _MINING_FILES):
        _check_keys(name, spec, ("type",) + _MINING_FILES + _MINING_KEYS)
        missing = [k for k in _MINING_FILES if k not in spec]
        if missing:
            raise ValueError(f"evaluator {name!r}: a paraphrase_mining evaluator from files needs "
                             f"{list(_MINING_FILES)}; missing {missing}")
        for key in _MINING_FILES:
            check_dataset_spec(spec[key], data_root)
    else:
        _check_keys(name, spec, ("type", "corpus") + _MINING_KEYS + SPEC_KEYS)
        if "source" not in spec:
            raise ValueError(f"evaluator {name!r}: a paraphrase_mining evaluator needs a dataset of duplicate "
                             f"pairs ('source': ...) or {list(_MINING_FILES)} dataset specs")
        check_dataset_spec({k: v for k, v in spec.items() if k in SPEC_KEYS}, data_root)
        if "corpus" in spec:
            check_dataset_spec(spec["corpus"], data_root)


def _mining_from_files(name: str, spec: dict, data_root) -> tuple[dict, list]:
    sentences_ds = jdata.load_dataset(spec["sentences"], data_root=data_root)
    duplicates_ds = jdata.load_dataset(spec["duplicates"], data_root=data_root)
    for key, ds in (("sentences", sentences_ds), ("duplicates", duplicates_ds)):
        if len(ds.column_names) < 2:
            raise ValueError(f"evaluator {name!r} {key} ({jdata.dataset_source(ds)}): needs two columns "
                             f"({'id, text' if key == 'sentences' else 'id1, id2'}); got {ds.column_names}")
    sid = _id_column(sentences_ds, ("_id", "id", "qid"), 0)
    stext = next((c for c in ("text", "question", "sentence") if c in sentences_ds.column_names),
                 next(c for c in sentences_ds.column_names if c != sid))
    sentences = {str(i): str(t) for i, t in zip(sentences_ds[sid], sentences_ds[stext])}
    id1 = _id_column(duplicates_ds, ("qid1", "id1"), 0)
    id2 = _id_column(duplicates_ds, ("qid2", "id2"), 1)
    return sentences, [(str(a), str(b)) for a, b in zip(duplicates_ds[id1], duplicates_ds[id2])]


def _mining_from_columns(name: str, spec: dict, corpus_spec, data_root) -> tuple[dict, list]:
    ds = jdata.load_dataset(spec, data_root=data_root)
    source = f"evaluator {name!r} ({jdata.dataset_source(ds)})"
    columns = jdata.split_columns(ds)
    if len(columns.inputs) != 2:
        raise ValueError(f"{source}: a paraphrase_mining evaluator needs (sentence1, sentence2, [label]) columns; "
                         f"got {ds.column_names}")
    first, second = list(ds[columns.inputs[0]]), list(ds[columns.inputs[1]])
    labels = list(ds[columns.label]) if columns.label else [1] * len(first)
    texts = list(dict.fromkeys(first + second))
    if corpus_spec is not None:
        extra = jdata.load_dataset(corpus_spec, data_root=data_root)
        texts = list(dict.fromkeys(texts + list(_texts(extra, f"evaluator {name!r} corpus "
                                                              f"({jdata.dataset_source(extra)})", "a corpus")[0])))
    ids = {t: f"s{i}" for i, t in enumerate(texts)}
    duplicates = [(ids[a], ids[b]) for a, b, label in zip(first, second, labels) if float(label) > 0]
    return {i: t for t, i in ids.items()}, duplicates


def _build_paraphrase_mining(name: str, spec: dict, data_root) -> ParaphraseMiningEvaluator:
    options = {k: spec.pop(k) for k in list(spec) if k in _MINING_KEYS}
    if any(k in spec for k in _MINING_FILES):
        sentences, duplicates = _mining_from_files(name, spec, data_root)
    else:
        corpus_spec = spec.pop("corpus", None)
        sentences, duplicates = _mining_from_columns(name, spec, corpus_spec, data_root)
    return ParaphraseMiningEvaluator(sentences, duplicates, name=name, **options)


def _nanobeir_options(spec: dict[str, Any], data_root) -> dict[str, Any]:
    """NanoBEIREvaluator's arguments from a nanobeir spec: data_dir found as given, else under data_root."""
    options = {k: v for k, v in spec.items() if k != "type"}
    data_dir = options.get("data_dir")
    if data_dir is not None and not os.path.isdir(str(data_dir)) and data_root is not None \
            and not os.path.isabs(str(data_dir)) and os.path.isdir(os.path.join(str(data_root), str(data_dir))):
        options["data_dir"] = os.path.join(str(data_root), str(data_dir))
    if options.get("data_dir") is None and not os.environ.get(NANOBEIR_DIR_ENV):
        _dataset_root(None, str(options.get("dataset_id", DEFAULT_DATASET_ID)))     # the error saying where
    elif options.get("data_dir") is not None and not os.path.isdir(str(options["data_dir"])):
        raise FileNotFoundError(f"nanobeir data_dir {str(data_dir)!r} is not a directory"
                                + (f" (nor in data_root {str(data_root)!r})" if data_root is not None else ""))
    for key in ("mrr_at_k", "ndcg_at_k", "accuracy_at_k", "precision_recall_at_k", "map_at_k"):
        if isinstance(options.get(key), int):
            options[key] = [options[key]]
    return options
