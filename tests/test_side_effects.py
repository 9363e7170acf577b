"""Importing allsearch changes nothing in the caller's process (docs/design.md, the import rule),
and a library call leaves MLflow as the caller set it (the URI rule).

A fresh interpreter imports the libraries allsearch builds on, takes a snapshot of the
process-wide state a library could change (logging levels and handlers, signal handlers, fd 2,
the unraisable hook, matplotlib's backend, MLflow's URIs, the garbage collector, the
environment), imports every allsearch module, and compares. In this process, a caller with
MLflow pointed at its own store and a run of its own active calls run_study, the readers and
predict on another store: MLflow's URIs, variables and active run are the caller's after each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SNAPSHOT = textwrap.dedent("""
    import gc, json, logging, os, signal, sys

    def snapshot():
        import matplotlib
        import mlflow
        loggers = {"": logging.getLogger()}
        loggers.update((name, logger) for name, logger in logging.root.manager.loggerDict.items()
                       if isinstance(logger, logging.Logger))
        return {
            "logging": {name: [logger.level, [repr(h) for h in logger.handlers],
                               logger.propagate, logger.disabled]
                        for name, logger in loggers.items()},
            "signals": {s.name: repr(signal.getsignal(s))
                        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)},
            "fd2": [os.fstat(2).st_dev, os.fstat(2).st_ino],
            "unraisablehook": repr(sys.unraisablehook),
            "excepthook": repr(sys.excepthook),
            # A copy does not resolve the backend (reading the global rcParams would pick one).
            "backend": repr(matplotlib.rcParams.copy()["backend"]),
            "mlflow": [os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_registry_uri()
                       if mlflow.is_tracking_uri_set() else None, mlflow.is_tracking_uri_set()],
            "gc": [gc.isenabled(), gc.get_freeze_count(), gc.get_threshold()],
            "environ": {k: v for k, v in os.environ.items() if "TELEMETRY" not in k},
        }
""")

PROBE = SNAPSHOT + textwrap.dedent("""
    import importlib, pkgutil
    # What allsearch builds on, imported first: their own import-time changes are theirs.
    import keras, keras_tuner, matplotlib.pyplot, mlflow, optuna, sklearn, skimage, tensorflow
    before = snapshot()
    import allsearch
    names = sorted(m.name for m in pkgutil.walk_packages(allsearch.__path__, "allsearch."))
    for name in names:
        importlib.import_module(name)
    after = snapshot()
    print(json.dumps({"modules": names, "before": before, "after": after}))
""")


def _differences(before: dict, after: dict) -> list[str]:
    found = []
    for key in before:
        old, new = before[key], after[key]
        if isinstance(old, dict):
            for name in sorted(set(old) | set(new)):
                if name in old and old.get(name) != new.get(name):
                    found.append(f"{key}[{name!r}]: {old.get(name)!r} -> {new.get(name)!r}")
                elif name not in old and key == "environ":
                    found.append(f"environ[{name!r}] set to {new[name]!r}")
        elif old != new:
            found.append(f"{key}: {old!r} -> {new!r}")
    return found


def test_importing_every_module_changes_nothing_in_the_process():
    # The libraries' own start-up messages go to stderr; the snapshot is the last stdout line.
    # The suite's own settings (conftest.py) are left out, so the probe sees a user's process.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(probe["modules"]) > 20, probe["modules"]
    assert _differences(probe["before"], probe["after"]) == []


def mlflow_state() -> dict[str, Any]:
    """What a library call could leave changed of MLflow's global state."""
    import mlflow

    active = mlflow.active_run()
    return {"tracking": (mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri()),
            "registry": mlflow.get_registry_uri(),
            "variables": {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
            "active_run": active.info.run_id if active is not None else None}


@pytest.fixture
def caller_mlflow(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A caller's MLflow: its own tracking store and registry, and a run of its own active.
    Yields the state a library call must leave; puts MLflow back for the next test."""
    import mlflow

    from allsearch.core.process_state import left_as_found

    (tmp_path / "caller").mkdir()
    with left_as_found():
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'caller' / 'mlflow.db'}")
        mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'caller' / 'registry.db'}")
        with mlflow.start_run(run_name="the caller's"):
            yield mlflow_state()


def study_settings(tiny_data: Path, tmp_path: Path) -> dict[str, Any]:
    return dict(space="smoke", data=str(tiny_data), pruner="none", progress=False,
                tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def test_run_study_and_the_readers_leave_mlflow_as_the_caller_set_it(
        tiny_data: Path, tmp_path: Path, caller_mlflow: dict[str, Any]) -> None:
    """Tracker.runs_frame and store.runs_of_parent (the leaderboard's) set MLflow's global
    tracking URI and left it set; run_study's own scope hid that from its caller only."""
    import allsearch
    from allsearch.readers import leaderboard
    from allsearch.tracking.store import runs_of_parent
    from allsearch.tracking.tracking import Tracker

    result = allsearch.run_study(trials=2, trainer="standin:0.01",
                                 **study_settings(tiny_data, tmp_path))
    assert mlflow_state() == caller_mlflow
    frame = runs_of_parent(result.parent_run_id, tracking_uri=result.tracking_uri)
    assert len(frame) == 2 and mlflow_state() == caller_mlflow
    tracker = Tracker(result.study_name, tracking_uri=result.tracking_uri)
    assert len(leaderboard.study_table(tracker, result.parent_run_id)) == 2
    assert mlflow_state() == caller_mlflow


@pytest.mark.train
def test_a_study_and_predict_leave_the_callers_active_run_and_uris(
        tiny_data: Path, tmp_path: Path, caller_mlflow: dict[str, Any]) -> None:
    """Logging a trial's model resumed its run as MLflow's active run, which MLflow refused
    beside a caller's active run (the trial failed; no champion); predict's load_classifier
    set the global URIs to the model's store and left them."""
    import mlflow

    import allsearch
    from allsearch.readers import predict

    result = allsearch.run_study(trials=1, **study_settings(tiny_data, tmp_path))
    assert result.champion_model_uri == f"models:/allsearch-{result.study_name}@champion"
    assert mlflow_state() == caller_mlflow
    loaded = predict.load_classifier(result.champion_model_uri, tracking_uri=result.tracking_uri)
    assert mlflow_state() == caller_mlflow
    images = predict.collect_images([tiny_data / "Benign"])
    frame = predict.predict_files(loaded, images)
    assert len(frame) == len(images) > 0 and mlflow_state() == caller_mlflow
    # The caller's run is still theirs, running, in their own store.
    caller_run = mlflow.get_run(caller_mlflow["active_run"])
    assert caller_run.info.status == "RUNNING" and caller_run.info.run_name == "the caller's"
