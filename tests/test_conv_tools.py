"""The convolution tools of issue 33 run at their smoke size (a file of their own, so that pytest-xdist's
--dist loadfile runs them beside test_experiments.py's other smoke runs)."""

from __future__ import annotations

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
