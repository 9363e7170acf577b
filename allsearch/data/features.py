"""HOG descriptors reduced by PCA, the paper's hand-made features.

HOG (scikit-image) per image, then PCA (scikit-learn) fitted on the train split only and
applied to val/test, as one scikit-learn pipeline that is kept for prediction on new images.
HOG is the slow part; the components are cached on disk beside the pixel cache.

Memory: a HOG descriptor is 4,356 floats (17 KB) per 100x100 image, more than the image. HOG
is computed HOG_CHUNK images at a time and reduced to its 100 components at once, and PCA is
fitted on at most PCA_FIT_IMAGES training images (all of them in a dataset of that many or
fewer, as before; a seeded sample of a larger one), so no step holds every image's HOG.

The pipeline is kept on disk (in a record folder, in a logged model, in the cache) as numbers
only: its HOG settings and PCA arrays in an .npz read with allow_pickle=False, from which
`load_pipeline` rebuilds it. Such a file may come from elsewhere; reading it runs no code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.feature import hog
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline

from allsearch.data.dataset import CacheWarning, Dataset, default_cache_dir
from allsearch.data.images import as_network_input
from allsearch.data.rows import Rows

__all__ = ["FeatureSet", "HogTransformer", "add_hog_pca", "N_COMPONENTS", "HOG_SETTINGS",
           "pipeline_arrays", "pipeline_from_arrays", "save_pipeline", "load_pipeline"]

N_COMPONENTS = 100
HOG_CHUNK = 512  # images whose HOG is held at once (9 MB of float32)
PCA_FIT_IMAGES = 5000  # PCA is fitted on at most this many training images (87 MB of HOG)
# 8x8-pixel cells and 2x2-cell blocks: the standard Dalal-Triggs layout, which gives
# 4,356 values on a 100x100 image.
HOG_SETTINGS = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2),
                "block_norm": "L2-Hys"}


class HogTransformer(TransformerMixin, BaseEstimator):
    """(N, H, W[, 1]) gray or (N, H, W, 3) RGB images in [0, 1], or their uint8 pixels (taken
    as the network takes them, images.as_network_input) -> (N, n_hog) HOG descriptors;
    stateless. On RGB, skimage takes each pixel's gradient from the channel where it is
    strongest (channel_axis): the descriptor has the length a gray image's has."""

    def fit(self, images: np.ndarray, y: object = None) -> HogTransformer:
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        rgb = images.ndim == 4 and images.shape[-1] == 3
        channels = {"channel_axis": -1} if rgb else {}
        out: np.ndarray | None = None
        # skimage's hog releases the GIL in its numpy kernels often enough for threads to help.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(images), HOG_CHUNK):
                chunk = np.asarray(as_network_input(images[start:start + HOG_CHUNK]),
                                   dtype=np.float32)
                chunk = chunk if rgb or chunk.ndim == 3 else chunk[..., 0]
                rows = list(pool.map(lambda im: hog(im, **HOG_SETTINGS, **channels), chunk))
                if out is None:
                    out = np.empty((len(images), rows[0].size), dtype=np.float32)
                out[start:start + len(rows)] = np.asarray(rows, dtype=np.float32)
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


@dataclass
class FeatureSet:
    """PCA components of HOG per split, and the fitted pipeline that made them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pipeline: Pipeline
    n_components: int

    def split(self, name: str) -> np.ndarray:
        return getattr(self, name)


def add_hog_pca(dataset: Dataset, *, n_components: int = N_COMPONENTS,
                cache_dir: str | Path | None = None) -> Dataset:
    """The dataset with its HOG+PCA FeatureSet attached (computed once, then from cache)."""
    if dataset.features is not None:
        return dataset
    settings = repr(sorted(HOG_SETTINGS.items()))
    # A set larger than PCA_FIT_IMAGES is fitted on a sample: other components than a fit on
    # every image (which the earlier code made, and a smaller set still gets).
    sample = f"|pca_fit={PCA_FIT_IMAGES}" if len(dataset.y_train) > PCA_FIT_IMAGES else ""
    key = hashlib.sha256(f"{dataset.fingerprint}|{settings}|pca={n_components}{sample}".encode())
    cache_file = Path(cache_dir or default_cache_dir()) / f"hogpca-{key.hexdigest()[:20]}.npz"
    if cache_file.is_file():
        try:
            return dataset.with_features(_read_cache(cache_file))
        except Exception as exc:  # noqa: BLE001  (a stale or damaged file: recompute, overwrite)
            warnings.warn(f"the feature cache {cache_file} is damaged ({type(exc).__name__}); "
                          f"computing the HOG/PCA features again and rewriting it",
                          CacheWarning, stacklevel=2)
    features = _fit(dataset, n_components)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as stream:
            np.savez(stream, train=features.train, val=features.val, test=features.test,
                     allow_pickle=False, **pipeline_arrays(features.pipeline))
        os.replace(tmp, cache_file)
    except OSError as exc:
        warnings.warn(f"could not write the feature cache {cache_file} ({exc.strerror})",
                      stacklevel=2)
    return dataset.with_features(features)


def _fit(dataset: Dataset, n_components: int) -> FeatureSet:
    hog_step = HogTransformer()
    n_train = len(dataset.x_train)
    fit_rows = (np.arange(n_train) if n_train <= PCA_FIT_IMAGES else
                np.sort(np.random.default_rng(0).choice(n_train, PCA_FIT_IMAGES, replace=False)))
    hog_fit = hog_step.transform(dataset.x_train[fit_rows])
    # After centering, n samples span at most n - 1 directions; more would be pure noise.
    limit = min(hog_fit.shape[0] - 1, hog_fit.shape[1])
    if n_components > limit:
        # Tiny datasets cannot give 100 components: use what PCA allows and say so.
        warnings.warn(f"n_components={n_components} must be <= min(n_samples - 1, n_features)="
                      f"{limit} (n_samples - 1 after centering); using {limit}", stacklevel=3)
        n_components = limit
    # Whitened components have unit variance, a scale the dense branch trains well on.
    pca = PCA(n_components=n_components, whiten=True, random_state=0).fit(hog_fit)
    pipeline = Pipeline([("hog", hog_step), ("pca", pca)])
    train = np.empty((n_train, pca.n_components_), dtype=np.float32)
    train[fit_rows] = pca.transform(hog_fit)
    del hog_fit
    rest = np.setdiff1d(np.arange(n_train), fit_rows)
    train[rest] = _components(pipeline, dataset.x_train, rest)
    return FeatureSet(train=train, val=_components(pipeline, dataset.x_val),
                      test=_components(pipeline, dataset.x_test),
                      pipeline=pipeline, n_components=n_components)


def _components(pipeline: Pipeline, images: np.ndarray | Rows,
                rows: np.ndarray | None = None) -> np.ndarray:
    """The pipeline's output for these images (those `rows` of them, else all), HOG_CHUNK
    images at a time, as float32: only a chunk of the images is ever copied."""
    rows = np.arange(len(images)) if rows is None else rows
    out = np.empty((len(rows), pipeline.named_steps["pca"].n_components_), dtype=np.float32)
    for start in range(0, len(rows), HOG_CHUNK):
        out[start:start + HOG_CHUNK] = pipeline.transform(images[rows[start:start + HOG_CHUNK]])
    return out


# ----------------------------------------------------------------------------- on disk

PIPELINE_KEYS = ("hog_settings", "pca_mean", "pca_components", "pca_explained_variance",
                 "pca_explained_variance_ratio", "pca_singular_values", "pca_noise_variance",
                 "pca_n_samples", "pca_whiten")
MAX_PIPELINE_BYTES = 256 << 20  # 100 components of 4,356 HOG values: 3.5 MB


def _hog_json() -> str:
    return json.dumps(HOG_SETTINGS, sort_keys=True)


def pipeline_arrays(pipeline: Pipeline) -> dict[str, np.ndarray]:
    """What a fitted HOG/PCA pipeline is, as arrays of numbers (and its HOG settings as text)."""
    pca = pipeline.named_steps["pca"]
    return {"hog_settings": np.array(_hog_json()), "pca_mean": pca.mean_,
            "pca_components": pca.components_, "pca_explained_variance": pca.explained_variance_,
            "pca_explained_variance_ratio": pca.explained_variance_ratio_,
            "pca_singular_values": pca.singular_values_,
            "pca_noise_variance": np.array(pca.noise_variance_, dtype=np.float64),
            "pca_n_samples": np.array(pca.n_samples_), "pca_whiten": np.array(bool(pca.whiten))}


def _floats(arrays: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(arrays[key])
    if value.dtype.kind != "f" or value.shape != shape or not np.isfinite(value).all():
        raise ValueError(f"holds {key} of {value.dtype} {value.shape}; expected finite floats "
                         f"of shape {shape}")
    return value


def pipeline_from_arrays(arrays: Mapping[str, np.ndarray]) -> Pipeline:
    """The pipeline `pipeline_arrays` describes; ValueError says what does not fit."""
    missing = [key for key in PIPELINE_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"lacks {missing}")
    settings = np.asarray(arrays["hog_settings"])
    if settings.dtype.kind != "U" or settings.shape != () or str(settings) != _hog_json():
        raise ValueError(f"was made with other HOG settings than {_hog_json()}")
    components = np.asarray(arrays["pca_components"])
    if components.ndim != 2 or not 0 < components.shape[0] <= components.shape[1]:
        raise ValueError(f"holds PCA components of shape {components.shape}")
    k, d = components.shape
    n_samples, whiten = np.asarray(arrays["pca_n_samples"]), np.asarray(arrays["pca_whiten"])
    if n_samples.dtype.kind not in "iu" or n_samples.shape != () or not n_samples > k:
        raise ValueError(f"holds pca_n_samples {n_samples!r:.40}; expected a count > {k}")
    if whiten.dtype != np.bool_ or whiten.shape != ():
        raise ValueError(f"holds pca_whiten {whiten!r:.40}; expected true or false")
    pca = PCA(n_components=k, whiten=bool(whiten), random_state=0)
    # PCA's fitted attributes, as fit() sets them (scikit-learn's documented attributes).
    pca.components_ = _floats(arrays, "pca_components", (k, d))
    pca.mean_ = _floats(arrays, "pca_mean", (d,))
    pca.explained_variance_ = _floats(arrays, "pca_explained_variance", (k,))
    pca.explained_variance_ratio_ = _floats(arrays, "pca_explained_variance_ratio", (k,))
    pca.singular_values_ = _floats(arrays, "pca_singular_values", (k,))
    pca.noise_variance_ = float(_floats(arrays, "pca_noise_variance", ()))
    pca.n_components_, pca.n_samples_, pca.n_features_in_ = k, int(n_samples), d
    return Pipeline([("hog", HogTransformer()), ("pca", pca)])


def save_pipeline(pipeline: Pipeline, path: str | Path) -> None:
    """The pipeline as an .npz of numbers (`load_pipeline` reads it)."""
    with open(path, "wb") as stream:
        np.savez(stream, allow_pickle=False, **pipeline_arrays(pipeline))


def _declared_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """What reading one entry of an .npz takes: an array's size as its .npy header declares
    it (numpy allocates that before reading a byte of data), another entry's unpacked size."""
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
        except ValueError:  # not an array: NpzFile reads it as bytes
            return info.file_size
        readers = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"{info.filename} is an .npy of version {version}, not 1.0 or 2.0")
        shape, _, dtype = readers[version](stream)
        return math.prod(shape) * dtype.itemsize


def _read_npz(path: str | Path, limit: int | None) -> dict[str, np.ndarray]:
    """Every array of an .npz of numbers (at most `limit` bytes, packed, unpacked and as the
    arrays' headers declare them); pickled data is refused, never loaded."""
    try:
        if limit is not None and os.path.getsize(path) > limit:
            raise ValueError(f"it is larger than {limit >> 20} MiB")
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it is one array")
        with archive:
            zipped = archive.zip
            assert zipped is not None  # an open NpzFile has its zip file
            infos = zipped.infolist()
            if limit is not None and sum(info.file_size for info in infos) > limit:
                raise ValueError(f"it unpacks to more than {limit >> 20} MiB")
            declared = sum(_declared_bytes(zipped, info) for info in infos)
            if limit is not None and declared > limit:
                raise ValueError(f"its arrays' headers declare more than {limit >> 20} MiB")
            return {key: archive[key] for key in archive.files}
    # What a damaged or crafted file raises: a bad zip or header, an entry flagged encrypted
    # (RuntimeError) or packed in a way zipfile lacks (NotImplementedError), bad deflate data,
    # an array too large to allocate.
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError,
            NotImplementedError, zlib.error, MemoryError) as exc:
        text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "pickle" in text or "Object arrays" in text:
            text = "it holds pickled data, which is never loaded"
        raise ValueError(f"is not an .npz of numbers ({text[:120]})") from None


def load_pipeline(path: str | Path) -> Pipeline:
    """The pipeline saved by `save_pipeline`, rebuilt from numbers; ValueError if the file is
    not such an .npz (pickled data in it is refused, not loaded)."""
    return pipeline_from_arrays(_read_npz(path, MAX_PIPELINE_BYTES))


def _read_cache(path: Path) -> FeatureSet:
    if path.is_symlink():  # a cache is untrusted input: no link out of its folder
        raise ValueError(f"{path.name} is a link, not a file of the cache")
    arrays = _read_npz(path, None)
    pipeline = pipeline_from_arrays(arrays)
    k = pipeline.named_steps["pca"].n_components_
    splits = {}
    for name in ("train", "val", "test"):
        value = arrays.get(name)
        if value is None or value.dtype != np.float32 or value.ndim != 2 or value.shape[1] != k:
            raise ValueError(f"its {name} features do not have {k} float32 columns")
        splits[name] = value
    return FeatureSet(**splits, pipeline=pipeline, n_components=k)
