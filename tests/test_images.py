"""jaxcnn.images, the one image decoder: EXIF orientation, transparency on black, 16-bit grey, and the same
pixels from ``predict``'s reader, folder data sets and raw bytes (the explorer's upload)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import load_dataset
from jaxcnn.images import decode_image, fitted_image, read_image_file

# A 6x4 grey "digit": an asymmetric stroke, so every rotation and mirror of it is a different array.
UPRIGHT = np.zeros((6, 4), np.uint8)
UPRIGHT[0, :] = 255
UPRIGHT[:, 0] = 200
UPRIGHT[5, 3] = 90


def with_orientation(upright: np.ndarray, orientation: int) -> Image.Image:
    """A JPEG-free (lossless) image whose stored pixels need EXIF ``orientation`` to show ``upright``."""
    image = Image.fromarray(upright)
    stored = {  # the inverse of what the viewer does for each tag
        1: image, 2: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 3: image.transpose(Image.Transpose.ROTATE_180),
        6: image.transpose(Image.Transpose.ROTATE_90), 8: image.transpose(Image.Transpose.ROTATE_270),
    }[orientation]  # fmt: skip
    return stored


def save_with_exif(image: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [1, 2, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    """Issue 27 (4): before, a phone photo turned on its side reached the network on its side."""
    path = tmp_path / "digit.png"
    save_with_exif(with_orientation(UPRIGHT, orientation), path, orientation)
    np.testing.assert_array_equal(read_image_file(path, (6, 4, 1))[..., 0], UPRIGHT)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "digit.png")[..., 0], UPRIGHT)


def transparent_files(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Files whose ink is drawn with transparency, and the grey image each must read as (ink on black)."""
    ink = np.zeros((6, 4), np.uint8)
    ink[1:5, 1] = 255
    ink[2, 2] = 128  # half-transparent white: half grey on black
    files = {}
    rgba = np.zeros((6, 4, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, the ink only in the alpha channel
    rgba[..., 3] = ink
    Image.fromarray(rgba, "RGBA").save(folder / "alpha_ink.png")
    files["alpha_ink"] = (folder / "alpha_ink.png", ink)
    la = np.stack([np.full((6, 4), 255, np.uint8), ink], -1)
    Image.fromarray(la, "LA").save(folder / "grey_alpha.png")
    files["grey_alpha"] = (folder / "grey_alpha.png", ink)
    palette = Image.fromarray((ink == 255).astype(np.uint8), "P")
    palette.putpalette([255, 255, 255, 255, 255, 255] + [0] * 762)  # both colours white, colour 0 transparent
    palette.save(folder / "palette.png", transparency=0)
    files["palette"] = (folder / "palette.png", np.where(ink == 255, 255, 0).astype(np.uint8))
    grey = Image.fromarray(np.where(ink == 255, 255, 17).astype(np.uint8), "L")
    grey.save(folder / "grey_trns.png", transparency=17)
    files["grey_trns"] = (folder / "grey_trns.png", np.where(ink == 255, 255, 0).astype(np.uint8))
    return files


def test_transparency_is_composited_on_black(tmp_path):
    """Issue 27 (4): before, white ink in the alpha channel read as an all-white image, and a paletted PNG's
    transparent colour as white."""
    for name, (path, want) in transparent_files(tmp_path).items():
        np.testing.assert_array_equal(read_image_file(path, (6, 4, 1))[..., 0], want, err_msg=name)
        rgb = read_image_file(path, (6, 4, 3))
        np.testing.assert_array_equal(rgb, np.repeat(want[..., None], 3, -1), err_msg=name)


def test_every_entry_point_reads_the_same_pixels(tmp_path):
    """predict's reader, the bytes the explorer receives and a folder data set give one array per file."""
    files = transparent_files(tmp_path)
    save_with_exif(with_orientation(UPRIGHT, 6), tmp_path / "rotated.png", 6)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3) * 3).save(photo, quality=95)
    grey = [files["grey_trns"][0], tmp_path / "rotated.png"]  # grey files make 1-channel data sets
    colour = [files[name][0] for name in ("alpha_ink", "grey_alpha", "palette")] + [photo]
    for channels, paths in ((1, grey), (3, colour)):
        root = tmp_path / f"set{channels}"
        for split in ("train", "test"):
            (root / split / "a").mkdir(parents=True)
            for path in paths:
                (root / split / "a" / path.name).write_bytes(path.read_bytes())
        data = load_dataset(f"folder:{root}")
        by_name = dict(zip(sorted(p.name for p in paths), data.test_images, strict=True))
        for path in paths:
            from_file = read_image_file(path, (6, 4, channels))
            np.testing.assert_array_equal(fitted_image(path.read_bytes(), path.name, (6, 4, channels)), from_file)
            np.testing.assert_array_equal(by_name[path.name], from_file, err_msg=path.name)


def test_sixteen_bit_grey_with_an_orientation_is_scaled_and_turned(tmp_path):
    stored = np.asarray(with_orientation(UPRIGHT, 3)).astype(np.uint16) * 257
    save_with_exif(Image.fromarray(stored), tmp_path / "deep.png", 3)
    np.testing.assert_array_equal(read_image_file(tmp_path / "deep.png", (6, 4, 1))[..., 0], UPRIGHT)


def test_bytes_that_are_not_an_image_are_one_clear_error():
    from jaxcnn.data import DataError

    with pytest.raises(DataError, match=r"upload\.png: not a readable PNG, JPEG or WebP image"):
        fitted_image(b"GIF89a nonsense", "upload.png", (4, 4, 1))
    with pytest.raises(DataError, match=r"upload\.png: not a readable"):
        decode_image(b"", "upload.png")
