"""Decoded pixels on disk (mlruns/cache/pixels-<fingerprint>.npz), so that every later load of
a dataset, in any process, skips decoding: written atomically, read with allow_pickle=False and
only where every array fits the dataset; a damaged file is said and rebuilt, never trusted."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["default_cache_dir", "CacheWarning", "read_pixels", "save_pixels"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALLSEARCH_CACHE_DIR", "mlruns/cache"))


def read_pixels(cache_file: Path, n_files: int, shape: tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]] | None:
    """The cached decode, or None when there is none or it is damaged (then it is rebuilt:
    a truncated or overwritten file must never lock the dataset out)."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as cached:
            pixels, labels = cached["pixels"], cached["labels"]
            rels = [str(r) for r in cached["files"]]
            bad = [(str(a), str(b)) for a, b in cached["bad"].tolist()]
        if not (len(pixels) == len(labels) == len(rels) and len(rels) + len(bad) == n_files
                and pixels.shape[1:] == shape and pixels.dtype == np.uint8):
            raise ValueError("its arrays do not match the dataset")
        return pixels, labels, rels, bad
    except Exception as exc:  # noqa: BLE001  (zip, zlib, numpy and OS errors alike)
        warnings.warn(f"the pixel cache {cache_file} is damaged ({type(exc).__name__}: "
                      f"{str(exc)[:80]}); decoding the images again and rewriting it",
                      CacheWarning, stacklevel=3)
        return None


class CacheWarning(UserWarning):
    """A damaged cache was found and rebuilt (shown even where data warnings are not)."""


def save_pixels(cache_file: Path, pixels: np.ndarray, labels: np.ndarray, rels: list[str],
                bad: list[tuple[str, str]]) -> bool:
    """Write the cache atomically (a temporary file, synced, then renamed), so a crash or a
    concurrent reader never sees half a file; False when it could not be written."""
    tmp = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            np.savez(out, pixels=pixels, labels=labels, files=np.array(rels, dtype=str),
                     bad=np.array(bad, dtype=str).reshape(-1, 2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, cache_file)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(f"could not write the pixel cache {cache_file} ({exc.strerror}); "
                      f"the next load decodes again", CacheWarning, stacklevel=3)
        return False
