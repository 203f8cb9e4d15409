"""``jaxcnn explain`` and ``jaxcnn filters`` on a trained graph run (batch norm, a residual block): the numbers
written are jaxcnn.explain's for the same pixels, the pictures are drawn, and bad requests get one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli, explain
from jaxcnn.data import load_dataset
from jaxcnn.explanations import HEAT_COLOURS, overlay
from jaxcnn.runs import load_run


@pytest.fixture(scope="module")
def images(graph_folder_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    data = load_dataset(load_run(graph_folder_run).config["dataset"]["name"])
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in (0, 5):
        Image.fromarray(data.test_images[i][..., 0]).save(folder / f"test{i}.png")
        paths.append(folder / f"test{i}.png")
    return paths


def test_explain_writes_each_methods_map_as_numbers_and_a_picture(graph_folder_run, images, tmp_path, capsys):
    out = tmp_path / "why"
    argv = ["explain", str(graph_folder_run), *map(str, images), "--method", "grad-cam,gradient", "--method",
            "occlusion", "--class", "top-right", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6 and all("for top-right" in line for line in printed)
    run = load_run(graph_folder_run)
    pixels = np.stack([np.asarray(Image.open(path))[..., None] for path in images])
    explainer = explain.Explainer(run.model)
    for method in ("grad-cam", "gradient", "occlusion"):
        want = explainer.heatmap(run.params, run.state, run.network_input(pixels), method,
                                 run.class_names.index("top-right"))  # fmt: skip
        for path, image, heat in zip(images, pixels, want, strict=True):
            np.testing.assert_allclose(np.load(out / f"{path.stem}.{method}.npy"), heat, rtol=1e-5, atol=1e-7)
            picture = np.asarray(Image.open(out / f"{path.stem}.{method}.png"))
            assert picture.shape == (224, 224, 3)  # 8x8 enlarged 28 times
            np.testing.assert_array_equal(picture[::28, ::28], overlay(image, heat))
    assert not list(out.glob(".*"))  # no temporary files left


def test_the_overlay_is_the_image_where_the_map_is_zero_and_the_colour_where_it_is_largest():
    image = np.full((2, 2, 1), 100, np.uint8)
    heat = np.array([[0.0, 2.0], [-2.0, 1.0]])
    shown = overlay(image, heat).astype(int)
    assert shown[0, 0].tolist() == [100, 100, 100]
    assert shown[0, 1].tolist() == [round(100 * 0.15 + c * 0.85) for c in HEAT_COLOURS["positive"]]
    assert shown[1, 0].tolist() == [round(100 * 0.15 + c * 0.85) for c in HEAT_COLOURS["negative"]]
    assert shown[1, 1].tolist() == [round(100 * 0.575 + c * 0.425) for c in HEAT_COLOURS["positive"]]


def test_explain_with_random_weights_gives_another_map(graph_folder_run, images, tmp_path, capsys):
    for k, folder in ((0, "trained"), (3, "random")):
        assert cli.main(["explain", str(graph_folder_run), str(images[0]), "--randomize", str(k), "--method",
                         "gradient", "--out", str(tmp_path / folder)]) == 0  # fmt: skip
    trained, random = (np.load(tmp_path / f / f"{images[0].stem}.gradient.npy") for f in ("trained", "random"))
    assert not np.allclose(trained, random)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "guided"], "--method 'guided': choose from gradient, smoothgrad, integrated-gradients"),
        (["--class", "seven"], "--class 'seven': "),
        (["--class", "4"], "--class '4': "),
        (["--layer", "flat"], "--layer 'flat': tiny-graph has no such layer; its layers with an H x W x C output"),
        (["--layer", "nope"], "--layer 'nope': tiny-graph has no such layer"),
        (["--randomize", "9"], "--randomize 9: randomize 9 layers: tiny-graph has 4 layers with weights"),
    ],
)
def test_explain_refuses_what_the_run_does_not_have_in_one_line(graph_folder_run, images, tmp_path, capsys, extra,
                                                                message):  # fmt: skip
    argv = ["explain", str(graph_folder_run), str(images[0]), "--out", str(tmp_path / "out"), *extra]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_filters_draws_each_units_picture_and_its_top_test_images(graph_folder_run, tmp_path, capsys):
    out = tmp_path / "filters"
    assert cli.main(["filters", str(graph_folder_run), "--layer", "c1", "--units", "0,3", "--out", str(out),
                     "--steps", "64"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["c1 unit 0", "c1 unit 3"]
    run = load_run(graph_folder_run)
    data = load_dataset(run.config["dataset"]["name"])
    values = explain.Explainer(run.model).unit_activations(run.params, run.state, run.network_input(data.test_images),
                                                           "c1")  # fmt: skip
    for unit, line in zip((0, 3), printed, strict=True):
        best = np.argsort(-values[:, unit], kind="stable")[:9]
        assert line.endswith(", ".join(f"#{i} ({values[i, unit]:.3g})" for i in best))
        picture = np.load(out / f"c1.{unit}.npy")
        assert picture.shape == (8, 8, 1)
        assert Image.open(out / f"c1.{unit}.png").size[0] > 300
    assert cli.main(["filters", str(graph_folder_run), "--layer", "c1", "--units", "4", "--out", str(out)]) == 1
    assert "error: --units: unit 4 is outside layer 'c1', which has 4: choose 0 to 3" in capsys.readouterr().err


def test_a_fully_connected_run_is_explained_by_the_gradient_and_refuses_grad_cam(tmp_path, capsys):
    from jaxcnn.explorer import Explorer, ExploreRequestError

    from datasets import train_folder_run

    spec = {"format": "jaxcnn.spec/1", "name": "mlp", "input": [8, 8, 1],
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 4, "activation": "softmax"}]}  # fmt: skip
    run_dir = train_folder_run(tmp_path, spec)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert cli.main(["explain", str(run_dir), str(image), "--out", str(tmp_path / "why")]) == 0
    assert ": gradient for " in capsys.readouterr().out and (tmp_path / "why" / "x.gradient.npy").exists()
    assert cli.main(["explain", str(run_dir), str(image), "--method", "grad-cam", "--out", str(tmp_path / "no")]) == 1
    assert "error: --method grad-cam: mlp has no layer with an H x W x C output" in capsys.readouterr().err
    explorer = Explorer(run_dir)
    explorer.warm_up()  # its default explanation is the gradient
    assert explorer.network()["explain"]["default_method"] == "gradient"
    assert "grad-cam" not in explorer.network()["explain"]["methods"]
    with pytest.raises(ExploreRequestError, match="Grad-CAM needs a layer with an H x W x C output"):
        explorer.why(np.zeros((8, 8, 1), np.uint8), "grad-cam")
