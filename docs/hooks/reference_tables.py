"""mkdocs hook: the reference tables of the manual, generated from their one source when the site is built.

A page that holds ``<!-- generated: layer-types -->`` gets the layer types and their fields from the
registry (:mod:`jaxcnn.layer_types`); ``<!-- generated: train-options -->`` gets every ``jaxcnn train``
option with its default from :class:`jaxcnn.config.TrainConfig` and the command's parser;
``<!-- generated: onnx-operators -->`` the operators ``jaxcnn import`` reads. So a new layer
type, field or option is documented by the change that adds it, and a default is written once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from typing import Any

LAYER_TYPES_MARKER = "<!-- generated: layer-types -->"
TRAIN_OPTIONS_MARKER = "<!-- generated: train-options -->"
ONNX_OPERATORS_MARKER = "<!-- generated: onnx-operators -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_text(value: Any) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def layer_types_table() -> str:
    """One row per registered layer type: what it is, and each field with its default (or "required")."""
    from jaxcnn.layer_types import LAYER_TYPES

    rows = ["| layer `type` | what it is | fields |", "| --- | --- | --- |"]
    for kind, cls in LAYER_TYPES.items():
        described = []
        for name, info in cls.FIELDS.items():
            if info.required:
                default = "required"
            else:
                default = json.dumps(info.schema["default"]) if "default" in info.schema else "optional"
            described.append(f"`{name}` ({default}): {info.doc}")
        rows.append(f"| `{kind}` | {_cell(cls.DOC)} | {_cell('; '.join(described) or 'none')} |")
    return "\n".join(rows)


def _train_parser() -> argparse.ArgumentParser:
    from jaxcnn import cli

    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["train"]


def train_options_table() -> str:
    """One row per ``jaxcnn train`` option: its flag(s), its default (TrainConfig's, for the hyperparameters)
    and its help text, as ``jaxcnn train --help`` shows them."""
    from jaxcnn.config import TrainConfig

    config_defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for action in _train_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flags = " / ".join(f"`{flag}`" for flag in action.option_strings)
        if action.metavar and not isinstance(action, argparse.BooleanOptionalAction):
            flags = flags.replace("`", "", 1)
            flags = f"`{action.option_strings[0]} {action.metavar}`" + flags[len(action.option_strings[0]) + 1 :]
        default = config_defaults.get(action.dest, action.default)
        text = (action.help or "").split(" (default ")[0]
        if action.choices:
            text += f" ({', '.join(map(str, action.choices))})"
        rows.append(f"| {flags} | {_cell(_default_text(default))} | {_cell(text)} |")
    return "\n".join(rows)


def onnx_operators_table() -> str:
    """One row per ONNX operator ``jaxcnn import`` reads (:data:`jaxcnn.onnx_import.OPERATORS`)."""
    from jaxcnn.onnx_import import OPERATORS

    rows = ["| ONNX operator | becomes | what is read |", "| --- | --- | --- |"]
    for ops, (becomes, read) in OPERATORS.items():
        names = ", ".join(f"`{op.strip()}`" for op in ops.split(","))
        rows.append(f"| {names} | {_cell(becomes)} | {_cell(read)} |")
    return "\n".join(rows)


GENERATED = {LAYER_TYPES_MARKER: layer_types_table, TRAIN_OPTIONS_MARKER: train_options_table,
             ONNX_OPERATORS_MARKER: onnx_operators_table}  # fmt: skip


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """mkdocs' hook: replace each marker with its table."""
    for marker, make in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
