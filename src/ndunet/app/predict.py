"""``ndunet predict``: a trained supervised run applied to whole volumes of any format.

Each input (a file, or every volume file of a folder) is read through ``ndunet.io`` with the
run's layout (``spatial_dims`` and ``in_channels`` from the model; ``channel_axis`` and ``key``
from the run's [data] section unless given), normalised as the run recorded, predicted by
``sliding_window_inference`` (windows of the run's patch size unless given; optional flip
test-time augmentation; optionally the network's forward in bf16 or fp16 under autocast), and
written into the output folder in the input's format with its affine, spacing and axis letters:
class labels (uint8, int16 past 255 classes; uint16 for PNG) for segmentation runs, float32
values for regression runs. Nothing is ever overwritten.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ndunet.inference import predict_volume
from ndunet.inference.amp import Amp, resolve_amp
from ndunet.inference.compiled import CompileMode, check_compile, with_compile

LABEL_LOSSES = ("cross_entropy", "bce", "dice", "dice_ce")  # runs whose outputs are logits
VALUE_LOSSES = ("mse", "l1")
Output = Literal["auto", "labels", "values"]
# the keyword options of predict_files (and the CLI's flags of the same names)
OPTIONS = (
    "which", "roi_size", "overlap", "sw_batch_size", "mode", "tta_axes", "device", "channel_axis",
    "key", "output", "suffix", "amp", "compile",
)  # fmt: skip

__all__ = ["PredictError", "predict_files", "predict_volume"]  # predict_volume: ndunet.inference


class PredictError(ValueError):
    """A user mistake (the CLI prints it without a traceback)."""


@dataclass
class Job:
    """One input file, how it reads as (C, *spatial), and the file its prediction goes to."""

    source: Path
    target: Path
    header: Any = None  # ndunet.io.Header
    layout: Any = None  # ndunet.io.Layout


def predict_files(
    run: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    which: Literal["last", "best"] = "best",
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
    tta_axes: Sequence[int] = (),
    device: str = "auto",
    channel_axis: int | None = None,
    key: str | None = None,
    output: Output = "auto",
    suffix: str | None = None,
    amp: Amp = "none",
    compile: CompileMode | bool | None = None,
    progress: bool = True,
) -> list[Path]:
    """Predict every input with the run in ``run`` and write the results into ``out``; returns
    the files written. ``amp`` ("bf16", "fp16") runs the network's forward under autocast on
    ``device`` (see :func:`predict_volume`); ``compile`` compiles the network once for every
    input (:func:`ndunet.inference.with_compile`). Every problem found before inference (a missing
    file, an output that exists, a layout the run cannot read, an ``amp`` the device cannot
    run) is a :class:`PredictError` raised before any work."""
    from ndunet.data.volume_files import list_files
    from ndunet.io import format_of, stem_of
    from ndunet.training import load_run
    from ndunet.training.distributed import resolve_device
    from ndunet.training.setup import cudnn_benchmark

    if not Path(run).exists():
        raise PredictError(f"RUN={str(run)!r} does not exist; give a run or checkpoint folder")
    pipe = load_run(run, which=which)
    entry = pipe.config.get("model") or {}
    if pipe.config.get("task") != "supervised" or entry.get("type") != "UNet":
        raise PredictError(
            f"{str(run)!r} holds a {pipe.config.get('task')} run of a {entry.get('type')}; "
            "predict needs a supervised run of a dense UNet (per-voxel outputs)"
        )
    unet = entry["config"]
    spatial_dims, in_channels = unet["spatial_dims"], unet["in_channels"]
    record = run_record(pipe.path)
    data = record.get("data", {})
    channel_axis = data.get("channel_axis") if channel_axis is None else channel_axis
    key = data.get("image_key") if key is None else key
    roi = _roi(roi_size, record, pipe.config, spatial_dims)
    labels = _labels_or_values(output, pipe.config.get("trainer", {}).get("loss"))
    norm = recorded_normalization(record, pipe.path, in_channels)
    _check_settings(overlap, sw_batch_size, tta_axes, spatial_dims)
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise PredictError(str(e).replace("device=", "--device ")) from None
    try:
        resolve_amp(amp, dev)
    except ValueError as e:
        raise PredictError(str(e).replace("amp=", "--amp ")) from None
    try:
        check_compile(compile)
    except ValueError as e:
        raise PredictError(str(e).replace("compile=", "--compile ")) from None
    model = pipe.model.to(dev)

    files = [f for item in inputs for f in list_files(item, "INPUT")]
    out = Path(out)
    jobs = []
    for f in files:
        try:
            fmt, own = format_of(f, "INPUT")
        except ValueError as e:
            raise PredictError(str(e)) from None
        ext = suffix or (own if fmt.writable else ".npy")
        jobs.append(Job(f, out / (stem_of(f) + ext)))
    _check_targets(jobs, labels, spatial_dims)
    for job in jobs:  # every layout resolved (from the headers) before any work
        _plan_layout(job, spatial_dims, channel_axis, key, in_channels)
    out.mkdir(parents=True, exist_ok=True)

    written = []
    model = with_compile(model, compile, dev, sw_batch_size)  # one compiled model for every input
    with cudnn_benchmark(dev.type == "cuda"):  # every window has one shape: tuned once
        for job in _bar(jobs, progress):
            x = _read(job, key)
            if norm is not None:
                x = norm.apply(x)
            y = predict_volume(
                model, x, roi, overlap=overlap, sw_batch_size=sw_batch_size, mode=mode,
                tta_axes=tta_axes, device=dev, amp=amp,
            )[0]  # fmt: skip
            array = _as_labels(y, job.target) if labels else y.float().numpy()
            written.append(_write(job.target, array, job.layout, job.header, labels))
    return written


def run_record(checkpoint: Path) -> dict[str, Any]:
    """The run_config.json ``ndunet train`` wrote (its sections as given), or {} for none."""
    from ndunet.app.run_data import run_folder_of

    path = run_folder_of(checkpoint) / "run_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def recorded_normalization(record: Mapping[str, Any], checkpoint: Path, channels: int) -> Any:
    """The run's input normalisation (``ndunet.data.Normalization``) or None when the run used
    raw values; a run that normalised without recording how is refused."""
    from ndunet.app.run_data import read_records
    from ndunet.data import DATASETS, Normalization
    from ndunet.data.normalize import fit_normalization

    norm, _ = read_records(checkpoint)  # normalization.json of the run folder
    data = dict(record.get("data", {}))
    if norm is None and isinstance(data.get("normalize"), Mapping):  # a record in the run file
        norm = Normalization.from_dict(data["normalize"])
    if norm is not None:
        return norm
    factory = DATASETS.get(data.get("name", ""))
    param = inspect.signature(factory).parameters.get("normalize") if factory else None
    kind = data.get("normalize", param.default if param is not None else "none")
    if kind in (None, "none", inspect.Parameter.empty):
        return None
    if kind == "ct" and data.get("window") is not None:
        window = tuple(data["window"])
        return fit_normalization(
            "ct", [], channels=channels, total_voxels=0, files=0, window=window
        )
    raise PredictError(
        f"the run normalised its inputs (data.normalize={kind!r}) but its folder records no "
        "normalisation (normalization.json), so predict cannot reproduce it"
    )


def _roi(
    roi_size: Sequence[int] | None,
    record: Mapping[str, Any],
    config: Mapping[str, Any],
    spatial_dims: int,
) -> tuple[int, ...]:
    given = roi_size is not None
    if roi_size is None:
        roi_size = (record.get("patches") or {}).get("patch_size")
    if roi_size is None:
        roi_size = config.get("trainer", {}).get("val_roi_size")
    if roi_size is None:
        raise PredictError(
            "the run records no patch size; pass --roi-size (one window length per spatial axis)"
        )
    roi = tuple(int(r) for r in roi_size)
    if len(roi) == 1 and given:
        roi = roi * spatial_dims
    if len(roi) != spatial_dims or min(roi) < 1:
        raise PredictError(
            f"--roi-size {' '.join(map(str, roi))} is not valid; expected {spatial_dims} "
            "positive lengths (or one for every axis)"
        )
    return roi


def _check_settings(
    overlap: float, sw_batch_size: int, tta_axes: Sequence[int], spatial_dims: int
) -> None:
    if not 0 <= overlap < 1:
        raise PredictError(f"--overlap {overlap} is not valid; expected a fraction in [0, 1)")
    if sw_batch_size < 1:
        raise PredictError(f"--sw-batch-size {sw_batch_size} is not valid; expected >= 1")
    bad = [a for a in tta_axes if not 0 <= a < spatial_dims]
    if bad or len(set(tta_axes)) != len(tta_axes):
        raise PredictError(
            f"--tta-axes {' '.join(map(str, tta_axes))} is not valid; expected distinct spatial "
            f"axes 0..{spatial_dims - 1}"
        )


def _labels_or_values(output: str, loss: Any) -> bool:
    if output == "labels" or (output == "auto" and loss in LABEL_LOSSES):
        return True
    if output == "values" or (output == "auto" and loss in VALUE_LOSSES):
        return False
    raise PredictError(
        f"the run was trained with loss {loss!r}; say what its outputs are with --output labels "
        "(class logits) or --output values (regression)"
    )


def _check_targets(jobs: list[Job], labels: bool, spatial_dims: int) -> None:
    from ndunet.io import FORMATS, format_of

    seen: dict[Path, Path] = {}
    writable = sorted(s for f in FORMATS.values() if f.writable for s in f.suffixes)
    for job in jobs:
        try:
            fmt, _ = format_of(job.target, "--suffix")
        except ValueError:
            fmt = None
        if fmt is None or not fmt.writable:
            raise PredictError(f"cannot write {job.target.name!r}: use --suffix among {writable}")
        if job.target in seen:
            raise PredictError(
                f"{str(seen[job.target])!r} and {str(job.source)!r} would both be written to "
                f"{str(job.target)!r}; predict them into different --out folders"
            )
        seen[job.target] = job.source
        if job.target.exists() or job.target.is_symlink():
            raise PredictError(f"{str(job.target)!r} exists; predict never overwrites files")
        if fmt.name == "png" and (not labels or spatial_dims != 2):
            raise PredictError(
                f"{job.target.name!r}: PNG holds 2-D label maps only; pass --suffix .npy or .tif"
            )


def _bar(jobs: list[Job], progress: bool) -> Any:
    if not progress:
        return jobs
    from tqdm import tqdm

    return tqdm(jobs, desc="predict", unit="volume")


def _plan_layout(
    job: Job, spatial_dims: int, channel_axis: int | None, key: str | None, in_channels: int
) -> None:
    """The file's header and its (C, *spatial) layout for the model, or a PredictError."""
    from ndunet.io import read_header, resolve_layout

    try:
        job.header = read_header(job.source, key)
        job.layout = resolve_layout(job.header, spatial_dims, channel_axis, str(job.source))
    except (ValueError, TypeError, ImportError) as e:
        raise PredictError(f"{e} (predict: --channel-axis, --key)") from None
    if job.layout.in_channels != in_channels:
        raise PredictError(
            f"{str(job.source)!r} has {job.layout.in_channels} channel(s) (shape "
            f"{job.header.shape}); the model takes {in_channels}; state the layout with "
            "--channel-axis"
        )


def _read(job: Job, key: str | None) -> Tensor:
    """The input as float32 (C, *spatial)."""
    from ndunet.io import read

    with read(job.source, key) as volume:
        x = np.array(job.layout.apply(volume.array), dtype=np.float32)  # a copy
    return torch.from_numpy(x)


def _as_labels(y: Tensor, target: Path) -> np.ndarray:
    """Logits (K, *spatial) -> labels (*spatial): foreground where the logit > 0 for K == 1."""
    k = y.shape[0]
    lab = (y[0] > 0).long() if k == 1 else y.argmax(dim=0)
    if k <= 256:
        return lab.numpy().astype(np.uint8)
    return lab.numpy().astype(np.uint16 if target.suffix.lower() == ".png" else np.int16)


def _write(target: Path, array: np.ndarray, layout: Any, header: Any, labels: bool) -> Path:
    """``array`` (labels (*spatial) or values (C, *spatial)) in the input's axis order, with the
    metadata the target's format stores: channels go where the input had them (NIfTI: after
    the spatial axes, as 4-D NIfTI holds modalities), else first; a single channel is dropped."""
    from ndunet.io import format_of, write

    fmt, _ = format_of(target)
    n = layout.spatial_dims
    letters = header.axes
    spatial = "".join(letters[i] for i in layout.spatial_axes) if letters else None
    spacing = layout.spacing(header.spacing)
    spacing = spacing if spacing and all(s is not None for s in spacing) else None
    if not labels and array.shape[0] == 1:
        array = array[0]  # (*spatial)
    axes = spatial
    if array.ndim > n:  # values with channels
        kept = [i for i in range(len(header.shape)) if i not in layout.drop_axes]
        at = kept.index(layout.channel_axes[0]) if len(layout.channel_axes) == 1 else 0
        at = n if fmt.name == "nifti" else at
        array = np.moveaxis(array, 0, at)
        axes = None if spatial is None else spatial[:at] + "C" + spatial[at:]
        spacing = None
    meta: dict[str, Any] = {}
    if fmt.name == "nifti":
        meta = {"affine": header.affine} if header.affine is not None else {"spacing": spacing}
    elif fmt.name == "tiff" and axes is not None and axes.endswith("YX"):
        meta = {"axes": axes, "spacing": spacing}
    return write(target, array, **meta)
