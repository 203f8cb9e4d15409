"""ResNet-20 and vgg_bn_cifar10 training throughput of jaxcnn against Flax and PyTorch, and compile time with depth.

Command:  python experiments/resnet_benchmark.py              (PyTorch is measured if installed)
Smoke:    python experiments/resnet_benchmark.py --smoke      (about a minute)
Machine:  README "Speed" gives the table, the machine and the date it was measured.
Result:   a Markdown table written with the raw figures to benchmarks/resnet_results.{json,md}.

All three train the same networks, checked by their weight counts: He et al.'s ResNet-20 for CIFAR-10
(``specs/resnet20_cifar10.json``: option B shortcuts, batch norm with momentum 0.9 and epsilon 1e-5,
272,474 weights) and the VGG-style ``specs/vgg_bn_cifar10.json`` (3x3 convolutions with batch norm,
max pools and dropout), with SGD (momentum 0.9, weight decay 1e-4) on 32x32x3 batches of 128.
jaxcnn is timed through its real training path (``jaxcnn.train.Trainer``: uint8 images gathered on
the device, batch norm's state threaded through the step); Flax and PyTorch through a plain step on a
float batch. Compile time, kept out of the throughput, is the first training step's; for jaxcnn it
is also measured for ResNet-56 (ResNet-20's blocks, three times as many) to show how it grows with
depth. A second jaxcnn column trains with the CPU split into ``RECIPE_CPU_DEVICES`` XLA devices
(data-parallel over the cores, as ``cifar10_minutes.py`` and ``fashion_mnist.py`` train), measured in
a child process since the split must be set before JAX starts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data import Preprocess
from jaxcnn.model import Model
from jaxcnn.spec import load_spec
from jaxcnn.train import TrainConfig, Trainer

from common import RECIPE_CPU_DEVICES, ROOT, machine, markdown_table, random_training_data, split_cpu, timed_windows

SGD: dict[str, Any] = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}


def jaxcnn_train(spec: str, batch: int, steps: int, windows: int) -> tuple[dict[str, float] | None, float]:
    """img/s of jaxcnn's Trainer (None when ``windows`` is 0) and the seconds its training step took to compile."""
    import jax

    model = Model(load_spec(ROOT / "specs" / spec))
    images, labels = random_training_data(model, batch * steps)
    config = TrainConfig(batch_size=batch, eval_batch_size=batch, **SGD)
    trainer = Trainer(model, config, Preprocess(), images, labels, images[:batch], labels[:batch])
    state = trainer.init_state()
    trainer.compile(state)
    if not windows:
        return None, trainer.step_compile_seconds
    box = [state]

    def window() -> None:
        box[0], _, _ = trainer.run_epoch(box[0], 1)
        jax.block_until_ready(box[0])

    return timed_windows(window, batch * steps, windows), trainer.step_compile_seconds


def flax_resnet20() -> Any:
    import flax.linen as nn

    class Block(nn.Module):
        filters: int
        stride: int

        @nn.compact
        def __call__(self, x: Any, train: bool) -> Any:
            norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)  # noqa: E731
            y = nn.Conv(self.filters, (3, 3), self.stride, padding=1, use_bias=False)(x)
            y = nn.relu(norm()(y))
            y = norm()(nn.Conv(self.filters, (3, 3), padding=1, use_bias=False)(y))
            if self.stride != 1:
                x = norm()(nn.Conv(self.filters, (1, 1), self.stride, padding=0, use_bias=False)(x))
            return nn.relu(y + x)

    class ResNet20(nn.Module):
        @nn.compact
        def __call__(self, x: Any, train: bool = True) -> Any:
            x = nn.Conv(16, (3, 3), padding=1, use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
            for filters, first_stride in ((16, 1), (32, 2), (64, 2)):
                for block in range(3):
                    x = Block(filters, first_stride if block == 0 else 1)(x, train)
            return nn.Dense(10)(x.mean(axis=(1, 2)))

    return ResNet20()


def flax_vgg_bn() -> Any:
    """``specs/vgg_bn_cifar10.json`` in Flax linen: 3x3 convolutions with batch norm, max pools, dropout."""
    import flax.linen as nn

    class VggBn(nn.Module):
        @nn.compact
        def __call__(self, x: Any, train: bool = True) -> Any:
            norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)  # noqa: E731
            for filters, rate in VGG_STAGES:
                for _ in range(2):
                    x = nn.relu(norm()(nn.Conv(filters, (3, 3), padding=1, use_bias=False)(x)))
                x = nn.Dropout(rate, deterministic=not train)(nn.max_pool(x, (2, 2), (2, 2)))
            x = nn.relu(norm()(nn.Dense(128, use_bias=False)(x.reshape(x.shape[0], -1))))
            return nn.Dense(10)(nn.Dropout(0.25, deterministic=not train)(x))

    return VggBn()


VGG_STAGES = ((32, 0.05), (64, 0.1), (128, 0.15))
"""vgg_bn_cifar10's stages: (filters of its two convolutions, dropout after its pool)."""


def flax_train(net: Any, batch: int, steps: int, windows: int) -> tuple[dict[str, float], float, int]:
    import jax
    import jax.numpy as jnp
    import optax

    x = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3))
    y = jnp.zeros(batch, jnp.int32)
    variables = net.init(jax.random.key(0), x, train=False)
    optimizer = optax.chain(optax.add_decayed_weights(SGD["weight_decay"]),
                            optax.sgd(SGD["lr"], momentum=SGD["momentum"], nesterov=True))  # fmt: skip
    dropout_key = jax.random.key(2)

    def step(params: Any, stats: Any, opt_state: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            logits, updated = net.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"],
                                        rngs={"dropout": dropout_key})  # fmt: skip
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updated["batch_stats"]

        grads, stats = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    params = variables["params"]
    box = [params, variables["batch_stats"], optimizer.init(params)]
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(*box).compile()
    compile_seconds = time.perf_counter() - start

    def window() -> None:
        for _ in range(steps):
            box[0], box[1], box[2] = compiled(*box)
        jax.block_until_ready(box[0])

    weights = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return timed_windows(window, batch * steps, windows), compile_seconds, weights


def torch_resnet20() -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, inputs: int, filters: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(filters, momentum=0.1)
            self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(filters, momentum=0.1)
            self.shortcut = nn.Sequential()
            if stride != 1 or inputs != filters:
                projection = nn.Conv2d(inputs, filters, 1, stride, bias=False)
                self.shortcut = nn.Sequential(projection, nn.BatchNorm2d(filters))

        def forward(self, x: Any) -> Any:
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    blocks: list[nn.Module] = []
    inputs = 16
    for filters, first_stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(3):
            blocks.append(Block(inputs, filters, first_stride if block == 0 else 1))
            inputs = filters
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))  # fmt: skip


def torch_vgg_bn() -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    inputs = 3
    for filters, rate in VGG_STAGES:
        for _ in range(2):
            layers += [nn.Conv2d(inputs, filters, 3, 1, 1, bias=False), nn.BatchNorm2d(filters), nn.ReLU()]
            inputs = filters
        layers += [nn.MaxPool2d(2), nn.Dropout(rate)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 4 * 128, 128, bias=False), nn.BatchNorm1d(128),
                         nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))  # fmt: skip


def torch_train(build: Any, batch: int, steps: int, windows: int, threads: int) -> tuple[dict[str, float], int] | None:
    """PyTorch's training img/s on the CPU and its weight count, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build()
    optimizer = torch.optim.SGD(net.parameters(), SGD["lr"], momentum=SGD["momentum"], nesterov=True,
                                weight_decay=SGD["weight_decay"])  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 3, 32, 32)
    y = torch.zeros(batch, dtype=torch.long)
    net.train()

    def window() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            optimizer.step()

    weights = sum(p.numel() for p in net.parameters())
    return timed_windows(window, batch * steps, windows), weights


def jaxcnn_split_cpu(batch: int, steps: int, windows: int) -> dict[str, dict[str, float]] | None:
    """jaxcnn's img/s for each network with the CPU split into ``RECIPE_CPU_DEVICES`` XLA devices
    (data-parallel, as the recipe scripts train), measured in a child process: the split must be
    set before JAX starts. None when the child fails (its error is printed)."""
    argv = [sys.executable, __file__, "--split-cpu-child", "--batch", str(batch), "--images", str(batch * steps),
            "--windows", str(windows)]  # fmt: skip
    child = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        print(f"the split-CPU measurement failed:\n{child.stderr[-2000:]}", flush=True)
        return None
    result: dict[str, dict[str, float]] = json.loads(lines[-1])
    return result


def split_cpu_child(batch: int, steps: int, windows: int) -> None:
    """The child of :func:`jaxcnn_split_cpu`: one JSON line of img/s by network."""
    split_cpu(RECIPE_CPU_DEVICES)
    rates = {}
    for spec, _, _ in NETWORKS:
        rates[spec.removesuffix(".json")] = jaxcnn_train(spec, batch, steps, windows)[0]
    print(json.dumps(rates), flush=True)


NETWORKS = (
    ("resnet20_cifar10.json", flax_resnet20, torch_resnet20),
    ("vgg_bn_cifar10.json", flax_vgg_bn, torch_vgg_bn),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--images", type=int, default=2048, help="images per timed window (default 2048)")
    p.add_argument("--windows", type=int, default=3, help="timed windows per figure (default 3)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    p.add_argument("--out", default=str(ROOT / "benchmarks"), help="where resnet_results.{json,md} go")
    p.add_argument("--smoke", action="store_true", help="batch 16, tiny windows, no ResNet-56: a minute")
    p.add_argument("--split-cpu-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.batch, args.images, args.windows = 16, 32, 1
    steps = max(1, args.images // args.batch)
    if args.split_cpu_child:
        split_cpu_child(args.batch, steps, args.windows)
        return
    split = jaxcnn_split_cpu(args.batch, steps, args.windows)

    def cell(r: dict[str, float] | None) -> str:
        return "skipped" if r is None else f"{r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f})"

    def ratio(a: dict[str, float], b: dict[str, float] | None) -> str:
        return "-" if b is None else f"{a['median'] / b['median']:.2f}x"

    rows, raw = [], {"machine": machine(), "batch": args.batch, "images_per_window": steps * args.batch,
                     "windows": args.windows, "networks": {}}  # fmt: skip
    torch_missing = False
    for spec, flax_net, torch_net in NETWORKS:
        label = spec.removesuffix(".json")
        ours, ours_compile = jaxcnn_train(spec, args.batch, steps, args.windows)
        assert ours is not None
        print(f"jaxcnn {label}: {ours['median']:,.0f} img/s, step compiled in {ours_compile:.1f} s", flush=True)
        flax_fit, flax_compile, flax_weights = flax_train(flax_net(), args.batch, steps, args.windows)
        print(f"Flax {label}: {flax_fit['median']:,.0f} img/s, compiled in {flax_compile:.1f} s", flush=True)
        torch_result = torch_train(torch_net, args.batch, steps, args.windows, args.threads)
        torch_fit = torch_result[0] if torch_result else None
        torch_missing = torch_result is None
        if torch_fit is not None:
            print(f"PyTorch {label}: {torch_fit['median']:,.0f} img/s", flush=True)
        weights = Model(load_spec(ROOT / "specs" / spec)).param_count()
        assert flax_weights == weights and (torch_result is None or torch_result[1] == weights), "not the same network"
        halves = None if split is None else split[label]
        rows.append([label, f"{weights:,}", cell(ours), cell(flax_fit), cell(torch_fit), ratio(ours, flax_fit),
                     ratio(ours, torch_fit), cell(halves), "-" if halves is None else ratio(halves, torch_fit),
                     f"{ours_compile:.1f}", f"{flax_compile:.1f}"])  # fmt: skip
        raw["networks"][label] = {"weights": weights, "jaxcnn_train": ours, "flax_train": flax_fit,
                                  "torch_train": torch_fit, "jaxcnn_split_cpu_train": halves,
                                  "jaxcnn_compile_seconds": ours_compile,
                                  "flax_compile_seconds": flax_compile}  # fmt: skip
    compile20 = raw["networks"]["resnet20_cifar10"]["jaxcnn_compile_seconds"]
    compile56 = None if args.smoke else jaxcnn_train("resnet56_cifar10.json", args.batch, steps, 0)[1]
    raw["jaxcnn_compile_resnet56_seconds"] = compile56
    header = ["network", "weights", "jaxcnn train img/s", "Flax train", "PyTorch train", "vs Flax", "vs PyTorch",
              f"jaxcnn, CPU as {RECIPE_CPU_DEVICES} devices", "vs PyTorch", "jaxcnn compile (s)",
              "Flax compile (s)"]  # fmt: skip
    table = markdown_table(header, rows)
    depth = ("" if compile56 is None else f"\n\njaxcnn's ResNet-56 step compiled in {compile56:.1f} s: "
             f"{compile56 / compile20:.2f}x ResNet-20's.")  # fmt: skip
    summary = (f"Training with SGD (momentum 0.9), median img/s (min-max) over {args.windows} windows "
               f"of {steps * args.batch} images, batch {args.batch}; machine: {raw['machine']}; "
               f"PyTorch {args.threads} threads"
               + ("; PyTorch is not installed: its column is skipped" if torch_missing else ""))  # fmt: skip
    print("\n" + summary + "\n\n" + table + depth)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "resnet_results_smoke" if args.smoke else "resnet_results"
    (out / f"{name}.json").write_text(json.dumps(raw, indent=2) + "\n")
    (out / f"{name}.md").write_text(summary + "\n\n" + table + depth + "\n")


if __name__ == "__main__":
    main()
