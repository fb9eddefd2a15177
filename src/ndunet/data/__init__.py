"""Datasets that need no download (digits, faces, N-D blobs) and loaders for the user's arrays,
image folders and volume files of any format. Each gives ``(x, y)`` items, x float32
(C, *spatial): an in-memory ``NDDataset``, or a lazy ``VolumeDataset`` read file by file."""

from .arrays import arrays
from .base import NDDataset
from .batch import BATCH_KEYS, DictSamples
from .blobs import blobs
from .digits import digits
from .faces import faces
from .images import images
from .normalize import Normalization
from .preprocess import rescale
from .registry import DATASETS, load_dataset, load_splits
from .splits import split_indices, take_split
from .volumes import VolumeDataset, volumes

__all__ = [
    "BATCH_KEYS",
    "DATASETS",
    "DictSamples",
    "NDDataset",
    "Normalization",
    "VolumeDataset",
    "arrays",
    "blobs",
    "digits",
    "faces",
    "images",
    "load_dataset",
    "load_splits",
    "rescale",
    "split_indices",
    "take_split",
    "volumes",
]
