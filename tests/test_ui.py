"""`python -m allsearch.ui`: MLflow's UI (and optuna-dashboard) on the study store, on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from allsearch import study, ui
from allsearch.tracking.tracked import start_trial
from allsearch.tracking.tracking import Tracker
from conftest import free_port

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
fixed: {epochs: 1, conv_layers: 2, dense_units: 32}
baseline: {batch_size: 8}
"""


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def runs_page_is_served(base: str, line: str, study_name: str, experiment_id: str,
                        trial_runs: int) -> None:
    """`line` names the study, its trial runs and the URL of its runs table; the UI this server
    runs routes that URL (a hash route its JavaScript knows) to classic runs, not GenAI."""
    url = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert line == f"  study '{study_name}' ({trial_runs} trial runs): {url}"
    html = urllib.request.urlopen(url, timeout=30).read().decode()
    (script,) = re.findall(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', html)
    code = urllib.request.urlopen(f"{base}/{script}", timeout=30).read().decode()
    assert "createHashRouter" in code  # the part after # is the page
    assert '"/experiments/:experimentId/runs"' in code  # the runs table's route
    assert 'get("workflowType")' in code and 'MACHINE_LEARNING="machine_learning"' in code


def read_lines(process: subprocess.Popen, until: str) -> list[str]:
    lines = []
    while not lines or lines[-1] != until:
        line = process.stdout.readline()
        assert line, f"the UI stopped after {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # `kill`: stops the servers as Ctrl-C does
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


@pytest.mark.slow
def test_ui_without_optuna_storage_lists_each_study_and_says_so(tmp_path: Path) -> None:
    """An MLflow store whose Optuna storage is not there (a study imported from a record
    folder, or moved): the UI starts without optuna-dashboard and says why in one line."""
    tracker = Tracker("imported")
    parent = tracker.start_parent("imported", {"space": "paper"})
    for number in range(3):
        start_trial(tracker, parent_id=parent, name=f"trial-{number}",
                    params={"trial_number": number}).end("COMPLETE")
    tracker.end_run(parent)
    port = free_port()
    errors = tmp_path / "ui.err"
    with open(errors, "w") as err_file:
        process = subprocess.Popen([sys.executable, "-m", "allsearch.ui", "--port", str(port)],
                                   stdout=subprocess.PIPE, stderr=err_file, text=True,
                                   start_new_session=True)
    try:
        lines = read_lines(process, "Ctrl-C stops")
        base = f"http://127.0.0.1:{port}"
        assert lines[0] == f"MLflow UI: {base}", errors.read_text()[-2000:]
        runs_page_is_served(base, lines[1], "imported", tracker.experiment_id, 3)
        optuna_db = tmp_path / "mlruns" / "optuna.db"
        assert lines[2:] == [f"optuna-dashboard: not started, there is no Optuna storage at "
                             f"{optuna_db} (pass --storage URL where the study keeps it)",
                             "Ctrl-C stops"]
        assert not optuna_db.exists()  # nothing created in its place
    finally:
        stop(process)
    assert process.returncode == 0, errors.read_text()[-2000:]
    assert "Traceback" not in errors.read_text()


@pytest.mark.slow
def test_ui_serves_the_study_runs_on_loopback(tiny_data: Path, tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    # The UI is what is tested: the stand-in trainer writes the runs a study writes.
    assert study.main(["--space", str(space), "--data", str(tiny_data), "--trials", "2",
                       "--study-name", "browsed", "--no-progress", "--trials-per-process", "0",
                       "--pruner", "none", "--trainer", "standin:0"]) == 0
    port = free_port()
    command = [sys.executable, "-m", "allsearch.ui", "--port", str(port)]
    errors = tmp_path / "ui.err"
    with open(errors, "w") as err_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err_file, text=True,
                                   start_new_session=True)
    dashboard = None
    try:
        first = process.stdout.readline()  # printed once the server answers
        assert first.strip() == f"MLflow UI: http://127.0.0.1:{port}", errors.read_text()[-2000:]
        study_line = process.stdout.readline().rstrip("\n")
        second = process.stdout.readline().strip()
        base = f"http://127.0.0.1:{port}"
        experiment = api(base, "experiments/get-by-name?experiment_name=browsed")["experiment"]
        # The study's runs table, not MLflow 3's GenAI overview, with its trial runs counted.
        runs_page_is_served(base, study_line, "browsed", experiment["experiment_id"], 2)
        runs = api(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                         "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = [r for r, t in zip(runs, tags, strict=True) if t.get("allsearch.role") == "parent"]
        children = [t for t in tags if "mlflow.parentRunId" in t]
        assert len(parents) == 1 and len(children) == 2
        assert {c["mlflow.parentRunId"] for c in children} == {parents[0]["info"]["run_id"]}
        # The artifacts the UI renders are served too: a child's PNG plot (a trained child's:
        # the sampler may propose batch size 8 twice, and a duplicate's run holds no files).
        child = next(r for r, t in zip(runs, tags, strict=True)
                     if "mlflow.parentRunId" in t and "duplicate_of" not in t)
        listed = api(base, f"artifacts/list?run_id={child['info']['run_id']}")
        assert "confusion_matrix.png" in {f["path"] for f in listed["files"]}
        png = urllib.request.urlopen(f"{base}/get-artifact?path=confusion_matrix.png&run_uuid="
                                     f"{child['info']['run_id']}", timeout=30).read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # optuna-dashboard on the study's storage (the test extra installs it).
        assert second.startswith("optuna-dashboard: http://127.0.0.1:")
        dashboard = second.split(": ", 1)[1]
        studies = json.loads(urllib.request.urlopen(f"{dashboard}/api/studies", timeout=30).read())
        assert "browsed" in {s["study_name"] for s in studies["study_summaries"]}
    finally:
        stop(process)
    assert process.returncode == 0, errors.read_text()[-2000:]
    time.sleep(1)
    for url in (f"http://127.0.0.1:{port}/health", dashboard):  # both servers are gone with it
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)


def test_ui_mistakes_get_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert ui.main(["--port", str(free_port())]) == 2  # no study yet in this folder
    err = capsys.readouterr().err
    assert "no MLflow store at" in err and "Traceback" not in err
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    (tmp_path / "mlruns" / "mlflow.db").touch()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert ui.main(["--port", str(busy.getsockname()[1])]) == 2
    assert "is in use" in capsys.readouterr().err
