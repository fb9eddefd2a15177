"""What each ``ndunet`` command does (cli.py parses the arguments and calls these).

User mistakes end as :class:`UsageError` or ConfigError: one message on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ndunet.app.run_config import load_config


class UsageError(Exception):
    """A user mistake outside the config file (printed without a traceback, exit code 2)."""


# ----- commands --------------------------------------------------------------------------------


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def cmd_train(args: argparse.Namespace) -> int:
    from ndunet.app.assemble import build_trainer
    from ndunet.app.run_data import data_records
    from ndunet.files import safe_write_text, safe_write_with

    if args.compile:
        args.set = [*args.set, "trainer.compile=true"]
    cfg = load_config(args.config, args.set)
    given = cfg.trainer_table.get("out_dir")
    out_dir = Path(args.out or given or Path("runs") / Path(args.config).stem)
    trainer, datasets = build_trainer(
        cfg, out_dir, resume=args.resume, allow_changes=args.allow_changes, progress=not args.quiet
    )
    summary = trainer.fit()
    main = _is_main_process()
    if main:
        text = json.dumps(cfg.to_dict(), indent=2) + "\n"
        safe_write_text(out_dir / "run_config.json", text, root=out_dir)
        for name, text in data_records(datasets["train"]).items():  # normalisation, geometry
            safe_write_text(out_dir / name, text, root=out_dir)
    results: dict[str, Any] = {"train": {"steps": trainer.step, **summary}}
    if "test" in datasets:  # every rank evaluates (a collective); rank 0 writes
        results["test"] = trainer.evaluate(datasets["test"])
        if main:
            text = json.dumps(results["test"], indent=2)
            safe_write_text(out_dir / "test_metrics.json", text, root=out_dir)
    if cfg.task.type == "diffusion" and main:
        from ndunet.viz import save_samples

        n = trainer.config.sample_n
        x = trainer.sample(n)
        nrow = trainer.num_classes if trainer.num_classes and n >= trainer.num_classes else None
        safe_write_with(
            out_dir / "samples.png",
            lambda path: save_samples(x.float().cpu(), path, nrow=nrow),
            root=out_dir,
        )
    if main:
        shown = {k: {m: round(v, 5) for m, v in r.items()} for k, r in results.items()}
        print(f"finished: {json.dumps(shown)}")
        _print_outputs(out_dir)
    return 0


def _print_outputs(out_dir: Path) -> None:
    print(f"run folder: {out_dir.resolve()}")
    for name in ("checkpoints", "log.csv", "loss.png", "samples.png", "test_metrics.json"):
        if (out_dir / name).exists():
            print(f"  {name:<18} {(out_dir / name).resolve()}")


def _free_path(stem: str, suffix: str) -> Path:
    """``stem.suffix``, or ``stem-2.suffix``, ... : the first name not taken (nothing overwritten)."""
    path, i = Path(stem + suffix), 2
    while path.exists():
        path, i = Path(f"{stem}-{i}{suffix}"), i + 1
    return path


def _parse_labels(items: Sequence[str] | None, n: int, num_classes: int | None) -> Any:
    import torch

    if num_classes is None:
        if items:
            raise UsageError("--labels: this model is not class-conditional (num_classes is None)")
        return None
    if not items:
        return torch.arange(n) % num_classes  # cycles 0, 1, ..., num_classes - 1
    words = [w for item in items for w in item.replace(",", " ").split()]
    try:
        labels = [int(w) for w in words]
    except ValueError:
        raise UsageError(f"--labels {' '.join(items)}: expected integers") from None
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise UsageError(
            f"--labels: {bad} outside 0..{num_classes - 1} (num_classes={num_classes})"
        )
    return torch.tensor(labels).repeat((n + len(labels) - 1) // len(labels))[:n]


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ndunet.app.run_data import read_records, sample_suffix, sample_targets, write_sample_arrays
    from ndunet.files import safe_write_with
    from ndunet.training import load_checkpoint, load_run
    from ndunet.training.setup import cudnn_benchmark
    from ndunet.viz import save_samples

    torch.set_num_threads(args.threads) if args.threads else None
    if not Path(args.run).exists():
        raise UsageError(f"{args.run!r} does not exist; give a run folder or a checkpoint folder")
    out = Path(args.out) if args.out else _free_path("samples", ".png")
    try:
        suffix = sample_suffix(out)
    except ValueError as e:
        raise UsageError(str(e)) from None
    targets = sample_targets(out, args.n) if args.n >= 1 else [out]
    taken = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if taken:
        raise UsageError(f"--out {taken[0]!r} exists; ndunet never overwrites files")
    if args.n < 1 or (args.steps is not None and args.steps < 1):
        raise UsageError(f"--n {args.n} and --steps {args.steps} must be >= 1")
    device = _device(args.device)
    _check_amp(args.amp, device)
    pipe = load_run(args.run, which=args.which)
    if pipe.diffusion is None:
        raise UsageError(
            f"{args.run!r} is a {pipe.config.get('task')} run; sampling needs diffusion"
        )
    if args.shape:
        shape = tuple(int(s) for s in args.shape.replace("x", ",").split(","))
    else:
        state = load_checkpoint(pipe.path).trainer_state()
        if not state.get("sample_shape"):
            raise UsageError("the checkpoint does not record the data shape; pass --shape C,H,W")
        shape = tuple(state["sample_shape"])
    if suffix in (".tif", ".tiff") and len(shape) < 3:
        raise UsageError(f"--out {str(out)!r}: TIFF holds 2-D or larger samples; use .npy")
    num_classes = pipe.diffusion.num_classes
    labels = _parse_labels(args.labels, args.n, num_classes)
    guidance = args.guidance  # None: the run's diffusion config decides
    model = (pipe.model if args.no_ema else pipe.sampling_model).to(device)
    options: dict[str, Any] = {
        "steps": args.steps, "sampler": args.sampler, "guidance_scale": guidance, "y": labels,
        "generator": torch.Generator().manual_seed(args.seed), "progress": True, "model": model,
        "amp": args.amp, "compile": args.compile,
    }  # fmt: skip
    condition = pipe.diffusion.config.condition
    with cudnn_benchmark(device.type == "cuda"):  # every step has one shape: tuned once
        try:
            if condition == "mask" and args.condition:
                known, mask = _read_condition(args.condition, args.n, ("known", "mask"), len(shape))
                x = pipe.diffusion.inpaint(known.to(device), mask.to(device), **options)
            else:
                if args.condition:
                    cond = _read_condition(args.condition, args.n, None, len(shape))[0]
                    options["cond"] = cond.to(device)
                elif condition == "image":
                    raise UsageError("this run is conditioned on images: pass --condition FILE.npy")
                x = pipe.diffusion.sample(args.n, shape, **options)
        except (ValueError, TypeError) as e:
            raise UsageError(f"--condition {args.condition}: {e}") from None
    x = x.float().clamp(-1, 1).cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":  # a picture of the model's [-1, 1]
        nrow = num_classes if num_classes and not args.labels and args.n >= num_classes else None
        safe_write_with(out, lambda path: save_samples(x, path, nrow=nrow), overwrite=False)
    else:
        norm, geometry = read_records(args.run)
        if norm is not None and norm.kind != "none":  # back to the training files' units
            x = norm.invert(x, channel_dim=1)
            print(f"values mapped back from data.normalize={norm.kind!r} (normalization.json)")
        write_sample_arrays(x, targets, geometry)
    where = out.resolve() if len(targets) == 1 else f"{targets[0].resolve()} ... {targets[-1].name}"
    print(f"{args.n} samples {tuple(shape)} from {pipe.path} -> {where}")
    return 0


def _device(spec: str) -> Any:
    """``--device`` as a torch device ("auto": cuda, then mps, then cpu), or a usage error."""
    from ndunet.training.distributed import resolve_device

    try:
        return resolve_device(spec)
    except ValueError as e:
        raise UsageError(str(e).replace("device=", "--device ")) from None


def _check_amp(amp: str, device: Any) -> None:
    """``--amp`` runs on ``device`` (autocast supports its dtype there), or a usage error."""
    from ndunet.inference import resolve_amp

    try:
        resolve_amp(amp, device)
    except ValueError as e:
        raise UsageError(str(e).replace("amp=", "--amp ")) from None


def _read_condition(path: str, n: int, keys: tuple[str, ...] | None, ndim: int) -> list[Any]:
    """Tensors of a .npy (an image condition) or a .npz (``keys``: known values and mask), each
    (N, C, *spatial) or one (C, *spatial) (``ndim`` axes), cycled to ``n`` samples, in the
    model's units."""
    import numpy as np
    import torch

    if not Path(path).is_file():
        raise UsageError(f"--condition {path!r} does not exist")
    data = np.load(path, allow_pickle=False)
    if keys is None and isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"--condition {path!r}: an image condition is one .npy array")
    if keys is not None and not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"--condition {path!r}: an imputation run needs a .npz with {keys}")
    arrays = [data] if keys is None else [data[k] for k in keys if k in data.files]
    if keys is not None and len(arrays) != len(keys):
        raise UsageError(f"--condition {path!r} must hold the arrays {list(keys)}")
    out = []
    for a in arrays:
        t = torch.as_tensor(np.asarray(a, dtype=np.float32))
        t = t[None] if t.dim() == ndim else t  # (N, C, *spatial)
        out.append(t.repeat(math.ceil(n / len(t)), *([1] * (t.dim() - 1)))[:n])
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from ndunet.app.predict import OPTIONS, PredictError, predict_files

    torch.set_num_threads(args.threads) if args.threads else None
    options = {k: getattr(args, k) for k in OPTIONS}
    try:
        written = predict_files(args.run, args.inputs, args.out, **options, progress=not args.quiet)
    except (PredictError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(f"{len(written)} prediction(s) in {Path(args.out).resolve()}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import torch

    from ndunet.files import safe_write_text
    from ndunet.planning import PlannerConfig, fingerprint, parse_bytes, plan
    from ndunet.planning.run_file import plan_summary, run_config, to_toml

    torch.set_num_threads(args.threads) if args.threads else None
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {str(out)!r} exists; ndunet never overwrites files")
    if args.labels is None:
        raise UsageError(
            "--labels DIR is needed: the plan is a supervised segmentation run (label files "
            "named like the images, integer classes)"
        )
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = auto if args.device == "auto" else args.device
    try:
        memory = parse_bytes(args.memory)
        options = PlannerConfig(
            base_channels=args.base_channels, verify=not args.no_verify, device=device
        )
        fp = fingerprint(
            args.data, labels=args.labels, spatial_dims=args.spatial_dims,
            channel_axis=args.channel_axis,
        )  # fmt: skip
        if options.verify:
            where = "the GPU" if device.startswith("cuda") else "the CPU (--no-verify: none)"
            print(f"{len(fp.shapes)} volumes fingerprinted; training steps measured on {where}:")
        planned = plan(fp, memory, options, log=lambda line: print(f"  {line}"))
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    header = f"ndunet plan {args.data} --memory {args.memory}: train with 'ndunet train {out.name}'"
    text = to_toml(run_config(planned, out.parent), header=header)
    out.parent.mkdir(parents=True, exist_ok=True)
    safe_write_text(out, text, overwrite=False)
    print(plan_summary(planned))
    print(f"\nrun file: {out.resolve()}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ndunet.app.assemble import build_datasets, build_model
    from ndunet.model_summary import summary

    cfg = load_config(args.config, args.set)
    data = build_datasets(cfg)["train"]
    model = build_model(cfg, data)
    if data.spatial_shape is None:
        raise UsageError(
            f"the training volumes of dataset {cfg.data.name!r} differ in shape, so the model "
            "has no one input shape to summarise; list one size (e.g. a folder of one volume)"
        )
    print(summary(model, (1, data.in_channels, *data.spatial_shape), verbose=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ndunet.app.demo import run_demo

    run_demo(
        out=args.out,
        minutes=args.minutes,
        seed=args.seed,
        threads=args.threads,
        progress=not args.quiet,
        device=args.device,
        **({"width": args.width} if args.width else {}),
    )
    return 0
