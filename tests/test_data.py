"""The data pipeline: discovery, duplicates, split, cache, conversions, and its errors."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allsearch.core.errors import DataError
from allsearch.data import __main__ as data_command
from allsearch.data.dataset import load_dataset
from allsearch.data.images import image_to_array
from allsearch.data.synthetic import write_dataset


def load(path: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(path, **kwargs)


def test_shapes_range_and_counts(tiny_data: Path) -> None:
    ds = load(tiny_data)
    assert ds.class_names == ("Benign", "Early", "Pre", "Pro")
    # uint8 pixels (the network's float32 in [0, 1] is made per batch: test_data_memory.py)
    assert ds.x_train.shape[1:] == (100, 100, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_train.max() > 1
    assert ds.report.n_files == 49  # 48 images + the duplicate copy
    assert sum(ds.report.split_sizes.values()) == 48
    assert ds.report.class_counts == {"Benign": 12, "Early": 12, "Pre": 12, "Pro": 12}


def test_duplicates_dropped_before_split(tiny_data: Path) -> None:
    ds = load(tiny_data)
    assert ds.report.duplicates_dropped == 1
    every_file = ds.files_train + ds.files_val + ds.files_test
    assert len(every_file) == len(set(every_file)) == 48
    assert "Pro/copy_of_000.png" not in every_file  # the later name of the pair goes


def test_skips_hidden_and_non_image_files_with_a_warning(tiny_data: Path) -> None:
    with pytest.warns(UserWarning, match="notes.txt: not an image"):
        ds = load_dataset(tiny_data)
    reasons = dict(ds.report.skipped)
    assert reasons["Benign/notes.txt"].startswith("not an image")
    assert reasons["Benign/.DS_Store"] == "hidden file"


def test_split_is_stratified_and_deterministic(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", per_class=40, duplicate=False, junk=False)
    a, b = load(root, split_seed=3), load(root, split_seed=3)
    assert a.files_test == b.files_test and a.files_train == b.files_train
    c = load(root, split_seed=4)
    assert c.files_test != a.files_test
    sizes = a.report.split_sizes
    assert (sizes["train"], sizes["val"], sizes["test"]) == (112, 24, 24)
    for split in ("train", "val", "test"):
        counts = Counter(getattr(a, f"y_{split}").tolist())
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


def test_second_load_hits_the_cache(tiny_data: Path, isolated_store: Path) -> None:
    first = load(tiny_data)
    second = load(tiny_data)
    assert not first.report.cache_hit and second.report.cache_hit
    assert list((isolated_store / "cache").glob("pixels-*.npz"))
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert first.fingerprint == second.fingerprint


def test_cache_notices_changed_content(tiny_data: Path) -> None:
    first = load(tiny_data)
    target = tiny_data / "Early" / "Early_003.png"
    Image.fromarray(np.full((48, 48), 255, np.uint8)).save(target)
    second = load(tiny_data)
    assert not second.report.cache_hit
    assert second.fingerprint != first.fingerprint


def test_fingerprint_depends_on_split_seed(tiny_data: Path) -> None:
    assert load(tiny_data, split_seed=1).fingerprint != load(tiny_data, split_seed=2).fingerprint


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "I;16", "LA", "L"])
def test_every_image_mode_becomes_100x100_gray(mode: str) -> None:
    base = np.zeros((30, 50), np.uint8)
    base[:, 25:] = 200
    gray = Image.fromarray(base)
    if mode == "I;16":
        image = Image.fromarray(base.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = gray.convert(mode)
    out = image_to_array(image)
    assert out.shape == (100, 100) and out.dtype == np.uint8
    assert out[:, :40].mean() < 20 and out[:, 60:].mean() > 150, mode


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; pass --data"):
        load_dataset(tmp_path / "nope")


def test_file_path_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(f)


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="has no class folders"):
        load(tmp_path / "flat")


def test_single_class(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "one", classes=("Only",), duplicate=False, junk=False)
    with pytest.raises(DataError, match="only 1 class"):
        load(root)


def test_class_too_small_names_the_class(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", duplicate=False, junk=False)
    for f in sorted((root / "Pre").iterdir())[3:]:
        f.unlink()
    with pytest.raises(DataError, match=r"class 'Pre' .* has 3 usable image\(s\); .* at least 7"):
        load(root)


def test_corrupt_images_are_skipped_and_named(tiny_data: Path) -> None:
    (tiny_data / "Early" / "zero.png").write_bytes(b"")
    good = (tiny_data / "Early" / "Early_000.png").read_bytes()
    (tiny_data / "Early" / "truncated.png").write_bytes(good[: len(good) // 3])
    (tiny_data / "Early" / "garbage.jpg").write_bytes(b"not really a jpeg" * 10)
    with pytest.warns(UserWarning, match="zero.png: empty file"):
        ds = load_dataset(tiny_data)
    reasons = dict(ds.report.skipped)
    assert "Early/zero.png" in reasons and "Early/garbage.jpg" in reasons
    assert "Early/truncated.png" in reasons
    assert ds.report.class_counts["Early"] == 12


def test_default_data_download_failure_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DataError) as info:
        load_dataset(None)
    message = str(info.value)
    assert "downloading mehradaria/leukemia failed (Failed to resolve" in message
    assert "kaggle.com/datasets/mehradaria/leukemia" in message and "--data PATH" in message
    assert "downloading the Kaggle dataset" in capsys.readouterr().err


def test_cli_json_report(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert data_command.main([str(tiny_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_files"] == 49 and report["duplicates_dropped"] == 1
    assert report["split_sizes"] == {"train": 34, "val": 7, "test": 7}
    assert len(report["fingerprint"]) == 16


def test_cli_text_report_and_error(tiny_data: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert data_command.main([str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "duplicates:  1 exact duplicate(s) dropped" in out and "fingerprint:" in out
    assert data_command.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data folder") and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.real_data
def test_real_original_dataset(real_data: Path) -> None:
    ds = load(real_data / "Original")
    assert ds.report.n_files == 3256
    assert ds.report.duplicates_dropped == 40
    assert ds.report.class_counts == {"Benign": 504, "Early": 985, "Pre": 963, "Pro": 764}
    assert ds.report.split_sizes == {"train": 2251, "val": 482, "test": 483}


def test_a_bundle_splits_like_its_folder_for_any_split_seed(tiny_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from allsearch.data import __main__ as data_command

    bundle = tmp_path / "tiny.npz"
    assert data_command.main([str(tiny_data), "--bundle", str(bundle)]) == 0
    assert bundle.is_file() and "bundle:" in capsys.readouterr().err
    for seed in (42, 7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folder = load_dataset(tiny_data, split_seed=seed)
        packed = load_dataset(bundle, split_seed=seed)
        assert packed.fingerprint == folder.fingerprint and packed.split_seed == seed
        assert packed.files_test == folder.files_test and packed.class_names == folder.class_names
        assert (packed.x_train == folder.x_train).all() and (packed.y_val == folder.y_val).all()
        assert packed.report.skipped == folder.report.skipped
        assert packed.report.duplicates_dropped == folder.report.duplicates_dropped == 1


def test_a_file_that_is_no_bundle_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "x.npz"
    fake.write_bytes(b"not a bundle")
    with pytest.raises(DataError, match="is not a dataset bundle"):
        load_dataset(fake)
