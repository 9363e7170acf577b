"""Leakage-aware splits (allsearch.core.splits): by group and by block, on synthetic images named by
patient; split.csv and the logged params of a study; one-line errors."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allsearch import study
from allsearch.core.config import StudyConfig
from allsearch.core.errors import ConfigError, DataError
from allsearch.core.splits import natural_key
from allsearch.data.dataset import SplitSettings, load_dataset, save_bundle
from allsearch.data.synthetic import make_image
from conftest import one_line_error

CLASSES = ("Benign", "Early", "Pre")


def write_patients(root: Path, *, patients: int = 5, per_patient: int = 4) -> Path:
    """Each class: `patients` patients (P<class><n>) with `per_patient` images each, named
    P11_1.png ... so that a group pattern finds the patient."""
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for p in range(patients):
            for k in range(per_patient):
                image = make_image(label, 100 * p + k, 32)
                Image.fromarray(image).save(folder / f"P{label + 1}{p}_{k}.png")
    return root


def write_frames(root: Path, *, per_class: int = 40) -> Path:
    """Each class: frame1.png ... frameN.png (not zero-padded: name order is not natural)."""
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(1, per_class + 1):
            Image.fromarray(make_image(label, i, 32)).save(folder / f"frame{i}.png")
    return root


def read_table(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_table_matches(dataset) -> list[dict[str, str]]:
    """split.csv lists every image once, and its train/val/test rows are what trains."""
    rows = read_table(dataset.split_csv())
    assert list(rows[0]) == ["file", "class", "group", "part"]
    for part in ("train", "val", "test"):
        listed = [r["file"] for r in rows if r["part"] == part]
        assert tuple(listed) == getattr(dataset, f"files_{part}")
        y = getattr(dataset, f"y_{part}")
        assert [dataset.class_names[i] for i in y] == [r["class"] for r in rows if r["part"] == part]
    return rows


def parts_per_group(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["part"] != "embargo":
            found[row["group"]].add(row["part"])
    return found


GROUPS = SplitSettings("groups", group_pattern=r"^(P\d+)_")


def test_group_split_puts_each_patient_in_one_part(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients")
    dataset = load_dataset(root, split=GROUPS, split_seed=3)
    rows = assert_table_matches(dataset)
    groups = parts_per_group(rows)
    assert len(groups) == 15 and all(len(p) == 1 for p in groups.values())
    for row in rows:
        assert row["group"] == Path(row["file"]).name.split("_")[0]
    # Every class is in every part, and the parts are near 70/15/15 (whole patients of 4).
    for part in ("train", "val", "test"):
        assert set(getattr(dataset, f"y_{part}").tolist()) == {0, 1, 2}
    assert dataset.report.split_sizes == {"train": 36, "val": 12, "test": 12}
    # Deterministic for a seed; the seed, and the kind of split, change the fingerprint.
    again = load_dataset(root, split=GROUPS, split_seed=3)
    assert again.split_csv() == dataset.split_csv()
    assert again.fingerprint == dataset.fingerprint
    assert load_dataset(root, split=GROUPS, split_seed=4).fingerprint != dataset.fingerprint
    assert load_dataset(root, split_seed=3).fingerprint != dataset.fingerprint


def test_a_random_split_mixes_patients_and_its_table_has_no_groups(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients")
    dataset = load_dataset(root, split_seed=3)
    rows = assert_table_matches(dataset)
    assert {r["group"] for r in rows} == {""}
    by_patient = defaultdict(set)
    for row in rows:
        by_patient[Path(row["file"]).name.split("_")[0]].add(row["part"])
    assert any(len(p) > 1 for p in by_patient.values())  # what --split groups prevents
    assert dataset.split_settings.params() == {"split": "random"}


def test_a_groups_file_splits_like_the_pattern(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients")
    by_pattern = load_dataset(root, split=GROUPS)
    table = tmp_path / "groups.csv"
    # Bare file names for one class, paths inside the folder for the others.
    lines = ["file,group"] + [
        f"{r['file'] if r['class'] != 'Pre' else Path(r['file']).name},{r['group']}"
        for r in read_table(by_pattern.split_csv())]
    table.write_text("\n".join(lines) + "\n")
    by_file = load_dataset(root, split=SplitSettings("groups", groups=str(table)))
    assert by_file.split_csv() == by_pattern.split_csv()
    # Another grouping is another dataset: its fingerprint differs.
    table.write_text("\n".join(lines[:-1] + [lines[-1].rsplit(",", 1)[0] + ",P99"]) + "\n")
    regrouped = load_dataset(root, split=SplitSettings("groups", groups=str(table)))
    assert regrouped.fingerprint != by_file.fingerprint


def test_a_bundle_splits_by_group_like_its_folder(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients")
    bundle = save_bundle(root, tmp_path / "patients.npz")
    a = load_dataset(root, split=GROUPS, split_seed=5)
    b = load_dataset(bundle, split=GROUPS, split_seed=5)
    assert b.split_csv() == a.split_csv() and b.fingerprint == a.fingerprint


def test_blocks_are_contiguous_in_natural_order_and_never_shared(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "frames")
    dataset = load_dataset(root, split=SplitSettings("blocks", block_size=4), split_seed=1)
    rows = assert_table_matches(dataset)
    assert all(len(p) == 1 for p in parts_per_group(rows).values())
    for row in rows:  # frame1-4 is block 1, frame5-8 block 2 (not frame1, frame10, ...)
        number = int(row["file"].split("frame")[1].split(".")[0])
        assert row["group"] == f"{row['class']}#block{(number - 1) // 4 + 1}"
    assert "embargo" not in dataset.report.split_sizes


def test_the_embargo_leaves_out_the_files_around_each_boundary(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "frames")
    plain = load_dataset(root, split=SplitSettings("blocks", block_size=5), split_seed=1)
    embargoed = load_dataset(root, split=SplitSettings("blocks", block_size=5, embargo=1),
                             split_seed=1)
    rows = assert_table_matches(embargoed)
    left_out = {r["file"] for r in rows if r["part"] == "embargo"}
    assert left_out and embargoed.report.split_sizes["embargo"] == len(left_out)
    kept = set(embargoed.files_train + embargoed.files_val + embargoed.files_test)
    assert not kept & left_out and len(kept) + len(left_out) == len(rows)
    # Where two neighbouring blocks went to different parts, the last file of one and the
    # first of the other are left out; every other file keeps the part it had.
    plain_part = {r["file"]: r["part"] for r in read_table(plain.split_csv())}
    for name in CLASSES:
        files = sorted((f for f in plain_part if f.startswith(f"{name}/")), key=natural_key)
        expected = set()
        for before, after in zip(files, files[1:], strict=False):
            if plain_part[before] != plain_part[after]:
                expected |= {before, after}
        assert {f for f in left_out if f.startswith(f"{name}/")} == expected
    assert all(r["part"] == plain_part[r["file"]] for r in rows if r["part"] != "embargo")
    assert embargoed.fingerprint != plain.fingerprint


def test_a_file_the_pattern_misses_is_named(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients")
    Image.fromarray(make_image(0, 999, 32)).save(root / "Benign" / "scan_7.png")
    with pytest.raises(DataError, match=r"does not match 1 file name\(s\), e\.g\. Benign/scan_7"
                                        r"\.png; fix the pattern"):
        load_dataset(root, split=GROUPS)


def test_a_class_with_too_few_patients_is_named(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients", patients=2, per_patient=5)
    with pytest.raises(DataError, match=r"class 'Benign' has images of 2 group\(s\) \(P10, P11\)"
                                        r".*at least 3"):
        load_dataset(root, split=GROUPS)


def test_a_groups_file_missing_files_is_named(tmp_path: Path) -> None:
    root = write_patients(tmp_path / "patients")
    table = tmp_path / "groups.csv"
    table.write_text("file,group\nBenign/P10_0.png,P10\n")
    with pytest.raises(DataError, match=r"gives no group for 59 file\(s\), e\.g\. Benign/P10_1"):
        load_dataset(root, split=SplitSettings("groups", groups=str(table)))
    table.write_text("name,patient\nx,y\n")
    with pytest.raises(DataError, match=r"needs a header with columns file,group"):
        load_dataset(root, split=SplitSettings("groups", groups=str(table)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"split": "groups"}, r"--split groups needs one of --group-pattern REGEX"),
    ({"split": "groups", "group_pattern": "P", "groups": "g.csv"}, r"needs one of"),
    ({"split": "groups", "group_pattern": "P("}, r"is not a regular expression"),
    ({"split": "groups", "group_pattern": r"P\d+"}, r"has no capture group"),
    ({"group_pattern": "(P)"}, r"go with --split groups, not --split random"),
    ({"split": "blocks"}, r"--split blocks needs --block-size N"),
    ({"split": "blocks", "block_size": 4, "embargo": 2}, r"use an embargo under half"),
    ({"embargo": 1}, r"go with --split blocks, not --split random"),
    ({"split": "folds"}, r"--split must be one of \['random', 'groups', 'blocks'\]"),
])
def test_settings_that_do_not_fit_together(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StudyConfig(**changes).validate()


def test_study_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_patients(tmp_path / "patients")
    base = ["--data", str(root), "--space", "smoke", "--trials", "1", "--no-progress",
            "--trainer", "standin:0"]
    assert study.main([*base, "--split", "groups", "--group-pattern", r"^(Q\d+)_"]) == 2
    assert "does not match 60 file name(s), e.g. Benign/P10_0.png" in one_line_error(capsys)
    assert study.main([*base, "--split", "blocks", "--block-size", "2", "--embargo", "1"]) == 2
    assert "use an embargo under half the block size" in one_line_error(capsys)


def test_a_study_logs_its_split_on_the_parent_and_every_child(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    root = write_patients(tmp_path / "patients")
    result = study.run_study(trials=2, space="smoke", data=str(root), pruner="none",
                             trainer="standin:0", progress=False, split="groups",
                             group_pattern=r"^(P\d+)_", split_seed=3)
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["split"] == "groups"
    assert parent.data.params["group_pattern"] == r"^(P\d+)_"
    expected = load_dataset(root, split=GROUPS, split_seed=3)
    assert parent.data.params["data_fingerprint"] == expected.fingerprint
    local = client.download_artifacts(result.parent_run_id, "split.csv", str(tmp_path))
    text = Path(local).read_text()
    assert text == expected.split_csv()
    rows = read_table(text)
    assert all(len(p) == 1 for p in parts_per_group(rows).values())
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(children) == 2
    for child in children:
        assert child.data.params["split"] == "groups"
        assert child.data.params["group_pattern"] == r"^(P\d+)_"
        assert child.data.params["data_fingerprint"] == expected.fingerprint
        assert child.data.params["n_train"] == str(sum(r["part"] == "train" for r in rows))


def test_a_recorded_study_writes_split_csv(tmp_path: Path) -> None:
    from allsearch.tracking.recorder import read_runs

    root = write_frames(tmp_path / "frames")
    record = tmp_path / "record"
    result = study.run_study(trials=1, space="smoke", data=str(root), pruner="none",
                             trainer="standin:0", progress=False, record=str(record),
                             split="blocks", block_size=5, embargo=1)
    runs = read_runs(record)
    parent = runs[result.parent_run_id]
    assert parent.params["split"] == "blocks" and parent.params["embargo"] == "1"
    written = (record / "runs" / result.parent_run_id / "split.csv").read_text()
    expected = load_dataset(root, split=SplitSettings("blocks", block_size=5, embargo=1))
    assert written == expected.split_csv()
    child = next(r for r in runs.values() if r.parent == result.parent_run_id)
    assert child.params["block_size"] == "5" and child.params["embargo"] == "1"
    assert int(child.params["n_train"]) == len(expected.y_train)
    assert np.all(np.isin(expected.y_train, [0, 1, 2]))
