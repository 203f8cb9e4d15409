"""The ResNet benchmark and the convolution tools run at their smoke size (a file of their own, so that
pytest-xdist's --dist loadfile runs them beside test_experiments.py's other smoke runs)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import test_experiments

from conftest import ROOT


@pytest.mark.slow
def test_conv3x3_forms_smoke_times_lax_the_cpu_path_and_winograd(monkeypatch, capsys):
    printed = test_experiments.smoke_output("conv3x3_forms", monkeypatch, capsys)
    for shape in ("| 8x8x64 -> 64 | lax |", "| 8x8x64 -> 64 | cpu |", "| 8x8x64 -> 64 | winograd |"):
        assert shape in printed


@pytest.mark.slow
def test_scan_repeats_smoke_times_the_scanned_and_unrolled_network(monkeypatch, capsys):
    spec = str(ROOT / "specs" / "resnet20_cifar10.json")
    printed = test_experiments.smoke_output("scan_repeats", monkeypatch, capsys, "--spec", spec, "--min-copies", "2")
    assert "| scanned | 3 |" in printed and "| unrolled | 0 |" in printed  # ResNet-20's three stages


@pytest.mark.slow
def test_resnet_benchmark_smoke_trains_the_same_networks_in_jaxcnn_and_flax(monkeypatch, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    resnet_benchmark = importlib.import_module("resnet_benchmark")
    monkeypatch.setattr(sys, "argv", ["resnet_benchmark.py", "--smoke", "--out", str(tmp_path)])
    resnet_benchmark.main()  # asserts that Flax's (and PyTorch's) networks have the specs' weight counts
    printed = capsys.readouterr().out
    assert "| network | weights | jaxcnn train img/s | Flax train |" in printed
    assert "| resnet20_cifar10 | 272,474 |" in printed and "| vgg_bn_cifar10 | 551,146 |" in printed
    raw = json.loads((tmp_path / "resnet_results_smoke.json").read_text())
    for figures in raw["networks"].values():
        assert figures["jaxcnn_train"]["median"] > 0 and figures["flax_train"]["median"] > 0
        assert figures["jaxcnn_split_cpu_train"]["median"] > 0  # the child process with the CPU split
