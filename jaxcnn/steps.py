"""One training step, compiled: the loss, the gradient and the optimizer update on a batch gathered (and
augmented) on the device from the epoch's plan; a step in micro-batches; a ``lax.scan`` of steps; and the
evaluation of one masked test batch. Each reports its :class:`StepMetrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxcnn import augment
from jaxcnn.compiling import jit
from jaxcnn.config import Augmentation
from jaxcnn.model import Model, Params, State, mirror_views
from jaxcnn.parallel import DataParallel
from jaxcnn.preprocess import Preprocess


class TrainState(NamedTuple):
    """What changes during training: the parameters, the optimizer's state and the network's state
    (batch norm's running statistics; empty for most networks)."""

    params: Params
    opt_state: optax.OptState
    model_state: State = {}  # noqa: RUF012 (a NamedTuple field's default, never mutated)

    def checkpoint_tree(self) -> dict[str, Any]:
        """What a checkpoint holds: the three parts, the network's state only when it has one (so runs
        of stateless networks keep the layout they always had)."""
        tree = self._asdict()
        if not self.model_state:
            del tree["model_state"]
        return tree


class StepMetrics(NamedTuple):
    """What a training step (or an evaluation batch) reports: the summed loss over its images and how many
    it classified correctly. Chunks and devices add them up; the epoch divides by the images seen."""

    loss_sum: jax.Array
    correct: jax.Array

    @staticmethod
    def zero() -> StepMetrics:
        return StepMetrics(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

    def plus(self, other: StepMetrics) -> StepMetrics:
        """Both sums added (``+`` would join the tuples)."""
        return StepMetrics(self.loss_sum + other.loss_sum, self.correct + other.correct)


def training_loss(
    model: Model,
    params: Params,
    model_state: State,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array | None,
    compute_dtype: str = "float32",
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, tuple[jax.Array, State]]:
    """Mean softmax cross-entropy over integer labels in training mode, with the number of correct
    predictions and the network's new state (batch statistics; dropout draws from ``key``).

    With ``label_smoothing`` = a > 0 the target is (1 - a) on the label plus a / classes on
    every class (``optax.smooth_labels``), as in Keras and PyTorch. With
    ``compute_dtype="bfloat16"`` the network runs in bfloat16 on bfloat16 copies of the float32
    parameters (gradients flow back to the float32 originals); the loss and batch norm's
    statistics are float32.
    """
    if compute_dtype != "float32":
        dtype = jnp.dtype(compute_dtype)
        params = jax.tree.map(lambda p: p.astype(dtype), params)
        x = x.astype(dtype)
    logits, new_state = model.apply_with_state(params, model_state, x, training=True, key=key)
    logits = logits.astype(jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, ((jnp.argmax(logits, axis=-1) == labels).sum(), new_state)


def batch_loss(
    model: Model,
    params: Params,
    x: jax.Array,
    labels: jax.Array,
    compute_dtype: str = "float32",
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """:func:`training_loss` of a network without state or dropout: (mean loss, correct count)."""
    loss, (correct, _) = training_loss(model, params, {}, x, labels, None, compute_dtype, label_smoothing)
    return loss, correct


MICRO_BATCH = 128
"""On the CPU fast path, larger batches are split into micro-batches of this size (see below)."""


def micro_batch_size(batch_size: int, impl_is_fast: bool, devices: int, has_state: bool = False) -> int:
    """The micro-batch a step of ``batch_size`` is computed in: the whole batch unless on the CPU
    fast path on one device with a multiple of ``MICRO_BATCH`` images (see :class:`AccumulatedStep`).
    Never for networks with batch norm: its statistics must be the whole batch's."""
    if has_state:
        return batch_size
    if impl_is_fast and devices == 1 and batch_size > MICRO_BATCH and batch_size % MICRO_BATCH == 0:
        return MICRO_BATCH
    return batch_size


def _sums_and_gradient(
    model: Model, compute_dtype: str, label_smoothing: float
) -> Callable[..., tuple[StepMetrics, Params, State]]:
    """(params, state, x, labels, key) -> (the step's metrics, gradient of the mean loss, new state): a
    step's core."""
    grad_fn = jax.value_and_grad(
        lambda p, s, x, y, k: training_loss(model, p, s, x, y, k, compute_dtype, label_smoothing), has_aux=True
    )

    def sums_and_gradient(
        params: Params, model_state: State, x: jax.Array, labels: jax.Array, key: jax.Array | None
    ) -> tuple[StepMetrics, Params, State]:
        (loss, (correct, new_state)), grads = grad_fn(params, model_state, x, labels, key)
        return StepMetrics(loss * x.shape[0], correct.astype(jnp.float32)), grads, new_state

    return sums_and_gradient


EpochPlan = dict[str, Any]
"""An epoch's plan on the devices: ``"index"``, the shuffled image indices; ``"key"``, the epoch's dropout
key (networks with dropout); and each image's augmentation draws (runs with ``--augment``)."""


def step_key(plan: EpochPlan, i: jax.Array) -> jax.Array | None:
    """The random key of step ``i`` of the epoch (for dropout): the epoch's key folded with ``i``, or None."""
    if "key" not in plan:
        return None
    return jax.random.fold_in(jax.random.wrap_key_data(plan["key"]), i)


def gather_batch(
    images: jax.Array, plan: EpochPlan, start: jax.Array, count: int, augmentation: Augmentation | None
) -> tuple[jax.Array, jax.Array]:
    """``count`` uint8 images from position ``start`` of the epoch's plan, and their indices; with
    ``augmentation``, changed by their draws in the plan (:func:`jaxcnn.augment.draw`)."""
    idx = jax.lax.dynamic_slice_in_dim(plan["index"], start, count)
    if augmentation is None:
        return images[idx], idx
    draws = {k: jax.lax.dynamic_slice_in_dim(v, start, count) for k, v in plan.items() if k not in ("index", "key")}
    return augment.apply(augmentation, images[idx], draws), idx


def make_train_step(
    model: Model,
    optimizer: optax.GradientTransformation,
    preprocess: Preprocess,
    batch_size: int,
    parallel: DataParallel | None = None,
    compute_dtype: str = "float32",
    label_smoothing: float = 0.0,
    augmentation: Augmentation | None = None,
) -> Callable[..., tuple[TrainState, StepMetrics]]:
    """One optimizer step on batch ``i`` of the epoch's plan (not jitted).

    The batch is gathered (and augmented) on the device from the uint8 images; with ``parallel``
    over several devices each computes the gradient of its share
    (:meth:`DataParallel.local_gradients`). Returns the new state and [summed loss, correct count].
    """
    sums_and_grads = _sums_and_gradient(model, compute_dtype, label_smoothing)
    if parallel is not None:
        sums_and_grads = parallel.local_gradients(sums_and_grads)

    def step(
        state: TrainState, images: jax.Array, labels: jax.Array, plan: EpochPlan, i: jax.Array
    ) -> tuple[TrainState, StepMetrics]:
        batch, idx = gather_batch(images, plan, i * batch_size, batch_size, augmentation)
        sums, grads, model_state = sums_and_grads(state.params, state.model_state, preprocess.to_float(batch),
                                                  labels[idx], step_key(plan, i))  # fmt: skip
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, model_state), sums

    return step


class AccumulatedStep:
    """The step of :func:`make_train_step` (same arguments and results) computed as one jitted
    gradient call per micro-batch, summed on the device, then one jitted optimizer update.

    The gradient is the same (the mean of the micro-batches' mean-loss gradients is the batch's);
    only the rounding of the sum differs. Why: on the CPU a whole large step runs slower per image,
    mostly from page faults, since its buffers outgrow what the allocator keeps for reuse
    (``benchmarks/tools/step_cost.py``; figures in ``docs/performance.md``). The calls are dispatched
    asynchronously, so Python stays off the critical path.
    """

    def __init__(
        self,
        model: Model,
        optimizer: optax.GradientTransformation,
        preprocess: Preprocess,
        batch_size: int,
        micro_batch: int,
        compute_dtype: str = "float32",
        label_smoothing: float = 0.0,
        augmentation: Augmentation | None = None,
    ) -> None:
        if micro_batch < 1 or batch_size % micro_batch:
            raise ValueError(f"micro_batch {micro_batch} must divide the batch size {batch_size}")
        if model.spec.has_state:
            raise ValueError("batch norm needs the whole batch's statistics: no micro-batches for this network")
        pieces = batch_size // micro_batch
        sums_and_grads = _sums_and_gradient(model, compute_dtype, label_smoothing)

        def accumulate(params: Params, totals: Any, images: jax.Array, labels: jax.Array, plan: EpochPlan,
                       i: jax.Array, piece: jax.Array) -> Any:  # fmt: skip
            batch, idx = gather_batch(images, plan, i * batch_size + piece * micro_batch, micro_batch, augmentation)
            key = step_key(plan, i)
            key = None if key is None else jax.random.fold_in(key, piece)
            piece_sums, grads, _ = sums_and_grads(params, {}, preprocess.to_float(batch), labels[idx], key)
            grad_sum, sums = totals
            return jax.tree.map(jnp.add, grad_sum, grads), sums.plus(piece_sums)

        def update(state: TrainState, totals: Any) -> tuple[TrainState, StepMetrics, Any]:
            grad_sum, sums = totals
            grads = jax.tree.map(lambda g: g / pieces, grad_sum)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            empty = jax.tree.map(jnp.zeros_like, totals)  # the next step's running sums, in the same buffers
            new_state = TrainState(optax.apply_updates(state.params, updates), opt_state, state.model_state)
            return new_state, sums, empty

        self._accumulate: Any = jit(accumulate, donate_argnums=1)
        self._update: Any = jit(update, donate_argnums=(0, 1))
        self._empty = jit(lambda params: (jax.tree.map(jnp.zeros_like, params), StepMetrics.zero()))
        self._pieces = jax.device_put([np.int32(k) for k in range(pieces)])
        self._totals: Any = None

    def compile(self, state: TrainState, images: ArrayLike, labels: ArrayLike, plan: EpochPlan) -> None:
        """Compile the gradient call and the update ahead of time."""
        totals = jax.eval_shape(self._empty, state.params)
        self._accumulate = self._accumulate.lower(state.params, totals, images, labels, plan, np.int32(0),
                                                  self._pieces[0]).compile()  # fmt: skip
        self._update = self._update.lower(state, totals).compile()

    def __call__(
        self, state: TrainState, images: ArrayLike, labels: ArrayLike, plan: EpochPlan, i: jax.Array
    ) -> tuple[TrainState, StepMetrics]:
        # Taken out first: if an interrupt lands between the calls, the donated sums are gone and
        # the next step starts from fresh zeros instead of deleted buffers.
        totals, self._totals = self._totals, None
        if totals is None:
            totals = self._empty(state.params)
        for piece in self._pieces:
            totals = self._accumulate(state.params, totals, images, labels, plan, i, piece)
        state, sums, self._totals = self._update(state, totals)
        return state, sums


def scan_steps(
    step: Callable[..., tuple[TrainState, StepMetrics]], steps: int
) -> Callable[..., tuple[TrainState, StepMetrics]]:
    """``steps`` consecutive calls of ``step`` in one ``lax.scan``, starting at batch ``start``."""

    def chunk(
        state: TrainState, images: jax.Array, labels: jax.Array, plan: EpochPlan, start: jax.Array
    ) -> tuple[TrainState, StepMetrics]:
        def body(carry: tuple[TrainState, StepMetrics], i: jax.Array) -> tuple[tuple[TrainState, StepMetrics], None]:
            state, sums = carry
            state, batch_sums = step(state, images, labels, plan, start + i)
            return (state, sums.plus(batch_sums)), None

        (state, sums), _ = jax.lax.scan(body, (state, StepMetrics.zero()), jnp.arange(steps))
        return state, sums

    return chunk


def make_eval_batch(
    model: Model,
    preprocess: Preprocess,
    split_batch: Callable[[jax.Array], jax.Array] = lambda x: x,
    tta: bool = False,
) -> Callable[..., jax.Array]:
    """A jitted evaluation of one masked batch: [summed loss, correct count] and the predictions.

    With ``tta`` the class probabilities are the mean of each image's and its mirror image's.
    """

    def evaluate(
        params: Params, model_state: State, images: jax.Array, labels: jax.Array, mask: jax.Array
    ) -> tuple[StepMetrics, jax.Array]:
        def logits_of(batch: jax.Array) -> jax.Array:
            return model.apply(params, split_batch(preprocess.to_float(batch)), model_state)

        if tta:  # the log of the mean probability of the two views
            both = jax.nn.log_softmax(mirror_views(logits_of, images))
            logits = jax.nn.logsumexp(both, axis=0) - jnp.log(2.0)
        else:
            logits = logits_of(images)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        pred = jnp.argmax(logits, axis=-1)
        return StepMetrics((losses * mask).sum(), ((pred == labels) * mask).sum()), pred

    return jax.jit(evaluate)  # XLA's defaults: inference ran about 10% faster with them than with jaxcnn's
