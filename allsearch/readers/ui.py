"""The MLflow UI on the study store, bound to this machine only (and optuna-dashboard beside it).

    python -m allsearch.ui [--port 5000] [--tracking-uri URI] [--storage URL]

Runs MLflow's own server on the tracking store (default sqlite:///mlruns/mlflow.db): every
study is an experiment, every trial a child run of its study's parent run, with its curves,
plots, confusion matrix, predictions and model. It prints each study's page of training runs
(MLflow 3 opens on its GenAI overview, where a study looks empty). When optuna-dashboard is
installed (`pip install -e .[dashboard]`) and the Optuna storage exists, it serves that storage
on the next port. Ctrl-C stops both. Binding to 127.0.0.1 keeps the runs private; use an SSH
tunnel from another machine.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from allsearch.core.errors import ConfigError, StoreError

__all__ = ["UiServers", "StudyPage", "find_studies", "runs_page", "start_ui"]

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# MLflow 3.x's UI (a hash router) shows an experiment's runs table at
# #/experiments/<id>/runs; `workflowType=machine_learning` switches its sidebar and pages from
# the GenAI default (traces, overview) to classic training runs, whatever the browser last chose.
RUNS_PAGE = "/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
# optuna-dashboard's public entry point (its package has no __main__).
_DASHBOARD = ("import os, sys, optuna_dashboard; optuna_dashboard.run_server("
              "os.environ['ALLSEARCH_DASHBOARD_STORAGE'], host=sys.argv[1], port=int(sys.argv[2]))")


@dataclass(frozen=True)
class StudyPage:
    """A study in the store: its experiment and how many trial runs it holds."""

    study: str
    experiment: str
    experiment_id: str
    trial_runs: int


def runs_page(mlflow_url: str, experiment_id: str) -> str:
    """The UI page listing an experiment's training runs."""
    return mlflow_url + RUNS_PAGE.format(experiment_id=experiment_id)


@dataclass
class UiServers:
    """The running servers; `stop()` ends them and every process they started."""

    mlflow_url: str
    dashboard_url: str | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    studies: list[StudyPage] = field(default_factory=list)
    # Why optuna-dashboard was not started, where it was wanted and installed.
    dashboard_note: str | None = None

    def stop(self) -> None:
        # The whole group, even when its leader has exited: its workers may not have.
        for process in self.processes:
            _kill_group(process, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _kill_group(process, signal.SIGKILL)

    def __enter__(self) -> UiServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers do: a port whose last connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _child_env() -> dict[str, str]:
    # MLflow starts uvicorn/gunicorn by name: this interpreter's bin/ goes first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path}


class _Server(subprocess.Popen):
    """A server's process, and the file its output goes to."""

    log: IO[str]


def _spawn(command: list[str], env: dict[str, str] | None = None) -> _Server:
    """A server in its own process group (stopping it stops its workers), its log in a file
    (a pipe nobody reads would fill up and stall it)."""
    log = tempfile.TemporaryFile(mode="w+")
    process = _Server(command, env={**_child_env(), **(env or {})}, stdout=log,
                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
    process.log = log
    return process


def _wait_until_up(process: _Server, url: str, what: str, timeout_s: float) -> None:
    # Straight to loopback: an http_proxy in the environment must not carry this request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            log = process.log
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.strip()]
            raise StoreError(f"{what} exited at start ({lines[-1][-300:] if lines else 'no output'})")
        try:
            opener.open(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise StoreError(f"{what} did not answer on {url} within {timeout_s:.0f} s")


def find_studies(tracking_uri: str | None = None) -> list[StudyPage]:
    """Every study in the store (newest first); StoreError where there is none."""
    from collections import Counter

    from allsearch.core.contract import ROLE, STUDY
    from allsearch.core.errors import redact
    from allsearch.tracking.store import (
        STORE_ERRORS,
        damaged_store,
        missing_store,
        open_client,
        resolve_tracking_uri,
    )

    missing = missing_store(tracking_uri)  # asked first: resolving makes the store's folder
    if missing is not None:
        raise StoreError(f"no study found: there is no MLflow store at 'sqlite:///{missing}' "
                         f"yet; run python -m allsearch.study first, or pass --tracking-uri")
    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = open_client(uri)
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
        parents = _all_runs(client, list(experiments), f"tags.`{ROLE}` = 'parent'")
        trials = _all_runs(client, list(experiments), f"tags.`{ROLE}` = 'trial'")
    except STORE_ERRORS as exc:  # e.g. an mlflow.db overwritten or cut short
        raise damaged_store(uri, exc) from None
    if not parents:
        raise StoreError(f"no study found in '{redact(uri)}'; run python -m allsearch.study "
                         f"first, or pass --tracking-uri")
    per_parent = Counter(run.data.tags.get("mlflow.parentRunId") for run in trials)
    return [StudyPage(study=run.data.tags.get(STUDY, run.info.run_name or run.info.run_id),
                      experiment=experiments[run.info.experiment_id],
                      experiment_id=run.info.experiment_id, trial_runs=per_parent[run.info.run_id])
            for run in parents]


def _all_runs(client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def start_ui(*, port: int = DEFAULT_PORT, tracking_uri: str | None = None,
             storage: str | None = None, dashboard: bool = True,
             timeout_s: float = 120) -> UiServers:
    """Start the MLflow UI (and optuna-dashboard when installed, `dashboard`, and the Optuna
    storage exists) on loopback."""
    from allsearch.core.errors import redact
    from allsearch.tracking.store import missing_store, resolve_tracking_uri
    from allsearch.tracking.tracking import DEFAULT_ARTIFACT_ROOT

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}; pass a free port "
                          f"such as {DEFAULT_PORT}")
    missing = missing_store(tracking_uri)  # find_studies refuses it; resolving would make its folder
    uri = f"sqlite:///{missing}" if missing else resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise ConfigError(f"'{redact(uri)}' is already a tracking server: open it in a browser")
    if not _port_free(port):
        raise ConfigError(f"port {port} on {HOST} is in use; pass --port with a free one")
    studies = find_studies(uri)
    artifacts = Path(os.environ.get("ALLSEARCH_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT)).resolve()
    servers = UiServers(mlflow_url=f"http://{HOST}:{port}", studies=studies)
    # Store URLs travel in the environment, not the command line: `ps` shows command lines,
    # and a PostgreSQL URL carries its password.
    mlflow_server = _spawn(
        [sys.executable, "-m", "mlflow", "server", "--default-artifact-root",
         artifacts.as_uri(), "--host", HOST, "--port", str(port), "--workers", "1"],
        env={"MLFLOW_BACKEND_STORE_URI": uri})
    servers.processes.append(mlflow_server)
    try:
        _wait_until_up(mlflow_server, f"{servers.mlflow_url}/health", "the MLflow UI", timeout_s)
        if dashboard and importlib.util.find_spec("optuna_dashboard") is not None:
            from allsearch.core.config import DEFAULT_STORAGE, absolute_sqlite

            url = absolute_sqlite(storage or os.environ.get("ALLSEARCH_STORAGE") or DEFAULT_STORAGE)
            if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
                # optuna-dashboard would create an empty database here, and fail on it.
                servers.dashboard_note = (
                    f"optuna-dashboard: not started, there is no Optuna storage at "
                    f"{url.removeprefix('sqlite:///')} (pass --storage URL where the study "
                    f"keeps it)")
                return servers
            dashboard_port = next(p for p in range(port + 1, port + 50) if _port_free(p))
            process = _spawn([sys.executable, "-c", _DASHBOARD, HOST, str(dashboard_port)],
                             env={"ALLSEARCH_DASHBOARD_STORAGE": url})
            servers.processes.append(process)
            servers.dashboard_url = f"http://{HOST}:{dashboard_port}"
            _wait_until_up(process, servers.dashboard_url, "optuna-dashboard", timeout_s)
    except BaseException:
        servers.stop()
        raise
    return servers
