"""ndunet.io: files written by each format's own library, read back exactly by ndunet (and the
reverse for the writable formats); lazy where promised; files never modified by reading."""

from __future__ import annotations

import hashlib
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import ndunet.io as nio

nib = pytest.importorskip("nibabel")
tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
Image = pytest.importorskip("PIL.Image")

RNG = np.random.default_rng(0)


def _same(a: object, b: np.ndarray) -> None:
    got = np.asarray(a)
    assert got.dtype == b.dtype and got.shape == b.shape
    np.testing.assert_array_equal(got, b)


# ----- npy / npz ------------------------------------------------------------------------------


def test_npy_is_memory_mapped_read_only_without_a_full_read(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(256, 256, 256))
    big[3, 4, 5] = 7.0
    del big
    tracemalloc.start()
    v = nio.read(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(v.array, np.memmap) and not v.array.flags.writeable
    assert peak < 1 << 20  # 64 MiB file, < 1 MiB allocated
    assert v.shape == (256, 256, 256) and v.array[3, 4, 5] == 7.0 and v.axes is None
    assert nio.shape_of(path) == (256, 256, 256)


def test_npz_members_stored_are_mapped_compressed_are_read(tmp_path: Path) -> None:
    a = RNG.integers(0, 5000, (3, 4, 5)).astype(np.uint16)
    f = np.asfortranarray(RNG.normal(size=(4, 6)).astype(np.float32))
    np.savez(tmp_path / "s.npz", image=a, label=f)
    np.savez_compressed(tmp_path / "c.npz", image=a)
    stored = nio.read(tmp_path / "s.npz", key="image")
    assert isinstance(stored.array, np.memmap)
    _same(stored.array, a)
    _same(nio.read(tmp_path / "s.npz", key="label").array, f)
    _same(nio.read(tmp_path / "c.npz").array, a)  # one member: no key needed
    assert nio.shape_of(tmp_path / "s.npz", "label") == (4, 6)
    with pytest.raises(ValueError, match=r"\['image', 'label'\].*key="):
        nio.read(tmp_path / "s.npz")
    with pytest.raises(ValueError, match="did you mean 'label'"):
        nio.read(tmp_path / "s.npz", key="labels")


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="unpickling"):
        nio.read(tmp_path / "o.npy")


# ----- NIfTI ----------------------------------------------------------------------------------


def test_nifti_3d_exact_with_affine_spacing_and_lazy(tmp_path: Path) -> None:
    a = RNG.integers(-1000, 3000, (6, 7, 5)).astype(np.int16)
    affine = np.array([[0.8, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 2.5, 1], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(a, affine), tmp_path / "ct.nii.gz")
    v = nio.read(tmp_path / "ct.nii.gz")
    assert not isinstance(v.array, np.ndarray)  # nibabel's proxy: slices read on demand
    _same(v.array[:], a)
    assert v.header.dtype == np.int16 and v.axes == "XYZ"
    np.testing.assert_allclose(v.affine, affine)
    assert v.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert nio.shape_of(tmp_path / "ct.nii.gz") == (6, 7, 5)


def test_nifti_4d_time_and_scaled_data(tmp_path: Path) -> None:
    a = RNG.normal(size=(4, 5, 6, 3)).astype(np.float32)
    img = nib.Nifti1Image(a, np.eye(4))
    img.header.set_zooms((1.0, 1.0, 2.0, 0.7))
    nib.save(img, tmp_path / "bold.nii")
    v = nio.read(tmp_path / "bold.nii")
    assert v.axes == "XYZT" and v.spacing == pytest.approx((1, 1, 2, 0.7))
    _same(v.array[:], a)
    s = nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4))
    s.header.set_slope_inter(0.5, 1.0)
    nib.save(s, tmp_path / "scaled.nii")
    scaled = nio.read(tmp_path / "scaled.nii")
    assert scaled.header.dtype == np.asarray(scaled.array[:]).dtype
    np.testing.assert_allclose(np.asarray(scaled.array[:]).ravel(), np.arange(8) * 0.5 + 1)


def test_nifti_write_read_by_nibabel(tmp_path: Path) -> None:
    a = RNG.integers(0, 4, (5, 6, 7)).astype(np.int64)
    nio.write(tmp_path / "seg.nii.gz", a, spacing=(0.5, 0.75, 3.0))
    img = nib.load(tmp_path / "seg.nii.gz")
    _same(img.dataobj[:], a)
    assert img.header.get_zooms() == pytest.approx((0.5, 0.75, 3.0))
    np.testing.assert_allclose(img.affine, np.diag([0.5, 0.75, 3.0, 1.0]))
    assert (tmp_path / "seg.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip, as the suffix says
    affine = np.array([[0, -2.0, 0, 3], [1.0, 0, 0, 4], [0, 0, 1.5, 5], [0, 0, 0, 1]])
    nio.write(tmp_path / "o.nii", a.astype(np.float32), affine=affine)
    np.testing.assert_allclose(nio.read(tmp_path / "o.nii").affine, affine)
    with pytest.raises(ValueError, match="disagrees"):
        nio.write(tmp_path / "bad.nii", a, affine=affine, spacing=(1.0, 1.0, 1.0))


# ----- TIFF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["shaped", "plain", "pages", "zlib"])
def test_tiff_stack_of_10_uint16_pages(tmp_path: Path, how: str) -> None:
    a = RNG.integers(0, 65535, (10, 6, 7)).astype(np.uint16)
    path = tmp_path / "stack.tif"
    if how == "pages":  # one page per write call, as many acquisition programs do
        with tifffile.TiffWriter(path) as tw:
            for page in a:
                tw.write(page, metadata=None)
    else:
        kwargs = {"metadata": None} if how == "plain" else {}
        tifffile.imwrite(path, a, compression="zlib" if how == "zlib" else None, **kwargs)
    v = nio.read(path)
    _same(v.array[:], a)
    assert v.axes in ("QYX", "IYX") and v.meta["pages"] == 10
    # contiguous uncompressed pages are mapped; the others are read lazily through zarr
    assert isinstance(v.array, np.memmap) == (how in ("shaped", "plain"))
    v.close()


def test_tiff_imagej_ome_axes_and_spacing(tmp_path: Path) -> None:
    a = RNG.integers(0, 4000, (3, 4, 2, 5, 6)).astype(np.uint16)  # T Z C Y X
    tifffile.imwrite(
        tmp_path / "h.tif",
        a,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"axes": "TZCYX", "spacing": 2.0, "unit": "um"},
    )
    v = nio.read(tmp_path / "h.tif")
    assert v.axes == "TZCYX" and v.spacing == pytest.approx((None, 2.0, None, 0.5, 0.25))
    _same(v.array[:], a)
    b = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    meta = {"axes": "CZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.2}
    tifffile.imwrite(tmp_path / "o.ome.tif", b, metadata=meta)
    o = nio.read(tmp_path / "o.ome.tif")
    assert o.axes == "CZYX" and o.meta["kind"] == "ome"
    assert o.spacing == pytest.approx((None, 1.2, 0.3, 0.3))
    _same(nio.to_channel_first(o), b)


def test_tiff_write_round_trip_with_spacing(tmp_path: Path) -> None:
    a = RNG.integers(0, 65535, (4, 5, 6)).astype(np.uint16)
    nio.write(tmp_path / "w.tif", a, axes="ZYX", spacing=(2.0, 0.5, 0.25))
    with tifffile.TiffFile(tmp_path / "w.tif") as tif:
        _same(tif.asarray(), a)
        x, y = tif.pages[0].tags["XResolution"].value, tif.pages[0].tags["YResolution"].value
        assert x[0] / x[1] == pytest.approx(4.0) and y[0] / y[1] == pytest.approx(2.0)
    v = nio.read(tmp_path / "w.tif")
    assert v.axes == "ZYX" and v.spacing == (2.0, 0.5, 0.25)
    with pytest.raises(ValueError, match="affine"):
        nio.write(tmp_path / "x.tif", a, affine=np.eye(4))


# ----- Zarr, HDF5 -----------------------------------------------------------------------------


ZARR3 = int(zarr.__version__.split(".")[0]) >= 3


@pytest.mark.parametrize("zarr_format", [2, 3] if ZARR3 else [2])
def test_zarr_array_group_and_ome_zarr(tmp_path: Path, zarr_format: int) -> None:
    fmt = {"zarr_format": zarr_format} if ZARR3 else {}
    a = RNG.normal(size=(5, 6, 7)).astype(np.float32)
    z = zarr.open_array(
        str(tmp_path / "a.zarr"), mode="w", shape=a.shape, dtype=a.dtype, chunks=(2, 3, 7), **fmt
    )
    z[:] = a
    v = nio.read(tmp_path / "a.zarr")
    assert not isinstance(v.array, np.ndarray)
    _same(v.array[:], a)
    g = zarr.open_group(str(tmp_path / "g.ome.zarr"), mode="w", **fmt)
    create = g.create_array if ZARR3 else g.create_dataset
    create("0", data=a)
    create("1", data=a[::2, ::2, ::2])
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    scale = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    datasets = [{"path": "0", "coordinateTransformations": scale}, {"path": "1"}]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    o = nio.read(tmp_path / "g.ome.zarr")
    assert o.axes == "ZYX" and o.spacing == (2.0, 0.5, 0.5)
    _same(o.array[:], a)
    assert nio.shape_of(tmp_path / "g.ome.zarr", "1") == (3, 3, 4)
    with pytest.raises(ValueError, match=r"\['0', '1'\]"):
        nio.read(tmp_path / "g.ome.zarr", key="2")


def test_hdf5_keys_dimension_labels_and_spacing(tmp_path: Path) -> None:
    a = RNG.integers(0, 255, (2, 4, 5, 6)).astype(np.uint8)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        d = f.create_dataset("volumes/raw", data=a, chunks=(1, 2, 5, 6))
        for dim, label in zip(d.dims, "czyx"):
            dim.label = label
        d.attrs["element_size_um"] = [1.0, 2.0, 0.5, 0.5]
        f.create_dataset("volumes/labels", data=a[0])
    with nio.read(tmp_path / "d.h5", key="volumes/raw") as v:
        assert v.axes == "CZYX" and v.spacing == (1.0, 2.0, 0.5, 0.5)
        _same(v.array[:], a)
        _same(nio.to_channel_first(v), a)
    with pytest.raises(ValueError, match="did you mean 'volumes/raw'"):
        nio.read(tmp_path / "d.h5", key="volumes/ra")
    with pytest.raises(ValueError, match="pass key="):
        nio.read(tmp_path / "d.h5")


# ----- PNG ------------------------------------------------------------------------------------


def test_png_8_and_16_bit_from_pillow(tmp_path: Path) -> None:
    g16 = np.linspace(0, 14000, 12 * 9).reshape(12, 9).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    v = nio.read(tmp_path / "g16.png")
    _same(v.array, g16)
    assert v.array.max() == 14000 and v.axes == "YX"
    rgb = RNG.integers(0, 255, (5, 6, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    _same(nio.read(tmp_path / "rgb.png").array, rgb)
    _same(nio.to_channel_first(nio.read(tmp_path / "rgb.png")), rgb.transpose(2, 0, 1))
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8)).convert("P")
    pal.save(tmp_path / "p.png")
    assert nio.read(tmp_path / "p.png").meta["palette"]


def _png16_filtered(path: Path, a: np.ndarray, colour: int) -> None:
    """A 16-bit PNG using all five row filters in turn (the independent encoder for the test)."""
    h, w = a.shape[:2]
    x = a.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int32)
    bpp = x.shape[1] // w
    left = np.pad(x, ((0, 0), (bpp, 0)))[:, :-bpp]
    up = np.pad(x, ((1, 0), (0, 0)))[:-1]
    ul = np.pad(up, ((0, 0), (bpp, 0)))[:, :-bpp]
    p = left + up - ul
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
    preds = [0 * x, left, up, (left + up) // 2, paeth]
    rows = b"".join(
        bytes([r % 5]) + ((x[r] - preds[r % 5][r]) % 256).astype(np.uint8).tobytes()
        for r in range(h)
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_png_4_bit_gray_keeps_its_values(tmp_path: Path) -> None:
    rows = zlib.compress(b"\x00\x01\x2f")  # one row, filter 0, samples 0 1 2 15
    ihdr = struct.pack(">IIBBBBB", 4, 1, 4, 0, 0, 0, 0)
    chunks = [(b"IHDR", ihdr), (b"IDAT", rows), (b"IEND", b"")]
    body = b"".join(
        struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks
    )
    (tmp_path / "g4.png").write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    _same(nio.read(tmp_path / "g4.png").array, np.array([[0, 1, 2, 15]], np.uint8))


@pytest.mark.parametrize("channels,colour", [(3, 2), (4, 6), (2, 4)])
def test_png_16_bit_colour_exact(tmp_path: Path, channels: int, colour: int) -> None:
    a = RNG.integers(0, 65536, (11, 13, channels)).astype(np.uint16)
    _png16_filtered(tmp_path / "f.png", a, colour)
    v = nio.read(tmp_path / "f.png")
    _same(v.array, a)
    assert v.axes == "YXS" and nio.shape_of(tmp_path / "f.png") == a.shape
    nio.write(tmp_path / "w.png", a)
    _same(nio.read(tmp_path / "w.png").array, a)
    with Image.open(tmp_path / "w.png") as im:  # a valid PNG for other readers too
        assert im.size == (13, 11)


# ----- write safety, readers leave files alone, optional dependencies -------------------------


def test_write_refuses_overwrite_links_and_unstorable_metadata(tmp_path: Path) -> None:
    a = np.zeros((3, 4), np.uint8)
    nio.write(tmp_path / "a.npy", a)
    with pytest.raises(FileExistsError, match="never overwrites"):
        nio.write(tmp_path / "a.npy", a)
    (tmp_path / "link.npy").symlink_to(tmp_path / "target.npy")
    with pytest.raises(ValueError, match="symbolic link"):
        nio.write(tmp_path / "link.npy", a)
    assert not (tmp_path / "target.npy").exists()
    with pytest.raises(ValueError, match="writable suffix"):
        nio.write(tmp_path / "a.zarr", a)
    with pytest.raises(ValueError, match="a file ending in one of"):
        nio.write(tmp_path / "a.jpg", a)
    with pytest.raises(ValueError, match="PNG stores no"):
        nio.write(tmp_path / "a.png", a, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing="):
        nio.write(tmp_path / "b.nii", a, spacing=(1.0,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "link.npy"]  # no temp left


def test_readers_never_modify_files(tmp_path: Path) -> None:
    a = RNG.integers(0, 100, (4, 5, 6)).astype(np.uint16)
    np.save(tmp_path / "a.npy", a)
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "a.nii")
    tifffile.imwrite(tmp_path / "a.tif", a, photometric="minisblack")
    Image.fromarray(a[0]).save(tmp_path / "a.png")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = a
    files = sorted(tmp_path.iterdir())
    digest = {p: hashlib.sha256(p.read_bytes()).digest() for p in files}
    for p in files:
        with nio.read(p) as v:
            np.asarray(v.array[:])
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in files} == digest


@pytest.mark.parametrize(
    "module,extra,suffix", [("nibabel", "nifti", ".nii"), ("h5py", "hdf5", ".h5")]
)
def test_missing_library_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, extra: str, suffix: str
) -> None:
    (tmp_path / f"a{suffix}").write_bytes(b"")
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"ndunet\[{extra}\].*ndunet\[io\]"):
        nio.read(tmp_path / f"a{suffix}")
