"""Plan a segmentation run from the data: fingerprint a training set, then choose per-axis
pooling and kernels, a patch and a batch that fit a memory budget (nnU-Net v2's rules for any
spatial_dims), and write a run file that ``ndunet train`` takes (``ndunet plan``)."""

from .fingerprint import Fingerprint, fingerprint
from .memory import estimate_bytes, format_bytes, measure_step_bytes, parse_bytes, peak_bytes
from .planner import Plan, PlannerConfig, choose_normalization, initial_patch, plan
from .topology import Topology, pooling_plan

__all__ = [
    "Fingerprint",
    "Plan",
    "PlannerConfig",
    "Topology",
    "choose_normalization",
    "estimate_bytes",
    "fingerprint",
    "format_bytes",
    "initial_patch",
    "measure_step_bytes",
    "parse_bytes",
    "peak_bytes",
    "plan",
    "pooling_plan",
]
