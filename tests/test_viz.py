"""ndunet.viz: PNG grids for 1-D to 4-D samples, denoising strips, loss curves, bad input."""

from __future__ import annotations

import csv
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ndunet.viz import plot_loss, save_samples, save_strip


def _png(path) -> Image.Image:
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    image.load()
    return image


def _gray(value: float | np.ndarray) -> np.ndarray:
    """The pixel value save_samples should write for data in [-1, 1]."""
    return np.floor((np.clip(value, -1, 1) + 1) / 2 * 255 + 0.5)


def test_2d_gray_grid_size_and_values(tmp_path) -> None:
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    x[0] = 1.0
    x[1] = -1.0
    x[2] = 5.0  # clipped to white
    out = save_samples(x, tmp_path / "sub" / "g.png", nrow=4, scale=3, padding=2)
    image = _png(out)
    assert image.mode == "L" and image.size == (4 * (24 + 2) + 2, 3 * (24 + 2) + 2)
    pixels = np.asarray(image).astype(float)
    for i in range(10):
        top, left = 2 + (i // 4) * 26, 2 + (i % 4) * 26
        tile = pixels[top : top + 24, left : left + 24]
        expected = np.kron(_gray(x[i, 0].numpy()), np.ones((3, 3)))  # nearest-neighbour zoom
        np.testing.assert_allclose(tile, expected, atol=1)
    assert pixels[0].min() == 255  # padding is white


def test_2d_rgb_and_auto_scale(tmp_path) -> None:
    x = -torch.ones(3, 3, 16, 16)
    x[0, 0] = 1.0  # pure red
    x[2, 2] = 1.0  # pure blue
    image = _png(save_samples(x, tmp_path / "rgb.png", value_range=(-1, 1)))
    assert image.mode == "RGB"
    scale = 64 // 16  # automatic zoom to about 64 pixels
    side = 16 * scale
    assert image.size == (2 * (side + 2) + 2, 2 * (side + 2) + 2)  # nrow defaults to ceil(sqrt 3)
    pixels = np.asarray(image)
    assert tuple(pixels[2 + side // 2, 2 + side // 2]) == (255, 0, 0)
    assert tuple(pixels[side + 4 + side // 2, 2 + side // 2]) == (0, 0, 255)


def test_value_range_none_uses_batch_extremes(tmp_path) -> None:
    x = torch.linspace(3, 7, 16).reshape(1, 1, 4, 4)
    pixels = np.asarray(
        _png(save_samples(x, tmp_path / "r.png", value_range=None, scale=1, padding=0))
    )
    assert pixels.min() == 0 and pixels.max() == 255
    assert (np.diff(pixels.reshape(-1).astype(int)) >= 0).all()  # order kept


def test_1d_line_plots(tmp_path) -> None:
    t = torch.linspace(0, 2 * math.pi, 50)
    x = torch.stack([torch.stack([torch.sin(t * k), torch.cos(t * k)]) for k in range(5)])
    image = _png(save_samples(x, tmp_path / "lines.png", nrow=3))  # (5, 2, 50)
    assert image.size == (3 * 200, 2 * 150)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    # Some panels hold coloured lines; the unused sixth panel (bottom right) stays blank.
    colored = np.ptp(pixels, axis=2) > 60
    assert colored[:150, :200].sum() > 100
    assert colored[150:, 400:].sum() == 0


def _planes(volume: np.ndarray) -> list[np.ndarray]:
    """Independent oracle: central 2-D slices through every pair of axes of a (*spatial) array."""
    out = []
    for a, b in itertools.combinations(range(volume.ndim), 2):
        index = [s // 2 for s in volume.shape]
        index[a], index[b] = slice(None), slice(None)
        out.append(volume[tuple(index)])
    return out


@pytest.mark.parametrize("shape", [(4, 5, 6), (3, 4, 5, 6)], ids=["3d", "4d"])
def test_nd_montage_of_central_slices(tmp_path, shape: tuple[int, ...]) -> None:
    x = torch.rand(2, 1, *shape) * 2 - 1
    image = _png(save_samples(x, tmp_path / "m.png", nrow=2, scale=1, padding=0))
    planes = _planes(x[0, 0].numpy())
    assert len(planes) == math.comb(len(shape), 2)
    height = max(p.shape[0] for p in planes)
    width = sum(p.shape[1] for p in planes) + len(planes) - 1
    assert image.size == (2 * width, height)
    pixels = np.asarray(image).astype(float)
    for sample in range(2):
        left = sample * width
        for plane in _planes(x[sample, 0].numpy()):
            h, w = plane.shape
            np.testing.assert_allclose(pixels[:h, left : left + w], _gray(plane), atol=1)
            left += w + 1


def test_other_channel_counts_are_drawn_per_channel(tmp_path) -> None:
    x = torch.zeros(1, 2, 5, 5)
    x[0, 0] = -1.0
    x[0, 1] = 1.0
    pixels = np.asarray(_png(save_samples(x, tmp_path / "c2.png", scale=1, padding=0)))
    assert pixels.shape == (5, 11)
    assert (pixels[:, :5] == 0).all() and (pixels[:, 6:] == 255).all()


def test_strip_rows_are_samples_columns_are_steps(tmp_path) -> None:
    steps, n = 7, 3
    levels = torch.linspace(-1, 1, steps)
    trajectory = levels.view(steps, 1, 1, 1, 1).expand(steps, n, 1, 8, 8).clone()
    trajectory += torch.arange(n).view(1, n, 1, 1, 1) * 0.01  # tell rows apart
    image = _png(save_strip(list(trajectory), tmp_path / "s.png", columns=4, scale=2, padding=1))
    assert image.size == (4 * 17 + 1, 3 * 17 + 1)
    pixels = np.asarray(image).astype(float)
    kept = [0, 2, 4, 6]  # evenly spaced, first and last included
    for row, col in itertools.product(range(n), range(4)):
        centre = pixels[1 + row * 17 + 8, 1 + col * 17 + 8]
        assert abs(centre - _gray(levels[kept[col]].item() + row * 0.01)) <= 1
    full = _png(save_strip(trajectory, tmp_path / "all.png", columns=None, scale=1, padding=0))
    assert full.size == (7 * 8, 3 * 8)
    one_d = _png(save_strip(torch.randn(5, 2, 1, 32), tmp_path / "s1.png", columns=3))
    assert one_d.size == (3 * 200, 2 * 150)


def _log_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for step in range(1, 121):
        row: dict[str, object] = {"step": step, "epoch": step // 40, "loss": 1 / step, "lr": 1e-3}
        row["val_loss"] = 1.2 / step if step % 40 == 0 else ""
        row["val_dice"] = 1 - 1 / step if step % 40 == 0 else ""
        rows.append(row)
    return rows


def test_plot_loss_from_csv_and_rows(tmp_path) -> None:
    rows = _log_rows()
    with open(tmp_path / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "wall_time"])
        writer.writeheader()
        writer.writerows(rows)
    image = _png(plot_loss(tmp_path / "log.csv", tmp_path / "loss.png"))
    assert image.size == (3 * 450, 350)  # loss, validation metrics, learning rate
    only_loss = [{"step": r["step"], "loss": r["loss"]} for r in rows]
    assert _png(plot_loss(only_loss, tmp_path / "l.png")).size == (450, 350)


def test_viz_leaves_pyplot_alone(tmp_path) -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    save_samples(torch.randn(2, 1, 16), tmp_path / "a.png")
    plot_loss(_log_rows(), tmp_path / "b.png")
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: save_samples(torch.zeros(4, 8), p), ValueError, r"shape \(4, 8\)"),
        (lambda p: save_samples(torch.zeros(0, 1, 8, 8), p), ValueError, "N >= 1"),
        (lambda p: save_samples([[1.0]], p), TypeError, "list"),
        (lambda p: save_samples(torch.zeros(1, 1, 4, 4), p.with_suffix(".jpg")), ValueError, "png"),
        (lambda p: save_samples(torch.zeros(1, 1, 4, 4), p, nrow=0), ValueError, "nrow=0"),
        (lambda p: save_samples(torch.zeros(1, 1, 4, 4), p, scale=0), ValueError, "scale=0"),
        (
            lambda p: save_samples(torch.zeros(1, 1, 4, 4), p, value_range=(1, -1)),
            ValueError,
            "value_range",
        ),
        (lambda p: save_strip([], p), ValueError, "trajectory is empty"),
        (lambda p: save_strip(torch.zeros(2, 3, 8), p), ValueError, r"\(T, N, C"),
        (lambda p: save_strip(torch.zeros(2, 1, 1, 4), p, columns=0), ValueError, "columns=0"),
        (lambda p: plot_loss([{"step": 1}], p), ValueError, r"no 'loss' column.*\['step'\]"),
        (lambda p: plot_loss(p.with_name("none.csv"), p), FileNotFoundError, "none.csv"),
        (lambda p: plot_loss([], p), ValueError, "no rows"),
        (lambda p: plot_loss([{"loss": 1}], p, smoothing=1.0), ValueError, "smoothing=1.0"),
    ],
)
def test_bad_input(tmp_path, call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
