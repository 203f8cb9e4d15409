"""A training session: the loop over a :class:`jaxcnn.train.Trainer`, top to bottom (compile; then each
epoch: step, test, save, log), with callbacks around it; and ``train_run`` and ``resume_run``, which
check everything that can fail before a run folder is touched and hold the run's lock while writing."""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from jaxcnn import console
from jaxcnn.callbacks import Callback, EarlyStop, EpochFunction, EpochPrinter, ProgressBar, RunWriter, StopOnSignal
from jaxcnn.data import BUILTIN, IMPORTED, DataError, Dataset, load_dataset, resolve_data_dir
from jaxcnn.distributed import is_primary, on_primary
from jaxcnn.memory import check_fits, element_count
from jaxcnn.model import Model, Params, State
from jaxcnn.parallel import fetch
from jaxcnn.preprocess import Preprocess, plan_preprocess
from jaxcnn.run_checks import NothingToResumeError as NothingToResumeError
from jaxcnn.run_checks import check_classes, check_epochs_left, writing
from jaxcnn.run_checks import check_out as check_out
from jaxcnn.run_files import (
    check_spec_matches,
    layer_modules,
    library_versions,
    open_checkpoints,
    read_config,
    read_metrics,
    run_data_dir,
    spec_from_config,
)
from jaxcnn.run_folder import RUN_FORMAT, RunError
from jaxcnn.spec import NetworkSpec, load_spec
from jaxcnn.stream_data import NORMALIZE_SAMPLE, StreamingData, measured_normalization, open_streaming
from jaxcnn.train import EpochInterruptedError, EpochResult, TrainConfig, Trainer, TrainState, average_params

if TYPE_CHECKING:
    from jaxcnn.checkpoint import Checkpoints
    from jaxcnn.stream_train import StreamTrainer


@dataclass
class RunResult:
    """What a training run produced (also on disk in the run directory)."""

    run_dir: Path | None
    metrics: list[dict[str, float]]
    params: Params
    compile_seconds: float
    data_seconds: float
    wall_seconds: float
    steps_per_epoch: int
    stopped_early: bool = False
    model_state: State = field(default_factory=dict)
    """The network's state after the last epoch (batch norm's running statistics; empty for most)."""

    @property
    def best_test_accuracy(self) -> float:
        return max((m["test_accuracy"] for m in self.metrics), default=0.0)


def train_run(
    spec: NetworkSpec | str | Path,
    dataset: str | Dataset,
    config: TrainConfig,
    out: str | Path | None,
    *,
    data_dir: str | Path | None = None,
    pad: bool = False,
    grey_to_rgb: bool = False,
    normalize: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
    stop_at_accuracy: float | None = None,
    stop_after_epochs: int | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train ``spec`` on ``dataset`` into the run directory ``out`` (None: keep nothing on disk).

    ``stop_at_accuracy`` ends the run after the first epoch whose test accuracy reaches it;
    ``stop_after_epochs`` ends this session after that many epochs, leaving the run resumable
    with :func:`resume_run` exactly as if it had been interrupted. ``on_epoch`` is called with each
    epoch's result; ``callbacks`` (:class:`jaxcnn.callbacks.Callback`) hook into every part of the loop.
    """
    started = time.perf_counter()
    run_dir = Path(out) if out is not None else None
    if run_dir is not None:
        on_primary(lambda: check_out(run_dir, overwrite), RunError)
    if not isinstance(spec, NetworkSpec):
        spec = load_spec(spec)
    data = dataset if isinstance(dataset, (Dataset, StreamingData)) else training_data(dataset, data_dir, config,
                                                                                        spec)  # fmt: skip
    offline = None if isinstance(dataset, (Dataset, StreamingData)) else resolve_data_dir(data_dir)
    preprocess = _preprocess(data, spec, pad=pad, grey_to_rgb=grey_to_rgb, normalize=normalize,
                             workers=config.loader_workers, verbose=verbose)  # fmt: skip
    check_classes(spec, data)
    data_seconds = time.perf_counter() - started
    record = {
        "format": RUN_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "spec": spec.document,
        "spec_source": spec.source,
        "dataset": {
            "name": data.name,
            "source": data.source,
            "data_dir": None if offline is None else str(offline.absolute()),
            "class_names": list(data.class_names),
            "image_shape": list(data.image_shape or spec.input_shape),
            "train_count": data.train_count,
            "test_count": data.test_count,
        },
        "preprocess": preprocess.to_dict(),
        "layer_modules": layer_modules(spec),
        "train": config.to_dict(),
        "versions": library_versions(),
        "processes": jax.process_count(),
        "command": sys.argv,
    }
    own: list[Callback] = [] if on_epoch is None else [EpochFunction(on_epoch)]
    if stop_at_accuracy is not None or stop_after_epochs is not None:
        own.append(EarlyStop(stop_at_accuracy, stop_after_epochs))
    with writing(run_dir):
        if run_dir is not None:  # again, now that no one else can be writing it
            on_primary(lambda: check_out(run_dir, overwrite), RunError)
        session = Session(spec=spec, data=data, preprocess=preprocess, config=config, run_dir=run_dir, record=record,
                          started=started, data_seconds=data_seconds)  # fmt: skip
        return session.train(progress=progress, verbose=verbose, callbacks=[*own, *callbacks])


def resume_run(
    out: str | Path,
    *,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue the run in ``out`` from its latest complete checkpoint, up to ``epochs`` (default: as configured).

    The continued run's final parameters equal those of an uninterrupted run with the same seed.
    ``dataset`` passes the data in memory instead of loading the recorded data set by name.
    """
    started = time.perf_counter()
    run_dir = Path(out)
    record = read_config(run_dir)  # a clear error for a folder that is not a run, before anything is created
    if "imported" in record:
        raise RunError(f"{run_dir}: was imported (jaxcnn import), not trained here, so there is no training to "
                       f"resume; fine-tune it in a new run: jaxcnn train {run_dir / 'spec.json'} --dataset NAME "
                       f"--init-from {run_dir} --out NEW_RUN")  # fmt: skip
    check_epochs_left(run_dir, epochs if epochs is not None else record["train"].get("epochs"))
    with writing(run_dir):
        session = _resumed_session(run_dir, started, epochs, data_dir, dataset)
        return session.train(progress=progress, verbose=verbose, callbacks=callbacks)


def _resumed_session(
    run_dir: Path, started: float, epochs: int | None, data_dir: str | Path | None, dataset: Dataset | None
) -> Session:
    """The session that continues ``run_dir`` (whose lock is held) from its latest complete checkpoint."""
    record = read_config(run_dir)
    spec = spec_from_config(record, run_dir)
    train = dict(record["train"])
    if epochs is not None:
        train["epochs"] = epochs
    config = TrainConfig.from_dict(train)
    record["train"] = config.to_dict()
    data = dataset if dataset is not None else training_data(record["dataset"]["name"], run_data_dir(record, data_dir),
                                                             config, spec)  # fmt: skip
    preprocess = Preprocess.from_dict(record["preprocess"])
    data_seconds = time.perf_counter() - started
    metrics = read_metrics(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise RunError(
            f"{run_dir / 'checkpoints'}: missing, so there is no epoch to resume from "
            f"(metrics.jsonl records {len(metrics)}). Nothing was changed; to train this network again from "
            f"epoch 1, start a new run: jaxcnn train SPEC --out {run_dir} --overwrite (with the same settings)"
        )
    checkpoints = open_checkpoints(run_dir, create=False)
    latest = checkpoints.latest_epoch()
    if latest is None:
        raise RunError(
            f"{run_dir / 'checkpoints'}: holds no complete checkpoint, so there is no epoch to resume from. "
            f"Nothing was changed; start the run again: jaxcnn train SPEC --out {run_dir} --overwrite"
        )
    return Session(spec=spec, data=data, preprocess=preprocess, config=config, run_dir=run_dir, record=record,
                   started=started, data_seconds=data_seconds, done_epochs=latest, metrics=metrics,
                   checkpoints=checkpoints)  # fmt: skip


class TrainingInterruptedError(RunError):
    """Training stopped by Ctrl-C or SIGTERM at a step boundary; the run can be resumed."""


class TrainingDivergedError(RunError):
    """The training loss became NaN or infinite."""


def _resume_hint(stop: EpochInterruptedError, run_dir: Path | None, last_saved: int) -> str:
    where = f"{stop}; nothing of this epoch is saved"
    if run_dir is None:
        return where
    if last_saved:
        return f"{where}, the run is resumable from epoch {last_saved}: jaxcnn train --resume {run_dir}"
    return (
        f"{where}. No epoch was complete yet, so nothing of the new run was kept and {run_dir} is as it was "
        "before: start the training again"
    )


@dataclass(kw_only=True)
class Session:
    """One training session: what to train on what, where the run folder is, and how far it has come.

    :meth:`train` is the loop. Callbacks see the running session: ``state`` is the latest
    :class:`jaxcnn.train.TrainState` and ``metrics`` the rows of ``metrics.jsonl`` so far.
    """

    spec: NetworkSpec
    data: Dataset | StreamingData
    preprocess: Preprocess
    config: TrainConfig
    run_dir: Path | None
    record: dict[str, Any]
    """What ``config.json`` records."""
    started: float
    data_seconds: float
    done_epochs: int = 0
    metrics: list[dict[str, float]] = field(default_factory=list)
    checkpoints: Checkpoints | None = None
    """The run's checkpoints when resuming (a new run opens its own in the staging folder)."""
    trainer: Trainer | StreamTrainer = field(init=False)
    state: TrainState = field(init=False)

    def train(self, *, progress: bool, verbose: bool, callbacks: Sequence[Callback] = ()) -> RunResult:
        """Compile, then for each epoch: step through it, test, save, log; top to bottom."""
        spec, data, config, run_dir = self.spec, self.data, self.config, self.run_dir
        progress, verbose = progress and is_primary(), verbose and is_primary()  # one console for the job
        model = Model(spec)
        if isinstance(data, StreamingData):
            from jaxcnn.stream_train import StreamTrainer

            check_fits(spec, config.batch_size, 0)
            self.trainer = StreamTrainer(model, config, self.preprocess, data)
        else:
            # Before padding or converting the images (which allocates them anew at the spec's size).
            fitted_bytes = (data.train_count + data.test_count) * element_count(spec.input_shape)
            check_fits(spec, config.batch_size, fitted_bytes)
            fit = self.preprocess.fit
            self.trainer = Trainer(
                model,
                config,
                self.preprocess,
                fit(data.train_images),
                data.train_labels,
                fit(data.test_images),
                data.test_labels,
            )
        self.state = self.trainer.init_state()
        if self.checkpoints is not None and self.done_epochs:
            assert run_dir is not None  # checkpoints come with a run directory
            self.done_epochs, self.state = _restore_newest_intact(self.checkpoints, self.done_epochs, self.trainer,
                                                                  self.state, run_dir)  # fmt: skip
        self.metrics = [m for m in self.metrics if m["epoch"] <= self.done_epochs]
        with console.compile_notices(spec, verbose):
            compile_seconds = self.trainer.compile(self.state)
        self.record["devices"] = self.trainer.parallel.devices
        if verbose:
            streamed = ", streamed from disk" if isinstance(data, StreamingData) else ""
            print(f"{spec.name} on {data.name} ({data.source}{streamed}): {data.train_count:,} train / "
                  f"{data.test_count:,} test images, {self.trainer.steps_per_epoch} steps of "
                  f"{config.batch_size} per epoch; data {self.data_seconds:.2f} s, compile {compile_seconds:.2f} s",
                  flush=True)  # fmt: skip
        stopped_early = False
        # Signals are caught from before the staging folder exists, so Ctrl-C at any moment ends at a step
        # boundary with the message that says what was kept.
        with console.stop_requests() as stop_requested:
            hooks = [*([ProgressBar()] if progress else []),
                     *([RunWriter(run_dir, self.record, self.checkpoints)] if run_dir is not None else []),
                     *([EpochPrinter()] if verbose else []), StopOnSignal(stop_requested, run_dir),
                     *callbacks]  # fmt: skip

            def on_chunk(steps: int) -> None:
                for hook in hooks:
                    hook.on_step(steps)

            # Reporting steps waits for them to finish: only when some hook wants to hear of them.
            steps_wanted = any(type(hook).on_step is not Callback.on_step for hook in hooks)
            try:
                for hook in hooks:
                    hook.on_train_begin(self)
                for epoch in range(self.done_epochs + 1, config.epochs + 1):
                    for hook in hooks:
                        hook.on_epoch_begin(epoch)
                    self.state, result = _one_epoch(self.trainer, self.state, epoch, run_dir,
                                                    on_chunk if steps_wanted else None, stop_requested)  # fmt: skip
                    self.metrics.append(result.to_dict())
                    if any([hook.on_epoch_end(result) for hook in hooks]):  # every hook hears of the epoch
                        stopped_early = True
                        break
                for hook in hooks:
                    hook.on_train_end()
            finally:
                for hook in hooks:
                    hook.teardown()
        return RunResult(
            run_dir=run_dir,
            metrics=self.metrics,
            params=fetch(self.state.params),
            compile_seconds=compile_seconds,
            data_seconds=self.data_seconds,
            wall_seconds=time.perf_counter() - self.started,
            steps_per_epoch=self.trainer.steps_per_epoch,
            stopped_early=stopped_early,
            model_state=fetch(self.state.model_state),
        )


STREAM_ABOVE_BYTES = 4 * 2**30
"""``--data-in auto`` streams a folder of photos whose images, at the network's size, would take more than this
(or that are of many sizes): an in-memory set is copied to the device whole, and four gigabytes are a large part
of a laptop's memory or a GPU's."""


def training_data(name: str, data_dir: str | Path | None, config: TrainConfig,
                  spec: NetworkSpec) -> Dataset | StreamingData:  # fmt: skip
    """The data set ``name`` in memory or streamed from disk, as ``config.data_in`` says (``auto``: prepared
    folders and tensorflow-datasets sets prepared as ArrayRecord are streamed, class folders when their images
    have many sizes or would not fit STREAM_ABOVE_BYTES, other sets are read into memory; ``memory`` reads a
    prepared set of one image size whole)."""
    offline = resolve_data_dir(data_dir)
    stream = config.data_in == "stream" or (config.data_in == "auto" and name.startswith("prepared:"))
    if config.data_in == "auto" and name.startswith("folder:"):
        stream = _folder_needs_streaming(Path(name[len("folder:") :]).expanduser(), spec)
    elif config.data_in == "auto" and not name.startswith("prepared:") and name not in (*BUILTIN, IMPORTED):
        from jaxcnn.tfds_source import find_prepared, streaming

        found = find_prepared(name, offline)  # looked up once: streamed from it when tensorflow-datasets has it
        if found is not None:
            return streaming(found)
    return open_streaming(name, offline) if stream else load_dataset(name, data_dir)


def _folder_needs_streaming(root: Path, spec: NetworkSpec) -> bool:
    """Whether a folder of photos is better streamed: images of many sizes, or too many bytes at the network's
    size (only the files' headers are read)."""
    from PIL import Image

    from jaxcnn.images import check_image_file
    from jaxcnn.prepared import folder_files

    if not root.is_dir():
        return False  # a tar archive, or a mistake: the in-memory reader says which
    files = folder_files(root)
    sizes = set()
    for _, _, path in files:
        try:
            check_image_file(path)  # not a FIFO (which would block), a device or a huge file
            with Image.open(path) as image:
                sizes.add(image.size)
        except (DataError, OSError, ValueError):
            return False  # the in-memory reader names the file
        if len(sizes) > 1:
            return True
    return len(files) * element_count(spec.input_shape) > STREAM_ABOVE_BYTES


def _preprocess(data: Dataset | StreamingData, spec: NetworkSpec, *, pad: bool, grey_to_rgb: bool,
                normalize: bool, workers: int, verbose: bool) -> Preprocess:  # fmt: skip
    """How the images become the network's input; streamed images come at its size and channels already, and are
    normalised with figures measured on (at most NORMALIZE_SAMPLE of) them."""
    if isinstance(data, Dataset):
        return plan_preprocess(data, spec.input_shape, pad=pad, grey_to_rgb=grey_to_rgb, normalize=normalize)
    if not normalize:
        return Preprocess()
    if verbose:
        print(f"--normalize: measuring the mean and deviation of {min(data.train_count, NORMALIZE_SAMPLE):,} "
              "training images", flush=True)  # fmt: skip
    return measured_normalization(data, spec.input_shape, workers)  # type: ignore[arg-type]  # H x W x C


def _restore_newest_intact(
    checkpoints: Checkpoints, latest: int, trainer: Trainer | StreamTrainer, like: TrainState, run_dir: Path
) -> tuple[int, TrainState]:
    """The newest checkpoint at or before ``latest`` that reads back intact.

    A damaged newer one is moved to ``RUN/damaged-checkpoints/`` (kept, not deleted) so that its
    epochs can be trained and saved again.
    """
    from jaxcnn.checkpoint import DamagedCheckpointError

    candidates = [e for e in reversed(checkpoints.epochs()) if e <= latest]
    for epoch in candidates:
        try:
            params, model_state = checkpoints.restore_params(epoch)
            check_spec_matches(trainer.model, params, run_dir, epoch, model_state)
            restored = checkpoints.restore(epoch, like.checkpoint_tree())
        except DamagedCheckpointError as err:
            print(f"warning: {err}", file=sys.stderr, flush=True)
            older = [e for e in candidates if e < epoch]
            if not older:
                raise RunError(
                    f"{run_dir}: no intact checkpoint is left to resume from; restore the checkpoints folder from a "
                    "copy, or start the run again with --overwrite"
                ) from None
            kept = checkpoints.set_aside(epoch, run_dir / "damaged-checkpoints")
            print(f"note: resuming from epoch {older[0]}, the newest intact checkpoint; the damaged one is moved to "
                  f"{kept} and its epochs are trained again", file=sys.stderr, flush=True)  # fmt: skip
            continue
        return epoch, trainer.place(TrainState(**restored))
    raise RunError(f"{run_dir}: holds no checkpoint at or before epoch {latest}")


def _one_epoch(
    trainer: Trainer | StreamTrainer,
    state: TrainState,
    epoch: int,
    run_dir: Path | None,
    on_chunk: Callable[[int], None] | None,
    stop_requested: Callable[[], bool],
) -> tuple[TrainState, EpochResult]:
    """Train one epoch and test it; stop on a signal (resumable) or a non-finite loss."""
    config = trainer.config
    epoch_start = time.perf_counter()
    try:
        state, train_loss, train_acc = trainer.run_epoch(state, epoch, on_chunk, stop_requested)
    except EpochInterruptedError as stop:
        raise TrainingInterruptedError(_resume_hint(stop, run_dir, epoch - 1)) from None
    seconds = time.perf_counter() - epoch_start
    if not math.isfinite(train_loss):
        kept = f", keeping the checkpoints of epochs 1-{epoch - 1} in {run_dir}" if run_dir and epoch > 1 else ""
        raise TrainingDivergedError(
            f"the training loss became {train_loss} in epoch {epoch}; stopped{kept}. The usual cause is a "
            f"learning rate too high for this network (now {config.lr}): try --lr {config.lr / 10:g}, a warm-up "
            "(--warmup-epochs 1) or --schedule onecycle"
        )
    eval_start = time.perf_counter()
    test_loss, test_acc, _ = trainer.evaluate(state.params, state.model_state)
    averaged = average_params(config, state.opt_state)
    ema_loss, ema_acc, _ = trainer.evaluate(averaged, state.model_state) if averaged is not None else (None, None, None)
    return state, EpochResult(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_acc,
        test_loss=test_loss,
        test_accuracy=test_acc,
        seconds=seconds,
        images_per_second=trainer.steps_per_epoch * config.batch_size / seconds,
        eval_seconds=time.perf_counter() - eval_start,
        test_loss_ema=ema_loss,
        test_accuracy_ema=ema_acc,
        data_wait_seconds=getattr(trainer, "data_wait_seconds", None),
    )
