"""HOG descriptors reduced by PCA, the paper's hand-made features.

HOG (scikit-image) per image, then PCA (scikit-learn) fitted on the train split only and
applied to val/test, as one scikit-learn pipeline that is kept for prediction on new images.
HOG is the slow part; its matrix is cached on disk beside the pixel cache.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from skimage.feature import hog
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline

from allsearch.data import CacheWarning, Dataset, default_cache_dir

__all__ = ["FeatureSet", "HogTransformer", "add_hog_pca", "N_COMPONENTS", "HOG_SETTINGS"]

N_COMPONENTS = 100
# 8x8-pixel cells and 2x2-cell blocks: the standard Dalal-Triggs layout, which gives
# 4,356 values on a 100x100 image.
HOG_SETTINGS = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2),
                "block_norm": "L2-Hys"}


class HogTransformer(TransformerMixin, BaseEstimator):
    """(N, H, W[, 1]) images in [0, 1] -> (N, n_hog) HOG descriptors; stateless."""

    def fit(self, images: np.ndarray, y: object = None) -> HogTransformer:
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 4:
            images = images[..., 0]
        # skimage's hog releases the GIL in its numpy kernels often enough for threads to help.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            rows = list(pool.map(lambda im: hog(im, **HOG_SETTINGS), images))
        return np.asarray(rows, dtype=np.float32).reshape(len(images), -1)


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
    key = hashlib.sha256(f"{dataset.fingerprint}|{settings}|pca={n_components}".encode())
    cache_file = Path(cache_dir or default_cache_dir()) / f"hogpca-{key.hexdigest()[:20]}.joblib"
    if cache_file.is_file():
        try:
            return dataset.with_features(joblib.load(cache_file))
        except Exception as exc:  # noqa: BLE001  (a stale or damaged file: recompute, overwrite)
            warnings.warn(f"the feature cache {cache_file} is damaged ({type(exc).__name__}); "
                          f"computing the HOG/PCA features again and rewriting it",
                          CacheWarning, stacklevel=2)
    features = _fit(dataset, n_components)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        joblib.dump(features, tmp)
        os.replace(tmp, cache_file)
    except OSError as exc:
        warnings.warn(f"could not write the feature cache {cache_file} ({exc.strerror})",
                      stacklevel=2)
    return dataset.with_features(features)


def _fit(dataset: Dataset, n_components: int) -> FeatureSet:
    hog_step = HogTransformer()
    hog_train = hog_step.transform(dataset.x_train)
    # After centering, n samples span at most n - 1 directions; more would be pure noise.
    limit = min(hog_train.shape[0] - 1, hog_train.shape[1])
    if n_components > limit:
        # Tiny datasets cannot give 100 components: use what PCA allows and say so.
        warnings.warn(f"n_components={n_components} must be <= min(n_samples - 1, n_features)="
                      f"{limit} (n_samples - 1 after centering); using {limit}", stacklevel=3)
        n_components = limit
    # Whitened components have unit variance, a scale the dense branch trains well on.
    pca = PCA(n_components=n_components, whiten=True, random_state=0).fit(hog_train)
    pipeline = Pipeline([("hog", hog_step), ("pca", pca)])
    return FeatureSet(
        train=pca.transform(hog_train).astype(np.float32),
        val=pipeline.transform(dataset.x_val).astype(np.float32),
        test=pipeline.transform(dataset.x_test).astype(np.float32),
        pipeline=pipeline, n_components=n_components,
    )
