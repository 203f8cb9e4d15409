"""What each ``jaxcnn`` command does, given its parsed arguments (the parser is :mod:`jaxcnn.cli`). Each
returns the exit status; a user's mistake raises a :class:`jaxcnn.errors.JaxcnnError` (one ``error:`` line)
or :class:`UsageError` (arguments that do not go together)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from jaxcnn.config import TrainConfig
from jaxcnn.errors import JaxcnnError
from jaxcnn.export import DEFAULT_OPSET
from jaxcnn.spec import SpecError, load_spec
from jaxcnn.summary import shape_text, summary_dict, summary_table

DATA_DIR_ENV = "JAXCNN_DATA_DIR"
"""jaxcnn.data's name for it, repeated so the command starts without importing NumPy (a test checks them)."""


class UsageError(Exception):
    """Arguments that do not go together."""


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cmd_summary(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.json:
        print(json.dumps(summary_dict(spec), indent=2))
    else:
        print(summary_table(spec))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
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
            f"input {shape_text(spec.input_shape)}, output {shape_text(spec.output_shape)})"
        )
    return 1 if failures else 0


def cmd_train(args: argparse.Namespace) -> int:
    from jaxcnn.compiling import enable_compilation_cache, use_xla_defaults
    from jaxcnn.runs import NothingToResumeError, resume_run, train_run

    enable_compilation_cache()  # a second run of the same network skips XLA's code generation
    use_xla_defaults(args.xla_defaults)

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume:
        if args.spec or args.out:
            raise UsageError("--resume RUN continues a run: give no SPEC and no --out")
        changed = sorted(option_flag(name) for name in given if name != "epochs")
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
    from jaxcnn.distributed import is_primary

    if is_primary():  # one console for a run of several processes
        print(f"run saved in {args.out} (config.json, metrics.jsonl, checkpoints/, curves.png)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
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


def cmd_export(args: argparse.Namespace) -> int:
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


def cmd_predict(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
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


def cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn.pictures import run_pictures

    out = Path(args.out) if args.out else Path(args.run) / "pictures"
    for name, path in run_pictures(Path(args.run), out, args.data_dir, args.image, args.dataset).items():
        print(f"{name}: {path}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn.explanations import explain_images

    out = Path(args.out) if args.out else Path(args.run) / "explanations"
    methods = [m.strip() for text in args.method for m in text.split(",") if m.strip()]
    done = explain_images(args.run, args.images, methods, out, which=args.which, layer=args.layer,
                          class_name=args.class_name, randomize=args.randomize, steps=args.steps,
                          samples=args.samples)  # fmt: skip
    for item in done:
        why = item.explained + ("" if item.explained == item.predicted else f" (predicted: {item.predicted})")
        print(f"{item.image}: {item.method} for {why}: {item.png} {item.npy}")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn.data import DataError, load_dataset
    from jaxcnn.explanations import unit_pictures
    from jaxcnn.run_files import read_config, run_data_dir

    config = read_config(Path(args.run))
    try:
        test_images = load_dataset(config["dataset"]["name"], run_data_dir(config, args.data_dir)).test_images
    except DataError as err:
        print(f"note: no test images, so only the pictures ({err})", file=sys.stderr)
        test_images = None
    out = Path(args.out) if args.out else Path(args.run) / "filters"
    for item in unit_pictures(args.run, args.layer, args.units, out, test_images, which=args.which, steps=args.steps):
        tops = ", ".join(f"#{i} ({v:.3g})" for i, v in zip(item.top_indices, item.top_values, strict=True))
        print(f"{item.layer} unit {item.unit}: {item.png} {item.npy}" + (f"; top test images {tops}" if tops else ""))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from jaxcnn.import_run import import_network

    result = import_network(args.model, args.out, mean=args.mean, std=args.std, scale=args.scale,
                            class_names=args.class_names, overwrite=args.overwrite)  # fmt: skip
    imported = result.imported
    print(f"imported {args.model} ({imported.producer or 'unknown producer'}, opset {imported.opset}): "
          f"{result.layers} layers, {result.weights:,} weights")  # fmt: skip
    if result.difference is None:
        print("note: onnxruntime is not installed, so the import was not compared with it (pip install "
              "'jaxcnn[export]')", file=sys.stderr)  # fmt: skip
    else:
        print(f"agrees with onnxruntime on random images: largest difference {result.difference:.1e} (relative)")
    h, w, c = (int(v) for v in imported.spec["input"])
    scaling = ("pixels / 255" if imported.mean is None else
               f"(pixels / 255 - mean {list(imported.mean)}) / std {list(imported.std or ())}")  # fmt: skip
    print(f"input: {h}x{w}x{c} images, given to the network as {scaling}")
    print(f"spec: {result.spec_path}")
    print(f"run: {result.run_dir} (jaxcnn summary {result.spec_path}; jaxcnn explore {result.run_dir}; "
          f"jaxcnn train {result.spec_path} --init-from {result.run_dir} ... to fine-tune)")  # fmt: skip
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from jaxcnn.prepared import prepare

    prepared = prepare(args.source, args.out, data_dir=args.data_dir, skip_bad_images=args.skip_bad_images,
                       workers=args.workers, report=lambda line: print(line, flush=True))  # fmt: skip
    counts = ", ".join(f"{split.count:,} {name} in {len(split.shards)} shard{'s' * (len(split.shards) > 1)}"
                       for name, split in prepared.splits.items())  # fmt: skip
    shape = "x".join(map(str, prepared.image_shape)) if prepared.image_shape else "of their own sizes"
    print(f"prepared {args.source} in {prepared.root}: {counts}; {len(prepared.class_names)} classes; images {shape}")
    if prepared.skipped:
        print(f"left out {len(prepared.skipped):,} unreadable images (listed in {prepared.root}/manifest.json)")
    return 0


class ExploreStartError(JaxcnnError):
    """The explore server could not start (the port is taken, the host is not this machine's)."""


def cmd_explore(args: argparse.Namespace) -> int:
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


def cmd_draw(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxcnn.pictures import network_diagram

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path(Path(args.spec).stem + ".png")
    print(network_diagram(spec, out))
    return 0
