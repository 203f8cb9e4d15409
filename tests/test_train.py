"""Training on a tiny learnable problem: learning, determinism, loops, resume, run directories, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import optax
import pytest

import jaxcnn
from jaxcnn.checkpoint import Checkpoints
from jaxcnn.data import Preprocess
from jaxcnn.runs import RunError, load_run, read_metrics, resume_run, train_run
from jaxcnn.train import (
    MICRO_BATCH,
    AccumulatedStep,
    ConfigError,
    TrainConfig,
    Trainer,
    TrainState,
    batch_loss,
    chunk_plan,
    make_schedule,
    make_train_step,
    micro_batch_size,
)

from conftest import ROOT
from datasets import quadrant_dataset, write_class_folders, write_spec

DATA = quadrant_dataset()
FAST: dict[str, Any] = {"batch_size": 32, "lr": 1e-2, "eval_batch_size": 128}


def params_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    return write_spec(tmp_path_factory.mktemp("spec") / "tiny.json")


def test_loss_falls_and_accuracy_rises_well_above_chance(spec_file):
    result = train_run(spec_file, DATA, TrainConfig(epochs=4, **FAST), None, progress=False, verbose=False)
    losses = [m["train_loss"] for m in result.metrics]
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics[-1]["test_accuracy"] > 0.9  # chance is 0.25
    assert result.metrics[-1]["images_per_second"] > 0


@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(spec_file):
    runs = [
        train_run(spec_file, DATA, TrainConfig(epochs=2, seed=s, **FAST), None, progress=False, verbose=False)
        for s in (3, 3, 4)
    ]
    assert params_equal(runs[0].params, runs[1].params)
    assert not params_equal(runs[0].params, runs[2].params)
    assert runs[0].metrics == [{**m, "seconds": runs[0].metrics[i]["seconds"],
                                "images_per_second": runs[0].metrics[i]["images_per_second"],
                                "eval_seconds": runs[0].metrics[i]["eval_seconds"]}
                               for i, m in enumerate(runs[1].metrics)]  # fmt: skip


@pytest.mark.slow
def test_scan_loop_and_step_loop_compute_the_same_training(spec_file):
    scan = train_run(spec_file, DATA, TrainConfig(epochs=2, loop="scan", **FAST), None, progress=False, verbose=False)
    step = train_run(spec_file, DATA, TrainConfig(epochs=2, loop="step", **FAST), None, progress=False, verbose=False)
    for a, b in zip(jax.tree.leaves(scan.params), jax.tree.leaves(step.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert scan.metrics[-1]["test_accuracy"] == pytest.approx(step.metrics[-1]["test_accuracy"], abs=0.01)


@pytest.mark.slow
def test_accumulated_step_equals_the_whole_batch_step(spec_file):
    model = jaxcnn.Model.from_file(spec_file)
    optimizer = optax.adam(1e-2)
    params = model.init(0)
    images, labels = DATA.train_images[:96], np.asarray(DATA.train_labels[:96], np.int32)
    perm = {"index": jax.numpy.arange(96, dtype=jax.numpy.int32)}  # the epoch plan: no dropout, no augmentation
    whole = jax.jit(make_train_step(model, optimizer, Preprocess(), 48))
    accumulated = AccumulatedStep(model, optimizer, Preprocess(), 48, 16)
    states = [TrainState(params, optimizer.init(params)) for _ in range(2)]
    states[1] = jax.tree.map(jax.numpy.array, states[1])  # its own copy: the accumulated step donates it
    accumulated.compile(states[1], images, labels, perm)
    for i in (1, 0):  # two steps: the second starts from the sums the first one emptied
        (states[0], whole_sums), (states[1], micro_sums) = (
            whole(states[0], images, labels, perm, i),
            accumulated(states[1], images, labels, perm, jax.numpy.int32(i)),
        )
        for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(whole_sums, micro_sums, rtol=1e-5)
    assert not params_equal(states[0].params, params)
    assert micro_batch_size(512, impl_is_fast=True, devices=1) == MICRO_BATCH
    assert micro_batch_size(512, impl_is_fast=False, devices=1) == 512  # lax path: leave XLA the batch
    assert micro_batch_size(512, impl_is_fast=True, devices=2) == 512  # data parallel: whole batch
    assert micro_batch_size(200, impl_is_fast=True, devices=1) == 200  # not a multiple of MICRO_BATCH
    for bad in (20, 0):
        with pytest.raises(ValueError, match="must divide the batch size"):
            AccumulatedStep(model, optimizer, Preprocess(), 48, bad)


def test_accumulated_step_interrupted_between_its_calls_starts_the_next_step_clean(spec_file):
    model = jaxcnn.Model.from_file(spec_file)
    optimizer = optax.adam(1e-2)
    images, labels = DATA.train_images[:96], np.asarray(DATA.train_labels[:96], np.int32)
    perm = {"index": jax.numpy.arange(96, dtype=jax.numpy.int32)}  # the epoch plan: no dropout, no augmentation

    def fresh() -> TrainState:  # a step donates its state: each run starts from its own copy
        params = model.init(0)
        return TrainState(params, optimizer.init(params))

    clean, interrupted = (AccumulatedStep(model, optimizer, Preprocess(), 48, 16) for _ in range(2))
    after_two = [clean(clean(fresh(), images, labels, perm, jax.numpy.int32(0))[0],
                       images, labels, perm, jax.numpy.int32(1))[0]]  # fmt: skip
    after_one, _ = interrupted(fresh(), images, labels, perm, jax.numpy.int32(0))
    calls, real = [], interrupted._accumulate

    def ctrl_c_on_the_second_call(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    interrupted._accumulate = ctrl_c_on_the_second_call  # the first call has consumed the running sums
    with pytest.raises(KeyboardInterrupt):
        interrupted(after_one, images, labels, perm, jax.numpy.int32(1))
    after_two.append(interrupted(after_one, images, labels, perm, jax.numpy.int32(1))[0])
    for a, b in zip(jax.tree.leaves(after_two[0]), jax.tree.leaves(after_two[1]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trainer_accumulates_micro_batches_only_on_the_cpu_fast_path_step_loop(spec_file):
    images, labels = DATA.train_images[:256], DATA.train_labels[:256]

    def trainer(impl="auto", **config):
        model = jaxcnn.Model.from_file(spec_file, impl)
        return Trainer(model, TrainConfig(batch_size=256, **config), Preprocess(), images, labels, images, labels)

    on_the_cpu = jax.default_backend() == "cpu"  # elsewhere "auto" means plain lax: no micro-batches
    assert isinstance(trainer(loop="step")._chunk, AccumulatedStep) == on_the_cpu
    assert isinstance(trainer("fast", loop="step")._chunk, AccumulatedStep)
    assert not isinstance(trainer("lax", loop="step")._chunk, AccumulatedStep)
    assert not isinstance(trainer(loop="scan")._chunk, AccumulatedStep)


def test_trainer_compile_times_the_training_step_apart_from_the_evaluation(spec_file):
    model = jaxcnn.Model.from_file(spec_file)
    images, labels = DATA.train_images[:64], DATA.train_labels[:64]
    trainer = Trainer(model, TrainConfig(batch_size=32), Preprocess(), images, labels, images, labels)
    total = trainer.compile(trainer.init_state())
    assert total == trainer.compile_seconds
    assert 0 < trainer.step_compile_seconds < total  # the total waits for both programs


STARTUP_COUNT = """
import jax, jaxcnn
from jaxcnn.data import Preprocess
from jaxcnn.train import TrainConfig, Trainer
from datasets import quadrant_dataset
data, programs = quadrant_dataset(), []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: programs.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
trainer = Trainer(jaxcnn.Model.from_file({spec!r}), TrainConfig(batch_size=32), Preprocess(),
                  data.train_images, data.train_labels, data.test_images, data.test_labels)
trainer.compile(trainer.init_state())
compiled = len(programs)
state, _, _ = trainer.run_epoch(trainer.init_state(), 1)
trainer.evaluate(state.params)
print(compiled, len(programs))
"""


@pytest.mark.slow
def test_a_fresh_process_compiles_three_programs_and_none_while_training(spec_file):
    """Optimizer init, training step, evaluation: each small eager op would add a compilation (10-170 ms)."""
    code = STARTUP_COUNT.format(spec=str(spec_file))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "JAXCNN_COMPILE_CACHE": "off"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "3"]


@pytest.mark.slow
def test_resume_equals_uninterrupted(spec_file, tmp_path):
    config = TrainConfig(epochs=3, schedule="onecycle", **FAST)
    whole = train_run(spec_file, DATA, config, tmp_path / "whole", progress=False, verbose=False)
    # An interrupted run: 3 epochs configured, stopped after 2 (as a crash would), then resumed.
    partial = train_run(spec_file, DATA, config, tmp_path / "part", progress=False, verbose=False, stop_after_epochs=2)
    assert len(partial.metrics) == 2
    resumed = resume_run(tmp_path / "part", dataset=DATA, progress=False, verbose=False)
    assert params_equal(whole.params, resumed.params)
    assert [m["epoch"] for m in read_metrics(tmp_path / "part")] == [1, 2, 3]
    assert read_metrics(tmp_path / "part")[-1]["test_loss"] == read_metrics(tmp_path / "whole")[-1]["test_loss"]


@pytest.mark.slow
def test_killed_as_an_epoch_is_saved_resumes_to_the_same_run(spec_file, tmp_path, monkeypatch):
    """Killed just as epoch 2's checkpoint is saved: its metrics row is already written (never a
    checkpoint without its row), and resume continues to the same run as an uninterrupted one."""
    config = TrainConfig(epochs=3, schedule="onecycle", **FAST)
    whole = train_run(spec_file, DATA, config, tmp_path / "whole", progress=False, verbose=False)
    save = Checkpoints.save

    def crash_at_epoch_2(self, epoch, state, metrics):
        save(self, epoch, state, metrics)
        if epoch == 2:
            self.close()  # the checkpoint is complete on disk, then the process dies
            raise SystemExit("killed after saving")

    monkeypatch.setattr(Checkpoints, "save", crash_at_epoch_2)
    with pytest.raises(SystemExit):
        train_run(spec_file, DATA, config, tmp_path / "part", progress=False, verbose=False)
    monkeypatch.setattr(Checkpoints, "save", save)
    assert [m["epoch"] for m in read_metrics(tmp_path / "part")] == [1, 2]  # the row came first
    resumed = resume_run(tmp_path / "part", dataset=DATA, progress=False, verbose=False)
    assert params_equal(whole.params, resumed.params)
    assert [m["epoch"] for m in read_metrics(tmp_path / "part")] == [1, 2, 3]


@pytest.mark.slow
def test_run_directory_contents_and_overwrite_protection(spec_file, tmp_path):
    out = tmp_path / "run"
    train_run(spec_file, DATA, TrainConfig(epochs=2, **FAST), out, progress=False, verbose=False)
    config = json.loads((out / "config.json").read_text())
    assert config["spec"]["name"] == "tiny" and config["train"]["epochs"] == 2
    assert {"jax", "optax", "python"} <= set(config["versions"]) and config["devices"]
    assert config["dataset"]["class_names"][0] == "top-left"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Checkpoints(out / "checkpoints").latest_epoch() == 2
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(RunError, match="already exists"):
        train_run(spec_file, DATA, TrainConfig(epochs=1, **FAST), out, progress=False, verbose=False)
    assert (out / "metrics.jsonl").read_text() == before  # nothing touched
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        train_run(spec_file, DATA, TrainConfig(epochs=0, **FAST), out, overwrite=True, progress=False, verbose=False)
    assert (out / "metrics.jsonl").read_text() == before  # a bad input with --overwrite loses nothing either
    train_run(spec_file, DATA, TrainConfig(epochs=1, **FAST), out, overwrite=True, progress=False, verbose=False)
    assert len(read_metrics(out)) == 1


@pytest.mark.slow
def test_load_run_predict(spec_file, tmp_path):
    out = tmp_path / "run"
    result = train_run(spec_file, DATA, TrainConfig(epochs=3, **FAST), out, progress=False, verbose=False)
    run = jaxcnn.load_run(out)
    assert run.class_names == DATA.class_names and run.model.spec.name == "tiny"
    probs = run.predict(DATA.test_images)
    assert probs.shape == (len(DATA.test_images), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float((probs.argmax(1) == DATA.test_labels).mean())
    best = max(m["test_accuracy"] for m in result.metrics)
    assert accuracy == pytest.approx(best, abs=1e-9)  # the best checkpoint, evaluated again
    with pytest.raises(ValueError, match="uint8"):
        run.predict(DATA.test_images.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, 8, 8, 1\)"):
        run.predict(np.zeros((2, 9, 9, 1), np.uint8))
    with pytest.raises(RunError, match="not a jaxcnn run directory"):
        load_run(tmp_path)


@pytest.mark.slow
def test_schedules_and_config_errors():
    for schedule in ("constant", "cosine", "warmup_cosine", "onecycle"):
        lr = make_schedule(TrainConfig(epochs=2, lr=0.1, schedule=schedule, warmup_epochs=0.5), 10)
        values = [float(lr(i)) for i in range(20)]
        assert max(values) <= 0.1 * (1 + 1e-6) and max(values) > 0.05  # float32 schedules
    assert float(make_schedule(TrainConfig(epochs=2, lr=0.1, schedule="cosine"), 10)(20)) < 1e-6
    with pytest.raises(ConfigError, match="optimizer must be one of adam, adamw, sgd"):
        TrainConfig(optimizer="adma")
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"label_smoothing must be a finite number in \[0, 1\)"):
            TrainConfig(label_smoothing=bad)
    assert chunk_plan(468) == (9, 52) and chunk_plan(7) == (7, 1)


@pytest.mark.slow
def test_cli_train_evaluate_predict_round_trip(tmp_path, spec_file):
    folder = write_class_folders(tmp_path / "imgs", quadrant_dataset(256, 64))
    out = tmp_path / "run"

    def jaxcnn_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jaxcnn", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)  # fmt: skip

    trained = jaxcnn_cli("train", str(spec_file), "--dataset", f"folder:{folder}", "--epochs", "3", "--batch-size",
                         "32", "--lr", "0.01", "--label-smoothing", "0.05", "--out", str(out),
                         "--no-progress")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "epoch   3/3" in trained.stdout
    assert json.loads((out / "config.json").read_text())["train"]["label_smoothing"] == 0.05
    again = jaxcnn_cli("train", str(spec_file), "--dataset", f"folder:{folder}", "--out", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    evaluated = jaxcnn_cli("evaluate", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "accuracy:" in evaluated.stdout and "confusion matrix" in evaluated.stdout
    image = sorted((folder / "test" / "bottom-right").glob("*.png"))[0]
    predicted = jaxcnn_cli("predict", str(out), str(image), str(tmp_path / "missing.png"))
    assert predicted.returncode == 1
    assert predicted.stdout.startswith(f"{image}: bottom-right (")
    assert "missing.png: no such file" in predicted.stderr


def test_bfloat16_compute_keeps_float32_parameters_and_learns(spec_file):
    result = train_run(spec_file, DATA, TrainConfig(epochs=3, compute_dtype="bfloat16", **FAST), None,
                       progress=False, verbose=False)  # fmt: skip
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(result.params))
    assert result.metrics[-1]["train_loss"] < 0.5 * result.metrics[0]["train_loss"]
    assert result.metrics[-1]["test_accuracy"] > 0.8


@pytest.mark.slow
def test_a_run_that_keeps_nothing_on_disk_does_not_import_orbax(spec_file):
    """orbax costs about 0.5 s to import; only runs with a run directory need it."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); from datasets import quadrant_dataset; "
        "from jaxcnn.runs import train_run; from jaxcnn.train import TrainConfig; "
        f"train_run({str(spec_file)!r}, quadrant_dataset(64, 32), TrainConfig(epochs=1, batch_size=32), None, "
        "progress=False, verbose=False); print('orbax' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.strip().endswith("False"), result.stdout + result.stderr


@pytest.mark.slow
def test_label_smoothing_loss_equals_numpy_cross_entropy_on_smoothed_targets(spec_file):
    model = jaxcnn.Model.from_file(spec_file)
    params = model.init(0)
    x = jax.numpy.asarray(DATA.train_images[:16], np.float32) / 255
    labels = jax.numpy.asarray(DATA.train_labels[:16])
    logits = np.asarray(model.apply(params, x), np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    classes = logits.shape[1]
    for alpha in (0.0, 0.1, 0.5):
        targets = np.full(logits.shape, alpha / classes)
        targets[np.arange(16), np.asarray(labels)] += 1 - alpha
        expected = -(targets * log_probs).sum(1).mean()
        loss, correct = batch_loss(model, params, x, labels, label_smoothing=alpha)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert int(correct) == int((logits.argmax(1) == np.asarray(labels)).sum())
    smoothed = batch_loss(model, params, x, labels, label_smoothing=0.1)[0]
    assert float(smoothed) != float(batch_loss(model, params, x, labels)[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_no_decay_biases_keeps_the_weight_decay_off_the_biases(optimizer):
    """With zero gradients the whole update is the weight decay's: on kernels always, on biases only by default."""
    from jaxcnn.optimizers import make_optimizer

    two = np.full((2,), 2.0, np.float32)
    params = {
        "conv1": {"kernel": np.full((3, 3, 1, 2), 2.0, np.float32), "bias": two},
        "bn1": {"scale": two, "bias": two},
    }
    zeros = jax.tree.map(np.zeros_like, params)
    for decay_biases in (True, False):
        config = TrainConfig(optimizer=optimizer, lr=0.1, weight_decay=0.5, momentum=0.0, decay_biases=decay_biases)
        tx = make_optimizer(config, 10)
        updates, _ = tx.update(zeros, tx.init(params), params)
        assert float(np.abs(updates["conv1"]["kernel"]).min()) > 0
        for layer, name in (("conv1", "bias"), ("bn1", "scale"), ("bn1", "bias")):  # biases and batch-norm weights
            assert (float(np.abs(updates[layer][name]).max()) > 0) == decay_biases


def test_the_moving_average_of_the_parameters_by_hand():
    from jaxcnn.optimizers import track_average

    tx = track_average(0.9)
    params = {"dense1": {"kernel": np.array([1.0, 2.0], np.float32)}}
    state = tx.init(params)
    updates = {"dense1": {"kernel": np.array([-0.5, 1.0], np.float32)}}
    same, state = tx.update(updates, state, params)
    assert same is updates  # the updates pass through unchanged
    np.testing.assert_allclose(state.ema["dense1"]["kernel"], [0.9 * 1 + 0.1 * 0.5, 0.9 * 2 + 0.1 * 3], rtol=1e-6)
    new_params = {"dense1": {"kernel": np.array([0.5, 3.0], np.float32)}}
    _, state = tx.update(updates, state, new_params)  # now at 0.0 and 4.0
    np.testing.assert_allclose(state.ema["dense1"]["kernel"], [0.9 * 0.95 + 0.1 * 0.0, 0.9 * 2.1 + 0.1 * 4.0],
                               rtol=1e-6)  # fmt: skip
    with pytest.raises(ConfigError, match=r"ema must be a finite number in \[0, 1\)"):
        TrainConfig(ema=1.0)


@pytest.mark.slow
def test_ema_is_tested_each_epoch_and_resumes_exactly(tmp_path):
    from jaxcnn.runs import resume_run
    from jaxcnn.train import average_params

    from datasets import quadrant_dataset, write_spec

    spec, data = write_spec(tmp_path / "tiny.json"), quadrant_dataset(256, 64)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.01, ema=0.9)
    whole = train_run(spec, data, config, None, progress=False, verbose=False)
    assert all(0 <= m["test_accuracy_ema"] <= 1 and m["test_loss_ema"] > 0 for m in whole.metrics)
    assert "test_accuracy_ema" not in train_run(spec, data, TrainConfig(epochs=1, batch_size=32), None,
                                                progress=False, verbose=False).metrics[0]  # fmt: skip
    train_run(spec, data, config, tmp_path / "part", progress=False, verbose=False, stop_after_epochs=1)
    resumed = resume_run(tmp_path / "part", dataset=data, progress=False, verbose=False)
    assert [m["test_loss_ema"] for m in resumed.metrics] == [m["test_loss_ema"] for m in whole.metrics]
    assert average_params(TrainConfig(), ()) is None
