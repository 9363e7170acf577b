"""The shared data pipeline: a folder of class folders in, train/val/test arrays out.

discover files -> drop exact duplicates (content hash) -> decode, gray or RGB, resize
-> train/val/test split (seeded; allsearch.core.splits: stratified 70/15/15 by image, or by
group or block so no patient or run of frames lands in two parts). Decoded pixels are cached on disk under a fingerprint
of the file list, the file contents and the preprocessing settings, so every later load (in
any process) skips decoding.

Memory: the pixels stay uint8 from decoding to the network (10 KB per 100x100 gray image;
float32 would be 40 KB): decoded into one array, reordered in place so that train, val and
test are consecutive, and the splits are views of it. The network gets float32 in [0, 1] a
batch at a time (images.as_network_input, allsearch.training.batches). A dataset larger than
memory (`pixels="disk"`, or "auto" where they would take more than a quarter of it) is
decoded straight into the cache file and streamed from it: its splits are `rows.Rows` of the
memory-mapped file, read a batch at a time.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from allsearch.core.errors import DataError
from allsearch.core.hardware import physical_memory
from allsearch.core.splits import FRACTIONS as SPLIT_FRACTIONS
from allsearch.core.splits import PARTS as SPLITS
from allsearch.core.splits import Split, SplitSettings, split_data
from allsearch.data.decode import decode_all, fingerprint, writable_cache
from allsearch.data.download import BUNDLE_SUFFIX, resolve_data_path
from allsearch.data.images import (
    IMAGE_SIZE,
    Color,
    pixel_shape,
)
from allsearch.data.listing import discover, hash_file
from allsearch.data.pixel_cache import (
    CacheWarning,
    PixelPlace,
    cache_files,
    choose_place,
    default_cache_dir,
    discard,
    read_pixels,
    save_pixels,
)
from allsearch.data.rows import Rows, is_streamed, permute_rows

__all__ = [
    "Dataset", "DataReport", "load_dataset", "load_bundle", "save_bundle",
    "MIN_IMAGES_PER_CLASS", "default_cache_dir", "CacheWarning", "SplitSettings",
    "SPLIT_FRACTIONS", "SPLITS", "pixel_bytes", "PixelPlace",
]

# A class needs about 0.3 * n >= 2 images outside train for a stratified val/test split.
MIN_IMAGES_PER_CLASS = 7


@dataclass
class DataReport:
    """What the pipeline saw; printed by `python -m allsearch.data` and logged with runs."""

    root: str
    n_files: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates_dropped: int = 0
    split_sizes: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    cache_hit: bool = False
    cache_written: bool = False
    load_time_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)  # hash, decode, cache_*, split
    pixels: str = "memory"  # where the pixels stay: memory, or disk (streamed from the cache)


@dataclass
class Dataset:
    """Train/val/test images (N, H, W, 1), or (N, H, W, 3) in RGB, as uint8 pixels (0-255;
    `images.as_network_input` makes a batch of them the network's float32 in [0, 1]), and
    integer labels. The images are arrays, or `rows.Rows` of the pixel cache's file where
    they stream from disk (read a batch at a time; np.asarray makes one an array)."""

    x_train: np.ndarray | Rows
    y_train: np.ndarray
    x_val: np.ndarray | Rows
    y_val: np.ndarray
    x_test: np.ndarray | Rows
    y_test: np.ndarray
    class_names: tuple[str, ...]
    files_train: tuple[str, ...]
    files_val: tuple[str, ...]
    files_test: tuple[str, ...]
    fingerprint: str
    variant: str
    split_seed: int
    report: DataReport
    features: Any = None  # an allsearch.data.features.FeatureSet once add_hog_pca has run
    split_settings: SplitSettings = field(default_factory=SplitSettings)
    split_table: Split | None = None  # every image's group and part (split.csv)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def image_settings(self) -> dict[str, Any]:
        """The images' side and colour (--image-size, --color), as every run logs them."""
        return {"image_size": int(self.x_train.shape[1]),
                "color": "rgb" if self.x_train.shape[-1] == 3 else "gray"}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def with_features(self, features: Any) -> Dataset:
        return replace(self, features=features)

    def split_csv(self) -> str:
        """split.csv: file, class, group, part (train, val, test, or embargo: left out)."""
        return self.split_table.csv() if self.split_table is not None else ""


# --------------------------------------------------------------------------- discovery


# --------------------------------------------------------------------------- loading


def load_dataset(path: str | Path | None = None, *, split_seed: int = 42,
                 split: SplitSettings | None = None,
                 image_size: int = IMAGE_SIZE, color: Color = "gray",
                 cache_dir: str | Path | None = None,
                 use_cache: bool = True, download: bool = True,
                 pixels: PixelPlace = "auto") -> Dataset:
    """Load a folder of class folders (or a bundle) as a split Dataset (see the module
    docstring); `split`: how (allsearch.core.splits; default: stratified 70/15/15 by image);
    `image_size`, `color`: each image as SIZE x SIZE gray or RGB pixels; `pixels`: memory,
    disk (streamed from the pixel cache), or auto (disk where they would take more than
    pixel_cache.MEMORY_SHARE of the machine's memory)."""
    start = time.perf_counter()
    root = resolve_data_path(path, download=download)
    if root.is_file():
        if pixels == "disk":
            raise DataError(f"'{root}' is a bundle, a compressed file that loads into memory; "
                            f"to stream the images from disk, give --data the folder of images "
                            f"(or leave --pixels at auto or memory)")
        return load_bundle(root, split_seed=split_seed, split=split,
                           image_size=image_size, color=color)
    images = _load_images(root, image_size, color, cache_dir, use_cache, pixels)
    return images.split(split_seed, split or SplitSettings(), started=start)


def _load_images(root: Path, image_size: int, color: Color, cache_dir: str | Path | None,
                 use_cache: bool, pixels_place: PixelPlace = "memory") -> _Images:
    listing = discover(root)
    report = DataReport(root=str(root), n_files=len(listing.files), skipped=list(listing.skipped))

    clock = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        hashes = list(pool.map(lambda f: hash_file(root / f[0]), listing.files))
    report.stage_s["hash"] = _since(clock)

    # Exact duplicates (same bytes) would leak between train and test: keep the first copy.
    seen: dict[str, str] = {}
    unique: list[tuple[str, int, str]] = []
    for (rel, label), digest in zip(listing.files, hashes, strict=True):
        if digest in seen:
            report.duplicates_dropped += 1
            continue
        seen[digest] = rel
        unique.append((rel, label, digest))

    key = fingerprint(listing.class_names, unique, image_size, color)
    npy, npz = cache_files(Path(cache_dir or default_cache_dir()), key)
    shape = pixel_shape(image_size, color)
    place = choose_place(pixels_place, len(unique) * int(np.prod(shape)), physical_memory())
    stream = place == "disk"
    report.pixels = place
    if stream and not use_cache:
        raise DataError(f"the images of '{root}' stream from the pixel cache (--pixels "
                        f"{pixels_place}), so it cannot be switched off; load them into memory "
                        f"(--pixels memory) or keep the cache")
    clock = time.perf_counter()
    cached = read_pixels(npy, npz, len(unique), shape, stream=stream) if use_cache else None
    if cached is not None:
        pixels, labels, rels, bad = cached
        report.cache_hit = True
        report.stage_s["cache_read"] = _since(clock)
    else:
        pixels, labels, rels, bad = _decode_and_cache(root, unique, shape, image_size, color,
                                                      (npy, npz), report, stream=stream,
                                                      use_cache=use_cache)
    for rel, reason in bad:
        report.skipped.append((rel, reason))

    for rel, reason in report.skipped:
        warnings.warn(f"skipped {root / rel}: {reason}", stacklevel=2)
    if report.skipped:
        warnings.warn(f"skipped {len(report.skipped)} file(s) in '{root}'", stacklevel=2)

    counts = Counter(labels.tolist())
    report.class_counts = {name: counts.get(i, 0) for i, name in enumerate(listing.class_names)}
    _check_counts(root, report.class_counts)
    return _Images(pixels, labels, tuple(rels), listing.class_names, key, root.name, report)


def _decode_and_cache(root: Path, unique: list[tuple[str, int, str]], shape: tuple[int, ...],
                      image_size: int, color: Color, cache: tuple[Path, Path],
                      report: DataReport, *, stream: bool, use_cache: bool
                      ) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
    """Decode every file (into memory, or where `stream`, into the cache's file) and write the
    cache: (pixels, labels, files, the files that could not be decoded). Streamed, the pixels
    returned are the file put in place, mapped read-only."""
    npy, npz = cache
    clock = time.perf_counter()
    try:  # Ctrl-C anywhere from the file's making to its renaming leaves nothing behind
        into = writable_cache(npy, len(unique), shape, root) if stream else None
        pixels, keep, bad = decode_all(root, unique, shape, image_size, color, into=into)
        labels = np.array([unique[i][1] for i in keep], dtype=np.int64)
        rels = [unique[i][0] for i in keep]
        report.stage_s["decode"] = _since(clock)
        if use_cache:
            clock = time.perf_counter()
            report.cache_written = save_pixels(npy, npz, pixels, labels, rels, bad)
            report.stage_s["cache_write"] = _since(clock)
    except BaseException:
        if stream:
            discard(npy)
        raise
    if not stream:
        return pixels, labels, rels, bad
    del pixels  # the map written to; the splits read the file put in place
    if not report.cache_written:
        raise DataError(f"could not write the pixel cache {npz} that the images of '{root}' "
                        f"stream from; free disk space there, set ALLSEARCH_CACHE_DIR to a "
                        f"writable folder, or load them into memory (--pixels memory)")
    return np.load(npy, mmap_mode="r", allow_pickle=False), labels, rels, bad


def _since(clock: float) -> float:
    return round(time.perf_counter() - clock, 3)


@dataclass
class _Images:
    """Every usable image of a dataset before the split, in a fixed order (by path)."""

    pixels: np.ndarray  # (N, H, W) uint8, (N, H, W, 3) in RGB
    labels: np.ndarray
    files: tuple[str, ...]
    class_names: tuple[str, ...]
    key: str  # the content fingerprint: files, bytes, preprocessing
    variant: str
    report: DataReport

    def split(self, split_seed: int, settings: SplitSettings, *, started: float) -> Dataset:
        """The split Dataset, whose images are views of `pixels`, reordered in place for them
        (train, val, test, then any left out): an _Images is split once. Pixels mapped from
        the cache file (read-only) stay as they are: the splits are Rows of them."""
        clock = time.perf_counter()
        table = split_data(self.labels, self.files, self.class_names, settings, split_seed)
        train, val, test = table.train, table.val, table.test
        # A random split keeps the fingerprint it always had; another adds its settings and
        # the groups it found (a changed --groups file is another dataset).
        how = "" if settings.kind == "random" else f"|{settings.params()}|{table.digest}"
        fingerprint = hashlib.sha256(
            f"{self.key}|split={split_seed}|{SPLIT_FRACTIONS}{how}".encode()).hexdigest()[:16]
        sizes = {"train": len(train), "val": len(val), "test": len(test)}
        left_out = len(self.labels) - sum(sizes.values())
        if left_out:
            sizes["embargo"] = left_out
        report = replace(self.report, split_sizes=sizes, fingerprint=fingerprint,
                         stage_s=dict(self.report.stage_s))
        images = self.pixels[..., None] if self.pixels.ndim == 3 else self.pixels
        x_train: np.ndarray | Rows
        x_val: np.ndarray | Rows
        x_test: np.ndarray | Rows
        if isinstance(self.pixels, np.memmap):
            x_train, x_val, x_test = (Rows(images, part) for part in (train, val, test))
        else:
            used = np.concatenate([train, val, test]).astype(np.intp)
            rest = np.setdiff1d(np.arange(len(self.labels)), used)
            permute_rows(self.pixels, np.concatenate([used, rest]))
            x_train, x_val, x_test = np.split(images[:len(used)],
                                              [len(train), len(train) + len(val)])
        files = np.array(self.files, dtype=object)
        report.stage_s["split"] = _since(clock)
        report.load_time_s = round(time.perf_counter() - started, 3)
        return Dataset(
            x_train=x_train, y_train=self.labels[train],
            x_val=x_val, y_val=self.labels[val],
            x_test=x_test, y_test=self.labels[test],
            class_names=self.class_names,
            files_train=tuple(files[train]), files_val=tuple(files[val]),
            files_test=tuple(files[test]),
            fingerprint=fingerprint, variant=self.variant, split_seed=split_seed, report=report,
            split_settings=settings, split_table=table,
        )


def _check_counts(root: Path, class_counts: dict[str, int]) -> None:
    usable = {name: n for name, n in class_counts.items() if n > 0}
    empty = [name for name, n in class_counts.items() if n == 0]
    if empty:
        raise DataError(f"class folder(s) {empty} in '{root}' hold no usable images; "
                        f"add images or remove the folder(s)")
    if len(usable) < 2:
        raise DataError(f"'{root}' has only {len(usable)} class with images; a classifier "
                        f"needs at least 2 class folders")
    small = {name: n for name, n in usable.items() if n < MIN_IMAGES_PER_CLASS}
    if small:
        name, n = next(iter(small.items()))
        raise DataError(f"class '{name}' in '{root}' has {n} usable image(s); a stratified "
                        f"70/15/15 split needs at least {MIN_IMAGES_PER_CLASS} per class")


# --------------------------------------------------------------------------- bundles


def save_bundle(folder: str | Path, path: str | Path, *, image_size: int = IMAGE_SIZE,
                color: Color = "gray") -> Path:
    """A dataset folder as one .npz file: its decoded, de-duplicated images (uint8), labels,
    file names and content fingerprint, a few MB where the images are 100s. It is split at
    load time like the folder, for any --split-seed, with the same fingerprints, so a machine
    without the images (a lent GPU box) trains on exactly the same splits: --data FILE.npz."""
    path = Path(path)
    if path.suffix != BUNDLE_SUFFIX:
        raise DataError(f"a dataset bundle is a {BUNDLE_SUFFIX} file; got '{path}'")
    root = resolve_data_path(folder, download=False)
    if root.is_file():
        raise DataError(f"'{root}' is a file; bundle a folder of class folders")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data report lists the skipped files
        images = _load_images(root, image_size, color, None, True)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = images.report
    np.savez_compressed(
        path, pixels=images.pixels, labels=images.labels, files=np.array(images.files, dtype=str),
        class_names=np.array(images.class_names, dtype=str),
        meta=np.array([images.key, images.variant, str(report.duplicates_dropped),
                       str(report.n_files)]),
        skipped=np.array(report.skipped, dtype=str).reshape(-1, 2))
    return path


def load_bundle(path: str | Path, *, split_seed: int = 42,
                split: SplitSettings | None = None, image_size: int | None = None,
                color: Color | None = None) -> Dataset:
    """A Dataset from save_bundle's file, split by `split_seed` and `split` as load_dataset
    would; a bundle of other images than `image_size` and `color` ask for is a DataError."""
    started = time.perf_counter()
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            key, variant, dropped, n_files = (str(v) for v in z["meta"])
            pixels, labels = z["pixels"], z["labels"].astype(np.int64)
            files = tuple(str(f) for f in z["files"])
            class_names = tuple(str(c) for c in z["class_names"])
            skipped = [(str(a), str(b)) for a, b in z["skipped"].tolist()]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataError(f"'{path}' is not a dataset bundle ({type(exc).__name__}); write one "
                        f"with python -m allsearch.data FOLDER --bundle FILE.npz") from None
    want = pixel_shape(image_size or pixels.shape[1], color or ("rgb" if pixels.ndim == 4 else "gray"))
    if pixels.shape[1:] != want:
        raise DataError(f"'{path}' holds images of shape {pixels.shape[1:]}, not the {want} that "
                        f"--image-size and --color ask for; write a bundle with them (python -m "
                        f"allsearch.data.dataset FOLDER --bundle FILE.npz --image-size N --color C)")
    counts = Counter(labels.tolist())
    report = DataReport(root=str(path), n_files=int(n_files), skipped=skipped,
                        duplicates_dropped=int(dropped), cache_hit=True,
                        class_counts={n: counts.get(i, 0) for i, n in enumerate(class_names)})
    images = _Images(pixels, labels, files, class_names, key, variant, report)
    return images.split(split_seed, split or SplitSettings(), started=started)


def pixel_bytes(dataset: Dataset) -> int:
    """The memory the three splits' pixels hold, each buffer once: the splits are views of
    one uint8 buffer, so this is that buffer's size (what benchmarks/data.py reports); none
    where they stream from disk (the file's pages are the system's cache, not the process's)."""
    bases: dict[int, int] = {}
    for array in (dataset.x_train, dataset.x_val, dataset.x_test):
        if is_streamed(array):
            continue
        while isinstance(array.base, np.ndarray):
            array = array.base
        bases[id(array)] = array.nbytes
    return sum(bases.values())
