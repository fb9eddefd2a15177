"""Readers and writers for volumes of any dimension: .npy/.npz, NIfTI, TIFF (stacks, ImageJ,
OME), Zarr, HDF5 and PNG (8/16-bit), behind one interface; channel-first layouts, stated.

NIfTI, TIFF, Zarr and HDF5 need optional libraries: ``pip install 'ndunet[io]'`` (or one of
the extras ``nifti``, ``tiff``, ``zarr``, ``hdf5``).
"""

from .base import (
    FORMATS,
    Format,
    Header,
    Volume,
    format_of,
    read,
    read_header,
    register,
    shape_of,
    stem_of,
    suffixes,
    write,
)
from .layout import Layout, resolve_layout, to_channel_first

__all__ = [
    "FORMATS",
    "Format",
    "Header",
    "Layout",
    "Volume",
    "format_of",
    "read",
    "read_header",
    "register",
    "resolve_layout",
    "shape_of",
    "stem_of",
    "suffixes",
    "to_channel_first",
    "write",
]
