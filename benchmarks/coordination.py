"""Coordination load test: N worker processes on one study, straight to PostgreSQL and through
the gRPC storage proxy, with and without workers SIGKILLed mid-trial.

    python benchmarks/coordination.py [--quick] [--workers 8 32 64] [--modes direct proxy]
        [--kill-fraction 0 0.25] [--trials-per-worker 4] [--seconds 2]
        [--storage postgresql://...] [--tracking-uri http://...] [--out FILE.md]

Each worker is a separate `python -m allsearch.study` process, as on separate machines (one
study, one MLflow parent run; sampling, trial states, heartbeats, child runs, metrics and
artifacts for real), with the stand-in trainer (`--trainer standin:SECONDS`: it sleeps and
returns a synthetic result, no TensorFlow): this measures coordination, not training. Per run
it reports trials per minute, peak database connections (pg_stat_activity, sampled while it
runs), MLflow retries and errors (from the workers' stderr) and the workers' memory; then it
checks that every trial is in Optuna once with exactly one child run under the one parent run
and nothing is left RUNNING or WAITING. With --kill-fraction F it SIGKILLs that share of the
workers, each in the middle of a trial, and checks that exactly those trials were failed (their
runs KILLED) and retried with the same parameters until an attempt completes (a retry
whose worker is killed too is retried again, up to twice), and that nothing else was lost.

All of it runs on one machine, so the workers run at --nice 10: the servers (PostgreSQL, MLflow,
the proxy) go first, as on machines of their own. The stores default to the services of
`.ci/services` ($ALLSEARCH_TEST_POSTGRES, $ALLSEARCH_TEST_MLFLOW). --quick: 4 workers, direct
and through the proxy, a quarter killed, heartbeat 1 s, grace 5 s. Exits non-zero when a check
fails. Key figure, last line: trials per minute and peak database connections through the
proxy and direct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import isolated_workdir, machine, quiet_env, synthetic_data  # noqa: E402

SPACE = """name: coordination
objective: val_accuracy
params:
  learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}
  batch_size: {type: categorical, choices: [16, 32, 64]}
fixed: {epochs: EPOCHS, conv_layers: 2, dense_units: 32}
"""
EPOCHS = 4  # the stand-in's seconds are spread over them; a kill lands between two epochs
MONITOR = "allsearch-coordination-monitor"  # application_name of this script's own connections
MIN_AVAILABLE_MB = 1024  # below this, the run is stopped: the machine must not swap or OOM


@dataclass
class Worker:
    process: subprocess.Popen
    err: Path
    killed_trial: int | None = None
    peak_rss_mb: float = 0.0


@dataclass
class Row:
    workers: int
    mode: str
    kill_fraction: float
    command: str
    trials: int = 0
    counted: int = 0
    target: int = 0
    per_minute: float = 0.0
    wall_s: float = 0.0
    span_s: float = 0.0
    startup_s: float = 0.0  # launch -> first trial started
    winddown_s: float = 0.0  # last trial finished -> last worker exited (summaries, plots)
    cpu_busy: float = 0.0  # share of the machine's CPU time busy during the run
    workers_cpu_s: float = 0.0  # CPU seconds of the worker processes, all together
    # The oldest heartbeat of a live trial seen while it ran: the grace period must be longer.
    max_heartbeat_age_s: float = 0.0
    peak_connections: int = 0
    peak_by_database: dict[str, int] = field(default_factory=dict)
    max_connections: int = 0
    retries: int = 0
    errors: int = 0
    killed: int = 0
    peak_worker_rss_mb: float = 0.0
    peak_pss_gb: float = 0.0
    min_available_gb: float = 0.0
    proxy_cpu_s: float | None = None
    proxy_rss_mb: float | None = None
    failures: list[str] = field(default_factory=list)


def tagged(url: str) -> str:
    """The database URL with this script's application_name: its own connections are not
    counted as the workers'."""
    return f"{url}{'&' if '?' in url else '?'}application_name={MONITOR}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_of(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MB; PSS counts shared pages once across processes."""
    rss = pss = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return rss, pss


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def cpu_times() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Connections:
    """Samples pg_stat_activity: the workers', proxies' and MLflow server's connections."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.connection = psycopg.connect(tagged(url), autocommit=True)
        self.max_connections = int(self.connection.execute("SHOW max_connections").fetchone()[0])
        self.peak = 0
        self.peak_by_database: dict[str, int] = {}

    def sample(self) -> None:
        rows = self.connection.execute(
            "SELECT datname, count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND application_name <> %s AND pid <> pg_backend_pid() GROUP BY datname",
            (MONITOR,)).fetchall()
        by_database = {str(name): int(n) for name, n in rows}
        self.peak = max(self.peak, sum(by_database.values()))
        for name, n in by_database.items():
            self.peak_by_database[name] = max(self.peak_by_database.get(name, 0), n)

    def heartbeat_ages(self, study_name: str) -> dict[int, float]:
        """Seconds since each running trial's last heartbeat, by trial number (the server's
        clock, as Optuna's stale check)."""
        rows = self.connection.execute(
            "SELECT t.number, EXTRACT(EPOCH FROM now() - h.heartbeat) FROM trials t "
            "JOIN trial_heartbeats h ON h.trial_id = t.trial_id JOIN studies s ON "
            "s.study_id = t.study_id WHERE s.study_name = %s AND t.state = 'RUNNING'",
            (study_name,)).fetchall()
        return {int(n): float(age) for n, age in rows}

    def close(self) -> None:
        self.connection.close()


def start_proxy(storage: str, workdir: Path, env: dict[str, str], threads: int
                ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (workdir / f"proxy-{port}.log").open("w")
    # The database URL (and its password) in the environment, not on a command line `ps` shows.
    process = subprocess.Popen([sys.executable, "-m", "allsearch.proxy", "--host", "127.0.0.1",
                                "--port", str(port), "--threads", str(threads)],
                               env={**env, "ALLSEARCH_STORAGE": storage}, stdout=log,
                               stderr=subprocess.STDOUT, text=True)
    url = f"grpc://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"the proxy exited at start:\n{Path(log.name).read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, url
        time.sleep(0.2)
    process.kill()
    sys.exit("the proxy did not listen within 120 s")


def mid_trial(trials: list[Any], pid: int) -> int | None:
    """The number of the trial `pid` is in the middle of: its run exists (and the trial
    records it), its training has not reported its last epoch."""
    for t in trials:
        if (t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{pid}")
                and t.user_attrs.get("mlflow_run_id") and len(t.intermediate_values) < EPOCHS):
            return t.number
    return None


def run_once(args: argparse.Namespace, workers_n: int, mode: str, kill_fraction: float,
             workdir: Path, data: Path, space: Path) -> Row:
    import optuna

    command = (f"python benchmarks/coordination.py --workers {workers_n} --modes {mode} "
               f"--kill-fraction {kill_fraction:g} --trials-per-worker {args.trials_per_worker} "
               f"--seconds {args.seconds:g} --heartbeat {args.heartbeat} --grace {args.grace} "
               f"--nice {args.nice}")
    row = Row(workers_n, mode, kill_fraction, command)
    name = f"coord-{mode}-{workers_n}-{uuid.uuid4().hex[:6]}"
    row.target = workers_n * args.trials_per_worker
    # MLflow's telemetry thread unsets an environment variable while requests iterates the
    # environment: with 64 workers some died of it (KeyError: '_MLFLOW_TELEMETRY_SESSION_ID').
    env = {**quiet_env(), "ALLSEARCH_HEARTBEAT_S": str(args.heartbeat),
           "ALLSEARCH_GRACE_S": str(args.grace), "MLFLOW_DISABLE_TELEMETRY": "true"}
    proxy = None
    if mode == "proxy":
        proxy, storage = start_proxy(args.storage, workdir, env, args.proxy_threads)
        worker_env = env
    else:  # the URL with its password in the environment ($ALLSEARCH_STORAGE), not in `ps`
        storage, worker_env = None, {**env, "ALLSEARCH_STORAGE": args.storage}
    logs = workdir / name
    logs.mkdir()
    worker_command = [sys.executable, "-m", "allsearch.study", "--study-name", name,
                      "--space", str(space), "--data", str(data), "--trials", str(row.target),
                      *(["--storage", storage] if storage else []),
                      "--tracking-uri", args.tracking_uri,
                      "--trainer", f"standin:{args.seconds:g}", "--pruner", "none",
                      "--log-models", "none", "--workers", "1", "--trials-per-process", "0",
                      "--worker-memory-mb", "0", "--retrain-duplicates", "--no-progress"]
    connections = Connections(args.storage)
    row.max_connections = connections.max_connections
    rng = random.Random(args.seed)
    started = time.time()
    busy_before, total_before = cpu_times()
    children_before = children_cpu_s()
    workers = []
    for i in range(workers_n):
        err = logs / f"worker-{i}.err"
        with err.open("w") as err_file:
            workers.append(Worker(subprocess.Popen(
                worker_command, env=worker_env, cwd=workdir, stdout=subprocess.DEVNULL,
                stderr=err_file, preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None),
                err))
    victims = rng.sample(workers, round(workers_n * kill_fraction))
    monitor = optuna.storages.RDBStorage(tagged(args.storage),
                                         engine_kwargs={"pool_size": 2, "max_overflow": 0})
    study = None
    row.min_available_gb = available_mb() / 1024
    sampled = 0.0
    try:
        while any(w.process.poll() is None for w in workers):
            connections.sample()
            if time.time() - sampled > 1:  # reading every worker's page tables takes a while
                sampled, pss = time.time(), 0.0
                for w in workers:
                    if w.process.poll() is None:
                        rss, p = memory_of(w.process.pid)
                        w.peak_rss_mb = max(w.peak_rss_mb, rss)
                        pss += p
                row.peak_pss_gb = max(row.peak_pss_gb, pss / 1024)
            available = available_mb()
            row.min_available_gb = min(row.min_available_gb, available / 1024)
            if available < MIN_AVAILABLE_MB:
                raise MemoryError(f"only {available:.0f} MB of memory left: stopped the run")
            if time.time() - started > args.run_timeout:
                raise TimeoutError(f"the run took over {args.run_timeout} s: stopped it")
            killed = {w.killed_trial for w in victims}
            ages = connections.heartbeat_ages(name)
            row.max_heartbeat_age_s = max([row.max_heartbeat_age_s] + [
                age for number, age in ages.items() if number not in killed])
            if study is None:
                try:
                    study = optuna.load_study(study_name=name, storage=monitor)
                except KeyError:
                    pass
            pending = [w for w in victims if w.killed_trial is None and w.process.poll() is None]
            if study is not None and pending:
                trials = study.get_trials(deepcopy=False)
                # Kill once every worker has had time to start (the study holds a worker's
                # worth of finished trials), each victim as soon as it is mid-trial, and not
                # late: a trial killed as the study fills is failed after the last worker
                # ended, and its retry would wait for a next run of the study.
                finished = sum(t.state.is_finished() for t in trials)
                if workers_n <= finished <= 0.6 * row.target:
                    for w in pending:
                        number = mid_trial(trials, w.process.pid)
                        if number is not None:
                            w.process.send_signal(signal.SIGKILL)
                            w.killed_trial = number
                time.sleep(0.1)
            else:
                time.sleep(0.5)
    except (MemoryError, TimeoutError) as exc:
        for w in workers:
            w.process.kill()
        row.failures.append(str(exc))
    except BaseException:  # Ctrl-C: no worker or proxy outlives the benchmark
        for process in [w.process for w in workers] + ([proxy] if proxy else []):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        raise
    for w in workers:
        w.process.wait()
    ended = time.time()
    row.workers_cpu_s = children_cpu_s() - children_before
    row.wall_s = ended - started
    busy_after, total_after = cpu_times()
    row.cpu_busy = (busy_after - busy_before) / max(1, total_after - total_before)
    connections.close()
    row.peak_connections, row.peak_by_database = connections.peak, connections.peak_by_database
    row.peak_worker_rss_mb = max(w.peak_rss_mb for w in workers)
    if proxy is not None:
        row.proxy_cpu_s = cpu_seconds(proxy.pid)
        row.proxy_rss_mb = memory_of(proxy.pid)[0]
        proxy.send_signal(signal.SIGTERM)
        try:
            code = proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proxy.kill()
            code = proxy.wait()
        if code != 0:
            row.failures.append(f"the proxy did not stop cleanly on SIGTERM (exit code {code})")
    row.killed = sum(w.killed_trial is not None for w in workers)
    if len(victims) != row.killed:
        row.failures.append(f"only {row.killed} of {len(victims)} workers were caught mid-trial "
                            f"and killed")
    count_stderr(row, workers)
    try:
        final = optuna.load_study(study_name=name, storage=monitor)
    except KeyError:
        row.failures.append("no worker created the study")
    else:
        check(row, name, workers, final, args)
        finished = [t for t in final.get_trials(deepcopy=False) if t.datetime_complete]
        if finished:
            first = min(t.datetime_start for t in finished).timestamp()
            row.startup_s = first - started
            row.winddown_s = ended - max(t.datetime_complete for t in finished).timestamp()
    monitor.engine.dispose()
    return row


def count_stderr(row: Row, workers: list[Worker]) -> None:
    """MLflow's HTTP retries (urllib3 says "Retrying (Retry(...") and the errors workers
    printed; a worker that exited non-zero without being killed is a failure."""
    for i, w in enumerate(workers):
        text = w.err.read_text(errors="replace")
        row.retries += sum("Retrying (" in line for line in text.splitlines())
        errors = [line for line in text.splitlines()
                  if line.startswith("error:") or "Traceback" in line or " 429 " in line
                  or " 503 " in line or "Error:" in line]
        row.errors += len(errors)
        if w.killed_trial is None and w.process.returncode != 0:
            row.failures.append(f"worker {i} exited with {w.process.returncode}: "
                                f"{(errors or text.splitlines() or ['no output'])[-1][:300]}")


def check(row: Row, name: str, workers: list[Worker], study: Any, args: argparse.Namespace) -> None:
    """Every trial exactly once with exactly one child run under the one parent run; nothing
    RUNNING; killed trials failed, their runs KILLED, each retried to completion; nothing else
    lost."""
    from mlflow.tracking import MlflowClient

    from allsearch.core.contract import PARENT_ATTR, ROLE
    from allsearch.engines.storage import MAX_RETRIES

    fail = row.failures.append
    trials = study.get_trials(deepcopy=False)
    row.trials = len(trials)
    states = Counter(t.state.name for t in trials)
    row.counted = sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED")
                      or (t.state.name == "FAIL" and t.user_attrs.get("error")))
    finished = [t for t in trials if t.datetime_complete is not None and t.datetime_start]
    if finished:
        first = min(t.datetime_start for t in finished)
        last = max(t.datetime_complete for t in finished)
        row.span_s = (last - first).total_seconds()
        row.per_minute = row.counted / max(row.span_s, 1e-9) * 60
    if states["RUNNING"] or states["WAITING"]:
        fail(f"trials left unfinished: {dict(states)}")
    # Each worker stops once the study is full; one finishing a trial then may add one more.
    if not row.target <= row.counted <= row.target + len(workers) - 1:
        fail(f"{row.counted} counted trials, expected {row.target} to "
             f"{row.target + len(workers) - 1}")
    errored = [t.number for t in trials if t.user_attrs.get("error")]
    if errored:
        fail(f"trials failed by an error: {errored[:10]}")
    killed = {w.killed_trial for w in workers if w.killed_trial is not None}
    unexplained = [t.number for t in trials if t.state.name == "FAIL" and t.number not in killed
                   and not t.user_attrs.get("error")]
    if unexplained:
        fail(f"trials failed that no kill explains: {unexplained[:10]}")
    by_number = {t.number: t for t in trials}
    for number in sorted(killed):
        if by_number[number].state.name != "FAIL":
            fail(f"killed trial {number} is {by_number[number].state.name}, not FAIL")
    # Each killed configuration is retried with the same parameters until an attempt
    # completes; a retry can be killed too (its worker was a victim), and only a configuration
    # whose every attempt (1 + MAX_RETRIES) was killed may end without completing.
    for root in sorted(n for n in killed if "failed_trial" not in by_number[n].system_attrs):
        chain = [by_number[root]] + sorted(
            (t for t in trials if t.system_attrs.get("failed_trial") == root),
            key=lambda t: t.number)
        attempts = [(t.number, t.state.name) for t in chain]
        if any(t.params != chain[0].params for t in chain):
            fail(f"killed trial {root}: a retry changed its parameters: {attempts}")
        if any(t.number not in killed or t.state.name != "FAIL" for t in chain[:-1]):
            fail(f"killed trial {root}: an attempt other than the last did not die: {attempts}")
        last = chain[-1]
        if not (last.state.name == "COMPLETE" or (
                last.number in killed and len(chain) == MAX_RETRIES + 1)):
            fail(f"killed trial {root}: attempts {attempts}, expected retries up to one "
                 f"COMPLETE (at most {MAX_RETRIES})")
    run_of = {t.number: t.user_attrs.get("mlflow_run_id") for t in trials}
    if None in run_of.values():
        fail(f"trials without a run: {[n for n, r in run_of.items() if r is None][:10]}")
    doubled = [r for r, n in Counter(run_of.values()).items() if n > 1 and r]
    if doubled:
        fail(f"runs shared by several trials: {doubled[:5]}")

    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    parents = [r for r in runs if r.data.tags.get(ROLE) == "parent"]
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    if len(parents) != 1 or study.user_attrs.get(PARENT_ATTR) != parents[0].info.run_id:
        fail(f"{len(parents)} parent runs; the study names {study.user_attrs.get(PARENT_ATTR)}")
    elif parents[0].info.status != "FINISHED":
        fail(f"the parent run is {parents[0].info.status}")
    if len(runs) != len(parents) + len(children):
        fail(f"{len(runs) - len(parents) - len(children)} runs are neither parent nor child")
    parent_ids = {r.data.tags["mlflow.parentRunId"] for r in children.values()}
    if parents and parent_ids - {parents[0].info.run_id}:
        fail(f"child runs under other parents: {sorted(parent_ids)[:3]}")
    expected = {r for r in run_of.values() if r}
    if set(children) != expected:
        fail(f"{len(set(children) - expected)} child runs without a trial, "
             f"{len(expected - set(children))} trials whose run is missing")
    for number, run_id in run_of.items():
        run = children.get(run_id or "")
        if run is None:
            continue
        state = by_number[number].state.name
        want = "KILLED" if number in killed else "FINISHED"
        if run.info.status != want or run.data.tags.get("trial_number") != str(number):
            fail(f"trial {number} ({state}): its run is {run.info.status} (expected {want}), "
                 f"tagged trial {run.data.tags.get('trial_number')}")


def show(row: Row) -> str:
    by_db = ", ".join(f"{k} {v}" for k, v in sorted(row.peak_by_database.items()))
    proxy = (f"; proxy {row.proxy_cpu_s:.0f} CPU s, {row.proxy_rss_mb:.0f} MB"
             if row.proxy_cpu_s is not None and row.proxy_rss_mb is not None else "")
    return (f"{row.workers} workers, {row.mode}, {row.killed} killed: {row.counted} trials "
            f"(target {row.target}, {row.trials} in Optuna) in {row.span_s:.0f} s = "
            f"{row.per_minute:.1f} trials/min (wall {row.wall_s:.0f} s: start-up "
            f"{row.startup_s:.0f} s, wind-down {row.winddown_s:.0f} s; CPU "
            f"{100 * row.cpu_busy:.0f}% busy, workers {row.workers_cpu_s:.0f} CPU s); peak "
            f"{row.peak_connections} database connections ({by_db}) of max_connections "
            f"{row.max_connections}; oldest live heartbeat {row.max_heartbeat_age_s:.1f} s; MLflow retries {row.retries}, errors {row.errors}; worker "
            f"RSS peak {row.peak_worker_rss_mb:.0f} MB, PSS sum peak {row.peak_pss_gb:.1f} GB, "
            f"available memory low {row.min_available_gb:.1f} GB{proxy}; checks: "
            f"{'passed' if not row.failures else 'FAILED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="8 workers, direct and through the proxy, a quarter killed")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--modes", nargs="+", default=["direct", "proxy"],
                        choices=["direct", "proxy"])
    parser.add_argument("--kill-fraction", type=float, nargs="+", default=[0.0],
                        help="share of the workers SIGKILLed mid-trial (several: one run each)")
    parser.add_argument("--trials-per-worker", type=int, default=4,
                        help="the study's --trials is workers x this")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="the stand-in trainer's seconds per trial")
    parser.add_argument("--proxy-threads", type=int, default=16)
    parser.add_argument("--heartbeat", type=int, default=1,
                        help="the workers' heartbeat interval in seconds (ALLSEARCH_HEARTBEAT_S)")
    parser.add_argument("--grace", type=int, default=3,
                        help="seconds without a heartbeat before a trial is failed "
                             "(ALLSEARCH_GRACE_S); too short for the machine's load fails live "
                             "trials, which the checks report")
    parser.add_argument("--nice", type=int, default=10,
                        help="the workers' niceness: the servers (PostgreSQL, MLflow, the proxy) "
                             "go first, as on machines of their own (0: all alike)")
    parser.add_argument("--seed", type=int, default=0, help="which workers are killed")
    parser.add_argument("--run-timeout", type=float, default=1800)
    parser.add_argument("--storage", default=os.environ.get("ALLSEARCH_TEST_POSTGRES"),
                        help="a PostgreSQL URL (default: $ALLSEARCH_TEST_POSTGRES)")
    parser.add_argument("--tracking-uri", default=os.environ.get("ALLSEARCH_TEST_MLFLOW"),
                        help="an MLflow server (default: $ALLSEARCH_TEST_MLFLOW)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON lines here")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.modes, args.kill_fraction = [4], ["direct", "proxy"], [0.25]
        args.trials_per_worker, args.grace = 3, 5
    if not (args.storage and args.storage.startswith("postgresql")) or not args.tracking_uri:
        sys.exit("needs PostgreSQL and an MLflow server: pass --storage postgresql://... and "
                 "--tracking-uri http://..., or run `. .ci/services` first")
    if not all(0 <= f < 1 for f in args.kill_fraction):
        sys.exit("--kill-fraction must be in [0, 1)")

    workdir = isolated_workdir("coordination")
    data = synthetic_data(workdir / "synthetic", per_class=12)
    space = workdir / "coordination.yaml"
    space.write_text(SPACE.replace("EPOCHS", str(EPOCHS)))
    print(f"coordination, not training: every worker is a `python -m allsearch.study` process "
          f"with --trainer standin:{args.seconds:g} (sleeps, no TensorFlow)", flush=True)
    print(f"machine: {machine()}, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} "
          f"GiB; heartbeat {args.heartbeat} s, grace {args.grace} s; "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    rows = []
    for kill_fraction in args.kill_fraction:
        for workers_n in args.workers:
            for mode in args.modes:
                row = run_once(args, workers_n, mode, kill_fraction, workdir, data, space)
                rows.append(row)
                print(show(row), flush=True)
                print(f"  command: {row.command}", flush=True)
                for failure in row.failures:
                    print(f"  check failed: {failure}", flush=True)
                if args.out:
                    with open(args.out, "a") as out:
                        out.write(json.dumps(row.__dict__) + "\n")
    failed = [r for r in rows if r.failures]
    last = {r.mode: r for r in rows}
    figure = "; ".join(f"{m}: {r.per_minute:.1f} trials/min, peak {r.peak_connections} "
                       f"database connections" for m, r in sorted(last.items(), reverse=True))
    print(f"{rows[-1].workers} workers ({rows[-1].killed} killed), {figure}; checks "
          f"{'FAILED in ' + str(len(failed)) + ' run(s)' if failed else 'passed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
