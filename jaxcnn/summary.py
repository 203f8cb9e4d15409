"""``jaxcnn summary``'s table, in the article's style: each layer's output H x W x C, its settings (f, s,
resolved padding), weights and FLOPs, and the totals; and the same rows as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxcnn.layer_types import LAYER_TYPES
from jaxcnn.spec import NetworkSpec


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


def summary_dict(spec: NetworkSpec) -> dict[str, object]:
    """The summary as JSON-ready data: one object per layer plus totals."""
    from jaxcnn.model import Model

    rows = Model(spec).summary()
    return {
        "name": spec.name,
        "source": spec.source,
        "description": spec.description,
        "input_shape": list(spec.input_shape),
        "layers": [row.to_dict() for row in rows],
        "totals": {"params": sum(r.params for r in rows), "flops": sum(r.flops for r in rows)},
    }


def _settings_with_inputs(row: dict[str, Any]) -> str:
    """The settings, led by where the layer reads from when that is not the layer before (graphs)."""
    reads = row.get("inputs")
    if not reads or LAYER_TYPES[row["type"]].MERGES:  # a merge's settings name its inputs already
        return str(row["settings"])
    return f"from {', '.join(reads)}; {row['settings']}".rstrip("; ")


def summary_table(spec: NetworkSpec) -> str:
    """The article-style table: layer, output H x W x C, settings, weights, FLOPs, and totals."""
    data = summary_dict(spec)
    header = ("#", "layer", "type", "output", "settings", "weights", "FLOPs")
    body: list[tuple[str, ...]] = [("", "input", "", shape_text(spec.input_shape), "", "", "")]
    for row in data["layers"]:  # type: ignore[attr-defined]
        body.append(
            (
                str(row["index"]),
                row["name"],
                row["type"],
                shape_text(row["output_shape"]),
                _settings_with_inputs(row),
                f"{row['params']:,}",
                f"{row['flops']:,}",
            )
        )
    totals = data["totals"]
    body.append(("", "total", "", "", "", f"{totals['params']:,}", f"{totals['flops']:,}"))  # type: ignore[index]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {0, 5, 6}

    def fmt(line: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    lines = [f"{spec.name} ({spec.source})"]
    if spec.description:
        lines.append(spec.description)
    lines += ["", fmt(header), rule, *(fmt(b) for b in body[:-1]), rule, fmt(body[-1])]
    lines.append(
        "settings: f = filter size, s = stride, p = (top,bottom),(left,right) padding; "
        "FLOPs per image = 2 x multiply-adds"
    )
    return "\n".join(lines)
