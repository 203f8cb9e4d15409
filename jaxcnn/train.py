"""Training and evaluation with optax, fast: the data set lives on the device.

Each step gathers its batch from the uint8 images on the device through the epoch's permutation
(copied to the device once per epoch), so nothing else is copied from the host during an epoch. On
accelerators an epoch is a few calls of one compiled ``lax.scan`` over a fixed number of steps
(chunks exist only so a progress bar can move); on the CPU, where XLA runs loop bodies 3-5x
slower, it is a Python loop over one compiled, buffer-donating step (see :func:`resolve_loop`).
The last partial batch of an epoch is dropped (a different one each epoch); evaluation pads the
test set to whole batches and masks the padding, so neither causes a second compilation. For a
given seed, results are deterministic, and an epoch's shuffle depends only on (seed, epoch),
which is what lets ``--resume`` reproduce an uninterrupted run exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from jaxcnn import augment
from jaxcnn.compiling import jit
from jaxcnn.config import Augmentation
from jaxcnn.config import ConfigError as ConfigError  # re-exported: jaxcnn.train is where users look
from jaxcnn.config import TrainConfig as TrainConfig
from jaxcnn.layers import uses_fast_path
from jaxcnn.memory import check_fits
from jaxcnn.model import Model, Params, State
from jaxcnn.optimizers import average_params as average_params
from jaxcnn.optimizers import make_optimizer
from jaxcnn.optimizers import make_schedule as make_schedule
from jaxcnn.parallel import DataParallel, fetch
from jaxcnn.preprocess import Preprocess
from jaxcnn.spec import BatchNormLayer, NetworkSpec
from jaxcnn.steps import MICRO_BATCH as MICRO_BATCH
from jaxcnn.steps import AccumulatedStep as AccumulatedStep
from jaxcnn.steps import EpochPlan as EpochPlan
from jaxcnn.steps import StepMetrics as StepMetrics
from jaxcnn.steps import TrainState as TrainState
from jaxcnn.steps import batch_loss as batch_loss
from jaxcnn.steps import gather_batch as gather_batch
from jaxcnn.steps import make_eval_batch as make_eval_batch
from jaxcnn.steps import make_train_step as make_train_step
from jaxcnn.steps import micro_batch_size as micro_batch_size
from jaxcnn.steps import scan_steps as scan_steps
from jaxcnn.steps import training_loss as training_loss

SHUFFLE_STREAM = 0x5348_5546
"""Leading word of the NumPy seed of each epoch's shuffle, apart from the parameters' streams."""
DROPOUT_STREAM = 0x4452_4F50
"""Leading word of the NumPy seed of each epoch's dropout key (folded with the step, micro-batch and device)."""


class EpochInterruptedError(Exception):
    """An epoch stopped part-way (Ctrl-C, SIGTERM); its partial state is not kept."""

    def __init__(self, epoch: int, steps_done: int, steps_per_epoch: int) -> None:
        self.epoch, self.steps_done, self.steps_per_epoch = epoch, steps_done, steps_per_epoch
        super().__init__(f"interrupted in epoch {epoch} after step {steps_done} of {steps_per_epoch}")


def evaluation_batch_size(requested: int, test_count: int, parallel: DataParallel) -> int:
    """Evaluation batches of ``requested`` images (at most the test set), rounded up to split evenly over the
    devices."""
    return -(-min(requested, test_count) // parallel.size) * parallel.size


def padded_with_mask(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``images`` and ``labels`` padded with zeros up to ``size``, and the mask (1 for a real image, 0 for padding)."""
    count, extra = len(images), size - len(images)
    images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(extra, labels.dtype)])
    return images, labels, np.concatenate([np.ones(count, np.float32), np.zeros(extra, np.float32)])


@dataclass
class EvalSet:
    """A test set on the device as whole batches (the last one padded), with masks for the padding.

    Split once when built, so evaluating costs no slicing (nor its small compilations) per epoch.
    """

    batches: list[tuple[jax.Array, jax.Array, jax.Array]]  # (images, labels, mask) per batch
    count: int

    @classmethod
    def build(cls, images: np.ndarray, labels: np.ndarray, eval_batch_size: int, parallel: DataParallel) -> EvalSet:
        """Batches of ``eval_batch_size`` (at most the test set), rounded up to split evenly over the devices."""
        count = len(images)
        batch_size = evaluation_batch_size(eval_batch_size, count, parallel)
        padded = -(-count // batch_size) * batch_size
        images, labels, mask = padded_with_mask(images, labels, padded)
        parts = [slice(start, start + batch_size) for start in range(0, padded, batch_size)]
        batches = [parallel.replicate((images[part], labels[part], mask[part])) for part in parts]
        return cls(batches, count)


@dataclass
class EpochResult:
    """One epoch's metrics, as written to ``metrics.jsonl``."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float
    images_per_second: float
    eval_seconds: float
    test_loss_ema: float | None = None
    test_accuracy_ema: float | None = None
    data_wait_seconds: float | None = None
    """Streamed data only: the seconds the steps waited for their batches."""

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def chunk_plan(steps_per_epoch: int, target_chunks: int = 10) -> tuple[int, int]:
    """(chunks, steps per chunk) with chunks dividing the epoch exactly, near ``target_chunks``.

    Chunks exist only so the progress bar moves; an exact divisor means no step is dropped and
    every chunk has the same shape (one compilation).
    """
    divisors = [d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0]
    chunks = min(divisors, key=lambda d: (abs(d - target_chunks), d))
    return chunks, steps_per_epoch // chunks


def resolve_loop(loop: str) -> str:
    """``auto`` is ``scan`` on accelerators and ``step`` on the CPU.

    On the CPU, XLA runs a training step inside a ``lax.scan`` (or any while loop) several times
    slower than the same step as its own jitted call, so there the epoch is a Python loop over one
    compiled, buffer-donating step (dispatch is asynchronous, so Python stays off the critical
    path). Both compute the same thing; tests compare them.
    """
    if loop != "auto":
        return loop
    return "step" if jax.default_backend() == "cpu" else "scan"


def check_batch_statistics(spec: NetworkSpec, images_per_device: int) -> None:
    """Refuse batch norm whose batch statistics would be over one value per channel (a dense layer's output at
    one image per device): the variance is 0, every output is the offset, and nothing trains (PyTorch refuses
    it too)."""
    for layer in spec.layers:
        if not isinstance(layer, BatchNormLayer):
            continue
        per_image = math.prod(layer.input_shape[:-1])
        if images_per_device * per_image <= 1:
            raise ConfigError(
                f"{spec.source}: layer {layer.index} (batch_norm {layer.name!r}) would compute its batch statistics "
                f"over 1 value per channel ({images_per_device} image per device, each giving one value), whose "
                "variance is 0, so it would train nothing; use --batch-size 2 or more per device"
            )


def check_augmentation(augmentation: Augmentation | None, input_shape: tuple[int, ...]) -> None:
    """Refuse a translation or an erase square as large as the image: they would blank whole images."""
    if augmentation is None:
        return
    height, width = input_shape[0], input_shape[1]
    side = min(height, width)
    for word, value, effect in (("translate", augmentation.translate, "shift images entirely out of view"),
                                ("erase", augmentation.erase, "erase whole images")):  # fmt: skip
        if value >= side:
            raise ConfigError(f"augment: {word}={value} would {effect} ({height}x{width} images, as the network "
                              f"takes them); use {word} below {side}")  # fmt: skip


def check_batch_within(config: TrainConfig, train_count: int) -> None:
    """Refuse a batch larger than the training set (no whole batch could be drawn from it)."""
    if train_count < config.batch_size:
        raise ConfigError(f"batch size {config.batch_size} is larger than the {train_count} training images")


def check_data_fits(model: Model, config: TrainConfig, train_images: np.ndarray, test_images: np.ndarray) -> None:
    """Refuse a batch larger than the training set, and a training or evaluation batch that would not fit in
    memory: before any allocation, with the batches really used (the evaluation's is at most the test set)."""
    check_batch_within(config, len(train_images))
    data_bytes = train_images.nbytes + test_images.nbytes
    check_fits(model.spec, config.batch_size, data_bytes)
    eval_images = min(config.eval_batch_size, len(test_images))
    check_fits(model.spec, eval_images, data_bytes, training=False, flag="--eval-batch-size")


def check_batches(model: Model, config: TrainConfig, parallel: DataParallel) -> None:
    """Refuse a batch the devices cannot share evenly, batch statistics over one value, and augmentation
    as large as the image."""
    parallel.check_divides(config.batch_size, "batch size")
    check_batch_statistics(model.spec, config.batch_size // parallel.size)
    check_augmentation(config.augmentation, model.input_shape)


class LoopPlan(NamedTuple):
    """How an epoch runs: the loop (``scan`` or ``step``), its steps, and the chunks they are called in."""

    loop: str
    steps_per_epoch: int
    chunks: int
    steps_per_chunk: int


def plan_loop(config: TrainConfig, train_count: int) -> LoopPlan:
    """The epoch's steps (each epoch drops its last partial batch) and chunks: a few ``lax.scan`` chunks
    that divide the epoch exactly, or one step per call."""
    steps = train_count // config.batch_size
    loop = resolve_loop(config.loop)
    chunks, per_chunk = chunk_plan(steps) if loop == "scan" else (steps, 1)
    return LoopPlan(loop, steps, chunks, per_chunk)


def choose_step(
    model: Model,
    optimizer: optax.GradientTransformation,
    preprocess: Preprocess,
    config: TrainConfig,
    parallel: DataParallel,
    plan: LoopPlan,
) -> Any:
    """What one call trains: a step in micro-batches (:class:`AccumulatedStep`, on the CPU fast path), one
    jitted step, or a jitted ``lax.scan`` chunk of steps; each donates the state it is given."""
    micro_batch = micro_batch_size(config.batch_size, uses_fast_path(model.impl), parallel.size,
                                   model.spec.has_state)  # fmt: skip
    if plan.loop == "step" and micro_batch < config.batch_size:
        return AccumulatedStep(model, optimizer, preprocess, config.batch_size, micro_batch, config.compute_dtype,
                               config.label_smoothing, config.augmentation)  # fmt: skip
    step = make_train_step(model, optimizer, preprocess, config.batch_size, parallel, config.compute_dtype,
                           config.label_smoothing, config.augmentation)  # fmt: skip
    return jit(step if plan.loop == "step" else scan_steps(step, plan.steps_per_chunk), donate_argnums=0)


def waits_each_step(parallel: DataParallel) -> bool:
    """Whether each step (and evaluation batch) must finish before the next is sent.

    With steps queued back-to-back on several CPU devices of one process, XLA's in-process all-reduce
    deadlocked (LeNet on 2 forced host devices of a 2-core CPU, in the first epoch; probably the devices'
    shared thread pool). Finishing each step first avoids it (tests/test_parallel.py).
    """
    return len(parallel.mesh.local_devices) > 1 and jax.default_backend() == "cpu"


class Trainer:
    """Compiled training and evaluation for one model, data set and configuration.

    ``run_epoch`` and ``evaluate`` are the whole loop; :func:`jaxcnn.runs.train_run` adds the run
    directory, checkpoints and progress output around them.
    """

    def __init__(
        self,
        model: Model,
        config: TrainConfig,
        preprocess: Preprocess,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        test_images: np.ndarray,
        test_labels: np.ndarray,
    ) -> None:
        check_data_fits(model, config, train_images, test_images)
        self.parallel = DataParallel.over(config.devices)
        check_batches(model, config, self.parallel)
        self.model, self.config, self.preprocess = model, config, preprocess
        self.plan = plan_loop(config, len(train_images))
        self.loop, self.steps_per_epoch, self.chunks, self.steps_per_chunk = self.plan
        self.optimizer = make_optimizer(config, self.steps_per_epoch)
        self.train_images, self.train_labels = self.parallel.replicate(
            (np.asarray(train_images), np.asarray(train_labels, np.int32))
        )
        self.test = EvalSet.build(test_images, np.asarray(test_labels, np.int32), config.eval_batch_size, self.parallel)
        self._chunk: Any = choose_step(model, self.optimizer, preprocess, config, self.parallel, self.plan)
        self._eval_batch: Any = make_eval_batch(model, preprocess, self.parallel.split_batch(), config.tta)
        # The first step of each chunk, on the device once (not converted anew at every step).
        self._chunk_starts = jax.device_put([np.int32(c * self.steps_per_chunk) for c in range(self.chunks)])
        self.compile_seconds = 0.0
        """Seconds :meth:`compile` took: the training step (``step_compile_seconds``) and the evaluation."""
        self.step_compile_seconds = 0.0
        self._wait_each_step = waits_each_step(self.parallel)

    def init_state(self) -> TrainState:
        """Fresh parameters from the seed, and the optimizer's initial state."""
        # The int seed, not a jax.random key: deriving a key compiled two small programs (0.2-0.3 s).
        params, model_state = self.model.init(self.config.seed % 2**64), self.model.init_state()
        if self.config.init_from:
            from jaxcnn.run_files import weights_from_run

            params, model_state = weights_from_run(self.model, self.config.init_from)
        # One compiled call, not one small compilation per eager op (about 0.3 s on a 2-core CPU).
        return self.place(TrainState(params, jit(self.optimizer.init)(params), model_state))

    def place(self, state: TrainState) -> TrainState:
        """Replicate a (fresh or restored) state on the devices of the mesh."""
        return self.parallel.replicate(state)

    def compile(self, state: TrainState) -> float:
        """Compile the training chunk and the evaluation ahead of time; returns the seconds it took.

        The evaluation compiles on a second thread while the step compiles: tracing is Python
        and holds the GIL, XLA's code generation releases it, so one program traces while the
        other is in LLVM (LeNet, 2-core CPU: about 0.2 s of 1.7-2.3 saved, alternated runs).
        """
        start = time.perf_counter()
        batch = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding) for a in self.test.batches[0]]
        with ThreadPoolExecutor(1, thread_name_prefix="jaxcnn-compile") as pool:
            evaluation = pool.submit(lambda: self._eval_batch.lower(state.params, state.model_state, *batch).compile())
            # NumPy values: eager jnp calls would each compile a small program (tens of ms apiece).
            plan = self._plan(np.arange(len(self.train_images), dtype=np.int32), 0)
            if isinstance(self._chunk, AccumulatedStep):
                self._chunk.compile(state, self.train_images, self.train_labels, plan)
            else:
                lowered = self._chunk.lower(state, self.train_images, self.train_labels, plan, np.int32(0))
                self._chunk = lowered.compile()
            self.step_compile_seconds = time.perf_counter() - start
            self._eval_batch = evaluation.result()
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """The shuffle of epoch ``epoch`` (1-based), with its augmentation draws if any: a function of
        the seed and the epoch only.

        Drawn with NumPy and copied to the device once per epoch: ``jax.random.permutation``
        costs a 0.3 s compilation at the start of every run for a millisecond of work.
        """
        # A stream of its own: the parameters are drawn from [seed, layer index] (Model.init).
        rng = np.random.default_rng([SHUFFLE_STREAM, self.config.seed % 2**64, epoch])
        return self._plan(rng.permutation(len(self.train_images)).astype(np.int32), epoch)

    def _plan(self, permutation: np.ndarray, epoch: int) -> EpochPlan:
        """The epoch's plan on the devices: the permutation, with the dropout key and the augmentation
        draws when the run has any."""
        augmentation = self.config.augmentation
        plan: dict[str, np.ndarray] = {"index": permutation}
        if self.model.spec.needs_key:
            rng = np.random.default_rng([DROPOUT_STREAM, self.config.seed % 2**64, epoch])
            plan["key"] = rng.integers(0, 2**32, 2, dtype=np.uint32)
        if augmentation is not None:
            _, h, w, _ = self.train_images.shape
            plan.update(augment.draw(augmentation, len(permutation), h, w, self.config.seed, epoch))
        return self.parallel.replicate(plan)

    def run_epoch(
        self,
        state: TrainState,
        epoch: int,
        on_chunk: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> tuple[TrainState, float, float]:
        """One epoch of training; returns the new state, mean train loss and train accuracy.

        ``should_stop`` is asked after every step (or scan chunk); when it answers True the
        epoch ends there and :class:`EpochInterruptedError` carries the step it stopped after.
        """
        plan = self.epoch_plan(epoch)
        chunk_sums = []
        report_every = max(1, self.chunks // 20)
        reported = 0
        for c, start in enumerate(self._chunk_starts):
            state, sums = self._chunk(state, self.train_images, self.train_labels, plan, start)
            chunk_sums.append(sums)
            if self._wait_each_step:
                jax.block_until_ready(sums)
            if should_stop():
                raise EpochInterruptedError(epoch, (c + 1) * self.steps_per_chunk, self.steps_per_epoch)
            if on_chunk is not None and ((c + 1) % report_every == 0 or c + 1 == self.chunks):
                jax.block_until_ready(sums)  # the bar shows finished steps, not merely dispatched ones
                on_chunk((c + 1) * self.steps_per_chunk - reported)
                reported = (c + 1) * self.steps_per_chunk
        seen = self.steps_per_epoch * self.config.batch_size
        loss_sum, correct = _total(chunk_sums)
        return state, loss_sum / seen, correct / seen

    def evaluate(self, params: Params, model_state: State | None = None) -> tuple[float, float, np.ndarray]:
        """Test loss, test accuracy and the predicted class of every test image (``model_state``: the
        network's state, for batch norm)."""
        results = []
        for batch in self.test.batches:
            results.append(self._eval_batch(params, model_state or {}, *batch))
            if self._wait_each_step:
                jax.block_until_ready(results[-1])
        sums, preds = zip(*results, strict=True)
        loss_sum, correct = _total(list(sums))
        count = self.test.count
        return loss_sum / count, correct / count, np.concatenate(fetch(list(preds)))[:count]


def _total(sums: list[StepMetrics]) -> tuple[float, float]:
    """The metrics of an epoch's steps or batches, added up in float64 on the host."""
    loss_sum, correct = np.sum(np.asarray([tuple(m) for m in fetch(sums)], np.float64), axis=0)
    return float(loss_sum), float(correct)
