"""``ndunet demo``: a class-conditional diffusion U-Net on scikit-learn's embedded 8x8 digits,
trained on the CPU within a wall-clock budget, with pictures and a self-check of the samples.

The budget covers everything after start-up: a short timing probe estimates what sampling and
drawing will take, training runs until a deadline before that, and its cosine learning-rate decay
follows the clock (as in benchmarks/digits_quality.py), so it ends at a low rate on any machine.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ndunet.files import safe_write_stream, safe_write_text, safe_write_with
from ndunet.training import DiffusionTrainer
from ndunet.training.distributed import resolve_device

# Settings for 8x8 digits on a 2-core CPU (benchmarks/digits_quality.py measures them): a two-level
# U-Net with attention at 4x4, v-prediction with min-SNR weighting, cosine noise schedule,
# classifier-free guidance (labels dropped 10% of the time).
WIDTH = 32
BATCH_SIZE = 64
LR = 2e-3
EMA_DECAY = 0.999
COND_DROP_PROB = 0.1
GUIDANCE = 2.0
SAMPLER = "dpm++2m"  # as good as DDIM 50 at 20 steps on digits (benchmarks/digits_quality.py)
SAMPLE_STEPS = 20
SAMPLES_PER_CLASS = 10
NUM_CLASSES = 10


class _Quiet(logging.Filter):
    """Drops the per-epoch INFO lines (the demo has hundreds of short epochs); keeps warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO


def demo_out_dir(out: str | Path | None) -> Path:
    """The folder to write into: ``out`` if it is new or empty (else FileExistsError), or the
    first free one among ./ndunet-demo, ./ndunet-demo-2, ..."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(
                f"--out {str(path)!r} exists and is not empty; ndunet never overwrites or deletes "
                "files: choose a new folder (or leave --out out to get a fresh ./ndunet-demo-N)"
            )
        return path
    path, i = Path("ndunet-demo"), 2
    while path.exists() and (not path.is_dir() or any(path.iterdir())):
        path, i = Path(f"ndunet-demo-{i}"), i + 1
    return path


def build_unet(width: int = WIDTH, num_classes: int | None = NUM_CLASSES) -> torch.nn.Module:
    """The U-Net for 1x8x8 digits: levels at 8x8 and 4x4, attention at 4x4 (the demo's, and
    benchmarks/digits_quality.py's)."""
    from ndunet.models import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(width, 2 * width),
        num_res_blocks=2,
        attention_levels=(False, True),
        time_embedding=True,
        num_classes=num_classes,
    )


def build_diffusion(width: int = WIDTH, sample_steps: int = SAMPLE_STEPS) -> torch.nn.Module:
    """The demo's class-conditional diffusion model for (1, 8, 8) digits."""
    from ndunet.diffusion import Diffusion

    unet = build_unet(width)
    return Diffusion(
        unet,
        schedule="cosine",
        prediction="v",
        loss_weighting="min_snr",
        cond_drop_prob=COND_DROP_PROB,
        sampler=SAMPLER,
        sample_steps=sample_steps,
        guidance_scale=GUIDANCE,
    )


def _time_steps(diffusion: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
    """Seconds per training step (forward + backward at the demo's batch size), no update."""
    params = [p for p in diffusion.parameters() if p.requires_grad]
    times = []
    sync = torch.cuda.synchronize if x.device.type == "cuda" else lambda: None  # async kernels
    for i in range(n + 1):
        idx = torch.randint(0, len(x), (BATCH_SIZE,))
        sync()
        t = time.perf_counter()
        diffusion(x[idx], y[idx]).backward()
        sync()
        if i:  # the first call pays one-off costs
            times.append(time.perf_counter() - t)
    for p in params:
        p.grad = None
    return float(np.median(times))


@torch.no_grad()
def _time_sampling(diffusion: torch.nn.Module, n: int, steps: int) -> float:
    """Seconds to draw ``n`` guided samples with ``steps`` steps (from 2 timed network calls)."""
    device = next(diffusion.parameters()).device
    x = torch.randn(2 * n, 1, 8, 8, device=device)  # guidance: conditional + unconditional
    t_ = torch.zeros(2 * n, dtype=torch.long, device=device)
    y = torch.zeros(2 * n, dtype=torch.long, device=device)
    diffusion.eval()
    diffusion.model(x, t_, y=y)
    t = time.perf_counter()
    diffusion.model(x, t_, y=y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    diffusion.train()
    return (time.perf_counter() - t) * steps


def _where(device: torch.device) -> str:
    return f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else str(device)


def digit_classifier(x: np.ndarray, y: np.ndarray, probability: bool = False) -> Any:
    """The judge of generated digits: an RBF SVM fitted on real digits (N, ...) with labels (N,),
    independent of any generator (the demo's self-check and benchmarks/digits_eval.py)."""
    import warnings

    from sklearn.svm import SVC

    # Platt-scaled probabilities stay low off the data manifold (uniform noise: ~0.2); the
    # option is deprecated in scikit-learn 1.9, still present.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        clf = SVC(gamma="scale", C=10.0, probability=probability, random_state=0)
        return clf.fit(x.reshape(len(x), -1), y)


def judge_samples(samples: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """A self-check independent of the generator: an RBF SVM trained on the real training digits
    classifies the samples; reports how often it sees the requested digit, per class too."""
    from ndunet.data import digits

    train, test = digits("train", seed=seed), digits("test", seed=seed)
    clf = digit_classifier(train.x.numpy(), train.y.numpy())
    real_acc = float((clf.predict(test.x.flatten(1).numpy()) == test.y.numpy()).mean())
    pred = clf.predict(np.clip(samples, -1, 1).reshape(len(samples), -1))
    per_class = {str(c): float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
    hist = np.bincount(pred, minlength=NUM_CLASSES)
    return {
        "label_agreement": float((pred == labels).mean()),
        "label_agreement_per_class": per_class,
        "classes_recognised": int((hist > 0).sum()),
        "classifier_accuracy_on_real_test_digits": real_acc,
    }


def run_demo(
    out: str | Path | None = None,
    minutes: float = 4.5,
    seed: int = 0,
    threads: int = 0,
    progress: bool = True,
    width: int = WIDTH,
    sample_steps: int = SAMPLE_STEPS,
    device: str = "auto",
) -> dict[str, Any]:
    """Train, sample, draw and check; returns the paths written and the self-check numbers."""
    if not (isinstance(minutes, (int, float)) and 0 < minutes <= 24 * 60):
        raise ValueError(f"minutes={minutes!r}; must be a number in (0, 1440]")
    start = time.perf_counter()
    budget = 60.0 * minutes
    out_dir = demo_out_dir(out)
    if threads:
        torch.set_num_threads(threads)
    from ndunet.data import digits
    from ndunet.viz import plot_loss, save_samples, save_strip

    torch.manual_seed(seed)
    train = digits("train", seed=seed)  # (N, 1, 8, 8) in [-1, 1], labels 0..9
    device = resolve_device(device)
    diffusion = build_diffusion(width, sample_steps).to(device)
    n_params = sum(p.numel() for p in diffusion.model.parameters())
    n_samples = SAMPLES_PER_CLASS * NUM_CLASSES
    step_s = _time_steps(diffusion, train.x.to(device), train.y.to(device), 3)
    sample_s = _time_sampling(diffusion, n_samples, sample_steps) * 1.2  # grid + strip
    reserve = sample_s + 4.0 + 0.03 * budget  # drawing, checkpoints, the self-check
    train_s = max(budget - (time.perf_counter() - start) - reserve, 0.0)
    max_steps = max(10, int(train_s / step_s))  # the estimate; the deadline decides
    print(
        f"ndunet demo: class-conditional diffusion U-Net ({n_params / 1e6:.2f}M parameters) on "
        f"{len(train)} embedded 8x8 digits on {_where(device)}.\n"
        f"  budget {minutes:g} min: ~{max_steps} steps of {BATCH_SIZE} (~{step_s:.2f} s each), "
        f"then {n_samples} samples ({SAMPLER}, {sample_steps} steps, guidance {GUIDANCE:g}).\n"
        f"  writing to {out_dir.resolve()}",
        flush=True,
    )
    # Training runs until its time limit; the cosine decay follows the clock, so a machine of
    # any speed (or one that slows down midway) ends training at a low rate, on time.
    trainer = DiffusionTrainer(
        diffusion,
        train,
        out_dir=str(out_dir),
        time_limit=max(budget - reserve - (time.perf_counter() - start), 1e-3),
        batch_size=BATCH_SIZE,
        lr=LR,
        scheduler="cosine",
        warmup_steps=min(100, max_steps // 10),
        grad_clip=1.0,
        ema_decay=EMA_DECAY,
        seed=seed,
        keep_last=0,
        log_every_steps=max(1, max_steps // 300),
        progress=progress,
        device=str(device),
    )
    quiet = _Quiet()
    logging.getLogger("ndunet.training").addFilter(quiet)
    try:
        trainer.fit()
    finally:
        logging.getLogger("ndunet.training").removeFilter(quiet)
    t_train = time.perf_counter() - start

    labels = torch.arange(n_samples) % NUM_CLASSES  # one column per digit in a 10-wide grid
    samples = trainer.sample(n_samples, y=labels, seed=seed).float().clamp(-1, 1).cpu()
    gen = torch.Generator(device).manual_seed(seed + 1)
    _, trajectory = diffusion.sample(
        NUM_CLASSES,
        (1, 8, 8),
        y=torch.arange(NUM_CLASSES, device=device),
        generator=gen,
        return_intermediates=True,
        model=trainer.ema.module if trainer.ema is not None else None,
    )
    paths = {
        "samples.png": safe_write_with(
            out_dir / "samples.png",
            lambda path: save_samples(samples, path, nrow=NUM_CLASSES),
            root=out_dir,
        ),
        "samples.npy": out_dir / "samples.npy",
        "denoising.png": safe_write_with(
            out_dir / "denoising.png",
            lambda path: save_strip(trajectory.float().cpu(), path, columns=11),
            root=out_dir,
        ),
        "loss.png": plot_loss(out_dir / "log.csv", out_dir / "loss.png"),
        "log.csv": out_dir / "log.csv",
        "checkpoints": out_dir / "checkpoints",
        "eval.json": out_dir / "eval.json",
    }
    safe_write_stream(paths["samples.npy"], lambda f: np.save(f, samples.numpy()), root=out_dir)
    check = judge_samples(samples.squeeze(1).numpy(), labels.numpy(), seed)
    check.update(
        steps=trainer.step,
        train_seconds=round(t_train, 1),
        total_seconds=round(time.perf_counter() - start, 1),
        parameters=n_params,
    )
    safe_write_text(paths["eval.json"], json.dumps(check, indent=2) + "\n", root=out_dir)
    print(
        f"done in {check['total_seconds'] / 60:.1f} min ({trainer.step} steps). Self-check: an SVM "
        f"trained on real digits ({check['classifier_accuracy_on_real_test_digits']:.1%} on real "
        f"test digits) reads {check['label_agreement']:.1%} of the samples as the requested digit."
    )
    for name, path in paths.items():
        print(f"  {name:<14} {Path(path).resolve()}")
    print(f"sample more: ndunet sample {out_dir} --n 100 --labels 7 --out sevens.png")
    return {"paths": {k: Path(v) for k, v in paths.items()}, "eval": check}
