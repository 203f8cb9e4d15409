"""Two checks of whether a saliency method says something about the network, as numbers a test or a benchmark
can compare:

- deletion: black out the most salient pixels of each image and measure how far the true class's probability
  falls, against blacking out as many pixels at random (a map worth reading picks pixels that matter);
- randomisation (Adebayo et al. 2018): the rank correlation between each image's map from the trained weights
  and from random ones (a map worth reading changes when what the network learned is taken away).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxcnn.model import Params
from jaxcnn.runs import Run


@dataclass(frozen=True)
class Deletion:
    """The mean fall of the true class's probability when ``fraction`` of each image's pixels are blacked out:
    the most salient ones (``salient``) or ones drawn at random (``random``); ``before`` is its mean first."""

    fraction: float
    before: float
    salient: float
    random: float


def true_class_probability(
    run: Run, images: np.ndarray, labels: np.ndarray, params: Params | None = None
) -> np.ndarray:
    """Each uint8 image's probability of its own label, by ``run``'s network (``params``: other weights)."""
    if params is None:
        probabilities = run.predict(images)
    else:
        probabilities = np.asarray(run.model.predict(params, jnp.asarray(run.network_input(images)), run.state))
    return probabilities[np.arange(len(labels)), labels]


def blacked_out(images: np.ndarray, scores: np.ndarray, fraction: float) -> np.ndarray:
    """``images`` (uint8, N x H x W x C) with the ``fraction`` of each image's pixels that score highest set to
    black in every channel (``scores``: N x H x W, of the images' own size)."""
    n, h, w = scores.shape
    count = round(fraction * h * w)
    order = np.argsort(-scores.reshape(n, -1), axis=1, kind="stable")[:, :count]
    mask = np.zeros((n, h * w), bool)
    np.put_along_axis(mask, order, True, axis=1)
    return np.where(mask.reshape(n, h, w, 1), np.uint8(0), images)


def deletion(run: Run, images: np.ndarray, labels: np.ndarray, maps: np.ndarray, fraction: float = 0.1,
             seed: int = 0) -> Deletion:  # fmt: skip
    """The :class:`Deletion` figures for uint8 ``images`` and their saliency ``maps`` (N x H x W, of the
    network's input size, as :mod:`jaxcnn.explain` gives them)."""
    images = run.fitted(images)
    before = true_class_probability(run, images, labels)
    salient = true_class_probability(run, blacked_out(images, maps, fraction), labels)
    noise = np.random.default_rng(seed).random(maps.shape)
    random = true_class_probability(run, blacked_out(images, noise, fraction), labels)
    return Deletion(fraction, float(before.mean()), float((before - salient).mean()), float((before - random).mean()))


def rank_correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation between each pair of maps (N x H x W each); 0 where a map is constant
    (nothing to rank), which counts as unrelated."""
    out = np.zeros(len(first))
    for i, (a, b) in enumerate(zip(first.reshape(len(first), -1), second.reshape(len(second), -1), strict=True)):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[i] = stats.spearmanr(a, b).statistic
    return out
