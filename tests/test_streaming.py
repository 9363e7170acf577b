"""Pixels streamed from the cache file (`--pixels disk`): the same images and the same training
as from memory, no copy of the pixels in the process, and the cache pair (.npy + .npz) treated
as untrusted input: a damaged array is said and rebuilt."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from test_data_memory import load

from allsearch.core.errors import ConfigError, DataError
from allsearch.core.space import HParams
from allsearch.data.dataset import CacheWarning, load_dataset, pixel_bytes, save_bundle
from allsearch.data.pixel_cache import MEMORY_SHARE, choose_place
from allsearch.data.rows import Rows, concat_rows, take_rows
from allsearch.data.synthetic import write_dataset


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", per_class=12, size=64)


def test_streamed_splits_are_the_same_images_with_no_copy_in_memory(
        folder: Path, isolated_store: Path) -> None:
    cold = load(folder, pixels="disk")  # decoded straight into the cache file
    memory = load(folder, pixels="memory")
    warm = load(folder, pixels="disk")
    assert not cold.report.cache_hit and cold.report.cache_written and warm.report.cache_hit
    assert (cold.report.pixels, warm.report.pixels, memory.report.pixels) == ("disk", "disk", "memory")
    for streamed in (cold, warm):
        for part in ("train", "val", "test"):
            x = getattr(streamed, f"x_{part}")
            assert isinstance(x, Rows) and x.shape == getattr(memory, f"x_{part}").shape
            np.testing.assert_array_equal(np.asarray(x), getattr(memory, f"x_{part}"))
            np.testing.assert_array_equal(getattr(streamed, f"y_{part}"),
                                          getattr(memory, f"y_{part}"))
        assert streamed.fingerprint == memory.fingerprint
        assert pixel_bytes(streamed) == 0 < pixel_bytes(memory)
    # Indexing reads rows as arrays; take/concat select rows without reading them.
    x = warm.x_train
    np.testing.assert_array_equal(x[[3, 0, 3]], memory.x_train[[3, 0, 3]])
    np.testing.assert_array_equal(x[2:5, :4], memory.x_train[2:5, :4])
    assert x[1].shape == memory.x_train[1].shape and x[1].flags.writeable  # a copy
    joined = concat_rows(warm.x_train, warm.x_val)
    assert isinstance(joined, Rows) and isinstance(take_rows(joined, [0, -1]), Rows)
    np.testing.assert_array_equal(np.asarray(take_rows(joined, [0, -1])),
                                  np.concatenate([memory.x_train[:1], memory.x_val[-1:]]))
    cache = isolated_store / "cache"
    assert len(list(cache.glob("pixels-*.npy"))) == len(list(cache.glob("pixels-*.npz"))) == 1
    assert not list(cache.glob("*.tmp"))


def test_the_mapped_file_cannot_be_written_through_the_dataset(folder: Path) -> None:
    streamed = load(folder, pixels="disk")
    with pytest.raises((ValueError, TypeError)):
        streamed.x_train.base[0, 0, 0] = 1  # a read-only map: the cache stays as written


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_a_damaged_pixel_array_is_said_and_rebuilt(folder: Path, isolated_store: Path,
                                                   damage: str) -> None:
    first = load(folder, pixels="memory")
    [npy] = (isolated_store / "cache").glob("pixels-*.npy")
    data = npy.read_bytes()
    if damage == "flip":  # same size, one pixel changed: only the checksum can tell
        npy.write_bytes(data[:-7] + bytes([data[-7] ^ 0xFF]) + data[-6:])
    elif damage == "truncate":
        npy.write_bytes(data[: len(data) // 2])
    else:
        npy.unlink()
    for place in ("disk", "memory"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = load_dataset(folder, pixels=place)
        said = [w for w in caught if issubclass(w.category, CacheWarning)]
        if place == "disk":
            assert len(said) == 1 and "damaged" in str(said[0].message), said
            assert not again.report.cache_hit and again.report.cache_written
        else:
            assert not said and again.report.cache_hit  # rebuilt whole by the load before
        np.testing.assert_array_equal(np.asarray(again.x_train), first.x_train)


def test_a_cache_of_an_earlier_release_is_decoded_again_without_a_warning(
        folder: Path, isolated_store: Path) -> None:
    first = load(folder)
    [npz] = (isolated_store / "cache").glob("pixels-*.npz")
    with np.load(npz) as z:  # the earlier layout: the pixels inside the .npz, no checksum
        old = {"pixels": np.asarray(first.x_train)[..., 0], "labels": z["labels"],
               "files": z["files"], "bad": z["bad"]}
    np.savez(npz, **old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(folder)
    assert not [w for w in caught if issubclass(w.category, CacheWarning)]
    assert not again.report.cache_hit and again.report.cache_written


def test_streaming_needs_a_folder_and_its_cache(folder: Path, tmp_path: Path) -> None:
    bundle = save_bundle(folder, tmp_path / "tiny.npz")
    with pytest.raises(DataError, match="is a bundle, a compressed file that loads into memory"):
        load_dataset(bundle, pixels="disk")
    assert load(bundle, pixels="auto").report.pixels == "memory"
    with pytest.raises(DataError, match="cannot be switched off"):
        load(folder, pixels="disk", use_cache=False)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(DataError, match="could not make the pixel cache .*--pixels memory"):
        load(folder, pixels="disk", cache_dir=blocked / "cache")


def test_auto_streams_where_the_pixels_would_take_over_a_quarter_of_memory() -> None:
    gib = 2**30
    assert MEMORY_SHARE == 0.25
    assert choose_place("auto", 4 * gib, 16 * gib) == "memory"
    assert choose_place("auto", 4 * gib + 1, 16 * gib) == "disk"
    assert choose_place("auto", 100 * gib, None) == "memory"  # unknown memory: as before
    assert choose_place("memory", 100 * gib, 16 * gib) == "memory"
    assert choose_place("disk", 1, 16 * gib) == "disk"
    with pytest.raises(ConfigError, match=r"--pixels must be one of \['auto', 'memory', 'disk'\], got 'dsk'"):
        choose_place("dsk", 1, 16 * gib)


@pytest.mark.train
def test_a_streamed_dataset_trains_exactly_as_one_in_memory(folder: Path) -> None:
    """Same network, seed and batches: the same figures, bit for bit on a CPU, with the
    HOG/PCA branch (features read in chunks from the map) and the folds of --cv."""
    from allsearch.data.features import add_hog_pca
    from allsearch.training.folds import fold_dataset, make_folds
    from allsearch.training.trial import run_trial

    hparams = HParams(epochs=1, batch_size=16, conv_layers=2, features="both")
    results, features = {}, {}
    for place in ("memory", "disk"):
        dataset = add_hog_pca(load(folder, pixels=place), n_components=8)
        fold = fold_dataset(dataset, make_folds(dataset, 2), 1)
        assert isinstance(fold.x_train, Rows) == (place == "disk")
        features[place] = (dataset.features.train, fold.features.train)
        results[place] = [run_trial(d, hparams, seed=3, keep_model=False) for d in (dataset, fold)]
    for memory_part, disk_part in zip(features["memory"], features["disk"], strict=True):
        np.testing.assert_array_equal(disk_part, memory_part)
    for memory, disk in zip(results["memory"], results["disk"], strict=True):
        assert disk.val_accuracy == memory.val_accuracy
        assert disk.test_accuracy == memory.test_accuracy
        np.testing.assert_allclose(disk.test_probabilities, memory.test_probabilities, atol=1e-6)


@pytest.mark.train
def test_a_study_with_pixels_disk_logs_it_and_finishes(folder: Path) -> None:
    import allsearch

    result = allsearch.run_study(trials=1, space="smoke", data=str(folder), pixels="disk",
                                 pruner="none", progress=False, log_models="none")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["pixels"] == "disk" and parent.info.status == "FINISHED"
    assert result.best_trial_number == 0 and 0 <= result.best_metrics["test_accuracy"] <= 1


@pytest.mark.slow
def test_ctrl_c_during_a_streamed_decode_leaves_no_partial_file(tmp_path: Path) -> None:
    """A real `python -m allsearch.data --pixels disk` interrupted while it decodes into the
    cache's file: it ends quietly and leaves neither that file nor a cache pair behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    root = tmp_path / "big"
    ramp = np.add.outer(np.arange(2400), np.arange(2400)).astype(np.uint8)
    for i in range(160):  # large images: seconds of decoding in all
        folder = root / ("A", "B")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(ramp, i, axis=1)).save(folder / f"{i:03d}.png", compress_level=1)
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, "-m", "allsearch.data", str(root), "--pixels", "disk"],
        env={**os.environ, "ALLSEARCH_CACHE_DIR": str(cache)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    # No sleep: the signal lands within a millisecond of the file's making, where an early
    # version left it behind (the file made, not yet handed back)
    while not list(cache.glob("*.tmp")) and time.time() < deadline:
        assert process.poll() is None, process.communicate()
    assert list(cache.glob("*.tmp")), "the decode into the cache's file never started"
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert not list(cache.iterdir()), sorted(p.name for p in cache.iterdir())


def test_a_link_in_the_cache_folder_is_not_followed(folder: Path, isolated_store: Path,
                                                    tmp_path: Path) -> None:
    """The pixel cache is untrusted input: a link where its array was (here to a file of the
    same images elsewhere) is said and replaced by a file of the cache's own."""
    first = load(folder)
    [npy] = (isolated_store / "cache").glob("pixels-*.npy")
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(npy.read_bytes())
    npy.unlink()
    npy.symlink_to(outside)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(folder)
    said = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and "is a link" in str(said[0].message)
    assert not again.report.cache_hit and not npy.is_symlink() and npy.is_file()
    np.testing.assert_array_equal(again.x_train, first.x_train)
