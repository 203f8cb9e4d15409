"""Data augmentation: each operation exactly on small arrays, the draws per (seed, epoch), and runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import augment
from jaxcnn.config import Augmentation, ConfigError, TrainConfig
from jaxcnn.data import Preprocess
from jaxcnn.model import Model
from jaxcnn.runs import resume_run, train_run
from jaxcnn.spec import parse_spec
from jaxcnn.train import Trainer, gather_batch

from datasets import TINY_SPEC, quadrant_dataset, write_spec


def _images(n: int = 2, h: int = 5, w: int = 6, c: int = 1) -> np.ndarray:
    """uint8 images whose every pixel is distinct and nonzero: 1 + its flat index."""
    return (1 + np.arange(n * h * w * c) % 250).astype(np.uint8).reshape(n, h, w, c)


def test_translation_by_one_down_two_left_moves_every_pixel_where_it_should():
    x = _images()
    out = np.asarray(augment.translate(jnp.asarray(x), jnp.asarray([[1, -2], [0, 0]], jnp.int32), 2))
    expected = np.zeros_like(x[0])
    expected[1:, :-2] = x[0, :-1, 2:]  # out[y, x] = in[y - 1, x + 2]; the rest is zero fill
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1], x[1])  # a zero shift changes nothing


def test_translation_within_its_range_never_reads_outside_the_image():
    x = _images(4, 7, 7)
    shifts = jnp.asarray([[3, 3], [-3, -3], [3, -3], [-3, 3]], jnp.int32)
    out = np.asarray(augment.translate(jnp.asarray(x), shifts, 3))
    for k, (dy, dx) in enumerate(np.asarray(shifts)):
        kept = out[k][max(dy, 0) : 7 + min(dy, 0), max(dx, 0) : 7 + min(dx, 0)]
        np.testing.assert_array_equal(kept, x[k][max(-dy, 0) : 7 + min(-dy, 0), max(-dx, 0) : 7 + min(-dx, 0)])
        assert int(out[k].astype(np.int64).sum()) == int(kept.astype(np.int64).sum())  # zeros elsewhere


def test_flip_mirrors_only_the_chosen_images_and_is_its_own_inverse():
    x = jnp.asarray(_images(3))
    which = jnp.asarray([True, False, True])
    once = augment.flip(x, which)
    np.testing.assert_array_equal(np.asarray(once[0]), np.asarray(x[0])[:, ::-1])
    np.testing.assert_array_equal(np.asarray(once[1]), np.asarray(x[1]))
    np.testing.assert_array_equal(np.asarray(augment.flip(once, which)), np.asarray(x))


def test_erase_touches_only_its_square_clipped_at_the_edges():
    x = _images(2, 6, 6)
    out = np.asarray(augment.erase(jnp.asarray(x), jnp.asarray([[2, 3], [0, 5]], jnp.int32), 3))
    inside = np.zeros((2, 6, 6, 1), bool)
    inside[0, 1:4, 2:5] = True  # centre (2, 3), side 3: rows 1-3, columns 2-4
    inside[1, 0:2, 4:6] = True  # centre (0, 5): the square from (-1, 4), clipped to the image
    assert (out[inside] == 0).all()
    np.testing.assert_array_equal(out[~inside], x[~inside])


def test_draws_are_a_function_of_seed_and_epoch_and_differ_across_epochs():
    spec = Augmentation(translate=2, flip=True, erase=4)
    a, b = augment.draw(spec, 100, 28, 28, 0, 1), augment.draw(spec, 100, 28, 28, 0, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other_epoch, other_seed = augment.draw(spec, 100, 28, 28, 0, 2), augment.draw(spec, 100, 28, 28, 1, 1)
    assert not np.array_equal(a["shift"], other_epoch["shift"]) and not np.array_equal(a["shift"], other_seed["shift"])
    assert a["shift"].min() >= -2 and a["shift"].max() <= 2 and 20 < a["flip"].sum() < 80


def _trainer(augment_text: str, seed: int = 0) -> Trainer:
    data = quadrant_dataset(64, 16)
    model = Model(parse_spec(TINY_SPEC, "tiny.json"))
    config = TrainConfig(batch_size=16, seed=seed, augment=augment_text)
    return Trainer(model, config, Preprocess(), data.train_images, data.train_labels, data.test_images,
                   data.test_labels)  # fmt: skip


def test_augmentation_leaves_the_shuffle_alone_and_keeps_labels_with_their_images():
    plain, augmented = _trainer(""), _trainer("translate=1,flip,erase=2")
    plan = augmented.epoch_plan(3)
    np.testing.assert_array_equal(np.asarray(plain.epoch_plan(3)["index"]), np.asarray(plan["index"]))
    # Images that are one constant value per label: any flip keeps them, so the batch shows which
    # image came with which label.
    labels = np.arange(64, dtype=np.int32) % 4
    constant = np.repeat(labels.astype(np.uint8)[:, None, None, None] * 50 + 10, 8, axis=1).repeat(8, axis=2)
    flip_only = Augmentation(flip=True)
    flips = {"index": plan["index"], "flip": plan["flip"], "shift": plan["shift"], "centre": plan["centre"]}
    batch, idx = gather_batch(jnp.asarray(constant), flips, jnp.int32(16), 16, flip_only)
    np.testing.assert_array_equal(np.asarray(batch)[:, 0, 0, 0], labels[np.asarray(idx)] * 50 + 10)


def test_batches_differ_across_steps_and_repeat_per_seed():
    t = _trainer("translate=2,erase=3")
    x = jnp.asarray(t.train_images)
    plan = t.epoch_plan(1)
    first, _ = gather_batch(x, plan, jnp.int32(0), 16, Augmentation(translate=2, erase=3))
    again, _ = gather_batch(x, _trainer("translate=2,erase=3").epoch_plan(1), jnp.int32(0), 16,
                            Augmentation(translate=2, erase=3))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    shift_0, shift_1 = np.asarray(plan["shift"][:16]), np.asarray(plan["shift"][16:32])
    assert not np.array_equal(shift_0, shift_1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rotate=5", "unknown 'rotate'"),
        ("translate", "translate needs a whole number of pixels from 1 to 64"),
        ("translate=0", "from 1 to 64"),
        ("translate=²", "from 1 to 64"),  # issue 27 (13): "²".isdigit() is true, int("²") fails
        ("erase=٣", "from 1 to 64"),
        ("flip=2", "flip takes no value"),
        ("flip,flip", "'flip' is given twice"),
    ],
)
def test_bad_augment_specs_are_config_errors(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(augment=text)


def test_augment_spec_has_one_spelling():
    assert TrainConfig(augment=" erase=4, flip ,translate=2").augment == "translate=2,flip,erase=4"
    assert TrainConfig(augment="").augmentation is None
    assert TrainConfig(augment="flip").augmentation == Augmentation(flip=True)


@pytest.mark.slow
def test_resume_with_augmentation_equals_an_uninterrupted_run(tmp_path):
    spec, data = write_spec(tmp_path / "tiny.json"), quadrant_dataset(256, 64)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.01, augment="translate=1,erase=2")
    whole = train_run(spec, data, config, None, progress=False, verbose=False)
    train_run(spec, data, config, tmp_path / "part", progress=False, verbose=False, stop_after_epochs=1)
    resumed = resume_run(tmp_path / "part", dataset=data, progress=False, verbose=False)
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in whole.metrics]
    leaves = zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True)
    assert all(np.array_equal(a, b) for a, b in leaves)
    plain = train_run(spec, data, TrainConfig(epochs=1, batch_size=32, lr=0.01), None, progress=False, verbose=False)
    assert plain.metrics[0]["train_loss"] != whole.metrics[0]["train_loss"]  # augmentation changed what was fed


@pytest.mark.slow
def test_show_draws_what_an_augmented_run_was_fed(tmp_path):
    from PIL import Image

    from jaxcnn.pictures import run_pictures

    from datasets import write_class_folders

    images = write_class_folders(tmp_path / "imgs", quadrant_dataset(64, 16))
    run = tmp_path / "run"
    train_run(write_spec(tmp_path / "tiny.json"), f"folder:{images}", TrainConfig(epochs=1, batch_size=32,
              augment="translate=2,erase=3"), run, progress=False, verbose=False)  # fmt: skip
    written = run_pictures(run, tmp_path / "pictures")
    with Image.open(written["augmented"]) as picture:
        assert picture.size[0] > 400 and picture.size[1] > 150  # two rows of eight images
    plain = tmp_path / "plain"
    train_run(write_spec(tmp_path / "tiny.json"), f"folder:{images}", TrainConfig(epochs=1, batch_size=32), plain,
              progress=False, verbose=False)  # fmt: skip
    assert "augmented" not in run_pictures(plain, tmp_path / "plain_pictures")


def test_tta_needs_flip_and_averages_each_image_with_its_mirror():
    from jaxcnn.train import make_eval_batch

    with pytest.raises(ConfigError, match="tta mirrors the test images, so it needs flip"):
        TrainConfig(tta=True, augment="translate=2")
    model = Model(parse_spec(TINY_SPEC, "tiny.json"))
    params = model.init(3)
    data = quadrant_dataset(16, 8)
    images, labels, mask = data.test_images, data.test_labels, np.ones(8, np.float32)
    (loss_sum, correct), pred = make_eval_batch(model, Preprocess(), tta=True)(params, {}, images, labels, mask)
    x = jnp.asarray(images, jnp.float32) / 255
    mean = (jax.nn.softmax(model.apply(params, x)) + jax.nn.softmax(model.apply(params, x[:, :, ::-1]))) / 2
    probs = np.asarray(mean, np.float64)
    np.testing.assert_allclose(float(loss_sum), -np.log(probs[np.arange(8), labels]).sum(), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(pred), probs.argmax(axis=1))
    assert int(correct) == int((probs.argmax(axis=1) == labels).sum())
    (plain_loss, _), _ = make_eval_batch(model, Preprocess())(params, {}, images, labels, mask)
    assert float(plain_loss) != pytest.approx(float(loss_sum))  # the mirror images changed the answer


@pytest.mark.slow
def test_a_tta_run_predicts_the_mean_of_each_image_and_its_mirror(tmp_path):
    from jaxcnn.runs import load_run

    data = quadrant_dataset(64, 16)
    config = TrainConfig(epochs=1, batch_size=32, augment="flip", tta=True)
    train_run(write_spec(tmp_path / "tiny.json"), data, config, tmp_path / "run", progress=False, verbose=False)
    run = load_run(tmp_path / "run")
    x = jnp.asarray(data.test_images, jnp.float32) / 255
    expected = (run.model.predict(run.params, x) + run.model.predict(run.params, x[:, :, ::-1])) / 2
    np.testing.assert_allclose(run.predict(data.test_images), np.asarray(expected), atol=1e-6)
