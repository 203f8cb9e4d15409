"""A run's hyperparameters: one dataclass whose fields carry their defaults, allowed values and help.

The ``jaxcnn train`` options are built from these fields, so each default and each list of
choices is written once, here. No JAX import: the command starts fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from jaxcnn.errors import JaxcnnError
from jaxcnn.numbers import parse_int

OPTIMIZERS = ("adam", "adamw", "sgd")
LOOPS = ("auto", "scan", "step")
COMPUTE_DTYPES = ("float32", "bfloat16")
DATA_IN = ("auto", "memory", "stream")
CROPS = ("random-resized", "shorter-side")
"""jaxcnn.streaming.TRAIN_CROPS, repeated so the config does not import grain (a test checks them)."""
SCHEDULES = ("constant", "cosine", "warmup_cosine", "onecycle")


class ConfigError(JaxcnnError, ValueError):
    """Hyperparameters out of range; the message lists each problem."""


AUGMENT_WORDS = ("translate", "flip", "erase")
AUGMENT_SYNTAX = (
    "comma-separated words: translate=N (shift each image up to N pixels each way, zero fill), "
    "flip (mirror left-right half the time; wrong for digits and text), erase=N (set a random NxN "
    "square to zero, cutout); empty: none"
)


@dataclass(frozen=True)
class Augmentation:
    """What each training batch is changed by, on the device, from the run's seed."""

    translate: int = 0
    flip: bool = False
    erase: int = 0

    @classmethod
    def parse(cls, text: str) -> Augmentation | None:
        """``"translate=2,flip,erase=8"`` -> an Augmentation; ``""`` -> None. ConfigError on anything else."""
        if not isinstance(text, str):
            raise ConfigError(f"augment must be a string ({AUGMENT_SYNTAX}), got {text!r}")
        values: dict[str, Any] = {}
        for word in (w.strip() for w in text.split(",") if w.strip()):
            name, _, number = word.partition("=")
            if name not in AUGMENT_WORDS:
                raise ConfigError(f"augment: unknown {name!r}; {AUGMENT_SYNTAX}")
            if name in values:
                raise ConfigError(f"augment: {name!r} is given twice")
            if name == "flip":
                if number:
                    raise ConfigError("augment: flip takes no value (it mirrors half the images)")
                values[name] = True
                continue
            try:
                pixels = parse_int(number, f"augment: {name}")
            except ValueError:
                pixels = 0
            if not 1 <= pixels <= 64:
                raise ConfigError(f"augment: {name} needs a whole number of pixels from 1 to 64, as {name}=2")
            values[name] = pixels
        return cls(**values) if values else None

    def __str__(self) -> str:
        words = [f"translate={self.translate}" if self.translate else "", "flip" if self.flip else "",
                 f"erase={self.erase}" if self.erase else ""]  # fmt: skip
        return ",".join(w for w in words if w)


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    """A field with its command-line help (``choices`` for words, ``metavar`` for numbers)."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a run; recorded in ``config.json``."""

    epochs: int = _option(10, "number of epochs; with --resume, the new total", metavar="N")
    batch_size: int = _option(128, "images per step; each epoch drops its last partial batch", metavar="B")
    lr: float = _option(1e-3, "(peak) learning rate", metavar="X")
    optimizer: str = _option("adam", "adam, adamw (decoupled weight decay) or sgd (Nesterov momentum)", OPTIMIZERS)
    momentum: float = _option(0.9, "SGD momentum", metavar="M")
    weight_decay: float = _option(0.0, "L2 weight decay (decoupled for adamw)", metavar="W")
    decay_biases: bool = _option(
        True, "apply the weight decay to biases and batch-norm scales too (--no-decay-biases: to kernels only)"
    )
    schedule: str = _option("constant", "learning-rate schedule", SCHEDULES)
    warmup_epochs: float = _option(
        0.0, "linear warm-up in epochs, or the rising part of onecycle (there 0 means a quarter)", metavar="E"
    )
    ema: float = _option(
        0.0,
        "keep an exponential moving average of the parameters with this decay (e.g. 0.999) and test it "
        "beside the raw ones each epoch (0: off)",
        metavar="D",
    )
    tta: bool = _option(
        False,
        "test-time augmentation: evaluate and predict on each image and its mirror, averaging the "
        "class probabilities (needs flip in --augment)",
    )
    seed: int = _option(0, "random seed: the same seed gives the same run, bit for bit", metavar="S")
    eval_batch_size: int = _option(
        1000, "test images per evaluation call; lower it if evaluating runs out of memory", metavar="N"
    )
    loop: str = _option("auto", "epoch loop: lax.scan chunks or a per-step loop (auto: step on CPUs)", LOOPS)
    devices: int = _option(0, "data-parallel over this many devices (0: all)", metavar="N")
    compute_dtype: str = _option(
        "float32", "bfloat16 computes in bfloat16 with float32 parameters (for accelerators)", COMPUTE_DTYPES
    )
    label_smoothing: float = _option(
        0.0, "train towards 1 - A on the label plus A / classes on every class", metavar="A"
    )
    augment: str = _option("", f"augment each training batch: {AUGMENT_SYNTAX}", metavar="SPEC")
    data_in: str = _option(
        "auto", "where the images are while training: memory (read once, kept on the device: fastest), stream (read "
        "from disk each epoch: any size, docs/data.md) or auto (memory when the set fits, else stream)", DATA_IN,
    )  # fmt: skip
    crop: str = _option(
        "random-resized", "streamed training images of another size than the network's: a random region resized "
        "(random-resized) or the shorter side scaled and a random crop (shorter-side)", CROPS,
    )  # fmt: skip
    loader_workers: int = _option(
        0, "processes that decode streamed images (0: the training process does, between steps)", metavar="N"
    )
    init_from: str = _option(
        "", "start from this run's best weights (and batch-norm state), not random ones: fine-tuning an imported or "
        "trained network whose spec has the same layers", metavar="RUN",
    )  # fmt: skip

    def __post_init__(self) -> None:
        problems = []
        for item in fields(self):
            choices = item.metadata["choices"]
            value = getattr(self, item.name)
            if choices is not None and value not in choices:
                problems.append(f"{item.name} must be one of {', '.join(choices)}, got {value!r}")
        if not isinstance(self.decay_biases, bool):
            problems.append(f"decay_biases must be true or false, got {self.decay_biases!r}")
        if not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            problems.append(f"loader_workers must be 0 or a positive integer, got {self.loader_workers!r}")
        if not isinstance(self.devices, int) or self.devices < 0:
            problems.append(f"devices must be 0 (all) or a positive integer, got {self.devices!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        ranges = (
            ("lr", self.lr, "a positive number", lambda v: v > 0),
            ("momentum", self.momentum, "in [0, 1)", lambda v: 0 <= v < 1),
            ("weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0),
            ("warmup_epochs", self.warmup_epochs, ">= 0", lambda v: v >= 0),
            ("label_smoothing", self.label_smoothing, "in [0, 1)", lambda v: 0 <= v < 1),
            ("ema", self.ema, "in [0, 1)", lambda v: 0 <= v < 1),
        )
        for name, value, allowed, ok in ranges:
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or not ok(value):
                problems.append(f"{name} must be a finite number {allowed}, got {value!r}")
        try:
            augmentation = Augmentation.parse(self.augment)
        except ConfigError as err:
            problems.append(str(err))
        else:  # one spelling of each augmentation, so config.json compares equal across runs
            object.__setattr__(self, "augment", str(augmentation) if augmentation else "")
            if self.tta and not (augmentation and augmentation.flip):
                problems.append("tta mirrors the test images, so it needs flip in augment (--augment flip)")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def augmentation(self) -> Augmentation | None:
        return Augmentation.parse(self.augment)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
