"""What a run reports: log.csv, optional TensorBoard, Python logging (console + train.log), tqdm
bars. Only rank 0 creates any of it; other ranks get a RunLog that does nothing."""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ndunet.files import check_path, safe_open_append, safe_write_text, safe_write_with

logger = logging.getLogger("ndunet.training")


class _TqdmHandler(logging.Handler):
    """Console handler that prints above the progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _AppendHandler(logging.StreamHandler):
    """A file handler whose file was opened by `safe_open_append` (no link followed)."""

    def close(self) -> None:
        try:
            self.acquire()
            try:
                if self.stream is not None:
                    self.stream.close()
            finally:
                self.release()
        finally:
            super().close()


class RunLog:
    """log.csv with fixed columns (step, epoch, loss, lr, val_*, wall_time), TensorBoard scalars,
    logging handlers, and the epoch/step progress bars. Every file is written inside out_dir
    through `ndunet.files` (a symbolic link there is refused, never written through)."""

    def __init__(
        self, out_dir: Path | None, columns: list[str], *, progress: bool, tensorboard: bool
    ) -> None:
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.columns = ["step", "epoch", "loss", "lr", *columns, "wall_time"]
        self.progress = progress and out_dir is not None
        self._file: Any = None
        self._writer: Any = None
        self._tb: Any = None
        self._handlers: list[logging.Handler] = []
        self._rows = 0  # training-loss rows written (loss.png needs one)
        self.epoch_bar: Any = None
        self.step_bar: Any = None
        if out_dir is None:
            return
        out_dir = Path(out_dir)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "tensorboard=True needs the tensorboard package: pip install 'ndunet[tensorboard]'"
                ) from e
            self._tb = SummaryWriter(log_dir=str(check_path(out_dir / "tensorboard", out_dir)))
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        file_handler = _AppendHandler(safe_open_append(out_dir / "train.log", root=out_dir))
        file_handler.setFormatter(fmt)
        self._handlers.append(file_handler)
        if progress:
            self._handlers.append(_TqdmHandler())
        for h in self._handlers:
            logger.addHandler(h)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    @property
    def csv_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "log.csv"

    def open_csv(self, resume_step: int | None) -> None:
        """Open log.csv for appending; on resume, drop rows written after the checkpoint (the
        killed run logged them, the resumed run logs them again)."""
        path = self.csv_path
        if path is None or self.out_dir is None:
            return
        check_path(path, self.out_dir)
        if resume_step is not None and path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                rows = [
                    r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= resume_step
                ]
            lines = io.StringIO()
            w = csv.DictWriter(lines, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            safe_write_text(path, lines.getvalue(), root=self.out_dir)
        new = not path.exists()
        self._file = safe_open_append(path, root=self.out_dir, newline="")
        self._writer = csv.DictWriter(
            self._file, fieldnames=self.columns, extrasaction="ignore", restval=""
        )
        if new:
            self._writer.writeheader()

    def row(self, values: dict[str, Any]) -> None:
        """One CSV row (missing columns blank) and the matching TensorBoard scalars."""
        if self._writer is not None:
            self._rows += "loss" in values
            self._writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()}
            )
            self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, values["step"])

    def bars(self, epochs: int, epoch: int) -> None:
        """Open the epoch bar (progress mode only)."""
        if self.progress:
            self.epoch_bar = tqdm(
                total=epochs, initial=epoch, desc="epochs", position=0, dynamic_ncols=True
            )

    def epoch_start(self, epoch: int, total_steps: int, done_steps: int) -> None:
        """Open this epoch's step bar, starting at the steps a resumed run already did."""
        if self.progress:
            self.step_bar = tqdm(
                total=total_steps,
                initial=done_steps,
                desc=f"epoch {epoch + 1}",
                position=1,
                leave=False,
                dynamic_ncols=True,
            )

    def step(self, n: int, postfix: dict[str, str] | None = None) -> None:
        """Advance the step bar (postfix: e.g. the loss)."""
        if self.step_bar is not None:
            self.step_bar.update(n)
            if postfix:
                self.step_bar.set_postfix(postfix, refresh=False)

    def epoch_end(self, postfix: dict[str, str]) -> None:
        """Close the step bar; advance the epoch bar with the epoch summary."""
        if self.step_bar is not None:
            self.step_bar.close()
            self.step_bar = None
        if self.epoch_bar is not None:
            self.epoch_bar.update(1)
            self.epoch_bar.set_postfix(postfix)

    def plot(self) -> None:
        """loss.png from log.csv via ndunet.viz (skipped with a debug note if viz is absent)."""
        if self.out_dir is None or not self._rows:
            return
        try:
            from ndunet.viz import plot_loss
        except ImportError:
            logger.debug("ndunet.viz not available: no loss.png")
            return
        csv_path, out = self.csv_path, self.out_dir
        try:
            safe_write_with(out / "loss.png", lambda tmp: plot_loss(csv_path, tmp), root=out)
        except (ValueError, OSError) as e:  # a failed plot (or a link there) must not end a run
            logger.warning("could not draw loss.png: %s", e)

    def close(self) -> None:
        """Close bars, files and writers; detach the logging handlers."""
        for bar in (self.step_bar, self.epoch_bar):
            if bar is not None:
                bar.close()
        self.step_bar = self.epoch_bar = None
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for h in self._handlers:
            logger.removeHandler(h)
            h.close()
        self._handlers = []
