#!/usr/bin/env bash
# Run ON a lent GPU machine, in the repository root, as ONE device call (issue 12's checks):
#
#   here, once:   bash benchmarks/gpu/wheels.sh            (fills .whl/, git-ignored)
#   device call:  run(command="bash benchmarks/gpu/session.sh", carry=[".whl"], timeout_s=600)
#
# Stages, in order of priority, each under its own time limit, inside one overall deadline
# (DEADLINE seconds, default 570: a device command may run 600), each writing $OUT/<stage>.log:
#   suite    the whole test suite on CUDA (gpu-marked tests included), xdist
#   unet     benchmarks/unet_step.py: fp32 and bf16 with the peers as issue 12 measured them, then
#            with the trainer's CUDA settings (channels_last, cudnn.benchmark) for every model
#   conv     benchmarks/conv_nd.py --device cuda: every fold strategy, ceiling and loop; merged
#            axes (1x1, anisotropic kernels) against the fold
#   compile  unet_step.py --compile: 2-D at batch 256; the issue's 3-D row (batch 1, host-bound
#            in eager: ~1300 aten ops a step) with CUDA graphs in fp32 and bf16; 3-D at batch 32
#   profile  benchmarks/profile_step.py: bf16 step profile, old vs new layers
#   infer    benchmarks/compiled_inference.py: sampling (3-D, batch 1) and sliding-window predict,
#            eager vs compile="reduce-overhead" in bf16
#   overhead benchmarks/trainer_overhead.py: the trainer (one loss read per step) against a bare
#            loop on the 3-D row, eager fp32 and CUDA graphs in bf16 (the last two stages: a
#            rerun with STAGES=infer,overhead where the deadline cut them)
# STAGES="unet,conv" bash benchmarks/gpu/session.sh runs a subset (e.g. for a rerun).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
STAGES=${STAGES:-suite,unet,conv,compile,profile,infer,overhead}
DEADLINE=${DEADLINE:-570}
start=$(date +%s)
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || echo "wheel install failed"
fi
export PYTHONPATH=/tmp/site:$PWD/src

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  for m in diffusers monai nibabel zarr tifffile h5py scipy triton; do
    python3 -c "import $m; print('$m', getattr($m, '__version__', '?'))" 2>&1 | tail -n 1
  done
  nproc
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"

stage() {  # stage NAME LIMIT_S COMMAND...: run when listed and when its limit fits the deadline
  local name=$1 limit=$2
  shift 2
  [[ ",$STAGES," == *",$name,"* ]] || return 0
  local left=$((DEADLINE - ($(date +%s) - start)))
  if ((left < 30)); then
    echo "== $name skipped: ${left}s left"
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit}s)"
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$OUT/$name.log" 2>&1
  echo "== $name rc=$? in $(($(date +%s) - t0))s"
}

stage suite 180 python3 -m pytest -q -n 12 -p no:cacheprovider --maxfail=40 -rfE \
  --timeout=200 -o addopts="--strict-markers"
tail -n 60 "$OUT/suite.log" 2>/dev/null

stage unet 110 python3 benchmarks/unet_step.py --device cuda --amp fp32,bf16 --batch 64 \
  --rounds 15 --warmup 3
stage unet 60 python3 benchmarks/unet_step.py --device cuda --amp fp32,bf16 --batch 64 \
  --rows 2d,3d --channels-last --cudnn-benchmark --rounds 15 --warmup 3
grep -A12 "^summary" "$OUT/unet.log" 2>/dev/null

stage conv 80 python3 benchmarks/conv_nd.py --device cuda --rounds 10 --threads 8
stage conv 30 python3 benchmarks/conv_nd.py --device cuda --rounds 10 --threads 8 \
  --cudnn-benchmark --only "B=4"
stage conv 30 python3 benchmarks/conv_nd.py --device cuda --rounds 10 --threads 8 \
  --only "k(|k1 ("  # merged axes (merged.py) against the fold: merged.mode "auto" on CUDA
tail -n 45 "$OUT/conv.log" 2>/dev/null

stage compile 140 python3 benchmarks/unet_step.py --device cuda --amp bf16 --batch 256 \
  --rows 2d --compile --channels-last --cudnn-benchmark --models ndunet --rounds 10 --warmup 2
stage compile 90 python3 benchmarks/unet_step.py --device cuda --amp fp32,bf16 --rows 3d \
  --compile --compile-mode reduce-overhead --cudnn-benchmark --models ndunet --rounds 10 --warmup 3
stage compile 100 python3 benchmarks/unet_step.py --device cuda --amp bf16 --batch-3d 32 \
  --rows 3d --compile --channels-last --cudnn-benchmark --models ndunet --rounds 10 --warmup 2
grep -A6 "^summary" "$OUT/compile.log" 2>/dev/null

stage profile 40 python3 benchmarks/profile_step.py --device cuda --amp bf16 --spatial-dims 2 \
  --batch 64 --channels-last --variants old,new,new-cl --steps 10 --top 12
stage profile 25 python3 benchmarks/profile_step.py --device cuda --amp bf16 --spatial-dims 3 \
  --channels-last --variants old,new,new-cl --steps 10 --top 8
stage profile 20 python3 benchmarks/profile_step.py --device cuda --amp bf16 --batch 64 \
  --variants new --cudnn-benchmark --steps 10 --top 8
tail -n 60 "$OUT/profile.log" 2>/dev/null

stage infer 150 python3 benchmarks/compiled_inference.py --device cuda --rows sample3d,predict3d \
  --modes eager,reduce-overhead --amp bf16 --rounds 5 --steps 20 --volume 160 --roi 96 \
  --sw-batch-size 4
tail -n 16 "$OUT/infer.log" 2>/dev/null

stage overhead 50 python3 benchmarks/trainer_overhead.py --device cuda --model unet3d --rounds 3
stage overhead 100 python3 benchmarks/trainer_overhead.py --device cuda --model unet3d --rounds 2 \
  --amp bf16 --compile-mode reduce-overhead
grep -B1 -A4 "^loop" "$OUT/overhead.log" 2>/dev/null
echo "total $(($(date +%s) - start))s"
