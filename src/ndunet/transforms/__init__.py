"""N-D augmentation of (C, *spatial) samples, image and label alike, seeded by a generator.

Every transform is called as ``t(image, label=None, *, generator)`` and returns
``(image, label)``; see ``base`` for the contract.
"""

from .affine import RandAffine, affine_coords, affine_matrix, sample_nd
from .base import Compose, RandomTransform, Transform
from .intensity import RandContrast, RandGamma, RandGaussianBlur, RandGaussianNoise, gaussian_blur
from .registry import TRANSFORMS, build_transform
from .spatial import RandFlip, RandRot90

__all__ = [
    "TRANSFORMS",
    "Compose",
    "RandAffine",
    "RandContrast",
    "RandFlip",
    "RandGamma",
    "RandGaussianBlur",
    "RandGaussianNoise",
    "RandRot90",
    "RandomTransform",
    "Transform",
    "affine_coords",
    "affine_matrix",
    "build_transform",
    "gaussian_blur",
    "sample_nd",
]
