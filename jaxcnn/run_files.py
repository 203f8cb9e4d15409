"""A run folder's files, read and written: ``config.json``, ``metrics.jsonl`` and ``checkpoints/``, and
:class:`Run`, a trained run loaded for prediction.

A run folder holds ``config.json`` (spec, data set, preprocessing, hyperparameters, library versions,
devices), ``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (orbax: the latest and the best
epoch) and ``curves.png``. Files are written to a temporary name and renamed, so a crash never leaves
half a file; :mod:`jaxcnn.run_folder` keeps one writer per run and stages a new run until its first
epoch is saved.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxcnn.downloads import DATA_DIR_ENV
from jaxcnn.files import read_format_json, written_whole
from jaxcnn.layer_types import LAYER_TYPES, PROVIDERS
from jaxcnn.model import Model, Params, State, check_uint8_images, mirror_views
from jaxcnn.preprocess import Preprocess
from jaxcnn.run_folder import RUN_FORMAT, RunError
from jaxcnn.spec import LAYER_MODULES_ENV, NetworkSpec, parse_spec

if TYPE_CHECKING:
    from jaxcnn.checkpoint import Checkpoints

PREDICT_BATCH = 1000


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: all or nothing."""
    with written_whole(path) as temporary:
        temporary.write_text(text)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("jaxcnn", "jax", "jaxlib", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def open_checkpoints(run_dir: Path, *, create: bool = True) -> Checkpoints:
    """The run's ``checkpoints/`` folder. orbax is imported here, not with this module: it takes
    about 0.5 s, which a run that keeps nothing on disk (``out=None``) should not pay."""
    from jaxcnn.checkpoint import Checkpoints

    return Checkpoints(run_dir / "checkpoints", create=create)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json``, or a RunError saying what is wrong."""
    path = run_dir / "config.json"
    config = read_format_json(path, RUN_FORMAT, RunError, f"{run_dir}: not a jaxcnn run directory (no config.json)",
                              "the run cannot be resumed or loaded")  # fmt: skip
    _check_config_fields(config, path)
    return config


_CONFIG_FIELDS: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("spec", "", dict),
    ("dataset", "", dict),
    ("dataset", "name", str),
    ("dataset", "class_names", list),
    ("dataset", "image_shape", list),
    ("preprocess", "", dict),
    ("train", "", dict),
)


def _check_config_fields(config: dict[str, Any], path: Path) -> None:
    """The fields jaxcnn reads from a run's config.json are there and of the right kind (it may be hand-edited)."""
    for key, sub, kind in _CONFIG_FIELDS:
        value = config.get(key) if not sub else config[key].get(sub)
        if not isinstance(value, kind):
            field = f"{key}.{sub}" if sub else key
            found = "missing" if value is None else f"a {type(value).__name__}"
            raise RunError(
                f"{path}: field '{field}' is {found}, expected a {getattr(kind, '__name__', kind)}; config.json was "
                "edited by hand or by another program: restore it from a copy"
            )
    names, shape = config["dataset"]["class_names"], config["dataset"]["image_shape"]
    if not all(isinstance(n, str) for n in names) or not (len(shape) == 3 and all(isinstance(n, int) for n in shape)):
        raise RunError(f"{path}: 'dataset.class_names' must be strings and 'dataset.image_shape' three integers")


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every epoch's metrics recorded so far (an absent file is an empty list)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: unreadable ({err}); jaxcnn writes it whole, so it was changed from outside") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            row, problem = None, f"not JSON ({err})"
        else:
            problem = "not a metrics row (an object with an integer 'epoch' and numbers)"
        ok = isinstance(row, dict) and isinstance(row.get("epoch"), int)
        if not ok or not all(isinstance(v, (int, float)) for v in row.values()):
            raise RunError(
                f"{path}, line {number}: {problem}; jaxcnn writes this file whole, so it was changed from outside: "
                "restore it from a copy"
            )
        rows.append(row)
    return rows


def run_data_dir(config: dict[str, Any], data_dir: str | Path | None) -> str | Path | None:
    """Where a run's data set is found: ``data_dir`` if given, else ``$JAXCNN_DATA_DIR``, else the offline
    folder the run was trained from while it still exists, else None (tensorflow-datasets downloads it)."""
    if data_dir not in (None, "") or os.environ.get(DATA_DIR_ENV):
        return data_dir
    recorded = config["dataset"].get("data_dir")
    return recorded if isinstance(recorded, str) and Path(recorded).is_dir() else None


def write_metrics(run_dir: Path, metrics: list[dict[str, float]]) -> None:
    """Rewrite ``metrics.jsonl`` whole (one JSON line per epoch), atomically."""
    write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def layer_modules(spec: NetworkSpec) -> dict[str, str]:
    """The modules outside jaxcnn that registered the layer types ``spec`` uses (recorded in the run, so that
    loading it can say what to import)."""
    return {layer.type: PROVIDERS[layer.type] for layer in spec.layers
            if not PROVIDERS[layer.type].startswith("jaxcnn.")}  # fmt: skip


def spec_from_config(config: dict[str, Any], run_dir: Path) -> NetworkSpec:
    """The run's network, checked against the run's class names (one output per class)."""
    providers = config.get("layer_modules", {})
    missing = {kind: module for kind, module in providers.items() if kind not in LAYER_TYPES}
    if missing:
        kind, module = next(iter(missing.items()))
        raise RunError(f"{run_dir}: the run's network uses the layer type {kind!r}, which the module {module!r} "
                       f"registers; import {module} first (jaxcnn command: {LAYER_MODULES_ENV}={module})")  # fmt: skip
    spec = parse_spec(config["spec"], f"{run_dir / 'config.json'}: spec")
    classes = len(config["dataset"]["class_names"])
    if spec.output_shape != (classes,):
        raise RunError(
            f"{run_dir / 'config.json'}: the network has {'x'.join(map(str, spec.output_shape))} outputs but "
            f"'dataset.class_names' lists {classes} classes; config.json was edited: restore it from a copy"
        )
    return spec


def check_spec_matches(model: Model, params: Params, run_dir: Path, epoch: int, state: State | None = None) -> None:
    """A RunError when the checkpoint's weights (and state) do not fit the spec recorded in config.json."""
    try:
        model.check_params(params)
        model.check_state(state)
    except ValueError as err:
        raise RunError(
            f"{run_dir / 'config.json'}: its spec does not match the checkpoint of epoch {epoch}: {err}. The spec "
            "in config.json was changed after training; restore config.json from a copy"
        ) from None


def weights_from_run(model: Model, run_dir: str | Path) -> tuple[Params, State]:
    """``--init-from RUN``: the run's best weights and state, as ``model``'s starting point; a RunError when the
    run cannot be read or its layers do not fit ``model`` (names and shapes)."""
    run = Run(run_dir)
    try:
        model.check_params(run.params)
        model.check_state(run.state)
    except ValueError as err:
        raise RunError(f"--init-from {run_dir}: its weights do not fit {model.spec.name}: {err}. Fine-tune with a "
                       "spec that has the run's layers (for an imported run, RUN/spec.json)") from None  # fmt: skip
    return jax.device_put(run.params), jax.device_put(run.state)


class Run:
    """A trained run loaded for use: ``model``, ``params`` and ``state`` (best epoch), ``class_names``,
    ``predict``. ``state`` is the network's batch-norm statistics (``{}`` for most networks)."""

    def __init__(self, run_dir: str | Path, which: str = "best") -> None:
        self.run_dir = Path(run_dir)
        self.config = read_config(self.run_dir)
        self.model = Model(spec_from_config(self.config, self.run_dir))
        self.class_names: tuple[str, ...] = tuple(self.config["dataset"]["class_names"])
        self.preprocess = Preprocess.from_dict(self.config["preprocess"])
        self.image_shape = tuple(self.config["dataset"]["image_shape"])
        checkpoints = open_checkpoints(self.run_dir, create=False)
        epoch = checkpoints.best_epoch() if which == "best" else checkpoints.latest_epoch()
        if epoch is None:
            raise RunError(f"{self.run_dir}: has no complete checkpoint yet; train it (or resume it) first")
        self.epoch = epoch
        self.params: Params
        self.state: State
        self.params, self.state = checkpoints.restore_params(epoch)
        check_spec_matches(self.model, self.params, self.run_dir, epoch, self.state)
        self.tta = bool(self.config["train"].get("tta", False))
        self._predict = jax.jit(self._probabilities)

    def _probabilities(self, params: Params, state: State, images: jax.Array) -> jax.Array:
        """The network's output for uint8 images; with the run's ``tta``, averaged with the mirror images'."""

        def probabilities(batch: jax.Array) -> jax.Array:
            return self.model.predict(params, self.preprocess.to_float(batch), state)

        return mirror_views(probabilities, images).mean(axis=0) if self.tta else probabilities(images)

    def fitted(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC images at the network's input size: padded and converted as the run was trained, unless
        they already are."""
        return images if images.shape[1:] == tuple(self.model.input_shape) else self.preprocess.fit(images)

    def network_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC images (the data set's size or the network's) as the network's float input: what
        :mod:`jaxcnn.explain` takes."""
        return np.asarray(self.preprocess.to_float(self.fitted(images)))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for uint8 NHWC images of the spec's input shape.

        Images of the data set's original shape are accepted too when the run padded or
        converted them (for example 28x28x1 digits for a 32x32x3 spec). Any N: large batches are
        computed in slices of PREDICT_BATCH images.
        """
        images = check_uint8_images(images, str(self.run_dir), self.model.input_shape, self.image_shape)
        if images.shape[1:] != self.model.input_shape:
            images = self.preprocess.fit(images)
        # In slices of PREDICT_BATCH: any number of images, bounded memory, at most two compilations.
        parts = [
            self._predict(self.params, self.state, images[i : i + PREDICT_BATCH])
            for i in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros((0, *self.model.output_shape))


def load_run(run_dir: str | Path, which: str = "best") -> Run:
    """Load a trained run directory: ``load_run(RUN).predict(images)`` gives class probabilities."""
    return Run(run_dir, which)
