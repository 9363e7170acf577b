"""Small synthetic datasets in the layout of the real one (class folders of grayscale PNGs).

Tests and benchmarks make their own images: the real dataset is never committed or shipped.
Each class puts a bright square in its own quadrant over noise, so a CNN can learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASSES", "make_image", "write_dataset"]

CLASSES = ("Benign", "Early", "Pre", "Pro")


def make_image(label: int, index: int, size: int = 48) -> np.ndarray:
    """A grayscale image whose bright square sits in the quadrant of its class, plus noise."""
    rng = np.random.default_rng(1000 * label + index)
    image = rng.integers(0, 60, (size, size)).astype(np.uint8)
    half = size // 2
    row, col = divmod(label % 4, 2)
    image[row * half + 4: row * half + half - 4, col * half + 4: col * half + half - 4] += 150
    return image


def write_dataset(root: Path, *, per_class: int = 12, classes: tuple[str, ...] = CLASSES,
                  duplicate: bool = True, junk: bool = True, size: int = 48) -> Path:
    """Write `per_class` PNGs per class under root/<class>/; optionally one exact duplicate
    (as in the real Pro class) and two files that are not images."""
    root = Path(root)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_image(label, i, size)).save(folder / f"{name}_{i:03d}.png")
    if duplicate:
        first = root / classes[-1] / f"{classes[-1]}_000.png"
        (root / classes[-1] / "copy_of_000.png").write_bytes(first.read_bytes())
    if junk:
        (root / classes[0] / "notes.txt").write_text("not an image")
        (root / classes[0] / ".DS_Store").write_bytes(b"\0\1")
    return root
