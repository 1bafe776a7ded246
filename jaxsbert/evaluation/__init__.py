"""Evaluators with sentence-transformers' metric definitions and key names.

Evaluator classes take sentences / labels at construction and are called with an encoder (anything with
``encode(list[str], batch_size=...) -> np.ndarray``); they return ``{key: float}`` and set
``primary_metric``. The ``*_metrics`` functions compute the same dicts (unprefixed) from embeddings directly.
"""
from jaxsbert.evaluation.base import Evaluator, encode_unique
from jaxsbert.evaluation.binary_classification import BinaryClassificationEvaluator, binary_classification_metrics
from jaxsbert.evaluation.embedding_similarity import EmbeddingSimilarityEvaluator, similarity_metrics
from jaxsbert.evaluation.information_retrieval import InformationRetrievalEvaluator
from jaxsbert.evaluation.mse import MSEEvaluator
from jaxsbert.evaluation.nano_beir import NanoBEIREvaluator
from jaxsbert.evaluation.paraphrase_mining import ParaphraseMiningEvaluator, paraphrase_mining_embeddings
from jaxsbert.evaluation.reranking import RerankingEvaluator, reranking_metrics
from jaxsbert.evaluation.retrieval import information_retrieval_metrics, ranking_metrics, top_k_search
from jaxsbert.evaluation.sequential import SequentialEvaluator
from jaxsbert.evaluation.similarity import SIMILARITY_FUNCTIONS, pairwise_similarity, similarity_matrix
from jaxsbert.evaluation.stats import average_precision, matthews_corrcoef, pearson, spearman
from jaxsbert.evaluation.thresholds import best_accuracy_threshold, best_f1_threshold
from jaxsbert.evaluation.translation import TranslationEvaluator
from jaxsbert.evaluation.triplet import TripletEvaluator, triplet_metrics

__all__ = [
    "Evaluator", "EmbeddingSimilarityEvaluator", "TripletEvaluator", "BinaryClassificationEvaluator",
    "InformationRetrievalEvaluator", "RerankingEvaluator", "SequentialEvaluator",
    "MSEEvaluator", "TranslationEvaluator", "ParaphraseMiningEvaluator", "NanoBEIREvaluator",
    "paraphrase_mining_embeddings",
    "similarity_metrics", "triplet_metrics", "binary_classification_metrics", "information_retrieval_metrics",
    "reranking_metrics",
    "ranking_metrics", "top_k_search", "encode_unique",
    "SIMILARITY_FUNCTIONS", "pairwise_similarity", "similarity_matrix",
    "pearson", "spearman", "average_precision", "matthews_corrcoef",
    "best_accuracy_threshold", "best_f1_threshold",
]
