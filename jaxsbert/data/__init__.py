"""Training data: loading, the column convention and validation, tokenization, samplers, static-shape batches."""
# name -> the submodule that defines it, imported on first use: the model, packing and loss modules import
# jaxsbert.data.packing, which must not import `datasets` (benchmarks/device.py runs where it is not installed)
_LAZY = {name: f"jaxsbert.data.{module}" for module, names in {
    "batching": ("batch_slots", "make_batch", "process_rows"),
    "buckets": ("bucket_for", "length_buckets", "pad_token_ids"),
    "columns": ("LABEL_COLUMNS", "Columns", "select_columns", "split_columns", "validate_dataset"),
    "loader": ("BatchIterator", "DataLoader", "LoaderBatch", "Position"),
    "loading": ("NAMED_DATASETS", "NLI_LABELS", "dataset_source", "default_data_root", "demo_path", "load_dataset",
                "read_sick", "read_stsb"),
    "noise": ("add_noise",),
    "samplers": ("BATCH_SAMPLERS", "MULTI_DATASET_SAMPLERS"),
    "sources": ("ArrowSource", "BadRowError", "LineSource", "RowSource", "open_source"),
    "tokenization": ("TokenizedDataset", "tokenize_dataset"),
}.items() for name in names}

__all__ = [
    "add_noise", "ArrowSource", "BadRowError", "LineSource", "RowSource", "open_source",
    "BATCH_SAMPLERS", "BatchIterator", "Columns", "DataLoader", "LABEL_COLUMNS", "LoaderBatch", "MULTI_DATASET_SAMPLERS",
    "NAMED_DATASETS", "NLI_LABELS", "Position", "TokenizedDataset", "bucket_for", "dataset_source",
    "batch_slots", "default_data_root", "demo_path", "length_buckets", "load_dataset", "make_batch", "pad_token_ids",
    "process_rows", "read_sick", "read_stsb", "select_columns", "split_columns", "tokenize_dataset",
    "validate_dataset",
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = globals()[name] = getattr(importlib.import_module(_LAZY[name]), name)
        return value
    raise AttributeError(f"module 'jaxsbert.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
