"""Data at scale: pixels stay uint8 from the decode to the network (one buffer for every
split), the network sees the float32 it always saw, and HOG/PCA never holds every image's HOG.
Memory is checked by what the arrays hold, not by timing or peak RSS (benchmarks/data.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from allsearch.core.splits import SplitSettings
from allsearch.data import features as features_module
from allsearch.data.dataset import load_dataset, pixel_bytes
from allsearch.data.features import HogTransformer, add_hog_pca
from allsearch.data.images import decode_file, to_network_input
from allsearch.data.synthetic import write_dataset

GOAL_BYTES_PER_IMAGE = 20 * 1024  # 100x100 gray: 10,000 bytes as uint8, 40,000 as float32


def load(root: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(root, **kwargs)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", per_class=15, size=100, duplicate=False, junk=False)


def test_pixels_stay_uint8_in_one_buffer_of_at_most_20_kb_per_image(folder: Path) -> None:
    for _ in range(2):  # a cold load (decode) and a warm one (the pixel cache)
        ds = load(folder)
        splits = (ds.x_train, ds.x_val, ds.x_test)
        assert all(x.dtype == np.uint8 and x.shape[1:] == (100, 100, 1) for x in splits)
        n = sum(len(x) for x in splits)
        assert pixel_bytes(ds) / n <= GOAL_BYTES_PER_IMAGE
        assert pixel_bytes(ds) == n * 100 * 100  # the splits share one buffer
    assert ds.report.cache_hit and {"hash", "cache_read", "split"} <= set(ds.report.stage_s)


@pytest.mark.parametrize("split", [SplitSettings(), SplitSettings("blocks", block_size=4, embargo=1)])
def test_each_split_holds_its_own_files_pixels(folder: Path, split: SplitSettings) -> None:
    """The in-place reorder gives every split exactly its files' pixels (embargo left out)."""
    ds = load(folder, split=split, split_seed=3)
    for x, files in ((ds.x_train, ds.files_train), (ds.x_val, ds.files_val),
                     (ds.x_test, ds.files_test)):
        expected = np.stack([decode_file(folder / f) for f in files])[..., None]
        np.testing.assert_array_equal(x, expected)
    assert (ds.report.split_sizes.get("embargo", 0) > 0) == (split.kind == "blocks")


def test_batches_give_the_network_the_floats_it_always_had(folder: Path) -> None:
    """Batch by batch, the network gets to_network_input of the pixels (what the dataset held
    before as float32), bit for bit; every image once an epoch, in a seeded order."""
    from allsearch.training.batches import Batches

    ds = load(folder)
    labels = np.arange(len(ds.x_train))
    before = to_network_input(np.concatenate([ds.x_train]))  # the old float32 x_train
    epochs = []
    for seed in (5, 5):
        batches = Batches(ds.x_train, labels, batch_size=8, seed=seed)
        orders = []
        for _ in range(2):
            got = [batches[i] for i in range(len(batches))]
            x = np.concatenate([b[0] for b in got])
            order = np.concatenate([b[1] for b in got])
            assert x.dtype == np.float32 and np.array_equal(x, before[order])
            assert sorted(order.tolist()) == labels.tolist()
            orders.append(order)
            batches.on_epoch_end()
        assert orders[0].tolist() != orders[1].tolist()  # a new order each epoch
        epochs.append(orders)
    assert [o.tolist() for o in epochs[0]] == [o.tolist() for o in epochs[1]]  # seeded
    plain = Batches({"pixels": ds.x_test, "hog_pca": np.ones((len(ds.x_test), 3), np.float32)},
                    batch_size=8)
    first = plain[0][0]
    assert np.array_equal(first["pixels"], to_network_input(ds.x_test[:8]))
    assert np.array_equal(first["hog_pca"], np.ones((8, 3), np.float32))


def test_the_timed_prediction_sees_the_floats_it_always_had(folder: Path) -> None:
    """A network that returns its input: run_trial's timed test prediction and its one-image
    latency feed it the float32 the dataset used to hold."""
    import keras

    from allsearch.training.trial import latency_ms, timed_predict, trace_predict

    ds = load(folder)
    image = keras.Input(shape=(100, 100, 1))
    model = keras.Model(image, keras.layers.Flatten()(image))
    trace_predict(model, ds.x_test)
    seen, seconds = timed_predict(model, ds.x_test)
    assert seconds > 0
    assert np.array_equal(seen, to_network_input(ds.x_test).reshape(len(ds.x_test), -1))
    assert 0 < latency_ms(model, ds.x_test)[0]


def test_chunked_hog_equals_the_whole_at_once(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOG a few images at a time, and PCA fitted on every training image when they are no
    more than PCA_FIT_IMAGES: the features of the all-at-once fit (to 1e-5)."""
    ds = load(folder)
    whole = HogTransformer().transform(to_network_input(ds.x_train))
    monkeypatch.setattr(features_module, "HOG_CHUNK", 7)
    assert np.array_equal(HogTransformer().transform(ds.x_train), whole)
    fitted = add_hog_pca(ds, n_components=10).features
    pca = PCA(n_components=10, whiten=True, random_state=0).fit(whole)
    assert fitted.pipeline.named_steps["pca"].n_samples_ == len(ds.x_train)
    np.testing.assert_allclose(fitted.train, pca.transform(whole), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        fitted.test, pca.transform(HogTransformer().transform(to_network_input(ds.x_test))),
        rtol=1e-5, atol=1e-5)


def test_pca_of_a_large_set_is_fitted_on_a_bounded_sample(folder: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """More training images than PCA_FIT_IMAGES: PCA sees a seeded sample of that many, every
    image still gets its components (those the kept pipeline gives it), and the cache keeps
    such features apart from a fit on every image."""
    ds = load(folder)
    monkeypatch.setattr(features_module, "HOG_CHUNK", 5)
    monkeypatch.setattr(features_module, "PCA_FIT_IMAGES", 20)
    assert len(ds.x_train) > 20
    sampled = add_hog_pca(ds, n_components=10).features
    assert sampled.pipeline.named_steps["pca"].n_samples_ == 20
    np.testing.assert_allclose(sampled.train, sampled.pipeline.transform(ds.x_train),
                               rtol=1e-5, atol=1e-5)
    assert add_hog_pca(load(folder), n_components=10).features.pipeline.named_steps[
        "pca"].n_samples_ == 20  # from its cache
    monkeypatch.setattr(features_module, "PCA_FIT_IMAGES", 5000)
    assert add_hog_pca(load(folder), n_components=10).features.pipeline.named_steps[
        "pca"].n_samples_ == len(ds.x_train)  # not the sampled fit's cache
