"""Decoded pixels on disk, so that every later load of a dataset, in any process, skips
decoding; and the pixels of a dataset larger than memory, streamed from there.

A dataset's cache is two files in mlruns/cache/: `pixels-<fingerprint>.npy`, the uint8 images
(N, H, W) or (N, H, W, 3) as one NumPy array file, which can be memory-mapped; and
`pixels-<fingerprint>.npz`, its labels, file names, the files that could not be decoded, and
the array's CRC-32 and size. The array is written first and the .npz last, each atomically (a
temporary file, synced, then renamed), so a crash or a concurrent reader never sees half of
either; a reader checks the array against the .npz (shape, dtype, CRC-32, read with
allow_pickle=False) and says a damaged pair and rebuilds it, never trusting it.

`read_pixels(..., stream=True)` returns the array memory-mapped read-only (`--pixels disk`):
the pages the training touches are the operating system's file cache, shared by every
worker process on the machine and dropped under memory pressure, not the process's memory.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from allsearch.core.contract import PIXEL_PLACES
from allsearch.core.errors import ConfigError

__all__ = ["default_cache_dir", "CacheWarning", "cache_files", "read_pixels", "save_pixels",
           "pixel_file", "discard", "PixelPlace", "PIXEL_PLACES", "choose_place", "MEMORY_SHARE"]

PixelPlace = Literal["auto", "memory", "disk"]  # contract.PIXEL_PLACES
# --pixels auto streams from disk where the pixels would take more than this share of the
# machine's physical memory (each worker process holds its own copy in memory).
MEMORY_SHARE = 0.25
CRC_CHUNK = 64 << 20  # bytes checked at a time


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALLSEARCH_CACHE_DIR", "mlruns/cache"))


def cache_files(cache_dir: Path, key: str) -> tuple[Path, Path]:
    """The array file and the description file of a dataset's cache."""
    return cache_dir / f"pixels-{key[:20]}.npy", cache_dir / f"pixels-{key[:20]}.npz"


def choose_place(place: str, n_bytes: int, memory_bytes: int | None) -> Literal["memory", "disk"]:
    """Where pixels of `n_bytes` stay: as asked, or (auto) on disk where they would take more
    than MEMORY_SHARE of `memory_bytes` (None: unknown, so in memory)."""
    if place not in PIXEL_PLACES:
        raise ConfigError(f"--pixels must be one of {list(PIXEL_PLACES)}, got {place!r}")
    if place == "auto":
        return "disk" if memory_bytes and n_bytes > MEMORY_SHARE * memory_bytes else "memory"
    return "disk" if place == "disk" else "memory"


def read_pixels(npy: Path, npz: Path, n_files: int, shape: tuple[int, ...], *, stream: bool = False
                ) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]] | None:
    """The cached decode (pixels in memory, or memory-mapped where `stream`), or None when
    there is none or it is damaged (then it is rebuilt: a truncated or overwritten file must
    never lock the dataset out)."""
    if not npz.is_file():
        return None
    try:
        for path in (npz, npy):  # a cache is untrusted input: no link out of its folder
            if path.is_symlink():
                raise ValueError(f"{path.name} is a link, not a file of the cache")
        with np.load(npz, allow_pickle=False) as cached:
            if "check" not in cached.files:
                return None  # a cache of an earlier release (pixels inside): decoded again
            labels = cached["labels"]
            rels = [str(r) for r in cached["files"]]
            bad = [(str(a), str(b)) for a, b in cached["bad"].tolist()]
            crc, size = (int(v) for v in cached["check"])
        pixels = np.load(npy, mmap_mode="r" if stream else None, allow_pickle=False)
        if not (len(pixels) == len(labels) == len(rels) and len(rels) + len(bad) == n_files
                and pixels.shape[1:] == shape and pixels.dtype == np.uint8
                and pixels.nbytes == size):
            raise ValueError("its arrays do not match the dataset")
        if _crc32(pixels) != crc:
            raise ValueError("its pixels do not match their checksum")
        return pixels, labels, rels, bad
    except Exception as exc:  # noqa: BLE001  (zip, zlib, numpy and OS errors alike)
        warnings.warn(f"the pixel cache {npz} is damaged ({type(exc).__name__}: "
                      f"{str(exc)[:80]}); decoding the images again and rewriting it",
                      CacheWarning, stacklevel=3)
        return None


class CacheWarning(UserWarning):
    """A damaged cache was found and rebuilt (shown even where data warnings are not)."""


def pixel_file(npy: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new array file of uint8 pixels, memory-mapped for writing, beside the cache's
    (decoded into where the pixels stream from disk: they are never all in memory);
    save_pixels puts it in place, discard(npy) removes it."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    try:
        return np.lib.format.open_memmap(_temporary(npy), mode="w+", dtype=np.uint8,
                                         shape=shape)
    except BaseException:  # Ctrl-C while the file is made too
        discard(npy)
        raise


def discard(npy: Path) -> None:
    """Remove this process's pixel_file for the cache `npy` (a decode that did not finish);
    nothing where there is none."""
    with contextlib.suppress(OSError):
        _temporary(npy).unlink(missing_ok=True)


def save_pixels(npy: Path, npz: Path, pixels: np.ndarray, labels: np.ndarray, rels: list[str],
                bad: list[tuple[str, str]]) -> bool:
    """Write the cache atomically: the array, then its description; False (said in a
    CacheWarning) when it could not be written. `pixels`: the decoded images, in memory or
    pixel_file's map (put in place as it is where every row of it holds an image; its first
    len(labels) rows copied where some files could not be decoded)."""
    mapped = _temporary(npy)
    own_map = pixels if (isinstance(pixels, np.memmap) and pixels.filename is not None
                         and Path(pixels.filename).resolve() == mapped.resolve()) else None
    made: list[Path] = [mapped] if own_map is not None else []
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        if own_map is not None and len(own_map) == len(labels):
            own_map.flush()
            tmp = mapped
        else:
            tmp = _temporary(npy, "copy")
            made.append(tmp)
            _write_array(tmp, pixels, len(labels))
        _sync(tmp)
        os.replace(tmp, npy)
        tmp = _temporary(npz)
        made.append(tmp)
        with open(tmp, "wb") as out:
            np.savez(out, labels=labels, files=np.array(rels, dtype=str),
                     bad=np.array(bad, dtype=str).reshape(-1, 2),
                     check=np.array([_crc32(pixels[:len(labels)]),
                                     len(labels) * _row_bytes(pixels)], dtype=np.int64))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, npz)
        return True
    except OSError as exc:
        warnings.warn(f"could not write the pixel cache {npz} ({exc.strerror}); "
                      f"the next load decodes again", CacheWarning, stacklevel=3)
        return False
    finally:
        for path in made:  # what was not put in place
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _write_array(path: Path, pixels: np.ndarray, n: int) -> None:
    """The first n rows of pixels as a .npy file, a chunk at a time."""
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {
            "descr": np.lib.format.dtype_to_descr(pixels.dtype), "fortran_order": False,
            "shape": (n, *pixels.shape[1:])})
        step = _rows_per_chunk(pixels)
        for start in range(0, n, step):
            out.write(np.ascontiguousarray(pixels[start:min(n, start + step)]).data)


def _temporary(path: Path, tag: str = "") -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{tag}.tmp")  # pixels-X.npy.123.tmp


def _row_bytes(pixels: np.ndarray) -> int:
    return int(np.prod(pixels.shape[1:], dtype=np.int64)) * pixels.dtype.itemsize


def _rows_per_chunk(pixels: np.ndarray) -> int:
    return max(1, CRC_CHUNK // max(1, _row_bytes(pixels)))


def _crc32(pixels: Any) -> int:
    """CRC-32 of the array's bytes, a chunk at a time (a memory map is read, not held)."""
    crc, step = 0, _rows_per_chunk(pixels)
    for start in range(0, len(pixels), step):
        crc = zlib.crc32(np.ascontiguousarray(pixels[start:start + step]).data, crc)
    return crc


def _sync(path: Path) -> None:
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())
