"""Streaming against in-memory training, measured in one run: throughput, peak memory against the data set's size,
and ``jaxcnn prepare`` on a folder of JPEGs of mixed sizes.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/streaming_benchmark.py
Quick:    JAXCNN_DATA_DIR=../shared/data python experiments/streaming_benchmark.py --quick   (smaller sets, fewer steps)

1. Throughput: the same network, data and settings trained from memory and streamed from a prepared copy
   (``jaxcnn prepare``), STEPS steps each after a warm-up, alternated ROUNDS times; the median img/s of each and
   their ratio. LeNet on MNIST, and ``vgg_bn_cifar10`` and ResNet-20 on the CIFAR-10 JPEG copy.
2. Peak memory: ResNet-20 streamed from a synthetic 32x32x3 prepared set of 50,000 and of 1,200,000 images
   (3.7 GB), PEAK_STEPS steps in a fresh process each; the process's peak resident set size (ru_maxrss).
3. ``prepare`` on a generated folder of JPEGs of mixed sizes (FOLDER_IMAGES, 64 to 256 pixels a side): images
   per second, then a short streamed training from it.

Writes OUT/results.json and results.md (default OUT: runs/streaming).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.config import TrainConfig
from jaxcnn.data import Dataset, load_dataset
from jaxcnn.model import Model
from jaxcnn.prepared import FORMAT, MANIFEST, _write_split, encode_record, prepare, prepare_dataset
from jaxcnn.spec import load_spec
from jaxcnn.train import EpochInterruptedError

from common import ROOT, machine, markdown_table, save_results

NETWORKS = (("lenet_mnist.json", "mnist", 128), ("vgg_bn_cifar10.json", "cifar10", 128),
            ("resnet20_cifar10.json", "cifar10", 128))  # fmt: skip


def trainer_for(spec_file: str, data: Any, batch: int, stream: bool) -> Any:
    from jaxcnn.preprocess import Preprocess, plan_preprocess
    from jaxcnn.stream_train import StreamTrainer
    from jaxcnn.train import Trainer

    spec = load_spec(ROOT / "specs" / spec_file)
    model = Model(spec)
    config = TrainConfig(batch_size=batch, data_in="stream" if stream else "memory")
    if stream:
        return StreamTrainer(model, config, Preprocess(), data)
    preprocess = plan_preprocess(data, spec.input_shape)
    fit = preprocess.fit
    return Trainer(model, config, preprocess, fit(data.train_images), data.train_labels, fit(data.test_images),
                   data.test_labels)  # fmt: skip


def seconds_for(trainer: Any, state: Any, epoch: int) -> tuple[Any, float]:
    """Train one epoch; returns the state and the seconds it took."""
    import jax

    started = time.perf_counter()
    state, _, _ = trainer.run_epoch(state, epoch)
    jax.block_until_ready(state)
    return state, time.perf_counter() - started


def steps_then_stop(trainer: Any, steps: int) -> float:
    """Train ``steps`` steps of an epoch, then stop (the state is given up); the seconds they took."""
    count = [0]

    def stop() -> bool:
        count[0] += 1
        return count[0] >= steps

    state = trainer.init_state()
    trainer.compile(state)
    started = time.perf_counter()
    with contextlib.suppress(EpochInterruptedError):  # reporting each step waits for it to finish
        trainer.run_epoch(state, 1, lambda finished: None, stop)
    return time.perf_counter() - started


def throughput(out: Path, data_dir: str | None, steps: int, rounds: int) -> list[dict[str, Any]]:
    from jaxcnn.stream_data import open_streaming

    rows = []
    for spec_file, name, batch in NETWORKS:
        whole = load_dataset(name, data_dir)
        n = steps * batch  # an epoch of ``steps`` steps, the same images in both forms
        data = Dataset(whole.name, whole.train_images[:n], whole.train_labels[:n], whole.test_images[:batch],
                       whole.test_labels[:batch], whole.class_names, whole.source)  # fmt: skip
        prepared = out / f"prepared-{name}-{n}"
        if not (prepared / MANIFEST).exists():
            prepare_dataset(data, prepared)
        streamed = open_streaming(f"prepared:{prepared}")
        pair = {kind: trainer_for(spec_file, data if kind == "memory" else streamed, batch, kind == "stream")
                for kind in ("memory", "stream")}  # fmt: skip
        states = {}
        for kind, trainer in pair.items():
            states[kind] = trainer.init_state()
            trainer.compile(states[kind])
            states[kind], _ = seconds_for(trainer, states[kind], 0)  # warm-up
        rates: dict[str, list[float]] = {"memory": [], "stream": []}
        for r in range(rounds):
            for kind, trainer in pair.items():
                states[kind], seconds = seconds_for(trainer, states[kind], r + 1)
                rates[kind].append(steps * batch / seconds)
        memory, stream = statistics.median(rates["memory"]), statistics.median(rates["stream"])
        rows.append({"network": spec_file, "data": name, "memory_img_s": memory, "stream_img_s": stream,
                     "ratio": stream / memory, "rates": rates,
                     "stream_wait_seconds_last": pair["stream"].data_wait_seconds})  # fmt: skip
        print(f"{spec_file}: memory {memory:,.0f} img/s, stream {stream:,.0f} img/s, ratio {stream / memory:.2f}",
              flush=True)  # fmt: skip
    return rows


def synthetic_prepared(folder: Path, count: int) -> Path:
    """A prepared set of ``count`` random 32x32x3 images (and 1,000 test images), written directly."""
    if (folder / MANIFEST).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def records(n: int) -> Any:  # random pixels: incompressible, so the files are as large as the images
        for start in range(0, n, 4096):
            block = rng.integers(0, 256, (min(4096, n - start), 32, 32, 3), dtype=np.uint8)
            for k, image in enumerate(block):
                yield encode_record((start + k) % 10, pixels=image)

    splits = {split: {"count": n, "shards": _write_split(folder, split, records(n), n * 3087, n)}
              for split, n in (("train", count), ("test", 1000))}  # fmt: skip
    manifest = {"format": FORMAT, "source": f"synthetic {count}", "class_names": [str(i) for i in range(10)],
                "image_shape": [32, 32, 3], "skipped": [], "splits": splits}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


PEAK_CHILD = """
import json, resource, sys
sys.path.insert(0, {experiments!r})
import streaming_benchmark as b
from jaxcnn.stream_data import open_streaming
trainer = b.trainer_for("resnet20_cifar10.json", open_streaming("prepared:{folder}"), 128, True)
seconds = b.steps_then_stop(trainer, {steps})
print(json.dumps({{"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}}))
"""


def peak_memory(out: Path, sizes: tuple[int, ...], steps: int) -> list[dict[str, Any]]:
    rows = []
    for count in sizes:
        started = time.perf_counter()
        folder = synthetic_prepared(out / f"synthetic-{count}", count)
        written = time.perf_counter() - started
        code = PEAK_CHILD.format(experiments=str(ROOT / "experiments"), folder=folder, steps=steps)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        size_gb = sum(p.stat().st_size for p in folder.glob("*.array_record")) / 1e9
        rows.append({"images": count, "gigabytes": size_gb, "write_seconds": written, **result})
        print(f"{count:,} images ({size_gb:.2f} GB): peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def jpeg_folder(root: Path, count: int) -> Path:
    """Class folders of ``count`` random-content JPEGs of mixed sizes (10 classes, one tenth for testing)."""
    from PIL import Image

    if root.exists():
        return root
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(64, 257, 2))
        split = "test" if (i // 10) % 10 == 0 else "train"
        folder = root / split / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, i, axis=0)[:h, :w]).save(folder / f"{i:06d}.jpg", quality=85)
    return root


def prepare_folder(out: Path, count: int) -> dict[str, Any]:
    root = jpeg_folder(out / f"jpegs-{count}", count)
    target = out / f"prepared-jpegs-{count}"
    if target.exists():
        import shutil

        shutil.rmtree(target)
    started = time.perf_counter()
    prepare(f"folder:{root}", target)
    seconds = time.perf_counter() - started
    print(f"prepare: {count:,} JPEGs in {seconds:.1f} s, {count / seconds:,.0f} img/s", flush=True)
    from jaxcnn.stream_data import open_streaming

    trainer = trainer_for("resnet20_cifar10.json", open_streaming(f"prepared:{target}"), 128, True)
    train_seconds = steps_then_stop(trainer, 20)
    return {
        "images": count,
        "prepare_seconds": seconds,
        "prepare_img_s": count / seconds,
        "train_img_s_20_steps": 20 * 128 / train_seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/streaming")
    p.add_argument("--data-dir", help="offline data folder (default: $JAXCNN_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="smaller sets and fewer steps, to check the script")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps, rounds = (10, 1) if args.quick else (40, 3)
    sizes = (5000, 50000) if args.quick else (50000, 1200000)
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine()}
    results["throughput"] = throughput(out, args.data_dir, steps, rounds)
    results["peak_memory"] = peak_memory(out, sizes, 20 if args.quick else 100)
    results["prepare"] = prepare_folder(out, 2000 if args.quick else 100000)
    results["seconds"] = time.perf_counter() - started
    t_rows = [[r["network"], r["data"], f"{r['memory_img_s']:,.0f}", f"{r['stream_img_s']:,.0f}", f"{r['ratio']:.2f}"]
              for r in results["throughput"]]  # fmt: skip
    m_rows = [[f"{r['images']:,}", f"{r['gigabytes']:.2f}", f"{r['peak_rss_mb']:,.0f}"] for r in results["peak_memory"]]
    prep = results["prepare"]
    table = "\n\n".join([
        f"Machine: {results['machine']}; {steps} steps x {rounds} alternated rounds; batch 128; loader in the "
        "training process (--loader-workers 0).",
        markdown_table(["network", "data", "in memory (img/s)", "streamed (img/s)", "streamed / in memory"], t_rows),
        markdown_table(["ResNet-20 streamed from a prepared set of", "GB", "peak RSS (MB)"], m_rows),
        f"prepare: {prep['images']:,} JPEGs of 64 to 256 pixels a side in {prep['prepare_seconds']:.1f} s "
        f"({prep['prepare_img_s']:,.0f} img/s); then ResNet-20 streamed from them at "
        f"{prep['train_img_s_20_steps']:,.0f} img/s (20 steps, random-resized crops to 32x32).",
    ])  # fmt: skip
    save_results(out, results, table)
    print(table)
    print(f"{results['seconds']:.0f} s in all; {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          "peak in this process")  # fmt: skip


if __name__ == "__main__":
    main()
