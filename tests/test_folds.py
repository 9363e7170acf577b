"""Cross-validation (--cv K, allsearch.training.folds) on synthetic images named by patient or in
capture order: folds keep groups and blocks whole and the test part out, each fold's figures
are logged, the pruner hears the running mean, fold 0's model is kept; errors in one line."""

from __future__ import annotations

import csv
import io
import statistics
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from test_splits import GROUPS, write_frames, write_patients

from allsearch import study
from allsearch.core.errors import DataError
from allsearch.core.space import HParams
from allsearch.core.splits import natural_key
from allsearch.data.dataset import SplitSettings, load_dataset
from allsearch.tracking.store import resolve_tracking_uri
from allsearch.tracking.tracked import config_key, run_tracked
from allsearch.tracking.tracking import Tracker
from allsearch.training import standin
from allsearch.training.folds import CrossValidation, fold_dataset, make_folds
from conftest import one_line_error

# A space of many configurations (a continuous rate), so a study's trials differ.
SPACE = """
name: cvspace
params:
  learning_rate: {type: float, low: 0.0001, high: 0.1, log: true}
fixed: {epochs: 2, conv_layers: 2, batch_size: 8, dense_units: 16}
"""


def quiet_load(root: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(root, **kwargs)


def group_of(dataset) -> dict[str, str]:
    return {row[0]: row[2] for row in dataset.split_table.table}


def test_folds_keep_each_patient_whole_and_the_test_part_out(tmp_path: Path) -> None:
    dataset = quiet_load(write_patients(tmp_path / "patients", patients=6, per_patient=3),
                         split=GROUPS, split_seed=3)
    folds = make_folds(dataset, 3)
    groups = group_of(dataset)
    pool = set(dataset.files_train) | set(dataset.files_val)
    assert set(folds.files) == pool and not pool & set(dataset.files_test)
    validating: dict[str, set[int]] = defaultdict(set)
    seen_val: list[str] = []
    for k in range(3):
        fold = fold_dataset(dataset, folds, k)
        # The split's test part, untouched, in every fold; no test file trains or validates.
        assert fold.files_test == dataset.files_test
        assert np.array_equal(fold.x_test, dataset.x_test)
        assert not (set(fold.files_train) | set(fold.files_val)) & set(dataset.files_test)
        # No patient both trains and validates in a fold; every class on both sides.
        assert not {groups[f] for f in fold.files_train} & {groups[f] for f in fold.files_val}
        for part in ("train", "val"):
            assert set(getattr(fold, f"y_{part}").tolist()) == {0, 1, 2}
        for f in fold.files_val:
            validating[groups[f]].add(k)
        seen_val += fold.files_val
        # The images are the files': fold rows point at the dataset's pixels.
        index = {f: i for i, f in enumerate(dataset.files_train)}
        first = fold.files_train[0]
        if first in index:
            assert np.array_equal(fold.x_train[0], dataset.x_train[index[first]])
        assert fold.fingerprint != dataset.fingerprint
    # Each patient validates in exactly one fold; the validation parts cover the pool once.
    assert all(len(k) == 1 for k in validating.values())
    assert sorted(seen_val) == sorted(pool)
    # Deterministic for the split seed.
    assert np.array_equal(make_folds(dataset, 3).fold, folds.fold)


def test_folds_of_blocks_leave_out_the_embargo_around_each_boundary(tmp_path: Path) -> None:
    dataset = quiet_load(write_frames(tmp_path / "frames", per_class=60),
                         split=SplitSettings("blocks", block_size=5, embargo=1), split_seed=1)
    folds = make_folds(dataset, 3)
    groups = group_of(dataset)
    rows = list(csv.DictReader(io.StringIO(folds.csv())))
    assert list(rows[0]) == ["file", "class", "group", "fold", "left_out"]
    assert [r["file"] for r in rows] == list(folds.files)
    assert {r["group"] for r in rows} == {groups[f] for f in folds.files}
    for k in range(3):
        fold = fold_dataset(dataset, folds, k)
        assert not {groups[f] for f in fold.files_train} & {groups[f] for f in fold.files_val}
        kept = set(fold.files_train) | set(fold.files_val)
        left_out = {r["file"] for r in rows if str(k) in r["left_out"].split(";")}
        assert left_out and not left_out & kept and kept | left_out == set(folds.files)
        # Left out: the last file before and the first after each boundary between this
        # fold's training and validation blocks (in natural order, within a class).
        side = {r["file"]: r["fold"] == str(k) for r in rows}
        for name in ("Benign", "Early", "Pre"):
            files = sorted((f for f in side if f.startswith(f"{name}/")), key=natural_key)
            expected = set()
            for before, after in zip(files, files[1:], strict=False):
                if side[before] != side[after]:
                    expected |= {before, after}
            assert {f for f in left_out if f.startswith(f"{name}/")} == expected


def test_folds_of_a_random_split_are_stratified_by_image(tmp_path: Path, tiny_data: Path) -> None:
    dataset = quiet_load(tiny_data)
    folds = make_folds(dataset, 2)
    assert set(folds.groups) == {""}
    for k in range(2):
        fold = fold_dataset(dataset, folds, k)
        assert set(fold.y_val.tolist()) == set(range(dataset.n_classes))
        assert not set(fold.files_train) & set(fold.files_val)


def test_too_many_folds_for_a_class_is_said_in_one_line(tmp_path: Path) -> None:
    dataset = quiet_load(write_patients(tmp_path / "patients", patients=5, per_patient=3),
                         split=GROUPS, split_seed=3)
    # 5 patients a class, one of them in the test part: 4 outside it (3 named, "...").
    with pytest.raises(DataError, match=r"^--cv 5: class 'Benign' has 4 group\(s\) \(P1\d, P1\d, "
                                        r"P1\d, \.\.\.\) outside the test part.*use --cv 4 or fewer"):
        make_folds(dataset, 5)
    random = quiet_load(tmp_path / "patients", split_seed=3)
    with pytest.raises(DataError, match=r"class 'Benign' has \d+ image\(s\) outside the test"):
        make_folds(random, 20)


def test_cv_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_patients(tmp_path / "patients", patients=5, per_patient=3)
    base = ["--data", str(root), "--space", "smoke", "--trials", "1", "--no-progress",
            "--trainer", "standin:0", "--split", "groups", "--group-pattern", r"^(P\d+)_"]
    for flags, said in (
            (["--cv", "1"], "--cv must be 0 (one validation part) or a number of folds >= 2, got 1"),
            (["--cv", "9"], "--cv 9: class 'Benign' has 4 group(s)"),
            (["--cv", "3", "--repeats", "2"], "--cv 3 and --repeats 2 exclude each other"),
            (["--cv", "3", "--engine", "keras-tuner"], "--cv works with --engine optuna only")):
        assert study.main([*base, *flags]) == 2
        assert said in one_line_error(capsys)
    # Refused before anything was written: no study, no experiment.
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


STAND_IN = standin.stand_in


class ByFold:
    """A stand-in trainer whose validation accuracy depends on the fold it gets (its
    validation files), so that a mean over folds differs from any one fold."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, dataset, hparams, **kwargs):
        result = STAND_IN(0.0)(dataset, hparams, **kwargs)
        self.calls.append(dataset.files_val)
        result.val_accuracy = 0.3 + 0.1 * len(self.calls) + hparams.learning_rate
        return result


def test_each_fold_is_logged_and_the_run_holds_their_mean(tmp_path: Path) -> None:
    dataset = quiet_load(write_patients(tmp_path / "patients", patients=6, per_patient=3),
                         split=GROUPS)
    folds = make_folds(dataset, 3)
    reports: list[tuple[int, float, bool]] = []
    trainer = ByFold()
    tracker = Tracker("folds")
    hparams = HParams(epochs=2, learning_rate=0.01)
    tracked = run_tracked(tracker, parent_id=None, name="cv", dataset=dataset, hparams=hparams,
                          seeds=[0], params={}, trainer=trainer,
                          cv=CrossValidation(dataset, folds, report=lambda *a: reports.append(a)))
    assert trainer.calls == [fold_dataset(dataset, folds, k).files_val for k in range(3)]
    values = [0.41, 0.51, 0.61]
    client = MlflowClient(tracker.tracking_uri)
    history = client.get_metric_history(tracked.run_id, "fold_val_accuracy")
    assert [(m.step, round(m.value, 6)) for m in history] == list(enumerate(values))
    assert len(client.get_metric_history(tracked.run_id, "fold_test_accuracy")) == 3
    # The pruner hears the running mean after each fold; the last is flagged.
    assert [(k, round(v, 6), last) for k, v, last in reports] == [
        (0, 0.41, False), (1, 0.46, False), (2, 0.51, True)]
    metrics = client.get_run(tracked.run_id).data.metrics
    assert metrics["val_accuracy"] == pytest.approx(statistics.fmean(values))
    assert metrics["val_accuracy_sd"] == pytest.approx(statistics.stdev(values))
    assert "repeats" not in metrics and "repeat_val_accuracy" not in metrics
    # The folds are part of the computation: a cv run is no duplicate of a plain one.
    plain = config_key(hparams, seeds=[0], dataset=dataset, precision="float32")
    assert tracker.run_tags(tracked.run_id)["allsearch.config_key"] == config_key(
        hparams, seeds=[0], dataset=dataset, precision="float32", cv=3) != plain


@pytest.mark.slow
def test_a_study_under_cv_prunes_on_the_running_mean(tmp_path: Path, monkeypatch) -> None:
    root = write_patients(tmp_path / "patients", patients=6, per_patient=3)
    space = tmp_path / "cvspace.yaml"
    space.write_text(SPACE)
    monkeypatch.setattr(standin, "stand_in", lambda seconds: ByFold())
    result = study.run_study(trials=14, space=str(space), data=str(root), trainer="standin:0",
                             progress=False, split="groups", group_pattern=r"^(P\d+)_", cv=3,
                             pruner="median", seed=2)
    trials = optuna.load_study(study_name="cvspace", storage=result.storage_url).trials
    client = MlflowClient(result.tracking_uri)
    states = []
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        if "duplicate_of" in run.data.tags:
            continue
        folds = [m.value for m in client.get_metric_history(run.info.run_id, "fold_val_accuracy")]
        # What the pruner heard is the running mean of the folds the run logged.
        assert t.intermediate_values == pytest.approx(
            {k: statistics.fmean(folds[:k + 1]) for k in range(len(folds))})
        assert run.data.params["cv"] == "3"
        states.append((t.state, len(folds), run.data.tags["state"]))
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == pytest.approx(statistics.fmean(folds))
    assert (optuna.trial.TrialState.COMPLETE, 3, "COMPLETE") in states
    pruned = [s for s in states if s[0] == optuna.trial.TrialState.PRUNED]
    # Pruned before its last fold (a trial whose folds all trained is complete).
    assert pruned and all(n < 3 and tag == "PRUNED" for _, n, tag in pruned)
    # The parent holds the folds, as make_folds deals them.
    local = client.download_artifacts(result.parent_run_id, "folds.csv", str(tmp_path))
    expected = make_folds(quiet_load(root, split=GROUPS), 3)
    assert Path(local).read_text() == expected.csv()
    assert client.get_run(result.parent_run_id).data.params["cv"] == "3"


@pytest.mark.train
def test_a_trial_under_cv_keeps_fold_0s_model_and_the_mean_test_accuracy(tmp_path: Path) -> None:
    from allsearch.training.trial import run_trial

    root = write_patients(tmp_path / "patients", patients=5, per_patient=3)
    space = tmp_path / "one.yaml"
    space.write_text("name: one\nparams: {}\nfixed: {epochs: 1, conv_layers: 1, batch_size: 16, "
                     "dense_units: 8}\n")
    result = study.run_study(trials=1, space=str(space), data=str(root), progress=False,
                             split="groups", group_pattern=r"^(P\d+)_", cv=2, pruner="none",
                             log_models="all", precision="float32")
    client = MlflowClient(result.tracking_uri)
    run_id = client.get_run(result.parent_run_id).data.tags["best.mlflow_run_id"]
    metrics = client.get_run(run_id).data.metrics
    tests = [m.value for m in client.get_metric_history(run_id, "fold_test_accuracy")]
    assert len(tests) == 2 and metrics["test_accuracy"] == pytest.approx(statistics.fmean(tests))
    # The model and the test predictions on the run are fold 0's (trained alike here: a CPU
    # is deterministic for a seed).
    dataset = quiet_load(root, split=GROUPS)
    fold0 = run_trial(fold_dataset(dataset, make_folds(dataset, 2), 0),
                      HParams(**result.best_params), seed=0)
    assert fold0.test_accuracy == pytest.approx(tests[0])
    local = client.download_artifacts(run_id, "test_predictions.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(local).read_text())))
    assert [r["file"] for r in rows] == list(dataset.files_test)
    probabilities = np.array([[float(r[f"p_{c}"]) for c in dataset.class_names] for r in rows])
    assert np.allclose(probabilities, fold0.test_probabilities, atol=1e-5)
    assert "model_uri" in client.get_run(run_id).data.tags


def test_the_progress_line_counts_folds_under_cv() -> None:
    from allsearch.core.config import StudyConfig
    from allsearch.core.space import load_space
    from allsearch.engines.optuna_engine import progress_bar

    study_ = optuna.create_study(direction="maximize")
    trial = study_.ask()
    trial.report(0.5, step=1)  # after the second fold
    bar = progress_bar(study_, StudyConfig(trials=3, cv=4), load_space("smoke"))
    try:
        bar.refresh(force=True)
        assert "#0 fold 2/4 val 0.500" in bar.bar.postfix
    finally:
        bar.close()


def test_a_recorded_study_under_cv_keeps_its_folds_through_the_import(tmp_path: Path) -> None:
    from allsearch.tracking.recorder import read_runs

    root = write_frames(tmp_path / "frames", per_class=60)
    record = tmp_path / "record"
    result = study.run_study(trials=1, space="smoke", data=str(root), trainer="standin:0",
                             progress=False, record=str(record), split="blocks", block_size=5,
                             embargo=1, cv=3, pruner="none")
    written = (record / "runs" / result.parent_run_id / "folds.csv").read_text()
    dataset = quiet_load(root, split=SplitSettings("blocks", block_size=5, embargo=1))
    assert written == make_folds(dataset, 3).csv()
    [child] = [r for r in read_runs(record).values() if r.parent == result.parent_run_id]
    assert child.params["cv"] == "3" and "fold_val_accuracy" in child.metrics
    [report] = study.import_record(record)
    assert report.imported == 1
    client = MlflowClient(resolve_tracking_uri())
    [run] = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                               "tags.`allsearch.role` = 'trial'")
    history = client.get_metric_history(run.info.run_id, "fold_val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert run.data.metrics["val_accuracy"] == pytest.approx(
        statistics.fmean(m.value for m in history))


def test_each_fold_fits_its_own_hog_pca_on_its_training_part(tiny_data: Path) -> None:
    from allsearch.data.features import HogTransformer, add_hog_pca

    dataset = add_hog_pca(quiet_load(tiny_data))
    folds = make_folds(dataset, 2)
    for k in range(2):
        fold = fold_dataset(dataset, folds, k)
        assert fold.features is not dataset.features
        assert fold.features.train.shape[0] == len(fold.y_train)
        assert fold.features.val.shape[0] == len(fold.y_val)
        assert fold.features.test.shape[0] == len(dataset.y_test)
        pca = fold.features.pipeline.named_steps["pca"]
        assert np.allclose(pca.mean_, HogTransformer().transform(fold.x_train).mean(0), atol=1e-5)
