"""Where ResNet-20's training step spends its time on this machine, measured three ways.

Command:  python benchmarks/tools/resnet_profile.py            (about 2 minutes on 2 CPU cores)
Smoke:    python benchmarks/tools/resnet_profile.py --smoke    (seconds)
Result:   three Markdown tables (figures in docs/performance.md):

1. each of ResNet-20's 3x3 convolution shapes, forward and both gradients, in jaxcnn's two
   implementations (``impl="lax"`` and the CPU forms, ``"fast"``) and in PyTorch when installed;
2. the whole training step with and without its batch norms (replaced by identities);
3. eight identical residual blocks unrolled against the same blocks in one ``lax.scan`` (what a
   compiled body shared across repeats would cost at run time): compile and step time.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn import layers as L
from jaxcnn.data import Preprocess
from jaxcnn.model import Model
from jaxcnn.spec import parse_spec
from jaxcnn.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))  # experiments/common.py

from common import ROOT, machine, markdown_table, random_training_data, timed_windows

SHAPES = [(32, 16), (16, 32), (8, 64)]  # (height = width, channels) of ResNet-20's three stages


def milliseconds(fn: Callable[[], Any], repeats: int) -> float:
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1000


def conv_table(batch: int, repeats: int) -> str:
    rows = []
    for side, channels in SHAPES:
        x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
        k = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.1
        cells = [f"{side}x{side}x{channels}"]
        for impl in ("lax", "fast"):
            grad = jax.jit(jax.grad(lambda x, k, i=impl: (L.conv2d(x, k, padding=1, impl=i) ** 2).sum(), (0, 1)))
            cells.append(f"{milliseconds(lambda g=grad, x=x, k=k: g(x, k), repeats):.1f}")  # type: ignore[misc]
        cells.append(_torch_conv_ms(batch, side, channels, repeats))
        rows.append(cells)
    header = ["3x3 conv, forward + both gradients", "jaxcnn lax (ms)", "jaxcnn fast (ms)", "PyTorch (ms)"]
    return markdown_table(header, rows)


def _torch_conv_ms(batch: int, side: int, channels: int, repeats: int) -> str:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return "not installed"
    torch.set_num_threads(2)
    x = torch.randn(batch, channels, side, side, requires_grad=True)
    k = (torch.randn(channels, channels, 3, 3) * 0.1).requires_grad_()
    (F.conv2d(x, k, padding=1) ** 2).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        (F.conv2d(x, k, padding=1) ** 2).sum().backward()
    return f"{(time.perf_counter() - start) / repeats * 1000:.1f}"


def without_batch_norm(document: dict[str, Any]) -> dict[str, Any]:
    """The spec with every batch_norm replaced by an identity activation of the same name."""
    document = copy.deepcopy(document)
    for layers in [document["layers"], *(block["layers"] for block in document["blocks"].values())]:
        for layer in layers:
            if layer.get("type") == "batch_norm":
                name = layer["name"]
                layer.clear()
                layer.update(type="activation", name=name, activation="linear")
    return document


def step_table(batch: int, steps: int, windows: int) -> str:
    document = json.loads((ROOT / "specs" / "resnet20_cifar10.json").read_text())
    rows = []
    for label, variant in (("ResNet-20", document), ("without its batch norms", without_batch_norm(document))):
        model = Model(parse_spec(variant))
        images, labels = random_training_data(model, batch * steps)
        config = TrainConfig(batch_size=batch, eval_batch_size=batch, optimizer="sgd", lr=0.01, momentum=0.9)
        trainer = Trainer(model, config, Preprocess(), images, labels, images[:batch], labels[:batch])
        box = [trainer.init_state()]
        trainer.compile(box[0])

        def window(t: Trainer = trainer, box: list[Any] = box) -> None:
            box[0], _, _ = t.run_epoch(box[0], 1)
            jax.block_until_ready(box[0])

        rate = timed_windows(window, batch * steps, windows)["median"]
        rows.append([label, f"{rate:,.0f}", f"{trainer.step_compile_seconds:.1f}"])
    return markdown_table(["training step", "img/s", "step compile (s)"], rows)


def scan_table(batch: int, repeats: int) -> str:
    def block(x: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
        y = L.conv2d(x, w["k1"], padding=1)
        y = jax.nn.relu(L.batch_norm(y, *L.batch_moments(y), None, None))
        y = L.conv2d(y, w["k2"], padding=1)
        return jax.nn.relu(L.batch_norm(y, *L.batch_moments(y), None, None) + x)

    blocks = [{name: jax.random.normal(jax.random.key(10 * i + j), (3, 3, 32, 32)) * 0.05
               for j, name in enumerate(("k1", "k2"))} for i in range(8)]  # fmt: skip

    def unrolled(ws: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
        for w in ws:
            x = block(x, w)
        return (x**2).mean()

    def scanned(ws: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *ws)
        x, _ = jax.lax.scan(lambda x, w: (block(x, w), None), x, stacked)
        return (x**2).mean()

    x = jax.random.normal(jax.random.key(0), (batch, 16, 16, 32))
    rows = []
    for label, loss in (("unrolled", unrolled), ("one lax.scan", scanned)):
        start = time.perf_counter()
        grad = jax.jit(jax.grad(loss)).lower(blocks, x).compile()
        compile_seconds = time.perf_counter() - start
        step_ms = milliseconds(lambda g=grad: g(blocks, x), repeats)  # type: ignore[misc]
        rows.append([label, f"{compile_seconds:.1f}", f"{step_ms:.0f}"])
    return markdown_table(["8 residual blocks, 16x16x32", "compile (s)", "gradient step (ms)"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="batch 8, one repeat: checks the tool in seconds")
    args = p.parse_args()
    batch, repeats, steps, windows = (8, 1, 1, 1) if args.smoke else (128, 10, 8, 2)
    print(f"machine: {machine()}; batch {batch}\n")
    print(conv_table(batch, repeats) + "\n")
    print(step_table(batch, steps, windows) + "\n")
    print(scan_table(batch, repeats))


if __name__ == "__main__":
    main()
