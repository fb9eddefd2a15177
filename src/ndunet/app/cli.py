"""The ``ndunet`` command (also ``python -m ndunet``): demo, train, sample, predict, plan, summary.
Argument parsing only; what each command does is in commands.py.

User mistakes (a bad config, a run folder that is not empty, a missing checkpoint) end with one
message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ndunet.app.commands import (
    UsageError,
    cmd_demo,
    cmd_plan,
    cmd_predict,
    cmd_sample,
    cmd_summary,
    cmd_train,
)
from ndunet.app.run_config import ConfigError, packaged_configs
from ndunet.inference.amp import AMP_MODES
from ndunet.inference.compiled import COMPILE_MODES

EXIT_USAGE = 2


# ----- argument parsing ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from ndunet import __version__

    p = argparse.ArgumentParser(
        prog="ndunet",
        description="U-Nets and denoising diffusion for data of any number of spatial dimensions.",
    )
    p.add_argument("--version", action="version", version=f"ndunet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="train a diffusion U-Net on the embedded digits (CPU, a few minutes)",
        description="Train a class-conditional diffusion U-Net on scikit-learn's embedded 8x8 "
        "digits within a wall-clock budget, then write samples.png, samples.npy, denoising.png, "
        "loss.png, log.csv, eval.json and checkpoints/ into the output folder. An existing "
        "non-empty --out is refused (nothing is overwritten or deleted); without --out the "
        "first free folder among ./ndunet-demo, ./ndunet-demo-2, ... is used.",
    )
    d.add_argument("--out", help="output folder (default: ./ndunet-demo, or -2, -3, ... if taken)")
    d.add_argument("--minutes", type=float, default=4.5, help="total budget (default 4.5)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    d.add_argument(
        "--width", type=int, default=None, help="U-Net width w: channels (w, 2w) (default 32)"
    )
    d.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, ...")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser(
        "train",
        help="train from a TOML/JSON config (supervised or diffusion)",
        description="Train the model a config describes. Sections: [task] (type = 'diffusion' "
        "or 'supervised', conditional, validate, test, head), [data] (name = digits | faces | "
        "blobs | arrays | images | volumes, plus that dataset's options), [model] (UNet options; "
        "spatial_dims and channels default to the data's), [diffusion] (Diffusion options) and "
        "[trainer] (TrainerConfig). Works under torchrun --nproc_per_node=N.",
        epilog="example: ndunet train cfg.toml --set model.channels=[32,64] --set trainer.lr=1e-3"
        f"\npackaged configs (give the name as CONFIG): {', '.join(packaged_configs())}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", help="a .toml or .json run config, or a packaged config's name")
    t.add_argument("--out", help="run folder (default: trainer.out_dir, else runs/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: continue although [model] or [diffusion] differ from the run's",
    )
    _add_set(t)
    t.add_argument(
        "--compile", action="store_true", help="torch.compile the training step (trainer.compile)"
    )
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "sample",
        help="generate samples from a diffusion run or checkpoint",
        description="Sample from a trained diffusion run folder (its checkpoints/last, or "
        "--which best) or a checkpoint folder, with the EMA weights when the run kept them.",
    )
    s.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run folder or checkpoint folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the run's sample_steps)"
    )
    s.add_argument(
        "--sampler",
        default=None,
        choices=["ddim", "ddpm", "dpm++2m", "euler", "euler_a", "heun", "dpm++2m_sde", "unipc"],
        help="default: the run's diffusion.sampler",
    )
    s.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: the run's diffusion.guidance_scale)",
    )
    s.add_argument("--labels", nargs="+", help="class labels, cycled to --n (e.g. 3 or 0,1,2)")
    s.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, ...")
    _add_amp(s)
    _add_compile(s, "every sampling step has one shape")
    s.add_argument(
        "--condition",
        metavar="FILE",
        help="image-conditioned runs: a .npy of inputs (N, C, *spatial), cycled to --n; "
        "imputation runs: a .npz with 'known' and 'mask' (values in the model's units)",
    )
    s.add_argument(
        "--out",
        help="FILE.png (grid; default ./samples.png), or the arrays in the training data's units: "
        "FILE.npy, FILE.tif (one stack), FILE.nii.gz (one per sample, with the data's affine)",
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--shape", help="sample shape C,H,W,... (default: the training data's)")
    s.add_argument("--which", choices=["last", "best"], default="last", help="run checkpoint")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    s.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser(
        "predict",
        help="segment or regress whole volumes with a trained supervised run",
        description="Apply a supervised run to volume files (or folders of them) of any format "
        "ndunet reads: read with the run's layout and recorded normalisation, predicted by "
        "sliding windows (windows of the run's patch size unless --roi-size), written into "
        "--out in the input's format with its affine/spacing (.npz/.zarr/.h5 inputs: .npy): "
        "class labels for segmentation runs, float values for regression runs. Existing files "
        "are never overwritten.",
    )
    r.add_argument("run", metavar="RUN", help="run folder (its checkpoints/--which) or checkpoint")
    r.add_argument("inputs", metavar="INPUT", nargs="+", help="volume files or folders of them")
    r.add_argument("--out", required=True, help="output folder (created if missing)")
    r.add_argument("--which", choices=["last", "best"], default="best", help="run checkpoint")
    r.add_argument("--roi-size", type=int, nargs="+", help="window per axis (default: patch size)")
    r.add_argument("--overlap", type=float, default=0.5, help="window overlap (default 0.5)")
    r.add_argument("--sw-batch-size", type=int, default=4, help="windows per forward (default 4)")
    r.add_argument("--mode", choices=["constant", "gaussian"], default="gaussian", help="blending")
    r.add_argument("--tta-axes", type=int, nargs="*", default=[], help="flip TTA on these axes")
    r.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, ...")
    _add_amp(r)
    _add_compile(r, "every batch of windows has one shape (the last one padded)")
    r.add_argument("--channel-axis", type=int, help="input channel axis (default: the run's)")
    r.add_argument("--key", help="array inside .npz/.h5/.zarr inputs (default: the run's)")
    r.add_argument(
        "--output",
        choices=["auto", "labels", "values"],
        default="auto",
        help="labels (argmax) or values (default: from the run's loss)",
    )
    r.add_argument("--suffix", help="output format, e.g. .nii.gz (default: the input's)")
    r.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_predict)

    pl = sub.add_parser(
        "plan",
        help="plan a segmentation run for a memory budget (nnU-Net's rules, any N)",
        description="Fingerprint the training volumes (shapes, spacings, intensities, "
        "foreground, classes), choose per-axis pooling and kernels, a patch and a batch size "
        "whose training step fits --memory (measured on --device), and write a run file that "
        "'ndunet train' takes. An existing --out is never overwritten.",
    )
    pl.add_argument("data", metavar="DATA", help="folder (or file) of image volumes")
    pl.add_argument("--memory", required=True, help="budget of one training step, e.g. 8GiB")
    pl.add_argument("--labels", help="folder of class-map label files named like the images")
    pl.add_argument("--spatial-dims", type=int, help="spatial axes, where the files do not say")
    pl.add_argument("--channel-axis", type=int, help="the images' channel axis, if any")
    pl.add_argument("--out", default="plan.toml", help="run file to write (default plan.toml)")
    pl.add_argument("--device", default="auto", help="where to measure: auto (cuda, else cpu)")
    pl.add_argument("--no-verify", action="store_true", help="trust the estimate; measure nothing")
    pl.add_argument("--base-channels", type=int, default=32, help="first level's width (32)")
    pl.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    pl.set_defaults(func=cmd_plan)

    m = sub.add_parser(
        "summary",
        help="print a config's model table and parameter count",
        description="Build the config's model (no training) and print its per-layer table.",
    )
    m.add_argument("config", help="a .toml or .json run config")
    _add_set(m)
    m.set_defaults(func=cmd_summary)
    return p


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.lr=1e-3 (repeatable)",
    )


def _add_amp(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="none",
        help="mixed precision: the network's forward under autocast in bf16 or fp16 (default "
        "none: float32 throughout); the result stays float32",
    )


def _add_compile(p: argparse.ArgumentParser, why: str) -> None:
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help=f"torch.compile the network ({why}); MODE: {', '.join(COMPILE_MODES)} (default "
        "'default'; 'reduce-overhead' replays CUDA graphs on a GPU). Costs a compile first",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ndunet`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    from ndunet.training import CheckpointError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"ndunet {args.command}: config error: {e}", file=sys.stderr)
    except (UsageError, CheckpointError, FileExistsError) as e:
        hint = " (ndunet train: --resume)" if "resume=True" in str(e) else ""
        print(f"ndunet {args.command}: {e}{hint}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"ndunet {args.command}: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
