"""Image files -> one uint8 array: decoded by threads, in memory or straight into the pixel
cache's file (a dataset that streams from disk is never all in memory); and the content
fingerprint that names a decode (files, bytes, preprocessing)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from allsearch.core.errors import DataError
from allsearch.data.images import Color, decode_file
from allsearch.data.pixel_cache import pixel_file

__all__ = ["decode_all", "writable_cache", "fingerprint", "DECODE_CHUNK", "PREPROCESS_VERSION"]

# Bump when decoding or resizing changes: it invalidates every pixel cache.
PREPROCESS_VERSION = 2

DECODE_CHUNK = 1024  # files handed to the decoding threads at a time


def decode_all(root: Path, unique: list[tuple[str, int, str]], shape: tuple[int, ...],
               image_size: int, color: Color, *, into: np.ndarray | None = None
               ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Every file decoded straight into one uint8 array (no list of images to stack: that
    held each image twice), or `into` (a file's map, returned whole: its first len(keep) rows
    are the images); the indices into `unique` it holds, and the files it could not."""
    pixels = np.empty((len(unique), *shape), np.uint8) if into is None else into
    keep: list[int] = []
    bad: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(unique), DECODE_CHUNK):
            chunk = unique[start:start + DECODE_CHUNK]
            decoded = pool.map(lambda u: decode_file(root / u[0], image_size, color), chunk)
            for i, image in enumerate(decoded, start=start):
                if isinstance(image, str):
                    bad.append((unique[i][0], image))
                else:
                    pixels[len(keep)] = image
                    keep.append(i)
    return (pixels[:len(keep)] if into is None else pixels), keep, bad


def writable_cache(npy: Path, n: int, shape: tuple[int, ...], root: Path) -> np.memmap:
    """The file the images of a streamed dataset are decoded into (pixel_cache.pixel_file)."""
    try:
        return pixel_file(npy, (n, *shape))
    except OSError as exc:
        raise DataError(f"could not make the pixel cache {npy} that the images of '{root}' "
                        f"stream from ({exc.strerror}); free disk space there, set "
                        f"ALLSEARCH_CACHE_DIR to a writable folder, or load them into memory "
                        f"(--pixels memory)") from None


def fingerprint(class_names: tuple[str, ...], unique: list[tuple[str, int, str]],
                image_size: int, color: Color) -> str:
    """The content fingerprint of a decode: preprocessing, classes, and each file's name,
    class and content hash (`unique`: (name, label, hash) per file)."""
    digest = hashlib.sha256()
    # Gray images keep the text (and so the fingerprints and caches) they always had.
    digest.update(f"v{PREPROCESS_VERSION}|size={image_size}|{color}|bilinear|".encode())
    digest.update("|".join(class_names).encode())
    for rel, label, content in unique:
        digest.update(f"\n{rel}\t{label}\t{content}".encode())
    return digest.hexdigest()
