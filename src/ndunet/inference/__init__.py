"""Inference over whole volumes: sliding windows with MONAI's arguments, test-time flips,
and one volume through a model (predict_volume)."""

from .predict import predict_volume
from .sliding_window import sliding_window_inference
from .tta import flip_tta
from .windows import importance_map, scan_interval, window_slices, window_starts

__all__ = [
    "flip_tta",
    "importance_map",
    "predict_volume",
    "scan_interval",
    "sliding_window_inference",
    "window_slices",
    "window_starts",
]
