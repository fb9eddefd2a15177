"""ndunet: U-Nets and denoising diffusion for data of any number of spatial dimensions."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names resolved lazily, so `import ndunet` stays cheap (the CLI starts fast) and each
# subsystem is imported only when used. name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "functional": "ndunet.functional",
    "layers": "ndunet.layers",
    "UNet": "ndunet.models.unet",
    "UNetConfig": "ndunet.models.unet",
    "summary": "ndunet.model_summary",
    "Diffusion": "ndunet.diffusion",
    "EMA": "ndunet.ema",
    "SupervisedTrainer": "ndunet.training",
    "DiffusionTrainer": "ndunet.training",
    "TrainerConfig": "ndunet.training",
    "data": "ndunet.data",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ndunet' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"ndunet.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
