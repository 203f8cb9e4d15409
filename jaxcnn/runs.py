"""Run directories: train into one, resume one, load one for prediction.

A run directory holds ``config.json`` (spec, data set, preprocessing, hyperparameters, library
versions, devices), ``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (orbax: the latest
and the best epoch) and ``curves.png``. Files are written to a temporary name and renamed, so
a crash never leaves half a file, and an existing run is never replaced without ``overwrite``.
Everything that can fail (spec, data, compilation) is checked before the directory is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxcnn.data import Dataset, Preprocess, load_dataset, plan_preprocess
from jaxcnn.model import Model, Params
from jaxcnn.parallel import fetch
from jaxcnn.spec import NetworkSpec, load_spec, parse_spec
from jaxcnn.train import EpochInterruptedError, EpochResult, TrainConfig, Trainer, TrainState

if TYPE_CHECKING:
    from jaxcnn.checkpoint import Checkpoints

RUN_FORMAT = "jaxcnn.run/1"
PREDICT_BATCH = 1000


class RunError(Exception):
    """A run directory that cannot be created, resumed or loaded; the message says what to do."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: all or nothing."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("jaxcnn", "jax", "jaxlib", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _checkpoints(run_dir: Path, *, create: bool = True) -> Checkpoints:
    """The run's ``checkpoints/`` folder. orbax is imported here, not with this module: it takes
    about 0.5 s, which a run that keeps nothing on disk (``out=None``) should not pay."""
    from jaxcnn.checkpoint import Checkpoints

    return Checkpoints(run_dir / "checkpoints", create=create)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json``, or a RunError saying what is wrong."""
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{run_dir}: not a jaxcnn run directory (no config.json)") from None
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: unreadable ({err}); the run cannot be resumed or loaded") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise RunError(f"{path}: not a {RUN_FORMAT} config")
    return config


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every epoch's metrics recorded so far (an absent file is an empty list)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: unreadable ({err}); jaxcnn writes it whole, so it was changed from outside") from None


def write_metrics(run_dir: Path, metrics: list[dict[str, float]]) -> None:
    """Rewrite ``metrics.jsonl`` whole (one JSON line per epoch), atomically."""
    write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def spec_from_config(config: dict[str, Any], run_dir: Path) -> NetworkSpec:
    return parse_spec(config["spec"], f"{run_dir / 'config.json'}: spec")


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

    @property
    def best_test_accuracy(self) -> float:
        return max((m["test_accuracy"] for m in self.metrics), default=0.0)


def _print_epoch(result: EpochResult, epochs: int) -> None:
    print(
        f"epoch {result.epoch:>3}/{epochs}  train loss {result.train_loss:.4f} acc {100 * result.train_accuracy:6.2f}%"
        f"  test loss {result.test_loss:.4f} acc {100 * result.test_accuracy:6.2f}%"
        f"  {result.seconds:6.2f} s  {result.images_per_second:>9,.0f} img/s",
        flush=True,
    )


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
) -> RunResult:
    """Train ``spec`` on ``dataset`` into the run directory ``out`` (None: keep nothing on disk).

    ``stop_at_accuracy`` ends the run after the first epoch whose test accuracy reaches it;
    ``stop_after_epochs`` ends this session after that many epochs, leaving the run resumable
    with :func:`resume_run` exactly as if it had been interrupted.
    """
    started = time.perf_counter()
    run_dir = Path(out) if out is not None else None
    if run_dir is not None and jax.process_count() > 1:
        raise RunError(
            f"{run_dir}: writing a run directory from {jax.process_count()} processes is not supported yet "
            "(checkpoints would need a shared file system); train with out=None, see experiments/multi_process.py"
        )
    if run_dir is not None and run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise RunError(
            f"{run_dir}: already exists and is not empty. Pass --resume {run_dir} to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    if not isinstance(spec, NetworkSpec):
        spec = load_spec(spec)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    preprocess = plan_preprocess(data, spec.input_shape, pad=pad, grey_to_rgb=grey_to_rgb, normalize=normalize)
    _check_classes(spec, data)
    data_seconds = time.perf_counter() - started
    record = {
        "format": RUN_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.document,
        "spec_source": spec.source,
        "dataset": {
            "name": data.name,
            "source": data.source,
            "class_names": list(data.class_names),
            "image_shape": list(data.image_shape),
            "train_count": len(data.train_images),
            "test_count": len(data.test_images),
        },
        "preprocess": preprocess.to_dict(),
        "train": config.to_dict(),
        "versions": _versions(),
        "command": sys.argv,
    }
    stops = _Stops(stop_at_accuracy, stop_after_epochs, on_epoch)
    return _run(spec, data, preprocess, config, run_dir, record, 0, [], None, progress, verbose, stops, started,
                data_seconds, overwrite)  # fmt: skip


def resume_run(
    out: str | Path,
    *,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> RunResult:
    """Continue the run in ``out`` from its latest complete checkpoint, up to ``epochs`` (default: as configured).

    The continued run's final parameters equal those of an uninterrupted run with the same seed.
    ``dataset`` passes the data in memory instead of loading the recorded data set by name.
    """
    started = time.perf_counter()
    run_dir = Path(out)
    record = read_config(run_dir)
    spec = spec_from_config(record, run_dir)
    train = dict(record["train"])
    if epochs is not None:
        train["epochs"] = epochs
    config = TrainConfig.from_dict(train)
    record["train"] = config.to_dict()
    data = dataset if dataset is not None else load_dataset(record["dataset"]["name"], data_dir)
    preprocess = Preprocess.from_dict(record["preprocess"])
    data_seconds = time.perf_counter() - started
    checkpoints = _checkpoints(run_dir)
    latest = checkpoints.latest_epoch()
    metrics = [m for m in read_metrics(run_dir) if latest is not None and m["epoch"] <= latest]
    return _run(spec, data, preprocess, config, run_dir, record, latest or 0, metrics, checkpoints, progress,
                verbose, _Stops(), started, data_seconds, False)  # fmt: skip


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
    return f"{where} and no epoch was complete yet: start it again (with --overwrite) to train it"


@contextlib.contextmanager
def _stop_requests() -> Iterator[Callable[[], bool]]:
    """Turn SIGINT (Ctrl-C) and SIGTERM into a request that the loop polls after each step.

    The first signal lets the current step finish; a second Ctrl-C interrupts at once. Outside
    the main thread (where handlers cannot be installed) nothing changes.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class _Stops:
    """When a training session ends before its last epoch, and who hears about each epoch."""

    at_accuracy: float | None = None
    after_epochs: int | None = None
    on_epoch: Callable[[EpochResult], None] | None = None

    def after(self, result: EpochResult, epochs_this_session: int) -> bool:
        reached = self.at_accuracy is not None and result.test_accuracy >= self.at_accuracy
        return reached or (self.after_epochs is not None and epochs_this_session >= self.after_epochs)


def _check_classes(spec: NetworkSpec, data: Dataset) -> None:
    if spec.output_shape != (data.num_classes,):
        raise RunError(
            f"{spec.source}: the network ends in {'x'.join(map(str, spec.output_shape))} outputs but {data.name} has "
            f"{data.num_classes} classes; make the last layer a dense layer of {data.num_classes} units"
        )


def _run(
    spec: NetworkSpec,
    data: Dataset,
    preprocess: Preprocess,
    config: TrainConfig,
    run_dir: Path | None,
    record: dict[str, Any],
    done_epochs: int,
    metrics: list[dict[str, float]],
    checkpoints: Checkpoints | None,
    progress: bool,
    verbose: bool,
    stops: _Stops,
    started: float,
    data_seconds: float,
    overwrite: bool,
) -> RunResult:
    model = Model(spec)
    trainer = Trainer(
        model,
        config,
        preprocess,
        preprocess.fit(data.train_images),
        data.train_labels,
        preprocess.fit(data.test_images),
        data.test_labels,
    )
    state = trainer.init_state()
    if checkpoints is not None and done_epochs:
        restored = checkpoints.restore(done_epochs, state._asdict())
        state = trainer.place(TrainState(**restored))
    compile_seconds = trainer.compile(state)
    record["devices"] = trainer.parallel.devices
    if verbose:
        print(
            f"{spec.name} on {data.name} ({data.source}): {len(data.train_images):,} train / "
            f"{len(data.test_images):,} test images, {trainer.steps_per_epoch} steps of {config.batch_size} "
            f"per epoch; data {data_seconds:.2f} s, compile {compile_seconds:.2f} s",
            flush=True,
        )
    if run_dir is not None:
        _prepare_run_dir(run_dir, record, metrics, replace_existing=overwrite)
        if checkpoints is None:
            checkpoints = _checkpoints(run_dir)
    stopped_early = False
    with _stop_requests() as stop_requested:
        for epoch in range(done_epochs + 1, config.epochs + 1):
            state, result = _one_epoch(trainer, state, epoch, run_dir, progress, stop_requested)
            metrics.append(result.to_dict())
            if run_dir is not None and checkpoints is not None:
                # Metrics first: a crash between the two leaves a row ahead of the checkpoints,
                # which resume_run drops and trains again, never a checkpoint without its row.
                write_metrics(run_dir, metrics)
                checkpoints.save(epoch, state._asdict(), {"test_accuracy": result.test_accuracy})
            if verbose:
                _print_epoch(result, config.epochs)
            if stop_requested():  # the signal came while testing or saving: the epoch is complete
                where = f", which is saved; continue with: jaxcnn train --resume {run_dir}" if run_dir else ""
                raise TrainingInterruptedError(f"interrupted after epoch {epoch}{where}")
            if stops.on_epoch is not None:
                stops.on_epoch(result)
            if stops.after(result, epoch - done_epochs):
                stopped_early = True
                break
    if run_dir is not None and metrics:
        from jaxcnn.plots import plot_curves

        plot_curves(metrics, run_dir / "curves.png", f"{spec.name} on {data.name}")
    params = fetch(state.params)
    return RunResult(
        run_dir=run_dir,
        metrics=metrics,
        params=params,
        compile_seconds=compile_seconds,
        data_seconds=data_seconds,
        wall_seconds=time.perf_counter() - started,
        steps_per_epoch=trainer.steps_per_epoch,
        stopped_early=stopped_early,
    )


def _prepare_run_dir(
    run_dir: Path, record: dict[str, Any], metrics: list[dict[str, float]], replace_existing: bool
) -> None:
    """Write config.json and metrics.jsonl; with ``replace_existing``, swap out the old run safely.

    The old run is renamed aside first and deleted only once the new files are written, so a
    failure (a read-only or full disk) puts it back as it was.
    """
    aside = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
    moved = False
    try:
        if replace_existing and run_dir.exists():
            os.replace(run_dir, aside)
            moved = True
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.json", json.dumps(record, indent=2) + "\n")
        write_metrics(run_dir, metrics)
    except OSError as err:
        if moved:
            shutil.rmtree(run_dir, ignore_errors=True)
            os.replace(aside, run_dir)
        where = err.filename or run_dir
        raise RunError(
            f"{where}: cannot write the run ({err.strerror}); choose a writable --out or free some space. "
            "Nothing that existed before was changed"
        ) from None
    if moved:
        shutil.rmtree(aside, ignore_errors=True)


def _one_epoch(
    trainer: Trainer,
    state: TrainState,
    epoch: int,
    run_dir: Path | None,
    progress: bool,
    stop_requested: Callable[[], bool],
) -> tuple[TrainState, EpochResult]:
    """Train one epoch and test it; stop on a signal (resumable) or a non-finite loss."""
    config = trainer.config
    epoch_start = time.perf_counter()
    bar = _progress_bar(progress, trainer.steps_per_epoch, f"epoch {epoch}/{config.epochs}")
    try:
        state, train_loss, train_acc = trainer.run_epoch(state, epoch, bar.update if bar else None, stop_requested)
    except EpochInterruptedError as stop:
        raise TrainingInterruptedError(_resume_hint(stop, run_dir, epoch - 1)) from None
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - epoch_start
    if not math.isfinite(train_loss):
        kept = f", keeping the checkpoints of epochs 1-{epoch - 1} in {run_dir}" if run_dir and epoch > 1 else ""
        raise TrainingDivergedError(
            f"the training loss became {train_loss} in epoch {epoch}; stopped{kept}. The usual cause is a "
            f"learning rate too high for this network (now {config.lr}): try --lr {config.lr / 10:g}, a warm-up "
            "(--warmup-epochs 1) or --schedule onecycle"
        )
    eval_start = time.perf_counter()
    test_loss, test_acc, _ = trainer.evaluate(state.params)
    return state, EpochResult(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_acc,
        test_loss=test_loss,
        test_accuracy=test_acc,
        seconds=seconds,
        images_per_second=trainer.steps_per_epoch * config.batch_size / seconds,
        eval_seconds=time.perf_counter() - eval_start,
    )


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)


class Run:
    """A trained run loaded for use: ``model``, ``params`` (best epoch), ``class_names``, ``predict``."""

    def __init__(self, run_dir: str | Path, which: str = "best") -> None:
        self.run_dir = Path(run_dir)
        self.config = read_config(self.run_dir)
        self.model = Model(spec_from_config(self.config, self.run_dir))
        self.class_names: tuple[str, ...] = tuple(self.config["dataset"]["class_names"])
        self.preprocess = Preprocess.from_dict(self.config["preprocess"])
        self.image_shape = tuple(self.config["dataset"]["image_shape"])
        checkpoints = _checkpoints(self.run_dir, create=False)
        epoch = checkpoints.best_epoch() if which == "best" else checkpoints.latest_epoch()
        if epoch is None:
            raise RunError(f"{self.run_dir}: has no complete checkpoint yet; train it (or resume it) first")
        self.epoch = epoch
        self.params: Params = checkpoints.restore_params(epoch)
        self.model.check_params(self.params)
        self._predict = jax.jit(lambda p, x: self.model.predict(p, self.preprocess.to_float(x)))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for uint8 NHWC images of the spec's input shape.

        Images of the data set's original shape are accepted too when the run padded or
        converted them (for example 28x28x1 digits for a 32x32x3 spec). Any N: large batches are
        computed in slices of PREDICT_BATCH images.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"predict takes uint8 images (0-255); got dtype {images.dtype}")
        if images.ndim == 4 and images.shape[1:] == self.image_shape:
            images = self.preprocess.fit(images)
        if images.ndim != 4 or images.shape[1:] != self.model.input_shape:
            raise ValueError(
                f"predict takes a batch of uint8 images of shape (N, {', '.join(map(str, self.model.input_shape))}); "
                f"got {images.shape}"
            )
        # In slices of PREDICT_BATCH: any number of images, bounded memory, at most two compilations.
        parts = [
            self._predict(self.params, images[i : i + PREDICT_BATCH]) for i in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros((0, *self.model.output_shape))


def load_run(run_dir: str | Path, which: str = "best") -> Run:
    """Load a trained run directory: ``load_run(RUN).predict(images)`` gives class probabilities."""
    return Run(run_dir, which)
