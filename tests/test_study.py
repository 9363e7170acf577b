"""The Optuna engine end to end on synthetic data: parent/child runs, pruning, resume, champion."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from allsearch import study as study_mod
from allsearch.core.space import load_space
from allsearch.engines import optuna_engine
from allsearch.tracking.store import resolve_tracking_uri
from conftest import fail_on_call

SPACE = """
name: tiny
params:
  epochs:     {type: int, low: 1, high: 2}
  batch_size: {type: categorical, choices: [8, 16]}
  loss:       {type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}
fixed: {conv_layers: 5, learning_rate: 0.001, dropout: 0.5, dense_units: 32, features: pixels}
baseline: {epochs: 2, batch_size: 8, loss: categorical_crossentropy}
"""


class PruneOddTrials(optuna.pruners.BasePruner):
    """Deterministic pruning for tests: odd-numbered trials stop after their first epoch."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    return path


def child_runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("allsearch.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("allsearch.role") == "trial"]
    return parents, children


@pytest.mark.train
def test_study_with_pruning_resumes_under_one_parent(tiny_data: Path, space_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optuna_engine, "make_pruner", lambda name, space, **kw: PruneOddTrials())
    first = study_mod.run(trials=3, space=str(space_file), data=str(tiny_data), progress=False,
                          trials_per_process=0, retrain_duplicates=True)
    states = [t.state for t in first.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.COMPLETE]
    assert first.trials[0].params == {"epochs": 2, "batch_size": 8, "loss": "categorical_crossentropy"}
    assert first.trials[0].user_attrs["baseline"] is True

    resumed = study_mod.run(trials=4, space=str(space_file), data=str(tiny_data), progress=False,
                            trials_per_process=0, retrain_duplicates=True)
    assert len(resumed.trials) == 4 and resumed.trials[3].state == optuna.trial.TrialState.PRUNED

    client = MlflowClient(resolve_tracking_uri())
    parents, children = child_runs(client, "tiny")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert resumed.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_number = {int(c.data.params["trial_number"]): c for c in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    assert [by_number[i].data.tags["state"] for i in range(4)] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    for number in (0, 2):
        metrics = by_number[number].data.metrics
        for name in ("val_accuracy", "test_accuracy", "val_prediction_time_s",
                     "test_prediction_time_s", "latency_ms_p50", "latency_ms_p95",
                     "epochs_run", "train_time_s", "loss", "accuracy", "val_loss"):
            assert name in metrics, (number, name)
        assert by_number[number].data.params["engine"] == "optuna"
    pruned = by_number[1]
    assert pruned.data.metrics["epochs_run"] == 1
    pruned_artifacts = {a.path for a in client.list_artifacts(pruned.info.run_id)}
    assert "learning_curves.png" in pruned_artifacts

    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "leaderboard.csv", "study.json"} <= parent_artifacts
    assert parent.data.params["sampler"] if "sampler" in parent.data.params else parent.data.tags["sampler"] == "tpe"
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(resumed.best_value)

    best_run_id = resumed.best_trial.user_attrs["mlflow_run_id"]
    version = client.get_model_version_by_alias("allsearch-tiny", "champion")
    assert version.run_id == best_run_id

    summary = study_mod.summarize(resumed)
    assert "best trial #" in summary and "paper's Table 1" in summary


@pytest.mark.slow
def test_same_seed_same_configurations(tiny_data: Path, space_file: Path) -> None:
    # Sampling is what is tested: the stand-in trainer runs the whole study loop, no model.
    kwargs = dict(trials=3, space=str(space_file), data=str(tiny_data), seed=7, pruner="none",
                  log_models="none", progress=False, trials_per_process=0,
                  trainer="standin:0")
    a = study_mod.run(study_name="a", **kwargs)
    b = study_mod.run(study_name="b", **kwargs)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    c = study_mod.run(study_name="c", **{**kwargs, "seed": 8})
    assert [t.params for t in c.trials][1:] != [t.params for t in a.trials][1:]


@pytest.mark.train
def test_failed_trial_is_recorded_and_the_study_goes_on(tiny_data: Path, space_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import allsearch.tracking.tracked as tracked_mod

    fail_on_call(monkeypatch, tracked_mod, "run_trial", 2, RuntimeError("simulated failure in training"))
    result = study_mod.run(trials=3, space=str(space_file), data=str(tiny_data), pruner="none",
                           log_models="none", progress=False, trials_per_process=0,
                           retrain_duplicates=True)
    assert [t.state.name for t in result.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    _, children = child_runs(MlflowClient(resolve_tracking_uri()), "tiny")
    failed = [c for c in children if c.data.tags["state"] == "FAIL"]
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert "simulated failure" in failed[0].data.tags["error"]


@pytest.mark.train
def test_repeats_log_mean_and_spread(tiny_data: Path, space_file: Path) -> None:
    result = study_mod.run(trials=1, space=str(space_file), data=str(tiny_data), repeats=2,
                           pruner="none", log_models="none", progress=False)  # in a worker process
    _, children = child_runs(MlflowClient(resolve_tracking_uri()), "tiny")
    metrics = children[0].data.metrics
    assert metrics["repeats"] == 2 and "val_accuracy_sd" in metrics and "test_accuracy_sd" in metrics
    recalls = [m for m in metrics if m.startswith("test_recall_") and not m.endswith("_sd")]
    assert len(recalls) == 4 and all(f"{m}_sd" in metrics for m in recalls)
    assert metrics["peak_rss_mb"] > 100
    history = MlflowClient(resolve_tracking_uri()).get_metric_history(children[0].info.run_id,
                                                                    "repeat_val_accuracy")
    assert [m.step for m in history] == [0, 1]
    mean = sum(m.value for m in history) / 2
    assert result.trials[0].value == pytest.approx(mean)


@pytest.mark.train
@pytest.mark.slow
def test_two_local_workers_share_one_study(tiny_data: Path, space_file: Path) -> None:
    result = study_mod.run(trials=4, space=str(space_file), data=str(tiny_data), workers=2,
                           pruner="none", log_models="none", progress=False)
    finished = [t for t in result.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4
    parents, children = child_runs(MlflowClient(resolve_tracking_uri()), "tiny")
    assert len(parents) == 1 and len(children) == 4
    assert sorted(int(c.data.params["trial_number"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


@pytest.mark.parametrize("argv, message", [
    (["--trials", "0"], "--trials must be a positive integer, got 0"),
    (["--trials-per-process", "-1"], "--trials-per-process must be 0 (no limit)"),
    (["--repeats", "-1"], "--repeats must be a positive integer"),
    (["--workers", "0"], "--workers must be a positive integer"),
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--space", "nope"], "search space 'nope' not found"),
    (["--storage", "not-a-url"], "is not a database URL"),
])
def test_cli_mistakes_get_one_line(argv: list[str], message: str, tiny_data: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    code = study_mod.main([*argv, "--data", str(tiny_data), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


@pytest.mark.train
def test_a_configuration_proposed_again_is_not_trained_again(tiny_data: Path, tmp_path: Path) -> None:
    space = tmp_path / "one.yaml"
    space.write_text(SPACE.replace("choices: [8, 16]", "choices: [8]").replace(
        "choices: [categorical_crossentropy, binary_crossentropy]", "choices: [categorical_crossentropy]"
    ).replace("{type: int, low: 1, high: 2}", "{type: int, low: 2, high: 2}"))
    result = study_mod.run(trials=3, space=str(space), data=str(tiny_data), pruner="none",
                           log_models="none", progress=False, trials_per_process=0)
    assert [t.value for t in result.trials] == [result.trials[0].value] * 3
    assert [t.user_attrs.get("duplicate_of") for t in result.trials] == [None, 0, 0]
    client = MlflowClient(resolve_tracking_uri())
    copy = client.get_run(result.trials[2].user_attrs["mlflow_run_id"])
    assert copy.data.tags["duplicate_of"] == "0" and copy.data.tags["state"] == "COMPLETE"
    assert copy.data.metrics["test_accuracy"] == result.trials[0].user_attrs["test_accuracy"]
    assert "train_time_s" in copy.data.metrics


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_grid_ids_mean_the_same_point_in_every_worker_process(tmp_path: Path) -> None:
    # Each worker process opens the study with its own sampler seed (TPE must not propose the
    # same trials in every process); a grid sampler must still shuffle its grid the same way,
    # or a stored grid id names another point in each process (duplicates and gaps).
    space_file = tmp_path / "grid.yaml"
    space_file.write_text("params:\n  features: {type: categorical, choices: [pixels, hog_pca, both]}\n"
                          "  batch_size: {type: categorical, choices: [8, 16]}\n")
    space = load_space(space_file)
    config = study_mod.StudyConfig(space=str(space_file), sampler="grid", study_name="grid")
    workers = [optuna_engine.open_study(config, space, sampler_seed=seed).study
               for seed in (None, 1000, 2000, 3000)]
    for n in range(6):  # the processes take turns, as they finish trials
        workers[n % 4].optimize(lambda trial: space.sample(trial) and 0.0, n_trials=1)
    points = [tuple(sorted(t.params.items())) for t in workers[0].trials]
    assert len(set(points)) == 6  # the whole grid, each point once
    # TPE: each process its own stream (a study of its own, so each proposes a first trial).
    tpe_file = tmp_path / "tpe.yaml"
    tpe_file.write_text("params:\n  learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n")
    tpe_space = load_space(tpe_file)
    first = []
    for seed in (1000, 2000):
        tpe = study_mod.StudyConfig(space=str(tpe_file), sampler="tpe", study_name=f"tpe-{seed}")
        proposed = optuna_engine.open_study(tpe, tpe_space, sampler_seed=seed).study.ask()
        first.append(tpe_space.sample(proposed).learning_rate)
    assert first[0] != first[1]

@pytest.mark.parametrize("module, argv", [
    ("study", []), ("study", ["import", "folder"]), ("data", []), ("leaderboard", []),
    ("table1", []), ("confirm", ["--study", "s"]), ("ui", []), ("predict", ["image.png"]),
    ("proxy", []),
])
def test_no_command_takes_an_abbreviated_flag(module: str, argv: list[str],
                                               capsys: pytest.CaptureFixture) -> None:
    """`--debu` would be `--debug` to argparse; every command takes a flag only as written,
    and says so in one line (exit code 2), before it does anything."""
    import importlib

    command = importlib.import_module(f"allsearch.{module}")
    if hasattr(command, "__path__"):  # a package's command is its __main__ (allsearch.data)
        command = importlib.import_module(f"allsearch.{module}.__main__")
    main = command.main
    with pytest.raises(SystemExit) as info:
        main([*argv, "--debu"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.splitlines() == [f"error: unrecognized arguments: --debu (see python -m "
                                f"allsearch.{module}{' import' if argv[:1] == ['import'] else ''}"
                                f" --help)"]


def test_work_is_not_workers(tmp_path: Path) -> None:
    """`--work 2` is refused in one line, not taken for `--workers 2` (nor `--time 60` for
    `--timeout 60`)."""
    import subprocess
    import sys

    for flags in (["--work", "2"], ["--time", "60"]):
        done = subprocess.run([sys.executable, "-m", "allsearch.study", *flags, "--data",
                               str(tmp_path / "none")], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"error: unrecognized arguments: {' '.join(flags)} "
                                            f"(see python -m allsearch.study --help)"]
