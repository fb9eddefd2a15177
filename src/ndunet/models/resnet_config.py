"""ResNetConfig: the options of :class:`ndunet.models.ResNet`, and the named presets."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ndunet._checks import check_int, lookup
from ndunet.config import Config, ConfigError, config
from ndunet.models.unet_config import (
    MAX_BLOCKS,
    MAX_CLASSES,
    MAX_KERNEL_TAPS,
    MAX_SPATIAL_DIMS,
    MAX_WIDTH,
    check_block_options,
    norm_activation_to_json,
)

__all__ = ["RESNET_PRESETS", "ResNetConfig", "preset_layout"]

# He et al. 2015 (https://arxiv.org/abs/1512.03385), table 1: blocks per stage and block kind.
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet18": {"layers": (2, 2, 2, 2), "block": "basic"},
    "resnet34": {"layers": (3, 4, 6, 3), "block": "basic"},
    "resnet50": {"layers": (3, 4, 6, 3), "block": "bottleneck"},
    "resnet101": {"layers": (3, 4, 23, 3), "block": "bottleneck"},
    "resnet152": {"layers": (3, 8, 36, 3), "block": "bottleneck"},
}
EXPANSION = {"basic": 1, "bottleneck": 4}  # output width = width * expansion


def preset_layout(name: str, param: str = "preset") -> dict[str, Any]:
    """``{"layers": ..., "block": ...}`` of a preset name ("resnet18" ... "resnet152")."""
    return dict(lookup(RESNET_PRESETS, name, param))


@config
class ResNetConfig(Config):
    """A ResNet for ``(B, in_channels, *spatial)`` inputs of any ``spatial_dims``.

    The layout is stored in full (``layers``, ``block``, ``widths``), so a saved config rebuilds
    without knowing the preset; :meth:`preset` fills it from a name. The defaults are
    torchvision's ResNet-18: a 7-wide stride-2 stem conv and a stride-2 3-wide max pool, then one
    stage per entry of ``layers`` (the first at stride 1, the others halving every size), global
    average pooling and a linear classifier. Small inputs (8x8 digits, 32x32 CIFAR) lose little
    with ``stem_kernel_size=3, stem_stride=1, stem_pool=False`` (the CIFAR ResNets' stem).
    """

    unchecked: ClassVar[tuple[str, ...]] = ("norm", "activation")

    spatial_dims: int
    in_channels: int = 3
    num_classes: int | None = 1000  # None: no classifier, forward gives pooled features
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage
    block: Literal["basic", "bottleneck"] = "basic"  # 3-3, or 1-3-1 with 4x expansion
    widths: tuple[int, ...] = (64, 128, 256, 512)  # per stage (a bottleneck outputs 4x this)
    stem_channels: int = 64
    stem_kernel_size: int = 7
    stem_stride: int = 2
    stem_pool: bool = True  # a 3-wide stride-2 max pool after the stem
    norm: Any = "batch"
    num_groups: int = 32  # for norm="group"
    activation: Any = "relu"
    dropout: float = 0.0  # before the classifier
    zero_init_residual: bool = False  # last norm of each block starts at 0 (Goyal et al. 2017)

    @classmethod
    def preset(cls, name: str, spatial_dims: int, **options: Any) -> ResNetConfig:
        """The config of a named ResNet ("resnet18", "resnet34", "resnet50", "resnet101",
        "resnet152"), other options as keywords."""
        layout = preset_layout(name)
        clash = sorted(set(layout) & set(options))
        if clash:
            raise ConfigError(
                f"{clash[0]}={options[clash[0]]!r} is not valid with the preset {name!r}, which "
                f"sets it; use the fields directly (layers=..., block=...) for a custom layout",
                clash[0],
            )
        return cls(spatial_dims, **layout, **options)

    def check_values(self) -> None:
        check_int("spatial_dims", self.spatial_dims, 1, MAX_SPATIAL_DIMS)
        check_int("in_channels", self.in_channels, 1, MAX_WIDTH)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        if not self.layers or len(self.widths) != len(self.layers):
            raise ValueError(
                f"widths={list(self.widths)!r} is not valid with layers={list(self.layers)!r}; "
                "expected one width per stage (>= 1 stage)"
            )
        for n in self.layers:
            check_int("layers", n, 1, MAX_BLOCKS)
        for w in self.widths:
            check_int("widths", w, 1, MAX_WIDTH)
        check_int("stem_channels", self.stem_channels, 1, MAX_WIDTH)
        k = self.stem_kernel_size
        if k < 1 or k % 2 == 0 or k**self.spatial_dims > MAX_KERNEL_TAPS:
            raise ValueError(
                f"stem_kernel_size={k!r} is not valid; expected an odd int >= 1 with at most "
                f"{MAX_KERNEL_TAPS} taps (k ** spatial_dims)"
            )
        check_int("stem_stride", self.stem_stride, 1, 64)
        check_block_options(
            self,
            f"widths={list(self.widths)!r} is not valid with layers={list(self.layers)!r} "
            f"and spatial_dims={self.spatial_dims}",
        )

    def estimated_parameters(self) -> float:
        """A quick upper estimate of the parameter count (no allocation), for the limits."""
        taps = 3**self.spatial_dims
        e = EXPANSION[self.block]
        convs = sum(n * 3 * taps * (w * e) ** 2 for n, w in zip(self.layers, self.widths))
        return float(convs + self.out_features * (self.num_classes or 0))

    @property
    def out_features(self) -> int:
        """Channels of the last stage (the classifier's input)."""
        return self.widths[-1] * EXPANSION[self.block]

    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of the stem and of every stage."""
        e = EXPANSION[self.block]
        return (self.stem_channels, *(w * e for w in self.widths))

    def stage_factors(self) -> tuple[int, ...]:
        """How much the stem and each stage shrink every spatial size (2 for the stem's pool)."""
        pool = 2 if self.stem_pool else 1
        return (self.stem_stride, pool) + (2,) * (len(self.layers) - 1)

    def preset_name(self) -> str | None:
        """The preset this layout is, if any (widths, stem and the rest may still differ)."""
        for name, layout in RESNET_PRESETS.items():
            if layout["layers"] == self.layers and layout["block"] == self.block:
                return name
        return None

    def to_dict(self) -> dict[str, Any]:
        return norm_activation_to_json(super().to_dict(), self.norm, self.activation)
