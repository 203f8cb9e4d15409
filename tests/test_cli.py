"""The jaxcnn command, run as a user runs it: in a subprocess, reading stdout, stderr and the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from conftest import ROOT, SPECS_DIR


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxcnn", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_summary_json_article_lenet():
    result = run("summary", "specs/article_lenet.json", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    shapes = [row["output_shape"] for row in data["layers"]]
    assert shapes == [[28, 28, 8], [14, 14, 8], [10, 10, 16], [5, 5, 16], [400], [120], [84], [10]]
    assert data["totals"]["params"] == 62_958
    assert all({"name", "type", "output_shape", "params", "flops"} <= set(row) for row in data["layers"])


def test_summary_json_worked_example():
    data = json.loads(run("summary", "specs/article_worked_example.json", "--json").stdout)
    assert [row["output_shape"] for row in data["layers"]][:4] == [[37, 37, 10], [17, 17, 20], [7, 7, 40], [1960]]


def test_summary_table_shows_resolved_padding_and_totals():
    result = run("summary", "specs/lenet_mnist.json")
    assert result.returncode == 0
    assert "p=(2,2),(2,2)" in result.stdout
    assert "28x28x8" in result.stdout
    assert "62,558" in result.stdout


def test_validate_ok_and_bad(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "format": "jaxcnn.spec/1",
                "input": [28, 28, 1],
                "layers": [{"type": "conv", "filters": 4, "size": 3, "strides": 2}],
            }
        )
    )
    good = run("validate", *(str(p) for p in sorted(SPECS_DIR.glob("*_*.json"))))
    assert good.returncode == 0, good.stderr
    result = run("validate", str(SPECS_DIR / "lenet_mnist.json"), str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "layers[0] (conv 'conv1')" in result.stderr and "field 'strides'" in result.stderr
    assert "Did you mean 'stride'?" in result.stderr
    assert "ok: " in result.stdout


def test_summary_of_missing_file_is_one_line_not_a_traceback(tmp_path):
    result = run("summary", str(tmp_path / "missing.json"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "missing.json: no such file" in result.stderr


def test_train_options_are_built_from_train_config():
    """Each TrainConfig field is a `train` option with the field's choices and default; none is written twice."""
    from dataclasses import fields

    from jaxcnn import cli, data
    from jaxcnn.config import TrainConfig

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    train = commands.choices["train"]  # type: ignore[index]
    options = {a.dest: a for a in train._actions}
    for item in fields(TrainConfig):
        action = options[item.name]
        flag = "--" + item.name.replace("_", "-")
        negative = ["--no-" + flag[2:]] if isinstance(item.default, bool) else []
        assert action.option_strings == [flag, *negative]
        assert action.default is None  # not given: TrainConfig's own default applies
        assert action.choices == item.metadata["choices"]
        assert action.help is not None and "(default " in action.help
    args = parser.parse_args(["train", "s.json", "--lr", "0.5", "--optimizer", "sgd"])
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    assert TrainConfig(**given) == TrainConfig(lr=0.5, optimizer="sgd")
    assert cli.DATA_DIR_ENV == data.DATA_DIR_ENV
    from jaxcnn import explain, explore_server

    assert cli.EXPLORE_HOST == explore_server.DEFAULT_HOST
    assert cli.EXPLAIN_METHODS == explain.METHODS
    from jaxcnn.config import CROPS
    from jaxcnn.streaming import TRAIN_CROPS

    assert CROPS == TRAIN_CROPS


def test_resume_refuses_settings_other_than_epochs(tmp_path):
    result = run("train", "--resume", str(tmp_path), "--lr", "0.1", "--seed", "3")
    assert result.returncode == 2 and "only --epochs may change, not --lr, --seed" in result.stderr


def test_validate_does_not_import_jax_or_numpy():
    code = (
        "import sys; from jaxcnn.cli import main; main(['validate', 'specs/resnet20_cifar10.json']); "
        "print('jax' in sys.modules, 'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip().endswith("False False"), result.stdout + result.stderr


def _reference_tables() -> Any:
    """docs/hooks/reference_tables.py, the mkdocs hook that writes the manual's generated tables."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_tables", ROOT / "docs" / "hooks" / "reference_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_manual_documents_every_train_option_with_its_default():
    """The generated table of `jaxcnn train` options (docs/training.md) names every option the parser has, with
    TrainConfig's defaults."""
    import re
    from dataclasses import fields

    from jaxcnn import cli
    from jaxcnn.config import TrainConfig

    tables = _reference_tables()
    assert tables.TRAIN_OPTIONS_MARKER in (ROOT / "docs" / "training.md").read_text()
    table = tables.train_options_table()
    rows = dict(re.findall(r"^\| `(--[a-z-]+)[^|]*\| ([^|]+) \|", table, re.M))
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command")
    train = commands.choices["train"]  # type: ignore[index]
    flags = {s for a in train._actions for s in a.option_strings[:1] if s.startswith("--") and s != "--help"}
    assert flags <= set(rows), f"undocumented: {sorted(flags - set(rows))}"
    for item in fields(TrainConfig):
        shown = rows["--" + item.name.replace("_", "-")].strip().strip("`")
        default = f"{item.default:g}" if isinstance(item.default, float) else str(item.default) or "(none)"
        if isinstance(item.default, bool):
            default = "on" if item.default else "off"
        assert shown == default, item.name


def test_the_manual_documents_every_layer_type_and_field():
    from jaxcnn.layer_types import LAYER_TYPES

    tables = _reference_tables()
    assert tables.LAYER_TYPES_MARKER in (ROOT / "docs" / "specs.md").read_text()
    lines = tables.layer_types_table().splitlines()
    for kind, cls in LAYER_TYPES.items():
        line = next((line for line in lines if line.startswith(f"| `{kind}` |")), None)
        assert line is not None, f"the layer table has no row for {kind}"
        for field in cls.FIELDS:
            assert f"`{field}`" in line, f"the {kind} row does not document {field}"


def test_the_import_page_lists_every_operator_the_importer_reads():
    from jaxcnn.onnx_import import OPERATORS, READ_OPS

    tables = _reference_tables()
    assert tables.ONNX_OPERATORS_MARKER in (ROOT / "docs" / "import.md").read_text()
    table = tables.onnx_operators_table()
    for op in READ_OPS:
        assert f"`{op}`" in table, op
    assert len(table.splitlines()) == len(OPERATORS) + 2


@pytest.mark.slow
def test_summary_draw_and_validate_work_on_the_resnets(tmp_path):
    for name in ("resnet20_cifar10", "resnet56_cifar10"):
        spec = f"specs/{name}.json"
        validated = run("validate", spec)
        assert validated.returncode == 0, validated.stderr
        assert "output 10" in validated.stdout
        table = run("summary", spec).stdout
        assert "stage2_in.proj" in table and "from stage1." in table
        drawn = run("draw", spec, "--out", str(tmp_path / f"{name}.png"))
        assert drawn.returncode == 0, drawn.stderr
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert "272,474" in run("summary", "specs/resnet20_cifar10.json").stdout
