"""PNG pictures of runs, with matplotlib's non-interactive Agg backend (no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def plot_curves(metrics: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and test, side by side; written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("test", "-s")):
        loss_ax.plot(epochs, [m[f"{split}_loss"] for m in metrics], style, label=split)
        acc_ax.plot(epochs, [100 * m[f"{split}_accuracy"] for m in metrics], style, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
