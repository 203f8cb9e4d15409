"""What training in several processes costs against one process with the same devices, on one machine.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/processes_overhead.py [--spec lenet_mnist.json] [--rounds 2]
Machine, time and result: docs/devices.md ("Several processes and hosts").

The same run (the spec on MNIST, 2 epochs, batch 128, seed 0) as 1 process of 2 CPU devices and as 2 processes
of 1 device each (joined over loopback, gloo all-reduce), alternated ``--rounds`` times; each run's second epoch
img/s (the first compiles), the median of each layout, and their ratio. Both layouts split the 2 cores the same
way, so the ratio is the cost of the processes: the gloo all-reduce over loopback against XLA's in-process one,
and two Python processes instead of one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(spec: str, processes: int, devices: int, out: Path) -> float:
    """The second epoch's img/s of a 2-epoch run in ``processes`` processes of ``devices`` devices each."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    argv = [sys.executable, "-m", "jaxcnn", "train", str(ROOT / "specs" / spec), "--dataset", "mnist", "--epochs",
            "2", "--batch-size", "128", "--out", str(out), "--no-progress"]  # fmt: skip
    port = free_port()
    joined = [[] if processes == 1 else ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                                         "--process-id", str(i)] for i in range(processes)]  # fmt: skip
    started = [subprocess.Popen([*argv, *j], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for j in joined]  # fmt: skip
    for p in started:
        output = p.communicate()[0]
        if p.returncode != 0:
            raise SystemExit(f"error: a training process failed:\n{output[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(rows[-1]["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="lenet_mnist.json")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    layouts = {"1 process x 2 devices": (1, 2), "2 processes x 1 device": (2, 1)}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            for name, (processes, devices) in layouts.items():
                rate = one_run(args.spec, processes, devices, Path(folder) / f"{r}-{processes}")
                rates[name].append(rate)
                print(f"round {r + 1}: {name}: {rate:,.0f} img/s", flush=True)
    one, two = (statistics.median(rates[name]) for name in layouts)
    print(f"{args.spec} on MNIST, batch 128, {machine()}: 1 process x 2 devices {one:,.0f} img/s, 2 processes x 1 "
          f"device {two:,.0f} img/s (median of {args.rounds}); ratio {two / one:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
