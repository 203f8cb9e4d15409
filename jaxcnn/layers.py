"""Pure layer functions over ``jax.lax``: convolution, pooling, dense, flatten, activations.

Everything here is a plain function of arrays. There is no spec, no state and no I/O, so a
developer can call ``conv2d`` or ``max_pool`` inside any JAX code and ``jit``, ``grad`` or
``vmap`` it. Activations are NHWC (batch, height, width, channels); convolution kernels are
HWIO (height, width, in-channels per group, out-channels), the layout Flax and TensorFlow use.

Padding takes every form :func:`jaxcnn.geometry.resolve_padding` accepts ("valid", "same",
an int, per-axis ints or explicit pairs) and the output size follows the article's formula;
see :mod:`jaxcnn.geometry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import cpu_layers
from jaxcnn.geometry import (
    PADDING_FORMS,
    IntPair,
    PaddingLike,
    PaddingPairs,
    as_pair,
    is_int,
    output_size,
    resolve_padding,
)

Array = jax.Array

__all__ = [
    "ACTIVATIONS",
    "PADDING_FORMS",
    "activation",
    "as_pair",
    "avg_pool",
    "batch_moments",
    "batch_norm",
    "conv2d",
    "dense",
    "dropout",
    "flatten",
    "global_avg_pool",
    "global_max_pool",
    "max_pool",
    "output_size",
    "resolve_padding",
]


IMPLS = ("auto", "lax", "fast")


def uses_fast_path(impl: str) -> bool:
    """Whether to use :mod:`jaxcnn.cpu_layers`: asked for, or ``auto`` on the CPU backend."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    return impl == "fast" or (impl == "auto" and jax.default_backend() == "cpu")


def _check_nhwc(x: Array, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{what} expects a 4-D NHWC batch (batch, height, width, channels); got shape {tuple(x.shape)}"
        )


def _check_fits(
    x_hw: IntPair, size: IntPair, stride: IntPair, pads: PaddingPairs, dilation: IntPair, what: str
) -> None:
    for axis, name in enumerate(("height", "width")):
        out = output_size(x_hw[axis], size[axis], stride[axis], *pads[axis], dilation[axis])
        if out < 1:
            lo, hi = pads[axis]
            raise ValueError(
                f"{what}: the window of {size[axis]} (dilation {dilation[axis]}) does not fit the input "
                f"{name} {x_hw[axis]} with padding ({lo}, {hi}): "
                f"floor(({x_hw[axis]} + {lo} + {hi} - {dilation[axis] * (size[axis] - 1) + 1}) / {stride[axis]}) + 1 "
                f"= {out}"
            )


def conv2d(
    x: Array,
    kernel: Array,
    bias: Array | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "valid",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    impl: str = "auto",
    pool: int | Sequence[int] | None = None,
    relu_before_pool: bool = False,
) -> Array:
    """2-D convolution (cross-correlation, as in every deep-learning library) of an NHWC batch.

    ``kernel`` is HWIO with I = in_channels / groups. Each output pixel is the sum over the
    window of input times kernel, plus the bias: the article's "slide the filter and add up".
    ``impl`` picks how XLA computes it: ``"lax"`` (one ``lax.conv_general_dilated``), ``"fast"``
    (:mod:`jaxcnn.cpu_layers`, same function and gradient, faster on the CPU) or ``"auto"`` (fast on
    the CPU backend, lax elsewhere). ``pool`` (a window size) returns
    ``max_pool(conv2d(...), pool)`` (``max_pool(relu(conv2d(...)), pool)`` with
    ``relu_before_pool``), the pool's stride equal to its size, in one step where
    :func:`jaxcnn.cpu_layers.conv_max_pool` applies: same values and gradient, faster inference.
    """
    _check_nhwc(x, "conv2d")
    if kernel.ndim != 4:
        raise ValueError(f"conv2d expects a 4-D HWIO kernel; got shape {tuple(kernel.shape)}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    in_channels = x.shape[3]
    if in_channels % groups or kernel.shape[3] % groups:
        raise ValueError(
            f"groups={groups} must divide the input channels ({in_channels}) and the filters ({kernel.shape[3]})"
        )
    if kernel.shape[2] * groups != in_channels:
        raise ValueError(
            f"conv2d kernel has {kernel.shape[2]} input channels per group; with groups={groups} "
            f"the input needs {kernel.shape[2] * groups} channels but has {in_channels}"
        )
    size = (int(kernel.shape[0]), int(kernel.shape[1]))
    strides = as_pair(stride, "stride")
    dilations = as_pair(dilation, "dilation")
    pads = resolve_padding(padding, size, strides, dilations, (x.shape[1], x.shape[2]))
    _check_fits((x.shape[1], x.shape[2]), size, strides, pads, dilations, "conv2d")
    if relu_before_pool and pool is None:
        raise ValueError("relu_before_pool applies only with pool= (the max pool after the ReLU)")
    if pool is not None:
        window = as_pair(pool, "pool size")
        if not uses_fast_path(impl) or not cpu_layers.fuses_with_max_pool(kernel.shape, strides, int(groups)):
            y = conv2d(x, kernel, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, impl=impl)
            return max_pool(jax.nn.relu(y) if relu_before_pool else y, window, impl=impl)
        out_hw = [output_size(x.shape[1 + a], size[a], 1, *pads[a], dilations[a]) for a in (0, 1)]
        _check_fits((out_hw[0], out_hw[1]), window, window, ((0, 0), (0, 0)), (1, 1), "max_pool")
        zero_bias = jnp.zeros(kernel.shape[3], x.dtype) if bias is None else bias
        return cpu_layers.conv_max_pool(x, kernel, zero_bias, pads, dilations, window, relu_before_pool)
    if uses_fast_path(impl):
        y = cpu_layers.conv(x, kernel, strides, pads, dilations, int(groups))
    else:
        y = cpu_layers.lax_conv(x, kernel, strides, pads, dilations, int(groups))
    if bias is not None:
        y = y + bias
    return y


def _pool_setup(
    x: Array, size: int | Sequence[int], stride: int | Sequence[int] | None, padding: PaddingLike, what: str
) -> tuple[IntPair, IntPair, PaddingPairs]:
    _check_nhwc(x, what)
    window = as_pair(size, "pool size")
    strides = window if stride is None else as_pair(stride, "pool stride")
    pads = resolve_padding(padding, window, strides, (1, 1), (x.shape[1], x.shape[2]))
    _check_fits((x.shape[1], x.shape[2]), window, strides, pads, (1, 1), what)
    return window, strides, pads


def max_pool(
    x: Array,
    size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "valid",
    *,
    impl: str = "auto",
) -> Array:
    """Max pooling of an NHWC batch: each output is the largest value in its window.

    The stride defaults to the window size (the article's f=2, s=2). Padding counts as -inf,
    so a padded pixel is never the maximum. ``impl`` is as for :func:`conv2d`; the fast form
    applies when the windows tile the input (stride = size, no padding).
    """
    window, strides, pads = _pool_setup(x, size, stride, padding, "max_pool")
    if uses_fast_path(impl) and cpu_layers.tiles(window, strides, pads):
        return cpu_layers.max_pool_tiled(x, window)
    # A NumPy (not JAX) init value: reduce_window is differentiable only with a known constant.
    if jnp.issubdtype(x.dtype, jnp.floating):
        init = np.array(-np.inf, x.dtype)
    else:
        init = np.array(np.iinfo(x.dtype).min, x.dtype)
    return lax.reduce_window(x, init, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


def avg_pool(
    x: Array,
    size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "valid",
    *,
    count_include_pad: bool,
) -> Array:
    """Average pooling of an NHWC batch.

    ``count_include_pad`` must be given: libraries disagree (PyTorch and Flax divide by the
    full window, ``True``; Keras divides by the pixels inside the image, ``False``), and it
    changes every border output whenever there is padding.
    """
    window, strides, pads = _pool_setup(x, size, stride, padding, "avg_pool")
    zero = np.array(0, x.dtype)
    all_pads = ((0, 0), *pads, (0, 0))
    dims, steps = (1, *window, 1), (1, *strides, 1)
    total = lax.reduce_window(x, zero, lax.add, dims, steps, all_pads)
    if count_include_pad:
        return total / (window[0] * window[1])
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    counts = lax.reduce_window(ones, zero, lax.add, dims, steps, all_pads)
    return total / counts


def dense(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    """Fully connected layer: ``x @ kernel + bias`` on a (batch, features) array."""
    if x.ndim != 2:
        raise ValueError(f"dense expects a 2-D (batch, features) array; flatten first. Got shape {tuple(x.shape)}")
    if kernel.ndim != 2 or kernel.shape[0] != x.shape[1]:
        raise ValueError(f"dense kernel shape {tuple(kernel.shape)} does not take {x.shape[1]} input features")
    y = x @ kernel
    if bias is not None:
        y = y + bias
    return y


def flatten(x: Array) -> Array:
    """Flatten every axis but the batch: (N, H, W, C) -> (N, H*W*C), in row-major HWC order."""
    return x.reshape(x.shape[0], -1)


def global_avg_pool(x: Array) -> Array:
    """The mean of each channel over the whole height and width: (N, H, W, C) -> (N, C)."""
    _check_nhwc(x, "global_avg_pool")
    return jnp.mean(x, axis=(1, 2))


def global_max_pool(x: Array) -> Array:
    """The largest value of each channel over the whole height and width: (N, H, W, C) -> (N, C)."""
    _check_nhwc(x, "global_max_pool")
    return jnp.max(x, axis=(1, 2))


@jax.custom_jvp
def batch_moments(x: Array) -> tuple[Array, Array]:
    """The float32 mean and (biased) variance of each channel, over every axis but the last.

    One pass over shifted values: with ``d = x - s``, where the shift ``s`` is the first example's mean
    per channel, mean = s + E[d] and variance = E[d^2] - E[d]^2 (clipped at 0). As cheap as Flax's
    unshifted E[x^2] - E[x]^2, but without its cancellation when a channel's mean is large against its
    spread (mean 1e3, spread 1: relative error 1e-3 unshifted, 1e-7 shifted). The derivative is the
    moments' own, written out (E[t] and 2 E[(x - mean) t]), so it is the same whatever the shift and
    as cheap as the unshifted form's.
    """
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    shift = jnp.mean(x32[0], axis=tuple(range(x.ndim - 2))) if x.ndim > 2 else x32[0]
    shifted = x32 - shift
    mean_shifted = jnp.mean(shifted, axis=axes)
    variance = jnp.mean(jnp.square(shifted), axis=axes) - jnp.square(mean_shifted)
    return shift + mean_shifted, jnp.maximum(variance, 0.0)


@batch_moments.defjvp
def _batch_moments_jvp(
    primals: tuple[Array], tangents: tuple[Array]
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    (x,), (t,) = primals, tangents
    mean, variance = batch_moments(x)
    axes = tuple(range(x.ndim - 1))
    t32 = t.astype(jnp.float32)
    centred = x.astype(jnp.float32) - mean
    return (mean, variance), (jnp.mean(t32, axis=axes), 2.0 * jnp.mean(centred * t32, axis=axes))


def batch_norm(
    x: Array, mean: Array, var: Array, scale: Array | None, bias: Array | None, epsilon: float = 1e-5
) -> Array:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` per channel (the last axis), returned in ``x``'s
    dtype; ``scale``/``bias`` None leave out that step.

    Computed as ``x * a + b`` with per-channel ``a`` and ``b`` worked out in float32 first, so the
    large array is touched once (and once more in the gradient).
    """
    a = lax.rsqrt(var.astype(jnp.float32) + epsilon)
    if scale is not None:
        a = a * scale.astype(jnp.float32)
    b = -mean.astype(jnp.float32) * a
    if bias is not None:
        b = b + bias.astype(jnp.float32)
    return (x * a.astype(x.dtype) + b.astype(x.dtype)).astype(x.dtype)


def dropout(x: Array, rate: float, key: Array) -> Array:
    """Inverted dropout: each value is zeroed with probability ``rate`` (the probability of
    *dropping*, as in PyTorch, Keras and Flax) and the others are scaled by 1 / (1 - rate), so the
    expected value is unchanged and evaluation needs no dropout at all."""
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    if rate == 0:
        return x
    keep = jax.random.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), jnp.zeros_like(x))


def linear(x: Array) -> Array:
    """The identity: a layer with no activation."""
    return x


def softmax(x: Array) -> Array:
    """Softmax over the last axis: turns scores into probabilities that sum to 1."""
    return jax.nn.softmax(x, axis=-1)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": linear,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "hard_swish": jax.nn.hard_swish,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softmax": softmax,
}
"""Activation functions by the name a spec uses. ``softmax`` acts on the last axis."""


def activation(name: str) -> Callable[[Array], Array]:
    """Look up an activation function by name, with an error listing the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None
