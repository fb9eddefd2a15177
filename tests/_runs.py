"""Tiny run files the CLI tests share (each trains in a second or two on the CPU)."""

# a class-conditional diffusion run on the embedded digits
TINY = """
[task]
type = "diffusion"
validate = false

[data]
name = "digits"

[model]
channels = [4, 8]
num_res_blocks = 1
num_groups = 2

[diffusion]
timesteps = 50
sample_steps = 2

[trainer]
max_steps = 2
batch_size = 16
sample_n = 2
seed = 3
"""

# a supervised 3-D segmentation run on generated blobs, trained on 8x8x4 patches
SEG_3D = """
[task]
type = "supervised"
validate = false
test = false

[data]
name = "blobs"
spatial_dims = 3
length = 12
n = 4

[patches]
patch_size = [8, 8, 4]

[model]
channels = [4, 8]
num_res_blocks = 1
num_groups = 2

[trainer]
max_steps = 2
batch_size = 2
lr = 1e-2
plot = false
device = "cpu"
"""
