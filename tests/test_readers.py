"""The commands that only read a store (leaderboard, ui) on faulty stores, paths and flags:
one `error:` line and exit code 2, never a traceback, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from allsearch import leaderboard
from allsearch.tracking.tracked import start_trial
from allsearch.tracking.tracking import Tracker
from conftest import free_port, one_line_error


def command(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m allsearch.<args>` in the test's folder: (its result, seconds it took)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return done, time.monotonic() - started


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed (nothing else but library noise)."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def error_line_in_process(capsys: pytest.CaptureFixture, module: str, *args: str) -> str:
    """The one line `python -m allsearch.<module> ARGS` prints, called as its main() in this
    process (the tests that run a reader as a separate process are the ones above)."""
    import importlib

    capsys.readouterr()
    assert importlib.import_module(f"allsearch.{module}").main(list(args)) == 2
    return one_line_error(capsys)


def small_study(name: str = "readme") -> str:
    """A study in the default store (one complete trial run, nothing trained); its parent id."""
    tracker = Tracker(name)
    parent = tracker.start_parent(name, {"space": "paper"})
    run = start_trial(tracker, parent_id=parent, name="trial-0",
                      params={"epochs": 15, "batch_size": 64, "loss": "categorical_crossentropy",
                              "conv_layers": 3, "trial_number": 0, "seed": 0, "variant": "tiny"})
    tracker.log_metrics(run.run_id, {"val_accuracy": 0.8, "test_accuracy": 0.8, "epochs_run": 15})
    run.end("COMPLETE")
    tracker.end_run(parent)
    return parent


def test_leaderboard_unreachable_server_fails_fast() -> None:
    done, seconds = command("allsearch.leaderboard", "--tracking-uri", "http://127.0.0.1:1")
    line = error_line(done)
    assert "MLflow server 'http://127.0.0.1:1' cannot be reached" in line
    assert seconds < 60, f"took {seconds:.0f} s"  # MLflow's own retries took 252 s


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_leaderboard_on_a_corrupt_store_names_the_file(tmp_path: Path, damage: str) -> None:
    small_study()
    store = tmp_path / "mlruns" / "mlflow.db"
    assert leaderboard.main([]) == 0  # readable before the damage
    if damage == "random bytes":
        store.write_bytes(os.urandom(store.stat().st_size))
    else:
        store.write_bytes(store.read_bytes()[:4096])
    done, _ = command("allsearch.leaderboard")
    line = error_line(done)
    assert str(store) in line and "damaged" in line and "move it aside" in line, line
    for other in ("allsearch.ui", "--port", str(free_port())), ("allsearch.leaderboard", "--study", "x"):
        assert str(store) in error_line(command(*other)[0])


def test_leaderboard_writes_into_folders_it_creates(tmp_path: Path, capsys) -> None:
    small_study()
    out, space = tmp_path / "reports" / "missing" / "x.md", Path("missing/dir/x.yaml")
    assert leaderboard.main(["--out", str(out), "--save-space", str(space)]) == 0
    assert out.read_text().startswith("| epochs |")
    assert "sample" in space.read_text() and (tmp_path / space).is_file()
    # Where a folder cannot be made (a file is in the way): one line naming the flag.
    (tmp_path / "taken").write_text("a file, not a folder")
    capsys.readouterr()
    assert leaderboard.main(["--out", "taken/x.md"]) == 2
    line = one_line_error(capsys)
    assert "--out 'taken/x.md' cannot be written" in line, line
    assert leaderboard.main(["--save-space", "taken/sub/x.yaml"]) == 2
    assert "--save-space 'taken/sub/x.yaml' cannot be written" in one_line_error(capsys)


def test_ui_port_out_of_range(capsys: pytest.CaptureFixture) -> None:
    small_study()  # everything else is fine: the flag is what is wrong
    line = error_line(command("allsearch.ui", "--port", "99999", timeout=60)[0])
    assert "--port must be between 1 and 65535, got 99999" in line, line
    for port in ("0", "-1"):
        line = error_line_in_process(capsys, "ui", "--port", port)
        assert f"--port must be between 1 and 65535, got {port}" in line, line


def test_ui_without_any_study(tmp_path: Path) -> None:
    # The leaderboard first, as a user tries it: it creates no store, and the UI then says
    # what to do instead of failing on the Optuna storage.
    assert error_line(command("allsearch.leaderboard")[0]).startswith("error: no study found")
    for _ in range(2):
        line = error_line(command("allsearch.ui", "--port", str(free_port()))[0])
        assert line.startswith("error: no study found") and \
            "run python -m allsearch.study first" in line, line
        # A store that holds no study yet (e.g. created by hand) is no different.
        (tmp_path / "mlruns").mkdir(exist_ok=True)
        (tmp_path / "mlruns" / "mlflow.db").touch()
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


@pytest.mark.parametrize("args, message", [
    (("allsearch.leaderboard",), "no study found: there is no MLflow store at"),
    (("allsearch.leaderboard", "--study", "mine", "--format", "csv"),
     "no study found: there is no MLflow store at"),
    (("allsearch.ui", "--port", "{port}"), "no study found: there is no MLflow store at"),
    (("allsearch.predict", "{image}"), "no champion model in"),
    (("allsearch.predict", "{image}", "--study", "mine"), "cannot be loaded from"),
    (("allsearch.predict", "{image}", "--model", "0123456789abcdef0123456789abcdef"),
     "cannot be loaded from"),
    (("allsearch.predict", "{image}", "--model", "models:/allsearch-mine@champion"),
     "cannot be loaded from"),
], ids=["leaderboard", "leaderboard-study", "ui", "predict", "predict-study", "predict-run-id",
        "predict-models-uri"])
@pytest.mark.parametrize("uri", [None, "sqlite:///elsewhere/mlflow.db"], ids=["default", "env"])
def test_readers_in_a_folder_without_a_store_leave_it_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str,
        uri: str | None, capsys: pytest.CaptureFixture) -> None:
    """A reader run where there is no store says so in one line and creates nothing there:
    no mlruns/ folder, no mlflow.db (MLflow creates both on its first read). Each runs as a
    separate process once (the default store); with $MLFLOW_TRACKING_URI, as its main() here."""
    from PIL import Image

    image = tmp_path / "cell.png"
    Image.new("L", (60, 60), 128).save(image)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    if uri is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    port = str(free_port())
    argv = [a.replace("{image}", str(image)).replace("{port}", port) for a in args]
    if uri is None:
        line = error_line(command(*argv)[0])
    else:
        line = error_line_in_process(capsys, argv[0].removeprefix("allsearch."), *argv[1:])
    store = empty / ("elsewhere/mlflow.db" if uri else "mlruns/mlflow.db")
    assert message in line and f"sqlite:///{store}" in line, line
    assert "python -m allsearch.study" in line and "--tracking-uri" in line, line
    assert sorted(p.name for p in empty.rglob("*")) == []
