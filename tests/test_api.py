"""The public API: allsearch.run_study, called twice in one process, returns a StudyResult that
agrees with the Optuna storage and the MLflow store, and leaves the process as it found it."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

import allsearch
from allsearch.core.space import load_space


def process_state() -> dict:
    """What a library call could leave changed in the process (allsearch.study restores it)."""
    loggers = {"": logging.getLogger(), **{n: lg for n, lg in logging.Logger.manager.loggerDict.items()
                                          if isinstance(lg, logging.Logger)}}
    return {
        "loggers": {n: (lg.level, list(lg.handlers), lg.propagate) for n, lg in loggers.items()},
        "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)},
        "hooks": (sys.excepthook, sys.unraisablehook, warnings.formatwarning),
        "warning_filters": list(warnings.filters),
        "environ": dict(os.environ),
        "mlflow": (mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri(), mlflow.get_registry_uri()),
        "random": random.getstate(),
        "frozen": gc.get_freeze_count() > 0,  # (an earlier in-process command may freeze)
    }


def check_against_stores(result: allsearch.StudyResult, space: str) -> None:
    """Every field of `result` against the Optuna storage and the MLflow store themselves."""
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    assert result.parent_run_id == study.user_attrs["mlflow_parent_run_id"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))  # the first among equals
    assert result.best_trial_number == best.number
    assert result.best_params == load_space(space).hparams(best.params).to_dict()
    assert result.best_metrics["val_accuracy"] == pytest.approx(best.value)

    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["allsearch.study"] == result.study_name
    assert parent.info.status == "FINISHED"
    best_run = client.get_run(best.user_attrs["mlflow_run_id"])
    assert result.best_metrics == best_run.data.metrics
    assert best_run.data.tags["trial_number"] == str(result.best_trial_number)


def test_run_study_twice_in_one_process(tiny_data: Path) -> None:
    # The stand-in trainer runs the whole study loop (storage, runs, summary), no model.
    settings = dict(trials=3, space="smoke", data=str(tiny_data), pruner="none",
                    trainer="standin:0.01", progress=False)
    before = process_state()
    first = allsearch.run_study(study_name="first", **settings)
    second = allsearch.run_study(study_name="second", seed=1, **settings)
    after = process_state()
    # Loggers that the libraries' first imports made during the call are theirs: left alone.
    after["loggers"] = {name: after["loggers"][name] for name in before["loggers"]}
    assert after == before

    assert (first.study_name, second.study_name) == ("first", "second")
    assert first.parent_run_id != second.parent_run_id
    for result in (first, second):
        check_against_stores(result, "smoke")
        assert result.storage_url == f"sqlite:///{Path('mlruns/optuna.db').resolve()}"
        assert result.tracking_uri == f"sqlite:///{Path('mlruns/mlflow.db').resolve()}"
        assert result.champion_model_uri is None  # the stand-in logs no model
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.best_trial_number = 0  # type: ignore[misc]

    # The same call resumes: the study is full, nothing runs, the same answer comes back.
    again = allsearch.run_study(study_name="first", **settings)
    assert again == first


def test_run_study_with_record_reads_the_folder(tiny_data: Path, tmp_path: Path) -> None:
    from allsearch.tracking.recorder import read_runs

    record = tmp_path / "record"
    result = allsearch.run_study(trials=2, space="smoke", data=str(tiny_data), pruner="none",
                                 trainer="standin:0.01", progress=False, record=str(record))
    assert result.tracking_uri is None and result.champion_model_uri is None
    assert result.storage_url == f"sqlite:///{(record / 'optuna.db').resolve()}"
    study = optuna.load_study(study_name="smoke", storage=result.storage_url)
    best = max(study.trials, key=lambda t: (t.value, -t.number))
    assert result.best_trial_number == best.number
    runs = read_runs(record)
    assert runs[result.parent_run_id].tags["allsearch.study"] == "smoke"
    assert result.best_metrics == runs[best.user_attrs["mlflow_run_id"]].metrics


def test_run_study_reports_a_setting_it_does_not_know() -> None:
    from allsearch.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['trails'\]"):
        allsearch.run_study(trails=3)


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "back`tick", "back\\slash"])
@pytest.mark.parametrize("record", [False, True])
def test_a_study_name_with_a_quote_is_refused_before_anything_is_written(
        name: str, record: bool, tiny_data: Path, tmp_path: Path, capsys,
        isolated_store: Path) -> None:
    """A quote or backtick in the name broke MLflow's filter strings and a --record study
    midway (a record's lines refuse such a name). Refused at the start, in one line."""
    from allsearch import study
    from conftest import one_line_error

    flags = ["--record", str(tmp_path / "record")] if record else []
    code = study.main(["--study-name", name, "--trials", "1", "--space", "smoke", "--data",
                       str(tiny_data), "--trainer", "standin:0", "--no-progress", *flags])
    assert code == 2
    assert one_line_error(capsys).startswith(f"error: --study-name {name!r} ")
    assert not (tmp_path / "record").exists() and not Path("mlruns").exists()
    assert not isolated_store.exists() or not (isolated_store / "mlflow.db").exists()


def test_password_of_a_store_url_is_not_shown() -> None:
    result = allsearch.StudyResult(
        study_name="s", parent_run_id="p", best_trial_number=None, best_params={},
        best_metrics={}, champion_model_uri=None,
        storage_url="postgresql://user:secret@db/optuna", tracking_uri=None)
    assert "secret" not in repr(result) and "user:***@db" in repr(result)


@pytest.mark.train
def test_run_study_names_the_registered_champion(tiny_data: Path) -> None:
    result = allsearch.run_study(trials=1, space="smoke", data=str(tiny_data), progress=False,
                                 study_name="real")
    assert result.champion_model_uri == "models:/allsearch-real@champion"
    version = MlflowClient(result.tracking_uri).get_model_version_by_alias("allsearch-real",
                                                                           "champion")
    study = optuna.load_study(study_name="real", storage=result.storage_url)
    assert version.run_id == study.trials[result.best_trial_number].user_attrs["mlflow_run_id"]
    assert result.best_metrics["test_accuracy"] >= 0


def test_importing_allsearch_loads_no_heavy_library() -> None:
    probe = ("import sys, allsearch; "
             "print(sorted({'tensorflow', 'keras', 'mlflow', 'optuna'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert "run_study" in dir(allsearch) and "run_study" in allsearch.__all__


def test_a_logging_handler_a_study_adds_is_removed_and_closed(tiny_data: Path,
                                                               tmp_path: Path) -> None:
    """The scope removed a handler a study added to a logger that existed, but never closed
    it (its file stayed open); one the caller already had, moved by the study, stays open."""
    root, ours = logging.getLogger(), logging.getLogger("allsearch-test-caller")
    before = logging.StreamHandler()
    ours.addHandler(before)
    added: list[logging.FileHandler] = []

    def add_handlers(study, trial) -> None:  # an Optuna callback, inside the study
        handler = logging.FileHandler(tmp_path / f"log-{trial.number}.txt")
        root.addHandler(handler)
        root.addHandler(before)
        added.append(handler)

    try:
        allsearch.run_study(trials=1, space="smoke", data=str(tiny_data), trainer="standin:0",
                            progress=False, trial_callbacks=[add_handlers])
        assert len(added) == 1 and added[0] not in root.handlers and before not in root.handlers
        assert added[0].stream is None  # closed: FileHandler.close lets go of its file
        assert ours.handlers == [before] and not before.stream.closed
    finally:
        ours.removeHandler(before)


def test_the_split_kinds_and_the_model_file_names_are_defined_once() -> None:
    """A setting is defined once: the split field's choices and type are allsearch.core.splits'
    KINDS, and no file name constant is assigned the same text in two modules."""
    import ast
    import typing

    from allsearch.core import config, splits

    [split] = [f for f in dataclasses.fields(config.StudyConfig) if f.name == "split"]
    assert split.metadata["choices"] is splits.KINDS
    hints = typing.get_type_hints(config.StudyConfig, vars(config))
    assert typing.get_args(hints["split"]) == splits.KINDS
    defined: dict[str, list[str]] = {}
    for path in sorted(Path(allsearch.__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                    and any(isinstance(t, ast.Name) and t.id.endswith("_FILE")
                            for t in node.targets)):
                defined.setdefault(node.value.value, []).append(path.name)
    assert {text: where for text, where in defined.items() if len(where) > 1} == {}
