"""Training: SupervisedTrainer and DiffusionTrainer on one engine, TrainerConfig, callbacks.

    trainer = SupervisedTrainer(model, train, val, loss="cross_entropy", metrics=("accuracy",),
                                out_dir="runs/cls", epochs=10, lr=1e-3, batch_size=64)
    trainer.fit(); trainer.evaluate(test)
    dtrainer = DiffusionTrainer(Diffusion(unet), train, out_dir="runs/gen", time_limit=600)
    dtrainer.fit(); dtrainer.sample(n=64)
    run = load_run("runs/gen")          # UNet + Diffusion + EMA copy, from the folder alone

Data: a Dataset, a DataLoader, a tensor/array (N, C, *spatial), (X, Y) or {"x": X, "y": Y};
samples x, (x,), (x, y) or {"x": x, "y": y} (see `ndunet.data.loader`).

Run folder (never deleted or overwritten; resume=True continues it):
    config.json, log.csv (step, epoch, loss, lr, val_*, wall_time), loss.png, train.log,
    checkpoints/{last, best, epoch-NNNN}/ (config.json, model.safetensors, ema.safetensors,
    trainer_state.pt, manifest.json), samples/epoch-NNNN.png (diffusion), tensorboard/.
Launch with `torchrun --nproc_per_node=K script.py` for DDP; nothing else changes.
"""

from ndunet.pretrained import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ndunet.training.callbacks import Callback
from ndunet.training.diffusion_trainer import DiffusionTrainer
from ndunet.training.load import LoadedRun, load_run
from ndunet.training.steps import NonFiniteLossError
from ndunet.training.supervised_trainer import SupervisedTrainer
from ndunet.training.trainer import Trainer
from ndunet.training.trainer_config import TrainerConfig

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "DiffusionTrainer",
    "LoadedRun",
    "NonFiniteLossError",
    "SupervisedTrainer",
    "Trainer",
    "TrainerConfig",
    "load_checkpoint",
    "load_run",
    "save_checkpoint",
]
