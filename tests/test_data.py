"""Data loading on tiny generated files: IDX, CIFAR-10 binary, class folders, checksums, cache."""

from __future__ import annotations

import tarfile
import time

import numpy as np
import pytest

from jaxcnn import data as D
from jaxcnn import downloads, images
from jaxcnn.data import DataError, confusion_matrix, load_dataset, plan_preprocess, read_idx

from datasets import quadrant_dataset, write_cifar_binary, write_class_folders, write_idx, write_mnist_files


@pytest.fixture
def offline_mnist(tmp_path, monkeypatch):
    """A tiny data folder laid out like ../shared/data, with checksums recorded for its files."""
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    folder = tmp_path / "data" / "mnist"
    arrays = write_mnist_files(folder, 20, 7)
    records = {f: ("https://example.invalid/" + f, downloads.sha256_of(folder / f)) for f in D.IDX_FILES.values()}
    monkeypatch.setattr(downloads, "recorded_checksums", lambda name: records)
    return tmp_path / "data", arrays


def test_read_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i.gz", images), 3), images)


def test_idx_truncated_bad_magic_and_not_gzip(tmp_path):
    path = write_idx(tmp_path / "i.gz", np.zeros((4, 5, 5), np.uint8))
    raw = __import__("gzip").decompress(path.read_bytes())
    (tmp_path / "short.gz").write_bytes(__import__("gzip").compress(raw[:-7]))
    with pytest.raises(DataError, match=r"short.gz: truncated or padded: the header promises 4x5x5 = 100 bytes"):
        read_idx(tmp_path / "short.gz", 3)
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(path, 1)
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"plain\.gz: not a readable gzip file"):
        read_idx(tmp_path / "plain.gz", 3)


def test_offline_load_verifies_and_caches(offline_mnist):
    folder, arrays = offline_mnist
    data = load_dataset("mnist", folder)
    assert data.train_images.shape == (20, 28, 28, 1) and data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])
    assert data.class_names == tuple("0123456789")
    assert "sha256 verified" in data.source
    again = load_dataset("mnist", folder)
    np.testing.assert_array_equal(again.train_images, data.train_images)
    assert list((D.cache_dir() / "arrays").glob("mnist-*.npz"))


def test_env_var_is_the_offline_option(offline_mnist, monkeypatch):
    folder, _ = offline_mnist
    monkeypatch.setenv(D.DATA_DIR_ENV, str(folder))
    assert load_dataset("mnist").train_images.shape[0] == 20


def test_corrupt_file_names_file_and_both_checksums(offline_mnist):
    folder, _ = offline_mnist
    target = folder / "mnist" / "t10k-labels-idx1-ubyte.gz"
    expected = downloads.sha256_of(target)
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", folder)
    message = str(info.value)
    assert str(target) in message and expected in message and downloads.sha256_of(target) in message
    assert "replace it with the original" in message


def test_missing_file_and_missing_folder(offline_mnist):
    folder, _ = offline_mnist
    (folder / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: missing"):
        load_dataset("mnist", folder)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", folder / "nowhere")


def test_cache_hit_is_fast_and_checksums_still_checked(offline_mnist):
    folder, _ = offline_mnist
    load_dataset("mnist", folder)
    start = time.perf_counter()
    load_dataset("mnist", folder)
    assert time.perf_counter() - start < 1.0
    (folder / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="sha256 is"):
        load_dataset("mnist", folder)


def test_cifar10_binary_decodes_chw_to_hwc(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    expected = write_cifar_binary(folder / D.CIFAR10_BINARY)
    monkeypatch.setattr(
        downloads,
        "recorded_checksums",
        lambda name: {D.CIFAR10_BINARY: ("u", downloads.sha256_of(folder / D.CIFAR10_BINARY))},
    )
    data = load_dataset("cifar10", tmp_path / "data")
    assert data.train_images.shape == (15, 32, 32, 3) and data.test_images.shape == (3, 32, 32, 3)
    for key, value in expected.items():
        np.testing.assert_array_equal(getattr(data, key), value)
    assert data.class_names[0] == "airplane"


def test_cifar10_truncated_batch(tmp_path):
    path = tmp_path / "c.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 100
        tar.addfile(info, __import__("io").BytesIO(b"\0" * 100))
    with pytest.raises(DataError, match="truncated"):
        D.read_cifar10_binary(path)


def test_class_folders_dir_and_tar(tmp_path):
    source = quadrant_dataset(12, 8)
    root = write_class_folders(tmp_path / "imgs", source)
    data = load_dataset(f"folder:{root}")
    assert data.class_names == tuple(sorted(source.class_names))
    assert data.train_images.shape == (12, 8, 8, 1)
    by_name = {n: i for i, n in enumerate(data.class_names)}
    # Every image keeps its own label: compare as (image bytes -> class name) sets.
    expected = {
        (img.tobytes(), source.class_names[k]) for img, k in zip(source.train_images, source.train_labels, strict=True)
    }
    got = {(img.tobytes(), data.class_names[k]) for img, k in zip(data.train_images, data.train_labels, strict=True)}
    assert got == expected and by_name
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="imgs")
    from_tar = load_dataset(f"folder:{archive}")
    np.testing.assert_array_equal(np.sort(from_tar.train_labels), np.sort(data.train_labels))


def test_class_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'none'}")
    root = write_class_folders(tmp_path / "imgs", quadrant_dataset(4, 2))
    from PIL import Image

    odd = sorted((root / "train").iterdir())[-1] / "odd.png"
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(odd)
    with pytest.raises(DataError, match="all images of a data set must have one size"):
        load_dataset(f"folder:{root}")
    odd.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"odd\.png: not a readable PNG, JPEG or WebP"):
        load_dataset(f"folder:{root}")


def test_other_tfds_sets_need_tensorflow_and_say_so():
    pytest.importorskip("tensorflow_datasets")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"pip install 'jaxcnn\[tensorflow\]'"):
            load_dataset("kmnist")
    else:
        pytest.skip("TensorFlow is installed here")


def test_preprocess_fit_and_errors():
    data = quadrant_dataset(16, 4)
    with pytest.raises(DataError, match="Pass --pad"):
        plan_preprocess(data, (12, 12, 1))
    with pytest.raises(DataError, match="Pass --grey-to-rgb"):
        plan_preprocess(data, (8, 8, 3))
    with pytest.raises(DataError, match="images are 8x8x1 but the spec takes 4x4x1"):
        plan_preprocess(data, (4, 4, 1), pad=True)
    pre = plan_preprocess(data, (12, 12, 3), pad=True, grey_to_rgb=True, normalize=True)
    fitted = pre.fit(data.train_images)
    assert fitted.shape == (16, 12, 12, 3)
    np.testing.assert_array_equal(fitted[:, 2:10, 2:10, 1], data.train_images[..., 0])
    assert fitted[:, :2].max() == 0
    x = pre.to_float(fitted)
    assert x.dtype == np.float32
    mean = data.train_images.mean() / 255
    np.testing.assert_allclose(np.asarray(pre.mean), [mean] * 3, rtol=1e-6)
    assert D.Preprocess.from_dict(pre.to_dict()) == pre
    plain = plan_preprocess(data, (8, 8, 1))
    np.testing.assert_allclose(plain.to_float(data.train_images), data.train_images / 255, rtol=1e-6)


def test_channel_mean_std_from_integer_sums_equals_numpy():
    images = np.random.default_rng(0).integers(0, 256, (50, 7, 5, 3), dtype=np.uint8)
    images[..., 2] //= 7  # channels with different spreads
    mean, std = D.channel_mean_std(images)
    pixels = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-12)
    assert std[2] < std[0] / 3
    extremes = np.zeros((2, 64, 64, 1), np.uint8)
    extremes[1] = 255  # the largest squares, 255**2, summed over 4096 pixels: no overflow
    np.testing.assert_allclose(D.channel_mean_std(extremes), ([0.5], [0.5]), rtol=1e-15)


def test_confusion_matrix_counts():
    counts = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_recorded_checksums_equal_tensorflow_datasets_own_parse(name):
    from tensorflow_datasets.core.download import checksums

    infos = checksums.load_url_infos(downloads.checksum_record_path(name))
    expected = {str(info.filename): (url, str(info.checksum)) for url, info in infos.items()}
    assert downloads.recorded_checksums(name) == expected
    assert len(expected) >= 1


def test_reading_checksums_does_not_import_tensorflow_datasets():
    import subprocess
    import sys

    code = (
        "import sys; from jaxcnn.downloads import recorded_checksums; recorded_checksums('mnist'); "
        "print('tensorflow_datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_dataset_refuses_float_images_and_unequal_label_counts():
    images, labels = np.zeros((4, 5, 5, 1), np.uint8), np.zeros(4, np.int32)
    with pytest.raises(DataError, match=r"train_images must be uint8 \(0-255\).*got float32"):
        D.Dataset("mine", images.astype(np.float32), labels, images, labels, ("a",), "memory")
    with pytest.raises(DataError, match="4 test images but 3 labels"):
        D.Dataset("mine", images, labels, images, labels[:3], ("a",), "memory")


@pytest.mark.parametrize("damage", ["truncated", "bad crc"])
def test_damaged_array_cache_is_discarded_and_rebuilt(offline_mnist, capfd, damage):
    folder, arrays = offline_mnist
    load_dataset("mnist", folder)
    (cached,) = (D.cache_dir() / "arrays").glob("mnist-*.npz")
    raw = bytearray(cached.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # one byte inside the stored train images: the zip member's CRC no longer matches
        raw[len(raw) // 3] ^= 0xFF
    cached.write_bytes(bytes(raw))
    capfd.readouterr()
    data = load_dataset("mnist", folder)
    np.testing.assert_array_equal(data.train_images[..., 0], arrays["train_images"])
    assert "cached arrays are damaged" in capfd.readouterr().err
    with np.load(cached) as z:  # rewritten whole
        np.testing.assert_array_equal(z["train_images"][..., 0], arrays["train_images"])


def test_unwritable_cache_folder_still_loads(offline_mnist, monkeypatch, tmp_path, capfd):
    folder, arrays = offline_mnist
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(blocker / "cache"))
    data = load_dataset("mnist", folder)
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])
    assert "cannot cache the decoded arrays" in capfd.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_home_without_a_cache_folder_falls_back(monkeypatch):
    monkeypatch.delenv(D.CACHE_DIR_ENV, raising=False)

    def no_home() -> None:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(D.Path, "home", staticmethod(no_home))
    assert D.cache_dir().name.startswith("jaxcnn-cache-")


def _class_folder_set(root, extra) -> None:
    """A valid two-class folder set plus one odd entry made by ``extra(folder)`` among the train images."""
    write_class_folders(root, quadrant_dataset(8, 4))
    extra(root / "train" / "top-left")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda f: (f / "looks_like.png").mkdir(), "looks_like.png: is a folder, not an image file"),
        (lambda f: (f / "gone.png").symlink_to(f / "nowhere.png"), "gone.png: a symbolic link to nothing"),
        (lambda f: __import__("os").mkfifo(f / "pipe.png"), "pipe.png: is not a regular file"),
    ],
    ids=["folder", "broken symlink", "fifo"],
)
def test_odd_entries_in_a_folder_data_set_are_clear_errors(tmp_path, make, fragment):
    _class_folder_set(tmp_path / "set", make)
    with pytest.raises(DataError, match=fragment.replace(".", r"\.")):
        load_dataset(f"folder:{tmp_path / 'set'}")


def test_oversized_image_files_are_refused_before_reading(tmp_path, monkeypatch):
    _class_folder_set(tmp_path / "set", lambda f: (f / "big.png").write_bytes(b"\0" * 2048))
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1024)
    with pytest.raises(DataError, match=r"big\.png: 2,048 bytes, more than the 1,024"):
        load_dataset(f"folder:{tmp_path / 'set'}")


@pytest.mark.parametrize("pixels", [10 * 10, 8 * 8], ids=["over twice the limit", "over the limit"])
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, pixels):
    from PIL import Image

    side = int(pixels**0.5)
    Image.fromarray(np.zeros((side, side), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(DataError, match=r"bomb\.png: more than 50 pixels"):
        D.read_image_file(tmp_path / "bomb.png", (4, 4, 1))


@pytest.mark.slow
def test_resume_and_evaluate_find_the_offline_folder_the_run_used(offline_mnist, tmp_path, capsys):
    from jaxcnn import cli
    from jaxcnn.runs import read_config, resume_run, train_run
    from jaxcnn.train import TrainConfig

    from datasets import write_spec

    folder, _ = offline_mnist
    spec = {"format": "jaxcnn.spec/1", "input": [28, 28, 1], "layers": [{"type": "flatten"}, {"type": "dense",
            "units": 10}]}  # fmt: skip
    out = tmp_path / "run"
    train_run(write_spec(tmp_path / "s.json", spec), "mnist", TrainConfig(epochs=1, batch_size=4), out,
              data_dir=folder, progress=False, verbose=False)  # fmt: skip
    assert read_config(out)["dataset"]["data_dir"] == str(folder.absolute())
    result = resume_run(out, epochs=2, progress=False, verbose=False)  # no --data-dir, no JAXCNN_DATA_DIR
    assert [m["epoch"] for m in result.metrics] == [1, 2]
    assert cli.main(["evaluate", str(out)]) == 0
    assert "accuracy:" in capsys.readouterr().out
