"""Datasets that need no download (digits, faces, N-D blobs) and loaders for the user's arrays
and image folders. Each returns an ``NDDataset`` of ``(x, y)`` items, x float32 (C, *spatial)."""

from .arrays import arrays
from .base import NDDataset
from .blobs import blobs
from .digits import digits
from .faces import faces
from .images import images
from .preprocess import rescale
from .registry import DATASETS, load_dataset
from .splits import split_indices, take_split

__all__ = [
    "DATASETS",
    "NDDataset",
    "arrays",
    "blobs",
    "digits",
    "faces",
    "images",
    "load_dataset",
    "rescale",
    "split_indices",
    "take_split",
]
