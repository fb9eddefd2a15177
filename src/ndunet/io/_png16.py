"""PNG chunks by hand, for what Pillow cannot do exactly: 16-bit colour (RGB, RGBA, gray+alpha).

Pillow reduces those to 8 bits on read and cannot write them. Decoding undoes the five PNG
row filters (https://www.w3.org/TR/png/#9Filters) along anti-diagonals: a byte depends only on
its left, upper and upper-left neighbours, so every pixel of one diagonal is ready together.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def read_ihdr(path: Path) -> tuple[int, int, int, int, int]:
    """(height, width, bit depth, colour type, interlace) from the IHDR chunk."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"{str(path)!r} is not a PNG file (no PNG signature and IHDR chunk)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if colour not in CHANNELS:
        raise ValueError(
            f"{str(path)!r} has PNG colour type {colour}; expected one of {list(CHANNELS)}"
        )
    return height, width, depth, colour, interlace


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], len(SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def decode16(path: Path) -> np.ndarray:
    """A 16-bit non-interlaced PNG as uint16 (H, W, channels), exact."""
    height, width, depth, colour, interlace = read_ihdr(path)
    if depth != 16 or interlace:
        raise ValueError(f"{str(path)!r}: only non-interlaced 16-bit PNGs are decoded here")
    data = Path(path).read_bytes()
    idat = b"".join(body for kind, body in _chunks(data) if kind == b"IDAT")
    bpp = 2 * CHANNELS[colour]  # bytes per pixel
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * bpp)
    kinds = rows[:, 0].astype(np.int32)
    if kinds.max(initial=0) > 4:
        raise ValueError(f"{str(path)!r} uses an unknown PNG filter type {kinds.max()}")
    raw = rows[:, 1:].reshape(height, width, bpp).astype(np.int32)
    out = np.zeros((height + 1, width + 1, bpp), np.int32)  # a zero row above, zero column left
    for k in range(height + width - 1):
        r = np.arange(max(0, k - width + 1), min(height, k + 1))
        x = k - r
        a, b, c = out[r + 1, x], out[r, x + 1], out[r, x]  # left, up, up-left: (n, bpp)
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        f = kinds[r][:, None]
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) // 2, paeth], 0)
        out[r + 1, x + 1] = (raw[r, x] + pred) & 0xFF
    pixels = out[1:, 1:].astype(np.uint8).reshape(height, width * bpp)
    return pixels.view(">u2").reshape(height, width, bpp // 2).astype(np.uint16)


def encode16(path: Path, array: np.ndarray) -> None:
    """Write uint16 (H, W) or (H, W, 2|3|4) as a 16-bit PNG (filter None on every row)."""
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[1 if array.ndim == 2 else array.shape[2]]
    height, width = array.shape[:2]
    rows = array.astype(">u2").reshape(height, -1).view(np.uint8)  # (H, W * bpp) big-endian
    body = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    data = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(SIGNATURE + data)
