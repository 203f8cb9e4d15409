"""Training and inference throughput of jaxcnn against Flax linen and PyTorch, in one run.

Command:  python experiments/benchmark.py                     (PyTorch is measured if installed:
          pip install torch==2.13.0; otherwise it is skipped with a note)
          python experiments/benchmark.py --xla-defaults      (jaxcnn without its XLA options)
          python experiments/benchmark.py --torch-device cuda (on a GPU machine: PyTorch on the GPU too)
Smoke:    python experiments/benchmark.py --smoke              (seconds)
Machine:  README "Speed" gives the table, the machine and the date it was measured.
Result:   a Markdown table of img/s (median and spread over timed windows) and ratios, written
          with the raw figures to benchmarks/results.json and benchmarks/results.md.

Every implementation trains the same network (``specs/lenet_mnist.json``: the article's LeNet on
28x28x1 with conv1 padded to 32x32) with Adam on the same batch sizes. jaxcnn is timed through
its real training path (``jaxcnn.train.Trainer``: batches gathered on the device from uint8
images, the step compiled with jaxcnn's XLA option, ``jaxcnn.compiling``; inference with XLA's
defaults, as jaxcnn evaluates); Flax and PyTorch through a plain step on a float batch (Flax with
``jax.jit``'s defaults, as a Flax user runs it). Compile time is measured separately (the
training step, then the evaluation program) and kept out of the throughput. The machine's
float32 matmul GFLOP/s is measured in the same run (NumPy, 2048^2, on a CPU; JAX's default
float32 matmul, 8192^2, on an accelerator), so each figure can be read as a fraction of the
machine's peak. JAX runs on ``jax.devices()[0]``; PyTorch on ``--torch-device``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.compiling import compiler_options, use_xla_defaults
from jaxcnn.data import Preprocess
from jaxcnn.model import Model, flops
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig, Trainer

from common import ROOT, machine, markdown_table, random_training_data, timed_windows


def matmul_gflops(repeats: int = 5) -> tuple[float, str]:
    """The best of ``repeats`` float32 matrix products, in GFLOP/s, and what was measured.

    NumPy on a CPU; on an accelerator, a larger product through JAX on the device, the same
    precision (XLA's default) as the networks' own float32 matrix products."""
    import jax

    if jax.default_backend() == "cpu":
        n = 2048
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        product: Callable[[], Any] = lambda: a @ a  # noqa: E731
        source = f"NumPy float32 matmul {n}^2"
    else:
        n = 8192
        b = jax.random.normal(jax.random.key(0), (n, n), np.float32)
        matmul = jax.jit(lambda m: m @ m)
        product = lambda: matmul(b).block_until_ready()  # noqa: E731
        source = f"JAX float32 matmul {n}^2 on {jax.default_backend()}"
    product()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9, source


def jaxcnn_train(model: Model, batch: int, steps: int, windows: int) -> tuple[dict[str, float], tuple[float, float]]:
    """jaxcnn's Trainer on random uint8 images: an epoch of ``steps`` steps is one window.

    Also returns the seconds compiling took: until the training step was ready, and until both it and the
    evaluation were (they compile side by side, ``Trainer.compile``)."""
    import jax

    images, labels = random_training_data(model, batch * steps)
    trainer = Trainer(model, TrainConfig(batch_size=batch, eval_batch_size=batch), Preprocess(), images, labels,
                      images[:batch], labels[:batch])  # fmt: skip
    state = trainer.init_state()
    compile_seconds = trainer.compile(state)
    box = [state]
    step_seconds = trainer.step_compile_seconds

    def window() -> None:
        box[0], _, _ = trainer.run_epoch(box[0], 1)
        jax.block_until_ready(box[0])

    return timed_windows(window, batch * steps, windows), (step_seconds, compile_seconds)


def jaxcnn_infer(model: Model, batch: int, steps: int, windows: int) -> dict[str, float]:
    import jax

    params = model.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (batch, *model.input_shape))
    apply = jax.jit(model.apply)  # inference: XLA's defaults (see jaxcnn/compiling.py)

    def window() -> None:
        for _ in range(steps):
            y = apply(params, x)
        y.block_until_ready()

    return timed_windows(window, batch * steps, windows)


def flax_lenet() -> Any:
    import flax.linen as nn

    class LeNet(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.relu(nn.Conv(8, (5, 5), padding=((2, 2), (2, 2)))(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(120)(x))
            x = nn.relu(nn.Dense(84)(x))
            return nn.Dense(10)(x)

    return LeNet()


def flax_train(batch: int, steps: int, windows: int) -> tuple[dict[str, float], dict[str, float]]:
    import jax
    import jax.numpy as jnp
    import optax

    net = flax_lenet()
    x = jax.random.uniform(jax.random.key(1), (batch, 28, 28, 1))
    y = jnp.zeros(batch, jnp.int32)
    params = net.init(jax.random.key(0), x)
    optimizer = optax.adam(1e-3)

    @jax.jit
    def step(params: Any, opt_state: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    box = [params, optimizer.init(params)]

    def train_window() -> None:
        for _ in range(steps):
            box[0], box[1] = step(box[0], box[1])
        jax.block_until_ready(box[0])

    apply = jax.jit(net.apply)

    def infer_window() -> None:
        for _ in range(steps):
            out = apply(params, x)
        out.block_until_ready()

    return timed_windows(train_window, batch * steps, windows), timed_windows(infer_window, batch * steps, windows)


def torch_train(
    batch: int, steps: int, windows: int, threads: int, device: str
) -> tuple[dict[str, float], dict[str, float]] | None:
    """PyTorch's img/s (train, inference) on ``device``, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from torch import nn

    torch.set_num_threads(threads)
    # Work on a GPU is queued; each window ends when the device has finished it, as JAX's do.
    finish = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ).to(device)  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def train_window() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            optimizer.step()
        finish()

    def infer_window() -> None:
        with torch.inference_mode():
            for _ in range(steps):
                net(x)
        finish()

    return timed_windows(train_window, batch * steps, windows), timed_windows(infer_window, batch * steps, windows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "lenet_mnist.json"))
    p.add_argument("--batch-sizes", default="128,512", help="comma-separated (default 128,512)")
    p.add_argument("--images", type=int, default=8192, help="images per timed window (default 8192)")
    p.add_argument("--windows", type=int, default=5, help="timed windows per figure (default 5)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    p.add_argument("--torch-device", default="cpu", help="where PyTorch runs: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--out", default=str(ROOT / "benchmarks"), help="where results.json and results.md go")
    p.add_argument("--smoke", action="store_true", help="tiny windows: checks the script in seconds")
    p.add_argument("--xla-defaults", action="store_true",
                   help="compile jaxcnn with XLA's defaults, not its own options (jaxcnn/compiling.py)")  # fmt: skip
    args = p.parse_args()
    use_xla_defaults(args.xla_defaults)
    if args.smoke:
        args.images, args.windows = 512, 1
    model = Model(load_spec(args.spec))
    # Forward, weight gradient and input gradient of every layer, except the first layer's input gradient.
    train_flops = 3 * sum(flops(layer) for layer in model.spec.layers) - flops(model.spec.layers[0])
    gflops, peak_source = matmul_gflops()
    rows: list[list[str]] = []
    raw: dict[str, Any] = {"machine": machine(), "matmul_gflops": gflops, "matmul": peak_source, "spec": args.spec,
                           "torch_device": args.torch_device, "jaxcnn_compiler_options": compiler_options(),
                           "results": []}  # fmt: skip
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        steps = max(1, args.images // batch)
        ours, compile_seconds = jaxcnn_train(model, batch, steps, args.windows)
        ours_infer = jaxcnn_infer(model, batch, steps, args.windows)
        flax_fit, flax_infer = flax_train(batch, steps, args.windows)
        torch_result = torch_train(batch, steps, args.windows, args.threads, args.torch_device)
        torch_fit, torch_infer = torch_result if torch_result else (None, None)
        raw["results"].append(
            {
                "batch": batch,
                "jaxcnn_train": ours,
                "jaxcnn_infer": ours_infer,
                "jaxcnn_step_compile_seconds": compile_seconds[0],
                "jaxcnn_compile_seconds": compile_seconds[1],  # step and evaluation, compiled side by side
                "flax_train": flax_fit,
                "flax_infer": flax_infer,
                "torch_train": torch_fit,
                "torch_infer": torch_infer,
            }
        )

        def cell(r: dict[str, float] | None) -> str:
            return "skipped" if r is None else f"{r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f})"

        def ratio(a: dict[str, float], b: dict[str, float] | None) -> str:
            return "-" if b is None else f"{a['median'] / b['median']:.2f}x"

        peak = ours["median"] * train_flops / 1e9 / gflops
        compiles = f"{compile_seconds[0]:.2f} / {compile_seconds[1]:.2f}"
        rows.append([str(batch), cell(ours), cell(flax_fit), cell(torch_fit), ratio(ours, flax_fit),
                     ratio(ours, torch_fit), f"{100 * peak:.0f}%", cell(ours_infer), cell(flax_infer),
                     cell(torch_infer), ratio(ours_infer, torch_infer), compiles])  # fmt: skip
        print(f"batch {batch}: jaxcnn {cell(ours)} img/s, flax {cell(flax_fit)}, torch {cell(torch_fit)}", flush=True)
    header = ["batch", "jaxcnn train img/s", "Flax train", "PyTorch train", "vs Flax", "vs PyTorch", "of peak",
              "jaxcnn infer img/s", "Flax infer", "PyTorch infer", "infer vs PyTorch",
              "compile: step / step and eval (s)"]  # fmt: skip
    table = markdown_table(header, rows)
    torch_missing = raw["results"][0]["torch_train"] is None
    note = "\nPyTorch is not installed: its columns are skipped." if torch_missing else ""
    summary = (f"{model.spec.name}, Adam; median img/s (min-max) over {args.windows} windows of about {args.images} "
               f"images; machine: {raw['machine']}; PyTorch on {args.torch_device}; {peak_source} {gflops:.0f} "
               f"GFLOP/s; 'of peak' = training "
               f"FLOPs ({train_flops / 1e6:.2f} MFLOP/img) / matmul peak; jaxcnn's XLA options: "
               f"{raw['jaxcnn_compiler_options'] or 'XLA defaults'}.{note}")  # fmt: skip
    print("\n" + summary + "\n\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    (out / "results.md").write_text(summary + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
