"""Callbacks: what runs around a training session's loop, the shape Keras' callbacks and Lightning's hooks
made familiar. The session calls, in order, ``on_train_begin`` once, then for each epoch
``on_epoch_begin``, ``on_step`` (as steps finish) and ``on_epoch_end`` (with the epoch's metrics; return
True to stop after this epoch), then ``on_train_end`` when the loop ends normally, and ``teardown``
always, also after an error or Ctrl-C.

jaxcnn's own progress bars, epoch lines, run folder (metrics file, checkpoints, curves), early stops and
``train_run(on_epoch=...)`` are callbacks; pass your own with ``train_run(..., callbacks=[...])``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxcnn import console
from jaxcnn.distributed import barrier, broadcast_text, is_primary, on_primary
from jaxcnn.run_files import open_checkpoints, write_atomic, write_metrics
from jaxcnn.run_folder import StagedRun

if TYPE_CHECKING:
    from jaxcnn.checkpoint import Checkpoints
    from jaxcnn.session import Session
    from jaxcnn.train import EpochResult


class Callback:
    """A hook into the training loop; override the methods you need (each does nothing here).

    ``on_train_begin`` receives the running :class:`jaxcnn.session.Session`: its ``spec``, ``config``,
    ``run_dir`` (None without a run folder), ``trainer``, ``state`` (the latest :class:`jaxcnn.train.TrainState`,
    updated before each ``on_epoch_end``) and ``metrics`` (the rows of ``metrics.jsonl`` so far).
    """

    def on_train_begin(self, session: Session) -> None:
        """Before the first epoch of this session (after compiling, and after restoring when resuming)."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Before epoch ``epoch`` (counted from 1 over the whole run) trains."""

    def on_step(self, steps: int) -> None:
        """After ``steps`` more training steps of the current epoch have been dispatched."""

    def on_epoch_end(self, result: EpochResult) -> bool | None:
        """After the epoch has trained and been tested; return True to end training after it."""
        return None

    def on_train_end(self) -> None:
        """After the last epoch of this session, when the loop ended normally (an early stop included)."""

    def teardown(self) -> None:
        """Last, always: also after an error, a NaN or Ctrl-C. Release what ``on_train_begin`` took."""


class ProgressBar(Callback):
    """A progress bar of each epoch's steps (tqdm; off when the output is not a terminal)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def on_train_begin(self, session: Session) -> None:
        self._epochs, self._steps = session.config.epochs, session.trainer.steps_per_epoch

    def on_epoch_begin(self, epoch: int) -> None:
        self._bar = console.progress_bar(self.enabled, self._steps, f"epoch {epoch}/{self._epochs}")

    def on_step(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def on_epoch_end(self, result: EpochResult) -> None:
        self.teardown()

    def teardown(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochPrinter(Callback):
    """One line per epoch: train and test loss and accuracy, seconds and images per second."""

    def on_train_begin(self, session: Session) -> None:
        self._epochs = session.config.epochs

    def on_epoch_end(self, result: EpochResult) -> None:
        console.print_epoch(result, self._epochs)


class EpochFunction(Callback):
    """Calls ``function(result)`` after each epoch (``train_run(on_epoch=...)``)."""

    def __init__(self, function: Callable[[EpochResult], None]) -> None:
        self.function = function

    def on_epoch_end(self, result: EpochResult) -> None:
        self.function(result)


class EarlyStop(Callback):
    """Ends training after the first epoch whose test accuracy reaches ``at_accuracy``, or after
    ``after_epochs`` epochs of this session (which leaves the run resumable as if interrupted)."""

    def __init__(self, at_accuracy: float | None = None, after_epochs: int | None = None) -> None:
        self.at_accuracy, self.after_epochs = at_accuracy, after_epochs
        self._epochs = 0

    def on_epoch_end(self, result: EpochResult) -> bool:
        self._epochs += 1
        reached = self.at_accuracy is not None and result.test_accuracy >= self.at_accuracy
        return reached or (self.after_epochs is not None and self._epochs >= self.after_epochs)


class RunWriter(Callback):
    """The run folder: a new run is written in a staging folder (config and metrics first), each epoch's
    metrics row and then its checkpoint are saved, and the staging folder becomes the run once its first
    epoch is saved; the curves are drawn at the end. A crash at any moment leaves the old run (or nothing)
    or the last complete epoch. With ``checkpoints`` (resuming), the run folder is written in place."""

    def __init__(self, run_dir: Path, record: dict[str, Any], checkpoints: Checkpoints | None = None) -> None:
        self.run_dir, self.record = run_dir, record
        self._checkpoints = checkpoints
        self._staged: StagedRun | None = None
        self._folder = run_dir

    def on_train_begin(self, session: Session) -> None:
        self._session = session
        if self._checkpoints is None:  # a new run: staged until its first epoch is saved
            from jaxcnn.run_folder import RunError

            staged = self._staged = StagedRun(self.run_dir)
            created = on_primary(lambda: self._create_staging(staged, session.metrics), RunError)
            self._folder = Path(broadcast_text(str(created)))  # where process 0 stages it, for every process
            self._checkpoints = open_checkpoints(self._folder)

    def _create_staging(self, staged: StagedRun, metrics: list[dict[str, float]]) -> Path:
        from jaxcnn.run_folder import RunError

        try:
            folder = staged.create()
            write_atomic(folder / "config.json", json.dumps(self.record, indent=2) + "\n")
            write_metrics(folder, metrics)
        except OSError as err:
            staged.discard()
            where = err.filename or staged.run_dir
            raise RunError(
                f"{where}: cannot write the run ({err.strerror}); choose a writable --out or free some space. "
                "Nothing that existed before was changed"
            ) from None
        return folder

    def on_epoch_end(self, result: EpochResult) -> None:
        assert self._checkpoints is not None  # opened in on_train_begin
        from jaxcnn.run_folder import RunError

        # Metrics first: a crash between the two leaves a row ahead of the checkpoints, which resuming
        # drops and trains again, never a checkpoint without its row.
        on_primary(lambda: write_metrics(self._folder, self._session.metrics), RunError)
        # Every process saves its part; orbax makes the checkpoint complete only once all parts are written.
        self._checkpoints.save(result.epoch, self._session.state.checkpoint_tree(),
                               {"test_accuracy": result.test_accuracy})  # fmt: skip
        if self._staged is not None and not self._staged.published:
            self._checkpoints.close()
            barrier("jaxcnn-staged-run-saved")
            # The first epoch is saved: the new run takes the place of any old one.
            on_primary(self._staged.publish, RunError)
            self._staged.published = True  # on every process: nothing of it is left to discard
            self._folder, self._checkpoints = self.run_dir, open_checkpoints(self.run_dir)

    def on_train_end(self) -> None:
        if self._session.metrics and is_primary():
            from jaxcnn.plots import plot_curves

            spec, data = self._session.spec, self._session.data
            plot_curves(self._session.metrics, self.run_dir / "curves.png", f"{spec.name} on {data.name}")

    def teardown(self) -> None:
        if self._staged is not None and is_primary():
            self._staged.discard()  # nothing, once published; else the unfinished first epoch


class StopOnSignal(Callback):
    """Ctrl-C or SIGTERM that came while an epoch was tested or saved: stop once it is complete."""

    def __init__(self, requested: Callable[[], bool], run_dir: Path | None) -> None:
        self.requested, self.run_dir = requested, run_dir

    def on_epoch_end(self, result: EpochResult) -> None:
        from jaxcnn.session import TrainingInterruptedError

        if self.requested():
            where = f", which is saved; continue with: jaxcnn train --resume {self.run_dir}" if self.run_dir else ""
            raise TrainingInterruptedError(f"interrupted after epoch {result.epoch}{where}")
