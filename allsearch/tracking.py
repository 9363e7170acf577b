"""MLflow tracking: the only module that imports mlflow.

Layout (DESIGN.md): one experiment per study, one parent run per study, one child run per
trial carrying `mlflow.parentRunId`, so runs nest in the UI also when other processes or
machines write them. Everything goes through one MlflowClient; no fluent active-run state is
shared between threads or trials.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from allsearch import reports
from allsearch.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

    from allsearch.data import Dataset
    from allsearch.trial import TrialResult

__all__ = [
    "DEFAULT_TRACKING_URI", "DEFAULT_ARTIFACT_ROOT", "Tracker", "TrialRun", "State",
    "resolve_tracking_uri", "package_versions", "CHAMPION_ALIAS", "find_study_parent",
    "runs_of_parent",
]

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = Path("mlruns/artifacts")
CHAMPION_ALIAS = "champion"
State = Literal["COMPLETE", "PRUNED", "FAIL", "KILLED"]
# Our trial states -> MLflow run statuses; PRUNED is a normal end, marked by the `state` tag.
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "KILLED": "KILLED"}
ROLE, STUDY, STATE = "allsearch.role", "allsearch.study", "state"
_PACKAGES = ("allsearch", "tensorflow", "keras", "optuna", "optuna-integration", "mlflow",
             "keras-tuner", "numpy", "scikit-learn", "scikit-image", "pandas", "pillow", "joblib")
# What the logged model needs where it is served (its own code travels with it).
SERVING_PACKAGES = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "scikit-learn",
                    "scikit-image", "pillow", "joblib")


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [MlflowException, OSError]
    try:
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:
        pass
    return tuple(errors)


# What a store that cannot be reached or written raises: these end a study, not a trial.
STORE_ERRORS = _store_errors()
_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str, *, timeout_s: float = 5.0) -> None:
    """Refuse a malformed or unreachable tracking URI at once (MLflow itself retries for minutes)."""
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme not in _SCHEMES:
        raise StoreError(f"--tracking-uri '{_redact(uri)}' is not a tracking URI; use e.g. "
                         f"sqlite:///mlruns/mlflow.db or http://host:5000")
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
                response.read(64)
        except urllib.error.HTTPError:
            return  # the server answered: it is there (health may be protected)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"MLflow server '{_redact(uri)}' cannot be reached ({reason}); "
                             f"start it (mlflow server ...) or fix --tracking-uri") from None


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: the flag, then $MLFLOW_TRACKING_URI, then the local default."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return absolute_sqlite(uri)


def absolute_sqlite(uri: str) -> str:
    """A relative sqlite URI made absolute (its folder created): MLflow and SQLAlchemy cache
    engines by URI, so a relative one could reach another folder's database after a chdir."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def find_study_parent(study: str | None = None, *, tracking_uri: str | None = None
                      ) -> tuple[str, str]:
    """(study name, parent run id) of the named study, or of the newest one."""
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        query = f"tags.`{ROLE}` = 'parent'"
        if study is not None:
            query += f" and tags.`{STUDY}` = '{study}'"
        runs = client.search_runs(experiments, filter_string=query,
                                  order_by=["attributes.start_time DESC"], max_results=1)
    except MlflowException as exc:
        raise StoreError(f"MLflow store '{_redact(uri)}' cannot be read ({_first_line(exc)}); "
                         f"check --tracking-uri") from None
    if not runs:
        if study is None:
            raise StoreError(f"no study found in '{_redact(uri)}'; run python -m allsearch.study "
                             f"first, or pass --tracking-uri")
        names = sorted({r.data.tags.get(STUDY, "") for r in client.search_runs(
            experiments, filter_string=f"tags.`{ROLE}` = 'parent'", max_results=200)})
        raise StoreError(f"no study named '{study}' in '{_redact(uri)}'; known studies: "
                         f"{', '.join(n for n in names if n) or 'none'}")
    return runs[0].data.tags[STUDY], runs[0].info.run_id


def runs_of_parent(parent_id: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """Every child run of a parent run as MLflow's pandas frame (params.*, metrics.*, tags.*)."""
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs([experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              output_format="pandas")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


class Tracker:
    """One experiment in one tracking store."""

    def __init__(self, experiment: str, *, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment
        check_tracking_uri(self.tracking_uri)
        try:
            # The registry lives in the same store; never in whatever the process set globally.
            self.client = MlflowClient(tracking_uri=self.tracking_uri,
                                       registry_uri=self.tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self._create_experiment(experiment)
            else:
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                self.experiment_id = found.experiment_id
        except STORE_ERRORS as exc:
            raise StoreError(f"MLflow store '{_redact(self.tracking_uri)}' cannot be used "
                             f"({_first_line(exc)}); check --tracking-uri, and that the "
                             f"folder is writable and the disk not full") from None

    def _create_experiment(self, name: str) -> str:
        location = None
        # A tracking server decides where artifacts go; a database we write directly does not,
        # and MLflow would default to ./mlruns of whatever folder the worker runs in.
        if not self.tracking_uri.startswith(("http:", "https:", "databricks")):
            root = Path(os.environ.get("ALLSEARCH_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT))
            location = (root.resolve() / name).as_uri()
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

    def start_parent(self, study_name: str, settings: dict[str, Any]) -> str:
        """Create the study's parent run; settings become its params."""
        run = self.client.create_run(self.experiment_id, run_name=study_name,
                                     tags={ROLE: "parent", STUDY: study_name})
        self.log_params(run.info.run_id, settings)
        self.client.log_dict(run.info.run_id, {"settings": settings,
                                               "versions": package_versions()}, "study.json")
        return run.info.run_id

    def resume_parent(self, run_id: str, settings: dict[str, Any]) -> None:
        """Mark a parent run running again; settings that changed are recorded as tags."""
        self.client.update_run(run_id, status="RUNNING")
        self.log_params(run_id, settings)

    def log_params(self, run_id: str, values: dict[str, Any]) -> None:
        """Log params once; a later different value is kept as a `changed.*` tag."""
        existing = self.client.get_run(run_id).data.params
        params, tags = [], []
        for key, value in values.items():
            text = _param_text(value)
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
        self.client.log_batch(run_id, tags=[RunTag(k, _param_text(v)) for k, v in tags.items()])

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(run_id, figure, name)
        plt.close(figure)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # ----------------------------------------------------------------- trial (child) runs

    def start_trial(self, *, parent_id: str | None, name: str, params: dict[str, Any],
                    tags: dict[str, Any] | None = None) -> TrialRun:
        run_tags = {ROLE: "trial", STATE: "RUNNING", **(tags or {})}
        if parent_id is not None:
            # This tag is what nests a run under its parent, from any process or machine.
            run_tags["mlflow.parentRunId"] = parent_id
            run_tags[STUDY] = self.client.get_run(parent_id).data.tags.get(STUDY, "")
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={k: _param_text(v) for k, v in run_tags.items()})
        self.log_params(run.info.run_id, params)
        return TrialRun(self, run.info.run_id)

    def runs_frame(self, filter_string: str = "") -> pd.DataFrame:
        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.search_runs([self.experiment_id], filter_string=filter_string,
                                  output_format="pandas")

    def register_champion(self, model_uri: str, model_name: str) -> str:
        """Register a logged model and point the `champion` alias at the new version."""
        import contextlib
        import io

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints two lines of its own
            version = mlflow.register_model(model_uri, model_name)
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version.version)
        return str(version.version)


@dataclass
class TrialRun:
    """One trial's MLflow run, fed by the engine while the trial trains."""

    tracker: Tracker
    run_id: str

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, values, step=epoch)

    def log_curves(self, history: dict[str, list[float]], *, title: str = "") -> None:
        if history:
            self.tracker.log_figure(self.run_id, reports.curves_figure(history, title=title),
                                    "learning_curves.png")

    def log_result(self, result: TrialResult, *, dataset: Dataset | None = None,
                   log_model: bool = False, metrics: dict[str, float] | None = None) -> str | None:
        """Final metrics (or `metrics`, e.g. means over repeats) and artifacts; the model
        too when asked. Returns the logged model's URI."""
        tracker, run_id = self.tracker, self.run_id
        # At the last epoch's step: the final val_accuracy shares its name with the curve's.
        tracker.log_metrics(run_id, result.final_metrics() if metrics is None else metrics,
                            step=max(0, result.epochs_run - 1))
        tracker.log_figure(run_id, reports.confusion_figure(result.confusion(), result.class_names),
                           "confusion_matrix.png")
        tracker.client.log_dict(run_id, result.per_class_report(), "per_class_report.json")
        tracker.log_text(run_id, reports.predictions_csv(
            result.test_files, result.y_test, result.test_probabilities, result.class_names),
            "test_predictions.csv")
        if log_model and result.model is not None:
            return self.log_model(result, dataset)
        return None

    def log_model(self, result: TrialResult, dataset: Dataset | None) -> str:
        """The network with the preprocessing it needs (the fitted HOG/PCA pipeline too), as
        an MLflow pyfunc that takes image files (allsearch.serving)."""
        from allsearch.serving import log_classifier

        assert result.model is not None
        versions = package_versions()
        requirements = [f"{name}=={versions[name]}" for name in SERVING_PACKAGES if name in versions]
        pipeline = (dataset.features.pipeline
                    if dataset is not None and dataset.features is not None else None)
        mlflow.set_tracking_uri(self.tracker.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                return log_classifier(network=result.model, class_names=result.class_names,
                                      hparams=result.hparams.to_dict(), pipeline=pipeline,
                                      requirements=requirements)
        finally:
            # Leaving the fluent run marks it ended; the trial is not over until end().
            self.tracker.client.update_run(self.run_id, status="RUNNING")

    def end(self, state: State, *, error: BaseException | None = None) -> None:
        tags: dict[str, Any] = {STATE: state}
        if error is not None:
            tags["error"] = _first_line(error)[:4000]
            self.tracker.log_text(self.run_id, "".join(traceback.format_exception(error)),
                                  "error.txt")
        self.tracker.set_tags(self.run_id, tags)
        self.tracker.end_run(self.run_id, _RUN_STATUS[state])


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)[:6000]
    return str(value)[:6000]


def _finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(uri: str) -> str:
    """A URI with any password replaced, safe to print."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri
