"""The MLflow store of studies: Tracker, the one class through which runs are written.

Layout (docs/design.md): one experiment per study, one parent run per study, one child run per
trial carrying `mlflow.parentRunId`, so runs nest in the UI also when other processes or
machines write them. Everything goes through one MlflowClient given its URIs. MLflow's global
URIs are set only for the few fluent calls that know no other store (logging and registering
a model, the runs as a pandas frame), each inside process_state.mlflow_fluent, which puts them
back, and the caller's active run, when it ends. Tracker is an allsearch.core.contract.Store, as
allsearch.tracking.recorder.Recorder (a folder, for machines without MLflow) is; the trial code never
knows which it has.

The modules that import mlflow: this one, store (which store, opened read-only), serving (the logged model), predict (loads it) and
importer (replays a record folder through a Tracker).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from allsearch.core.config import SERVER_WAIT_S
from allsearch.core.contract import CHAMPION_ALIAS, ROLE, STUDY, folder_name
from allsearch.core.errors import StoreError, first_line, lost_schema_race, redact
from allsearch.core.hardware import package_versions
from allsearch.core.process_state import mlflow_fluent
from allsearch.tracking import sqlite_store
from allsearch.tracking.outage import ServerWait, Waiting
from allsearch.tracking.store import STORE_ERRORS, check_tracking_uri, resolve_tracking_uri

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_ARTIFACT_ROOT", "Tracker", "param_text", "SERVING_PACKAGES"]

DEFAULT_ARTIFACT_ROOT = Path("mlruns/artifacts")
# What the logged model needs where it is served (its own code travels with it).
SERVING_PACKAGES = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "scikit-learn",
                    "scikit-image", "pillow", "joblib")
SCHEMA_RACE_ATTEMPTS = 6  # a fresh store's schema made by two processes at once


class Tracker:
    """One experiment in one MLflow tracking store. Calls to a tracking server that stopped
    answering wait for it, aloud, `server_wait` seconds at most (allsearch.tracking.outage)."""

    def __init__(self, experiment: str, *, tracking_uri: str | None = None,
                 server_wait: float = SERVER_WAIT_S) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.location = f"MLflow store '{redact(self.tracking_uri)}'"
        self.experiment_name = experiment
        self._study_of_parent: dict[str, str] = {}
        self._wait = (ServerWait(self.tracking_uri, server_wait)
                      if self.tracking_uri.startswith(("http:", "https:")) else None)
        check_tracking_uri(self.tracking_uri)
        try:
            for attempt in itertools.count(1):
                try:
                    with sqlite_store.opening(self.tracking_uri):
                        self._open(experiment)
                    break
                except STORE_ERRORS as exc:
                    # Two studies started together on a fresh folder both create MLflow's
                    # tables; the loser retries once the winner's exist.
                    if attempt == SCHEMA_RACE_ATTEMPTS or not lost_schema_race(exc):
                        raise
                    time.sleep(0.5 + random.random() * attempt)
        except STORE_ERRORS as exc:
            raise StoreError(f"{self.location} cannot be used "
                             f"({first_line(exc)}); check --tracking-uri, and that the "
                             f"folder is writable and the disk not full") from None

    def _open(self, experiment: str) -> None:
        # The registry lives in the same store; never in whatever the process set globally.
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.client = client if self._wait is None else Waiting(client, self._wait)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self._create_experiment(experiment)
            found = self.client.get_experiment(self.experiment_id)
        else:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id
        # The local folders it writes: a full disk is named by the one on it.
        database = sqlite_store.database_path(self.tracking_uri)
        self.folders = tuple(str(p) for p in (database and database.parent,
                                               _local_path(found.artifact_location)) if p)

    def _create_experiment(self, name: str) -> str:
        location = None
        # A tracking server decides where artifacts go; a database we write directly does not,
        # and MLflow would default to ./mlruns of whatever folder the worker runs in.
        if not self.tracking_uri.startswith(("http:", "https:", "databricks")):
            root = Path(os.environ.get("ALLSEARCH_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT))
            # The study name a user typed never becomes a path as it is (../x, 400 characters).
            location = (root.resolve() / folder_name(name)).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # ----------------------------------------------------------------- study (parent) runs

    def find_parent(self, study_name: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'parent' and tags.`{STUDY}` = '{study_name}'",
            order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def start_parent(self, study_name: str, settings: dict[str, Any],
                     tags: dict[str, Any] | None = None) -> str:
        """Create the study's parent run; settings become its params."""
        run = self.client.create_run(self.experiment_id, run_name=study_name,
                                     tags={ROLE: "parent", STUDY: study_name,
                                           **{k: param_text(v) for k, v in (tags or {}).items()}})
        self.log_params(run.info.run_id, settings)
        self.log_dict(run.info.run_id, {"settings": settings, "versions": package_versions()},
                      "study.json")
        return run.info.run_id

    def resume_parent(self, run_id: str, settings: dict[str, Any]) -> None:
        """Mark a parent run running again; settings that changed are recorded as tags."""
        self.client.update_run(run_id, status="RUNNING")
        self.log_params(run_id, settings)

    # ----------------------------------------------------------------- trial (child) runs

    def start_run(self, *, parent_id: str | None, name: str, params: dict[str, Any],
                  tags: dict[str, Any]) -> str:
        """A child run of `parent_id` (the `mlflow.parentRunId` tag nests it, from any process
        or machine); returns its id."""
        run_tags = dict(tags)
        if parent_id is not None:
            run_tags["mlflow.parentRunId"] = parent_id
            if parent_id not in self._study_of_parent:
                self._study_of_parent[parent_id] = self.client.get_run(parent_id).data.tags.get(STUDY, "")
            run_tags[STUDY] = self._study_of_parent[parent_id]
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={k: param_text(v) for k, v in run_tags.items()})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_run(self, parent_id: str, tags: dict[str, str]
                 ) -> tuple[str, dict[str, float], dict[str, str]] | None:
        """The first child run of `parent_id` with these tag values: (id, metrics, tags)."""
        query = " and ".join([f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              *(f"tags.`{k}` = '{v}'" for k, v in tags.items())])
        runs = self.client.search_runs([self.experiment_id], filter_string=query,
                                       order_by=["attributes.start_time ASC"], max_results=1)
        if not runs:
            return None
        return runs[0].info.run_id, dict(runs[0].data.metrics), dict(runs[0].data.tags)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def run_params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def runs_frame(self, filter_string: str = "") -> pd.DataFrame:
        def search() -> pd.DataFrame:
            with mlflow_fluent(self.tracking_uri):  # the pandas frame is the fluent API's alone
                return mlflow.search_runs([self.experiment_id], filter_string=filter_string,
                                          output_format="pandas")

        return self._call(search)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A call of MLflow's fluent API, waiting for a server that stopped answering."""
        if self._wait is None:
            return function(*args, **kwargs)
        return self._wait.call(function, *args, **kwargs)

    # ----------------------------------------------------------------- writing to a run

    def log_params(self, run_id: str, values: dict[str, Any]) -> None:
        """Log params once; a later different value is kept as a `changed.*` tag."""
        existing = self.client.get_run(run_id).data.params
        params, tags = [], []
        for key, value in values.items():
            text = param_text(value)
            if key not in existing:
                params.append(Param(key, text))
            elif existing[key] != text:
                tags.append(RunTag(f"changed.{key}", text))
        self.client.log_batch(run_id, params=params, tags=tags)

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[
            Metric(k, float(v), now, step) for k, v in metrics.items() if _finite(v)])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, param_text(v)) for k, v in tags.items()])

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(run_id, figure, name)
        plt.close(figure)

    def log_image_file(self, run_id: str, path: str | Path, name: str) -> None:
        """An image file already drawn (a recorded figure) under the artifact name `name`."""
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            folder = str(Path(name).parent)
            self.client.log_artifact(run_id, str(target), None if folder == "." else folder)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_dict(self, run_id: str, values: dict[str, Any], name: str) -> None:
        self.client.log_dict(run_id, values, name)

    def log_model(self, run_id: str, *, network: Any, class_names: tuple[str, ...],
                  hparams: dict[str, Any], pipeline: Any | None) -> str:
        """The network with the preprocessing it needs (the fitted HOG/PCA pipeline too), as
        an MLflow pyfunc that takes image files (allsearch.training.serving); returns its URI."""
        from allsearch.training.serving import log_classifier

        versions = package_versions()
        requirements = [f"{name}=={versions[name]}" for name in SERVING_PACKAGES if name in versions]

        def log() -> str:
            # MLflow logs a model into the active fluent run only. Nested: a run the caller
            # has active stays theirs, and is theirs again after.
            with mlflow_fluent(self.tracking_uri), mlflow.start_run(run_id=run_id, nested=True):
                return log_classifier(network=network, class_names=class_names, hparams=hparams,
                                      pipeline=pipeline, requirements=requirements)

        try:
            return self._call(log)
        finally:
            # Leaving the fluent run marks it ended; the trial is not over until end_run.
            self.client.update_run(run_id, status="RUNNING")

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def register_champion(self, model_uri: str, model_name: str) -> str:
        """Register a logged model and point the `champion` alias at the new version."""
        import io

        def register() -> Any:  # a logged model's version: the fluent API's alone
            with mlflow_fluent(self.tracking_uri), contextlib.redirect_stderr(io.StringIO()):
                return mlflow.register_model(model_uri, model_name)  # it prints two lines

        version = self._call(register)
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version.version)
        return str(version.version)


def _local_path(uri: str | None) -> Path | None:
    """The folder of a file: URI (an artifact location on this machine), else None."""
    from urllib.parse import unquote, urlsplit

    if not uri or not uri.startswith("file:"):
        return None
    return Path(unquote(urlsplit(uri).path))


def param_text(value: Any) -> str:
    """A param or tag value as MLflow stores it (text, at most 6,000 characters)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)[:6000]
    return str(value)[:6000]


def _finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False
