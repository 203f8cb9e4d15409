"""The optimizer of a run, from its TrainConfig: Adam, AdamW or SGD with Nesterov momentum, the learning-rate
schedule, weight decay (kept off biases and scales on request) and an exponential moving average of the
parameters kept in the optimizer's state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcnn.config import TrainConfig
from jaxcnn.model import Params


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate per step for the configured schedule."""
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "constant":
        if warmup:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, config.lr, warmup), optax.constant_schedule(config.lr)], [warmup]
            )
        return optax.constant_schedule(config.lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, total)
    if config.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, config.lr, max(warmup, 1), total)
    pct = warmup / total if warmup else 0.25
    return optax.cosine_onecycle_schedule(total, config.lr, pct_start=min(max(pct, 0.01), 0.99))


NOT_DECAYED = ("bias", "scale")
"""Parameter names that ``decay_biases=False`` keeps out of the weight decay: biases (conv, dense and
batch norm's offset) and batch norm's scale."""


def decay_mask(params: Params) -> Any:
    """True for each parameter the weight decay applies to when biases are spared: all but NOT_DECAYED."""
    return {layer: {name: name not in NOT_DECAYED for name in leaf} for layer, leaf in params.items()}


class EmaState(NamedTuple):
    """The moving average of the parameters, kept in the optimizer's state (so checkpoints and resume hold it)."""

    ema: Params


def track_average(decay: float) -> optax.GradientTransformation:
    """A last link of an optax chain that leaves the updates alone and keeps ``decay * ema + (1 - decay) *
    new_params`` in its state, the new parameters being ``params + updates``."""

    def init(params: Params) -> EmaState:
        return EmaState(jax.tree.map(jnp.asarray, params))

    def update(updates: Any, state: EmaState, params: Params | None = None) -> tuple[Any, EmaState]:
        if params is None:
            raise ValueError("track_average needs the parameters")
        new_params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema, new_params)
        return updates, EmaState(ema)

    return optax.GradientTransformation(init, update)


def average_params(config: TrainConfig, opt_state: Any) -> Params | None:
    """The moving average of the parameters kept by :func:`make_optimizer`, or None when ``config.ema`` is off."""
    return opt_state[1].ema if config.ema else None


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (default), AdamW or SGD with momentum, on the configured schedule, with the weight decay
    on every parameter, or (``decay_biases=False``) on the kernels only; with ``ema``, the moving
    average of the parameters rides along in the state (:func:`average_params`)."""
    base = _base_optimizer(config, steps_per_epoch)
    return optax.chain(base, track_average(config.ema)) if config.ema else base


def _base_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    lr = make_schedule(config, steps_per_epoch)
    mask = None if config.decay_biases else decay_mask
    decay = optax.add_decayed_weights(config.weight_decay, mask=mask)
    if config.optimizer == "sgd":
        sgd = optax.sgd(lr, momentum=config.momentum or None, nesterov=bool(config.momentum))
        return optax.chain(decay, sgd) if config.weight_decay else sgd
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=config.weight_decay, mask=mask)
    adam = optax.adam(lr)
    return optax.chain(decay, adam) if config.weight_decay else adam
