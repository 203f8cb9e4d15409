"""jaxcnn prepare: ArrayRecord shards and a manifest that read back exactly what went in, a changed shard
refused on open, and every unreadable image of a folder found and listed (or left out with --skip-bad-images)
before anything is written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn.errors import DataError
from jaxcnn.images import decode_image
from jaxcnn.prepared import MANIFEST, Prepared, decode_record, encode_record, prepare

from datasets import quadrant_dataset


def test_a_built_in_set_reads_back_image_for_image(tmp_path, monkeypatch):
    data = quadrant_dataset(300, 120)
    monkeypatch.setattr("jaxcnn.data.load_dataset", lambda name, data_dir=None: data)
    monkeypatch.setattr("jaxcnn.prepared.SHARD_BYTES", 5000)  # several shards for a small set
    prepared = prepare("quadrants", tmp_path / "prepared")
    assert prepared.class_names == data.class_names and prepared.image_shape == (8, 8, 1)
    assert prepared.splits["train"].count == 300 and len(prepared.splits["train"].shards) == 4
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):  # fmt: skip
        source = prepared.splits[split].source()
        assert len(source) == len(images)
        for i in range(len(images)):
            image, label = decode_record(source[i], "test")
            assert np.array_equal(image, images[i]) and label == labels[i]
    assert not list(tmp_path.glob(".prepared*"))  # no staging folder left


def test_a_changed_or_truncated_shard_is_refused_when_opened(tmp_path, monkeypatch):
    monkeypatch.setattr("jaxcnn.data.load_dataset", lambda name, data_dir=None: quadrant_dataset(40, 20))
    prepared = prepare("quadrants", tmp_path / "prepared")
    shard = prepared.splits["test"].shards[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="its sha256 differs from the manifest's"):
        Prepared.open(tmp_path / "prepared")
    shard.write_bytes(bytes(raw[:-10]))
    with pytest.raises(DataError, match="missing or of another size than the manifest records"):
        Prepared.open(tmp_path / "prepared")
    with pytest.raises(DataError, match="not a prepared data set"):
        Prepared.open(tmp_path)


def photo_bytes(size: tuple[int, int], kind: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def photo_folder(root: Path, bad: dict[str, bytes] | None = None) -> dict[Path, tuple[str, str]]:
    """Class folders of photos of mixed sizes and formats (PNG, JPEG, WebP); returns each file's split, class."""
    made = {}
    kinds = (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"))
    for i in range(18):
        split, label = ("train", "test")[i % 3 == 0], ("cat", "dog")[i % 2]
        suffix, kind = kinds[i % 3]
        path = root / split / label / f"{i:03d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo_bytes((20 + 7 * i, 15 + 3 * i), kind, i))
        made[path] = (split, label)
    for name, content in (bad or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return made


def test_a_folder_of_photos_of_many_sizes_is_kept_as_its_files(tmp_path):
    files = photo_folder(tmp_path / "photos")
    prepared = prepare(f"folder:{tmp_path / 'photos'}", tmp_path / "prepared", workers=2)
    assert prepared.image_shape is None and prepared.class_names == ("cat", "dog")
    for split in ("train", "test"):
        mine = sorted(path for path, (s, _) in files.items() if s == split)
        source = prepared.splits[split].source()
        assert len(source) == len(mine) == prepared.splits[split].count
        for i, path in enumerate(mine):
            image, label = decode_record(source[i], "test")
            assert np.array_equal(image, decode_image(path.read_bytes(), str(path)))  # the file, as predict reads it
            assert prepared.class_names[label] == files[path][1]


BAD = {
    "train/cat/cut.jpg": photo_bytes((40, 30), "JPEG", 99)[:200],
    "train/dog/words.png": b"this is not an image at all",
    "test/cat/empty.webp": b"",
}


def test_every_unreadable_image_is_listed_and_nothing_is_written(tmp_path, capsys):
    photo_folder(tmp_path / "photos", BAD)
    out = tmp_path / "prepared"
    assert cli.main(["prepare", f"folder:{tmp_path / 'photos'}", "--out", str(out), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "3 of 21 images cannot be read" in err and "--skip-bad-images" in err
    for name in BAD:
        assert name.rsplit("/", 1)[1] in err
    assert not out.exists() and not list(tmp_path.glob(".prepared*"))


def test_skip_bad_images_leaves_them_out_and_lists_them(tmp_path, capsys):
    photo_folder(tmp_path / "photos", BAD)
    out = tmp_path / "prepared"
    assert cli.main(["prepare", f"folder:{tmp_path / 'photos'}", "--out", str(out), "--skip-bad-images"]) == 0
    assert "left out 3 unreadable images" in capsys.readouterr().out
    prepared = Prepared.open(out)
    assert prepared.splits["train"].count + prepared.splits["test"].count == 18
    assert sorted(Path(p).name for p in prepared.skipped) == ["cut.jpg", "empty.webp", "words.png"]
    assert json.loads((out / MANIFEST).read_text())["skipped"] == prepared.skipped
    assert cli.main(["prepare", f"folder:{tmp_path / 'photos'}", "--out", str(out)]) == 1  # not over it
    assert "already exists and is not empty" in capsys.readouterr().err


def test_a_record_that_is_not_jaxcnn_s_is_a_clear_error():
    with pytest.raises(DataError, match="where: not a jaxcnn record"):
        decode_record(b"something else", "where")
    image, label = decode_record(encode_record(3, pixels=np.arange(24, dtype=np.uint8).reshape(2, 4, 3)), "x")
    assert label == 3 and image.shape == (2, 4, 3) and image[1, 3, 2] == 23


def test_a_fifo_among_the_photos_is_listed_not_waited_on(tmp_path, capsys):
    import os

    photo_folder(tmp_path / "photos")
    os.mkfifo(tmp_path / "photos" / "train" / "cat" / "pipe.png")
    out = tmp_path / "prepared"
    assert cli.main(["prepare", f"folder:{tmp_path / 'photos'}", "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "1 of 19 images cannot be read" in err and "pipe.png: is not a regular file (a FIFO" in err
    from jaxcnn.streaming import FolderImages

    with pytest.raises(DataError, match=r"pipe\.png: is not a regular file"):
        FolderImages(((str(tmp_path / "photos" / "train" / "cat" / "pipe.png"), 0),))[0]
