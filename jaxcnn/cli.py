"""The ``jaxcnn`` command: its parser (one option per ``TrainConfig`` field for ``train``), the program's
entry and exit, and Ctrl-C; each command's work is in :mod:`jaxcnn.commands`.

User errors (a bad spec, a missing file) print one readable message and exit non-zero; a
Python traceback means a bug in jaxcnn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields

from jaxcnn.commands import DATA_DIR_ENV as DATA_DIR_ENV
from jaxcnn.commands import (
    UsageError,
    cmd_demo,
    cmd_draw,
    cmd_evaluate,
    cmd_explain,
    cmd_explore,
    cmd_export,
    cmd_filters,
    cmd_import,
    cmd_predict,
    cmd_prepare,
    cmd_show,
    cmd_summary,
    cmd_train,
    cmd_validate,
    option_flag,
)
from jaxcnn.config import TrainConfig
from jaxcnn.distributed import JOIN_TIMEOUT_SECONDS
from jaxcnn.errors import JaxcnnError
from jaxcnn.export import DEFAULT_OPSET, FORMATS
from jaxcnn.numbers import parse_int
from jaxcnn.spec import LAYER_MODULES_ENV
from jaxcnn.summary import summary_dict as summary_dict  # its public home was here
from jaxcnn.summary import summary_table as summary_table

# jaxcnn.explore_server's default address, repeated for the same reason (a test checks them).
EXPLORE_HOST = "127.0.0.1"
# jaxcnn.explain.METHODS, repeated so that the parser does not import JAX (a test checks them).
EXPLAIN_METHODS = ("gradient", "smoothgrad", "integrated-gradients", "grad-cam", "occlusion")


def _port(text: str) -> int:
    """``--port``: checked here, before the run is loaded and compiled."""
    try:
        port = parse_int(text, "the port")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: choose 1 to 65535 (or 0 for a free one)")
    return port


def _at_least(text: str, minimum: int) -> int:
    """A whole number of ``minimum`` or more, or the argument's error."""
    try:
        value = parse_int(text, "the value")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is too small: give {minimum} or more")
    return value


def _positive(text: str) -> int:
    return _at_least(text, 1)


def _count(text: str) -> int:
    return _at_least(text, 0)


def _floats(text: str) -> list[float]:
    """``--mean 0.485,0.456,0.406``: one number per channel (or one for all)."""
    import math

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: the numbers must be finite")
    return values


def _units(text: str) -> list[int]:
    """``--units 0,3,5``: unit numbers, checked against the layer later."""
    return [_count(part.strip()) for part in text.split(",") if part.strip()]


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with the field's help, choices and default (written only there).

    Every option defaults to None, meaning "not given": TrainConfig fills in its own default.
    """
    for item in fields(TrainConfig):
        meta, default = item.metadata, item.default
        if isinstance(default, bool):  # --name / --no-name
            on = "on" if default else "off"
            parser.add_argument(option_flag(item.name), dest=item.name, action=argparse.BooleanOptionalAction,
                                help=f"{meta['help']} (default {on})")  # fmt: skip
            continue
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        parser.add_argument(
            option_flag(item.name),
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
    summary.set_defaults(handler=cmd_summary)

    validate = commands.add_parser("validate", help="check specs; exit non-zero if any is invalid")
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="paths to JSON network specs")
    validate.set_defaults(handler=cmd_validate)

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
    train.add_argument("--distributed", action="store_true", help="one of several processes of a cluster job "
                       "(Slurm, Open MPI, Kubernetes): join the others as the job's environment says (automatic "
                       "when the launcher started several tasks)")  # fmt: skip
    train.add_argument("--coordinator", metavar="HOST:PORT", help="a launch by hand: process 0's address, "
                       "reachable from every process (with --num-processes and --process-id)")  # fmt: skip
    train.add_argument("--num-processes", type=_positive, metavar="N", help="a launch by hand: how many processes")
    train.add_argument("--process-id", type=int, metavar="I", help="a launch by hand: this process's index, 0 to N-1")
    train.add_argument("--join-timeout", type=_positive, default=JOIN_TIMEOUT_SECONDS, metavar="SECONDS",
                       help="with several processes: how long to wait for all of them to join before giving up "
                       f"(default {JOIN_TIMEOUT_SECONDS})")  # fmt: skip
    train.add_argument("--xla-defaults", action="store_true",
                       help="compile training with XLA's defaults, not jaxcnn's options: slower on a CPU; faster on "
                            "a GPU, but runs with the same seed are no longer identical there")  # fmt: skip
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="test accuracy and confusion matrix of a trained run")
    evaluate.add_argument("run", help="a run directory")
    evaluate.add_argument("--dataset", help="data set to evaluate on (default: the one it was trained on)")
    _add_data_dir(evaluate)
    _add_which(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

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
    export.set_defaults(handler=cmd_export)

    predict = commands.add_parser("predict", help="classify PNG, JPEG or WebP images with a trained run")
    predict.add_argument("run", help="a run directory")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files, resized and converted as needed")
    predict.add_argument("--top", type=_positive, default=3, metavar="K",
                         help="how many classes to show, 1 or more (default 3; at most the run's classes)")  # fmt: skip
    _add_which(predict)
    predict.set_defaults(handler=cmd_predict)

    demo = commands.add_parser("demo", help="the article's demos: convolution, edge filter, padding, pooling")
    demo.add_argument("--out", default="demos", help="folder for the PNGs (default ./demos)")
    _add_data_dir(demo, of_a_run=False, unset="a drawn stroke instead of a real digit")
    demo.set_defaults(handler=cmd_demo)

    show = commands.add_parser("show", help="pictures of a trained run: filters, feature maps, confusion, mistakes")
    show.add_argument("run", help="a run directory")
    show.add_argument("--out", help="folder for the PNGs (default RUN/pictures)")
    _add_data_dir(show)
    show.add_argument("--image", type=int, default=0, help="test image for the feature maps (default 0)")
    show.add_argument("--dataset", help="another data set's test images (default: the run's own; an imported run "
                      "needs one)")  # fmt: skip
    show.set_defaults(handler=cmd_show)

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
    explore.set_defaults(handler=cmd_explore)

    explain = commands.add_parser("explain", help="heatmaps of why a trained run classified images as it did")
    explain.add_argument("run", help="a run directory")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files, read as `jaxcnn predict` reads them")
    explain.add_argument("--method", action="append", default=[], metavar="M", help="one or more of "
                         f"{', '.join(EXPLAIN_METHODS)} (repeatable or comma-separated; default grad-cam, or "
                         "gradient for a network without conv layers)")  # fmt: skip
    explain.add_argument("--layer", help="Grad-CAM's layer, one with an H x W x C output (default: the last such)")
    explain.add_argument("--class", dest="class_name", metavar="CLASS", help="the class to explain, by name or "
                         "number (default: each image's predicted class)")  # fmt: skip
    explain.add_argument("--out", help="folder for IMAGE.METHOD.png and .npy (default RUN/explanations)")
    explain.add_argument("--steps", type=_positive, default=64, help="integrated gradients' steps (default 64)")
    explain.add_argument("--samples", type=_positive, default=25, help="SmoothGrad's noisy copies (default 25)")
    explain.add_argument("--randomize", type=_count, default=0, metavar="K", help="give the top K layers with "
                         "weights random ones first: a map worth trusting changes (default 0)")  # fmt: skip
    _add_which(explain)
    explain.set_defaults(handler=cmd_explain)

    filters = commands.add_parser("filters", help="what each filter or unit of a layer looks for: a picture and "
                                  "the test images that excite it most")  # fmt: skip
    filters.add_argument("run", help="a run directory")
    filters.add_argument("--layer", required=True, help="the layer (a conv layer's filters, a dense layer's units)")
    filters.add_argument("--units", type=_units, metavar="I,J,...", help="which units (default: all)")
    filters.add_argument("--out", help="folder for LAYER.UNIT.png and .npy (default RUN/filters)")
    filters.add_argument("--steps", type=_positive, default=256, help="gradient-ascent steps (default 256)")
    _add_data_dir(filters)
    _add_which(filters)
    filters.set_defaults(handler=cmd_filters)

    prepare = commands.add_parser("prepare", help="pack a folder of photos or a data set into ArrayRecord shards "
                                  "with a verified manifest, for data larger than memory")  # fmt: skip
    prepare.add_argument("source", help="folder:PATH (train/<class>/ and test/<class>/ images of any size) or a "
                         "data set name (mnist, fashion_mnist, cifar10, ...)")  # fmt: skip
    prepare.add_argument("--out", required=True, help="the new folder for the shards and manifest.json")
    prepare.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images out (listed in the "
                         "manifest) instead of refusing the folder")  # fmt: skip
    prepare.add_argument("--workers", type=_positive, help="processes that decode the images (default: one per core)")
    _add_data_dir(prepare, of_a_run=False)
    prepare.set_defaults(handler=cmd_prepare)

    imported = commands.add_parser("import", help="an ONNX network (PyTorch, Keras, jaxcnn export ...) as a spec and "
                                   "a run folder")  # fmt: skip
    imported.add_argument("model", help="the .onnx file")
    imported.add_argument("--out", required=True, help="the run folder to write (DIR/spec.json holds the spec)")
    imported.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="per-channel mean the network's input "
                          "was normalised with, on the --scale scale (torchvision's: 0.485,0.456,0.406)")  # fmt: skip
    imported.add_argument("--std", type=_floats, metavar="S[,S,S]", help="per-channel standard deviation, on the "
                          "--scale scale (torchvision's: 0.229,0.224,0.225)")  # fmt: skip
    imported.add_argument("--scale", type=float, choices=(1.0, 255.0), default=1.0, help="the network's input "
                          "before --mean/--std: 1 for pixels / 255 in [0, 1] (PyTorch, default), 255 for raw 0-255 "
                          "values (many Keras and Caffe models)")  # fmt: skip
    imported.add_argument("--class-names", metavar="FILE", help="one class name per line (default 0, 1, ...)")
    imported.add_argument("--overwrite", action="store_true", help="replace an existing run at --out")
    imported.set_defaults(handler=cmd_import)

    draw = commands.add_parser("draw", help="draw a spec as a diagram in the article's style")
    draw.add_argument("spec", help="path to a JSON network spec")
    draw.add_argument("--out", help="PNG or SVG path (default: SPEC_NAME.png)")
    draw.set_defaults(handler=cmd_draw)
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


RUNS = ("jaxcnn.runs", "orbax.checkpoint")
"""What reading or writing a run folder imports: orbax (and tensorstore under it) are imported at the first
checkpoint, seconds into a command, where a Ctrl-C once broke tensorstore's initialisation (an ImportError)."""
HEAVY_MODULES: dict[str, tuple[str, ...]] = {
    "summary": ("jaxcnn.model",),
    "train": RUNS,
    "evaluate": RUNS,
    "export": (*RUNS, "onnx"),
    "predict": (*RUNS, "PIL.Image"),
    "demo": ("jaxcnn.pictures",),
    "show": ("jaxcnn.pictures", *RUNS),
    "explore": ("jaxcnn.explorer", *RUNS),
    "explain": ("jaxcnn.explanations", *RUNS),
    "import": ("jaxcnn.import_run", "onnx", *RUNS),
    "prepare": ("jaxcnn.prepared", "jaxcnn.data"),
    "filters": ("jaxcnn.explanations", "jaxcnn.data", *RUNS),
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


def _join_processes(args: argparse.Namespace) -> None:
    """``train`` as one of several processes: join them (by hand, ``--distributed``, or as a cluster launcher
    that started several tasks says), so the devices of every process train one run."""
    if args.command != "train":
        return
    from jaxcnn.distributed import join, launched_as_several

    by_hand = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or launched_as_several() or any(v is not None for v in by_hand):
        join(*by_hand, timeout=args.join_timeout)


def _tell_other_processes(word: str) -> None:
    """In a run of several processes, an interrupted one stops the others (through jaxcnn.peer_watch), and ends
    at once: process 0 holds the job's coordination service, and JAX aborts any process that outlives it."""
    if "jaxcnn.distributed" in sys.modules and sys.modules["jaxcnn.distributed"].tell_watch(word):
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


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
        _join_processes(args)  # before anything starts JAX's backend
        _load_heavy_modules(args.command)
        return int(args.handler(args))
    except UsageError as err:
        parser.error(str(err))
    except JaxcnnError as err:
        print(f"error: {err}", file=sys.stderr)
        if type(err).__name__ == "TrainingInterruptedError":
            _tell_other_processes("interrupted")
            return 130
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        _tell_other_processes("interrupted")
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
