"""``jaxcnn import``: an ONNX network read by :mod:`jaxcnn.onnx_import`, checked against onnxruntime, and written
as a spec and a run folder that ``evaluate``, ``predict``, ``show``, ``explore``, ``explain`` and ``export`` read,
and that ``train --init-from`` fine-tunes. Everything is checked before anything is written, and the run is
written in a staging folder and moved into place whole."""

from __future__ import annotations

import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data import IMPORTED
from jaxcnn.onnx_import import Imported, OnnxImportError, read_onnx
from jaxcnn.preprocess import Preprocess
from jaxcnn.run_checks import check_out, writing
from jaxcnn.run_files import RUN_FORMAT, library_versions, open_checkpoints, write_atomic, write_metrics
from jaxcnn.run_folder import StagedRun
from jaxcnn.spec import SpecError, parse_spec

CHECK_IMAGES = 8
"""Random images on which the imported network is compared with onnxruntime before anything is written."""
AGREEMENT = 1e-4
"""The largest difference from onnxruntime accepted, relative to the output's largest value (at least 1)."""


@dataclass(frozen=True)
class ImportResult:
    """What ``jaxcnn import`` made: the run folder, its spec file, the network's size, and how far its outputs
    were from onnxruntime's on CHECK_IMAGES random images (None without onnxruntime)."""

    run_dir: Path
    spec_path: Path
    layers: int
    weights: int
    difference: float | None
    imported: Imported


def read_class_names(path: str | Path | None, count: int) -> list[str]:
    """``--class-names FILE``: one name per line, as many as the network's outputs; else "0" to "count - 1"."""
    if path is None:
        return [str(i) for i in range(count)]
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise OnnxImportError(f"--class-names {path}: cannot be read ({err})") from None
    if len(names) != count:
        raise OnnxImportError(f"--class-names {path}: has {len(names)} names (one per line) but the network has "
                              f"{count} outputs")  # fmt: skip
    return names


def onnxruntime_difference(path: Path, imported: Imported, model: Any, preprocess: Preprocess,
                           scale: float, mean: Any, std: Any) -> float | None:  # fmt: skip
    """The largest difference between the imported network and onnxruntime running the file, on random images
    fed to each as it expects them; None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    h, w, c = model.input_shape
    pixels = np.random.default_rng(0).integers(0, 256, (CHECK_IMAGES, h, w, c)).astype(np.uint8)
    ours = np.asarray(model.predict(imported.params, preprocess.to_float(pixels), imported.state or None))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if imported.uint8_input:
        feed = pixels
    else:
        given_mean = np.zeros(c) if mean is None else np.broadcast_to(np.asarray(mean, np.float64), (c,))
        given_std = np.ones(c) if std is None else np.broadcast_to(np.asarray(std, np.float64), (c,))
        user = (pixels / 255 * scale - given_mean) / given_std
        nchw = "float" in session.get_inputs()[0].type and session.get_inputs()[0].shape[1] == c
        feed = (user.transpose(0, 3, 1, 2) if nchw else user).astype(np.float32)
    theirs = np.asarray(session.run(None, {name: feed})[0]).reshape(ours.shape)
    return float(np.abs(ours - theirs).max() / max(1.0, float(np.abs(theirs).max())))


def import_network(
    model_path: str | Path,
    out: str | Path,
    *,
    mean: Any = None,
    std: Any = None,
    scale: float = 1.0,
    class_names: str | Path | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Import ``model_path`` (ONNX) into the run folder ``out`` (``out/spec.json`` holds its spec): see
    :func:`jaxcnn.onnx_import.read_onnx` for ``mean``, ``std`` and ``scale``."""
    from jaxcnn.model import Model

    path, run_dir = Path(model_path), Path(out)
    check_out(run_dir, overwrite)  # before the work: a refusal is quick
    imported = read_onnx(path, mean=mean, std=std, scale=scale)
    spec_path = run_dir / "spec.json"
    try:
        spec = parse_spec(imported.spec, str(spec_path))
        model = Model(spec)
        model.check_params(imported.params)  # type: ignore[arg-type]  # NumPy arrays: what a checkpoint holds
        model.check_state(imported.state)  # type: ignore[arg-type]
    except (SpecError, ValueError) as err:
        raise OnnxImportError(f"{path}: read, but its network is not one jaxcnn can build ({err}); nothing was "
                              "written") from None  # fmt: skip
    names = read_class_names(class_names, int(spec.output_shape[-1]))
    preprocess = Preprocess(mean=imported.mean, std=imported.std)
    difference = onnxruntime_difference(path, imported, model, preprocess, scale, mean, std)
    if difference is not None and difference > AGREEMENT:
        raise OnnxImportError(f"{path}: the imported network's outputs differ from onnxruntime's by "
                              f"{difference:.2e} (relative) on random images, so it was not written; please report "
                              "it with the file")  # fmt: skip
    record = {
        "format": RUN_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "spec": imported.spec,
        "spec_source": str(spec_path),
        "dataset": {"name": IMPORTED, "source": f"trained elsewhere; imported from {path}", "data_dir": None,
                    "class_names": names, "image_shape": list(model.input_shape), "train_count": 0, "test_count": 0},
        "preprocess": preprocess.to_dict(),
        "layer_modules": {},
        "train": {},
        "imported": {"from": str(path.absolute()), "opset": imported.opset, "producer": imported.producer,
                     "onnxruntime_difference": difference},
        "versions": library_versions(),
        "command": sys.argv,
    }  # fmt: skip
    with writing(run_dir):
        check_out(run_dir, overwrite)  # again, now that no one else can be writing it
        staged = StagedRun(run_dir)
        try:
            folder = staged.create()
            write_atomic(folder / "spec.json", json.dumps(imported.spec, indent=2) + "\n")
            write_atomic(folder / "config.json", json.dumps(record, indent=2) + "\n")
            write_metrics(folder, [])
            checkpoints = open_checkpoints(folder)
            tree: dict[str, Any] = {"params": imported.params}
            if imported.state:
                tree["model_state"] = imported.state
            checkpoints.save(0, tree, {"test_accuracy": 0.0})
            checkpoints.close()
            staged.publish()
        finally:
            staged.discard()
    return ImportResult(run_dir, spec_path, len(spec.layers), model.param_count(), difference, imported)
