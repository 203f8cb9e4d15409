"""The streaming loader (jaxcnn.streaming): the resize policy against explicit PIL operations, batches that
depend on the seed and the epoch alone (not on the worker count), each process's share of every batch, every
test image once in order, and an unreadable file that stops the epoch with its name."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn.errors import DataError
from jaxcnn.prepared import prepare_dataset
from jaxcnn.stream_data import StreamingData
from jaxcnn.streaming import EVAL_CROP_FRACTION, FolderImages, RecordImages, centre_view, loader, random_view

from datasets import quadrant_dataset


def test_an_image_of_the_networks_size_is_used_as_it_is():
    image = np.random.default_rng(0).integers(0, 256, (8, 6, 3)).astype(np.uint8)
    assert centre_view(image, (8, 6, 3)) is image
    assert random_view(image, (8, 6, 3), np.random.default_rng(1), "random-resized") is image


def test_evaluation_scales_the_shorter_side_and_cuts_the_centre():
    """A 40x60 photo for a 16x16 network: the shorter side (40) becomes 16 / 0.875 = 18.29, so the central
    16/18.29 of it, 35x35 pixels of the original, are resized to 16x16, as torchvision's Resize + CenterCrop."""
    image = np.random.default_rng(2).integers(0, 256, (40, 60, 3)).astype(np.uint8)
    side = 40 * EVAL_CROP_FRACTION
    box = ((60 - side) / 2, (40 - side) / 2, (60 + side) / 2, (40 + side) / 2)
    want = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR, box=box))
    np.testing.assert_array_equal(centre_view(image, (16, 16, 3)), want)
    grey = centre_view(image, (16, 16, 1))
    assert grey.shape == (16, 16, 1)
    np.testing.assert_array_equal(grey[..., 0], np.asarray(Image.fromarray(want).convert("L")))


def test_training_crops_are_random_within_torchvisions_ranges():
    image = np.arange(50 * 80 * 3, dtype=np.uint32).reshape(50, 80, 3).astype(np.uint8)
    views = [random_view(image, (12, 12, 3), np.random.default_rng(k), "random-resized") for k in range(20)]
    assert all(v.shape == (12, 12, 3) for v in views)
    assert len({v.tobytes() for v in views}) == 20  # each draw its own crop
    first, again = (random_view(image, (12, 12, 3), np.random.default_rng(5), "shorter-side") for _ in range(2))
    np.testing.assert_array_equal(first, again)  # a function of the generator alone
    with pytest.raises(ValueError, match="crop must be one of random-resized, shorter-side"):
        loader(FolderImages(()), (8, 8, 1), 4, training=True, crop="zoom")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A prepared set of made-up images, and the images."""
    data = quadrant_dataset(200, 50)
    return prepare_dataset(data, tmp_path_factory.mktemp("prepared") / "set"), data


def batches_of(images, **options) -> list[dict[str, np.ndarray]]:
    return [{k: np.array(v) for k, v in batch.items()} for batch in loader(images, (8, 8, 1), 32, **options)]


def test_training_batches_depend_on_the_seed_and_epoch_not_on_the_workers(records):
    prepared, data = records
    images = RecordImages(prepared.splits["train"], str(prepared.root))
    alone = batches_of(images, training=True, seed=3, epoch=2)
    assert len(alone) == 200 // 32  # the last partial batch is dropped
    order = np.random.default_rng([3, 2, 0x5EED]).permutation(200)
    for b, batch in enumerate(alone):
        chosen = order[b * 32 : (b + 1) * 32]
        np.testing.assert_array_equal(batch["image"], data.train_images[chosen])
        np.testing.assert_array_equal(batch["label"], data.train_labels[chosen])
    with_workers = batches_of(images, training=True, seed=3, epoch=2, workers=2)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(alone, with_workers, strict=True))
    other = batches_of(images, training=True, seed=3, epoch=3)
    assert not np.array_equal(other[0]["label"], alone[0]["label"])


def test_processes_share_every_batch_and_evaluation_reads_every_image_once(records):
    prepared, data = records
    images = RecordImages(prepared.splits["train"], str(prepared.root))
    whole = batches_of(images, training=True, seed=1)
    parts = [batches_of(images, training=True, seed=1, process_index=p, process_count=2) for p in range(2)]
    for b, batch in enumerate(whole):
        joined = np.concatenate([parts[0][b]["image"], parts[1][b]["image"]])
        np.testing.assert_array_equal(joined, batch["image"])
    test = batches_of(RecordImages(prepared.splits["test"], str(prepared.root)), training=False)
    assert [len(b["label"]) for b in test] == [32, 18]
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in test]), data.test_images)


def test_a_folder_of_photos_streams_views_of_the_networks_size(tmp_path):
    files = []
    for i, size in enumerate(((30, 20), (9, 9), (8, 8), (64, 48))):
        pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        files.append((str(path), i % 2))
    images = FolderImages(tuple(files))
    test = batches_of(images, training=False)
    assert test[0]["image"].shape == (4, 8, 8, 1) and test[0]["label"].tolist() == [0, 1, 0, 1]
    exact = np.asarray(Image.open(files[2][0]).convert("L"))  # the 8x8 one, as it is
    np.testing.assert_array_equal(test[0]["image"][2, :, :, 0], exact)


def test_an_unreadable_file_stops_the_epoch_with_its_name(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(buffer, format="JPEG")
    bad.write_bytes(buffer.getvalue()[: math.floor(len(buffer.getvalue()) / 3)])
    images = FolderImages(((str(good), 0), (str(bad), 1), (str(good), 0), (str(good), 1)))
    for workers in (0, 2):
        with pytest.raises(Exception) as caught:
            batches_of(images, training=False, workers=workers)
        assert "bad.jpg" in str(caught.value), workers
    with pytest.raises(DataError, match=r"bad\.jpg: not a readable PNG, JPEG or WebP image"):
        batches_of(images, training=False)
    assert Path(bad).exists()


def test_normalising_a_streamed_set_measures_what_the_network_sees(records, tmp_path, monkeypatch):
    """A set of one size gets exactly the in-memory figures; photos of many sizes are measured at the network's
    size (evaluation's views); a set larger than NORMALIZE_SAMPLE on that many evenly spaced images."""
    from jaxcnn import stream_data
    from jaxcnn.preprocess import plan_preprocess

    prepared, data = records
    streamed = StreamingData("q", "made in tests", data.class_names, (8, 8, 1),
                             RecordImages(prepared.splits["train"], str(prepared.root)), None)  # fmt: skip
    in_memory = plan_preprocess(data, (8, 8, 1), normalize=True)
    assert stream_data.measured_normalization(streamed, (8, 8, 1)) == in_memory
    monkeypatch.setattr(stream_data, "NORMALIZE_SAMPLE", 5)  # images 0, 50, 100, 149 and 199 of 200
    sampled = stream_data.measured_normalization(streamed, (8, 8, 1), workers=2)
    chosen = [0, 50, 100, 149, 199]
    subset = dataclasses.replace(data, train_images=data.train_images[chosen], train_labels=data.train_labels[chosen])
    assert sampled == plan_preprocess(subset, (8, 8, 1), normalize=True)
    files = []
    for i, size in enumerate(((30, 20), (9, 9), (64, 48))):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)).save(path)
        files.append((str(path), 0))
    photos = StreamingData("p", "made in tests", ("a",), None, FolderImages(tuple(files)), None)
    views = np.stack([centre_view(np.asarray(Image.open(f)), (8, 8, 3)) for f, _ in files])
    want = plan_preprocess(dataclasses.replace(subset, train_images=views, train_labels=np.zeros(3, np.int32)),
                           (8, 8, 3), normalize=True)  # fmt: skip
    assert stream_data.measured_normalization(photos, (8, 8, 3)) == want


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_keeps_the_view(tmp_path):
    """A 400x300 JPEG for an 8x8 network decodes at 1/8 (50x38, both sides at least DRAFT_MARGIN x 8); the
        network's view of it is close to the full decode's (libjpeg's scaling averages 8x8 blocks where PIL's resize
    filters: they differ by a few levels at this pattern's hard edges, by at most one on a 12-megapixel photo for a
    32x32 network); a PNG is decoded whole."""
    from jaxcnn.streaming import DRAFT_MARGIN, decoded

    small = np.random.default_rng(0).integers(0, 256, (6, 8, 3)).astype(np.uint8)
    photo = Image.fromarray(small).resize((400, 300), Image.Resampling.BICUBIC)
    for suffix in ("jpg", "png"):
        photo.save(tmp_path / f"photo.{suffix}")
    jpeg, png = (FolderImages(((str(tmp_path / f"photo.{s}"), 0),))[0] for s in ("jpg", "png"))
    reduced, _ = decoded(jpeg, (8, 8, 3))
    whole, _ = decoded(jpeg)
    assert reduced.shape == (38, 50, 3) and min(reduced.shape[:2]) >= DRAFT_MARGIN * 8 and whole.shape == (300, 400, 3)
    difference = centre_view(reduced, (8, 8, 3)).astype(int) - centre_view(whole, (8, 8, 3))
    assert np.abs(difference).mean() <= 4 and np.abs(difference).max() <= 16  # 2.8 and 11 at its hard edges
    assert decoded(png, (8, 8, 3))[0].shape == (300, 400, 3)
