"""jaxcnn export: ONNX files run by onnxruntime, and serialized StableHLO loaded in a fresh process,
give what ``load_run(...).predict`` gives, for every shipped spec and for random graph specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
import pytest

import jaxcnn
from jaxcnn.data import Preprocess
from jaxcnn.export import FORMATS, ExportError, onnx_model
from jaxcnn.layer_types import LAYER_TYPES, Layer
from jaxcnn.model import Model
from jaxcnn.runs import train_run
from jaxcnn.spec import SpecError, load_spec, parse_spec
from jaxcnn.train import TrainConfig

from conftest import NETWORK_SPECS, ROOT
from datasets import GRAPH_SPEC, change_one_weight, quadrant_dataset
from spec_fuzzing import random_graph


def perturbed(model: Model, seed: int) -> tuple[Any, Any]:
    """Weights with non-zero biases and batch-norm statistics that are not the initial ones."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: np.asarray(p) + rng.normal(0, 0.05, p.shape).astype(np.float32), model.init(seed))
    state = {
        name: {"mean": rng.normal(0, 0.1, s["mean"].shape).astype(np.float32),
               "var": rng.uniform(0.5, 1.5, s["var"].shape).astype(np.float32)}
        for name, s in model.init_state().items()
    }  # fmt: skip
    return params, state


def expected(model: Model, params: Any, state: Any, preprocess: Preprocess, images: np.ndarray, tta: bool) -> Any:
    out = model.predict(params, preprocess.to_float(jnp.asarray(images)), state)
    if tta:
        out = (out + model.predict(params, preprocess.to_float(jnp.asarray(images[:, :, ::-1])), state)) / 2
    return np.asarray(out)


def run_onnx(model_proto: Any, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": images})[0]


def images_for(model: Model, count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *model.input_shape), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("path", NETWORK_SPECS, ids=[p.stem for p in NETWORK_SPECS])
def test_onnx_of_every_shipped_spec_equals_predict(path: Path):
    model = Model(load_spec(path))
    params, state = perturbed(model, 1)
    preprocess = Preprocess(mean=(0.5,) * model.input_shape[2], std=(0.25,) * model.input_shape[2])
    proto = onnx_model(model.spec, params, state, preprocess)
    onnx.checker.check_model(proto)
    names = {node.name for node in proto.graph.node}
    assert {layer.name for layer in model.spec.layers if layer.type not in ("dropout", "activation")} <= names
    for count in (1, 7, 128) if "resnet56" not in path.stem else (1, 7):
        images = images_for(model, count, count)
        np.testing.assert_allclose(run_onnx(proto, images), expected(model, params, state, preprocess, images, False),
                                   atol=1e-5, rtol=0)  # fmt: skip


def test_onnx_with_test_time_augmentation_and_every_activation():
    from jaxcnn.spec import ACTIVATION_NAMES

    layers = [{"type": "conv", "filters": 4, "size": 3, "padding": "same", "activation": act}
              for act in ACTIVATION_NAMES if act != "softmax"]  # fmt: skip
    spec = parse_spec({"format": "jaxcnn.spec/1", "input": [6, 7, 2], "layers": [
        *layers, {"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]})  # fmt: skip
    model = Model(spec)
    params, state = perturbed(model, 2)
    proto = onnx_model(spec, params, state, Preprocess(), tta=True)
    stored = [init.name for init in proto.graph.initializer if init.name.endswith((".kernel", ".bias"))]
    assert (
        len(stored) == len(set(stored)) == 2 * len(layers) + 2
    )  # each kernel and bias once, though the graph runs twice
    images = images_for(model, 5)
    np.testing.assert_allclose(run_onnx(proto, images), expected(model, params, state, Preprocess(), images, True),
                               atol=1e-5, rtol=0)  # fmt: skip


@pytest.mark.slow
def test_onnx_of_random_graph_specs_equals_predict():
    """Padding forms, strides, dilation, groups, pools with and without count_include_pad, merges."""
    rng = np.random.default_rng(7)
    exportable = [kind for kind, cls in LAYER_TYPES.items() if cls.to_onnx is not Layer.to_onnx]
    checked = 0
    for _ in range(200):
        layers = random_graph(rng, kinds=exportable)
        flat = any(layer["type"] in ("flatten", "global_avg_pool", "global_max_pool") for layer in layers)
        layers.append({"type": "flatten"} if not flat else {"type": "dense", "units": 3})
        try:
            spec = parse_spec({"format": "jaxcnn.spec/1", "input": [int(rng.integers(4, 11)), 9, 2], "layers": layers})
        except SpecError:
            continue
        model = Model(spec)
        params, state = perturbed(model, checked)
        images = images_for(model, 3, checked)
        got = run_onnx(onnx_model(spec, params, state, Preprocess()), images)
        np.testing.assert_allclose(got, expected(model, params, state, Preprocess(), images, False), atol=1e-5,
                                   rtol=1e-5, err_msg=json.dumps(layers))  # fmt: skip
        checked += 1
    assert checked >= 60


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    """A trained run of a small graph with batch norm, dropout and a residual block, with TTA."""
    out = tmp_path_factory.mktemp("export") / "run"
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-2, augment="flip", tta=True)
    train_run(parse_spec(GRAPH_SPEC, "graph.json"), quadrant_dataset(), config, out, progress=False, verbose=False)
    return out


def jaxcnn_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxcnn", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **env})  # fmt: skip


@pytest.mark.slow
def test_cli_exports_both_formats_and_they_equal_the_run(graph_run, tmp_path):
    run = jaxcnn.load_run(graph_run)
    images = quadrant_dataset(16, 20).test_images
    want = run.predict(images)
    result = jaxcnn_cli("export", str(graph_run), "--format", "onnx", "--out", str(tmp_path / "net.onnx"))
    assert result.returncode == 0, result.stderr
    assert "uint8 images N x 8 x 8 x 1 -> 4 class probabilities" in result.stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"images": images})[0], want, atol=1e-5, rtol=0)

    result = jaxcnn_cli("export", str(graph_run), "--format", "stablehlo", "--out", str(tmp_path / "net.jax"))
    assert result.returncode == 0, result.stderr
    np.save(tmp_path / "images.npy", images)
    fresh = (f"import jaxcnn, numpy as np; f = jaxcnn.load_exported({str(tmp_path / 'net.jax')!r}); "
             f"np.save({str(tmp_path / 'out.npy')!r}, f(np.load({str(tmp_path / 'images.npy')!r})))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-6, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy", "net.jax", "net.onnx", "out.npy"]


@pytest.mark.slow
def test_export_errors_are_one_line_and_leave_nothing_behind(graph_run, tmp_path):
    missing = jaxcnn_cli("export", str(tmp_path / "nope"), "--format", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "nope" in missing.stderr
    no_folder = jaxcnn_cli("export", str(graph_run), "--format", "onnx", "--out", str(tmp_path / "no" / "x.onnx"))
    assert no_folder.returncode == 1 and "does not exist" in no_folder.stderr
    unknown = jaxcnn_cli("export", str(graph_run), "--format", "tflite", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "invalid choice: 'tflite'" in unknown.stderr
    opset = jaxcnn_cli("export", str(graph_run), "--format", "stablehlo", "--opset", "17", "--out", str(tmp_path / "x"))
    assert opset.returncode == 2 and "--opset applies to --format onnx only" in opset.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_to_an_unwritable_place_is_a_clear_error(graph_run, tmp_path):
    (tmp_path / "folder").mkdir()
    cases = {str(tmp_path / "folder"): "is a folder", "/proc/jaxcnn.onnx": "cannot write in /proc"}  # even for root
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):  # a user other than root: a folder without write permission
        cases[str(locked / "x.onnx")] = "cannot write"
    try:
        for out, fragment in cases.items():
            result = jaxcnn_cli("export", str(graph_run), "--format", "onnx", "--out", out)
            assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr
            assert fragment in result.stderr
        assert list(locked.iterdir()) == [] and list((tmp_path / "folder").iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    train_run(parse_spec(GRAPH_SPEC), quadrant_dataset(64, 16), TrainConfig(epochs=1, batch_size=32), out,
              progress=False, verbose=False)  # fmt: skip
    change_one_weight(out / "checkpoints" / "1", "c1")
    for fmt in FORMATS:
        result = jaxcnn_cli("export", str(out), "--format", fmt, "--out", str(tmp_path / "x"))
        assert result.returncode == 1 and result.stderr.startswith("error: ") and "epoch 1 is damaged" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]  # the run and its lock file only


SHIPPED = [p for p in NETWORK_SPECS if p.stem != "resnet56_cifar10"]  # ResNet-20's blocks, 3x the compile time


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_stablehlo_of_every_shipped_spec_equals_predict(path: Path, tmp_path):
    from jaxcnn.export import export_stablehlo

    model = Model(load_spec(path))
    params, state = perturbed(model, 3)
    preprocess = Preprocess(mean=(0.5,) * model.input_shape[2], std=(0.25,) * model.input_shape[2])
    run = type("TrainedRun", (), {"model": model, "params": params, "state": state, "preprocess": preprocess,
                                  "tta": False})()  # fmt: skip
    export_stablehlo(run, tmp_path / "net.jax")
    probabilities = jaxcnn.load_exported(tmp_path / "net.jax")
    for count in (1, 7):
        images = images_for(model, count, count)
        np.testing.assert_allclose(probabilities(images), expected(model, params, state, preprocess, images, False),
                                   atol=1e-6, rtol=0)  # fmt: skip


def test_load_exported_refuses_other_files(tmp_path):
    (tmp_path / "x.jax").write_bytes(b"not stablehlo")
    with pytest.raises(ExportError, match="not a jaxcnn StableHLO export"):
        jaxcnn.load_exported(tmp_path / "x.jax")
    with pytest.raises(ExportError, match="no such file"):
        jaxcnn.load_exported(tmp_path / "missing.jax")


MNIST_DIR = os.environ.get("JAXCNN_DATA_DIR") or str(ROOT.parent / "shared" / "data")


@pytest.mark.slow
@pytest.mark.skipif(not (Path(MNIST_DIR) / "mnist").is_dir(), reason="MNIST is not at hand (set JAXCNN_DATA_DIR)")
def test_a_trained_lenet_exported_to_onnx_agrees_on_every_mnist_test_image(tmp_path):
    from jaxcnn.data import load_dataset
    from jaxcnn.export import export_onnx

    data = load_dataset("mnist", MNIST_DIR)
    train_run(ROOT / "specs" / "lenet_mnist.json", data, TrainConfig(epochs=1, lr=3e-3), tmp_path / "run",
              progress=False, verbose=False)  # fmt: skip
    run = jaxcnn.load_run(tmp_path / "run")
    export_onnx(run, tmp_path / "lenet.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "lenet.onnx"), providers=["CPUExecutionProvider"])
    ours = run.predict(data.test_images)
    theirs = session.run(None, {"images": data.test_images})[0]
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    assert np.array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))
    assert (ours.argmax(axis=1) == data.test_labels).mean() > 0.95


@pytest.mark.slow
def test_export_never_replaces_what_it_must_not(graph_run, tmp_path):
    """Issue 27 (1, 2): before, --out RUN/config.json, a spec or /dev/null were replaced by the export."""
    import shutil
    import stat

    from jaxcnn.export import export_onnx, export_stablehlo

    writers = {"onnx": export_onnx, "stablehlo": export_stablehlo}
    run_copy = tmp_path / "run"
    shutil.copytree(graph_run, run_copy)
    run = jaxcnn.load_run(run_copy)
    spec = tmp_path / "my_spec.json"
    spec.write_text(json.dumps(GRAPH_SPEC))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    before = {p: p.read_bytes() for p in [*run_copy.rglob("*"), spec] if p.is_file()}
    for fmt, write in writers.items():
        for target in (run_copy / "config.json", run_copy / "checkpoints" / "net.onnx", run_copy / "new.onnx"):
            for overwrite in (False, True):
                with pytest.raises(ExportError, match="is inside the run folder"):
                    write(run, target, overwrite=overwrite)
        with pytest.raises(ExportError, match="already exists; pass --overwrite"):
            write(run, spec)
        with pytest.raises(ExportError, match=f"is not a {fmt} export, and --overwrite replaces only"):
            write(run, spec, overwrite=True)
        for device in (Path("/dev/null"), fifo):
            with pytest.raises(ExportError, match="exists and is not a regular file"):
                write(run, device, overwrite=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert {p: p.read_bytes() for p in before} == before
    assert not (run_copy / "new.onnx").exists() and not (run_copy / "checkpoints" / "net.onnx").exists()

    # A previous export is replaced with --overwrite only, and only by the same format.
    for fmt, write in writers.items():
        write(run, tmp_path / f"net.{fmt}")
        with pytest.raises(ExportError, match="already exists"):
            write(run, tmp_path / f"net.{fmt}")
        write(run, tmp_path / f"net.{fmt}", overwrite=True)
    with pytest.raises(ExportError, match="is not a onnx export"):
        export_onnx(run, tmp_path / "net.stablehlo", overwrite=True)
    with pytest.raises(ExportError, match="is not a stablehlo export"):
        export_stablehlo(run, tmp_path / "net.onnx", overwrite=True)

    result = jaxcnn_cli("export", str(run_copy), "--format", "stablehlo", "--out", str(run_copy / "config.json"),
                        "--overwrite")  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "inside the run folder" in result.stderr
    assert (run_copy / "config.json").read_bytes() == before[run_copy / "config.json"]


def test_load_exported_refuses_what_predict_refuses_with_the_same_message(tmp_path):
    """Issue 27 (5): before, any dtype was cast to uint8 (float images in [0, 1] all became 0 or 1)."""
    from jaxcnn.export import export_stablehlo
    from jaxcnn.model import InputShapeError

    model = Model(parse_spec(GRAPH_SPEC))
    params, state = perturbed(model, 1)
    run = type("TrainedRun", (), {"model": model, "params": params, "state": state, "tta": False,
                                  "preprocess": Preprocess(mean=None, std=None)})()  # fmt: skip
    export_stablehlo(run, tmp_path / "net.jax")
    probabilities = jaxcnn.load_exported(tmp_path / "net.jax")
    images = images_for(model, 3, 0)
    assert probabilities(images).shape == (3, 4)
    assert probabilities(images[:0]).shape == (0, 4) and probabilities(images[:0]).dtype == np.float32
    for bad in (images / 255.0, images.astype(np.int64) + 250, images[..., 0], images[:, :4]):
        with pytest.raises(InputShapeError) as caught:
            probabilities(bad)
        message = str(caught.value)
        assert message.startswith("predict takes uint8 images (0-255); got dtype") or (
            message.startswith(f"{tmp_path / 'net.jax'}: predict takes a batch of uint8 images of shape (N, 8, 8, 1)")
        ), message
    with pytest.raises(InputShapeError, match=r"predict takes uint8 images \(0-255\); got dtype float64"):
        probabilities(images / 255.0)


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_export_is_one_line_and_writes_nothing(graph_run, tmp_path):
    """Issue 27 (16): Ctrl-C while JAX loaded printed an ImportError traceback, was swallowed, or (once)
    crashed. Now: exit 130 and one line, or, if it came too late to stop anything, a complete export."""
    import signal
    import time

    outcomes = []
    for delay in (0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 4.5):
        out = tmp_path / f"net{delay}.onnx"
        process = subprocess.Popen([sys.executable, "-m", "jaxcnn", "export", str(graph_run), "--format", "onnx",
                                    "--out", str(out)], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        if process.returncode == 0:  # it had finished: the file is whole
            assert out.exists() and "exported" in stdout
            onnx.checker.check_model(onnx.load(str(out)))
            outcomes.append("done")
            continue
        assert process.returncode == 130, (delay, process.returncode, stderr)
        assert stderr.strip().splitlines() == ["interrupted"], (delay, stderr)
        if out.exists():  # the export had finished when Ctrl-C came (a library held it back): whole
            onnx.checker.check_model(onnx.load(str(out)))
        outcomes.append("interrupted")
    assert outcomes[:3] == ["interrupted"] * 3  # the early ones really were interrupted
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left
