"""What ``jaxcnn explore`` shows, computed from a trained run: no HTTP here (that is
:mod:`jaxcnn.explore_server`), so every answer can be tested as a plain function.

Images travel as the data set's uint8 pixels (H x W x C, row-major, base64); feature maps and
filters as little-endian float32 arrays (base64) with their shapes, which the page reads with a
``Float32Array``.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn import explain as saliency
from jaxcnn.data import Dataset, load_dataset
from jaxcnn.errors import DataError, JaxcnnError
from jaxcnn.explanations import HEAT_COLOURS, HEAT_OPACITY, TOP_IMAGES, input_range, picture_pixels, top_images
from jaxcnn.images import fitted_image
from jaxcnn.layer_types import Layer
from jaxcnn.metrics import confusion_matrix
from jaxcnn.runs import load_run, read_metrics, run_data_dir

MAX_CELL_IMAGES = 100
"""The most test images one confusion-matrix cell returns (the count is always exact)."""


class ExploreRequestError(JaxcnnError):
    """A request the explorer cannot answer; ``status`` is the HTTP status the server sends."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def encode_array(values: np.ndarray) -> dict[str, Any]:
    """A float array as ``{"shape", "data"}``: little-endian float32, base64."""
    values = np.ascontiguousarray(values, dtype="<f4")
    return {"shape": list(values.shape), "data": base64.b64encode(values.tobytes()).decode("ascii")}


def encode_pixels(image: np.ndarray) -> str:
    """uint8 pixels (H x W x C) as base64."""
    return base64.b64encode(np.ascontiguousarray(image, np.uint8).tobytes()).decode("ascii")


def _base64_field(value: object, field: str, what: str) -> bytes:
    """A request field that holds base64 of ``what``, decoded, or a clear error naming the field."""
    if not isinstance(value, str):
        raise ExploreRequestError(f"'{field}' must be a base64 string of {what}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ExploreRequestError(f"'{field}' is not valid base64") from None


def explains(layer: Layer) -> bool:
    """Whether the page can show a layer's arithmetic for one output pixel (conv and pooling layers)."""
    return type(layer).explain is not Layer.explain


class Explorer:
    """A trained run opened for exploring: predictions, every layer's feature maps, the arithmetic
    behind one output pixel, test images and the confusion matrix. Thread-safe."""

    def __init__(self, run_dir: str | Path, data_dir: str | None = None, which: str = "best") -> None:
        self.run_dir = Path(run_dir)
        self.run = load_run(self.run_dir, which)
        self.model = self.run.model
        self.layers = {layer.name: layer for layer in self.model.spec.layers}
        self.image_shape: tuple[int, int, int] = tuple(self.run.image_shape)
        self.metrics = read_metrics(self.run_dir)
        self._data_dir = run_data_dir(self.run.config, data_dir)
        self._data_lock = threading.Lock()
        """Held while the test set loads and its predictions are computed (once); predictions and feature
        maps of the page's image take no lock, so a slow request does not hold up the others."""
        self._cache_lock = threading.Lock()
        self._data: Dataset | None = None
        self._data_error: str | None = None
        self._predictions: np.ndarray | None = None
        self._last_outputs: tuple[bytes, dict[str, np.ndarray]] | None = None
        """The last image's layer outputs: the page asks for its maps and then its pixels' arithmetic."""
        self._explainer = saliency.Explainer(self.model)
        self._weighted = [layer.name for layer in self.model.spec.layers if layer.name in self.run.params][::-1]
        """The layers with weights, top first: the order the "randomise weights" switch takes them in."""
        self._random_params: dict[int, Any] = {0: self.run.params}
        self._top_units: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        model, preprocess = self.model, self.run.preprocess
        self._maps = jax.jit(lambda params, state, images: model.intermediates(params, preprocess.to_float(images),
                                                                               state))  # fmt: skip

    def warm_up(self) -> None:
        """Compile the prediction and feature-map functions now, so the first stroke is answered quickly."""
        blank = np.zeros(self.image_shape, np.uint8)
        self.predict(blank)
        self._layer_outputs(blank)
        self.why(blank, saliency.default_method(self.model))  # the page asks for it with every image

    # ------------------------------------------------------------------ requests

    def network(self) -> dict[str, Any]:
        """Everything the page draws once: the layer table, classes, shapes, curves and first filters."""
        spatial = [layer.name for layer in self.model.spec.layers if len(layer.output_shape) == 3]
        rows = [row.to_dict() | {"explains": explains(self.layers[row.name]), "merges": self.layers[row.name].MERGES}
                for row in self.model.summary()]  # fmt: skip
        first = self.model.spec.layers[0]
        filters = None
        if first.type == "conv" and first.name in self.run.params:
            filters = {"layer": first.name, **encode_array(np.asarray(self.run.params[first.name]["kernel"]))}
        return {
            "run": str(self.run_dir),
            "spec": self.model.spec.name,
            "epoch": self.run.epoch,
            "image_shape": list(self.image_shape),
            "input_shape": list(self.model.input_shape),
            "class_names": list(self.run.class_names),
            "dataset": self.run.config["dataset"]["name"],
            "layers": rows,
            "filters": filters,
            "metrics": self.metrics,
            "explain": {
                "methods": [m for m in saliency.METHODS if m != "grad-cam" or spatial],
                "default_method": saliency.default_method(self.model),
                "spatial_layers": spatial,
                "weighted_layers": self._weighted,
                "unit_layers": [{"name": name, "units": saliency.unit_count(self.model, name)}
                                for name in self._weighted[::-1]],
                "colours": HEAT_COLOURS,
                "opacity": HEAT_OPACITY,
            },
        }  # fmt: skip

    def predict(self, pixels: np.ndarray) -> dict[str, Any]:
        """Class probabilities for one image, as ``jaxcnn.load_run(RUN).predict`` gives them."""
        probabilities = self.run.predict(pixels[None])[0]
        return {"probabilities": [float(p) for p in probabilities]}

    def activations(self, pixels: np.ndarray) -> dict[str, Any]:
        """Every layer's output for one image (after its activation), and the network's input as it sees it."""
        outputs = self._layer_outputs(pixels)
        layers = {name: encode_array(values) for name, values in outputs.items() if name != "input"}
        return {"input": encode_array(outputs["input"]), "layers": layers}

    def explain(self, pixels: np.ndarray, layer_name: str, row: int, col: int, channel: int) -> dict[str, Any]:
        """The arithmetic behind one output pixel of a conv or pooling layer, with the value the layer gave."""
        layer = self.layers.get(layer_name)
        if layer is None:
            raise ExploreRequestError(f"no layer named {layer_name!r}; the network has {', '.join(self.layers)}")
        if not explains(layer):
            raise ExploreRequestError(f"layer {layer_name!r} is a {layer.type} layer; the arithmetic is shown "
                                      "for conv, max_pool and avg_pool layers")  # fmt: skip
        height, width, channels = layer.output_shape
        for what, value, limit in (("row", row, height), ("col", col, width), ("channel", channel, channels)):
            if not 0 <= value < limit:
                raise ExploreRequestError(f"{what} {value} is outside layer {layer_name!r} "
                                          f"({height}x{width}x{channels}): choose 0 to {limit - 1}")  # fmt: skip
        outputs = self._layer_outputs(pixels)
        source = layer.inputs[0]
        answer = layer.explain(self.run.params.get(layer_name, {}), outputs[source], row, col, channel)
        assert answer is not None  # explains(layer) said so
        layer_value = float(outputs[layer_name][row, col, channel])
        return {**answer, "layer": layer_name, "input_layer": source, "row": row, "col": col, "channel": channel,
                "layer_value": layer_value}  # fmt: skip

    def why(self, pixels: np.ndarray, method: str, class_index: int | None = None, layer: str | None = None,
            randomize: int = 0) -> dict[str, Any]:  # fmt: skip
        """Why the network answers as it does for one image: ``method``'s heatmap (:func:`jaxcnn.explain.heatmap`)
        for ``class_index`` (default: the predicted class), with the top ``randomize`` weighted layers given
        random weights (cascading, as in Adebayo et al. 2018), over the image as the network sees it."""
        if method not in saliency.METHODS:
            raise ExploreRequestError(f"method {method!r}: choose one of {', '.join(saliency.METHODS)}")
        classes = len(self.run.class_names)
        if class_index is not None and not 0 <= class_index < classes:
            raise ExploreRequestError(f"class {class_index}: classes are 0 to {classes - 1}")
        spatial = [name for name, lay in self.layers.items() if len(lay.output_shape) == 3]
        if method == "grad-cam" and not spatial:
            raise ExploreRequestError("Grad-CAM needs a layer with an H x W x C output; this network has none")
        if layer is not None and layer not in spatial:
            raise ExploreRequestError(f"layer {layer!r}: Grad-CAM takes a layer with an H x W x C output: "
                                      f"{', '.join(spatial)}")  # fmt: skip
        params = self._randomized(randomize)
        started = time.perf_counter()
        fitted = self.run.fitted(pixels[None])
        x = self.run.network_input(fitted)
        predicted = int(self._explainer.predicted_classes(params, self.run.state, x)[0])
        chosen = predicted if class_index is None else class_index
        heat = self._explainer.heatmap(params, self.run.state, x, method, [chosen], layer=layer)[0]
        return {"method": method, "class": chosen, "predicted": predicted, "randomized": self._weighted[:randomize],
                "layer": (layer or saliency.last_spatial_layer(self.model)) if method == "grad-cam" else None,
                "heatmap": encode_array(heat), "pixels": encode_pixels(fitted[0]), "shape": list(fitted.shape[1:]),
                "milliseconds": 1000 * (time.perf_counter() - started)}  # fmt: skip

    def unit_picture(self, layer: str, unit: int) -> dict[str, Any]:
        """What one unit looks for: its picture (:func:`jaxcnn.explain.filter_picture`) and, when the test set is
        at hand, the TOP_IMAGES test images that excite it most."""
        if layer not in self._weighted:
            raise ExploreRequestError(f"layer {layer!r}: pictures are drawn for the layers with weights: "
                                      f"{', '.join(self._weighted[::-1])}")  # fmt: skip
        problem = saliency.unit_out_of_range(self.model, layer, unit)
        if problem:
            raise ExploreRequestError(problem)
        started = time.perf_counter()
        low, high = input_range(self.run)
        picture = self._explainer.filter_picture(self.run.params, self.run.state, layer, unit, low=low, high=high)
        answer: dict[str, Any] = {"layer": layer, "unit": unit, "shape": list(picture.shape),
                                  "picture": encode_pixels(picture_pixels(self.run, picture)),
                                  "milliseconds": 1000 * (time.perf_counter() - started)}  # fmt: skip
        try:
            data = self._dataset()
        except ExploreRequestError as error:
            return answer | {"top": None, "top_note": str(error)}
        with self._data_lock:
            if layer not in self._top_units:
                self._top_units[layer] = top_images(self._explainer, self.run, data.test_images, layer, TOP_IMAGES)
            order, values = self._top_units[layer]
        return answer | {"top": [{"index": int(i), "value": float(v), "label": int(data.test_labels[i]),
                                  "pixels": encode_pixels(data.test_images[i])}
                                 for i, v in zip(order[unit], values[unit], strict=True)]}  # fmt: skip

    def test_image(self, index: int) -> dict[str, Any]:
        """One test image and its label, when the run's data set is at hand."""
        data = self._dataset()
        if not 0 <= index < len(data.test_images):
            raise ExploreRequestError(f"index {index}: the test set has {len(data.test_images):,} images; "
                                      f"choose 0 to {len(data.test_images) - 1}")  # fmt: skip
        return {"index": index, "count": len(data.test_images), "label": int(data.test_labels[index]),
                "pixels": encode_pixels(data.test_images[index])}  # fmt: skip

    def confusion(self) -> dict[str, Any]:
        """counts[true][predicted] over the test set, and the accuracy."""
        data, predictions = self._dataset(), self._test_predictions()
        counts = confusion_matrix(data.test_labels, predictions, len(self.run.class_names))
        return {"counts": counts.tolist(), "accuracy": float(np.trace(counts) / max(1, counts.sum())),
                "class_names": list(self.run.class_names)}  # fmt: skip

    def confusion_cell(self, true: int, predicted: int) -> dict[str, Any]:
        """The test images of one confusion-matrix cell (the first MAX_CELL_IMAGES) and their count."""
        classes = len(self.run.class_names)
        for what, value in (("true", true), ("predicted", predicted)):
            if not 0 <= value < classes:
                raise ExploreRequestError(f"{what}={value}: classes are 0 to {classes - 1}")
        data, predictions = self._dataset(), self._test_predictions()
        chosen = np.flatnonzero((data.test_labels == true) & (predictions == predicted))
        return {"true": true, "predicted": predicted, "count": len(chosen),
                "indices": chosen[:MAX_CELL_IMAGES].tolist(),
                "images": [encode_pixels(data.test_images[i]) for i in chosen[:MAX_CELL_IMAGES]]}  # fmt: skip

    def decode_pixels(self, text: object) -> np.ndarray:
        """The request's base64 pixels as a uint8 image of the data set's shape, or a clear error."""
        raw = _base64_field(text, "pixels", "uint8 pixels (H x W x C, row-major)")
        size = int(np.prod(self.image_shape))
        if len(raw) != size:
            shape = "x".join(map(str, self.image_shape))
            raise ExploreRequestError(f"'pixels' holds {len(raw):,} bytes; a {shape} image has {size:,}")
        return np.frombuffer(raw, np.uint8).reshape(self.image_shape)

    def decode_upload(self, text: object, name: object = "the uploaded file") -> dict[str, Any]:
        """An uploaded image file (base64 of its bytes) as the page's pixels: read by
        :func:`jaxcnn.images.fitted_image`, as ``jaxcnn predict`` reads a file."""
        raw = _base64_field(text, "file", "an image file's bytes")
        where = name[:200] if isinstance(name, str) and name else "the uploaded file"
        try:
            pixels = fitted_image(raw, where, self.image_shape)
        except DataError as err:
            raise ExploreRequestError(str(err)) from None
        return {"pixels": encode_pixels(pixels)}

    # ------------------------------------------------------------------ helpers

    def _layer_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        key = pixels.tobytes()
        with self._cache_lock:
            last = self._last_outputs
        if last is not None and last[0] == key:
            return last[1]
        fitted = self.run.preprocess.fit(pixels[None])
        maps = self._maps(self.run.params, self.run.state, fitted)
        outputs = {"input": np.asarray(self.run.preprocess.to_float(fitted))[0]}
        outputs |= {name: np.asarray(maps[name][0]) for name in self.layers}  # in the spec's order
        with self._cache_lock:
            self._last_outputs = (key, outputs)
        return outputs

    def _randomized(self, count: int) -> Any:
        """The run's weights with the top ``count`` weighted layers random (the same random weights each time)."""
        if not 0 <= count <= len(self._weighted):
            raise ExploreRequestError(f"randomize {count}: the network has {len(self._weighted)} layers with "
                                      f"weights; choose 0 to {len(self._weighted)}")  # fmt: skip
        with self._cache_lock:
            if count not in self._random_params:
                self._random_params[count] = saliency.randomize_top_layers(self.model, self.run.params, count)[0]
            return self._random_params[count]

    def _dataset(self) -> Dataset:
        with self._data_lock:
            if self._data is None and self._data_error is None:
                try:
                    self._data = load_dataset(self.run.config["dataset"]["name"], self._data_dir)
                except (JaxcnnError, OSError) as error:
                    self._data_error = str(error)
            if self._data is None:
                raise ExploreRequestError(f"the run's test images are not at hand: {self._data_error}", 404)
            return self._data

    def _test_predictions(self) -> np.ndarray:
        data = self._dataset()
        with self._data_lock:
            if self._predictions is None:  # checked under the lock: two requests compute it once
                self._predictions = self.run.predict(data.test_images).argmax(axis=1)
            return self._predictions
