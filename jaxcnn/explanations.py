"""The explain commands' work, for a trained run: heatmaps over image files (``jaxcnn explain``) and what a filter
or unit looks for (``jaxcnn filters``), written as PNG and ``.npy``. The computing is :mod:`jaxcnn.explain`'s;
the explorer shows the same (:mod:`jaxcnn.explorer`).

Heatmaps are drawn in one diverging pair of colours that colour-blind readers tell apart (the ends of
ColorBrewer's PuOr): orange where a pixel counts for the class, purple where it counts against it, each as
opaque as the value is large; where the map is near zero the image shows through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jaxcnn import explain, plots
from jaxcnn.errors import JaxcnnError
from jaxcnn.files import written_whole
from jaxcnn.images import read_image_file
from jaxcnn.runs import Run, load_run

HEAT_COLOURS = {"positive": (230, 97, 1), "negative": (94, 60, 153)}
"""Orange for evidence for the class, purple against (ColorBrewer PuOr's ends; the page draws with these too)."""
HEAT_OPACITY = 0.85
"""How opaque the colour is where the map reaches its largest absolute value."""
SHOWN_SIZE = 224
"""Heatmap PNGs are enlarged (whole pixels, no smoothing) to at least this many pixels on their shorter side."""
TOP_IMAGES = 9
"""How many test images ``jaxcnn filters`` and the explorer show for a unit: the ones that excite it most."""


class ExplainError(JaxcnnError):
    """A request to explain that does not fit the run (an unknown layer or class, a unit out of range)."""


def overlay(image: np.ndarray, heat: np.ndarray, scale: float | None = None) -> np.ndarray:
    """uint8 RGB (H x W x 3): ``image`` (uint8 H x W x C, grey or RGB) under ``heat`` (H x W) in HEAT_COLOURS,
    opacity HEAT_OPACITY x |value| / ``scale`` (default: the map's largest absolute value)."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    scale = float(np.abs(heat).max()) if scale is None else scale
    strength = np.clip(np.abs(heat) / scale, 0, 1) if scale > 0 else np.zeros_like(heat)
    colour = np.where((heat >= 0)[..., None], HEAT_COLOURS["positive"], HEAT_COLOURS["negative"])
    alpha = (HEAT_OPACITY * strength)[..., None]
    return np.round(rgb * (1 - alpha) + colour * alpha).astype(np.uint8)


def enlarged(image: np.ndarray, at_least: int = SHOWN_SIZE) -> np.ndarray:
    """``image`` with each pixel repeated so that its shorter side is at least ``at_least`` pixels."""
    factor = max(1, -(-at_least // min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def class_index(run: Run, text: str) -> int:
    """``--class``: a class name of the run, or its index."""
    if text in run.class_names:
        return run.class_names.index(text)
    if text.isdigit() and int(text) < len(run.class_names):
        return int(text)
    shown = ", ".join(f"{i} {name}" for i, name in enumerate(run.class_names))
    raise ExplainError(f"--class {text!r}: {run.run_dir} tells these classes apart: {shown}; give a name or a number")


def spatial_layers(run: Run) -> list[str]:
    """The layers Grad-CAM can weigh: those whose output is still an image (H x W x C)."""
    return [layer.name for layer in run.model.spec.layers if len(layer.output_shape) == 3]


def check_layer(run: Run, name: str, *, spatial: bool) -> str:
    """``name`` if the run's network has such a layer (a spatial one when ``spatial``), else a clear error."""
    allowed = spatial_layers(run) if spatial else [layer.name for layer in run.model.spec.layers]
    if name not in allowed:
        what = "layers with an H x W x C output (for Grad-CAM)" if spatial else "layers"
        raise ExplainError(f"--layer {name!r}: {run.model.spec.name} has no such layer; its {what}: "
                           f"{', '.join(allowed)}")  # fmt: skip
    return name


@dataclass(frozen=True)
class Explained:
    """One image explained by one method: the class explained, the predicted one, and the files written."""

    image: str
    method: str
    explained: str
    predicted: str
    png: Path
    npy: Path


def explain_images(
    run_dir: str | Path,
    paths: list[str],
    methods: list[str] | None,
    out: Path,
    *,
    which: str = "best",
    layer: str | None = None,
    class_name: str | None = None,
    randomize: int = 0,
    steps: int = 64,
    samples: int = 25,
) -> list[Explained]:
    """Heatmaps of each image file by each method (default: :func:`jaxcnn.explain.default_method`), over the
    image as the network sees it (after padding), as ``OUT/STEM.METHOD.png`` (enlarged, HEAT_COLOURS) and the
    numbers as ``OUT/STEM.METHOD.npy`` (its H x W).
    ``randomize``: that many layers with weights, from the top, are given random weights first (the sanity
    check of Adebayo et al. 2018)."""
    run = load_run(run_dir, which)
    methods = methods or [explain.default_method(run.model)]
    for method in methods:
        if method not in explain.METHODS:
            raise ExplainError(f"--method {method!r}: choose from {', '.join(explain.METHODS)}")
    if "grad-cam" in methods and not spatial_layers(run):
        raise ExplainError(f"--method grad-cam: {run.model.spec.name} has no layer with an H x W x C output to "
                           "weigh (it is fully connected); choose another --method")  # fmt: skip
    if layer is not None:
        check_layer(run, layer, spatial=True)
    chosen = None if class_name is None else class_index(run, class_name)
    try:
        params, _ = explain.randomize_top_layers(run.model, run.params, randomize, key=0)
    except ValueError as err:
        raise ExplainError(f"--randomize {randomize}: {err}") from None
    images = np.stack([read_image_file(path, run.image_shape) for path in paths])
    shown = run.fitted(images)
    x = run.network_input(shown)
    explainer = explain.Explainer(run.model)
    predicted = run.predict(images).argmax(axis=1)
    classes = predicted if chosen is None else np.full(len(paths), chosen)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for method in methods:
        maps = explainer.heatmap(params, run.state, x, method, classes, layer=layer, steps=steps, samples=samples)
        for path, image, heat, cls, guess in zip(paths, shown, maps, classes, predicted, strict=True):
            stem = Path(path).stem
            png, npy = out / f"{stem}.{method}.png", out / f"{stem}.{method}.npy"
            with written_whole(png) as temporary:
                Image.fromarray(enlarged(overlay(image, heat))).save(temporary)
            with written_whole(npy) as temporary, open(temporary, "wb") as file:
                np.save(file, heat)
            done.append(Explained(path, method, run.class_names[cls], run.class_names[guess], png, npy))
    return done


@dataclass(frozen=True)
class UnitPicture:
    """What one unit looks for: its picture (the network's input that excites it most), the test images that
    excite it most (their indices and the unit's values), and the PNG and ``.npy`` written."""

    layer: str
    unit: int
    top_indices: list[int]
    top_values: list[float]
    png: Path
    npy: Path


def picture_pixels(run: Run, picture: np.ndarray) -> np.ndarray:
    """A filter picture (float, the network's input space) as uint8 pixels: the inverse of the run's scaling."""
    low, high = input_range(run)
    return np.round(255 * (picture - low) / (high - low)).clip(0, 255).astype(np.uint8)


def input_range(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The values a black and a white pixel become in the network's input, per channel."""
    black, white = (run.network_input(np.full((1, *run.model.input_shape), v, np.uint8))[0, 0, 0] for v in (0, 255))
    return black, white


def top_images(explainer: explain.Explainer, run: Run, images: np.ndarray, layer: str, count: int = TOP_IMAGES,
               batch: int = 512) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For every unit of ``layer``: the indices of the ``count`` images (uint8, the data set's) that excite it
    most and its values for them, each (units x count), largest first."""
    values = np.concatenate([explainer.unit_activations(run.params, run.state, run.network_input(images[i : i + batch]),
                                                        layer) for i in range(0, len(images), batch)])  # fmt: skip
    order = np.argsort(-values, axis=0, kind="stable")[:count].T
    return order, np.take_along_axis(values.T, order, axis=1)


def unit_pictures(
    run_dir: str | Path,
    layer: str,
    units: list[int] | None,
    out: Path,
    test_images: np.ndarray | None,
    *,
    which: str = "best",
    steps: int = 256,
) -> list[UnitPicture]:
    """For each unit of ``layer`` (all when ``units`` is None): ``OUT/LAYER.UNIT.png``, its picture beside the
    TOP_IMAGES test images that excite it most (when ``test_images`` are given), and ``OUT/LAYER.UNIT.npy``."""
    run = load_run(run_dir, which)
    check_layer(run, layer, spatial=False)
    count = explain.unit_count(run.model, layer)
    chosen = list(range(count)) if units is None else units
    for unit in chosen:
        problem = explain.unit_out_of_range(run.model, layer, unit)
        if problem:
            raise ExplainError(f"--units: {problem}")
    explainer = explain.Explainer(run.model)
    low, high = input_range(run)
    if test_images is not None:
        order, values = top_images(explainer, run, test_images, layer)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for unit in chosen:
        picture = explainer.filter_picture(run.params, run.state, layer, unit, low=low, high=high, steps=steps)
        png, npy = out / f"{layer}.{unit}.png", out / f"{layer}.{unit}.npy"
        tops = [] if test_images is None else [test_images[i] for i in order[unit]]
        titles = (
            [] if test_images is None else [f"#{i}: {v:.3g}" for i, v in zip(order[unit], values[unit], strict=True)]
        )
        plots.plot_unit(picture_pixels(run, picture), run.fitted(np.stack(tops)) if tops else None, titles,
                        f"{layer} unit {unit}: what excites it", png)  # fmt: skip
        with written_whole(npy) as temporary, open(temporary, "wb") as file:
            np.save(file, picture)
        done.append(UnitPicture(layer, unit, [] if test_images is None else order[unit].tolist(),
                                [] if test_images is None else values[unit].tolist(), png, npy))  # fmt: skip
    return done
