"""Callbacks: the session calls each hook in order, a user's own callbacks see every epoch and can stop
training, and the TensorBoard example of the manual writes events that read back to the run's metrics."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from typing import Any

import pytest

from jaxcnn.callbacks import Callback
from jaxcnn.runs import read_metrics, resume_run, train_run
from jaxcnn.spec import parse_spec
from jaxcnn.train import TrainConfig

from conftest import ROOT
from datasets import TINY_SPEC, quadrant_dataset


class Recorder(Callback):
    """Writes down every hook call, and stops after ``stop_at`` epochs when asked."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[Any] = []
        self.stop_at = stop_at

    def on_train_begin(self, session: Any) -> None:
        self.calls.append(("begin", session.config.epochs, len(session.metrics)))

    def on_epoch_begin(self, epoch: int) -> None:
        self.calls.append(("epoch", epoch))

    def on_step(self, steps: int) -> None:
        self.calls.append(("steps", steps))

    def on_epoch_end(self, result: Any) -> bool:
        self.calls.append(("end", result.epoch))
        return self.stop_at is not None and result.epoch >= self.stop_at

    def on_train_end(self) -> None:
        self.calls.append(("train_end",))

    def teardown(self) -> None:
        self.calls.append(("teardown",))


def test_hooks_are_called_in_order_and_a_callback_can_stop_training(tmp_path):
    recorder = Recorder(stop_at=2)
    config = TrainConfig(epochs=4, batch_size=32)
    result = train_run(parse_spec(TINY_SPEC), quadrant_dataset(128, 32), config, tmp_path / "run", progress=False,
                       verbose=False, callbacks=[recorder])  # fmt: skip
    assert result.stopped_early and [m["epoch"] for m in result.metrics] == [1, 2]
    names = [call[0] for call in recorder.calls]
    assert names[0] == "begin" and names[-2:] == ["train_end", "teardown"]
    ends = [call for call in recorder.calls if call[0] == "end"]
    assert ends == [("end", 1), ("end", 2)]
    steps = sum(call[1] for call in recorder.calls if call[0] == "steps")
    assert steps == 2 * (128 // 32)  # every step of both epochs was reported
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2]  # saved before the callback stopped it

    resumed = Recorder()
    resume_run(tmp_path / "run", epochs=3, dataset=quadrant_dataset(128, 32), progress=False, verbose=False,
               callbacks=[resumed])  # fmt: skip
    assert resumed.calls[0] == ("begin", 3, 2) and [c for c in resumed.calls if c[0] == "end"] == [("end", 3)]


def test_teardown_runs_after_an_error_and_nothing_after_it(tmp_path):
    class Failing(Callback):
        def on_epoch_end(self, result: Any) -> None:
            raise RuntimeError("a callback's own bug")

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="a callback's own bug"):
        train_run(parse_spec(TINY_SPEC), quadrant_dataset(64, 32), TrainConfig(epochs=2, batch_size=32), None,
                  progress=False, verbose=False, callbacks=[Failing(), recorder])  # fmt: skip
    assert recorder.calls[-1] == ("teardown",) and ("train_end",) not in recorder.calls


def _tensorboard_example() -> Any:
    path = ROOT / "docs" / "examples" / "tensorboard_callback.py"
    spec = importlib.util.spec_from_file_location("tensorboard_callback", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the event files under ``logdir``: TFRecord framing (length, CRC, data, CRC) of Event
    protocol buffers, read with tensorboardX's own message classes."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_the_manuals_tensorboard_callback_writes_the_runs_metrics(tmp_path):
    board = _tensorboard_example().TensorBoard(tmp_path / "board")
    result = train_run(parse_spec(TINY_SPEC), quadrant_dataset(128, 32), TrainConfig(epochs=3, batch_size=32),
                       tmp_path / "run", progress=False, verbose=False, callbacks=[board])  # fmt: skip
    scalars = read_scalars(tmp_path / "board")
    for row in result.metrics:
        for name in ("train_loss", "test_accuracy", "images_per_second"):
            assert scalars[name][int(row["epoch"])] == pytest.approx(row[name], rel=1e-6)
    assert sorted(scalars["test_loss"]) == [1, 2, 3]
