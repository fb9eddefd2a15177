"""Public hooks into a training run: subclass :class:`Callback`, pass ``callbacks=[...]`` to a
trainer, and call ``trainer.request_stop(reason)`` to end the run after the current step (the
run then saves ``checkpoints/last`` and can be resumed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Trainer = Any  # an ndunet.training.Trainer (not imported: the trainer imports this module)


class Callback:
    """Every method is optional; each receives the trainer (read its public attributes: ``step``,
    ``epoch``, ``config``, ``history``, ``optimizer``, ``module``...)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """After set-up (and after a resume has restored the state), before the first step."""

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        """After each optimizer step (``loss`` is NaN/Inf for a skipped step)."""

    def on_validation_end(self, trainer: Trainer, results: dict[str, float]) -> None:
        """After each validation (``results``: ``val_loss`` and ``val_<metric>``)."""

    def on_epoch_end(self, trainer: Trainer, summary: dict[str, float]) -> None:
        """After an epoch's checkpoint is written."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, float]) -> None:
        """When training ends (limits reached or a stop requested)."""


def check_callbacks(callbacks: Sequence[Any] | None) -> list[Callback]:
    """A list of Callback instances (None: empty)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Sequence):
        raise TypeError(
            f"callbacks={callbacks!r} is not valid; expected a list of Callback objects"
        )
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(
                f"callbacks entry {cb!r} is not valid; expected an ndunet.training.Callback"
            )
    return list(callbacks)
