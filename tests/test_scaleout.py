"""One study across several worker processes on a real PostgreSQL server and a real MLflow
tracking server, as on many machines. `.ci/services` starts both on loopback and exports
ALLSEARCH_TEST_POSTGRES / ALLSEARCH_TEST_MLFLOW; without them these tests skip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from allsearch.engines import optuna_engine

POSTGRES = os.environ.get("ALLSEARCH_TEST_POSTGRES")
MLFLOW = os.environ.get("ALLSEARCH_TEST_MLFLOW")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("services"),  # one test at a time on the shared servers
    pytest.mark.skipif(not (POSTGRES and MLFLOW), reason="no PostgreSQL/MLflow server: "
                       "run `. .ci/services` first (CI does)"),
]

SPACE = """name: scaleout
objective: val_accuracy
params:
  batch_size: {type: categorical, choices: [16, 32, 64]}
  loss: {type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}
fixed: {epochs: EPOCHS, conv_layers: 2, dense_units: 32}
"""


def worker_command(name: str, space: Path, data: Path, trials: int) -> list[str]:
    """What each machine would run to join the study."""
    return [sys.executable, "-m", "allsearch.study", "--study-name", name, "--space", str(space),
            "--data", str(data), "--trials", str(trials), "--storage", str(POSTGRES),
            "--tracking-uri", str(MLFLOW), "--pruner", "none", "--log-models", "none",
            "--trials-per-process", "0", "--no-progress", "--retrain-duplicates"]


def worker_env() -> dict[str, str]:
    return {**os.environ, "ALLSEARCH_HEARTBEAT_S": "1", "ALLSEARCH_GRACE_S": "3",
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def child_runs(name: str) -> tuple[list[str], dict[str, object]]:
    """(parent run ids, child runs by id) of the study's experiment on the server."""
    client = MlflowClient(MLFLOW)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r.info.run_id for r in runs if r.data.tags.get("allsearch.role") == "parent"]
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, children


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "scaleout.yaml"
    path.write_text(SPACE.replace("EPOCHS", "2"))
    return path


@pytest.mark.train
def test_two_workers_share_one_study_and_one_parent_run(tiny_data: Path, space: Path) -> None:
    name = f"two-workers-{uuid.uuid4().hex[:8]}"
    command = worker_command(name, space, tiny_data, trials=6)
    workers = [subprocess.Popen(command, env=worker_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]

    final = optuna.load_study(study_name=name, storage=POSTGRES)
    trials = final.get_trials(deepcopy=False)
    assert {t.state.name for t in trials} == {"COMPLETE"}
    # Each worker stops once the study holds 6; one may be finishing a trial at that moment.
    assert 6 <= len(trials) <= 7
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers trained
    parents, children = child_runs(name)
    assert len(parents) == 1 and final.user_attrs["mlflow_parent_run_id"] == parents[0]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials]
    assert len(set(run_ids)) == len(trials)  # no trial logged twice, none lost
    assert set(run_ids) == set(children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parents[0]}
    assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics
               for r in children.values())


@pytest.mark.train
def test_sigkilled_worker_trial_is_failed_by_heartbeat_and_retried(tiny_data: Path,
                                                                     tmp_path: Path) -> None:
    name = f"sigkill-{uuid.uuid4().hex[:8]}"
    slow = tmp_path / "slow.yaml"
    slow.write_text(SPACE.replace("EPOCHS", "12"))
    command = worker_command(name, slow, tiny_data, trials=4)
    doomed = subprocess.Popen(command, env=worker_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    survivor = subprocess.Popen(command, env=worker_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            continue
        victim = next((t for t in trials if t.state.name == "RUNNING"
                       and t.user_attrs.get("worker", "").endswith(f":{doomed.pid}")
                       and t.user_attrs.get("mlflow_run_id")), None)
    assert victim is not None, "the first worker never started a trial"
    time.sleep(1.5)  # in the middle of its training
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]

    final = optuna.load_study(study_name=name, storage=POSTGRES)
    trials = {t.number: t for t in final.get_trials(deepcopy=False)}
    assert trials[victim.number].state.name == "FAIL"  # failed by the heartbeat
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params
    assert retries[0].state.name == "COMPLETE"
    assert optuna_engine.counted_trials(final) >= 4
    assert all(t.state.name == "COMPLETE" for t in trials.values() if t.number != victim.number)
    parents, children = child_runs(name)
    assert len(parents) == 1
    assert children[victim.user_attrs["mlflow_run_id"]].info.status == "KILLED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parents[0]}


@pytest.mark.train
def test_password_from_the_environment(tiny_data: Path, space: Path) -> None:
    """A storage URL without its password works with libpq's PGPASSWORD, as on a worker
    machine whose secrets come from the environment."""
    from urllib.parse import urlsplit

    parts = urlsplit(POSTGRES)
    bare = POSTGRES.replace(f":{parts.password}@", "@")
    name = f"env-password-{uuid.uuid4().hex[:8]}"
    command = worker_command(name, space, tiny_data, trials=1)
    command[command.index("--storage") + 1] = bare
    env = {**worker_env(), "PGPASSWORD": str(parts.password)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert parts.password not in done.stdout + done.stderr
    assert len(optuna.load_study(study_name=name, storage=POSTGRES).trials) == 1


def test_workers_started_together_on_an_empty_database_all_open_it() -> None:
    """Every worker of a fresh cluster creates Optuna's tables at once; the ones that lose
    that race must wait and go on, not exit (seen in CI: a UniqueViolation on pg_type)."""
    import psycopg

    database = f"race_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    url = POSTGRES.rsplit("/", 1)[0] + "/" + database
    start_at = time.time() + 8  # after every process has imported Optuna
    opener = ("import sys, time; from allsearch.engines.storage import open_storage; "
              "time.sleep(max(0, float(sys.argv[2]) - time.time())); open_storage(sys.argv[1])")
    workers = [subprocess.Popen([sys.executable, "-c", opener, url, str(start_at)],
                                stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 6, "\n".join(errors)[-3000:]
    assert optuna.get_all_study_summaries(storage=url) == []  # the schema is whole
