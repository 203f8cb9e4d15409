"""Pictures: each is written as a valid PNG of sensible size, and its numbers come from the code."""

from __future__ import annotations

import os
import subprocess
import sys
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from jaxcnn import demos, plots
from jaxcnn.pictures import article_demos, network_diagram, run_pictures
from jaxcnn.runs import train_run
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig

from conftest import ROOT, SPECS_DIR
from datasets import GRAPH_SPEC, quadrant_dataset, write_class_folders, write_spec


def assert_png(path, min_side=200):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side, image.size
        assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas


@pytest.mark.slow
def test_article_demos_are_written(tmp_path):
    written = article_demos(tmp_path)
    assert set(written) == {"convolution", "edge", "padding", "pooling"}
    for path in written.values():
        assert_png(path)


def test_demo_numbers_come_from_the_layers(tmp_path):
    output = demos.convolve(demos.ARTICLE_IMAGE, demos.ARTICLE_FILTER)
    _, texts = plots.plot_article_convolution(demos.ARTICLE_IMAGE, demos.ARTICLE_FILTER, output, tmp_path / "c.png")
    assert texts == ["4", "3", "4", "2", "4", "3", "2", "3", "4"]
    pooled, kept = demos.max_pool_with_winners(demos.POOLING_GRID)
    _, texts = plots.plot_pooling(demos.POOLING_GRID, pooled, kept, tmp_path / "p.png")
    assert texts == ["9", "2", "6", "3"]
    assert kept.sum() == 4 and kept[1, 1] and kept[3, 1]
    sizes = [case.output.shape for case in demos.padding_cases(np.zeros((6, 6)), np.ones((3, 3)))]
    assert sizes == [(4, 4), (6, 6), (2, 2), (3, 3)]  # valid/same at stride 1, then 2


def test_edge_filter_lights_up_a_vertical_stroke():
    stroke = demos.synthetic_digit().astype(np.float32) / 255
    response = demos.convolve(stroke, demos.VERTICAL_EDGE_FILTER)
    strongest_column = int(np.abs(response).sum(axis=0).argmax()) + 1  # +1: valid padding shifts by one
    assert 13 <= strongest_column <= 15


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_network_diagram(tmp_path, suffix):
    path = network_diagram(load_spec(SPECS_DIR / "article_lenet.json"), tmp_path / f"lenet{suffix}")
    if suffix == ".png":
        assert_png(path)
    else:
        root = ElementTree.parse(path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        words = " ".join(node.text or "" for node in root.iter())
        for shape in ("28x28x8", "14x14x8", "10x10x16", "5x5x16", "120", "84", "10"):
            assert shape in words, shape


@pytest.mark.slow
def test_run_pictures(tmp_path, monkeypatch):
    folder = write_class_folders(tmp_path / "imgs", quadrant_dataset(256, 40))
    spec = write_spec(tmp_path / "tiny.json")
    run = tmp_path / "run"
    train_run(spec, f"folder:{folder}", TrainConfig(epochs=2, batch_size=32, lr=1e-2), run, progress=False,
              verbose=False)  # fmt: skip
    written = run_pictures(run, tmp_path / "pictures")
    assert {"filters", "feature_maps", "confusion", "misclassified", "curves"} <= set(written)
    for name in ("filters", "feature_maps", "confusion", "misclassified"):
        assert_png(written[name], min_side=100)


@pytest.mark.slow
def test_run_pictures_of_a_graph_with_batch_norm(tmp_path):
    folder = write_class_folders(tmp_path / "imgs", quadrant_dataset(256, 40))
    spec = write_spec(tmp_path / "graph.json", GRAPH_SPEC)
    run = tmp_path / "run"
    train_run(spec, f"folder:{folder}", TrainConfig(epochs=1, batch_size=32, lr=1e-2), run, progress=False,
              verbose=False)  # fmt: skip
    written = run_pictures(run, tmp_path / "pictures")
    assert_png(written["feature_maps"], min_side=100)
    assert_png(written["filters"], min_side=100)


def test_deep_networks_show_the_feature_maps_of_block_outputs():
    from jaxcnn.pictures import _layers_to_show

    names = [layer.name for layer in load_spec(SPECS_DIR / "resnet20_cifar10.json").layers]
    shown = _layers_to_show(names)
    assert {"stem", "stem_bn", "stage1.block1.relu2", "stage2_in.relu2", "stage3.block2.relu2", "pool"} <= shown
    assert "stage1.block1.conv1" not in shown and len(shown) < 24
    few = ["conv1", "pool1"]
    assert _layers_to_show(few) == set(few)


@pytest.mark.slow
def test_cli_draw_and_demo(tmp_path):
    cli = [sys.executable, "-m", "jaxcnn"]
    env = {k: v for k, v in os.environ.items() if k != "JAXCNN_DATA_DIR"}  # the demo must work without data
    draw = subprocess.run([*cli, "draw", str(SPECS_DIR / "lenet_mnist.json"), "--out", str(tmp_path / "net.png")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert draw.returncode == 0, draw.stderr
    assert_png(tmp_path / "net.png")
    demo = subprocess.run([*cli, "demo", "--out", str(tmp_path / "demos")], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=env)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "  4 3 4\n  2 4 3\n  2 3 4" in demo.stdout
    assert (tmp_path / "demos" / "pooling.png").exists()
