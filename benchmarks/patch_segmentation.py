"""Patch-wise segmentation of volumes several times the patch size, within a fixed CPU budget:
ndunet (PatchDataset + SupervisedTrainer + sliding-window evaluation) next to MONAI (DynUNet +
RandCropByPosNegLabeld + its sliding_window_inference) on the same data, and a 4-D case for
ndunet alone (MONAI's networks stop at 3-D).

Data: synthetic anisotropic 3-D blobs. Binary blobs (scikit-image) drawn on a fine isotropic
grid of 96^3 voxels are averaged over 4 voxels along the last axis, as thick slices are: the
volume is 96 x 96 x 24 (spacing 1 x 1 x 4), the label is the thick-slice mask (average > 0.5),
the image that average (partial volumes at the edges) mapped to [-1, 1] plus Gaussian noise.
Patches are 48 x 48 x 12 (an eighth of a volume), one third centred on foreground on both sides
(ndunet's foreground_fraction = 1/3; MONAI's pos=1, neg=2). The 4-D case: 4-D blobs of 24^4
voxels (3-D + time), patches of 12^4.

Each row runs in its own process (peak RSS is the process's maximum resident set, data
included). Training stops when the process has used ``--seconds`` of CPU time in training (the
same for every row; wall time shown beside it); the models are classic U-Nets of widths
16/32/64 (ndunet pools every axis; DynUNet pools the thick axis once, as nnU-Net plans it); both
use AdamW (lr 1e-3), batch 2, Dice + cross-entropy on one sigmoid channel, no
augmentation. Dice is the foreground Dice over all voxels of the held-out volumes, from counts
taken here with numpy, after whole-volume sliding-window inference (overlap 0.5, Gaussian).

    PYTHONPATH=src python benchmarks/patch_segmentation.py [--seconds 120] [--threads 2]
        [--monai-path /tmp/monai] [--seed 0] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = ("ndunet-3d", "monai-3d", "ndunet-4d")


def blobs_3d(n: int, seed: int, tiny: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Anisotropic volumes (1, 96, 96, 24) and their masks (1, 96, 96, 24) (see the docstring)."""
    from skimage.data import binary_blobs

    fine, thick = (48, 4) if tiny else (96, 4)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        mask = binary_blobs(fine, blob_size_fraction=0.12, n_dim=3, volume_fraction=0.35, rng=rng)
        soft = mask.reshape(fine, fine, fine // thick, thick).mean(-1)  # (X, Y, Z / 4)
        x = 2 * soft - 1 + 0.9 * rng.standard_normal(soft.shape)
        out.append((torch.tensor(x[None], dtype=torch.float32), torch.tensor(soft[None] > 0.5)))
    return [(x, y.float()) for x, y in out]


def blobs_4d(n: int, seed: int, tiny: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from skimage.data import binary_blobs

    length = 16 if tiny else 24
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 4])
        mask = binary_blobs(length, blob_size_fraction=0.25, n_dim=4, volume_fraction=0.35, rng=rng)
        x = 2 * mask - 1 + 0.9 * rng.standard_normal(mask.shape)
        out.append((torch.tensor(x[None], dtype=torch.float32), torch.tensor(mask[None]).float()))
    return out


def dice(preds: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """Foreground Dice 2TP / (2TP + FP + FN) over every voxel of every volume."""
    tp = fp = fn = 0
    for p, t in zip(preds, targets):
        tp += int(np.sum(p & t))
        fp += int(np.sum(p & ~t))
        fn += int(np.sum(~p & t))
    return 2 * tp / (2 * tp + fp + fn)


def run_ndunet(case: str, seconds: float, tiny: bool, seed: int) -> dict:
    from ndunet.data.patches import PatchDataset
    from ndunet.inference import sliding_window_inference
    from ndunet.models import UNet, UNetConfig
    from ndunet.training import Callback, SupervisedTrainer

    four = case == "ndunet-4d"
    make = blobs_4d if four else blobs_3d
    train, val = make(8, 10 * seed, tiny), make(3, 10 * seed + 1, tiny)
    patch = (12,) * 4 if four else ((24, 24, 6) if tiny else (48, 48, 12))
    channels = (8, 16) if four else (16, 32, 64)
    # the classic U-Net (two conv-norm-act per level, one skip per level), as nnU-Net's
    cfg = UNetConfig(spatial_dims=len(patch), in_channels=1, out_channels=1, channels=channels,
                     num_res_blocks=1, num_groups=8, block="plain", skip_connections="level")  # fmt: skip
    torch.manual_seed(seed)
    model = UNet(cfg)

    class CpuBudget(Callback):
        def on_fit_start(self, trainer):
            self.start = time.process_time()

        def on_step_end(self, trainer, loss):
            if time.process_time() - self.start >= seconds:
                trainer.request_stop("CPU budget spent")

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = SupervisedTrainer(
            model, PatchDataset(train, patch, patches_per_volume=4, seed=seed), None,
            loss="dice_ce", metrics=(), out_dir=tmp, epochs=100_000, batch_size=2, lr=1e-3,
            save_checkpoints=False, plot=False, device="cpu", progress=False,
            log_every_steps=1000, callbacks=[CpuBudget()],
        )  # fmt: skip
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.fit()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    preds = []
    with torch.inference_mode():
        for x, _ in val:
            out = sliding_window_inference(x[None], patch, 4, model, 0.5, "gaussian")
            preds.append(out[0, 0].numpy() > 0)
    score = dice(preds, [y[0].numpy() > 0.5 for _, y in val])
    params = sum(p.numel() for p in model.parameters())
    return {"steps": trainer.step, "cpu": cpu, "wall": wall, "dice": score, "params": params}


def run_monai(seconds: float, tiny: bool, seed: int) -> dict:
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import DynUNet
    from monai.transforms import RandCropByPosNegLabeld

    train, val = blobs_3d(8, 10 * seed, tiny), blobs_3d(3, 10 * seed + 1, tiny)
    patch = (24, 24, 6) if tiny else (48, 48, 12)
    torch.manual_seed(seed)
    # nnU-Net's choice for spacing (1, 1, 4): no pooling and 2-D kernels along the thick axis
    model = DynUNet(
        3, 1, 1, kernel_size=[[3, 3, 1], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [2, 2, 1], [2, 2, 2]], upsample_kernel_size=[[2, 2, 1], [2, 2, 2]],
        filters=[16, 32, 64], norm_name="instance", res_block=True,
    )  # fmt: skip
    crop = RandCropByPosNegLabeld(["image", "label"], "label", patch, pos=1, neg=2, num_samples=4)
    crop.set_random_state(seed)
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    steps, order = 0, np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    while time.process_time() - c0 < seconds:
        for i in order.permutation(len(train)):  # one volume: 4 patches, two batches of 2
            x, y = train[i]
            patches = crop({"image": x, "label": y})
            for b in range(0, 4, 2):
                xb = torch.stack([torch.as_tensor(p["image"]) for p in patches[b : b + 2]])
                yb = torch.stack([torch.as_tensor(p["label"]) for p in patches[b : b + 2]])
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                steps += 1
            if time.process_time() - c0 >= seconds:
                break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    preds = []
    with torch.inference_mode():
        for x, _ in val:
            out = sliding_window_inference(x[None], patch, 4, model, 0.5, "gaussian")
            preds.append(torch.as_tensor(out)[0, 0].numpy() > 0)
    score = dice(preds, [y[0].numpy() > 0.5 for _, y in val])
    params = sum(p.numel() for p in model.parameters())
    return {"steps": steps, "cpu": cpu, "wall": wall, "dice": score, "params": params}


def child(case: str, seconds: float, threads: int, tiny: bool, seed: int) -> None:
    torch.set_num_threads(threads)
    if case == "monai-3d":
        result = run_monai(seconds, tiny, seed)
    else:
        result = run_ndunet(case, seconds, tiny, seed)
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="CPU seconds of training per row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--monai-path", help="a folder to put on PYTHONPATH for MONAI (optional)")
    p.add_argument("--tiny", action="store_true", help="small volumes and a few seconds (smoke)")
    p.add_argument("--seed", type=int, default=0, help="data, initialisation and crops")
    p.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = p.parse_args()
    seconds = 3.0 if args.tiny else args.seconds
    if args.child:
        child(args.child, seconds, args.threads, args.tiny, args.seed)
        return
    paths = [str(ROOT / "src"), *([args.monai_path] if args.monai_path else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": str(args.threads)}
    rows = {}
    for case in CASES:
        cmd = [sys.executable, __file__, "--child", case, "--seconds", str(seconds)]
        cmd += ["--threads", str(args.threads), "--seed", str(args.seed)]
        cmd += ["--tiny"] if args.tiny else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{case}: skipped ({last})")
            continue
        rows[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"\nbudget: {seconds:g} s of training CPU time per row, {args.threads} threads, seed {args.seed}"
    )
    head = f"{'case':<10} {'params':>8} {'steps':>6} {'cpu s':>6} {'wall s':>7} {'Dice':>6}"
    print(head + f" {'vs MONAI':>8} {'peak RSS MiB':>12}")
    ref = rows.get("monai-3d", {}).get("dice")
    for case, r in rows.items():
        ratio = f"{r['dice'] / ref:.3f}" if ref and case.endswith("3d") else "-"
        print(
            f"{case:<10} {r['params']:>8} {r['steps']:>6} {r['cpu']:>6.1f} {r['wall']:>7.1f} "
            f"{r['dice']:>6.3f} {ratio:>8} {r['rss_mib']:>12.0f}"
        )


if __name__ == "__main__":
    main()
