"""What every layer type has, and the registry that holds them: :class:`Layer` (fields, shapes, apply,
ONNX form, explain), :class:`FieldInfo`, :class:`Pass`, the helpers the types share, and
:func:`register_layer`, which enters a type (built-in or a user's own) in :data:`LAYER_TYPES`.

Importing this module imports neither JAX nor NumPy (see :mod:`jaxcnn.layer_types`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from jaxcnn import spec_checks as C
from jaxcnn.errors import JaxcnnError
from jaxcnn.spec_checks import IntPair, PaddingPairs, Shape, Where

if TYPE_CHECKING:
    import jax
    import numpy as np

MAX_WIDTH = 65536  # filters, units, groups
TRUNCATED_NORMAL_STD = 0.87962566103423978
"""Standard deviation of a standard normal truncated to [-2, 2], which LeCun-normal divides by."""


@dataclass(frozen=True)
class FieldInfo:
    """One field a layer type accepts: its JSON Schema (with any default) and what it means."""

    schema: dict[str, Any]
    doc: str
    required: bool = False


def _ref(name: str, **extra: Any) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}", **extra}


INPUTS_FIELD = FieldInfo(
    _ref("inputs"),
    "the layer(s) it reads, by name (\"input\" is the network's or block's input); default: the layer before it",
)


@dataclass(frozen=True)
class Pass:
    """How one forward pass runs: training or evaluation, its random key, and the layer implementations."""

    training: bool = False
    key: Any = None
    impl: str = "auto"


@dataclass(frozen=True, kw_only=True)
class Layer:
    """What every resolved layer has: its position, name, type, inputs and shapes (without batch).

    ``index`` is the layer's place in the expanded network (blocks expanded), ``name`` its
    qualified name (``stage2.block1.conv1`` inside blocks), ``inputs`` the names of the layers it
    reads (``"input"`` for the network's input) and ``input_shapes`` their shapes;
    ``input_shape`` is the first of them.
    """

    TYPE: ClassVar[str] = ""
    """The word a spec's ``type`` names the layer type by."""
    PREFIX: ClassVar[str] = ""
    """The start of the default names of its layers (``conv`` gives ``conv1``, ``conv2``, ...)."""
    DOC: ClassVar[str] = ""
    """What the layer type does, in a line (summary docs, the schema)."""
    FIELDS: ClassVar[dict[str, FieldInfo]] = {}
    """The fields a spec may give it besides ``type``, ``name`` and ``inputs``, each with its schema and default."""
    MERGES: ClassVar[bool] = False
    """Whether the layer reads two or more inputs (add, concat) rather than exactly one."""
    INPUT_RANKS: ClassVar[tuple[int, ...]] = (1, 3)
    """The inputs it takes: 3 for H x W x C images, 1 for flat vectors."""

    index: int
    name: str
    type: str
    input_shape: Shape
    output_shape: Shape
    inputs: tuple[str, ...] = ("input",)
    input_shapes: tuple[Shape, ...] = ()
    activation: str = "linear"
    """The activation the model applies to the layer's output (types with an ``activation`` field set it)."""

    @classmethod
    def field_value(cls, raw: dict[str, Any], name: str) -> Any:
        """The spec's value of field ``name``, or its default as FIELDS states it (the one place it is written)."""
        return raw[name] if name in raw else cls.FIELDS[name].schema["default"]

    @classmethod
    def resolve(cls, at: Where, raw: dict[str, Any], common: dict[str, Any], is_output: bool) -> Layer:
        """Check ``raw``'s fields against ``common["input_shapes"]`` and build the resolved layer."""
        raise NotImplementedError

    def param_shapes(self) -> dict[str, Shape]:
        """The shapes of the layer's trainable weights, by name (empty for most types)."""
        return {}

    def state_shapes(self) -> dict[str, Shape]:
        """The shapes of the layer's non-trained state (batch norm's running statistics)."""
        return {}

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Initial weights: LeCun-normal kernels (Flax's default), zero biases, unit scales."""
        import numpy as np

        weights = {}
        for name, shape in self.param_shapes().items():
            if name == "kernel":
                weights[name] = lecun_normal(rng, shape)
            elif name == "scale":
                weights[name] = np.ones(shape, np.float32)
            else:
                weights[name] = np.zeros(shape, np.float32)
        return weights

    def init_state(self) -> dict[str, np.ndarray]:
        """The state before training (empty for stateless types)."""
        return {}

    def flops(self) -> int:
        """FLOPs for one example: 2 x multiply-adds (only conv and dense have any)."""
        return 0

    def settings_text(self) -> str:
        """The layer's settings in the article's words, for ``summary`` and ``draw``."""
        return ""

    def apply(self, weights: Any, state: Any, inputs: list[jax.Array], mode: Pass) -> tuple[jax.Array, Any]:
        """The layer's output (before its activation) and its new state."""
        raise NotImplementedError

    def to_onnx(self, graph: Any, inputs: list[str], weights: Any, state: Any) -> str:
        """Add the layer's evaluation form (before its activation) to an ONNX graph
        (:class:`jaxcnn.export.OnnxGraph`, NCHW inside); returns its output's name."""
        raise NotImplementedError(f"{self.type} layers cannot be exported to ONNX")

    def explain(self, weights: Any, x: np.ndarray, row: int, col: int, channel: int) -> dict[str, Any] | None:
        """How output pixel (row, col, channel) comes from the layer's input ``x`` (H x W x C, one image):
        the window it reads and the arithmetic, JSON-ready, for ``jaxcnn explore``. None where a type
        has no window to show."""
        return None


def _window(
    x: np.ndarray,
    row: int,
    col: int,
    size: IntPair,
    stride: IntPair,
    padding: PaddingPairs,
    dilation: IntPair,
    fill: float,
) -> tuple[np.ndarray, list[int], list[int], np.ndarray]:
    """The input window (f x f x C, float64) an output pixel reads; padded taps hold ``fill``. Also the
    input rows and columns of the taps (negative or past the edge: padding) and which taps are inside."""
    import numpy as np

    rows = [row * stride[0] - padding[0][0] + i * dilation[0] for i in range(size[0])]
    cols = [col * stride[1] - padding[1][0] + j * dilation[1] for j in range(size[1])]
    inside = np.array([[0 <= r < x.shape[0] and 0 <= c < x.shape[1] for c in cols] for r in rows])
    window = np.full((size[0], size[1], x.shape[2]), fill, np.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if inside[i, j]:
                window[i, j] = x[r, c]
    return window, rows, cols, inside


def lecun_normal(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Normal with variance 1 / fan_in, truncated at two standard deviations (as Flax and Keras do)."""
    import numpy as np

    fan_in = math.prod(shape[:-1])  # kernel height x width x input channels, or dense inputs
    z = rng.standard_normal(shape)
    outside = np.abs(z) > 2
    while outside.any():  # redraw the ~5% beyond two standard deviations
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2
    return (z * (math.sqrt(1 / fan_in) / TRUNCATED_NORMAL_STD)).astype(np.float32)


def _pair_text(pair: IntPair) -> str:
    return f"{pair[0]}x{pair[1]}"


def _window_text(size: IntPair, stride: IntPair, padding: PaddingPairs) -> list[str]:
    (top, bottom), (left, right) = padding
    return [f"f={_pair_text(size)}", f"s={_pair_text(stride)}", f"p=({top},{bottom}),({left},{right})"]


def _image_input(at: Where, kind: str, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise at.error(
            f"a {kind} layer needs a height x width x channels input, but its input is already flat "
            f"({shape[0]} features); move it before the flatten layer"
        )
    return shape


def _activation_text(activation: str, use_bias: bool | None) -> list[str]:
    return [activation] + (["no bias"] if use_bias is False else [])


def _layers() -> Any:
    from jaxcnn import layers

    return layers


ACTIVATION = FieldInfo(_ref("activation", default="linear"), "applied to the output: " + ", ".join(C.ACTIVATION_NAMES))
USE_BIAS = FieldInfo({"type": "boolean", "default": True}, "add a learned bias (false before a batch_norm)")


LAYER_TYPES: dict[str, type[Layer]] = {}
"""Every layer type a spec may use, by its ``type`` word, in the order they were registered (the docs' order)."""

PROVIDERS: dict[str, str] = {}
"""The module that registered each layer type (``jaxcnn.layer_types`` for the built-in ones)."""

_TYPE_WORD = re.compile(r"[a-z][a-z0-9_]{0,63}")

L = TypeVar("L", bound=type[Layer])


class RegistryError(JaxcnnError, TypeError):
    """A layer type that cannot be registered; the message says what it lacks."""


def register_layer(cls: L) -> L:
    """Register a layer type so that specs can use it: ``@jaxcnn.register_layer`` above a frozen, keyword-only
    dataclass that subclasses :class:`Layer` and sets ``TYPE``, ``PREFIX``, ``DOC`` and ``FIELDS`` and
    defines ``resolve`` and ``apply`` (and, as needed, ``param_shapes``, ``state_shapes``, ``flops``,
    ``settings_text``, ``to_onnx``). Loading, validation, the schema, summaries, diagrams, training, the
    explorer and export then know it. Returns the class, so it works as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)) or cls is Layer:
        raise RegistryError(f"register_layer takes a subclass of jaxcnn.layer_types.Layer, got {cls!r}")
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(cls.TYPE, str) or not _TYPE_WORD.fullmatch(cls.TYPE):
        raise RegistryError(f"{where}: TYPE must be a lower-case word (letters, digits, _), got {cls.TYPE!r}")
    known = LAYER_TYPES.get(cls.TYPE)
    if known is not None and f"{known.__module__}.{known.__qualname__}" != where:
        raise RegistryError(f"{where}: the layer type {cls.TYPE!r} is already registered by "
                            f"{known.__module__}.{known.__qualname__}; choose another TYPE")  # fmt: skip
    if not isinstance(cls.PREFIX, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", cls.PREFIX):
        raise RegistryError(f"{where}: PREFIX must be a name (letters, digits, _), got {cls.PREFIX!r}")
    reserved = {"type", "name", "inputs"} & set(cls.FIELDS)
    if reserved or not all(isinstance(info, FieldInfo) for info in cls.FIELDS.values()):
        raise RegistryError(f"{where}: FIELDS maps field names other than type, name and inputs to FieldInfo")
    if cls.resolve.__func__ is Layer.resolve.__func__ or cls.apply is Layer.apply:  # type: ignore[attr-defined]
        raise RegistryError(f"{where}: a layer type defines resolve (check the spec's fields, build the layer) "
                            "and apply (compute its output)")  # fmt: skip
    LAYER_TYPES[cls.TYPE] = cls
    PROVIDERS[cls.TYPE] = cls.__module__
    return cls


def unregister_layer(kind: str) -> None:
    """Forget a registered layer type (for tests that register one of their own)."""
    LAYER_TYPES.pop(kind, None)
    PROVIDERS.pop(kind, None)


def allowed_fields(kind: str) -> tuple[str, ...]:
    """The fields a layer of type ``kind`` accepts, in the order error messages list them."""
    return ("type", "name", *LAYER_TYPES[kind].FIELDS, "inputs")


def required_fields(kind: str) -> tuple[str, ...]:
    return tuple(name for name, info in LAYER_TYPES[kind].FIELDS.items() if info.required)
