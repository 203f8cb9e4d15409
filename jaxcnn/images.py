"""Image files to uint8 arrays: the one decoder behind ``predict``, folder data sets and the explorer's upload.

Every entry point reads an image the same way, so a file means the same thing everywhere:

- PNG, JPEG or WebP (what PIL opens), regular files of at most MAX_IMAGE_BYTES and PIL's pixel limit;
- the EXIF orientation applied, as a phone's gallery shows the photo (a portrait shot is upright);
- 16-bit grey scaled to 8 bits (``* 255 / 65535``, rounded), never clipped;
- transparency composited on black: transparent pixels become black and half-transparent ones
  darker, as on the explorer's drawing canvas and in MNIST's digits (light strokes on black). So
  white ink drawn in a PNG's alpha channel reads as a white digit on black, and a paletted PNG's
  transparent colour as black;
- then, for a network, converted to grey (ITU-R 601 luma, PIL's ``L``) or RGB and resized bilinearly
  (with PIL's antialiasing when shrinking) to the size the run was trained on.
"""

from __future__ import annotations

import io
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_BYTES = 64 * 2**20
"""The largest image file read (folder data sets, ``predict``): far above any photo, far below a mistake."""
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def check_image_file(path: Path) -> None:
    """A DataError unless ``path`` is a regular file (after symbolic links) of at most MAX_IMAGE_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        kind = "a symbolic link to nothing; remove it or point it at an image" if path.is_symlink() else "no such file"
        raise DataError(f"{path}: {kind}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise DataError(f"{path}: is {kind}, not an image file; move it out of the way")
    check_image_size(str(path), info.st_size)


def check_image_size(where: str, size: int) -> None:
    """A DataError when an image file (or archive member) of ``size`` bytes is over MAX_IMAGE_BYTES."""
    if size > MAX_IMAGE_BYTES:
        raise DataError(
            f"{where}: {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} an image may have; shrink it first"
        )


def _eight_bit(image: Any, where: str) -> Any:
    """``image`` with 8-bit samples: 16-bit grey (PNG) is scaled by 255/65535, never clipped to 0/255.

    Samples with no fixed range (32-bit integers or floats, outside PNG) are refused.
    """
    from PIL import Image

    sixteen = image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")
    if sixteen:
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"{where}: 16-bit image with samples outside 0-65535")
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise DataError(
            f"{where}: {kind} samples have no fixed range to scale to 0-255; save the image as an 8- or 16-bit "
            "PNG or a JPEG"
        )
    return image


def _on_black(image: Any) -> Any:
    """``image`` without transparency: composited on black (grey stays grey; other modes become RGB)."""
    from PIL import Image

    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return flat.convert("L" if image.mode == "L" else "RGB")


def open_image(source: Path | bytes, where: str, at_least: tuple[int, int] | None = None) -> Any:
    """Decode a PNG, JPEG or WebP (a file or its bytes) to a loaded PIL image, upright, opaque, of 8-bit samples
    (see the module docstring), or a DataError.

    Regular files of at most MAX_IMAGE_BYTES only, and at most PIL's MAX_IMAGE_PIXELS: a folder, FIFO,
    device or decompression bomb among the images is a clear error, not a hang or a memory blow-up.

    ``at_least`` (height, width): a JPEG larger than that is decoded at the smallest of libjpeg's scales
    (1/2, 1/4, 1/8) that keeps both sides at least that large, several times faster than decoding it whole.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Path):
        check_image_file(source)
    else:
        check_image_size(where, len(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as image:
                if at_least is not None and image.format == "JPEG":
                    side = max(at_least)  # square: EXIF may turn the image a quarter after decoding
                    image.draft(image.mode, (side, side))
                image.load()
                upright = ImageOps.exif_transpose(image)
                return _on_black(_eight_bit(upright, where))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(
            f"{where}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, the limit PIL sets against decompression "
            "bombs; shrink the image first"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{where}: not a readable PNG, JPEG or WebP image ({err})") from None


def decode_image(data: bytes, where: str, at_least: tuple[int, int] | None = None) -> np.ndarray:
    """An image file's bytes as uint8 H x W x C at its own size (a large JPEG reduced towards ``at_least``, see
    :func:`open_image`): grey images 1 channel, all others RGB."""
    image = open_image(data, where, at_least)
    array = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"), np.uint8)
    return array[..., None] if array.ndim == 2 else array


def fitted_image(source: Path | bytes, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """An image file (a path or its bytes) as uint8 H x W x C of ``shape``: converted to grey or RGB and
    resized bilinearly if needed."""
    from PIL import Image

    height, width, channels = shape
    image = open_image(source, where)
    try:
        converted = image.convert("L" if channels == 1 else "RGB")
        if converted.size != (width, height):
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: not a readable PNG, JPEG or WebP image ({err})") from None
    return np.asarray(converted, np.uint8).reshape(height, width, channels)


def read_image_file(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A PNG, JPEG or WebP file as uint8 H x W x C of ``shape`` (what ``jaxcnn predict`` feeds the network)."""
    return fitted_image(Path(path), str(path), shape)
