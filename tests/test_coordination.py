"""Hundreds of workers on one study: Optuna's gRPC storage proxy with heartbeats
(python -m allsearch.proxy, --storage grpc://HOST:PORT), bounded database connections, the
compose service, and the coordination load test (benchmarks/coordination.py --quick) against
a real PostgreSQL and MLflow server (`.ci/services`; those tests skip without them). Every
server here listens on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
import yaml

from allsearch import proxy
from allsearch.core.errors import ConfigError, StoreError
from allsearch.engines import storage
from conftest import free_port, one_line_error, wait_for

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("ALLSEARCH_TEST_POSTGRES")
MLFLOW = os.environ.get("ALLSEARCH_TEST_MLFLOW")
_skip_without_services = pytest.mark.skipif(not (POSTGRES and MLFLOW), reason="no PostgreSQL/"
                                            "MLflow server: run `. .ci/services` first (CI does)")


def needs_services(test):
    """Skipped without the servers; one such test at a time (they count the servers' connections)."""
    return pytest.mark.xdist_group("services")(_skip_without_services(test))
HEARTBEAT = {"ALLSEARCH_HEARTBEAT_S": "1", "ALLSEARCH_GRACE_S": "2"}


def start_proxy(url: str, port: int) -> subprocess.Popen:
    """`python -m allsearch.proxy` on 127.0.0.1:port, once it says it serves."""
    process = subprocess.Popen([sys.executable, "-m", "allsearch.proxy", "--storage", url,
                                "--host", "127.0.0.1", "--port", str(port), "--threads", "4"],
                               env={**os.environ, **HEARTBEAT}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    assert first.startswith("serving "), first + process.stderr.read()
    assert f"grpc://127.0.0.1:{port}" in first
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the proxy never listened")


def stop(process: subprocess.Popen) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    return process.returncode, out, err


def trial_id(client: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """A trial's storage id, through the storage's public calls."""
    return client.get_trial_id_from_study_id_trial_number(
        client.get_study_id_from_name(study.study_name), number)


def fail_stale(study: optuna.Study, client: optuna.storages.BaseStorage, number: int) -> bool:
    """Ask for the study's stale trials to be failed; says whether trial `number` now is."""
    storage.fail_stale_trials(study, client)
    return study.trials[number].state.name == "FAIL"


def test_heartbeats_cross_the_proxy_and_a_dead_trial_is_failed_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = start_proxy(f"sqlite:///{tmp_path / 'optuna.db'}", port)
    try:
        client = storage.open_storage(f"grpc://127.0.0.1:{port}")
        assert optuna.storages.GrpcStorageProxy in type(client).__mro__
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental
            study = optuna.create_study(storage=client, study_name="proxied")
            dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            never = study.ask()  # no heartbeat ever (a trial just being created): not stale
            live = study.ask({"y": optuna.distributions.FloatDistribution(0, 1)})
            # A live trial, beating every second through the proxy, as a worker's objective.
            with storage.trial_heartbeats(client, live):
                # A worker that died: its trial had a heartbeat, then none.
                client.record_heartbeat(trial_id(client, study, dead.number))
                wait_for(lambda: fail_stale(study, client, dead.number),
                         "the dead trial to be failed")
                # The live trial began before the dead one's last heartbeat: it has run
                # longer than the grace period, and its heartbeats kept it alive.
                assert study.trials[live.number].state.name == "RUNNING"
            # Its worker dies now: the heartbeats stop, the trial stays RUNNING until failed
            # (which only a trial that had heartbeats can be).
            wait_for(lambda: fail_stale(study, client, live.number),
                     "the live trial, left, to be failed")
        trials = {t.number: t for t in study.get_trials()}
        assert trials[dead.number].system_attrs == {}  # a heartbeat, not an attribute
        assert trials[never.number].state.name == "RUNNING"
        for failed in (dead, live):
            retries = [t for t in trials.values()
                       if t.system_attrs.get("failed_trial") == failed.number]
            assert len(retries) == 1 and retries[0].state.name == "WAITING"
            assert retries[0].params == trials[failed.number].params
        client.close()
    finally:
        code, out, err = stop(server)
    assert code == 0 and "proxy stopped" in out, err  # SIGTERM stops it cleanly
    assert "Traceback" not in err


KILLED_WORKER = """
import sys, threading, time, warnings
import optuna
from allsearch.engines import storage
warnings.simplefilter("ignore")
port = int(sys.argv[1])
ours = storage.open_storage(f"grpc://127.0.0.1:{port}")
theirs = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)

def hang(tag, trial):
    trial.suggest_float("x", 0, 1)
    print(tag, trial.number, flush=True)
    time.sleep(600)

def with_heartbeats(trial):
    with storage.trial_heartbeats(ours, trial):
        hang("ours", trial)

threading.Thread(target=optuna.load_study(study_name="killed", storage=theirs).optimize,
                 args=(lambda trial: hang("optuna", trial),), daemon=True).start()
optuna.load_study(study_name="killed", storage=ours).optimize(with_heartbeats)
"""


def test_a_worker_killed_behind_the_proxy_leaves_no_running_trial_with_our_client(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why allsearch has its own client: behind Optuna's, a dead worker's trial stays RUNNING
    (Optuna's optimize loop beats for no proxy client); behind ours it is failed and retried."""
    for key, value in HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = start_proxy(f"sqlite:///{tmp_path / 'optuna.db'}", port)
    try:
        client = storage.open_storage(f"grpc://127.0.0.1:{port}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(storage=client, study_name="killed")
            worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(port)],
                                      stdout=subprocess.PIPE, text=True)
            try:
                numbers = dict(worker.stdout.readline().split() for _ in range(2))
            finally:
                worker.kill()  # SIGKILL: nothing gets to clean up
                worker.wait()
            ours, theirs = int(numbers["ours"]), int(numbers["optuna"])
            # A trial whose last heartbeat came after both workers died: once it is stale,
            # so is every trial that had a heartbeat before.
            control = study.ask()
            client.record_heartbeat(trial_id(client, study, control.number))
            wait_for(lambda: fail_stale(study, client, control.number),
                     "the control trial to be failed")
        trials = {t.number: t for t in study.get_trials()}
        assert trials[ours].state.name == "FAIL"
        assert trials[theirs].state.name == "RUNNING"  # for ever
        retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == ours]
        assert len(retried) == 1 and retried[0].params == trials[ours].params
        client.close()
    finally:
        stop(server)


def test_compat_the_proxys_cache_is_still_optunas_advice_and_passes_writes_on(
        tmp_path: Path) -> None:
    """allsearch.core.compat.cached_storage, Optuna's get_storage: still what Optuna's proxy
    documentation asks for, still a cache in front of the storage (not the storage itself),
    and the proxy's heartbeat calls still reach ProxiedRDBStorage through it."""
    assert "get_storage" in (optuna.storages.run_grpc_proxy_server.__doc__ or "")
    served = storage.open_proxied_storage(f"sqlite:///{tmp_path / 'optuna.db'}", connections=2)
    assert isinstance(served, optuna.storages.BaseStorage)
    assert not isinstance(served, storage.ProxiedRDBStorage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(storage=served, study_name="cached")
        trial = study.ask()
    served.set_trial_system_attr(trial_id(served, study, trial.number), storage.HEARTBEAT_ATTR,
                                 True)
    assert study.trials[trial.number].system_attrs == {}  # a heartbeat, not an attribute


def test_no_proxy_at_the_url_is_one_line(tiny_data: Path) -> None:
    port = free_port()
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "allsearch.study", "--storage",
                           f"grpc://127.0.0.1:{port}", "--data", str(tiny_data), "--trials", "1",
                           "--trainer", "standin:0", "--no-progress"],
                          env={**os.environ, "ALLSEARCH_PROXY_WAIT_S": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: no Optuna storage proxy answers at 'grpc://127.0.0.1:{port}' "
                     f"(waited 1 s); start one there (python -m allsearch.proxy --storage "
                     f"postgresql://... --port {port}) or fix the URL"]
    assert time.time() - started < 60
    with pytest.raises(ConfigError, match=r"a proxy is grpc://HOST:PORT"):
        storage.open_storage("grpc://127.0.0.1")


def test_the_proxy_refuses_a_busy_port_and_a_proxy_url(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert proxy.main(["--storage", url, "--port", str(port)]) == 2
    assert one_line_error(capsys) == (f"error: cannot listen on 127.0.0.1:{port} (Address already "
                                      f"in use); pass another --port, or --host with an address "
                                      f"of this machine")
    assert proxy.main(["--storage", "grpc://127.0.0.1:13000"]) == 2
    assert "is a proxy itself" in one_line_error(capsys)
    assert proxy.main(["--storage", url, "--threads", "0"]) == 2
    assert "--threads must be an int in [1, 1024], got 0" in one_line_error(capsys)
    with pytest.raises(StoreError, match=r"cannot be opened"):
        storage.open_proxied_storage("postgresql://nobody:secret@127.0.0.1:1/none", connections=2)


def test_a_worker_holds_at_most_its_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage.pool_settings() == {"pool_size": 2, "max_overflow": 0, "pool_pre_ping": True,
                                       "pool_recycle": 1800, "pool_timeout": 60}
    monkeypatch.setenv("ALLSEARCH_DB_POOL", "5")
    assert storage.pool_settings()["pool_size"] == 5
    assert storage.pool_settings(16)["pool_size"] == 16  # the proxy's: one per thread
    monkeypatch.setenv("ALLSEARCH_DB_POOL", "0")
    with pytest.raises(ConfigError, match="ALLSEARCH_DB_POOL must be >= 1, got 0"):
        storage.pool_settings()


@pytest.mark.slow
@needs_services
def test_connections_of_a_worker_stay_within_its_pool_on_postgresql(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A study with heartbeats (trial loop + heartbeat thread) on the real server: never more
    than POOL_SIZE connections, counted by the server itself."""
    import psycopg

    for key, value in HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    tag = f"pool-{uuid.uuid4().hex[:8]}"
    rdb = storage.open_storage(f"{POSTGRES}?application_name={tag}")
    assert rdb.engine.pool.size() == storage.POOL_SIZE
    peak = [0]
    running = threading.Event()
    running.set()

    def watch() -> None:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            while running.is_set():
                count = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                      "application_name = %s", (tag,)).fetchone()[0]
                peak[0] = max(peak[0], count)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(storage=rdb, study_name=tag)
            study.optimize(lambda t: time.sleep(1.5) or t.suggest_float("x", 0, 1), n_trials=3)
    finally:
        running.clear()
        watcher.join()
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert 1 <= peak[0] <= storage.POOL_SIZE
    rdb.engine.dispose()


def test_compose_workers_use_the_proxy_by_default() -> None:
    spec = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = spec["services"]
    proxy_service, worker = services["proxy"], services["worker"]
    command = " ".join(proxy_service["command"])
    assert "python -m allsearch.proxy" in command and "--host 0.0.0.0 --port 13000" in command
    assert proxy_service["restart"] and "healthcheck" in proxy_service
    assert worker["environment"]["STUDY_STORAGE"] == "${STUDY_STORAGE:-grpc://proxy:13000}"
    assert '--storage "$${STUDY_STORAGE}"' in " ".join(worker["command"])
    assert worker["depends_on"]["proxy"] == {"condition": "service_healthy"}
    assert "POSTGRES_URL" not in worker["environment"]  # workers hold no database password
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/services installs it)")
    docker = REPO / "docker"
    done = subprocess.run(["docker-compose", "--env-file", str(docker / "env.example"), "-f",
                           str(docker / "compose.yaml"), "config"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert resolved["worker"]["environment"]["STUDY_STORAGE"] == "grpc://proxy:13000"
    assert resolved["proxy"]["environment"]["PROXY_THREADS"] == "16"


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(900)
@needs_services
def test_coordination_quick_mode_passes_its_checks(tmp_path: Path) -> None:
    """4 `python -m allsearch.study` processes with the stand-in trainer, straight to
    PostgreSQL and through the proxy, 1 of them SIGKILLed mid-trial each time: every trial
    once, one child run each under one parent, killed trials failed and retried, none left
    RUNNING (the benchmark's own checks; it exits non-zero when one fails)."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "coordination.py"),
                           "--quick"], cwd=tmp_path, capture_output=True, text=True, timeout=880,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("coordination, not training")
    rows = [line for line in lines if line.startswith("4 workers, ")]
    assert len(rows) == 2 and all("1 killed" in r and r.endswith("checks: passed") for r in rows)
    assert re.fullmatch(r"4 workers \(1 killed\), proxy: \d+\.\d trials/min, peak \d+ database "
                        r"connections; direct: \d+\.\d trials/min, peak \d+ database "
                        r"connections; checks passed", lines[-1]), lines[-1]
