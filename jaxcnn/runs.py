"""Run directories: train into one, resume one, load one for prediction.

A run directory holds ``config.json`` (spec, data set, preprocessing, hyperparameters, library
versions, devices), ``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (orbax: the latest
and the best epoch) and ``curves.png``. Files are written to a temporary name and renamed, so
a crash never leaves half a file, and an existing run is never replaced without ``overwrite``.
Everything that can fail (spec, data, compilation) is checked before the directory is touched;
:mod:`jaxcnn.run_folder` keeps one writer per run and stages a new run until its first epoch is saved.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxcnn.data import DATA_DIR_ENV, Dataset, load_dataset, resolve_data_dir
from jaxcnn.files import written_whole
from jaxcnn.layer_types import LAYER_TYPES, PROVIDERS
from jaxcnn.memory import check_fits, element_count
from jaxcnn.model import Model, Params, State, check_uint8_images
from jaxcnn.parallel import fetch
from jaxcnn.preprocess import Preprocess, plan_preprocess
from jaxcnn.run_folder import RUN_FORMAT, RunError, RunLock, StagedRun, absolute, finish_interrupted_writes
from jaxcnn.spec import LAYER_MODULES_ENV, NetworkSpec, load_spec, parse_spec
from jaxcnn.train import EpochInterruptedError, EpochResult, TrainConfig, Trainer, TrainState, average_params

if TYPE_CHECKING:
    from jaxcnn.checkpoint import Checkpoints

PREDICT_BATCH = 1000


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: all or nothing."""
    with written_whole(path) as temporary:
        temporary.write_text(text)


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
    _check_config_fields(config, path)
    return config


_CONFIG_FIELDS: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("spec", "", dict),
    ("dataset", "", dict),
    ("dataset", "name", str),
    ("dataset", "class_names", list),
    ("dataset", "image_shape", list),
    ("preprocess", "", dict),
    ("train", "", dict),
)


def _check_config_fields(config: dict[str, Any], path: Path) -> None:
    """The fields jaxcnn reads from a run's config.json are there and of the right kind (it may be hand-edited)."""
    for key, sub, kind in _CONFIG_FIELDS:
        value = config.get(key) if not sub else config[key].get(sub)
        if not isinstance(value, kind):
            field = f"{key}.{sub}" if sub else key
            found = "missing" if value is None else f"a {type(value).__name__}"
            raise RunError(
                f"{path}: field '{field}' is {found}, expected a {getattr(kind, '__name__', kind)}; config.json was "
                "edited by hand or by another program: restore it from a copy"
            )
    names, shape = config["dataset"]["class_names"], config["dataset"]["image_shape"]
    if not all(isinstance(n, str) for n in names) or not (len(shape) == 3 and all(isinstance(n, int) for n in shape)):
        raise RunError(f"{path}: 'dataset.class_names' must be strings and 'dataset.image_shape' three integers")


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every epoch's metrics recorded so far (an absent file is an empty list)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: unreadable ({err}); jaxcnn writes it whole, so it was changed from outside") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            row, problem = None, f"not JSON ({err})"
        else:
            problem = "not a metrics row (an object with an integer 'epoch' and numbers)"
        ok = isinstance(row, dict) and isinstance(row.get("epoch"), int)
        if not ok or not all(isinstance(v, (int, float)) for v in row.values()):
            raise RunError(
                f"{path}, line {number}: {problem}; jaxcnn writes this file whole, so it was changed from outside: "
                "restore it from a copy"
            )
        rows.append(row)
    return rows


def run_data_dir(config: dict[str, Any], data_dir: str | Path | None) -> str | Path | None:
    """Where a run's data set is found: ``data_dir`` if given, else ``$JAXCNN_DATA_DIR``, else the offline
    folder the run was trained from while it still exists, else None (tensorflow-datasets downloads it)."""
    if data_dir not in (None, "") or os.environ.get(DATA_DIR_ENV):
        return data_dir
    recorded = config["dataset"].get("data_dir")
    return recorded if isinstance(recorded, str) and Path(recorded).is_dir() else None


def write_metrics(run_dir: Path, metrics: list[dict[str, float]]) -> None:
    """Rewrite ``metrics.jsonl`` whole (one JSON line per epoch), atomically."""
    write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def layer_modules(spec: NetworkSpec) -> dict[str, str]:
    """The modules outside jaxcnn that registered the layer types ``spec`` uses (recorded in the run, so that
    loading it can say what to import)."""
    return {layer.type: PROVIDERS[layer.type] for layer in spec.layers
            if not PROVIDERS[layer.type].startswith("jaxcnn.")}  # fmt: skip


def spec_from_config(config: dict[str, Any], run_dir: Path) -> NetworkSpec:
    """The run's network, checked against the run's class names (one output per class)."""
    providers = config.get("layer_modules", {})
    missing = {kind: module for kind, module in providers.items() if kind not in LAYER_TYPES}
    if missing:
        kind, module = next(iter(missing.items()))
        raise RunError(f"{run_dir}: the run's network uses the layer type {kind!r}, which the module {module!r} "
                       f"registers; import {module} first (jaxcnn command: {LAYER_MODULES_ENV}={module})")  # fmt: skip
    spec = parse_spec(config["spec"], f"{run_dir / 'config.json'}: spec")
    classes = len(config["dataset"]["class_names"])
    if spec.output_shape != (classes,):
        raise RunError(
            f"{run_dir / 'config.json'}: the network has {'x'.join(map(str, spec.output_shape))} outputs but "
            f"'dataset.class_names' lists {classes} classes; config.json was edited: restore it from a copy"
        )
    return spec


def check_spec_matches(model: Model, params: Params, run_dir: Path, epoch: int, state: State | None = None) -> None:
    """A RunError when the checkpoint's weights (and state) do not fit the spec recorded in config.json."""
    try:
        model.check_params(params)
        model.check_state(state)
    except ValueError as err:
        raise RunError(
            f"{run_dir / 'config.json'}: its spec does not match the checkpoint of epoch {epoch}: {err}. The spec "
            "in config.json was changed after training; restore config.json from a copy"
        ) from None


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


def _print_epoch(result: EpochResult, epochs: int) -> None:
    print(
        f"epoch {result.epoch:>3}/{epochs}  train loss {result.train_loss:.4f} acc {100 * result.train_accuracy:6.2f}%"
        f"  test loss {result.test_loss:.4f} acc {100 * result.test_accuracy:6.2f}%"
        f"  {result.seconds:6.2f} s  {result.images_per_second:>9,.0f} img/s"
        + (f"  EMA acc {100 * result.test_accuracy_ema:6.2f}%" if result.test_accuracy_ema is not None else ""),
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
    if run_dir is not None:
        check_out(run_dir, overwrite)
    if not isinstance(spec, NetworkSpec):
        spec = load_spec(spec)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    offline = None if isinstance(dataset, Dataset) else resolve_data_dir(data_dir)
    preprocess = plan_preprocess(data, spec.input_shape, pad=pad, grey_to_rgb=grey_to_rgb, normalize=normalize)
    _check_classes(spec, data)
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
            "image_shape": list(data.image_shape),
            "train_count": len(data.train_images),
            "test_count": len(data.test_images),
        },
        "preprocess": preprocess.to_dict(),
        "layer_modules": layer_modules(spec),
        "train": config.to_dict(),
        "versions": _versions(),
        "command": sys.argv,
    }
    stops = _Stops(stop_at_accuracy, stop_after_epochs, on_epoch)
    with _writing(run_dir):
        if run_dir is not None:
            check_out(run_dir, overwrite)  # again, now that no one else can be writing it
        session = _Session(spec, data, preprocess, config, run_dir, record, progress, verbose, stops, started,
                           data_seconds)  # fmt: skip
        return _run(session, 0, [], None)


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
    record = read_config(run_dir)  # a clear error for a folder that is not a run, before anything is created
    _check_epochs_left(run_dir, epochs if epochs is not None else record["train"].get("epochs"))
    with _writing(run_dir):
        return _resume_locked(run_dir, started, epochs, data_dir, dataset, progress, verbose)


class NothingToResumeError(RunError):
    """``--resume`` asked for no more epochs than the run already has: nothing was loaded or changed."""


def _check_epochs_left(run_dir: Path, total: object) -> None:
    """Raise NothingToResumeError when the run's latest checkpoint already reaches ``total`` epochs; before
    the data is loaded or anything compiled."""
    if not isinstance(total, int) or total < 1 or not (run_dir / "checkpoints").is_dir():
        return  # the resume itself reports these
    from jaxcnn.checkpoint import DamagedCheckpointError

    checkpoints = _checkpoints(run_dir, create=False)
    try:
        done = checkpoints.latest_epoch()
        if done is None or done < total:
            return
        checkpoints.restore_params(done)  # a damaged one is not done: resuming falls back and trains it again
    except DamagedCheckpointError:
        return
    finally:
        checkpoints.close()
    further = f"--epochs N with N above {done} trains further"
    if done == total:
        raise NothingToResumeError(f"{run_dir} already has its {done} epochs; nothing was done ({further})")
    raise NothingToResumeError(f"{run_dir} already has {done} epochs; --epochs {total} is the total to reach, not a "
                               f"number to add, so nothing was done ({further})")  # fmt: skip


def _resume_locked(
    run_dir: Path,
    started: float,
    epochs: int | None,
    data_dir: str | Path | None,
    dataset: Dataset | None,
    progress: bool,
    verbose: bool,
) -> RunResult:
    record = read_config(run_dir)
    spec = spec_from_config(record, run_dir)
    train = dict(record["train"])
    if epochs is not None:
        train["epochs"] = epochs
    config = TrainConfig.from_dict(train)
    record["train"] = config.to_dict()
    data = dataset if dataset is not None else load_dataset(record["dataset"]["name"], run_data_dir(record, data_dir))
    preprocess = Preprocess.from_dict(record["preprocess"])
    data_seconds = time.perf_counter() - started
    metrics = read_metrics(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise RunError(
            f"{run_dir / 'checkpoints'}: missing, so there is no epoch to resume from "
            f"(metrics.jsonl records {len(metrics)}). Nothing was changed; to train this network again from "
            f"epoch 1, start a new run: jaxcnn train SPEC --out {run_dir} --overwrite (with the same settings)"
        )
    checkpoints = _checkpoints(run_dir, create=False)
    latest = checkpoints.latest_epoch()
    if latest is None:
        raise RunError(
            f"{run_dir / 'checkpoints'}: holds no complete checkpoint, so there is no epoch to resume from. "
            f"Nothing was changed; start the run again: jaxcnn train SPEC --out {run_dir} --overwrite"
        )
    session = _Session(spec, data, preprocess, config, run_dir, record, progress, verbose, _Stops(), started,
                       data_seconds)  # fmt: skip
    return _run(session, latest, metrics, checkpoints)


@contextlib.contextmanager
def _writing(run_dir: Path | None) -> Iterator[None]:
    """Hold ``run_dir``'s lock (nothing without a run directory) and finish what a killed writer left."""
    if run_dir is None:
        yield
        return
    with RunLock(run_dir):
        for note in finish_interrupted_writes(run_dir):
            print(f"note: {note}", file=sys.stderr, flush=True)
        yield


def check_out(run_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, an existing run without ``overwrite``, or, even with it, anything
    that is not a jaxcnn run (``--overwrite`` must never empty a folder of someone's files)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: is a file, not a folder; choose another --out for the run")
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise RunError(
            f"{run_dir}: already exists and is not empty. Pass --resume {run_dir} to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    try:
        read_config(run_dir)
    except RunError as err:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise RunError(
            f"{run_dir}: --overwrite replaces only a jaxcnn run, and this folder is not one ({err}); it holds "
            f"{shown}. Nothing was changed: choose another --out"
        ) from None
    here, target = absolute(Path.cwd()), absolute(run_dir)
    if here == target or target in here.parents:
        raise RunError(
            f"{run_dir}: --overwrite would replace the folder you are working in ({here}); "
            f"cd to another folder and give --out {target}"
        )


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


COMPILE_NOTICE_SECONDS = 10.0
"""After this long, a compilation still running is reported (and then again every minute)."""


@contextlib.contextmanager
def _compile_ticker(spec: NetworkSpec, enabled: bool) -> Iterator[None]:
    """Say that XLA is still compiling, with the elapsed time, so a deep network does not look hung."""
    done = threading.Event()

    def tick() -> None:
        start, wait = time.perf_counter(), COMPILE_NOTICE_SECONDS
        while not done.wait(wait):
            print(f"compiling {spec.name} ({len(spec.layers)} layers): {time.perf_counter() - start:.0f} s so far; "
                  "compile time grows with depth", file=sys.stderr, flush=True)  # fmt: skip
            wait = 60.0

    ticker = threading.Thread(target=tick, name="jaxcnn-compile-ticker", daemon=True) if enabled else None
    if ticker is not None:
        ticker.start()
    try:
        yield
    finally:
        done.set()


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


@dataclass
class _Session:
    """One training session's inputs: what to train, where to write it, and when to stop."""

    spec: NetworkSpec
    data: Dataset
    preprocess: Preprocess
    config: TrainConfig
    run_dir: Path | None
    record: dict[str, Any]
    progress: bool
    verbose: bool
    stops: _Stops
    started: float
    data_seconds: float


def _run(
    session: _Session, done_epochs: int, metrics: list[dict[str, float]], checkpoints: Checkpoints | None
) -> RunResult:
    spec, data, config, run_dir = session.spec, session.data, session.config, session.run_dir
    model = Model(spec)
    # Before padding or converting the images (which allocates them anew at the spec's size).
    fitted_bytes = (len(data.train_images) + len(data.test_images)) * element_count(spec.input_shape)
    check_fits(spec, config.batch_size, fitted_bytes)
    trainer = Trainer(
        model,
        config,
        session.preprocess,
        session.preprocess.fit(data.train_images),
        data.train_labels,
        session.preprocess.fit(data.test_images),
        data.test_labels,
    )
    state = trainer.init_state()
    if checkpoints is not None and done_epochs:
        assert run_dir is not None  # checkpoints come with a run directory
        done_epochs, state = _restore_newest_intact(checkpoints, done_epochs, trainer, state, run_dir)
    metrics = [m for m in metrics if m["epoch"] <= done_epochs]
    with _compile_ticker(spec, session.verbose):
        compile_seconds = trainer.compile(state)
    session.record["devices"] = trainer.parallel.devices
    if session.verbose:
        print(
            f"{spec.name} on {data.name} ({data.source}): {len(data.train_images):,} train / "
            f"{len(data.test_images):,} test images, {trainer.steps_per_epoch} steps of {config.batch_size} "
            f"per epoch; data {session.data_seconds:.2f} s, compile {compile_seconds:.2f} s",
            flush=True,
        )
    staged = None
    write_dir = run_dir
    stopped_early = False
    # Signals are caught from before the staging folder exists, so Ctrl-C at any moment ends at a step
    # boundary with the message that says what was kept.
    with _stop_requests() as stop_requested:
        try:
            if run_dir is not None and checkpoints is None:
                staged = StagedRun(run_dir)
                write_dir = _prepare_run_dir(staged, session.record, metrics)
                checkpoints = _checkpoints(write_dir)
            for epoch in range(done_epochs + 1, config.epochs + 1):
                state, result = _one_epoch(trainer, state, epoch, run_dir, session.progress, stop_requested)
                metrics.append(result.to_dict())
                if write_dir is not None and checkpoints is not None:
                    # Metrics first: a crash between the two leaves a row ahead of the checkpoints,
                    # which resume_run drops and trains again, never a checkpoint without its row.
                    write_metrics(write_dir, metrics)
                    checkpoints.save(epoch, state.checkpoint_tree(), {"test_accuracy": result.test_accuracy})
                if staged is not None and not staged.published and checkpoints is not None and run_dir is not None:
                    checkpoints.close()
                    staged.publish()  # the first epoch is saved: the new run takes the place of any old one
                    write_dir, checkpoints = run_dir, _checkpoints(run_dir)
                if session.verbose:
                    _print_epoch(result, config.epochs)
                if stop_requested():  # the signal came while testing or saving: the epoch is complete
                    where = f", which is saved; continue with: jaxcnn train --resume {run_dir}" if run_dir else ""
                    raise TrainingInterruptedError(f"interrupted after epoch {epoch}{where}")
                if session.stops.on_epoch is not None:
                    session.stops.on_epoch(result)
                if session.stops.after(result, epoch - done_epochs):
                    stopped_early = True
                    break
        finally:
            if staged is not None:
                staged.discard()  # nothing, once published; else the unfinished first epoch
    if run_dir is not None and metrics:
        from jaxcnn.plots import plot_curves

        plot_curves(metrics, run_dir / "curves.png", f"{spec.name} on {data.name}")
    params = fetch(state.params)
    return RunResult(
        run_dir=run_dir,
        metrics=metrics,
        params=params,
        compile_seconds=compile_seconds,
        data_seconds=session.data_seconds,
        wall_seconds=time.perf_counter() - session.started,
        steps_per_epoch=trainer.steps_per_epoch,
        stopped_early=stopped_early,
        model_state=fetch(state.model_state),
    )


def _restore_newest_intact(
    checkpoints: Checkpoints, latest: int, trainer: Trainer, like: TrainState, run_dir: Path
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


def _prepare_run_dir(staged: StagedRun, record: dict[str, Any], metrics: list[dict[str, float]]) -> Path:
    """Create the staging folder of a new run with its config.json and metrics.jsonl; returns it."""
    try:
        folder = staged.create()
        write_atomic(folder / "config.json", json.dumps(record, indent=2) + "\n")
        write_metrics(folder, metrics)
    except OSError as err:
        staged.discard()
        where = err.filename or staged.run_dir
        raise RunError(
            f"{where}: cannot write the run ({err.strerror}); choose a writable --out or free some space. "
            "Nothing that existed before was changed"
        ) from None
    return folder


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
    )


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)


class Run:
    """A trained run loaded for use: ``model``, ``params`` and ``state`` (best epoch), ``class_names``,
    ``predict``. ``state`` is the network's batch-norm statistics (``{}`` for most networks)."""

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
        self.params: Params
        self.state: State
        self.params, self.state = checkpoints.restore_params(epoch)
        check_spec_matches(self.model, self.params, self.run_dir, epoch, self.state)
        self.tta = bool(self.config["train"].get("tta", False))
        self._predict = jax.jit(self._probabilities)

    def _probabilities(self, params: Params, state: State, images: jax.Array) -> jax.Array:
        """The network's output for uint8 images; with the run's ``tta``, averaged with the mirror images'."""
        out = self.model.predict(params, self.preprocess.to_float(images), state)
        if self.tta:
            out = (out + self.model.predict(params, self.preprocess.to_float(images[:, :, ::-1, :]), state)) / 2
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for uint8 NHWC images of the spec's input shape.

        Images of the data set's original shape are accepted too when the run padded or
        converted them (for example 28x28x1 digits for a 32x32x3 spec). Any N: large batches are
        computed in slices of PREDICT_BATCH images.
        """
        images = check_uint8_images(images, str(self.run_dir), self.model.input_shape, self.image_shape)
        if images.shape[1:] != self.model.input_shape:
            images = self.preprocess.fit(images)
        # In slices of PREDICT_BATCH: any number of images, bounded memory, at most two compilations.
        parts = [
            self._predict(self.params, self.state, images[i : i + PREDICT_BATCH])
            for i in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros((0, *self.model.output_shape))


def load_run(run_dir: str | Path, which: str = "best") -> Run:
    """Load a trained run directory: ``load_run(RUN).predict(images)`` gives class probabilities."""
    return Run(run_dir, which)
