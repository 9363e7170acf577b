"""Finding and opening an MLflow store: the tracking URI a command uses, a store refused at
once where it is malformed, unreachable, missing or damaged, and the studies in it, read-only.
allsearch.tracking.tracking.Tracker writes into a store these open.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.tracking import MlflowClient

from allsearch.core.config import absolute_sqlite
from allsearch.core.contract import ROLE, STUDY
from allsearch.core.errors import StoreError, first_line, redact, redact_text, store_errors
from allsearch.core.process_state import mlflow_fluent

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_TRACKING_URI", "STORE_ERRORS", "resolve_tracking_uri", "missing_store",
           "check_tracking_uri", "open_client", "damaged_store", "find_study_parent",
           "runs_of_parent"]

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"

# What a store that cannot be reached or written raises: these end a study, not a trial.
STORE_ERRORS = store_errors()
_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str, *, timeout_s: float = 5.0) -> None:
    """Refuse a malformed or unreachable tracking URI at once (MLflow itself retries for minutes)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme not in _SCHEMES:
        raise StoreError(f"--tracking-uri '{redact(uri)}' is not a tracking URI; use e.g. "
                         f"sqlite:///mlruns/mlflow.db or http://host:5000")
    if scheme in ("http", "https"):
        import base64
        import urllib.error
        import urllib.request

        parts = urlsplit(uri)
        # Credentials in the URL (http://user:pw@host) go in a header: urllib takes the
        # netloc as a host name.
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        url = urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
        request = urllib.request.Request(url)
        if parts.username is not None:
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                                     .encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                response.read(64)
        except urllib.error.HTTPError:
            return  # the server answered: it is there (health may be protected)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"MLflow server '{redact(uri)}' cannot be reached ({reason}); "
                             f"start it (mlflow server ...) or fix --tracking-uri") from None


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: the flag, then $MLFLOW_TRACKING_URI, then the local default
    (a SQLite file's folder is created)."""
    return absolute_sqlite(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def missing_store(uri: str | None = None) -> str | None:
    """The absolute path of the local SQLite store `uri` names (as resolve_tracking_uri
    chooses it) where that file is not there, else None; it creates nothing, so a command
    that only reads asks it before anything else."""
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if not chosen.startswith("sqlite:///"):
        return None
    path = Path(chosen.removeprefix("sqlite:///")).resolve()
    return None if path.is_file() else str(path)


def open_client(tracking_uri: str | None = None, *, what: str = "a study") -> MlflowClient:
    """A client of an existing store, for commands that only read: a store that is not there
    is not created (nor its folder), and a server that does not answer is reported at once."""
    missing = missing_store(tracking_uri)
    if missing is not None:
        raise StoreError(f"no study found: there is no MLflow store at 'sqlite:///{missing}' "
                         f"yet; run {what} first (python -m allsearch.study), or pass "
                         f"--tracking-uri")
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # a damaged file fails here, not later
    except STORE_ERRORS as exc:
        raise damaged_store(uri, exc) from None
    return client


def damaged_store(uri: str, exc: BaseException) -> StoreError:
    """The error for a store that is there but cannot be read, naming its file."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        reason = re.sub(r"^\([\w.]+\)\s*", "", first_line(exc))[:160]  # no "(sqlite3.DatabaseError)"
        return StoreError(f"the MLflow store {path} cannot be read ({reason}): it "
                          f"is damaged; move it aside (mv {path} {path}.damaged) and run the "
                          f"study again, or pass --tracking-uri")
    return StoreError(f"MLflow store '{redact(uri)}' cannot be read "
                      f"({redact_text(first_line(exc), uri)[:160]}); check --tracking-uri")



def find_study_parent(study: str | None = None, *, tracking_uri: str | None = None
                      ) -> tuple[str, str]:
    """(study name, parent run id) of the named study, or of the newest one."""
    client = open_client(tracking_uri)  # first: it creates nothing where there is no store
    uri = resolve_tracking_uri(tracking_uri)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        query = f"tags.`{ROLE}` = 'parent'"
        if study is not None:
            query += f" and tags.`{STUDY}` = '{study}'"
        runs = client.search_runs(experiments, filter_string=query,
                                  order_by=["attributes.start_time DESC"], max_results=1)
    except STORE_ERRORS as exc:
        raise damaged_store(uri, exc) from None
    if not runs:
        if study is None:
            raise StoreError(f"no study found in '{redact(uri)}'; run python -m allsearch.study "
                             f"first, or pass --tracking-uri")
        names = sorted({r.data.tags.get(STUDY, "") for r in client.search_runs(
            experiments, filter_string=f"tags.`{ROLE}` = 'parent'", max_results=200)})
        raise StoreError(f"no study named '{study}' in '{redact(uri)}'; known studies: "
                         f"{', '.join(n for n in names if n) or 'none'}")
    return runs[0].data.tags[STUDY], runs[0].info.run_id


def runs_of_parent(parent_id: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """Every child run of a parent run as MLflow's pandas frame (params.*, metrics.*, tags.*)."""
    client = open_client(tracking_uri)
    uri = resolve_tracking_uri(tracking_uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    with mlflow_fluent(uri):  # the pandas frame is the fluent API's alone
        return mlflow.search_runs([experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                  output_format="pandas")
