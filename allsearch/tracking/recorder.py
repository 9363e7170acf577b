"""A study recorded in a folder instead of MLflow: `python -m allsearch.study --record DIR`.

Recorder is an allsearch.core.contract.Store, as allsearch.tracking.tracking.Tracker is, and writes each
call as one JSON line (plus figures, texts and models as files) under DIR, so a machine
without MLflow (a GPU box with Keras on JAX, an air-gapped node) runs the very same
study code. `python -m allsearch.study import DIR` (allsearch.engines.importer) replays the lines
through a Tracker, so imported runs get the params, metrics and tags native runs get.

    DIR/optuna.db                       the study's Optuna storage (unless --storage is given)
    DIR/runs/events-<host>-<pid>-<n>.jsonl  one file per process: {"t", "op", "run", ...}
    DIR/runs/<run id>/<artifact name>   figures, texts, dicts; <run id>/model/ a Keras model
                                        (model.keras, model.json, feature_pipeline.npz)

The format, and how a folder from elsewhere is checked before it is read, is
allsearch.tracking.record_format. Imports neither mlflow nor TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allsearch.core.contract import ROLE, STUDY
from allsearch.core.errors import StoreError
from allsearch.tracking import record_format
from allsearch.tracking.record_format import MODEL_DIR, MODEL_META, NETWORK_FILE, PIPELINE_FILE, RECORD_SCHEME

__all__ = ["Recorder", "RecordedRun", "read_events", "read_runs", "runs_frame", "MODEL_DIR",
           "RECORD_SCHEME"]


def _plain(value: Any) -> Any:
    """A value JSON keeps as the same text MLflow would store (numbers, text, lists, dicts)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return float(value) if hasattr(value, "dtype") else str(value)
    except (TypeError, ValueError):
        return str(value)


class Recorder:
    """One experiment recorded in a folder: an allsearch.core.contract.Store."""

    def __init__(self, folder: str | Path, experiment: str) -> None:
        self.folder = Path(folder).resolve()
        self.experiment_name = experiment
        self.location = f"record folder '{self.folder}'"
        self.folders: tuple[str, ...] = (str(self.folder),)
        self.runs_dir = self.folder / "runs"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            name = f"events-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
            self._file = open(self.runs_dir / name, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._lock = threading.Lock()  # a trial and the background writer both write
        except OSError as exc:
            raise StoreError(f"record folder '{self.folder}' cannot be written ({exc.strerror}); "
                             f"pass --record with a writable folder") from None

    def _write(self, op: str, run: str, **fields: Any) -> None:
        line = {"t": time.time(), "op": op, "run": run, "experiment": self.experiment_name,
                **{k: _plain(v) for k, v in fields.items()}}
        with self._lock:
            self._file.write(json.dumps(line) + "\n")  # one line per call, flushed at once

    def _artifact(self, run_id: str, name: str) -> Path:
        path = self.runs_dir / run_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------- study (parent) runs

    def find_parent(self, study_name: str) -> str | None:
        for run in read_runs(self.folder).values():
            if (run.experiment == self.experiment_name and run.tags.get(ROLE) == "parent"
                    and run.tags.get(STUDY) == study_name):
                return run.run_id
        return None

    def start_parent(self, study_name: str, settings: dict[str, Any],
                     tags: dict[str, Any] | None = None) -> str:
        run_id = uuid.uuid4().hex
        self._write("start_parent", run_id, name=study_name,
                    tags={ROLE: "parent", STUDY: study_name, **(tags or {})}, params=settings)
        return run_id

    def resume_parent(self, run_id: str, settings: dict[str, Any]) -> None:
        self._write("resume_parent", run_id, params=settings)

    # ----------------------------------------------------------------- trial (child) runs

    def start_run(self, *, parent_id: str | None, name: str, params: dict[str, Any],
                  tags: dict[str, Any]) -> str:
        run_id = uuid.uuid4().hex
        self._write("start_run", run_id, parent=parent_id, name=name, params=params, tags=tags)
        return run_id

    def find_run(self, parent_id: str, tags: dict[str, str]
                 ) -> tuple[str, dict[str, float], dict[str, str]] | None:
        for run in read_runs(self.folder).values():
            if run.parent == parent_id and all(run.tags.get(k) == str(v) for k, v in tags.items()):
                return run.run_id, dict(run.metrics), dict(run.tags)
        return None

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(read_runs(self.folder)[run_id].tags)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(read_runs(self.folder)[run_id].metrics)

    def run_status(self, run_id: str) -> str:
        return read_runs(self.folder)[run_id].status

    def run_params(self, run_id: str) -> dict[str, str]:
        return dict(read_runs(self.folder)[run_id].params)

    def runs_frame(self, filter_string: str = "") -> Any:
        """The runs as MLflow's search_runs frame (see the module function runs_frame)."""
        return runs_frame(self.folder, self.experiment_name, filter_string)

    # ----------------------------------------------------------------- writing to a run

    def log_params(self, run_id: str, values: dict[str, Any]) -> None:
        self._write("params", run_id, params=values)

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        self._write("metrics", run_id, metrics=metrics, step=step)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._write("tags", run_id, tags=tags)

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt

        figure.savefig(self._artifact(run_id, name))
        plt.close(figure)
        self._write("figure", run_id, name=name)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self._artifact(run_id, name).write_text(text, encoding="utf-8")
        self._write("text", run_id, name=name)

    def log_dict(self, run_id: str, values: dict[str, Any], name: str) -> None:
        self._artifact(run_id, name).write_text(json.dumps(_plain(values)), encoding="utf-8")
        self._write("dict", run_id, name=name)

    def log_model(self, run_id: str, *, network: Any, class_names: tuple[str, ...],
                  hparams: dict[str, Any], pipeline: Any | None) -> str:
        """The Keras network (and its HOG/PCA pipeline) as files; the import logs them as the
        same MLflow pyfunc a native run gets."""
        folder = self._artifact(run_id, f"{MODEL_DIR}/{NETWORK_FILE}").parent
        network.save(folder / NETWORK_FILE)
        if pipeline is not None:
            from allsearch.data.features import save_pipeline

            save_pipeline(pipeline, folder / PIPELINE_FILE)  # numbers only: never a pickle
        (folder / MODEL_META).write_text(json.dumps({"class_names": list(class_names),
                                                     "hparams": _plain(hparams)}))
        uri = f"{RECORD_SCHEME}{run_id}/{MODEL_DIR}"
        self._write("model", run_id, uri=uri)
        return uri

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._write("end", run_id, status=status)

    def register_champion(self, model_uri: str, model_name: str) -> None:
        """Nothing: a record folder has no model registry; its import registers the champion
        (the imported study's summary does)."""
        return None

    def close(self) -> None:
        self._file.close()


# ----------------------------------------------------------------------------- reading


def read_events(folder: str | Path) -> Iterator[dict[str, Any]]:
    """Every recorded call, in the order they were made (over all processes), each line
    checked (allsearch.tracking.record_format.read_events: a malformed one is a ConfigError)."""
    return (event.data for event in record_format.read_events(folder))


@dataclass
class RecordedRun:
    """A run's state as its recorded calls leave it."""

    run_id: str
    experiment: str
    name: str
    parent: str | None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "RUNNING"
    params: dict[str, str] = field(default_factory=dict)
    start_time: float = 0.0


def read_runs(folder: str | Path) -> dict[str, RecordedRun]:
    """Every recorded run by id, with its latest tags, metrics and status."""
    runs: dict[str, RecordedRun] = {}
    for event in read_events(folder):
        op, run_id = event["op"], event["run"]
        if op in ("start_parent", "start_run"):
            runs[run_id] = RecordedRun(run_id, event["experiment"], event["name"],
                                       event.get("parent"),
                                       {k: str(v) for k, v in event["tags"].items()},
                                       start_time=event["t"])
            _add_params(runs[run_id], event.get("params", {}))
        elif run_id not in runs:
            continue
        elif op in ("params", "resume_parent"):
            _add_params(runs[run_id], event.get("params", {}))
            if op == "resume_parent":
                runs[run_id].status = "RUNNING"
        elif op == "tags":
            runs[run_id].tags.update({k: str(v) for k, v in event["tags"].items()})
        elif op == "metrics":
            runs[run_id].metrics.update(event["metrics"])
        elif op == "end":
            runs[run_id].status = event["status"]
    return runs


def _add_params(run: RecordedRun, values: dict[str, Any]) -> None:
    """Params as MLflow keeps them: text, the first value of a key wins."""
    for key, value in values.items():
        if key not in run.params:
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            run.params[key] = text[:6000]


_CLAUSE = re.compile(r"^\s*(tags|params|attributes)\.`?([^`=]+?)`?\s*=\s*'([^']*)'\s*$")


def runs_frame(folder: str | Path, experiment: str, filter_string: str = "") -> Any:
    """The recorded runs of an experiment as MLflow's search_runs frame (run_id, status,
    start_time, params.*, metrics.*, tags.*), for the filters allsearch writes: clauses
    `tags.X = 'v'`, `params.X = 'v'` and `attributes.status = 'v'` joined by `and`."""
    import pandas as pd

    clauses = []
    for part in re.split(r"\s+and\s+", filter_string.strip()) if filter_string.strip() else []:
        match = _CLAUSE.match(part)
        if match is None:
            raise ValueError(f"a record folder cannot filter runs by {part!r}")
        clauses.append(match.groups())
    rows = []
    for run in read_runs(folder).values():
        if run.experiment != experiment:
            continue
        tags = {**run.tags, **({"mlflow.parentRunId": run.parent} if run.parent else {})}
        fields = {"tags": tags, "params": run.params, "attributes": {"status": run.status}}
        if all(fields[kind].get(name) == value for kind, name, value in clauses):
            rows.append({"run_id": run.run_id, "status": run.status,
                         "start_time": pd.Timestamp(run.start_time, unit="s"),
                         **{f"params.{k}": v for k, v in run.params.items()},
                         **{f"metrics.{k}": v for k, v in run.metrics.items()},
                         **{f"tags.{k}": v for k, v in tags.items()}})
    return pd.DataFrame(rows)
