"""The ``jaxcnn`` command: ``summary`` and ``validate`` specs, ``train``, ``evaluate`` and ``predict``.

User errors (a bad spec, a missing file) print one readable message and exit non-zero; a
Python traceback means a bug in jaxcnn.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from jaxcnn.config import TrainConfig
from jaxcnn.errors import JaxcnnError
from jaxcnn.export import DEFAULT_OPSET, FORMATS
from jaxcnn.layer_types import LAYER_TYPES
from jaxcnn.numbers import parse_int
from jaxcnn.spec import LAYER_MODULES_ENV, NetworkSpec, SpecError, load_spec

# jaxcnn.data's name for it, repeated so the command starts without importing NumPy (a test checks them).
DATA_DIR_ENV = "JAXCNN_DATA_DIR"
# jaxcnn.explore_server's default address, repeated for the same reason (a test checks them).
EXPLORE_HOST = "127.0.0.1"


class UsageError(Exception):
    """Arguments that do not go together."""


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
    body: list[tuple[str, ...]] = [("", "input", "", _shape(spec.input_shape), "", "", "")]
    for row in data["layers"]:  # type: ignore[attr-defined]
        body.append(
            (
                str(row["index"]),
                row["name"],
                row["type"],
                _shape(row["output_shape"]),
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


def _cmd_train(args: argparse.Namespace) -> int:
    from jaxcnn.compiling import enable_compilation_cache, use_xla_defaults
    from jaxcnn.runs import NothingToResumeError, resume_run, train_run

    enable_compilation_cache()  # a second run of the same network skips XLA's code generation
    use_xla_defaults(args.xla_defaults)

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume:
        if args.spec or args.out:
            raise UsageError("--resume RUN continues a run: give no SPEC and no --out")
        changed = sorted(_flag(name) for name in given if name != "epochs")
        if changed:
            raise UsageError(f"--resume RUN continues with the run's recorded settings; only --epochs may change, "
                             f"not {', '.join(changed)}")  # fmt: skip
        try:
            resume_run(args.resume, epochs=args.epochs, data_dir=args.data_dir, progress=not args.no_progress)
        except NothingToResumeError as done:  # not a failure: the run is as asked, and was not touched
            print(f"jaxcnn train: {done}")
        return 0
    if not args.spec or not args.out or not args.dataset:
        raise UsageError("train needs SPEC, --dataset NAME and --out RUN (or --resume RUN)")
    config = TrainConfig(**given)
    train_run(
        args.spec,
        args.dataset,
        config,
        args.out,
        data_dir=args.data_dir,
        pad=args.pad,
        grey_to_rgb=args.grey_to_rgb,
        normalize=args.normalize,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"run saved in {args.out} (config.json, metrics.jsonl, checkpoints/, curves.png)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from jaxcnn.data import DataError, load_dataset
    from jaxcnn.metrics import confusion_matrix
    from jaxcnn.runs import load_run, run_data_dir

    run = load_run(args.run, args.which)
    name = args.dataset or run.config["dataset"]["name"]
    same_data = name == run.config["dataset"]["name"]
    data = load_dataset(name, run_data_dir(run.config, args.data_dir) if same_data else args.data_dir)
    k = run.model.output_shape[0]
    if data.num_classes != k:
        raise DataError(f"{name} has {data.num_classes} classes but the run {args.run} tells {k} apart")
    predictions = run.predict(data.test_images).argmax(axis=1)
    accuracy = float((predictions == data.test_labels).mean())
    counts = confusion_matrix(data.test_labels, predictions, k)
    print(f"run {args.run}, {args.which} checkpoint (epoch {run.epoch}); {name} test set, {len(predictions):,} images")
    print(f"accuracy: {100 * accuracy:.2f}%")
    print("confusion matrix (rows: true class, columns: predicted class):")
    width = max(len(str(int(counts.max()))), len(str(k - 1))) + 1
    print(" " * 4 + "".join(str(j).rjust(width) for j in range(k)))
    for i in range(k):
        name_i = run.class_names[i] if i < len(run.class_names) else str(i)
        print(f"{i:>3} " + "".join(str(int(c)).rjust(width) for c in counts[i]) + f"   {name_i}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from jaxcnn.export import export_onnx, export_stablehlo
    from jaxcnn.runs import load_run

    run = load_run(args.run, args.which)
    if args.format == "onnx":
        path = export_onnx(run, args.out, DEFAULT_OPSET if args.opset is None else args.opset,
                           overwrite=args.overwrite)  # fmt: skip
    else:
        if args.opset is not None:
            raise UsageError("--opset applies to --format onnx only")
        path = export_stablehlo(run, args.out, overwrite=args.overwrite)
    h, w, c = run.model.input_shape
    print(f"exported {args.run} ({args.which} checkpoint, epoch {run.epoch}) as {args.format}: {path} "
          f"(uint8 images N x {h} x {w} x {c} -> {run.model.output_shape[-1]} class probabilities)")  # fmt: skip
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxcnn.errors import DataError
    from jaxcnn.images import read_image_file
    from jaxcnn.runs import load_run

    run = load_run(args.run, args.which)
    top_k = min(args.top, len(run.class_names))
    if top_k < args.top:
        print(f"note: --top {args.top}: the run tells {top_k} classes apart, so all {top_k} are shown",
              file=sys.stderr)  # fmt: skip
    failures = 0
    for path in args.images:
        try:
            image = read_image_file(path, run.image_shape)
        except DataError as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        probs = run.predict(image[None])[0]
        top = np.argsort(probs)[::-1][:top_k]
        ranked = ", ".join(f"{run.class_names[j]} ({100 * probs[j]:.1f}%)" for j in top)
        print(f"{path}: {ranked}")
    return 1 if failures else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn import demos
    from jaxcnn.data import DataError, load_dataset
    from jaxcnn.pictures import article_demos

    digit = None
    try:
        mnist = load_dataset("mnist", args.data_dir) if args.data_dir or _env_data_dir() else None
        digit = None if mnist is None else mnist.test_images[0, :, :, 0]
    except DataError as err:
        print(f"note: no MNIST digit ({err}); the edge demo uses a drawn stroke", file=sys.stderr)
    output = demos.convolve(demos.ARTICLE_IMAGE, demos.ARTICLE_FILTER)
    print("the article's 5x5 image convolved with its 3x3 filter (valid padding, stride 1):")
    for row in output:
        print("  " + " ".join(f"{v:g}" for v in row))
    for name, path in article_demos(Path(args.out), digit).items():
        print(f"{name}: {path}")
    return 0


def _env_data_dir() -> str | None:
    import os

    return os.environ.get(DATA_DIR_ENV) or None


def _cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn.pictures import run_pictures

    out = Path(args.out) if args.out else Path(args.run) / "pictures"
    for name, path in run_pictures(Path(args.run), out, args.data_dir, args.image).items():
        print(f"{name}: {path}")
    return 0


class ExploreStartError(JaxcnnError):
    """The explore server could not start (the port is taken, the host is not this machine's)."""


def _cmd_explore(args: argparse.Namespace) -> int:
    import ipaddress
    import signal

    from jaxcnn.explore_server import ExploreServer
    from jaxcnn.explorer import Explorer

    print(f"loading {args.run} and compiling its network ...", flush=True)
    explorer = Explorer(args.run, args.data_dir, args.which)
    explorer.warm_up()
    try:
        server = ExploreServer(explorer, args.host, args.port, verbose=args.verbose,
                               allowed_hosts=tuple(args.allow_host))  # fmt: skip
    except OSError as err:
        raise ExploreStartError(f"cannot listen on {args.host} port {args.port}: {err.strerror or err}") from None
    with server:
        try:
            loopback = ipaddress.ip_address(args.host).is_loopback
        except ValueError:
            loopback = args.host == "localhost"
        if not loopback:
            print(f"warning: listening on {args.host}: other machines on the network can open the page")
        print(f"jaxcnn explore: {server.url}  (open it in a browser; Ctrl-C stops the server)", flush=True)
        # Ctrl-C (SIGINT) stops it even where it was started with SIGINT ignored (a background job), as in train
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("jaxcnn explore: stopped")
        finally:
            signal.signal(signal.SIGINT, previous)
    return 0


def _cmd_draw(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn.pictures import network_diagram

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path(Path(args.spec).stem + ".png")
    print(network_diagram(spec, out))
    return 0


def _port(text: str) -> int:
    """``--port``: checked here, before the run is loaded and compiled."""
    try:
        port = parse_int(text, "the port")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: choose 1 to 65535 (or 0 for a free one)")
    return port


def _positive(text: str) -> int:
    try:
        value = parse_int(text, "the value")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small: give 1 or more")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with the field's help, choices and default (written only there).

    Every option defaults to None, meaning "not given": TrainConfig fills in its own default.
    """
    for item in fields(TrainConfig):
        meta, default = item.metadata, item.default
        if isinstance(default, bool):  # --name / --no-name
            on = "on" if default else "off"
            parser.add_argument(_flag(item.name), dest=item.name, action=argparse.BooleanOptionalAction,
                                help=f"{meta['help']} (default {on})")  # fmt: skip
            continue
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        parser.add_argument(
            _flag(item.name),
            dest=item.name,
            type=type(default),
            choices=meta["choices"],
            metavar=meta["metavar"],
            help=f"{meta['help']} (default {shown})",
        )


def _add_data_dir(parser: argparse.ArgumentParser, *, of_a_run: bool = True, unset: str = "download") -> None:
    """The offline data option; for a run, the folder it was trained from is the fallback (runs.run_data_dir)."""
    then = ", else the run's own if it still exists" if of_a_run else ""
    help_text = f"offline data folder (default: ${DATA_DIR_ENV}{then}; unset: {unset})"
    parser.add_argument("--data-dir", help=help_text)


def _add_which(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--which", default="best", choices=("best", "latest"), help="which checkpoint (default best)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description="Convolutional networks from JSON specs, on JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    summary = commands.add_parser("summary", help="print a spec's layer table (shapes, settings, weights, FLOPs)")
    summary.add_argument("spec", help="path to a JSON network spec")
    summary.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    summary.set_defaults(handler=_cmd_summary)

    validate = commands.add_parser("validate", help="check specs; exit non-zero if any is invalid")
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="paths to JSON network specs")
    validate.set_defaults(handler=_cmd_validate)

    train = commands.add_parser("train", help="train a spec on a data set into a run directory")
    train.add_argument("spec", nargs="?", help="path to a JSON network spec")
    train.add_argument(
        "--dataset", help="mnist, fashion_mnist, cifar10, folder:PATH, or another tensorflow-datasets name"
    )
    _add_data_dir(train)
    train.add_argument("--out", help="the run directory to create")
    train.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing jaxcnn run (nothing else)")
    _add_config_options(train)
    train.add_argument("--pad", action="store_true", help="pad images with zeros up to the spec's input size")
    train.add_argument("--grey-to-rgb", action="store_true", help="repeat a grey channel to feed an RGB spec")
    train.add_argument(
        "--normalize", action="store_true", help="normalise each channel by the training set's mean and std"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--xla-defaults", action="store_true",
                       help="compile training with XLA's defaults, not jaxcnn's options: slower on a CPU; faster on "
                            "a GPU, but runs with the same seed are no longer identical there")  # fmt: skip
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="test accuracy and confusion matrix of a trained run")
    evaluate.add_argument("run", help="a run directory")
    evaluate.add_argument("--dataset", help="data set to evaluate on (default: the one it was trained on)")
    _add_data_dir(evaluate)
    _add_which(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser("export", help="write a trained run's network as ONNX or serialized StableHLO")
    export.add_argument("run", help="a run directory")
    export.add_argument("--format", required=True, choices=FORMATS, help="onnx (onnxruntime, Netron) or stablehlo "
                        "(jax.export; load with jaxcnn.load_exported)")  # fmt: skip
    export.add_argument("--out", required=True, help="the file to write, outside any run folder (written whole, "
                        "never half-written)")  # fmt: skip
    export.add_argument("--overwrite", action="store_true", help="replace an existing export of the same format "
                        "(nothing else)")  # fmt: skip
    export.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET})")
    _add_which(export)
    export.set_defaults(handler=_cmd_export)

    predict = commands.add_parser("predict", help="classify PNG/JPEG images with a trained run")
    predict.add_argument("run", help="a run directory")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files, resized and converted as needed")
    predict.add_argument("--top", type=_positive, default=3, metavar="K",
                         help="how many classes to show, 1 or more (default 3; at most the run's classes)")  # fmt: skip
    _add_which(predict)
    predict.set_defaults(handler=_cmd_predict)

    demo = commands.add_parser("demo", help="the article's demos: convolution, edge filter, padding, pooling")
    demo.add_argument("--out", default="demos", help="folder for the PNGs (default ./demos)")
    _add_data_dir(demo, of_a_run=False, unset="a drawn stroke instead of a real digit")
    demo.set_defaults(handler=_cmd_demo)

    show = commands.add_parser("show", help="pictures of a trained run: filters, feature maps, confusion, mistakes")
    show.add_argument("run", help="a run directory")
    show.add_argument("--out", help="folder for the PNGs (default RUN/pictures)")
    _add_data_dir(show)
    show.add_argument("--image", type=int, default=0, help="test image for the feature maps (default 0)")
    show.set_defaults(handler=_cmd_show)

    explore = commands.add_parser("explore", help="a local web page: draw an image and see inside the trained network")
    explore.add_argument("run", help="a run directory")
    explore.add_argument("--host", default=EXPLORE_HOST, help=f"address to listen on (default {EXPLORE_HOST}: this "
                         "machine only)")  # fmt: skip
    explore.add_argument("--port", type=_port, default=0, help="port to listen on, 1 to 65535 (default: a free one)")
    explore.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="also answer requests "
                         "that name this host (repeatable); the page answers only its own address, localhost and "
                         "loopback addresses otherwise, against DNS rebinding")  # fmt: skip
    _add_data_dir(explore)
    _add_which(explore)
    explore.add_argument("--verbose", action="store_true", help="log every request")
    explore.set_defaults(handler=_cmd_explore)

    draw = commands.add_parser("draw", help="draw a spec as a diagram in the article's style")
    draw.add_argument("spec", help="path to a JSON network spec")
    draw.add_argument("--out", help="PNG or SVG path (default: SPEC_NAME.png)")
    draw.set_defaults(handler=_cmd_draw)
    return parser


def _quiet_unraisables(unraisable: object) -> None:
    """Drop what is already reported in one line, pass on the rest: the "Event loop is closed"
    RuntimeErrors that orbax's background threads leave behind after a real error (a full disk, a truncated
    checkpoint), and a Ctrl-C that landed in a callback that cannot raise (JAX's garbage-collection hook),
    which :func:`run` reports as ``interrupted`` when the command ends."""
    err = getattr(unraisable, "exc_value", None)
    if isinstance(err, KeyboardInterrupt) or (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
        return
    sys.__unraisablehook__(unraisable)  # type: ignore[arg-type]  # an UnraisableHookArgs


HEAVY_MODULES: dict[str, tuple[str, ...]] = {
    "summary": ("jaxcnn.model",),
    "train": ("jaxcnn.runs",),
    "evaluate": ("jaxcnn.runs",),
    "export": ("jaxcnn.runs", "onnx"),
    "predict": ("jaxcnn.runs", "PIL.Image"),
    "demo": ("jaxcnn.pictures",),
    "show": ("jaxcnn.pictures", "jaxcnn.runs"),
    "explore": ("jaxcnn.explorer",),
    "draw": ("jaxcnn.pictures",),
}
"""What each command imports before its work, with Ctrl-C held back (:func:`_load_heavy_modules`)."""


def import_layer_modules() -> list[str]:
    """Import the modules named in ``$JAXCNN_LAYER_MODULES`` (comma-separated), which register layer types of
    the user's own (:func:`jaxcnn.register_layer`); returns their names."""
    import importlib
    import os

    names = [name.strip() for name in os.environ.get(LAYER_MODULES_ENV, "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise JaxcnnError(f"{LAYER_MODULES_ENV} names {name!r}, which cannot be imported ({err}); put it on "
                              "PYTHONPATH or install it") from None  # fmt: skip
    return names


def _load_heavy_modules(command: str) -> None:
    """Import what ``command`` needs (JAX, orbax, onnx, matplotlib) and start JAX's backend, with Ctrl-C held
    until they are done, then honoured (KeyboardInterrupt): an import stopped half-way leaves modules half
    made, whose errors (an ImportError traceback, once a crash) would follow the interruption. A few seconds
    at most; off the main thread (a command run inside a test's thread) the imports simply run."""
    import contextlib
    import importlib
    import signal
    import threading

    held: list[int] = []
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum)) if on_main_thread else None
    try:
        for name in HEAVY_MODULES.get(command, ()):
            with contextlib.suppress(ImportError):  # an optional package (onnx): the command says so when needed
                importlib.import_module(name)
        if "jax" in sys.modules:  # start the backend too (multi-process training must initialise before this)
            sys.modules["jax"].devices()
    finally:
        if on_main_thread:
            signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcnn`` command; returns the exit status. Ctrl-C at any moment ends it with one
    line and status 130 (training first finishes its step and says what was kept)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import_layer_modules()
    except JaxcnnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.unraisablehook = _quiet_unraisables  # for the rest of the process: they come at exit too
    try:
        _load_heavy_modules(args.command)
        return int(args.handler(args))
    except UsageError as err:
        parser.error(str(err))
    except JaxcnnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 130 if type(err).__name__ == "TrainingInterruptedError" else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``jaxcnn`` program (console script and ``python -m jaxcnn``): :func:`main`, then exit.

    Ctrl-C is caught here too. Native libraries run some Python code of their own (an ``exec`` from C++);
    a KeyboardInterrupt that passes through it marks the interpreter, which then kills itself with SIGINT
    at exit even after the command printed its line and chose its status, and a library may swallow the
    interrupt so that the command finishes. So once Ctrl-C has come, the process ends here with status 130
    and the one ``interrupted`` line, skipping the interpreter's shutdown (files are whole or absent
    already: every write renames a finished temporary file into place). After a command that finished,
    Ctrl-C is ignored while the interpreter shuts down."""
    import os
    import signal

    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where it is ignored (a background job)
        signal.signal(signal.SIGINT, interrupt)
    code = main()
    if received:
        if code != 130:  # finished anyway: a library swallowed the interrupt
            print("interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    # The command is done; the interpreter's shutdown (JAX's backend, orbax's threads) takes a moment in which
    # Python has already given SIGINT back to the system, so Ctrl-C would kill the process mid-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
