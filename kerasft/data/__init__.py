"""Data: sources -> splits -> seed-ordered, preprocessed batches."""

from kerasft.data.batches import Batches, default_workers, preprocess_fn
from kerasft.data.images import DataSplits, Split
from kerasft.data.sources import load_splits, splits_from_arrays

__all__ = [
    "Batches",
    "DataSplits",
    "Split",
    "default_workers",
    "load_splits",
    "preprocess_fn",
    "splits_from_arrays",
]
