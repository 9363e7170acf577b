"""Faults of the MLflow store while a study runs, on real processes, a real full disk and a real
tracking server: a disk that fills up (a small tmpfs), a tracking server that stops answering
(`mlflow server` stopped, and started again or not), and what MLflow prints to a server's
users. The trials are stand-ins (`--trainer standin:SECONDS`): these are tests of the store."""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from allsearch import study
from allsearch.core.errors import StoreError
from conftest import free_port

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
  dense_units: {type: categorical, choices: [16, 32, 64, 128]}
fixed: {epochs: 3, conv_layers: 2, learning_rate: 0.001, dropout: 0.5}
baseline: {batch_size: 8, dense_units: 16}
"""
# A heartbeat grace no test waits out: a trial failed before it ran out was failed otherwise.
NO_GRACE = {"ALLSEARCH_GRACE_S": "3600"}


def study_command(tmp_path: Path, data: Path, *extra: str, seconds: float = 6) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    return [sys.executable, "-m", "allsearch.study", "--space", str(space), "--data", str(data),
            "--study-name", "tiny", "--pruner", "none", "--no-progress",
            "--trainer", f"standin:{seconds}", *extra]


def child_env(**more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **NO_GRACE, **more}


class Output:
    """A process's stdout and stderr, read as they come (a condition can wait on a line)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((process.stdout, self.out),
                                              (process.stderr, self.err))]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in iter(stream.readline, ""):
            lines.append(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not any(text in line for line in self.err):
            assert time.time() < deadline, f"no {text!r} in: {''.join(self.err)[-2000:]}"
            assert self.process.poll() is None, f"ended before {text!r}: {''.join(self.err)[-2000:]}"
            time.sleep(0.1)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        for thread in self.threads:
            thread.join(timeout=10)
        return code, "".join(self.out), "".join(self.err)


def _ctrl_c_as_usual() -> None:
    # A test run started in the background ignores SIGINT, and its children would inherit
    # that: the command under test gets Ctrl-C as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_study(argv: list[str], cwd: Path, **env: str) -> Output:
    return Output(subprocess.Popen(argv, cwd=cwd, env=child_env(**env), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=_ctrl_c_as_usual))


def wait_for_second_trial(storage: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until trial 1 has trained an epoch (trial 0 is complete, its run whole)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the study ended before its second trial trained"
        time.sleep(0.2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trials = optuna.load_study(study_name="tiny", storage=storage).trials
        except Exception:  # noqa: BLE001  (not created yet)
            continue
        if len(trials) > 1 and trials[1].state.name == "RUNNING" and trials[1].intermediate_values:
            return
    raise AssertionError("trial 1 did not reach its first epoch")


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


def runs_by_name(client: MlflowClient) -> dict[str, object]:
    return {r.info.run_name: r for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()])}


def trial_states(storage: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [t.state.name for t in optuna.load_study(study_name="tiny", storage=storage).trials]


def closed_at_the_start(runs: dict[str, object], before: set[str]) -> None:
    """Every run is closed; one the first command left (in `before`) and the next closed was
    closed before that command's first new trial run started."""
    assert not [name for name, r in runs.items() if r.info.status == "RUNNING"], runs
    new = [r.info.start_time for name, r in runs.items()
           if name not in before and name.startswith("trial-")]
    for name in before:
        if runs[name].info.status == "KILLED":
            assert runs[name].info.end_time <= min(new), name


# ----------------------------------------------------------------------------- processes


def test_a_process_that_ended_is_told_apart_from_one_that_runs() -> None:
    """What lets the next command fail a trial whose process ended without waiting for the
    heartbeat's grace: the process's key names it on this machine, pid reuse included."""
    from allsearch.engines.lifecycle import process_ended, process_key

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        key = process_key(child.pid)
        assert key is not None and not process_ended(key)
    finally:
        child.kill()
        child.wait()
    assert process_ended(key)
    mine = process_key()
    assert mine is not None and not process_ended(mine)
    *place, pid, started = mine.split("/")
    assert process_ended("/".join((*place, pid, str(int(started) + 1))))  # the pid, reused
    elsewhere = "/".join(("another-host", *place[1:], pid, "1"))
    assert not process_ended(elsewhere)  # another machine: the heartbeat tells
    assert not process_ended("/".join((place[0], place[1], "pid:[1]", "1", "1")))  # a container


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs: a disk that really fills up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small file system, and mounting a tmpfs failed here "
                    f"({mounted.stderr.strip() or mounted.returncode}): run as root with "
                    f"CAP_SYS_ADMIN")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write zeros until the disk takes no more, not one byte; returns the file to delete."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, bytes(size))
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_disk_that_fills_up_stops_the_study_with_one_line_and_it_resumes(
        tiny_data: Path, tmp_path: Path, small_disk: Path) -> None:
    """Both stores on one disk (the default layout), full to the last byte while trial 1
    trains: one line, exit 2; the command run again on the full disk says the same; once
    space is freed it closes the runs the first left RUNNING at its start (no heartbeat grace
    waited), runs the missing trials, and keeps trial 0 as it was."""
    store = small_disk / "mlruns"
    tracking, storage = f"sqlite:///{store}/mlflow.db", f"sqlite:///{store}/optuna.db"
    argv = study_command(tmp_path, tiny_data, "--trials", "3", "--tracking-uri", tracking,
                         "--storage", storage)
    artifacts = {"ALLSEARCH_ARTIFACT_ROOT": str(store / "artifacts")}
    output = start_study(argv, tmp_path, **artifacts)
    wait_for_second_trial(storage, output.process)
    filler = fill(small_disk)
    code, _, err = output.finish()
    [line] = error_lines(err)
    assert code == 2 and line == (f"error: cannot write the MLflow store '{tracking}' (disk full "
                                  f"at {store}); free space there, then run the same command to "
                                  f"resume (completed trials are kept)")

    again = subprocess.run(argv, cwd=tmp_path, env=child_env(**artifacts), capture_output=True,
                           text=True, timeout=300)
    [line] = error_lines(again.stderr)
    assert again.returncode == 2 and f"(disk full at {store})" in line

    client = MlflowClient(tracking)
    before = runs_by_name(client)
    first = before["trial-0000"]
    filler.unlink()
    resumed = subprocess.run(argv, cwd=tmp_path, env=child_env(**artifacts),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and not error_lines(resumed.stderr), resumed.stderr[-2000:]
    runs = runs_by_name(client)
    closed_at_the_start(runs, set(before))
    assert runs["trial-0000"].info.run_id == first.info.run_id
    assert runs["trial-0000"].info.status == "FINISHED" and runs["tiny"].info.status == "FINISHED"
    states = trial_states(storage)
    assert states[0] == "COMPLETE" and states.count("COMPLETE") == 3
    assert "RUNNING" not in states and "WAITING" not in states


@pytest.mark.slow
def test_a_full_artifact_disk_ends_the_study_with_every_run_closed(
        tiny_data: Path, tmp_path: Path, small_disk: Path) -> None:
    """The artifacts on a disk of their own that fills up, the databases elsewhere (they still
    take small writes): the process fails its trial and closes every run itself."""
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    argv = study_command(tmp_path, tiny_data, "--trials", "4", "--tracking-uri", tracking,
                         "--storage", storage)
    artifacts = {"ALLSEARCH_ARTIFACT_ROOT": str(small_disk / "artifacts")}
    output = start_study(argv, tmp_path, **artifacts)
    wait_for_second_trial(storage, output.process)
    filler = fill(small_disk)
    code, _, err = output.finish()
    [line] = error_lines(err)
    assert code == 2 and line.startswith(f"error: cannot write the MLflow store '{tracking}' "
                                         f"(disk full at {small_disk / 'artifacts'}"), line
    runs = runs_by_name(MlflowClient(tracking))
    assert runs["tiny"].info.status == "FAILED"
    assert runs["trial-0000"].info.status == "FINISHED"
    assert not [name for name, r in runs.items() if r.info.status == "RUNNING"], runs
    stopped = [r for r in runs.values() if r.info.status == "KILLED"]
    assert all("disk full" in r.data.tags["error"] for r in stopped)
    states = trial_states(storage)
    assert "RUNNING" not in states and states[-1] == "FAIL"

    filler.unlink()
    resumed = subprocess.run(argv, cwd=tmp_path, env=child_env(**artifacts),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert trial_states(storage).count("COMPLETE") == 4


# ----------------------------------------------------------------------------- a server


class TrackingServer:
    """A real `mlflow server` on loopback, stopped and started again on the same port and
    database."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        # MLflow starts uvicorn by name: the venv's bin/ must be on PATH.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        log = open(self.folder / "server.log", "a")  # noqa: SIM115  (the server's lifetime)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{self.folder / 'server.db'}", "--artifacts-destination",
             str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], env={**os.environ, "PATH": path}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.time() + timeout
        while True:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            assert time.time() < deadline, "the MLflow server did not start"
            try:
                opener.open(f"{self.url}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TrackingServer]:
    folder = tmp_path / "server"
    folder.mkdir()
    running = TrackingServer(folder)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_a_server_back_within_the_wait_continues_the_study_losing_no_trial(
        tiny_data: Path, tmp_path: Path, server: TrackingServer) -> None:
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    output = start_study(study_command(tmp_path, tiny_data, "--trials", "3", "--tracking-uri",
                                       server.url), tmp_path)
    wait_for_second_trial(storage, output.process)
    server.stop()
    output.wait_for(f"waiting for the MLflow server at {server.url} (down for ")
    server.start()
    code, out, err = output.finish()
    assert code == 0 and not error_lines(err), err[-2000:]
    assert f"the MLflow server at {server.url} answers again (down for " in err
    assert "3 trials (3 complete, 0 pruned, 0 failed)" in out
    assert trial_states(storage) == ["COMPLETE"] * 3
    runs = runs_by_name(MlflowClient(server.url))
    assert {name: r.info.status for name, r in runs.items()} == {
        "tiny": "FINISHED", "trial-0000": "FINISHED", "trial-0001": "FINISHED",
        "trial-0002": "FINISHED"}
    assert all(len(r.data.metrics) > 5 for r in runs.values() if r.info.run_name != "tiny")


@pytest.mark.slow
def test_a_server_that_stays_down_stops_the_study_after_the_wait_and_it_resumes(
        tiny_data: Path, tmp_path: Path, server: TrackingServer) -> None:
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    argv = study_command(tmp_path, tiny_data, "--trials", "3", "--tracking-uri", server.url)
    output = start_study([*argv, "--server-wait", "8"], tmp_path)
    wait_for_second_trial(storage, output.process)
    server.stop()
    code, _, err = output.finish()
    assert re.search(rf"^waiting for the MLflow server at {re.escape(server.url)} \(down for "
                     rf"\d+ s; Ctrl-C stops, completed trials are kept\)$", err, re.MULTILINE)
    [line] = error_lines(err)
    assert code == 2 and line.startswith(f"error: the MLflow server at {server.url} has not "
                                         f"answered for ")
    assert line.endswith("s (--server-wait 8); start it again, then run the same command to "
                         "resume (completed trials are kept)")
    # The process failed its trial itself (the Optuna storage is here); the server could not
    # take the runs' ends: the next command closes them at its start.
    assert trial_states(storage) == ["COMPLETE", "FAIL"]
    server.start()
    client = MlflowClient(server.url)
    before = runs_by_name(client)
    resumed = subprocess.run(argv, cwd=tmp_path, env=child_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0 and not error_lines(resumed.stderr), resumed.stderr[-2000:]
    runs = runs_by_name(client)
    closed_at_the_start(runs, set(before))
    assert runs["trial-0000"].info.run_id == before["trial-0000"].info.run_id
    assert runs["trial-0001"].info.status == "KILLED"
    assert trial_states(storage).count("COMPLETE") == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_wait_is_one_line_updated_in_place_on_a_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What a person at a terminal sees while the server is down (the real outage is above):
    one line rewritten in place, then where the study stands once it answers."""
    import requests

    from allsearch.tracking import outage

    monkeypatch.setattr(outage, "PAUSE_S", 0.01)
    monkeypatch.delenv(outage.RETRIES_VARIABLE, raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    wait = outage.ServerWait("http://alice:secret@127.0.0.1:5000", wait_s=60)
    tries = []

    def call() -> str:
        tries.append(os.environ.get(outage.RETRIES_VARIABLE))
        if len(tries) < 4:
            raise requests.exceptions.ConnectionError("Connection refused")
        return "answered"

    assert wait.call(call) == "answered"
    shown = terminal.getvalue()
    assert shown.count("\n") == 1 and shown.count("\r") == 4
    assert re.fullmatch(r"(\rwaiting for the MLflow server at http://alice:\*\*\*@127\.0\.0\.1:5000 "
                        r"\(down for 0 s; Ctrl-C stops, completed trials are kept\)\x1b\[K){3}"
                        r"\rthe MLflow server at http://alice:\*\*\*@127\.0\.0\.1:5000 answers "
                        r"again \(down for 0 s\)\x1b\[K\n", shown), shown
    # MLflow's own retries are two during a call, and nothing is left set after it.
    assert tries == ["2"] * 4 and outage.RETRIES_VARIABLE not in os.environ

    gone = outage.ServerWait("http://127.0.0.1:5000", wait_s=0)
    with pytest.raises(StoreError, match=r"has not answered for 0 s \(--server-wait 0\)"):
        gone.call(_refused)


def _refused() -> None:
    import requests

    raise requests.exceptions.ConnectionError("Connection refused")


@pytest.mark.slow
def test_ctrl_c_stops_the_wait_for_the_server(tiny_data: Path, tmp_path: Path,
                                              server: TrackingServer) -> None:
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    output = start_study(study_command(tmp_path, tiny_data, "--trials", "3", "--tracking-uri",
                                       server.url), tmp_path)  # waits 600 s by default
    wait_for_second_trial(storage, output.process)
    server.stop()
    output.wait_for(f"waiting for the MLflow server at {server.url} (down for ")
    output.process.send_signal(signal.SIGINT)
    code, _, err = output.finish(timeout=120)
    assert code == 130 and not error_lines(err), err[-2000:]
    assert "interrupted: completed work is saved; run the same command again to resume" in err
    assert trial_states(storage) == ["COMPLETE", "FAIL"]


@pytest.mark.slow
def test_a_study_against_a_tracking_server_prints_no_mlflow_links(
        tiny_data: Path, tmp_path: Path, server: TrackingServer,
        capsys: pytest.CaptureFixture) -> None:
    """MLflow prints 'View run ... at' and 'View experiment at' at the end of every run on a
    server (14 lines in a 4-trial study); the study's own lines say where its runs are. The
    setting that silences them lives only as long as a call: nothing is left set."""
    before = dict(os.environ)
    code = study.main(study_command(tmp_path, tiny_data, "--trials", "2", "--tracking-uri",
                                    server.url, seconds=0)[3:])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    assert "View run" not in out + err and "View experiment" not in out + err
    assert "2 trials (2 complete" in out
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP")
            or k == "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"} == {
        k: v for k, v in before.items() if k.startswith("MLFLOW_HTTP")
        or k == "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"}
    runs = runs_by_name(MlflowClient(server.url))
    assert {r.info.status for r in runs.values()} == {"FINISHED"} and len(runs) == 3
    assert runs["tiny"].data.params["server_wait"] == "600.0"  # a setting like any other
