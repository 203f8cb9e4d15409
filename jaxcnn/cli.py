"""The ``jaxcnn`` command: ``summary`` and ``validate`` for specs.

User errors (a bad spec, a missing file) print one readable message and exit non-zero; a
Python traceback means a bug in jaxcnn.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from jaxcnn.spec import NetworkSpec, SpecError, load_spec


def _shape(shape: Sequence[int]) -> str:
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


def summary_table(spec: NetworkSpec) -> str:
    """The article-style table: layer, output H x W x C, settings, weights, FLOPs, and totals."""
    data = summary_dict(spec)
    header = ("#", "layer", "type", "output", "settings", "weights", "FLOPs")
    body: list[tuple[str, ...]] = [("", "input", "", _shape(spec.input_shape), "", "", "")]
    for row in data["layers"]:  # type: ignore[attr-defined]
        body.append(
            (
                str(row["index"]),
                row["name"],
                row["type"],
                _shape(row["output_shape"]),
                row["settings"],
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


def _cmd_summary(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.json:
        print(json.dumps(summary_dict(spec), indent=2))
    else:
        print(summary_table(spec))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    failures = 0
    for path in args.specs:
        try:
            spec = load_spec(path)
        except SpecError as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        print(
            f"ok: {path} ({spec.name}: {len(spec.layers)} layers, "
            f"input {_shape(spec.input_shape)}, output {_shape(spec.output_shape)})"
        )
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description="Convolutional networks from JSON specs, on JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    summary = commands.add_parser("summary", help="print a spec's layer table (shapes, settings, weights, FLOPs)")
    summary.add_argument("spec", help="path to a JSON network spec")
    summary.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    summary.set_defaults(run=_cmd_summary)

    validate = commands.add_parser("validate", help="check specs; exit non-zero if any is invalid")
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="paths to JSON network specs")
    validate.set_defaults(run=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcnn`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
