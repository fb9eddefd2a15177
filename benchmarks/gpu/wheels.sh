#!/usr/bin/env bash
# Run HERE (a machine with PyPI), in the repository root, before a GPU session: downloads the
# packages the lent GPU machine lacks (it has torch, numpy, scipy, pytest, tifffile, h5py, ...
# but no registry) as Python 3.12 manylinux wheels into .whl/ (git-ignored), which the device
# call carries. The file-format libraries let the whole suite run there; diffusers and MONAI are
# the peers of benchmarks/unet_step.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$@"
}
mkdir -p .whl
# file formats (ndunet[io]) and their needs that the GPU image lacks
get nibabel==5.4.2 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.8.0 \
  importlib-resources==6.5.2
# the peers of benchmarks/unet_step.py
get diffusers==0.42.1 monai==1.5.2 importlib-metadata==8.7.0  # diffusers 0.42 matches the
# image's huggingface-hub 1.33 and safetensors 0.8; MONAI's DiffusionModelUNet uses its einops
du -sh .whl
ls .whl
