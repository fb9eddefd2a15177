"""ndunet.io.layout: channel-first from the file's axes where they say, stated where they do not."""

from __future__ import annotations

import numpy as np
import pytest

from ndunet.io import Header, Volume, resolve_layout, to_channel_first

RNG = np.random.default_rng(0)


def _vol(shape: tuple[int, ...], axes: str | None = None) -> Volume:
    return Volume(RNG.normal(size=shape).astype(np.float32), axes, meta={"path": "f"})


def test_bare_array_needs_spatial_dims_and_channel_axis() -> None:
    v = _vol((4, 5, 6))  # (D, H, W) or (C, H, W)? The file does not say.
    with pytest.raises(ValueError, match=r"spatial_dims=\.\.\..*spatial_dims=3"):
        to_channel_first(v)
    np.testing.assert_array_equal(to_channel_first(v, spatial_dims=3), v.array[None])
    with pytest.raises(ValueError, match=r"channel_axis=0 for .*channel_axis=-1"):
        to_channel_first(v, spatial_dims=2)
    np.testing.assert_array_equal(to_channel_first(v, 2, channel_axis=0), v.array)
    np.testing.assert_array_equal(to_channel_first(v, 2, -1), v.array.transpose(2, 0, 1))
    np.testing.assert_array_equal(to_channel_first(v, channel_axis=-1), v.array.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="does not fit spatial_dims=1"):
        to_channel_first(v, spatial_dims=1)
    with pytest.raises(ValueError, match="channel_axis=3 is not valid"):
        to_channel_first(v, 2, channel_axis=3)
    with pytest.raises(ValueError, match="spatial_dims=0 is not valid"):
        to_channel_first(v, spatial_dims=0)


def test_one_d_signal() -> None:
    v = _vol((100,))
    assert to_channel_first(v, spatial_dims=1).shape == (1, 100)
    assert to_channel_first(_vol((2, 100)), 1, channel_axis=0).shape == (2, 100)


def test_nifti_time_axis_must_be_stated() -> None:
    v = _vol((4, 5, 6, 7), "XYZT")
    for sd in (None, 3):
        with pytest.raises(
            ValueError,
            match=r"spatial_dims=4 \(T as a spatial axis\) or channel_axis=-1 \(T as channels\).*data\.spatial_dims",
        ):
            to_channel_first(v, spatial_dims=sd)
    np.testing.assert_array_equal(to_channel_first(v, spatial_dims=4), v.array[None])
    as_channels = to_channel_first(v, channel_axis=-1)
    np.testing.assert_array_equal(as_channels, v.array.transpose(3, 0, 1, 2))
    assert resolve_layout(v.header, 3, -1).spatial_shape == (4, 5, 6)


def test_size_one_axes_of_other_meaning_are_dropped() -> None:
    v = _vol((4, 5, 6, 1), "XYZT")  # a 3-D NIfTI saved with a time axis of 1
    assert to_channel_first(v).shape == (1, 4, 5, 6)
    assert to_channel_first(v, spatial_dims=4).shape == (1, 4, 5, 6, 1)
    hyper = _vol((1, 3, 2, 5, 6), "TZCYX")  # ImageJ hyperstack, one time point
    out = to_channel_first(hyper)
    np.testing.assert_array_equal(out, hyper.array[0].transpose(1, 0, 2, 3))


def test_tiff_letters() -> None:
    stack = _vol((10, 5, 6), "IYX")  # a stack of pages of unknown meaning
    with pytest.raises(
        ValueError, match=r"'I' \(size 10\) is of unknown meaning.*spatial_dims=3.*channel_axis=0"
    ):
        to_channel_first(stack)
    assert to_channel_first(stack, spatial_dims=3).shape == (1, 10, 5, 6)
    assert to_channel_first(stack, spatial_dims=2, channel_axis=0).shape == (10, 5, 6)
    rgb = _vol((5, 6, 3), "YXS")
    np.testing.assert_array_equal(to_channel_first(rgb), rgb.array.transpose(2, 0, 1))
    both = _vol((2, 5, 6, 3), "CYXS")  # channels and samples merge, C major
    np.testing.assert_array_equal(
        to_channel_first(both), both.array.transpose(0, 3, 1, 2).reshape(6, 5, 6)
    )
    tczyx = _vol((3, 2, 4, 5, 6), "TCZYX")
    assert to_channel_first(tczyx, spatial_dims=4).shape == (2, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="has its channels on axis"):
        to_channel_first(_vol((2, 4, 5), "CYX"), channel_axis=1)


def test_region_reads_only_a_part_and_spacing_follows() -> None:
    v = Volume(np.arange(2 * 4 * 5 * 6).reshape(4, 5, 6, 2), "ZYXC", spacing=(2.0, 0.5, 0.4, None))
    layout = resolve_layout(v.header)
    assert (layout.in_channels, layout.spatial_shape) == (2, (4, 5, 6))
    assert layout.spacing(v.spacing) == (2.0, 0.5, 0.4)
    part = layout.apply(v.array, (slice(1, 3), slice(None), slice(0, 2)))
    np.testing.assert_array_equal(part, v.array[1:3, :, 0:2].transpose(3, 0, 1, 2))
    with pytest.raises(ValueError, match="region="):
        layout.apply(v.array, (slice(1, 3),))


def test_header_checks_axes_length() -> None:
    with pytest.raises(ValueError, match="one entry per axis"):
        Header((4, 5), np.dtype(np.uint8), axes="ZYX")
