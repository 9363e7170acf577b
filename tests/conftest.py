"""Shared fixtures: tiny synthetic datasets written to temporary folders, isolated stores."""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from allsearch.data.synthetic import write_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "leukemia"


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """4 classes x 12 images (48x48 PNG), one duplicate pair, one text and one hidden file."""
    return write_dataset(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and MLflow/Optuna store, and runs in a temporary cwd."""
    store = tmp_path / "mlruns"
    monkeypatch.setenv("ALLSEARCH_CACHE_DIR", str(store / "cache"))
    monkeypatch.setenv("ALLSEARCH_ARTIFACT_ROOT", str(store / "artifacts"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return store


@pytest.fixture(autouse=True)
def train_marker_is_honest(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the `train` marker may not fit a model in this process: the fast loop
    (pytest -m "not train and not slow") stays fast only if every test that trains says so."""
    if request.node.get_closest_marker("train") is not None:
        return
    import keras

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} trains a model: mark it @pytest.mark.train")

    monkeypatch.setattr(keras.Model, "fit", refuse)


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "Segmented").is_dir():
        pytest.skip("the team copy of the leukemia dataset is not here")
    return REAL_DATA


def fail_on_call(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, call: int,
                 error: BaseException) -> None:
    """Make the `call`-th call of owner.name raise `error`; every other call goes through."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def free_port() -> int:
    """A loopback port nothing listens on (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Poll `condition` until it holds (a test waits on what it needs, not on a guessed
    number of seconds); fails, naming `what`, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.1)


def stale_in_copy(database: Path, study_name: str, number: int, grace_s: int) -> bool:
    """Whether trial `number` is stale (no heartbeat for `grace_s`, by the database's clock),
    judged by Optuna's fail_stale_trials on a copy, so the database itself is left as it is."""
    import shutil
    import tempfile

    import optuna

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.db"
        shutil.copyfile(database, copy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(f"sqlite:///{copy}", heartbeat_interval=1,
                                                 grace_period=grace_s)
            study = optuna.load_study(study_name=study_name, storage=storage)
            optuna.storages.fail_stale_trials(study)
            state = study.trials[number].state
        storage.engine.dispose()
    return state == optuna.trial.TrialState.FAIL
