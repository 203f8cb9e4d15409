"""jaxcnn import as a user would try it: torchvision's ResNet-18 and MobileNetV2 exported from PyTorch, imported,
summarised and compared with onnxruntime and PyTorch on 64 random images; and the import time of a graph the
size of ResNet-56 (jaxcnn's own export of specs/resnet56_cifar10.json).

Command:  python experiments/import_benchmark.py          (needs: pip install 'jaxcnn[bench,export]' torchvision)

No weights are downloaded (this machine reaches no model hub): each network has random weights and random
batch-norm statistics, in evaluation mode, which tests the conversion as well as trained weights would. The
networks are exported with ``torch.onnx.export``'s default exporter at a fixed 224x224 RGB input and a dynamic
batch, and imported with torchvision's normalisation (``--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225``).
Writes OUT/results.json and results.md (default OUT: runs/import).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.import_run import import_network
from jaxcnn.onnx_import import OnnxImportError, read_onnx

from common import ROOT, machine, markdown_table, save_results

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGES = 64


def resnet56_import_seconds(out: Path) -> dict[str, float]:
    """Seconds to read jaxcnn's ONNX export of ResNet-56 into a spec, and to import it whole (checked against
    onnxruntime and written as a run), the median of three."""
    import onnx

    from jaxcnn.export import onnx_model
    from jaxcnn.model import Model
    from jaxcnn.preprocess import Preprocess
    from jaxcnn.spec import load_spec

    spec = load_spec(ROOT / "specs" / "resnet56_cifar10.json")
    model = Model(spec)
    params, state = model.init_with_state(0)
    path = out / "resnet56.onnx"
    onnx.save(onnx_model(spec, params, state, Preprocess()), str(path))
    read, whole = [], []
    for k in range(3):
        started = time.perf_counter()
        read_onnx(path)
        read.append(time.perf_counter() - started)
        started = time.perf_counter()
        import_network(path, out / f"resnet56_run{k}", overwrite=True)
        whole.append(time.perf_counter() - started)
    return {"nodes": len(onnx.load(str(path)).graph.node), "layers": len(spec.layers),
            "read_seconds": float(np.median(read)), "import_seconds": float(np.median(whole))}  # fmt: skip


def torchvision_case(name: str, out: Path, dynamo: bool) -> dict[str, Any]:
    """Export one torchvision classifier (with torch's newer exporter, or the older TorchScript one), import it,
    and compare on IMAGES random images."""
    import onnxruntime
    import torch
    import torchvision

    from jaxcnn.runs import load_run

    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                mean, var = module.running_mean, module.running_var
                assert mean is not None and var is not None  # tracked, as torchvision's are
                mean.uniform_(-0.1, 0.1)
                var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    exporter = "dynamo" if dynamo else "torchscript"
    path = out / f"{name}_{exporter}.onnx"
    example = torch.randn(2, 3, 224, 224)
    started = time.perf_counter()
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(net, (example,), str(path), input_names=["x"], dynamic_shapes={"x": {0: batch}})
    else:
        torch.onnx.export(net, (example,), str(path), input_names=["x"], dynamo=False, opset_version=17,
                          dynamic_axes={"x": {0: "batch"}})  # fmt: skip
    result: dict[str, Any] = {"network": name, "exporter": exporter, "torch": torch.__version__,
                              "torchvision": torchvision.__version__,
                              "export_seconds": time.perf_counter() - started}  # fmt: skip
    started = time.perf_counter()
    try:
        imported = import_network(path, out / f"{name}_{exporter}", mean=MEAN, std=STD, overwrite=True)
    except OnnxImportError as err:
        return result | {"error": str(err)}
    result |= {"import_seconds": time.perf_counter() - started, "layers": imported.layers,
               "weights": imported.weights, "check_difference": imported.difference}  # fmt: skip
    run = load_run(out / f"{name}_{exporter}")
    pixels = np.random.default_rng(1).integers(0, 256, (IMAGES, 224, 224, 3)).astype(np.uint8)
    normalised = ((pixels / 255 - np.asarray(MEAN)) / np.asarray(STD)).astype(np.float32).transpose(0, 3, 1, 2)
    started = time.perf_counter()
    ours = np.concatenate([run.predict(pixels[i : i + 16]) for i in range(0, IMAGES, 16)])
    result["jaxcnn_seconds"] = time.perf_counter() - started
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    theirs = np.concatenate([session.run(None, {"x": normalised[i : i + 16]})[0] for i in range(0, IMAGES, 16)])
    result["onnxruntime_seconds"] = time.perf_counter() - started
    with torch.no_grad():
        reference = np.concatenate([net(torch.from_numpy(normalised[i : i + 16])).numpy()
                                    for i in range(0, IMAGES, 16)])  # fmt: skip
    scale = float(np.abs(theirs).max())
    result |= {
        "logit_scale": scale,
        "max_difference_onnxruntime": float(np.abs(ours - theirs).max()),
        "max_difference_torch": float(np.abs(ours - reference).max()),
        "top1_agreement_onnxruntime": float((ours.argmax(1) == theirs.argmax(1)).mean()),
        "top1_agreement_torch": float((ours.argmax(1) == reference.argmax(1)).mean()),
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/import", help="where the ONNX files and runs go (default runs/import)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "resnet56": resnet56_import_seconds(out)}
    cases = [torchvision_case(name, out, dynamo) for name in ("resnet18", "mobilenet_v2") for dynamo in (True, False)]
    results["torchvision"] = cases
    r56 = results["resnet56"]
    rows = []
    for case in cases:
        if "error" in case:
            rows.append([case["network"], case["exporter"], "not imported: " + case["error"], "", "", "", ""])
            continue
        rows.append([
            case["network"], case["exporter"], f"{case['layers']} layers, {case['weights']:,} weights",
            f"{case['import_seconds']:.1f}",
            f"{case['max_difference_onnxruntime']:.1e} / {case['max_difference_torch']:.1e} (logits up to "
            f"{case['logit_scale']:.1f})",
            f"{100 * case['top1_agreement_onnxruntime']:.0f}% / {100 * case['top1_agreement_torch']:.0f}%",
            f"{case['jaxcnn_seconds']:.2f} / {case['onnxruntime_seconds']:.2f}",
        ])  # fmt: skip
    versions = next((f"torch {c['torch']}, torchvision {c['torchvision']}" for c in cases), "")
    table = "\n\n".join([
        f"Machine: {results['machine']}; {versions}.",
        f"ResNet-56 (jaxcnn's export: {r56['nodes']} ONNX nodes, {r56['layers']} layers): read in "
        f"{r56['read_seconds']:.2f} s, imported whole (checked against onnxruntime, run written) in "
        f"{r56['import_seconds']:.2f} s (median of 3).",
        markdown_table(["network", "torch.onnx exporter", "imported as", "import (s)",
                        f"largest difference on {IMAGES} random images: onnxruntime / PyTorch",
                        "same top class: onnxruntime / PyTorch", f"{IMAGES} images (s): jaxcnn / onnxruntime"], rows),
    ])  # fmt: skip
    save_results(out, results, table)
    print(table)


if __name__ == "__main__":
    main()
