"""HOG + PCA: fitted on the train split only, applied to val/test, cached."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from allsearch.data.dataset import load_dataset
from allsearch.data.features import HogTransformer, add_hog_pca
from allsearch.data.synthetic import write_dataset


@pytest.fixture
def dataset(tmp_path: Path):
    root = write_dataset(tmp_path / "d", per_class=20, duplicate=False, junk=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(root)


def test_pca_is_fitted_on_train_only(dataset) -> None:
    ds = add_hog_pca(dataset, n_components=10)
    pca = ds.features.pipeline.named_steps["pca"]
    hog_train = HogTransformer().transform(ds.x_train)
    hog_all = HogTransformer().transform(np.concatenate([ds.x_train, ds.x_val, ds.x_test]))
    np.testing.assert_allclose(pca.mean_, hog_train.mean(axis=0), rtol=1e-4, atol=1e-6)
    assert not np.allclose(pca.mean_, hog_all.mean(axis=0), rtol=1e-4, atol=1e-6)
    assert pca.n_samples_ == len(ds.x_train)


def test_shapes_and_transform_of_new_images(dataset) -> None:
    ds = add_hog_pca(dataset, n_components=10)
    f = ds.features
    assert f.train.shape == (len(ds.x_train), 10) and f.val.shape == (len(ds.x_val), 10)
    np.testing.assert_allclose(f.pipeline.transform(ds.x_test), f.test, rtol=1e-4, atol=1e-4)
    # Whitened: unit variance on the data PCA was fitted on.
    np.testing.assert_allclose(f.train.std(axis=0, ddof=1), 1.0, rtol=1e-2)


def test_components_capped_by_train_size_with_a_warning(dataset) -> None:
    with pytest.warns(UserWarning, match="n_components=100 must be <="):
        ds = add_hog_pca(dataset)
    assert ds.features.n_components == len(ds.x_train) - 1


def test_features_are_cached(dataset, isolated_store: Path) -> None:
    first = add_hog_pca(dataset, n_components=10)
    assert list((isolated_store / "cache").glob("hogpca-*.npz"))
    second = add_hog_pca(dataset, n_components=10)
    np.testing.assert_array_equal(first.features.val, second.features.val)


def test_a_link_in_place_of_the_feature_cache_is_not_followed(dataset, isolated_store: Path,
                                                                tmp_path: Path) -> None:
    first = add_hog_pca(dataset, n_components=10)
    [cache] = (isolated_store / "cache").glob("hogpca-*.npz")
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes(cache.read_bytes())
    cache.unlink()
    cache.symlink_to(outside)
    from allsearch.data.dataset import CacheWarning

    with pytest.warns(CacheWarning, match=r"is damaged \(ValueError\)"):
        again = add_hog_pca(dataset, n_components=10)
    assert not cache.is_symlink() and cache.is_file()  # rewritten as the cache's own file
    np.testing.assert_array_equal(first.features.val, again.features.val)


@pytest.mark.parametrize("whiten", [True, False])
def test_a_saved_pipeline_loads_back_to_the_same_transform(whiten: bool, dataset,
                                                           tmp_path: Path) -> None:
    """save_pipeline -> load_pipeline: numbers only, and the same features, whitened or not."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline

    from allsearch.data.features import load_pipeline, save_pipeline

    hog = HogTransformer()
    pca = PCA(n_components=10, whiten=whiten, random_state=0).fit(hog.transform(dataset.x_train))
    fitted = Pipeline([("hog", hog), ("pca", pca)])
    save_pipeline(fitted, tmp_path / "pipeline.npz")
    loaded = load_pipeline(tmp_path / "pipeline.npz")
    assert loaded.named_steps["pca"].whiten is whiten
    expected = fitted.transform(dataset.x_test)
    # Equal attributes; the products differ by float32 rounding (measured: at most 4e-6).
    np.testing.assert_allclose(loaded.transform(dataset.x_test), expected, rtol=1e-5, atol=1e-5)
    # The two cases differ: whitened components have unit variance on the train images.
    spread = loaded.transform(dataset.x_train).std(axis=0, ddof=1)
    assert np.allclose(spread, 1.0, rtol=1e-2) is whiten
