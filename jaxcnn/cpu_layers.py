"""Formulations of convolution and max pooling that XLA's CPU backend runs faster.

Each computes the same function and gradient as the plain ``lax`` version in
:mod:`jaxcnn.layers` (``tests/test_cpu_layers.py`` compares them, ties included); they differ
only in how XLA is asked to do the work:

- a convolution over few input channels as a sum of shifted slices times kernel taps, which XLA
  fuses into one elementwise loop;
- weight gradients computed ``WGRAD_CHUNK`` images at a time and summed (XLA's CPU weight
  gradient slows down per image as the batch grows);
- gradients of stride-1 convolutions as convolutions in XLA's own NHWC/HWIO layout
  (:func:`input_gradient_conv`, :func:`kernel_gradient_conv`), which the CPU backend runs fast
  inside loops too (``lax.scan`` over repeated blocks), where it runs any other layout 20x slower;
- the input gradient as the transpose of matrix products and shifted adds
  (:func:`column_stacked_conv`, :func:`row_stacked_conv`) where :func:`input_gradient_form` finds
  that faster than XLA's transposed convolution;
- max pooling whose windows tile the input as a maximum of strided slices, its gradient sent to
  each window's first maximal position as ``reduce_window``'s is;
- stored intermediates (:func:`materialize`) where XLA's fusion of strided reads would be slower,
  and conv + max pool as one step for inference (:func:`conv_max_pool`).

On other backends (GPU, TPU), :func:`jaxcnn.layers.conv2d` and ``max_pool`` use the plain
versions. What each form gains, measured, is in ``docs/performance.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.geometry import IntPair, PaddingPairs, output_size

WGRAD_CHUNK = 16
"""Images per chunk of the weight-gradient computation in the backward pass."""

COLUMN_FORM_MAX_FEATURES = 16
"""A stride-1 convolution with at most this many output channels takes the transpose of
:func:`column_stacked_conv` as its input gradient (see :func:`input_gradient_form`)."""

STACKED_FORM_MAX_FLOATS = 2**21
"""The largest intermediate product (floats, 8 MiB) for which a stacked form's transpose is
used; beyond it XLA's own transposed convolution (see :func:`input_gradient_form`)."""

SHIFT_ADD_MAX_TAPS = 32
"""Use the shifted-slice forward when (input channels x filter height x filter width) is at most this."""

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def lax_conv(x: jax.Array, kernel: jax.Array, stride: IntPair, pads: PaddingPairs, dilation: IntPair,
             groups: int) -> jax.Array:  # fmt: skip
    """The plain XLA convolution (NHWC, HWIO)."""
    return lax.conv_general_dilated(
        x, kernel, stride, pads, rhs_dilation=dilation, dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups
    )


def _padded_input(
    x: jax.Array, size: IntPair, stride: IntPair, pads: PaddingPairs, dilation: IntPair
) -> tuple[jax.Array, int, int]:
    """The zero-padded input and the output height and width (the article's formula)."""
    out_h = output_size(x.shape[1], size[0], stride[0], *pads[0], dilation[0])
    out_w = output_size(x.shape[2], size[1], stride[1], *pads[1], dilation[1])
    return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))), out_h, out_w


def _shift_add_conv(
    x: jax.Array, kernel: jax.Array, stride: IntPair, pads: PaddingPairs, dilation: IntPair
) -> jax.Array:
    """sum over taps (i, j, c) of the strided input slice under that tap times kernel[i, j, c, :]."""
    padded, out_h, out_w = _padded_input(x, (kernel.shape[0], kernel.shape[1]), stride, pads, dilation)
    return _shift_add_taps(padded, kernel, (0, 0), stride, (out_h, out_w), dilation)


def _shift_add_taps(
    padded: jax.Array, kernel: jax.Array, origin: IntPair, step: IntPair, out_hw: IntPair, dilation: IntPair
) -> jax.Array:
    """The outputs at rows origin[0] + step[0] * a and columns origin[1] + step[1] * b of the
    convolution of an already padded input, as a sum of strided slices times kernel taps."""
    fh, fw, channels, features = kernel.shape
    n = padded.shape[0]
    # lax arithmetic, not jnp operators, each of which traces a nested jit: these unrolled loops
    # were half of the training step's tracing, which is part of its compile time.
    dtype = jnp.result_type(padded, kernel)
    padded = lax.convert_element_type(padded, dtype)
    taps = lax.convert_element_type(kernel, dtype).reshape(fh * fw * channels, features)
    out_shape = (n, out_hw[0], out_hw[1], features)
    total = None
    for i in range(fh):
        for j in range(fw):
            top, left = origin[0] + i * dilation[0], origin[1] + j * dilation[1]
            for c in range(channels):
                tap = lax.slice(
                    padded,
                    (0, top, left, c),
                    (n, top + step[0] * (out_hw[0] - 1) + 1, left + step[1] * (out_hw[1] - 1) + 1, c + 1),
                    (1, step[0], step[1], 1),
                )
                weight = lax.index_in_dim(taps, (i * fw + j) * channels + c, keepdims=False)
                term = lax.mul(lax.broadcast_in_dim(tap, out_shape, (0, 1, 2, 3)),
                               lax.broadcast_in_dim(weight, out_shape, (3,)))  # fmt: skip
                total = term if total is None else lax.add(total, term)
    assert total is not None  # a kernel has at least one tap
    return total


def _rows_under_kernel_row(padded: jax.Array, i: int, stride: IntPair, dilation: IntPair, out_h: int) -> jax.Array:
    """The padded input's rows that kernel row ``i`` meets, one per output row: (N, H', Wp, C)."""
    n, _, width, channels = padded.shape
    top = i * dilation[0]
    return lax.slice(padded, (0, top, 0, 0), (n, top + stride[0] * (out_h - 1) + 1, width, channels),
                     (1, stride[0], 1, 1))  # fmt: skip


def row_stacked_conv(
    x: jax.Array, kernel: jax.Array, stride: IntPair, pads: PaddingPairs, dilation: IntPair
) -> jax.Array:
    """The convolution as one matrix product per kernel row (groups = 1).

    For kernel row i: the input rows under it, then the fw column slices of those stacked on
    a new axis, give (N, H', W', fw * C) patches that one matmul with ``kernel[i]`` maps to the
    output. Its use is its transpose, the input gradient: per row a matmul with ``kernel[i]``
    transposed, fw shifted adds along the width, one shifted add along the height (see
    :func:`input_gradient_form` for where it beats XLA's own transposed convolution).
    """
    fh, fw, channels, features = kernel.shape
    n = x.shape[0]
    padded, out_h, out_w = _padded_input(x, (fh, fw), stride, pads, dilation)
    total = None
    span = stride[1] * (out_w - 1) + 1  # the width one column slice covers
    steps = (1, 1, stride[1], 1)
    for i in range(fh):
        rows = _rows_under_kernel_row(padded, i, stride, dilation, out_h)
        columns = [
            lax.slice(rows, (0, 0, j * dilation[1], 0), (n, out_h, j * dilation[1] + span, channels), steps)
            for j in range(fw)
        ]
        patches = jnp.stack(columns, axis=3).reshape(n * out_h * out_w, fw * channels)
        term = (patches @ kernel[i].reshape(fw * channels, features)).reshape(n, out_h, out_w, features)
        total = term if total is None else total + term
    assert total is not None  # a kernel has at least one row
    return total


def column_stacked_conv(
    x: jax.Array, kernel: jax.Array, stride: IntPair, pads: PaddingPairs, dilation: IntPair
) -> jax.Array:
    """The convolution as one matrix product over (kernel row, input channel) (groups = 1).

    The input rows under each kernel row, stacked on a new axis, give (N, H', Wp, fh * C)
    patches at every padded input column; one matmul with the kernel reshaped to
    (fh * C, fw * O) gives, for each column and each kernel column j, that column's
    contribution to output column (w - j) / stride; a sum of fw width slices of it is the
    output. Its use is its transpose, the input gradient: fw width-shifted copies of the
    output gradient side by side, one matmul with contraction fw * O, fh shifted adds along
    the height. When O is small the row form's matmuls contract over only O.
    """
    fh, fw, channels, features = kernel.shape
    n = x.shape[0]
    padded, out_h, out_w = _padded_input(x, (fh, fw), stride, pads, dilation)
    width = padded.shape[2]
    rows = [_rows_under_kernel_row(padded, i, stride, dilation, out_h) for i in range(fh)]
    patches = jnp.stack(rows, axis=3).reshape(n * out_h * width, fh * channels)
    columns = patches @ kernel.transpose(0, 2, 1, 3).reshape(fh * channels, fw * features)
    total = None
    for j in range(fw):
        left = j * dilation[1]
        part = columns[:, j * features : (j + 1) * features].reshape(n, out_h, width, features)
        term = lax.slice(part, (0, 0, left, 0), (n, out_h, left + stride[1] * (out_w - 1) + 1, features),
                         (1, 1, stride[1], 1))  # fmt: skip
        total = term if total is None else total + term
    assert total is not None  # a kernel has at least one column
    return total


def input_gradient_form(
    x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: IntPair, pads: PaddingPairs, dilation: IntPair
) -> str:
    """How the input gradient of a convolution with groups = 1 is computed: the transpose of
    ``"column"`` (:func:`column_stacked_conv`), of ``"row"`` (:func:`row_stacked_conv`), or
    ``"lax"``: XLA's transposed convolution.

    The column form for stride 1 and at most ``COLUMN_FORM_MAX_FEATURES`` output channels (where
    the row form's matmuls would contract over only those few), the row form while its product
    stays within ``STACKED_FORM_MAX_FLOATS``, XLA's own beyond that (it stores no such product).
    The rule follows ``benchmarks/tools/input_gradient_forms.py``'s measurements, which are in
    ``docs/performance.md``.
    """
    n, fh, fw, channels, features = x_shape[0], *kernel_shape
    out_h = output_size(x_shape[1], fh, stride[0], *pads[0], dilation[0])
    out_w = output_size(x_shape[2], fw, stride[1], *pads[1], dilation[1])
    padded_w = x_shape[2] + pads[1][0] + pads[1][1]
    column_floats = n * out_h * padded_w * max(fw * features, fh * channels)
    if stride == (1, 1) and features <= COLUMN_FORM_MAX_FEATURES and column_floats <= STACKED_FORM_MAX_FLOATS:
        return "column"
    if n * out_h * out_w * fw * channels <= STACKED_FORM_MAX_FLOATS:
        return "row"
    return "lax"


def uses_shift_add(kernel_shape: tuple[int, ...], groups: int) -> bool:
    fh, fw, channels, _ = kernel_shape
    return groups == 1 and fh * fw * channels <= SHIFT_ADD_MAX_TAPS


def is_zero_tangent(tangent: object) -> bool:
    """Whether a custom JVP's tangent is JAX's symbolic zero (that input is not being differentiated)."""
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def conv(x: jax.Array, kernel: jax.Array, stride: IntPair, pads: PaddingPairs, dilation: IntPair,
         groups: int) -> jax.Array:  # fmt: skip
    """Convolution with the CPU-fast forward and gradients described in the module docstring.

    A custom JVP (not a VJP), so forward-mode differentiation works too. Its tangent is linear:
    ``conv(dx, kernel) + conv(x, dkernel)``, the second computed ``WGRAD_CHUNK`` images at a time;
    reverse mode transposes it into XLA's input gradient plus a sum of per-chunk weight gradients.
    """
    if uses_shift_add(kernel.shape, groups):
        return _shift_add_conv(x, kernel, stride, pads, dilation)
    return lax_conv(x, kernel, stride, pads, dilation, groups)


def _conv_jvp(
    stride: IntPair,
    pads: PaddingPairs,
    dilation: IntPair,
    groups: int,
    primals: tuple[jax.Array, jax.Array],
    tangents: tuple[object, object],
) -> tuple[jax.Array, jax.Array]:
    x, kernel = primals
    dx, dkernel = tangents
    y = conv(x, kernel, stride, pads, dilation, groups)
    if uses_shift_add(kernel.shape, groups):
        y = materialize(y)  # else XLA recomputes the fused loop in the backward pass for the ReLU's mask
    dy = _conv_tangent(x, kernel, dx, dkernel, stride, pads, dilation, groups)
    return y, jnp.zeros_like(y) if dy is None else dy


def transposed_tangent(
    linear: Callable[[jax.Array], jax.Array], argument: jax.ShapeDtypeStruct, tangent: object
) -> jax.Array:
    """``linear``'s transpose applied to ``tangent`` (``linear`` takes arrays shaped like ``argument``).

    A tangent written this way is what a custom JVP needs when the gradient must take a given
    form: reverse mode transposes the tangent back into ``linear``, operation for operation.
    """
    return jax.linear_transpose(linear, argument)(tangent)[0]


def has_layout_gradients(stride: IntPair, dilation: IntPair, groups: int) -> bool:
    """Whether both gradients are computed as NHWC/HWIO convolutions (:func:`input_gradient_conv`,
    :func:`kernel_gradient_conv`): stride 1, no dilation, no groups."""
    return stride == (1, 1) and dilation == (1, 1) and groups == 1


def turned_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of a stride-1 convolution's input gradient: turned half a circle, its input and
    output channel axes swapped (HWIO)."""
    return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def input_gradient_pads(kernel_shape: tuple[int, ...], pads: PaddingPairs) -> PaddingPairs:
    """The padding of a stride-1 convolution's input gradient: ``f - 1 - p`` on each side (negative: cropped)."""
    fh, fw = kernel_shape[0], kernel_shape[1]
    return ((fh - 1 - pads[0][0], fh - 1 - pads[0][1]), (fw - 1 - pads[1][0], fw - 1 - pads[1][1]))


def input_gradient_conv(dy: jax.Array, kernel: jax.Array, pads: PaddingPairs) -> jax.Array:
    """The input gradient of a stride-1 convolution, itself a convolution in NHWC/HWIO
    (:func:`turned_kernel`, :func:`input_gradient_pads`)."""
    return lax_conv(dy, turned_kernel(kernel), (1, 1), input_gradient_pads(kernel.shape, pads), (1, 1), 1)


def kernel_gradient_conv(x: jax.Array, dy: jax.Array, pads: PaddingPairs) -> jax.Array:
    """The kernel gradient of a stride-1 convolution, ``WGRAD_CHUNK`` images at a time, each chunk a
    convolution in NHWC/HWIO: the input with channels as its batch (C, H, W, N) by the output
    gradient as a kernel (H', W', N, K) gives (C, fh, fw, K), turned into HWIO at the end."""
    total = None
    for start in range(0, x.shape[0], WGRAD_CHUNK):
        images = jnp.transpose(x[start : start + WGRAD_CHUNK], (3, 1, 2, 0))
        gradients = jnp.transpose(dy[start : start + WGRAD_CHUNK], (1, 2, 0, 3))
        part = lax_conv(images, gradients, (1, 1), pads, (1, 1), 1)
        total = part if total is None else total + part
    assert total is not None  # a batch has at least one image
    return jnp.transpose(total, (1, 2, 0, 3))


def _conv_tangent(
    x: jax.Array,
    kernel: jax.Array,
    dx: object,
    dkernel: object,
    stride: IntPair,
    pads: PaddingPairs,
    dilation: IntPair,
    groups: int,
) -> jax.Array | None:
    """``conv(dx, kernel) + conv(x, dkernel)`` in the forms whose transposes are fast (None: both zero)."""
    terms = []
    in_layout = has_layout_gradients(stride, dilation, groups)
    y_like = jax.ShapeDtypeStruct(  # the output's shape, for the transposed forms
        (x.shape[0], *(output_size(x.shape[1 + a], kernel.shape[a], stride[a], *pads[a], dilation[a]) for a in (0, 1)),
         kernel.shape[3]), jnp.result_type(x, kernel))  # fmt: skip
    if not is_zero_tangent(dx):
        form = input_gradient_form(x.shape, kernel.shape, stride, pads, dilation) if groups == 1 else "lax"
        if form != "lax":  # reverse mode transposes this into the faster input gradient
            # materialize's transpose writes that gradient to memory before the layer below reads it.
            stacked = column_stacked_conv if form == "column" else row_stacked_conv
            terms.append(stacked(materialize(dx), kernel, stride, pads, dilation))  # type: ignore[arg-type]
        elif in_layout:
            terms.append(transposed_tangent(lambda dy: input_gradient_conv(dy, kernel, pads), y_like, dx))
        else:
            terms.append(lax_conv(dx, kernel, stride, pads, dilation, groups))  # type: ignore[arg-type]
    if not is_zero_tangent(dkernel):
        if in_layout:
            terms.append(transposed_tangent(lambda dy: kernel_gradient_conv(x, dy, pads), y_like, dkernel))
        else:
            chunks = [
                lax_conv(x[start : start + WGRAD_CHUNK], dkernel, stride, pads, dilation, groups)  # type: ignore[arg-type]
                for start in range(0, x.shape[0], WGRAD_CHUNK)
            ]
            terms.append(chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks, axis=0))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


conv.defjvp(_conv_jvp, symbolic_zeros=True)


def fuses_with_max_pool(kernel_shape: tuple[int, ...], stride: IntPair, groups: int) -> bool:
    """Whether :func:`conv_max_pool` applies: a stride-1 convolution with the shifted-slice forward."""
    return stride == (1, 1) and uses_shift_add(kernel_shape, groups)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def conv_max_pool(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, pads: PaddingPairs, dilation: IntPair, size: IntPair, relu: bool
) -> jax.Array:
    """``max_pool(act(conv(x, kernel) + bias), size)`` for a stride-1 convolution and a tiled
    pool, ``act`` ReLU if ``relu`` else the identity.

    Computed by phases: the outputs at window position (p, q) of every pooling window form a
    convolution with stride = the window size, and the pool is the elementwise maximum of the
    fh*fw phases, so no feature map is stored and read back through strided slices. Each phase
    sums the same taps in the same order as :func:`_shift_add_conv`, so the values are exactly
    those of the separate convolution and pool. The derivative is theirs (see the JVP below).
    """
    padded, pooled = _pool_phases_setup(x, kernel, pads, dilation, size)
    y = _phase_maximum(padded, kernel, bias, dilation, size, pooled)
    return jnp.maximum(y, 0) if relu else y  # relu(max) = max(relu), exactly


def _pool_phases_setup(
    x: jax.Array, kernel: jax.Array, pads: PaddingPairs, dilation: IntPair, size: IntPair
) -> tuple[jax.Array, IntPair]:
    padded, out_h, out_w = _padded_input(x, (kernel.shape[0], kernel.shape[1]), (1, 1), pads, dilation)
    return padded, (out_h // size[0], out_w // size[1])


def _phase_origins(size: IntPair) -> list[IntPair]:
    return [(p, q) for p in range(size[0]) for q in range(size[1])]


def _phase_maximum(
    padded: jax.Array, kernel: jax.Array, bias: jax.Array, dilation: IntPair, size: IntPair, pooled: IntPair
) -> jax.Array:
    """The elementwise maximum of the convolution's phases plus the bias: the pooled output."""
    phases = [_shift_add_taps(padded, kernel, origin, size, pooled, dilation) + bias for origin in _phase_origins(size)]
    return _maximum(phases)


def _conv_max_pool_jvp(
    pads: PaddingPairs,
    dilation: IntPair,
    size: IntPair,
    relu: bool,
    primals: tuple[jax.Array, jax.Array, jax.Array],
    tangents: tuple[object, object, object],
) -> tuple[jax.Array, jax.Array]:
    """The derivative of the separate fast convolution and pool (:func:`conv`, :func:`max_pool_tiled`).

    The phase form's own derivative is correct too but trained LeNet about 30% slower in XLA
    (four phase tangents and weight gradients), so only inference takes the phase form.
    """
    moving = [i for i, t in enumerate(tangents) if not is_zero_tangent(t)]

    def separate(*args: jax.Array) -> jax.Array:
        x, kernel, bias = (args[moving.index(i)] if i in moving else primals[i] for i in range(3))
        z = conv(x, kernel, (1, 1), pads, dilation, 1) + bias
        return max_pool_tiled(jax.nn.relu(z) if relu else z, size)

    if not moving:
        y = conv_max_pool(*primals, pads, dilation, size, relu)
        return y, jnp.zeros_like(y)
    return jax.jvp(separate, tuple(primals[i] for i in moving), tuple(tangents[i] for i in moving))


conv_max_pool.defjvp(_conv_max_pool_jvp, symbolic_zeros=True)


def materialize(x: jax.Array) -> jax.Array:
    """``x`` unchanged, but computed into memory before its consumers read it.

    XLA's CPU backend fuses an elementwise producer (say the shifted-slice convolution and its
    ReLU) into a consumer that reads it through strided slices, and the fused loop runs several
    times slower than the two loops apart. ``lax.optimization_barrier`` does not stop it (the CPU
    compiler removes barriers before fusion); writing one element back onto itself with
    ``dynamic_update_slice`` does, since XLA does not fuse an in-place update into its readers.
    """
    corner = (0,) * x.ndim
    return lax.dynamic_update_slice(x, lax.dynamic_slice(x, corner, (1,) * (x.ndim - 1) + (x.shape[-1],)), corner)


def tiles(size: IntPair, stride: IntPair, pads: PaddingPairs) -> bool:
    """True when pooling windows tile the input: stride = size and no padding (any input size:
    the rows and columns no window reaches are cropped, as the output-size formula says)."""
    return stride == size and pads == ((0, 0), (0, 0))


def _window_slices(x: jax.Array, size: IntPair, out_hw: tuple[int, int]) -> list[jax.Array]:
    """The input under each window position (i, j), strided by the window size: fh*fw arrays."""
    n, _, _, c = x.shape
    return [
        lax.slice(x, (0, i, j, 0), (n, i + size[0] * (out_hw[0] - 1) + 1, j + size[1] * (out_hw[1] - 1) + 1, c),
                  (1, size[0], size[1], 1))
        for i in range(size[0])
        for j in range(size[1])
    ]  # fmt: skip


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_pool_tiled(x: jax.Array, size: IntPair) -> jax.Array:
    """Max pooling with stride = size and no padding.

    Value: the maximum of one strided slice per window position (4 for 2x2), on a materialised
    input (:func:`materialize` stops XLA from fusing the producer, say a convolution, into the
    strided reads). Derivative: each window passes on the tangent of its first maximal position
    in row-major order, the choice ``reduce_window``'s own derivative makes, so the two agree
    even at ties. The tangent is read through the same strided slices, whose transposes (the
    gradient) XLA fuses into one loop.
    """
    out_hw = (x.shape[1] // size[0], x.shape[2] // size[1])
    return _maximum(_window_slices(materialize(x), size, out_hw))


def _maximum(parts: list[jax.Array]) -> jax.Array:
    result = parts[0]
    for part in parts[1:]:
        result = lax.max(result, part)  # propagates NaN, as reduce_window's maximum does
    return result


def _max_pool_jvp(size: IntPair, primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    x = materialize(primals[0])
    out_hw = (x.shape[1] // size[0], x.shape[2] // size[1])
    parts = _window_slices(x, size, out_hw)
    y = _maximum(parts)
    # The index (row-major within the window) of each window's first maximal position: walking
    # backwards, an earlier maximal position overwrites a later one.
    # (lax, not jnp, operators: see _shift_add_taps.)
    first_winner = lax.full(y.shape, len(parts) - 1, jnp.int32)
    for index in range(len(parts) - 2, -1, -1):
        first_winner = lax.select(lax.eq(parts[index], y), lax.full(y.shape, index, jnp.int32), first_winner)
    tangent_parts = _window_slices(tangents[0], size, out_hw)
    zeros = lax.full_like(tangent_parts[0], 0)
    dy = None
    for index, tangent_part in enumerate(tangent_parts):
        term = lax.select(lax.eq(first_winner, lax.full(y.shape, index, jnp.int32)), tangent_part, zeros)
        dy = term if dy is None else lax.add(dy, term)
    assert dy is not None  # a window has at least one position
    return y, dy


max_pool_tiled.defjvp(_max_pool_jvp)
