"""Forward+backward time and peak memory of ndunet's exact N-D convolutions (N >= 4) vs references.

Rows, for each workload, all in one run on CPU:

* ours: ``ndunet.layers.ConvNd`` (stride 1, and stride 2 as a U-Net downsamples) /
  ``ConvTransposeNd`` (bias on), fed a standard contiguous input,
  with the fold's automatic choice, and once per fold strategy forced (``ours, outputs`` etc.;
  ``outputs frames``: with conv3d on NCDHW frames instead of channels-last, fold.layout;
  see ndunet/functional/fold.py; ``inputs``, ``chunks`` and ``blocks`` have no transposed form),
  the A/B that decides "auto". Where axes never mix (1x1 convs, anisotropic kernels such as
  (3, 3, 1, 1) and kernel-2 stride-2 transposed convs: ndunet/functional/merged.py) the rows are
  instead ``ours, merged (all)``, a native conv on merged axes, and ``ours, fold (none)``, the
  fold it replaces: the A/B of ``merged.mode`` "auto". ConvNd's ``blocks`` (fold_blocks.py)
  runs over blocks of at most ``--conv-block`` elements, its layout chosen per call unless a
  row forces it (``blocks frames``, ``blocks channels_last``). ConvTransposeNd's kernel 2 / stride 2 "outputs" is
  fold_tiled.py, run over blocks of frames (``--tiled-block`` elements; 0: only the ratio bounds
  them); its ``outputs frames`` row is the layout whose 4-D output is the conv_transpose3d
  result itself;
* (a) the practical ceiling: one ``conv3d`` (``conv_transpose3d``) doing exactly the same
  multiply-adds, handed its input already folded (the leading axes' kernel taps stacked as
  channels, their frames as batch), so it pays nothing for the fold. Timed in torch's default
  layout and in ``channels_last_3d`` (faster with oneDNN on CPU); the faster one is the ceiling;
* (b) the straightforward per-frame implementation of the pytorch_convNd project
  (https://github.com/pvjosue/pytorch_convNd): loops over output frames and kernel taps of the
  first axis, recursing down to ``conv3d`` calls (written here, not copied).

Timing: calls of all implementations are interleaved (one fwd+bwd of each per round, after a
warm-up), so load from other processes on a shared machine hits them alike; the median over
rounds is reported (calls under ~50 ms are repeated within a round and averaged), with the
fastest round beside it. Gradients of input, weight and bias are computed by every implementation.

Peak memory: tracemalloc cannot see torch's allocations, and the process's max RSS only grows
(and includes allocator caching). Instead one extra fwd+bwd per implementation runs under
``torch.profiler`` with ``profile_memory=True``; every allocation and free of torch's CPU
allocator is recorded with the allocator's running total, and the peak of that total minus its
value at the start is reported: the most bytes of tensors alive at once during fwd+bwd (the
gradients it makes included: none are alive when it starts), on top of the inputs and parameters
that already existed. oneDNN's internal scratch space is allocated through torch's allocator as
well (so it is counted for every row alike). A self-check of the
method runs first.

    PYTHONPATH=src python benchmarks/conv_nd.py [--rounds 5] [--threads 2] [--only ConvNd]
    PYTHONPATH=src python benchmarks/conv_nd.py --device cuda [--cudnn-benchmark]  # + GPU rows
    PYTHONPATH=src python benchmarks/conv_nd.py --only Transpose --tiled-block 0  # block A/B
    PYTHONPATH=src python benchmarks/conv_nd.py --only ConvNd --conv-block 0 --conv-ratio 1
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ndunet.functional import fold, fold_blocks, fold_tiled, merged
from ndunet.layers import ConvNd, ConvTransposeNd
from ndunet.planning import peak_bytes as _peak_bytes

# ----------------------------------------------------------------------------------------------
# (b): the per-frame reference (pytorch_convNd's approach)
# ----------------------------------------------------------------------------------------------


def per_frame_conv(
    x: torch.Tensor, w: torch.Tensor, padding: Sequence[int], stride: int | Sequence[int] = 1
) -> torch.Tensor:
    """N-D cross-correlation (``stride``: one for every axis, or per axis): one (N-1)-D conv per
    (output frame, tap) of axis 0."""
    strides = [stride] * (x.dim() - 2) if isinstance(stride, int) else list(stride)
    if x.dim() == 5:
        return F.conv3d(x, w, None, tuple(strides), tuple(padding))
    stride, p0, k0, length = strides[0], padding[0], w.shape[2], x.shape[2]
    xs, ws = (
        x.unbind(2),
        w.unbind(2),
    )  # one unbind: its backward is one stack, not a scatter per use
    frames = []
    for t in range((length + 2 * p0 - k0) // stride + 1):
        acc = None
        for k in range(k0):
            i = t * stride + k - p0  # input frame under tap k
            if 0 <= i < length:
                r = per_frame_conv(xs[i], ws[k], padding[1:], strides[1:])  # (B, O, *rest')
                acc = r if acc is None else acc + r
        frames.append(acc)
    return torch.stack(frames, 2)  # (B, O, L0', *rest')


def per_frame_conv_transpose(
    x: torch.Tensor, w: torch.Tensor, stride: int | Sequence[int]
) -> torch.Tensor:
    """N-D transposed conv (stride <= kernel, no padding; ``stride`` one for every axis or per
    axis): one (N-1)-D call per (frame, tap)."""
    strides = [stride] * (x.dim() - 2) if isinstance(stride, int) else list(stride)
    if x.dim() == 5:
        return F.conv_transpose3d(x, w, None, tuple(strides))
    stride, k0, length = strides[0], w.shape[2], x.shape[2]
    xs, ws = x.unbind(2), [t.contiguous() for t in w.unbind(2)]
    frames: list[torch.Tensor | None] = [None] * ((length - 1) * stride + k0)
    for i in range(length):
        for k in range(k0):
            r = per_frame_conv_transpose(xs[i], ws[k], strides[1:])  # (B, O, *rest')
            t = i * stride + k  # output frame this tap lands on
            frames[t] = r if frames[t] is None else frames[t] + r
    return torch.stack(frames, 2)  # (B, O, L0', *rest')


# ----------------------------------------------------------------------------------------------
# workloads: every implementation is a closure running one fwd+bwd from fresh gradients
# ----------------------------------------------------------------------------------------------


@dataclass
class Impl:
    name: str
    step: Callable[[], None]
    times: list[float] = field(default_factory=list)
    peak: int = 0


def _leaf(*shape: int, channels_last: bool = False) -> torch.Tensor:
    t = torch.randn(*shape)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last_3d)
    return t.requires_grad_()


def _step(out_fn: Callable[[], torch.Tensor], grad: torch.Tensor, leaves: list) -> Callable:
    def step() -> None:
        for t in leaves:
            t.grad = None
        out_fn().backward(grad)

    step.leaves = leaves  # type: ignore[attr-defined]
    return step


def _check_same(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Ours and the per-frame reference must compute the same numbers before we time them
    (float32; on CUDA cuDNN may use TF32, ~1e-3 relative: exactness is the tests' job)."""
    tol = 1e-2 if ours.is_cuda else 1e-4
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)


def _ours(
    out_fn: Callable[[], torch.Tensor],
    grad: torch.Tensor,
    leaves: list,
    ref: torch.Tensor,
    transposed: bool,
    merges: bool = False,
) -> list[Impl]:
    """The layer with "auto", and with each fold strategy forced (each checked against ref);
    ``merges``: its axes merge (merged.py), so merged against the fold instead."""
    _check_same(out_fn(), ref)
    impls = [Impl("ours", _step(out_fn, grad, leaves))]
    if merges:  # merged (forced) and the fold: the A/B of merged.mode "auto"
        for label, mode in (("merged (all)", "all"), ("fold (none)", "none")):
            step = _step(out_fn, grad, leaves)

            def forced(mode: str = mode, step=step) -> None:
                before, merged.mode = merged.mode, mode
                try:
                    step()
                finally:
                    merged.mode = before

            forced.leaves = leaves  # type: ignore[attr-defined]
            impls.append(Impl(f"ours, {label}", forced))
        return impls  # the fold's forced strategies would all take the merged path too
    # every strategy in the default layout; "outputs" also with NCDHW frames (fold.layout)
    variants = [(name, None) for name in fold.STRATEGIES[1:]] + [("outputs", "frames")]
    # "blocks" picks its layout per call (channels-last on CPU): both forced, for cuDNN's A/B
    variants += [("blocks", "frames"), ("blocks", "channels_last")]
    for name, layout in variants:
        if transposed and name in ("inputs", "chunks", "blocks"):  # no transposed form
            continue
        with fold.forced_strategy(name, layout):
            _check_same(out_fn(), ref)
        step = _step(out_fn, grad, leaves)

        def forced(name: str = name, layout: str | None = layout, step=step) -> None:
            with fold.forced_strategy(name, layout):
                step()

        forced.leaves = leaves  # type: ignore[attr-defined]
        impls.append(Impl(f"ours, {name}" + (f" {layout}" if layout else ""), forced))
    return impls


def _merges(
    size: int, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
    transposed: bool = False,
) -> bool:  # fmt: skip
    """Whether a conv of this geometry on size^n has axes to merge with every merge allowed (as
    merged.mode "auto" on CUDA; the device is only named, nothing is allocated there)."""
    n = len(kernel)
    output_padding = (0,) * n if transposed else None
    groups = merged.merge_axes(
        [size] * n, kernel, stride, padding, (1,) * n, output_padding, torch.device("cuda")
    )
    return groups is not None


def conv_impls(
    n: int,
    batch: int,
    ch: int,
    size: int,
    stride: int = 1,
    k: int = 3,
    kernel: tuple[int, ...] | None = None,
) -> list[Impl]:
    """ConvNd kernel ``k``, padding k // 2, ``stride`` (2: a U-Net's downsampling; k 1: its skip
    convs) on (batch, ch, size^n) and its references. ``kernel``: one per axis instead (padding
    k // 2 each, stride 1 where it is 1: an anisotropic plan's (1, 3, 3, 3) over a coarse leading
    axis, or (3, 3, 1, 1) for (x, y, z, t) data with coarse z and t)."""
    torch.manual_seed(0)
    m = n - 3  # leading axes folded
    kernel = kernel or (k,) * n
    strides = tuple(1 if kk == 1 else stride for kk in kernel)
    pads = tuple(kk // 2 for kk in kernel)
    outs = [(size + 2 * p - kk) // s + 1 for kk, s, p in zip(kernel, strides, pads)]
    layer = ConvNd(n, ch, ch, kernel, padding=pads, stride=strides)
    x = _leaf(batch, ch, *[size] * n)
    g = torch.randn(batch, ch, *outs)
    wb, bb = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))

    def fb() -> torch.Tensor:
        return per_frame_conv(x, wb, pads, strides) + bb.view(1, -1, *[1] * n)

    merges = _merges(size, kernel, strides, pads)
    impls = _ours(lambda: layer(x), g, [x, *layer.parameters()], fb().detach(), False, merges)
    frames, taps = math.prod(outs[:m]), math.prod(kernel[:m])
    for cl in (False, True):
        xa = _leaf(batch * frames, ch * taps, size, size, size, channels_last=cl)
        wa, ba = _leaf(ch, ch * taps, *kernel[m:]), _leaf(ch)
        ga = torch.randn(batch * frames, ch, *outs[m:])
        if cl:
            ga = ga.contiguous(memory_format=torch.channels_last_3d)

        def fa(xa=xa, wa=wa, ba=ba) -> torch.Tensor:
            return F.conv3d(xa, wa, ba, strides[m:], pads[m:])

        name = "(a) conv3d, channels_last_3d" if cl else "(a) conv3d, default layout"
        impls.append(Impl(name, _step(fa, ga, [xa, wa, ba])))
    impls.append(Impl("(b) per-frame loop", _step(fb, g, [x, wb, bb])))
    return impls


def conv_transpose_impls(
    n: int, batch: int, ch: int, size: int, lead_k: int | None = None
) -> list[Impl]:
    """ConvTransposeNd kernel 2, stride 2 (a U-Net's upsampling) from size^n to (2 size)^n;
    ``lead_k=1``: kernel 1, stride 1 along the leading N - 3 axes (an anisotropic plan)."""
    torch.manual_seed(0)
    m = n - 3
    kl = 2 if lead_k is None else lead_k
    out_l = size * kl
    kernel = (kl,) * m + (2,) * 3  # and the stride
    layer = ConvTransposeNd(n, ch, ch, kernel, stride=kernel)
    x = _leaf(batch, ch, *[size] * n)
    g = torch.randn(batch, ch, *[out_l] * m, *[2 * size] * 3)
    wb, bb = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))

    def fb() -> torch.Tensor:
        return per_frame_conv_transpose(x, wb, [kl] * m + [2] * 3) + bb.view(1, -1, *[1] * n)

    merges = _merges(size, kernel, kernel, (0,) * n, transposed=True)
    impls = _ours(lambda: layer(x), g, [x, *layer.parameters()], fb().detach(), True, merges)
    for cl in (False, True):
        xa = _leaf(batch * size**m, ch, size, size, size, channels_last=cl)
        wa, ba = _leaf(ch, ch * kl**m, 2, 2, 2), _leaf(ch * kl**m)
        ga = torch.randn(batch * size**m, ch * kl**m, *[2 * size] * 3)
        if cl:
            ga = ga.contiguous(memory_format=torch.channels_last_3d)

        def fa(xa=xa, wa=wa, ba=ba) -> torch.Tensor:
            return F.conv_transpose3d(xa, wa, ba, 2)

        name = "(a) conv_transpose3d, channels_last_3d" if cl else "(a) conv_transpose3d, default"
        impls.append(Impl(name, _step(fa, ga, [xa, wa, ba])))
    impls.append(Impl("(b) per-frame loop", _step(fb, g, [x, wb, bb])))
    return impls


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


def peak_bytes(fn: Callable[[], object]) -> int:
    """Most bytes of torch tensors alive at once while ``fn`` runs, above the start level."""
    return _peak_bytes(fn, torch.get_default_device())


def check_peak_method() -> None:
    """The method must see a freed 40 MB block as the peak, not the 30 MB alive at the end."""
    keep = []

    def fn() -> None:
        a = torch.ones(10_000_000)  # 40 MB
        del a
        keep.append(torch.ones(5_000_000))  # 20 MB
        keep.append(torch.ones(2_500_000))  # 10 MB

    got = peak_bytes(fn)
    if got != 40_000_000:
        raise RuntimeError(f"peak-memory method self-check failed: {got} bytes, expected 40 MB")


def _sync() -> None:
    if torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def measure(impls: list[Impl], rounds: int) -> None:
    for impl in impls:  # warm-up: oneDNN/cuDNN primitive creation, allocator
        impl.step()
    # fast calls are repeated within a round (>= ~50 ms) so one preemption does not dominate
    _sync()
    t0 = time.perf_counter()
    impls[0].step()
    _sync()
    inner = max(1, min(20, round(0.05 / (time.perf_counter() - t0))))
    for r in range(rounds):
        order = impls[r % len(impls) :] + impls[: r % len(impls)]  # rotate who goes first
        for impl in order:
            _sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                impl.step()
            _sync()
            impl.times.append((time.perf_counter() - t0) / inner)
    for impl in impls:
        for other in impls:  # every profiled step starts with no gradients alive
            for t in other.step.leaves:
                t.grad = None
        impl.peak = peak_bytes(impl.step)


@dataclass
class Result:
    title: str
    impls: list[Impl]

    def get(self, prefix: str) -> Impl:
        return next(i for i in self.impls if i.name.startswith(prefix))

    def median(self, impl: Impl) -> float:
        return statistics.median(impl.times)

    def ceiling(self) -> Impl:
        """The faster (by its fastest run, the least load-sensitive figure) of the two (a) rows."""
        return min((i for i in self.impls if i.name.startswith("(a)")), key=lambda i: min(i.times))


def print_result(res: Result) -> None:
    ours = res.get("ours")
    print(f"\n{res.title}")
    print(f"  {'':40s} {'median ms':>10s} {'min ms':>8s} {'peak MiB':>9s} {'ours/this':>10s}")
    for impl in res.impls:
        ratio = res.median(ours) / res.median(impl)
        print(
            f"  {impl.name:40s} {1e3 * res.median(impl):10.1f} {1e3 * min(impl.times):8.1f} "
            f"{impl.peak / 2**20:9.1f} {ratio:10.2f}"
        )


def print_summary(results: list[Result]) -> None:
    print(
        "\nSummary, one line per (workload, ours with auto or a forced strategy). Targets: time\n"
        "<= 1.3x of (a) for ConvNd, <= 1.5x for ConvTransposeNd; (b) never faster; peak memory\n"
        "<= 1.5x of (b). Time ratios from the median (and, less load-sensitive, from the fastest)\n"
        "fwd+bwd; (a) is the faster of its two layouts (by fastest run)."
    )
    print(
        f"  {'workload':44s} {'ours':14s} {'ours/(a)':>12s} {'(b)/ours':>12s} {'mem/(b)':>8s} "
        f"{'mem/(a)':>8s}  targets"
    )
    for res in results:
        a, b = res.ceiling(), res.get("(b)")
        bound = 1.5 if "Transpose" in res.title else 1.3
        for ours in (i for i in res.impls if i.name.startswith("ours")):
            ta, tb = res.median(ours) / res.median(a), res.median(b) / res.median(ours)
            ma, mb = min(ours.times) / min(a.times), min(b.times) / min(ours.times)
            mem_b, mem_a = ours.peak / max(b.peak, 1), ours.peak / max(a.peak, 1)
            missed = [
                name
                for name, bad in (("(a)", ta > bound), ("(b)", tb < 1.0), ("mem", mem_b > 1.5))
                if bad
            ]
            verdict = "met" if not missed else "missed: " + ", ".join(missed)
            how = ours.name.removeprefix("ours").removeprefix(", ") or "auto"
            print(
                f"  {res.title:44s} {how:14s} {ta:5.2f} ({ma:4.2f}) {tb:5.2f} ({mb:4.2f}) "
                f"{mem_b:8.2f} {mem_a:8.2f}  {verdict}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (tensors made there)")
    parser.add_argument(
        "--only", default="", help="run only workloads whose title has this ('a|b': a or b)"
    )
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="let cuDNN autotune (same for every row)"
    )
    parser.add_argument(
        "--tiled-block",
        type=int,
        default=fold_tiled.BLOCK_ELEMENTS,
        help="fold_tiled.BLOCK_ELEMENTS: elements per block of the tiled transposed conv (0: "
        "bounded by fold_tiled.CHUNK_RATIO only)",
    )
    parser.add_argument(
        "--conv-block",
        type=int,
        default=fold_blocks.BLOCK_ELEMENTS,
        help='fold_blocks.BLOCK_ELEMENTS: elements per block of ConvNd\'s "blocks" strategy (0: '
        "bounded by fold_blocks.CHUNK_RATIO only)",
    )
    parser.add_argument(
        "--conv-ratio",
        type=float,
        default=fold_blocks.CHUNK_RATIO,
        help="fold_blocks.CHUNK_RATIO: the most of a conv's frames in one block",
    )
    args = parser.parse_args()
    fold_tiled.BLOCK_ELEMENTS = args.tiled_block
    fold_blocks.BLOCK_ELEMENTS, fold_blocks.CHUNK_RATIO = args.conv_block, args.conv_ratio
    torch.set_num_threads(args.threads)
    torch.set_default_device(args.device)
    where = "CPU" if args.device == "cpu" else torch.cuda.get_device_name()
    if args.device != "cpu":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        where += (
            f", cuDNN {torch.backends.cudnn.version()} benchmark={args.cudnn_benchmark} "
            f"allow_tf32={torch.backends.cudnn.allow_tf32}"
        )
    if args.device == "cpu":
        check_peak_method()
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds, float32, "
        f"{where}; load average at start {os.getloadavg()[0]:.1f} (a shared machine: noisy); "
        f"fold_tiled blocks: CHUNK_RATIO={fold_tiled.CHUNK_RATIO}, "
        f"BLOCK_ELEMENTS={fold_tiled.BLOCK_ELEMENTS}; fold_blocks: "
        f"CHUNK_RATIO={fold_blocks.CHUNK_RATIO}, BLOCK_ELEMENTS={fold_blocks.BLOCK_ELEMENTS}"
    )
    gpu_rows = [  # the GPU issue's table: larger volumes
        ("ConvNd 4-D, B=4, 32->32 ch, 24^4, k3 p1", conv_impls, (4, 4, 32, 24)),
        ("ConvTransposeNd 4-D, B=4, 32 ch, 12^4->24^4", conv_transpose_impls, (4, 4, 32, 12)),
    ]
    workloads = [  # issue 12's rows first (the GPU script's time limit cuts the end)
        ("ConvNd 4-D, B=2, 16->16 ch, 16^4, k3 p1", conv_impls, (4, 2, 16, 16)),
        ("ConvNd 4-D, B=8, 16->16 ch, 8^4, k3 p1", conv_impls, (4, 8, 16, 8)),
        ("ConvTransposeNd 4-D, B=2, 16 ch, 8^4->16^4", conv_transpose_impls, (4, 2, 16, 8)),
        ("ConvNd 5-D, B=2, 8->8 ch, 6^5, k3 p1", conv_impls, (5, 2, 8, 6)),
        ("ConvTransposeNd 4-D, B=8, 16 ch, 4^4->8^4", conv_transpose_impls, (4, 8, 16, 4)),
        ("ConvTransposeNd 5-D, B=2, 8 ch, 4^5->8^5", conv_transpose_impls, (5, 2, 8, 4)),
        ("ConvNd 4-D, B=2, 32->32 ch, 16^4, k1 (skip conv)", conv_impls, (4, 2, 32, 16, 1, 1)),
        ("ConvNd 4-D, B=2, 16->16 ch, 16^4, k3 s2 p1", conv_impls, (4, 2, 16, 16, 2)),
        ("ConvNd 4-D, B=4, 32->32 ch, 12^4, k3 s2 p1", conv_impls, (4, 4, 32, 12, 2)),
        ("ConvNd 5-D, B=2, 8->8 ch, 8^5, k3 s2 p1", conv_impls, (5, 2, 8, 8, 2)),
        # anisotropic plans: kernel 1 along coarse axes (functional/merged.py merges those
        # that never mix; (1, 3, 3, 3) reaches across frames and is folded)
        ("ConvNd 4-D, B=2, 16->16 ch, 16^4, k(3,3,1,1)", conv_impls,
         (4, 2, 16, 16, 1, 3, (3, 3, 1, 1))),
        ("ConvNd 4-D, B=2, 16->16 ch, 16^4, k(1,3,3,3)", conv_impls,
         (4, 2, 16, 16, 1, 3, (1, 3, 3, 3))),
        ("ConvNd 4-D, B=2, 16->16 ch, 16^4, k(1,3,3,3) s(1,2,2,2)", conv_impls,
         (4, 2, 16, 16, 2, 3, (1, 3, 3, 3))),
        ("ConvTransposeNd 4-D, B=2, 16 ch, 8^4, k(1,2,2,2) s(1,2,2,2)", conv_transpose_impls,
         (4, 2, 16, 8, 1)),
    ]  # fmt: skip
    if args.device != "cpu":
        workloads = gpu_rows + workloads
    results = []
    for title, build, shape in workloads:
        if not any(part in title for part in args.only.split("|")):
            continue
        impls = build(*shape)
        measure(impls, args.rounds)
        results.append(Result(title, impls))
        print_result(results[-1])
    print_summary(results)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
