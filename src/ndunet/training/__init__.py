"""Training: SupervisedTrainer and DiffusionTrainer on one engine, TrainerConfig, checkpoints."""

from ndunet.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ndunet.training.config import TrainerConfig
from ndunet.training.diffusion import DiffusionTrainer
from ndunet.training.pipeline import Pipeline, load_pipeline
from ndunet.training.supervised import SupervisedTrainer
from ndunet.training.trainer import NonFiniteLossError, Trainer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DiffusionTrainer",
    "NonFiniteLossError",
    "Pipeline",
    "SupervisedTrainer",
    "Trainer",
    "TrainerConfig",
    "load_checkpoint",
    "load_pipeline",
    "save_checkpoint",
]
