"""The same training in several JAX processes (hosts), checked against one process.

Command (simulated on one machine, processes over loopback):
          python experiments/multi_process.py --launch 2 [--smoke]
Command (two machines, A at 10.0.0.1; run on each with its own --process-id):
          machine A: python experiments/multi_process.py --coordinator 10.0.0.1:12355 --num-processes 2 --process-id 0
          machine B: python experiments/multi_process.py --coordinator 10.0.0.1:12355 --num-processes 2 --process-id 1
Machine:  any; README "Devices" has the figures.
Result:   each process prints its final train losses and a checksum of the parameters; with
          --launch, the script also trains in one process and says whether they match.

Every process loads the same data (here a small synthetic 4-class image set, or MNIST with
--dataset mnist) and seed; the batch is split across the devices of all processes and XLA
all-reduces the gradients (gloo on CPUs). No run directory is written here: to train a run into a
folder from several processes, launch ``jaxcnn train`` itself (docs/devices.md, "Several processes
and hosts").
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args: argparse.Namespace) -> dict[str, object]:
    if args.num_processes > 1:
        from jaxcnn.distributed import join

        join(args.coordinator, args.num_processes, args.process_id)
    import jax
    import numpy as np

    from jaxcnn.runs import train_run
    from jaxcnn.spec import load_spec, parse_spec
    from jaxcnn.train import TrainConfig

    sys.path.insert(0, str(ROOT / "tests"))
    if args.dataset == "synthetic":
        from datasets import TINY_SPEC, quadrant_dataset

        data, spec = quadrant_dataset(512, 128), parse_spec(TINY_SPEC)
    else:
        from jaxcnn.data import load_dataset

        data, spec = load_dataset(args.dataset, args.data_dir), load_spec(ROOT / "specs" / "lenet_mnist.json")
    config = TrainConfig(epochs=1 if args.smoke else 3, batch_size=32, lr=1e-2, eval_batch_size=64)
    result = train_run(spec, data, config, None, progress=False, verbose=False)
    leaves = jax.tree.leaves(result.params)
    return {
        "process": args.process_id,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "losses": [m["train_loss"] for m in result.metrics],
        "checksum": float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in leaves)),
    }


def launch(args: argparse.Namespace) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [sys.executable, __file__, "--dataset", args.dataset] + (["--smoke"] if args.smoke else [])
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    procs = [
        subprocess.Popen(
            [*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(args.launch), "--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(args.launch)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err[-3000:]}")
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    single = subprocess.run(base, capture_output=True, text=True, timeout=600, check=True)
    reference = json.loads(single.stdout.strip().splitlines()[-1])
    match = all(
        abs(o["checksum"] - reference["checksum"]) <= 1e-4 * abs(reference["checksum"])
        and all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(o["losses"], reference["losses"], strict=True))
        for o in outputs
    )
    for o in outputs:
        print(json.dumps(o))
    print(json.dumps({"single_process": reference}))
    print(f"{args.launch} processes ({outputs[0]['devices']} devices in all) vs 1 process: match: {match}")
    raise SystemExit(0 if match else 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launch", type=int, default=0, help="start this many local processes over loopback and compare")
    p.add_argument("--coordinator", default="127.0.0.1:12355", help="host:port of process 0")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--dataset", default="synthetic", help="synthetic (default) or mnist")
    p.add_argument("--data-dir", help="offline data folder for --dataset mnist")
    p.add_argument("--smoke", action="store_true", help="one epoch")
    args = p.parse_args()
    if args.launch:
        launch(args)
    else:
        print(json.dumps(worker(args)), flush=True)


if __name__ == "__main__":
    main()
