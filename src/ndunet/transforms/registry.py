"""Transforms by name, for run files: ``[augment]`` tables of ``name = {options}``.

    build_transform({"flip": {"axes": [0, 1, 2]}, "gamma": {}})  # Compose([RandFlip, RandGamma])

Names are short (``flip``, ``rot90``, ``affine``, ``gamma``, ``noise``, ``contrast``, ``blur``);
the options are the constructor's keywords. Transforms run in the order the table gives them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ndunet._checks import did_you_mean, invalid

from .affine import RandAffine
from .base import Compose
from .intensity import RandContrast, RandGamma, RandGaussianBlur, RandGaussianNoise
from .spatial import RandFlip, RandRot90

__all__ = ["TRANSFORMS", "build_transform"]

TRANSFORMS: dict[str, type] = {
    "flip": RandFlip,
    "rot90": RandRot90,
    "affine": RandAffine,
    "gamma": RandGamma,
    "noise": RandGaussianNoise,
    "contrast": RandContrast,
    "blur": RandGaussianBlur,
}


def build_transform(spec: Mapping[str, Mapping[str, Any]] | Sequence[str]) -> Compose:
    """A :class:`Compose` of the named transforms: a table ``{name: {option: value}}`` (in its
    order) or a list of names (default options). Unknown names and options are refused with
    the valid ones; option values are checked by the transforms themselves."""
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        items = [(name, {}) for name in spec]
    else:
        raise TypeError(invalid("transforms", spec, "a table {name: {options}} or a list of names"))
    names = sorted(TRANSFORMS)
    out = []
    for name, options in items:
        if not isinstance(name, str) or name not in TRANSFORMS:
            hint = did_you_mean(name, names)
            raise ValueError(invalid("transforms", name, f"a transform name, one of {names}", hint))
        if not isinstance(options, Mapping):
            raise TypeError(invalid(name, options, "a table of options, e.g. {prob = 0.5}"))
        cls = TRANSFORMS[name]
        params = [p for p in inspect.signature(cls).parameters if p != "self"]
        for key in options:
            if key not in params:
                raise ValueError(
                    f"transform {name!r} has no option {key!r}{did_you_mean(key, params)}; "
                    f"options: {params}"
                )
        out.append(cls(**options))
    return Compose(out)
