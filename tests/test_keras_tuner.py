"""The KerasTuner engine logs exactly what the Optuna engine logs, resumes, and keeps its own
working files under mlruns/."""

from __future__ import annotations

from pathlib import Path

import pytest

from allsearch import study
from allsearch.core.space import load_space
from allsearch.engines.kt_engine import hyperparameters
from allsearch.readers import leaderboard as leaderboard_lib
from allsearch.tracking.tracking import Tracker

SPACE = """name: kt
objective: val_accuracy
params:
  batch_size: {type: categorical, choices: [16, 32]}
  epochs: {type: int, low: 1, high: 3}
  learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}
fixed: {conv_layers: 2, dense_units: 16, loss: categorical_crossentropy}
baseline: {batch_size: 32, epochs: 2, learning_rate: 0.001}
"""


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "kt.yaml"
    path.write_text(SPACE)
    return path


def child_runs(name: str):
    tracker = Tracker(name)
    parent = tracker.find_parent(name)
    return tracker, parent, tracker.runs_frame(f"tags.`mlflow.parentRunId` = '{parent}'")


def test_space_translates_into_keras_tuner_hyperparameters(space_file: Path) -> None:
    space = load_space(str(space_file))
    hp = hyperparameters(space, tuner="random")
    assert {h.name for h in hp.space} == {"batch_size", "epochs", "learning_rate"}
    lr = hp.get_config()["space"][2]["config"]
    assert lr["sampling"] == "log" and lr["min_value"] == 0.0001
    # Hyperband owns the epochs: it is not sampled there.
    assert {h.name for h in hyperparameters(space, tuner="hyperband").space} == {
        "batch_size", "learning_rate"}


@pytest.mark.train
@pytest.mark.slow
def test_keras_tuner_runs_are_shaped_like_optuna_runs(tiny_data: Path, space_file: Path,
                                                      tmp_path: Path) -> None:
    common = dict(space=str(space_file), data=str(tiny_data), log_models="none", progress=False,
                  precision="float32", trials_per_process=0)
    study.run(trials=2, study_name="by-optuna", pruner="none", **common)
    result = study.run(trials=2, study_name="by-kt", engine="keras-tuner", tuner="random",
                       **common)
    assert result.name == "by-kt"
    _, optuna_parent, optuna_runs = child_runs("by-optuna")
    tracker, kt_parent, kt_runs = child_runs("by-kt")
    assert len(kt_runs) == 2 and set(kt_runs["tags.state"]) == {"COMPLETE"}
    assert sorted(kt_runs["tags.mlflow.runName"]) == ["trial-0000", "trial-0001"]

    def keys(runs, prefix: str) -> set[str]:
        return {c for c in runs.columns if c.startswith(prefix) and runs[c].notna().any()}

    # The same params (KerasTuner adds only which tuner), metrics and tags.
    assert keys(kt_runs, "params.") - {"params.tuner"} == keys(optuna_runs, "params.")
    assert keys(kt_runs, "metrics.") == keys(optuna_runs, "metrics.")
    assert keys(kt_runs, "tags.") == keys(optuna_runs, "tags.")
    assert set(kt_runs["params.engine"]) == {"keras-tuner"}
    baseline = kt_runs[kt_runs["tags.trial_number"] == "0"].iloc[0]
    assert (baseline["params.batch_size"], baseline["params.epochs"]) == ("32", "2")

    table = leaderboard_lib.study_table(tracker, kt_parent)
    assert len(table) == 2 and table["Validation Accuracy"].notna().all()
    parent = tracker.client.get_run(kt_parent)
    assert parent.data.params["engine"] == "keras-tuner" and parent.data.params["tuner"] == "random"
    assert {"leaderboard.csv", "leaderboard.html"} <= {
        a.path for a in tracker.client.list_artifacts(kt_parent)}
    # KerasTuner's own files live under mlruns/, not in the working directory.
    assert (tmp_path / "mlruns" / "keras-tuner" / "by-kt" / "oracle.json").is_file()
    assert not any(p.name.startswith(("trial_", "oracle")) for p in tmp_path.iterdir())

    # Resume: the same command with a larger total runs only the missing trial.
    study.run(trials=3, study_name="by-kt", engine="keras-tuner", tuner="random", **common)
    _, same_parent, kt_runs = child_runs("by-kt")
    assert same_parent == kt_parent and len(kt_runs) == 3
    assert sorted(kt_runs["tags.trial_number"].astype(int)) == [0, 1, 2]


@pytest.mark.train
@pytest.mark.slow
def test_hyperband_trains_the_epochs_of_its_brackets(tiny_data: Path, space_file: Path) -> None:
    study.run(trials=4, study_name="hb", engine="keras-tuner", tuner="hyperband",
              space=str(space_file), data=str(tiny_data), log_models="none", progress=False,
              precision="float32", trials_per_process=0)
    _, _, runs = child_runs("hb")
    assert len(runs) == 4 and set(runs["tags.state"]) == {"COMPLETE"}
    tuned = runs[runs["tags.trial_number"] != "0"]
    # max_epochs 3, factor 3: the first bracket trains 1 epoch per configuration.
    assert set(tuned["params.epochs"].astype(int)) <= {1, 3}
    assert (tuned["metrics.epochs_run"] == tuned["params.epochs"].astype(float)).all()


def test_keras_tuner_refuses_several_workers(tiny_data: Path, space_file: Path) -> None:
    with pytest.raises(study.ConfigError, match="--engine keras-tuner runs one worker"):
        study.run(trials=2, engine="keras-tuner", workers=2, space=str(space_file),
                  data=str(tiny_data), progress=False)


@pytest.mark.parametrize("tuner", ["hyperband", "bayesian", "random"])
def test_the_oracle_stops_at_the_trial_budget_and_at_the_deadline(tuner: str, space_file: Path,
                                                                   tmp_path: Path) -> None:
    """KerasTuner's oracles through their public extension point (populate_space): no trial
    past the study's budget (Hyperband has no max_trials argument), none past --timeout."""
    import time

    import keras_tuner

    from allsearch.core.config import StudyConfig
    from allsearch.engines.kt_engine import make_oracle

    space = load_space(str(space_file))
    config = StudyConfig(space=str(space_file), engine="keras-tuner", tuner=tuner)

    class Untrained(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):  # a score, no model
            return {"val_accuracy": float(trial.hyperparameters.get("learning_rate"))}

    def trials_run(**bounds) -> int:
        oracle = make_oracle(config, space, hyperparameters(space, tuner=tuner), **bounds)
        searched = Untrained(oracle=oracle, directory=str(tmp_path), overwrite=True,
                             project_name=f"{tuner}-{len(list(tmp_path.iterdir()))}")
        searched.search(verbose=0)
        return len(searched.oracle.get_best_trials(num_trials=100))

    assert trials_run(max_trials=2) == 2
    assert trials_run(max_trials=5, deadline=time.monotonic() - 1) == 0
