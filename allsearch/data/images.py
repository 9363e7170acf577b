"""Image files to network inputs: the one conversion training, prediction and serving share.

Any image (8/16-bit, float, palette, CMYK, with transparency) -> SIZE x SIZE uint8, grayscale
(H, W) or RGB (H, W, 3) (--image-size, default 100; --color, default gray) -> (N, H, W, 1|3)
float32 in [0, 1]. Pixels are held as uint8 (a quarter of float32's memory) and become float32
a batch at a time (`as_network_input`), with the same values as a conversion of them all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from allsearch.core.errors import DataError

__all__ = ["IMAGE_SIZE", "IMAGE_EXTENSIONS", "image_to_array", "to_network_input",
           "as_network_input", "decode_image_bytes", "decode_file", "pixel_shape", "Color"]

IMAGE_SIZE = 100
Color = Literal["gray", "rgb"]  # allsearch.core.contract.COLORS
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


def pixel_shape(size: int, color: Color = "gray") -> tuple[int, ...]:
    """The shape of one decoded image: (size, size) gray, (size, size, 3) rgb."""
    return (size, size) if color == "gray" else (size, size, 3)


def image_to_array(image: Image.Image, size: int = IMAGE_SIZE, color: Color = "gray") -> np.ndarray:
    """Any PIL image -> (size, size) uint8 grayscale, or (size, size, 3) RGB: the one
    conversion used everywhere."""
    image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        # Transparent pixels become black, the background of the segmented images.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    converted = image.convert("L" if color == "gray" else "RGB")
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8)


def to_network_input(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 grayscale or (N, H, W, 3) RGB -> (N, H, W, 1|3) float32 in [0, 1]: what
    every network takes, in training and in prediction alike."""
    pixels = np.asarray(pixels)
    images = pixels[..., None] if pixels.ndim == 3 else pixels
    return images.astype(np.float32) / np.float32(255.0)


def as_network_input(images: np.ndarray) -> np.ndarray:
    """A batch as the network takes it: uint8 pixels through `to_network_input`, anything else
    (float images already in [0, 1], HOG/PCA components) as it is."""
    images = np.asarray(images)
    return to_network_input(images) if images.dtype == np.uint8 else images


def decode_image_bytes(data: bytes, size: int = IMAGE_SIZE, color: Color = "gray") -> np.ndarray:
    """An encoded image file's bytes (PNG, JPEG, BMP, TIFF, ...) -> (size, size) uint8
    grayscale or (size, size, 3) RGB, through the same conversion as the training images;
    DataError if not an image."""
    import io

    if not data:
        raise DataError("empty image (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image_to_array(image, size, color)
    except Exception as exc:  # PIL raises many types for bad bytes
        # PIL names the buffer it read (<_io.BytesIO object at 0x...>): no use to anyone.
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))[:80]
        raise DataError(f"not a readable image ({type(exc).__name__}: {reason})") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float images scaled to 8 bits (PIL's convert('L') would clip them)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if (image.mode.startswith("I;16") or values.max() > 255) else 255.0
        return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8))
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8))
    return image


def decode_file(path: Path, size: int = IMAGE_SIZE, color: Color = "gray") -> np.ndarray | str:
    """Decoded pixels, or the reason the file cannot be used."""
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_array(image, size, color)
    except Exception as exc:  # PIL raises many types for bad files; each is a skip
        return f"cannot decode ({type(exc).__name__}: {str(exc)[:80]})"
