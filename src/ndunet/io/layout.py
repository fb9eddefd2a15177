"""From a file's axes to ndunet's channel-first ``(C, *spatial)``, stated, never guessed.

The file's own axis letters decide where they are unambiguous: X, Y, Z are spatial; C and S
are channels (merged into one channel axis when both occur); size-1 axes of other letters are
dropped when they are in the way. Time (T) and axes of unknown meaning (I, Q, ...) must be
placed by the caller: as spatial (``spatial_dims`` counts them) or as channels
(``channel_axis``). A bare array (no axis letters) needs ``spatial_dims``, and ``channel_axis``
when it has one axis more than that. Every refusal says how to state the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ndunet._checks import check_int, invalid

from .base import Header, Spacing, Volume

SPATIAL, CHANNELS = "XYZ", "CS"
HOW = "(in a run config: data.spatial_dims / data.channel_axis)"


@dataclass(frozen=True)
class Layout:
    """Which source axes become channels (merged, in order), which become spatial, which
    (size 1) are dropped. ``apply`` reads the array (or a region of it) as ``(C, *spatial)``."""

    source_shape: tuple[int, ...]
    channel_axes: tuple[int, ...]
    spatial_axes: tuple[int, ...]
    drop_axes: tuple[int, ...] = ()

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_axes)

    @property
    def in_channels(self) -> int:
        return math.prod(self.source_shape[i] for i in self.channel_axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.source_shape[i] for i in self.spatial_axes)

    def spacing(self, spacing: Spacing | None) -> Spacing | None:
        """The file's per-axis spacing restricted to the spatial axes, in output order."""
        if spacing is None:
            return None
        out = tuple(spacing[i] for i in self.spatial_axes)
        return out if any(v is not None for v in out) else None

    def apply(self, array: Any, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """``array`` (numpy or lazy: only ``region`` is read) as ``(C, *spatial)``.

        ``region`` is one slice per spatial axis (output order). The result may be a read-only
        view of a memory-mapped file; copy it before writing into it.
        """
        if tuple(array.shape) != self.source_shape:
            raise ValueError(
                f"array has shape {tuple(array.shape)}; this layout is for {self.source_shape}"
            )
        if region is not None and (
            len(region) != self.spatial_dims or not all(isinstance(s, slice) for s in region)
        ):
            raise ValueError(
                invalid("region", region, f"{self.spatial_dims} slices, one per spatial axis")
            )
        index: list[Any] = [slice(None)] * len(self.source_shape)
        for i in self.drop_axes:
            index[i] = 0
        for i, s in zip(self.spatial_axes, region or ()):
            index[i] = s
        data = np.asarray(array[tuple(index)])
        kept = [i for i in range(len(self.source_shape)) if i not in self.drop_axes]
        order = [kept.index(i) for i in (*self.channel_axes, *self.spatial_axes)]
        data = data.transpose(order)  # (*channel axes, *spatial)
        return data.reshape(self.in_channels, *data.shape[len(self.channel_axes) :])


def resolve_layout(
    header: Header,
    spatial_dims: int | None = None,
    channel_axis: int | None = None,
    name: str = "the array",
) -> Layout:
    """The layout of ``header`` (shape + axes) under what the caller stated; see the module doc."""
    shape, axes = tuple(header.shape), header.axes
    n = len(shape)
    if spatial_dims is not None:
        check_int("spatial_dims", spatial_dims, 1)
    if channel_axis is not None:
        check_int("channel_axis", channel_axis, -n, n - 1)
        channel_axis %= n
    described = f"{name} (shape {shape}{f', axes {axes!r}' if axes else ''})"

    if channel_axis is not None:
        chan = (channel_axis,)
        stated = [i for i in range(n) if axes and axes[i] in CHANNELS and shape[i] > 1]
        if any(i != channel_axis for i in stated):
            raise ValueError(
                f"channel_axis={channel_axis - n} names axis {channel_axis}, but {described} has "
                f"its channels on axis {stated}; leave channel_axis unset to use them"
            )
    elif axes:
        chan = tuple(i for i in range(n) if axes[i] in CHANNELS)
    else:
        chan = ()
    rest = [i for i in range(n) if i not in chan]

    if not axes:
        if spatial_dims is None and channel_axis is not None:  # every other axis is spatial
            return Layout(shape, chan, tuple(rest))
        if spatial_dims is None:
            raise ValueError(
                f"{described} carries no axis names, so its layout must be stated: pass "
                f"spatial_dims=... (the number of spatial axes, e.g. spatial_dims={n} for a "
                f"{n}-D volume without channels){' and channel_axis=...' if n > 1 else ''} {HOW}"
            )
        if len(rest) == spatial_dims:
            return Layout(shape, chan, tuple(rest))
        if channel_axis is None and n == spatial_dims + 1:
            raise ValueError(
                f"{described} has one axis more than spatial_dims={spatial_dims}: pass "
                f"channel_axis=0 for (C, *spatial) or channel_axis=-1 for (*spatial, C) {HOW}"
            )
        raise ValueError(
            f"{described} does not fit spatial_dims={spatial_dims}"
            f"{'' if channel_axis is None else f' with channel_axis={channel_axis}'}: it has "
            f"{len(rest)} non-channel axes"
        )

    droppable = [i for i in rest if axes[i] not in SPATIAL and shape[i] == 1]
    if spatial_dims is None:
        spatial = [i for i in rest if i not in droppable]
        unplaced = [i for i in spatial if axes[i] not in SPATIAL]
        if not unplaced:
            return Layout(shape, chan, tuple(spatial), tuple(droppable))
        return _refuse_unplaced(described, axes, shape, unplaced, len(spatial))
    extra = len(rest) - spatial_dims
    if 0 <= extra <= len(droppable):
        drop = tuple(droppable[:extra])
        return Layout(shape, chan, tuple(i for i in rest if i not in drop), drop)
    if extra > 0:
        left = [i for i in rest if axes[i] not in SPATIAL and i not in droppable] or rest
        return _refuse_unplaced(described, axes, shape, left, spatial_dims + 1)
    raise ValueError(
        f"{described} has {len(rest)} non-channel axes, fewer than spatial_dims={spatial_dims}"
    )


def _refuse_unplaced(
    described: str, axes: str, shape: tuple[int, ...], unplaced: list[int], more: int
) -> Layout:
    i = unplaced[-1]
    what = "time" if axes[i] == "T" else "of unknown meaning"
    as_channel = i if i == 0 else i - len(shape)
    raise ValueError(
        f"{described}: axis {axes[i]!r} (size {shape[i]}) is {what}, and whether it is spatial or "
        f"channels must be stated: set spatial_dims={more} ({axes[i]} as a spatial axis) or "
        f"channel_axis={as_channel} ({axes[i]} as channels) "
        f"{HOW}"
    )


def to_channel_first(
    volume: Volume, spatial_dims: int | None = None, channel_axis: int | None = None
) -> np.ndarray:
    """``volume`` read in full as a channel-first ``(C, *spatial)`` array (see ``resolve_layout``)."""
    layout = resolve_layout(
        volume.header, spatial_dims, channel_axis, volume.meta.get("path", "the array")
    )
    return layout.apply(volume.array)
