"""Small synthetic datasets in the layout of the real one (class folders of grayscale PNGs;
RGB ones for networks of one's own on colour images).

Tests and benchmarks make their own images: the real dataset is never committed or shipped.
Each class puts a bright square in its own quadrant over noise, so a CNN can learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASSES", "TINTS", "make_image", "write_dataset"]

CLASSES = ("Benign", "Early", "Pre", "Pro")


# The colour of each class's square in an RGB image (red, green, blue, yellow).
TINTS = ((1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0), (1.0, 1.0, 0.2))


def make_image(label: int, index: int, size: int = 48, color: str = "gray") -> np.ndarray:
    """An image whose bright square sits in the quadrant of its class, plus noise: (size,
    size) grayscale, or with color="rgb" (size, size, 3), the square in its class's colour."""
    rng = np.random.default_rng(1000 * label + index)
    image = rng.integers(0, 60, (size, size)).astype(np.uint8)
    half = size // 2
    row, col = divmod(label % 4, 2)
    square = (slice(row * half + 4, row * half + half - 4),
              slice(col * half + 4, col * half + half - 4))
    if color == "gray":
        image[square] += 150
        return image
    rgb = np.repeat(image[..., None], 3, axis=-1)
    for channel, weight in enumerate(TINTS[label % len(TINTS)]):
        rgb[(*square, channel)] += np.uint8(round(150 * weight))
    return rgb


def write_dataset(root: Path, *, per_class: int = 12, classes: tuple[str, ...] = CLASSES,
                  duplicate: bool = True, junk: bool = True, size: int = 48,
                  color: str = "gray") -> Path:
    """Write `per_class` PNGs per class under root/<class>/ (grayscale, or RGB with
    color="rgb"); optionally one exact duplicate (as in the real Pro class) and two files
    that are not images."""
    root = Path(root)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_image(label, i, size, color)).save(folder / f"{name}_{i:03d}.png")
    if duplicate:
        first = root / classes[-1] / f"{classes[-1]}_000.png"
        (root / classes[-1] / "copy_of_000.png").write_bytes(first.read_bytes())
    if junk:
        (root / classes[0] / "notes.txt").write_text("not an image")
        (root / classes[0] / ".DS_Store").write_bytes(b"\0\1")
    return root
