"""Shared bits of the experiment scripts: argument parsing, smoke subsets, result tables."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from jaxcnn.data import Dataset

SMOKE_TRAIN, SMOKE_TEST = 2000, 1000


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", help="offline data folder (default: $JAXCNN_DATA_DIR; unset: download)")
    p.add_argument("--out", default=default_out, help=f"where the runs go (default {default_out})")
    p.add_argument("--overwrite", action="store_true", help="replace earlier runs in --out")
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE_TRAIN} train / {SMOKE_TEST} test images, 1 epoch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def smoke_subset(data: Dataset) -> Dataset:
    """The first few thousand images: the same code path in seconds."""
    return replace(
        data,
        train_images=data.train_images[:SMOKE_TRAIN],
        train_labels=data.train_labels[:SMOKE_TRAIN],
        test_images=data.test_images[:SMOKE_TEST],
        test_labels=data.test_labels[:SMOKE_TEST],
        source=data.source + f" (smoke subset: {SMOKE_TRAIN} train, {SMOKE_TEST} test)",
    )


def machine() -> str:
    import jax

    device = jax.devices()[0]
    return f"{platform.machine()} {platform.processor() or ''} {device.platform} ({device.device_kind})".replace(
        "  ", " "
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_script(main: Callable[[], None]) -> None:
    """Run an experiment's main; bad input (spec, data, run directory) exits with one line, no traceback."""
    from jaxcnn.data import DataError
    from jaxcnn.runs import RunError
    from jaxcnn.spec import SpecError
    from jaxcnn.train import ConfigError

    try:
        main()
    except (DataError, RunError, SpecError, ConfigError) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


def save_results(out: Path, results: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(table + "\n")
