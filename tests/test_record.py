"""--record DIR and `study import DIR`: a study run without MLflow, replayed into MLflow,
holds the same runs a native study holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from allsearch import study
from allsearch.core.contract import RECORDED_ID
from allsearch.core.process_state import left_as_found
from allsearch.tracking.recorder import read_runs
from allsearch.tracking.store import resolve_tracking_uri
from allsearch.training.serving import encode_image, images_frame
from conftest import one_line_error

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
  loss:       {type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}
  features:   {type: categorical, choices: [pixels, hog_pca]}
fixed: {epochs: 2, conv_layers: 2, learning_rate: 0.001, dropout: 0.5, dense_units: 32}
baseline: {batch_size: 8, loss: categorical_crossentropy, features: hog_pca}
"""


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    return path


def children(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`allsearch.role` = 'trial'")
    return sorted(runs, key=lambda r: int(r.data.params["trial_number"]))


@pytest.mark.train
def test_an_imported_record_holds_what_a_native_study_holds(tiny_data: Path, space_file: Path,
                                                            tmp_path: Path) -> None:
    common = {"trials": 2, "space": str(space_file), "data": str(tiny_data), "progress": False,
              "trials_per_process": 0, "pruner": "none", "log_models": "all"}
    study.run(study_name="native", **common)
    record = tmp_path / "record"
    study.run(study_name="recorded", record=str(record), **common)
    client = MlflowClient(resolve_tracking_uri())
    assert client.get_experiment_by_name("recorded") is None  # nothing reached MLflow
    assert sorted(r.tags["state"] for r in read_runs(record).values() if r.parent) == ["COMPLETE"] * 2

    [report] = study.import_record(str(record))
    assert (report.study, report.imported, report.skipped) == ("recorded", 2, 0)
    [again] = study.import_record(str(record))
    assert (again.imported, again.skipped) == (0, 2)

    native, imported = children(client, "native"), children(client, "recorded")
    assert len(native) == len(imported) == 2
    for a, b in zip(native, imported, strict=True):
        assert a.data.params == b.data.params  # same trial, same data, same seeds
        assert set(a.data.metrics) == set(b.data.metrics)
        for name in ("val_accuracy", "test_accuracy", "epochs_run"):
            assert a.data.metrics[name] == pytest.approx(b.data.metrics[name]), name
        assert set(b.data.tags) - set(a.data.tags) == {RECORDED_ID}
        for tag in ("state", "trial_number", "engine", "allsearch.config_key", "allsearch.role"):
            assert a.data.tags[tag] == b.data.tags[tag], tag
        if "duplicate_of" not in b.data.tags:  # a proposal of a done configuration trains none
            assert b.data.tags["model_uri"].startswith("models:/")  # the recorded model
        assert b.info.status == a.info.status == "FINISHED"
        assert ({x.path for x in client.list_artifacts(a.info.run_id)}
                == {x.path for x in client.list_artifacts(b.info.run_id)})
        steps = [[m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
                 for r in (a, b)]
        assert steps[0] == steps[1]
    parent = client.get_run(imported[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert {"leaderboard.csv", "optimization_history.png", "study.json"} <= {
        x.path for x in client.list_artifacts(parent.info.run_id)}
    champion = client.get_model_version_by_alias("allsearch-recorded", "champion")
    assert champion.run_id in {r.info.run_id for r in imported}

    # The HOG/PCA pipeline travels as numbers, and the imported model predicts as the
    # native one does.
    [baseline] = [r for r in read_runs(record).values() if r.tags.get("trial_number") == "0"]
    model = record / "runs" / baseline.run_id / "model"
    assert sorted(p.name for p in model.iterdir()) == ["feature_pipeline.npz", "model.json",
                                                       "model.keras"]
    frame = images_frame([encode_image(p.read_bytes()) for p in sorted(tiny_data.glob("*/*.png"))[:4]])
    before = mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri()
    with left_as_found():  # MLflow's global tracking URI is put back after
        mlflow.set_tracking_uri(resolve_tracking_uri())
        native_p, imported_p = (mlflow.pyfunc.load_model(r.data.tags["model_uri"]).predict(frame)
                                for r in (native[0], imported[0]))
    assert (mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri()) == before
    columns = [c for c in native_p.columns if c.startswith("p_")]
    np.testing.assert_allclose(imported_p[columns].to_numpy(), native_p[columns].to_numpy(),
                               atol=1e-5)


@pytest.mark.train
def test_a_study_records_where_mlflow_is_not_installed(tiny_data: Path, space_file: Path,
                                                       tmp_path: Path) -> None:
    record = tmp_path / "record"
    # mlflow made unimportable, as on a machine that does not have it.
    code = ("import sys; sys.modules['mlflow'] = None; from allsearch import study; "
            f"sys.exit(study.main(['--record', {str(record)!r}, '--space', {str(space_file)!r}, "
            f"'--data', {str(tiny_data)!r}, '--trials', '1', '--no-progress']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    runs = read_runs(record)
    assert [r.tags["state"] for r in runs.values() if r.parent] == ["COMPLETE"]
    assert (record / "optuna.db").is_file()
    assert not Path("mlruns/mlflow.db").exists()


def test_import_of_a_folder_that_is_no_record_is_one_line(tmp_path: Path, capsys) -> None:
    assert study.main(["import", str(tmp_path)]) == 2
    assert "is not a record folder" in one_line_error(capsys)


def test_record_and_tracking_uri_exclude_each_other(capsys) -> None:
    assert study.main(["--record", "x", "--tracking-uri", "sqlite:///y.db"]) == 2
    assert "--record and --tracking-uri" in one_line_error(capsys)
