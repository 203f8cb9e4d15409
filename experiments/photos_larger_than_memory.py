"""Train ResNet-20 on a folder of photos larger than the machine's memory: ``jaxcnn train ... --dataset folder:``
exactly as a user runs it, with the memory of the training process and its loader workers watched throughout.

Command:  python experiments/photos_larger_than_memory.py [--out runs/photos_larger_than_memory] [--keep]
Quick:    python experiments/photos_larger_than_memory.py --gigabytes 2   (a folder of 2 GB: the same path)
Machine, time and result: docs/data.md ("A folder larger than memory").

1. A folder ``OUT/photos/{train,test}/<class>/*.jpg`` of camera-sized JPEGs of mixed sizes and orientations (16 to
   24 megapixels, noisy so that they weigh what real photos weigh), until the training images take more bytes
   than the machine's memory (``MemTotal``, or ``--gigabytes``). DISTINCT pictures are drawn and then copied
   (real copies, not links), so that writing the folder does not take an hour; the classes are dealt round, so
   the accuracy means nothing: this measures capacity, not learning.
2. ``jaxcnn train specs/resnet20_cifar10.json --dataset folder:OUT/photos --epochs 1 --loader-workers 2`` in a
   child process (``--data-in auto`` streams it: its images have many sizes); every 2 s the resident set
   (RSS) of the trainer and the proportional set (PSS: shared pages counted once) of the trainer and all its
   workers are read from /proc.
3. The folder is deleted afterwards unless ``--keep``. Writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import ROOT, machine

DISTINCT = 24
SIZES = ((6000, 4000), (4000, 6000), (5472, 3648), (4896, 3264), (3264, 4896))
CLASSES = 10
TEST_IMAGES = 100
POLL_SECONDS = 2.0
"""How often the memory is read (reading every process's smaps costs CPU the training would use)."""


def memory_bytes() -> int:
    """The machine's memory (/proc/meminfo's MemTotal)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def photo(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A JPEG (quality 92) of a smooth random picture with sensor-like noise: about 0.6 bytes a pixel."""
    base = Image.fromarray(rng.integers(0, 256, (height // 100, width // 100, 3), dtype=np.uint8))
    smooth = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC), np.int16)
    noisy = np.clip(smooth + rng.integers(-40, 41, smooth.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=92)
    return out.getvalue()


def write_folder(root: Path, train_bytes: int) -> dict[str, Any]:
    """The photo folder: DISTINCT pictures, copied round the classes until the training split passes
    ``train_bytes``; then TEST_IMAGES test photos."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    sources = []
    for i in range(DISTINCT):
        path = root / "sources" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo(rng, *SIZES[i % len(SIZES)]))
        sources.append(path)
    written, count = 0, 0
    while written <= train_bytes:
        source = sources[count % DISTINCT]
        target = root / "photos" / "train" / f"class{count % CLASSES}" / f"{count:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written += source.stat().st_size
        count += 1
    for i in range(TEST_IMAGES):
        target = root / "photos" / "test" / f"class{i % CLASSES}" / f"{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i % DISTINCT], target)
    shutil.rmtree(root / "sources")
    return {"train_images": count, "train_bytes": written, "test_images": TEST_IMAGES,
            "seconds": time.perf_counter() - started}  # fmt: skip


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = []
        for task in Path(f"/proc/{parent}/task").glob("*"):  # every thread's: grain starts its workers from one
            try:
                children += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        found += children
        frontier += children
    return found


def kilobytes(pid: int, field: str, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def watch(process: subprocess.Popen[str], peaks: dict[str, int]) -> None:
    """Record the trainer's peak RSS and the whole tree's peak PSS until the process ends."""
    while process.poll() is None:
        pids = tree(process.pid)
        peaks["trainer_rss_kb"] = max(peaks["trainer_rss_kb"], kilobytes(process.pid, "VmRSS", "status"))
        total = sum(kilobytes(p, "Pss", "smaps_rollup") for p in pids)
        peaks["tree_pss_kb"] = max(peaks["tree_pss_kb"], total)
        peaks["processes"] = max(peaks["processes"], len(pids))
        time.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/photos_larger_than_memory")
    parser.add_argument("--gigabytes", type=float, help="the training images' size (default: the machine's memory)")
    parser.add_argument("--keep", action="store_true", help="keep the photo folder")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"error: {out} exists; remove it or choose --out")
    memory = memory_bytes()
    target = int(args.gigabytes * 1e9) if args.gigabytes else memory
    folder = write_folder(out, target)
    print(f"{folder['train_images']:,} training photos, {folder['train_bytes'] / 1e9:.1f} GB (memory "
          f"{memory / 1e9:.1f} GB), written in {folder['seconds']:.0f} s", flush=True)  # fmt: skip
    batch = str(min(128, folder["train_images"]))
    command = [sys.executable, "-m", "jaxcnn", "train", str(ROOT / "specs" / "resnet20_cifar10.json"), "--dataset",
               f"folder:{out / 'photos'}", "--epochs", "1", "--batch-size", batch, "--loader-workers", "2",
               "--out", str(out / "run"), "--no-progress"]  # fmt: skip
    peaks = {"trainer_rss_kb": 0, "tree_pss_kb": 0, "processes": 0}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = threading.Thread(target=watch, args=(process, peaks))
    watcher.start()
    output = process.communicate()[0]
    watcher.join()
    seconds = time.perf_counter() - started
    print(output, flush=True)
    if process.returncode != 0:
        raise SystemExit(f"error: the training exited with {process.returncode}; the folder is kept in {out}")
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    results = {"machine": machine(), "command": " ".join(command), "returncode": process.returncode,
               "memory_bytes": memory, "folder": folder, "wall_seconds": seconds, "metrics": metrics,
               "peak_trainer_rss_mb": peaks["trainer_rss_kb"] / 1024, "peak_tree_pss_mb": peaks["tree_pss_kb"] / 1024,
               "processes": peaks["processes"]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"folder {folder['train_bytes'] / 1e9:.1f} GB of training photos, memory {memory / 1e9:.1f} GB; "
          f"exit {process.returncode}; peak RSS of the trainer {results['peak_trainer_rss_mb']:,.0f} MB, peak PSS "
          f"of trainer and workers {results['peak_tree_pss_mb']:,.0f} MB ({peaks['processes']} processes); "
          f"{seconds:.0f} s", flush=True)  # fmt: skip
    if not args.keep:
        shutil.rmtree(out / "photos")


if __name__ == "__main__":
    main()
