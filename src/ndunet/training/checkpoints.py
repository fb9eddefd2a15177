"""A run's checkpoints: ``last`` (what resume reads), ``best``, ``epoch-NNNN``, and pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from ndunet.pretrained import link_checkpoint, prune_checkpoints, save_checkpoint


class CheckpointWriter:
    """Writes the checkpoint folders of one run under ``out_dir/checkpoints`` (rank 0 only)."""

    def __init__(self, out_dir: Path, keep_last: int, enabled: bool = True) -> None:
        self.root = Path(out_dir)
        self.folder = self.root / "checkpoints"
        self.keep_last, self.enabled = keep_last, enabled

    def save(
        self,
        names: list[str],
        *,
        config: dict[str, Any],
        model_state: dict[str, Tensor],
        ema_state: dict[str, Tensor] | None,
        extra_state: dict[str, Tensor],
        trainer_state: dict[str, Any],
    ) -> None:
        """Write one checkpoint and copy it to the other names. "last", the folder resume reads,
        is swapped in after the others: a kill in between leaves a "best" from the future that
        the resumed run rewrites identically, never a "last" whose best value disagrees with
        checkpoints/best."""
        if not self.enabled or not names:
            return
        names = sorted(names, key=lambda name: name == "last")
        first = save_checkpoint(
            self.folder / names[0],
            config=config,
            model_state=model_state,
            ema_state=ema_state,
            extra_state=extra_state,
            trainer_state=trainer_state,
            root=self.root,
        )
        for name in names[1:]:
            link_checkpoint(first, self.folder / name, root=self.root)

    def prune(self) -> None:
        """Keep the newest `keep_last` per-epoch checkpoints (the only deletion a run does)."""
        if self.enabled and self.folder.is_dir():
            prune_checkpoints(self.folder, self.keep_last, root=self.root)
