"""Accuracy and size (or speed) searched together: objectives, constraints, the Pareto front."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from allsearch import leaderboard, study
from allsearch.engines.confirm import candidates
from allsearch.readers.leaderboard import best_configuration, load_study_runs
from allsearch.tracking.store import resolve_tracking_uri
from conftest import one_line_error

SPACE = """
name: tradeoff
params:
  conv_layers: {type: int, low: 1, high: 3}
  dense_units: {type: categorical, choices: [8, 64]}
fixed: {epochs: 2, batch_size: 16, learning_rate: 0.003, dropout: 0.1}
"""


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tradeoff.yaml"
    path.write_text(SPACE)
    return path


@pytest.mark.train
def test_a_two_objective_study_keeps_tags_and_shows_its_front(tiny_data: Path, space_file: Path,
                                                               capsys) -> None:
    argv = ["--space", str(space_file), "--data", str(tiny_data), "--no-progress",
            "--objectives", "val_accuracy", "n_params", "--constraint", "n_params<=400000",
            "--sampler", "random"]
    from allsearch.engines.samplers import PrunerWarning

    with pytest.warns(PrunerWarning, match="cannot prune trials of several objectives"):
        assert study.main([*argv, "--trials", "4"]) == 0
    assert "Pareto front:" in capsys.readouterr().out
    loaded = optuna.load_study(study_name="tradeoff",
                               storage=f"sqlite:///{Path('mlruns/optuna.db').resolve()}")
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]

    client = MlflowClient(resolve_tracking_uri())
    experiment = client.get_experiment_by_name("tradeoff").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags["allsearch.role"] == "parent")
    trials = [r for r in runs if r.data.tags["allsearch.role"] == "trial"]
    assert all("n_params" in r.data.metrics and "model_size_mb" in r.data.metrics for r in trials)
    on_front = {r.info.run_id for r in trials if r.data.tags.get("pareto_front") == "true"}
    front = {t.user_attrs["mlflow_run_id"] for t in loaded.best_trials}
    assert on_front == front and on_front
    for r in trials:
        assert r.data.tags["feasible"] == str(r.data.metrics["n_params"] <= 400000).lower()
    assert {"pareto_front.png", "pareto_front.csv", "pareto_front.html"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    # The champion: the most accurate trial that meets every constraint.
    feasible = [r for r in trials if r.data.tags["feasible"] == "true"]
    if feasible:
        best = max(feasible, key=lambda r: (r.data.metrics["val_accuracy"], -r.info.start_time))
        champion = client.get_model_version_by_alias("allsearch-tradeoff", "champion")
        assert champion.run_id == best.info.run_id
        # The configurations to confirm, and the best one saved as a space, follow the same
        # rule: only trials meeting every constraint.
        _, frame = load_study_runs("tradeoff")
        assert len(frame) == len(trials) and len(feasible) < len(trials)  # the bound bites
        chosen = {c.run_id for c in candidates(frame, top=len(trials))}
        assert chosen and chosen <= {r.info.run_id for r in feasible}  # one per configuration
        assert best_configuration(frame)[2]["run_id"] == best.info.run_id

    assert leaderboard.main(["--study", "tradeoff", "--pareto", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(table["Run ID"]) <= front and len(table) >= 1
    assert (table["Train Time (s)"] > 0).all()  # every trial's training time, an objective too
    assert table["Validation Accuracy"].is_monotonic_decreasing  # its first objective, maximized

    # Resumed with the same objectives; refused with others.
    assert study.main([*argv, "--trials", "5"]) == 0
    assert len(optuna.load_study(study_name="tradeoff", storage=f"sqlite:///{Path('mlruns/optuna.db').resolve()}").trials) == 5
    capsys.readouterr()
    assert study.main(["--space", str(space_file), "--data", str(tiny_data), "--trials", "6",
                       "--objectives", "val_accuracy", "--no-progress"]) == 2
    assert "optimizes ['val_accuracy', 'n_params']" in one_line_error(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--objectives", "test_accuracy"], "is no objective"),
    (["--objectives", "val_accuracy", "speed"], "is no objective"),
    (["--objectives", "val_accuracy", "val_accuracy"], "names an objective twice"),
    (["--objectives", "val_accuracy", "latency_ms_p50", "--sampler", "cmaes"],
     "--sampler cmaes optimizes one objective"),
    (["--constraint", "speed<=3"], "unknown metric 'speed'"),
    (["--constraint", "latency_ms_p50 about 3"], "is not METRIC<=VALUE"),
    (["--objectives", "val_accuracy", "n_params", "--engine", "keras-tuner"],
     "keras-tuner optimizes one objective"),
])
def test_objective_mistakes_get_one_line(flags: list[str], message: str, tiny_data: Path,
                                         capsys) -> None:
    assert study.main([*flags, "--data", str(tiny_data), "--no-progress", "--trials", "1"]) == 2
    assert message in one_line_error(capsys)
    assert not Path("mlruns/mlflow.db").exists()  # refused before anything was made


def test_a_space_file_names_its_objectives(tmp_path: Path) -> None:
    from allsearch.core.errors import SpaceError
    from allsearch.core.space import load_space

    path = tmp_path / "s.yaml"
    path.write_text(SPACE + "objectives: [val_accuracy, latency_ms_p50]\n")
    assert load_space(path).objectives == ("val_accuracy", "latency_ms_p50")
    path.write_text(SPACE + "objectives: [val_accuracy, test_accuracy]\n")
    with pytest.raises(SpaceError, match="is no objective"):
        load_space(path)


CONSTRAINED = """
name: constrained
params:
  conv_layers: {type: int, low: 1, high: 3}
  dense_units: {type: categorical, choices: [8, 16, 32, 64]}
  learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}
fixed: {epochs: 2, batch_size: 16, dropout: 0.1}
"""
BOUND = "val_accuracy>=0.55"  # the stand-in's accuracy depends on the configuration: some meet it


@pytest.mark.parametrize("sampler, objectives, workers", [  # each sampler, each way to run
    ("tpe", ("val_accuracy",), 1),
    pytest.param("nsga2", ("val_accuracy", "train_time_s"), 2, marks=pytest.mark.slow)])
def test_every_trial_of_a_constrained_study_carries_its_constraint_values(
        sampler: str, objectives: tuple[str, ...], workers: int, tiny_data: Path,
        tmp_path: Path) -> None:
    """TPE and NSGA-II learn feasibility from each trial's constraint values (Optuna's
    Trial.set_constraint); every complete trial has them, in one process and in workers."""
    space_file = tmp_path / "constrained.yaml"
    space_file.write_text(CONSTRAINED)
    result = study.run(space=str(space_file), data=str(tiny_data), trainer="standin:0",
                       sampler=sampler, objectives=objectives, constraints=(BOUND,), trials=6,
                       workers=workers, pruner="none", log_models="none", progress=False)
    loaded = optuna.load_study(study_name=result.study_name,
                               storage=f"sqlite:///{Path('mlruns/optuna.db').resolve()}")
    complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 6
    for trial in complete:
        accuracy = trial.user_attrs["val_accuracy"]
        assert trial.constraints == {BOUND: pytest.approx(0.55 - accuracy)}
        assert trial.user_attrs["feasible"] == (accuracy >= 0.55)
    if not any(t.user_attrs["feasible"] for t in complete):
        return
    # Optuna's best trial and front keep to the feasible trials.
    best = loaded.best_trials if len(objectives) > 1 else [loaded.best_trial]
    assert best and all(t.user_attrs["feasible"] for t in best)
