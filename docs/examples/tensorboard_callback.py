"""A callback that writes each epoch's metrics as TensorBoard events (``pip install 'jaxcnn[tensorboard]'``).

    from jaxcnn.runs import train_run
    train_run("specs/lenet_mnist.json", "mnist", TrainConfig(epochs=5), "runs/lenet",
              callbacks=[TensorBoard("runs/lenet/tensorboard")])

then ``tensorboard --logdir runs/lenet/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxcnn.callbacks import Callback
from jaxcnn.train import EpochResult


class TensorBoard(Callback):
    """Every number of an epoch's result (losses, accuracies, images per second) as a scalar at that epoch."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self._writer: Any = None

    def on_train_begin(self, session: Any) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(self.logdir))

    def on_epoch_end(self, result: EpochResult) -> None:
        for name, value in result.to_dict().items():
            if name != "epoch":
                self._writer.add_scalar(name, value, result.epoch)
        self._writer.flush()

    def teardown(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
