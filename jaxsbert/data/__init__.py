"""Training data: loading, the column convention and validation, tokenization, samplers, static-shape batches."""
from jaxsbert.data.batching import batch_slots, make_batch, process_rows
from jaxsbert.data.buckets import bucket_for, length_buckets, pad_token_ids
from jaxsbert.data.columns import LABEL_COLUMNS, Columns, select_columns, split_columns, validate_dataset
from jaxsbert.data.loader import BatchIterator, DataLoader, LoaderBatch, Position
from jaxsbert.data.loading import (NAMED_DATASETS, NLI_LABELS, dataset_source, default_data_root, demo_path,
                                   load_dataset, read_sick, read_stsb)
from jaxsbert.data.noise import add_noise
from jaxsbert.data.samplers import BATCH_SAMPLERS, MULTI_DATASET_SAMPLERS
from jaxsbert.data.sources import ArrowSource, BadRowError, LineSource, RowSource, open_source
from jaxsbert.data.tokenization import TokenizedDataset, tokenize_dataset

__all__ = [
    "add_noise", "ArrowSource", "BadRowError", "LineSource", "RowSource", "open_source",
    "BATCH_SAMPLERS", "BatchIterator", "Columns", "DataLoader", "LABEL_COLUMNS", "LoaderBatch", "MULTI_DATASET_SAMPLERS",
    "NAMED_DATASETS", "NLI_LABELS", "Position", "TokenizedDataset", "bucket_for", "dataset_source",
    "batch_slots", "default_data_root", "demo_path", "length_buckets", "load_dataset", "make_batch", "pad_token_ids",
    "process_rows", "read_sick", "read_stsb", "select_columns", "split_columns", "tokenize_dataset",
    "validate_dataset",
]
