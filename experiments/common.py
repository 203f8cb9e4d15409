"""Shared bits of the experiment scripts: argument parsing, smoke subsets, result tables."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn.data import Dataset, Preprocess, load_dataset
from jaxcnn.model import Model
from jaxcnn.runs import train_run
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent

SMOKE_TRAIN, SMOKE_TEST = 2000, 1000
SMOKE_NOTE = "smoke subset"
"""Written into a smoke run's data-set description, so its figures are never taken for a full run's."""


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", help="offline data folder (default: $JAXCNN_DATA_DIR; unset: download)")
    p.add_argument("--out", default=default_out, help=f"where the runs go (default {default_out})")
    p.add_argument("--overwrite", action="store_true", help="replace earlier runs in --out")
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE_TRAIN} train / {SMOKE_TEST} test images, 1 epoch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--data-in", choices=("memory", "stream"), default="memory",
                   help="memory (default): the set in memory; stream: packed once with jaxcnn prepare into "
                   "OUT/prepared and streamed from there, to compare the two paths")  # fmt: skip
    return p


def smoke_subset(data: Dataset) -> Dataset:
    """A few thousand images spread evenly over each split (folder data sets are sorted by class, so the
    first ones would all be one class): the same code path in seconds."""
    train = np.linspace(0, len(data.train_images) - 1, min(SMOKE_TRAIN, len(data.train_images))).astype(int)
    test = np.linspace(0, len(data.test_images) - 1, min(SMOKE_TEST, len(data.test_images))).astype(int)
    return replace(
        data,
        train_images=data.train_images[train],
        train_labels=data.train_labels[train],
        test_images=data.test_images[test],
        test_labels=data.test_labels[test],
        source=data.source + f" ({SMOKE_NOTE}: {SMOKE_TRAIN} train, {SMOKE_TEST} test)",
    )


def random_training_data(model: Model, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random uint8 images and int32 labels shaped for ``model`` (seed 0): data to time, not to learn."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, *model.input_shape), dtype=np.uint8)
    return images, rng.integers(0, model.output_shape[-1], count).astype(np.int32)


def random_dataset(model: Model, count: int, test: int) -> Dataset:
    """:func:`random_training_data` as a Dataset whose test set is its first ``test`` images."""
    images, labels = random_training_data(model, count)
    classes = tuple(str(k) for k in range(model.output_shape[-1]))
    return Dataset(name="random", train_images=images, train_labels=labels, test_images=images[:test],
                   test_labels=labels[:test], class_names=classes, source="random")  # fmt: skip


@dataclass
class TimedRun:
    """jaxcnn's real training path (``Trainer``) on fixed data, compiled, timed one epoch at a time."""

    trainer: Trainer
    state: Any
    compile_seconds: float

    @classmethod
    def compiled(
        cls, model: Model, batch: int, images: np.ndarray, labels: np.ndarray, augment: str = "", devices: int = 1
    ) -> TimedRun:
        """A Trainer at ``batch`` on ``devices`` devices (augmenting as ``augment`` says) with its step and
        evaluation compiled."""
        config = TrainConfig(batch_size=batch, augment=augment, devices=devices)
        trainer = Trainer(model, config, Preprocess(), images, labels, images[:batch], labels[:batch])
        state = trainer.init_state()
        return cls(trainer, state, trainer.compile(state))

    def epoch_seconds(self) -> float:
        """Run one more epoch, keep its state, and return its wall time (until the device is done)."""
        start = time.perf_counter()
        self.state, _, _ = self.trainer.run_epoch(self.state, 1)
        jax.block_until_ready(self.state)
        return time.perf_counter() - start


def interleaved_epoch_seconds(runs: dict[Any, TimedRun], rounds: int) -> dict[Any, list[float]]:
    """After one untimed warm-up epoch each, ``rounds`` rounds that time one epoch of every run in turn,
    so a drift of the machine's speed touches all alike; each run's epoch seconds, by its key."""
    for run in runs.values():
        run.epoch_seconds()
    seconds: dict[Any, list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            seconds[key].append(run.epoch_seconds())
    return seconds


CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"
RECIPE_CPU_DEVICES = 2
"""The devices the recipe scripts split the CPU into: one per core of the 2-core machine they were measured on."""


def split_cpu(devices: int = RECIPE_CPU_DEVICES) -> None:
    """Ask XLA to present the CPU as ``devices`` devices, so training is data-parallel across its cores
    (on the 2-core machine, faster than one device's thread pool for networks with long steps, slower for
    LeNet: docs/performance.md, "One CPU device or one per core").
    A count already in ``XLA_FLAGS`` wins. Only takes effect before JAX starts its backend."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_DEVICES_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICES_FLAG}={devices}".strip()


def machine() -> str:
    """The CPU model (with its family and model numbers and whether it has AVX-512: virtual machines
    often name only the vendor), core count and JAX devices, for the results table."""
    model = platform.machine()
    try:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())
            if key.strip() in ("model name", "cpu family", "model", "flags")
        )
    except OSError:
        fields = {}
    if "model name" in fields:
        vector = "AVX-512" if "avx512f" in fields.get("flags", "").split() else "no AVX-512"
        family, number = fields.get("cpu family", "?"), fields.get("model", "?")
        model = f"{fields['model name']} (family {family} model {number}, {vector})"
    devices = jax.devices()
    count = f"{len(devices)} x " if len(devices) > 1 else ""
    return (f"{model}, {os.cpu_count()} cores; JAX {jax.__version__} on {count}{devices[0].platform} "
            f"({devices[0].device_kind})")  # fmt: skip


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_script(main: Callable[[], None]) -> None:
    """Run an experiment's main with the compilation cache on (``JAXCNN_COMPILE_CACHE=off`` turns it
    off); bad input (spec, data, run directory) exits with one line, no traceback."""
    from jaxcnn.compiling import enable_compilation_cache
    from jaxcnn.data import DataError
    from jaxcnn.runs import RunError
    from jaxcnn.spec import SpecError
    from jaxcnn.train import ConfigError

    enable_compilation_cache()
    try:
        main()
    except (DataError, RunError, SpecError, ConfigError) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


def save_results(out: Path, results: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(table + "\n")


@dataclass(frozen=True)
class Plan:
    """One model of an experiment: a label, a spec in specs/, how to train it, what it is compared with."""

    label: str
    spec_file: str
    config: TrainConfig
    published: str
    pad: bool = False
    grey_to_rgb: bool = False
    normalize: bool = False


def streamed_copy(data: Dataset, folder: Path) -> str:
    """``data`` packed by ``jaxcnn prepare`` into ``folder`` (once), as the name that streams it."""
    from jaxcnn.prepared import prepare_dataset

    if not (folder / "manifest.json").exists():
        prepare_dataset(data, folder)
    return f"prepared:{folder}"


def run_experiment(args: argparse.Namespace, dataset: str, plans: Sequence[Plan], title: str) -> dict[str, Any]:
    """Train each plan on ``dataset`` into ``args.out``, then print and save a results table."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} already holds results; pass --overwrite to replace them or choose --out")
    started = time.perf_counter()
    data = load_dataset(dataset, args.data_dir)
    if args.smoke:
        data = smoke_subset(data)
    rows: list[list[str]] = []
    models: list[dict[str, Any]] = []
    for plan in plans:
        config = replace(plan.config, epochs=1) if args.smoke else plan.config
        spec = load_spec(ROOT / "specs" / plan.spec_file)
        print(f"\n== {plan.label}: {plan.spec_file}", flush=True)
        source: Dataset | str = data
        if getattr(args, "data_in", "memory") == "stream":
            source, config = streamed_copy(data, out / "prepared"), replace(config, data_in="stream")
        result = train_run(spec, source, config, out / Path(plan.spec_file).stem, overwrite=args.overwrite,
                           progress=not args.no_progress, pad=plan.pad, grey_to_rgb=plan.grey_to_rgb,
                           normalize=plan.normalize)  # fmt: skip
        final = result.metrics[-1]
        train_seconds = sum(m["seconds"] for m in result.metrics)
        weights = Model(spec).param_count()
        rows.append([plan.label, plan.spec_file, f"{weights:,}", str(config.epochs), f"{train_seconds:.1f}",
                     f"{100 * final['test_accuracy']:.2f}%", plan.published])  # fmt: skip
        models.append(
            {
                "label": plan.label,
                "spec": plan.spec_file,
                "weights": weights,
                "config": config.to_dict(),
                "train_seconds": train_seconds,
                "compile_seconds": result.compile_seconds,
                "final_test_accuracy": final["test_accuracy"],
                "best_test_accuracy": result.best_test_accuracy,
                "metrics": result.metrics,
            }
        )
    header = ["model", "spec", "weights", "epochs", "training time (s)", "test accuracy", "published"]
    table = markdown_table(header, rows)
    results: dict[str, Any] = {
        "title": title,
        "machine": machine(),
        "dataset": data.source,
        "data_in": getattr(args, "data_in", "memory"),
        "models": models,
        "wall_seconds": time.perf_counter() - started,
    }
    save_results(out, results, table)
    print(f"\n{title}; data: {data.source}; machine: {results['machine']}\n")
    print(table)
    print(f"\nwall time {results['wall_seconds']:.1f} s (data, compilation and training); runs in {out}/")
    return results


def timed_windows(run_window: Callable[[], None], images_per_window: int, windows: int) -> dict[str, float]:
    """img/s over ``windows`` timed windows, after one untimed warm-up window."""
    run_window()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        run_window()
        rates.append(images_per_window / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}
