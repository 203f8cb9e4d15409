"""A trained network outside jaxcnn: ONNX (onnxruntime, Netron) and serialized StableHLO (``jax.export``).

Both take exactly what :meth:`jaxcnn.runs.Run.predict` takes, uint8 NHWC images of the spec's input
shape in a batch of any size, and return what it returns, class probabilities: the run's
preprocessing (scaling, normalisation) and test-time augmentation are part of the exported graph.

The ONNX graph is built from the resolved spec, one node group per layer, named after the layers
(``conv1``, ``stage2.block1.add``, initializers ``conv1.kernel``) so it reads like ``jaxcnn summary``;
what each layer type becomes is its ``to_onnx`` in :mod:`jaxcnn.layer_types`. Files are written
to a temporary name beside the target and renamed into place, so a failure leaves nothing
half-written.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxcnn.errors import JaxcnnError
from jaxcnn.files import written_whole
from jaxcnn.spec import INPUT, NetworkSpec

if TYPE_CHECKING:
    import jax
    import numpy as np

    from jaxcnn.preprocess import Preprocess
    from jaxcnn.runs import Run

FORMATS = ("onnx", "stablehlo")
DEFAULT_OPSET = 17
"""ONNX opset of exported models (ONNX 1.12, 2022; read by onnxruntime 1.12 on and by Netron)."""
MIN_OPSET = 13


class ExportError(JaxcnnError):
    """A network or output that cannot be exported; the message names the layer or the file."""


class OnnxGraph:
    """The nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self._constants: dict[str, str] = {}

    def _unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._names:
            k += 1
            candidate = f"{name}.{k}"
        self._names.add(candidate)
        return candidate

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        """Add one node whose output is named (and the node called) ``name``; returns the output's name."""
        from onnx import helper

        output = self._unique(name)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def constant(self, name: str, value: Any) -> str:
        """Add a float32 (or int64, for shapes) initializer; returns its name. A name asked for again (a
        layer's weights in the mirrored pass of TTA) returns the first initializer: weights are stored once."""
        import numpy as np
        from onnx import numpy_helper

        if name in self._constants:
            return self._constants[name]
        array = np.asarray(value)
        array = array.astype(np.int64 if np.issubdtype(array.dtype, np.integer) else np.float32)
        unique = self._unique(name)
        self.initializers.append(numpy_helper.from_array(array, unique))
        self._constants[name] = unique
        return unique

    def activation(self, name: str, x: str, layer: str) -> str:
        """The activation ``name`` (a spec's word) applied to ``x``, in ONNX operators of this opset."""
        if name == "linear":
            return x
        out = f"{layer}.{name}"
        simple = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
        if name in simple:
            return self.node(simple[name], [x], out)
        if name == "leaky_relu":
            return self.node("LeakyRelu", [x], out, alpha=0.01)  # jax.nn.leaky_relu's slope
        if name == "elu":
            return self.node("Elu", [x], out, alpha=1.0)
        if name == "relu6":
            return self.node("Clip", [x, self.constant("relu6.min", 0.0), self.constant("relu6.max", 6.0)], out)
        if name == "hard_sigmoid":  # relu6(x + 3) / 6, as jax.nn and torch define it (ONNX's default alpha is 0.2)
            return self.node("HardSigmoid", [x], out, alpha=1 / 6, beta=0.5)
        if name == "hard_swish":
            return self.node("HardSwish", [x], out)
        if name == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"{out}.sigmoid")], out)
        if name == "softmax":
            return self.node("Softmax", [x], out, axis=1)  # classes (flat) or channels (NCHW)
        if name == "gelu":  # jax.nn.gelu's default, the tanh approximation
            if self.opset >= 20:
                return self.node("Gelu", [x], out, approximate="tanh")
            cube = self.node("Mul", [x, self.node("Mul", [x, x], f"{out}.square")], f"{out}.cube")
            inner = self.node("Add", [x, self.node("Mul", [cube, self.constant(f"{out}.c", 0.044715)], f"{out}.k")],
                              f"{out}.inner")  # fmt: skip
            scaled = self.node("Mul", [inner, self.constant(f"{out}.s", math.sqrt(2 / math.pi))], f"{out}.scaled")
            half = self.node("Mul", [x, self.constant(f"{out}.half", 0.5)], f"{out}.halfx")
            one_plus = self.node("Add", [self.node("Tanh", [scaled], f"{out}.tanh"), self.constant(f"{out}.one", 1.0)],
                                 f"{out}.one_plus")  # fmt: skip
            return self.node("Mul", [half, one_plus], out)
        raise ExportError(f"the activation {name!r} of layer {layer!r} has no ONNX form here")


def _check_onnx_installed() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'jaxcnn[export]'") from None


def onnx_model(
    spec: NetworkSpec,
    params: Any,
    state: Any,
    preprocess: Preprocess,
    *,
    tta: bool = False,
    opset: int = DEFAULT_OPSET,
    graph_name: str | None = None,
) -> Any:
    """The network (evaluation form, final softmax included) as an ``onnx.ModelProto`` taking uint8
    NHWC images of ``spec``'s input shape and returning what ``Run.predict`` returns."""
    _check_onnx_installed()
    import onnx
    from onnx import TensorProto, helper

    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(f"--opset {opset}: choose from {MIN_OPSET} to {onnx.defs.onnx_opset_version()}")
    g = OnnxGraph(opset)
    h, w, c = spec.input_shape
    x = g.node("Cast", ["images"], "preprocess.float", to=TensorProto.FLOAT)
    x = g.node("Div", [x, g.constant("preprocess.255", 255.0)], "preprocess.scale")
    if preprocess.mean is not None and preprocess.std is not None:
        x = g.node("Sub", [x, g.constant("preprocess.mean", preprocess.mean)], "preprocess.centre")
        x = g.node("Div", [x, g.constant("preprocess.std", preprocess.std)], "preprocess.normalise")
    nchw = g.node("Transpose", [x], "preprocess.to_nchw", perm=[0, 3, 1, 2])
    out = _network(g, spec, params, state, nchw, "")
    if tta:  # the mean of each image's and its mirror image's probabilities, as Run.predict does
        mirrored = g.node("Slice", [nchw, *(g.constant(f"mirror.{k}", [v]) for k, v in
                                            (("starts", -1), ("ends", -(2**62)), ("axes", 3), ("steps", -1)))],
                          "mirror")  # fmt: skip
        other = _network(g, spec, params, state, mirrored, "mirror/")
        total = g.node("Add", [out, other], "tta.sum")
        out = g.node("Mul", [total, g.constant("tta.half", 0.5)], "tta.mean")
    if len(spec.output_shape) == 3:
        out = g.node("Transpose", [out], "output.to_nhwc", perm=[0, 2, 3, 1])
    g.node("Identity", [out], "probabilities")
    inputs = [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", h, w, c])]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", *spec.output_shape])]
    graph = helper.make_graph(g.nodes, graph_name or spec.name, inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="jaxcnn")
    model.doc_string = spec.description
    onnx.checker.check_model(model)
    return model


def _network(g: OnnxGraph, spec: NetworkSpec, params: Any, state: Any, x: str, prefix: str) -> str:
    """The layers over the graph from ``x`` (NCHW), each followed by its activation; the output's name."""
    import numpy as np

    values = {INPUT: x}
    for layer in spec.layers:
        inputs = [values[name] for name in layer.inputs]
        weights = {k: np.asarray(v) for k, v in params.get(layer.name, {}).items()}
        layer_state = {k: np.asarray(v) for k, v in state.get(layer.name, {}).items()}
        try:
            y = layer.to_onnx(_Prefixed(g, prefix), inputs, weights, layer_state)
        except NotImplementedError as err:
            raise ExportError(f"layer {layer.index} ({layer.type} {layer.name!r}): {err}") from None
        values[layer.name] = _Prefixed(g, prefix).activation(layer.activation, y, layer.name)
    return values[spec.output_layer.name]


class _Prefixed:
    """An OnnxGraph whose new names start with ``prefix`` (the mirrored copy of a TTA graph reuses nothing)."""

    def __init__(self, graph: OnnxGraph, prefix: str) -> None:
        self._graph, self._prefix = graph, prefix

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        return self._graph.node(op, inputs, self._prefix + name, **attributes)

    def constant(self, name: str, value: Any) -> str:
        return self._graph.constant(name, value)  # weights are shared, not copied

    def activation(self, name: str, x: str, layer: str) -> str:
        return OnnxGraph.activation(self, name, x, self._prefix + layer)  # type: ignore[arg-type]

    @property
    def opset(self) -> int:
        return self._graph.opset


def is_export(path: Path, format: str) -> bool:
    """Whether the regular file ``path`` is a network exported as ``format``: a valid ONNX model with a graph,
    or serialized StableHLO that ``jax.export`` reads back. Only such a file may be replaced (``--overwrite``)."""
    if format == "onnx":
        _check_onnx_installed()
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # protobuf's DecodeError and friends: not ONNX
            return False
        return model.ir_version > 0 and len(model.graph.node) > 0
    import jax

    try:
        jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # flatbuffers raises whatever a bad offset leads to: not an export
        return False
    return True


def check_target(path: Path, format: str, overwrite: bool) -> None:
    """Refuse an ``--out`` whose writing could destroy something: a path inside a run folder (its config,
    checkpoints or metrics), anything that exists and is not a regular file (a folder, a device such as
    /dev/null, a FIFO, a symbolic link), an existing file without ``overwrite``, and even with it a file that
    is not a previous export of the same format (a spec, an image, an export of the other format)."""
    from jaxcnn.run_folder import enclosing_run

    run = enclosing_run(path)
    if run is not None:
        raise ExportError(f"{path}: is inside the run folder {run}; export never writes into a run, so it "
                          "cannot replace the run's own files. Choose an --out outside it")  # fmt: skip
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"{path}: the folder {folder} does not exist; create it first")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise ExportError(f"{path}: cannot be checked ({err.strerror}); choose another --out") from None
    if stat.S_ISDIR(info.st_mode):
        raise ExportError(f"{path}: is a folder; --out names the file to write")
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise ExportError(f"{path}: exists and is {kind}; export writes only new files or replaces a previous "
                          "export. Choose another --out")  # fmt: skip
    if not overwrite:
        raise ExportError(f"{path}: already exists; pass --overwrite to replace a previous {format} export, or "
                          "choose another --out")  # fmt: skip
    if not is_export(path, format):
        raise ExportError(f"{path}: is not a {format} export, and --overwrite replaces only a previous export of "
                          "the same format; nothing was changed. Choose another --out")  # fmt: skip


@contextlib.contextmanager
def _written_whole(path: Path) -> Iterator[Path]:
    """:func:`jaxcnn.files.written_whole`, with ``--out``'s mistakes as one-line errors (call
    :func:`check_target` first)."""
    try:
        with written_whole(path) as temporary:
            yield temporary
    except OSError as err:
        folder = path.parent if str(path.parent) else Path(".")
        raise ExportError(f"{path}: cannot write in {folder} ({err.strerror}); choose another --out") from None


def export_onnx(run: Run, out: str | Path, opset: int = DEFAULT_OPSET, *, overwrite: bool = False) -> Path:
    """Write ``run``'s network as an ONNX file at ``out``; returns the path. An existing ``out`` is replaced
    only with ``overwrite`` and only if it is an ONNX export (:func:`check_target`)."""
    import onnx

    path = Path(out)
    check_target(path, "onnx", overwrite)  # before the work: a refusal is quick and writes nothing
    model = onnx_model(run.model.spec, run.params, run.state, run.preprocess, tta=run.tta, opset=opset)
    with _written_whole(path) as temporary:
        onnx.save(model, str(temporary))
    return path


def stablehlo_function(run: Run) -> Callable[[jax.Array], jax.Array]:
    """uint8 images -> probabilities for ``run``, with its weights as constants (plain ``lax`` layers,
    which every backend compiles)."""
    from jaxcnn.model import Model, mirror_views

    model = Model(run.model.spec, impl="lax")
    params, state = run.params, run.state

    def one_view(images: jax.Array) -> jax.Array:
        return model.predict(params, run.preprocess.to_float(images), state)

    def probabilities(images: jax.Array) -> jax.Array:
        return mirror_views(one_view, images).mean(axis=0) if run.tta else one_view(images)

    return probabilities


def export_stablehlo(run: Run, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``run``'s network as serialized StableHLO (``jax.export``, symbolic batch size) at ``out``. An
    existing ``out`` is replaced only with ``overwrite`` and only if it is a StableHLO export."""
    import jax
    import numpy as np

    path = Path(out)
    check_target(path, "stablehlo", overwrite)
    h, w, c = run.model.spec.input_shape
    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(stablehlo_function(run)))(jax.ShapeDtypeStruct((batch, h, w, c), np.uint8))
    with _written_whole(path) as temporary:
        temporary.write_bytes(exported.serialize())
    return path


def load_exported(path: str | Path) -> Callable[[Any], np.ndarray]:
    """A function from uint8 images (N, H, W, C) to class probabilities, from a file written by
    ``jaxcnn export --format stablehlo``; needs JAX, not the spec or the run. It refuses what
    ``load_run(RUN).predict`` refuses (another dtype, another image shape), with the same message."""
    import jax
    import numpy as np

    from jaxcnn.model import check_uint8_images

    try:
        exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except Exception as err:
        raise ExportError(f"{path}: not a jaxcnn StableHLO export ({type(err).__name__}: {str(err)[:120]})") from None
    (images_aval,), (output_aval,) = exported.in_avals, exported.out_avals
    input_shape, output_shape = tuple(images_aval.shape[1:]), tuple(output_aval.shape[1:])

    def probabilities(images: Any) -> np.ndarray:
        images = check_uint8_images(images, str(path), input_shape)
        if len(images) == 0:  # the symbolic batch size is at least 1; the ONNX file answers (0, classes) too
            return np.zeros((0, *output_shape), np.float32)
        return np.asarray(exported.call(images))

    return probabilities
