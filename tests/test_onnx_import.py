"""jaxcnn import against onnxruntime: each operator case built with onnx's helper API and compared on random
inputs (relative difference 1e-4), the flatten permutation, the errors (one line, nothing written), the round
trip of every shipped spec through export, and the command's run folder (predict on a PNG, fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from jaxcnn import cli  # noqa: E402
from jaxcnn.model import Model  # noqa: E402
from jaxcnn.onnx_import import read_onnx  # noqa: E402
from jaxcnn.spec import parse_spec  # noqa: E402

from conftest import NETWORK_SPECS  # noqa: E402

RNG = np.random.default_rng(0)


def weights(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (scale * RNG.normal(size=shape)).astype(np.float32)


def onnx_file(path: Path, nodes: list, constants: dict[str, np.ndarray], input_shape: list, output: str,
              opset: int = 17, input_type: int = TensorProto.FLOAT, output_rank: int = 2) -> Path:  # fmt: skip
    """A one-input, one-output model of ``nodes`` over the input ``x`` (NCHW) with ``constants`` as initializers."""
    graph = helper.make_graph(
        nodes, "case", [helper.make_tensor_value_info("x", input_type, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [f"d{i}" for i in range(output_rank)])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def imported_and_onnxruntime(path: Path, count: int = 3) -> tuple[np.ndarray, np.ndarray, Any]:
    """The imported network's output and onnxruntime's on the same random NCHW floats."""
    imported: Any = read_onnx(path)  # NumPy weights, which Model takes as arrays
    model = Model(parse_spec(imported.spec, "imported"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [count if isinstance(d, str) or d is None else d for d in session.get_inputs()[0].shape]
    x = RNG.normal(size=shape).astype(np.float32)
    theirs = session.run(None, {"x": x})[0]
    ours = np.asarray(model.predict(imported.params, jnp.asarray(x.transpose(0, 2, 3, 1)), imported.state or None))
    return ours, theirs.reshape(ours.shape), imported


def assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(theirs).max()))
    assert np.abs(ours - theirs).max() / scale < 1e-4, np.abs(ours - theirs).max()


def conv(name: str, x: str, out: str, cin: int, cout: int, k: int | tuple[int, int], constants: dict,
         bias: bool = True, group: int = 1, **attrs: Any) -> Any:  # fmt: skip
    kh, kw = (k, k) if isinstance(k, int) else k
    constants[f"{name}.w"] = weights(cout, cin // group, kh, kw)
    inputs = [x, f"{name}.w"]
    if bias:
        constants[f"{name}.b"] = weights(cout)
        inputs.append(f"{name}.b")
    return helper.make_node("Conv", inputs, [out], name=name, kernel_shape=[kh, kw], group=group, **attrs)


def head(x: str, features: int, constants: dict, classes: int = 3) -> list:
    """Flatten, Gemm (transB, alpha, beta), Softmax: the usual end of a classifier."""
    constants["fc.w"], constants["fc.b"] = weights(classes, features), weights(classes)
    return [helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1, alpha=0.7, beta=1.3),
            helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1)]  # fmt: skip


CONV_CASES: dict[str, dict[str, Any]] = {
    "asymmetric pads, stride 2": dict(pads=[0, 1, 2, 1], strides=[2, 2]),
    "dilation 2": dict(pads=[2, 2, 2, 2], dilations=[2, 2]),
    "auto_pad SAME_UPPER, stride 2": dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    "auto_pad SAME_LOWER, stride 2": dict(auto_pad="SAME_LOWER", strides=[2, 2]),
    "auto_pad VALID": dict(auto_pad="VALID"),
    "group 2, no bias": dict(group=2, bias=False, pads=[1, 1, 1, 1]),
    "depthwise": dict(group=4, pads=[1, 1, 1, 1]),
}


@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
def test_each_conv_form_equals_onnxruntime(tmp_path, case):
    constants: dict[str, np.ndarray] = {}
    options = dict(CONV_CASES[case])
    bias, group = options.pop("bias", True), options.pop("group", 1)
    nodes = [conv("conv", "x", "c", 4, 8, 3, constants, bias=bias, group=group, **options),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]  # fmt: skip
    maps = onnx_file(tmp_path / "maps.onnx", nodes, constants, ["N", 4, 9, 9], "r", output_rank=4)
    shape = onnx.shape_inference.infer_shapes(onnx.load(str(maps))).graph.output[0].type.tensor_type.shape.dim
    features = int(np.prod([d.dim_value for d in shape[1:]]))
    path = onnx_file(tmp_path / "m.onnx", [*nodes, *head("r", features, constants)], constants, ["N", 4, 9, 9], "y")
    ours, theirs, imported = imported_and_onnxruntime(path)
    assert_close(ours, theirs)
    assert imported.spec["layers"][0]["activation"] == "relu"  # folded into the conv


def test_batch_norm_activations_and_pools_equal_onnxruntime(tmp_path):
    constants: dict[str, np.ndarray] = {
        "bn.scale": weights(6, scale=1) + 1, "bn.bias": weights(6), "bn.mean": weights(6),
        "bn.var": np.abs(weights(6)) + 0.5,
        "clip.min": np.asarray(0, np.float32), "clip.max": np.asarray(6, np.float32),
    }  # fmt: skip
    nodes = [conv("conv", "x", "c", 3, 6, 3, constants, pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b"],
                              name="bn", epsilon=1e-3),
             helper.make_node("LeakyRelu", ["b"], ["a1"], name="leaky", alpha=0.01),
             helper.make_node("MaxPool", ["a1"], ["p1"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1], ceil_mode=1),
             helper.make_node("Elu", ["p1"], ["a2"], name="elu", alpha=1.0),
             helper.make_node("AveragePool", ["a2"], ["p2"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2],
                              pads=[1, 1, 0, 0], count_include_pad=1),
             helper.make_node("Sigmoid", ["p2"], ["a3"], name="sigmoid"),
             helper.make_node("AveragePool", ["a3"], ["p3"], name="avgceil", kernel_shape=[2, 2], strides=[2, 2],
                              ceil_mode=1, count_include_pad=0),
             helper.make_node("Clip", ["p3", "clip.min", "clip.max"], ["a4"], name="relu6"),
             helper.make_node("Tanh", ["a4"], ["a5"], name="tanh"),
             helper.make_node("HardSigmoid", ["a5"], ["a6"], name="hsig", alpha=1 / 6, beta=0.5),
             helper.make_node("HardSwish", ["a6"], ["a7"], name="hswish"),
             helper.make_node("GlobalAveragePool", ["a7"], ["g"], name="gap.pool"),
             *head("g", 6, constants)]  # fmt: skip
    ours, theirs, imported = imported_and_onnxruntime(onnx_file(tmp_path / "m.onnx", nodes, constants,
                                                                ["N", 3, 11, 13], "y"))  # fmt: skip
    assert_close(ours, theirs)
    types = [layer["type"] for layer in imported.spec["layers"]]
    assert types == ["conv", "batch_norm", "activation", "max_pool", "activation", "avg_pool", "activation",
                     "avg_pool", "activation", "activation", "activation", "activation", "global_avg_pool",
                     "dense"]  # fmt: skip
    acts = [layer["activation"] for layer in imported.spec["layers"] if layer["type"] == "activation"]
    assert acts == ["leaky_relu", "elu", "sigmoid", "relu6", "tanh", "hard_sigmoid", "hard_swish"]
    assert imported.spec["layers"][-2]["name"] == "flatten"  # the global pool, named after the flatten after it


def test_a_graph_with_add_concat_global_max_pool_and_dropped_nodes_equals_onnxruntime(tmp_path):
    constants: dict[str, np.ndarray] = {"ratio": np.asarray(0.5, np.float32), "hw": np.asarray([2, 3], np.int64)}
    nodes = [conv("stem", "x", "s", 2, 4, 3, constants, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["s"], ["s1"], name="stem.relu"),
             conv("branch", "s1", "b", 4, 4, 3, constants, pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["b", "s1"], ["sum"], name="residual"),
             helper.make_node("Identity", ["sum"], ["same"], name="identity"),
             conv("side", "same", "d", 4, 3, 1, constants),
             helper.make_node("Concat", ["same", "d"], ["cat"], name="concat", axis=1),
             helper.make_node("Dropout", ["cat", "ratio"], ["dropped"], name="dropout"),
             helper.make_node("GlobalMaxPool", ["dropped"], ["g"], name="gmp"),
             conv("late", "dropped", "l", 7, 5, 1, constants),
             helper.make_node("ReduceMean", ["l", "hw"], ["m"], name="mean", keepdims=0),  # torch's adaptive pool
             helper.make_node("Flatten", ["g"], ["gflat"], name="gflat", axis=1),
             helper.make_node("Concat", ["gflat", "m"], ["both"], name="both", axis=1),
             *head("both", 12, constants)]  # fmt: skip
    ours, theirs, imported = imported_and_onnxruntime(onnx_file(tmp_path / "m.onnx", nodes, constants,
                                                                ["N", 2, 6, 6], "y", opset=18))  # fmt: skip
    assert_close(ours, theirs)
    layers = {layer["name"]: layer for layer in imported.spec["layers"]}
    assert list(layers) == ["stem", "branch", "residual", "side", "concat", "gmp", "late", "mean", "both", "fc"]
    assert layers["mean"]["type"] == "global_avg_pool" and layers["gmp"]["type"] == "global_max_pool"
    assert layers["stem"]["activation"] == "relu"
    assert layers["residual"]["inputs"] == ["branch", "stem"] and layers["concat"]["inputs"] == ["residual", "side"]
    assert "inputs" not in layers["branch"] and "inputs" not in layers["side"]  # only where the graph branches


def test_the_first_dense_after_a_flatten_takes_its_rows_in_hwc_order(tmp_path):
    """ONNX flattens C, H, W; jaxcnn H, W, C. With dense weights that are not symmetric, reading the rows in the
    wrong order changes the answer; the importer's permutation gives onnxruntime's."""
    constants: dict[str, np.ndarray] = {}
    nodes = [conv("conv", "x", "c", 1, 3, 3, constants, pads=[1, 1, 1, 1]), *head("c", 3 * 4 * 5, constants, 4)]
    path = onnx_file(tmp_path / "m.onnx", nodes, constants, ["N", 1, 4, 5], "y")
    ours, theirs, imported = imported_and_onnxruntime(path, 6)
    assert_close(ours, theirs)
    unpermuted = dict(imported.params)
    unpermuted["fc"] = {**imported.params["fc"], "kernel": 0.7 * constants["fc.w"].T}
    model = Model(parse_spec(imported.spec, "imported"))
    x = jnp.asarray(RNG.normal(size=(6, 4, 5, 1)), jnp.float32)
    right, wrong = (np.asarray(model.predict(p, x)) for p in (imported.params, unpermuted))
    assert np.abs(right - wrong).max() > 1e-2  # the permutation matters here


def test_torch_style_flatten_and_matmul_add_equal_onnxruntime(tmp_path):
    """x.view(x.size(0), -1) as torch's older exporter writes it (Shape, Gather, Unsqueeze, Concat, Reshape),
    then MatMul and Add; weights from a Constant node."""
    constants: dict[str, np.ndarray] = {"index": np.asarray(0, np.int64), "minus_one": np.asarray([-1], np.int64),
                                        "fc.w": weights(2 * 3 * 3, 5), "fc.b": weights(5)}  # fmt: skip
    kernel = helper.make_tensor("k", TensorProto.FLOAT, [2, 3, 3, 3], weights(2, 3, 3, 3).ravel().tolist())
    nodes = [helper.make_node("Constant", [], ["k"], name="weights", value=kernel),
             helper.make_node("Conv", ["x", "k"], ["c"], name="/conv/Conv", kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Shape", ["c"], ["shape"], name="/Shape"),
             helper.make_node("Gather", ["shape", "index"], ["batch"], name="/Gather", axis=0),
             helper.make_node("Unsqueeze", ["batch"], ["batch1"], name="/Unsqueeze", axes=[0]),
             helper.make_node("Concat", ["batch1", "minus_one"], ["target"], name="/Concat", axis=0),
             helper.make_node("Reshape", ["c", "target"], ["flat"], name="/Reshape"),
             helper.make_node("MatMul", ["flat", "fc.w"], ["m"], name="/fc/MatMul"),
             helper.make_node("Add", ["m", "fc.b"], ["y"], name="/fc/Add")]  # fmt: skip
    path = onnx_file(tmp_path / "m.onnx", nodes, constants, ["N", 3, 7, 7], "y", opset=11)
    ours, theirs, imported = imported_and_onnxruntime(path)
    assert_close(ours, theirs)
    assert [(layer["name"], layer["type"]) for layer in imported.spec["layers"]] == [
        ("conv", "conv"), ("Reshape", "flatten"), ("fc", "dense")]  # fmt: skip


# ---------------------------------------------------------------- errors: one line, nothing written


def error_of(tmp_path: Path, path: Path, capsys) -> str:
    out = tmp_path / "run"
    assert cli.main(["import", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".run*"))
    return err


def test_unsupported_operators_are_listed_each_with_count_and_names(tmp_path, capsys):
    constants: dict[str, np.ndarray] = {"scales": np.asarray([1, 1, 2, 2], np.float32), "roi": np.zeros(0, np.float32)}
    nodes = [conv("conv", "x", "c", 1, 2, 3, constants, pads=[1, 1, 1, 1]),
             helper.make_node("LRN", ["c"], ["n"], name="lrn", size=3),
             helper.make_node("Resize", ["n", "roi", "scales"], ["u"], name="up1"),
             helper.make_node("Resize", ["u", "roi", "scales"], ["u2"], name="up2"),
             helper.make_node("GlobalAveragePool", ["u2"], ["g"], name="gap"), *head("g", 2, constants)]  # fmt: skip
    err = error_of(tmp_path, onnx_file(tmp_path / "m.onnx", nodes, constants, ["N", 1, 4, 4], "y"), capsys)
    assert "unsupported operators: LRN x1 (lrn); Resize x2 (up1, up2)" in err


def test_a_truncated_file_and_a_file_that_is_not_onnx_are_refused(tmp_path, capsys):
    constants: dict[str, np.ndarray] = {}
    nodes = [conv("conv", "x", "c", 1, 2, 3, constants), *head("c", 2 * 4 * 4, constants)]
    whole = onnx_file(tmp_path / "m.onnx", nodes, constants, ["N", 1, 6, 6], "y").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(whole[: len(whole) * 2 // 3])
    assert "is not a whole, valid ONNX model" in error_of(tmp_path, tmp_path / "cut.onnx", capsys)
    (tmp_path / "picture.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert "is not a whole, valid ONNX model" in error_of(tmp_path, tmp_path / "picture.onnx", capsys)


def test_an_opset_outside_the_range_a_dynamic_size_and_computed_weights_are_refused(tmp_path, capsys):
    constants: dict[str, np.ndarray] = {}
    nodes = [conv("conv", "x", "c", 1, 2, 3, constants), *head("c", 2 * 4 * 4, constants)]
    old = onnx_file(tmp_path / "old.onnx", nodes, constants, ["N", 1, 6, 6], "y", opset=9)
    assert "uses opset 9; jaxcnn reads opsets 11 to" in error_of(tmp_path, old, capsys)
    dynamic = onnx_file(tmp_path / "dynamic.onnx", nodes, constants, ["N", 1, "H", "W"], "y")
    assert "has a dynamic size (N, 1, H, W)" in error_of(tmp_path, dynamic, capsys)
    computed: dict[str, np.ndarray] = {"starts": np.asarray([0, 0], np.int64), "ends": np.asarray([2, 1], np.int64),
                                       "shape": np.asarray([2, 1, 3, 3], np.int64)}  # fmt: skip
    nodes = [helper.make_node("Slice", ["x", "starts", "ends"], ["part"], name="slice"),
             helper.make_node("Reshape", ["part", "shape"], ["w"], name="as_weights"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
             *head("c", 2 * 4 * 4, computed)]  # fmt: skip
    err = error_of(tmp_path, onnx_file(tmp_path / "computed.onnx", nodes, computed, [1, 1, 6, 6], "y"), capsys)
    assert "Conv node 'conv': its weights are computed at run time" in err


# ---------------------------------------------------------------- round trip and the run folder


@pytest.mark.parametrize("spec_path", NETWORK_SPECS, ids=[p.stem for p in NETWORK_SPECS])
def test_export_then_import_gives_the_same_network(spec_path, tmp_path):
    """Same layers (the export leaves dropout out: the identity in evaluation), same names (block names with
    ``_`` for ``.``), same outputs within 1e-5, same preprocessing."""
    import jax

    from jaxcnn.export import onnx_model
    from jaxcnn.preprocess import Preprocess
    from jaxcnn.spec import load_spec

    spec = load_spec(spec_path)
    model = Model(spec)
    params, state = model.init_with_state(1)
    params = jax.tree.map(lambda a: np.asarray(a) + weights(*a.shape, scale=0.05), params)
    state = jax.tree.map(lambda a: np.asarray(a) + np.abs(weights(*a.shape, scale=0.1)), state)
    channels = spec.input_shape[2]
    preprocess = Preprocess(mean=(0.25,) * channels, std=(0.5,) * channels)
    onnx.save(onnx_model(spec, params, state, preprocess), str(tmp_path / "m.onnx"))
    imported: Any = read_onnx(tmp_path / "m.onnx")
    again = parse_spec(imported.spec, "imported")
    kept = [layer for layer in spec.layers if layer.type != "dropout"]
    assert [(layer.name.replace(".", "_"), layer.type, layer.output_shape) for layer in kept] == [
        (layer.name, layer.type, layer.output_shape) for layer in again.layers]  # fmt: skip
    assert (imported.mean, imported.std) == (preprocess.mean, preprocess.std)
    images = RNG.integers(0, 256, (3, *spec.input_shape)).astype(np.uint8)
    want = np.asarray(model.predict(params, preprocess.to_float(images), state))
    got = np.asarray(Model(again).predict(imported.params, preprocess.to_float(images), imported.state or None))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def torch_like(tmp_path_factory) -> Path:
    """A float NCHW RGB classifier, as PyTorch exports one."""
    constants: dict[str, np.ndarray] = {}
    nodes = [conv("conv", "x", "c", 3, 4, 3, constants, pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"), *head("r", 4 * 4 * 4, constants, 3)]  # fmt: skip
    return onnx_file(tmp_path_factory.mktemp("onnx") / "rgb.onnx", nodes, constants, ["N", 3, 8, 8], "y")


@pytest.mark.parametrize(("scale", "mean", "std"), [(1.0, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
                                                     (255.0, [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]),
                                                     (1.0, None, None)])  # fmt: skip
def test_predict_on_a_png_equals_onnxruntime_on_the_same_normalised_pixels(torch_like, tmp_path, capsys, scale, mean,
                                                                           std):  # fmt: skip
    from PIL import Image

    argv = ["import", str(torch_like), "--out", str(tmp_path / "run"), "--scale", str(scale)]
    argv += [] if mean is None else ["--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std))]
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    assert cli.main([*argv, "--class-names", str(names)]) == 0
    printed = capsys.readouterr().out
    assert "agrees with onnxruntime on random images" in printed and (tmp_path / "run" / "spec.json").exists()
    pixels = RNG.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    from jaxcnn.runs import load_run

    run = load_run(tmp_path / "run")
    assert run.class_names == ("cat", "dog", "bird") and run.epoch == 0
    ours = run.predict(pixels[None])[0]
    user = pixels / 255 * scale
    if mean is not None:
        user = (user - np.asarray(mean)) / np.asarray(std)
    session = onnxruntime.InferenceSession(str(torch_like), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"x": user.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert cli.main(["predict", str(tmp_path / "run"), str(tmp_path / "photo.png"), "--top", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{run.class_names[int(np.argmax(theirs))]} "
                                                    f"({100 * theirs.max():.1f}%)")  # fmt: skip


def test_the_imported_run_fine_tunes_from_its_weights_and_refuses_resume(torch_like, tmp_path, capsys):
    from jaxcnn.config import TrainConfig
    from jaxcnn.data import Dataset
    from jaxcnn.runs import load_run, train_run

    assert cli.main(["import", str(torch_like), "--out", str(tmp_path / "run")]) == 0
    imported = load_run(tmp_path / "run")
    x = RNG.integers(0, 256, (64, 8, 8, 3)).astype(np.uint8)
    y = RNG.integers(0, 3, 64).astype(np.int32)
    data = Dataset("random", x, y, x[:32], y[:32], ("0", "1", "2"), "made in tests")
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-9, init_from=str(tmp_path / "run"))
    train_run(parse_spec(spec, "spec.json"), data, config, tmp_path / "tuned", progress=False, verbose=False)
    tuned = load_run(tmp_path / "tuned")
    for layer in imported.params:
        for key, value in imported.params[layer].items():
            np.testing.assert_allclose(tuned.params[layer][key], value, atol=1e-6)  # a step of 1e-9 from there
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["train"]["init_from"] == str(tmp_path / "run")
    assert cli.main(["train", "--resume", str(tmp_path / "run")]) == 1
    assert "was imported (jaxcnn import), not trained here" in capsys.readouterr().err
    assert cli.main(["import", str(torch_like), "--out", str(tmp_path / "run")]) == 1  # not over a run
    assert "already exists" in capsys.readouterr().err


def test_evaluate_show_explore_and_export_read_the_imported_run(torch_like, tmp_path, capsys):
    from jaxcnn.data import Dataset, load_dataset
    from jaxcnn.explorer import Explorer, ExploreRequestError
    from jaxcnn.runs import load_run

    from datasets import write_class_folders

    assert cli.main(["import", str(torch_like), "--out", str(tmp_path / "run")]) == 0
    x = RNG.integers(0, 256, (12, 8, 8, 3)).astype(np.uint8)
    y = np.arange(12, dtype=np.int32) % 3
    folders = write_class_folders(tmp_path / "photos", Dataset("p", x, y, x, y, ("0", "1", "2"), "made in tests"))
    data = f"folder:{folders}"
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "run")]) == 1  # no data set of its own: say so
    assert "was imported (jaxcnn import) and records no data set of its own" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "run"), "--dataset", data]) == 0
    predictions = load_run(tmp_path / "run").predict(load_dataset(data).test_images).argmax(1)
    accuracy = float((predictions == load_dataset(data).test_labels).mean())
    assert f"accuracy: {100 * accuracy:.2f}%" in capsys.readouterr().out
    assert cli.main(["show", str(tmp_path / "run"), "--dataset", data, "--out", str(tmp_path / "pictures")]) == 0
    assert (tmp_path / "pictures" / "feature_maps.png").exists()
    explorer = Explorer(tmp_path / "run")
    assert explorer.network()["epoch"] == 0 and explorer.predict(x[0])["probabilities"]
    with pytest.raises(ExploreRequestError, match="records no data set of its own"):
        explorer.confusion()
    assert cli.main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "back.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "back.onnx"), providers=["CPUExecutionProvider"])
    original = onnxruntime.InferenceSession(str(torch_like), providers=["CPUExecutionProvider"])
    want = original.run(None, {"x": (x / 255).astype(np.float32).transpose(0, 3, 1, 2)})[0]
    np.testing.assert_allclose(session.run(None, {"images": x})[0], want, atol=1e-5)
