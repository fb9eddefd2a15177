"""Inference over whole volumes: sliding windows with MONAI's arguments, test-time flips,
one volume through a model (predict_volume), and mixed precision and torch.compile for the
network's forward."""

from .amp import AMP_MODES, Amp, resolve_amp, with_autocast
from .compiled import COMPILE_MODES, CompileMode, check_compile, with_compile
from .predict import predict_volume
from .sliding_window import sliding_window_inference
from .tta import flip_tta
from .windows import importance_map, scan_interval, window_slices, window_starts

__all__ = [
    "AMP_MODES",
    "COMPILE_MODES",
    "Amp",
    "CompileMode",
    "check_compile",
    "flip_tta",
    "importance_map",
    "predict_volume",
    "resolve_amp",
    "scan_interval",
    "sliding_window_inference",
    "window_slices",
    "window_starts",
    "with_autocast",
    "with_compile",
]
