"""The experiment scripts' --smoke path, on a tiny offline MNIST folder made here."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from jaxcnn import data as D
from jaxcnn import downloads

from conftest import ROOT
from datasets import write_idx


@pytest.fixture
def tiny_mnist_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"train": 300, "test": 100}
    for key, filename in D.IDX_FILES.items():
        n = sizes[key.split("_")[0]]
        array = rng.integers(0, 256, (n, 28, 28)) if key.endswith("images") else rng.integers(0, 10, n)
        write_idx(folder / filename, array.astype(np.uint8))
    records = {f: ("u", downloads.sha256_of(folder / f)) for f in D.IDX_FILES.values()}
    monkeypatch.setattr(downloads, "recorded_checksums", lambda name: records)
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    return tmp_path / "data"


def experiment_smoke(script: str, data_dir, out, monkeypatch) -> tuple[Any, dict[str, Any]]:
    """Run ``experiments/<script>.py --smoke`` on the tiny MNIST folder into ``out``; its module and results."""
    module = importlib.import_module(script)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # a script's split_cpu must not outlive the test
    argv = [f"{script}.py", "--smoke", "--no-progress", "--data-dir", str(data_dir), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    return module, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_reproduce_article_smoke(tiny_mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/mnist_best here
    out = tmp_path / "out"
    reproduce_article, results = experiment_smoke("reproduce_article", tiny_mnist_dir, out, monkeypatch)
    assert [m["spec"] for m in results["models"]] == ["mlp_mnist.json", "lenet_mnist.json"]
    assert all(m["config"]["epochs"] == 1 for m in results["models"])
    assert "smoke subset" in results["dataset"]
    printed = capsys.readouterr().out
    assert "| LeNet-style CNN (article table) | lenet_mnist.json | 62,558 | 1 |" in printed
    assert "-> this library's best: python experiments/mnist_best.py (writes runs/mnist_best/)" in printed
    assert (out / "lenet_mnist" / "config.json").exists()
    with pytest.raises(SystemExit, match="already holds results"):
        reproduce_article.main()


def test_the_main_jobs_last_line_runs_from_the_articles_96_percent_to_the_best_measured_network(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    from reproduce_article import progression

    run = {"models": [{"spec": "mlp_mnist.json", "final_test_accuracy": 0.9707},
                      {"spec": "lenet_mnist.json", "final_test_accuracy": 0.99141}]}  # fmt: skip
    best = tmp_path / "mnist_best" / "results.json"
    start = "the article's 96% -> its fully connected network here 97.07% -> its LeNet 99.14% -> "
    assert (
        progression(run, best)
        == start + f"this library's best: python experiments/mnist_best.py (writes {best.parent}/)"
    )
    best.parent.mkdir()
    models = [{"label": "LeNet, translate=2", "final_test_accuracy": 0.9935},
              {"label": "wider CNN, translate=2", "final_test_accuracy": 0.99594}]  # fmt: skip
    best.write_text(json.dumps({"dataset": "MNIST (smoke subset: 2000 train, 1000 test)", "models": models}))
    assert "python experiments/mnist_best.py" in progression(run, best)  # a smoke run's figure is no best
    for not_results in ("[]", '{"dataset": "MNIST", "models": []}', "{"):
        best.write_text(not_results)
        assert "python experiments/mnist_best.py" in progression(run, best)
    best.write_text(json.dumps({"dataset": "MNIST", "models": models}))
    assert progression(run, best) == start + f"this library's best, wider CNN, translate=2: 99.59% ({best})"


@pytest.mark.slow
def test_mnist_best_smoke_trains_both_networks_with_translation(tiny_mnist_dir, tmp_path, monkeypatch, capsys):
    _, results = experiment_smoke("mnist_best", tiny_mnist_dir, tmp_path / "out", monkeypatch)
    assert [m["spec"] for m in results["models"]] == ["lenet_mnist.json", "cnn_mnist.json"]
    assert all(m["config"]["augment"] == "translate=2" for m in results["models"])
    assert "| wider CNN, translate=2 | cnn_mnist.json | 215,370 | 1 |" in capsys.readouterr().out


@pytest.mark.slow
def test_time_to_accuracy_smoke_reports_where_the_time_went(tiny_mnist_dir, monkeypatch, capsys):
    import time_to_accuracy

    monkeypatch.setattr(sys, "argv", ["time_to_accuracy.py", "--smoke", "--data-dir", str(tiny_mnist_dir)])
    time_to_accuracy.main()
    printed = capsys.readouterr().out
    assert "reached 0.0% test accuracy" in printed and "after 1 epochs" in printed
    assert "compilation" in printed and "peak resident memory" in printed
    assert "compilation cache: off" in printed  # main alone: only run_script turns the cache on


def smoke_output(script: str, monkeypatch, capsys, *args: str) -> str:
    """What ``benchmarks/tools/<script>.py [args] --smoke`` prints (a tool that needs no data)."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "tools"))
    module = importlib.import_module(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *args, "--smoke"])
    module.main()
    return capsys.readouterr().out


@pytest.mark.slow
def test_input_gradient_forms_smoke_times_every_form_and_names_the_chosen_one(monkeypatch, capsys):
    printed = smoke_output("input_gradient_forms", monkeypatch, capsys)
    assert "| shape | column form | row form | XLA's transpose | chosen |" in printed
    assert "| 14x14x8 -> 16, 5x5, stride 1, pad 0 (LeNet's conv2) |" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| 14x14x8") or line.startswith("| 37x37x10")]
    assert [row.rstrip(" |").rsplit("| ", 1)[1] for row in rows] == ["column", "row"]


@pytest.mark.slow
def test_step_cost_smoke_prints_each_batch_size_and_the_fitted_line(monkeypatch, capsys):
    printed = smoke_output("step_cost", monkeypatch, capsys)
    assert "| batch | ms per step | us per image | page faults per step |" in printed
    assert [line.split(" | ")[0] for line in printed.splitlines() if line.startswith(("| 4 ", "| 8 "))] == [
        "| 4",
        "| 8",
    ]
    assert "least squares:" in printed and "ms per step +" in printed


@pytest.mark.slow
def test_xla_options_smoke_times_each_variant_against_jaxcnn_and_reports_a_rejected_option(monkeypatch, capsys):
    from jaxcnn import compiling

    own = dict(compiling.CPU_COMPILER_OPTIONS)
    printed = smoke_output("xla_options", monkeypatch, capsys, "xla_cpu_use_xnnpack=true", "no_such_option=1")
    rows = {line.split(" | ")[0]: line for line in printed.splitlines() if line.startswith("| ")}
    assert rows["| jaxcnn"].split(" | ")[3] == "1.000"  # jaxcnn against itself
    assert float(rows["| + xla_cpu_use_xnnpack=True"].split(" | ")[3]) > 0
    assert "rejected: INVALID_ARGUMENT" in rows["| + no_such_option=1"]
    assert own == compiling.CPU_COMPILER_OPTIONS  # the variants' options are not left behind


@pytest.mark.slow
def test_compile_depth_benchmark_compiles_each_depth(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "tools"))
    compile_depth = importlib.import_module("compile_depth")
    spec = compile_depth.deep_spec(3)
    assert [layer["type"] for layer in spec["layers"]] == ["conv", "conv", "conv", "flatten", "dense"]
    step, total = compile_depth.compile_seconds(2)
    assert 0 < step <= total


@pytest.mark.slow
def test_augment_cost_smoke_times_every_variant_against_the_plain_epoch(monkeypatch, capsys):
    printed = smoke_output("augment_cost", monkeypatch, capsys)
    assert "| augment | epoch (s) | img/s | epoch / plain epoch (median of rounds) |" in printed
    assert [line.split(" | ")[0] for line in printed.splitlines() if line.startswith("| (none)")] == ["| (none)"]
    assert "| translate=2,erase=8 |" in printed and "| 1.000 |" in printed


@pytest.mark.slow
def test_resnet_profile_smoke_prints_its_three_tables(monkeypatch, capsys):
    printed = smoke_output("resnet_profile", monkeypatch, capsys)
    assert "| 3x3 conv, forward + both gradients | jaxcnn lax (ms) | jaxcnn fast (ms) | PyTorch (ms) |" in printed
    assert "| without its batch norms |" in printed
    assert "| one lax.scan |" in printed


@pytest.mark.slow
def test_cifar10_minutes_smoke_draws_the_curve_and_times_the_step(tmp_path, monkeypatch, capsys):
    from datasets import write_cifar_binary

    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    write_cifar_binary(folder / D.CIFAR10_BINARY, per_batch=52)  # 260 images: one batch of 256
    monkeypatch.setattr(
        downloads,
        "recorded_checksums",
        lambda name: {D.CIFAR10_BINARY: ("u", downloads.sha256_of(folder / D.CIFAR10_BINARY))},
    )
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    module, results = experiment_smoke("cifar10_minutes", tmp_path / "data", tmp_path / "out", monkeypatch)
    assert results["models"][0]["spec"] == "vgg_bn_cifar10.json" and results["models"][0]["config"]["tta"]
    assert (tmp_path / "out" / "accuracy_vs_minutes.png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert f"one training step of {module.BATCH} images on one device: forward " in printed
    assert "matrix product on the same CPU" in printed


@pytest.mark.slow
def test_cpu_devices_smoke_trains_each_network_on_one_device_and_on_the_split_cpu():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    script = ROOT / "benchmarks" / "tools" / "cpu_devices.py"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--batch", "8"], env=env, capture_output=True,
                          text=True, timeout=600, check=True)  # fmt: skip
    printed = done.stdout
    assert "| network | augment | 1 device img/s | 2 devices img/s | speed-up (median of rounds) |" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| ") and ".json" in line]
    names = ["| lenet_mnist.json", "| bn_mnist.json", "| vgg_bn_cifar10.json", "| resnet20_cifar10.json"]
    assert [row.split(" | ")[0] for row in rows] == names
    assert "JAX" in printed and "on 2 x cpu" in printed  # the flag took effect: JAX saw two CPU devices
