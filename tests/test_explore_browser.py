"""jaxcnn explore in a real browser (Debian's chromium, driven by playwright): drawn digits are predicted
as ``load_run(RUN).predict`` predicts them, a conv pixel's arithmetic equals the layer's output, a
confusion-matrix cell shows its images, and the page fits a phone's screen.

By default the run is a LeNet trained here for one epoch on made-up 28x28 images; set
``JAXCNN_EXPLORE_RUN`` to test your own run instead (its data set must be at hand), and
``JAXCNN_SCREENSHOTS`` to a folder to keep the screenshots (the README's come from this). The
time from the end of a stroke to the updated prediction is printed (``pytest -s``) and, with
``JAXCNN_EXPLORE_REPORT``, written to that JSON file (``JAXCNN_EXPLORE_ROUNDS=N`` draws the 1 and
the 0 N times). Without chromium or playwright these tests
skip, saying how to install them, unless ``JAXCNN_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that
a failure.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import confusion_matrix, load_dataset
from jaxcnn.explorer import Explorer

from conftest import serving
from datasets import awkward_image_files, train_folder_run

pytestmark = pytest.mark.slow  # each module starts Chromium
ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = ("install them with `apt-get install chromium` and `pip install playwright` (or set JAXCNN_CHROMIUM "
                "to a Chrome or Chromium binary)")  # fmt: skip
PHONE = {"width": 390, "height": 844}
REBOUND_NAME = "rebind.example"
latencies_ms: list[float] = []


def chromium_path() -> str | None:
    named = os.environ.get("JAXCNN_CHROMIUM")
    if named:
        return named
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None  # type: ignore[assignment]
    if path is None or sync_playwright is None:
        missing = "playwright" if sync_playwright is None else "chromium"
        if os.environ.get("JAXCNN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser tests must run here (JAXCNN_REQUIRE_BROWSER=1) but {missing} is missing: "
                        f"{INSTALL_HINT}")  # fmt: skip
        pytest.skip(f"{missing} is missing, so the browser tests cannot run: {INSTALL_HINT}")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start. The resolver rule makes a
        # name of another site resolve to this machine, as DNS rebinding does.
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox",
                                              f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1"])  # fmt: skip
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    own = os.environ.get("JAXCNN_EXPLORE_RUN")
    if own:
        return Path(own)
    spec = json.loads((ROOT / "specs" / "lenet_mnist.json").read_text())
    spec["layers"][-1]["units"] = 4
    return train_folder_run(tmp_path_factory.mktemp("browser"), spec, size=28, train=512, test=200, epochs=2)


@pytest.fixture(scope="module")
def explorer(run_dir) -> Explorer:
    explorer = Explorer(run_dir)
    explorer.warm_up()
    return explorer


@pytest.fixture(scope="module")
def url(explorer):
    with serving(explorer) as server:
        yield server.url
    if latencies_ms:
        report = {"strokes": len(latencies_ms), "median_ms": statistics.median(latencies_ms),
                  "max_ms": max(latencies_ms), "all_ms": latencies_ms}  # fmt: skip
        print(f"\nexplore: stroke end -> updated prediction: {json.dumps(report)}")
        if os.environ.get("JAXCNN_EXPLORE_REPORT"):
            Path(os.environ["JAXCNN_EXPLORE_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")


@pytest.fixture
def page(browser, url):
    with open_page(browser, url, viewport={"width": 1200, "height": 900}) as opened:
        yield opened


@contextlib.contextmanager
def open_page(browser, url: str, **context_options) -> Iterator[Any]:
    """The page at ``url``, loaded and ready, in a new browser context; on leaving, fails if the page
    fetched anything from outside its server or reported an error."""
    context = browser.new_context(**context_options)
    opened = context.new_page()
    outside: list[str] = []
    failures: list[str] = []
    opened.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
    opened.on("pageerror", lambda error: failures.append(str(error)))
    opened.on("console", lambda m: failures.append(m.text) if m.type == "error" else None)
    opened.goto(url)
    wait_until(opened, "window.jaxcnnExplore !== undefined && window.jaxcnnExplore.stats.ready")
    yield opened
    context.close()
    assert not outside, f"the page fetched from outside its server: {outside}"
    assert not failures, f"the page reported errors: {failures}"


def wait_until(page, expression: str, timeout: float = 60.0) -> None:
    """Poll ``expression`` in the page (playwright's wait_for_function evaluates strings, which the page's
    Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        time.sleep(0.02)
    raise TimeoutError(f"the page never satisfied {expression}")


def wait_idle(page) -> None:
    wait_until(page, "document.body.dataset.busy === 'false' && "
               "window.jaxcnnExplore.stats.renderedSeq === window.jaxcnnExplore.stats.seq")  # fmt: skip


def draw(page, points: list[tuple[float, float]], record: bool = True) -> None:
    """One stroke through ``points`` (fractions of the canvas), as a mouse would draw it; ``record`` adds
    its latency to the reported figure (for the module's run only)."""
    box = page.get_by_test_id("draw-canvas").bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()
    wait_idle(page)
    if record:
        latencies_ms.append(page.evaluate("window.jaxcnnExplore.stats.lastLatencyMs"))


ONE = [(0.52, 0.15 + 0.7 * i / 20) for i in range(21)]
ZERO = [(0.5 + 0.22 * math.sin(2 * math.pi * i / 40), 0.5 - 0.32 * math.cos(2 * math.pi * i / 40)) for i in range(42)]


def page_pixels(page, explorer: Explorer) -> np.ndarray:
    raw = base64.b64decode(page.evaluate("window.jaxcnnExplore.pixels()"))
    return np.frombuffer(raw, np.uint8).reshape(explorer.image_shape)


def shown_prediction(page) -> tuple[int, dict[int, float]]:
    rows = page.get_by_test_id("prediction-row")
    shown = {int(rows.nth(i).get_attribute("data-class-index")): float(rows.nth(i).get_attribute("data-probability"))
             for i in range(rows.count())}  # fmt: skip
    return int(page.get_by_test_id("prediction").get_attribute("data-top")), shown


def screenshot(page, name: str, tmp_path: Path, full_page: bool = True) -> Path:
    folder = Path(os.environ.get("JAXCNN_SCREENSHOTS") or tmp_path)
    path = folder / f"explore_{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000
    return path


def test_drawn_one_and_zero_are_predicted_as_the_run_predicts_them(page, explorer, tmp_path):
    rounds = int(os.environ.get("JAXCNN_EXPLORE_ROUNDS", "1"))  # more strokes for a steadier latency figure
    for stroke, shape in ((ONE, "tall"), (ZERO, "ring")) * rounds:
        page.get_by_test_id("clear").click()
        wait_idle(page)
        draw(page, stroke)
        pixels = page_pixels(page, explorer)
        ink = np.argwhere(pixels[..., 0] > 64)
        height, width = np.ptp(ink, axis=0) + 1
        if shape == "tall":  # fitted into MNIST's 20-pixel box: a tall, thin stroke
            assert height == 20 and width <= 6
        else:  # a loop: a 20-pixel ring around a dark middle
            assert height == 20 and width >= 10 and pixels[14, 14, 0] < 64
        want = explorer.run.predict(pixels[None])[0]
        top, shown = shown_prediction(page)
        assert top == int(np.argmax(want))
        assert len(shown) == min(5, len(want))
        for index, probability in shown.items():
            assert probability == pytest.approx(float(want[index]), abs=1e-5)
    screenshot(page, "drawn_zero", tmp_path, full_page=False)


def test_a_conv_pixels_arithmetic_equals_the_layers_output(page, explorer, tmp_path):
    draw(page, ZERO)
    pixels = page_pixels(page, explorer)
    conv = next(layer for layer in explorer.model.spec.layers[1:] if layer.type == "conv")  # one with many channels
    fitted = explorer.run.preprocess.to_float(explorer.run.preprocess.fit(pixels[None]))
    maps = explorer.model.intermediates(explorer.run.params, jax.numpy.asarray(fitted), explorer.run.state)
    want_row, want_col, channel = np.unravel_index(int(np.argmax(maps[conv.name][0])), conv.output_shape)
    height, width, _ = conv.output_shape
    target = page.get_by_test_id(f"map-{conv.name}-{channel}")  # click the pixel at the middle of its cell
    size = target.bounding_box()
    target.click(
        position={"x": (want_col + 0.5) * size["width"] / width, "y": (want_row + 0.5) * size["height"] / height}
    )
    wait_until(page, f"document.querySelector('[data-testid=explain]').dataset.layer === '{conv.name}'")
    explain = page.get_by_test_id("explain")
    row, col, shown_channel = (int(explain.get_attribute(f"data-{k}")) for k in ("row", "col", "channel"))
    assert (row, col, shown_channel) == (want_row, want_col, channel)

    def value(testid: str) -> float:
        return float(page.get_by_test_id(testid).get_attribute("data-value"))

    products = [float(v) for v in page.locator("[data-testid=explain-products] td").evaluate_all(
        "cells => cells.map(c => c.dataset.value)")]  # fmt: skip
    assert len(products) == math.prod(conv.size) * conv.input_shape[2]
    assert sum(products) == pytest.approx(value("explain-sum"), abs=1e-5)
    assert value("explain-sum") + value("explain-bias") == pytest.approx(value("explain-pre"), abs=1e-6)
    assert max(0.0, value("explain-pre")) == pytest.approx(value("explain-output"), abs=1e-6)  # relu
    assert value("explain-output") > 0  # the layer's largest output: the arithmetic is not a clipped zero
    assert value("explain-output") == pytest.approx(float(maps[conv.name][0, row, col, channel]), abs=1e-5)
    screenshot(page, "arithmetic", tmp_path)

    pool = next(layer for layer in explorer.model.spec.layers if layer.type == "max_pool")
    page.get_by_test_id(f"map-{pool.name}-1").click(position={"x": 20, "y": 20})
    wait_until(page, f"document.querySelector('[data-testid=explain]').dataset.layer === '{pool.name}'")
    window = [float(v) for v in page.locator("[data-testid=explain-products] td").evaluate_all(
        "cells => cells.map(c => c.dataset.value).filter(v => v !== '')")]  # fmt: skip
    r, c = (int(explain.get_attribute(f"data-{k}")) for k in ("row", "col"))
    assert value("explain-output") == max(window) == pytest.approx(float(maps[pool.name][0, r, c, 1]), abs=1e-6)


def test_a_confusion_cell_shows_its_images(page, explorer):
    data = load_dataset(explorer.run.config["dataset"]["name"], explorer._data_dir)
    predictions = explorer.run.predict(data.test_images).argmax(axis=1)
    counts = confusion_matrix(data.test_labels, predictions, len(explorer.run.class_names))
    t, p = np.unravel_index(np.argmax(counts - 10**9 * np.eye(len(counts)) * (counts.sum() > np.trace(counts))),
                            counts.shape)  # the largest mistake, or the largest cell when there is none  # fmt: skip
    page.get_by_test_id(f"cell-{t}-{p}").click()
    wait_until(page, f"document.querySelector('[data-testid=cell-count]').dataset.count === '{counts[t, p]}'")
    images = page.get_by_test_id("cell-image")
    assert images.count() == min(int(counts[t, p]), 100)
    first = int(images.first.get_attribute("title").rsplit("#", 1)[1])
    images.first.click()  # explores that test image
    wait_until(page, f"window.jaxcnnExplore.state.source === 'test' && document.querySelector("
               f"'[data-testid=test-index]').value === '{first}'")  # fmt: skip
    wait_idle(page)
    assert np.array_equal(page_pixels(page, explorer), data.test_images[first])
    assert data.test_labels[first] == t and predictions[first] == p


def test_a_picked_test_image_and_an_upload_reach_the_network_unchanged(page, explorer, tmp_path):
    data = load_dataset(explorer.run.config["dataset"]["name"], explorer._data_dir)
    page.get_by_test_id("test-index").fill("7")
    page.get_by_test_id("pick-test").click()
    wait_until(page, "window.jaxcnnExplore.state.source === 'test'")
    wait_idle(page)
    assert np.array_equal(page_pixels(page, explorer), data.test_images[7])
    assert f"labelled {explorer.run.class_names[data.test_labels[7]]}" in page.get_by_test_id("input-note").inner_text()

    image = data.test_images[11]
    upload = tmp_path / "mine.png"
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(upload)
    page.get_by_test_id("upload").set_input_files(str(upload))
    wait_until(page, "window.jaxcnnExplore.state.source === 'upload'")
    wait_idle(page)
    assert np.array_equal(page_pixels(page, explorer), image)
    top, _ = shown_prediction(page)
    assert top == int(np.argmax(explorer.run.predict(image[None])[0]))


def test_the_page_fits_a_phone_screen(browser, url, explorer, tmp_path):
    phone = open_page(browser, url, viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=2)
    with phone as page:
        page.get_by_test_id("map-conv1-0").click(position={"x": 10, "y": 10})  # the widest part: the arithmetic
        page.get_by_test_id("explain-output").wait_for()
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the page is {widths[0]} px wide on a {widths[1]} px screen"
        box = page.get_by_test_id("draw-canvas").bounding_box()
        assert box["width"] <= PHONE["width"]
        page.get_by_test_id("clear").tap()
        page.evaluate("window.scrollTo(0, 0)")
        draw(page, ONE)
        assert page_pixels(page, explorer).max() > 200  # drawing works on a touch screen's page too
        screenshot(page, "phone", tmp_path, full_page=False)


def test_a_graphs_branches_and_blocks_are_shown_and_explained(browser, graph_folder_run):
    explorer = Explorer(graph_folder_run)
    with serving(explorer) as server, open_page(browser, server.url, viewport={"width": 1000, "height": 800}) as page:
        for layer in explorer.model.spec.layers:
            assert page.get_by_test_id(f"layer-{layer.name}").count() == 1
        assert "res.conv + r1" in page.get_by_test_id("row-res.add").inner_text()  # the branch joined
        assert page.get_by_test_id("map-res.add-3").count() == 1
        page.get_by_test_id("map-res.conv-2").click(position={"x": 5, "y": 5})
        wait_until(page, "document.querySelector('[data-testid=explain]').dataset.layer === 'res.conv'")
        shown = float(page.get_by_test_id("explain-output").get_attribute("data-value"))
        forward = float(page.get_by_test_id("explain-layer-value").get_attribute("data-value"))
        assert shown == pytest.approx(forward, abs=1e-5)


def test_an_rgb_run_shows_colour_filters_and_takes_colour_uploads_and_drawings(browser, tmp_path):
    from datasets import TINY_SPEC

    explorer = Explorer(train_folder_run(tmp_path, {**TINY_SPEC, "input": [8, 8, 3]}, rgb=True))
    image = load_dataset(explorer.run.config["dataset"]["name"]).test_images[3]
    assert image.shape == (8, 8, 3) and not np.array_equal(image[..., 0], image[..., 1])
    upload = tmp_path / "colour.png"
    Image.fromarray(image).save(upload)
    with serving(explorer) as server, open_page(browser, server.url, viewport={"width": 1000, "height": 800}) as page:
        assert page.locator("[data-testid=filters] canvas").count() == 4  # conv1's 4 filters of 3x3x3
        page.get_by_test_id("upload").set_input_files(str(upload))
        wait_until(page, "window.jaxcnnExplore.state.source === 'upload'")
        wait_idle(page)
        assert np.array_equal(page_pixels(page, explorer), image)
        draw(page, ONE, record=False)
        drawn = page_pixels(page, explorer)
        # the whole canvas scaled to 8x8: the stroke is under a pixel wide, so grey; white, so equal in every channel
        assert (
            drawn.max() > 64
            and np.array_equal(drawn[..., 0], drawn[..., 1])
            and np.array_equal(drawn[..., 0], drawn[..., 2])
        )
        top, _ = shown_prediction(page)
        assert top == int(np.argmax(explorer.run.predict(drawn[None])[0]))


def test_a_page_that_reaches_the_server_under_another_name_gets_nothing(browser, url):
    """Issue 27 (3): DNS rebinding. A site whose name now resolves to 127.0.0.1 loads, and its script asks
    for the run; before, both were answered."""
    port = url.rstrip("/").rsplit(":", 1)[1]
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(f"http://{REBOUND_NAME}:{port}/")
        assert response is not None and response.status == 403
        assert "--allow-host" in page.content() and "draw-canvas" not in page.content()
        statuses = page.evaluate("""async () => [
            (await fetch('/api/network')).status,
            (await fetch('/api/predict', {method: 'POST', body: '{}'})).status]""")
        assert statuses == [403, 403]
        assert page.goto(f"http://localhost:{port}/").status == 200  # the same server under its own name
    finally:
        context.close()


def test_an_uploaded_file_means_what_it_means_to_predict(page, explorer, tmp_path):
    """Issue 27 (4): the page decoded uploads in the browser and `jaxcnn predict` with PIL, and four of five
    such files disagreed (EXIF orientation, ink in the alpha channel, a paletted PNG's transparent colour).
    Now the server decodes both: the same pixels and the same prediction for each file."""
    from jaxcnn.images import read_image_file

    shape = explorer.image_shape
    for path in awkward_image_files(tmp_path, 2 * shape[0], 2 * shape[1]):  # resized on the way too
        page.get_by_test_id("upload").set_input_files(str(path))
        wait_until(page, f"window.jaxcnnExplore.state.source === 'upload' && document.querySelector("
                   f"'[data-testid=input-note]').textContent.includes('{path.name}')")  # fmt: skip
        wait_idle(page)
        want = read_image_file(path, shape)
        assert want.max() > 100 and want[0, 0].max() == 0  # a light stroke on black
        np.testing.assert_array_equal(page_pixels(page, explorer), want, err_msg=path.name)
        top, _ = shown_prediction(page)
        assert top == int(np.argmax(explorer.run.predict(want[None])[0])), path.name


def shown_heatmap(page) -> np.ndarray:
    why = page.evaluate("window.jaxcnnExplore.state.why")
    return np.asarray(why["heatmap"], np.float32).reshape(why["shape"][:2])


def choose(page, testid: str, value: str) -> None:
    """Pick ``value`` in a select of the why panel and wait for the heatmap it asks for."""
    page.get_by_test_id(testid).select_option(value)
    key = {"why-method": "method", "why-randomize": "randomize", "why-class": "class"}[testid]
    wait_until(page, f"document.querySelector('[data-testid=why-card]').dataset.{key} === '{value}'")


def test_the_why_panels_heatmap_is_jaxcnn_explains_for_the_drawn_pixels(page, explorer, tmp_path):
    from jaxcnn import explain

    draw(page, ZERO, record=False)
    pixels = page_pixels(page, explorer)
    run = explorer.run
    x = run.network_input(pixels[None])
    assert page.get_by_test_id("why-card").get_attribute("data-method") == "grad-cam"
    want = explain.grad_cam(run.model, run.params, run.state, x)[0]
    np.testing.assert_allclose(shown_heatmap(page), want, atol=1e-5)
    assert np.abs(want).max() > 1e-3  # a map with something in it
    choose(page, "why-method", "integrated-gradients")
    want = explain.pixel_map(explain.integrated_gradients(run.model, run.params, run.state, x))[0]
    np.testing.assert_allclose(shown_heatmap(page), want, atol=1e-5)
    screenshot(page, "why", tmp_path, full_page=False)
    choose(page, "why-class", "2")
    want = explain.pixel_map(explain.integrated_gradients(run.model, run.params, run.state, x, [2]))[0]
    np.testing.assert_allclose(shown_heatmap(page), want, atol=1e-5)


def test_the_randomise_switch_changes_the_heatmap_to_the_random_weights_one(page, explorer):
    from jaxcnn import explain

    draw(page, ONE, record=False)
    run = explorer.run
    x = run.network_input(page_pixels(page, explorer)[None])
    trained = shown_heatmap(page)
    weighted = explorer.network()["explain"]["weighted_layers"]
    choose(page, "why-randomize", str(len(weighted)))
    random_params, names = explain.randomize_top_layers(run.model, run.params, len(weighted))
    assert page.evaluate("window.jaxcnnExplore.state.why.randomized") == names == weighted
    random = shown_heatmap(page)
    predicted = explain.predicted_classes(run.model, random_params, run.state, x)
    np.testing.assert_allclose(random, explain.grad_cam(run.model, random_params, run.state, x, predicted)[0],
                               atol=1e-5)  # fmt: skip
    assert not np.allclose(random, trained, atol=1e-3)
    assert "with random weights in" in page.get_by_test_id("why-note").inner_text()


def test_clicking_a_filter_shows_its_picture_and_the_test_images_that_excite_it(page, explorer):
    from jaxcnn.explanations import input_range, picture_pixels, top_images

    page.get_by_test_id("filter-2").click()
    page.get_by_test_id("unit-picture").wait_for()
    answer = page.evaluate("window.jaxcnnExplore.state.unit")
    run = explorer.run
    low, high = input_range(run)
    first = run.model.spec.layers[0].name
    picture = explorer._explainer.filter_picture(run.params, run.state, first, 2, low=low, high=high)
    assert answer["layer"] == first and answer["unit"] == 2
    assert np.array_equal(np.frombuffer(base64.b64decode(answer["picture"]), np.uint8),
                          picture_pixels(run, picture).ravel())  # fmt: skip
    data = load_dataset(run.config["dataset"]["name"], explorer._data_dir)
    order, _ = top_images(explorer._explainer, run, data.test_images, first)
    shown = page.get_by_test_id("unit-top-image")
    assert shown.count() == 9
    assert [int(shown.nth(i).get_attribute("data-index")) for i in range(9)] == order[2].tolist()
    shown.first.click()  # explores that test image
    wait_until(page, f"document.querySelector('[data-testid=test-index]').value === '{order[2][0]}'")
