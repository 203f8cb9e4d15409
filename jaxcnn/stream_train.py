"""Training from streamed data (``--data-in stream``): the :class:`jaxcnn.train.Trainer` interface over batches
that :mod:`jaxcnn.streaming` reads from disk, so the data set never has to fit in memory.

Each batch is decoded by the loader (in ``--loader-workers`` processes), put on the devices and fed to the same
jitted step as the in-memory path (:func:`jaxcnn.steps.make_train_step`), with the same on-device augmentation.
The step's wait for each batch is timed: an epoch's ``data_wait_seconds`` says how input-bound it was.
Checkpoints are written at epoch ends, and an epoch's batches are a function of the seed and the epoch alone,
so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import augment
from jaxcnn.compiling import jit
from jaxcnn.config import TrainConfig
from jaxcnn.model import Model, Params, State
from jaxcnn.optimizers import make_optimizer
from jaxcnn.parallel import DataParallel, fetch
from jaxcnn.preprocess import Preprocess
from jaxcnn.steps import StepMetrics, TrainState, make_eval_batch, make_train_step
from jaxcnn.stream_data import StreamingData
from jaxcnn.streaming import loader


class StreamTrainer:
    """Compiled training and evaluation over streamed batches: what :class:`jaxcnn.train.Trainer` offers."""

    def __init__(self, model: Model, config: TrainConfig, preprocess: Preprocess, data: StreamingData) -> None:
        from jaxcnn.train import check_batch_within, check_batches, evaluation_batch_size

        self.parallel = DataParallel.over(config.devices)
        check_batches(model, config, self.parallel)
        check_batch_within(config, data.train_count)
        self.model, self.config, self.preprocess, self.data = model, config, preprocess, data
        self.shape: tuple[int, int, int] = tuple(model.input_shape)  # type: ignore[assignment]  # H x W x C
        self.steps_per_epoch = data.train_count // config.batch_size
        self.optimizer = make_optimizer(config, self.steps_per_epoch)
        step = make_train_step(model, self.optimizer, preprocess, config.batch_size, self.parallel,
                               config.compute_dtype, config.label_smoothing, config.augmentation)  # fmt: skip
        indices = jnp.arange(config.batch_size)

        def one_batch(state: TrainState, images: jax.Array, labels: jax.Array, draws: dict[str, jax.Array],
                      epoch_key: jax.Array | None, b: jax.Array) -> tuple[TrainState, StepMetrics]:  # fmt: skip
            plan = {"index": indices, **draws}
            if epoch_key is not None:  # the step's key: the epoch's folded with the step, here on the device
                plan["key"] = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(epoch_key), b))
            return step(state, images, labels, plan, jnp.int32(0))

        self._step: Any = jit(one_batch, donate_argnums=0)
        self.eval_batch_size = evaluation_batch_size(config.eval_batch_size, data.test_count, self.parallel)
        self._eval_batch: Any = make_eval_batch(model, preprocess, self.parallel.split_batch(), config.tta)
        self.compile_seconds = self.step_compile_seconds = 0.0
        self.data_wait_seconds = 0.0
        """The last epoch's seconds spent waiting for batches."""
        self._drawn_epoch: int | None = None
        self._epoch_draws: dict[str, np.ndarray] = {}

    def init_state(self) -> TrainState:
        from jaxcnn.train import Trainer

        return Trainer.init_state(self)  # type: ignore[arg-type]  # the same fields are all it reads

    def place(self, state: TrainState) -> TrainState:
        return self.parallel.replicate(state)

    def compile(self, state: TrainState) -> float:
        """Compile the step and the evaluation ahead of time; returns the seconds it took."""
        started = time.perf_counter()
        shape, batch, placed = self.model.input_shape, self.config.batch_size, self.parallel.replicated_shape
        images = self.parallel.batch_shape((batch, *shape), jnp.uint8)
        labels = self.parallel.batch_shape((batch,), jnp.int32)
        self._step = self._step.lower(
            state, images, labels, self._draws(0, 0), self._epoch_key(0), np.int32(0)
        ).compile()
        self.step_compile_seconds = time.perf_counter() - started
        test = placed((self.eval_batch_size, *shape), jnp.uint8)
        ints, mask = placed((self.eval_batch_size,), jnp.int32), placed((self.eval_batch_size,), jnp.float32)
        self._eval_batch = self._eval_batch.lower(state.params, state.model_state, test, ints, mask).compile()
        self.compile_seconds = time.perf_counter() - started
        return self.compile_seconds

    def _draws(self, epoch: int, b: int) -> dict[str, Any]:
        """The augmentation's draws for batch ``b`` of ``epoch`` (as the in-memory path draws them per epoch)."""
        augmentation = self.config.augmentation
        if augmentation is None:
            return {}
        if self._drawn_epoch != epoch:
            h, w, _ = self.model.input_shape
            self._epoch_draws = augment.draw(augmentation, self.data.train_count, h, w, self.config.seed, epoch)
            self._drawn_epoch = epoch
        part = slice(b * self.config.batch_size, (b + 1) * self.config.batch_size)
        return {k: v[part] for k, v in self._epoch_draws.items()}

    def _epoch_key(self, epoch: int) -> np.ndarray | None:
        """The epoch's dropout key (as words), drawn from (seed, epoch) as the in-memory path's; None without
        dropout."""
        if not self.model.spec.needs_key:
            return None
        from jaxcnn.train import DROPOUT_STREAM

        rng = np.random.default_rng([DROPOUT_STREAM, self.config.seed % 2**64, epoch])
        return rng.integers(0, 2**32, 2, dtype=np.uint32)

    def run_epoch(self, state: TrainState, epoch: int, on_chunk: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] = lambda: False) -> tuple[TrainState, float, float]:  # fmt: skip
        """One epoch over the streamed batches; returns the new state, mean train loss and train accuracy."""
        from jaxcnn.train import EpochInterruptedError, _total

        # Each process reads its own share of every batch (all of it when it is the only one).
        batches = loader(self.data.train, self.shape, self.config.batch_size, training=True,
                         process_index=jax.process_index(), process_count=jax.process_count(),
                         seed=self.config.seed, epoch=epoch, crop=self.config.crop,
                         workers=self.config.loader_workers)  # fmt: skip
        sums: list[StepMetrics] = []
        waited = 0.0
        iterator = iter(batches)
        epoch_key = self._epoch_key(epoch)
        for b in range(self.steps_per_epoch):
            started = time.perf_counter()
            batch = next(iterator)
            images, labels = self.parallel.assemble_batch((batch["image"], batch["label"]))
            waited += time.perf_counter() - started
            state, step_sums = self._step(state, images, labels, self._draws(epoch, b), epoch_key, np.int32(b))
            sums.append(step_sums)
            if should_stop():
                raise EpochInterruptedError(epoch, b + 1, self.steps_per_epoch)
            if on_chunk is not None:
                jax.block_until_ready(step_sums)
                on_chunk(1)
        del iterator, batches
        self.data_wait_seconds = waited
        seen = self.steps_per_epoch * self.config.batch_size
        loss_sum, correct = _total(sums)
        return state, loss_sum / seen, correct / seen

    def evaluate(self, params: Params, model_state: State | None = None) -> tuple[float, float, np.ndarray]:
        """Test loss, test accuracy and the predicted class of every test image, over the streamed test set."""
        from jaxcnn.train import _total, padded_with_mask

        results, count = [], 0
        for batch in loader(self.data.test, self.shape, self.eval_batch_size, training=False,
                            workers=self.config.loader_workers):  # fmt: skip
            n = len(batch["label"])
            placed = self.parallel.replicate(padded_with_mask(batch["image"], batch["label"], self.eval_batch_size))
            results.append((self._eval_batch(params, model_state or {}, *placed), n))
            count += n
        sums = [r[0][0] for r in results]
        preds = [np.asarray(fetch(r[0][1]))[: r[1]] for r in results]
        loss_sum, correct = _total(sums)
        return loss_sum / count, correct / count, np.concatenate(preds)
